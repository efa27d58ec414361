"""The CLIP backbone: which open_clip model and weights, on which device, in which dtype.

We keep the image tower's *pooled* features (before CLIP's projection) because linear
probes and EMD heads work best there, and store the projection matrix once per backbone:
the projected, normalised embedding that zero-shot prompts compare against is derived
from the pooled vector whenever it is needed (see heads.prepare_features).

Weights are resolved the way open_clip does it (pretrained tag -> Hugging Face cache), but
the cache is consulted first without touching the network, so an offline machine with no
cached weights gets one clear message immediately instead of a minute of retries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, WeightsUnavailable

log = logging.getLogger(__name__)

# Set before torch loads (this module imports it lazily). When a parallel region ends,
# libgomp's threads spin for a while by default; on the cores they share with the decode
# workers that spinning burns the time the workers need, and a thread preempted by a
# worker leaves its partner spinning at the next barrier. Measured on 2 cores (24 MP
# JPEGs, bf16 ViT-B-32): 12 img/s with the default, 21 img/s with passive waiting. A
# value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

RANDOM_WEIGHTS = "random"  # randomly initialised weights (seeded): for benchmarks only
_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass(frozen=True)
class PreprocessSpec:
    """How a decoded RGB image becomes the model's input: resize, centre crop, normalise."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"  # open_clip's names: shortest | longest | squash

    def describe(self) -> str:
        """Short provenance string stored with every score."""
        return f"draft-decode;{self.resize_mode}-{self.interpolation}-{self.size};crop-center"


@dataclass(frozen=True)
class BackboneInfo:
    """Everything about a loaded backbone that the index records, without the model."""

    key: str  # stable identity, e.g. "ViT-B-32/openai" or "tiny/file:ab12…"
    model: str
    pretrained: str
    pooled_dim: int
    embed_dim: int
    preprocess: PreprocessSpec

    def as_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "BackboneInfo":
        data = json.loads(text)
        spec = data.pop("preprocess")
        spec["mean"], spec["std"] = tuple(spec["mean"]), tuple(spec["std"])
        return cls(preprocess=PreprocessSpec(**spec), **data)


def resolve_device(requested: str = "auto") -> "torch.device":
    import torch

    if requested != "auto":
        try:
            device = torch.device(requested)
        except RuntimeError as exc:
            raise ConfigError(f"unknown device {requested!r}: use auto, cpu, cuda, cuda:N or mps") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but no CUDA GPU is available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_supports_bf16() -> bool:
    """bf16 matmuls are only fast on CPUs with native bf16 (AVX512-BF16 or AMX)."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch: ask oneDNN
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_dtype(requested: str, device: "torch.device") -> "torch.dtype":
    import torch

    if requested != "auto":
        if requested not in _DTYPES:
            raise ConfigError(f"unknown dtype {requested!r}: use auto, fp32, fp16 or bf16")
        return getattr(torch, _DTYPES[requested])
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def dtype_name(dtype: "torch.dtype") -> str:
    return {v: k for k, v in _DTYPES.items()}[str(dtype).removeprefix("torch.")]


def resolve_model_name(model: str) -> str:
    """An open_clip model name, or a model-config JSON file registered under its stem."""
    if not model.endswith(".json") and _ships_model_config(model):
        return model  # known without importing open_clip (and torch): seconds off a no-op run
    import open_clip

    if model.endswith(".json"):
        path = Path(model).expanduser()
        if not path.is_file():
            raise ConfigError(f"model config file not found: {path}")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read model config {path}: {exc}") from exc
        if not {"embed_dim", "vision_cfg", "text_cfg"} <= set(config):
            raise ConfigError(f"{path} is not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)")
        open_clip.add_model_config(path)
        return path.stem
    if model not in open_clip.list_models():
        raise ConfigError(f"unknown open_clip model {model!r}; `aes-index doctor --models` lists them")
    return model


def _ships_model_config(model: str) -> bool:
    """Whether open_clip ships a config for `model` (what open_clip.list_models() reads)."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations or os.sep in model:
        return False
    return any((Path(folder) / "model_configs" / f"{model}.json").is_file() for folder in spec.submodule_search_locations)


