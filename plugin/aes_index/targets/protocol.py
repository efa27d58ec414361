"""The rating-target protocol: what every place we write a photo manager's value into offers.

A *target* is a kind of storage a photo manager reads (XMP sidecars, EXIF in JPEGs,
darktable's library through its Lua plugin, digiKam's database). A *place* is one spot in
it that holds one photo's value (one sidecar, one darktable duplicate, one digiKam image).
The one apply loop and the one undo loop (apply.py) drive every target the same way:

    with target.session(dry_run):           # e.g. digiKam's database held exclusively
        for place in target.places(photo):
            reading = target.read(place)     # the value now, and a token of the state read
            decision = decide(...)           # ratings.decide: manual values win, in one place
            written = target.write(reading, wanted, dry_run)   # refuses if the place changed since `reading`
            journal the write                # store's journal
        target.undo(action, dry_run)         # put one journaled write back

The decision and the write use the same read: `write` gets the `Reading` the decision was
made on and raises `ChangedSinceRead` when the place no longer holds that state (a person
rated the photo in between), so a person's rating is never overwritten by a stale decision.

Values are ints: ratings -1 (rejected) .. 5, 0 or None for "none".

Culling writes through the same protocol and the same loop (apply.apply_marks): its
`Marks` is what `Wanted` is for stars (a keeper's pick label, our flag tags, a reject
only when asked, the group it belongs to); a target's `read` also says what the place
shows of those (`CullState`), culling.marks.decide_marks (the culling counterpart of
ratings.decide) says which fields may change, and `mark` writes them, one journal row
per field ("pick", "tags", "group", "rating" for a reject), so undo restores each.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..errors import AesIndexError, ExitCode
from ..paths import inside_roots
from ..values import KEEPER_ELSEWHERE


RATING = "rating"  # the field of a star rating; culling writes "pick", "tags", "group" too


@dataclass(frozen=True)
class Write:
    """One write, as a target reports it and the journal keeps it."""

    target: str
    place: str
    image_path: str
    old: int | None
    new: int | None
    created_file: bool = False
    content_hash_after: str | None = None
    prior: dict | None = None
    field: str = RATING
    hash_before: str | None = None  # the file's sha256 before the write (None: no file, or not a file)


@dataclass(frozen=True)
class UndoAction:
    """What undoing one place's write (or writes) means."""

    row_ids: tuple[int, ...]
    run_id: int
    target: str
    place: str
    image_path: str
    restore: int | None  # the value before our write (None: remove it)
    expected: int | None  # what we wrote; anything else now means a person changed it
    created_file: bool = False  # our first write created the file: it may go if still as we left it
    hash_after: str | None = None  # the file's hash right after our (last) write
    prior: dict = field(default_factory=dict)  # the target's own fields before the write
    superseded_by_run: int | None = None  # a later run wrote this field of this place again
    field: str = RATING  # which value (Write.field): a target undoes each field on its own
    hash_before: str | None = None  # the file's hash before our first write (write-ahead)
    new: int | None = None  # what the last write set (for a pending row: what it meant to set)
    pending: bool = False  # recorded ahead of its write, not yet known to have landed
    file_is_ours: bool = False  # a write of ours created the file, and no undo has removed it since

    @property
    def target_path(self) -> Path:
        return Path(self.place)


class TargetError(AesIndexError):
    """One place that could not be read or written; recorded per place, the run goes on."""

    exit_code = ExitCode.FILE_ERRORS


class ChangedSinceRead(TargetError):
    """The place changed between the read our decision used and the write: left alone."""


class OutsideLibrary(TargetError):
    """A file place that is not inside the roots the user indexed (or leads out of them
    through a symlink): we never write there."""


def check_inside(path: str, roots) -> None:
    """Refuse a file outside the indexed roots, followed through every symlink."""
    if inside_roots(path, roots):
        return
    where = "leads outside" if os.path.islink(path) else "is outside"
    known = ", ".join(roots) or "none yet: run `aes-index rebuild ROOT`"
    raise OutsideLibrary(f"{path}: not touched: it {where} the library's folders ({known})")


