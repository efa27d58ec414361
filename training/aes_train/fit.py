"""`aes-train fit`: heads over cached embeddings (Hentschel et al. 2022, sections 4.2-4.3).

  linear  the linear probe: x -> w.x + b, MSE against the AVA mean score
  emd     NIMA's head: x -> [hidden ReLU ->] 10 logits -> softmax, EMD (r=2) against the
          vote histogram; the score is the expected value of the distribution

Training is the paper's recipe by default: SGD with momentum 0.5, lr 0.01, batch 128,
early stopping on the held-out 10% of the training split with patience 10, seeds fixed.
The linear probe can also be solved in closed form (`solver="ridge"`): the exact least-
squares fit, with the ridge strength chosen on the same held-out subset.

Features are standardised with the training split's mean and std; both travel in the
head (input_mean / input_scale), so the head reads raw cached vectors when scoring.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from aes_index.model.heads import Head

from .errors import TrainingDiverged
from .losses import emd_loss

KINDS = ("emd", "linear")
SOLVERS = ("sgd", "ridge")
RIDGE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)


@dataclass
class FitConfig:
    kind: str = "emd"  # emd | linear
    hidden: int = 0  # > 0: one hidden ReLU layer of this width (the optional small MLP; emd only)
    space: str = "pooled"  # pooled (before CLIP's projection, as the paper's probe) | projected
    solver: str = "sgd"  # sgd | ridge (closed-form least squares; linear only)
    lr: float = 0.01
    momentum: float = 0.5
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 10  # epochs without a better early-stopping loss before we stop
    seed: int = 0
    ridge_alphas: tuple[float, ...] = RIDGE_ALPHAS

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitResult:
    tensors: dict[str, np.ndarray]
    history: dict = field(default_factory=dict)


# --- the models --------------------------------------------------------------------------


def build_model(config: FitConfig, dim: int):
    import torch.nn as nn

    outputs = 10 if config.kind == "emd" else 1
    if config.hidden > 0:
        return nn.Sequential(nn.Linear(dim, config.hidden), nn.ReLU(), nn.Linear(config.hidden, outputs))
    return nn.Sequential(nn.Linear(dim, outputs))


def loss_function(kind: str):
    import torch

    if kind == "emd":
        return lambda logits, target: emd_loss(torch.softmax(logits, dim=1), target)
    return lambda output, target: torch.mean((output[:, 0] - target) ** 2)


def start_from_prior(model, kind: str, targets: np.ndarray) -> None:
    """Set the output bias so the untrained head predicts the training split's average:
    the first epochs then learn what distinguishes photos, not where the mean lies."""
    import torch

    last = model[-1]
    with torch.no_grad():
        if kind == "emd":
            prior = np.clip(targets.mean(axis=0), 1e-6, None)
            last.bias.copy_(torch.from_numpy(np.log(prior / prior.sum()).astype(np.float32)))
        else:
            last.bias.fill_(float(targets.mean()))


# --- the training loop -------------------------------------------------------------------


@contextlib.contextmanager
def single_thread():
    """A 128-row batch through a head is microseconds of work: handing it to several
    threads costs more than it saves, and on a busy machine spinning threads stall."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_sgd(config: FitConfig, x_train, y_train, x_val, y_val, log=print):
    """Minibatch SGD with early stopping; returns (model at its best epoch, history)."""
    with single_thread():
        return _train_sgd(config, x_train, y_train, x_val, y_val, log)


def _train_sgd(config: FitConfig, x_train, y_train, x_val, y_val, log):
    import torch

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x_train, y_train = torch.from_numpy(x_train), torch.from_numpy(y_train)
    x_val, y_val = torch.from_numpy(x_val), torch.from_numpy(y_val)

    model = build_model(config, x_train.shape[1])
    start_from_prior(model, config.kind, y_train.numpy())
    loss_fn = loss_function(config.kind)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)

    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    val_losses = []
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        model.eval()
        with torch.no_grad():
            val_loss = float(loss_fn(model(x_val), y_val))
        if not math.isfinite(val_loss):
            raise TrainingDiverged(
                f"the loss became {val_loss} in epoch {epoch}; lower --lr (now {config.lr})"
                + (" or use --solver ridge" if config.kind == "linear" else "")
            )
        val_losses.append(round(val_loss, 6))
        if val_loss < best_loss:
            best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            break  # early stopping: `patience` epochs without improvement
        if epoch % 10 == 0:
            log(f"epoch {epoch}: early-stopping loss {val_loss:.5f} (best {best_loss:.5f} at {best_epoch})")

    model.load_state_dict(best_state)
    history = {"epochs": len(val_losses), "best_epoch": best_epoch, "best_val_loss": best_loss, "val_losses": val_losses}
    return model, history


