"""The undo journal: every rating we write, per target, in the index database.

One row per write in table ``rating_writes``. It serves two rules:

- manual ratings win: `last_written` is the value we wrote last (and haven't undone) to a
  target; a photo that holds anything else was rated by a person (see ratings.decide);
- undo: `plan_undo` lists, for the latest run (or a given one), what to put back;
  `execute_undo` does it for the file targets ("xmp", "exif") and marks rows undone.

Targets: "xmp" (target_path: the sidecar), "exif" (the JPEG), "darktable" and "digikam"
(their libraries; recorded here too, undone by their own modules). `run_id` is any integer
naming one apply run; `new_run_id` hands out the next one.

Undo is careful in the same way as writing: a rating that is no longer the one we wrote
was changed by a person since, and stays (reported as "kept-manual"); a sidecar we created
is deleted only when its bytes are still exactly what we wrote, otherwise only our fields
come out of it. Runs are undone newest first: undoing a run whose target a later run wrote
again is refused for that target ("superseded") until the later run is undone.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlite_utils

from aes_index import exif_rating, xmp
from aes_index.atomic import sha256_hex
from aes_index.errors import AesIndexError

TABLE = "rating_writes"
TARGETS = ("xmp", "exif", "darktable", "digikam")
FILE_TARGETS = ("xmp", "exif")

_COLUMNS = {
    "id": int,
    "run_id": int,
    "image_path": str,
    "target": str,
    "target_path": str,
    "old_rating": int,  # NULL: there was no rating
    "new_rating": int,  # NULL: we removed the rating (or left it alone)
    "created_file": bool,
    "content_hash_after": str,  # sha256 of the file right after our write
    "prior_json": str,  # our own fields before the write (xmp: aes fields, tags)
    "written_at": str,
    "undone_at": str,
    "undo_note": str,  # what undo did: restored / deleted / kept-manual / missing
}
_NOT_NULL = ("run_id", "image_path", "target", "target_path", "created_file", "written_at")


def ensure_tables(db: sqlite_utils.Database) -> None:
    """Create the journal table and its indexes; safe to call on every start."""
    table = db[TABLE]
    if not table.exists():
        table.create(_COLUMNS, pk="id", not_null=_NOT_NULL, if_not_exists=True)
    missing = {name: kind for name, kind in _COLUMNS.items() if name not in table.columns_dict}
    for name, kind in missing.items():  # older journal: add what later versions record
        table.add_column(name, kind)
    table.create_index(["target", "target_path"], if_not_exists=True)
    table.create_index(["run_id"], if_not_exists=True)


def new_run_id(db: sqlite_utils.Database) -> int:
    """An unused run id: one more than the largest recorded."""
    row = db.execute(f"SELECT MAX(run_id) FROM {TABLE}").fetchone()
    return (row[0] or 0) + 1


def record(
    db: sqlite_utils.Database,
    *,
    run_id: int,
    image_path: Path | str,
    target: str,
    target_path: Path | str,
    old_rating: int | None,
    new_rating: int | None,
    created_file: bool = False,
    content_hash_after: str | None = None,
    prior: dict | None = None,
) -> int:
    """Journal one write; returns the row id. `prior` holds our fields before (JSON-able)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    row = {
        "run_id": run_id,
        "image_path": str(image_path),
        "target": target,
        "target_path": str(target_path),
        "old_rating": old_rating,
        "new_rating": new_rating,
        "created_file": bool(created_file),
        "content_hash_after": content_hash_after,
        "prior_json": None if prior is None else json.dumps(prior, sort_keys=True),
        "written_at": _now(),
    }
    return db[TABLE].insert(row).last_pk


def record_xmp(
    db: sqlite_utils.Database, run_id: int, image_path: Path | str, outcome: xmp.WriteOutcome
) -> int:
    """Journal a sidecar write from what `xmp.write_sidecar` returned.

    Our fields' prior values are kept only for what the write touched, so that undo
    restores exactly those (and in the same tag fields).
    """
    prior: dict = {}
    if "aes" in outcome.touched:
        prior["aes"] = None if outcome.prior.aes is None else dataclasses.asdict(outcome.prior.aes)
    if "tags" in outcome.touched:
        prior["tags"] = list(outcome.prior.tags)
        prior["tag_fields"] = list(outcome.tag_fields)
    return record(
        db,
        run_id=run_id,
        image_path=image_path,
        target="xmp",
        target_path=outcome.path,
        old_rating=outcome.prior.rating,
        new_rating=outcome.after.rating,
        created_file=outcome.created,
        content_hash_after=outcome.content_hash,
        prior=prior,
    )


