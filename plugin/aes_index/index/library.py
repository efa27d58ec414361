"""A library: its index, found and opened, with the settings that hold for it.

`Library.open` is the one way in for every caller (the CLI's commands, the watcher, the
darktable plugin's requests, aes-train): it finds the index (`--db`, else the one of the
roots given or of a library they lie in, else one up from here), opens it (checked whole
when that is cheap), and merges into the settings what the library keeps for itself: its
`--exclude` patterns. The runner then gets its inputs from it: the index, the roots (given,
else the library's own) and those settings.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DB_FILENAME, Settings
from ..errors import IndexUnavailable
from .discover import db_path_for, find_db
from .store import Index, discard_unused

log = logging.getLogger("aes_index.notice")


@dataclass
class Library:
    index: Index
    settings: Settings  # the command's settings with the library's kept --exclude patterns
    given_roots: list[str] = field(default_factory=list)  # absolute; what the command named
    created: bool = False  # this open made the index file

    @property
    def roots(self) -> list[str]:
        """The folders a command works on: those it named, else the library's own."""
        return self.given_roots or self.index.roots()

    @classmethod
    def open(
        cls, settings: Settings, roots: Sequence[str] = (), *, create: bool = False, read_only: bool = False,
        exclude: Sequence[str] | None = None, start: Path | None = None,
    ) -> "Library":
        """Open the library `settings` and `roots` name (see the module's docstring).

        create: make the index where it belongs when there is none (rebuild, watch, the
        darktable plugin); read_only: never change the file (stats, top, groups, a dry run).
        exclude: --exclude as given this time: kept in the index for the next runs (an empty
        pattern forgets them); None: the kept patterns apply. start: where to look upwards
        from when nothing names the index (default: the current folder)."""
        path = locate_index(settings, roots, must_exist=not create, start=start)
        if create and not settings.db:
            _check_can_create(path)
        created = create and not path.exists()
        index = Index(path, create=create, read_only=read_only)
        try:
            index.check_on_open()
            settings = _with_library_exclude(index, settings, exclude, read_only)
        except BaseException:
            index.close()
            raise
        return cls(index, settings, [os.path.abspath(root) for root in roots], created)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.index.__exit__(exc_type, exc, traceback)  # a damaged, full or locked index: one line, exit 5
        if exc is not None and self.created:
            discard_unused(self.index.path)  # e.g. offline without weights: no empty index left in the user's folder


def locate_index(settings: Settings, roots: Sequence[str] = (), must_exist: bool = True, start: Path | None = None) -> Path:
    """Where the library's index is: --db, else the roots' own (or that of a library they
    lie in), else the first found upwards from `start` (the current folder)."""
    if settings.db:
        return Path(settings.db).expanduser()
    if roots:
        return _index_for_roots(roots)
    found = find_db(start)
    if found is None:
        if must_exist:
            raise IndexUnavailable(f"no {DB_FILENAME} here or in any parent folder; pass --db or run `aes-index rebuild PATH`")
        return (start or Path.cwd()) / DB_FILENAME
    return found


def _index_for_roots(roots: Sequence[str]) -> Path:
    """The root's own index, else that of a library the root lies inside (`rebuild
    ~/Pictures/2024` when ~/Pictures is indexed): a second index there would decode and
    score those photos again, and its ratings would not be the library's."""
    own = db_path_for(list(roots))
    if own.exists():
        return own
    enclosing = find_db(own.parent.parent)
    if enclosing is None:
        return own
    log.info("using the library's index %s: %s lies inside that library (--db PATH for another index)", enclosing, own.parent)
    return enclosing


def _check_can_create(path: Path) -> None:
    """A new index goes beside the photos by default; a folder we may not write (a
    read-only share, a mounted card) needs --db, which this says in one line."""
    folder = path.absolute().parent
    if not path.exists() and folder.is_dir() and not os.access(folder, os.W_OK):
        raise IndexUnavailable(f"cannot create the index in {folder} (read-only): pass --db PATH to keep it elsewhere")


def _with_library_exclude(index: Index, settings: Settings, given: Sequence[str] | None, read_only: bool) -> Settings:
    """--exclude patterns belong to the library: kept in its index, so a later rebuild, the
    watcher, score and the darktable plugin skip the same names. Given again, they replace
    the kept ones (`--exclude ''` forgets them); patterns from the config file always apply."""
    if given is not None and not read_only:
        index.set_meta("exclude", [pattern for pattern in given if pattern])
        return settings
    kept = index.get_meta("exclude", [])
    return settings.replace(exclude=tuple(dict.fromkeys((*settings.exclude, *kept))))
