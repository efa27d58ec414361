"""What a key press costs in `aes-index review`: the person's decision written, read back, undone.

Prints JSON: milliseconds per `decisions.current` (what the page shows beside a frame),
`decisions.decide` (a pick, reject, unmark or stars: journaled ahead, written, read back)
and `decisions.undo` (Ctrl-Z), median and 95th percentile, in a library whose index holds
--photos photos and a journal of one apply-ratings write per photo (the journal's queries
are what grows with a library). The decided photos are real JPEGs with a darktable-style
sidecar in the library's folder; the rest exist in the index only.

    python tests/benchmarks/bench_review_decisions.py [--photos 100000] [--presses 200]

Figures only: nothing here asserts. Run it alone: on a busy machine times are slower.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1] / "plugin")]

from _measure import machine  # noqa: E402

from aes_index.config import Settings  # noqa: E402
from aes_index.features.review import decisions  # noqa: E402
from aes_index.index.library import Library  # noqa: E402
from aes_index.index.store import Index  # noqa: E402
from aes_index.targets.protocol import Write  # noqa: E402

PHOTO = HERE.parent / "fixtures" / "photos" / "evening-glow.jpg"
SIDECAR = HERE.parent / "fixtures" / "darktable-xmp" / "evening-glow-folk-toto.jpg.xmp"
KEYS = (("pick", None), ("stars", 3), ("reject", None), ("stars", 5), ("unmark", None), ("stars", 0))


def build(folder: Path, photos: int, decided: int) -> Path:
    """An index of `photos` photos (the first `decided` real files with a sidecar), with one
    apply-ratings journal row per photo."""
    root = folder / "Photos"
    root.mkdir(parents=True)
    db = folder / "index.db"
    with Index(db, create=True) as index:
        index.add_roots([str(root)])
        run = index.runs.start("apply-ratings", [str(root)])
        with index.transaction():
            for i in range(photos):
                path = root / f"IMG_{i:06d}.jpg"
                if i < decided:
                    shutil.copyfile(PHOTO, path)
                    shutil.copyfile(SIDECAR, f"{path}.xmp")
                image_id = index.images.add(str(path), 1000 + i, i, f"{i:064x}")
                index.journal.record(run, Write("xmp", f"{path}.xmp", str(path), old=None, new=1 + image_id % 5))
        index.runs.finish(run, "done", {})
    return db


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"n": len(values), "median_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2), "max_ms": round(ordered[-1], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--presses", type=int, default=200)
    args = parser.parse_args()
    decided = min(args.photos, 50)
    with tempfile.TemporaryDirectory(prefix="aes-bench-review-") as scratch:
        started = time.perf_counter()
        db = build(Path(scratch), args.photos, decided)
        built_s = time.perf_counter() - started
        root = Path(scratch) / "Photos"
        shown, written, undone, ids = [], [], [], []
        with Library.open(Settings(db=str(db))) as library:
            for press in range(args.presses):
                path = str(root / f"IMG_{press % decided:06d}.jpg")
                action, value = KEYS[press % len(KEYS)]
                state = []
                shown.append(timed(lambda: state.append(decisions.current(library, path))))
                written.append(timed(lambda: ids.append(decisions.decide(library, path, action, value, seen=state[0].seen).id)))
            for decision_id in reversed([i for i in ids if i is not None][-min(50, len(ids)):]):
                undone.append(timed(lambda: decisions.undo(library, decision_id)))
    print(json.dumps({
        "benchmark": "review decisions", "photos_in_index": args.photos, "journal_rows": args.photos, "index_built_s": round(built_s, 1),
        "current": summary(shown), "decide": summary(written), "undo": summary(undone),
        "machine": machine(), "load": os.getloadavg()[0],
    }, indent=2))


if __name__ == "__main__":
    main()
