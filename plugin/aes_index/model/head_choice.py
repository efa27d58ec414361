"""Which head scores: the one a spec names ("auto", "zeroshot[...]", a shipped head's
name, a file), for a backbone (`resolve_head`), or whose scores the index already holds
(`scored_head_id`). Above heads and zeroshot, which it chooses between."""

from __future__ import annotations

from ..errors import AesIndexError, NothingScored
from . import zeroshot
from .heads import DEFAULT_ZEROSHOT, Head, head_named, load_head, shipped_head_for

# The index's meta key of this library's personal head (features/taste: `aes-index learn`).
PERSONAL_META = "personal_head"


def resolve_head(spec: str, backbone_key: str, load_backbone, index=None) -> Head:
    """Pick the head named by `spec` ("auto", "zeroshot[...]" or a file) for a backbone.

    "auto" is this library's personal head where `aes-index learn` adopted one (`index`
    given), else the head shipped for this backbone, else the paper's default zero-shot
    ensemble. `load_backbone` is called only if a zero-shot head must be built.
    """
    if spec in ("auto", "", None):
        personal = adopted_head(index, backbone_key)[0] if index is not None else None
        if personal is not None:
            return personal
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


def adopted_head(index, backbone_key: str) -> tuple[Head | None, str]:
    """This library's adopted personal head for the backbone, or None, and why in a line
    (for `doctor` and `stats`). A head file gone or changed since it was adopted is not
    used: `--head auto` falls back to the shipped head and says so."""
    record = index.get_meta(PERSONAL_META)
    if not record:
        return None, "no personal head learned for this library (`aes-index learn`)"
    if record.get("backbone") != backbone_key:
        return None, f"the personal head was learned for {record.get('backbone')}, not {backbone_key}"
    if not record.get("adopted"):
        return None, f"personal head {record.get('path')} not adopted: {record.get('reason')}"
    try:
        head = load_head(record["path"])
    except AesIndexError as exc:
        return None, f"the adopted personal head cannot be used ({exc}); the shipped head scores"
    if head.hash != record.get("hash"):
        return None, f"the adopted personal head {record['path']} changed since it was adopted; the shipped head scores"
    return head, f"personal head adopted by `aes-index learn`: {record.get('reason')}"
