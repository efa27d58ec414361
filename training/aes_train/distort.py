"""Filter-distorted versions of good photos at graded strengths (Pfister et al. 2021).

Pfister, Kobs and Hotho pretrain an aesthetics network by ranking distorted versions of
highly aesthetic photos below the originals, and stronger distortions below milder
ones: a good photo is rarely improved by blurring, noise or a wrong exposure, so these
pairs are labels nobody had to give. `aes-train distort` uses the same idea on top of
frozen CLIP features (ranking.py trains the head).

Each distortion is a function (image, amount, rng) -> image. Its strength runs from a
mild to a strong `amount` (the filter's own parameter: blur sigma, noise std, JPEG
quality, exposure stops, ...) over `levels` graded steps; level 0 is the original.

Determinism: every (photo, distortion) draws from its own random generator, seeded by
(seed, photo key, distortion). The same seed gives byte-identical pixels, whichever
other distortions or photos a run includes. The levels of one photo share the draws
(the same noise field, the same tilt direction), so they differ in strength alone.

Distortions are applied to the image decode_image() returns (short side at least the
model's input size), between the two steps of aes_index.index.pipeline.prepare(): decode,
[distort], to_model_pixels. The undistorted version is therefore exactly the pixels
aes-index scores, and each distorted one differs from it by the filter alone.
"""

from __future__ import annotations

import io
import math
import zlib
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from aes_index.errors import ConfigError

ORIGINAL = "original"
DEFAULT_LEVELS = 4
MAX_LEVELS = 8

# --- the filters -----------------------------------------------------------------------
# Each takes an RGB image, the amount for one level and a seeded generator.


def gaussian_blur(image: Image.Image, sigma_fraction: float, rng: np.random.Generator) -> Image.Image:
    """Out of focus / camera shake: sigma as a fraction of the short side, so the blur
    looks the same whatever resolution the photo was decoded at."""
    return image.filter(ImageFilter.GaussianBlur(radius=sigma_fraction * min(image.size)))


def sensor_noise(image: Image.Image, std: float, rng: np.random.Generator) -> Image.Image:
    """High-ISO noise: Gaussian, independent per pixel and channel (luma + chroma noise)."""
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + rng.normal(0.0, std, size=pixels.shape).astype(np.float32)
    return _to_image(noisy)


def jpeg_artefacts(image: Image.Image, quality: float, rng: np.random.Generator) -> Image.Image:
    """Blocking and ringing: a re-encode at low JPEG quality (libjpeg is deterministic)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(round(quality)))
    buffer.seek(0)
    with Image.open(buffer) as reencoded:
        return reencoded.convert("RGB")


def overexposure(image: Image.Image, stops: float, rng: np.random.Generator) -> Image.Image:
    return _expose(image, +stops)


def underexposure(image: Image.Image, stops: float, rng: np.random.Generator) -> Image.Image:
    return _expose(image, -stops)


def _expose(image: Image.Image, stops: float) -> Image.Image:
    """Exposure works on light, not on gamma-encoded values: scale in (approximately)
    linear light by 2**stops, then clip, as a sensor does at its full well."""
    linear = (np.asarray(image, dtype=np.float32) / 255.0) ** 2.2
    exposed = np.clip(linear * 2.0**stops, 0.0, 1.0) ** (1 / 2.2)
    return _to_image(exposed * 255.0)


def desaturation(image: Image.Image, removed: float, rng: np.random.Generator) -> Image.Image:
    """Washed-out colour: blend towards the greyscale image (removed = 1: black and white)."""
    return ImageEnhance.Color(image).enhance(1.0 - removed)


def contrast_loss(image: Image.Image, removed: float, rng: np.random.Generator) -> Image.Image:
    """Haze / flat light: blend towards the image's mean grey."""
    return ImageEnhance.Contrast(image).enhance(1.0 - removed)


