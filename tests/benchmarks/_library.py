"""Benchmark inputs, built once into a cache folder outside the repository and reused.

* `photo_library(n)`: n distinct photo files like a camera card's: 24 MP JPEGs (6000x4000,
  quality 92, 4:2:2, EXIF with orientation: some are portrait shots stored sideways),
  made from the real photo in tests/fixtures/photos by cropping, rotating, re-lighting,
  upscaling and adding sensor-like noise (brighter pixels noisier, luma and chroma parts) to
  about 8 MB, the size of a 24 MP camera JPEG at fine quality. Every 20th file is an
  iPhone-like HEIC (12 MP, with the 320x240 thumbnail iPhones embed), every 20th a RAW file
  with a 1620x1080 JPEG preview (a DNG-shaped TIFF, as cameras write them; decoded through
  that preview).

  Encoding a 24 MP photo takes about a second, so the files are copies of a few dozen
  distinct bases. Each copy gets its own bytes at the end of its image data (a JPEG COM
  segment before EOI, an ISO-BMFF `free` box, trailing RAW data): aes-index fingerprints
  a file by its last 256 KiB, so without them it would take copies for duplicates and
  skip decoding them. The decoders' work per file is that of a distinct photo.

* `noop_library(n)`: n small distinct files plus an index that already holds their rows,
  embeddings and current scores, written straight through the store API: what a no-op
  `rebuild` of an unchanged library sees, without embedding n photos first.

* `rescore_index(n)`: an index of n cached 768-d float16 embeddings (random), scored by
  one head, for timing `rescore` with another.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
PHOTO = REPO_ROOT / "tests" / "fixtures" / "photos" / "evening-glow.jpg"  # see tests/fixtures/PROVENANCE.md
BENCH_DIR = Path(os.environ.get("AES_BENCH_DIR", "/tmp/aes-bench"))

JPEG_SIZE = (6000, 4000)  # 24 MP, 3:2
HEIC_SIZE = (4032, 3024)  # 12 MP, an iPhone's
PREVIEW_SIZE = (1620, 1080)  # the JPEG preview in Nikon/Sony RAW files
JPEG_BASES, HEIC_BASES, RAW_BASES = 64, 2, 4
NOISE_SIGMA = 6.0  # at mid-grey, in 8-bit levels: gives ~8 MB files at quality 92
EVERY_NTH_HEIC, EVERY_NTH_RAW = 20, 20
FORMAT = 5  # bump when what is built changes (2: 16 KB SQLite pages; 5: index schema 2)


# --- photo library ---------------------------------------------------------------------------


def photo_library(n: int, workers: int | None = None) -> Path:
    """A folder of n distinct photos (see module doc); built once, then reused."""
    folder = BENCH_DIR / f"photos-{n}"
    done = folder / ".complete"
    if done.is_file():
        return folder
    bases = _ensure_bases(workers)
    if folder.exists():
        shutil.rmtree(folder)
    for k in range(n):
        kind = file_kind(k)
        base = bases[kind][k % len(bases[kind])]
        target = folder / f"2024-{k // 500 + 1:02d}" / f"{_PREFIX[kind]}{k:05d}{_SUFFIX[kind]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_make_distinct(kind, base.read_bytes(), f"aes-bench photo {k} of {n}".encode()))
    done.write_text("ok\n")
    return folder


_PREFIX = {"jpeg": "DSC", "heic": "IMG_", "raw": "RAW"}
_SUFFIX = {"jpeg": ".JPG", "heic": ".HEIC", "raw": ".dng"}


def file_kind(k: int) -> str:
    if k % EVERY_NTH_HEIC == EVERY_NTH_HEIC - 1:
        return "heic"
    if k % EVERY_NTH_RAW == EVERY_NTH_RAW // 2 - 1:
        return "raw"
    return "jpeg"


def _ensure_bases(workers: int | None) -> dict[str, list[Path]]:
    folder = BENCH_DIR / "bases"
    folder.mkdir(parents=True, exist_ok=True)
    plan = {
        "jpeg": [(folder / f"base-{i:03d}.jpg", _make_jpeg, i) for i in range(JPEG_BASES)],
        "heic": [(folder / f"base-{i:03d}.heic", _make_heic, i) for i in range(HEIC_BASES)],
        "raw": [(folder / f"base-{i:03d}.dng", _make_raw, i) for i in range(RAW_BASES)],
    }
    missing = [(path, make, seed) for entries in plan.values() for path, make, seed in entries if not path.is_file()]
    if missing:
        print(f"building {len(missing)} base photos in {folder} (once; about a second each)", file=sys.stderr, flush=True)
        with ProcessPoolExecutor(workers or os.cpu_count() or 1) as pool:
            list(pool.map(_write_base, missing))
    return {kind: [path for path, _, _ in entries] for kind, entries in plan.items()}


def _write_base(job) -> None:
    path, make, seed = job
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(make(seed))
    os.replace(tmp, path)


def _scene(seed: int, size: tuple[int, int]) -> Image.Image:
    """A varied view of the real photo: crop, tilt, mirror, exposure, at `size`."""
    rng = np.random.default_rng(seed)
    with Image.open(PHOTO) as opened:
        source = opened.convert("RGB")
    aspect = size[0] / size[1]
    width = int(min(source.width, source.height * aspect) * rng.uniform(0.6, 0.95))
    height = int(width / aspect)
    left, top = int(rng.integers(0, source.width - width)), int(rng.integers(0, source.height - height))
    view = source.crop((left, top, left + width, top + height)).rotate(rng.uniform(-3, 3), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    gain = rng.uniform(0.85, 1.15, 3).astype(np.float32)
    view = Image.fromarray(np.clip(np.asarray(view, np.float32) * gain, 0, 255).astype(np.uint8))
    return view.resize(size, Image.Resampling.BICUBIC)


def _sensor_noise(image: Image.Image, seed: int, sigma: float = NOISE_SIGMA) -> Image.Image:
    """Noise like a sensor's after demosaicing: stronger in bright areas (shot noise) with a
    floor (read noise), mostly shared by the channels (luma) plus a chroma part.

    A random 1024x1024 noise tile is repeated: JPEG codes 8x8 blocks, so it can't exploit
    the repetition, and it is 20x cheaper than drawing 72 million normals.
    """
    rng = np.random.default_rng(seed + 10_000)
    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    tile = (rng.normal(0, 1, (1024, 1024, 4)) * 16).astype(np.int16)  # 3 chroma + 1 luma, x16
    reps = (height // 1024 + 1, width // 1024 + 1, 1)
    tiled = np.tile(np.roll(tile, tuple(rng.integers(0, 1024, 2)), (0, 1)), reps)[:height, :width]
    noise = tiled[..., :3] + 2 * tiled[..., 3:]  # std = sqrt(1 + 4) * 16
    level = (0.5 + np.sqrt(pixels / np.float32(255))) * np.float32(sigma / (16 * np.sqrt(5) * 1.2))
    return Image.fromarray(np.clip(pixels + noise * level, 0, 255).astype(np.uint8))


def _exif(orientation: int, model: str) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "aes-bench"  # Make
    exif[0x0110] = model  # Model
    exif[0x0112] = orientation
    exif[0x0132] = "2024:06:01 12:00:00"  # DateTime
    return exif.tobytes()


def _make_jpeg(seed: int) -> bytes:
    """A 24 MP camera JPEG; one in four is a portrait shot stored sideways (orientation 6)."""
    image = _sensor_noise(_scene(seed, JPEG_SIZE), seed)
    orientation = 6 if seed % 4 == 3 else 1
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92, subsampling=1, exif=_exif(orientation, "synthetic 24MP"))
    return out.getvalue()


def _make_heic(seed: int) -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    image = _sensor_noise(_scene(seed + 500, HEIC_SIZE), seed + 500, sigma=1.5)
    image.info["thumbnails"] = [320]  # iPhones embed a 320x240 thumbnail
    out = io.BytesIO()
    image.save(out, format="HEIF", quality=80, exif=_exif(1, "synthetic iPhone"))
    return out.getvalue()


def _make_raw(seed: int) -> bytes:
    """A DNG-shaped TIFF: IFD0 is a 1620x1080 JPEG preview, then opaque sensor data."""
    preview = _scene(seed + 900, PREVIEW_SIZE)
    out = io.BytesIO()
    preview.save(out, "JPEG", quality=90)
    sensor_data = np.random.default_rng(seed).integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
    return tiff_with_jpeg_preview(out.getvalue(), PREVIEW_SIZE, orientation=6 if seed % 2 else 1, tail=sensor_data)


def tiff_with_jpeg_preview(jpeg: bytes, size: tuple[int, int], orientation: int, tail: bytes) -> bytes:
    """TIFF header, IFD0 describing an old-style JPEG preview (as in NEF/CR2/DNG), the JPEG,
    then `tail`. Exiv2's PreviewManager finds the preview through JPEGInterchangeFormat."""
    short, long_, ascii_, byte = 3, 4, 2, 1
    model = b"aes-bench RAW\x00"
    entries = 11
    model_at = 8 + 2 + entries * 12 + 4
    jpeg_at = model_at + len(model)
    tags = [
        (0x00FE, long_, 1, 1),  # NewSubfileType: reduced-resolution image
        (0x0100, long_, 1, size[0]),
        (0x0101, long_, 1, size[1]),
        (0x0103, short, 1, 6),  # Compression: old-style JPEG
        (0x0106, short, 1, 6),  # PhotometricInterpretation: YCbCr
        (0x0110, ascii_, len(model), model_at),  # Model
        (0x0112, short, 1, orientation),
        (0x0115, short, 1, 3),  # SamplesPerPixel
        (0x0201, long_, 1, jpeg_at),  # JPEGInterchangeFormat
        (0x0202, long_, 1, len(jpeg)),  # JPEGInterchangeFormatLength
        (0xC612, byte, 4, bytes([1, 4, 0, 0])),  # DNGVersion
    ]
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", entries))
    for tag, kind, count, value in tags:
        if isinstance(value, bytes):
            field = value.ljust(4, b"\x00")
        elif kind == short:
            field = struct.pack("<HH", value, 0)
        else:
            field = struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + field
    out += struct.pack("<I", 0) + model
    return bytes(out) + jpeg + tail


