"""The AVA dataset (Murray et al. 2012): AVA.txt, train/test splits, image files.

AVA.txt has one line per image:

    index  image_id  c1 c2 ... c10  tag1  tag2  challenge_id

where c_k is the number of votes for score k. The mean score is sum(k * c_k) / sum(c_k);
the binary label is "mean > 5"; the target distribution of an EMD head is c / sum(c).

Splits are either given as id-list files (the official `aesthetics_image_lists/*.jpgl`
style: one id per line, "953619" or "953619.jpg") or drawn by a seeded hash of each id.
A hash split (not a shuffled permutation) gives every image the same side whatever else
is in the dataset, so adding or losing images never reshuffles the others.
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import DatasetError

SCORES = np.arange(1, 11, dtype=np.float64)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
DEFAULT_TEST_FRACTION = 0.1
DEFAULT_VAL_FRACTION = 0.1  # the paper's early-stopping subset: 10% of the training split


@dataclass
class AvaTable:
    """The rows of AVA.txt that have at least one vote, in file order."""

    image_ids: np.ndarray  # (N,) int64
    counts: np.ndarray  # (N, 10) int64: votes for scores 1..10
    tags: np.ndarray  # (N, 2) int64: semantic tags (0 = none)
    challenges: np.ndarray  # (N,) int64
    source: dict = field(default_factory=dict)  # path, sha256, rows, skipped rows

    def __len__(self) -> int:
        return len(self.image_ids)

    def mean_scores(self) -> np.ndarray:
        return mean_scores(self.counts)

    def histograms(self) -> np.ndarray:
        return histograms(self.counts)


def mean_scores(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    return counts @ SCORES / counts.sum(axis=1)


def histograms(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    return counts / counts.sum(axis=1, keepdims=True)


def read_ava(path: str | os.PathLike) -> AvaTable:
    """Parse AVA.txt. Rows without votes and repeated ids are skipped (and counted)."""
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read AVA file {path}: {exc.strerror or exc}") from exc
    rows, no_votes, repeated = [], 0, 0
    seen: set[int] = set()
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        values = _parse_line(line, number, path)
        if values[1] in seen:
            repeated += 1
            continue
        seen.add(values[1])
        if sum(values[2:12]) == 0:
            no_votes += 1
            continue
        rows.append(values)
    if not rows:
        raise DatasetError(f"{path} holds no AVA rows with votes")
    table = np.asarray(rows, dtype=np.int64)
    source = {
        "path": str(path), "name": path.name, "sha256": hashlib.sha256(raw).hexdigest(),
        "rows": len(rows), "skipped_no_votes": no_votes, "skipped_repeated": repeated,
    }
    return AvaTable(table[:, 1], table[:, 2:12], table[:, 12:14], table[:, 14], source)


def _parse_line(line: str, number: int, path: Path) -> list[int]:
    parts = line.split()
    if len(parts) != 15:
        raise DatasetError(f"{path.name} line {number}: expected 15 numbers (index, id, 10 vote counts, 2 tags, challenge), got {len(parts)}")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise DatasetError(f"{path.name} line {number}: not all fields are whole numbers") from None
    if min(values[2:12]) < 0:
        raise DatasetError(f"{path.name} line {number}: negative vote count")
    return values


# --- splits ------------------------------------------------------------------------------


@dataclass
class Split:
    """Boolean masks over a list of ids. train and val are disjoint; val is for early stopping."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    description: dict

    @property
    def training(self) -> np.ndarray:
        """The whole training split (train + early-stopping subset): what selection may see."""
        return self.train | self.val


def read_id_list(path: str | os.PathLike) -> set[int]:
    """Ids from a split file: one per line, as "953619", "953619.jpg" or a path to it."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read split file {path}: {exc.strerror or exc}") from exc
    ids = set()
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = re.fullmatch(r"(\d+)(\.\w+)?", Path(text).name)
        if not match:
            raise DatasetError(f"{path.name} line {number}: expected an image id, got {text[:40]!r}")
        ids.add(int(match.group(1)))
    return ids


def unit_hash(ids: np.ndarray, seed: int, salt: str) -> np.ndarray:
    """A uniform number in [0, 1) per id, fixed by (id, seed, salt): splitmix64."""
    offset = np.uint64(zlib.crc32(f"{salt}:{seed}".encode()) * 0x9E3779B1 & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        x = np.asarray(ids, dtype=np.int64).astype(np.uint64) ^ offset
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def make_split(
    ids: np.ndarray,
    test_list: str | None = None,
    train_list: str | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
) -> Split:
    """Test split from a list file or a seeded hash; train is the rest (or the train list)."""
    ids = np.asarray(ids, dtype=np.int64)
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if test_list:
        test = np.isin(ids, list(read_id_list(test_list)))
        description = {"method": "files", "test_list": Path(test_list).name, "test_list_sha256": _file_sha(test_list)}
    else:
        if not 0.0 < test_fraction < 1.0:
            raise DatasetError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
        test = unit_hash(ids, seed, "test") < test_fraction
        description = {"method": "seeded-hash", "test_fraction": test_fraction}
    if train_list:
        training = np.isin(ids, list(read_id_list(train_list))) & ~test
        description.update(train_list=Path(train_list).name, train_list_sha256=_file_sha(train_list))
    else:
        training = ~test
    val = training & (unit_hash(ids, seed, "val") < val_fraction)
    train = training & ~val
    description.update(seed=seed, val_fraction=val_fraction, train=int(train.sum()), val=int(val.sum()), test=int(test.sum()))
    if not train.any() or not val.any() or not test.any():
        raise DatasetError(
            f"split leaves train={int(train.sum())}, early-stopping={int(val.sum())}, test={int(test.sum())} images; "
            "every part needs at least one (more data, or other fractions)"
        )
    return Split(train, val, test, description)


def _file_sha(path: str) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()


# --- image files -------------------------------------------------------------------------


@dataclass
class ImageFiles:
    paths: dict[int, str]  # image id -> file
    missing: list[int]  # ids in AVA.txt with no file under the folder


def find_images(folder: str | os.PathLike, wanted: Iterable[int]) -> ImageFiles:
    """Map AVA ids to files named <id>.jpg (any depth, any usual suffix) under `folder`.

    AVA archives unpack in several layouts (images/, images/images/, split in parts), so
    the folder is walked once instead of guessing where the files sit.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"image folder not found: {folder}")
    wanted = set(int(i) for i in wanted)
    found: dict[int, str] = {}
    for directory, subdirs, files in os.walk(folder):
        subdirs.sort()
        for name in sorted(files):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in IMAGE_SUFFIXES and stem.isdigit():
                image_id = int(stem)
                if image_id in wanted and image_id not in found:
                    found[image_id] = os.path.join(directory, name)
    return ImageFiles(found, sorted(wanted - set(found)))
