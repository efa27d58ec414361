"""Which photos belong together: bursts and near-duplicates, found incrementally.

Two photos are linked when
  * burst: the same camera body (make, model, serial) took them one after the other, at
    most BURST_GAP_SECONDS apart, and they look alike (signatures within BURST_DISTANCE
    bits). Frames are taken in the camera's time order: a burst is a chain of frames.
  * duplicate: they look the same (signatures within DUPLICATE_DISTANCE bits): the
    same picture re-encoded, resized, lightly cropped or edited, copied elsewhere. A copy
    keeps its capture time or loses it, so two photos that both have a time are copies
    only when the times agree: a static scene shot twice an hour apart is two photographs,
    a time-lapse is not one pile of copies, and a crop of the same view shot days later
    by another camera is another photograph. A camera's own frames with known times are
    linked only as bursts; an export that kept its EXIF (same camera, same capture time)
    is a duplicate.
Groups are the linked sets. A group holds at most MAX_GROUP photos: a longer chain (a
time-lapse faster than the gap) becomes consecutive groups of MAX_GROUP frames.

Incremental: only photos no cull has considered yet (`captures.culled` = 0) are compared,
against every photo; existing groups stay as they are and new photos join them, form new
ones, or join two (the older group's id survives). Photos that left the library (missing,
failed, changed) leave their group; a group left with one photo is dissolved. The same
library and the same runs give the same groups: everything is ordered by image id and
capture time.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from ...index.facts import is_camera_file
from ...index.store.culling import FactsTable
from .model import BRACKET, BURST, DUPLICATE, PAIR

BURST_GAP_SECONDS = 2.0  # cameras shoot bursts at 3-30 frames a second; a photographer's next try comes later
BURST_DISTANCE = 20  # of 64 bits: reframing by a few percent, a stop of exposure, a missed focus
DUPLICATE_DISTANCE = 12  # of 64 bits: re-encoded, resized, a light crop or edit (unrelated photos: 20 and more)
CANDIDATE_DISTANCE = 20  # whole-image hashes this close are compared crop-tolerantly (a 5 % crop: up to 16)
MAX_GROUP = 100  # frames in one group at most (a time-lapse is cut into runs)
QUERY_BLOCK = 64  # duplicate search: rows compared at once, against _Scratch.COLUMN_BLOCK columns


def find_links(table: FactsTable) -> list[tuple[int, int, str]]:
    """Links that involve at least one photo not culled yet, in a deterministic order:
    bursts in each camera's time order, then duplicates by position."""
    return _burst_links(table) + _duplicate_links(table)


def _burst_links(table: FactsTable) -> list[tuple[int, int, str]]:
    by_camera: dict[str, list[int]] = defaultdict(list)
    for position, camera in enumerate(table.cameras):
        if camera is not None and not math.isnan(table.taken_at[position]):
            by_camera[camera].append(position)
    links = []
    for camera in sorted(by_camera):
        frames = np.array(sorted(by_camera[camera], key=lambda p: (table.taken_at[p], table.ids[p])), np.int64)
        a, b = frames[:-1], frames[1:]
        fresh = ~(table.culled[a] & table.culled[b])
        a, b = a[fresh], b[fresh]
        gaps = table.taken_at[b] - table.taken_at[a]
        distances = crop_tolerant_distances(table.signatures[a], table.signatures[b])
        for x, y, gap, distance in zip(a.tolist(), b.tolist(), gaps.tolist(), distances.tolist()):
            if gap == 0 and distance <= DUPLICATE_DISTANCE:
                links.append((x, y, DUPLICATE))  # one shot, twice: an export or a copy
            elif gap <= BURST_GAP_SECONDS and distance <= BURST_DISTANCE:
                links.append((x, y, BURST))
    return links


def _duplicate_links(table: FactsTable) -> list[tuple[int, int, str]]:
    """New photos against the photos they may be copies of: whole-image hashes (popcount
    of XORs) pick candidates, the crop-tolerant distance decides. A photo links to at most
    MAX_GROUP others (ten thousand identical copies cost no hundred million links).

    A copy keeps its capture time or loses it: two photos that both have one are copies
    only if the times agree (within SAME_SHOT_SECONDS). So a timed photo is compared with
    the untimed ones and with those taken at its time, and only an untimed one with all:
    in a library of camera files that is a small part of all pairs. The distances of a
    block are the only full-size work (about 3 ns a pair); every other test runs on the
    few candidates. Each pair is compared once."""
    new = np.nonzero(~table.culled)[0]
    timed = ~np.isnan(table.taken_at)
    untimed_positions = np.nonzero(~timed)[0]
    whole = np.ascontiguousarray(table.signatures[:, 0])
    scratch = _Scratch()
    pairs = []
    for rows in _blocks(new[~timed[new]]):  # untimed: against every photo
        pairs.append(scratch.candidates(whole, rows, np.arange(len(whole))))
    for rows in _blocks(new[timed[new]]):  # timed: against the untimed ones already culled...
        a, b = scratch.candidates(whole, rows, untimed_positions)
        pairs.append((a[table.culled[b]], b[table.culled[b]]))  # (new untimed ones found these from their side)
    pairs.append(_same_time_pairs(table, new[timed[new]]))  # ...and those taken at the same time
    a = np.concatenate([p[0] for p in pairs]) if pairs else np.empty(0, np.int64)
    b = np.concatenate([p[1] for p in pairs]) if pairs else np.empty(0, np.int64)
    return _confirmed(table, a, b)


