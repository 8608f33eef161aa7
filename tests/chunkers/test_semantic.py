"""SemanticChunker: breakpoints where adjacent sentence embeddings drift apart."""

from __future__ import annotations

from functools import partial
from typing import Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragline.chunkers.base import ConfigError
from ragline.chunkers.semantic import EmbeddingError, SemanticChunker
from tests.chunkers.strategies import PROPERTY_SETTINGS, documents, fake_embed, max_tokens_values, whitespace_only
from tests.invariants import assert_chunk_invariants

CATS = "Cats purr softly. Cats purr loudly. Cats purr often."
STOCKS = "Stocks rose sharply. Stocks rose again. Stocks rose today."
TEXT = CATS + " " + STOCKS
embed = partial(fake_embed, dim=256)  # wide enough that these few words do not collide


def _texts(chunker: SemanticChunker, text: str) -> list[str]:
    chunks = chunker.chunk(text, doc_id="d")
    assert_chunk_invariants(text, chunks, chunker.config.max_tokens, chunker=chunker)
    return [c.text for c in chunks]


def _refuse(texts: Sequence[str]) -> np.ndarray:
    raise AssertionError("the embedder must not be called")


@pytest.mark.parametrize("buffer_size", [0, 1])
def test_breaks_at_the_topic_shift(buffer_size: int) -> None:
    chunker = SemanticChunker(max_tokens=100, buffer_size=buffer_size, embed_fn=embed)
    assert _texts(chunker, TEXT) == [CATS, STOCKS]


def test_distances_are_cosine_distances_of_buffered_sentences() -> None:
    chunker = SemanticChunker(buffer_size=0, embed_fn=embed)
    distances = chunker.distances(TEXT, [(0, 17), (18, 35), (53, 73)])  # two cat sentences, one stock
    np.testing.assert_allclose(distances, [1 - 2 / 3, 1.0])


def test_percentile_100_never_breaks_and_0_breaks_at_every_rise() -> None:
    never = SemanticChunker(max_tokens=100, breakpoint_percentile=100, embed_fn=embed)
    assert _texts(never, TEXT) == [TEXT]
    always = SemanticChunker(max_tokens=100, breakpoint_percentile=0, buffer_size=0, embed_fn=embed)
    assert _texts(always, TEXT) == [CATS, STOCKS]  # the other four distances are all the minimum


def test_max_tokens_splits_a_group_into_whole_sentences() -> None:
    chunker = SemanticChunker(max_tokens=11, buffer_size=0, embed_fn=embed)
    assert _texts(chunker, TEXT) == [
        "Cats purr softly. Cats purr loudly.",
        "Cats purr often.",
        "Stocks rose sharply. Stocks rose again.",
        "Stocks rose today.",
    ]


def test_one_sentence_and_blank_text_do_not_call_the_embedder() -> None:
    chunker = SemanticChunker(embed_fn=_refuse)
    assert _texts(chunker, "  Just one sentence.  ") == ["Just one sentence."]
    assert chunker.chunk(" \n\t ") == []


def test_zero_vectors_are_allowed() -> None:
    chunker = SemanticChunker(max_tokens=100, embed_fn=lambda texts: np.zeros((len(texts), 4), np.float32))
    assert _texts(chunker, TEXT) == [TEXT]  # all distances equal 1: none above the percentile


def test_embedder_is_required() -> None:
    with pytest.raises(ConfigError, match="embed_fn"):
        SemanticChunker()


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda texts: np.zeros((len(texts) + 1, 4)), "shape"),
        (lambda texts: np.zeros(len(texts)), "shape"),
        (lambda texts: np.full((len(texts), 4), np.nan), "non-finite"),
    ],
)
def test_a_bad_embedder_output_is_an_error(bad: object, message: str) -> None:
    with pytest.raises(EmbeddingError, match=message):
        SemanticChunker(embed_fn=bad).chunk(TEXT)  # type: ignore[arg-type]


def test_the_embedder_identity_is_in_the_fingerprint() -> None:
    a = SemanticChunker(embedding_model="all-MiniLM-L6-v2@abc", embed_fn=embed)
    b = SemanticChunker(embedding_model="all-MiniLM-L6-v2@def", embed_fn=embed)
    assert a.fingerprint != b.fingerprint


@PROPERTY_SETTINGS
@given(documents(), max_tokens_values, st.integers(0, 2), st.floats(0, 100))
def test_invariants_on_arbitrary_text(text: str, max_tokens: int, buffer_size: int, percentile: float) -> None:
    chunker = SemanticChunker(
        max_tokens=max_tokens, buffer_size=buffer_size, breakpoint_percentile=percentile, embed_fn=fake_embed
    )
    assert_chunk_invariants(text, chunker.chunk(text, doc_id="doc"), max_tokens, chunker=chunker)


@PROPERTY_SETTINGS
@given(whitespace_only)
def test_whitespace_only_gives_no_chunks(text: str) -> None:
    assert SemanticChunker(max_tokens=4, embed_fn=_refuse).chunk(text) == []
