"""Incremental refresh (Prefect flow, hashing embedder): only what changed is redone, and the
result equals a full build of the same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ragline.indexers.embedders import make_embedder
from ragline.indexers.registry import IndexRegistry
from ragline.indexers.retriever import PublishedIndex
from ragline.core.schemas import indexed_texts
from ragline.pipelines.refresh import InputDiff, ScannedFile, diff_inputs, plan_refresh
from ragline.pipelines.load import SourceFile
from tests.conftest import write_params
from tests.refresh.conftest import params_here

SRC = Path("data/sample")


def refresh(**overrides):
    from ragline.pipelines.flows import refresh_flow

    return refresh_flow(params=params_here().to_dict(), **overrides)


def version_data(root: str, name: str, version: str):
    """Live chunks and vectors of a version in a full build's order (by URI, then position in
    the document): a refreshed version lists its segments' rows segment after segment."""
    pub = PublishedIndex.open(IndexRegistry(root), f"{name}@{version}")
    uris = pub.chunks.column("uri").to_pylist()
    order = sorted(range(len(uris)), key=lambda i: uris[i])  # stable: document order kept within a URI
    return pub.chunks.take(pa.array(order, type=pa.int64())), pub.vectors()[order]


def full_build(name: str):
    """A full ingest of the current files into index ``name`` (the reference)."""
    from ragline.pipelines.flows import ingest_flow

    data = params_here().to_dict()
    data["index"]["name"] = name
    summary = ingest_flow([], data)
    return version_data(data["index"]["root"], name, summary.version)


def scanned(uri: str, sha: str) -> ScannedFile:
    return ScannedFile(SourceFile(Path(uri), uri), uri, sha)


def test_diff_inputs_sorts_every_case() -> None:
    parent = [{"uri": u, "doc_id": u, "sha256": s} for u, s in [("a", "1"), ("b", "2"), ("c", "3"), ("q", "9")]]
    files = [scanned("a", "1"), scanned("b", "22"), scanned("d", "4"), scanned("e", "5"), scanned("q", "99"),
             scanned("x", "")]
    d = diff_inputs(files, parent, parent_quarantine={"e": "5", "q": "99", "x": ""})
    assert d == InputDiff(added=("d",), changed=("b",), removed=("c",), unchanged=("a",),
                          still_quarantined=("e", "q", "x"))
    assert not d.empty and d.counts() == {"added": 1, "changed": 1, "removed": 1, "unchanged": 1, "still_quarantined": 3, "skipped": 0}
    assert diff_inputs(files[:1], parent[:1]).empty


def test_file_hashes_reuse_only_files_unchanged_since_hashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """refresh.hash_cache: an unchanged file keeps its recorded sha256 unread; a rewrite with the
    same size and the old mtime (ctime moves), a racily clean file, a replaced inode and a
    damaged state file are hashed again; without the cache every file is read."""
    import os

    from ragline.core import hashing
    from ragline.core.hashing import FileHashes, sha256_bytes
    from ragline.pipelines.config import Params
    from ragline.pipelines.refresh import hash_state_path, scan_sources

    reads: list[str] = []
    real = hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", lambda p, *a: reads.append(Path(p).name) or real(p, *a))
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (docs / name).write_text(f"bees {name}\n")
    params = Params.from_dict({"index": {"root": str(tmp_path / "idx")}, "paths": {"cache": str(tmp_path / "cache")}})
    shas = lambda: {f.uri.rsplit("/", 1)[1]: f.sha256 for f in scan_sources([docs], params)}  # noqa: E731

    first = shas()
    assert sorted(reads) == ["a.txt", "b.txt", "c.txt"] and hash_state_path(params).is_file()
    reads.clear()
    assert shas() == first and sorted(reads) == ["a.txt", "b.txt", "c.txt"]  # just written: racily clean
    monkeypatch.setattr(hashing, "RACY_NS", 0)
    reads.clear()
    state = lambda: (lambda st: (st.st_ino, st.st_mtime_ns))(os.stat(hash_state_path(params)))  # noqa: E731
    written = state()
    assert shas() == first and reads == []  # unchanged: nothing read
    assert state() == written  # and the state file is not written again (a no-change refresh writes nothing)

    st = os.stat(docs / "a.txt")
    (docs / "a.txt").write_text("wasp a.txt\n")  # same size
    os.utime(docs / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns))  # the old mtime back; ctime moves
    (docs / "b.txt").rename(docs / "b.old")
    (docs / "b.txt").write_text("bees b.txt\n")  # same bytes, another inode
    reads.clear()
    got = shas()
    assert sorted(reads) == ["a.txt", "b.old", "b.txt"]  # b.old: a new name (its inode was b.txt's)
    assert got["a.txt"] == sha256_bytes(b"wasp a.txt\n") != first["a.txt"] and got["b.txt"] == first["b.txt"]
    assert state() != written  # files hashed again: their new stats are recorded

    hash_state_path(params).write_bytes(b"not parquet")
    reads.clear()
    assert shas() == got and len(reads) == 4  # a damaged state is ignored
    off = Params.from_dict({**params.to_dict(), "refresh": {"hash_cache": False}})
    reads.clear()
    scan_sources([docs], off)
    assert len(reads) == 4
    assert FileHashes(None).sha256(docs / "c.txt", "c") == first["c.txt"]
    monkeypatch.chdir(tmp_path)
    scan_sources([docs], Params.from_dict({**params.to_dict(), "paths": {"cache": ""}}))
    assert not (tmp_path / "file-hashes").exists()  # no cache folder: no state written anywhere


