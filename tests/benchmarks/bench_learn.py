"""`aes-index learn` measured: how fast a simulated person's taste is learned, that a person
whose taste is the active head's gets nothing adopted, and what learning costs on a
100,000-photo library. Prints JSON.

    python tests/benchmarks/bench_learn.py [--model tiny|vit-b-32] [--crops 1500] [--seeds 5]
        [--photos 100000] [--rated 10000] [--skip curve,library]

curve    Embeddings of real photographs: --crops crops (random position, size and mirror)
         of the 12 nature photographs of Debian's mate-backgrounds, embedded by the tests'
         tiny open_clip model (random weights, a local checkpoint) or ViT-B-32 with
         aes-index's seeded random weights (--model vit-b-32); shoots of 10 crops of one
         photograph. The active head is a random direction `a` of the pooled space. A
         simulated person's taste is a hidden direction `h` plus noise (their utility
         x.h + N(0, 0.5 sd)); they make 10, 30, 100, 300, 1,000 decisions: star ratings
         (the utility's quintiles over the library) of the photos of the first half of the
         shoots, shoot after shoot, every photo of a shoot (as a person culls). For each size
         and seed: the learn pipeline itself (features/taste/model.py: distil the active
         head, split by shoot, fit, compare, the adoption rule), then the learned head's
         pairwise accuracy on every photo of the other half of the shoots (pairs within a
         shoot rated differently by the person), the active head's there, cosine(learned
         direction, h) in the pooled space, and the correlation of the learned head's scores
         with the hidden utility x.h over the library (the cosine in the photos' own metric:
         directions the photos do not vary along cannot be learned, nor do they matter).
         The same for a person whose taste is the active head's own (h = a): nothing
         should be adopted.
library  The whole `learn` (api.learn: every photo's sidecar read, ownership asked, the
         embeddings read from the index, fitted, measured, saved, and the library rescored
         when adopted) on an index of --photos photos with 768-d float16 embeddings and
         --rated of them rated in XMP sidecars by a simulated person; seconds per stage.
         Then the fit alone with every one of the --photos photos rated.

Inputs go under $AES_BENCH_DIR (default /tmp/aes-bench). Figures only: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1] / "plugin"), str(HERE.parent)]
BENCH_DIR = Path(os.environ.get("AES_BENCH_DIR", "/tmp/aes-bench"))
SIZES = (10, 30, 100, 300, 1000)
SHOOT = 10  # crops per shoot
NOISE = 0.5  # the person's noise, in standard deviations of their utility


# --------------------------------------------------------------------------- embeddings of real photographs


def load_model(name: str):
    from aes_index.model.backbone import load_backbone

    if name == "vit-b-32":
        return load_backbone("ViT-B-32", "random", "cpu", "fp32")
    import open_clip
    import torch
    from safetensors.torch import save_file

    from conftest import TINY_CONFIG

    folder = BENCH_DIR / "learn-tiny-model"
    folder.mkdir(parents=True, exist_ok=True)
    config, checkpoint = folder / "tiny-clip.json", folder / "tiny-clip.safetensors"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    if not checkpoint.is_file():
        torch.manual_seed(1234)
        model = open_clip.create_model("tiny-clip")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    return load_backbone(str(config), str(checkpoint), "cpu", "fp32")


def crop_embeddings(model_name: str, crops: int) -> np.ndarray:
    """(crops, D) pooled embeddings of crops of the mate-backgrounds photographs, cached."""
    cache = BENCH_DIR / f"learn-crops-{model_name}-{crops}.npy"
    if cache.is_file():
        return np.load(cache)
    from PIL import Image

    from culling_photos import mate_nature_photos

    photos = mate_nature_photos()
    backbone = load_model(model_name)
    side = backbone.info.preprocess.size if hasattr(backbone.info.preprocess, "size") else 224
    rng = np.random.default_rng(0)
    rows, batch = [], []
    for k in range(crops):
        with Image.open(photos[(k // SHOOT) % len(photos)]) as image:  # a shoot: crops of one photograph
            image = image.convert("RGB")
            width, height = image.size
            size = int(min(width, height) * rng.uniform(0.3, 0.9))
            left, top = int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
            crop = image.crop((left, top, left + size, top + size)).resize((side, side))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        batch.append(np.asarray(crop, np.uint8))
        if len(batch) == 64 or k == crops - 1:
            rows.append(backbone.encode_pooled(np.stack(batch)))
            batch = []
    pooled = np.concatenate(rows).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, pooled)
    return pooled


# --------------------------------------------------------------------------- the curve


def quintile_stars(utility: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    return (1 + np.searchsorted(cuts, utility)).astype(float)


def within_shoot_accuracy(scores: np.ndarray, stars: np.ndarray, shoot: np.ndarray) -> float:
    correct = total = 0.0
    for s in np.unique(shoot):
        members = np.flatnonzero(shoot == s)
        i, j = np.triu_indices(len(members), 1)
        a, b = members[i], members[j]
        differ = stars[a] != stars[b]
        a, b = a[differ], b[differ]
        sign = np.sign(stars[a] - stars[b])
        agree = np.sign(scores[a] - scores[b]) * sign
        correct += float(np.sum(agree > 0) + 0.5 * np.sum(agree == 0))
        total += len(a)
    return correct / total if total else float("nan")


def one_person(pooled: np.ndarray, active_dir: np.ndarray, hidden: np.ndarray, size: int, seed: int) -> dict:
    from aes_index.features.taste import model

    rng = np.random.default_rng(seed)
    n = len(pooled)
    shoot = np.arange(n) // SHOOT
    utility = pooled @ hidden
    utility = utility + rng.normal(0, NOISE * utility.std(), n)
    stars = quintile_stars(utility, np.quantile(utility, [0.2, 0.4, 0.6, 0.8]))
    active = pooled @ active_dir
    decided_side = shoot < shoot.max() / 2
    # as people cull: shoot after shoot, every photo of it rated, until `size` decisions
    order = rng.permutation(np.unique(shoot[decided_side]))
    chosen = np.concatenate([np.flatnonzero(shoot == s) for s in order])[:size]
    decisions = model.Decisions({int(i): float(stars[i]) for i in chosen}, [], {int(i): int(shoot[i]) for i in range(n)})

    mean, scale = model.standardiser(pooled)
    w0 = model.distil(pooled, active.astype(np.float64), mean, scale)
    features = model.Features({i: i for i in range(n)}, ((pooled - mean) * scale).astype(np.float32), mean, scale, w0)
    train_shoots, test_shoots = model.split_by_shoot(decisions, seed=seed)
    train, test = decisions.part(train_shoots), decisions.part(test_shoots)
    result = {"decisions": len(chosen)}
    if len(train.stars) >= 3 and len(set(train.stars.values())) > 1:
        fitted = model.fit(train, features, seed=seed)
        ids = test.ids()
        figures = model.compare(test, dict(zip(ids, fitted.scores(features, ids).tolist())), {i: float(active[i]) for i in ids}, seed)
        adopted, why = model.adoption(figures, decisions.count)
        result.update(held_out_pairs=figures.get("pairs"), held_out_personal=figures.get("personal_pairwise"),
                      held_out_active=figures.get("active_pairwise"), adopted=adopted, why=why)
    final = model.fit(decisions, features) if len(set(decisions.stars.values())) > 1 else None
    other = ~decided_side
    if final is not None:
        learned = final.scores(features, range(n))
        raw_direction = final.weight * scale  # the learned head's direction in the pooled space
        result["unseen_shoots_personal"] = within_shoot_accuracy(learned[other], stars[other], shoot[other])
        result["cosine_learned_hidden"] = float(raw_direction @ hidden / np.linalg.norm(raw_direction) / np.linalg.norm(hidden))
        # the same over the photos' own spread: how alike the learned and the hidden rankings are
        result["correlation_learned_hidden"] = float(np.corrcoef(learned, pooled @ hidden)[0, 1])
    result["unseen_shoots_active"] = within_shoot_accuracy(active[other], stars[other], shoot[other])
    return result


def curve(pooled: np.ndarray, seeds: int, same_taste: bool) -> list[dict]:
    rows = []
    for size in SIZES:
        runs = []
        for seed in range(seeds):
            rng = np.random.default_rng(1000 + seed)
            active_dir = rng.normal(0, 1, pooled.shape[1])
            hidden = active_dir if same_taste else rng.normal(0, 1, pooled.shape[1])
            runs.append(one_person(pooled, active_dir, hidden, size, seed))
        rows.append(summarise(size, runs))
    return rows


def summarise(size: int, runs: list[dict]) -> dict:
    def mean(key):
        values = [r[key] for r in runs if r.get(key) is not None]
        return round(float(np.mean(values)), 4) if values else None

    return {
        "decisions": size, "runs": len(runs),
        "unseen_shoots_pairwise_personal": mean("unseen_shoots_personal"),
        "unseen_shoots_pairwise_active": mean("unseen_shoots_active"),
        "cosine_learned_hidden": mean("cosine_learned_hidden"),
        "correlation_learned_hidden": mean("correlation_learned_hidden"),
        "held_out_pairwise_personal": mean("held_out_personal"), "held_out_pairwise_active": mean("held_out_active"),
        "held_out_pairs": mean("held_out_pairs"),
        "adopted": sum(bool(r.get("adopted")) for r in runs),
        "why_not_example": next((r["why"] for r in runs if r.get("why") and not r.get("adopted")), None),
    }


# --------------------------------------------------------------------------- a 100k library


def library_index(photos: int, rated: int) -> tuple[Path, dict]:
    """An index of `photos` photos (768-d f16 embeddings, a linear active head's scores) whose
    first `rated` carry a person's stars in sidecars. Built once, copied per run."""
    from aes_index.config import Settings
    from aes_index.formats import xmp
    from aes_index.index.store import Index
    from aes_index.model.backbone import load_backbone
    from aes_index.model.heads import Head, projected_norms, save_head

    folder = BENCH_DIR / f"learn-library-{photos}-{rated}"
    db, done = folder / "index.db", folder / ".complete-1"
    backbone = load_backbone("ViT-B-32", "random", "cpu", "fp32")
    settings = {"model": "ViT-B-32", "pretrained": "random", "device": "cpu", "dtype": "fp32"}
    head_path = folder / "active.safetensors"
    if done.is_file():
        return db, {**settings, "head": str(head_path)}
    rng = np.random.default_rng(2)
    dim = backbone.info.pooled_dim
    folder.mkdir(parents=True, exist_ok=True)
    active = Head({"name": "bench-active", "kind": "linear", "backbone": backbone.key, "input_space": "pooled", "input_dim": dim},
                  {"weight": rng.normal(0, 1, dim).astype(np.float32), "bias": np.zeros(1, np.float32)})
    save_head(active, head_path)
    hidden = rng.normal(0, 1, dim)
    shoots = rng.normal(0, 0.5, (photos // 200 + 1, dim))
    paths = [folder / "Photos" / f"{k // 200:04d}" / f"IMG_{k:07d}.jpg" for k in range(photos)]
    with Index(db) as index:
        index.add_roots([str(folder / "Photos")])
        backbone_id = index.embeddings.ensure_backbone(backbone.info, backbone.projection, "ViT-B-32", "random")
        with index.transaction():
            index.db.conn.executemany(
                "INSERT INTO images (id, path, size, mtime_ns, fingerprint, status) VALUES (?, ?, 1, 1, ?, 'ok')",
                [(k + 1, str(p), f"{k:032x}") for k, p in enumerate(paths)],
            )
            utility = np.empty(photos)
            for start in range(0, photos, 8192):
                ids = np.arange(start, min(photos, start + 8192))
                pooled = (rng.normal(0, 1, (len(ids), dim)) + shoots[ids // 200]).astype(np.float32)
                utility[ids] = pooled @ hidden
                index.embeddings.put(backbone_id, (ids + 1).tolist(), pooled.astype(np.float16), projected_norms(pooled, backbone.projection))
    cuts = np.quantile(utility[:rated], [0.2, 0.4, 0.6, 0.8])
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    for k in range(rated):
        xmp.write_sidecar(xmp.sidecar_for(paths[k]), rating=int(1 + np.searchsorted(cuts, utility[k])))
    from aes_index import api

    api.rescore(Settings(db=str(db), head=str(head_path), **settings))  # the active head's scores
    done.write_text("ok\n")
    return db, {**settings, "head": str(head_path)}


def time_library(photos: int, rated: int) -> dict:
    import shutil

    from aes_index import api
    from aes_index.config import Settings
    from aes_index.features.taste import model

    pristine, settings = library_index(photos, rated)
    db = pristine.with_name("run.db")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(pristine, db)
    os.environ["XDG_DATA_HOME"] = str(pristine.parent / "data")
    started = time.perf_counter()
    report = api.learn(Settings(db=str(db), **{**settings, "head": "auto"}), api.learn_places(Settings()))
    total = time.perf_counter() - started
    result = {"photos": photos, "rated": rated, "learn_seconds": round(total, 2), "stages": report.get("seconds"),
              "adopted": report["adopted"], "reason": report.get("reason"), "rescored": report.get("rescored")}

    # the fit alone, every photo rated: the cost of training over 100k embeddings
    from aes_index.index.store import Index

    with Index(db) as index:
        backbone_id = index.embeddings.backbones()[0]["id"]
        rows = {}
        for ids, matrix, _ in index.embeddings.iter(backbone_id):
            rows.update(zip(ids.tolist(), matrix.astype(np.float32)))
    ids = sorted(rows)
    pooled = np.stack([rows[i] for i in ids])
    rng = np.random.default_rng(3)
    stars = rng.integers(1, 6, len(ids)).astype(float)
    started = time.perf_counter()
    mean, scale = model.standardiser(pooled)
    w0 = model.distil(pooled[: model.DISTIL_ROWS], pooled[: model.DISTIL_ROWS] @ rng.normal(0, 1, pooled.shape[1]), mean, scale)
    features = model.Features({i: k for k, i in enumerate(ids)}, ((pooled - mean) * scale).astype(np.float32), mean, scale, w0)
    decisions = model.Decisions(dict(zip(ids, stars)), [], {i: (i - 1) // 200 for i in ids})
    model.fit(decisions, features)
    result["fit_all_rated_seconds"] = round(time.perf_counter() - started, 2)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("tiny", "vit-b-32"), default="tiny")
    parser.add_argument("--crops", type=int, default=1500)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--rated", type=int, default=10_000)
    parser.add_argument("--skip", default="")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    out: dict = {"cpu_count": os.cpu_count(), "load": os.getloadavg()}
    if "curve" not in skip:
        pooled = crop_embeddings(args.model, args.crops)
        out["curve"] = {"model": args.model, "photos": len(pooled), "dims": int(pooled.shape[1]), "shoot_size": SHOOT, "noise_sd": NOISE,
                        "own_taste": curve(pooled, args.seeds, same_taste=False),
                        "taste_equals_active_head": curve(pooled, args.seeds, same_taste=True)}
    if "library" not in skip:
        out["library"] = time_library(args.photos, args.rated)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
