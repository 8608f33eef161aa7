"""Distributed builds: the plain functions a Dask worker runs on one partition of the document
list, and the driver's merge (no Prefect here; :mod:`pipelines.flows` maps them as tasks
through prefect-dask's ``DaskTaskRunner``).

The driver discovers and plans, cuts the sorted file list into contiguous partitions
(:func:`partition`), and each worker loads, chunks and embeds its partition
(:func:`build_partition`): parsing runs in the worker's own limited, recycled parsing
processes (``load.workers``, ``load.timeout_s``, ``load.max_worker_mb`` as locally), chunk ids
and vectors depend on content only, so the merge (:func:`merge_partitions`, concatenation in
partition order, chunk rows renumbered) equals a local build. The embedding cache is the
SQLite file under ``paths.cache`` (WAL mode), shared by every worker that reaches the same
filesystem (local disk of a single machine; on a multi-machine cluster a shared POSIX
filesystem with working locks; NFS without locks is not supported by SQLite): a text
embedded by one worker is a hit for every other. A partition whose worker died is retried
(``runner.partition_retries``); past that its files are quarantined as ``WorkerLost``
(:func:`lost_partition`) and the run goes on.

Ray: the same task functions run on Ray through prefect-ray's ``RayTaskRunner`` (README
"Scaling out").
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ragline.core.records import Document, QuarantineRecord
from ragline.pipelines.load import SourceFile

#: embedders already built in this worker process, by identity (weights load once per worker)
_EMBEDDERS: dict[str, Any] = {}


@dataclass
class PartitionResult:
    """What one partition produced.

    Attributes:
        documents: documents loaded (those whose chunking failed included; see ``chunk_failed``).
        quarantine: load and chunk quarantine records.
        chunks: ``CHUNKS_SCHEMA`` table, ``row`` local to the partition.
        vectors: float32 (n_chunks, dim); ``None`` (and ``chunks`` too) for a lost partition.
        computed: texts the model embedded (embedding-cache misses).
        seconds: wall time per stage in the worker (``load``, ``chunk``, ``embed``).
    """

    documents: list[Document]
    quarantine: list[QuarantineRecord]
    chunks: pa.Table | None
    vectors: np.ndarray | None
    computed: int
    seconds: dict[str, float]


def partition(files: Sequence[SourceFile], n_parts: int) -> list[list[SourceFile]]:
    """Cut ``files`` (sorted by URI) into at most ``n_parts`` contiguous, nearly equal parts
    (never empty), so that concatenating the parts' results keeps the local order."""
    n = max(1, min(n_parts, len(files)))
    size, extra = divmod(len(files), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        if end > start:
            out.append(list(files[start:end]))
        start = end
    return out


def _allow_child_processes() -> None:
    """Dask worker processes are daemonic, and a daemonic process may not start children;
    the parsing pool needs children (its time and memory limits are per process). Clearing
    the flag on this worker process only lets it start them (they stop with the pool)."""
    proc = multiprocessing.current_process()
    if proc.daemon:
        proc._config["daemon"] = False  # noqa: SLF001 - the documented way round has no public API


def worker_embedder(params: Any) -> Any:
    """The ``embed:`` embedder for this worker, built once per process, with
    ``runner.threads_per_worker`` threads (not every core of a shared machine)."""
    from ragline.pipelines.embed import embedder_key, index_embedder

    threads = params.runner.threads_per_worker
    key = embedder_key(params, threads)
    if key not in _EMBEDDERS:
        _EMBEDDERS[key] = index_embedder(params, threads=threads)
    return _EMBEDDERS[key]


def build_partition(files: Sequence[SourceFile], params: Any) -> PartitionResult:
    """Load, chunk and embed one partition (what a Dask worker runs).

    Args:
        files: the partition's files (from :func:`pipelines.sources.discover`).
        params: validated :class:`pipelines.config.Params`.

    Returns:
        The partition's :class:`PartitionResult`.
    """
    import time

    from ragline.indexers.faults import crash_point
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.embed import embed_chunks
    from ragline.pipelines.load import load_documents

    _allow_child_processes()
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    docs, bad = load_documents(files, params.load)
    seconds["load"] = time.perf_counter() - t
    crash_point("partition:loaded")  # test hook (indexers/faults.py): a worker killed in mid-partition
    embedder = worker_embedder(params)
    embed_fn = (lambda texts: embedder.embed(list(texts))) if params.chunk.needs_embedder else None
    t = time.perf_counter()
    chunks, chunk_bad = chunk_documents(docs, params.chunk, embed_fn=embed_fn, embed_model=params.embed.model)
    seconds["chunk"] = time.perf_counter() - t
    t = time.perf_counter()
    vectors, computed = embed_chunks(chunks, embedder, params.paths.cache, params.embed.batch_size)
    seconds["embed"] = time.perf_counter() - t
    return PartitionResult(docs, bad + chunk_bad, chunks, vectors, computed, seconds)


def lost_partition(files: Sequence[SourceFile], error: BaseException) -> PartitionResult:
    """The result of a partition that failed past its retries: every file quarantined as
    ``WorkerLost`` with the error, nothing else."""
    why = " ".join(f"{type(error).__name__}: {error}".split())[:300]
    return PartitionResult([], [QuarantineRecord(f.uri, "load", "WorkerLost",
                                                 f"{f.uri}: its partition failed on the cluster ({why})")
                                for f in files], None, None, 0, {})


def merge_partitions(results: Sequence[PartitionResult], dim: int = 0
                     ) -> tuple[list[Document], list[QuarantineRecord], pa.Table, np.ndarray, int]:
    """Concatenate partition results in order: ``(documents, quarantine, chunks, vectors,
    computed)``; chunk ``row`` renumbered 0..n-1, vectors float32 (n_chunks, dim) (``dim``
    shapes the empty array when no partition produced a vector). Load-only results give
    an empty chunk table."""
    from ragline.core.schemas import CHUNKS_SCHEMA

    docs = [d for r in results for d in r.documents]
    bad = [q for r in results for q in r.quarantine]
    tables = [r.chunks for r in results if r.chunks is not None and r.chunks.num_rows]
    chunks = pa.concat_tables(tables) if tables else CHUNKS_SCHEMA.empty_table()
    row_type = CHUNKS_SCHEMA.field("row").type
    chunks = chunks.set_column(chunks.schema.get_field_index("row"), CHUNKS_SCHEMA.field("row"),
                               pa.array(np.arange(chunks.num_rows), type=row_type))
    vecs = [r.vectors for r in results if r.vectors is not None and len(r.vectors)]
    vectors = np.concatenate(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)
    return docs, bad, chunks, vectors, sum(r.computed for r in results)
