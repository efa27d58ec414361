"""EXIF ratings in JPEG originals: only the two tags change, pixels stay identical."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import exiv2
import numpy as np
import piexif
import pytest
from PIL import Image

from aes_index import atomic
from aes_index.formats.exif_rating import PERCENT_FOR_STARS, ExifRatingError, NotAJpeg, read_exif_rating, stars_from_percent, write_exif_rating

from conftest import FIXTURES, PHOTO

JPEGS = [
    *sorted((FIXTURES / "metadata-samples").glob("*.jpg")),
    PHOTO,
]
NOT_JPEGS = sorted(
    p for p in (FIXTURES / "metadata-samples").iterdir() if p.suffix.lower() not in (".jpg", ".xmp")
)
OUR_KEYS = ("Exif.Image.Rating", "Exif.Image.RatingPercent")


def exiv2_exif(path: Path) -> dict[str, str]:
    """All EXIF tags (maker notes included) as Exiv2 decodes them."""
    image = exiv2.ImageFactory.open(str(path))
    image.readMetadata()
    return {datum.key(): datum.toString() for datum in image.exifData()}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def copy_to(tmp_path: Path, source: Path) -> Path:
    target = tmp_path / source.name
    shutil.copyfile(source, target)
    return target


@pytest.mark.parametrize("source", JPEGS, ids=lambda p: p.name)
def test_rating_round_trip_keeps_pixels_and_every_other_tag(source, tmp_path):
    path = copy_to(tmp_path, source)
    before = exiv2_exif(path)
    assert read_exif_rating(path) is None

    outcome = write_exif_rating(path, 4)

    assert outcome.changed and outcome.prior is None and outcome.rating == 4
    assert read_exif_rating(path) == 4
    after = exiv2_exif(path)
    assert after["Exif.Image.Rating"] == "4" and after["Exif.Image.RatingPercent"] == "75"
    assert {k: v for k, v in after.items() if k not in OUR_KEYS} == before  # maker notes too
    zeroth = piexif.load(str(path))["0th"]  # an independent reader agrees
    assert (zeroth[0x4746], zeroth[0x4749]) == (4, 75)
    assert np.array_equal(pixels(path), pixels(source))


def test_rewrites_patch_in_place_and_do_not_grow_the_file(tmp_path):
    path = copy_to(tmp_path, FIXTURES / "metadata-samples" / "Canon.jpg")
    write_exif_rating(path, 2)
    size = path.stat().st_size
    for stars in (5, 1, 3):
        write_exif_rating(path, stars)
        assert path.stat().st_size == size and read_exif_rating(path) == stars
    write_exif_rating(path, None)
    write_exif_rating(path, 4)
    assert path.stat().st_size == size


def test_removing_the_rating_restores_the_tags_as_they_were(tmp_path):
    source = FIXTURES / "metadata-samples" / "Nikon.jpg"
    path = copy_to(tmp_path, source)
    write_exif_rating(path, 3)
    outcome = write_exif_rating(path, None)
    assert outcome.prior == 3 and read_exif_rating(path) is None
    assert exiv2_exif(path) == exiv2_exif(source)
    assert np.array_equal(pixels(path), pixels(source))


def test_a_jpeg_without_exif_gets_a_segment_after_jfif(tmp_path):
    path = tmp_path / "plain.jpg"
    Image.new("RGB", (32, 16), (10, 200, 30)).save(path, quality=90)
    original = path.read_bytes()
    assert original[2:4] == b"\xff\xe0"  # JFIF APP0 first
    write_exif_rating(path, 5)
    data = path.read_bytes()
    assert data[2:4] == b"\xff\xe0" and data[:20] == original[:20]  # JFIF still first
    assert read_exif_rating(path) == 5
    assert exiv2_exif(path)["Exif.Image.RatingPercent"] == "99"
    assert np.array_equal(pixels(path), np.asarray(Image.open(io.BytesIO(original)).convert("RGB")))


def test_no_rating_to_remove_changes_nothing(tmp_path):
    path = tmp_path / "plain.jpg"
    Image.new("RGB", (8, 8)).save(path)
    original = path.read_bytes()
    assert not write_exif_rating(path, None).changed
    assert path.read_bytes() == original


def test_the_same_rating_again_does_not_rewrite(tmp_path):
    path = copy_to(tmp_path, FIXTURES / "metadata-samples" / "Sony.jpg")
    write_exif_rating(path, 3)
    stamp = path.stat().st_mtime_ns
    assert not write_exif_rating(path, 3).changed
    assert path.stat().st_mtime_ns == stamp


def test_dry_run_writes_nothing(tmp_path):
    path = copy_to(tmp_path, FIXTURES / "metadata-samples" / "Canon.jpg")
    outcome = write_exif_rating(path, 2, dry_run=True)
    assert (
        outcome.changed
        and path.read_bytes() == (FIXTURES / "metadata-samples" / "Canon.jpg").read_bytes()
    )


@pytest.mark.parametrize("source", NOT_JPEGS, ids=lambda p: p.name)
def test_raw_and_other_formats_are_refused(source, tmp_path):
    path = copy_to(tmp_path, source)
    with pytest.raises(NotAJpeg) as err:
        write_exif_rating(path, 4)
    assert "\n" not in str(err.value)
    assert path.read_bytes() == source.read_bytes()
    with pytest.raises(NotAJpeg):
        read_exif_rating(path)


def test_a_raw_file_named_jpg_is_refused(tmp_path):
    path = tmp_path / "sneaky.jpg"
    shutil.copyfile(FIXTURES / "metadata-samples" / "CanonRaw.cr2", path)
    with pytest.raises(NotAJpeg, match="not a JPEG"):
        write_exif_rating(path, 4)


def test_damaged_exif_is_refused_untouched(tmp_path):
    path = tmp_path / "damaged.jpg"
    Image.new("RGB", (8, 8)).save(path)
    data = path.read_bytes()
    broken_exif = b"Exif\x00\x00" + b"XX" + b"\x00" * 10
    segment = b"\xff\xe1" + (len(broken_exif) + 2).to_bytes(2, "big") + broken_exif
    path.write_bytes(data[:2] + segment + data[2:])
    original = path.read_bytes()
    with pytest.raises(ExifRatingError, match="damaged"):
        write_exif_rating(path, 4)
    assert path.read_bytes() == original


@pytest.mark.parametrize("bad", [-1, 6, 2.5])
def test_ratings_outside_zero_to_five_are_refused(bad, tmp_path):
    with pytest.raises(ValueError):
        write_exif_rating(tmp_path / "x.jpg", bad)


def test_percent_mapping_is_windows_explorers():
    assert PERCENT_FOR_STARS == {0: 0, 1: 1, 2: 25, 3: 50, 4: 75, 5: 99}
    assert [stars_from_percent(p) for p in (0, 1, 12, 13, 25, 50, 62, 63, 75, 87, 88, 99, 100)] == [
        0,
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        4,
        4,
        5,
        5,
        5,
    ]


def test_percent_alone_is_read_as_stars(tmp_path):
    path = tmp_path / "percent.jpg"
    Image.new("RGB", (8, 8)).save(path, exif=piexif.dump({"0th": {0x4749: 50}}))
    assert read_exif_rating(path) == 3


def test_a_crash_leaves_the_original_whole(tmp_path, monkeypatch):
    source = FIXTURES / "metadata-samples" / "Canon.jpg"
    path = copy_to(tmp_path, source)
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("power cut")))
    with pytest.raises(ExifRatingError, match="power cut"):
        write_exif_rating(path, 4)
    assert path.read_bytes() == source.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(atomic.TEMP_PREFIX)]


def test_permissions_are_kept(tmp_path):
    path = copy_to(tmp_path, FIXTURES / "metadata-samples" / "Canon.jpg")
    path.chmod(0o604)
    write_exif_rating(path, 1)
    assert path.stat().st_mode & 0o777 == 0o604
