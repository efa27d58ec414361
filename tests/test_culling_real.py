"""Culling end to end on real photographs: `rebuild`, `cull` and `groups --json` through the
CLI with the tiny model, on a small library built from Debian's mate-backgrounds photos
(culling_library.py: bursts with one sharp frame, duplicate sets, unrelated singles, planted
clipping), compared with its ground truth.

The tiny model's embeddings mean nothing: what groups and picks here are the capture facts
(time, camera, sharpness, clipping, perceptual signature), as with any backbone before its
weights are trained. tests/benchmarks/bench_culling.py measures the same at scale.
"""

from __future__ import annotations

import json
import os

import pytest

from conftest import cli_stdout
from culling_library import LibrarySpec, build_library
from culling_scoring import score_cull

# Small frames (1500 px: the decode's draft is 750x500, the scale sharpness is measured at, as
# for a 24 MP frame) and blur a
# photographer would reject at a glance; the benchmark plants subtler blur on 24 MP frames.
SPEC = LibrarySpec(
    long_side=1500, bursts=3, duplicate_sets=2, singles=3, frames=(3, 5),
    defocus=(8.0, 16.0), motion=(32.0, 64.0), clipped_singles=("over", "under"), blurred_singles=(), seed=7,
)


@pytest.fixture(scope="module")
def real_library(mate_photos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("culling-real")
    return build_library(folder, SPEC, mate_photos, workers=1)


@pytest.fixture(scope="module")
def culled(real_library, tmp_path_factory, tiny_model):
    """The library rebuilt and culled through the CLI: `groups --json`'s answer. Module-scoped
    (one rebuild for the three tests), so it isolates itself as conftest's
    isolated_environment does for a test: no user config or cache, no network."""
    home = tmp_path_factory.mktemp("culling-home")
    db = home / "index.db"
    model = ["--model", tiny_model["config"], "--pretrained", tiny_model["checkpoint"], "--device", "cpu", "--dtype", "fp32"]
    with pytest.MonkeyPatch.context() as env:
        for name in [n for n in os.environ if n.startswith("AES_INDEX_")]:
            env.delenv(name)
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("XDG_CONFIG_HOME", str(home / "config"))
        env.setenv("AES_INDEX_CACHE_DIR", str(home / "cache"))
        env.setenv("AES_INDEX_STABLE_SECONDS", "0")
        cli_stdout("rebuild", real_library.root, "--db", db, *model, "--workers", "0")
        summary = json.loads(cli_stdout("cull", real_library.root, "--db", db, *model, "--json"))
        listed = json.loads(cli_stdout("groups", "--db", db, *model, "--json"))
    return {"summary": summary, **listed}


def test_groups_are_the_true_bursts_and_duplicate_sets(real_library, culled):
    score = score_cull(real_library, culled["groups"], culled["flagged"])
    assert score["pairwise"]["precision"] == 1.0, score["wrong_pairs"]
    assert score["pairwise"]["recall"] == 1.0, score["missed_pairs"]
    assert score["found_groups"] == score["true_groups"]
    assert score["singles_grouped"] == []


def test_the_keeper_of_each_burst_is_its_sharp_frame(real_library, culled):
    score = score_cull(real_library, culled["groups"], culled["flagged"])
    assert score["keeper"]["bursts_keeper_is_sharp"] == 1.0, score["keeper"]["misses"]
    assert score["keeper"]["duplicates_keeper_full_size"] == 1.0, score["keeper"]["misses"]
    kinds = {g["keeper"]: g["kind"] for g in culled["groups"]}
    assert sorted(kinds.values()) == ["burst"] * SPEC.bursts + ["duplicate"] * SPEC.duplicate_sets


def test_planted_blur_is_flagged(real_library, culled):
    flags = score_cull(real_library, culled["groups"], culled["flagged"])["flags"]
    assert flags["blur_detected_overall"] == 1.0, flags["blur_detected"]


def test_no_sharp_photo_is_flagged_blurry(real_library, culled):
    """A sharp frame, an export, a copy: none is called blurred (a copy resized for the web
    is sharp at its own size)."""
    flags = score_cull(real_library, culled["groups"], culled["flagged"])["flags"]
    assert flags["blurry_without_planted_blur"]["n"] == 0, flags["blurry_without_planted_blur"]


def test_overexposed_and_underexposed_singles_are_flagged(real_library, culled):
    """+2 EV or more (highlights clipped) and -4 EV (a frame a photographer deletes, its
    deepest shadows crushed to black by the camera's tone curve)."""
    flags = score_cull(real_library, culled["groups"], culled["flagged"])["flags"]
    assert flags["clipping_detected"] == {"over": {"rate": 1.0, "n": 1}, "under": {"rate": 1.0, "n": 1}}
