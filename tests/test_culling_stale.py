"""Facts belong to the bytes they were measured on.

A photo whose file changed (or went) since `rebuild` measured it is left out of `cull` and
`apply-culling`, with one line saying how many; the next `rebuild` measures it again and
the next `cull` regroups it; `doctor` and `stats` count such photos. No sidecar is ever
written beside a photo that is no longer there.

The library is test_culling_marks.py's: a burst of four frames (burst_1 sharp, the keeper),
an overexposed photo, an unrelated one, rebuilt with the tiny model and culled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from aes_index.errors import ExitCode
from conftest import run_cli
from test_culling_marks import BURST, SHARP, _frame, apply_culling, cull, culled  # noqa: F401 - culled: a fixture

OTHER_PICTURE = (1500, 800, 2400, 1400)  # a part of the photo no frame of the burst shows


def replace_with_another_picture(path: Path) -> None:
    """A different picture saved under the photo's name, as an editor's "save as" would."""
    before = path.stat()
    _frame(OTHER_PICTURE).save(path, quality=85)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 5_000_000_000))


def rebuild(capsys, library: dict, model_args) -> None:
    code, _, err = run_cli(capsys, "rebuild", library["root"], *model_args, "--workers", "0", "--db", library["index"])
    assert code == ExitCode.OK, err


def cull_summary(capsys, library: dict) -> dict:
    """`aes-index cull --json`: the cull's summary."""
    code, out, err = run_cli(capsys, "cull", "--db", library["index"], "--json")
    assert code == ExitCode.OK, err
    return json.loads(out)


def cull_text(capsys, library: dict) -> str:
    code, out, err = run_cli(capsys, "cull", "--db", library["index"])
    assert code == ExitCode.OK, err
    return out


def burst_groups(capsys, library: dict) -> list[dict]:
    code, out, err = run_cli(capsys, "groups", "--db", library["index"], "--json")
    assert code == ExitCode.OK, err
    return json.loads(out)["groups"]


def member_names(group: dict) -> set[str]:
    return {Path(m["path"]).name for m in group["members"]}


def test_a_picture_saved_under_a_culled_photos_name_is_left_out_until_rebuild(culled, capsys, model_args):
    keeper = culled["root"] / SHARP
    replace_with_another_picture(keeper)

    out = cull_text(capsys, culled)
    assert "1 photo changed since it was measured (left out): run `aes-index rebuild`" in out, out
    (group,) = burst_groups(capsys, culled)
    assert member_names(group) == set(BURST) - {SHARP}  # its old facts group it no more
    assert Path(group["keeper"]).name != SHARP

    _, report = apply_culling(capsys, culled)
    assert report["changed_since_measured"] == 1 and report["gone_since_measured"] == 0, report
    assert not (culled["root"] / f"{SHARP}.xmp").exists()  # no "keeper" for a picture we never saw
    code, out, _ = run_cli(capsys, "apply-culling", "--db", culled["index"])
    assert code == ExitCode.OK and out.count("changed since it was measured") == 1, out

    # the next rebuild measures it again: another picture, it stays out of the burst
    rebuild(capsys, culled, model_args)
    summary = cull_summary(capsys, culled)
    assert (summary["considered"], summary["changed_since_measured"]) == (1, 0), summary
    (group,) = burst_groups(capsys, culled)
    assert SHARP not in member_names(group)


def test_after_a_rebuild_a_changed_photo_leaves_its_burst_and_the_summary_says_so(culled, capsys, model_args):
    replace_with_another_picture(culled["root"] / "burst_2.jpg")
    rebuild(capsys, culled, model_args)
    summary = cull_summary(capsys, culled)
    assert (summary["left"], summary["considered"]) == (1, 1), summary  # not "0 left": it left its burst
    (group,) = burst_groups(capsys, culled)
    assert member_names(group) == set(BURST) - {"burst_2.jpg"}
    assert group["reason"].startswith("sharpest of 3"), group["reason"]  # the group decided again without it


def test_a_photo_still_alike_after_its_edit_leaves_and_joins_its_burst_again(culled, capsys, model_args):
    """Measured again, a photo is compared again: an edit that keeps the picture keeps it in
    the burst, and the summary counts it out and in."""
    frame = culled["root"] / "burst_3.jpg"
    before = frame.stat()
    _frame((112, 100, 1312, 900), blur=6.0).save(frame, quality=80)  # the same frame, re-encoded
    os.utime(frame, ns=(before.st_atime_ns, before.st_mtime_ns + 5_000_000_000))
    rebuild(capsys, culled, model_args)
    summary = cull_summary(capsys, culled)
    assert (summary["left"], summary["joined"]) == (1, 1), summary
    (group,) = burst_groups(capsys, culled)
    assert member_names(group) == set(BURST)


