"""The LAION heads aes-index ships: converted exactly from the published files, chosen by
`--head auto` only where their AVA figure is the best on record, and usable by name."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aes_index import heads
from aes_index.errors import HeadError
from aes_index.heads import load_head, resolve_head, shipped_head_named

from conftest import REPO_ROOT, SHARED

UPSTREAM = SHARED / "upstream-heads"
V2_FILE = UPSTREAM / "laion-v2-sac+logos+ava1-l14-linearMSE.pth"
V1_FILE = UPSTREAM / "laion-v1-sa_0_4_vit_b_32_linear.pth"
needs_upstream = pytest.mark.skipif(not V2_FILE.is_file(), reason="../shared/upstream-heads is not here")


def _converter():
    spec = importlib.util.spec_from_file_location("convert_laion_heads", REPO_ROOT / "packaging" / "convert_laion_heads.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def published_v2_stack() -> torch.nn.Module:
    """LAION v2 exactly as its published inference code builds it (improved-aesthetic-
    predictor, simple_inference.py, class MLP): Linear layers with Dropout between them,
    the ReLUs commented out. strict loading proves the published state dict fits it."""
    layers = torch.nn.Sequential(
        torch.nn.Linear(768, 1024), torch.nn.Dropout(0.2),
        torch.nn.Linear(1024, 128), torch.nn.Dropout(0.2),
        torch.nn.Linear(128, 64), torch.nn.Dropout(0.1),
        torch.nn.Linear(64, 16),
        torch.nn.Linear(16, 1),
    )
    model = torch.nn.Module()
    model.layers = layers
    model.load_state_dict(torch.load(V2_FILE, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@needs_upstream
def test_folded_v2_head_equals_the_published_layer_stack_on_unit_vectors():
    head = shipped_head_named("laion-v2-vit-l-14")
    x = unit_vectors(2000, 768, seed=7)
    with torch.no_grad():
        expected = published_v2_stack().layers(torch.from_numpy(x)).numpy()[:, 0]
    # "projected" with no projection matrix: the rows are the embeddings themselves,
    # divided by their norm (1 here), as aes-index does with a cached embedding.
    ours = head.predict(x, None).score
    assert np.abs(ours - expected).max() <= 1e-5
    assert np.std(expected) > 0.05  # the comparison is between varying scores, not constants


@needs_upstream
def test_v1_head_equals_the_published_linear_layer():
    head = shipped_head_named("laion-v1-vit-b-32")
    layer = torch.nn.Linear(512, 1)
    layer.load_state_dict(torch.load(V1_FILE, map_location="cpu", weights_only=True), strict=True)
    x = unit_vectors(500, 512, seed=8)
    with torch.no_grad():
        expected = layer(torch.from_numpy(x)).numpy()[:, 0]
    assert np.abs(head.predict(x, None).score - expected).max() <= 1e-5


@needs_upstream
def test_the_conversion_reproduces_the_shipped_files_byte_for_byte(tmp_path):
    converter = _converter()
    assert converter.main(["--upstream", str(UPSTREAM), "--out", str(REPO_ROOT / "plugin" / "aes_index" / "heads"), "--check"]) == 0
    # and a changed upstream file is refused rather than converted
    bad = tmp_path / "upstream"
    bad.mkdir()
    for path in UPSTREAM.iterdir():
        (bad / path.name).write_bytes(path.read_bytes())
    tampered = bytearray((bad / V1_FILE.name).read_bytes())
    tampered[-30] ^= 1
    (bad / V1_FILE.name).write_bytes(bytes(tampered))
    with pytest.raises(SystemExit, match="sha256"):
        converter.main(["--upstream", str(bad), "--out", str(tmp_path / "out")])


def test_the_converter_loads_pth_files_only_with_the_restricted_loader():
    text = (REPO_ROOT / "packaging" / "convert_laion_heads.py").read_text()
    loads = [line for line in text.splitlines() if "torch.load(" in line and not line.lstrip().startswith(("#", '"'))]
    assert loads and all("weights_only=True" in line for line in loads)


def test_a_stack_with_another_shape_is_not_folded():
    converter = _converter()
    state = {f"layers.{i}.{t}": np.zeros(1) for i in (0, 2, 4, 6, 7, 9) for t in ("weight", "bias")}
    with pytest.raises(SystemExit, match="unexpected v2 layers"):
        converter.fold_v2(state)


def test_shipped_heads_carry_their_card_licence_and_facts():
    folder = heads.shipped_heads_dir()
    for name, backbone, dim, licence in (
        ("laion-v2-vit-l-14", "ViT-L-14/openai", 768, "Apache-2.0"),
        ("laion-v1-vit-b-32", "ViT-B-32/openai", 512, "MIT"),
    ):
        head = shipped_head_named(name)
        meta = head.metadata
        assert (head.backbone, meta["input_space"], meta["input_dim"]) == (backbone, "projected", dim)
        assert meta["source"]["licence"] == licence and len(meta["source"]["commit"]) == 40
        assert (folder / meta["source"]["licence_file"]).is_file()
        card = (folder / f"{name}.md").read_text()
        for fact in (meta["source"]["commit"], licence, meta["source"]["sha256"], "1-10", "divided by its L2 norm", head.hash):
            assert fact in card, (name, fact)
        assert head.scale.short == "1-10"
    assert shipped_head_named("laion-v2-vit-l-14").metadata["published"]["ava"]["srcc"] == 0.665
    assert shipped_head_named("laion-v1-vit-b-32").metadata["published"] == {}


def test_the_package_data_ships_heads_cards_and_licences():
    import tomllib

    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["aes_index"]
    assert {"heads/*.safetensors", "heads/*.md", "heads/LICENSE.*"} <= set(data)


# --- which head --head auto takes ---------------------------------------------------------


def _never():
    pytest.fail("must not load the model for a shipped head")


def test_auto_takes_laion_v2_for_vit_l_14_and_keeps_zeroshot_for_vit_b_32(monkeypatch, tmp_path):
    assert resolve_head("auto", "ViT-L-14/openai", _never).name == "laion-v2-vit-l-14"
    assert heads.shipped_head_for("ViT-B-32/openai") is None  # v1 has no AVA figure; the ensemble has 0.539
    reason = heads.default_reason("ViT-B-32/openai")
    assert "0.539" in reason and "Table 1" in reason and "laion-v1-vit-b-32" in reason and "no published AVA figure" in reason
    reason = heads.default_reason("ViT-L-14/openai")
    assert "0.665" in reason and "pyiqa" in reason


def test_a_head_with_a_better_ava_figure_would_take_over(monkeypatch, tmp_path):
    """The rule is the figure, not the name: a measured head beating 0.539 becomes the default."""
    for path in heads.shipped_heads_dir().glob("*.safetensors"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    better = load_head(tmp_path / "laion-v1-vit-b-32.safetensors")
    better = heads.Head({**better.metadata, "name": "measured-b32", "metrics": {"srcc": 0.6, "split": "test"}}, better.tensors)
    heads.save_head(better, tmp_path / "measured-b32.safetensors")
    monkeypatch.setattr(heads, "shipped_heads_dir", lambda: tmp_path)
    assert heads.shipped_head_for("ViT-B-32/openai").name == "measured-b32"


def test_shipped_heads_by_name_and_unknown_names(tmp_path, monkeypatch):
    assert resolve_head("laion-v1-vit-b-32", "ViT-B-32/openai", _never).name == "laion-v1-vit-b-32"
    with pytest.raises(HeadError, match="no shipped head of that name.*laion-v1-vit-b-32"):
        resolve_head("laion-v9", "ViT-B-32/openai", _never)
    # a file of that name in the current folder is the user's own head: it wins
    own = shipped_head_named("laion-v1-vit-b-32")
    heads.save_head(heads.Head({**own.metadata, "name": "mine"}, own.tensors), tmp_path / "laion-v1-vit-b-32")
    monkeypatch.chdir(tmp_path)
    assert resolve_head("laion-v1-vit-b-32", "ViT-B-32/openai", _never).name == "mine"
