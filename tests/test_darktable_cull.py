"""Culling in darktable through the plugin, and the plugin as a lua-scripts script.

The plan tests check targets.darktable.plan_cull / plan_uncull, the rules the plugin's
"cull" and "undo cull" follow, on groups as culling hands them over (culling.model). The
real-darktable tests run a headless darktable 4.2 over a small burst made from real
photographs, with the plugin installed as a user installs it, and read back from darktable
itself what it shows: groups, leaders, tags, ratings.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from aes_index.cli import main
from aes_index.errors import ExitCode
from aes_index.targets.protocol import UndoAction
from aes_index.targets.darktable import CULL_TAGS, ELSEWHERE_TAG, KEEPER_TAG, DarktableTarget, DtImage
from aes_index.formats.xmp import write_sidecar
from conftest import make_photo
from test_darktable import PLUGIN, hex_lines, run_darktable

def dt_image(ref: int, path: str, rating: int = 1, group: int | None = None, group_size: int = 1, tags=(), duplicate: int = 0) -> DtImage:
    """A darktable image as a cull request describes it; its darktable id is 100 + ref."""
    return DtImage(ref, path, duplicate, rating, id=100 + ref, group=group or 100 + ref, group_size=group_size, tags=tuple(tags))


# --------------------------------------------------------------------------- the rules, through the protocol


@pytest.fixture
def dt_culled(tmp_path, model_args) -> dict:
    """test_culling_marks' library (a burst burst_0..3 of which burst_1 is sharp, an
    overexposed bright.jpg, a single), with the options that reach its index; `request`
    describes its photos as the plugin does: rating 0, each alone, no tags, id 100 + ref."""
    from test_culling_marks import make_library

    return dt_library(tmp_path, model_args, make_library)


@pytest.fixture
def dt_exported(tmp_path, model_args) -> dict:
    """dt_culled's library plus exports/best.jpg, an export of burst_1 that joins the burst:
    one group over two film rolls."""
    from test_culling_marks import make_library_with_export

    return dt_library(tmp_path, model_args, make_library_with_export)


def dt_library(tmp_path, model_args, make) -> dict:
    """The library `make` builds under Photos/, with its request and refs (by file name)."""
    root = tmp_path / "Photos"
    make(root)
    paths = sorted(str(p) for p in root.rglob("*.jpg"))

    def request(**changes) -> list[dict]:
        entries = [{"ref": ref, "path": path, "duplicate": 0, "rating": 0, "id": 100 + ref, "group": 100 + ref,
                    "group_size": 1, "tags": []} for ref, path in enumerate(paths, start=1)]
        for name, change in changes.items():
            next(e for e in entries if Path(e["path"]).stem == name).update(change)
        return entries

    refs = {Path(path).name: ref for ref, path in enumerate(paths, start=1)}
    return {"options": [*model_args, "--workers", "0", "--db", tmp_path / "index.db"], "request": request, "refs": refs,
            "paths": paths, "tmp": tmp_path}


def cull_answer(capsys, dt_culled, images, *extra) -> dict:
    from test_darktable import ask

    return ask(capsys, dt_culled["tmp"], "cull", {"images": images}, *dt_culled["options"], *extra)


def by_name(dt_culled, answer: dict, key: str) -> dict:
    names = {ref: name for name, ref in dt_culled["refs"].items()}
    return {names[item["ref"]]: item[key] for item in answer["images"] if key in item}


def test_a_burst_becomes_one_group_led_by_the_keeper_which_is_tagged(dt_culled, capsys):
    refs = dt_culled["refs"]
    answer = cull_answer(capsys, dt_culled, dt_culled["request"]())
    (group,) = answer["groups"]
    assert group["leader"] == group["keeper"] == refs["burst_1.jpg"]
    assert sorted(group["members"]) == sorted(refs[f"burst_{i}.jpg"] for i in range(4)) and answer["left_alone"] == []
    attached = by_name(dt_culled, answer, "attach")
    assert attached["burst_1.jpg"] == [KEEPER_TAG] and "single.jpg" not in attached


def test_flags_become_tags_and_rejects_come_only_with_the_option(dt_culled, capsys):
    # burst_3: darktable's import star, counted as none
    images = dt_culled["request"](burst_3={"rating": 1})
    without = cull_answer(capsys, dt_culled, images, "--treat-as-unrated", "1")
    assert by_name(dt_culled, without, "rating") == {}
    assert by_name(dt_culled, without, "attach") == {
        "burst_0.jpg": ["aesthetic|blurry"], "burst_1.jpg": [KEEPER_TAG], "burst_2.jpg": ["aesthetic|blurry"],
        "burst_3.jpg": ["aesthetic|blurry"], "bright.jpg": ["aesthetic|overexposed"],
    }
    rejected = by_name(dt_culled, cull_answer(capsys, dt_culled, images, "--treat-as-unrated", "1", "--reject"), "rating")
    # beside the sharp keeper burst_1: the blurred frames, the import star's included; the
    # overexposed bright.jpg is alone, the only frame of its scene: flagged, never rejected
    assert rejected == {"burst_0.jpg": -1, "burst_2.jpg": -1, "burst_3.jpg": -1}


def test_a_flagged_keeper_a_person_chose_leaves_its_burst_unrejected(dt_culled, capsys):
    images = dt_culled["request"](burst_2={"rating": 3})  # the person's 3 stars on a blurred frame: their keeper
    answer = cull_answer(capsys, dt_culled, images, "--treat-as-unrated", "1", "--reject")
    assert by_name(dt_culled, answer, "attach")["burst_2.jpg"] == ["aesthetic|blurry", KEEPER_TAG]
    assert by_name(dt_culled, answer, "rating") == {}  # nothing better is kept than the other blurred frames


def test_a_group_a_person_made_in_darktable_is_left_alone(dt_culled, capsys):
    images = dt_culled["request"](burst_0={"group": 999, "group_size": 2})  # a person grouped burst_0 with image 999
    answer = cull_answer(capsys, dt_culled, images)
    assert answer["groups"] == [] and answer["left_alone"][0]["grouped_by_you"] == [dt_culled["refs"]["burst_0.jpg"]]


def test_a_duplicate_of_darktables_follows_its_photo_but_joins_no_group(dt_culled, capsys):
    images = dt_culled["request"]()
    keeper, blurred = (next(dict(e) for e in images if e["path"].endswith(name)) for name in ("burst_1.jpg", "burst_0.jpg"))
    images += [keeper | {"ref": 50, "duplicate": 1, "id": 150, "group": 150}, blurred | {"ref": 51, "duplicate": 1, "id": 151, "group": 151}]
    answer = cull_answer(capsys, dt_culled, images)
    (group,) = answer["groups"]
    assert 50 not in group["members"] and 51 not in group["members"]
    attached = {item["ref"]: item.get("attach") for item in answer["images"]}
    assert attached[51] == ["aesthetic|blurry"] and 50 not in attached  # a duplicate is no keeper; its file's flags hold


def test_only_tags_we_attached_are_detached(dt_culled, capsys):
    from test_darktable import ask

    refs = dt_culled["refs"]
    first = cull_answer(capsys, dt_culled, dt_culled["request"](single={"tags": [KEEPER_TAG]}))  # a person's own keeper tag
    keeper = dt_culled["paths"][refs["burst_1.jpg"] - 1]
    tagged = [{"path": keeper, "duplicate": 0, "tag": KEEPER_TAG, "old": 0, "new": 1}]
    ask(capsys, dt_culled["tmp"], "applied", {"images": [], "run": first["run"], "tagged": tagged}, *dt_culled["options"])
    # a person gives burst_2 five stars: their keeper; ours loses its keeper tag, theirs on single.jpg stays
    images = dt_culled["request"](single={"tags": [KEEPER_TAG]}, burst_1={"tags": [KEEPER_TAG]}, burst_2={"rating": 5})
    answer = cull_answer(capsys, dt_culled, images)
    assert by_name(dt_culled, answer, "detach") == {"burst_1.jpg": [KEEPER_TAG]}
    assert by_name(dt_culled, answer, "attach")["burst_2.jpg"] == ["aesthetic|blurry", KEEPER_TAG]


def test_a_group_over_two_film_rolls_is_grouped_in_each_never_under_a_leader_in_another(dt_exported, capsys):
    """darktable shows a group collapsed to its leader: a frame grouped under a leader in
    another film roll would vanish from its own. The export is linked to its keeper by a tag."""
    from test_culling_marks import BURST, EXPORT, SHARP

    refs = dt_exported["refs"]
    burst = sorted(refs[name] for name in BURST)
    answer = cull_answer(capsys, dt_exported, dt_exported["request"]())
    (group,) = answer["groups"]  # the shoot's; the export, alone in exports/, joins none
    assert (group["leader"], group["keeper"], sorted(group["members"])) == (refs[SHARP], refs[SHARP], burst)
    attached = by_name(dt_exported, answer, "attach")
    assert ELSEWHERE_TAG in attached[EXPORT] and KEEPER_TAG not in attached[EXPORT]
    assert attached[SHARP] == [KEEPER_TAG]

    # a person's 5 stars on the export make it the keeper: the burst stays a group of the
    # shoot's film roll, under its sharp frame, and each of its frames is tagged
    answer = cull_answer(capsys, dt_exported, dt_exported["request"](best={"rating": 5}))
    (group,) = answer["groups"]
    assert (group["leader"], group["keeper"], sorted(group["members"])) == (refs[SHARP], refs[EXPORT], burst)
    attached = by_name(dt_exported, answer, "attach")
    assert KEEPER_TAG in attached[EXPORT] and ELSEWHERE_TAG not in attached[EXPORT]
    assert all(ELSEWHERE_TAG in attached[name] and KEEPER_TAG not in attached[name] for name in BURST), attached


def test_the_plugin_reports_every_cull_tag_the_plan_attaches():
    """The plugin's CULL_TAGS: the tags a cull request says an image holds, and those undo
    may detach. A tag the plan attaches that the plugin does not know would be attached
    again at every cull and never taken back."""
    block = re.search(r"local CULL_TAGS = \{(.*?)\}", PLUGIN.read_text(), re.S).group(1)
    lua_tags = {"aesthetic|" + name for name in re.findall(r'TAG_PREFIX \.\. "([^"]+)"', block)}
    assert lua_tags == set(CULL_TAGS) and ELSEWHERE_TAG in lua_tags


def undo_action(place: str, field: str, restore, expected, tag: str | None = None) -> UndoAction:
    return UndoAction((1,), 1, "darktable", place, place.split("#")[0], restore, expected, prior={"tag": tag} if tag else {}, field=field)


def test_undo_puts_back_only_what_still_holds_what_the_cull_wrote():
    images = [
        dt_image(1, "/p/a.jpg", group=101, group_size=3, tags=[KEEPER_TAG]),  # the leader
        dt_image(2, "/p/b.jpg", group=101, group_size=3, rating=-1),
        dt_image(3, "/p/c.jpg", group=103, rating=4, tags=[]),  # a person ungrouped it, rated it
    ]
    groups = [undo_action("/p/b.jpg#0", "group", 102, 101), undo_action("/p/c.jpg#0", "group", 103, 101)]
    tags = [undo_action("/p/a.jpg#0", "tag", 0, 1, KEEPER_TAG), undo_action("/p/c.jpg#0", "tag", 0, 1, "aesthetic|blurry")]
    ratings = [undo_action("/p/b.jpg#0", "rating", 1, -1), undo_action("/p/c.jpg#0", "rating", 1, -1)]
    target = DarktableTarget(images=images)  # undo's loop asks the target, action by action
    results = [target.undo(action, dry_run=False) for action in [*groups, *tags, *ratings]]
    assert target.undo_list() == [{"ref": 1, "detach": [KEEPER_TAG]}, {"ref": 2, "ungroup": True, "rating": 1}]
    # c.jpg: ungrouped, its tag removed and re-rated by a person since: all three stay as they are
    closed = sorted((r.action.place, r.action.field, r.status) for r in results if r.status != "pending")
    assert closed == [
        ("/p/c.jpg#0", "group", "kept-manual"), ("/p/c.jpg#0", "rating", "kept-manual"), ("/p/c.jpg#0", "tag", "kept-manual"),
    ]


# --------------------------------------------------------------------------- the script manager's view


def metadata_block(source: str) -> dict[str, str]:
    """script_data.metadata as tools/script_manager.lua (lua-scripts) reads it from a script's
    text, without running it (get_script_metadata): the lines between `script_data.metadata = {`
    and a `}` on a line of its own, each `key = value`, quotes and a trailing comma dropped,
    a trailing ` -- comment` cut off."""
    block = re.search(r"script_data\.metadata = \{\r?\n(.*?)\r?\n\}", source, re.S)
    assert block, "no script_data.metadata block the script manager can find"
    fields = {}
    for line in block.group(1).split("\n"):
        key, value = (part.strip() for part in line.split(" = "))  # exactly one " = " a line
        fields[key] = re.sub(r",?\s+--.+$", "", value).replace('"', "").replace("'", "").rstrip(",")
    return fields


def test_the_metadata_block_is_what_the_script_manager_reads():
    fields = metadata_block(PLUGIN.read_text())
    assert set(fields) == {"name", "purpose", "author", "help"}
    assert fields["name"] == "aesthetic" and "aes-index" in fields["author"] and "cull" in fields["purpose"]
    # its documentation pane shows the script's second block comment
    assert len(re.findall(r"--\[\[.*?\]\]", PLUGIN.read_text(), re.S)) >= 2


def test_install_goes_to_its_own_folder_where_the_script_manager_is_and_back(tmp_path, capsys):
    config = tmp_path / "darktable"
    (config / "lua" / "tools").mkdir(parents=True)
    (config / "luarc").write_text('require "tools/script_manager"\n')
    assert main(["darktable", "install", "--config-dir", str(config)]) == ExitCode.OK  # before lua-scripts: plain
    assert (config / "lua" / "aesthetic.lua").is_file()

    (config / "lua" / "tools" / "script_manager.lua").write_text("-- lua-scripts' script manager\n")
    assert main(["darktable", "install", "--config-dir", str(config)]) == ExitCode.OK
    out = capsys.readouterr().out
    assert (config / "lua" / "aes_index" / "aesthetic.lua").read_bytes() == PLUGIN.read_bytes()
    assert not (config / "lua" / "aesthetic.lua").exists()  # loaded twice otherwise
    assert (config / "luarc").read_text() == 'require "tools/script_manager"\n' and "script manager" in out

    assert main(["darktable", "uninstall", "--config-dir", str(config)]) == ExitCode.OK
    assert sorted(p.name for p in (config / "lua").iterdir()) == ["tools"]
    assert (config / "luarc").read_text() == 'require "tools/script_manager"\n'


# --------------------------------------------------------------------------- real darktable

SCRIPT_LUA = r"""
local dt = require "darktable"
local out = assert(io.open(os.getenv("AES_DT_RESULT"), "w"))
local function emit(...) out:write(table.concat({...}, "\t"), "\n"); out:flush() end
local ok, err = pcall(function()
  -- as lua-scripts' lib/dtutils.lua prequire does for the script manager: pcall(require, name)
  local loaded, data = pcall(require, "aes_index/aesthetic")
  emit("loaded", tostring(loaded), type(data))
  for _, key in ipairs({ "name", "purpose", "author", "help" }) do emit("metadata", key, tostring(data.metadata[key])) end
  emit("methods", type(data.destroy), type(data.restart), type(data.show), tostring(data.destroy_method))
  emit("api check", tostring(_G.aes_test_api_checks))
  emit("visible", tostring(dt.gui.libs["aesthetic"].visible))
  data.destroy()
  emit("destroyed", tostring(dt.gui.libs["aesthetic"].visible), tostring(data.status().stopped))
  dt.database.import(os.getenv("AES_DT_PHOTO")) -- no scoring while stopped
  dt.control.sleep(2500)
  emit("import while stopped", tostring(data.status().pending), tostring(data.status().import_batches))
  data.restart()
  emit("restarted", tostring(dt.gui.libs["aesthetic"].visible), tostring(data.status().stopped))
end)
emit("done", tostring(ok), tostring(err))
out:close()
os.exit(0)
"""

# lua-scripts' lib/dtutils is what a script finds where lua-scripts is installed; this one
# only records the call (the real check_min_api_version compares versions and raises)
DTUTILS_STAND_IN = """local du = {}
function du.check_min_api_version(min_api, name)
  _G.aes_test_api_checks = (_G.aes_test_api_checks or "") .. min_api .. " " .. name
