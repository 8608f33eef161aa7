"""Shared fixtures: an isolated workspace, params with the fast fake embedder, Prefect harness."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from ragline.core.offline import set_offline_env

set_offline_env()
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
SAMPLE_QUESTIONS = REPO / "data" / "sample-questions.jsonl"


@pytest.fixture(scope="session")
def prefect_harness():
    """A throwaway Prefect API (SQLite in a temp dir) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp working directory holding a copy of the sample corpus and a params.yaml that uses
    the deterministic hashing embedder, one load worker and workspace-local paths. cwd is set to it."""
    shutil.copytree(SAMPLE, tmp_path / "data" / "sample")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["embed"]["model"] = "hashing"
    params["load"]["workers"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_params(folder: Path, **sections: dict) -> Path:
    """Update sections of ``folder/params.yaml`` (shallow per section) and return its path."""
    path = folder / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        params.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path
