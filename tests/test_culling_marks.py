"""Culling's decisions in the photo managers: XMP sidecars (`apply-culling`) and digiKam's
database (`digikam cull`), under the rules of star ratings: a person's pick label, rating
or group wins, rejects only when asked, everything undoable.

The library is culled for real: JPEGs with EXIF capture times 0.25 s apart from one camera
(one sharp frame, three defocused), an overexposed photo and an unrelated one, indexed
with `aes-index rebuild` (tiny model) and grouped with `aes-index cull`. digiKam's
database is made from digiKam's own schema (test_digikam.py's dbconfig.xml fixtures).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import piexif
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from aes_index.features.culling.cull import load_groups
from aes_index.errors import ExitCode
from aes_index.index.store import Index
from aes_index.formats.xmp import CullMarks, read_sidecar, write_sidecar
from aes_index.targets.sidecar import is_star_tag
from conftest import FIXTURES, PHOTO, run_cli
from test_digikam import create_digikam_db, dbconfig_xml, digikam_statements  # noqa: F401 - fixtures
from test_xmp import exiv2_properties
import index_rows

DARKTABLE_SIDECAR = FIXTURES / "darktable-xmp" / "evening-glow-folk-toto.jpg.xmp"  # a real darktable 4.x sidecar: tags Folk, toto
BURST = ("burst_0.jpg", "burst_1.jpg", "burst_2.jpg", "burst_3.jpg")
SHARP = "burst_1.jpg"  # the keeper by our rule: the one frame in focus
BLURRED = ("burst_0.jpg", "burst_2.jpg", "burst_3.jpg")


# --------------------------------------------------------------------------- a culled library


def _exif(taken: datetime) -> bytes:
    return piexif.dump({
        "0th": {piexif.ImageIFD.Make: b"FUJIFILM", piexif.ImageIFD.Model: b"X-T4"},
        "Exif": {
            piexif.ExifIFD.DateTimeOriginal: taken.strftime("%Y:%m:%d %H:%M:%S").encode(),
            piexif.ExifIFD.SubSecTimeOriginal: f"{taken.microsecond // 10_000:02d}".encode(),
            piexif.ExifIFD.BodySerialNumber: b"4711",
        },
    })


def _frame(box, blur: float = 0.0, brightness: float = 1.0) -> Image.Image:
    with Image.open(PHOTO) as source:
        image = source.crop(box).resize((900, 600), Image.Resampling.LANCZOS)
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    return ImageEnhance.Brightness(image).enhance(brightness) if brightness != 1.0 else image


def make_library(root: Path) -> None:
    """A burst (frames panned 4 px apart, 0.25 s apart, only burst_1 in focus), an
    overexposed photo with the user's darktable sidecar (tags Folk and toto, darktable's
    import rating 1), an unrelated photo."""
    root.mkdir(parents=True)
    start = datetime(2024, 6, 1, 10, 0, 0)
    for i, blur in enumerate((4.0, 0.0, 4.0, 6.0)):
        frame = _frame((100 + 4 * i, 100, 1300 + 4 * i, 900), blur)
        frame.save(root / BURST[i], quality=92, exif=_exif(start + timedelta(milliseconds=250 * i)))
    _frame((600, 300, 1500, 900), brightness=3.0).save(root / "bright.jpg", quality=92, exif=_exif(start + timedelta(hours=1)))
    _frame((0, 0, 700, 500)).save(root / "single.jpg", quality=92, exif=_exif(start + timedelta(hours=2)))
    shutil.copyfile(DARKTABLE_SIDECAR, root / "bright.jpg.xmp")  # copyfile: a writable copy, whatever the checkout's modes


def cull(capsys, index: Path) -> None:
    code, _, err = run_cli(capsys, "cull", "--db", index)
    assert code == ExitCode.OK, err


def index_and_cull(root: Path, index: Path, model_args, capsys):
    """`rebuild` and `cull` through the CLI; the library's one group."""
    code, _, err = run_cli(capsys, "rebuild", root, *model_args, "--workers", "0", "--db", index)
    assert code == ExitCode.OK, err
    cull(capsys, index)
    with Index(index) as opened:
        (group,) = load_groups(opened)
    return group


@pytest.fixture
def culled(tmp_path, model_args, capsys) -> dict:
    root = tmp_path / "Photos"
    make_library(root)
    index = tmp_path / "index.db"
    group = index_and_cull(root, index, model_args, capsys)  # the burst, as the lead's grouping made it
    assert sorted(Path(m.path).name for m in group.members) == sorted(BURST)
    assert Path(group.keeper.path).name == SHARP, group
    return {"root": root, "index": index}


def apply_culling(capsys, library: dict, *extra) -> tuple[int, dict]:
    code, out, err = run_cli(capsys, "apply-culling", "--db", library["index"], "--json", *extra)
    assert code == ExitCode.OK, err
    return code, json.loads(out)


def sidecar(library: dict, name: str):
    return read_sidecar(library["root"] / f"{name}.xmp")


def snapshot_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


# --------------------------------------------------------------------------- XMP sidecars


