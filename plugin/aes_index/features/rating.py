"""Rate: scores -> stars by policy, then into a target through the one apply loop.

For each scored photo the policy gives the wanted stars (percentiles over the library's
own score distribution); targets/apply.py writes them into every place the target holds
the photo (its sidecars, or its EXIF) under the manual-ratings-win rule, and journals
every write, so `aes-index ratings undo` can put it back.

The same function serves `apply-ratings` and the watcher (after each batch it scores).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..index.store import journal
from ..formats import xmp
from ..errors import AesIndexError, ConfigError
from .stars import RatingPolicy, check_scale, percentile_ranks, stars_for
from ..values import REJECTED
from ..model.head_choice import scored_head_id
from ..model.heads import scale_in_index
from ..index.store import Index
from ..writing import apply as targets
from ..writing.apply import ApplyReport  # noqa: F401 - the report apply_ratings returns
from ..targets.exif import ExifTarget
from ..targets.protocol import Target, UndoResult
from ..targets.sidecar import SidecarTarget, journal_entry

TARGETS = ("xmp", "exif")
RAW_SAFE_TARGETS = ("xmp",)  # never rewrite a RAW original


@dataclass(frozen=True)
class RatingOptions:
    policy: RatingPolicy = RatingPolicy()
    target: str = "xmp"
    tags: bool = True  # also write "Aesthetic|N stars" tags
    overwrite_manual: bool = False
    treat_as_unrated: tuple[int, ...] = ()  # e.g. (1,): darktable's import default rating
    dry_run: bool = False


@dataclass
class PhotoRating:
    image_id: int
    path: str
    score: float
    stars: int
    percentile: float


def plan(index: Index, head_id: str, policy: RatingPolicy, image_ids: Iterable[int] | None = None) -> list[PhotoRating]:
    """Stars and percentiles for the scored photos (all, or those in image_ids).

    Every rating route (apply-ratings, the watcher, digiKam, darktable) plans here, so a
    threshold policy is checked against the rated head's scale here, once."""
    scale = scale_in_index(index, head_id)
    check_scale(policy, head_id, scale.text, scale.low, scale.high)
    rows = index.scores.ranked(head_id)
    if not rows:
        return []
    scores = np.array([r["score"] for r in rows], dtype=np.float64)
    stars = stars_for(scores, policy)
    percentiles = percentile_ranks(scores)
    wanted = None if image_ids is None else set(image_ids)
    return [
        PhotoRating(r["image_id"], r["path"], r["score"], int(s), float(p))
        for r, s, p in zip(rows, stars, percentiles)
        if wanted is None or r["image_id"] in wanted
    ]


def file_target(index: Index, name: str) -> Target:
    """The file target `apply-ratings --target` names."""
    roots = tuple(index.roots())
    if name == "xmp":
        return SidecarTarget(roots=roots)
    if name == "exif":
        return ExifTarget(index=index, roots=roots)
    raise ConfigError(f"unknown rating target {name!r}; use one of {', '.join(TARGETS)}")


def apply_ratings(
    index: Index, options: RatingOptions, head_id: str | None = None, image_ids: Iterable[int] | None = None
) -> ApplyReport:
    """Write the policy's stars into each photo's target; return what changed and why not."""
    target = file_target(index, options.target)
    head_id = head_id or scored_head_id(index)
    return targets.apply(index, target, plan(index, head_id, options.policy, image_ids), options, head_id, "apply-ratings")


def stars_summary(counter: Counter) -> str:
    names = {REJECTED: "rejected", 0: "unrated"}
    return ", ".join(f"{n} × {names.get(k, f'{k}★')}" for k, n in sorted(counter.items(), reverse=True)) or "none"


def apply_attribute_tags(index: Index, tags_by_image: dict[int, list[str]], attribute_tags: set[str], dry_run: bool = False) -> dict:
    """Set each photo's attribute tags ("Aesthetic|sharp", ...) in its sidecars.

    Only our attribute tags change: our star tags and everyone else's tags stay. A photo
    without a sidecar gets one only if it has a tag to carry. Under the same rules as
    ratings: the sidecar target's read (inside the library only) and same-read write,
    the ratings turn, the journal.
    """
    target = SidecarTarget(roots=tuple(index.roots()))
    counts = {"photos": 0, "written": 0, "errors": []}
    summary = lambda: {k: v for k, v in counts.items() if k != "errors"}  # noqa: E731
    with targets.recorded_run(index, "attribute-tags", {"tags": sorted(attribute_tags)}, dry_run, summary) as run_id:
        for image_id in sorted(set(tags_by_image) | index.scores.ids_like("attribute-%")):
            counts["photos"] += 1
            for place in target.places(index.images.get(image_id)["path"]):
                _tag_place(index, target, place, tags_by_image.get(image_id, []), attribute_tags, run_id, dry_run, counts)
    counts["run_id"] = run_id
    return counts


def _tag_place(index, target, place, tags: list[str], attribute_tags: set[str], run_id, dry_run: bool, counts: dict) -> None:
    try:
        reading = target.read(place)
        info = reading.detail
        wanted = [t for t in info.tags if t not in attribute_tags] + sorted(tags)
        if set(wanted) == set(info.tags) or (not info.exists and not tags):
            return

        def write(dry: bool) -> list:
            outcome = xmp.write_sidecar(Path(place.key), tags=wanted, dry_run=dry, expect_hash=reading.token)
            return [journal_entry(place.image_path, outcome)] if outcome.changed else []

        with targets.no_interrupt_between_write_and_journal():
            planned = write(True)
            if planned and not dry_run:
                targets.write_ahead(index, run_id, targets.Change(planned, perform=lambda: write(False)))
        counts["written"] += 1
    except AesIndexError as exc:
        counts["errors"].append({"path": place.key, "error": str(exc)})


def undo(index: Index, run_id: int | None = None, dry_run: bool = False) -> list[UndoResult]:
    """Put back every rating a run wrote into files (default: the latest run with writes left)."""
    files = {name: file_target(index, name) for name in journal.FILE_TARGETS}
    return targets.undo(index, files, index.journal.plan_undo(run_id, journal.FILE_TARGETS), dry_run)