def record_exif(
    db: sqlite_utils.Database, run_id: int, outcome: exif_rating.ExifWriteOutcome
) -> int:
    """Journal an EXIF write from what `exif_rating.write_exif_rating` returned."""
    return record(
        db,
        run_id=run_id,
        image_path=outcome.path,
        target="exif",
        target_path=outcome.path,
        old_rating=outcome.prior,
        new_rating=outcome.rating,
        content_hash_after=outcome.content_hash,
    )


def last_written(db: sqlite_utils.Database, target: str, target_path: Path | str) -> int | None:
    """The rating we wrote last to this target and haven't undone; None if none.

    Only writes that changed the rating count: a write of tags or of our own fields
    leaves the rating as it was, and that rating may well be a person's.
    """
    row = db.execute(
        f"SELECT new_rating FROM {TABLE} WHERE target = ? AND target_path = ? "
        "AND undone_at IS NULL AND old_rating IS NOT new_rating ORDER BY id DESC LIMIT 1",
        [target, str(target_path)],
    ).fetchone()
    return None if row is None else row[0]


# --------------------------------------------------------------------------- undo


@dataclass(frozen=True)
class UndoAction:
    """What undoing one journal row means."""

    row_id: int
    run_id: int
    target: str
    target_path: Path
    image_path: Path
    restore_rating: int | None  # the rating before our write (None: remove it)
    expected_rating: int | None  # what we wrote; anything else now means a manual change
    delete_if_hash: str | None  # we created the file: delete it if its hash is still this
    prior_aes: xmp.AesFields | xmp.Keep | None = xmp.KEEP  # KEEP: not recorded, leave
    prior_tags: tuple[str, ...] | None = None  # None: not recorded (leave tags alone)
    tag_fields: tuple[str, ...] = ()  # where the tags were written
    superseded_by_run: int | None = None  # a later run wrote this target again


@dataclass(frozen=True)
class UndoResult:
    action: UndoAction
    status: str  # restored | deleted | kept-manual | missing | superseded | unsupported | failed
    detail: str = ""

    @property
    def done(self) -> bool:
        """Whether the row counts as undone (and is marked so)."""
        return self.status in ("restored", "deleted", "kept-manual", "missing")


def latest_run(db: sqlite_utils.Database, targets: Sequence[str] = TARGETS) -> int | None:
    """The newest run that still has writes to `targets` not undone; None when there is nothing to undo."""
    marks = ",".join("?" * len(targets))
    row = db.execute(
        f"SELECT MAX(run_id) FROM {TABLE} WHERE undone_at IS NULL AND target IN ({marks})", list(targets)
    ).fetchone()
    return row[0]


def plan_undo(
    db: sqlite_utils.Database, run_id: int | None = None, targets: Sequence[str] = TARGETS
) -> list[UndoAction]:
    """The undo actions for `run_id` (default: the latest run), newest write first.

    Only writes to `targets`: `aes-index ratings undo` handles the files (xmp, exif);
    darktable and digiKam writes are undone by their own commands, and their runs must
    not stand in the way. Plans only; nothing is changed. Rows already undone are left out.
    """
    if run_id is None:
        run_id = latest_run(db, targets)
        if run_id is None:
            return []
    marks = ",".join("?" * len(targets))
    rows = db.execute(
        f"SELECT * FROM {TABLE} WHERE run_id = ? AND undone_at IS NULL AND target IN ({marks}) ORDER BY id DESC",
        [run_id, *targets],
    )
    names = [d[0] for d in rows.description]
    return [_action(db, dict(zip(names, values, strict=True))) for values in rows.fetchall()]


