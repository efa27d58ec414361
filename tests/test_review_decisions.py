"""A person's decisions from the review page (features/review/decisions.py): pick, reject,
unmark and stars written at once as theirs, never changed by a later run of ours, undone
byte for byte, and never written over a place changed since the page showed it.

The library is test_culling_marks's, culled for real (a burst of four, burst_1 the sharp
keeper; bright.jpg with a real darktable sidecar; single.jpg with no sidecar). Sidecars are
checked as digiKam and darktable read them: with Exiv2 (test_xmp.exiv2_properties).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from aes_index.config import Settings
from aes_index.errors import ExitCode
from aes_index.features.review import decisions
from aes_index.features.review.decisions import ChangedSinceShown, DecisionRefused, NotADecision
from aes_index.formats.xmp import read_sidecar, write_sidecar
from aes_index.index.library import Library
from aes_index.targets.protocol import OutsideLibrary
from conftest import run_cli
from test_culling_marks import SHARP, culled  # noqa: F401 - the culled library fixture
from test_xmp import exiv2_properties

PICK, RATING = "Xmp.digiKam.PickLabel", "Xmp.xmp.Rating"


@pytest.fixture
def library(culled):
    with Library.open(Settings(db=str(culled["index"]))) as opened:
        yield opened


def photo(culled, name: str) -> str:
    return str(culled["root"] / name)


def xmp_of(culled, name: str) -> Path:
    return culled["root"] / f"{name}.xmp"


def exiv2_fields(culled, name: str) -> dict:
    """The sidecar's rating and pick label, and our markers, as Exiv2 reads them."""
    found = exiv2_properties(xmp_of(culled, name))
    return {key.rsplit(".", 1)[1]: value for key, (_, value) in found.items()
            if key in (PICK, RATING) or key.startswith("Xmp.aes.")}


def files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def cli(capsys, culled, *argv) -> str:
    code, out, err = run_cli(capsys, *argv, "--db", culled["index"])
    assert code == ExitCode.OK, err
    return out


# --------------------------------------------------------------------------- what each key writes


def test_pick_reject_unmark_and_stars_write_the_fields_photo_managers_read(culled, library):
    single = photo(culled, "single.jpg")
    assert not xmp_of(culled, "single.jpg").exists()
    state = decisions.current(library, single)
    assert (state.stars, state.rejected, state.picked, state.pick) == (None, False, False, None)

    decision = decisions.decide(library, single, "pick", seen=state.seen)
    assert exiv2_fields(culled, "single.jpg") == {"PickLabel": "3"}  # no aes:Pick: not ours
    assert decision.state.picked and decision.state.pick == "accepted" and decision.id is not None
    assert [p.pick_by for p in decision.state.places] == ["person"]
    assert decision.written == ({"target": "xmp", "place": str(xmp_of(culled, "single.jpg")), "fields": ["pick"]},)

    decision = decisions.decide(library, single, "reject", seen=decision.state.seen)
    assert exiv2_fields(culled, "single.jpg") == {"PickLabel": "1", "Rating": "-1"}  # no aes:Reject either
    assert decision.state.rejected and decision.state.stars is None and not decision.state.picked

    decision = decisions.decide(library, single, "stars", 4, seen=decision.state.seen)
    assert exiv2_fields(culled, "single.jpg") == {"Rating": "4"}  # stars take a reject back, pick label too
    assert (decision.state.stars, decision.state.rejected) == (4, False)

    decisions.decide(library, single, "reject")
    decision = decisions.decide(library, single, "unmark")
    assert exiv2_fields(culled, "single.jpg") == {}  # nothing of a decision is left
    assert (decision.state.stars, decision.state.rejected, decision.state.pick) == (None, False, None)

    decision = decisions.decide(library, single, "stars", 0)
    assert exiv2_fields(culled, "single.jpg") == {"Rating": "0"}
    assert decision.state.as_dict() == json.loads(json.dumps(decision.state.as_dict()))  # JSON for the page
    assert decision.as_dict()["state"]["places"][0]["rating_by"] == "person"  # a person's 0 stars are theirs


def test_a_decision_over_our_values_takes_our_markers_away(culled, library, capsys):
    cli(capsys, culled, "apply-ratings")
    cli(capsys, culled, "apply-culling")
    ours = exiv2_fields(culled, SHARP)
    assert ours["PickLabel"] == "3" and ours["Pick"] == "3" and ours["Stars"] == ours["Rating"], ours

    decisions.decide(library, photo(culled, SHARP), "pick")
    decisions.decide(library, photo(culled, SHARP), "stars", int(ours["Rating"]))
    now = exiv2_fields(culled, SHARP)
    # the same values, now the person's: no aes:Pick, no aes:Stars beside them (our score stays)
    assert now["PickLabel"] == "3" and now["Rating"] == ours["Rating"] and "Pick" not in now and "Stars" not in now
    assert "Score" in now
    state = decisions.current(library, photo(culled, SHARP))
    assert [(p.rating_by, p.pick_by) for p in state.places] == [("person", "person")]


