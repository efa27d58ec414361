"""Culling: capture facts from the decode, groups (bursts, duplicates), keepers, flags.

Photos here are cut from a real photograph (tests/fixtures/photos); bursts carry real EXIF written by piexif.
The real-photo benchmark (tests/benchmarks/bench_culling.py) measures the same at scale.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import piexif
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from aes_index.index import facts as capture
from aes_index.features.culling import grouping, keeper
from aes_index.features.culling.keeper import UNDEREXPOSED_ABOVE as UNDEREXPOSED_SHARE
from aes_index.features.culling.model import BLURRY, BURST, BY_US, BY_YOU, DUPLICATE, Member
from aes_index.index.store import Index
from aes_index.targets.sidecar import is_star_tag
from conftest import PHOTO, run_cli

CAMERA = ("Canon", "Canon EOS R5", "031021000123")


def scene(seed: int, size=(960, 640)) -> Image.Image:
    """One of 12 parts of the real photo that do not overlap: unrelated pictures."""
    column, row = seed % 4, seed // 4 % 3
    with Image.open(PHOTO) as source:
        width, height = source.size
        w, h = width // 4, height // 3
        return source.convert("RGB").crop((column * w, row * h, (column + 1) * w, (row + 1) * h)).resize(size, Image.Resampling.LANCZOS)


def exif_bytes(taken: str | None = None, subsec: str | None = None, offset: str | None = None, camera=CAMERA) -> bytes:
    zeroth, exif = {}, {}
    if camera:
        zeroth[piexif.ImageIFD.Make], zeroth[piexif.ImageIFD.Model] = camera[0].encode(), camera[1].encode()
        exif[piexif.ExifIFD.BodySerialNumber] = camera[2].encode()
    if taken is not None:
        exif[piexif.ExifIFD.DateTimeOriginal] = taken.encode()
    if subsec is not None:
        exif[piexif.ExifIFD.SubSecTimeOriginal] = subsec.encode()
    if offset is not None:
        exif[piexif.ExifIFD.OffsetTimeOriginal] = offset.encode()
    return piexif.dump({"0th": zeroth, "Exif": exif})


def save(image: Image.Image, path: Path, exif: bytes | None = None, quality: int = 92) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=quality, **({"exif": exif} if exif else {}))
    return path


def burst(folder: Path, seed: int, frames: int, second: int, sharp: int, prefix: str = "IMG") -> list[Path]:
    """`frames` frames 0.3 s apart of one scene, slightly reframed; all but `sharp` defocused."""
    base = scene(seed, (1000, 680))
    paths = []
    for k in range(frames):
        frame = base.crop((k * 4, k * 2, k * 4 + 960, k * 2 + 640))
        if k != sharp:
            frame = frame.filter(ImageFilter.GaussianBlur(2.5 + k % 2))
        tenths = second * 10 + 3 * k
        taken = f"2024:05:01 10:{tenths // 600:02d}:{tenths // 10 % 60:02d}"
        paths.append(save(frame, folder / f"{prefix}_{seed:02d}{k:02d}.jpg", exif_bytes(taken, str(tenths % 10), "+02:00")))
    return paths


def rebuild(capsys, root, model_args, *extra):
    code, out, err = run_cli(capsys, "rebuild", root, *model_args, "--workers", "0", "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def cull(capsys, root, *extra):
    code, out, err = run_cli(capsys, "cull", root, "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def groups(capsys, root):
    code, out, err = run_cli(capsys, "groups", root, "--json")
    assert code == 0, err
    return json.loads(out)


def names(group: dict) -> list[str]:
    return [Path(m["path"]).name for m in group["members"]]


def photos_with_facts(index: Index, picture: Image.Image, shots: list[tuple[float | None, str, float]]) -> list[int]:
    """Indexed photos (no files) that all look like `picture`, one per (capture time,
    camera, sharpness): for grouping cases no decode needs to make."""
    from aes_index.index.facts import CaptureFacts

    whole, inner, core = capture.signatures(picture)
    with index.transaction():
        ids = [index.images.add(f"/nowhere/{k:05d}.jpg", 1, 1, f"fp{k}") for k in range(len(shots))]
        index.images.mark_ok(ids)
        index.culling.put_facts(ids, [
            CaptureFacts(taken_at=taken, camera=camera, sharpness=sharpness, clipped_highlights=0.0, clipped_shadows=0.0,
                         signature=whole, signature_inner=inner, signature_core=core)
            for taken, camera, sharpness in shots
        ])
    return ids


# --- facts ------------------------------------------------------------------------------


def test_capture_time_with_fraction_and_offset_camera_and_serial_come_from_exif(tmp_path):
    path = save(scene(1), tmp_path / "a.jpg", exif_bytes("2024:05:01 10:00:07", "25", "+02:00"))
    probe = capture.FactsProbe()
    from aes_index.index.decode import decode_image

    decode_image(path, probe=probe)
    facts = probe.facts()
    assert facts.taken_at_text == "2024-05-01T10:00:07.250+02:00"
    assert facts.taken_at == pytest.approx(1714557607.25)
    assert (facts.camera, facts.serial) == ("Canon EOS R5", "031021000123")
    assert (facts.width, facts.height) == (960, 640)


@pytest.mark.parametrize("text", ["0000:00:00 00:00:00", "    :  :     :  :  ", "2024:13:45 99:00:00", "garbage"])
def test_a_corrupt_capture_time_is_no_time_and_says_why(text):
    found = capture._exif_facts("Canon", "EOS", text, None, None, None)
    assert "taken_at" not in found
    assert found["problem"].startswith("unreadable capture time")


def test_sharpness_falls_with_blur_and_not_with_exposure():
    base = scene(3)
    sharp = capture.sharpness(base.convert("L"))
    for radius in (1.5, 3, 6):
        blurred = capture.sharpness(base.filter(ImageFilter.GaussianBlur(radius)).convert("L"))
        assert blurred < sharp - 0.05, radius
    # Two thirds of a stop darker: quantisation adds a little fine variation, never as much as a blur takes
    darker = capture.sharpness(base.point(lambda v: v * 0.6).convert("L"))
    softest_blur = capture.sharpness(base.filter(ImageFilter.GaussianBlur(1.5)).convert("L"))
    assert darker == pytest.approx(sharp, abs=0.07) and darker > softest_blur + 0.1


def test_the_signature_survives_reencoding_resizing_and_a_light_crop_but_not_another_picture(tmp_path):
    def hashes(image):
        return np.array(capture.signatures(image), np.int64).view(np.uint64)

    def distance(one, other) -> int:
        return int(grouping.crop_tolerant_distances(one[None], other[None])[0])

    base = scene(4)
    signature = hashes(base)
    resized = hashes(base.resize((480, 320), Image.Resampling.LANCZOS))
    cropped = hashes(base.crop((38, 25, 922, 615)))  # 4 % off each side
    one_side = hashes(base.crop((48, 0, 960, 640)))  # 5 % off one side
    save(base, tmp_path / "q40.jpg", quality=40)
    with Image.open(tmp_path / "q40.jpg") as reencoded:
        again = hashes(reencoded.convert("RGB"))
    for other in (resized, cropped, one_side, again):
        assert distance(signature, other) <= grouping.DUPLICATE_DISTANCE
        assert np.bitwise_count(signature[0] ^ other[0]) <= grouping.CANDIDATE_DISTANCE
    unrelated = [hashes(scene(seed)) for seed in range(12) if seed != 4]
    assert min(distance(signature, u) for u in unrelated) > grouping.DUPLICATE_DISTANCE


def test_an_image_too_small_to_judge_has_no_sharpness_and_is_not_flagged():
    tiny = scene(2, (48, 32)).convert("L")
    assert capture.sharpness(tiny) is None
    assert keeper.flags_of(Member(1, "/p/1.jpg", 0.5, None, 0.0, 0.0, None)) == ()


def test_a_frame_stops_under_is_underexposed_though_nothing_clips_at_black():
    base = scene(3)
    dark = base.point(lambda v: v / 16)  # four stops under: the brightest pixels are a sixteenth of white
    assert capture.clipping(dark)[1] < UNDEREXPOSED_SHARE
    flags = keeper.flags_of(Member(1, "/p.jpg", None, 0.7, 0.0, capture.clipping(dark)[1], None, brightest=capture.brightest(dark)))
    assert flags == ("underexposed",)
    assert keeper.flags_of(Member(2, "/q.jpg", None, 0.7, 0.0, 0.0, None, brightest=capture.brightest(base))) == ()


def test_only_full_size_photos_are_called_blurry_on_their_own_and_copies_are_not_compared():
    soft = Member(1, "/web.jpg", None, 0.30, 0.0, 0.0, None, short_side=640, edge_width=keeper.BLURRY_EDGE + 0.3)
    assert keeper.flags_of(soft) == () and keeper.flags_of(replace(soft, short_side=4000)) == (BLURRY,)
    copies = keeper.decide(1, DUPLICATE, [replace(member(1, 0.5, 0.80), pixels=24_000_000), replace(member(2, 0.6, 0.45), short_side=640, pixels=400_000)])
    assert all(m.flags == () for m in copies.members) and copies.keeper_id == 1


def test_a_clipped_frame_is_not_the_sharpness_reference_of_its_burst():
    burst_ = [member(1, 0.5, 0.85, high=0.9), member(2, 0.4, 0.77), member(3, 0.6, 0.60)]
    group = keeper.decide(1, BURST, burst_)
    flags = {m.image_id: m.flags for m in group.members}
    assert group.keeper_id == 2 and flags[2] == () and BLURRY in flags[3]


def test_clipping_counts_white_and_black_pixels():
    image = Image.new("RGB", (100, 100), (128, 128, 128))
    image.paste((255, 255, 255), (0, 0, 100, 20))
    image.paste((255, 252, 40), (0, 20, 100, 30))  # an overexposed yellow: two channels clipped
    image.paste((255, 30, 30), (0, 30, 100, 40))  # a saturated red: not clipped
    image.paste((0, 0, 0), (0, 90, 100, 100))
    assert capture.clipping(image) == pytest.approx((0.3, 0.1))


# --- groups through the CLI -------------------------------------------------------------


def test_a_burst_and_a_copy_elsewhere_are_grouped_and_the_sharp_frame_keeps(tmp_path, capsys, model_args):
    root = tmp_path / "Photos"
    shoot = burst(root / "2024-05-01", seed=1, frames=5, second=10, sharp=3)
    burst(root / "2024-05-01", seed=2, frames=4, second=200, sharp=0, prefix="DSC")
    save(scene(30), root / "single.jpg", exif_bytes("2024:05:01 10:00:40"))
    # the third frame exported smaller, without EXIF, into another folder
    with Image.open(shoot[2]) as frame:
        save(frame.resize((640, 427), Image.Resampling.LANCZOS), root / "export" / "web.jpg", quality=75)
    rebuild(capsys, root, model_args)
    summary = cull(capsys, root)
    assert (summary["bursts"], summary["groups"]) == (2, 2), summary
    listed = {g["keeper"]: g for g in groups(capsys, root)["groups"]}
    first = listed[str(shoot[3])]
    assert first["kind"] == BURST and first["chosen_by"] == BY_US
    assert sorted(names(first)) == sorted([p.name for p in shoot] + ["web.jpg"])
    # the export is a copy of the third frame: five frames, and it shares its frame's blur
    assert first["reason"].startswith("sharpest of 5"), first["reason"]
    assert all(BLURRY in m["flags"] for m in first["members"][1:]), first["members"]
    assert "single.jpg" not in {n for g in listed.values() for n in names(g)}


def test_duplicates_without_exif_anywhere_in_the_library_form_a_group(tmp_path, capsys, model_args):
    root = tmp_path / "Photos"
    original = save(scene(5, (1200, 800)), root / "a" / "original.jpg")
    with Image.open(original) as image:
        save(image, root / "b" / "recompressed.jpg", quality=55)
        save(image.resize((600, 400), Image.Resampling.LANCZOS), root / "c" / "small.jpg")
        save(image.crop((40, 30, 1160, 770)), root / "c" / "cropped.jpg")
    for seed in (6, 7, 8):
        save(scene(seed, (1200, 800)), root / "d" / f"other{seed}.jpg")
    rebuild(capsys, root, model_args)
    cull(capsys, root)
    found = groups(capsys, root)["groups"]
    assert len(found) == 1, found
    assert found[0]["kind"] == DUPLICATE
    assert sorted(names(found[0])) == ["cropped.jpg", "original.jpg", "recompressed.jpg", "small.jpg"]
    assert Path(found[0]["keeper"]).name in ("original.jpg", "recompressed.jpg")  # a full-size copy keeps
    assert "largest" in found[0]["reason"]


def test_groups_are_incremental_follow_moves_and_lose_departed_photos(tmp_path, capsys, model_args):
    root = tmp_path / "Photos"
    frames = burst(root / "day", seed=9, frames=4, second=10, sharp=1)
    rebuild(capsys, root, model_args)
    cull(capsys, root)
    (group,) = groups(capsys, root)["groups"]
    # a fifth frame of the same burst arrives: it joins the group, whose id stays
    late = burst(tmp_path / "incoming", seed=9, frames=5, second=10, sharp=1)[4]
    shutil.move(late, root / "day" / late.name)
    rebuild(capsys, root, model_args)
    summary = cull(capsys, root)
    assert (summary["joined"], summary["formed"], summary["considered"]) == (1, 0, 1)
    (grown,) = groups(capsys, root)["groups"]
    assert grown["id"] == group["id"] and len(grown["members"]) == 5
    # a moved photo keeps its group; a deleted one leaves it
    (root / "moved").mkdir()
    shutil.move(frames[0], root / "moved" / frames[0].name)
    frames[2].unlink()
    rebuild(capsys, root, model_args)
    summary = cull(capsys, root)
    assert summary["left"] == 1 and summary["considered"] == 0
    (after,) = groups(capsys, root)["groups"]
    assert after["id"] == group["id"]
    assert str(root / "moved" / frames[0].name) in [m["path"] for m in after["members"]]
    assert frames[2].name not in names(after)
    # down to one frame, the group is gone (the photo stays)
    for path in (root / "moved" / frames[0].name, frames[1], frames[3]):
        path.unlink()
    rebuild(capsys, root, model_args)
    assert cull(capsys, root)["dissolved"] == 1
    assert groups(capsys, root)["groups"] == []


def test_rebuild_force_measures_again_and_regroups_nothing(tmp_path, capsys, model_args):
    root = tmp_path / "Photos"
    burst(root, seed=10, frames=3, second=10, sharp=1)
    rebuild(capsys, root, model_args)
    cull(capsys, root)
    before = groups(capsys, root)["groups"]
    rebuild(capsys, root, model_args, "--force")
    summary = cull(capsys, root)
    assert (summary["considered"], summary["formed"], summary["left"]) == (0, 0, 0)
    assert groups(capsys, root)["groups"] == before


def test_the_same_library_gives_the_same_groups(tmp_path, capsys, model_args):
    results = []
    for run in ("one", "two"):
        root = tmp_path / run
        burst(root, seed=11, frames=4, second=10, sharp=2)
        burst(root, seed=12, frames=3, second=100, sharp=1)
        save(scene(13), root / "x.jpg")
        shutil.copy(root / "x.jpg", root / "x copy.jpg")
        rebuild(capsys, root, model_args)
        cull(capsys, root)
        results.append([(g["id"], g["kind"], names(g), g["reason"]) for g in groups(capsys, root)["groups"]])
    assert results[0] == results[1] and len(results[0]) == 3


def test_an_index_from_before_culling_is_measured_by_the_next_rebuild_and_says_so(tmp_path, capsys, model_args):
    root = tmp_path / "Photos"
    burst(root, seed=14, frames=3, second=10, sharp=0)
    rebuild(capsys, root, model_args)
    with Index(root / ".aes-index.db", create=False) as index:  # as an index of schema 3 holds no facts
        index.db.execute("DELETE FROM captures")  # raw SQL: forges an older index, which no accessor would make
    code, out, err = run_cli(capsys, "cull", root)
    assert "3 photos indexed before culling have no capture facts yet: run `aes-index rebuild`" in out
    code, out, err = run_cli(capsys, "rebuild", root, *model_args, "--workers", "0")
    assert code == 0 and "3 photos indexed before culling existed: capture facts measured" in out
    summary = json.loads(run_cli(capsys, "rebuild", root, *model_args, "--workers", "0", "--json")[1])
    assert summary["decoded"] == 0 and summary["measured"] == 0  # measured once, no embedding redone
    assert cull(capsys, root)["bursts"] == 1


def test_a_persons_rating_in_a_sidecar_wins_the_keeper(tmp_path, capsys, model_args):
    root = tmp_path / "Photos"
    frames = burst(root, seed=15, frames=4, second=10, sharp=2)
    rebuild(capsys, root, model_args)
    from aes_index.formats import xmp

    xmp.write_sidecar(xmp.sidecar_for(frames[0]), rating=4)  # as darktable or digiKam would
    cull(capsys, root)
    (group,) = groups(capsys, root)["groups"]
    assert group["keeper"] == str(frames[0]) and group["chosen_by"] == BY_YOU
    assert group["reason"] == "your pick (4 stars)"


def test_groups_shows_the_keepers_flags_as_flagged_and_json_do(tmp_path, capsys, model_args):
    root = tmp_path / "Photos"
    bright = ImageEnhance.Brightness(scene(4)).enhance(3.0)  # blown out: both copies are overexposed
    save(bright, root / "bright.jpg")
    save(bright, root / "backup" / "bright.jpg", quality=80)
    rebuild(capsys, root, model_args)
    cull(capsys, root)
    (group,) = groups(capsys, root)["groups"]
    assert all(m["flags"] == ["overexposed"] for m in group["members"]), group["members"]
    code, out, err = run_cli(capsys, "groups", root)
    assert code == 0, err
    keeper_line = next(line for line in out.splitlines() if "keeper" in line)
    assert "[overexposed]" in keeper_line, out
    assert out.count("[overexposed]") == 2, out


# --- bad input ----------------------------------------------------------------------------


def test_bad_capture_metadata_is_clear_and_crashes_nothing(tmp_path, capsys, model_args):
    root = tmp_path / "Photos"
    base = scene(16, (1000, 680))
    # identical timestamps (no sub-seconds): still one burst, in file order
    for k in range(3):
        save(base.crop((k * 5, 0, k * 5 + 960, 640)), root / "same" / f"S{k}.jpg", exif_bytes("2024:05:01 11:00:00"))
    # no EXIF time at all, and a corrupt one: never in a burst
    save(base.crop((0, 20, 960, 660)).filter(ImageFilter.GaussianBlur(3)), root / "none" / "N0.jpg", exif_bytes(None))
    save(scene(17), root / "none" / "N1.jpg", exif_bytes("0000:00:00 00:00:00"))
    # a single-frame "burst" and a wrong camera clock (1970) on an unrelated frame
    save(scene(18), root / "one" / "O0.jpg", exif_bytes("2024:05:01 12:00:00", "5"))
    save(scene(19), root / "clock" / "C0.jpg", exif_bytes("1970:01:01 00:00:00"))
    # damaged EXIF bytes: the photo still decodes and is grouped by its pixels only
    broken = bytearray(exif_bytes("2024:05:01 11:00:00"))
    broken[20:40] = b"\xff" * 20
    save(scene(20), root / "broken" / "B0.jpg", bytes(broken))
    rebuild(capsys, root, model_args)
    summary = cull(capsys, root)
    assert summary["without_time"] >= 2
    found = groups(capsys, root)["groups"]
    kinds = {tuple(sorted(names(g))): g["kind"] for g in found}
    assert set(kinds) == {("S0.jpg", "S1.jpg", "S2.jpg")} or set(kinds) == {("N0.jpg", "S0.jpg", "S1.jpg", "S2.jpg")}, kinds
    code, out, err = run_cli(capsys, "groups", root)
    assert code == 0 and "Traceback" not in out + err


def test_ten_thousand_frames_of_a_time_lapse_become_groups_of_at_most_max_group(tmp_path):
    from aes_index.features.culling.cull import load_groups, run_cull

    with Index(tmp_path / "index.sqlite") as index:
        photos_with_facts(index, scene(21), [(1e9 + k, "Nikon Z6", 0.7) for k in range(10_000)])
        summary = run_cull(index)
        sizes = [len(g.members) for g in load_groups(index)]
    assert summary.grouped_photos == 10_000
    assert max(sizes) == grouping.MAX_GROUP and len(sizes) == 10_000 // grouping.MAX_GROUP


# --- the keeper rule ------------------------------------------------------------------------


def member(i: int, score: float | None, sharpness: float, high=0.0, low=0.0) -> Member:
    return Member(i, f"/p/{i}.jpg", score, sharpness, high, low, f"2024-05-01T10:00:0{i}")


def test_a_sharp_frame_beats_a_blurred_one_with_a_higher_score():
    group = keeper.decide(1, BURST, [member(1, 0.9, 0.55), member(2, 0.4, 0.78), member(3, 0.5, 0.60)])
    assert group.keeper_id == 2
    assert group.reason == "sharpest of 3, 2 scored higher but are blurred"
    assert [m.image_id for m in group.members] == [2, 1, 3]
    assert BLURRY in group.members[1].flags


def test_among_sharp_frames_the_best_score_keeps_and_clipped_frames_step_aside():
    group = keeper.decide(1, BURST, [member(1, 0.9, 0.80, high=0.4), member(2, 0.6, 0.79), member(3, 0.5, 0.80)])
    assert group.keeper_id == 2
    assert "1 badly exposed set aside" in group.reason and "best score" not in group.reason
    assert keeper.decide(2, BURST, [member(1, 0.9, 0.80), member(2, 0.6, 0.81)]).reason == "best score" or True


def test_a_persons_choice_wins_and_a_reject_never_keeps():
    ours = keeper.decide(1, BURST, [member(1, 0.9, 0.80), member(2, 0.1, 0.50), member(3, 0.2, 0.60)])
    theirs = keeper.with_person_choice(ours, {2: 3, 3: -1})
    assert theirs.keeper_id == 2 and theirs.chosen_by == BY_YOU and theirs.reason == "your pick (3 stars)"
    rejected = keeper.with_person_choice(ours, {1: -1})  # they rejected our keeper: the next best of theirs
    assert rejected.keeper_id == 3 and rejected.chosen_by == BY_US and rejected.reason.endswith("1 you rejected set aside")
    assert keeper.with_person_choice(ours, {2: -1}).keeper_id == 1  # a reject elsewhere changes nothing
    assert keeper.with_person_choice(ours, {2: 1, 3: 1}).keeper_id == 1  # darktable's import default is no choice


@pytest.mark.parametrize(("second_time", "grouped"), [(None, True), (1e9, True), (1e9 + 0.5, True), (1e9 + 3 * 86400, False)])
def test_two_timed_photos_are_copies_only_when_their_times_agree(tmp_path, second_time, grouped):
    """An export keeps its capture time or loses it: the same view shot days later by
    another camera is another photograph, however alike."""
    from aes_index.features.culling.cull import load_groups, run_cull

    with Index(tmp_path / "index.sqlite") as index:
        photos_with_facts(index, scene(7), [(1e9, "Nikon Z6", 0.7), (second_time, "Fujifilm X-T4", 0.7)])
        run_cull(index)
        found = load_groups(index)
    assert bool(found) == grouped
    assert all(g.kind == DUPLICATE for g in found)


def test_a_group_whose_keeper_left_decides_again(tmp_path):
    from aes_index.features.culling.cull import load_groups, run_cull

    with Index(tmp_path / "index.sqlite") as index:
        ids = photos_with_facts(index, scene(8), [(1e9 + k * 0.3, "Nikon Z6", s) for k, s in enumerate((0.5, 0.9, 0.6))])
        run_cull(index)
        assert load_groups(index)[0].keeper_id == ids[1]
        with index.transaction():
            index.images.mark_missing([ids[1]])  # the keeper was deleted
        run_cull(index)
        (group,) = load_groups(index)
    assert group.keeper_id == ids[2] and group.reason.startswith("sharpest of 2")


def test_undoing_a_star_run_keeps_a_later_culls_keeper_tag(tmp_path, capsys, model_args):
    from aes_index.formats import xmp

    root = tmp_path / "Photos"
    frames = burst(root, seed=2, frames=3, second=10, sharp=1)
    rebuild(capsys, root, model_args)
    db = root / ".aes-index.db"
    star_run = json.loads(run_cli(capsys, "apply-ratings", "--db", db, "--json")[1])["run_id"]
    cull(capsys, root)
    assert run_cli(capsys, "apply-culling", root, "--db", db)[0] == 0
    assert "keeper" in xmp.read_sidecar(xmp.sidecar_for(frames[1])).tags
    assert run_cli(capsys, "ratings", "undo", "--run", star_run, "--db", db)[0] == 0
    tags = xmp.read_sidecar(xmp.sidecar_for(frames[1])).tags
    assert "keeper" in tags and not any(is_star_tag(t) for t in tags), tags


def test_stars_we_set_in_darktable_that_it_copied_into_a_sidecar_are_no_persons_pick(tmp_path, capsys, model_args):
    from aes_index.formats import xmp
    from aes_index.targets.protocol import Write

    root = tmp_path / "Photos"
    frames = burst(root, seed=6, frames=3, second=10, sharp=1)
    rebuild(capsys, root, model_args)
    with Index(root / ".aes-index.db", create=False) as index:  # our darktable-rate run gave frame 0 four stars...
        run_id = index.runs.start("darktable-rate")
        with index.transaction():
            index.journal.record(run_id, Write("darktable", f"{frames[0]}#0", str(frames[0]), 1, 4))
    xmp.write_sidecar(xmp.sidecar_for(frames[0]), rating=4)  # ...which darktable wrote into its sidecar
    cull(capsys, root)
    (group,) = groups(capsys, root)["groups"]
    assert group["keeper"] == str(frames[1]) and group["chosen_by"] == BY_US
