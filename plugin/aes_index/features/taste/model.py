"""A person's decisions as training data, the personal head fitted over cached embeddings,
and the held-out comparison with the active head that decides whether it is adopted.

Data (`build_decisions`):
  ratings  every choice as an ordinal target: a reject is 0 stars, 1..5 stars, a pick
           label "accepted" 5 (ownership.persons_choice);
  pairs    "group": in a culling group where the person's strongest choice is one frame
           (a pick or stars, not a reject), that frame over every other frame they chose
           lower or left alone; "changed": a photo whose stars of ours the person changed
           (ours r, theirs v), against up to CHANGE_PARTNERS photos of its shoot where our
           r still stands, in the direction of their change.

Shoots (`shoots`): photos of one folder taken within SHOOT_GAP_S of the next, and every
member of a culling group with them (a burst is never split); photos without a capture
time form their folder's shoot. Held-out decisions are whole shoots.

Fit (`fit`): numpy only, no decoding. Features are the pooled embeddings, standardised;
the active head is first distilled into a linear map of those features (`distil`), and the
personal head is  f(z) = c + beta * (z . w0) + z . delta,  least squares over rating rows
(with the intercept c) and pair rows (target PAIR_MARGIN, one star), ridge penalty on
delta only: with few decisions the head stays the active head's ranking, and moves from
it as far as the decisions show. The penalty is chosen by cross-validation over shoots.

Adoption (`adoption`): see ADOPTION in the README ("Your taste"): held-out pairwise
accuracy at least MARGIN above the active head's, the lower end of the 90 % shoot-bootstrap
interval of the gain above 0, held-out SRCC not below the active head's, with at least
MIN_DECISIONS decisions and MIN_HELD_OUT_PAIRS held-out comparisons.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

SHOOT_GAP_S = 3 * 3600.0  # a pause this long between two photos of a folder starts a new shoot
CHANGE_PARTNERS = 3  # photos of its shoot with our stars left, compared with a photo whose stars the person changed
PAIR_MARGIN = 1.0  # a preferred photo scores one star above the other
RATING_PAIRS_PER_SHOOT = 500  # measuring: at most this many pairs of differently rated photos per shoot
ALPHAS = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)
DISTIL_ROWS = 20_000  # photos the active head is distilled from (a sample of the library)
TEST_FRACTION = 0.3
FOLDS = 4
BOOTSTRAP = 1000
CONFIDENCE = 0.90

# The adoption rule (README "Your taste": why these numbers, bench_learn.py measures them).
MARGIN = 0.02  # held-out pairwise accuracy gain over the active head
MIN_DECISIONS = 50  # ratings and pairs, in all
MIN_HELD_OUT_PAIRS = 30


@dataclass
class Decisions:
    """Ratings (image id -> stars 0..5) and pairs (better id, worse id, kind), each photo's shoot."""

    stars: dict[int, float] = field(default_factory=dict)
    pairs: list[tuple[int, int, str]] = field(default_factory=list)
    shoot: dict[int, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.stars) + len(self.pairs)

    def counts(self) -> dict:
        kinds: dict[str, int] = {}
        for _, _, kind in self.pairs:
            kinds[kind] = kinds.get(kind, 0) + 1
        return {"ratings": len(self.stars), "pairs": len(self.pairs), "pairs_by_kind": kinds, "shoots": len(set(self.shoot[i] for i in self.ids()))}

    def ids(self) -> list[int]:
        return sorted({*self.stars, *(a for a, _, _ in self.pairs), *(b for _, b, _ in self.pairs)})

    def part(self, shoots: set[int]) -> "Decisions":
        """The decisions of these shoots (a pair lies within one shoot)."""
        return Decisions(
            {i: y for i, y in self.stars.items() if self.shoot[i] in shoots},
            [p for p in self.pairs if self.shoot[p[0]] in shoots],
            self.shoot,
        )

    def shoots_held(self) -> list[int]:
        return sorted({self.shoot[i] for i in self.ids()})


# --------------------------------------------------------------------------- data


