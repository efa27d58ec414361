"""The gallery's files: identical photos share their thumbnail without tripping over each
other, and the gallery written inside a library is never taken for photos of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from aes_index.cli import main
from aes_index.config import DB_FILENAME
from aes_index.index.store import Index

from conftest import make_photo
import index_rows

COPIES_OF_ONE = 8
COPIES_OF_EACH = 5
DISTINCT = 4


def page_rows(html_path: Path) -> list[dict]:
    """The photos embedded in a page, as dicts, each with its full "path"."""
    html = html_path.read_text(encoding="utf-8")
    opening = '<script type="application/json" id="gallery-data">'
    start = html.index(opening) + len(opening)
    data = json.loads(html[start : html.index("</script>", start)])
    rows = [dict(zip(data["columns"], row)) for row in data["photos"]]
    return [dict(row, path=str(Path(data["folders"][row["folder"]]["path"], row["name"]))) for row in rows]


def indexed_paths(root: Path) -> set[str]:
    with Index(root / DB_FILENAME) as index:
        return set(index_rows.values(index, "images", "path"))


@pytest.fixture
def library_of_copies(tmp_path, model_args) -> Path:
    """8 copies of one JPEG, and 5 copies of each of several others: every copy has the
    fingerprint (the thumbnail name) of its original."""
    root = tmp_path / "Photos"
    original = make_photo(root / "one" / "copy-0.jpg", seed=1)
    for i in range(1, COPIES_OF_ONE):
        shutil.copyfile(original, root / "one" / f"copy-{i}.jpg")
    for photo in range(DISTINCT):
        first = make_photo(root / f"many-{photo}" / "copy-0.jpg", seed=10 + photo)
        for i in range(1, COPIES_OF_EACH):
            shutil.copyfile(first, first.with_name(f"copy-{i}.jpg"))
    assert main(["rebuild", str(root), *model_args, "--workers", "0", "-q"]) == 0
    return root


def test_identical_photos_share_a_thumbnail_without_a_race(library_of_copies, tmp_path, monkeypatch, capsys):
    photos = indexed_paths(library_of_copies)
    assert len(photos) == COPIES_OF_ONE + COPIES_OF_EACH * DISTINCT
    monkeypatch.chdir(library_of_copies)
    for run in range(6):  # the race lost most runs; each run starts with no cached thumbnail
        out = tmp_path / f"run-{run}" / "gallery.html"
        assert main(["report", "--out", str(out), "-q"]) == 0, capsys.readouterr().err
        rows = page_rows(out)
        assert sorted(row["path"] for row in rows) == sorted(photos)
        thumbs = out.with_name("gallery_thumbs")
        assert all(row["thumb"] and (thumbs / row["thumb"]).is_file() for row in rows)
        assert not list(thumbs.rglob("*.part"))  # no temporary file left behind



def test_a_gallery_written_in_the_library_is_never_indexed_or_rated(library_of_copies, model_args, monkeypatch, capsys):
    photos = indexed_paths(library_of_copies)
    monkeypatch.chdir(library_of_copies)
    assert main(["report", "-q"]) == 0  # the defaults: gallery.html, gallery_thumbs/ in the library
    thumbs = library_of_copies / "gallery_thumbs"
    assert (library_of_copies / "gallery.html").is_file() and list(thumbs.rglob("*.jpg"))
    assert main(["rebuild", str(library_of_copies), *model_args, "--workers", "0", "-q"]) == 0
    assert indexed_paths(library_of_copies) == photos
    capsys.readouterr()
    assert main(["apply-ratings", "--dry-run", "--json"]) == 0
    would_write = json.loads(capsys.readouterr().out)
    assert would_write["photos"] == would_write["written_total"] == len(photos)  # the photos, and nothing else
    assert not list(thumbs.rglob("*.xmp"))


def test_the_scanner_skips_a_marked_thumbnail_folder_however_it_is_reached(tmp_path):
    from aes_index.index.discover import discover
    from aes_index.index.discover import THUMBS_MARKER

    root = tmp_path / "Photos"
    photo = make_photo(root / "a.jpg", seed=1)
    thumb = make_photo(root / "gallery_thumbs" / "ab" / "ab12-256.jpg", seed=2)
    (root / "gallery_thumbs" / THUMBS_MARKER).write_text("")
    assert [e.path for e in discover([root])] == [str(photo)]
    # The watcher hands over the files and folders it saw change: the same rule applies.
    assert list(discover([thumb, thumb.parent, root / "gallery_thumbs"])) == []
