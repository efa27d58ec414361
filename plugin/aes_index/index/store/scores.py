"""`index.scores`: the heads that scored a library (table heads), their scores (table
scores) and each write's provenance (table score_batches)."""

from __future__ import annotations

import functools
import json
import sqlite3

import numpy as np
import sqlite_utils

from .schema import MISSING, utcnow


class Scores:
    """`index.scores`: reads and writes of tables heads, scores and score_batches."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db

    def record_head(self, head) -> None:
        self.db["heads"].upsert(
            {"id": head.name, "hash": head.hash, "kind": head.kind, "backbone": head.backbone,
             "metadata": json.dumps(head.metadata, sort_keys=True, default=str), "first_used": utcnow()},
            pk="id",
        )

    def put(self, head, backbone_id: int, preprocess: str, image_ids, prediction) -> None:
        """Insert or update one head's scores for `image_ids`, as one batch of provenance.

        Rows go straight into the scores key, in image order (a new head's rows are
        appended to it), thousands a statement. The head and the batch are bound once a
        statement (SQLite's numbered parameters ?1 and ?2) and an absent std is a NULL in
        the SQL: binding values took longer than SQLite's own work, and staging the rows
        in a temporary table first copied each one twice (a 1M-row rescore: 1.8 s of CPU
        instead of 2.9 s).
        """
        ids = np.asarray(image_ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        columns = [ids[order].tolist(), np.asarray(prediction.score, np.float64)[order].tolist()]
        if prediction.std is not None:
            columns.append(np.asarray(prediction.std, np.float64)[order].tolist())
        conn = self.db.conn
        batch = conn.execute(
            "INSERT INTO score_batches (head_id, head_hash, backbone_id, preprocess, scored_at) VALUES (?, ?, ?, ?, ?)",
            [head.name, head.hash, backbone_id, preprocess, utcnow()],
        ).lastrowid
        width, count = len(columns), len(columns[0])
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if hasattr(conn, "getlimit") else 999
        per_statement = max(1, (min(limit, 30_000) - 2) // width)
        for start in range(0, count, per_statement):
            rows = min(per_statement, count - start)
            values = [None] * (rows * width)  # row-major, filled a column at a time
            for k, column in enumerate(columns):
                values[k::width] = column[start : start + rows]
            conn.execute(_upsert_scores(rows, width == 3), [head.name, batch, *values])

    def of(self, image_id: int, head_id: str) -> tuple[float, float | None] | None:
        """(score, std) of one image by one head, or None."""
        return self.db.execute("SELECT score, std FROM scores WHERE head_id = ? AND image_id = ?", [head_id, image_id]).fetchone()

    def of_image(self, image_id: int, head_prefix: str) -> list[tuple[dict, float]]:
        """(head metadata, score) of one image, for every head whose id starts with `head_prefix`."""
        sql = (
            "SELECT h.metadata, s.score FROM heads h JOIN scores s ON s.head_id = h.id AND s.image_id = ? "
            "WHERE h.id LIKE ? ESCAPE '\\'"
        )
        pattern = head_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return [(json.loads(meta), score) for meta, score in self.db.execute(sql, [image_id, pattern])]

    def heads_latest_first(self) -> list[tuple[str, dict]]:
        """(head id, metadata) of every head, the most recently recorded first."""
        rows = self.db.execute("SELECT id, metadata FROM heads ORDER BY first_used DESC")
        return [(head_id, json.loads(meta)) for head_id, meta in rows]

    def head_metadata(self, head_id: str) -> dict | None:
        """The metadata the index recorded for a head (None: no such head)."""
        row = self.db.execute("SELECT metadata FROM heads WHERE id = ?", [head_id]).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def has(self, head) -> bool:
        return self.db.execute("SELECT 1 FROM scores WHERE head_id = ? LIMIT 1", [head.name]).fetchone() is not None

    def ids_needing(self, head, backbone_id: int) -> list[int]:
        """Embedded images whose score for this head is absent or has other provenance."""
        if not self.has(head):
            # A head that has scored nothing yet (the usual rescore): every embedded image,
            # without probing the scores index once per image.
            sql = (
                "SELECT e.image_id FROM embeddings e JOIN images i ON i.id = e.image_id "
                "WHERE e.backbone_id = ? AND i.status != ? ORDER BY e.image_id"
            )
            return [row[0] for row in self.db.execute(sql, [backbone_id, MISSING])]
        sql = (
            "SELECT e.image_id FROM embeddings e JOIN images i ON i.id = e.image_id "
            "LEFT JOIN scores s ON s.image_id = e.image_id AND s.head_id = ? "
            "LEFT JOIN score_batches b ON b.id = s.batch "
            "WHERE e.backbone_id = ? AND i.status != ? "
            "AND (s.image_id IS NULL OR b.head_hash != ? OR b.backbone_id != ?) ORDER BY e.image_id"
        )
        return [row[0] for row in self.db.execute(sql, [head.name, backbone_id, MISSING, head.hash, backbone_id])]

    def ids_like(self, head_pattern: str) -> set[int]:
        """Images with a score from any head whose id matches the LIKE pattern ("attribute-%")."""
        rows = self.db.execute("SELECT DISTINCT image_id FROM scores WHERE head_id LIKE ?", [head_pattern])
        return {row[0] for row in rows}

    def scored_heads(self) -> list[dict]:
        sql = (
            "SELECT h.id, h.kind, h.backbone, h.hash, count(s.image_id) FROM heads h "
            "LEFT JOIN scores s ON s.head_id = h.id GROUP BY h.id ORDER BY h.first_used"
        )
        return [dict(zip(("id", "kind", "backbone", "hash", "scored"), row)) for row in self.db.execute(sql)]

    def ranked(self, head_id: str, limit: int | None = None, worst: bool = False) -> list[dict]:
        """Present photos by score for a head, best first (or worst first)."""
        order = "ASC" if worst else "DESC"
        sql = (
            "SELECT i.id, i.path, s.score, s.std, b.head_hash, b.preprocess, b.scored_at FROM scores s "
            "JOIN images i ON i.id = s.image_id JOIN score_batches b ON b.id = s.batch "
            f"WHERE s.head_id = ? AND i.status != ? ORDER BY s.score {order}, i.path"
        )
        params: list = [head_id, MISSING]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        keys = ("image_id", "path", "score", "std", "head_hash", "preprocess", "scored_at")
        return [dict(zip(keys, row)) for row in self.db.execute(sql, params)]

    def values(self, head_id: str) -> np.ndarray:
        rows = self.db.execute(
            "SELECT s.score FROM scores s JOIN images i ON i.id = s.image_id WHERE head_id = ? AND i.status != ?",
            [head_id, MISSING],
        )
        return np.fromiter((r[0] for r in rows), dtype=np.float64)

    def by_image(self, head_id: str) -> dict[int, float]:
        """Every present photo's score from one head, by image id (in one query)."""
        rows = self.db.execute(
            "SELECT s.image_id, s.score FROM scores s JOIN images i ON i.id = s.image_id WHERE head_id = ? AND i.status != ?",
            [head_id, MISSING],
        )
        return dict(rows.fetchall())

    def forget(self, image_id: int) -> None:
        """The image's pixels changed (Images.forget_derived): its scores go."""
        # Probe each head's range of the (head_id, image_id) key: no index on image_id alone.
        self.db.execute("DELETE FROM scores WHERE head_id IN (SELECT id FROM heads) AND image_id = ?", [image_id])


@functools.lru_cache(maxsize=8)
def _upsert_scores(rows: int, with_std: bool) -> str:
    """INSERT of `rows` scores of head ?1 in batch ?2, each row's values numbered after
    them; an upsert, not INSERT OR REPLACE: a retrained head rescoring a library updates
    rows in place instead of deleting and re-inserting each. The same text for every
    full statement, so SQLite's prepared statement is reused."""
    width = 3 if with_std else 2
    values = ", ".join(
        f"(?{3 + k * width}, ?1, ?{4 + k * width}, {f'?{5 + k * width}' if with_std else 'NULL'}, ?2)" for k in range(rows)
    )
    return (
        f"INSERT INTO scores (image_id, head_id, score, std, batch) VALUES {values} "
        "ON CONFLICT (head_id, image_id) DO UPDATE SET score = excluded.score, std = excluded.std, batch = excluded.batch"
    )
