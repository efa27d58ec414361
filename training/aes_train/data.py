"""Labelled examples: AVA rows joined with their cached embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aes_index.model.heads import prepare_features

from .ava import AvaTable, Split, histograms, mean_scores
from .cache import EmbeddingCache
from .errors import NotEnoughData


@dataclass
class Examples:
    ids: np.ndarray  # (N,) int64
    pooled: np.ndarray  # (N, D) float32: the cached float16 vectors
    proj_norms: np.ndarray  # (N,) float32
    counts: np.ndarray  # (N, 10) vote counts

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def means(self) -> np.ndarray:
        return mean_scores(self.counts)

    @property
    def histograms(self) -> np.ndarray:
        return histograms(self.counts)

    def subset(self, mask: np.ndarray) -> "Examples":
        return Examples(self.ids[mask], self.pooled[mask], self.proj_norms[mask], self.counts[mask])

    def features(self, projection: np.ndarray | None, space: str) -> np.ndarray:
        """Dense float32 features in the space a head reads (see aes_index.model.heads)."""
        return prepare_features(self.pooled, projection, space)


def load_examples(table: AvaTable, cache: EmbeddingCache) -> Examples:
    """The AVA rows whose image is in the cache, in id order."""
    embeddings = cache.load()
    row_of = {int(image_id): row for row, image_id in enumerate(table.image_ids)}
    keep = np.fromiter((i in row_of for i in embeddings.ids.tolist()), dtype=bool, count=len(embeddings.ids))
    ids = embeddings.ids[keep]
    if len(ids) == 0:
        raise NotEnoughData(f"none of the {len(table)} AVA rows has an embedding in {cache.folder}; run `aes-train embed` first")
    rows = np.fromiter((row_of[i] for i in ids.tolist()), dtype=np.int64, count=len(ids))
    return Examples(ids, embeddings.pooled[keep].astype(np.float32), embeddings.proj_norms[keep], table.counts[rows])


def describe_data(table: AvaTable, cache: EmbeddingCache, examples: Examples) -> dict:
    """What a head was trained on, for its metadata and model card."""
    failed = set(cache.failed) & set(table.image_ids.tolist())
    return {
        "dataset": "AVA",
        "ava_txt": table.source.get("name"),
        "ava_sha256": table.source.get("sha256"),
        "ava_rows": len(table),
        "embedded": len(examples),
        "failed_to_decode": len(failed),
        "not_embedded": len(table) - len(examples) - len(failed),
        "cache": cache.folder.name,  # the name only: a shipped head shouldn't carry home paths
        "preprocess": cache.info.preprocess.describe(),
    }


def describe_split(split: Split) -> dict:
    return dict(split.description)
