"""The Python API the `aes-index` command line is a thin layer over: one function a command.

Each opens the library the one way (index.library.Library.open), calls the feature that
does the work, and returns what happened (a summary, a report, plain data); none prints.
Errors are AesIndexError subclasses, each one line and one exit code (errors.ExitCode).
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from .config import DB_FILENAME, Settings
from .errors import ConfigError, IndexUnavailable, NothingScored
from .features.culling.marks import MarkOptions
from .features.rating import RatingOptions
from .features.stars import RatingPolicy
from .index.library import Library, locate_index
from .index.runner import Progress
from .paths import inside_roots

# --------------------------------------------------------------------------- options


def star_values(text: str) -> tuple[int, ...]:
    """--treat-as-unrated: ratings from -1 (rejected) to 5; anything else is a typo."""
    wrong = ConfigError(f"--treat-as-unrated takes ratings from -1 to 5 like 1 or 0,1, not {text!r}")
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise wrong from None
    if any(not -1 <= value <= 5 for value in values):
        raise wrong
    return values


def rating_options(settings: Settings, tags: bool = True, overwrite_manual: bool = False, dry_run: bool = False) -> RatingOptions:
    policy = RatingPolicy.parse(settings.policy, settings.cuts, settings.reject_below)
    return RatingOptions(
        policy=policy, target=settings.target, tags=tags, overwrite_manual=overwrite_manual,
        treat_as_unrated=star_values(settings.treat_as_unrated), dry_run=dry_run,
    )


def mark_options(settings: Settings, reject: bool = False, dry_run: bool = False) -> MarkOptions:
    return MarkOptions(reject=reject, treat_as_unrated=star_values(settings.treat_as_unrated), dry_run=dry_run)


def listed_head(library: Library) -> str:
    """Whose scores a command lists or rates: the head the settings name, else the active one."""
    from .model.head_choice import scored_head_id

    return scored_head_id(library.index, library.settings.head)


def head_or_none(library: Library) -> str | None:
    """The head whose scores the keeper rule weighs; none yet: sharpness alone decides."""
    try:
        return listed_head(library)
    except NothingScored:
        return None


# --------------------------------------------------------------------------- indexing


def rebuild(settings: Settings, roots: Sequence[str] = (), force: bool = False, exclude: Sequence[str] | None = None,
            progress=Progress()):
    """Scan the roots (else the library's), then decode, embed and score what is new or changed."""
    from .index import runner

    missing = [root for root in roots if not os.path.exists(root)]
    if missing:
        raise ConfigError(f"no such file or folder: {missing[0]}")
    with Library.open(settings, roots, create=True, exclude=exclude) as library:
        if not library.roots:
            raise IndexUnavailable("no library roots known yet: run `aes-index rebuild PATH`")
        # rebuild takes the writer lock: a running watcher finishes its batch, then waits for us
        return runner.rebuild(library.index, library.given_roots, library.settings, force=force, progress=progress)


def score(settings: Settings, files: Sequence[str], attributes: bool = False, progress=Progress()) -> list:
    """Score particular files: through the library's index when they lie in it (cached when
    unchanged), else in a throwaway index (nothing left beside strangers' files)."""
    folders = [path for path in files if os.path.isdir(path)]
    if folders:
        raise ConfigError(f"{folders[0]} is a folder: `aes-index rebuild {folders[0]}` indexes a folder; score takes files")
    db = Path(settings.db) if settings.db else locate_index(settings, must_exist=False)
    scored: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        inside, outside = list(files), []
        if db.is_file():
            with Library.open(settings.replace(db=str(db))) as library:
                inside, outside = _split_by_roots(files, library.index.roots())
                scored |= _excluded_results(inside, library.index.roots(), library.settings.exclude)
                scored |= _score_into(library, [p for p in inside if os.path.abspath(p) not in scored], attributes, progress)
        if outside or not db.is_file():
            with Library.open(settings.replace(db=str(Path(scratch) / DB_FILENAME)), create=True) as library:
                scored |= _score_into(library, outside if db.is_file() else inside, attributes, progress)
    return [scored[os.path.abspath(path)] for path in files]


def _excluded_results(paths: Sequence[str], library_roots: Sequence[str], patterns: Sequence[str]) -> dict:
    """The library skips these names (or the folders they lie in): say so, rather than
    "not a supported photo file"."""
    from .index.discover import skipped_in_library
    from .index.runner import FileScore
    from .index.store import ERROR

    results = {}
    for path in paths:
        name = os.path.basename(path)
        hit = next((p for p in patterns if fnmatch.fnmatch(name, p) or skipped_in_library(path, library_roots, [p])), None)
        if hit is not None:
            error = f"{name}: excluded by the library's --exclude {hit!r}"
        elif skipped_in_library(path, library_roots):
            error = f"{name}: in a folder the library skips (hidden, or a NAS's own)"
        else:
            continue
        results[os.path.abspath(path)] = FileScore(os.path.abspath(path), None, status=ERROR, error=error)
    return results


def _split_by_roots(paths: Sequence[str], roots: Sequence[str]) -> tuple[list[str], list[str]]:
    """(inside, outside) the library's folders; an index without roots takes them all."""
    if not roots:
        return list(paths), []
    inside = [p for p in paths if inside_roots(p, roots)]
    return inside, [p for p in paths if p not in inside]


def _score_into(library: Library, paths: Sequence[str], attributes: bool, progress) -> dict:
    from .features.attributes import ATTRIBUTES, attribute_scores, compute_attributes
    from .index.runner import BackboneSession, score_files

    if not paths:
        return {}
    results = score_files(library.index, paths, library.settings, progress)
    if attributes:
        compute_attributes(library.index, BackboneSession(library.index, library.settings), list(ATTRIBUTES))
        for result in results:
            row = library.index.images.by_path(result.path)
            result.attributes = attribute_scores(library.index, row["id"]) if row else {}
    return {result.path: result for result in results}


def rescore(settings: Settings, progress=Progress()):
    """Score every cached embedding with the configured head: nothing is decoded."""
    from .index.runner import rescore as rescore_index

    with Library.open(settings) as library:
        return rescore_index(library.index, library.settings, progress)


def attributes(settings: Settings, only: str | None = None, attribute_heads: Sequence[str] = (), tags: bool = False,
               dry_run: bool = False) -> dict:
    """Attribute scores (composition, lighting, ...) from the cached embeddings; with `tags`
    our attribute tags on each attribute's top photos, through the sidecar target."""
    from .features.attributes import ATTRIBUTES, attribute_tags, compute_attributes, parse_names
    from .features.rating import apply_attribute_tags
    from .index.runner import BackboneSession

    names = parse_names(only)
    overrides = dict(_name_equals_file(item) for item in attribute_heads)
    with Library.open(settings) as library:
        session = BackboneSession(library.index, library.settings)
        if session.id is None:
            raise IndexUnavailable(f"no embeddings from {session.key} yet: run `aes-index rebuild` first")
        data: dict = {"scored": compute_attributes(library.index, session, names, overrides)}
        if tags:
            wanted = attribute_tags(library.index, names)
            data["tags"] = apply_attribute_tags(library.index, wanted, {ATTRIBUTES[n].tag for n in names}, dry_run=dry_run)
    return data


def _name_equals_file(item: str) -> tuple[str, str]:
    name, sep, path = item.partition("=")
    if not sep or not path:
        raise ConfigError(f"--attribute-head takes NAME=FILE, not {item!r}")
    return name, path


# --------------------------------------------------------------------------- reading the index


def top(settings: Settings, n: int = 20, worst: bool = False, by: str | None = None) -> dict:
    """The best (or worst) photos: {head, scale, photos}."""
    from .features.attributes import head_id_for
    from .model.heads import scale_in_index

    if n < 1:
        raise ConfigError(f"-n takes how many photos to list, 1 or more, not {n}")
    with Library.open(settings, read_only=True) as library:
        head_id = head_id_for(library.index, by) if by else listed_head(library)
        rows = library.index.scores.ranked(head_id, limit=n, worst=worst)
        scale = scale_in_index(library.index, head_id)
    return {"head": head_id, "scale": scale, "photos": rows}


def stats(settings: Settings) -> dict:
    """What the index holds: statuses, errors, backbones (which is active), heads, scores."""
    import numpy as np

    from .index.freshness import Freshness
    from .model.heads import scale_in_index

    with Library.open(settings, read_only=True) as library:
        index = library.index
        head_id = index.runs.active_head_id()
        values = index.scores.values(head_id) if head_id else np.zeros(0)
        return {
            "db": str(index.path),
            "roots": index.roots(),
            "images": index.images.status_counts(),
            "errors": index.images.error_counts(),
            "recent_errors": index.images.errors(limit=10),
            "backbones": [row["key"] for row in index.embeddings.backbones()],
            "active_backbone": index.runs.active_backbone(),
            "heads": index.scores.scored_heads(),
            "active_head": head_id,
            "scale": scale_in_index(index, head_id).as_dict() if head_id else None,
            "scores": _distribution(values),
            "last_run": index.runs.last(),
            "head_choice": _head_choice(index),
            **Freshness(index).stale_indexed().counts(),  # files changed or gone since they were measured
        }


def _head_choice(index) -> dict:
    """What `--head auto` scores this library with, and why: the personal head where
    `aes-index learn` adopted one, else the head shipped for the backbone."""
    from .model.head_choice import adopted_head
    from .model.heads import default_reason

    backbone = index.runs.active_backbone()
    if backbone is None:
        return {"auto": None, "why": "nothing scored yet"}
    personal, why = adopted_head(index, backbone)
    if personal is not None:
        return {"auto": personal.name, "why": why}
    return {"auto": "shipped", "why": f"{why}; {default_reason(backbone)}"}


def _distribution(values) -> dict:
    import numpy as np

    if len(values) == 0:
        return {"count": 0}
    quantiles = np.percentile(values, [0, 10, 50, 90, 100])
    return {"count": int(len(values)), **dict(zip(("min", "p10", "median", "p90", "max"), map(float, quantiles)))}


def report(settings: Settings, out: Path, thumb_size: int, progress=Progress()):
    """The sort-by-aesthetic gallery: one static page and its thumbnails."""
    from .features.report import build_report

    _check_report_out(out)
    policy = RatingPolicy.parse(settings.policy, settings.cuts, settings.reject_below)
    with Library.open(settings, read_only=True) as library:
        return build_report(library.index, out, head_id=listed_head(library), thumb_size=thumb_size, progress=progress, policy=policy)


def _check_report_out(out: Path) -> None:
    """The page is a file whose folder exists or can be made (report makes it): refused
    here in one line rather than failing halfway through the thumbnails."""
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder: name the page to write, e.g. --out {out / 'gallery.html'}")
    folder = out.expanduser().absolute().parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"--out {out}: {existing} is a file, not a folder")


