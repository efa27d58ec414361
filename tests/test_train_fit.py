"""`aes-train fit` on planted-signal embeddings: the heads must recover a known ranking."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from aes_index.model.backbone import BackboneInfo, PreprocessSpec
from aes_index.model.heads import EMD_BINS, load_head
from aes_train.ava import make_split, read_ava
from aes_train.cache import EmbeddingCache
from aes_train.cli import main
from aes_index.model.heads import emd_distribution
from aes_train.fit import FitConfig, fit_head

from test_train_fixtures import planted_embeddings, write_ava_txt

DIM, EMBED = 32, 16
SPEC = PreprocessSpec(224, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
INFO = BackboneInfo("synthetic/planted", "synthetic", "planted", DIM, EMBED, SPEC)


@pytest.fixture
def planted(tmp_path):
    """AVA.txt + a cache whose vectors carry the mean score along one direction."""
    pooled, counts, direction = planted_embeddings(1500, DIM, seed=7, noise=0.1)
    ids = np.arange(500_000, 500_000 + len(pooled))
    rng = np.random.default_rng(7)
    ava_txt = write_ava_txt(tmp_path / "AVA.txt", ids, counts, rng)
    projection = rng.normal(size=(DIM, EMBED)).astype(np.float32)
    cache = EmbeddingCache(tmp_path / "cache", shard_rows=1000)
    cache.bind(INFO, projection)
    norms = np.linalg.norm(pooled @ projection, axis=1)
    for start in range(0, len(ids), 300):  # several shards, as a long run leaves them
        cache.append(ids[start : start + 300], pooled[start : start + 300], norms[start : start + 300])
    cache.flush()
    return {"ava": str(ava_txt), "cache": str(cache.folder), "ids": ids, "pooled": pooled, "counts": counts, "projection": projection}


def _held_out_srcc(head_path, planted):
    """SRCC of the saved head on the test rows, recomputed here with aes_index + scipy."""
    head = load_head(head_path)
    split = make_split(planted["ids"])
    pooled, counts = planted["pooled"][split.test], planted["counts"][split.test]
    score = head.predict(pooled, planted["projection"]).score
    means = counts @ EMD_BINS / counts.sum(axis=1)
    return spearmanr(score, means).statistic, head


@pytest.mark.parametrize(
    "options",
    # EMD heads get a larger step than the paper's 0.01: 1200 rows make 10 steps an
    # epoch here, against AVA's 1800, and the EMD gradient is small
    [["--kind", "linear"], ["--kind", "linear", "--solver", "ridge"], ["--kind", "emd", "--lr", "0.3"],
     ["--kind", "emd", "--hidden", "16", "--lr", "0.3"]],
    ids=["linear-sgd", "linear-ridge", "emd", "emd-mlp"],
)
def test_fit_recovers_the_planted_ranking(planted, tmp_path, options):
    out = tmp_path / "head.safetensors"
    argv = ["fit", "--ava", planted["ava"], "--cache", planted["cache"], "--out", str(out), "--max-epochs", "60", "-q"]
    assert main([*argv, *options]) == 0
    srcc, head = _held_out_srcc(out, planted)
    assert srcc > 0.9
    assert head.metadata["metrics"]["srcc"] == pytest.approx(srcc, abs=1e-6)  # the metadata tells the truth
    assert head.metadata["metrics"]["n"] == int(make_split(planted["ids"]).test.sum())
    assert head.kind == options[1] and head.backbone == INFO.key and head.metadata["input_dim"] == DIM


def test_head_carries_its_full_recipe(planted, tmp_path):
    out = tmp_path / "head.safetensors"
    argv = ["fit", "--ava", planted["ava"], "--cache", planted["cache"], "--out", str(out), "--kind", "emd",
            "--max-epochs", "5", "--patience", "3", "--seed", "3", "--split-seed", "2", "--name", "my-head", "-q"]
    assert main(argv) == 0
    meta = load_head(out).metadata
    assert meta["name"] == "my-head" and meta["input_space"] == "pooled" and meta["input_dim"] == DIM
    assert meta["config"] == {
        "kind": "emd", "hidden": 0, "space": "pooled", "solver": "sgd", "lr": 0.01, "momentum": 0.5,
        "batch_size": 128, "max_epochs": 5, "patience": 3, "seed": 3, "ridge_alphas": list(FitConfig().ridge_alphas),
    }
    assert meta["split"]["method"] == "seeded-hash" and meta["split"]["seed"] == 2
    assert meta["data"]["dataset"] == "AVA" and meta["data"]["embedded"] == 1500 and meta["data"]["ava_sha256"]
    assert meta["history"]["epochs"] <= 5 and set(meta["metrics"]) >= {"accuracy", "srcc", "plcc", "emd", "n"}
    assert meta["command"].startswith("aes-train fit --ava")


def test_training_is_reproducible_and_the_head_computes_what_was_trained(planted):
    table = read_ava(planted["ava"])
    x = planted["pooled"]
    hist = table.histograms()
    config = FitConfig(kind="emd", hidden=8, max_epochs=4)
    a = fit_head(config, x[:1200], hist[:1200], x[1200:], hist[1200:], log=lambda m: None)
    b = fit_head(config, x[:1200], hist[:1200], x[1200:], hist[1200:], log=lambda m: None)
    for name in a.tensors:
        np.testing.assert_array_equal(a.tensors[name], b.tensors[name])

    from aes_train.fit import make_head

    head = make_head("h", config, a, INFO.key, DIM, {})
    # the same network written out in numpy: standardise, hidden ReLU, softmax, expectation
    t = a.tensors
    hidden = np.maximum(((x - t["input_mean"]) * t["input_scale"]) @ t["hidden_weight"].T + t["hidden_bias"], 0)
    logits = hidden @ t["weight"].T + t["bias"]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(head.predict(x, None).score, probs @ EMD_BINS, rtol=1e-4)
    np.testing.assert_allclose(emd_distribution(head, x, None), probs, rtol=1e-4, atol=1e-6)


def test_projected_space_head_reads_the_projected_embedding(planted, tmp_path):
    out = tmp_path / "head.safetensors"
    assert main(["fit", "--ava", planted["ava"], "--cache", planted["cache"], "--out", str(out), "--kind", "linear",
                 "--solver", "ridge", "--space", "projected", "-q"]) == 0
    head = load_head(out)
    assert head.input_space == "projected" and head.metadata["input_dim"] == EMBED
    assert head.tensors["weight"].shape == (EMBED,)


@pytest.mark.parametrize(
    "options, message",
    [(["--kind", "linear", "--hidden", "8"], "--hidden"), (["--kind", "emd", "--solver", "ridge"], "ridge"),
     (["--kind", "linear", "--lr", "1e6"], "lower --lr")],
)
def test_bad_settings_are_one_line_errors(planted, tmp_path, capsys, options, message):
    code = main(["fit", "--ava", planted["ava"], "--cache", planted["cache"], "--out", str(tmp_path / "h.safetensors"), "-q", *options])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_fit_without_a_cache_says_what_to_run(tmp_path, capsys):
    (tmp_path / "AVA.txt").write_text("1 5 0 0 0 0 1 0 0 0 0 0 0 0 1\n")
    assert main(["fit", "--ava", str(tmp_path / "AVA.txt"), "--cache", str(tmp_path / "nocache")]) == 2
    assert "aes-train embed" in capsys.readouterr().err
