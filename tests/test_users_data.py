"""Users' data: what apply-ratings must never write, and what it must recognise as ours.

Each test reproduces one defect a tester found (the issue's item number in the name's
docstring) through the CLI, end to end, on photos scored with the tiny model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from aes_index.formats import xmp
from aes_index.features.rating import plan
from aes_index.features.stars import RatingPolicy
from aes_index.index.store import Index
from conftest import FIXTURES, PHOTO, REPO_ROOT, make_photo, scored_folder
from conftest import run_cli as run
import index_rows


@pytest.fixture
def shoot(tmp_path, model_args, capsys):
    """Six scored JPEGs in a library folder."""
    return scored_folder(tmp_path / "Shoot", 6, 200, model_args, capsys)


def apply_json(capsys, db, *extra) -> tuple[int, dict]:
    code, out, err = run(capsys, "apply-ratings", "--db", db, "--json", *extra)
    return code, (json.loads(out) if out.strip() else {"stderr": err})


def policy_stars(db: Path, policy: RatingPolicy) -> dict[str, int]:
    with Index(db) as index:
        return {Path(p.path).name: p.stars for p in plan(index, index.runs.active_head_id(), policy)}


def rating(sidecar: Path):
    return xmp.read_sidecar(sidecar).rating


def test_a_write_protected_sidecar_is_left_untouched_and_reported(shoot, capsys):
    """Item 7: a rename ignores the file's own permission bits; we must not."""
    sidecar = xmp.sidecar_for(shoot / "DSC_0001.jpg")
    shutil.copyfile(FIXTURES / "darktable-xmp" / "evening-glow-folk-toto.jpg.xmp", sidecar)
    xmp.write_sidecar(sidecar, rating=0)  # unrated: we would rate it
    before = sidecar.read_bytes()
    sidecar.chmod(0o444)
    code, report = apply_json(capsys, shoot / ".aes-index.db")
    assert code == 3 and sidecar.read_bytes() == before and (sidecar.stat().st_mode & 0o777) == 0o444
    (error,) = report["errors"]
    assert error["path"] == str(sidecar) and "write-protected" in error["error"] and "\n" not in error["error"]
    assert sum(report["written"].values()) == 5  # the others are rated


def test_a_sidecar_linking_outside_the_library_is_not_written_through(shoot, tmp_path, capsys):
    """Item 8: a sidecar that is a symlink to a file elsewhere."""
    elsewhere = tmp_path / "elsewhere.xmp"
    shutil.copyfile(FIXTURES / "darktable-xmp" / "evening-glow-folk-toto.jpg.xmp", elsewhere)
    xmp.write_sidecar(elsewhere, rating=0)
    before = elsewhere.read_bytes()
    link = xmp.sidecar_for(shoot / "DSC_0002.jpg")
    link.symlink_to(elsewhere)
    code, report = apply_json(capsys, shoot / ".aes-index.db")
    assert code == 3 and elsewhere.read_bytes() == before and link.is_symlink()
    assert any("leads outside the library" in e["error"] for e in report["errors"])


def test_a_photo_the_index_holds_outside_its_folders_gets_no_sidecar(shoot, tmp_path, model_args, capsys):
    """Item 8: an index that holds a photo outside its roots (an older version's `score`
    added such files) never writes beside it; the refusal is reported."""
    outside = make_photo(tmp_path / "elsewhere" / "x.jpg", seed=7)
    db = shoot / ".aes-index.db"
    with Index(db) as index, index.transaction():
        twin = index.images.by_path(str(shoot / "DSC_0000.jpg"))
        image_id = index.images.add(str(outside), 1, 1, "outside")
        index.embeddings.copy(twin["id"], image_id)
        index.images.mark_ok([image_id])
    code, _, err = run(capsys, "rescore", "--db", db, *model_args)  # gives it a score too
    assert code == 0, err
    code, report = apply_json(capsys, db)
    assert not list(outside.parent.glob("*.xmp"))
    assert any("is outside the library's folders" in e["error"] for e in report["errors"]), report


def test_a_sidecar_with_two_ratings_is_refused_not_edited(shoot, capsys):
    """Item 9: two rdf:Description blocks with an xmp:Rating each; exiv2 rejects such a file."""
    sidecar = xmp.sidecar_for(shoot / "DSC_0003.jpg")
    sidecar.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="3"/>'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="0"/>'
        "</rdf:RDF></x:xmpmeta>"
    )
    before = sidecar.read_bytes()
    code, report = apply_json(capsys, shoot / ".aes-index.db")
    assert code == 3 and sidecar.read_bytes() == before
    assert any("2 xmp:Rating values" in e["error"] for e in report["errors"])
    run(capsys, "ratings", "undo", "--db", shoot / ".aes-index.db")
    assert sidecar.read_bytes() == before


