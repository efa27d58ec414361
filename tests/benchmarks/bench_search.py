"""Search over a million stored embeddings: how long a query takes, and its memory. Prints JSON.

    python tests/benchmarks/bench_search.py [--rows 1000000] [--repeat 7]

The index is bench_pipeline's rescore input (tests/benchmarks/_library.py): n random
ViT-B-32 embeddings (pooled 768-d float16, the model's 768x512 projection, a norm per
row), built once under $AES_BENCH_DIR and copied here. Each part runs in its own process
(`--part`), so that its peak memory (VmHWM) is its own:

  store  the vector store built from the index (what the first search after a change
         that is no append pays; appends are added as a segment, a rebuild adds its own)
  scan   a query whose text is already encoded (a random unit vector in projected
         space): the median of --repeat runs of the scan and the exact ranking of the
         best, through features.search, after a first that maps the matrix's pages into
         the process (what a one-off CLI query pays; the review server keeps them mapped);
         no torch imported. Its memory: its own (anonymous) and the mapped file pages
  text   `search(library, TEXT)` whole, the text through ViT-B-32's text tower with
         random weights (`--pretrained random`: the real architecture, seeded), the
         median of --repeat runs after one that loads the model; and the text tower alone

Measured warm: the store's 3 GB are in the page cache after it is built (a cold disk
adds its read). A busy machine is slower: `reference_in_memory_matvec_s` (numpy's product
of an in-memory 1M x 768 float32 matrix and a vector, measured after the parts) says how
busy. Benchmarks print figures; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "plugin"), str(HERE)]

import _library  # noqa: E402
import _measure  # noqa: E402

BENCH_DIR = _library.BENCH_DIR
HEAD = "zeroshot"  # the head the input index was scored with (bench_pipeline's DEFAULT_HEAD)
QUERIES = ("kite on a beach at dusk", "a red bicycle against a white wall", "children playing in the snow")
TARGET_QUERY_S = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--part", choices=("store", "scan", "text"), help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["AES_INDEX_CACHE_DIR"] = str(BENCH_DIR / "cache")
    os.environ["HF_HUB_OFFLINE"] = "1"
    if args.part:
        result = PARTS[args.part](Path(args.db), args.repeat)
        result["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(result))
        return
    db = prepare(args.rows)
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": _measure.machine(), "rows": args.rows}
    for part in ("store", "scan", "text"):
        report[part] = run_part(part, db, args.repeat)
    report["reference_in_memory_matvec_s"] = _reference_matvec(768)
    report["targets"] = {"query_1m_s": {"value": report["scan"]["median_s"], "target": f"<= {TARGET_QUERY_S}",
                                        "met": report["scan"]["median_s"] <= TARGET_QUERY_S}} if args.rows >= 1_000_000 else {}
    cleanup(db)
    print(json.dumps(report, indent=2))


def prepare(rows: int) -> Path:
    """A writable copy of the n-row index, at the current schema, without a vector store."""
    from aes_index.index.store import Index
    from aes_index.model.backbone import load_backbone
    from aes_index.model.head_choice import resolve_head

    backbone = load_backbone("ViT-B-32", "random", "cpu", "auto")
    head = resolve_head(HEAD, backbone.key, lambda: backbone)
    pristine = _library.rescore_index(rows, backbone.info, backbone.projection, head)
    db = BENCH_DIR / "work" / "search.db"
    cleanup(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(pristine, db)
    with Index(db):  # migrated now, not inside a measured part
        pass
    return db


def cleanup(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".vectors.lock", ".writer.lock"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(f"{db}.vectors", ignore_errors=True)


def run_part(part: str, db: Path, repeat: int) -> dict:
    command = [sys.executable, __file__, "--part", part, "--db", str(db), "--repeat", str(repeat)]
    measured = _measure.run(command, dict(os.environ))
    if measured.returncode != 0:
        raise SystemExit(f"{part} failed ({measured.returncode}):\n{measured.stderr[-3000:]}")
    result = json.loads(measured.stdout.strip().splitlines()[-1])
    result["process"] = measured.figures()
    return result


def _library_open(db: Path):
    from aes_index.config import Settings
    from aes_index.index.library import Library

    settings = Settings(db=str(db), model="ViT-B-32", pretrained="random", device="cpu")  # the active head: the index's
    return Library.open(settings, read_only=True)


def part_store(db: Path, repeat: int) -> dict:
    from aes_index.index.runner import BackboneSession

    with _library_open(db) as library:
        session = BackboneSession(library.index, library.settings)
        started, cpu = time.perf_counter(), time.process_time()
        matrix = library.index.vectors.matrix(session.id)
        built = time.perf_counter() - started, time.process_time() - cpu
        library.index.vectors.forget_files()
        started = time.perf_counter()
        library.index.vectors.matrix(session.id)  # current: the check every query makes
        checked = time.perf_counter() - started
        size = sum(p.stat().st_size for p in library.index.vectors.folder().glob("seg-*"))
    return {"rows": matrix.rows, "build_s": round(built[0], 3), "build_cpu_s": round(built[1], 3),
            "current_check_s": round(checked, 4), "store_mb": round(size / 1e6, 1), "torch_imported": "torch" in sys.modules}


def part_scan(db: Path, repeat: int) -> dict:
    import numpy as np

    from aes_index.features.search import _nearest
    from aes_index.index.runner import BackboneSession

    rng = np.random.default_rng(0)
    with _library_open(db) as library:
        session = BackboneSession(library.index, library.settings)
        times, cpu, hits = [], [], []
        for _ in range(repeat + 1):
            query = rng.standard_normal(session.info.embed_dim)
            query /= np.linalg.norm(query)
            started, started_cpu = time.perf_counter(), time.process_time()
            hits = _nearest(library, session, query, 20, leave_out=())
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        memory = _memory_now()
    first, times, cpu = times[0], times[1:], cpu[1:]
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3), "max_s": round(max(times), 3),
            "median_cpu_s": round(statistics.median(cpu), 3),
            "first_in_process_s": round(first, 3), "hits": len(hits), "torch_imported": "torch" in sys.modules,
            "after_queries": memory}


def _reference_matvec(dim: int) -> float:
    """The machine's speed now: numpy's product of an in-memory 1M x dim float32 matrix and
    a vector (the scan's floor), for reading the figures of a busy machine."""
    import numpy as np

    matrix = np.ones((1_000_000, dim), np.float32)
    vector = np.ones(dim, np.float32)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        matrix @ vector
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 3)


