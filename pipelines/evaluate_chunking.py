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
import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from ragline.chunkers.base import ConfigError, ElementSpan
from ragline.indexers.bm25 import BM25Index, BM25Spec
from ragline.indexers.cache import EmbeddingCache, embed_with_cache
from ragline.indexers.embedders import Embedder, info_of
from ragline.indexers.faiss_index import FaissSpec, build_faiss_index, search
from ragline.indexers.hybrid import FUSIONS, MODES, rrf_fuse, weighted_fuse
from ragline.pipelines.chunk import chunk_documents, chunker_record
from ragline.pipelines.config import EvalConfig, Params
from ragline.pipelines.embed import embed_chunks, index_embedder
from ragline.pipelines.errors import PipelineError
from ragline.pipelines.load import Document, doc_id_for

#: A half-open character span ``(start, end)``.
Span = tuple[int, int]

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
            doc_id=doc_id_for(cid), uri=cid, sha256=hashlib.sha256(raw).hexdigest(),
            mime_type="text/markdown", size_bytes=len(raw), title=cid.replace("_", " "),
            text=text, elements=corpus_elements(text),
        ))
    return docs


# ------------------------------------------------------------------------- span algebra
def union_spans(spans: Iterable[Span]) -> list[Span]:
    """Merge overlapping or touching spans; returns sorted, disjoint spans.

    >>> union_spans([(5, 8), (0, 2), (2, 4), (7, 9)])
    [(0, 4), (5, 9)]
    """
    out: list[Span] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def spans_length(spans: Iterable[Span]) -> int:
    """Σ (end − start) over the spans (a sum: overlapping spans count twice)."""
    return sum(e - s for s, e in spans)


