"""The culling operation (`aes-index cull`) and what its readers load.

    run_cull    under the writer lock, in one transaction: departed photos (and those
                whose file holds other bytes than were measured) leave their
                groups, new photos are linked (grouping.py) into groups, each touched
                group gets its keeper (keeper.py; a person's choice read from the XMP
                sidecars wins) and every group is stored with its reason
    load_groups the stored groups, keeper first, with the facts and flags of each member
    load_flagged every present photo with a technical failure, grouped or not

Culling reads only what `rebuild` stored: it never decodes. Photos without capture facts
yet (an index from before culling) are measured by the next `rebuild`, which says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

from ...paths import inside_roots
from ...index.facts import is_camera_file
from ...index.freshness import Freshness
from ...index.locks import writer_lock
from ...targets.sidecar import SidecarTarget
from ...index.store import Index, utcnow
from . import grouping, keeper
from .model import BRACKET, BURST, BY_YOU, DUPLICATE, PAIR, Group, Member


KEEPER_RULE_KEY = "keeper_rule"  # index meta: the keeper.KEEPER_RULE the stored keepers were decided by


@dataclass
class CullSummary:
    photos: int = 0  # present photos with capture facts (the files of one capture count once)
    considered: int = 0  # photos this run compared for the first time
    unmeasured: int = 0  # indexed photos without capture facts: run `aes-index rebuild`
    changed_since_measured: int = 0  # files with other bytes than their facts were measured on: left out
    gone_since_measured: int = 0  # files no longer where they were measured (moved, renamed, deleted): grouped as before
    without_time: int = 0  # photos with no usable capture time: grouped as duplicates only
    groups: int = 0
    bursts: int = 0
    brackets: int = 0  # bursts whose frames step their exposure: kept whole
    duplicates: int = 0
    grouped_photos: int = 0
    formed: int = 0  # new groups this run
    joined: int = 0  # new photos that joined an existing group
    left: int = 0  # photos that left their group (gone from the library, or changed)
    dissolved: int = 0  # groups left with one photo
    chosen_by_you: int = 0  # groups whose keeper a person chose
    pairs: int = 0  # RAW+JPEG pairs (or other files of one capture), each counted as one photo
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
        before = {row.id: (set(row.members), row.keeper_id) for row in tables.groups(leaving=True)}  # before departures
        stale = _stale(index, summary)
        summary.left, summary.dissolved = _drop_departed(tables, stale)
        table = tables.facts_table(leave_out=stale)
        summary.photos = len(table.ids)
        summary.considered = int((~table.culled).sum())
        summary.without_time = int(sum(1 for t in table.taken_at if t != t))  # nan
        existing = {row.id: row for row in tables.groups()}
        # Grouping knows bursts and duplicates; a bracket is a burst, a pair copies, refined after (refined_kind)
        linked = {gid: {BRACKET: BURST, PAIR: DUPLICATE}.get(row.kind, row.kind) for gid, row in existing.items()}
        result = grouping.regroup(table, tables.memberships(), linked)
        for dropped in result.dropped:
            tables.drop_group(dropped)
        facts = tables.member_facts(None, head_id) if result.groups else {}
        # Groups decided under an older keeper rule decide again, once (an upgraded library
        # whose groups did not change would keep keepers the rule no longer makes)
        rule_changed = index.get_meta(KEEPER_RULE_KEY) != keeper.KEEPER_RULE
        touched = []
        for key, members in result.groups.items():
            kind = grouping.refined_kind(result.kinds[key], [facts[i] for i in members if i in facts])
            group_id = key if key > 0 else tables.new_group(kind, now)
            changed = key < 0 or set(members) != set(existing[key].members) or kind != existing[key].kind
            if changed:
                tables.set_members(group_id, members)
            # A group that lost a photo (its keeper, maybe) decides again as well
            if changed or rule_changed or set(members) != before[key][0] or before[key][1] not in members:
                touched.append((group_id, kind, members))
        target, listings = SidecarTarget(roots=tuple(index.roots())), {}
        for group_id, kind, members in touched:
            group = _decide(index, group_id, kind, [facts[i] for i in sorted(members)], target, listings)
            tables.set_keeper(group_id, kind, group.keeper_id, group.reason, group.chosen_by, now)
        tables.mark_culled(table.ids[~table.culled])
        index.set_meta(KEEPER_RULE_KEY, keeper.KEEPER_RULE)
        summary.formed, summary.joined = result.formed, result.joined
        summary.unmeasured = len(tables.ids_lacking_facts())
    _count(index, summary, head_id)
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


def _stale(index: Index, summary: CullSummary) -> set[int]:
    """Photos whose path holds other bytes than their facts were measured on: their facts
    would group and judge a picture that is not there. Photos gone from their path are
    only counted: their facts still hold for their bytes, which the next rebuild finds
    moved (keeping the group) or marks missing (leaving it); a library on a disk that is
    not mounted keeps its groups."""
    stale = Freshness(index).stale_ids(index.culling.measured_ids())
    summary.changed_since_measured, summary.gone_since_measured = len(stale.changed), len(stale.gone)
    return stale.changed_ids


def _drop_departed(tables, stale: set[int]) -> tuple[int, int]:
    """Photos gone from the library, measured again, or stale leave their groups; a group
    left with one photo is no group."""
    members = set(tables.memberships())
    departed = set(tables.departed()) | (stale & members)
    tables.remove_members(departed)
    tables.set_aside(sorted(stale))
    dissolved = 0
    for row in tables.groups():
        if len(row.members) < 2:
            tables.drop_group(row.id)
            dissolved += 1
    return len(departed), dissolved


def _decide(index: Index, group_id: int, kind: str, rows: list[dict], target, listings: dict) -> Group:
    return _person_choice(index, keeper.decide(group_id, kind, _members(kind, rows)), target, listings)


def _members(kind: str, rows: list[dict]) -> list[Member]:
    """A group's members from their facts, each burst member knowing which frame it is a copy of."""
    frames = grouping.frames_of(rows) if kind in (BURST, BRACKET) else {}
    return [replace(_member(row), frame=frames.get(row["image_id"])) for row in rows]


