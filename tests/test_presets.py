"""--preset fast|best|auto: a backbone named by what it costs; switching never loses data."""

from __future__ import annotations

import json

import pytest
import torch

from aes_index import config
from aes_index.config import Settings, load_settings
from aes_index.model.presets import resolve_preset
from aes_index.errors import ConfigError, ExitCode
from aes_index.index.runner import choose_backbone
from aes_index.index.store import Index

from conftest import make_photo, run_cli as run


def test_presets_name_the_backbones_the_issue_promises():
    assert (resolve_preset("fast").model, resolve_preset("fast").pretrained) == ("ViT-B-32", "openai")
    assert (resolve_preset("best").model, resolve_preset("best").pretrained) == ("ViT-L-14", "openai")
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        resolve_preset("huge")


def test_auto_is_best_with_a_gpu_and_fast_on_the_cpu(monkeypatch):
    import aes_index.model.backbone as backbone

    assert resolve_preset("auto", "cpu").chosen == "fast"
    monkeypatch.setattr(backbone, "resolve_device", lambda requested="auto": torch.device("cuda"))
    chosen = resolve_preset("auto")
    assert chosen.chosen == "best" and chosen.key == "ViT-L-14/openai" and "CUDA" in chosen.reason


def test_a_new_index_gets_the_auto_preset(monkeypatch, tmp_path):
    import aes_index.model.backbone as backbone

    with Index(tmp_path / "new.db") as index:
        assert choose_backbone(index, Settings(device="cpu"))[:2] == ("ViT-B-32", "openai")
        monkeypatch.setattr(backbone, "resolve_device", lambda requested="auto": torch.device("cuda"))
        assert choose_backbone(index, Settings())[:2] == ("ViT-L-14", "openai")
        # named halves are not a preset: the old defaults fill the other half
        assert choose_backbone(index, Settings(pretrained="laion2b_s34b_b79k"))[:2] == ("ViT-B-32", "laion2b_s34b_b79k")


def test_a_higher_layer_naming_the_backbone_replaces_a_lower_ones(tmp_path, monkeypatch):
    file = tmp_path / "aes.toml"
    file.write_text('model = "ViT-B-16"\npretrained = "openai"\n')
    settings = load_settings({"preset": "best"}, env={}, config_path=file)
    assert (settings.preset, settings.model, settings.pretrained) == ("best", None, None)

    file.write_text('preset = "best"\n')
    settings = load_settings({"model": "ViT-B-16", "pretrained": "openai"}, env={}, config_path=file)
    assert (settings.preset, settings.model) == (None, "ViT-B-16")
    settings = load_settings({}, env={"AES_INDEX_PRESET": "fast"}, config_path=file)
    assert settings.preset == "fast"

    with pytest.raises(ConfigError, match="names both a preset and model"):
        load_settings({"preset": "best", "model": "ViT-B-16"}, env={})
    with pytest.raises(ConfigError, match="unknown preset 'quick' in the environment"):
        load_settings({}, env={"AES_INDEX_PRESET": "quick"})


def test_bad_preset_and_conflicts_are_one_line_usage_errors(capsys, tmp_path):
    code, _, err = run(capsys, "rescore", "--db", tmp_path / "x.db", "--preset", "best", "--model", "ViT-B-16")
    assert code == ExitCode.USAGE and err.count("\n") == 1 and "preset" in err and "Traceback" not in err


@pytest.fixture
def tiny_presets(tiny_model, monkeypatch):
    """fast and best as two tiny backbones (the same architecture, two checkpoint files, so
    two backbone keys): the real ones need weights this machine cannot fetch."""
    monkeypatch.setitem(config.PRESETS, "fast", (tiny_model["config"], tiny_model["checkpoint"]))
    monkeypatch.setitem(config.PRESETS, "best", (tiny_model["config"], tiny_model["pt"]))


def test_switching_presets_keeps_every_backbones_embeddings(tmp_path, tiny_presets, capsys):
    root = tmp_path / "lib"
    for i in range(4):
        make_photo(root / f"p{i}.jpg", seed=70 + i)
    db = tmp_path / "index.db"
    common = ["--db", db, "--device", "cpu", "--dtype", "fp32", "--workers", "0", "--json"]

    def rebuild(*extra):
        code, out, err = run(capsys, "rebuild", root, *common, *extra)
        assert code == ExitCode.OK, err
        return json.loads(out)

    fast = rebuild("--preset", "fast")
    best = rebuild("--preset", "best")
    assert fast["decoded"] == best["decoded"] == 4 and fast["backbone"] != best["backbone"]
    with Index(db, read_only=True) as index:
        assert index.runs.active_backbone() == best["backbone"]
        assert all(index.embeddings.count(row["id"]) == 4 for row in index.embeddings.backbones())
    again = rebuild("--preset", "fast")  # back: nothing decoded, the cached embeddings are there
    assert again["decoded"] == 0 and again["backbone"] == fast["backbone"]
    plain = rebuild()  # none named: the active backbone, the one just used
    assert plain["decoded"] == 0 and plain["backbone"] == fast["backbone"]
    code, out, _ = run(capsys, "stats", "--db", db, "--json")
    stats = json.loads(out)
    assert stats["active_backbone"] == fast["backbone"] and len(stats["backbones"]) == 2
    code, out, _ = run(capsys, "stats", "--db", db)
    assert f"{fast['backbone']} (active)" in out and best["backbone"] in out
