"""Decode and embed: files -> model-ready pixels (in worker processes) -> pooled features.

Workers decode and resize while the main process runs the model on the previous batch.
At most `ahead` chunks are in flight, so memory stays bounded however large the library:
the queue never holds more than a few batches of 224x224 uint8 images.

Workers import neither torch nor the model (decode.py and Pillow only), and are started
with "spawn" so they never inherit a forked copy of torch's thread pools. They die with
the main process, even one killed outright (see "dying with the parent").

How the cores are shared, on a CPU without a GPU: decoding a 24 MP JPEG costs about 60 ms
of one core, the model about 25 ms (bf16), so decoding needs most of the machine. There is
one worker per core, each at a lower priority than the model (`WORKER_NICE`), and the
model keeps all its threads: while the model runs, the scheduler gives it the cores and
the workers wait; while it waits for pixels, the workers have every core. A worker fewer
than the cores (the old default) left a core idle whenever the model waited; workers at
the model's priority preempt its threads mid-matmul, which stalls all of them. With a GPU
the main process only feeds the device, so a core is left for it.

With CUDA, baseline JPEGs are decoded on the GPU (nvJPEG, through torchvision) and brought
to the model's input there; everything else (RAW, HEIC, PNG, CMYK or progressive JPEGs,
whatever nvJPEG refuses) goes to the CPU workers at the same time. The GPU route produces
the same pixels as the CPU route up to rounding: see `jpeg_to_model_pixels`.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import warnings
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from ..model.backbone import PreprocessSpec
from .facts import CaptureFacts, FactsProbe
from .decode import DRAFT_MIN_SIDE, MAX_PIXELS, RAW_EXTENSIONS, _embedded_orientation, decode_image
from ..errors import DecodeError

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}

# Decode workers run this much nicer than the model (see the module doc). 10 is enough for
# the scheduler to favour the model's threads ~9:1 whenever both want a core.
WORKER_NICE = 10


@dataclass
class Decoded:
    image_id: int
    pixels: Any  # (S, S, 3) uint8: a numpy array, or a torch tensor on the GPU route
    facts: CaptureFacts | None = None  # culling's capture facts, gathered by the same decode


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
    facts: list[CaptureFacts | None] = field(default_factory=list)  # per image, in order


# --- the model's input geometry (shared by the CPU and GPU routes) -----------------------


@dataclass(frozen=True)
class Geometry:
    """Where a width x height image goes in the S x S model input."""

    resized: tuple[int, int]  # (width, height) after resizing
    crop: tuple[int, int] | None  # "shortest": top-left of the S x S crop of the resized image
    paste: tuple[int, int] | None  # "longest": top-left of the resized image on a black canvas


def model_geometry(width: int, height: int, spec: PreprocessSpec) -> Geometry:
    """open_clip's eval transform: resize (shortest/longest/squash), then centre crop or pad."""
    size = spec.size
    if spec.resize_mode == "squash":
        return Geometry((size, size), None, None)
    if spec.resize_mode == "longest":
        scale = size / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        return Geometry((new_w, new_h), None, ((size - new_w) // 2, (size - new_h) // 2))
    # "shortest": short side to size (long side truncated, as torchvision's Resize does),
    # then a centre crop rounded the same way as torchvision's CenterCrop.
    if width <= height:
        new_w, new_h = size, max(size, int(size * height / width))
    else:
        new_w, new_h = max(size, int(size * width / height)), size
    return Geometry((new_w, new_h), (int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))), None)