def intersect_spans(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    """Intersection of two sorted, disjoint span lists (non-empty pieces only)."""
    out: list[Span] = []
    i = j = 0
    while i < len(a) and j < len(b):
        s, e = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if s < e:
            out.append((s, e))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract_spans(span: Span, cut: Sequence[Span]) -> list[Span]:
    """``span`` minus the sorted, disjoint spans ``cut`` (non-empty pieces only)."""
    out: list[Span] = []
    s, e = span
    for cs, ce in cut:
        if ce <= s or cs >= e:
            continue
        if cs > s:
            out.append((s, cs))
        s = max(s, ce)
        if s >= e:
            break
    if s < e:
        out.append((s, e))
    return out


def retrieval_scores(
    retrieved: Sequence[tuple[str, int, int]], corpus_id: str, references: Sequence[Span]
) -> tuple[float, float, float]:
    """Recall, precision and IoU of one question's retrieved chunks (Chroma's definitions).

    Args:
        retrieved: ``(corpus_id, char_start, char_end)`` of each retrieved chunk, in rank
            order (every one counts in the precision and IoU denominators).
        corpus_id: the question's corpus; chunks of other corpora intersect nothing.
        references: the question's reference spans.

    Returns:
        ``(recall, precision, iou)``, each 0 when its denominator is 0.
    """
    own = union_spans((s, e) for c, s, e in retrieved if c == corpus_id)
    hit = spans_length(intersect_spans(own, union_spans(references)))
    ref_total = spans_length(references)
    retrieved_total = sum(e - s for _, s, e in retrieved)
    missed = sum(spans_length(subtract_spans(r, own)) for r in references)
    recall = hit / ref_total if ref_total else 0.0
    precision = hit / retrieved_total if retrieved_total else 0.0
    iou_den = retrieved_total + missed
    return recall, precision, (hit / iou_den if iou_den else 0.0)


def omega_precision(starts: np.ndarray, ends: np.ndarray, references: Sequence[Span]) -> float:
    """precision_Ω: the precision of retrieving exactly the chunks that intersect a reference.

    Args:
        starts: int64 (n,) chunk start offsets of the question's corpus.
        ends: int64 (n,) chunk end offsets.
        references: the question's reference spans.

    Returns:
        |∪S ∩ ∪R| / |∪S ∪ ∪R| with S the chunks intersecting a reference on closed intervals
        (a chunk touching a reference counts, as in Chroma's code); 0 when S is empty.
    """
    mask = np.zeros(len(starts), dtype=bool)
    for rs, re_ in references:
        mask |= (starts <= re_) & (ends >= rs)
    if not mask.any():
        return 0.0
    chosen = union_spans(zip(starts[mask].tolist(), ends[mask].tolist()))
    refs = union_spans(references)
    num = spans_length(intersect_spans(chosen, refs))
    den = spans_length(union_spans(chosen + refs))
    return num / den if den else 0.0


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class MetricMeans:
    """Means over a set of questions (fractions in [0, 1])."""

    recall: float
    precision: float
    iou: float
    precision_omega: float
    questions: int

    @classmethod
    def of(cls, rows: np.ndarray) -> "MetricMeans":
        """Means of a float64 (n, 4) array of (recall, precision, iou, precision_omega)."""
        if len(rows) == 0:
            return cls(0.0, 0.0, 0.0, 0.0, 0)
        m = rows.mean(axis=0)
        return cls(float(m[0]), float(m[1]), float(m[2]), float(m[3]), int(len(rows)))


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
            {"dense": 0.5, "bm25": 0.5}, "candidates": 50}`` (``{"mode": "dense"}`` for dense).
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

    @property
    def chunk_mb_per_s(self) -> float:
        """Chunking throughput in MB (10^6 bytes of UTF-8) per second."""
        return self.corpus_bytes / 1e6 / self.chunk_seconds if self.chunk_seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``--json``); the per-question array is left out."""
        d = {k: v for k, v in asdict(self).items() if k != "per_question"}
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
                "chunk_seconds": round(self.chunk_seconds, 3), "embed_seconds": round(self.embed_seconds, 3)}

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
    k: int = 5,
    embedder: Embedder | None = None,
    progress: Callable[[str, int | None], Any] | None = None,
) -> ChunkingEvalResult:
    """Chunk, embed and index every corpus of ``dataset``; retrieve ``k`` chunks per question.

    Args:
        dataset: the loaded dataset.
        params: validated params; uses ``chunk:``, ``embed:`` (model, batch size,
            normalization), ``index:`` (kind, metric, HNSW settings), ``paths.cache`` and
            ``eval.mode``/``fusion``/``weights``/``candidates`` (the search mode).
        k: chunks retrieved per question (>= 1).
        embedder: an embedder to reuse (default: built from ``embed.model``).
        progress: optional ``progress(stage, total)`` returning a context manager that yields
            ``advance(n)`` (a :class:`pipelines.progress.Reporter`'s ``stage``).

    Returns:
        The result; every chunk's offsets index the corpus text directly.

    Raises:
        ConfigError: invalid ``chunk:`` params, an unknown ``eval.mode``/``eval.fusion`` or ``k`` < 1.
        PipelineError: the chunker failed on a corpus.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1 (got {k})")
    check_retrieval(params.eval)
    embedder = embedder or index_embedder(params)
    stage = progress or _no_progress
    cache_dir = params.paths.cache
    docs = corpus_documents(dataset)
    embed_fn = None
    if params.chunk.strategy == "semantic":
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
    with stage("embed", chunks.num_rows + len(dataset.questions)) as advance:
        t0 = time.perf_counter()
        vectors, computed = embed_chunks(chunks, embedder, cache_dir, params.embed.batch_size, progress=advance)
        qvecs, q_computed = _embed_texts([q.question for q in dataset.questions], embedder, cache_dir,
                                         params.embed.batch_size, advance)
        embed_seconds = time.perf_counter() - t0
    spec = FaissSpec(params.index.kind, params.index.metric, params.index.hnsw_m,
                     params.index.hnsw_ef_construction, params.index.hnsw_ef_search)
    rows = retrieve_rows(params.eval, build_faiss_index(vectors, spec), qvecs, chunks,
                         [q.question for q in dataset.questions], k, l2=params.index.metric == "l2",
                         bm25_spec=params.index.bm25_spec())
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
        embedder={"model_id": info.model_id, "revision": info.revision, "dim": info.dim},
        overall=MetricMeans.of(per_question), corpora=tuple(corpora), chunks=chunks.num_rows,
        mean_chunk_tokens=float(tokens.mean()) if len(tokens) else 0.0,
        corpus_bytes=sum(len(t.encode("utf-8")) for t in dataset.corpora.values()),
        chunk_seconds=chunk_seconds, embed_seconds=embed_seconds,
        embedded_now=computed + q_computed, cache_hits=n_texts - computed - q_computed,
        per_question=per_question, retrieval=retrieval_record(params.eval),
    )


