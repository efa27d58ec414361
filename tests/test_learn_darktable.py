"""darktable's own library.db as `aes-index learn` reads it, written by a real darktable
(Debian's darktable 4.2, headless under Xvfb): its stars, its reject and its import default
are read as darktable means them, and the file is left byte for byte."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from aes_index.targets.darktable_db import library_images
from aes_index.values import REJECTED
from conftest import make_photo
from test_darktable import run_with_hard_timeout
from test_readers import require_tool

RATE_LUA = r"""
local dt = require "darktable"
local out = assert(io.open(os.getenv("AES_DT_RESULT"), "w"))
local ok, err = pcall(function()
  local wanted = { ["four.jpg"] = 4, ["rejected.jpg"] = -1, ["five.jpg"] = 5 }
  for line in io.lines(os.getenv("AES_DT_PHOTOS")) do
    local image = dt.database.import(line)
    if wanted[image.filename] then image.rating = wanted[image.filename] end
    out:write(image.filename, "\t", tostring(image.rating), "\n")
  end
end)
out:write("done\t", tostring(ok), "\t", tostring(err), "\n")
out:close()
os.exit(0)
"""


@pytest.mark.external
@pytest.mark.slow
def test_a_real_darktable_library_is_read_as_darktable_means_it_and_left_unchanged(tmp_path):
    xvfb_run, dt = require_tool("xvfb-run"), require_tool("darktable")
    photos = [make_photo(tmp_path / "Photos" / name, seed=i) for i, name in enumerate(["four.jpg", "rejected.jpg", "five.jpg", "imported.jpg"])]
    workdir, library = tmp_path / "dt", tmp_path / "dt" / "library.db"
    workdir.mkdir()
    (workdir / "photos.txt").write_text("".join(f"{p}\n" for p in photos))
    (workdir / "flow.lua").write_text(RATE_LUA)
    env = {**os.environ, "HOME": str(workdir), "AES_DT_RESULT": str(workdir / "result.txt"), "AES_DT_PHOTOS": str(workdir / "photos.txt")}
    command = [xvfb_run, "-a", dt, "--library", str(library), "--configdir", str(workdir / "config"),
               "--cachedir", str(workdir / "cache"), "--luacmd", 'dofile("flow.lua")']
    returncode, stderr = run_with_hard_timeout(command, 120, cwd=workdir, env=env)
    result = (workdir / "result.txt").read_text().splitlines()
    assert result[-1] == "done\ttrue\tnil", (returncode, result, stderr[-2000:])
    before = hashlib.sha256(library.read_bytes()).hexdigest()
    siblings = sorted(p.name for p in workdir.iterdir())

    ratings = {Path(image.path).name: image.rating for image in library_images(library)}

    assert ratings == {"four.jpg": 4, "rejected.jpg": REJECTED, "five.jpg": 5, "imported.jpg": 1}  # darktable's import default: 1
    assert hashlib.sha256(library.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in workdir.iterdir()) == siblings  # no -wal, -shm or journal left beside it
