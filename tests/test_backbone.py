"""Backbone loading: local checkpoints, pretrained tags via the HF cache, device/dtype, safety."""

from __future__ import annotations

import pickle

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from aes_index.model.backbone import BackboneInfo, backbone_key, cpu_supports_bf16, find_cached_weights, load_backbone, resolve_device, resolve_dtype
from aes_index.config import load_settings
from aes_index.errors import ConfigError, WeightsUnavailable
from aes_index.index.pipeline import to_model_pixels

from conftest import PHOTO


def _images(n=3, size=64):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _reference_embedding(model, pixels):
    """What open_clip itself gives: encode_image on normalised pixels."""
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        return model.encode_image(x).numpy()


@pytest.mark.parametrize("checkpoint_kind", ["checkpoint", "pt"])
def test_local_checkpoint_loads_the_saved_weights(tiny_model, checkpoint_kind):
    backbone = load_backbone(tiny_model["config"], tiny_model[checkpoint_kind], device="cpu", dtype="fp32")
    pixels = _images()
    pooled = backbone.encode_pooled(pixels)
    # pooled @ projection is exactly CLIP's image embedding: the split loses nothing
    expected = _reference_embedding(tiny_model["model"], pixels)
    np.testing.assert_allclose(pooled @ backbone.projection, expected, rtol=1e-4, atol=1e-5)
    assert pooled.shape == (3, 64) and backbone.projection.shape == (64, 32)
    assert backbone.key == backbone_key("tiny-clip", tiny_model[checkpoint_kind]) and "/file:" in backbone.key


def test_key_identifies_checkpoint_content_not_name(tiny_model, tmp_path):
    copy = tmp_path / "renamed.safetensors"
    copy.write_bytes(open(tiny_model["checkpoint"], "rb").read())
    key = backbone_key("tiny-clip", tiny_model["checkpoint"])
    assert backbone_key("tiny-clip", str(copy)) == key  # a renamed checkpoint keeps its heads
    copy.write_bytes(copy.read_bytes()[:-1] + b"\x00")
    assert backbone_key("tiny-clip", str(copy)) != key


def test_random_weights_are_reproducible(tiny_model):
    a = load_backbone(tiny_model["config"], "random", device="cpu", dtype="fp32")
    b = load_backbone(tiny_model["config"], "random", device="cpu", dtype="fp32")
    np.testing.assert_array_equal(a.encode_pooled(_images()), b.encode_pooled(_images()))
    assert a.key == "tiny-clip/random"


def test_pretrained_tag_resolves_through_the_hugging_face_cache(tiny_model, tmp_path, monkeypatch):
    """A tag goes through open_clip's pretrained registry and the HF cache, offline."""
    from open_clip import pretrained as oc_pretrained

    monkeypatch.setitem(
        oc_pretrained._PRETRAINED, "tiny-clip", {"testtag": oc_pretrained._pcfg(hf_hub="aes-index-test/tiny-clip/")}
    )
    cache = tmp_path / "hf"
    snapshot = cache / "models--aes-index-test--tiny-clip" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (cache / "models--aes-index-test--tiny-clip" / "refs").mkdir()
    (cache / "models--aes-index-test--tiny-clip" / "refs" / "main").write_text("0123abcd")
    (snapshot / "open_clip_model.safetensors").write_bytes(open(tiny_model["checkpoint"], "rb").read())

    assert find_cached_weights("tiny-clip", "testtag", str(cache)).endswith("open_clip_model.safetensors")
    backbone = load_backbone(tiny_model["config"], "testtag", device="cpu", dtype="fp32", cache_dir=str(cache))
    assert backbone.key == "tiny-clip/testtag"
    np.testing.assert_allclose(
        backbone.encode_pooled(_images()) @ backbone.projection, _reference_embedding(tiny_model["model"], _images()),
        rtol=1e-4, atol=1e-5,
    )


