"""How fast the review shows a 24 MP JPEG at screen size and at 100 % (issue 25, point 7). Prints JSON.

    python tests/benchmarks/bench_review_images.py [--repeats 7]

Input: a 24 MP camera-like JPEG (6000x4000, quality 92, 4:2:2, sensor noise: culling_camera's
render of a mate-backgrounds photograph, as the culling benchmark's frames), and the same
frame stored on its side with EXIF orientation 6 (a portrait shot: full resolution must also
be turned). Built once under $AES_BENCH_DIR/review-images. The file is in the page cache
(the browser asks for a photo the server has just listed); a first read from a cold disk
adds its own time.

Measured, each the median (and min, max) of --repeats runs in this process, wall ms, and
beside each its CPU ms (`_cpu`: this thread's CPU time; all the work runs in the calling
thread, so wall minus CPU is waiting: for the disk, or for a core other processes hold):

* screen_cold: info() + fit(1920, 1080) on an empty cache: what a first view costs
  (target <= 300 ms).
* screen_cold_3840x2160: the same for a 2x screen, which JPEG's DCT scaling cannot help.
* screen_cached: fit(1920, 1080) again: the JPEG from the disk cache. screen_cached_restart:
  the same from a new Renderer on that cache (a second run of `aes-index review`).
* tile_cold: tile(level 0, a middle one) on an empty cache: info, the full-resolution decode,
  writing it to the disk cache, the crop and its JPEG (target <= 100 ms: see tile_after_prepare).
  tile_cold_no_disk: the same with levels_on_disk=False (the decode, not the write).
* tile_warm: the next tile of the same photo: a crop of the decode kept in memory.
* tile_second_view: a new Renderer on the cache tile_cold left (the photo seen again after a
  restart, or after two other photos pushed it out of memory): memory-mapped from the level on disk.
  tile_second_view_no_disk: the same without levels on disk: the decode again.
* tile_after_prepare: prepare() (what the server runs in the background while the photo is
  shown at screen size), then the first tile.
* tile_level1_cold: the first tile of level 1 (50 %) once level 0 is in memory.
* decode_full_ms / decode_fit_ms: decode_for_display alone, for the breakdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1] / "plugin"), str(HERE.parent), str(HERE)]

from PIL import Image  # noqa: E402

import culling_camera as camera  # noqa: E402
import culling_photos  # noqa: E402
from aes_index.features.review.images import Renderer  # noqa: E402
from aes_index.index.decode import decode_for_display  # noqa: E402

BENCH_DIR = Path(os.environ.get("AES_BENCH_DIR", "/tmp/aes-bench"))
FOLDER = BENCH_DIR / "review-images"
SCREEN = (1920, 1080)
HIDPI_SCREEN = (3840, 2160)  # the same screen at 2x (a "retina" display): a full decode
MIDDLE = (5, 3)  # a level-0 tile of 512 px near the middle of 6000x4000
CACHE_BYTES = 4 * 1024**3


def main() -> None:
    args = parse_args()
    photos = {"landscape": make_frame(FOLDER / "frame-24mp.jpg"),
              "portrait_exif6": make_frame(FOLDER / "frame-24mp-portrait.jpg", orientation=6)}
    report = {"machine": machine(), "repeats": args.repeats, "targets_ms": {"screen": 300, "tile": 100}, "photos": {}}
    for label, path in photos.items():
        Renderer(fresh_cache(), CACHE_BYTES).fit(path, *SCREEN)  # imports and first-use costs out of the figures
        report["photos"][label] = measure(path, args.repeats)
    print(json.dumps(report, indent=2))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    return parser.parse_args()


def make_frame(path: Path, orientation: int | None = None) -> Path:
    if path.exists():
        return path
    photos = culling_photos.mate_nature_photos()
    scene = camera.scene_of(Image.open(photos[0]).convert("RGB"))
    frame = camera.render(scene, camera.Shot(seed=1), camera.FULL_LONG_SIDE)
    exif = None
    if orientation is not None:  # stored on its side, as a camera held upright writes it
        frame = frame.transpose(Image.Transpose.ROTATE_90)
        tags = Image.Exif()
        tags[0x0112] = orientation
        exif = tags.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(camera.jpeg_bytes(frame, quality=92, exif=exif))
    return path


def measure(path: Path, repeats: int) -> dict:
    figures: dict[str, list[float]] = {}

    def timed(name: str, action) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        action()
        figures.setdefault(name, []).append((time.perf_counter() - started) * 1000)
        figures.setdefault(name + "_cpu", []).append((time.thread_time() - cpu) * 1000)

    for _ in range(repeats):
        cache = fresh_cache()
        renderer = Renderer(cache, CACHE_BYTES)
        timed("screen_cold", lambda: (renderer.info(path), renderer.fit(path, *SCREEN)))
        timed("screen_cached", lambda: renderer.fit(path, *SCREEN))
        timed("screen_cached_restart", lambda: Renderer(cache, CACHE_BYTES).fit(path, *SCREEN))
        renderer = Renderer(fresh_cache(), CACHE_BYTES)
        timed("screen_cold_3840x2160", lambda: (renderer.info(path), renderer.fit(path, *HIDPI_SCREEN)))

        cache = fresh_cache()
        renderer = Renderer(cache, CACHE_BYTES)
        timed("tile_cold", lambda: renderer.tile(path, 0, *MIDDLE))
        timed("tile_warm", lambda: renderer.tile(path, 0, MIDDLE[0] + 1, MIDDLE[1]))
        timed("tile_level1_cold", lambda: renderer.tile(path, 1, 2, 1))
        restarted = Renderer(cache, CACHE_BYTES)
        timed("tile_second_view", lambda: restarted.tile(path, 0, *MIDDLE))

        renderer = Renderer(fresh_cache(), CACHE_BYTES, levels_on_disk=False)
        timed("tile_cold_no_disk", lambda: renderer.tile(path, 0, *MIDDLE))
        renderer = Renderer(fresh_cache(), CACHE_BYTES, levels_on_disk=False)
        renderer.info(path)  # a second view: its info is known, its pixels are not in memory
        timed("tile_second_view_no_disk", lambda: renderer.tile(path, 0, *MIDDLE))

        renderer = Renderer(fresh_cache(), CACHE_BYTES)
        renderer.fit(path, *SCREEN)
        renderer.prepare(path)
        timed("tile_after_prepare", lambda: renderer.tile(path, 0, *MIDDLE))

        timed("decode_full_ms", lambda: decode_for_display(path))
        timed("decode_fit_ms", lambda: decode_for_display(path, fit=SCREEN))
    shutil.rmtree(BENCH_DIR / "review-images-caches", ignore_errors=True)
    with Image.open(path) as image:
        stored = image.size
    return {"file": str(path), "stored_size": stored, "bytes": path.stat().st_size,
            **{name: summary(values) for name, values in figures.items()}}


def fresh_cache() -> Path:
    root = BENCH_DIR / "review-images-caches"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root))


def summary(values: list[float]) -> dict:
    return {"median_ms": round(statistics.median(values), 1), "min_ms": round(min(values), 1),
            "max_ms": round(max(values), 1)}


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2), "python": platform.python_version(),
            "pillow": Image.__version__}


if __name__ == "__main__":
    main()
