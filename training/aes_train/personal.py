"""`aes-train personal`: a head learned from the user's own star ratings.

The labels are the stars a person gave photos the index already holds: the xmp:Rating
of their sidecars, else the EXIF Rating of JPEGs. Whose a rating is, ownership.py says:
ratings aes-index wrote itself (its undo journal, or the sidecar's own aes:Stars, knows
them) are not labels, nor are those that count as none (--treat-as-unrated).

Sources are functions (index, photos) -> iterable of UserRating, tried in order, first
one wins per photo. Ratings kept in darktable's library.db or digiKam's digikam4.db
plug in as further sources with the same signature (RATING_SOURCES).

The head is a linear map of the cached pooled features to stars (ridge regression:
with hundreds, not hundreds of thousands, of labels the closed form with a cross-
validated penalty beats SGD). Its SRCC is measured on held-out photos; the head that
is saved is then refit on every rated photo with the same penalty.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from aes_index import ownership
from aes_index.errors import AesIndexError
from aes_index.formats.exif_rating import JPEG_SUFFIXES
from aes_index.model.heads import Head

from .ava import unit_hash
from .errors import NotEnoughData
from .fit import RIDGE_ALPHAS, ridge_path, standardiser
from .metrics import pearson, spearman

REJECTED = -1


@dataclass(frozen=True)
class UserRating:
    image_id: int
    rating: int  # -1 (rejected) .. 5
    source: str  # "xmp", "exif"; later "darktable", "digikam"


RatingSource = Callable[..., Iterable[UserRating]]  # (index, photos, unrated) -> ratings


def sidecar_ratings(index, photos: list[tuple[int, str]], unrated: tuple[int, ...] = ()) -> Iterator[UserRating]:
    """xmp:Rating of each photo's own sidecar, where it is a person's (ownership.py)."""
    from aes_index.targets.sidecar import SidecarTarget

    return _persons_ratings(index, photos, SidecarTarget(roots=tuple(index.roots())), unrated)


def exif_ratings(index, photos: list[tuple[int, str]], unrated: tuple[int, ...] = ()) -> Iterator[UserRating]:
    """EXIF Rating of JPEG photos (digiKam and Windows write it), where it is a person's."""
    from aes_index.targets.exif import ExifTarget

    jpegs = [(image_id, path) for image_id, path in photos if Path(path).suffix.lower() in JPEG_SUFFIXES]
    return _persons_ratings(index, jpegs, ExifTarget(roots=tuple(index.roots())), unrated)


def _persons_ratings(index, photos: list[tuple[int, str]], target, unrated: tuple[int, ...]) -> Iterator[UserRating]:
    """The rating at each photo's own place in `target`, when it is a person's: not one we
    wrote (the journal, or the place's own marker aes:Stars), not one that counts as none.
    Learning from our own stars would only teach the head to agree with the head that
    wrote them; a rating a person changed after we wrote one is theirs again."""
    for image_id, path in photos:
        place = target.places(path)[0]  # version 0's sidecar, or the JPEG itself
        try:
            reading = target.read(place)
        except (AesIndexError, OSError):  # a file we refuse to parse is no label
            continue
        rating = ownership.read_state(index.journal, target.name, reading, unrated).persons("rating")
        if rating is not None:
            yield UserRating(image_id, int(rating), target.name)


# darktable's and digiKam's own databases come next, as functions of the same shape.
RATING_SOURCES: dict[str, RatingSource] = {"xmp": sidecar_ratings, "exif": exif_ratings}


def indexed_photos(index, backbone_id: int) -> list[tuple[int, str]]:
    """(image id, path) of present photos that have an embedding from this backbone."""
    return index.embeddings.present_with(backbone_id)


def collect_ratings(
    index, photos, sources: Iterable[RatingSource] = RATING_SOURCES.values(), unrated: tuple[int, ...] = ()
) -> dict[int, UserRating]:
    """One rating per photo; the first source that has one wins (digiKam's order:
    sidecar before EXIF). `unrated`: ratings that count as none (darktable's import 1)."""
    ratings: dict[int, UserRating] = {}
    for source in sources:
        for rating in source(index, [p for p in photos if p[0] not in ratings], unrated):
            ratings.setdefault(rating.image_id, rating)
    return ratings


# --- training ----------------------------------------------------------------------------


@dataclass
class PersonalConfig:
    test_fraction: float = 0.2  # held-out photos for the reported SRCC
    seed: int = 0
    min_ratings: int = 20
    include_rejects: bool = True  # a rejected photo counts as 0 stars (worse than 1)
    treat_as_unrated: tuple[int, ...] = ()  # e.g. (1,): darktable gives every import 1 star
    folds: int = 5  # cross-validation folds that choose the ridge penalty
    ridge_alphas: tuple[float, ...] = RIDGE_ALPHAS

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class PersonalResult:
    tensors: dict[str, np.ndarray]
    metrics: dict
    split: dict
    alpha: float
    labels: dict = field(default_factory=dict)


