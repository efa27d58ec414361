"""Culling's decisions as marks in the photo managers: keepers picked, failures tagged.

What each photo should show (`Marks`, targets/protocol.py) comes from the stored groups
and flags (cull.load_groups, cull.load_flagged); targets/apply.apply_marks writes them
through a target, and `decide_marks` here says which fields change, asking ownership.py
whose each value is:

- our tags ("Aesthetic|keeper", "Aesthetic|blurry", ...) are ours: they always follow;
- a pick label (digiKam's "accepted" on keepers, "rejected" on failures) is written only
  where there is none, or where the one there is ours (the journal's last write, or the
  place's own marker aes:Pick); a person's pick label is never overridden;
- a reject (xmp:Rating -1, for darktable's import, beside digiKam's pick label
  "rejected") only when the run was asked to reject, only on a flagged frame whose group
  keeps an unflagged keeper (a photo alone is flagged, never rejected), and only where
  ownership.may_set allows a rating;
- a group (digiKam's) only where the photo is in no group or in ours; a group a person
  made is left whole (`Marks.group` False). A group is held one folder at a time: the
  keeper leads the members in its folder, the best of the members in another folder
  leads them there, and those carry our tag "keeper in another folder"
  (`folder_groups`): no folder loses its photos to a leader elsewhere.

And before any of that, a person's own choice in a group wins the keeper
(keeper.with_person_choice): a rating or pick label in a member that is not ours.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ... import ownership
from ...index.freshness import Freshness, stale_line
from ...errors import AesIndexError
from ...paths import inside_roots, printable
from ...ownership import Owner, PlaceState
from ...targets.protocol import Marks, Target
from ...values import NO_PICK, PICK_ACCEPTED, PICK_REJECTED, REJECTED
from .keeper import best_of
from .model import BRACKET, Group, Member

MARK_FIELDS = ("pick", "tags", "group")  # journal fields only culling writes (a reject is a "rating")
KEEPER_TAG = "keeper"


@dataclass(frozen=True)
class MarkOptions:
    """How a culling write runs. reject: also reject flagged photos whose group keeps an
    unflagged keeper (xmp:Rating -1 where the target rejects, pick label "rejected"; a
    photo alone is never rejected, see _reject); treat_as_unrated:
    ratings that count as none (darktable's import default 1)."""

    reject: bool = False
    treat_as_unrated: tuple[int, ...] = ()
    dry_run: bool = False

    def record(self) -> dict:
        return {"reject": self.reject, "treat_as_unrated": list(self.treat_as_unrated)}


# --------------------------------------------------------------------------- the rule


def decide_marks(place: PlaceState, tags: Sequence[str], marks: Marks, target: Target) -> tuple[dict[str, Any], list[dict]]:
    """Which of culling's fields to change at a place (`place`: its state, as
    ownership.read_state read it; `tags`: our culling tags there now).

    Returns (changes: field -> new value, kept: a person's values that stood in the way,
    for the report). Pure: reads and writes nothing. Whose each value is, ownership says.
    """
    changes, kept = {}, []
    rated = place.persons("rating")
    if marks.reject and rated is not None:  # a photo you rated is never rejected, in no field
        kept.append({"field": "rating", "value": rated, "reason": f"rated {rated} by you: not rejected"})
        marks = replace(marks, reject=False)
    if set(tags) != set(marks.tags):
        changes["tags"] = marks.tags
    pick, why = _decide_pick(place, marks) if target.holds_picks else (_SAME, "")
    if pick is not _SAME:
        changes["pick"] = pick
    elif why:
        kept.append({"field": "pick", "value": place.value("pick"), "reason": why})
    if target.rejects and marks.reject is not None:
        rating = _decide_reject(place, marks.reject)
        if rating is not _SAME:
            changes["rating"] = rating
    if target.holds_groups and marks.group:
        leader = None if marks.leader is None else target.ref_of(marks.leader)
        if leader != place.value("group"):
            if place.owner("group") is Owner.PERSON:
                kept.append({"field": "group", "value": place.value("group"), "reason": "grouped by you"})
            else:
                changes["group"] = leader
    return changes, kept


_SAME = object()  # a field left as it is


def _decide_pick(place: PlaceState, marks: Marks) -> tuple[Any, str]:
    """The pick label to write (or _SAME), and why a person's stays."""
    current = place.value("pick")
    current = None if current == NO_PICK else current  # digiKam's explicit "none" is none
    wanted = PICK_ACCEPTED if marks.keeper else PICK_REJECTED if marks.reject else None
    if wanted is None and marks.reject is None and current == PICK_REJECTED:
        return _SAME, ""  # the run leaves rejects alone, ours included
    if current == wanted:
        return _SAME, ""
    if place.owner("pick") is not Owner.PERSON:
        return wanted, ""
    if wanted is None:
        return _SAME, ""  # a person's pick label where we want none: nothing to say
    return _SAME, f"pick label {current} set by you; ours would be {wanted}"


def _decide_reject(place: PlaceState, reject: bool) -> Any:
    """A reject's rating (-1); or, to take back a reject of ours, the rating it replaced
    (darktable's import star, say), or none; or _SAME."""
    if reject:
        return REJECTED if ownership.may_set(place, "rating", REJECTED).write else _SAME
    if place.value("rating") != REJECTED or not ownership.may_take_back(place, "rating"):
        return _SAME
    before = place.before.get("rating")
    return before if place.last.get("rating") == REJECTED and before != REJECTED else None


# --------------------------------------------------------------------------- the plan


def plan_marks(
    index,
    target: Target,
    groups: Sequence[Group],
    flagged: Sequence[Member],
    options: MarkOptions,
    stale_paths: Iterable[str] = (),
    person_grouped: Callable[[Group], bool] = lambda group: False,
) -> list[Marks]:
    """The marks every photo should show in `target`: each group's keeper (`groups` come
    with the person's choice made in that target already: `with_choices`), its members
    under it or, in another folder, under the best of them there (`folder_groups`, over
    the photos the target holds), flagged photos, and photos that still hold marks of ours from an earlier run
    (`stale_paths`) so they lose what no longer applies."""
    plan: dict[str, Marks] = {}
    held = (lambda path: bool(target.places(path))) if target.holds_groups else (lambda path: True)
    for group in groups:
        own = not person_grouped(group)
        leaders = folder_leaders(group, held)
        keeper_folder = folder_of(group.keeper.path)
        for member in group.members:
            is_keeper = member.image_id == group.keeper_id or group.kind == BRACKET  # a bracket is kept whole
            plan[member.path] = Marks(
                member.path, keeper=is_keeper, flags=tuple(member.flags), reject=_reject(options, member, group, is_keeper),
                leader=leaders.get(member.path), group=own,
                keeper_elsewhere=not is_keeper and folder_of(member.path) != keeper_folder,
            )
    for member in flagged:
        if member.path not in plan:
            plan[member.path] = Marks(member.path, flags=tuple(member.flags), reject=_reject(options, member, None, False))
    for path in stale_paths:
        plan.setdefault(path, Marks(path, reject=False if options.reject else None))
    return list(plan.values())


def folder_of(path: str) -> str:
    """The folder a photo manager shows a photo in: digiKam's album, darktable's film roll."""
    return os.path.dirname(path)


def folder_groups(group: Group, held: Callable[[str], bool]) -> list[tuple[str, list[str]]]:
    """The group as a photo manager should hold it: one group per folder, (leader, members
    with the leader first), over the members it holds (`held`); a folder holding one of
    them holds no group.

    digiKam and darktable show a group where its leader is, collapsed to it: a member
    grouped under a leader in another folder vanishes from its own (digiKam's album view
    hides a grouped image unless its group is open, GroupItemFilterSettings::matches in
    core/libs/database/models/itemfiltersettings.cpp; the leader is not in that album).
    So the keeper leads only the members in its own folder, and the members in another
    folder are grouped under the best of them there (keeper.best_of): each folder still
    shows one photo of the group.
    """
    by_folder: dict[str, list] = {}
    for member in group.members:
        if held(member.path):
            by_folder.setdefault(folder_of(member.path), []).append(member)
    found = []
    for here in by_folder.values():
        if len(here) < 2:
            continue
        lead = group.keeper if any(m.image_id == group.keeper_id for m in here) else best_of(group.kind, here)
        found.append((lead.path, [lead.path, *(m.path for m in here if m.image_id != lead.image_id)]))
    return found


def folder_leaders(group: Group, held: Callable[[str], bool]) -> dict[str, str]:
    """photo path -> the photo it is grouped under (folder_groups); a photo that leads,
    stands alone in its folder, or is not held is not in it."""
    return {path: lead for lead, paths in folder_groups(group, held) for path in paths[1:]}


def _reject(options: MarkOptions, member: Member, group: Group | None, keeper: bool) -> bool | None:
    """Reject a flagged photo only when its group keeps a better frame of the same moment:
    an unflagged keeper. A keeper is never rejected (a bracket's frames all are keepers); a
    photo alone (`group` None: a single) is the only frame of its scene, and a flawed keeper
    (the whole burst was blurry, or a person picked a flagged frame) leaves nothing better
    kept: flagged, never rejected. False takes back a reject of ours from an earlier run
    that this rule no longer makes."""
    if not options.reject:
        return None
    if keeper or group is None or group.keeper.flags:
        return False
    return bool(member.flags)


def with_choices(index, target: Target, groups: Sequence[Group], options: MarkOptions) -> list[Group]:
    """Each group with the keeper a person's choice in `target` makes it (a rating or pick
    label of theirs in a member's places, as ownership.persons_choice reads it)."""
    from .keeper import with_person_choice

    chosen = []
    for group in groups:
        choices = {m.image_id: persons_choice_in(index, target, m.path, options.treat_as_unrated) for m in group.members}
        person = {image_id: choice for image_id, choice in choices.items() if choice is not None}
        chosen.append(with_person_choice(group, person) if person else group)
    return chosen


def persons_choice_in(index, target: Target, photo: str, unrated=()) -> int | None:
    """The strongest choice a person made for `photo` in any of its places in `target`
    (ownership.persons_choice); a place we cannot read holds none we can honour (the write
    of that place reports it)."""
    choices = []
    for place in target.places(photo):
        try:
            reading = target.read(place)
        except AesIndexError:
            continue
        choices.append(ownership.persons_choice(ownership.read_state(index.journal, target.name, reading, unrated)))
    return ownership.best_choice(choices)


def load_culling(index, under: Sequence[str] = ()) -> tuple[list[Group], list[Member]]:
    """The stored groups (keeper first) and flagged photos, as `aes-index cull` left them."""
    from .cull import load_flagged, load_groups

    return load_groups(index, under=under), load_flagged(index, under=under)


# --------------------------------------------------------------------------- XMP sidecars


def write_sidecars(index, options: MarkOptions, under: Sequence[str] = ()):
    """Culling's marks into every photo's XMP sidecar (the "xmp" target): what digiKam
    and darktable's import read. Journaled (command "apply-culling"); `aes-index ratings
    undo` puts the bytes back."""
    from ...writing.apply import apply_marks
    from ...targets.sidecar import SidecarTarget

    target = SidecarTarget(roots=tuple(index.roots()))
    groups, flagged = load_culling(index, under)

    def plan(target: Target) -> list[Marks]:
        stale = [path for path, _ in index.journal.open_fields(target.name, MARK_FIELDS) if not under or inside_roots(path, under)]
        planned = plan_marks(index, target, with_choices(index, target, groups, options), flagged, options, stale)
        return only_as_measured(index, target, planned, under)

    return apply_marks(index, target, plan, decide_marks, options, "apply-culling", options.record())


def only_as_measured(index, target: Target, planned: Sequence[Marks], under: Sequence[str] = ()) -> list[Marks]:
    """The marks of photos still the bytes the cull judged. A photo changed since it was
    measured is another picture: our marks would be about one nobody sees; a photo gone
    (deleted, moved, renamed) would get a sidecar beside nothing, an orphan no later run
    takes away. Both are left out; the report (the target's extra) counts every measured
    photo under `under` in that state, planned or not (a cull may have set it aside)."""
    freshness = Freshness(index)
    measured = (freshness.rows[i]["path"] for i in index.culling.measured_ids() if i in freshness.rows)
    paths = dict.fromkeys([*(item.path for item in planned), *(p for p in measured if not under or inside_roots(p, under))])
    stale = freshness.stale(paths)
    target.extra.update(stale.counts())
    left_out = stale.paths()
    return [item for item in planned if item.path not in left_out]


def marks_text(report, undo_hint: str) -> str:
    """A culling write's report in words (`apply-culling`, `digikam cull`)."""
    verb = "would change" if report.dry_run else "changed"
    written = ", ".join(f"{n} {FIELD_WORDS.get(name, name)}" for name, n in sorted(report.written.items())) or "nothing"
    lines = [
        f"{report.photos} photos: {report.keepers} keepers, {report.grouped} grouped under them, {report.flagged} flagged",
        f"{verb}: {written}; {report.unchanged} places already right",
    ]
    if "images" in report.extra:  # digiKam's database
        lines.insert(0, f"{report.extra['matched']} of {report.extra['images']} digiKam images are culled photos")
    if report.keepers == 0:
        lines.append("no groups: none found, or `aes-index cull` has not run yet")
    if report.grouped_by_you:
        lines.append(f"{report.grouped_by_you} photos are in groups you made: their grouping left as it is")
    for item in report.kept_yours:
        lines.append(f"kept yours: {printable(item['path'])}: {item['reason']}")
    changed, gone = report.extra.get("changed_since_measured", 0), report.extra.get("gone_since_measured", 0)
    if changed or gone:
        lines.append(stale_line(changed, gone, "left out", "left out: no sidecar written"))
    if report.changed_since_read:
        lines.append(f"{report.changed_since_read} left alone: changed while we decided (by a person?); run again")
    lines += [f"error: {printable(e['path'])}: {printable(e['error'])}" for e in report.errors]
    if report.extra.get("backup"):
        lines.append(f"backup: {report.extra['backup']}")
    if report.run_id is not None and report.written:
        lines.append(f"run {report.run_id}: `{undo_hint}` puts these back")
    return "\n".join(lines)


FIELD_WORDS = {"pick": "pick labels", "tags": "tag sets", "group": "group memberships", "rating": "rejects (xmp:Rating -1)"}