def test_the_keeper_gets_digikams_accepted_pick_label_and_failures_our_tags(culled, capsys):
    _, report = apply_culling(capsys, culled)
    assert report["keepers"] == 1 and report["grouped"] == 3 and report["flagged"] == 4, report

    # as digiKam reads it: Exiv2 (its metadata engine) sees Xmp.digiKam.PickLabel "3", Accepted
    keeper = exiv2_properties(culled["root"] / f"{SHARP}.xmp")
    assert keeper["Xmp.digiKam.PickLabel"][1] == "3"
    assert keeper["Xmp.lr.hierarchicalSubject"][1] == ("Aesthetic|keeper",)
    assert "Xmp.xmp.Rating" not in keeper  # culling writes no stars
    for name in BLURRED:
        info = sidecar(culled, name)
        assert info.tags == ("blurry",) and info.pick is None, (name, info)
        assert info.rating != -1  # no reject without --reject
    assert sidecar(culled, "bright.jpg").tags == ("overexposed",)
    assert not (culled["root"] / "single.jpg.xmp").exists()  # nothing to say: no sidecar made

    # the darktable sidecar keeps the user's tags and rating beside ours
    darktable = exiv2_properties(culled["root"] / "bright.jpg.xmp")
    assert darktable["Xmp.lr.hierarchicalSubject"][1] == ("Folk", "toto", "Aesthetic|overexposed")
    assert darktable["Xmp.xmp.Rating"][1] == "1"


def test_rejects_only_with_the_flag_and_never_the_keeper(culled, capsys):
    _, report = apply_culling(capsys, culled, "--reject", "--treat-as-unrated", "1")
    for name in BLURRED:
        info = sidecar(culled, name)
        assert (info.rating, info.pick) == (-1, 1), (name, info)  # darktable's reject; digiKam's Rejected
        assert info.our_reject and info.our_pick == 1  # and our markers say they are ours
    keeper = sidecar(culled, SHARP)
    assert keeper.pick == 3 and keeper.rating is None
    # the overexposed photo is alone, the only frame of its scene: flagged, never rejected
    bright = sidecar(culled, "bright.jpg")
    assert bright.tags == ("overexposed",) and (bright.rating, bright.pick) == (1, None) and not bright.our_reject
    assert report["written"] == {"pick": 4, "rating": 3, "tags": 5}


def test_a_rating_a_person_set_is_never_overridden_by_a_reject(culled, capsys):
    write_sidecar(culled["root"] / "burst_2.jpg.xmp", rating=1)  # a person's one star on a blurred frame: "weak", no pick
    _, report = apply_culling(capsys, culled, "--reject")
    assert sidecar(culled, "burst_2.jpg").rating == 1 and sidecar(culled, "burst_2.jpg").pick is None
    assert sidecar(culled, SHARP).pick == 3  # one star is no choice: our keeper stays
    assert sidecar(culled, "burst_0.jpg").pick == 1  # a blurred frame nobody rated is rejected
    kept = {(Path(item["path"]).name, item["field"]) for item in report["kept_yours"]}
    assert kept == {("burst_2.jpg.xmp", "rating")}


def test_a_flagged_frame_a_person_keeps_leaves_its_group_unrejected(culled, capsys):
    """A person's 2 stars on a blurred frame make it the keeper; with a flagged keeper the
    group keeps nothing better than its other flagged frames: none is rejected."""
    write_sidecar(culled["root"] / "burst_2.jpg.xmp", rating=2)
    apply_culling(capsys, culled, "--reject", "--treat-as-unrated", "1")
    assert sidecar(culled, "burst_2.jpg").pick == 3 and "keeper" in sidecar(culled, "burst_2.jpg").tags
    assert sidecar(culled, SHARP).pick is None
    for name in ("burst_0.jpg", "burst_3.jpg"):
        info = sidecar(culled, name)
        assert info.tags == ("blurry",) and info.rating != -1 and info.pick is None, (name, info)


def test_a_pick_label_a_person_set_wins_the_keeper_and_stays(culled, capsys):
    write_sidecar(culled["root"] / "burst_3.jpg.xmp", pick=3)  # a person accepted a blurred frame in digiKam
    write_sidecar(culled["root"] / "bright.jpg.xmp", pick=2)  # and marked another "pending"
    apply_culling(capsys, culled, "--reject", "--treat-as-unrated", "1")
    assert sidecar(culled, "burst_3.jpg").pick == 3 and sidecar(culled, "burst_3.jpg").marks is None  # theirs, unmarked
    assert "keeper" in sidecar(culled, "burst_3.jpg").tags
    assert sidecar(culled, SHARP).pick is None and sidecar(culled, SHARP).tags == ()
    assert sidecar(culled, "bright.jpg").pick == 2  # a person's pick label is never overridden


def test_a_pending_label_a_person_set_stands_against_our_reject(culled, capsys):
    write_sidecar(culled["root"] / "burst_0.jpg.xmp", pick=2)  # "pending" on a blurred frame of the burst
    _, report = apply_culling(capsys, culled, "--reject", "--treat-as-unrated", "1")
    assert sidecar(culled, "burst_0.jpg").pick == 2 and sidecar(culled, "burst_2.jpg").pick == 1
    assert any(item["path"].endswith("burst_0.jpg.xmp") and item["field"] == "pick" for item in report["kept_yours"])


def test_a_second_run_changes_nothing(culled, capsys):
    apply_culling(capsys, culled, "--reject")
    before = snapshot_files(culled["root"])
    _, report = apply_culling(capsys, culled, "--reject")
    assert report["written"] == {} and snapshot_files(culled["root"]) == before


