"""Means of per-question metrics, and document recall@k for the promotion gate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ragline.evaluation.documents import doc_matches


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not ``None`` (rounded to 6 places), ``None`` when there are none."""
    vals = [float(v) for v in values if v is not None]
    return round(sum(vals) / len(vals), 6) if vals else None


@dataclass(frozen=True, slots=True)
class MetricMeans:
    """Span-metric means over a set of questions (fractions in [0, 1])."""

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


@dataclass(frozen=True)
class DocRecall:
    """Document recall@k over a question set.

    Attributes:
        k: chunks retrieved per question.
        n_questions: questions asked.
        hits: questions whose document was among the top-k chunks' documents.
        misses: the questions that missed, in order.
    """

    k: int
    n_questions: int
    hits: int
    misses: tuple[str, ...]

    @property
    def recall(self) -> float:
        """hits / n_questions (0.0 for an empty question set)."""
        return self.hits / self.n_questions if self.n_questions else 0.0


def doc_recall(k: int, questions: Sequence[tuple[str, str]], retrieved: Sequence[Sequence[object]]) -> DocRecall:
    """Document recall@k: the share of questions whose labelled document is the document of
    one of its retrieved chunks (matched by :func:`evaluation.documents.doc_matches`).

    Args:
        k: chunks retrieved per question (recorded; ``retrieved`` holds at most k per question).
        questions: ``(question, doc label)`` pairs.
        retrieved: per question, its hits (objects with ``doc_id`` and ``source``).
    """
    misses = tuple(q for (q, doc), hits in zip(questions, retrieved)
                   if not any(doc_matches(doc, doc_id=h.doc_id, source=h.source) for h in hits))
    return DocRecall(k, len(questions), len(questions) - len(misses), misses)


__all__ = ["mean", "MetricMeans", "DocRecall", "doc_recall"]
