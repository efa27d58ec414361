"""darktable: the protocol behind the Lua plugin, and the plugin's installer.

darktable ignores a sidecar once it has imported the photo, so star ratings for its images
go in through its Lua API. The plugin (plugin/darktable/aesthetic.lua; shipped inside this
package through the link lua/aesthetic.lua) stays thin: for each action it writes a JSON request to a
temporary file, runs ``aes-index darktable ACTION --request FILE --response FILE`` and
applies the JSON answer. Photo paths travel only inside those files, never on a command
line, so no file name can reach a shell.

Every request carries the images an action is about, with their *current* darktable
rating, so "manual ratings win" holds inside darktable exactly as in sidecars: the one
apply loop (targets/apply.py) runs with targets/darktable.py as the target, journal
target "darktable", one place per darktable image: its path + "#" + its duplicate index.
The plugin sets a rating only if the image still holds the rating its request carried::

    {"version": 1, "images": [{"ref": 1, "path": "/p/IMG_1.CR2", "duplicate": 0, "rating": 1}]}

Actions and their answers (``ref`` points back into the request's list):

    rate     score what isn't scored yet, then per image: score, percentile, stars, our tags
             ("aesthetic|stars|4", "aesthetic|score|70-80%") and, only where the plugin may
             set it, "rating"; "run" names the run the plugin reports back under
    top      --percent N: "selected" for the best N% of the request's images by score
    undo     the rating to put back ("rating") for each image that still holds the stars
             we set; images a person re-rated since keep theirs ("kept")
    score    score what isn't scored yet (the plugin's cull does it a chunk at a time, to show
             progress): "score" per image that has one, and "errors"
    cull     score what isn't scored yet, run the cull (culling.cull.run_cull), answer the
             groups among the request's images ("groups": members, leader = the keeper,
             reason, chosen_by), per image the tags to "attach" / "detach" (aesthetic|keeper,
             aesthetic|blurry, ...) and, with --reject only, "rating": -1 for technical
             failures; groups holding a frame a person grouped in darktable are "left_alone".
             A cull request's images also carry "id", "group" (their group leader's id),
             "group_size" and "tags" (which of our cull tags they hold)
    uncull   what undoing the culls means for these images: "ungroup", tags to "attach" /
             "detach", "rating" to put back; what a person changed since stays ("kept")
    applied  the plugin's report: {"run": R, "rated": [{path, duplicate, old, new}],
             "grouped": [{path, duplicate, old, new}], "tagged": [{path, duplicate, tag,
             old, new}], "restored": [{path, duplicate, rating}], "unculled": [{path,
             duplicate, field, tag?}]}; journals the writes / marks them undone

The files are UTF-8 JSON, read and written with surrogateescape: a Linux file name may be
any bytes but NUL and "/", and comes back byte for byte.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..atomic import atomic_write_bytes
from ..config import Settings
from ..errors import ConfigError
from ..index.library import Library, locate_index
from ..index.store import Index
from ..writing import apply as targets
from ..targets.protocol import RATING
from .. import ownership
from ..targets import darktable as dt_target
from . import darktable_plan
from ..targets.darktable import DarktableTarget, DtImage, applied_write, our_tags  # noqa: F401 - our_tags: the plugin's tag names

PROTOCOL_VERSION = 1
TARGET = "darktable"  # the journal target of ratings set through the plugin
RATE_COMMAND, CULL_COMMAND = "darktable-rate", "darktable-cull"  # the runs the plugin's writes are journaled under
ACTIONS = ("rate", "top", "undo", "score", "cull", "uncull", "applied", "review")


class ProtocolError(ConfigError):
    """A request file that isn't what the plugin writes (wrong version, wrong types)."""


# --------------------------------------------------------------------------- protocol files


def read_request(path: Path) -> dict:
    try:
        text = Path(path).read_bytes().decode("utf-8", "surrogateescape")
        request = json.loads(text)
    except OSError as exc:
        raise ProtocolError(f"cannot read the request file {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ProtocolError(f"the request file {path} is not valid JSON: {exc}") from exc
    if not isinstance(request, dict) or request.get("version") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"the request speaks protocol {request.get('version') if isinstance(request, dict) else '?'}, "
            f"this aes-index speaks {PROTOCOL_VERSION}: install the plugin again (`aes-index darktable install`)"
        )
    return request


def write_response(path: Path, response: dict) -> None:
    data = json.dumps({"version": PROTOCOL_VERSION, **response}, ensure_ascii=False, allow_nan=False)
    Path(path).write_bytes(data.encode("utf-8", "surrogateescape"))