end
return du
"""


@pytest.mark.external
@pytest.mark.slow
def test_the_script_manager_starts_stops_and_restarts_the_script(tmp_path, capsys):
    config, workdir = tmp_path / "config", tmp_path / "dt"
    workdir.mkdir()
    (config / "lua" / "tools").mkdir(parents=True)
    (config / "lua" / "tools" / "script_manager.lua").write_text("-- stands for lua-scripts' script manager\n")
    (config / "lua" / "lib").mkdir()
    (config / "lua" / "lib" / "dtutils.lua").write_text(DTUTILS_STAND_IN)
    assert main(["darktable", "install", "--config-dir", str(config)]) == ExitCode.OK
    assert not (config / "luarc").exists()  # the script manager starts it, not luarc
    photo = make_photo(tmp_path / "photos" / "stopped.jpg", seed=3)
    lines = run_darktable(workdir, config, SCRIPT_LUA, {"AES_DT_PHOTO": str(photo), "AES_INDEX_DB": str(tmp_path / "index.db")})
    by_name = {line[0]: line[1:] for line in lines if line[0] != "metadata"}
    metadata = {line[1]: line[2] for line in lines if line[0] == "metadata"}
    assert by_name["loaded"] == ["true", "table"]
    assert metadata == metadata_block(PLUGIN.read_text())  # running it says what its text says
    assert by_name["methods"] == ["function", "function", "function", "hide"]
    assert by_name["api check"] == ["9.0.0 aesthetic"]  # du.check_min_api_version, where lib/dtutils is
    assert by_name["visible"] == ["true"]
    assert by_name["destroyed"] == ["false", "true"]
    assert by_name["import while stopped"] == ["0", "0"]
    assert by_name["restarted"] == ["true", "false"]


# A small shoot: burst A (the sharp frame in the middle), burst B (a person gives a blurred
# frame 4 stars in darktable: it wins), burst C (a person groups its first frame with the
# overexposed single S before culling: C is left alone) and S.
SHOOT = {  # name: (scene, seconds after the first frame, shot)
    "A0.jpg": (0, 0.0, {"defocus_sigma": 16.0}),
    "A1.jpg": (0, 0.4, {}),
    "A2.jpg": (0, 0.7, {"motion_px": 64.0}),
    "B0.jpg": (1, 1800.0, {}),
    "B1.jpg": (1, 1800.3, {"defocus_sigma": 16.0}),
    "B2.jpg": (1, 1800.8, {"defocus_sigma": 16.0}),
    "C0.jpg": (2, 3600.0, {}),
    "C1.jpg": (2, 3600.5, {"defocus_sigma": 16.0}),
    "S.jpg": (10, 7200.0, {"ev": 2.5}),  # Wood: bright enough that +2.5 EV clips its luminance
}
PERSON_RATES = "B2.jpg"  # 4 stars, before the cull
PERSON_GROUPS = ("C0.jpg", "S.jpg")  # C0 into S's group, before the cull


def make_shoot(folder: Path, photos: list[Path]) -> list[Path]:
    """SHOOT's frames from real photographs, as one camera writes them (culling_camera)."""
    import culling_camera as camera
    from PIL import Image

    folder.mkdir(parents=True)
    nikon = camera.Camera("NIKON CORPORATION", "NIKON Z 6_2", "3012345", "+02:00")
    start = datetime(2024, 6, 1, 7, 30, 0)
    scenes = {}
    paths = []
    for i, (name, (scene, seconds, shot)) in enumerate(SHOOT.items()):
        if scene not in scenes:
            with Image.open(photos[scene]) as photo:
                scenes[scene] = camera.scene_of(photo.convert("RGB"))
        view = camera.View(0.03 + 0.005 * (i % 3), 0.03 + 0.004 * (i % 2), 0.94)  # a hand-held reframing
        frame = camera.render(scenes[scene], camera.Shot(view=view, seed=i, **shot), long_side=1600)
        taken = camera.hundredths(start + timedelta(seconds=seconds))
        (folder / name).write_bytes(camera.jpeg_bytes(frame, exif=camera.exif_bytes(nikon, taken)))
        # the sidecar darktable writes for a photo it imported: its library's rating, 1 star by
        # default (here before the import, so `run_cull`, which reads sidecars, sees them for sure)
        write_sidecar(folder / f"{name}.xmp", rating=1)
        paths.append(folder / name)
    return paths


