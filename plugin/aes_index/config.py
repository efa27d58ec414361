"""Settings: defaults < config file < environment < command line.

The config file is TOML (`$AES_INDEX_CONFIG`, else `$XDG_CONFIG_HOME/aes-index/config.toml`),
with the same keys as the fields below, e.g.::

    model = "ViT-L-14"
    pretrained = "openai"
    device = "cuda"

Environment variables are the upper-cased keys prefixed with AES_INDEX_ (AES_INDEX_MODEL, ...).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

DB_FILENAME = ".aes-index.db"
ENV_PREFIX = "AES_INDEX_"
DEFAULT_MODEL, DEFAULT_PRETRAINED = "ViT-B-32", "openai"

# Presets name a backbone by what it costs; the head stays `auto`, which is the best
# scorer on record for that backbone (heads.candidates): LAION v2 for ViT-L-14/openai, the
# paper's zero-shot ensemble for ViT-B-32/openai. Measured costs: README "Presets".
PRESETS = {
    "fast": ("ViT-B-32", "openai"),  # what a CPU affords
    "best": ("ViT-L-14", "openai"),  # about 12x fast's CPU time a photo, measured (README, bench_presets.py): for a GPU
}
AUTO_PRESET = "auto"  # best where a GPU (CUDA or Apple's MPS) runs the model, else fast
PRESET_NAMES = (*PRESETS, AUTO_PRESET)


@dataclass(frozen=True)
class Preset:
    name: str  # as asked: fast, best or auto
    chosen: str  # fast or best
    model: str
    pretrained: str
    reason: str

    @property
    def key(self) -> str:
        return f"{self.model}/{self.pretrained}"


@dataclass(frozen=True)
class Settings:
    # The backbone: None = not named, so commands use the one the index was built with
    # (indexer.choose_backbone), or DEFAULT_MODEL/DEFAULT_PRETRAINED for a new index.
    model: str | None = None  # open_clip model name, or a path to an open_clip model-config JSON
    pretrained: str | None = None  # open_clip tag, a local .safetensors/.pt file, or "random"
    # A backbone named by cost (PRESETS): fast | best | auto. A layer (file, environment,
    # command line) naming a preset overrides a lower layer's model and pretrained, and
    # the other way round (load_settings). None = not named: the index's backbone, or auto
    # for a new index.
    preset: str | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # auto | fp32 | fp16 | bf16
    head: str = "auto"  # auto | zeroshot[:MODE[:POS/NEG]] | path to a head .safetensors
    db: str | None = None  # index database; default: .aes-index.db at the library root
    batch_size: int = 0  # 0 = pick by device
    workers: int = -1  # decode processes; -1 = pick by core count, 0 = decode inline
    cache_dir: str | None = None  # where open_clip/Hugging Face weights are cached
    exclude: tuple[str, ...] = ()  # extra glob patterns of names to skip while scanning
    policy: str = "percentile"  # rating policy: percentile | threshold
    cuts: str | None = None  # four cut points for 2..5 stars, e.g. "10,35,70,95"
    reject_below: str | None = None  # optional: below this, reject (-1)
    target: str = "xmp"  # where ratings go: xmp | exif
    treat_as_unrated: str = ""  # ratings that count as "none", e.g. "1" for darktable's import default
    stable_seconds: float = 2.0  # a file modified more recently than this is still being written: not read yet
    # `aes-index learn` (features/taste): where a person's decisions are besides the files,
    # and whether the watcher learns again after this many new decisions (0: never, the default)
    darktable_library: str | None = None  # darktable's library.db, read-only
    digikam_database: str | None = None  # digiKam's digikam4.db, read-only
    learn_after: int = 0

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def config_file_path(env: Mapping[str, str] = os.environ) -> Path:
    if env.get(ENV_PREFIX + "CONFIG"):
        return Path(env[ENV_PREFIX + "CONFIG"])
    base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "aes-index" / "config.toml"


def user_cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    """aes-index's own cache folder, never inside a library: $AES_INDEX_CACHE_DIR (the
    `cache_dir` setting's variable), else $XDG_CACHE_HOME/aes-index, else ~/.cache/aes-index.
    Zero-shot heads keep their text embeddings under it, the review its images."""
    if env.get(ENV_PREFIX + "CACHE_DIR"):
        return Path(env[ENV_PREFIX + "CACHE_DIR"])
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aes-index"


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] = os.environ,
    config_path: Path | None = None,
) -> Settings:
    """Merge the four layers; `overrides` are the command-line values (None = not given)."""
    # A file the user named (--config, $AES_INDEX_CONFIG) must exist: a typo would otherwise
    # silently run with the defaults. The default path may well be absent.
    named = config_path is not None or bool(env.get(ENV_PREFIX + "CONFIG"))
    command_line = dict(overrides or {})
    for key, value in command_line.items():
        _check_range(key, value, "--" + key.replace("_", "-"))
    layers = (
        (_read_config_file(config_path or config_file_path(env), must_exist=named), f"config file {config_path or config_file_path(env)}"),
        (_read_env(env), "the environment"),
        (command_line, "the command line"),
    )
    settings = Settings()
    for values, source in layers:
        settings = _apply_layer(settings, values, source)
    return settings


def _apply_layer(settings: Settings, values: Mapping[str, Any], source: str) -> Settings:
    """One layer over the ones below it. A preset and a model/pretrained both name the
    backbone: the higher layer's naming replaces the lower one's whole (a config file's
    `model` must not survive under `--preset best`, nor a config `preset` under `--model`)."""
    given = {key: value for key, value in values.items() if value is not None}
    backbone = [key for key in ("model", "pretrained") if key in given]
    if "preset" in given:
        if given["preset"] not in PRESET_NAMES:
            raise ConfigError(f"unknown preset {given['preset']!r} in {source}: use {', '.join(PRESET_NAMES)}")
        if backbone:
            raise ConfigError(f"{source} names both a preset and {backbone[0]}: a preset is a model and its weights; give one or the other")
        settings = dataclasses.replace(settings, model=None, pretrained=None)
    elif backbone:
        settings = dataclasses.replace(settings, preset=None)
    return settings.replace(**given)


# Smallest value each number may take, and how to say what it takes.
MINIMUMS = {
    "batch_size": (0, "1 or more, or 0 to pick by device"),
    "workers": (-1, "0 or more (0 = decode inline), or auto"),
    "learn_after": (0, "0 (never) or the number of new decisions after which the watcher learns again"),
}


def _check_range(key: str, value: Any, source: str) -> None:
    if key in MINIMUMS and isinstance(value, int) and value < MINIMUMS[key][0]:
        raise ConfigError(f"{source} must be {MINIMUMS[key][1]}, not {value}")


def parse_workers(value: Any, source: str) -> int:
    """Decode processes: a count, or "auto" (-1: by core count)."""
    if str(value).strip().lower() == "auto":
        return -1
    try:
        workers = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source} must be {MINIMUMS['workers'][1]}, not {value!r}") from None
    _check_range("workers", workers, source)
    return workers


def _read_config_file(path: Path, must_exist: bool = False) -> dict[str, Any]:
    if not path.is_file():
        if must_exist:
            raise ConfigError(f"config file {path} is a folder" if path.is_dir() else f"config file {path} does not exist")
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    data = data.get("aes-index", data)  # a [aes-index] table is allowed, not required
    return {key: _coerce(key, value, f"config file {path}") for key, value in data.items()}


def _read_env(env: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for field in fields(Settings):
        raw = env.get(ENV_PREFIX + field.name.upper())
        if raw not in (None, ""):
            values[field.name] = _coerce(field.name, raw, ENV_PREFIX + field.name.upper())
    return values


def _coerce(key: str, value: Any, source: str) -> Any:
    types = {f.name: f.type for f in fields(Settings)}
    if key not in types:
        raise ConfigError(f"unknown setting {key!r} in {source}; known: {', '.join(types)}")
    kind = types[key]
    if key == "workers":
        return parse_workers(value, f"{key} in {source}")
    try:
        if kind == "str | None":
            return None if value is None else str(value)
        if kind == "int":
            number = int(value)
            _check_range(key, number, f"{key} in {source}")
            return number
        if kind == "float":
            return float(value)
        if kind.startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else value
            return tuple(str(item).strip() for item in items if str(item).strip())
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {key!r} in {source} must be {kind}, got {value!r}") from exc
