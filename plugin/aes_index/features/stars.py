"""Scores -> star ratings: the policies (whose a rating is, and so whether we may write
it, is ownership.py's to say).

Pure functions over numpy arrays; nothing here reads or writes files.

Policies (`RatingPolicy`):

- ``percentile`` (default): stars follow the photo's rank within the library's own score
  distribution, so they mean the same thing whatever head produced the scores. Default cut
  points ``DEFAULT_PERCENTILE_CUTS = (10, 35, 70, 95)``:

      bottom 10%  -> 1 star      10-35% -> 2 stars     35-70% -> 3 stars
      70-95%      -> 4 stars     top 5% -> 5 stars

- ``threshold``: the cut points are absolute values on the head's score scale (e.g.
  ``"4,5,6,7"`` on AVA's 1-10 scale); useful to keep stars stable as the library grows.
  Each head has its own scale (the LAION heads 1-10, zero-shot heads a difference of
  cosines near 0), so cut points are per head scale: `check_scale` refuses cut points
  outside the range of the head being rated instead of giving every photo one star.

A photo's percentile is its mid-rank in the reference distribution (the share of scores
below it plus half of those equal to it), so equal scores always get equal stars, a
one-photo or all-equal library gets 3 stars, and with distinct scores the shares are exact
(100 photos: 10 get 1 star, 25 get 2, 35 get 3, 25 get 4, 5 get 5). A score exactly at a
cut point gets the higher star count. Optional ``reject_below`` (a percentile or an
absolute score, as the policy's cuts) turns scores strictly below it into -1, darktable's
"rejected". NaN scores get 0: no rating is written for them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..values import REJECTED

PERCENTILE = "percentile"
THRESHOLD = "threshold"
POLICY_KINDS = (PERCENTILE, THRESHOLD)
DEFAULT_PERCENTILE_CUTS = (10.0, 35.0, 70.0, 95.0)



@dataclass(frozen=True)
class RatingPolicy:
    """How scores become stars. See the module docstring for the defaults.

    kind: "percentile" or "threshold".
    cuts: four increasing cut points: the lowest score for 2, 3, 4 and 5 stars
          (percentiles in (0, 100) for "percentile"; absolute scores for "threshold").
    reject_below: optional; scores strictly below it (same unit as cuts) get -1.
    """

    kind: str = PERCENTILE
    cuts: tuple[float, ...] = DEFAULT_PERCENTILE_CUTS
    reject_below: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cuts", tuple(float(c) for c in self.cuts))
        _validate(self)

    @classmethod
    def parse(
        cls, kind: str = PERCENTILE, cuts: str | None = None, reject_below: str | None = None
    ) -> RatingPolicy:
        """Build a policy from command-line / config text, e.g. cuts="10,35,70,95".

        Without cuts a percentile policy takes the defaults; a threshold policy needs them.
        Raises ConfigError with a one-line message for anything malformed.
        """
        if cuts is None and kind == THRESHOLD:
            raise ConfigError("the threshold policy needs cut points, e.g. --cuts 4,5,6,7.")
        parsed_cuts = DEFAULT_PERCENTILE_CUTS if cuts is None else _parse_numbers(cuts, "cuts")
        reject = None
        if reject_below not in (None, ""):
            (reject,) = _parse_numbers(reject_below, "reject-below", count=1)
        return cls(kind=kind, cuts=parsed_cuts, reject_below=reject)


def _parse_numbers(text: str, what: str, count: int | None = None) -> tuple[float, ...]:
    try:
        numbers = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, not {text!r}.") from None
    if count is not None and len(numbers) != count:
        raise ConfigError(f"{what} takes {count} number(s), not {text!r}.")
    return numbers


def _validate(policy: RatingPolicy) -> None:
    if policy.kind not in POLICY_KINDS:
        raise ConfigError(
            f"unknown rating policy {policy.kind!r}; use one of {', '.join(POLICY_KINDS)}."
        )
    cuts = policy.cuts
    if len(cuts) != 4:
        raise ConfigError(f"a rating policy needs 4 cut points (for 2..5 stars), got {len(cuts)}.")
    if not all(math.isfinite(c) for c in cuts) or any(b <= a for a, b in itertools.pairwise(cuts)):
        raise ConfigError(f"cut points must be finite and strictly increasing, got {list(cuts)}.")
    if policy.kind == PERCENTILE and not (cuts[0] > 0 and cuts[-1] < 100):
        raise ConfigError(f"percentile cut points must lie between 0 and 100, got {list(cuts)}.")
    reject = policy.reject_below
    if reject is not None and not (math.isfinite(reject) and reject <= cuts[0]):
        raise ConfigError(
            f"reject-below ({reject}) must be a number at or below the first cut ({cuts[0]})."
        )
    if reject is not None and policy.kind == PERCENTILE and reject <= 0:
        raise ConfigError(f"a percentile reject-below must be above 0, got {reject}.")


def check_scale(policy: RatingPolicy, head: str, scale_text: str, low: float | None, high: float | None) -> None:
    """Threshold cut points (and reject-below) must lie on the rated head's scale [low, high].

    Percentiles fit every head. A scale without a range on record is not checked."""
    if policy.kind != THRESHOLD or low is None or high is None:
        return
    values = [*policy.cuts, *([] if policy.reject_below is None else [policy.reject_below])]
    if all(low <= value <= high for value in values):
        return
    shown = ",".join(f"{value:g}" for value in policy.cuts)
    raise ConfigError(
        f"threshold cut points {shown} are not on the scale of {head}'s scores ({scale_text}, {low:g} to {high:g}): "
        "give --cuts on that scale, or use --policy percentile, which fits any head."
    )


def cut_points(reference: np.ndarray, policy: RatingPolicy) -> list[float]:
    """The score values where 2, 3, 4 and 5 stars begin (what reports draw as lines).

    For a percentile policy: the lowest reference score whose percentile reaches each
    cut (NaNs ignored); inf where no score reaches it (tiny or tied libraries), NaN for
    all when there is no finite reference score (then every photo gets no rating).
    """
    return _score_cuts(np.asarray(reference, dtype=np.float64), policy.cuts, policy.kind)


def reject_point(reference: np.ndarray, policy: RatingPolicy) -> float | None:
    """The score below which photos are rejected (-1), or None without reject_below."""
    if policy.reject_below is None:
        return None
    return _score_cuts(
        np.asarray(reference, dtype=np.float64), (policy.reject_below,), policy.kind
    )[0]


def _score_cuts(reference: np.ndarray, cuts: tuple[float, ...], kind: str) -> list[float]:
    if kind == THRESHOLD:
        return list(cuts)
    values, ranks = _midrank_table(reference)
    if values.size == 0:
        return [math.nan] * len(cuts)
    first_reaching = np.searchsorted(ranks, cuts, side="left")
    return [float(values[i]) if i < values.size else math.inf for i in first_reaching]


def _midrank_table(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct finite reference scores, ascending, and each one's mid-rank percentile."""
    finite = reference[np.isfinite(reference)]
    values, counts = np.unique(finite, return_counts=True)
    at_or_below = np.cumsum(counts)
    below = at_or_below - counts
    return values, 100.0 * (below + at_or_below) / (2.0 * max(finite.size, 1))


