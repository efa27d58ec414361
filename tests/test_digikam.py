"""`aes-index digikam sync|undo` against a database made from digiKam's own schema.

The schema is digiKam's: dbconfig.xml from Debian's digikam-data package (downloaded with
`apt-get download`, unpacked with `dpkg-deb -x`, never installed), whose QSQLITE
CreateDB / CreateIndices / CreateTriggers statements build the database, triggers and all.
The extracted file is cached under the temp folder, keyed by the package version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

import defusedxml.ElementTree as ET
import pytest

from aes_index.targets import digikam_db as digikam
from aes_index.targets.sidecar import star_tag
from aes_index.cli import main
from aes_index.errors import ExitCode
from aes_index.features.rating import plan
from aes_index.features.stars import RatingPolicy
from aes_index.index.store import Index
from conftest import make_photo
from test_readers import require_tool as _tool
import index_rows

SCHEMA_ACTIONS = ("CreateDB", "CreateIndices", "CreateTriggers")
CACHE = Path(tempfile.gettempdir()) / "aes-index-digikam-data"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- digiKam's schema


def _apt(*command: str, cwd: Path | None = None) -> str:
    run_ = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=300)
    if run_.returncode != 0:  # no network to the mirror, no package lists: fail, never skip
        pytest.fail(f"`{' '.join(command)}` failed ({run_.returncode}): {run_.stderr.strip()[-1000:]}")
    return run_.stdout


@pytest.fixture(scope="session")
def dbconfig_xml() -> Path:
    """digiKam's dbconfig.xml from the digikam-data package Debian would install now."""
    apt_cache, apt_get, dpkg_deb = _tool("apt-cache"), _tool("apt-get"), _tool("dpkg-deb")
    shown = _apt(apt_cache, "show", "--no-all-versions", "digikam-data")
    version = next(line.split(":", 1)[1].strip() for line in shown.splitlines() if line.startswith("Version:"))
    cached = CACHE / version.replace(":", "_") / "dbconfig.xml"
    if cached.is_file():
        return cached
    with tempfile.TemporaryDirectory() as scratch:
        _apt(apt_get, "download", f"digikam-data={version}", cwd=Path(scratch))
        (deb,) = Path(scratch).glob("digikam-data_*.deb")
        _apt(dpkg_deb, "-x", str(deb), str(Path(scratch) / "root"))
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.part")  # concurrent sessions: rename is atomic
        shutil.copyfile(Path(scratch) / "root/usr/share/digikam/database/dbconfig.xml", partial)
        os.replace(partial, cached)
    return cached


@pytest.fixture(scope="session")
def digikam_statements(dbconfig_xml) -> list[str]:
    """The SQLite statements digiKam runs to create a new core database."""
    sqlite = ET.parse(dbconfig_xml).getroot().find("database[@name='QSQLITE']")
    statements = []
    for name in SCHEMA_ACTIONS:
        action = sqlite.find(f".//dbaction[@name='{name}']")
        assert action is not None and action.get("mode") == "transaction", name
        statements += [statement.text for statement in action.findall("statement")]
    assert len(statements) > 30
    return statements


def create_digikam_db(path: Path, statements: list[str]) -> None:
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO Settings (keyword, value) VALUES ('DBVersion', '15')")


# --------------------------------------------------------------------------- a library in both


@pytest.fixture
def indexed(tmp_path, model_args, capsys) -> dict:
    """Eight photos (one with a hostile name) scored with the tiny model, and the stars the policy gives."""
    root = tmp_path / "Pictures"
    names = [f"2024/IMG_{i:04d}.jpg" for i in range(6)] + ["2024/trip 'x' $(y) ü.jpg", "top.jpg"]
    for seed, name in enumerate(names):
        make_photo(root / name, seed=seed)
    index_db = tmp_path / "index.db"
    code, _, err = run(capsys, "rebuild", root, *model_args, "--workers", "0", "--db", index_db)
    assert code == ExitCode.OK, err
    with Index(index_db) as index:
        stars = {p.path: p.stars for p in plan(index, index.runs.active_head_id(), RatingPolicy())}
    return {"root": root, "names": names, "index": index_db, "stars": stars}


