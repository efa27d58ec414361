"""Rate and write: scores -> stars by policy -> XMP sidecars or EXIF, under the manual-wins rule.

For each scored photo: the policy gives the wanted stars (percentiles over the library's
own score distribution); each target (the photo's sidecars, or its EXIF) is read, and
ratings.decide() says whether we may write: only where there is no rating yet, or where
the rating is still exactly the one we wrote last (journal.last_written). Every write is
journaled with its prior value, so `aes-index ratings undo` can put it back.

The same function serves `apply-ratings` and the watcher (after each batch it scores).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import exif_rating, journal, xmp
from .errors import AesIndexError, ConfigError
from .ratings import REJECTED, RatingPolicy, decide, percentile_ranks, stars_for
from .store import Index

TARGETS = ("xmp", "exif")
RAW_SAFE_TARGETS = ("xmp",)  # never rewrite a RAW original


@dataclass
class ApplyReport:
    run_id: int | None
    dry_run: bool
    head: str
    policy: dict
    target: str
    photos: int = 0
    stars: Counter = field(default_factory=Counter)  # wanted stars per level, every photo
    written: Counter = field(default_factory=Counter)  # stars written (or that would be)
    unchanged: int = 0
    skipped_manual: int = 0
    skipped_not_jpeg: int = 0
    errors: list[dict] = field(default_factory=list)
    manual: list[dict] = field(default_factory=list)  # which ratings a person set, kept

    def as_dict(self) -> dict:
        data = dict(self.__dict__)
        data["stars"] = {str(k): v for k, v in sorted(self.stars.items())}
        data["written"] = {str(k): v for k, v in sorted(self.written.items())}
        data["written_total"] = sum(self.written.values())
        return data


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
    """Stars and percentiles for the scored photos (all, or those in image_ids)."""
    rows = index.scores(head_id)
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


def apply_ratings(
    index: Index, options: RatingOptions, head_id: str | None = None, image_ids: Iterable[int] | None = None
) -> ApplyReport:
    """Write the policy's stars into each photo's target; return what changed and why not."""
    if options.target not in TARGETS:
        raise ConfigError(f"unknown rating target {options.target!r}; use one of {', '.join(TARGETS)}")
    head_id = head_id or index.active_head_id()
    if head_id is None:
        raise ConfigError("nothing scored yet: run `aes-index rebuild` first")
    run_id = None if options.dry_run else index.start_run("apply-ratings", index.roots(), _options_record(options))
    report = ApplyReport(run_id, options.dry_run, head_id, _options_record(options)["policy"], options.target)
    for photo in plan(index, head_id, options.policy, image_ids):
        report.photos += 1
        report.stars[photo.stars] += 1
        if options.target == "xmp":
            for sidecar in xmp.rating_sidecars(Path(photo.path)):
                _rate_sidecar(index, photo, sidecar, options, head_id, report)
        else:
            _rate_exif(index, photo, options, report)
    if run_id is not None:
        index.finish_run(run_id, "done", report.as_dict(), head_id)
    return report


def _rate_sidecar(index: Index, photo: PhotoRating, sidecar: Path, options: RatingOptions, head_id: str, report: ApplyReport) -> None:
    try:
        info = xmp.read_sidecar(sidecar)
        current = info.rating
        decision = _decide(index, "xmp", sidecar, current, photo.stars, options)
        if not decision.write:
            _count_skip(report, photo, sidecar, current, decision)
            return
        fields = xmp.AesFields(score=round(photo.score, 6), percentile=round(photo.percentile, 2), head_id=head_id, stars=photo.stars)
        tags = [*_other_tags(info.tags), _tag_for(photo.stars)] if options.tags else None
        outcome = xmp.write_sidecar(sidecar, rating=photo.stars, aes=fields, tags=tags, dry_run=options.dry_run)
        if outcome.changed and not options.dry_run:
            journal.record_xmp(index.db, report.run_id, photo.path, outcome)
        report.written[photo.stars] += 1
    except AesIndexError as exc:
        report.errors.append({"path": str(sidecar), "error": str(exc)})


def _rate_exif(index: Index, photo: PhotoRating, options: RatingOptions, report: ApplyReport) -> None:
    path = Path(photo.path)
    if path.suffix.lower() not in (".jpg", ".jpeg", ".jpe") or photo.stars == REJECTED:
        report.skipped_not_jpeg += 1  # EXIF ratings only in JPEG originals, and have no reject
        return
    try:
        current = exif_rating.read_exif_rating(path)
        decision = _decide(index, "exif", path, current, photo.stars, options)
        if not decision.write:
            _count_skip(report, photo, path, current, decision)
            return
        outcome = exif_rating.write_exif_rating(path, photo.stars, dry_run=options.dry_run)
        if outcome.changed and not options.dry_run:
            journal.record_exif(index.db, report.run_id, outcome)
            _remember_own_write(index, photo.image_id, path)
        report.written[photo.stars] += 1
    except AesIndexError as exc:
        report.errors.append({"path": str(path), "error": str(exc)})


def _decide(index: Index, target: str, target_path: Path, current: int | None, wanted: int, options: RatingOptions):
    if current in options.treat_as_unrated:
        current = None  # e.g. darktable rates every import 1 star: not a person's judgement
    return decide(current, journal.last_written(index.db, target, target_path), wanted, options.overwrite_manual)


def _count_skip(report: ApplyReport, photo: PhotoRating, target: Path, current, decision) -> None:
    if decision.action.value == "skip-manual":
        report.skipped_manual += 1
        report.manual.append({"path": str(target), "rating": current, "wanted": photo.stars, "reason": decision.reason})
    else:
        report.unchanged += 1


def _remember_own_write(index: Index, image_id: int, path: Path) -> None:
    """Our EXIF write changed the file's size and mtime: record them, so the next scan
    doesn't take our own write for a change (its fingerprint, the pixel tail, is the same)."""
    info = os.stat(path)
    index.update_image(image_id, size=info.st_size, mtime_ns=info.st_mtime_ns)