def shoots(photos: dict[int, tuple[str, float | None]], groups=()) -> dict[int, int]:
    """A shoot number per photo: by folder and capture-time gaps, merged over culling groups.
    `photos`: image id -> (path, taken_at seconds or None); `groups`: member id tuples."""
    parent = {i: i for i in photos}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(a: int, b: int) -> None:
        parent[find(a)] = find(b)

    by_folder: dict[str, list[tuple[float, int]]] = {}
    for image_id, (path, taken) in photos.items():
        by_folder.setdefault(path.rsplit("/", 1)[0], []).append((np.inf if taken is None else float(taken), image_id))
    for members in by_folder.values():
        members.sort()
        dated = [(t, i) for t, i in members if t != np.inf]
        for (t0, a), (t1, b) in zip(dated, dated[1:]):
            if t1 - t0 <= SHOOT_GAP_S:
                join(b, a)
        undated = [i for t, i in members if t == np.inf]
        for a, b in zip(undated, undated[1:]):
            join(b, a)
    for members in groups:
        present = [m for m in members if m in parent]
        for a, b in zip(present, present[1:]):
            join(b, a)
    roots: dict[int, int] = {}
    return {i: roots.setdefault(find(i), len(roots)) for i in sorted(photos)}


def build_decisions(choices, ours: dict[int, int], shoot: dict[int, int], groups=(), seed: int = 0) -> Decisions:
    """Ratings and pairs from the person's choices (sources.Choice by image id)."""
    decisions = Decisions(shoot=shoot)
    for image_id, choice in choices.items():
        if image_id in shoot:
            decisions.stars[image_id] = float(max(choice.value, 0))
    for members in groups:
        members = [m for m in members if m in shoot]
        chosen = {m: choices[m].value for m in members if m in choices}
        if not chosen:
            continue
        best = max(chosen.values())
        winners = [m for m, v in chosen.items() if v == best]
        if best < 1 or len(winners) != 1:
            continue  # only rejects, or several frames chosen equally: no one frame picked
        decisions.pairs += [(winners[0], m, "group") for m in members if m != winners[0] and chosen.get(m, -2) < best]
    left_by_shoot: dict[tuple[int, int], list[int]] = {}
    for image_id, stars in ours.items():
        if image_id in shoot:
            left_by_shoot.setdefault((shoot[image_id], stars), []).append(image_id)
    for image_id, choice in choices.items():
        if choice.replaced is None or choice.value == choice.replaced or image_id not in shoot:
            continue
        partners = sorted(left_by_shoot.get((shoot[image_id], choice.replaced), ()), key=lambda q: _hash(seed, image_id, q))
        for q in partners[:CHANGE_PARTNERS]:
            decisions.pairs.append((image_id, q, "changed") if choice.value > choice.replaced else (q, image_id, "changed"))
    return decisions


def _hash(*parts) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def split_by_shoot(decisions: Decisions, fraction: float = TEST_FRACTION, seed: int = 0) -> tuple[set[int], set[int]]:
    """(train shoots, held-out shoots): shoots in seeded-hash order go to the held-out side
    until it holds `fraction` of the decisions. Never one shoot on both sides."""
    weight: dict[int, int] = {}
    for i in decisions.stars:
        weight[decisions.shoot[i]] = weight.get(decisions.shoot[i], 0) + 1
    for a, _, _ in decisions.pairs:
        weight[decisions.shoot[a]] = weight.get(decisions.shoot[a], 0) + 1
    order = sorted(weight, key=lambda s: _hash(seed, "held-out", s))
    test, held = set(), 0
    for s in order:
        if held >= fraction * decisions.count or len(test) == len(order) - 1:
            break
        test.add(s)
        held += weight[s]
    return set(order) - test, test


# --------------------------------------------------------------------------- fit


