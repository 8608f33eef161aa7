"""End to end with the packaged all-MiniLM-L6-v2 (slow: loads the model; 9 chunks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.engine import FlowRunner
from runner.spec import load_flow
from tests.runner.conftest import CORPUS
from tests.runner.helpers import publish_paragraphs


@pytest.mark.slow
def test_hybrid_flow_on_a_real_model_index(tmp_path: Path, mini_flow: Path) -> None:
    from indexers.embedders import SentenceTransformerEmbedder

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
