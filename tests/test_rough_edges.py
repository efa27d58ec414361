"""Rough edges of the `aes-index` CLI a tester found: each test fails on the code before its fix."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from aes_index.cli import main
from aes_index.errors import ExitCode

from conftest import make_photo


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("aes-index: ") and "Traceback" not in err and "internal error" not in err


@pytest.fixture
def small_library(tmp_path) -> Path:
    root = tmp_path / "Pictures"
    for i in range(3):
        make_photo(root / "2024" / f"IMG_{i}.jpg", seed=i)
    return root


# --- 12: NAS recycle bins and snapshots are not photos -----------------------------------


def test_nas_recycle_and_snapshot_folders_are_skipped(tmp_path):
    from aes_index.library import discover

    root = tmp_path / "share"
    make_photo(root / "keep.jpg", seed=1)
    for clutter in ("@Recycle", "#recycle", "@Recently-Snapshot", ".@__thumb", "@eaDir"):
        make_photo(root / clutter / "IMG_1.jpg", seed=2)
    assert [os.path.basename(e.path) for e in discover([root])] == ["keep.jpg"]
