"""The review's images (features/review/images.py): a photo at screen size and in 100 % tiles,
cached outside the library. Real photographs only: the repository's fixture photo, the mate
photographs (conftest.mate_photos), ExifTool's RAW samples, and DNGs that culling_camera
writes from a real photo with its embedded preview. Each is re-encoded or marked up in a
temporary folder; none is copied into the repository.

References are computed here with Pillow, pillow-heif and Exiv2 directly, not through
aes-index's decode.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from aes_index.config import user_cache_dir
from aes_index.errors import CorruptImage, DecodeError, Unreadable, UnsupportedFormat
from aes_index.features.review import images
from aes_index.features.review.images import Renderer, default_cache_dir, level_size, media_type
from aes_index.index.decode import decode_for_display, display_header

import culling_camera as camera
from conftest import METADATA_SAMPLES, PHOTO

TILE = 512
MIN_PSNR_DB = 45.0  # a JPEG tile at TILE_QUALITY measures 48-56 dB here; a half-size decode upscaled, about 30
# A fit and Pillow's own Lanczos resize of the whole decode are one picture resampled two ways
# (a DCT-scaled draft then bicubic): 34-40 dB here; the same photo turned, or another, under 20.
SAME_PICTURE_DB = 30.0


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def renderer(tmp_path) -> Renderer:
    return Renderer(tmp_path / "cache", max_cache_bytes=1 << 30)


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def crop(reference: np.ndarray, col: int, row: int, shape: tuple) -> np.ndarray:
    """Tile (col, row)'s place in a whole level, as big as the tile it is compared with."""
    top, left = row * TILE, col * TILE
    return reference[top : top + shape[0], left : left + shape[1]]


def photo_with_orientation(folder: Path, orientation: int) -> Path:
    """The fixture photo with Exif.Image.Orientation set, as a camera held upright writes it."""
    import exiv2

    path = folder / f"oriented-{orientation}.jpg"
    shutil.copyfile(PHOTO, path)
    image = exiv2.ImageFactory.open(str(path))
    image.readMetadata()
    image.exifData()["Exif.Image.Orientation"] = orientation
    image.writeMetadata()
    return path


def upright_reference(path: Path) -> np.ndarray:
    """The whole file decoded by Pillow and turned by ImageOps.exif_transpose."""
    with Image.open(path) as image:
        return pixels(ImageOps.exif_transpose(image))


def largest_preview(path: Path) -> Image.Image:
    """The RAW's largest embedded preview, as Exiv2 hands it over."""
    import exiv2

    image = exiv2.ImageFactory.open(str(path))
    image.readMetadata()
    manager = exiv2.PreviewManager(image)
    props = max(manager.getPreviewProperties(), key=lambda p: p.width_ * p.height_)
    return opened(bytes(manager.getPreviewImage(props).data()))


@pytest.fixture(scope="module")
def dng(tmp_path_factory) -> Path:
    """A DNG as culling_camera writes a camera's: the fixture photo's 3:2 frame as its Bayer
    mosaic, a 1620x1080 uncompressed RGB preview in IFD0."""
    path = tmp_path_factory.mktemp("raw") / "frame.dng"
    frame = camera.scene_of(Image.open(PHOTO).convert("RGB")).resize((2400, 1600), Image.Resampling.LANCZOS)
    camera.write_dng(path, frame, camera.Camera("NIKON CORPORATION", "NIKON Z 6_2", "3012345"),
                     datetime(2024, 5, 1, 12, 0, 0))
    return path


# --- screen size -------------------------------------------------------------------------------


def test_fit_is_the_photo_fitted_inside_the_box(renderer):
    data = renderer.fit(PHOTO, 1920, 1080)
    fitted = opened(data)
    assert media_type(data) == "image/jpeg" and fitted.format == "JPEG"
    assert fitted.size == (1728, 1080)  # 2560x1600 by 0.675: the height fills the box
    with Image.open(PHOTO) as original:
        reference = pixels(original.convert("RGB").resize(fitted.size, Image.Resampling.LANCZOS))
    assert psnr(pixels(fitted), reference) > 35  # the same picture, resampled two ways


def test_fit_never_upscales(renderer):
    assert opened(renderer.fit(PHOTO, 4000, 4000)).size == (2560, 1600)
    assert opened(renderer.fit(PHOTO, 2560, 1600)).size == (2560, 1600)


