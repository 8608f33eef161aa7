"""Stages ``index`` and ``publish``: build the FAISS index and publish an immutable version."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ragline.core.hashing import sha256_file
from ragline.indexers.bm25 import write_bm25
from ragline.indexers.embedders import EmbedderInfo
from ragline.indexers.faiss_index import VECTORS_FILE, build_faiss_index, index_record, write_faiss_index, write_vectors
from ragline.indexers.manifest import Manifest, params_hash
from ragline.indexers.registry import DEFAULT_ALIAS, IndexRegistry
from ragline.indexers.retriever import CHUNK_ROWS_FILE, CHUNKS_FILE, DOCUMENTS_FILE, INDEX_FILE, QUARANTINE_FILE
from ragline.core.schemas import CHUNKS_ROW_GROUP, CHUNKS_SCHEMA, DOCUMENTS_SCHEMA, QUARANTINE_SCHEMA, write_row_file, write_table
from ragline.pipelines.config import IndexConfig, Params
from ragline.pipelines.chunk import chunker_record
from ragline.pipelines.sources import input_record


def build_index(vectors: np.ndarray, cfg: IndexConfig):
    """Stage ``index``: a FAISS index over float32 (n, dim) vectors (row i = chunk row i), of the
    kind ``index.factory`` names (trained on ``index.train_size`` vectors when it needs training).

    Raises:
        ConfigError: FAISS rejects the factory string at this dimension, or training failed.
    """
    return build_faiss_index(vectors, cfg.faiss_spec())


def git_commit(cwd: str | Path = ".") -> str | None:
    """HEAD commit of the git work tree at ``cwd`` (``+dirty`` appended when it has changes), or None."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def dvc_lock_sha256(cwd: str | Path = ".") -> str | None:
    """sha256 of ``dvc.lock`` at ``cwd`` when it exists."""
    p = Path(cwd) / "dvc.lock"
    return sha256_file(p) if p.exists() else None


def publish_index(
    registry: IndexRegistry,
    params: Params,
    documents: pa.Table,
    chunks: pa.Table,
    vectors: np.ndarray,
    quarantine: pa.Table,
    embedder: EmbedderInfo,
    stats: dict[str, Any] | None = None,
    parent_version: str | None = None,
    aliases: Sequence[str] = (DEFAULT_ALIAS,),
    dvc_stage_deps: dict[str, str] | None = None,
    curation: Any = None,
) -> Manifest:
    """Stage ``publish``: build the index and publish ``<root>/<name>/<version>/`` atomically.

    Args:
        registry: the registry to publish into.
        params: validated params (recorded whole, with their hash).
        documents: table of ``DOCUMENTS_SCHEMA``.
        chunks: table of ``CHUNKS_SCHEMA``; row i is FAISS id i.
        vectors: float32 (n_chunks, dim).
        quarantine: table of ``QUARANTINE_SCHEMA``.
        embedder: identity of the embedder that made ``vectors``.
        stats: run statistics to record (wall times, cache hits, ...).
        parent_version: the version a refresh started from.
        aliases: aliases moved to the new version once it is complete.
        dvc_stage_deps: ``{path: md5}`` of the DVC publish stage's data inputs (``ragline stage publish``).
        curation: :class:`pipelines.curate.Curation` of this version; its files
            (``duplicates.parquet``, ``signatures.parquet``, ``curation.json``) are published with it.

    Returns:
        The written manifest.

    Raises:
        ValueError: vectors and chunks disagree in count, or vectors are not ``embedder.dim`` wide.
        LockTimeoutError: another publish held the index too long.
    """
    if vectors.shape != (chunks.num_rows, embedder.dim):
        raise ValueError(f"vectors have shape {vectors.shape}, expected ({chunks.num_rows}, {embedder.dim})")
    name = params.index.name
    index = build_index(vectors, params.index)
    param_values = params.to_dict()
    inputs = sorted(
        (input_record(u, d, s, dict(m or ()), n) for u, d, s, m, n in zip(
            documents.column("uri").to_pylist(), documents.column("doc_id").to_pylist(),
            documents.column("sha256").to_pylist(), documents.column("metadata").to_pylist(),
            documents.column("size_bytes").to_pylist())),
        key=lambda r: r["uri"],
    )

    def write(folder: Path, version: str) -> Manifest:
        write_table(documents, folder / DOCUMENTS_FILE, DOCUMENTS_SCHEMA)
        write_table(chunks, folder / CHUNKS_FILE, CHUNKS_SCHEMA, CHUNKS_ROW_GROUP)
        write_row_file(chunks, folder / CHUNK_ROWS_FILE, CHUNKS_SCHEMA)  # a search's hits, read by row from a memory map
        write_table(quarantine, folder / QUARANTINE_FILE, QUARANTINE_SCHEMA)
        write_faiss_index(index, folder / INDEX_FILE)
        write_vectors(vectors, folder / VECTORS_FILE)  # kept: a lossy kind (PQ, SQ) cannot give them back
        write_bm25(chunks, folder, params.index.bm25_spec())  # bm25.npz + bm25.json: for bm25/hybrid retrieval
        if curation is not None:  # [curate hook] duplicates.parquet, signatures.parquet, curation.json
            curation.write(folder)
        return Manifest(
            index_name=name,
            version=version,
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            params=param_values,
            params_hash=params_hash(param_values),
            chunker=chunker_record(params.chunk, params.embed.model),
            embedding=embedder.to_manifest(),
            index=index_record(index, params.index.faiss_spec()),
            counts={"documents": documents.num_rows, "chunks": chunks.num_rows,
                    "vectors": int(index.ntotal), "quarantined": quarantine.num_rows},
            inputs=inputs,
            git_commit=git_commit(),
            dvc_lock_sha256=dvc_lock_sha256(),
            parent_version=parent_version,
            stats={**(stats or {}), **({"curation": curation.counts()} if curation is not None else {})},
            dvc_stage_deps=dict(dvc_stage_deps or {}),
        )

    return registry.publish(name, write, aliases=tuple(aliases), lock_timeout_s=params.index.lock_timeout_s)
