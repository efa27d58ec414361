"""Advisory file locks beside the index (fcntl): one watcher per library, one writer at a time.

The writer lock makes "each photo is decoded once" hold across processes: a `rebuild` and
the watcher never embed the same new file concurrently, because whoever comes second
finds the embedding already stored. Locks die with their process, so a crash never leaves
a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import IndexUnavailable


class LockHeld(IndexUnavailable):
    """Someone else holds the lock."""


def _lock_path(db_path: Path, name: str) -> Path:
    return db_path.with_name(f"{db_path.name}.{name}.lock")


@contextmanager
def file_lock(db_path: Path, name: str, timeout: float | None = None, what: str = "the index") -> Iterator[Path]:
    """Hold `<db>.<name>.lock`; wait up to `timeout` seconds (None: forever, 0: don't wait)."""
    path = _lock_path(Path(db_path), name)
    handle = open(path, "a+")
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockHeld(f"{what} is busy: {_holder(path)} holds {path.name}") from None
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield path
    finally:
        handle.close()  # closing releases the flock


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid else "another process"


def is_locked(db_path: Path, name: str) -> bool:
    path = _lock_path(Path(db_path), name)
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def writer_lock(db_path: Path, timeout: float | None = None):
    return file_lock(db_path, "writer", timeout, what="the index")
