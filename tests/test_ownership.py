"""Whose value is it: the one rule (aes_index.ownership), table by table.

Every case the features' own tests rely on is a row here: stars (apply-ratings, the
watcher, digiKam, darktable), culling's pick labels, rejects and groups, a person's choice
that wins the keeper (sidecars, darktable, digiKam, `groups`, the gallery), undo's
"still ours?", and the markers a write of ours leaves in the place itself.
"""

from __future__ import annotations

import pytest

from aes_index import ownership
from aes_index.index.store.journal import Journal
from aes_index.targets.protocol import Write
from aes_index.ownership import Action, Owner
from aes_index.index.store import Index
from aes_index.targets.protocol import CullState, Place, Reading

PICK_NONE, PICK_REJECTED, PICK_PENDING, PICK_ACCEPTED = 0, 1, 2, 3


# --------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    "value, ours, name, unrated, expected",
    [
        (None, (), "rating", (), Owner.NOBODY),  # no rating at all
        (0, (), "rating", (), Owner.NOBODY),  # 0 = unrated
        (1, (), "rating", (1,), Owner.NOBODY),  # darktable's import star, when told to count it as none
        (1, (), "rating", (), Owner.PERSON),  # ... and a person's 1 star otherwise
        (3, (3,), "rating", (), Owner.OURS),  # what we wrote last, still there
        (2, (3,), "rating", (), Owner.PERSON),  # changed by hand since we wrote 3
        (-1, (), "rating", (), Owner.PERSON),  # a person's reject
        (-1, (-1,), "rating", (), Owner.OURS),  # our reject (journal, or aes:Reject)
        (-1, (), "rating", (-1,), Owner.NOBODY),  # unrated may name a reject too
        (None, (), "pick", (), Owner.NOBODY),
        (PICK_NONE, (), "pick", (), Owner.NOBODY),  # digiKam's explicit "no pick"
        (PICK_ACCEPTED, (PICK_ACCEPTED,), "pick", (), Owner.OURS),
        (PICK_ACCEPTED, (), "pick", (), Owner.PERSON),
        (PICK_PENDING, (PICK_ACCEPTED,), "pick", (), Owner.PERSON),  # the person downgraded our pick
        (1, (), "pick", (1,), Owner.PERSON),  # treat-as-unrated is about ratings only
        (None, (), "group", (), Owner.NOBODY),
        (150, (150,), "group", (), Owner.OURS),
        (150, (), "group", (), Owner.PERSON),  # a group a person made
    ],
)
def test_owner(value, ours, name, unrated, expected):
    assert ownership.owner(value, ours, name, unrated) is expected


def rating(current, journal=None, marker=None, unrated=()):
    return ownership.state({"rating": current}, journal={"rating": journal}, markers={"rating": marker}, unrated=unrated)