def ridge_path(x: np.ndarray, y: np.ndarray, alphas) -> dict[float, tuple[np.ndarray, float]]:
    """Least squares with an L2 penalty alpha * n * |w|^2, for several alphas at once.

    One eigendecomposition of X'X serves every alpha: w = V diag(1/(e + alpha n)) V' X'(y - mean y).
    x should be standardised; the intercept (mean y) is not penalised.
    """
    x = x.astype(np.float64)
    y_mean = float(y.mean())
    eigenvalues, vectors = np.linalg.eigh(x.T @ x)
    projected = vectors.T @ (x.T @ (y.astype(np.float64) - y_mean))
    return {alpha: (vectors @ (projected / (eigenvalues + alpha * len(x))), y_mean) for alpha in alphas}


def solve_ridge(config: FitConfig, x_train, y_train, x_val, y_val):
    """The linear probe in closed form; the ridge strength is the one best on val."""
    path = ridge_path(x_train, y_train, config.ridge_alphas)
    losses = {alpha: float(np.mean((x_val @ weight + bias - y_val) ** 2)) for alpha, (weight, bias) in path.items()}
    alpha = min(losses, key=losses.get)
    weight, bias = path[alpha]
    history = {"alpha": alpha, "best_val_loss": losses[alpha], "val_losses": {str(a): round(v, 6) for a, v in losses.items()}}
    return weight.astype(np.float32), np.float32(bias), history


# --- from features to a head's tensors ---------------------------------------------------


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) with (x - mean) * scale of unit variance; constant features left at 0."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    scale = np.where(std > 1e-6, 1.0 / np.maximum(std, 1e-6), 0.0)
    return mean.astype(np.float32), scale.astype(np.float32)


def fit_head(config: FitConfig, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, log=print) -> FitResult:
    """Train on raw features; y is the mean score (linear) or the vote histogram (emd)."""
    _check(config)
    mean, scale = standardiser(x_train)
    xs_train = ((x_train - mean) * scale).astype(np.float32)
    xs_val = ((x_val - mean) * scale).astype(np.float32)
    y_train, y_val = y_train.astype(np.float32), y_val.astype(np.float32)
    tensors = {"input_mean": mean, "input_scale": scale}

    if config.solver == "ridge":
        weight, bias, history = solve_ridge(config, xs_train, y_train, xs_val, y_val)
        tensors.update(weight=weight, bias=np.array([bias], np.float32))
        return FitResult(tensors, history)

    model, history = train_sgd(config, xs_train, y_train, xs_val, y_val, log)
    layers = [m for m in model if hasattr(m, "weight")]
    out = layers[-1]
    tensors["weight"] = out.weight.detach().numpy().copy()
    tensors["bias"] = out.bias.detach().numpy().copy()
    if config.kind == "linear":
        tensors["weight"] = tensors["weight"].reshape(-1)
    if config.hidden > 0:
        tensors["hidden_weight"] = layers[0].weight.detach().numpy().copy()
        tensors["hidden_bias"] = layers[0].bias.detach().numpy().copy()
    return FitResult(tensors, history)


def _check(config: FitConfig) -> None:
    from aes_index.errors import ConfigError

    if config.kind not in KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, got {config.kind!r}")
    if config.solver not in SOLVERS:
        raise ConfigError(f"--solver must be one of {', '.join(SOLVERS)}, got {config.solver!r}")
    if config.solver == "ridge" and (config.kind != "linear" or config.hidden):
        raise ConfigError("--solver ridge fits the linear probe only (--kind linear, no --hidden)")
    if config.hidden and config.kind != "emd":
        raise ConfigError("--hidden (the small MLP) is for --kind emd; aes-index's linear heads have no hidden layer")
    if config.batch_size < 1 or config.max_epochs < 1 or config.patience < 1 or config.lr <= 0:
        raise ConfigError("--batch-size, --max-epochs and --patience must be positive, and --lr above 0")


def targets_for(kind: str, examples) -> np.ndarray:
    return examples.histograms if kind == "emd" else examples.means


def make_head(name: str, config: FitConfig, result: FitResult, backbone_key: str, input_dim: int, metadata: dict) -> Head:
    """A head with the full recipe in its metadata: the file describes itself."""
    base = {
        "name": name,
        "kind": config.kind,
        "backbone": backbone_key,
        "input_space": config.space,
        "input_dim": int(input_dim),
        "config": config.as_dict(),
        "history": result.history,
        "threshold": 5.0,
        "score_scale": "AVA mean score, 1-10",
    }
    return Head({**base, **metadata}, {k: np.ascontiguousarray(v, np.float32) for k, v in result.tensors.items()})
