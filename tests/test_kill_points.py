"""A kill at any moment never makes our write a person's, nor un-undoable.

Each run that writes into a photo manager is killed with SIGKILL at every point of its
write path, one run per point (tests/kill_helper.py enumerates them: the Nth time the
process reaches a point, it dies there). Then the library is used as a person would after
a crash: the same command again (its marks must not count as anyone's but ours: nothing
"kept yours", nothing "grouped by you"), and undo until nothing is left, which must give
back the state before, byte for byte for files and row for row for digiKam's database.

Targets: XMP sidecars (`apply-culling --reject`), EXIF in JPEGs (`apply-ratings --target
exif`), digiKam's database (`digikam cull`, `digikam sync`); darktable's plugin reports
(`applied`) are killed on the plugin's side: the answer's rows, journaled ahead, are
settled by the next request.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aes_index.errors import ExitCode
from conftest import cli_stdout, make_photo, run_cli
from test_culling_marks import make_library, snapshot_files
from test_digikam import create_digikam_db, dbconfig_xml, digikam_statements  # noqa: F401 - fixtures
from test_darktable import ask, images

HELPER = Path(__file__).with_name("kill_helper.py")
FILE_POINTS = ("before-journal-record", "before-file-write", "after-file-write", "before-journal-done")
DIGIKAM_POINTS = ("before-journal-record", "before-digikam-commit", "before-journal-done")


def killed_run(point: str, n: int, args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HELPER.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, str(HELPER), point, str(n), str(cwd / "counts.json"), "--", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )


def points_of(point: str, args: list, workdir: Path) -> int:
    """How often an uninterrupted run reaches `point` (on a copy, thrown away)."""
    done = killed_run(point, 0, args, workdir)
    assert done.returncode in (0, 3), done.stderr[-2000:]
    return json.loads((workdir / "counts.json").read_text())


def undo_everything(capsys, *args) -> None:
    for _ in range(10):
        code, out, err = run_cli(capsys, *args, "--json")
        assert code == ExitCode.OK, err
        results = json.loads(out)
        results = results["results"] if isinstance(results, dict) else results
        assert {r["status"] for r in results} <= {"restored", "deleted", "missing", "not written"}, results
        if not results:
            return
    pytest.fail("undo never came to an end")


# --------------------------------------------------------------------------- sidecars and EXIF


@pytest.fixture(scope="module")
def culled_library(tmp_path_factory, tiny_model) -> Path:
    """A culled library (a burst, an overexposed photo with a darktable sidecar, a single),
    built once; each kill starts from it as it was built (`fresh`)."""
    root = tmp_path_factory.mktemp("culled") / "lib"
    make_library(root / "Photos")
    cli_stdout("rebuild", root / "Photos", *model_options(tiny_model), "--db", root / "index.db")
    cli_stdout("cull", "--db", root / "index.db")
    return root


@pytest.fixture(scope="module")
def jpeg_library(tmp_path_factory, tiny_model) -> Path:
    root = tmp_path_factory.mktemp("jpegs") / "lib"
    for i in range(4):
        make_photo(root / "Photos" / f"IMG_{i}.jpg", seed=30 + i)
    cli_stdout("rebuild", root / "Photos", *model_options(tiny_model), "--db", root / "index.db")
    return root


def model_options(tiny_model) -> list:
    return ["--model", tiny_model["config"], "--pretrained", tiny_model["checkpoint"], "--device", "cpu", "--dtype", "fp32", "--workers", "0"]


def fresh(library: Path) -> Path:
    """The library as it was built, at its own path: the index holds its photos' absolute
    paths (and digiKam's album root names their folder), so a copy elsewhere would not do."""
    pristine = library.with_name(library.name + ".pristine")
    if not pristine.exists():
        shutil.copytree(library, pristine)
    shutil.rmtree(library)
    shutil.copytree(pristine, library)
    return library


def kill_everywhere(capsys, built: Path, tmp_path: Path, point: str, command: list, theirs: Callable[[dict], list], least: int):
    """Kill `command` at every time it reaches `point`, one fresh library each; then run it
    again (`theirs(report)`: what it counted as a person's must be nothing) and undo until
    nothing is left: the photos' files are as they were, byte for byte."""
    args = [*command, "--db", built / "index.db"]
    fresh(built)
    count = points_of(point, args, tmp_path)
    assert count >= least, f"{point}: reached {count} times"
    for n in range(1, count + 1):
        library = fresh(built)
        before = snapshot_files(library / "Photos")
        run = killed_run(point, n, args, tmp_path)
        assert run.returncode == -9, (point, n, run.returncode, run.stderr[-1000:])
        code, out, err = run_cli(capsys, *args, "--json")
        assert code == ExitCode.OK, err
        assert theirs(json.loads(out)) == [], (point, n, out)  # ours stayed ours
        undo_everything(capsys, "ratings", "undo", "--db", library / "index.db")
        assert snapshot_files(library / "Photos") == before, (point, n)


@pytest.mark.slow
@pytest.mark.parametrize("point", FILE_POINTS)
def test_apply_culling_killed_at_every_point_stays_ours_and_undoes(culled_library, tmp_path, capsys, point):
    kill_everywhere(capsys, culled_library, tmp_path, point, ["apply-culling", "--reject", "--treat-as-unrated", "1"],
                    lambda report: [*report["kept_yours"], *report["manual"]], least=5)


@pytest.mark.slow
@pytest.mark.parametrize("point", FILE_POINTS)
def test_exif_ratings_killed_at_every_point_stay_ours_and_undo(jpeg_library, tmp_path, capsys, point):
    kill_everywhere(capsys, jpeg_library, tmp_path, point, ["apply-ratings", "--target", "exif"],
                    lambda report: report["manual"], least=4)


# --------------------------------------------------------------------------- digiKam


DIGIKAM_TABLES = ("ImageInformation", "ImageTags", "Tags", "TagsTree", "TagProperties", "ImageRelations")


def digikam_rows(db: Path) -> dict[str, list]:
    with sqlite3.connect(db) as conn:
        return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr) for table in DIGIKAM_TABLES}


