"""`aes-train prompts`: the paper's zero-shot prompt search (Hentschel et al. 2022, 4.1).

Every pair of one positive adjective (27 WordNet synonyms of "great", plus "beautiful" and
"pretty") and one negative (12 synonyms of "ugly") gives a zero-shot score

    score(I) = cos(I, T_pos) - cos(I, T_neg)                          (Eq. 1, w = +1 / -1)

with the text side built three ways (see aes_index.model.zeroshot): a fixed prompt, the
context-aware prompts with the image's own ImageNet class, or their ensemble. The pair
is chosen on the training split only (by SRCC for ranking, or by accuracy for the binary
task) and exported as an aes-index head; the test split is touched once, to report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from aes_index.model import zeroshot
from aes_index.model.heads import Head

from .metrics import THRESHOLD, accuracy, best_threshold, pearson, rankdata

CRITERIA = ("srcc", "accuracy")
_CHUNK = 2048


@dataclass
class PairResult:
    mode: str
    positive: str
    negative: str
    srcc: float
    accuracy: float
    threshold: float

    def as_dict(self) -> dict:
        return asdict(self)


def encode_adjectives(backbone, modes, adjectives, classes) -> dict[str, np.ndarray]:
    """The text embeddings each mode needs, each prompt encoded once."""
    text: dict[str, np.ndarray] = {}
    if "fixed" in modes:
        text["fixed"] = backbone.encode_text([zeroshot.FIXED_TEMPLATE.format(adj=a) for a in adjectives])
    if "ensemble" in modes or "context" in modes:
        per_class = np.stack(
            [backbone.encode_text([zeroshot.CONTEXT_TEMPLATE.format(adj=a, cls=c) for c in classes]) for a in adjectives]
        )  # (adjectives, classes, dim)
        text["per_class"] = per_class
        # the same normalised mean aes_index.model.zeroshot builds, so search and head agree
        mean = per_class.mean(axis=1)
        text["ensemble"] = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    if "context" in modes:
        text["classes"] = backbone.encode_text([zeroshot.CLASS_TEMPLATE.format(cls=c) for c in classes])
    return text


def adjective_cosines(images: np.ndarray, mode: str, text: dict[str, np.ndarray]) -> np.ndarray:
    """cos(I, T_adj) for every image and adjective: (N, adjectives).

    `images` are projected, L2-normalised embeddings. In context mode each image is
    compared with the prompts of its own best-matching ImageNet class.
    """
    if mode in ("fixed", "ensemble"):
        return images @ text[mode].T
    per_class, classes = text["per_class"], text["classes"]
    parts = []
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK]
        best_class = np.argmax(chunk @ classes.T, axis=1)
        parts.append(np.einsum("nd,and->na", chunk, per_class[:, best_class, :]))
    return np.concatenate(parts) if parts else np.zeros((0, len(per_class)), np.float32)


def rank_pairs(
    cosines: np.ndarray, adjectives: list[str], positive, negative, true_means: np.ndarray, mode: str
) -> list[PairResult]:
    """SRCC and best-cut accuracy of every (positive, negative) pair on these images."""
    column = {a: i for i, a in enumerate(adjectives)}
    true_ranks = rankdata(true_means)  # ranked once, not once per pair
    labels = true_means > THRESHOLD
    results = []
    for pos in positive:
        for neg in negative:
            score = cosines[:, column[pos]] - cosines[:, column[neg]]
            cut = best_threshold(score, labels)
            srcc = pearson(rankdata(score), true_ranks)
            results.append(PairResult(mode, pos, neg, _finite(srcc), accuracy(score, true_means, cut), cut))
    return results


def _finite(value: float) -> float:
    return value if np.isfinite(value) else -1.0


def search(backbone, training, projection, modes, positive, negative, log=print) -> dict[str, list[PairResult]]:
    """All pairs in all modes on the training examples: {mode: results}."""
    adjectives = list(dict.fromkeys([*positive, *negative]))
    classes = zeroshot.imagenet_classes()
    log(f"encoding prompts for {len(adjectives)} adjectives" + (f" x {len(classes)} classes" if set(modes) - {"fixed"} else ""))
    text = encode_adjectives(backbone, modes, adjectives, classes)
    images = training.features(projection, "projected")
    return {
        mode: rank_pairs(adjective_cosines(images, mode, text), adjectives, positive, negative, training.means, mode)
        for mode in modes
    }


def choose(results: dict[str, list[PairResult]], criterion: str) -> PairResult:
    return max((r for rows in results.values() for r in rows), key=lambda r: getattr(r, criterion))


def top(rows: list[PairResult], criterion: str, n: int = 5) -> list[PairResult]:
    return sorted(rows, key=lambda r: getattr(r, criterion), reverse=True)[:n]


def export_head(backbone, best: PairResult, results, criterion: str, metadata: dict) -> Head:
    """The chosen pair as an aes-index zero-shot head (built by aes_index itself)."""
    head = zeroshot.build_zeroshot_head(backbone, best.mode, (best.positive,), (best.negative,))
    selection = {
        "criterion": criterion,
        "on": "training split",
        "chosen": best.as_dict(),
        "top": {mode: [r.as_dict() for r in top(rows, criterion)] for mode, rows in results.items()},
        "pairs_tried": sum(len(rows) for rows in results.values()),
    }
    merged = {**head.metadata, "name": head.name + "-ava", "threshold": best.threshold,
              "score_scale": "cosine difference (zero-shot)", "selection": selection, **metadata}
    return Head(merged, head.tensors)
