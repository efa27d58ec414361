"""`apply-ratings` and `ratings undo` end to end: policy, manual ratings win, undo, EXIF."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aes_index.formats import exif_rating, xmp
from aes_index.cli import main
from aes_index.features.stars import RatingPolicy, stars_for
from aes_index.index.store import Index

from conftest import FIXTURES, make_photo, scored_folder


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def photos(tmp_path, model_args, capsys):
    """20 scored JPEGs (no fixtures with errors: ratings are about scored photos)."""
    return scored_folder(tmp_path / "Shoot", 20, 100, model_args, capsys)


def db_of(root: Path) -> Path:
    return root / ".aes-index.db"


def expected_stars(root: Path) -> dict[str, int]:
    with Index(db_of(root)) as index:
        rows = index.scores.ranked(index.runs.active_head_id())
    stars = stars_for(np.array([r["score"] for r in rows]), RatingPolicy())
    return {Path(r["path"]).name: int(s) for r, s in zip(rows, stars)}


def sidecar_rating(photo: Path) -> int | None:
    return xmp.read_sidecar(xmp.sidecar_for(photo)).rating


def test_dry_run_reports_and_writes_nothing(photos, capsys):
    code, out, _ = run(capsys, "apply-ratings", "--db", db_of(photos), "--dry-run", "--json")
    report = json.loads(out)
    assert code == 0 and report["dry_run"] and report["photos"] == 20
    assert sum(report["stars"].values()) == 20 and report["written_total"] == 20
    assert report["stars"] == {"1": 2, "2": 5, "3": 7, "4": 5, "5": 1}  # defaults: 10/25/35/25/5 %
    assert not list(photos.glob("*.xmp"))


def test_ratings_follow_the_policy_in_new_sidecars(photos, capsys):
    code, out, _ = run(capsys, "apply-ratings", "--db", db_of(photos))
    assert code == 0 and "wrote 20 ratings" in out and "ratings undo --run" in out
    for name, stars in expected_stars(photos).items():
        info = xmp.read_sidecar(photos / f"{name}.xmp")
        assert info.rating == stars and info.aes.stars == stars and ("1 star" if stars == 1 else f"{stars} stars") in info.tags
    code, out, _ = run(capsys, "apply-ratings", "--db", db_of(photos), "--json")
    assert json.loads(out)["written_total"] == 0 and json.loads(out)["unchanged"] == 20  # idempotent


def test_threshold_policy_and_reject(photos, capsys):
    with Index(db_of(photos)) as index:
        scores = index.scores.values(index.runs.active_head_id())
    cuts = ",".join(f"{q:.6f}" for q in np.quantile(scores, [0.2, 0.4, 0.6, 0.8]))
    reject = f"{np.quantile(scores, 0.1):.6f}"
    code, out, _ = run(capsys, "apply-ratings", "--db", db_of(photos), "--policy", "threshold", f"--cuts={cuts}", f"--reject-below={reject}", "--json")
    stars = json.loads(out)["stars"]
    assert "-1" in stars and set(stars) <= {"-1", "1", "2", "3", "4", "5"}


def test_manual_ratings_win(photos, capsys):
    by_hand = photos / "DSC_0003.jpg"
    xmp.write_sidecar(xmp.sidecar_for(by_hand), rating=2)  # a person's judgement, not journaled
    before = xmp.sidecar_for(by_hand).read_bytes()
    code, out, _ = run(capsys, "apply-ratings", "--db", db_of(photos), "--json")
    report = json.loads(out)
    assert report["skipped_manual"] == 1 and report["manual"][0]["rating"] == 2
    assert xmp.sidecar_for(by_hand).read_bytes() == before

    # a person changes a rating we wrote: from then on it is theirs
    ours = photos / "DSC_0007.jpg"
    changed = 5 if sidecar_rating(ours) != 5 else 1
    xmp.write_sidecar(xmp.sidecar_for(ours), rating=changed)
    run(capsys, "rescore", "--db", db_of(photos), "--head", "zeroshot:fixed:beautiful/ugly")
    code, out, _ = run(capsys, "apply-ratings", "--db", db_of(photos), "--json")
    assert sidecar_rating(ours) == changed and sidecar_rating(by_hand) == 2
    assert json.loads(out)["skipped_manual"] == 2

    code, out, _ = run(capsys, "apply-ratings", "--db", db_of(photos), "--overwrite-manual", "--json")
    wanted = expected_stars(photos)
    assert sidecar_rating(by_hand) == wanted["DSC_0003.jpg"] and sidecar_rating(ours) == wanted["DSC_0007.jpg"]


def test_darktables_import_default_can_count_as_unrated(photos, capsys):
    """darktable gives each import 1 star; --treat-as-unrated 1 lets us rate those photos."""
    wanted = expected_stars(photos)
    name = next(n for n, stars in sorted(wanted.items()) if stars != 1)
    photo = photos / name
    shutil.copyfile(FIXTURES / "darktable-xmp" / "evening-glow-folk-toto.jpg.xmp", xmp.sidecar_for(photo))
    assert sidecar_rating(photo) == 1
    run(capsys, "apply-ratings", "--db", db_of(photos))
    assert sidecar_rating(photo) == 1  # by default a 1 is respected as a judgement
    run(capsys, "apply-ratings", "--db", db_of(photos), "--treat-as-unrated", "1")
    assert sidecar_rating(photo) == wanted[name]


def test_undo_puts_every_rating_back(photos, capsys):
    edited = photos / "DSC_0002.jpg"
    shutil.copyfile(FIXTURES / "darktable-xmp" / "darktable-bench-3.8.xmp", xmp.sidecar_for(edited))
    xmp.write_sidecar(xmp.sidecar_for(edited), rating=0)
    original = xmp.sidecar_for(edited).read_bytes()
    code, out, _ = run(capsys, "apply-ratings", "--db", db_of(photos), "--json")
    run_id = json.loads(out)["run_id"]
    assert len(list(photos.glob("*.xmp"))) == 20 and xmp.sidecar_for(edited).read_bytes() != original

    code, out, _ = run(capsys, "ratings", "undo", "--db", db_of(photos), "--run", run_id, "--json")
    statuses = [r["status"] for r in json.loads(out)]
    assert code == 0 and statuses.count("deleted") == 19 and statuses.count("restored") == 1
    assert list(photos.glob("*.xmp")) == [xmp.sidecar_for(edited)]  # the sidecars we created are gone
    assert xmp.read_sidecar(xmp.sidecar_for(edited)).rating == 0
    code, out, _ = run(capsys, "ratings", "undo", "--db", db_of(photos))
    assert "nothing to undo" in out


def test_exif_target_rates_jpegs_and_keeps_pixels(photos, capsys, model_args):
    photo = photos / "DSC_0005.jpg"
    pixels = np.asarray(Image.open(photo))
    code, out, _ = run(capsys, "apply-ratings", "--db", db_of(photos), "--target", "exif", "--json")
    assert json.loads(out)["written_total"] == 20
    assert exif_rating.read_exif_rating(photo) == expected_stars(photos)["DSC_0005.jpg"]
    np.testing.assert_array_equal(np.asarray(Image.open(photo)), pixels)
    assert not list(photos.glob("*.xmp"))
    # our own write is not a change: the next rebuild decodes nothing
    code, out, _ = run(capsys, "rebuild", "--db", db_of(photos), photos, *model_args, "--json")
    assert json.loads(out)["decoded"] == 0


def test_exif_target_never_touches_raw_files(tmp_path, model_args, capsys):
    root = tmp_path / "raw"
    root.mkdir()
    shutil.copy(FIXTURES / "metadata-samples" / "RAW_KODAK_DC50_é.KDC", root)
    make_photo(root / "a.jpg", seed=1)
    run(capsys, "rebuild", root, *model_args, "--workers", "0")
    raw_bytes = (root / "RAW_KODAK_DC50_é.KDC").read_bytes()
    code, out, _ = run(capsys, "apply-ratings", "--db", root / ".aes-index.db", "--target", "exif", "--json")
    assert json.loads(out)["skipped_not_jpeg"] == 1
    assert (root / "RAW_KODAK_DC50_é.KDC").read_bytes() == raw_bytes


def test_darktable_duplicates_each_get_rated(photos, capsys):
    photo = photos / "DSC_0004.jpg"
    duplicate = photos / "DSC_0004_01.jpg.xmp"
    xmp.write_sidecar(duplicate, rating=0)
    run(capsys, "apply-ratings", "--db", db_of(photos))
    wanted = expected_stars(photos)["DSC_0004.jpg"]
    assert sidecar_rating(photo) == wanted and xmp.read_sidecar(duplicate).rating == wanted


def test_hostile_sidecar_is_reported_and_the_run_goes_on(photos, capsys):
    hostile = xmp.sidecar_for(photos / "DSC_0006.jpg")
    hostile.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>')
    before = hostile.read_bytes()
    code, out, _ = run(capsys, "apply-ratings", "--db", db_of(photos), "--json")
    report = json.loads(out)
    assert code == 3 and len(report["errors"]) == 1 and "DSC_0006" in report["errors"][0]["path"]
    assert report["written_total"] == 19 and hostile.read_bytes() == before


def test_ratings_undo_is_not_blocked_by_a_newer_darktable_run(photos, capsys):
    from aes_index.index.store import journal

    code, out, _ = run(capsys, "apply-ratings", "--db", db_of(photos), "--json")
    with Index(db_of(photos)) as index:  # darktable's plugin journals its own writes later
        index.journal.record(10_000, journal.Write(target="darktable", place=f"{photos / 'DSC_0001.jpg'}#0",
                                                   image_path=str(photos / "DSC_0001.jpg"), old=1, new=4))
    code, out, _ = run(capsys, "ratings", "undo", "--db", db_of(photos), "--json")
    assert [r["status"] for r in json.loads(out)].count("deleted") == 20