CULL_LUA = r"""
local dt = require "darktable"
local aes = require "aesthetic"
local out = assert(io.open(os.getenv("AES_DT_RESULT"), "w"))
local function emit(...) out:write(table.concat({...}, "\t"), "\n"); out:flush() end
local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
local function unhex(s) return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)) end

local images, by_name = {}, {}
local function dump(phase)
  for _, image in ipairs(images) do
    local tags = {}
    for _, tag in ipairs(dt.tags.get_tags(image)) do
      if tag.name:sub(1, 10) == "aesthetic|" then tags[#tags + 1] = tag.name end
    end
    table.sort(tags)
    emit("image", phase, image.filename, image.group_leader.filename, tostring(#image:get_group_members()),
         tostring(image.rating), table.concat(tags, ","))
  end
end
local function report(name, result, err)
  local parts = {}
  for key, value in pairs(result or {}) do parts[#parts + 1] = key .. "=" .. tostring(value) end
  table.sort(parts)
  emit("result", name, tostring(result ~= nil), tostring(err), table.concat(parts, ","))
end

local ok, err = pcall(function()
  dt.preferences.write("aesthetic", "executable", "string", os.getenv("AES_DT_EXECUTABLE"))
  dt.preferences.write("aesthetic", "score_imports", "bool", false)
  dt.preferences.write("aesthetic", "treat_one_star_as_unrated", "bool", true)
  for line in io.lines(os.getenv("AES_DT_PHOTOS")) do
    local image = dt.database.import(unhex(line))
    images[#images + 1] = image
    by_name[image.filename] = image
  end
  by_name[os.getenv("AES_DT_RATE")].rating = 4
  by_name[os.getenv("AES_DT_GROUP")]:group_with(by_name[os.getenv("AES_DT_GROUP_WITH")])
  dump("before")

  -- cancelled after its first chunk, as its cancel button does: nothing culled
  aes.chunk_size = 2
  aes.progress_listener = function(label, done) if done >= 2 then aes.cancel() end end
  report("cancelled", aes.cull(images))
  dump("cancelled")
  aes.chunk_size = 5 -- two chunks of scoring, each a step of the job's progress bar
  aes.progress_listener = function(label, done, total, job)
    emit("progress", label, tostring(done), tostring(total), string.format("%.2f", job.percent), tostring(job.valid))
  end

  report("cull", aes.cull(images))
  aes.progress_listener = nil
  dump("culled")
  report("again", aes.cull(images)) -- nothing left to do
  dump("again")
  report("uncull", aes.uncull(images))
  dump("unculled")

  dt.preferences.write("aesthetic", "reject_flagged", "bool", true)
  report("reject", aes.cull(images))
  dump("rejected")
  for _, image in ipairs(images) do -- a person changes their mind about one reject
    if image.rating == -1 then image.rating = 2; emit("rerated", image.filename); break end
  end
  report("unreject", aes.uncull(images))
  dump("unrejected")
end)
emit("done", tostring(ok), tostring(err))
out:close()
os.exit(0)
"""