def _make_distinct(kind: str, data: bytes, tag: bytes) -> bytes:
    """Give a copy its own last bytes without changing what its decoder does."""
    tag = tag + os.urandom(16)
    if kind == "jpeg":  # a COM segment just before EOI
        assert data.endswith(b"\xff\xd9")
        return data[:-2] + b"\xff\xfe" + struct.pack(">H", len(tag) + 2) + tag + b"\xff\xd9"
    if kind == "heic":  # a top-level `free` box, which every ISO-BMFF reader skips
        return data + struct.pack(">I", len(tag) + 8) + b"free" + tag
    return data + tag  # RAW: more opaque data after what the TIFF offsets point at


# --- an unchanged library and its index, for the no-op rebuild -------------------------------


def noop_library(n: int, backbone_info, projection: np.ndarray, head) -> tuple[Path, Path]:
    """(root, index path): n small distinct JPEGs in 100 folders, and an index that holds
    every one of them with an embedding and a current score for `head`."""
    folder = BENCH_DIR / f"noop-{n}"
    root, db = folder / "Photos", folder / "index.db"
    done = folder / f".complete-{FORMAT}-{head.hash}"
    if done.is_file():
        return root, db
    if folder.exists():
        shutil.rmtree(folder)
    _write_small_files(root, n)
    _populate_index(db, root, backbone_info, projection, head)
    done.write_text("ok\n")
    return root, db


