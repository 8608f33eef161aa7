"""A small retrieval check for the promotion gate: document recall@k over a question set.

The question file is JSONL, one object per line with at least ``question`` (the query text)
and ``doc`` (the file that answers it: a source URI, or its file name), as in
``data/sample-questions.jsonl``. A question counts as answered when one of the top-k
retrieved chunks comes from that document. (The richer evaluation of flows lives in
``runner/``; this one only decides whether an alias may move.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ragline.indexers.embedders import Embedder
from ragline.indexers.retriever import PublishedIndex
from ragline.pipelines.errors import PipelineError


class QuestionsError(PipelineError):
    """The question file is missing or a line is not a ``{"question", "doc"}`` object (names file and line)."""


@dataclass(frozen=True, slots=True)
class DocQuestion:
    """One question and the document that answers it.

    Attributes:
        question: the query text.
        doc: source URI of the answering document, or its file name.
    """

    question: str
    doc: str


@dataclass(frozen=True)
class DocRecall:
    """Result of :func:`doc_recall_at_k`.

    Attributes:
        k: chunks retrieved per question.
        n_questions: questions asked.
        hits: questions whose document was among the top-k chunks' documents.
        misses: the questions that missed, in file order.
    """

    k: int
    n_questions: int
    hits: int
    misses: tuple[str, ...]

    @property
    def recall(self) -> float:
        """hits / n_questions (0.0 for an empty question set)."""
        return self.hits / self.n_questions if self.n_questions else 0.0


def load_questions(path: str | Path) -> list[DocQuestion]:
    """Read a JSONL question file.

    Raises:
        QuestionsError: missing file, bad JSON, or a line without string ``question``/``doc``
            (names the file and the line number).
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise QuestionsError(f"question file not found: {p} (promote.questions)") from e
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise QuestionsError(f"{p}:{n}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not isinstance(row.get("doc"), str):
            raise QuestionsError(f'{p}:{n}: expected an object with string "question" and "doc"')
        out.append(DocQuestion(row["question"], row["doc"]))
    if not out:
        raise QuestionsError(f"{p}: no questions")
    return out


def doc_matches(uri: str, doc: str) -> bool:
    """True when source URI ``uri`` is document ``doc`` (the same URI, or ``doc`` is its trailing path)."""
    return uri == doc or uri.endswith("/" + doc.lstrip("/"))


def doc_recall_at_k(index: PublishedIndex, embedder: Embedder, questions: Sequence[DocQuestion], k: int) -> DocRecall:
    """Document recall@k: the share of questions whose answering document is among the
    documents of the top-k retrieved chunks (dense search over the version's FAISS index).

    Args:
        index: the published version to evaluate.
        embedder: the embedder that built it (checked against the manifest).
        questions: the question set.
        k: chunks retrieved per question (>= 1).

    Returns:
        Hits, misses and :attr:`DocRecall.recall`.

    Raises:
        ValueError: ``k`` < 1.
        IndexCompatibilityError: ``embedder`` did not build the index.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    index.check_embedder(embedder)
    if not questions:
        return DocRecall(k, 0, 0, ())
    results = index.search_vectors(embedder.embed([q.question for q in questions]), k)
    misses = tuple(q.question for q, hits in zip(questions, results)
                   if not any(doc_matches(h.uri, q.doc) for h in hits))
    return DocRecall(k, len(questions), len(questions) - len(misses), misses)
