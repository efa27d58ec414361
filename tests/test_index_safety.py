"""The index file itself: a damaged, full, foreign or old one is one line and exit 5, and
commands that only read never change the file they are given.

Raw SQL on index files is the point here: these tests damage, fill, forge (an old schema,
an unstamped file) or read the file's header (application_id, journal mode, root pages),
which no accessor does."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

from aes_index.index import store
from aes_index.errors import ExitCode, IndexUnavailable, run_reporting_errors
from aes_index.index.store import Index
from conftest import run_cli as run
from conftest import synthetic_scored_index


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scored_index(path: Path, photos: int = 5000) -> Path:
    """An index of `photos` scored rows (no files exist): ~90 pages of 16 KB."""
    return synthetic_scored_index(path, photos, folders=50, seed=3)


def overwrite_pages(path: Path, pages, seed: int = 0) -> None:
    """`dd` random bytes over whole pages (numbered from 1, as SQLite does)."""
    page_size = int.from_bytes(path.read_bytes()[16:18], "big")
    rng = np.random.default_rng(seed)
    with open(path, "r+b") as handle:
        for page in pages:
            handle.seek((page - 1) * page_size)
            handle.write(rng.bytes(page_size))


def root_page(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", [table]).fetchone()[0]


@pytest.fixture
def damaged(tmp_path) -> Path:
    path = scored_index(tmp_path / "damaged.db")
    assert path.stat().st_size > 30 * store.PAGE_SIZE
    overwrite_pages(path, range(20, 31))
    return path


# --------------------------------------------------------------------------- damaged


def test_doctor_reports_a_damaged_index_as_a_failed_check_and_exits_5(damaged, model_args, capsys):
    code, out, err = run(capsys, "doctor", "--db", damaged, *model_args)
    assert code == ExitCode.INDEX, (out, err)
    assert "internal error" not in err and err == ""
    index_line = next(line for line in out.splitlines() if "index" in line.split()[1:2])
    assert index_line.startswith("[FAIL] index") and "damaged" in index_line
    assert "restore it from a backup" in index_line and "aes-index rebuild" in index_line and "decoded again" in index_line
    assert "[ok  ] weights" in out  # the index's damage is not reported as a weights problem


def test_doctor_json_names_the_damage(damaged, model_args, capsys):
    code, out, _ = run(capsys, "doctor", "--db", damaged, *model_args, "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == ExitCode.INDEX and not checks["index"]["ok"] and checks["weights"]["ok"]


@pytest.mark.parametrize("command", [["top"], ["stats"], ["apply-ratings", "--dry-run"], ["report"]])
def test_commands_refuse_a_damaged_index_with_one_line(damaged, command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # report writes gallery.html here if it ever gets that far
    code, out, err = run(capsys, *command, "--db", damaged)
    assert code == ExitCode.INDEX, (out, err)
    assert err.count("\n") == 1 and err.startswith(f"aes-index: index {damaged} is damaged")
    assert "internal error" not in err and "restore it from a backup" in err


def test_a_damaged_page_met_while_reading_is_exit_5(tmp_path, capsys, monkeypatch):
    """Above CHECK_ON_OPEN_BYTES nothing is checked at opening: a damaged page the command
    reads raises inside SQLite, and that too becomes one line and exit 5."""
    path = scored_index(tmp_path / "big.db")
    overwrite_pages(path, [root_page(path, "scores")])
    monkeypatch.setattr(store, "CHECK_ON_OPEN_BYTES", 0)
    code, out, err = run(capsys, "top", "--db", path)
    assert code == ExitCode.INDEX, (out, err)
    assert err.count("\n") == 1 and "is damaged" in err and "internal error" not in err


def test_every_module_of_the_store_counts_as_the_index_s_code():
    """An SQLite error raised in any of the store's modules is the index's (one line, exit 5):
    a new accessor module counts without being listed by hand somewhere else."""
    package = Path(store.__file__).parent
    assert {os.path.abspath(module) for module in package.glob("*.py")} == set(store._INDEX_CODE)


def test_sqlite_errors_of_another_database_are_not_blamed_on_the_index(tmp_path):
    other = sqlite3.connect(tmp_path / "other.db")
    with pytest.raises(sqlite3.IntegrityError):
        with Index(tmp_path / "index.db"):
            other.execute("CREATE TABLE t (x UNIQUE)")
            other.execute("INSERT INTO t VALUES (1), (1)")
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        with Index(tmp_path / "index.db"):
            raise sqlite3.OperationalError("database is locked")  # raised here, not by the index's SQL


# --------------------------------------------------------------------------- disk full


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MB tmpfs (root only): skipped where mounting is not permitted."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_under_the_index_is_one_line_and_exit_5(tiny_disk, capsys):
    path = tiny_disk / "index.db"
    Index(path).close()

    def fill_the_index() -> int:
        with Index(path) as index, index.transaction():
            index.db.conn.executemany(
                "INSERT INTO images (path, status) VALUES (?, 'ok')", [(f"/p/{i:09d}" * 8,) for i in range(50_000)]
            )
        return ExitCode.OK

    code = run_reporting_errors("aes-index", fill_the_index)
    err = capsys.readouterr().err
    assert code == ExitCode.INDEX, err
    assert err.count("\n") == 1 and err.startswith(f"aes-index: no space left for index {path}") and "internal error" not in err


def test_a_full_disk_when_the_index_is_created_is_one_line_and_exit_5(tiny_disk, library, model_args, capsys):
    with open(tiny_disk / "filler", "wb") as filler:
        try:
            filler.write(b"\0" * (1 << 20))
        except OSError:  # No space left: just what we want
            pass
    code, out, err = run(capsys, "rebuild", library, "--db", tiny_disk / "index.db", *model_args)
    assert code == ExitCode.INDEX and err.count("\n") == 1 and "internal error" not in err


def test_no_space_for_a_file_of_the_index_is_exit_5(tmp_path):
    path = tmp_path / "index.db"
    with pytest.raises(IndexUnavailable, match="no space left for index"):
        with Index(path):
            raise OSError(28, "No space left on device", f"{path}.writer.lock")
    with pytest.raises(OSError):  # a photo's or a sidecar's file: not the index's business
        with Index(path):
            raise OSError(28, "No space left on device", str(tmp_path / "IMG_0001.xmp"))


# --------------------------------------------------------------------------- not an index


def foreign_database(path: Path) -> Path:
    """Another program's SQLite file (rollback journal, as most are)."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.execute("INSERT INTO notes (text) VALUES ('keep me')")
    return path


