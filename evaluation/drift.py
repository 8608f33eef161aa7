"""Drift between two published versions of one index (``ragline index drift A B``).

Measures, B compared with A:

- **Counts**: documents and chunks per source folder (the URI's parent path) and per type
  (the file suffix, and the documents' MIME type), with the deltas B - A.
- **Chunk token lengths** (``token_count`` of ``chunks.parquet``, cl100k_base tokens):

  - the two-sample Kolmogorov–Smirnov statistic ``D = sup_x |F_A(x) - F_B(x)|`` of the
    empirical distribution functions (Massey, "The Kolmogorov-Smirnov Test for Goodness of
    Fit", JASA 46(253), 1951), computed by :func:`scipy.stats.ks_2samp` (two-sided; its
    p-value is reported too). D is in [0, 1]; 0 means identical distributions.
  - the population stability index ``PSI = sum_i (b_i - a_i) * ln(b_i / a_i)`` where ``a_i``
    and ``b_i`` are the shares of A's and B's chunks in bin i (Yurdakul, "Statistical
    Properties of Population Stability Index", Western Michigan University, 2018; the
    credit-risk scorecard practice). Bins: the deciles of A's token lengths (duplicate
    edges merged, so integer lengths may give fewer than 10 bins), open-ended at both
    ends; an empty bin's share is floored at 1e-4 so the logarithm stays finite. Rule of
    thumb from that practice: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 large shift.

- **Embeddings** (only when both versions were built by the same embedder: model, revision,
  dimension, normalization; otherwise refused with a message, counts still reported):

  - centroid shift: the cosine distance ``1 - cos(mean(A), mean(B))`` of the mean vectors.
  - novelty: for each chunk of B whose ``chunk_id`` is not in A, the cosine distance to its
    nearest neighbour by cosine among A's live vectors (exact, numpy, in batches of 256), averaged; ``None`` when B has no new chunks.

- **Retrieval** (with a question set): each question is searched in both versions through the
  one :class:`ragline.indexers.retriever.Index` (each version with the embedder that built it,
  settings of ``retrieval:``); per question the Jaccard overlap ``|X ∩ Y| / |X ∪ Y|`` of the
  top-k chunk ids and of their document ids, averaged; and document recall@k of each version
  (:func:`ragline.evaluation.metrics.doc_recall`).

Each version is opened once (:class:`PublishedIndex`: manifest check, FAISS index, chunk table).
"""

from __future__ import annotations

import posixpath
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ragline.evaluation.metrics import doc_recall
from ragline.indexers.embedders import Embedder
from ragline.indexers.registry import IndexRef, IndexRegistry
from ragline.indexers.retrieval import RetrievalConfig
from ragline.indexers.retriever import Index, PublishedIndex, Retriever, embedder_for

PSI_FLOOR = 1e-4
PSI_QUANTILES = 10


