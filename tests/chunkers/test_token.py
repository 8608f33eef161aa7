"""TokenChunker: windows of whole words packed to a token budget."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ragline.chunkers.token import TokenChunker
from ragline.chunkers.tokenizer import TokenIndex
from tests.chunkers.strategies import PROPERTY_SETTINGS, documents, max_tokens_values, whitespace_only
from tests.invariants import assert_chunk_invariants

TEXT = "one two three four five"  # five tokens: one | " two" | " three" | " four" | " five"


def _texts(chunker: TokenChunker, text: str) -> list[tuple[int, int, str, int]]:
    chunks = chunker.chunk(text, doc_id="d")
    assert_chunk_invariants(text, chunks, chunker.config.max_tokens, chunker=chunker)
    return [(c.char_start, c.char_end, c.text, c.token_count) for c in chunks]


def test_windows_without_overlap() -> None:
    # Windows are trimmed: the space that opens " three" is not part of the chunk.
    chunker = TokenChunker(max_tokens=2)
    assert _texts(chunker, TEXT) == [(0, 7, "one two", 2), (8, 18, "three four", 2), (19, 23, "five", 1)]


def test_windows_with_overlap() -> None:
    chunker = TokenChunker(max_tokens=3, overlap_tokens=1)
    assert _texts(chunker, TEXT) == [(0, 13, "one two three", 3), (8, 23, "three four five", 3)]


def test_a_window_never_ends_inside_a_word() -> None:
    # Regression: `make run` printed a chunk beginning "rones are males" (from "Drones"):
    # raw token windows cut "Drones" (tokens "D" | "rones"). Three tokens fit "The
    # queen. D", but the window stops at the last whitespace before the budget runs out.
    text = "The queen. Drones are males."  # The | " queen" | "." | " D" | "rones" | " are" | " males" | "."
    assert [t for _, _, t, _ in _texts(TokenChunker(max_tokens=4), text)] == ["The queen.", "Drones are", "males."]


def test_overlap_repeats_whole_words_only() -> None:
    text = "red green blue cyan black white"  # one token per word
    assert [t for _, _, t, _ in _texts(TokenChunker(max_tokens=4, overlap_tokens=2), text)] == [
        "red green blue cyan",
        "blue cyan black white",
    ]
    # "zeta" is two tokens (" z" | "eta"): it would not fit after two words of overlap,
    # so the window stops before it and the next one repeats a word.
    text = "alpha beta gamma delta epsilon zeta"
    assert [t for _, _, t, _ in _texts(TokenChunker(max_tokens=4, overlap_tokens=2), text)] == [
        "alpha beta gamma delta",
        "gamma delta epsilon",
        "delta epsilon zeta",
    ]


def test_a_word_longer_than_the_budget_is_cut_at_token_ends() -> None:
    # "0123456789" * 3 is one word of ten tokens (digits: at most three per cl100k token);
    # its last piece continues with the words after it.
    text = "ab " + "0123456789" * 3 + " cd ef"
    assert [t for _, _, t, _ in _texts(TokenChunker(max_tokens=4), text)] == [
        "ab", "012345678901", "234567890123", "456789 cd ef",
    ]


def test_repeated_text_gets_distinct_offsets_and_ids() -> None:
    # Regression guard for offsets recovered with str.find (wrong on repeated text).
    text = "abc abc abc abc"
    chunks = TokenChunker(max_tokens=1).chunk(text, doc_id="d")
    assert [(c.char_start, c.char_end) for c in chunks] == [(0, 3), (4, 7), (8, 11), (12, 15)]
    assert len({c.chunk_id for c in chunks}) == 4


@PROPERTY_SETTINGS
@given(documents(), max_tokens_values, st.data())
def test_invariants_on_arbitrary_text(text: str, max_tokens: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(0, max_tokens - 1))
    chunker = TokenChunker(max_tokens=max_tokens, overlap_tokens=overlap)
    assert_chunk_invariants(text, chunker.chunk(text, doc_id="doc"), max_tokens, chunker=chunker)


@PROPERTY_SETTINGS
@given(documents(), max_tokens_values)
def test_windows_are_as_full_as_whole_words_allow(text: str, max_tokens: int) -> None:
    # Snapping moves a cut back only to the nearest whitespace: the next chunk's first word
    # would not have fit into the previous chunk (windows are greedy).
    chunks = TokenChunker(max_tokens=max_tokens).chunk(text)
    index = TokenIndex(text)
    for prev, nxt in zip(chunks, chunks[1:]):
        first_word_end = nxt.char_start
        while first_word_end < len(text) and not text[first_word_end].isspace():
            first_word_end += 1
        if text[prev.char_end : nxt.char_start].strip() == "" and prev.char_end < nxt.char_start:
            assert index.count(prev.char_start, first_word_end) > max_tokens, (prev, nxt)


@PROPERTY_SETTINGS
@given(whitespace_only)
def test_whitespace_only_gives_no_chunks(text: str) -> None:
    assert TokenChunker(max_tokens=4).chunk(text) == []


def test_overlapping_windows_over_split_characters_are_not_repeated() -> None:
    # Regression: with overlap, two windows could map to the same characters when tokens
    # split multi-byte characters, giving duplicate chunks and duplicate ids.
    chunker = TokenChunker(max_tokens=2, overlap_tokens=1)
    assert_chunk_invariants("\x81Ò", chunker.chunk("\x81Ò", doc_id="d"), 2, chunker=chunker)
