"""`ragline eval chunking` end to end on a small slice, with the hashing embedder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragline.pipelines.cli import app
from tests.conftest import write_params

runner = CliRunner()


def _eval(*args: str) -> dict:
    res = runner.invoke(app, ["eval", "chunking", *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_eval_reports_metrics_and_reuses_the_cache(workspace: Path, mini_dataset: Path) -> None:
    write_params(workspace, chunk={"strategy": "recursive", "max_tokens": 96, "overlap_tokens": 0})
    first = _eval("--dataset", str(mini_dataset), "--limit-questions", "20")
    assert first["overall"]["questions"] == 20
    assert sorted(first["corpora"]) == ["state_of_the_union", "wikitexts"]
    assert sum(c["questions"] for c in first["corpora"].values()) == 20
    assert sum(c["chunks"] for c in first["corpora"].values()) == first["chunks"] > 0
    assert first["mean_chunk_tokens"] <= 96
    assert first["embedded_now"] == first["chunks"] + 20 and first["cache_hits"] == 0
    for key in ("recall", "precision", "iou", "precision_omega"):
        assert 0.0 < first["overall"][key] <= 1.0
    # another k re-embeds nothing; precision_Ω depends only on the chunking
    second = _eval("--dataset", str(mini_dataset), "--limit-questions", "20", "-k", "2")
    assert second["embedded_now"] == 0 and second["cache_hits"] == first["chunks"] + 20
    assert second["overall"]["precision_omega"] == first["overall"]["precision_omega"]
    assert second["overall"]["recall"] <= first["overall"]["recall"]
    # each run writes its figures (telemetry.metrics_dir): the scores, chunks and cache hits
    tele = second["telemetry"]
    figures = json.loads(Path(tele["metrics_file"]).read_text())
    assert figures["kind"] == "eval" and figures["chunks"] == second["chunks"]
    assert figures["cache_hits"] == second["cache_hits"] and figures["computed"] == 0
    assert figures["scores"]["recall"] == round(second["overall"]["recall"], 4)
    assert figures["stage_seconds"] == {"chunk": round(second["chunk_seconds"], 3), "embed": round(second["embed_seconds"], 3)}
    prom = Path(tele["metrics_file"]).with_suffix(".prom").read_text()
    assert f'ragline_eval_score{{index="{figures["index"]}",kind="eval",metric="recall"}}' in prom
    assert len(list(Path(workspace / "logs" / "runs").glob("eval-*.json"))) == 2


def _recall_of_all_chunks(dataset: Path, max_tokens: int) -> tuple[float, set[str]]:
    """Mean recall when every token window is retrieved, and the reference characters missed."""
    import csv

    import numpy as np

    from ragline.chunkers.registry import get_chunker

    chunker = get_chunker("token", max_tokens=max_tokens)
    covered = {}
    for path in (dataset / "corpora").glob("*.md"):
        text = path.read_bytes().decode("utf-8")
        mask = np.zeros(len(text), dtype=bool)
        for c in chunker.chunk(text, doc_id=path.stem):
            mask[c.char_start : c.char_end] = True
        covered[path.stem] = (text, mask)
    recalls, missed = [], set()
    with open(dataset / "questions.csv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            text, mask = covered[row["corpus_id"]]
            refs = [(r["start_index"], r["end_index"]) for r in json.loads(row["references"])]
            in_refs = np.zeros(len(text), dtype=bool)
            for s, e in refs:
                in_refs[s:e] = True
                missed.update(text[i] for i in range(s, e) if not mask[i])
            recalls.append(np.sum(in_refs & mask) / sum(e - s for s, e in refs))
    return float(np.mean(recalls)), missed


def test_retrieving_every_chunk_gives_full_recall(workspace: Path, mini_dataset: Path) -> None:
    write_params(workspace, chunk={"strategy": "token", "max_tokens": 400, "overlap_tokens": 0})
    n = _eval("--dataset", str(mini_dataset), "-k", "1")["chunks"]
    everything = _eval("--dataset", str(mini_dataset), "-k", str(n))
    # Token windows cover every non-whitespace character of each corpus (they are trimmed
    # since chunker version 2), so k = all chunks retrieves every reference but the
    # whitespace between two windows ...
    expected, missed = _recall_of_all_chunks(mini_dataset, 400)
    assert missed and all(ch.isspace() for ch in missed)
    assert everything["overall"]["recall"] == pytest.approx(expected, abs=1e-12)
    assert 0.999 < expected < 1.0
    # ... and precision is the reference share of everything retrieved
    assert everything["overall"]["precision"] < 0.05


def test_table_output_and_dvc_files(workspace: Path, mini_dataset: Path) -> None:
    res = runner.invoke(app, ["eval", "chunking", "--dataset", str(mini_dataset), "--corpora", "wikitexts",
                              "--limit-questions", "5", "--metrics-out", "m/chunking.json", "--plots-out", "p/points.json"])
    assert res.exit_code == 0, res.output
    assert "wikitexts" in res.stdout and "all" in res.stdout and "state_of_the_union" not in res.stdout
    metrics = json.loads((workspace / "m" / "chunking.json").read_text())
    assert set(metrics) == {"recall", "precision", "iou", "precision_omega", "questions", "k", "mode", "chunks",
                            "mean_chunk_tokens", "chunk_seconds", "embed_seconds",
                            "curation_removed_chunks"}
    assert metrics["questions"] == 5 and metrics["k"] == 5
    points = json.loads((workspace / "p" / "points.json").read_text())
    assert [p["corpus"] for p in points] == ["all", "wikitexts"]
    assert points[0]["recall"] == metrics["recall"] and points[0]["iou"] == metrics["iou"]


def test_eval_defaults_come_from_the_eval_and_retrieval_params_sections(workspace: Path, mini_dataset: Path) -> None:
    write_params(workspace, eval={"dataset": str(mini_dataset), "limit_questions": 4, "corpora": ["wikitexts"]},
                 retrieval={"k": 3})
    out = _eval()
    assert (out["k"], out["overall"]["questions"], list(out["corpora"])) == (3, 4, ["wikitexts"])


@pytest.mark.parametrize("section, message", [
    ({"chunk": {"strategy": "nope"}}, r"chunk.strategy.*unknown strategy 'nope'; allowed: recursive, semantic, sentence, structure, token"),
    ({"chunk": {"max_tokenz": 100}}, r"unknown chunk option\(s\) `max_tokenz` \(did you mean `max_tokens`\?\); allowed: .*max_tokens"),
    ({"chunk": {"strategy": "token", "max_tokens": 50, "overlap_tokens": 50}}, r"overlap_tokens"),
    ({"retrieval": {"k": 0}}, r"retrieval.k"),
    ({"eval": {"limit": 3}}, r"eval.limit"),
])
def test_bad_params_fail_with_one_line_naming_the_key(workspace: Path, mini_dataset: Path, section: dict, message: str) -> None:
    write_params(workspace, **section)
    res = runner.invoke(app, ["eval", "chunking", "--dataset", str(mini_dataset), "--limit-questions", "2"])
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    assert __import__("re").search(message, " ".join(res.stderr.split())), res.stderr


def test_unknown_corpus_and_missing_dataset_fail_cleanly(workspace: Path, mini_dataset: Path) -> None:
    res = runner.invoke(app, ["eval", "chunking", "--dataset", str(mini_dataset), "--corpora", "wikitexts,nope"])
    assert res.exit_code == 1 and "unknown corpus id(s) nope" in res.stderr
    res = runner.invoke(app, ["eval", "chunking", "--dataset", str(workspace / "missing")])
    assert res.exit_code == 1 and "no corpora/ folder" in res.stderr


def test_semantic_strategy_embeds_sentences_through_the_cache(workspace: Path, mini_dataset: Path) -> None:
    from ragline.indexers.cache import EmbeddingCache
    from ragline.indexers.embedders import info_of, make_embedder

    write_params(workspace, chunk={"strategy": "semantic", "max_tokens": 128})
    first = _eval("--dataset", str(mini_dataset), "--limit-questions", "6")
    cache = EmbeddingCache(".ragline/cache", info_of(make_embedder("hashing")))
    try:
        stored = len(cache)
    finally:
        cache.close()
    assert stored > first["embedded_now"]  # the breakpoint sentences were cached too
    second = _eval("--dataset", str(mini_dataset), "--limit-questions", "6")
    assert second["embedded_now"] == 0 and second["overall"] == first["overall"]
