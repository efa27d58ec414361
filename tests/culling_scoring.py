"""How a cull compares with a library's ground truth (culling_library.Truth).

    score_cull(truth, groups, flagged) -> dict

`groups` and `flagged` are what `aes-index groups --json` prints (Group.as_dict() and
Member.as_dict(): absolute paths). Measures:

* pairwise precision and recall of the grouping: every pair of photos put in one group,
  against every pair the truth puts in one group;
* keeper: per true burst, is the keeper of the group holding its sharp frame that frame; per
  duplicate set, is the keeper a full-size copy (not the one resized for the web), and is it
  the camera's original (or its byte-identical copy) rather than an edited or cropped export;
* flags: per planted blur (kind, strength) and clipping, the share flagged; flags on frames
  with nothing planted, beside how clipped those frames really are;
* singles grouped: unrelated photos that ended up in a group (the target is none);
* the wrong and the missed pairs, named, with what tells them apart (same source photo,
  adjacent bursts, ...), so that a threshold can be tuned from concrete cases;
* cases (score_cases): each target of the issue "Keepers a photographer can trust" per case,
  with its value, target and whether it is met: keeper = the sharp camera original in bursts
  (their exports and RAWs beside them), duplicate sets and RAW+JPEG pairs; false flags on
  clean frames, by case; planted defocus of 8 px or more flagged, singles included;
  brackets kept whole; grouping precision and recall.

Every case and its answer come from the truth the library's plan recorded (a photo's
"case", else its role and what was planted), never from what aes-index says.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter, defaultdict

BLURRY, OVEREXPOSED, UNDEREXPOSED = "blurry", "overexposed", "underexposed"  # culling.model.FLAGS
BRACKET = "bracket"  # culling.model.BRACKET
TARGETS = {  # the targets, on every library
    "keeper_is_original": (">=", 0.95), "false_flags_on_clean": ("<=", 0.02), "defocus_8px_flagged": (">=", 0.90),
    "brackets_whole": (">=", 1.0), "precision": (">=", 0.98), "recall": (">=", 0.95), "raw_pairs_one_photo": (">=", 1.0),
}


def score_cull(truth, groups: list[dict], flagged: list[dict], examples: int = 12) -> dict:
    rel = _relative(truth.root)
    predicted = [[rel(m["path"]) for m in g["members"]] for g in groups]
    keepers = [rel(g["keeper"]) for g in groups]
    group_of = {path: i for i, members in enumerate(predicted) for path in members}
    flags = _flags_by_path(groups, flagged, rel)
    true_pairs = _pairs(g["members"] for g in truth.groups)
    found_pairs = _pairs(predicted)
    right = true_pairs & found_pairs
    return {
        "photos": len(truth.photos),
        "true_groups": len(truth.groups),
        "found_groups": len(predicted),
        "pairwise": {
            "true_pairs": len(true_pairs), "found_pairs": len(found_pairs),
            "precision": _share(len(right), len(found_pairs)), "recall": _share(len(right), len(true_pairs)),
        },
        "keeper": _keepers(truth, predicted, keepers, group_of),
        "flags": _flag_rates(truth, flags),
        "singles_grouped": sorted(p for p, f in truth.photos.items() if f["role"] == "single" and p in group_of),
        "wrong_pairs": _describe_pairs(truth, found_pairs - true_pairs, examples),
        "missed_pairs": _describe_pairs(truth, true_pairs - found_pairs, examples),
        "cases": score_cases(truth, groups, flagged),
    }


def case_of(facts: dict) -> str:
    """A photo's case as the plan recorded it; the first library's photos by their role and
    what was planted in them."""
    if facts.get("case"):
        return facts["case"]
    if facts["role"] == "single":
        if facts["planted_clipping"]:
            return "single_clipped"
        return "single_defocus" if facts["planted_blur"] else "single"
    if facts["role"] == "duplicate" and facts.get("variant") not in (None, "original"):
        return f"copy:{facts['variant']}"
    return facts["role"]


CLEAN_EV = 1 / 3 + 0.01  # exposed within a third of a stop of the scene's exposure


def is_clean(facts: dict) -> bool:
    """A clean frame, as the plan made it: no blur and no clipping planted, and exposed within
    a third of a stop of its scene's exposure (the photograph's own in the first library,
    the meter's in the second: culling_camera.meter leaves room for a third of a stop). A
    bracket's -2 and +2 EV frames and a burst's frames a stop off are not clean frames (the
    brackets have their own target)."""
    return not facts["planted_blur"] and not facts["planted_clipping"] and abs(facts["ev"]) <= CLEAN_EV


def score_cases(truth, groups: list[dict], flagged: list[dict]) -> dict:
    """The issue's targets, per case: each {"value", "n", "target", "met"} beside what missed."""
    rel = _relative(truth.root)
    predicted = [[rel(m["path"]) for m in g["members"]] for g in groups]
    keepers = [rel(g["keeper"]) for g in groups]
    kinds = [g["kind"] for g in groups]
    group_of = {path: i for i, members in enumerate(predicted) for path in members}
    flags = _flags_by_path(groups, flagged, rel)
    # A RAW+JPEG pair alone is one photo, no group to find (culling.model.PAIR)
    true_pairs = _pairs(g["members"] for g in truth.groups if g["kind"] != "raw_pair")
    found_pairs = _pairs(predicted)
    right = len(true_pairs & found_pairs)

    def keeper_of(path):
        i = group_of.get(path)
        return keepers[i] if i is not None else None

    keeper: dict[str, list] = defaultdict(list)  # case -> [(hit, miss)]
    raw_pairs: list = []  # per lone RAW+JPEG pair: None when it is one photo (in no group)
    for g in truth.groups:
        if g["kind"] == "burst":
            case = case_of(truth.photos[g["sharp"]])
            if any(truth.photos[m].get("variant") == "export" for m in g["members"]):
                case += "+export"
            wanted, accepted = g["sharp"], {g["sharp"]}
        elif g["kind"] == "duplicate":
            wanted = g["original"]
            accepted = {wanted} | {m for m in g["members"] if truth.photos[m].get("variant") == "copy"}  # byte-identical
            case = "duplicate"
        elif g["kind"] == "raw_pair":  # one photo: neither file in any group
            listed = [m for m in g["members"] if m in group_of]
            raw_pairs.append({"pair": g["id"], "listed_in_groups": listed} if listed else None)
            continue
        else:
            continue
        got = keeper_of(wanted)
        miss = None if got in accepted else {"group": g["id"], "wanted": wanted, "keeper": got,
                                              "keeper_is": None if got is None else (truth.photos[got]["planted_blur"] or
                                                                                     truth.photos[got].get("variant") or "another frame")}
        keeper[case].append(miss)

    clean: dict[str, list] = defaultdict(list)  # case -> [flags or None] over the clean frames
    sharp_blurry: list = []  # every frame without planted blur, whatever its exposure: called blurry?
    defocus: dict[str, list] = defaultdict(list)
    for path, facts in sorted(truth.photos.items()):
        got = sorted(flags.get(path, set()))
        planted = facts["planted_blur"]
        if planted and planted["kind"] == "defocus" and planted["strength"] >= 8:
            defocus[f"{facts['role']}:defocus_{planted['strength']:g}"].append(None if BLURRY in got else path)
        if not planted:
            sharp_blurry.append({"path": path, "case": case_of(facts)} if BLURRY in got else None)
        if is_clean(facts):
            clean[case_of(facts)].append({"path": path, "flags": got, "ev": facts["ev"],
                                          "clipped_highlights": facts.get("clipped_highlights"),
                                          "clipped_shadows": facts.get("clipped_shadows")} if got else None)

    brackets = []
    for g in (g for g in truth.groups if g["kind"] == BRACKET):
        i = group_of.get(g["members"][0])
        found = set(predicted[i]) if i is not None else {g["members"][0]}
        exposure = {m: sorted(flags.get(m, set()) & {OVEREXPOSED, UNDEREXPOSED}) for m in g["members"]}
        whole = i is not None and kinds[i] == BRACKET and found == set(g["members"]) and not any(exposure.values())
        brackets.append(None if whole else {"group": g["id"], "found_kind": kinds[i] if i is not None else None,
                                            "missing": sorted(set(g["members"]) - found), "extra": sorted(found - set(g["members"])),
                                            "exposure_flags": {m: f for m, f in exposure.items() if f}})

    def figure(name, outcomes: list, miss_word="misses") -> dict:
        hits = sum(1 for o in outcomes if o is None)
        value = _share(hits, len(outcomes))
        if name == "false_flags_on_clean":
            value = _share(len(outcomes) - hits, len(outcomes))
        op, target = TARGETS[name]
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        return {"value": value, "n": len(outcomes), "target": f"{op} {target}", "met": met,
                miss_word: [o for o in outcomes if o is not None][:12]}

    every_keeper = [o for outcomes in keeper.values() for o in outcomes]
    every_clean = [o for outcomes in clean.values() for o in outcomes]
    every_defocus = [o for outcomes in defocus.values() for o in outcomes]
    precision, recall = _share(right, len(found_pairs)), _share(right, len(true_pairs))
    return {
        "keeper_is_original": {**figure("keeper_is_original", every_keeper),
                               "by_case": {c: {"value": _share(sum(o is None for o in v), len(v)), "n": len(v)} for c, v in sorted(keeper.items())}},
        "raw_pairs_one_photo": figure("raw_pairs_one_photo", raw_pairs),
        "false_flags_on_clean": {**figure("false_flags_on_clean", every_clean, "flagged"),
                                 "by_case": {c: {"flagged": sum(o is not None for o in v), "n": len(v)} for c, v in sorted(clean.items())}},
        "blurry_without_planted_blur": {"value": _share(sum(o is not None for o in sharp_blurry), len(sharp_blurry)),
                                        "n": len(sharp_blurry), "flagged": [o for o in sharp_blurry if o is not None][:12]},
        "defocus_8px_flagged": {**figure("defocus_8px_flagged", every_defocus, "unflagged"),
                                "by_case": {c: {"value": _share(sum(o is None for o in v), len(v)), "n": len(v)} for c, v in sorted(defocus.items())}},
        "brackets_whole": figure("brackets_whole", brackets),
        "precision": {**figure("precision", []), "value": precision, "n": len(found_pairs),
                      "met": None if precision is None else precision >= TARGETS["precision"][1]},
        "recall": {**figure("recall", []), "value": recall, "n": len(true_pairs),
                   "met": None if recall is None else recall >= TARGETS["recall"][1]},
    }


