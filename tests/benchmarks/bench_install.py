"""The README's install routes, each in a fresh venv: what pip installs and how big it gets.

    python tests/benchmarks/bench_install.py [--routes default,cpu,cpu-torch-only]
                                             [--cpu-index URL | --cpu-pair 'TORCH TORCHVISION']
                                             [--keep DIR]

Each route gets a fresh venv (`python -m venv`, so pip's own configuration applies, as it
would for a reader) and installs a fresh `git clone` of this repository's HEAD (committed
work only):

* `default`: `pip install .`, the README's first command. On Linux x86_64 PyPI's torch is
  a CUDA build: it brings the nvidia-* libraries.
* `cpu`: the README's CPU-only route. `pip install torch torchvision --index-url CPU_INDEX`,
  then `pip install .`, which finds both satisfied and keeps them.
* `cpu-torch-only`: the CPU route the README gave before: torch alone from the CPU index,
  then `pip install .`. pip then takes PyPI's newest torchvision, which requires a newer
  torch than the CPU index served, and replaces the CPU torch with PyPI's CUDA build.

`--cpu-index` is PyTorch's CPU index (the default, https://download.pytorch.org/whl/cpu).
Where it can't be reached, `--cpu-pair` names the pair to install in its place, by pip's own
configuration (its find-links and indexes), e.g. `--cpu-pair 'torch==2.13.0+cpu
torchvision==0.28.0'` where a CPU torch wheel lies in a find-links folder; `cpu-torch-only`
then installs the first of the two alone. The JSON says which source was used. A
torchvision from PyPI is built against PyPI's CUDA torch: beside a CPU torch it does not
import ("operator torchvision::nms does not exist"), which the import check shows; the
CPU index's own torchvision (`+cpu`) does.

Prints one JSON document: for each route the commands and their seconds, the venv's size
(MB = 10^6 bytes, disk usage as `du` counts it), the torch and torchvision installed, the
nvidia-* and cuda-* packages and triton, whether `import open_clip, torchvision` works and
whether `aes-index --help` runs (with the last line of the error if not). Downloads come
from PyPI (or pip's cache); a route that installs the CUDA build takes several minutes and
about 6 GB of disk, removed afterwards unless `--keep DIR` keeps the venvs there.
Benchmarks print figures; nothing here asserts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE)]

import _measure  # noqa: E402

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
ROUTES = ("default", "cpu", "cpu-torch-only")
CUDA_PREFIXES = ("nvidia-", "cuda-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routes", default=",".join(ROUTES), help=f"comma-separated, of {', '.join(ROUTES)} (default: all)")
    parser.add_argument("--cpu-index", default=CPU_INDEX, help=f"PyTorch's CPU index (default {CPU_INDEX})")
    parser.add_argument("--cpu-pair", help="'TORCH TORCHVISION' requirements installed by pip's own configuration instead of the CPU index")
    parser.add_argument("--keep", type=Path, help="build the venvs in this folder and keep them")
    args = parser.parse_args()
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    unknown = sorted(set(routes) - set(ROUTES))
    if unknown:
        parser.error(f"unknown route(s): {', '.join(unknown)}")
    if args.cpu_pair:
        pair = args.cpu_pair.split()
        if len(pair) != 2:
            parser.error("--cpu-pair takes two requirements, torch's then torchvision's")
        cpu_first = {"cpu": pair, "cpu-torch-only": pair[:1]}
        cpu_source = f"--cpu-pair (pip's own configuration: {_pip_config()})"
    else:
        if any(r != "default" for r in routes) and not _reachable(args.cpu_index):
            sys.exit(f"bench_install: {args.cpu_index} can't be reached; name a local pair with --cpu-pair")
        index = ["--index-url", args.cpu_index]
        cpu_first = {"cpu": ["torch", "torchvision", *index], "cpu-torch-only": ["torch", *index]}
        cpu_source = args.cpu_index

    report: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.date.today().isoformat(),
        "machine": _measure.machine() | {"arch": platform.machine(), "python": platform.python_version()},
        "cpu_source": cpu_source,
        "routes": {},
    }
    work = args.keep or Path(tempfile.mkdtemp(prefix="aes-bench-install-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        source = work / "clone"
        if not source.exists():
            subprocess.run(["git", "clone", "-q", str(REPO), str(source)], check=True)
        report["commit"] = _git(source, "rev-parse", "--short", "HEAD")
        for route in routes:
            steps = [cpu_first[route]] if route in cpu_first else []
            steps.append(["."])
            report["routes"][route] = run_route(work / f"venv-{route}", source, steps)
            print(f"bench_install: {route} done", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))


def run_route(venv: Path, source: Path, steps: list[list[str]]) -> dict:
    """A fresh venv at `venv`, then `pip install STEP` for each step, run in `source`."""
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    result: dict = {"pip": _output([str(python), "-m", "pip", "--version"], env).split(" from ")[0], "steps": []}
    for step in steps:
        started = time.perf_counter()
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", *step], cwd=source, env=env,
                              capture_output=True, text=True)
        result["steps"].append({
            "command": "pip install " + " ".join(step),
            "returncode": done.returncode,
            "seconds": round(time.perf_counter() - started, 1),
            "torch_after": _installed(python, env).get("torch"),
            **({"error": _last_line(done.stderr)} if done.returncode else {}),
        })
    installed = _installed(python, env)
    cuda = sorted(n for n in installed if n.startswith(CUDA_PREFIXES))
    size = _disk_bytes(venv)
    result |= {
        "venv_mb": round(size / 1e6),
        "venv_gib": round(size / 2**30, 2),
        "packages": len(installed),
        "torch": installed.get("torch"),
        "torchvision": installed.get("torchvision"),
        "nvidia_packages": sum(n.startswith("nvidia-") for n in installed),
        "cuda_packages": [f"{n}=={installed[n]}" for n in cuda],
        "triton": installed.get("triton"),
        "import_open_clip_torchvision": _works([str(python), "-c", "import open_clip, torchvision"], env),
        "aes_index_help": _works([str(venv / "bin" / "aes-index"), "--help"], env),
    }
    return result


def _installed(python: Path, env: dict) -> dict[str, str]:
    listing = json.loads(_output([str(python), "-m", "pip", "list", "--format", "json"], env) or "[]")
    return {p["name"].lower().replace("_", "-"): p["version"] for p in listing}


def _works(command: list[str], env: dict) -> dict:
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"ok": False, "error": str(error)}
    return {"ok": True} if done.returncode == 0 else {"ok": False, "error": _last_line(done.stderr or done.stdout)}


def _disk_bytes(path: Path) -> int:
    """Disk usage as `du -s` counts it: allocated blocks, each inode once."""
    seen, total = set(), 0
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(folder, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/torch/", timeout=15):
            return True
    except (OSError, ValueError):
        return False


def _pip_config() -> str:
    listing = _output([sys.executable, "-m", "pip", "config", "list"], None)
    return "; ".join(line for line in listing.splitlines() if "cert" not in line and "timeout" not in line) or "none"


def _output(command: list[str], env: dict | None) -> str:
    return subprocess.run(command, env=env, capture_output=True, text=True).stdout.strip()


def _git(repo: Path, *args: str) -> str:
    return _output(["git", "-C", str(repo), *args], None)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip() and "is ignored" not in line]
    return lines[-1].strip() if lines else ""


if __name__ == "__main__":
    main()
