"""Dense, BM25 and hybrid retrieval over one published index version, with metadata filters.

Modes:

- ``dense``: the query embedded with the embedder the manifest names, searched in FAISS.
- ``bm25``: BM25 over the same chunk rows (:mod:`indexers.bm25`).
- ``hybrid``: both, each to ``candidates`` rows, fused by

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
deterministic. Filters restrict every mode before ranking (FAISS ``IDSelectorBatch`` for
dense search, a boolean mask for BM25), so ``k`` results are returned whenever ``k`` chunks
pass the filter.
"""

from __future__ import annotations

import contextlib
import fnmatch
import posixpath
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Sequence

import faiss
import numpy as np

from ragline.indexers.bm25 import BM25Index
from ragline.indexers.embedders import HASHING_MODEL, Embedder, make_embedder
from ragline.indexers.manifest import Manifest
from ragline.indexers.registry import IndexRegistry
from ragline.indexers.retriever import PublishedIndex

Mode = Literal["dense", "bm25", "hybrid"]
Fusion = Literal["rrf", "weighted"]
MODES: tuple[str, ...] = ("dense", "bm25", "hybrid")
FUSIONS: tuple[str, ...] = ("rrf", "weighted")
RRF_K = 60


@dataclass(frozen=True, slots=True)
class RetrievalSpec:
    """How to retrieve.

    Attributes:
        k: number of chunks returned.
        mode: ``dense`` | ``bm25`` | ``hybrid``.
        fusion: ``rrf`` | ``weighted`` (hybrid only).
        dense_weight, bm25_weight: fusion weights of the two retrievers (>= 0).
        rrf_k: the RRF rank constant (60 in Cormack et al. 2009).
        candidates: rows each retriever contributes before fusion (hybrid; raised to ``k``).
    """

    k: int = 5
    mode: Mode = "hybrid"
    fusion: Fusion = "rrf"
    dense_weight: float = 1.0
    bm25_weight: float = 1.0
    rrf_k: int = RRF_K
    candidates: int = 50

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; allowed: {', '.join(MODES)}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}; allowed: {', '.join(FUSIONS)}")
        if self.dense_weight < 0 or self.bm25_weight < 0:
            raise ValueError("fusion weights must be >= 0")
        if self.rrf_k < 0 or self.candidates < 1:
            raise ValueError("rrf_k must be >= 0 and candidates >= 1")


@dataclass(frozen=True, slots=True)
class ChunkFilter:
    """Metadata filter on chunks; empty fields do not filter.

    Attributes:
        sources: glob patterns; a chunk passes when its source URI or the URI's base name
            matches one (``"swarming.md"``, ``"*.pdf"``, ``"data/sample/*"``).
        doc_ids: document ids a chunk's ``doc_id`` must be one of.
        pages: allowed page numbers (chunks without a page fail a page filter).
        page_min, page_max: inclusive page range.
        sections: glob patterns; a chunk passes when one title of its section path matches one.
    """

    sources: tuple[str, ...] = ()
    doc_ids: tuple[str, ...] = ()
    pages: tuple[int, ...] = ()
    page_min: int | None = None
    page_max: int | None = None
    sections: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when nothing is filtered."""
        return not (self.sources or self.doc_ids or self.pages or self.sections
                    or self.page_min is not None or self.page_max is not None)


@dataclass(frozen=True, slots=True)
class RetrievedChunk:
    """One retrieved chunk.

    Attributes:
        rank: 1-based rank in the final list.
        score: the mode's score (cosine / negative L2, BM25, or fused score).
        row: chunk row (= FAISS id) in the version.
        chunk_id, doc_id, source: identities of the chunk and its document (source = URI).
        page: page number or ``None``.
        char_start, char_end: half-open character offsets into the document's normalized text.
        section_path: section titles, outermost first.
        text: the chunk text.
        retriever_ranks: ``{"dense": r, "bm25": r}`` 1-based ranks in each retriever's list
            (only retrievers that returned the row).
        retriever_scores: the raw scores behind those ranks.
    """

    rank: int
    score: float
    row: int
    chunk_id: str
    doc_id: str
    source: str
    page: int | None
    char_start: int
    char_end: int
    section_path: tuple[str, ...]
    text: str
    retriever_ranks: Mapping[str, int] = field(default_factory=dict)
    retriever_scores: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready dict (same keys as :meth:`indexers.retriever.Hit.to_dict` plus row and per-retriever ranks)."""
        return {
            "rank": self.rank, "score": self.score, "row": self.row, "chunk_id": self.chunk_id,
            "doc_id": self.doc_id, "source": self.source, "page": self.page, "char_start": self.char_start,
            "char_end": self.char_end, "section_path": list(self.section_path), "text": self.text,
            "retriever_ranks": dict(self.retriever_ranks), "retriever_scores": dict(self.retriever_scores),
        }


