"""Decode and embed: files -> model-ready pixels (in worker processes) -> pooled features.

Workers decode and resize while the main process runs the model on the previous batch.
At most `ahead` chunks are in flight, so memory stays bounded however large the library:
the queue never holds more than a few batches of 224x224 uint8 images.

Workers import neither torch nor the model (decode.py and Pillow only), and are started
with "spawn" so they never inherit a forked copy of torch's thread pools.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from .backbone import PreprocessSpec
from .decode import decode_image
from .errors import DecodeError

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


@dataclass
class Decoded:
    image_id: int
    pixels: np.ndarray  # (S, S, 3) uint8


@dataclass
class Failed:
    image_id: int
    code: str
    message: str


@dataclass
class Batch:
    image_ids: list[int]
    pooled: np.ndarray  # (B, D) float32, already rounded through float16 like the cache
    proj_norms: np.ndarray  # (B,) float32


def to_model_pixels(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Resize and crop an RGB image the way open_clip's eval transform does."""
    size, resample = spec.size, _RESAMPLE.get(spec.interpolation, Image.Resampling.BICUBIC)
    width, height = image.size
    if spec.resize_mode == "squash":
        return np.asarray(image.resize((size, size), resample))
    if spec.resize_mode == "longest":
        scale = size / max(width, height)
        resized = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), resample)
        canvas = Image.new("RGB", (size, size), (0, 0, 0))
        canvas.paste(resized, ((size - resized.width) // 2, (size - resized.height) // 2))
        return np.asarray(canvas)
    # "shortest": short side to size (long side truncated, as torchvision's Resize does),
    # then a centre crop rounded the same way as torchvision's CenterCrop.
    if width <= height:
        new_w, new_h = size, max(size, int(size * height / width))
    else:
        new_w, new_h = max(size, int(size * width / height)), size
    resized = image.resize((new_w, new_h), resample)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    return np.asarray(resized.crop((left, top, left + size, top + size)))


def prepare(path: str, spec: PreprocessSpec) -> np.ndarray:
    """One file -> model-ready uint8 pixels; raises DecodeError subclasses."""
    return to_model_pixels(decode_image(path, min_side=spec.size), spec)


def _prepare_chunk(tasks: Sequence[tuple[int, str]], spec: PreprocessSpec) -> list[Decoded | Failed]:
    """Worker entry point: never raises, so one bad file can't take a chunk down with it."""
    results: list[Decoded | Failed] = []
    for image_id, path in tasks:
        try:
            results.append(Decoded(image_id, prepare(path, spec)))
        except DecodeError as exc:
            results.append(Failed(image_id, exc.code, str(exc)))
        except Exception as exc:  # a decoder bug must not kill the run: record it
            name = os.path.basename(path)
            results.append(Failed(image_id, "internal", f"{name}: unexpected {type(exc).__name__}: {exc}"))
    return results


def default_workers() -> int:
    """Leave a core for the model: decode and inference overlap instead of fighting."""
    return max(1, (os.cpu_count() or 2) - 1)


def decode_stream(
    items: Iterable[tuple[int, str]], spec: PreprocessSpec, workers: int, chunk: int = 8, ahead: int | None = None
) -> Iterator[Decoded | Failed]:
    """Decode (image_id, path) items in order, in `workers` processes (0 = inline)."""
    if workers <= 0:
        for item in items:
            yield from _prepare_chunk([item], spec)
        return
    pool = _CrashTolerantPool(workers, spec)
    pending: deque = deque()
    try:
        for tasks in _chunks(items, chunk):
            pending.append(pool.submit(tasks))
            if len(pending) >= (ahead or 4 * workers):
                yield from pool.results(pending.popleft(), pending)
        while pending:
            yield from pool.results(pending.popleft(), pending)
    finally:
        pool.shutdown()


class _CrashTolerantPool:
    """A process pool that survives a decoder crashing its worker (a segfault in a native
    RAW or HEIF library can't be caught in Python): the pool is restarted, the broken
    chunk is retried file by file, and a file that crashes on its own is recorded."""

    def __init__(self, workers: int, spec: PreprocessSpec):
        self.workers, self.spec = workers, spec
        self.pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=context, initializer=_quiet_worker)

    def submit(self, tasks: list) -> tuple:
        return self.pool.submit(_prepare_chunk, tasks, self.spec), tasks

    def results(self, entry: tuple, pending: deque) -> list[Decoded | Failed]:
        future, tasks = entry
        try:
            return future.result()
        except BrokenProcessPool:
            self._restart()
            results = [self._run_alone(task) for task in tasks]
            for i, (_, waiting) in enumerate(pending):  # their futures died with the pool
                pending[i] = self.submit(waiting)
            return results

    def _run_alone(self, task: tuple[int, str]) -> Decoded | Failed:
        try:
            return self.pool.submit(_prepare_chunk, [task], self.spec).result()[0]
        except BrokenProcessPool:
            self._restart()
            name = os.path.basename(task[1])
            return Failed(task[0], "crash", f"{name}: the image decoder crashed on this file")

    def _restart(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._start()

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _quiet_worker() -> None:
    """Decoders chatter: exiv2 through logging, LibRaw straight onto C stderr. A worker's
    failures come back as Failed results, so its stderr carries nothing we need."""
    import logging

    logging.getLogger("exiv2").setLevel(logging.CRITICAL)
    if not os.environ.get("AES_INDEX_DEBUG"):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)


def embed_stream(
    backbone, items: Iterable[tuple[int, str]], batch_size: int, workers: int
) -> Iterator[Batch | Failed]:
    """Pooled features for each decodable item, in batches; failures pass straight through."""
    ids: list[int] = []
    pixels: list[np.ndarray] = []
    for result in decode_stream(items, backbone.info.preprocess, workers, chunk=max(1, min(16, batch_size // 2))):
        if isinstance(result, Failed):
            yield result
            continue
        ids.append(result.image_id)
        pixels.append(result.pixels)
        if len(ids) == batch_size:
            yield _embed_batch(backbone, ids, pixels)
            ids, pixels = [], []
    if ids:
        yield _embed_batch(backbone, ids, pixels)


def _embed_batch(backbone, ids: list[int], pixels: list[np.ndarray]) -> Batch:
    from .heads import projected_norms

    # Round through float16 here, as the cache stores it, so that scores computed now and
    # scores recomputed later from the cache are identical.
    pooled = backbone.encode_pooled(np.stack(pixels)).astype(np.float16).astype(np.float32)
    return Batch(list(ids), pooled, projected_norms(pooled, backbone.projection))


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
