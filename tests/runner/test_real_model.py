"""End to end with the packaged all-MiniLM-L6-v2 (slow: loads the model; 9 chunks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragline.runner.engine import FlowRunner
from ragline.runner.spec import load_flow
from tests.runner.conftest import CORPUS
from tests.publishing import publish_paragraphs


@pytest.mark.slow
def test_hybrid_flow_on_a_real_model_index(tmp_path: Path, mini_flow: Path) -> None:
    from ragline.indexers.embedders import SentenceTransformerEmbedder

    root = tmp_path / "indexes"
    publish_paragraphs(root, "mini", CORPUS, embedder=SentenceTransformerEmbedder())
    runner = FlowRunner(load_flow(mini_flow), root)
    runner.warm_up()
    assert runner.nodes["retrieve"].retriever.embedder.model_id == "all-MiniLM-L6-v2"
    r = runner.run({"question": "When should I cut back my rose bushes?"})
    assert r.retrieved[0]["text"] == "Roses are pruned in late winter. Cut each cane back to an outward facing bud."
    assert r.citations[0]["source"] == "garden/roses.md"
    dense = FlowRunner(load_flow(mini_flow, "dense"), root).run({"question": "My pump shakes a lot, what should I look at?"})
    assert dense.retrieved[0]["text"] == "If the pump vibrates, check the mounting bolts and the inlet strainer."
    assert dense.retrieved[0]["page"] == 3


@pytest.mark.slow
def test_onnx_and_torch_query_backends_retrieve_the_same_chunks(tmp_path: Path, mini_flow: Path) -> None:
    from ragline.indexers.embedders import SentenceTransformerEmbedder
    from ragline.indexers.onnx_embedder import default_threads
    from ragline.runner.nodes import QueryEmbedding

    root = tmp_path / "indexes"
    publish_paragraphs(root, "mini", CORPUS, embedder=SentenceTransformerEmbedder())  # built with torch
    flows = {b: FlowRunner(load_flow(mini_flow, "dense"), root, QueryEmbedding(b, cache_dir=str(tmp_path / "cache")))
             for b in ("onnx", "torch")}
    for runner in flows.values():
        runner.warm_up()
    assert flows["onnx"].indexes[0]["query_embedding"] == {"backend": "onnx", "threads": default_threads()}
    assert flows["torch"].indexes[0]["query_embedding"] == {"backend": "torch"}
    for q in ("When should I cut back my rose bushes?", "My pump shakes a lot, what should I look at?", "tomatoes"):
        a, b = (flows[k].run({"question": q}).retrieved for k in ("onnx", "torch"))
        assert [h["chunk_id"] for h in a] == [h["chunk_id"] for h in b]
        assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b)) < 1e-4
