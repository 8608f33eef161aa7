"""FAISS index builders: exact inner product / L2, or HNSW.

Row ``i`` of the index is row ``i`` of the version's ``chunks.parquet`` (its ``row``
column); versions are immutable, so this positional id map is fixed for a version's life.
Sources: Johnson, Douze & Jégou, "Billion-scale similarity search with GPUs" (FAISS, 2017);
Malkov & Yashunin, "Efficient and robust approximate nearest neighbor search using
Hierarchical Navigable Small World graphs" (TPAMI 2018).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import faiss
import numpy as np


@dataclass(frozen=True, slots=True)
class FaissSpec:
    """What to build.

    Attributes:
        kind: ``flat`` (exact) or ``hnsw``.
        metric: ``ip`` (inner product) or ``l2``.
        hnsw_m: HNSW graph degree.
        hnsw_ef_construction: HNSW build beam width.
        hnsw_ef_search: HNSW query beam width (saved with the index).
    """

    kind: Literal["flat", "hnsw"] = "flat"
    metric: Literal["ip", "l2"] = "ip"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 64


def build_faiss_index(vectors: np.ndarray, spec: FaissSpec) -> faiss.Index:
    """Build an index over ``vectors``.

    Args:
        vectors: float32 array (n, dim); C-contiguous copies are made when needed.
        spec: index kind and metric.

    Returns:
        A FAISS index holding n vectors with ids 0..n-1.

    Raises:
        ValueError: ``vectors`` is not 2-D.
    """
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n, dim), got shape {vectors.shape}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = x.shape[1]
    metric = faiss.METRIC_INNER_PRODUCT if spec.metric == "ip" else faiss.METRIC_L2
    if spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, metric)
        index.hnsw.efConstruction = spec.hnsw_ef_construction
        index.hnsw.efSearch = spec.hnsw_ef_search
    else:
        index = faiss.IndexFlatIP(dim) if spec.metric == "ip" else faiss.IndexFlatL2(dim)
    if len(x):
        index.add(x)
    return index


def write_faiss_index(index: faiss.Index, path: Path) -> None:
    """Write an index to ``path`` (the caller makes the folder atomic)."""
    faiss.write_index(index, str(path))


def read_faiss_index(path: Path) -> faiss.Index:
    """Read an index written by :func:`write_faiss_index`.

    Raises:
        OSError: the file is missing or not a FAISS index.
    """
    try:
        return faiss.read_index(str(path))
    except RuntimeError as e:
        raise OSError(f"{path}: not a readable FAISS index ({e})") from e


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k search.

    Args:
        queries: float32 (q, dim).
        k: results per query (capped at the index size).

    Returns:
        ``(scores, rows)``: float32 (q, k') and int64 (q, k'), k' = min(k, ntotal); higher
        scores are better for ``ip``, lower for ``l2``.
    """
    k = min(k, index.ntotal)
    if k <= 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
