"""darktable's groups for a cull: which of culling's groups darktable should show among a
request's images, led by their keeper, and which it leaves alone because a person grouped
a frame of theirs (`group_answer`). Each image's tags, group row and reject go through the
one apply loop (features/darktable.py `cull`); taking a cull back through the one undo
loop (targets/darktable.py's `undo`).

darktable groups a photo under a leader: its group id is the leader's image id. A photo's
darktable duplicates follow it; its lowest duplicate stands for it in a group. A group is
made one film roll (folder) at a time, as for digiKam (culling/marks.py folder_groups):
the members in another film roll than the keeper's are grouped under the best of them
there and tagged "aesthetic|keeper in another folder".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .. import ownership
from ..ownership import Owner, PlaceState
from ..targets.darktable import DtImage
from .culling.marks import folder_groups
from .culling.model import Group


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


def group_answer(images: Sequence[DtImage], groups: Sequence[Group], states: Mapping[str, PlaceState]) -> tuple[list[dict], list[dict]]:
    """The groups darktable should show among the request's images, and those left alone.
    `groups` come with the person's choice applied (their keeper leads); `states`: each
    image's PlaceState (ownership.read_state), which says which groups are ours."""
    return _groups(groups, representatives(images), _groups_we_made(images, states))


def _groups(groups: Sequence[Group], chosen: Mapping[str, DtImage], ours_ids: set[int]) -> tuple[list[dict], list[dict]]:
    """(the groups darktable should make, one per film roll, led by the keeper in its own
    and by the best of the group in another (marks.folder_groups: darktable shows a group
    collapsed to its leader, so a frame grouped under a leader in another film roll would
    vanish from its own); those left alone because a person grouped a frame of theirs).
    A group darktable holds one frame of is neither."""
    answer_groups, left_alone = [], []
    for group in groups:
        present = [chosen[m.path] for m in group.members if m.path in chosen]
        if len(present) < 2:
            continue
        keeper = chosen.get(group.keeper.path)
        description = {"group": group.id, "kind": group.kind, "reason": group.reason, "chosen_by": group.chosen_by,
                       "keeper": keeper.ref if keeper else None}
        theirs = [image.ref for image in present if _grouped_by_a_person(image, ours_ids)]
        if theirs:
            left_alone.append(description | {"members": [image.ref for image in present], "grouped_by_you": theirs})
            continue
        for leader, paths in folder_groups(group, chosen.__contains__):
            answer_groups.append(description | {"members": [chosen[path].ref for path in paths], "leader": chosen[leader].ref})
    return answer_groups, left_alone
