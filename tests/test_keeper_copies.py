"""The original is the keeper: the order of copies of one picture (keeper._best_copy), and
copies of one frame inside a burst counting as one frame (grouping.frames_of).

The order: a RAW over the camera's JPEG; a camera file over an export or a re-encode; more
pixels; a lossless file or a higher JPEG quality; then sharpness and score. Each case here
is one a photographer met: an export of a burst's best frame kept over its original, a
quality-70 backup, a PNG export, a RAW+JPEG pair on an exact tie.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from aes_index.features.culling import keeper
from aes_index.features.culling.model import BLURRY, BURST, BY_US, DUPLICATE, Member
from aes_index.index.decode import decode_image
from aes_index.index.facts import JPEG, LOSSLESS, RAW, FactsProbe, edited_by_software, jpeg_quality
from conftest import METADATA_SAMPLES
from test_culling import burst, cull, exif_bytes, groups, names, rebuild, save, scene

FULL = 24_000_000


def photo(i: int, sharpness: float, score: float = 0.5, **copy) -> Member:
    facts = {"pixels": FULL, "encoding": JPEG, "quality": 92, "camera_file": True, **copy}
    return Member(i, f"/p/{i}.jpg", score, sharpness, 0.0, 0.0, f"2024-05-01T10:00:0{i}", **facts)


# --- the order of copies, as a table --------------------------------------------------------

COPIES = [
    # (case, the copies, the keeper's id, the reason)
    ("a RAW over its camera JPEG on an exact tie",
     [photo(1, 0.7, encoding=JPEG), photo(2, 0.7, encoding=RAW, quality=None)], 2, "the RAW of 2 copies"),
    ("a camera JPEG over a sharper-measuring PNG export",
     [photo(1, 0.62), photo(2, 0.70, 0.9, encoding=LOSSLESS, quality=None, camera_file=False)], 1,
     "the camera original of 2 copies"),
    ("the quality-92 original over a quality-70 backup that kept the EXIF",
     [photo(1, 0.66, quality=70), photo(2, 0.64, quality=92)], 2, "best quality (JPEG quality 92) of 2 copies"),
    ("the full-size copy over a crop",
     [photo(1, 0.75, 0.9, pixels=FULL * 9 // 10, camera_file=False), photo(2, 0.7, camera_file=False)], 2,
     "largest of 2 copies"),
    ("a lossless export over a JPEG export of one size",
     [photo(1, 0.7, camera_file=False, quality=95), photo(2, 0.7, camera_file=False, encoding=LOSSLESS, quality=None)], 2,
     "lossless of 2 copies"),
    ("copies alike in every way: the sharpest, then the score",
     [photo(1, 0.70, 0.9), photo(2, 0.75, 0.1)], 2, "sharpest of 2 copies"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "copies", "keeper_id", "reason"), COPIES, ids=[c[0] for c in COPIES])
def test_the_order_of_copies(case, copies, keeper_id, reason):
    group = keeper.decide(1, DUPLICATE, copies)
    assert (group.keeper_id, group.reason) == (keeper_id, reason)


def test_in_a_burst_an_export_of_the_best_frame_is_its_copy_not_a_sharper_frame():
    """The export (half size, no EXIF) of frame 1 measures sharper per pixel than any frame:
    it is frame 1's copy, so the burst picks frame 1 and the order of copies its original."""
    original, frame2, frame3 = photo(1, 0.70, 0.6), photo(2, 0.60, 0.9), photo(3, 0.55, 0.8)
    export = photo(4, 0.76, 0.95, pixels=FULL // 4, quality=72, camera_file=False)
    members = [original, frame2, frame3, replace(export, frame=original.image_id)]
    group = keeper.decide(1, BURST, members)
    assert group.keeper_id == original.image_id and group.chosen_by == BY_US
    assert group.reason == "sharpest of 3, 2 scored higher but are blurred, the camera original of 2 copies"
    flags = {m.image_id: m.flags for m in group.members}
    assert flags[export.image_id] == () and flags[frame2.image_id] == (BLURRY,) == flags[frame3.image_id]


def test_copies_of_a_blurred_frame_share_its_blur():
    sharp, blurred = photo(1, 0.70), photo(2, 0.55)
    raw_of_blurred = photo(3, 0.58, encoding=RAW, quality=None, frame=2)
    group = keeper.decide(1, BURST, [sharp, replace(blurred, frame=2), raw_of_blurred])
    flags = {m.image_id: m.flags for m in group.members}
    assert group.keeper_id == 1 and flags == {1: (), 2: (BLURRY,), 3: (BLURRY,)}


# --- the facts the order reads ----------------------------------------------------------------


@pytest.mark.parametrize("quality", [30, 50, 70, 72, 85, 92, 95, 100])
def test_a_jpegs_quality_is_read_from_its_quantisation_tables(quality):
    data = io.BytesIO()
    scene(1, (256, 160)).save(data, "JPEG", quality=quality)
    with Image.open(data) as image:
        assert jpeg_quality(image.quantization) == quality


def test_encoding_quality_and_software_are_capture_facts(tmp_path):
    jpeg = save(scene(2), tmp_path / "a.jpg", exif_bytes("2024:05:01 10:00:07"), quality=83)
    png = tmp_path / "b.png"
    scene(2).save(png)
    found = {}
    for path in (jpeg, png, METADATA_SAMPLES / "DNG.dng", METADATA_SAMPLES / "ExifTool.jpg"):
        probe = FactsProbe()
        decode_image(path, probe=probe)
        facts = probe.facts()
        found[path.name] = (facts.encoding, facts.quality, facts.camera_file)
    assert found["a.jpg"] == (JPEG, 83, True)
    assert found["b.png"] == (LOSSLESS, None, False)
    assert found["DNG.dng"] == (RAW, None, True)  # its embedded preview's JPEG quality is not the RAW's
    assert found["ExifTool.jpg"][2] is False  # camera EXIF, but "Adobe Photoshop 7.0" wrote it


def test_an_editors_name_in_software_marks_an_export():
    assert edited_by_software("Adobe Photoshop Lightroom Classic 13.1 (Windows)")
    assert edited_by_software("darktable 4.6.1") and edited_by_software("GIMP 2.10.34")
    assert not edited_by_software("Ver.1.10") and not edited_by_software("HDR+ 1.0.570503588zd") and not edited_by_software(None)


# --- through the CLI, on files ----------------------------------------------------------------


def test_the_camera_original_keeps_over_its_half_size_export_in_another_folder(tmp_path, capsys, model_args):
    root = tmp_path / "Photos"
    shoot = burst(root / "2024-05-01", seed=3, frames=4, second=10, sharp=1)
    with Image.open(shoot[1]) as frame:  # the photographer's export: half size, quality 72, no EXIF
        half = frame.resize((frame.width // 2, frame.height // 2), Image.Resampling.LANCZOS)
        save(half, root / "exports" / "best.jpg", quality=72)
    rebuild(capsys, root, model_args)
    cull(capsys, root)
    (group,) = groups(capsys, root)["groups"]
    assert group["kind"] == BURST and group["keeper"] == str(shoot[1]), group
    assert sorted(names(group)) == sorted([p.name for p in shoot] + ["best.jpg"])
    assert group["reason"].startswith("sharpest of 4") and group["reason"].endswith("the camera original of 2 copies")
    export = next(m for m in group["members"] if m["path"].endswith("best.jpg"))
    assert BLURRY not in export["flags"]  # a copy of the sharp frame


def test_a_backup_a_png_export_and_the_camera_jpeg_keep_the_camera_jpeg(tmp_path, capsys, model_args):
    root = tmp_path / "Photos"
    original = save(scene(4, (1200, 800)), root / "DCIM" / "IMG_0042.jpg", exif_bytes("2024:05:01 10:00:07", "25"))
    with Image.open(original) as image:
        save(image, root / "backup" / "IMG_0042.jpg", exif_bytes("2024:05:01 10:00:07", "25"), quality=70)
        image.save(root / "backup" / "IMG_0042.png")
    rebuild(capsys, root, model_args)
    cull(capsys, root)
    (group,) = groups(capsys, root)["groups"]
    assert group["kind"] == DUPLICATE and group["keeper"] == str(original), group
    assert group["reason"] == "the camera original of 3 copies, best quality (JPEG quality 92)"


def test_a_raw_keeps_over_the_jpeg_the_camera_wrote_beside_it(tmp_path, capsys, model_args):
    root = tmp_path / "Photos"
    root.mkdir()
    raw = root / "IMG_0007.dng"
    shutil.copy(METADATA_SAMPLES / "DNG.dng", raw)
    probe = FactsProbe()
    preview = decode_image(raw, min_side=800, probe=probe)  # the camera's JPEG: the same picture, the same moment
    taken = probe.facts().taken_at_text.replace("-", ":").replace("T", " ")[:19]
    camera_exif = exif_bytes(taken, camera=("Canon", "Canon EOS 350D DIGITAL", "1"))
    save(preview, root / "IMG_0007.jpg", camera_exif, quality=95)
    save(preview, root / "backup" / "IMG_0007.jpg", camera_exif, quality=95)  # a copy of the pair's JPEG: a set to cull
    rebuild(capsys, root, model_args)
    cull(capsys, root)
    (group,) = groups(capsys, root)["groups"]
    assert group["keeper"] == str(raw) and group["reason"].startswith("the RAW of 3 copies"), group


# --- brackets ---------------------------------------------------------------------------------


def bracket_exif(taken: str, subsec: str, bias: tuple[int, int], auto: bool = False) -> bytes:
    import piexif

    exif = piexif.load(exif_bytes(taken, subsec))
    exif["Exif"][piexif.ExifIFD.ExposureBiasValue] = bias
    if auto:
        exif["Exif"][piexif.ExifIFD.ExposureMode] = 2
    return piexif.dump(exif)


@pytest.mark.parametrize("auto", [False, True], ids=["bias steps", "auto bracket"])
def test_a_bracket_is_kept_whole_and_no_frame_is_flagged_for_its_exposure(tmp_path, capsys, model_args, auto):
    """-2, 0, +2 EV, 0.3 s apart: the +2 EV frame clips, the -2 EV one is dark. Kept whole:
    every frame a keeper in the sidecars, none flagged or rejected for its exposure, the
    0 EV frame leads."""
    from aes_index.formats.xmp import read_sidecar, sidecar_for
    from conftest import run_cli

    root = tmp_path / "Photos"
    base = scene(5, (1000, 680))
    paths = []
    for k, (ev, bias) in enumerate(((-2, (-2, 1)), (0, (0, 1)), (2, (2, 1)))):
        frame = Image.eval(base.crop((k * 3, 0, k * 3 + 960, 640)), lambda v, ev=ev: min(255, int(v * 2.0 ** (ev / 2.2) + (60 if ev > 0 else 0))))
        bias = bias if not auto else (0, 1)  # an auto bracket need not write the compensation
        paths.append(save(frame, root / f"IMG_{k}.jpg", bracket_exif("2024:05:01 10:00:00", str(3 * k), bias, auto=auto)))
    rebuild(capsys, root, model_args)
    summary = cull(capsys, root)
    assert summary["brackets"] == 1 and summary["bursts"] == 0, summary
    (group,) = groups(capsys, root)["groups"]
    assert group["kind"] == "bracket" and group["keeper"] == str(paths[1]), group
    assert all(m["flags"] == [] for m in group["members"]), group["members"]
    if not auto:
        assert group["reason"] == "bracket of 3 frames (-2, 0, +2 EV), kept whole; the 0 EV frame leads"
    assert run_cli(capsys, "apply-culling", root, "--reject")[0] == 0
    for path in paths:
        marks = read_sidecar(sidecar_for(path))
        assert marks.pick == 3 and marks.rating != -1 and "keeper" in marks.tags, (path.name, marks)


def test_a_raw_jpeg_pair_alone_is_one_photo_not_a_group(tmp_path, capsys, model_args):
    """IMG_0007.dng and IMG_0007.jpg, the camera's pair, and an unrelated photo: no
    duplicate set to cull, three files counted as two photos; a pair inside a burst is one
    of its frames (test_a_raw_keeps_over_the_jpeg_the_camera_wrote_beside_it: a pair with
    a third copy is a group, the RAW its keeper)."""
    root = tmp_path / "Photos"
    root.mkdir()
    raw = root / "IMG_0007.dng"
    shutil.copy(METADATA_SAMPLES / "DNG.dng", raw)
    probe = FactsProbe()
    preview = decode_image(raw, min_side=800, probe=probe)
    taken = probe.facts().taken_at_text.replace("-", ":").replace("T", " ")[:19]
    save(preview, root / "IMG_0007.jpg", exif_bytes(taken, camera=("Canon", "Canon EOS 350D DIGITAL", "1")), quality=95)
    save(scene(9, (1200, 800)), root / "other.jpg", exif_bytes("2024:05:02 10:00:00", "10"))
    rebuild(capsys, root, model_args)
    summary = cull(capsys, root)
    assert (summary["groups"], summary["duplicates"], summary["pairs"], summary["photos"]) == (0, 0, 1, 2), summary
    assert groups(capsys, root)["groups"] == []


# --- found in review ----------------------------------------------------------------------------

from aes_index.features.culling import grouping  # noqa: E402
from aes_index.features.culling.model import BRACKET, PAIR  # noqa: E402
from aes_index.index.facts import LOSSY  # noqa: E402


def test_a_phones_heic_original_is_not_ranked_below_its_jpeg_conversion():
    """A HEIC's quality is not read: no quality step, the sharper (the original) keeps."""
    heic = photo(1, 0.72, encoding=LOSSY, quality=None)
    converted = photo(2, 0.70, 0.9, quality=90)
    group = keeper.decide(1, DUPLICATE, [heic, converted])
    assert (group.keeper_id, group.reason) == (1, "sharpest of 2 copies")


def test_copies_of_a_frame_share_its_whole_verdict():
    raw = photo(1, 0.7, encoding=RAW, quality=None)
    jpeg = photo(2, 0.7, clipped_channel=None)
    jpeg = replace(jpeg, clipped_highlights=0.5)  # its own measure clips; the frame's does not
    group = keeper.decide(1, DUPLICATE, [raw, jpeg])
    assert {m.image_id: m.flags for m in group.members} == {1: (), 2: ()}


def row(i: int, taken: float, text: str, path: str | None = None, **facts) -> dict:
    return {"image_id": i, "path": path or f"/shoot/IMG_{i}.JPG", "taken_at": taken, "taken_at_text": text,
            "camera": "Canon EOS R6", "software": None, "encoding": JPEG, "width": 6000, "height": 4000, "quality": 92,
            "signature": 1, "signature_inner": 1, "signature_core": 1, "sharpness": 0.7, **facts}


def test_two_camera_frames_of_one_second_are_two_frames_whatever_fraction_the_camera_writes():
    # a camera that writes SubSecTimeOriginal "00" for every frame, a static scene: same time, same look
    same = [row(1, 100.0, "2024-05-01T10:00:00.000"), row(2, 100.0, "2024-05-01T10:00:00.000")]
    assert grouping.frames_of(same) == {1: 1, 2: 2}
    export = row(3, 100.0, "2024-05-01T10:00:00", path="/exports/IMG_1.jpg", camera=None, width=3000, height=2000, quality=72)
    assert grouping.frames_of([*same, export])[3] in (1, 2)  # a copy of one of them


def test_a_burst_with_a_turn_of_the_dial_is_no_bracket_and_one_capture_is_a_pair_whatever_its_kind():
    frames = [row(i, 100.0 + 0.1 * i, "", exposure_bias=0.0 if i < 10 else 0.7) for i in range(20)]
    assert grouping.refined_kind(BURST, frames) == BURST
    steps = [row(i, 100.0 + 0.3 * i, "", exposure_bias=bias) for i, bias in enumerate((-2.0, 0.0, 2.0))]
    assert grouping.refined_kind(BURST, steps) == BRACKET
    capture = [row(1, 100.0, "", path="/shoot/IMG_1.CR3", encoding=RAW), row(2, 100.0, "", path="/shoot/IMG_1.JPG")]
    assert grouping.refined_kind(BURST, capture) == PAIR == grouping.refined_kind(DUPLICATE, capture)


def test_groups_decided_by_an_older_keeper_rule_decide_again_once(tmp_path, capsys, model_args):
    """An upgraded library: its groups did not change, but its keepers were decided by an
    older rule (here: forged, a backup kept). The next cull decides them again, once."""
    from aes_index.features.culling.cull import KEEPER_RULE_KEY
    from aes_index.index.store import Index

    root = tmp_path / "Photos"
    original = save(scene(4, (1200, 800)), root / "DCIM" / "IMG_0042.jpg", exif_bytes("2024:05:01 10:00:07", "25"))
    with Image.open(original) as image:
        backup = save(image, root / "backup" / "IMG_0042.jpg", exif_bytes("2024:05:01 10:00:07", "25"), quality=70)
    rebuild(capsys, root, model_args)
    cull(capsys, root)
    with Index(root / ".aes-index.db") as index:
        (stored,) = index.culling.groups()
        backup_id = next(i for i in stored.members if i != stored.keeper_id)
        with index.transaction():  # as an older rule decided it
            index.culling.set_keeper(stored.id, stored.kind, backup_id, "sharpest of 2, best score", "aes-index", "t")
            index.set_meta(KEEPER_RULE_KEY, 1)
    assert groups(capsys, root)["groups"][0]["keeper"] == str(backup)
    cull(capsys, root)
    (group,) = groups(capsys, root)["groups"]
    assert group["keeper"] == str(original) and group["reason"].startswith("best quality"), group