def test_our_ratings_stay_ours_when_the_folder_moves(shoot, tmp_path, model_args, capsys):
    """Item 10: a moved folder with a fresh index: the sidecars' aes:Stars equal to
    xmp:Rating say whose ratings they are, so they follow the policy, not "by hand"."""
    code, first = apply_json(capsys, shoot / ".aes-index.db")
    assert sum(first["written"].values()) == 6
    moved = tmp_path / "Archive" / "Shoot"
    moved.parent.mkdir()
    shutil.move(shoot, moved)
    (moved / ".aes-index.db").unlink()  # the index is lost, or left behind
    for suffix in ("-wal", "-shm"):
        Path(f"{moved / '.aes-index.db'}{suffix}").unlink(missing_ok=True)
    code, _, err = run(capsys, "rebuild", moved, *model_args, "--workers", "0")
    assert code == 0, err
    person = xmp.sidecar_for(moved / "DSC_0004.jpg")
    xmp.write_sidecar(person, rating=-1)  # a person rejected this one in darktable

    code, again = apply_json(capsys, moved / ".aes-index.db", "--cuts", "40,60,80,90")  # other stars now
    assert again["skipped_manual"] == 1 and again["manual"][0]["path"] == str(person)
    wanted = policy_stars(moved / ".aes-index.db", RatingPolicy(cuts=(40, 60, 80, 90)))
    for photo in moved.glob("*.jpg"):
        expected = -1 if photo.name == "DSC_0004.jpg" else wanted[photo.name]
        assert rating(xmp.sidecar_for(photo)) == expected


def test_a_raw_jpeg_pair_sharing_a_sidecar_gets_one_decision_and_settles(tmp_path, model_args, capsys):
    """Item 11: IMG_2.dng + IMG_2.jpg and a Lightroom-style IMG_2.xmp: one photograph."""
    root = tmp_path / "Pairs"
    make_photo(root / "IMG_1.jpg", seed=1)
    make_photo(root / "IMG_1.png", seed=2)
    for i in range(3, 9):
        make_photo(root / f"IMG_{i}.jpg", seed=i)
    shared = root / "IMG_1.xmp"
    xmp.write_sidecar(shared, rating=0)
    code, _, err = run(capsys, "rebuild", root, *model_args, "--workers", "0")
    assert code == 0, err
    db = root / ".aes-index.db"
    stars = policy_stars(db, RatingPolicy())
    first = apply_json(capsys, db)[1]
    assert rating(shared) == max(stars["IMG_1.jpg"], stars["IMG_1.png"])
    for _ in range(2):  # settled: no further write to the shared sidecar, ever
        again = apply_json(capsys, db)[1]
        assert sum(again["written"].values()) == 0 and again["skipped_manual"] == 0
    assert first["photos"] == 8


def test_apply_ratings_waits_while_another_run_writes_ratings(shoot, capsys):
    """Item 4: runs that write ratings take turns. While another process holds the turn,
    apply-ratings writes nothing; once it is released, it decides on what that run left
    (a rating set meanwhile is kept) and journals exactly what it changed."""
    db = shoot / ".aes-index.db"
    release = shoot.parent / "release"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_RATINGS_TURN, str(db), str(release)],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT / "plugin")),
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        result = {}
        applying = threading.Thread(target=lambda: result.update(zip(("code", "report"), apply_json(capsys, db))))
        applying.start()
        applying.join(timeout=5)  # an unserialized run finishes 6 photos well within this
        assert applying.is_alive() and not list(shoot.glob("*.xmp"))  # waiting, nothing written
        person = xmp.sidecar_for(shoot / "DSC_0000.jpg")
        xmp.write_sidecar(person, rating=-1)  # what the other run left behind
        release.touch()
        applying.join(timeout=300)
        assert holder.wait(timeout=60) == 0
    finally:
        release.touch()
        if holder.poll() is None:
            holder.kill()
    assert result["code"] == 0 and result["report"]["skipped_manual"] == 1
    assert sum(result["report"]["written"].values()) == 5
    with Index(db) as index:
        assert len(index.journal.plan_undo()) == 5 and rating(person) == -1


HOLD_RATINGS_TURN = """
import sys, time
from pathlib import Path
from aes_index.index.locks import file_lock
db, release = Path(sys.argv[1]), Path(sys.argv[2])
with file_lock(db, "ratings"):
    print("holding", flush=True)
    while not release.exists():
        time.sleep(0.05)
"""


SIDECAR_FIXTURES = sorted((FIXTURES / "darktable-xmp").glob("*.xmp")) + [
    p for p in sorted((FIXTURES / "metadata-samples").glob("*.xmp")) if p.name != "XMP2.xmp"  # not XML
]
JPEG_FIXTURES = sorted((FIXTURES / "metadata-samples").glob("*.jpg")) + [PHOTO]


