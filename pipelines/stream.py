"""Load, chunk and embed at once: parsing and chunking feed the embedder through a bounded queue.

Sequentially, ingest parses every file, then chunks, then embeds, so the wall time is the
sum of the stages. Here the parsing workers (:func:`pipelines.load.load_documents`,
re-niced so the embedder keeps the cores) run while the embedder embeds what is already
chunked; each document is chunked in the calling thread as soon as it is parsed (in the order
the workers finish), and its chunk texts go through a bounded queue to one embedding thread
(ONNX Runtime and OpenVINO release the GIL while they compute). Rows and vectors are put in
file order at the end, so rows, chunk ids and vectors are exactly those of the sequential
path. The embedder may still be loading (a first export or quantization) when the first
documents arrive: the embedding thread asks for it first.

Boilerplate removal (``curate.boilerplate``) needs corpus-wide frequencies, yet does not make
the embedder wait for the last file: :class:`pipelines.curate.StreamedBoilerplate` releases a
document as soon as its outcome cannot change whatever the files still to come contain, and
checks every document against the batch stage at the end (a document released in another
form would be chunked and embedded again; the decision rule makes that not happen).

With ``skip_copies`` (curation that indexes one copy: ``curate.duplicates`` ``link`` or
``keep_first``), a document whose normalized text has the sha256 of a document earlier in
file order that was already chunked (:func:`pipelines.curate.content_sha256`, the
exact-duplicate key curation clusters by) is an exact copy: it is chunked (so its rows, chunk
ids and curation counts are those of the full path) but its chunks are not embedded (their
vectors are zero rows, marked in :attr:`StreamResult.not_embedded`); curation then drops
those rows. (When a copy is parsed before its original, both are embedded.) A copy that
curation keeps after all (its original was quarantined) is embedded afterwards by :func:`embed_rows`.

The plain stage functions do the work (``load_documents``, ``chunk_documents``,
``embed_with_cache``); this module only schedules them, so it imports no orchestrator.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import pyarrow as pa

from ragline.core.memory import release_unused_memory
from ragline.core.records import Document, QuarantineRecord
from ragline.core.schemas import CHUNKS_SCHEMA, DOCUMENTS_SCHEMA, indexed_texts
from ragline.indexers.cache import EmbeddingCache, embed_with_cache
from ragline.indexers.embedders import Embedder, info_of
from ragline.pipelines.chunk import chunk_documents
from ragline.pipelines.curate import content_sha256
from ragline.pipelines.errors import PipelineError
from ragline.pipelines.load import SourceFile, documents_to_table, load_documents

#: chunk texts the embedding thread takes per ``embed_with_cache`` call (its cache flush size)
EMBED_PART = 256
#: chunked documents that may wait for the embedder before chunking pauses
QUEUE_DOCUMENTS = 256
#: niceness added to the parsing workers while the embedder runs beside them
PARSER_NICE = 5


@dataclass
class StreamResult:
    """What :func:`load_chunk_embed` produced.

    Attributes:
        documents: parsed documents, in file order (empty with ``keep_documents=False``).
        quarantine: files that failed to load, then documents the chunker failed on.
        chunks: ``CHUNKS_SCHEMA`` table, ``row`` = position (as :func:`chunk_documents` numbers them).
        vectors: float32 (n_chunks, dim) in row order; L2-normalized when the embedder normalizes.
        embedded: texts embedded now (cache misses).
        chunk_bad: the chunker's quarantine records (also in ``quarantine``).
        not_embedded: bool (n_chunks,): rows of exact copies not embedded (``skip_copies``;
            their ``vectors`` rows are zero). All False without ``skip_copies``.
        after_chunking: what the ``after_chunking`` callable returned (``None`` without one).
        documents_table: ``DOCUMENTS_SCHEMA`` rows of the documents chunked without error, in
            file order (each row built as its document was chunked): what a segment publishes.
        n_documents: documents parsed (and kept by curation), chunked or not.
        flushed: what the ``flush`` callable returned for each part written out before the end
            (in file order); ``chunks``, ``vectors`` and ``documents_table`` hold only the rows after them.
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
    documents_table: pa.Table = field(default_factory=DOCUMENTS_SCHEMA.empty_table)
    n_documents: int = 0
    flushed: list[Any] = field(default_factory=list)


_DONE = object()


class StreamCancelled(PipelineError):
    """:func:`load_chunk_embed` was stopped by its ``cancel`` event before every file was parsed."""


