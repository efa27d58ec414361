"""`index.embeddings`: the CLIP backbones a library was indexed with (table backbones) and
each image's pooled features from each of them (table embeddings)."""

from __future__ import annotations

import queue
import sqlite3
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import sqlite_utils

from .schema import MISSING, OK, utcnow

STREAM_ABOVE = 20_000  # Embeddings.iter: above this many ids, one scan beats id lookups


class Embeddings:
    """`index.embeddings`: reads and writes of tables backbones and embeddings."""

    def __init__(self, db: sqlite_utils.Database, path: Path, busy_timeout_s: float):
        self.db = db
        # The index file and how long to wait for a lock on it: iter reads ahead on a
        # second connection, as patient as the index's own.
        self.path = path
        self.busy_timeout_s = busy_timeout_s

    # --- backbones -------------------------------------------------------------------

    def ensure_backbone(self, info, projection: np.ndarray | None, model: str | None = None, pretrained: str | None = None) -> int:
        """The id of this backbone's row, created on first use.

        `model` and `pretrained` are the arguments it was loaded with, kept so that later
        commands can load it again without being told (default: the names in `info`)."""
        row = self.backbone(info.key)
        if row:
            return row["id"]
        blob = None if projection is None else np.ascontiguousarray(projection, np.float32).tobytes()
        return self.db["backbones"].insert(
            {"key": info.key, "model": model or info.model, "pretrained": pretrained or info.pretrained,
             "pooled_dim": info.pooled_dim, "embed_dim": info.embed_dim,
             "preprocess": info.as_json(), "projection": blob, "first_used": utcnow()}
        ).last_pk

    def backbone(self, key: str) -> dict | None:
        rows = list(self.db["backbones"].rows_where("key = ?", [key]))
        return rows[0] if rows else None

    def backbones(self) -> list[dict]:
        return list(self.db["backbones"].rows)

    def projection(self, backbone_id: int) -> np.ndarray | None:
        row = self.db["backbones"].get(backbone_id)
        if row["projection"] is None:
            return None
        return np.frombuffer(row["projection"], np.float32).reshape(row["pooled_dim"], row["embed_dim"])

    # --- embeddings ------------------------------------------------------------------

    def count(self, backbone_id: int) -> int:
        return self.db.execute("SELECT count(*) FROM embeddings WHERE backbone_id = ?", [backbone_id]).fetchone()[0]

    def any_of(self, backbone_id: int) -> bool:
        """Whether any embedding from this backbone is stored (count() reads them all)."""
        return self.db.execute("SELECT 1 FROM embeddings WHERE backbone_id = ? LIMIT 1", [backbone_id]).fetchone() is not None

    def has(self, image_id: int) -> bool:
        """Whether any backbone's embedding of this image is cached."""
        return self.db.execute("SELECT 1 FROM embeddings WHERE image_id = ? LIMIT 1", [image_id]).fetchone() is not None

    def present_with(self, backbone_id: int) -> list[tuple[int, str]]:
        """(image id, path) of photos scored fine that have an embedding from this backbone."""
        rows = self.db.execute(
            "SELECT i.id, i.path FROM images i JOIN embeddings e ON e.image_id = i.id "
            "WHERE e.backbone_id = ? AND i.status = ? ORDER BY i.id",
            [backbone_id, OK],
        )
        return [(int(i), p) for i, p in rows]

    def ids_with(self, backbone_id: int) -> set[int]:
        rows = self.db.execute("SELECT image_id FROM embeddings WHERE backbone_id = ?", [backbone_id])
        return {row[0] for row in rows}

    def put(self, backbone_id: int, image_ids: Sequence[int], pooled: np.ndarray, proj_norms: np.ndarray) -> None:
        vectors = np.ascontiguousarray(pooled, dtype="<f2")
        now = utcnow()
        self.db.conn.executemany(
            "INSERT OR REPLACE INTO embeddings (image_id, backbone_id, vector, proj_norm, created) VALUES (?, ?, ?, ?, ?)",
            [(int(i), backbone_id, vectors[k].tobytes(), float(proj_norms[k]), now) for k, i in enumerate(image_ids)],
        )

    def copy(self, source_id: int, target_id: int) -> int:
        """Share a byte-identical file's embeddings (a copy in another folder): no decode."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO embeddings (image_id, backbone_id, vector, proj_norm, created) "
            "SELECT ?, backbone_id, vector, proj_norm, created FROM embeddings WHERE image_id = ?",
            [target_id, source_id],
        )
        return cursor.rowcount

    def iter(
        self, backbone_id: int, image_ids: Sequence[int] | None = None, chunk: int = 8192
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(image ids, float16 pooled matrix, projected norms) in chunks: memory stays bounded.

        Rows come in storage order, not id order. A few ids are looked up; many (a rescore)
        are picked out of one sequential scan, which reads a million 768-d rows in seconds.
        Chunks of 8192 rows (12 MB of vectors) are read twice as fast as chunks of 65536:
        memory that size is reused by the allocator, while every 100 MB page is fresh
        memory from the kernel, paid for in page faults.
        """
        dim = self.db["backbones"].get(backbone_id)["pooled_dim"]
        if image_ids is not None and len(image_ids) <= STREAM_ABOVE:
            for i in range(0, len(image_ids), 900):
                rows = self._embedding_rows(backbone_id, image_ids[i : i + 900])
                if rows:
                    yield _unpack_embeddings(rows, dim)
            return
        wanted = None if image_ids is None else _IdSet(image_ids)
        if self.db.conn.in_transaction:  # a second connection wouldn't see this transaction
            yield from _embedding_pages(self.db.conn, backbone_id, dim, chunk, wanted)
        else:
            yield from _read_ahead(self.path, self.busy_timeout_s, backbone_id, dim, chunk, wanted)

    def _embedding_rows(self, backbone_id: int, image_ids: Sequence[int]) -> list[tuple]:
        marks = ",".join("?" * len(image_ids))
        sql = f"SELECT image_id, vector, proj_norm FROM embeddings WHERE backbone_id = ? AND image_id IN ({marks})"
        return self.db.execute(sql, [backbone_id, *image_ids]).fetchall()

    def forget(self, image_id: int) -> None:
        """The image's pixels changed (Images.forget_derived): its embeddings go."""
        self.db.execute("DELETE FROM embeddings WHERE image_id = ?", [image_id])


