"""Give freed memory back to the operating system between the large steps of a build.

Freed Arrow buffers stay in Arrow's allocator (mimalloc by default) and freed C heap stays in
glibc's arenas, where they count in the process's resident set size until reused. An ingest
frees a lot between its steps (per-document tables, Parquet encoding buffers, BM25 token
batches), so each step would start above the last one's peak. Measured on
``benchmarks/scale.py`` documents (1,500 documents, 35k chunks, hashing embedder): the ingest's
peak RSS went from 620 to 573 MB with this called between the segment's files.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import numpy as np
import pyarrow as pa


@functools.lru_cache(maxsize=1)
def _malloc_trim():  # noqa: ANN202 - a ctypes function, or None off glibc
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_unused_memory() -> None:
    """Return memory freed so far to the OS: Arrow's default pool
    (``MemoryPool.release_unused``) and glibc's heap (``malloc_trim(0)``, where glibc is the C
    library). Costs a few milliseconds; call it between large steps, not per row."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def keep_rows(a: np.ndarray, keep: np.ndarray, block: int = 8192) -> np.ndarray:
    """The rows of ``a`` where ``keep`` is true, moved to its front in place: a view of ``a``'s
    first ``keep.sum()`` rows (``a[keep]`` without its copy: 384 MB for a 250k-row segment's
    384-d float32 vectors); ``a`` itself when every row is kept.

    Args:
        a: (n, ...) array, C-contiguous, modified in place (rows after the kept ones are stale).
        keep: bool (n,).
        block: rows moved per step (the only copy made: ``block`` rows at a time).

    Raises:
        ValueError: ``keep`` does not have ``a``'s row count.
    """
    if len(keep) != len(a):
        raise ValueError(f"keep has {len(keep)} rows, the array {len(a)}")
    rows = np.flatnonzero(keep)
    if len(rows) == len(a):
        return a
    for lo in range(0, len(rows), block):  # (row j of the result comes from rows[j] >= j: never overwritten before)
        idx = rows[lo:lo + block]
        a[lo:lo + len(idx)] = a[idx]
    return a[:len(rows)]
