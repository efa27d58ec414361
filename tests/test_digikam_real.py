"""The real digiKam (Debian's digikam 7.9) reads the XMP sidecars aes-index wrote.

digiKam runs under Xvfb with a throw-away HOME: a pre-seeded digikamrc (an "Album Settings"
group, so no first-run wizard; SQLite in the test's folder; "Use XMP Sidecar For Reading")
and a digikam4.db made from the installed digiKam's own schema
(/usr/share/digikam/database/dbconfig.xml) holding one album root, the test's photo folder.
digiKam 7.9 refuses to start on a configured SQLite folder without its core database, and
asks for a collection when the database has none: hence both are made here. It scans the
folder at startup ("Scan At Start"); its face-engine download dialog shows, but does not
hold up the scan. The test polls digikam4.db (read-only) until every photo is in and the
database stops changing, then kills digiKam's and Xvfb's process groups. Every step has a
hard timeout, so the test never hangs.

Needs the Debian packages digikam and xvfb (.ci/apt-packages). In CI (env CI set) a missing
tool fails the test; elsewhere it is skipped.
"""

from __future__ import annotations

import os
import shutil
import select
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

import defusedxml.ElementTree as ET
import pytest

from aes_index.targets import digikam_db as digikam
from aes_index.formats.xmp import DIGIKAM_NS, AesFields, write_sidecar
from conftest import FIXTURES, make_photo
from test_readers import require_tool as _tool

pytestmark = [pytest.mark.external, pytest.mark.slow]

DARKTABLE_SIDECAR = FIXTURES / "darktable-xmp" / "evening-glow-folk-toto.jpg.xmp"  # the user's tags: Folk, toto
DBCONFIG = Path("/usr/share/digikam/database/dbconfig.xml")  # from digikam-data
SCHEMA_ACTIONS = ("CreateDB", "CreateIndices", "CreateTriggers")
CORE_SCHEMA_VERSION = "15"  # dbconfig.xml of digiKam 7.9 updates the core schema up to V15
INTERNAL_TAGS = "_Digikam_Internal_Tags_"
DIGIKAM_TIMEOUT_S = 120  # digiKam's start, scan and settling
XVFB_TIMEOUT_S = 30
SETTLE_S = 2.0  # the database did not change for this long: digiKam is done with our photos
POLL_S = 0.5


# --------------------------------------------------------------------------- digiKam's library


def create_digikam_db(db: Path, photos: Path) -> None:
    """digikam4.db from the installed digiKam's schema, with `photos` as its only collection."""
    if not DBCONFIG.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{DBCONFIG} is missing: CI installs digikam")
        pytest.skip(f"{DBCONFIG} is missing (digikam-data not installed) and CI is unset")
    sqlite = ET.parse(DBCONFIG).getroot().find("database[@name='QSQLITE']")
    assert sqlite.find(f".//dbaction[@name='UpdateSchemaFromV{int(CORE_SCHEMA_VERSION) - 1}ToV{CORE_SCHEMA_VERSION}']") is not None
    assert sqlite.find(f".//dbaction[@name='UpdateSchemaFromV{CORE_SCHEMA_VERSION}ToV{int(CORE_SCHEMA_VERSION) + 1}']") is None
    with closing(sqlite3.connect(db)) as conn, conn:
        for name in SCHEMA_ACTIONS:
            for statement in sqlite.find(f".//dbaction[@name='{name}']").findall("statement"):
                conn.execute(statement.text)
        conn.executemany(
            "INSERT INTO Settings (keyword, value) VALUES (?, ?)",
            [("DBVersion", CORE_SCHEMA_VERSION), ("DBVersionRequired", CORE_SCHEMA_VERSION)],
        )
        # a plain folder as QUrl writes it: digiKam does not decode "%2F" in the path here
        identifier = "volumeid:?path=" + quote(str(photos), safe="/")
        conn.execute(
            "INSERT INTO AlbumRoots (id, label, status, type, identifier, specificPath) VALUES (1, 'Photos', 0, 1, ?, '/')",
            [identifier],
        )


def write_digikamrc(home: Path, db_dir: Path) -> None:
    config = home / ".config" / "digikamrc"
    config.parent.mkdir(parents=True)
    folder = f"{db_dir}/"
    config.write_text(
        "[Album Settings]\n"  # its existence skips the first-run wizard
        "Scan At Start=true\n"
        "\n[Database Settings]\n"
        "Database Type=QSQLITE\n"
        f"Database Name={folder}\nDatabase Name Thumbnails={folder}\n"
        f"Database Name Face={folder}\nDatabase Name Similarity={folder}\n"
        "\n[Metadata Settings]\n"
        "Use XMP Sidecar For Reading=true\n"
    )


