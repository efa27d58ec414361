"""Culling's tables in the index (the database layer: all of culling's SQL is here).

  captures      one row per photo: capture time, camera, pixel measures, signature, and
                whether a cull has considered it (`culled`: the next cull compares only
                photos not yet considered, so grouping is incremental)
  cull_groups   one row per group: kind (burst / duplicate), keeper, the keeper's reason
  cull_members  which group a photo is in (at most one)

Rows follow their image: a moved photo keeps its image id (the scan follows moves), so it
keeps its facts and its group; a changed photo loses its facts (`forget`) and is measured
again; a missing one, or one measured again (`culled` 0 while a member), leaves its group
at the next cull, which counts it (`departed`); readers see groups without it at once.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Collection, Iterable, Sequence

import numpy as np
import sqlite_utils

from ..facts import FACTS_VERSION, CaptureFacts

FACT_COLUMNS = tuple(f.name for f in fields(CaptureFacts))
GROUPING_FACTS = ("taken_at", "camera", "serial", "signature", "signature_inner", "signature_core")  # what links photos
PRESENT = ("new", "ok")  # image statuses a cull considers (not missing, not failed)


def create_tables(db: sqlite_utils.Database) -> None:
    columns = ", ".join(f"{name} {_sql_type(name)}" for name in FACT_COLUMNS)
    db.execute(f"CREATE TABLE IF NOT EXISTS captures (image_id INTEGER PRIMARY KEY, {columns}, culled INTEGER NOT NULL DEFAULT 0)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS cull_groups (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, keeper_id INTEGER, "
        "reason TEXT, chosen_by TEXT, created TEXT, updated TEXT)"
    )
    db.execute("CREATE TABLE IF NOT EXISTS cull_members (image_id INTEGER PRIMARY KEY, group_id INTEGER NOT NULL)")
    db.execute("CREATE INDEX IF NOT EXISTS cull_members_by_group ON cull_members (group_id)")


def add_fact_columns(db: sqlite_utils.Database) -> None:
    """Columns CaptureFacts gained since the table was made (their rows are measured again:
    FACTS_VERSION moved with them)."""
    present = {row[1] for row in db.execute("PRAGMA table_info(captures)").fetchall()}
    for name in FACT_COLUMNS:
        if name not in present:
            db.execute(f"ALTER TABLE captures ADD COLUMN {name} {_sql_type(name)}")


def _sql_type(name: str) -> str:
    if name in ("taken_at", "sharpness", "clipped_highlights", "blown_highlights", "clipped_channel", "clipped_shadows", "brightest", "exposure_bias", "edge_width"):
        return "REAL"
    if name in ("width", "height", "signature", "signature_inner", "signature_core", "version", "quality", "auto_bracket"):
        return "INTEGER"
    return "TEXT"


@dataclass
class FactsTable:
    """Every present photo's grouping facts, as arrays (a cull over 100k photos reads this once)."""

    ids: np.ndarray  # int64
    cameras: list[str | None]
    taken_at: np.ndarray  # float64, nan where unknown
    signatures: np.ndarray  # (N, 3) uint64: whole, inner, core pHash; rows without a signature are left out
    culled: np.ndarray  # bool


def _or(value, default):
    return default if value is None else value


@dataclass(frozen=True)
class GroupRow:
    id: int
    kind: str
    keeper_id: int | None
    reason: str | None
    chosen_by: str | None
    members: tuple[int, ...]


