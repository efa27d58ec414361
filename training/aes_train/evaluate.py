"""`aes-train evaluate`: a head's metrics on the test split, beside the paper's Table 1.

Scores come from aes_index's own Head.predict over the cached vectors: what is measured
here is what a library gets. Zero-shot scores are cosine differences, not AVA scores, so
their accuracy cut is the one chosen on the training split (stored in the head by
`aes-train prompts`); trained heads predict on AVA's scale and are cut at 5.
"""

from __future__ import annotations

import numpy as np

from aes_index.model.heads import Head, emd_distribution

from .metrics import PAPER_TABLE_1, THRESHOLD, best_threshold, summarize


def predict(head: Head, examples, projection: np.ndarray | None) -> np.ndarray:
    return head.predict(examples.pooled, projection, examples.proj_norms).score


def threshold_for(head: Head, training=None, projection: np.ndarray | None = None) -> float:
    """The accuracy cut: the head's own if it has one, else 5 (or, for a zero-shot head
    without one, the best cut on the training examples)."""
    if "threshold" in head.metadata:
        return float(head.metadata["threshold"])
    if head.kind == "zeroshot" and training is not None:
        return best_threshold(predict(head, training, projection), training.means > THRESHOLD)
    return THRESHOLD


def evaluate_head(head: Head, examples, projection: np.ndarray | None, threshold: float) -> dict:
    scores = predict(head, examples, projection)
    if head.kind == "emd":
        distribution = emd_distribution(head, examples.pooled, projection)
        return summarize(scores, examples.means, distribution, examples.histograms, threshold)
    return summarize(scores, examples.means, threshold=threshold)


def format_table(rows: list[tuple[str, dict]], with_paper: bool = True) -> str:
    """Our rows, then the paper's Table 1 (ViT-B/32 on AVA) for comparison."""
    lines = [f"{'':34} {'acc@5':>7} {'SRCC':>7} {'PLCC':>7} {'EMD':>7} {'n':>8}"]
    for label, m in rows:
        lines.append(
            f"{label[:34]:34} {_cell(m.get('accuracy'))} {_cell(m.get('srcc'))} {_cell(m.get('plcc'))} "
            f"{_cell(m.get('emd'))} {m.get('n', ''):>8}"
        )
    if with_paper:
        for label, m in PAPER_TABLE_1.items():
            lines.append(f"{'paper: ' + label:34} {_cell(m['accuracy'])} {_cell(m['srcc'])} {_cell(m['plcc'])} {'':>7} {'':>8}")
    return "\n".join(lines)


def _cell(value) -> str:
    return f"{value:7.3f}" if isinstance(value, (int, float)) else f"{'-':>7}"