def test_ratings_undo_gives_back_every_byte(culled, capsys):
    before = snapshot_files(culled["root"])
    apply_culling(capsys, culled, "--reject", "--treat-as-unrated", "1")
    assert snapshot_files(culled["root"]) != before
    code, out, err = run_cli(capsys, "ratings", "undo", "--db", culled["index"], "--json")
    assert code == ExitCode.OK, err
    assert {item["status"] for item in json.loads(out)} <= {"restored", "deleted", "missing"}
    assert snapshot_files(culled["root"]) == before  # sidecars we made are gone, the darktable one byte-exact


@pytest.mark.parametrize("runs", [("apply-culling", "apply-ratings"), ("apply-ratings", "apply-culling")])
@pytest.mark.parametrize("undo_order", ["newest first", "oldest first"])
def test_undo_removes_a_sidecar_we_created_whatever_the_order_of_the_runs(culled, capsys, runs, undo_order):
    """Two runs write into the sidecars the first one created; whichever is undone last
    removes them: nothing we wrote remains, so no empty sidecar stays behind."""
    before = snapshot_files(culled["root"])
    for command in runs:
        code, _, err = run_cli(capsys, command, "--db", culled["index"], "--treat-as-unrated", "1")
        assert code == ExitCode.OK, err
    with Index(culled["index"]) as index:
        run_ids = [run["id"] for run in index_rows.rows(index, "runs", order_by="id") if run["command"].startswith("apply-")]
    assert len(run_ids) == 2
    for run_id in run_ids[::-1] if undo_order == "newest first" else run_ids:
        code, out, err = run_cli(capsys, "ratings", "undo", "--db", culled["index"], "--run", run_id, "--json")
        assert code == ExitCode.OK, err
        assert {item["status"] for item in json.loads(out)} <= {"restored", "deleted", "missing"}, out
    assert snapshot_files(culled["root"]) == before  # no sidecar of ours left, the darktable one byte-exact


def test_undo_keeps_a_sidecar_we_created_once_a_person_wrote_into_it(culled, capsys):
    apply_culling(capsys, culled)
    keeper = culled["root"] / f"{SHARP}.xmp"
    write_sidecar(keeper, rating=4)  # the person's own stars, in the sidecar we made
    code, out, err = run_cli(capsys, "ratings", "undo", "--db", culled["index"], "--json")
    assert code == ExitCode.OK, err
    info = read_sidecar(keeper)
    assert info.exists and info.rating == 4 and info.pick is None and info.tags == ()


def test_undo_keeps_what_a_person_changed_since(culled, capsys):
    apply_culling(capsys, culled, "--reject", "--treat-as-unrated", "1")
    write_sidecar(culled["root"] / f"{SHARP}.xmp", pick=2)  # the person downgraded our keeper to "pending"
    code, out, _ = run_cli(capsys, "ratings", "undo", "--db", culled["index"], "--json")
    statuses = {(Path(item["target"]).name, item["status"]) for item in json.loads(out)}
    assert (f"{SHARP}.xmp", "kept-manual") in statuses
    info = sidecar(culled, SHARP)
    assert info.pick == 2 and info.tags == () and info.marks is None  # theirs stays; our tag and marker go


def test_when_the_keeper_changes_the_old_one_loses_our_marks(culled, capsys):
    apply_culling(capsys, culled)
    assert sidecar(culled, SHARP).pick == 3
    write_sidecar(culled["root"] / "burst_2.jpg.xmp", rating=5)  # a person's five stars: their keeper
    cull(capsys, culled["index"])
    apply_culling(capsys, culled)
    old, new = sidecar(culled, SHARP), sidecar(culled, "burst_2.jpg")
    assert old.pick is None and old.tags == () and old.marks is None
    assert new.pick == 3 and new.rating == 5 and set(new.tags) == {"keeper", "blurry"}


def test_our_culling_tags_and_star_tags_live_side_by_side(culled, capsys, model_args):
    apply_culling(capsys, culled)
    code, _, err = run_cli(capsys, "apply-ratings", "--db", culled["index"], "--treat-as-unrated", "1")
    assert code == ExitCode.OK, err
    tags = set(sidecar(culled, SHARP).tags)
    assert "keeper" in tags and any(is_star_tag(tag) for tag in tags), tags
    run_cli(capsys, "ratings", "undo", "--db", culled["index"])  # the stars' run: its tags go, ours stay
    assert sidecar(culled, SHARP).tags == ("keeper",)


def test_a_dry_run_writes_nothing_and_records_no_run(culled, capsys):
    before = snapshot_files(culled["root"])
    _, report = apply_culling(capsys, culled, "--dry-run", "--reject", "--treat-as-unrated", "1")
    assert report["run_id"] is None and report["written"]["pick"] == 4
    assert snapshot_files(culled["root"]) == before


def test_marks_on_a_moved_photo_stay_ours_by_their_markers(culled, capsys, tmp_path):
    """The sidecar itself says which pick label and reject are ours (aes:Pick, aes:Reject),
    as aes:Stars does for stars: another index, or none, still knows."""
    apply_culling(capsys, culled, "--reject", "--treat-as-unrated", "1")
    info = sidecar(culled, "burst_3.jpg")
    assert info.marks == CullMarks(pick=1, reject=True) and info.our_pick == 1 and info.our_reject


