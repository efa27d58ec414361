"""Whose value is it: ours, a person's, or nobody's. The one rule every feature asks.

A photo manager's field (a star rating, a pick label, a group) holds a value at one
place (a sidecar, a JPEG, a darktable image, a digiKam image). Before we change it, show
it as a person's choice, learn from it, or put it back, we ask whose it is:

- nobody's: no value at all, or one that counts as none (0 stars, digiKam's "no pick",
  and whatever the person told us to treat as unrated, e.g. darktable's import 1 star);
- ours: a value we wrote there and have not taken back, as the journal records it
  (written, or about to be: a write-ahead row), or as the place itself marks it
  (a sidecar's aes:Stars equal to its xmp:Rating, aes:Pick, aes:Reject), wherever the
  photo moved since;
- a person's: anything else. We never change it, and it wins the keeper. That includes
  what we wrote on a person's behalf: a run of PERSONS_COMMANDS (the review page's key
  presses) writes the person's own value, and while the place holds it, it is theirs,
  even a "none" (they cleared it), whatever markers or earlier writes of ours say.

`PlaceState` is what one read of a place and the journal says (`read_state` makes it);
the functions below are pure and decide from it. `treat_as_unrated` is applied here and
nowhere else.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .values import NO_PICK, NO_RATING, PICK_ACCEPTED, PICK_REJECTED, REJECTED

STRONGEST_CHOICE = 5  # a person's "accepted" pick label counts as five stars

# Runs that write a person's own decisions on their behalf (`aes-index review`'s pick,
# reject, unmark and stars): their journal rows are undoable like ours, but the values
# they set are the person's (the journal's `persons` queries, `PlaceState.persons_set`).
PERSONS_COMMANDS = ("review",)


class Owner(str, enum.Enum):
    NOBODY = "nobody"
    OURS = "ours"
    PERSON = "person"


# The values that mean "nothing here", per field.
NONE_VALUES: Mapping[str, frozenset] = {
    "rating": frozenset({None, NO_RATING}),
    "pick": frozenset({None, NO_PICK}),
    "group": frozenset({None}),
}


@dataclass(frozen=True)
class PlaceState:
    """What one place holds now and what we know of it: its values per field ("rating",
    "pick", "group"), the values that are ours there (journal and the place's markers),
    and what our last write of each field replaced."""

    values: Mapping[str, Any] = field(default_factory=dict)
    ours: Mapping[str, frozenset] = field(default_factory=dict)
    before: Mapping[str, Any] = field(default_factory=dict)
    unrated: tuple[int, ...] = ()
    last: Mapping[str, Any] = field(default_factory=dict)  # the value of ours to name in reports
    # field -> the value a person set there through us last (a review decision), when the
    # journal's newest write of the field is theirs; absent: none of theirs stands.
    persons_set: Mapping[str, Any] = field(default_factory=dict)

    def value(self, name: str) -> Any:
        return self.values.get(name)

    def owner(self, name: str) -> Owner:
        decided = (self.persons_set[name],) if name in self.persons_set else ()
        return owner(self.value(name), self.ours.get(name, frozenset()), name, self.unrated, decided)

    def persons(self, name: str) -> Any:
        """The field's value when it is a person's, else None."""
        return self.value(name) if self.owner(name) is Owner.PERSON else None


def owner(value: Any, ours: Iterable = (), name: str = "rating", unrated: Iterable[int] = (), decided: Iterable = ()) -> Owner:
    """The rule. `ours`: the values we wrote there and stand; `unrated`: ratings that count
    as none (only for ratings: a pick label or a group has no such convention); `decided`:
    the value a person set there through us (a review decision; empty: none), theirs while
    it is there, a "none" included (they cleared the field: no run of ours fills it)."""
    nothing = NONE_VALUES.get(name, frozenset({None}))
    if any(value == given or (value in nothing and given in nothing) for given in decided):
        return Owner.PERSON
    if value in nothing or (name == "rating" and value in tuple(unrated)):
        return Owner.NOBODY
    if value in set(ours):
        return Owner.OURS
    return Owner.PERSON


def state(
    values: Mapping[str, Any],
    journal: Mapping[str, Any] = {},
    markers: Mapping[str, Any] = {},
    before: Mapping[str, Any] = {},
    unrated: Iterable[int] = (),
    persons: Mapping[str, Any] = {},
) -> PlaceState:
    """A PlaceState from a place's values, the journal's last write per field that stands
    (`journal`: one value, or a collection of them), the place's own markers of our values
    (`markers`, likewise), and what our last writes replaced (`before`). A field's ours is
    the union: the journal of this index and the marks a write of ours left in the place
    (read by any index, after any move). `persons`: field -> the value a person's decision
    set there through us (the journal's newest write of the field), which is theirs."""
    ours: dict[str, frozenset] = {}
    last: dict[str, Any] = {}
    for source in (markers, journal):  # the journal's value names ours in reports, else the marker's
        for name, given in source.items():
            found = [v for v in (given if isinstance(given, (set, frozenset, list, tuple)) else (given,)) if v is not None]
            if found:
                ours[name] = ours.get(name, frozenset()) | set(found)
                last[name] = found[0]
    return PlaceState(dict(values), ours, dict(before), tuple(unrated), last, dict(persons))


def read_state(journal, target: str, reading, unrated: Iterable[int] = ()) -> PlaceState:
    """The state of the place `reading` was taken of: its rating, pick label and group as
    read, what the journal says we wrote there and still stands (a rating we set for the
    photo through any target counts: darktable copies the stars we set into its sidecars,
    digiKam may too), and the place's own markers (aes:Stars, aes:Pick, aes:Reject)."""
    place, cull = reading.place, reading.cull
    rating = journal.last_written(target, place.key)
    if rating is None:
        rating = journal.last_rating_for_image(place.image_path)
    persons = {}
    for name in ("rating", "pick"):
        # there, else in another place of the photo: its sidecar, which darktable and digiKam read
        decided = journal.persons_value(target, place.key, name) or journal.persons_value_for_image(place.image_path, name)
        if decided:
            persons[name] = decided[0]
    return state(
        values={"rating": reading.value, "pick": cull.pick, "group": cull.leader},
        journal={"rating": rating, "pick": journal.last_written(target, place.key, "pick"),
                 "group": journal.last_written(target, place.key, "group")},
        markers={"rating": (reading.ours, REJECTED if cull.marked_reject else None), "pick": cull.marked_pick},
        before={"rating": journal.before_last_write(target, place.key)},
        unrated=unrated,
        persons=persons,
    )


# --------------------------------------------------------------------------- decisions


class Action(str, enum.Enum):
    WRITE = "write"
    SKIP_PERSON = "skip-manual"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Decision:
    """What to do with one field at one place, and why (for reports)."""

    action: Action
    reason: str

    @property
    def write(self) -> bool:
        return self.action is Action.WRITE


def may_set(place: PlaceState, name: str, wanted: Any, overwrite: bool = False) -> Decision:
    """Whether we may set field `name` to `wanted`: where it holds nothing (or what counts
    as nothing) or a value of ours; a person's value only with `overwrite`
    (`apply-ratings --overwrite-manual`)."""
    current = place.value(name)
    if name == "rating" and wanted in NONE_VALUES["rating"]:
        return Decision(Action.UNCHANGED, "no score, so no rating to write")
    if current == wanted:  # before treat_as_unrated, which would turn 1 -> 1 into a write
        return Decision(Action.UNCHANGED, f"already {_what(name)} {wanted}")
    whose = place.owner(name)
    if whose is Owner.NOBODY:
        return Decision(Action.WRITE, f"no {_noun(name)} yet")
    if whose is Owner.OURS:
        return Decision(Action.WRITE, f"still holds our previous {_noun(name)} {current}")
    if overwrite:
        return Decision(Action.WRITE, f"manual {_noun(name)} {current} overwritten (--overwrite-manual)")
    if name in place.persons_set:
        return Decision(Action.SKIP_PERSON, f"{_what(name)} {_shown(current)} by you (your decision in review)")
    if name not in place.last:
        return Decision(Action.SKIP_PERSON, f"{_what(name)} {current} by hand; we never wrote it")
    return Decision(Action.SKIP_PERSON, f"{_what(name)} {current} by hand since we wrote {place.last[name]}")


def may_take_back(place: PlaceState, name: str) -> bool:
    """Whether the field holds a value of ours that we may remove (a reject a later run no
    longer wants): only ours, never nobody's or a person's."""
    return place.owner(name) is Owner.OURS


def still_ours(current: Any, expected: Any) -> bool:
    """Undo's question: does the place still hold exactly what we wrote? Anything else,
    none included, is a person's since, and stays."""
    return current == expected


def persons_choice(place: PlaceState) -> int | None:
    """A person's choice at this place, as the keeper rule weighs it: their rating (1..5,
    or -1 for their reject), else STRONGEST_CHOICE for their pick label "accepted" and -1
    for "rejected"; None when nothing there is a person's."""
    rating = place.persons("rating")
    if rating is not None and rating not in NONE_VALUES["rating"]:  # a person's "no stars" chooses nothing
        return rating
    pick = place.persons("pick")
    if pick == PICK_ACCEPTED:
        return STRONGEST_CHOICE
    if pick == PICK_REJECTED:
        return REJECTED
    return None


def best_choice(choices: Iterable[int | None]) -> int | None:
    """Of one photo's places (its sidecars, its darktable duplicates), the strongest choice."""
    present = [c for c in choices if c is not None]
    return max(present) if present else None


def _shown(value: Any) -> str:
    return "none" if value is None else str(value)


def _noun(name: str) -> str:
    return {"rating": "rating", "pick": "pick label", "group": "group"}.get(name, name)


def _what(name: str) -> str:
    return {"rating": "rated", "pick": "pick label", "group": "grouped"}.get(name, name)
