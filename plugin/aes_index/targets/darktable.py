"""darktable's library, through the Lua plugin: the "darktable" target.

darktable ignores a sidecar once it has imported the photo, so its ratings go in through
its Lua API, and the plugin (plugin/darktable/aesthetic.lua) applies what we answer. The
plugin's request is the read: it carries each image's current rating. The write is our
answer ("rating"); the plugin sets it only if the image still holds the rating it sent
(the same-read rule, kept on darktable's side), then reports back with `applied`, which
journals the write. One place per darktable image: "<path>#<duplicate index>".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..journal import UndoAction, Write
from ..ratings import REJECTED
from .protocol import Place, Reading, Target, UndoResult, Wanted, kept_manual

TAG_ROOT = "aesthetic"


@dataclass(frozen=True)
class DtImage:
    """One darktable image as the plugin describes it."""

    ref: int  # its position in the request, for the answer
    path: str
    duplicate: int  # darktable's duplicate index: duplicates share a file, not a rating
    rating: int  # darktable's current rating: -1 rejected, 0..5

    @property
    def key(self) -> str:
        """The journal's place: one per darktable image, duplicates apart."""
        return f"{self.path}#{self.duplicate}"


@dataclass
class DarktableTarget(Target):
    images: list[DtImage] = field(default_factory=list)
    name: str = "darktable"
    deferred: bool = True
    answers: dict[int, dict] = field(default_factory=dict)  # ref -> the plugin's answer for it
    restores: dict[int, int] = field(default_factory=dict)  # ref -> the rating to put back

    def __post_init__(self) -> None:
        self._by_ref = {image.ref: image for image in self.images}
        self._by_key = {image.key: image for image in self.images}

    def places(self, photo_path: str) -> list[Place]:
        return [Place(image.key, image.path, ref=image.ref) for image in self.images if image.path == photo_path]

    def read(self, place: Place) -> Reading:
        rating = self._by_ref[place.ref].rating
        return Reading(place, rating, token=rating)

    def note(self, place: Place, wanted: Wanted, reason: str, written: bool) -> None:
        answer = {"ref": place.ref, "stars": wanted.stars, "reason": reason}
        if math.isfinite(wanted.score):
            answer |= {"score": wanted.score, "percentile": round(wanted.percentile, 2)}
        if wanted.tags:
            answer["tags"] = our_tags(wanted.stars, wanted.percentile)
        self.answers[place.ref] = answer

    def write(self, reading: Reading, wanted: Wanted, dry_run: bool) -> Write | None:
        self.answers[reading.place.ref]["rating"] = wanted.stars
        return None  # journaled when the plugin reports what it set (`applied`)

    def undo(self, action: UndoAction, dry_run: bool) -> UndoResult:
        image = self._by_key[action.place]
        if image.rating != action.expected:
            return kept_manual(action, image.rating)
        self.restores[image.ref] = action.restore or 0
        return UndoResult(action, "pending", "the plugin puts it back, then reports")

    def answer_list(self) -> list[dict]:
        return [self.answers[image.ref] for image in self.images if image.ref in self.answers]


def applied_write(image: DtImage, old: int) -> Write:
    """What the plugin reports it set, for the journal."""
    return Write(target="darktable", place=image.key, image_path=image.path, old=old, new=image.rating)


def our_tags(stars: int, percentile: float) -> list[str]:
    """darktable tags for a photo: its stars and its score bucket, e.g. "aesthetic|score|70-80%"."""
    tags = []
    if stars == REJECTED:
        tags.append(f"{TAG_ROOT}|stars|rejected")
    elif stars > 0:
        tags.append(f"{TAG_ROOT}|stars|{stars}")
    if math.isfinite(percentile):
        low = min(int(percentile // 10) * 10, 90)
        tags.append(f"{TAG_ROOT}|score|{low}-{low + 10}%")
    return tags
