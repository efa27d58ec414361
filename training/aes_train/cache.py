"""A resumable on-disk cache of pooled image embeddings for a dataset.

    CACHE/
      backbone.json             BackboneInfo of the model that made the vectors
      projection.safetensors    its projection matrix (absent when the backbone has none)
      shard-000000.safetensors  ids int64 (n,), pooled float16 (n, D), proj_norms float32 (n,)
      ...
      manifest.json             the shards that are complete + images that failed to decode

A shard is written to a temporary name and renamed; only then is the manifest (also
replaced atomically) told about it. A run killed at any moment leaves a cache whose
manifest lists only whole shards, so the next run continues from there; a shard that
was renamed but never entered in the manifest is simply written over.

Vectors are float16, exactly as the aes-index database stores them, so a head trained
here sees the numbers it will see when scoring a library.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from aes_index.atomic import atomic_write_bytes
from aes_index.model.backbone import BackboneInfo

from .errors import CacheError

FORMAT = 1
DEFAULT_SHARD_ROWS = 2048


@dataclass
class Embeddings:
    ids: np.ndarray  # (N,) int64, ascending
    pooled: np.ndarray  # (N, D) float16
    proj_norms: np.ndarray  # (N,) float32


class EmbeddingCache:
    def __init__(self, folder: str | os.PathLike, shard_rows: int = DEFAULT_SHARD_ROWS):
        self.folder = Path(folder).expanduser()
        self.shard_rows = shard_rows
        self.manifest = self._read_manifest()
        self._ids: list[np.ndarray] = []
        self._pooled: list[np.ndarray] = []
        self._norms: list[np.ndarray] = []
        self._done: set[int] | None = None

    # --- identity --------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return (self.folder / "backbone.json").is_file()

    @property
    def info(self) -> BackboneInfo:
        try:
            return BackboneInfo.from_json((self.folder / "backbone.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CacheError(f"{self.folder} is not an embedding cache (no backbone.json); run `aes-train embed` first") from None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise CacheError(f"cannot read {self.folder / 'backbone.json'}: {exc}") from exc

    @property
    def projection(self) -> np.ndarray | None:
        path = self.folder / "projection.safetensors"
        if not path.is_file():
            return None
        from safetensors.numpy import load_file

        return load_file(str(path))["projection"]

    def bind(self, info: BackboneInfo, projection: np.ndarray | None) -> None:
        """Tie a new cache to a backbone, or check that an old one was made with it."""
        if self.exists:
            known = self.info
            if known.key != info.key or known.preprocess != info.preprocess:
                raise CacheError(
                    f"cache {self.folder} holds embeddings from {known.key}, not {info.key}; "
                    "use another --cache folder for another backbone"
                )
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if projection is not None:
            from safetensors.numpy import save_file

            tmp = self.folder / ".projection.tmp"
            save_file({"projection": np.ascontiguousarray(projection, np.float32)}, str(tmp))
            os.replace(tmp, self.folder / "projection.safetensors")
        # backbone.json last: its presence means the cache is bound and complete.
        atomic_write_bytes(self.folder / "backbone.json", info.as_json().encode())

    # --- progress ----------------------------------------------------------------------

    @property
    def failed(self) -> dict[int, dict]:
        return {int(k): v for k, v in self.manifest["failed"].items()}

    def done_ids(self) -> set[int]:
        """Ids embedded or recorded as failed: a rerun skips them."""
        if self._done is None:
            done: set[int] = set(self.failed)
            for shard in self.manifest["shards"]:
                done.update(self._read_shard(shard["file"], ("ids",))["ids"].tolist())
            done.update(int(i) for chunk in self._ids for i in chunk)
            self._done = done
        return self._done

    def forget_failures(self) -> int:
        """Let the next run try the failed images again (e.g. after re-downloading them)."""
        count = len(self.manifest["failed"])
        self.manifest["failed"] = {}
        self._write_manifest()
        self._done = None
        return count

    # --- writing -----------------------------------------------------------------------

    def append(self, ids: Sequence[int], pooled: np.ndarray, proj_norms: np.ndarray) -> None:
        self._ids.append(np.asarray(ids, dtype=np.int64))
        self._pooled.append(np.asarray(pooled, dtype=np.float16))
        self._norms.append(np.asarray(proj_norms, dtype=np.float32))
        if self._done is not None:
            self._done.update(int(i) for i in ids)
        if sum(len(chunk) for chunk in self._ids) >= self.shard_rows:
            self.flush()

    def record_failure(self, image_id: int, code: str, message: str) -> None:
        self.manifest["failed"][str(int(image_id))] = {"code": code, "message": message}
        if self._done is not None:
            self._done.add(int(image_id))

    def flush(self) -> None:
        """Make everything appended so far durable: one new shard, then the manifest."""
        if self._ids:
            from safetensors.numpy import save_file

            name = f"shard-{len(self.manifest['shards']):06d}.safetensors"
            tensors = {
                "ids": np.concatenate(self._ids),
                "pooled": np.ascontiguousarray(np.concatenate(self._pooled)),
                "proj_norms": np.concatenate(self._norms),
            }
            tmp = self.folder / f".{name}.tmp"
            save_file(tensors, str(tmp))
            os.replace(tmp, self.folder / name)
            self.manifest["shards"].append({"file": name, "rows": int(len(tensors["ids"]))})
            self._ids, self._pooled, self._norms = [], [], []
        self._write_manifest()

    # --- reading -----------------------------------------------------------------------

    def load(self) -> Embeddings:
        """Every cached embedding, sorted by id (later shards win over repeated ids)."""
        shards = [self._read_shard(s["file"], ("ids", "pooled", "proj_norms")) for s in self.manifest["shards"]]
        if not shards:
            dim = self.info.pooled_dim
            return Embeddings(np.zeros(0, np.int64), np.zeros((0, dim), np.float16), np.zeros(0, np.float32))
        ids = np.concatenate([s["ids"] for s in shards])
        pooled = np.concatenate([s["pooled"] for s in shards])
        norms = np.concatenate([s["proj_norms"] for s in shards])
        # np.unique keeps the first of equal ids; reversed, so the newest copy wins
        _, last = np.unique(ids[::-1], return_index=True)
        order = len(ids) - 1 - last
        return Embeddings(ids[order], pooled[order], norms[order])

    def _read_shard(self, name: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(self.folder / name), framework="numpy") as handle:
                return {key: handle.get_tensor(key) for key in keys}
        except (SafetensorError, OSError) as exc:
            raise CacheError(f"cache shard {self.folder / name} is unreadable ({exc}); delete the cache folder and embed again") from exc

    def _read_manifest(self) -> dict:
        path = self.folder / "manifest.json"
        if not path.is_file():
            return {"format": FORMAT, "shards": [], "failed": {}}
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CacheError(f"cannot read {path}: {exc}") from exc
        if manifest.get("format", 0) > FORMAT:
            raise CacheError(f"{path} was written by a newer aes-train (format {manifest['format']})")
        return manifest

    def _write_manifest(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.manifest["rows"] = sum(s["rows"] for s in self.manifest["shards"])
        atomic_write_bytes(self.folder / "manifest.json", json.dumps(self.manifest, indent=1).encode())