def doctor(settings: Settings, models: bool = False) -> dict:
    from .features.doctor import diagnose

    return diagnose(settings, locate_index(settings, must_exist=False), list_models=models)


# --------------------------------------------------------------------------- search


def search(settings: Settings, text: str, n: int = 20, rank: str = "similarity") -> list:
    """Photos matching words, through the active backbone's text tower: list of search.Hit."""
    from .features.search import search as find

    with Library.open(settings, read_only=True) as library:
        return find(library, text, n, rank)


def similar(settings: Settings, photo: str, n: int = 20) -> list:
    """"More like this": the photos nearest to an indexed one (itself left out), list of search.Hit."""
    from .features.search import similar as nearest

    with Library.open(settings, read_only=True) as library:
        return nearest(library, photo, n)


# --------------------------------------------------------------------------- review


def review(settings: Settings, roots: Sequence[str] = (), port: int | None = None,
           ready: Callable[[str], None] = lambda url: None, idle_minutes: float | None = None) -> int:
    """The review web app over the library (features/review/server.py) until Ctrl-C (or
    `idle_minutes` without a request): calls `ready(url)` once it listens; returns the exit
    code (130 after Ctrl-C)."""
    from .features.review.server import serve

    missing = [root for root in roots if not os.path.exists(root)]
    if missing:
        raise ConfigError(f"no such file or folder: {missing[0]}")
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"--port takes a port from 1 to 65535, not {port}")
    if idle_minutes is not None and not idle_minutes > 0:
        raise ConfigError(f"--stop-when-idle takes minutes above 0, not {idle_minutes}")
    under = tuple(os.path.abspath(root) for root in roots)
    idle_s = None if idle_minutes is None else idle_minutes * 60
    return serve(lambda: Library.open(settings, roots), port, ready, under, idle_s)


