"""darktable's library, through the Lua plugin: the "darktable" target.

darktable ignores a sidecar once it has imported the photo, so its ratings go in through
its Lua API, and the plugin (plugin/darktable/aesthetic.lua) applies what we answer. The
plugin's request is the read: it carries each image's current rating. The write is our
answer ("rating"); the plugin sets it only if the image still holds the rating it sent
(the same-read rule, kept on darktable's side), then reports back with `applied`, which
journals the write. One place per darktable image: "<path>#<duplicate index>".

Culling writes more fields to the same places (journal `field`): "group" (darktable's
group id, i.e. its leader's image id: old = the image's own id when it stood alone,
new = the keeper's), "tag" (one of CULL_TAGS: old/new 0 = not attached, 1 = attached,
the tag's name in `prior`), and "rating" for a reject (-1), only with the reject option.
features/darktable_plan.py decides them (`plan_cull`) and puts them back (`plan_uncull`);
both only say what the plugin should do, and the plugin reports what it did (`applied`),
as for ratings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


from .. import ownership
from ..values import FLAGS, REJECTED
from .protocol import RATING, CullState, Place, Reading, Target, UndoAction, UndoResult, Wanted, Write, kept_manual

TAG_ROOT = "aesthetic"  # every tag we attach lives below it (the plugin's TAG_PREFIX)
GROUP, TAG = "group", "tag"  # the journal fields culling writes besides "rating"
KEEPER_TAG = f"{TAG_ROOT}|keeper"
FLAG_TAGS = {flag: f"{TAG_ROOT}|{flag}" for flag in FLAGS}  # aesthetic|blurry, ...
CULL_TAGS = (KEEPER_TAG, *FLAG_TAGS.values())


@dataclass(frozen=True)
class DtImage:
    """One darktable image as the plugin describes it."""

    ref: int  # its position in the request, for the answer
    path: str
    duplicate: int  # darktable's duplicate index: duplicates share a file, not a rating
    rating: int  # darktable's current rating: -1 rejected, 0..5
    # culling's requests also say (image.id, image.group_leader.id, #image:get_group_members(),
    # and which of CULL_TAGS are attached)
    id: int | None = None
    group: int | None = None
    group_size: int = 1
    tags: tuple[str, ...] = ()

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
    undoing: dict[int, dict] = field(default_factory=dict)  # ref -> what the plugin should put back

    def __post_init__(self) -> None:
        self._by_ref = {image.ref: image for image in self.images}
        self._by_key = {image.key: image for image in self.images}

    def places(self, photo_path: str) -> list[Place]:
        return [Place(image.key, image.path, ref=image.ref) for image in self.images if image.path == photo_path]

    def read(self, place: Place) -> Reading:
        image = self._by_ref[place.ref]
        # A group: darktable's group id (its leader's image id), when it holds more than the image
        cull = CullState(leader=image.group if image.group_size > 1 else None)
        return Reading(place, image.rating, token=image.rating, cull=cull)

    def place_of(self, image: DtImage) -> Place:
        return Place(image.key, image.path, ref=image.ref)

    def note(self, place: Place, wanted: Wanted, reason: str, written: bool) -> None:
        answer = {"ref": place.ref, "stars": wanted.stars, "reason": reason}
        if math.isfinite(wanted.score):
            answer |= {"score": wanted.score, "percentile": round(wanted.percentile, 2)}
        if wanted.tags:
            answer["tags"] = our_tags(wanted.stars, wanted.percentile)
        self.answers[place.ref] = answer

    def write(self, reading: Reading, wanted: Wanted, dry_run: bool) -> Write | None:
        """Our answer: the plugin sets it. Journaled ahead, pending until the plugin
        reports it set it (`applied`), or a later request shows it did (`landed`)."""
        self.answers[reading.place.ref]["rating"] = wanted.stars
        image = self._by_ref[reading.place.ref]
        return applied_write(image, image.rating, new=wanted.stars)

    def landed(self, action: UndoAction) -> bool | None:
        """What a request says of an image the journal holds a pending write for: landed
        where it holds the value written. The plugin sets a value only where the image
        still holds what our request carried, so any other value is not ours: the one
        before (never set), or a person's (set over it, or instead of it). None for an
        image the request does not carry."""
        image = self._by_key.get(action.place)
        if image is None:
            return None
        if action.field == TAG:
            now = int(action.prior.get("tag") in image.tags)
        else:
            now = image.group if action.field == GROUP else image.rating
        return now == action.new

    def undo(self, action: UndoAction, dry_run: bool) -> UndoResult:
        """What the plugin should put back for one of our writes (the answer: `undo_list`):
        a group it still holds as we made it is left, a tag still as we left it detached (or
        attached again), a rating still ours restored. A value a person changed since stays;
        a leader, alone once its members leave, and a tag already as it was need nothing."""
        image = self._by_key[action.place]
        if action.field == GROUP:
            if not ownership.still_ours(image.group, action.expected):
                return UndoResult(action, "kept-manual", f"grouped under {image.group} now, not our {action.expected}")
            if image.group == image.id:
                return UndoResult(action, "restored", "a leader: alone once its members leave")
            self._undoing(image)["ungroup"] = True
        elif action.field == TAG:
            name, attached = action.prior.get("tag"), int(action.prior.get("tag") in image.tags)
            if name not in CULL_TAGS or not ownership.still_ours(attached, action.expected):
                return UndoResult(action, "kept-manual", f"tag {name} changed since")
            if attached == (action.restore or 0):
                return UndoResult(action, "restored", f"tag {name} is as it was")
            self._undoing(image).setdefault("attach" if action.restore else "detach", []).append(name)
        else:
            if not ownership.still_ours(image.rating, action.expected):
                return kept_manual(action, image.rating)
            self._undoing(image)["rating"] = action.restore or 0
        return UndoResult(action, "pending", "the plugin puts it back, then reports")

    def _undoing(self, image: DtImage) -> dict:
        return self.undoing.setdefault(image.ref, {"ref": image.ref})

    def undo_list(self) -> list[dict]:
        return [self.undoing[ref] for ref in sorted(self.undoing)]

    def answer_list(self) -> list[dict]:
        return [self.answers[image.ref] for image in self.images if image.ref in self.answers]


def applied_write(image: DtImage, old: int, field: str = RATING, new: int | None = None, prior: dict | None = None) -> Write:
    """What the plugin reports it set, for the journal: a rating (the image's), a group id
    or a tag's presence (`new`, the tag's name in `prior`)."""
    value = image.rating if new is None else new
    return Write(target="darktable", place=image.key, image_path=image.path, old=old, new=value, field=field, prior=prior)


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
