"""The LAION heads aes-index ships: converted exactly from the published files, chosen by
`--head auto` only where their AVA figure is the best on record, and usable by name."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aes_index.model import heads
from aes_index.errors import HeadError
from aes_index.model.head_choice import resolve_head
from aes_index.model.heads import load_head, shipped_head_named

from conftest import REPO_ROOT, UPSTREAM_HEADS

V2_FILE = UPSTREAM_HEADS / "laion-v2-sac+logos+ava1-l14-linearMSE.pth"
V1_FILE = UPSTREAM_HEADS / "laion-v1-sa_0_4_vit_b_32_linear.pth"


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


def test_v1_head_equals_the_published_linear_layer():
    head = shipped_head_named("laion-v1-vit-b-32")
    layer = torch.nn.Linear(512, 1)
    layer.load_state_dict(torch.load(V1_FILE, map_location="cpu", weights_only=True), strict=True)
    x = unit_vectors(500, 512, seed=8)
    with torch.no_grad():
        expected = layer(torch.from_numpy(x)).numpy()[:, 0]
    assert np.abs(head.predict(x, None).score - expected).max() <= 1e-5


def test_the_conversion_reproduces_the_shipped_files_byte_for_byte(tmp_path):
    converter = _converter()
    assert converter.main(["--upstream", str(UPSTREAM_HEADS), "--out", str(REPO_ROOT / "plugin" / "aes_index" / "heads"), "--check"]) == 0
    # and a changed upstream file is refused rather than converted
    bad = tmp_path / "upstream"
    bad.mkdir()
    for path in UPSTREAM_HEADS.iterdir():
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


# --- through the commands, on an index of ViT-L-14/openai's shape ------------------------

N_PHOTOS = 12


@pytest.fixture
def l14_library(tmp_path):
    """A library indexed with ViT-L-14/openai exactly as aes-index stores it: real photo
    files, each one's pooled features (1024-d, float16) and the backbone's projection
    (1024 x 768). The values are random (the weights can't be fetched here); what is tested
    is what the commands do with them."""
    from aes_index.model.backbone import BackboneInfo, PreprocessSpec
    from aes_index.index.discover import fingerprint
    from aes_index.index.store import Index

    from conftest import make_photo

    root = tmp_path / "Photos"
    paths = [make_photo(root / f"IMG_{i:03d}.jpg", seed=300 + i) for i in range(N_PHOTOS)]
    rng = np.random.default_rng(17)
    projection = (rng.normal(size=(1024, 768)) / 32).astype(np.float32)
    pooled = rng.normal(size=(N_PHOTOS, 1024)).astype(np.float16)  # what the index can hold, exactly
    norms = np.linalg.norm(pooled.astype(np.float32) @ projection, axis=1)
    spec = PreprocessSpec(224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    info = BackboneInfo("ViT-L-14/openai", "ViT-L-14", "openai", 1024, 768, spec)
    db = root / ".aes-index.db"
    with Index(db) as index, index.transaction():
        index.add_roots([str(root)])
        backbone_id = index.embeddings.ensure_backbone(info, projection)
        ids = []
        for path in paths:
            stat = path.stat()
            ids.append(index.images.add(str(path), stat.st_size, stat.st_mtime_ns, fingerprint(str(path))))
        index.embeddings.put(backbone_id, ids, pooled, norms)
        index.images.mark_ok(ids)
    # what the published code computes: the projected embedding, divided by its norm, through the layer stack
    embeddings = pooled.astype(np.float32) @ projection
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    with torch.no_grad():
        expected = published_v2_stack().layers(torch.from_numpy(embeddings)).numpy()[:, 0]
    return {"root": root, "db": db, "paths": [str(p) for p in paths], "expected": dict(zip(map(str, paths), expected))}


def _cli(capsys, *argv):
    from conftest import run_cli

    return run_cli(capsys, *argv)


def test_rescore_of_a_vit_l_14_index_equals_the_published_stack(l14_library, capsys):
    db, expected = l14_library["db"], l14_library["expected"]
    code, out, err = _cli(capsys, "rescore", "--db", db, "--json")  # --head auto, the index's backbone
    summary = json.loads(out)
    assert code == 0 and summary["head"] == "laion-v2-vit-l-14" and summary["scored"] == N_PHOTOS, err
    code, out, err = _cli(capsys, "top", "--db", db, "-n", 100, "--json")
    listed = json.loads(out)
    assert listed["head"] == "laion-v2-vit-l-14" and listed["scale"]["short"] == "1-10"
    ours = {row["path"]: row["score"] for row in listed["photos"]}
    assert set(ours) == set(expected)
    assert max(abs(ours[p] - expected[p]) for p in ours) <= 1e-5
    assert np.std(list(expected.values())) > 0.01


def test_scores_on_the_1_to_10_scale_flow_through_ratings_report_and_darktable(l14_library, capsys, caplog, tmp_path):
    from aes_index.formats import xmp
    from aes_index.features.stars import RatingPolicy, stars_for

    db, expected = l14_library["db"], l14_library["expected"]
    assert _cli(capsys, "rescore", "--db", db, "--json")[0] == 0
    paths = sorted(expected, key=expected.get)
    scores = np.array([expected[p] for p in paths])

    # the scale beside the list: a notice on stderr (in-process, the log record), stdout one photo a line
    with caplog.at_level("INFO", logger="aes_index.notice"):
        code, out, err = _cli(capsys, "top", "--db", db, "-n", 3)
    assert code == 0 and len(out.splitlines()) == 3
    assert "laion-v2-vit-l-14, best first; scores: mean rating, about 1-10" in caplog.text

    # threshold cut points are on the head's scale: these fall inside the scores' range
    low, high = float(np.quantile(scores, 0.25)), float(np.quantile(scores, 0.75))
    cuts = ",".join(f"{v:.3f}" for v in np.linspace(low, high, 4))
    code, out, err = _cli(capsys, "apply-ratings", "--db", db, "--policy", "threshold", "--cuts", cuts, "--json")
    assert code == 0, err
    wanted = stars_for(scores, RatingPolicy.parse("threshold", cuts))
    assert len(set(wanted.tolist())) >= 3  # the cuts split the library: the test can tell a wrong scale
    for path, stars, score in zip(paths, wanted, scores):
        info = xmp.read_sidecar(Path(path + ".xmp"))
        assert info.rating == stars and abs(info.aes.score - score) < 1e-4, path  # the score as it is, 1-10

    # cut points from another head's scale are refused, in one line, before anything is written
    code, out, err = _cli(capsys, "apply-ratings", "--db", db, "--policy", "threshold", "--cuts", "0.01,0.02,0.03,0.04")
    assert code == 2 and err.count("\n") == 1 and "not on the scale" in err and "1 to 10" in err

    # percentile: unchanged, the library's own ranks
    code, out, err = _cli(capsys, "apply-ratings", "--db", db, "--json")
    assert code == 0, err
    by_rank = stars_for(scores, RatingPolicy())
    assert [xmp.read_sidecar(Path(p + ".xmp")).rating for p in paths] == by_rank.tolist()

    # the gallery: scores as they are, and the scale said beside them
    page = tmp_path / "gallery.html"
    code, out, err = _cli(capsys, "report", "--db", db, "--out", page, "--json")
    assert code == 0, err
    from test_report import page_json

    data = page_json(page)
    assert data["head"] == "laion-v2-vit-l-14" and data["scale"]["short"] == "1-10" and "1-10" in data["scale"]["text"]
    assert max(abs(row["score"] - expected[os.path.join(row_folder(data, row), row["name"])]) for row in data["photos"]) <= 1e-5
    html = page.read_text()
    assert "scores ${data.scale.short}" in html and '["Scale", data.scale.text]' in html

    # darktable's plugin: its answer holds the same stars (the photos are unchanged: nothing decoded)
    from test_darktable import ask, images

    answer = ask(capsys, tmp_path, "rate", {"images": images(paths, [0] * len(paths))}, "--db", db)
    assert answer["head"] == "laion-v2-vit-l-14"
    assert {paths[item["ref"] - 1]: item["stars"] for item in answer["images"]} == dict(zip(paths, by_rank.tolist()))


def row_folder(data: dict, row: dict) -> str:
    return data["folders"][row["folder"]]["path"]


# --- aes-train evaluate --------------------------------------------------------------------


def test_aes_train_evaluate_puts_the_shipped_laion_head_beside_table_1(tmp_path, capsys):
    """One command: `aes-train evaluate --head shipped` on an AVA cache of ViT-L-14/openai.
    The cache is AVA-shaped (random vectors of the backbone's sizes, labelled so the mean
    rating rises with the published stack's score): SRCC 1 shows that what is evaluated is
    the published head, through the cache, the split and aes-index's Head.predict."""
    from aes_index.model.backbone import BackboneInfo, PreprocessSpec
    from aes_train.cache import EmbeddingCache
    from aes_train.cli import main as aes_train

    n = 80
    rng = np.random.default_rng(23)
    projection = (rng.normal(size=(1024, 768)) / 32).astype(np.float32)
    pooled = rng.normal(size=(n, 1024)).astype(np.float16)
    embeddings = pooled.astype(np.float32) @ projection
    norms = np.linalg.norm(embeddings, axis=1)
    with torch.no_grad():
        stack = published_v2_stack().layers(torch.from_numpy(embeddings / norms[:, None])).numpy()[:, 0]
    spec = PreprocessSpec(224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    cache = EmbeddingCache(tmp_path / "cache")
    cache.bind(BackboneInfo("ViT-L-14/openai", "ViT-L-14", "openai", 1024, 768, spec), projection)
    ids = np.arange(1000, 1000 + n)
    cache.append(ids, pooled, norms)
    cache.flush()
    # AVA.txt rows: index, id, votes for 1..10, two tags, challenge; 1000 votes split between
    # two neighbouring scores give a mean that follows the stack's rank exactly
    means = 2 + 6 * (np.argsort(np.argsort(stack)) + 0.5) / n
    lines = []
    for k, (image_id, mean) in enumerate(zip(ids, means)):
        votes = [0] * 10
        low = int(np.floor(mean))
        votes[low - 1 + 1] = int(round((mean - low) * 1000))
        votes[low - 1] = 1000 - votes[low]
        lines.append(" ".join(map(str, [k + 1, image_id, *votes, 0, 0, 1])))
    ava = tmp_path / "AVA.txt"
    ava.write_text("\n".join(lines) + "\n")

    argv = ["evaluate", "--ava", ava, "--cache", tmp_path / "cache", "--head", "shipped", "--test-fraction", "0.5"]
    assert aes_train([str(a) for a in argv] + ["--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert set(measured) == {"laion-v2-vit-l-14"}  # the heads shipped for the cache's backbone
    assert measured["laion-v2-vit-l-14"]["srcc"] > 0.999 and n / 4 < measured["laion-v2-vit-l-14"]["n"] < 3 * n / 4  # a hashed split: about half
    assert aes_train([str(a) for a in argv]) == 0
    table = capsys.readouterr().out
    for row in ("laion-v2-vit-l-14 (test)", "published: laion-v2-vit-l-14", "0.665", "paper: ensemble", "0.539", "paper: fine-tuned"):
        assert row in table
    # by name, the same; a head for another backbone is refused in one line
    by_name = [*map(str, argv[:-3]), "laion-v2-vit-l-14", "--test-fraction", "0.5", "--json"]
    assert aes_train(by_name) == 0 and json.loads(capsys.readouterr().out) == measured
    code = aes_train([*map(str, argv[:-3]), "laion-v1-vit-b-32", "--test-fraction", "0.5"])
    err = capsys.readouterr().err
    assert code == 4 and "made for backbone ViT-B-32/openai" in err and err.count("\n") == 1


def test_doctor_says_which_head_auto_takes_and_why(capsys, tmp_path):
    """Without weights (none can be fetched here) doctor fails the weights check, and still
    says which scorer each preset's backbone gets, with the AVA figure and its source."""
    code, out, err = _cli(capsys, "doctor", "--db", tmp_path / "none.db", "--preset", "fast", "--json")
    head = {c["name"]: c for c in json.loads(out)["checks"]}["head"]
    assert head["ok"] and head["head"] == "zeroshot-ensemble-outstanding-vs-horrible"
    assert "0.539" in head["why"] and "Table 1" in head["why"] and "laion-v1-vit-b-32 (no published AVA figure)" in head["why"]
    code, out, err = _cli(capsys, "doctor", "--db", tmp_path / "none.db", "--preset", "best")
    line = next(l for l in out.splitlines() if "] head" in l)
    assert "laion-v2-vit-l-14" in line and "0.665" in line and "pyiqa" in line and "scores 1-10" in line