def test_no_later_run_of_ours_changes_the_persons_decision(culled, library, capsys):
    blurred, sharp = "burst_2.jpg", SHARP
    cli(capsys, culled, "apply-ratings")
    cli(capsys, culled, "apply-culling", "--reject")
    decisions.decide(library, photo(culled, blurred), "pick")  # a blurred frame: the person's keeper
    decisions.decide(library, photo(culled, sharp), "stars", 0)  # the sharp one: no stars, by the person
    decisions.decide(library, photo(culled, "single.jpg"), "reject")
    decided = {name: xmp_of(culled, name).read_bytes() for name in (blurred, sharp, "single.jpg")}

    cli(capsys, culled, "cull")
    cli(capsys, culled, "apply-ratings")
    cli(capsys, culled, "apply-culling", "--reject")
    cli(capsys, culled, "apply-culling")
    for name, data in decided.items():
        fields = exiv2_fields(culled, name)
        assert read_sidecar(xmp_of(culled, name)).rating == read_sidecar_from(data).rating, name
        assert fields.get("PickLabel") == {blurred: "3", sharp: None, "single.jpg": "1"}[name], (name, fields)
        assert "Pick" not in fields and "Reject" not in fields and "Stars" not in fields, (name, fields)
    assert exiv2_fields(culled, sharp)["Rating"] == "0" and exiv2_fields(culled, "single.jpg")["Rating"] == "-1"

    (group,) = json.loads(cli(capsys, culled, "groups", "--json"))["groups"]
    assert group["chosen_by"] == "you" and group["reason"] == "your pick (5 stars)", group
    assert Path(group["members"][0]["path"]).name == blurred, group


def read_sidecar_from(data: bytes):
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "x.xmp"
        path.write_bytes(data)
        return read_sidecar(path)


# --------------------------------------------------------------------------- undo


def test_undo_gives_back_every_byte_of_the_sidecars(culled, library, capsys):
    cli(capsys, culled, "apply-ratings")  # sidecars of ours, and bright.jpg's darktable sidecar with our stars in it
    before = files(culled["root"])
    ids = [
        decisions.decide(library, photo(culled, "bright.jpg"), "reject").id,
        decisions.decide(library, photo(culled, "bright.jpg"), "stars", 5).id,
        decisions.decide(library, photo(culled, SHARP), "pick").id,
        decisions.decide(library, photo(culled, "burst_0.jpg"), "unmark").id,  # nothing to unmark: nothing written
    ]
    assert ids[3] is None and files(culled["root"]) != before
    for decision_id in reversed(ids[:3]):  # Ctrl-Z, Ctrl-Z, Ctrl-Z
        undone = decisions.undo(library, decision_id)
        assert undone.complete, undone.as_dict()
    assert files(culled["root"]) == before

    single = photo(culled, "single.jpg")
    os.remove(xmp_of(culled, "single.jpg"))  # no sidecar: the decision creates one, undo removes it
    undone = decisions.undo(library, decisions.decide(library, single, "stars", 3).id)
    assert not xmp_of(culled, "single.jpg").exists() and undone.states[0].stars is None
    assert undone.as_dict()["results"][0]["status"] == "deleted"


def test_ratings_undo_undoes_a_decision_too(culled, library, capsys):
    shutil.copyfile(xmp_of(culled, "bright.jpg"), culled["root"] / "keep.xmp")
    before = xmp_of(culled, "bright.jpg").read_bytes()
    decisions.decide(library, photo(culled, "bright.jpg"), "pick")
    assert xmp_of(culled, "bright.jpg").read_bytes() != before
    cli(capsys, culled, "ratings", "undo")
    assert xmp_of(culled, "bright.jpg").read_bytes() == before


def test_undo_refuses_a_run_that_is_no_decision(culled, library, capsys):
    report = json.loads(cli(capsys, culled, "apply-ratings", "--json"))
    with pytest.raises(NotADecision):
        decisions.undo(library, report["run_id"])


# --------------------------------------------------------------------------- refusals


def test_a_place_changed_since_it_was_shown_is_not_overwritten(culled, library):
    bright = photo(culled, "bright.jpg")
    shown = decisions.current(library, bright)
    write_sidecar(xmp_of(culled, "bright.jpg"), rating=2)  # someone else, in darktable, since
    changed = xmp_of(culled, "bright.jpg").read_bytes()
    with pytest.raises(ChangedSinceShown) as raised:
        decisions.decide(library, bright, "pick", seen=shown.seen)
    assert xmp_of(culled, "bright.jpg").read_bytes() == changed
    assert raised.value.state.stars == 2 and raised.value.state.seen != shown.seen
    assert raised.value.exit_code == ExitCode.FILE_ERRORS
    decisions.decide(library, bright, "pick", seen=raised.value.state.seen)  # shown again: written
    assert read_sidecar(xmp_of(culled, "bright.jpg")).pick == 3