def test_run_refresh_scans_the_sources_once(light_workspace: Path, prefect_harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ragline refresh`` (run_refresh) plans under the index lock and hands that plan to the
    refresh flow (flows.PLANNED): the sources are scanned once per refresh, not twice."""
    from ragline.pipelines import refresh as refresh_mod

    scans: list[int] = []
    real = refresh_mod.scan_sources
    monkeypatch.setattr(refresh_mod, "scan_sources", lambda *a, **k: scans.append(1) or real(*a, **k))
    first = refresh_mod.run_refresh(params_here())
    assert first.version is not None and len(scans) == 1
    (light_workspace / "data" / "sample" / "new-note.md").write_text("# Drones\n\nDrones leave the hive in autumn.\n")
    scans.clear()
    second = refresh_mod.run_refresh(params_here())
    assert second.version is not None and second.counts()["added"] == 1 and len(scans) == 1
    refresh()  # the flow called directly still plans by itself
    assert len(scans) == 2


def test_first_refresh_builds_and_second_does_nothing(light_workspace: Path, prefect_harness) -> None:
    s1 = refresh()
    assert (s1.version, s1.parent_version, len(s1.added), s1.unchanged) == ("v0001", None, 6, 0)
    assert s1.embedded_chunks == s1.chunks == s1.computed and s1.carried_chunks == 0
    p = params_here()
    plan = plan_refresh(p, IndexRegistry(p.index.root))
    assert plan.nothing_to_do and plan.diff.counts()["unchanged"] == 6
    s2 = refresh()
    assert s2.nothing_changed and s2.version is None and s2.unchanged == 6
    assert IndexRegistry(p.index.root).versions("sample") == ["v0001"]


def test_refresh_redoes_only_added_and_changed_and_equals_full_build(light_workspace: Path, prefect_harness) -> None:
    refresh()
    v1_chunks, v1_vecs = version_data("indexes", "sample", "v0001")
    (SRC / "swarming.md").write_text((SRC / "swarming.md").read_text() + "\n\nA late swarm in September rarely survives winter.\n")
    (SRC / "wintering.html").unlink()
    (SRC / "drones.md").write_text("# Drones\n\nDrones are male honey bees that mate with queens in flight.\n")

    s = refresh()
    assert (s.version, s.parent_version) == ("v0002", "v0001")
    assert (s.added, s.changed, s.removed, s.unchanged) == (
        ["data/sample/drones.md"], ["data/sample/swarming.md"], ["data/sample/wintering.html"], 4)
    chunks, vecs = version_data("indexes", "sample", "v0002")
    uris = chunks.column("uri").to_pylist()
    redone = {"data/sample/drones.md", "data/sample/swarming.md"}
    assert s.embedded_chunks == sum(u in redone for u in uris)
    assert s.carried_chunks == sum(u not in redone for u in uris) == sum(
        u not in redone | {"data/sample/wintering.html"} for u in v1_chunks.column("uri").to_pylist())
    # texts embedded now = texts of the redone chunks that no earlier version embedded
    old_texts = set(indexed_texts(v1_chunks))
    new_texts = {t for t, u in zip(indexed_texts(chunks), uris) if u in redone}
    assert s.computed == len(new_texts - old_texts) < s.embedded_chunks
    # carried vectors are the parent's, bit for bit
    v1_rows = {cid: i for i, cid in enumerate(v1_chunks.column("chunk_id").to_pylist())}
    for i, (cid, u) in enumerate(zip(chunks.column("chunk_id").to_pylist(), uris)):
        if u not in redone:
            assert np.array_equal(vecs[i], v1_vecs[v1_rows[cid]])
    served = PublishedIndex.open(IndexRegistry("indexes"), "sample@v0002").chunks
    assert served.column("row").to_pylist() == list(range(served.num_rows))
    # the refreshed version equals a full build of the same files
    full_chunks, full_vecs = full_build("full")
    assert chunks.column("chunk_id").to_pylist() == full_chunks.column("chunk_id").to_pylist()
    np.testing.assert_allclose(vecs, full_vecs, atol=1e-6)
    m = IndexRegistry("indexes").manifest("sample", "v0002")
    assert [r["uri"] for r in m.inputs] == sorted(str(p) for p in SRC.iterdir())
    assert m.parent_version == "v0001" and m.stats["refresh"] == s.counts()


def test_auto_backend_follows_the_parent_version_and_the_manifest_records_the_one_used(
        light_workspace: Path, prefect_harness) -> None:
    from ragline.indexers.backends import resolve_backend
    from ragline.pipelines.embed import with_embed_backend

    this_cpu = resolve_backend("auto")
    assert this_cpu != "onnx-int8"  # never the fastest (openvino-int8 beats it): the parent's choice is visible
    write_params(light_workspace, embed={"backend": "onnx-int8"})
    refresh()
    write_params(light_workspace, embed={"backend": "auto"})  # the shipped default
    (SRC / "drones.md").write_text("# Drones\n\nDrones are male honey bees that mate with queens in flight.\n")
    s = refresh()
    assert (s.version, s.parent_version, s.added) == ("v0002", "v0001", ["data/sample/drones.md"])
    reg = IndexRegistry("indexes")
    assert [reg.manifest("sample", v).params["embed"]["backend"] for v in ("v0001", "v0002")] == ["onnx-int8"] * 2
    # what follows one version (a promotion gate searching it) gets that version's backend
    assert with_embed_backend(params_here(), manifest=reg.manifest("sample", "v0001")).embed.backend == "onnx-int8"
    # a new index (no version yet) gets this CPU's fastest; the manifest names it, never "auto"
    write_params(light_workspace, index={"name": "fresh"})
    refresh()
    assert reg.manifest("fresh", "v0001").params["embed"]["backend"] == this_cpu


def test_removal_only_refresh_loads_no_model_and_embeds_nothing(light_workspace: Path, prefect_harness) -> None:
    refresh()
    (SRC / "swarming.md").unlink()
    s = refresh()
    assert s.removed == ["data/sample/swarming.md"] and s.embedded_chunks == 0 and s.computed == 0
    assert "load-model" not in s.stage_seconds and "load" in s.stage_seconds
    assert s.carried_chunks == s.chunks


def test_failed_parse_keeps_previous_version_until_fixed(light_workspace: Path, prefect_harness) -> None:
    refresh()
    v1_chunks, _ = version_data("indexes", "sample", "v0001")
    good = (SRC / "hive-anatomy.md").read_bytes()
    (SRC / "hive-anatomy.md").write_bytes(b"# Hive\n\x00\x01binary garbage\x00")
    s = refresh()
    uri = "data/sample/hive-anatomy.md"
    assert s.version == "v0002" and s.changed == [uri] and s.kept_previous == [uri]
    [rec] = s.quarantine
    assert rec.path == uri and rec.error_type == "BinaryContent" and "previous version from v0001 kept" in rec.message
    chunks, _ = version_data("indexes", "sample", "v0002")

    def of(t, u):
        return [c for c, x in zip(t.column("chunk_id").to_pylist(), t.column("uri").to_pylist()) if x == u]

    assert of(chunks, uri) == of(v1_chunks, uri) != []
    # the broken bytes are not retried while unchanged, and the old version stays
    p = params_here()
    plan = plan_refresh(p, IndexRegistry(p.index.root))
    assert plan.nothing_to_do and plan.diff.still_quarantined == (uri,)
    (SRC / "hive-anatomy.md").write_bytes(good + b"\n\nFixed and extended.\n")
    s = refresh()
    assert s.version == "v0003" and s.changed == [uri] and s.kept_previous == [] and s.quarantine == []


@pytest.mark.parametrize(
    ("section", "change", "flag"),
    [("chunk", {"max_tokens": 60}, "rechunk_all"), ("embed", {"model": "hashing:32"}, "reembed_all"),
     ("index", {"factory": "HNSW16"}, "reindex"), ("load", {"html_drop": ["nav", "aside"]}, "reload_all")],
)
def test_settings_change_redoes_what_it_affects(light_workspace: Path, prefect_harness, section, change, flag) -> None:
    first = refresh()
    first_dim = make_embedder(params_here().embed.model).dim
    write_params(light_workspace, **{section: change})
    p = params_here()
    plan = plan_refresh(p, IndexRegistry(p.index.root))
    assert getattr(plan, flag) and plan.diff.empty and not plan.nothing_to_do and len(plan.reasons) == 1
    s = refresh()
    assert s.version == "v0002" and s.reasons == list(plan.reasons)
    chunks, vecs = version_data("indexes", "sample", "v0002")
    if flag == "reindex":  # vectors carried, only the FAISS index is rebuilt
        assert s.embedded_chunks == 0 and s.carried_chunks == s.chunks == first.chunks
        assert IndexRegistry("indexes").manifest("sample", "v0002").index["factory"] == "HNSW16"
    else:
        assert s.carried_chunks == 0 and s.embedded_chunks == s.chunks
    full_chunks, full_vecs = full_build(f"full-{flag}")
    assert chunks.column("chunk_id").to_pylist() == full_chunks.column("chunk_id").to_pylist()
    np.testing.assert_allclose(vecs, full_vecs, atol=1e-6)
    assert vecs.shape[1] == make_embedder(params_here().embed.model).dim == (32 if flag == "reembed_all" else first_dim)


def test_refresh_promotes_through_the_gate(light_workspace: Path, prefect_harness) -> None:
    from tests.conftest import SAMPLE_QUESTIONS

    qs = light_workspace / "q.jsonl"
    qs.write_text(SAMPLE_QUESTIONS.read_text())
    write_params(light_workspace, refresh={"promote_aliases": ["prod"]},
                 promote={"gate": "doc_recall", "questions": "q.jsonl", "min_doc_recall": 1.0},
                 retrieval={"k": 1000, "candidates": 1000})
    # k above the chunk count retrieves every document, so exactly the questions whose document
    # is in this workspace (no PDF/DOCX/PPTX) hit
    import json

    docs = [json.loads(line)["doc"] for line in qs.read_text().splitlines() if line.strip()]
    expected = sum((SRC / d).exists() for d in docs) / len(docs)
    assert 0 < expected < 1
    s = refresh()
    assert s.version == "v0001"
    assert s.promotions == [{"alias": "prod", "moved": False, "reason": s.promotions[0]["reason"]}]
    assert f"doc_recall@1000 = {expected:.3f} < promote.min_doc_recall = 1" in s.promotions[0]["reason"]
    write_params(light_workspace, promote={"min_doc_recall": expected})
    (SRC / "drones.md").write_text("# Drones\n\nDrones are male bees.\n")
    s = refresh()
    assert s.promotions[0]["moved"] and s.promotions[0]["to"] == "v0002"
    assert IndexRegistry("indexes").aliases("sample") == {"latest": "v0002", "prod": "v0002"}