def parse_images(request: dict) -> list[DtImage]:
    return [_image(entry) for entry in _list(request, "images")]


def _image(entry) -> DtImage:
    image = _entry_image(entry, "rating")
    tags = entry.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise ProtocolError(f"'tags' must be a list of tag names in {entry!r}")
    culling = {name: _int(entry, name) for name in ("id", "group", "group_size") if name in entry}
    return DtImage(_int(entry, "ref"), image.path, image.duplicate, image.rating, tags=tuple(tags), **culling)


def _entry_image(entry, rating_field: str) -> DtImage:
    if not isinstance(entry, dict):
        raise ProtocolError(f"an image entry must be an object, not {entry!r}")
    return DtImage(ref=0, path=_path(entry), duplicate=_int(entry, "duplicate"), rating=_int(entry, rating_field))


def _list(data: dict, name: str) -> list:
    value = data.get(name, [])
    if not isinstance(value, list):
        raise ProtocolError(f"{name!r} must be a list")
    return value


def _int(entry: dict, name: str) -> int:
    value = entry.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{name!r} must be an integer in {entry!r}")
    return value


def _path(entry: dict) -> str:
    path = entry.get("path")
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ProtocolError(f"'path' must be an absolute path in {entry!r}")
    return os.path.normpath(path)


# --------------------------------------------------------------------------- actions


def handle(action: str, request: dict, settings: Settings, options=None, percent: float | None = None) -> dict:
    """Answer one request; `options`: rate.RatingOptions for rate, CullOptions for cull;
    `percent` for top."""
    if action == "applied":
        return applied(settings, request)
    images = parse_images(request)
    if action == "rate":
        return rate(settings, options, images)
    if action == "top":
        return top(settings, images, percent)
    if action == "undo":
        return undo(settings, images)
    if action == "score":
        return score(settings, images)
    if action == "cull":
        return cull(settings, options or CullOptions(), images)
    if action == "uncull":
        return uncull(settings, images)
    if action == "review":
        return review(settings, images)
    raise ConfigError(f"unknown darktable action {action!r}; use one of {', '.join(ACTIONS)}")


def rate(settings: Settings, options, images: Sequence[DtImage]) -> dict:
    """Score the images, then say which rating each may get: the one apply loop, with the
    plugin's request as the read and our answer as the write."""
    if not images:
        return {"run": None, "images": [], "errors": []}
    with open_library(settings, images) as library:
        index = library.index
        head_id, errors = _score(index, images, library.settings)
        target = DarktableTarget(images=list(images))
        report = targets.apply(index, target, _photos(index, head_id, options.policy, images), options, head_id, RATE_COMMAND)
    return {"run": report.run_id, "head": head_id, "images": target.answer_list(), "errors": errors}


def top(settings: Settings, images: Sequence[DtImage], percent: float | None) -> dict:
    """The best `percent` % of the request's images by score (at least one when any is scored)."""
    if percent is None or not 0 < percent <= 100:
        raise ConfigError(f"--percent must be above 0 and at most 100, not {percent}")
    if not images:
        return {"images": [], "errors": []}
    with open_library(settings, images) as library:
        index = library.index
        head_id, errors = _score(index, images, library.settings)
        photos = _photos(index, head_id, None, images)
        scores = {photo.path: photo.score for photo in photos if math.isfinite(photo.score)}
    scored = sorted((image for image in images if image.path in scores), key=lambda i: (-scores[i.path], i.ref))
    chosen = {image.ref for image in scored[: math.ceil(len(scored) * percent / 100)]}
    answers = [{"ref": i.ref, "score": scores[i.path], "selected": i.ref in chosen} for i in scored]
    return {"head": head_id, "images": answers, "errors": errors}


def undo(settings: Settings, images: Sequence[DtImage]) -> dict:
    """Which of these images get their rating back: those still holding the stars we set.

    All our writes to an image count, newest last: it gets back the rating it had before
    our first one, if it still holds our last one. Otherwise a person rated it since; its
    journal rows are closed as "kept-manual" right away (nothing for the plugin to do).
    """
    if not images or not index_path(settings, images).is_file():
        return {"images": [], "kept": 0}
    target = DarktableTarget(images=list(images))
    with open_library(settings, images, create=False) as library:
        index = library.index
        targets.reconcile(index, target)
        actions = index.journal.plan_undo_places(TARGET, [image.key for image in images])
        results = targets.undo(index, {TARGET: target}, actions)
    return {"images": target.undo_list(), "kept": sum(result.status == "kept-manual" for result in results)}