def test_fit_and_info_follow_the_exif_orientation(renderer, tmp_path):
    path = photo_with_orientation(tmp_path, 6)  # stored 2560x1600, shown 1600x2560
    assert renderer.info(path) == {"width": 1600, "height": 2560, "source": "jpeg", "max_level": 12}
    fitted = opened(renderer.fit(path, 1000, 1000))
    assert fitted.size == (625, 1000)
    reference = Image.fromarray(upright_reference(path).astype(np.uint8)).resize(fitted.size, Image.Resampling.LANCZOS)
    assert psnr(pixels(fitted), pixels(reference)) > SAME_PICTURE_DB
    # not merely the right size: the stored (unturned) picture squeezed into it is far off
    with Image.open(path) as stored:
        squeezed = stored.convert("RGB").resize(fitted.size, Image.Resampling.LANCZOS)
    assert psnr(pixels(fitted), pixels(squeezed)) < 20  # the test can tell


def test_fit_of_a_heic(renderer, tmp_path):
    import pillow_heif

    path = tmp_path / "photo.heic"
    with Image.open(PHOTO) as original:
        pillow_heif.from_pillow(original.convert("RGB")).save(path, quality=90)
    assert renderer.info(path) == {"width": 2560, "height": 1600, "source": "heif", "max_level": 12}
    fitted = opened(renderer.fit(path, 1280, 1280))
    assert fitted.size == (1280, 800)
    reference = pillow_heif.open_heif(path).to_pillow().convert("RGB").resize(fitted.size, Image.Resampling.LANCZOS)
    assert psnr(pixels(fitted), pixels(reference)) > SAME_PICTURE_DB


@pytest.mark.parametrize(("suffix", "source"), [(".png", "png"), (".tif", "tiff")])
def test_fit_of_png_and_tiff(renderer, tmp_path, suffix, source):
    path = tmp_path / f"photo{suffix}"
    Image.open(PHOTO).convert("RGB").save(path)
    assert renderer.info(path)["source"] == source
    assert opened(renderer.fit(path, 640, 640)).size == (640, 400)


# --- 100 % tiles -------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "params"), [(".png", {}), (".tif", {"compression": "tiff_lzw"})])
def test_tiles_of_a_lossless_source_are_its_exact_pixels(renderer, tmp_path, suffix, params):
    path = tmp_path / f"photo{suffix}"
    Image.open(PHOTO).convert("RGB").save(path, **params)
    original = pixels(Image.open(path))
    # a middle tile, the last column (2560 = 5 x 512: whole), the last row (1600: 64 px high)
    for col, row in [(2, 1), (4, 0), (3, 3)]:
        data = renderer.tile(path, 0, col, row)
        tile = pixels(opened(data))
        assert media_type(data) == "image/png"
        assert tile.shape[:2] == (min(TILE, 1600 - row * TILE), min(TILE, 2560 - col * TILE))
        assert np.array_equal(tile, crop(original, col, row, tile.shape))
    # level 1: the whole photo box-reduced by 2, exactly
    half = pixels(Image.open(path).convert("RGB").reduce(2))
    tile = pixels(opened(renderer.tile(path, 1, 2, 1)))
    assert tile.shape[:2] == (288, 256)  # level 1 is 1280x800
    assert np.array_equal(tile, crop(half, 2, 1, tile.shape))


def test_a_jpeg_tile_is_the_full_decode_within_reencoding_error(renderer):
    full = pixels(Image.open(PHOTO))
    tile = pixels(opened(renderer.tile(PHOTO, 0, 2, 1)))
    expected = crop(full, 2, 1, tile.shape)
    assert tile.shape[:2] == (TILE, TILE)
    assert psnr(tile, expected) >= MIN_PSNR_DB
    assert np.abs(tile - expected).mean() <= 1.0
    # the tolerance tells 100 % from less: a half-size decode upscaled fails it
    with Image.open(PHOTO) as draft:
        draft.draft("RGB", (1280, 800))
        upscaled = pixels(draft.convert("RGB").resize((2560, 1600), Image.Resampling.BICUBIC))
    assert psnr(crop(upscaled, 2, 1, tile.shape), expected) < MIN_PSNR_DB


