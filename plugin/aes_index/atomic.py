"""Crash-safe file replacement, shared by every writer that touches a user's files.

A photo's sidecar holds the user's whole darktable edit history and a JPEG original is
irreplaceable, so a write either lands completely or not at all: the new bytes go to a
temporary file in the same directory (same filesystem, so the rename is atomic), are
flushed to disk, take over the original's permission bits (and owner, where we may), and
only then replace the original with one `os.replace`. The directory is fsynced so the
rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import time
from pathlib import Path

TEMP_PREFIX = ".aes-index-"
TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"[0-9a-f]{16}" + re.escape(TEMP_SUFFIX) + r"\Z")
STALE_TEMP_SECONDS = 3600  # no write of ours takes an hour: an older temp file is debris


def sha256_hex(data: bytes) -> str:
    """The content hash we record to recognise a file we wrote, unmodified since."""
    return hashlib.sha256(data).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace (or create) `path` with `data`; on any failure the old file stays whole.

    The temporary file is removed when anything goes wrong, so a failed write leaves
    no debris beside the user's photos.
    """
    path = Path(path)
    refuse_protected(path)
    fd, tmp = _create_temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _copy_mode_and_owner(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_directory(path.parent)


def refuse_protected(path: Path) -> None:
    """A file the user write-protected (no write bit, or not writable for us) stays as it
    is: replacing it by rename would succeed, since a rename needs only the folder's
    permission, and silently undo the user's protection."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    if not st.st_mode & 0o222 or not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, "write-protected: left as it is", str(path))


def _create_temp_beside(path: Path) -> tuple[int, Path]:
    """A new, exclusive temp file next to `path`.

    Created with mode 0o666 filtered by the umask (not mkstemp's 0o600), so that a
    brand-new sidecar gets the permissions any other program would have given it.
    """
    while True:
        # Not derived from path.name: a long photo name must not overflow NAME_MAX.
        tmp = path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _copy_mode_and_owner(original: Path, tmp: Path) -> None:
    """Give `tmp` the original's permission bits and, where allowed, its owner."""
    try:
        st = original.stat()
    except FileNotFoundError:
        return
    os.chmod(tmp, st.st_mode & 0o7777)
    if hasattr(os, "chown"):
        # Only root (or the owner, for the group) may do this; a plain user keeps
        # ownership of what they write, which is what they expect anyway.
        with contextlib.suppress(PermissionError):
            os.chown(tmp, st.st_uid, st.st_gid)


def _fsync_directory(directory: Path) -> None:
    """Persist the rename; some filesystems (and Windows) can't open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def remove_if_stale_temp(path: str, mtime: float) -> bool:
    """Remove one of our own temporary files left behind by a killed process (kill -9,
    power cut): only our exact name pattern, only when it is an hour old. A user's file
    never matches; a write in progress is seconds old."""
    if not _TEMP_NAME.match(os.path.basename(path)) or time.time() - mtime < STALE_TEMP_SECONDS:
        return False
    try:
        os.unlink(path)
    except OSError:
        return False
    return True
