"""The "sort by aesthetic" gallery: one static HTML page built from the index.

`build_report` writes ``gallery.html`` plus a sibling folder ``gallery_thumbs/`` of cached
JPEG thumbnails. The page opens from disk (file://) with no server and no network: CSS and
JS are inline, the data is embedded as JSON, and thumbnails are referenced by relative URL.

Why thumbnails are files and not data: URIs: a 50k-photo library has 50k thumbnails of
~15 KB; inlined as base64 that is a ~1 GB page the browser must parse before showing
anything. Files load lazily (only the visible grid rows), and the folder doubles as the
thumbnail cache: a thumbnail is named by the image's fingerprint and size, so it is made once
and survives renames, moves and metadata edits of the photo; only missing ones are made.
Identical photos share one. The folder holds a marker file (`library.THUMBS_MARKER`) that
keeps the scanner out when the gallery is written inside the library.

Thumbnails go through `aes_index.index.decode.decode_image`, the indexer's own decode path, so
RAW previews, HEIC and EXIF orientation work as they do for scoring. A photo that cannot be
decoded gets a placeholder in the page with its message; it never stops the build.

The page shows the photos in exactly the order `index.scores.ranked(head)` returns (best first),
then the photos whose decoding failed (no score, shown with their error). Stars and
percentiles come from `ratings` over the library's scores for that head; the stars
aes-index actually wrote come from the journal (`journal.TABLE`).

Culling (`aes-index cull`) adds groups and flags: `culling.cull.load_groups` gives each burst
or set of near-duplicates with its keeper first and the keeper rule's reason, and
`load_flagged` every photo with a technical flag. The page shows a group as one stack at
its keeper's place; an index never culled has no groups and the page says how to get them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .culling.model import Group, Member
from ..index.decode import decode_image
from ..errors import AesIndexError, ConfigError, ExitCode
from ..index.discover import THUMBS_MARKER
from ..model.heads import scale_in_index
from .stars import RatingPolicy, check_scale, cut_points, percentile_ranks, reject_point, stars_for
from ..index.store import ERROR, Index

log = logging.getLogger(__name__)

TEMPLATE = "report_template.html"
DATA_PLACEHOLDER = "__GALLERY_DATA__"
SCRIPT_HASH_PLACEHOLDER = "__SCRIPT_HASH__"
HISTOGRAM_BINS = 40
THUMB_QUALITY = 82
MIN_THUMB_SIZE = 16
# One row per photo in the page's JSON, as arrays (50k objects with repeated keys would
# add megabytes); the page turns them back into objects using these names.
# Columns are only ever added at the end: readers look them up by name through "columns".
COLUMNS = (
    "id", "folder", "name", "score", "std", "percentile", "stars", "written", "thumb", "error", "thumbError",
    "group", "flags", "sharpness", "clipped", "taken",
)  # fmt: skip
FLAGS_COLUMN = COLUMNS.index("flags")


class ReportUnwritable(AesIndexError):
    """The page or its thumbnail folder cannot be written (bad --out, full disk, ...)."""

    exit_code = ExitCode.USAGE


@dataclass
class ReportSummary:
    out_path: str
    thumbs_dir: str
    head_id: str
    photos: int  # in the page: scored + errors
    scored: int
    errors: int  # photos whose decoding failed when indexed
    thumbs_made: int
    thumbs_cached: int
    thumbs_failed: int
    seconds: float
    culled: bool = False  # whether `aes-index cull` ever ran on this index
    groups: int = 0  # bursts and near-duplicate sets shown as stacks
    flagged: int = 0  # photos flagged blurry, overexposed or underexposed

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Culling:
    """What the last `aes-index cull` left in the index, as the page shows it."""

    culled: bool  # False: cull never ran on this index, so there can be no groups yet
    groups: Sequence[Group]  # keeper first
    flagged: Sequence[Member]  # every photo with a flag, grouped or single


NOT_CULLED = Culling(culled=False, groups=(), flagged=())


@dataclass(frozen=True)
class Photo:
    image_id: int
    path: str
    score: float  # NaN: not scored (its decoding failed)
    std: float | None
    thumb_key: str  # names its cached thumbnail
    error: str | None  # the index's decode error


class NoProgress:
    def start(self, stage: str, total: int | None = None) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def finish(self) -> None: ...


# --------------------------------------------------------------------------- entry point


def build_report(
    index: Index,
    out_path: str | os.PathLike,
    head_id: str | None = None,
    thumb_size: int = 256,
    cache_dir: str | os.PathLike | None = None,
    progress=None,
    *,
    policy: RatingPolicy = RatingPolicy(),
    workers: int | None = None,
) -> ReportSummary:
    """Write the gallery page for `head_id` (default: the active head) to `out_path`.

    cache_dir: the thumbnail folder (default: `<out stem>_thumbs` beside the page); the
    page refers to it by a relative URL, so keep the two together when moving them.
    thumb_size: the thumbnails' short side in pixels (the grid crops them to squares).
    workers: threads making thumbnails (decoding releases the GIL); 0 = inline.
    """
    if thumb_size < MIN_THUMB_SIZE:
        raise ConfigError(f"thumbnail size must be at least {MIN_THUMB_SIZE} px, not {thumb_size}")
    started = time.monotonic()
    out_path = Path(os.path.abspath(out_path))  # absolute, and "a/../page.html" said plainly
    thumbs_dir = Path(cache_dir).absolute() if cache_dir else default_thumbs_dir(out_path)
    head_id = head_id or _active_head(index)
    scale = scale_in_index(index, head_id)
    check_scale(policy, head_id, scale.text, scale.low, scale.high)  # before any thumbnail is made
    photos = load_photos(index, head_id)
    culling = load_culling(index, head_id)
    thumbs = make_thumbnails(photos, thumbs_dir, thumb_size, progress or NoProgress(), workers)
    data = page_data(index, head_id, photos, thumbs, policy, _relative_url(thumbs_dir, out_path.parent), culling)
    write_page(out_path, data)
    return ReportSummary(
        out_path=str(out_path),
        thumbs_dir=str(thumbs_dir),
        head_id=head_id,
        photos=len(photos),
        scored=sum(p.error is None for p in photos),
        errors=sum(p.error is not None for p in photos),
        thumbs_made=thumbs.made,
        thumbs_cached=thumbs.cached,
        thumbs_failed=len(thumbs.failures),
        seconds=round(time.monotonic() - started, 3),
        culled=culling.culled,
        groups=len(data["groups"]),
        flagged=sum(row[FLAGS_COLUMN] is not None for row in data["photos"]),
    )


def default_thumbs_dir(out_path: Path) -> Path:
    return out_path.with_name(f"{out_path.stem}_thumbs")


def _active_head(index: Index) -> str:
    from ..model.head_choice import scored_head_id

    return scored_head_id(index)


# --------------------------------------------------------------------------- reading the index


def load_photos(index: Index, head_id: str) -> list[Photo]:
    """Scored photos in the database's order for this head, then the decode failures and
    the files a scan found but could not index (a name that is not UTF-8, ...)."""
    facts = _image_facts(index)
    scored = [_scored_photo(row, facts[row["image_id"]]) for row in index.scores.ranked(head_id)]
    seen = {photo.image_id for photo in scored}
    failed = [_failed_photo(i, fact) for i, fact in facts.items() if fact["status"] == ERROR and i not in seen]
    return scored + sorted(failed + _unindexable_photos(index), key=lambda photo: photo.path)


def _unindexable_photos(index: Index) -> list[Photo]:
    """Files the index holds no row for: they get ids below zero, which no indexed photo has."""
    return [
        Photo(-n, found["path"], math.nan, None, hashlib.blake2b(found["path"].encode(), digest_size=16).hexdigest(), found["error"])
        for n, found in enumerate(index.images.scan_errors(), start=1)
    ]


def _image_facts(index: Index) -> dict[int, dict]:
    return index.images.facts()  # one pass over `images` instead of 50k index.images.get() calls


def _scored_photo(row: dict, fact: dict) -> Photo:
    score = math.nan if row["score"] is None else row["score"]
    error = fact["error"] if fact["status"] == ERROR else None
    return Photo(row["image_id"], row["path"], score, row["std"], _thumb_key(fact), error)


def _failed_photo(image_id: int, fact: dict) -> Photo:
    return Photo(image_id, fact["path"], math.nan, None, _thumb_key(fact), fact["error"] or "could not be decoded")


def _thumb_key(fact: dict) -> str:
    """The fingerprint: a thumbnail then follows the pixels, not the name. Files indexed
    without one fall back to path + size + mtime, which changes whenever the file does."""
    if fact["fingerprint"]:
        return fact["fingerprint"]
    identity = f"{fact['path']}\0{fact['size']}\0{fact['mtime_ns']}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(identity, digest_size=16).hexdigest()


def load_culling(index: Index, head_id: str) -> Culling:
    """The groups and flags of the last cull, with members scored by `head_id`. Flags come
    from the measures `rebuild` stores, so a library never culled may have flags already."""
    from .culling.cull import load_flagged, load_groups

    facts = index.culling.member_facts(None, head_id)
    groups = load_groups(index, head_id, facts=facts)
    flagged = load_flagged(index, head_id, groups=groups, facts=facts)
    return Culling(culled=index.culling.was_culled(), groups=groups, flagged=flagged)


def written_stars(index: Index) -> dict[str, dict[str, int | None]]:
    """image path -> {target: stars} of what aes-index wrote last and has not undone."""
    written: dict[str, dict[str, int | None]] = {}
    for path, target, stars in index.journal.open_places():
        written.setdefault(path, {})[target] = stars
    return written


# --------------------------------------------------------------------------- thumbnails


@dataclass
class Thumbnails:
    folder: Path
    size: int
    made: int = 0
    cached: int = 0
    failures: dict[int, str] = field(default_factory=dict)  # image id -> why there is none

    def relative_name(self, photo: Photo) -> str:
        return f"{photo.thumb_key[:2]}/{photo.thumb_key}-{self.size}.jpg"

    def file_for(self, photo: Photo) -> Path:
        return self.folder / self.relative_name(photo)


def make_thumbnails(
    photos: Sequence[Photo], folder: Path, size: int, progress, workers: int | None = None
) -> Thumbnails:
    """Make the missing thumbnails. Photos whose decoding already failed are skipped:
    the index holds their error, and retrying a broken RAW's every route is slow."""
    thumbs = Thumbnails(folder, size)
    _make_folder(folder)
    mark_as_thumbnails(folder)
    wanted = [p for p in photos if p.error is None]
    jobs = _one_job_per_thumbnail([p for p in wanted if not thumbs.file_for(p).is_file()], thumbs)
    thumbs.cached = len(wanted) - sum(len(copies) for copies in jobs)
    progress.start("thumbnails", len(jobs))
    try:
        for copies, problem in zip(jobs, _map(lambda c: _make_shared_thumbnail(c, thumbs), jobs, workers)):
            if problem is None:
                thumbs.made += len(copies)
            else:
                thumbs.failures.update((photo.image_id, problem) for photo in copies)
            progress.advance()
    finally:
        progress.finish()
    return thumbs