def test_tiles_follow_the_exif_orientation(renderer, tmp_path):
    path = photo_with_orientation(tmp_path, 8)
    upright = upright_reference(path)  # 1600x2560
    tile = pixels(opened(renderer.tile(path, 0, 1, 4)))
    assert tile.shape[:2] == (TILE, TILE)
    assert psnr(tile, crop(upright, 1, 4, tile.shape)) >= MIN_PSNR_DB


def test_the_levels_cover_the_photo(renderer):
    info = renderer.info(PHOTO)
    assert level_size(info["width"], info["height"], 3) == (320, 200)
    assert opened(renderer.tile(PHOTO, 3, 0, 0)).size == (320, 200)
    top = opened(renderer.tile(PHOTO, info["max_level"], 0, 0))
    assert top.size == (1, 1)
    with pytest.raises(ValueError):
        renderer.tile(PHOTO, info["max_level"] + 1, 0, 0)


@pytest.mark.parametrize(("level", "col", "row"), [(0, 5, 0), (0, 0, 4), (-1, 0, 0), (0, -1, 0), (1, 3, 0)])
def test_a_tile_outside_the_photo_is_a_value_error(renderer, level, col, row):
    with pytest.raises(ValueError):
        renderer.tile(PHOTO, level, col, row)


@pytest.mark.parametrize(("width", "height"), [(0, 100), (100, -1), (100, 10**6), (1.5, 100), (True, 100)])
def test_a_nonsense_fit_is_a_value_error(renderer, width, height):
    with pytest.raises(ValueError):
        renderer.fit(PHOTO, width, height)


# --- RAW ---------------------------------------------------------------------------------------


def test_a_raw_shows_its_largest_embedded_preview(renderer, dng):
    preview = largest_preview(dng)  # 1620x1080, uncompressed: the tiles are its exact pixels
    assert preview.size == (1620, 1080)
    assert renderer.info(dng) == {"width": 1620, "height": 1080, "source": "raw-preview", "max_level": 11}
    data = renderer.tile(dng, 0, 3, 2)
    assert media_type(data) == "image/png"
    tile = pixels(opened(data))
    assert tile.shape[:2] == (1080 - 2 * TILE, 1620 - 3 * TILE)
    assert np.array_equal(tile, crop(pixels(preview), 3, 2, tile.shape))
    assert opened(renderer.fit(dng, 810, 810)).size == (810, 540)


def test_a_raw_with_several_previews_shows_the_largest(renderer):
    raf = METADATA_SAMPLES / "FujiFilm.raf"  # two JPEG previews: 8x8 and 160x120
    preview = largest_preview(raf)
    assert preview.size == (160, 120)
    assert renderer.info(raf) == {"width": 160, "height": 120, "source": "raw-preview", "max_level": 8}
    tile = pixels(opened(renderer.tile(raf, 0, 0, 0)))
    assert tile.shape[:2] == (120, 160)
    # a dark, noisy sample: re-encoding costs it more than a photograph (44 dB, 1 level on average)
    assert psnr(tile, pixels(preview)) >= 40 and np.abs(tile - pixels(preview)).mean() <= 1.5


def test_decode_for_display_and_its_header_agree(dng):
    header = display_header(dng)
    shown = decode_for_display(dng)
    assert header.image is None
    assert (header.size, header.source, header.lossless) == (shown.size, shown.source, shown.lossless)
    assert shown.image.size == shown.size == (1620, 1080)
    fitted = decode_for_display(PHOTO, fit=(100, 100))
    assert fitted.size == (2560, 1600) and fitted.image.size == (100, 62) and not fitted.lossless


# --- errors ------------------------------------------------------------------------------------


def assert_one_line_naming(error: Exception, name: str) -> None:
    message = str(error)
    assert "\n" not in message and message.startswith(name + ": "), message


