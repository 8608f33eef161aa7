"""Span algebra on half-open character spans, and the span metrics built on it.

The metrics are the ones of Chroma's chunking benchmark (Smith & Troynikov, "Evaluating
Chunking Strategies for Retrieval", 2024; ``BaseEvaluation._scores_from_dataset_and_retrievals``
and ``_full_precision_score`` in github.com/brandonstarxel/chunking_evaluation). Used by
``ragline eval chunking`` and ``ragline flow eval``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

#: A half-open character span ``(start, end)``.
Span = tuple[int, int]


def union_spans(spans: Iterable[Span]) -> list[Span]:
    """Merge overlapping or touching spans; returns sorted, disjoint spans (empty ones dropped).

    >>> union_spans([(5, 8), (0, 2), (2, 4), (7, 9)])
    [(0, 4), (5, 9)]
    """
    out: list[Span] = []
    for s, e in sorted(sp for sp in spans if sp[1] > sp[0]):
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


def span_metrics(own: Sequence[Span], references: Sequence[Span]) -> tuple[int, int, int]:
    """The counts behind span recall, precision and IoU for one document.

    Args:
        own: the retrieved chunks' spans in this document (any order, may overlap).
        references: the reference spans in this document.

    Returns:
        ``(hit, ref_total, missed)``: characters of the references covered by the union of
        ``own``, Σ reference lengths, and reference characters not covered.
    """
    merged = union_spans(own)
    hit = spans_length(intersect_spans(merged, union_spans(references)))
    missed = sum(spans_length(subtract_spans(r, merged)) for r in references)
    return hit, spans_length(references), missed


def ratios(hit: int, ref_total: int, retrieved_total: int, missed: int) -> tuple[float, float, float]:
    """``(recall, precision, iou)`` from the counts (each 0 when its denominator is 0):
    recall = hit / Σ|reference|, precision = hit / Σ|retrieved chunk|,
    IoU = hit / (Σ|retrieved chunk| + reference characters not covered)."""
    iou_den = retrieved_total + missed
    return (hit / ref_total if ref_total else 0.0, hit / retrieved_total if retrieved_total else 0.0,
            hit / iou_den if iou_den else 0.0)


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
    own = [(s, e) for c, s, e in retrieved if c == corpus_id]
    hit, ref_total, missed = span_metrics(own, references)
    return ratios(hit, ref_total, sum(e - s for _, s, e in retrieved), missed)


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


__all__ = ["Span", "union_spans", "spans_length", "intersect_spans", "subtract_spans", "span_metrics", "ratios",
           "retrieval_scores", "omega_precision"]
