"""`index.images`: the photo files a scan found (table images) and those it could not
index (table scan_errors)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol, Sequence

import sqlite_utils

from .schema import ERROR, MISSING, NEW, OK, utcnow


def storable_path(path: str) -> str:
    """A path SQLite text can hold, whatever its bytes: a name from a legacy-encoded disk
    keeps its undecodable bytes as escapes (\\xff), so a person can still find the file."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class KnownFile:
    id: int
    size: int
    mtime_ns: int
    fingerprint: str | None
    status: str


class Derived(Protocol):
    """A table family whose rows describe an image's pixels (embeddings, scores, culling's facts)."""

    def forget(self, image_id: int) -> None: ...


class Images:
    """`index.images`: reads and writes of tables images and scan_errors."""

    def __init__(self, db: sqlite_utils.Database, derived: Sequence[Derived] = ()):
        self.db = db
        self.derived = tuple(derived)  # what forget_derived clears

    def known(self) -> dict[str, KnownFile]:
        rows = self.db.execute("SELECT path, id, size, mtime_ns, fingerprint, status FROM images")
        return {path: KnownFile(*rest) for path, *rest in rows}

    def add(self, path: str, size: int, mtime_ns: int, fingerprint: str | None) -> int:
        now = utcnow()
        return self.db["images"].insert(
            {"path": path, "size": size, "mtime_ns": mtime_ns, "fingerprint": fingerprint,
             "status": NEW, "first_seen": now, "updated": now}
        ).last_pk

    def update(self, image_id: int, **fields) -> None:
        self.db["images"].update(image_id, dict(fields, updated=utcnow()))

    def update_stat(self, path: str, size: int, mtime_ns: int) -> None:
        """Our own write (an EXIF rating) changed a photo's size and mtime, not its pixels."""
        self.db.execute("UPDATE images SET size = ?, mtime_ns = ?, updated = ? WHERE path = ?", [size, mtime_ns, utcnow(), path])

    def get(self, image_id: int) -> dict:
        return self.db["images"].get(image_id)

    def by_path(self, path: str) -> dict | None:
        rows = list(self.db["images"].rows_where("path = ?", [path]))
        return rows[0] if rows else None

    def with_fingerprint(self, fingerprint: str) -> list[dict]:
        return list(self.db["images"].rows_where("fingerprint = ?", [fingerprint], order_by="id"))

    def with_status(self, statuses: Sequence[str]) -> list[tuple[int, str]]:
        """(id, path) of the images in any of `statuses`, by path."""
        marks = ",".join("?" * len(statuses))
        return self.db.execute(f"SELECT id, path FROM images WHERE status IN ({marks}) ORDER BY path", list(statuses)).fetchall()

    def signatures(self, image_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """{image id: (size, mtime_ns)} as the last scan recorded them."""
        found = {}
        for start in range(0, len(image_ids), 900):
            chunk = list(image_ids[start : start + 900])
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(f"SELECT id, size, mtime_ns FROM images WHERE id IN ({marks})", chunk)
            found.update({image_id: (size, mtime_ns) for image_id, size, mtime_ns in rows})
        return found

    def facts(self) -> dict[int, dict]:
        """{image id: path, size, mtime_ns, fingerprint, status, error} of every image, in one pass."""
        rows = self.db.execute("SELECT id, path, size, mtime_ns, fingerprint, status, error FROM images")
        keys = ("path", "size", "mtime_ns", "fingerprint", "status", "error")
        return {row[0]: dict(zip(keys, row[1:])) for row in rows}

    def mark_ok(self, image_ids: Sequence[int]) -> None:
        """Embedded and scored: clear any earlier error."""
        now = utcnow()
        self.db.conn.executemany(
            "UPDATE images SET status = ?, error_code = NULL, error = NULL, updated = ? WHERE id = ?",
            [(OK, now, int(i)) for i in image_ids],
        )

    def mark_missing(self, image_ids: Sequence[int]) -> None:
        now = utcnow()
        self.db.conn.executemany(
            "UPDATE images SET status = ?, updated = ? WHERE id = ?", [(MISSING, now, i) for i in image_ids]
        )

    def forget_derived(self, image_id: int) -> None:
        """The file's pixels changed: its embeddings, scores and capture facts no longer
        describe it (each family forgets its own rows)."""
        for family in self.derived:
            family.forget(image_id)

    def record_error(self, image_id: int, code: str, message: str) -> None:
        self.update(image_id, status=ERROR, error_code=code, error=message)

    def status_counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, count(*) FROM images GROUP BY status").fetchall())

    def error_counts(self) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT code, count(*) FROM (SELECT error_code AS code FROM images WHERE status = ? "
            "UNION ALL SELECT code FROM scan_errors) GROUP BY code",
            [ERROR],
        )
        return dict(rows.fetchall())

    def errors(self, limit: int = 20) -> list[dict]:
        """The latest errors: files found but not indexable (scan), then decode failures."""
        sql = (
            "SELECT path, code, error FROM (SELECT path, code, error, seen AS at, 1 AS scan FROM scan_errors "
            "UNION ALL SELECT path, error_code, error, updated, 0 FROM images WHERE status = ?) "
            "ORDER BY scan DESC, at DESC LIMIT ?"
        )
        return [dict(zip(("path", "code", "error"), row)) for row in self.db.execute(sql, [ERROR, limit])]

    def scan_errors(self) -> list[dict]:
        """Every file a scan found but could not index: {path (readable form), code, error}."""
        rows = self.db.execute("SELECT path, code, error FROM scan_errors ORDER BY path")
        return [dict(zip(("path", "code", "error"), row)) for row in rows]

    def replace_scan_errors(self, roots: Sequence[str], errors: Sequence[tuple[str, str, str]]) -> None:
        """The scan of `roots` found these (path, code, error): they replace what earlier
        scans recorded under those roots (a renamed file's error goes)."""
        for root in roots:
            prefix = storable_path(os.path.abspath(root)).rstrip(os.sep) + os.sep
            self.db.execute(
                "DELETE FROM scan_errors WHERE path = ? OR substr(path, 1, ?) = ?", [prefix[:-1], len(prefix), prefix]
            )
        now = utcnow()
        self.db.conn.executemany(
            "INSERT OR REPLACE INTO scan_errors (path, code, error, seen) VALUES (?, ?, ?, ?)",
            [(storable_path(path), code, error, now) for path, code, error in errors],
        )