@dataclass
class Features:
    """Standardised pooled features of the photos the fit needs, and the distilled active head."""

    row: dict[int, int]  # image id -> row of z
    z: np.ndarray  # (N, D) standardised
    mean: np.ndarray
    scale: np.ndarray
    w0: np.ndarray  # (D,) the active head, distilled into standardised feature space
    distil_srcc: float | None = None  # how well the distilled map ranks like the active head


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean.astype(np.float32), (1.0 / np.where(std > 1e-8, std, 1.0)).astype(np.float32)


def distil(sample: np.ndarray, active: np.ndarray, mean: np.ndarray, scale: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """The linear map of standardised features closest to the active head's scores (ridge):
    what makes the active head the personal head's starting point, whatever its kind."""
    z = (sample - mean) * scale
    zc = z - z.mean(axis=0)
    gram = zc.T.astype(np.float64) @ zc + alpha * np.eye(z.shape[1])
    return np.linalg.solve(gram, zc.T.astype(np.float64) @ (active - active.mean())).astype(np.float32)


def _design(decisions: Decisions, features: Features) -> tuple[np.ndarray, np.ndarray]:
    """Rows [intercept, active (distilled), z] with their targets: ratings, then pairs."""
    rated = list(decisions.stars)
    z_r = features.z[[features.row[i] for i in rated]] if rated else np.zeros((0, features.z.shape[1]), np.float32)
    a = np.array([features.row[p[0]] for p in decisions.pairs], dtype=np.int64)
    b = np.array([features.row[p[1]] for p in decisions.pairs], dtype=np.int64)
    z_p = features.z[a] - features.z[b] if len(a) else np.zeros((0, features.z.shape[1]), np.float32)
    z_all = np.concatenate([z_r, z_p]).astype(np.float32)
    first = np.r_[np.ones(len(rated)), np.zeros(len(a))].astype(np.float32)
    design = np.concatenate([first[:, None], (z_all @ features.w0)[:, None], z_all], axis=1)
    target = np.r_[np.array([decisions.stars[i] for i in rated], np.float32), np.full(len(a), PAIR_MARGIN, np.float32)]
    return design, target


def gram(decisions: Decisions, features: Features) -> tuple[np.ndarray, np.ndarray]:
    """The normal equations' (design' design, design' target) of these decisions: float32
    products (a 100k x 768 design in seconds), solved in float64."""
    design, target = _design(decisions, features)
    return (design.T @ design).astype(np.float64), (design.T @ target).astype(np.float64)


def _solve(gram: np.ndarray, moment: np.ndarray, alpha: float) -> np.ndarray:
    penalty = np.full(len(gram), alpha)
    penalty[0], penalty[1] = 0.0, 1e-6  # intercept free; the active head's weight nearly free
    if not gram[0, 0]:
        penalty[0] = 1.0  # pairs only: no intercept to fit
    return np.linalg.solve(gram + np.diag(penalty), moment)


@dataclass
class Fitted:
    weight: np.ndarray  # (D,) over standardised features
    bias: float
    alpha: float
    beta: float  # the weight of the active head's direction in it
    normal: tuple | None = None  # the normal equations it was solved from (gram), for a refit with more

    def scores(self, features: Features, ids) -> np.ndarray:
        return features.z[[features.row[i] for i in ids]] @ self.weight + self.bias


def _fitted(theta: np.ndarray, features: Features, alpha: float) -> Fitted:
    weight = (theta[1] * features.w0 + theta[2:]).astype(np.float32)
    return Fitted(weight, float(theta[0]), alpha, float(theta[1]))


def fit(decisions: Decisions, features: Features, alpha: float | None = None, seed: int = 0, normal=None) -> Fitted:
    """The personal head; `alpha` None: chosen by cross-validation over shoots. `normal`:
    these decisions' gram(), when known."""
    if alpha is None:
        alpha, normal = choose_alpha(decisions, features, seed)
    normal = normal or gram(decisions, features)
    fitted = _fitted(_solve(*normal, alpha), features, alpha)
    fitted.normal = normal
    return fitted


def choose_alpha(decisions: Decisions, features: Features, seed: int = 0) -> tuple[float, tuple | None]:
    """The strongest penalty whose cross-validated pairwise accuracy (FOLDS folds of whole
    shoots) is within one standard error of the best penalty's: the one-standard-error rule.
    A few decisions rarely tell penalties apart, and then the head stays near the active
    head's ranking instead of fitting their noise. One Gram matrix per fold, summed: each
    penalty costs one solve per fold."""
    held = decisions.shoots_held()
    folds = min(FOLDS, len(held))
    if folds < 2:
        return ALPHAS[-1], None
    fold_of = {s: k % folds for k, s in enumerate(sorted(held, key=lambda s: _hash(seed, "fold", s)))}
    parts = [decisions.part({s for s in held if fold_of[s] == k}) for k in range(folds)]
    grams = [gram(part, features) for part in parts]
    total_gram, total_moment = sum(g for g, _ in grams), sum(m for _, m in grams)
    pairs = [evaluation_pairs(part, seed) for part in parts]
    accuracy: dict[float, list[float]] = {}
    for alpha in ALPHAS:
        for (fold_gram, fold_moment), (a, b, _) in zip(grams, pairs):
            if not len(a):
                continue
            fitted = _fitted(_solve(total_gram - fold_gram, total_moment - fold_moment, alpha), features, alpha)
            sa, sb = fitted.scores(features, a), fitted.scores(features, b)
            accuracy.setdefault(alpha, []).append(float(np.mean((sa > sb) + 0.5 * (sa == sb))))
    if not accuracy:
        return ALPHAS[-1], (total_gram, total_moment)
    mean = {alpha: float(np.mean(v)) for alpha, v in accuracy.items()}
    best = max(mean, key=mean.get)
    spread = accuracy[best]
    error = float(np.std(spread, ddof=1) / np.sqrt(len(spread))) if len(spread) > 1 else 0.0
    return max(alpha for alpha in mean if mean[alpha] >= mean[best] - error), (total_gram, total_moment)


# --------------------------------------------------------------------------- measuring


def evaluation_pairs(decisions: Decisions, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(better ids, worse ids, shoot) to measure on: the pairs, and pairs of photos of one
    shoot the person rated differently (at most RATING_PAIRS_PER_SHOOT a shoot)."""
    a = [p[0] for p in decisions.pairs]
    b = [p[1] for p in decisions.pairs]
    by_shoot: dict[int, list[int]] = {}
    for i in decisions.stars:
        by_shoot.setdefault(decisions.shoot[i], []).append(i)
    rng = np.random.default_rng(seed)
    for members in by_shoot.values():
        members = np.array(sorted(members))
        y = np.array([decisions.stars[i] for i in members])
        first, second = np.triu_indices(len(members), 1)
        differ = y[first] != y[second]
        first, second = first[differ], second[differ]
        if len(first) > RATING_PAIRS_PER_SHOOT:
            keep = rng.choice(len(first), RATING_PAIRS_PER_SHOOT, replace=False)
            first, second = first[keep], second[keep]
        better = np.where(y[first] > y[second], members[first], members[second])
        worse = np.where(y[first] > y[second], members[second], members[first])
        a += better.tolist()
        b += worse.tolist()
    shoot = np.array([decisions.shoot[i] for i in a], dtype=np.int64)
    return np.array(a, dtype=np.int64), np.array(b, dtype=np.int64), shoot


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """SRCC with average ranks for ties; None when either side is constant."""
    if len(x) < 3:
        return None
    rx, ry = _ranks(np.asarray(x, np.float64)), _ranks(np.asarray(y, np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx @ rx) * (ry @ ry))
    return float(rx @ ry / denominator) if denominator > 0 else None


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def compare(decisions: Decisions, personal: dict[int, float], active: dict[int, float], seed: int = 0) -> dict:
    """Held-out figures of both heads on the same decisions: pairwise accuracy and SRCC, each
    with a CONFIDENCE interval from resampling whole shoots (BOOTSTRAP times), and the gain."""
    a, b, shoot_of = evaluation_pairs(decisions, seed)
    shoots_list = sorted(set(decisions.shoot[i] for i in decisions.ids()))
    position = {s: k for k, s in enumerate(shoots_list)}
    result = {"pairs": int(len(a)), "ratings": len(decisions.stars), "shoots": len(shoots_list)}
    correct = {}
    for name, scores in (("personal", personal), ("active", active)):
        sa = np.array([scores.get(int(i), np.nan) for i in a])
        sb = np.array([scores.get(int(i), np.nan) for i in b])
        correct[name] = np.where(np.isnan(sa) | np.isnan(sb), 0.5, (sa > sb) + 0.5 * (sa == sb))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(shoots_list), size=(BOOTSTRAP, len(shoots_list))) if shoots_list else np.zeros((0, 0), int)
    low, high = (1 - CONFIDENCE) / 2, 1 - (1 - CONFIDENCE) / 2
    if len(a):
        at = np.array([position[s] for s in shoot_of])
        n_per = np.bincount(at, minlength=len(shoots_list)).astype(np.float64)
        sums = {name: np.bincount(at, weights=c, minlength=len(shoots_list)) for name, c in correct.items()}
        counts = n_per[draws].sum(axis=1)
        valid = counts > 0
        boot = {name: s[draws].sum(axis=1)[valid] / counts[valid] for name, s in sums.items()}
        for name, c in correct.items():
            result[f"{name}_pairwise"] = float(c.mean())
            result[f"{name}_pairwise_ci"] = [float(np.quantile(boot[name], low)), float(np.quantile(boot[name], high))]
        gain = boot["personal"] - boot["active"]
        result["gain"] = result["personal_pairwise"] - result["active_pairwise"]
        result["gain_ci"] = [float(np.quantile(gain, low)), float(np.quantile(gain, high))]
    rated = sorted(decisions.stars)
    if len(rated) >= 3:
        y = np.array([decisions.stars[i] for i in rated])
        rated_shoot = np.array([position[decisions.shoot[i]] for i in rated])
        members = [np.flatnonzero(rated_shoot == k) for k in range(len(shoots_list))]
        for name, scores in (("personal", personal), ("active", active)):
            s = np.array([scores.get(i, np.nan) for i in rated])
            result[f"{name}_srcc"] = spearman(s, y)
            values = []
            for draw in draws[: BOOTSTRAP // 4]:  # SRCC resamples cost a sort each: fewer of them
                pick = np.concatenate([members[k] for k in draw]) if len(draw) else np.zeros(0, int)
                value = spearman(s[pick], y[pick])
                if value is not None:
                    values.append(value)
            result[f"{name}_srcc_ci"] = [float(np.quantile(values, low)), float(np.quantile(values, high))] if values else None
    return result


def adoption(figures: dict, decisions_in_all: int) -> tuple[bool, str]:
    """Whether the personal head replaces the active one, and why (or why not), in a line."""
    if decisions_in_all < MIN_DECISIONS:
        return False, f"{decisions_in_all} decisions; adopting needs at least {MIN_DECISIONS}"
    if figures.get("pairs", 0) < MIN_HELD_OUT_PAIRS:
        return False, f"{figures.get('pairs', 0)} held-out comparisons; adopting needs at least {MIN_HELD_OUT_PAIRS}"
    gain, low = figures["gain"], figures["gain_ci"][0]
    said = (f"held-out pairwise accuracy {figures['personal_pairwise']:.3f} against the active head's "
            f"{figures['active_pairwise']:.3f} (gain {gain:+.3f}, {CONFIDENCE:.0%} interval {low:+.3f} to {figures['gain_ci'][1]:+.3f})")
    if gain < MARGIN:
        return False, f"{said}: not {MARGIN:.2f} better"
    if low <= 0:
        return False, f"{said}: the interval reaches 0, so the gain may be chance"
    ours, theirs = figures.get("personal_srcc"), figures.get("active_srcc")
    if ours is not None and theirs is not None and ours < theirs:
        return False, f"{said}, but held-out SRCC {ours:.3f} is below the active head's {theirs:.3f}"
    return True, said