SAME_SHOT_SECONDS = 1.0  # capture times this close are one moment (sub-seconds get lost in exports)


def _blocks(rows: np.ndarray):
    for start in range(0, len(rows), QUERY_BLOCK):
        yield rows[start : start + QUERY_BLOCK]


def _same_time_pairs(table: FactsTable, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, other) for each timed photo taken within SAME_SHOT_SECONDS of a new timed one."""
    timed_positions = np.nonzero(~np.isnan(table.taken_at))[0]
    order = timed_positions[np.argsort(table.taken_at[timed_positions], kind="stable")]
    times = table.taken_at[order]
    found_a, found_b = [], []
    for row in rows:
        low = np.searchsorted(times, table.taken_at[row] - SAME_SHOT_SECONDS, "left")
        high = np.searchsorted(times, table.taken_at[row] + SAME_SHOT_SECONDS, "right")
        others = order[low:high]
        found_a.append(np.full(len(others), row))
        found_b.append(others)
    if not found_a:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(found_a).astype(np.int64), np.concatenate(found_b).astype(np.int64)


def _confirmed(table: FactsTable, a: np.ndarray, b: np.ndarray) -> list[tuple[int, int, str]]:
    """Candidate pairs -> duplicate links: each pair once, not a camera's own timed frames
    (the burst rule's), within DUPLICATE_DISTANCE crop-tolerantly, MAX_GROUP a photo."""
    camera_codes = _codes(table.cameras)
    timed_camera = (camera_codes >= 0) & ~np.isnan(table.taken_at)
    keep = a != b  # a pair found from both sides is made one by np.unique below
    keep &= ~(timed_camera[a] & timed_camera[b] & (camera_codes[a] == camera_codes[b]))
    a, b = a[keep], b[keep]
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0) if len(a) else np.empty((0, 2), np.int64)
    if not len(pairs):
        return []
    close = crop_tolerant_distances(table.signatures[pairs[:, 0]], table.signatures[pairs[:, 1]]) <= DUPLICATE_DISTANCE
    links, per_photo = [], {}
    for x, y in pairs[close].tolist():
        if per_photo.get(x, 0) < MAX_GROUP:
            per_photo[x] = per_photo.get(x, 0) + 1
            links.append((x, y, DUPLICATE))
    return links


class _Scratch:
    """Buffers reused block after block: a fresh 100 MB array per block costs more in page
    faults than the distances themselves. Columns go COLUMN_BLOCK at a time, to stay in cache."""

    COLUMN_BLOCK = 16_384

    def __init__(self):
        shape = (QUERY_BLOCK, self.COLUMN_BLOCK)
        self.xor = np.empty(shape, np.uint64)
        self.count = np.empty(shape, np.uint8)
        self.close = np.empty(shape, bool)

    def candidates(self, whole: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row position, column position) of pairs whose whole-image hashes are within
        CANDIDATE_DISTANCE, `rows` against the positions `columns`."""
        queries = whole[rows][:, None]
        found_a, found_b = [], []
        for start in range(0, len(columns), self.COLUMN_BLOCK):
            positions = columns[start : start + self.COLUMN_BLOCK]
            n, w = len(rows), len(positions)
            xor, count, close = self.xor[:n, :w], self.count[:n, :w], self.close[:n, :w]
            np.bitwise_xor(queries, whole[None, positions], out=xor)
            np.bitwise_count(xor, out=count)
            np.less_equal(count, CANDIDATE_DISTANCE, out=close)
            hits = np.flatnonzero(close)
            found_a.append(rows[hits // w])
            found_b.append(positions[hits % w])
        if not found_a:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(found_a).astype(np.int64), np.concatenate(found_b).astype(np.int64)


def _codes(cameras: list[str | None]) -> np.ndarray:
    """Each camera as a small int (-1: unknown), for vectorised comparisons."""
    known = {name: code for code, name in enumerate(sorted({c for c in cameras if c is not None}))}
    return np.fromiter((known.get(c, -1) if c is not None else -1 for c in cameras), np.int64, len(cameras))


def crop_tolerant_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances of rows of two photos' (whole, inner, core) hashes, pair by pair: the
    whole of one against each part of the other, either way (a crop of one is the other's
    inner part), the least of them."""
    return np.min([np.bitwise_count(a[:, i] ^ b[:, j]) for i, j in _CROP_PAIRS], axis=0)


