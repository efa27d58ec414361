"""The keeper of each group, the rule in one place, and the flags of technical failures.

The rule, for a burst (frames of one moment):
  1. A person's choice wins: the frame a person rated highest (2 stars or more) or picked
     in the group is the keeper; frames a person rejected never are.
  2. Frames with clipped exposure step aside, unless every frame has it.
  3. Of the rest, the sharp ones: within SHARP_MARGIN of the sharpest. A frame that lost
     its detail to a missed focus or a shake does not keep, however it scores.
  4. Of the sharp ones, the best aesthetic score; then the sharper; then the earlier.
For copies of one picture (a set of near-duplicates, or the copies of one frame of a
burst: grouping.frames_of), the most original file, in the order of _COPY_ORDER: a RAW
over the camera's JPEG; a camera file over an export or a re-encode; more pixels (a resize
or a crop has fewer); a lossless file or a higher JPEG quality; then the sharpest (a
re-encoded copy lost detail the original has), then the best score. A burst's rule runs
over each frame's original: the burst picks the moment, the order of copies the file.

Flags (each photo, grouped or single): "blurry" when, in a burst, its sharpness is more
than BLUR_MARGIN below the sharpest well-exposed frame's, or, for a full-size photo
(short side JUDGED_SIDE or more), when its crispest edges are wider than BLURRY_EDGE; "overexposed" when the picture is
blown, not when a light source in it is: more than BLOWN_ABOVE of the frame lies in large
clipped areas (a sky, a wall, a face: facts.blown), or more than OVEREXPOSED_ABOVE of its
pixels clip wherever they are (a bright frame blown in a thousand fragments); lamps, bokeh,
the sun and glints clip in small blobs and flag nothing. "underexposed" when
UNDEREXPOSED_ABOVE of its pixels are clipped at black, or when nothing in it comes near
white (its brightest 1 % below DARKEST_BRIGHT). Copies are not compared for sharpness: a
re-encoded or resized copy measures unlike its original without being blurred; the copies
of a burst's frame share their frame's blur verdict.

A flag is advice: `--reject` rejects a flagged frame only where its group keeps an
unflagged keeper (marks.plan_marks); a photo alone is flagged, never rejected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

from ...index.facts import JPEG, LOSSLESS, RAW
from .model import BLURRY, BRACKET, BURST, BY_US, BY_YOU, DUPLICATE, OVEREXPOSED, PAIR, UNDEREXPOSED, Group, Member

KEEPER_RULE = 2  # bump when the rule changes: the next cull decides every stored group again (2: the order of copies)

# Chosen on tests/benchmarks/bench_sharpness_resolution.py (24 MP frames of the
# mate-backgrounds photos, measured at the 1/8 draft): every frame defocused by 4 px or
# shaken by 16 px measured at least 0.006-0.018 below its sharp frame, and exposure steps
# of a stop move a sharp frame's measure by up to ~0.05 (quantisation, noise).
SHARP_MARGIN = 0.01  # sharpness within this of the group's sharpest counts as sharp
BLUR_MARGIN = 0.05  # further than this below the group's sharpest: blurred
# On its own a photo has no sharp twin to compare with: it is judged by the width of its
# crispest edges (facts.edge_width, the subject in focus whatever the background). Measured
# on both benchmark libraries' 24 MP frames (bench_culling.py, closing note of issue 24):
# clean frames 0.24-1.75 px (the softest: quadrants of mate-backgrounds' macro photos,
# soft in their sources), defocused by 8 px 0.87-1.45, by 16 px 1.47-2.35. A false alarm
# costs trust: the rule sits above every clean frame, so it catches strong defocus only
# (in a burst, the sharp frame beside it catches far less).
BLURRY_EDGE = 1.8
# Chosen on tests/benchmarks/bench_exposure.py (13 real photographs as 1600 px camera
# frames, measured on the model's image). Lamps, bokeh, a sun or glints painted in put 5-13 %
# of the pixels at white (the old rule, 10 % of the pixels, flagged 18 of 52) but added at
# most 2.3 % of the frame in large areas; the most a correctly exposed photo held there was
# 7.7 % (mate's Aqua, a high-key water drop), 9.3 % with lamps added. A blown sky put
# 20-46 % there, a +2 EV push that blows the photo 16-99 %, a blown wall 5-25 %.
# OVEREXPOSED_ABOVE catches what blows in fragments: a meadow at +2 EV clips 23 % of its
# pixels in blades too small to count as areas; painted light sources reached 19 % at most
# (Aqua with bokeh), 13 % on photos that clip nothing themselves.
BLOWN_ABOVE = 0.10  # share of the frame in large clipped areas (facts.blown)
OVEREXPOSED_ABOVE = 0.20  # share of pixels clipped at white, in areas of any size
# A colour blown out: one channel at white over half the frame. mate-backgrounds' photos at
# 0 EV clip a channel over 27 % of the frame at most (YellowFlower); pushed +2 EV, most
# clip 56-100 % (a red flower at +2.5 EV: 88 % in red, 3.5 % in two channels).
CHANNEL_BLOWN_ABOVE = 0.50
UNDEREXPOSED_ABOVE = 0.30  # share of pixels clipped at black (a night scene has deep shadows)
DARKEST_BRIGHT = 0.25  # brightest 1 % darker than this: two stops or more under, throughout
JUDGED_SIDE = 1000  # smaller files (web copies, thumbnails) are never called blurry on their own
LEAST_PICK = 2  # a person's rating that makes a keeper (see with_person_choice)
BIGGEST_SHARE = 0.98  # duplicates: copies with at least this share of the biggest one's pixels (a crop has less)
QUALITY_STEP = 2  # JPEG qualities this close are alike (the estimate of a camera's own tables is near, not exact)


def flags_of(member: Member, sharpest: float | None = None) -> tuple[str, ...]:
    """The technical failures of one photo; `sharpest`: its burst's sharpest well-exposed
    frame (reference_sharpness), None for a single or a duplicate."""
    over = overexposed(member)
    dark = member.brightest is not None and member.brightest < DARKEST_BRIGHT
    under = (member.clipped_shadows or 0.0) > UNDEREXPOSED_ABOVE or dark
    # Alone, a badly exposed photo's edges are cut by its clipping (they read wide): its
    # exposure flag says what is wrong with it.
    full_size = member.short_side is None or member.short_side >= JUDGED_SIDE
    blurred = full_size and not (over or under) and member.edge_width is not None and member.edge_width > BLURRY_EDGE
    if sharpest is not None and member.sharpness is not None:
        blurred = blurred or member.sharpness < sharpest - BLUR_MARGIN
    return tuple(flag for flag, raised in ((BLURRY, blurred), (OVEREXPOSED, over), (UNDEREXPOSED, under)) if raised)


def overexposed(member: Member) -> bool:
    """Blown in large areas, a colour blown over half the frame, or clipped over much of
    the frame. Facts measured before
    blown_highlights existed (None, until rebuild measures them again) are judged by the
    second alone: their clipping may be lamps."""
    blown = member.blown_highlights is not None and member.blown_highlights > BLOWN_ABOVE
    colour_blown = (member.clipped_channel or 0.0) > CHANNEL_BLOWN_ABOVE
    return blown or colour_blown or (member.clipped_highlights or 0.0) > OVEREXPOSED_ABOVE


def reference_sharpness(kind: str, members: Sequence[Member]) -> float | None:
    """What a burst's frames are judged against: its sharpest frame that is not badly
    exposed (a clipped frame measures sharp: its flat white hides the blur). None for
    duplicates, whose copies differ in size and compression, not in focus."""
    if kind != BURST:
        return None
    exposed = [m for m in members if not (set(flags_of(m)) & {OVEREXPOSED, UNDEREXPOSED})] or list(members)
    return _max(m.sharpness for m in exposed)


def badly_exposed(member: Member) -> bool:
    return OVEREXPOSED in member.flags or UNDEREXPOSED in member.flags


def decide(group_id: int, kind: str, members: Sequence[Member]) -> Group:
    """The group with its flags set and its keeper first, by our rule (steps 2-4)."""
    flagged = flagged_members(kind, members)
    keeper, reason = _our_pick(kind, flagged)
    return _with_keeper(group_id, kind, flagged, keeper, reason, BY_US)


def best_of(kind: str, members: Sequence[Member]) -> Member:
    """Our pick among some of a group's members, their flags as the group's judged them:
    the photo that leads them where the keeper is not (another folder, culling/marks.py)."""
    return _our_pick(kind, list(members))[0]


def flagged_members(kind: str, members: Sequence[Member]) -> list[Member]:
    """Every member with its flags. A burst's frames are judged against its sharpest
    well-exposed frame; the copies of one frame (a RAW's JPEG, an export) share their
    frame's verdict (its original's flags) and are not judged themselves: a re-encoded or
    resized copy measures unlike its original without being another picture."""
    own = [replace(m, flags=flags_of(m)) for m in members]
    frames = _frames(kind, own)
    originals = {key: _best_copy(copies)[0] for key, copies in frames.items()}
    sharpest = reference_sharpness(kind, list(originals.values()))
    judged = {m.image_id: flags_of(m, sharpest) for m in originals.values()}
    flagged = []
    for key, copies in frames.items():
        verdict = judged[originals[key].image_id]
        for m in copies:
            flags = verdict  # one frame, one verdict: a RAW's JPEG is never rejected beside its accepted RAW
            if kind == BRACKET:  # its frames are exposed apart on purpose
                flags = tuple(f for f in flags if f not in (OVEREXPOSED, UNDEREXPOSED))
            flagged.append(replace(m, flags=flags))
    by_id = {m.image_id: m for m in flagged}
    return [by_id[m.image_id] for m in members]


def _frames(kind: str, members: Sequence[Member]) -> dict[int, list[Member]]:
    """Frame -> its copies: a set of duplicates is one picture; a burst's members are
    grouped by the frame each is a copy of (Member.frame, from grouping.frames_of)."""
    frames: dict[int, list[Member]] = {}
    for m in members:
        key = 0 if kind in (DUPLICATE, PAIR) else (m.frame if m.frame is not None else m.image_id)
        frames.setdefault(key, []).append(m)
    return frames


def with_person_choice(group: Group, person: Mapping[int, int | None]) -> Group:
    """The group with a person's choice as keeper, when a person rated any of its photos
    LEAST_PICK stars or more, or picked one (`person`: image id -> the rating or pick a
    person set, not ours; a pick label "accepted" counts as 5, -1 is a reject). Unchanged
    when no person chose. One star is no choice: darktable gives it to every imported
    photo (and writes it into every sidecar), and where a person gives it, it means "weak"."""
    chosen = {i: v for i, v in person.items() if v is not None and v >= LEAST_PICK and any(m.image_id == i for m in group.members)}
    if not chosen:
        return _without_rejected(group, {i for i, v in person.items() if v is not None and v < 0})
    best = max(group.members, key=lambda m: (chosen.get(m.image_id, -math.inf), _finite(m.score), -m.image_id))
    stars = chosen[best.image_id]
    reason = f"your pick ({stars} star{'s' if stars != 1 else ''})"
    return _with_keeper(group.id, group.kind, list(group.members), best, reason, BY_YOU)


def _without_rejected(group: Group, rejected: set[int]) -> Group:
    """Our pick again among the photos a person did not reject, when they rejected ours."""
    if group.keeper_id not in rejected:
        return group
    remaining = [m for m in group.members if m.image_id not in rejected]
    if not remaining:
        return group  # they rejected every frame: our pick stays, it is only advice
    best, reason = _our_pick(group.kind, remaining)
    reason += f", {len(group.members) - len(remaining)} you rejected set aside"
    return _with_keeper(group.id, group.kind, list(group.members), best, reason, BY_US)


def _our_pick(kind: str, members: list[Member]) -> tuple[Member, str]:
    """Duplicates: the original by the order of copies. A burst: the moment by the burst
    rule, over each frame's original; the file of that frame by the order of copies."""
    frames = _frames(kind, members)
    originals = {key: _best_copy(copies) for key, copies in frames.items()}
    if kind in (DUPLICATE, PAIR):
        (keeper, why), = originals.values()
        return keeper, why
    if kind == BRACKET:
        return _bracket_lead([original for original, _ in originals.values()])
    keeper, reason = _burst_pick([original for original, _ in originals.values()])
    why = next(why for original, why in originals.values() if original is keeper)
    return keeper, ", ".join(part for part in (reason, why) if part)


