"""The indexing stages and the operations built from them (rebuild, rescore, score files).

Each stage is one small function over the index. `run_stages` runs them, in this order,
under the writer lock, for every caller (rebuild, score, the watcher, darktable's plugin):

    scan            discover files, compare with the index: new / changed / moved / missing;
                    files modified within the stability window are still being written: left alone
    head            resolve the head and record it
    select_work     which images need decoding for this backbone
    embed_and_score decode (workers) -> embed (batches) -> score -> store, a batch per
                    transaction; a file whose size or mtime moved since the scan is not stored
    score_stale     score cached embeddings whose score is absent or has other provenance

The model is loaded only when something must be decoded or a zero-shot head built: a
no-op rebuild and a rescore with a cached head never touch torch's model code.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import functools
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from ..model.backbone import BackboneInfo, backbone_key, load_backbone, resolve_model_name
from ..config import AUTO_PRESET, DEFAULT_MODEL, DEFAULT_PRETRAINED, Settings
from ..model.presets import resolve_preset
from ..errors import ConfigError
from ..model.head_choice import resolve_head
from ..model.heads import Head, check_compatible
from ..paths import printable
from .discover import FileEntry, discover, fingerprint, skipped_in_library, stat_signature
from .locks import writer_lock
from .pipeline import Batch, Failed, chunks, decode_stream, default_workers, embed_stream
from .store import ERROR, MISSING, NEW, OK, Index
from .store.embeddings import STREAM_ABOVE
from .store.images import KnownFile

log = logging.getLogger(__name__)
# One-line notices for people (which backbone a command picked); the CLI shows them on
# stderr unless --json or --quiet, the API leaves them silent.
notices = logging.getLogger("aes_index.notice")


class Progress:
    """Progress callbacks; the CLI draws bars, the API default draws nothing."""

    def start(self, stage: str, total: int | None = None) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def finish(self) -> None: ...


@dataclass
class ScanResult:
    files: int = 0
    unchanged: int = 0
    new: int = 0
    changed: int = 0
    touched: int = 0  # mtime/size changed but the image data did not
    moved: int = 0
    duplicates: int = 0  # new files identical to an indexed one: embedding shared
    missing: int = 0
    errors: int = 0
    settling: int = 0  # modified within the stability window: still being written, left for later
    image_ids: list[int] = field(default_factory=list)  # every image seen in this scan
    settling_paths: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str, str]] = field(default_factory=list)  # (path, code, error) found, not indexable


@dataclass
class RunSummary:
    run_id: int
    command: str
    files: int = 0
    decoded: int = 0
    scored: int = 0
    skipped: int = 0
    errors: int = 0
    new: int = 0
    changed: int = 0
    moved: int = 0
    missing: int = 0
    settling: int = 0  # still being written (too recently modified, or changed while read): run again
    measured: int = 0  # photos indexed before culling existed, measured for it now (decoded, not embedded)
    seconds: float = 0.0
    images_per_second: float = 0.0
    head: str | None = None
    backbone: str | None = None
    status: str = "done"

    def as_dict(self) -> dict:
        return asdict(self)


# --- the backbone, resolved lazily -------------------------------------------------------


def choose_backbone(index: Index | None, settings: Settings) -> tuple[str, str, dict | None]:
    """(model, pretrained, the index's row or None) for a command.

    Named (--model and --pretrained, or --preset; config, environment): that one. Not
    named: the one the index holds; if it holds several (a library indexed with two
    presets), the active one, i.e. the backbone of the latest run that scored, the same run
    whose head `top` shows; the `auto` preset for a new index. Naming one half picks among
    the index's backbones with that half."""
    model, pretrained = settings.model, settings.pretrained
    if model and pretrained:
        return model, pretrained, None
    if settings.preset and not (model or pretrained):
        return _named_preset(settings)
    row = _index_backbone(index, model, pretrained)
    if row is not None:
        _announce(row["key"], "using the index's backbone %s", row["key"])
        return row["model"], row["pretrained"], row
    if not (model or pretrained):
        return _new_index_backbone(settings)
    return model or DEFAULT_MODEL, pretrained or DEFAULT_PRETRAINED, None


def _named_preset(settings: Settings) -> tuple[str, str, None]:
    preset = resolve_preset(settings.preset, settings.device)
    _announce(preset.key, "preset %s: %s (%s)", preset.name, preset.key, preset.reason)
    return preset.model, preset.pretrained, None  # the session finds its row by key


def _index_backbone(index: Index | None, model: str | None, pretrained: str | None) -> dict | None:
    """The index's backbone that fits what was named (of several, the active one); None
    when it holds none that fits. Several that still fit: the command must name one."""
    rows = [row for row in (index.embeddings.backbones() if index is not None else []) if _matches(row, model, pretrained)]
    if len(rows) > 1:
        active = index.runs.active_backbone()
        rows = [row for row in rows if row["key"] == active] or rows
    if len(rows) > 1:
        keys = ", ".join(row["key"] for row in rows)
        raise ConfigError(f"the index holds embeddings from {keys}: pass --model and --pretrained (or --preset)")
    return rows[0] if rows else None


def _new_index_backbone(settings: Settings) -> tuple[str, str, None]:
    """A new index: the best backbone this hardware affords (the `auto` preset)."""
    preset = resolve_preset(AUTO_PRESET, settings.device)
    if preset.chosen != "fast":  # fast is what a new index always got: said only when it differs
        _announce(preset.key, "new index: preset auto: %s (%s; --preset fast for ViT-B-32)", preset.key, preset.reason)
    return preset.model, preset.pretrained, None


def _announce(key: str, message: str, *args) -> None:
    if key not in _announced:
        _announced.add(key)
        notices.info(message, *args)


_announced: set[str] = set()  # say once per process, not once per batch


def _matches(row: dict, model: str | None, pretrained: str | None) -> bool:
    """Whether an index backbone fits the half that was named (by argument or by name)."""
    key_model, _, key_pretrained = row["key"].partition("/")
    model_fits = model is None or model in (row["model"], key_model)
    return model_fits and (pretrained is None or pretrained in (row["pretrained"], key_pretrained))


def loadable(model: str, pretrained: str) -> tuple[str, str]:
    """The arguments to record with a backbone: files as absolute paths, so that a later
    command run from another folder loads the same model."""
    def absolute(value: str) -> str:
        path = os.path.expanduser(value)
        return os.path.abspath(path) if os.path.isfile(path) else value

    return absolute(model), absolute(pretrained)


class BackboneSession:
    """The backbone for a run: its index row always, the model only if needed."""

    def __init__(self, index: Index, settings: Settings):
        self.index = index
        model, pretrained, row = choose_backbone(index, settings)
        self.settings = settings.replace(model=model, pretrained=pretrained)
        self.key = row["key"] if row else backbone_key(resolve_model_name(model), pretrained)
        row = row or index.embeddings.backbone(self.key)
        self.id: int | None = row["id"] if row else None
        self._info = BackboneInfo.from_json(row["preprocess"]) if row else None

    @functools.cached_property
    def model(self):
        settings = self.settings
        backbone = load_backbone(settings.model, settings.pretrained, settings.device, settings.dtype, settings.cache_dir)
        if backbone.key != self.key:  # the index's row names a weights file whose content changed since
            raise ConfigError(
                f"{settings.pretrained} no longer holds the weights the index was built with ({self.key}): "
                "pass --model and --pretrained"
            )
        if self.id is None:
            self.id = self.index.embeddings.ensure_backbone(backbone.info, backbone.projection, *loadable(settings.model, settings.pretrained))
            self._info = backbone.info
        return backbone

    def ensure_row(self) -> int:
        if self.id is None:
            self.model  # noqa: B018 - loading registers the backbone row
        return self.id

    @property
    def info(self) -> BackboneInfo:
        if self._info is None:
            self.model  # noqa: B018
        return self._info

    @property
    def projection(self) -> np.ndarray | None:
        return self.index.embeddings.projection(self.ensure_row())

    def head(self) -> Head:
        head = resolve_head(self.settings.head, self.key, lambda: self.model, self.index)
        check_compatible(head, self.key, self.info.pooled_dim, self.info.embed_dim)
        return head


# --- stages ------------------------------------------------------------------------------


def scan(
    index: Index, roots: Sequence[str], exclude: Sequence[str] = (), progress: Progress = Progress(), stable_seconds: float = 0.0,
) -> ScanResult:
    """Walk `roots` and bring the images table up to date. Decodes nothing.

    A file modified less than `stable_seconds` ago is still being written (a copy, a
    tethered shot): it is counted as settling, neither added nor marked missing, and read
    by a later run once it has settled."""
    result = ScanResult()
    seen: set[str] = set()
    arrivals: list[FileEntry] = []
    progress.start("scan")
    with index.transaction():
        known = index.images.known()  # read under the write lock: no other writer can race us
        library_roots = index.roots()
        walked = [root for root in roots if not skipped_in_library(root, library_roots, exclude)]
        for entry in discover(walked, exclude, on_error=lambda path, exc: _scan_error(path, exc, result)):
            if entry.path in seen:
                continue  # overlapping roots (a folder and a file in it) yield a file twice
            seen.add(entry.path)
            result.files += 1
            progress.advance()
            if _still_written(entry, stable_seconds):
                result.settling += 1
                result.settling_paths.append(entry.path)
                continue
            previous = known.get(entry.path)
            if previous is None:
                arrivals.append(entry)
            elif previous.size == entry.size and previous.mtime_ns == entry.mtime_ns and previous.status != MISSING:
                result.unchanged += 1
                result.image_ids.append(previous.id)
            else:
                _refresh(index, previous, entry, result)
        gone = [k for path, k in _known_under(known, roots).items() if path not in seen and k.status != MISSING]
        _place_arrivals(index, arrivals, gone, result)
        index.images.replace_scan_errors(roots, result.unreadable)  # stats and the gallery list them
    progress.finish()
    return result


FUTURE_SLACK_NS = 1_000_000_000  # mtimes further ahead than this are clock skew, not a write in progress


def _still_written(entry: FileEntry, stable_seconds: float) -> bool:
    age_ns = time.time_ns() - entry.mtime_ns
    return stable_seconds > 0 and -FUTURE_SLACK_NS < age_ns < stable_seconds * 1e9


def _scan_error(path: str, exc: OSError, result: ScanResult) -> None:
    result.errors += 1
    message = exc.strerror or str(exc)
    result.unreadable.append((path, "name-not-utf8" if exc.errno == errno.EILSEQ else "unreadable", message))
    log.warning("cannot read %s: %s", printable(path), message)


def _known_under(known: dict[str, KnownFile], roots: Sequence[str]) -> dict[str, KnownFile]:
    """Indexed paths at or below each root. Bisection over the sorted paths keeps this
    cheap when the watcher passes hundreds of single files against a 100k-photo index."""
    paths = sorted(known)
    found = {}
    for root in roots:
        root = os.path.abspath(root)
        if root in known:
            found[root] = known[root]
        prefix = root.rstrip(os.sep) + os.sep
        for path in paths[bisect.bisect_left(paths, prefix) :]:
            if not path.startswith(prefix):
                break
            found[path] = known[path]
    return found


def _refresh(index: Index, previous: KnownFile, entry: FileEntry, result: ScanResult) -> None:
    """A known path whose size or mtime changed (or that came back): same pixels or new?"""
    result.image_ids.append(previous.id)
    try:
        print_ = fingerprint(entry.path, entry.size)
    except OSError as exc:
        index.images.record_error(previous.id, "unreadable", f"{os.path.basename(entry.path)}: {exc.strerror or exc}")
        result.errors += 1
        return
    if print_ == previous.fingerprint:
        result.touched += 1
        status = previous.status if previous.status != MISSING else (OK if index.embeddings.has(previous.id) else NEW)
        index.images.update(previous.id, size=entry.size, mtime_ns=entry.mtime_ns, status=status)
        return
    result.changed += 1
    index.images.forget_derived(previous.id)
    index.images.update(
        previous.id, size=entry.size, mtime_ns=entry.mtime_ns, fingerprint=print_, status=NEW, error_code=None, error=None
    )


def _place_arrivals(index: Index, arrivals: list[FileEntry], gone: list[KnownFile], result: ScanResult) -> None:
    """New paths: a moved file takes over its old row (and embedding), a copy shares its
    embedding, anything else is a new image. Rows left over are marked missing."""
    vanished: dict[str, list[int]] = {}
    for known in gone:
        vanished.setdefault(known.fingerprint, []).append(known.id)
    for entry in arrivals:
        try:
            print_ = fingerprint(entry.path, entry.size)
        except OSError as exc:
            image_id = index.images.add(entry.path, entry.size, entry.mtime_ns, None)
            index.images.record_error(image_id, "unreadable", f"{os.path.basename(entry.path)}: {exc.strerror or exc}")
            result.errors += 1
            continue
        candidates = vanished.get(print_) or _missing_with(index, print_)
        if candidates:
            image_id = candidates.pop(0)
            status = OK if index.embeddings.has(image_id) else NEW
            old_path = index.images.get(image_id)["path"]
            index.images.update(image_id, path=entry.path, size=entry.size, mtime_ns=entry.mtime_ns, status=status)
            index.journal.follow_move(old_path, entry.path)  # undo finds what we wrote, where it went
            result.moved += 1
        else:
            image_id = index.images.add(entry.path, entry.size, entry.mtime_ns, print_)
            result.new += 1
            twin = _indexed_twin(index, print_, image_id)
            if twin is not None and index.embeddings.copy(twin, image_id):
                index.culling.copy_facts(twin, image_id)  # same bytes, same facts: not decoded again
                index.images.update(image_id, status=OK)
                result.duplicates += 1
        result.image_ids.append(image_id)
    still_gone = [image_id for ids in vanished.values() for image_id in ids]  # not claimed by a move
    index.images.mark_missing(still_gone)
    result.missing += len(still_gone)


def _missing_with(index: Index, print_: str) -> list[int]:
    """Rows marked missing in an earlier run with this fingerprint: a file moved back in."""
    return [row["id"] for row in index.images.with_fingerprint(print_) if row["status"] == MISSING]


def _indexed_twin(index: Index, print_: str, exclude_id: int) -> int | None:
    for row in index.images.with_fingerprint(print_):
        if row["id"] != exclude_id and row["status"] == OK:
            return row["id"]
    return None


def select_work(index: Index, backbone_id: int | None, image_ids: Iterable[int] | None = None, force: bool = False) -> list[tuple[int, str]]:
    """(image_id, path) of images to decode: new, or lacking this backbone's embedding.

    Images that failed to decode are not retried until the file changes (or --force).
    """
    embedded = index.embeddings.ids_with(backbone_id) if backbone_id is not None and not force else set()
    statuses = (NEW, OK, ERROR) if force else (NEW, OK)
    wanted = None if image_ids is None else set(image_ids)
    return [(i, p) for i, p in index.images.with_status(statuses) if i not in embedded and (wanted is None or i in wanted)]


@dataclass
class Embedded:
    """What embed_and_score did: read = decoded + failed; decoded = stored + unsettled."""

    read: int = 0  # files handed to the decoders
    decoded: int = 0  # of those, decoded into pixels (an empty or corrupt file is not)
    scored: int = 0
    errors: int = 0
    unsettled_paths: list[str] = field(default_factory=list)  # changed between scan and store: left new

    @property
    def unsettled(self) -> int:
        return len(self.unsettled_paths)


def embed_and_score(
    index: Index, session: BackboneSession, head: Head, work: list[tuple[int, str]], settings: Settings,
    progress: Progress = Progress(), stop: Callable[[], bool] = lambda: False,
) -> Embedded:
    """Decode, embed and score `work`; each batch is committed whole.

    Before a batch is stored, each file's size and mtime are compared with what the scan
    recorded: a file written to while we read it may have been decoded half-written, so
    its result is dropped and the image stays new."""
    done = Embedded()
    if not work:
        return done
    backbone = session.model
    backbone_id = session.ensure_row()
    preprocess = backbone.info.preprocess.describe()
    batch_size = settings.batch_size or (256 if backbone.device.type == "cuda" else 32)
    workers = default_workers(backbone.device.type != "cpu") if settings.workers < 0 else settings.workers
    paths = dict(work)
    recorded = index.images.signatures(list(paths))
    progress.start("embed", len(work))
    for item in embed_stream(backbone, work, batch_size, workers):
        ids = [item.image_id] if isinstance(item, Failed) else item.image_ids
        moved = {i for i in ids if stat_signature(paths[i]) != recorded.get(i)}
        with index.transaction():
            if isinstance(item, Failed):
                if not moved:  # a half-written file fails to decode too: no error for that
                    index.images.record_error(item.image_id, item.code, item.message)
                    done.errors += 1
            else:
                kept = _without(item, moved)
                if kept.image_ids:
                    _store_batch(index, backbone_id, head, preprocess, backbone.projection, kept)
                    done.scored += len(kept.image_ids)
                    _log_embedded(kept.image_ids, paths)
        _log_unsettled(moved, paths)
        done.unsettled_paths += [paths[i] for i in sorted(moved)]
        done.read += len(ids)
        done.decoded += 0 if isinstance(item, Failed) else len(ids)
        progress.advance(len(ids))
        if stop():
            break
    progress.finish()
    return done


def _without(batch: Batch, image_ids: set[int]) -> Batch:
    if not image_ids:
        return batch
    keep = np.array([i not in image_ids for i in batch.image_ids], dtype=bool)
    facts = [f for i, f in zip(batch.image_ids, batch.facts) if i not in image_ids]
    return Batch([i for i in batch.image_ids if i not in image_ids], batch.pooled[keep], batch.proj_norms[keep], facts)


def _log_embedded(image_ids: Sequence[int], paths: dict[int, str]) -> None:
    if log.isEnabledFor(logging.DEBUG):
        for image_id in image_ids:
            log.debug("embedded %s", paths[image_id])


def _log_unsettled(image_ids: set[int], paths: dict[int, str]) -> None:
    for image_id in sorted(image_ids):
        log.info("%s changed while it was read: not stored, read again once it has settled", printable(paths[image_id]))


def _store_batch(index: Index, backbone_id: int, head: Head, preprocess: str, projection, batch: Batch) -> None:
    index.embeddings.put(backbone_id, batch.image_ids, batch.pooled, batch.proj_norms)
    index.scores.put(head, backbone_id, preprocess, batch.image_ids, head.predict(batch.pooled, projection, batch.proj_norms))
    index.culling.put_facts(batch.image_ids, batch.facts)
    index.images.mark_ok(batch.image_ids)


def measure_facts(
    index: Index, session: BackboneSession, image_ids: Iterable[int], settings: Settings, stop: Callable[[], bool] = lambda: False,
) -> int:
    """Culling's capture facts for indexed photos that lack them (an index from before
    culling, or facts from an older measure): one decode each, no model, no embedding."""
    work = index.culling.ids_lacking_facts(image_ids)
    if not work:
        return 0
    paths = dict(work)
    recorded = index.images.signatures(list(paths))
    workers = default_workers(False) if settings.workers < 0 else settings.workers
    measured = 0
    for chunk in chunks(decode_stream(work, session.info.preprocess, workers), 64):
        done = [d for d in chunk if not isinstance(d, Failed) and stat_signature(paths[d.image_id]) == recorded.get(d.image_id)]
        with index.transaction():
            index.culling.put_facts([d.image_id for d in done], [d.facts for d in done])
        measured += len(done)
        if stop():
            break
    return measured


def score_stale(index: Index, session: BackboneSession, head: Head, image_ids: Sequence[int] | None = None) -> int:
    """Score cached embeddings lacking a current score for `head`: no decoding at all."""
    backbone_id = session.ensure_row()
    if image_ids is None and not index.scores.has(head):
        stale = None  # a head that has scored nothing (the usual rescore): every embedding, one scan
    else:
        stale = index.scores.ids_needing(head, backbone_id)
        if image_ids is not None:
            wanted = set(image_ids)
            stale = [i for i in stale if i in wanted]
        if not stale:
            return 0
    projection = session.projection
    preprocess = session.info.preprocess.describe()
    pages, from_store = _cached_embeddings(index, backbone_id, stale)
    predicted = ((ids, head.predict(matrix, projection, None if np.isnan(norms).any() else norms)) for ids, matrix, norms in pages)
    count = 0
    scored = _one_ahead(predicted) if from_store else predicted  # the index's rows are read on this thread's connection
    for group in _groups(scored, COMMIT_ROWS):
        with index.transaction():
            for ids, prediction in group:
                index.scores.put(head, backbone_id, preprocess, ids, prediction)
                count += len(ids)
    return count


# Scores committed together: each commit costs ~8 ms here (its B-tree pages written to
# the WAL again), 1 s of a million-row rescore at one commit a page of 8192.
COMMIT_ROWS = 65_536


def _groups(scored: Iterator, rows: int) -> Iterator[list]:
    """(ids, prediction) pairs gathered into lists of at least `rows` rows (the last fewer)."""
    group, held = [], 0
    for ids, prediction in scored:
        group.append((ids, prediction))
        held += len(ids)
        if held >= rows:
            yield group
            group, held = [], 0
    if group:
        yield group


def _cached_embeddings(index: Index, backbone_id: int, image_ids: Sequence[int] | None) -> tuple[Iterator, bool]:
    """A backbone's embeddings of present photos (all, or `image_ids`) in chunks of
    (ids, pooled, norms): a few from the index, many from the vector store (float32
    already, no SQLite scan), in the same chunks either way, so heads give the same
    scores. Where the store can't be written (a full disk), from the index. And whether
    they come from the store (then any thread may read them)."""
    if image_ids is not None and len(image_ids) <= STREAM_ABOVE:
        return index.embeddings.iter(backbone_id, image_ids), False
    try:
        matrix = index.vectors.matrix(backbone_id)
    except OSError as exc:
        log.warning("vector store unavailable (%s): reading the embeddings from the index", exc)
        return index.embeddings.iter(backbone_id, image_ids), False
    wanted = None if image_ids is None else np.unique(np.asarray(image_ids, dtype=np.int64))
    return matrix.pages(index.vectors.missing_ids(), wanted), True


def _one_ahead(items: Iterator) -> Iterator:
    """`items`, produced one ahead in a thread: a head's numpy work on page k+1 (which
    lets go of the GIL) runs while SQLite stores page k's scores (which does too): on 2
    cores a rescore takes the longer of the two, not their sum."""
    import queue
    import threading

    done = object()
    ready: queue.Queue = queue.Queue(maxsize=1)
    stopping = threading.Event()

    def put(item) -> None:
        while not stopping.is_set():
            try:
                ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            for item in items:
                put(item)
                if stopping.is_set():
                    return
        except BaseException as exc:  # raised again in the consuming thread
            put(exc)
        put(done)

    worker = threading.Thread(target=produce, name="aes-index-one-ahead", daemon=True)
    worker.start()
    try:
        while (item := ready.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stopping.set()
        worker.join()


def extend_vectors(index: Index, backbone_key: str) -> None:
    """After a rebuild: bring a vector store that search or rescore made up to date now
    (appending what the run embedded), so that the next of them finds it current. A
    library never searched gets none; a store that can't be written waits for its reader."""
    row = index.embeddings.backbone(backbone_key)
    if row is None or not index.vectors.exists(row["id"]):
        return
    try:
        index.vectors.matrix(row["id"])
    except OSError as exc:
        log.info("vector store not extended (%s): the next search or rescore will", exc)


# --- operations --------------------------------------------------------------------------


@dataclass
class StageResult:
    """What one pass of the stages did over some paths."""

    scanned: ScanResult
    head: Head
    backbone: str  # the backbone's key
    work: list[tuple[int, str]]  # (image id, path) given to the decoder, in order
    embedded: Embedded
    restored: int = 0  # cached embeddings scored by score_stale
    measured: int = 0  # photos indexed before culling whose capture facts were measured now

    @property
    def scored(self) -> int:
        return self.embedded.scored + self.restored

    @property
    def errors(self) -> int:
        return self.embedded.errors + self.scanned.errors

    @property
    def settling(self) -> int:
        return self.scanned.settling + self.embedded.unsettled


def run_stages(
    index: Index, paths: Sequence[str], settings: Settings, *, session: BackboneSession | None = None, force: bool = False,
    stable_seconds: float | None = None, stop: Callable[[], bool] = lambda: False, progress: Progress = Progress(),
    lock_timeout: float | None = None,
) -> StageResult:
    """scan -> head -> select_work -> embed_and_score -> score_stale over `paths`, holding
    the writer lock (waiting up to `lock_timeout` seconds; None: as long as it takes).

    Every caller that indexes files comes through here: one writer at a time means each
    photo is decoded once, since whoever comes second finds its embedding stored."""
    window = settings.stable_seconds if stable_seconds is None else stable_seconds
    session = session or BackboneSession(index, settings)  # first: a backbone we can't choose fails before any write
    with writer_lock(index.path, lock_timeout):
        scanned = scan(index, paths, settings.exclude, progress, stable_seconds=window)
        head = session.head()
        index.scores.record_head(head)
        work = select_work(index, session.id, scanned.image_ids, force)
        embedded = embed_and_score(index, session, head, work, settings, progress, stop)
        result = StageResult(scanned, head, session.key, work, embedded)
        if session.id is not None:  # no row: nothing was ever embedded with this backbone
            result.restored = score_stale(index, session, head, scanned.image_ids)
            if not stop():
                result.measured = measure_facts(index, session, scanned.image_ids, settings, stop)
    return result


def rebuild(
    index: Index, roots: Sequence[str], settings: Settings, force: bool = False,
    progress: Progress = Progress(), stop: Callable[[], bool] = lambda: False,
) -> RunSummary:
    """Scan the roots, then embed and score what is new or stale (`force`: everything)."""
    roots = [os.path.abspath(r) for r in roots] or index.roots()
    with writer_lock(index.path):  # re-entered by run_stages; while held, no other rebuild runs
        index.add_roots(roots)
        with _scoring_run(index, "rebuild", roots, settings) as summary:
            _summarise(summary, run_stages(index, roots, settings, force=force, stop=stop, progress=progress))
        extend_vectors(index, summary.backbone)
    return summary


@contextlib.contextmanager
def _scoring_run(index: Index, command: str, roots: Sequence[str], settings: Settings) -> Iterator[RunSummary]:
    """A run that scores, recorded in the index with its head and backbone (the latest such
    run names the library's active ones). The caller holds the writer lock, so runs of
    these commands still "running" were killed: they become interrupted. (The watcher's
    run lives as long as the watcher, under its own lock: not one of them.)"""
    index.runs.close_abandoned(("rebuild", "rescore", "score"))
    summary = RunSummary(index.runs.start(command, roots, _settings_record(settings)), command)
    started = time.monotonic()
    try:
        yield summary
    except KeyboardInterrupt:
        summary.status = "interrupted"
        raise
    finally:
        _finish(index, summary, started)


def rescore(index: Index, settings: Settings, progress: Progress = Progress(), lock_timeout: float | None = None) -> RunSummary:
    """Score every cached embedding with the configured head: no decoding."""
    session = BackboneSession(index, settings)
    if session.id is None:
        raise no_embeddings(index, session.key)
    run_id = index.runs.start("rescore", index.roots(), _settings_record(settings))
    summary = RunSummary(run_id, "rescore")
    started = time.monotonic()
    try:
        head = session.head()
        with writer_lock(index.path, lock_timeout):  # a rebuild storing embeddings meanwhile would be missed
            index.scores.record_head(head)
            progress.start("rescore")
            summary.scored = score_stale(index, session, head)
            progress.finish()
        summary.head, summary.backbone = head.name, session.key
        summary.files = index.embeddings.count(session.id)
        summary.skipped = summary.files - summary.scored
    except KeyboardInterrupt:
        summary.status = "interrupted"
        raise
    finally:
        _finish(index, summary, started)
    return summary


def no_embeddings(index: Index, key: str):
    from ..errors import IndexUnavailable

    known = ", ".join(row["key"] for row in index.embeddings.backbones()) or "none"
    return IndexUnavailable(f"the index has no embeddings from {key} (it has: {known}); run `aes-index rebuild` first")


def _summarise(summary: RunSummary, result: StageResult) -> RunSummary:
    scanned = result.scanned
    summary.files = scanned.files
    summary.decoded = result.embedded.decoded
    summary.scored = result.scored
    summary.settling = result.settling
    summary.measured = result.measured
    summary.skipped = scanned.files - result.embedded.read - scanned.settling  # unchanged
    summary.errors = result.errors
    summary.new, summary.changed, summary.moved, summary.missing = scanned.new, scanned.changed, scanned.moved, scanned.missing
    summary.head, summary.backbone = result.head.name, result.backbone
    return summary


def _finish(index: Index, summary: RunSummary, started: float) -> None:
    summary.seconds = round(time.monotonic() - started, 3)
    summary.images_per_second = round(summary.decoded / summary.seconds, 2) if summary.seconds > 0 and summary.decoded else 0.0
    if summary.status == "done" and summary.head is None and summary.command in ("rebuild", "score"):
        summary.status = "failed"
    index.runs.finish(summary.run_id, summary.status, summary.as_dict(), summary.head, summary.backbone)


def _settings_record(settings: Settings) -> dict:
    return {k: v for k, v in asdict(settings).items()}


@dataclass
class FileScore:
    path: str
    score: float | None
    std: float | None = None
    status: str = OK
    error: str | None = None
    cached: bool = False
    attributes: dict[str, float] = field(default_factory=dict)


def score_files(
    index: Index, paths: Sequence[str], settings: Settings, progress: Progress = Progress(), lock_timeout: float | None = None,
) -> list[FileScore]:
    """Score particular files through the index: cached when unchanged, decoded otherwise."""
    paths = [os.path.abspath(p) for p in paths]
    with writer_lock(index.path, lock_timeout), _scoring_run(index, "score", paths, settings) as summary:
        result = run_stages(index, paths, settings, progress=progress, lock_timeout=lock_timeout)
        _summarise(summary, result)
    decoded_ids = {i for i, _ in result.work}
    settling = set(result.scanned.settling_paths)
    return [_file_score(index, path, result.head, decoded_ids, path in settling) for path in paths]


def _file_score(index: Index, path: str, head: Head, decoded_ids: set[int], settling: bool) -> FileScore:
    if settling:
        return FileScore(path, None, status=NEW, error=f"{os.path.basename(path)}: still being written; try again in a moment")
    row = index.images.by_path(path)
    if row is None:
        reason = "not a supported photo file" if os.path.isfile(path) else "no such file"
        return FileScore(path, None, status=ERROR, error=f"{os.path.basename(path)}: {reason}")
    if row["status"] == ERROR:
        return FileScore(path, None, status=ERROR, error=row["error"])
    score = index.scores.of(row["id"], head.name)
    if score is None:
        error = "changed while it was read; try again in a moment" if row["status"] == NEW else "not scored"
        return FileScore(path, None, status=row["status"], error=error)
    return FileScore(path, score[0], score[1], cached=row["id"] not in decoded_ids)