def test_offline_without_cached_weights_says_how_to_get_them(tmp_path):
    with pytest.raises(WeightsUnavailable) as caught:
        load_backbone("ViT-B-32", "openai", device="cpu", cache_dir=str(tmp_path))
    message = str(caught.value)
    assert "ViT-B-32/openai" in message and "--pretrained" in message and "\n" not in message


def test_unknown_tag_and_model_are_config_errors():
    with pytest.raises(ConfigError, match="no pretrained tag 'nonsense'"):
        load_backbone("ViT-B-32", "nonsense", device="cpu")
    with pytest.raises(ConfigError, match="unknown open_clip model"):
        load_backbone("ViT-Q-99", "openai", device="cpu")


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_pickled_code_in_a_checkpoint_is_refused(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as handle:
        pickle.dump({"state_dict": _Payload()}, handle)
    with pytest.raises(WeightsUnavailable):
        load_backbone(tiny_model["config"], str(evil), device="cpu", dtype="fp32")
    assert not (tmp_path / "PWNED").exists()


def test_device_and_dtype_resolution(monkeypatch):
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else resolve_device("auto").type)
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda")
    cpu = torch.device("cpu")
    assert resolve_dtype("fp32", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_dtype("auto", cpu) == (torch.bfloat16 if cpu_supports_bf16() else torch.float32)
    monkeypatch.setattr("aes_index.model.backbone.cpu_supports_bf16", lambda: False)
    assert resolve_dtype("auto", cpu) == torch.float32
    with pytest.raises(ConfigError):
        resolve_dtype("int4", cpu)


def test_bf16_on_cpu_stays_close_to_fp32(tiny_model):
    fp32 = load_backbone(tiny_model["config"], tiny_model["checkpoint"], device="cpu", dtype="fp32")
    bf16 = load_backbone(tiny_model["config"], tiny_model["checkpoint"], device="cpu", dtype="bf16")
    a, b = fp32.encode_pooled(_images()), bf16.encode_pooled(_images())
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99


def test_settings_layers_config_file_then_env_then_cli(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('model = "ViT-L-14"\ndevice = "cuda"\nbatch_size = 8\n')
    env = {"AES_INDEX_DEVICE": "cpu", "AES_INDEX_DTYPE": "bf16"}
    settings = load_settings({"dtype": "fp32", "model": None}, env=env, config_path=config)
    assert (settings.model, settings.device, settings.dtype, settings.batch_size) == ("ViT-L-14", "cpu", "fp32", 8)
    config.write_text('colour = "red"\n')
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_settings({}, env={}, config_path=config)


def test_preprocessing_matches_open_clip_transform(tiny_model):
    """Our worker-side resize/crop + device-side normalise == open_clip's eval transform."""
    backbone = load_backbone(tiny_model["config"], tiny_model["checkpoint"], device="cpu", dtype="fp32")
    transform = open_clip.image_transform(64, is_train=False)
    with Image.open(PHOTO) as image:
        image = image.convert("RGB").resize((300, 201))
        ours = backbone.to_input(to_model_pixels(image, backbone.info.preprocess)[None]).numpy()
        theirs = transform(image)[None].numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_backbone_info_round_trips_through_json(tiny_model):
    backbone = load_backbone(tiny_model["config"], "random", device="cpu", dtype="fp32")
    assert BackboneInfo.from_json(backbone.info.as_json()) == backbone.info


def test_text_encoding_without_padding_equals_open_clips(tiny_model):
    """The trimmed fast path gives open_clip's own encode_text vectors."""
    backbone = load_backbone(tiny_model["config"], tiny_model["checkpoint"], device="cpu", dtype="fp32")
    prompts = ["a outstanding picture, of a great white shark", "a horrible picture", "x"]
    tokenizer = open_clip.get_tokenizer("tiny-clip")
    with torch.no_grad():
        expected = torch.nn.functional.normalize(tiny_model["model"].encode_text(tokenizer(prompts)), dim=-1).numpy()
    np.testing.assert_allclose(backbone.encode_text(prompts), expected, atol=1e-5)
