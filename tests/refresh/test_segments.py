"""Segments and tombstones (issue 12): a refresh writes one segment and shares the rest; search
over segments scores exactly as a single-segment build of the same rows (BM25 with corpus-wide
statistics, dense merged exactly); compaction equals a fresh build; gc keeps shared segments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from ragline.indexers.manifest import CorruptRegistryError
from ragline.indexers.registry import IndexRegistry
from ragline.indexers.retrieval import RetrievalConfig
from ragline.indexers.retriever import PublishedIndex, Retriever
from ragline.pipelines.publish import compact_index
from ragline.pipelines.refresh import compaction_due
from tests.conftest import write_params
from tests.publishing import segment_path
from tests.refresh.conftest import cli, cli_json, params_here

SRC = Path("data/sample")
QUERIES = ("queen cells in spring", "smoke and veil", "winter cluster honey stores", "drones mate in flight",
           "varroa mites", "swarm")


def refresh():
    from ragline.pipelines.flows import refresh_flow

    return refresh_flow(params=params_here().to_dict())


def full_build(name: str) -> str:
    from ragline.pipelines.flows import ingest_flow

    data = params_here().to_dict()
    data["index"]["name"] = name
    return ingest_flow([], data).version


def by_chunk(r: Retriever, rows: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    ids = r.chunks.column("chunk_id").to_pylist()
    return {ids[int(i)]: float(s) for i, s in zip(rows, scores)}


def bm25_by_chunk(r: Retriever, query: str) -> dict[str, float]:
    s = r.bm25.scores(query)
    return by_chunk(r, np.arange(len(s)), s)


def change_files() -> None:
    (SRC / "swarming.md").write_text((SRC / "swarming.md").read_text() + "\n\nA late swarm in September rarely survives winter.\n")
    (SRC / "wintering.html").unlink()
    (SRC / "drones.md").write_text("# Drones\n\nDrones are male honey bees that mate with queens in flight.\n")


@pytest.fixture(autouse=True)
def no_curation(light_workspace: Path) -> None:
    """Most tests here build without curation; the curated case has its own tests below."""
    write_params(light_workspace, curate={"enabled": False})


def test_with_curation_a_refresh_shares_the_parents_segment_and_scores_as_a_fresh_build(
        light_workspace: Path, prefect_harness) -> None:
    """A curated refresh decides clusters over the whole version, then writes only the documents
    that changed (or whose indexed rows changed) into a new segment and shares the parent's."""
    import shutil

    import pyarrow.parquet as pq

    write_params(light_workspace, curate={"enabled": True})
    shutil.copy(SRC / "swarming.md", SRC / "zz-swarming-copy.md")  # an exact copy, not indexed
    assert refresh().version == "v0001"
    reg = IndexRegistry(params_here().index.root)
    (s1,) = reg.segments("sample", "v0001")
    change_files()
    s = refresh()
    a, b = reg.segments("sample", s.version)
    m = reg.manifest("sample", s.version)
    assert a == s1 and "compaction" not in m.stats  # shared, not rewritten
    # swarming changed (one sentence added: its copy stays a near-duplicate, not indexed, and stays
    # where it is), wintering removed, drones added
    dead = m.tombstones[s1.id]
    assert len(dead["doc_ids"]) == 2 and b.documents == 2
    new_docs = pq.read_table(reg.segment_dir("sample", b.id) / "documents.parquet").column("uri").to_pylist()
    assert sorted(Path(u).name for u in new_docs) == ["drones.md", "swarming.md"]
    assert s.computed < s.chunks  # only the new text is embedded
    assert (reg.version_dir("sample", s.version) / "duplicates.parquet").is_file()
    full_build("full")
    seg, one = Retriever.open(reg, f"sample@{s.version}"), Retriever.open(reg, "full@latest")
    assert sorted(seg.chunks.column("chunk_id").to_pylist()) == sorted(one.chunks.column("chunk_id").to_pylist())
    for q in QUERIES:
        x, y = bm25_by_chunk(seg, q), bm25_by_chunk(one, q)
        assert x.keys() == y.keys() and any(x.values())
        np.testing.assert_allclose([x[c] for c in sorted(x)], [y[c] for c in sorted(x)], rtol=1e-6)
        for mode in ("dense", "hybrid"):
            cfg = RetrievalConfig(mode=mode, k=5)
            assert [h.score for h in seg.search(q, cfg)] == pytest.approx([h.score for h in one.search(q, cfg)],
                                                                         rel=1e-5, abs=1e-6)
    # the MinHash signatures: the new segment holds only its documents' (the parent's file is
    # shared, its tombstoned rows masked out), and the version's equal a fresh build's
    added = pq.read_table(reg.segment_dir("sample", b.id) / "signatures.parquet")
    assert set(added.column("doc_id").to_pylist()) <= set(pq.read_table(
        reg.segment_dir("sample", b.id) / "documents.parquet").column("doc_id").to_pylist())
    assert 0 < added.num_rows < pq.read_metadata(reg.segment_dir("sample", s1.id) / "signatures.parquet").num_rows
    # ... without the values of the signatures whose texts the segment holds (made again from them)
    held = added.filter(pc.is_null(added.column("hashvalues")))
    assert set(held.column("level").to_pylist()) == {"document", "chunk"}
    assert pc.all(pc.greater(pc.list_value_length(held.column("bands")), 0)).as_py()
    assert not (reg.version_dir("sample", s.version) / "signatures.parquet").exists()
    assert _signatures(reg, "sample", s.version) == _signatures(reg, "full", "v0001")
    # compaction carries the curation: duplicates, counts and every live signature, into one segment
    out = cli_json("index", "compact")
    (merged,) = reg.segments("sample", out["version"])
    assert _signatures(reg, "sample", out["version"]) == _signatures(reg, "full", "v0001")
    assert "signatures.parquet" in merged.files
    assert reg.manifest("sample", out["version"]).stats["curation"] == m.stats["curation"]
    assert (reg.version_dir("sample", out["version"]) / "duplicates.parquet").read_bytes() == \
        (reg.version_dir("sample", s.version) / "duplicates.parquet").read_bytes()


