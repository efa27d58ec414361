"""Presets: a backbone named by what it costs (config.PRESETS), and `auto`, which asks the
hardware: the best preset where a GPU runs the model, the fast one on the CPU."""

from __future__ import annotations

from ..config import AUTO_PRESET, DEFAULT_MODEL, DEFAULT_PRETRAINED, PRESET_NAMES, PRESETS, Preset, Settings
from ..errors import ConfigError


def resolve_preset(name: str, device: str = "auto") -> Preset:
    """The backbone a preset names; `auto` asks which device `device` resolves to."""
    if name not in PRESET_NAMES:
        raise ConfigError(f"unknown preset {name!r}: use {', '.join(PRESET_NAMES)}")
    if name != AUTO_PRESET:
        return Preset(name, name, *PRESETS[name], reason=f"--preset {name}")
    from .backbone import resolve_device  # imports torch: only when auto must look at the hardware

    kind = resolve_device(device).type
    chosen = "best" if kind in ("cuda", "mps") else "fast"
    reason = f"a {kind.upper()} GPU runs the model" if chosen == "best" else f"no GPU (device {kind})"
    return Preset(name, chosen, *PRESETS[chosen], reason=reason)


def with_default_backbone(settings: Settings, default_preset: str = "fast") -> Settings:
    """The named backbone (by model and pretrained, or by preset), `default_preset`
    filling in when none is named (no index to ask): `auto` for what a new index gets,
    `fast` (ViT-B-32/openai, the paper's) for training."""
    if not (settings.model or settings.pretrained):
        preset = resolve_preset(settings.preset or default_preset, settings.device)
        return settings.replace(model=preset.model, pretrained=preset.pretrained)
    return settings.replace(model=settings.model or DEFAULT_MODEL, pretrained=settings.pretrained or DEFAULT_PRETRAINED)