def phases(lines: list[list[str]]) -> dict[str, dict[str, dict]]:
    """phase -> file name -> {leader, size, rating, tags} as darktable read them back."""
    found: dict[str, dict[str, dict]] = {}
    for _, phase, name, leader, size, rating, tags in (line for line in lines if line[0] == "image"):
        found.setdefault(phase, {})[name] = {"leader": leader, "size": int(size), "rating": int(rating),
                                             "tags": set(filter(None, tags.split(",")))}
    return found


def results(lines: list[list[str]]) -> dict[str, dict]:
    found = {}
    for _, name, ok, err, parts in (line for line in lines if line[0] == "result"):
        assert ok == "true", f"{name}: {err}"
        found[name] = {key: int(value) for key, value in (part.split("=") for part in parts.split(",") if part)}
    return found


@pytest.mark.external
@pytest.mark.slow
def test_cull_groups_a_burst_under_its_keeper_in_real_darktable_and_undo_puts_it_back(tmp_path, mate_photos, tiny_model, model_args):
    photos = make_shoot(tmp_path / "shoot 'q' $(x)", mate_photos)
    config, workdir, db = tmp_path / "config", tmp_path / "dt", tmp_path / "index.db"
    # the photographer's library is indexed already: culling also reads its sidecars, where
    # darktable's default 1 star must not count as a pick (darktable's ratings decide)
    assert main(["rebuild", str(photos[0].parent), *model_args, "--workers", "0", "--db", str(db), "-q"]) == ExitCode.OK
    workdir.mkdir()
    assert main(["darktable", "install", "--config-dir", str(config)]) == ExitCode.OK  # no lua-scripts here
    (workdir / "photos.hex").write_text(hex_lines([str(p) for p in photos]))
    env = {
        "AES_DT_PHOTOS": str(workdir / "photos.hex"), "AES_DT_EXECUTABLE": executable(),
        "AES_DT_RATE": PERSON_RATES, "AES_DT_GROUP": PERSON_GROUPS[0], "AES_DT_GROUP_WITH": PERSON_GROUPS[1],
        "AES_INDEX_MODEL": tiny_model["config"], "AES_INDEX_PRETRAINED": tiny_model["checkpoint"],
        "AES_INDEX_DB": str(db), "AES_INDEX_DEVICE": "cpu", "AES_INDEX_DTYPE": "fp32", "AES_INDEX_WORKERS": "0",
    }
    # about twenty aes-index runs, each loading torch (10-20 s on two busy cores)
    lines = run_darktable(workdir, config, CULL_LUA, env, timeout=900)
    seen, done = phases(lines), results(lines)
    before = seen["before"]
    expected_tags = index_tags(db)  # what the index says each photo should carry

    # cancelled after the first chunk of two: scored two photos, changed nothing in darktable
    assert done["cancelled"] == {"cancelled_after": 2} and seen["cancelled"] == before
    # darktable's job bar after each chunk of scoring: 5 and 9 of 9 photos, scoring being 90 % of the work
    assert [line[1:] for line in lines if line[0] == "progress"] == [["score", "5", "9", "0.50", "true"], ["score", "9", "9", "0.90", "true"]]

    culled = seen["culled"]
    assert {name: culled[name]["leader"] for name in ("A0.jpg", "A1.jpg", "A2.jpg")} == dict.fromkeys(("A0.jpg", "A1.jpg", "A2.jpg"), "A1.jpg")
    assert {name: culled[name]["leader"] for name in ("B0.jpg", "B1.jpg", "B2.jpg")} == dict.fromkeys(("B0.jpg", "B1.jpg", "B2.jpg"), "B2.jpg")
    assert "aesthetic|keeper" in culled["A1.jpg"]["tags"] and "aesthetic|keeper" in culled["B2.jpg"]["tags"]  # B2: your 4 stars
    assert (culled["C0.jpg"]["leader"], culled["C1.jpg"]["size"]) == ("S.jpg", 1)  # your group stays, C is left alone
    assert done["cull"]["groups"] == 2 and done["cull"]["left_alone"] == 1
    assert "aesthetic|overexposed" in culled["S.jpg"]["tags"]
    assert {name: image["tags"] for name, image in culled.items()} == expected_tags
    assert any("aesthetic|blurry" in culled[name]["tags"] for name in ("A0.jpg", "A2.jpg", "B0.jpg", "B1.jpg"))
    assert {name: image["rating"] for name, image in culled.items()} == {name: image["rating"] for name, image in before.items()}  # no reject without the option
    assert seen["again"] == culled and done["again"]["tagged"] == 0

    assert seen["unculled"] == before  # groups, tags and ratings as they were

    rejected = seen["rejected"]
    # rejected: flagged frames of a group (a scene: A, B, C; S is alone) whose keeper is not flagged
    flagged = {name for name, tags in expected_tags.items() if tags - {"aesthetic|keeper"}}
    keepers = {name for name, tags in expected_tags.items() if "aesthetic|keeper" in tags}
    clean_scenes = {name[0] for name in keepers - flagged if name != "S.jpg"}
    rejectable = {name for name in flagged - keepers if name[0] in clean_scenes and name != "S.jpg"}
    assert {name for name, image in rejected.items() if image["rating"] == -1} == rejectable - {PERSON_RATES}
    assert rejected[PERSON_RATES]["rating"] == 4  # a person's rating is never rejected
    assert rejected["S.jpg"]["rating"] != -1 and "aesthetic|overexposed" in rejected["S.jpg"]["tags"]  # alone: never rejected
    (rerated,) = [line[1] for line in lines if line[0] == "rerated"]
    unrejected = seen["unrejected"]
    assert unrejected[rerated]["rating"] == 2  # changed by a person after the cull: kept
    assert {n: i for n, i in unrejected.items() if n != rerated} == {n: i for n, i in before.items() if n != rerated}