def _action(db: sqlite_utils.Database, row: dict) -> UndoAction:
    prior = json.loads(row["prior_json"]) if row["prior_json"] else {}
    later = db.execute(
        f"SELECT MIN(run_id) FROM {TABLE} WHERE target = ? AND target_path = ? AND id > ? "
        "AND undone_at IS NULL AND run_id != ?",
        [row["target"], row["target_path"], row["id"], row["run_id"]],
    ).fetchone()[0]
    return UndoAction(
        row_id=row["id"],
        run_id=row["run_id"],
        target=row["target"],
        target_path=Path(row["target_path"]),
        image_path=Path(row["image_path"]),
        restore_rating=row["old_rating"],
        expected_rating=row["new_rating"],
        delete_if_hash=row["content_hash_after"] if row["created_file"] else None,
        prior_aes=_prior_aes(prior),
        prior_tags=None if "tags" not in prior else tuple(prior["tags"]),
        tag_fields=tuple(prior.get("tag_fields", ())),
        superseded_by_run=later,
    )


def _prior_aes(prior: dict) -> xmp.AesFields | xmp.Keep | None:
    if "aes" not in prior:
        return xmp.KEEP
    return None if prior["aes"] is None else xmp.AesFields(**prior["aes"])


def execute_undo(
    db: sqlite_utils.Database, actions: Iterable[UndoAction], *, dry_run: bool = False
) -> list[UndoResult]:
    """Carry out planned undo actions for the xmp and exif targets.

    Each row that is dealt with (restored, deleted, kept because of a manual change, or
    whose file is gone) is marked undone, unless dry_run. Others are reported and left
    for another try: "superseded" (undo the later run first), "unsupported" (darktable /
    digiKam targets are undone by their own modules), "failed" (with the one-line error).
    """
    results = []
    for action in actions:
        result = _undo_one(action, dry_run)
        if result.done and not dry_run:
            # Marked one by one, so an interrupted undo resumes where it stopped.
            db[TABLE].update(action.row_id, {"undone_at": _now(), "undo_note": result.status})
        results.append(result)
    return results


def _undo_one(action: UndoAction, dry_run: bool) -> UndoResult:
    if action.superseded_by_run is not None:
        return UndoResult(
            action, "superseded", f"run {action.superseded_by_run} wrote it again; undo that first"
        )
    undo = {"xmp": _undo_xmp, "exif": _undo_exif}.get(action.target)
    if undo is None:
        return UndoResult(
            action, "unsupported", f"{action.target} ratings are undone by their own module"
        )
    try:
        return undo(action, dry_run)
    except (AesIndexError, OSError) as err:
        return UndoResult(action, "failed", " ".join(str(err).split()))


def _undo_xmp(action: UndoAction, dry_run: bool) -> UndoResult:
    path = action.target_path
    if action.delete_if_hash is not None and _has_hash(path, action.delete_if_hash):
        if not dry_run:
            path.unlink()
        return UndoResult(action, "deleted", "removed the sidecar we had created")
    current = xmp.read_sidecar(path)
    if not current.exists:
        return UndoResult(action, "missing", "the sidecar is gone")
    manual = current.rating != action.expected_rating
    xmp.write_sidecar(
        path,
        rating=xmp.KEEP if manual else action.restore_rating,
        aes=action.prior_aes,
        tags=action.prior_tags,
        tag_fields=action.tag_fields,
        dry_run=dry_run,
    )
    if manual:
        return UndoResult(action, "kept-manual", _manual_detail(current.rating, action))
    return _restored(action)


def _undo_exif(action: UndoAction, dry_run: bool) -> UndoResult:
    path = action.target_path
    if not path.exists():
        return UndoResult(action, "missing", "the photo is gone")
    current = exif_rating.read_exif_rating(path)
    if current != action.expected_rating:
        return UndoResult(action, "kept-manual", _manual_detail(current, action))
    exif_rating.write_exif_rating(path, action.restore_rating, dry_run=dry_run)
    return _restored(action)


def _restored(action: UndoAction) -> UndoResult:
    change = f"rating {_show(action.expected_rating)} -> {_show(action.restore_rating)}"
    return UndoResult(action, "restored", change)


def _has_hash(path: Path, expected: str) -> bool:
    """Whether the file still holds exactly the bytes we wrote (sidecar-sized files only)."""
    try:
        if path.stat().st_size > xmp.MAX_SIDECAR_BYTES:
            return False
        return sha256_hex(path.read_bytes()) == expected
    except FileNotFoundError:
        return False


def _manual_detail(current: int | None, action: UndoAction) -> str:
    return f"rating is {_show(current)} now, not our {_show(action.expected_rating)}: left as is"


def _show(rating: int | None) -> str:
    return "none" if rating is None else str(rating)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
