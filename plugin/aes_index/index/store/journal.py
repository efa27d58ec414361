"""The undo journal: every value we write into a photo manager's target, in the index.

Part of the store layer: the only SQL about table ``rating_writes`` lives here, and it
knows nothing of sidecars, JPEGs or photo managers (the rating targets interpret what a
row's ``prior`` holds). One row per write, for two rules:

- manual values win: `last_written` is the value we wrote last (and haven't undone) to a
  place; a place that holds anything else was changed by a person (ratings.decide);
- undo: `plan_undo` lists, for a run (or for some places), what to put back;
  `mark_undone` closes rows the undo loop (targets/apply.py) dealt with.

A *place* is one spot a photo's value lives in a target, named by ``target_path``: a
sidecar's path ("xmp"), a JPEG's path ("exif"), "<photo path>#<duplicate>" ("darktable"),
"<digikam4.db path>#<image id>" ("digikam"). ``field`` says which value: "rating" today;
culling's picks and groups are further fields over the same rows.

Runs are undone newest first: undoing a run whose place a later run wrote again is
refused for that place ("superseded") until the later run is undone.

A run of ownership.PERSONS_COMMANDS (`aes-index review`'s decisions) writes a person's own
value on their behalf: its rows undo like any, but what they set is the person's, not
ours: the newest write of a field being theirs, nothing of ours stands there
(`last_written` None), and `persons_value` says what they set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import sqlite_utils

from ...ownership import PERSONS_COMMANDS
from ...targets.protocol import RATING, UndoAction, Write

TABLE = "rating_writes"
TARGETS = ("xmp", "exif", "darktable", "digikam")
FILE_TARGETS = ("xmp", "exif")

COLUMNS = {
    "id": int,
    "run_id": int,
    "image_path": str,
    "target": str,
    "target_path": str,  # the place (see above)
    "old_rating": int,  # the value before our write; NULL: there was none
    "new_rating": int,  # the value we wrote; NULL: we removed it
    "created_file": bool,
    "content_hash_after": str,  # sha256 of the file right after our write
    "prior_json": str,  # the target's own fields before the write (xmp: aes fields, tags)
    "written_at": str,
    "undone_at": str,
    "undo_note": str,  # what undo did: restored / deleted / kept-manual / missing
    "field": str,  # which value: "rating" (later: culling's "pick", "group")
    # Write-ahead: a row is recorded "pending" before its write, with the place's state
    # before (hash_before: a file's sha256, None when there was no file), and becomes done
    # (NULL) once the write has landed. A row still pending after a crash is settled by
    # `reconcile` (targets/apply.py), which reads the place: landed, or never written.
    "state": str,
    "hash_before": str,
}
PENDING = "pending"
NOT_WRITTEN = "not written"  # the undo_note of a pending row whose write never landed
# Whether a row's run wrote on a person's behalf (SQL; its parameters are PERSONS_COMMANDS)
BY_PERSON = f"run_id IN (SELECT id FROM runs WHERE command IN ({','.join('?' * len(PERSONS_COMMANDS))}))"
NOT_NULL = ("run_id", "image_path", "target", "target_path", "created_file", "written_at")


def create_table(db: sqlite_utils.Database) -> None:
    """The journal's table and indexes, as the store's migrations create and extend them."""
    table = db[TABLE]
    if not table.exists():
        table.create(COLUMNS, pk="id", not_null=NOT_NULL, if_not_exists=True)
    for name, kind in COLUMNS.items():
        if name not in table.columns_dict:  # a journal from an older version
            table.add_column(name, kind)
    table.create_index(["target", "target_path"], if_not_exists=True)
    table.create_index(["run_id"], if_not_exists=True)
    table.create_index(["image_path"], if_not_exists=True)  # last_rating_for_image, once per grouped photo


# --------------------------------------------------------------------------- undo plans


def _rows(db: sqlite_utils.Database, where: str, params: list) -> list[dict]:
    cursor = db.execute(f"SELECT * FROM {TABLE} WHERE {where}", params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def _action(db: sqlite_utils.Database, row: dict) -> UndoAction:
    # Per field: culling's pick label or group of a place does not stand in the way of
    # undoing a rating written there, nor the other way round.
    later = db.execute(
        f"SELECT MIN(run_id) FROM {TABLE} WHERE target = ? AND target_path = ? AND id > ? "
        "AND undone_at IS NULL AND run_id != ? AND IFNULL(field, ?) = ?",
        [row["target"], row["target_path"], row["id"], row["run_id"], RATING, row["field"] or RATING],
    ).fetchone()[0]
    return _merged([row], superseded_by_run=later, file_is_ours=_file_is_ours(db, row["target"], row["target_path"]))


def _file_is_ours(db: sqlite_utils.Database, target: str, place: str) -> bool:
    """Whether the file at `place` is one a write of ours created (by any run, whichever
    wrote it first) and no undo has deleted since: once nothing is left in it, undo may
    remove it, whatever the order in which the runs that wrote it are undone."""
    if target not in FILE_TARGETS:
        return False
    created = db.execute(
        f"SELECT MAX(id) FROM {TABLE} WHERE target = ? AND target_path = ? AND created_file", [target, place]
    ).fetchone()[0]
    if created is None:
        return False
    deleted = db.execute(
        f"SELECT 1 FROM {TABLE} WHERE target = ? AND target_path = ? AND id >= ? AND undo_note = 'deleted' LIMIT 1",
        [target, place, created],
    ).fetchone()
    return deleted is None


def _merged(rows: list[dict], superseded_by_run: int | None = None, file_is_ours: bool = False) -> UndoAction:
    """One action for a place's open writes, oldest first: back to the value before the
    first, if the place still holds what the last one wrote."""
    first, last = rows[0], rows[-1]
    return UndoAction(
        row_ids=tuple(row["id"] for row in rows),
        run_id=last["run_id"],
        target=last["target"],
        place=last["target_path"],
        image_path=last["image_path"],
        restore=first["old_rating"],
        expected=last["new_rating"],
        created_file=bool(first["created_file"]),
        hash_after=last["content_hash_after"],
        prior=json.loads(first["prior_json"]) if first["prior_json"] else {},
        superseded_by_run=superseded_by_run,
        field=last["field"] or RATING,
        hash_before=first.get("hash_before"),
        new=last["new_rating"],
        pending=any(row.get("state") == PENDING for row in rows),
        file_is_ours=file_is_ours,
    )


def _moved_place(place: str, old_path: str, new_path: str) -> str:
    if place.startswith(old_path):
        return new_path + place[len(old_path):]
    old_stem = os.path.splitext(os.path.basename(old_path))[0]
    new_stem = os.path.splitext(os.path.basename(new_path))[0]
    name = os.path.basename(place)
    if os.path.dirname(place) == os.path.dirname(old_path) and name.startswith(old_stem + "."):
        return os.path.join(os.path.dirname(new_path), new_stem + name[len(old_stem):])
    return place


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Journal:
    """The journal of one index (`Index.journal`): every write we made, and undoing them."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db

    def record(self, run_id: int, write: Write, pending: bool = False) -> int:
        """Journal one write; returns the row id. `pending`: recorded before the write
        (write-ahead), done once `mark_done` says it landed."""
        if write.target not in TARGETS:
            raise ValueError(f"unknown target {write.target!r}; known: {', '.join(TARGETS)}")
        row = {
            "run_id": run_id,
            "image_path": str(write.image_path),
            "target": write.target,
            "target_path": str(write.place),
            "old_rating": write.old,
            "new_rating": write.new,
            "created_file": bool(write.created_file),
            "content_hash_after": write.content_hash_after,
            "prior_json": None if write.prior is None else json.dumps(write.prior, sort_keys=True),
            "written_at": _now(),
            "field": write.field,
            "hash_before": write.hash_before,
            "state": PENDING if pending else None,
        }
        return self.db[TABLE].insert(row).last_pk

    def mark_done(self, row_ids: Iterable[int]) -> None:
        """Pending rows whose writes have landed."""
        self.db.conn.executemany(f"UPDATE {TABLE} SET state = NULL WHERE id = ?", [(row_id,) for row_id in row_ids])

    def pending(self, target: str, place_prefix: str = "", places: Iterable[str] | None = None) -> list[UndoAction]:
        """Rows recorded before a write that no one has said landed (a process killed
        between): one action per row, for `reconcile` to settle by reading the place."""
        rows = _rows(
            self.db, "state = ? AND target = ? AND undone_at IS NULL AND substr(target_path, 1, ?) = ? ORDER BY id",
            [PENDING, target, len(place_prefix), place_prefix],
        )
        wanted = None if places is None else set(places)
        return [_merged([row]) for row in rows if wanted is None or row["target_path"] in wanted]

    def last_written(self, target: str, place: Path | str, field: str = RATING) -> int | None:
        """The value we wrote last to this place and haven't undone; None if none.

        Only writes that changed the value count: a write of tags or of our own fields
        leaves the rating as it was, and that rating may well be a person's. A person's
        decision written since (PERSONS_COMMANDS) leaves nothing of ours there.
        """
        return self._last_write("new_rating", "target = ? AND target_path = ?", [target, str(place)], field)

    def before_last_write(self, target: str, place: Path | str, field: str = RATING) -> int | None:
        """What the place held before the write last_written() reports (None: none, or no such write)."""
        return self._last_write("old_rating", "target = ? AND target_path = ?", [target, str(place)], field)

    def last_rating_for_image(self, image_path: str) -> int | None:
        """The rating we set last for this photo through any target (its sidecar, darktable,
        digiKam) and haven't undone; None if none."""
        return self._last_write("new_rating", "image_path = ?", [image_path], RATING)

    def persons_value(self, target: str, place: Path | str, field: str = RATING) -> tuple:
        """(the value,) a person's decision set at this place, when the newest write of
        `field` there not undone is one made on their behalf (PERSONS_COMMANDS); () else."""
        return self._persons("target = ? AND target_path = ?", [target, str(place)], field)

    def persons_value_for_image(self, image_path: str, field: str = RATING) -> tuple:
        """(the value,) a person's decision set for this photo's `field` through any target,
        when the newest write of it for the photo not undone is theirs; () else."""
        return self._persons("image_path = ?", [image_path], field)

    def _newest(self, where: str, params: list, field: str) -> tuple | None:
        """(old, new, by a person) of the newest write of `field` matching `where` that is not
        undone and changed the value, or was a person's decision (theirs even when it only
        took our marker away); None if none."""
        return self.db.execute(
            f"SELECT old_rating, new_rating, {BY_PERSON} FROM {TABLE} WHERE {where} AND IFNULL(field, ?) = ? "
            f"AND undone_at IS NULL AND (old_rating IS NOT new_rating OR {BY_PERSON}) ORDER BY id DESC LIMIT 1",
            [*PERSONS_COMMANDS, *params, RATING, field, *PERSONS_COMMANDS],
        ).fetchone()

    def _last_write(self, column: str, where: str, params: list, field: str) -> int | None:
        """`column` of the newest write of ours (see `_newest`); None if none, or if the
        newest is a person's decision."""
        row = self._newest(where, params, field)
        if row is None or row[2]:
            return None
        return row[0] if column == "old_rating" else row[1]

    def _persons(self, where: str, params: list, field: str) -> tuple:
        row = self._newest(where, params, field)
        return (row[1],) if row is not None and row[2] else ()

    def new_run_id(self) -> int:
        """An unused run id: one more than the largest recorded."""
        row = self.db.execute(f"SELECT MAX(run_id) FROM {TABLE}").fetchone()
        return (row[0] or 0) + 1

    def latest_run(self, targets: Sequence[str] = TARGETS, place_prefix: str = "") -> int | None:
        """The newest run that still has writes to `targets` not undone (places starting with
        `place_prefix`); None when there is nothing to undo."""
        marks = ",".join("?" * len(targets))
        row = self.db.execute(
            f"SELECT MAX(run_id) FROM {TABLE} WHERE undone_at IS NULL AND target IN ({marks}) "
            "AND substr(target_path, 1, ?) = ?",
            [*targets, len(place_prefix), place_prefix],
        ).fetchone()
        return row[0]

    def plan_undo(self, run_id: int | None = None, targets: Sequence[str] = TARGETS, place_prefix: str = "") -> list[UndoAction]:
        """The undo actions for `run_id` (default: the latest run), newest write first.

        Only writes to `targets`, at places starting with `place_prefix`: a run's darktable
        writes must not stand in the way of `aes-index ratings undo`, nor one digiKam
        database's of another's. Plans only; nothing is changed.
        """
        if run_id is None:
            run_id = self.latest_run(targets, place_prefix)
            if run_id is None:
                return []
        marks = ",".join("?" * len(targets))
        rows = _rows(
            self.db,
            f"run_id = ? AND undone_at IS NULL AND target IN ({marks}) AND substr(target_path, 1, ?) = ? ORDER BY id DESC",
            [run_id, *targets, len(place_prefix), place_prefix],
        )
        return [_action(self.db, row) for row in rows]

    def plan_undo_places(
        self, target: str, places: Iterable[str], field: str = RATING, commands: Sequence[str] = ()
    ) -> list[UndoAction]:
        """Undo everything we ever wrote to one `field` of these places, whatever the run
        (or only runs of `commands`): one action per place and value, back to the value
        before our first write, if it still holds our last one. (darktable's "remove our
        stars" and "undo cull" work on the images a person selected.) A field with several
        values per place (darktable's "tag": one row per tag, its name in `prior`) gets one
        action per value."""
        wanted = set(places)
        where, params = "target = ? AND IFNULL(field, ?) = ? AND undone_at IS NULL", [target, RATING, field]
        if commands:
            where += f" AND run_id IN (SELECT id FROM runs WHERE command IN ({','.join('?' * len(commands))}))"
            params += list(commands)
        writes: dict[tuple, list[dict]] = {}
        for row in _rows(self.db, where + " ORDER BY id", params):
            if row["target_path"] in wanted:
                value_key = None if field == RATING else row["prior_json"]
                writes.setdefault((row["target_path"], value_key), []).append(row)
        return [_merged(rows, file_is_ours=_file_is_ours(self.db, target, place)) for (place, _), rows in writes.items()]

    def open_fields(self, target: str, fields: Sequence[str], place_prefix: str = "") -> list[tuple[str, str]]:
        """(image path, place) of every place that still holds a write of ours to one of
        `fields` (not undone): a new culling run revisits them to clear marks that no
        longer apply (a keeper that no longer is one)."""
        marks = ",".join("?" * len(fields))
        rows = self.db.execute(
            f"SELECT DISTINCT image_path, target_path FROM {TABLE} WHERE target = ? AND undone_at IS NULL "
            f"AND IFNULL(field, ?) IN ({marks}) AND substr(target_path, 1, ?) = ? ORDER BY image_path, target_path",
            [target, RATING, *fields, len(place_prefix), place_prefix],
        )
        return rows.fetchall()

    def mark_undone(self, row_ids: Iterable[int], note: str) -> None:
        """Close journal rows: `note` says what undo did (restored, deleted, kept-manual, missing)."""
        now = _now()
        self.db.conn.executemany(
            f"UPDATE {TABLE} SET undone_at = ?, undo_note = ? WHERE id = ?", [(now, note, row_id) for row_id in row_ids]
        )

    def databases(self, target: str) -> list[str]:
        """The databases ("<database>" of places "<database>#<image id>") this index has
        written `target`'s values into, e.g. every digiKam database a `digikam sync` or
        `digikam cull` used."""
        rows = self.db.execute(
            f"SELECT DISTINCT rtrim(target_path, '0123456789') FROM {TABLE} WHERE target = ?", [target]
        ).fetchall()
        return sorted(place[:-1] for (place,) in rows if place.endswith("#"))

    def open_places(self) -> list[tuple[str, str, int | None]]:
        """(image path, target, stars) of the latest rating write not undone, per photo and
        target (culling's fields, a darktable group id or a tag, are no stars)."""
        if not self.db[TABLE].exists():
            return []
        rows = self.db.execute(  # a person's decision written since leaves no stars of ours
            f"SELECT image_path, target, new_rating FROM {TABLE} WHERE id IN "
            f"(SELECT MAX(id) FROM {TABLE} WHERE undone_at IS NULL AND IFNULL(field, ?) = ? GROUP BY image_path, target) "
            f"AND NOT {BY_PERSON}",
            [RATING, RATING, *PERSONS_COMMANDS],
        )
        return rows.fetchall()

    def follow_move(self, old_path: str, new_path: str) -> int:
        """A photo moved (the scan matched its fingerprint): its journal rows follow it, and
        so do their places: its sidecar ("IMG_1.jpg.xmp" or Lightroom-style "IMG_1.xmp"), the
        JPEG itself, "path#duplicate" in darktable. A file place follows only if the file is
        there at the new place (a photo renamed without its sidecar leaves the row where it
        was: undo then says "missing" rather than touch a sidecar we never wrote). digiKam's
        places name its database, not the photo, and stay."""
        rows = self.db.execute(
            f"SELECT id, target, target_path FROM {TABLE} WHERE image_path = ? AND target != 'digikam'", [old_path]
        ).fetchall()
        moved = []
        for row_id, target, place in rows:
            new_place = _moved_place(place, old_path, new_path)
            if target in FILE_TARGETS and not os.path.exists(new_place):
                continue
            moved.append((new_path, new_place, row_id))
        self.db.conn.executemany(f"UPDATE {TABLE} SET image_path = ?, target_path = ? WHERE id = ?", moved)
        return len(moved)

    def decisions_by(self, commands: Sequence[str]) -> list[tuple[str, str, str, str, int | None]]:
        """(image path, target, place, field, value) of the newest write not undone per place
        and field made by runs of `commands` (the review page's decisions, written on a
        person's behalf): what learning a person's taste reads of them."""
        if not commands or not self.db[TABLE].exists():
            return []
        marks = ",".join("?" * len(commands))
        rows = self.db.execute(
            f"SELECT image_path, target, target_path, IFNULL(field, ?), new_rating FROM {TABLE} WHERE id IN "
            f"(SELECT MAX(id) FROM {TABLE} WHERE undone_at IS NULL AND run_id IN "
            f"(SELECT id FROM runs WHERE command IN ({marks})) GROUP BY target, target_path, IFNULL(field, ?)) ORDER BY id",
            [RATING, *commands, RATING],
        )
        return rows.fetchall()
