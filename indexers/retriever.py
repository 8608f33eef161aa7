"""Open a published index version and search it: the one :class:`Retriever` (dense, BM25,
hybrid) behind ``ragline query``, ``Index.search``, the promotion gate, ``ragline eval
chunking`` and flow retrieve nodes.

Modes (settings: :class:`indexers.retrieval.RetrievalConfig`, the ``retrieval:`` section):

- ``dense``: the query embedded with the embedder that built the index, searched in FAISS.
- ``bm25``: BM25 over the same chunk rows (:mod:`indexers.bm25`).
- ``hybrid``: both, each to ``candidates`` rows (BM25 in a pool thread while FAISS searches in
  the caller's, so the two overlap), fused by

  - reciprocal rank fusion, ``score(d) = sum_m w_m / (rrf_k + rank_m(d))`` with 1-based ranks and
    ``rrf_k = 60`` by default. Source: Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion
    outperforms Condorcet and individual Rank Learning Methods" (SIGIR 2009).
  - weighted score fusion, ``score(d) = sum_m w_m * norm_m(d)`` where ``norm_m`` min-max
    normalizes retriever m's scores over its own candidate list to [0, 1] (a row absent from a
    list contributes 0). Sources: Fox & Shaw, "Combination of Multiple Searches" (TREC-2,
    1994, CombSUM); Lee, "Analyses of Multiple Evidence Combination" (SIGIR 1997, min-max
    normalization); Bruch, Gai & Ingber, "An Analysis of Fusion Functions for Hybrid
    Retrieval" (ACM TOIS 2023, convex combination of min-max scores).

Ties are broken by the better single-retriever rank, then by lower chunk row, so results are
deterministic. Filters restrict every mode before ranking and before fusion (FAISS
``IDSelectorBatch`` for dense search, a boolean mask for BM25), so ``k`` results are
returned whenever ``k`` chunks pass the filter.

A :class:`Retriever` runs over a published version (:meth:`Retriever.open`) or over chunks,
vectors and BM25 held in memory (:meth:`Retriever.in_memory`, what the chunking evaluation
uses), with the same code.

A published version is a list of segments (:mod:`indexers.segments`): dense search fans out
over their FAISS indexes (:class:`indexers.segments.SegmentedDense`, ``ef_search``/``nprobe``
per segment) and BM25 scores with corpus-wide statistics over their live rows
(:class:`indexers.bm25.BM25Corpus`). Opening a version is lazy: each segment's FAISS index is
memory-mapped where its kind allows (:func:`indexers.faiss_index.read_faiss_index`), its
``chunks.parquet`` is opened by its footer only (:class:`core.schemas.ParquetRows`), and a search
reads its hits' rows from the segment's memory-mapped ``chunks.arrow`` (a small segment, which has
none, reads its hit columns from Parquet whole at its first hit; a large one published before
``chunks.arrow``, the row groups holding them; :class:`indexers.segments.SegmentRows` maps global rows);
the columns a metadata filter needs are read whole the first time a filter uses them. Nothing
turns every chunk text into Python objects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import os
import posixpath
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from ragline.core.records import Hit
from ragline.core.schemas import CHUNKS_SCHEMA, DUPLICATES_SCHEMA, HIT_COLUMNS, ParquetRows, read_table
from ragline.indexers.bm25 import BM25Corpus, BM25Index, BM25Spec
from ragline.indexers.embedders import HASHING_MODEL, Embedder, info_of, make_embedder
from ragline.indexers.faiss_index import FaissSpec, build_faiss_index, factory_in, read_faiss_index
from ragline.indexers.segments import (CHUNK_ROWS_FILE, CHUNKS_FILE, DOCUMENTS_FILE, SegmentedDense, SegmentRows,
                                       dead_doc_ids, live_rows, read_vectors)
from ragline.indexers.segments import INDEX_FILE as SEG_INDEX_FILE
from ragline.indexers.manifest import CorruptRegistryError, Manifest, check_embedder
from ragline.indexers.registry import IndexRegistry
from ragline.indexers.retrieval import ChunkFilter, RetrievalConfig

QUARANTINE_FILE = "quarantine.parquet"


class TableRows:
    """A chunk table held in memory, behind :class:`core.schemas.ParquetRows`' interface
    (``num_rows``, ``column``, ``take``, ``table``)."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table
        self.num_rows = int(table.num_rows)

    def column(self, name: str) -> pa.ChunkedArray:
        """One whole column."""
        return self._table.column(name)

    def take(self, rows: list[int], columns: Sequence[str]) -> dict[str, list]:
        """``{column: [value per row]}`` for ``rows`` in the order given."""
        return {c: [self._table.column(c)[r].as_py() for r in rows] for c in columns}

    def table(self) -> pa.Table:
        """The table."""
        return self._table
