"""Chunking evaluation on span-labelled retrieval questions (``ragline eval chunking``).

The dataset format is the one of Chroma's chunking benchmark ("Evaluating Chunking
Strategies for Retrieval", Smith & Troynikov, 2024; github.com/brandonstarxel/chunking_evaluation):
a folder with ``corpora/<corpus_id>.md`` (plain text, read as UTF-8, unchanged) and
``questions.csv`` with columns ``question``, ``references``, ``corpus_id``, where
``references`` is a JSON list of ``{"content", "start_index", "end_index"}`` giving Python
character offsets into the corpus text. ``questions.jsonl`` with one
``{"question", "corpus_id", "references": [...]}`` object per line is accepted too.

Every corpus is chunked as one document with the ``chunk:`` params, embedded through the
persistent embedding cache (so a rerun with another ``k`` embeds nothing), indexed in one
FAISS index over all corpora, and every question retrieves ``k`` chunks. The metrics are
computed on character spans exactly as Chroma's ``BaseEvaluation`` computes them
(``_scores_from_dataset_and_retrievals`` and ``_full_precision_score``):

* recall = |∪retrieved ∩ ∪references| / Σ|reference|
* precision = |∪retrieved ∩ ∪references| / Σ|retrieved chunk| (all k chunks, any corpus)
* IoU = |∪retrieved ∩ ∪references| / (Σ|retrieved chunk| + Σ|reference − ∪retrieved|)
* precision_Ω = |∪S ∩ ∪references| / |∪S ∪ ∪references|, S = the corpus chunks that
  intersect a reference

where only retrieved chunks of the question's own corpus can intersect its references.
Two details follow Chroma's code rather than a looser reading of the report: sums (not
unions) are used where Chroma sums (reference lengths, retrieved lengths — overlapping
retrieved chunks count twice in the denominators), and Chroma tests intersection on closed
intervals (``max(starts) <= min(ends)``), so for precision_Ω a chunk that only *touches* a
reference (``chunk.end == ref.start``) counts as one of S and enlarges the denominator.
"""

from __future__ import annotations

import csv
import json
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from ragline.chunkers.base import ConfigError, ElementSpan
from ragline.indexers.cache import EmbeddingCache, embed_with_cache
from ragline.indexers.embedders import Embedder, info_of
from ragline.indexers.retrieval import RetrievalConfig
from ragline.indexers.retriever import Retriever
from ragline.pipelines.chunk import chunk_documents, chunker_record
from ragline.pipelines.config import Params
from ragline.pipelines.embed import embed_chunks, index_embedder
from ragline.pipelines.errors import PipelineError
from ragline.pipelines.load import Document, doc_id_for
from ragline.core.hashing import sha256_bytes
from ragline.evaluation.metrics import MetricMeans
from ragline.evaluation.spans import omega_precision, retrieval_scores

CORPUS_SUFFIXES = (".md", ".txt")
QUESTION_FILES = ("questions.csv", "questions.jsonl")
METRICS = ("recall", "precision", "iou", "precision_omega")


class DatasetError(PipelineError):
    """The evaluation dataset is missing, malformed, or its offsets do not match its corpora."""


# ----------------------------------------------------------------------------- dataset
@dataclass(frozen=True, slots=True)
class Reference:
    """One labelled excerpt: ``corpus[start:end]`` (half-open character offsets)."""

    start: int
    end: int
    content: str = ""


@dataclass(frozen=True, slots=True)
class Question:
    """A question, its corpus and the excerpts that answer it."""

    question: str
    corpus_id: str
    references: tuple[Reference, ...]


@dataclass(frozen=True)
class EvalDataset:
    """A loaded span-labelled dataset.

    Attributes:
        root: the dataset folder.
        corpora: corpus id -> corpus text (exactly the file's characters).
        questions: questions in evaluation order.
    """

    root: str
    corpora: Mapping[str, str]
    questions: tuple[Question, ...]

    @property
    def name(self) -> str:
        """Folder name of the dataset."""
        return Path(self.root).name


