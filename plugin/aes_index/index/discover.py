"""Discover: walk library roots and yield candidate photos with their size and mtime.

Skips what photo libraries are full of but isn't a photo: hidden files and folders,
NAS clutter (Synology's @eaDir and #recycle, QNAP's @Recycle and @Recently-Snapshot),
darktable's .dtrash, macOS resource forks, thumbnail caches, files still being written
by a copy tool (partial/temp names), and our own gallery's thumbnails (a folder holding
`THUMBS_MARKER`). Unreadable folders are reported through `on_error` and skipped; the
walk goes on.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..atomic import TEMP_PREFIX, remove_if_stale_temp
from .decode import SUPPORTED_EXTENSIONS

SKIPPED_DIRS = frozenset({
    "@eaDir", "#recycle", "#snapshot",  # Synology: thumbnails, recycle bin, snapshots
    "@Recycle", "@Recently-Snapshot",  # QNAP: recycle bin, snapshots (.@__thumb is hidden anyway)
    ".dtrash", "$RECYCLE.BIN", "System Volume Information",
    ".thumbnails", ".Trash", "lost+found", "__MACOSX", ".git",
})
SKIPPED_NAME_PATTERNS = (
    ".*",  # hidden, AppleDouble "._IMG.jpg", .DS_Store, rsync's ".IMG.jpg.XXXXXX"
    "*.part", "*.partial", "*.crdownload", "*.tmp", "*~", "*.!sync", "*.syncthing.*",
    "Thumbs.db",
)
# `report` writes this file into its thumbnail folder. The folder lands in the library
# when the report runs from the library root, and its JPEGs must never be indexed or rated.
THUMBS_MARKER = ".aes-index-thumbs"
FINGERPRINT_TAIL = 256 * 1024


@dataclass(frozen=True)
class FileEntry:
    path: str  # absolute
    size: int
    mtime_ns: int


def is_candidate_name(name: str, extra_patterns: Iterable[str] = ()) -> bool:
    if any(fnmatch.fnmatch(name, pattern) for pattern in (*SKIPPED_NAME_PATTERNS, *extra_patterns)):
        return False
    return os.path.splitext(name)[1].lower() in SUPPORTED_EXTENSIONS


def discover(
    roots: Iterable[str | os.PathLike],
    exclude: Iterable[str] = (),
    on_error: Callable[[str, OSError], None] = lambda path, exc: None,
) -> Iterator[FileEntry]:
    """Yield every photo under `roots` (files or folders), depth first, sorted per folder."""
    exclude = tuple(exclude)
    marked: dict[str, bool] = {}
    for root in roots:
        root = os.path.abspath(os.fspath(root))
        try:
            info = os.stat(root)
        except FileNotFoundError:
            continue  # gone (deleted or moved away): its rows become missing, not errors
        except OSError as exc:
            on_error(root, exc)
            continue
        if _in_thumbnail_folder(root, marked):
            continue
        if stat.S_ISDIR(info.st_mode):
            yield from _walk(root, exclude, on_error)
        elif stat.S_ISREG(info.st_mode) and is_candidate_name(os.path.basename(root), exclude):
            yield FileEntry(root, info.st_size, info.st_mtime_ns)


def _walk(folder: str, exclude: tuple[str, ...], on_error) -> Iterator[FileEntry]:
    # os.scandir gives type and (on Linux) stat without extra syscalls per entry: a no-op
    # scan of 100k files is dominated by one lstat each.
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        on_error(folder, exc)
        return
    if any(entry.name == THUMBS_MARKER for entry in entries):
        return  # our gallery's thumbnails, not photos
    subfolders = []
    for entry in entries:
        try:
            if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                remove_if_stale_temp(entry.path, entry.stat(follow_symlinks=False).st_mtime)
                continue
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in SKIPPED_DIRS and not entry.name.startswith(".") and not _matches(entry.name, exclude):
                    subfolders.append(entry.path)
            elif entry.is_file(follow_symlinks=True) and is_candidate_name(entry.name, exclude):
                if not _is_utf8(entry.path):
                    on_error(entry.path, OSError(errno.EILSEQ, "file name is not valid UTF-8; rename it to index it"))
                    continue
                info = entry.stat(follow_symlinks=True)
                yield FileEntry(entry.path, info.st_size, info.st_mtime_ns)
        except OSError as exc:  # vanished or unreadable between listing and stat
            on_error(entry.path, exc)
    for subfolder in subfolders:
        yield from _walk(subfolder, exclude, on_error)


def skipped_in_library(path: str, library_roots: Iterable[str], exclude: Iterable[str] = ()) -> bool:
    """Whether a path named on its own (a file the plugin or `score` asks about, a
    watcher's event, a subfolder given to rebuild) lies in a folder the walk of its library
    skips: below the library root it belongs to, a folder matching --exclude, a hidden one,
    NAS clutter. A path in no library root is judged by its own name only (discover)."""
    path = os.path.abspath(path)
    for root in library_roots:
        relative = os.path.relpath(path, os.path.abspath(root))
        if relative == os.curdir or relative.startswith(os.pardir + os.sep) or relative == os.pardir:
            continue
        names = relative.split(os.sep)
        folders = names if os.path.isdir(path) else names[:-1]
        return any(name in SKIPPED_DIRS or name.startswith(".") or _matches(name, exclude) for name in folders)
    return False


def _matches(name: str, patterns: Iterable[str]) -> bool:
    """--exclude globs apply to folder names as to file names."""
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def _in_thumbnail_folder(path: str, marked: dict[str, bool]) -> bool:
    """Whether `path` lies in a thumbnail folder (or is one). The walk sees the marker on
    its way down; this is for the files and subfolders the watcher hands over one by one.
    `marked` remembers the folders already looked at."""
    folder = path
    while True:
        if folder not in marked:
            marked[folder] = os.path.isfile(os.path.join(folder, THUMBS_MARKER))
        if marked[folder]:
            return True
        parent = os.path.dirname(folder)
        if parent == folder:
            return False
        folder = parent


def _is_utf8(path: str) -> bool:
    """Names from a legacy-encoded disk arrive with surrogate escapes, which the index
    (SQLite text) cannot hold: such a file is reported instead of breaking the run."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def fingerprint(path: str | os.PathLike, size: int | None = None) -> str:
    """Identity of a photo's image data, cheap to compute: a hash of the file's last 256 KiB.

    The tail holds compressed pixels in JPEG and most RAW files, while editors rewrite the
    head (EXIF, embedded XMP, ratings). So a moved or renamed file, or one whose metadata
    alone changed, keeps its fingerprint and its cached embedding; new pixels change it.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size if size is None else size
        handle.seek(max(0, size - FINGERPRINT_TAIL))
        tail = handle.read(FINGERPRINT_TAIL)
    return hashlib.blake2b(tail, digest_size=16).hexdigest()


def db_path_for(roots: list[str]) -> Path:
    """Default index location: .aes-index.db in the (first) library root."""
    first = Path(roots[0]).expanduser().absolute()
    return (first if first.is_dir() else first.parent) / ".aes-index.db"


def find_db(start: Path | None = None) -> Path | None:
    """Look for .aes-index.db in `start` and its parents, as git looks for .git."""
    here = (start or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        candidate = folder / ".aes-index.db"
        if candidate.is_file():
            return candidate
    return None


def stat_signature(path: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file, None when it is gone: what tells that a file has
    stopped changing (the watcher) or changed under us (the runner, before it stores)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns
