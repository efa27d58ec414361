"""Attribute scores: heads against a direct computation, no decoding, top --by, tags."""

from __future__ import annotations

import json
import os

import numpy as np
import open_clip
import pytest
import torch

from aes_index.features import attributes
from aes_index.index import pipeline
from aes_index.formats import xmp
from aes_index.model.backbone import load_backbone
from aes_index.cli import main
from aes_index.model.heads import Head, save_head
from aes_index.index.store import Index
from aes_index.targets.sidecar import is_star_tag

from conftest import make_photo
import index_rows


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_attribute_head_equals_direct_clip_computation(tiny_model):
    backbone = load_backbone(tiny_model["config"], tiny_model["checkpoint"], device="cpu", dtype="fp32")
    attribute = attributes.ATTRIBUTES["sharpness"]
    head = attributes.build_attribute_head(backbone, attribute)
    pixels = np.random.default_rng(5).integers(0, 256, size=(6, 64, 64, 3), dtype=np.uint8)
    ours = head.predict(backbone.encode_pooled(pixels), backbone.projection).score

    model, tokenizer = tiny_model["model"], open_clip.get_tokenizer("tiny-clip")
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        image = torch.nn.functional.normalize(
            model.encode_image((torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - mean) / std), dim=-1
        ).numpy()

        def side(texts):
            vectors = torch.nn.functional.normalize(model.encode_text(tokenizer(list(texts))), dim=-1).mean(0)
            return (vectors / vectors.norm()).numpy()

        expected = image @ side(attribute.positive) - image @ side(attribute.negative)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


@pytest.fixture
def shoot(tmp_path, model_args, capsys):
    root = tmp_path / "Shoot"
    for i in range(10):
        make_photo(root / f"IMG_{i}.jpg", seed=500 + i)
    assert run(capsys, "rebuild", root, *model_args, "--workers", "0")[0] == 0
    return root


def test_attributes_for_an_indexed_library_decode_nothing(shoot, model_args, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "decode_image", lambda *a, **k: pytest.fail("decoded a photo"))
    code, out, _ = run(capsys, "attributes", "--db", shoot / ".aes-index.db", *model_args, "--json")
    assert code == 0 and json.loads(out)["scored"] == {name: 10 for name in attributes.ATTRIBUTES}
    with Index(shoot / ".aes-index.db") as index:
        rows = [row for row in index_rows.scores(index) if row["head_id"].startswith("attribute-")]
        assert len(rows) == 60 and all(r["head_hash"] and r["backbone_id"] and r["preprocess"] for r in rows)  # provenance on every row
        assert index.runs.active_head_id().startswith("zeroshot-ensemble")  # attributes never become the active head
    code, out, _ = run(capsys, "attributes", "--db", shoot / ".aes-index.db", *model_args, "--json")
    assert json.loads(out)["scored"] == {name: 0 for name in attributes.ATTRIBUTES}  # nothing stale


def test_top_by_attribute_and_score_shows_them(shoot, model_args, capsys):
    run(capsys, "attributes", "--db", shoot / ".aes-index.db", *model_args)
    code, out, _ = run(capsys, "top", "--by", "sharpness", "-n", "10", "--db", shoot / ".aes-index.db", "--json")
    listed = json.loads(out)
    assert listed["head"] == "attribute-sharpness-zeroshot"
    scores = [p["score"] for p in listed["photos"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 10
    with Index(shoot / ".aes-index.db") as index:
        assert [r["path"] for r in index.scores.ranked("attribute-sharpness-zeroshot")] == [p["path"] for p in listed["photos"]]

    code, out, _ = run(capsys, "score", shoot / "IMG_3.jpg", "--attributes", "--db", shoot / ".aes-index.db", *model_args, "--json")
    assert set(json.loads(out)[0]["attributes"]) == set(attributes.ATTRIBUTES)
    code, out, err = run(capsys, "top", "--by", "bokeh", "--db", shoot / ".aes-index.db")
    assert code == 2 and "unknown attribute 'bokeh'" in err


def test_attribute_tags_live_beside_star_tags_and_respect_manual_ratings(shoot, model_args, capsys):
    db = shoot / ".aes-index.db"
    manual = shoot / "IMG_0.jpg"
    xmp.write_sidecar(xmp.sidecar_for(manual), rating=2)  # a person's rating
    run(capsys, "apply-ratings", "--db", db)
    code, out, _ = run(capsys, "attributes", "--db", db, *model_args, "--tags", "--json")
    assert code == 0 and json.loads(out)["tags"]["written"] > 0
    tagged = {p.name: xmp.read_sidecar(p).tags for p in shoot.glob("*.xmp")}
    sharp = [name for name, tags in tagged.items() if "sharp" in tags]
    assert len(sharp) == 2  # the top 20% of 10 photos
    assert all(any(is_star_tag(t) for t in tags) for name, tags in tagged.items() if name != "IMG_0.jpg.xmp")

    # tags-only writes must not make the person's rating look like ours
    code, out, _ = run(capsys, "apply-ratings", "--db", db, "--json")
    assert json.loads(out)["skipped_manual"] == 1 and xmp.read_sidecar(xmp.sidecar_for(manual)).rating == 2
    after = {p.name: set(xmp.read_sidecar(p).tags) for p in shoot.glob("*.xmp")}
    assert all("sharp" in after[name] for name in sharp)  # a rating write keeps attribute tags


def test_a_trained_head_can_replace_an_attribute(shoot, model_args, capsys, tmp_path):
    with Index(shoot / ".aes-index.db") as index:
        backbone = index.embeddings.backbones()[0]
    rng = np.random.default_rng(0)
    trained = Head(
        {"name": "my-sharpness", "kind": "linear", "backbone": backbone["key"], "input_space": "pooled",
         "input_dim": backbone["pooled_dim"]},
        {"weight": rng.normal(size=backbone["pooled_dim"]).astype(np.float32), "bias": np.zeros(1, np.float32)},
    )
    path = save_head(trained, tmp_path / "sharp.safetensors")
    code, out, _ = run(capsys, "attributes", "--db", shoot / ".aes-index.db", *model_args, "--only", "sharpness",
                       "--attribute-head", f"sharpness={path}", "--json")
    assert json.loads(out)["scored"] == {"sharpness": 10}
    code, out, _ = run(capsys, "top", "--by", "sharpness", "--db", shoot / ".aes-index.db", "--json")
    assert json.loads(out)["head"] == "my-sharpness"
