"""Persistent embedding cache shared by every version and experiment of a workspace.

Keys are ``(model id, revision, normalization[, quantization], sha256 of the text embedded)``:
one SQLite file per embedder identity (:attr:`indexers.embedders.EmbedderInfo.cache_key`;
a bf16/int8 backend's vectors never land in the fp32 file) under ``<cache>/embeddings/<cache_key>.sqlite``,
one row per text hash. A key never depends on a batch, a position or a config string, so a
changed document only misses for its own changed chunks.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ragline.core.hashing import sha256_text
from ragline.indexers.embedders import Embedder, EmbedderInfo, info_of


def text_sha256(text: str) -> str:
    """sha256 (hex) of the UTF-8 bytes of a text: the per-text part of a cache key."""
    return sha256_text(text)


class EmbeddingCache:
    """SQLite-backed map text-sha256 -> float32 vector for one embedder identity.

    Args:
        root: cache folder (``paths.cache`` in params).
        info: the embedder identity; vectors of another identity live in another file.
    """

    def __init__(self, root: str | Path, info: EmbedderInfo) -> None:
        self.info = info
        self.path = Path(root) / "embeddings" / f"{info.cache_key}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
        self._db.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            [("model_id", info.model_id), ("revision", info.revision), ("dim", str(info.dim)),
             ("normalize", str(info.normalize)), ("quantization", info.quantization)],
        )

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors found for ``keys`` (missing keys are absent from the result)."""
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(keys), 900):  # SQLite's bound-parameter limit
            batch = list(keys[i : i + 900])
            q = f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(batch))})"
            for key, blob in self._db.execute(q, batch):
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        """Store vectors (float32, shape (dim,)) under their text hashes."""
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT OR REPLACE INTO vectors VALUES (?, ?)",
            [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items.items()],
        )
        self._db.execute("COMMIT")


def embed_with_cache(
    texts: Sequence[str],
    embedder: Embedder,
    cache: EmbeddingCache | None = None,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    flush_every: int = 256,
) -> tuple[np.ndarray, int]:
    """Embed texts, computing only those the cache lacks (each distinct text once).

    Args:
        texts: n texts.
        embedder: the embedder; must match ``cache.info`` when a cache is given.
        cache: optional persistent cache; new vectors are written every ``flush_every`` texts,
            so an interrupted run keeps what it computed.
        batch_size: texts per forward pass.
        progress: called with the number of texts finished since the last call.

    Returns:
        ``(vectors, n_computed)``: float32 (n, dim) and how many texts were embedded now.

    Raises:
        ValueError: the cache belongs to another embedder identity.
    """
    dim = embedder.dim
    if cache is not None and cache.info != info_of(embedder):
        raise ValueError(f"embedding cache {cache.path} belongs to {cache.info}, not {info_of(embedder)}")
    keys = [text_sha256(t) for t in texts]
    vectors: dict[str, np.ndarray] = cache.get_many(sorted(set(keys))) if cache is not None else {}
    if progress and vectors:
        progress(sum(1 for k in keys if k in vectors))
    todo: dict[str, str] = {}
    for k, t in zip(keys, texts):
        if k not in vectors:
            todo.setdefault(k, t)
    todo_keys = list(todo)
    for start in range(0, len(todo_keys), flush_every):
        part = todo_keys[start : start + flush_every]
        vecs = embedder.embed([todo[k] for k in part], batch_size=batch_size)
        new = dict(zip(part, vecs))
        vectors.update(new)
        if cache is not None:
            cache.put_many(new)
        if progress:
            progress(sum(1 for k in keys if k in new))
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, k in enumerate(keys):
        out[i] = vectors[k]
    return out, len(todo_keys)
