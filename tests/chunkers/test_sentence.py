"""SentenceChunker: whole sentences packed to a token budget with sentence overlap."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ragline.chunkers.sentence import SentenceChunker
from tests.chunkers.strategies import PROPERTY_SETTINGS, documents, max_tokens_values, whitespace_only
from tests.invariants import assert_chunk_invariants

TEXT = "One. Two! Three? Four."  # every sentence is two tokens


def _out(text: str, **config: object) -> list[tuple[int, int, str, int]]:
    chunker = SentenceChunker(**config)  # type: ignore[arg-type]
    chunks = chunker.chunk(text, doc_id="d")
    assert_chunk_invariants(text, chunks, chunker.config.max_tokens, chunker=chunker)
    return [(c.char_start, c.char_end, c.text, c.token_count) for c in chunks]


def test_sentences_are_packed_greedily() -> None:
    assert _out(TEXT, max_tokens=4) == [(0, 9, "One. Two!", 4), (10, 22, "Three? Four.", 4)]
    assert _out(TEXT, max_tokens=5) == [(0, 9, "One. Two!", 4), (10, 22, "Three? Four.", 4)]
    assert _out(TEXT, max_tokens=8) == [(0, 22, TEXT, 8)]


def test_overlap_repeats_trailing_sentences() -> None:
    assert _out(TEXT, max_tokens=4, overlap_sentences=1) == [
        (0, 9, "One. Two!", 4),
        (5, 16, "Two! Three?", 4),
        (10, 22, "Three? Four.", 4),
    ]
    assert _out(TEXT, max_tokens=6, overlap_sentences=2) == [
        (0, 16, "One. Two! Three?", 6),
        (5, 22, "Two! Three? Four.", 6),
    ]


def test_overlap_shrinks_when_it_would_not_fit() -> None:
    # Two sentences of overlap plus the next would exceed 4 tokens: only one is repeated.
    assert [t for _, _, t, _ in _out(TEXT, max_tokens=4, overlap_sentences=2)] == [
        "One. Two!",
        "Two! Three?",
        "Three? Four.",
    ]


def test_a_sentence_over_the_budget_is_split_alone_by_words() -> None:
    text = "Short one. This sentence is far too long for the budget here. End."
    assert [t for _, _, t, _ in _out(text, max_tokens=5)] == [
        "Short one.",
        "This sentence is far too",
        "long for the budget",
        "here.",
        "End.",
    ]


@PROPERTY_SETTINGS
@given(documents(), max_tokens_values, st.integers(0, 3))
def test_invariants_on_arbitrary_text(text: str, max_tokens: int, overlap: int) -> None:
    chunker = SentenceChunker(max_tokens=max_tokens, overlap_sentences=overlap)
    assert_chunk_invariants(text, chunker.chunk(text, doc_id="doc"), max_tokens, chunker=chunker)


@PROPERTY_SETTINGS
@given(whitespace_only)
def test_whitespace_only_gives_no_chunks(text: str) -> None:
    assert SentenceChunker(max_tokens=4).chunk(text) == []