def digikam_like_database(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        for table in ("AlbumRoots", "Albums", "Images", "ImageInformation", "Tags", "ImageTags", "Settings"):
            conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO Settings (name) VALUES ('DBVersion')")
        conn.execute("PRAGMA user_version = 16")
    return path


COMMANDS = {
    "stats": ["stats"], "top": ["top"], "doctor": ["doctor"], "rebuild": ["rebuild", "{library}"],
    "apply-ratings": ["apply-ratings", "--dry-run"], "rescore": ["rescore"],
}


@pytest.mark.parametrize("make", [foreign_database, digikam_like_database])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_another_programs_database_is_refused_and_left_byte_for_byte(make, command, library, model_args, capsys, tmp_path):
    path = make(tmp_path / "theirs.sqlite")
    before, files_before = sha256(path), sorted(os.listdir(tmp_path))
    argv = [a.format(library=library) for a in COMMANDS[command]]
    code, out, err = run(capsys, *argv, "--db", path, *model_args)
    assert code == ExitCode.INDEX, (out, err)
    message = out if command == "doctor" else err
    assert f"{path} is not an aes-index index (it holds tables " in message and "pass --db with an aes-index index" in message
    assert "AlbumRoots" in message if make is digikam_like_database else "notes" in message
    assert sha256(path) == before and sorted(os.listdir(tmp_path)) == files_before  # no -wal, no -shm either


def test_an_empty_file_is_a_new_index(tmp_path):
    path = tmp_path / "new.db"
    path.touch()
    with Index(path) as index:
        assert index.schema_version() == store.SCHEMA_VERSION


# --------------------------------------------------------------------------- read-only


def test_reading_commands_leave_an_index_byte_for_byte_and_in_its_journal_mode(tmp_path, capsys):
    path = scored_index(tmp_path / "index.db", photos=50)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    before, files_before = sha256(path), sorted(os.listdir(tmp_path))
    for argv in (["stats"], ["top", "-n", "3"], ["top", "--worst"]):
        code, out, err = run(capsys, *argv, "--db", path)
        assert code == ExitCode.OK, (argv, err)
    assert sha256(path) == before and sorted(os.listdir(tmp_path)) == files_before
    assert path.read_bytes()[18:20] == b"\x01\x01"  # the header's "rollback journal", not WAL (2)


def test_a_dry_run_and_the_gallery_leave_the_index_byte_for_byte(tmp_path, capsys):
    """apply-ratings --dry-run, digikam sync --dry-run's reading and report only read."""
    path = scored_index(tmp_path / "index.db", photos=50)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    before = sha256(path)
    code, _, err = run(capsys, "apply-ratings", "--dry-run", "--db", path)
    assert code in (ExitCode.OK, ExitCode.FILE_ERRORS), err  # the photos don't exist: errors, nothing else
    (tmp_path / "out").mkdir()
    code, _, err = run(capsys, "report", "--db", path, "--out", tmp_path / "out" / "g.html")
    assert code == ExitCode.OK and (tmp_path / "out" / "g.html").is_file(), err
    assert sha256(path) == before and path.read_bytes()[18:20] == b"\x01\x01"


def test_reading_commands_work_on_a_wal_index_a_writer_holds(tmp_path, capsys):
    path = scored_index(tmp_path / "index.db", photos=50)
    with Index(path) as writer:  # keeps the -wal and -shm open, with an uncheckpointed write
        writer.set_meta("note", "written, not yet checkpointed")
        code, out, err = run(capsys, "stats", "--db", path, "--json")
        assert code == ExitCode.OK, err
        assert json.loads(out)["images"] == {"ok": 50}
        with Index(path, read_only=True) as reader:
            assert reader.get_meta("note") == "written, not yet checkpointed"


def schema_1_index(path: Path) -> Path:
    import sqlite_utils

    db = sqlite_utils.Database(path)
    store.schema._migrate_to_1(db)
    db.execute("INSERT INTO images (id, path, status) VALUES (1, '/p/1.jpg', 'ok')")
    db.execute("PRAGMA user_version = 1")
    db.conn.commit()
    db.conn.close()
    return path


def test_reading_commands_do_not_upgrade_an_old_index_and_say_what_will(tmp_path, capsys, model_args):
    path = schema_1_index(tmp_path / "old.db")
    before = sha256(path)
    for argv in (["stats"], ["top"]):
        code, out, err = run(capsys, *argv, "--db", path)
        assert code == ExitCode.INDEX and err.count("\n") == 1
        assert "older than this aes-index's" in err and "`aes-index rebuild`" in err
    code, out, err = run(capsys, "doctor", "--db", path, *model_args)
    assert code == ExitCode.INDEX and "[FAIL] index" in out and "to upgrade it" in out
    assert sha256(path) == before
    with Index(path) as index:  # a writing open upgrades it, and stamps it
        assert index.schema_version() == store.SCHEMA_VERSION and index.images.get(1)["path"] == "/p/1.jpg"
        assert index.db.execute("PRAGMA application_id").fetchone()[0] == store.APPLICATION_ID


def test_new_indexes_are_stamped_and_readers_do_not_stamp(tmp_path):
    with Index(tmp_path / "new.db") as index:
        assert index.db.execute("PRAGMA application_id").fetchone()[0] == store.APPLICATION_ID
    path = scored_index(tmp_path / "unstamped.db", photos=5)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA application_id = 0")  # as made before the stamp existed
    before = sha256(path)
    with Index(path, read_only=True) as index:
        assert index.db.execute("PRAGMA application_id").fetchone()[0] == 0
    assert sha256(path) == before
    with Index(path) as index:
        assert index.db.execute("PRAGMA application_id").fetchone()[0] == store.APPLICATION_ID


def test_a_read_only_index_can_be_written_by_nothing(tmp_path):
    path = scored_index(tmp_path / "index.db", photos=5)
    with pytest.raises(IndexUnavailable, match="cannot write index"):
        with Index(path, read_only=True) as index:
            index.set_meta("x", 1)


def test_a_reader_needs_an_index_that_exists(tmp_path):
    with pytest.raises(IndexUnavailable, match="no index at"):
        Index(tmp_path / "absent.db", read_only=True)
    assert not (tmp_path / "absent.db").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_a_wal_index_in_a_read_only_folder_is_read(tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    path = scored_index(folder / "index.db", photos=5)  # closed: no -wal, no -shm left
    folder.chmod(0o555)
    try:
        with Index(path, read_only=True) as index:
            assert index.images.status_counts() == {"ok": 5}
    finally:
        folder.chmod(0o755)
