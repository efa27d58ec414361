"""Turn a photo file into a small, upright, 8-bit RGB image, as cheaply as its format allows.

The embedder needs about 224 px on the short side, and a library holds up to a million
photos, so decoding a 24 MP file at full size to throw 99 % of it away is the thing to avoid.
Every route therefore decodes at the smallest size that still gives ``min_side`` pixels on
the short side:

* JPEG: libjpeg's DCT scaling (``Image.draft``) decodes directly at 1/2, 1/4 or 1/8 size.
* HEIC/HEIF: pillow-heif's ``draft`` decodes an embedded thumbnail when one is big enough.
* PNG, TIFF, WebP, BMP, GIF (first frame), AVIF: no cheap route exists, so the full image is
  decoded; like every other route it is then box-reduced by an integer factor, which leaves
  the short side in ``[min_side, 2 * min_side)``.
* RAW: never demosaic when the camera already did. Exiv2's PreviewManager yields the
  embedded previews (largest first), decoded like any JPEG/TIFF above; then LibRaw's
  thumbnail; a half-size LibRaw demosaic is the last resort. A preview smaller than
  ``min_side`` is returned only when nothing bigger can be had.

The file's content decides the route, not its name (a PNG called ``.jpg`` decodes fine); the
one exception is RAW, which like darktable and digiKam we recognise by extension, since
most RAW formats are TIFF containers that Pillow would misread.

Then, in this order: pixel mode to 8-bit RGB (16-bit and float images are rescaled, not
clipped; transparency is composited onto white, what viewers and web pages show behind a
cut-out), reduction, and orientation from EXIF (or from the RAW file when its preview carries
none). Orientation comes last so that it transposes the small image.

Errors: every failure is raised as a subclass of ``aes_index.errors.DecodeError`` whose
message is one line naming the file's basename; the library's own exception is chained
(``raise ... from exc``) for debugging. A decompression bomb is refused from the header size,
before any pixel is decoded.

One process-wide side effect: Pillow's own bomb guard (``Image.MAX_IMAGE_PIXELS``) is raised
to ``max_pixels`` when it is lower, so that it never refuses an image our limit allows; it is
never lowered. Exiv2 reports damaged metadata through the ``exiv2`` logger of the ``logging``
module; silencing or keeping those warnings is the application's choice.

The review (features/review/images.py) wants the other end: a photo at full resolution, or
fitted inside a screen, with the same routes, guards and errors. ``decode_for_display`` and
``display_header`` give it that; the only difference is the size each route decodes at (a
"sizing": _Thumbnail for decode_image, _Display for the review), and that a RAW shows its
largest embedded preview that decodes.

Importing this module is cheap and never pulls in torch; exiv2, rawpy, pillow-heif and numpy
are imported on first use, so it is safe and fast to import in worker processes.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from PIL import Image, UnidentifiedImageError

from aes_index.errors import (
    CorruptImage,
    DecodeError,
    DecompressionBomb,
    EmptyFile,
    NoPreview,
    Unreadable,
    UnsupportedFormat,
)

if TYPE_CHECKING:  # culling's probe imports numpy; decode stays cheap to import
    from aes_index.index.facts import FactsProbe

RAW_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".raf",
        ".orf", ".rw2", ".pef", ".srw", ".kdc", ".dcr", ".mrw", ".3fr", ".erf", ".mef",
        ".mos", ".iiq", ".x3f", ".rwl",
    }
)  # fmt: skip
_PILLOW_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif"}
)
# find_spec looks for the optional decoders without importing them.
_HEIF_EXTENSIONS = (
    frozenset({".heic", ".heif", ".hif"}) if find_spec("pillow_heif") else frozenset()
)
_AVIF_EXTENSIONS = frozenset({".avif"}) if find_spec("PIL._avif") else frozenset()
SUPPORTED_EXTENSIONS: frozenset[str] = (
    _PILLOW_EXTENSIONS | _HEIF_EXTENSIONS | _AVIF_EXTENSIONS | RAW_EXTENSIONS
)

# JPEG/HEIF drafts are decoded at least this big on the short side (see _decode_with_pillow):
# culling's sharpness is measured at one scale, facts.ANALYSIS_SIDE (kept equal; a test
# holds them so), so that a half-size export of a frame measures as its original does. A
# 24 MP frame still decodes at 1/8 (750x500); a 12 MP one at 1/4, where it used to be 1/8.
DRAFT_MIN_SIDE: int = 500
MAX_PIXELS: int = 250_000_000  # above the largest stills cameras make (pixel-shift excepted)

# Pillow may open only these. Anything else Pillow knows (EPS runs Ghostscript, for one) is
# no photo format and has no business being parsed from an untrusted library.
_PILLOW_FORMATS = ("JPEG", "MPO", "PNG", "TIFF", "WEBP", "BMP", "GIF", "HEIF", "AVIF")

_BACKGROUND = (255, 255, 255)  # what transparent pixels become
_SNIFF_BYTES = 16
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1",
                          b"msf1", b"avif", b"avis"})  # fmt: skip
_MAX_MESSAGE_CHARS = 400

_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose).
_UPRIGHTING_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# LibRaw's sizes.flip -> EXIF orientation (LibRaw derives flip from that tag: 6->6, 8->5).
_LIBRAW_FLIP_TO_ORIENTATION = {0: 1, 3: 3, 5: 8, 6: 6}
_HIGH_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})


def decode_image(
    path: str | os.PathLike, min_side: int = 224, max_pixels: int = MAX_PIXELS, probe: FactsProbe | None = None
) -> Image.Image:
    """Return an RGB, EXIF-orientation-corrected PIL image whose SHORT side is >= min_side
    (unless the source is smaller), decoded as cheaply as possible. Raises only subclasses of
    aes_index.errors.DecodeError (EmptyFile, UnsupportedFormat, CorruptImage, DecompressionBomb,
    NoPreview, Unreadable) with a clear one-line message naming the file's basename and what
    went wrong.

    The short side is also below ``2 * min_side``: callers always get a small image. A source
    smaller than ``min_side`` (for a RAW: the largest image it offers) is returned at its own
    size, never upscaled. Bad arguments (``min_side < 1``) raise ValueError, not DecodeError.

    A `probe` (culling.facts) collects capture facts on the way: the file's metadata and
    measures of the pixels as they pass, at no second decode.
    """
    if min_side < 1 or max_pixels < 1:
        raise ValueError(f"min_side and max_pixels must be >= 1, not {min_side}, {max_pixels}")
    image = _decode(path, _Thumbnail(min_side), max_pixels, probe)
    assert image is not None  # a thumbnail always decodes its pixels
    return image


class Displayed(NamedTuple):
    """A photo as the review shows it (decode_for_display, display_header)."""

    image: Image.Image | None  # upright 8-bit RGB; None from display_header
    size: tuple[int, int]  # its full resolution as displayed: upright; a RAW's is its preview's
    source: str  # what is shown: "jpeg", "png", "tiff", "heif", "webp", ... or for a RAW
    # "raw-preview" (an embedded preview), "raw-thumbnail" (LibRaw's), "raw-demosaic"
    lossless: bool  # its codec keeps every pixel (PNG, TIFF not JPEG-compressed, BMP, GIF, a bitmap)


def decode_for_display(
    path: str | os.PathLike, fit: tuple[int, int] | None = None, max_pixels: int = MAX_PIXELS
) -> Displayed:
    """The photo upright, at full resolution (``fit`` None) or fitted inside ``fit`` = (width,
    height), never upscaled. Full resolution is the file's own size, or for a RAW the largest
    embedded preview that decodes (then LibRaw's thumbnail, then its half-size demosaic).

    A fit decodes as cheaply as the format allows (JPEG's DCT scaling, a HEIF thumbnail big
    enough) and is resampled (bicubic) to the exact size. Raises what decode_image raises.
    """
    if fit is not None and (len(fit) != 2 or min(fit) < 1):
        raise ValueError(f"fit must be a (width, height) of at least 1 pixel, not {fit!r}")
    sizing = _Display(fit)
    image = _decode(path, sizing, max_pixels)
    return sizing.result(image)


def display_header(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Displayed:
    """decode_for_display's size, source and codec without its pixels (image is None): read
    from the header where the format allows (JPEG, HEIF, TIFF, a RAW's preview)."""
    sizing = _Display(None, pixels=False)
    _decode(path, sizing, max_pixels)
    return sizing.result(None)


def _decode(path: str | os.PathLike, sizing: _Sizing, max_pixels: int, probe: FactsProbe | None = None) -> Image.Image | None:
    path = os.fsdecode(os.fspath(path))
    name = _printable(os.path.basename(path))
    try:
        head = _read_head(path, name)
        if _takes_raw_route(path, head):
            return _decode_raw(path, name, sizing, max_pixels, probe)
        with open(path, "rb") as stream:
            return _decode_with_pillow(stream, name, head, sizing, max_pixels, probe=probe)
    except DecodeError:
        raise
    except Exception as exc:  # a library's own exception: give it a type the index records
        raise _as_decode_error(exc, name) from exc


# --- sizings: how big each route decodes ------------------------------------------------------


class _Thumbnail:
    """decode_image's size: a short side in [min_side, 2 * min_side), drafts never below
    DRAFT_MIN_SIDE; a RAW source is enough once its short side reaches min_side."""

    def __init__(self, min_side: int):
        self.min_side = min_side

    def load(self, image: Image.Image, fallback_orientation: int | None, probe: FactsProbe | None) -> Image.Image:
        # The DCT scale (or HEIF thumbnail) is picked on the stored, pre-rotation size;
        # a square request keeps it independent of orientation. Never below
        # DRAFT_MIN_SIDE, whatever the model's input: culling's sharpness is measured on
        # this image at one scale, for every backbone and every size of the file.
        side = max(self.min_side, DRAFT_MIN_SIDE)
        image.draft("RGB", (side, side))
        image.load()
        orientation = _embedded_orientation(image) or fallback_orientation
        return self.finish(image, orientation, probe)

    def finish(self, image: Image.Image, orientation: int | None, probe: FactsProbe | None = None) -> Image.Image:
        return _finish(image, orientation, self.min_side, probe)

    def enough(self, image: Image.Image) -> bool:
        return min(image.size) >= self.min_side

    def chose(self, kind: str) -> None:
        """The RAW route kept this kind of source: nothing to record for a thumbnail."""


class _Display:
    """The review's size: full resolution, or fitted inside a box; the first RAW source that
    decodes is kept (they come largest first). Records what it saw for the Displayed."""

    def __init__(self, box: tuple[int, int] | None, pixels: bool = True):
        self.box = box
        self.pixels = pixels
        self.size: tuple[int, int] | None = None
        self.source = ""
        self.lossless = False

    def load(self, image: Image.Image, fallback_orientation: int | None, probe: FactsProbe | None) -> Image.Image | None:
        # Orientation before the draft: the box is upright, the DCT scale is picked on the
        # stored size (a PNG's EXIF may follow its pixels: Pillow then loads it here).
        orientation = _embedded_orientation(image) or fallback_orientation
        stored = image.size
        self._saw(stored, orientation, _format_tag(image), _is_lossless(image))
        if not self.pixels:
            return None
        if self.box is not None:
            image.draft("RGB", _draft_request(stored, self._scale()))
        image.load()
        return self._fitted(image, stored, orientation)

    def finish(self, image: Image.Image, orientation: int | None, probe: FactsProbe | None = None) -> Image.Image | None:
        """Pixels already decoded (LibRaw's bitmap thumbnail or demosaic): exact as they are."""
        self._saw(image.size, orientation, "", True)  # the RAW route names the source (chose)
        return self._fitted(image, image.size, orientation) if self.pixels else None

    def enough(self, image: Image.Image) -> bool:
        return True

    def chose(self, kind: str) -> None:
        self.source = kind

    def result(self, image: Image.Image | None) -> Displayed:
        assert self.size is not None  # every route that returns has seen a header
        return Displayed(image, self.size, self.source, self.lossless)

    def _saw(self, stored: tuple[int, int], orientation: int | None, source: str, lossless: bool) -> None:
        self.size = _upright_size(stored, orientation)
        self.source, self.lossless = source, lossless

    def _scale(self) -> float:
        """The fit's scale on the full size, at most 1 (never upscaled)."""
        assert self.box is not None and self.size is not None
        return min(self.box[0] / self.size[0], self.box[1] / self.size[1], 1.0)

    def _fitted(self, image: Image.Image, stored: tuple[int, int], orientation: int | None) -> Image.Image:
        """RGB, resampled to the fit, upright: always a new image, detached from the file.

        A plain RGB image is not copied first (_to_rgb would): a resize or a turn makes a new
        one anyway, and a copy of 24 MP costs 25-85 ms (bench_review_images.py)."""
        rgb = image if image.mode == "RGB" and "transparency" not in image.info else _to_rgb(image)
        if self.box is not None:  # resampled before it is turned: the smaller image turns
            scale = self._scale()
            target = (max(1, round(stored[0] * scale)), max(1, round(stored[1] * scale)))
            if rgb.size != target:  # bicubic: about half Lanczos's CPU time from a 24 MP
                rgb = rgb.resize(target, Image.Resampling.BICUBIC)  # frame's 1/2 draft, 80 ms not 150
        rgb = _upright(rgb, orientation)
        return rgb.copy() if rgb is image else rgb


_Sizing = _Thumbnail | _Display


def _draft_request(stored: tuple[int, int], scale: float) -> tuple[int, int]:
    """The smallest decode that still holds the fit: a draft gives at least this size."""
    return (max(1, math.ceil(stored[0] * scale)), max(1, math.ceil(stored[1] * scale)))


def _upright_size(size: tuple[int, int], orientation: int | None) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in _SWAPS_SIDES else size


_SWAPS_SIDES = frozenset({5, 6, 7, 8})
# TIFF compressions (as Pillow names them) that lose pixels; the others are lossless.
_LOSSY_TIFF_COMPRESSIONS = frozenset({"jpeg", "tiff_jpeg", "webp"})


def _format_tag(image: Image.Image) -> str:
    fmt = (image.format or "").upper()
    return {"MPO": "jpeg"}.get(fmt, fmt.lower())


def _is_lossless(image: Image.Image) -> bool:
    """Whether every pixel decoded is the one stored. WebP may be either; Pillow does not
    say which, so it counts as lossy (a tile is then a faithful JPEG, not an exact PNG)."""
    fmt = (image.format or "").upper()
    if fmt == "TIFF":
        return image.info.get("compression") not in _LOSSY_TIFF_COMPRESSIONS
    return fmt in ("PNG", "BMP", "GIF")


# --- routing -------------------------------------------------------------------------------


def _read_head(path: str, name: str) -> bytes:
    with open(path, "rb") as stream:
        head = stream.read(_SNIFF_BYTES)
    if not head:
        raise EmptyFile(_line(name, "file is empty (0 bytes)"))
    return head


def _sniff(head: bytes) -> str | None:
    """Name the container the file's first bytes announce (whatever its extension says)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIF/AVIF"
    return None


def _takes_raw_route(path: str, head: bytes) -> bool:
    # Most RAW formats are TIFF containers (or unknown to _sniff); a RAW-named file that is
    # plainly a JPEG, PNG, ... was renamed and goes to Pillow.
    extension = os.path.splitext(path)[1].lower()
    return extension in RAW_EXTENSIONS and _sniff(head) in (None, "TIFF")


# --- Pillow route --------------------------------------------------------------------------


def _decode_with_pillow(
    stream: IO[bytes],
    name: str,
    head: bytes,
    sizing: _Sizing,
    max_pixels: int,
    fallback_orientation: int | None = None,
    probe: FactsProbe | None = None,
) -> Image.Image | None:
    """Decode a stream Pillow (or pillow-heif) can read, at the smallest size the sizing allows.

    ``fallback_orientation`` applies when the stream has no orientation tag of its own (a
    RAW's embedded preview inherits the RAW's).
    """
    with _pillow_guard_deferring_to(max_pixels):
        try:
            opened = Image.open(stream, formats=_pillow_formats())
        except UnidentifiedImageError as exc:
            raise _unidentified(name, head) from exc
        with opened as image:
            _refuse_bomb(name, image.size, max_pixels)
            if probe is not None:
                probe.header(image)
            return sizing.load(image, fallback_orientation, probe)


@functools.cache
def _pillow_formats() -> tuple[str, ...]:
    _register_heif_opener()
    Image.init()  # load every plugin so that OPEN lists what this Pillow build can read
    return tuple(fmt for fmt in _PILLOW_FORMATS if fmt in Image.OPEN)


def _register_heif_opener() -> None:
    try:
        import pillow_heif
    except ImportError:  # HEIC then reads as unsupported; every other format still works
        return
    pillow_heif.register_heif_opener()


@contextlib.contextmanager
def _pillow_guard_deferring_to(max_pixels: int) -> Iterator[None]:
    """Keep Pillow's own bomb guard from firing before ours.

    Pillow warns above Image.MAX_IMAGE_PIXELS and raises above twice that, with its own
    default limit and an untyped warning. Raising its limit to ours (never lowering it: other
    code in the process may rely on it) and silencing the warning leaves _refuse_bomb, right
    after the header is read, as the guard that decides.
    """
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _refuse_bomb(name: str, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise DecompressionBomb(
            _line(
                name,
                f"{width}x{height} is {width * height / 1e6:.1f} megapixels, over the "
                f"{max_pixels / 1e6:g} megapixel limit; not decoded (possible decompression bomb)",
            )
        )


def _unidentified(name: str, head: bytes) -> DecodeError:
    announced = _sniff(head)
    if announced is None:
        return UnsupportedFormat(_line(name, "not an image format aes-index can read"))
    if announced == "HEIF/AVIF" and "HEIF" not in _pillow_formats():
        return UnsupportedFormat(_line(name, "HEIF image, but pillow-heif is not installed"))
    return CorruptImage(_line(name, f"starts like a {announced} file but its header is damaged"))


def _embedded_orientation(image: Image.Image) -> int | None:
    """EXIF orientation 1-8 (Pillow also reads XMP's tiff:Orientation), None when absent."""
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG)
    except Exception:  # a damaged EXIF block must not cost us the pixels, only the rotation
        return None
    return orientation if orientation in range(1, 9) else None


# --- RAW route -----------------------------------------------------------------------------


@dataclass
class _RawAttempts:
    """What the RAW route learnt on its way, for the message when nothing worked."""

    problems: list[str] = field(default_factory=list)
    recognised: bool = False  # exiv2 or LibRaw understood the container


def _decode_raw(path: str, name: str, sizing: _Sizing, max_pixels: int, probe: FactsProbe | None = None) -> Image.Image | None:
    """Try the RAW's image sources from cheapest to dearest; keep the first big enough."""
    attempts = _RawAttempts()
    best: tuple[Image.Image, str] | None = None
    if probe is not None:  # whichever image it shows (a preview is a JPEG), the file is the RAW
        probe.metadata(encoding="raw")
    with contextlib.closing(_raw_sources(path, sizing, max_pixels, attempts, probe)) as sources:
        for label, kind, load in sources:
            try:
                image = load()
            except DecodeError as exc:  # raised with the label as its name
                attempts.problems.append(str(exc))
                continue
            except Exception as exc:  # one source failing is what the next one is for
                attempts.problems.append(f"{label}: {_describe(exc)}")
                continue
            if image is None or sizing.enough(image):  # None: a header was all it asked for
                sizing.chose(kind)
                return image
            if best is None or _area(image) > _area(best[0]):
                best = (image, kind)
    if best is not None:
        sizing.chose(best[1])
        return best[0]
    raise _raw_failure(name, attempts)


_RawSource = tuple[str, str, Callable[[], "Image.Image | None"]]  # label, kind (Displayed.source), loader


def _raw_sources(
    path: str, sizing: _Sizing, max_pixels: int, attempts: _RawAttempts, probe: FactsProbe | None = None
) -> Iterator[_RawSource]:
    """Yield (label, kind, loader) for each image a RAW file offers, cheapest first.

    Generators all the way, so that LibRaw is not even opened when a preview will do.
    """
    yield from _embedded_previews(path, sizing, max_pixels, attempts, probe)
    yield from _libraw_images(path, sizing, max_pixels, attempts, probe)


def _embedded_previews(
    path: str, sizing: _Sizing, max_pixels: int, attempts: _RawAttempts, probe: FactsProbe | None = None
) -> Iterator[_RawSource]:
    try:
        opened = _open_with_exiv2(path)
    except Exception as exc:
        attempts.problems.append(f"exiv2: {_describe(exc)}")
        return
    attempts.recognised = True
    if probe is not None:  # the RAW's own metadata, before any preview's
        probe.exiv2(opened.image.exifData())
        probe.metadata(width=opened.image.pixelWidth() or None, height=opened.image.pixelHeight() or None)
    # A preview rarely carries its own orientation tag; it is then the RAW's.
    orientation = _exiv2_orientation(opened.image) or _libraw_orientation(path)
    for props in opened.previews_largest_first:
        label = f"preview {props.width_}x{props.height_}"

        def load_preview(props=props, label=label) -> Image.Image | None:
            preview = opened.manager.getPreviewImage(props)
            data = bytes(preview.data())
            return _decode_bytes(data, label, sizing, max_pixels, orientation, probe)

        yield label, "raw-preview", load_preview


def _libraw_images(
    path: str, sizing: _Sizing, max_pixels: int, attempts: _RawAttempts, probe: FactsProbe | None = None
) -> Iterator[_RawSource]:
    try:
        raw = _open_with_libraw(path)
    except Exception as exc:
        attempts.problems.append(f"libraw: {_describe(exc)}")
        return
    attempts.recognised = True
    with raw:
        orientation = _LIBRAW_FLIP_TO_ORIENTATION.get(raw.sizes.flip)
        yield "libraw thumbnail", "raw-thumbnail", lambda: _libraw_thumbnail(raw, sizing, max_pixels, orientation, probe)
        yield "libraw demosaic", "raw-demosaic", lambda: _libraw_demosaic(raw, os.path.getsize(path), sizing, max_pixels, probe)


class _Exiv2File(NamedTuple):
    """A RAW file opened by Exiv2; the previews' data is read through `image` and `manager`,
    so all of this must stay alive while previews are fetched."""

    image: Any  # exiv2.Image
    manager: Any  # exiv2.PreviewManager
    previews_largest_first: list  # of exiv2.PreviewProperties
    buffer: bytes | None  # the file's bytes when Exiv2 reads from memory, not the path


def _open_with_exiv2(path: str) -> _Exiv2File:
    import exiv2

    # Exiv2 takes a str path (passed on as UTF-8, so "é" works; bytes would be taken for
    # image data). A name that is no valid UTF-8 (held by Python with surrogate escapes)
    # can't be passed at all, so Exiv2 then reads the file from memory; it does not copy
    # that buffer, hence `buffer` in the result.
    buffer = None if _utf8_encodable(path) else _read_all(path)
    image = exiv2.ImageFactory.open(path if buffer is None else buffer)
    image.readMetadata()
    manager = exiv2.PreviewManager(image)
    previews = list(reversed(manager.getPreviewProperties()))  # Exiv2 sorts smallest first
    return _Exiv2File(image, manager, previews, buffer)


def _exiv2_orientation(exiv2_image) -> int | None:
    import exiv2

    exif = exiv2_image.exifData()
    # findKey, not `in` or []: a lookup of a key Exiv2 doesn't know throws a C++ exception
    # there that aborts the whole process, and [] would add the tag.
    try:
        datum = exif.findKey(exiv2.ExifKey("Exif.Image.Orientation"))
        orientation = None if datum == exif.end() else datum.toInt64()
    except Exception:  # a damaged tag costs only the rotation, as in _embedded_orientation
        return None
    return orientation if orientation in range(1, 9) else None


def _open_with_libraw(path: str):
    import rawpy

    # rawpy needs a str path it can encode as UTF-8, or else a file object it reads whole.
    if _utf8_encodable(path):
        return rawpy.imread(path)
    return rawpy.imread(io.BytesIO(_read_all(path)))


def _libraw_orientation(path: str) -> int | None:
    """The RAW's orientation as LibRaw reads it; None when LibRaw can't open the file."""
    try:
        with _open_with_libraw(path) as raw:
            return _LIBRAW_FLIP_TO_ORIENTATION.get(raw.sizes.flip)
    except Exception:  # only a fallback for a missing Exiv2 tag: upright is the safe default
        return None


def _libraw_thumbnail(raw, sizing: _Sizing, max_pixels: int, orientation: int | None, probe: FactsProbe | None = None):
    import rawpy

    thumb = raw.extract_thumb()
    if thumb.format == rawpy.ThumbFormat.JPEG:
        return _decode_bytes(thumb.data, "libraw thumbnail", sizing, max_pixels, orientation, probe)
    height, width = thumb.data.shape[:2]  # an RGB bitmap, already in memory: still, the
    _refuse_bomb("libraw thumbnail", (width, height), max_pixels)  # limit holds for every route
    return sizing.finish(Image.fromarray(thumb.data), orientation, probe)


# A RAW file with less than this many bytes per sensor pixel was stripped of its sensor
# data (as sample files often are): LibRaw would "demosaic" uninitialised memory, another
# picture at every decode. Real files hold far more, lossy-compressed ones included
# (0.2-1 byte per pixel); a stripped one holds a few kilobytes for millions of pixels.
MIN_RAW_BYTES_PER_PIXEL = 1 / 16


def _libraw_demosaic(raw, file_size: int, sizing: _Sizing, max_pixels: int, probe: FactsProbe | None = None) -> Image.Image | None:
    _refuse_bomb("libraw demosaic", (raw.sizes.width, raw.sizes.height), max_pixels)
    if file_size < MIN_RAW_BYTES_PER_PIXEL * raw.sizes.raw_width * raw.sizes.raw_height:
        raise NoPreview(_line("libraw demosaic", "the file holds no sensor data (a stripped RAW file)"))
    rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
    return sizing.finish(Image.fromarray(rgb), None, probe)  # LibRaw already applied the flip


def _decode_bytes(
    data: bytes, label: str, sizing: _Sizing, max_pixels: int, orientation: int | None, probe: FactsProbe | None = None
) -> Image.Image | None:
    return _decode_with_pillow(
        io.BytesIO(data), label, data[:_SNIFF_BYTES], sizing, max_pixels, orientation, probe
    )


def _raw_failure(name: str, attempts: _RawAttempts) -> DecodeError:
    reasons = "; ".join(attempts.problems)
    if not attempts.recognised:
        return UnsupportedFormat(
            _line(name, f"not a RAW file Exiv2 or LibRaw can read ({reasons})")
        )
    return NoPreview(_line(name, f"RAW file has no usable embedded preview ({reasons})"))


def _utf8_encodable(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_all(path: str) -> bytes:
    with open(path, "rb") as stream:
        return stream.read()


# --- pixels --------------------------------------------------------------------------------


def _finish(image: Image.Image, orientation: int | None, min_side: int, probe: FactsProbe | None = None) -> Image.Image:
    """8-bit RGB, reduced, then upright (so the transpose works on the small image).

    A probe measures sharpness before the reduction (it would average away the detail a
    missed focus loses) and the rest on the final image."""
    rgb = _to_rgb(image)
    if probe is not None:
        probe.detail(rgb)
    final = _upright(_reduce_towards(rgb, min_side), orientation)
    if probe is not None:
        probe.final(final)
    return final


def _to_rgb(image: Image.Image) -> Image.Image:
    """Always a new image (convert() copies even RGB), detached from the file it came from."""
    if image.mode in _HIGH_BIT_MODES:
        image = _high_bit_to_grey(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return _flatten_onto_background(image)
    return image.convert("RGB")


def _high_bit_to_grey(image: Image.Image) -> Image.Image:
    """Rescale a 16-bit, 32-bit integer or float image to 8 bits (Pillow would clip it)."""
    import numpy as np

    values = np.nan_to_num(np.asarray(image, dtype=np.float64))
    if image.mode.startswith("I;16"):
        full_scale = 65535.0
    else:
        full_scale = _full_scale(float(values.max(initial=0.0)))
    grey = np.clip(values * (255.0 / full_scale) + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(grey)


def _full_scale(brightest: float) -> float:
    """Guess the white level of an I or F image: the smallest usual one that holds its
    brightest pixel (1.0 for normalised floats, 255, 65535), else the brightest pixel."""
    for white in (1.0, 255.0, 65535.0):
        if brightest <= white:
            return white
    return brightest


def _flatten_onto_background(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")  # also turns palette or colour-key transparency into alpha
    background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _reduce_towards(image: Image.Image, min_side: int) -> Image.Image:
    """Box-reduce by the largest integer factor that keeps the short side >= min_side."""
    factor = min(image.size) // min_side
    return image.reduce(factor) if factor >= 2 else image


def _upright(image: Image.Image, orientation: int | None) -> Image.Image:
    transpose = _UPRIGHTING_TRANSPOSE.get(orientation)
    return image.transpose(transpose) if transpose is not None else image


def _area(image: Image.Image) -> int:
    return image.size[0] * image.size[1]


# --- messages ------------------------------------------------------------------------------


def _as_decode_error(exc: BaseException, name: str) -> DecodeError:
    """Map a library or OS exception to the DecodeError the index records."""
    if isinstance(exc, DecodeError):
        return exc
    if isinstance(exc, Image.DecompressionBombError):
        return DecompressionBomb(_line(name, f"refused as a possible decompression bomb ({exc})"))
    if isinstance(exc, FileNotFoundError):
        return Unreadable(_line(name, "file not found"))
    if isinstance(exc, IsADirectoryError):
        return Unreadable(_line(name, "is a directory, not a file"))
    if isinstance(exc, PermissionError):
        return Unreadable(_line(name, "permission denied"))
    if isinstance(exc, OSError) and exc.errno is not None:  # Pillow's decode errors have none
        return Unreadable(_line(name, f"cannot read the file ({_describe(exc)})"))
    if isinstance(exc, MemoryError):
        return DecompressionBomb(_line(name, "not enough memory to decode it"))
    return CorruptImage(_line(name, f"image data is damaged or incomplete ({_describe(exc)})"))


def _describe(exc: BaseException) -> str:
    """The human part of a library exception: OSError's strerror, Exiv2Error's message,
    rawpy's bytes, or else the exception's type."""
    for arg in reversed(exc.args):
        if isinstance(arg, bytes):
            arg = arg.decode("utf-8", "replace")
        if isinstance(arg, str) and arg.strip():
            return arg
    return type(exc).__name__


def _line(name: str, what: str) -> str:
    """'<name>: <what>' on one line, cut to a length a log or a report column can hold."""
    text = " ".join(f"{name}: {what}".split())
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return text


def _printable(name: str) -> str:
    """A file name as it can be shown on one line: newlines, other control characters and
    undecodable bytes (surrogate escapes) become backslash escapes."""
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape", "backslashreplace").decode()
        for char in name
    )
