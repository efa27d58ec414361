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

Never while digiKam runs: a sync refuses when a digikam process exists (/proc/*/comm) or
the database is locked (BEGIN EXCLUSIVE with a short timeout), makes a backup beside the
database with SQLite's backup API, then holds the exclusive lock until it commits.
`undo` puts a sync run's ratings and tags back the same careful way.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .. import xmp
from ..errors import AesIndexError, ConfigError, ExitCode
from ..ratings import REJECTED
from ..journal import UndoAction, Write
from ..store import Index
from . import apply as targets
from .protocol import Place, Reading, Target, UndoResult, Wanted, kept_manual, restored

TARGET = "digikam"
TAG_ROOT = "Aesthetic"
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

    def __post_init__(self) -> None:
        self.db_path = Path(self.db_path).resolve()
        self.conn: sqlite3.Connection | None = None
        self._by_path: dict[str, list[DigikamImage]] = {}

    @property
    def place_prefix(self) -> str:
        return image_key(self.db_path, 0)[:-1]  # "<db path>#"

    @contextmanager
    def session(self, dry_run: bool) -> Iterator[None]:
        with _exclusively(self.db_path, dry_run, self.lock_timeout) as (conn, backup):
            self.conn = conn
            images = digikam_images(conn)
            self._by_path = {}
            for image in images:
                self._by_path.setdefault(image.path, []).append(image)
            self.extra = {"database": str(self.db_path), "backup": backup, "images": len(images), "matched": 0}
            try:
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
        if rating is None and sidecar.rating == REJECTED:
            # darktable's reject: digiKam has no such rating and shows "none", but it is
            # a person's judgement all the same.
            rating = REJECTED
        # digiKam read from the sidecar the stars we wrote there (aes:Stars == xmp:Rating):
        # they are ours, not a person's.
        ours = rating if sidecar.our_rating == rating else None
        return Reading(place, rating, token=rating, ours=ours)  # held exclusively: it stays this

    def write(self, reading: Reading, wanted: Wanted, dry_run: bool) -> Write | None:
        image_id = reading.place.ref
        prior_tags = our_tags(self.conn, image_id)
        set_rating(self.conn, image_id, wanted.stars)
        if wanted.tags:
            set_our_tags(self.conn, image_id, [f"{wanted.stars} stars"])
        return Write(
            target=TARGET, place=reading.place.key, image_path=reading.place.image_path, old=reading.value,
            new=wanted.stars, prior={"tags": prior_tags} if wanted.tags else None,
        )

    def undo(self, action: UndoAction, dry_run: bool) -> UndoResult:
        image_id = int(action.place.rsplit("#", 1)[1])
        if self.conn.execute("SELECT 1 FROM Images WHERE id = ?", [image_id]).fetchone() is None:
            return UndoResult(action, "missing", "digiKam no longer has this image")
        if "tags" in action.prior:
            set_our_tags(self.conn, image_id, [_relative(tag) for tag in action.prior["tags"]])
        current = rating_of(self.conn, image_id)
        if current != action.expected:
            return kept_manual(action, current)
        set_rating(self.conn, image_id, action.restore)
        return restored(action)


def _photo_sidecar(photo_path: str) -> xmp.SidecarInfo:
    """The photo's own sidecar as digiKam reads it (nothing when there is none, or we refuse it)."""
    try:
        return xmp.read_sidecar(xmp.sidecar_for(Path(photo_path)))
    except AesIndexError:
        return xmp.SidecarInfo(Path(photo_path), exists=False)


def sync(index: Index, db_path: Path, options, head_id: str, lock_timeout: float = LOCK_TIMEOUT_S) -> targets.ApplyReport:
    """Write the policy's stars (and tags) into digiKam's database for every matched photo."""
    from ..rate import plan

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


def image_key(db_path: Path, image_id: int) -> str:
    return f"{db_path}#{image_id}"


def _relative(tag: str) -> str:
    return tag.split("/", 1)[1] if tag.startswith(TAG_ROOT + "/") else tag


# --------------------------------------------------------------------------- safety


def running_digikam(proc: Path = Path("/proc")) -> list[int]:
    """Process ids whose name starts with "digikam" (Linux; elsewhere the lock check remains)."""
    pids = []
    for comm in proc.glob("[0-9]*/comm"):
        try:
            name = comm.read_text().strip()
        except OSError:
            continue  # the process ended while we looked
        if name.startswith("digikam"):
            pids.append(int(comm.parent.name))
    return pids


@contextmanager
def _exclusively(db_path: Path, dry_run: bool, lock_timeout: float) -> Iterator[tuple[sqlite3.Connection, str | None]]:
    """digiKam's database held exclusively, with the backup's path (None for a dry run).

    Committed at the end; rolled back for a dry run, or (by closing) on any error.
    """
    with closing(_connect(db_path, lock_timeout)) as conn:
        backup = None if dry_run else str(_backup_then_lock(conn, db_path))
        if dry_run:
            _begin_exclusive(conn, db_path)
        yield conn, backup
        conn.execute("ROLLBACK" if dry_run else "COMMIT")


def _connect(db_path: Path, lock_timeout: float) -> sqlite3.Connection:
    """A connection to digiKam's database, after making sure digiKam leaves it alone."""
    pids = running_digikam()
    if pids:
        raise DigikamUnavailable(f"digiKam is running (pid {', '.join(map(str, pids))}): quit it first, then sync")
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
