"""The rating-target protocol: all four targets through the same cases.

Each target (XMP sidecar, EXIF, darktable, digiKam) is driven by the one apply loop and
the one undo loop (aes_index.writing.apply) under the same rule (ratings.decide), with a
small harness per target that plays the photo manager: it sets a rating the way a person
would, and reads back what the photo shows. darktable's side is the plugin's: it sets
our answer only if the image still holds the rating its request carried, then reports
back (`applied`), as plugin/darktable/aesthetic.lua does.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

from aes_index.formats import exif_rating, xmp
from aes_index.features.rating import PhotoRating, RatingOptions
from aes_index.index.store import Index
from aes_index.writing import apply as targets
from aes_index.targets import digikam_db
from aes_index.targets.digikam import DigikamTarget, image_key
from aes_index.targets.darktable import DarktableTarget, DtImage
from aes_index.targets.exif import ExifTarget
from aes_index.targets.sidecar import SidecarTarget
from test_digikam import create_digikam_db, dbconfig_xml, digikam_statements  # noqa: F401 - fixtures

HEAD = "zeroshot-test"


class SidecarPhotos:
    name = "xmp"

    def __init__(self, tmp_path: Path, index: Index):
        self.photo = tmp_path / "IMG_1.CR2"
        self.photo.write_bytes(b"raw")
        self.sidecar = xmp.sidecar_for(self.photo)
        self.roots = (str(tmp_path),)

    def target(self):
        return SidecarTarget(roots=self.roots)

    def set_by_person(self, rating):
        xmp.write_sidecar(self.sidecar, rating=rating)

    def shown(self):
        return xmp.read_sidecar(self.sidecar).rating


class ExifPhotos:
    name = "exif"

    def __init__(self, tmp_path: Path, index: Index):
        self.index = index
        self.photo = tmp_path / "IMG_1.jpg"
        Image.new("RGB", (16, 16), (90, 120, 30)).save(self.photo)
        self.roots = (str(tmp_path),)

    def target(self):
        return ExifTarget(index=self.index, roots=self.roots)

    def set_by_person(self, rating):
        exif_rating.write_exif_rating(self.photo, rating)

    def shown(self):
        return exif_rating.read_exif_rating(self.photo)


class DarktablePhotos:
    """darktable's library is the harness's state; the plugin's part is played here."""

    name = "darktable"

    def __init__(self, tmp_path: Path, index: Index):
        self.index = index
        self.photo = tmp_path / "IMG_1.CR2"
        self.rating = 0  # darktable: 0 = no stars
        self.last_target = None

    def target(self):
        self.last_target = DarktableTarget(images=[DtImage(1, str(self.photo), 0, self.rating)])
        self.sent = self.rating
        return self.last_target

    def set_by_person(self, rating):
        self.rating = 0 if rating is None else rating

    def shown(self):
        return None if self.rating == 0 else self.rating

    def after_apply(self, report):
        """The plugin: set what the answer says where the image is still as sent; report it."""
        answer = self.last_target.answers.get(1, {})
        if "rating" in answer and self.rating == self.sent:
            # reported `applied`: the answer's row, journaled ahead, is done
            (pending,) = self.index.journal.pending("darktable", places=[f"{self.photo}#0"])
            self.index.journal.mark_done(pending.row_ids)
            self.rating = answer["rating"]

    def after_undo(self, results):
        for ref, rating in ((item["ref"], item["rating"]) for item in self.last_target.undo_list()):
            if self.rating == self.sent:
                self.rating = rating
                for result in results:
                    self.index.journal.mark_undone(result.action.row_ids, "restored")


class DigikamPhotos:
    name = "digikam"

    def __init__(self, tmp_path: Path, index: Index, statements):
        self.photo = tmp_path / "Pictures" / "IMG_1.jpg"
        self.db = tmp_path / "digikam4.db"
        create_digikam_db(self.db, statements)
        with sqlite3.connect(self.db) as conn:
            identifier = "volumeid:?path=" + quote(str(self.photo.parent), safe="/")  # as digiKam writes it
            conn.execute("INSERT INTO AlbumRoots (id, label, status, type, identifier, specificPath) VALUES (1, 'P', 0, 1, ?, '/')", [identifier])
            conn.execute("INSERT INTO Albums (id, albumRoot, relativePath) VALUES (1, 1, '/')")
            self.image_id = conn.execute("INSERT INTO Images (album, name, status, category) VALUES (1, 'IMG_1.jpg', 1, 1)").lastrowid
            conn.execute("INSERT INTO ImageInformation (imageid, rating) VALUES (?, -1)", [self.image_id])

    def target(self):
        return DigikamTarget(db_path=self.db)

    def set_by_person(self, rating):
        with sqlite3.connect(self.db) as conn:
            digikam_db.set_rating(conn, self.image_id, rating)

    def shown(self):
        with sqlite3.connect(self.db) as conn:
            return digikam_db.rating_of(conn, self.image_id)


@pytest.fixture(params=["xmp", "exif", "darktable", "digikam"])
def photos(request, tmp_path):
    with Index(tmp_path / "index.db") as index:
        if request.param == "digikam":
            harness = DigikamPhotos(tmp_path, index, request.getfixturevalue("digikam_statements"))
        else:
            harness = {"xmp": SidecarPhotos, "exif": ExifPhotos, "darktable": DarktablePhotos}[request.param](tmp_path, index)
        harness.index = index
        yield harness