# --------------------------------------------------------------------------- digiKam's database


@pytest.fixture
def in_digikam(culled, tmp_path, digikam_statements) -> dict:
    """digikam4.db holding the library's photos, as digiKam's scan would."""
    db = tmp_path / "digikam" / "digikam4.db"
    db.parent.mkdir()
    create_digikam_db(db, digikam_statements)
    with sqlite3.connect(db) as conn:
        identifier = "volumeid:?path=" + quote(str(culled["root"]), safe="/")
        conn.execute("INSERT INTO AlbumRoots (id, label, status, type, identifier, specificPath) VALUES (1, 'Photos', 0, 1, ?, '/')", [identifier])
        conn.execute("INSERT INTO Albums (id, albumRoot, relativePath) VALUES (1, 1, '/')")
        for name in sorted(p.name for p in culled["root"].glob("*.jpg")):
            image_id = conn.execute("INSERT INTO Images (album, name, status, category) VALUES (1, ?, 1, 1)", [name]).lastrowid
            conn.execute("INSERT INTO ImageInformation (imageid, rating) VALUES (?, -1)", [image_id])
    return {**culled, "db": db}


def digikam_cull(capsys, library: dict, *extra) -> dict:
    code, out, err = run_cli(capsys, "digikam", "cull", "--db", library["db"], "--index", library["index"], "--json", *extra)
    assert code == ExitCode.OK, err
    return json.loads(out)


def ids(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT name, id FROM Images"))


def groups_in(db: Path) -> set[tuple[str, str]]:
    """(member, leader) of every Grouped relation (type 2)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT s.name, o.name FROM ImageRelations r JOIN Images s ON s.id = r.subject JOIN Images o ON o.id = r.object WHERE r.type = 2"
        )
        return set(rows)


def tags_in(db: Path) -> dict[str, set[str]]:
    """Per image: its tags as paths, digiKam's internal pick label tags included."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT i.name, p.name || '/' || t.name FROM ImageTags it JOIN Images i ON i.id = it.imageid "
            "JOIN Tags t ON t.id = it.tagid JOIN Tags p ON p.id = t.pid"
        )
        found: dict[str, set[str]] = {}
        for name, tag in rows:
            found.setdefault(name, set()).add(tag)
        return found


def table_rows(db: Path) -> dict[str, list]:
    with sqlite3.connect(db) as conn:
        return {table: sorted(conn.execute(f"SELECT * FROM {table}")) for table in ("ImageRelations", "ImageTags", "ImageInformation")}


ACCEPTED, REJECTED = "_Digikam_Internal_Tags_/Pick Label Accepted", "_Digikam_Internal_Tags_/Pick Label Rejected"


def test_digikam_cull_groups_the_burst_under_its_keeper_as_digikam_does(in_digikam, capsys):
    report = digikam_cull(capsys, in_digikam)
    assert report["keepers"] == 1 and report["backup"], report
    db = in_digikam["db"]
    # ImageRelations(subject = member, object = leader, type 2 = Grouped), one row per member
    assert groups_in(db) == {(name, SHARP) for name in BLURRED}
    tags = tags_in(db)
    assert tags[SHARP] == {ACCEPTED, "Aesthetic/keeper"}
    for name in BLURRED:
        assert tags[name] == {"Aesthetic/blurry"}, name  # no reject without --reject
    assert tags["bright.jpg"] == {"Aesthetic/overexposed"} and "single.jpg" not in tags
    with sqlite3.connect(db) as conn:  # the internal tags as digiKam's TagsCache makes them
        properties = set(conn.execute(
            "SELECT t.name, tp.property, tp.value FROM TagProperties tp JOIN Tags t ON t.id = tp.tagid"
        ))
    assert {("_Digikam_Internal_Tags_", "internalTag", None), ("Pick Label Accepted", "internalTag", None)} <= properties


def test_digikam_rejects_with_the_pick_label_only_when_asked(in_digikam, capsys):
    with sqlite3.connect(in_digikam["db"]) as conn:  # a person rated a blurred frame 1 star in digiKam ("weak": no pick)
        conn.execute("UPDATE ImageInformation SET rating = 1 WHERE imageid = (SELECT id FROM Images WHERE name = 'burst_0.jpg')")
    report = digikam_cull(capsys, in_digikam, "--reject")
    tags = tags_in(in_digikam["db"])
    for name in ("burst_2.jpg", "burst_3.jpg"):
        assert REJECTED in tags[name], name
    assert REJECTED not in tags[SHARP]
    assert REJECTED not in tags["burst_0.jpg"]  # a photo you rated is never rejected
    assert REJECTED not in tags["bright.jpg"]  # alone, the only frame of its scene: flagged, never rejected
    assert {(Path(item["path"]).name, item["field"]) for item in report["kept_yours"]} == {(f"digikam4.db#{ids(in_digikam['db'])['burst_0.jpg']}", "rating")}
    with sqlite3.connect(in_digikam["db"]) as conn:  # its rating has no reject: ratings left as they were
        assert sorted({row[0] for row in conn.execute("SELECT rating FROM ImageInformation")}) == [-1, 1]