@pytest.fixture
def library(indexed, tmp_path, digikam_statements) -> dict:
    """digikam4.db holding the same photos: album root, albums, images, image information.

    IMG_0000 was rated by a person (other stars than ours); IMG_0001 has no ImageInformation row;
    "not indexed.jpg" is a photo aes-index never saw.
    """
    db = tmp_path / "digikam" / "digikam4.db"
    db.parent.mkdir()
    create_digikam_db(db, digikam_statements)
    root = indexed["root"]
    manual = expected(indexed)["IMG_0000.jpg"] % 5 + 1
    with sqlite3.connect(db) as conn:
        identifier = "volumeid:?path=" + quote(str(root), safe="/")  # as digiKam 7.9 writes it (tests/test_digikam_real.py)
        conn.execute("INSERT INTO AlbumRoots (id, label, status, type, identifier, specificPath) VALUES (1, 'Pictures', 0, 1, ?, '/')", [identifier])
        conn.execute("INSERT INTO Albums (id, albumRoot, relativePath) VALUES (1, 1, '/'), (2, 1, '/2024')")
        for name in [*indexed["names"], "2024/not indexed.jpg"]:
            album, _, file = name.rpartition("/")
            image_id = conn.execute(
                "INSERT INTO Images (album, name, status, category) VALUES (?, ?, 1, 1)", [2 if album else 1, file]
            ).lastrowid
            if file != "IMG_0001.jpg":
                conn.execute("INSERT INTO ImageInformation (imageid, rating) VALUES (?, ?)", [image_id, manual if file == "IMG_0000.jpg" else -1])
    return {**indexed, "db": db, "manual": manual}


def ratings(db: Path) -> dict[str, int | None]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT i.name, ii.rating FROM Images i LEFT JOIN ImageInformation ii ON ii.imageid = i.id")
        return dict(rows.fetchall())