def _relative(root: str):
    root = os.path.realpath(root)

    def rel(path: str) -> str:
        return os.path.relpath(os.path.realpath(path), root).replace(os.sep, "/")

    return rel


def _pairs(groups) -> set[tuple[str, str]]:
    return {tuple(sorted(pair)) for members in groups for pair in itertools.combinations(members, 2)}


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _flags_by_path(groups: list[dict], flagged: list[dict], rel) -> dict[str, set[str]]:
    flags: dict[str, set[str]] = defaultdict(set)
    for member in [m for g in groups for m in g["members"]] + flagged:
        flags[rel(member["path"])].update(member.get("flags") or ())
    return flags


def _keepers(truth, predicted, keepers, group_of) -> dict:
    """Bursts: the keeper must be the sharp frame. Duplicate sets: it must be a full-size copy
    (every copy but the resized one is as sharp as the original); whether it is the camera's
    original (or its byte copy) rather than an edited or cropped export is reported beside."""
    bursts = [g for g in truth.groups if g["kind"] == "burst"]
    duplicates = [g for g in truth.groups if g["kind"] == "duplicate"]
    burst_misses, small_keepers, not_original = [], [], []
    for g in bursts:
        i = group_of.get(g["sharp"])
        keeper = keepers[i] if i is not None else None
        if keeper != g["sharp"]:
            burst_misses.append(_keeper_miss(truth, g, g["sharp"], keeper))
    for g in duplicates:
        originals = {g["original"]} | {m for m in g["members"] if truth.photos[m].get("variant") == "copy"}
        i = group_of.get(g["original"])
        keeper = keepers[i] if i is not None else None
        if keeper is None or keeper not in g["members"] or truth.photos[keeper].get("variant") == "resized":
            small_keepers.append(_keeper_miss(truth, g, g["original"], keeper))
        if keeper not in originals:
            not_original.append(_keeper_miss(truth, g, g["original"], keeper))
    hits = len(bursts) - len(burst_misses) + len(duplicates) - len(small_keepers)
    return {
        "bursts_keeper_is_sharp": _share(len(bursts) - len(burst_misses), len(bursts)),
        "duplicates_keeper_full_size": _share(len(duplicates) - len(small_keepers), len(duplicates)),
        "duplicates_keeper_is_original": _share(len(duplicates) - len(not_original), len(duplicates)),
        "all_groups": _share(hits, len(bursts) + len(duplicates)),  # brackets and RAW+JPEG pairs: score_cases
        "misses": burst_misses + small_keepers,
        "duplicates_kept_an_export": not_original,
    }


