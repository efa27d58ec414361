"""digiKam: star ratings and an "Aesthetic" tag tree written straight into digikam4.db.

The other way into digiKam is the sidecar route (`aes-index apply-ratings`, then digiKam's
"Read from sidecar files" and "Reread metadata from files"). This module writes digiKam's
own SQLite database instead, for the photos it can match:

    AlbumRoots (identifier + specificPath, resolved as digiKam's CollectionManager does)
      + Albums.relativePath + Images.name  ==  a path in the aes-index index

Ratings go into ImageInformation.rating (-1: no rating; digiKam has no "rejected" rating,
so rejects are left alone), tags into Tags ("Aesthetic" / "4 stars", TagsTree is kept by
digiKam's own triggers) and ImageTags. The manual-ratings-win rule is the one of
targets/apply.py, with journal target "digikam" and one key per digiKam image: "<db path>#<id>".

Culling (`cull`, `aes-index digikam cull`) writes digiKam's own grouping and pick labels
into the same database, through the same places and the same exclusive session: each
group's members grouped under its keeper, the keeper's pick label "Accepted", our tags
"Aesthetic/keeper", "Aesthetic/blurry", ..., and only when asked the pick label
"Rejected" on flagged photos that are no keeper (digiKam's rating has no reject). How
digiKam stores each of those is below ("digiKam's pick labels and groups"), with where
in digiKam's source it was verified.

Never while digiKam runs: a sync refuses when a digiKam process has this database open
(its open files in /proc, `digikam_holding`) or the database is locked (BEGIN EXCLUSIVE with a short timeout), makes a backup beside the
database with SQLite's backup API, then holds the exclusive lock until it commits.
`undo` puts a sync run's ratings and tags back the same careful way.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .. import ownership
from ..formats import xmp
from ..ownership import Owner
from ..features.culling.marks import MARK_FIELDS, MarkOptions, decide_marks, load_culling, plan_marks
from ..features.culling.model import Group
from ..errors import AesIndexError, ConfigError, ExitCode
from ..values import REJECTED
from ..index.store.journal import UndoAction, Write
from ..index.store import Index
from ..writing import apply as targets
from .protocol import CullState, Marks, Place, Reading, Target, UndoResult, Wanted, kept_manual, restored
from .sidecar import CULL_TAGS, other_tags, star_tag

TARGET = "digikam"
TAG_ROOT = "Aesthetic"
CREATED_TAGS = "created-tags"  # the journal field of the tags a run created in digiKam
NO_RATING = -1  # digiKam's "no rating" in ImageInformation.rating
VISIBLE = 1  # Images.status of a normal image (2 hidden, 3 trashed, 4 obsolete)
LOCK_TIMEOUT_S = 2.0
REQUIRED_TABLES = ("AlbumRoots", "Albums", "Images", "ImageInformation", "Tags", "ImageTags")


class DigikamUnavailable(AesIndexError):
    """digiKam runs, or its database is locked, missing or not a digiKam database."""

    exit_code = ExitCode.INDEX


@dataclass(frozen=True)
class DigikamImage:
    id: int
    path: str
    rating: int | None  # None: no rating (-1 or no ImageInformation row)


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
            with _exclusively(self.db_path, dry_run, self.lock_timeout, before_commit) as (conn, backup):
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
            pick=pick, tags=tuple(t for t in _relative_tags(self.conn, image_id) if t in CULL_TAGS),
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
            set_our_tags(self.conn, image_id, [*other_tags(_relative_tags(self.conn, image_id)), star_tag(wanted.stars)])
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
            now = [t for t in _relative_tags(self.conn, image_id) if t in CULL_TAGS]
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
            now = _relative_tags(self.conn, image_id)
            before = [_relative(tag) for tag in action.prior["tags"]]
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


def sync(index: Index, db_path: Path, options, head_id: str, lock_timeout: float = LOCK_TIMEOUT_S) -> targets.ApplyReport:
    """Write the policy's stars (and tags) into digiKam's database for every matched photo."""
    from ..features.rating import plan

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

    Each group's members are grouped under its keeper as digiKam groups them, the keeper
    gets the pick label "Accepted", flags become our tags, and with options.reject the
    flagged photos that are no keeper get "Rejected". A person's pick label stays, and a
    person's choice in a group (pick label or rating) makes that photo the keeper; a group
    a person made (one of its photos grouped, or leading a group, not by us) is left whole.
    Marks of ours on photos no longer in a group are taken back. `undo` reverses the run.
    """
    target = DigikamTarget(db_path=db_path, lock_timeout=lock_timeout)
    groups, flagged = load_culling(index, under)

    def plan(target: DigikamTarget) -> list[Marks]:
        stale = [path for path, _ in index.journal.open_fields(TARGET, MARK_FIELDS, target.place_prefix)]
        person_grouped = lambda group: _grouped_by_a_person(index, target, group)  # noqa: E731
        marks = plan_marks(index, target, groups, flagged, options, stale, person_grouped)
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


