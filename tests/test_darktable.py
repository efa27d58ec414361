"""The darktable plugin: its protocol, its installer, and the plugin itself in real darktable.

The protocol and installer tests run anywhere. The end-to-end test drives a real headless
darktable 4.2 (Debian package; Xvfb) with the installed plugin over a library whose file
names are hostile to shells, and reads back what darktable's own database says.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from aes_index.features import darktable
from aes_index.cli import main
from aes_index.errors import ExitCode
from aes_index.features.rating import plan
from aes_index.features.stars import RatingPolicy, stars_for
from aes_index.index.store import Index
from aes_index.formats.xmp import write_sidecar
from conftest import REPO_ROOT, make_photo
from test_readers import require_tool
import index_rows

PLUGIN = REPO_ROOT / "plugin" / "darktable" / "aesthetic.lua"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- protocol


def write_request(path: Path, images: list[dict], **extra) -> Path:
    """A request as the plugin writes it: UTF-8 JSON, file names as raw bytes."""
    body = json.dumps({"version": 1, "images": images, **extra}, ensure_ascii=False)
    path.write_bytes(body.encode("utf-8", "surrogateescape"))
    return path


def ask(capsys, tmp_path: Path, action: str, request: dict, *options) -> dict:
    """Run one protocol action through the CLI, as the plugin does; the decoded answer."""
    request_file = write_request(tmp_path / f"{action}.request", **request)
    response_file = tmp_path / f"{action}.response"
    code, out, err = run(capsys, "darktable", action, "--request", request_file, "--response", response_file, *options)
    assert code == ExitCode.OK, err
    return json.loads(response_file.read_bytes().decode("utf-8", "surrogateescape"))


@pytest.fixture
def dt_library(tmp_path, model_args) -> dict:
    """Ten photos, one with quotes and non-ASCII, and the options that reach the tiny model."""
    folder = tmp_path / "photos"
    names = [f"IMG_{i:04d}.jpg" for i in range(9)] + ["café 'x' \"$(y)\";.jpg"]
    paths = [make_photo(folder / name, seed=i) for i, name in enumerate(names)]
    db = tmp_path / "index.db"
    return {"paths": [str(p) for p in paths], "options": [*model_args, "--workers", "0", "--db", db], "db": db}


def images(paths: list[str], ratings: list[int]) -> list[dict]:
    return [{"ref": i + 1, "path": p, "duplicate": 0, "rating": r} for i, (p, r) in enumerate(zip(paths, ratings))]


def policy_stars(db: Path, head: str) -> dict[str, int]:
    with Index(db) as index:
        return {photo.path: photo.stars for photo in plan(index, head, RatingPolicy())}


def test_rate_follows_the_policy_and_keeps_manual_ratings(dt_library, tmp_path, capsys):
    paths, options = dt_library["paths"], dt_library["options"]
    ratings = [1] * 9 + [4]  # darktable's import default, and one photo a person rated 4
    answer = ask(capsys, tmp_path, "rate", {"images": images(paths, ratings)}, *options, "--treat-as-unrated", "1")

    stars = policy_stars(dt_library["db"], answer["head"])
    by_ref = {item["ref"]: item for item in answer["images"]}
    assert set(by_ref) == set(range(1, 11)) and answer["errors"] == []
    for ref, path in enumerate(paths, start=1):
        item = by_ref[ref]
        assert item["stars"] == stars[path]
        assert f"aesthetic|stars|{stars[path]}" in item["tags"]
        assert any(tag.startswith("aesthetic|score|") and tag.endswith("%") for tag in item["tags"])
        if ref == 10:
            assert "rating" not in item and "by hand" in item["reason"]  # manual ratings win
        else:
            assert item.get("rating", 1) == stars[path]  # 1 stays 1: nothing to write


def test_a_name_that_is_not_utf8_gets_an_error_and_the_others_their_answers(dt_library, tmp_path, capsys):
    """Request files carry raw bytes (read with surrogateescape); the index can't hold such a
    name (SQLite text is UTF-8), so that image gets an error and the rest are still rated."""
    odd = make_photo(tmp_path / "photos" / os.fsdecode(b"caf\xe9 $(y).jpg"), seed=42)
    request = images([*dt_library["paths"][:2], str(odd)], [0, 0, 0])
    answer = ask(capsys, tmp_path, "rate", {"images": request}, *dt_library["options"])
    assert [item["ref"] for item in answer["images"]] == [1, 2]
    assert answer["errors"] == [{"ref": 3, "error": "the file name is not valid UTF-8: the index cannot hold it"}]


def test_without_treat_as_unrated_darktables_default_star_counts_as_manual(dt_library, tmp_path, capsys):
    answer = ask(capsys, tmp_path, "rate", {"images": images(dt_library["paths"], [1] * 10)}, *dt_library["options"])
    assert not any("rating" in item for item in answer["images"])


def test_applied_writes_are_journaled_and_undo_restores_only_untouched_ones(dt_library, tmp_path, capsys):
    paths, options = dt_library["paths"][:3], dt_library["options"]
    answer = ask(capsys, tmp_path, "rate", {"images": images(paths, [0, 0, 0])}, *options)
    set_to = {item["ref"]: item["rating"] for item in answer["images"]}
    assert len(set_to) == 3  # unrated photos all get stars
    rated = [{"path": paths[ref - 1], "duplicate": 0, "old": 0, "new": new} for ref, new in set_to.items()]
    assert ask(capsys, tmp_path, "applied", {"images": [], "run": answer["run"], "rated": rated}, *options)["recorded"] == 3

    # A person re-rates photo 2; the next rate run leaves it alone, the others are unchanged.
    now = [set_to[1], (set_to[2] % 5) + 1, set_to[3]]
    again = ask(capsys, tmp_path, "rate", {"images": images(paths, now)}, *options)
    assert not any("rating" in item for item in again["images"])
    assert "by hand" in next(item["reason"] for item in again["images"] if item["ref"] == 2)

    undo = ask(capsys, tmp_path, "undo", {"images": images(paths, now)}, *options)
    assert sorted((i["ref"], i["rating"]) for i in undo["images"]) == [(1, 0), (3, 0)] and undo["kept"] == 1
    restored = [{"path": paths[i["ref"] - 1], "duplicate": 0, "rating": 0} for i in undo["images"]]
    assert ask(capsys, tmp_path, "applied", {"images": [], "restored": restored}, *options)["restored"] == 2
    assert ask(capsys, tmp_path, "undo", {"images": images(paths, [0, now[1], 0])}, *options) == {
        "version": 1, "images": [], "kept": 0,
    }


def test_applied_refuses_a_run_that_is_not_a_darktable_rate_run(dt_library, tmp_path, capsys):
    path, options = dt_library["paths"][0], dt_library["options"]
    ask(capsys, tmp_path, "rate", {"images": images([path], [0])}, *options)
    rated = [{"path": path, "duplicate": 0, "old": 0, "new": 3}]
    request_file = write_request(tmp_path / "applied.request", [], run=999, rated=rated)
    code, _, err = run(capsys, "darktable", "applied", "--request", request_file, "--response", tmp_path / "r", *options)
    assert code == ExitCode.USAGE and "not a darktable rate run" in err
    with Index(dt_library["db"]) as index:  # the refused report recorded nothing: the answer's row stays pending
        (pending,) = index.journal.pending("darktable", places=[f"{path}#0"])
        assert pending.row_ids == tuple(index_rows.values(index, "rating_writes", "id", target_path=f"{path}#0"))


def test_duplicates_are_separate_journal_keys(dt_library, tmp_path, capsys):
    path, options = dt_library["paths"][0], dt_library["options"]
    pair = [{"ref": 1, "path": path, "duplicate": 0, "rating": 0}, {"ref": 2, "path": path, "duplicate": 1, "rating": 0}]
    answer = ask(capsys, tmp_path, "rate", {"images": pair}, *options)
    new = answer["images"][0]["rating"]
    rated = [{"path": path, "duplicate": 0, "old": 0, "new": new}]  # only the original was set
    ask(capsys, tmp_path, "applied", {"images": [], "run": answer["run"], "rated": rated}, *options)
    other = (new % 5) + 1  # both hold a rating we didn't set for the duplicate
    undo = ask(capsys, tmp_path, "undo", {"images": [dict(pair[0], rating=new), dict(pair[1], rating=other)]}, *options)
    assert undo["images"] == [{"ref": 1, "rating": 0}] and undo["kept"] == 0


def test_top_selects_the_best_percent(dt_library, tmp_path, capsys):
    paths, options = dt_library["paths"], dt_library["options"]
    answer = ask(capsys, tmp_path, "top", {"images": images(paths, [0] * 10)}, *options, "--percent", "25")
    chosen = [item for item in answer["images"] if item["selected"]]
    assert len(chosen) == 3  # ceil(10 * 25%)
    assert min(i["score"] for i in chosen) >= max(i["score"] for i in answer["images"] if not i["selected"])


def test_a_request_from_another_protocol_version_is_refused(tmp_path, capsys):
    request = tmp_path / "request"
    request.write_text(json.dumps({"version": 99, "images": []}))
    code, _, err = run(capsys, "darktable", "rate", "--request", request, "--response", tmp_path / "response")
    assert code == ExitCode.USAGE and "install the plugin again" in err and err.count("\n") == 1


def test_a_relative_path_in_a_request_is_refused(tmp_path, capsys):
    request = write_request(tmp_path / "request", [{"ref": 1, "path": "a.jpg", "duplicate": 0, "rating": 0}])
    code, _, err = run(capsys, "darktable", "undo", "--request", request, "--response", tmp_path / "response")
    assert code == ExitCode.USAGE and "absolute path" in err


def test_tags_name_the_stars_and_a_score_bucket():
    assert darktable.our_tags(4, 72.5) == ["aesthetic|stars|4", "aesthetic|score|70-80%"]
    assert darktable.our_tags(5, 100.0) == ["aesthetic|stars|5", "aesthetic|score|90-100%"]
    assert darktable.our_tags(-1, 0.0) == ["aesthetic|stars|rejected", "aesthetic|score|0-10%"]
    assert darktable.our_tags(0, float("nan")) == []


# --------------------------------------------------------------------------- installer


def test_the_package_ships_the_one_plugin_source():
    """An installed wheel has no plugin/ folder, so the package ships the plugin; its
    lua/aesthetic.lua is a link to plugin/darktable/aesthetic.lua, not a second copy
    (a wheel build stores the linked file's bytes)."""
    shipped = REPO_ROOT / "plugin" / "aes_index" / "lua" / "aesthetic.lua"
    assert shipped.is_symlink() and shipped.resolve() == PLUGIN.resolve()
    assert darktable.plugin_source() == PLUGIN.read_bytes()


def test_install_is_idempotent_and_uninstall_reverses_it_exactly(tmp_path, capsys):
    config = tmp_path / "darktable"
    luarc = config / "luarc"
    config.mkdir()
    before = b'require "tools/script_manager"\n-- my own line\n'
    luarc.write_bytes(before)

    code, out, _ = run(capsys, "darktable", "install", "--config-dir", config)
    assert code == ExitCode.OK and "restart darktable" in out
    assert (config / "lua" / "aesthetic.lua").read_bytes() == PLUGIN.read_bytes()
    assert luarc.read_text().splitlines() == [*before.decode().splitlines(), darktable.LUARC_LINE]

    code, out, _ = run(capsys, "darktable", "install", "--config-dir", config)
    assert "nothing to do" in out and luarc.read_text().count(darktable.LUARC_LINE) == 1

    code, out, _ = run(capsys, "darktable", "uninstall", "--config-dir", config)
    assert code == ExitCode.OK and luarc.read_bytes() == before
    assert not (config / "lua").exists()
    code, out, _ = run(capsys, "darktable", "uninstall", "--config-dir", config)
    assert "nothing to do" in out and luarc.read_bytes() == before


def test_install_into_a_fresh_config_and_back_leaves_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    run(capsys, "darktable", "install")
    config = tmp_path / "xdg" / "darktable"
    assert (config / "lua" / "aesthetic.lua").is_file() and (config / "luarc").is_file()
    run(capsys, "darktable", "uninstall")
    assert list(config.iterdir()) == []


def test_install_keeps_a_require_the_user_wrote(tmp_path, capsys):
    config = tmp_path / "darktable"
    config.mkdir()
    (config / "luarc").write_text("require('aesthetic')\n")
    run(capsys, "darktable", "install", "--config-dir", config)
    assert (config / "luarc").read_text() == "require('aesthetic')\n"
    run(capsys, "darktable", "uninstall", "--config-dir", config)
    assert (config / "luarc").read_text() == "require('aesthetic')\n"  # not ours to remove


def test_the_install_docs_name_the_commands():
    docs = (REPO_ROOT / "packaging" / "darktable" / "README.md").read_text()
    for needle in ("aes-index darktable install", "aes-index darktable uninstall", "luarc", "1 star counts as unrated"):
        assert needle in docs


# --------------------------------------------------------------------------- real darktable

DARKTABLE_TIMEOUT_S = 300  # startup ~3 s, then seven aes-index calls that load torch
HOSTILE_NAMES = [
    "plain photo.jpg",
    "it's a 'single' quote.jpg",
    'say "double" quotes.jpg',
    "$(touch PWNED_DOLLAR).jpg",
    "`touch PWNED_BACKTICK`.jpg",
    "semi;colon; touch PWNED_SEMICOLON.jpg",
    "new\nline $(touch PWNED_NEWLINE).jpg",
    "Ümläut straße 東京.jpg",
    "IMG_0001.jpg",
    "IMG_0002.jpg",
    "IMG_0003.jpg",
    "rated by hand.jpg",  # comes with a sidecar that holds 4 stars
]
CHANGED_BY_HAND = "IMG_0002.jpg"  # re-rated in darktable after the plugin rated it

# The test's own Lua: paths come in hex (a name may hold a newline), results go out as
# tab-separated lines with hex paths. Only the plugin's actions are exercised.
FLOW_LUA = r"""
local dt = require "darktable"
local aes = require "aesthetic"
local out = assert(io.open(os.getenv("AES_DT_RESULT"), "w"))
local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
local function unhex(s) return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)) end
local function emit(...) out:write(table.concat({...}, "\t"), "\n"); out:flush() end
local function path_of(image) return image.path .. "/" .. image.filename end

local function dump(phase, images)
  local selected = {}
  for _, image in ipairs(dt.gui.selection()) do selected[image.id] = true end
  for _, image in ipairs(images) do
    local tags = {}
    for _, tag in ipairs(dt.tags.get_tags(image)) do
      if tag.name:sub(1, 10) == "aesthetic|" then tags[#tags + 1] = tag.name end
    end
    table.sort(tags)
    emit("image", phase, hex(path_of(image)), tostring(image.rating), selected[image.id] and "1" or "0", table.concat(tags, ","))
  end
end

local function wait_for_import_batch(count)
  for _ = 1, 900 do
    local status = aes.status()
    if status.import_batches >= count and status.pending == 0 and not status.busy and not status.waiting then return true end
    dt.control.sleep(200)
  end
  return false
end

local function report(name, result, err) emit(name, tostring(result ~= nil), tostring(err)) end

local ok, err = pcall(function()
  for line in io.lines(os.getenv("AES_DT_WORDS")) do emit("quoted", line, hex(aes.sh_quote(unhex(line)))) end
  local sample = { name = "x\n\"'\\\1é", list = { 1, -2, 3.5 }, yes = true, empty = {} }
  emit("json", hex(aes.json.encode(aes.json.decode(aes.json.encode(sample)))))

  dt.preferences.write("aesthetic", "treat_one_star_as_unrated", "bool", true)
  dt.preferences.write("aesthetic", "executable", "string", os.getenv("AES_DT_EXECUTABLE"))
  local images = {}
  for line in io.lines(os.getenv("AES_DT_PHOTOS")) do images[#images + 1] = dt.database.import(unhex(line)) end
  emit("imported", tostring(#images), tostring(wait_for_import_batch(1)))
  dump("imported", images)

  for _, image in ipairs(images) do
    if image.filename == os.getenv("AES_DT_CHANGE") then
      image.rating = image.rating == 2 and 3 or 2
      emit("changed", hex(path_of(image)), tostring(image.rating))
    end
  end
  report("rate", aes.rate(images))
  dump("rated", images)
  report("top", aes.select_top(images, 25))
  dump("top", images)
  report("remove", aes.remove_stars(images))
  dump("removed", images)

  local folder = unhex(os.getenv("AES_DT_FOLDER")) -- a folder import: ends with "post-import-film"
  dt.database.import(folder)
  emit("folder", tostring(wait_for_import_batch(2)))
  local added = {}
  for _, image in ipairs(dt.database) do
    if image.path == folder then added[#added + 1] = image end
  end
  dump("folder", added)
end)
emit("done", tostring(ok), tostring(err))
out:close()
os.exit(0)
"""


def hex_lines(values: list[str]) -> str:
    return "".join(os.fsencode(v).hex() + "\n" for v in values)


def unhex(text: str) -> str:
    return os.fsdecode(bytes.fromhex(text))


@pytest.fixture
def hostile_library(tmp_path) -> list[Path]:
    folder = tmp_path / "lib $(touch PWNED_FOLDER) 'q' \"d\" ;x"
    photos = [make_photo(folder / name, seed=i) for i, name in enumerate(HOSTILE_NAMES)]
    write_sidecar(folder / "rated by hand.jpg.xmp", rating=4)
    return photos


@pytest.fixture
def hostile_executable(tmp_path) -> Path:
    """The plugin's executable preference, in a folder a shell would love to misread."""
    real = shutil.which("aes-index")
    assert real, "aes-index is not on PATH: pip install -e ."
    wrapper = tmp_path / "bin 'it''s' $(touch PWNED_EXE) `x`" / "aes-index"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(real)} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def run_with_hard_timeout(command: list[str], timeout: float = DARKTABLE_TIMEOUT_S, **kwargs) -> tuple[int, str]:
    """Run `command`; past `timeout` kill its whole process group (Xvfb, darktable, aes-index)."""
    # errors="replace": darktable's log names files, and a file name may be any bytes
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True, **kwargs
    )
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        pytest.fail(f"darktable did not finish within {timeout} s: {stderr[-2000:]}")
    return process.returncode, stderr


