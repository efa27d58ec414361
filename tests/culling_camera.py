"""What a camera does to a scene, for the culling tests and benchmarks: framing, focus, shake,
exposure, sensor noise, JPEG with EXIF capture facts.

Blur strengths are given in pixels of a 24 MP frame (6000 px long side) and scaled to the
frame's own size, so that a library built small for a test plants the same blur, relative to
the picture, as the 24 MP one the benchmark measures. The scenes are real photographs of
1280-2560 px upscaled to the frame: a "sharp" 24 MP frame is as soft as its source allows
(about a Gaussian sigma of 1-2 px at 6000 px), so planted blurs below that are invisible here,
where a real 24 MP camera file would show them; the benchmark names its strengths above it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import piexif
from PIL import Image, ImageFilter

FULL_LONG_SIDE = 6000  # the 24 MP frame (6000x4000) blur strengths are expressed in
GAMMA = 2.2  # sRGB's transfer curve, close enough for an exposure step
BLACK_LEVEL = 6  # 8-bit levels a camera's tone curve crushes to black (its toe): deep shadows clip


@dataclass(frozen=True)
class View:
    """Where the camera points: a crop of the scene in fractions of its 3:2 frame."""

    left: float = 0.0
    top: float = 0.0
    width: float = 1.0  # 1.0: the whole scene

    def box(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        w, h = size
        return (self.left * w, self.top * h, (self.left + self.width) * w, (self.top + self.width) * h)


@dataclass(frozen=True)
class Shot:
    """How one frame differs from the scene: framing, exposure, blur, noise."""

    view: View = View()
    ev: float = 0.0  # exposure step in stops
    defocus_sigma: float = 0.0  # Gaussian sigma, px at 24 MP
    motion_px: float = 0.0  # length of a straight shake, px at 24 MP
    motion_axis: int = 1  # 1: horizontal, 0: vertical
    noise_sigma: float = 4.0  # 8-bit levels at mid-grey
    seed: int = 0


def scene_of(photo: Image.Image) -> Image.Image:
    """The photo cropped to the 3:2 frame of a camera, centred."""
    w, h = photo.size
    if w / h > 1.5:
        cut = int(round(h * 1.5))
        return photo.crop(((w - cut) // 2, 0, (w - cut) // 2 + cut, h))
    cut = int(round(w / 1.5))
    return photo.crop((0, (h - cut) // 2, w, (h - cut) // 2 + cut))


def render(scene: Image.Image, shot: Shot, long_side: int) -> Image.Image:
    """The frame the camera records: framing and resize, optics, exposure, then noise."""
    size = (long_side, int(round(long_side / 1.5)))
    framed = scene.resize(size, Image.Resampling.LANCZOS, box=shot.view.box(scene.size))
    scale = long_side / FULL_LONG_SIDE
    if shot.defocus_sigma > 0:
        framed = framed.filter(ImageFilter.GaussianBlur(shot.defocus_sigma * scale))
    pixels = np.asarray(framed)
    if shot.motion_px > 0:
        pixels = motion_blur(pixels, shot.motion_px * scale, shot.motion_axis)
    pixels = expose(pixels, shot.ev)
    return Image.fromarray(crush_blacks(sensor_noise(pixels, shot.noise_sigma, shot.seed)))


def crush_blacks(pixels: np.ndarray) -> np.ndarray:
    """The toe of a camera's tone curve: levels up to BLACK_LEVEL become black, the rest is
    stretched back to full range (without it an underexposed frame never clips its shadows)."""
    levels = np.arange(256, dtype=np.float32)
    table = np.clip((levels - BLACK_LEVEL) * (255.0 / (255 - BLACK_LEVEL)), 0, 255)
    return np.round(table).astype(np.uint8)[pixels]


def motion_blur(pixels: np.ndarray, length: float, axis: int) -> np.ndarray:
    """A straight shake of `length` px along an axis (a box kernel, as a steady pan), uint8."""
    from scipy.ndimage import uniform_filter1d

    taps = max(1, int(round(length)))
    return uniform_filter1d(pixels, taps, axis=axis, mode="reflect") if taps > 1 else pixels


def expose(pixels: np.ndarray, ev: float) -> np.ndarray:
    """An exposure step of `ev` stops on uint8 pixels, in linear light; highlights clip at
    white. A 256-entry table: the frame is 8-bit anyway."""
    if ev == 0:
        return pixels
    levels = np.arange(256, dtype=np.float64) / 255.0
    table = np.clip(levels**GAMMA * 2.0**ev, 0.0, 1.0) ** (1 / GAMMA) * 255.0
    return np.round(table).astype(np.uint8)[pixels]


def sensor_noise(pixels: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Noise like a sensor's after demosaicing, on uint8 pixels: stronger in bright areas
    (shot noise) with a floor (read noise), mostly shared by the channels (luma) plus chroma.

    Big frames repeat a random 1024x1024 tile (JPEG codes 8x8 blocks, it cannot exploit the
    repetition; drawing 72 million normals would cost more than the rest of the frame).
    """
    rng = np.random.default_rng(seed)
    height, width = pixels.shape[:2]
    tile_h, tile_w = min(height, 1024), min(width, 1024)
    raw = rng.normal(0.0, 1.0, (tile_h, tile_w, 4)).astype(np.float32)
    tile = (raw[..., :3] * 0.5 + raw[..., 3:]) / np.float32(np.sqrt(1.25))  # unit std, luma-heavy
    levels = np.arange(256, dtype=np.float32)
    level = (np.float32(sigma) * (0.35 + 0.65 * np.sqrt(levels / np.float32(127.5)))).astype(np.float32)
    out = np.empty_like(pixels)
    for top in range(0, height, tile_h):  # row bands: one tile high, cache-sized work
        band = pixels[top : top + tile_h]
        noise = np.tile(tile[: band.shape[0]], (1, -(-width // tile_w), 1))[:, :width]
        noisy = band + noise * level[band] + np.float32(0.5)
        out[top : top + tile_h] = np.clip(noisy, 0, 255).astype(np.uint8)
    return out


# --- files -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Camera:
    make: str
    model: str
    serial: str
    offset: str = "+02:00"  # OffsetTimeOriginal: the camera's time zone


def exif_bytes(camera: Camera | None, taken: datetime | None, clock_offset: bool = True) -> bytes:
    """EXIF as a camera writes it: Make/Model/BodySerialNumber, DateTimeOriginal with
    SubSecTimeOriginal (hundredths) and OffsetTimeOriginal (EXIF 2.31)."""
    zeroth: dict = {}
    exif: dict = {}
    if camera is not None:
        zeroth[piexif.ImageIFD.Make] = camera.make.encode()
        zeroth[piexif.ImageIFD.Model] = camera.model.encode()
        exif[piexif.ExifIFD.BodySerialNumber] = camera.serial.encode()
    if taken is not None:
        exif[piexif.ExifIFD.DateTimeOriginal] = taken.strftime("%Y:%m:%d %H:%M:%S").encode()
        exif[piexif.ExifIFD.SubSecTimeOriginal] = f"{taken.microsecond // 10_000:02d}".encode()
        if clock_offset and camera is not None:
            exif[piexif.ExifIFD.OffsetTimeOriginal] = camera.offset.encode()
    return piexif.dump({"0th": zeroth, "Exif": exif})


def jpeg_bytes(image: Image.Image, quality: int = 92, exif: bytes | None = None) -> bytes:
    out = io.BytesIO()
    options = {"quality": quality, "subsampling": 1 if quality >= 90 else 2}  # cameras: 4:2:2 at fine
    if exif:
        options["exif"] = exif
    image.save(out, "JPEG", **options)
    return out.getvalue()


def hundredths(when: datetime) -> datetime:
    """A time as EXIF keeps it: SubSecTimeOriginal in hundredths of a second."""
    return when - timedelta(microseconds=when.microsecond % 10_000)
