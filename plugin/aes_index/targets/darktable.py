"""darktable's library, through the Lua plugin: the "darktable" target.

darktable ignores a sidecar once it has imported the photo, so its ratings go in through
its Lua API, and the plugin (plugin/darktable/aesthetic.lua) applies what we answer. The
plugin's request is the read: it carries each image's current rating. The write is our
answer ("rating"); the plugin sets it only if the image still holds the rating it sent
(the same-read rule, kept on darktable's side), then reports back with `applied`, which
journals the write. One place per darktable image: "<path>#<duplicate index>".

Culling writes more fields to the same places (journal `field`): "group" (darktable's
group id, i.e. its leader's image id: old = the image's own id when it stood alone,
new = the keeper's, or in another film roll the best member's there), "tag" (one of CULL_TAGS: old/new 0 = not attached, 1 = attached,
the tag's name in `prior`), and "rating" for a reject (-1), only with the reject option.
features/darktable_plan.py decides them (`plan_cull`) and puts them back (`plan_uncull`);
both only say what the plugin should do, and the plugin reports what it did (`applied`),
as for ratings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


from .. import ownership
from ..values import FLAGS, KEEPER_ELSEWHERE, REJECTED
from .protocol import RATING, CullState, Place, Reading, Target, UndoAction, UndoResult, Wanted, Write, kept_manual

TAG_ROOT = "aesthetic"  # every tag we attach lives below it (the plugin's TAG_PREFIX)
GROUP, TAG = "group", "tag"  # the journal fields culling writes besides "rating"
KEEPER_TAG = f"{TAG_ROOT}|keeper"
ELSEWHERE_TAG = f"{TAG_ROOT}|{KEEPER_ELSEWHERE}"  # a group's photo in another film roll than its keeper
FLAG_TAGS = {flag: f"{TAG_ROOT}|{flag}" for flag in FLAGS}  # aesthetic|blurry, ...
CULL_TAGS = (KEEPER_TAG, ELSEWHERE_TAG, *FLAG_TAGS.values())  # the plugin's CULL_TAGS


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
    holds_groups: bool = True  # darktable's groups: a photo under its group leader
    holds_picks: bool = False  # darktable has no pick labels: a keeper is shown by its tag and as the leader
    attached: dict[str, frozenset[str]] = field(default_factory=dict)  # place -> our cull tags that we attached (the journal's)
    answers: dict[int, dict] = field(default_factory=dict)  # ref -> the plugin's answer for it
    undoing: dict[int, dict] = field(default_factory=dict)  # ref -> what the plugin should put back

    def __post_init__(self) -> None:
        self._by_ref = {image.ref: image for image in self.images}
        self._by_key = {image.key: image for image in self.images}
        self._representative: dict[str, DtImage] = {}  # a photo's lowest duplicate: it joins groups, it keeps
        for image in sorted(self.images, key=lambda i: (i.duplicate, i.ref)):
            self._representative.setdefault(image.path, image)

    def places(self, photo_path: str) -> list[Place]:
        return [Place(image.key, image.path, ref=image.ref) for image in self.images if image.path == photo_path]

    def read(self, place: Place) -> Reading:
        image = self._by_ref[place.ref]
        # Grouped: under another image (darktable's group id is its leader's image id; a
        # leader, or an image alone, is under none). Our culling tags: those we attached.
        ours = self.attached.get(image.key, frozenset())
        cull = CullState(
            leader=image.group if image.group is not None and image.group != image.id else None,
            tags=tuple(tag.split("|", 1)[1] for tag in CULL_TAGS if tag in image.tags and tag in ours),
        )
        return Reading(place, image.rating, token=image.rating, cull=cull)

    def ref_of(self, photo_path: str) -> int | None:
        """The darktable image a group hangs under: the photo's lowest duplicate."""
        image = self._representative.get(photo_path)
        return None if image is None else image.id

    def mark(self, reading: Reading, changes: dict, marks, dry_run: bool) -> list[Write]:
        """Culling's `changes` as the plugin's answer for one image (tags to attach and
        detach, a rating), journaled ahead one row per tag, group or rating; the plugin sets
        them where the image still holds what the request carried, then reports. A photo's
        other duplicates carry its flags, not the keeper's tag nor its place in a group;
        our tags are detached only where we attached them. A group itself is answered for
        the whole group (`group_answer`): each member's row here says where it goes."""
        image = self._by_ref[reading.place.ref]
        answer = self.answers.setdefault(image.ref, {"ref": image.ref})
        representative = self._representative[image.path] is image
        writes = []
        if "tags" in changes:
            wanted = {f"{TAG_ROOT}|{tag}" for tag in changes["tags"]} - (set() if representative else {KEEPER_TAG})
            present = set(image.tags) & set(CULL_TAGS)
            for name, old, new in [*((n, 0, 1) for n in sorted(wanted - present)),
                                   *((n, 1, 0) for n in sorted((present - wanted) & self.attached.get(image.key, frozenset())))]:
                answer.setdefault("attach" if new else "detach", []).append(name)
                writes.append(applied_write(image, old, TAG, new=new, prior={"tag": name}))
        if changes.get("group") is not None and representative:  # a photo leaving our group: `undo cull` ungroups
            writes.append(applied_write(image, image.group, GROUP, new=changes["group"]))
        if "rating" in changes:  # a reject, or the rating our reject replaced (none: darktable's 0)
            answer["rating"] = changes["rating"] or 0
            writes.append(applied_write(image, image.rating, new=answer["rating"]))
        return writes

    def cull_list(self) -> list[dict]:
        """The images' answers that ask for something (a tag, a rating)."""
        return [answer for ref, answer in sorted(self.answers.items()) if len(answer) > 1]

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
