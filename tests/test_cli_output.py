"""Quiet, readable output (issue 10, item 4): --version, -q/-v, no library log lines by default,
tables that fit 80 columns, a readable `index show`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import ragline.pipelines.cli as pipelines_cli
from ragline.indexers.backends import recorded_backend
from ragline.indexers.registry import IndexRegistry
from ragline.pipelines.cli import app
from tests.refresh.conftest import VENV_BIN, params_here, publish_texts

runner = CliRunner()


@pytest.fixture()
def md_workspace(workspace: Path) -> Path:
    """The workspace with only the Markdown and text samples (parsing stays fast)."""
    for p in (workspace / "data" / "sample").iterdir():
        if p.suffix not in (".md", ".txt"):
            p.unlink()
    return workspace


def test_version() -> None:
    from importlib.metadata import version

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"ragline {version('ragline')}"


def test_ingest_prints_no_prefect_or_debug_lines_by_default(md_workspace: Path, prefect_harness) -> None:
    """Regression: Prefect INFO lines ("Task run 'load-39e' - Finished in state Completed()") and
    bm25s's "DEBUG | bm25s - Building index from IDs" were mixed into every ingest's output."""
    import prefect.settings

    env = {**os.environ, "PREFECT_API_URL": prefect.settings.PREFECT_API_URL.value(), "COLUMNS": "80"}
    env.pop("PREFECT_LOGGING_LEVEL", None)  # the test session sets it; a user's shell does not
    ragline = str(VENV_BIN / "ragline")
    r = subprocess.run([ragline, "ingest", "data/sample"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr
    assert "INFO" not in r.stdout and "DEBUG" not in r.stdout and "ingest → sample@v0001" in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    q = runner.invoke(app, ["-q", "ingest", "data/sample"])
    assert q.exit_code == 0 and q.stderr.strip() == ""
    assert q.stdout.strip().splitlines() == [q.stdout.strip()] and q.stdout.startswith("sample@v0002: ")


@pytest.fixture()
def two_versions(workspace: Path) -> Path:
    p = params_here()
    publish_texts(p, {"data/sample/bees.txt": "Worker bees take 21 days to develop from egg to adult. " * 8,
                      "data/sample/queen.txt": "A queen develops in 16 days and is fed royal jelly. " * 8})
    publish_texts(p, {"data/sample/bees.txt": "Worker bees take 21 days to develop from egg to adult. " * 8})
    return workspace


def _narrow(monkeypatch: pytest.MonkeyPatch, width: int = 80) -> None:
    monkeypatch.setattr(pipelines_cli, "out", Console(width=width, force_terminal=False))
    import ragline.pipelines.cli_registry as cli_registry

    monkeypatch.setattr(cli_registry, "out", pipelines_cli.out)


def test_index_list_fits_80_columns_without_truncated_headers(two_versions: Path, monkeypatch) -> None:
    """Regression: at 80 columns every header of `index list` was truncated (`versi… │ alias…`)."""
    _narrow(monkeypatch)
    r = runner.invoke(app, ["index", "list"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert max(len(x) for x in lines) <= 80 and "…" not in r.stdout
    header = next(x for x in lines if "version" in x).split()
    assert header == ["index", "version", "aliases", "created", "docs", "chunks", "quar."]
    assert any(x.split()[:3] == ["sample", "v0002", "latest"] for x in lines)
    _narrow(monkeypatch, 160)
    wide = runner.invoke(app, ["index", "list"]).stdout
    assert "params_hash" in wide and "quarantined" in wide and "…" not in wide


def test_query_at_80_columns_is_a_vertical_list(two_versions: Path, monkeypatch) -> None:
    """Regression: at 80 columns the query snippet column wrapped at ~20 characters."""
    _narrow(monkeypatch)
    r = runner.invoke(app, ["query", "how long does a worker bee develop", "-k", "1"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert max(len(x) for x in lines) <= 80
    assert lines[1].startswith("1. ") and "data/sample/bees.txt" in lines[1] and "chars 0-" in lines[1]
    assert lines[2].startswith("   Worker bees take 21 days") and len(lines[2].strip()) > 60


def test_index_show_is_readable_defaults_to_the_index_given_and_has_json(two_versions: Path, monkeypatch) -> None:
    p = params_here()
    data = p.to_dict()
    data["index"]["name"] = "other"
    from ragline.pipelines.config import Params

    publish_texts(Params.from_dict(data), {"data/sample/x.txt": "Smoke calms the bees before an inspection. " * 5})
    _narrow(monkeypatch)
    r = runner.invoke(app, ["index", "show", "--index", "other"])
    assert r.exit_code == 0, r.output
    assert "other@v0001" in r.stdout and "{'" not in r.stdout and "': " not in r.stdout
    assert "1 documents, " in r.stdout and "files" in r.stdout and "intact" in r.stdout
    m = IndexRegistry(p.index.root).manifest("other", "v0001")
    recorded = recorded_backend({"params": m.params, "embedding": m.embedding})
    assert m.params["embed"]["backend"] == "auto" and recorded == "onnx"  # publish_texts records auto: fp32 vectors
    assert f"backend {recorded}" in " ".join(r.stdout.split())  # which backend embedded (rows may wrap)
    assert max(len(x) for x in r.stdout.splitlines()) <= 80
    j = json.loads(runner.invoke(app, ["index", "show", "--index", "other", "--json"]).stdout)
    assert (j["index"], j["version"], j["sources"], j["files_intact"]) == ("other", "v0001", ["data/sample"], True)
    assert j["embed_backend"] == recorded
    j = json.loads(runner.invoke(app, ["index", "show", "v0001", "--json"]).stdout)
    assert (j["index"], j["counts"]["documents"]) == ("sample", 2)
    j = json.loads(runner.invoke(app, ["index", "show", "--index", "sample@v0001", "--json"]).stdout)
    assert j["version"] == "v0001"
