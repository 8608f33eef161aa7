"""Bounded memory of a refresh (issue 12): the vectors of a rewritten segment are held once."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ragline.core.schemas import CHUNKS_SCHEMA, DOCUMENTS_SCHEMA, indexed_texts
from ragline.indexers.embedders import HashingEmbedder
from ragline.pipelines.refresh import Assembly, fill_vectors


def _chunks(n: int) -> pa.Table:
    rows = [{"row": i, "chunk_id": f"c{i}", "doc_id": f"d{i // 3}", "uri": f"/x/{i // 3}.txt", "char_start": 0,
             "char_end": 5, "token_count": 1, "page": None, "section_path": [], "oversized": False,
             "text": f"text number {i}", "context": ""} for i in range(n)]
    return pa.Table.from_pylist(rows, schema=CHUNKS_SCHEMA)


def test_fill_vectors_fills_the_carried_array_in_place() -> None:
    # regression: fill_vectors allocated a second (n, dim) array and copied the carried rows into it,
    # so a curated refresh (one segment rewritten from the parent's vectors) held them twice
    emb = HashingEmbedder(dim=16)
    chunks = _chunks(10)
    need = np.zeros(10, dtype=bool)
    need[[1, 4, 9]] = True
    carried = np.arange(160, dtype=np.float32).reshape(10, 16)
    carried[need] = 0
    before = carried.copy()
    assembly = Assembly(DOCUMENTS_SCHEMA.empty_table(), chunks, carried, need, [], [], 0)
    vectors, embedded, _ = fill_vectors(assembly, emb, None)
    assert vectors is carried and embedded == 3
    np.testing.assert_array_equal(vectors[~need], before[~need])
    np.testing.assert_allclose(vectors[need], emb.embed([indexed_texts(chunks)[i] for i in (1, 4, 9)]), rtol=1e-6)


def test_fill_vectors_new_dim_allocates() -> None:
    # every row re-embedded by a model of another dim: the carried array (parent dim) is not reused
    chunks = _chunks(4)
    assembly = Assembly(DOCUMENTS_SCHEMA.empty_table(), chunks, np.ones((4, 8), np.float32), np.ones(4, bool), [], [], 0)
    vectors, embedded, _ = fill_vectors(assembly, HashingEmbedder(dim=16), None)
    assert vectors.shape == (4, 16) and embedded == 4
    np.testing.assert_array_equal(assembly.carried_vectors, np.ones((4, 8), np.float32))


def test_parent_release_drops_what_was_read_and_reads_it_again(tmp_path) -> None:
    # the refresh flow releases the parent once the new rows are assembled: its tables, vectors and
    # opened index are then not held while the new segment is embedded and published
    from ragline.indexers.registry import IndexRegistry
    from ragline.pipelines.refresh import read_parent
    from tests.publishing import publish_paragraphs

    m = publish_paragraphs(tmp_path, "ix", {"a.txt": [("alpha beta", None), ("gamma", None)], "b.txt": [("delta", None)]})
    parent = read_parent(IndexRegistry(tmp_path), "ix", m.version)
    docs, chunks, vectors = parent.documents, parent.chunks, parent.vectors.copy()
    assert {"documents", "chunks", "_published", "vectors"} <= set(vars(parent))
    parent.release()
    assert not {"documents", "chunks", "_published", "vectors"} & set(vars(parent))
    assert parent.documents.equals(docs) and parent.chunks.equals(chunks)
    np.testing.assert_array_equal(parent.vectors, vectors)


def test_curated_refresh_assembles_without_holding_the_parent(light_workspace, prefect_harness) -> None:
    # a curated refresh assembles the whole version to decide clusters, but without the parent's
    # vectors (issue 12: the curated refresh peaked above the ingest that built its parent); after
    # curation only the changed document goes into a new segment, the parent's is shared, and
    # the parent's vectors were never read
    from pathlib import Path

    from ragline.indexers.registry import IndexRegistry
    from ragline.pipelines.curate import curate_refresh, read_parent_curation
    from ragline.pipelines.flows import ingest_flow
    from ragline.pipelines.load import load_documents
    from ragline.pipelines.refresh import assemble, plan_refresh, read_parent, split_curated
    from tests.refresh.conftest import params_here

    p = params_here()
    assert p.curate.enabled
    ingest_flow([], p.to_dict())
    doc = sorted(Path("data/sample").glob("*.md"))[0]
    doc.write_text(doc.read_text(encoding="utf-8") + "\n\nA new closing paragraph about smokers.\n", encoding="utf-8")
    reg = IndexRegistry(p.index.root)
    plan = plan_refresh(p, reg)
    parent = read_parent(reg, p.index.name, plan.parent_version)
    docs, bad = load_documents(plan.to_load(), p.load)
    assembly = assemble(plan, parent, docs, bad, p)
    assert assembly.deferred and assembly.shared is None and assembly.compaction is None
    assert assembly.carried_vectors is None and (~assembly.need_embed).sum() > 0
    out, cur = curate_refresh(assembly, parent, p, state=read_parent_curation(reg, p.index.name, parent.version))
    inc = split_curated(out, parent, p)
    assert not inc.deferred and inc.compaction is None and inc.carried_vectors.shape[0] == inc.chunks.num_rows
    assert inc.documents.column("uri").to_pylist() == [str(doc)] and inc.need_embed.all()
    assert set(inc.chunks.column("doc_id").to_pylist()) == set(inc.documents.column("doc_id").to_pylist())
    (seg,) = reg.segments(p.index.name, plan.parent_version)
    assert inc.shared.segments == [seg] and len(inc.shared.tombstones[seg.id]["doc_ids"]) == 1
    assert out.kept is not None and out.chunks.num_rows == assembly.chunks.num_rows  # marked, not copied
    assert inc.version_chunks == int(out.kept.sum()) and inc.version_documents == out.documents.num_rows
    assert "vectors" not in vars(parent)  # never read: the shared rows keep theirs in the parent's segment