def _bracket_lead(frames: list[Member]) -> tuple[Member, str]:
    """A bracket is kept whole: every frame stays (marks.py picks them all); the frame
    nearest the metered exposure (0 EV) leads it, then the sharper, then the better scored."""
    steps = sorted({m.exposure_bias for m in frames if m.exposure_bias is not None})
    if len(steps) > 1:
        lead = min(frames, key=lambda m: (abs(m.exposure_bias or 0.0), -(m.sharpness or 0.0), -_finite(m.score), m.image_id))
    else:  # an auto bracket that wrote no compensation: the middle exposure by its brightness
        by_light = sorted(frames, key=lambda m: (m.brightest or 0.0, m.clipped_highlights or 0.0, -(m.clipped_shadows or 0.0), m.image_id))
        lead = by_light[(len(by_light) - 1) // 2]
    spread = f" ({', '.join(_ev(step) for step in steps)} EV)" if len(steps) > 1 else ""
    return lead, f"bracket of {len(frames)} frames{spread}, kept whole; the {_ev(lead.exposure_bias or 0.0)} EV frame leads"


def _ev(value: float) -> str:
    return "0" if value == 0 else f"{value:+g}"


def _burst_pick(frames: list[Member]) -> tuple[Member, str]:
    pool = [m for m in frames if not badly_exposed(m)] or frames
    steps = []
    if len(pool) < len(frames):
        steps.append(f"{len(frames) - len(pool)} badly exposed set aside")
    sharpest = _max(m.sharpness for m in pool)
    sharp = [m for m in pool if sharpest is None or (m.sharpness or 0.0) >= sharpest - SHARP_MARGIN]
    keeper = max(sharp, key=lambda m: (_finite(m.score), m.sharpness or 0.0, -_time_order(m), -m.image_id))
    return keeper, _reason(frames, pool, sharp, keeper, steps)


# The order of copies of one picture, most original first: each step keeps the copies
# that pass it (when any does) and says why in words when it decides.
def _best_copy(copies: Sequence[Member]) -> tuple[Member, str]:
    """The original among copies of one picture, and why in words ("" for a lone file):
    a RAW over the camera's JPEG; a camera file over an export or a re-encode; more pixels
    (a crop or a resize has fewer); a lossless file or a higher JPEG quality; then the
    sharpest (within SHARP_MARGIN) and the best score. Badly exposed copies step aside
    first, unless all are."""
    if len(copies) == 1:
        return copies[0], ""
    n = len(copies)
    pool = [m for m in copies if not badly_exposed(m)] or list(copies)
    why = [f"{n - len(pool)} badly exposed set aside"] if len(pool) < n else []
    decided = []  # the steps that set copies aside, in words
    for keep, words in _COPY_ORDER:
        kept = keep(pool)
        if kept and len(kept) < len(pool):
            pool = kept
            decided.append(words(kept[0]))
    sharpest = _max(m.sharpness for m in pool)
    sharp = [m for m in pool if sharpest is None or (m.sharpness or 0.0) >= sharpest - SHARP_MARGIN]
    best = max(sharp, key=lambda m: (m.sharpness or 0.0, _finite(m.score), -m.image_id))
    if len(sharp) < len(pool):
        decided.append("sharpest")
    if not decided:
        return best, ", ".join([f"{n} copies alike", _score_words(copies, sharp, best), *why])
    decided[0] += f" of {n} copies"
    return best, ", ".join([*decided, *why])


def _raw_files(pool):
    return [m for m in pool if m.encoding == RAW]


def _camera_files(pool):
    return [m for m in pool if m.camera_file]


def _largest(pool):
    biggest = max(m.pixels or 0 for m in pool)
    return [m for m in pool if (m.pixels or 0) >= BIGGEST_SHARE * biggest]


def _best_encoded(pool):
    """A quality step only where every copy's quality is known: a HEIC (or WebP, AVIF)
    has none we read, and a phone's HEIC original must not lose to its JPEG conversion."""
    ranks = [_quality_rank(m) for m in pool]
    if None in ranks:
        return pool
    best = max(ranks)
    return [m for m, rank in zip(pool, ranks) if rank >= best - QUALITY_STEP]


def _quality_rank(m: Member) -> int | None:
    """A lossless file (or a RAW) above any JPEG; a JPEG by its quality; None: unknown."""
    if m.encoding in (RAW, LOSSLESS):
        return 101
    return m.quality if m.encoding == JPEG and m.quality is not None else None


def _quality_words(m: Member) -> str:
    return f"best quality (JPEG quality {m.quality})" if m.encoding == JPEG and m.quality is not None else "lossless"


_COPY_ORDER = (
    (_raw_files, lambda m: "the RAW"),
    (_camera_files, lambda m: "the camera original"),
    (_largest, lambda m: "largest"),
    (_best_encoded, _quality_words),
)


def _reason(frames, pool, sharp, keeper, steps) -> str:
    """A burst keeper's reason in words: its sharpness, its score, and the steps that set
    frames aside (`steps`)."""
    parts = [_sharpness_words(frames, pool, sharp, keeper, "frames", first=True), _score_words(frames, sharp, keeper), *steps]
    return ", ".join(part for part in parts if part)


def _sharpness_words(members, pool, sharp, keeper, what: str, first: bool) -> str:
    """How the keeper's sharpness compares: the sharpest of all, of the well-exposed ones,
    one of several sharp ones, or all alike. `first`: the reason starts here (it counts)."""
    n = len(members)
    sharpest = max(members, key=lambda m: m.sharpness or 0.0)
    sharpest_kept = max(pool, key=lambda m: m.sharpness or 0.0)
    if keeper.sharpness is not None and keeper.image_id == sharpest.image_id:
        return f"sharpest of {n}" if first else "sharpest"
    if keeper.sharpness is not None and keeper.image_id == sharpest_kept.image_id:
        return f"sharpest well-exposed of {n}" if first else "sharpest well-exposed"
    if 1 < len(sharp) < len(pool):
        return f"one of {len(sharp)} sharp {what} of {n}"
    return f"{n} {what}, equally sharp" if first else ""


def _score_words(members, sharp, keeper) -> str:
    """How the keeper's score compares, and why the better-scored frames lost."""
    better = [m for m in members if _finite(m.score) > _finite(keeper.score)]
    if keeper.score is None:
        return "no score yet"
    if not better:
        return "best score"
    blurred = sum(1 for m in better if BLURRY in m.flags or m not in sharp)
    verb = "are" if len(better) > 1 else "is"
    return f"{len(better)} scored higher but {verb} " + ("blurred" if blurred == len(better) else "less sharp or badly exposed")


def _with_keeper(group_id, kind, members, keeper, reason, chosen_by) -> Group:
    rest = sorted((m for m in members if m.image_id != keeper.image_id), key=lambda m: (_time_order(m), m.path))
    return Group(group_id, kind, (keeper, *rest), keeper.image_id, reason, chosen_by)


def _time_order(member: Member) -> float:
    return _taken_seconds(member.taken_at)


def _taken_seconds(text: str | None) -> float:
    if not text:
        return math.inf
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return math.inf
    return (moment.replace(tzinfo=None) - datetime(1970, 1, 1)).total_seconds()


def _finite(score: float | None) -> float:
    return score if score is not None and math.isfinite(score) else -math.inf


def _max(values) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


__all__ = ["BURST", "DUPLICATE", "best_of", "decide", "flags_of", "with_person_choice"]
