"""Tests for aes_index.index.decode: every image is generated here, except the fixtures in tests/fixtures."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from aes_index.index import decode
from aes_index.index.decode import DRAFT_MIN_SIDE, MAX_PIXELS, RAW_EXTENSIONS, SUPPORTED_EXTENSIONS, decode_image
from aes_index.index.facts import ANALYSIS_SIDE
from aes_index.errors import (
    CorruptImage,
    DecodeError,
    DecompressionBomb,
    EmptyFile,
    NoPreview,
    Unreadable,
    UnsupportedFormat,
)

from conftest import METADATA_SAMPLES, PHOTO, REPO_ROOT

KODAK_RAW = METADATA_SAMPLES / "RAW_KODAK_DC50_é.KDC"

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
HANG_LIMIT_S = 60


@pytest.fixture(autouse=True)
def fail_instead_of_hanging():
    """Turn a hang in Python code into a failure (a subprocess guards the fixture files)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"test ran longer than {HANG_LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(HANG_LIMIT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- helpers -------------------------------------------------------------------------------


def save(image: Image.Image, path: Path, **params) -> Path:
    image.save(path, **params)
    return path


def quadrants(size: tuple[int, int]) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    width, height = size
    image = Image.new("RGB", size, WHITE)
    image.paste(RED, (0, 0, width // 2, height // 2))
    image.paste(GREEN, (width // 2, 0, width, height // 2))
    image.paste(BLUE, (0, height // 2, width // 2, height))
    return image


def colour_at(image: Image.Image, fx: float, fy: float) -> tuple[int, int, int]:
    """The pixel at a fraction of the width and height (away from JPEG-blurred edges)."""
    return image.getpixel((int(fx * (image.width - 1)), int(fy * (image.height - 1))))


def close_to(actual, expected, tolerance=40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


def assert_small_rgb(image: Image.Image, min_side: int = 224) -> None:
    assert image.mode == "RGB"
    assert min_side <= min(image.size) < 2 * min_side, image.size


def assert_one_line_naming(error: DecodeError, name: str) -> None:
    message = str(error)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(name + ": "), message


def png_with_claimed_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR then claims width x height (CRC fixed up)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr_start = 8 + 4  # signature, chunk length
    data[ihdr_start + 4 : ihdr_start + 12] = struct.pack(">II", width, height)
    chunk = bytes(data[ihdr_start : ihdr_start + 4 + 13])  # type + IHDR body
    data[ihdr_start + 17 : ihdr_start + 21] = struct.pack(">I", zlib.crc32(chunk))
    return bytes(data)


def jpeg_with_orientation(path: Path, size: tuple[int, int], orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(quadrants(size), path, format="JPEG", quality=95, exif=exif.tobytes())


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory) -> Path:
    return save(quadrants((4000, 3000)), tmp_path_factory.mktemp("big") / "big.jpg", quality=90)


# --- API -----------------------------------------------------------------------------------


def test_extensions_are_lower_case_with_dot_and_include_raw():
    assert RAW_EXTENSIONS <= SUPPORTED_EXTENSIONS
    pillow_formats = {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".bmp"}
    assert pillow_formats <= SUPPORTED_EXTENSIONS
    assert {".heic", ".heif", ".hif"} <= SUPPORTED_EXTENSIONS  # pillow-heif is a dependency
    assert {".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".rw2", ".kdc"} <= RAW_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in SUPPORTED_EXTENSIONS)
    assert MAX_PIXELS >= 100_000_000


def test_importing_decode_pulls_in_no_heavy_or_optional_module():
    heavy = ("torch", "exiv2", "rawpy", "pillow_heif", "numpy")
    code = f"import sys, aes_index.index.decode; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_LIMIT_S
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_rejects_nonsense_arguments(big_jpeg):
    with pytest.raises(ValueError):
        decode_image(big_jpeg, min_side=0)


# --- JPEG: DCT-scaled decoding and orientation --------------------------------------------


def test_jpeg_is_decoded_at_the_smallest_dct_scale_that_keeps_the_analysis_side(big_jpeg, monkeypatch):
    loaded_sizes = []
    real_load = ImageFile.ImageFile.load

    def recording_load(self):
        loaded_sizes.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    image = decode_image(big_jpeg, min_side=224)
    # Never the full 4000x3000: libjpeg's 1/4 scale (1000x750) is the smallest that keeps culling's
    # analysis side (DRAFT_MIN_SIDE, 500); 1/8 (500x375) would not. Then a box reduction by
    # 3 for the model. Decoding at full size and reducing by 13 would give 308x231 instead.
    assert DRAFT_MIN_SIDE == ANALYSIS_SIDE == 500
    assert set(loaded_sizes) == {(1000, 750)}
    assert image.size == (334, 250)
    assert_small_rgb(image)
    assert close_to(colour_at(image, 0.25, 0.25), RED)
    assert close_to(colour_at(image, 0.75, 0.75), WHITE)


def test_jpeg_draft_keeps_a_larger_min_side(big_jpeg):
    image = decode_image(big_jpeg, min_side=700)
    assert image.size == (1000, 750)  # 1/4 scale; 1/8 would be below 700


def test_real_photo_decodes_with_draft_to_between_one_and_two_min_sides():
    image = decode_image(PHOTO, min_side=224)
    # 2560x1600 at 1/2 DCT scale (1/4 would be 400 high, below the analysis side of 500),
    # then box-reduced by 3 for the model
    assert image.size == (427, 267)
    assert_small_rgb(image)


@pytest.mark.parametrize(
    ("orientation", "expected_size", "red_corner"),
    [
        (1, (400, 300), (0.1, 0.1)),  # as stored
        (3, (400, 300), (0.9, 0.9)),  # rotated 180
        (6, (300, 400), (0.9, 0.1)),  # shown rotated 90 clockwise: top-left goes top-right
        (8, (300, 400), (0.1, 0.9)),  # shown rotated 90 counter-clockwise: goes bottom-left
    ],
)
def test_exif_orientation_is_applied(tmp_path, orientation, expected_size, red_corner):
    path = jpeg_with_orientation(tmp_path / "o.jpg", (800, 600), orientation)
    image = decode_image(path, min_side=250)  # 1/2 DCT scale, then turned
    assert image.size == expected_size
    assert close_to(colour_at(image, *red_corner), RED)


def test_orientation_is_applied_after_draft_on_the_stored_size(tmp_path):
    path = jpeg_with_orientation(tmp_path / "portrait.jpg", (4000, 3000), 6)
    image = decode_image(path, min_side=224)
    assert image.size == (250, 334)  # 1000x750 (1/4), reduced by 3, then turned
    assert close_to(colour_at(image, 0.9, 0.1), RED)


# --- other formats through Pillow and pillow-heif -----------------------------------------


@pytest.mark.parametrize(
    ("suffix", "params"),
    [
        (".png", {}),
        (".tif", {}),
        (".tiff", {"compression": "tiff_lzw"}),
        (".webp", {"lossless": True}),
        (".bmp", {}),
        (".gif", {}),
        (".heic", {"quality": 90}),
        (".avif", {"quality": 90}),
    ],
)
def test_formats_decode_reduced_with_aspect_ratio_kept(tmp_path, suffix, params):
    if suffix not in SUPPORTED_EXTENSIONS:
        pytest.skip(f"{suffix} not supported by this Pillow build")
    if suffix == ".heic":
        decode._register_heif_opener()  # lets Image.save write HEIC
    path = save(quadrants((1800, 1200)), tmp_path / f"q{suffix}", **params)
    image = decode_image(path)
    assert_small_rgb(image)
    assert abs(image.width / image.height - 1.5) < 0.02
    assert close_to(colour_at(image, 0.25, 0.25), RED)
    assert close_to(colour_at(image, 0.75, 0.25), GREEN)
    assert close_to(colour_at(image, 0.25, 0.75), BLUE)


def test_small_images_are_returned_at_their_own_size(tmp_path):
    image = decode_image(save(quadrants((120, 80)), tmp_path / "small.png"))
    assert image.size == (120, 80) and image.mode == "RGB"


def test_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (300, 300), colour) for colour in (RED, BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    assert close_to(colour_at(decode_image(path), 0.5, 0.5), RED, tolerance=5)


# --- pixel modes ----------------------------------------------------------------------------

GRADIENT_16 = (np.arange(256, dtype=np.uint32) * 257).astype(np.uint16)[None, :].repeat(8, axis=0)


def assert_full_grey_gradient(image: Image.Image) -> None:
    assert image.mode == "RGB"
    row = np.asarray(image)[0, :, 0].astype(int)
    assert row[0] <= 1 and row[-1] >= 254  # full range: scaled, not clipped at 255
    assert np.all(np.diff(row) >= 0)
    assert len(set(row.tolist())) >= 200  # still a gradient, not a step


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [("I;16", ".png"), ("I;16", ".tif"), ("I;16B", ".tif"), ("I", ".tif")],
)
def test_high_bit_integer_images_are_scaled_to_8_bit(tmp_path, mode, suffix):
    image = Image.frombytes(mode, (256, 8), _gradient_bytes(mode))
    path = save(image, tmp_path / f"g{suffix}")
    assert Image.open(path).mode == mode  # the file really holds that mode
    assert_full_grey_gradient(decode_image(path))


def _gradient_bytes(mode: str) -> bytes:
    dtype = {"I;16": "<u2", "I;16B": ">u2", "I": "<i4"}[mode]
    return GRADIENT_16.astype(dtype).tobytes()


@pytest.mark.parametrize("white", [1.0, 65535.0])
def test_float_images_are_scaled_to_8_bit(tmp_path, white):
    values = GRADIENT_16.astype(np.float32) / 65535.0 * white
    path = save(Image.fromarray(values, mode="F"), tmp_path / "f.tif")
    assert_full_grey_gradient(decode_image(path))


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_becomes_rgb(tmp_path, suffix):
    # Pillow writes CMYK JPEGs Adobe-style (inverted, APP14 marker), so the JPEG case also
    # checks that the inversion is undone on reading.
    cyan = Image.new("CMYK", (300, 300), (255, 0, 0, 0))
    image = decode_image(save(cyan, tmp_path / f"cmyk{suffix}"))
    assert image.mode == "RGB"
    assert close_to(colour_at(image, 0.5, 0.5), (0, 255, 255), tolerance=10)


def test_rgba_is_composited_onto_white(tmp_path):
    rgba = Image.new("RGBA", (300, 300), (255, 0, 0, 0))  # fully transparent red
    rgba.paste((0, 0, 255, 255), (0, 0, 150, 300))  # opaque blue left half
    image = decode_image(save(rgba, tmp_path / "rgba.png"))
    assert close_to(colour_at(image, 0.25, 0.5), BLUE, tolerance=2)
    assert close_to(colour_at(image, 0.75, 0.5), WHITE, tolerance=2)


def test_half_transparent_pixels_blend_with_white(tmp_path):
    image = decode_image(save(Image.new("RGBA", (10, 10), (0, 0, 0, 128)), tmp_path / "h.png"))
    assert close_to(image.getpixel((5, 5)), (127, 127, 127), tolerance=2)


def test_la_is_composited_onto_white(tmp_path):
    la = Image.new("LA", (300, 300), (0, 0))
    la.paste((0, 255), (0, 0, 150, 300))  # opaque black left half
    image = decode_image(save(la, tmp_path / "la.png"))
    assert close_to(colour_at(image, 0.25, 0.5), (0, 0, 0), tolerance=2)
    assert close_to(colour_at(image, 0.75, 0.5), WHITE, tolerance=2)


def test_palette_transparency_is_composited_onto_white(tmp_path):
    palette_image = Image.new("P", (300, 300), 1)
    palette_image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # 0 black, 1 red
    palette_image.paste(0, (0, 0, 150, 300))
    path = save(palette_image, tmp_path / "p.png", transparency=0)
    image = decode_image(path)
    assert close_to(colour_at(image, 0.25, 0.5), WHITE, tolerance=2)
    assert close_to(colour_at(image, 0.75, 0.5), RED, tolerance=2)


@pytest.mark.parametrize(("mode", "value", "expected"), [("1", 1, WHITE), ("L", 77, (77, 77, 77))])
def test_one_bit_and_grey_become_rgb(tmp_path, mode, value, expected):
    image = decode_image(save(Image.new(mode, (300, 300), value), tmp_path / "m.png"))
    assert image.mode == "RGB" and image.getpixel((10, 10)) == expected


def test_grey_jpeg_becomes_rgb(tmp_path):
    image = decode_image(save(Image.new("L", (1000, 800), 90), tmp_path / "grey.jpg"))
    assert_small_rgb(image)
    assert close_to(image.getpixel((10, 10)), (90, 90, 90), tolerance=3)


# --- decompression bombs --------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (20_000, 20_000)])
def test_bomb_is_refused_from_the_header(tmp_path, width, height):
    # 10 gigapixels trips Pillow's raised guard, 400 MP only its warning zone; both must end
    # in our typed error, and no warning may escape.
    path = tmp_path / "bomb.png"
    path.write_bytes(png_with_claimed_size(width, height))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DecompressionBomb) as caught:
            decode_image(path)
    assert_one_line_naming(caught.value, "bomb.png")
    assert caught.value.code == "too_large"


def test_max_pixels_argument_is_the_limit(tmp_path):
    path = save(quadrants((100, 100)), tmp_path / "hundred.png")
    with pytest.raises(DecompressionBomb, match="hundred.png: 100x100"):
        decode_image(path, max_pixels=9_999)
    assert decode_image(path, max_pixels=10_000).size == (100, 100)


def test_pillows_own_lower_limit_never_fires_first(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = save(quadrants((40, 40)), tmp_path / "sixteen-hundred.png")  # > 2 x Pillow's limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_image(path).size == (40, 40)


# --- bad input ------------------------------------------------------------------------------


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(EmptyFile) as caught:
        decode_image(path)
    assert_one_line_naming(caught.value, "empty.jpg")


def test_truncated_jpeg_is_corrupt_not_silently_grey(tmp_path, big_jpeg):
    data = big_jpeg.read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptImage) as caught:
        decode_image(path)
    assert_one_line_naming(caught.value, "half.jpg")
    assert isinstance(caught.value.__cause__, Exception)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_random_bytes_named_jpg(tmp_path):
    path = tmp_path / "noise.jpg"
    path.write_bytes(random.Random(7).randbytes(5000))
    with pytest.raises((CorruptImage, UnsupportedFormat)) as caught:
        decode_image(path)
    assert_one_line_naming(caught.value, "noise.jpg")


def test_jpeg_signature_with_a_damaged_header_is_corrupt(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff" + random.Random(3).randbytes(500))
    with pytest.raises(CorruptImage) as caught:
        decode_image(path)
    assert_one_line_naming(caught.value, "broken.jpg")


def test_content_decides_not_the_extension(tmp_path):
    path = save(quadrants((300, 200)), tmp_path / "really-a-png.jpg", format="PNG")
    assert decode_image(path).size == (300, 200)


def test_jpeg_named_like_a_raw_file_decodes(tmp_path):
    path = save(quadrants((300, 200)), tmp_path / "renamed.cr2", format="JPEG")
    assert decode_image(path).size == (300, 200)


def test_text_named_like_a_raw_file(tmp_path):
    path = tmp_path / "notes.cr2"
    path.write_text("shopping list: film, batteries\n")
    with pytest.raises(UnsupportedFormat) as caught:
        decode_image(path)
    assert_one_line_naming(caught.value, "notes.cr2")


def test_text_named_like_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not a png\n")
    with pytest.raises(UnsupportedFormat, match=r"^notes\.png: "):
        decode_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(Unreadable, match=r"^gone\.jpg: file not found$"):
        decode_image(tmp_path / "gone.jpg")


def test_directory(tmp_path):
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(Unreadable) as caught:
        decode_image(tmp_path / "folder.jpg")
    assert_one_line_naming(caught.value, "folder.jpg")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
        (OSError(errno.EIO, "Input/output error"), "Input/output error"),
    ],
)
def test_os_errors_are_unreadable(tmp_path, monkeypatch, error, expected):
    # Tests run as root, where chmod 000 doesn't stop reading: make open() fail instead.
    path = save(quadrants((300, 200)), tmp_path / "locked.jpg")
    real_open = builtins.open

    def failing_open(file, *args, **kwargs):
        if os.fspath(file) == str(path):
            raise error
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", failing_open)
    with pytest.raises(Unreadable, match=expected) as caught:
        decode_image(path)
    assert_one_line_naming(caught.value, "locked.jpg")
    assert caught.value.__cause__ is error


def test_permission_denied_for_real(tmp_path):
    """chmod 000 for real. Root reads anything, so as root (CI) the decode runs in a child
    without the capabilities that bypass file permissions (util-linux's setpriv)."""
    path = save(quadrants((300, 200)), tmp_path / "locked.jpg")
    path.chmod(0)
    code = (
        "import sys\n"
        "from aes_index.index.decode import decode_image\n"
        "from aes_index.errors import Unreadable\n"
        "try:\n    decode_image(sys.argv[1])\nexcept Unreadable as exc:\n    print(exc)\n"
    )
    command = [sys.executable, "-c", code, str(path)]
    if os.geteuid() == 0:
        drop = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert "locked.jpg" in done.stdout and "permission denied" in done.stdout.lower(), done.stderr


def test_unexpected_library_exception_is_wrapped(tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("decoder\nfell over")

    monkeypatch.setattr(decode, "_finish", explode)
    with pytest.raises(CorruptImage) as caught:
        decode_image(save(quadrants((300, 200)), tmp_path / "x.png"))
    assert_one_line_naming(caught.value, "x.png")
    assert "decoder fell over" in str(caught.value)
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_file_name_with_a_newline_stays_one_line(tmp_path):
    path = tmp_path / "two\nlines.jpg"
    path.write_bytes(b"")
    with pytest.raises(EmptyFile) as caught:
        decode_image(path)
    assert_one_line_naming(caught.value, "two\\nlines.jpg")


def test_accepts_str_and_bytes_paths(tmp_path):
    path = save(quadrants((300, 200)), tmp_path / "plain.png")
    assert decode_image(str(path)).size == decode_image(os.fsencode(path)).size == (300, 200)


# --- RAW ------------------------------------------------------------------------------------


def test_raw_without_a_big_enough_preview_falls_back_to_libraw_demosaic():
    image = decode_image(KODAK_RAW)  # preview and thumbnail are 96x64; sensor 768x512
    assert image.mode == "RGB" and image.size == (384, 256)


def test_raw_preview_is_used_when_it_is_big_enough():
    image = decode_image(KODAK_RAW, min_side=50)
    assert image.size == (96, 64)  # exiv2's embedded preview, no demosaic


@pytest.fixture
def rotated_raw(tmp_path) -> Path:
    """The Kodak RAW with Exif.Image.Orientation set to 6, as a camera held upright does."""
    import exiv2

    path = tmp_path / "upright.kdc"
    shutil.copyfile(KODAK_RAW, path)
    image = exiv2.ImageFactory.open(str(path))
    image.readMetadata()
    image.exifData()["Exif.Image.Orientation"] = 6
    image.writeMetadata()
    return path


@pytest.mark.parametrize(("min_side", "expected"), [(50, (64, 96)), (224, (256, 384))])
def test_raw_orientation_applies_to_preview_and_demosaic(rotated_raw, min_side, expected):
    # min_side 50: the preview (no orientation tag of its own) gets the RAW's orientation;
    # 224: LibRaw's half-size demosaic, which turns the image itself.
    assert decode_image(rotated_raw, min_side=min_side).size == expected


def test_non_utf8_file_names_still_reach_exiv2_and_libraw(tmp_path):
    name = os.fsdecode(b"raw_\xff.KDC")  # no valid UTF-8: Python holds it surrogate-escaped
    path = tmp_path / name
    try:
        shutil.copyfile(KODAK_RAW, path)
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    assert decode_image(path, min_side=50).size == (96, 64)
    assert decode_image(path).size == (384, 256)


def test_raw_with_only_a_broken_preview_names_each_failure():
    sample = METADATA_SAMPLES / "CanonRaw.cr2"  # stripped: its preview's data is cut off
    with pytest.raises(NoPreview) as caught:
        decode_image(sample)
    message = str(caught.value)
    assert_one_line_naming(caught.value, "CanonRaw.cr2")
    assert "RAW file has no usable embedded preview" in message
    assert "preview 384x256" in message and "libraw" in message


def test_a_raw_stripped_of_its_sensor_data_is_not_demosaiced_into_noise():
    """DNG.dng (13 KB) describes a 3516x2328 sensor whose data is gone: LibRaw's demosaic
    is uninitialised memory, another picture at every decode. It is refused, and the
    file's own (tiny) preview is used, the same in every process."""
    import rawpy

    from aes_index.index.decode import _libraw_demosaic

    sample = METADATA_SAMPLES / "DNG.dng"
    with rawpy.imread(str(sample)) as raw, pytest.raises(NoPreview, match="holds no sensor data"):
        _libraw_demosaic(raw, sample.stat().st_size, 224, 10**8)
    code = "import hashlib, numpy, sys; from aes_index.index.decode import decode_image; " \
           "print(hashlib.sha256(numpy.asarray(decode_image(sys.argv[1])).tobytes()).hexdigest())"
    digests = {subprocess.run([sys.executable, "-c", code, str(sample)], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO_ROOT / "plugin"))).stdout for _ in range(3)}
    assert len(digests) == 1 and len(digests.pop().strip()) == 64


def test_raw_too_large_for_demosaic_is_not_demosaiced():
    with pytest.raises(NoPreview, match="megapixel limit"):
        decode_image(KODAK_RAW, max_pixels=1000)  # preview 96x64 = 6144 px: also refused


# --- every fixture, each in a subprocess so that a hang or a crash fails the test ----

_DECODE_ONE = """
import json, sys
from aes_index.index.decode import decode_image
from aes_index.errors import DecodeError
try:
    image = decode_image(sys.argv[1])
except DecodeError as exc:
    print(json.dumps({"error": type(exc).__name__, "code": exc.code, "message": str(exc)}))
else:
    print(json.dumps({"mode": image.mode, "size": image.size}))
"""


def _fixture_files() -> list[Path]:
    files = sorted(path for path in METADATA_SAMPLES.iterdir() if path.is_file())
    return files + [PHOTO]


@pytest.mark.parametrize("path", _fixture_files(), ids=lambda path: path.name)
def test_every_fixture_decodes_or_fails_cleanly(path):
    result = subprocess.run(
        [sys.executable, "-c", _DECODE_ONE, str(path)],
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT_S,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    if "error" in outcome:
        assert outcome["message"].startswith(path.name + ": ")
        assert "\n" not in outcome["message"]
    else:
        assert outcome["mode"] == "RGB" and min(outcome["size"]) >= 1