def _signatures(reg: IndexRegistry, name: str, version: str) -> dict[tuple[str, str], tuple]:
    """(level, member id) -> (text sha256, signature) of a version, as a refresh of it reads them."""
    from ragline.pipelines.curate import read_parent_curation

    state = read_parent_curation(reg, name, version)
    t = state.signatures
    out = {}
    for lv in ("document", "chunk"):  # (a signature a segment left out is made again from its text)
        got = state.signatures_of(lv, t.filter(pc.equal(t.column("level"), lv)).column("member_id").to_pylist())
        out.update({(lv, mid): (sha, tuple(v.tolist())) for mid, (sha, v) in got.items()})
    assert len(out) == t.num_rows  # no member twice
    return out


def _clusters(reg: IndexRegistry, name: str, version: str) -> set[tuple]:
    import pyarrow.parquet as pq

    t = pq.read_table(reg.version_dir(name, version) / "duplicates.parquet")
    return set(zip(*(t.column(c).to_pylist() for c in ("level", "member_id", "doc_id", "uri", "canonical",
                                                          "canonical_id", "similarity", "method"))))


def _same_rows_and_scores(a: Retriever, b: Retriever) -> None:
    """Two versions index the same chunks and score every query alike (dense and hybrid)."""
    assert sorted(a.chunks.column("chunk_id").to_pylist()) == sorted(b.chunks.column("chunk_id").to_pylist())
    for q in QUERIES:
        for mode in ("dense", "hybrid"):
            cfg = RetrievalConfig(mode=mode, k=5)
            assert [h.score for h in a.search(q, cfg)] == pytest.approx([h.score for h in b.search(q, cfg)],
                                                                       rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("curate", [{}, {"near_duplicates": False, "duplicates": "keep_all"}])
def test_with_curation_a_refresh_clusters_only_its_change_as_a_fresh_build_would(
        light_workspace: Path, prefect_harness, monkeypatch: pytest.MonkeyPatch, curate: dict) -> None:
    """When no copy loses its canonical copy, a curated refresh clusters only its new documents
    and chunks against the version's (one pass over the parent's signature files, never the
    whole version): the clusters, signatures, indexed rows and scores equal a fresh build's."""
    import shutil

    from ragline.pipelines import curate as c

    write_params(light_workspace, curate={"enabled": True, **curate})
    shutil.copy(SRC / "swarming.md", SRC / "zz-swarming-copy.md")  # a cluster the change leaves alone
    assert refresh().version == "v0001"
    reg = IndexRegistry(params_here().index.root)
    (s1,) = reg.segments("sample", "v0001")
    shutil.copy(SRC / "hive-anatomy.md", SRC / "zz-hive-anatomy-copy.md")  # an exact copy of a carried document
    text = (SRC / "protective-equipment.txt").read_text()
    assert text.count("single most important") == 1
    (SRC / "zz-protective-near.txt").write_text(text.replace("single most important", "single most vital"))
    (SRC / "seasonal-calendar.txt").write_text((SRC / "seasonal-calendar.txt").read_text() + "\n\nOrder foundation in winter.\n")
    (SRC / "wintering.html").unlink()
    (SRC / "drones.md").write_text("# Drones\n\nDrones are male honey bees that mate with queens in flight.\n")
    shutil.copy(SRC / "drones.md", SRC / "zz-drones-copy.md")  # a copy of another new document
    whole = c._curate_chunks
    monkeypatch.setattr(c, "_curate_chunks", lambda *a, **k: pytest.fail("the whole version was clustered"))
    s = refresh()
    monkeypatch.setattr(c, "_curate_chunks", whole)
    a, b = reg.segments("sample", s.version)
    m = reg.manifest("sample", s.version)
    assert a == s1 and "compaction" not in m.stats and s.computed <= s.chunks
    v1 = reg.live_table("sample", "v0001", "documents", columns=["uri", "doc_id"])
    assert b.documents == 5 and sorted(m.tombstones[s1.id]["doc_ids"]) == sorted(
        d for u, d in zip(*(v1.column(c).to_pylist() for c in ("uri", "doc_id")))
        if u.endswith(("wintering.html", "seasonal-calendar.txt")))
    full_build("full")
    got, want = _clusters(reg, "sample", s.version), _clusters(reg, "full", "v0001")
    assert got == want
    aliases = {(Path(u).name, meth) for lv, _mid, _d, u, canonical, _cid, _s, meth in got
               if lv == "document" and not canonical}
    assert aliases == {("zz-swarming-copy.md", "exact"), ("zz-hive-anatomy-copy.md", "exact"),
                       ("zz-drones-copy.md", "exact")} | ({("zz-protective-near.txt", "near")} if not curate else set())
    assert _signatures(reg, "sample", s.version) == _signatures(reg, "full", "v0001")
    full_m = reg.manifest("full", "v0001")
    for key in ("documents", "chunks", "removed_documents"):
        assert m.stats["curation"][key] == full_m.stats["curation"][key], key
    _same_rows_and_scores(Retriever.open(reg, f"sample@{s.version}"), Retriever.open(reg, "full@latest"))
    # a copy of a document the next change removes: that refresh clusters the whole version again.
    # The signatures the segments left out are made again from their texts only where they share
    # an LSH bucket with another member (here: the carried documents a new near copy resembles)
    called, lazy = [], []
    monkeypatch.setattr(c, "_curate_chunks", lambda *a, **k: called.append(1) or whole(*a, **k))
    cluster = c.find_duplicates

    def spy(members, cfg, level, stored=None, **k):  # noqa: ANN001, ANN202
        lazy.append((int(stored.lazy.sum()) if isinstance(stored, c.Signatures) and stored.lazy is not None else 0,
                     (out := cluster(members, cfg, level, stored, **k)).remade))
        return out
    monkeypatch.setattr(c, "find_duplicates", spy)
    (SRC / "hive-anatomy.md").unlink()
    swarm = (SRC / "swarming.md").read_text()
    (SRC / "zz-swarming-near.md").write_text(swarm + "\n\nA late swarm is rarely worth keeping.\n")
    s = refresh()
    assert s.version is not None and called
    fv = full_build("full")
    got, want = _clusters(reg, "sample", s.version), _clusters(reg, "full", fv)
    assert got == want
    if not curate:
        assert ("document", "near") in {(lv, meth) for lv, *_, meth in got}
        (docs, docs_made), (chunks, chunks_made) = lazy[:2]  # (the refresh; then the fresh build)
        assert 0 < docs_made < docs and chunks_made < chunks  # (the near copy's chunks are not clustered)
    assert _signatures(reg, "sample", s.version) == _signatures(reg, "full", fv)


def test_with_curation_a_promoted_copy_moves_to_the_new_segment(light_workspace: Path, prefect_harness) -> None:
    """Deleting the canonical copy promotes a carried copy: that document moves, whole, into the
    new segment (re-chunked from its stored text); every other document stays shared."""
    import shutil

    import pyarrow.parquet as pq

    write_params(light_workspace, curate={"enabled": True})
    shutil.copy(SRC / "swarming.md", SRC / "zz-swarming-copy.md")
    assert refresh().version == "v0001"
    reg = IndexRegistry(params_here().index.root)
    (s1,) = reg.segments("sample", "v0001")
    n1 = PublishedIndex.open(reg, "sample@v0001").chunks.num_rows
    (SRC / "swarming.md").unlink()
    s = refresh()
    a, b = reg.segments("sample", s.version)
    assert a == s1 and len(reg.manifest("sample", s.version).tombstones[s1.id]["doc_ids"]) == 2
    moved = pq.read_table(reg.segment_dir("sample", b.id) / "documents.parquet").column("uri").to_pylist()
    assert [Path(u).name for u in moved] == ["zz-swarming-copy.md"]
    chunks = PublishedIndex.open(reg, f"sample@{s.version}").chunks
    assert chunks.num_rows == n1 == s.chunks  # the same passages, now indexed from the copy
    assert sum(u.endswith("zz-swarming-copy.md") for u in chunks.column("uri").to_pylist()) == b.chunks > 0


@pytest.fixture()
def segmented(light_workspace: Path, prefect_harness) -> IndexRegistry:
    """v0001 a full build; v0002 a refresh (1 added, 1 changed, 1 removed): two segments, tombstones."""
    assert refresh().version == "v0001"
    change_files()
    s = refresh()
    assert s.version == "v0002"
    return IndexRegistry(params_here().index.root)


def test_refresh_writes_one_segment_and_shares_the_parents(segmented: IndexRegistry) -> None:
    reg = segmented
    (s1,), (a, b) = reg.segments("sample", "v0001"), reg.segments("sample", "v0002")
    assert a == s1  # shared, not copied: the same id, files and hashes
    m2 = reg.manifest("sample", "v0002")
    dead = m2.tombstones[s1.id]
    assert len(dead["doc_ids"]) == 2 and dead["chunks"] > 0  # swarming (changed) and wintering (removed)
    assert b.documents == 2  # drones (added) and swarming (changed)
    assert m2.counts["chunks"] == a.chunks - dead["chunks"] + b.chunks == PublishedIndex.open(reg, "sample").chunks.num_rows
    assert sorted(p.name for p in reg.segments_dir("sample").iterdir()) == sorted([a.id, b.id])
    info = cli_json("index", "show")
    assert [(x["id"], x["deleted_chunks"]) for x in info["segments"]] == [(a.id, dead["chunks"]), (b.id, 0)]


def test_scores_over_segments_equal_a_single_segment_build(segmented: IndexRegistry) -> None:
    """BM25 uses document frequencies and the average length over live rows: the two-segment
    version with tombstones scores every chunk exactly as a full build of the same files."""
    full_build("full")
    seg = Retriever.open(segmented, "sample@v0002")
    one = Retriever.open(segmented, "full@latest")
    assert len(segmented.segments("full", "v0001")) == 1
    assert sorted(seg.chunks.column("chunk_id").to_pylist()) == sorted(one.chunks.column("chunk_id").to_pylist())
    n = seg.n_chunks
    for q in QUERIES:
        a, b = bm25_by_chunk(seg, q), bm25_by_chunk(one, q)
        assert a.keys() == b.keys() and any(a.values())
        np.testing.assert_allclose([a[c] for c in sorted(a)], [b[c] for c in sorted(a)], rtol=1e-6)
        da, db = by_chunk(seg, *seg.dense(q, n)), by_chunk(one, *one.dense(q, n))
        assert da.keys() == db.keys()
        np.testing.assert_allclose([da[c] for c in sorted(da)], [db[c] for c in sorted(da)], rtol=1e-5, atol=1e-6)
        for mode in ("dense", "bm25", "hybrid"):
            cfg = RetrievalConfig(mode=mode, k=5)
            ha, hb = seg.search(q, cfg), one.search(q, cfg)
            assert [h.score for h in ha] == pytest.approx([h.score for h in hb], rel=1e-5, abs=1e-6)
            assert {h.chunk_id for h in ha if h.score > ha[-1].score} <= {h.chunk_id for h in hb}


def test_compaction_equals_a_fresh_build(segmented: IndexRegistry) -> None:
    reg = segmented
    reg.set_alias("sample", "prod", "v0002")
    out = cli_json("index", "compact", "sample@prod")
    assert out["compacted"] == "v0002" and out["version"] == "v0003" and out["segments_before"] == 2
    assert out["segments"] == 1 and out["aliases"] == ["latest", "prod"]
    full_build("full")
    a, b = PublishedIndex.open(reg, "sample@v0003"), PublishedIndex.open(reg, "full@latest")
    assert a.manifest.tombstones == {} and a.manifest.parent_version == "v0002"
    assert a.chunks.column("chunk_id").to_pylist() == b.chunks.column("chunk_id").to_pylist()
    np.testing.assert_array_equal(a.vectors(), b.vectors())
    assert a.manifest.inputs == b.manifest.inputs and a.manifest.counts == b.manifest.counts
    for q in QUERIES:
        np.testing.assert_array_equal(a.bm25.scores(q), b.bm25.scores(q))
    # compaction's segment is the fresh build's segment, byte for byte: content addressing stores it once per index
    assert [s.files for s in reg.segments("sample", "v0003")] == [s.files for s in reg.segments("full", "v0001")]


def test_gc_deletes_a_segment_only_when_no_kept_version_lists_it(segmented: IndexRegistry) -> None:
    reg = segmented
    shared, new = reg.segments("sample", "v0002")
    compact_index(reg, params_here(), "sample")  # v0003; latest moves, v0002 becomes its rollback target
    report = reg.gc("sample", keep=0)
    assert report.deleted == ["v0001"] and report.segments_deleted == []  # v0001's segment is v0002's too
    assert reg.verify("sample", "v0002") == [] and reg.segment_dir("sample", shared.id).is_dir()
    compact_index(reg, params_here(), "sample")  # v0004: the same rows, so the same segment as v0003
    assert reg.segments("sample", "v0004") == reg.segments("sample", "v0003")
    report = reg.gc("sample", keep=0)
    assert report.deleted == ["v0002"] and sorted(report.segments_deleted) == sorted([shared.id, new.id])
    assert report.segments_kept == 1 and not reg.segment_dir("sample", shared.id).exists()
    assert [d.name for d in reg.segments_dir("sample").iterdir()] == [s.id for s in reg.segments("sample", "v0004")]
    assert cli_json("query", "queen", "-k", "1")[0]["source"]


def test_damaged_segment_refuses_serving_and_compaction_naming_it(segmented: IndexRegistry) -> None:
    path = segment_path("v0002", "bm25.npz", index=0)  # the segment shared with v0001
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    for ref in ("sample@v0001", "sample@v0002"):
        with pytest.raises(CorruptRegistryError, match=f"segments/{path.parent.name}/bm25.npz: sha256 differs"):
            PublishedIndex.open(segmented, ref)
    code, _, stderr = cli("index", "compact")
    msg = " ".join(stderr.split())
    assert code == 1 and f"segments/{path.parent.name}/bm25.npz: sha256 differs from the manifest" in msg
    assert "sample@v0002 is damaged" in msg and segmented.versions("sample") == ["v0001", "v0002"]


@pytest.mark.parametrize("curate", [False, True], ids=["plain", "curated"])
def test_refresh_compacts_past_the_policy(light_workspace: Path, prefect_harness, curate: bool) -> None:
    write_params(light_workspace, index={"compact_max_segments": 2}, curate={"enabled": curate})
    refresh()
    for i, doc in enumerate(sorted(p for p in SRC.iterdir() if p.suffix in (".md", ".txt"))[:2]):
        doc.write_text(doc.read_text() + f"\n\nNote {i} on swarms.\n")  # another document each time
        s = refresh()
        reg = IndexRegistry(params_here().index.root)
        m = reg.manifest("sample", s.version)
        if i == 0:
            assert len(m.segments) == 2 and "compaction" not in m.stats
        else:  # a third segment would pass compact_max_segments 2: everything merged, nothing re-embedded
            assert len(m.segments) == 1 and m.tombstones == {} and "segments > index.compact_max_segments" in m.stats["compaction"]
            assert 0 < s.computed <= s.embedded_chunks and s.carried_chunks == s.chunks - s.embedded_chunks
            one = PublishedIndex.open(reg, f"sample@{s.version}")
            full_build("full")
            fresh = PublishedIndex.open(reg, "full@latest")
            assert one.chunks.column("chunk_id").to_pylist() == fresh.chunks.column("chunk_id").to_pylist()
            np.testing.assert_allclose(one.vectors(), fresh.vectors(), rtol=1e-5, atol=1e-6)


def test_compaction_policy() -> None:
    assert compaction_due(3, 0.0, 4, 0.3) is None
    assert "5 segments > index.compact_max_segments 4" == compaction_due(5, 0.0, 4, 0.3)
    assert "40.0% of rows tombstoned" in compaction_due(2, 0.4, 4, 0.3)


def test_an_ivf_refresh_segment_reuses_the_parents_training_and_nprobe_reaches_every_segment(
        light_workspace: Path, prefect_harness) -> None:
    import faiss

    from ragline.indexers.faiss_index import FaissSpec, factory_of, read_faiss_index

    write_params(Path.cwd(), index={"factory": "IVF4,Flat"})
    assert refresh().version == "v0001"
    change_files()
    assert refresh().version == "v0002"
    reg = IndexRegistry(params_here().index.root)
    a, b = (read_faiss_index(reg.segment_dir("sample", s.id) / "index.faiss") for s in reg.segments("sample", "v0002"))
    assert factory_of(a) == factory_of(b) == "IVF4,Flat" and 0 < b.ntotal < a.ntotal
    # the refresh's segment is not trained on its few rows: it holds the parent segment's centroids
    centroids = [faiss.downcast_index(x).quantizer.reconstruct_n(0, 4) for x in (a, b)]
    np.testing.assert_array_equal(centroids[0], centroids[1])
    assert reg.manifest("sample", "v0002").index["factory"] == "IVF4,Flat"
    # nprobe reaches each segment's search: every list visited gives exactly what Flat over the same rows gives
    r = Retriever.open(reg, "sample")
    flat = Retriever.in_memory(r.chunks, r.published.vectors(), r.embedder, FaissSpec(factory="Flat"))
    for q in QUERIES:
        got = r.search(q, RetrievalConfig(mode="dense", k=8, nprobe=4))
        want = flat.search(q, RetrievalConfig(mode="dense", k=8))
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=1e-5)  # ties may swap rows
        exact = {h.chunk_id: h.score for h in flat.search(q, RetrievalConfig(mode="dense", k=r.n_chunks))}
        np.testing.assert_allclose([exact[h.chunk_id] for h in got], [h.score for h in got], rtol=1e-5)