def min_max(scores: np.ndarray) -> np.ndarray:
    """Min-max normalize float scores to [0, 1]; all-equal scores map to 1 (Lee, SIGIR 1997)."""
    s = np.asarray(scores, dtype=np.float64)
    if len(s) == 0:
        return s
    lo, hi = float(s.min()), float(s.max())
    if hi - lo <= 0:
        return np.ones_like(s)
    return (s - lo) / (hi - lo)


def rrf_fuse(ranked: Mapping[str, Sequence[int]], weights: Mapping[str, float], rrf_k: int = RRF_K) -> dict[int, float]:
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


class Retriever:
    """Dense / BM25 / hybrid search over one :class:`PublishedIndex` (thread-safe for searching).

    Args:
        published: the loaded version.
        bm25: its BM25 index (:meth:`BM25Index.open`).
        embedder: the query embedder; checked against the manifest. Calls into it are
            serialized unless it declares ``thread_safe = True`` (the ONNX embedder does).

    Raises:
        IndexCompatibilityError: ``embedder`` did not build this index.
    """

    def __init__(self, published: PublishedIndex, bm25: BM25Index, embedder: Embedder) -> None:
        published.check_embedder(embedder)
        self.published = published
        self.bm25 = bm25
        self.embedder = embedder
        self._embed_lock = contextlib.nullcontext() if getattr(embedder, "thread_safe", False) else threading.Lock()
        self._mask_cache: dict[ChunkFilter, np.ndarray] = {}
        cols = published.chunks
        self._chunk_id = cols.column("chunk_id").to_pylist()
        self._doc_id = cols.column("doc_id").to_pylist()
        self._uri = cols.column("uri").to_pylist()
        self._page = cols.column("page").to_pylist()
        self._start = cols.column("char_start").to_pylist()
        self._end = cols.column("char_end").to_pylist()
        self._section = [tuple(s or ()) for s in cols.column("section_path").to_pylist()]
        self._text = cols.column("text").to_pylist()
        self._l2 = published.manifest.index.get("metric") == "l2"

    @classmethod
    def open(cls, registry: IndexRegistry, ref: str, embedder: Embedder | None = None, backend: str = "auto",
             cache_dir: str | Path | None = None, threads: int | None = None) -> "Retriever":
        """Load ``NAME[@ALIAS|@VERSION]``: FAISS index, chunks, BM25 (built on the fly for old versions).

        Without ``embedder``, queries are embedded by the model the manifest names, on
        ``backend`` (``auto``: the index's; or an ``embed.backend`` name) with ``threads`` and ``cache_dir``.

        Raises:
            RegistryError: unknown index, alias or version.
            CorruptRegistryError, OSError, SchemaMismatchError: damaged files.
            IndexCompatibilityError: ``embedder`` does not match the manifest.
        """
        published = PublishedIndex.open(registry, ref)
        bm25 = BM25Index.open(published.path, published.chunks)
        return cls(published, bm25, embedder or embedder_for(published.manifest, backend, cache_dir, threads))

    @property
    def n_chunks(self) -> int:
        """Chunk rows in the version."""
        return len(self._chunk_id)

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
            for i, uri in enumerate(self._uri):
                if uri not in memo:
                    base = posixpath.basename(uri)
                    memo[uri] = any(fnmatch.fnmatchcase(uri, p) or fnmatch.fnmatchcase(base, p) for p in flt.sources)
                m[i] &= memo[uri]
        if flt.doc_ids:
            ids = set(flt.doc_ids)
            m &= np.fromiter((d in ids for d in self._doc_id), dtype=bool, count=n)
        if flt.pages or flt.page_min is not None or flt.page_max is not None:
            pages = set(flt.pages)
            lo = flt.page_min if flt.page_min is not None else -(1 << 62)
            hi = flt.page_max if flt.page_max is not None else 1 << 62
            m &= np.fromiter(((p is not None and (not pages or p in pages) and lo <= p <= hi) for p in self._page),
                             dtype=bool, count=n)
        if flt.sections:
            m &= np.fromiter((any(fnmatch.fnmatchcase(t, p) for t in sec for p in flt.sections) for sec in self._section),
                             dtype=bool, count=n)
        if len(self._mask_cache) < 256:
            self._mask_cache[flt] = m
        return m

    # ---------- single retrievers ----------
    def embed_query(self, query: str) -> np.ndarray:
        """float32 (1, dim) query vector."""
        with self._embed_lock:
            return self.embedder.embed([query])

    def dense(self, query: str, depth: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Dense top-``depth`` rows and scores (higher better; negative L2 distance for ``l2``)."""
        index = self.published.index
        if allowed is not None:
            ids = np.flatnonzero(allowed).astype(np.int64)
            if len(ids) == 0:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            depth = min(depth, len(ids))
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(ids))
        else:
            depth = min(depth, index.ntotal)
            params = None
        if depth <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.ascontiguousarray(self.embed_query(query), dtype=np.float32)
        scores, rows = index.search(q, depth, params=params) if params is not None else index.search(q, depth)
        keep = rows[0] >= 0
        rows_, scores_ = rows[0][keep].astype(np.int64), scores[0][keep].astype(np.float32)
        return rows_, (-scores_ if self._l2 else scores_)

    def lexical(self, query: str, depth: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """BM25 top-``depth`` rows and scores (rows sharing no term with the query are left out)."""
        return self.bm25.search(query, depth, allowed)

    # ---------- the public search ----------
    def search(self, query: str, spec: RetrievalSpec = RetrievalSpec(), flt: ChunkFilter = ChunkFilter()) -> list[RetrievedChunk]:
        """Retrieve up to ``spec.k`` chunks for ``query``.

        Args:
            query: the query text.
            spec: mode, k, fusion and weights.
            flt: metadata filter applied before ranking.

        Returns:
            Ranked chunks, best first (fewer than k when fewer rows pass the filter or, for
            bm25, share a term with the query).
        """
        allowed = self.mask(flt)
        if spec.mode == "dense":
            rows, scores = self.dense(query, spec.k, allowed)
            return self._records(rows.tolist(), scores.tolist(), {"dense": (rows, scores)})
        if spec.mode == "bm25":
            rows, scores = self.lexical(query, spec.k, allowed)
            return self._records(rows.tolist(), scores.tolist(), {"bm25": (rows, scores)})
        depth = max(spec.candidates, spec.k)
        lists = {"dense": self.dense(query, depth, allowed), "bm25": self.lexical(query, depth, allowed)}
        weights = {"dense": spec.dense_weight, "bm25": spec.bm25_weight}
        if spec.fusion == "rrf":
            fused = rrf_fuse({n: r.tolist() for n, (r, _) in lists.items()}, weights, spec.rrf_k)
        else:
            fused = weighted_fuse({n: (r.tolist(), s.tolist()) for n, (r, s) in lists.items()}, weights)
        best_rank: dict[int, int] = {}
        for rows, _ in lists.values():
            for rank, row in enumerate(rows.tolist(), start=1):
                best_rank[row] = min(best_rank.get(row, rank), rank)
        order = sorted(fused, key=lambda r: (-fused[r], best_rank[r], r))[: spec.k]
        return self._records(order, [fused[r] for r in order], lists)

    def _records(self, rows: list[int], scores: list[float], lists: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> list[RetrievedChunk]:
        where: dict[str, dict[int, tuple[int, float]]] = {
            name: {int(r): (i + 1, float(s)) for i, (r, s) in enumerate(zip(rs.tolist(), ss.tolist()))}
            for name, (rs, ss) in lists.items()
        }
        out = []
        for rank, (row, score) in enumerate(zip(rows, scores), start=1):
            ranks = {n: w[row][0] for n, w in where.items() if row in w}
            raw = {n: w[row][1] for n, w in where.items() if row in w}
            out.append(RetrievedChunk(
                rank=rank, score=float(score), row=row, chunk_id=self._chunk_id[row], doc_id=self._doc_id[row],
                source=self._uri[row], page=self._page[row], char_start=self._start[row], char_end=self._end[row],
                section_path=self._section[row], text=self._text[row], retriever_ranks=ranks, retriever_scores=raw,
            ))
        return out