@dataclass
class DriftReport:
    """Drift of version ``b`` from version ``a`` of index ``name`` (see the module docstring).

    Attributes:
        name, a, b: index and the two versions (``vNNNN``).
        documents, chunks: ``{"a": n, "b": n, "delta": n}``.
        by_folder, by_suffix, by_mime: key -> ``{"documents": [a, b, delta], "chunks": [a, b, delta]}``
            (``by_mime`` documents only).
        tokens: ``{"a": stats, "b": stats, "ks": D, "ks_pvalue": p, "psi": PSI, "psi_bins": edges}``;
            stats: count, mean, p50, p90, max (tokens).
        embedding: ``{"centroid_shift": d, "new_chunks": n, "new_chunk_nn_distance": d | None}``, or
            ``None`` when refused.
        embedding_refused: why the embedding measures were not computed (``None`` when they were).
        retrieval: ``{"questions", "k", "mode", "chunk_jaccard", "doc_jaccard", "recall_a", "recall_b"}``,
            or ``None`` without questions.
    """

    name: str
    a: str
    b: str
    documents: dict[str, int]
    chunks: dict[str, int]
    by_folder: dict[str, dict[str, list[int]]]
    by_suffix: dict[str, dict[str, list[int]]]
    by_mime: dict[str, dict[str, list[int]]]
    tokens: dict[str, Any]
    embedding: dict[str, Any] | None = None
    embedding_refused: str | None = None
    retrieval: dict[str, Any] | None = None
    alerts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov ``(D, p-value)`` (Massey 1951; :func:`scipy.stats.ks_2samp`,
    two-sided). ``(0.0, 1.0)`` when either sample is empty."""
    from scipy.stats import ks_2samp

    if len(a) == 0 or len(b) == 0:
        return 0.0, 1.0
    with warnings.catch_warnings():  # "exact calculation unsuccessful, switching to asymp": expected, not news
        warnings.simplefilter("ignore", RuntimeWarning)
        r = ks_2samp(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return float(r.statistic), float(r.pvalue)


def psi(a: Sequence[float], b: Sequence[float], quantiles: int = PSI_QUANTILES,
        floor: float = PSI_FLOOR) -> tuple[float, list[float]]:
    """Population stability index of ``b`` against the reference ``a`` (Yurdakul 2018).

    Bins are the ``quantiles``-quantiles of ``a`` (inner edges, duplicates merged), with
    open outer bins; empty shares are floored at ``floor``.

    Returns:
        ``(PSI, inner bin edges)``; ``(0.0, [])`` when either sample is empty.
    """
    a_ = np.asarray(a, dtype=np.float64)
    b_ = np.asarray(b, dtype=np.float64)
    if len(a_) == 0 or len(b_) == 0:
        return 0.0, []
    inner = np.unique(np.quantile(a_, np.linspace(0, 1, quantiles + 1)[1:-1]))
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    pa_ = np.maximum(np.histogram(a_, edges)[0] / len(a_), floor)
    pb_ = np.maximum(np.histogram(b_, edges)[0] / len(b_), floor)
    return float(np.sum((pb_ - pa_) * np.log(pb_ / pa_))), [float(x) for x in inner]


def _stats(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {"count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "max": 0.0}
    return {"count": int(len(x)), "mean": round(float(x.mean()), 3), "p50": float(np.quantile(x, 0.5)),
            "p90": float(np.quantile(x, 0.9)), "max": float(x.max())}


def _folder(uri: str) -> str:
    return posixpath.dirname(uri.replace("\\", "/")) or "."


def _suffix(uri: str) -> str:
    base = posixpath.basename(uri.replace("\\", "/"))
    return ("." + base.rsplit(".", 1)[1].lower()) if "." in base else "(none)"


def _grouped(key: Callable[[str], str], docs_a: list[str], docs_b: list[str],
             chunks_a: list[str] | None, chunks_b: list[str] | None) -> dict[str, dict[str, list[int]]]:
    da, db = Counter(map(key, docs_a)), Counter(map(key, docs_b))
    out: dict[str, dict[str, list[int]]] = {}
    ca = Counter(map(key, chunks_a)) if chunks_a is not None else Counter()
    cb = Counter(map(key, chunks_b)) if chunks_b is not None else Counter()
    for k in sorted(set(da) | set(db) | set(ca) | set(cb)):
        row = {"documents": [da[k], db[k], db[k] - da[k]]}
        if chunks_a is not None:
            row["chunks"] = [ca[k], cb[k], cb[k] - ca[k]]
        out[k] = row
    return out


def vectors_of(index: Any) -> np.ndarray:
    """float32 (ntotal, dim) vectors stored in a FAISS index (flat or HNSW)."""
    n = int(index.ntotal)
    if n == 0:
        return np.zeros((0, int(index.d)), np.float32)
    return np.asarray(index.reconstruct_n(0, n), dtype=np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def embedder_mismatch(ma: Any, mb: Any) -> str | None:
    """Why two manifests' embeddings are not comparable (``None`` when they are)."""
    keys = ("model_id", "revision", "dim", "normalize")
    ea, eb = ma.embedding, mb.embedding
    diff = [k for k in keys if ea.get(k) != eb.get(k)]
    if not diff:
        return None
    shown = ", ".join(f"{k} {ea.get(k)!r} vs {eb.get(k)!r}" for k in diff)
    return (f"embedding measures refused: the versions were built with different embedders ({shown}); "
            "their vectors are not comparable (counts, token lengths and retrieval overlap are still reported)")


