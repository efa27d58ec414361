"""XMP sidecars (what digiKam, and darktable on import, read): the "xmp" target.

The sidecar editor itself is aes_index.formats.xmp (only our fields change, every other byte
survives); this adapter says which sidecars a photo has, and journals and undoes writes.

Culling's marks (`mark`) go into the same sidecars in one write: digiKam:PickLabel with
our marker aes:Pick, our tags "keeper"/"blurry"/..., and for a reject xmp:Rating -1 with
our marker aes:Reject. Each field changed is its own journal row ("pick", "tags",
"rating"), and `undo` puts each back on its own; undoing them all gives back the bytes.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from .. import ownership
from ..formats import xmp
from ..atomic import refuse_protected, sha256_hex
from ..errors import AesIndexError
from ..values import CULL_TAGS, REJECTED
from .protocol import (
    ChangedSinceRead, CullState, Marks, Place, Reading, Target, UndoAction, UndoResult, Wanted, Write, check_inside, kept_manual, restored,
)



@dataclass
class SidecarTarget(Target):
    roots: tuple[str, ...] = ()  # the library's folders: no sidecar outside them is written
    name: str = "xmp"

    def places(self, photo_path: str) -> list[Place]:
        return [Place(str(sidecar), photo_path) for sidecar in xmp.rating_sidecars(Path(photo_path))]

    def read(self, place: Place) -> Reading:
        check_inside(place.key, self.roots)
        info = xmp.read_sidecar(Path(place.key))
        marks = info.marks or xmp.CullMarks()
        cull = CullState(
            pick=info.pick, marked_pick=marks.pick, marked_reject=info.our_reject,
            tags=tuple(tag for tag in info.tags if tag in CULL_TAGS),
        )
        return Reading(place, info.rating, token=info.content_hash, detail=info, ours=info.our_rating, cull=cull)

    def write(self, reading: Reading, wanted: Wanted, dry_run: bool) -> Write | None:
        info: xmp.SidecarInfo = reading.detail
        fields = xmp.AesFields(
            score=round(wanted.score, 6), percentile=round(wanted.percentile, 2), head_id=wanted.head_id, stars=wanted.stars
        )
        tags = [*other_tags(info.tags), star_tag(wanted.stars)] if wanted.tags else None
        try:
            outcome = xmp.write_sidecar(
                Path(reading.place.key), rating=wanted.stars, aes=fields, tags=tags, dry_run=dry_run, expect_hash=reading.token
            )
        except xmp.SidecarChanged as exc:
            raise ChangedSinceRead(str(exc)) from exc
        return journal_entry(reading.place.image_path, outcome) if outcome.changed else None

    def mark(self, reading: Reading, changes: dict, marks: Marks, dry_run: bool) -> list[Write]:
        """One write of culling's `changes`, journaled one row per field."""
        info: xmp.SidecarInfo = reading.detail
        before = info.marks or xmp.CullMarks()
        markers = xmp.CullMarks(
            pick=changes.get("pick", before.pick),
            reject=changes["rating"] == REJECTED if "rating" in changes else before.reject,
        )
        tags = None
        if "tags" in changes:
            tags = [tag for tag in info.tags if tag not in CULL_TAGS] + list(changes["tags"])
        outcome = self._write_fields(reading, changes, before, markers, dry_run, tags=tags)
        if not outcome.changed:
            return []
        values = {
            "pick": (info.pick, changes.get("pick"), {"marked_pick": before.pick}),
            "rating": (info.rating, changes.get("rating"), {"marked_reject": before.reject}),
            "tags": (None, None, {"cull_tags": list(reading.cull.tags), "tag_fields": list(outcome.tag_fields)}),
        }
        return self._writes(reading, info, outcome, values, changes)

    def write_decision(self, reading: Reading, changes: dict, dry_run: bool) -> list[Write]:
        """A person's rating and pick label (`aes-index review`), one write, journaled one
        row per field: xmp:Rating and digiKam:PickLabel as they decided, and our markers
        of those fields (aes:Stars, aes:Pick, aes:Reject) gone, so that no reader, this
        index or another, takes their value for ours."""
        info: xmp.SidecarInfo = reading.detail
        before = info.marks or xmp.CullMarks()
        markers = xmp.CullMarks(
            pick=None if "pick" in changes else before.pick, reject=False if "rating" in changes else before.reject,
        )
        aes = xmp.KEEP
        if "rating" in changes and info.aes is not None and info.aes.stars is not None:
            aes = dataclasses.replace(info.aes, stars=None)  # aes:Stars equal to xmp:Rating would say "ours"
        outcome = self._write_fields(reading, changes, before, markers, dry_run, aes=aes)
        if not outcome.changed:
            return []
        values = {
            "pick": (info.pick, changes.get("pick"), {"marked_pick": before.pick}),
            "rating": (info.rating, changes.get("rating"), {
                "marked_reject": before.reject, **({"aes": dataclasses.asdict(info.aes)} if aes is not xmp.KEEP else {}),
            }),
        }
        return self._writes(reading, info, outcome, values, changes)

    @staticmethod
    def _write_fields(reading: Reading, changes: dict, before, markers, dry_run: bool, **fields):
        """Write the rating and pick label `changes` names, our markers as `markers` says
        (unchanged when they equal `before`), and `fields` (tags, aes), against the sidecar
        as `reading` read it."""
        try:
            return xmp.write_sidecar(
                Path(reading.place.key), rating=changes.get("rating", xmp.KEEP), pick=changes.get("pick", xmp.KEEP),
                marks=xmp.KEEP if markers == before else (None if markers == xmp.CullMarks() else markers),
                dry_run=dry_run, expect_hash=reading.token, **fields,
            )
        except xmp.SidecarChanged as exc:
            raise ChangedSinceRead(str(exc)) from exc

    def _writes(self, reading: Reading, info, outcome, values: dict, changes: dict) -> list[Write]:
        """The journal's rows of one sidecar write: one per changed field, with what it held."""
        common = {"declared": list(outcome.declared)} if outcome.declared else {}
        return [
            Write(
                target=self.name, place=reading.place.key, image_path=reading.place.image_path, old=old, new=new,
                created_file=outcome.created, content_hash_after=outcome.content_hash, prior={**prior, **common}, field=name,
                hash_before=info.content_hash,
            )
            for name, (old, new, prior) in values.items()
            if name in changes
        ]

    def landed(self, action: UndoAction) -> bool | None:
        path = action.target_path
        try:
            now = xmp.read_sidecar(path)
        except AesIndexError:
            return True  # unreadable now: a person's tool wrote it since; keep ours recognisable
        if now.content_hash == action.hash_after:
            return True
        if now.content_hash == action.hash_before:  # None == None: still no sidecar
            return False
        value = {"rating": now.rating, "pick": now.pick}.get(action.field, action.new)
        return value == action.new

    def undo(self, action: UndoAction, dry_run: bool) -> UndoResult:
        path = action.target_path
        check_inside(str(path), self.roots)
        if action.created_file and action.hash_after is not None and _has_hash(path, action.hash_after):
            if not dry_run:
                refuse_protected(path)  # write-protected since: the user keeps it
                path.unlink()
            return UndoResult(action, "deleted", "removed the sidecar we had created")
        current = xmp.read_sidecar(path)
        if not current.exists:
            return UndoResult(action, "missing", "the sidecar is gone")
        if action.field in ("pick", "tags"):
            return self._undo_mark(path, current, action, dry_run)
        manual = not ownership.still_ours(current.rating, action.expected)
        emptied = _restore(
            path, action, current, dry_run,
            rating=xmp.KEEP if manual else action.restore,
            aes=_prior_aes(action.prior),
            tags=None if "tags" not in action.prior else _stars_undone_keeping_culling(action.prior["tags"], current.tags),
            tag_fields=tuple(action.prior.get("tag_fields", ())),
            undeclare=tuple(action.prior.get("declared", ())),
            marks=_restored_marks(current, action.prior),
        )
        if emptied:
            return emptied
        return kept_manual(action, current.rating) if manual else restored(action)

    def _undo_mark(self, path: Path, current: xmp.SidecarInfo, action: UndoAction, dry_run: bool) -> UndoResult:
        """Put back a culling pick label (if it still holds ours) or our culling tags."""
        prior, tags, pick = action.prior, None, xmp.KEEP
        if action.field == "tags":
            tags = [tag for tag in current.tags if tag not in CULL_TAGS] + list(prior.get("cull_tags", ()))
        manual = action.field == "pick" and not ownership.still_ours(current.pick, action.expected)
        if action.field == "pick" and not manual:
            pick = action.restore
        emptied = _restore(
            path, action, current, dry_run, pick=pick, tags=tags,
            tag_fields=tuple(prior.get("tag_fields", xmp.DEFAULT_TAG_FIELDS)),
            marks=_restored_marks(current, prior), undeclare=tuple(prior.get("declared", ())),
        )
        if emptied:
            return emptied
        if manual:
            return UndoResult(action, "kept-manual", f"pick label is {_show(current.pick)} now, not our {_show(action.expected)}: left as is")
        if action.field == "pick":
            return UndoResult(action, "restored", f"pick label {_show(action.expected)} -> {_show(action.restore)}")
        return UndoResult(action, "restored", "culling tags put back")


