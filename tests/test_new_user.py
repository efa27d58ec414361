"""What a new user met, from a fresh clone with the README and nothing else: each test fails
on the code before its fix (the issue "A fresh clone: the README's two commands work as
written, and the rough edges a new user met")."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aes_index.formats import xmp
from aes_index.errors import ExitCode
from aes_index.index.store import Index
from conftest import TINY_CONFIG, make_photo, run_cli
import index_rows


def one_line_error(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("aes-index: ") and "Traceback" not in err


@pytest.fixture
def rated(tmp_path, model_args, capsys) -> Path:
    """Ten photos, indexed and rated into new sidecars (the bottom 10 %: one gets 1 star)."""
    root = tmp_path / "Pictures"
    for i in range(10):
        make_photo(root / f"IMG_{i}.jpg", seed=i)
    code, _, err = run_cli(capsys, "rebuild", root, *model_args, "--workers", "0")
    assert code == ExitCode.OK, err
    code, _, err = run_cli(capsys, "apply-ratings", "--db", root / ".aes-index.db")
    assert code == ExitCode.OK, err
    return root


def test_apply_culling_of_a_folder_never_indexed_says_there_is_no_index(tmp_path, capsys, monkeypatch):
    stray = tmp_path / "Downloads"
    make_photo(stray / "IMG_1.jpg", seed=1)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "apply-culling", stray)
    assert code == ExitCode.INDEX and one_line_error(err) and "no index at" in err, (code, out, err)
    code, _, err_cull = run_cli(capsys, "cull", stray)  # the same answer as cull's
    assert code == ExitCode.INDEX and err_cull == err


def test_plain_undo_names_the_place_it_could_not_put_back_and_why(rated, capsys):
    broken = rated / "IMG_1.jpg.xmp"
    broken.write_text("<x:xmpmeta>not xml")  # a person's tool broke the sidecar since
    code, out, _ = run_cli(capsys, "ratings", "undo", "--db", rated / ".aes-index.db")
    assert code == ExitCode.FILE_ERRORS
    (line,) = [line for line in out.splitlines() if "failed" in line and str(broken) in line]
    assert "not well-formed XML" in line, out
    assert out.splitlines()[0].startswith("1 failed") or "1 failed" in out.splitlines()[0], out


def test_stats_keeps_its_active_backbone_after_apply_ratings(rated, capsys):
    code, out, _ = run_cli(capsys, "stats", "--db", rated / ".aes-index.db", "--json")
    assert code == ExitCode.OK
    stats = json.loads(out)
    assert stats["active_backbone"] is not None, stats
    code, out, _ = run_cli(capsys, "stats", "--db", rated / ".aes-index.db")
    assert "(active)" in out


def test_a_checkpoint_of_another_architecture_is_said_to_be_one(tmp_path, tiny_model, capsys):
    other = dict(TINY_CONFIG, text_cfg={**TINY_CONFIG["text_cfg"], "width": 64, "context_length": 32})
    config = tmp_path / "other-clip.json"
    config.write_text(json.dumps(other))
    make_photo(tmp_path / "Pictures" / "IMG_1.jpg", seed=1)
    code, _, err = run_cli(
        capsys, "rebuild", tmp_path / "Pictures", "--model", config, "--pretrained", tiny_model["checkpoint"],
        "--device", "cpu", "--dtype", "fp32", "--workers", "0",
    )
    assert code == ExitCode.WEIGHTS and one_line_error(err), err
    assert "do not fit this architecture" in err and "--model" in err and "plain weights" not in err, err


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="a name that is not UTF-8 needs a byte-named file system")
def test_a_file_whose_name_is_not_utf8_is_listed_by_stats_and_the_gallery(tmp_path, model_args, capsys):
    root = tmp_path / "Pictures"
    make_photo(root / "good.jpg", seed=1)
    bad = os.path.join(os.fsencode(root), b"caf\xe9.jpg")  # Latin-1 from an old camera card
    with open(bad, "wb") as handle:
        handle.write((root / "good.jpg").read_bytes())
    code, out, err = run_cli(capsys, "rebuild", root, *model_args, "--workers", "0", "--json")
    assert code == ExitCode.FILE_ERRORS and json.loads(out)["errors"] == 1
    code, out, _ = run_cli(capsys, "stats", "--db", root / ".aes-index.db")
    assert "caf\\xe9.jpg" in out and "not valid UTF-8" in out, out
    page = tmp_path / "gallery.html"
    code, out, _ = run_cli(capsys, "report", "--db", root / ".aes-index.db", "--out", page)
    assert code == ExitCode.OK and "1 failed" in out, out
    assert "caf\\\\xe9.jpg" in page.read_text() and "not valid UTF-8" in page.read_text()
    os.rename(bad, os.path.join(os.fsencode(root), b"cafe.jpg"))  # renamed: the error goes, the photo comes
    code, out, _ = run_cli(capsys, "rebuild", root, *model_args, "--workers", "0", "--json")
    assert code == ExitCode.OK and json.loads(out)["errors"] == 0
    code, out, _ = run_cli(capsys, "stats", "--db", root / ".aes-index.db", "--json")
    assert json.loads(out)["errors"] == {}, out


def test_an_empty_file_is_an_error_not_a_decoded_photo(tmp_path, model_args, capsys):
    root = tmp_path / "Pictures"
    make_photo(root / "good.jpg", seed=1)
    (root / "empty.jpg").write_bytes(b"")
    code, out, _ = run_cli(capsys, "rebuild", root, *model_args, "--workers", "0", "--json")
    summary = json.loads(out)
    assert code == ExitCode.FILE_ERRORS and summary["decoded"] == 1 and summary["errors"] == 1, summary
    assert summary["skipped"] == 0, summary  # neither is "unchanged"


def test_the_one_star_tag_is_singular_and_an_old_plural_one_is_replaced(rated, capsys):
    tags = {path.name: xmp.read_sidecar(path).tags for path in rated.glob("*.xmp")}
    with Index(rated / ".aes-index.db") as index:
        stars = {Path(row["image_path"]).name + ".xmp": row["new_rating"]
                 for row in index_rows.rows(index, "rating_writes", undone_at=None)}
    for name, level in stars.items():
        assert ("1 star" if level == 1 else f"{level} stars") in tags[name], (name, tags[name])
    assert not any(tag == "1 stars" for found in tags.values() for tag in found)
    one = next(name for name, level in stars.items() if level == 1)
    sidecar = rated / one
    sidecar.write_bytes(sidecar.read_bytes().replace(b"Aesthetic|1 star<", b"Aesthetic|1 stars<"))  # as 0.1 wrote it
    assert "1 stars" in xmp.read_sidecar(sidecar).tags
    # the next write of its stars replaces the old spelling: it is recognised as our star tag
    code, _, err = run_cli(capsys, "apply-ratings", "--db", rated / ".aes-index.db", "--policy", "threshold", "--cuts=-1.9,-1.8,-1.7,-1.6")
    assert code == ExitCode.OK, err
    assert xmp.read_sidecar(sidecar).tags == ("5 stars",)


def test_random_weights_say_their_scores_mean_nothing(tmp_path, capsys, caplog):
    make_photo(tmp_path / "Pictures" / "IMG_1.jpg", seed=1)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    code, _, err = run_cli(
        capsys, "rebuild", tmp_path / "Pictures", "--model", config, "--pretrained", "random",
        "--device", "cpu", "--dtype", "fp32", "--workers", "0", "-q",
    )
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "random weights" in r.getMessage()]
    assert code == ExitCode.OK and len(warned) == 1 and "mean nothing" in warned[0].getMessage(), caplog.text


def test_a_first_rebuild_that_fails_for_want_of_weights_leaves_nothing_behind(tmp_path, capsys):
    root = tmp_path / "Pictures"
    make_photo(root / "IMG_1.jpg", seed=1)
    before = sorted(os.listdir(root))
    code, _, err = run_cli(capsys, "rebuild", root, "--pretrained", "openai", "--model", "ViT-B-32", "--device", "cpu")
    assert code == ExitCode.WEIGHTS and one_line_error(err) and "--pretrained PATH" in err, err
    assert sorted(os.listdir(root)) == before  # no empty .aes-index.db, no lock file


def test_a_failed_rebuild_of_an_existing_index_keeps_it(rated, capsys):
    index = rated / ".aes-index.db"
    make_photo(rated / "IMG_9.jpg", seed=9)
    code, _, err = run_cli(capsys, "rebuild", rated, "--pretrained", "openai", "--model", "ViT-B-32", "--device", "cpu")
    assert code == ExitCode.WEIGHTS, err
    assert index.is_file()
    with Index(index) as opened:
        assert index_rows.count(opened, "scores") == 10