def score(settings: Settings, images: Sequence[DtImage]) -> dict:
    """Score (and measure the capture facts of) what isn't scored yet; each image's score."""
    if not images:
        return {"images": [], "errors": []}
    with open_library(settings, images) as library:
        index = library.index
        head_id, errors = _score(index, images, library.settings)
        scores = {photo.path: photo.score for photo in _photos(index, head_id, None, images) if math.isfinite(photo.score)}
    return {"head": head_id, "images": [{"ref": i.ref, "score": scores[i.path]} for i in images if i.path in scores], "errors": errors}


@dataclass(frozen=True)
class CullOptions:
    treat_as_unrated: tuple[int, ...] = ()  # ratings that count as none (darktable's import default 1)
    reject: bool = False  # technical failures get darktable's reject (-1), where no person rated them


def cull(settings: Settings, options: CullOptions, images: Sequence[DtImage]) -> dict:
    """Score the images, cull the index (incremental), and say how darktable should show
    the groups and flags among these images: culling's marks through the one apply loop,
    with the darktable target (the request is the read, the answer the write); the groups
    themselves answered whole (darktable_plan.group_answer)."""
    from .culling.cull import load_flagged, load_groups, ours_again, run_cull
    from .culling.marks import MarkOptions, decide_marks, plan_marks, with_choices
    from .culling.model import BY_YOU

    if not images:
        return {"run": None, "groups": [], "images": [], "left_alone": [], "errors": []}
    paths = {image.path for image in images}
    with open_library(settings, images) as library:
        index = library.index
        head_id, errors = _score(index, images, library.settings)
        run_cull(index, head_id)  # under the writer lock, released before the ratings turn
        target = DarktableTarget(images=list(images), attached=_attached(index, images))
        mark_options = MarkOptions(reject=options.reject, treat_as_unrated=options.treat_as_unrated)
        facts = index.culling.member_facts(None, head_id)
        # In darktable a person's choice is its ratings, which the request carries, not its
        # sidecars (darktable writes them from its library, import default of 1 star
        # included): a group stored as chosen by a person gets our own pick back first.
        stored = [g for g in load_groups(index, head_id, facts=facts, choices=False) if any(m.path in paths for m in g.members)]
        stored = [ours_again(g) if g.chosen_by == BY_YOU else g for g in stored]
        flagged = [m for m in load_flagged(index, head_id) if m.path in paths]
        answer: dict = {"groups": [], "left_alone": []}

        def plan(target: DarktableTarget) -> list:
            states = {image.key: ownership.read_state(index.journal, TARGET, target.read(target.place_of(image)), options.treat_as_unrated)
                      for image in images}
            groups = with_choices(index, target, stored, mark_options)
            answer["groups"], answer["left_alone"] = darktable_plan.group_answer(images, groups, states)
            left = {g["group"] for g in answer["left_alone"]}
            stale = [path for path, _ in index.journal.open_fields(TARGET, (dt_target.GROUP, dt_target.TAG)) if path in paths]
            return plan_marks(index, target, groups, flagged, mark_options, stale, lambda group: group.id in left)

        report = targets.apply_marks(index, target, plan, decide_marks, mark_options, CULL_COMMAND,
                                     {"treat_as_unrated": list(options.treat_as_unrated), "reject": options.reject})
    return {"run": report.run_id, "head": head_id, **answer, "images": target.cull_list(), "errors": errors}


def _attached(index: Index, images: Sequence[DtImage]) -> dict[str, frozenset[str]]:
    """The cull tags we attached to these images and haven't removed, by place."""
    tags: dict[str, set[str]] = {}
    for action in index.journal.plan_undo_places(TARGET, [image.key for image in images], dt_target.TAG):
        if action.expected:
            tags.setdefault(action.place, set()).add(action.prior.get("tag"))
    return {key: frozenset(names) for key, names in tags.items()}