def targets(ratings: list[UserRating], config: "PersonalConfig") -> tuple[list[UserRating], np.ndarray]:
    """The ratings that are labels, and their star values (a reject is 0 stars)."""
    kept = [r for r in ratings if r.rating > 0 or (config.include_rejects and r.rating == REJECTED)]
    return kept, np.array([max(r.rating, 0) for r in kept], dtype=np.float64)


def train_personal(ids: np.ndarray, pooled: np.ndarray, stars: np.ndarray, config: PersonalConfig) -> PersonalResult:
    """Ridge on standardised pooled features; SRCC on held-out photos; refit on all."""
    if len(ids) < config.min_ratings or len(np.unique(stars)) < 2:
        raise NotEnoughData(
            f"{len(ids)} rated photos with {len(np.unique(stars))} different ratings; a personal head needs at "
            f"least {config.min_ratings} and two or more different star values (rate more photos in darktable or digiKam)"
        )
    test = held_out(ids, config)
    if (~test).sum() < 10:
        raise NotEnoughData(f"too few rated photos to hold {config.test_fraction:.0%} out for measuring; rate more photos")

    alpha = choose_alpha(pooled[~test], stars[~test], config)
    predicted = ridge_predict(pooled[~test], stars[~test], pooled[test], alpha)
    metrics = {
        "split": "held-out", "n": int(test.sum()),
        "srcc": _none_if_nan(spearman(predicted, stars[test])), "plcc": _none_if_nan(pearson(predicted, stars[test])),
    }
    # The head that ships learns from every rating; the metric above is its honest estimate.
    mean, scale = standardiser(pooled)
    weight, bias = ridge_path((pooled - mean) * scale, stars, [alpha])[alpha]
    tensors = {"weight": weight.astype(np.float32), "bias": np.array([bias], np.float32), "input_mean": mean, "input_scale": scale}
    split = {"method": "seeded-hash, lowest hashes", "seed": config.seed, "test_fraction": config.test_fraction,
             "train": int((~test).sum()), "test": int(test.sum()), "final_fit": "all rated photos"}
    return PersonalResult(tensors, metrics, split, alpha)


def held_out(ids: np.ndarray, config: PersonalConfig) -> np.ndarray:
    """The photos with the lowest seeded hashes, test_fraction of them (at least 5).

    An exact count, not a hash threshold: with a few dozen ratings a threshold could
    leave two photos to measure on. The same ratings always give the same split.
    """
    count = max(5, int(round(config.test_fraction * len(ids))))
    test = np.zeros(len(ids), dtype=bool)
    test[np.argsort(unit_hash(ids, config.seed, "personal-test"), kind="stable")[:count]] = True
    return test


def ridge_predict(x_train, y_train, x_test, alpha: float) -> np.ndarray:
    mean, scale = standardiser(x_train)
    weight, bias = ridge_path((x_train - mean) * scale, y_train, [alpha])[alpha]
    return ((x_test - mean) * scale) @ weight + bias


def choose_alpha(x: np.ndarray, y: np.ndarray, config: PersonalConfig) -> float:
    """The ridge penalty with the best cross-validated SRCC (ranking is what stars need)."""
    fold = np.arange(len(x)) % config.folds
    np.random.default_rng(config.seed).shuffle(fold)
    scores = {}
    for alpha in config.ridge_alphas:
        predicted = np.empty(len(x))
        for k in range(config.folds):
            held = fold == k
            predicted[held] = ridge_predict(x[~held], y[~held], x[held], alpha)
        scores[alpha] = np.nan_to_num(spearman(predicted, y), nan=-1.0)
    return max(scores, key=scores.get)


def _none_if_nan(value: float):
    return None if np.isnan(value) else value


def personal_head(result: PersonalResult, backbone_key: str, input_dim: int, ratings: list[UserRating], config: PersonalConfig, metadata: dict) -> Head:
    by_source: dict[str, int] = {}
    by_stars: dict[str, int] = {}
    for r in ratings:
        by_source[r.source] = by_source.get(r.source, 0) + 1
        by_stars[str(r.rating)] = by_stars.get(str(r.rating), 0) + 1
    meta = {
        "name": "personal",
        "kind": "linear",
        "backbone": backbone_key,
        "input_space": "pooled",
        "input_dim": int(input_dim),
        "score_scale": "predicted stars (0 = rejected, 1-5)",
        "config": {**config.as_dict(), "alpha": result.alpha},
        "data": {"dataset": "your own star ratings", "photos": len(ratings), "by_source": by_source, "by_rating": by_stars},
        "split": result.split,
        "metrics": result.metrics,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **metadata,
    }
    return Head(meta, result.tensors)


def default_output(backbone_key: str) -> Path:
    import re

    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "aes-index" / "heads"
    return base / f"personal-{re.sub(r'[^A-Za-z0-9._-]+', '_', backbone_key)}.safetensors"
