"""Find photos by words ("kite on a beach at dusk") and by example ("more like this").

Both rank the library's photos by the cosine between CLIP embeddings in the backbone's
projected space: the text through the backbone's text tower (open_clip's tokenizer and
encode_text, normalised), or a photo's own embedding. Only the active backbone's
embeddings take part: a library indexed with two backbones never mixes them.

The index keeps pooled vectors x and, per backbone, the projection P and each row's
|x P|; with t normalised, cos(x P, t) = x . (P t) / |x P|. So a query is one
matrix-vector product over the vector store's float32 matrix (index/store/vectors.py),
a block at a time, with one float per photo kept. The best candidates are then scored
again in float64 from their vectors, norms included, and ranked by that: the order is
the one an exact computation gives, whatever float32's rounding did to the scan.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError, NothingScored
from ..index.runner import BackboneSession, no_embeddings
from ..index.store.vectors import member
from ..model.head_choice import scored_head_id
from ..paths import printable

log = logging.getLogger(__name__)

RANKS = ("similarity", "score")
SHORTLIST_MARGIN = 64  # candidates beyond n scored exactly: float32's ranking can only swap near-ties
MAX_TEXT_CHARS = 1000  # CLIP reads 77 tokens; a page of text is a mistake, not a query


@dataclass(frozen=True)
class Hit:
    """One photo found: its path, its cosine to the query, and the active head's score (None: not scored)."""

    path: str
    image_id: int
    similarity: float
    score: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def search(library, text: str, n: int = 20, rank: str = "similarity") -> list[Hit]:
    """The `n` photos whose embeddings best match `text`, best first.

    rank="score": the same `n` best matches, ordered by the active head's score instead
    (best first; unscored photos last)."""
    _check_n(n)
    if rank not in RANKS:
        raise ConfigError(f"rank must be one of {', '.join(RANKS)}, not {rank!r}")
    text = (text or "").strip()
    if not text:
        raise ConfigError("search needs some words to look for, e.g. aes-index search \"kite on a beach\"")
    if len(text) > MAX_TEXT_CHARS or not text.isprintable():
        raise ConfigError(f"search takes a short line of printable text (at most {MAX_TEXT_CHARS} characters)")
    session = _session(library)
    query = text_encoder(session).encode_text([text])[0].astype(np.float64)
    hits = _nearest(library, session, query, n, leave_out=())
    if rank == "score":
        hits.sort(key=lambda h: (h.score is None, -(h.score or 0.0), -h.similarity, h.image_id))
    return hits


def similar(library, photo_path: str, n: int = 20) -> list[Hit]:
    """"More like this": the `n` photos nearest to an indexed photo, nearest first (its
    near-duplicates, a resized or re-encoded copy, come first); the photo itself is left out."""
    _check_n(n)
    session = _session(library)
    image_id = _indexed_photo(library, photo_path)
    found = list(library.index.embeddings.iter(session.id, [image_id]))
    if not found:
        raise ConfigError(f"{printable(photo_path)}: has no embedding from {session.key} yet; run `aes-index rebuild` first")
    _, pooled, _ = found[0]
    projected = _project(pooled.astype(np.float64), session.projection)[0]
    query = projected / max(np.linalg.norm(projected), 1e-12)
    return _nearest(library, session, query, n, leave_out=(image_id,))


def _check_n(n: int) -> None:
    if n < 1:
        raise ConfigError(f"-n takes how many photos to list, 1 or more, not {n}")


def _session(library) -> BackboneSession:
    session = BackboneSession(library.index, library.settings)
    if session.id is None or not library.index.embeddings.any_of(session.id):
        raise no_embeddings(library.index, session.key)
    return session


def _indexed_photo(library, photo_path: str) -> int:
    path = os.path.abspath(photo_path)
    row = library.index.images.by_path(path)
    if row is None:
        reason = "not in the index; run `aes-index rebuild` on its folder first" if os.path.isfile(path) else "no such file"
        raise ConfigError(f"{printable(photo_path)}: {reason}")
    return int(row["id"])


# --- the text tower, loaded once per process ------------------------------------------------

_encoders: dict[tuple, object] = {}
_encoders_guard = threading.Lock()