def uncull(settings: Settings, images: Sequence[DtImage]) -> dict:
    """Undo what the culls wrote to these images (groups, tags, rejects), where it still
    stands, through the one undo loop; a rating our "rate" set stays for "remove our stars"."""
    if not images or not index_path(settings, images).is_file():
        return {"images": [], "kept": 0}
    keys = [image.key for image in images]
    target = DarktableTarget(images=list(images))
    with open_library(settings, images, create=False) as library:
        index = library.index
        targets.reconcile(index, target)
        actions = [action for field in (dt_target.GROUP, dt_target.TAG, RATING)
                   for action in index.journal.plan_undo_places(TARGET, keys, field, commands=(CULL_COMMAND,))]
        results = targets.undo(index, {TARGET: target}, actions)
    return {"images": target.undo_list(), "kept": sum(result.status == "kept-manual" for result in results)}


def applied(settings: Settings, request: dict) -> dict:
    """Journal what the plugin set ("rated", "grouped", "tagged") and close what it put
    back ("restored": ratings; "unculled": a cull's group, tag or reject)."""
    writes = _reported_writes(request)
    restored = [_entry_image(entry, "rating") for entry in _list(request, "restored")]
    unculled = [_unculled(entry) for entry in _list(request, "unculled")]
    if not writes and not restored and not unculled:
        return {"recorded": 0, "restored": 0}
    run_id = request.get("run")
    if writes and (not isinstance(run_id, int) or isinstance(run_id, bool)):
        raise ProtocolError("'run' must be the run id the rate or cull answer gave")
    paths = [write.image_path for write in writes] + [i.path for i in restored] + [i.path for i, _, _ in unculled]
    with open_library(settings, paths) as library, library.index.transaction():
        index = library.index
        if writes:
            _check_run(index, run_id, writes)
        _journal_applied(index, run_id, writes)
        actions = _undone_by_plugin(index, restored, unculled)
        for action in actions:
            index.journal.mark_undone(action.row_ids, "restored")
    return {"recorded": len(writes), "restored": len(actions)}


def _journal_applied(index: Index, run_id, writes: list) -> None:
    """What the plugin set: the rows its answer was journaled ahead with are done now; a
    write no row foretold (an older plugin's report) is recorded as it is."""
    foretold = _pending_by_write(index, run_id, writes)
    index.journal.mark_done([foretold[_write_key(w)] for w in writes if _write_key(w) in foretold])
    for write in writes:
        if _write_key(write) not in foretold:
            index.journal.record(run_id, write)


def _undone_by_plugin(index: Index, restored: list, unculled: list) -> list:
    """The journal's open writes the plugin reports it put back: ratings ("restored") and a
    cull's group, tag or reject ("unculled")."""
    actions = index.journal.plan_undo_places(TARGET, [image.key for image in restored])
    for image, field, tag in unculled:
        actions += [a for a in index.journal.plan_undo_places(TARGET, [image.key], field, commands=(CULL_COMMAND,))
                    if field != dt_target.TAG or a.prior.get("tag") == tag]
    return actions


def _write_key(write) -> tuple:
    return (write.place, write.field, write.new, (write.prior or {}).get("tag"))


def _pending_by_write(index: Index, run_id, writes: list) -> dict[tuple, int]:
    """The run's pending rows (its answer, journaled ahead) that reported writes match."""
    if not writes:
        return {}
    rows = {}
    for action in index.journal.pending(TARGET, places=[w.place for w in writes]):
        if action.run_id == run_id:
            rows[(action.place, action.field, action.new, action.prior.get("tag"))] = action.row_ids[0]
    return rows


def _reported_writes(request: dict) -> list:
    """The journal's Writes for what the plugin reports it set."""
    writes = [applied_write(image, old) for image, old in map(_rated, _list(request, "rated"))]
    for entry in _list(request, "grouped"):
        image = _entry_image(entry, "new")
        writes.append(applied_write(image, _int(entry, "old"), dt_target.GROUP, new=image.rating))
    for entry in _list(request, "tagged"):
        image, tag = _entry_image(entry, "new"), _tag(entry)
        writes.append(applied_write(image, _int(entry, "old"), dt_target.TAG, new=image.rating, prior={"tag": tag}))
    return writes


def _check_run(index: Index, run_id: int, writes: list) -> None:
    """Undo plans by run: writes journaled under another command's run would be undone
    (or kept) with that run's files. A rate run holds ratings; a cull run all its fields."""
    command = index.runs.command(run_id)
    allowed = {RATE_COMMAND: {RATING}, CULL_COMMAND: {RATING, dt_target.GROUP, dt_target.TAG}}.get(command, set())
    if any(write.field not in allowed for write in writes):
        raise ProtocolError(f"'run' {run_id} is not a darktable rate run (nor, for groups and tags, a cull run) of this index: run the action again")


