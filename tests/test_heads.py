"""Heads: zero-shot Eq. 1 against a direct computation, linear/EMD maths, file format, choice."""

from __future__ import annotations

import pickle

import numpy as np
import open_clip
import pytest
import torch

from aes_index.model import heads, zeroshot
from aes_index.model.backbone import load_backbone
from aes_index.errors import ConfigError, HeadError
from aes_index.model.head_choice import resolve_head
from aes_index.model.heads import Head, load_head, save_head

CLASSES = ["dog", "harbour", "mountain"]  # a small class list keeps context prompts cheap


@pytest.fixture
def backbone(tiny_model):
    return load_backbone(tiny_model["config"], tiny_model["checkpoint"], device="cpu", dtype="fp32")


@pytest.fixture
def few_classes(monkeypatch):
    monkeypatch.setattr(zeroshot, "imagenet_classes", lambda: list(CLASSES))


def _direct_image_embeddings(model, pixels):
    """CLIP image embeddings straight from open_clip, normalised."""
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        image = model.encode_image((torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - mean) / std)
    return torch.nn.functional.normalize(image, dim=-1).numpy()


def _direct_text(model, prompts):
    tokenizer = open_clip.get_tokenizer("tiny-clip")
    with torch.no_grad():
        return torch.nn.functional.normalize(model.encode_text(tokenizer(prompts)), dim=-1).numpy()


def _pixels(n=6):
    return np.random.default_rng(3).integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)


def test_fixed_prompt_scores_equal_eq1(backbone, tiny_model):
    """score(I) = sum_i w_i cos(I, T_i), T = "a {adj} picture", w = +1 / -1."""
    head = zeroshot.build_zeroshot_head(backbone, "fixed", ["outstanding", "pretty"], ["horrible"])
    pixels = _pixels()
    ours = head.predict(backbone.encode_pooled(pixels), backbone.projection).score

    image = _direct_image_embeddings(tiny_model["model"], pixels)
    text = _direct_text(tiny_model["model"], ["a outstanding picture", "a pretty picture", "a horrible picture"])
    expected = image @ text[0] + image @ text[1] - image @ text[2]
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    assert np.std(ours) > 0  # not a constant


def test_ensemble_averages_each_adjectives_context_prompts(backbone, tiny_model, few_classes):
    head = zeroshot.build_zeroshot_head(backbone, "ensemble", ["outstanding"], ["horrible"])
    pixels = _pixels()
    ours = head.predict(backbone.encode_pooled(pixels), backbone.projection).score

    def averaged(adj):
        rows = _direct_text(tiny_model["model"], [f"a {adj} picture, of a {c}" for c in CLASSES]).mean(0)
        return rows / np.linalg.norm(rows)

    image = _direct_image_embeddings(tiny_model["model"], pixels)
    np.testing.assert_allclose(ours, image @ averaged("outstanding") - image @ averaged("horrible"), atol=1e-5)


def test_context_mode_uses_each_images_best_class(backbone, tiny_model, few_classes):
    head = zeroshot.build_zeroshot_head(backbone, "context", ["outstanding"], ["horrible"])
    pixels = _pixels()
    ours = head.predict(backbone.encode_pooled(pixels), backbone.projection).score

    model = tiny_model["model"]
    image = _direct_image_embeddings(model, pixels)
    best = np.argmax(image @ _direct_text(model, [f"a picture, of a {c}" for c in CLASSES]).T, axis=1)
    pos = _direct_text(model, [f"a outstanding picture, of a {c}" for c in CLASSES])
    neg = _direct_text(model, [f"a horrible picture, of a {c}" for c in CLASSES])
    expected = [image[i] @ pos[c] - image[i] @ neg[c] for i, c in enumerate(best)]
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_cached_norms_give_the_same_scores_as_projecting(backbone):
    head = zeroshot.build_zeroshot_head(backbone, "fixed", ["outstanding"], ["horrible"])
    pooled = backbone.encode_pooled(_pixels(50))
    norms = heads.projected_norms(pooled, backbone.projection)
    np.testing.assert_allclose(
        head.predict(pooled, backbone.projection, norms).score, head.predict(pooled, backbone.projection).score, atol=1e-6
    )


def _random_head(kind, dim=8, hidden=None, standardise=False, space="pooled", seed=0):
    rng = np.random.default_rng(seed)
    meta = {"name": f"test-{kind}", "kind": kind, "backbone": "tiny-clip/x", "input_space": space, "input_dim": dim}
    out = 10 if kind == "emd" else 1
    tensors = {}
    first = hidden or out
    if hidden:
        tensors["hidden_weight"] = rng.normal(size=(hidden, dim)).astype(np.float32)
        tensors["hidden_bias"] = rng.normal(size=hidden).astype(np.float32)
    tensors["weight"] = rng.normal(size=(out, first if hidden else dim)).astype(np.float32)
    tensors["bias"] = rng.normal(size=out).astype(np.float32)
    if kind == "linear":
        tensors["weight"] = tensors["weight"].reshape(-1)
    if standardise:
        tensors["input_mean"] = rng.normal(size=dim).astype(np.float32)
        tensors["input_scale"] = rng.uniform(0.5, 2, size=dim).astype(np.float32)
    return Head(meta, tensors)