@dataclass(frozen=True)
class Marks:
    """What culling wants one photo to show (culling's counterpart of `Wanted`).

    keeper: the keeper of its group: pick label "accepted" and our tag "keeper".
    flags: its technical failures (culling.model.FLAGS): our tags "blurry", ...
    reject: True: reject it (a flagged photo beside an unflagged keeper, and the run was asked to
        reject); False: no reject of ours belongs on it (one from an earlier run goes);
        None: the run leaves rejects alone (it was not asked to reject).
    leader: the photo path it is grouped under: the keeper, or in a folder the keeper is
        not in, the best of the group there (culling.marks.folder_leaders); None for a
        photo that leads, stands alone in its folder, or is in no group. Only targets that
        hold groups use it.
    group: False when the group's grouping is a person's (or the person grouped one of
        its photos otherwise): then no grouping of ours is written or removed.
    keeper_elsewhere: a member of a group whose keeper is in another folder: our tag
        "keeper in another folder" links it to the keeper.
    """

    path: str
    keeper: bool = False
    flags: tuple[str, ...] = ()
    reject: bool | None = None
    leader: str | None = None
    group: bool = True
    keeper_elsewhere: bool = False

    @property
    def tags(self) -> tuple[str, ...]:
        """Our culling tags for it, relative to our tag root ("keeper", "blurry")."""
        return (("keeper",) if self.keeper else ()) + ((KEEPER_ELSEWHERE,) if self.keeper_elsewhere else ()) + tuple(self.flags)

    @property
    def rank(self) -> tuple:
        """Which of the photos sharing a place decides it (a RAW+JPEG pair's IMG_1.xmp):
        a keeper, then a flagged photo."""
        return (self.keeper, bool(self.flags), self.reject is True)


@dataclass(frozen=True)
class CullState:
    """What a place shows of culling's fields now (part of its `Reading`)."""

    pick: int | None = None  # the pick label (digiKam's 0..3); None: none
    marked_pick: int | None = None  # the pick the place itself says we set (a sidecar's aes:Pick)
    marked_reject: bool = False  # the place itself says its -1 rating is our reject (aes:Reject)
    tags: tuple[str, ...] = ()  # our culling tags there now
    leader: Any = None  # the place it is grouped under (a digiKam image id); None: none
    followers: tuple = ()  # places grouped under it (digiKam image ids)


@dataclass(frozen=True)
class Place:
    """One spot a photo's value lives in: `key` is its journal name (target_path)."""

    key: str
    image_path: str
    ref: Any = None  # the target's own handle (a darktable request's ref, a digiKam image id)


@dataclass(frozen=True)
class Reading:
    """What a place holds now; `token` is what the write checks it still holds."""

    place: Place
    value: int | None  # None (or 0): no rating
    token: Any
    detail: Any = None  # the target's own view (a sidecar's tags and fields)
    ours: int | None = None  # the value the place itself says we wrote (a sidecar's aes:Stars)
    cull: CullState = CullState()  # what it shows of culling's fields


@dataclass(frozen=True)
class Wanted:
    """What we want a photo to show: its stars, and what they come from."""

    stars: int
    score: float
    percentile: float
    head_id: str
    tags: bool = True  # also our "Aesthetic" tags


@dataclass(frozen=True)
class UndoResult:
    action: UndoAction
    status: str  # restored | deleted | kept-manual | missing | not written | superseded | pending | failed
    detail: str = ""

    @property
    def done(self) -> bool:
        """Whether the journal rows count as undone (and are closed)."""
        return self.status in ("restored", "deleted", "kept-manual", "missing", "not written")

    def as_dict(self) -> dict:
        return {"path": self.action.image_path, "target": self.action.place, "status": self.status, "detail": self.detail}