def _keeper_miss(truth, group: dict, wanted: str, keeper: str | None) -> dict:
    facts = truth.photos.get(keeper) if keeper else None
    return {"group": group["id"], "scene": truth.photos[wanted]["scene"], "wanted": wanted,
            "wanted_ev": truth.photos[wanted]["ev"], "keeper": keeper,
            "keeper_planted": None if facts is None else (facts["planted_blur"] or facts.get("variant")),
            "keeper_ev": None if facts is None else facts["ev"]}


def _flag_rates(truth, flags: dict[str, set[str]]) -> dict:
    blur: dict[str, list[bool]] = defaultdict(list)
    clip: dict[str, list[bool]] = defaultdict(list)
    false_blur, false_clip = [], []
    for path, facts in sorted(truth.photos.items()):
        got = flags.get(path, set())
        planted = facts["planted_blur"]
        if planted:
            blur[f"{facts['role']}:{planted['kind']}_{planted['strength']:g}"].append(BLURRY in got)
            blur[f"all:{planted['kind']}_{planted['strength']:g}"].append(BLURRY in got)
        elif BLURRY in got:
            false_blur.append({"path": path, "role": facts["role"], "variant": facts.get("variant"), "scene": facts["scene"]})
        wanted = {"over": OVEREXPOSED, "under": UNDEREXPOSED}.get(facts["planted_clipping"])
        if wanted:
            clip[facts["planted_clipping"]].append(wanted in got)
        for flag in (OVEREXPOSED, UNDEREXPOSED):
            if flag in got and flag != wanted:
                false_clip.append({"path": path, "flag": flag, "ev": facts["ev"],
                                   "clipped_highlights": facts.get("clipped_highlights"),
                                   "clipped_shadows": facts.get("clipped_shadows")})
    unplanted = sum(1 for f in truth.photos.values() if not f["planted_blur"])
    return {
        "blur_detected": {k: {"rate": _share(sum(v), len(v)), "n": len(v)} for k, v in sorted(blur.items())},
        "blur_detected_overall": _share(sum(sum(v) for k, v in blur.items() if k.startswith("all:")),
                                        sum(len(v) for k, v in blur.items() if k.startswith("all:"))),
        "clipping_detected": {k: {"rate": _share(sum(v), len(v)), "n": len(v)} for k, v in sorted(clip.items())},
        "blurry_without_planted_blur": {"n": len(false_blur), "of": unplanted, "by_kind": dict(Counter(
            f["variant"] or f["role"] for f in false_blur)), "examples": false_blur[:12]},
        "clipping_flag_without_planted": {"n": len(false_clip), "examples": false_clip[:12]},
    }