def backbone_key(model_name: str, pretrained: str) -> str:
    """Identity recorded with every embedding: a tag by name, a local file by content hash."""
    path = Path(pretrained).expanduser()
    if path.is_file():
        return f"{model_name}/file:{_file_digest(path)}"  # content, not name: renaming keeps its heads
    return f"{model_name}/{pretrained}"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def find_cached_weights(model_name: str, tag: str, cache_dir: str | None = None) -> str | None:
    """The local path of a tag's weights if they are in the Hugging Face cache, else None.

    Mirrors open_clip.pretrained.download_pretrained_from_hf's choice of file (safetensors
    first), but with local_files_only so nothing goes over the network.
    """
    import open_clip
    from open_clip import pretrained as oc_pretrained

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if cfg.get("file"):
        return cfg["file"] if os.path.isfile(cfg["file"]) else None
    hub = cfg.get("hf_hub", "")
    if not hub:
        return None
    from huggingface_hub import hf_hub_download

    repo_id, filename = os.path.split(hub)
    filename = filename or oc_pretrained.HF_WEIGHTS_NAME
    candidates = [*oc_pretrained._get_safe_alternatives(filename), filename]
    for candidate in candidates:
        try:
            return hf_hub_download(repo_id, candidate, cache_dir=cache_dir, local_files_only=True)
        except Exception:  # not cached (huggingface_hub raises several types for that)
            continue
    return None


def weights_path(model_name: str, pretrained: str, cache_dir: str | None = None, offline: bool | None = None) -> str | None:
    """Resolve `pretrained` to a local file (None for random weights), downloading a tag if allowed."""
    import open_clip

    if pretrained == RANDOM_WEIGHTS:
        return None
    path = Path(pretrained).expanduser()
    if path.is_file():
        if path.suffix not in (".safetensors", ".pt", ".pth", ".bin"):
            raise ConfigError(f"{path}: checkpoint must be .safetensors, .pt, .pth or .bin")
        return str(path)
    if pretrained.endswith((".safetensors", ".pt", ".pth", ".bin")) or os.sep in pretrained:
        raise WeightsUnavailable(f"checkpoint file not found: {path}")
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
        raise ConfigError(f"{model_name} has no pretrained tag {pretrained!r} (known: {tags}); or give a checkpoint file")
    cached = find_cached_weights(model_name, pretrained, cache_dir)
    if cached:
        return cached
    if offline if offline is not None else _hub_offline():
        raise WeightsUnavailable(_missing_weights_message(model_name, pretrained))
    try:
        from open_clip.pretrained import download_pretrained

        return download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as exc:
        raise WeightsUnavailable(_missing_weights_message(model_name, pretrained)) from exc


