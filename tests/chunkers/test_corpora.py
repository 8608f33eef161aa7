"""Every strategy on a real document: the chunking-eval State of the Union corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragline.chunkers.registry import get_chunker
from tests.chunkers.strategies import fake_embed
from tests.invariants import assert_chunk_invariants

# shared/ sits beside the repository checkout (locally and in CI).
CORPUS = Path(__file__).resolve().parents[3] / "shared/datasets/chunking-eval/corpora/state_of_the_union.md"


@pytest.fixture(scope="module")
def corpus() -> str:
    if not CORPUS.is_file():
        pytest.skip(f"chunking-eval corpus not found at {CORPUS}")
    return CORPUS.read_text(encoding="utf-8")


@pytest.mark.parametrize("strategy", ["token", "recursive", "sentence", "structure", "semantic"])
@pytest.mark.parametrize("max_tokens", [64, 256])
def test_invariants_on_a_real_corpus(corpus: str, strategy: str, max_tokens: int) -> None:
    chunker = get_chunker(strategy, embed_fn=fake_embed, max_tokens=max_tokens)
    chunks = chunker.chunk(corpus, doc_id="state_of_the_union")
    assert_chunk_invariants(corpus, chunks, max_tokens, chunker=chunker)
    # Greedy packing fills the budget: measured 0.67-1.0 of max_tokens on average here.
    mean_fill = sum(c.token_count for c in chunks) / len(chunks) / max_tokens
    assert mean_fill >= 0.6, f"{strategy}: chunks hold {mean_fill:.0%} of max_tokens on average"
