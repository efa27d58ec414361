"""At which resolution must sharpness be measured to see a missed focus on a 24 MP frame?
Prints JSON.

    python tests/benchmarks/bench_sharpness_resolution.py [--photos 12] [--workers 2]

Input: 24 MP camera-like JPEGs (6000x4000, quality 92, sensor noise) of the 12 nature
photographs of Debian's mate-backgrounds (tests/culling_photos.py): per photo one sharp
frame and the same frame defocused (Gaussian sigma 1, 2, 4, 8 px at 24 MP) or shaken
(straight motion of 8, 16, 32 px), each at its own exposure (-1..+1 EV, so that a measure
that follows brightness shows it). Built once under $AES_BENCH_DIR/culling-sharpness.

For each JPEG draft scale (libjpeg's DCT scaling: 1/2, 1/4, 1/8 of 6000x4000) and for the
image aes-index's decode already returns for a 224 px model input (`decode_image(path, 224)`:
1/8 draft then halved, 375x250), it measures:

* decode cost: CPU ms per file of Image.open + draft + load at that scale (median);
  `facts_probe`: the decode rebuild runs, `decode_image(path, 224, probe=FactsProbe())`,
  whose stored sharpness is `crete` on the 1/8 draft;
* per blur strength, for each sharpness measure:
  - `ranked_below_sharp`: share of blurred frames that measure lower than the sharp frame of
    the same scene (what a keeper needs: the sharp frame of a burst wins);
  - `ranked_below_sharp_by_20pct`: lower by more than 20 % (a margin a rule can stand on);
  - `auc_vs_all_sharp`: P(a sharp frame of any scene measures higher than this blurred one):
    whether one absolute threshold could flag a blurred single photo.

Measures (on luma, float): `crete` (aes-index's own, culling/facts.sharpness: Crete et al.
2007 over the most detailed tiles, per direction), `laplacian_var` (variance of the 4-neighbour Laplacian, Pech-Pacheco
et al. 2000), `laplacian_var_norm` (the same over the squared mean luma: exposure-invariant),
`laplacian_ratio` (Laplacian variance at this scale over that of the image halved: how much
detail is left at the finest scale relative to the next, roughly content-independent).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1] / "plugin"), str(HERE.parent), str(HERE)]

import culling_camera as camera  # noqa: E402
import culling_photos  # noqa: E402

BENCH_DIR = Path(os.environ.get("AES_BENCH_DIR", "/tmp/aes-bench"))
FOLDER = BENCH_DIR / "culling-sharpness"
DEFOCUS = (1.0, 2.0, 4.0, 8.0)  # Gaussian sigma, px at 24 MP
MOTION = (8.0, 16.0, 32.0)  # straight shake, px at 24 MP
SCALES = {"1/2": 2, "1/4": 4, "1/8": 8}
DECODE_224 = "decode_image(224)"


def variants() -> list[tuple[str, dict]]:
    kinds = [("sharp", {})]
    kinds += [(f"defocus_{s:g}", {"defocus_sigma": s}) for s in DEFOCUS]
    kinds += [(f"motion_{m:g}", {"motion_px": m}) for m in MOTION]
    return kinds


def build(photos: list[Path], workers: int) -> list[dict]:
    jobs = []
    for p, photo in enumerate(photos):
        rng = np.random.default_rng(100 + p)
        for v, (name, blur) in enumerate(variants()):
            ev = float(rng.choice([-1, -2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1]))
            axis = p % 2
            path = FOLDER / f"{photo.stem}_{name}.jpg"
            jobs.append({"photo": str(photo), "scene": photo.stem, "kind": name, "path": str(path), "ev": ev,
                         "shot": {**blur, "ev": ev, "motion_axis": axis, "noise_sigma": 6.0, "seed": 1000 * p + v}})
    todo = [j for j in jobs if not Path(j["path"]).is_file()]
    if todo:
        FOLDER.mkdir(parents=True, exist_ok=True)
        print(f"building {len(todo)} 24 MP frames in {FOLDER} (once; ~2 s each)", file=sys.stderr, flush=True)
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_frame, todo))
    return jobs


def _write_frame(job: dict) -> None:
    with Image.open(job["photo"]) as opened:
        scene = camera.scene_of(opened.convert("RGB"))
    frame = camera.render(scene, camera.Shot(**job["shot"]), camera.FULL_LONG_SIDE)
    tmp = Path(job["path"] + ".tmp")
    tmp.write_bytes(camera.jpeg_bytes(frame, 92))
    os.replace(tmp, job["path"])


# --- measuring ---------------------------------------------------------------------------------


def luma_at(path: str, scale: str) -> tuple[np.ndarray, float]:
    """(luma float32, CPU ms of the decode) for one file at one scale."""
    started = time.process_time()
    if scale == DECODE_224:
        from aes_index.index.decode import decode_image

        image = decode_image(path, 224)
    else:
        with Image.open(path) as opened:
            factor = SCALES[scale]
            opened.draft("RGB", (opened.width // factor, opened.height // factor))
            image = opened.convert("RGB")
    cost = 1000 * (time.process_time() - started)
    return np.asarray(image.convert("L"), dtype=np.float32), cost


def laplacian_var(grey: np.ndarray) -> float:
    lap = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    return float(lap.var())


def halved(grey: np.ndarray) -> np.ndarray:
    h, w = (grey.shape[0] // 2) * 2, (grey.shape[1] // 2) * 2
    g = grey[:h, :w]
    return (g[0::2, 0::2] + g[1::2, 0::2] + g[0::2, 1::2] + g[1::2, 1::2]) / 4


def measures(grey: np.ndarray) -> dict[str, float]:
    from aes_index.index.facts import sharpness

    lv = laplacian_var(grey)
    return {
        "crete": sharpness(Image.fromarray(np.clip(grey + 0.5, 0, 255).astype(np.uint8))),  # aes-index's own measure, at this scale
        "laplacian_var": lv,
        "laplacian_var_norm": lv / max(1.0, float(grey.mean())) ** 2,
        "laplacian_ratio": lv / max(1e-6, laplacian_var(halved(grey))),
    }


def measure_all(jobs: list[dict], workers: int) -> list[dict]:
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_measure_one, jobs))


def _measure_one(job: dict) -> dict:
    row = {"scene": job["scene"], "kind": job["kind"], "ev": job["ev"], "scales": {}}
    for scale in (*SCALES, DECODE_224):
        grey, cost = luma_at(job["path"], scale)
        row["scales"][scale] = {"decode_cpu_ms": cost, "shape": list(grey.shape), **measures(grey)}
    row["facts_probe"] = _probe_sharpness(job["path"])
    return row


def _probe_sharpness(path: str) -> dict:
    """What rebuild stores: the decode with a facts probe (sharpness of the 1/8 draft)."""
    from aes_index.index.facts import FactsProbe
    from aes_index.index.decode import decode_image

    probe = FactsProbe()
    started = time.process_time()
    decode_image(path, 224, probe=probe)
    return {"decode_cpu_ms": 1000 * (time.process_time() - started), "crete": probe.facts().sharpness}


def summarise(rows: list[dict]) -> dict:
    by_scene = {(r["scene"], r["kind"]): r for r in rows}
    kinds = [name for name, _ in variants()]
    scenes = sorted({r["scene"] for r in rows})
    out: dict = {}
    for scale in (*SCALES, DECODE_224):
        costs = [r["scales"][scale]["decode_cpu_ms"] for r in rows]
        entry: dict = {"shape": rows[0]["scales"][scale]["shape"], "decode_cpu_ms_median": round(float(np.median(costs)), 1),
                       "by_strength": {}}
        for measure in MEASURES:
            value = lambda s, k: by_scene[(s, k)]["scales"][scale][measure]  # noqa: E731
            entry["by_strength"][measure] = detection(scenes, kinds, value)
        entry["crete_of_sharp_frames"] = spread([by_scene[(s, "sharp")]["scales"][scale]["crete"] for s in scenes])
        out[scale] = entry
    probe_costs = [r["facts_probe"]["decode_cpu_ms"] for r in rows]
    out["facts_probe"] = {"what": "decode_image(path, 224, probe=FactsProbe()): crete on the 1/8 draft, as rebuild stores it",
                          "decode_cpu_ms_median": round(float(np.median(probe_costs)), 1),
                          "by_strength": {"crete": detection(scenes, kinds, lambda s, k: by_scene[(s, k)]["facts_probe"]["crete"])},
                          "crete_of_sharp_frames": spread([by_scene[(s, "sharp")]["facts_probe"]["crete"] for s in scenes])}
    return out


def spread(values: list[float]) -> dict:
    """How sharp frames of different scenes measure: whether one absolute threshold can
    call a single photo blurred (culling/keeper.py's BLURRY_BELOW is 0.45)."""
    return {"min": round(min(values), 3), "median": round(float(np.median(values)), 3), "max": round(max(values), 3),
            "share_below_0.45": round(float(np.mean([v < 0.45 for v in values])), 3)}


MEASURES = ("crete", "laplacian_var", "laplacian_var_norm", "laplacian_ratio")


def detection(scenes: list[str], kinds: list[str], value) -> dict:
    """Per blur kind: how a measure separates the blurred frames from the sharp ones."""
    sharp = {s: value(s, "sharp") for s in scenes}
    per: dict = {}
    for kind in kinds[1:]:
        blurred = {s: value(s, kind) for s in scenes}
        below = [blurred[s] < sharp[s] for s in scenes]
        margin = [blurred[s] < 0.8 * sharp[s] for s in scenes]
        auc = np.mean([[a > b for a in sharp.values()] for b in blurred.values()])
        per[kind] = {"ranked_below_sharp": round(float(np.mean(below)), 3),
                     "ranked_below_sharp_by_20pct": round(float(np.mean(margin)), 3),
                     # crete is a 0..1 ratio: culling/keeper.py's SHARP_MARGIN and BLUR_MARGIN are absolute
                     "below_by_0.04": round(float(np.mean([sharp[s] - blurred[s] >= 0.04 for s in scenes])), 3),
                     "below_by_0.08": round(float(np.mean([sharp[s] - blurred[s] >= 0.08 for s in scenes])), 3),
                     "median_drop": round(float(np.median([sharp[s] - blurred[s] for s in scenes])), 4),
                     "auc_vs_all_sharp": round(float(auc), 3),
                     "not_below": [s for s in scenes if not blurred[s] < sharp[s]]}
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rows", type=Path, help="summarise the rows of an earlier run's JSON instead of measuring again")
    args = parser.parse_args()
    photos = culling_photos.mate_nature_photos()[: args.photos]
    if args.rows:
        rows = json.loads(args.rows.read_text())["rows"]
    else:
        rows = measure_all(build(photos, args.workers), args.workers)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "frames": {"size": "6000x4000", "quality": 92, "noise_sigma_midgrey": 6.0, "scenes": len(photos),
                   "defocus_sigma_px_24mp": list(DEFOCUS), "motion_px_24mp": list(MOTION),
                   "exposure": "each frame -1..+1 EV at random (sharp frames too)"},
        "by_scale": summarise(rows),
        "rows": rows,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