def to_model_pixels(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Resize and crop an RGB image the way open_clip's eval transform does."""
    size, resample = spec.size, _RESAMPLE.get(spec.interpolation, Image.Resampling.BICUBIC)
    geometry = model_geometry(image.width, image.height, spec)
    resized = image.resize(geometry.resized, resample)
    if geometry.paste is not None:
        canvas = Image.new("RGB", (size, size), (0, 0, 0))
        canvas.paste(resized, geometry.paste)
        return np.asarray(canvas)
    if geometry.crop is not None:
        left, top = geometry.crop
        resized = resized.crop((left, top, left + size, top + size))
    return np.asarray(resized)


def prepare(path: str, spec: PreprocessSpec) -> np.ndarray:
    """One file -> model-ready uint8 pixels; raises DecodeError subclasses."""
    return to_model_pixels(decode_image(path, min_side=spec.size), spec)


def prepare_with_facts(path: str, spec: PreprocessSpec) -> tuple[np.ndarray, CaptureFacts]:
    """prepare(), and culling's capture facts gathered by the same decode."""
    probe = FactsProbe()
    pixels = to_model_pixels(decode_image(path, min_side=spec.size, probe=probe), spec)
    return pixels, probe.facts()


# --- CPU route: worker processes --------------------------------------------------------


def _prepare_chunk(tasks: Sequence[tuple[int, str]], spec: PreprocessSpec) -> list[Decoded | Failed]:
    """Worker entry point: never raises, so one bad file can't take a chunk down with it."""
    results: list[Decoded | Failed] = []
    for image_id, path in tasks:
        try:
            results.append(Decoded(image_id, *prepare_with_facts(path, spec)))
        except DecodeError as exc:
            results.append(Failed(image_id, exc.code, str(exc)))
        except Exception as exc:  # a decoder bug must not kill the run: record it
            name = os.path.basename(path)
            results.append(Failed(image_id, "internal", f"{name}: unexpected {type(exc).__name__}: {exc}"))
    return results


def default_workers(accelerated: bool = False) -> int:
    """Decode processes: one per core on a CPU (they yield to the model, see the module
    doc); with a GPU, one core is left to the process that feeds it."""
    cores = os.cpu_count() or 2
    return max(1, cores - 1) if accelerated else cores


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
        for tasks in chunks(items, chunk):
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
        return ProcessPoolExecutor(
            max_workers=self.workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),)
        )

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


def _init_worker(parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    _quiet_worker()
    _lower_priority(WORKER_NICE)


# --- dying with the parent ------------------------------------------------------------------
#
# A parent killed outright (kill -9, the OOM killer) runs no finally and no atexit, so
# nothing shuts the pool down. Its workers would wait for tasks forever: they hold the task
# queue's write end themselves, so they never see it close. And they keep the resource
# tracker alive too, which exits only once every holder of its pipe (the parent and each
# worker) is gone. So workers end themselves when their parent goes; the tracker follows.

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
ORPHAN_CHECK_SECONDS = 1.0


def _die_with_parent(parent_pid: int) -> None:
    if not _linux_kill_on_parent_death():
        threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), name="orphan-check", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the kernel was told to tell us
        os._exit(1)


