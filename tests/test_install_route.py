"""The README's CPU-only install route ends with no CUDA package.

The route is: torch and torchvision, together, from PyTorch's CPU index; then `pip install .`,
which must find both satisfied. open_clip and timm require torchvision, so a torch installed
alone leaves `pip install .` to take PyPI's newest torchvision, which can require a newer
torch than the CPU index has: pip then replaces the CPU torch with PyPI's CUDA build and its
nvidia-* libraries (the issue "A fresh clone: the README's two commands work as written").

The fast tests read the README and pyproject.toml. The slow one asks pip's resolver itself
(`pip install --dry-run --report`) in a throwaway venv holding what the README's first CPU
command installs, as stand-in distributions of the CPU pair's versions (metadata only, no
wheel): installing the project must install no torch, torchvision, nvidia-*, cuda-* or
triton. It needs PyPI (or pip's configured indexes) for the project's other dependencies;
tests/benchmarks/bench_install.py installs the routes for real and measures them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

try:
    from packaging.requirements import Requirement
    from packaging.version import Version
except ImportError:  # pip vendors it
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
PAIR = ("torch", "torchvision")
VERSION = r"[0-9]+(?:\.[0-9]+)*(?:\+\w+)?"
CUDA_PACKAGES = re.compile(r"^(nvidia-|cuda-|triton$)")


def quick_start() -> str:
    text = README.read_text()
    start = text.index("## Quick start")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def code_blocks(section: str) -> list[list[str]]:
    """The indented code blocks of a Markdown section, as lists of lines."""
    blocks, current = [], []
    for line in section.splitlines():
        if line.startswith("    ") and line.strip():
            current.append(line.strip())
        elif current and line.strip():
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def pip_installs(line: str) -> list[list[str]]:
    """The argument lists of each `pip install` in a shell line (`a && b` split)."""
    installs = []
    for command in re.split(r"&&|;|\|\|", line):
        words = shlex.split(command)
        for i in range(len(words) - 1):
            if words[i] in ("pip", "pip3") and words[i + 1] == "install":
                installs.append(words[i + 2:])
                break
    return installs


def packages_and_index(arguments: list[str]) -> tuple[list[str], str | None]:
    names, index, skip = [], None, False
    for i, word in enumerate(arguments):
        if skip:
            skip = False
        elif word in ("--index-url", "-i"):
            index, skip = arguments[i + 1], True
        elif word.startswith("--index-url="):
            index = word.split("=", 1)[1]
        elif not word.startswith("-"):
            names.append(word)
    return names, index


def cpu_route() -> list[list[str]]:
    """The `pip install` argument lists the README's CPU-only route runs before `pip install .`:
    those of the code block in which a CPU index is named, up to its `pip install .`."""
    for block in code_blocks(quick_start()):
        installs = [args for line in block for args in pip_installs(line)]
        if not any("cpu" in (packages_and_index(args)[1] or "") for args in installs):
            continue
        before = []
        for args in installs:
            if packages_and_index(args)[0][:1] == ["."]:
                return before
            before.append(args)
    raise AssertionError("the README's Quick start has no code block that names a CPU index and then runs `pip install .`")


def stated_pairs() -> dict[str, tuple[str, str]]:
    """The torch/torchvision pairs the Quick start names: 'lowest' and 'measured'."""
    section = quick_start()
    pairs = {}
    for kind in ("lowest", "measured"):
        found = re.search(rf"{kind} pair[^.]*?torch ({VERSION}) with torchvision ({VERSION})", section, re.S)
        assert found, f"the Quick start names no {kind} pair ('{kind} pair ... torch X with torchvision Y')"
        pairs[kind] = (found[1], found[2])
    return pairs


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    return [Requirement(line) for line in lines]


def test_cpu_route_installs_torch_and_torchvision_together_from_one_cpu_index():
    before = cpu_route()
    index_of = {}
    for args in before:
        names, index = packages_and_index(args)
        for name in names:
            index_of[Requirement(name).name.lower()] = index
    missing = [name for name in PAIR if name not in index_of]
    assert not missing, f"the CPU route installs {', '.join(missing)} only through `pip install .`, which takes PyPI's (CUDA) build"
    assert index_of["torch"] == index_of["torchvision"], "torch and torchvision come from different indexes"
    assert "cpu" in index_of["torch"], f"{index_of['torch']} is not a CPU index"


def test_readme_says_how_to_check_that_no_cuda_package_came():
    assert "pip list | grep -i nvidia" in quick_start()


def test_readme_gives_the_venv_size_of_both_routes():
    section = quick_start()
    assert "bench_install.py" in section, "the sizes are measured by tests/benchmarks/bench_install.py"
    assert len(re.findall(r"\b\d+(?:\.\d+)? (?:GB|MB)\b", section)) >= 2


@pytest.mark.parametrize("kind", ["lowest", "measured"])
def test_the_project_admits_the_stated_cpu_pair(kind):
    """No requirement of the project forces a newer torch or torchvision than the pair the
    README names: `pip install .` keeps that pair."""
    torch_version, vision_version = stated_pairs()[kind]
    versions = {"torch": Version(torch_version), "torchvision": Version(vision_version)}
    for cpu in (False, True):  # as written, and as the CPU index's local label (+cpu)
        for requirement in project_requirements():
            name = requirement.name.lower()
            if name in versions:
                version = Version(f"{versions[name].public}+cpu") if cpu else versions[name]
                assert requirement.specifier.contains(version, prereleases=True), f"{requirement} refuses {name} {version}"


def test_the_pair_check_would_catch_a_pin_above_it():
    assert not Requirement("torchvision>=0.29").specifier.contains(Version("0.28.0+cpu"))
    assert Requirement("torch>=2.4").specifier.contains(Version("2.4+cpu"))


def _stand_in(site_packages: Path, name: str, version: str, requires: list[str]) -> None:
    """An installed distribution as pip sees one: its dist-info, no code."""
    info = site_packages / f"{name}-{version}.dist-info"
    info.mkdir()
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(metadata) + "\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


@pytest.mark.slow
def test_pip_keeps_the_cpu_pair_when_installing_the_project(tmp_path):
    """pip's resolver, asked to install the project where the README's first CPU command has
    installed its packages (the measured pair's versions), installs no torch and no CUDA."""
    torch_version, vision_version = stated_pairs()["measured"]
    torch_version = f"{Version(torch_version).public}+cpu"
    vision_version = f"{Version(vision_version).public}+cpu"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    installed = {name for args in cpu_route() for name in packages_and_index(args)[0]}
    if "torch" in installed:
        _stand_in(site, "torch", torch_version, [])
    if "torchvision" in installed:
        _stand_in(site, "torchvision", vision_version, [f"torch=={Version(torch_version).public}", "numpy", "pillow"])
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    done = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report), str(REPO_ROOT)],
                          env=env, capture_output=True, text=True, timeout=600)
    if done.returncode and re.search(r"NewConnectionError|Temporary failure in name resolution|Network is unreachable", done.stderr):
        pytest.skip("no package index reachable: " + done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr[-3000:]
    chosen = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
              for item in json.loads(report.read_text())["install"]}
    replaced = {name: version for name, version in chosen.items() if name in PAIR or CUDA_PACKAGES.match(name)}
    assert not replaced, f"installing the project would bring {replaced} over torch {torch_version}"
