"""Data-version rollback: build v1 and v2 with `dvc repro` in a git + DVC repository (local DVC
remote in a temp folder), then rebuild v1 from its commit and compare it with the recorded v1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from ragline.indexers.retriever import PublishedIndex
from ragline.indexers.registry import IndexRegistry
from ragline.pipelines.lineage import dvc_md5, find_dvc_commit, lock_publish_deps
from tests.conftest import REPO, SAMPLE
from tests.refresh.conftest import VENV_BIN

DOCS = ("hive-anatomy.md", "protective-equipment.txt", "seasonal-calendar.txt")


def sh(repo: Path, *cmd: str) -> str:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    r = subprocess.run(list(cmd), cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def version_rows(reg, version: str) -> tuple[list[str], np.ndarray]:
    """Chunk ids and vectors of a version's live rows (both versions here are one-segment full builds)."""
    pub = PublishedIndex.open(reg, f"sample@{version}")
    return pub.chunks.column("chunk_id").to_pylist(), pub.vectors()


@pytest.fixture()
def dvc_repo(tmp_path: Path) -> Path:
    """A git + DVC repository with the pipeline files, three sample documents (tracked by DVC)
    and a local DVC remote."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for d in ("core", "chunkers", "indexers", "evaluation", "pipelines"):
        shutil.copytree(REPO / d, repo / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    (repo / "data" / "sample").mkdir(parents=True)
    for name in DOCS:
        shutil.copy(SAMPLE / name, repo / "data" / "sample" / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["embed"]["model"] = "hashing"
    params["load"]["workers"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".gitignore").write_text("indexes/\n.ragline/\n__pycache__/\n")
    sh(repo, "git", "init", "-q")
    sh(repo, str(VENV_BIN / "dvc"), "init", "-q")
    sh(repo, str(VENV_BIN / "dvc"), "remote", "add", "-d", "local", str(tmp_path / "dvc-remote"))
    sh(repo, str(VENV_BIN / "dvc"), "add", "-q", "data/sample")
    return repo


def build(repo: Path, message: str) -> str:
    """`dvc repro publish`, commit, `dvc push`; returns the published version."""
    sh(repo, str(VENV_BIN / "dvc"), "repro", "-q", "publish")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", message)
    sh(repo, str(VENV_BIN / "dvc"), "push", "-q")
    return json.loads((repo / "build" / "published.json").read_text())["version"]


def test_rollback_rebuilds_the_recorded_version(dvc_repo: Path) -> None:
    repo = dvc_repo
    v1 = build(repo, "v1")
    reg = IndexRegistry(repo / "indexes")
    m1 = reg.manifest("sample", v1)
    lock = (repo / "dvc.lock").read_text()
    # the manifest records the publish stage's data inputs exactly as dvc.lock lists them
    data_files = ("build/curated_documents.parquet", "build/chunks.parquet", "build/embeddings.parquet",
                  "build/quarantine.parquet", "build/duplicates.parquet", "build/curation.json")
    locked = lock_publish_deps(lock)
    assert m1.dvc_stage_deps == {p: locked[p] for p in data_files} == {p: dvc_md5(repo / p) for p in data_files}
    v1_commit = sh(repo, "git", "rev-parse", "HEAD").strip()

    # change documents (edit, add, remove) and params, build v2
    docs = repo / "data" / "sample"
    (docs / "hive-anatomy.md").write_text((docs / "hive-anatomy.md").read_text() + "\n\nA new section on top bars.\n")
    shutil.copy(SAMPLE / "swarming.md", docs / "swarming.md")
    (docs / "seasonal-calendar.txt").unlink()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["chunk"]["max_tokens"] = 80
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(repo, str(VENV_BIN / "dvc"), "add", "-q", "data/sample")
    v2 = build(repo, "v2")
    assert v2 != v1 and reg.manifest("sample", v2).params_hash != m1.params_hash
    assert find_dvc_commit(reg.manifest("sample", v1), repo) == v1_commit

    # roll back from the DVC remote alone: drop the DVC cache and every DVC-tracked file first
    # (a machine that has the git history and the registry, but none of the data)
    for folder in (repo / ".dvc" / "cache", repo / "build", docs):
        shutil.rmtree(folder)
    out = sh(repo, str(VENV_BIN / "ragline"), "index", "restore", v1, "--pull", "--json")
    result = json.loads(out)
    assert result["commit"] == v1_commit and result["equal"] is True
    v3 = result["rebuilt"]
    assert v3 not in (v1, v2)
    assert sorted(p.name for p in docs.iterdir()) == sorted(DOCS)  # the documents of v1 are back

    # check the comparison independently: vector count, chunk ids, vectors, params hash
    m3 = reg.manifest("sample", v3)
    assert m3.counts["vectors"] == m1.counts["vectors"] > 0
    (ids1, vec1), (ids3, vec3) = version_rows(reg, v1), version_rows(reg, v3)
    assert ids1 == ids3
    np.testing.assert_allclose(vec3, vec1, atol=1e-6, rtol=0)
    assert m3.params_hash == m1.params_hash and m3.inputs == m1.inputs


def test_restore_refuses_a_version_not_built_by_dvc(workspace: Path) -> None:
    from typer.testing import CliRunner

    from ragline.pipelines.cli import app
    from tests.publishing import publish_texts
    from tests.refresh.conftest import params_here

    publish_texts(params_here(), {"d/a.txt": "one document"})
    r = CliRunner().invoke(app, ["index", "restore", "v0001"])
    assert r.exit_code == 1 and "was not built by `dvc repro`" in " ".join(r.stderr.split())
