"""A small retrieval check for the promotion gate: document recall@k over a question set.

The question file is JSONL, one object per line with at least ``question`` (the query text)
and ``doc`` (the file that answers it: a source URI, or its file name), as in
``data/sample-questions.jsonl``. A question counts as answered when one of the top-k
retrieved chunks comes from that document (:func:`evaluation.documents.doc_matches`). (The
richer evaluation of flows lives in ``runner/``; this one only decides whether an alias may move.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ragline.evaluation.metrics import DocRecall, doc_recall
from ragline.indexers.retrieval import RetrievalConfig
from ragline.indexers.retriever import Retriever
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


def doc_recall_at_k(retriever: Retriever, questions: Sequence[DocQuestion],
                    config: RetrievalConfig = RetrievalConfig()) -> DocRecall:
    """Document recall@k: the share of questions whose answering document is among the
    documents of the top-k retrieved chunks, retrieved as ``config`` says (the mode the alias
    will serve) and matched by :func:`evaluation.documents.doc_matches`.

    Args:
        retriever: the one retriever over the version to evaluate.
        questions: the question set.
        config: mode, fusion, weights, candidates and k (the ``retrieval:`` section).

    Returns:
        Hits, misses and :attr:`DocRecall.recall` (:class:`evaluation.metrics.DocRecall`).
    """
    hits = [retriever.search(q.question, config) for q in questions]
    return doc_recall(config.k, [(q.question, q.doc) for q in questions], hits)