DUPLICATES_FILE = "duplicates.parquet"  # written by pipelines/curate.py


@dataclass
class PublishedIndex:
    """An opened index version: manifest, its segments' FAISS indexes and live chunk rows.

    Global row ``i`` is the ``i``-th live chunk row, segment after segment in manifest order
    (tombstoned rows are left out). Opening is lazy: each segment's FAISS index is memory-mapped
    where its kind allows (:func:`indexers.faiss_index.read_faiss_index`), its ``chunks.parquet``
    is opened by its footer only (:class:`core.schemas.ParquetRows`) and a search reads its hits'
    rows from the segment's memory-mapped ``chunks.arrow`` (a small segment's from its Parquet
    hit columns, read whole at its first hit).

    Attributes:
        index: dense search over every segment (:class:`indexers.segments.SegmentedDense`).
        rows: the live chunk rows, read on demand (:class:`core.schemas.ParquetRows` for a
            version of one segment without tombstones, else :class:`indexers.segments.SegmentRows`).
        bm25: BM25 over the same rows with corpus-wide statistics (:class:`BM25Corpus`).
        segments: ``(ref, folder, live local rows or None)`` per segment.
    """

    name: str
    version: str
    path: Path
    manifest: Manifest
    index: SegmentedDense
    rows: Any
    bm25: BM25Corpus
    segments: list = field(default_factory=list)
    _table: pa.Table | None = field(default=None, repr=False)

    @property
    def chunks(self) -> pa.Table:
        """The live chunk rows as one table (``CHUNKS_SCHEMA``, ``row`` = global row), read on first use, then kept."""
        if self._table is None:
            self._table = self.rows.table()
        return self._table

    @classmethod
    def open(cls, registry: IndexRegistry, ref: str) -> "PublishedIndex":
        """Load ``NAME[@ALIAS|@VERSION]`` from a registry.

        Every file of the version and of its segments is checked against the manifest first
        (size, and sha256 unless the registry's ``verify`` mode is ``size``: ``index.verify``).

        Raises:
            RegistryError: unknown index, alias or version, or a malformed reference.
            CorruptRegistryError: damaged manifest or alias, or a file that differs from the
                manifest (names the file and its segment; nothing is served).
            SchemaMismatchError: a table of another schema.
        """
        name, version = registry.resolve(ref)
        manifest = registry.check_files(name, version)
        path = registry.version_dir(name, version)
        factory = factory_in(manifest.index)
        faiss_parts, bm25_parts, lives, row_parts, segs = [], [], [], [], []
        for seg in registry.segments(name, version):
            folder = registry.segment_dir(name, seg.id)
            index = read_faiss_index(folder / SEG_INDEX_FILE, mmap=True, factory=factory)
            rows = ParquetRows(folder / CHUNKS_FILE, CHUNKS_SCHEMA, folder / CHUNK_ROWS_FILE)
            if index.ntotal != rows.num_rows or rows.num_rows != seg.chunks:
                raise CorruptRegistryError(
                    f"{folder}: index holds {index.ntotal} vectors, chunks.parquet {rows.num_rows} rows, the manifest "
                    f"says {seg.chunks}; {name}@{version} is damaged: promote another version"
                )
            live = live_rows(folder, dead_doc_ids(manifest.tombstones, seg.id), seg.chunks)
            faiss_parts.append(index)
            bm25_parts.append(BM25Index.open(folder, seg.chunks))
            lives.append(live)
            row_parts.append(rows)
            segs.append((seg, folder, live))
        if len(row_parts) == 1 and lives[0] is None:
            all_rows: Any = row_parts[0]  # one segment, every row live: its rows are the global rows
        else:
            all_rows = SegmentRows(row_parts, lives)
        metric = str(manifest.index.get("metric", "ip"))
        return cls(name, version, path, manifest, SegmentedDense(faiss_parts, lives, metric), all_rows,
                   BM25Corpus(bm25_parts, lives), segs)

    def vectors(self) -> np.ndarray:
        """float32 (n_chunks, dim) vectors of the live rows, in global row order (a read-only
        memory map of the segment's ``vectors.npy`` for a version of one segment without tombstones).

        Raises:
            OSError: a vectors file is damaged, or an old segment's index cannot give its vectors back.
        """
        parts = []
        for (_, folder, live), index in zip(self.segments, self.index.parts):
            v = read_vectors(folder, index)
            parts.append(v if live is None else v[live])
        if len(parts) == 1:
            return parts[0]
        dim = int(self.manifest.embedding.get("dim") or self.index.d or 0)
        return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)

    def check_embedder(self, embedder: Embedder) -> None:
        """Raise :class:`IndexCompatibilityError` unless ``embedder`` built this index."""
        i = info_of(embedder)
        check_embedder(self.manifest, i.model_id, i.revision, i.dim, i.normalize, i.quantization)