def _linux_kill_on_parent_death() -> bool:
    """Ask the kernel for SIGKILL when the parent dies; False where it can't be asked.

    The kernel means the parent *thread*: a pool must not outlive the thread that started
    it (decode_stream starts and shuts down its pool in the thread that consumes it)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):  # no libc to load, or no prctl in it
        return False


def _exit_when_orphaned(parent_pid: int) -> None:
    """Elsewhere, notice it: an orphan is adopted, and its parent pid changes."""
    while os.getppid() == parent_pid:
        time.sleep(ORPHAN_CHECK_SECONDS)
    os._exit(1)


def _lower_priority(increment: int) -> None:
    """Yield the cores to the model when both want them (see the module doc)."""
    try:
        os.nice(increment)
    except (AttributeError, OSError):  # no nice() on Windows; a sandbox may refuse it
        pass


def _quiet_worker() -> None:
    """Decoders chatter: exiv2 through logging, LibRaw straight onto C stderr. A worker's
    failures come back as Failed results, so its stderr carries nothing we need."""
    import logging

    logging.getLogger("exiv2").setLevel(logging.CRITICAL)
    if not os.environ.get("AES_INDEX_DEBUG"):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)


# --- embedding --------------------------------------------------------------------------


def embed_stream(
    backbone, items: Iterable[tuple[int, str]], batch_size: int, workers: int
) -> Iterator[Batch | Failed]:
    """Pooled features for each decodable item, in batches; failures pass straight through."""
    spec = backbone.info.preprocess
    if gpu_jpeg_decoding(backbone.device):
        results = gpu_decode_stream(items, spec, backbone.device, workers)
    else:
        results = decode_stream(items, spec, workers, chunk=max(1, min(16, batch_size // 2)))
    decoded: list[Decoded] = []
    for result in results:
        if isinstance(result, Failed):
            yield result
            continue
        decoded.append(result)
        if len(decoded) == batch_size:
            yield _embed_decoded(backbone, decoded)
            decoded = []
    if decoded:
        yield _embed_decoded(backbone, decoded)


def _embed_decoded(backbone, decoded: list[Decoded]) -> Batch:
    return _embed_batch(backbone, [d.image_id for d in decoded], [d.pixels for d in decoded], [d.facts for d in decoded])


def _embed_batch(backbone, ids: list[int], pixels: list, facts: list | None = None) -> Batch:
    from ..model.heads import projected_norms

    # Round through float16 here, as the cache stores it, so that scores computed now and
    # scores recomputed later from the cache are identical.
    pooled = backbone.encode_pooled(stack_pixels(pixels)).astype(np.float16).astype(np.float32)
    return Batch(list(ids), pooled, projected_norms(pooled, backbone.projection), list(facts or [None] * len(ids)))


def stack_pixels(pixels: list):
    """One (B, S, S, 3) uint8 batch: numpy when every image came from the CPU, else a
    tensor on the GPU (CPU-decoded images join it there)."""
    if all(isinstance(p, np.ndarray) for p in pixels):
        return np.stack(pixels)
    import torch

    device = next(p.device for p in pixels if not isinstance(p, np.ndarray))
    return torch.stack([torch.from_numpy(np.require(p, requirements="W")).to(device) if isinstance(p, np.ndarray) else p
                        for p in pixels])


def chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --- GPU route: JPEGs decoded by nvJPEG ---------------------------------------------------

GPU_DECODE_GROUP = 16  # JPEGs per nvJPEG call: 16 decoded 24 MP images take ~1.2 GB


def gpu_jpeg_decoding(device) -> bool:
    """JPEGs go to the GPU when the model runs on CUDA and torchvision can decode there."""
    return getattr(device, "type", str(device)) == "cuda" and _torchvision_decode_jpeg() is not None


def _torchvision_decode_jpeg():
    try:
        from torchvision.io import decode_jpeg
    except Exception:  # no torchvision, or one built for another torch: the CPU route works
        return None
    return decode_jpeg


@dataclass
class GpuJpeg:
    """A file the GPU route takes: its bytes and the orientation the CPU route would apply."""

    image_id: int
    path: str
    data: bytearray
    orientation: int | None
    probe: FactsProbe = field(default_factory=FactsProbe)  # the header's facts; pixels' ones are added on the GPU


def read_for_gpu(image_id: int, path: str, max_pixels: int = MAX_PIXELS) -> GpuJpeg | None:
    """The file's bytes if nvJPEG can decode it into what the CPU route would produce;
    None sends it to the CPU route (which also reports any error properly).

    GPU: baseline 8-bit RGB or greyscale JPEG within the pixel limit. CPU: RAW names (their
    previews need Exiv2), other formats, CMYK/YCCK, progressive (nvJPEG's hardware
    decoder takes baseline only), anything Pillow can't parse the header of.
    """
    if os.path.splitext(path)[1].lower() in RAW_EXTENSIONS:
        return None
    try:
        data = _read_bytes(path)
        if not data.startswith(b"\xff\xd8\xff"):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=("JPEG", "MPO")) as image:  # header only
                width, height = image.size
                if image.mode not in ("RGB", "L") or width * height > max_pixels:
                    return None
                if image.info.get("progressive") or image.info.get("progression"):
                    return None
                orientation = _embedded_orientation(image)  # the rule decode.py applies
                probe = FactsProbe()
                probe.header(image)
    except Exception:
        return None
    return GpuJpeg(image_id, path, data, orientation, probe)


def _read_bytes(path: str) -> bytearray:
    """Into a writable buffer: torch.frombuffer then shares it without a copy or a warning."""
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        data = bytearray(size)
        stream.readinto(data)
    return data


def draft_scale(width: int, height: int, min_side: int) -> int:
    """The DCT scale Pillow's JPEG draft mode picks for decode.py's square request."""
    fits = min(width // min_side, height // min_side)
    for scale in (8, 4, 2):
        if fits >= scale:
            return scale
    return 1


def jpeg_to_model_pixels(chw, orientation: int | None, spec: PreprocessSpec, probe: FactsProbe | None = None):
    """A fully decoded JPEG (3, H, W) uint8 tensor -> (S, S, 3) uint8 model input, on its device.

    Follows the CPU route step by step: libjpeg's 1/s DCT scaling (a block average; exact
    at 1/8, close at 1/4 and 1/2), decode.py's integer box reduction, the EXIF orientation,
    then open_clip's resize (Pillow-style antialiased bicubic) and centre crop. A probe
    measures the draft-scale and the reduced image as decode.py's route does.

    One difference is left on purpose: libjpeg scales a subsampled chroma channel's DCT by
    the same 1/s, so the CPU route's chroma ends up at 1/s of its stored resolution (half the
    luma's across with 4:2:2), while this route averages the chroma decoded at its stored
    resolution, closer to a full decode. Luma agrees within a level or two; chroma as far as
    the photo's colour edges make it (tests/test_pipeline_perf.py, the measured bounds).
    """
    import torch
    import torch.nn.functional as F

    x = chw.unsqueeze(0).float()
    scale = draft_scale(x.shape[-1], x.shape[-2], max(spec.size, DRAFT_MIN_SIDE))
    if scale > 1:
        x = F.avg_pool2d(x, scale, ceil_mode=True).round()
    if probe is not None:
        probe.detail(_as_pil(x))
    factor = min(x.shape[-2:]) // spec.size
    if factor >= 2:
        x = F.avg_pool2d(x, factor, ceil_mode=True).round()
    x = upright_tensor(x, orientation)
    if probe is not None:
        probe.final(_as_pil(x))
    geometry = model_geometry(x.shape[-1], x.shape[-2], spec)
    x = _resize_tensor(x, geometry.resized, spec.interpolation).round().clamp(0, 255)
    size = spec.size
    if geometry.paste is not None:
        canvas = torch.zeros((1, 3, size, size), dtype=x.dtype, device=x.device)
        left, top = geometry.paste
        canvas[..., top : top + x.shape[-2], left : left + x.shape[-1]] = x
        x = canvas
    elif geometry.crop is not None:
        left, top = geometry.crop
        x = x[..., top : top + size, left : left + size]
    return x[0].permute(1, 2, 0).to(torch.uint8).contiguous()


def _as_pil(x) -> Image.Image:
    """A (1, 3, H, W) float tensor of 0..255 values -> a PIL image on the host (a few
    hundred kilobytes at draft scale: the facts are measured on the CPU, as decode.py's)."""
    return Image.fromarray(x[0].permute(1, 2, 0).clamp(0, 255).to("cpu").numpy().astype(np.uint8))


def _resize_tensor(x, size: tuple[int, int], interpolation: str):
    import torch.nn.functional as F

    width, height = size
    if (x.shape[-1], x.shape[-2]) == (width, height):
        return x
    if interpolation == "nearest":
        return F.interpolate(x, size=(height, width), mode="nearest-exact")
    mode = "bilinear" if interpolation == "bilinear" else "bicubic"
    return F.interpolate(x, size=(height, width), mode=mode, antialias=True, align_corners=False)


def upright_tensor(x, orientation: int | None):
    """EXIF orientation on an (N, C, H, W) tensor, as decode.py's Pillow transposes do."""
    import torch

    if orientation == 2:
        return x.flip(-1)
    if orientation == 3:
        return x.flip(-1, -2)
    if orientation == 4:
        return x.flip(-2)
    if orientation == 5:
        return x.transpose(-1, -2)
    if orientation == 6:
        return torch.rot90(x, -1, dims=(-2, -1))
    if orientation == 7:
        return x.transpose(-1, -2).flip(-1, -2)
    if orientation == 8:
        return torch.rot90(x, 1, dims=(-2, -1))
    return x


def decode_jpegs(jpegs: list[GpuJpeg], spec: PreprocessSpec, device) -> tuple[list[Decoded], list[GpuJpeg]]:
    """-> (decoded, refused). One nvJPEG call for the group; if it fails, one call per file,
    and the files it still refuses go back to the CPU route."""
    import torch

    decode_jpeg = _torchvision_decode_jpeg()
    tensors = [torch.frombuffer(j.data, dtype=torch.uint8) for j in jpegs]
    try:
        images = _quietly(decode_jpeg, tensors, device)
    except RuntimeError:
        images = [_decode_one(decode_jpeg, t, device) for t in tensors]
    decoded, refused = [], []
    for jpeg, image in zip(jpegs, images):
        if image is None:
            refused.append(jpeg)
        else:
            pixels = jpeg_to_model_pixels(image, jpeg.orientation, spec, jpeg.probe)
            decoded.append(Decoded(jpeg.image_id, pixels, jpeg.probe.facts()))
    return decoded, refused


def _decode_one(decode_jpeg, tensor, device):
    try:
        return _quietly(decode_jpeg, [tensor], device)[0]
    except RuntimeError:  # nvJPEG's errors (and CUDA out of memory) arrive as RuntimeError
        return None


def _quietly(decode_jpeg, tensors, device):
    from torchvision.io import ImageReadMode

    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders for TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)