def colour_cast(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    """A wrong white balance: red up and blue down (too warm) or the reverse (too cold);
    the direction is drawn from the seeded generator."""
    sign = 1.0 if rng.random() < 0.5 else -1.0
    gains = np.array([1.0 + sign * strength, 1.0, 1.0 - sign * strength], dtype=np.float32)
    return _to_image(np.asarray(image, dtype=np.float32) * gains)


def tilt(image: Image.Image, degrees: float, rng: np.random.Generator) -> Image.Image:
    """A crooked horizon: rotate (direction drawn from the generator), cut the largest
    centred rectangle of the same shape that holds no border, scale back to the size."""
    angle = degrees if rng.random() < 0.5 else -degrees
    width, height = image.size
    rotated = image.rotate(angle, resample=Image.Resampling.BICUBIC)
    keep = _inscribed_scale(width, height, math.radians(abs(angle)))
    crop_w, crop_h = width * keep, height * keep
    box = ((width - crop_w) / 2, (height - crop_h) / 2, (width + crop_w) / 2, (height + crop_h) / 2)
    return rotated.resize((width, height), Image.Resampling.BICUBIC, box=box)


def _inscribed_scale(width: int, height: int, theta: float) -> float:
    """Largest s such that an (s*w, s*h) rectangle, centred, fits inside the w x h one
    rotated by theta (the corner nearest the rotated edges decides)."""
    cos, sin = math.cos(theta), math.sin(theta)
    return min(width / (width * cos + height * sin), height / (width * sin + height * cos))


def _to_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


# --- the table of distortions ----------------------------------------------------------


@dataclass(frozen=True)
class Distortion:
    name: str
    apply: Callable[[Image.Image, float, np.random.Generator], Image.Image]
    mild: float  # the amount at level 1
    strong: float  # the amount at the last level
    unit: str
    geometric: bool  # amounts spaced by ratio (perceived like a log scale) or evenly

    def amount(self, level: int, levels: int) -> float:
        """The filter parameter of `level` (1..levels): graded from mild to strong."""
        fraction = 0.5 if levels == 1 else (level - 1) / (levels - 1)
        if self.geometric:
            return float(self.mild * (self.strong / self.mild) ** fraction)
        return float(self.mild + (self.strong - self.mild) * fraction)

    def describe(self) -> dict:
        return {"mild": self.mild, "strong": self.strong, "unit": self.unit, "spacing": "geometric" if self.geometric else "even"}


DISTORTIONS: dict[str, Distortion] = {
    d.name: d
    for d in (
        Distortion("blur", gaussian_blur, 0.004, 0.03, "Gaussian sigma / short side", geometric=True),
        Distortion("noise", sensor_noise, 4.0, 40.0, "noise std in 8-bit levels", geometric=True),
        Distortion("jpeg", jpeg_artefacts, 40.0, 5.0, "JPEG quality", geometric=True),
        Distortion("overexpose", overexposure, 0.5, 2.5, "stops brighter", geometric=False),
        Distortion("underexpose", underexposure, 0.5, 2.5, "stops darker", geometric=False),
        Distortion("desaturate", desaturation, 0.3, 1.0, "share of colour removed", geometric=False),
        Distortion("contrast", contrast_loss, 0.25, 0.85, "share of contrast removed", geometric=False),
        Distortion("colour-cast", colour_cast, 0.05, 0.35, "red/blue gain offset", geometric=False),
        Distortion("tilt", tilt, 1.5, 10.0, "degrees of rotation (then cropped)", geometric=True),
    )
}


@dataclass(frozen=True)
class DistortConfig:
    distortions: tuple[str, ...] = tuple(DISTORTIONS)
    levels: int = DEFAULT_LEVELS
    seed: int = 0

    def __post_init__(self):
        unknown = [name for name in self.distortions if name not in DISTORTIONS]
        if unknown or not self.distortions:
            raise ConfigError(f"--distortions takes {', '.join(DISTORTIONS)}; got {', '.join(unknown) or 'none'}")
        if not 1 <= self.levels <= MAX_LEVELS:
            raise ConfigError(f"--levels must be 1 to {MAX_LEVELS}, got {self.levels}")

    def as_dict(self) -> dict:
        table = {name: {**DISTORTIONS[name].describe(),
                        "amounts": [round(DISTORTIONS[name].amount(k, self.levels), 6) for k in range(1, self.levels + 1)]}
                 for name in self.distortions}
        return {**asdict(self), "distortions": list(self.distortions), "table": table}


@dataclass(frozen=True)
class Variant:
    """One version of a photo: the original (level 0) or a distortion at a level."""

    distortion: str
    level: int

    @property
    def label(self) -> str:
        return ORIGINAL if self.level == 0 else f"{self.distortion}-{self.level}"


def variant_list(config: DistortConfig) -> list[Variant]:
    """The original first, then every distortion from mild to strong."""
    return [Variant(ORIGINAL, 0)] + [Variant(name, level) for name in config.distortions for level in range(1, config.levels + 1)]


def generator_for(seed: int, photo_key: int, distortion: str) -> np.random.Generator:
    """A generator of its own per (photo, distortion): results don't depend on which
    other distortions or photos are in the run, nor on their order; and every level
    of a photo draws the same numbers, so its versions differ in strength only."""
    return np.random.default_rng([seed & 0xFFFFFFFF, photo_key & 0xFFFFFFFFFFFFFFFF, zlib.crc32(distortion.encode())])


def distort(image: Image.Image, variant: Variant, config: DistortConfig, photo_key: int) -> Image.Image:
    """The image as `variant` says: unchanged for the original, else filtered."""
    if variant.level == 0:
        return image
    distortion = DISTORTIONS[variant.distortion]
    rng = generator_for(config.seed, photo_key, variant.distortion)
    return distortion.apply(image.convert("RGB"), distortion.amount(variant.level, config.levels), rng)


def versions(image: Image.Image, config: DistortConfig, photo_key: int) -> Iterator[tuple[Variant, Image.Image]]:
    """Every version of one photo, original first."""
    for variant in variant_list(config):
        yield variant, distort(image, variant, config, photo_key)


def parse_distortions(text: str | None) -> tuple[str, ...]:
    """"blur,noise" -> ("blur", "noise"); empty -> all of them."""
    names: Sequence[str] = [w.strip() for w in (text or "").split(",") if w.strip()]
    return tuple(names) or tuple(DISTORTIONS)


# --- through the serving pipeline to pooled features -------------------------------------


@dataclass(frozen=True)
class Photo:
    key: int  # stable per photo: the index's image id, or a hash of the path in the folder
    path: str


@dataclass
class VersionEmbeddings:
    """Pooled features of every version of every photo, one row per version."""

    variants: list[Variant]  # what the numbers in `variant` refer to
    photo: np.ndarray  # (N,) int64 photo key
    variant: np.ndarray  # (N,) int32 index into `variants`
    pooled: np.ndarray  # (N, D) float32, rounded through float16 as aes-index stores it
    failed: list[tuple[Photo, str]]  # photos that could not be decoded, with the reason

    def __len__(self) -> int:
        return len(self.photo)

    @property
    def levels(self) -> np.ndarray:
        return np.array([v.level for v in self.variants], dtype=np.int32)[self.variant]

    def distortion_names(self) -> np.ndarray:
        return np.array([v.distortion for v in self.variants])[self.variant]


def embed_versions(
    backbone,
    photos: Sequence[Photo],
    config: DistortConfig,
    batch_size: int = 32,
    save_dir=None,
    on_photo: Callable[[int], None] | None = None,
) -> VersionEmbeddings:
    """Decode each photo once, make its versions in memory, embed them in batches.

    In memory rather than through files and embed_stream: writing every version as a
    JPEG would add compression artefacts to all of them (and PNGs of 37 versions per
    photo are slow and large), while decode -> distort -> to_model_pixels is exactly
    pipeline.prepare() with the filter in between. Decoding and filtering cost a few
    per cent of the image encoder's time on a CPU, so no worker processes are needed.
    """
    from aes_index.index.decode import decode_image
    from aes_index.errors import DecodeError
    from aes_index.index.pipeline import _embed_batch, to_model_pixels

    spec = backbone.info.preprocess
    variants = variant_list(config)
    rows: list[tuple[int, int]] = []
    pooled: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    failed: list[tuple[Photo, str]] = []

    def flush() -> None:
        if pending:
            # _embed_batch: the same model call and float16 rounding as aes-index's indexer
            pooled.append(_embed_batch(backbone, list(range(len(pending))), pending).pooled)
            pending.clear()

    for done, photo in enumerate(photos, start=1):
        try:
            image = decode_image(photo.path, min_side=spec.size)  # as pipeline.prepare() decodes
        except DecodeError as exc:
            failed.append((photo, str(exc)))
            continue
        for index, (variant, version) in enumerate(versions(image, config, photo.key)):
            if save_dir is not None:
                _save_version(save_dir, photo, variant, version)
            rows.append((photo.key, index))
            pending.append(to_model_pixels(version, spec))
            if len(pending) == batch_size:
                flush()
        if on_photo is not None:
            on_photo(done)
    flush()
    keys = np.array([r[0] for r in rows], dtype=np.int64)
    which = np.array([r[1] for r in rows], dtype=np.int32)
    matrix = np.concatenate(pooled) if pooled else np.zeros((0, backbone.info.pooled_dim), np.float32)
    return VersionEmbeddings(variants, keys, which, matrix, failed)


def _save_version(folder, photo: Photo, variant: Variant, image: Image.Image) -> None:
    """PNG (lossless): what is saved is what was embedded, before the model's resize."""
    from pathlib import Path

    target = Path(folder) / f"{Path(photo.path).stem}-{photo.key:x}"
    target.mkdir(parents=True, exist_ok=True)
    image.save(target / f"{variant.label}.png")


# --- where the good photos come from ---------------------------------------------------


def folder_photos(root) -> list[Photo]:
    """Every photo under `root` (aes-index's own discovery rules). The key is a hash of
    the path below `root`, so adding photos later changes no other photo's key."""
    import hashlib
    import os

    from aes_index.index.discover import discover

    photos = []
    for entry in discover([root]):
        relative = os.path.relpath(entry.path, root).encode("utf-8", "surrogateescape")
        key = int.from_bytes(hashlib.blake2b(relative, digest_size=7).digest(), "big")
        photos.append(Photo(key, entry.path))
    if not photos:
        raise ConfigError(f"no photos found under {root}")
    return photos


@dataclass
class RatedPhotos:
    """The photos of an aes-index library that carry a rating of their owner's."""

    ids: np.ndarray  # (N,) image ids in the index
    paths: list[str]
    ratings: np.ndarray  # (N,) the rating as written: -1 (rejected) .. 5
    stars: np.ndarray  # (N,) as a label: a reject is 0 stars
    pooled: np.ndarray  # (N, D) float32: the index's cached embeddings of them

    def __len__(self) -> int:
        return len(self.ids)

    def good(self, min_stars: int) -> list[Photo]:
        return [Photo(int(i), p) for i, p, r in zip(self.ids, self.paths, self.ratings) if r >= min_stars]


def rated_photos(index, backbone_key: str, config) -> RatedPhotos:
    """Ratings as `aes-train personal` reads them (sidecar, else EXIF; never the ones
    aes-index wrote), of photos the index holds an embedding of from this backbone."""
    from aes_index.errors import IndexUnavailable

    from .personal import collect_ratings, indexed_photos, targets

    row = index.embeddings.backbone(backbone_key)
    if row is None:
        known = ", ".join(r["key"] for r in index.embeddings.backbones()) or "none"
        raise IndexUnavailable(f"the index has no embeddings from {backbone_key} (it has: {known}); pass its --model/--pretrained")
    photos = indexed_photos(index, row["id"])
    path_of = dict(photos)
    ratings, stars = targets(sorted(collect_ratings(index, photos, unrated=config.treat_as_unrated).values(), key=lambda r: r.image_id), config)
    ids = [r.image_id for r in ratings]
    vectors: dict[int, np.ndarray] = {}
    for chunk_ids, matrix, _ in index.embeddings.iter(row["id"], ids):
        vectors.update(zip(chunk_ids.tolist(), matrix.astype(np.float32)))
    pooled = np.stack([vectors[i] for i in ids]) if ids else np.zeros((0, row["pooled_dim"]), np.float32)
    return RatedPhotos(np.array(ids, dtype=np.int64), [path_of[i] for i in ids],
                       np.array([r.rating for r in ratings], dtype=np.int64), stars, pooled)
