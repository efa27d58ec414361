"""`aes-train` command line: parse, call the modules, print, map errors to exit codes.

    embed     AVA images -> pooled embeddings in a resumable cache
    fit       linear probe / EMD head (/ small MLP) over the cache
    prompts   the paper's zero-shot prompt search, exported as a head
    finetune  the whole image encoder + EMD head (GPU); a checkpoint aes-index loads
    evaluate  test-split metrics beside the paper's Table 1
    export    a head + model card into aes-index's shipped heads folder
    personal  a head from your own star ratings in an aes-index library
    distort   a head that ranks good photos above filter-distorted versions of them

Errors are aes_index AesIndexErrors: one line `aes-train: ...` and aes-index's exit codes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from aes_index.errors import ConfigError, ExitCode, run_reporting_errors

from . import ava

# --- argument parsing --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    common.add_argument("--debug", action="store_true", help="show tracebacks")

    model = argparse.ArgumentParser(add_help=False)
    group = model.add_argument_group("backbone (defaults: aes-index's settings, i.e. ViT-B-32 / openai)")
    group.add_argument("--model", help="open_clip model name or model-config JSON")
    group.add_argument("--pretrained", help="pretrained tag or local .safetensors checkpoint")
    group.add_argument("--device", help="auto | cpu | cuda[:N] | mps")
    group.add_argument("--dtype", help="auto | fp32 | fp16 | bf16")
    group.add_argument("--weights-cache", help="where open_clip / Hugging Face weights are cached")
    group.add_argument("--config", type=Path, help="aes-index config file to take the defaults from")

    labels = argparse.ArgumentParser(add_help=False)
    labels.add_argument_group("dataset").add_argument("--ava", required=True, help="AVA.txt")

    dataset = argparse.ArgumentParser(add_help=False, parents=[labels])
    group = dataset.add_argument_group("split (use the same options for fit, prompts and evaluate)")
    group.add_argument("--test-list", help="file of test image ids (official-style split); default: a seeded split")
    group.add_argument("--train-list", help="file of training image ids (default: everything not in test)")
    group.add_argument("--test-fraction", type=float, default=ava.DEFAULT_TEST_FRACTION, help="seeded split: share of test images (default %(default)s)")
    group.add_argument("--val-fraction", type=float, default=ava.DEFAULT_VAL_FRACTION, help="share of training images held out for early stopping (default %(default)s)")
    group.add_argument("--split-seed", type=int, default=0, help="seed of the split (default %(default)s)")

    parser = argparse.ArgumentParser(prog="aes-train", description="Train aes-index heads: AVA, the paper's methods, your own ratings.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("embed", parents=[common, model, labels], help="embed AVA images into a resumable cache")
    p.add_argument("--images", required=True, help="folder holding the AVA images (<id>.jpg, any depth)")
    p.add_argument("--cache", required=True, help="embedding cache folder (created; a rerun continues it)")
    p.add_argument("--batch-size", type=int, default=0, help="images per batch (default 256 on GPU, 32 on CPU)")
    p.add_argument("--workers", type=int, default=-1, help="decode processes (default cores - 1; 0 = inline)")
    p.add_argument("--limit", type=int, help="embed at most N more images in this run")
    p.add_argument("--retry-failed", action="store_true", help="try images that failed to decode before again")
    p.set_defaults(handler=cmd_embed)

    p = commands.add_parser("fit", parents=[common, dataset], help="train a linear probe or EMD head on cached embeddings")
    p.add_argument("--cache", required=True, help="embedding cache made by `aes-train embed`")
    p.add_argument("--out", help="head file to write (default <name>.safetensors)")
    p.add_argument("--name", help="head name (default ava-<kind>-<backbone>)")
    p.add_argument("--kind", choices=("emd", "linear"), default="emd")
    p.add_argument("--hidden", type=int, default=0, help="hidden ReLU layer width: the small MLP (emd only; default none)")
    p.add_argument("--space", choices=("pooled", "projected"), default="pooled", help="features before (default) or after CLIP's projection")
    p.add_argument("--solver", choices=("sgd", "ridge"), default="sgd", help="sgd (paper) or closed-form ridge (linear only)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-epochs", type=int, default=200)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="training seed (default %(default)s)")
    p.set_defaults(handler=cmd_fit)

    p = commands.add_parser("prompts", parents=[common, model, dataset], help="zero-shot prompt search, exported as a head")
    p.add_argument("--cache", required=True, help="embedding cache made by `aes-train embed` with the same backbone")
    p.add_argument("--out", help="head file to write (default <name>.safetensors)")
    p.add_argument("--modes", default="fixed,ensemble,context", help="comma-separated: fixed, ensemble, context (default all)")
    p.add_argument("--criterion", choices=("srcc", "accuracy"), default="srcc", help="choose the pair for ranking (srcc) or the binary task")
    p.add_argument("--positive", help="comma-separated positive adjectives (default the paper's 27)")
    p.add_argument("--negative", help="comma-separated negative adjectives (default the paper's 12)")
    p.set_defaults(handler=cmd_prompts)

    p = commands.add_parser("finetune", parents=[common, model, dataset], help="fine-tune the image encoder with an EMD head (GPU)")
    p.add_argument("--images", required=True, help="folder holding the AVA images")
    p.add_argument("--out-dir", required=True, help="folder for the checkpoint and its head")
    p.add_argument("--name", help="checkpoint file name stem (default <model>-aes-finetuned)")
    p.add_argument("--init-head", help="start the head from an EMD head of `aes-train fit` (pooled, no hidden layer)")
    p.add_argument("--lr-encoder", type=float, default=1e-4)
    p.add_argument("--lr-head", type=float, default=1e-2)
    p.add_argument("--momentum", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=0, help="stop after N optimiser steps (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=-1, help="decode processes (default cores - 1)")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.set_defaults(handler=cmd_finetune)

    p = commands.add_parser("evaluate", parents=[common, dataset], help="test-split metrics beside the paper's Table 1")
    p.add_argument("--head", action="append", required=True,
                   help="head file, a shipped head's name (laion-v2-vit-l-14, ...), or `shipped`: every head aes-index "
                        "ships for the cache's backbone (repeat for several)")
    p.add_argument("--cache", required=True, help="embedding cache from the head's backbone")
    p.add_argument("--split", choices=("test", "train", "val"), default="test", help="which split to measure (default test)")
    p.set_defaults(handler=cmd_evaluate)

    p = commands.add_parser("export", parents=[common], help="put a head and its model card into the shipped heads folder")
    p.add_argument("head", help="head .safetensors file")
    p.add_argument("--name", help="rename the head (and its file)")
    p.add_argument("--heads-dir", help="target folder (default: aes_index's package heads folder)")
    p.set_defaults(handler=cmd_export)

    p = commands.add_parser("personal", parents=[common, model], help="a head from your own star ratings in an aes-index library")
    p.add_argument("--db", help="index database (default: .aes-index.db found from here upwards)")
    p.add_argument("--out", help="head file (default ~/.local/share/aes-index/heads/personal-<backbone>.safetensors)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="rated photos held out to measure SRCC (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-ratings", type=int, default=20)
    p.add_argument("--skip-rejects", action="store_true", help="leave rejected photos out (default: they count as 0 stars)")
    p.add_argument("--treat-as-unrated", default="", metavar="STARS",
                   help="comma-separated star values that are no judgement, e.g. 1 (darktable rates every import 1 star)")
    p.set_defaults(handler=cmd_personal)

    p = commands.add_parser("distort", parents=[common, model], help="a head that ranks good photos above distorted versions of them")
    source = p.add_argument_group("good photos (one of)").add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="DIR", help="a folder of good photos")
    source.add_argument("--from-index", nargs="?", const="", metavar="DB",
                        help="the photos you rated --min-stars or more in an aes-index library (default: .aes-index.db "
                             "found from here upwards); also measures SRCC against your ratings")
    p.add_argument("--min-stars", type=int, default=4, help="with --from-index: the rating a good photo has (default %(default)s)")
    p.add_argument("--treat-as-unrated", default="", metavar="STARS", help="with --from-index: star values that are no judgement, e.g. 1")
    p.add_argument("--out", help="head file to write (default <name>.safetensors)")
    p.add_argument("--name", help="head name (default distort-rank-<backbone>)")
    p.add_argument("--distortions", help="comma-separated subset of blur, noise, jpeg, overexpose, underexpose, desaturate, contrast, colour-cast, tilt (default all)")
    p.add_argument("--levels", type=int, default=4, help="graded strengths per distortion (default %(default)s)")
    p.add_argument("--loss", choices=("logistic", "margin"), default="logistic", help="RankNet logistic (default) or margin ranking loss")
    p.add_argument("--margin", type=float, default=1.0, help="margin of --loss margin (default %(default)s)")
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default %(default)s)")
    p.add_argument("--weight-decay", type=float, default=1e-3, help="L2 penalty (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="pairs per step (default %(default)s)")
    p.add_argument("--max-epochs", type=int, default=100)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--test-fraction", type=float, default=0.2, help="photos held out to measure (default %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="photos held out for early stopping (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds the distortions, the split and training (default %(default)s)")
    p.add_argument("--embed-batch", type=int, default=0, help="images per model batch (default 256 on GPU, 32 on CPU)")
    p.add_argument("--save-images", metavar="DIR", help="also write every version as PNG, to look at")
    p.add_argument("--personal-out", metavar="FILE",
                   help="with --from-index: also fit a personal head on your ratings, started from this head")
    p.set_defaults(handler=cmd_distort)
    return parser


# --- shared helpers ----------------------------------------------------------------------


class Reporter:
    """Progress lines on stderr (unless -q/--json); the result on stdout."""

    def __init__(self, args):
        self.args = args
        self.quiet = args.quiet or args.json

    def log(self, message: str) -> None:
        if not self.quiet:
            print(f"aes-train: {message}", file=sys.stderr, flush=True)

    def result(self, data: dict, text: str) -> None:
        if self.args.json:
            json.dump(data, sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
        else:
            print(text)


def settings_from(args, default_backbone: bool = True):
    from aes_index.config import load_settings
    from aes_index.model.presets import with_default_backbone

    overrides = {name: getattr(args, name, None) for name in ("model", "pretrained", "device", "dtype", "db")}
    overrides["cache_dir"] = getattr(args, "weights_cache", None)
    settings = load_settings(overrides, config_path=getattr(args, "config", None))
    # Training names its backbone or takes the default; only `personal`, which learns from
    # an index's embeddings, takes the index's own (default_backbone=False).
    return with_default_backbone(settings) if default_backbone else settings


def load_model(args, dtype: str | None = None):
    from aes_index.model.backbone import load_backbone

    s = settings_from(args)
    return load_backbone(s.model, s.pretrained, s.device, dtype or s.dtype, s.cache_dir)


def open_cache(path: str):
    from .cache import EmbeddingCache

    cache = EmbeddingCache(path)
    cache.info  # noqa: B018 - raises CacheError when it is no cache
    return cache


def split_for(args, ids):
    return ava.make_split(ids, args.test_list, args.train_list, args.test_fraction, args.val_fraction, args.split_seed)


def provenance(argv: Sequence[str]) -> dict:
    from aes_index import __version__

    return {
        "command": "aes-train " + shlex.join(argv),
        "aes_train_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def with_metadata(head, **extra):
    """The head with more metadata (a new Head: its hash covers the metadata)."""
    from aes_index.model.heads import Head

    return Head({**head.metadata, **extra}, head.tensors)


def slug(text: str) -> str:
    from .export import slug as _slug

    return _slug(text)


def workers_from(value: int) -> int:
    from aes_index.index.pipeline import default_workers

    return default_workers() if value < 0 else value


# --- commands ----------------------------------------------------------------------------


def cmd_embed(args, argv) -> int:
    from .cache import EmbeddingCache
    from .embed import embed_dataset

    out = Reporter(args)
    table = ava.read_ava(args.ava)
    files = ava.find_images(args.images, table.image_ids)
    out.log(f"{len(table)} AVA rows, {len(files.paths)} image files found, {len(files.missing)} missing")
    cache = EmbeddingCache(args.cache)
    if args.retry_failed and cache.manifest["failed"]:
        out.log(f"retrying {cache.forget_failures()} images that failed before")
    backbone = load_model(args)
    batch_size = args.batch_size or (256 if backbone.device.type == "cuda" else 32)
    bar = _progress_bar(args, len(files.paths))
    summary = embed_dataset(
        backbone, files.paths.items(), cache, batch_size, workers_from(args.workers), args.limit,
        on_batch=lambda s: bar.update(s.already + s.embedded + s.failed - bar.n) if bar else None,
    )
    if bar:
        bar.close()
    summary.missing = len(files.missing)
    _write_missing(cache.folder, files.missing)
    text = (
        f"embed: {summary.embedded} embedded, {summary.failed} failed to decode, {summary.missing} missing, "
        f"{summary.already} done before; cache {cache.folder} holds {cache.manifest['rows']} embeddings"
    )
    out.result(summary.as_dict(), text)
    return ExitCode.FILE_ERRORS if summary.failed else ExitCode.OK


def _progress_bar(args, total: int):
    if args.quiet or args.json or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, leave=False, dynamic_ncols=True)


def _write_missing(folder: Path, missing: list[int]) -> None:
    """The ids with no image file: a record of what the cache lacks, rewritten per run."""
    from aes_index.atomic import atomic_write_bytes

    atomic_write_bytes(folder / "missing.txt", "".join(f"{i}\n" for i in missing).encode())


def cmd_fit(args, argv) -> int:
    from .data import describe_data, load_examples
    from .evaluate import evaluate_head, format_table
    from .fit import FitConfig, fit_head, make_head, targets_for

    out = Reporter(args)
    config = FitConfig(
        kind=args.kind, hidden=args.hidden, space=args.space, solver=args.solver, lr=args.lr, momentum=args.momentum,
        batch_size=args.batch_size, max_epochs=args.max_epochs, patience=args.patience, seed=args.seed,
    )
    table = ava.read_ava(args.ava)
    cache = open_cache(args.cache)
    examples = load_examples(table, cache)
    split = split_for(args, examples.ids)
    projection, info = cache.projection, cache.info
    train, val, test = examples.subset(split.train), examples.subset(split.val), examples.subset(split.test)
    out.log(f"fit {config.kind} head on {len(train)} images, early stopping on {len(val)}, testing on {len(test)}")

    x_train, x_val = train.features(projection, config.space), val.features(projection, config.space)
    result = fit_head(config, x_train, targets_for(config.kind, train), x_val, targets_for(config.kind, val), out.log)

    name = args.name or f"ava-{config.kind}{f'-mlp{config.hidden}' if config.hidden else ''}-{slug(info.key)}"
    metadata = {"data": describe_data(table, cache, examples), "split": split.description, **provenance(argv)}
    head = make_head(name, config, result, info.key, x_train.shape[1], metadata)
    head = with_metadata(head, metrics={"split": "test", **evaluate_head(head, test, projection, 5.0)},
                         val_metrics=evaluate_head(head, val, projection, 5.0))

    from aes_index.model.heads import save_head

    path = save_head(head, args.out or f"{slug(name)}.safetensors")
    text = f"{format_table([(f'{name} (test)', head.metadata['metrics'])])}\nhead written to {path}"
    out.result({"head": str(path), "name": name, "metrics": head.metadata["metrics"], "history": result.history}, text)
    return ExitCode.OK


def cmd_prompts(args, argv) -> int:
    from aes_index.model import zeroshot
    from aes_index.model.heads import save_head

    from .data import describe_data, load_examples
    from .errors import CacheError
    from .evaluate import evaluate_head, format_table
    from .prompts import choose, export_head, search, top

    out = Reporter(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(zeroshot.MODES)
    if unknown or not modes:
        raise ConfigError(f"--modes takes {', '.join(zeroshot.MODES)}; got {args.modes!r}")
    positive = _words(args.positive) or list(zeroshot.POSITIVE_ADJECTIVES)
    negative = _words(args.negative) or list(zeroshot.NEGATIVE_ADJECTIVES)
    table = ava.read_ava(args.ava)
    cache = open_cache(args.cache)
    backbone = load_model(args)
    if backbone.key != cache.info.key:
        raise CacheError(f"cache {cache.folder} holds embeddings from {cache.info.key}, but the text encoder is {backbone.key}")
    examples = load_examples(table, cache)
    split = split_for(args, examples.ids)
    training, test = examples.subset(split.training), examples.subset(split.test)
    projection = cache.projection
    out.log(f"{len(positive)} x {len(negative)} adjective pairs in {', '.join(modes)} mode, chosen on {len(training)} training images")

    results = search(backbone, training, projection, modes, positive, negative, out.log)
    best = choose(results, args.criterion)
    metadata = {"data": describe_data(table, cache, examples), "split": split.description, **provenance(argv)}
    head = export_head(backbone, best, results, args.criterion, metadata)
    head = with_metadata(head, metrics={"split": "test", **evaluate_head(head, test, projection, best.threshold)})
    path = save_head(head, args.out or f"{slug(head.name)}.safetensors")

    lines = []
    for mode, rows in results.items():
        lines.append(f"{mode}: best pairs on the training split by {args.criterion}")
        lines += [f"  {r.positive:>12} / {r.negative:<12} SRCC {r.srcc:6.3f}  acc {r.accuracy:6.3f}" for r in top(rows, args.criterion)]
    lines.append(f"chosen: {best.mode} {best.positive}/{best.negative}")
    lines.append(format_table([(f"{best.mode} {best.positive}/{best.negative} (test)", head.metadata["metrics"])]))
    lines.append(f"head written to {path}")
    data = {"head": str(path), "chosen": best.as_dict(), "metrics": head.metadata["metrics"],
            "top": {mode: [r.as_dict() for r in top(rows, args.criterion)] for mode, rows in results.items()}}
    out.result(data, "\n".join(lines))
    return ExitCode.OK


def _words(text: str | None) -> list[str]:
    return [w.strip() for w in (text or "").split(",") if w.strip()]


def cmd_finetune(args, argv) -> int:
    from aes_index.model.heads import save_head

    from .finetune import (
        FinetuneConfig, export_checkpoint, finetune, finetuned_head, measure_test_split, serving_model,
    )

    out = Reporter(args)
    config = FinetuneConfig(
        lr_encoder=args.lr_encoder, lr_head=args.lr_head, momentum=args.momentum, batch_size=args.batch_size,
        max_epochs=args.max_epochs, patience=args.patience, max_steps=args.max_steps, seed=args.seed,
        workers=workers_from(args.workers), amp=not args.no_amp,
    )
    out_dir = Path(args.out_dir).expanduser().resolve()
    try:  # now, not after hours of training
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create --out-dir {out_dir}: {exc.strerror or exc}") from exc
    table = ava.read_ava(args.ava)
    files = ava.find_images(args.images, table.image_ids)
    split = split_for(args, table.image_ids)
    histograms = dict(zip(table.image_ids.tolist(), table.histograms()))
    items = {part: [(int(i), files.paths[int(i)]) for i in table.image_ids[mask] if int(i) in files.paths]
             for part, mask in (("train", split.train), ("val", split.val), ("test", split.test))}
    if not items["train"] or not items["val"] or not items["test"]:
        from .errors import NotEnoughData

        raise NotEnoughData(f"found {len(files.paths)} of the {len(table)} AVA images under {args.images}: too few to train, stop early and test")
    settings = settings_from(args)
    backbone = load_model(args, dtype="fp32")  # master weights in fp32; autocast does the rest
    out.log(f"fine-tuning {backbone.key} on {len(items['train'])} images ({len(files.missing)} missing), "
            f"early stopping on {len(items['val'])}, device {backbone.device}")

    result = finetune(backbone, items["train"], items["val"], histograms, config, args.init_head, out.log)
    metrics = measure_test_split(backbone, result.head_tensors, items["test"], histograms, config)

    model_arg = serving_model(settings.model, settings.pretrained, out_dir)
    stem = args.name or f"{slug(Path(model_arg).stem)}-aes-finetuned"
    checkpoint = export_checkpoint(backbone, out_dir / f"{stem}.safetensors")
    metadata = {
        "config": {**config.as_dict(), "base_backbone": backbone.key},
        "data": {"dataset": "AVA", "ava_txt": table.source["name"], "ava_sha256": table.source["sha256"],
                 "images": len(files.paths), "missing": len(files.missing)},
        "split": split.description,
        "metrics": {"split": "test", **metrics},
        **provenance(argv),
    }
    head = finetuned_head(result, checkpoint, model_arg, backbone.info.pooled_dim, metadata)
    head_path = save_head(head, out_dir / f"{stem}-head.safetensors")
    serve = f"aes-index --model {shlex.quote(model_arg)} --pretrained {shlex.quote(str(checkpoint))} --head {shlex.quote(str(head_path))} rebuild"
    from .evaluate import format_table

    text = f"{format_table([(f'fine-tuned (test)', metrics)])}\ncheckpoint {checkpoint}\nhead       {head_path}\nuse it:    {serve}"
    out.result({"checkpoint": str(checkpoint), "head": str(head_path), "model": model_arg, "metrics": metrics,
                "history": result.history, "serve": serve}, text)
    return ExitCode.OK


def cmd_evaluate(args, argv) -> int:
    from aes_index.model.heads import check_compatible

    from .data import load_examples
    from .evaluate import evaluate_head, format_table, threshold_for

    out = Reporter(args)
    table = ava.read_ava(args.ava)
    cache = open_cache(args.cache)
    examples = load_examples(table, cache)
    split = split_for(args, examples.ids)
    info, projection = cache.info, cache.projection
    part = {"test": split.test, "train": split.train, "val": split.val}[args.split]
    rows, data = [], {}
    for head in heads_to_evaluate(args.head, info.key):
        check_compatible(head, info.key, info.pooled_dim, info.embed_dim)
        threshold = threshold_for(head, examples.subset(split.training), projection)
        metrics = evaluate_head(head, examples.subset(part), projection, threshold)
        rows.append((f"{head.name} ({args.split})", metrics))
        data[head.name] = {"split": args.split, **metrics}
        published = (head.metadata.get("published") or {}).get("ava")
        if published:  # what its authors (or others) reported, beside what we measured
            rows.append((f"published: {head.name}", published))
    out.result(data, format_table(rows))
    return ExitCode.OK


def heads_to_evaluate(specs: list[str], backbone_key: str) -> list:
    """Heads named by file, by shipped name, or `shipped` (all shipped for this backbone)."""
    from aes_index.errors import HeadError
    from aes_index.model.heads import head_named, shipped_heads

    chosen = []
    for spec in specs:
        if spec != "shipped":
            chosen.append(head_named(spec))
            continue
        matching = [head for head in shipped_heads() if head.backbone == backbone_key]
        if not matching:
            shipped = ", ".join(f"{h.name} ({h.backbone})" for h in shipped_heads()) or "none"
            raise HeadError(f"aes-index ships no head for {backbone_key}, the cache's backbone (shipped: {shipped})")
        chosen += matching
    return chosen


def cmd_export(args, argv) -> int:
    from .export import export_head

    out = Reporter(args)
    result = export_head(args.head, args.heads_dir, args.name)
    lines = [f"head       {result.head}", f"model card {result.card}"]
    if result.competing:
        lines.append(f"note: the folder has other heads for this backbone ({', '.join(result.competing)}); "
                     "aes-index picks the one with the best test SRCC")
    out.result({"head": str(result.head), "card": str(result.card), "competing": result.competing}, "\n".join(lines))
    return ExitCode.OK


def cmd_personal(args, argv) -> int:
    import numpy as np

    from aes_index.model.backbone import backbone_key, resolve_model_name
    from aes_index.errors import IndexUnavailable
    from aes_index.model.heads import save_head
    from aes_index.index.library import Library
    from aes_index.index.runner import choose_backbone

    from .personal import (
        PersonalConfig, collect_ratings, default_output, indexed_photos, personal_head, targets, train_personal,
    )

    out = Reporter(args)
    settings = settings_from(args, default_backbone=False)
    try:
        unrated = tuple(int(w) for w in _words(args.treat_as_unrated))
    except ValueError:
        raise ConfigError(f"--treat-as-unrated takes star values like 1 or 0,1; got {args.treat_as_unrated!r}") from None
    config = PersonalConfig(test_fraction=args.test_fraction, seed=args.seed, min_ratings=args.min_ratings,
                            include_rejects=not args.skip_rejects, treat_as_unrated=unrated)
    with Library.open(settings) as library:
        index, settings, db = library.index, library.settings, library.index.path
        model, pretrained, _ = choose_backbone(index, settings)  # the index's own, unless named
        key = backbone_key(resolve_model_name(model), pretrained)
        row = index.embeddings.backbone(key)
        if row is None:
            known = ", ".join(r["key"] for r in index.embeddings.backbones()) or "none"
            raise IndexUnavailable(f"the index has no embeddings from {key} (it has: {known}); pass its --model/--pretrained")
        photos = indexed_photos(index, row["id"])
        ratings, stars = targets(sorted(collect_ratings(index, photos, unrated=config.treat_as_unrated).values(), key=lambda r: r.image_id), config)
        out.log(f"{len(ratings)} of {len(photos)} embedded photos carry a rating of yours")
        wanted = [r.image_id for r in ratings]
        vectors = {}
        for ids, matrix, _ in index.embeddings.iter(row["id"], wanted):
            vectors.update(zip(ids.tolist(), matrix.astype(np.float32)))
        ids = np.array(wanted, dtype=np.int64)
        pooled = np.stack([vectors[i] for i in wanted]) if wanted else np.zeros((0, row["pooled_dim"]), np.float32)
        result = train_personal(ids, pooled, stars, config)
        metadata = {**provenance(argv), "index": str(db)}
        head = personal_head(result, key, row["pooled_dim"], ratings, config, metadata)
    path = save_head(head, args.out or default_output(key))
    m = result.metrics
    srcc = "n/a" if m["srcc"] is None else f"{m['srcc']:.3f}"
    text = (f"personal head: SRCC {srcc} on {m['n']} held-out photos ({len(ratings)} rated in all)\n"
            f"head written to {path}\nuse it:  aes-index rescore --head {shlex.quote(str(path))}")
    out.result({"head": str(path), "metrics": m, "ratings": len(ratings), "data": head.metadata["data"]}, text)
    return ExitCode.OK


def cmd_distort(args, argv) -> int:
    from aes_index.model.heads import save_head

    from .distort import DistortConfig, embed_versions, parse_distortions
    from .ranking import RankConfig, ranking_head, split_photos, train_and_measure

    out = Reporter(args)
    distort_config = DistortConfig(parse_distortions(args.distortions), args.levels, args.seed)
    rank_config = RankConfig(
        loss=args.loss, margin=args.margin, lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch_size,
        max_epochs=args.max_epochs, patience=args.patience, seed=args.seed,
        test_fraction=args.test_fraction, val_fraction=args.val_fraction,
    )
    if args.personal_out and args.from_index is None:
        raise ConfigError("--personal-out needs --from-index: the ratings it learns from are in the index")
    photos, data, rated, personal_config = _good_photos(args, out)
    # Too few photos or ratings fail now, not after embedding (the split made then differs
    # from this one only if some photos cannot be decoded).
    planned = split_photos([p.key for p in photos], rank_config)
    if args.personal_out:
        _check_enough_ratings(rated, _parts_of(rated, planned, rank_config), personal_config)

    backbone = load_model(args)
    batch = args.embed_batch or (256 if backbone.device.type == "cuda" else 32)
    out.log(f"embedding {len(photos)} photos x {len(distort_config.distortions) * distort_config.levels + 1} versions with {backbone.key}")
    versions = embed_versions(backbone, photos, distort_config, batch, args.save_images,
                              on_photo=lambda n: out.log(f"{n} of {len(photos)} photos embedded") if n % 50 == 0 else None)
    for _, reason in versions.failed:
        out.log(f"skipped: {reason}")

    # The split that counts is of the photos that decoded: a failure can't leave a part empty.
    parts = split_photos(versions.photo, rank_config)
    if rated is not None:
        parts = _parts_of(rated, parts, rank_config)
    outcome = train_and_measure(rank_config, versions, parts, out.log)
    name = args.name or f"distort-rank-{slug(backbone.key)}"
    metadata = {
        "config": {"distort": distort_config.as_dict(), "rank": rank_config.as_dict()},
        "data": {**data, "embedded": sum(outcome.split.values()), "failed_to_decode": len(versions.failed),
                 "versions": len(versions), "preprocess": backbone.info.preprocess.describe()},
        "split": {"method": "seeded-hash of photos, lowest hashes", "seed": args.seed, **outcome.split},
        "val_metrics": outcome.val_metrics,
        **provenance(argv),
    }
    head = ranking_head(name, outcome.result, outcome.training_originals, backbone.key, metadata)
    metrics = dict(outcome.metrics)
    if rated is not None:
        metrics.update(_srcc_against_ratings(head, rated, parts))
    head = with_metadata(head, metrics=metrics)
    path = save_head(head, args.out or f"{slug(name)}.safetensors")

    lines = _distort_summary(metrics, path)
    result = {"head": str(path), "name": name, "metrics": metrics, "history": outcome.result.history,
              "failed": [{"path": p.path, "reason": r} for p, r in versions.failed]}
    if args.personal_out:
        personal_path, personal_metrics = _warm_personal(args, argv, head, rated, parts, personal_config)
        lines += _warm_summary(personal_metrics, personal_path)
        result["personal"] = {"head": str(personal_path), "metrics": personal_metrics}
    out.result(result, "\n".join(lines))
    return ExitCode.FILE_ERRORS if versions.failed else ExitCode.OK


def _good_photos(args, out):
    """(photos, data description, RatedPhotos or None, PersonalConfig or None)."""
    from .distort import folder_photos

    if args.images is not None:
        photos = folder_photos(Path(args.images).expanduser())
        return photos, {"source": "folder", "folder": Path(args.images).name, "photos": len(photos)}, None, None
    rated, personal_config, db = _rated_library(args)
    photos = rated.good(args.min_stars)
    out.log(f"{len(photos)} photos rated {args.min_stars} stars or more, of {len(rated)} rated photos in {db}")
    data = {"source": "your aes-index library", "min_stars": args.min_stars, "photos": len(photos), "rated": len(rated)}
    return photos, data, rated, personal_config


def _rated_library(args):
    """(RatedPhotos, PersonalConfig, db path) of the index --from-index names."""
    from aes_index.index.library import Library
    from aes_index.model.backbone import backbone_key, resolve_model_name

    from .distort import rated_photos
    from .personal import PersonalConfig

    try:
        unrated = tuple(int(w) for w in _words(args.treat_as_unrated))
    except ValueError:
        raise ConfigError(f"--treat-as-unrated takes star values like 1 or 0,1; got {args.treat_as_unrated!r}") from None
    config = PersonalConfig(seed=args.seed, treat_as_unrated=unrated)
    settings = settings_from(args)
    key = backbone_key(resolve_model_name(settings.model), settings.pretrained)
    with Library.open(settings.replace(db=args.from_index)) as library:
        return rated_photos(library.index, key, config), config, library.index.path


def _parts_of(rated, good_parts: dict, config) -> dict:
    """The good photos' parts, and parts for the other rated photos, split on their own
    (stratified): their test part joins the good test photos to measure SRCC on photos
    the trainer never saw."""
    import numpy as np

    from .ranking import assign_parts

    rest = np.array([int(i) for i in rated.ids if int(i) not in good_parts], dtype=np.int64)
    if len(rest) == 0:
        return dict(good_parts)
    rest_parts = assign_parts(rest, config.test_fraction, config.val_fraction, config.seed)
    return {**dict(zip(rest.tolist(), rest_parts.tolist())), **good_parts}


def _test_mask(rated, parts: dict):
    import numpy as np

    return np.array([parts.get(int(i)) == "test" for i in rated.ids], dtype=bool)


def _srcc_against_ratings(head, rated, parts: dict) -> dict:
    """SRCC of the head's scores and your stars, on held-out photos only."""
    import numpy as np

    from .metrics import spearman

    test = _test_mask(rated, parts)
    srcc = spearman(head.predict(rated.pooled[test], None).score, rated.stars[test]) if test.sum() > 1 else float("nan")
    return {"srcc": None if np.isnan(srcc) else round(float(srcc), 4), "srcc_photos": int(test.sum())}