class Curator(Protocol):
    """A curation step between parsing and chunking that decides document by document
    (:class:`pipelines.curate.StreamedBoilerplate`)."""

    def add(self, i: int, doc: Document | None) -> list[tuple[int, Document]]:
        """File ``i`` parsed (``None``: failed); the ``(file index, document)`` decided now."""

    def finish(self) -> tuple[list[Document | None], list[tuple[int, Document]]]:
        """Every file delivered: the final document of each file, and those to chunk (again) now."""


def load_chunk_embed(
    files: Sequence[SourceFile],
    params,  # ragline.pipelines.config.Params
    embedder: Callable[[], Embedder],
    progress: Callable[[int], None] | None = None,
    curate: Curator | None = None,
    skip_copies: bool = False,
    after_chunking: Callable[[pa.Table, pa.Table, list[QuarantineRecord]], Any] | None = None,
    keep_documents: bool = True,
    flush: Callable[[pa.Table, pa.Table, np.ndarray, np.ndarray], Any] | None = None,
    flush_chunks: int | None = None,
    cancel: threading.Event | None = None,
) -> StreamResult:
    """Parse, chunk and embed ``files`` with embedding overlapping parsing and chunking.

    Gives the same documents, chunks (ids, offsets, rows) and vectors as
    ``load_documents`` → ``chunk_documents`` → ``embed_chunks`` one after the other: each
    document is chunked and embedded as soon as it is parsed (and curated), in whatever order
    the parsing workers finish, and its rows and vectors take their place in file order at the end.

    Args:
        files: files from :func:`pipelines.load.discover_files`.
        params: the run's :class:`~pipelines.config.Params` (``load``, ``chunk``, ``embed``,
            ``paths.cache``).
        embedder: returns the embedder (called once, in the embedding thread, so a model
            still being built does not hold up parsing).
        progress: called with the number of files whose chunks were embedded (or that were
            quarantined), summing to ``len(files)``.
        curate: a curation step between parsing and chunking that releases each document once
            its outcome is decided (boilerplate removal: :class:`pipelines.curate.StreamedBoilerplate`);
            what its ``finish`` hands back is chunked then, replacing an earlier form.
        skip_copies: do not embed the chunks of a document whose normalized text equals that of
            a document earlier in file order already chunked (an exact copy; see the module
            docstring). Rows and chunk ids are unchanged; the copies' vector rows are zero.
        after_chunking: called in the calling thread with ``(documents_table, chunks, chunk_bad)``
            (as in the result) once the last chunk is queued, while the embedder still embeds
            the queue (duplicate clustering needs the chunks, not their vectors); its return
            value is :attr:`StreamResult.after_chunking`. Not called when the embedder failed,
            nor with ``flush`` once the rows reach ``flush_chunks`` (a part was flushed or will
            be: the caller then takes the rows after the last part as they are).
        keep_documents: False: a document's ``Document`` (text, elements) is dropped once it is
            chunked and its documents-table row built (:attr:`StreamResult.documents` is empty),
            so the parsed corpus is not held as Python objects to the end (issue 12, bounded memory).
        flush: called in the calling thread with ``(documents_table, chunks, vectors,
            not_embedded)`` (as in the result; ``row`` numbered from 0) each time the files
            chunked and embedded so far, from the first not yet flushed, in file order, hold at
            least ``flush_chunks`` chunk rows: those rows and vectors are then dropped here (the
            caller curates them and writes them as a segment), so the stream's memory does not
            grow with the corpus (Lucene's flush). Its return values are
            :attr:`StreamResult.flushed`. A ``curate`` step must never hand back (``finish``) a
            document it released before in another form (:class:`pipelines.curate.StreamedBoilerplate`
            does not).
        flush_chunks: chunk rows per ``flush`` (at least; a part ends at a file boundary).
        cancel: once set, the next file delivered stops the run: the parsing workers are stopped,
            the embedder finishes what is queued, and :class:`StreamCancelled` is raised (an ingest
            started before its flow that the flow never took, ``pipelines/flows.py``).

    Returns:
        :class:`StreamResult`.

    Raises:
        StreamCancelled: ``cancel`` was set.
        ValueError: ``flush`` without ``flush_chunks``.
        RuntimeError: ``curate`` handed back a document of a part already flushed.
        Whatever the embedder, the embedding cache or ``flush`` raise, once the parsing workers
        are done (chunking stops at the error; the files already scheduled are still parsed).
    """
    if flush is not None and not flush_chunks:
        raise ValueError("flush needs flush_chunks")
    n = len(files)
    made: dict[int, tuple[pa.Table, list[QuarantineRecord], np.ndarray]] = {}  # file -> chunks, chunker bad, copies
    doc_rows: dict[int, pa.Table] = {}  # file -> its documents-table row (documents chunked without error)
    vectors_of: dict[int, np.ndarray] = {}  # file -> vectors of its embedded (non-copy) rows
    first_of: dict[str, int] = {}  # exact-duplicate key -> lowest file index chunked with it
    chunked: set[int] = set()  # files chunked (flushed ones included)
    q: queue.Queue = queue.Queue(maxsize=QUEUE_DOCUMENTS)
    state: dict = {"embedded": 0, "error": None, "dim": 0, "parsed": 0}
    failed: set[int] = set()  # files that failed to load
    cut = {"start": 0, "scan": 0, "rows": 0}  # flush: first file not flushed, first not yet ready, rows between
    flushed: list[Any] = []
    flushed_bad: list[QuarantineRecord] = []  # the chunker's records of flushed files, in file order
    t0 = time.perf_counter()
    seconds = dict.fromkeys(("load", "chunk", "load-model", "embed", "embed-idle"), 0.0)
    if curate is not None:
        seconds["curate"] = 0.0
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
                owners: list[tuple[int, int]] = []  # (file index, texts) in pending's order
                pending_files = 0
                while True:
                    t_wait = time.perf_counter()
                    item = q.get()
                    seconds["embed-idle"] += time.perf_counter() - t_wait
                    if item is not _DONE:
                        key, texts, n_files = item
                        pending += texts
                        pending_files += n_files
                        if key is not None:
                            owners.append((key, len(texts)))
                    if owners and (len(pending) >= EMBED_PART or item is _DONE or q.empty()):
                        t_embed = time.perf_counter()
                        vecs, computed = (embed_with_cache(pending, model, cache, params.embed.batch_size)
                                          if pending else (np.zeros((0, model.dim), np.float32), 0))
                        seconds["embed"] += time.perf_counter() - t_embed
                        at = 0
                        for key, k in owners:  # a file chunked again (curation changed it) replaces its vectors
                            vectors_of[key] = vecs[at:at + k]
                            at += k
                        state["embedded"] += computed
                        pending, owners = [], []
                    if progress and pending_files and not owners:
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

    def chunk_and_queue(i: int, doc: Document | None, n_files: int) -> None:
        """Chunk file ``i``'s document (``None``: the file failed to load) and queue its texts."""
        if state["error"] is not None or "flush_error" in state:
            return
        if doc is None:
            put((None, [], n_files))
            return
        t_chunk = time.perf_counter()
        table, bad = chunk_documents([doc], params.chunk, embed_fn=embed_fn, embed_model=params.embed.model)
        texts = indexed_texts(table)
        copies = np.zeros(table.num_rows, dtype=bool)
        if skip_copies and not bad:
            key = content_sha256(doc.text)
            first = first_of.setdefault(key, i)
            if first < i and first in chunked:  # an earlier file with this text is embedded: a copy
                copies[:] = True
                texts = []
            first_of[key] = min(first, i)
        made[i] = (table, bad, copies)
        chunked.add(i)
        if any(q.path == doc.uri for q in bad):
            doc_rows.pop(i, None)
        else:
            doc_rows[i] = documents_to_table([doc])
        seconds["chunk"] += time.perf_counter() - t_chunk
        put((i, texts, n_files))

    def tables_of(parts: list[int]) -> tuple[pa.Table, pa.Table]:
        """The documents table and chunks (``row`` from 0) of files ``parts``, in order."""
        tables = [made[i][0] for i in parts]
        chunks = pa.concat_tables(tables) if tables else CHUNKS_SCHEMA.empty_table()
        chunks = chunks.set_column(0, "row", pa.array(range(chunks.num_rows), pa.int64()))
        rows = [doc_rows.pop(i) for i in parts if i in doc_rows]
        documents = pa.concat_tables(rows).combine_chunks() if rows else DOCUMENTS_SCHEMA.empty_table()
        return documents, chunks

    def vectors_of_files(parts: list[int]) -> np.ndarray:
        """float32 (rows of ``parts``, dim): each file's vectors placed (copies' rows zero) and dropped."""
        dim = state["dim"]
        vectors = np.zeros((sum(made[i][0].num_rows for i in parts), dim), dtype=np.float32)
        at = 0
        for i in parts:
            rows_i = made[i][0].num_rows
            block = vectors[at:at + rows_i]
            block[~made[i][2]] = vectors_of.pop(i, np.zeros((0, dim), np.float32))  # each file's part freed once placed
            at += rows_i
        return vectors

    def maybe_flush() -> None:
        """Hand files on to ``flush``, from the first not flushed to the first (in file order)
        at which they hold ``flush_chunks`` rows, once all of those are chunked and embedded.
        The parts end where the rows do, not where the embedder happens to be: the same files
        give the same segments."""
        while True:
            scan = cut["scan"]
            while scan < n and cut["rows"] < flush_chunks and (scan in failed or scan in vectors_of):
                cut["rows"] += made[scan][0].num_rows if scan in made else 0
                scan += 1
            cut["scan"] = scan
            if cut["rows"] < flush_chunks:
                return
            parts = [i for i in range(cut["start"], scan) if i in made]
            documents, chunks = tables_of(parts)
            vectors = vectors_of_files(parts)
            copies = np.concatenate([made[i][2] for i in parts]) if parts else np.zeros(0, dtype=bool)
            for i in parts:  # the file's rows are the caller's now; its chunker quarantine stays
                flushed_bad.extend(made.pop(i)[1])
            cut["start"], cut["rows"] = scan, 0
            flushed.append(flush(documents, chunks, vectors, copies))
            del documents, chunks, vectors, copies
            release_unused_memory()

    def arrived(i: int, r: Document | QuarantineRecord) -> None:
        if cancel is not None and cancel.is_set():  # raised through load_documents: its workers are stopped
            raise StreamCancelled(f"stopped after {state['parsed']} of {n} files parsed")
        doc = r if isinstance(r, Document) else None
        state["parsed"] += doc is not None
        if curate is None:
            if doc is None:
                failed.add(i)
            chunk_and_queue(i, doc, 1)
        else:
            t_curate = time.perf_counter()
            ready = curate.add(i, doc)
            seconds["curate"] += time.perf_counter() - t_curate
            if doc is None:
                failed.add(i)
                put((None, [], 1))
            for j, d in ready:
                chunk_and_queue(j, d, 1)
        if flush is not None and state["error"] is None and "flush_error" not in state:
            try:
                maybe_flush()
            except BaseException as e:  # chunking stops; raised once the embedder has finished the queue
                state["flush_error"] = e

    worker = threading.Thread(target=embed_loop, name="ragline-embed", daemon=True)
    worker.start()
    after = None
    done_sent = False
    try:
        docs, load_bad = load_documents(files, params.load, deliver=arrived, nice=PARSER_NICE, keep=keep_documents)
        seconds["load"] = time.perf_counter() - t0
        n_documents = state["parsed"]
        if curate is not None:
            t_curate = time.perf_counter()
            final, again = curate.finish()
            seconds["curate"] += time.perf_counter() - t_curate
            docs = [d for d in final if d is not None] if keep_documents else []
            del final  # (n_documents: boilerplate removal never drops a whole document)
            for i, d in again:  # not released before (a file not counted yet), or released in another form
                if i < cut["start"]:
                    raise RuntimeError(f"{d.uri}: curation changed a document of a segment already written")
                chunk_and_queue(i, d, 0 if i in made else 1)
        state["producer_done"] = True
        put(_DONE)
        done_sent = True
        # without flush, or when no part was flushed and none can be (fewer rows than a part):
        # the rows are final now, while the embedder still works (else once every file is embedded, below)
        whole = flush is None or (not flushed and cut["start"] == 0
                                  and sum(t.num_rows for t, _, _ in made.values()) < flush_chunks)
        if whole:
            order = sorted(made)
            documents, chunks = tables_of(order)
            chunk_bad = [q for i in order for q in made[i][1]]
        if after_chunking is not None and whole and state["error"] is None:  # overlaps the embedding of the queue
            t_after = time.perf_counter()
            after = after_chunking(documents, chunks, chunk_bad)
            seconds["after-chunking"] = time.perf_counter() - t_after
    finally:
        if not done_sent:
            state["producer_done"] = True
            put(_DONE)
        worker.join()
    if state["error"] is not None:
        raise state["error"]
    if "flush_error" in state:
        raise state["flush_error"]
    if not whole:
        maybe_flush()  # every file is embedded now: the parts the embedder had not reached
        order = sorted(made)
        documents, chunks = tables_of(order)
        chunk_bad = flushed_bad + [q for i in order for q in made[i][1]]
    not_embedded = np.concatenate([made[i][2] for i in order]) if order else np.zeros(0, dtype=bool)
    vectors = vectors_of_files(order)
    release_unused_memory()  # the per-file parts and the parsing's transient buffers (core/memory.py)
    return StreamResult(docs, load_bad + chunk_bad, chunks, vectors, state["embedded"], chunk_bad,
                        {k: round(v, 3) for k, v in seconds.items()}, not_embedded, after, documents, n_documents,
                        flushed)


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
