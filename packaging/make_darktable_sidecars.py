#!/usr/bin/env python3
"""Make the darktable sidecars of tests/fixtures/darktable-xmp/ that darktable writes itself.

Real darktable (Debian's `darktable` package, 4.2.1) runs headless under Xvfb with a fresh,
throw-away configuration and an in-memory library. A Lua flow imports copies of the fixture
photo (tests/fixtures/photos/evening-glow.jpg), gives them the user's tags through darktable's
Lua API (`darktable.tags.attach`), opens each in the darkroom and edits it there through
darktable's own actions (`darktable.gui.action`, what a shortcut does), and goes back to the
lighttable: darktable then writes each sidecar (`<photo>.xmp`) as it does for every user
(its default "write sidecar files on import/after edit"). Nothing here writes or edits XML.

    evening-glow-folk-toto.jpg.xmp   tags "Folk" and "toto"; darktable's import rating 1;
                                     exposure, vignette, color balance rgb in the darkroom
    evening-glow-places.jpg.xmp      hierarchical tags ("places|lake shore", "subjects|boats"),
                                     title, description, creator, rights, a red colour label,
                                     import rating 1; exposure, vignette

Run (from the repository root; needs darktable and xvfb-run):

    python3 packaging/make_darktable_sidecars.py tests/fixtures/darktable-xmp

then update the sha256 block of tests/fixtures/PROVENANCE.md. A new run gives new timestamps
and hashes (darktable writes the times of import and change), not the same bytes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "tests" / "fixtures" / "photos" / "evening-glow.jpg"
NAMES = ("evening-glow-folk-toto.jpg", "evening-glow-places.jpg")

# Paths come from the environment, never pasted into Lua source.
FLOW = r"""
local dt = require "darktable"
local out = io.open(os.getenv("DT_RESULT"), "w")
local function log(...)
  local t = {}
  for i = 1, select("#", ...) do t[#t + 1] = tostring(select(i, ...)) end
  out:write(table.concat(t, "\t"), "\n")
  out:flush()
end

local function action(path, element, effect, speed)
  local value = dt.gui.action(path, 0, element, effect, speed)
  log("action", path, value)
  dt.control.sleep(700)
end

local function edit_in_darkroom(image, edits)
  dt.gui.selection({image})
  dt.control.sleep(500)
  dt.gui.current_view(dt.gui.views.darkroom)
  dt.control.sleep(3000)
  log("view", dt.gui.current_view())
  edits()
  dt.gui.current_view(dt.gui.views.lighttable)  -- leaving the darkroom writes history and sidecar
  dt.control.sleep(3000)
  log("view", dt.gui.current_view())
end

local ok, err = pcall(function()
  local folder = os.getenv("DT_PHOTOS") .. "/"
  local folk = dt.database.import(folder .. "evening-glow-folk-toto.jpg")
  local places = dt.database.import(folder .. "evening-glow-places.jpg")
  log("imported", folk.rating, places.rating)

  dt.tags.attach(dt.tags.create("Folk"), folk)
  dt.tags.attach(dt.tags.create("toto"), folk)
  edit_in_darkroom(folk, function()
    action("iop/exposure/exposure", "", "up", 5)
    action("iop/vignette", "enable", "on", 1)
    action("iop/colorbalancergb/global vibrance", "", "up", 10)
  end)

  dt.tags.attach(dt.tags.create("places|lake shore"), places)
  dt.tags.attach(dt.tags.create("subjects|boats"), places)
  places.title = "Evening glow"
  places.description = "Rowing boats on a lake shore at dusk"
  places.creator = "Ian Hex"
  places.rights = "GPL-2.0-or-later"
  places.red = true
  edit_in_darkroom(places, function()
    action("iop/exposure/exposure", "", "down", 3)
    action("iop/vignette", "enable", "on", 1)
  end)
  for _, image in ipairs({folk, places}) do
    local names = {}
    for _, tag in ipairs(dt.tags.get_tags(image)) do names[#names + 1] = tag.name end
    log("image", image.filename, image.rating, table.concat(names, ","))
  end
end)
log("done", ok, err)
out:close()
os.exit(0)
"""


def make(target: Path, photo: Path = PHOTO, timeout: float = 600) -> list[Path]:
    xvfb_run, darktable = shutil.which("xvfb-run"), shutil.which("darktable")
    if not (xvfb_run and darktable):
        sys.exit("needs xvfb-run and darktable (Debian: apt-get install xvfb darktable)")
    with tempfile.TemporaryDirectory(prefix="dt-sidecars-") as scratch:
        work = Path(scratch)
        photos = work / "photos"
        photos.mkdir()
        for name in NAMES:
            shutil.copyfile(photo, photos / name)
        (work / "flow.lua").write_text(FLOW)
        env = {
            **os.environ, "HOME": str(work), "DT_PHOTOS": str(photos),
            "DT_RESULT": str(work / "result.txt"),
        }
        command = [xvfb_run, "-a", darktable, "--library", ":memory:", "--configdir", str(work / "config"),
                   "--cachedir", str(work / "cache"), "--luacmd", 'dofile("flow.lua")']
        run = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, errors="replace", timeout=timeout)
        result = (work / "result.txt").read_text() if (work / "result.txt").exists() else ""
        print(result, end="")
        if "done\ttrue\tnil" not in result or "\tnan" in result:
            sys.exit(f"the darktable flow failed (exit {run.returncode}): {run.stderr[-2000:]}")
        made = []
        for name in NAMES:
            sidecar = photos / f"{name}.xmp"
            text = sidecar.read_text(encoding="utf-8")
            history = int(re.search(r'darktable:history_end="(\d+)"', text).group(1))
            if history < 5 or 'xmp:Rating="1"' not in text or "history_current_hash" not in text:
                sys.exit(f"{sidecar.name}: not the edited, 1-star sidecar expected:\n{text[:1500]}")
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sidecar, target / sidecar.name)
            made.append(target / sidecar.name)
        return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", type=Path, help="folder for the sidecars, e.g. tests/fixtures/darktable-xmp")
    parser.add_argument("--photo", type=Path, default=PHOTO)
    args = parser.parse_args()
    for path in make(args.target, args.photo):
        print(path)


if __name__ == "__main__":
    main()
