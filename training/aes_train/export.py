"""`aes-train export`: a head and its model card into aes-index's shipped heads folder.

aes-index picks a shipped head by itself when the head's backbone is the one in use
(head_choice.resolve_head "auto"; the best test SRCC wins if several match) and `aes-index
doctor` names it. The model card beside it says what the head was trained on, how it
was split and measured, and how to make it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from aes_index.errors import HeadError
from aes_index.model.heads import Head, load_head, save_head, shipped_heads_dir

from .evaluate import format_table


@dataclass
class ExportResult:
    head: Path
    card: Path
    competing: list[str]  # other heads in the folder for the same backbone


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "head"


def export_head(source: str | Path, heads_dir: str | Path | None = None, name: str | None = None) -> ExportResult:
    head = load_head(source)
    srcc = (head.metadata.get("metrics") or {}).get("srcc")
    if not isinstance(srcc, (int, float)):
        # aes-index ranks the shipped heads of one backbone by this number
        raise HeadError(f"{head.name} has no test SRCC in its metadata; shipped heads need one (train it with aes-train)")
    if name:
        head = Head({**head.metadata, "name": name}, head.tensors)
    folder = Path(heads_dir).expanduser() if heads_dir else shipped_heads_dir()
    target = folder / f"{slug(head.name)}.safetensors"
    competing = _competing(folder, head, target)
    save_head(head, target)
    readable_by_all(target)
    card = target.with_suffix(".md")
    card.write_text(model_card(load_head(target), target), encoding="utf-8")
    return ExportResult(target, card, competing)


def readable_by_all(path: Path) -> None:
    """safetensors writes its files 0600; a head shipped in a package (or a checkpoint
    shared on a machine) must be readable by every user, as the umask allows."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _competing(folder: Path, head: Head, target: Path) -> list[str]:
    names = []
    for path in sorted(folder.glob("*.safetensors")):
        if path.resolve() == target.resolve():
            continue
        try:
            other = load_head(path)
        except Exception:  # a broken file is aes-index's to report, not ours
            continue
        if other.backbone == head.backbone:
            names.append(path.name)
    return names


def model_card(head: Head, path: Path) -> str:
    """Markdown: what the head is, what it was trained on, how good it is, how to rebuild it."""
    meta = head.metadata
    metrics = meta.get("metrics") or {}
    lines = [
        f"# {head.name}",
        "",
        f"An aes-index **{head.kind}** head for the backbone `{head.backbone}`, reading "
        f"{meta.get('input_space')} image features ({meta.get('input_dim')}-d). "
        f"Scores: {meta.get('score_scale', 'see metadata')}.",
        "",
        "## Use",
        "",
        "aes-index uses this head automatically when its backbone is the one configured;",
        "`aes-index doctor` names it. To use it explicitly:",
        "",
        "```",
        f"aes-index rescore --head {path.name}",
        "```",
        "",
        "## Data",
        "",
        *_table(meta.get("data") or {"(not recorded)": ""}),
        "",
        "## Split",
        "",
        *_table(meta.get("split") or {"(not recorded)": ""}),
        "",
        "## Metrics",
        "",
        f"On the {metrics.get('split', 'test')} split (accuracy at the head's threshold "
        f"{metrics.get('threshold', meta.get('threshold', 5.0))}), beside the paper's Table 1 (ViT-B/32, AVA):",
        "",
        "```",
        format_table([(head.name, metrics)]) if metrics else "(no metrics recorded)",
        "```",
        "",
        "## Training",
        "",
        f"Command: `{meta.get('command', '(not recorded)')}`",
        "",
        "```json",
        json.dumps({k: meta[k] for k in ("config", "selection", "history") if k in meta}, indent=1, default=str)[:6000],
        "```",
        "",
        "## File",
        "",
        f"- head hash (aes-index provenance): `{head.hash}`",
        f"- sha256 of {path.name}: `{hashlib.sha256(path.read_bytes()).hexdigest()}`",
        f"- made by aes-train {meta.get('aes_train_version', '')} on {meta.get('created', '(date not recorded)')}",
        "",
        "Method: Hentschel, Kobs, Hotho 2022, *CLIP knows image aesthetics*; NIMA's EMD loss "
        "(Talebi & Milanfar 2018). Data: AVA (Murray, Marchesotti, Perronnin 2012).",
        "",
    ]
    return "\n".join(lines)


def _table(values: dict) -> list[str]:
    rows = ["| | |", "|---|---|"]
    rows += [f"| {key} | {json.dumps(value) if isinstance(value, (dict, list)) else value} |" for key, value in values.items()]
    return rows
