"""The background indexer with a real watchdog observer on temporary folders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from aes_index.index import pipeline
from aes_index.formats import xmp
from aes_index.features.rating import RatingOptions, apply_ratings
from aes_index.errors import IndexUnavailable
from aes_index.index.store import MISSING, OK, Index
from aes_index.features.watch import WatchConfig, Watcher, read_status

from conftest import make_photo
import index_rows

FAST = WatchConfig(stable_seconds=0.6, rescan_seconds=3600, tick=0.1, lock_wait=0.5)


@pytest.fixture
def decoded(monkeypatch):
    """Counts decodes per file name inside this process (the watcher decodes inline)."""
    counts = Counter()
    real = pipeline.decode_image

    def counting(path, *args, **kwargs):
        counts[os.path.basename(path)] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "decode_image", counting)
    return counts


class RunningWatcher:
    def __init__(self, root, db, settings, config=FAST, after_batch=None):
        self.stop = threading.Event()
        self.watcher = Watcher(db, [str(root)], settings.replace(workers=0), config, after_batch)
        self.errors = []
        self.thread = threading.Thread(target=self._run, name="test-watcher")

    def _run(self):
        try:
            self.watcher.run(self.stop)
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "watcher did not stop"
        assert not self.errors, self.errors


def wait_for(condition, timeout=90.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def statuses(db: Path) -> dict[str, str]:
    with Index(db, read_only=True) as index:
        return index_rows.statuses(index)


def scored_paths(db: Path) -> set[str]:
    """What the index has scored, read as `top` reads it: a reader that takes no write
    lock (nothing yet while the watcher has not created the index)."""
    try:
        with Index(db, read_only=True) as index:
            head = index.runs.active_head_id()
            return {r["path"] for r in index.scores.ranked(head)} if head else set()
    except IndexUnavailable as exc:
        if db.exists() and "empty" not in str(exc):
            raise
        return set()


def test_bursts_slow_copy_rename_delete_and_concurrent_rebuild(tmp_path, settings, model_args, decoded):
    root = tmp_path / "Incoming"
    (root / "day1").mkdir(parents=True)
    for i in range(10):
        make_photo(root / "day1" / f"old_{i:03d}.jpg", seed=i)
    db = tmp_path / "index.db"
    staging = tmp_path / "staging"
    for i in range(200):
        make_photo(staging / f"new_{i:03d}.jpg", seed=1000 + i, size=(160, 120))
    baseline_threads = threading.active_count()

    with RunningWatcher(root, db, settings):
        wait_for(lambda: len(scored_paths(db)) == 10, what="the reconcile scan")
        rebuild = None
        for burst in range(4):  # a card import: 4 bursts of 50
            (root / f"burst{burst}").mkdir()
            for i in range(burst * 50, burst * 50 + 50):
                shutil.copy(staging / f"new_{i:03d}.jpg", root / f"burst{burst}" / f"new_{i:03d}.jpg")
            if burst == 1:  # a manual rebuild runs while the watcher works
                # With the default stability window, as a person runs it: files still being
                # copied are the watcher's, never read half-written by the rebuild.
                env = {k: v for k, v in os.environ.items() if k != "AES_INDEX_STABLE_SECONDS"}
                rebuild = subprocess.Popen(
                    [sys.executable, "-m", "aes_index.cli", "rebuild", str(root), "--db", str(db), *model_args,
                     "--workers", "0", "--debug", "--json"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                )
            time.sleep(0.3)

        # one photo written slowly, in chunks, more slowly than nothing but faster than `stable`
        slow_source = make_photo(staging / "slow.jpg", seed=7, size=(640, 480)).read_bytes()
        slow = root / "burst0" / "slow.jpg"
        with open(slow, "wb") as handle:
            for start in range(0, len(slow_source), len(slow_source) // 6 + 1):
                handle.write(slow_source[start : start + len(slow_source) // 6 + 1])
                handle.flush()
                time.sleep(0.35)

        _, rebuild_err = rebuild.communicate(timeout=180)
        assert rebuild.returncode in (0, 3), rebuild_err
        expected = {str(p) for p in root.rglob("*.jpg")}
        wait_for(lambda: scored_paths(db) == expected, what="every photo scored")

        # a folder renamed: paths follow, nothing decoded again
        before = sum(decoded.values())
        os.rename(root / "day1", root / "day1-harbour")
        wait_for(lambda: all(str(root / "day1-harbour" / f"old_{i:03d}.jpg") in scored_paths(db) for i in range(10)),
                 what="the renamed folder")
        assert sum(decoded.values()) == before

        # files deleted: rows marked missing
        for i in range(5):
            os.remove(root / "burst3" / f"new_{150 + i:03d}.jpg")
        wait_for(lambda: sum(s == MISSING for s in statuses(db).values()) == 5, what="deletions")

    by_rebuild = Counter(
        os.path.basename(line.split("embedded ", 1)[1]) for line in rebuild_err.splitlines() if "embedded " in line
    )
    total = decoded + by_rebuild
    assert set(total) == {Path(p).name for p in expected} | {f"old_{i:03d}.jpg" for i in range(10)}
    assert max(total.values()) == 1, [name for name, n in total.items() if n > 1]  # exactly once
    assert decoded["slow.jpg"] + by_rebuild["slow.jpg"] == 1
    final = statuses(db)
    assert final[str(slow)] == OK  # never scored half-written
    with Index(db) as index:
        assert index.integrity() == "ok"
    wait_for(lambda: threading.active_count() <= baseline_threads, timeout=10, what="threads to end")


def test_ratings_follow_as_photos_are_scored(tmp_path, settings):
    root = tmp_path / "lib"
    root.mkdir()
    db = tmp_path / "index.db"
    rate = lambda index, ids: apply_ratings(index, RatingOptions(), image_ids=ids)  # noqa: E731
    with RunningWatcher(root, db, settings, after_batch=rate):
        for i in range(12):
            make_photo(root / f"p{i}.jpg", seed=300 + i)
        wait_for(lambda: len(list(root.glob("*.jpg.xmp"))) == 12, what="sidecars")
    ratings = [xmp.read_sidecar(p).rating for p in root.glob("*.jpg.xmp")]
    assert all(1 <= r <= 5 for r in ratings) and len(set(ratings)) > 1


def test_index_inside_the_library_does_not_keep_the_watcher_busy(tmp_path, settings):
    """The default: .aes-index.db (and the status file) in the library root. Their writes
    must not count as library changes that never settle."""
    root = tmp_path / "lib"
    root.mkdir()
    db = root / ".aes-index.db"
    with RunningWatcher(root, db, settings, WatchConfig(stable_seconds=1.0, rescan_seconds=3600, tick=0.1)) as running:
        wait_for(lambda: read_status(db) and read_status(db)["state"] == "idle", what="idle")
        for i in range(3):
            make_photo(root / f"p{i}.jpg", seed=40 + i)
        wait_for(lambda: len(scored_paths(db)) == 3, timeout=60, what="photos next to the index")
        wait_for(lambda: len(running.watcher.pending) == 0, timeout=10, what="an empty queue")


def test_periodic_rescan_catches_missed_events(tmp_path, settings, monkeypatch):
    """Events get lost (NAS, overflow): the periodic rescan finds the files anyway."""
    import aes_index.features.watch as watch_module

    monkeypatch.setattr(watch_module, "_make_handler", lambda pending, exclude: _DeafHandler())
    root = tmp_path / "lib"
    root.mkdir()
    db = tmp_path / "index.db"
    config = WatchConfig(stable_seconds=0.3, rescan_seconds=1.0, tick=0.1)
    with RunningWatcher(root, db, settings, config):
        time.sleep(0.5)
        make_photo(root / "unseen.jpg", seed=5)
        wait_for(lambda: str(root / "unseen.jpg") in scored_paths(db), timeout=30, what="the rescan")


class _DeafHandler:
    def dispatch(self, event):
        pass


def test_unreadable_file_and_vanished_folder_dont_stop_it(tmp_path, settings):
    root = tmp_path / "lib"
    (root / "gone").mkdir(parents=True)
    db = tmp_path / "index.db"
    with RunningWatcher(root, db, settings) as running:
        (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        for i in range(3):
            make_photo(root / "gone" / f"g{i}.jpg", seed=i)
        wait_for(lambda: len(scored_paths(db)) == 3, what="first photos")
        shutil.rmtree(root / "gone")
        make_photo(root / "after.jpg", seed=9)
        wait_for(lambda: str(root / "after.jpg") in scored_paths(db), what="a photo after the failures")
        assert statuses(db)[str(root / "broken.jpg")] == "error"
        assert running.watcher.status.errors >= 1
    assert sum(s == MISSING for s in statuses(db).values()) == 3


def test_service_lock_sigterm_and_status(tmp_path, model_args):
    root = tmp_path / "lib"
    root.mkdir()
    make_photo(root / "a.jpg", seed=1)
    db = tmp_path / "index.db"
    command = [sys.executable, "-m", "aes_index.cli", "watch", str(root), "--db", str(db), *model_args, "--workers", "0", "--stable", "0.5"]
    service = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (read_status(db) or {}).get("state") == "idle" and (read_status(db) or {}).get("scored") == 1,
                 timeout=120, what="the service to settle")
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert second.returncode == 5 and "another watcher is already running" in second.stderr and second.stderr.count("\n") == 1

        status = subprocess.run([sys.executable, "-m", "aes_index.cli", "status", "--db", str(db), "--json"],
                                capture_output=True, text=True, timeout=60)
        data = json.loads(status.stdout)
        assert data["running"] and data["queue"] == 0 and data["errors"] == 0 and data["uptime_seconds"] > 0
        assert data["last_scored"].endswith("a.jpg")
    finally:
        service.send_signal(signal.SIGTERM)
        out, err = service.communicate(timeout=60)
    assert service.returncode == 0, err
    assert "Traceback" not in err
    final = read_status(db)
    assert final["state"] == "stopped" and not final["running"]


def test_a_culled_library_keeps_its_groups_current_as_frames_arrive(tmp_path, settings):
    from aes_index.features.culling.cull import load_groups, run_cull
    from test_culling import burst

    root, db = tmp_path / "lib", tmp_path / "index.db"
    frames = burst(tmp_path / "card", seed=3, frames=4, second=10, sharp=2)
    root.mkdir()
    shutil.move(frames[0], root / frames[0].name)
    with RunningWatcher(root, db, settings):
        wait_for(lambda: len(scored_paths(db)) == 1, what="the first frame")
        with Index(db) as index:
            run_cull(index)  # the photographer culled once: from now on the watcher keeps it current
        for frame in frames[1:]:
            shutil.move(frame, root / frame.name)

        def grouped() -> int:
            with Index(db, read_only=True) as index:
                return sum(len(g.members) for g in load_groups(index))

        wait_for(lambda: grouped() == 4, what="the burst grouped")
    with Index(db, read_only=True) as index:
        (group,) = load_groups(index)
    assert group.keeper.path == str(root / frames[2].name)
