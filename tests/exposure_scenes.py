"""Real photographs with bright light sources painted in, or truly blown, for the exposure flags.

    lit(frame, kind, seed)    LIGHTS: a correctly exposed frame with lamps, bokeh, a sun or
                              glints added (in linear light, as they add on a sensor); their
                              cores clip, the photo is not overexposed
    blown(frame, kind, seed)  BLOWN: the frame overexposed where a photographer sees it:
                              "ev2" (+2 EV, all of it), "sky" (the top third pushed to white),
                              "wall" (a large area in the middle +4 EV: a wall, a face in flash)

Painted at the frame's own size (the tests use 1200x800, the benchmark 1600x1067), with
sizes relative to its short side, so the model's small image sees the same picture. The
light sources total 5-20 % of the frame's pixels at white, more than the old rule (10 % of
the pixels) allowed: lamps are 150 glowing points, bokeh 70 overlapping discs of 3-9 % of
the short side, the sun a disc of 10 % with its glare, glints 1400 specks in a band.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

GAMMA = 2.2  # sRGB's transfer curve, close enough for adding light
LIGHTS = ("lamps", "bokeh", "sun", "glints")
BLOWN = ("ev2", "sky", "wall")


def lit(frame: Image.Image, kind: str, seed: int) -> Image.Image:
    """`frame` with light sources of `kind` (one of LIGHTS) added."""
    rng = np.random.default_rng(seed)
    pixels = _linear(frame)
    height, width = pixels.shape[:2]
    light = np.zeros((height, width), np.float32)
    tint = _PAINTERS[kind](light, rng, min(height, width))
    return _srgb(pixels + light[..., None] * np.asarray(tint, np.float32))


def blown(frame: Image.Image, kind: str, seed: int) -> Image.Image:
    """`frame` overexposed as `kind` (one of BLOWN) says."""
    rng = np.random.default_rng(seed)
    pixels = _linear(frame)
    height, width = pixels.shape[:2]
    y, x = np.ogrid[:height, :width]
    if kind == "ev2":
        gain = np.float32(4.0)
    elif kind == "sky":  # +7 EV at the top, fading out between 30 % and 45 % of the height
        gain = 2.0 ** (7 * np.clip((0.45 - y / height) / 0.15, 0, 1))
    elif kind == "wall":
        cy, cx = rng.uniform(0.4, 0.6) * height, rng.uniform(0.35, 0.65) * width
        reach = np.sqrt(((y - cy) / (0.28 * height)) ** 2 + ((x - cx) / (0.22 * width)) ** 2)
        gain = 2.0 ** (4 * np.clip((1.2 - reach) / 0.4, 0, 1))
    else:
        raise ValueError(f"no blown kind {kind!r}")
    return _srgb(pixels * np.broadcast_to(np.asarray(gain, np.float32), (height, width))[..., None])


def _lamps(light, rng, short) -> tuple:
    for _ in range(150):  # street lamps, windows at night: a hot core and its glow
        r = rng.uniform(0.004, 0.012) * short
        _add(light, rng.uniform(0, light.shape[0]), rng.uniform(0, light.shape[1]), 4 * r,
             lambda d, r=r: 6 * np.exp(-(d**2) / (2 * r**2)))
    return (1.0, 0.85, 0.6)


def _bokeh(light, rng, short) -> tuple:
    for _ in range(70):  # lights far out of focus: flat discs with a soft rim, some overlapping
        r, strength = rng.uniform(0.015, 0.045) * short, rng.uniform(1.0, 2.0)
        _add(light, rng.uniform(0, light.shape[0]), rng.uniform(0, light.shape[1]), 1.2 * r,
             lambda d, r=r, k=strength: k * np.clip((r - d) / (0.15 * r) + 0.5, 0, 1))
    return (1.0, 0.9, 0.75)


def _sun(light, rng, short) -> tuple:
    r = 0.05 * short  # a disc and its glare falling off as 1/d^2
    cy, cx = rng.uniform(0.1, 0.35) * light.shape[0], rng.uniform(0.2, 0.8) * light.shape[1]
    _add(light, cy, cx, 2 * max(light.shape),
         lambda d: 40 * np.clip((r - d) / (0.1 * r) + 0.5, 0, 1) + 1.5 * (r / np.maximum(d, r)) ** 2)
    return (1.0, 0.95, 0.85)


def _glints(light, rng, short) -> tuple:
    band = rng.uniform(0.4, 0.6) * light.shape[0]  # sun on water: specks in a band
    for _ in range(1400):
        r = rng.uniform(0.001, 0.004) * short
        _add(light, rng.normal(band, 0.15 * light.shape[0]), rng.uniform(0, light.shape[1]), 4 * r + 1,
             lambda d, r=r: 20 * np.exp(-(d**2) / (2 * r**2)))
    return (1.0, 1.0, 1.0)


_PAINTERS = {"lamps": _lamps, "bokeh": _bokeh, "sun": _sun, "glints": _glints}


def _add(light: np.ndarray, cy: float, cx: float, reach: float, shape) -> None:
    """light += shape(distance from (cy, cx)), within `reach` of it (a patch, not the frame)."""
    height, width = light.shape
    top, bottom = max(0, int(cy - reach)), min(height, int(cy + reach) + 1)
    left, right = max(0, int(cx - reach)), min(width, int(cx + reach) + 1)
    if top < bottom and left < right:
        y, x = np.ogrid[top:bottom, left:right]
        light[top:bottom, left:right] += shape(np.sqrt((y - cy) ** 2 + (x - cx) ** 2).astype(np.float32))


def _linear(frame: Image.Image) -> np.ndarray:
    return (np.asarray(frame.convert("RGB"), np.float32) / 255.0) ** GAMMA


def _srgb(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(pixels, 0, 1) ** (1 / GAMMA) * 255.0 + 0.5).astype(np.uint8))
