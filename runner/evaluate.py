"""Evaluate a batch run against labels: retrieval, spans, citations, groundedness, latency, tokens.

Labels are a JSONL file. A label line may carry:

- ``docs`` (list) or ``doc`` / ``doc_id`` / ``corpus_id`` (string): the relevant document(s).
  A label names a retrieved chunk's document by the one rule of
  :func:`evaluation.documents.doc_matches` (doc id, source URI, a trailing path of it, or
  its base name without extension).
- ``spans``: ``[{"doc", "start", "end"}]`` character spans (half-open) of the answer in the
  documents' normalized text; or chunking-eval style ``references``:
  ``[{"start_index", "end_index"}]`` with the document in ``doc`` / ``corpus_id``.
- ``answer``: a reference answer string.

Labels are matched to run records by ``--key FIELD`` (the field in both the data line and the
label line), else by line number (label line n = data line n, so the data file itself can
serve as labels when it carries them). Only records that ran (``status: ok``) are scored;
failed ones are counted. Label lines that do not parse are listed in ``label_errors``
(``file:line: ...``) and skipped.

Metrics (means over scored questions; k = retrieval depth, default: as many as retrieved):

- Document ranking: the retrieved chunks' documents, duplicates removed, in rank order.
  ``hit@k`` (a relevant document among them), ``mrr`` (1 / rank of the first relevant one;
  Voorhees, TREC-8 QA report 1999), ``recall@k`` (share of relevant documents found),
  ``ndcg@k`` with binary gains, ``DCG = sum rel_i / log2(i + 1)`` over that list, normalized by
  the ideal ``min(|relevant|, k)`` ones (Järvelin & Kekäläinen, ACM TOIS 2002).
- Spans (the definitions of Smith & Troynikov, "Evaluating Chunking Strategies for
  Retrieval", Chroma 2024, computed as ``ragline eval chunking`` does; see
  datasets/chunking-eval/README.md): with I = |union over retrieved chunks of (chunk ∩
  reference spans)| in characters, ``span_recall = I / sum of reference lengths``,
  ``span_precision = I / sum of the k retrieved chunks' lengths``,
  ``span_iou = I / (sum of retrieved lengths + reference characters not covered)``.
- ``citation_coverage``: share of answer sentences that cite at least one retrieved chunk
  with a ``[n]`` marker.
- ``groundedness``: share of answer sentences supported by a chunk they cite: at least
  ``support_threshold`` (default 0.8) of the sentence's distinct content terms occur in that
  chunk (:func:`runner.text.support`). A sentence without markers may be supported by any
  cited chunk only when the answer has no markers at all. This is a lexical approximation of
  RAGAS faithfulness (Es et al., "RAGAS: Automated Evaluation of Retrieval Augmented
  Generation", arXiv:2309.15217, 2023), which splits an answer into statements and asks an
  LLM whether the context supports each; here statements are sentences and support is term
  containment, so paraphrases count as unsupported.
- ``answer_contains``: share of answers containing the reference answer (lower-cased,
  punctuation and extra spaces removed).
- Latency (whole flow and retrieve nodes) p50 / p95 in ms, token totals and means, and cost in
  USD (``cost_usd``: total and mean of the batch records, priced by ``serve.prices``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ragline.evaluation.documents import doc_matches
from ragline.evaluation.metrics import mean
from ragline.evaluation.spans import ratios, span_metrics
from ragline.runner.batch import cost_totals, load_run, percentiles, read_jsonl
from ragline.runner.errors import DataError
from ragline.runner.text import answer_sentences, markers, support, terms

EVAL_FILE = "eval.json"
EVAL_LINES_FILE = "eval.jsonl"


@dataclass(frozen=True, slots=True)
class Span:
    """A half-open character span of a labelled document."""

    doc: str
    start: int
    end: int


@dataclass(frozen=True)
class Label:
    """The labels of one question."""

    docs: tuple[str, ...] = ()
    spans: tuple[Span, ...] = ()
    answer: str | None = None


def parse_label(obj: dict, where: str) -> Label:
    """A :class:`Label` from one labels line.

    Raises:
        DataError: malformed spans or docs (names ``where`` = ``file:line``).
    """
    docs: list[str] = []
    raw_docs = obj.get("docs")
    if raw_docs is not None:
        if not isinstance(raw_docs, list) or not all(isinstance(d, str) for d in raw_docs):
            raise DataError(f"{where}: docs must be a list of strings")
        docs.extend(raw_docs)
    doc_field = next((obj[k] for k in ("doc", "doc_id", "corpus_id") if isinstance(obj.get(k), str)), None)
    if doc_field and doc_field not in docs:
        docs.append(doc_field)
    spans: list[Span] = []
    try:
        for s in obj.get("spans") or []:
            spans.append(Span(str(s["doc"]), int(s["start"]), int(s["end"])))
        refs = obj.get("references")
        if isinstance(refs, str):
            refs = json.loads(refs)
        for r in refs or []:
            if doc_field is None:
                raise KeyError("doc or corpus_id (the document the references point into)")
            spans.append(Span(doc_field, int(r["start_index"]), int(r["end_index"])))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{where}: malformed spans/references: missing or bad {e}") from e
    for s in spans:
        if s.end < s.start:
            raise DataError(f"{where}: span {s.start}-{s.end} ends before it starts")
        if s.doc not in docs:
            docs.append(s.doc)
    answer = obj.get("answer") if isinstance(obj.get("answer"), str) else None
    return Label(tuple(docs), tuple(spans), answer)


def span_scores(retrieved: Sequence[dict], spans: Sequence[Span]) -> dict:
    """Span recall, precision and IoU of retrieved chunks against reference spans.

    The arithmetic of ``ragline eval chunking`` (Chroma's ``BaseEvaluation``): with
    ``hit = |union(retrieved) ∩ union(references)|`` per document, ``recall = hit / sum|reference|``,
    ``precision = hit / sum|retrieved chunk|`` and ``iou = hit / (sum|retrieved chunk| +
    sum|reference − union(retrieved)|)``; sums, not unions, where Chroma sums.

    Args:
        retrieved: chunk dicts with ``doc_id``, ``source``, ``char_start``, ``char_end``.
        spans: the references.

    Returns:
        ``{"span_recall", "span_precision", "span_iou"}``, each 0 when its denominator is 0.
    """
    retrieved_total = sum(max(0, int(c["char_end"]) - int(c["char_start"])) for c in retrieved)
    hit = ref_total = missed = 0
    for d in sorted({s.doc for s in spans}):
        own = [(int(c["char_start"]), int(c["char_end"])) for c in retrieved
               if doc_matches(d, doc_id=c.get("doc_id"), source=c.get("source"))]
        h, t, m = span_metrics(own, [(s.start, s.end) for s in spans if s.doc == d])
        hit, ref_total, missed = hit + h, ref_total + t, missed + m
    recall, precision, iou = ratios(hit, ref_total, retrieved_total, missed)
    return {"span_recall": recall, "span_precision": precision, "span_iou": iou}


def doc_scores(retrieved: Sequence[dict], docs: Sequence[str], k: int) -> dict:
    """hit@k, MRR, recall@k and nDCG@k over the deduplicated document ranking of the top-k chunks."""
    ranking: list[tuple[str | None, str | None]] = []
    for c in retrieved[:k]:
        key = (c.get("doc_id"), c.get("source"))
        if key not in ranking:
            ranking.append(key)
    rel = [any(doc_matches(d, doc_id=di, source=so) for d in docs) for di, so in ranking]
    found = {d for d in docs for di, so in ranking if doc_matches(d, doc_id=di, source=so)}
    first = next((i + 1 for i, r in enumerate(rel) if r), None)
    dcg = sum(1.0 / math.log2(i + 2) for i, r in enumerate(rel) if r)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(set(docs)), k)))
    return {"hit": 1.0 if first else 0.0, "mrr": 1.0 / first if first else 0.0,
            "recall": len(found) / len(set(docs)) if docs else 0.0, "ndcg": dcg / ideal if ideal else 0.0}


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def answer_scores(answer: str, citations: Sequence[dict], retrieved: Sequence[dict], threshold: float) -> dict:
    """Citation coverage and groundedness of one answer (see module docstring).

    Returns:
        ``{"sentences", "cited", "grounded", "citation_coverage", "groundedness"}``; the shares
        are ``None`` for an empty answer.
    """
    texts = {c["chunk_id"]: c.get("text", "") for c in retrieved}
    by_id = {int(c["id"]): c for c in citations if "id" in c and c.get("chunk_id") in texts}
    sents = answer_sentences(answer or "")
    any_markers = any(markers(s) for s in sents)
    term_cache: dict[str, set[str]] = {}

    def chunk_terms(chunk_id: str) -> set[str]:
        if chunk_id not in term_cache:
            term_cache[chunk_id] = set(terms(texts[chunk_id]))
        return term_cache[chunk_id]

    cited = grounded = 0
    for s in sents:
        nums = [n for n in markers(s) if n in by_id]
        if nums:
            cited += 1
        candidates = [by_id[n]["chunk_id"] for n in nums] if any_markers else [c["chunk_id"] for c in by_id.values()]
        if any(support(s, chunk_terms(cid)) >= threshold for cid in candidates):
            grounded += 1
    n = len(sents)
    return {"sentences": n, "cited": cited, "grounded": grounded,
            "citation_coverage": cited / n if n else None, "groundedness": grounded / n if n else None}


def _match(records: list[dict], labels: list[tuple[int, dict]], key: str | None, labels_path: Path) -> list[tuple[dict, Label]]:
    pairs = []
    if key:
        index: dict[Any, tuple[int, dict]] = {}
        for n, obj in labels:
            if key in obj:
                index[json.dumps(obj[key], sort_keys=True)] = (n, obj)
        for r in records:
            k = json.dumps((r.get("data") or {}).get(key), sort_keys=True)
            if k in index:
                n, obj = index[k]
                pairs.append((r, parse_label(obj, f"{labels_path}:{n}")))
    else:
        by_line = {n: obj for n, obj in labels}
        for r in records:
            if r["line"] in by_line:
                pairs.append((r, parse_label(by_line[r["line"]], f"{labels_path}:{r['line']}")))
    return pairs


def evaluate_run(run_dir: str | Path, labels_path: str | Path, k: int | None = None, key: str | None = None,
                 support_threshold: float = 0.8, write: bool = True) -> dict:
    """Score a run directory against a labels file (metrics defined in the module docstring).

    Args:
        run_dir: a ``ragline flow batch`` run directory.
        labels_path: JSONL labels.
        k: retrieval depth for the ranking and span metrics (default: all retrieved).
        key: field matching label lines to data lines (default: line numbers).
        support_threshold: share of a sentence's content terms a cited chunk must hold.
        write: write ``eval.json`` and ``eval.jsonl`` (per question) into the run directory.

    Returns:
        The metrics dict (what ``eval.json`` holds).

    Raises:
        DataError: not a run directory, no labels file, bad label lines, or no label matches a record.
    """
    run_dir = Path(run_dir)
    run, _, records = load_run(run_dir)
    labels_path = Path(labels_path)
    labels, label_errors = [], []
    for item in read_jsonl(labels_path):
        if item.error:
            label_errors.append(item.error)  # unusable label line: reported, not scored
        else:
            labels.append((item.line, item.data))
    pairs = _match(records, labels, key, labels_path)
    if not pairs:
        how = f"field {key!r}" if key else "line number"
        raise DataError(f"{labels_path}: no label line matches a record of {run_dir} by {how}; try --key FIELD")
    ok = [(r, lab) for r, lab in pairs if r["status"] == "ok"]
    depth = k or max((len(r["retrieved"]) for r, _ in ok), default=0)
    per_q = []
    for r, lab in ok:
        row: dict[str, Any] = {"line": r["line"], "id": r.get("id")}
        if lab.docs:
            row.update({f"{m}@k" if m != "mrr" else m: v for m, v in doc_scores(r["retrieved"], lab.docs, depth).items()})
        if lab.spans:
            row.update(span_scores(r["retrieved"][:depth], lab.spans))
        answer = (r.get("outputs") or {}).get("answer")
        if isinstance(answer, str):
            row.update(answer_scores(answer, r.get("citations") or [], r["retrieved"], support_threshold))
            if lab.answer:
                row["answer_contains"] = 1.0 if _norm(lab.answer) in _norm(answer) else 0.0
        per_q.append(row)
    names = ["hit@k", "mrr", "recall@k", "ndcg@k", "span_recall", "span_precision", "span_iou",
             "citation_coverage", "groundedness", "answer_contains"]
    metrics = {m: mean([q.get(m) for q in per_q]) for m in names}
    types = {}
    resolved = run_dir / "flow.resolved.json"
    if resolved.is_file():
        types = {n["name"]: n["type"] for n in json.loads(resolved.read_text(encoding="utf-8"))["nodes"]}
    retrieval_ms = [sum(ms for n, ms in r["node_latency_ms"].items() if types.get(n) == "retrieve") for r, _ in ok]
    tokens = {t: sum(int((r.get("tokens") or {}).get(t, 0)) for r, _ in ok) for t in ("prompt", "completion", "total")}
    result = {
        "run": run.get("run_id", run_dir.name), "labels": str(labels_path), "k": depth, "key": key,
        "support_threshold": support_threshold, "labelled": len(pairs), "scored": len(ok),
        "failed": len(pairs) - len(ok), "label_errors": label_errors,
        "retrieval": {m: metrics[m] for m in names[:4]},
        "spans": {m: metrics[m] for m in names[4:7]},
        "answers": {m: metrics[m] for m in names[7:]},
        "latency_ms": {"flow": percentiles([r["latency_ms"] for r, _ in ok]), "retrieval": percentiles(retrieval_ms)},
        "tokens": {**tokens, "mean_total": round(tokens["total"] / len(ok), 3) if ok else 0.0},
        "cost_usd": cost_totals([r for r, _ in ok]),
    }
    if write:
        (run_dir / EVAL_FILE).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        with open(run_dir / EVAL_LINES_FILE, "w", encoding="utf-8") as f:
            for q in per_q:
                f.write(json.dumps(q) + "\n")
    return result


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = data
    return out


_COMPARE_SKIP = ("flow", "variant", "run", "labels", "key", "label_errors")


def _brief(key: str) -> bool:
    """Rows shown without ``--all``: no eval copies of batch latency/tokens, no mean/max, node p50 only."""
    if key.startswith(("eval.latency_ms.", "eval.tokens.")) or key.endswith((".mean", ".max")):
        return False
    return not (key.startswith("batch.node_latency_ms.") and not key.endswith(".p50"))


def compare_runs(run_a: str | Path, run_b: str | Path, full: bool = False) -> dict:
    """Metrics of two runs side by side (``metrics.json`` and, when present, ``eval.json``).

    Args:
        run_a, run_b: run directories.
        full: every metric; otherwise the main ones (see :func:`_brief`) and none that are
            missing on both sides.

    Returns:
        ``{"a": {...run info}, "b": {...}, "rows": [{"metric", "a", "b", "delta"}]}``; delta is
        ``b - a`` for numbers, ``None`` otherwise.

    Raises:
        DataError: either folder is not a run directory.
    """
    sides = {}
    for name, d in (("a", Path(run_a)), ("b", Path(run_b))):
        run, metrics, _ = load_run(d)
        ev = d / EVAL_FILE
        evaluation = json.loads(ev.read_text(encoding="utf-8")) if ev.is_file() else {}
        flat = {f"batch.{k}": v for k, v in flatten(metrics).items() if k.split(".")[0] not in _COMPARE_SKIP}
        flat.update({f"eval.{k}": v for k, v in flatten(evaluation).items() if k.split(".")[0] not in _COMPARE_SKIP})
        info = {"dir": str(d), "run_id": run.get("run_id"), "flow": run.get("flow"), "variant": run.get("variant"),
                "data": run.get("data"), "indexes": [f"{i['name']}@{i['version']}" for i in run.get("indexes", [])],
                "evaluated": bool(evaluation)}
        sides[name] = (info, flat)
    keys = list(dict.fromkeys(list(sides["a"][1]) + list(sides["b"][1])))
    rows = []
    for k in keys:
        a, b = sides["a"][1].get(k), sides["b"][1].get(k)
        if not full and (not _brief(k) or (a is None and b is None)):
            continue
        num = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        rows.append({"metric": k, "a": a, "b": b, "delta": round(b - a, 6) if num else None})
    return {"a": sides["a"][0], "b": sides["b"][0], "rows": rows}
