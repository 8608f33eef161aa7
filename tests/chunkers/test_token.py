"""TokenChunker: fixed windows of tokens."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ragline.chunkers.token import TokenChunker
from tests.chunkers.strategies import PROPERTY_SETTINGS, documents, max_tokens_values, whitespace_only
from tests.invariants import assert_chunk_invariants

TEXT = "one two three four five"  # five tokens: one | " two" | " three" | " four" | " five"


def _texts(chunker: TokenChunker, text: str) -> list[tuple[int, int, str, int]]:
    return [(c.char_start, c.char_end, c.text, c.token_count) for c in chunker.chunk(text, doc_id="d")]


def test_windows_without_overlap() -> None:
    chunker = TokenChunker(max_tokens=2)
    assert _texts(chunker, TEXT) == [(0, 7, "one two", 2), (7, 18, " three four", 2), (18, 23, " five", 1)]
    assert_chunk_invariants(TEXT, chunker.chunk(TEXT, doc_id="d"), 2, chunker=chunker)


def test_windows_with_overlap() -> None:
    chunker = TokenChunker(max_tokens=3, overlap_tokens=1)
    assert _texts(chunker, TEXT) == [(0, 13, "one two three", 3), (7, 23, " three four five", 3)]


def test_repeated_text_gets_distinct_offsets_and_ids() -> None:
    # Regression guard for offsets recovered with str.find (wrong on repeated text).
    text = "abc abc abc abc"
    chunks = TokenChunker(max_tokens=1).chunk(text, doc_id="d")
    assert [(c.char_start, c.char_end) for c in chunks] == [(0, 3), (3, 7), (7, 11), (11, 15)]
    assert len({c.chunk_id for c in chunks}) == 4


@PROPERTY_SETTINGS
@given(documents(), max_tokens_values, st.data())
def test_invariants_on_arbitrary_text(text: str, max_tokens: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(0, max_tokens - 1))
    chunker = TokenChunker(max_tokens=max_tokens, overlap_tokens=overlap)
    assert_chunk_invariants(text, chunker.chunk(text, doc_id="doc"), max_tokens, chunker=chunker)


@PROPERTY_SETTINGS
@given(whitespace_only)
def test_whitespace_only_gives_no_chunks(text: str) -> None:
    assert TokenChunker(max_tokens=4).chunk(text) == []


def test_overlapping_windows_over_split_characters_are_not_repeated() -> None:
    # Regression: with overlap, two windows could map to the same characters when tokens
    # split multi-byte characters, giving duplicate chunks and duplicate ids.
    chunker = TokenChunker(max_tokens=2, overlap_tokens=1)
    assert_chunk_invariants("\x81Ò", chunker.chunk("\x81Ò", doc_id="d"), 2, chunker=chunker)
