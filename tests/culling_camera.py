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
import os
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
    # A shallow depth of field: the subject (an ellipse around subject_at, fractions of the
    # frame, subject_radius of its height) is sharp, the surround is a Gaussian of dof_sigma
    # px at 24 MP. A defocus or shake above then blurs the whole frame, subject too.
    dof_sigma: float = 0.0
    subject_at: tuple[float, float] = (0.5, 0.5)
    subject_radius: float = 0.3
    # Lamps and bokeh discs: white blobs covering about `lamps` of the frame (drawn from
    # lamp_seed, so a burst's frames share them), saturated as a sensor saturates.
    lamps: float = 0.0
    lamp_seed: int = 0


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
    if shot.dof_sigma > 0:
        framed = shallow_focus(framed, shot, scale)
    lamps = None
    if shot.lamps > 0:
        lamps = lamp_mask(size, shot.lamps, shot.lamp_seed, scale)
        framed = Image.composite(Image.new("RGB", size, (255, 255, 255)), framed, lamps)
    if shot.defocus_sigma > 0:
        framed = framed.filter(ImageFilter.GaussianBlur(shot.defocus_sigma * scale))
        lamps = lamps.filter(ImageFilter.GaussianBlur(shot.defocus_sigma * scale)) if lamps else None
    pixels = np.asarray(framed)
    if shot.motion_px > 0:
        pixels = motion_blur(pixels, shot.motion_px * scale, shot.motion_axis)
        lamps = Image.fromarray(motion_blur(np.asarray(lamps), shot.motion_px * scale, shot.motion_axis)) if lamps else None
    pixels = expose(pixels, shot.ev)
    out = crush_blacks(sensor_noise(pixels, shot.noise_sigma, shot.seed))
    if lamps is not None:  # where a lamp's light is whole, the sensor saturates: no noise there
        out[np.asarray(lamps) >= 240] = 255
    return Image.fromarray(out)


def shallow_focus(framed: Image.Image, shot: Shot, scale: float) -> Image.Image:
    """The subject sharp, the surround defocused, a soft edge between (a lens wide open)."""
    width, height = framed.size
    soft = framed.filter(ImageFilter.GaussianBlur(shot.dof_sigma * scale))
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    cx, cy = shot.subject_at[0] * width, shot.subject_at[1] * height
    radius = shot.subject_radius * height
    distance = np.sqrt(((xs - cx) / 1.2) ** 2 + (ys - cy) ** 2) / radius  # a little wider than high
    sharp = np.clip((1.4 - distance) / 0.6, 0.0, 1.0)  # 1 inside 0.8 r, 0 beyond 1.4 r
    return Image.composite(framed, soft, Image.fromarray(np.round(sharp * 255).astype(np.uint8)))


