"""A personal head from few star ratings, started from a distortion-ranking head.

With a few dozen ratings, `aes-train personal` (ridge regression over every feature)
has little to learn from. The distortion head already ranks photos by how little they
look like a blurred, noisy, badly exposed version of a good photo. Here the stars are

    stars ~ a * prior(x) + b + v . standardise(x)

with (a, b) fitted by least squares on the prior's score, and v by ridge regression on
what the prior leaves unexplained. The ridge penalty is chosen by cross-validated SRCC,
as personal.py chooses its own, from personal.py's grid plus "infinite" (v = 0: the
distortion head alone, rescaled to stars). The ratings thus move the head away from
the prior exactly as far as they hold up on photos left out of the fit.

The result is one linear head (both parts are linear in the pooled features), so
aes-index scores with it like with any other.
"""

from __future__ import annotations

import math

import numpy as np

from aes_index.model.heads import Head

from .errors import NotEnoughData
from .fit import ridge_path, standardiser
from .metrics import spearman
from .personal import PersonalConfig, choose_alpha, ridge_predict

PRIOR_ONLY = math.inf  # the penalty that keeps v = 0


def raw_linear(head: Head) -> tuple[np.ndarray, float]:
    """(weight, bias) of a pooled-space linear head with its standardisation folded in."""
    weight = head.tensors["weight"].reshape(-1).astype(np.float64)
    bias = float(head.tensors["bias"].reshape(-1)[0])
    if "input_mean" in head.tensors:
        scaled = weight * head.tensors["input_scale"]
        return scaled, bias - float(scaled @ head.tensors["input_mean"])
    return weight, bias


def _fit_line(prior: np.ndarray, stars: np.ndarray) -> tuple[float, float]:
    """stars ~ a * prior + b by least squares (a = 0 when the prior is constant)."""
    if np.ptp(prior) == 0:
        return 0.0, float(stars.mean())
    a, b = np.polyfit(prior, stars, 1)
    return float(a), float(b)


def fit_with_prior(pooled, stars, prior, alpha: float) -> tuple[float, float, np.ndarray, np.ndarray, np.ndarray, float]:
    """(a, b, v, mean, scale, v_intercept) of the model above for one penalty."""
    a, b = _fit_line(prior, stars)
    mean, scale = standardiser(pooled)
    if alpha == PRIOR_ONLY:
        return a, b, np.zeros(pooled.shape[1]), mean, scale, 0.0
    residual = stars - (a * prior + b)
    v, intercept = ridge_path((pooled - mean) * scale, residual, [alpha])[alpha]
    return a, b, v, mean, scale, float(intercept)


def predict_with_prior(fitted, pooled, prior) -> np.ndarray:
    a, b, v, mean, scale, intercept = fitted
    return a * prior + b + ((pooled - mean) * scale) @ v + intercept


def choose_alpha_with_prior(pooled, stars, prior, config: PersonalConfig) -> float:
    """The penalty with the best cross-validated SRCC (the same folds as personal.py)."""
    fold = np.arange(len(pooled)) % config.folds
    np.random.default_rng(config.seed).shuffle(fold)
    scores = {}
    for alpha in (*config.ridge_alphas, PRIOR_ONLY):
        predicted = np.empty(len(pooled))
        for k in range(config.folds):
            held = fold == k
            fitted = fit_with_prior(pooled[~held], stars[~held], prior[~held], alpha)
            predicted[held] = predict_with_prior(fitted, pooled[held], prior[held])
        scores[alpha] = np.nan_to_num(spearman(predicted, stars), nan=-1.0)
    return max(scores, key=scores.get)


def _srcc(predicted, stars):
    value = spearman(predicted, stars)
    return None if np.isnan(value) else round(float(value), 4)


def warm_personal(pooled: np.ndarray, stars: np.ndarray, test: np.ndarray, prior_head: Head, config: PersonalConfig) -> tuple[dict, dict, float]:
    """Held-out SRCC of the prior alone, of ratings alone (personal.py's method) and of
    both; then the head's tensors refit on every rated photo. Returns (tensors, metrics, alpha)."""
    train = ~test
    if train.sum() < max(config.folds, 5) or len(np.unique(stars[train])) < 2:
        raise NotEnoughData(
            f"{int(train.sum())} rated photos to fit on ({int(test.sum())} held out); a personal head started from the "
            f"distortion head needs at least {max(config.folds, 5)} with two or more different star values"
        )
    w_prior, b_prior = raw_linear(prior_head)
    prior = pooled @ w_prior + b_prior

    alpha = choose_alpha_with_prior(pooled[train], stars[train], prior[train], config)
    fitted = fit_with_prior(pooled[train], stars[train], prior[train], alpha)
    alone = ridge_predict(pooled[train], stars[train], pooled[test], choose_alpha(pooled[train], stars[train], config))
    metrics = {
        "split": "held-out", "n": int(test.sum()),
        "srcc": _srcc(predict_with_prior(fitted, pooled[test], prior[test]), stars[test]),
        "srcc_prior_only": _srcc(prior[test], stars[test]),
        "srcc_ratings_only": _srcc(alone, stars[test]),
    }
    # The head that is saved learns from every rating; the numbers above are its estimate.
    a, b, v, mean, scale, intercept = fit_with_prior(pooled, stars, prior, alpha)
    weight = a * w_prior + v * scale
    bias = a * b_prior + b + intercept - float((v * scale) @ mean)
    tensors = {"weight": weight.astype(np.float32), "bias": np.array([bias], np.float32)}
    return tensors, metrics, alpha


def warm_head(tensors: dict, metrics: dict, alpha: float, prior_head: Head, input_dim: int, ratings: int, metadata: dict) -> Head:
    meta = {
        "name": "personal-distort",
        "kind": "linear",
        "backbone": prior_head.backbone,
        "input_space": "pooled",
        "input_dim": int(input_dim),
        "score_scale": "predicted stars (0 = rejected, 1-5)",
        "prior": {"head": prior_head.name, "hash": prior_head.hash},
        "ridge_alpha": "prior only" if alpha == PRIOR_ONLY else alpha,
        "data": {"dataset": "your own star ratings", "photos": int(ratings)},
        "metrics": metrics,
        **metadata,
    }
    return Head(meta, tensors)
