"""The index: an SQLite sidecar (via sqlite-utils) holding files, embeddings, scores, runs.

The store is one package: `Index` (here) opens the file, checks it, migrates it and owns
its transactions and the library's settings (table meta); each family of tables has an
accessor, an attribute of the Index, that holds all SQL on those tables:

  index.images      images       one row per photo file: path, size, mtime_ns, fingerprint,
                                 status, error
                    scan_errors  files a scan found but could not index
  index.embeddings  backbones    one row per CLIP backbone: key, dims, preprocessing,
                                 projection matrix
                    embeddings   pooled image features (float16) per (image, backbone) +
                                 projected norm
  index.scores      heads        every head that has scored something: id (name), hash, metadata
                    scores       per (head, image): score, std, and the batch that wrote it
                    score_batches  one row per write of scores: its provenance (head hash,
                                 backbone, preprocess) and time
  index.runs        runs         every rebuild/rescore/...: what it did and with which settings
  index.vectors     embedding_generations  when a backbone's vectors last changed; the
                                 matrix files beside the index derived from embeddings
  index.journal     rating_writes  every value written into a photo manager (journal.py)
  index.culling     captures, cull_groups, cull_members   culling's facts and groups (culling.py)
  (the Index)       meta         schema version, library roots

The tables themselves are made by schema.py's migrations.

WAL mode lets readers (the CLI, the gallery, darktable's plugin) work while the indexer
writes; a busy timeout rides out short locks from a concurrent writer.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Iterable, Iterator

import sqlite_utils

from . import culling as store_culling, embeddings, images, journal, runs, schema, scores, vectors
from .embeddings import Embeddings
from .images import Images
from .runs import Runs
from .schema import ERROR, MIGRATIONS, MISSING, NEW, OK, SCHEMA_VERSION, utcnow  # noqa: F401 - importable from the store
from .scores import Scores
from .vectors import Vectors
from ...errors import IndexUnavailable

BUSY_TIMEOUT_MS = 30_000
CACHE_KIB = 65_536  # page cache per connection
PAGE_SIZE = 16_384  # bytes, for new databases
WAL_CHECKPOINT_BYTES = 64 << 20


# --- what a database is, and what went wrong with it ----------------------------------

# Stamped into the header of every index (SQLite's field for "which program's file is
# this"): a command given another program's database refuses it before writing a byte.
APPLICATION_ID = 0x41455349  # "AESI"
# Indexes made before the stamp are known by the tables every schema has had.
INDEX_TABLES = {"meta", "images", "backbones"}

# A full quick_check of a 100k-photo index (200 MB) takes 0.37 s warm, so ~4 s at a million:
# ten times what `top` itself takes there. Below this size it takes under 0.1 s and every
# command opened by the CLI runs it; above, commands rely on SQLite's checks of the pages
# they read (a damaged one raises, and becomes exit 5) and `aes-index doctor` checks all.
CHECK_ON_OPEN_BYTES = 32 << 20

REPAIR = (
    "restore it from a backup, or delete it and run `aes-index rebuild ROOT` to build it anew "
    "(every photo is decoded again; the run history and the journal that `ratings undo` reads are lost, "
    "the stars already written stay)"
)
# Problems of the index file itself, by SQLite's primary result code: each is one line and
# exit 5. Other codes (a constraint, bad SQL, a closed connection) are bugs and stay so.
INDEX_PROBLEMS = {
    "SQLITE_CORRUPT": "index {path} is damaged ({error}): " + REPAIR,
    # Maybe no index at all (--db photo.jpg): no advice to delete it.
    "SQLITE_NOTADB": "cannot open index {path}: {error}: pass --db with an aes-index index "
    "(if this was one, it is damaged: restore it from a backup, or move it aside and run `aes-index rebuild ROOT`)",
    "SQLITE_FULL": "no space left for index {path} ({error}): free some disk space, then run the command again "
    "(finished work is saved)",
    "SQLITE_IOERR": "cannot read or write index {path} ({error}): check the disk, then run `aes-index doctor`",
    "SQLITE_BUSY": "index {path} is locked by another program ({error}): let it finish, then run the command again",
    "SQLITE_LOCKED": "index {path} is locked ({error}): let the other command finish, then run this one again",
    "SQLITE_READONLY": "cannot write index {path} ({error}): the file or its folder is read-only",
    "SQLITE_PERM": "cannot write index {path} ({error}): permission denied",
    "SQLITE_CANTOPEN": "cannot open index {path} ({error})",
}
# Python before 3.11 gives no result code: the messages SQLite uses for each.
_CODE_BY_MESSAGE = [
    ("malformed", "SQLITE_CORRUPT"), ("not a database", "SQLITE_NOTADB"), ("is full", "SQLITE_FULL"),
    ("disk i/o error", "SQLITE_IOERR"), ("database is locked", "SQLITE_BUSY"), ("table is locked", "SQLITE_LOCKED"),
    ("readonly database", "SQLITE_READONLY"), ("unable to open", "SQLITE_CANTOPEN"),
]


def index_error(path: Path, exc: BaseException) -> IndexUnavailable | None:
    """The one line for a problem with the index file (damaged, full, locked...), or None
    when `exc` is not one: then it is a bug, and is reported as such."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return IndexUnavailable(INDEX_PROBLEMS["SQLITE_FULL"].format(path=path, error=exc.strerror))
    if not isinstance(exc, sqlite3.DatabaseError):
        return None
    template = INDEX_PROBLEMS.get(_result_code(exc))
    return None if template is None else IndexUnavailable(template.format(path=path, error=exc))