def gpu_decode_stream(
    items: Iterable[tuple[int, str]], spec: PreprocessSpec, device, workers: int, readers: int = 4, ahead: int = 64
) -> Iterator[Decoded | Failed]:
    """Decode JPEGs on `device` and everything else in CPU workers, at the same time.

    Threads read files and sort them (header only); JPEGs are decoded in groups on the
    device; the rest, and whatever nvJPEG refuses, go to `decode_stream` running in a
    background thread. Results come in no particular order. At most `ahead` files are
    read ahead, so host memory holds a bounded number of compressed files.
    """
    to_cpu: queue.SimpleQueue = queue.SimpleQueue()
    cpu_results = _Background(decode_stream(_drain(to_cpu), spec, workers, chunk=4))
    pending: deque[Future] = deque()
    group: list[GpuJpeg] = []
    try:
        with ThreadPoolExecutor(readers) as pool:
            for image_id, path in items:
                pending.append(pool.submit(_read_or_route, image_id, path))
                if len(pending) >= ahead:
                    yield from _sort_one(pending.popleft(), group, to_cpu, spec, device)
                    yield from cpu_results.ready()
            while pending:
                yield from _sort_one(pending.popleft(), group, to_cpu, spec, device)
        if group:
            yield from _decode_group(group, to_cpu, spec, device)
        to_cpu.put(None)
        yield from cpu_results.rest()
    finally:
        to_cpu.put(None)
        cpu_results.stop()