def _one_job_per_thumbnail(photos: Sequence[Photo], thumbs: Thumbnails) -> list[list[Photo]]:
    """Copies of one photo share a fingerprint, so a thumbnail file: one job makes it for
    all of them, where a job per copy would decode it again and race for the same file."""
    jobs: dict[str, list[Photo]] = {}
    for photo in photos:
        jobs.setdefault(thumbs.relative_name(photo), []).append(photo)
    return list(jobs.values())


def mark_as_thumbnails(folder: Path) -> None:
    """Leave the marker that keeps the scanner out (library.THUMBS_MARKER): the default
    gallery_thumbs/ lands inside the library whenever `report` runs from its root."""
    marker = folder / THUMBS_MARKER
    if marker.is_file():
        return
    try:
        marker.write_text(
            "aes-index gallery thumbnails: aes-index never indexes or rates this folder.\n"
            "It is a cache; deleting the folder is safe (the next report remakes it).\n",
            encoding="utf-8",
        )
    except OSError as exc:
        raise ReportUnwritable(f"cannot write {marker}: {exc.strerror or exc}") from exc


def _map(function, items: Sequence, workers: int | None) -> Iterator:
    """map(), on threads unless workers == 0; on any failure the queued work is dropped."""
    if workers == 0 or len(items) < 2:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        try:
            yield from pool.map(function, items)
        except BaseException:  # GeneratorExit included: nobody wants the rest
            pool.shutdown(cancel_futures=True)
            raise