@pytest.fixture(scope="module")
def digikam_library(culled_library, digikam_statements) -> Path:
    """The culled library with digiKam's database beside it, holding its photos as
    digiKam's scan would (album root: the photos' folder)."""
    from urllib.parse import quote

    library = fresh(culled_library).with_name("dk")
    shutil.copytree(culled_library, library)  # the index names the photos of culled_library: they are the ones used
    db = library / "digikam" / "digikam4.db"
    db.parent.mkdir()
    create_digikam_db(db, digikam_statements)
    photos = culled_library / "Photos"
    with sqlite3.connect(db) as conn:
        identifier = "volumeid:?path=" + quote(str(photos), safe="/")
        conn.execute("INSERT INTO AlbumRoots (id, label, status, type, identifier, specificPath) VALUES (1, 'Photos', 0, 1, ?, '/')", [identifier])
        conn.execute("INSERT INTO Albums (id, albumRoot, relativePath) VALUES (1, 1, '/')")
        for name in sorted(p.name for p in photos.glob("*.jpg")):
            image_id = conn.execute("INSERT INTO Images (album, name, status, category) VALUES (1, ?, 1, 1)", [name]).lastrowid
            conn.execute("INSERT INTO ImageInformation (imageid, rating) VALUES (?, -1)", [image_id])
    return library


@pytest.mark.slow
@pytest.mark.parametrize("command", [["digikam", "cull", "--reject"], ["digikam", "sync"]], ids=["cull", "sync"])
@pytest.mark.parametrize("point", DIGIKAM_POINTS)
def test_digikam_killed_at_every_point_stays_ours_and_undoes(digikam_library, culled_library, tmp_path, capsys, point, command):
    def args(library: Path) -> list:
        return [*command, "--db", library / "digikam" / "digikam4.db", "--index", library / "index.db"]

    fresh(culled_library)
    count = points_of(point, args(fresh(digikam_library)), tmp_path)
    assert count >= 1, f"{point}: never reached"
    for n in range(1, count + 1):
        fresh(culled_library)
        library = fresh(digikam_library)
        before = digikam_rows(library / "digikam" / "digikam4.db")
        run = killed_run(point, n, args(library), tmp_path)
        assert run.returncode == -9, (point, n, run.returncode, run.stderr[-1000:])

        code, out, err = run_cli(capsys, *args(library), "--json")
        assert code == ExitCode.OK, err
        again = json.loads(out)
        assert again.get("grouped_by_you", 0) == 0 and again.get("kept_yours", []) == [], (point, n, again)
        assert again.get("skipped_manual", 0) == 0, (point, n, again)
        undo_everything(capsys, "digikam", "undo", "--db", library / "digikam" / "digikam4.db", "--index", library / "index.db")
        assert digikam_rows(library / "digikam" / "digikam4.db") == before, (point, n)


