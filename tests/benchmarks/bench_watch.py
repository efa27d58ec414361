"""Watcher latency and idle cost, measured on a real `aes-index watch` process.

Prints JSON: seconds from a photo landing (its copy closed) to its score in the index and
to its XMP sidecar, and the watcher's CPU use while idle. Uses a randomly initialised
ViT-B-32 (the real model's cost) on this machine's default device and dtype.

    python tests/benchmarks/bench_watch.py [--photos 8] [--stable 1.0] [--idle 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PHOTO = Path(__file__).resolve().parents[1] / "fixtures" / "photos" / "evening-glow.jpg"  # see tests/fixtures/PROVENANCE.md


def camera_jpeg(path: Path, seed: int, size=(6000, 4000)) -> None:
    """A 24 MP JPEG from the real photo with sensor-like noise, as a camera writes it."""
    rng = np.random.default_rng(seed)
    with Image.open(PHOTO) as source:
        image = source.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.int16) + rng.normal(0, 4, size=(size[1], size[0], 3)).astype(np.int16)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=92)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_status(db: Path) -> dict:
    try:
        return json.loads(db.with_name(db.name + ".watch-status.json").read_text())
    except (OSError, ValueError):
        return {}


def wait(condition, timeout: float, poll: float = 0.02) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(poll)
    raise TimeoutError


def scored(db: Path, path: Path) -> bool:
    # Raw SQL on a plain read-only connection: polled many times a second while the watcher
    # writes, it must cost the measured latency nothing an Index's opening checks would.
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute(
            "SELECT 1 FROM scores s JOIN images i ON i.id = s.image_id WHERE i.path = ?", [str(path)]
        ).fetchone()
        return row is not None
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--stable", type=float, default=1.0)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="aes-bench-watch-"))
    library, staging, db = work / "library", work / "staging", work / "library" / ".aes-index.db"
    library.mkdir()
    staging.mkdir()
    for i in range(args.photos):
        camera_jpeg(staging / f"DSC_{i:04d}.jpg", seed=i)

    env = dict(os.environ, AES_INDEX_CACHE_DIR=str(work / "cache"))
    command = [sys.executable, "-m", "aes_index.cli", "watch", str(library), "--model", "ViT-B-32",
               "--pretrained", "random", "--stable", str(args.stable), "-q"]
    watcher = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        startup = wait(lambda: read_status(db).get("state") == "idle", timeout=600, poll=0.2)
        time.sleep(2)
        before, t0 = cpu_seconds(watcher.pid), time.monotonic()
        time.sleep(args.idle)
        idle_cpu = (cpu_seconds(watcher.pid) - before) / (time.monotonic() - t0)

        to_db, to_sidecar = [], []
        for photo in sorted(staging.iterdir()):
            target = library / photo.name
            shutil.copy(photo, target)  # copy closed: the photo has landed
            landed = time.monotonic()
            wait(lambda: scored(db, target), timeout=300)
            to_db.append(time.monotonic() - landed)
            wait(lambda: (library / f"{photo.name}.xmp").exists(), timeout=300)
            to_sidecar.append(time.monotonic() - landed)
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=120)
        shutil.rmtree(work, ignore_errors=True)

    print(json.dumps({
        "photos": args.photos,
        "photo": "24 MP JPEG (6000x4000, q92)",
        "stable_window_s": args.stable,
        "startup_to_idle_s": round(startup, 2),
        "landing_to_score_s": {"median": round(statistics.median(to_db), 2), "max": round(max(to_db), 2)},
        "landing_to_sidecar_s": {"median": round(statistics.median(to_sidecar), 2), "max": round(max(to_sidecar), 2)},
        "idle_cpu_percent": round(100 * idle_cpu, 2),
        "cpu_count": os.cpu_count(),
    }, indent=2))


if __name__ == "__main__":
    main()
