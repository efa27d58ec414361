"""The index's tables as each schema version made them, and the values their rows hold.

Every table is created or changed here, by one migration per schema version (an index
of any older version is upgraded by the next writing command: Index._migrate). The SQL
that reads and writes the tables is in the accessor of each family: images.py (images,
scan_errors), embeddings.py (backbones, embeddings), scores.py (heads, scores,
score_batches), runs.py (runs), journal.py (rating_writes), culling.py (captures,
cull_groups, cull_members); `meta` is the Index's own.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlite_utils

from . import culling as store_culling, journal

SCHEMA_VERSION = 8

# Image statuses (images.status)
NEW, OK, ERROR, MISSING = "new", "ok", "error", "missing"


def utcnow() -> str:
    """The time rows are stamped with (first_seen, updated, created, scored_at, started...)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _migrate_to_1(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["images"].create(
        {
            "id": int, "path": str, "size": int, "mtime_ns": int, "fingerprint": str,
            "status": str, "error_code": str, "error": str, "width": int, "height": int,
            "first_seen": str, "updated": str,
        },
        pk="id", not_null={"path", "status"},
    )
    db["images"].create_index(["path"], unique=True)
    db["images"].create_index(["fingerprint"])
    db["images"].create_index(["status"])
    db["backbones"].create(
        {"id": int, "key": str, "model": str, "pretrained": str, "pooled_dim": int, "embed_dim": int,
         "preprocess": str, "projection": bytes, "first_used": str},
        pk="id", not_null={"key"},
    )
    db["backbones"].create_index(["key"], unique=True)
    db["embeddings"].create(
        {"image_id": int, "backbone_id": int, "vector": bytes, "proj_norm": float, "created": str},
        pk=("image_id", "backbone_id"),
        foreign_keys=[("image_id", "images", "id"), ("backbone_id", "backbones", "id")],
    )
    db["embeddings"].create_index(["backbone_id"])
    db["heads"].create(
        {"id": str, "hash": str, "kind": str, "backbone": str, "metadata": str, "first_used": str}, pk="id"
    )
    db["scores"].create(
        {"image_id": int, "head_id": str, "score": float, "std": float, "head_hash": str,
         "backbone_id": int, "preprocess": str, "scored_at": str},
        pk=("image_id", "head_id"),
        foreign_keys=[("image_id", "images", "id"), ("head_id", "heads", "id")],
    )
    db["scores"].create_index(["head_id", "score"])
    db["runs"].create(
        {"id": int, "command": str, "started": str, "finished": str, "status": str, "roots": str,
         "settings": str, "head_id": str, "backbone": str, "summary": str},
        pk="id",
    )
    journal.create_table(db)  # the undo journal lives in the same database


def _migrate_to_2(db: sqlite_utils.Database) -> None:
    """scores becomes one B-tree keyed by (head_id, image_id), without a rowid, and its
    provenance moves to score_batches: one row per write, which every score row of that
    write points to.

    Version 1 kept a rowid table, its (image_id, head_id) key and an index on
    (head_id, score), with the provenance strings repeated in every row: a rescore inserted
    a million 150-byte rows at random places of that score index, and writing them took
    16 s of a 28 s rescore. Keyed by head first, one head's scores are contiguous: a new
    head's rows are appended, `top` reads one range (and sorts it: 0.3 s for a million),
    and a lookup by (head, image) is one probe.
    """
    db.execute(
        "CREATE TABLE score_batches (id INTEGER PRIMARY KEY, head_id TEXT NOT NULL REFERENCES heads(id), "
        "head_hash TEXT, backbone_id INTEGER, preprocess TEXT, scored_at TEXT)"
    )
    # No foreign keys on scores: their checks (three lookups a row) took 1.3 s of a 9 s
    # rescore, and guard nothing that can happen. Scores are written only by Scores.put,
    # for images and a batch read from this index in the same transaction; images and
    # heads are never deleted (a vanished photo is marked missing). score_batches keeps its
    # key to heads: one check per write, not per row.
    db.execute(
        "CREATE TABLE scores_v2 (image_id INTEGER NOT NULL, head_id TEXT NOT NULL, score FLOAT, std FLOAT, "
        "batch INTEGER NOT NULL, PRIMARY KEY (head_id, image_id)) WITHOUT ROWID"
    )
    provenance = "head_id, head_hash, backbone_id, preprocess, scored_at"
    db.execute(f"INSERT INTO score_batches ({provenance}) SELECT DISTINCT {provenance} FROM scores")
    db.execute(f"CREATE INDEX batch_by_provenance ON score_batches ({provenance})")  # for the join below
    db.execute(
        "INSERT INTO scores_v2 SELECT s.image_id, s.head_id, s.score, s.std, b.id FROM scores s "
        "JOIN score_batches b ON b.head_id = s.head_id AND b.head_hash IS s.head_hash AND "
        "b.backbone_id IS s.backbone_id AND b.preprocess IS s.preprocess AND b.scored_at IS s.scored_at "
        "ORDER BY s.head_id, s.image_id"  # in key order: appended, not inserted at random
    )
    db.execute("DROP INDEX batch_by_provenance")
    db.execute("DROP TABLE scores")
    db.execute("ALTER TABLE scores_v2 RENAME TO scores")


def _migrate_to_3(db: sqlite_utils.Database) -> None:
    """The journal names the field each write set ("rating"; culling adds "pick", "group")."""
    journal.create_table(db)  # adds the columns a version-2 journal lacks
    db.execute(f"UPDATE {journal.TABLE} SET field = ? WHERE field IS NULL", [journal.RATING])


def _migrate_to_4(db: sqlite_utils.Database) -> None:
    """Culling: capture facts, groups and their members (culling.py). Photos indexed
    before have no facts: the next rebuild measures them (one decode each, no embedding)."""
    store_culling.create_tables(db)
    journal.create_table(db)  # adds the journal's index by photo, which culling asks


def _migrate_to_5(db: sqlite_utils.Database) -> None:
    """Files a scan found but could not index (a name that is not UTF-8, an unreadable
    folder): kept by the name a person can read, so `stats` and the gallery list them
    beside the decode errors. Each scan replaces those under the roots it walked. And the
    journal records each write before it is made (its columns state and hash_before)."""
    db["scan_errors"].create({"path": str, "code": str, "error": str, "seen": str}, pk="path", not_null={"code"})
    # The journal becomes write-ahead: a row is "pending" before its write (state, hash_before).
    journal.create_table(db)
    db.execute(f"CREATE INDEX IF NOT EXISTS rating_writes_pending ON {journal.TABLE} (state) WHERE state IS NOT NULL")


def _migrate_to_6(db: sqlite_utils.Database) -> None:
    """Capture facts say which copy of a picture is the original: how the file is encoded
    (RAW, lossless, a JPEG's quality) and the EXIF Software that wrote it."""
    store_culling.add_fact_columns(db)


def _migrate_to_7(db: sqlite_utils.Database) -> None:
    """Capture facts gain blown_highlights (the share of the frame in large clipped areas,
    which the overexposed flag reads). Older rows hold none: their facts version is older,
    so the next rebuild measures them again (one decode each, no embedding)."""
    store_culling.add_fact_columns(db)


def _migrate_to_8(db: sqlite_utils.Database) -> None:
    """Each backbone's embeddings carry a generation: a random token that triggers renew
    whenever a stored vector is deleted, replaced or updated (appends leave it, and add
    rows with higher rowids). The vector store (vectors.py), a matrix file derived from
    the embeddings, is current while its generation and last rowid are the index's.
    Idempotent: an index whose version says 7 but that already holds these (a copy forged
    or put back by hand) is brought to 8 all the same."""
    new_token = "lower(hex(randomblob(8)))"
    db.execute("CREATE TABLE IF NOT EXISTS embedding_generations (backbone_id INTEGER PRIMARY KEY REFERENCES backbones(id), generation TEXT NOT NULL)")
    db.execute(f"INSERT OR IGNORE INTO embedding_generations SELECT id, {new_token} FROM backbones")
    renew = f"INSERT OR REPLACE INTO embedding_generations (backbone_id, generation) VALUES ({{}}, {new_token});"
    # A new backbone starts with its own token: a new index at the same path never matches
    # a store file an older index left.
    db.execute(f"CREATE TRIGGER IF NOT EXISTS backbone_generation AFTER INSERT ON backbones BEGIN {renew.format('NEW.id')} END")
    db.execute(f"CREATE TRIGGER IF NOT EXISTS embedding_deleted AFTER DELETE ON embeddings BEGIN {renew.format('OLD.backbone_id')} END")
    db.execute(
        "CREATE TRIGGER IF NOT EXISTS embedding_updated AFTER UPDATE ON embeddings BEGIN "
        f"{renew.format('OLD.backbone_id')} {renew.format('NEW.backbone_id')} END"
    )
    # INSERT OR REPLACE deletes the row it replaces without firing delete triggers (SQLite
    # fires them only with recursive_triggers on): a replacement is seen before it happens.
    db.execute(
        "CREATE TRIGGER IF NOT EXISTS embedding_replaced BEFORE INSERT ON embeddings WHEN EXISTS "
        "(SELECT 1 FROM embeddings WHERE image_id = NEW.image_id AND backbone_id = NEW.backbone_id) "
        f"BEGIN {renew.format('NEW.backbone_id')} END"
    )


MIGRATIONS = [
    (1, _migrate_to_1), (2, _migrate_to_2), (3, _migrate_to_3), (4, _migrate_to_4), (5, _migrate_to_5), (6, _migrate_to_6),
    (7, _migrate_to_7), (8, _migrate_to_8),
]