def executable() -> str:
    import shutil

    found = shutil.which("aes-index")
    assert found, "aes-index is not on PATH: pip install -e ."
    return found


KEEPERS = {"A1.jpg", "B2.jpg", "C0.jpg"}  # the sharp frames, but in B the person's 4 stars


def index_tags(db: Path) -> dict[str, set[str]]:
    """file name -> the tags darktable should show: aesthetic|keeper on KEEPERS (C0 too: C is
    left ungrouped, its keeper still tagged), and a tag for each flag the index holds."""
    from aes_index.features.culling.cull import load_flagged
    from aes_index.index.store import Index

    with Index(db) as index:
        flagged = load_flagged(index, index.runs.active_head_id())
    tags = {name: {"aesthetic|keeper"} if name in KEEPERS else set() for name in SHOOT}
    for member in flagged:
        tags[Path(member.path).name] |= {f"aesthetic|{flag}" for flag in member.flags}
    return tags


# --------------------------------------------------------------------------- the protocol, without darktable


def request_images(photos: list[Path], state: dict[str, dict] | None = None) -> list[dict]:
    """The shoot as the plugin describes it to cull: darktable id 100 + ref, each alone in its
    group but C0, which a person grouped under S; B2 with a person's 4 stars; `state` overrides."""
    ids = {p.name: 100 + ref for ref, p in enumerate(photos, start=1)}
    entries = []
    for ref, photo in enumerate(photos, start=1):
        entry = {"ref": ref, "path": str(photo), "duplicate": 0, "rating": 4 if photo.name == PERSON_RATES else 1,
                 "id": ids[photo.name], "group": ids[photo.name], "group_size": 1, "tags": []}
        if photo.name in PERSON_GROUPS:
            entry |= {"group": ids[PERSON_GROUPS[1]], "group_size": 2}
        entries.append(entry | (state or {}).get(photo.name, {}))
    return entries


