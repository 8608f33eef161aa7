"""chunk.context: the embedded text gets "Title > Section" in front; stored text and offsets do not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from ragline.chunkers.base import ElementSpan
from ragline.indexers.embedders import HashingEmbedder, make_embedder
from ragline.indexers.registry import IndexRegistry
from ragline.indexers.retriever import PublishedIndex
from ragline.core.schemas import CHUNKS_SCHEMA, DOCUMENTS_SCHEMA, read_table
from ragline.pipelines.chunk import chunk_documents
from ragline.pipelines.cli import app
from ragline.pipelines.config import ChunkConfig
from ragline.core.schemas import indexed_texts
from ragline.pipelines.embed import embed_chunks, vectors_from_table
from ragline.pipelines.load import Document, documents_from_table
from tests.conftest import write_params

TEXT = "Bees\n\nWorkers forage for nectar and pollen.\n\nDrones\n\nDrones mate with queens and then die."


def _doc() -> Document:
    els = (
        ElementSpan("Title", 0, 4, 1, ("Bees",)),
        ElementSpan("NarrativeText", 6, 42, 1, ("Bees",)),
        ElementSpan("Title", 44, 50, 2, ("Bees", "Drones")),
        ElementSpan("NarrativeText", 52, len(TEXT), 2, ("Bees", "Drones")),
    )
    return Document("d" * 32, "bees.md", "0" * 64, "text/markdown", len(TEXT), "Bees", TEXT, els)


def test_context_prefixes_title_and_section_but_keeps_text_and_offsets(tmp_path: Path) -> None:
    doc = _doc()
    plain, _ = chunk_documents([doc], ChunkConfig(strategy="structure", max_tokens=12, min_tokens=0))
    ctx, _ = chunk_documents([doc], ChunkConfig(strategy="structure", max_tokens=12, min_tokens=0, context=True))
    for col in ("chunk_id", "char_start", "char_end", "text", "token_count", "section_path"):
        assert ctx.column(col).to_pylist() == plain.column(col).to_pylist()
    spans = list(zip(ctx.column("char_start").to_pylist(), ctx.column("char_end").to_pylist()))
    assert [TEXT[s:e] for s, e in spans] == ctx.column("text").to_pylist()
    assert plain.column("context").to_pylist() == [""] * plain.num_rows
    assert ctx.column("context").to_pylist() == ["Bees\n\n", "Bees > Drones\n\n"]
    assert indexed_texts(ctx) == ["Bees\n\n" + TEXT[s:e] if i == 0 else "Bees > Drones\n\n" + TEXT[s:e]
                                    for i, (s, e) in enumerate(spans)]
    emb = HashingEmbedder(dim=64)
    v_plain, n1 = embed_chunks(plain, emb, tmp_path / "cache")
    v_ctx, n2 = embed_chunks(ctx, emb, tmp_path / "cache")
    assert n1 == n2 == 2  # different texts, different cache keys
    assert not np.allclose(v_plain[1], v_ctx[1])


def _ingest_md(workspace: Path, context: bool, index: str) -> tuple[PublishedIndex, list[Document]]:
    write_params(workspace, load={"include": ["**/*.md"]}, chunk={"strategy": "recursive", "max_tokens": 64,
                                                                    "overlap_tokens": 0, "context": context},
                 index={"name": index})
    runner = CliRunner()
    for stage in ("load", "chunk", "embed", "publish"):
        res = runner.invoke(app, ["stage", stage])
        assert res.exit_code == 0, res.output
    docs = documents_from_table(read_table("build/documents.parquet", DOCUMENTS_SCHEMA))
    return PublishedIndex.open(IndexRegistry("indexes"), index), docs


def test_context_end_to_end_through_the_dvc_stages(workspace: Path) -> None:
    plain, docs = _ingest_md(workspace, False, "plain")
    ctx, _ = _ingest_md(workspace, True, "ctx")
    assert ctx.manifest.chunker["context"] is True and plain.manifest.chunker["context"] is False
    text_of = {d.doc_id: d.text for d in docs}
    title_of = {d.doc_id: d.title for d in docs}
    rows = ctx.chunks.to_pylist()
    assert rows and all(text_of[r["doc_id"]][r["char_start"]:r["char_end"]] == r["text"] for r in rows)
    assert all(r["context"].startswith(title_of[r["doc_id"]]) and r["context"].endswith("\n\n") for r in rows)
    for col in ("chunk_id", "char_start", "char_end", "text"):
        assert ctx.chunks.column(col).to_pylist() == plain.chunks.column(col).to_pylist()
    vec_ctx = vectors_from_table(__import__("pyarrow.parquet").parquet.read_table("build/embeddings.parquet"))
    emb = make_embedder("hashing")  # what embed.model=hashing builds
    assert np.allclose(vec_ctx, emb.embed([r["context"] + r["text"] for r in rows]), atol=1e-6)
    published = json.loads(Path("build/published.json").read_text())
    assert published["index"] == "ctx"
    assert read_table("build/chunks.parquet", CHUNKS_SCHEMA).num_rows == len(rows)