# --------------------------------------------------------------------------- your taste


def learn_places(settings: Settings, darktable_library: Path | None = None, digikam_db: Path | None = None):
    """Where `learn` reads decisions: the files always, and the photo managers' databases
    named on the command line or in the settings (darktable_library, digikam_database)."""
    from .features.taste.sources import places_from

    return places_from(settings, star_values(settings.treat_as_unrated), darktable_library, digikam_db)


def learn(settings: Settings, places, adopt: bool = True, progress=Progress()) -> dict:
    """A personal head from the person's decisions; adopted as `--head auto` only when better."""
    from .features.taste.learn import LearnOptions, learn as learn_taste

    with Library.open(settings) as library:
        return learn_taste(library.index, library.settings, LearnOptions(places=places, adopt=adopt), progress)


def learn_undo(settings: Settings) -> dict:
    """Back to the shipped head; the personal head's file and figures stay."""
    from .features.taste.learn import undo

    with Library.open(settings) as library:
        return undo(library.index, library.settings)


# --------------------------------------------------------------------------- culling


def cull(settings: Settings, roots: Sequence[str] = ()):
    """Group what is new, pick every touched group's keeper, store it all."""
    from .features.culling.cull import run_cull

    with Library.open(settings, roots) as library:
        return run_cull(library.index, head_or_none(library))