def lamp_mask(size: tuple[int, int], share: float, seed: int, scale: float) -> Image.Image:
    """White blobs for lamps (small) and bokeh discs (larger) covering about `share` of the
    frame (overlaps make it a little less: the library measures what was drawn), edges
    softened by a 2 px (24 MP) blur. Mode L, 255 where the light is whole."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    width, height = size
    count = int(rng.integers(8, 24))
    relative = rng.uniform(0.4, 1.6, count) ** 2  # a few big discs, many small lamps
    areas = relative / relative.sum() * share * width * height
    radii = np.sqrt(areas / np.pi)
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for r in radii:
        x, y = float(rng.uniform(r, width - r)), float(rng.uniform(r, height - r))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(max(0.5, 2.0 * scale)))


def gradient_scene(seed: int, size: tuple[int, int] = (2560, 1707)) -> Image.Image:
    """A smooth frame with no detail to focus on: a sky's gradient from its zenith to a hazy
    horizon, or a scanned sheet lit unevenly, with broad soft swells of light."""
    rng = np.random.default_rng(seed)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t = ys / height
    if seed % 2:  # a sky: deep blue above, pale at the horizon
        top, bottom = np.array([52, 96, 168], np.float32), np.array([214, 220, 226], np.float32)
        base = top + (bottom - top) * (t[..., None] ** 0.7)
    else:  # a scan: warm paper, darker towards one corner
        paper = np.array([232, 224, 206], np.float32)
        base = paper * (1 - 0.25 * ((xs / width + t) / 2)[..., None])
    swell = np.zeros_like(t)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.3, 0.7) * width
        swell += float(rng.uniform(-12, 12)) * np.exp(-(((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r * r)))
    return Image.fromarray(np.clip(base + swell[..., None], 0, 255).astype(np.uint8))


METERED_LEVEL = 220  # metering puts the brightest 0.5 % of a scene here: a third of a stop more still does not clip
METER_RANGE = (-2.0, 1.5)  # EV a meter corrects by at most


def meter(scene: Image.Image, view: View) -> float:
    """The exposure a camera's highlight-weighted meter gives the framed scene, in EV from the
    photograph's own: its brightest 0.5 % land at METERED_LEVEL (a high-key photograph is
    pulled down so its white wall does not clip, a dark crop is lifted), within METER_RANGE.
    Measured on a small framing (cheap at any frame size)."""
    small = scene.resize((600, 400), Image.Resampling.BILINEAR, box=view.box(scene.size))
    top = float(np.percentile(np.asarray(small.convert("L")), 99.5)) / 255.0
    if top <= 0:
        return METER_RANGE[1]
    ev = GAMMA * np.log2((METERED_LEVEL / 255.0) / top)
    return float(np.clip(ev, *METER_RANGE))


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


def exif_bytes(camera: Camera | None, taken: datetime | None, clock_offset: bool = True,
               exposure_bias: float | None = None) -> bytes:
    """EXIF as a camera writes it: Make/Model/BodySerialNumber, DateTimeOriginal with
    SubSecTimeOriginal (hundredths) and OffsetTimeOriginal (EXIF 2.31); ExposureBiasValue
    (in thirds of a stop) when given."""
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
    if exposure_bias is not None:
        exif[piexif.ExifIFD.ExposureBiasValue] = (int(round(exposure_bias * 3)), 3)
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


_XYZ_TO_SRGB = (32406, -15372, -4986, -9689, 18758, 415, 557, -2040, 10570)  # D65, x 10000


def write_dng(path, frame: Image.Image, camera: Camera, taken: datetime, exposure_bias: float | None = None,
              preview_long_side: int = 1620) -> None:
    """A DNG as a camera writes it beside its JPEG: IFD0 an RGB preview of the frame
    (NewSubfileType 1, uncompressed), a SubIFD with the frame's Bayer mosaic (RGGB, the frame's own size,
    8 bits a photosite and a LinearizationTable to 12-bit linear, uncompressed as LibRaw reads it), the camera's EXIF. tifffile writes the TIFF
    structure and the DNG tags; Exiv2 (the engine of darktable and digiKam, and the reader
    aes-index uses) writes the EXIF. Exiv2's PreviewManager finds the preview in IFD0, LibRaw
    reads the mosaic."""
    import exiv2
    import tifffile

    long_side = min(preview_long_side, max(frame.size))
    preview = frame.resize((long_side, int(round(long_side * frame.height / frame.width))), Image.Resampling.LANCZOS)
    rgb = np.asarray(frame)
    mosaic = np.empty(rgb.shape[:2], np.uint8)  # 8 bits a photosite, linearised by LinearizationTable
    mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = rgb[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = rgb[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
    linear = np.round((np.arange(256) / 255.0) ** GAMMA * 4095).astype(np.uint16)
    model = camera.model
    dng = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, model, True),  # UniqueCameraModel
        (50721, "2i", 9, tuple(v for m in _XYZ_TO_SRGB for v in (m, 10000)), True),  # ColorMatrix1: the sensor sees linear sRGB
        (50778, "H", 1, (21,), True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral
    ]
    cfa = [
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: RGGB
        (50710, "B", 3, (0, 1, 2), True),  # CFAPlaneColor
        (50711, "H", 1, (1,), True),  # CFALayout: rectangular
        (50712, "H", 256, tuple(int(v) for v in linear), True),  # LinearizationTable: sRGB-ish levels -> 12-bit linear
        (50714, "H", 1, (0,), True),  # BlackLevel
        (50717, "H", 1, (4095,), True),  # WhiteLevel
    ]
    path = str(path)
    tmp = path + ".tmp"
    with tifffile.TiffWriter(tmp) as tif:
        tif.write(np.asarray(preview), photometric="rgb", subfiletype=1, subifds=1, metadata=None, software=False,
                  extratags=[(271, "s", 0, camera.make, True), (272, "s", 0, model, True), *dng])
        tif.write(mosaic, photometric=32803, subfiletype=0, metadata=None, software=False, extratags=cfa)
    image = exiv2.ImageFactory.open(tmp)
    image.readMetadata()
    data = image.exifData()
    data["Exif.Photo.DateTimeOriginal"] = taken.strftime("%Y:%m:%d %H:%M:%S")
    data["Exif.Photo.SubSecTimeOriginal"] = f"{taken.microsecond // 10_000:02d}"
    data["Exif.Photo.OffsetTimeOriginal"] = camera.offset
    data["Exif.Photo.BodySerialNumber"] = camera.serial
    if exposure_bias is not None:
        data["Exif.Photo.ExposureBiasValue"] = f"{int(round(exposure_bias * 3))}/3"
    image.writeMetadata()
    os.replace(tmp, path)
