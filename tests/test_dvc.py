"""dvc.yaml runs the same stages; a chunk param change reruns chunk and later stages only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture()
def dvc_copy(tmp_path: Path) -> Path:
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in ("core", "chunkers", "indexers", "evaluation", "pipelines"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "data" / "sample", tmp_path / "data" / "sample")
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["embed"]["model"] = "hashing"
    params["load"]["workers"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], tmp_path)
    _run([str(BIN / "dvc"), "init", "-q"], tmp_path)
    return tmp_path


def _ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def test_repro_then_chunk_param_change_reruns_from_chunk(dvc_copy: Path) -> None:
    first = _run([str(BIN / "dvc"), "repro", "publish"], dvc_copy)
    assert set(_ran_stages(first)) >= {"load", "chunk", "embed", "publish"}
    published = json.loads((dvc_copy / "build" / "published.json").read_text())
    assert published["version"] == "v0001" and published["counts"]["documents"] == 12
    # embed.backend auto: the embed stage's file names the backend it used, and the manifest records that one
    import pyarrow.parquet as pq

    from ragline.indexers.backends import resolve_backend
    from ragline.pipelines.embed import backend_of_table

    made_by = backend_of_table(pq.read_table(dvc_copy / "build" / "embeddings.parquet"))
    assert made_by == resolve_backend("auto")
    manifest = json.loads((dvc_copy / "indexes" / "sample" / "v0001" / "manifest.json").read_text())
    assert manifest["params"]["embed"]["backend"] == made_by

    again = _run([str(BIN / "dvc"), "repro", "publish"], dvc_copy)
    assert _ran_stages(again) == []

    params = yaml.safe_load((dvc_copy / "params.yaml").read_text())
    params["chunk"]["max_tokens"] = 120
    (dvc_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = _run([str(BIN / "dvc"), "repro", "publish"], dvc_copy)
    ran = _ran_stages(changed)
    assert "load" not in ran
    assert {"chunk", "embed", "publish"} <= set(ran)
    second = json.loads((dvc_copy / "build" / "published.json").read_text())
    assert second["version"] == "v0002"
    assert second["counts"]["chunks"] > published["counts"]["chunks"]
    lock = yaml.safe_load((dvc_copy / "dvc.lock").read_text())
    assert lock["stages"]["chunk"]["params"]["params.yaml"]["chunk"]["max_tokens"] == 120
    assert set(lock["stages"]["load"]["params"]["params.yaml"]) == {"load"}


def test_curate_params_are_stage_params_and_publish_carries_curation(dvc_copy: Path) -> None:
    _run([str(BIN / "dvc"), "repro", "publish"], dvc_copy)
    lock = yaml.safe_load((dvc_copy / "dvc.lock").read_text())
    assert lock["stages"]["chunk"]["params"]["params.yaml"]["curate"]["duplicates"] == "link"
    published = json.loads((dvc_copy / "build" / "published.json").read_text())
    version = dvc_copy / "indexes" / "sample" / published["version"]
    assert (version / "duplicates.parquet").exists()
    assert json.loads((version / "curation.json").read_text())["counts"]["policy"] == "link"
    # `dvc exp run -S curate.near_duplicate_threshold=0.8` is a params change: chunk reruns (load does not)
    _run(["git", "add", "-A"], dvc_copy)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "base"], dvc_copy)
    changed = _run([str(BIN / "dvc"), "exp", "run", "-S", "curate.near_duplicate_threshold=0.8", "publish"], dvc_copy)
    ran = _ran_stages(changed)
    assert "load" not in ran and {"chunk", "publish"} <= set(ran)  # embed only reruns when the chunks changed
