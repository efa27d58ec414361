"""darktable's own library (library.db), read-only: the ratings a person gave in darktable.

The darktable target (darktable.py) writes through darktable's Lua plugin, never into
library.db. Learning a person's taste (features/taste) reads it: the images, their film
roll folders, duplicates and stars. The file is opened read-only (SQLite URI mode=ro;
immutable only where nothing can be writing it) and left byte for byte as it was.

darktable keeps an image's stars in the low bits of images.flags (flags & 7: 0..5; 6 was
the reject of darktable before 3.0) and its reject in the bit DT_IMAGE_REJECTED (8)
(darktable src/common/image.h).
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

from ..errors import ConfigError
from ..values import REJECTED
from .darktable import DtImage

RATING_BITS = 0x7
OLD_REJECT = 6  # darktable < 3.0: "rating" 6 meant rejected
REJECTED_FLAG = 0x8  # DT_IMAGE_REJECTED
REQUIRED_TABLES = ("images", "film_rolls")


def rating_of_flags(flags: int) -> int:
    """darktable's rating of an image from its flags: -1 rejected, else 0..5 stars."""
    stars = flags & RATING_BITS
    if flags & REJECTED_FLAG or stars == OLD_REJECT:
        return REJECTED
    return min(stars, 5)


def open_read_only(db_path: Path) -> sqlite3.Connection:
    """A connection that cannot change the file: mode=ro, or immutable where SQLite could not
    open it read-only otherwise (a read-only folder and no writer's -wal file)."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise ConfigError(f"no darktable library at {db_path} (pass --darktable-library, or leave it out)")
    uri = db_path.absolute().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=5, isolation_level=None)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        if os.access(db_path.absolute().parent, os.W_OK) or Path(f"{db_path}-wal").exists():
            raise ConfigError(f"cannot read darktable's library {db_path}") from None
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None)


def library_images(db_path: Path) -> list[DtImage]:
    """Every image of darktable's library: its file, duplicate index, rating and group, as
    the plugin would describe it (`ref` is darktable's image id)."""
    with closing(open_read_only(db_path)) as conn:
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot read darktable's library {db_path}: {exc}") from None
        missing = [name for name in REQUIRED_TABLES if name not in tables]
        if missing:
            raise ConfigError(f"{db_path} is not a darktable library (no {', '.join(missing)} table)")
        rows = conn.execute(
            "SELECT i.id, f.folder, i.filename, i.version, i.flags, i.group_id FROM images i "
            "JOIN film_rolls f ON f.id = i.film_id ORDER BY i.id"
        ).fetchall()
    return [
        DtImage(ref=image_id, path=os.path.join(folder, name), duplicate=int(version or 0),
                rating=rating_of_flags(int(flags or 0)), id=image_id, group=group_id)
        for image_id, folder, name, version, flags, group_id in rows
    ]
