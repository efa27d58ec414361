"""A linear head trained to rank less distorted versions of a photo above more distorted ones.

Pairs come from one photo at a time (distort.py makes the versions): for each
distortion, the chain original > level 1 > level 2 > ... gives every ordered pair of
it, so (original, distorted) and (milder, stronger). Versions of different photos, or
of different distortions, are never compared: whether a blurred landscape is worse than
a noisy portrait is not something the distortions tell.

The head is x -> w.((x - mean) * scale) + b over the pooled features, trained with
a pairwise loss on score differences, which the bias cancels out of:

  logistic  log(1 + exp(-(s_better - s_worse)))      RankNet with a certain label
  margin    max(0, margin - (s_better - s_worse))    the margin ranking loss

Adam with L2 weight decay, seeds fixed, early stopping on the pairs of held-out photos.
Photos are split, not pairs: the test accuracy is measured on photos whose versions the
head never saw, so it says how well it ranks new photos, not how well it remembers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from aes_index.errors import ConfigError
from aes_index.model.heads import Head

from .ava import unit_hash
from .distort import ORIGINAL, VersionEmbeddings
from .errors import NotEnoughData, TrainingDiverged
from .fit import single_thread, standardiser

LOSSES = ("logistic", "margin")
PARTS = ("train", "val", "test")


@dataclass
class RankConfig:
    loss: str = "logistic"  # logistic | margin
    margin: float = 1.0  # margin loss only
    lr: float = 1e-3
    weight_decay: float = 1e-3
    batch_size: int = 256  # pairs per step
    max_epochs: int = 100
    patience: int = 10  # epochs without a better early-stopping loss before we stop
    seed: int = 0
    test_fraction: float = 0.2  # photos held out for the reported accuracy
    val_fraction: float = 0.15  # photos held out for early stopping

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ConfigError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError("--batch-size, --max-epochs and --patience must be positive, --lr above 0, --weight-decay not negative")
        if not (0 < self.test_fraction < 1 and 0 < self.val_fraction < 1 and self.test_fraction + self.val_fraction < 1):
            raise ConfigError("--test-fraction and --val-fraction must be between 0 and 1, and leave photos to train on")

    def as_dict(self) -> dict:
        return asdict(self)


# --- which photos train, stop early, test ------------------------------------------------


def assign_parts(keys: np.ndarray, test_fraction: float, val_fraction: float, seed: int) -> np.ndarray:
    """"train" / "val" / "test" per photo key: the lowest seeded hashes are test, the
    next ones val. Exact counts, not a hash threshold: with twenty photos a threshold
    could leave none to test on. The same photos always get the same parts."""
    keys = np.asarray(keys, dtype=np.int64)
    order = np.argsort(unit_hash(keys, seed, "distort-split"), kind="stable")
    n_test = max(1, int(round(test_fraction * len(keys))))
    n_val = max(1, int(round(val_fraction * len(keys))))
    parts = np.full(len(keys), "train", dtype=object)
    parts[order[:n_test]] = "test"
    parts[order[n_test : n_test + n_val]] = "val"
    return parts


def split_photos(keys: np.ndarray, config: RankConfig) -> dict[int, str]:
    """{photo key: part}; every part must hold a photo."""
    keys = np.unique(np.asarray(keys, dtype=np.int64))
    if len(keys) < 3:
        raise NotEnoughData(f"{len(keys)} usable photos; distortion ranking needs at least 3 (train, early stopping, test), better dozens")
    parts = assign_parts(keys, config.test_fraction, config.val_fraction, config.seed)
    if not (parts == "train").any():
        raise NotEnoughData(f"{len(keys)} photos leave none to train on after holding out test and early-stopping photos; add photos")
    return dict(zip(keys.tolist(), parts.tolist()))


# --- pairs ------------------------------------------------------------------------------


@dataclass
class Pairs:
    """Row indices into a VersionEmbeddings: `better` should score above `worse`."""

    better: np.ndarray  # (P,) int64
    worse: np.ndarray  # (P,) int64
    distortion: np.ndarray  # (P,) str
    from_original: np.ndarray  # (P,) bool: the better one is the undistorted photo

    def __len__(self) -> int:
        return len(self.better)

    def subset(self, mask: np.ndarray) -> "Pairs":
        return Pairs(self.better[mask], self.worse[mask], self.distortion[mask], self.from_original[mask])


def ranking_pairs(versions: VersionEmbeddings) -> Pairs:
    """Every ordered pair within each (photo, distortion) chain original > 1 > 2 > ..."""
    levels, names = versions.levels, versions.distortion_names()
    better, worse, distortion = [], [], []
    for key in np.unique(versions.photo):
        rows = np.flatnonzero(versions.photo == key)
        originals = rows[levels[rows] == 0]
        for name in np.unique(names[rows]):
            if name == ORIGINAL:
                continue
            distorted = rows[names[rows] == name]
            chain = np.concatenate([originals, distorted[np.argsort(levels[distorted], kind="stable")]])
            for i in range(len(chain)):
                for j in range(i + 1, len(chain)):
                    better.append(chain[i])
                    worse.append(chain[j])
                    distortion.append(name)
    better_rows = np.array(better, dtype=np.int64)
    return Pairs(better_rows, np.array(worse, dtype=np.int64), np.array(distortion, dtype=object), levels[better_rows] == 0)


def pairs_of(pairs: Pairs, versions: VersionEmbeddings, parts: dict[int, str], part: str) -> Pairs:
    """The pairs whose photo is in `part` (both rows of a pair are the same photo)."""
    in_part = np.array([parts.get(int(k)) == part for k in versions.photo[pairs.better]], dtype=bool)
    return pairs.subset(in_part)


# --- training ---------------------------------------------------------------------------


def pair_loss(kind: str, margin: float):
    """Loss on score differences d = s_better - s_worse (want d > 0)."""
    import torch

    if kind == "logistic":
        return lambda d: torch.nn.functional.softplus(-d).mean()
    return lambda d: torch.relu(margin - d).mean()


@dataclass
class RankResult:
    weight: np.ndarray  # (D,) over standardised features
    mean: np.ndarray
    scale: np.ndarray
    history: dict = field(default_factory=dict)

    def scores(self, pooled: np.ndarray) -> np.ndarray:
        return ((pooled - self.mean) * self.scale) @ self.weight


def train_ranker(config: RankConfig, pooled: np.ndarray, train: Pairs, val: Pairs, log=print) -> RankResult:
    """Adam on the pairwise loss; returns the weights of the epoch best on `val`."""
    if len(train) == 0 or len(val) == 0:
        raise NotEnoughData("no distortion pairs to train or stop early on; are the photos decodable?")
    rows = np.unique(np.concatenate([train.better, train.worse]))
    mean, scale = standardiser(pooled[rows])  # from training photos only
    features = ((pooled - mean) * scale).astype(np.float32)
    with single_thread():
        weight, history = _train(config, features, train, val, log)
    return RankResult(weight, mean, scale, history)


def _train(config: RankConfig, features: np.ndarray, train: Pairs, val: Pairs, log):
    import torch

    torch.manual_seed(config.seed)
    order_generator = torch.Generator().manual_seed(config.seed)
    x = torch.from_numpy(features)
    loss_fn = pair_loss(config.loss, config.margin)
    # Zero start: every pair begins exactly undecided, and the result needs no random init.
    weight = torch.zeros(x.shape[1], requires_grad=True)
    optimizer = torch.optim.Adam([weight], lr=config.lr, weight_decay=config.weight_decay)
    train_b, train_w = torch.from_numpy(train.better), torch.from_numpy(train.worse)
    val_diff = x[torch.from_numpy(val.better)] - x[torch.from_numpy(val.worse)]

    best_loss, best_epoch, best_weight = math.inf, 0, weight.detach().clone()
    val_losses, val_accuracy = [], []
    for epoch in range(1, config.max_epochs + 1):
        order = torch.randperm(len(train_b), generator=order_generator)
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = loss_fn((x[train_b[batch]] - x[train_w[batch]]) @ weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            differences = val_diff @ weight
            val_loss = float(loss_fn(differences))
        if not math.isfinite(val_loss):
            raise TrainingDiverged(f"the ranking loss became {val_loss} in epoch {epoch}; lower --lr (now {config.lr})")
        val_losses.append(round(val_loss, 6))
        val_accuracy.append(round(float(_accuracy_of(differences.numpy())), 4))
        if val_loss < best_loss - 1e-7:
            best_loss, best_epoch, best_weight = val_loss, epoch, weight.detach().clone()
        elif epoch - best_epoch >= config.patience:
            break  # early stopping: `patience` epochs without improvement
        if epoch % 10 == 0:
            log(f"epoch {epoch}: early-stopping loss {val_loss:.4f}, accuracy {val_accuracy[-1]:.3f} (best loss at {best_epoch})")
    history = {"epochs": len(val_losses), "best_epoch": best_epoch, "best_val_loss": best_loss,
               "val_losses": val_losses, "val_accuracy": val_accuracy}
    return best_weight.numpy().astype(np.float32), history


# --- evaluation -------------------------------------------------------------------------


def _accuracy_of(differences: np.ndarray) -> float:
    """Share of pairs ranked right; a tie counts half (a constant head scores 0.5)."""
    if len(differences) == 0:
        return float("nan")
    return float(np.mean((differences > 0) + 0.5 * (differences == 0)))


def pairwise_accuracy(scores: np.ndarray, pairs: Pairs) -> dict:
    """Overall, (original vs distorted), (milder vs stronger), and per distortion."""
    differences = scores[pairs.better] - scores[pairs.worse]
    result = {
        "pairs": int(len(pairs)),
        "pairwise_accuracy": _accuracy_of(differences),
        "original_vs_distorted": _accuracy_of(differences[pairs.from_original]),
        "milder_vs_stronger": _accuracy_of(differences[~pairs.from_original]),
        "by_distortion": {str(name): round(_accuracy_of(differences[pairs.distortion == name]), 4)
                          for name in sorted(set(pairs.distortion.tolist()))},
    }
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}


@dataclass
class RankOutcome:
    result: RankResult
    metrics: dict  # on the test photos' pairs
    val_metrics: dict  # on the early-stopping photos' pairs
    split: dict  # photos per part
    training_originals: np.ndarray  # (n, D) the undistorted training photos: they set the bias


def train_and_measure(config: RankConfig, versions: VersionEmbeddings, parts: dict[int, str], log=print) -> RankOutcome:
    """Pairs by part, the trained head, and its accuracy on photos it never saw."""
    pairs = ranking_pairs(versions)
    train, val, test = (pairs_of(pairs, versions, parts, part) for part in PARTS)
    log(f"training on {len(train)} pairs, early stopping on {len(val)}, testing on {len(test)}")
    result = train_ranker(config, versions.pooled, train, val, log)
    scores = result.scores(versions.pooled)
    photo_part = np.array([parts[int(k)] for k in versions.photo], dtype=object)
    photos = {part: len(np.unique(versions.photo[photo_part == part])) for part in PARTS}
    return RankOutcome(
        result,
        metrics={"split": "test", "photos": photos["test"], **pairwise_accuracy(scores, test)},
        val_metrics=pairwise_accuracy(scores, val),
        split=photos,
        training_originals=versions.pooled[(versions.levels == 0) & (photo_part == "train")],
    )


# --- the head ---------------------------------------------------------------------------


def ranking_head(name: str, result: RankResult, pooled_originals: np.ndarray, backbone_key: str, metadata: dict) -> Head:
    """A linear head aes-index can score with. The bias, which ranking leaves free, puts
    the average training original at 0: below 0 looks more like a distorted version."""
    bias = -float(np.mean(result.scores(pooled_originals))) if len(pooled_originals) else 0.0
    tensors = {"weight": result.weight, "bias": np.array([bias], np.float32),
               "input_mean": result.mean, "input_scale": result.scale}
    meta = {
        "name": name,
        "kind": "linear",
        "backbone": backbone_key,
        "input_space": "pooled",
        "input_dim": int(len(result.weight)),
        "score_scale": "distortion ranking: 0 = the average training photo, lower = more like a distorted version",
        "history": result.history,
        **metadata,
    }
    return Head(meta, {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()})
