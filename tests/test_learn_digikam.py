"""digiKam's database as `aes-index learn` reads it: read-only (the file stays byte for
byte), a person's ratings only (a rating we synced there is ours). The schema is digiKam's
own (tests/test_digikam.py builds it from Debian's digikam-data)."""

from __future__ import annotations

import hashlib
import sqlite3
from urllib.parse import quote

from aes_index import api
from aes_index.index.store import Index
from aes_index.targets.digikam import image_key
from aes_index.targets.protocol import Write
from test_digikam import create_digikam_db, dbconfig_xml, digikam_statements  # noqa: F401 - fixtures
from test_learn import library  # noqa: F401 - fixture


def test_digikams_ratings_are_read_read_only_and_only_a_persons_count(library, digikam_statements, tmp_path):  # noqa: F811
    db = tmp_path / "digikam" / "digikam4.db"
    db.parent.mkdir()
    create_digikam_db(db, digikam_statements)
    root = library["root"]
    ids = {}
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO AlbumRoots (id, label, status, type, identifier, specificPath) VALUES (1, 'Photos', 0, 1, ?, '/')",
                     ["volumeid:?path=" + quote(str(root), safe="/")])
        folders = sorted({p.parent.name for p in library["paths"][:40]})
        album = {name: conn.execute("INSERT INTO Albums (albumRoot, relativePath) VALUES (1, ?)", [f"/{name}"]).lastrowid for name in folders}
        for i, path in enumerate(library["paths"][:40]):
            image_id = conn.execute("INSERT INTO Images (album, name, status, category) VALUES (?, ?, 1, 1)", [album[path.parent.name], path.name]).lastrowid
            ids[path] = image_id
            rating = 2 + i % 4 if i < 25 else -1  # 25 rated (five of them by our sync), 15 without a rating
            conn.execute("INSERT INTO ImageInformation (imageid, rating) VALUES (?, ?)", [image_id, rating])
    with Index(library["db"]) as index:
        run_id = index.journal.new_run_id()
        for i, path in enumerate(library["paths"][20:25], 20):  # `digikam sync` wrote these: ours
            index.journal.record(run_id, Write(target="digikam", place=image_key(db.resolve(), ids[path]), image_path=str(path), old=None, new=2 + i % 4))
    before = hashlib.sha256(db.read_bytes()).hexdigest()

    report = api.learn(library["settings"], api.learn_places(library["settings"], digikam_db=db))

    assert report["found"]["digikam"] == 20
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["digikam4.db"]
