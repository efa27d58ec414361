"""`aes-train finetune`: the whole image encoder plus an EMD head (paper section 4.3).

The recipe: SGD with momentum 0.5, lr 1e-4 for the encoder and 1e-2 for the head, batch
128, the serving 224 centre crop (no augmentation), early stopping on 10% of the training
split with patience 10. It needs a GPU for AVA; on a CPU it runs, slowly (the tests do two
steps with a tiny model).

Pixels come from aes_index.index.pipeline.prepare, the function that serves a library: decode,
resize, centre crop. The encoder is the open_clip model of aes_index.model.backbone with its
image projection split off, so the head reads pooled features exactly as a shipped head
does.

What comes out:
  <out>/<name>.safetensors       a complete open_clip checkpoint (projection restored),
                                 loadable by `aes-index --model M --pretrained <that file>`
  <out>/<name>-head.safetensors  the EMD head, made for exactly that checkpoint
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from aes_index.model.backbone import backbone_key, resolve_model_name
from aes_index.model.heads import EMD_BINS, Head, load_head
from aes_index.index.pipeline import Failed, decode_stream, prepare

from .errors import NotEnoughData, TrainingDiverged
from .export import readable_by_all
from .losses import emd, emd_loss
from .metrics import summarize


@dataclass
class FinetuneConfig:
    lr_encoder: float = 1e-4
    lr_head: float = 1e-2
    momentum: float = 0.5
    batch_size: int = 128
    max_epochs: int = 30
    patience: int = 10
    max_steps: int = 0  # > 0: stop after this many optimiser steps (smoke runs, tests)
    seed: int = 0
    workers: int = 0  # decode processes for the data loader
    amp: bool = True  # bf16 autocast on CUDA: twice the speed, same results in practice

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class FinetuneResult:
    head_tensors: dict[str, np.ndarray]
    history: dict = field(default_factory=dict)


# --- data --------------------------------------------------------------------------------


class ImageDataset:
    """(uint8 pixels, vote histogram) per image; an undecodable file yields None."""

    def __init__(self, items: list[tuple[int, str]], histograms: dict[int, np.ndarray], spec):
        self.items, self.histograms, self.spec = items, histograms, spec

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        import torch

        image_id, path = self.items[index]
        try:
            pixels = prepare(path, self.spec)
        except Exception:  # DecodeError, or a decoder bug: one bad file must not end hours of training
            return None  # dropped by the collate function; `embed` records such files
        return torch.from_numpy(np.array(pixels)), torch.from_numpy(self.histograms[image_id].astype(np.float32))


def collate_decoded(batch):
    from torch.utils.data import default_collate

    batch = [example for example in batch if example is not None]
    return default_collate(batch) if batch else None


def make_loader(dataset: ImageDataset, config: FinetuneConfig):
    import torch
    from torch.utils.data import DataLoader

    workers = config.workers
    return DataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, collate_fn=collate_decoded,
        generator=torch.Generator().manual_seed(config.seed), num_workers=workers,
        # spawn, like aes_index.index.pipeline: workers must not inherit torch's thread pools
        multiprocessing_context="spawn" if workers > 0 else None, persistent_workers=workers > 0,
    )


# --- model -------------------------------------------------------------------------------


def make_head_layer(backbone, init_head: str | None, prior: np.ndarray):
    """nn.Linear(pooled -> 10): from an EMD head of `aes-train fit`, or from the prior."""
    import torch
    import torch.nn as nn

    layer = nn.Linear(backbone.info.pooled_dim, 10)
    with torch.no_grad():
        if init_head:
            weight, bias = _unfold_head(load_head(init_head), backbone)
            layer.weight.copy_(torch.from_numpy(weight))
            layer.bias.copy_(torch.from_numpy(bias))
        else:
            # start at the training split's mean distribution, as fit.start_from_prior
            layer.bias.copy_(torch.from_numpy(np.log(np.clip(prior, 1e-6, None)).astype(np.float32)))
    return layer.to(backbone.device)


def _unfold_head(head: Head, backbone) -> tuple[np.ndarray, np.ndarray]:
    """A fitted EMD head's standardisation folded into one plain linear layer."""
    from aes_index.errors import HeadError

    if head.kind != "emd" or head.input_space != "pooled" or "hidden_weight" in head.tensors:
        raise HeadError(f"--init-head needs an EMD head on pooled features without hidden layer; {head.name} is not one")
    if head.backbone != backbone.key:
        raise HeadError(f"--init-head {head.name} was made for {head.backbone}, not {backbone.key}")
    weight, bias = head.tensors["weight"], head.tensors["bias"]
    if "input_mean" in head.tensors:
        scaled = weight * head.tensors["input_scale"]
        return scaled.astype(np.float32), (bias - scaled @ head.tensors["input_mean"]).astype(np.float32)
    return weight.astype(np.float32), bias.astype(np.float32)