@pytest.mark.parametrize("call", ["info", "fit", "tile"])
def test_a_damaged_file_is_a_typed_error_with_one_line(renderer, tmp_path, call):
    damaged = tmp_path / "cut.jpg"
    damaged.write_bytes(PHOTO.read_bytes()[: PHOTO.stat().st_size // 3])  # a copy that stopped
    header_only = damaged  # its header is whole: info() answers, the pixels do not
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("shopping list\n")
    actions = {"info": lambda p: renderer.info(p), "fit": lambda p: renderer.fit(p, 800, 600),
               "tile": lambda p: renderer.tile(p, 0, 0, 0)}
    with pytest.raises(UnsupportedFormat) as caught:
        actions[call](not_a_photo)
    assert_one_line_naming(caught.value, "notes.jpg")
    with pytest.raises(Unreadable) as caught:
        actions[call](tmp_path / "gone.jpg")
    assert_one_line_naming(caught.value, "gone.jpg")
    if call == "info":
        assert renderer.info(header_only)["width"] == 2560
        return
    with pytest.raises(CorruptImage) as caught:
        actions[call](damaged)
    assert_one_line_naming(caught.value, "cut.jpg")
    assert isinstance(caught.value, DecodeError)


# --- caches ------------------------------------------------------------------------------------


def cache_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_the_cache_is_outside_the_library_under_the_users_cache_dir():
    assert default_cache_dir() == Path(os.environ["AES_INDEX_CACHE_DIR"]) / "review"
    assert user_cache_dir({"XDG_CACHE_HOME": "/var/cache/me"}) == Path("/var/cache/me/aes-index")
    assert user_cache_dir({"XDG_CACHE_HOME": "/x", "AES_INDEX_CACHE_DIR": "/y"}) == Path("/y")
    assert user_cache_dir({}) == Path.home() / ".cache" / "aes-index"


def test_the_disk_cache_stays_within_its_bound_least_recently_used_first(tmp_path, mate_photos):
    folder = tmp_path / "cache"
    photos = mate_photos[:6]
    sizes = {}
    probe = Renderer(tmp_path / "probe", max_cache_bytes=1 << 30)
    for photo in photos:
        sizes[photo] = len(probe.fit(photo, 600, 600)) + len(probe.fit(photo, 300, 300))
    bound = sum(sizes.values()) // 2  # room for about half of them
    renderer = Renderer(folder, max_cache_bytes=bound)
    for photo in photos:
        renderer.fit(photo, 600, 600)
        renderer.fit(photo, 300, 300)
        on_disk = sum(p.stat().st_size for p in cache_files(folder))
        assert on_disk == renderer.cache_bytes() <= bound
    names = " ".join(p.name for p in cache_files(folder))
    assert "fit-600x600" in names and "fit-300x300" in names
    # the last photo is kept whole, the first is gone
    last, first = images._FileKey.of(photos[-1]), images._FileKey.of(photos[0])
    assert f"{last.digest}.{last.stamp}.fit-300x300.jpg" in names
    assert first.digest not in names
    # a smaller bound, at the next start, is kept at once
    Renderer(folder, max_cache_bytes=bound // 3)
    assert sum(p.stat().st_size for p in cache_files(folder)) <= bound // 3


def copies_of(photo: Path, folder: Path, count: int) -> list[Path]:
    """Copies of one photo under other names: entries of one size, each its own."""
    folder.mkdir(exist_ok=True)
    return [Path(shutil.copyfile(photo, folder / f"copy-{n}{photo.suffix}")) for n in range(count)]


def test_a_hit_is_a_recent_use(tmp_path):
    a, b, c = copies_of(PHOTO, tmp_path / "photos", 3)
    size = len(Renderer(tmp_path / "probe", 1 << 30).fit(a, 400, 400))
    renderer = Renderer(tmp_path / "cache", max_cache_bytes=2 * size + size // 2)  # room for two, not three
    renderer.fit(a, 400, 400)
    renderer.fit(b, 400, 400)
    renderer.fit(a, 400, 400)  # a used again: b is now the oldest
    renderer.fit(c, 400, 400)
    fits = [p.name for p in cache_files(tmp_path / "cache") if p.name.endswith(".fit-400x400.jpg")]
    assert sorted(fits) == sorted(images._FileKey.of(p).entry("fit-400x400.jpg") for p in (a, c))


def test_a_changed_file_is_rendered_again_and_its_old_entries_go(renderer, tmp_path, mate_photos):
    path = tmp_path / "photo.jpg"
    shutil.copyfile(PHOTO, path)
    before_fit = opened(renderer.fit(path, 640, 640))
    before_tile = renderer.tile(path, 0, 0, 0)
    old = images._FileKey.of(path)
    shutil.copyfile(mate_photos[0], path)  # another photograph, under the same name
    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, old_mtime_ns(old) + 1_000_000))  # even on a coarse clock
    with Image.open(mate_photos[0]) as replacement:
        expected = ImageOps.exif_transpose(replacement).convert("RGB")
    after_fit = opened(renderer.fit(path, 640, 640))
    scale = min(640 / expected.width, 640 / expected.height, 1.0)
    assert after_fit.size == (round(expected.width * scale), round(expected.height * scale))
    assert psnr(pixels(after_fit), pixels(expected.resize(after_fit.size, Image.Resampling.LANCZOS))) > SAME_PICTURE_DB
    assert before_fit.size == (640, 400)
    after_tile = pixels(opened(renderer.tile(path, 0, 0, 0)))
    assert psnr(after_tile, crop(pixels(expected), 0, 0, after_tile.shape)) >= MIN_PSNR_DB
    assert renderer.tile(path, 0, 0, 0) != before_tile
    assert renderer.info(path)["width"] == expected.width
    assert not any(f"{old.digest}.{old.stamp}." in p.name for p in cache_files(renderer._disk.folder))


def old_mtime_ns(key: images._FileKey) -> int:
    return int(key.stamp.split("-")[1], 16)


def counting_decodes(monkeypatch) -> list:
    """Record each full or fitted decode the renderer makes (the real decode still runs)."""
    calls = []
    real = images.decode_for_display

    def counted(path, fit=None, **kwargs):
        calls.append((Path(path).name, fit))
        return real(path, fit=fit, **kwargs)

    monkeypatch.setattr(images, "decode_for_display", counted)
    return calls


def test_tiles_requested_together_decode_the_photo_once(renderer, monkeypatch, tmp_path):
    path = tmp_path / "photo.png"
    Image.open(PHOTO).convert("RGB").save(path)
    original = pixels(Image.open(path))
    calls = counting_decodes(monkeypatch)
    wanted = [(col, row) for col in range(5) for row in range(4)]
    barrier = threading.Barrier(8)

    def fetch(place):
        if place in wanted[:8]:
            barrier.wait()  # the first eight ask at the same moment
        return place, renderer.tile(path, 0, *place)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(fetch, wanted))
    assert calls == [("photo.png", None)]
    for (col, row), data in results:
        tile = pixels(opened(data))
        assert np.array_equal(tile, crop(original, col, row, tile.shape))


def test_a_second_view_reads_the_levels_from_disk_without_decoding(tmp_path, monkeypatch):
    first = Renderer(tmp_path / "cache", max_cache_bytes=1 << 30)
    expected = first.tile(PHOTO, 0, 1, 1), first.tile(PHOTO, 1, 1, 0), first.fit(PHOTO, 800, 800)
    calls = counting_decodes(monkeypatch)
    second = Renderer(tmp_path / "cache", max_cache_bytes=1 << 30)  # a restart: nothing in memory
    assert (second.tile(PHOTO, 0, 1, 1), second.tile(PHOTO, 1, 1, 0), second.fit(PHOTO, 800, 800)) == expected
    assert calls == []


def test_memory_keeps_the_levels_within_its_pixel_bound(tmp_path, monkeypatch):
    a, b = copies_of(PHOTO, tmp_path / "photos", 2)
    area = 2560 * 1600
    renderer = Renderer(tmp_path / "cache", max_cache_bytes=1 << 30, memory_pixels=area + area // 2,
                        levels_on_disk=False)
    calls = counting_decodes(monkeypatch)
    renderer.tile(a, 0, 0, 0)
    renderer.tile(a, 0, 1, 0)  # from memory
    assert len(calls) == 1
    renderer.tile(b, 0, 0, 0)  # b's level 0 pushes a's out
    renderer.tile(a, 0, 0, 0)
    assert [name for name, _ in calls] == [a.name, b.name, a.name]


def test_a_torn_level_file_is_made_again(tmp_path):
    first = Renderer(tmp_path / "cache", max_cache_bytes=1 << 30)
    expected = first.tile(PHOTO, 0, 2, 2)
    (level,) = [p for p in cache_files(tmp_path / "cache") if p.name.endswith(".level-0.ppm")]
    level.write_bytes(level.read_bytes()[:1000])
    second = Renderer(tmp_path / "cache", max_cache_bytes=1 << 30)
    assert second.tile(PHOTO, 0, 2, 2) == expected