@pytest.mark.parametrize("standardise", [False, True])
def test_linear_head_is_an_affine_map(standardise):
    head = _random_head("linear", standardise=standardise)
    x = np.random.default_rng(1).normal(size=(7, 8)).astype(np.float32)
    z = (x - head.tensors["input_mean"]) * head.tensors["input_scale"] if standardise else x
    np.testing.assert_allclose(head.predict(x, None).score, z @ head.tensors["weight"] + head.tensors["bias"][0], rtol=1e-5)


@pytest.mark.parametrize("hidden", [None, 16])
def test_emd_head_gives_mean_and_spread_of_its_distribution(hidden):
    head = _random_head("emd", hidden=hidden, standardise=True, space="projected")
    projection = np.random.default_rng(2).normal(size=(12, 8)).astype(np.float32)
    pooled = np.random.default_rng(3).normal(size=(9, 12)).astype(np.float32)
    prediction = head.predict(pooled, projection)

    x = pooled @ projection
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    x = (x - head.tensors["input_mean"]) * head.tensors["input_scale"]
    if hidden:
        x = np.maximum(x @ head.tensors["hidden_weight"].T + head.tensors["hidden_bias"], 0)
    logits = x @ head.tensors["weight"].T + head.tensors["bias"]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    mean = probs @ np.arange(1, 11)
    np.testing.assert_allclose(prediction.score, mean, rtol=1e-5)
    spread = np.sqrt((probs * (np.arange(1, 11)[None, :] - mean[:, None]) ** 2).sum(axis=1))
    np.testing.assert_allclose(prediction.std, spread, rtol=1e-4)
    assert ((prediction.score >= 1) & (prediction.score <= 10)).all()


def test_emd_head_with_certain_distribution_has_zero_spread():
    head = _random_head("emd")
    head.tensors["weight"][:] = 0
    head.tensors["bias"][:] = -50
    head.tensors["bias"][6] = 50  # all mass on score 7
    prediction = head.predict(np.ones((2, 8), np.float32), None)
    np.testing.assert_allclose(prediction.score, 7.0, atol=1e-4)
    np.testing.assert_allclose(prediction.std, 0.0, atol=1e-3)


def test_head_file_round_trip_and_hash(tmp_path):
    head = _random_head("emd", hidden=4, standardise=True)
    path = save_head(head, tmp_path / "h.safetensors")
    loaded = load_head(path)
    assert loaded.hash == head.hash and loaded.metadata["kind"] == "emd"
    for name in head.tensors:
        np.testing.assert_array_equal(loaded.tensors[name], head.tensors[name])
    changed = _random_head("emd", hidden=4, standardise=True, seed=9)
    assert changed.hash != head.hash


def test_head_loading_refuses_what_is_not_a_head(tmp_path):
    pickled = tmp_path / "evil.safetensors"
    pickled.write_bytes(pickle.dumps({"weight": 1}))
    with pytest.raises(HeadError, match="not a readable safetensors head"):
        load_head(pickled)
    from safetensors.numpy import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"weight": np.zeros(3, np.float32)}, str(bare))
    with pytest.raises(HeadError, match="no aes-index metadata"):
        load_head(bare)
    with pytest.raises(HeadError, match="unknown head kind"):
        Head({"name": "x", "kind": "magic", "backbone": "b", "input_space": "pooled"}, {})
    with pytest.raises(HeadError, match="not found"):
        load_head(tmp_path / "absent.safetensors")


def test_head_for_another_backbone_is_refused():
    head = _random_head("linear")
    with pytest.raises(HeadError, match="made for backbone tiny-clip/x"):
        heads.check_compatible(head, "ViT-B-32/openai", 8, 4)
    with pytest.raises(HeadError, match="expects 8-d"):
        heads.check_compatible(head, "tiny-clip/x", 16, 4)


def test_auto_prefers_a_shipped_head_for_the_backbone(tmp_path, monkeypatch):
    shipped = _random_head("linear")
    save_head(shipped, tmp_path / "shipped.safetensors")
    monkeypatch.setattr(heads, "shipped_heads_dir", lambda: tmp_path)
    never = lambda: pytest.fail("must not load the model for a shipped head")  # noqa: E731
    assert resolve_head("auto", "tiny-clip/x", never).hash == shipped.hash


def test_zeroshot_head_is_built_once_then_cached(backbone, few_classes):
    calls = []

    def loader():
        calls.append(1)
        return backbone

    first = resolve_head("zeroshot:ensemble:smashing/horrible", backbone.key, loader)
    second = resolve_head("zeroshot:ensemble:smashing/horrible", backbone.key, loader)
    assert len(calls) == 1 and first.hash == second.hash
    assert first.name == "zeroshot-ensemble-smashing-vs-horrible"
    assert resolve_head("auto", backbone.key, loader).name == "zeroshot-ensemble-outstanding-vs-horrible"


@pytest.mark.parametrize("spec", ["zeroshot:weird", "zeroshot:fixed:nopair", "zeroshot:fixed:/"])
def test_bad_zeroshot_specs_are_config_errors(spec):
    with pytest.raises(ConfigError):
        zeroshot.parse_spec(spec)


def test_paper_adjective_pools():
    assert len(zeroshot.POSITIVE_ADJECTIVES) == 27 and len(zeroshot.NEGATIVE_ADJECTIVES) == 12
    assert {"beautiful", "pretty", "outstanding", "smashing"} <= set(zeroshot.POSITIVE_ADJECTIVES)
    assert "horrible" in zeroshot.NEGATIVE_ADJECTIVES
