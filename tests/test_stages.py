"""The stage runner: one writer at a time, files still being written left alone, and the
backbone an index was built with remembered."""

from __future__ import annotations

import json
import sqlite3
import os
import subprocess
import sys
import threading
import time

import pytest

from aes_index.index import runner as indexer, pipeline
from aes_index.features.attributes import compute_attributes
from aes_index.cli import main
from aes_index.errors import ExitCode
from aes_index.index.locks import LockHeld, writer_lock
from aes_index.index.store import NEW, OK, Index

from conftest import make_photo


@pytest.fixture
def index(tmp_path):
    with Index(tmp_path / "index.db") as opened:
        yield opened


def _age(path, seconds):
    """Make `path` look modified `seconds` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- the stability window ----------------------------------------------------------------


def test_rebuild_leaves_a_file_still_being_written_and_picks_it_up_once_settled(index, tmp_path, settings):
    root = tmp_path / "lib"
    for i in range(3):
        _age(make_photo(root / f"old_{i}.jpg", seed=i), 60)
    young = make_photo(root / "landing.jpg", seed=9)
    windowed = settings.replace(stable_seconds=30.0)

    summary = indexer.rebuild(index, [str(root)], windowed)
    assert summary.settling == 1 and summary.decoded == 3 and summary.skipped == 0 and summary.missing == 0
    assert index.images.by_path(str(young)) is None  # neither added nor marked anything

    _age(young, 31)
    summary = indexer.rebuild(index, [str(root)], windowed)
    assert summary.settling == 0 and summary.decoded == 1 and summary.new == 1
    assert index.images.by_path(str(young))["status"] == OK


def test_a_known_file_being_rewritten_keeps_its_row_until_it_settles(index, tmp_path, settings):
    root = tmp_path / "lib"
    photo = _age_and_return(make_photo(root / "a.jpg", seed=1), 60)
    indexer.rebuild(index, [str(root)], settings)
    before = index.images.by_path(str(photo))
    make_photo(photo, seed=2)  # rewritten just now

    summary = indexer.rebuild(index, [str(root)], settings.replace(stable_seconds=30.0))
    assert summary.settling == 1 and summary.missing == 0 and summary.changed == 0
    assert index.images.by_path(str(photo)) == before


def _age_and_return(path, seconds):
    _age(path, seconds)
    return path


def test_rebuild_says_files_are_still_being_written(library, model_args, capsys, monkeypatch):
    for path in library.rglob("*"):
        _age(path, 60)
    make_photo(library / "2024" / "just-copied.jpg", seed=77)
    monkeypatch.setenv("AES_INDEX_STABLE_SECONDS", "30")
    code, out, err = run(capsys, "rebuild", library, *model_args, "--workers", "0")
    assert "1 files still being written: skipped; run again" in out
    code, out, err = run(capsys, "rebuild", library, *model_args, "--workers", "0", "--json")
    assert json.loads(out)["settling"] == 1
    code, out, err = run(capsys, "rebuild", library, *model_args, "--workers", "0", "--json", "--stable", "0")
    assert json.loads(out)["settling"] == 0 and json.loads(out)["decoded"] == 1  # --stable beats the setting


def test_a_file_that_changes_while_it_is_read_is_not_stored(index, tmp_path, settings, monkeypatch):
    root = tmp_path / "lib"
    for i in range(4):
        make_photo(root / f"p{i}.jpg", seed=20 + i)
    growing = root / "p2.jpg"
    real = pipeline.decode_image

    def decode_then_append(path, *args, **kwargs):
        image = real(path, *args, **kwargs)
        if os.path.basename(path) == growing.name:  # the copy goes on after we read it
            with open(path, "ab") as handle:
                handle.write(b"\0" * 4096)
        return image

    monkeypatch.setattr(pipeline, "decode_image", decode_then_append)
    summary = indexer.rebuild(index, [str(root)], settings)
    row = index.images.by_path(str(growing))
    assert row["status"] == NEW and not index.embeddings.has(row["id"])
    assert summary.settling == 1 and summary.scored == 3 and summary.errors == 0

    monkeypatch.setattr(pipeline, "decode_image", real)
    summary = indexer.rebuild(index, [str(root)], settings)
    assert summary.decoded == 1 and index.images.by_path(str(growing))["status"] == OK


def test_score_says_a_file_is_still_being_written(index, tmp_path, settings):
    photo = make_photo(tmp_path / "landing.jpg", seed=3)
    [result] = indexer.score_files(index, [str(photo)], settings.replace(stable_seconds=30.0))
    assert result.score is None and "still being written" in result.error


# --- the writer lock ---------------------------------------------------------------------


def test_writer_lock_nests_in_a_thread_and_excludes_other_threads(tmp_path):
    db = tmp_path / "index.db"
    outcome = []

    def other_thread():
        try:
            with writer_lock(db, timeout=0):
                outcome.append("got it")
        except LockHeld:
            outcome.append("busy")

    with writer_lock(db, timeout=0):
        with writer_lock(db, timeout=0):  # nested: no deadlock on our own flock
            pass
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert outcome == ["busy"]
    with writer_lock(db, timeout=0):  # released entirely
        pass


def test_stages_rescore_and_attributes_take_the_writer_lock(index, tmp_path, settings):
    root = tmp_path / "lib"
    make_photo(root / "a.jpg", seed=1)
    indexer.rebuild(index, [str(root)], settings)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, fcntl; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('held', flush=True); sys.stdin.read()", f"{index.path}.writer.lock"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld):
            indexer.score_files(index, [str(root / "a.jpg")], settings, lock_timeout=0)
        with pytest.raises(LockHeld):
            indexer.rescore(index, settings.replace(head="zeroshot:fixed"), lock_timeout=0)
        with pytest.raises(LockHeld):
            compute_attributes(index, indexer.BackboneSession(index, settings), ["composition"], lock_timeout=0)
    finally:
        holder.communicate("")


# --- the index remembers its backbone ----------------------------------------------------


@pytest.fixture
def built(tmp_path, model_args, capsys):
    root = tmp_path / "lib"
    for i in range(3):
        make_photo(root / f"p{i}.jpg", seed=50 + i)
    db = tmp_path / "index.db"
    code, _, err = run(capsys, "rebuild", root, "--db", db, *model_args, "--workers", "0")
    assert code == ExitCode.OK, err
    return root, db


def test_commands_without_model_flags_use_the_index_backbone(built, capsys, monkeypatch):
    root, db = built
    monkeypatch.chdir(root.parent)  # nothing relative to where the index was built
    device = ["--device", "cpu", "--dtype", "fp32", "--workers", "0"]
    code, out, err = run(capsys, "attributes", "--db", db, "--only", "composition", *device, "--json")
    assert code == ExitCode.OK and json.loads(out)["scored"] == {"composition": 3}, err
    code, out, err = run(capsys, "rescore", "--db", db, "--head", "zeroshot:fixed", *device, "--json")
    assert code == ExitCode.OK and json.loads(out)["scored"] == 3, err
    make_photo(root / "new.jpg", seed=99)
    code, out, err = run(capsys, "score", root / "p0.jpg", root / "new.jpg", "--db", db, *device, "--json")
    assert code == ExitCode.OK and all(r["score"] is not None for r in json.loads(out)), err
    with Index(db) as index:
        assert len(index.embeddings.backbones()) == 1
    code, out, err = run(capsys, "doctor", "--db", db, "--device", "cpu", "--json")
    weights = {c["name"]: c for c in json.loads(out)["checks"]}["weights"]
    assert code == ExitCode.OK and weights["path"].endswith("tiny-clip.safetensors"), out


def test_the_chosen_backbone_is_named_on_stderr_unless_json(built):
    root, db = built
    command = [sys.executable, "-m", "aes_index.cli", "attributes", "--db", str(db), "--only", "sharpness", "--device", "cpu"]
    shown = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "aes-index: using the index's backbone tiny-clip/file:" in shown.stderr and shown.stderr.count("using") == 1
    quiet = subprocess.run(command + ["--json"], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and "using the index's backbone" not in quiet.stderr


def test_several_backbones_and_none_named_use_the_active_one(built, tiny_model, model_args, capsys):
    """A library indexed with two backbones (two presets) keeps both; commands that name
    none use the active one, the backbone of the latest run that scored (the same run whose
    head `top` shows). Only an index whose runs name no backbone still asks which."""
    root, db = built
    other = ["--model", tiny_model["config"], "--pretrained", tiny_model["pt"], "--device", "cpu", "--dtype", "fp32"]
    code, out, err = run(capsys, "rebuild", root, "--db", db, *other, "--workers", "0", "--json")
    assert code == ExitCode.OK, err
    latest = json.loads(out)["backbone"]
    with Index(db, read_only=True) as index:
        assert len(index.embeddings.backbones()) == 2 and index.runs.active_backbone() == latest
    for command in (["attributes", "--only", "sharpness"], ["score", root / "p0.jpg"]):
        code, out, err = run(capsys, *command, "--db", db, "--device", "cpu", "--dtype", "fp32")
        assert code == ExitCode.OK, (command, err)
        assert f"using the index's backbone {latest}" in err or not err, (command, err)  # said once per process
    code, out, err = run(capsys, "rescore", "--db", db, "--json")
    assert code == ExitCode.OK and json.loads(out)["backbone"] == latest, err
    code, out, err = run(capsys, "rescore", "--db", db, *model_args, "--json")  # named: that one
    assert code == ExitCode.OK and json.loads(out)["backbone"] != latest, err
    assert run(capsys, "stats", "--db", db, "--json")[1].count('"active_backbone"') == 1
    with sqlite3.connect(db) as conn:  # an index from before runs recorded their backbone (raw SQL: forged)
        conn.execute("UPDATE runs SET backbone = NULL")
    code, out, err = run(capsys, "rescore", "--db", db)
    assert code == ExitCode.USAGE, err
    assert "the index holds embeddings from tiny-clip/file:" in err and "pass --model and --pretrained" in err
    assert err.count("\n") == 1 and "Traceback" not in err