def test_digikam_keeps_a_persons_pick_label_and_their_choice_wins_the_keeper(in_digikam, capsys):
    db, image = in_digikam["db"], ids(in_digikam["db"])
    with sqlite3.connect(db) as conn:  # the person picked, in digiKam: Accepted on a blurred frame, Pending on another
        root = conn.execute("INSERT INTO Tags (pid, name) VALUES (0, '_Digikam_Internal_Tags_')").lastrowid
        accepted = conn.execute("INSERT INTO Tags (pid, name) VALUES (?, 'Pick Label Accepted')", [root]).lastrowid
        pending = conn.execute("INSERT INTO Tags (pid, name) VALUES (?, 'Pick Label Pending')", [root]).lastrowid
        conn.executemany("INSERT INTO TagProperties (tagid, property, value) VALUES (?, 'internalTag', NULL)", [(root,), (accepted,), (pending,)])
        conn.execute("INSERT INTO ImageTags (imageid, tagid) VALUES (?, ?)", [image["burst_3.jpg"], accepted])
        conn.execute("INSERT INTO ImageTags (imageid, tagid) VALUES (?, ?)", [image["burst_0.jpg"], pending])
    digikam_cull(capsys, in_digikam, "--reject")
    tags = tags_in(db)
    assert ACCEPTED in tags["burst_3.jpg"] and "Aesthetic/keeper" in tags["burst_3.jpg"]  # the person's keeper
    assert groups_in(db) == {(name, "burst_3.jpg") for name in ("burst_0.jpg", "burst_1.jpg", "burst_2.jpg")}
    assert "_Digikam_Internal_Tags_/Pick Label Pending" in tags["burst_0.jpg"]
    # the person's keeper is flagged (blurred): nothing better is kept, so no frame of the burst is rejected
    assert not any(REJECTED in tags.get(name, set()) for name in BURST)
    with sqlite3.connect(db) as conn:  # the person's tags were found by path: no second "Pick Label Accepted"
        assert conn.execute("SELECT COUNT(*) FROM Tags WHERE name = 'Pick Label Accepted'").fetchone()[0] == 1


def test_digikam_leaves_a_group_a_person_made_whole(in_digikam, capsys):
    db, image = in_digikam["db"], ids(in_digikam["db"])
    with sqlite3.connect(db) as conn:  # the person grouped burst_2 under burst_0
        conn.execute("INSERT INTO ImageRelations (subject, object, type) VALUES (?, ?, 2)", [image["burst_2.jpg"], image["burst_0.jpg"]])
    report = digikam_cull(capsys, in_digikam)
    assert groups_in(db) == {("burst_2.jpg", "burst_0.jpg")}  # theirs, and nothing of ours
    assert report["grouped_by_you"] == 4
    assert ACCEPTED in tags_in(db)[SHARP]  # the keeper's pick label all the same


def test_digikam_undo_puts_every_row_back(in_digikam, capsys):
    before = table_rows(in_digikam["db"])
    digikam_cull(capsys, in_digikam, "--reject")
    assert table_rows(in_digikam["db"]) != before
    code, out, err = run_cli(capsys, "digikam", "undo", "--db", in_digikam["db"], "--index", in_digikam["index"], "--json")
    assert code == ExitCode.OK, err
    assert {r["status"] for r in json.loads(out)["results"]} == {"restored"}
    assert table_rows(in_digikam["db"]) == before


def test_digikam_undo_keeps_a_group_a_person_changed_since(in_digikam, capsys):
    digikam_cull(capsys, in_digikam)
    db, image = in_digikam["db"], ids(in_digikam["db"])
    with sqlite3.connect(db) as conn:  # the person moved burst_0 into a group of their own
        conn.execute("UPDATE ImageRelations SET object = ? WHERE subject = ?", [image["single.jpg"], image["burst_0.jpg"]])
    run_cli(capsys, "digikam", "undo", "--db", db, "--index", in_digikam["index"])
    assert groups_in(db) == {("burst_0.jpg", "single.jpg")}


def test_digikam_a_second_cull_changes_nothing_and_a_sync_keeps_our_culling_tags(in_digikam, capsys):
    digikam_cull(capsys, in_digikam)
    rows = table_rows(in_digikam["db"])
    assert digikam_cull(capsys, in_digikam)["written"] == {}
    assert table_rows(in_digikam["db"]) == rows
    code, _, err = run_cli(capsys, "digikam", "sync", "--db", in_digikam["db"], "--index", in_digikam["index"])
    assert code == ExitCode.OK, err
    tags = tags_in(in_digikam["db"])[SHARP]
    assert "Aesthetic/keeper" in tags and any(is_star_tag(t.removeprefix("Aesthetic/")) for t in tags), tags
    run_cli(capsys, "digikam", "undo", "--db", in_digikam["db"], "--index", in_digikam["index"])  # the sync's
    assert tags_in(in_digikam["db"])[SHARP] == {ACCEPTED, "Aesthetic/keeper"}


# --------------------------------------------------------------------------- bad input


def test_before_any_cull_only_the_flags_of_rebuild_go_out_and_it_says_so(tmp_path, model_args, capsys):
    """The flags come from the facts `rebuild` measured; groups and keepers need `cull`."""
    root = tmp_path / "Photos"
    make_library(root)
    index = tmp_path / "index.db"
    run_cli(capsys, "rebuild", root, *model_args, "--workers", "0", "--db", index)
    code, out, err = run_cli(capsys, "apply-culling", "--db", index)
    assert code == ExitCode.OK, err
    assert "`aes-index cull` has not run yet" in out
    assert read_sidecar(root / "bright.jpg.xmp").tags == ("overexposed",)
    assert not any(read_sidecar(p).pick for p in root.glob("*.xmp"))  # no keeper, no pick label