def _unculled(entry: dict) -> tuple[DtImage, str, str | None]:
    image = _entry_image(entry, "duplicate")
    field = entry.get("field")
    if field not in (RATING, dt_target.GROUP, dt_target.TAG):
        raise ProtocolError(f"'field' must be rating, group or tag in {entry!r}")
    return image, field, _tag(entry) if field == dt_target.TAG else None


def _tag(entry: dict) -> str:
    tag = entry.get("tag")
    if tag not in dt_target.CULL_TAGS:
        raise ProtocolError(f"'tag' must be one of {', '.join(dt_target.CULL_TAGS)} in {entry!r}")
    return tag


def _rated(entry: dict) -> tuple[DtImage, int]:
    """One "rated" report: the image with the rating the plugin set, and the one it replaced."""
    return _entry_image(entry, "new"), _int(entry, "old")


def review(settings: Settings, images: Sequence[DtImage], open_browser=None) -> dict:
    """"review in browser": `aes-index review` over the film rolls (folders) of the plugin's
    images, in the background (features/review/launch.py says why darktable cannot start
    it), opened in the browser; the answer is its address without the token, and whether
    a review of this library was already running (then that one is opened: it may show
    other folders)."""
    from ..features.review.launch import address, start_detached

    if not images:
        raise ConfigError("no images to review: select some, or act on the current collection")
    folders = sorted({os.path.dirname(image.path) for image in images})
    db = index_path(settings, images)
    if not db.exists():
        raise ConfigError(f"these images have no index yet ({db}): score or cull them first")
    url, already = start_detached(db, folders)
    if open_browser is None:
        import webbrowser

        open_browser = webbrowser.open
    open_browser(url)
    return {"address": address(url), "already_running": already, "folders": len(folders)}


# --------------------------------------------------------------------------- helpers


def open_library(settings: Settings, images: Sequence[DtImage | str], create: bool = True) -> Library:
    """The library of the plugin's images (Library.open: the configured index, else one
    found upwards from the images' common folder, else a new one there; darktable starts
    the plugin from anywhere, so the current folder means nothing), with the settings that
    hold for it: its kept --exclude patterns included."""
    return Library.open(settings, start=_common_folder(images), create=create)


def index_path(settings: Settings, images: Sequence[DtImage | str]) -> Path:
    """Where the images' library keeps its index (it may not exist yet)."""
    return locate_index(settings, must_exist=False, start=_common_folder(images))


def _common_folder(images: Sequence[DtImage | str]) -> Path:
    paths = [image if isinstance(image, str) else image.path for image in images]
    return Path(os.path.commonpath([os.path.dirname(path) for path in paths]))


def _score(index: Index, images: Sequence[DtImage], settings: Settings) -> tuple[str, list[dict]]:
    """Score the images not scored yet (cached otherwise); -> (head id, per-image errors)."""
    from ..index.runner import BackboneSession, score_files

    paths = sorted({image.path for image in images if _storable(image.path)})
    # score_files takes the writer lock: a running watcher finishes its batch first
    results = {result.path: result for result in score_files(index, paths, settings)}
    head_id = BackboneSession(index, settings).head().name  # cached now: no model load
    failed = {path: result.error for path, result in results.items() if result.score is None}
    failed |= {i.path: "the file name is not valid UTF-8: the index cannot hold it" for i in images if not _storable(i.path)}
    return head_id, [{"ref": image.ref, "error": failed[image.path]} for image in images if image.path in failed]