def snapshot(db: Path) -> dict[str, dict]:
    """Per photo name: digiKam's image id, ImageInformation.rating and full tag paths (internal tags left out)."""
    with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)) as conn:
        tags = {tag_id: (pid, name) for tag_id, pid, name in conn.execute("SELECT id, pid, name FROM Tags")}

        def path(tag_id: int) -> str:
            names = []
            while tag_id in tags:
                tag_id, name = tags[tag_id]
                names.append(name)
            return "/".join(reversed(names))

        photos = {}
        for image_id, name in conn.execute("SELECT id, name FROM Images"):
            rating = conn.execute("SELECT rating FROM ImageInformation WHERE imageid = ?", [image_id]).fetchone()
            paths = [path(row[0]) for row in conn.execute("SELECT tagid FROM ImageTags WHERE imageid = ?", [image_id])]
            photos[name] = {
                "id": image_id,
                "rating": rating[0] if rating else None,
                "tags": sorted(p for p in paths if not p.startswith(INTERNAL_TAGS)),
            }
        return photos


def _screenshot(display: str, out: Path) -> str:
    try:
        from PIL import ImageGrab

        ImageGrab.grab(xdisplay=display).save(out)
        return f" (screenshot: {out})"
    except Exception as error:  # only a debugging aid
        return f" (no screenshot: {error})"


def run_digikam(workdir: Path, photos: Path, names: set[str]) -> dict[str, dict]:
    """Start digiKam on `photos`, wait until it has read `names` and settled; its database's view of them.

    A second call with the same `workdir` starts digiKam again on the database the first
    one left (and what was written into it since)."""
    xvfb = _tool("Xvfb")
    digikam_bin = _tool("digikam")
    home, db_dir = workdir / "home", workdir / "db"
    db = db_dir / "digikam4.db"
    if not db.exists():
        db_dir.mkdir(parents=True)
        create_digikam_db(db, photos)
        write_digikamrc(home, db_dir)
    runtime = workdir / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    log_path = workdir / "digikam.log"
    processes: list[subprocess.Popen] = []  # each the leader of its own process group
    try:
        with log_path.open("w") as log:
            display = start_xvfb(xvfb, log, processes)
            env = {
                **os.environ,
                "HOME": str(home),
                "XDG_CONFIG_HOME": str(home / ".config"),
                "XDG_DATA_HOME": str(home / ".local" / "share"),
                "XDG_CACHE_HOME": str(home / ".cache"),
                "XDG_RUNTIME_DIR": str(runtime),
                "DISPLAY": display,
                "QTWEBENGINE_DISABLE_SANDBOX": "1",  # CI runs as root
            }
            env.pop("DBUS_SESSION_BUS_ADDRESS", None)  # never the developer's session
            digikam_process = subprocess.Popen(
                [digikam_bin], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=workdir, start_new_session=True,
            )
            processes.append(digikam_process)
            return wait_for_scan(db, names, digikam_process, display, workdir, log_path)
    finally:
        for process in reversed(processes):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=30)


def start_xvfb(xvfb: str, log, processes: list[subprocess.Popen]) -> str:
    """Xvfb on a free display (it picks one: -displayfd); the display name."""
    read_end, write_end = os.pipe()
    try:
        processes.append(subprocess.Popen(
            [xvfb, "-displayfd", str(write_end), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, pass_fds=[write_end], start_new_session=True,
        ))
        os.close(write_end)
        write_end = None
        answer, deadline = b"", time.monotonic() + XVFB_TIMEOUT_S
        while not answer.endswith(b"\n") and time.monotonic() < deadline:  # it writes "N", then "\n"
            ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(read_end, 64) if ready else b""
            if not chunk:
                break  # gave up, or Xvfb ended
            answer += chunk
        number = answer.decode().strip()
    finally:
        os.close(read_end)
        if write_end is not None:
            os.close(write_end)
    if not number.isdigit():
        pytest.fail(f"Xvfb gave no display within {XVFB_TIMEOUT_S} s")
    return f":{number}"


def wait_for_scan(db: Path, names: set[str], process: subprocess.Popen, display: str, workdir: Path, log_path: Path) -> dict[str, dict]:
    """Poll digikam4.db until `names` all have an ImageInformation row and nothing changed for SETTLE_S."""
    deadline = time.monotonic() + DIGIKAM_TIMEOUT_S
    seen, last, stable_since = None, None, None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"digiKam exited ({process.returncode}) early: {log_path.read_text()[-3000:]}")
        time.sleep(POLL_S)
        try:
            seen = snapshot(db)
        except sqlite3.OperationalError:  # locked mid-write: ask again
            continue
        ready = names <= seen.keys() and all(seen[n]["rating"] is not None for n in names)
        if not ready or seen != last:
            last, stable_since = seen, time.monotonic()
        elif time.monotonic() - stable_since >= SETTLE_S:
            return seen
    shot = _screenshot(display, workdir / "timeout.png")
    pytest.fail(
        f"digiKam did not read {sorted(names)} within {DIGIKAM_TIMEOUT_S} s; its database shows {seen}{shot}; "
        f"log: {log_path.read_text()[-3000:]}"
    )


