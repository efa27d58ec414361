"""Heads: small models over cached embeddings that turn an image's features into a score.

A head is a safetensors file: its tensors plus JSON metadata under the key "aes_index"
(kind, name, backbone, input space, and for trained heads the data, config and metrics).
Never pickle: a head file may come from anywhere, and safetensors cannot run code.

Kinds:
  zeroshot  CLIP prompts (Hentschel et al. 2022, Eq. 1): score = sum_i w_i cos(I, T_i),
            w = +1 for positive, -1 for negative prompts. Mode "context" first picks the
            image's ImageNet class and uses that class's prompts.
  linear    x -> w.x + b (the paper's linear probe, trained on the AVA mean score).
  emd       x -> [hidden ReLU ->] 10 logits -> softmax over scores 1..10 (NIMA);
            score = expected value, std = spread of the distribution.

Trainable heads may carry "input_mean"/"input_scale" so they see standardised features.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import HeadError

FORMAT_VERSION = 1
METADATA_KEY = "aes_index"
KINDS = ("zeroshot", "linear", "emd")
SPACES = ("pooled", "projected")
EMD_BINS = np.arange(1, 11, dtype=np.float32)
_CHUNK = 4096  # rows per matmul chunk: bounds memory for million-row rescoring


@dataclass
class Prediction:
    score: np.ndarray  # (N,) float32
    std: np.ndarray | None = None  # (N,) float32, EMD heads only


@dataclass
class Head:
    metadata: dict
    tensors: dict[str, np.ndarray]
    path: Path | None = None
    hash: str = field(init=False)

    def __post_init__(self):
        _validate(self.metadata, self.tensors)
        self.hash = head_hash(self.metadata, self.tensors)

    @property
    def name(self) -> str:
        return self.metadata["name"]

    @property
    def kind(self) -> str:
        return self.metadata["kind"]

    @property
    def backbone(self) -> str:
        return self.metadata["backbone"]

    @property
    def input_space(self) -> str:
        return self.metadata["input_space"]

    @property
    def scale(self) -> "Scale":
        return scale_of(self.metadata)

    def predict(self, pooled: np.ndarray, projection: np.ndarray | None, proj_norms: np.ndarray | None = None) -> Prediction:
        """Score pooled image features (as cached in the index), chunk by chunk.

        `proj_norms` (the norm of each row's projected vector, cached with the embedding)
        lets projected-space heads skip projecting every row: see Features.matmul.
        """
        parts = []
        for i in range(0, len(pooled), _CHUNK):
            norms = None if proj_norms is None else proj_norms[i : i + _CHUNK]
            features = Features(np.asarray(pooled[i : i + _CHUNK], np.float32), projection, self.input_space, norms)
            parts.append(_PREDICTORS[self.kind](self, features))
        if not parts:
            return Prediction(np.zeros(0, np.float32), np.zeros(0, np.float32) if self.kind == "emd" else None)
        score = np.concatenate([p.score for p in parts]).astype(np.float32)
        std = None if parts[0].std is None else np.concatenate([p.std for p in parts]).astype(np.float32)
        return Prediction(score, std)


@dataclass(frozen=True)
class Scale:
    """What a head's scores mean and the range they are on: what `top` and the gallery
    show beside the numbers, and what threshold cut points are checked against."""

    text: str  # e.g. "mean rating, about 1-10 (LAION aesthetic predictor)"
    low: float | None = None  # None: no range on record (a linear head's scores are unbounded)
    high: float | None = None

    @property
    def short(self) -> str:
        if self.low is None or self.high is None:
            return self.text
        return f"{self.low:g}-{self.high:g}" if self.low >= 0 else f"{self.low:g} to {self.high:g}"

    def as_dict(self) -> dict:
        return {"text": self.text, "low": self.low, "high": self.high, "short": self.short}


def scale_of(metadata: dict) -> Scale:
    """The scale of a head's scores, from its metadata (a head file's, or the copy the index
    keeps in its heads table): `score_range` where the head records one, else what its
    kind implies."""
    text = metadata.get("score_scale")
    if metadata.get("score_range"):
        low, high = (float(v) for v in metadata["score_range"])
        return Scale(text or f"{low:g}-{high:g}", low, high)
    if metadata.get("kind") == "zeroshot":
        # sum_i w_i cos(I, T_i) with w = +-1: each cosine lies in [-1, 1]
        n = len(metadata.get("positive") or [1]) + len(metadata.get("negative") or [1])
        return Scale(text or f"cosine difference (zero-shot), {-n} to {n}", float(-n), float(n))
    if metadata.get("kind") == "emd":
        return Scale(text or "expected AVA score, 1-10", 1.0, 10.0)  # a mean over the bins 1..10
    return Scale(text or "unbounded (linear head, no range on record)")


def emd_distribution(head: Head, pooled: np.ndarray, projection: np.ndarray | None) -> np.ndarray:
    """An EMD head's full 10-bin distribution per image (predict() gives its mean and std)."""
    if head.kind != "emd":
        raise HeadError(f"head {head.name!r} is a {head.kind} head; only EMD heads give a distribution")
    features = Features(np.asarray(pooled, np.float32), projection, head.input_space)
    return _emd_probabilities(head, features)