def test_digikam_cull_without_a_digikam_database_is_one_line(culled, capsys, tmp_path):
    code, out, err = run_cli(capsys, "digikam", "cull", "--db", tmp_path / "nothing.db", "--index", culled["index"])
    assert code == ExitCode.INDEX and "no digiKam database" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["7", "accepted", "-1"])
def test_a_pick_label_we_cannot_read_is_left_alone(culled, capsys, value):
    path = culled["root"] / f"{SHARP}.xmp"
    path.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:digiKam="http://www.digikam.org/ns/1.0/" digiKam:PickLabel="{value}"/>'
        "</rdf:RDF></x:xmpmeta>\n"
    )
    before = path.read_bytes()
    code, out, err = run_cli(capsys, "apply-culling", "--db", culled["index"], "--json")
    assert code == ExitCode.FILE_ERRORS  # exit 3: some files could not be written
    (error,) = json.loads(out)["errors"]
    assert "digiKam:PickLabel holds" in error["error"] and path.read_bytes() == before


def test_taking_back_our_reject_gives_back_the_rating_it_replaced():
    """A photo no longer flagged loses our reject, and gets back the star it had
    (darktable's import 1, or a person's), not an empty rating."""
    from aes_index import ownership
    from aes_index.features.culling.marks import decide_marks
    from aes_index.targets.protocol import Marks
    from aes_index.targets.sidecar import SidecarTarget

    for before in (1, None):  # darktable's import star; nothing
        place = ownership.state({"rating": -1}, journal={"rating": -1}, markers={"rating": -1}, before={"rating": before})
        changes, _ = decide_marks(place, (), Marks("/p/a.jpg", reject=False), SidecarTarget())
        assert changes["rating"] == before


def test_digikam_takes_the_pick_label_it_read_from_our_sidecar_for_ours(in_digikam, capsys):
    """apply-culling set Accepted in SHARP's sidecar; digiKam read it into its database.
    When the keeper changes, digikam cull takes that label back: it is ours, not a person's."""
    apply_culling(capsys, in_digikam)
    db, image = in_digikam["db"], ids(in_digikam["db"])
    assert sidecar(in_digikam, SHARP).pick == 3
    with sqlite3.connect(db) as conn:  # digiKam's scan of the sidecar: the internal tag on SHARP
        root = conn.execute("INSERT INTO Tags (pid, name) VALUES (0, '_Digikam_Internal_Tags_')").lastrowid
        accepted = conn.execute("INSERT INTO Tags (pid, name) VALUES (?, 'Pick Label Accepted')", [root]).lastrowid
        conn.executemany("INSERT INTO TagProperties (tagid, property, value) VALUES (?, 'internalTag', NULL)", [(root,), (accepted,)])
        conn.execute("INSERT INTO ImageTags (imageid, tagid) VALUES (?, ?)", [image[SHARP], accepted])
        conn.execute("UPDATE ImageInformation SET rating = 4 WHERE imageid = ?", [image["burst_3.jpg"]])  # then a person rated
    report = digikam_cull(capsys, in_digikam)
    assert not any(item["field"] == "pick" for item in report["kept_yours"]), report["kept_yours"]
    tags = tags_in(db)  # the person's 4 stars win the keeper; our Accepted moves with it
    assert ACCEPTED in tags["burst_3.jpg"] and ACCEPTED not in tags.get(SHARP, set()), tags


def test_reject_only_where_the_group_keeps_an_unflagged_keeper():
    """plan_marks with --reject: a flagged frame beside an unflagged keeper is rejected; a
    flagged keeper (a blurred burst, a person's pick) leaves its flagged frames unrejected;
    a photo alone, flagged, is not rejected, and a reject of ours on it goes (False); a
    bracket's frames are all keepers, never rejected."""
    from aes_index.features.culling.marks import MarkOptions, plan_marks
    from aes_index.features.culling.model import BLURRY, BRACKET, BURST as KIND, OVEREXPOSED, Group, Member
    from aes_index.targets.sidecar import SidecarTarget

    def member(image_id, *flags):
        return Member(image_id, f"/p/{image_id}.jpg", 0.5, 0.6, 0.0, 0.0, None, flags=flags)

    clean_keeper = Group(1, KIND, (member(1), member(2, BLURRY), member(3)), 1, "", "aes-index")
    flawed_keeper = Group(2, KIND, (member(4, BLURRY), member(5, BLURRY)), 4, "", "you")
    bracket = Group(3, BRACKET, (member(7), member(8, BLURRY)), 7, "", "aes-index")
    alone = member(6, OVEREXPOSED)
    groups = [clean_keeper, flawed_keeper, bracket]
    plan = {m.path: m for m in plan_marks(None, SidecarTarget(), groups, [alone], MarkOptions(reject=True))}
    assert {path: marks.reject for path, marks in plan.items()} == {
        "/p/1.jpg": False, "/p/2.jpg": True, "/p/3.jpg": False, "/p/4.jpg": False, "/p/5.jpg": False, "/p/6.jpg": False,
        "/p/7.jpg": False, "/p/8.jpg": False,
    }
    assert plan["/p/6.jpg"].flags == (OVEREXPOSED,)  # flagged all the same
    without = plan_marks(None, SidecarTarget(), [clean_keeper], [alone], MarkOptions())
    assert {marks.reject for marks in without} == {None}  # not asked: rejects left alone


