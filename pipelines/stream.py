"""Load, chunk and embed at once: parsing and chunking feed the embedder through a bounded queue.

Sequentially, ingest parses every file, then chunks, then embeds, so the wall time is the
sum of the stages. Here the parsing workers (:func:`pipelines.load.load_documents`,
re-niced so the embedder keeps the cores) run while the embedder embeds what is already
chunked; each document is chunked in the calling thread as soon as it and every document
before it are parsed (file order, so rows, chunk ids and vectors are exactly those of the
sequential path), and its chunk texts go through a bounded queue to one embedding thread
(ONNX Runtime and OpenVINO release the GIL while they compute). The embedder may still be
loading (a first export or quantization) when the first documents arrive: the embedding
thread asks for it first.

With ``skip_copies`` (curation that indexes one copy: ``curate.duplicates`` ``link`` or
``keep_first``), a document whose normalized text has the sha256 of an earlier document's
(:func:`pipelines.curate.content_sha256`, the exact-duplicate key curation clusters by) is an
exact copy: it is chunked (so its rows, chunk ids and curation counts are those of the full
path) but its chunks are not embedded (their vectors are zero rows, marked in
:attr:`StreamResult.not_embedded`); curation then drops those rows. A copy that curation keeps
after all (its original was quarantined) is embedded afterwards by :func:`embed_rows`.

The plain stage functions do the work (``load_documents``, ``chunk_documents``,
``embed_with_cache``); this module only schedules them, so it imports no orchestrator.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from ragline.core.records import Document, QuarantineRecord
from ragline.core.schemas import CHUNKS_SCHEMA, indexed_texts
from ragline.indexers.cache import EmbeddingCache, embed_with_cache
from ragline.indexers.embedders import Embedder, info_of
from ragline.pipelines.chunk import chunk_documents
from ragline.pipelines.curate import content_sha256
from ragline.pipelines.load import SourceFile, load_documents

#: chunk texts the embedding thread takes per ``embed_with_cache`` call (its cache flush size)
EMBED_PART = 256
#: chunk batches (one per arrival of parsed documents) that may wait before chunking pauses
QUEUE_DOCUMENTS = 256
#: curated documents chunked and queued at a time (with a ``curate`` step)
CURATED_BATCH = 16
#: niceness added to the parsing workers while the embedder runs beside them
PARSER_NICE = 5


@dataclass
class StreamResult:
    """What :func:`load_chunk_embed` produced.

    Attributes:
        documents: parsed documents, in file order.
        quarantine: files that failed to load, then documents the chunker failed on.
        chunks: ``CHUNKS_SCHEMA`` table, ``row`` = position (as :func:`chunk_documents` numbers them).
        vectors: float32 (n_chunks, dim) in row order; L2-normalized when the embedder normalizes.
        embedded: texts embedded now (cache misses).
        chunk_bad: the chunker's quarantine records (also in ``quarantine``).
        not_embedded: bool (n_chunks,): rows of exact copies not embedded (``skip_copies``;
            their ``vectors`` rows are zero). All False without ``skip_copies``.
        after_chunking: what the ``after_chunking`` callable returned (``None`` without one).
        seconds: where the wall time went, overlapping: ``load`` (start to the last file
            parsed), ``chunk`` (chunking, in the calling thread), ``load-model`` (start to the
            embedder ready), ``embed`` (inside the embedder and its cache), ``embed-idle``
            (the embedder ready and waiting for chunks), ``after-chunking`` (the
            ``after_chunking`` callable, while the embedder works).
    """

    documents: list[Document]
    quarantine: list[QuarantineRecord]
    chunks: pa.Table
    vectors: np.ndarray
    embedded: int
    chunk_bad: list[QuarantineRecord]
    seconds: dict[str, float] = field(default_factory=dict)
    not_embedded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    after_chunking: Any = None


_DONE = object()


def load_chunk_embed(
    files: Sequence[SourceFile],
    params,  # ragline.pipelines.config.Params
    embedder: Callable[[], Embedder],
    progress: Callable[[int], None] | None = None,
    curate: Callable[[list[Document]], list[Document]] | None = None,
    skip_copies: bool = False,
    after_chunking: Callable[[list[Document], pa.Table, list[QuarantineRecord]], Any] | None = None,
) -> StreamResult:
    """Parse, chunk and embed ``files`` with embedding overlapping parsing and chunking.

    Gives the same documents, chunks (ids, offsets, rows) and vectors as
    ``load_documents`` → ``chunk_documents`` → ``embed_chunks`` one after the other.

    Args:
        files: files from :func:`pipelines.load.discover_files`.
        params: the run's :class:`~pipelines.config.Params` (``load``, ``chunk``, ``embed``,
            ``paths.cache``).
        embedder: returns the embedder (called once, in the embedding thread, so a model
            still being built does not hold up parsing).
        progress: called with 1 per file whose chunks are embedded (or that was quarantined).
        curate: a whole-corpus step between parsing and chunking (boilerplate removal,
            :func:`pipelines.curate.curate_documents`), given every parsed document in file
            order and returning them changed. With it, chunking waits for the last file to be
            parsed (the model still loads while files are parsed); without it, each document
            is chunked as soon as it and every one before it are parsed.
        skip_copies: do not embed the chunks of a document whose normalized text equals an
            earlier document's (an exact copy; see the module docstring). Rows and chunk ids
            are unchanged; the copies' vector rows are zero.
        after_chunking: called in the calling thread with ``(documents, chunks, chunk_bad)``
            (as in the result) once the last chunk is queued, while the embedder still embeds
            the queue (duplicate clustering needs the chunks, not their vectors); its return
            value is :attr:`StreamResult.after_chunking`. Not called when the embedder failed.

    Returns:
        :class:`StreamResult`.

    Raises:
        Whatever the embedder or the embedding cache raise, once the parsing workers are done
        (chunking stops at the error; the files already scheduled are still parsed).
    """
    n = len(files)
    results: list[Document | QuarantineRecord | None] = [None] * n
    next_i = 0
    rows = 0
    tables: list[pa.Table] = []
    chunk_bad: list[QuarantineRecord] = []
    skipped: list[np.ndarray] = []  # per chunked batch: rows not embedded (exact copies)
    seen: set[str] = set()  # exact-duplicate keys of the documents chunked so far
    q: queue.Queue = queue.Queue(maxsize=QUEUE_DOCUMENTS)
    parts: list[np.ndarray] = []
    state: dict = {"embedded": 0, "error": None, "dim": 0}
    t0 = time.perf_counter()
    seconds = dict.fromkeys(("load", "chunk", "load-model", "embed", "embed-idle"), 0.0)
    embed_fn = None
    if params.chunk.needs_embedder:  # semantic chunking embeds while it chunks: load the model first
        model = embedder()
        embed_fn = lambda texts: model.embed(list(texts))  # noqa: E731
        embedder = lambda: model  # noqa: E731

    def embed_loop() -> None:
        try:
            model = embedder()
            state["dim"] = model.dim
            seconds["load-model"] = time.perf_counter() - t0
            cache = EmbeddingCache(params.paths.cache, info_of(model)) if params.paths.cache else None
            try:
                pending: list[str] = []
                pending_files = 0
                while True:
                    t_wait = time.perf_counter()
                    item = q.get()
                    seconds["embed-idle"] += time.perf_counter() - t_wait
                    if item is not _DONE:
                        texts, n_files = item
                        pending += texts
                        pending_files += n_files
                    if pending and (len(pending) >= EMBED_PART or item is _DONE or q.empty()):
                        t_embed = time.perf_counter()
                        vecs, computed = embed_with_cache(pending, model, cache, params.embed.batch_size)
                        seconds["embed"] += time.perf_counter() - t_embed
                        parts.append(vecs)
                        state["embedded"] += computed
                        pending = []
                    if progress and pending_files and not pending:
                        progress(pending_files)
                        pending_files = 0
                    if item is _DONE:
                        return
            finally:
                if cache is not None:
                    cache.close()
        except BaseException as e:  # handed to the calling thread
            state["error"] = e
            while True:  # drain, so a producer blocked on a full queue goes on (and sees the error)
                try:
                    if q.get_nowait() is _DONE:
                        return
                except queue.Empty:
                    if state.get("producer_done"):
                        return
                    threading.Event().wait(0.05)

    def put(item) -> None:
        while state["error"] is None:
            try:
                q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def chunk_and_queue(ready: list[Document], n_files: int) -> None:
        nonlocal rows
        t_chunk = time.perf_counter()
        table, bad = chunk_documents(ready, params.chunk, embed_fn=embed_fn, embed_model=params.embed.model)
        table = table.set_column(0, "row", pa.array(range(rows, rows + table.num_rows), pa.int64()))
        rows += table.num_rows
        tables.append(table)
        chunk_bad.extend(bad)
        texts = indexed_texts(table)
        copies = np.zeros(table.num_rows, dtype=bool)
        if skip_copies:
            failed = {q.path for q in bad}
            copy_ids = set()
            for d in ready:  # file order: the first document with a text is the one embedded
                if d.uri in failed:
                    continue
                key = content_sha256(d.text)
                if key in seen:
                    copy_ids.add(d.doc_id)
                seen.add(key)
            if copy_ids:
                copies = np.fromiter((d in copy_ids for d in table.column("doc_id").to_pylist()), dtype=bool,
                                     count=table.num_rows)
                texts = [t for t, c in zip(texts, copies) if not c]
        skipped.append(copies)
        seconds["chunk"] += time.perf_counter() - t_chunk
        put((texts, n_files))

    def arrived(i: int, r: Document | QuarantineRecord) -> None:
        nonlocal next_i
        results[i] = r
        if curate is not None:  # chunked after the whole corpus is parsed and curated
            return
        ready: list[Document] = []
        n_files = 0
        while next_i < n and results[next_i] is not None:
            if isinstance(results[next_i], Document):
                ready.append(results[next_i])
            next_i += 1
            n_files += 1
        if not n_files or state["error"] is not None:
            return
        chunk_and_queue(ready, n_files)

    worker = threading.Thread(target=embed_loop, name="ragline-embed", daemon=True)
    worker.start()
    after = None
    done_sent = False
    try:
        docs, load_bad = load_documents(files, params.load, deliver=arrived, nice=PARSER_NICE)
        seconds["load"] = time.perf_counter() - t0
        if curate is not None:
            t_curate = time.perf_counter()
            docs = curate(docs)
            seconds["curate"] = time.perf_counter() - t_curate
            for start in range(0, len(docs), CURATED_BATCH):
                if state["error"] is not None:
                    break
                part = docs[start:start + CURATED_BATCH]
                n_files = len(part) + (len(files) - len(docs) if start + CURATED_BATCH >= len(docs) else 0)
                chunk_and_queue(part, n_files)
            if not docs and files:
                put(([], len(files)))
        state["producer_done"] = True
        put(_DONE)
        done_sent = True
        chunks = pa.concat_tables(tables) if tables else CHUNKS_SCHEMA.empty_table()
        if after_chunking is not None and state["error"] is None:  # overlaps the embedding of the queue
            t_after = time.perf_counter()
            after = after_chunking(docs, chunks, chunk_bad)
            seconds["after-chunking"] = time.perf_counter() - t_after
    finally:
        if not done_sent:
            state["producer_done"] = True
            put(_DONE)
        worker.join()
    if state["error"] is not None:
        raise state["error"]
    embedded = np.concatenate(parts) if parts else np.zeros((0, state["dim"]), np.float32)
    not_embedded = np.concatenate(skipped) if skipped else np.zeros(0, dtype=bool)
    if not_embedded.any():
        vectors = np.zeros((chunks.num_rows, embedded.shape[1]), dtype=embedded.dtype)
        vectors[~not_embedded] = embedded
    else:
        vectors = embedded
    return StreamResult(docs, load_bad + chunk_bad, chunks, vectors, state["embedded"], chunk_bad,
                        {k: round(v, 3) for k, v in seconds.items()}, not_embedded, after)


def embed_rows(
    chunks: pa.Table, vectors: np.ndarray, rows: np.ndarray, embedder: Embedder, params,
) -> int:
    """Embed the chunk rows ``rows`` of ``chunks`` into ``vectors`` in place (through the cache).

    For the rows :func:`load_chunk_embed` left unembedded (``skip_copies``) that curation keeps
    after all (an exact copy whose original was quarantined).

    Args:
        chunks: ``CHUNKS_SCHEMA`` table.
        vectors: float32 (n_chunks, dim), written at ``rows``.
        rows: bool (n_chunks,) of the rows to embed.
        embedder: the index embedder.
        params: the run's :class:`~pipelines.config.Params` (``paths.cache``, ``embed.batch_size``).

    Returns:
        Texts embedded now (cache misses).
    """
    if not rows.any():
        return 0
    texts = indexed_texts(chunks.filter(pa.array(rows, type=pa.bool_())))
    cache = EmbeddingCache(params.paths.cache, info_of(embedder)) if params.paths.cache else None
    try:
        vecs, computed = embed_with_cache(texts, embedder, cache, params.embed.batch_size)
    finally:
        if cache is not None:
            cache.close()
    vectors[rows] = vecs
    return computed