def load_dataset(
    root: str | Path,
    corpora: Sequence[str] | None = None,
    limit_questions: int | None = None,
) -> EvalDataset:
    """Load a span-labelled dataset folder (CSV or JSONL questions).

    Args:
        root: folder with ``corpora/*.md`` (or ``*.txt``) and ``questions.csv`` or
            ``questions.jsonl`` (the CSV wins when both exist).
        corpora: keep only these corpus ids (``None`` or empty: all).
        limit_questions: keep at most this many questions, taken in turn from each corpus
            in file order (so a short run still covers every corpus); ``None``: all.

    Returns:
        The dataset; its corpora are the selected corpus files (all of them are indexed,
        whether or not a kept question refers to them).

    Raises:
        DatasetError: missing folder or files, malformed rows, a reference outside its
            corpus or whose ``content`` differs from ``corpus[start:end]``.
        ConfigError: an unknown corpus id in ``corpora`` or ``limit_questions`` < 1.
    """
    root = Path(root)
    folder = root / "corpora"
    if not folder.is_dir():
        raise DatasetError(f"{root}: no corpora/ folder; expected corpora/<corpus_id>.md and questions.csv")
    texts: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix in CORPUS_SUFFIXES and path.is_file():
            try:
                texts[path.stem] = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as e:
                raise DatasetError(f"{path}: not UTF-8 text ({e})") from e
    if not texts:
        raise DatasetError(f"{folder}: no corpus files (*.md, *.txt)")
    if corpora:
        unknown = sorted(set(corpora) - set(texts))
        if unknown:
            raise ConfigError(f"eval.corpora: unknown corpus id(s) {', '.join(unknown)}; allowed: {', '.join(texts)}")
        texts = {c: texts[c] for c in texts if c in set(corpora)}
    if limit_questions is not None and limit_questions < 1:
        raise ConfigError(f"eval.limit_questions must be >= 1 (got {limit_questions})")
    qfile = next((root / n for n in QUESTION_FILES if (root / n).is_file()), None)
    if qfile is None:
        raise DatasetError(f"{root}: no {' or '.join(QUESTION_FILES)}")
    rows = _read_question_rows(qfile)
    questions = [q for q in (_parse_question(r, where, texts) for where, r in rows) if q is not None]
    if limit_questions is not None:
        questions = _round_robin(questions, limit_questions)
    if not questions:
        raise DatasetError(f"{qfile}: no questions for corpora {', '.join(texts)}")
    return EvalDataset(str(root), texts, tuple(questions))


def _read_question_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines(keepends=True))
        missing = {"question", "references", "corpus_id"} - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        return [(f"{path}:row {i}", row) for i, row in enumerate(reader, start=2)]
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{i}: not JSON ({e})") from e
            if not isinstance(obj, dict):
                raise DatasetError(f"{path}:{i}: expected a JSON object")
            rows.append((f"{path}:{i}", obj))
    return rows


def _parse_question(row: Mapping[str, Any], where: str, texts: Mapping[str, str]) -> Question | None:
    try:
        question, corpus_id, refs = str(row["question"]), str(row["corpus_id"]), row["references"]
    except KeyError as e:
        raise DatasetError(f"{where}: missing field {e.args[0]!r}") from None
    if corpus_id not in texts:
        return None  # a corpus left out with --corpora (unknown ids fail below)
    if isinstance(refs, str):
        try:
            refs = json.loads(refs)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where}: references is not JSON ({e})") from e
    if not isinstance(refs, list) or not refs:
        raise DatasetError(f"{where}: references must be a non-empty list")
    corpus = texts[corpus_id]
    out = []
    for ref in refs:
        try:
            start, end = int(ref["start_index"]), int(ref["end_index"])
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{where}: a reference needs integer start_index and end_index ({e})") from None
        if not 0 <= start < end <= len(corpus):
            raise DatasetError(f"{where}: reference ({start}, {end}) outside corpus {corpus_id!r} of {len(corpus)} chars")
        content = ref.get("content")
        if content is not None and corpus[start:end] != content:
            raise DatasetError(f"{where}: corpus {corpus_id!r}[{start}:{end}] differs from the reference content")
        out.append(Reference(start, end, content or ""))
    return Question(question, corpus_id, tuple(out))


def _round_robin(questions: list[Question], n: int) -> list[Question]:
    by_corpus: dict[str, list[Question]] = {}
    for q in questions:
        by_corpus.setdefault(q.corpus_id, []).append(q)
    queues = list(by_corpus.values())
    out: list[Question] = []
    depth = 0
    while len(out) < n and any(depth < len(qs) for qs in queues):
        out.extend(qs[depth] for qs in queues if depth < len(qs))
        depth += 1
    return out[:n]