def test_rows_over_segments_are_read_lazily_and_leave_tombstoned_rows_out(segmented: IndexRegistry) -> None:
    from ragline.indexers.segments import SegmentRows

    reg = segmented
    pub = PublishedIndex.open(reg, "sample@v0002")
    assert isinstance(pub.rows, SegmentRows) and pub._table is None  # nothing read whole at open
    hits = Retriever.from_published(pub, Retriever.open(reg, "sample@v0002").embedder).search(
        "queen cells in spring", RetrievalConfig(mode="hybrid", k=5))
    assert len(hits) == 5 and pub._table is None  # hits come from the segments' row files
    table = pub.chunks
    n = table.num_rows
    pick = [n - 1, 0, 3, n // 2, 0]
    got = pub.rows.take(pick, ("chunk_id", "text", "row"))
    assert got["row"] == pick
    assert got["chunk_id"] == [table.column("chunk_id")[i].as_py() for i in pick]
    assert got["text"] == [table.column("text")[i].as_py() for i in pick]
    assert [h.text for h in hits] == [table.column("text")[h.row].as_py() for h in hits]
    assert pub.rows.column("uri").to_pylist() == table.column("uri").to_pylist()
    dead = {d for t in reg.manifest("sample", "v0002").tombstones.values() for d in t["doc_ids"]}
    import pyarrow.parquet as pq

    newest = pq.read_table(segment_path("v0002", "chunks.parquet"), columns=["doc_id"]).column("doc_id").to_pylist()
    # a tombstoned document's rows come only from the newest segment (changed) or not at all (removed)
    assert dead and sum(d in dead for d in table.column("doc_id").to_pylist()) == sum(d in dead for d in newest)
    assert n == reg.manifest("sample", "v0002").counts["chunks"]
    with pytest.raises(IndexError):
        pub.rows.take([n], ("chunk_id",))


def test_manifests_list_no_inputs_their_segments_do(segmented: IndexRegistry) -> None:
    """A version's manifest grows with its segments and tombstones, not with the corpus: each
    segment records its documents' inputs, and a version's inputs are its segments' live ones."""
    import json

    reg = segmented
    on_disk = json.loads((reg.version_dir("sample", "v0002") / "manifest.json").read_text())
    assert on_disk["inputs"] == [] and on_disk["inputs_in_segments"] is True
    m1, m2 = reg.manifest("sample", "v0001"), reg.manifest("sample", "v0002")
    assert [r["uri"] for r in m2.inputs] == sorted(str(p) for p in SRC.iterdir())
    assert len(m2.inputs) == m2.counts["documents"] and "data/sample/wintering.html" not in {r["uri"] for r in m2.inputs}
    assert {r["uri"]: r["sha256"] for r in m1.inputs}["data/sample/swarming.md"] != \
        {r["uri"]: r["sha256"] for r in m2.inputs}["data/sample/swarming.md"]  # the changed file: its new record only
    diff = cli_json("index", "diff", "v0001", "v0002")
    assert diff["added"] == ["data/sample/drones.md"] and diff["removed"] == ["data/sample/wintering.html"]
    segment_path("v0002", "inputs.json").write_text("not json")
    with pytest.raises(CorruptRegistryError, match="inputs.json"):
        PublishedIndex.open(reg, "sample@v0002")


def test_an_ingest_flushes_segments_that_score_as_one_segment_and_refresh_on(light_workspace: Path,
                                                                               prefect_harness) -> None:
    """``index.segment_chunks``: the ingest writes a segment per that many chunk rows while it
    streams (bounded memory); the version scores every chunk as a one-segment build does, a
    refresh shares its segments, and compaction gives the one-segment build's segment."""
    write_params(light_workspace, index={"segment_chunks": None})
    full_build("one")
    write_params(light_workspace, index={"segment_chunks": 8})
    v = full_build("sample")
    reg = IndexRegistry(params_here().index.root)
    segs = reg.segments("sample", v)
    (whole,) = reg.segments("one", "v0001")
    assert len(segs) >= 3 and all(s.chunks >= 8 for s in segs[:-1]) and sum(s.chunks for s in segs) == whole.chunks
    assert sum(s.documents for s in segs) == whole.documents
    assert reg.manifest("sample", v).counts == {**reg.manifest("one", "v0001").counts, "segments": len(segs)}
    assert reg.manifest("sample", v).inputs == reg.manifest("one", "v0001").inputs
    assert not list(reg.segments_dir("sample").glob(".hold-*"))  # released once the version listed them
    seg, one = Retriever.open(reg, "sample"), Retriever.open(reg, "one")
    assert seg.chunks.column("chunk_id").to_pylist() == one.chunks.column("chunk_id").to_pylist()
    for q in QUERIES:
        np.testing.assert_allclose(seg.bm25.scores(q), one.bm25.scores(q), rtol=1e-6)
        for mode in ("dense", "bm25", "hybrid"):
            cfg = RetrievalConfig(mode=mode, k=5)
            ha, hb = seg.search(q, cfg), one.search(q, cfg)
            assert [h.score for h in ha] == pytest.approx([h.score for h in hb], rel=1e-5, abs=1e-6)
            assert {h.chunk_id for h in ha if h.score > ha[-1].score} <= {h.chunk_id for h in hb}  # ties may swap
    # the same files give the same segments (content-addressed): a rebuild stores nothing new
    assert [s.id for s in reg.segments("sample", full_build("sample"))] == [s.id for s in segs]
    out = cli_json("index", "compact", "sample")
    assert out["segments_before"] == len(segs) and [x.files for x in reg.segments("sample", out["version"])] == \
        [whole.files]  # byte for byte the one-segment build
    cli("index", "promote", v, "--alias", "latest")
    change_files()
    s = refresh()
    after = reg.segments("sample", s.version)
    assert after[:-1] == [x for x in segs if x.id in {a.id for a in after}] and len(after) >= 3  # shared, not rewritten
    assert after[-1].id not in {x.id for x in segs}  # the refresh's one new segment
    out = cli_json("index", "compact", "sample")
    assert out["segments"] == 1
    assert reg.segments("one", "v0001")[0].chunks != reg.segments("sample", out["version"])[0].chunks  # changed
    kept = reg.gc("sample", keep=0).kept
    assert sorted(p.name for p in reg.segments_dir("sample").iterdir()) == \
        sorted({x.id for v in kept for x in reg.segments("sample", v)})


def test_a_refresh_of_an_empty_index_streams_segments_as_an_ingest_does(light_workspace: Path,
                                                                         prefect_harness) -> None:
    """A refresh that finds no version builds through the ingest's stream (bounded memory): the
    same segments as an ingest of the same files, holds released, and a file that failed to load
    keeps the sha256 the scan saw, so the next refresh does not try it again."""
    from ragline.pipelines.refresh import plan_refresh

    write_params(light_workspace, index={"segment_chunks": 8})
    bad = "data/sample/hive-anatomy.md"
    Path(bad).write_bytes(b"# Hive\n\x00\x01binary garbage\x00")
    s = refresh()
    reg = IndexRegistry(params_here().index.root)
    segs = reg.segments("sample", s.version)
    assert len(segs) >= 3 and [x.id for x in segs] == [x.id for x in reg.segments("other", full_build("other"))]
    assert s.chunks == sum(x.chunks for x in segs) == s.embedded_chunks and s.added and not s.changed
    assert reg.manifest("sample", s.version).stats["refresh"] == s.counts()
    assert not list(reg.segments_dir("sample").glob(".hold-*"))
    [rec] = s.quarantine
    assert rec.path == bad and rec.error_type == "BinaryContent" and rec.sha256
    p = params_here()
    plan = plan_refresh(p, IndexRegistry(p.index.root))
    assert plan.nothing_to_do and plan.diff.still_quarantined == (bad,)


def test_gc_keeps_the_segments_a_running_ingest_holds(light_workspace: Path, prefect_harness) -> None:
    import json
    import subprocess
    import sys

    from ragline.core.schemas import CHUNKS_SCHEMA, DOCUMENTS_SCHEMA
    from ragline.pipelines.publish import write_segment
    from tests.publishing import publish_texts
    from tests.refresh.conftest import A, B

    p = params_here()
    publish_texts(p, {"a.md": A, "b.md": B})
    reg = IndexRegistry(p.index.root)
    listed = set(s.id for s in reg.segments("sample", "v0001"))
    pub = PublishedIndex.open(reg, "sample")
    docs = reg.live_table("sample", "v0001", "documents").cast(DOCUMENTS_SCHEMA)
    hold = reg.hold_segments("sample")
    seg, _, _ = write_segment(reg, p.model_copy(update={"index": p.index.model_copy(update={"factory": "HNSW8"})}),
                              docs, pub.chunks.cast(CHUNKS_SCHEMA), pub.vectors(), hold=hold)
    assert seg.id not in listed
    assert reg.gc("sample", keep=0).segments_deleted == [] and reg.segment_dir("sample", seg.id).is_dir()
    hold.release()
    assert reg.gc("sample", keep=0).segments_deleted == [seg.id]
    # a hold of a process that died is a leftover: gc removes it, then the segment is garbage
    seg2, _, _ = write_segment(reg, p.model_copy(update={"index": p.index.model_copy(update={"factory": "HNSW8"})}),
                               docs, pub.chunks.cast(CHUNKS_SCHEMA), pub.vectors())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = reg.segments_dir("sample") / f".hold-{int(dead.stdout)}-1"
    stale.write_text(json.dumps([seg2.id]))
    pid = int(dead.stdout)
    torn = reg.segments_dir("sample") / f"..hold-{pid}-2.{pid}.tmp"  # a hold file's rewrite cut short by a crash
    torn.write_text("[")
    report = reg.gc("sample", keep=0)
    assert report.segments_deleted == [seg2.id] and stale.name in report.leftovers and not stale.exists()
    assert torn.name in report.leftovers and not torn.exists()


def test_with_curation_a_parent_without_segment_signatures_is_written_again_once(
        light_workspace: Path, prefect_harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A version whose segments hold no signatures (written before segments held them) is
    written again as one segment with every signature by its first refresh; the refreshes after
    share segments, a removal-only one writes none, and the signatures stay a fresh build's."""
    from ragline.pipelines.curate import Curation

    # (the sample corpus is small: one removal would pass the default tombstone policy)
    write_params(light_workspace, curate={"enabled": True}, index={"compact_max_tombstone_ratio": 0.9})
    with monkeypatch.context() as m:
        m.setattr(Curation, "segment_signatures", lambda self, documents, chunks, release=False: None)
        assert refresh().version == "v0001"
    reg = IndexRegistry(params_here().index.root)
    (s1,) = reg.segments("sample", "v0001")
    assert "signatures.parquet" not in s1.files
    change_files()
    s2 = refresh()
    (merged,) = reg.segments("sample", s2.version)
    assert "signatures move into the segments" in reg.manifest("sample", s2.version).stats["compaction"]
    assert "signatures.parquet" in merged.files
    full_build("full")
    assert _signatures(reg, "sample", s2.version) == _signatures(reg, "full", "v0001")
    (SRC / "hive-anatomy.md").write_text((SRC / "hive-anatomy.md").read_text() + "\n\nA late note on frames.\n")
    s3 = refresh()
    assert reg.segments("sample", s3.version)[0] == merged and len(reg.segments("sample", s3.version)) == 2
    (SRC / "seasonal-calendar.txt").unlink()  # removal only: a tombstone, no new segment
    s4 = refresh()
    assert reg.segments("sample", s4.version) == reg.segments("sample", s3.version), \
        reg.manifest("sample", s4.version).stats.get("compaction")
    full_build("full2")
    assert _signatures(reg, "sample", s4.version) == _signatures(reg, "full2", "v0001")


@pytest.mark.parametrize("curate", [{}, {"duplicates": "keep_all"}])
def test_a_curated_ingest_clusters_each_segment_it_flushes_as_a_whole_build_would(
        light_workspace: Path, prefect_harness, monkeypatch: pytest.MonkeyPatch, curate: dict) -> None:
    """With curation on, an ingest still writes a segment per ``index.segment_chunks`` rows: each
    part is clustered against the parts written before it (never the whole corpus at once), and
    the clusters, signatures, counts, indexed rows and scores equal those of a build that
    clusters every row together. Copies land in later parts than their originals, exact and near."""
    import shutil

    from ragline.pipelines import curate as c

    write_params(light_workspace, curate={"enabled": True, **curate}, index={"segment_chunks": None})
    shutil.copy(SRC / "hive-anatomy.md", SRC / "zz-hive-anatomy-copy.md")
    shutil.copy(SRC / "swarming.md", SRC / "zz-swarming-copy.md")
    text = (SRC / "protective-equipment.txt").read_text()
    (SRC / "zz-protective-near.txt").write_text(text.replace("single most important", "single most vital"))
    v_whole = full_build("whole")
    write_params(light_workspace, curate={"enabled": True, **curate}, index={"segment_chunks": 8})
    parts = []
    cluster = c.curate_change
    monkeypatch.setattr(c, "_curate_chunks", lambda *a, **k: pytest.fail("every row was clustered at once"))
    monkeypatch.setattr(c, "curate_change", lambda docs, chunks, *a, **k: parts.append(docs.num_rows)
                        or cluster(docs, chunks, *a, **k))
    v = full_build("sample")
    reg = IndexRegistry(params_here().index.root)
    segs = reg.segments("sample", v)
    assert len(segs) >= 3 and len(parts) == len(segs)  # each part clustered once, as it was written
    assert all((reg.segment_dir("sample", s.id) / c.SIGNATURES_FILE).exists() for s in segs)
    assert not list(reg.segments_dir("sample").glob(".hold-*"))
    got, want = _clusters(reg, "sample", v), _clusters(reg, "whole", v_whole)
    assert got == want
    assert {(Path(u).name, meth) for lv, _m, _d, u, canonical, _c, _s, meth in got if lv == "document" and not canonical} \
        == {("zz-hive-anatomy-copy.md", "exact"), ("zz-swarming-copy.md", "exact"), ("zz-protective-near.txt", "near")}
    assert _signatures(reg, "sample", v) == _signatures(reg, "whole", v_whole)
    m, mw = reg.manifest("sample", v), reg.manifest("whole", v_whole)
    assert {k: x for k, x in m.stats["curation"].items() if k != "seconds"} == \
        {k: x for k, x in mw.stats["curation"].items() if k != "seconds"}
    assert m.counts == {**mw.counts, "segments": len(segs)} and m.inputs == mw.inputs
    _same_rows_and_scores(Retriever.open(reg, "sample"), Retriever.open(reg, "whole"))
