"""The undo journal (store layer) and the one undo loop over the file targets: what we
wrote, what counts as ours, and undoing it carefully."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlite_utils
from PIL import Image

from aes_index.index.store import journal
from aes_index.formats.exif_rating import read_exif_rating, write_exif_rating
from aes_index.targets.protocol import Write
from aes_index import ownership
from aes_index.ownership import Action
from aes_index.index.store import Index
from aes_index.writing import apply as targets
from aes_index.targets.exif import ExifTarget
from aes_index.targets.sidecar import SidecarTarget, journal_entry
from aes_index.formats.xmp import AesFields, read_sidecar, write_sidecar

from conftest import FIXTURES

DARKTABLE_SIDECAR = FIXTURES / "darktable-xmp" / "evening-glow-folk-toto.jpg.xmp"
AES = AesFields(score=5.5, percentile=50.0, head_id="zero-shot", stars=3)


@pytest.fixture
def index(tmp_path):
    with Index(tmp_path / "index.db") as index:
        yield index


@pytest.fixture
def db(index):
    return index.db


def write_and_record(db, run_id, sidecar, **fields):
    outcome = write_sidecar(sidecar, **fields)
    journal.Journal(db).record(run_id, journal_entry(str(sidecar.with_suffix("")), outcome))
    return outcome


def record(db, run_id, target, place, old, new, image_path="/p/a"):
    return journal.Journal(db).record(run_id, Write(target=target, place=place, image_path=image_path, old=old, new=new))


def undo(db, run_id=None, dry_run=False):
    """`aes-index ratings undo`: the one undo loop over the file targets (the library
    is the folder the index lies in)."""
    path = db.conn.execute("PRAGMA database_list").fetchone()[2]
    with Index(path) as index:
        roots = (str(Path(path).parent),)
        files = {"xmp": SidecarTarget(roots=roots), "exif": ExifTarget(index=index, roots=roots)}
        actions = journal.Journal(db).plan_undo(run_id, journal.FILE_TARGETS)
        return {r.action.target_path.name: r for r in targets.undo(index, files, actions, dry_run)}


# --------------------------------------------------------------------------- table


def test_create_table_is_idempotent(tmp_path):
    database = sqlite_utils.Database(tmp_path / "index.db")
    for _ in range(3):
        journal.create_table(database)
    table = database[journal.TABLE]
    assert {
        "id",
        "run_id",
        "image_path",
        "target",
        "target_path",
        "old_rating",
        "new_rating",
        "created_file",
        "content_hash_after",
        "written_at",
        "undone_at",
        "field",
    } <= set(table.columns_dict)
    assert len(table.indexes) == 3  # by place, by run, by photo


def test_create_table_adds_columns_to_an_older_journal(tmp_path):
    database = sqlite_utils.Database(tmp_path / "index.db")
    database[journal.TABLE].create({"id": int, "run_id": int, "target": str}, pk="id")
    journal.create_table(database)
    assert {"prior_json", "field"} <= set(database[journal.TABLE].columns_dict)


def test_last_written_is_the_latest_write_not_undone(db):
    assert journal.Journal(db).last_written("xmp", "/p/a.xmp") is None
    for run, rating in ((1, 3), (2, 4)):
        record(db, run, "xmp", "/p/a.xmp", None, rating)
    record(db, 2, "exif", "/p/a.xmp", None, 1)
    assert journal.Journal(db).last_written("xmp", "/p/a.xmp") == 4
    assert journal.Journal(db).last_written("exif", "/p/a.xmp") == 1
    db[journal.TABLE].update(2, {"undone_at": "now"})
    assert journal.Journal(db).last_written("xmp", "/p/a.xmp") == 3
    assert journal.Journal(db).new_run_id() == 3


def test_unknown_target_is_refused(db):
    with pytest.raises(ValueError):
        record(db, 1, "lightroom", "a", None, 1)


def test_new_run_id_starts_at_one(db):
    assert journal.Journal(db).new_run_id() == 1
    assert journal.Journal(db).plan_undo() == []


# --------------------------------------------------------------------------- xmp undo


def test_undo_restores_a_modified_darktable_sidecar_exactly(db, tmp_path):
    sidecar = tmp_path / "IMG_1.RAF.xmp"
    shutil.copyfile(DARKTABLE_SIDECAR, sidecar)
    write_and_record(db, 1, sidecar, rating=4, aes=AES, tags=["4 stars"], tag_fields=["lr", "dc"])
    assert journal.Journal(db).last_written("xmp", sidecar) == 4

    results = undo(db)

    assert results[sidecar.name].status == "restored"
    assert sidecar.read_bytes() == DARKTABLE_SIDECAR.read_bytes()
    assert journal.Journal(db).last_written("xmp", sidecar) is None
    assert journal.Journal(db).plan_undo() == []  # nothing left to undo


def test_undo_deletes_a_sidecar_we_created_if_untouched_since(db, tmp_path):
    sidecar = tmp_path / "IMG_2.JPG.xmp"
    write_and_record(db, 1, sidecar, rating=5, aes=AES, tags=["5 stars"])
    assert undo(db)[sidecar.name].status == "deleted"
    assert not sidecar.exists()


def test_undo_keeps_a_created_sidecar_someone_added_to(db, tmp_path):
    sidecar = tmp_path / "IMG_3.JPG.xmp"
    write_and_record(db, 1, sidecar, rating=5, aes=AES, tags=["5 stars"])
    text = sidecar.read_text().replace(
        "<rdf:Description",
        '<rdf:Description xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"'
        ' photoshop:ColorMode="3"',
        1,
    )
    sidecar.write_text(text)  # digiKam added a field since

    result = undo(db)[sidecar.name]

    assert result.status == "restored"
    info = read_sidecar(sidecar)
    assert (info.rating, info.aes, info.tags) == (None, None, ())
    assert 'photoshop:ColorMode="3"' in sidecar.read_text()


def test_undo_leaves_a_rating_changed_by_hand(db, tmp_path):
    sidecar = tmp_path / "IMG_4.RAF.xmp"
    shutil.copyfile(DARKTABLE_SIDECAR, sidecar)
    write_and_record(db, 1, sidecar, rating=4, aes=AES, tags=["4 stars"])
    write_sidecar(sidecar, rating=2)  # the user re-rated it

    result = undo(db)[sidecar.name]

    assert result.status == "kept-manual" and "2" in result.detail
    info = read_sidecar(sidecar)
    assert info.rating == 2 and info.aes is None and info.tags == ()
    assert result.done and journal.Journal(db).plan_undo() == []


def test_undo_of_a_vanished_sidecar_is_reported(db, tmp_path):
    sidecar = tmp_path / "IMG_5.RAF.xmp"
    shutil.copyfile(DARKTABLE_SIDECAR, sidecar)
    write_and_record(db, 1, sidecar, rating=4)
    sidecar.unlink()
    assert undo(db)[sidecar.name].status == "missing"


def test_dry_run_changes_and_marks_nothing(db, tmp_path):
    sidecar = tmp_path / "IMG_6.JPG.xmp"
    write_and_record(db, 1, sidecar, rating=3)
    content = sidecar.read_bytes()
    assert undo(db, dry_run=True)[sidecar.name].status == "deleted"
    assert sidecar.read_bytes() == content
    assert len(journal.Journal(db).plan_undo()) == 1


def test_runs_are_undone_newest_first(db, tmp_path):
    sidecar = tmp_path / "IMG_7.RAF.xmp"
    shutil.copyfile(DARKTABLE_SIDECAR, sidecar)
    fields = ["lr", "dc"]  # the ones the sidecar has: then undo gives back the very bytes
    write_and_record(db, 1, sidecar, rating=3, aes=AES, tags=["3 stars"], tag_fields=fields)
    write_and_record(db, 2, sidecar, rating=4, aes=AES, tags=["4 stars"], tag_fields=fields)

    assert undo(db, run_id=1)[sidecar.name].status == "superseded"
    assert read_sidecar(sidecar).rating == 4

    assert undo(db)[sidecar.name].status == "restored"  # run 2
    info = read_sidecar(sidecar)
    assert (info.rating, info.tags) == (3, ("3 stars",))
    assert journal.Journal(db).last_written("xmp", sidecar) == 3

    assert undo(db)[sidecar.name].status == "restored"  # run 1
    assert sidecar.read_bytes() == DARKTABLE_SIDECAR.read_bytes()


def test_undo_of_a_refused_sidecar_fails_and_stays_pending(db, tmp_path):
    sidecar = tmp_path / "IMG_8.JPG.xmp"
    write_and_record(db, 1, sidecar, rating=3)
    sidecar.write_text("<broken")
    result = undo(db)[sidecar.name]
    assert result.status == "failed" and "\n" not in result.detail
    assert len(journal.Journal(db).plan_undo()) == 1


def test_ratings_undo_leaves_the_plugins_targets_alone(db):
    record(db, 1, "darktable", "/p/a.CR2#0", 1, 4, image_path="/p/a.CR2")
    assert undo(db) == {}  # `ratings undo` plans the file targets only
    assert len(journal.Journal(db).plan_undo()) == 1 and journal.Journal(db).plan_undo(targets=journal.FILE_TARGETS) == []


# --------------------------------------------------------------------------- exif undo


def test_exif_undo_restores_and_respects_manual_changes(db, tmp_path):
    first, second = tmp_path / "a.jpg", tmp_path / "b.jpg"
    for path in (first, second):
        Image.new("RGB", (8, 8)).save(path)
        outcome = write_exif_rating(path, 4)
        record(db, 1, "exif", str(path), outcome.prior, outcome.rating, image_path=str(path))
    write_exif_rating(second, 1)  # changed in another program since

    results = undo(db)

    assert results["a.jpg"].status == "restored" and read_exif_rating(first) is None
    assert results["b.jpg"].status == "kept-manual" and read_exif_rating(second) == 1


# --------------------------------------------------------------------------- the rule, end to end


def test_manual_rating_wins_against_the_next_run(db, tmp_path):
    sidecar = tmp_path / "IMG_9.RAF.xmp"
    shutil.copyfile(DARKTABLE_SIDECAR, sidecar)
    write_sidecar(sidecar, rating=0)  # an unrated photo

    def apply(run_id, wanted):
        current = read_sidecar(sidecar).rating
        place = ownership.state({"rating": current}, journal={"rating": journal.Journal(db).last_written("xmp", sidecar)})
        decision = ownership.may_set(place, "rating", wanted)
        if decision.write:
            write_and_record(db, run_id, sidecar, rating=wanted)
        return decision.action

    assert apply(1, 3) is Action.WRITE
    assert apply(2, 4) is Action.WRITE  # still ours
    write_sidecar(sidecar, rating=5)  # the photographer disagrees
    assert apply(3, 2) is Action.SKIP_PERSON
    assert read_sidecar(sidecar).rating == 5
