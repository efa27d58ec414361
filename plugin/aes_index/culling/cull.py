"""The culling operation (`aes-index cull`) and what its readers load.

    run_cull    under the writer lock, in one transaction: departed photos leave their
                groups, new photos are linked (grouping.py) into groups, each touched
                group gets its keeper (keeper.py; a person's choice read from the XMP
                sidecars wins) and every group is stored with its reason
    load_groups the stored groups, keeper first, with the facts and flags of each member
    load_flagged every present photo with a technical failure, grouped or not

Culling reads only what `rebuild` stored: it never decodes. Photos without capture facts
yet (an index from before culling) are measured by the next `rebuild`, which says so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from ..library import inside_roots
from ..locks import writer_lock
from ..store import Index, utcnow
from . import grouping, keeper
from .model import BURST, BY_YOU, DUPLICATE, Group, Member


@dataclass
class CullSummary:
    photos: int = 0  # present photos with capture facts
    considered: int = 0  # photos this run compared for the first time
    unmeasured: int = 0  # indexed photos without capture facts: run `aes-index rebuild`
    without_time: int = 0  # photos with no usable capture time: grouped as duplicates only
    groups: int = 0
    bursts: int = 0
    duplicates: int = 0
    grouped_photos: int = 0
    formed: int = 0  # new groups this run
    joined: int = 0  # new photos that joined an existing group
    left: int = 0  # photos that left their group (gone from the library, or changed)
    dissolved: int = 0  # groups left with one photo
    chosen_by_you: int = 0  # groups whose keeper a person chose
    flagged: dict = field(default_factory=dict)  # flag -> photos
    head: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def run_cull(index: Index, head_id: str | None = None, lock_timeout: float | None = None) -> CullSummary:
    """Group what is new, pick every touched group's keeper, store it all."""
    started = time.monotonic()
    summary = CullSummary(head=head_id)
    with writer_lock(index.path, lock_timeout), index.transaction():
        now = utcnow()
        tables = index.culling
        summary.left, summary.dissolved = _drop_departed(tables)
        table = tables.facts_table()
        summary.photos = len(table.ids)
        summary.considered = int((~table.culled).sum())
        summary.without_time = int(sum(1 for t in table.taken_at if t != t))  # nan
        existing = {row.id: row for row in tables.groups()}
        result = grouping.regroup(table, tables.memberships(), {gid: row.kind for gid, row in existing.items()})
        for dropped in result.dropped:
            tables.drop_group(dropped)
        touched = []
        for key, members in result.groups.items():
            group_id = key if key > 0 else tables.new_group(result.kinds[key], now)
            if key < 0 or set(members) != set(existing[key].members) or result.kinds[key] != existing[key].kind:
                tables.set_members(group_id, members)
                touched.append((group_id, result.kinds[key], members))
        for group_id, kind, members in touched:
            group = _decide(index, group_id, kind, members, head_id)
            tables.set_keeper(group_id, kind, group.keeper_id, group.reason, group.chosen_by, now)
        tables.mark_culled(table.ids[~table.culled])
        summary.formed, summary.joined = result.formed, result.joined
        summary.unmeasured = len(tables.ids_lacking_facts())
    _count(index, summary, head_id)
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


def _drop_departed(tables) -> tuple[int, int]:
    departed = tables.departed()
    tables.remove_members(departed)
    dissolved = 0
    for row in tables.groups():
        if len(row.members) < 2:
            tables.drop_group(row.id)
            dissolved += 1
    return len(departed), dissolved


def _decide(index: Index, group_id: int, kind: str, image_ids, head_id: str | None) -> Group:
    facts = index.culling.member_facts(sorted(image_ids), head_id)
    members = [_member(row) for row in facts.values()]
    pixels = {row["image_id"]: (row["width"] or 0) * (row["height"] or 0) for row in facts.values()}
    group = keeper.decide(group_id, kind, members, pixels)
    return _person_choice(index, group)


def _person_choice(index: Index, group: Group) -> Group:
    """A person's rating or pick label in the group's XMP sidecars wins the keeper."""
    from ..targets.sidecar import SidecarTarget
    from .marks import MarkOptions, _with_person_choice

    return _with_person_choice(index, SidecarTarget(roots=tuple(index.roots())), group, MarkOptions())


def _member(row: dict) -> Member:
    return Member(
        image_id=row["image_id"], path=row["path"], score=row["score"], sharpness=row["sharpness"],
        clipped_highlights=row["clipped_highlights"], clipped_shadows=row["clipped_shadows"], taken_at=row["taken_at_text"],
    )


def _count(index: Index, summary: CullSummary, head_id: str | None) -> None:
    groups = load_groups(index, head_id)
    summary.groups = len(groups)
    summary.bursts = sum(1 for g in groups if g.kind == BURST)
    summary.duplicates = sum(1 for g in groups if g.kind == DUPLICATE)
    summary.grouped_photos = sum(len(g.members) for g in groups)
    summary.chosen_by_you = sum(1 for g in groups if g.chosen_by == BY_YOU)
    for member in load_flagged(index, head_id):
        for flag in member.flags:
            summary.flagged[flag] = summary.flagged.get(flag, 0) + 1


# --- readers ---------------------------------------------------------------------------


def load_groups(index: Index, head_id: str | None = None, under: Sequence[str] = ()) -> list[Group]:
    """Stored groups, keeper first, each member with its facts and flags; `under`: only
    groups with a photo inside these folders. Works on a read-only index."""
    groups = []
    for row in index.culling.groups():
        if len(row.members) < 2:
            continue
        facts = index.culling.member_facts(row.members, head_id)
        if under and not any(inside_roots(f["path"], under) for f in facts.values()):
            continue
        members = [_member(f) for f in facts.values()]
        sharpest = max((m.sharpness for m in members if m.sharpness is not None), default=None)
        flagged = [_with_flags(m, sharpest) for m in members]
        keeper_member = next((m for m in flagged if m.image_id == row.keeper_id), flagged[0])
        rest = sorted((m for m in flagged if m is not keeper_member), key=lambda m: (m.taken_at or "", m.path))
        groups.append(Group(row.id, row.kind, (keeper_member, *rest), keeper_member.image_id, row.reason or "", row.chosen_by or ""))
    return groups


def load_flagged(index: Index, head_id: str | None = None, under: Sequence[str] = ()) -> list[Member]:
    """Every present photo with a technical failure (in a group: judged against its group)."""
    sharpest_in: dict[int, float] = {}
    memberships = index.culling.memberships()
    for group in load_groups(index, head_id):
        best = max((m.sharpness for m in group.members if m.sharpness is not None), default=None)
        if best is not None:
            sharpest_in[group.id] = best
    flagged = []
    for image_id, (sharpness, highlights, shadows) in sorted(index.culling.measures().items()):
        probe = Member(image_id, "", None, sharpness, highlights, shadows, None)
        if not keeper.flags_of(probe, sharpest_in.get(memberships.get(image_id, -1))):
            continue
        row = index.culling.member_facts([image_id], head_id)[image_id]
        if under and not inside_roots(row["path"], under):
            continue
        flagged.append(_with_flags(_member(row), sharpest_in.get(memberships.get(image_id, -1))))
    return flagged


def _with_flags(member: Member, sharpest: float | None) -> Member:
    from dataclasses import replace

    return replace(member, flags=keeper.flags_of(member, sharpest))