def autocast(backbone, config: FinetuneConfig):
    import contextlib

    import torch

    if config.amp and backbone.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --- the training loop -------------------------------------------------------------------


def finetune(backbone, train_items, val_items, histograms, config: FinetuneConfig, init_head=None, log=print) -> FinetuneResult:
    """Train encoder + head with early stopping on val; the backbone's encoder is updated
    in place (left at its best epoch), the head's tensors are returned."""
    import torch

    torch.manual_seed(config.seed)
    visual = backbone.model.visual
    for parameter in backbone.model.parameters():
        parameter.requires_grad_(False)  # the text tower stays as it is
    for parameter in visual.parameters():
        parameter.requires_grad_(True)
    prior = np.mean([histograms[i] for i, _ in train_items], axis=0)
    head = make_head_layer(backbone, init_head, prior)
    optimizer = torch.optim.SGD(
        [{"params": visual.parameters(), "lr": config.lr_encoder}, {"params": head.parameters(), "lr": config.lr_head}],
        momentum=config.momentum,
    )
    loader = make_loader(ImageDataset(train_items, histograms, backbone.info.preprocess), config)

    best_loss, best_epoch = math.inf, 0
    best_state = (copy.deepcopy(visual.state_dict()), copy.deepcopy(head.state_dict()))
    steps, val_losses, train_losses = 0, [], []
    for epoch in range(1, config.max_epochs + 1):
        visual.train()
        head.train()
        for batch in loader:
            if batch is None:
                continue  # every image of this batch failed to decode
            pixels, target = batch
            with autocast(backbone, config):
                logits = head(visual(backbone.to_input(pixels)))
            loss = emd_loss(torch.softmax(logits.float(), dim=1), target.to(backbone.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            train_losses.append(round(loss.item(), 6))
            if not math.isfinite(train_losses[-1]):
                raise TrainingDiverged(f"the loss became {train_losses[-1]} at step {steps}; lower --lr-encoder/--lr-head")
            if steps % 50 == 0:
                log(f"epoch {epoch} step {steps}: EMD {train_losses[-1]:.4f}")
            if config.max_steps and steps >= config.max_steps:
                break

        _, distribution, target = predict_distribution(backbone, head, val_items, histograms, config)
        val_loss = float(np.mean(emd(distribution, target))) if len(target) else math.inf
        val_losses.append(round(val_loss, 6))
        log(f"epoch {epoch}: early-stopping EMD {val_loss:.4f}")
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = (copy.deepcopy(visual.state_dict()), copy.deepcopy(head.state_dict()))
        elif epoch - best_epoch >= config.patience:
            break
        if config.max_steps and steps >= config.max_steps:
            break

    visual.load_state_dict(best_state[0])
    head.load_state_dict(best_state[1])
    visual.eval()
    tensors = {"weight": head.weight.detach().float().cpu().numpy(), "bias": head.bias.detach().float().cpu().numpy()}
    history = {"steps": steps, "epochs": len(val_losses), "best_epoch": best_epoch, "best_val_emd": best_loss,
               "val_emd": val_losses, "train_emd_last": train_losses[-20:]}
    return FinetuneResult(tensors, history)


def predict_distribution(backbone, head, items, histograms, config: FinetuneConfig):
    """(ids, predicted (N, 10), target (N, 10)) through the serving decode path."""
    import torch

    ids, outputs, batch_ids, batch_pixels = [], [], [], []

    def run_batch():
        with torch.no_grad(), autocast(backbone, config):
            logits = head(backbone.model.visual(backbone.to_input(np.stack(batch_pixels))))
        outputs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        ids.extend(batch_ids)
        batch_ids.clear()
        batch_pixels.clear()

    backbone.model.visual.eval()
    for result in decode_stream(items, backbone.info.preprocess, config.workers):
        if isinstance(result, Failed):
            continue
        batch_ids.append(result.image_id)
        batch_pixels.append(result.pixels)
        if len(batch_ids) == config.batch_size:
            run_batch()
    if batch_ids:
        run_batch()
    predicted = np.concatenate(outputs) if outputs else np.zeros((0, 10), np.float32)
    target = np.array([histograms[i] for i in ids]).reshape(-1, 10)
    return ids, predicted, target


def measure_test_split(backbone, head_tensors, items, histograms, config: FinetuneConfig) -> dict:
    import torch
    import torch.nn as nn

    head = nn.Linear(backbone.info.pooled_dim, 10).to(backbone.device)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(head_tensors["weight"]))
        head.bias.copy_(torch.from_numpy(head_tensors["bias"]))
    _, predicted, target = predict_distribution(backbone, head, items, histograms, config)
    if len(target) == 0:
        raise NotEnoughData("no test image could be decoded")
    means = target @ EMD_BINS
    return summarize(predicted @ EMD_BINS, means, predicted, target)


# --- export ------------------------------------------------------------------------------


def serving_model(model_arg: str, pretrained: str, out_dir: Path) -> str:
    """The --model that loads the exported checkpoint with the right activation.

    OpenAI's CLIP weights use QuickGELU; open_clip applies it for the "openai" tag, but a
    checkpoint *file* gets the model config's plain GELU. So the checkpoint is served with
    the "-quickgelu" variant of the model (or a config JSON that says quick_gelu).
    """
    import open_clip

    name = resolve_model_name(model_arg)
    if not open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu") or name.endswith("-quickgelu"):
        return model_arg
    if f"{name}-quickgelu" in open_clip.list_models():
        return f"{name}-quickgelu"
    config = dict(open_clip.get_model_config(name), quick_gelu=True)
    path = out_dir / f"{name}-quickgelu.json"
    path.write_text(json.dumps(config, indent=1))
    return str(path)


def export_checkpoint(backbone, path: Path) -> Path:
    """The fine-tuned model as a complete open_clip state dict (strict-loadable)."""
    import torch
    from safetensors.torch import save_file

    state = {
        name: (tensor.detach().float() if tensor.is_floating_point() else tensor.detach()).cpu().contiguous()
        for name, tensor in backbone.model.state_dict().items()
    }
    if backbone.projection is not None:
        # aes_index detached the projection to get pooled features; a checkpoint needs it
        state["visual.proj"] = torch.from_numpy(np.ascontiguousarray(backbone.projection, np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp), metadata={"aes_train": "finetune"})
    readable_by_all(tmp)
    os.replace(tmp, path)
    return path


def finetuned_head(result: FinetuneResult, checkpoint: Path, model_arg: str, pooled_dim: int, metadata: dict) -> Head:
    """The EMD head, keyed to the checkpoint exactly as aes-index will name it."""
    key = backbone_key(resolve_model_name(model_arg), str(checkpoint))
    base = {
        "name": f"finetuned-emd-{checkpoint.stem}",
        "kind": "emd",
        "backbone": key,
        "input_space": "pooled",
        "input_dim": int(pooled_dim),
        "history": result.history,
        "threshold": 5.0,
        "score_scale": "AVA mean score, 1-10",
        "serve": {"model": model_arg, "pretrained": str(checkpoint.resolve())},
    }
    return Head({**base, **metadata}, {k: np.ascontiguousarray(v, np.float32) for k, v in result.head_tensors.items()})