def min_max(scores: np.ndarray) -> np.ndarray:
    """Min-max normalize float scores to [0, 1]; all-equal scores map to 1 (Lee, SIGIR 1997)."""
    s = np.asarray(scores, dtype=np.float64)
    if len(s) == 0:
        return s
    lo, hi = float(s.min()), float(s.max())
    if hi - lo <= 0:
        return np.ones_like(s)
    return (s - lo) / (hi - lo)


def rrf_fuse(ranked: Mapping[str, Sequence[int]], weights: Mapping[str, float], rrf_k: int = 60) -> dict[int, float]:
    """Reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009).

    Args:
        ranked: retriever name -> rows best first.
        weights: retriever name -> weight w_m (missing = 1.0).
        rrf_k: rank constant k in ``w_m / (k + rank)``; ranks start at 1.

    Returns:
        row -> fused score.
    """
    fused: dict[int, float] = {}
    for name, rows in ranked.items():
        w = float(weights.get(name, 1.0))
        for rank, row in enumerate(rows, start=1):
            fused[int(row)] = fused.get(int(row), 0.0) + w / (rrf_k + rank)
    return fused


def weighted_fuse(scored: Mapping[str, tuple[Sequence[int], Sequence[float]]], weights: Mapping[str, float]) -> dict[int, float]:
    """Weighted sum of min-max normalized scores (CombSUM with weights; Bruch et al., TOIS 2023).

    Args:
        scored: retriever name -> ``(rows, scores)``, higher score better.
        weights: retriever name -> weight (missing = 1.0).

    Returns:
        row -> fused score; a row missing from a list gets 0 from it.
    """
    fused: dict[int, float] = {}
    for name, (rows, scores) in scored.items():
        w = float(weights.get(name, 1.0))
        for row, n in zip(rows, min_max(np.asarray(scores, dtype=np.float64)).tolist()):
            fused[int(row)] = fused.get(int(row), 0.0) + w * n
    return fused


def embedder_for(manifest: Manifest, backend: str = "auto", cache_dir: str | Path | None = None,
                 threads: int | None = None) -> Embedder:
    """The query embedder a manifest names (``hashing`` with the recorded dim, or the
    packaged/local model on ``backend``: see :func:`indexers.embedders.make_embedder`;
    ``auto``: the index's own backend for bf16/int8 vectors, else onnx,
    :func:`indexers.backends.query_backend_for`)."""
    from ragline.indexers.backends import query_backend_for

    emb = manifest.embedding
    model = str(emb.get("model_id"))
    if model == HASHING_MODEL:
        model = f"{HASHING_MODEL}:{int(emb['dim'])}"
    return make_embedder(model, bool(emb.get("normalize", True)), backend=query_backend_for(emb, backend),
                         cache_dir=cache_dir, threads=threads)


_EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.float32))


class Retriever:
    """Dense / BM25 / hybrid search over one set of chunk rows (thread-safe for searching).

    Row ``i`` of ``chunks`` is global row ``i`` of the dense and BM25 searches. Build one
    with :meth:`open` (a published version: its segments are searched and merged, BM25 with
    corpus-wide statistics) or :meth:`in_memory` (chunks and vectors at hand).

    Args:
        index: a FAISS index over the chunk vectors, or a
            :class:`indexers.segments.SegmentedDense` over several segments.
        chunks: the chunk table (``CHUNKS_SCHEMA``), in memory (``pa.Table``) or read on demand
            (:class:`core.schemas.ParquetRows`, :class:`indexers.segments.SegmentRows`).
        bm25: BM25 over the same rows (:class:`BM25Index` or :class:`BM25Corpus`).
        embedder: the query embedder. Calls into it are serialized unless it declares
            ``thread_safe = True`` (the ONNX embedder does).
        metric: ``ip`` or ``l2`` (L2 distances are negated so that higher is better).
        published: the version the rows come from (``None`` in memory).
        duplicates: the version's ``DUPLICATES_SCHEMA`` table (``duplicates.parquet``), or
            ``None``: each hit then lists the other copies of its passage, and rows of one chunk
            cluster that are all indexed (``curate.duplicates: keep_all``) give one hit.
    """

    def __init__(self, index: Any, chunks: "pa.Table | ParquetRows | TableRows | SegmentRows",
                 bm25: BM25Index | BM25Corpus, embedder: Embedder, *,
                 metric: str = "ip", published: "PublishedIndex | None" = None,
                 duplicates: pa.Table | None = None) -> None:
        rows = TableRows(chunks) if isinstance(chunks, pa.Table) else chunks
        if not isinstance(index, SegmentedDense):
            index = SegmentedDense([index], metric=metric)
        if not isinstance(bm25, BM25Corpus):
            bm25 = BM25Corpus([bm25])
        if index.ntotal != rows.num_rows or bm25.n_chunks != rows.num_rows:
            raise ValueError(f"FAISS holds {index.ntotal} vectors, BM25 {bm25.n_chunks} rows, "
                             f"the chunk table {rows.num_rows} rows: they must be the same rows")
        self.index = index
        self.rows = rows
        self.bm25 = bm25
        self.embedder = embedder
        self.published = published
        self._l2 = metric == "l2"
        self._embed_lock = contextlib.nullcontext() if getattr(embedder, "thread_safe", False) else threading.Lock()
        self._mask_cache: dict[ChunkFilter, np.ndarray] = {}
        self._filter_columns: dict[str, list] = {}
        self._filter_lock = threading.Lock()
        self._copies: dict[int, tuple[str, ...]] = {}
        self._cluster: np.ndarray | None = None
        if duplicates is not None and duplicates.num_rows:  # [curate hook] read the id columns only then
            self._copies, self._cluster = _duplicate_links(duplicates, self._column("chunk_id"), self._column("doc_id"),
                                                           self._column("uri"))

    @property
    def chunks(self) -> pa.Table:
        """The whole chunk table (read on demand for a published version)."""
        return self.rows.table()

    def _column(self, name: str) -> list:
        """A column as Python values, read the first time a filter needs it."""
        with self._filter_lock:
            got = self._filter_columns.get(name)
            if got is None:
                got = self.rows.column(name).to_pylist()
                if name == "section_path":
                    got = [tuple(s or ()) for s in got]
                self._filter_columns[name] = got
            return got

    @classmethod
    def open(cls, registry: IndexRegistry, ref: str, embedder: Embedder | None = None, backend: str = "auto",
             cache_dir: str | Path | None = None, threads: int | None = None, model: str | None = None,
             normalize: bool = True) -> "Retriever":
        """Load ``NAME[@ALIAS|@VERSION]``: every segment's FAISS index, live chunks and BM25 statistics.

        Without ``embedder``, queries are embedded by ``model`` (default: the model the
        manifest names; L2-normalized when ``normalize``) on ``backend`` (``auto``: the index's
        own backend for bf16/int8 vectors, else onnx; or an ``embed.backend`` name) with
        ``threads`` and the model cache ``cache_dir``; the embedder is checked against the manifest.

        Raises:
            IndexNotFound, AliasNotFound, VersionNotFound: unknown index, alias or version.
            CorruptRegistryError, OSError, SchemaMismatchError: damaged files.
            IndexCompatibilityError: ``embedder`` does not match the manifest.
        """
        published = PublishedIndex.open(registry, ref)
        if embedder is None and model is not None:
            from ragline.indexers.backends import query_backend_for

            embedder = make_embedder(model, normalize, backend=query_backend_for(published.manifest.embedding, backend),
                                     cache_dir=cache_dir, threads=threads)
        if embedder is None:
            embedder = embedder_for(published.manifest, backend, cache_dir, threads)
        published.check_embedder(embedder)  # a backend given by name must give the index's identity too
        return cls.from_published(published, embedder)

    @classmethod
    def from_published(cls, published: PublishedIndex, embedder: Embedder) -> "Retriever":
        """Search an opened version with ``embedder`` (not checked here: see :meth:`open`)."""
        dup_path = published.path / DUPLICATES_FILE  # [curate hook] one hit per duplicate cluster
        duplicates = read_table(dup_path, DUPLICATES_SCHEMA) if dup_path.exists() else None
        return cls(published.index, published.rows, published.bm25, embedder,
                   metric=str(published.manifest.index.get("metric", "ip")), published=published,
                   duplicates=duplicates)

    @classmethod
    def in_memory(cls, chunks: pa.Table, vectors: np.ndarray, embedder: Embedder,
                  faiss_spec: FaissSpec = FaissSpec(), bm25_spec: BM25Spec = BM25Spec()) -> "Retriever":
        """Index ``chunks`` and their float32 (n, dim) ``vectors`` in memory (FAISS as
        ``faiss_spec`` says, BM25 as ``bm25_spec`` says), exactly as publishing would."""
        return cls(build_faiss_index(vectors, faiss_spec), chunks, BM25Index.from_chunks(chunks, bm25_spec),
                   embedder, metric=faiss_spec.metric)

    @property
    def n_chunks(self) -> int:
        """Chunk rows searched."""
        return self.rows.num_rows

    def warm_up(self) -> None:
        """Load the embedding model and run one query through it now rather than on the first request."""
        self.embed_query("warm up")
        self.bm25.scores("warm up")

    # ---------- filters ----------
    def mask(self, flt: ChunkFilter) -> np.ndarray | None:
        """bool (n_chunks,) rows passing ``flt``, or ``None`` when it filters nothing."""
        if flt.empty:
            return None
        cached = self._mask_cache.get(flt)
        if cached is not None:
            return cached
        n = self.n_chunks
        m = np.ones(n, dtype=bool)
        if flt.sources:
            memo: dict[str, bool] = {}
            for i, uri in enumerate(self._column("uri")):
                if uri not in memo:
                    base = posixpath.basename(uri)
                    memo[uri] = any(fnmatch.fnmatchcase(uri, p) or fnmatch.fnmatchcase(base, p) for p in flt.sources)
                m[i] &= memo[uri]
        if flt.doc_ids:
            ids = set(flt.doc_ids)
            m &= np.fromiter((d in ids for d in self._column("doc_id")), dtype=bool, count=n)
        if flt.pages or flt.page_min is not None or flt.page_max is not None:
            pages = set(flt.pages)
            lo = flt.page_min if flt.page_min is not None else -(1 << 62)
            hi = flt.page_max if flt.page_max is not None else 1 << 62
            m &= np.fromiter(((p is not None and (not pages or p in pages) and lo <= p <= hi) for p in self._column("page")),
                             dtype=bool, count=n)
        if flt.sections:
            m &= np.fromiter((any(fnmatch.fnmatchcase(t, p) for t in sec for p in flt.sections) for sec in self._column("section_path")),
                             dtype=bool, count=n)
        if len(self._mask_cache) < 256:
            self._mask_cache[flt] = m
        return m

    # ---------- single retrievers ----------
    def embed_query(self, query: str) -> np.ndarray:
        """float32 (1, dim) query vector."""
        with self._embed_lock:
            return self.embedder.embed([query])

    def dense(self, query: str, depth: int, allowed: np.ndarray | None = None,
              vector: np.ndarray | None = None, config: RetrievalConfig = RetrievalConfig()
              ) -> tuple[np.ndarray, np.ndarray]:
        """Dense top-``depth`` rows and scores (higher better; negative L2 distance for ``l2``).

        ``vector`` (float32 (dim,) or (1, dim)) is the query's embedding when the caller has it.
        ``config.ef_search`` / ``config.nprobe`` apply to HNSW / IVF kinds (per query: nothing is
        set on the shared index). Approximate kinds may return fewer than ``depth`` rows.
        """
        if allowed is not None:
            depth = min(depth, int(np.count_nonzero(allowed)))
        else:
            depth = min(depth, self.index.ntotal)
        if depth <= 0:
            return _EMPTY
        q = self.embed_query(query) if vector is None else vector
        q = np.ascontiguousarray(np.asarray(q, dtype=np.float32).reshape(1, -1))
        rows_, scores_ = self.index.search(q, depth, allowed, ef_search=config.ef_search, nprobe=config.nprobe)
        return rows_, (-scores_ if self._l2 else scores_)

    def lexical(self, query: str, depth: int, allowed: np.ndarray | None = None,
                config: RetrievalConfig = RetrievalConfig()) -> tuple[np.ndarray, np.ndarray]:
        """BM25 top-``depth`` rows and scores (rows sharing no term with the query are left out);
        exact unless ``config.bm25_budget`` is set (:meth:`indexers.bm25.BM25Corpus.search`)."""
        return self.bm25.search(query, depth, allowed, budget=config.bm25_budget)

    # ---------- the public search ----------
    def search(self, query: str, config: RetrievalConfig = RetrievalConfig(), flt: ChunkFilter = ChunkFilter(),
               *, vector: np.ndarray | None = None) -> list[Hit]:
        """Retrieve up to ``config.k`` chunks for ``query``.

        Args:
            query: the query text.
            config: mode, k, fusion, weights, candidates.
            flt: metadata filter applied before ranking and fusion.
            vector: the query's embedding, float32 (dim,), when the caller embedded it already
                (the chunking evaluation embeds every question through its cache).

        Returns:
            Ranked hits, best first (fewer than k when fewer rows pass the filter or, for
            bm25, share a term with the query).
        """
        if self._cluster is not None:  # [curate hook] copies indexed side by side: one hit per cluster
            deeper = config.model_copy(update={"k": min(self.n_chunks, config.k * 4),
                                               "candidates": max(config.candidates, config.k * 4)})
            hits, seen = [], set()
            for h in self._search(query, deeper, flt, vector=vector):
                c = int(self._cluster[h.row])
                if c >= 0 and c in seen:
                    continue
                seen.add(c)
                hits.append(h)
            return [dataclasses.replace(h, rank=i) for i, h in enumerate(hits[:config.k], start=1)]
        return self._search(query, config, flt, vector=vector)

    def _search(self, query: str, config: RetrievalConfig, flt: ChunkFilter, *,
                vector: np.ndarray | None = None) -> list[Hit]:
        allowed = self.mask(flt)
        k = config.k
        if config.mode == "dense":
            rows, scores = self.dense(query, k, allowed, vector, config)
            return self._hits(rows.tolist(), scores.tolist(), {"dense": (rows, scores)})
        if config.mode == "bm25":
            rows, scores = self.lexical(query, k, allowed, config)
            return self._hits(rows.tolist(), scores.tolist(), {"bm25": (rows, scores)})
        depth = max(config.candidates, k)
        # BM25 in a pool thread while FAISS (which releases the GIL) searches in this one
        lexical = _side_pool().submit(self.lexical, query, depth, allowed, config)
        lists = {"dense": self.dense(query, depth, allowed, vector, config), "bm25": lexical.result()}
        weights = {"dense": config.weights.dense, "bm25": config.weights.bm25}
        if config.fusion == "rrf":
            fused = rrf_fuse({n: r.tolist() for n, (r, _) in lists.items()}, weights, config.rrf_k)
        else:
            fused = weighted_fuse({n: (r.tolist(), s.tolist()) for n, (r, s) in lists.items()}, weights)
        best_rank: dict[int, int] = {}
        for rows, _ in lists.values():
            for rank, row in enumerate(rows.tolist(), start=1):
                best_rank[row] = min(best_rank.get(row, rank), rank)
        order = sorted(fused, key=lambda r: (-fused[r], best_rank[r], r))[:k]
        return self._hits(order, [fused[r] for r in order], lists)

    def _hits(self, rows: list[int], scores: list[float], lists: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> list[Hit]:
        where: dict[str, dict[int, tuple[int, float]]] = {
            name: {int(r): (i + 1, float(s)) for i, (r, s) in enumerate(zip(rs.tolist(), ss.tolist()))}
            for name, (rs, ss) in lists.items()
        }
        got = self.rows.take([int(r) for r in rows], HIT_COLUMNS)
        out = []
        for i, (row, score) in enumerate(zip(rows, scores)):
            ranks = {n: w[row][0] for n, w in where.items() if row in w}
            raw = {n: w[row][1] for n, w in where.items() if row in w}
            out.append(Hit(
                rank=i + 1, score=float(score), row=row, chunk_id=got["chunk_id"][i], doc_id=got["doc_id"][i],
                source=got["uri"][i], page=got["page"][i], char_start=got["char_start"][i], char_end=got["char_end"][i],
                section_path=tuple(got["section_path"][i] or ()), text=got["text"][i], retriever_ranks=ranks,
                retriever_scores=raw, duplicates=self._copies.get(row, ()),
            ))
        return out


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _forget_pool_in_child() -> None:
    """A forked child inherits neither the pool's threads nor a usable lock (a parent thread
    may have held it at the fork): it starts with none and makes its own on first use."""
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)


