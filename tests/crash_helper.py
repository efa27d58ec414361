"""A worker function that really crashes (segfault) on one named file, like a buggy native
decoder would. Lives in its own module so spawned worker processes can import it."""

import ctypes
import os

from aes_index.index.pipeline import _prepare_chunk

CRASH_ENV = "AES_INDEX_TEST_CRASH_ON"


def prepare_or_segfault(tasks, spec):
    for _, path in tasks:
        if os.path.basename(path) == os.environ.get(CRASH_ENV):
            ctypes.string_at(0)  # dereferences NULL: the process dies with SIGSEGV
    return _prepare_chunk(tasks, spec)