def _restore(path: Path, action: UndoAction, current: xmp.SidecarInfo, dry_run: bool, **fields) -> UndoResult | None:
    """Write the undone `fields` back into the sidecar; or, when the sidecar is one we
    created and nothing at all would be left in it (ours gone, nobody else's ever added),
    remove it instead: whichever run is undone last, a sidecar we created does not stay
    behind empty. Returns the removal's result, None after a plain restore."""
    outcome = xmp.write_sidecar(path, dry_run=True, expect_hash=current.content_hash, **fields)
    if action.file_is_ours and outcome.after.holds_nothing:
        if not dry_run:
            refuse_protected(path)  # write-protected since: the user keeps it
            if not _has_hash(path, current.content_hash):
                raise ChangedSinceRead(f"{path}: changed since it was read (by a person?); left as it is")
            path.unlink()
        return UndoResult(action, "deleted", "removed the sidecar we had created: nothing was left in it")
    if not dry_run and outcome.changed:
        xmp.write_sidecar(path, expect_hash=current.content_hash, **fields)
    return None


def journal_entry(image_path: str, outcome: xmp.WriteOutcome) -> Write:
    """A sidecar write for the journal: the prior values only of what the write touched,
    so undo restores exactly those (and in the same tag fields)."""
    prior: dict = {}
    if "aes" in outcome.touched:
        prior["aes"] = None if outcome.prior.aes is None else dataclasses.asdict(outcome.prior.aes)
    if "tags" in outcome.touched:
        prior["tags"] = list(outcome.prior.tags)
        prior["tag_fields"] = list(outcome.tag_fields)
    if outcome.declared:
        prior["declared"] = list(outcome.declared)
    return Write(
        target="xmp", place=str(outcome.path), image_path=str(image_path), old=outcome.prior.rating,
        new=outcome.after.rating, created_file=outcome.created, content_hash_after=outcome.content_hash, prior=prior,
        hash_before=outcome.prior.content_hash,
    )