def text_encoder(session: BackboneSession):
    """The session's backbone, kept for later queries (the review server asks many)."""
    settings = session.settings
    key = (session.key, settings.model, settings.pretrained, settings.device, settings.dtype, settings.cache_dir)
    with _encoders_guard:
        if key not in _encoders:
            _encoders.clear()  # one backbone at a time: each holds hundreds of MB
            _encoders[key] = session.model
        return _encoders[key]


# --- ranking ----------------------------------------------------------------------------------


def _project(pooled: np.ndarray, projection: np.ndarray | None) -> np.ndarray:
    return pooled if projection is None else pooled @ projection.astype(np.float64)


def _nearest(library, session: BackboneSession, query: np.ndarray, n: int, leave_out) -> list[Hit]:
    """The n best photos for a unit `query` in projected space, exactly ranked."""
    index = library.index
    projection = session.projection
    direction = query if projection is None else projection.astype(np.float64) @ query  # P t, in pooled space
    excluded = np.union1d(index.vectors.missing_ids(), np.asarray(leave_out, dtype=np.int64))
    ids, vectors = _shortlist(index, session.id, direction.astype(np.float32), projection, excluded, n + SHORTLIST_MARGIN)
    if not len(ids):
        return []
    projected = _project(vectors.astype(np.float64), projection)
    exact = projected @ query / np.maximum(np.linalg.norm(projected, axis=1), 1e-300)
    order = sorted(range(len(ids)), key=lambda k: (-exact[k], ids[k]))
    paths = index.vectors.present_paths(ids.tolist())
    head_id = _head_or_none(library)
    hits = []
    for k in order:
        image_id = int(ids[k])
        if image_id in paths:
            score = index.scores.of(image_id, head_id) if head_id else None
            hits.append(Hit(paths[image_id], image_id, float(exact[k]), None if score is None else float(score[0])))
        if len(hits) == n:
            break
    return hits


def _shortlist(index, backbone_id: int, direction: np.ndarray, projection, excluded: np.ndarray, k: int):
    """(ids, pooled vectors) of the k rows with the highest cosine, by a float32 scan of
    the vector store: one float per row and one block of rows held at a time."""
    blocks = _blocks(index, backbone_id)
    sims, ids, rows = [], [], []
    for block_ids, pooled, norms in blocks:
        if np.isnan(norms).any():  # an index from before norms were stored: compute them
            norms = np.where(np.isnan(norms), np.linalg.norm(_project(pooled, projection), axis=1), norms)
        # einsum, not BLAS: one core streams the block as fast as two do here, and doesn't
        # stall when the other core is busy (see heads.product)
        cosine = np.einsum("ij,j->i", pooled, direction) / np.maximum(norms, 1e-12)
        cosine[member(block_ids, excluded)] = -np.inf
        best = _top(cosine, k)
        sims.append(cosine[best])
        ids.append(np.array(block_ids[best]))
        rows.append(np.array(pooled[best]))  # copies: the block's pages leave memory
        if sum(len(s) for s in sims) > 4 * k:  # keep the running candidates few
            sims, ids, rows = _keep_best(sims, ids, rows, k)
    if not sims:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    sims, ids, rows = _keep_best(sims, ids, rows, k)
    finite = np.isfinite(sims[0])
    return ids[0][finite], rows[0][finite]


def _top(values: np.ndarray, k: int) -> np.ndarray:
    if len(values) <= k:
        return np.arange(len(values))
    return np.argpartition(-values, k - 1)[:k]


def _keep_best(sims: list, ids: list, rows: list, k: int) -> tuple[list, list, list]:
    all_sims, all_ids, all_rows = np.concatenate(sims), np.concatenate(ids), np.concatenate(rows)
    best = _top(all_sims, k)
    return [all_sims[best]], [all_ids[best]], [all_rows[best]]


def _blocks(index, backbone_id: int):
    """The vector store's blocks; where it cannot be written (a full disk), the index's
    own rows, converted a page at a time: slower, the same answer."""
    try:
        return index.vectors.matrix(backbone_id).blocks()
    except OSError as exc:
        log.warning("vector store unavailable (%s): reading the embeddings from the index", exc)
        return ((ids, pooled.astype(np.float32), norms) for ids, pooled, norms in index.embeddings.iter(backbone_id))


def _head_or_none(library) -> str | None:
    try:
        return scored_head_id(library.index, library.settings.head)
    except NothingScored:
        return None
