"""The real digiKam 7.9 shows culling's marks: our keeper's pick label as "Accepted", the
burst grouped under it.

1. `apply-culling` writes the sidecars; digiKam (under Xvfb, test_digikam_real's harness,
   "Read from sidecar files" on) scans the library: its database then holds digiKam's own
   internal tag "Pick Label Accepted" on the keeper, read from our digiKam:PickLabel, and
   our flag tags on the blurred frames.
2. With digiKam stopped, `digikam cull` groups the burst in that same database; digiKam
   starts again on it and scans: the groups, the one pick label tag per image and the tag
   tree stay as we wrote them (digiKam neither drops nor duplicates anything). (Its album
   view, looked at once by hand, shows the burst as one stack of 4 under burst_1.jpg with
   our "keeper" tag: 3 items of 6.)
3. A group over two albums: the burst in the shoot's album, an export of its sharp frame in
   exports/ that the person accepted (its sidecar's pick label, which digiKam reads), so the
   keeper is the export. After `digikam cull` and digiKam's own scan of its database, each
   album shows its photos (test_culling_marks.album_view counts them with digiKam's rule):
   the shoot's burst is one stack under its sharp frame, not hidden under the export
   ("0 items - 6 items hidden" before). (Its album view, looked at once by hand after this
   test, headed "Albums/Photos - 3 Items": the stack, bright.jpg, single.jpg; after the
   code before the fix, "2 Items": the burst gone, as album_view counts.)
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from aes_index.errors import ExitCode
from conftest import run_cli
from aes_index.formats.xmp import write_sidecar
from test_culling_marks import BLURRED, BURST, EXPORT, SHARP, album_view, make_library, make_library_with_export
from test_digikam_real import run_digikam

pytestmark = [pytest.mark.external, pytest.mark.slow]

ACCEPTED = "Pick Label Accepted"


def digikam_view(db: Path) -> dict:
    """What digiKam's database says of each photo: pick label tags, other tags, group leader."""
    with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)) as conn:
        names = dict(conn.execute("SELECT id, name FROM Images"))
        tags: dict[str, set[str]] = {name: set() for name in names.values()}
        for image_id, parent, name in conn.execute(
            "SELECT it.imageid, p.name, t.name FROM ImageTags it JOIN Tags t ON t.id = it.tagid LEFT JOIN Tags p ON p.id = t.pid"
        ):
            tags[names[image_id]].add(f"{parent}/{name}")
        groups = {names[s]: names[o] for s, o in conn.execute("SELECT subject, object FROM ImageRelations WHERE type = 2")}
        tag_rows = sorted(conn.execute("SELECT pid, name FROM Tags"))
    return {"tags": tags, "groups": groups, "tag_rows": tag_rows}


def run_all(capsys, index, *commands) -> None:
    """Each command through the CLI on the index `index`, each one succeeding."""
    for argv in commands:
        code, _, err = run_cli(capsys, *argv, "--db", index)
        assert code == ExitCode.OK, err


def test_digikam_shows_our_keeper_accepted_and_the_burst_grouped(tmp_path, model_args, capsys):
    root = tmp_path / "Photos"
    make_library(root)
    index = tmp_path / "index.db"
    run_all(capsys, index, ("rebuild", root, *model_args, "--workers", "0"), ("cull",), ("apply-culling",))

    names = {p.name for p in root.glob("*.jpg")}
    run_dir = tmp_path / "digikam"
    run_digikam(run_dir, root, names)
    db = run_dir / "db" / "digikam4.db"
    first = digikam_view(db)
    # digiKam read our digiKam:PickLabel 3 as its own pick label "Accepted"
    assert first["tags"][SHARP] == {f"_Digikam_Internal_Tags_/{ACCEPTED}", "Aesthetic/keeper"}, first["tags"][SHARP]
    for name in BLURRED:
        assert "Aesthetic/blurry" in first["tags"][name], (name, first["tags"][name])
        assert not any("Pick Label" in tag for tag in first["tags"][name])
    assert first["groups"] == {}  # grouping is in no metadata: digiKam learns it from its database only

    code, out, err = run_cli(capsys, "digikam", "cull", "--db", db, "--index", index, "--json")
    assert code == ExitCode.OK, err
    assert json.loads(out)["written"]["group"] == 3
    written = digikam_view(db)
    assert written["groups"] == {name: SHARP for name in BLURRED}

    run_digikam(run_dir, root, names)
    second = digikam_view(db)
    assert second["groups"] == {name: SHARP for name in BLURRED}  # digiKam keeps our groups
    assert second["tags"] == written["tags"] and second["tag_rows"] == written["tag_rows"]
    assert sorted(BURST) == sorted([SHARP, *BLURRED])


def test_digikam_shows_the_shoot_album_whole_when_the_keeper_is_an_export_in_another_album(tmp_path, model_args, capsys):
    root = tmp_path / "Photos"
    make_library_with_export(root)
    write_sidecar(root / "exports" / f"{EXPORT}.xmp", pick=3)  # the person accepted the export
    index = tmp_path / "index.db"
    run_all(capsys, index, ("rebuild", root, *model_args, "--workers", "0"), ("cull",))

    names = {p.name for p in root.rglob("*.jpg")}
    run_dir = tmp_path / "digikam"
    run_digikam(run_dir, root, names)
    db = run_dir / "db" / "digikam4.db"
    assert f"_Digikam_Internal_Tags_/{ACCEPTED}" in digikam_view(db)["tags"][EXPORT]  # read from the sidecar
    assert album_view(db) == {"/": {*BURST, "bright.jpg", "single.jpg"}, "/exports": {EXPORT}}  # digiKam's albums

    code, out, err = run_cli(capsys, "digikam", "cull", "--db", db, "--index", index, "--json")
    assert code == ExitCode.OK, err
    run_digikam(run_dir, root, names)
    seen = digikam_view(db)
    assert seen["groups"] == {name: SHARP for name in BLURRED}  # the shoot's stack, under its sharp frame
    assert album_view(db) == {"/": {SHARP, "bright.jpg", "single.jpg"}, "/exports": {EXPORT}}
    assert "Aesthetic/keeper" in seen["tags"][EXPORT]
    assert all("Aesthetic/keeper in another folder" in seen["tags"][name] for name in BURST), seen["tags"]