def _other_tags(tags: Sequence[str]) -> list[str]:
    """Our tags that are not star tags (attribute tags): a rating write keeps them."""
    return [t for t in tags if not (t.endswith(" stars") or t == "rejected")]


def _tag_for(stars: int) -> str:
    return "rejected" if stars == REJECTED else f"{stars} stars"


def _options_record(options: RatingOptions) -> dict:
    return {
        "policy": {"kind": options.policy.kind, "cuts": list(options.policy.cuts), "reject_below": options.policy.reject_below},
        "target": options.target, "tags": options.tags, "overwrite_manual": options.overwrite_manual,
        "treat_as_unrated": list(options.treat_as_unrated),
    }


def apply_attribute_tags(index: Index, tags_by_image: dict[int, list[str]], attribute_tags: set[str], dry_run: bool = False) -> dict:
    """Set each photo's attribute tags ("Aesthetic|sharp", ...) in its sidecars.

    Only our attribute tags change: our star tags and everyone else's tags stay. A photo
    without a sidecar gets one only if it has a tag to carry. Journaled like ratings.
    """
    run_id = None if dry_run else index.start_run("attribute-tags", index.roots(), {"tags": sorted(attribute_tags)})
    counts = {"photos": 0, "written": 0, "errors": []}
    ids = sorted(set(tags_by_image) | _ids_with_attribute_scores(index))
    for image_id in ids:
        path = Path(index.image(image_id)["path"])
        counts["photos"] += 1
        for sidecar in xmp.rating_sidecars(path):
            try:
                info = xmp.read_sidecar(sidecar)
                wanted = [t for t in info.tags if t not in attribute_tags] + sorted(tags_by_image.get(image_id, []))
                if set(wanted) == set(info.tags) or (not info.exists and not tags_by_image.get(image_id)):
                    continue
                outcome = xmp.write_sidecar(sidecar, tags=wanted, dry_run=dry_run)
                if outcome.changed and not dry_run:
                    journal.record_xmp(index.db, run_id, str(path), outcome)
                counts["written"] += 1
            except AesIndexError as exc:
                counts["errors"].append({"path": str(sidecar), "error": str(exc)})
    if run_id is not None:
        index.finish_run(run_id, "done", {k: v for k, v in counts.items() if k != "errors"})
    counts["run_id"] = run_id
    return counts


def _ids_with_attribute_scores(index: Index) -> set[int]:
    rows = index.db.execute("SELECT DISTINCT image_id FROM scores WHERE head_id LIKE 'attribute-%'")
    return {row[0] for row in rows}


def undo(index: Index, run_id: int | None = None, dry_run: bool = False) -> list:
    """Put back every rating a run wrote (default: the latest run with writes left)."""
    actions = journal.plan_undo(index.db, run_id, targets=journal.FILE_TARGETS)
    return journal.execute_undo(index.db, actions, dry_run=dry_run)


def stars_summary(counter: Counter) -> str:
    names = {REJECTED: "rejected", 0: "unrated"}
    return ", ".join(f"{n} × {names.get(k, f'{k}★')}" for k, n in sorted(counter.items(), reverse=True)) or "none"