def test_a_write_protected_sidecar_is_refused(culled, library):
    sidecar = xmp_of(culled, "bright.jpg")
    before = sidecar.read_bytes()
    sidecar.chmod(0o444)
    try:
        with pytest.raises(DecisionRefused) as raised:
            decisions.decide(library, photo(culled, "bright.jpg"), "reject")
    finally:
        sidecar.chmod(0o644)
    assert sidecar.read_bytes() == before and "write-protected" in str(raised.value)
    assert raised.value.written == [] and raised.value.exit_code == ExitCode.FILE_ERRORS
    assert decisions.current(library, photo(culled, "bright.jpg")).rejected is False


def test_a_photo_outside_the_library_or_not_indexed_and_a_wrong_key_are_refused(culled, library, tmp_path):
    outside = tmp_path / "elsewhere.jpg"
    shutil.copyfile(photo(culled, "single.jpg"), outside)
    with pytest.raises(OutsideLibrary):
        decisions.decide(library, str(outside), "pick")
    assert not (tmp_path / "elsewhere.jpg.xmp").exists()
    with pytest.raises(OutsideLibrary):
        decisions.current(library, str(culled["root"] / ".." / "elsewhere.jpg"))
    shutil.copyfile(outside, culled["root"] / "new.jpg")
    with pytest.raises(NotADecision):
        decisions.decide(library, photo(culled, "new.jpg"), "pick")
    for action, value in (("keep", None), ("stars", 6), ("stars", -1), ("stars", None)):
        with pytest.raises(NotADecision):
            decisions.decide(library, photo(culled, "single.jpg"), action, value)
    assert not xmp_of(culled, "new.jpg").exists() and not xmp_of(culled, "single.jpg").exists()


# --------------------------------------------------------------------------- a kill between journal and write

KILL_POINTS = ("before-journal-record", "before-file-write", "after-file-write", "before-journal-done")
DECIDE_AND_DIE = """
import sys, kill_helper
kill_helper.install(sys.argv[1], 1, sys.argv[2])
from aes_index.config import Settings
from aes_index.features.review import decisions
from aes_index.index.library import Library
with Library.open(Settings(db=sys.argv[3])) as library:
    decisions.decide(library, sys.argv[4], "reject")
"""


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_decision_killed_at_any_point_is_settled_and_undone_to_the_byte(culled, point, capsys, tmp_path):
    import subprocess
    import sys

    from test_kill_points import HELPER

    before = files(culled["root"])
    bright = photo(culled, "bright.jpg")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HELPER.parent), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run(
        [sys.executable, "-c", DECIDE_AND_DIE, point, str(tmp_path / "counts.json"), str(culled["index"]), bright],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]

    with Library.open(Settings(db=str(culled["index"]))) as library:
        decision = decisions.decide(library, bright, "reject")  # the next key press settles what the kill left
        assert decision.state.rejected and exiv2_fields(culled, "bright.jpg")["Rating"] == "-1"
        assert library.index.journal.pending("xmp") == []
    for _ in range(4):  # `ratings undo` until nothing is left: every byte back
        code, out, err = run_cli(capsys, "ratings", "undo", "--db", culled["index"], "--json")
        assert code == ExitCode.OK, err
        if not json.loads(out):
            break
    assert files(culled["root"]) == before


# --------------------------------------------------------------------------- digiKam's database


from test_culling_marks import digikam_cull, in_digikam, table_rows, tags_in  # noqa: E402,F401 - fixtures and readers
from test_digikam import backups, create_digikam_db, dbconfig_xml, digikam_process, digikam_statements  # noqa: E402,F401


def digikam_rating(db: Path, name: str) -> int | None:
    import sqlite3

    with sqlite3.connect(db) as conn:
        (rating,) = conn.execute(
            "SELECT ii.rating FROM ImageInformation ii JOIN Images i ON i.id = ii.imageid WHERE i.name = ?", [name]
        ).fetchone()
    return rating


def digikam_run(capsys, library: dict, *argv) -> dict:
    code, out, err = run_cli(capsys, "digikam", *argv, "--db", library["db"], "--index", library["index"], "--json")
    assert code == ExitCode.OK, err
    return json.loads(out)