# ------------------------------------------------------------------- corpora as documents
_WIKI_HEADING = re.compile(r"^ ?((?:= )+)([^=].*?)((?: =)+) ?$")
_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")


def corpus_elements(text: str) -> tuple[ElementSpan, ...]:
    """Element spans of a plain-text corpus, for the structure strategy and for context.

    Every non-blank line is an element; a Markdown heading (``## Title``) or a wikitext
    heading (`` = = Title = = ``) is a ``Title`` whose level sets the section path of the
    lines after it. Offsets are into ``text`` itself (nothing is normalized).
    """
    out: list[ElementSpan] = []
    path: list[tuple[int, str]] = []
    pos = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        start = pos
        pos += len(line)
        stripped = body.strip()
        if not stripped:
            continue
        level, title = _heading(stripped, body)
        if title:
            path = [(lv, t) for lv, t in path if lv < level] + [(level, title)]
            kind = "Title"
        else:
            kind = "NarrativeText"
        lead = len(body) - len(body.lstrip())
        out.append(ElementSpan(kind, start + lead, start + len(body.rstrip()), None, tuple(t for _, t in path)))
    return tuple(out)


def _heading(stripped: str, body: str) -> tuple[int, str]:
    m = _MD_HEADING.match(stripped)
    if m:
        return len(m.group(1)), m.group(2).strip()
    m = _WIKI_HEADING.match(body)
    if m and m.group(1).count("=") == m.group(3).count("=") and m.group(2).strip():
        return m.group(1).count("="), m.group(2).strip()
    return 0, ""


def corpus_documents(dataset: EvalDataset) -> list[Document]:
    """One :class:`Document` per corpus: text unchanged, title = corpus id with spaces."""
    docs = []
    for cid, text in dataset.corpora.items():
        raw = text.encode("utf-8")
        docs.append(Document(
            doc_id=doc_id_for(cid), uri=cid, sha256=sha256_bytes(raw),
            mime_type="text/markdown", size_bytes=len(raw), title=cid.replace("_", " "),
            text=text, elements=corpus_elements(text),
        ))
    return docs


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class CorpusResult:
    """Metrics and chunk statistics of one corpus."""

    corpus_id: str
    metrics: MetricMeans
    chunks: int
    mean_chunk_tokens: float
    chars: int


