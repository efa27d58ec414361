"""What each --preset costs on this machine, and what `auto` picks here. Prints JSON.

    python tests/benchmarks/bench_presets.py [--seconds S] [--batch N]

For each preset, its backbone with seeded random weights (`--pretrained random`: the same
architecture costs what the real weights cost), measured alone in a fresh process by
_costs.py with aes-index's inference settings (device and dtype auto, the pipeline's batch
size): images per second, CPU ms per image over all threads, the process's peak memory.
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
    parser.add_argument("--batch", type=int, default=0, help="images per batch (default: the pipeline's, 32 on CPU, 256 on CUDA)")
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
        command = [sys.executable, str(HERE / "_costs.py"), "model", "--model", model, "--seconds", str(args.seconds)]
        if args.batch:
            command += ["--batch", str(args.batch)]
        measured = _measure.run(command, env)
        if measured.returncode != 0:
            raise SystemExit(f"{name}: failed ({measured.returncode})\n{measured.stderr[-3000:]}")
        cost = json.loads(measured.stdout.strip().splitlines()[-1])
        cost["peak_rss_mb"] = round(measured.peak_rss_largest_process_mb)
        cost["load_before_after"] = [measured.load_before, measured.load_after]
        report["presets"][name] = {"backbone": f"{model}/{pretrained}", "model": cost, "head": head_cost(f"{model}/{pretrained}")}
    fast, best = (report["presets"][p]["model"] for p in ("fast", "best"))
    report["best_over_fast"] = {
        "cpu_ms_per_image": round(best["cpu_ms_per_image"] / fast["cpu_ms_per_image"], 1),
        "img_per_s": round(fast["img_per_s"] / best["img_per_s"], 1),
    }
    print(json.dumps(report, indent=2))


def head_cost(backbone: str) -> dict:
    """The preset's `--head auto` over cached embeddings of that backbone's size (a rescore)."""
    import numpy as np

    from aes_index.heads import shipped_head_for

    head = shipped_head_for(backbone)
    if head is None:  # the zero-shot pair: two prompt vectors, the same cost as a 2-column head
        return {"head": "zeroshot-ensemble-outstanding-vs-horrible", "note": "built from the text tower; not timed here"}
    pooled_dim = {"ViT-L-14/openai": 1024, "ViT-B-32/openai": 768}[backbone]
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(HEAD_ROWS, pooled_dim)).astype(np.float32)
    projection = rng.normal(size=(pooled_dim, head.metadata["input_dim"])).astype(np.float32)
    started = time.perf_counter()
    head.predict(pooled, projection)
    return {"head": head.name, "rows": HEAD_ROWS, "seconds": round(time.perf_counter() - started, 3)}


if __name__ == "__main__":
    main()
