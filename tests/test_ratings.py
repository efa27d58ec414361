"""Rating policy: scores -> stars (whose a rating is: test_ownership.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aes_index.errors import ConfigError
from aes_index.features.stars import DEFAULT_PERCENTILE_CUTS, RatingPolicy, cut_points, percentile_ranks, reject_point, stars_for

# --------------------------------------------------------------------------- policy


def test_default_policy_gives_the_documented_shares():
    stars = stars_for(np.arange(100.0))
    counts = {star: int((stars == star).sum()) for star in range(1, 6)}
    assert counts == {1: 10, 2: 25, 3: 35, 4: 25, 5: 5}
    assert RatingPolicy().cuts == DEFAULT_PERCENTILE_CUTS == (10, 35, 70, 95)


def test_stars_rise_with_score_and_do_not_depend_on_order():
    rng = np.random.default_rng(0)
    scores = rng.normal(5, 1, 1000)
    stars = stars_for(scores)
    order = np.argsort(scores)
    assert np.all(np.diff(stars[order]) >= 0)
    shuffled = rng.permutation(1000)
    assert np.array_equal(stars_for(scores[shuffled]), stars[shuffled])
    assert stars.dtype == np.int8


def test_equal_scores_get_equal_stars():
    scores = np.array([1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    stars = stars_for(scores)
    assert len(set(stars[1:6])) == 1


@pytest.mark.parametrize("scores", [[5.0], [3.0, 3.0, 3.0, 3.0]])
def test_a_single_photo_or_all_equal_scores_get_three_stars(scores):
    assert stars_for(np.array(scores)).tolist() == [3] * len(scores)


def test_nan_scores_get_no_rating_and_do_not_shift_the_cuts():
    with_nan = np.append(np.arange(100.0), [np.nan, np.nan])
    stars = stars_for(with_nan)
    assert stars[-2:].tolist() == [0, 0]
    assert np.array_equal(stars[:100], stars_for(np.arange(100.0)))


def test_no_finite_reference_means_no_ratings():
    assert stars_for(np.array([np.nan, np.nan])).tolist() == [0, 0]
    assert all(math.isnan(c) for c in cut_points(np.array([]), RatingPolicy()))


def test_reference_distribution_rates_a_subset_like_the_library():
    library = np.arange(100.0)
    subset = np.array([0.0, 50.0, 99.0])
    assert stars_for(subset, reference=library).tolist() == [1, 3, 5]
    # Without the reference the subset is rated against itself (mid-ranks 17%, 50%, 83%).
    assert stars_for(subset).tolist() == [2, 3, 4]


def test_cut_points_are_where_star_levels_begin():
    library = np.arange(100.0)
    cuts = cut_points(library, RatingPolicy())
    assert cuts == [10.0, 35.0, 70.0, 95.0]
    for star, cut in enumerate(cuts, start=2):
        assert stars_for(np.array([cut]), reference=library)[0] == star
        assert stars_for(np.array([cut - 0.5]), reference=library)[0] == star - 1


def test_cut_points_are_inf_where_no_photo_reaches_the_percentile():
    cuts = cut_points(np.array([1.0, 1.0]), RatingPolicy())
    assert cuts[:2] == [1.0, 1.0] and cuts[2:] == [math.inf, math.inf]


def test_custom_percentile_cuts():
    policy = RatingPolicy.parse("percentile", "20,40,60,80")
    counts = np.bincount(stars_for(np.arange(100.0), policy), minlength=6)
    assert counts[1:].tolist() == [20, 20, 20, 20, 20]


def test_threshold_policy_uses_absolute_cuts():
    policy = RatingPolicy.parse("threshold", "4,5,6,7")
    scores = np.array([3.9, 4.0, 5.5, 6.0, 7.0, 9.9, np.nan])
    assert stars_for(scores, policy).tolist() == [1, 2, 3, 4, 5, 5, 0]
    assert cut_points(scores, policy) == [4.0, 5.0, 6.0, 7.0]


def test_reject_below_percentile_gives_minus_one():
    policy = RatingPolicy(reject_below=5)
    stars = stars_for(np.arange(100.0), policy)
    assert (stars == -1).sum() == 5 and (stars == 1).sum() == 5
    assert reject_point(np.arange(100.0), policy) == 5.0


def test_reject_below_threshold():
    policy = RatingPolicy.parse("threshold", "4,5,6,7", reject_below="3")
    assert stars_for(np.array([2.9, 3.0]), policy).tolist() == [-1, 1]
    assert reject_point(np.array([]), RatingPolicy()) is None


@pytest.mark.parametrize(
    "kind, cuts, reject",
    [
        ("stars", None, None),  # unknown kind
        ("threshold", None, None),  # threshold needs cuts
        ("percentile", "10,35,70", None),  # three cuts
        ("percentile", "10,35,35,95", None),  # not increasing
        ("percentile", "0,35,70,95", None),  # outside (0, 100)
        ("percentile", "10,35,70,100", None),
        ("percentile", "ten,35,70,95", None),  # not numbers
        ("threshold", "4,5,nan,7", None),
        ("percentile", None, "20"),  # reject above the first cut
        ("percentile", None, "0"),
        ("percentile", None, "1,2"),
    ],
)
def test_bad_policies_are_config_errors_with_one_line(kind, cuts, reject):
    with pytest.raises(ConfigError) as err:
        RatingPolicy.parse(kind, cuts, reject)
    assert "\n" not in str(err.value)


def test_policy_is_hashable_and_normalised():
    assert RatingPolicy(cuts=(10, 35, 70, 95)) == RatingPolicy()
    assert hash(RatingPolicy()) == hash(RatingPolicy.parse())


def test_percentile_ranks_are_mid_ranks():
    ranks = percentile_ranks(np.array([1.0, 2.0, 2.0, 3.0, np.nan]))
    assert ranks[:4].tolist() == [12.5, 50.0, 50.0, 87.5]
    assert math.isnan(ranks[4])
    against = percentile_ranks(np.array([0.0, 10.0]), reference=np.arange(1.0, 10.0))
    assert against.tolist() == [0.0, 100.0]
    assert np.isnan(percentile_ranks(np.array([1.0]), reference=np.array([np.nan]))).all()
