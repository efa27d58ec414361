"""Rough edges of the `aes-index` CLI a tester found: each test fails on the code before its fix."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from aes_index.cli import main
from aes_index.errors import ExitCode

from conftest import make_photo


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("aes-index: ") and "Traceback" not in err and "internal error" not in err


@pytest.fixture
def small_library(tmp_path) -> Path:
    root = tmp_path / "Pictures"
    for i in range(3):
        make_photo(root / "2024" / f"IMG_{i}.jpg", seed=i)
    return root


# --- 12: NAS recycle bins and snapshots are not photos -----------------------------------


def test_nas_recycle_and_snapshot_folders_are_skipped(tmp_path):
    from aes_index.index.discover import discover

    root = tmp_path / "share"
    make_photo(root / "keep.jpg", seed=1)
    for clutter in ("@Recycle", "#recycle", "@Recently-Snapshot", ".@__thumb", "@eaDir"):
        make_photo(root / clutter / "IMG_1.jpg", seed=2)
    assert [os.path.basename(e.path) for e in discover([root])] == ["keep.jpg"]


# --- 6: a config file named on the command line must exist ------------------------------


def test_missing_config_file_named_explicitly_is_an_error(capsys, tmp_path):
    code, out, err = run(capsys, "stats", "--config", tmp_path / "missing.toml", "--db", tmp_path / "none.db")
    assert code == ExitCode.USAGE and one_line_error(err) and "missing.toml" in err


def test_missing_default_config_file_is_fine(capsys, tmp_path):
    code, out, err = run(capsys, "stats", "--db", tmp_path / "none.db")
    assert code == ExitCode.INDEX  # got as far as the index: the absent default config was no error


# --- 7: numbers out of range are refused, one line, exit 2 --------------------------------


@pytest.mark.parametrize("option, value, words", [
    ("--batch-size", "-3", "--batch-size must be 1 or more"),
    ("--workers", "-5", "workers"),
    ("--workers", "many", "workers"),
])
def test_negative_batch_size_and_workers_are_refused(capsys, tmp_path, option, value, words):
    code, out, err = run(capsys, "rebuild", tmp_path, option, value)
    assert code == ExitCode.USAGE and one_line_error(err) and words in err and value in err


def test_zero_batch_size_and_auto_workers_are_allowed():
    from aes_index.cli import build_parser, settings_from, COMMON_DEFAULTS

    args = build_parser().parse_args(["rebuild", "--batch-size", "0", "--workers", "auto"])
    for name, default in COMMON_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    settings = settings_from(args)
    assert settings.batch_size == 0 and settings.workers == -1  # both: pick by the machine


def test_treat_as_unrated_outside_the_star_range_is_refused(capsys, tmp_path):
    code, out, err = run(capsys, "apply-ratings", "--treat-as-unrated", "7", "--db", tmp_path / "none.db")
    assert code == ExitCode.USAGE and one_line_error(err) and "-1" in err and "5" in err and "7" in err


@pytest.fixture
def indexed_library(small_library, model_args, capsys) -> Path:
    make_photo(small_library / "evil\nname\x1b[31m.jpg", seed=7)
    code, out, err = run(capsys, "rebuild", small_library, *model_args, "--workers", "0", "-q")
    assert code == ExitCode.OK, err
    return small_library


# --- 4: `top` prints one line per photo and wants a positive count ------------------------


def test_top_escapes_control_characters_in_names(indexed_library, capsys):
    code, out, err = run(capsys, "top", "--db", indexed_library / ".aes-index.db")
    assert code == ExitCode.OK and len(out.splitlines()) == 4
    assert "evil\\nname\\x1b[31m.jpg" in out and "\x1b" not in out
    code, out, err = run(capsys, "top", "--db", indexed_library / ".aes-index.db", "--json")
    assert any(p["path"].endswith("evil\nname\x1b[31m.jpg") for p in json.loads(out)["photos"])  # JSON: the real name


@pytest.mark.parametrize("count", ["-5", "0"])
def test_top_refuses_a_count_below_one(indexed_library, capsys, count):
    code, out, err = run(capsys, "top", "-n", count, "--db", indexed_library / ".aes-index.db")
    assert code == ExitCode.USAGE and one_line_error(err) and count in err and out == ""


# --- 5: `score` of a folder points to `rebuild` -------------------------------------------


def test_score_of_a_folder_says_use_rebuild(small_library, capsys):
    code, out, err = run(capsys, "score", small_library / "2024")
    assert code == ExitCode.USAGE and one_line_error(err)
    assert "is a folder" in err and f"rebuild {small_library / '2024'}" in err


# --- 8: a folder as --out, and an absurd zero-shot spec, are one readable line -------------


def test_report_out_must_name_a_page_in_a_folder(capsys, tmp_path):
    """A folder as --out, or a page below a file, is refused in one line; a folder that
    does not exist yet is made by report (tests/test_gallery_output.py)."""
    code, out, err = run(capsys, "report", "--out", "/", "--db", tmp_path / "none.db")
    assert code == ExitCode.USAGE and one_line_error(err) and "folder" in err
    (tmp_path / "afile").write_text("x")
    code, out, err = run(capsys, "report", "--out", tmp_path / "afile" / "g.html", "--db", tmp_path / "none.db")
    assert code == ExitCode.USAGE and one_line_error(err) and "afile" in err and "not a folder" in err


def test_very_long_zero_shot_spec_is_refused(indexed_library, model_args, capsys):
    spec = "zeroshot:fixed:" + "a" * 5000 + "/ugly"
    code, out, err = run(capsys, "rescore", "--db", indexed_library / ".aes-index.db", *model_args, "--head", spec)
    assert code == ExitCode.USAGE and one_line_error(err) and len(err) < 300


# --- 2, 3: the watcher: Ctrl-C exits 130; status of a stopped one; what counts as scored ----


def _wait_until(condition, timeout=120.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_watch_stopped_by_ctrl_c_exits_130(small_library, model_args, capsys, tmp_path):
    import signal
    import threading

    from aes_index.features.watch import read_status

    db = tmp_path / "index.db"

    def interrupt_once_idle():
        _wait_until(lambda: (read_status(db) or {}).get("state") == "idle")
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_idle, daemon=True).start()
    previous = signal.getsignal(signal.SIGINT)
    code, out, err = run(capsys, "watch", small_library, "--db", db, *model_args, "--workers", "0", "--no-rate")
    assert code == ExitCode.INTERRUPTED and "stopped after scoring 3 photos" in err
    assert signal.getsignal(signal.SIGINT) is previous  # the handler is put back


def test_status_of_a_stopped_watcher_and_last_scored_is_a_scored_file(tmp_path, settings, capsys):
    import threading

    from aes_index.features.watch import WatchConfig, Watcher, read_status

    root = tmp_path / "lib"
    make_photo(root / "a_good.jpg", seed=1)
    (root / "z_broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)  # decoded after a_good, fails
    db = tmp_path / "index.db"
    stop = threading.Event()
    watcher = Watcher(db, [str(root)], settings, WatchConfig(stable_seconds=0, tick=0.05))
    thread = threading.Thread(target=watcher.run, args=(stop,))
    thread.start()
    try:
        _wait_until(lambda: (read_status(db) or {}).get("state") == "idle")
        running = read_status(db)
        assert running["errors"] == 1 and running["last_scored"].endswith("a_good.jpg")
        code, out, err = run(capsys, "status", "--db", db)
        assert "uptime" in out and "running" in out
    finally:
        stop.set()
        thread.join(timeout=60)
    code, out, err = run(capsys, "status", "--db", db)
    assert code == ExitCode.OK and "stopped at " in out and "uptime" not in out and "a_good.jpg" in out
    code, out, err = run(capsys, "status", "--db", db, "--json")
    data = json.loads(out)
    assert data["running"] is False and "uptime_seconds" not in data and data["stopped"] >= data["started"]


# --- 1: a read-only library without --db says to pass --db --------------------------------


@pytest.fixture
def read_only_library(small_library, tmp_path):
    """The library seen through a read-only bind mount: as root, permissions alone don't
    stop writes, a read-only mount does."""
    view = tmp_path / "ro-view"
    view.mkdir()
    if os.geteuid() != 0:
        small_library.chmod(0o555)
        yield small_library
        small_library.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(small_library), str(view)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a read-only bind mount here")
        yield view
    finally:
        subprocess.run(["umount", str(view)], capture_output=True)


def test_rebuild_of_a_read_only_library_says_pass_db(read_only_library, model_args, capsys, tmp_path):
    code, out, err = run(capsys, "rebuild", read_only_library, *model_args, "--workers", "0")
    assert code == ExitCode.INDEX and one_line_error(err)
    assert f"cannot create the index in {read_only_library} (read-only): pass --db PATH to keep it elsewhere" in err
    code, out, err = run(capsys, "rebuild", read_only_library, *model_args, "--workers", "0", "--db", tmp_path / "elsewhere.db", "-q")
    assert code == ExitCode.OK, err


# --- 10: a subfolder of an indexed library uses the library's index ------------------------


def test_rebuild_of_a_subfolder_uses_the_librarys_index(small_library, model_args, capsys, caplog):
    import logging

    code, out, err = run(capsys, "rebuild", small_library, *model_args, "--workers", "0", "-q")
    assert code == ExitCode.OK, err
    make_photo(small_library / "2024" / "IMG_new.jpg", seed=9)
    with caplog.at_level(logging.INFO, logger="aes_index.notice"):
        code, out, err = run(capsys, "rebuild", small_library / "2024", *model_args, "--workers", "0", "--json")
    assert code == ExitCode.OK and json.loads(out)["decoded"] == 1
    assert not (small_library / "2024" / ".aes-index.db").exists()
    assert f"using the library's index {small_library / '.aes-index.db'}" in caplog.text
    code, out, err = run(capsys, "rebuild", small_library, *model_args, "--workers", "0", "--json")  # no photo twice
    assert code == ExitCode.OK and json.loads(out)["files"] == 4
    code, out, err = run(capsys, "rebuild", *model_args, "--workers", "0", "--json", "--db", small_library / ".aes-index.db")
    assert code == ExitCode.OK and json.loads(out)["files"] == 4


# --- 13: --exclude is remembered by the index ----------------------------------------------


def test_exclude_is_remembered_and_replaced(small_library, model_args, capsys):
    make_photo(small_library / "drafts-2024" / "IMG_d.jpg", seed=20)
    make_photo(small_library / "2024" / "draft_1.jpg", seed=21)
    options = [*model_args, "--workers", "0", "--json"]
    code, out, err = run(capsys, "rebuild", small_library, "--exclude", "draft*", *options)
    assert json.loads(out)["files"] == 3  # folder and file names both match the glob
    code, out, err = run(capsys, "rebuild", small_library, *options)
    assert json.loads(out)["files"] == 3  # remembered
    code, out, err = run(capsys, "score", small_library / "2024" / "draft_1.jpg", "--db", small_library / ".aes-index.db", *options)
    assert code == ExitCode.FILE_ERRORS and "draft*" in json.loads(out)[0]["error"]
    code, out, err = run(capsys, "rebuild", small_library, "--exclude", "IMG_0*", *options)
    assert json.loads(out)["files"] == 4  # replaced: drafts back in, IMG_0.jpg out
    code, out, err = run(capsys, "rebuild", small_library, "--exclude", "", *options)
    assert json.loads(out)["files"] == 5  # an empty pattern forgets them


# --- 11: a file symlink leading out of the library is read, never written through ----------


def test_file_symlink_outside_the_library_is_never_written(small_library, model_args, capsys, tmp_path):
    outside = tmp_path / "elsewhere"
    original = make_photo(outside / "theirs.jpg", seed=30)
    before = original.read_bytes()
    (small_library / "2024" / "link.jpg").symlink_to(original)
    (small_library / "linked-folder").symlink_to(outside, target_is_directory=True)  # folder links: not followed
    db = small_library / ".aes-index.db"
    code, out, err = run(capsys, "rebuild", small_library, *model_args, "--workers", "0", "--json")
    assert json.loads(out)["files"] == 4  # the three photos and the file link; not the folder link
    for target in ("exif", "xmp"):
        code, out, err = run(capsys, "apply-ratings", "--db", db, "--target", target, "--json")
        assert code in (ExitCode.OK, ExitCode.FILE_ERRORS), err
    assert original.read_bytes() == before and sorted(p.name for p in outside.iterdir()) == ["theirs.jpg"]