def groups(settings: Settings, roots: Sequence[str] = (), flagged: bool = False) -> dict:
    """The groups `cull` made, keeper first with the keeper a person's choice makes now."""
    from .features.culling.cull import load_flagged, load_groups

    under = [os.path.abspath(root) for root in roots]
    with Library.open(settings, roots, read_only=True) as library:
        head_id = head_or_none(library)
        found = load_groups(library.index, head_id, under)
        flags = load_flagged(library.index, head_id, under) if flagged else []
    return {"head": head_id, "groups": found, "flagged": flags}


def apply_culling(settings: Settings, roots: Sequence[str], options: MarkOptions):
    """Culling's keepers and flags into the XMP sidecars of ROOT's library (as `cull`)."""
    from .features.culling.marks import write_sidecars

    with Library.open(settings, roots, read_only=options.dry_run) as library:
        return write_sidecars(library.index, options, library.given_roots)


# --------------------------------------------------------------------------- ratings


def apply_ratings(settings: Settings, options: RatingOptions):
    from .features.rating import apply_ratings as apply

    with Library.open(settings, read_only=options.dry_run) as library:
        return apply(library.index, options, head_id=listed_head(library))


def ratings_undo(settings: Settings, run: int | None = None, dry_run: bool = False) -> list:
    from .features.rating import undo

    with Library.open(settings) as library:
        return undo(library.index, run, dry_run=dry_run)


# --------------------------------------------------------------------------- the watcher


def watch(settings: Settings, roots: Sequence[str], rescan: float, poll: bool, rate: RatingOptions | None,
          stop: threading.Event, started: Callable[[list[str], Path], None] = lambda roots, db: None):
    """The background indexer over the library's roots until `stop` is set; its last status.
    `rate`: the rating options new photos are rated with after each batch (None: score only)."""
    from .features.rating import apply_ratings as apply
    from .features.watch import WatchConfig, Watcher, ensure_not_watched

    with Library.open(settings, roots, create=True) as library:
        watched = library.roots
        library.index.add_roots(watched)
        settings, db_path = library.settings, library.index.path  # the watcher skips what rebuild skips
    if not watched:
        raise IndexUnavailable("no library roots known yet: `aes-index watch PATH`")
    missing = [r for r in watched if not os.path.isdir(r)]
    if missing:
        raise ConfigError(f"not a folder: {missing[0]}")
    after_batch = None if rate is None else (lambda index, ids: apply(index, rate, image_ids=ids))
    ensure_not_watched(db_path)
    config = WatchConfig(stable_seconds=settings.stable_seconds, rescan_seconds=rescan, poll=poll)
    started(watched, db_path)
    places = learn_places(settings) if settings.learn_after > 0 else None
    return Watcher(db_path, watched, settings, config, after_batch, places).run(stop)


def watch_status(settings: Settings) -> dict:
    from .features.watch import read_status

    return read_status(locate_index(settings)) or {"running": False}


# --------------------------------------------------------------------------- darktable and digiKam


def darktable_protocol(action: str, request_file: Path, response_file: Path, settings: Settings, options=None,
                       percent: float | None = None) -> None:
    """Answer one request of the darktable plugin (plugin/darktable/aesthetic.lua)."""
    from .features import darktable

    request = darktable.read_request(request_file)
    darktable.write_response(response_file, darktable.handle(action, request, settings, options, percent))


def darktable_cull_options(settings: Settings, reject: bool = False):
    from .features.darktable import CullOptions

    return CullOptions(star_values(settings.treat_as_unrated), reject)


def digikam_sync(settings: Settings, digikam_db: Path, options: RatingOptions):
    from .features.digikam import sync

    with Library.open(settings, read_only=options.dry_run) as library:
        return sync(library.index, digikam_db, options, listed_head(library))


def digikam_cull(settings: Settings, digikam_db: Path, options: MarkOptions):
    from .features.digikam import cull as cull_into

    with Library.open(settings, read_only=options.dry_run) as library:
        return cull_into(library.index, digikam_db, options)


def digikam_undo(settings: Settings, digikam_db: Path, run: int | None = None, dry_run: bool = False):
    from .features.digikam import undo

    with Library.open(settings) as library:
        return undo(library.index, digikam_db, run, dry_run=dry_run)