def _hub_offline() -> bool:
    """Offline if told so, or if the hub can't be reached within seconds.

    Without the probe, huggingface_hub retries for about a minute before giving up.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return True
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=3).close()
    except OSError:
        return True
    return False


def _missing_weights_message(model_name: str, tag: str) -> str:
    return (
        f"weights for {model_name}/{tag} are not in the Hugging Face cache and cannot be downloaded "
        "(offline?). Run once with network access to cache them, or copy a Hugging Face cache here "
        "and set HF_HOME, or pass --pretrained PATH to a local .safetensors checkpoint"
    )


class Backbone:
    """A loaded open_clip model, split into pooled image features + projection."""

    def __init__(self, model, info: BackboneInfo, projection: np.ndarray | None, device, dtype, tokenizer):
        self.model = model
        self.info = info
        self.projection = projection  # (pooled_dim, embed_dim) float32, None = pooled is projected
        self.device = device
        self.dtype = dtype
        self.tokenizer = tokenizer
        mean = np.asarray(info.preprocess.mean, dtype=np.float32) * 255.0
        std = np.asarray(info.preprocess.std, dtype=np.float32) * 255.0
        import torch

        # Normalisation folded into one multiply-add on uint8 pixels, done on the device.
        self._scale = torch.from_numpy(1.0 / std).view(1, 3, 1, 1).to(device)
        self._shift = torch.from_numpy(-mean / std).view(1, 3, 1, 1).to(device)

    @property
    def key(self) -> str:
        return self.info.key

    def to_input(self, pixels: "np.ndarray | torch.Tensor") -> "torch.Tensor":
        """uint8 (B, S, S, 3) -> normalised (B, 3, S, S) tensor in the model's dtype."""
        import torch

        batch = torch.as_tensor(np.require(pixels, requirements=["C", "W"]) if isinstance(pixels, np.ndarray) else pixels)
        if self.device.type == "cuda" and batch.device.type == "cpu":
            batch = batch.pin_memory()  # page-locked: the copy below overlaps with compute
        batch = batch.to(self.device, non_blocking=True)
        batch = batch.permute(0, 3, 1, 2).float()
        return (batch * self._scale + self._shift).to(self.dtype)

    def encode_pooled(self, pixels: "np.ndarray | torch.Tensor") -> np.ndarray:
        """Pooled image features (before projection) as float32, one row per image."""
        import torch

        with torch.inference_mode():
            features = self.model.visual(self.to_input(pixels))
        return features.float().cpu().numpy()

    def encode_text(self, prompts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """L2-normalised text embeddings (float32), in the projected space."""
        import torch

        rows = []
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                tokens = self.tokenizer(list(prompts[start : start + batch_size])).to(self.device)
                features = _encode_trimmed(self.model, tokens)
                rows.append(torch.nn.functional.normalize(features, dim=-1).float().cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, self.info.embed_dim), np.float32)


def _encode_trimmed(clip, tokens: "torch.Tensor") -> "torch.Tensor":
    """encode_text without the padding: prompts are ~15 of CLIP's 77 tokens.

    With causal attention nothing after the end-of-text token can change the pooled
    (argmax = EOT) output, so cutting the padding gives the same vectors for a fraction
    of the work: building the 2,000-prompt zero-shot ensemble goes from minutes to
    seconds on a CPU. Only for open_clip's standard CLIP text tower; anything else (and
    any tokenizer that doesn't pad with 0) takes the full path. A test pins the result
    to open_clip's own encode_text.
    """
    from open_clip.transformer import text_global_pool

    trimmable = (
        type(clip).__name__ == "CLIP" and getattr(clip, "text_pool_type", None) == "argmax"
        and getattr(clip, "attn_mask", None) is not None and not isinstance(clip.text_projection, torch_linear())
    )
    if not trimmable:
        return clip.encode_text(tokens)
    length = int((tokens != 0).sum(dim=1).max())
    tokens = tokens[:, :length]
    cast = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens).to(cast) + clip.positional_embedding[:length].to(cast)
    x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
    pooled = text_global_pool(clip.ln_final(x), tokens, "argmax")
    return pooled @ clip.text_projection


def torch_linear():
    import torch

    return torch.nn.Linear


def load_backbone(
    model: str = "ViT-B-32",
    pretrained: str = "openai",
    device: str = "auto",
    dtype: str = "auto",
    cache_dir: str | None = None,
) -> Backbone:
    """Build the open_clip model, load weights, split off the projection, move to device/dtype."""
    import open_clip
    import torch

    model_name = resolve_model_name(model)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    checkpoint = weights_path(model_name, pretrained, cache_dir)
    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)  # {} for files and "random"
    clip = _create_model(model_name, checkpoint, quick_gelu=bool(tag_cfg.get("quick_gelu")))
    clip.eval()
    projection = _split_projection(clip.visual)
    # The image tower runs in the chosen dtype; the text tower (used once per backbone to
    # build zero-shot heads) stays fp32 for accuracy.
    clip.visual.to(torch_device, torch_dtype)
    clip.to(torch_device)
    spec = _preprocess_spec(clip.visual, tag_cfg)
    pooled_dim = projection.shape[0] if projection is not None else _embed_dim(clip)
    info = BackboneInfo(
        key=backbone_key(model_name, pretrained),
        model=model_name,
        pretrained=pretrained,
        pooled_dim=int(pooled_dim),
        embed_dim=_embed_dim(clip),
        preprocess=spec,
    )
    tokenizer = open_clip.get_tokenizer(model_name)
    return Backbone(clip, info, projection, torch_device, torch_dtype, tokenizer)