def _person_choice(index: Index, group: Group, target, listings: dict) -> Group:
    """A person's rating or pick label in the members' XMP sidecars wins the keeper
    (whose a value is: ownership.py). Only each photo's own sidecar is read (not its
    darktable duplicates'), found in its folder's listing (read once per folder): a cull
    of a whole library reads one small file per grouped photo, and only where one exists."""
    from ... import ownership
    from ...errors import AesIndexError
    from ...targets.protocol import Place

    person: dict[int, int] = {}
    for member in group.members:
        sidecar = _own_sidecar(member.path, listings)
        if sidecar is None:
            continue
        try:
            reading = target.read(Place(str(sidecar), member.path))
        except AesIndexError:
            continue  # a sidecar we can't read holds no choice we can honour
        choice = ownership.persons_choice(ownership.read_state(index.journal, target.name, reading))
        if choice is not None:
            person[member.image_id] = choice
    return keeper.with_person_choice(group, person) if person else group


def _own_sidecar(photo: str, listings: dict) -> str | None:
    """xmp.sidecar_for's choice, among the names the folder holds (None: no sidecar)."""
    folder, name = os.path.split(photo)
    if folder not in listings:
        try:
            listings[folder] = set(os.listdir(folder))
        except OSError:
            listings[folder] = set()
    names = listings[folder]
    stem, suffix = os.path.splitext(name)
    for candidate in (name + ".xmp", stem + ".xmp" if suffix else None):
        if candidate in names:
            return os.path.join(folder, candidate)
    return None


def _member(row: dict) -> Member:
    sides = [side for side in (row["width"], row["height"]) if side]
    return Member(
        image_id=row["image_id"], path=row["path"], score=row["score"], sharpness=row["sharpness"],
        clipped_highlights=row["clipped_highlights"], clipped_shadows=row["clipped_shadows"], taken_at=row["taken_at_text"],
        brightest=row["brightest"], short_side=min(sides) if sides else None,
        pixels=(row["width"] or 0) * (row["height"] or 0) or None, encoding=row["encoding"], quality=row["quality"],
        camera_file=is_camera_file(row["camera"], row["taken_at"], row["software"]), exposure_bias=row["exposure_bias"],
        edge_width=row["edge_width"],
        blown_highlights=row["blown_highlights"], clipped_channel=row["clipped_channel"],
    )