def lua_temp_files() -> set[Path]:
    """Lua's os.tmpname() files: always /tmp/lua_XXXXXX, whatever TMPDIR says."""
    return set(Path("/tmp").glob("lua_*"))


def run_plugin_in_darktable(workdir: Path, photos: list[Path], folder: Path, executable: Path, tiny_model: dict, db: Path) -> list[list[str]]:
    """Install the plugin into a fresh darktable config, run FLOW_LUA; the result lines."""
    config = workdir / "config"
    assert main(["darktable", "install", "--config-dir", str(config)]) == ExitCode.OK
    (workdir / "photos.hex").write_text(hex_lines([str(p) for p in photos]))
    (workdir / "words.hex").write_text(hex_lines(["plain", "it's", "a 'b' \"c\"", "$(touch PWNED_Q)", "`x`;y\nz", "''"]))
    env = {
        "AES_DT_PHOTOS": str(workdir / "photos.hex"),
        "AES_DT_WORDS": str(workdir / "words.hex"), "AES_DT_FOLDER": os.fsencode(folder).hex(), "AES_DT_EXECUTABLE": str(executable), "AES_DT_CHANGE": CHANGED_BY_HAND,
        "AES_INDEX_MODEL": tiny_model["config"], "AES_INDEX_PRETRAINED": tiny_model["checkpoint"],
        "AES_INDEX_DB": str(db), "AES_INDEX_DEVICE": "cpu", "AES_INDEX_DTYPE": "fp32", "AES_INDEX_WORKERS": "0",
    }
    return run_darktable(workdir, config, FLOW_LUA, env)


