"""What each --preset costs on this machine, and what `auto` picks here. Prints JSON.

    python tests/benchmarks/bench_presets.py [--seconds S] [--batch N] [--warmup N]

For each preset, its backbone with seeded random weights (`--pretrained random`: the same
architecture costs what the real weights cost), measured alone in a fresh process by
_costs.py with aes-index's inference settings (device and dtype auto): images per second,
CPU ms per image over all threads, the process's peak memory. Both presets run the same
batch size: on a CPU 8 by default (ViT-L-14 costs seconds of CPU per image, and a CPU's cost
per image hardly depends on the batch beyond a few), on CUDA the pipeline's 256. CPU ms per
image is the figure to read on a busy machine: other processes lengthen the wall time, not
the CPU time a model needs.
Then each preset's default head over 100,000 cached embeddings (what a rescore costs), and
the ratio best / fast. On a GPU the same script measures the GPU (device auto).
Benchmarks print figures; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "plugin"), str(HERE)]

import _measure  # noqa: E402

HEAD_ROWS = 100_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per model, after warm-up (default 8)")
    parser.add_argument("--batch", type=int, default=0, help="images per batch (default: 8 on a CPU, the pipeline's 256 on CUDA)")
    parser.add_argument("--warmup", type=int, default=1, help="batches run before measuring (default 1)")
    args = parser.parse_args()

    from aes_index.config import PRESETS, resolve_preset

    env = {k: v for k, v in os.environ.items() if not k.startswith("AES_INDEX_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "plugin"), os.environ.get("PYTHONPATH")]))
    env["HF_HUB_OFFLINE"] = "1"
    auto = resolve_preset("auto")
    report: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": _measure.machine(),
        "auto_picks": {"preset": auto.chosen, "backbone": auto.key, "reason": auto.reason},
        "presets": {},
    }
    for name, (model, pretrained) in PRESETS.items():
        command = [sys.executable, str(HERE / "_costs.py"), "model", "--model", model, "--seconds", str(args.seconds),
                   "--warmup", str(args.warmup)]
        batch = args.batch or (0 if auto.chosen == "best" and "cuda" in auto.reason.lower() else 8)
        if batch:
            command += ["--batch", str(batch)]
        measured = _measure.run(command, env)
        if measured.returncode != 0:
            raise SystemExit(f"{name}: failed ({measured.returncode})\n{measured.stderr[-3000:]}")
        cost = json.loads(measured.stdout.strip().splitlines()[-1])
        cost["peak_rss_mb"] = round(measured.peak_rss_largest_process_mb)
        cost["load_before_after"] = [measured.load_before, measured.load_after]
        report["presets"][name] = {"backbone": f"{model}/{pretrained}", "model": cost, "head": head_cost(f"{model}/{pretrained}")}
        print(json.dumps({name: report["presets"][name]}), file=sys.stderr, flush=True)  # a killed run keeps what it measured
    fast, best = (report["presets"][p]["model"] for p in ("fast", "best"))
    report["best_over_fast"] = {
        "cpu_ms_per_image": round(best["cpu_ms_per_image"] / fast["cpu_ms_per_image"], 1),
        "img_per_s": round(fast["img_per_s"] / best["img_per_s"], 1),
    }
    print(json.dumps(report, indent=2))


def head_cost(backbone: str) -> dict:
    """The preset's `--head auto` over 100,000 cached embeddings of that backbone's sizes, as
    a rescore runs it (the projected norms come from the cache, not from projecting)."""
    import numpy as np

    from aes_index.model.heads import DEFAULT_ZEROSHOT_NAME, Head, shipped_head_for

    dims = {"ViT-L-14/openai": (1024, 768), "ViT-B-32/openai": (768, 512)}[backbone]
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(HEAD_ROWS, dims[0])).astype(np.float32)
    projection = rng.normal(size=dims).astype(np.float32)
    norms = np.linalg.norm(pooled @ projection, axis=1)
    head = shipped_head_for(backbone)
    if head is None:  # the zero-shot pair: its cost is two prompt vectors, whatever their text
        meta = {"name": DEFAULT_ZEROSHOT_NAME, "kind": "zeroshot", "backbone": backbone, "input_space": "projected"}
        prompts = rng.normal(size=(2, dims[1])).astype(np.float32)
        head = Head(meta, {"prompts": prompts, "weights": np.array([1.0, -1.0], np.float32)})
    started = time.perf_counter()
    head.predict(pooled, projection, norms)
    return {"head": head.name, "rows": HEAD_ROWS, "seconds": round(time.perf_counter() - started, 3)}


if __name__ == "__main__":
    main()