def _result_code(exc: sqlite3.DatabaseError) -> str | None:
    """SQLite's primary result code: SQLITE_IOERR_WRITE -> SQLITE_IOERR."""
    name = getattr(exc, "sqlite_errorname", None)
    if name:
        return "_".join(name.split("_")[:2])
    message = str(exc).lower()
    return next((code for text, code in _CODE_BY_MESSAGE if text in message), None)


def _concerns_index(exc: BaseException, path: Path) -> bool:
    """Whether `exc` is about the index: from SQL run on it, or about one of its files
    (the database, its -wal and -shm, its lock files), not a photo's or a sidecar's."""
    if isinstance(exc, OSError):
        return str(exc.filename or "").startswith(str(path))
    return _raised_by_index_code(exc)


def _raised_by_index_code(exc: BaseException) -> bool:
    """Whether `exc` comes from SQL run on the index: it was raised in this package (the
    Index, schema.py's migrations and the accessors: images, embeddings, scores, runs,
    journal, culling) or in sqlite-utils (all SQL on the index runs there), not, say, in
    digiKam's database, which a command opens while it holds the index."""
    frame = exc.__traceback__
    if frame is None:
        return False
    while frame.tb_next is not None:
        frame = frame.tb_next
    source = os.path.abspath(frame.tb_frame.f_code.co_filename)
    return source in _INDEX_CODE or source.startswith(os.path.dirname(sqlite_utils.__file__) + os.sep)


# The store's modules: every line of SQL on the index is in one of them.
_INDEX_CODE = frozenset(
    os.path.abspath(source)
    for source in (__file__, *(m.__file__ for m in (schema, images, embeddings, scores, runs, journal, store_culling, vectors)))
)


def _connect(path: Path, read_only: bool) -> sqlite3.Connection:
    if not read_only:
        return sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    uri = path.absolute().as_uri()  # percent-escaped: any name works
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opening is lazy: read now
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if not _may_read_immutable(path, exc):
            raise
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None)


def _may_read_immutable(path: Path, exc: sqlite3.OperationalError) -> bool:
    """A read-only connection to a WAL database needs its -shm file, and creates it (and
    -wal) when the folder is writable. In a read-only folder without them SQLite can only
    read the file as immutable, which is right only if nothing writes it: a WAL writer keeps
    its -wal file while it is open, so without one nothing does."""
    cannot_create = _result_code(exc) in ("SQLITE_READONLY", "SQLITE_CANTOPEN")
    folder_read_only = not os.access(path.absolute().parent, os.W_OK)
    return cannot_create and folder_read_only and not Path(f"{path}-wal").exists()