def _describe_pairs(truth, pairs: set[tuple[str, str]], examples: int) -> dict:
    """Count pairs by what relates their two photos; name a few."""
    kinds: Counter = Counter()
    named = []
    for a, b in sorted(pairs):
        fa, fb = truth.photos[a], truth.photos[b]
        kind = _relation(truth, fa, fb)
        kinds[kind] += 1
        if len(named) < examples:
            named.append({"a": a, "b": b, "relation": kind, "a_scene": fa["scene"], "b_scene": fb["scene"],
                          "a_what": fa.get("variant") or fa["planted_blur"], "b_what": fb.get("variant") or fb["planted_blur"]})
    return {"n": len(pairs), "by_relation": dict(kinds), "examples": named}


def _relation(truth, fa: dict, fb: dict) -> str:
    if fa["group"] is not None and fa["group"] == fb["group"]:
        return f"same {fa['role']} (split)"
    if fa["source_photo"] == fb["source_photo"]:
        return "other scene of the same photograph"
    if fa["camera"] == fb["camera"] and fa["role"] == fb["role"] == "burst":
        adjacent = {g["id"] for g in truth.groups if g.get("adjacent_to_previous")}
        if fa["group"] in adjacent or fb["group"] in adjacent:
            return "adjacent bursts of one camera"
    return "unrelated photographs"