def _write_small_files(root: Path, n: int) -> None:
    """Tiny distinct JPEGs: the no-op path never decodes them, it only stats and looks up."""
    template = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(template, "JPEG", quality=80)
    data = template.getvalue()
    for k in range(n):
        path = root / f"{2000 + k // 10_000}" / f"{(k // 1000) % 10:02d}" / f"IMG_{k:06d}.jpg"
        if k % 1000 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_make_distinct("jpeg", data, f"noop {k}".encode()))


def _populate_index(db_path: Path, root: Path, backbone_info, projection: np.ndarray, head) -> None:
    from aes_index.index import store
    from aes_index.index.discover import discover, fingerprint

    rng = np.random.default_rng(0)
    now = store.utcnow()
    preprocess = backbone_info.preprocess.describe()
    with store.Index(db_path) as index:
        index.add_roots([str(root)])
        backbone_id = index.embeddings.ensure_backbone(backbone_info, projection)
        index.scores.record_head(head)
        entries = list(discover([root]))
        with index.transaction():  # raw SQL: images in bulk, as a finished rebuild leaves them, in seconds
            index.db.conn.executemany(
                "INSERT INTO images (path, size, mtime_ns, fingerprint, status, first_seen, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(e.path, e.size, e.mtime_ns, fingerprint(e.path, e.size), store.OK, now, now) for e in entries],
            )
            ids = [row[0] for row in index.db.execute("SELECT id FROM images ORDER BY id")]
            _insert_embeddings_and_scores(index, backbone_id, head, preprocess, projection, ids, rng)


