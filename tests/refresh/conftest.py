"""Fixtures of the refresh/registry tests: a light sample workspace (no PDF/DOCX/PPTX, so
parsing stays fast), versions published straight from texts (:mod:`tests.publishing`), and the environment that lets a
`ragline` subprocess use the session's Prefect test API instead of starting its own."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragline.indexers.registry import IndexRegistry
from ragline.pipelines.cli import app
from ragline.pipelines.config import Params, load_params
from tests.conftest import write_params
from tests.publishing import publish_texts

LIGHT_FORMATS = (".md", ".txt", ".html")
VENV_BIN = Path(sys.executable).parent


@pytest.fixture()
def light_workspace(workspace: Path) -> Path:
    """The ``workspace`` fixture with only the md/txt/html samples (6 documents)."""
    for p in (workspace / "data" / "sample").iterdir():
        if p.suffix not in LIGHT_FORMATS:
            p.unlink()
    return workspace


@pytest.fixture()
def subprocess_env(prefect_harness) -> dict[str, str]:
    """Environment for `ragline` subprocesses: the venv first on PATH, the session's Prefect API."""
    import prefect.settings

    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PREFECT_API_URL": prefect.settings.PREFECT_API_URL.value(), "PYTHONUNBUFFERED": "1"}


def params_here() -> Params:
    """params.yaml of the current (workspace) directory."""
    return load_params("params.yaml")


_runner = CliRunner()

A = "alpha doc: hive frames and bee space between the boxes"
B = "bravo doc: varroa mites counted with a sugar roll every month"
C = "charlie doc: the queen lays eggs in drawn comb during spring"
D = "delta doc: honey is extracted after capping with an uncapping knife"


def cli(*args: str) -> tuple[int, str, str]:
    """Run ``ragline ARGS`` in-process: ``(exit code, stdout, stderr)``."""
    r = _runner.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def cli_json(*args: str):
    """Run ``ragline ARGS --json``, assert exit 0, return the parsed JSON."""
    code, stdout, stderr = cli(*args, "--json")
    assert code == 0, stderr
    return json.loads(stdout)


@pytest.fixture()
def three_versions(workspace: Path) -> IndexRegistry:
    """sample@v0001..v0003 published from texts; latest -> v0003; no promotion gate."""
    write_params(workspace, promote={"gate": "none"})
    p = params_here()
    publish_texts(p, {"d/a.txt": A, "d/b.txt": B, "d/c.txt": C})
    publish_texts(p, {"d/a.txt": A, "d/b.txt": B + " and oxalic acid", "d/d.txt": D})
    publish_texts(p, {"d/a.txt": A, "d/d.txt": D})
    return IndexRegistry(p.index.root)