def _refuse_foreign(conn: sqlite3.Connection, path: Path) -> None:
    """Nothing is created in, and no PRAGMA writes to, a database that is neither empty nor
    an index: another program's file is refused as it was found."""
    stamp = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    if stamp == APPLICATION_ID or (stamp == 0 and INDEX_TABLES <= set(tables)):
        return
    if stamp == 0 and not tables:  # a new database (or one whose creation was cut short)
        return
    holds = f"tables {', '.join(tables[:8])}{', ...' if len(tables) > 8 else ''}" if tables else "no tables"
    owner = f", application_id {stamp:#x}" if stamp else ""
    raise IndexUnavailable(f"{path} is not an aes-index index (it holds {holds}{owner}): pass --db with an aes-index index")


def discard_unused(path: Path) -> bool:
    """Remove an index that holds nothing worth keeping (no embedding, no score, no journal
    row), with the files SQLite and our locks keep beside it: what a first `rebuild` that
    failed before scoring anything (offline, no weights) would otherwise leave in the
    user's folder. Returns whether it was removed; an index with anything in it stays."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            holds = any(
                conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
                for table in ("embeddings", "scores", journal.TABLE)
            )
    except sqlite3.Error:
        return False  # not ours to judge: leave it
    if holds:
        return False
    for suffix in ("", "-wal", "-shm", "-journal", ".writer.lock", ".ratings.lock", ".watch.lock", ".vectors.lock"):
        with suppress(FileNotFoundError):
            path.with_name(path.name + suffix).unlink()
    with suppress(OSError):  # the vector store's folder: empty, since the index held no embedding
        path.with_name(path.name + ".vectors").rmdir()
    return True


class Index:
    """A library's index database. Use as a context manager, or call close()."""

    def __init__(self, path: str | os.PathLike, create: bool = True, read_only: bool = False):
        """Open (and with `create`, make) the index at `path`.

        `read_only` is for commands that only read (stats, top, doctor): the file is opened
        so that nothing can write it. No WAL switch, no stamp, and no migration: an index
        from an older schema is refused with a line that says how to upgrade it, because
        a reader must never change a file (another program may be reading it, or the disk
        may be read-only), and the first writing command upgrades it anyway.
        """
        self.path = Path(path)
        self.read_only = read_only
        if (read_only or not create) and not self.path.is_file():
            raise IndexUnavailable(f"no index at {self.path}; run `aes-index rebuild PATH` first")
        try:
            if create and not read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = _connect(self.path, read_only)
            self.db = sqlite_utils.Database(conn)
            try:
                self._configure()
            except BaseException:
                conn.close()
                raise
        except sqlite3.DatabaseError as exc:
            raise (index_error(self.path, exc) or IndexUnavailable(f"cannot open index {self.path}: {exc}")) from exc
        except OSError as exc:
            raise IndexUnavailable(f"cannot create index {self.path}: {exc.strerror or exc}") from exc

    def _configure(self) -> None:
        _refuse_foreign(self.db.conn, self.path)  # before any PRAGMA that writes
        self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.db.execute("PRAGMA foreign_keys = ON")
        # 64 MB of page cache (SQLite's default is 2 MB), for the scans and lookups over
        # a million rows. Allocated as used, so a small library pays nothing for it.
        self.db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        self.db.execute("PRAGMA temp_store = MEMORY")  # Scores.put's staging table
        if self.read_only:
            self._refuse_other_schema()
        else:
            self._configure_writer()
            self._migrate()
            self._stamp()
        self.journal = journal.Journal(self.db)
        self.culling = store_culling.CullingTables(self.db)
        self.embeddings = Embeddings(self.db, self.path, BUSY_TIMEOUT_MS / 1000)
        self.scores = Scores(self.db)
        self.runs = Runs(self.db)
        self.vectors = Vectors(self.db, self.path)  # a matrix file per backbone, derived from embeddings
        # A changed photo's scores, embeddings and capture facts go with its old pixels.
        self.images = Images(self.db, derived=(self.scores, self.embeddings, self.culling))

    def _configure_writer(self) -> None:
        # Applies to a new database only (an existing one keeps its page size). Rows of
        # 1.5 KB vectors want big pages: a 4 KB page holds two of them.
        self.db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        # Only when it isn't WAL yet: the switch takes a lock, and an index a rebuild and
        # the watcher have open answers "database is locked" at once, whatever the
        # busy timeout, to a connection that asks for it again while they write.
        if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across app crashes
        # Checkpoint the WAL into the database every 64 MB instead of every 1000 pages:
        # each checkpoint syncs the file, and a million-row rescore would do it after
        # every transaction. Same durability (WAL + synchronous=NORMAL), fewer fsyncs.
        page_size = self.db.execute("PRAGMA page_size").fetchone()[0]
        self.db.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_BYTES // page_size}")

    def _stamp(self) -> None:
        """Mark the file as an index (new ones, and those made before the stamp existed)."""
        if self.db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def _refuse_other_schema(self) -> None:
        version = self.schema_version()
        self._refuse_newer(version)
        if version == 0:
            raise IndexUnavailable(f"index {self.path} is empty: run `aes-index rebuild PATH` first")
        if version < SCHEMA_VERSION:
            raise IndexUnavailable(
                f"index {self.path} has schema {version}, older than this aes-index's ({SCHEMA_VERSION}): "
                "run any writing command, e.g. `aes-index rebuild`, to upgrade it"
            )

    def check_on_open(self) -> None:
        """The CLI's check of an index it opens: the structure of every page, when that is
        cheap (see CHECK_ON_OPEN_BYTES); a damaged index is refused with how to repair it."""
        if self.path.stat().st_size > CHECK_ON_OPEN_BYTES:
            return
        try:
            problems = self.integrity()
        except sqlite3.DatabaseError as exc:  # too damaged to check
            raise (index_error(self.path, exc) or IndexUnavailable(f"cannot check index {self.path}: {exc}")) from exc
        if problems != "ok":
            raise IndexUnavailable(INDEX_PROBLEMS["SQLITE_CORRUPT"].format(path=self.path, error=problems))

    def integrity(self, most: int = 5) -> str:
        """"ok", or the first `most` problems SQLite's quick_check finds (it reads every page
        and checks their structure, not the values in rows), joined with "; "."""
        rows = self.db.execute(f"PRAGMA quick_check({int(most)})").fetchall()
        lines = [line for row in rows for line in row[0].splitlines() if not line.startswith("*** in database")]
        return "; ".join(lines)  # one line, for doctor's report and for error messages

    # --- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        self.db.conn.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        """Close; a damaged, full or locked index met by the code in the `with` block
        becomes IndexUnavailable (one line, exit 5) here, in one place for every command."""
        self.close()
        if exc is not None and _concerns_index(exc, self.path):
            problem = index_error(self.path, exc)
            if problem is not None:
                raise problem from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write: all of it lands, or (on any error, Ctrl-C included) none of it."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            # SQLite may have rolled back already (a full disk, an I/O error): a second
            # ROLLBACK would then hide the real error behind "no transaction is active".
            if self.db.conn.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        self._refuse_newer(self.schema_version())
        for target, migrate in MIGRATIONS:
            if self.schema_version() >= target:
                continue
            with self.transaction():
                # Re-read inside the write lock: another process may have just migrated.
                if self.schema_version() < target:
                    migrate(self.db)
                    self.db.execute(f"PRAGMA user_version = {target}")

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise IndexUnavailable(
                f"index {self.path} has schema {version}, newer than this aes-index ({SCHEMA_VERSION}); upgrade aes-index"
            )

    # --- meta ------------------------------------------------------------------------

    def get_meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value) -> None:
        self.db["meta"].upsert({"key": key, "value": json.dumps(value)}, pk="key")

    def roots(self) -> list[str]:
        return self.get_meta("roots", [])

    def add_roots(self, roots: Iterable[str]) -> None:
        known = self.roots()
        self.set_meta("roots", known + [r for r in roots if r not in known])
