"""Distributed builds (issue 13, item 2): load, chunk and embed mapped over partitions on a
real Dask cluster (``dask scheduler`` + two ``dask worker`` processes on loopback) publish
the same version as a local build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ragline.core.records import QuarantineRecord
from ragline.indexers.faiss_index import read_faiss_index
from ragline.indexers.registry import IndexRegistry
from ragline.pipelines.cli import app
from ragline.pipelines.config import ConfigError, RunnerConfig
from ragline.pipelines.distributed import PartitionResult, lost_partition, merge_partitions, partition
from ragline.pipelines.load import SourceFile
from tests.servers import dask_cluster

runner = CliRunner()


def _version(name: str, version: str):
    """Chunks, vectors (from the FAISS index) and documents of a version's one segment."""
    reg = IndexRegistry("indexes")
    (seg,) = reg.segments(name, version)
    folder = reg.segment_dir(name, seg.id)
    chunks = pq.read_table(folder / "chunks.parquet")
    index = read_faiss_index(folder / "index.faiss")
    return chunks, index.reconstruct_n(0, index.ntotal), pq.read_table(folder / "documents.parquet")


def _live(name: str, version: str) -> tuple[list[str], np.ndarray]:
    """A version's live chunk ids (sorted) and their vectors in that order, over its segments."""
    from ragline.indexers.retriever import PublishedIndex

    pub = PublishedIndex.open(IndexRegistry("indexes"), f"{name}@{version}")
    ids = pub.chunks.column("chunk_id").to_pylist()
    order = sorted(range(len(ids)), key=ids.__getitem__)
    return [ids[i] for i in order], pub.vectors()[order]


def test_dask_cluster_build_equals_local_build(workspace: Path, prefect_harness, capfd) -> None:
    r = runner.invoke(app, ["ingest", "data/sample", "--index", "local", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    with dask_cluster(2, cwd=workspace) as address:
        r = runner.invoke(app, ["ingest", "data/sample", "--index", "dist", "--runner", f"dask={address}", "--json"],
                          catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["stage_seconds"].get("cluster") is not None
        lc, lv, ld = _version("local", "v0001")
        dc, dv, dd = _version("dist", "v0001")
        assert dc.column("chunk_id").to_pylist() == lc.column("chunk_id").to_pylist()
        assert dc.column("row").to_pylist() == list(range(dc.num_rows))
        assert np.abs(dv - lv).max() <= 1e-6
        assert dd.column("text").to_pylist() == ld.column("text").to_pylist()
        # a refresh through the cluster: one change loaded, chunked and embedded there, the rest carried
        # over; the driver loads no model, and the version equals the same refresh run locally
        page = Path("data/sample/swarming.md")
        page.write_text(page.read_text() + "\n\nA late swarm rarely survives the winter.\n")
        r = runner.invoke(app, ["refresh", "--index", "dist", "--runner", f"dask={address}", "--json"],
                          catch_exceptions=False)
        assert r.exit_code == 0, r.output
        out = json.loads(r.output)
        assert out["changed"] == ["data/sample/swarming.md"] and out["counts"]["unchanged"] == 11
        assert "cluster" in out["stage_seconds"] and "load-model" not in out["stage_seconds"]
        docs = IndexRegistry("indexes").live_table("dist", out["version"], "documents")  # over its segments
        texts = dict(zip(docs.column("uri").to_pylist(), docs.column("text").to_pylist()))
        assert "late swarm" in texts["data/sample/swarming.md"]
    r = runner.invoke(app, ["refresh", "--index", "local", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    local_out = json.loads(r.output)
    assert local_out["embedded_chunks"] == out["embedded_chunks"] > 0
    (li, lv), (di, dv) = _live("local", local_out["version"]), _live("dist", out["version"])
    assert di == li and np.abs(dv - lv).max() <= 1e-6
    # the cluster's connections closing at the end print nothing (distributed's CommClosedError noise)
    captured = capfd.readouterr()
    assert "CommClosedError" not in captured.err + captured.out and "Traceback" not in captured.err


def test_a_worker_killed_in_mid_partition_loses_nothing(workspace: Path, prefect_harness, tmp_path: Path) -> None:
    """One real `dask worker` process is SIGKILLed after loading its partition (fault injection,
    exactly once across the cluster); the partition is rerun on a live worker and the published
    version still equals a local build: nothing quarantined as WorkerLost."""
    import os

    r = runner.invoke(app, ["ingest", "data/sample", "--index", "local", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    marker = tmp_path / "killed.pid"
    env = {"RAGLINE_CRASH_AT": "partition:loaded", "RAGLINE_CRASH_ONCE": str(marker)}
    with dask_cluster(2, cwd=workspace, worker_env=env) as address:
        r = runner.invoke(app, ["ingest", "data/sample", "--index", "dist", "--runner", f"dask={address}", "--json"],
                          catch_exceptions=False)
        assert r.exit_code == 0, r.output
    killed = int(marker.read_text())  # the worker that reached the crash point first, and died there
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)
    out = json.loads(r.output)
    assert out["quarantine"] == [] and out["version"] == "v0001"
    lc, lv, ld = _version("local", "v0001")
    dc, dv, dd = _version("dist", "v0001")
    assert dc.column("chunk_id").to_pylist() == lc.column("chunk_id").to_pylist()
    assert np.abs(dv - lv).max() <= 1e-6
    assert dd.column("text").to_pylist() == ld.column("text").to_pylist()


def test_partitions_are_contiguous_and_merge_in_order() -> None:
    files = [SourceFile(Path(f"f{i}.txt"), f"f{i}.txt") for i in range(7)]
    parts = partition(files, 3)
    assert [len(p) for p in parts] == [3, 2, 2] and [f for p in parts for f in p] == files
    assert partition(files[:2], 8) == [[files[0]], [files[1]]] and partition([], 4) == []


def test_a_lost_partition_quarantines_only_its_files() -> None:
    lost = lost_partition([SourceFile(Path("a.txt"), "a.txt"), SourceFile(Path("b.txt"), "b.txt")],
                          RuntimeError("worker tcp://127.0.0.1:1 died"))
    ok = PartitionResult([], [QuarantineRecord("c.txt", "load", "EmptyFile", "c.txt: empty")], None,
                         np.ones((0, 4), np.float32), 0, {})
    docs, bad, chunks, vectors, computed = merge_partitions([ok, lost], dim=4)
    assert [(q.path, q.error_type) for q in bad] == [("c.txt", "EmptyFile"), ("a.txt", "WorkerLost"),
                                                     ("b.txt", "WorkerLost")]
    assert "worker tcp://127.0.0.1:1 died" in bad[1].message
    assert chunks.num_rows == 0 and vectors.shape == (0, 4) and docs == [] and computed == 0


def test_runner_option_values() -> None:
    assert RunnerConfig.parse("dask=tcp://10.0.0.5:8786") == {"kind": "dask", "address": "tcp://10.0.0.5:8786"}
    assert RunnerConfig.parse("local") == {"kind": "local", "address": None}
    with pytest.raises(ConfigError, match="--runner 'ray'"):
        RunnerConfig.parse("ray")