# --------------------------------------------------------------------------- a person's pick, everywhere


def test_a_persons_five_stars_on_a_blurred_frame_make_it_the_keeper_everywhere(in_digikam, model_args, capsys, tmp_path):
    """A person gave burst_3 (defocused) 5 stars in its sidecar, after the first cull; then
    rebuild and cull. `groups`, `groups --json`, the gallery, apply-culling's sidecars,
    digiKam (which shows the rating it read from that sidecar) and darktable (whose request
    carries it) all name burst_3, "your pick (5 stars)"."""
    from aes_index.features.report import build_report
    from test_report import page_json

    root, index = in_digikam["root"], in_digikam["index"]
    write_sidecar(root / "burst_3.jpg.xmp", rating=5)  # as digiKam or darktable writes a person's rating
    assert run_cli(capsys, "rebuild", root, *model_args, "--workers", "0", "--db", index)[0] == ExitCode.OK
    cull(capsys, index)
    expected = ("burst_3.jpg", "you", "your pick (5 stars)")

    code, text, _ = run_cli(capsys, "groups", "--db", index)
    keeper_line = next(line for line in text.splitlines() if "keeper" in line)
    assert "burst_3.jpg" in keeper_line and "your pick (5 stars)" in keeper_line, text
    (group,) = json.loads(run_cli(capsys, "groups", "--db", index, "--json")[1])["groups"]
    assert (Path(group["keeper"]).name, group["chosen_by"], group["reason"]) == expected

    page = tmp_path / "gallery.html"
    with Index(index) as opened:
        build_report(opened, page, thumb_size=64, workers=0)
    data = page_json(page)
    names = {row["id"]: row["name"] for row in data["photos"]}
    (shown,) = data["groups"]
    assert (names[shown["keeper"]], shown["chosenBy"], shown["reason"]) == expected

    apply_culling(capsys, in_digikam)
    assert sidecar(in_digikam, "burst_3.jpg").rating == 5 and "keeper" in sidecar(in_digikam, "burst_3.jpg").tags
    assert "keeper" not in sidecar(in_digikam, SHARP).tags

    with sqlite3.connect(in_digikam["db"]) as conn:  # digiKam read the person's 5 stars from the sidecar
        conn.execute("UPDATE ImageInformation SET rating = 5 WHERE imageid = (SELECT id FROM Images WHERE name = 'burst_3.jpg')")
    digikam_cull(capsys, in_digikam)
    assert groups_in(in_digikam["db"]) == {(name, "burst_3.jpg") for name in ("burst_0.jpg", "burst_1.jpg", "burst_2.jpg")}
    assert ACCEPTED in tags_in(in_digikam["db"])["burst_3.jpg"]

    from test_darktable import ask

    paths = sorted(str(p) for p in root.glob("*.jpg"))
    images = [{"ref": ref, "path": path, "duplicate": 0, "rating": 5 if path.endswith("burst_3.jpg") else 0,
               "id": 100 + ref, "group": 100 + ref, "group_size": 1, "tags": []} for ref, path in enumerate(paths, start=1)]
    answer = ask(capsys, tmp_path, "cull", {"images": images}, *model_args, "--workers", "0", "--db", index)
    (planned,) = answer["groups"]
    leader = next(path for ref, path in enumerate(paths, start=1) if ref == planned["leader"])
    assert (Path(leader).name, planned["chosen_by"], planned["reason"]) == expected


# --------------------------------------------------------------------------- a group over two folders
#
# A photographer's export of the burst's sharp frame (half size, quality 72, no EXIF) lies in
# exports/ inside the library: it joins the burst, so one group spans two folders. digiKam
# and darktable show a group where its leader is: grouped under a leader in another folder,
# a photo vanishes from its own (in real digiKam 7.9: "0 items - 6 items hidden").

EXPORT = "best.jpg"  # exports/best.jpg: the export of SHARP
# The export's flags are not what these tests are about: with frames 4 px apart, the
# grouping (grouping.frames_of, by look) may take it for a copy of a blurred neighbour
# frame, whose blur verdict it then shares.
FLAGS_OF_THE_EXPORT = {"Aesthetic/blurry"}
ELSEWHERE = "Aesthetic/keeper in another folder"


