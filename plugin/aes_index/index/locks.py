"""Advisory file locks beside the index (fcntl): one watcher per library, one writer at a time.

The writer lock makes "each photo is decoded once" hold across processes: a `rebuild` and
the watcher never embed the same new file concurrently, because whoever comes second
finds the embedding already stored. Locks die with their process, so a crash never leaves
a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import IndexUnavailable


class LockHeld(IndexUnavailable):
    """Someone else holds the lock."""


def _lock_path(db_path: Path, name: str) -> Path:
    return db_path.with_name(f"{db_path.name}.{name}.lock")


# Locks this process holds: lock file -> [thread lock, depth, open handle]. flock() on a
# second descriptor of a file this process has locked would wait for ourselves forever, so
# a nested acquisition (run_stages inside a caller that already holds the writer lock)
# only counts up. Other threads of this process wait on the thread lock, as another
# process waits on the flock.
_held: dict[str, list] = {}
_held_guard = threading.Lock()


@contextmanager
def file_lock(db_path: Path, name: str, timeout: float | None = None, what: str = "the index") -> Iterator[Path]:
    """Hold `<db>.<name>.lock`; wait up to `timeout` seconds (None: forever, 0: don't wait).

    Re-entrant within a thread: nesting is harmless."""
    path = _lock_path(Path(db_path), name)
    deadline = None if timeout is None else time.monotonic() + timeout
    with _held_guard:
        entry = _held.setdefault(str(path.resolve()), [threading.RLock(), 0, None])
    thread_lock = entry[0]
    if not thread_lock.acquire(timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic())):
        raise LockHeld(f"{what} is busy: another thread of this process holds {path.name}")
    try:
        if entry[1] == 0:
            entry[2] = _flock(path, deadline, what)
        entry[1] += 1
        try:
            yield path
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                entry[2].close()  # closing releases the flock
                entry[2] = None
    finally:
        thread_lock.release()


def _flock(path: Path, deadline: float | None, what: str):
    try:
        handle = open(path, "a+")
    except OSError as exc:  # a read-only folder: one line, not "internal error"
        raise IndexUnavailable(
            f"cannot create the lock file {path} ({exc.strerror or exc}): pass --db with an index in a folder you can write"
        ) from exc
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
    except BaseException:
        handle.close()
        raise
    return handle


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