def check_retrieval(ev: EvalConfig) -> None:
    """Raise :class:`ConfigError` naming ``eval.mode``/``eval.fusion`` when a value is unknown
    (params validation already refuses them; this guards configs built without validation)."""
    if ev.mode not in MODES:
        raise ConfigError(f"eval.mode: unknown search mode {ev.mode!r}; allowed: {', '.join(MODES)}")
    if ev.fusion not in FUSIONS:
        raise ConfigError(f"eval.fusion: unknown fusion {ev.fusion!r}; allowed: {', '.join(FUSIONS)}")


def retrieval_record(ev: EvalConfig) -> dict[str, Any]:
    """The search mode as reported (``{"mode": "dense"}``, or with fusion settings for hybrid)."""
    if ev.mode in ("dense", "bm25"):
        return {"mode": ev.mode}
    return {"mode": ev.mode, "fusion": ev.fusion, "weights": {"dense": ev.weights.dense, "bm25": ev.weights.bm25},
            "candidates": ev.candidates}


def retrieve_rows(
    ev: EvalConfig, index: Any, qvecs: np.ndarray, chunks: pa.Table, questions: Sequence[str], k: int,
    l2: bool = False, bm25_spec: BM25Spec = BM25Spec(),
) -> np.ndarray:
    """Top-``k`` chunk rows per question in the search mode ``ev.mode``.

    Dense search is FAISS over the chunk vectors; BM25 is :class:`indexers.bm25.BM25Index`
    over the same chunk rows (``context`` + ``text``, as embedded); hybrid fuses both lists of
    ``max(ev.candidates, k)`` rows with :func:`indexers.hybrid.rrf_fuse` or
    :func:`indexers.hybrid.weighted_fuse`, ties broken as :class:`indexers.hybrid.Retriever`
    breaks them (better single-retriever rank, then lower row).

    Args:
        ev: the ``eval:`` params (mode, fusion, weights, candidates).
        index: FAISS index of the chunk vectors (row i = chunk row i).
        qvecs: float32 (n_questions, dim) question vectors (unused for ``bm25``).
        chunks: the chunk table (``CHUNKS_SCHEMA``).
        questions: question texts, in the order of ``qvecs``.
        k: rows per question.
        l2: the FAISS metric is L2 (lower is better; negated before fusion).
        bm25_spec: BM25 k1 / b (``index.bm25_k1`` / ``index.bm25_b``).

    Returns:
        int64 (n_questions, k) rows, best first, -1 where fewer than ``k`` were found.

    Raises:
        ConfigError: unknown ``eval.mode`` or ``eval.fusion``.
    """
    check_retrieval(ev)
    if ev.mode == "dense":
        _, rows = search(index, qvecs, k)
        return rows
    out = np.full((len(questions), k), -1, dtype=np.int64)
    bm25 = BM25Index.from_chunks(chunks, bm25_spec)
    if ev.mode == "bm25":
        for i, q in enumerate(questions):
            r, _ = bm25.search(q, k)
            out[i, : len(r)] = r
        return out
    depth = max(ev.candidates, k)
    dscores, drows = search(index, qvecs, depth)
    weights = {"dense": ev.weights.dense, "bm25": ev.weights.bm25}
    for i, q in enumerate(questions):
        keep = drows[i] >= 0
        d_rows = drows[i][keep].tolist()
        d_scores = (-dscores[i][keep] if l2 else dscores[i][keep]).tolist()
        b_rows, b_scores = bm25.search(q, depth)
        lists = {"dense": (d_rows, d_scores), "bm25": (b_rows.tolist(), b_scores.tolist())}
        if ev.fusion == "rrf":
            fused = rrf_fuse({n: r for n, (r, _) in lists.items()}, weights)
        else:
            fused = weighted_fuse(lists, weights)
        best_rank: dict[int, int] = {}
        for r_list, _ in lists.values():
            for rank, row in enumerate(r_list, start=1):
                best_rank[row] = min(best_rank.get(row, rank), rank)
        order = sorted(fused, key=lambda r: (-fused[r], best_rank[r], r))[:k]
        out[i, : len(order)] = order
    return out


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
    "union_spans", "spans_length", "intersect_spans", "subtract_spans", "retrieval_scores", "omega_precision",
    "MetricMeans", "CorpusResult", "ChunkingEvalResult", "config_label", "retrieval_label", "evaluate_chunking", "score_chunks",
    "check_retrieval", "retrieval_record", "retrieve_rows",
    "write_metrics",
]
