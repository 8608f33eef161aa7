"""Exit codes tell the truth (issue 10, item 3): a batch with failed lines, an eval that scored
nothing and a flow naming a missing index or alias all exit non-zero, saying why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragline.pipelines.cli import app
from tests.conftest import REPO, SAMPLE_QUESTIONS


@pytest.fixture()
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def invoke(cli: CliRunner, *args: object):
    return cli.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_batch_without_column_maps_optional_inputs_only_when_present(cli: CliRunner, sample_registry: Path,
                                                                   tmp_path: Path) -> None:
    """Regression: `flow batch flows/qa --data data/sample-questions.jsonl --variant dense --workers 2`
    (no --column) failed 15/15 lines with `column source: ${data.source}: line has no field
    'source'` (the optional input `source` has a default) and exited 0."""
    r = invoke(cli, "flow", "batch", REPO / "flows" / "qa", "--data", SAMPLE_QUESTIONS, "--variant", "dense",
               "--workers", "2", "--run-id", "dense", "--index-root", sample_registry, "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    n_questions = sum(1 for line in Path(SAMPLE_QUESTIONS).read_text(encoding="utf-8").splitlines() if line.strip())
    assert (summary["lines"], summary["ok"], summary["failed"]) == (n_questions, n_questions, 0)
    # a line that has the optional field: it is mapped (the filter applies)
    data = tmp_path / "with-source.jsonl"
    data.write_text(json.dumps({"question": "How long does a worker take to develop?", "source": "*colony-roles.html"})
                    + "\n")
    r = invoke(cli, "flow", "batch", REPO / "flows" / "qa", "--data", data, "--run-id", "src",
               "--index-root", sample_registry)
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "runs" / "src" / "outputs.jsonl").read_text().splitlines()[0])
    assert rec["inputs"]["source"] == "*colony-roles.html"
    assert rec["retrieved"] and all(c["source"].endswith("colony-roles.html") for c in rec["retrieved"])


def test_batch_with_failed_lines_exits_1_and_says_how_many(cli: CliRunner, sample_registry: Path,
                                                           tmp_path: Path) -> None:
    data = tmp_path / "mixed.jsonl"
    data.write_text(json.dumps({"question": "What is bee space?"}) + "\n" + json.dumps({"q": "no question"}) + "\n"
                    + "{not json\n")
    for extra in ([], ["--json"]):
        r = invoke(cli, "flow", "batch", REPO / "flows" / "qa", "--data", data, "--index-root", sample_registry, *extra)
        assert r.exit_code == 1, r.output
        assert "2 of 3 line(s) failed" in " ".join(r.stderr.split())
        assert "line has no field 'question'" in r.stderr


def test_eval_with_zero_scored_lines_exits_1(cli: CliRunner, sample_registry: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps({"q": f"x{i}"}) + "\n" for i in range(3)))
    r = invoke(cli, "flow", "batch", REPO / "flows" / "qa", "--data", data, "--run-id", "bad",
               "--index-root", sample_registry)
    assert r.exit_code == 1
    for extra in ([], ["--json"]):
        r = invoke(cli, "flow", "eval", tmp_path / "runs" / "bad", "--labels", SAMPLE_QUESTIONS, *extra)
        assert r.exit_code == 1, r.output
        assert "no line of" in r.stderr and "was scored (3 failed" in " ".join(r.stderr.split())


def test_validate_resolves_every_index_and_alias(cli: CliRunner, sample_registry: Path, tmp_path: Path) -> None:
    """Regression: `ragline flow validate` said "ok" for a flow whose index or alias does not exist."""
    r = invoke(cli, "flow", "validate", REPO / "flows" / "qa", "--index-root", tmp_path / "nothing")
    assert r.exit_code == 1 and "no index named 'sample'" in r.stderr
    assert "flow.yaml:" in r.stderr and "index sample@latest" in r.stderr
    flow = tmp_path / "qa"
    shutil.copytree(REPO / "flows" / "qa", flow)
    text = (flow / "flow.yaml").read_text()
    (flow / "flow.yaml").write_text(text.replace("  k10:\n    retrieve: {k: 10}",
                                                 "  k10:\n    retrieve: {k: 10, index: sample@prod}"))
    r = invoke(cli, "flow", "validate", flow, "--index-root", sample_registry)
    assert r.exit_code == 1
    assert "index sample@prod (variant k10)" in r.stderr and "has no alias 'prod'" in r.stderr
    r = invoke(cli, "flow", "validate", REPO / "flows" / "qa", "--index-root", sample_registry)
    assert r.exit_code == 0 and "ok" in r.stdout
