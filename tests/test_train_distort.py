"""`aes-train distort`: filter distortions of good photos, a ranking head, its evaluation.

The generator is checked on a crop of a real photograph (determinism; each filter
moves its own measure of the image, monotone in strength). The trainer is checked on
planted embeddings where every distortion is a direction in feature space, and the
whole path (decode -> distort -> tiny CLIP -> head -> aes-index rescore) once for real.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import aes_index.cli
from aes_index.formats import xmp
from aes_index.errors import ConfigError
from aes_index.model.heads import load_head
from aes_index.index.store import Index
from aes_train.cli import main
from aes_train.distort import (
    DISTORTIONS, ORIGINAL, DistortConfig, Photo, Variant, VersionEmbeddings, distort, embed_versions, variant_list, versions,
)
from aes_train.personal import PersonalConfig
from aes_train.ranking import (
    PARTS, RankConfig, assign_parts, pairs_of, pairwise_accuracy, ranking_head, ranking_pairs, split_photos, train_ranker,
)
from aes_train.warmstart import fit_with_prior, predict_with_prior, raw_linear, warm_head, warm_personal

from conftest import PHOTO, make_photo

LEVELS = 5


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    with Image.open(PHOTO) as source:
        return source.convert("RGB").crop((300, 300, 1260, 940)).resize((240, 160))


# --- the generator ------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_pixels(photo):
    config = DistortConfig(levels=3, seed=7)
    first = [(v, im.tobytes()) for v, im in versions(photo, config, photo_key=42)]
    again = [(v, im.tobytes()) for v, im in versions(photo, config, photo_key=42)]
    assert first == again and len(first) == 1 + len(DISTORTIONS) * 3
    # a version doesn't depend on which other distortions the run makes
    alone = DistortConfig(distortions=("noise",), levels=3, seed=7)
    assert distort(photo, Variant("noise", 2), alone, 42).tobytes() == dict(first)[Variant("noise", 2)]
    # another seed or another photo draws other noise
    for other_seed, other_key in ((8, 42), (7, 43)):
        other = distort(photo, Variant("noise", 2), DistortConfig(levels=3, seed=other_seed), other_key)
        assert other.tobytes() != dict(first)[Variant("noise", 2)]


def _luma(a):
    return a.astype(np.float64) @ [0.299, 0.587, 0.114]


def _high_frequency_energy(a, original):
    g = _luma(a)
    laplacian = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return -np.mean(laplacian**2)  # negated: it falls as the blur grows


def _difference_std(a, original):
    return np.std(a.astype(np.float64) - original)


def _saturation_loss(a, original):
    a = a.astype(np.float64)
    return -np.mean(a.max(axis=2) - a.min(axis=2))


def _cast(a, original):
    shift = lambda x: x[..., 0].astype(np.float64).mean() - x[..., 2].astype(np.float64).mean()  # noqa: E731
    return abs(shift(a) - shift(original))


# A measure per distortion that must rise strictly from the original through every level.
MEASURES = {
    "blur": _high_frequency_energy,
    "noise": _difference_std,
    "jpeg": _difference_std,
    "overexpose": lambda a, o: _luma(a).mean(),
    "underexpose": lambda a, o: -_luma(a).mean(),
    "desaturate": _saturation_loss,
    "contrast": lambda a, o: -_luma(a).std(),
    "colour-cast": _cast,
    "tilt": _difference_std,
}


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_each_distortion_changes_the_image_monotone_in_strength(photo, name):
    config = DistortConfig(distortions=(name,), levels=LEVELS, seed=0)
    original = np.asarray(photo)
    measured = []
    for variant, image in versions(photo, config, photo_key=1):
        assert image.size == photo.size and image.mode == "RGB"
        measured.append(MEASURES[name](np.asarray(image), original))
    assert all(b > a for a, b in zip(measured, measured[1:])), f"{name}: {np.round(measured, 3)}"
    assert measured[1] - measured[0] > 0.02 * abs(measured[-1] - measured[0])  # even the mild level is visible


def test_amounts_run_from_mild_to_strong():
    for d in DISTORTIONS.values():
        amounts = [d.amount(k, 4) for k in range(1, 5)]
        assert amounts[0] == pytest.approx(d.mild) and amounts[-1] == pytest.approx(d.strong)
        assert np.all(np.diff(amounts) * np.sign(d.strong - d.mild) > 0)
    assert variant_list(DistortConfig(distortions=("blur",), levels=2)) == [Variant(ORIGINAL, 0), Variant("blur", 1), Variant("blur", 2)]
    with pytest.raises(ConfigError, match="--distortions"):
        DistortConfig(distortions=("sepia",))
    with pytest.raises(ConfigError, match="--levels"):
        DistortConfig(levels=0)


def test_originals_are_the_pixels_aes_index_embeds(tiny_model, tmp_path):
    """The undistorted version goes through pipeline.prepare()'s steps exactly: same vectors."""
    from aes_index.model.backbone import load_backbone
    from aes_index.index.pipeline import embed_stream

    backbone = load_backbone(tiny_model["config"], tiny_model["checkpoint"], "cpu", "fp32")
    photos = [Photo(i, str(make_photo(tmp_path / f"{i}.jpg", seed=i, size=(120, 90)))) for i in range(3)]
    made = embed_versions(backbone, photos, DistortConfig(distortions=("blur",), levels=1), batch_size=4)
    served = np.concatenate([b.pooled for b in embed_stream(backbone, [(p.key, p.path) for p in photos], 8, 0)])
    np.testing.assert_array_equal(made.pooled[made.levels == 0], served)
    assert not np.array_equal(made.pooled[made.levels == 1], served)