def _create_model(model_name: str, checkpoint: str | None, quick_gelu: bool):
    import pickle

    import open_clip
    import torch
    from safetensors import SafetensorError

    if checkpoint is None:
        torch.manual_seed(0)  # "random" weights are the same on every run and machine
        # Said on every run, whatever -q: scores of an untrained model look like scores.
        log.warning("--pretrained random: %s has random weights, so its scores mean nothing (for benchmarks and tests only)", model_name)
    with _quiet_root_logger():  # open_clip warns on the root logger about random init
        clip = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu)
    if checkpoint is None:
        return clip
    try:
        # weights_only=True: a .pt/.bin is unpickled with torch's restricted loader,
        # which refuses to run code; .safetensors goes through safetensors.
        open_clip.load_checkpoint(clip, checkpoint, strict=True, weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's restricted loader met something that runs code
        raise WeightsUnavailable(
            f"refusing to load {checkpoint}: not a plain weights file (it would run code); use a .safetensors checkpoint"
        ) from exc
    except (OSError, EOFError, SafetensorError) as exc:  # unreadable, cut short, not safetensors
        raise WeightsUnavailable(f"cannot read weights {checkpoint}: {_first_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - state-dict mismatches come as RuntimeError, AssertionError, KeyError...
        raise WeightsUnavailable(
            f"cannot load weights {checkpoint} into {model_name}: {_mismatch(exc)}; "
            "pass the --model the checkpoint was made for"
        ) from exc
    return clip


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split("\n", 1)[0].split())
    return text[:300] or type(exc).__name__


def _mismatch(exc: BaseException) -> str:
    """Why a checkpoint does not fit the model, in one line: torch's state-dict report
    ("Error(s) in loading state_dict ...:" then one line per key) gives its first key and
    how many more; open_clip's resize helpers assert with a short message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith("Error(s) in loading state_dict") and len(lines) > 1:
        more = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
        return f"its weights do not fit this architecture: {lines[1][:200]}{more}"
    detail = lines[0][:200] if lines else type(exc).__name__
    return f"its weights do not fit this architecture ({detail})"


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _split_projection(visual) -> np.ndarray | None:
    """Detach the image projection so visual(x) returns pooled features; keep the matrix."""
    import torch

    proj = getattr(visual, "proj", None)
    if isinstance(proj, torch.nn.Parameter):
        matrix = proj.detach().float().cpu().numpy().copy()
        visual.proj = None
        return matrix
    return None  # e.g. ModifiedResNet/timm towers: their output already is the projection


def _embed_dim(clip) -> int:
    if getattr(clip, "text_projection", None) is not None:
        proj = clip.text_projection
        return int(proj.shape[1] if not hasattr(proj, "out_features") else proj.out_features)
    return int(clip.visual.output_dim)


def _preprocess_spec(visual, tag_cfg: dict) -> PreprocessSpec:
    cfg = dict(getattr(visual, "preprocess_cfg", {}) or {})
    cfg.update({k: v for k, v in tag_cfg.items() if k in ("mean", "std", "interpolation", "resize_mode")})
    size = cfg.get("size", getattr(visual, "image_size", 224))
    size = size[0] if isinstance(size, (tuple, list)) else size
    return PreprocessSpec(
        size=int(size),
        mean=tuple(float(x) for x in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
        std=tuple(float(x) for x in cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
        interpolation=str(cfg.get("interpolation", "bicubic")),
        resize_mode=str(cfg.get("resize_mode", "shortest")),
    )


def describe_environment(backbone: Backbone | None = None) -> dict:
    """Facts for `doctor`: versions, device, dtype."""
    import open_clip
    import torch

    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cpu_bf16": cpu_supports_bf16(),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    if backbone is not None:
        facts.update(device=str(backbone.device), dtype=dtype_name(backbone.dtype), backbone=backbone.key)
    return facts
