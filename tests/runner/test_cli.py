"""`ragline flow ...`: the loop from one question to a batch run, its evaluation and a comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragline.pipelines.cli import app
from tests.conftest import REPO, SAMPLE_QUESTIONS

QUESTION = "How many days does a worker bee need to develop from the egg to an adult?"


@pytest.fixture()
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def invoke(cli: CliRunner, *args: str) -> object:
    return cli.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_flow_test_prints_answer_citations_and_trace(cli: CliRunner, sample_registry: Path) -> None:
    r = invoke(cli, "flow", "test", REPO / "flows" / "qa", "--input", f"question={QUESTION}", "--index-root", sample_registry)
    assert r.exit_code == 0, r.output
    # Recomputed for chunker v2: the chunk used to begin "rones are males" (a cut word), which
    # halved that sentence's prior in the extractive provider; now the sentence is whole and
    # ranks first. The sentence that answers the question follows, cited.
    assert "answer: Drones are males that develop from unfertilised eggs, so they carry only one set" in r.output
    assert "A queen emerges 16 days after the egg is laid, a worker takes 21 days and a drone 24 days. [1]" in r.output
    assert "citations" in r.output and "colony-roles.html" in r.output
    for node in ("retrieve", "prompt", "answer", "sources"):
        assert node in r.output
    j = invoke(cli, "flow", "test", REPO / "flows" / "qa", "-i", f"question={QUESTION}", "--index-root", sample_registry,
               "--json")
    data = json.loads(j.output)
    assert data["indexes"] == [{"node": "retrieve", "ref": "sample@latest", "name": "sample", "version": "v0001"}]
    assert [t["node"] for t in data["trace"]] == ["retrieve", "prompt", "answer", "sources"]
    assert all(isinstance(t["latency_ms"], float) for t in data["trace"])
    assert data["citations"][0]["source"].endswith("colony-roles.html")


def test_batch_eval_compare_loop(cli: CliRunner, sample_registry: Path, tmp_path: Path) -> None:
    qa = REPO / "flows" / "qa"
    runs = []
    for extra in ([], ["--variant", "bm25", "--workers", "2"]):
        r = invoke(cli, "flow", "batch", qa, "--data", SAMPLE_QUESTIONS, "--column", "question=${data.question}",
                   "--index-root", sample_registry, "--json", *extra)
        assert r.exit_code == 0, r.output
        summary = json.loads(r.output)
        assert (summary["lines"], summary["ok"], summary["failed"]) == (17, 17, 0)
        runs.append(Path(summary["run_dir"]))
    assert (tmp_path / runs[0]).parent == tmp_path / "runs" and runs[1].name.endswith("-qa-bm25")
    for run in runs:
        r = invoke(cli, "flow", "eval", run, "--labels", SAMPLE_QUESTIONS)
        assert r.exit_code == 0, r.output
        for metric in ("hit@k", "mrr", "ndcg@k", "recall@k", "citation_coverage", "groundedness", "answer_contains",
                       "latency flow p50 / p95 (ms)"):
            assert metric in r.output
    ev = json.loads((runs[0] / "eval.json").read_text())
    assert ev["scored"] == 17 and ev["answers"]["citation_coverage"] == 1.0 and ev["answers"]["groundedness"] == 1.0
    assert 0 < ev["retrieval"]["hit@k"] <= 1
    r = invoke(cli, "flow", "compare", runs[0], runs[1])
    assert r.exit_code == 0, r.output
    assert "eval.retrieval.mrr" in r.output and "Δ (B − A)" in r.output and "bm25" in r.output
    j = json.loads(invoke(cli, "flow", "compare", runs[0], runs[1], "--json").output)
    row = next(x for x in j["rows"] if x["metric"] == "eval.retrieval.mrr")
    assert row["delta"] == pytest.approx(row["b"] - row["a"])


def test_errors_are_one_clear_line(cli: CliRunner, sample_registry: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "flow.yaml").write_text("name: bad\nnodes: [\n")
    r = invoke(cli, "flow", "test", bad, "-i", "question=x", "--index-root", sample_registry)
    assert r.exit_code == 1 and f"{bad / 'flow.yaml'}:3:1: malformed YAML" in r.output
    r = invoke(cli, "flow", "test", REPO / "flows" / "qa", "-i", "question=x", "--index-root", tmp_path / "none")
    assert r.exit_code == 1 and "nodes[0] (node 'retrieve').index: no index named 'sample'" in r.output
    r = invoke(cli, "flow", "test", REPO / "flows" / "qa", "-i", "topic=x", "--index-root", sample_registry)
    assert r.exit_code == 1 and "topic: Extra inputs are not permitted" in r.output
    r = invoke(cli, "flow", "eval", tmp_path, "--labels", SAMPLE_QUESTIONS)
    assert r.exit_code == 1 and "not a run directory (no run.json)" in r.output
    r = invoke(cli, "flow", "validate", REPO / "flows" / "qa", "--index-root", sample_registry)
    assert r.exit_code == 0 and "retrieve → prompt → answer → sources" in r.output