def _count(index: Index, summary: CullSummary, head_id: str | None) -> None:
    facts = index.culling.member_facts(None, head_id)
    groups = load_groups(index, head_id, facts=facts, choices=False)  # the cull stored the choices it read
    summary.groups = len(groups)
    summary.bursts = sum(1 for g in groups if g.kind == BURST)
    summary.brackets = sum(1 for g in groups if g.kind == BRACKET)
    summary.duplicates = sum(1 for g in groups if g.kind == DUPLICATE)
    summary.grouped_photos = sum(_captures(g.members) for g in groups)
    summary.chosen_by_you = sum(1 for g in groups if g.chosen_by == BY_YOU)
    pairs = load_groups(index, head_id, facts=facts, choices=False, pairs=True)
    summary.pairs = len(pairs)
    summary.photos -= sum(len(pair.members) - 1 for pair in pairs)
    counted = set()
    for member in load_flagged(index, head_id, groups=groups, facts=facts, pairs=pairs):
        capture = grouping.capture_of(member.path)  # a RAW+JPEG pair is one photo
        for flag in member.flags if capture not in counted else ():
            summary.flagged[flag] = summary.flagged.get(flag, 0) + 1
        counted.add(capture)


def _captures(members) -> int:
    """How many photos: the files of one capture (a RAW and its JPEG) count once."""
    return len({grouping.capture_of(m.path) for m in members})


# --- readers ---------------------------------------------------------------------------


def load_groups(
    index: Index, head_id: str | None = None, under: Sequence[str] = (), facts: dict | None = None, choices: bool = True,
    pairs: bool = False, ids: Sequence[int] | None = None,
) -> list[Group]:
    """Stored groups, keeper first, each member with its facts and flags; `under`: only
    groups with a photo inside these folders. Works on a read-only index.

    With `choices`, each group's keeper is the one a person chose as the photos' sidecars
    show it now (ownership.py), whenever they chose it: a rating given after the cull that
    grouped the photos counts, and a choice taken back gives our own pick back. Without,
    the keepers as the last cull stored them (for callers that weigh choices of their own,
    such as darktable's ratings). A RAW+JPEG pair is one photo, no group: `pairs` loads
    those instead (their files share one verdict). `ids`: only these groups (the review
    shows one at a time)."""
    rows = index.culling.groups(ids=ids)
    if facts is None:
        facts = index.culling.member_facts(None if ids is None else [i for row in rows for i in row.members], head_id)
    target, listings = SidecarTarget(roots=tuple(index.roots())), {}
    groups = []
    for row in rows:
        if (row.kind == PAIR) != pairs:
            continue
        members = _members(row.kind, [facts[i] for i in row.members if i in facts])
        if len(members) < 2 or (under and not any(inside_roots(m.path, under) for m in members)):
            continue
        flagged = keeper.flagged_members(row.kind, members)
        keeper_member = next((m for m in flagged if m.image_id == row.keeper_id), flagged[0])
        rest = sorted((m for m in flagged if m is not keeper_member), key=lambda m: (m.taken_at or "", m.path))
        group = Group(row.id, row.kind, (keeper_member, *rest), keeper_member.image_id, row.reason or "", row.chosen_by or "")
        groups.append(current_choice(index, group, facts, target, listings) if choices else group)
    return groups


def current_choice(index: Index, group: Group, facts: dict, target, listings: dict) -> Group:
    """The group with the keeper a person's choice makes it now; our own pick when a choice
    stored with it has been taken back since."""
    if group.chosen_by == BY_YOU:
        group = ours_again(group)
    return _person_choice(index, group, target, listings)


def ours_again(group: Group) -> Group:
    """Our own pick for the group (keeper.decide), whoever chose its stored keeper."""
    return keeper.decide(group.id, group.kind, group.members)


def load_flagged(
    index: Index, head_id: str | None = None, under: Sequence[str] = (), groups: list[Group] | None = None,
    facts: dict | None = None, pairs: list[Group] | None = None,
) -> list[Member]:
    """Every present photo with a technical failure (in a group: judged against its group;
    the files of a RAW+JPEG pair by their pair, `pairs` as load_groups(pairs=True) gives them)."""
    facts = index.culling.member_facts(None, head_id) if facts is None else facts
    groups = load_groups(index, head_id, facts=facts) if groups is None else groups
    pairs = load_groups(index, head_id, facts=facts, choices=False, pairs=True) if pairs is None else pairs
    grouped = {m.image_id: m for g in [*groups, *pairs] for m in g.members}
    flagged = []
    for image_id in sorted(facts):
        member = grouped.get(image_id) or _alone(_member(facts[image_id]))
        if member.flags and (not under or inside_roots(member.path, under)):
            flagged.append(member)
    return flagged


def _alone(member: Member) -> Member:
    """A photo in no group, with the flags it earns on its own."""
    return replace(member, flags=keeper.flags_of(member))