@pytest.mark.parametrize(
    "current, journal, marker, wanted, overwrite, unrated, action",
    [
        (None, None, None, 4, False, (), Action.WRITE),  # no rating at all
        (0, None, None, 4, False, (), Action.WRITE),  # 0 = unrated
        (0, 3, None, 4, False, (), Action.WRITE),
        (3, 3, None, 4, False, (), Action.WRITE),  # still holds what we wrote last
        (-1, -1, None, 2, False, (), Action.WRITE),  # our own reject
        (2, 3, None, 4, False, (), Action.SKIP_PERSON),  # changed by hand since we wrote 3
        (2, None, None, 4, False, (), Action.SKIP_PERSON),  # rated by hand, we never wrote
        (-1, None, None, 4, False, (), Action.SKIP_PERSON),  # a person's reject
        (2, 3, None, 4, True, (), Action.WRITE),  # --overwrite-manual
        (2, None, None, 4, True, (), Action.WRITE),
        (4, None, None, 4, False, (), Action.UNCHANGED),  # already right, even if manual
        (4, 4, None, 4, False, (), Action.UNCHANGED),
        (None, None, None, 0, False, (), Action.UNCHANGED),  # no score: nothing to write
        (3, 3, None, 0, True, (), Action.UNCHANGED),
        (1, None, None, 4, False, (1,), Action.WRITE),  # --treat-as-unrated 1: darktable's import star
        (1, None, None, 1, False, (1,), Action.UNCHANGED),  # ... but 1 -> 1 is no write
        (1, None, None, 4, False, (), Action.SKIP_PERSON),  # without it, a person's 1 star
        (3, None, 3, 4, False, (), Action.WRITE),  # aes:Stars == xmp:Rating: ours, wherever the photo moved
        (3, 2, 3, 4, False, (), Action.WRITE),  # the marker counts beside another index's journal
        (3, None, 2, 4, False, (), Action.SKIP_PERSON),  # a marker of another value is no claim on this one
        (2, None, None, -1, False, (), Action.SKIP_PERSON),  # a reject never goes over a person's stars
        (None, None, None, -1, False, (), Action.WRITE),
        (1, None, None, -1, False, (1,), Action.WRITE),  # ... nor over none
    ],
)
def test_may_set_a_rating(current, journal, marker, wanted, overwrite, unrated, action):
    decision = ownership.may_set(rating(current, journal, marker, unrated), "rating", wanted, overwrite)
    assert decision.action is action
    assert decision.write is (action is Action.WRITE)
    assert decision.reason and "\n" not in decision.reason


def test_the_reasons_name_the_persons_value_and_ours():
    assert "2" in ownership.may_set(rating(2, 3), "rating", 4).reason and "3" in ownership.may_set(rating(2, 3), "rating", 4).reason
    assert ownership.may_set(rating(2), "rating", 4).action.value == "skip-manual"
    assert "never wrote" in ownership.may_set(rating(2), "rating", 4).reason


@pytest.mark.parametrize(
    "current, ours, wanted, action",
    [
        (None, None, PICK_ACCEPTED, Action.WRITE),
        (PICK_NONE, None, PICK_ACCEPTED, Action.WRITE),
        (PICK_ACCEPTED, PICK_ACCEPTED, None, Action.WRITE),  # our keeper is no keeper now: ours goes
        (PICK_PENDING, PICK_ACCEPTED, None, Action.SKIP_PERSON),  # the person downgraded it: theirs stays
        (PICK_REJECTED, None, PICK_ACCEPTED, Action.SKIP_PERSON),  # a person's reject
        (PICK_ACCEPTED, None, PICK_ACCEPTED, Action.UNCHANGED),
    ],
)
def test_may_set_a_pick_label(current, ours, wanted, action):
    place = ownership.state({"pick": current}, journal={"pick": ours})
    assert ownership.may_set(place, "pick", wanted).action is action


@pytest.mark.parametrize(
    "current, ours, takes_back",
    [(-1, -1, True), (-1, None, False), (3, 3, False), (None, None, False)],
)
def test_only_a_reject_of_ours_is_taken_back(current, ours, takes_back):
    place = rating(current, journal=ours)
    assert (place.value("rating") == -1 and ownership.may_take_back(place, "rating")) is takes_back


@pytest.mark.parametrize(
    "current, expected, ours",
    [(3, 3, True), (4, 3, False), (None, 3, False), (None, None, True), (-1, -1, True)],
)
def test_undo_puts_back_only_what_still_holds_ours(current, expected, ours):
    assert ownership.still_ours(current, expected) is ours


# --------------------------------------------------------------------------- a person's choice