@pytest.fixture(scope="module")
def read_by_digikam(tmp_path_factory) -> dict:
    """Three photos with darktable sidecars, as digiKam stored them after its startup scan.

    tagged.jpg: the real darktable sidecar (tags Folk and toto, rating 1) after aes-index
    wrote rating 3 and its tag "3 stars" into it. rejected.jpg: the same darktable sidecar
    with darktable's reject, xmp:Rating -1, untouched by aes-index. before-fix.jpg: like
    tagged.jpg, plus the digiKam:TagsList aes-index created there before the fix.
    """
    workdir = tmp_path_factory.mktemp("digikam-real")
    photos = workdir / "Photos"
    make_photo(photos / "tagged.jpg", seed=1)
    make_photo(photos / "rejected.jpg", seed=2)

    tagged = photos / "tagged.jpg.xmp"
    shutil.copyfile(DARKTABLE_SIDECAR, tagged)  # copyfile: a writable copy, whatever the checkout's modes
    write_sidecar(tagged, rating=3, aes=AesFields(score=5.0, percentile=50.0, head_id="h", stars=3), tags=["3 stars"])

    original = DARKTABLE_SIDECAR.read_text()
    assert original.count('xmp:Rating="1"') == 1
    (photos / "rejected.jpg.xmp").write_text(original.replace('xmp:Rating="1"', 'xmp:Rating="-1"'))

    # what aes-index wrote before the fix: a digiKam:TagsList of its own beside darktable's tags
    make_photo(photos / "before-fix.jpg", seed=3)
    assert original.count('xmlns:lr="') == 1 and original.count("</rdf:Description>") == 1
    (photos / "before-fix.jpg.xmp").write_text(
        original.replace('xmlns:lr="', f'xmlns:digiKam="{DIGIKAM_NS}"\n    xmlns:lr="').replace(
            "</rdf:Description>", "<digiKam:TagsList><rdf:Seq/></digiKam:TagsList>\n  </rdf:Description>"
        )
    )
    write_sidecar(photos / "before-fix.jpg.xmp", rating=3, aes=AesFields(score=5.0, percentile=50.0, head_id="h", stars=3), tags=["3 stars"])
    assert "<rdf:li>Aesthetic/3 stars</rdf:li>" in (photos / "before-fix.jpg.xmp").read_text()

    seen = run_digikam(workdir / "run", photos, {"tagged.jpg", "rejected.jpg", "before-fix.jpg"})
    return {"seen": seen, "db": workdir / "run" / "db" / "digikam4.db", "photos": photos}


# --------------------------------------------------------------------------- tests


def test_digikam_keeps_the_darktable_tags_beside_ours_and_reads_our_rating(read_by_digikam):
    """Issue item 12: no digiKam:TagsList of ours hides the user's lr:hierarchicalSubject tags."""
    tagged = read_by_digikam["seen"]["tagged.jpg"]
    assert tagged["tags"] == ["Aesthetic/3 stars", "Folk", "toto"], tagged
    assert tagged["rating"] == 3, tagged
    assert "TagsList" not in (read_by_digikam["photos"] / "tagged.jpg.xmp").read_text()
    # the sidecar aes-index wrote before the fix: digiKam reads its TagsList and nothing else
    before_fix = read_by_digikam["seen"]["before-fix.jpg"]
    assert before_fix["tags"] == ["Aesthetic/3 stars"] and before_fix["rating"] == 3, before_fix
    with closing(sqlite3.connect(f"{read_by_digikam['db'].as_uri()}?mode=ro", uri=True)) as conn:
        # aes-index reads back what digiKam stored: its own tag, its own stars
        assert digikam.our_tags(conn, tagged["id"]) == ["Aesthetic/3 stars"]
        assert digikam.rating_of(conn, tagged["id"]) == 3
        images = {Path(image.path).name: image.path for image in digikam.digikam_images(conn)}
    # and resolves digiKam's album root to the real folder
    assert images["tagged.jpg"] == str(read_by_digikam["photos"] / "tagged.jpg")


def test_digikam_stores_a_darktable_reject_as_no_rating(read_by_digikam):
    """Issue item 15: digiKam has no rejected rating; a sidecar's xmp:Rating -1 becomes "none" (-1).

    So DigikamTarget.read cannot see the reject in the database (rating_of gives None) and
    must take it from the sidecar, as a person's rating.
    """
    rejected = read_by_digikam["seen"]["rejected.jpg"]
    assert rejected["rating"] == digikam.NO_RATING == -1, rejected
    assert rejected["tags"] == ["Folk", "toto"], rejected  # the sidecar was read all the same
    with closing(sqlite3.connect(f"{read_by_digikam['db'].as_uri()}?mode=ro", uri=True)) as conn:
        assert digikam.rating_of(conn, rejected["id"]) is None