def image_key(db_path: Path, image_id: int) -> str:
    return f"{db_path}#{image_id}"


def _relative(tag: str) -> str:
    return tag.split("/", 1)[1] if tag.startswith(TAG_ROOT + "/") else tag


def _relative_tags(conn: sqlite3.Connection, image_id: int) -> list[str]:
    """The image's tags below "Aesthetic", relative to it ("4 stars", "keeper")."""
    return [_relative(tag) for tag in our_tags(conn, image_id)]


# --------------------------------------------------------------------------- safety


def digikam_holding(db_path: Path, proc: Path = Path("/proc")) -> list[int]:
    """Process ids of the digiKam processes that have this database open (Linux).

    A digiKam keeps its core database open as long as it runs, so its open files
    (/proc/PID/fd) say whether it is *this* database's digiKam; one open on another
    library, or any other program, is none of our business. The file is compared by
    device and inode, so a symlink or another spelling of the path is the same database;
    its -wal/-journal companions count too. A digiKam whose open files we may not read
    (another user's) is counted: we cannot tell, and its database is not ours to risk.
    Elsewhere (no /proc) the SQLite lock check remains.
    """
    wanted = _file_ids([db_path, *(db_path.with_name(db_path.name + s) for s in ("-wal", "-journal", "-shm"))])
    holding = []
    for comm in proc.glob("[0-9]*/comm"):
        try:
            if not comm.read_text().strip().startswith("digikam"):
                continue
            fds = list((comm.parent / "fd").iterdir())
        except PermissionError:
            holding.append(int(comm.parent.name))
            continue
        except OSError:
            continue  # the process ended while we looked
        if wanted & _file_ids(fds):
            holding.append(int(comm.parent.name))
    return holding


def _file_ids(paths) -> set[tuple[int, int]]:
    """(device, inode) of each path that can be followed to a file."""
    ids = set()
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            continue  # absent, or an fd that closed while we looked
        ids.add((info.st_dev, info.st_ino))
    return ids


@contextmanager
def _exclusively(
    db_path: Path, dry_run: bool, lock_timeout: float, before_commit: Callable[[], None] = lambda: None,
) -> Iterator[tuple[sqlite3.Connection, str | None]]:
    """digiKam's database held exclusively, with the backup's path (None for a dry run).

    Committed at the end, right after `before_commit` (the journal records the session's
    writes there, ahead of them); rolled back for a dry run, or (by closing) on any error.
    """
    with closing(_connect(db_path, lock_timeout)) as conn:
        backup = None if dry_run else str(_backup_then_lock(conn, db_path))
        if dry_run:
            _begin_exclusive(conn, db_path)
        yield conn, backup
        if dry_run:
            conn.execute("ROLLBACK")
            return
        before_commit()
        conn.execute("COMMIT")


def _connect(db_path: Path, lock_timeout: float) -> sqlite3.Connection:
    """A connection to digiKam's database, after making sure digiKam leaves it alone."""
    pids = digikam_holding(db_path)
    if pids:
        raise DigikamUnavailable(
            f"digiKam is running with {db_path} open (pid {', '.join(map(str, pids))}): quit it first, then try again"
        )
    if not db_path.is_file():
        raise DigikamUnavailable(f"no digiKam database at {db_path}")
    conn = sqlite3.connect(db_path, timeout=lock_timeout, isolation_level=None)
    try:
        _check_schema(conn, db_path)
        _begin_exclusive(conn, db_path)  # refuse now, before any backup is made
        conn.execute("ROLLBACK")
    except BaseException:
        conn.close()
        raise
    return conn


def _check_schema(conn: sqlite3.Connection, db_path: Path) -> None:
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise DigikamUnavailable(f"cannot read {db_path}: {exc}") from exc
    missing = [name for name in REQUIRED_TABLES if name not in tables]
    if missing:
        raise ConfigError(f"{db_path} is not a digiKam database (no {', '.join(missing)} table)")


def _begin_exclusive(conn: sqlite3.Connection, db_path: Path) -> None:
    try:
        conn.execute("BEGIN EXCLUSIVE")
    except sqlite3.OperationalError as exc:
        raise DigikamUnavailable(f"digiKam's database {db_path} is in use ({exc}): quit digiKam, then sync") from exc


