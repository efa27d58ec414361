"""A photo at screen size and in tiles for a 100 % loupe, cached outside the library.

    renderer = Renderer(default_cache_dir(), DEFAULT_CACHE_BYTES)
    renderer.info(path)                    {"width", "height", "source", "max_level"}
    renderer.fit(path, 1920, 1080)         JPEG bytes, fitted inside, never upscaled
    renderer.tile(path, level, col, row)   JPEG or PNG bytes (media_type tells which)
    renderer.prepare(path)                 the full-resolution decode, ahead of the first tile

The pixels come from index/decode.py (decode_for_display, display_header): the index's own
routes, EXIF orientation, decompression-bomb guard and typed errors (a DecodeError with one
line naming the file). Full resolution is the file's own size; a RAW's is its largest
embedded preview, since that is what the camera rendered and what culling looked at.

Tiles: level 0 is full resolution, level k is level k-1 box-reduced by 2 (its size is
ceil(size / 2**k)); tile (col, row) covers [col*size, (col+1)*size) x [row*size, (row+1)*size)
of its level, the last ones smaller. A lossless source (PNG, TIFF, BMP, GIF, a RAW's bitmap
preview) gives PNG tiles with exactly its pixels; a lossy one (JPEG, HEIC, WebP, a RAW's JPEG
preview) JPEG tiles at quality 95 with no chroma subsampling, which differ from the decoded
source by about one level in 255 (tests/test_review_images.py measures it), well under the
source's own compression error.

Caches:
* On disk, under cache_dir (the user's cache folder, never the library): screen-size JPEGs,
  each level's pixels uncompressed (a binary PPM) (so that a level evicted from memory, or a
  photo seen again after a restart, gives its tiles by memory-mapping instead of decoding:
  README "Review", bench_review_images.py) and each photo's info. An entry is named by a
  digest of the photo's path and by its size and mtime_ns: a changed file gets new names, so
  its old pixels are never served, and its old entries are deleted when new ones are written.
  The folder is bounded by max_cache_bytes: the least recently used entries go first (a hit
  touches the file's mtime, so the order survives a restart).
* In memory, the levels decoded last, bounded by pixels (two 24 MP frames by default), so
  that the tiles after the first crop from memory. A compare view of 3-4 frames then reads
  the others' tiles from their levels on disk (5 ms a tile), not from a decode (300 ms).

Thread-safe: the server calls from a thread pool. Two requests that need the same decode
(the first tiles of a photo arrive together) wait for one decode, not one each.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from aes_index.config import user_cache_dir
from aes_index.errors import Unreadable
from aes_index.index.decode import Displayed, decode_for_display, display_header
from aes_index.paths import printable

TILE_SIZE = 512
MAX_TILE_SIZE = 4096
MAX_FIT_SIDE = 16384  # a fit asked bigger than any screen is a bad request, not a big decode
DEFAULT_CACHE_BYTES = 2 * 1024**3  # about 25 full-resolution 24 MP photos, or thousands of screen-size ones
DEFAULT_MEMORY_PIXELS = 50_000_000  # two 24 MP levels: about 200 MB (Pillow keeps RGB in 4 bytes a pixel)
FIT_QUALITY = 90  # a screen-size view, resampled anyway
TILE_QUALITY = 95  # a 100 % view: within about one level of the decoded source
PNG_COMPRESS_LEVEL = 1  # a local page: speed over size
MAX_INFO_ENTRIES = 10_000  # in memory; on disk they are part of the byte bound
STALE_TEMP_SECONDS = 600  # a temporary file older than this was left by a crash

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_T = TypeVar("_T")


def default_cache_dir() -> Path:
    """Where the review keeps its images: the user's aes-index cache folder (config.user_cache_dir,
    $AES_INDEX_CACHE_DIR else $XDG_CACHE_HOME/aes-index), never inside a library."""
    return user_cache_dir() / "review"


def media_type(data: bytes) -> str:
    """The Content-Type of what fit() or tile() returned."""
    return "image/png" if data.startswith(_PNG_SIGNATURE) else "image/jpeg"


def level_size(width: int, height: int, level: int) -> tuple[int, int]:
    """The size of a level of a photo of width x height: ceil(side / 2**level)."""
    scale = 1 << level
    return (-(-width // scale), -(-height // scale))


def max_level(width: int, height: int) -> int:
    """The first level at which the photo is one pixel long: no level beyond it."""
    return max(0, math.ceil(math.log2(max(width, height))))


class Renderer:
    """Screen-size views and 100 % tiles of photos, cached (see the module's docstring)."""

    def __init__(
        self,
        cache_dir: Path,
        max_cache_bytes: int = DEFAULT_CACHE_BYTES,
        memory_pixels: int = DEFAULT_MEMORY_PIXELS,
        levels_on_disk: bool = True,
    ):
        if max_cache_bytes < 0 or memory_pixels < 0:
            raise ValueError(f"cache bounds must be >= 0, not {max_cache_bytes} bytes, {memory_pixels} pixels")
        self._disk = _DiskCache(Path(cache_dir), max_cache_bytes)
        self._levels = _LevelMemory(memory_pixels)
        self._levels_on_disk = levels_on_disk
        self._infos: OrderedDict[tuple[str, str], _Info] = OrderedDict()
        self._lock = threading.Lock()
        self._flights: dict[tuple, Future] = {}

    # --- the interface ---------------------------------------------------------------------

    def info(self, path: str | os.PathLike) -> dict[str, Any]:
        """{"width", "height"}: the full resolution as displayed (upright; a RAW's largest
        preview), "source": what is shown ("jpeg", "png", "tiff", "heif", ..., "raw-preview",
        "raw-thumbnail", "raw-demosaic"), "max_level": the last tile level."""
        info = self._info(_FileKey.of(path))
        return {"width": info.width, "height": info.height, "source": info.source,
                "max_level": max_level(info.width, info.height)}

    def fit(self, path: str | os.PathLike, width: int, height: int) -> bytes:
        """A JPEG of the photo fitted inside width x height, never upscaled, upright."""
        _check_int("width", width, 1, MAX_FIT_SIDE)
        _check_int("height", height, 1, MAX_FIT_SIDE)
        file = _FileKey.of(path)
        name = file.entry(f"fit-{width}x{height}.jpg")
        cached = self._disk.read(name)
        if cached is not None:
            return cached
        return self._once(("fit", name), lambda: self._disk.read(name) or self._render_fit(file, name, (width, height)))

    def tile(self, path: str | os.PathLike, level: int, col: int, row: int, size: int = TILE_SIZE) -> bytes:
        """Tile (col, row) of `level` (0: full resolution, k: 1/2**k), `size` pixels square
        at most. PNG for a lossless source (its exact pixels), else JPEG. A tile outside the
        photo is a ValueError."""
        _check_int("size", size, 1, MAX_TILE_SIZE)
        file = _FileKey.of(path)
        info = self._info(file)
        _check_int("level", level, 0, max_level(info.width, info.height))
        level_width, level_height = level_size(info.width, info.height, level)
        _check_int("col", col, 0, -(-level_width // size) - 1)
        _check_int("row", row, 0, -(-level_height // size) - 1)
        box = (col * size, row * size, min((col + 1) * size, level_width), min((row + 1) * size, level_height))
        pixels = self._level(file, info, level).crop(box)
        return _png(pixels) if info.lossless else _jpeg(pixels, TILE_QUALITY)

    def prepare(self, path: str | os.PathLike) -> None:
        """Decode the full resolution now (e.g. from a background thread while the photo is
        shown at screen size), so that its first tile is a crop."""
        file = _FileKey.of(path)
        self._level(file, self._info(file), 0)

    def cache_bytes(self) -> int:
        """What the disk cache holds now, in bytes."""
        return self._disk.total_bytes()

    # --- info ------------------------------------------------------------------------------

    def _info(self, file: _FileKey) -> _Info:
        key = (file.digest, file.stamp)
        with self._lock:
            if key in self._infos:
                self._infos.move_to_end(key)
                return self._infos[key]
        name = file.entry("info.json")
        info = _Info.from_json(self._disk.read(name))
        if info is None:
            info = self._once(("info", name), lambda: _Info.of(display_header(file.path)))
            self._store(file, name, info.to_json())
        self._remember(file, info)
        return info

    def _remember(self, file: _FileKey, info: _Info) -> None:
        with self._lock:
            self._infos[(file.digest, file.stamp)] = info
            self._infos.move_to_end((file.digest, file.stamp))
            while len(self._infos) > MAX_INFO_ENTRIES:
                self._infos.popitem(last=False)

    def _learn(self, file: _FileKey, shown: Displayed) -> _Info:
        """A decode tells the size and source too: no header read for info() later."""
        info = _Info.of(shown)
        self._remember(file, info)
        name = file.entry("info.json")
        if not self._disk.has(name):
            self._store(file, name, info.to_json())
        return info

    # --- rendering -------------------------------------------------------------------------

    def _render_fit(self, file: _FileKey, name: str, box: tuple[int, int]) -> bytes:
        shown = decode_for_display(file.path, fit=box)
        self._learn(file, shown)
        assert shown.image is not None
        data = _jpeg(shown.image, FIT_QUALITY)
        self._store(file, name, data)
        return data

    def _level(self, file: _FileKey, info: _Info, level: int) -> _Pixels:
        found = self._find_level(file, info, level)
        if found is not None:
            return found
        return self._once(
            ("level", file.digest, file.stamp, level),
            lambda: self._find_level(file, info, level) or self._make_level(file, info, level),
        )

    def _find_level(self, file: _FileKey, info: _Info, level: int) -> _Pixels | None:
        image = self._levels.get(file, level)
        if image is not None:
            return _InMemory(image)
        if not self._levels_on_disk:
            return None
        return _Mapped.open(self._disk.path_of(file.entry(f"level-{level}.ppm")), level_size(info.width, info.height, level))

    def _make_level(self, file: _FileKey, info: _Info, level: int) -> _Pixels:
        if level == 0:
            shown = decode_for_display(file.path)
            assert shown.image is not None
            if shown.size != (info.width, info.height):  # the file changed since its header was read
                raise Unreadable(f"{file.name}: the file changed while it was read; try again")
            self._learn(file, shown)
            image = shown.image
        else:
            image = self._level(file, info, level - 1).whole().reduce(2)
        self._levels.put(file, level, image)
        if self._levels_on_disk:
            self._store(file, file.entry(f"level-{level}.ppm"), lambda stream: image.save(stream, "PPM"),
                        size=_ppm_size(image))
        return _InMemory(image)

    def _store(self, file: _FileKey, name: str, data: bytes | Callable[[io.BufferedWriter], None],
               size: int | None = None) -> None:
        """Write an entry unless the file changed since it was read (its pixels would be filed
        under the old size and mtime), and forget the entries of its earlier versions."""
        if not file.unchanged():
            return
        self._disk.forget_other_versions(file)
        self._levels.forget_other_versions(file)
        self._disk.write(name, data, size)

    def _once(self, key: tuple, make: Callable[[], _T]) -> _T:
        """make(), but one call at a time per key: the others wait for its result."""
        with self._lock:
            flight = self._flights.get(key)
            mine = flight is None
            if mine:
                flight = self._flights[key] = Future()
        if not mine:
            return flight.result()
        try:
            result = make()
        except BaseException as exc:
            flight.set_exception(exc)
            raise
        else:
            flight.set_result(result)
            return result
        finally:
            with self._lock:
                del self._flights[key]


# --- what is known of a photo ---------------------------------------------------------------


@dataclass(frozen=True)
class _FileKey:
    """A photo as the caches know it: its path and the size and mtime that date its pixels."""

    path: str
    digest: str  # of the path: names its entries
    stamp: str  # size and mtime_ns: a change gives new names
    name: str  # printable basename, for messages

    @classmethod
    def of(cls, path: str | os.PathLike) -> _FileKey:
        path = os.path.abspath(os.fsdecode(os.fspath(path)))
        name = printable(os.path.basename(path))
        digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:32]
        return cls(path, digest, _stamp(path, name), name)

    def entry(self, variant: str) -> str:
        return f"{self.digest}.{self.stamp}.{variant}"

    def unchanged(self) -> bool:
        try:
            return _stamp(self.path, self.name) == self.stamp
        except Unreadable:
            return False


def _stamp(path: str, name: str) -> str:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise Unreadable(f"{name}: file not found") from None
    except OSError as exc:
        raise Unreadable(f"{name}: cannot read the file ({exc.strerror or type(exc).__name__})") from exc
    if not stat.S_ISREG(status.st_mode):
        raise Unreadable(f"{name}: not a regular file")
    return f"{status.st_size:x}-{status.st_mtime_ns:x}"


@dataclass(frozen=True)
class _Info:
    width: int
    height: int
    source: str
    lossless: bool

    @classmethod
    def of(cls, shown: Displayed) -> _Info:
        return cls(shown.size[0], shown.size[1], shown.source, shown.lossless)

    def to_json(self) -> bytes:
        return json.dumps({"width": self.width, "height": self.height, "source": self.source,
                           "lossless": self.lossless}).encode()

    @classmethod
    def from_json(cls, data: bytes | None) -> _Info | None:
        """None for no entry, or one that is not what to_json wrote (then it is rebuilt)."""
        if data is None:
            return None
        try:
            value = json.loads(data)
            info = cls(int(value["width"]), int(value["height"]), str(value["source"]), bool(value["lossless"]))
        except (ValueError, TypeError, KeyError):
            return None
        return info if info.width > 0 and info.height > 0 else None


def _check_int(what: str, value: Any, lowest: int, highest: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
        raise ValueError(f"{what} must be a whole number from {lowest} to {highest}, not {value!r}")


# --- pixels of a level ----------------------------------------------------------------------


class _InMemory:
    def __init__(self, image: Image.Image):
        self.image = image

    def crop(self, box: tuple[int, int, int, int]) -> Image.Image:
        return self.image.crop(box)

    def whole(self) -> Image.Image:
        return self.image


class _Mapped:
    """A level on disk, memory-mapped: a tile reads only its own rows.

    The file is a binary PPM: a short header, then the rows of RGB bytes top to bottom, so
    that the pixels map straight into an array. Pillow writes it from an image in a third of
    the time numpy needs to get the pixels out of one and save them (bench_review_images.py);
    Pillow reads its header (PPM only), numpy maps the rest."""

    def __init__(self, array: np.ndarray):
        self.array = array

    @classmethod
    def open(cls, path: Path | None, size: tuple[int, int]) -> _Mapped | None:
        """None when there is no such entry, or it is not the level's pixels (then it goes)."""
        if path is None:
            return None
        try:
            with Image.open(path, formats=["PPM"]) as header:
                ((codec, _, offset, rawmode),) = header.tile  # a tuple before Pillow 11, named since
                if (header.mode, header.size, codec, rawmode) != ("RGB", size, "raw", "RGB"):
                    raise ValueError("not this level's pixels")
            array = np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=(size[1], size[0], 3))
        except FileNotFoundError:  # evicted since it was looked up
            return None
        except (OSError, ValueError, SyntaxError):  # a torn or foreign file: made again
            _remove(path)
            return None
        return cls(array)

    def crop(self, box: tuple[int, int, int, int]) -> Image.Image:
        left, top, right, bottom = box
        return Image.fromarray(np.ascontiguousarray(self.array[top:bottom, left:right]))

    def whole(self) -> Image.Image:
        return Image.fromarray(np.array(self.array))


_Pixels = _InMemory | _Mapped


class _LevelMemory:
    """The levels decoded last, least recently used first out, bounded by pixels. The one just
    put always stays, however big: else every tile of a big photo would decode it again."""

    def __init__(self, max_pixels: int):
        self.max_pixels = max_pixels
        self._images: OrderedDict[tuple[str, str, int], Image.Image] = OrderedDict()
        self._pixels = 0
        self._lock = threading.Lock()

    def get(self, file: _FileKey, level: int) -> Image.Image | None:
        key = (file.digest, file.stamp, level)
        with self._lock:
            image = self._images.get(key)
            if image is not None:
                self._images.move_to_end(key)
            return image

    def put(self, file: _FileKey, level: int, image: Image.Image) -> None:
        key = (file.digest, file.stamp, level)
        with self._lock:
            self._drop(key)
            self._images[key] = image
            self._pixels += image.width * image.height
            while self._pixels > self.max_pixels and len(self._images) > 1:
                self._drop(next(iter(self._images)))

    def forget_other_versions(self, file: _FileKey) -> None:
        with self._lock:
            for key in [k for k in self._images if k[0] == file.digest and k[1] != file.stamp]:
                self._drop(key)

    def _drop(self, key: tuple[str, str, int]) -> None:
        image = self._images.pop(key, None)
        if image is not None:
            self._pixels -= image.width * image.height


# --- the folder on disk ---------------------------------------------------------------------


class _DiskCache:
    """Files in cache_dir/<2 hex>/, least recently used deleted past max_bytes.

    The index of what is there (name -> bytes, oldest use first) is read from the folder at
    start, by mtime. Another process using the same folder may delete a file this one still
    lists: a read then misses and the entry is made again."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder = folder
        self.max_bytes = max_bytes
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._by_photo: dict[str, set[str]] = {}  # path digest -> its entries' names
        self._total = 0
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)  # a person's photos: theirs only
        self._scan()

    def read(self, name: str) -> bytes | None:
        path = self.path_of(name)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except FileNotFoundError:
            self._forget(name)
            return None

    def has(self, name: str) -> bool:
        with self._lock:
            return name in self._sizes

    def path_of(self, name: str) -> Path | None:
        """The entry's file, marked as just used; None when there is none."""
        with self._lock:
            if name not in self._sizes:
                return None
            self._sizes.move_to_end(name)
        path = self._path(name)
        try:
            os.utime(path)  # the use order, kept across restarts
        except FileNotFoundError:
            self._forget(name)
            return None
        except OSError:  # a read-only cache still serves
            pass
        return path

    def write(self, name: str, data: bytes | Callable[[io.BufferedWriter], None], size: int | None = None) -> None:
        """Write atomically (a temporary file renamed), then delete the least recently used
        past the bound. An entry bigger than the whole bound is not written."""
        size = len(data) if isinstance(data, bytes) else size
        if size is None or size > self.max_bytes:
            return
        path = self._path(name)
        path.parent.mkdir(exist_ok=True, mode=0o700)
        temporary = path.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(temporary, "wb") as stream:
                if isinstance(data, bytes):
                    stream.write(data)
                else:
                    data(stream)
            size = temporary.stat().st_size
            os.replace(temporary, path)
        except OSError:  # a full or read-only disk costs the cache, never the view
            _remove(temporary)
            return
        with self._lock:
            self._pop(name)
            self._add(name, size)
            doomed = self._over_bound(keep=name)
        for old in doomed:
            _remove(self._path(old))

    def forget_other_versions(self, file: _FileKey) -> None:
        """Delete this photo's entries of another size or mtime: they can never be asked again."""
        with self._lock:
            current = file.entry("")
            doomed = [n for n in self._by_photo.get(file.digest, ()) if not n.startswith(current)]
            for name in doomed:
                self._pop(name)
        for name in doomed:
            _remove(self._path(name))

    def total_bytes(self) -> int:
        with self._lock:
            return self._total

    def _path(self, name: str) -> Path:
        return self.folder / name[:2] / name

    def _forget(self, name: str) -> None:
        with self._lock:
            self._pop(name)

    def _add(self, name: str, size: int) -> None:
        self._sizes[name] = size
        self._total += size
        self._by_photo.setdefault(name.split(".", 1)[0], set()).add(name)

    def _pop(self, name: str) -> None:
        size = self._sizes.pop(name, None)
        if size is None:
            return
        self._total -= size
        digest = name.split(".", 1)[0]
        names = self._by_photo.get(digest, set())
        names.discard(name)
        if not names:
            self._by_photo.pop(digest, None)

    def _over_bound(self, keep: str | None = None) -> list[str]:
        """Take the least recently used out of the index until the total fits; the caller
        deletes their files (outside the lock)."""
        doomed = []
        for name in list(self._sizes):
            if self._total <= self.max_bytes:
                break
            if name != keep:
                self._pop(name)
                doomed.append(name)
        return doomed

    def _scan(self) -> None:
        entries = []
        now = time.time()
        for bucket in self.folder.iterdir():
            if not (bucket.is_dir() and len(bucket.name) == 2):
                continue
            for child in bucket.iterdir():
                try:
                    status = child.stat()
                except FileNotFoundError:
                    continue
                if child.name.startswith("."):  # a temporary file: a crash left it if it is old
                    if child.name.endswith(".tmp") and now - status.st_mtime > STALE_TEMP_SECONDS:
                        _remove(child)
                    continue
                entries.append((status.st_mtime_ns, child.name, status.st_size))
        with self._lock:
            for _, name, size in sorted(entries):
                self._add(name, size)
            doomed = self._over_bound()
        for name in doomed:
            _remove(self._path(name))


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:  # still mapped on Windows, or a read-only cache: the bound tries again later
        pass


# --- encoding -------------------------------------------------------------------------------


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, subsampling=0)  # 4:4:4: colour edges as shot
    return out.getvalue()


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return out.getvalue()


def _ppm_size(image: Image.Image) -> int:
    return image.width * image.height * 3 + 32  # the pixels and PPM's header
