"""Stage ``chunk``: split every document with the strategy from ``chunk:`` params."""

from __future__ import annotations

from typing import Callable, Sequence

import pyarrow as pa

from ragline.chunkers.base import Chunk, Chunker, EmbedFn
from ragline.chunkers.registry import config_keys, get_chunker
from ragline.core.schemas import CHUNKS_SCHEMA
from ragline.pipelines.config import ChunkConfig
from ragline.pipelines.load import Document, QuarantineRecord

STAGE = "chunk"
#: Rows converted to Arrow at a time. Chunks are made lazily (``chunker.chunk_iter``), so
#: their texts are held once (in Arrow) plus one batch as Python strings: a 200 MB
#: document's chunks add about its size, not twice that.
_BATCH_ROWS = 4096


def make_chunker(cfg: ChunkConfig, embed_fn: EmbedFn | None = None, embed_model: str = "") -> Chunker:
    """The chunker ``cfg`` describes (options the strategy does not take are left out).

    Args:
        cfg: the ``chunk:`` params.
        embed_fn: embedder callable, for strategies that need one (semantic).
        embed_model: ``embed.model``; strategies whose output depends on the embedder take it
            into their fingerprint (so chunk ids change with the model), unless set explicitly.

    Raises:
        ConfigError: unknown strategy, unknown option or invalid value.
    """
    options = cfg.strategy_options()
    if embed_model and "embedding_model" in config_keys(cfg.strategy):
        options.setdefault("embedding_model", embed_model)
    return get_chunker(cfg.strategy, embed_fn=embed_fn, **options)


def context_prefix(doc: Document, chunk: Chunk) -> str:
    """``"Title > Section > Subsection\\n\\n"`` for contextual embedding (title not repeated)."""
    parts = [doc.title] + [s for s in chunk.section_path if s != doc.title]
    return " > ".join(p for p in parts if p) + "\n\n"


def chunk_documents(
    docs: Sequence[Document],
    cfg: ChunkConfig,
    embed_fn: EmbedFn | None = None,
    progress: Callable[[int], None] | None = None,
    embed_model: str = "",
) -> tuple[pa.Table, list[QuarantineRecord]]:
    """Stage ``chunk``: chunk every document.

    Args:
        docs: loaded documents.
        cfg: the ``chunk:`` params.
        embed_fn: embedder callable for the semantic strategy.
        progress: called with 1 per finished document.
        embed_model: ``embed.model`` (see :func:`make_chunker`).

    Returns:
        ``(chunks, quarantine)``: an Arrow table of ``CHUNKS_SCHEMA`` (``row`` = position,
        the FAISS id; built from record batches of up to 4096 rows) and records of
        documents the chunker failed on.
    """
    chunker = make_chunker(cfg, embed_fn, embed_model)
    batches: list[pa.RecordBatch] = []
    rows: list[dict] = []
    n_rows = 0
    bad: list[QuarantineRecord] = []
    for doc in docs:
        try:
            chunks = chunker.chunk_iter(doc.text, doc_id=doc.doc_id, elements=doc.elements)
        except Exception as e:  # a strategy bug on one document must not kill the run
            bad.append(QuarantineRecord(doc.uri, STAGE, type(e).__name__, f"{doc.uri}: {e}", doc.sha256))
            chunks = ()
        for c in chunks:  # made as consumed: a batch of chunk texts is held, then Arrow's copy
            rows.append({
                "row": n_rows, "chunk_id": c.chunk_id, "doc_id": c.doc_id, "uri": doc.uri,
                "char_start": c.char_start, "char_end": c.char_end, "token_count": c.token_count,
                "page": c.page, "section_path": list(c.section_path), "oversized": c.oversized,
                "text": c.text, "context": context_prefix(doc, c) if cfg.context else "",
            })
            n_rows += 1
            if len(rows) == _BATCH_ROWS:
                batches.append(pa.RecordBatch.from_pylist(rows, schema=CHUNKS_SCHEMA))
                rows.clear()
        if progress:
            progress(1)
    if rows or not batches:
        batches.append(pa.RecordBatch.from_pylist(rows, schema=CHUNKS_SCHEMA))
    return pa.Table.from_batches(batches, schema=CHUNKS_SCHEMA), bad


def chunker_record(cfg: ChunkConfig, embed_model: str = "") -> dict:
    """What a manifest records of the chunker: strategy, fingerprint, options, context."""
    chunker = make_chunker(cfg, embed_fn=(lambda texts: None) if cfg.needs_embedder else None,
                           embed_model=embed_model)
    return {"strategy": cfg.strategy, "fingerprint": chunker.fingerprint,
            "options": cfg.strategy_options(), "context": cfg.context}