class CullingTables:
    """`index.culling`: reads and writes of culling's tables."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db

    # --- facts -----------------------------------------------------------------------

    def put_facts(self, image_ids: Sequence[int], facts: Sequence[CaptureFacts | None]) -> None:
        """Store facts. A photo measured again whose grouping facts (time, camera,
        signatures) are what they were keeps its group (`rebuild --force` regroups
        nothing); one whose facts moved is compared again by the next cull, which first
        takes it out of its group (and counts it as having left)."""
        rows = [(i, *(getattr(f, name) for name in FACT_COLUMNS)) for i, f in zip(image_ids, facts) if f is not None]
        if not rows:
            return
        kept = self._unchanged_for_grouping(rows)
        marks = ", ".join("?" * (len(FACT_COLUMNS) + 2))
        names = ", ".join(FACT_COLUMNS)
        self.db.conn.executemany(
            f"INSERT OR REPLACE INTO captures (image_id, {names}, culled) VALUES ({marks})",
            [(*row, int(row[0] in kept)) for row in rows],
        )

    def _unchanged_for_grouping(self, rows: list[tuple]) -> set[int]:
        """Photos already culled whose grouping facts are the same in `rows`."""
        positions = [FACT_COLUMNS.index(name) + 1 for name in GROUPING_FACTS]
        names = ", ".join(GROUPING_FACTS)
        kept = set()
        for row in rows:
            old = self.db.execute(f"SELECT {names} FROM captures WHERE image_id = ? AND culled = 1", [row[0]]).fetchone()
            if old is not None and tuple(old) == tuple(row[p] for p in positions):
                kept.add(row[0])
        return kept

    def forget(self, image_id: int) -> None:
        """The file's pixels changed: its facts no longer hold. Its membership stays until
        the next cull takes it out (`departed`): that cull says the photo left its group."""
        self.db.execute("DELETE FROM captures WHERE image_id = ?", [image_id])

    def set_aside(self, image_ids: Sequence[int]) -> None:
        """Photos whose file changed or went since they were measured: out of their groups,
        and to be compared again once measured again (or found moved): others were compared
        without them meanwhile."""
        self.remove_members(image_ids)
        self.db.conn.executemany("UPDATE captures SET culled = 0 WHERE image_id = ?", [(int(i),) for i in image_ids])

    def copy_facts(self, source_id: int, target_id: int) -> None:
        """A byte-identical copy has the original's facts (it becomes its duplicate at the next cull)."""
        names = ", ".join(FACT_COLUMNS)
        self.db.execute(
            f"INSERT OR REPLACE INTO captures (image_id, {names}, culled) SELECT ?, {names}, 0 FROM captures WHERE image_id = ?",
            [target_id, source_id],
        )

    def ids_lacking_facts(self, image_ids: Iterable[int] | None = None) -> list[tuple[int, str]]:
        """(id, path) of indexed photos (status ok) without current facts: an index from
        before culling, or facts measured by an older version. Given `image_ids` (the
        watcher's batch of a few files), only those are looked up, not the whole library."""
        sql = (
            "SELECT i.id, i.path FROM images i LEFT JOIN captures c ON c.image_id = i.id "
            "WHERE i.status = 'ok' AND (c.image_id IS NULL OR c.version < ?)"
        )
        if image_ids is None:
            return [(i, p) for i, p in self.db.execute(f"{sql} ORDER BY i.id", [FACTS_VERSION])]
        ids, found = sorted({int(i) for i in image_ids}), []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            found += self.db.execute(f"{sql} AND i.id IN ({', '.join('?' * len(chunk))})", [FACTS_VERSION, *chunk]).fetchall()
        return sorted((i, p) for i, p in found)

    def facts_table(self, leave_out: Collection[int] = ()) -> FactsTable:
        """`leave_out`: photos not to group now (changed since they were measured)."""
        sql = (
            "SELECT c.image_id, c.camera, c.serial, c.taken_at, c.culled, c.signature, c.signature_inner, c.signature_core "
            "FROM captures c "
            "JOIN images i ON i.id = c.image_id WHERE i.status IN (?, ?) AND c.signature IS NOT NULL ORDER BY c.image_id"
        )
        rows = [row for row in self.db.execute(sql, list(PRESENT)) if row[0] not in leave_out]
        return FactsTable(
            ids=np.fromiter((r[0] for r in rows), np.int64, len(rows)),
            cameras=[(f"{r[1]}#{r[2]}" if r[2] else r[1]) for r in rows],
            taken_at=np.fromiter((np.nan if r[3] is None else r[3] for r in rows), np.float64, len(rows)),
            signatures=np.array([[r[5], _or(r[6], r[5]), _or(r[7], r[5])] for r in rows], np.int64).reshape(-1, 3).view(np.uint64),
            culled=np.fromiter((bool(r[4]) for r in rows), bool, len(rows)),
        )

    def measured_ids(self) -> list[int]:
        """Present photos with capture facts, by id."""
        sql = "SELECT c.image_id FROM captures c JOIN images i ON i.id = c.image_id WHERE i.status IN (?, ?) ORDER BY 1"
        return [row[0] for row in self.db.execute(sql, list(PRESENT))]

    def was_culled(self) -> bool:
        """Whether a cull has ever run on this library (the watcher then keeps it current)."""
        return self.db.execute("SELECT 1 FROM captures WHERE culled = 1 LIMIT 1").fetchone() is not None

    def mark_culled(self, image_ids: Sequence[int]) -> None:
        self.db.conn.executemany("UPDATE captures SET culled = 1 WHERE image_id = ?", [(int(i),) for i in image_ids])

    def member_facts(self, image_ids: Sequence[int] | None, head_id: str | None) -> dict[int, dict]:
        """What the keeper rule and the readers need of each photo: path, facts, score.
        `image_ids` None: every photo with facts, in one query (a 100k-photo cull reads it once)."""
        names = ", ".join(f"c.{name}" for name in FACT_COLUMNS)
        sql = (
            f"SELECT i.id, i.path, s.score, {names} FROM captures c JOIN images i ON i.id = c.image_id "
            "LEFT JOIN scores s ON s.image_id = i.id AND s.head_id = ?"
        )
        keys = ("image_id", "path", "score", *FACT_COLUMNS)
        if image_ids is None:
            return {row[0]: dict(zip(keys, row)) for row in self.db.execute(sql, [head_id])}
        result = {}
        ids = [int(i) for i in image_ids]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self.db.execute(f"{sql} WHERE i.id IN ({', '.join('?' * len(chunk))})", [head_id, *chunk])
            result.update((row[0], dict(zip(keys, row))) for row in rows)
        return result

    # --- groups ----------------------------------------------------------------------

    def groups(self, leaving: bool = False, ids: Sequence[int] | None = None) -> list[GroupRow]:
        """Every group with its members; `leaving`: also the members the next cull takes
        out (measured again, or without facts), which readers no longer show; `ids`: only
        these groups (a few: the review reads one group at a time)."""
        settled = "" if leaving else " JOIN captures c ON c.image_id = m.image_id AND c.culled = 1"
        chosen = [int(i) for i in ids] if ids is not None else []
        only = f" IN ({', '.join('?' * len(chosen))})" if ids is not None else ""
        members: dict[int, list[int]] = {}
        where = f" WHERE m.group_id{only}" if only else ""
        for image_id, group_id in self.db.execute(f"SELECT m.image_id, m.group_id FROM cull_members m{settled}{where} ORDER BY 2, 1", chosen):
            members.setdefault(group_id, []).append(image_id)
        where = f" WHERE id{only}" if only else ""
        rows = self.db.execute(f"SELECT id, kind, keeper_id, reason, chosen_by FROM cull_groups{where} ORDER BY id", chosen)
        return [GroupRow(*row, tuple(members.get(row[0], ()))) for row in rows]

    def group_sizes(self) -> list[tuple[int, str, int]]:
        """(id, kind, members readers show) of every group with any, by id: the list of
        groups without reading their members (100k photos: tens of ms, not a second)."""
        return self.db.execute(
            "SELECT g.id, g.kind, count(*) FROM cull_groups g JOIN cull_members m ON m.group_id = g.id "
            "JOIN captures c ON c.image_id = m.image_id AND c.culled = 1 GROUP BY g.id ORDER BY g.id"
        ).fetchall()

    def memberships(self) -> dict[int, int]:
        return dict(self.db.execute("SELECT image_id, group_id FROM cull_members").fetchall())

    def departed(self) -> list[int]:
        """Members that are no longer present photos (missing, failed, or no facts) or
        were measured again since a cull grouped them (their file changed)."""
        sql = (
            "SELECT m.image_id FROM cull_members m LEFT JOIN images i ON i.id = m.image_id "
            "LEFT JOIN captures c ON c.image_id = m.image_id "
            "WHERE i.id IS NULL OR i.status NOT IN (?, ?) OR c.image_id IS NULL OR c.culled = 0"
        )
        return [row[0] for row in self.db.execute(sql, list(PRESENT))]

    def remove_members(self, image_ids: Iterable[int]) -> None:
        self.db.conn.executemany("DELETE FROM cull_members WHERE image_id = ?", [(int(i),) for i in image_ids])

    def new_group(self, kind: str, now: str) -> int:
        return self.db.execute("INSERT INTO cull_groups (kind, created, updated) VALUES (?, ?, ?)", [kind, now, now]).lastrowid

    def set_members(self, group_id: int, image_ids: Iterable[int]) -> None:
        self.db.conn.executemany(
            "INSERT OR REPLACE INTO cull_members (image_id, group_id) VALUES (?, ?)", [(int(i), group_id) for i in image_ids]
        )

    def set_keeper(self, group_id: int, kind: str, keeper_id: int, reason: str, chosen_by: str, now: str) -> None:
        self.db.execute(
            "UPDATE cull_groups SET kind = ?, keeper_id = ?, reason = ?, chosen_by = ?, updated = ? WHERE id = ?",
            [kind, keeper_id, reason, chosen_by, now, group_id],
        )

    def drop_group(self, group_id: int) -> None:
        """A group left with fewer than two photos is no group: its row goes, its photo stays."""
        self.db.execute("DELETE FROM cull_members WHERE group_id = ?", [group_id])
        self.db.execute("DELETE FROM cull_groups WHERE id = ?", [group_id])
