"""digiKam's database as a rating target (the "digikam" target).

One place per digiKam image, "<db path>#<image id>"; a session holds the database
exclusively (targets/digikam_db.py: backup first, refused while a digiKam has it open) and
its writes land, and are journaled ahead, when it commits. Star ratings go into
ImageInformation.rating (digiKam has no "rejected" rating: rejects are left alone) with our
"Aesthetic/N stars" tag; culling's marks into digiKam's own grouping, pick labels and our
"Aesthetic/keeper", "Aesthetic/blurry", ... tags. A group is grouped one album at a time
(culling/marks.py folder_groups: digiKam hides a grouped image wherever its leader is);
a member outside its keeper's album is tagged "Aesthetic/keeper in another folder". The operations that use it (`digikam
sync|cull|undo`) are features/digikam.py's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import ownership
from ..errors import AesIndexError
from ..formats import xmp
from ..values import CULL_TAGS, REJECTED
from .digikam_db import (
    DigikamImage, LOCK_TIMEOUT_S, digikam_images, exclusively, followers_of, leader_of, our_tags, pick_of, rating_of,
    relative, relative_tags, set_cull_tags, set_leader, set_our_tags, set_pick, set_rating,
)
from .protocol import CullState, Marks, Place, Reading, Target, UndoAction, UndoResult, Wanted, Write, kept_manual, restored
from .sidecar import other_tags, star_tag

TARGET = "digikam"
CREATED_TAGS = "created-tags"  # the journal field of the tags a run created in digiKam
@dataclass
class DigikamTarget(Target):
    """digiKam's database: one place per digiKam image ("<db path>#<image id>"). A session
    holds the database exclusively (backup first); its writes land, and are journaled,
    when the session commits."""

    db_path: Path = Path()
    lock_timeout: float = LOCK_TIMEOUT_S
    name: str = TARGET
    rejects: bool = False  # digiKam's rating has no "rejected" (it has a pick label)
    transactional: bool = True
    holds_groups: bool = True  # ImageRelations
    backup: bool = True  # back the database up when a session starts (False: a review decision, backed up once per page)

    def __post_init__(self) -> None:
        self.db_path = Path(self.db_path).resolve()
        self.conn: sqlite3.Connection | None = None
        self._by_path: dict[str, list[DigikamImage]] = {}

    @property
    def place_prefix(self) -> str:
        return image_key(self.db_path, 0)[:-1]  # "<db path>#"

    @contextmanager
    def session(self, dry_run: bool, before_commit: Callable[[], None] = lambda: None) -> Iterator[None]:
        try:  # the connection stays ours until after the commit: before_commit reads it (session_writes)
            with exclusively(self.db_path, dry_run, self.lock_timeout, before_commit, self.backup) as (conn, backup):
                self.conn = conn
                self._last_tag_before = conn.execute("SELECT IFNULL(MAX(id), 0) FROM Tags").fetchone()[0]
                images = digikam_images(conn)
                self._by_path = {}
                for image in images:
                    self._by_path.setdefault(image.path, []).append(image)
                self.extra = {"database": str(self.db_path), "backup": backup, "images": len(images), "matched": 0}
                yield
        finally:
            self.conn = None

    def unsupported(self, photo_path: str, stars: int) -> str | None:
        if photo_path not in self._by_path:
            return None  # not in digiKam: no places, nothing to say
        self.extra["matched"] += 1
        return super().unsupported(photo_path, stars)

    def places(self, photo_path: str) -> list[Place]:
        return [Place(image_key(self.db_path, image.id), image.path, ref=image.id) for image in self._by_path.get(photo_path, [])]

    def read(self, place: Place) -> Reading:
        rating = rating_of(self.conn, place.ref)
        sidecar = _photo_sidecar(place.image_path)
        if rating is None and sidecar.rating == REJECTED and not sidecar.our_reject:
            # darktable's reject: digiKam has no such rating and shows "none", but it is
            # a person's judgement all the same (unless it is our reject, aes:Reject).
            rating = REJECTED
        # digiKam read from the sidecar the stars we wrote there (aes:Stars == xmp:Rating):
        # they are ours, not a person's.
        ours = rating if sidecar.our_rating == rating else None
        image_id = place.ref
        pick = pick_of(self.conn, image_id)
        cull = CullState(
            pick=pick, tags=tuple(t for t in relative_tags(self.conn, image_id) if t in CULL_TAGS),
            leader=leader_of(self.conn, image_id), followers=tuple(followers_of(self.conn, image_id)),
            # digiKam read from the sidecar the pick label we set there (aes:Pick): ours, as above
            marked_pick=pick if pick is not None and sidecar.our_pick == pick else None,
        )
        return Reading(place, rating, token=rating, ours=ours, cull=cull)  # held exclusively: it stays this

    def write(self, reading: Reading, wanted: Wanted, dry_run: bool) -> Write | None:
        image_id = reading.place.ref
        prior_tags = our_tags(self.conn, image_id)
        set_rating(self.conn, image_id, wanted.stars)
        if wanted.tags:  # our star tag changes; culling's and attribute tags stay
            set_our_tags(self.conn, image_id, [*other_tags(relative_tags(self.conn, image_id)), star_tag(wanted.stars)])
        return Write(
            target=TARGET, place=reading.place.key, image_path=reading.place.image_path, old=reading.value,
            new=wanted.stars, prior={"tags": prior_tags} if wanted.tags else None,
        )

    def ref_of(self, photo_path: str) -> int | None:
        """The digiKam image a group hangs under: the photo's (the lowest id, where two
        album roots show the same file)."""
        images = self._by_path.get(photo_path)
        return min(image.id for image in images) if images else None

    def mark(self, reading: Reading, changes: dict, marks: Marks, dry_run: bool) -> list[Write]:
        """Culling's fields in digiKam's tables, one journal row per field (they land,
        and are journaled, when the session commits)."""
        image_id, cull, writes = reading.place.ref, reading.cull, []

        def row(name: str, old, new, prior=None) -> None:
            writes.append(Write(TARGET, reading.place.key, reading.place.image_path, old, new, prior=prior, field=name))

        if "pick" in changes:
            set_pick(self.conn, image_id, changes["pick"])
            row("pick", cull.pick, changes["pick"])
        if "tags" in changes:
            set_cull_tags(self.conn, image_id, changes["tags"])
            row("tags", None, None, {"cull_tags": list(cull.tags)})
        if "group" in changes:
            set_leader(self.conn, image_id, changes["group"])
            row("group", cull.leader, changes["group"])
        return writes

    def write_decision(self, reading: Reading, changes: dict, dry_run: bool) -> list[Write]:
        """A person's rating and pick label (`aes-index review`) in digiKam's tables, one
        journal row per field (landing, and journaled, when the session commits). digiKam
        has no "rejected" rating: a reject is its pick label "Rejected" alone."""
        image_id, writes = reading.place.ref, []
        if "pick" in changes:
            set_pick(self.conn, image_id, changes["pick"])
            writes.append(Write(TARGET, reading.place.key, reading.place.image_path, reading.cull.pick, changes["pick"], field="pick"))
        if "rating" in changes:
            set_rating(self.conn, image_id, changes["rating"])
            writes.append(Write(TARGET, reading.place.key, reading.place.image_path, reading.value, changes["rating"]))
        return writes

    def session_writes(self) -> list[Write]:
        """The tags this session created (Aesthetic, Aesthetic/keeper, digiKam's internal
        "Pick Label Accepted", ...), for undo to remove once nothing is tagged with them:
        one journal row, with the tags in its prior."""
        rows = self.conn.execute("SELECT id, pid, name FROM Tags WHERE id > ? ORDER BY id", [self._last_tag_before]).fetchall()
        if not rows:
            return []
        created = [{"id": tag_id, "pid": pid, "name": name} for tag_id, pid, name in rows]
        # A place of its own (named by its first tag), so that one run's tags never stand in
        # the way of undoing another's
        place = f"{self.db_path}#{CREATED_TAGS}-{created[0]['id']}"
        return [Write(TARGET, place, str(self.db_path), None, None, prior={"tags": created}, field=CREATED_TAGS)]

    def landed(self, action: UndoAction) -> bool | None:
        """A session's writes land together at its commit: the field as the journal
        recorded it ahead tells whether that commit happened."""
        if action.field == CREATED_TAGS:
            return any(self._tag_exists(tag) for tag in action.prior.get("tags", ()))
        image_id = int(action.place.rsplit("#", 1)[1])
        if self.conn.execute("SELECT 1 FROM Images WHERE id = ?", [image_id]).fetchone() is None:
            return True  # gone from digiKam since: nothing to tell, nothing to undo there either
        if action.field == "tags":
            now = [t for t in relative_tags(self.conn, image_id) if t in CULL_TAGS]
            return sorted(now) != sorted(action.prior.get("cull_tags", ()))
        read = {"rating": rating_of, "pick": pick_of, "group": leader_of}[action.field]
        current = read(self.conn, image_id)
        if current == action.new:
            return True
        return False if current == action.restore else True

    def _tag_exists(self, tag: dict) -> bool:
        return self.conn.execute("SELECT 1 FROM Tags WHERE id = ? AND pid = ? AND name = ?", [tag["id"], tag["pid"], tag["name"]]).fetchone() is not None

    def _remove_created_tags(self, action: UndoAction) -> UndoResult:
        """The tags a run created go, once no image is tagged with them and no tag lies
        below them; one a person has used since stays. Children first."""
        kept = []
        for tag in sorted(action.prior.get("tags", ()), key=lambda t: -t["id"]):
            if not self._tag_exists(tag):
                continue
            used = self.conn.execute("SELECT 1 FROM ImageTags WHERE tagid = ? LIMIT 1", [tag["id"]]).fetchone()
            parent = self.conn.execute("SELECT 1 FROM Tags WHERE pid = ? LIMIT 1", [tag["id"]]).fetchone()
            if used or parent:
                kept.append(tag["name"])
                continue
            self.conn.execute("DELETE FROM Tags WHERE id = ?", [tag["id"]])  # digiKam's triggers tidy TagsTree and TagProperties
        if kept:
            return UndoResult(action, "kept-manual", f"tags in use since, left: {', '.join(kept)}")
        return UndoResult(action, "restored", "the tags we created are gone")

    def undo(self, action: UndoAction, dry_run: bool) -> UndoResult:
        if action.field == CREATED_TAGS:
            return self._remove_created_tags(action)
        image_id = int(action.place.rsplit("#", 1)[1])
        if self.conn.execute("SELECT 1 FROM Images WHERE id = ?", [image_id]).fetchone() is None:
            return UndoResult(action, "missing", "digiKam no longer has this image")
        if action.field in ("pick", "group", "tags"):
            return self._undo_mark(image_id, action)
        if "tags" in action.prior:  # our star tags as they were; culling's stay as they are now
            now = relative_tags(self.conn, image_id)
            before = [relative(tag) for tag in action.prior["tags"]]
            set_our_tags(self.conn, image_id, [t for t in before if t not in CULL_TAGS] + [t for t in now if t in CULL_TAGS])
        current = rating_of(self.conn, image_id)
        if not ownership.still_ours(current, action.expected):
            return kept_manual(action, current)
        set_rating(self.conn, image_id, action.restore)
        return restored(action)


    def _undo_mark(self, image_id: int, action: UndoAction) -> UndoResult:
        """A culling field back as it was: our tags always, a pick label or group only
        while it still is what we made it."""
        if action.field == "tags":
            set_cull_tags(self.conn, image_id, action.prior.get("cull_tags", ()))
            return UndoResult(action, "restored", "culling tags put back")
        read, write = (pick_of, set_pick) if action.field == "pick" else (leader_of, set_leader)
        what = "pick label" if action.field == "pick" else "grouped under image"
        current = read(self.conn, image_id)
        if not ownership.still_ours(current, action.expected):
            return UndoResult(action, "kept-manual", f"{what} is {_show(current)} now, not our {_show(action.expected)}: left as is")
        write(self.conn, image_id, action.restore)
        return UndoResult(action, "restored", f"{what} {_show(action.expected)} -> {_show(action.restore)}")


def _show(value) -> str:
    return "none" if value is None else str(value)


def _photo_sidecar(photo_path: str) -> xmp.SidecarInfo:
    """The photo's own sidecar as digiKam reads it (nothing when there is none, or we refuse it)."""
    try:
        return xmp.read_sidecar(xmp.sidecar_for(Path(photo_path)))
    except AesIndexError:
        return xmp.SidecarInfo(Path(photo_path), exists=False)


def image_key(db_path: Path, image_id: int) -> str:
    return f"{db_path}#{image_id}"


@contextmanager
def reading(db_path: Path) -> Iterator[DigikamTarget]:
    """A digiKam target that only reads (its database opened read-only, no backup, no lock):
    `places` and `read` work as in a session; nothing may be written through it."""
    from .digikam_db import read_only

    target = DigikamTarget(db_path=db_path)
    with read_only(target.db_path) as conn:
        target.conn = conn
        target._by_path = {}
        for image in digikam_images(conn):
            target._by_path.setdefault(image.path, []).append(image)
        target.extra = {"database": str(target.db_path), "images": sum(map(len, target._by_path.values())), "matched": 0}
        try:
            yield target
        finally:
            target.conn = None