@pytest.mark.slow
def test_the_cull_protocol_groups_journals_and_undoes(tmp_path, mate_photos, model_args, capsys):
    from test_darktable import ask

    photos = make_shoot(tmp_path / "shoot", mate_photos)
    options = [*model_args, "--workers", "0", "--db", tmp_path / "index.db"]
    names = {ref: p.name for ref, p in enumerate(photos, start=1)}
    refs = {name: ref for ref, name in names.items()}
    answer = ask(capsys, tmp_path, "cull", {"images": request_images(photos)}, *options, "--treat-as-unrated", "1")
    leaders = {names[g["leader"]]: sorted(names[m] for m in g["members"]) for g in answer["groups"]}
    assert leaders == {"A1.jpg": ["A0.jpg", "A1.jpg", "A2.jpg"], "B2.jpg": ["B0.jpg", "B1.jpg", "B2.jpg"]}
    assert [sorted(names[m] for m in g["members"]) for g in answer["left_alone"]] == [["C0.jpg", "C1.jpg"]]
    attached = {names[i["ref"]]: i["attach"] for i in answer["images"] if "attach" in i}
    assert KEEPER_TAG in attached["A1.jpg"] and KEEPER_TAG in attached["B2.jpg"] and not any("rating" in i for i in answer["images"])

    # the plugin groups and tags, and reports it; a report under another run is refused
    grouped = [{"path": str(photos[refs[n] - 1]), "duplicate": 0, "old": 100 + refs[n], "new": 100 + refs[leader]}
               for leader, members in leaders.items() for n in members if n != leader]
    tagged = [{"path": str(photos[refs[n] - 1]), "duplicate": 0, "tag": tag, "old": 0, "new": 1} for n, tags in attached.items() for tag in tags]
    recorded = ask(capsys, tmp_path, "applied", {"images": [], "run": answer["run"], "grouped": grouped, "tagged": tagged}, *options)
    assert recorded["recorded"] == len(grouped) + len(tagged)

    state = {n: {"group": 100 + refs[leader], "group_size": 3} for leader, members in leaders.items() for n in members}
    for name, tags in attached.items():
        state.setdefault(name, {})["tags"] = tags
    again = ask(capsys, tmp_path, "cull", {"images": request_images(photos, state)}, *options, "--treat-as-unrated", "1")
    assert len(again["groups"]) == 2 and not any("attach" in i or "detach" in i for i in again["images"])  # ours: redone as is

    state["A2.jpg"] = {**state["A2.jpg"], "group": 100 + refs["A2.jpg"], "group_size": 1}  # a person took A2 out of the burst
    state["A0.jpg"] = {**state["A0.jpg"], "group_size": 2}
    state["A1.jpg"] = {**state["A1.jpg"], "group_size": 2}
    undo = ask(capsys, tmp_path, "uncull", {"images": request_images(photos, state)}, *options)
    ungroup = sorted(names[i["ref"]] for i in undo["images"] if i.get("ungroup"))
    assert ungroup == ["A0.jpg", "B0.jpg", "B1.jpg"] and undo["kept"] == 1  # A2: the person's doing, kept
    detach = {names[i["ref"]]: i["detach"] for i in undo["images"] if "detach" in i}
    assert detach == attached
    unculled = [{"path": str(photos[refs[n] - 1]), "duplicate": 0, "field": "group"} for n in ungroup]
    unculled += [{"path": str(photos[refs[n] - 1]), "duplicate": 0, "field": "tag", "tag": t} for n, tags in detach.items() for t in tags]
    assert ask(capsys, tmp_path, "applied", {"images": [], "unculled": unculled}, *options)["restored"] == len(unculled)
    assert ask(capsys, tmp_path, "uncull", {"images": request_images(photos)}, *options) == {"version": 1, "images": [], "kept": 0}