def _embedding_pages(conn, backbone_id: int, dim: int, chunk: int, wanted: "_IdSet | None") -> Iterator[tuple]:
    """A backbone's embeddings of present images, `chunk` rows per query, unpacked.

    Paged by rowid (the order of the backbone index, so SQLite neither sorts 1.5 GB of
    vectors nor keeps a read open while the caller writes between pages).
    """
    sql = (
        "SELECT e.rowid, e.image_id, e.vector, e.proj_norm FROM embeddings e JOIN images i ON i.id = e.image_id "
        "WHERE e.backbone_id = ? AND e.rowid > ? AND i.status != ? ORDER BY e.rowid LIMIT ?"
    )
    last = -1
    while rows := conn.execute(sql, [backbone_id, last, MISSING, chunk]).fetchall():
        last = rows[-1][0]
        ids, matrix, norms = _unpack_embeddings(rows, dim, first=1)
        del rows
        if wanted is not None:
            keep = wanted.contains(ids)
            ids, matrix, norms = ids[keep], matrix[keep], norms[keep]
        if len(ids):
            yield ids, matrix, norms


def _read_ahead(path: Path, timeout: float, backbone_id: int, dim: int, chunk: int, wanted: "_IdSet | None") -> Iterator[tuple]:
    """_embedding_pages read one page ahead, on a second connection in a thread.

    A rescore then reads page k+1 while it scores and writes page k (SQLite lets the
    threads run at once, and with WAL the reader never waits for the writer): 1M
    embeddings are rescored in ~2 s less on 2 cores. One page ahead bounds the memory.
    """
    pages: queue.Queue = queue.Queue(maxsize=1)
    stopping = threading.Event()

    def put(item) -> None:
        while not stopping.is_set():
            try:
                pages.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read() -> None:
        try:
            conn = sqlite3.connect(str(path), timeout=timeout)
            try:
                for page in _embedding_pages(conn, backbone_id, dim, chunk, wanted):
                    put(page)
                    if stopping.is_set():  # the consumer has gone
                        break
            finally:
                conn.close()
        except BaseException as exc:  # handed to the consuming thread
            put(exc)
        put(_END_OF_PAGES)

    reader = threading.Thread(target=read, name="aes-index-read-ahead", daemon=True)
    reader.start()
    try:
        while (page := pages.get()) is not _END_OF_PAGES:
            if isinstance(page, BaseException):
                raise page
            yield page
    finally:
        stopping.set()
        reader.join()


_END_OF_PAGES = object()


class _IdSet:
    """Membership of many image ids, vectorised: a bitmap over the id range (ids are
    SQLite rowids, dense from 1), or a sorted array if the range is sparse."""

    def __init__(self, image_ids: Sequence[int]):
        ids = np.asarray(image_ids, dtype=np.int64)
        top = int(ids.max()) if len(ids) else 0
        self.bitmap = None
        if 0 <= int(ids.min(initial=0)) and top <= 8 * len(ids) + 1_000_000:
            self.bitmap = np.zeros(top + 1, dtype=bool)
            self.bitmap[ids] = True
        else:
            self.sorted = np.unique(ids)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        if self.bitmap is None:
            return np.isin(ids, self.sorted, assume_unique=True)
        inside = (ids >= 0) & (ids < len(self.bitmap))
        return inside & self.bitmap[np.where(inside, ids, 0)]


def _unpack_embeddings(rows: list[tuple], dim: int, first: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of (image_id, vector, norm), starting at column `first` -> three arrays."""
    i, v, n = first, first + 1, first + 2
    ids = np.fromiter((r[i] for r in rows), dtype=np.int64, count=len(rows))
    matrix = np.frombuffer(b"".join([r[v] for r in rows]), dtype="<f2").reshape(len(rows), dim)
    norms = np.fromiter((r[n] if r[n] is not None else np.nan for r in rows), dtype=np.float32, count=len(rows))
    return ids, matrix, norms
