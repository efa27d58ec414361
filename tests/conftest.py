"""Shared fixtures: a tiny open_clip model saved as a real checkpoint, and photo libraries.

The tiny model is built from an open_clip model-config JSON written here and saved with
safetensors, then loaded back through `--model CONFIG.json --pretrained FILE`: the same
path a user's own checkpoint takes. No download, ever (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real files from public projects, in the repository so that a clone tests itself with nothing
# beside it; each one's source, licence and sha256 are in fixtures/PROVENANCE.md.
FIXTURES = Path(__file__).resolve().parent / "fixtures"
METADATA_SAMPLES = FIXTURES / "metadata-samples"
PHOTO = FIXTURES / "photos" / "evening-glow.jpg"  # 2560x1600: rowing boats on a lake shore at dusk
UPSTREAM_HEADS = FIXTURES / "upstream-heads"

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


STABLE_ENV = "AES_INDEX_STABLE_SECONDS"


@pytest.fixture(scope="session", autouse=True)
def no_stability_window():
    """Tests make photos and index them at once: with the default 2 s window a rebuild would
    leave every one of them for later. Set in os.environ so CLI subprocesses inherit it;
    tests of the window set their own."""
    previous = os.environ.get(STABLE_ENV)
    os.environ[STABLE_ENV] = "0"
    yield
    if previous is None:
        os.environ.pop(STABLE_ENV, None)
    else:
        os.environ[STABLE_ENV] = previous


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch, no_stability_window):
    """No test reads the user's config or caches, or reaches the network."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("AES_INDEX_CACHE_DIR", str(home / "cache"))
    for name in list(os.environ):
        if name.startswith("AES_INDEX_") and name not in ("AES_INDEX_CACHE_DIR", STABLE_ENV):
            monkeypatch.delenv(name)
    monkeypatch.setenv(STABLE_ENV, "0")  # a test that changed it leaves the next one the default


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> dict:
    """{"config": path to tiny-clip.json, "checkpoint": .safetensors, "pt": .pt} of one random model."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny-model")
    config = folder / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(1234)
    model = open_clip.create_model("tiny-clip")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    checkpoint = folder / "tiny-clip.safetensors"
    save_file(state, str(checkpoint))
    pt = folder / "tiny-clip.pt"
    torch.save({"state_dict": state}, pt)
    return {"config": str(config), "checkpoint": str(checkpoint), "pt": str(pt), "model": model}


@pytest.fixture
def settings(tiny_model):
    from aes_index.config import Settings

    return Settings(
        model=tiny_model["config"], pretrained=tiny_model["checkpoint"], device="cpu", dtype="fp32",
        workers=0, batch_size=4, stable_seconds=0.0,
    )


@pytest.fixture
def model_args(tiny_model) -> list[str]:
    """The same tiny model as CLI options."""
    return ["--model", tiny_model["config"], "--pretrained", tiny_model["checkpoint"], "--device", "cpu", "--dtype", "fp32"]


@pytest.fixture(scope="session")
def mate_photos() -> list[Path]:
    """The 12 nature photographs of Debian's mate-backgrounds (tests/culling_photos.py)."""
    from culling_photos import mate_nature_photos

    return debian_photos(mate_nature_photos, "mate-backgrounds")


@pytest.fixture(scope="session")
def plasma_photos() -> tuple[list[Path], list[Path]]:
    """(camera photographs, smooth ones) of Debian's plasma-workspace-wallpapers (tests/culling_photos.py)."""
    from culling_photos import plasma_photos as fetch

    return debian_photos(fetch, "plasma-workspace-wallpapers")


