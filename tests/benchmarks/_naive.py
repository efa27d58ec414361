"""(a) The loop most aesthetic predictors ship, timed: for each file, PIL decodes it at full
size, open_clip's own preprocess transform resizes and crops it, and the model embeds it
alone (batch of 1, fp32, torch's default threads, GPU if there is one).

    python tests/benchmarks/_naive.py FILE... -> one JSON object on stdout

Same ViT-B-32 and the same seeded random weights as `aes-index --pretrained random`.
Files Pillow can't open (RAW) are counted as skipped, as such a loop would crash on them.
"""

from __future__ import annotations

import json
import sys
import time


def main(paths: list[str]) -> None:
    import open_clip
    import pillow_heif
    import torch
    from PIL import Image

    pillow_heif.register_heif_opener()  # a loop that reads HEIC at all needs this
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)  # what aes-index's --pretrained random does
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    model.eval().to(device)

    def embed(path: str) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        image = Image.open(path).convert("RGB")
        t1 = time.perf_counter()
        pixels = preprocess(image).unsqueeze(0).to(device)
        t2 = time.perf_counter()
        with torch.no_grad():
            model.encode_image(pixels).cpu()
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    readable = [p for p in paths if _pillow_opens(p)]
    embed(readable[0])  # first call: lazy initialisation, not per-image cost
    totals = [0.0, 0.0, 0.0]
    started = time.perf_counter()
    for path in readable:
        for i, seconds in enumerate(embed(path)):
            totals[i] += seconds
    wall = time.perf_counter() - started
    n = len(readable)
    print(json.dumps({
        "images": n, "skipped_unreadable": len(paths) - n, "device": device, "threads": torch.get_num_threads(),
        "img_per_s": n / wall, "decode_ms": 1000 * totals[0] / n, "preprocess_ms": 1000 * totals[1] / n,
        "model_ms": 1000 * totals[2] / n,
    }))


def _pillow_opens(path: str) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
        return True
    except Exception:
        return False


if __name__ == "__main__":
    main(sys.argv[1:])
