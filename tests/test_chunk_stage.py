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