def part_text(db: Path, repeat: int) -> dict:
    from aes_index.features.search import search, text_encoder
    from aes_index.index.runner import BackboneSession

    with _library_open(db) as library:
        started = time.perf_counter()
        search(library, QUERIES[0], 20)  # loads the text tower (kept for later queries)
        first = time.perf_counter() - started
        encoder = text_encoder(BackboneSession(library.index, library.settings))
        whole, text_only = [], []
        for k in range(repeat):
            query = QUERIES[k % len(QUERIES)]
            started = time.perf_counter()
            search(library, query, 20)
            whole.append(time.perf_counter() - started)
            started = time.perf_counter()
            encoder.encode_text([query])
            text_only.append(time.perf_counter() - started)
    return {"median_s": round(statistics.median(whole), 3), "max_s": round(max(whole), 3),
            "text_tower_median_s": round(statistics.median(text_only), 3), "first_query_with_model_load_s": round(first, 3)}


PARTS = {"store": part_store, "scan": part_scan, "text": part_text}


def _peak_rss_mb() -> float:
    return _status_mb("VmHWM")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _memory_now() -> dict:
    """The process's memory now: its own (anonymous) and the mapped matrix's file pages
    (the kernel's page cache, shared, dropped under pressure)."""
    return {"rss_anon_mb": _status_mb("RssAnon"), "rss_file_mb": _status_mb("RssFile")}


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"benchmark took {time.perf_counter() - started:.0f} s", file=sys.stderr)
