"""`aes-index doctor`: is everything in place to score? Checks, never downloads."""

from __future__ import annotations

from pathlib import Path

from ..config import Settings
from ..errors import AesIndexError, ExitCode, IndexUnavailable
from ..model.presets import with_default_backbone

SCORING_CHECKS = ("device", "weights", "head")


def diagnose(settings: Settings, db_path: Path, list_models: bool = False) -> dict:
    try:
        settings = _backbone_named(settings, db_path)
    except AesIndexError as exc:  # several backbones in the index and none named
        failed = _check("weights", False, str(exc))
        checks = [_check_environment(settings), failed, _check("head", False, str(exc)), _check_index(db_path)]
    else:
        checks = [_check_environment(settings), _check_weights(settings), _check_head(settings, db_path), _check_index(db_path)]
    report = {"ok": all(c["ok"] for c in checks if c["required"]), "checks": checks}
    if list_models:
        import open_clip

        report["models"] = open_clip.list_models()
    return report


def exit_code(report: dict) -> int:
    """4 when something scoring needs fails (device, weights, head), else 5 when the index
    does, else 0: a script can tell "fix the model" from "fix the index"."""
    failed = {check["name"] for check in report["checks"] if check["required"] and not check["ok"]}
    if failed & set(SCORING_CHECKS):
        return ExitCode.WEIGHTS
    return ExitCode.INDEX if failed else ExitCode.OK


def _backbone_named(settings: Settings, db_path: Path) -> Settings:
    """Settings naming the backbone the commands would use: the index's if not named."""
    if settings.model and settings.pretrained or not db_path.is_file():
        return with_default_backbone(settings, "auto")  # what a first rebuild would use
    from ..index.runner import choose_backbone
    from ..index.store import Index

    try:
        with Index(db_path, read_only=True) as index:
            model, pretrained, _ = choose_backbone(index, settings)
    except IndexUnavailable:  # the index check reports it; weights are checked for the default
        return with_default_backbone(settings, "auto")
    return settings.replace(model=model, pretrained=pretrained)


def _check(name: str, ok: bool, detail: str, required: bool = True, **facts) -> dict:
    return {"name": name, "ok": ok, "detail": detail, "required": required, **facts}


def _check_environment(settings: Settings) -> dict:
    from ..model.backbone import describe_environment, dtype_name, resolve_device, resolve_dtype

    try:
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
    except AesIndexError as exc:
        return _check("device", False, str(exc))
    facts = describe_environment()
    detail = f"{device} {dtype_name(dtype)} (torch {facts['torch']}, open_clip {facts['open_clip']}, {facts['threads']} threads)"
    return _check("device", True, detail, device=str(device), dtype=dtype_name(dtype), **facts)


def _check_weights(settings: Settings) -> dict:
    from ..model.backbone import RANDOM_WEIGHTS, backbone_key, resolve_model_name, weights_path

    try:
        model = resolve_model_name(settings.model)
        key = backbone_key(model, settings.pretrained)
        if settings.pretrained == RANDOM_WEIGHTS:
            return _check("weights", True, f"{key}: random weights (benchmarks only)", backbone=key)
        path = weights_path(model, settings.pretrained, settings.cache_dir, offline=True)
        return _check("weights", True, f"{key}: {path}", backbone=key, path=path)
    except AesIndexError as exc:
        return _check("weights", False, str(exc))


def _personal_head(db_path: Path | None, key: str):
    """(head, why) where this library adopted a personal head (`aes-index learn`), else None."""
    from ..index.store import Index
    from ..model.head_choice import adopted_head

    if db_path is None or not db_path.is_file():
        return None
    try:
        with Index(db_path, read_only=True) as index:
            head, why = adopted_head(index, key)
    except AesIndexError:  # the index check reports what is wrong with it
        return None
    return None if head is None else (head, why)


def _check_head(settings: Settings, db_path: Path | None = None) -> dict:
    from ..model.backbone import backbone_key, resolve_model_name
    from ..model.heads import DEFAULT_ZEROSHOT, default_reason, head_named, shipped_head_for
    from ..model.zeroshot import cached_head_path, head_name, parse_spec

    try:
        key = backbone_key(resolve_model_name(settings.model), settings.pretrained)
        spec = settings.head or "auto"
        why = {}
        if spec == "auto":
            personal = _personal_head(db_path, key)
            if personal is not None:
                head, reason = personal
                detail = f"{head.name} (learned from your decisions, {head.path}, scores {head.scale.short}): {reason}"
                return _check("head", True, detail, head=head.name, scale=head.scale.as_dict(), why=reason)
            # which scorer, and why: the best AVA figure on record for this backbone
            why = {"why": default_reason(key)}
            shipped = shipped_head_for(key)
            if shipped is not None:
                detail = f"{shipped.name} (shipped for {key}, {shipped.path.name}, scores {shipped.scale.short}): {why['why']}"
                return _check("head", True, detail, head=shipped.name, scale=shipped.scale.as_dict(), **why)
            spec = DEFAULT_ZEROSHOT
        if spec.startswith("zeroshot"):
            name = head_name(*parse_spec(spec))
            cached = cached_head_path(key, name)
            state = f"cached at {cached}" if cached.is_file() else "built from the text encoder on first use"
            detail = f"{name} (zero-shot, {state})" + (f": {why['why']}" if why else "")
            return _check("head", True, detail, head=name, **why)
        head = head_named(spec)
        detail = f"{head.name} ({head.kind}, made for {head.backbone}, scores {head.scale.short})"
        return _check("head", head.backbone == key, detail, head=head.name, scale=head.scale.as_dict())
    except AesIndexError as exc:
        return _check("head", False, str(exc))


def _check_index(db_path: Path) -> dict:
    from ..index.freshness import Freshness, stale_line
    from ..index.store import INDEX_PROBLEMS, Index

    if not db_path.is_file():
        return _check("index", True, f"none yet at {db_path} (created by `aes-index rebuild`)", required=False)
    try:
        # Read-only: doctor changes nothing, not even an index that needs an upgrade.
        with Index(db_path, read_only=True) as index:
            health = index.integrity()  # every page, whatever the size: doctor is the full check
            if health != "ok":
                return _check("index", False, INDEX_PROBLEMS["SQLITE_CORRUPT"].format(path=db_path, error=health))
            counts = index.images.status_counts()
            detail = f"{db_path}: schema {index.schema_version()}, integrity {health}, " + (
                ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "empty"
            )
            stale = Freshness(index).stale_indexed()  # a library in use changes: told, not failed
            if stale:
                detail += "; " + stale_line(len(stale.changed), len(stale.gone))
            return _check("index", True, detail, images=counts, **stale.counts())
    except AesIndexError as exc:  # damaged beyond checking, not an index, too old, locked
        return _check("index", False, str(exc))
