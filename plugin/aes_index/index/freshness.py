"""Are the index's photos still the bytes it measured? Facts, embeddings and scores belong
to the file `rebuild` read; a file changed or gone since then is only known again after
the next rebuild.

    Freshness(index)        the index's record of every photo, read once
    .state(path)            SAME, CHANGED (other bytes at the path) or GONE (no file there:
                            moved, renamed or deleted; the next scan follows a move)
    .stale(paths)           which of `paths` are not the same, as a Stale

Cheap where nothing changed: one stat per photo; only a file whose size or mtime moved is
fingerprinted (the scan's own test), so a touched file (same bytes, new mtime) is the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .discover import fingerprint, stat_signature
from .store import OK, Index

SAME, CHANGED, GONE = "same", "changed", "gone"


@dataclass
class Stale:
    """Photos not the bytes they were measured on (paths, in the order asked)."""

    changed: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    changed_ids: set[int] = field(default_factory=set)  # the image ids of `changed`

    def __len__(self) -> int:
        return len(self.changed) + len(self.gone)

    def paths(self) -> set[str]:
        return {*self.changed, *self.gone}

    def counts(self) -> dict[str, int]:
        return {"changed_since_measured": len(self.changed), "gone_since_measured": len(self.gone)}


def stale_line(changed: int, gone: int, changed_then: str = "", gone_then: str = "") -> str:
    """One line for a person: how many photos changed, how many went, what became of them
    (`changed_then`, `gone_then`), and the cure."""
    parts = []
    if changed:
        parts.append(_photos(changed, "changed") + _aside(changed_then))
    if gone:
        parts.append(_photos(gone, "gone") + _aside("moved, renamed or deleted" + (f"; {gone_then}" if gone_then else "")))
    return ", ".join(parts) + ": run `aes-index rebuild`"


def _photos(n: int, verb: str) -> str:
    return f"1 photo {verb} since it was measured" if n == 1 else f"{n} photos {verb} since they were measured"


def _aside(text: str) -> str:
    return f" ({text})" if text else ""


class Freshness:
    """The index's record (path -> size, mtime_ns, fingerprint) against the files now."""

    def __init__(self, index: Index):
        self.rows = index.images.facts()  # image id -> path, size, mtime_ns, fingerprint, status
        self.ids = {row["path"]: image_id for image_id, row in self.rows.items()}

    def state(self, path: str) -> str:
        now = stat_signature(path)
        if now is None:
            return GONE
        row = self.rows.get(self.ids.get(path))
        if row is None or now == (row["size"], row["mtime_ns"]):
            return SAME  # a path the index never measured has no facts to go stale
        try:
            same = fingerprint(path, now[0]) == row["fingerprint"]
        except OSError:  # gone (or unreadable) between the stat and the read
            return GONE
        return SAME if same else CHANGED

    def stale(self, paths: Iterable[str]) -> Stale:
        found = Stale()
        for path in paths:
            state = self.state(path)
            if state == SAME:
                continue
            if state == CHANGED:
                found.changed.append(path)
                found.changed_ids.add(self.ids[path])  # CHANGED: the index has the path
            else:
                found.gone.append(path)
        return found

    def stale_ids(self, image_ids: Iterable[int]) -> Stale:
        return self.stale(self.rows[i]["path"] for i in sorted(image_ids) if i in self.rows)

    def stale_indexed(self) -> Stale:
        """Of every photo the index measured (status ok)."""
        return self.stale_ids(i for i, row in self.rows.items() if row["status"] == OK)
