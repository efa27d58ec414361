"""`aes-train finetune`: two steps on the tiny model; the checkpoint loads in aes-index."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import aes_index.cli
from aes_index.model.backbone import load_backbone
from aes_index.model.heads import Head, load_head
from aes_train.cli import main
from aes_train.finetune import _unfold_head, serving_model

from test_train_fixtures import make_ava


def test_two_steps_export_a_checkpoint_aes_index_loads(tmp_path, tiny_model, model_args, capsys):
    data = make_ava(tmp_path / "ava", n=24, corrupt=1)
    out = tmp_path / "out"
    argv = ["finetune", "--ava", str(data.ava_txt), "--images", str(data.images), "--out-dir", str(out),
            "--max-steps", "2", "--batch-size", "8", "--workers", "0", "--test-fraction", "0.25", "--json", *model_args]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    head = load_head(result["head"])
    assert head.metadata["history"]["steps"] == 2
    assert head.metadata["config"]["lr_encoder"] == 1e-4 and head.metadata["config"]["lr_head"] == 1e-2
    assert set(head.metadata["metrics"]) >= {"accuracy", "srcc", "plcc", "emd"}

    # a complete open_clip state dict: strict load, projection restored, only the image tower changed
    state = load_file(result["checkpoint"])
    original = tiny_model["model"].state_dict()
    assert set(state) == set(original)
    torch.testing.assert_close(state["visual.proj"], original["visual.proj"])
    changed = {k for k in state if not torch.equal(state[k], original[k])}
    assert changed and all(k.startswith("visual.") for k in changed)

    backbone = load_backbone(result["model"], result["checkpoint"], device="cpu", dtype="fp32")
    assert backbone.key == head.backbone  # the head is for exactly this checkpoint
    np.testing.assert_array_equal(backbone.projection, original["visual.proj"].numpy())

    # and aes-index scores with the pair
    photo = str(next(data.images.glob("*.jpg")))
    capsys.readouterr()
    code = aes_index.cli.main(["score", photo, "--model", result["model"], "--pretrained", result["checkpoint"],
                               "--head", result["head"], "--device", "cpu", "--dtype", "fp32", "--workers", "0", "--json"])
    assert code == 0
    scored = json.loads(capsys.readouterr().out)[0]
    assert 1.0 <= scored["score"] <= 10.0 and scored["std"] is not None


def test_openai_weights_are_served_with_quickgelu(tmp_path):
    assert serving_model("ViT-B-32", "openai", tmp_path) == "ViT-B-32-quickgelu"
    assert serving_model("ViT-B-32", "random", tmp_path) == "ViT-B-32"
    assert serving_model("ViT-B-32-quickgelu", "openai", tmp_path) == "ViT-B-32-quickgelu"


def test_a_fitted_emd_head_starts_the_fine_tune_where_it_left_off():
    rng = np.random.default_rng(0)
    tensors = {"weight": rng.normal(size=(10, 6)).astype(np.float32), "bias": rng.normal(size=10).astype(np.float32),
               "input_mean": rng.normal(size=6).astype(np.float32), "input_scale": rng.uniform(0.5, 2, size=6).astype(np.float32)}
    head = Head({"name": "h", "kind": "emd", "backbone": "m/t", "input_space": "pooled", "input_dim": 6}, tensors)
    weight, bias = _unfold_head(head, SimpleNamespace(key="m/t"))
    x = rng.normal(size=(5, 6)).astype(np.float32)
    logits = x @ weight.T + bias
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs @ np.arange(1, 11), head.predict(x, None).score, rtol=1e-5)
    from aes_index.errors import HeadError

    with pytest.raises(HeadError, match="made for m/t"):
        _unfold_head(head, SimpleNamespace(key="other/t"))
