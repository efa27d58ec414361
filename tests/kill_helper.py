"""Run `aes-index ARGS...` and kill this process with SIGKILL at one exact point of the
write path, as a power cut or `kill -9` would: nothing after it runs, no finally, no
atexit.

    python kill_helper.py POINT N COUNTS_FILE -- ARGS...

POINT names a place in the write path (POINTS below); the process dies the Nth time it
gets there (N >= 1). With N = 0 it never dies, and writes how often it got there to
COUNTS_FILE: what a test enumerates the points with.

The points are where the product's own functions are entered or left, patched from the
outside: the product has no hook for this.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import signal
import sys

# point -> (module, attribute path, "before" | "after" the call)
POINTS = {
    # inside the journal's transaction that records a write ahead: nothing of it is committed
    "before-journal-record": [("aes_index.index.store.journal", "Journal.record", "before")],
    # a file write: the journal's pending row is in, the file not yet (xmp and EXIF write through it)
    "before-file-write": [("aes_index.formats.xmp", "atomic_write_bytes", "before"), ("aes_index.formats.exif_rating", "atomic_write_bytes", "before")],
    # the file is written, the journal does not know it landed yet
    "after-file-write": [("aes_index.formats.xmp", "atomic_write_bytes", "after"), ("aes_index.formats.exif_rating", "atomic_write_bytes", "after")],
    # digiKam: our pending rows are committed to the index, digiKam's transaction is not
    "before-digikam-commit": [("aes_index.writing.apply", "Staged.record_pending", "after")],
    # digiKam committed (or a file landed): the journal is told next
    "before-journal-done": [("aes_index.index.store.journal", "Journal.mark_done", "before")],
}


def install(point: str, kill_at: int, counts_file: str) -> None:
    calls = {"n": 0}

    def reached() -> None:
        calls["n"] += 1
        if calls["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    for module_name, attribute, when in POINTS[point]:
        owner = importlib.import_module(module_name)
        *parents, name = attribute.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        original = getattr(owner, name)

        def wrapper(*args, _original=original, _when=when, **kwargs):
            if _when == "before":
                reached()
            result = _original(*args, **kwargs)
            if _when == "after":
                reached()
            return result

        setattr(owner, name, functools.wraps(original)(wrapper))
    if kill_at == 0:
        import atexit

        atexit.register(lambda: open(counts_file, "w").write(json.dumps(calls["n"])))


def main() -> int:
    point, kill_at, counts_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    assert sys.argv[4] == "--"
    install(point, kill_at, counts_file)
    from aes_index.cli import main as cli

    return cli(sys.argv[5:])


if __name__ == "__main__":
    sys.exit(main())