def _backup_then_lock(conn: sqlite3.Connection, db_path: Path) -> Path:
    """Back the database up beside itself, then hold it exclusively.

    SQLite's backup API can't read through a connection that holds a write lock, so the
    backup comes first; data_version then proves nobody wrote in between.
    """
    version = conn.execute("PRAGMA data_version").fetchone()[0]
    target = _backup_path(db_path)
    with closing(sqlite3.connect(target)) as copy:
        conn.backup(copy)
    _begin_exclusive(conn, db_path)
    if conn.execute("PRAGMA data_version").fetchone()[0] != version:
        conn.execute("ROLLBACK")
        raise DigikamUnavailable(f"{db_path} changed during the backup: is digiKam running? Try again")
    return target


def _backup_path(db_path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        candidate = db_path.with_name(f"{db_path.name}.aes-index-backup-{stamp}{f'-{n}' if n else ''}")
        if not candidate.exists():
            return candidate
    raise DigikamUnavailable(f"too many backups of {db_path} this second")


# --------------------------------------------------------------------------- digiKam's tables


def digikam_images(conn: sqlite3.Connection) -> list[DigikamImage]:
    """Every visible image with its absolute path (where its album root resolves)."""
    roots = {root_id: album_root_path(identifier, specific) for root_id, identifier, specific in
             conn.execute("SELECT id, identifier, specificPath FROM AlbumRoots")}
    rows = conn.execute(
        "SELECT i.id, i.name, a.albumRoot, a.relativePath, ii.rating FROM Images i "
        "JOIN Albums a ON a.id = i.album LEFT JOIN ImageInformation ii ON ii.imageid = i.id "
        "WHERE i.status = ?",
        [VISIBLE],
    )
    return [
        DigikamImage(image_id, _join(roots[root], relative, name), _rating(rating))
        for image_id, name, root, relative, rating in rows
        if roots.get(root)
    ]


def _join(root: str, relative: str, name: str) -> str:
    folder = root.rstrip("/") + ("" if relative in ("", "/") else "/" + relative.strip("/"))
    return f"{folder}/{name}"


def album_root_path(identifier: str | None, specific_path: str | None) -> str | None:
    """An album root's absolute path, as digiKam resolves it; None if it can't be found.

    volumeid:?uuid=U / ?label=L   the volume's mount point + specificPath
    volumeid:?mountpath=M         M + specificPath
    volumeid:?path=P              P (specificPath is "/" by convention, ignored)
    networkshareid:?mountpath=M   the first M that exists (several may be listed)
    """
    if not identifier:
        return None
    parts = urlsplit(identifier)
    query = _query(parts.query)
    specific = (specific_path or "/").rstrip("/")
    if parts.scheme == "networkshareid":
        mounts = query.get("mountpath", [])
        return next((m for m in mounts if Path(m).is_dir()), mounts[0] if mounts else None)
    if parts.scheme != "volumeid":
        return None
    if "uuid" in query or "label" in query:
        kind, value = ("uuid", query["uuid"][0]) if "uuid" in query else ("label", query["label"][0])
        mount = _mount_point(Path("/dev/disk") / f"by-{kind}" / value)
        return None if mount is None else mount.rstrip("/") + specific
    if "mountpath" in query:
        return query["mountpath"][0].rstrip("/") + specific
    if "path" in query:
        return query["path"][0]
    return None


def _query(text: str) -> dict[str, list[str]]:
    """A query string as Qt's QUrlQuery reads it: %-decoding, but "+" stays "+"."""
    items: dict[str, list[str]] = {}
    for item in filter(None, text.split("&")):
        key, _, value = item.partition("=")
        items.setdefault(unquote(key), []).append(unquote(value))
    return items


def _mount_point(device_link: Path) -> str | None:
    """Where the block device behind /dev/disk/by-uuid/... is mounted (from mountinfo)."""
    try:
        device = device_link.resolve(strict=True).stat().st_rdev
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return None
    wanted = f"{os.major(device)}:{os.minor(device)}"
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[2] == wanted and fields[3] == "/":
            # mountinfo writes space, tab, newline and backslash as octal escapes (\040)
            return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
    return None


def _rating(value: int | None) -> int | None:
    return None if value is None or value < 0 else value


def rating_of(conn: sqlite3.Connection, image_id: int) -> int | None:
    row = conn.execute("SELECT rating FROM ImageInformation WHERE imageid = ?", [image_id]).fetchone()
    return _rating(row[0] if row else None)


def set_rating(conn: sqlite3.Connection, image_id: int, rating: int | None) -> None:
    value = NO_RATING if rating is None else rating
    if conn.execute("UPDATE ImageInformation SET rating = ? WHERE imageid = ?", [value, image_id]).rowcount == 0:
        conn.execute("INSERT INTO ImageInformation (imageid, rating) VALUES (?, ?)", [image_id, value])


def _tag_id(conn: sqlite3.Connection, parent: int, name: str, create: bool = True) -> int | None:
    row = conn.execute("SELECT id FROM Tags WHERE pid = ? AND name = ?", [parent, name]).fetchone()
    if row or not create:
        return row[0] if row else None
    # digiKam's insert_tagstree trigger files the new tag into TagsTree
    return conn.execute("INSERT INTO Tags (pid, name) VALUES (?, ?)", [parent, name]).lastrowid


def our_tags(conn: sqlite3.Connection, image_id: int) -> list[str]:
    """The image's tags below "Aesthetic", as "Aesthetic/4 stars"."""
    root = _tag_id(conn, 0, TAG_ROOT, create=False)
    if root is None:
        return []
    rows = conn.execute(
        "SELECT t.name FROM ImageTags it JOIN Tags t ON t.id = it.tagid WHERE it.imageid = ? AND t.pid = ? ORDER BY t.name",
        [image_id, root],
    )
    return [f"{TAG_ROOT}/{name}" for (name,) in rows]


def set_our_tags(conn: sqlite3.Connection, image_id: int, names: list[str]) -> None:
    """The image's tags below "Aesthetic" become exactly `names` ("4 stars"); others stay."""
    root = _tag_id(conn, 0, TAG_ROOT, create=bool(names))
    if root is None:
        return
    conn.execute("DELETE FROM ImageTags WHERE imageid = ? AND tagid IN (SELECT id FROM Tags WHERE pid = ?)", [image_id, root])
    for name in names:
        conn.execute("INSERT OR IGNORE INTO ImageTags (imageid, tagid) VALUES (?, ?)", [image_id, _tag_id(conn, root, name)])


def set_cull_tags(conn: sqlite3.Connection, image_id: int, names) -> None:
    """The image's culling tags below "Aesthetic" ("keeper", "blurry", ...) become exactly
    `names`; our star and attribute tags, and every tag of the user's, stay."""
    keep = [tag for tag in _relative_tags(conn, image_id) if tag not in CULL_TAGS]
    set_our_tags(conn, image_id, [*keep, *names])


# --------------------------------------------------------------------------- digiKam's pick labels and groups
#
# Verified in digiKam's source (github.com/KDE/digikam; the tree read is commit 33d0457e20,
# 2019, digiKam 6.x; every name below is also in Debian's digiKam 7.9 binaries:
# libdigikamdatabase.so.7.9.0 holds "Pick Label Accepted", "/_Digikam_Internal_Tags_",
# "internalTag" and "REPLACE INTO ImageRelations (subject, object, type) VALUES (?, ?, ?);",
# libdigikamcore.so.7.9.0 "Xmp.digiKam.PickLabel"), and by the real digiKam 7.9 in
# tests/test_digikam_real.py:
#
# (a) XMP: DMetadata::setItemPickLabel writes Xmp.digiKam.PickLabel as the text of the
#     number, DMetadata::getItemPickLabel reads it back when it is 0..3
#     (core/libs/metadataengine/dmetadata/dmetadata_labels.cpp); the numbers are enum
#     PickLabel (core/app/utils/digikam_globals.h): NoPickLabel 0, RejectedLabel 1,
#     PendingLabel 2, AcceptedLabel 3. The collection scanner turns it into the pick label
#     tag below (ItemScanner::scanTags, core/libs/database/item/scanner/itemscanner_photo.cpp).
# (b) Database: a pick label is an internal tag attached in ImageTags.
#     TagsCache::getOrCreateInternalTag (core/libs/database/tags/tagscache.cpp) finds the
#     tag by its path "/_Digikam_Internal_Tags_/<name>", creating it if needed, and gives it
#     and its parent the tag property "internalTag" (TagsCache::propertyNameDigikamInternalTag:
#     "Do not change, is written to users' databases"). The names are InternalTagName's
#     (core/libs/database/coredb/coredbconstants.cpp): "Pick Label None", "Pick Label
#     Rejected", "Pick Label Pending", "Pick Label Accepted". A pick label is exclusive:
#     ItemInfo::setPickLabel (core/libs/database/item/containers/iteminfo.cpp) removes every
#     pick label tag of the image, then attaches the new one; TagsCache::pickLabelFromTags
#     reads the first one found. Found by path, tags we create are the very ones digiKam uses.
# (c) Groups: ImageRelations(subject, object, type), type DatabaseRelation::Grouped = 2,
#     "The subject is grouped behind the object" (coredbconstants.h): the member is the
#     subject, the group's leader the object, and the leader has no Grouped row itself.
#     ItemInfo::addToGroup regroups flat, one row per member straight under the leader,
#     with CoreDB::addImageRelation ("REPLACE INTO ImageRelations (subject, object, type)
#     VALUES (?, ?, ?)", core/libs/database/coredb/coredb.cpp); ItemInfo::groupImageId
#     takes a member's first Grouped row. digiKam writes grouping into no metadata (nothing
#     under core/libs/metadataengine knows of it; its scanner even drops the grouping of a
#     copied image, ItemScanner::commitCopyImageAttributes): groups live in its database
#     only, and a sidecar carries the pick label and tags.

INTERNAL_TAGS = "_Digikam_Internal_Tags_"
INTERNAL_PROPERTY = "internalTag"
PICK_TAGS = {0: "Pick Label None", 1: "Pick Label Rejected", 2: "Pick Label Pending", 3: "Pick Label Accepted"}
GROUPED = 2  # DatabaseRelation::Grouped


def _internal_tag(conn: sqlite3.Connection, name: str, create: bool) -> int | None:
    """digiKam's internal tag "/_Digikam_Internal_Tags_/<name>", made as
    TagsCache::getOrCreateInternalTag makes it when it is not there yet."""
    root = _tag_id(conn, 0, INTERNAL_TAGS, create)
    tag = None if root is None else _tag_id(conn, root, name, create)
    if create:
        for tag_id in (root, tag):
            if conn.execute("SELECT 1 FROM TagProperties WHERE tagid = ? AND property = ?", [tag_id, INTERNAL_PROPERTY]).fetchone() is None:
                conn.execute("INSERT INTO TagProperties (tagid, property, value) VALUES (?, ?, NULL)", [tag_id, INTERNAL_PROPERTY])
    return tag


def _pick_tag_ids(conn: sqlite3.Connection) -> dict[int, int]:
    """tag id -> pick label, for the pick label tags the database has."""
    found = {}
    for label, name in PICK_TAGS.items():
        tag_id = _internal_tag(conn, name, create=False)
        if tag_id is not None:
            found[tag_id] = label
    return found


def pick_of(conn: sqlite3.Connection, image_id: int) -> int | None:
    """The image's pick label (0..3), None when it has no pick label tag."""
    tags = _pick_tag_ids(conn)
    if not tags:
        return None
    rows = conn.execute(f"SELECT tagid FROM ImageTags WHERE imageid = ? AND tagid IN ({','.join('?' * len(tags))})", [image_id, *tags])
    labels = sorted(tags[tag_id] for (tag_id,) in rows)
    return labels[-1] if labels else None


def set_pick(conn: sqlite3.Connection, image_id: int, label: int | None) -> None:
    """The image's pick label becomes `label` (None: no pick label tag at all), the one
    pick label it has, as ItemInfo::setPickLabel leaves it."""
    tags = _pick_tag_ids(conn)
    if tags:
        conn.execute(f"DELETE FROM ImageTags WHERE imageid = ? AND tagid IN ({','.join('?' * len(tags))})", [image_id, *tags])
    if label is not None:
        conn.execute("INSERT INTO ImageTags (imageid, tagid) VALUES (?, ?)", [image_id, _internal_tag(conn, PICK_TAGS[label], create=True)])


def leader_of(conn: sqlite3.Connection, image_id: int) -> int | None:
    """The image this one is grouped under (ItemInfo::groupImageId), None if none."""
    row = conn.execute(
        "SELECT object FROM ImageRelations WHERE subject = ? AND type = ? ORDER BY rowid LIMIT 1", [image_id, GROUPED]
    ).fetchone()
    return None if row is None else row[0]


def followers_of(conn: sqlite3.Connection, image_id: int) -> list[int]:
    """The images grouped under this one."""
    rows = conn.execute("SELECT subject FROM ImageRelations WHERE object = ? AND type = ? ORDER BY subject", [image_id, GROUPED])
    return [subject for (subject,) in rows]


def set_leader(conn: sqlite3.Connection, image_id: int, leader: int | None) -> None:
    """Group the image under `leader` (None: in no group), as digiKam's addToGroup and
    removeFromGroup leave its rows."""
    conn.execute("DELETE FROM ImageRelations WHERE subject = ? AND type = ?", [image_id, GROUPED])
    if leader is not None:
        conn.execute("REPLACE INTO ImageRelations (subject, object, type) VALUES (?, ?, ?)", [image_id, leader, GROUPED])
