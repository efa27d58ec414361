"""`aes-train embed`: a dataset's images -> pooled embeddings in a resumable cache.

Decoding and embedding are aes_index's own (pipeline.embed_stream): the pixels a head is
trained on are made exactly as the pixels it will score in a library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterable

from aes_index.index.pipeline import Failed, embed_stream

from .cache import EmbeddingCache


@dataclass
class EmbedSummary:
    already: int = 0  # done by an earlier run (embedded or failed)
    todo: int = 0  # attempted by this run
    embedded: int = 0
    failed: int = 0
    missing: int = 0  # listed in AVA.txt, no file found
    interrupted: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def embed_dataset(
    backbone,
    items: Iterable[tuple[int, str]],
    cache: EmbeddingCache,
    batch_size: int,
    workers: int,
    limit: int | None = None,
    on_batch: Callable[[EmbedSummary], None] | None = None,
) -> EmbedSummary:
    """Embed the (id, path) items the cache doesn't hold yet; at most `limit` of them.

    Finished batches are kept even when the run is interrupted (Ctrl-C): the `finally`
    flushes them, and a rerun starts after them.
    """
    cache.bind(backbone.info, backbone.projection)
    items = sorted(items)
    done = cache.done_ids()
    todo = [(image_id, path) for image_id, path in items if image_id not in done]
    summary = EmbedSummary(already=len(items) - len(todo))
    if limit is not None:
        todo = todo[:limit]
    summary.todo = len(todo)
    try:
        for result in embed_stream(backbone, todo, batch_size, workers):
            if isinstance(result, Failed):
                cache.record_failure(result.image_id, result.code, result.message)
                summary.failed += 1
            else:
                cache.append(result.image_ids, result.pooled, result.proj_norms)
                summary.embedded += len(result.image_ids)
            if on_batch is not None:
                on_batch(summary)
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    finally:
        cache.flush()
    return summary
