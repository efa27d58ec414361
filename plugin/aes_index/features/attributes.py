"""Attribute scores: composition, lighting, colour, sharpness, exposure, subject interest.

Where one aesthetic score says "how good", attributes say "good at what" (Huang et al.,
AesNet: multi-attribute aesthetic descriptions learned by text-image contrast). Each
attribute is a head over the cached embeddings, so computing them for an indexed library
decodes nothing. By default each is a zero-shot prompt pair (Eq. 1 with one averaged
positive and one averaged negative description); a trained head for an attribute (any
head file, e.g. from aes-train) can replace it.

Attribute heads are ordinary heads: their scores live in the scores table with the same
provenance, named "attribute-<name>-...", and never become the library's active head.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from ..errors import ConfigError
from ..model.heads import Head, check_compatible, load_head, save_head
from ..model.zeroshot import cached_head_path


@dataclass(frozen=True)
class Attribute:
    name: str
    positive: tuple[str, ...]  # descriptions of a photo that has it
    negative: tuple[str, ...]  # ... and of one that lacks it
    tag: str  # tag for photos at the top of the library in this attribute


ATTRIBUTES = {
    a.name: a
    for a in (
        Attribute(
            "composition",
            ("a photo with excellent composition", "a well composed photograph", "a photo with balanced framing"),
            ("a photo with poor composition", "a badly composed photograph", "a photo with awkward, cluttered framing"),
            "well composed",
        ),
        Attribute(
            "lighting",
            ("a photo with beautiful lighting", "a beautifully lit photograph", "a photo in soft, golden light"),
            ("a photo with bad lighting", "a poorly lit photograph", "a photo in harsh, flat light"),
            "beautiful light",
        ),
        Attribute(
            "colour",
            ("a photo with vivid, harmonious colours", "a colourful photograph with pleasing colours"),
            ("a photo with dull, washed out colours", "a photograph with ugly, clashing colours"),
            "colourful",
        ),
        Attribute(
            "sharpness",
            ("a sharp photo, in focus", "a crisp photograph with fine detail"),
            ("a blurry photo, out of focus", "a photograph with motion blur and camera shake"),
            "sharp",
        ),
        Attribute(
            "exposure",
            ("a well exposed photo", "a photograph with balanced exposure and rich tones"),
            ("an overexposed photo with blown highlights", "an underexposed, too dark photograph"),
            "well exposed",
        ),
        Attribute(
            "subject",
            ("a photo of a fascinating subject", "a captivating photograph that tells a story"),
            ("a photo of a boring subject", "a dull, forgettable snapshot"),
            "interesting subject",
        ),
    )
}
TAG_TOP_PERCENT = 20.0  # photos in the library's top 20% for an attribute get its tag


def attribute_head_name(name: str) -> str:
    return f"attribute-{name}-zeroshot"


def parse_names(text: str | None) -> list[str]:
    names = list(ATTRIBUTES) if not text else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ATTRIBUTES]
    if unknown:
        raise ConfigError(f"unknown attribute {unknown[0]!r}; known: {', '.join(ATTRIBUTES)}")
    return names


def build_attribute_head(backbone, attribute: Attribute) -> Head:
    """One averaged, normalised text vector per side: score = cos(I, P) - cos(I, N)."""
    sides = [backbone.encode_text(list(attribute.positive)), backbone.encode_text(list(attribute.negative))]
    prompts = np.stack([_unit(side.mean(axis=0)) for side in sides]).astype(np.float32)
    metadata = {
        "name": attribute_head_name(attribute.name),
        "kind": "zeroshot",
        "mode": "prompts",
        "attribute": attribute.name,
        "positive": list(attribute.positive),
        "negative": list(attribute.negative),
        "backbone": backbone.key,
        "input_space": "projected",
        "input_dim": backbone.info.embed_dim,
        "source": "zero-shot attribute descriptions (after Huang et al., AesNet)",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return Head(metadata, {"prompts": prompts, "weights": np.array([1.0, -1.0], np.float32)})


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def attribute_head(name: str, backbone_key: str, load_backbone, override: str | None = None) -> Head:
    """The head for one attribute: a trained file if given, else the cached zero-shot one."""
    if override:
        head = load_head(override)
        head.metadata.setdefault("attribute", name)
        return head
    path = cached_head_path(backbone_key, attribute_head_name(name))
    if path.is_file():
        head = load_head(path)
        if head.backbone == backbone_key and head.metadata.get("positive") == list(ATTRIBUTES[name].positive):
            return head
    head = build_attribute_head(load_backbone(), ATTRIBUTES[name])
    save_head(head, path)
    return head


def compute_attributes(
    index, session, names: list[str], overrides: dict[str, str] | None = None, lock_timeout: float | None = None
) -> dict[str, int]:
    """Score every cached embedding with each attribute head: {attribute: photos scored}.

    Holds the writer lock: a rebuild or the watcher must not store embeddings under us."""
    from ..index.runner import score_stale
    from ..index.locks import writer_lock

    overrides = overrides or {}
    counts = {}
    with writer_lock(index.path, lock_timeout):
        for name in names:
            head = attribute_head(name, session.key, lambda: session.model, overrides.get(name))
            check_compatible(head, session.key, session.info.pooled_dim, session.info.embed_dim)
            index.scores.record_head(head)
            counts[name] = score_stale(index, session, head)
    return counts


def attribute_scores(index, image_id: int) -> dict[str, float]:
    """{attribute: score} stored for one photo."""
    return {meta.get("attribute"): score for meta, score in index.scores.of_image(image_id, "attribute-")}


def head_id_for(index, name: str) -> str:
    """The head whose scores `top --by NAME` lists: the attribute's most recently used head."""
    parse_names(name)
    for head_id, meta in index.scores.heads_latest_first():
        if meta.get("attribute") == name:
            return head_id
    raise ConfigError(f"no {name} scores yet: run `aes-index attributes`")


def attribute_tags(index, names: list[str], top_percent: float = TAG_TOP_PERCENT) -> dict[int, list[str]]:
    """{image_id: [tags]} for photos in the library's top `top_percent` of each attribute."""
    from .stars import percentile_ranks

    tags: dict[int, list[str]] = {}
    for name in names:
        rows = index.scores.ranked(head_id_for(index, name))
        if not rows:
            continue
        ranks = percentile_ranks(np.array([r["score"] for r in rows]))
        for row, rank in zip(rows, ranks):
            if rank >= 100.0 - top_percent:
                tags.setdefault(row["image_id"], []).append(ATTRIBUTES[name].tag)
    return tags
