"""XMP sidecars (what digiKam, and darktable on import, read): the "xmp" target.

The sidecar editor itself is aes_index.xmp (only our fields change, every other byte
survives); this adapter says which sidecars a photo has, and journals and undoes writes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .. import xmp
from ..atomic import refuse_protected, sha256_hex
from ..journal import UndoAction, Write
from ..ratings import REJECTED
from .protocol import ChangedSinceRead, check_inside, Place, Reading, Target, UndoResult, Wanted, kept_manual, restored


@dataclass
class SidecarTarget(Target):
    roots: tuple[str, ...] = ()  # the library's folders: no sidecar outside them is written
    name: str = "xmp"

    def places(self, photo_path: str) -> list[Place]:
        return [Place(str(sidecar), photo_path) for sidecar in xmp.rating_sidecars(Path(photo_path))]

    def read(self, place: Place) -> Reading:
        check_inside(place.key, self.roots)
        info = xmp.read_sidecar(Path(place.key))
        return Reading(place, info.rating, token=info.content_hash, detail=info, ours=info.our_rating)

    def write(self, reading: Reading, wanted: Wanted, dry_run: bool) -> Write | None:
        info: xmp.SidecarInfo = reading.detail
        fields = xmp.AesFields(
            score=round(wanted.score, 6), percentile=round(wanted.percentile, 2), head_id=wanted.head_id, stars=wanted.stars
        )
        tags = [*other_tags(info.tags), star_tag(wanted.stars)] if wanted.tags else None
        try:
            outcome = xmp.write_sidecar(
                Path(reading.place.key), rating=wanted.stars, aes=fields, tags=tags, dry_run=dry_run, expect_hash=reading.token
            )
        except xmp.SidecarChanged as exc:
            raise ChangedSinceRead(str(exc)) from exc
        return journal_entry(reading.place.image_path, outcome) if outcome.changed else None

    def undo(self, action: UndoAction, dry_run: bool) -> UndoResult:
        path = action.target_path
        check_inside(str(path), self.roots)
        if action.created_file and action.hash_after is not None and _has_hash(path, action.hash_after):
            if not dry_run:
                refuse_protected(path)  # write-protected since: the user keeps it
                path.unlink()
            return UndoResult(action, "deleted", "removed the sidecar we had created")
        current = xmp.read_sidecar(path)
        if not current.exists:
            return UndoResult(action, "missing", "the sidecar is gone")
        manual = current.rating != action.expected
        xmp.write_sidecar(
            path,
            rating=xmp.KEEP if manual else action.restore,
            aes=_prior_aes(action.prior),
            tags=None if "tags" not in action.prior else tuple(action.prior["tags"]),
            tag_fields=tuple(action.prior.get("tag_fields", ())),
            dry_run=dry_run,
            expect_hash=current.content_hash,
            undeclare=tuple(action.prior.get("declared", ())),
        )
        return kept_manual(action, current.rating) if manual else restored(action)


def journal_entry(image_path: str, outcome: xmp.WriteOutcome) -> Write:
    """A sidecar write for the journal: the prior values only of what the write touched,
    so undo restores exactly those (and in the same tag fields)."""
    prior: dict = {}
    if "aes" in outcome.touched:
        prior["aes"] = None if outcome.prior.aes is None else dataclasses.asdict(outcome.prior.aes)
    if "tags" in outcome.touched:
        prior["tags"] = list(outcome.prior.tags)
        prior["tag_fields"] = list(outcome.tag_fields)
    if outcome.declared:
        prior["declared"] = list(outcome.declared)
    return Write(
        target="xmp", place=str(outcome.path), image_path=str(image_path), old=outcome.prior.rating,
        new=outcome.after.rating, created_file=outcome.created, content_hash_after=outcome.content_hash, prior=prior,
    )


def other_tags(tags) -> list[str]:
    """Our tags that are not star tags (attribute tags): a rating write keeps them."""
    return [t for t in tags if not (t.endswith(" stars") or t == "rejected")]


def star_tag(stars: int) -> str:
    return "rejected" if stars == REJECTED else f"{stars} stars"


def _prior_aes(prior: dict):
    if "aes" not in prior:
        return xmp.KEEP
    return None if prior["aes"] is None else xmp.AesFields(**prior["aes"])


def _has_hash(path: Path, expected: str) -> bool:
    """Whether the file still holds exactly the bytes we wrote (sidecar-sized files only)."""
    try:
        if path.stat().st_size > xmp.MAX_SIDECAR_BYTES:
            return False
        return sha256_hex(path.read_bytes()) == expected
    except FileNotFoundError:
        return False