def _read_or_route(image_id: int, path: str) -> GpuJpeg | tuple[int, str]:
    return read_for_gpu(image_id, path) or (image_id, path)


def _sort_one(future: Future, group: list, to_cpu, spec, device) -> Iterator[Decoded]:
    """Route one read file: to the GPU group (decoding it when full) or to the CPU queue."""
    routed = future.result()
    if isinstance(routed, GpuJpeg):
        group.append(routed)
        if len(group) >= GPU_DECODE_GROUP:
            yield from _decode_group(group, to_cpu, spec, device)
    else:
        to_cpu.put(routed)


def _decode_group(group: list[GpuJpeg], to_cpu, spec, device) -> Iterator[Decoded]:
    decoded, refused = decode_jpegs(group, spec, device)
    for jpeg in refused:
        to_cpu.put((jpeg.image_id, jpeg.path))
    group.clear()
    yield from decoded


def _drain(source: queue.SimpleQueue) -> Iterator:
    while (item := source.get()) is not None:
        yield item


class _Background:
    """Run an iterator in a thread; take its results when ready, or all of them at the end."""

    _DONE = object()

    def __init__(self, iterator: Iterator):
        self.results: queue.Queue = queue.Queue(maxsize=256)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(iterator,), daemon=True)
        self.thread.start()

    def _run(self, iterator: Iterator) -> None:
        try:
            for result in iterator:
                self._put(result)
        except BaseException as exc:  # re-raised in the consuming thread
            self._put(exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            self._put(self._DONE)

    def _put(self, item) -> None:
        while not self.stopping.is_set():
            try:
                self.results.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def ready(self) -> Iterator:
        while True:
            try:
                item = self.results.get_nowait()
            except queue.Empty:
                return
            if item is self._DONE:
                self.results.put(item)  # leave the marker for rest()
                return
            yield self._unwrap(item)

    def rest(self) -> Iterator:
        while (item := self.results.get()) is not self._DONE:
            yield self._unwrap(item)

    def _unwrap(self, item):
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)
