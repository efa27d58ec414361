"""`aes-train personal`: a head from the user's own ratings; aes-index's own ratings are no labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

import aes_index.cli
from aes_index.formats import exif_rating, xmp
from aes_index.index.store import journal
from aes_index.model.heads import load_head
from aes_index.index.store import Index
from aes_train.cli import main
from aes_train.personal import collect_ratings, indexed_photos

from test_train_fixtures import synthetic_photo


@pytest.fixture
def rated_library(tmp_path, model_args):
    """40 photos, brightness = quality; most rated by "the user" in sidecars or EXIF, some by aes-index."""
    rng = np.random.default_rng(5)
    root = tmp_path / "Photos"
    root.mkdir()
    quality = rng.uniform(0, 1, size=40)
    paths = []
    for i, q in enumerate(quality):
        path = root / f"IMG_{i:04d}.jpg"
        synthetic_photo(float(q), rng).save(path, quality=90)
        paths.append(path)
    stars = 1 + np.round(4 * quality).astype(int)
    db = tmp_path / "index.db"
    assert aes_index.cli.main(["rebuild", str(root), "--db", str(db), "--head", "zeroshot:fixed", "--workers", "0", "-q", *model_args]) == 0

    expected = {}  # image name -> (label, source) the trainer must use
    with Index(db) as index:
        for i, path in enumerate(paths):
            sidecar = xmp.sidecar_for(path)
            if i < 26:  # rated by the user in darktable/digiKam: sidecar
                xmp.write_sidecar(sidecar, rating=int(stars[i]))
                expected[path.name] = (int(stars[i]), "xmp")
            elif i < 32:  # digiKam/Windows: EXIF only
                exif_rating.write_exif_rating(path, int(stars[i]))
                expected[path.name] = (int(stars[i]), "exif")
            elif i < 35:  # written by aes-index (journaled): not a label
                xmp.write_sidecar(sidecar, rating=3)
                index.journal.record(1, journal.Write(target="xmp", place=str(sidecar), image_path=str(path), old=None, new=3))
            elif i == 35:  # aes-index wrote 3, the user changed it to 1: a label again
                xmp.write_sidecar(sidecar, rating=1)
                index.journal.record(1, journal.Write(target="xmp", place=str(sidecar), image_path=str(path), old=None, new=3))
                expected[path.name] = (1, "xmp")
            elif i == 36:  # rejected in darktable: counts as 0 stars
                xmp.write_sidecar(sidecar, rating=-1)
                expected[path.name] = (-1, "xmp")
            # 37..39: never rated
    return {"db": str(db), "expected": expected}


def test_ratings_come_from_the_user_only(rated_library):
    with Index(rated_library["db"]) as index:
        backbone_id = index.embeddings.backbones()[0]["id"]
        photos = indexed_photos(index, backbone_id)
        found = collect_ratings(index, photos)
        names = {image_id: path.rsplit("/", 1)[1] for image_id, path in photos}
    assert {names[i]: (r.rating, r.source) for i, r in found.items()} == rated_library["expected"]


def test_personal_head_ranks_held_out_photos_and_rescores_the_library(rated_library, tmp_path, model_args, capsys):
    out = tmp_path / "personal.safetensors"
    argv = ["personal", "--db", rated_library["db"], "--out", str(out), "--min-ratings", "20", "--json", *model_args]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ratings"] == len(rated_library["expected"]) == 34
    assert result["data"]["by_source"] == {"xmp": 28, "exif": 6}
    assert result["metrics"]["n"] >= 5 and result["metrics"]["srcc"] > 0.7  # held-out photos, stars from brightness
    head = load_head(out)
    assert head.kind == "linear" and head.name == "personal" and head.metadata["split"]["test"] == result["metrics"]["n"]
    assert head.metadata["config"]["include_rejects"] is True and "alpha" in head.metadata["config"]

    common = ["--db", rated_library["db"], "--workers", "0", "-q", *model_args]
    assert aes_index.cli.main(["rescore", "--head", str(out), *common]) == 0
    with Index(rated_library["db"]) as index:
        assert index.runs.active_head_id() == "personal"
        assert len(index.scores.ranked("personal")) == 40


def test_import_default_ratings_can_be_ignored(rated_library, tmp_path, model_args, capsys):
    ones = sum(1 for stars, _ in rated_library["expected"].values() if stars == 1)
    argv = ["personal", "--db", rated_library["db"], "--out", str(tmp_path / "p.safetensors"), "--json",
            "--treat-as-unrated", "1", "--skip-rejects", *model_args]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert ones and result["ratings"] == 34 - ones - 1
    assert load_head(tmp_path / "p.safetensors").metadata["config"]["treat_as_unrated"] == [1]


def test_too_few_ratings_is_a_clear_error(rated_library, tmp_path, model_args, capsys):
    argv = ["personal", "--db", rated_library["db"], "--out", str(tmp_path / "p.safetensors"), "--min-ratings", "100", "-q", *model_args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "34 rated photos" in err and "at least 100" in err and len(err.strip().splitlines()) == 1


def test_another_backbone_is_named(rated_library, tmp_path, tiny_model, capsys):
    other = ["--model", tiny_model["config"], "--pretrained", "random"]
    assert main(["personal", "--db", rated_library["db"], "--out", str(tmp_path / "p.safetensors"), *other]) == 5
    assert "no embeddings from tiny-clip/random" in capsys.readouterr().err


def test_without_model_flags_the_index_backbone_is_used(rated_library, tmp_path, capsys):
    """`aes-train personal` learns from the index's embeddings: with no --model/--pretrained
    it takes the backbone the index was built with (the tiny model here), not ViT-B-32."""
    out = tmp_path / "p.safetensors"
    assert main(["personal", "--db", rated_library["db"], "--out", str(out), "--min-ratings", "20", "--json"]) == 0
    with Index(rated_library["db"]) as index:
        assert load_head(out).backbone == index.embeddings.backbones()[0]["key"]
