"""What a test reads from an index that the program itself never asks: rows of a table as
dicts, picked by column values, without SQL in the test.

The store's accessors (index.images, index.scores, index.runs...) answer the program's
questions, and a test asks those through them. For the rest (every row of a table, a
column no accessor returns, a count) a test uses these:

    rows(index, "runs", order_by="id", status="done")   -> [{"id": 1, "command": ...}, ...]
    count(index, "scores", head_id="h")                 -> 3
    one(index, "embeddings", image_id=7)["vector"]      -> the one row (an assertion if not one)
    values(index, "images", "path", status="ok")        -> ["/p/1.jpg", ...]

A keyword picks rows by a column: `column=value` (None: IS NULL; a list, tuple or set:
IN). Named helpers below answer what tests ask most often.
"""

from __future__ import annotations

from typing import Any

PROVENANCE = ("head_hash", "backbone_id", "preprocess", "scored_at")  # a score's batch says these


def rows(index, table: str, order_by: str | None = None, **where: Any) -> list[dict]:
    """The rows of `table` whose columns hold the values given, in `order_by` order (SQLite's own
    order when None, as a plain SELECT gives them)."""
    sql, params = _where(where)
    return list(index.db[table].rows_where(sql, params, order_by=order_by))


def count(index, table: str, **where: Any) -> int:
    sql, params = _where(where)
    return index.db[table].count_where(sql, params)


def one(index, table: str, **where: Any) -> dict:
    """The one row of `table` with these values (fails the test if there are none or several)."""
    found = rows(index, table, **where)
    assert len(found) == 1, f"{len(found)} rows in {table} where {where}"
    return found[0]


def values(index, table: str, column: str, order_by: str | None = None, **where: Any) -> list:
    """One column of the rows `rows` picks."""
    return [row[column] for row in rows(index, table, order_by=order_by, **where)]


# --------------------------------------------------------------------------- named


def statuses(index) -> dict[str, str]:
    """{path: status} of every image."""
    return {row["path"]: row["status"] for row in rows(index, "images")}


def scores(index, order_by: str | None = None, **where: Any) -> list[dict]:
    """Score rows (image_id, head_id, score, std, batch) with their batch's provenance
    (head_hash, backbone_id, preprocess, scored_at) in each."""
    batches = {batch["id"]: batch for batch in rows(index, "score_batches")}
    return [dict(row, **{key: batches[row["batch"]][key] for key in PROVENANCE}) for row in rows(index, "scores", order_by, **where)]


def _where(where: dict[str, Any]) -> tuple[str | None, list]:
    clauses, params = [], []
    for column, value in where.items():
        if value is None:
            clauses.append(f"[{column}] IS NULL")
        elif isinstance(value, (list, tuple, set, frozenset)):
            clauses.append(f"[{column}] IN ({', '.join('?' * len(value))})")
            params.extend(value)
        else:
            clauses.append(f"[{column}] = ?")
            params.append(value)
    return (" AND ".join(clauses) or None), params
