"""Zero-shot aesthetic heads from CLIP's text encoder (Hentschel, Kobs, Hotho 2022).

Three ways to build the text side, all scored with Eq. 1 (heads._predict_zeroshot):
  fixed     one prompt per adjective: "a {adj} picture"
  ensemble  per adjective, the mean of its 1000 context prompts "a {adj} picture, of a {cls}"
            over the ImageNet class names: one vector per adjective, 2 comparisons per image
  context   the 1000 context prompts kept apart; each image uses its own best class

The default is the paper's best ranking pair, ensemble "outstanding" / "horrible". Built
heads are cached per backbone, so the text encoder runs once per backbone and head.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..config import user_cache_dir
from ..errors import ConfigError
from ..paths import printable
from .heads import Head, load_head, save_head

MODES = ("fixed", "ensemble", "context")
DEFAULT_MODE = "ensemble"
DEFAULT_POSITIVE = ("outstanding",)
DEFAULT_NEGATIVE = ("horrible",)
FIXED_TEMPLATE = "a {adj} picture"
CONTEXT_TEMPLATE = "a {adj} picture, of a {cls}"
CLASS_TEMPLATE = "a picture, of a {cls}"

# WordNet synonyms of "great" plus "beautiful" and "pretty" (27), and of "ugly" (12):
# the adjective pool of the paper's prompt search (aes-train prompts).
POSITIVE_ADJECTIVES = (
    "great", "outstanding", "bang-up", "bully", "corking", "cracking", "dandy", "groovy",
    "keen", "neat", "nifty", "not bad", "peachy", "slap-up", "swell", "smashing", "capital",
    "majuscule", "big", "large", "heavy", "expectant", "gravid", "enceinte", "with child",
    "beautiful", "pretty",
)
NEGATIVE_ADJECTIVES = (
    "ugly", "unsightly", "despicable", "vile", "slimy", "unworthy", "worthless", "wretched",
    "atrocious", "frightful", "horrifying", "horrible",
)


def imagenet_classes() -> list[str]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def parse_spec(spec: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """"zeroshot[:MODE[:POS,POS/NEG,NEG]]" -> (mode, positives, negatives)."""
    parts = spec.split(":", 2)
    if parts[0] != "zeroshot":
        raise ConfigError(f"not a zero-shot head spec: {spec!r}")
    mode = parts[1] if len(parts) > 1 and parts[1] else DEFAULT_MODE
    if mode not in MODES:
        raise ConfigError(f"zero-shot mode must be one of {', '.join(MODES)}, got {mode!r}")
    positive, negative = DEFAULT_POSITIVE, DEFAULT_NEGATIVE
    if len(parts) == 3:
        if parts[2].count("/") != 1:
            raise ConfigError(f"zero-shot adjectives must be POS/NEG (commas between several), got {parts[2]!r}")
        pos_text, neg_text = parts[2].split("/")
        positive = tuple(a.strip() for a in pos_text.split(",") if a.strip())
        negative = tuple(a.strip() for a in neg_text.split(",") if a.strip())
        if not positive and not negative:
            raise ConfigError("zero-shot head needs at least one adjective")
    return mode, positive, negative


def head_name(mode: str, positive: tuple[str, ...], negative: tuple[str, ...]) -> str:
    def words(items):
        return "+".join(re.sub(r"[^a-z0-9]+", "_", a.lower()) for a in items) or "none"

    return f"zeroshot-{mode}-{words(positive)}-vs-{words(negative)}"


def build_zeroshot_head(backbone, mode: str, positive, negative) -> Head:
    """Encode the prompts with the backbone's text tower into a zero-shot head."""
    adjectives = list(positive) + list(negative)
    weights = np.array([1.0] * len(positive) + [-1.0] * len(negative), dtype=np.float32)
    tensors = {"weights": weights}
    if mode == "fixed":
        tensors["prompts"] = backbone.encode_text([FIXED_TEMPLATE.format(adj=a) for a in adjectives])
    else:
        classes = imagenet_classes()
        per_class = np.stack([_context_prompts(backbone, adj, classes) for adj in adjectives])  # (A, C, D)
        if mode == "ensemble":
            tensors["prompts"] = _normalise(per_class.mean(axis=1))
        else:
            tensors["prompts"] = per_class.reshape(len(adjectives) * len(classes), -1)
            tensors["classes"] = backbone.encode_text([CLASS_TEMPLATE.format(cls=c) for c in classes])
    metadata = {
        "name": head_name(mode, tuple(positive), tuple(negative)),
        "kind": "zeroshot",
        "mode": mode,
        "positive": list(positive),
        "negative": list(negative),
        "backbone": backbone.key,
        "input_space": "projected",
        "input_dim": backbone.info.embed_dim,
        "templates": {"fixed": FIXED_TEMPLATE, "context": CONTEXT_TEMPLATE, "class": CLASS_TEMPLATE},
        "source": "Hentschel, Kobs, Hotho 2022, CLIP knows image aesthetics, Eq. 1-2",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return Head(metadata, {k: v.astype(np.float32) for k, v in tensors.items()})


def _context_prompts(backbone, adjective: str, classes: list[str]) -> np.ndarray:
    return backbone.encode_text([CONTEXT_TEMPLATE.format(adj=adjective, cls=c) for c in classes])


def _normalise(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def cache_dir() -> Path:
    return user_cache_dir() / "heads"


def cached_head_path(backbone_key: str, name: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", backbone_key)
    return cache_dir() / slug / f"{name}.safetensors"


def zeroshot_head(spec: str, backbone_key: str, load_backbone) -> Head:
    """The zero-shot head for `spec`, from the cache or built (and cached) with the text tower.

    `load_backbone` is only called when the head must be built, so rescoring with a cached
    head never loads the model.
    """
    mode, positive, negative = parse_spec(spec)
    path = cached_head_path(backbone_key, head_name(mode, positive, negative))
    if path.is_file():
        head = load_head(path)
        if head.backbone == backbone_key:
            return head
    head = build_zeroshot_head(load_backbone(), mode, positive, negative)
    save_head(head, path)
    return head


# CLIP reads 77 tokens of text: a prompt made of longer adjectives is cut off, and the
# head's name (its cache file's name) would exceed what a file system allows.
MAX_ADJECTIVE_CHARS = 60


def check_spec(spec: str | None) -> None:
    """Refuse a --head zero-shot spec whose adjectives CLIP could not read whole, in one line."""
    if not spec or spec.split(":", 1)[0] != "zeroshot":
        return
    _, positive, negative = parse_spec(spec)
    for adjective in (*positive, *negative):
        if len(adjective) > MAX_ADJECTIVE_CHARS or not adjective.isprintable():
            shown = printable(adjective[:20]) + ("..." if len(adjective) > 20 else "")
            raise ConfigError(
                f"--head: zero-shot adjectives are short words (at most {MAX_ADJECTIVE_CHARS} printable characters each), "
                f"not {shown!r} ({len(adjective)} characters)"
            )
