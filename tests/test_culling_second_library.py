"""The second culling library (tests/culling_library.py, LibrarySpec.second(), from Debian's
plasma-workspace-wallpapers) and the per-case scoring (culling_scoring.score_cases) that
tests/benchmarks/bench_culling.py reports on it.

A small version is built (900 px frames) and its files are checked against the truth the plan
recorded: the DNG beside its JPEG decodes through aes-index as a RAW with the JPEG's capture
time, exports are half size with no EXIF, brackets step their EXIF exposure bias 0.3 s apart.
The scoring is checked on answers made from the truth itself: a perfect cull meets every
target, and each kind of mistake shows in its own case.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from culling_library import LibrarySpec, build_library
from culling_scoring import case_of, is_clean, score_cases


@pytest.fixture(scope="module")
def second(plasma_photos, tmp_path_factory):
    photos, smooth = plasma_photos
    return build_library(tmp_path_factory.mktemp("second"), LibrarySpec.second(long_side=900), photos, workers=1, smooth=smooth)


def test_the_first_librarys_key_ignores_the_second_librarys_fields_at_their_defaults():
    first = LibrarySpec(long_side=6000)
    assert first.key() == replace(first, exports=False, brackets=0).key()
    assert first.key() != replace(first, brackets=1).key()
    assert LibrarySpec.second().key() != first.key()


@pytest.mark.slow
def test_every_case_is_built_and_recorded(second):
    cases = {case_of(f) for f in second.photos.values()}
    assert {"burst_shallow", "burst_lamps", "burst_raw", "export", "raw_pair", "bracket", "single_shallow",
            "single_lamps", "single_smooth", "single_defocus", "copy:backup_q70", "copy:png"} <= cases
    kinds = {g["kind"] for g in second.groups}
    assert kinds == {"burst", "duplicate", "raw_pair", "bracket"}
    for rel in second.photos:
        assert (Path(second.root) / rel).is_file(), rel
    lamps = [f["clipped_highlights"] for f in second.photos.values() if case_of(f) == "single_lamps"]
    assert all(0.03 <= share <= 0.2 for share in lamps), lamps


@pytest.mark.slow
def test_a_dng_decodes_as_the_raw_of_its_jpeg(second):
    from aes_index.index.decode import decode_image
    from aes_index.index.facts import RAW, FactsProbe

    pair = next(g for g in second.groups if g["kind"] == "raw_pair")
    raw, jpeg = (Path(second.root) / rel for rel in pair["members"])
    assert raw.suffix == ".DNG" and raw.stem == jpeg.stem
    found = {}
    for path in (raw, jpeg):
        probe = FactsProbe()
        decode_image(path, 224, probe=probe)
        found[path.suffix] = probe.facts()
    assert found[".DNG"].encoding == RAW
    assert found[".DNG"].taken_at_text == found[".JPG"].taken_at_text is not None
    assert found[".DNG"].camera == found[".JPG"].camera and found[".DNG"].serial == found[".JPG"].serial
    assert (found[".DNG"].width, found[".DNG"].height) == (found[".JPG"].width, found[".JPG"].height)


@pytest.mark.slow
def test_exports_are_half_size_without_exif_and_brackets_step_their_bias(second):
    from aes_index.index.facts import FactsProbe
    from aes_index.index.decode import decode_image

    for group in (g for g in second.groups if g["kind"] == "burst"):
        export = next(m for m in group["members"] if second.photos[m].get("variant") == "export")
        original = next(m for m in group["members"] if m != export and Path(m).stem == Path(export).stem and m.endswith(".JPG"))
        with Image.open(Path(second.root) / export) as small, Image.open(Path(second.root) / original) as big:
            assert small.size == (big.width // 2, big.height // 2)
            assert not small.getexif()
    bracket = next(g for g in second.groups if g["kind"] == "bracket")
    facts = []
    for rel in bracket["members"]:
        probe = FactsProbe()
        decode_image(Path(second.root) / rel, 224, probe=probe)
        facts.append(probe.facts())
    assert [f.exposure_bias for f in facts] == [-2.0, 0.0, 2.0]
    assert [round(b.taken_at - a.taken_at, 2) for a, b in zip(facts, facts[1:])] == [0.3, 0.3]


# --- scoring: answers made from the truth ------------------------------------------------------


def _answer(truth, keeper_of=None, flag=None, list_pairs=False) -> tuple[list[dict], list[dict]]:
    """What `groups --json` would print for a perfect cull, changed by keeper_of(group),
    flag(path) -> flags, and `list_pairs` (lone RAW+JPEG pairs listed as groups: a mistake)."""
    root = Path(truth.root)
    kinds = {"burst": "burst", "duplicate": "duplicate", "raw_pair": "duplicate", "bracket": "bracket"}
    groups = []
    for g in truth.groups:
        if g["kind"] == "raw_pair" and not list_pairs:
            continue  # a lone RAW+JPEG pair is one photo: aes-index lists no group for it
        keeper = (keeper_of or (lambda g: g.get("sharp") or g.get("original") or g.get("lead")))(g)
        flags = lambda m: (flag(m) if flag else []) or (["blurry"] if truth.photos[m]["planted_blur"] else [])  # noqa: E731
        groups.append({"kind": kinds[g["kind"]], "keeper": str(root / keeper),
                       "members": [{"path": str(root / m), "flags": flags(m)} for m in g["members"]]})
    singles = {p: (flag(p) if flag else []) + (["blurry"] if f["planted_blur"] else [])
               for p, f in truth.photos.items() if f["group"] is None}
    flagged = [{"path": str(root / p), "flags": flags} for p, flags in singles.items() if flags]
    return groups, flagged


@pytest.mark.slow
def test_a_perfect_cull_meets_every_target(second):
    cases = score_cases(second, *_answer(second))
    assert all(case["met"] for case in cases.values() if "met" in case), cases
    assert cases["keeper_is_original"]["n"] == sum(g["kind"] not in ("bracket", "raw_pair") for g in second.groups)
    assert cases["raw_pairs_one_photo"]["n"] == sum(g["kind"] == "raw_pair" for g in second.groups) > 0


@pytest.mark.slow
def test_each_mistake_shows_in_its_case(second):
    def export_keeps(g):
        exports = [m for m in g["members"] if second.photos[m].get("variant") == "export"]
        return exports[0] if exports else (g.get("sharp") or g.get("original") or g.get("lead"))

    cases = score_cases(second, *_answer(second, keeper_of=export_keeps))
    bursts = {k: v for k, v in cases["keeper_is_original"]["by_case"].items() if k.startswith("burst")}
    assert bursts and all(v["value"] == 0.0 for v in bursts.values())

    assert score_cases(second, *_answer(second, list_pairs=True))["raw_pairs_one_photo"]["value"] == 0.0

    lamps = {p for p, f in second.photos.items() if "lamps" in case_of(f)}
    cases = score_cases(second, *_answer(second, flag=lambda m: ["overexposed"] if m in lamps else []))
    flagged_cases = {k for k, v in cases["false_flags_on_clean"]["by_case"].items() if v["flagged"]}
    assert flagged_cases == {case_of(second.photos[p]) for p in lamps if is_clean(second.photos[p])}
    assert cases["false_flags_on_clean"]["met"] is False

    plus_two = {m for g in second.groups if g["kind"] == "bracket" for m in g["members"] if second.photos[m]["ev"] == 2.0}
    cases = score_cases(second, *_answer(second, flag=lambda m: ["overexposed"] if m in plus_two else []))
    assert cases["brackets_whole"]["value"] == 0.0