_CROP_PAIRS = ((0, 0), (0, 1), (1, 0), (0, 2), (2, 0))  # (whole, inner, core) of one vs of the other


BRACKET_SPREAD_EV = 0.5  # a burst whose frames' exposure compensation spans this much is a bracket
# A bracket is a few frames, each exposure once (twice for a RAW+JPEG pair): a burst of 20
# frames with a turn of the dial halfway is a burst, not a bracket.
MAX_BRACKET = 9 * 2
MAX_AT_ONE_LEVEL = 2


def refined_kind(kind: str, rows: list[dict]) -> str:
    """Copies that are only the files of one capture (one_capture) are a PAIR: one photo,
    no group to cull. A burst is a bracket when its frames step their EXIF exposure compensation (by
    BRACKET_SPREAD_EV or more in all) or the camera marked them as shot in an auto
    bracket (ExposureMode 2): frames an HDR merge or a choice of exposure needs whole.
    `rows`: the members' facts."""
    if one_capture(rows):
        return PAIR
    if kind != BURST or len(rows) > MAX_BRACKET:
        return kind
    biases = [row["exposure_bias"] for row in rows if row.get("exposure_bias") is not None]
    levels = Counter(biases)
    stepped = len(levels) >= 2 and max(biases) - min(biases) >= BRACKET_SPREAD_EV and max(levels.values()) <= MAX_AT_ONE_LEVEL
    return BRACKET if stepped or any(row.get("auto_bracket") for row in rows) else kind


def capture_of(path: str) -> str:
    """What the files of one capture share: their folder and name without the suffix
    (IMG_0001.CR3 and IMG_0001.JPG are one photo)."""
    return os.path.splitext(path)[0]


def one_capture(rows: list[dict]) -> bool:
    """The files a camera wrote of one capture, and nothing else: one folder, one name,
    each in another format (IMG_0001.CR3 and IMG_0001.JPG)."""
    suffixes = [os.path.splitext(row["path"])[1].lower() for row in rows]
    return len(rows) >= 2 and len({capture_of(row["path"]) for row in rows}) == 1 and len(set(suffixes)) == len(suffixes)


def frames_of(rows: list[dict]) -> dict[int, int]:
    """The members of one burst that are copies of one frame, as image id -> frame id (the
    smallest image id among the frame's copies). Copies of one frame:
      * a RAW and the JPEG the camera wrote beside it: one folder, one name;
      * the same moment (equal capture times; to the second when one of them lost its
        fraction) and the same look (signatures within DUPLICATE_DISTANCE): an export that
        kept the EXIF, a backup. Two camera files of one kind (encoding, size, quality) whose
        looks differ are two frames a camera took within one second (no sub-seconds);
      * an untimed file (an export without EXIF): a copy of the frame it looks most like,
        within DUPLICATE_DISTANCE.
    `rows`: member facts (store.culling.member_facts)."""
    ids = [row["image_id"] for row in rows]
    parent = {i: i for i in ids}

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    def join(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)

    timed = [row for row in rows if row["taken_at"] is not None]
    for a, b in _pairs(rows):
        if _same_file_name(a, b) or _timed_copies(a, b):
            join(a["image_id"], b["image_id"])
    for row in rows:
        if row["taken_at"] is None:
            nearest = _nearest(row, timed)
            if nearest is not None:
                join(row["image_id"], nearest["image_id"])
    return {i: find(i) for i in ids}


def _pairs(rows: list[dict]):
    for k, a in enumerate(rows):
        for b in rows[k + 1 :]:
            yield a, b


def _same_file_name(a: dict, b: dict) -> bool:
    """A RAW+JPEG pair as the camera writes it: IMG_0001.CR3 beside IMG_0001.JPG."""
    return capture_of(a["path"]) == capture_of(b["path"]) and a["path"].lower() != b["path"].lower()


def _timed_copies(a: dict, b: dict) -> bool:
    """Two timed files of one moment (equal times; to the second where one lacks a
    fraction) that look the same, unless both are camera files of one kind: a camera
    writes one file of each kind per frame, and one without sub-seconds (or with a
    constant fraction) gives its frames in one second the same time."""
    if a["taken_at"] is None or b["taken_at"] is None:
        return False
    if _has_fraction(a) and _has_fraction(b):
        same_moment = a["taken_at"] == b["taken_at"]
    else:
        same_moment = math.floor(a["taken_at"]) == math.floor(b["taken_at"])
    if not same_moment or _one_kind(a, b):  # a camera writes one file of a kind per frame
        return False
    return _distance(a, b) <= DUPLICATE_DISTANCE