@pytest.mark.parametrize("kind", ["xmp", "exif"])
def test_apply_then_undo_gives_back_every_byte(kind, tmp_path):
    """Rough edge: undo left the xmlns declarations our write had added, and EXIF APP1
    grew by 55-162 bytes per apply + undo. Two runs, then both undone, on every fixture."""
    from aes_index.features.rating import PhotoRating, RatingOptions
    from aes_index.writing import apply as targets
    from aes_index.targets.exif import ExifTarget
    from aes_index.targets.sidecar import SidecarTarget

    sources = SIDECAR_FIXTURES if kind == "xmp" else JPEG_FIXTURES
    files, photos = [], []
    for n, source in enumerate(sources):
        photo = tmp_path / f"IMG_{n}.jpg"
        if kind == "xmp":
            photo.write_bytes(b"photo")
            shutil.copyfile(source, xmp.sidecar_for(photo))
            xmp.write_sidecar(xmp.sidecar_for(photo), rating=None)  # unrated, so we rate it
            files.append(xmp.sidecar_for(photo))
        else:
            shutil.copyfile(source, photo)
            files.append(photo)
        photos.append(photo)
    before = [f.read_bytes() for f in files]
    with Index(tmp_path / "index.db") as index:
        roots = (str(tmp_path),)
        target = SidecarTarget(roots=roots) if kind == "xmp" else ExifTarget(index=index, roots=roots)
        for stars in (4, 2):
            rated = [PhotoRating(i, str(p), 0.5, stars, 50.0) for i, p in enumerate(photos)]
            report = targets.apply(index, target, rated, RatingOptions(), "head", "test")
            assert sum(report.written.values()) == len(files), report.errors
        for _ in range(2):
            results = targets.undo(index, {kind: target}, index.journal.plan_undo(None, (kind,)))
            assert {r.status for r in results} == {"restored"}
    for path, original in zip(files, before):
        assert path.read_bytes() == original, path.name


def test_scoring_a_photo_outside_the_library_leaves_the_librarys_index_alone(shoot, tmp_path, model_args, capsys):
    """Item 8: `aes-index score /elsewhere/x.jpg` with the library's index scores it (in a
    throwaway index) without adding it to the library."""
    outside = make_photo(tmp_path / "elsewhere" / "x.jpg", seed=7)
    inside = shoot / "DSC_0001.jpg"
    code, out, err = run(capsys, "score", outside, inside, "--db", shoot / ".aes-index.db", *model_args, "--workers", "0", "--json")
    assert code == 0, err
    assert [Path(r["path"]) for r in json.loads(out)] == [outside, inside]
    assert all(r["score"] is not None for r in json.loads(out))
    with Index(shoot / ".aes-index.db") as index:
        assert index.images.by_path(str(outside)) is None and index.images.by_path(str(inside)) is not None


def test_undo_finds_our_ratings_after_the_folder_moved(shoot, tmp_path, model_args, capsys):
    """Item 10: a rated folder moved inside the library; rebuild follows the move, and
    `ratings undo` puts back what we wrote where it is now (it said "6 missing")."""
    library = shoot.parent
    code, _, err = run(capsys, "rebuild", library, "--db", tmp_path / "lib.db", *model_args, "--workers", "0")
    assert code == 0, err
    code, first = apply_json(capsys, tmp_path / "lib.db")
    assert sum(first["written"].values()) == 6
    moved = library / "2024" / "Shoot"
    moved.parent.mkdir()
    shutil.move(shoot, moved)
    code, _, err = run(capsys, "rebuild", library, "--db", tmp_path / "lib.db", *model_args, "--workers", "0", "--json")
    assert code == 0, err
    code, out, _ = run(capsys, "ratings", "undo", "--db", tmp_path / "lib.db", "--json")
    assert [r["status"] for r in json.loads(out)] == ["deleted"] * 6
    assert not list(moved.glob("*.xmp"))


def test_a_temp_file_left_by_a_killed_write_is_swept_by_the_next_scan(shoot, model_args, capsys):
    """Rough edge: kill -9 between writing the temp file and the rename left
    .aes-index-<hex>.tmp beside the photo for good. The next scan removes our own debris
    once it is an hour old, and nothing else (a fresh one may be a write in progress)."""
    from aes_index.atomic import STALE_TEMP_SECONDS

    stale, fresh, theirs = shoot / ".aes-index-0123456789abcdef.tmp", shoot / ".aes-index-fedcba9876543210.tmp", shoot / ".aes-index-notes.tmp"
    for path in (stale, fresh, theirs):
        path.write_bytes(b"partial")
    old = os.path.getmtime(stale) - STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(theirs, (old, old))
    code, _, err = run(capsys, "rebuild", shoot, *model_args, "--workers", "0")
    assert code == 0, err
    assert not stale.exists() and fresh.exists() and theirs.exists()


def test_runs_killed_midway_do_not_stay_running(shoot, model_args, capsys):
    """Rough edge: a run killed with kill -9 stayed "running" for good. The next run that
    holds the same lock knows nobody runs it any more: it becomes "interrupted"."""
    db = shoot / ".aes-index.db"
    with Index(db) as index:
        killed_apply = index.runs.start("apply-ratings", index.roots(), {})
        killed_rebuild = index.runs.start("rebuild", index.roots(), {})
    apply_json(capsys, db)
    run(capsys, "rebuild", shoot, *model_args, "--workers", "0")
    with Index(db) as index:
        statuses = {run["id"]: run["status"] for run in index_rows.rows(index, "runs")}
    assert statuses[killed_apply] == statuses[killed_rebuild] == "interrupted"
    assert "running" not in statuses.values()