@dataclass
class Features:
    """Image features in the space a head expects, used only through matmul.

    "pooled" is the cached vector itself; "projected" is normalise(pooled @ P). Heads only
    ever apply a linear map first, so normalise(x P) A = x (P A) / |x P|: with |x P| cached,
    a million rows cost one small matmul instead of a full projection.
    """

    pooled: np.ndarray
    projection: np.ndarray | None
    space: str
    proj_norms: np.ndarray | None = None

    def matmul(self, matrix: np.ndarray) -> np.ndarray:
        """features @ matrix, with matrix of shape (space_dim, K)."""
        if self.space == "pooled":
            return product(self.pooled, matrix)
        folded = matrix if self.projection is None else product(self.projection, matrix)
        return product(self.pooled, folded) / self.norms()[:, None]

    def norms(self) -> np.ndarray:
        if self.proj_norms is None:
            self.proj_norms = projected_norms(self.pooled, self.projection)
        return np.maximum(self.proj_norms, 1e-12)

    def dense(self) -> np.ndarray:
        return self.matmul(np.eye(self.dim, dtype=np.float32))

    @property
    def dim(self) -> int:
        if self.space == "pooled" or self.projection is None:
            return self.pooled.shape[1]
        return self.projection.shape[1]


_NARROW = 16  # columns up to which product() avoids BLAS


def product(rows: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """rows @ matrix, for the tall-and-narrow products heads are made of.

    Up to _NARROW columns (a zero-shot pair, a linear probe, an EMD head's 10 bins) numpy's
    own loop does it on one core as fast as BLAS does on two, and doesn't stall when the
    other cores are busy: BLAS's worker threads wait for each other there. Measured for a
    million 768-d rows on 2 cores with other work running: 1.3 s every time, against
    1.3-5.5 s through BLAS.
    """
    if matrix.ndim == 2 and matrix.shape[1] <= _NARROW:
        return np.einsum("ij,kj->ik", rows, np.ascontiguousarray(matrix.T, dtype=rows.dtype))
    return rows @ matrix


def projected_norms(pooled: np.ndarray, projection: np.ndarray | None) -> np.ndarray:
    projected = pooled if projection is None else pooled @ projection
    return np.linalg.norm(projected, axis=1).astype(np.float32)


def prepare_features(pooled: np.ndarray, projection: np.ndarray | None, space: str) -> np.ndarray:
    """Dense features in the space a head expects (for training; predict avoids this)."""
    return Features(np.asarray(pooled, np.float32), projection, space).dense()


def _first_layer(head: Head, x: Features, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x -> standardise(x) @ weight.T + bias, with the standardisation folded into weight."""
    weight = weight.reshape(-1, x.dim)  # (K, D)
    if "input_mean" in head.tensors:
        scale, mean = head.tensors["input_scale"], head.tensors["input_mean"]
        return x.matmul((weight * scale).T) + (bias - (weight * scale) @ mean)
    return x.matmul(weight.T) + bias


def _predict_zeroshot(head: Head, x: Features) -> Prediction:
    prompts, weights = head.tensors["prompts"], head.tensors["weights"]
    if head.metadata.get("mode") != "context":
        return Prediction(x.matmul(prompts.T) @ weights)
    # Context-aware: prompts are (adjectives x classes) rows; use the image's own class.
    classes = head.tensors["classes"]
    n_adj = len(weights)
    best_class = np.argmax(x.matmul(classes.T), axis=1)
    cosines = x.matmul(prompts.T).reshape(len(best_class), n_adj, len(classes))
    picked = np.take_along_axis(cosines, best_class[:, None, None], axis=2)[:, :, 0]
    return Prediction(picked @ weights)


def _predict_linear(head: Head, x: Features) -> Prediction:
    return Prediction(_first_layer(head, x, head.tensors["weight"], head.tensors["bias"].reshape(-1))[:, 0])


def _emd_probabilities(head: Head, x: Features) -> np.ndarray:
    if "hidden_weight" in head.tensors:
        hidden = np.maximum(_first_layer(head, x, head.tensors["hidden_weight"], head.tensors["hidden_bias"]), 0.0)
        logits = product(hidden, head.tensors["weight"].T) + head.tensors["bias"]
    else:
        logits = _first_layer(head, x, head.tensors["weight"], head.tensors["bias"])
    return softmax(logits)


def _predict_emd(head: Head, x: Features) -> Prediction:
    probs = _emd_probabilities(head, x)
    mean = probs @ EMD_BINS
    # Spread around the mean, not E[x^2] - E[x]^2: that difference cancels badly in
    # float32 when the distribution is nearly certain.
    std = np.sqrt(((EMD_BINS[None, :] - mean[:, None]) ** 2 * probs).sum(axis=1))
    return Prediction(mean, std)


_PREDICTORS: dict[str, Callable[[Head, np.ndarray], Prediction]] = {
    "zeroshot": _predict_zeroshot,
    "linear": _predict_linear,
    "emd": _predict_emd,
}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _validate(metadata: dict, tensors: dict[str, np.ndarray]) -> None:
    missing = {"name", "kind", "backbone", "input_space"} - set(metadata)
    if missing:
        raise HeadError(f"head metadata lacks {', '.join(sorted(missing))}")
    if metadata["kind"] not in KINDS:
        raise HeadError(f"unknown head kind {metadata['kind']!r} (known: {', '.join(KINDS)})")
    if metadata["input_space"] not in SPACES:
        raise HeadError(f"unknown input space {metadata['input_space']!r}")
    required = {"zeroshot": {"prompts", "weights"}, "linear": {"weight", "bias"}, "emd": {"weight", "bias"}}
    absent = required[metadata["kind"]] - set(tensors)
    if absent:
        raise HeadError(f"{metadata['kind']} head {metadata['name']!r} lacks tensors {', '.join(sorted(absent))}")


def head_hash(metadata: dict, tensors: dict[str, np.ndarray]) -> str:
    """Content hash: same tensors and same meaning -> same hash, whenever it was built."""
    digest = hashlib.sha256()
    stable = {k: v for k, v in metadata.items() if k not in ("created", "path", "format")}
    digest.update(json.dumps(stable, sort_keys=True, default=str).encode())
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(name.encode() + str(array.dtype).encode() + str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def save_head(head: Head, path: str | os.PathLike) -> Path:
    """Write atomically (temp + rename) so a reader never sees half a head."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(head.metadata, format=FORMAT_VERSION)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tensors = {k: np.ascontiguousarray(v) for k, v in head.tensors.items()}
    save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True, default=str)})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates 0600; a head is meant to be shared
    os.replace(tmp, path)
    return path


