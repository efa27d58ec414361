"""digiKam's database, digikam4.db: reading and writing its tables as digiKam itself does.

Images are matched to a path as digiKam's CollectionManager resolves them:

    AlbumRoots (identifier + specificPath) + Albums.relativePath + Images.name

Ratings live in ImageInformation.rating (-1: no rating; digiKam has no "rejected"), tags in
Tags and ImageTags (TagsTree is kept by digiKam's own triggers), pick labels as digiKam's
internal tags, groups in ImageRelations. How digiKam stores the last two is below
("digiKam's pick labels and groups"), with where in digiKam's source it was verified.

Never while digiKam runs: a session refuses when a digiKam process has this database open
(its open files in /proc, `digikam_holding`) or the database is locked (BEGIN EXCLUSIVE
with a short timeout), makes a backup beside the database with SQLite's backup API, then
holds the exclusive lock until it commits (`exclusively`).

All SQL on digiKam's database is here; targets/digikam.py is the target over it.
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

from ..errors import AesIndexError, ConfigError, ExitCode
from ..values import CULL_TAGS

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



def relative(tag: str) -> str:
    return tag.split("/", 1)[1] if tag.startswith(TAG_ROOT + "/") else tag


def relative_tags(conn: sqlite3.Connection, image_id: int) -> list[str]:
    """The image's tags below "Aesthetic", relative to it ("4 stars", "keeper")."""
    return [relative(tag) for tag in our_tags(conn, image_id)]


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
def exclusively(
    db_path: Path, dry_run: bool, lock_timeout: float, before_commit: Callable[[], None] = lambda: None, backup: bool = True,
) -> Iterator[tuple[sqlite3.Connection, str | None]]:
    """digiKam's database held exclusively, with the backup's path (None for a dry run, or
    without `backup`: the review page's decisions, one image each, backed up once per page).

    Committed at the end, right after `before_commit` (the journal records the session's
    writes there, ahead of them); rolled back for a dry run, or (by closing) on any error.
    """
    with closing(_connect(db_path, lock_timeout)) as conn:
        backup = None if dry_run or not backup else str(_backup_then_lock(conn, db_path))
        if backup is None:
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
    keep = [tag for tag in relative_tags(conn, image_id) if tag not in CULL_TAGS]
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


@contextmanager
def read_only(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A connection that only reads digiKam's database (SQLite URI mode=ro): what learning a
    person's taste needs, with digiKam running or not; the file stays byte for byte."""
    if not Path(db_path).is_file():
        raise DigikamUnavailable(f"no digiKam database at {db_path}")
    conn = sqlite3.connect(f"{Path(db_path).absolute().as_uri()}?mode=ro", uri=True, timeout=LOCK_TIMEOUT_S, isolation_level=None)
    try:
        _check_schema(conn, Path(db_path))
        yield conn
    except sqlite3.OperationalError as exc:
        raise DigikamUnavailable(f"cannot read {db_path}: {exc}") from None
    finally:
        conn.close()
