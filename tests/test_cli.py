"""The `aes-index` CLI through a runner: output, --json, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from aes_index.cli import main
from aes_index.errors import ExitCode


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def indexed(library, model_args, capsys):
    code, out, err = run(capsys, "rebuild", library, *model_args, "--workers", "0", "--json")
    return library, json.loads(out)


def test_rebuild_json_summary(indexed):
    library, summary = indexed
    for key in ("files", "decoded", "scored", "skipped", "errors"):
        assert isinstance(summary[key], int)
    assert summary["decoded"] + summary["errors"] == summary["files"] and summary["scored"] == summary["decoded"]
    assert (library / ".aes-index.db").is_file()


def test_rebuild_exit_code_and_summary_line(library, model_args, capsys):
    code, out, err = run(capsys, "rebuild", library, *model_args, "--workers", "0")
    assert code == ExitCode.FILE_ERRORS  # the fixtures include stripped RAWs
    assert out.startswith("rebuild: ") and "img/s" in out and "errors" in out
    code, out, err = run(capsys, "rebuild", library, *model_args)
    assert code == ExitCode.OK and "0 decoded" in out  # errors are not retried until the file changes


def test_rebuild_without_roots_uses_the_known_ones(indexed, model_args, capsys, monkeypatch):
    library, _ = indexed
    monkeypatch.chdir(library / "2024")  # the index is found upwards
    code, out, err = run(capsys, "rebuild", *model_args, "--json")
    assert json.loads(out)["skipped"] == json.loads(out)["files"] > 0


def test_top_lists_best_and_worst(indexed, model_args, capsys):
    library, _ = indexed
    db = library / ".aes-index.db"
    code, out, _ = run(capsys, "top", "-n", "5", "--db", db, "--json")
    best = json.loads(out)["photos"]
    code, out, _ = run(capsys, "top", "-n", "5", "--worst", "--db", db, "--json")
    worst = json.loads(out)["photos"]
    assert len(best) == len(worst) == 5
    assert [p["score"] for p in best] == sorted((p["score"] for p in best), reverse=True)
    assert [p["score"] for p in worst] == sorted(p["score"] for p in worst)
    assert best[0]["score"] > worst[0]["score"]
    code, out, _ = run(capsys, "top", "-n", "2", "--db", db)
    assert code == 0 and len(out.strip().splitlines()) == 2 and best[0]["path"] in out


def test_stats_reports_statuses_errors_and_distribution(indexed, capsys):
    library, summary = indexed
    code, out, _ = run(capsys, "stats", "--db", library / ".aes-index.db", "--json")
    data = json.loads(out)
    assert data["images"]["ok"] == summary["scored"] and sum(data["errors"].values()) == summary["errors"]
    assert data["scores"]["count"] == summary["scored"] and data["scores"]["min"] <= data["scores"]["max"]
    code, out, _ = run(capsys, "stats", "--db", library / ".aes-index.db")
    assert "no_preview" in out and "Nikon.nef" in out


def test_rescore_with_another_head(indexed, model_args, capsys):
    library, summary = indexed
    db = library / ".aes-index.db"
    code, out, _ = run(capsys, "rescore", "--db", db, *model_args, "--head", "zeroshot:fixed", "--json")
    assert code == 0 and json.loads(out)["scored"] == summary["scored"] and json.loads(out)["head"].startswith("zeroshot-fixed")


def test_score_files_cached_and_new(indexed, model_args, capsys, tmp_path):
    library, _ = indexed
    from conftest import make_photo

    fresh = make_photo(tmp_path / "fresh.jpg", seed=42)
    known = library / "2024" / "IMG_0001.jpg"
    code, out, _ = run(capsys, "score", known, fresh, "--db", library / ".aes-index.db", *model_args, "--json")
    results = {os.path.basename(r["path"]): r for r in json.loads(out)}
    assert results["IMG_0001.jpg"]["cached"] is True and results["fresh.jpg"]["cached"] is False
    assert all(isinstance(r["score"], float) for r in results.values())


def test_score_a_broken_file_gives_its_error_and_exit_3(tmp_path, model_args, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    code, out, err = run(capsys, "score", broken, *model_args)
    assert code == ExitCode.FILE_ERRORS and "broken.jpg" in out and "error" in out
    assert not (tmp_path / ".aes-index.db").exists()  # no index around: nothing left behind


def test_doctor_reports_each_check(indexed, model_args, capsys):
    library, _ = indexed
    code, out, _ = run(capsys, "doctor", "--db", library / ".aes-index.db", *model_args, "--json")
    report = json.loads(out)
    checks = {c["name"]: c for c in report["checks"]}
    assert code == 0 and report["ok"]
    assert checks["device"]["device"] == "cpu" and checks["device"]["dtype"] == "fp32"
    assert checks["weights"]["path"].endswith("tiny-clip.safetensors")
    assert checks["head"]["head"] == "zeroshot-ensemble-outstanding-vs-horrible"
    assert "integrity ok" in checks["index"]["detail"]


def test_doctor_without_weights_fails_with_exit_4(capsys, tmp_path):
    code, out, _ = run(capsys, "doctor", "--db", tmp_path / "none.db")
    assert code == ExitCode.WEIGHTS and "[FAIL] weights" in out and "--pretrained" in out


def test_usage_and_config_errors_are_one_line(capsys, library):
    code, out, err = run(capsys, "rebuild", library, "--model", "ViT-Nope", "--pretrained", "x")
    assert code == ExitCode.USAGE and err.count("\n") == 1 and err.startswith("aes-index: unknown open_clip model")
    code, out, err = run(capsys, "top", "--db", library / "absent.db")
    assert code == ExitCode.INDEX and err.count("\n") == 1 and "rebuild" in err


def test_offline_without_weights_is_one_clear_line_from_the_real_command(library, tmp_path):
    """The installed console script, offline, default model: one line, exit 4, no traceback."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), AES_INDEX_CACHE_DIR=str(tmp_path / "c"))
    done = subprocess.run(
        [sys.executable, "-m", "aes_index.cli", "rebuild", str(library)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == ExitCode.WEIGHTS
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert "ViT-B-32/openai" in done.stderr and "--pretrained" in done.stderr


def test_settings_from_environment_and_config_file(library, tiny_model, capsys, tmp_path, monkeypatch):
    config = tmp_path / "aes.toml"
    config.write_text(f'model = "{tiny_model["config"]}"\npretrained = "{tiny_model["checkpoint"]}"\nworkers = 0\n')
    monkeypatch.setenv("AES_INDEX_DEVICE", "cpu")
    monkeypatch.setenv("AES_INDEX_DTYPE", "fp32")
    code, out, err = run(capsys, "rebuild", library, "--config", config, "--json")
    assert json.loads(out)["backbone"].startswith("tiny-clip/file:")


def test_report_writes_the_gallery(indexed, capsys, tmp_path):
    library, summary = indexed
    out = tmp_path / "best of.html"
    code, stdout, _ = run(capsys, "report", "--db", library / ".aes-index.db", "--out", out, "--json")
    data = json.loads(stdout)
    assert code == 0 and out.is_file() and data["photos"] == summary["files"] and data["errors"] == summary["errors"]
    assert data["thumbs_made"] == summary["scored"] and (tmp_path / "best of_thumbs").is_dir()