def test_a_library_culled_into_digikam_gets_the_decision_there_too(in_digikam, library, capsys):
    digikam_cull(capsys, in_digikam)  # the library uses this digiKam database now
    culled_rows, backups_before = table_rows(in_digikam["db"]), len(backups(in_digikam["db"]))
    blurred = photo(in_digikam, "burst_2.jpg")
    digikam_run(capsys, in_digikam, "sync")  # our stars first: the person's must differ from them
    ours = digikam_rating(in_digikam["db"], "burst_2.jpg")
    stars = 4 if ours != 4 else 3  # (a person's rating speaks before their pick: 2 stars or more keep it a choice)
    backups_before += 1

    first = decisions.decide(library, blurred, "pick")
    assert "Pick Label Accepted" in " ".join(tags_in(in_digikam["db"])["burst_2.jpg"])
    assert {w["target"] for w in first.written} == {"xmp", "digikam"}
    assert [(p.target, p.pick, p.pick_by) for p in first.state.places] == [("xmp", "accepted", "person"), ("digikam", "accepted", "person")]
    second = decisions.decide(library, blurred, "stars", stars, seen=first.state.seen)
    assert digikam_rating(in_digikam["db"], "burst_2.jpg") == stars and read_sidecar(xmp_of(in_digikam, "burst_2.jpg")).rating == stars
    assert len(backups(in_digikam["db"])) == backups_before + 1  # one backup for the page's decisions, not one a key

    culled = digikam_cull(capsys, in_digikam)  # a later cull: the person's pick is the keeper, and stays theirs
    assert "Pick Label Accepted" in " ".join(tags_in(in_digikam["db"])["burst_2.jpg"]), culled
    assert "Pick Label Accepted" not in " ".join(tags_in(in_digikam["db"]).get(SHARP, ())), culled
    synced = digikam_run(capsys, in_digikam, "sync")  # a later sync: the person's stars stay
    assert digikam_rating(in_digikam["db"], "burst_2.jpg") == stars
    assert any("by you" in item["reason"] for item in synced["manual"]), synced

    with pytest.raises(NotADecision):  # Ctrl-Z undoes decisions only; a cull has `digikam undo`
        decisions.undo(library, culled["run_id"])
    for _ in range(2):  # the sync, then the cull
        digikam_run(capsys, in_digikam, "undo")
    for decision in (second, first):
        assert decisions.undo(library, decision.id).complete
    digikam_run(capsys, in_digikam, "undo")  # the first sync
    assert table_rows(in_digikam["db"]) == culled_rows


def test_while_digikam_runs_the_decision_goes_into_the_sidecar_only(in_digikam, library, capsys, digikam_process):
    digikam_cull(capsys, in_digikam)
    rows = table_rows(in_digikam["db"])
    process = digikam_process(Path(in_digikam["db"]))
    decision = decisions.decide(library, photo(in_digikam, "single.jpg"), "reject")
    assert [w["target"] for w in decision.written] == ["xmp"] and exiv2_fields(in_digikam, "single.jpg")["Rating"] == "-1"
    (unreachable,) = decision.state.unreachable
    assert unreachable["target"] == "digikam" and str(process.pid) in unreachable["reason"]
    assert table_rows(in_digikam["db"]) == rows


# --------------------------------------------------------------------------- darktable


from test_darktable import ask, dt_library, images, policy_stars  # noqa: E402,F401 - the plugin's protocol, as the plugin speaks it


def test_darktables_stars_read_from_a_decision_stay_the_persons(dt_library, tmp_path, capsys):
    """darktable takes a decision from the sidecar (on import, or when it is told the sidecar
    changed); its "rate" then leaves those stars alone, even 1 star where darktable's import
    default counts as none, and 0 stars."""
    paths, options = dt_library["paths"], dt_library["options"]
    code, _, err = run_cli(capsys, "rebuild", str(Path(paths[0]).parent), *options)
    assert code == ExitCode.OK, err
    with Library.open(Settings(db=str(dt_library["db"]))) as library:
        decisions.decide(library, paths[0], "stars", 1)
        decisions.decide(library, paths[1], "stars", 0)
    # darktable read the sidecars: 1 and 0 stars; the others keep darktable's import default 1
    answer = ask(capsys, tmp_path, "rate", {"images": images(paths, [1, 0] + [1] * 8)}, *options, "--treat-as-unrated", "1")
    by_ref, policy = {item["ref"]: item for item in answer["images"]}, policy_stars(dt_library["db"], answer["head"])
    for ref, decided in ((1, 1), (2, 0)):  # (the policy never gives 0 stars; where it gives 1, 1 is what it wants)
        assert "rating" not in by_ref[ref], by_ref[ref]
        assert "by you" in by_ref[ref]["reason"] or policy[paths[ref - 1]] == decided, by_ref[ref]
    assert sum("rating" in by_ref[ref] for ref in range(3, 11)) > 0  # our stars where nobody decided