@dataclass(frozen=True)
class ChunkingEvalResult:
    """Everything ``ragline eval chunking`` reports.

    Attributes:
        dataset: dataset folder.
        k: chunks retrieved per question.
        chunk: the ``chunk:`` params evaluated (strategy, options, context).
        fingerprint: the chunker's fingerprint.
        embedder: model id, revision and dim.
        overall: means over all questions.
        corpora: per-corpus results, in corpus order.
        chunks: number of chunks over all corpora.
        mean_chunk_tokens: mean cl100k tokens per chunk.
        corpus_bytes: UTF-8 bytes chunked.
        chunk_seconds: wall time of the chunk stage over all corpora (chunking and building the
            chunks table; tokenizer loading excluded; for ``semantic`` also embedding the
            sentences, through the cache) (s).
        embed_seconds: wall time of embedding chunks and questions, cache lookups included (s).
        embedded_now: texts embedded by the model in this run (cache misses).
        cache_hits: texts whose vectors came from the cache.
        per_question: per-question ``(recall, precision, iou, precision_omega)``, float64 (n, 4).
        retrieval: search mode, e.g. ``{"mode": "hybrid", "fusion": "weighted", "weights":
            {"dense": 0.5, "bm25": 0.5}, "candidates": 50}`` (``{"mode": "dense"}`` for dense;
            :meth:`indexers.retrieval.RetrievalConfig.record`).
        retrieved_ids: per question, the chunk ids retrieved, best first.
        curation_removed_chunks: chunks that curation (``curate:`` params, duplicate clusters
            over the corpora's chunks; boilerplate is not removed, the labels index the raw
            corpus text) would leave out of an index; the evaluation itself scores every chunk.
    """

    dataset: str
    k: int
    chunk: dict[str, Any]
    fingerprint: str
    embedder: dict[str, Any]
    overall: MetricMeans
    corpora: tuple[CorpusResult, ...]
    chunks: int
    mean_chunk_tokens: float
    corpus_bytes: int
    chunk_seconds: float
    embed_seconds: float
    embedded_now: int
    cache_hits: int
    per_question: np.ndarray = field(repr=False, compare=False)
    retrieval: dict[str, Any] = field(default_factory=lambda: {"mode": "dense"})
    retrieved_ids: tuple[tuple[str, ...], ...] = field(default=(), repr=False, compare=False)
    curation_removed_chunks: int = 0

    @property
    def chunk_mb_per_s(self) -> float:
        """Chunking throughput in MB (10^6 bytes of UTF-8) per second."""
        return self.corpus_bytes / 1e6 / self.chunk_seconds if self.chunk_seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``--json``); the per-question array is left out."""
        d = {k: v for k, v in asdict(self).items() if k not in ("per_question", "retrieved_ids")}
        d["corpora"] = {c.corpus_id: {**asdict(c.metrics), "chunks": c.chunks, "mean_chunk_tokens": c.mean_chunk_tokens,
                                      "chars": c.chars} for c in self.corpora}
        d["chunk_mb_per_s"] = self.chunk_mb_per_s
        return d

    def metrics_dict(self) -> dict[str, Any]:
        """The flat metrics a DVC ``metrics:`` file holds (what ``dvc exp show`` compares)."""
        o = self.overall
        return {"recall": round(o.recall, 4), "precision": round(o.precision, 4), "iou": round(o.iou, 4),
                "precision_omega": round(o.precision_omega, 4), "questions": o.questions, "k": self.k,
                "mode": self.retrieval["mode"],
                "chunks": self.chunks, "mean_chunk_tokens": round(self.mean_chunk_tokens, 1),
                "chunk_seconds": round(self.chunk_seconds, 3), "embed_seconds": round(self.embed_seconds, 3),
                "curation_removed_chunks": self.curation_removed_chunks}

    def plot_rows(self) -> list[dict[str, Any]]:
        """Recall-vs-IoU points: one row for ``all`` and one per corpus."""
        rows = [{"corpus": "all", "recall": round(self.overall.recall, 4), "iou": round(self.overall.iou, 4)}]
        rows += [{"corpus": c.corpus_id, "recall": round(c.metrics.recall, 4), "iou": round(c.metrics.iou, 4)}
                 for c in self.corpora]
        return rows


def config_label(chunk: Mapping[str, Any]) -> str:
    """Short label of a chunk config, e.g. ``recursive 128/32 +ctx`` (strategy, max/overlap)."""
    opts = chunk.get("options", chunk)
    size = str(opts.get("max_tokens", "?"))
    if "overlap_tokens" in opts:
        size += f"/{opts['overlap_tokens']}"
    elif "overlap_sentences" in opts:
        size += f"/{opts['overlap_sentences']}s"
    extra = [f"{k}={v}" for k, v in opts.items()
             if k not in {"max_tokens", "overlap_tokens", "overlap_sentences", "encoding", "strategy", "context"}]
    label = f"{chunk['strategy']} {size}" + (f" {' '.join(extra)}" if extra else "")
    return label + (" +ctx" if chunk.get("context") else "")


def retrieval_label(retrieval: Mapping[str, Any]) -> str:
    """Short label of a search mode: ``dense``, ``bm25``, ``hybrid rrf`` or ``hybrid weighted 0.5/0.5``."""
    mode = str(retrieval.get("mode", "dense"))
    if mode != "hybrid":
        return mode
    w = retrieval.get("weights", {})
    label = f"hybrid {retrieval.get('fusion', 'rrf')}"
    if w and w.get("dense") != w.get("bm25"):
        label += f" {w.get('dense'):g}/{w.get('bm25'):g}"
    return label


# -------------------------------------------------------------------------- evaluation
def evaluate_chunking(
    dataset: EvalDataset,
    params: Params,
    k: int | None = None,
    embedder: Embedder | None = None,
    progress: Callable[[str, int | None], Any] | None = None,
) -> ChunkingEvalResult:
    """Chunk, embed and index every corpus of ``dataset``; retrieve ``k`` chunks per question.

    Args:
        dataset: the loaded dataset.
        params: validated params; uses ``chunk:``, ``embed:`` (model, batch size,
            normalization), ``index:`` (kind, metric, HNSW settings, BM25), ``paths.cache`` and
            ``retrieval:`` (the search mode, as every caller retrieves).
        k: chunks retrieved per question (>= 1; default: ``retrieval.k``).
        embedder: an embedder to reuse (default: built from ``embed.model``).
        progress: optional ``progress(stage, total)`` returning a context manager that yields
            ``advance(n)`` (a :class:`pipelines.progress.Reporter`'s ``stage``).

    Returns:
        The result; every chunk's offsets index the corpus text directly.

    Raises:
        ConfigError: invalid ``chunk:`` params or ``k`` < 1.
        PipelineError: the chunker failed on a corpus.
    """
    config = params.retrieval.override("-k", k=k)
    k = config.k
    embedder = embedder or index_embedder(params)
    stage = progress or _no_progress
    cache_dir = params.paths.cache
    docs = corpus_documents(dataset)
    embed_fn = None
    if params.chunk.needs_embedder:
        def embed_fn(texts: Sequence[str]) -> np.ndarray:  # sentence vectors through the cache
            return _embed_texts(list(texts), embedder, cache_dir, params.embed.batch_size)[0]
    if embed_fn is None:  # load tokenizer tables and table code now: the timing is chunking only
        chunk_documents([replace(docs[0], text="Warm up. Then time.", elements=())], params.chunk)
    with stage("chunk", len(docs)) as advance:
        t0 = time.perf_counter()
        chunks, bad = chunk_documents(docs, params.chunk, embed_fn=embed_fn, progress=advance,
                                      embed_model=params.embed.model)
        chunk_seconds = time.perf_counter() - t0
    if bad:
        raise PipelineError("; ".join(f"chunking {b.path} failed: {b.error_type}: {b.message}" for b in bad))
    from ragline.pipelines.curate import curate_chunks  # [curate hook] what curation would leave out
    from ragline.pipelines.load import documents_to_table

    curation, _ = curate_chunks(documents_to_table(docs), chunks, params.curate)
    with stage("embed", chunks.num_rows + len(dataset.questions)) as advance:
        t0 = time.perf_counter()
        vectors, computed = embed_chunks(chunks, embedder, cache_dir, params.embed.batch_size, progress=advance)
        qvecs, q_computed = _embed_texts([q.question for q in dataset.questions], embedder, cache_dir,
                                         params.embed.batch_size, advance)
        embed_seconds = time.perf_counter() - t0
    retriever = Retriever.in_memory(chunks, vectors, embedder, params.index.faiss_spec(), params.index.bm25_spec())
    rows, retrieved_ids = retrieve_rows(retriever, config, [q.question for q in dataset.questions], qvecs)
    per_question, by_corpus = _score(dataset, chunks, rows)
    tokens = np.asarray(chunks.column("token_count").to_numpy(), dtype=np.float64)
    corpus_of = np.asarray(chunks.column("uri").to_pylist(), dtype=object)
    corpora = []
    for cid, text in dataset.corpora.items():
        sel = corpus_of == cid
        corpora.append(CorpusResult(cid, MetricMeans.of(per_question[by_corpus[cid]]), int(sel.sum()),
                                    float(tokens[sel].mean()) if sel.any() else 0.0, len(text)))
    info = info_of(embedder)
    record = chunker_record(params.chunk, params.embed.model)
    n_texts = chunks.num_rows + len(dataset.questions)
    return ChunkingEvalResult(
        dataset=dataset.root, k=k,
        chunk={"strategy": params.chunk.strategy, "options": record["options"], "context": params.chunk.context},
        fingerprint=record["fingerprint"],
        embedder={"model_id": info.model_id, "revision": info.revision, "dim": info.dim,
                  **({"quantization": info.quantization} if info.quantization else {})},  # bf16/int8: which backend
        overall=MetricMeans.of(per_question), corpora=tuple(corpora), chunks=chunks.num_rows,
        mean_chunk_tokens=float(tokens.mean()) if len(tokens) else 0.0,
        corpus_bytes=sum(len(t.encode("utf-8")) for t in dataset.corpora.values()),
        chunk_seconds=chunk_seconds, embed_seconds=embed_seconds,
        embedded_now=computed + q_computed, cache_hits=n_texts - computed - q_computed,
        per_question=per_question, retrieval=config.record(), retrieved_ids=retrieved_ids,
        curation_removed_chunks=curation.removed_chunks,
    )


def retrieve_rows(retriever: Retriever, config: RetrievalConfig, questions: Sequence[str],
                  qvecs: np.ndarray) -> tuple[np.ndarray, tuple[tuple[str, ...], ...]]:
    """Top-``config.k`` chunk rows per question through the one :class:`indexers.retriever.Retriever`
    (the code ``ragline query`` and flows run), with the questions' vectors precomputed.

    Args:
        retriever: the retriever over the evaluated chunks (:meth:`Retriever.in_memory`).
        config: mode, fusion, weights, candidates and k (the ``retrieval:`` section).
        questions: question texts, in the order of ``qvecs``.
        qvecs: float32 (n_questions, dim) question vectors (unused for ``bm25``).

    Returns:
        ``(rows, chunk_ids)``: int64 (n_questions, k) rows, best first, -1 where fewer than
        ``k`` were found, and the retrieved chunk ids per question.
    """
    out = np.full((len(questions), config.k), -1, dtype=np.int64)
    ids = []
    for i, q in enumerate(questions):
        hits = retriever.search(q, config, vector=qvecs[i])
        out[i, : len(hits)] = [h.row for h in hits]
        ids.append(tuple(h.chunk_id for h in hits))
    return out, tuple(ids)


def score_chunks(
    dataset: EvalDataset, chunk_corpus: Sequence[str], starts: Sequence[int], ends: Sequence[int], rows: np.ndarray
) -> tuple[np.ndarray, dict[str, list[int]]]:
    """Per-question metrics from chunk spans and retrieved rows (no embedding involved).

    Args:
        dataset: the dataset (questions in order).
        chunk_corpus: corpus id of each chunk row.
        starts: start offset of each chunk row.
        ends: end offset of each chunk row.
        rows: int64 (n_questions, k) retrieved chunk rows, best first (-1 = none).

    Returns:
        ``(per_question, by_corpus)``: float64 (n_questions, 4) of (recall, precision, IoU,
        precision_Ω) and corpus id -> question indices.
    """
    corpus_arr = np.asarray(chunk_corpus, dtype=object)
    s_arr = np.asarray(starts, dtype=np.int64)
    e_arr = np.asarray(ends, dtype=np.int64)
    own = {cid: (s_arr[corpus_arr == cid], e_arr[corpus_arr == cid]) for cid in dataset.corpora}
    out = np.zeros((len(dataset.questions), 4), dtype=np.float64)
    by_corpus: dict[str, list[int]] = {cid: [] for cid in dataset.corpora}
    for i, q in enumerate(dataset.questions):
        refs = [(r.start, r.end) for r in q.references]
        got = [(corpus_arr[r], int(s_arr[r]), int(e_arr[r])) for r in rows[i] if r >= 0]
        out[i, :3] = retrieval_scores(got, q.corpus_id, refs)
        out[i, 3] = omega_precision(*own[q.corpus_id], refs)
        by_corpus[q.corpus_id].append(i)
    return out, by_corpus


def _score(dataset: EvalDataset, chunks: pa.Table, rows: np.ndarray) -> tuple[np.ndarray, dict[str, list[int]]]:
    return score_chunks(dataset, chunks.column("uri").to_pylist(), chunks.column("char_start").to_pylist(),
                        chunks.column("char_end").to_pylist(), rows)


def _embed_texts(
    texts: list[str], embedder: Embedder, cache_dir: str | Path | None, batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, int]:
    cache = EmbeddingCache(cache_dir, info_of(embedder)) if cache_dir is not None else None
    try:
        return embed_with_cache(texts, embedder, cache, batch_size, progress)
    finally:
        if cache is not None:
            cache.close()


class _NoProgress:
    def __enter__(self) -> Callable[[int], None]:
        return lambda n=1: None

    def __exit__(self, *exc: object) -> None:
        return None


def _no_progress(name: str, total: int | None) -> _NoProgress:
    return _NoProgress()


# --------------------------------------------------------------------------- outputs
def write_metrics(result: ChunkingEvalResult, metrics_path: str | Path | None, plots_path: str | Path | None) -> None:
    """Write the DVC metrics JSON (:meth:`ChunkingEvalResult.metrics_dict`) and the
    recall-vs-IoU plot points (:meth:`ChunkingEvalResult.plot_rows`), creating folders."""
    for path, data in ((metrics_path, result.metrics_dict()), (plots_path, result.plot_rows())):
        if path is not None:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


__all__ = [
    "DatasetError", "Reference", "Question", "EvalDataset", "load_dataset", "corpus_elements", "corpus_documents",
    "CorpusResult", "ChunkingEvalResult", "config_label", "retrieval_label", "evaluate_chunking", "score_chunks",
    "retrieve_rows",
    "write_metrics",
]