# --- pairs, split, trainer on planted embeddings ------------------------------------------


def planted_versions(photos=60, dim=48, levels=3, noise=0.3, seed=0) -> VersionEmbeddings:
    """Every distortion moves the features along its own direction, by its level; photo
    content (much larger) and noise are random. A linear head can rank every chain."""
    config = DistortConfig(levels=levels)
    variants = variant_list(config)
    rng = np.random.default_rng(seed)
    directions = {name: rng.normal(size=dim) / np.sqrt(dim) for name in config.distortions}
    rows, keys, which = [], [], []
    for key in range(photos):
        content = rng.normal(size=dim) * 2.0
        for index, v in enumerate(variants):
            shift = 0 if v.level == 0 else v.level * directions[v.distortion]
            rows.append(content + shift + rng.normal(size=dim) * noise / np.sqrt(dim))
            keys.append(1000 + key)
            which.append(index)
    pooled = np.array(rows).astype(np.float16).astype(np.float32)
    return VersionEmbeddings(variants, np.array(keys), np.array(which, dtype=np.int32), pooled, [])


def test_pairs_are_every_ordered_pair_within_a_photos_chain():
    versions_ = planted_versions(photos=3, dim=8, levels=3)
    pairs = ranking_pairs(versions_)
    assert len(pairs) == 3 * len(DISTORTIONS) * (4 * 3 // 2)  # chain of 4: 6 pairs
    assert np.array_equal(versions_.photo[pairs.better], versions_.photo[pairs.worse])
    assert np.all(versions_.levels[pairs.better] < versions_.levels[pairs.worse])
    names = versions_.distortion_names()
    assert np.all((names[pairs.worse] == pairs.distortion) & ((names[pairs.better] == pairs.distortion) | pairs.from_original))
    assert pairs.from_original.sum() == 3 * len(DISTORTIONS) * 3


def test_split_is_by_photo_with_exact_counts():
    keys = np.arange(500, 540)
    parts = assign_parts(keys, 0.2, 0.15, seed=0)
    assert [int((parts == p).sum()) for p in PARTS] == [26, 6, 8]
    assert np.array_equal(parts, assign_parts(keys[::-1], 0.2, 0.15, seed=0)[::-1])  # order-free
    assert not np.array_equal(parts, assign_parts(keys, 0.2, 0.15, seed=1))
    versions_ = planted_versions(photos=10, dim=8, levels=2)
    by_photo = split_photos(versions_.photo, RankConfig())
    pairs = ranking_pairs(versions_)
    held = [pairs_of(pairs, versions_, by_photo, p) for p in PARTS]
    assert sum(len(h) for h in held) == len(pairs)
    seen = [set(versions_.photo[h.better].tolist()) for h in held]
    assert not (seen[0] & seen[2]) and not (seen[1] & seen[2]) and not (seen[0] & seen[1])


@pytest.mark.parametrize("loss", ["logistic", "margin"])
def test_trainer_ranks_held_out_photos_of_planted_signal(loss):
    versions_ = planted_versions()
    config = RankConfig(loss=loss, seed=3)
    parts = split_photos(versions_.photo, config)
    train, val, test = (pairs_of(ranking_pairs(versions_), versions_, parts, p) for p in PARTS)
    result = train_ranker(config, versions_.pooled, train, val, log=lambda m: None)
    metrics = pairwise_accuracy(result.scores(versions_.pooled), test)
    assert metrics["pairs"] == 12 * len(DISTORTIONS) * 6
    assert metrics["pairwise_accuracy"] > 0.9, metrics
    assert min(metrics["by_distortion"].values()) > 0.75, metrics
    assert result.history["best_epoch"] >= 1
    again = train_ranker(config, versions_.pooled, train, val, log=lambda m: None)
    assert np.array_equal(again.weight, result.weight)  # seeds fixed: the same head


def test_ranking_head_scores_as_the_trainer_did():
    versions_ = planted_versions(photos=12, dim=16)
    config = RankConfig(max_epochs=5)
    parts = split_photos(versions_.photo, config)
    train, val, _ = (pairs_of(ranking_pairs(versions_), versions_, parts, p) for p in PARTS)
    result = train_ranker(config, versions_.pooled, train, val, log=lambda m: None)
    originals = versions_.pooled[versions_.levels == 0]
    head = ranking_head("r", result, originals, "tiny/x", {"metrics": {}})
    score = head.predict(versions_.pooled, None).score
    np.testing.assert_allclose(score - score[0], result.scores(versions_.pooled) - result.scores(versions_.pooled)[0], atol=1e-3)
    assert abs(head.predict(originals, None).score.mean()) < 1e-3  # 0 = the average training photo
    assert head.kind == "linear" and head.input_space == "pooled" and head.metadata["input_dim"] == 16


# --- a personal head started from the distortion head --------------------------------------


def test_warm_start_folds_into_one_linear_head_and_helps_with_few_ratings():
    rng = np.random.default_rng(0)
    dim, n = 64, 36
    taste = rng.normal(size=dim)
    pooled = rng.normal(size=(n, dim)).astype(np.float32)
    stars = np.clip(np.round(3 + (pooled @ taste) / np.sqrt(dim) * 1.5), 1, 5)
    # a prior head that knows the taste up to noise, on its own scale and offset
    from aes_index.model.heads import Head

    prior_head = Head({"name": "prior", "kind": "linear", "backbone": "tiny/x", "input_space": "pooled", "input_dim": dim},
                      {"weight": (0.1 * taste + 0.03 * rng.normal(size=dim)).astype(np.float32), "bias": np.array([7.0], np.float32)})
    test = np.zeros(n, dtype=bool)
    test[:12] = True
    config = PersonalConfig(seed=0)
    tensors, metrics, alpha = warm_personal(pooled, stars, test, prior_head, config)
    assert metrics["n"] == 12 and metrics["srcc"] > 0.7
    assert metrics["srcc"] >= metrics["srcc_ratings_only"]  # 24 ratings over 64 features: the prior carries it

    head = warm_head(tensors, metrics, alpha, prior_head, dim, n, {})
    prior = pooled @ raw_linear(prior_head)[0] + raw_linear(prior_head)[1]
    expected = predict_with_prior(fit_with_prior(pooled, stars, prior, alpha), pooled, prior)
    np.testing.assert_allclose(head.predict(pooled, None).score, expected, rtol=1e-4, atol=1e-3)
    assert head.metadata["prior"]["head"] == "prior"


# --- the command, end to end with the tiny model -------------------------------------------

# The random tiny CLIP sees tone and colour far better than blur or JPEG blocks (it was
# never trained on anything); the end-to-end run uses the distortions it can see, while
# the trainer itself is checked on all of them above.
VISIBLE_TO_TINY = "contrast,underexpose,overexpose,colour-cast"


@pytest.fixture
def rated_library(tmp_path, model_args):
    """24 photos indexed by aes-index: 14 rated 4-5 stars, 8 rated 1-3, 2 unrated."""
    root = tmp_path / "Photos"
    stars = [5, 4] * 7 + [1, 2, 3, 2, 1, 3, 2, 1] + [0, 0]
    for i, value in enumerate(stars):
        path = make_photo(root / f"IMG_{i:04d}.jpg", seed=300 + i, size=(128, 96))
        if value:
            xmp.write_sidecar(xmp.sidecar_for(path), rating=value)
    db = tmp_path / "index.db"
    common = ["--db", str(db), "--workers", "0", "-q", *model_args]
    assert aes_index.cli.main(["rebuild", str(root), "--head", "zeroshot:fixed", *common]) == 0
    return {"root": root, "db": str(db), "common": common}


def test_distort_from_index_trains_a_head_that_rescores_the_library(rated_library, tmp_path, model_args, capsys):
    out, personal = tmp_path / "distort.safetensors", tmp_path / "personal.safetensors"
    argv = ["distort", "--from-index", rated_library["db"], "--out", str(out), "--personal-out", str(personal),
            "--distortions", VISIBLE_TO_TINY, "--levels", "3", "--json", *model_args]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    metrics = result["metrics"]
    assert metrics["photos"] == 3 and metrics["pairs"] == 3 * 4 * 6  # 20% of 14 good photos, held out
    assert metrics["pairwise_accuracy"] > 0.75, metrics  # chance is 0.5
    assert metrics["srcc_photos"] == 5  # 3 good + 2 other rated photos, none seen in training

    head = load_head(out)
    assert head.kind == "linear" and head.name.startswith("distort-rank-tiny-clip")
    assert head.metadata["data"]["photos"] == 14 and head.metadata["data"]["rated"] == 22
    assert head.metadata["split"] == {"method": "seeded-hash of photos, lowest hashes", "seed": 0, "train": 9, "val": 2, "test": 3}
    assert head.metadata["config"]["distort"]["table"]["contrast"]["amounts"] == [0.25, 0.55, 0.85]
    assert head.metadata["metrics"] == metrics and "aes-train distort" in head.metadata["command"]
    warm = load_head(personal)
    assert warm.kind == "linear" and warm.metadata["prior"]["hash"] == head.hash
    assert set(result["personal"]["metrics"]) >= {"srcc", "srcc_prior_only", "srcc_ratings_only", "n"}

    with Index(rated_library["db"]) as index:
        before = {r["path"]: r["score"] for r in index.scores.ranked(index.runs.active_head_id())}
    assert aes_index.cli.main(["rescore", "--head", str(out), *rated_library["common"]]) == 0
    with Index(rated_library["db"]) as index:
        assert index.runs.active_head_id() == head.name
        after = {r["path"]: r["score"] for r in index.scores.ranked(head.name)}
    assert set(after) == set(before) and len(after) == 24 and after != before


def test_distort_a_folder_records_undecodable_photos_and_saves_versions(tmp_path, model_args, capsys):
    folder = tmp_path / "best"
    for i in range(8):
        make_photo(folder / f"P{i}.jpg", seed=400 + i, size=(112, 84))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    saved = tmp_path / "versions"
    argv = ["distort", "--images", str(folder), "--out", str(tmp_path / "h.safetensors"), "--distortions", "blur,noise",
            "--levels", "2", "--save-images", str(saved), "--max-epochs", "3", "--json", *model_args]
    assert main(argv) == 3  # finished, one photo undecodable
    result = json.loads(capsys.readouterr().out)
    assert [f["path"].rsplit("/", 1)[1] for f in result["failed"]] == ["broken.jpg"]
    assert "srcc" not in result["metrics"]  # no ratings in a plain folder
    folders = sorted(saved.iterdir())
    assert len(folders) == 8 and folders[0].name.startswith("P0-")
    for versions_of_one in folders:
        names = sorted(p.name for p in versions_of_one.iterdir())
        assert names == ["blur-1.png", "blur-2.png", "noise-1.png", "noise-2.png", "original.png"]
    assert load_head(tmp_path / "h.safetensors").metadata["data"]["failed_to_decode"] == 1


def test_distort_errors_are_one_line(tmp_path, model_args, capsys):
    folder = tmp_path / "two"
    for i in range(2):
        make_photo(folder / f"P{i}.jpg", seed=i, size=(112, 84))
    base = ["distort", "--images", str(folder), "-q", *model_args]
    assert main([*base, "--out", str(tmp_path / "h.safetensors")]) == 2
    assert main([*base, "--personal-out", str(tmp_path / "p")]) == 2
    assert main([*base, "--distortions", "sepia"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and "at least 3" in lines[0] and "--from-index" in lines[1] and "sepia" in lines[2]