def test_a_photo_deleted_or_renamed_after_cull_gets_no_orphan_sidecar(culled, capsys, model_args):
    root = culled["root"]
    (root / "burst_0.jpg").unlink()  # a blurred frame: it would be tagged
    os.rename(root / "bright.jpg", root / "bright-renamed.jpg")  # overexposed: it would be tagged
    os.rename(root / "bright.jpg.xmp", root / "bright-renamed.jpg.xmp")  # as darktable or digiKam renames both

    code, out, err = run_cli(capsys, "apply-culling", "--db", culled["index"])
    assert code == ExitCode.OK, err
    assert "2 photos gone since they were measured (moved, renamed or deleted; left out: no sidecar written)" in out, out
    assert not (root / "burst_0.jpg.xmp").exists() and not (root / "bright.jpg.xmp").exists()
    assert (root / "burst_2.jpg.xmp").exists()  # the photos still there are marked

    rebuild(capsys, culled, model_args)
    cull(capsys, culled["index"])
    _, report = apply_culling(capsys, culled)
    assert report["gone_since_measured"] == 0, report
    assert not (root / "burst_0.jpg.xmp").exists() and not (root / "bright.jpg.xmp").exists()
    from aes_index.formats.xmp import read_sidecar

    assert read_sidecar(root / "bright-renamed.jpg.xmp").tags[-1:] == ("overexposed",)  # the mark followed the photo


def test_a_photo_deleted_after_apply_culling_gets_no_sidecar_when_its_marks_are_taken_back(culled, capsys, model_args):
    """A keeper that is one no more loses our marks at the next run, unless its photo is gone:
    then its sidecar is left as it is, never written beside nothing."""
    root = culled["root"]
    apply_culling(capsys, culled)
    keeper_sidecar = root / f"{SHARP}.xmp"
    before = keeper_sidecar.read_bytes()
    (root / SHARP).unlink()
    rebuild(capsys, culled, model_args)
    assert cull_summary(capsys, culled)["left"] == 1  # the keeper left: another frame keeps
    _, report = apply_culling(capsys, culled)
    assert report["gone_since_measured"] == 1 and report["keepers"] == 1, report
    assert keeper_sidecar.read_bytes() == before  # not rewritten for a photo that is gone


def test_a_photo_gone_before_cull_keeps_its_group_until_rebuild_finds_it(culled, capsys, model_args):
    """Gone from its path is not another picture: a moved photo keeps its group, and a
    library whose disk is not mounted keeps its groups."""
    root = culled["root"]
    (root / "kept").mkdir()
    os.rename(root / "burst_0.jpg", root / "kept" / "burst_0.jpg")
    out = cull_text(capsys, culled)
    assert "1 photo gone since it was measured (moved, renamed or deleted; grouped as before): run `aes-index rebuild`" in out, out
    (group,) = burst_groups(capsys, culled)
    assert member_names(group) == set(BURST)
    rebuild(capsys, culled, model_args)
    summary = cull_summary(capsys, culled)
    assert (summary["left"], summary["gone_since_measured"]) == (0, 0), summary
    (group,) = burst_groups(capsys, culled)
    assert str(root / "kept" / "burst_0.jpg") in [m["path"] for m in group["members"]]


def test_doctor_and_stats_count_photos_changed_since_they_were_measured(culled, capsys, model_args):
    root = culled["root"]
    replace_with_another_picture(root / "single.jpg")
    (root / "burst_3.jpg").unlink()
    code, out, _ = run_cli(capsys, "stats", "--db", culled["index"], "--json")
    data = json.loads(out)
    assert (data["changed_since_measured"], data["gone_since_measured"]) == (1, 1), data
    code, out, _ = run_cli(capsys, "stats", "--db", culled["index"])
    line = "1 photo changed since it was measured, 1 photo gone since it was measured (moved, renamed or deleted): run `aes-index rebuild`"
    assert line in out, out

    code, out, _ = run_cli(capsys, "doctor", "--db", culled["index"], *model_args, "--json")
    index_check = {c["name"]: c for c in json.loads(out)["checks"]}["index"]
    assert (index_check["changed_since_measured"], index_check["gone_since_measured"]) == (1, 1), index_check
    assert code == ExitCode.OK  # a library in use changes: a thing to know, not a failure
    code, out, _ = run_cli(capsys, "doctor", "--db", culled["index"], *model_args)
    assert line in out, out

    rebuild(capsys, culled, model_args)
    code, out, _ = run_cli(capsys, "stats", "--db", culled["index"], "--json")
    assert (json.loads(out)["changed_since_measured"], json.loads(out)["gone_since_measured"]) == (0, 0)


def test_a_photo_touched_but_not_changed_is_not_counted(culled, capsys):
    """Only the bytes count: a new mtime over the same picture (a backup tool, `touch`) is no change."""
    frame = culled["root"] / SHARP
    os.utime(frame, ns=(frame.stat().st_atime_ns, frame.stat().st_mtime_ns + 9_000_000_000))
    summary = cull_summary(capsys, culled)
    assert summary["changed_since_measured"] == 0 and summary["left"] == 0, summary
