"""A person's decisions from the review page: pick, reject, unmark, stars, and undo.

Each key press is written at once, as the person's own value, into every place the
library uses for the photo: its XMP sidecars (version 0's and those of darktable's
duplicates) and, where this library has written to a digiKam database (`digikam sync`
or `digikam cull` used it) and no digiKam has that database open, digiKam's own tables.
darktable sees the sidecars (see the README: when it reads them).

It goes through the rating-target protocol and the one apply loop
(writing/apply.apply_decision) as one run of ownership.PERSONS_COMMANDS, journaled ahead
like every write of ours, so `aes-index ratings undo` and `undo` here put it back; but
what it sets is the person's (ownership.py): no later run of ours changes or takes it
back, and a pick wins its group's keeper ("your pick (5 stars)").

The page shows `current(...)`, whose `seen` names what was read; `decide(..., seen=)`
refuses with ChangedSinceShown, carrying the new state, when a place changed since.

What each action sets (digiKam has no "rejected" rating: there a reject is its pick label):

    pick     digiKam:PickLabel 3 ("accepted"); a rejected rating (-1) goes
    reject   xmp:Rating -1 and digiKam:PickLabel 1 ("rejected")
    unmark   no pick label; a rejected rating (-1) goes
    stars N  xmp:Rating N (0: no stars, written as 0); a "rejected" pick label goes
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ... import ownership
from ...errors import ConfigError
from ...paths import printable
from ...targets.digikam import TARGET as DIGIKAM, DigikamTarget
from ...targets.digikam_db import digikam_holding
from ...targets.protocol import ChangedSinceRead, Reading, Target, TargetError, UndoResult, check_inside
from ...targets.sidecar import SidecarTarget
from ...values import NO_PICK, PICK_ACCEPTED, PICK_PENDING, PICK_REJECTED, REJECTED
from ...writing import apply

ACTIONS = ("pick", "reject", "unmark", "stars")
PICK_NAMES = {PICK_ACCEPTED: "accepted", PICK_REJECTED: "rejected", PICK_PENDING: "pending"}
TURN_TIMEOUT_S = 10.0  # a key press waits this long for a run that writes ratings (apply-ratings), then says so
_backed_up: set[Path] = set()  # digiKam databases this process backed up once before a decision wrote into them


class ChangedSinceShown(ChangedSinceRead):
    """A place changed since the page showed it (someone else wrote it): not overwritten.
    `state` is the photo as it is now, for the page to show."""

    def __init__(self, message: str, state: "PhotoState"):
        super().__init__(message)
        self.state = state


class DecisionRefused(TargetError):
    """A place of the photo refused the decision (write-protected, a sidecar we refuse to
    edit): `written` says which places took it (undo them with `undo(..., run_id)`)."""

    def __init__(self, message: str, run_id: int | None, written: list[dict], errors: list[dict]):
        super().__init__(message)
        self.run_id, self.written, self.errors = run_id, written, errors


class NotADecision(ConfigError):
    """An action, a star value or a decision id that makes no sense."""


# --------------------------------------------------------------------------- what the page gets


@dataclass(frozen=True)
class PlaceView:
    """One place's values as read: its rating (stars 0..5, or rejected) and pick label, and
    whose each is (ownership.py: "person", "ours", "nobody")."""

    target: str  # "xmp" | "digikam"
    place: str  # the sidecar's path, or "<digikam4.db>#<image id>"
    stars: int | None  # 0..5; None: no rating (or a reject)
    rejected: bool  # xmp:Rating -1, or the pick label "rejected"
    pick: str | None  # "accepted" | "rejected" | "pending" | None
    rating_by: str
    pick_by: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PhotoState:
    """A photo's decision as the library shows it now: the first place holding a value
    speaks (its own sidecar first, then its duplicates', then digiKam); `places` has each.
    `seen`: an opaque token of what was read, for `decide(seen=...)`."""

    path: str
    stars: int | None
    rejected: bool
    picked: bool
    pick: str | None
    places: tuple[PlaceView, ...]
    unreachable: tuple[dict, ...]  # {"target", "place", "reason"}: a place not read (digiKam running)
    seen: str

    def as_dict(self) -> dict:
        data = asdict(self)
        data["places"] = [place.as_dict() for place in self.places]
        data["unreachable"] = [dict(item) for item in self.unreachable]
        return data


@dataclass(frozen=True)
class Decision:
    """A decision written: `id` is its run (what `undo` and `aes-index ratings undo --run` take)."""

    id: int | None
    path: str
    action: str
    value: int | None
    written: tuple[dict, ...]  # {"target", "place", "fields"}
    state: PhotoState  # the photo right after

    def as_dict(self) -> dict:
        return {"id": self.id, "path": self.path, "action": self.action, "value": self.value,
                "written": [dict(item) for item in self.written], "state": self.state.as_dict()}


@dataclass(frozen=True)
class Undone:
    """A decision (a run) put back: per place and field, what undo did."""

    id: int
    results: tuple[dict, ...]  # UndoResult.as_dict() plus "field"
    waiting: tuple[dict, ...]  # places not reachable now (digiKam running): undo again later
    states: tuple[PhotoState, ...]  # the photos it touched, as they are now

    @property
    def complete(self) -> bool:
        return not self.waiting and all(item["status"] in _DONE for item in self.results)

    def as_dict(self) -> dict:
        return {"id": self.id, "complete": self.complete, "results": [dict(r) for r in self.results],
                "waiting": [dict(w) for w in self.waiting], "states": [s.as_dict() for s in self.states]}


_DONE = ("restored", "deleted", "kept-manual", "missing", "not written")


# --------------------------------------------------------------------------- the operations


def current(library, image_path: str, digikam: Sequence[Path] | None = None) -> PhotoState:
    """The person's current rating and pick of `image_path` in every place the library
    uses. digikam: the digiKam databases to read (None: those this library has written
    to); one a digiKam has open is left out and named in `unreachable`."""
    index, photo = library.index, _photo(library, image_path)
    targets, unreachable = _targets(index, digikam)
    with _sessions(targets):
        readings = _read(targets, photo)
    return _state(index, photo, readings, unreachable, _unrated(library))


def decide(library, image_path: str, action: str, value: int | None = None, seen: str | None = None,
           digikam: Sequence[Path] | None = None) -> Decision:
    """Write a person's decision (`action`: pick | reject | unmark | stars with `value` 0..5)
    for `image_path` at once, as theirs, into every place the library uses for it.

    seen: the `PhotoState.seen` the page showed; when the places read now differ (someone
    else wrote one since), nothing is written and ChangedSinceShown carries the new state.
    Raises OutsideLibrary (a path outside the library's folders), NotADecision (a path the
    index does not hold, an unknown action or value), DecisionRefused (a place refused:
    write-protected, a sidecar we refuse to edit), LockHeld (another run writing ratings
    kept the turn longer than TURN_TIMEOUT_S), DigikamUnavailable (digiKam opened its
    database just now).
    """
    wanted = _wanted(action, value)
    index, photo = library.index, _photo(library, image_path)
    targets, unreachable = _targets(index, digikam, writing=True)
    unrated = _unrated(library)

    def shown(readings: list[tuple[Target, Reading]]) -> None:
        now = _state(index, photo, readings, unreachable, unrated)
        if seen is not None and now.seen != seen:
            raise ChangedSinceShown(f"{printable(photo)}: changed since it was shown (by someone else?); not overwritten: look again", now)

    def changes_for(target: Target, reading: Reading) -> dict:
        return _changes(wanted, target, ownership.read_state(index.journal, target.name, reading, unrated), reading)

    record = {"action": action, "value": value, "photo": photo}
    report = apply.apply_decision(index, targets, photo, changes_for, shown, record, turn_timeout=TURN_TIMEOUT_S)
    _backed_up.update(target.db_path for target in targets if isinstance(target, DigikamTarget))
    if report.changed_since_read:  # changed between the check and the write: as above, with the state now
        raise ChangedSinceShown(f"{printable(photo)}: changed while the decision was written (by someone else?); look again", current(library, photo, digikam))
    if report.errors:
        places = "; ".join(f"{printable(item['path'])}: {printable(item['error'])}" for item in report.errors)
        raise DecisionRefused(f"{printable(photo)}: not written to every place ({places})", report.run_id, report.written, report.errors)
    return Decision(report.run_id if report.written else None, photo, action, value, tuple(report.written), current(library, photo, digikam))


def undo(library, decision_id: int, digikam: Sequence[Path] | None = None) -> Undone:
    """Put back decision `decision_id` (the run `decide` made: the page's Ctrl-Z), every
    byte of a sidecar it created or changed, as `aes-index ratings undo` would. Only a
    review decision: another run's id is refused (NotADecision). digiKam's places wait
    (`waiting`) while a digiKam has its database open."""
    index = library.index
    if index.runs.command(decision_id) not in ownership.PERSONS_COMMANDS:
        raise NotADecision(f"{decision_id} is no decision made in review (see `aes-index ratings undo --run` for other runs)")
    actions = index.journal.plan_undo(decision_id)
    if not actions:
        return Undone(decision_id, (), (), ())
    results: list[UndoResult] = []
    waiting = []
    files = [a for a in actions if a.target != DIGIKAM]
    if files:
        results += apply.undo(index, {"xmp": SidecarTarget(roots=tuple(index.roots()))}, files)
    for db_path in sorted({a.place.rsplit("#", 1)[0] for a in actions if a.target == DIGIKAM}):
        here = [a for a in actions if a.target == DIGIKAM and a.place.rsplit("#", 1)[0] == db_path]
        if digikam_holding(Path(db_path)):
            waiting += [{"target": DIGIKAM, "place": a.place, "reason": "digiKam has its database open: quit it, then undo again"} for a in here]
            continue
        results += apply.undo(index, {DIGIKAM: DigikamTarget(db_path=Path(db_path), backup=False)}, here)
    photos = sorted({a.image_path for a in actions if os.path.isfile(a.image_path)})
    states = tuple(current(library, path, digikam) for path in photos)
    return Undone(decision_id, tuple({**r.as_dict(), "field": r.action.field} for r in results), tuple(waiting), states)


# --------------------------------------------------------------------------- the rule


def _wanted(action: str, value: int | None) -> tuple[str, int | None]:
    if action not in ACTIONS:
        raise NotADecision(f"unknown decision {action!r}: use one of {', '.join(ACTIONS)}")
    if action == "stars":
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 5:
            raise NotADecision(f"stars take 0 to 5, not {value!r}")
        return action, value
    return action, None


def _changes(wanted: tuple[str, int | None], target: Target, place: ownership.PlaceState, reading: Reading) -> dict[str, Any]:
    """The fields a decision sets at one place (see the module's table): those not already
    the person's as decided. A value already there but ours (or nobody's) is written all
    the same where the place would then change, so that it becomes theirs."""
    action, value = wanted
    rating, pick = reading.value, None if reading.cull.pick == NO_PICK else reading.cull.pick
    fields: dict[str, Any] = {}
    if action == "pick":
        fields["pick"] = PICK_ACCEPTED
        if rating == REJECTED:
            fields["rating"] = None
    elif action == "reject":
        fields["pick"] = PICK_REJECTED
        if target.rejects:
            fields["rating"] = REJECTED
    elif action == "unmark":
        fields["pick"] = None
        if rating == REJECTED:
            fields["rating"] = None
    else:
        fields["rating"] = value
        if pick == PICK_REJECTED:
            fields["pick"] = None
    if not target.holds_picks:
        fields.pop("pick", None)
    return {name: new for name, new in fields.items() if not _theirs_already(place, name, new)}


def _theirs_already(place: ownership.PlaceState, name: str, wanted: Any) -> bool:
    """Whether the place shows `wanted` as the person's already (or shows nothing, where
    the decision wants nothing). A rating of 0 is written as asked: darktable shows an
    absent rating as its import default, 0 as none."""
    nothing = ownership.NONE_VALUES[name]
    now = place.value(name)
    if now in nothing and wanted is None:
        return True
    same = now == wanted or (name == "pick" and now in nothing and wanted in nothing)
    return same and place.owner(name) is ownership.Owner.PERSON


# --------------------------------------------------------------------------- reading


def _photo(library, image_path: str) -> str:
    """The indexed photo `image_path` names, inside the library's folders."""
    photo = os.path.abspath(image_path)
    check_inside(photo, library.index.roots())
    if library.index.images.by_path(photo) is None:
        raise NotADecision(f"{printable(photo)}: not a photo of this library's index (run `aes-index rebuild` first?)")
    return photo


def _targets(index, digikam: Sequence[Path] | None, writing: bool = False) -> tuple[list[Target], list[dict]]:
    """The sidecar target, and one digiKam target per database the library uses and no
    digiKam holds open (those are `unreachable`)."""
    targets: list[Target] = [SidecarTarget(roots=tuple(index.roots()))]
    unreachable = []
    databases = [Path(p) for p in (index.journal.databases(DIGIKAM) if digikam is None else digikam)]
    for db_path in databases:
        if not db_path.is_file():
            unreachable.append({"target": DIGIKAM, "place": str(db_path), "reason": "no digiKam database there any more"})
        elif pids := digikam_holding(db_path):
            reason = f"digiKam is running with it open (pid {', '.join(map(str, pids))}): it reads the sidecar when told to"
            unreachable.append({"target": DIGIKAM, "place": str(db_path), "reason": reason})
        else:
            resolved = db_path.resolve()
            targets.append(DigikamTarget(db_path=resolved, backup=writing and resolved not in _backed_up))
    return targets, unreachable


@contextlib.contextmanager
def _sessions(targets: Sequence[Target]):
    """Every target's session, reading only (digiKam: held, then rolled back)."""
    with contextlib.ExitStack() as stack:
        for target in targets:
            stack.enter_context(target.session(True))
        yield


def _read(targets: Sequence[Target], photo: str) -> list[tuple[Target, Reading]]:
    return [(target, target.read(place)) for target in targets for place in target.places(photo)]


def _state(index, photo: str, readings: list[tuple[Target, Reading]], unreachable: list[dict], unrated) -> PhotoState:
    places = tuple(_view(target, reading, ownership.read_state(index.journal, target.name, reading, unrated)) for target, reading in readings)
    rating = next((r.value for _, r in readings if r.value is not None), None)
    pick = next((r.cull.pick for _, r in readings if r.cull.pick not in (None, NO_PICK)), None)
    return PhotoState(
        path=photo, stars=rating if rating is not None and rating >= 0 else None,
        rejected=rating == REJECTED or pick == PICK_REJECTED, picked=pick == PICK_ACCEPTED, pick=PICK_NAMES.get(pick),
        places=places, unreachable=tuple(unreachable), seen=_seen(readings),
    )


def _view(target: Target, reading: Reading, place: ownership.PlaceState) -> PlaceView:
    rating, pick = reading.value, reading.cull.pick
    return PlaceView(
        target=target.name, place=reading.place.key, stars=rating if rating is not None and rating >= 0 else None,
        rejected=rating == REJECTED or pick == PICK_REJECTED, pick=PICK_NAMES.get(pick),
        rating_by=place.owner("rating").value, pick_by=place.owner("pick").value,
    )


def _seen(readings: list[tuple[Target, Reading]]) -> str:
    """What was read, as one short token: each place's own token (a sidecar's bytes'
    hash), rating and pick label."""
    parts = sorted([target.name, reading.place.key, repr(reading.token), reading.value, reading.cull.pick] for target, reading in readings)
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def _unrated(library) -> tuple[int, ...]:
    text = getattr(library.settings, "treat_as_unrated", "") or ""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--treat-as-unrated takes ratings from -1 to 5 like 1 or 0,1, not {text!r}") from None

