"""digiKam: star ratings, and culling's groups, keepers and flags, written straight into
digiKam's database (`aes-index digikam sync|cull|undo`) through the one apply loop, with
targets/digikam.py as the target. The other way into digiKam is the sidecar route
(`apply-ratings`, `apply-culling`, then digiKam's "Read from sidecar files")."""

from __future__ import annotations

from pathlib import Path

from .. import ownership
from ..index.store import Index
from ..ownership import Owner
from ..targets.digikam import TARGET, DigikamTarget, image_key
from ..targets.digikam_db import LOCK_TIMEOUT_S, followers_of, leader_of
from ..targets.protocol import Marks, UndoResult
from ..writing import apply as targets
from .culling.marks import MARK_FIELDS, MarkOptions, decide_marks, load_culling, plan_marks, with_choices
from .culling.model import Group


def sync(index: Index, db_path: Path, options, head_id: str, lock_timeout: float = LOCK_TIMEOUT_S) -> targets.ApplyReport:
    """Write the policy's stars (and tags) into digiKam's database for every matched photo."""
    from .rating import plan

    target = DigikamTarget(db_path=db_path, lock_timeout=lock_timeout)
    return targets.apply(index, target, plan(index, head_id, options.policy), options, head_id, "digikam-sync")


def undo(index: Index, db_path: Path, run_id: int | None = None, dry_run: bool = False,
         lock_timeout: float = LOCK_TIMEOUT_S) -> tuple[str | None, list[UndoResult]]:
    """Put back the ratings and tags a sync run wrote (default: the latest); -> (backup, results).

    A rating a person changed since stays ("kept-manual"); our tags are restored either way,
    as undo does for sidecars. Runs are undone newest first ("superseded" otherwise).
    """
    target = DigikamTarget(db_path=db_path, lock_timeout=lock_timeout)
    actions = index.journal.plan_undo(run_id, (TARGET,), target.place_prefix)
    if not actions:
        return None, []
    results = targets.undo(index, {TARGET: target}, actions, dry_run)
    return target.extra.get("backup"), results


def cull(index: Index, db_path: Path, options: MarkOptions, under=(), lock_timeout: float = LOCK_TIMEOUT_S) -> targets.MarkReport:
    """Culling's groups, keepers and flags into digiKam's database (`aes-index digikam cull`).

    Each group's members are grouped under its keeper as digiKam groups them, album by
    album: members in another album than the keeper's are grouped there under the best of
    them and tagged "keeper in another folder" (culling.marks.folder_groups), so no album
    loses its photos to a leader elsewhere. The keeper gets the pick label "Accepted",
    flags become our tags, and with options.reject the flagged photos beside an unflagged
    keeper get "Rejected". A person's pick label stays, and a
    person's choice in a group (pick label or rating) makes that photo the keeper; a group
    a person made (one of its photos grouped, or leading a group, not by us) is left whole.
    Marks of ours on photos no longer in a group are taken back. `undo` reverses the run.
    """
    target = DigikamTarget(db_path=db_path, lock_timeout=lock_timeout)
    groups, flagged = load_culling(index, under)

    def plan(target: DigikamTarget) -> list[Marks]:
        stale = [path for path, _ in index.journal.open_fields(TARGET, MARK_FIELDS, target.place_prefix)]
        person_grouped = lambda group: _grouped_by_a_person(index, target, group)  # noqa: E731
        marks = plan_marks(index, target, with_choices(index, target, groups, options), flagged, options, stale, person_grouped)
        target.extra["matched"] = sum(1 for item in marks if item.path in target._by_path)
        return marks

    return targets.apply_marks(index, target, plan, decide_marks, options, "digikam-cull", options.record())


def _grouped_by_a_person(index: Index, target: DigikamTarget, group: Group) -> bool:
    """Whether a photo of `group` is grouped under another, or leads others, by a
    grouping that is not ours (the journal's last "group" write says which are)."""
    ours = lambda image_id: {index.journal.last_written(TARGET, image_key(target.db_path, image_id), "group")}  # noqa: E731
    for member in group.members:
        for place in target.places(member.path):
            if ownership.owner(leader_of(target.conn, place.ref), ours(place.ref), "group") is Owner.PERSON:
                return True
            if any(ownership.owner(place.ref, ours(follower), "group") is Owner.PERSON for follower in followers_of(target.conn, place.ref)):
                return True
    return False


