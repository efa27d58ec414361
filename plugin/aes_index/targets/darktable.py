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
`plan_cull` decides them, `plan_uncull` puts them back; both only say what the plugin
should do, and the plugin reports what it did (`applied`), as for ratings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from collections.abc import Mapping, Sequence

from ..features.culling.model import FLAGS, Group, Member
from ..index.store.journal import RATING, UndoAction, Write
from ..values import REJECTED
from .. import ownership
from ..ownership import Owner, PlaceState
from .protocol import CullState, Place, Reading, Target, UndoResult, Wanted, kept_manual

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
    restores: dict[int, int] = field(default_factory=dict)  # ref -> the rating to put back

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
        image = self._by_key[action.place]
        if not ownership.still_ours(image.rating, action.expected):
            return kept_manual(action, image.rating)
        self.restores[image.ref] = action.restore or 0
        return UndoResult(action, "pending", "the plugin puts it back, then reports")

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


# --------------------------------------------------------------------------- culling


def representatives(images: Sequence[DtImage]) -> dict[str, DtImage]:
    """path -> the darktable image that stands for the photo in a group: its lowest duplicate
    index (a duplicate is the person's own variant, grouped with it by darktable)."""
    chosen: dict[str, DtImage] = {}
    for image in sorted(images, key=lambda i: (i.duplicate, i.ref)):
        chosen.setdefault(image.path, image)
    return chosen


def _groups_we_made(images: Sequence[DtImage], states: Mapping[str, PlaceState]) -> set[int]:
    """darktable group ids we put images into and they still hold. (A group's leader keeps
    its own id, so no journal row of its own says the group is ours; its members' rows do.)"""
    return {image.group for image in images if image.group is not None and states[image.key].owner("group") is Owner.OURS}


def _grouped_by_a_person(image: DtImage, ours_ids: set[int]) -> bool:
    """In a group of darktable's of more than itself that we did not make: a person's (a
    duplicate darktable grouped with its original counts: a person made it)."""
    group = image.group if image.group_size > 1 else None
    return ownership.owner(group, ours_ids, "group") is Owner.PERSON


def plan_cull(
    images: Sequence[DtImage], groups: Sequence[Group], flagged: Sequence[Member], states: Mapping[str, PlaceState],
    attached: Mapping[str, frozenset[str]], reject: bool,
) -> dict:
    """What the plugin should do for a cull: darktable groups (the keeper leads), our tags,
    rejects (only with `reject`, never over a person's rating nor on a keeper), and groups
    left alone because a person grouped some of their frames already.

    `states`: each image's PlaceState (ownership.read_state, by place key); `attached`: the
    cull tags we attached to each place and haven't removed. `groups` come with the
    person's choice already applied (keeper.with_person_choice)."""
    chosen = representatives(images)
    ours_ids = _groups_we_made(images, states)
    wanted: dict[str, set[str]] = {}
    answer_groups, left_alone = [], []
    keepers = set()
    for group in groups:
        present = [chosen[m.path] for m in group.members if m.path in chosen]
        keeper = chosen.get(group.keeper.path)
        if keeper is not None:
            keepers.add(keeper.path)
            wanted.setdefault(keeper.path, set()).add(KEEPER_TAG)
        if len(present) < 2:
            continue  # darktable holds at most one frame of it: nothing to group
        description = {"group": group.id, "kind": group.kind, "reason": group.reason, "chosen_by": group.chosen_by,
                       "members": [image.ref for image in present], "keeper": keeper.ref if keeper else None}
        theirs = [image.ref for image in present if _grouped_by_a_person(image, ours_ids)]
        if theirs:
            left_alone.append(description | {"grouped_by_you": theirs})
            continue
        answer_groups.append(description | {"leader": (keeper or present[0]).ref})
    flags = {member.path: member.flags for member in flagged}
    for member_path, member_flags in flags.items():
        wanted.setdefault(member_path, set()).update(FLAG_TAGS[f] for f in member_flags if f in FLAG_TAGS)
    answers = []
    for image in images:
        answer = _image_answer(image, wanted.get(image.path, set()), image is chosen.get(image.path), attached)
        if reject and flags.get(image.path) and image.path not in keepers and ownership.may_set(states[image.key], "rating", REJECTED).write:
            answer["rating"] = REJECTED
        if len(answer) > 1:
            answers.append(answer)
    return {"groups": answer_groups, "images": answers, "left_alone": left_alone}


def _image_answer(image: DtImage, wanted: set[str], representative: bool, attached: Mapping[str, frozenset[str]]) -> dict:
    """Our tags become `wanted`: attach what is missing, detach only tags we attached."""
    if not representative:
        wanted = wanted - {KEEPER_TAG}  # a duplicate is not the keeper; its file's flags hold for it too
    present = set(image.tags) & set(CULL_TAGS)
    answer: dict = {"ref": image.ref}
    attach = sorted(wanted - present)
    detach = sorted((present - wanted) & attached.get(image.key, frozenset()))
    if attach:
        answer["attach"] = attach
    if detach:
        answer["detach"] = detach
    return answer


def plan_uncull(images: Sequence[DtImage], groups: Sequence[UndoAction], tags: Sequence[UndoAction],
                ratings: Sequence[UndoAction]) -> tuple[dict, list[tuple[UndoAction, str]]]:
    """What undoing the culls' writes to these images means: ungroup the images still in
    the group we put them in, detach (or re-attach) the tags still as we left them, put
    back ratings still as we set them. -> (the answer for the plugin, the actions closed
    now: "kept-manual" where a person changed the value since, "restored" where nothing is
    left to do). The rest close when the plugin reports what it put back."""
    by_key = {image.key: image for image in images}
    answers: dict[int, dict] = {}
    closed: list[tuple[UndoAction, str]] = []

    def answer(image: DtImage) -> dict:
        return answers.setdefault(image.ref, {"ref": image.ref})

    for action in groups:
        image = by_key[action.place]
        if not ownership.still_ours(image.group, action.expected):
            closed.append((action, "kept-manual"))
        elif image.group == image.id:
            closed.append((action, "restored"))  # a leader: alone once its members leave
        else:
            answer(image)["ungroup"] = True
    for action in tags:
        image, name = by_key[action.place], action.prior.get("tag")
        attached = int(name in image.tags)
        if name not in CULL_TAGS or not ownership.still_ours(attached, action.expected):
            closed.append((action, "kept-manual"))
        elif attached == (action.restore or 0):
            closed.append((action, "restored"))
        else:
            answer(image).setdefault("attach" if action.restore else "detach", []).append(name)
    for action in ratings:
        image = by_key[action.place]
        if not ownership.still_ours(image.rating, action.expected):
            closed.append((action, "kept-manual"))
        else:
            answer(image)["rating"] = action.restore or 0
    return {"images": [answers[ref] for ref in sorted(answers)]}, closed