@dataclass
class Target:
    """Base of the four targets; each overrides places, read, write and undo."""

    name: str = ""  # the journal's target name
    rejects: bool = True  # whether the target can hold a "rejected" (-1)
    # True: writes land when the session ends (a database transaction), so they are
    # journaled then; False: each write is on disk at once and journaled at once.
    transactional: bool = False
    # True: the photo manager applies our answer itself and reports back (darktable),
    # so writes are journaled and undo rows closed when it does.
    deferred: bool = False
    holds_groups: bool = False  # True: the target has its own grouping (digiKam's, darktable's), culling writes it
    holds_picks: bool = True  # False: no pick labels (darktable): culling's keepers show by tag and group only
    extra: dict = field(default_factory=dict)  # target facts for the run's report

    @contextlib.contextmanager
    def session(self, dry_run: bool, before_commit: Callable[[], None] = lambda: None) -> Iterator[None]:
        """Hold what the target needs while a run reads and writes it. A transactional
        target calls `before_commit` just before its writes land (the journal records them
        there, write-ahead); others have nothing to commit."""
        yield

    def session_writes(self) -> list[Write]:
        """Writes of the session as a whole, beyond its places' (digiKam: the tags it
        created), journaled with them before the session commits."""
        return []

    def landed(self, action: UndoAction) -> bool | None:
        """Whether a write the journal recorded ahead (pending) reached the place: True if
        the place holds what it wrote, False if it still holds the state before it, None
        when this target cannot look now. A place a person changed since counts as written
        unless it shows the value before: what stays ours stays recognisable as ours."""
        return None

    def unsupported(self, photo_path: str, stars: int) -> str | None:
        """Why this target can't take this photo's value at all (None: it can)."""
        if stars == -1 and not self.rejects:
            return "no-reject"
        return None

    def places(self, photo_path: str) -> list[Place]:
        raise NotImplementedError

    def read(self, place: Place) -> Reading:
        raise NotImplementedError

    def write(self, reading: Reading, wanted: Wanted, dry_run: bool) -> Write | None:
        """Set the wanted value (and our fields) where `reading` was taken.

        Returns what to journal (None: nothing changed on disk). Raises ChangedSinceRead
        when the place no longer holds what `reading` saw, TargetError for a place we refuse.
        """
        raise NotImplementedError

    def ref_of(self, photo_path: str) -> Any:
        """How a place of this target names the photo a group hangs under (its `leader`)."""
        return photo_path

    def mark(self, reading: Reading, changes: dict[str, Any], marks: Marks, dry_run: bool) -> list[Write]:
        """Set culling's fields `changes` (field -> value, as culling.marks.decide_marks
        allowed them on `reading`): "pick", "tags", "group" (the leader's place ref or None),
        "rating" (-1 or None). Returns what to journal, one Write per field changed.
        Raises ChangedSinceRead like `write`."""
        raise TargetError(f"{reading.place.key}: the {self.name} target takes no culling marks")

    def write_decision(self, reading: Reading, changes: dict[str, Any], dry_run: bool) -> list[Write]:
        """Set a person's own decision `changes` (field -> value: "rating", "pick"), made
        in `aes-index review`, where `reading` was taken: their values, and none of our
        markers that would call them ours (ownership.py). Returns what to journal, one
        Write per field. Raises ChangedSinceRead like `write`."""
        raise TargetError(f"{reading.place.key}: the {self.name} target takes no decisions from the review page")

    def undo(self, action: UndoAction, dry_run: bool) -> UndoResult:
        raise NotImplementedError

    def note(self, place: Place, wanted: Wanted, reason: str, written: bool) -> None:
        """Every decision, written or not (darktable answers with all of them)."""


def show(value: int | None) -> str:
    return "none" if value is None else str(value)


def kept_manual(action: UndoAction, current: int | None) -> UndoResult:
    return UndoResult(action, "kept-manual", f"rating is {show(current)} now, not our {show(action.expected)}: left as is")


def restored(action: UndoAction) -> UndoResult:
    return UndoResult(action, "restored", f"rating {show(action.expected)} -> {show(action.restore)}")
