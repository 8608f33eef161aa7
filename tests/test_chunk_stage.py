"""Stage chunk: the embed model reaches the fingerprint of embedder-dependent strategies."""

from __future__ import annotations

from ragline.indexers.embedders import HashingEmbedder
from ragline.pipelines.chunk import chunk_documents, chunker_record
from ragline.pipelines.config import ChunkConfig
from ragline.pipelines.load import Document, doc_id_for

TEXT = ("Bees make honey. Honey is stored in comb. " * 6 + "Varroa mites harm bees. Mites spread viruses. " * 6).strip()
DOC = Document(doc_id_for("a.txt"), "a.txt", "0" * 64, "text/plain", len(TEXT), "a", TEXT, ())


def test_semantic_chunk_ids_change_with_the_embedding_model() -> None:
    cfg = ChunkConfig(strategy="semantic", max_tokens=64)
    embedder = HashingEmbedder()
    embed_fn = lambda texts: embedder.embed(list(texts))  # noqa: E731
    a, _ = chunk_documents([DOC], cfg, embed_fn=embed_fn, embed_model="model-a")
    b, _ = chunk_documents([DOC], cfg, embed_fn=embed_fn, embed_model="model-b")
    assert a.column("char_start").to_pylist() == b.column("char_start").to_pylist()
    assert set(a.column("chunk_id").to_pylist()).isdisjoint(b.column("chunk_id").to_pylist())
    assert chunker_record(cfg, "model-a")["fingerprint"] != chunker_record(cfg, "model-b")["fingerprint"]


def test_token_chunk_ids_do_not_depend_on_the_embedding_model() -> None:
    cfg = ChunkConfig(strategy="token", max_tokens=32)
    a, _ = chunk_documents([DOC], cfg, embed_model="model-a")
    b, _ = chunk_documents([DOC], cfg, embed_model="model-b")
    assert a.column("chunk_id").to_pylist() == b.column("chunk_id").to_pylist()
    for row in a.to_pylist():
        assert TEXT[row["char_start"] : row["char_end"]] == row["text"]


def test_rows_are_numbered_across_arrow_batches_and_match_the_chunker(monkeypatch) -> None:
    # Issue 11: the stage converts chunks to Arrow a batch at a time (chunk texts held once);
    # batch edges must not show in the table: rows numbered 0..n-1, the chunker's chunks in order.
    import ragline.pipelines.chunk as stage

    cfg = ChunkConfig(strategy="token", max_tokens=8, context=True)
    other = Document(doc_id_for("b.txt"), "b.txt", "1" * 64, "text/plain", len(TEXT), "b", TEXT[::-1], ())
    whole, _ = chunk_documents([DOC, other], cfg)
    monkeypatch.setattr(stage, "_BATCH_ROWS", 3)
    table, bad = chunk_documents([DOC, other], cfg)
    assert bad == [] and table.column("text").num_chunks > 2
    assert table.equals(whole)
    chunker = stage.make_chunker(cfg)
    expected = chunker.chunk(DOC.text, doc_id=DOC.doc_id) + chunker.chunk(other.text, doc_id=other.doc_id)
    assert table.column("row").to_pylist() == list(range(len(expected)))
    assert table.column("chunk_id").to_pylist() == [c.chunk_id for c in expected]
    assert table.column("text").to_pylist() == [c.text for c in expected]