def _insert_embeddings_and_scores(index, backbone_id: int, head, preprocess: str, projection, ids: list[int], rng) -> None:
    from aes_index.model.heads import projected_norms

    for start in range(0, len(ids), 50_000):
        chunk = ids[start : start + 50_000]
        pooled = rng.standard_normal((len(chunk), projection.shape[0]), dtype=np.float32).astype(np.float16)
        norms = projected_norms(pooled.astype(np.float32), projection)
        index.embeddings.put(backbone_id, chunk, pooled, norms)
        if head is not None:
            index.scores.put(head, backbone_id, preprocess, chunk, head.predict(pooled, projection, norms))


def built_before(folder: Path, done: Path) -> bool:
    """Whether `folder` holds a finished build (its `done` marker); if not, it is emptied
    for a new one. Inputs are built once and reused across benchmark runs."""
    if done.is_file():
        return True
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return False


# --- a million cached embeddings, for rescore -------------------------------------------------


def rescore_index(n: int, backbone_info, projection: np.ndarray, old_head) -> Path:
    """An index of n images with cached embeddings, all scored by `old_head` (pristine copy:
    callers copy it before a run, since rescoring changes it)."""
    folder = BENCH_DIR / f"rescore-{n}"
    db = folder / "index.db"
    done = folder / f".complete-{FORMAT}-{old_head.hash}"
    if built_before(folder, done):
        return db
    from aes_index.index import store

    rng = np.random.default_rng(1)
    now = store.utcnow()
    with store.Index(db) as index:
        backbone_id = index.embeddings.ensure_backbone(backbone_info, projection)
        index.scores.record_head(old_head)
        with index.transaction():  # raw SQL: a million images in bulk, as a finished rebuild leaves them
            index.db.conn.executemany(
                "INSERT INTO images (id, path, size, mtime_ns, fingerprint, status, first_seen, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ((k + 1, f"/photos/{k // 1000:04d}/IMG_{k:07d}.jpg", 8_000_000, k, f"{k:032x}", store.OK, now, now) for k in range(n)),
            )
            preprocess = backbone_info.preprocess.describe()
            _insert_embeddings_and_scores(index, backbone_id, old_head, preprocess, projection, list(range(1, n + 1)), rng)
        index.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    done.write_text("ok\n")
    return db
