"""Which head scores: the one a spec names ("auto", "zeroshot[...]", a shipped head's
name, a file), for a backbone (`resolve_head`), or whose scores the index already holds
(`scored_head_id`). Above heads and zeroshot, which it chooses between."""

from __future__ import annotations

from ..errors import NothingScored
from . import zeroshot
from .heads import DEFAULT_ZEROSHOT, Head, head_named, shipped_head_for


def resolve_head(spec: str, backbone_key: str, load_backbone) -> Head:
    """Pick the head named by `spec` ("auto", "zeroshot[...]" or a file) for a backbone.

    "auto" is the head shipped for this backbone, else the paper's default zero-shot
    ensemble. `load_backbone` is called only if a zero-shot head must be built.
    """
    if spec in ("auto", "", None):
        return shipped_head_for(backbone_key) or zeroshot.zeroshot_head(DEFAULT_ZEROSHOT, backbone_key, load_backbone)
    if spec.split(":", 1)[0] == "zeroshot":
        return zeroshot.zeroshot_head(spec, backbone_key, load_backbone)
    return head_named(spec)


def scored_head_id(index, spec: str | None = None) -> str:
    """Whose scores a command lists or rates: the head `spec` names (a head id the index
    lists, a zero-shot spec, a head file), else the head of the latest run that scored.
    The one place every command (top, report, apply-ratings, digikam sync) asks."""
    if spec in (None, "", "auto"):
        head_id = index.runs.active_head_id()
        if head_id is None:
            raise NothingScored()
        return head_id
    if spec in {head["id"] for head in index.scores.scored_heads()}:
        return spec
    if spec.startswith("zeroshot"):
        return zeroshot.head_name(*zeroshot.parse_spec(spec))
    return head_named(spec).name