def run_darktable(workdir: Path, config: Path, flow: str, env: dict, timeout: float = DARKTABLE_TIMEOUT_S) -> list[list[str]]:
    """Run `flow` in a headless darktable with `config`; its tab-separated result lines.
    The flow is dofile'd relative to the working folder: no path in Lua source."""
    xvfb_run, dt = require_tool("xvfb-run"), require_tool("darktable")
    (workdir / "flow.lua").write_text(flow)
    env = {**os.environ, "HOME": str(workdir), "AES_DT_RESULT": str(workdir / "result.txt"), **env}
    command = [xvfb_run, "-a", dt, "--library", ":memory:", "--configdir", str(config), "--cachedir", str(workdir / "cache")]
    command += ["--luacmd", 'dofile("flow.lua")']
    before = lua_temp_files()
    returncode, stderr = run_with_hard_timeout(command, timeout, cwd=workdir, env=env)
    assert lua_temp_files() <= before, "the plugin left request files behind"
    result = workdir / "result.txt"
    assert result.exists(), f"darktable wrote no result (exit {returncode}): {stderr[-2000:]}"
    lines = [line.split("\t") for line in result.read_text().splitlines()]
    assert lines[-1] == ["done", "true", "nil"], lines[-3:]
    return lines


def phase(lines: list[list[str]], name: str) -> dict[str, dict]:
    """{path: {"rating", "selected", "tags"}} for one phase of the flow."""
    return {
        unhex(path): {"rating": int(rating), "selected": selected == "1", "tags": set(filter(None, tags.split(",")))}
        for kind, step, path, rating, selected, tags in (l for l in lines if l[0] == "image")
        if step == name
    }


