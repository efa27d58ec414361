"""How far the GPU route's pixels are from the CPU route's, in luma and chroma, on real photos.

    python tests/benchmarks/gpu_route_pixels.py [PHOTO...]

Without arguments: the fixture photo (tests/fixtures/photos/evening-glow.jpg) and the 12 nature
photographs of Debian's mate-backgrounds (tests/culling_photos.py, downloaded once). Each photo
is made into the JPEGs tests/test_pipeline_perf.py::test_gpu_route_pixels_match_the_cpu_route
makes (its sizes and EXIF orientations, quality 92) with each chroma subsampling (4:4:4, 4:2:2,
4:2:0), and goes through both routes with each resize mode: the CPU route
(pipeline.prepare: libjpeg's DCT-scaled decode, box reduction, Pillow's resize) and the GPU
route run on the CPU (pipeline.decode_jpegs: full decode, block average, resize on the
tensor). The difference of the two 224x224 results is taken in JPEG's own YCbCr (JFIF): luma
and the two chroma channels. Prints the worst mean and 99th percentile per subsampling, and
the cases that set them; the bounds of the test come from these numbers.

Where they differ and why (the draft stage, before any resize, shows it best): libjpeg's
scaled decode scales every component's DCT by the same 1/s, so a subsampled chroma channel
comes out at 1/s of its stored resolution and is then upsampled to the luma grid (at 1/8
without "fancy" upsampling: each value twice, side by side; at 1/4 and 1/2 with its triangle
filter); the GPU route decodes the chroma at its stored resolution and averages it on the luma
grid. With 4:2:2 (cameras) the CPU route's chroma thus has half the horizontal resolution of
the GPU route's; a box average over 2s x s of the full decode's chroma followed by libjpeg's
upsampling reproduces libjpeg's chroma to a p99 of 0.6-1.3 levels (2.7 at worst) where the
GPU route is 1.5-13 levels off. Luma, decoded at full resolution by both, agrees within about
a level.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1] / "plugin")]

from aes_index.index import pipeline  # noqa: E402
from aes_index.model.backbone import PreprocessSpec  # noqa: E402

# the test's cases: (size, EXIF orientation)
CASES = [((6000, 4000), 6), ((2048, 1369), 1), ((1620, 1080), 8), ((640, 480), 3), ((3000, 3000), 5), ((200, 150), 2)]
SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}  # Pillow's `subsampling` values
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
YCC = np.array([[0.299, 0.587, 0.114], [-0.168735892, -0.331264108, 0.5], [0.5, -0.418687589, -0.081312411]])


def ycc_difference(cpu: np.ndarray, gpu: np.ndarray) -> np.ndarray:
    return np.abs((cpu.astype(np.float64) - gpu.astype(np.float64)) @ YCC.T)


def default_photos() -> list[Path]:
    from culling_photos import mate_nature_photos

    return [HERE.parents[1] / "tests" / "fixtures" / "photos" / "evening-glow.jpg", *mate_nature_photos()]


def measure(photos: list[Path]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "photo.jpg")
        for photo in photos:
            with Image.open(photo) as source:
                base = source.convert("RGB")
            for ((size, orientation), subsampling) in itertools.product(CASES, SUBSAMPLING):
                exif = Image.Exif()
                exif[0x0112] = orientation
                base.resize(size, Image.Resampling.BICUBIC).save(
                    path, "JPEG", quality=92, exif=exif.tobytes(), subsampling=subsampling
                )
                for mode in ("shortest", "longest", "squash"):
                    spec = PreprocessSpec(224, MEAN, STD, resize_mode=mode)
                    cpu = pipeline.prepare(path, spec)
                    (decoded,), _ = pipeline.decode_jpegs([pipeline.read_for_gpu(1, path)], spec, torch.device("cpu"))
                    diff = ycc_difference(cpu, decoded.pixels.numpy())
                    rows.append({
                        "photo": photo.name, "size": size, "subsampling": SUBSAMPLING[subsampling], "mode": mode,
                        "luma_mean": diff[..., 0].mean(), "luma_p99": np.percentile(diff[..., 0], 99),
                        "chroma_mean": diff[..., 1:].mean(), "chroma_p99": np.percentile(diff[..., 1:], 99),
                    })
    return rows


def main() -> None:
    photos = [Path(p) for p in sys.argv[1:]] or default_photos()
    rows = measure(photos)
    print(f"{len(photos)} photos x {len(CASES)} sizes x 3 resize modes, per subsampling:")
    for name in SUBSAMPLING.values():
        mine = [r for r in rows if r["subsampling"] == name]
        line = []
        for key in ("luma_mean", "luma_p99", "chroma_mean", "chroma_p99"):
            worst = max(mine, key=lambda r: r[key])
            line.append(f"{key} {worst[key]:.2f} ({worst['photo']} {worst['size'][0]}x{worst['size'][1]} {worst['mode']})")
        print(f"  {name}: " + "; ".join(line))


if __name__ == "__main__":
    main()
