"""The indexing stages and the operations built from them (rebuild, rescore, score files).

Each stage is one small function over the index; `rebuild` and the watcher run the same
stages in the same order:

    scan            discover files, compare with the index: new / changed / moved / missing
    select_work     which images need decoding for this backbone
    embed_and_score decode (workers) -> embed (batches) -> score -> store, a batch per transaction
    score_stale     score cached embeddings whose score is absent or has other provenance

The model is loaded only when something must be decoded or a zero-shot head built: a
no-op rebuild and a rescore with a cached head never touch torch's model code.
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from . import store
from .backbone import BackboneInfo, PreprocessSpec, backbone_key, load_backbone, resolve_model_name
from .config import Settings
from .errors import DecodeError
from .heads import Head, check_compatible, resolve_head
from .library import FileEntry, discover, fingerprint, printable
from .pipeline import Batch, Failed, default_workers, embed_stream
from .store import ERROR, MISSING, NEW, OK, Index

log = logging.getLogger(__name__)


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
    image_ids: list[int] = field(default_factory=list)  # every image seen in this scan


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
    seconds: float = 0.0
    images_per_second: float = 0.0
    head: str | None = None
    backbone: str | None = None
    status: str = "done"

    def as_dict(self) -> dict:
        return asdict(self)


# --- the backbone, resolved lazily -------------------------------------------------------


class BackboneSession:
    """The backbone for a run: its index row always, the model only if needed."""

    def __init__(self, index: Index, settings: Settings):
        self.index = index
        self.settings = settings
        self.key = backbone_key(resolve_model_name(settings.model), settings.pretrained)
        row = index.backbone(self.key)
        self.id: int | None = row["id"] if row else None
        self._info = BackboneInfo.from_json(row["preprocess"]) if row else None

    @functools.cached_property
    def model(self):
        backbone = load_backbone(
            self.settings.model, self.settings.pretrained, self.settings.device, self.settings.dtype, self.settings.cache_dir
        )
        if self.id is None:
            self.id = self.index.ensure_backbone(backbone.info, backbone.projection)
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
        return self.index.projection(self.ensure_row())

    def head(self) -> Head:
        head = resolve_head(self.settings.head, self.key, lambda: self.model)
        check_compatible(head, self.key, self.info.pooled_dim, self.info.embed_dim)
        return head


# --- stages ------------------------------------------------------------------------------


def scan(index: Index, roots: Sequence[str], exclude: Sequence[str] = (), progress: Progress = Progress()) -> ScanResult:
    """Walk `roots` and bring the images table up to date. Decodes nothing."""
    result = ScanResult()
    seen: set[str] = set()
    arrivals: list[FileEntry] = []
    progress.start("scan")
    with index.transaction():
        known = index.known_files()  # read under the write lock: no other writer can race us
        for entry in discover(roots, exclude, on_error=lambda path, exc: _scan_error(path, exc, result)):
            if entry.path in seen:
                continue  # overlapping roots (a folder and a file in it) yield a file twice
            seen.add(entry.path)
            result.files += 1
            progress.advance()
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
    progress.finish()
    return result


def _scan_error(path: str, exc: OSError, result: ScanResult) -> None:
    result.errors += 1
    log.warning("cannot read %s: %s", printable(path), exc.strerror or exc)


def _known_under(known: dict[str, store.KnownFile], roots: Sequence[str]) -> dict[str, store.KnownFile]:
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


def _refresh(index: Index, previous: store.KnownFile, entry: FileEntry, result: ScanResult) -> None:
    """A known path whose size or mtime changed (or that came back): same pixels or new?"""
    result.image_ids.append(previous.id)
    try:
        print_ = fingerprint(entry.path, entry.size)
    except OSError as exc:
        index.record_error(previous.id, "unreadable", f"{os.path.basename(entry.path)}: {exc.strerror or exc}")
        result.errors += 1
        return
    if print_ == previous.fingerprint:
        result.touched += 1
        status = previous.status if previous.status != MISSING else (OK if _has_embedding(index, previous.id) else NEW)
        index.update_image(previous.id, size=entry.size, mtime_ns=entry.mtime_ns, status=status)
        return
    result.changed += 1
    index.forget_derived(previous.id)
    index.update_image(
        previous.id, size=entry.size, mtime_ns=entry.mtime_ns, fingerprint=print_, status=NEW, error_code=None, error=None
    )


def _has_embedding(index: Index, image_id: int) -> bool:
    return index.db.execute("SELECT 1 FROM embeddings WHERE image_id = ? LIMIT 1", [image_id]).fetchone() is not None


def _place_arrivals(index: Index, arrivals: list[FileEntry], gone: list[store.KnownFile], result: ScanResult) -> None:
    """New paths: a moved file takes over its old row (and embedding), a copy shares its
    embedding, anything else is a new image. Rows left over are marked missing."""
    vanished: dict[str, list[int]] = {}
    for known in gone:
        vanished.setdefault(known.fingerprint, []).append(known.id)
    for entry in arrivals:
        try:
            print_ = fingerprint(entry.path, entry.size)
        except OSError as exc:
            image_id = index.add_image(entry.path, entry.size, entry.mtime_ns, None)
            index.record_error(image_id, "unreadable", f"{os.path.basename(entry.path)}: {exc.strerror or exc}")
            result.errors += 1
            continue
        candidates = vanished.get(print_) or _missing_with(index, print_)
        if candidates:
            image_id = candidates.pop(0)
            status = OK if _has_embedding(index, image_id) else NEW
            index.update_image(image_id, path=entry.path, size=entry.size, mtime_ns=entry.mtime_ns, status=status)
            result.moved += 1
        else:
            image_id = index.add_image(entry.path, entry.size, entry.mtime_ns, print_)
            result.new += 1
            twin = _indexed_twin(index, print_, image_id)
            if twin is not None and index.copy_embeddings(twin, image_id):
                index.update_image(image_id, status=OK)
                result.duplicates += 1
        result.image_ids.append(image_id)
    still_gone = [image_id for ids in vanished.values() for image_id in ids]  # not claimed by a move
    index.mark_missing(still_gone)
    result.missing += len(still_gone)


def _missing_with(index: Index, print_: str) -> list[int]:
    """Rows marked missing in an earlier run with this fingerprint: a file moved back in."""
    return [row["id"] for row in index.images_with_fingerprint(print_) if row["status"] == MISSING]


def _indexed_twin(index: Index, print_: str, exclude_id: int) -> int | None:
    for row in index.images_with_fingerprint(print_):
        if row["id"] != exclude_id and row["status"] == OK:
            return row["id"]
    return None


def select_work(index: Index, backbone_id: int | None, image_ids: Iterable[int] | None = None, force: bool = False) -> list[tuple[int, str]]:
    """(image_id, path) of images to decode: new, or lacking this backbone's embedding.

    Images that failed to decode are not retried until the file changes (or --force).
    """
    embedded = index.ids_with_embedding(backbone_id) if backbone_id is not None and not force else set()
    statuses = (NEW, OK, ERROR) if force else (NEW, OK)
    wanted = None if image_ids is None else set(image_ids)
    marks = ",".join("?" * len(statuses))
    rows = index.db.execute(f"SELECT id, path FROM images WHERE status IN ({marks}) ORDER BY path", list(statuses))
    return [(i, p) for i, p in rows if i not in embedded and (wanted is None or i in wanted)]


def embed_and_score(
    index: Index, session: BackboneSession, head: Head, work: list[tuple[int, str]], settings: Settings,
    progress: Progress = Progress(), stop: Callable[[], bool] = lambda: False,
) -> tuple[int, int, int]:
    """Decode, embed and score `work`; each batch is committed whole. -> (decoded, scored, errors)."""
    if not work:
        return 0, 0, 0
    backbone = session.model
    backbone_id = session.ensure_row()
    preprocess = backbone.info.preprocess.describe()
    batch_size = settings.batch_size or (256 if backbone.device.type == "cuda" else 32)
    workers = default_workers(backbone.device.type != "cpu") if settings.workers < 0 else settings.workers
    decoded = scored = errors = 0
    progress.start("embed", len(work))
    for item in embed_stream(backbone, work, batch_size, workers):
        with index.transaction():
            if isinstance(item, Failed):
                index.record_error(item.image_id, item.code, item.message)
                errors += 1
                count = 1
            else:
                _store_batch(index, backbone_id, head, preprocess, backbone.projection, item)
                scored += len(item.image_ids)
                count = len(item.image_ids)
                if log.isEnabledFor(logging.DEBUG):
                    paths = dict(work)
                    for image_id in item.image_ids:
                        log.debug("embedded %s", paths[image_id])
        decoded += count
        progress.advance(count)
        if stop():
            break
    progress.finish()
    return decoded, scored, errors


def _store_batch(index: Index, backbone_id: int, head: Head, preprocess: str, projection, batch: Batch) -> None:
    index.put_embeddings(backbone_id, batch.image_ids, batch.pooled, batch.proj_norms)
    index.put_scores(head, backbone_id, preprocess, batch.image_ids, head.predict(batch.pooled, projection, batch.proj_norms))
    index.db.conn.executemany(
        "UPDATE images SET status = ?, error_code = NULL, error = NULL, updated = ? WHERE id = ?",
        [(OK, store.utcnow(), i) for i in batch.image_ids],
    )


def score_stale(index: Index, session: BackboneSession, head: Head, image_ids: Sequence[int] | None = None) -> int:
    """Score cached embeddings lacking a current score for `head`: no decoding at all."""
    backbone_id = session.ensure_row()
    if image_ids is None and not index.has_scores(head):
        stale = None  # a head that has scored nothing (the usual rescore): every embedding, one scan
    else:
        stale = index.ids_needing_score(head, backbone_id)
        if image_ids is not None:
            wanted = set(image_ids)
            stale = [i for i in stale if i in wanted]
        if not stale:
            return 0
    projection = session.projection
    preprocess = session.info.preprocess.describe()
    count = 0
    for ids, matrix, norms in index.iter_embeddings(backbone_id, stale):
        prediction = head.predict(matrix, projection, None if np.isnan(norms).any() else norms)
        with index.transaction():
            index.put_scores(head, backbone_id, preprocess, ids, prediction)
        count += len(ids)
    return count


# --- operations --------------------------------------------------------------------------


def rebuild(
    index: Index, roots: Sequence[str], settings: Settings, force: bool = False,
    progress: Progress = Progress(), stop: Callable[[], bool] = lambda: False,
) -> RunSummary:
    """Scan the roots, then embed and score what is new or stale (`force`: everything)."""
    roots = [os.path.abspath(r) for r in roots] or index.roots()
    index.add_roots(roots)
    run_id = index.start_run("rebuild", roots, _settings_record(settings))
    summary = RunSummary(run_id, "rebuild")
    started = time.monotonic()
    try:
        scanned = scan(index, roots, settings.exclude, progress)
        session = BackboneSession(index, settings)
        work = select_work(index, session.id, scanned.image_ids, force)
        head = session.head()
        index.record_head(head)
        decoded, scored, errors = embed_and_score(index, session, head, work, settings, progress, stop)
        if session.id is not None:
            scored += score_stale(index, session, head, scanned.image_ids)
        summary = _summarise(summary, scanned, decoded, scored, errors, head, session.key)
    except KeyboardInterrupt:
        summary.status = "interrupted"
        raise
    finally:
        _finish(index, summary, started)
    return summary


def rescore(index: Index, settings: Settings, progress: Progress = Progress()) -> RunSummary:
    """Score every cached embedding with the configured head: no decoding."""
    run_id = index.start_run("rescore", index.roots(), _settings_record(settings))
    summary = RunSummary(run_id, "rescore")
    started = time.monotonic()
    try:
        session = BackboneSession(index, settings)
        if session.id is None:
            raise _no_embeddings(index, session.key)
        head = session.head()
        index.record_head(head)
        progress.start("rescore")
        summary.scored = score_stale(index, session, head)
        progress.finish()
        summary.head, summary.backbone = head.name, session.key
        summary.files = index.embedding_count(session.id)
        summary.skipped = summary.files - summary.scored
    except KeyboardInterrupt:
        summary.status = "interrupted"
        raise
    finally:
        _finish(index, summary, started)
    return summary


def _no_embeddings(index: Index, key: str):
    from .errors import IndexUnavailable

    known = ", ".join(row["key"] for row in index.backbones()) or "none"
    return IndexUnavailable(f"the index has no embeddings from {key} (it has: {known}); run `aes-index rebuild` first")


def _summarise(summary: RunSummary, scanned: ScanResult, decoded: int, scored: int, errors: int, head: Head, key: str) -> RunSummary:
    summary.files = scanned.files
    summary.decoded = decoded
    summary.scored = scored
    summary.skipped = scanned.files - decoded
    summary.errors = errors + scanned.errors
    summary.new, summary.changed, summary.moved, summary.missing = scanned.new, scanned.changed, scanned.moved, scanned.missing
    summary.head, summary.backbone = head.name, key
    return summary


def _finish(index: Index, summary: RunSummary, started: float) -> None:
    summary.seconds = round(time.monotonic() - started, 3)
    summary.images_per_second = round(summary.decoded / summary.seconds, 2) if summary.seconds > 0 and summary.decoded else 0.0
    if summary.status == "done" and summary.head is None and summary.command == "rebuild":
        summary.status = "failed"
    index.finish_run(summary.run_id, summary.status, summary.as_dict(), summary.head, summary.backbone)


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


def score_files(index: Index, paths: Sequence[str], settings: Settings, progress: Progress = Progress()) -> list[FileScore]:
    """Score particular files through the index: cached when unchanged, decoded otherwise."""
    paths = [os.path.abspath(p) for p in paths]
    scanned = scan(index, paths, settings.exclude, progress)
    session = BackboneSession(index, settings)
    head = session.head()
    index.record_head(head)
    work = select_work(index, session.id, scanned.image_ids)
    embed_and_score(index, session, head, work, settings, progress)
    score_stale(index, session, head, scanned.image_ids)
    decoded_ids = {i for i, _ in work}
    return [_file_score(index, path, head, decoded_ids) for path in paths]


def _file_score(index: Index, path: str, head: Head, decoded_ids: set[int]) -> FileScore:
    row = index.image_by_path(path)
    if row is None:
        reason = "not a supported photo file" if os.path.isfile(path) else "no such file"
        return FileScore(path, None, status=ERROR, error=f"{os.path.basename(path)}: {reason}")
    if row["status"] == ERROR:
        return FileScore(path, None, status=ERROR, error=row["error"])
    score = index.db.execute("SELECT score, std FROM scores WHERE image_id = ? AND head_id = ?", [row["id"], head.name]).fetchone()
    if score is None:
        return FileScore(path, None, status=row["status"], error="not scored")
    return FileScore(path, score[0], score[1], cached=row["id"] not in decoded_ids)
