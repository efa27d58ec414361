"""`aes-index review` on a 100k-photo index: how soon the first group is there. Prints JSON.

    python tests/benchmarks/bench_review.py [--photos 100000] [--runs 5] [--no-browser]

The index is bench_culling.py's (`big_index`: --photos scored photos whose capture facts
were written through the store API: shoots of singles and bursts from 3 cameras over
years, 3 % re-exported duplicates), culled once with `aes-index cull` and kept. Its
photos' files do not exist: what is measured is the server's side (import, opening the
index, the group list, the first group with its facts and keeper), not decoding pixels
(images.py's benchmark measures those).

Each run starts `aes-index review --no-browser` in a fresh process (a cold start, as a
person's) and times, from the moment the process is started:

    url_s           the URL is printed (imports, the index opened, the port bound)
    groups_s        GET /api/groups answered (every group's id, kind and size)
    first_group_s   GET /api/groups/<first> answered (its members' facts, flags, keeper and
                    reason, each photo's rating and pick as its sidecar holds it)
    gallery_s       (after the first group) GET /api/gallery answered: the sort-by-aesthetic
                    gallery's data for every photo (report.page_data), timed on its own
    first_paint_s   (with Chromium) the page shows the first group: Chromium, started
                    before the run, navigates to the URL the moment it is printed; the
                    time at which the page's group is laid out (document.body.dataset.group
                    set in the frame after rendering), from process start

and, beside each wall time, the CPU time the review process had used by then (`*_cpu_s`,
from /proc: user + system): on a machine busy with other work the wall times grow, the CPU
times much less (the load average is recorded before and after).

The issue's target: the first group on screen <= 1 s after start. Figures only: nothing
here asserts. Inputs are built once under $AES_BENCH_DIR (default /tmp/aes-bench).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
sys.path[:0] = [str(TESTS.parent / "plugin"), str(TESTS), str(HERE)]

import _measure  # noqa: E402
from bench_culling import BENCH_DIR, big_index, run_json, subprocess_env  # noqa: E402

TARGET_FIRST_GROUP_S = 1.0


def main() -> None:
    args = parse_args()
    env = subprocess_env()
    db, cull = culled_index(args.photos, env)
    load_before = os.getloadavg()[0]
    runs = [start_once(db, env, browser=None) for _ in range(args.runs)]
    painted = []
    if not args.no_browser:
        from chromium import CHROMIUM, Chromium, Page

        if os.access(CHROMIUM, os.X_OK):
            profile = BENCH_DIR / "work" / "review-chromium"
            shutil.rmtree(profile, ignore_errors=True)
            browser = Chromium(profile)
            try:
                painted = [start_once(db, env, browser=(browser, Page)) for _ in range(args.runs)]
            finally:
                browser.close()
    report = {
        "photos": args.photos,
        "cull": cull,
        "runs": runs,
        "with_chromium": painted,
        "median": {key: median(r[key] for r in (painted if key.startswith("first_paint") else runs))
                   for key in ("url_s", "url_cpu_s", "groups_s", "first_group_s", "first_group_cpu_s", "gallery_s", "first_paint_s", "first_paint_cpu_s")
                   if (painted if key.startswith("first_paint") else runs)},  # fmt: skip
        "load_average": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2), "cores": os.cpu_count()},
        "target_first_group_s": TARGET_FIRST_GROUP_S,
        "machine": _measure.machine(),
    }
    on_screen = report["median"].get("first_paint_s", report["median"]["first_group_s"])
    report["met"] = on_screen <= TARGET_FIRST_GROUP_S
    print(json.dumps(report, indent=2))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true", help="leave out the first paint in Chromium")
    return parser.parse_args()


def culled_index(photos: int, env: dict) -> tuple[Path, dict]:
    """bench_culling's big index, culled once (kept beside it)."""
    folder = BENCH_DIR / f"review-{photos}"
    db = folder / "index.db"
    done = folder / ".complete"
    if done.is_file():
        return db, json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(big_index(photos), db)
    summary = run_json([sys.executable, "-m", "aes_index.cli", "cull", "--db", str(db), "--json", "-q"], env)
    cull = {key: summary.get(key) for key in ("photos", "groups", "bursts", "duplicates", "grouped_photos")}
    cull["seconds"] = summary["measured"]["wall_s"]
    done.write_text(json.dumps(cull))
    return db, cull


def start_once(db: Path, env: dict, browser) -> dict:
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "aes_index.cli", "review", "--no-browser", "--db", str(db)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)  # fmt: skip
    try:
        url = _url(process)
        figures = {"url_s": time.perf_counter() - started, "url_cpu_s": _cpu_s(process.pid)}
        if browser is not None:
            chromium, page_class = browser
            page = page_class(chromium)
            try:
                page.call("Page.navigate", url=url)
                page.evaluate("""new Promise((done) => { const check = () => document.body && document.body.dataset.group
                    ? requestAnimationFrame(() => done()) : setTimeout(check, 5); check(); })""")
                figures["first_paint_s"] = time.perf_counter() - started
                figures["first_paint_cpu_s"] = _cpu_s(process.pid)
            finally:
                page.__exit__()
        else:
            port, token = urlsplit(url).port, urlsplit(url).query.removeprefix("token=")
            groups = _get(port, token, "/api/groups")["groups"]
            figures["groups_s"] = time.perf_counter() - started
            first = _get(port, token, f"/api/groups/{groups[0]['id']}")
            figures["first_group_s"] = time.perf_counter() - started
            figures["first_group_cpu_s"] = _cpu_s(process.pid)
            figures["groups"], figures["first_group_members"] = len(groups), len(first["members"])
            asked = time.perf_counter()
            figures["gallery_photos"] = len(_get(port, token, "/api/gallery")["photos"])
            figures["gallery_s"] = time.perf_counter() - asked
        return {key: round(value, 3) if isinstance(value, float) else value for key, value in figures.items()}
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _url(process) -> str:
    ready, _, _ = select.select([process.stdout], [], [], 120)
    line = process.stdout.readline().strip() if ready else ""
    if not line.startswith("http://"):
        process.kill()
        raise SystemExit(f"review printed no URL: {line!r} {process.stderr.read()[-2000:]}")
    return line


def _get(port: int, token: str, path: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path, headers={"X-Review-Token": token})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"{path}: {response.status} {body[:500]!r}")
        return json.loads(body)
    finally:
        connection.close()


if __name__ == "__main__":
    main()
