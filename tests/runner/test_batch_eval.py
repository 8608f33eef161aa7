"""Batch runs (bad lines recorded, others go on), the evaluation metrics, and run comparison."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ragline.runner.batch import load_run, parse_columns, run_batch
from ragline.runner.engine import FlowRunner
from ragline.runner.errors import DataError, FlowInputError
from ragline.runner.evaluate import Span, answer_scores, compare_runs, doc_scores, evaluate_run, span_scores
from ragline.runner.spec import load_flow

LINES = [
    '{"id": "q1", "q": "How often should the impeller seal be replaced?", "doc": "pump.pdf", "answer": "every two years"}',
    '{"id": "q2", "q": "When are roses pruned?", "doc": "garden/roses.md"}',
    '{"id": "q3", "q": "How long does sourdough ferment?"',  # broken JSON
    '{"id": "q4", "question": "no q field here"}',
    '',
    '{"id": "q5", "q": "Bake the loaf at what temperature?", "doc": "bread"}',
]


@pytest.fixture()
def data_file(tmp_path: Path) -> Path:
    p = tmp_path / "questions.jsonl"
    p.write_text("\n".join(LINES) + "\n")
    return p


def test_batch_records_bad_lines_and_goes_on(tmp_path: Path, mini_flow: Path, mini_registry: Path, data_file: Path) -> None:
    flow = load_flow(mini_flow)
    runner = FlowRunner(flow, mini_registry)
    s = run_batch(flow, data_file, parse_columns(["question=${data.q}"], flow), runner, tmp_path / "runs", run_id="r1")
    assert s.run_dir == tmp_path / "runs" / "r1"
    assert {p.name for p in s.run_dir.iterdir()} >= {"outputs.jsonl", "traces.jsonl", "metrics.json", "run.json",
                                                     "index.json", "flow", "flow.resolved.json", "index"}
    assert (s.run_dir / "flow" / "flow.yaml").read_text() == (mini_flow / "flow.yaml").read_text()
    assert (s.run_dir / "index" / "mini-v0001.manifest.json").is_file()
    run, metrics, recs = load_run(s.run_dir)
    assert [(r["line"], r["status"]) for r in recs] == [(1, "ok"), (2, "ok"), (3, "failed"), (4, "failed"), (6, "ok")]
    assert recs[2]["error"].startswith(f"{data_file}:3: not valid JSON")
    assert recs[3]["error"] == f"{data_file}:4: column question: ${{data.q}}: line has no field 'q' (fields: id, question)"
    assert recs[0]["outputs"]["answer"].startswith("Replace the impeller seal every two years")
    assert (metrics["lines"], metrics["ok"], metrics["failed"]) == (5, 3, 2)
    assert metrics["latency_ms"]["p95"] >= metrics["latency_ms"]["p50"] > 0
    assert set(metrics["node_latency_ms"]) == {"retrieve", "prompt", "answer", "sources"}
    assert run["indexes"] == [{"node": "retrieve", "ref": "mini@latest", "name": "mini", "version": "v0001"}]
    traces = [json.loads(line) for line in (s.run_dir / "traces.jsonl").read_text().splitlines()]
    assert [len(t["trace"]) for t in traces] == [4, 4, 0, 0, 4]


def test_workers_give_the_same_outputs(tmp_path: Path, mini_flow: Path, mini_registry: Path, data_file: Path) -> None:
    flow = load_flow(mini_flow)
    runner = FlowRunner(flow, mini_registry)
    cols = parse_columns(["question=${data.q}"], flow)
    one = load_run(run_batch(flow, data_file, cols, runner, tmp_path / "runs", workers=1).run_dir)[2]
    four = load_run(run_batch(flow, data_file, cols, runner, tmp_path / "runs", workers=4).run_dir)[2]
    strip = lambda recs: [(r["line"], r["status"], r["outputs"], r["error"]) for r in recs]  # noqa: E731
    assert strip(one) == strip(four)


def test_column_option_errors(mini_flow: Path) -> None:
    flow = load_flow(mini_flow)
    assert parse_columns([], flow) == {"question": "${data.question}", "source": "${data.source}"}
    with pytest.raises(FlowInputError, match="has no input 'query'"):
        parse_columns(["query=${data.q}"], flow)
    with pytest.raises(FlowInputError, match="use NAME=EXPR"):
        parse_columns(["question"], flow)
    with pytest.raises(FlowInputError, match=r"only \$\{data.FIELD\} references"):
        parse_columns(["question=${inputs.question}"], flow)


def test_missing_and_empty_data(tmp_path: Path, mini_flow: Path, mini_registry: Path) -> None:
    flow = load_flow(mini_flow)
    runner = FlowRunner(flow, mini_registry)
    with pytest.raises(DataError, match="no such data file"):
        run_batch(flow, tmp_path / "none.jsonl", {}, runner, tmp_path / "runs")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no data lines"):
        run_batch(flow, tmp_path / "empty.jsonl", {}, runner, tmp_path / "runs")


# ------------------------------------------------------------ metric arithmetic
def _chunk(doc: str, start: int, end: int) -> dict:
    return {"doc_id": doc, "source": f"data/{doc}.md", "char_start": start, "char_end": end}


def test_doc_scores() -> None:
    retrieved = [_chunk("a", 0, 10), _chunk("a", 10, 20), _chunk("b", 0, 5), _chunk("c", 0, 5)]
    s = doc_scores(retrieved, ["b", "c.md", "z"], k=4)
    # document ranking: a, b, c -> relevant at ranks 2 and 3; ideal has min(3, 4) = 3 relevant
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert s == pytest.approx({"hit": 1.0, "mrr": 0.5, "recall": 2 / 3, "ndcg": (1 / math.log2(3) + 1 / math.log2(4)) / ideal})
    assert doc_scores(retrieved, ["b"], k=2) == {"hit": 0.0, "mrr": 0.0, "recall": 0.0, "ndcg": 0.0}


def test_span_scores_follow_the_chunking_eval_definitions() -> None:
    retrieved = [_chunk("a", 0, 100), _chunk("a", 50, 150), _chunk("b", 0, 40)]
    spans = [Span("a", 90, 120), Span("a", 140, 200), Span("b", 100, 110)]
    s = span_scores(retrieved, spans)
    hit = 30 + 10  # a: union [0,150) ∩ {[90,120), [140,200)}; b: nothing
    ref_total = 30 + 60 + 10
    retrieved_total = 100 + 100 + 40
    missed = 0 + 50 + 10
    assert s == pytest.approx({"span_recall": hit / ref_total, "span_precision": hit / retrieved_total,
                               "span_iou": hit / (retrieved_total + missed)})


def test_answer_scores_coverage_and_groundedness() -> None:
    retrieved = [{"chunk_id": "x", "text": "The pump must be primed with water before the first start."},
                 {"chunk_id": "y", "text": "Bake the loaf at 230 degrees."}]
    cites = [{"id": 1, "chunk_id": "x"}, {"id": 2, "chunk_id": "y"}]
    answer = "Prime the pump with water before the first start [1]. Bake at 230 degrees [1]. Enjoy."
    s = answer_scores(answer, cites, retrieved, threshold=0.8)
    # sentence 1 cites x and 5 of its 6 terms are in x ("prime" is not "primed"): 0.83 >= 0.8, supported;
    # sentence 2 cites x but its terms are in y; sentence 3 cites nothing
    assert s == {"sentences": 3, "cited": 2, "grounded": 1, "citation_coverage": 2 / 3, "groundedness": 1 / 3}
    assert answer_scores(answer, cites, retrieved, threshold=0.9)["grounded"] == 0


# ------------------------------------------------------------ eval + compare on real runs
def test_eval_and_compare(tmp_path: Path, mini_flow: Path, mini_registry: Path, data_file: Path) -> None:
    cols = ["question=${data.q}"]
    runs = {}
    for variant in (None, "bm25"):
        flow = load_flow(mini_flow, variant)
        runs[variant] = run_batch(flow, data_file, parse_columns(cols, flow), FlowRunner(flow, mini_registry),
                                  tmp_path / "runs", run_id=variant or "base").run_dir
    ev = evaluate_run(runs[None], data_file)
    assert (ev["labelled"], ev["scored"], ev["failed"]) == (4, 3, 1)  # line 3 is no label, line 4 failed
    assert len(ev["label_errors"]) == 1 and ev["label_errors"][0].startswith(f"{data_file}:3: not valid JSON")
    assert ev["retrieval"]["hit@k"] == 1.0 and ev["retrieval"]["mrr"] == 1.0
    assert ev["answers"]["citation_coverage"] == 1.0 and ev["answers"]["groundedness"] == 1.0
    assert ev["answers"]["answer_contains"] == 1.0  # only q1 has an answer label
    per_q = [json.loads(x) for x in (runs[None] / "eval.jsonl").read_text().splitlines()]
    assert [q["line"] for q in per_q] == [1, 2, 6]
    evaluate_run(runs["bm25"], data_file, k=1)
    cmp = compare_runs(runs[None], runs["bm25"])
    assert cmp["a"]["variant"] is None and cmp["b"]["variant"] == "bm25"
    rows = {r["metric"]: r for r in cmp["rows"]}
    assert rows["eval.k"]["a"] == 5 and rows["eval.k"]["b"] == 1 and rows["eval.k"]["delta"] == -4
    assert rows["batch.ok"]["delta"] == 0
    with pytest.raises(DataError, match="not a run directory"):
        compare_runs(runs[None], tmp_path)


def test_eval_with_key_and_span_labels(tmp_path: Path, mini_flow: Path, mini_registry: Path, data_file: Path) -> None:
    flow = load_flow(mini_flow)
    run = run_batch(flow, data_file, parse_columns(["question=${data.q}"], flow), FlowRunner(flow, mini_registry),
                    tmp_path / "runs").run_dir
    seal = "Replace the impeller seal every two years or after 500 hours of running."
    # pump.pdf text: paragraph 1 (61 chars) + "\n\n" + paragraph 2 = the seal sentence
    start = len("The pump must be primed with water before the first start.") + 2
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"id": "q1", "spans": [{"doc": "manuals/pump.pdf", "start": start, "end": start + len(seal)}]})
                      + "\n" + json.dumps({"id": "unknown", "docs": ["x"]}) + "\n")
    ev = evaluate_run(run, labels, key="id")
    assert ev["labelled"] == 1 and ev["spans"]["span_recall"] == 1.0
    assert ev["retrieval"]["hit@k"] == 1.0  # span documents count as document labels
    with pytest.raises(DataError, match="no label line matches"):
        evaluate_run(run, labels, key="nope")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"spans": [{"doc": "a", "start": 5}]}\n')
    with pytest.raises(DataError, match=f"{bad}:1: malformed spans"):
        evaluate_run(run, bad)


def test_batch_and_eval_report_token_and_cost_totals(tmp_path: Path, mini_flow: Path, mini_registry: Path,
                                                     data_file: Path) -> None:
    from ragline.core.serve_config import ServeConfig

    flow = load_flow(mini_flow)
    prices = ServeConfig.model_validate({"prices": {"extractive": {"prompt_per_mtok": 2.0, "completion_per_mtok": 8.0}}})
    s = run_batch(flow, data_file, parse_columns(["question=${data.q}"], flow), FlowRunner(flow, mini_registry),
                  tmp_path / "runs", run_id="priced", prices=prices)
    _, metrics, recs = load_run(s.run_dir)
    ok = [r for r in recs if r["status"] == "ok"]
    for r in ok:  # each line priced from its own llm tokens
        assert r["cost_usd"] == pytest.approx((2.0 * r["tokens"]["prompt"] + 8.0 * r["tokens"]["completion"]) / 1e6)
    total = sum(r["cost_usd"] for r in ok)
    assert total > 0 and metrics["cost_usd"]["total"] == pytest.approx(total)
    assert metrics["cost_usd"]["mean"] == pytest.approx(total / 3, abs=1e-8) and metrics["unpriced_models"] == []
    assert metrics["tokens"]["prompt"] == sum(r["tokens"]["prompt"] for r in ok)
    ev = evaluate_run(s.run_dir, data_file)
    assert ev["cost_usd"]["total"] == pytest.approx(total) and ev["tokens"]["total"] == metrics["tokens"]["total"]
    free = run_batch(flow, data_file, parse_columns(["question=${data.q}"], flow), FlowRunner(flow, mini_registry),
                     tmp_path / "runs", run_id="unpriced")
    assert free.metrics["cost_usd"] == {"total": 0.0, "mean": 0.0} and free.metrics["unpriced_models"] == ["extractive"]