@pytest.mark.external
@pytest.mark.slow
def test_the_plugin_rates_tags_selects_and_restores_in_real_darktable(hostile_library, hostile_executable, tiny_model, tmp_path):
    workdir = tmp_path / "dt"
    workdir.mkdir()
    db = tmp_path / "index.db"
    pwned_before = set(Path(tempfile.gettempdir()).glob("PWNED*"))
    started = time.monotonic()
    second = [make_photo(tmp_path / "second import $(touch PWNED_SECOND)" / f"DSC_{i}.jpg", seed=50 + i) for i in range(2)]
    lines = run_plugin_in_darktable(workdir, hostile_library, second[0].parent, hostile_executable, tiny_model, db)
    print(f"darktable flow took {time.monotonic() - started:.1f} s")

    for _, word, quoted in (l for l in lines if l[0] == "quoted"):  # the plugin's quoting, checked by a shell parser
        assert shlex.split(unhex(quoted)) == [unhex(word)]
    (json_line,) = [l for l in lines if l[0] == "json"]
    assert json.loads(bytes.fromhex(json_line[1])) == {"name": "x\n\"'\\\x01é", "list": [1, -2, 3.5], "yes": True, "empty": []}

    paths = [str(p) for p in hostile_library]
    with Index(db) as index:
        head = index.runs.active_head_id()
        final = {p.path: p for p in plan(index, head, RatingPolicy())}
        runs = index_rows.count(index, "runs", command="darktable-rate")
    assert sorted(final) == sorted(paths + [str(p) for p in second])
    scores = {path: final[path].score for path in paths}
    # the stars the library of the first twelve gave them, before the second import
    stars = dict(zip(paths, (int(n) for n in stars_for(np.array([scores[p] for p in paths])))))
    hand, changed = str(hostile_library[-1]), next(p for p in paths if p.endswith(CHANGED_BY_HAND))
    assert [l[1:] for l in lines if l[0] == "imported"] == [[str(len(paths)), "true"]]
    assert runs == 3  # a batch per import (two), one for the button: never a process per photo

    imported = phase(lines, "imported")
    for path in paths:
        assert imported[path]["rating"] == (4 if path == hand else stars[path]), path
        assert f"aesthetic|stars|{stars[path]}" in imported[path]["tags"]
        assert any(tag.startswith("aesthetic|score|") for tag in imported[path]["tags"])

    (changed_line,) = [l for l in lines if l[0] == "changed"]
    by_hand = int(changed_line[2])
    rated = phase(lines, "rated")
    assert [l[1] for l in lines if l[0] in ("rate", "top", "remove")] == ["true"] * 3, lines
    assert rated[changed]["rating"] == by_hand and rated[hand]["rating"] == 4  # manual ratings win
    assert all(rated[p]["rating"] == imported[p]["rating"] for p in paths if p != changed)

    best = sorted(paths, key=lambda p: -scores[p])[:3]  # ceil(12 * 25%)
    assert {p for p, image in phase(lines, "top").items() if image["selected"]} == set(best)

    removed = phase(lines, "removed")
    for path in paths:
        assert removed[path]["rating"] == {hand: 4, changed: by_hand}.get(path, 1), path  # 1: darktable's import default
        assert removed[path]["tags"] == set()

    assert [l[1] for l in lines if l[0] == "folder"] == ["true"]
    added = phase(lines, "folder")
    assert sorted(added) == sorted(str(p) for p in second)
    for path, image in added.items():
        assert image["rating"] == final[path].stars and f"aesthetic|stars|{final[path].stars}" in image["tags"]

    # `touch` would run in darktable's cwd (inside tmp_path), or wherever a path's folder is
    pwned = list(tmp_path.rglob("PWNED*")) + list(set(Path(tempfile.gettempdir()).glob("PWNED*")) - pwned_before)
    assert pwned == [], "a file name reached a shell"


def test_the_plugin_honours_the_librarys_kept_excludes(tmp_path, model_args, capsys):
    """`rebuild --exclude` patterns belong to the library: the plugin's requests, which go
    through the same Library.open, skip those names too (never indexed, never scored)."""
    library = tmp_path / "Pictures"
    keep = make_photo(library / "IMG_1.jpg", seed=1)
    draft = make_photo(library / "drafts" / "IMG_2.jpg", seed=2)
    options = [*model_args, "--workers", "0"]
    code, _, err = run(capsys, "rebuild", library, "--exclude", "drafts", *options)
    assert code == ExitCode.OK, err
    answer = ask(capsys, tmp_path, "score", {"images": images([str(keep), str(draft)], [0, 0])}, *options)
    assert [item["ref"] for item in answer["images"]] == [1]  # the draft has no score
    with Index(library / ".aes-index.db") as index:
        assert index.images.by_path(str(draft)) is None and index.images.by_path(str(keep)) is not None