def load_head(path: str | os.PathLike) -> Head:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise HeadError(f"head file not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise HeadError(f"{path.name} is not a readable safetensors head: {exc}") from exc
    if raw is None:
        raise HeadError(f"{path.name} has no aes-index metadata; is it a head file?")
    try:
        metadata = json.loads(raw)
    except ValueError as exc:
        raise HeadError(f"{path.name}: head metadata is not valid JSON") from exc
    if metadata.get("format", 1) > FORMAT_VERSION:
        raise HeadError(f"{path.name} needs a newer aes-index (head format {metadata['format']})")
    return Head(metadata, tensors, path)


def shipped_heads_dir() -> Path:
    return Path(str(resources.files("aes_index") / "heads"))


def shipped_heads() -> Iterable[Head]:
    for path in sorted(shipped_heads_dir().glob("*.safetensors")):
        yield load_head(path)


def shipped_head_named(name: str) -> Head | None:
    """The shipped head called `name` (its metadata name, e.g. "laion-v1-vit-b-32"), if any."""
    return next((head for head in shipped_heads() if head.name == name), None)


# --- which scorer `--head auto` uses -----------------------------------------------------

DEFAULT_ZEROSHOT = "zeroshot"  # the paper's ensemble, "outstanding" vs "horrible"
DEFAULT_ZEROSHOT_NAME = "zeroshot-ensemble-outstanding-vs-horrible"
# AVA figures published for the default zero-shot scorer, by backbone. The paper measured
# ViT-B/32 only; elsewhere the zero-shot default has no figure on record.
ZEROSHOT_AVA = {
    "ViT-B-32/openai": {
        "srcc": 0.539, "plcc": 0.554, "accuracy": 0.756,
        "source": "Hentschel, Kobs, Hotho 2022, CLIP knows image aesthetics, Table 1 (ViT-B/32, AVA test set)",
    },
}


@dataclass
class Candidate:
    """A scorer `--head auto` could use for a backbone, with the AVA figure on record."""

    name: str
    head: Head | None  # None: the zero-shot default, built (or read from its cache) on use
    ava: dict | None  # {"srcc": ..., "source": ...}, or None when nothing is on record

    @property
    def srcc(self) -> float | None:
        return None if self.ava is None else self.ava.get("srcc")

    def describe(self) -> str:
        if self.srcc is None:
            return f"{self.name} (no published AVA figure)"
        return f"{self.name} (AVA SRCC {self.srcc:.3f}, {self.ava['source']})"


def ava_figure(head: Head) -> dict | None:
    """A head's AVA SRCC on record: measured by aes-train on AVA's test split (`metrics`,
    what `aes-train export` requires), else published by its authors (`published.ava`)."""
    metrics = head.metadata.get("metrics") or {}
    if isinstance(metrics.get("srcc"), (int, float)):
        return {**metrics, "source": metrics.get("source") or f"aes-train evaluate, {metrics.get('split', 'test')} split"}
    published = (head.metadata.get("published") or {}).get("ava")
    if published and isinstance(published.get("srcc"), (int, float)):
        return published
    return None


def candidates(backbone_key: str) -> list[Candidate]:
    """Every scorer for this backbone, in the order `--head auto` prefers them.

    The best AVA SRCC on record wins: it is the one figure every scorer can be compared on
    (the paper's Table 1, LAION's heads as measured by others, ours by aes-train). A scorer
    without a figure never beats one with a figure; among scorers without one, a shipped
    (trained) head comes before the zero-shot prompts. So ViT-B-32/openai keeps the
    paper's zero-shot ensemble (0.539) over LAION v1 (no AVA figure), and ViT-L-14/openai
    takes LAION v2 (0.665)."""
    shipped = [Candidate(h.name, h, ava_figure(h)) for h in shipped_heads() if h.backbone == backbone_key]
    zeroshot = Candidate(DEFAULT_ZEROSHOT_NAME, None, ZEROSHOT_AVA.get(backbone_key))
    # sorted() is stable: on equal keys the shipped heads stay ahead of the zero-shot one.
    return sorted([*shipped, zeroshot], key=lambda c: (c.srcc is None, -(c.srcc or 0.0)))


def shipped_head_for(backbone_key: str) -> Head | None:
    """The shipped head `--head auto` uses for this backbone, or None (zero-shot is best)."""
    return candidates(backbone_key)[0].head


def default_reason(backbone_key: str) -> str:
    """Why `--head auto` picks what it picks, in one line (for `doctor`)."""
    ranked = candidates(backbone_key)
    best, others = ranked[0], ranked[1:]
    if best.srcc is not None:
        why = f"best AVA SRCC on record for {backbone_key}: {best.srcc:.3f} ({best.ava['source']})"
    elif best.head is not None:
        why = f"no scorer for {backbone_key} has an AVA figure on record; a trained head comes before zero-shot prompts"
    else:
        why = f"no head ships for {backbone_key}: the paper's zero-shot ensemble"
    if others:
        why += "; also available: " + ", ".join(
            c.describe() + ("" if c.head is None else f" as --head {c.name}") for c in others
        )
    return why


def check_compatible(head: Head, backbone_key: str, pooled_dim: int, embed_dim: int) -> None:
    if head.backbone != backbone_key:
        raise HeadError(
            f"head {head.name!r} was made for backbone {head.backbone}, but the index uses {backbone_key}; "
            "pick a head for this backbone or change --model/--pretrained (or --preset)"
        )
    expected = pooled_dim if head.input_space == "pooled" else embed_dim
    dim = head.metadata.get("input_dim")
    if dim is not None and int(dim) != expected:
        raise HeadError(f"head {head.name!r} expects {dim}-d features, the backbone gives {expected}")


def head_named(spec: str) -> Head:
    """A head file, else a shipped head by its name ("laion-v1-vit-b-32"); a file of that
    name wins, so a user's own head is never shadowed by a shipped one."""
    path = Path(spec).expanduser()
    if path.is_file() or path.suffix == ".safetensors" or os.sep in spec:
        return load_head(path)
    shipped = shipped_head_named(spec)
    if shipped is None:
        names = ", ".join(sorted(head.name for head in shipped_heads())) or "none"
        raise HeadError(f"no head file {spec!r} and no shipped head of that name (shipped: {names})")
    return shipped


def scale_in_index(index, head_id: str) -> Scale:
    """The scale of a head whose scores the index holds, from the metadata it recorded."""
    metadata = index.scores.head_metadata(head_id)
    return scale_of(metadata) if metadata else Scale("unknown (the index holds no description of this head)")
