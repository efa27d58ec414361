"""EMD loss and the paper's metrics, against independent reference computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from aes_train.losses import emd, emd_loss
from aes_train.metrics import PAPER_TABLE_1, accuracy, best_threshold, pearson, rankdata, spearman, summarize


def _random_histograms(rng, n):
    counts = rng.integers(0, 50, size=(n, 10)).astype(np.float64)
    counts[:, 0] += 1  # never all zero
    return counts / counts.sum(axis=1, keepdims=True)


def _emd_by_hand(p, q, r=2.0):
    """NIMA's definition written out with loops: (1/10 sum_k |CDF_p(k) - CDF_q(k)|^r)^(1/r)."""
    cdf_p = cdf_q = total = 0.0
    for k in range(10):
        cdf_p += p[k]
        cdf_q += q[k]
        total += abs(cdf_p - cdf_q) ** r
    return (total / 10) ** (1 / r)


def test_emd_matches_the_formula_written_out():
    rng = np.random.default_rng(0)
    p, q = _random_histograms(rng, 50), _random_histograms(rng, 50)
    expected = np.array([_emd_by_hand(a, b) for a, b in zip(p, q)])
    np.testing.assert_allclose(emd(p, q), expected, rtol=1e-12)
    loss = emd_loss(torch.from_numpy(p), torch.from_numpy(q))
    assert float(loss) == pytest.approx(expected.mean(), rel=1e-9)
    # r = 1 is the L1 distance between CDFs (mean over bins)
    np.testing.assert_allclose(emd(p, q, r=1.0), [_emd_by_hand(a, b, 1.0) for a, b in zip(p, q)], rtol=1e-12)


def test_emd_orders_near_misses_before_far_ones():
    truth = np.eye(10)[[6]]  # all votes on 7
    near, far = np.eye(10)[[5]], np.eye(10)[[0]]
    assert emd(near, truth)[0] < emd(far, truth)[0]
    assert emd(truth, truth)[0] == 0.0


def test_emd_loss_has_a_finite_gradient_at_a_perfect_prediction():
    target = torch.tensor(_random_histograms(np.random.default_rng(1), 4))
    logits = torch.log(target).clone().requires_grad_(True)
    emd_loss(torch.softmax(logits, dim=1), target).backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("ties", [False, True])
def test_srcc_and_plcc_match_scipy(ties):
    rng = np.random.default_rng(2)
    a = rng.normal(size=500)
    b = a + rng.normal(size=500)
    if ties:  # AVA means and star ratings tie a lot
        a, b = np.round(a, 1), np.round(b)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert pearson(a, b) == pytest.approx(pearsonr(a, b).statistic, abs=1e-12)


def test_rankdata_averages_ties_like_scipy():
    from scipy.stats import rankdata as scipy_rankdata

    values = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    np.testing.assert_array_equal(rankdata(values), scipy_rankdata(values))


def test_correlation_of_a_constant_is_undefined_not_a_crash():
    assert np.isnan(pearson(np.ones(5), np.arange(5)))
    assert summarize(np.ones(5), np.arange(5.0))["plcc"] is None


def test_accuracy_thresholds_at_five():
    predicted = np.array([4.0, 5.5, 6.0, 5.0])
    true = np.array([4.5, 5.2, 4.9, 5.1])  # labels: bad good bad good
    # 4.0 bad ok, 5.5 good ok, 6.0 good wrong, 5.0 not > 5 so bad: wrong
    assert accuracy(predicted, true) == 0.5


def test_best_threshold_separates_separable_scores():
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8])
    labels = np.array([False, False, False, True, True])
    cut = best_threshold(scores, labels)
    assert 0.3 < cut < 0.7
    assert np.all((scores > cut) == labels)
    # on noisy scores no cut does better (all candidate cuts tried, and "all good")
    rng = np.random.default_rng(3)
    noisy = rng.normal(size=300)
    noisy_labels = noisy + rng.normal(size=300) > 0
    cut = best_threshold(noisy, noisy_labels)
    brute = max(np.mean((noisy > t) == noisy_labels) for t in np.sort(noisy))
    assert np.mean((noisy > cut) == noisy_labels) == pytest.approx(max(brute, np.mean(noisy_labels)))


def test_paper_table_is_the_papers():
    assert PAPER_TABLE_1["fixed prompt"] == {"accuracy": 0.725, "srcc": 0.435, "plcc": 0.453}
    assert PAPER_TABLE_1["ensemble"] == {"accuracy": 0.756, "srcc": 0.539, "plcc": 0.554}
    assert PAPER_TABLE_1["linear probe"] == {"accuracy": 0.800, "srcc": 0.683, "plcc": 0.694}
    assert PAPER_TABLE_1["fine-tuned"] == {"accuracy": 0.816, "srcc": 0.731, "plcc": 0.741}