@pytest.mark.parametrize(
    "values, journal, markers, unrated, choice",
    [
        ({"rating": 5}, {}, {}, (), 5),  # five stars of a person's: the keeper
        ({"rating": 2}, {}, {}, (), 2),
        ({"rating": 1}, {}, {}, (1,), None),  # darktable's import star is no choice
        ({"rating": 4}, {"rating": 4}, {}, (), None),  # our stars are no person's choice
        ({"rating": 4}, {}, {"rating": 4}, (), None),  # ... nor those aes:Stars marks as ours
        ({"rating": -1}, {}, {}, (), -1),  # a person's reject: never the keeper
        ({"rating": -1}, {}, {"rating": -1}, (), None),  # aes:Reject: our reject
        ({"pick": PICK_ACCEPTED}, {}, {}, (), 5),  # digiKam's accepted: the strongest choice
        ({"pick": PICK_ACCEPTED}, {}, {"pick": PICK_ACCEPTED}, (), None),  # aes:Pick: ours
        ({"pick": PICK_ACCEPTED}, {"pick": PICK_ACCEPTED}, {}, (), None),  # ours by the journal
        ({"pick": PICK_REJECTED}, {}, {}, (), -1),
        ({"pick": PICK_PENDING}, {}, {}, (), None),  # "pending" decides nothing
        ({"rating": 3, "pick": PICK_ACCEPTED}, {}, {}, (), 3),  # the rating speaks first
        ({"rating": 3, "pick": PICK_ACCEPTED}, {"rating": 3}, {}, (), 5),  # ours: then the pick
        ({}, {}, {}, (), None),
    ],
)
def test_persons_choice(values, journal, markers, unrated, choice):
    place = ownership.state(values, journal=journal, markers=markers, unrated=unrated)
    assert ownership.persons_choice(place) == choice


def test_a_photo_with_several_places_counts_its_strongest_choice():
    assert ownership.best_choice([None, 2, 5, -1]) == 5
    assert ownership.best_choice([None, None]) is None


# --------------------------------------------------------------------------- reading a place's state


def test_read_state_joins_the_journal_and_the_places_markers(tmp_path):
    with Index(tmp_path / "index.db") as index:
        log: Journal = index.journal
        run = index.runs.start("apply-ratings")
        log.record(run, Write("xmp", "/p/a.jpg.xmp", "/p/a.jpg", old=1, new=4))
        log.record(run, Write("darktable", "/p/b.jpg#0", "/p/b.jpg", old=None, new=3))
        log.record(run, Write("xmp", "/p/a.jpg.xmp", "/p/a.jpg", old=None, new=3, field="pick"))

        def read(place, image, value, pick=None, ours=None, marked_pick=None, marked_reject=False):
            reading = Reading(Place(place, image), value, None, ours=ours,
                              cull=CullState(pick=pick, marked_pick=marked_pick, marked_reject=marked_reject))
            return ownership.read_state(log, "xmp", reading, unrated=(1,))

        a = read("/p/a.jpg.xmp", "/p/a.jpg", 4, pick=3)
        assert a.owner("rating") is Owner.OURS and a.owner("pick") is Owner.OURS and a.before["rating"] == 1
        # the stars we set for b.jpg through darktable, which darktable copied into its sidecar
        assert read("/p/b.jpg.xmp", "/p/b.jpg", 3).owner("rating") is Owner.OURS
        assert read("/p/c.jpg.xmp", "/p/c.jpg", 1).owner("rating") is Owner.NOBODY  # treat-as-unrated
        assert read("/p/c.jpg.xmp", "/p/c.jpg", 2).owner("rating") is Owner.PERSON
        assert read("/p/c.jpg.xmp", "/p/c.jpg", -1, marked_reject=True).owner("rating") is Owner.OURS
        assert read("/p/c.jpg.xmp", "/p/c.jpg", 5, ours=5).owner("rating") is Owner.OURS
        assert read("/p/c.jpg.xmp", "/p/c.jpg", None, pick=3, marked_pick=3).owner("pick") is Owner.OURS


# --------------------------------------------------------------------------- a person's decisions written through us