def stars_for(
    scores: np.ndarray, policy: RatingPolicy = RatingPolicy(), reference: np.ndarray | None = None
) -> np.ndarray:
    """Stars (int8: 1..5, -1 rejected, 0 = no rating for NaN) for each score.

    reference: the score distribution percentile cuts are computed over; by default the
    scores themselves (rate a whole library at once). Pass the whole library's scores to
    rate a subset consistently with it.
    """
    scores = np.asarray(scores, dtype=np.float64)
    reference = scores if reference is None else np.asarray(reference, dtype=np.float64)
    cuts = np.asarray(cut_points(reference, policy))
    stars = np.zeros(scores.shape, dtype=np.int8)
    if np.isnan(cuts).any():
        return stars
    finite = np.isfinite(scores)
    # side="right": a score equal to a cut counts as having reached it.
    stars[finite] = 1 + np.searchsorted(cuts, scores[finite], side="right")
    reject = reject_point(reference, policy)
    if reject is not None:
        stars[finite & (scores < reject)] = REJECTED
    return stars


def percentile_ranks(scores: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Each score's percentile (0-100) within `reference` (default: the scores themselves).

    Mid-rank for ties: the share of reference scores below, plus half of those equal.
    NaN for NaN scores or an empty reference. This is what aes:Percentile records.
    """
    scores = np.asarray(scores, dtype=np.float64)
    reference = scores if reference is None else np.asarray(reference, dtype=np.float64)
    ranked = np.sort(reference[np.isfinite(reference)])
    ranks = np.full(scores.shape, np.nan)
    finite = np.isfinite(scores)
    if ranked.size == 0:
        return ranks
    below = np.searchsorted(ranked, scores[finite], side="left")
    at_or_below = np.searchsorted(ranked, scores[finite], side="right")
    ranks[finite] = 100.0 * (below + at_or_below) / (2.0 * ranked.size)
    return ranks
