"""`aes-index watch`: keep the index (and the stars) current as photos arrive.

Photos land from card readers, tethering, sync tools and NAS shares, often slowly and in
bursts. The watcher:
  * reconciles once at start (a full scan, exactly what `rebuild` does),
  * then takes file events (inotify, or polling for NFS/SMB with --poll),
  * waits until a file's size and mtime have been stable for `stable_seconds`, so a photo
    still being copied is never scored half-written,
  * feeds the ready paths, in batches, through indexer.run_stages, as `rebuild` does (which
    takes the writer lock per batch, so a concurrent `rebuild` and the watcher never decode
    the same file twice); files that run_stages finds still being written come back here,
  * rescans the roots periodically, because file events get lost (NAS, overflowing queues),
  * holds one lock per library (one watcher),
  * writes its state to `<db>.watch-status.json` for `aes-index status`.
Failures of single files are recorded by the stages; a locked database or a folder that
vanished mid-scan is logged and retried; the watcher lives on.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..index import runner as indexer
from ..atomic import atomic_write_bytes
from ..config import Settings
from ..errors import AesIndexError
from ..index.discover import is_candidate_name, stat_signature
from ..index.locks import LockHeld, file_lock
from ..index.store import Index

log = logging.getLogger(__name__)


@dataclass
class WatchConfig:
    stable_seconds: float = 2.0  # size+mtime unchanged this long -> the copy is finished
    rescan_seconds: float = 900.0  # full reconcile scan this often: events get lost
    poll: bool = False  # polling observer for network filesystems (no inotify there)
    poll_interval: float = 5.0
    batch_max: int = 512  # paths per batch: bounds one transaction's work
    tick: float = 0.25
    lock_wait: float = 5.0  # wait this long for the writer lock, then retry next tick


@dataclass
class WatchStatus:
    pid: int = field(default_factory=os.getpid)
    started: float = field(default_factory=time.time)
    state: str = "starting"
    queue: int = 0
    scored: int = 0
    errors: int = 0
    retries: int = 0
    last_scored: str | None = None
    last_scored_at: float | None = None
    last_rescan: float | None = None
    learned: dict | None = None  # the last time the watcher learned the person's taste (learn_after)
    stopped: float | None = None  # when it stopped; None while it runs

    def as_dict(self) -> dict:
        data = dict(self.__dict__)
        if self.stopped is None:  # a stopped watcher has no uptime
            data["uptime_seconds"] = round(time.time() - self.started, 1)
        return data


ALREADY_WATCHED = "another watcher is already running for this library"


def ensure_not_watched(db_path: Path) -> None:
    from ..index.locks import is_locked

    if is_locked(Path(db_path), "watch"):
        raise LockHeld(f"{ALREADY_WATCHED} (`aes-index status` shows it)")


def status_path(db_path: Path) -> Path:
    return Path(db_path).with_name(Path(db_path).name + ".watch-status.json")


class PendingPaths:
    """Paths with events, each waiting until it has stopped changing. Thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[tuple[int, int] | None, float]] = {}  # path -> (stat, since)

    def add(self, path: str) -> None:
        """Queue a path; an event on a path already waiting changes nothing: its size
        and mtime, not the events, tell when it has settled."""
        with self._lock:
            self._seen.setdefault(path, (None, time.monotonic()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def take_stable(self, stable_seconds: float, limit: int) -> list[str]:
        """Paths unchanged for `stable_seconds` (or gone: a deletion needs no waiting)."""
        now = time.monotonic()
        ready = []
        with self._lock:
            for path, (last, since) in list(self._seen.items()):
                current = stat_signature(path)
                if current is None:
                    ready.append(path)
                elif current != last:
                    self._seen[path] = (current, now)
                elif now - since >= stable_seconds:
                    ready.append(path)
                if len(ready) >= limit:
                    break
            for path in ready:
                del self._seen[path]
        return ready

    def put_back(self, paths: Sequence[str]) -> None:
        for path in paths:
            self.add(path)


def _make_handler(pending: PendingPaths, exclude: Sequence[str]):
    from watchdog.events import FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event):
            if event.event_type in ("opened", "closed_no_write"):
                return
            if event.is_directory and event.event_type == "modified":
                # A folder's mtime moves whenever anything in it changes, our own index
                # and status files included; its photos bring their own events.
                return
            for path in (event.src_path, getattr(event, "dest_path", "")):
                if path and (event.is_directory or is_candidate_name(os.path.basename(path), exclude)):
                    pending.add(os.fsdecode(path))

    return Handler()


class Watcher:
    def __init__(
        self, db_path: Path, roots: Sequence[str], settings: Settings, config: WatchConfig = WatchConfig(),
        after_batch: Callable[[Index, list[int]], None] | None = None, learn_places=None,
    ):
        self.db_path = Path(db_path)
        self.roots = [os.path.abspath(r) for r in roots]
        self.settings = settings
        self.config = config
        self.after_batch = after_batch  # e.g. apply star ratings to what was just scored
        self.pending = PendingPaths()
        self.status = WatchStatus()
        self._head_id: str | None = None
        # `learn_after` new decisions (settings; 0: off) learn the person's taste again at a rescan
        self.learn_places = learn_places

    def run(self, stop: threading.Event) -> WatchStatus:
        with file_lock(self.db_path, "watch", timeout=0, what=ALREADY_WATCHED):
            with Index(self.db_path) as index:
                self.index = index
                index.add_roots(self.roots)  # what it watches is the library: ratings go there
                self.session = indexer.BackboneSession(index, self.settings)
                self.run_id = index.runs.start("watch", self.roots, {"watch": self.config.__dict__})
                observer = self._start_observer()
                try:
                    self._loop(stop)
                finally:
                    observer.stop()
                    observer.join(timeout=10)
                    self.status.state = "stopped"
                    self.status.stopped = time.time()
                    self._write_status()
                    index.runs.finish(self.run_id, "stopped", self.status.as_dict(), self._head_id, self.session.key)
        return self.status

    def _start_observer(self):
        if self.config.poll:
            from watchdog.observers.polling import PollingObserver

            observer = PollingObserver(timeout=self.config.poll_interval)
        else:
            from watchdog.observers import Observer

            observer = Observer()
        handler = _make_handler(self.pending, self.settings.exclude)
        for root in self.roots:
            observer.schedule(handler, root, recursive=True)
        observer.daemon = True
        observer.start()
        return observer

    def _loop(self, stop: threading.Event) -> None:
        self._reconcile(stop)
        last_status = 0.0
        while not stop.is_set():
            ready = self.pending.take_stable(self.config.stable_seconds, self.config.batch_max)
            if ready:
                self._process(ready, stop)
            if time.time() - (self.status.last_rescan or 0) >= self.config.rescan_seconds:
                self._reconcile(stop)
            if time.monotonic() - last_status >= 1.0:
                self.status.state = "idle" if not len(self.pending) else "waiting for files to settle"
                self._write_status()
                last_status = time.monotonic()
            stop.wait(self.config.tick)

    def _reconcile(self, stop: threading.Event) -> None:
        self.status.state = "rescanning"
        self._write_status()
        if self._process(self.roots, stop):
            self.status.last_rescan = time.time()
            self._maybe_learn()

    def _maybe_learn(self) -> None:
        """Learn the person's taste again when they turned it on (`learn_after` N) and N
        decisions are new. Only at rescans: counting reads every photo's places. A failure
        is logged; the watcher lives on."""
        if self.settings.learn_after <= 0 or self.learn_places is None:
            return
        from .taste.learn import maybe_learn

        self.status.state = "learning your taste"
        try:
            report = maybe_learn(self.index, self.settings, self.learn_places, self.settings.learn_after)
        except (AesIndexError, LockHeld, sqlite3.DatabaseError, OSError) as exc:
            log.warning("taste not learned this time: %s", exc)
            self.status.errors += 1
            return
        if report is not None:
            self.status.learned = {"adopted": report["adopted"], "reason": report.get("reason"), "at": time.time()}
            log.info("learned your taste: %s", report.get("reason"))

    def _process(self, paths: Sequence[str], stop: threading.Event) -> bool:
        """Run the stages over `paths`; on a lock or a transient error, keep them for later."""
        self.status.state = "scoring"
        self.status.queue = len(self.pending) + len(paths)
        try:
            result = indexer.run_stages(
                self.index, paths, self.settings, session=self.session, stable_seconds=self.config.stable_seconds,
                stop=stop.is_set, lock_timeout=self.config.lock_wait,
            )
        except (LockHeld, sqlite3.DatabaseError, OSError) as exc:  # transient: keep the paths, retry
            log.warning("will retry %d path(s): %s", len(paths), exc)
            self.status.retries += 1
            if paths is not self.roots:
                self.pending.put_back(paths)
            return False
        self._note(result)
        # Still being written (seen by a rescan before any event), or changed while read:
        # wait for them to settle, like any file with events.
        self.pending.put_back(result.scanned.settling_paths + result.embedded.unsettled_paths)
        if self.after_batch and result.scanned.image_ids:
            self._rate(result.scanned.image_ids)
        self._keep_groups_current(result)
        return True

    def _keep_groups_current(self, result: indexer.StageResult) -> None:
        """A library that was culled stays culled: new, changed and departed photos join or
        leave their groups after each batch (incremental: only they are compared)."""
        changed = result.scored or result.measured or result.scanned.missing or result.scanned.moved
        if not changed or not self.index.culling.was_culled():
            return
        from .culling.cull import run_cull

        try:
            run_cull(self.index, result.head.name, lock_timeout=self.config.lock_wait)
        except (AesIndexError, LockHeld, sqlite3.DatabaseError, OSError) as exc:
            log.warning("groups not updated this time (the next batch or rescan does it): %s", exc)
            self.status.errors += 1

    def _rate(self, image_ids: list[int]) -> None:
        """Stars for the batch. A failure (a busy index, a refused sidecar run) is logged
        and counted; the watcher lives on, and the next batch or rescan rates them."""
        try:
            self.after_batch(self.index, image_ids)
        except (AesIndexError, sqlite3.DatabaseError, OSError) as exc:
            log.warning("ratings for %d photo(s) not written this time: %s", len(image_ids), exc)
            self.status.errors += 1

    def _note(self, result: indexer.StageResult) -> None:
        self.status.scored += result.scored
        self.status.errors += result.errors
        if self._head_id != result.head.name:
            self.index.runs.note_head(self.run_id, result.head.name, result.backbone)
            self._head_id = result.head.name
        last = self._last_scored(result)
        if last is not None:
            self.status.last_scored = last
            self.status.last_scored_at = time.time()

    def _last_scored(self, result: indexer.StageResult) -> str | None:
        """The last photo of the batch that got a score: the last one decoded may have failed."""
        read = result.work[:result.embedded.read]  # the work is read in order; a stop may leave the rest
        for image_id, path in reversed(read):
            if self.index.scores.of(image_id, result.head.name) is not None:
                return path
        return None

    def _write_status(self) -> None:
        self.status.queue = len(self.pending)
        data = json.dumps(self.status.as_dict(), indent=2).encode()
        try:
            atomic_write_bytes(status_path(self.db_path), data)
        except OSError as exc:  # a read-only folder must not stop the watcher
            log.debug("cannot write watcher status: %s", exc)


def read_status(db_path: Path) -> dict | None:
    from ..index.locks import is_locked

    try:
        data = json.loads(status_path(db_path).read_text())
    except (OSError, ValueError):
        return None
    data["running"] = is_locked(Path(db_path), "watch")
    if not data["running"]:
        data.pop("uptime_seconds", None)  # stale: written by a watcher that is gone
    return data