@pytest.mark.parametrize(
    "value, ours, name, unrated, decided, expected",
    [
        (3, (3,), "rating", (), (3,), Owner.PERSON),  # the person gave the stars we had given: theirs now
        (0, (), "rating", (), (0,), Owner.PERSON),  # they cleared the stars: no run fills them
        (None, (), "rating", (), (0,), Owner.PERSON),  # ... whichever way the place spells "none"
        (1, (), "rating", (1,), (1,), Owner.PERSON),  # their 1 star is no import default
        (4, (4,), "rating", (), (3,), Owner.OURS),  # not what they decided: the rule as ever
        (2, (), "rating", (), (3,), Owner.PERSON),
        (None, (), "pick", (), (None,), Owner.PERSON),  # they unmarked it: no keeper's pick of ours comes back
        (PICK_NONE, (), "pick", (), (None,), Owner.PERSON),
        (PICK_ACCEPTED, (PICK_ACCEPTED,), "pick", (), (PICK_ACCEPTED,), Owner.PERSON),
        (None, (), "pick", (), (), Owner.NOBODY),
    ],
)
def test_owner_of_a_value_a_person_decided(value, ours, name, unrated, decided, expected):
    assert ownership.owner(value, ours, name, unrated, decided) is expected


def test_a_review_run_writes_the_persons_values_not_ours(tmp_path):
    with Index(tmp_path / "index.db") as index:
        log: Journal = index.journal
        ours, review = index.runs.start("apply-ratings"), index.runs.start(ownership.PERSONS_COMMANDS[0])
        log.record(ours, Write("xmp", "/p/a.jpg.xmp", "/p/a.jpg", old=None, new=3))
        log.record(ours, Write("xmp", "/p/a.jpg.xmp", "/p/a.jpg", old=None, new=3, field="pick"))
        log.record(ours, Write("darktable", "/p/a.jpg#0", "/p/a.jpg", old=None, new=3))

        def read(place, value, pick=None):
            reading = Reading(Place(place, "/p/a.jpg"), value, None, cull=CullState(pick=pick))
            return ownership.read_state(log, place.endswith(".xmp") and "xmp" or "darktable", reading)

        assert read("/p/a.jpg.xmp", 3, PICK_ACCEPTED).owner("rating") is Owner.OURS
        # the person pressed 3 on the page (the value stays, our marker goes: a row all the same) and U
        decided = [log.record(review, Write("xmp", "/p/a.jpg.xmp", "/p/a.jpg", old=3, new=3)),
                   log.record(review, Write("xmp", "/p/a.jpg.xmp", "/p/a.jpg", old=PICK_ACCEPTED, new=None, field="pick"))]
        a = read("/p/a.jpg.xmp", 3)
        assert a.owner("rating") is Owner.PERSON and a.owner("pick") is Owner.PERSON
        assert log.last_written("xmp", "/p/a.jpg.xmp") is None and log.persons_value("xmp", "/p/a.jpg.xmp") == (3,)
        decision = ownership.may_set(a, "rating", 5)
        assert decision.action is Action.SKIP_PERSON and "by you" in decision.reason
        assert ownership.persons_choice(a) == 3
        # darktable copied the stars from the sidecar: the decision is the photo's, in every place
        assert read("/p/a.jpg#0", 3).owner("rating") is Owner.PERSON
        assert log.open_places() == [("/p/a.jpg", "darktable", 3)]  # no stars of ours left in the sidecar

        log.mark_undone(decided, "restored")  # Ctrl-Z: ours again
        a = read("/p/a.jpg.xmp", 3, PICK_ACCEPTED)
        assert a.owner("rating") is Owner.OURS and a.owner("pick") is Owner.OURS


def test_a_persons_cleared_stars_leave_their_pick_to_speak():
    place = ownership.state({"rating": 0, "pick": PICK_ACCEPTED}, persons={"rating": 0, "pick": PICK_ACCEPTED})
    assert ownership.persons_choice(place) == ownership.STRONGEST_CHOICE
