"""Measuring a command: wall time, CPU time, and the peak memory of its whole process tree.

Peak memory is sampled every 100 ms over the command and all its descendants (the decode
workers), from /proc: the sum of their RSS (which counts a shared page once per process
that maps it, so it errs high) and of their PSS (shared pages split between the sharers).
The largest single process's own peak (VmHWM, kept by the kernel) is reported beside
them.
"""

from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class Measured:
    returncode: int
    wall_s: float
    cpu_s: float  # user + system of the command and every descendant it waited for
    peak_rss_tree_mb: float  # sum of RSS over the tree: shared pages counted per process
    peak_pss_tree_mb: float  # proportional set size: shared pages split between sharers
    peak_rss_largest_process_mb: float
    load_before: float
    load_after: float
    cpu_pressure_pct: float | None  # % of the run some task waited for a CPU (Linux PSI "some"; ours included)
    stdout: str
    stderr: str

    def figures(self) -> dict:
        data = asdict(self)
        data.pop("stdout")
        data.pop("stderr")
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in data.items()}


def run(command: list[str], env: dict | None = None, cwd: str | None = None) -> Measured:
    """Run `command` to completion, sampling its process tree's memory meanwhile."""
    before, load_before, pressure_before = os.times(), _load(), _cpu_stall_us()
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = _TreeSampler(process.pid)
    sampler.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    sampler.stop()
    after = os.times()
    cpu = (after.children_user + after.children_system) - (before.children_user + before.children_system)
    largest = sampler.peak_single / 2**20
    pressure_after = _cpu_stall_us()
    pressure = None if pressure_before is None or pressure_after is None else (pressure_after - pressure_before) / (wall * 1e4)
    return Measured(
        process.returncode, wall, cpu, sampler.peak / 2**20, sampler.peak_pss / 2**20, largest,
        load_before, _load(), pressure, stdout, stderr,
    )


class _TreeSampler(threading.Thread):
    """Sums the RSS of a process and its descendants every `interval` seconds; finds the
    descendants again every `rescan` seconds (a scan of /proc costs a few ms: doing it
    20 times a second would itself load the 2 cores being measured)."""

    def __init__(self, root: int, interval: float = 0.1, rescan: float = 1.0):
        super().__init__(daemon=True)
        self.root, self.interval, self.rescan = root, interval, rescan
        self.peak = self.peak_pss = self.peak_single = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        pids, scanned = [self.root], 0.0
        while not self._stopping.is_set():
            if time.monotonic() - scanned > self.rescan:
                pids, scanned = _tree(self.root), time.monotonic()
            self.peak = max(self.peak, sum(_rss_bytes(pid) for pid in pids))
            self.peak_pss = max(self.peak_pss, sum(_pss_bytes(pid) for pid in pids))
            self.peak_single = max([self.peak_single, *(_high_water_bytes(pid) for pid in pids)])
            self._stopping.wait(self.interval)

    def stop(self) -> None:
        self._stopping.set()
        self.join()


def _tree(root: int) -> list[int]:
    """root and its descendants, from the parent ids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    pids, frontier = [root], [root]
    while frontier:
        frontier = [child for pid in frontier for child in children.get(pid, [])]
        pids += frontier
    return pids


def _rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _high_water_bytes(pid: int) -> int:
    """The kernel's own peak RSS of one process (VmHWM): no peak between samples is missed."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def _pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def _cpu_stall_us() -> int | None:
    """Total microseconds in which some runnable task waited for a CPU (Linux PSI)."""
    try:
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some"):
                return int(line.rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        pass
    return None


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def machine() -> dict:
    """The facts a reader needs to compare figures: CPU model, cores, memory, OS."""
    facts = {"cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gib": _memory_gib(), "os": platform.platform()}
    flags = _cpu_flags()
    facts["cpu_features"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None
