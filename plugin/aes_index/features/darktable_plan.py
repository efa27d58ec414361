"""darktable's cull, planned: what the plugin should do for the groups and flags among a
request's images (`plan_cull`). Taking a cull back goes through the one undo loop
(targets/darktable.py's `undo`).

darktable groups a photo under a leader (its group id is the leader's image id), tags it,
and rates it; the plugin applies our answer where an image still holds what its request
carried, then reports. Whose a group, a rating or a tag is, ownership.py says (each
image's PlaceState, read by the caller); culling's model says what should be shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .. import ownership
from ..ownership import Owner, PlaceState
from ..targets.darktable import CULL_TAGS, FLAG_TAGS, KEEPER_TAG, DtImage
from ..values import REJECTED
from .culling.model import Group, Member


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
    answer_groups, left_alone = _groups(groups, chosen, _groups_we_made(images, states))
    keepers = {chosen[group.keeper.path].path for group in groups if group.keeper.path in chosen}
    flags = {member.path: member.flags for member in flagged}
    wanted = _wanted_tags(keepers, flags)
    answers = []
    for image in images:
        answer = _image_answer(image, wanted.get(image.path, set()), image is chosen.get(image.path), attached)
        if reject and _rejects(image, flags, keepers, states):
            answer["rating"] = REJECTED
        if len(answer) > 1:
            answers.append(answer)
    return {"groups": answer_groups, "images": answers, "left_alone": left_alone}


def _groups(groups: Sequence[Group], chosen: Mapping[str, DtImage], ours_ids: set[int]) -> tuple[list[dict], list[dict]]:
    """(the groups darktable should make, led by the keeper; those left alone because a
    person grouped a frame of theirs). A group darktable holds one frame of is neither."""
    answer_groups, left_alone = [], []
    for group in groups:
        present = [chosen[m.path] for m in group.members if m.path in chosen]
        if len(present) < 2:
            continue
        keeper = chosen.get(group.keeper.path)
        description = {"group": group.id, "kind": group.kind, "reason": group.reason, "chosen_by": group.chosen_by,
                       "members": [image.ref for image in present], "keeper": keeper.ref if keeper else None}
        theirs = [image.ref for image in present if _grouped_by_a_person(image, ours_ids)]
        if theirs:
            left_alone.append(description | {"grouped_by_you": theirs})
        else:
            answer_groups.append(description | {"leader": (keeper or present[0]).ref})
    return answer_groups, left_alone


def _wanted_tags(keepers: set[str], flags: Mapping[str, Sequence[str]]) -> dict[str, set[str]]:
    """path -> our cull tags it should carry: "keeper" on keepers, its flags' tags."""
    wanted: dict[str, set[str]] = {path: {KEEPER_TAG} for path in keepers}
    for path, names in flags.items():
        wanted.setdefault(path, set()).update(FLAG_TAGS[f] for f in names if f in FLAG_TAGS)
    return wanted


def _rejects(image: DtImage, flags: Mapping[str, Sequence[str]], keepers: set[str], states: Mapping[str, PlaceState]) -> bool:
    """A flagged photo that is no keeper, where its rating may take our reject (ownership)."""
    return bool(flags.get(image.path)) and image.path not in keepers and ownership.may_set(states[image.key], "rating", REJECTED).write


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
