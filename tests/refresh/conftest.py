"""Fixtures of the refresh/registry tests: a light sample workspace (no PDF/DOCX/PPTX, so
parsing stays fast), versions published straight from texts (:mod:`tests.publishing`), and the environment that lets a
`ragline` subprocess use the session's Prefect test API instead of starting its own."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ragline.pipelines.config import Params, load_params

HEAVY_FORMATS = (".pdf", ".docx", ".pptx")
VENV_BIN = Path(sys.executable).parent


@pytest.fixture()
def light_workspace(workspace: Path) -> Path:
    """The ``workspace`` fixture without the PDF/DOCX/PPTX samples (6 md/txt/html documents)."""
    for p in (workspace / "data" / "sample").iterdir():
        if p.suffix in HEAVY_FORMATS:
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