def _one_kind(a: dict, b: dict) -> bool:
    """Two camera files of one encoding, size and quality: two frames (a camera that
    writes a constant or no fraction gives frames of one second one time)."""
    return all(is_camera_file(row["camera"], row["taken_at"], row.get("software")) for row in (a, b)) and all(
        a.get(key) == b.get(key) for key in ("encoding", "width", "height", "quality")
    )


def _has_fraction(row: dict) -> bool:
    text = row.get("taken_at_text")
    return "." in text if text else row["taken_at"] % 1 != 0


SAME_FRAME_SHARPNESS = 0.03  # a copy measures within this of its frame (one scale: tests/test_sharpness_scale.py)


def _nearest(row: dict, candidates: list[dict]) -> dict | None:
    """The frame an untimed copy was made from: of the frames that look like it, one as
    sharp as it first (a signature hardly sees focus: a burst's defocused frame looks like
    the sharp one it sits beside, but measures far softer), then the nearest look."""
    scored = [(not _as_sharp(row, other), _distance(row, other), other["image_id"], other) for other in candidates if other is not row]
    scored = [item for item in scored if item[1] <= DUPLICATE_DISTANCE]
    return min(scored, key=lambda item: item[:3])[3] if scored else None


def _as_sharp(a: dict, b: dict) -> bool:
    if a.get("sharpness") is None or b.get("sharpness") is None:
        return True
    return abs(a["sharpness"] - b["sharpness"]) <= SAME_FRAME_SHARPNESS


def _distance(a: dict, b: dict) -> int:
    if a.get("signature") is None or b.get("signature") is None:
        return 64
    hashes = [np.array([[row["signature"], row["signature_inner"], row["signature_core"]]], np.int64).view(np.uint64) for row in (a, b)]
    return int(crop_tolerant_distances(*hashes)[0])


@dataclass
class Regrouping:
    """What update() decided: the groups to write, and those to drop."""

    groups: dict[int | None, set[int]]  # group id (None: a new group, keyed by -k) -> image ids
    kinds: dict  # group key -> BURST or DUPLICATE
    dropped: list[int]  # existing group ids merged into another
    joined: int = 0  # new photos that joined an existing group
    formed: int = 0  # new groups


def regroup(table: FactsTable, memberships: dict[int, int], kinds: dict[int, str]) -> Regrouping:
    """Union the new links into the existing groups (`memberships`: image id -> group id)."""
    ids = [int(i) for i in table.ids]
    parent: dict[int, int] = {}
    size: dict[int, int] = {}
    kind_of: dict[int, str] = {}
    existing_of: dict[int, set[int]] = {}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for image_id in ids:
        parent[image_id], size[image_id] = image_id, 1
    members_by_group: dict[int, list[int]] = defaultdict(list)
    for image_id, group_id in sorted(memberships.items()):
        if image_id in parent:
            members_by_group[group_id].append(image_id)
    for group_id, members in sorted(members_by_group.items()):
        root = members[0]
        for other in members[1:]:
            parent[other] = root
        size[root] = len(members)
        kind_of[root] = kinds.get(group_id, BURST)
        existing_of[root] = {group_id}

    def union(a: int, b: int, kind: str) -> None:
        ra, rb = find(a), find(b)
        if ra == rb:
            if kind == BURST:
                kind_of[ra] = BURST
            return
        if size[ra] + size[rb] > MAX_GROUP:
            return
        if rb < ra:
            ra, rb = rb, ra
        parent[rb] = ra
        size[ra] += size[rb]
        kind_of[ra] = BURST if BURST in (kind, kind_of.get(ra), kind_of.get(rb)) else DUPLICATE
        existing_of[ra] = existing_of.get(ra, set()) | existing_of.pop(rb, set())

    for a, b, kind in find_links(table):
        union(ids[a], ids[b], kind)

    components: dict[int, set[int]] = defaultdict(set)
    for image_id in ids:
        components[find(image_id)].add(image_id)
    result = Regrouping({}, {}, [])
    new_key = 0
    for root in sorted(components, key=lambda r: min(components[r])):
        members = components[root]
        if len(members) < 2:
            continue
        olds = sorted(existing_of.get(root, set()))
        if olds:
            key = olds[0]
            result.dropped += olds[1:]
            result.joined += sum(1 for i in members if memberships.get(i) is None)
        else:
            new_key -= 1
            key = new_key
            result.formed += 1
        result.groups[key] = members
        result.kinds[key] = kind_of.get(root, DUPLICATE)
    return result