def _side_pool() -> ThreadPoolExecutor:
    """This process's threads that run a hybrid search's BM25 beside its dense search (made on
    first use, and again in a forked child, which inherits no threads)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="ragline-bm25")
        return _POOL


def _duplicate_links(duplicates: pa.Table | None, chunk_ids: Sequence[str], doc_ids: Sequence[str],
                     uris: Sequence[str]) -> tuple[dict[int, tuple[str, ...]], np.ndarray | None]:
    """From ``duplicates.parquet``: row -> other sources carrying the passage (chunk cluster members
    and, for a document cluster, the other copies of the document), and int64 (n_rows,) chunk
    cluster numbers (-1: none) when two indexed rows share a cluster, else ``None``."""
    if duplicates is None or duplicates.num_rows == 0:
        return {}, None
    members: dict[tuple[str, str], list[str]] = {}
    cluster_of: dict[tuple[str, str], str] = {}
    for r in duplicates.to_pylist():
        members.setdefault((r["level"], r["cluster_id"]), []).append(r["uri"])
        cluster_of[(r["level"], r["member_id"])] = r["cluster_id"]
    copies: dict[int, tuple[str, ...]] = {}
    cluster = np.full(len(chunk_ids), -1, dtype=np.int64)
    numbers: dict[str, int] = {}
    for row, (cid, did, uri) in enumerate(zip(chunk_ids, doc_ids, uris)):
        found: list[str] = []
        for level, member in (("chunk", cid), ("document", did)):
            key = cluster_of.get((level, member))
            if key is not None:
                found += members[(level, key)]
                if level == "chunk":
                    cluster[row] = numbers.setdefault(key, len(numbers))
        others = tuple(dict.fromkeys(u for u in found if u != uri))
        if others:
            copies[row] = others
    used = cluster[cluster >= 0]
    shared = len(used) != len(np.unique(used))
    return copies, (cluster if shared else None)


class Index:
    """A published index version opened for searching (what ``ragline.open_index`` returns).

    Args:
        retriever: the :class:`Retriever` over the version.
        defaults: the retrieval settings a search uses unless told otherwise (the params'
            ``retrieval:`` section).
    """

    def __init__(self, retriever: Retriever, defaults: RetrievalConfig = RetrievalConfig()) -> None:
        if retriever.published is None:
            raise ValueError("Index needs a retriever over a published version (Retriever.open)")
        self.retriever = retriever
        self.defaults = defaults

    @classmethod
    def open(cls, root: str | Path, ref: str, *, defaults: RetrievalConfig = RetrievalConfig(),
             query_backend: str = "auto", cache_dir: str | Path | None = None, model: str | None = None,
             normalize: bool = True, threads: int | None = None, verify: str = "sha256") -> "Index":
        """Open ``NAME[@ALIAS|@VERSION]`` under the registry folder ``root`` (what
        ``ragline.open_index`` and ``ragline query`` call).

        Args:
            root: the registry folder (``index.root``).
            ref: the index reference; an alias is resolved now.
            defaults: the search defaults (the ``retrieval:`` section).
            query_backend: ``onnx`` or ``torch``.
            cache_dir: where the ONNX export of the query model lives (``paths.cache``).
            model: query embedding model (default: the one the manifest records), L2-normalized
                when ``normalize``.
            threads: ONNX Runtime threads for query embedding (default 2).
            verify: ``sha256`` or ``size``: how the version's files are checked against the
                manifest before they are served (``index.verify``).

        Raises:
            ConfigError: ``query_backend`` is not ``auto`` or an installed ``embed.backend``.
            IndexNotFound, AliasNotFound, VersionNotFound: no such index, alias or version.
            CorruptRegistryError: damaged registry files.
            IndexCompatibilityError: ``model`` did not build the version.
        """
        from ragline.indexers.backends import require_backend

        require_backend(query_backend, allow_auto=True)
        retriever = Retriever.open(IndexRegistry(root, verify=verify), ref, backend=query_backend, cache_dir=cache_dir,
                                   threads=threads, model=model, normalize=normalize)
        return cls(retriever, defaults)

    @property
    def name(self) -> str:
        """The index name."""
        return self.retriever.published.name  # type: ignore[union-attr]

    @property
    def version(self) -> str:
        """The version id, ``vNNNN`` (an alias was resolved when the index was opened)."""
        return self.retriever.published.version  # type: ignore[union-attr]

    @property
    def manifest(self) -> Manifest:
        """The version's manifest (files, counts, embedding, chunker, params)."""
        return self.retriever.published.manifest  # type: ignore[union-attr]

    @property
    def path(self) -> Path:
        """The version folder."""
        return self.retriever.published.path  # type: ignore[union-attr]

    def search(self, query: str, *, k: int | None = None, mode: str | None = None, fusion: str | None = None,
               filters: Mapping[str, Any] | ChunkFilter | None = None) -> list[Hit]:
        """Search the version.

        Args:
            query: the query text.
            k: chunks returned (default: ``retrieval.k``, 5 as shipped).
            mode: ``dense`` | ``bm25`` | ``hybrid`` (default: ``retrieval.mode``).
            fusion: ``weighted`` | ``rrf`` for hybrid (default: ``retrieval.fusion``).
            filters: ``{"source": GLOB, "doc_id": ID, "page": N | [N, ...] | {"min", "max"},
                "section": GLOB}`` (lists allowed; applied before ranking and fusion).

        Returns:
            Ranked :class:`ragline.core.records.Hit` records, best first.

        Raises:
            ConfigError: an unknown mode, fusion or filter key, or ``k`` < 1 (names the value
                and the allowed ones).
        """
        config = self.defaults.override("Index.search", k=k, mode=mode, fusion=fusion)
        flt = filters if isinstance(filters, ChunkFilter) else ChunkFilter.from_mapping(filters, "filters")
        return self.retriever.search(query, config, flt)

    def __repr__(self) -> str:
        return f"Index({self.name}@{self.version}, {self.retriever.n_chunks} chunks, {self.defaults.mode})"


__all__ = ["PublishedIndex", "TableRows", "HIT_COLUMNS", "Retriever", "Index", "Hit", "min_max", "rrf_fuse",
           "weighted_fuse", "embedder_for", "CHUNKS_FILE", "CHUNK_ROWS_FILE", "DOCUMENTS_FILE", "QUARANTINE_FILE"]