# --------------------------------------------------------------------------- darktable


@pytest.fixture
def dt_photos(tmp_path, model_args) -> dict:
    folder = tmp_path / "photos"
    paths = [str(make_photo(folder / f"IMG_{i}.jpg", seed=60 + i)) for i in range(4)]
    return {"paths": paths, "options": [*model_args, "--workers", "0", "--db", tmp_path / "index.db"]}


@pytest.mark.parametrize("plugin_applied", [True, False], ids=["applied-not-reported", "never-applied"])
def test_darktable_killed_before_its_report_stays_ours_and_undoes(dt_photos, tmp_path, capsys, plugin_applied):
    """darktable (or the plugin) dies between our answer and its `applied` report: the
    answer's rows, journaled ahead, are settled by the next request from what darktable
    shows: set (ours, undone by "remove our stars") or never set (nothing to undo)."""
    paths, options = dt_photos["paths"], dt_photos["options"]
    before = [0] * len(paths)
    answer = ask(capsys, tmp_path, "rate", {"images": images(paths, before)}, *options)
    set_to = {item["ref"]: item["rating"] for item in answer["images"] if "rating" in item}
    assert len(set_to) == len(paths)
    shown = [set_to[i + 1] if plugin_applied else 0 for i in range(len(paths))]  # no `applied` report, ever

    again = ask(capsys, tmp_path, "rate", {"images": images(paths, shown)}, *options)
    assert not any("by hand" in item["reason"] for item in again["images"]), again  # ours, not a person's
    if not plugin_applied:
        assert all(item.get("rating") == set_to[item["ref"]] for item in again["images"])  # asked again: never set
        return
    undo = ask(capsys, tmp_path, "undo", {"images": images(paths, shown)}, *options)
    assert sorted((i["ref"], i["rating"]) for i in undo["images"]) == [(ref, 0) for ref in range(1, len(paths) + 1)]


@pytest.mark.parametrize("plugin_applied", [True, False], ids=["applied-not-reported", "never-applied"])
def test_darktable_cull_killed_before_its_report_stays_ours_and_undoes(tmp_path, capsys, model_args, plugin_applied):
    root = tmp_path / "Photos"
    make_library(root)
    options = [*model_args, "--workers", "0", "--db", tmp_path / "index.db"]
    paths = sorted(str(p) for p in root.glob("*.jpg"))
    request = [{"ref": i + 1, "path": p, "duplicate": 0, "rating": 0, "id": 100 + i, "group": 100 + i, "group_size": 1, "tags": []}
               for i, p in enumerate(paths)]
    answer = ask(capsys, tmp_path, "cull", {"images": request}, *options, "--reject")
    (group,) = answer["groups"]
    leader = 100 + group["leader"] - 1
    if plugin_applied:  # darktable grouped, tagged and rejected as answered, then died before reporting
        for entry in request:
            if entry["ref"] in group["members"]:
                entry["group"], entry["group_size"] = leader, len(group["members"])
        for item in answer["images"]:
            entry = request[item["ref"] - 1]
            entry["tags"] = sorted(set(entry["tags"]) | set(item.get("attach", ())))
            entry["rating"] = item.get("rating", entry["rating"])

    again = ask(capsys, tmp_path, "cull", {"images": request}, *options, "--reject")
    assert again["left_alone"] == [], again  # our group is no person's
    undone = ask(capsys, tmp_path, "uncull", {"images": request}, *options)
    if not plugin_applied:
        assert undone["images"] == [] or all(set(i) == {"ref"} for i in undone["images"]), undone
        return
    ungrouped = {i["ref"] for i in undone["images"] if i.get("ungroup")}
    assert ungrouped == set(group["members"]) - {group["leader"]}, undone
    detached = {(i["ref"], tag) for i in undone["images"] for tag in i.get("detach", ())}
    attached = {(i["ref"], tag) for i in answer["images"] for tag in i.get("attach", ())}
    assert detached == attached, undone
    assert {i["ref"] for i in undone["images"] if i.get("rating") == 0} == {i["ref"] for i in answer["images"] if i.get("rating") == -1}