def other_tags(tags) -> list[str]:
    """Our tags that are not star tags (attribute tags): a rating write keeps them."""
    return [t for t in tags if not is_star_tag(t)]


def star_tag(stars: int) -> str:
    """Our tag for a star level: "1 star", "4 stars", "rejected"."""
    if stars == REJECTED:
        return "rejected"
    return "1 star" if stars == 1 else f"{stars} stars"


def is_star_tag(tag: str) -> bool:
    """Whether one of our tags is a star tag; "1 stars", as versions before 0.2 spelled it,
    is one too, so their tags are replaced and undone like today's."""
    return tag == "rejected" or re.fullmatch(r"-?\d+ stars?", tag) is not None


def _restored_marks(current: xmp.SidecarInfo, prior: dict):
    """Our culling markers with the component an undone row wrote put back (the other
    component may belong to another run's write, which keeps it)."""
    if "marked_pick" not in prior and "marked_reject" not in prior:
        return xmp.KEEP
    now = current.marks or xmp.CullMarks()
    marks = xmp.CullMarks(pick=prior.get("marked_pick", now.pick), reject=prior.get("marked_reject", now.reject))
    if marks == now:
        return xmp.KEEP
    return None if marks == xmp.CullMarks() else marks


def _show(value) -> str:
    return "none" if value is None else str(value)


def _stars_undone_keeping_culling(prior_tags, current_tags) -> tuple[str, ...]:
    """Our tags as a star run found them, with culling's tags as they are now: undoing
    stars must neither strip a later cull's "keeper" nor bring back an earlier one's
    (culling's tags have their own journal rows, field "tags")."""
    return tuple([t for t in prior_tags if t not in CULL_TAGS] + [t for t in current_tags if t in CULL_TAGS])


def _prior_aes(prior: dict):
    if "aes" not in prior:
        return xmp.KEEP
    return None if prior["aes"] is None else xmp.AesFields(**prior["aes"])


def _has_hash(path: Path, expected: str) -> bool:
    """Whether the file still holds exactly the bytes we wrote (sidecar-sized files only)."""
    try:
        if path.stat().st_size > xmp.MAX_SIDECAR_BYTES:
            return False
        return sha256_hex(path.read_bytes()) == expected
    except FileNotFoundError:
        return False