def _make_shared_thumbnail(copies: Sequence[Photo], thumbs: Thumbnails) -> str | None:
    """From the first copy that decodes: one deleted or unreadable copy leaves the others
    their thumbnail. None when it was written, else the last copy's reason."""
    for photo in copies:
        problem = _make_thumbnail(photo, thumbs)
        if problem is None:
            return None
    return problem


def _make_thumbnail(photo: Photo, thumbs: Thumbnails) -> str | None:
    """None when the thumbnail was written, else the one-line reason for the placeholder."""
    try:
        image = decode_image(photo.path, min_side=thumbs.size)
    except Exception as exc:  # decode_image raises DecodeError; anything else is one photo's bug
        log.debug("no thumbnail for %s", photo.path, exc_info=True)
        return str(exc) or type(exc).__name__
    _save_jpeg(_shrink_to_short_side(image, thumbs.size), thumbs.file_for(photo))
    return None


def _shrink_to_short_side(image, size: int):
    """decode_image leaves the short side in [size, 2*size): bring it to `size`."""
    scale = size / min(image.size)
    if scale >= 1:
        return image
    width, height = (max(1, round(side * scale)) for side in image.size)
    return image.resize((width, height), reducing_gap=2.0)


def _save_jpeg(image, target: Path) -> None:
    # Write then rename: an interrupted build must not leave a truncated file that the
    # next build would take as a cached thumbnail. No fsync: it is a cache. The temporary
    # name is the writer's own (process and thread): two writers of one thumbnail, e.g.
    # two reports at once, must not rename each other's file away.
    _make_folder(target.parent)
    partial = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        image.save(partial, "JPEG", quality=THUMB_QUALITY)
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ReportUnwritable(f"cannot write thumbnail {target}: {exc.strerror or exc}") from exc


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportUnwritable(f"cannot create {folder}: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------- the page's data


def page_data(
    index: Index,
    head_id: str,
    photos: Sequence[Photo],
    thumbs: Thumbnails,
    policy: RatingPolicy,
    thumbs_url: str,
    culling: Culling = NOT_CULLED,
) -> dict:
    """Everything the page shows, JSON-ready (no NaN/inf: JSON has neither)."""
    scores = np.array([p.score for p in photos], dtype=np.float64)
    reference = scores[np.isfinite(scores)]  # the library's scores for this head
    stars = stars_for(scores, policy, reference=reference)
    percentiles = percentile_ranks(scores, reference=reference)
    roots = index.roots()
    folders = FolderTable(roots)
    written = written_stars(index)
    on_page = {photo.image_id for photo in photos}
    groups = [group for group in culling.groups if _members_on_page(group, on_page)]
    facts = culling_facts(groups, culling.flagged)
    rows = [
        _photo_row(photo, folders, float(percentiles[i]), int(stars[i]), written.get(photo.path), thumbs, facts)
        for i, photo in enumerate(photos)
    ]
    return {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "library": [_text(readable_path(root)) for root in roots],  # the header names the library by these
        "db": _text(readable_path(str(index.path))),
        "head": head_id,
        "scale": scale_in_index(index, head_id).as_dict(),  # what the scores mean: the page says it beside them
        "separator": os.sep,
        "policy": {"kind": policy.kind, "cuts": list(policy.cuts), "rejectBelow": policy.reject_below},
        "cuts": [_finite_or_none(c) for c in cut_points(reference, policy)],
        "reject": _finite_or_none(reject_point(reference, policy)),
        "histogram": histogram(reference),
        "thumbs": {"base": thumbs_url, "size": thumbs.size},
        "folders": folders.as_json(),
        "columns": COLUMNS,
        "photos": rows,
        "culled": culling.culled,
        "groups": [_group_entry(group, on_page) for group in groups],
    }


def readable_path(path: str) -> str:
    """`path` as a person reads it: "~/Pictures/2024" for a path under the user's home (as
    os.path.expanduser finds it: $HOME, else the password database), else the path itself.
    The page may be shared or shown (the README's screenshot): the home folder says less
    about the machine, and is shorter, than /home/<name>."""
    home = os.path.normpath(os.path.expanduser("~"))
    path = os.path.normpath(path)
    if not os.path.isabs(home) or home == os.path.dirname(home):  # no home, or "/": nothing to shorten
        return path
    if path == home:
        return "~"
    if path.startswith(home + os.sep):  # not a sibling that merely starts alike (/home/al, /home/alice)
        return "~" + path[len(home):]
    return path


def _members_on_page(group: Group, on_page: set[int]) -> list[Member]:
    """A member the page lacks (not scored by this head, say) cannot be shown in its stack."""
    return [member for member in group.members if member.image_id in on_page]


def _group_entry(group: Group, on_page: set[int]) -> dict:
    return {
        "id": group.id,
        "kind": group.kind,
        "size": len(group.members),  # the whole group, as `aes-index groups` counts it
        "keeper": group.keeper_id,
        "reason": _text(group.reason),
        "chosenBy": group.chosen_by,
        "members": [member.image_id for member in _members_on_page(group, on_page)],  # keeper first
    }


def culling_facts(groups: Sequence[Group], flagged: Sequence[Member]) -> dict[int, dict]:
    """image id -> its group, flags and measures, for the photos culling knows about."""
    facts: dict[int, dict] = {}
    for member in flagged:
        facts[member.image_id] = _member_facts(member, group_id=None)
    for group in groups:
        for member in group.members:
            facts[member.image_id] = _member_facts(member, group_id=group.id)
    return facts


def _member_facts(member: Member, group_id: int | None) -> dict:
    clipped = (member.clipped_highlights, member.clipped_shadows)
    return {
        "group": group_id,
        "flags": list(member.flags) or None,
        "sharpness": _finite_or_none(member.sharpness),
        "clipped": None if None in clipped else [_finite_or_none(share) for share in clipped],
        "taken": None if member.taken_at is None else _text(member.taken_at),
    }


NO_CULLING_FACTS = {"group": None, "flags": None, "sharpness": None, "clipped": None, "taken": None}


def _photo_row(
    photo: Photo, folders: "FolderTable", percentile: float, stars: int, written, thumbs: Thumbnails, culled: dict
) -> list:
    folder, name = os.path.split(photo.path)
    thumb_error = thumbs.failures.get(photo.image_id)
    has_thumb = photo.error is None and thumb_error is None
    values = {
        "id": photo.image_id,
        "folder": folders.add(folder),
        "name": _text(name),
        "score": _finite_or_none(photo.score),
        "std": _finite_or_none(photo.std),
        "percentile": None if math.isnan(percentile) else round(percentile, 2),
        "stars": stars,
        "written": written,
        "thumb": thumbs.relative_name(photo) if has_thumb else None,
        "error": photo.error,
        "thumbError": thumb_error,
        **culled.get(photo.image_id, NO_CULLING_FACTS),
    }
    return [values[column] for column in COLUMNS]


class FolderTable:
    """Each photo's folder as an index into one list; the list also holds every ancestor
    up to its library root, so that choosing "Photos/2024" includes "Photos/2024/June"."""

    def __init__(self, roots: Sequence[str]):
        # Longest first, so that a root nested in another labels its own photos.
        self.roots = sorted((os.path.normpath(r) for r in roots), key=len, reverse=True)
        self.index: dict[str, int] = {}

    def add(self, folder: str) -> int:
        if folder not in self.index:
            self.index[folder] = len(self.index)
            parent = os.path.dirname(folder)
            if parent != folder and not self._is_root_or_outside(folder):
                self.add(parent)
        return self.index[folder]

    def _is_root_or_outside(self, folder: str) -> bool:
        return self._root_of(folder) in (None, folder)

    def _root_of(self, folder: str) -> str | None:
        return next((r for r in self.roots if folder == r or folder.startswith(r + os.sep)), None)

    def label(self, folder: str) -> str:
        """Relative to the root's parent ("Photos/2024"): names which root it is in too."""
        root = self._root_of(folder)
        return folder if root is None else os.path.relpath(folder, os.path.dirname(root))

    def as_json(self) -> list[dict]:
        return [{"path": _text(f), "label": _text(self.label(f))} for f in self.index]


def histogram(scores: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict:
    if scores.size == 0:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(scores, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _text(value: str) -> str:
    """A path as showable text: bytes that are not UTF-8 (surrogate escapes) become U+FFFD,
    since they cannot be written into a UTF-8 page."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _relative_url(target: Path, page_folder: Path) -> str:
    """The URL of folder `target` as seen from a page in `page_folder`, ending in '/'."""
    try:
        relative = Path(os.path.relpath(target, page_folder)).as_posix()
    except ValueError:  # another drive on Windows: no relative path exists
        return target.as_uri() + "/"
    return urllib.parse.quote(relative) + "/"


# --------------------------------------------------------------------------- writing the page


def render_page(data: dict) -> str:
    template = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    page = template.replace(SCRIPT_HASH_PLACEHOLDER, _script_hash(template), 1)
    return page.replace(DATA_PLACEHOLDER, embeddable_json(data), 1)


def _script_hash(template: str) -> str:
    """The CSP source that lets the page's one inline script run, and nothing else."""
    script = re.search(r"<script>(.*?)</script>", template, re.DOTALL).group(1)
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


def embeddable_json(data) -> str:
    """JSON that cannot end its <script> element early or open an HTML comment.

    A file may be called `</script><script>alert(1)</script>.jpg` (as folder "<" holding
    "script>..."). Inside JSON, "<" only occurs in strings, where "\\u003c" means the same,
    so escaping every "<" (and ">" and "&", for good measure) leaves the data unchanged.
    U+2028/U+2029 are escaped for older JS parsers that took them as line ends.
    """
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def write_page(out_path: Path, data: dict) -> None:
    html = render_page(data)
    partial = out_path.with_name(f".{out_path.name}.{os.getpid()}.part")
    try:
        partial.write_text(html, encoding="utf-8")
        os.replace(partial, out_path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ReportUnwritable(f"cannot write {out_path}: {exc.strerror or exc}") from exc
