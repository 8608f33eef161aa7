"""Stage ``embed``: vectors for every chunk, through the persistent embedding cache."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pyarrow as pa

from ragline.indexers.backends import resolve_backend
from ragline.indexers.cache import EmbeddingCache, embed_with_cache
from ragline.indexers.embedders import Embedder, info_of, make_embedder
from ragline.core.schemas import embeddings_schema, indexed_texts

if TYPE_CHECKING:
    from ragline.indexers.manifest import Manifest
    from ragline.indexers.registry import IndexRegistry
    from ragline.pipelines.config import Params


def index_embedder(params: Params, model: str | None = None, normalize: bool | None = None,
                   threads: int | None = None) -> Embedder:
    """The embedder ``embed:`` describes, for indexing: ``embed.backend`` on every core
    (ONNX exports go to ``paths.cache``). Cheap: weights load on first use. ``auto`` is this
    CPU's fastest backend here; runs that publish into an index resolve it first
    (:func:`with_embed_backend`).

    Args:
        params: the run's params.
        model, normalize: override ``embed.model`` / ``embed.normalize`` (e.g. from a manifest).
        threads: threads of the model (default: every core; a Dask worker gives its own).

    Raises:
        FileNotFoundError: the model is neither the packaged one nor a local folder.
    """
    return make_embedder(model or params.embed.model, params.embed.normalize if normalize is None else normalize,
                         backend=params.embed.backend, cache_dir=params.paths.cache,
                         threads=threads or os.cpu_count() or 1, streams=params.embed.streams,
                         pad_multiple=params.embed.pad_multiple, static_shapes=params.embed.static_shapes)


def with_embed_backend(params: Params, registry: IndexRegistry | None = None, manifest: Manifest | None = None,
                       made_by: str | None = None) -> Params:
    """``params`` with ``embed.backend: auto`` replaced by the backend this run uses
    (:func:`indexers.backends.resolve_backend`): the backend ``manifest``'s version was built
    with, or by default that of the latest version of ``index.name`` in ``registry``, when
    there is one; else this CPU's fastest. The manifest of what the run publishes then records
    that backend, so a restore or a refresh on another machine embeds alike.

    Args:
        params: validated params.
        registry: the registry of ``index.root`` (default: opened here).
        manifest: the version whose embedder to follow (e.g. one a promotion gate searches).
        made_by: the backend that embedded the vectors about to be published (the embed
            stage's file records it: :func:`vectors_to_table`); it wins over both.

    Returns:
        ``params`` itself when its backend is explicit, else a copy with the resolved one.
        A damaged alias or manifest counts as no version (the run then reports it itself).
    """
    from ragline.core.errors import RaglineError
    from ragline.indexers.backends import AUTO
    from ragline.indexers.registry import DEFAULT_ALIAS, IndexRef, IndexRegistry

    if params.embed.backend != AUTO:
        return params
    if manifest is None and not made_by:
        registry = registry or IndexRegistry(params.index.root)
        try:
            if registry.alias_record(params.index.name, DEFAULT_ALIAS) is not None:
                manifest = registry.manifest(*registry.resolve(IndexRef(params.index.name, DEFAULT_ALIAS)))
        except (RaglineError, OSError, ValueError):
            manifest = None
    recorded = None if manifest is None else {"params": manifest.params, "embedding": manifest.embedding}
    if made_by:
        recorded = {"params": {"embed": {"backend": made_by}}}
    embed = params.embed.model_copy(update={"backend": resolve_backend(AUTO, recorded)})
    return params.model_copy(update={"embed": embed})


def embedder_key(params: Params, threads: int | None = None) -> str:
    """A key naming the embedder :func:`index_embedder` builds from ``params`` and ``threads``
    (the whole ``embed:`` section, ``paths.cache`` and the thread count): equal keys, same embedder."""
    return json.dumps([params.embed.model_dump(mode="json"), str(params.paths.cache), threads], sort_keys=True)


def embed_chunks(
    chunks: pa.Table,
    embedder: Embedder,
    cache_dir: str | Path | None,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Stage ``embed``.

    Args:
        chunks: table of ``CHUNKS_SCHEMA``.
        embedder: the embedder.
        cache_dir: ``paths.cache`` (``None`` disables the cache).
        batch_size: texts per forward pass.
        progress: called with the number of chunks finished since the last call.

    Returns:
        ``(vectors, n_computed)``: float32 (n_chunks, dim) in chunk-row order (L2-normalized
        when the embedder normalizes) and the number of texts embedded now (cache misses).
    """
    cache = EmbeddingCache(cache_dir, info_of(embedder)) if cache_dir is not None else None
    try:
        return embed_with_cache(indexed_texts(chunks), embedder, cache, batch_size, progress)
    finally:
        if cache is not None:
            cache.close()


#: ``embeddings.parquet`` schema metadata key naming the ``embed.backend`` that made the vectors
BACKEND_KEY = b"ragline.embed.backend"


def vectors_to_table(chunk_ids: list[str], vectors: np.ndarray, backend: str | None = None) -> pa.Table:
    """``embeddings.parquet`` table: chunk_id + fixed-size float32 vector; ``backend`` (the
    one that embedded them) goes into the schema metadata (:func:`backend_of_table`)."""
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    vec = pa.FixedSizeListArray.from_arrays(flat, dim)
    schema = embeddings_schema(dim)
    if backend:
        schema = schema.with_metadata({**(schema.metadata or {}), BACKEND_KEY: backend.encode()})
    return pa.Table.from_arrays([pa.array(chunk_ids, pa.string()), vec], schema=schema)


def backend_of_table(table: pa.Table) -> str | None:
    """The backend an ``embeddings.parquet`` table records (:func:`vectors_to_table`), or ``None``."""
    value = (table.schema.metadata or {}).get(BACKEND_KEY)
    return value.decode() if value else None


def vectors_from_table(table: pa.Table) -> np.ndarray:
    """float32 (n, dim) from an ``embeddings.parquet`` table."""
    col = table.column("vector").combine_chunks()
    dim = col.type.list_size
    return col.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
