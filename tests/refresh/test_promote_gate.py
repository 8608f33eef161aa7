"""The promotion gate: document recall@k on a question set, retrieved as the alias will serve
(the retrieval: section), must reach promote.min_doc_recall."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragline.indexers.embedders import HashingEmbedder
from ragline.indexers.registry import IndexRegistry
from ragline.indexers.retrieval import RetrievalConfig
from ragline.indexers.retriever import Retriever
from ragline.pipelines.cli import app
from ragline.pipelines.evaluate import DocQuestion, QuestionsError, doc_recall_at_k, load_questions
from tests.conftest import write_params
from tests.publishing import publish_texts
from tests.refresh.conftest import params_here

runner = CliRunner()
A = "alpha: hive frames and bee space between the boxes"
B = "bravo: varroa mites counted with a sugar roll every month"
C = "charlie: the queen lays eggs in drawn comb during spring"
# three questions that are their document's exact text (top-1 with any bag-of-words embedder),
# and one that names the wrong document: recall@1 is exactly 3/4
QUESTIONS = [{"question": A, "doc": "a.txt"}, {"question": B, "doc": "docs/b.txt"},
             {"question": C, "doc": "c.txt"}, {"question": A, "doc": "b.txt"}]


@pytest.fixture()
def gated(workspace: Path) -> IndexRegistry:
    (workspace / "q.jsonl").write_text("\n".join(json.dumps(q) for q in QUESTIONS) + "\n")
    write_params(workspace, promote={"gate": "doc_recall", "gated_aliases": ["prod"], "questions": "q.jsonl",
                                     "min_doc_recall": 0.8}, retrieval={"k": 1})
    p = params_here()
    publish_texts(p, {"docs/a.txt": A, "docs/b.txt": B, "docs/c.txt": C})
    return IndexRegistry(p.index.root)


def test_doc_recall_at_k_counts_hits_exactly(gated: IndexRegistry) -> None:
    retriever = Retriever.open(gated, "sample@v0001", embedder=HashingEmbedder())
    qs = [DocQuestion(q["question"], q["doc"]) for q in QUESTIONS]
    for mode in ("dense", "bm25", "hybrid"):
        r = doc_recall_at_k(retriever, qs, RetrievalConfig(mode=mode, k=1))
        assert (r.n_questions, r.hits, r.misses, r.recall) == (4, 3, (A,), 0.75), mode
    # k >= number of chunks retrieves every document: only a question about a missing document misses
    r_all = doc_recall_at_k(retriever, qs + [DocQuestion(C, "nowhere.txt")], RetrievalConfig(k=100))
    assert (r_all.hits, r_all.misses) == (4, (C,))


def test_gate_evaluates_the_served_mode(gated: IndexRegistry) -> None:
    # "in every hive": BM25 ranks a.txt first (the only "hive"), the hashing embedder ranks b.txt
    # first ("every"), so the gate's verdict depends on the mode the alias will serve
    qs = QUESTIONS[:3] + [{"question": "in every hive", "doc": "a.txt"}]
    Path("q.jsonl").write_text("\n".join(json.dumps(q) for q in qs) + "\n")
    write_params(Path.cwd(), retrieval={"mode": "dense"}, promote={"min_doc_recall": 1.0})
    dense = runner.invoke(app, ["index", "promote", "v0001", "--alias", "prod", "--json"])
    assert dense.exit_code == 1 and "0.750 < promote.min_doc_recall = 1 " in dense.stderr
    assert "(3/4 questions, dense)" in " ".join(dense.stderr.split())
    write_params(Path.cwd(), retrieval={"mode": "bm25"})
    bm25 = runner.invoke(app, ["index", "promote", "v0001", "--alias", "prod", "--json"])
    assert bm25.exit_code == 0, bm25.stderr
    assert json.loads(bm25.stdout)["gate"]["value"] == 1.0 and gated.aliases("sample")["prod"] == "v0001"


def test_failing_gate_leaves_alias_and_says_why(gated: IndexRegistry) -> None:
    r = runner.invoke(app, ["index", "promote", "v0001", "--alias", "prod"])
    flat = " ".join(r.stderr.split())
    assert r.exit_code == 1
    assert "doc_recall@1 = 0.750 < promote.min_doc_recall = 0.8" in flat and "(3/4 questions, hybrid weighted)" in flat
    assert "prod stays at (unset)" in flat
    assert "prod" not in gated.aliases("sample")


def test_passing_gate_moves_alias_and_records_evaluation(gated: IndexRegistry) -> None:
    write_params(Path.cwd(), promote={"min_doc_recall": 0.75})
    r = runner.invoke(app, ["index", "promote", "v0001", "--alias", "prod", "--json"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["to"] == "v0001" and out["gate"]["passed"] and out["gate"]["value"] == 0.75
    meta = gated.alias_record("sample", "prod")["meta"]
    assert meta["gate"]["metric"] == "doc_recall@1" and meta["gate"]["n_questions"] == 4 and meta["forced"] is False


def test_ungated_alias_and_force_skip_the_gate(gated: IndexRegistry) -> None:
    r = runner.invoke(app, ["index", "promote", "v0001", "--alias", "staging", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["gate"]["gated"] is False
    r = runner.invoke(app, ["index", "promote", "v0001", "--alias", "prod", "--force", "--json"])
    assert r.exit_code == 0 and gated.aliases("sample")["prod"] == "v0001"
    assert gated.alias_record("sample", "prod")["meta"]["forced"] is True


def test_bad_question_file_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "a", "doc": "a.md"}\n{"question": "b"\n')
    with pytest.raises(QuestionsError, match=r"q\.jsonl:2: not valid JSON"):
        load_questions(bad)
    bad.write_text('{"question": "a"}\n')
    with pytest.raises(QuestionsError, match=r"q\.jsonl:1: expected an object"):
        load_questions(bad)
    with pytest.raises(QuestionsError, match="not found"):
        load_questions(tmp_path / "missing.jsonl")
