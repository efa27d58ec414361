"""Capture facts, gathered while a photo is decoded for the model (never a second decode).

From the file's metadata: when it was taken (EXIF DateTimeOriginal, SubSecTimeOriginal,
OffsetTimeOriginal) and by which camera (Make + Model, BodySerialNumber). From pixels:

* sharpness, on the image as the decoder first produced it (libjpeg's DCT-scaled draft,
  never under 224 px on the short side: 1/8 of a 24 MP frame, 750x500), before it is
  reduced for the model; a format decoded whole (PNG, TIFF) is box-reduced to the same
  scale first, so the measure sees the same detail whatever the format and the backbone. The measure
  follows Crete et al. 2007 ("The blur effect: perception and estimation with a new
  no-reference perceptual blur metric", SPIE 6492): blur the image again and see how much
  of its neighbour-to-neighbour variation that removes. A sharp image loses much, a blurred
  one little, whatever its brightness or contrast (it is a ratio), so a frame a third of a
  stop darker is not taken for a softer one. It is taken per direction (motion blur
  smears one) and over the tiles with the most detail (the subject in focus; a shallow
  depth of field leaves the rest soft on purpose).
* clipped highlights and shadows: the share of pixels at white and at black; and of the
  white, the share of the frame in clipped areas of at least BLOWN_AREA of it (a blown sky,
  wall or face). Lamps, bokeh, the sun and glints clip too, in many small blobs, and are
  no fault of exposure (tests/benchmarks/bench_exposure.py measured both on real photos).
* a perceptual signature: 64-bit DCT hashes (pHash) of the upright image, whole and of
  its central 92 % and 84 %. They survive re-encoding, resizing and exposure changes; a
  copy cropped by a few percent matches the original's inner hash with its whole one
  (one hash alone drifts by 10-16 bits at a 4 % crop, measured on mate-backgrounds'
  photos). They mean something without any trained weights, so grouping works with
  whatever backbone the index holds.

Everything here is cheap and imports numpy and Pillow only (decode workers import it).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
from PIL import Image, ImageChops, ImageFilter

FACTS_VERSION = 5  # bump when a measure changes: older rows are measured again by rebuild

# EXIF tags (Exif 2.32, CIPA DC-008), in IFD0 and the Exif IFD.
_MAKE, _MODEL, _SOFTWARE, _EXIF_IFD = 0x010F, 0x0110, 0x0131, 0x8769
_DATETIME_ORIGINAL, _OFFSET_ORIGINAL, _SUBSEC_ORIGINAL, _BODY_SERIAL = 0x9003, 0x9011, 0x9291, 0xA431
_EXPOSURE_BIAS, _EXPOSURE_MODE = 0x9204, 0xA402  # ExposureBiasValue (SRATIONAL, EV), ExposureMode (2: auto bracket)

# Sharpness is measured with the short side at ANALYSIS_SIDE (the 1/8 draft of a 24 MP frame,
# 750x500), whatever the file's size: a measure per pixel finds a downscaled copy sharper
# than its original (a half-size export measured 0.06 sharper on mate-backgrounds' frames).
ANALYSIS_SIDE = 500
TILES = 8  # the image is cut into TILES x TILES tiles for sharpness
DETAILED_SHARE = 0.25  # sharpness is read from this share of the tiles, the most detailed
WHITE, BLACK = 250, 5  # luminance at or beyond which a pixel counts as clipped
BLOWN_AREA = 0.01  # a clipped area this share of the frame or more is a surface, not a light source
SIGNATURE_SIZE = 32  # pHash: DCT of a 32x32 grey image, its 8x8 lowest frequencies
INNER_SHARES = (0.92, 0.84)  # the central parts hashed besides the whole image


@dataclass(frozen=True)
class CaptureFacts:
    """What culling knows of one photo."""

    taken_at: float | None = None  # camera-clock seconds (local time as the camera set it): orders a burst
    taken_at_text: str | None = None  # ISO 8601, with fraction and offset where the camera gave them
    camera: str | None = None  # "Make Model"
    serial: str | None = None  # body serial number, when the camera writes it
    width: int | None = None  # the file's own pixel size (duplicates: the biggest copy is the original)
    height: int | None = None
    sharpness: float | None = None  # 0 (no detail left by blur) .. 1
    edge_width: float | None = None  # blur of its crispest edges, Gaussian sigma in px at ANALYSIS_SIDE (None: no edges)
    clipped_highlights: float | None = None  # share of pixels at white
    blown_highlights: float | None = None  # share of the frame in clipped areas of BLOWN_AREA or more
    clipped_channel: float | None = None  # share of pixels with any channel at white (a colour blown out)
    clipped_shadows: float | None = None  # share of pixels at black
    brightest: float | None = None  # luminance of the brightest 1 % of pixels, 0..1 (far below 1: dark throughout)
    signature: int | None = None  # 64-bit pHash of the whole image, as a signed int (SQLite's INTEGER)
    signature_inner: int | None = None  # of its central 92 %
    signature_core: int | None = None  # of its central 84 %
    encoding: str | None = None  # RAW, LOSSLESS (PNG, TIFF, ...), JPEG or LOSSY (HEIC, AVIF, WebP): which copy is the original
    quality: int | None = None  # a JPEG's quality (1-100), estimated from its quantisation tables
    software: str | None = None  # EXIF Software: a camera's firmware, or the editor that wrote the file
    exposure_bias: float | None = None  # EXIF ExposureBiasValue in EV: a bracket's frames step it
    auto_bracket: bool | None = None  # EXIF ExposureMode 2: the camera shot it as part of an auto bracket
    problem: str | None = None  # what was wrong with the metadata (corrupt time, ...), for `groups`
    version: int = FACTS_VERSION

    @property
    def camera_file(self) -> bool:
        """Written by a camera: its make or model and the moment it was taken, and no
        editor's name in Software (an export that kept the camera's EXIF names its editor)."""
        return is_camera_file(self.camera, self.taken_at, self.software)

    @property
    def camera_key(self) -> str | None:
        """Which body took it: frames of one burst share it."""
        if self.camera is None:
            return None
        return f"{self.camera}#{self.serial}" if self.serial else self.camera


@dataclass
class FactsProbe:
    """Collects facts along the decoder's route; `facts()` gives what it found.

    The first value found for a field wins: a RAW's own EXIF comes before its preview's.
    """

    found: dict = field(default_factory=dict)

    def metadata(self, **values) -> None:
        for key, value in values.items():
            if value is not None and self.found.get(key) is None:
                self.found[key] = value

    def header(self, image: Image.Image) -> None:
        """What the opened file says before any pixel is decoded: its size, how it is
        encoded (a JPEG's quality), its EXIF. Both decode routes (CPU and GPU) call it."""
        self.metadata(width=image.size[0], height=image.size[1], **encoding_of(image))
        self.exif(image.getexif())

    def exif(self, exif: Image.Exif) -> None:
        """Read capture facts from Pillow's EXIF of the decoded file."""
        try:
            sub = exif.get_ifd(_EXIF_IFD)
            self.metadata(**_exif_facts(exif.get(_MAKE), exif.get(_MODEL), sub.get(_DATETIME_ORIGINAL),
                                        sub.get(_SUBSEC_ORIGINAL), sub.get(_OFFSET_ORIGINAL), sub.get(_BODY_SERIAL)),
                          software=_clean(exif.get(_SOFTWARE)), **_exposure_program(sub.get(_EXPOSURE_BIAS), sub.get(_EXPOSURE_MODE)))
        except Exception as exc:  # damaged EXIF costs the facts, never the pixels
            self.metadata(problem=f"unreadable EXIF ({type(exc).__name__})")

    def detail(self, image: Image.Image) -> None:
        """Sharpness and edge width, on the image as decoded (before it is reduced for the model)."""
        if "sharpness" not in self.found:
            grey = _analysis_grey(image)
            self.found.update(sharpness=sharpness(grey), edge_width=edge_width(grey))

    def final(self, image: Image.Image) -> None:
        """Clipping and signature, on the small upright RGB image the model gets."""
        if "signature" not in self.found:
            highlights, shadows = clipping(image)
            whole, inner, core = signatures(image)
            self.found.update(clipped_highlights=highlights, clipped_shadows=shadows, brightest=brightest(image),
                              blown_highlights=blown(image), clipped_channel=clipped_channel(image),
                              signature=whole, signature_inner=inner, signature_core=core)

    def exiv2(self, exif_data) -> None:
        """Read capture facts from Exiv2's ExifData (a RAW's own metadata)."""
        self.metadata(**exiv2_metadata(exif_data))

    def facts(self) -> CaptureFacts:
        found = dict(self.found)
        if found.get("encoding") != JPEG:
            found.pop("quality", None)  # a RAW's embedded preview is a JPEG; its quality is not the file's
        return CaptureFacts(**found)


def exiv2_metadata(exif_data) -> dict:
    """The same facts from Exiv2's ExifData (a RAW's own metadata)."""
    import exiv2

    def text(key: str) -> str | None:
        try:
            datum = exif_data.findKey(exiv2.ExifKey(key))  # findKey: [] would add the tag
            return None if datum == exif_data.end() else datum.toString()
        except Exception:
            return None

    facts = _exif_facts(text("Exif.Image.Make"), text("Exif.Image.Model"), text("Exif.Photo.DateTimeOriginal"),
                        text("Exif.Photo.SubSecTimeOriginal"), text("Exif.Photo.OffsetTimeOriginal"),
                        text("Exif.Photo.BodySerialNumber"))
    return {**facts, "software": _clean(text("Exif.Image.Software")),
            **_exposure_program(text("Exif.Photo.ExposureBiasValue"), text("Exif.Photo.ExposureMode"))}


def _exposure_program(bias, mode) -> dict:
    """{"exposure_bias": EV, "auto_bracket": bool} from EXIF values as Pillow ("-2/3" as a
    rational) or Exiv2 (text "-2/3", "2") gives them; what cannot be read is left out."""
    found = {}
    try:
        if bias is not None:
            if isinstance(bias, str) and "/" in bias:
                numerator, denominator = bias.split("/", 1)
                bias = float(numerator) / float(denominator) if float(denominator) else None
            value = None if bias is None else float(bias)
            if value is not None and math.isfinite(value) and abs(value) <= 16:
                found["exposure_bias"] = round(value, 2)
    except (TypeError, ValueError, ZeroDivisionError):
        pass
    try:
        if mode is not None:
            found["auto_bracket"] = int(str(mode).split()[0]) == 2
    except (TypeError, ValueError):
        pass
    return found


# --- which copy is the original -------------------------------------------------------------

RAW, LOSSLESS, JPEG, LOSSY = "raw", "lossless", "jpeg", "lossy"
_LOSSLESS_FORMATS = ("PNG", "TIFF", "BMP", "GIF")
# IJG's luminance table for quality 50 (ITU-T T.81 Annex K, Table K.1), which libjpeg
# scales for every quality setting; cameras and editors use it or tables close to it.
_IJG_LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
# Names in EXIF Software that say an editor, not a camera, wrote the file (lower case).
_EDITORS = re.compile(
    r"\b(lightroom|photoshop|darktable|digikam|gimp|rawtherapee|capture one|capture nx|nx studio|digital photo "
    r"professional|silkypix|affinity|luminar|snapseed|dxo|on1|acdsee|paint\.net|imagemagick|graphicsmagick|"
    r"pixelmator|picasa|shotwell|gthumb|exiftool|lightzone|ansel|vkdt|photomator|canva|facebook|whatsapp|"
    r"instagram|photos editor)\b",
)


def is_camera_file(camera: str | None, taken_at: float | None, software: str | None) -> bool:
    return camera is not None and taken_at is not None and not edited_by_software(software)


def edited_by_software(software: str | None) -> bool:
    return bool(software) and _EDITORS.search(software.lower()) is not None


def encoding_of(image: Image.Image) -> dict:
    """{"encoding": ..., "quality": ...} of an opened file (not its pixels)."""
    if image.format in ("JPEG", "MPO"):
        return {"encoding": JPEG, "quality": jpeg_quality(getattr(image, "quantization", None))}
    if image.format in _LOSSLESS_FORMATS:
        return {"encoding": LOSSLESS}
    return {"encoding": LOSSY} if image.format else {}


def jpeg_quality(tables: dict | None) -> int | None:
    """The IJG quality (1-100) a JPEG's luminance table corresponds to: libjpeg scales the
    standard table by S = 5000/q (q < 50) or 200 - 2q, so the ratio of the sums gives S
    whatever order the table is stored in. A camera's own tables land near its setting
    (a camera's "fine" reads 90-98); tables of another design read as the nearest quality."""
    if not tables or 0 not in tables or len(tables[0]) != 64:
        return None
    if max(tables[0]) == 1:
        return 100  # every step 1: quality 100 (the formula's clamp would read 99)
    scale = 100.0 * sum(tables[0]) / sum(_IJG_LUMINANCE)
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return int(min(100, max(1, round(quality))))


def _exif_facts(make, model, original, subsec, offset, serial) -> dict:
    facts = {"camera": _camera(_clean(make), _clean(model)), "serial": _clean(serial)}
    original = _clean(original)
    if original is None:
        return facts
    parsed = parse_capture_time(original, _clean(subsec), _clean(offset))
    if parsed is None:
        facts["problem"] = f"unreadable capture time {original!r}"
    else:
        facts["taken_at"], facts["taken_at_text"] = parsed
    return facts


def _clean(value) -> str | None:
    """EXIF text as found in the wild: bytes, NUL-padded, blank-padded, or empty."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = "".join(ch for ch in str(value).replace("\x00", "") if ch.isprintable()).strip()
    return text or None


def _camera(make: str | None, model: str | None) -> str | None:
    if make and model and not model.lower().startswith(make.split()[0].lower()):
        return f"{make} {model}"  # "NIKON CORPORATION" + "NIKON D850" says the make once
    return model or make


_TIME = re.compile(r"(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"([+-])(\d{2}):?(\d{2})")


def parse_capture_time(original: str, subsec: str | None, offset: str | None) -> tuple[float, str] | None:
    """("2024:05:01 10:00:00", "25", "+02:00") -> (camera-clock seconds, ISO text); None when
    the time is no time at all ("0000:00:00 00:00:00", blanks, garbage)."""
    match = _TIME.match(original)
    if not match:
        return None
    try:
        moment = datetime(*(int(part) for part in match.groups()))
    except ValueError:  # month 13, day 0, ...
        return None
    digits = "".join(ch for ch in (subsec or "") if ch.isdigit())[:6]
    if digits:
        moment += timedelta(microseconds=int(digits.ljust(6, "0")))
    seconds = (moment - datetime(1970, 1, 1)).total_seconds()
    zone = _zone(offset)
    text = (moment.replace(tzinfo=zone) if zone else moment).isoformat(timespec="milliseconds" if digits else "seconds")
    return seconds, text


def _zone(offset: str | None) -> timezone | None:
    match = _OFFSET.fullmatch(offset or "")
    if not match:
        return None
    sign, hours, minutes = match.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    return timezone(-delta if sign == "-" else delta) if delta <= timedelta(hours=14) else None


# --- pixels ------------------------------------------------------------------------------


def _analysis_grey(image: Image.Image) -> Image.Image:
    """Luminance with its short side at ANALYSIS_SIDE: the decoder's draft (never under it)
    averaged down by area, exactly by an integer factor where one fits (a PNG or TIFF is
    decoded whole). A smaller image is measured as it is (a web copy is never judged alone)."""
    grey = image.convert("L")
    short = min(grey.size)
    if short <= ANALYSIS_SIDE:
        return grey
    if short % ANALYSIS_SIDE == 0:
        return grey.reduce(short // ANALYSIS_SIDE)
    scale = ANALYSIS_SIDE / short
    size = (max(1, round(grey.size[0] * scale)), max(1, round(grey.size[1] * scale)))
    return grey.resize(size, Image.Resampling.BOX)


MIN_MEASURED_SIDE = 64  # a smaller image (a stripped RAW's thumbnail) says nothing of focus
BLUR_RADIUS = 4  # Crete's re-blur: a 9-tap box along one axis


def sharpness(grey: Image.Image) -> float | None:
    """Crete et al.'s measure (see the module doc), 0..1: the share of the image's
    neighbour differences that a 9-tap box blur removes, in the blurrier direction, over
    the most detailed tiles. None for an image too small to tell.

    Pillow blurs (its BoxBlur takes a radius per axis since 10.1: 7x faster than numpy,
    equal within rounding to 8 bits), and the differences stay 16-bit integers: at 750x500
    the measure costs about 10 ms."""
    if min(grey.size) < MIN_MEASURED_SIDE:
        return None
    pixels = np.asarray(grey, dtype=np.int16)
    along = {0: (0, BLUR_RADIUS), 1: (BLUR_RADIUS, 0)}  # numpy axis -> Pillow's (x, y) radius
    return min(
        _directional_sharpness(pixels, np.asarray(grey.filter(ImageFilter.BoxBlur(along[axis])), dtype=np.int16), axis)
        for axis in (0, 1)
    )


# Edge width (a photo on its own has no sharp twin to be compared with): Zhuo and Sim,
# "Defocus map estimation from a single image" (Pattern Recognition 44(9), 2011). Blur the
# image again with a Gaussian of EDGE_REBLUR; at a step edge blurred by sigma, the ratio R of
# the gradient magnitudes before and after gives sigma = EDGE_REBLUR / sqrt(R^2 - 1), whatever
# the edge's contrast. It is read at the strongest edges only (the top EDGE_SHARE of
# gradients: the subject in focus, however soft the background), their lower quartile.
# Chosen on mate-backgrounds' 24 MP frames (closing note of issue 24): sharp frames read
# 0.31-1.05 px, the same defocused by 8 px at 24 MP 0.85-1.40, by 16 px 1.80-2.38.
EDGE_REBLUR = 1.0
EDGE_SHARE = 0.002
EDGE_QUANTILE = 25
EDGE_MIN_GRADIENT = 4.0  # 8-bit levels per pixel: below, no edge (a smooth sky, a foggy gradient)
EDGE_MIN_PIXELS = 50


def edge_width(grey: Image.Image) -> float | None:
    """The blur of the image's crispest edges in px (see above); None for an image without
    edges to read (too small, or smooth throughout: a gradient is not a blurred photo).
    Integer differences, squared magnitudes (the ratio needs no square root until the end)
    and a partition instead of a sort: about 10 ms at 750x500."""
    if min(grey.size) < MIN_MEASURED_SIDE:
        return None
    before = _squared_gradient(np.asarray(grey, dtype=np.int16)).ravel()
    count = max(1, int(before.size * EDGE_SHARE))
    floor = max(int(np.partition(before, before.size - count)[before.size - count]), int(4 * EDGE_MIN_GRADIENT**2))
    strongest = np.flatnonzero(before >= floor)
    blurred = np.asarray(grey.filter(ImageFilter.GaussianBlur(EDGE_REBLUR)), dtype=np.int16)
    after = _squared_gradient(blurred).ravel()[strongest]
    squared_ratio = before[strongest] / np.maximum(after, 1).astype(np.float64)
    squared_ratio = squared_ratio[squared_ratio > 1.0002]
    if squared_ratio.size < EDGE_MIN_PIXELS:
        return None
    return float(np.percentile(EDGE_REBLUR / np.sqrt(squared_ratio - 1.0), EDGE_QUANTILE))


def _squared_gradient(pixels: np.ndarray) -> np.ndarray:
    """(2 x the central-difference gradient)^2, as int32; borders left out (the re-blur pads them)."""
    dx = pixels[3:-3, 4:-2] - pixels[3:-3, 2:-4]
    dy = pixels[4:-2, 3:-3] - pixels[2:-4, 3:-3]
    return dx.astype(np.int32) ** 2 + dy.astype(np.int32) ** 2


def _directional_sharpness(grey: np.ndarray, blurred: np.ndarray, axis: int) -> float:
    # Steps of one grey level (quantisation) count as detail: a frame a stop darker has
    # more of them and measures up to ~0.05 sharper. Leaving them out (tried, measured with
    # bench_culling.py) steadied exposure but cost a dark sharp frame its lead over a
    # brighter shaken one, and doubled false "blurry" flags: the margins allow for it instead.
    variation = np.abs(np.diff(grey, axis=axis))
    lost = np.maximum(variation - np.abs(np.diff(blurred, axis=axis)), 0)
    detail, removed = _tile_sums(variation), _tile_sums(lost)
    count = max(1, int(round(detail.size * DETAILED_SHARE)))
    top = np.argsort(detail, axis=None)[-count:]
    total = float(detail.flat[top].sum())
    return float(removed.flat[top].sum()) / total if total > 0 else 0.0


def _tile_sums(values: np.ndarray) -> np.ndarray:
    """Sums over TILES x TILES tiles (the last rows and columns that don't fill a tile are left out)."""
    rows, cols = values.shape[0] // TILES, values.shape[1] // TILES
    tiles = values[: rows * TILES, : cols * TILES].reshape(TILES, rows, TILES, cols)
    return tiles.sum(axis=(1, 3), dtype=np.int64)


def clipping(image: Image.Image) -> tuple[float, float]:
    """(share of pixels clipped at white, share at black)."""
    white = _white(image)
    black = (np.asarray(image.convert("L")) <= BLACK).sum()
    total = max(1, white.size)
    return float(white.sum()) / total, float(black) / total


def _white(image: Image.Image) -> np.ndarray:
    """Pixels clipped at white: two channels or more at WHITE, i.e. the median channel.
    Luminance alone misses an overexposed flower (its yellow clips red and green while blue
    holds the luminance below white); one channel alone would take every saturated red for
    a clipped one. Pillow's min/max of whole bands: a fifth of numpy's cost."""
    red, green, blue = image.convert("RGB").split()
    median = ImageChops.lighter(ImageChops.darker(red, green), ImageChops.darker(ImageChops.lighter(red, green), blue))
    return np.asarray(median) >= WHITE


def clipped_channel(image: Image.Image) -> float:
    """The share of pixels with any channel at WHITE. A saturated colour clips one channel
    in a correctly exposed photo, over a part of the frame (mate-backgrounds' photos at
    0 EV: 27 % at most); a red flower pushed two stops clips its red over most of it
    (88 %) with the other channels well below white."""
    red, green, blue = image.convert("RGB").split()
    brightest_channel = np.asarray(ImageChops.lighter(ImageChops.lighter(red, green), blue))
    return float((brightest_channel >= WHITE).mean())


def blown(image: Image.Image) -> float:
    """The share of the frame in clipped areas (4-connected) of BLOWN_AREA of it or more.

    Connected areas are found on the runs of clipped pixels of each row, joined where runs
    of neighbouring rows overlap: numpy only (scipy is no dependency of the package)."""
    white = _white(image)
    starts, ends, stride = _runs(white)
    if not len(starts):
        return 0.0
    area = np.bincount(_join(starts, ends, stride), weights=ends - starts)
    return float(area[area >= BLOWN_AREA * white.size].sum()) / white.size


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Each run of True in a row as (start, end) positions in the mask read row by row with
    a False column after each row (so no run crosses a row's end), and that row length."""
    height, width = mask.shape
    padded = np.zeros((height, width + 1), np.int8)
    padded[:, :width] = mask
    edges = np.diff(padded.ravel(), prepend=np.int8(0))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), width + 1


def _join(starts: np.ndarray, ends: np.ndarray, stride: int) -> np.ndarray:
    """A label per run, shared by runs that touch (overlap in neighbouring rows). Positions
    come sorted, so the next row's runs that overlap a run are one slice of them."""
    first = np.searchsorted(ends, starts + stride, side="right")  # the next row's runs ending after this one starts
    last = np.searchsorted(starts, ends + stride, side="left")  # ... and starting before it ends
    counts = np.maximum(last - first, 0)
    upper = np.repeat(np.arange(len(starts)), counts)
    lower = np.repeat(first - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    return _components(len(starts), upper, lower)


def _components(count: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of a graph with edges a[i]-b[i]: each node's smallest reachable
    label. Roots hook onto the smaller root across each edge, then paths are halved until
    every node points at its root; a few rounds for the shapes clipping makes."""
    label = np.arange(count)
    while True:
        low, high = np.minimum(label[a], label[b]), np.maximum(label[a], label[b])
        apart = low != high
        if not apart.any():
            return label
        np.minimum.at(label, high[apart], low[apart])
        while True:
            pointed = label[label]
            if np.array_equal(pointed, label):
                break
            label = pointed


def brightest(image: Image.Image) -> float:
    """Luminance of the brightest 1 % of pixels, 0..1: a frame four stops under clips
    almost nothing at black, but nothing in it comes near white either."""
    histogram = np.asarray(image.convert("L").histogram(), dtype=np.int64)
    above = np.cumsum(histogram[::-1])  # pixels at or above each level, from white down
    level = 255 - int(np.searchsorted(above, max(1, int(0.01 * histogram.sum()))))
    return level / 255


def signatures(image: Image.Image) -> tuple[int, int, int]:
    """pHash of the whole image, of its central 92 % and of its central 84 %."""
    width, height = image.size
    found = [signature(image)]
    for share in INNER_SHARES:
        dx, dy = int(width * (1 - share) / 2), int(height * (1 - share) / 2)
        found.append(signature(image.crop((dx, dy, width - dx, height - dy))))
    return found[0], found[1], found[2]


def signature(image: Image.Image) -> int:
    """pHash: the signs of the 8x8 lowest DCT frequencies (DC left out) of a 32x32 grey
    version against their median, as a signed 64-bit int."""
    grey = np.asarray(image.convert("L").resize((SIGNATURE_SIZE, SIGNATURE_SIZE), Image.Resampling.BOX), np.float64)
    basis = _dct_basis(SIGNATURE_SIZE)[:8]
    low = (basis @ grey @ basis.T).ravel()[1:]  # 63 coefficients
    bits = np.concatenate([[False], low > np.median(low)])
    value = int("".join("1" if b else "0" for b in bits), 2)
    return value - (1 << 64) if value >= 1 << 63 else value


@functools.cache
def _dct_basis(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    return np.cos(math.pi * (2 * x + 1) * k / (2 * n))