def aesthetic_tags(db: Path) -> dict[str, list[str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT i.name, p.name || '/' || t.name FROM ImageTags it JOIN Images i ON i.id = it.imageid "
            "JOIN Tags t ON t.id = it.tagid JOIN Tags p ON p.id = t.pid WHERE p.name = 'Aesthetic' AND p.pid = 0"
        )
        tags: dict[str, list[str]] = {}
        for name, tag in rows:
            tags.setdefault(name, []).append(tag)
        return tags


def sync(capsys, library: dict, *extra) -> tuple[int, dict, str]:
    code, out, err = run(capsys, "digikam", "sync", "--db", library["db"], "--index", library["index"], "--json", *extra)
    return code, (json.loads(out) if out else {}), err


def expected(library: dict) -> dict[str, int]:
    return {Path(path).name: stars for path, stars in library["stars"].items()}


def backups(db: Path) -> list[Path]:
    return sorted(db.parent.glob(f"{db.name}.aes-index-backup-*"))


# --------------------------------------------------------------------------- tests


def test_sync_writes_ratings_and_the_aesthetic_tag_tree(library, capsys):
    before = ratings(library["db"])
    code, report, err = sync(capsys, library)
    assert code == ExitCode.OK, err
    assert report["images"] == 9 and report["matched"] == 8 and report["skipped_manual"] == 1

    after, stars = ratings(library["db"]), expected(library)
    assert after["IMG_0000.jpg"] == library["manual"]  # a person's rating wins
    assert after["not indexed.jpg"] == -1  # not matched, not touched
    for name, wanted in stars.items():
        if name != "IMG_0000.jpg":
            assert after[name] == wanted, name  # IMG_0001 got an ImageInformation row
    assert aesthetic_tags(library["db"]) == {name: [f"Aesthetic/{star_tag(n)}"] for name, n in stars.items() if name != "IMG_0000.jpg"}
    with sqlite3.connect(library["db"]) as conn:  # digiKam's own trigger filed our tags in TagsTree
        (root,) = conn.execute("SELECT id FROM Tags WHERE pid = 0 AND name = 'Aesthetic'").fetchone()
        children = [row[0] for row in conn.execute("SELECT id FROM Tags WHERE pid = ?", [root])]
        for child in children:
            assert {row[0] for row in conn.execute("SELECT pid FROM TagsTree WHERE id = ?", [child])} == {root, 0}

    (backup,) = backups(library["db"])
    assert ratings(backup) == before and report["backup"] == str(backup)


def test_a_second_sync_changes_nothing_and_keeps_a_new_manual_rating(library, capsys):
    sync(capsys, library)
    with sqlite3.connect(library["db"]) as conn:
        conn.execute("UPDATE ImageInformation SET rating = 5 WHERE imageid = (SELECT id FROM Images WHERE name = 'top.jpg')")
    code, report, _ = sync(capsys, library)
    assert report["written_total"] == 0
    assert report["skipped_manual"] == (2 if expected(library)["top.jpg"] != 5 else 1)
    assert ratings(library["db"])["top.jpg"] == 5


def test_stars_digikam_read_from_our_sidecars_are_ours_not_manual(library, capsys):
    """Issue 15 item 14: apply-ratings wrote the sidecars, digiKam read them ("Read from
    sidecar files"), so its database holds our stars; a sync with other cuts follows the
    new policy for all of them instead of keeping them as "manual"."""
    code, _, err = run(capsys, "apply-ratings", "--db", library["index"])
    assert code == ExitCode.OK, err
    from aes_index.formats import xmp

    with sqlite3.connect(library["db"]) as conn:  # what digiKam's metadata reader does
        for path in library["stars"]:
            rating = xmp.read_sidecar(xmp.sidecar_for(Path(path))).rating
            name = Path(path).name
            if name != "IMG_0000.jpg":  # a person's rating in digiKam stays
                conn.execute("UPDATE ImageInformation SET rating = ? WHERE imageid = (SELECT id FROM Images WHERE name = ?)", [rating, name])
    code, report, err = sync(capsys, library, "--cuts", "40,60,80,90")
    assert code == ExitCode.OK, err
    assert report["skipped_manual"] == 1 and report["manual"][0]["path"].endswith(f"#{1}")


def test_a_photo_rejected_in_darktable_gets_no_stars_in_digikam(library, capsys):
    """Issue 15 item 15: the sidecar says -1 (darktable's reject); digiKam stores that as
    "no rating", which must not read as unrated: the person's reject is kept."""
    from aes_index.formats import xmp

    rejected = library["root"] / "2024" / "IMG_0003.jpg"
    xmp.write_sidecar(xmp.sidecar_for(rejected), rating=-1)
    code, report, err = sync(capsys, library)
    assert code == ExitCode.OK, err
    assert ratings(library["db"])["IMG_0003.jpg"] == -1  # still "no rating" in digiKam
    assert any(m["rating"] == -1 for m in report["manual"])


def test_dry_run_writes_nothing(library, capsys):
    digest = hashlib.sha256(library["db"].read_bytes()).hexdigest()
    code, report, err = sync(capsys, library, "--dry-run")
    assert code == ExitCode.OK, err
    assert report["dry_run"] and report["written_total"] == 7 and report["run_id"] is None
    assert hashlib.sha256(library["db"].read_bytes()).hexdigest() == digest
    assert backups(library["db"]) == []
    with Index(library["index"]) as index:
        assert index_rows.count(index, "rating_writes") == 0


def test_undo_puts_ratings_and_tags_back(library, capsys):
    before = ratings(library["db"])
    _, report, _ = sync(capsys, library)
    with sqlite3.connect(library["db"]) as conn:  # a person re-rates one of ours afterwards
        conn.execute("UPDATE ImageInformation SET rating = 0 WHERE imageid = (SELECT id FROM Images WHERE name = 'IMG_0002.jpg')")

    code, out, err = run(capsys, "digikam", "undo", "--db", library["db"], "--index", library["index"], "--json")
    assert code == ExitCode.OK, err
    statuses = sorted(result["status"] for result in json.loads(out)["results"])
    assert statuses == ["kept-manual"] + ["restored"] * 7  # six photos, and the tags the sync created

    after = ratings(library["db"])
    assert after == {**before, "IMG_0001.jpg": -1, "IMG_0002.jpg": 0}  # no row before: now "no rating"
    assert aesthetic_tags(library["db"]) == {}
    with sqlite3.connect(library["db"]) as conn:  # the tag tree it made is gone too: nothing is tagged with it
        assert conn.execute("SELECT name FROM Tags WHERE name = 'Aesthetic' OR name LIKE '% star%'").fetchall() == []
    code, out, _ = run(capsys, "digikam", "undo", "--db", library["db"], "--index", library["index"])
    assert "nothing to undo" in out


def test_sync_refuses_while_the_database_is_locked(library, capsys):
    digikam_connection = sqlite3.connect(library["db"], isolation_level=None)
    digikam_connection.execute("BEGIN IMMEDIATE")  # digiKam in the middle of a write
    try:
        code, _, err = sync(capsys, library)
    finally:
        digikam_connection.close()
    assert code == ExitCode.INDEX and "in use" in err and err.count("\n") == 1
    assert backups(library["db"]) == []


@pytest.fixture
def digikam_process(tmp_path):
    """Start a process named "digikam" (as /proc/PID/comm shows it: Python run through a
    link of that name) that holds a given file open, as digiKam holds its database."""
    fake = tmp_path / "bin" / "digikam"
    fake.parent.mkdir()
    fake.symlink_to(os.path.realpath(sys.executable))
    started = []

    def start(held: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [str(fake), "-c", "import sys, time; f = open(sys.argv[1], 'rb'); print('open', flush=True); time.sleep(60)", str(held)],
            stdout=subprocess.PIPE, text=True,
        )
        started.append(process)
        assert process.stdout.readline().strip() == "open"  # the file is open now
        assert Path(f"/proc/{process.pid}/comm").read_text().strip() == "digikam"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_sync_refuses_while_a_digikam_has_this_database_open(library, digikam_process, capsys):
    process = digikam_process(Path(library["db"]))
    code, _, err = sync(capsys, library)
    assert code == ExitCode.INDEX and "digiKam is running" in err and str(process.pid) in err
    assert backups(library["db"]) == [] and ratings(library["db"])["top.jpg"] == -1


def test_sync_refuses_a_digikam_holding_the_database_through_another_path(library, digikam_process, capsys, tmp_path):
    link = tmp_path / "elsewhere.db"
    link.symlink_to(library["db"])  # the same file by another name
    process = digikam_process(link)
    code, _, err = sync(capsys, library)
    assert code == ExitCode.INDEX and str(process.pid) in err


def test_a_digikam_on_another_library_does_not_stop_a_sync(library, digikam_process, capsys, tmp_path):
    other = tmp_path / "other-library" / "digikam4.db"
    other.parent.mkdir()
    shutil.copyfile(library["db"], other)
    digikam_process(other)  # digiKam open on another library: none of this database's business
    code, _, err = sync(capsys, library)
    assert code == ExitCode.OK, err
    assert ratings(library["db"])["top.jpg"] != -1


def test_a_file_that_is_not_a_digikam_database_is_refused(tmp_path, capsys):
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    (tmp_path / "index.db").touch()
    code, _, err = run(capsys, "digikam", "sync", "--db", other, "--index", tmp_path / "index.db")
    assert code != ExitCode.OK and err.startswith("aes-index: ")


@pytest.mark.parametrize(
    ("identifier", "specific", "expected"),
    [
        ("volumeid:?path=%2Fhome%2Fanna%2FPictures", "/", "/home/anna/Pictures"),
        ("volumeid:?path=/home/anna/My+Photos&fileuuid=abc", "/", "/home/anna/My+Photos"),  # "+" is no space to Qt
        ("volumeid:?mountpath=%2Fmedia%2Fdisk", "/photos", "/media/disk/photos"),
        ("networkshareid:?mountpath=/nonexistent/a&mountpath=/", "/", "/"),  # the first that exists
        ("volumeid:?uuid=no-such-volume", "/photos", None),
        ("smb://server/share", "/", None),
        (None, "/", None),
    ],
)
def test_album_roots_resolve_as_digikam_resolves_them(identifier, specific, expected):
    assert digikam.album_root_path(identifier, specific) == expected