def _storable(path: str) -> bool:
    """SQLite keeps text as UTF-8; a name of other bytes (surrogate escapes here) can't go in."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _photos(index: Index, head_id: str, policy, images: Iterable[DtImage]) -> list:
    """PhotoRating of each requested path; stars and percentiles come from the whole index,
    so a photo rated in darktable gets what `apply-ratings` would give it."""
    from .rating import plan
    from .stars import RatingPolicy

    wanted = {image.path for image in images}
    return [p for p in plan(index, head_id, policy or RatingPolicy()) if p.path in wanted]


# --------------------------------------------------------------------------- install


SCRIPT_NAME = "aesthetic"
LUARC_LINE = f'require "{SCRIPT_NAME}"  -- aesthetic ratings from aes-index (`aes-index darktable uninstall` removes this line)'
_ANY_REQUIRE = re.compile(rf"""^\s*require\s*\(?\s*["']{SCRIPT_NAME}["']""")
# lua-scripts' script manager (tools/script_manager.lua, scan_scripts / process_script_data)
# lists the scripts in the folders below <config>/lua/ (a script straight in lua/ is not
# one of its scripts) and starts the ones a person turned on: ours goes into a folder of
# its own, not into lua-scripts' git checkout (contrib/), which its updates must find clean.
MANAGED_FOLDER = "aes_index"


@dataclass
class InstallReport:
    config_dir: Path
    script: Path
    luarc: Path
    changed: list[str]  # what this call did; empty when there was nothing to do
    managed: bool = False  # lua-scripts' script manager starts the script, not luarc

    def as_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


def default_config_dir() -> Path:
    """darktable's configuration folder: $XDG_CONFIG_HOME/darktable (~/.config/darktable);
    %LOCALAPPDATA%\\darktable on Windows."""
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "darktable"
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "darktable"


def plugin_source() -> bytes:
    """The Lua plugin shipped in this package: lua/aesthetic.lua links to the one source,
    plugin/darktable/aesthetic.lua (a wheel stores the linked file's bytes)."""
    return resources.files("aes_index").joinpath("lua", f"{SCRIPT_NAME}.lua").read_bytes()


def install(config_dir: Path | None = None) -> InstallReport:
    """Put the plugin where darktable starts it; idempotent. With lua-scripts' script
    manager installed: <config>/lua/aes_index/aesthetic.lua, started and stopped in the
    script manager like its other scripts; else <config>/lua/aesthetic.lua, required
    from <config>/luarc. Moving from one to the other takes our earlier install away."""
    report = _report(config_dir)
    if report.managed and any(line == LUARC_LINE for line in _luarc_lines(report.luarc)):
        _remove_plain_install(report)  # both would load the plugin twice
    if not report.managed:
        _remove_script(report, _managed_script(report.config_dir))
    source = plugin_source()
    if not report.script.is_file() or report.script.read_bytes() != source:
        report.script.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(report.script, source)
        report.changed.append(f"wrote {report.script}")
    if report.managed:
        if report.changed:
            report.changed.append(f"turn it on in darktable's script manager: folder {MANAGED_FOLDER}, script {SCRIPT_NAME}")
        return report
    lines = _luarc_lines(report.luarc)
    if not any(_ANY_REQUIRE.match(line) for line in lines):
        _write_luarc(report.luarc, [*lines, LUARC_LINE])
        report.changed.append(f"added `require \"{SCRIPT_NAME}\"` to {report.luarc}")
    return report


def uninstall(config_dir: Path | None = None) -> InstallReport:
    """Undo install, either way: remove our luarc line (no other) and the script."""
    report = _report(config_dir)
    _remove_plain_install(report)
    _remove_script(report, _managed_script(report.config_dir))
    return report


def _remove_plain_install(report: InstallReport) -> None:
    lines = _luarc_lines(report.luarc)
    kept = [line for line in lines if line != LUARC_LINE]
    if len(kept) != len(lines):
        _write_luarc(report.luarc, kept)
        report.changed.append(f"removed our line from {report.luarc}")
    _remove_script(report, _plain_script(report.config_dir))


def _remove_script(report: InstallReport, script: Path) -> None:
    if script.is_file():
        script.unlink()
        report.changed.append(f"removed {script}")
        _remove_if_empty(script.parent)


def _plain_script(folder: Path) -> Path:
    return folder / "lua" / f"{SCRIPT_NAME}.lua"


def _managed_script(folder: Path) -> Path:
    return folder / "lua" / MANAGED_FOLDER / f"{SCRIPT_NAME}.lua"


def has_script_manager(folder: Path) -> bool:
    """lua-scripts is installed (its checkout is <config>/lua: tools/script_manager.lua)."""
    return (folder / "lua" / "tools" / "script_manager.lua").is_file()


def _report(config_dir: Path | None) -> InstallReport:
    folder = Path(config_dir or default_config_dir()).expanduser()
    managed = has_script_manager(folder)
    script = _managed_script(folder) if managed else _plain_script(folder)
    return InstallReport(folder, script, folder / "luarc", [], managed)


def _luarc_lines(luarc: Path) -> list[str]:
    return luarc.read_text(encoding="utf-8").splitlines() if luarc.is_file() else []


def _write_luarc(luarc: Path, lines: list[str]) -> None:
    if not any(line.strip() for line in lines):
        luarc.unlink(missing_ok=True)  # it held only our line: install had created it
        return
    luarc.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(luarc, ("\n".join(lines) + "\n").encode("utf-8"))


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty: other scripts live there
