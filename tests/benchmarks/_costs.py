"""Unit costs, each measured alone in a fresh process; prints one JSON object.

    python tests/benchmarks/_costs.py model [--batch N] [--seconds S] [--model NAME]
        (b) model-only throughput with aes-index's inference settings: ViT-B-32 (or NAME) with the
        seeded random weights, device and dtype "auto" (bf16 on a CPU with native bf16,
        bf16/fp16 on CUDA), the pipeline's batch size, torch's threads, normalisation on the
        device; also CPU-seconds per image (all threads), the model's share of the bound.
    python tests/benchmarks/_costs.py decode FILE...
        aes-index's decode + resize per file (pipeline.prepare), inline on one core: CPU ms
        per image, overall and per file type.
    python tests/benchmarks/_costs.py gpu-decode FILE...
        the GPU route (nvJPEG + resize on the device) for the JPEGs among FILE, ms per image.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict


def model_cost(batch: int, seconds: float, model: str = "ViT-B-32", warmup: int = 3) -> dict:
    import numpy as np
    import torch

    from aes_index.model.backbone import dtype_name, load_backbone

    backbone = load_backbone(model, "random", "auto", "auto")
    batch = batch or (256 if backbone.device.type == "cuda" else 32)  # the pipeline's defaults
    pixels = np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
    for _ in range(warmup):
        backbone.encode_pooled(pixels)  # oneDNN/cuDNN pick their kernels on first calls
    windows = [_throughput(backbone, pixels, seconds / 4) for _ in range(4)]
    rate, cpu_ms = sorted(windows)[len(windows) // 2]  # the median window: robust to a neighbour's burst
    return {
        "model": model, "device": str(backbone.device), "dtype": dtype_name(backbone.dtype), "batch": batch,
        "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "img_per_s": rate, "cpu_ms_per_image": cpu_ms, "windows_img_per_s": [round(w[0], 1) for w in windows],
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _throughput(backbone, pixels, seconds: float) -> tuple[float, float]:
    """(images per second, CPU ms per image over all threads) for `seconds` of batches."""
    images, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        backbone.encode_pooled(pixels)  # returns numpy: includes the device sync
        images += len(pixels)
    return images / (time.perf_counter() - started), 1000 * (time.process_time() - cpu) / images


def decode_cost(paths: list[str]) -> dict:
    from aes_index.model.backbone import PreprocessSpec
    from aes_index.index.pipeline import prepare

    spec = PreprocessSpec(224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    first_of_kind = {}
    for path in paths:
        first_of_kind.setdefault(_kind(path), path)
    for path in first_of_kind.values():
        prepare(path, spec)  # first use imports exiv2 / pillow-heif: once per worker, not per file
    cpu_by_kind: dict[str, list[float]] = defaultdict(list)
    started = time.perf_counter()
    for path in paths:
        cpu = time.process_time()
        prepare(path, spec)
        cpu_by_kind[_kind(path)].append(time.process_time() - cpu)
    wall = time.perf_counter() - started
    every = [c for costs in cpu_by_kind.values() for c in costs]
    return {
        "images": len(every), "cpu_ms_per_image": 1000 * sum(every) / len(every), "wall_ms_per_image": 1000 * wall / len(every),
        "by_type": {k: {"images": len(v), "cpu_ms": 1000 * sum(v) / len(v)} for k, v in sorted(cpu_by_kind.items())},
        "mean_file_mb": sum(os.path.getsize(p) for p in paths) / len(paths) / 1e6,
    }


def gpu_decode_cost(paths: list[str]) -> dict:
    import torch

    from aes_index.model.backbone import PreprocessSpec
    from aes_index.index.pipeline import GPU_DECODE_GROUP, decode_jpegs, read_for_gpu

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    device = torch.device("cuda")
    spec = PreprocessSpec(224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    jpegs = [j for j in (read_for_gpu(i, p) for i, p in enumerate(paths)) if j is not None]
    groups = [jpegs[i : i + GPU_DECODE_GROUP] for i in range(0, len(jpegs), GPU_DECODE_GROUP)]
    decode_jpegs(groups[0], spec, device)  # nvJPEG initialises on first use
    torch.cuda.synchronize()
    started, refused = time.perf_counter(), 0
    for group in groups:
        refused += len(decode_jpegs(group, spec, device)[1])
    torch.cuda.synchronize()
    wall = time.perf_counter() - started
    return {"images": len(jpegs), "refused": refused, "ms_per_image": 1000 * wall / len(jpegs), "group": GPU_DECODE_GROUP}


def _kind(path: str) -> str:
    return os.path.splitext(path)[1].lower().lstrip(".")


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    model = commands.add_parser("model")
    model.add_argument("--batch", type=int, default=0)
    model.add_argument("--seconds", type=float, default=8.0)
    model.add_argument("--model", default="ViT-B-32", help="open_clip model name (default ViT-B-32)")
    model.add_argument("--warmup", type=int, default=3, help="batches run before measuring (default 3)")
    commands.add_parser("decode").add_argument("paths", nargs="+")
    commands.add_parser("gpu-decode").add_argument("paths", nargs="+")
    args = parser.parse_args()
    if args.command == "model":
        result = model_cost(args.batch, args.seconds, args.model, args.warmup)
    elif args.command == "decode":
        result = decode_cost(args.paths)
    else:
        result = gpu_decode_cost(args.paths)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