def embedding_drift(pa_: PublishedIndex, pb_: PublishedIndex) -> dict[str, Any]:
    """Centroid shift and the mean nearest-neighbour cosine distance of B's new chunks to A."""
    va, vb = pa_.vectors(), pb_.vectors()
    out: dict[str, Any] = {"centroid_shift": None, "new_chunks": 0, "new_chunk_nn_distance": None}
    if len(va) and len(vb):
        ca, cb = va.mean(axis=0), vb.mean(axis=0)
        denom = float(np.linalg.norm(ca) * np.linalg.norm(cb))
        out["centroid_shift"] = round(1.0 - float(ca @ cb) / denom, 6) if denom > 0 else None
    ids_a = set(pa_.rows.column("chunk_id").to_pylist())
    new_rows = [i for i, c in enumerate(pb_.rows.column("chunk_id").to_pylist()) if c not in ids_a]
    out["new_chunks"] = len(new_rows)
    if new_rows and len(va):
        q, ua = _unit(np.ascontiguousarray(vb[new_rows])), _unit(va)
        cos = np.concatenate([np.max(q[i:i + 256] @ ua.T, axis=1) for i in range(0, len(q), 256)])  # exact NN by cosine
        out["new_chunk_nn_distance"] = round(float(np.mean(1.0 - cos)), 6)
    return out


def _jaccard(x: set, y: set) -> float:
    return len(x & y) / len(x | y) if (x or y) else 1.0


def retrieval_drift(ia: Index, ib: Index, questions: Sequence[tuple[str, str]], config: RetrievalConfig) -> dict[str, Any]:
    """Top-k overlap (Jaccard of chunk ids and of doc ids, mean over questions) and recall@k of A and B."""
    hits_a = [ia.search(q, k=config.k) for q, _ in questions]
    hits_b = [ib.search(q, k=config.k) for q, _ in questions]
    cj = [_jaccard({h.chunk_id for h in x}, {h.chunk_id for h in y}) for x, y in zip(hits_a, hits_b)]
    dj = [_jaccard({h.doc_id for h in x}, {h.doc_id for h in y}) for x, y in zip(hits_a, hits_b)]
    ra, rb = doc_recall(config.k, questions, hits_a), doc_recall(config.k, questions, hits_b)
    n = len(questions)
    return {"questions": n, "k": config.k, "mode": config.mode,
            "chunk_jaccard": round(float(np.mean(cj)), 6) if n else None,
            "doc_jaccard": round(float(np.mean(dj)), 6) if n else None,
            "recall_a": round(ra.recall, 6), "recall_b": round(rb.recall, 6)}


def _open_index(pub: PublishedIndex, embedder: Embedder, config: RetrievalConfig) -> Index:
    return Index(Retriever.from_published(pub, embedder), config)


