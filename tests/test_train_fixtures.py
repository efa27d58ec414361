"""Synthetic AVA-format datasets for the aes-train tests (helpers + checks of the helpers).

An image's latent quality q in [0, 1] sets both its vote histogram (centred on 2.5 + 5q)
and its brightness, so a head that learns from the images can recover the ranking.
The pixels are cut from a real photograph (tests/fixtures/photos), so the images are not flat colours.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import PHOTO

SCORES = np.arange(1, 11)


@dataclass
class SyntheticAva:
    ava_txt: Path
    images: Path
    ids: np.ndarray  # every id listed in AVA.txt
    counts: np.ndarray
    quality: np.ndarray
    missing: list[int]  # listed, no file
    corrupt: list[int]  # file present, not an image

    @property
    def means(self) -> np.ndarray:
        return self.counts @ SCORES / self.counts.sum(axis=1)


def vote_counts(means: np.ndarray, rng: np.random.Generator, votes: int = 200, spread: float = 1.3) -> np.ndarray:
    """Vote histograms over 1..10 around each mean (a discretised normal, sampled)."""
    probs = np.exp(-((SCORES[None, :] - means[:, None]) ** 2) / (2 * spread**2))
    probs /= probs.sum(axis=1, keepdims=True)
    return np.stack([rng.multinomial(votes, p) for p in probs])


def write_ava_txt(path: Path, ids, counts, rng: np.random.Generator) -> Path:
    lines = []
    for index, (image_id, row) in enumerate(zip(ids, counts), start=1):
        tags = rng.integers(0, 60, size=2)
        lines.append(f"{index} {image_id} {' '.join(str(int(c)) for c in row)} {tags[0]} {tags[1]} {rng.integers(1, 1500)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@functools.lru_cache(maxsize=1)
def _photo_small() -> np.ndarray:
    with Image.open(PHOTO) as photo:
        return np.asarray(photo.convert("RGB").resize((512, 320)))  # 2560x1600 at 1/5


def synthetic_photo(quality: float, rng: np.random.Generator, size=(96, 72)) -> Image.Image:
    """A crop of the real photo whose mean brightness is set by `quality` alone
    (the crop's own brightness, sky, water or shore, is normalised away first)."""
    source = _photo_small()
    width, height = size
    top = int(rng.integers(0, source.shape[0] - height))
    left = int(rng.integers(0, source.shape[1] - width))
    crop = source[top : top + height, left : left + width].astype(np.float32)
    crop *= (30 + 150 * quality) / max(float(crop.mean()), 1.0)
    return Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8))


def make_ava(root: Path, n: int = 40, seed: int = 0, missing: int = 0, corrupt: int = 0) -> SyntheticAva:
    """AVA.txt + images/<id>.jpg under `root`; the last ids may be missing or corrupt."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(np.arange(100_000, 999_999), size=n, replace=False))
    quality = rng.uniform(0, 1, size=n)
    counts = vote_counts(2.5 + 5 * quality, rng)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    missing_ids = [int(i) for i in ids[n - missing - corrupt : n - corrupt]] if missing else []
    corrupt_ids = [int(i) for i in ids[n - corrupt :]] if corrupt else []
    for image_id, q in zip(ids, quality):
        if int(image_id) in missing_ids:
            continue
        path = images / f"{image_id}.jpg"
        if int(image_id) in corrupt_ids:
            path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
            continue
        synthetic_photo(float(q), rng).save(path, quality=90)
    ava_txt = write_ava_txt(root / "AVA.txt", ids, counts, rng)
    return SyntheticAva(ava_txt, images, ids, counts, quality, missing_ids, corrupt_ids)


def planted_embeddings(n: int, dim: int, seed: int = 0, noise: float = 0.3):
    """Features whose mean score is a linear function of one direction, plus noise.

    Returns (pooled float16-representable float32 (n, dim), counts (n, 10), direction).
    """
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    pooled = rng.normal(size=(n, dim)) * 2.0
    signal = pooled @ direction
    quality = (signal - signal.min()) / (signal.max() - signal.min())
    counts = vote_counts(2.5 + 5 * quality + rng.normal(0, noise, n), rng)
    return pooled.astype(np.float16).astype(np.float32), counts, direction


# --- checks of the helpers themselves ------------------------------------------------------


def test_synthetic_ava_lines_have_the_ava_layout(tmp_path):
    data = make_ava(tmp_path, n=6, missing=1, corrupt=1)
    lines = data.ava_txt.read_text().splitlines()
    assert len(lines) == 6
    fields = lines[0].split()
    assert len(fields) == 15 and fields[0] == "1" and int(fields[1]) == data.ids[0]
    assert sum(int(c) for c in fields[2:12]) == 200
    assert sorted(p.name for p in data.images.iterdir()) == sorted(f"{i}.jpg" for i in data.ids if i not in data.missing)


def test_planted_means_follow_quality(tmp_path):
    from scipy.stats import spearmanr

    data = make_ava(tmp_path, n=30)
    assert spearmanr(data.quality, data.means).statistic > 0.95
