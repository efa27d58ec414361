"""The EMD loss of NIMA (Talebi & Milanfar 2018), used by the paper's EMD head.

For score distributions p (predicted) and q (votes) over the ordered scores 1..10,

    EMD_r(p, q) = ( 1/10 * sum_k |CDF_p(k) - CDF_q(k)|^r ) ^ (1/r),   r = 2

Comparing CDFs, not bins, makes a near miss (voting 6 when the truth is 7) cost less than
a far one: the scores are ordered, and a plain cross-entropy would ignore that.
"""

from __future__ import annotations

import numpy as np

R = 2.0
_EPS = 1e-12  # keeps the gradient of the root finite where p == q exactly


def emd_loss(predicted, target, r: float = R):
    """Mean EMD over a batch of (B, 10) probability tensors (torch, differentiable)."""
    import torch

    difference = torch.cumsum(predicted, dim=1) - torch.cumsum(target, dim=1)
    per_example = (difference.abs().pow(r).mean(dim=1) + _EPS).pow(1.0 / r)
    return per_example.mean()


def emd(predicted: np.ndarray, target: np.ndarray, r: float = R) -> np.ndarray:
    """EMD per row of (N, 10) probability arrays (numpy, for metrics)."""
    difference = np.cumsum(predicted, axis=1) - np.cumsum(target, axis=1)
    return np.mean(np.abs(difference) ** r, axis=1) ** (1.0 / r)
