"""`aes-index` command line: parse, call one function of the API, print, map errors.

Every user-facing error is an AesIndexError and becomes one line on stderr plus its exit
code (errors.ExitCode); anything else is a bug, reported as one line unless --debug.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from . import __version__
from .config import DB_FILENAME, PRESET_NAMES, Settings, load_settings, parse_workers
from . import api
from .model.zeroshot import check_spec
from .errors import ExitCode, run_reporting_errors
from .index.freshness import stale_line
from .paths import printable

log = logging.getLogger("aes_index")

# --- argument parsing --------------------------------------------------------------------


COMMON_DEFAULTS = {
    "db": None, "model": None, "pretrained": None, "preset": None, "device": None, "dtype": None, "head": None,
    "batch_size": None, "workers": None, "config": None, "json": False, "quiet": False, "debug": False,
}


def build_parser() -> argparse.ArgumentParser:
    # SUPPRESS: options given before the command must survive the command's own parser
    # (which would otherwise reset them to their defaults); main() fills the defaults in.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    group = common.add_argument_group("common options")
    group.add_argument("--db", help=f"index database (default: {DB_FILENAME} in the library root, or found upwards from here)")
    group.add_argument("--model", help="open_clip model name or model-config JSON (default: the index's, else ViT-B-32)")
    group.add_argument("--pretrained", help="pretrained tag or local .safetensors/.pt checkpoint (default: the index's, else openai)")
    group.add_argument("--preset", choices=PRESET_NAMES, help="fast (ViT-B-32/openai) | best (ViT-L-14/openai, LAION v2 head) | auto: best with a GPU, fast without (default for a new index; an indexed library keeps its backbone)")
    group.add_argument("--device", help="auto | cpu | cuda[:N] | mps")
    group.add_argument("--dtype", help="auto | fp32 | fp16 | bf16")
    group.add_argument("--head", help="auto | zeroshot[:fixed|ensemble|context[:POS/NEG]] | a shipped head's name (laion-v1-vit-b-32, laion-v2-vit-l-14) | head .safetensors file")
    group.add_argument("--batch-size", type=int, help="images per model batch (default, or 0: by device)")
    group.add_argument("--workers", help="decode processes (default auto: cores - 1; 0 = inline)")
    group.add_argument("--config", type=Path, help="config file (default ~/.config/aes-index/config.toml)")
    group.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    group.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")

    parser = argparse.ArgumentParser(
        prog="aes-index", description="Aesthetic scores and star ratings for photo libraries, from CLIP.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"aes-index {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    rebuild = commands.add_parser("rebuild", parents=[common], help="scan, then embed and score new or changed photos")
    rebuild.add_argument("roots", nargs="*", metavar="ROOT", help="library folders (default: those already indexed)")
    rebuild.add_argument("--force", action="store_true", help="decode and score everything again")
    rebuild.add_argument("--exclude", action="append", default=None, metavar="GLOB", help="skip names matching GLOB")
    rebuild.add_argument("--stable", type=float, metavar="SECONDS", help="files modified more recently wait for a later run (default 2; setting stable_seconds)")
    rebuild.set_defaults(handler=cmd_rebuild)

    score = commands.add_parser("score", parents=[common], help="score particular files (cached when unchanged)")
    score.add_argument("files", nargs="+", metavar="FILE")
    score.add_argument("--attributes", action="store_true", help="also show attribute scores (composition, ...)")
    score.set_defaults(handler=cmd_score)

    top = commands.add_parser("top", parents=[common], help="list the best (or worst) photos")
    top.add_argument("-n", type=int, default=20, help="how many (default 20)")
    top.add_argument("--worst", action="store_true", help="lowest scores first")
    top.add_argument("--by", metavar="ATTRIBUTE", help="rank by an attribute: composition, lighting, colour, sharpness, exposure, subject")
    top.set_defaults(handler=cmd_top)

    search = commands.add_parser("search", parents=[common], help="find photos by words, through CLIP's text tower")
    search.add_argument("text", metavar="TEXT", help='what to look for, e.g. "kite on a beach at dusk"')
    search.add_argument("-n", type=int, default=20, help="how many (default 20)")
    search.add_argument("--by-score", action="store_true", help="order the N best matches by aesthetic score")
    search.set_defaults(handler=cmd_search)

    similar = commands.add_parser("similar", parents=[common], help='"more like this": the photos nearest to an indexed one')
    similar.add_argument("photo", metavar="PHOTO", help="an indexed photo")
    similar.add_argument("-n", type=int, default=20, help="how many (default 20)")
    similar.set_defaults(handler=cmd_similar)

    stats = commands.add_parser("stats", parents=[common], help="what the index holds")
    stats.set_defaults(handler=cmd_stats)

    rescore = commands.add_parser("rescore", parents=[common], help="score cached embeddings with a (new) head; no decoding")
    rescore.set_defaults(handler=cmd_rescore)

    attributes = commands.add_parser("attributes", parents=[common], help="score composition, lighting, colour, ... from the cache")
    attributes.add_argument("--only", metavar="A,B", help="just these attributes (default: all)")
    attributes.add_argument("--attribute-head", action="append", default=[], metavar="NAME=FILE", help="a trained head for an attribute")
    attributes.add_argument("--tags", action="store_true", help="tag each attribute's top 20%% in the sidecars (Aesthetic|sharp, ...)")
    attributes.add_argument("--dry-run", action="store_true", help="with --tags: report, write nothing")
    attributes.set_defaults(handler=cmd_attributes)

    apply = commands.add_parser("apply-ratings", parents=[common], help="turn scores into star ratings in sidecars or EXIF")
    _add_rating_options(apply)
    apply.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
    apply.set_defaults(handler=cmd_apply_ratings)

    culling = commands.add_parser("apply-culling", parents=[common], help="culling's keepers and flags into XMP sidecars (pick label, Aesthetic|keeper, ...)")
    culling.add_argument("roots", nargs="*", metavar="ROOT", help="only photos under these folders (default: all culled)")
    _add_cull_write_options(culling)
    culling.set_defaults(handler=cmd_apply_culling)

    ratings = commands.add_parser("ratings", parents=[common], help="ratings we wrote: undo")
    ratings_commands = ratings.add_subparsers(dest="ratings_command", metavar="ACTION", required=True)
    undo = ratings_commands.add_parser("undo", parents=[common], help="put back the ratings a run changed")
    undo.add_argument("--run", type=int, help="run id (default: the latest run with writes left)")
    undo.add_argument("--dry-run", action="store_true", help="report what would be undone")
    undo.set_defaults(handler=cmd_ratings_undo)

    watch = commands.add_parser("watch", parents=[common], help="keep the index and the stars current as photos arrive")
    watch.add_argument("roots", nargs="*", metavar="ROOT", help="library folders (default: those already indexed)")
    watch.add_argument("--poll", action="store_true", help="poll instead of inotify (NFS/SMB shares)")
    watch.add_argument("--stable", type=float, metavar="SECONDS", help="a file is scored once unchanged this long (default 2; setting stable_seconds)")
    watch.add_argument("--rescan", type=float, default=900.0, metavar="SECONDS", help="full rescan interval; events get lost (default 900)")
    watch.add_argument("--no-rate", action="store_true", help="only score; don't write star ratings")
    _add_rating_options(watch)
    watch.set_defaults(handler=cmd_watch)

    status = commands.add_parser("status", parents=[common], help="the background watcher's state")
    status.set_defaults(handler=cmd_status)

    report = commands.add_parser("report", parents=[common], help="write the sort-by-aesthetic gallery: one static HTML page")
    report.add_argument("--out", type=Path, default=Path("gallery.html"), help="page to write (default gallery.html; thumbnails go to gallery_thumbs/ beside it)")
    report.add_argument("--thumb-size", type=int, default=256, metavar="PX", help="thumbnails' short side in pixels (default 256)")
    policy = report.add_argument_group("rating options (the stars the page shows)")
    policy.add_argument("--policy", choices=("percentile", "threshold"), help="percentile (default) or threshold cut points")
    policy.add_argument("--cuts", help="cut points for 2,3,4,5 stars (default percentiles 10,35,70,95)")
    policy.add_argument("--reject-below", help="scores below this get darktable's reject (-1)")
    report.set_defaults(handler=cmd_report)

    review = commands.add_parser("review", parents=[common], help="decide at 100 % by keyboard in the browser: a local web app over the index")
    review.add_argument("roots", nargs="*", metavar="ROOT", help="only groups and photos in these folders (default: the whole library)")
    review.add_argument("--port", type=int, help="listen on this port of 127.0.0.1 (default: a free one)")
    review.add_argument("--no-browser", action="store_true", help="print the URL only; do not open a browser")
    review.add_argument("--stop-when-idle", type=float, metavar="MINUTES", help="stop after this long without a request (default: only Ctrl-C)")
    review.set_defaults(handler=cmd_review)

    _add_culling_commands(commands, common)
    learn = commands.add_parser("learn", parents=[common], help="learn your taste from the decisions you made in your photo manager")
    learn.add_argument("action", nargs="?", choices=("undo",), help="undo: back to the shipped head (the learned head stays on disk)")
    learn.add_argument("--darktable-library", type=Path, metavar="LIBRARY_DB", help="also read darktable's library.db (read-only), e.g. ~/.config/darktable/library.db")
    learn.add_argument("--digikam-db", dest="learn_digikam_db", type=Path, metavar="DIGIKAM4_DB", help="also read digiKam's database (read-only)")
    learn.add_argument("--no-adopt", action="store_true", help="learn and measure, keep the head by name, never adopt it")
    learn.add_argument("--treat-as-unrated", metavar="N[,N]", help="ratings that count as none (darktable's import 1 star always does)")
    learn.set_defaults(handler=cmd_learn)

    _add_darktable_commands(commands, common)
    _add_digikam_commands(commands)

    doctor = commands.add_parser("doctor", parents=[common], help="check device, weights, head and index health")
    doctor.add_argument("--models", action="store_true", help="also list open_clip's model names")
    doctor.set_defaults(handler=cmd_doctor)
    return parser


def _add_culling_commands(commands, common) -> None:
    cull = commands.add_parser("cull", parents=[common], help="group bursts and near-duplicates, pick each group's keeper, flag failures")
    cull.add_argument("roots", nargs="*", metavar="ROOT", help="the library (default: the index's folders)")
    cull.set_defaults(handler=cmd_cull)
    groups = commands.add_parser("groups", parents=[common], help="list the groups `cull` made, keeper first, and flagged photos")
    groups.add_argument("roots", nargs="*", metavar="ROOT", help="only groups with a photo in these folders")
    groups.add_argument("--flagged", action="store_true", help="also list every flagged photo")
    groups.set_defaults(handler=cmd_groups)


def _add_rating_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("rating options")
    group.add_argument("--policy", choices=("percentile", "threshold"), help="percentile (default) or threshold cut points")
    group.add_argument("--cuts", help="cut points for 2,3,4,5 stars (default percentiles 10,35,70,95)")
    group.add_argument("--reject-below", help="scores below this get darktable's reject (-1)")
    group.add_argument("--target", choices=("xmp", "exif"), help="XMP sidecars (default) or EXIF in JPEG originals")
    group.add_argument("--no-tags", action="store_true", help="don't write Aesthetic|N stars tags")
    group.add_argument("--overwrite-manual", action="store_true", help="also replace ratings a person set")
    group.add_argument("--treat-as-unrated", metavar="N[,N]", help="ratings that count as none, e.g. 1 (darktable's import default)")


def _add_cull_write_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reject", action="store_true", help="also reject flagged photos whose group keeps an unflagged keeper (never a photo alone, never over a person's rating or pick)")
    parser.add_argument("--treat-as-unrated", metavar="N[,N]", help="ratings that count as none, e.g. 1 (darktable's import default)")
    parser.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")


def cull_mark_options(args: argparse.Namespace, settings: Settings):
    return api.mark_options(settings, reject=args.reject, dry_run=args.dry_run)


def rating_options(args: argparse.Namespace, settings: Settings):
    return api.rating_options(settings, tags=not args.no_tags, overwrite_manual=args.overwrite_manual, dry_run=getattr(args, "dry_run", False))


def settings_from(args: argparse.Namespace) -> Settings:
    workers = None if args.workers is None else parse_workers(args.workers, "--workers")
    overrides = {
        "model": args.model, "pretrained": args.pretrained, "preset": args.preset, "device": args.device, "dtype": args.dtype,
        "head": args.head, "batch_size": args.batch_size, "workers": workers, "db": args.db,
    }
    if getattr(args, "exclude", None):
        overrides["exclude"] = tuple(args.exclude)
    for name in ("policy", "cuts", "reject_below", "target", "treat_as_unrated"):
        overrides[name] = getattr(args, name, None)
    overrides["stable_seconds"] = getattr(args, "stable", None)
    settings = load_settings(overrides, config_path=args.config)
    check_spec(settings.head)
    return settings


def _add_darktable_commands(commands, common: argparse.ArgumentParser) -> None:
    darktable = commands.add_parser("darktable", parents=[common], help="the darktable plugin: install it; the protocol it speaks")
    actions = darktable.add_subparsers(dest="darktable_command", metavar="ACTION", required=True)
    protocol = (
        ("rate", "score the plugin's images; say which rating each may get"),
        ("top", "score the plugin's images; pick the best --percent of them"),
        ("undo", "say which of the plugin's images get their rating back"),
        ("score", "score the plugin's images (what isn't scored yet)"),
        ("cull", "score and cull the plugin's images; say how darktable groups, tags (and with --reject rejects) them"),
        ("uncull", "say what undoing the culls means for the plugin's images"),
        ("applied", "journal what the plugin set or put back"),
        ("review", "start the review in the browser over the plugin's images' folders, in the background"),
    )
    for name, text in protocol:  # spoken by plugin/darktable/aesthetic.lua, not by people
        action = actions.add_parser(name, parents=[common], help=f"(plugin protocol) {text}")
        action.add_argument("--request", type=Path, required=True, metavar="FILE", help="the plugin's JSON request")
        action.add_argument("--response", type=Path, required=True, metavar="FILE", help="where the JSON answer goes")
        action.set_defaults(handler=cmd_darktable_protocol)
        if name == "rate":
            _add_rating_options(action)
        if name == "top":
            action.add_argument("--percent", type=float, required=True, help="how much to select, 1-100")
        if name == "cull":
            action.add_argument("--treat-as-unrated", metavar="N[,N]", help="ratings that are no person's pick, e.g. 1 (darktable's import default)")
            action.add_argument("--reject", action="store_true", help="technical failures get darktable's reject (-1) where no person rated them")
    for name, handler, text in (
        ("install", cmd_darktable_install, "put the plugin into darktable's lua/ folder and require it from luarc"),
        ("uninstall", cmd_darktable_uninstall, "remove the plugin and its luarc line"),
    ):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("--config-dir", type=Path, metavar="DIR", help="darktable's configuration folder (default ~/.config/darktable)")
        action.set_defaults(handler=handler)


def _add_digikam_commands(commands) -> None:
    digikam = commands.add_parser("digikam", help="star ratings and tags straight into digiKam's database")
    actions = digikam.add_subparsers(dest="digikam_command", metavar="ACTION", required=True)
    sync = actions.add_parser("sync", help="write ratings and Aesthetic tags for the photos digiKam and the index share")
    _add_digikam_options(sync)
    _add_rating_options(sync)
    sync.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
    sync.set_defaults(handler=cmd_digikam_sync)
    cull = actions.add_parser("cull", help="group each burst/duplicate under its keeper, pick label Accepted, flag tags")
    _add_digikam_options(cull)
    _add_cull_write_options(cull)
    cull.set_defaults(handler=cmd_digikam_cull)
    undo = actions.add_parser("undo", help="put back the ratings, tags, pick labels and groups a sync or cull changed")
    _add_digikam_options(undo)
    undo.add_argument("--run", type=int, help="run id (default: the latest sync or cull with writes left)")
    undo.add_argument("--dry-run", action="store_true", help="report what would be undone")
    undo.set_defaults(handler=cmd_digikam_undo)


def _add_digikam_options(parser: argparse.ArgumentParser) -> None:
    # Not the common options: there --db names aes-index's index, here digiKam's database.
    parser.add_argument("--db", dest="digikam_db", type=Path, required=True, metavar="DIGIKAM4_DB", help="digiKam's database, e.g. ~/Pictures/digikam4.db")
    parser.add_argument("--index", dest="db", default=argparse.SUPPRESS, metavar="PATH", help="aes-index's index (default: as for the other commands)")
    parser.add_argument("--head", default=argparse.SUPPRESS, help="whose scores to use (default: the latest run's head)")
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="aes-index's config file")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output on stdout")
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress output")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and debug logs")



# --- helpers -----------------------------------------------------------------------------


def emit(args, data, text: str | Callable[[], str]) -> None:
    """JSON on stdout with --json, else the human text."""
    if args.json:
        json.dump(data, sys.stdout, indent=2, default=str, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(text() if callable(text) else text)


class BarProgress:
    """tqdm bars on stderr, only when someone is watching."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def start(self, stage: str, total: int | None = None) -> None:
        if self.enabled:
            from tqdm import tqdm

            unit = "file" if stage == "scan" else "img"
            self.bar = tqdm(total=total, desc=stage, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def progress_for(args) -> BarProgress:
    return BarProgress(enabled=not (args.quiet or args.json) and sys.stderr.isatty())


# --- commands ----------------------------------------------------------------------------


def cmd_rebuild(args) -> int:
    summary = api.rebuild(settings_from(args), args.roots, force=args.force, exclude=args.exclude, progress=progress_for(args))
    emit(args, summary.as_dict(), lambda: summary_line(summary))
    return ExitCode.FILE_ERRORS if summary.errors else ExitCode.OK


def summary_line(summary) -> str:
    parts = [f"{summary.files} files", f"{summary.decoded} decoded", f"{summary.scored} scored", f"{summary.skipped} unchanged"]
    for name in ("moved", "missing", "errors"):
        if getattr(summary, name):
            parts.append(f"{getattr(summary, name)} {name}")
    rate = f" ({summary.images_per_second:.1f} img/s)" if summary.decoded else ""
    hint = "; `aes-index stats` lists the errors" if summary.errors else ""
    line = f"{summary.command}: {', '.join(parts)} in {summary.seconds:.1f} s{rate}{hint}"
    if summary.settling:
        line += f"\n{summary.settling} files still being written: skipped; run again once they are complete"
    if getattr(summary, "measured", 0):
        line += f"\n{summary.measured} photos indexed before culling existed: capture facts measured (decoded again, not embedded)"
    return line


def cmd_score(args) -> int:
    results = api.score(settings_from(args), args.files, attributes=args.attributes, progress=progress_for(args))
    emit(args, [vars(r) for r in results], lambda: "\n".join(_score_text(r) for r in results))
    return ExitCode.FILE_ERRORS if any(r.score is None for r in results) else ExitCode.OK


def _score_text(result) -> str:
    if result.score is None:
        return f"{'error':>8}  {printable(result.path)}  ({printable(result.error or '')})"
    spread = f" ±{result.std:.2f}" if result.std is not None else ""
    line = f"{result.score:8.4f}{spread}  {printable(result.path)}"
    if result.attributes:
        line += "\n          " + ", ".join(f"{name} {value:+.4f}" for name, value in sorted(result.attributes.items()))
    return line


def cmd_top(args) -> int:
    data = api.top(settings_from(args), args.n, args.worst, args.by)
    head_id, scale, rows = data["head"], data["scale"], data["photos"]
    # stdout stays one photo a line (scripts read it); what the numbers mean goes to stderr
    # with the other notices (hidden by -q; --json has it as "scale")
    logging.getLogger("aes_index.notice").info("%s, %s first; scores: %s", head_id, "worst" if args.worst else "best", scale.text)
    emit(args, {**data, "scale": scale.as_dict()}, lambda: "\n".join(f"{r['score']:8.4f}  {printable(r['path'])}" for r in rows) or "no scored photos")
    return ExitCode.OK


def cmd_search(args) -> int:
    rank = "score" if args.by_score else "similarity"
    hits = api.search(settings_from(args), args.text, args.n, rank)
    emit(args, {"query": args.text, "rank": rank, "hits": [hit.as_dict() for hit in hits]}, lambda: hit_lines(hits))
    return ExitCode.OK


def cmd_similar(args) -> int:
    hits = api.similar(settings_from(args), args.photo, args.n)
    emit(args, {"photo": args.photo, "hits": [hit.as_dict() for hit in hits]}, lambda: hit_lines(hits))
    return ExitCode.OK


def hit_lines(hits) -> str:
    """One photo a line: cosine, score (- when unscored), path."""
    def score(hit) -> str:
        return "       -" if hit.score is None else f"{hit.score:8.4f}"

    return "\n".join(f"{hit.similarity:7.4f}  {score(hit)}  {printable(hit.path)}" for hit in hits) or "no matches"


def cmd_cull(args) -> int:
    summary = api.cull(settings_from(args), args.roots)
    emit(args, summary.as_dict(), lambda: cull_lines(summary))
    return ExitCode.OK


def _brackets(summary) -> str:
    return f"{summary.brackets} brackets, " if summary.brackets else ""


def cull_lines(summary) -> str:
    lines = [
        f"cull: {summary.groups} groups ({summary.bursts} bursts, {_brackets(summary)}{summary.duplicates} duplicate sets) holding "
        f"{summary.grouped_photos} of {summary.photos} photos; {summary.formed} new groups, {summary.joined} photos joined one, "
        f"{summary.left} left one, in {summary.seconds:.1f} s"
    ]
    if getattr(summary, "pairs", 0):
        lines.append(f"{summary.pairs} RAW+JPEG pairs (the files of one capture) counted as one photo each")
    if summary.flagged:
        lines.append("flagged: " + ", ".join(f"{n} {flag}" for flag, n in sorted(summary.flagged.items())))
    if summary.chosen_by_you:
        lines.append(f"{summary.chosen_by_you} groups keep the photo you picked or rated")
    if summary.without_time:
        lines.append(f"{summary.without_time} photos have no capture time: they join only duplicates, never bursts")
    if summary.unmeasured:
        lines.append(f"{summary.unmeasured} photos indexed before culling have no capture facts yet: run `aes-index rebuild`")
    if summary.changed_since_measured or summary.gone_since_measured:
        lines.append(stale_line(summary.changed_since_measured, summary.gone_since_measured, "left out", "grouped as before"))
    if summary.head is None:
        lines.append("nothing scored yet: keepers were chosen by sharpness and exposure alone")
    return "\n".join(lines)


def cmd_groups(args) -> int:
    data = api.groups(settings_from(args), args.roots, flagged=args.flagged or args.json)
    groups, flagged = data["groups"], data["flagged"]
    emit(args, {"head": data["head"], "groups": [g.as_dict() for g in groups], "flagged": [m.as_dict() for m in flagged]},
         lambda: groups_text(groups, flagged))
    return ExitCode.OK


def groups_text(groups, flagged) -> str:
    if not groups and not flagged:
        return "no groups: run `aes-index cull` (after `aes-index rebuild`)"
    lines = []
    for group in groups:
        by = " (your pick)" if group.chosen_by == "you" else ""
        keeper = f"{printable(group.keeper.path)}{_flags_text(group.keeper)}{by}"
        lines.append(f"{group.kind} {group.id}: {len(group.members)} photos, keeper {keeper}: {group.reason}")
        lines += [f"    {printable(member.path)}{_flags_text(member)}" for member in group.members[1:]]
    if flagged:
        lines.append("flagged:")
        lines += [f"    {printable(m.path)}  [{', '.join(m.flags)}]" for m in flagged]
    return "\n".join(lines)


def _flags_text(member) -> str:
    return f"  [{', '.join(member.flags)}]" if member.flags else ""


def cmd_stats(args) -> int:
    data = api.stats(settings_from(args))
    emit(args, data, lambda: stats_text(data))
    return ExitCode.OK


def stats_text(data: dict) -> str:
    lines = [f"index     {data['db']}", f"roots     {', '.join(data['roots']) or '-'}"]
    lines.append("images    " + (", ".join(f"{n} {status}" for status, n in sorted(data["images"].items())) or "none"))
    if data["errors"]:
        lines.append("errors    " + ", ".join(f"{n} {code}" for code, n in sorted(data["errors"].items())))
        # messages start with the file's name; show the full path instead
        lines += [f"          {printable(e['path'])}: {printable(e['error'].split(': ', 1)[-1])}" for e in data["recent_errors"]]
    active = data.get("active_backbone")
    lines.append("backbones " + (", ".join(key + (" (active)" if key == active else "") for key in data["backbones"]) or "-"))
    lines.append(f"head      {data['active_head'] or '-'}" + (f" (scores {data['scale']['text']})" if data.get("scale") else ""))
    if data.get("head_choice", {}).get("auto"):
        lines.append(f"auto      {data['head_choice']['auto']}: {data['head_choice']['why']}")
    s = data["scores"]
    if s["count"]:
        lines.append(f"scores    {s['count']} scored; min {s['min']:.4f}, p10 {s['p10']:.4f}, median {s['median']:.4f}, p90 {s['p90']:.4f}, max {s['max']:.4f}")
    if data["changed_since_measured"] or data["gone_since_measured"]:
        lines.append("files     " + stale_line(data["changed_since_measured"], data["gone_since_measured"]))
    return "\n".join(lines)


def cmd_learn(args) -> int:
    settings = settings_from(args)
    if args.action == "undo":
        data = api.learn_undo(settings)
        emit(args, data, lambda: learn_undo_text(data))
        return ExitCode.OK
    places = api.learn_places(settings, args.darktable_library, args.learn_digikam_db)
    data = api.learn(settings, places, adopt=not args.no_adopt, progress=progress_for(args))
    emit(args, data, lambda: learn_text(data))
    return ExitCode.OK


def learn_text(data: dict) -> str:
    found = ", ".join(f"{n} {source}" for source, n in data["found"].items()) or "none"
    d = data["decisions"]
    lines = [f"decisions found: {found}",
             f"training data:   {d['ratings']} choices, {d['pairs']} pairs "
             f"({', '.join(f'{n} {k}' for k, n in d['pairs_by_kind'].items()) or 'none'}) in {d['shoots']} shoots"]
    figures = data.get("held_out")
    if figures and "personal_pairwise" in figures:
        ci = lambda v: f"[{v[0]:.3f}, {v[1]:.3f}]" if v else "n/a"
        lines.append(f"held out:        {figures['pairs']} comparisons in {figures['shoots']} shoots")
        lines.append(f"  pairwise accuracy  personal {figures['personal_pairwise']:.3f} {ci(figures['personal_pairwise_ci'])}"
                     f"  active {figures['active_pairwise']:.3f} {ci(figures['active_pairwise_ci'])}")
        if figures.get("personal_srcc") is not None and figures.get("active_srcc") is not None:
            lines.append(f"  SRCC               personal {figures['personal_srcc']:.3f} {ci(figures.get('personal_srcc_ci'))}"
                         f"  active {figures['active_srcc']:.3f} {ci(figures.get('active_srcc_ci'))}")
    if data.get("head"):
        lines.append(f"head:            {printable(data['head'])}")
    lines.append(("ADOPTED as --head auto: " if data["adopted"] else "not adopted: ") + data.get("reason", ""))
    if data.get("rescored", {}).get("scored") is not None:
        lines.append(f"rescored {data['rescored']['scored']} photos with {data['rescored']['head']}; `aes-index learn undo` goes back")
    return "\n".join(lines)


def learn_undo_text(data: dict) -> str:
    if not data["undone"]:
        return data["reason"]
    line = f"personal head no longer adopted (kept at {printable(data['head'])})"
    if data["rescored"].get("scored") is not None:
        line += f"; rescored {data['rescored']['scored']} photos with {data['rescored']['head']}"
    return line


def cmd_rescore(args) -> int:
    summary = api.rescore(settings_from(args), progress_for(args))
    emit(args, summary.as_dict(), lambda: f"rescore: {summary.scored} photos scored with {summary.head} in {summary.seconds:.1f} s (no decoding)")
    return ExitCode.OK


def cmd_attributes(args) -> int:
    data = api.attributes(settings_from(args), args.only, args.attribute_head, tags=args.tags, dry_run=args.dry_run)
    emit(args, data, lambda: attributes_text(data))
    return ExitCode.FILE_ERRORS if data.get("tags", {}).get("errors") else ExitCode.OK


def attributes_text(data: dict) -> str:
    lines = [f"{name:<12} {n} photos scored (no decoding)" for name, n in data["scored"].items()]
    if "tags" in data:
        tags = data["tags"]
        lines.append(f"tags: {tags['written']} sidecars {'would change' if tags['run_id'] is None else 'changed'}")
        lines += [f"error: {e['error']}" for e in tags["errors"]]
    return "\n".join(lines)


def cmd_apply_ratings(args) -> int:
    settings = settings_from(args)
    report = api.apply_ratings(settings, rating_options(args, settings))
    emit(args, report.as_dict(), lambda: apply_text(report))
    return ExitCode.FILE_ERRORS if report.errors else ExitCode.OK


def apply_text(report) -> str:
    from .features.rating import stars_summary
    from .writing.apply import UNSUPPORTED_TEXT

    verb = "would write" if report.dry_run else "wrote"
    lines = [
        f"{report.photos} photos rated by {report.policy['kind']} {report.policy['cuts']} into {report.target}: {stars_summary(report.stars)}",
        f"{verb} {sum(report.written.values())} ratings ({stars_summary(report.written)}); "
        f"{report.unchanged} already right; {report.skipped_manual} manual ratings kept",
    ]
    if report.changed_since_read:
        lines.append(f"{report.changed_since_read} left alone: changed while we decided (by a person?); run again")
    for reason, count in sorted(report.unsupported.items()):
        lines.append(f"{count} photos skipped: {UNSUPPORTED_TEXT.get(reason, reason)}")
    lines += [f"error: {e['error']}" for e in report.errors]
    if report.run_id is not None:
        lines.append(f"run {report.run_id}: `aes-index ratings undo --run {report.run_id}` puts these back")
    return "\n".join(lines)


def cmd_ratings_undo(args) -> int:
    results = api.ratings_undo(settings_from(args), args.run, dry_run=args.dry_run)
    data = [{"target": str(r.action.target_path), "status": r.status, "detail": r.detail} for r in results]
    emit(args, data, lambda: undo_text(results, args.dry_run))
    return ExitCode.FILE_ERRORS if any(r.status == "failed" for r in results) else ExitCode.OK


UNDO_STATUSES_TO_SHOW = ("failed", "superseded", "kept-manual")  # what a person may have to act on, or should know


def undo_text(results, dry_run: bool, backup: str | None = None) -> str:
    """An undo's counts, then one line per place it could not put back (or kept as a
    person left it): the place and why, as --json has them."""
    from collections import Counter

    counts = Counter(r.status for r in results)
    lines = [("dry run: " if dry_run else "") + (", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to undo")]
    for result in sorted(results, key=lambda r: (UNDO_STATUSES_TO_SHOW.index(r.status) if r.status in UNDO_STATUSES_TO_SHOW else 99, r.action.place)):
        if result.status in UNDO_STATUSES_TO_SHOW:
            lines.append(f"  {result.status}: {printable(result.action.place)}: {result.detail}")
    if backup:
        lines.append(f"backup: {backup}")
    return "\n".join(lines)


def cmd_watch(args) -> int:
    import signal
    import threading

    settings = settings_from(args)
    rate = None if args.no_rate else rating_options(args, settings)
    stop = threading.Event()
    received: list[int] = []

    def finish_then_exit(signum, frame):  # finish the batch in hand, then exit
        received.append(signum)
        stop.set()

    def started(roots, db_path) -> None:
        print(f"aes-index: watching {', '.join(roots)} (index {db_path})", file=sys.stderr)

    previous = {signum: signal.signal(signum, finish_then_exit) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = api.watch(settings, args.roots, args.rescan, args.poll, rate, stop, started)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"aes-index: stopped after scoring {status.scored} photos ({status.errors} errors)", file=sys.stderr)
    # Ctrl-C is an interruption (130, as for every command). SIGTERM is how systemd and
    # service managers stop a service on purpose: 0, so a normal stop is not a failure.
    return ExitCode.INTERRUPTED if signal.SIGINT in received else ExitCode.OK


def cmd_status(args) -> int:
    status = api.watch_status(settings_from(args))
    emit(args, status, lambda: status_text(status))
    return ExitCode.OK


def status_text(status: dict) -> str:
    if "pid" not in status:
        return "no watcher has run for this library"
    last = printable(status.get("last_scored") or "-")
    if status["running"]:
        lines = [f"watcher   running (pid {status['pid']}), {status['state']}", f"uptime    {status['uptime_seconds']:.0f} s"]
    elif status.get("stopped"):
        lines = [f"watcher   stopped at {_local_time(status['stopped'])}"]
    else:  # no stop time: killed, or a crash
        lines = ["watcher   not running (it did not stop cleanly)"]
    lines += [f"queue     {status['queue']} files", f"scored    {status['scored']}, errors {status['errors']}", f"last      {last}"]
    return "\n".join(lines)


def _local_time(timestamp: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def cmd_report(args) -> int:
    summary = api.report(settings_from(args), args.out, args.thumb_size, progress_for(args))
    emit(args, summary.as_dict(), lambda: report_line(summary))
    return ExitCode.OK


def report_line(summary) -> str:
    thumbs = f"{summary.thumbs_made} made, {summary.thumbs_cached} cached"
    if summary.thumbs_failed:
        thumbs += f", {summary.thumbs_failed} could not be made (placeholders)"
    culling = f"; {summary.groups} groups shown as stacks, {summary.flagged} photos flagged"
    if not summary.groups:
        culling = "; no groups" if summary.culled else "; no groups yet: `aes-index cull` groups bursts and duplicates"
    return (
        f"report: {summary.out_path}: {summary.photos} photos, {summary.errors} failed to decode; "
        f"thumbnails {thumbs}{culling}; {summary.seconds:.1f} s"
    )


def cmd_review(args) -> int:
    def ready(url: str) -> None:  # the URL (with its token) on stdout, so a script can take it
        emit(args, {"url": url}, url)
        sys.stdout.flush()
        print("aes-index: review running; Ctrl-C stops it", file=sys.stderr)
        if not args.no_browser:
            import webbrowser

            webbrowser.open(url)

    code = api.review(settings_from(args), args.roots, args.port, ready, args.stop_when_idle)
    print("aes-index: review stopped", file=sys.stderr)
    return code


def cmd_doctor(args) -> int:
    from .features.doctor import exit_code

    report = api.doctor(settings_from(args), models=args.models)
    emit(args, report, lambda: doctor_text(report))
    return exit_code(report)


def doctor_text(report: dict) -> str:
    lines = []
    for check in report["checks"]:
        mark = "ok  " if check["ok"] else "FAIL"
        lines.append(f"[{mark}] {check['name']:<9} {check['detail']}")
    if report.get("models"):
        lines.append("models: " + ", ".join(report["models"]))
    return "\n".join(lines)


def cmd_darktable_protocol(args) -> int:
    settings = settings_from(args)
    options = None
    if args.darktable_command == "rate":
        options = rating_options(args, settings)
    elif args.darktable_command == "cull":
        options = api.darktable_cull_options(settings, args.reject)
    api.darktable_protocol(args.darktable_command, args.request, args.response, settings, options, getattr(args, "percent", None))
    return ExitCode.OK


def cmd_darktable_install(args) -> int:
    from .features.darktable import install

    report = install(args.config_dir)
    emit(args, report.as_dict(), lambda: darktable_install_text(report, "installed"))
    return ExitCode.OK


def cmd_darktable_uninstall(args) -> int:
    from .features.darktable import uninstall

    report = uninstall(args.config_dir)
    emit(args, report.as_dict(), lambda: darktable_install_text(report, "uninstalled"))
    return ExitCode.OK


def darktable_install_text(report, done: str) -> str:
    import shutil

    lines = list(report.changed) or [f"nothing to do: the plugin is {done} in {report.config_dir}"]
    if report.changed:
        lines.append(f"restart darktable to finish: {done}")
    if done == "installed" and shutil.which("aes-index") is None:
        # darktable runs the plugin's "aes-index command" preference; say what to put there.
        lines.append(f"aes-index is not on PATH: set darktable's lua option 'aesthetic: aes-index command' to {Path(sys.argv[0]).resolve()}")
    return "\n".join(lines)


def cmd_digikam_sync(args) -> int:
    settings = settings_from(args)
    report = api.digikam_sync(settings, args.digikam_db, rating_options(args, settings))
    emit(args, report.as_dict(), lambda: digikam_sync_text(report))
    return ExitCode.OK


def digikam_sync_text(report) -> str:
    from .features.rating import stars_summary

    data = report.as_dict()
    verb = "would write" if report.dry_run else "wrote"
    lines = [
        f"{data['matched']} of {data['images']} digiKam images are scored photos",
        f"{verb} {sum(report.written.values())} ratings ({stars_summary(report.written)}); {report.unchanged} already right; "
        f"{report.skipped_manual} manual ratings kept",
    ]
    if data["skipped_rejected"]:
        lines.append(f"{data['skipped_rejected']} rejects left alone: digiKam's rating has no 'rejected'")
    if data["backup"]:
        lines.append(f"backup: {data['backup']}")
    if report.run_id is not None:
        lines.append(f"run {report.run_id}: `aes-index digikam undo --db {data['database']} --run {report.run_id}` puts these back")
    return "\n".join(lines)


def cmd_apply_culling(args) -> int:
    from .features.culling.marks import marks_text

    settings = settings_from(args)
    report = api.apply_culling(settings, args.roots, cull_mark_options(args, settings))
    emit(args, report.as_dict(), lambda: marks_text(report, f"aes-index ratings undo --run {report.run_id}"))
    return ExitCode.FILE_ERRORS if report.errors else ExitCode.OK


def cmd_digikam_cull(args) -> int:
    from .features.culling.marks import marks_text

    settings = settings_from(args)
    report = api.digikam_cull(settings, args.digikam_db, cull_mark_options(args, settings))
    undo_hint = f"aes-index digikam undo --db {report.extra.get('database')} --run {report.run_id}"
    emit(args, report.as_dict(), lambda: marks_text(report, undo_hint))
    return ExitCode.FILE_ERRORS if report.errors else ExitCode.OK


def cmd_digikam_undo(args) -> int:
    backup, results = api.digikam_undo(settings_from(args), args.digikam_db, args.run, dry_run=args.dry_run)
    data = {"backup": backup, "results": [result.as_dict() for result in results]}
    emit(args, data, lambda: undo_text(results, args.dry_run, backup))
    return ExitCode.OK


# --- entry point -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in COMMON_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="aes-index: %(message)s", stream=sys.stderr
    )
    if not args.debug:  # exiv2 reports every odd maker note; the per-file error is what counts
        logging.getLogger("exiv2").setLevel(logging.CRITICAL)
    if not (args.json or args.quiet):  # one-line notices, e.g. which backbone a command picked
        logging.getLogger("aes_index.notice").setLevel(logging.INFO)
    return run_reporting_errors("aes-index", lambda: args.handler(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