def debian_photos(fetch, package: str):
    """Photographs from a Debian package, downloaded once with apt-get: a failure in CI
    (.ci/run fetches them first), a skip elsewhere."""
    from culling_photos import PhotosUnavailable

    try:
        return fetch()
    except PhotosUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the {package} photos are needed in CI: {exc}")
        pytest.skip(f"no {package} photos (CI is unset): {exc}")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """`aes-index ARGV...` in this process: (exit code, stdout, stderr)."""
    from aes_index.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def cli_stdout(*argv) -> str:
    """`aes-index ARGV...` in this process, outside a test's capsys (a module fixture's
    setup): its stdout; a non-zero exit fails with the end of its stderr."""
    import contextlib
    import io

    from aes_index.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    assert code == 0, f"aes-index {argv[0]} exited {code}: {err.getvalue()[-2000:]}"
    return out.getvalue()


def scored_folder(root: Path, count: int, seed: int, model_args, capsys) -> Path:
    """`count` JPEGs in `root`, rebuilt and scored with the tiny model."""
    for i in range(count):
        make_photo(root / f"DSC_{i:04d}.jpg", seed=seed + i)
    code, _, err = run_cli(capsys, "rebuild", root, *model_args, "--workers", "0")
    assert code == 0, err
    return root


def synthetic_scored_index(path: Path, photos: int, folders: int, seed: int) -> Path:
    """An index of `photos` scored rows in `folders` folders under /nowhere/Photos, whose
    files don't exist: for what reads the index only (pages, thumbnails that fail).
    Written with raw SQL: thousands of rows at once, without embeddings or a real head."""
    from aes_index.index.store import Index

    width = len(str(folders))
    rng = np.random.default_rng(seed)
    with Index(path) as index, index.transaction():
        index.db.conn.executemany(
            "INSERT INTO images (id, path, size, mtime_ns, fingerprint, status) VALUES (?, ?, 1, 1, ?, 'ok')",
            [(i, f"/nowhere/Photos/{i % folders:0{width}d}/IMG_{i:06d}.jpg", f"{i:032x}") for i in range(1, photos + 1)],
        )
        index.db.execute("INSERT INTO heads (id, hash, kind) VALUES ('synthetic', 'h', 'linear')")
        index.db.execute("INSERT INTO score_batches (id, head_id, head_hash) VALUES (1, 'synthetic', 'h')")
        index.db.conn.executemany(
            "INSERT INTO scores (image_id, head_id, score, batch) VALUES (?, 'synthetic', ?, 1)",
            [(i, float(s)) for i, s in zip(range(1, photos + 1), rng.normal(5, 1, photos))],
        )
        index.db.execute("INSERT INTO runs (command, status, head_id) VALUES ('rebuild', 'done', 'synthetic')")
        index.add_roots(["/nowhere/Photos"])
    return path


def make_photo(path: Path, seed: int, size=(320, 240)) -> Path:
    """A small JPEG cut from the real photo, varied by seed so embeddings differ."""
    rng = np.random.default_rng(seed)
    with Image.open(PHOTO) as source:
        width, height = source.size
        left, top = int(rng.integers(0, width - 640)), int(rng.integers(0, height - 480))
        crop = source.crop((left, top, left + 640, top + 480)).resize(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    crop.save(path, quality=90)
    return path


@pytest.fixture
def library(tmp_path) -> Path:
    """A library folder: every metadata-sample fixture, photos in subfolders, awkward names."""
    root = tmp_path / "Photos"
    shutil.copytree(METADATA_SAMPLES, root / "samples", copy_function=shutil.copyfile)  # writable copies, whatever the checkout's modes
    for i in range(6):
        make_photo(root / "2024" / f"IMG_{i:04d}.jpg", seed=i)
    make_photo(root / "2024" / "Straße mit Ümläut 'quoted' $(x).jpg", seed=10)
    make_photo(root / "@eaDir" / "SYNOPHOTO_THUMB.jpg", seed=11)  # NAS clutter: skipped
    make_photo(root / ".hidden" / "secret.jpg", seed=12)  # hidden folder: skipped
    (root / "2024" / "notes.txt").write_text("not a photo")
    return root


def photo_paths(root: Path) -> list[Path]:
    from aes_index.index.discover import discover

    return [Path(e.path) for e in discover([root])]