def compute_drift(
    registry: IndexRegistry,
    name: str,
    a: str,
    b: str,
    questions: Sequence[tuple[str, str]] | None = None,
    retrieval: RetrievalConfig = RetrievalConfig(),
    embedder_of: Callable[[Any], Embedder] | None = None,
) -> DriftReport:
    """Drift of ``name@b`` from ``name@a`` (measures and sources in the module docstring).

    Args:
        registry: the registry holding the index.
        name: index name.
        a, b: versions or aliases; ``a`` is the reference (older) side.
        questions: ``(question, doc label)`` pairs for the retrieval measures (``None``: skipped).
        retrieval: how questions are searched (mode, k, fusion, ...).
        embedder_of: manifest -> query embedder (default :func:`embedder_for`, ONNX backend).

    Returns:
        The :class:`DriftReport`.

    Raises:
        RegistryError: unknown index, version or alias.
        CorruptRegistryError: a damaged version (files differ from the manifest).
        SchemaMismatchError: a table of another schema.
    """
    va = registry.resolve(IndexRef(name, a))[1]
    vb = registry.resolve(IndexRef(name, b))[1]
    pub_a = PublishedIndex.open(registry, f"{name}@{va}")
    pub_b = pub_a if vb == va else PublishedIndex.open(registry, f"{name}@{vb}")

    def docs(p: PublishedIndex) -> tuple[list[str], list[str]]:
        t = registry.live_table(name, p.version, "documents", columns=["uri", "mime_type"])
        return t.column("uri").to_pylist(), [m or "(unknown)" for m in t.column("mime_type").to_pylist()]

    (du_a, dm_a), (du_b, dm_b) = docs(pub_a), docs(pub_b)
    cu_a, cu_b = pub_a.rows.column("uri").to_pylist(), pub_b.rows.column("uri").to_pylist()
    tok_a = np.asarray(pub_a.rows.column("token_count").to_numpy(), dtype=np.float64)
    tok_b = np.asarray(pub_b.rows.column("token_count").to_numpy(), dtype=np.float64)
    ks, ks_p = ks_statistic(tok_a, tok_b)
    psi_value, psi_bins = psi(tok_a, tok_b)
    mime = {**dict(zip(du_a, dm_a)), **dict(zip(du_b, dm_b))}
    report = DriftReport(
        name=name, a=va, b=vb,
        documents={"a": len(du_a), "b": len(du_b), "delta": len(du_b) - len(du_a)},
        chunks={"a": len(cu_a), "b": len(cu_b), "delta": len(cu_b) - len(cu_a)},
        by_folder=_grouped(_folder, du_a, du_b, cu_a, cu_b),
        by_suffix=_grouped(_suffix, du_a, du_b, cu_a, cu_b),
        by_mime=_grouped(lambda u: mime.get(u, "(unknown)"), du_a, du_b, None, None),
        tokens={"a": _stats(tok_a), "b": _stats(tok_b), "ks": round(ks, 6), "ks_pvalue": round(ks_p, 6),
                "psi": round(psi_value, 6), "psi_bins": psi_bins},
    )
    refused = embedder_mismatch(pub_a.manifest, pub_b.manifest)
    if refused:
        report.embedding_refused = refused
    else:
        report.embedding = embedding_drift(pub_a, pub_b)
    if questions is not None:
        make = embedder_of or (lambda m: embedder_for(m))
        emb_a = make(pub_a.manifest)
        emb_b = emb_a if not refused else make(pub_b.manifest)
        report.retrieval = retrieval_drift(_open_index(pub_a, emb_a, retrieval), _open_index(pub_b, emb_b, retrieval),
                                           list(questions), retrieval)
    return report


def drift_alerts(report: DriftReport, max_ks: float | None = None, max_psi: float | None = None,
                 max_centroid_shift: float | None = None, max_new_chunk_distance: float | None = None,
                 min_top_k_overlap: float | None = None) -> list[str]:
    """One line per threshold the report exceeds (``None`` thresholds are not checked).

    ``min_top_k_overlap`` applies to the chunk-id Jaccard of the retrieval measures.
    """
    out = []
    t, e, r = report.tokens, report.embedding, report.retrieval
    if max_ks is not None and t["ks"] > max_ks:
        out.append(f"token-length KS {t['ks']:.3f} > drift.max_ks {max_ks:g}")
    if max_psi is not None and t["psi"] > max_psi:
        out.append(f"token-length PSI {t['psi']:.3f} > drift.max_psi {max_psi:g}")
    if e is not None and max_centroid_shift is not None and (e["centroid_shift"] or 0.0) > max_centroid_shift:
        out.append(f"centroid shift {e['centroid_shift']:.4f} > drift.max_centroid_shift {max_centroid_shift:g}")
    if (e is not None and max_new_chunk_distance is not None and e["new_chunk_nn_distance"] is not None
            and e["new_chunk_nn_distance"] > max_new_chunk_distance):
        out.append(f"new-chunk NN distance {e['new_chunk_nn_distance']:.4f} > drift.max_new_chunk_distance "
                   f"{max_new_chunk_distance:g}")
    if (r is not None and min_top_k_overlap is not None and r["chunk_jaccard"] is not None
            and r["chunk_jaccard"] < min_top_k_overlap):
        out.append(f"top-{r['k']} chunk overlap {r['chunk_jaccard']:.3f} < drift.min_top_k_overlap {min_top_k_overlap:g}")
    return out


__all__ = ["DriftReport", "compute_drift", "drift_alerts", "ks_statistic", "psi", "embedding_drift",
           "retrieval_drift", "embedder_mismatch", "vectors_of"]
