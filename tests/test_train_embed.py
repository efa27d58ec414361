"""`aes-train embed`: a resumable cache; missing and corrupt images recorded, never fatal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aes_index.model.backbone import load_backbone
from aes_index.index.pipeline import prepare
from aes_train.ava import find_images, read_ava
from aes_train.cache import EmbeddingCache
from aes_train.cli import main
from aes_train.embed import embed_dataset

from test_train_fixtures import make_ava, synthetic_photo


@pytest.fixture
def dataset(tmp_path):
    return make_ava(tmp_path / "ava", n=14, missing=1, corrupt=1)


def _embed(dataset, cache, model_args, *extra):
    return main(["embed", "--ava", str(dataset.ava_txt), "--images", str(dataset.images), "--cache", str(cache),
                 "--workers", "0", "--batch-size", "4", "-q", *model_args, *extra])


def test_embeds_everything_and_records_missing_and_corrupt(dataset, tmp_path, model_args, tiny_model, capsys):
    cache_dir = tmp_path / "cache"
    assert _embed(dataset, cache_dir, model_args) == 3  # like aes-index: done, but some files failed
    cache = EmbeddingCache(cache_dir)
    loaded = cache.load()
    good = sorted(set(dataset.ids.tolist()) - set(dataset.missing) - set(dataset.corrupt))
    assert loaded.ids.tolist() == good and loaded.pooled.dtype == np.float16
    assert set(cache.failed) == set(dataset.corrupt) and cache.failed[dataset.corrupt[0]]["code"]
    assert (cache_dir / "missing.txt").read_text().split() == [str(i) for i in dataset.missing]
    assert cache.info.key.startswith("tiny-clip/file:")

    # the cached vector is what aes-index computes for the same file: no train/serve skew
    backbone = load_backbone(tiny_model["config"], tiny_model["checkpoint"], "cpu", "fp32")
    first = find_images(dataset.images, [good[0]]).paths[good[0]]
    serving = backbone.encode_pooled(np.array(prepare(first, backbone.info.preprocess))[None]).astype(np.float16)
    np.testing.assert_array_equal(loaded.pooled[0], serving[0])

    capsys.readouterr()
    assert _embed(dataset, cache_dir, model_args, "--json") == 0  # nothing left to do
    summary = json.loads(capsys.readouterr().out)
    assert summary["embedded"] == 0 and summary["failed"] == 0 and summary["already"] == len(good) + 1


def test_interrupted_run_continues_where_it_stopped(dataset, tmp_path, model_args, settings):
    # a reference cache, embedded in one go
    assert _embed(dataset, tmp_path / "whole", model_args) == 3
    whole = EmbeddingCache(tmp_path / "whole").load()

    # the same, interrupted (Ctrl-C) after two batches ...
    backbone = load_backbone(settings.model, settings.pretrained, "cpu", "fp32")
    table = read_ava(dataset.ava_txt)
    items = find_images(dataset.images, table.image_ids).paths.items()
    cache = EmbeddingCache(tmp_path / "resumed")
    calls = []

    def interrupt_after_two(summary):
        calls.append(summary.embedded)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_dataset(backbone, items, cache, batch_size=4, workers=0, on_batch=interrupt_after_two)
    partial = EmbeddingCache(tmp_path / "resumed").load()
    assert len(partial.ids) == 8  # both finished batches survived the interrupt

    # ... and run again: it embeds only the rest
    assert _embed(dataset, tmp_path / "resumed", model_args) == 3
    resumed = EmbeddingCache(tmp_path / "resumed")
    assert resumed.manifest["rows"] == len(whole.ids)
    final = resumed.load()
    np.testing.assert_array_equal(final.ids, whole.ids)
    np.testing.assert_array_equal(final.pooled, whole.pooled)
    np.testing.assert_array_equal(final.proj_norms, whole.proj_norms)
    assert resumed.failed == EmbeddingCache(tmp_path / "whole").failed


def test_limit_then_the_rest(dataset, tmp_path, model_args):
    cache_dir = tmp_path / "cache"
    assert _embed(dataset, cache_dir, model_args, "--limit", "5") == 0
    assert len(EmbeddingCache(cache_dir).load().ids) == 5
    assert _embed(dataset, cache_dir, model_args) == 3
    assert len(EmbeddingCache(cache_dir).load().ids) == 12


def test_a_shard_the_manifest_never_heard_of_is_written_over(dataset, tmp_path, model_args):
    """A run killed between renaming a shard and updating the manifest (kill -9)."""
    cache_dir = tmp_path / "cache"
    assert _embed(dataset, cache_dir, model_args, "--limit", "4") == 0
    (cache_dir / "shard-000001.safetensors").write_bytes(b"half a shard")
    assert _embed(dataset, cache_dir, model_args) == 3
    assert len(EmbeddingCache(cache_dir).load().ids) == 12


def test_failed_images_are_retried_on_request(dataset, tmp_path, model_args):
    cache_dir = tmp_path / "cache"
    assert _embed(dataset, cache_dir, model_args) == 3
    synthetic_photo(0.5, np.random.default_rng(0)).save(dataset.images / f"{dataset.corrupt[0]}.jpg")  # re-downloaded
    assert _embed(dataset, cache_dir, model_args) == 0  # failures are not retried by default
    assert dataset.corrupt[0] not in EmbeddingCache(cache_dir).load().ids
    assert _embed(dataset, cache_dir, model_args, "--retry-failed") == 0
    cache = EmbeddingCache(cache_dir)
    assert dataset.corrupt[0] in cache.load().ids and not cache.failed


def test_a_cache_belongs_to_one_backbone(dataset, tmp_path, model_args, tiny_model, capsys):
    cache_dir = tmp_path / "cache"
    assert _embed(dataset, cache_dir, model_args, "--limit", "2") == 0
    other = ["--model", tiny_model["config"], "--pretrained", "random", "--device", "cpu", "--dtype", "fp32"]
    assert _embed(dataset, cache_dir, other) == 2
    err = capsys.readouterr().err
    assert "holds embeddings from tiny-clip/file:" in err and "tiny-clip/random" in err and "Traceback" not in err
