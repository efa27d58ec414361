"""Decode workers die with their parent: `kill -9` of a rebuild (no finally, no atexit runs)
must not leave its worker processes, or the multiprocessing resource tracker, behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_photo

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

PHOTOS = 2000  # enough for the rebuild to be mid-decode for a while on a slow, shared machine


def library_of_distinct_photos(root: Path, count: int) -> Path:
    """`count` files of one JPEG, each with its own bytes after the image's end: decoders
    ignore them, but they make every fingerprint (and so every decode job) distinct."""
    original = make_photo(root / "original.jpg", seed=1).read_bytes()
    for i in range(count):
        folder = root / f"{i // 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"IMG_{i:05d}.jpg").write_bytes(original + f"copy {i}".encode())
    return root


def processes_in_group(group: int) -> dict[int, str]:
    """pid -> command line of the live processes in process group `group` (zombies are dead:
    an orphan's reaper may be slow, or absent in a container)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        if int(fields[2]) == group and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def decode_workers(group: int) -> dict[int, str]:
    return {pid: cmd for pid, cmd in processes_in_group(group).items() if "spawn_main" in cmd}


def poll(condition, deadline_seconds: float, interval: float = 0.05, stop=lambda: False):
    """condition()'s first truthy value, or its last value at the deadline (or once stop())."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        value = condition()
        if value or time.monotonic() > deadline or stop():
            return value
        time.sleep(interval)


@pytest.mark.slow
def test_kill_9_of_rebuild_takes_its_decode_workers_and_resource_tracker_with_it(tmp_path, model_args):
    root = library_of_distinct_photos(tmp_path / "Photos", PHOTOS)
    rebuild = subprocess.Popen(
        [sys.executable, "-m", "aes_index.cli", "rebuild", str(root), *model_args, "--workers", "2", "-q"],
        start_new_session=True,  # its own process group: whatever it started can be found
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    group = rebuild.pid
    try:
        workers = poll(lambda: len(decode_workers(group)) >= 2, 180, stop=lambda: rebuild.poll() is not None)
        assert workers and rebuild.poll() is None, (
            f"rebuild ended ({rebuild.poll()}) before two decode workers were seen: {rebuild.stderr.read().decode()}"
        )
        started = processes_in_group(group)
        assert any("resource_tracker" in cmd for cmd in started.values()), started
        os.kill(rebuild.pid, signal.SIGKILL)
        rebuild.wait()
        poll(lambda: not processes_in_group(group), 30)
        left = processes_in_group(group)
        assert not left, f"still running after the rebuild was killed: {left}"
    finally:
        if rebuild.poll() is None:
            rebuild.kill()
            rebuild.wait()
        for pid in processes_in_group(group):  # what a failing run leaves: ours, by pid
            os.kill(pid, signal.SIGKILL)
        rebuild.stderr.close()


# What a worker runs where prctl is missing (macOS, ...): the orphan check alone.
ORPHAN_CHECK_ONLY = """
import os, time
from aes_index.index import pipeline
pipeline._linux_kill_on_parent_death = lambda: False
pipeline._die_with_parent(os.getppid())
print("ready", flush=True)
time.sleep(120)
"""


def test_without_prctl_a_worker_notices_its_parent_gone_and_exits(tmp_path):
    # A parent (a shell) that starts the would-be worker, says its pid, and waits.
    parent = subprocess.Popen(
        ["/bin/sh", "-c", f'"{sys.executable}" -c "$0" & echo $!; wait', ORPHAN_CHECK_ONLY],
        start_new_session=True, stdout=subprocess.PIPE, text=True,
    )
    try:
        worker = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "ready"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        poll(lambda: worker not in processes_in_group(parent.pid), 30)
        assert worker not in processes_in_group(parent.pid)
    finally:
        for pid in processes_in_group(parent.pid):
            os.kill(pid, signal.SIGKILL)
        parent.stdout.close()