def _check_enough_ratings(rated, parts: dict, config) -> None:
    """Before the long part: will the ratings be enough for --personal-out?"""
    import numpy as np

    from .errors import NotEnoughData

    fit = ~_test_mask(rated, parts)
    if fit.sum() < max(config.folds, 5) or len(np.unique(rated.stars[fit])) < 2:
        raise NotEnoughData(
            f"{len(rated)} rated photos ({int(fit.sum())} to fit on) with {len(np.unique(rated.stars))} different ratings; "
            f"--personal-out needs at least {max(config.folds, 5)} to fit on, with two or more different star values"
        )


def _warm_personal(args, argv, prior_head, rated, parts: dict, config):
    from aes_index.model.heads import save_head

    from .warmstart import warm_head, warm_personal

    tensors, metrics, alpha = warm_personal(rated.pooled, rated.stars, _test_mask(rated, parts), prior_head, config)
    head = warm_head(tensors, metrics, alpha, prior_head, rated.pooled.shape[1], len(rated), provenance(argv))
    return save_head(head, args.personal_out), metrics


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _distort_summary(m: dict, path) -> list[str]:
    lines = [
        f"distortion ranking: pairwise accuracy {_fmt(m['pairwise_accuracy'])} on {m['pairs']} pairs of {m['photos']} held-out photos "
        f"(original vs distorted {_fmt(m['original_vs_distorted'])}, milder vs stronger {_fmt(m['milder_vs_stronger'])})",
        "  by distortion: " + ", ".join(f"{name} {_fmt(value)}" for name, value in m["by_distortion"].items()),
    ]
    if "srcc" in m:
        lines.append(f"  SRCC {_fmt(m['srcc'])} against your ratings of {m['srcc_photos']} held-out photos")
    lines += [f"head written to {path}", f"use it:  aes-index rescore --head {shlex.quote(str(path))}"]
    return lines


def _warm_summary(m: dict, path) -> list[str]:
    return [
        f"personal head started from it: SRCC {_fmt(m['srcc'])} on {m['n']} held-out rated photos "
        f"(distortion head alone {_fmt(m['srcc_prior_only'])}, ratings alone {_fmt(m['srcc_ratings_only'])})",
        f"head written to {path}",
        f"use it:  aes-index rescore --head {shlex.quote(str(path))}",
    ]


# --- entry point -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return run_reporting_errors("aes-train", lambda: args.handler(args, argv), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
