"""Chunking grids: validation, expansion, and the Prefect flow writing leaderboard and plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ragline.chunkers.base import ConfigError
from ragline.pipelines.cli import app
from ragline.pipelines.config import Params
from ragline.pipelines.experiments import LEADERBOARD_COLUMNS, plan_grid

REPO = Path(__file__).resolve().parents[2]


def test_grid_expands_to_distinct_chunkers() -> None:
    plan = plan_grid({"grid": {"strategy": ["token", "sentence"], "max_tokens": [64, 128], "overlap_tokens": [0, 16]},
                      "configs": [{"strategy": "sentence", "max_tokens": 64, "overlap_sentences": 1}]}, Params())
    # sentence ignores overlap_tokens: its two overlap values are one configuration
    assert plan.labels == ("token 64/0", "token 64/16", "token 128/0", "token 128/16", "sentence 64",
                           "sentence 128", "sentence 64/1s")
    assert plan.params_for(6).chunk.model_dump()["overlap_sentences"] == 1
    assert (plan.k, plan.limit_questions, plan.dataset) == (5, None, "../shared/datasets/chunking-eval")


def test_grid_settings_override_eval_params() -> None:
    plan = plan_grid({"name": "g", "k": 3, "limit_questions": 7, "corpora": ["wikitexts"], "dataset": "d",
                      "params": {"embed": {"model": "hashing"}}, "grid": {"context": [False, True]}}, Params())
    assert (plan.name, plan.k, plan.limit_questions, plan.corpora, plan.dataset) == ("g", 3, 7, ("wikitexts",), "d")
    assert plan.base.embed.model == "hashing"
    assert plan.labels == ("token 200/0", "token 200/0 +ctx")


@pytest.mark.parametrize("grid, message", [
    ({"grid": {"strategy": ["token", "fancy"]}}, r"strategy: unknown chunk.strategy 'fancy'; allowed: recursive, semantic"),
    ({"grid": {"max_tokenz": [1]}}, r"grid.max_tokenz: unknown chunk option 'max_tokenz'; allowed: .*max_tokens"),
    ({"configs": [{"strategy": "token", "chunk_size": 5}]}, r"configs\[0\].chunk_size: unknown chunk option"),
    ({"grid": {"max_tokens": [64], "overlap_tokens": [64]}}, r"overlap_tokens"),
    ({"grid": {"max_tokens": [-5]}}, r"max_tokens"),
    ({"gird": {"max_tokens": [64]}}, r"gird: Extra inputs are not permitted"),
    ({"grid": {"max_tokens": []}}, r"grid.max_tokens: expected a non-empty list"),
    ({"params": {"nope": {"a": 1}}}, r"params.nope: unknown params section"),
    ({}, r"no configurations"),
])
def test_bad_grids_are_config_errors_naming_the_key(grid: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_grid(grid, Params(), source="g.yaml")


def test_skip_invalid_drops_bad_values_but_not_unknown_keys() -> None:
    plan = plan_grid({"skip_invalid": True, "grid": {"max_tokens": [32, 128], "overlap_tokens": [0, 64]}}, Params())
    assert plan.labels == ("token 32/0", "token 128/0", "token 128/64")
    assert len(plan.skipped) == 1 and "overlap_tokens" in plan.skipped[0][1]
    with pytest.raises(ConfigError, match="unknown chunk option"):
        plan_grid({"skip_invalid": True, "grid": {"size": [1]}}, Params())


def test_example_grid_is_valid() -> None:
    grid = yaml.safe_load((REPO / "grids" / "chunking.yaml").read_text())
    plan = plan_grid(grid, Params(), source="grids/chunking.yaml")
    assert len(plan.points) >= 4 and plan.k == 5


def test_experiment_run_writes_leaderboard_and_plot(prefect_harness: None, workspace: Path, mini_dataset: Path) -> None:
    grid = {"name": "tiny", "dataset": str(mini_dataset), "limit_questions": 10, "k": 3,
            "grid": {"strategy": ["token", "recursive"], "max_tokens": [64], "overlap_tokens": [0]}}
    (workspace / "grid.yaml").write_text(yaml.safe_dump(grid))
    res = CliRunner().invoke(app, ["experiment", "run", "grid.yaml", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    out = workspace / "experiments" / "tiny"
    assert summary["out_dir"] == "experiments/tiny"
    with open(out / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(LEADERBOARD_COLUMNS)
    # the grid's points inherit params.yaml's chunk.context (true) and its retrieval: search, which a
    # label names only where a point differs from it
    assert sorted(r["config"] for r in rows) == ["recursive 64/0 +ctx", "token 64/0 +ctx"]
    assert [r["rank"] for r in rows] == ["1", "2"]
    assert float(rows[0]["recall"]) >= float(rows[1]["recall"])
    assert all(r["questions"] == "10" and r["k"] == "3" for r in rows)
    assert [r["config"] for r in summary["leaderboard"]] == [r["config"] for r in rows]
    md = (out / "leaderboard.md").read_text()
    assert "| 1 | " + rows[0]["config"] + " | " in md and "| 2 | " + rows[1]["config"] + " | " in md
    assert (out / "recall_vs_iou.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["questions"] == 10 and len(results["results"]) == 2
    # the second configuration's table and the first's differ only in chunking; the cache made
    # the rerun of an identical grid embed nothing
    again = CliRunner().invoke(app, ["experiment", "run", "grid.yaml", "--json", "--out", "again"])
    assert again.exit_code == 0, again.output
    assert all(r["embedded_now"] == 0 for r in json.loads(again.stdout)["leaderboard"])


def test_bad_grid_fails_before_the_flow_starts(workspace: Path) -> None:
    (workspace / "grid.yaml").write_text(yaml.safe_dump({"grid": {"strategy": ["nope"]}}))
    res = CliRunner().invoke(app, ["experiment", "run", "grid.yaml"])
    assert res.exit_code == 1 and "unknown chunk.strategy 'nope'" in res.stderr
    res = CliRunner().invoke(app, ["experiment", "run", "missing.yaml"])
    assert res.exit_code == 1 and "grid file not found" in res.stderr