def apply(photos, stars: int, **options):
    """One apply run, as every command does it, then the photo manager's part."""
    report = targets.apply(
        photos.index, photos.target(), [PhotoRating(1, str(photos.photo), 0.5, stars, 50.0)],
        RatingOptions(**options), HEAD, "test-apply",
    )
    if hasattr(photos, "after_apply"):
        photos.after_apply(report)
    return report


def undo(photos):
    target = photos.target()
    if photos.name == "darktable":  # the plugin undoes the images a person selected
        actions = photos.index.journal.plan_undo_places("darktable", [f"{photos.photo}#0"])
    else:
        actions = photos.index.journal.plan_undo(None, (photos.name,))
    results = targets.undo(photos.index, {photos.name: target}, actions)
    if hasattr(photos, "after_undo"):
        photos.after_undo(results)
    return [r for r in results if r.action.place == _place(photos)]  # the photo's, not digiKam's tag tree


def test_a_photo_never_rated_gets_our_stars_and_a_journal_row(photos):
    report = apply(photos, 4)
    assert photos.shown() == 4 and report.written[4] == 1
    assert photos.index.journal.last_written(photos.name, _place(photos)) == 4


def test_a_rating_that_is_still_ours_follows_the_policy(photos):
    apply(photos, 3)
    report = apply(photos, 4)
    assert photos.shown() == 4 and report.written[4] == 1 and report.skipped_manual == 0


def test_a_rating_a_person_changed_is_kept(photos):
    apply(photos, 3)
    photos.set_by_person(5)
    report = apply(photos, 2)
    assert photos.shown() == 5 and report.skipped_manual == 1 and sum(report.written.values()) == 0
    assert "by hand since we wrote 3" in report.manual[0]["reason"]


def test_a_rating_we_never_wrote_is_kept(photos):
    photos.set_by_person(2)
    report = apply(photos, 4)
    assert photos.shown() == 2 and report.skipped_manual == 1


def test_treat_as_unrated_lets_us_rate_over_the_import_default(photos):
    photos.set_by_person(1)  # darktable's import default
    assert apply(photos, 4, treat_as_unrated=(1,)).written[4] == 1 and photos.shown() == 4


def test_treat_as_unrated_never_turns_1_to_1_into_a_write(photos):
    photos.set_by_person(1)
    report = apply(photos, 1, treat_as_unrated=(1,))
    assert sum(report.written.values()) == 0 and report.unchanged == 1 and photos.shown() == 1
    assert photos.index.journal.last_written(photos.name, _place(photos)) is None


def test_reject_where_the_target_has_one_else_left_alone(photos):
    report = apply(photos, -1)
    if photos.name in ("xmp", "darktable"):
        assert photos.shown() == -1 and report.written[-1] == 1
    else:  # EXIF has no reject; digiKam's rating has none (it has a pick label)
        assert photos.shown() is None and sum(report.written.values()) == 0
        assert sum(report.unsupported.values()) == 1


def test_undo_puts_the_persons_rating_back(photos):
    photos.set_by_person(2)
    apply(photos, 4, overwrite_manual=True)
    assert photos.shown() == 4
    (result,) = undo(photos)
    assert photos.shown() == 2 and result.status in ("restored", "pending")
    assert photos.index.journal.last_written(photos.name, _place(photos)) is None
    assert undo(photos) == []  # nothing left


def test_undo_keeps_a_rating_a_person_set_after_ours(photos):
    apply(photos, 4)
    photos.set_by_person(5)
    (result,) = undo(photos)
    assert result.status == "kept-manual" and photos.shown() == 5


def test_a_change_between_the_read_and_the_write_is_never_overwritten(photos, monkeypatch):
    """The decision and the write use the same read: a person's rating that lands in between
    makes the write refuse (files), is never applied by the plugin (darktable), or cannot
    land at all while the session holds digiKam's database."""
    target = photos.target()
    read = target.read
    blocked = []

    def read_then_person_rates(place):
        reading = read(place)
        try:
            photos.set_by_person(5)
        except sqlite3.OperationalError as exc:  # digiKam's database is held exclusively
            blocked.append(str(exc))
        return reading

    monkeypatch.setattr(target, "read", read_then_person_rates)
    monkeypatch.setattr(photos, "target", lambda: target)
    if photos.name == "darktable":
        photos.sent = photos.rating
    report = apply(photos, 3)
    if photos.name == "digikam":
        assert blocked and "locked" in blocked[0] and photos.shown() == 3
    else:
        assert photos.shown() == 5
        if photos.name == "darktable":  # the answer, journaled ahead, is settled by the next request
            assert targets.reconcile(photos.index, photos.target()) == 1
        assert photos.index.journal.last_written(photos.name, _place(photos)) is None
    if photos.name in ("xmp", "exif"):
        assert report.changed_since_read == 1 and sum(report.written.values()) == 0


def _place(photos) -> str:
    return {
        "xmp": lambda: str(xmp.sidecar_for(photos.photo)),
        "exif": lambda: str(photos.photo),
        "darktable": lambda: f"{photos.photo}#0",
        "digikam": lambda: image_key(Path(photos.db).resolve(), photos.image_id),
    }[photos.name]()
