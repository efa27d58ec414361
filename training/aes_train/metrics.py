"""The paper's metrics: binary accuracy at 5, SRCC, PLCC; plus the mean EMD.

SRCC and PLCC are written out here (average ranks for ties, as scipy does) so that the
training package needs nothing beyond numpy at run time; the tests check them against
scipy.stats.
"""

from __future__ import annotations

import math

import numpy as np

from .losses import emd

THRESHOLD = 5.0  # AVA's binary label: mean score > 5 is a "good" photo

# Hentschel, Kobs, Hotho 2022, Table 1 (ViT-B/32 on AVA): accuracy, SRCC, PLCC.
PAPER_TABLE_1 = {
    "fixed prompt": {"accuracy": 0.725, "srcc": 0.435, "plcc": 0.453},
    "ensemble": {"accuracy": 0.756, "srcc": 0.539, "plcc": 0.554},
    "linear probe": {"accuracy": 0.800, "srcc": 0.683, "plcc": 0.694},
    "fine-tuned": {"accuracy": 0.816, "srcc": 0.731, "plcc": 0.741},
}


def rankdata(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # a new group starts wherever the sorted value changes
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    group_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """PLCC; NaN when either side is constant (the correlation is undefined)."""
    a = np.asarray(a, dtype=np.float64) - np.mean(a)
    b = np.asarray(b, dtype=np.float64) - np.mean(b)
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / denominator) if denominator > 0 else float("nan")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """SRCC: Pearson correlation of the ranks."""
    return pearson(rankdata(a), rankdata(b))


def accuracy(predicted: np.ndarray, true_means: np.ndarray, threshold: float = THRESHOLD, true_threshold: float = THRESHOLD) -> float:
    """Share of images on the right side: predicted > threshold iff mean > 5."""
    return float(np.mean((np.asarray(predicted) > threshold) == (np.asarray(true_means) > true_threshold)))


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The cut on `scores` that classifies boolean `labels` best (for zero-shot scores,
    which are cosine differences, not points on AVA's 1-10 scale)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    order = np.argsort(scores, kind="mergesort")
    s, y = scores[order], labels[order]
    # cutting after position i: below -> "bad", above -> "good"
    bad_below = np.r_[0, np.cumsum(~y)]  # correct "bad" calls under each cut
    good_above = np.r_[np.cumsum(y[::-1])[::-1], 0]  # correct "good" calls over each cut
    correct = bad_below + good_above
    valid = np.r_[True, s[1:] != s[:-1], True]  # only cut between distinct values
    best = int(np.argmax(np.where(valid, correct, -1)))
    if best == 0:
        return float(s[0] - 1.0)
    if best == len(s):
        return float(s[-1])
    return float((s[best - 1] + s[best]) / 2.0)


def summarize(
    predicted: np.ndarray,
    true_means: np.ndarray,
    predicted_hist: np.ndarray | None = None,
    true_hist: np.ndarray | None = None,
    threshold: float = THRESHOLD,
) -> dict:
    """The metrics of one head on one split, JSON-ready (undefined values are None)."""
    result = {
        "n": int(len(predicted)),
        "accuracy": accuracy(predicted, true_means, threshold),
        "srcc": spearman(predicted, true_means),
        "plcc": pearson(predicted, true_means),
        "threshold": float(threshold),
    }
    if predicted_hist is not None and true_hist is not None:
        result["emd"] = float(np.mean(emd(predicted_hist, true_hist)))
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}