def make_library_with_export(root: Path) -> None:
    make_library(root)
    (root / "exports").mkdir()
    with Image.open(root / SHARP) as frame:
        frame.resize((frame.width // 2, frame.height // 2), Image.Resampling.LANCZOS).save(root / "exports" / EXPORT, quality=72)


@pytest.fixture
def exported(tmp_path, model_args, capsys, digikam_statements) -> dict:
    """make_library_with_export, indexed and culled (the export joined the burst), in a
    digikam4.db from digiKam's schema with one album per folder, as digiKam's scan makes it."""
    root = tmp_path / "Photos"
    make_library_with_export(root)
    index = tmp_path / "index.db"
    group = index_and_cull(root, index, model_args, capsys)
    assert sorted(Path(m.path).name for m in group.members) == sorted([*BURST, EXPORT])
    assert Path(group.keeper.path).name == SHARP  # the camera original keeps
    db = tmp_path / "digikam" / "digikam4.db"
    db.parent.mkdir()
    create_digikam_db(db, digikam_statements)
    with sqlite3.connect(db) as conn:
        identifier = "volumeid:?path=" + quote(str(root), safe="/")
        conn.execute("INSERT INTO AlbumRoots (id, label, status, type, identifier, specificPath) VALUES (1, 'Photos', 0, 1, ?, '/')", [identifier])
        for album_id, (relative, folder) in enumerate((("/", root), ("/exports", root / "exports")), start=1):
            conn.execute("INSERT INTO Albums (id, albumRoot, relativePath) VALUES (?, 1, ?)", [album_id, relative])
            for name in sorted(p.name for p in folder.glob("*.jpg")):
                image_id = conn.execute("INSERT INTO Images (album, name, status, category) VALUES (?, ?, 1, 1)", [album_id, name]).lastrowid
                conn.execute("INSERT INTO ImageInformation (imageid, rating) VALUES (?, -1)", [image_id])
    return {"root": root, "index": index, "db": db}


def album_view(db: Path) -> dict[str, set[str]]:
    """What each digiKam album shows, groups closed (digiKam's default): an image grouped
    under another is hidden wherever its leader is (GroupItemFilterSettings::matches,
    core/libs/database/models/itemfiltersettings.cpp: a grouped image passes only when its
    group is open), and an album lists its own images only."""
    with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT a.relativePath, i.name, EXISTS (SELECT 1 FROM ImageRelations r WHERE r.subject = i.id AND r.type = 2) "
            "FROM Images i JOIN Albums a ON a.id = i.album WHERE i.status = 1"
        ).fetchall()
    shown: dict[str, set[str]] = {}
    for album, name, grouped in rows:
        shown.setdefault(album, set())
        if not grouped:
            shown[album].add(name)
    return shown


def accept_in_digikam(db: Path, name: str) -> None:
    """A person's pick label Accepted on `name`, as digiKam stores it."""
    with sqlite3.connect(db) as conn:
        root = conn.execute("INSERT INTO Tags (pid, name) VALUES (0, '_Digikam_Internal_Tags_')").lastrowid
        accepted = conn.execute("INSERT INTO Tags (pid, name) VALUES (?, 'Pick Label Accepted')", [root]).lastrowid
        conn.executemany("INSERT INTO TagProperties (tagid, property, value) VALUES (?, 'internalTag', NULL)", [(root,), (accepted,)])
        conn.execute("INSERT INTO ImageTags (imageid, tagid) VALUES ((SELECT id FROM Images WHERE name = ?), ?)", [name, accepted])


def test_digikam_an_export_in_another_album_stays_in_view_tagged_not_grouped_under_the_keeper(exported, capsys):
    digikam_cull(capsys, exported)
    db = exported["db"]
    assert groups_in(db) == {(name, SHARP) for name in BLURRED}  # the burst, in its own album
    assert album_view(db) == {"/": {SHARP, "bright.jpg", "single.jpg"}, "/exports": {EXPORT}}
    tags = tags_in(db)
    # linked to the keeper by our tag (its flags are the grouping's business: see FLAGS_OF_THE_EXPORT)
    assert tags[EXPORT] - FLAGS_OF_THE_EXPORT == {ELSEWHERE}
    assert tags[SHARP] == {ACCEPTED, "Aesthetic/keeper"} and all(ELSEWHERE not in tags[name] for name in BLURRED)


def test_digikam_a_keeper_in_exports_leaves_the_shoot_album_its_best_frame(exported, capsys):
    """The person accepted the export in digiKam: it is the keeper. The shoot's album still
    shows the burst, as one stack under its sharp frame; a second cull changes nothing, and
    undo puts every row back."""
    db = exported["db"]
    accept_in_digikam(db, EXPORT)
    before = table_rows(db)
    digikam_cull(capsys, exported)
    assert groups_in(db) == {(name, SHARP) for name in BLURRED}  # under the best of them here, not under the export
    assert album_view(db) == {"/": {SHARP, "bright.jpg", "single.jpg"}, "/exports": {EXPORT}}
    tags = tags_in(db)
    assert tags[EXPORT] - FLAGS_OF_THE_EXPORT == {ACCEPTED, "Aesthetic/keeper"}
    assert tags[SHARP] == {ELSEWHERE}  # it leads the album's stack, but it is no keeper: no Accepted
    for name in BLURRED:
        assert tags[name] == {ELSEWHERE, "Aesthetic/blurry"}, name
    rows = table_rows(db)
    assert digikam_cull(capsys, exported)["written"] == {} and table_rows(db) == rows
    code, out, err = run_cli(capsys, "digikam", "undo", "--db", db, "--index", exported["index"], "--json")
    assert code == ExitCode.OK, err
    assert {r["status"] for r in json.loads(out)["results"]} == {"restored"}
    assert table_rows(db) == before


def test_xmp_sidecars_link_the_export_to_its_keeper_by_the_same_tag(exported, capsys):
    _, report = apply_culling(capsys, exported)
    tags = read_sidecar(exported["root"] / "exports" / f"{EXPORT}.xmp").tags
    assert tags[0] == "keeper in another folder" and set(tags[1:]) <= {"blurry"}, tags
    assert sidecar(exported, SHARP).tags == ("keeper",)
    assert report["keepers"] == 1
