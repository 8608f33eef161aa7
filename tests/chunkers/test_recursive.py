"""RecursiveChunker: separator hierarchy packed to a token budget."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ragline.chunkers.base import ElementSpan
from ragline.chunkers.recursive import LEVELS, RecursiveChunker
from tests.chunkers.strategies import PROPERTY_SETTINGS, documents, max_tokens_values, whitespace_only
from tests.invariants import assert_chunk_invariants

PARAGRAPHS = "Alpha beta.\n\nGamma delta.\n\nEpsilon."


def _out(text: str, **config: object) -> list[tuple[int, int, str, int, bool]]:
    chunker = RecursiveChunker(**config)  # type: ignore[arg-type]
    chunks = chunker.chunk(text, doc_id="d")
    assert_chunk_invariants(text, chunks, chunker.config.max_tokens, chunker=chunker)
    return [(c.char_start, c.char_end, c.text, c.token_count, c.oversized) for c in chunks]


def test_whole_text_within_budget_is_one_chunk() -> None:
    assert _out(PARAGRAPHS, max_tokens=9) == [(0, 35, PARAGRAPHS, 9, False)]


def test_paragraphs_are_packed_greedily_and_trimmed() -> None:
    # ".\n\n" is one cl100k token; it counts with the paragraph it ends, so the first chunk
    # has 5 tokens in the document's tokenization.
    assert _out(PARAGRAPHS, max_tokens=6) == [
        (0, 25, "Alpha beta.\n\nGamma delta.", 5, False),
        (27, 35, "Epsilon.", 3, False),
    ]
    assert _out(PARAGRAPHS, max_tokens=3) == [
        (0, 11, "Alpha beta.", 2, False),
        (13, 25, "Gamma delta.", 2, False),
        (27, 35, "Epsilon.", 3, False),
    ]


def test_lines_when_a_paragraph_is_too_long() -> None:
    text = "First line here\nsecond line here\nthird line here"
    assert _out(text, max_tokens=7) == [
        (0, 32, "First line here\nsecond line here", 7, False),
        (33, 48, "third line here", 3, False),
    ]


def test_sentences_when_a_line_is_too_long() -> None:
    text = "One sentence here. Another sentence there. A third one."
    assert [t for _, _, t, _, _ in _out(text, max_tokens=8)] == [
        "One sentence here. Another sentence there.",
        "A third one.",
    ]
    assert [t for _, _, t, _, _ in _out(text, max_tokens=4)] == [
        "One sentence here.",
        "Another sentence there.",
        "A third one.",
    ]


def test_words_with_overlap() -> None:
    assert _out("a b c d e f g h", max_tokens=4, overlap_tokens=2) == [
        (0, 7, "a b c d", 4, False),
        (4, 11, "c d e f", 4, False),
        (8, 15, "e f g h", 4, False),
    ]


def test_token_windows_are_the_last_resort() -> None:
    text = "0123456789" * 3  # digits: cl100k tokens of at most three digits
    chunks = _out(text, max_tokens=4)
    assert [t for _, _, t, _, _ in chunks] == ["012345678901", "234567890123", "456789"]


def test_a_character_longer_than_the_budget_is_flagged_oversized() -> None:
    # "😀" is two byte-level tokens: indivisible under a one-token budget.
    assert _out("a😀b", max_tokens=1) == [
        (0, 1, "a", 1, False),
        (1, 2, "😀", 2, True),
        (2, 3, "b", 1, False),
    ]


def test_repeated_paragraphs_get_their_own_offsets() -> None:
    # Regression guard for offsets recovered with str.find (wrong on repeated text).
    text = "same para.\n\nsame para.\n\nsame para."
    assert [(s, e) for s, e, _, _, _ in _out(text, max_tokens=3)] == [(0, 10), (12, 22), (24, 34)]


def test_levels_can_be_restricted() -> None:
    text = "Line one is here\nLine two is here"
    assert [t for _, _, t, _, _ in _out(text, max_tokens=6, levels=["word"])] == [
        "Line one is here\nLine",
        "two is here",
    ]


def test_pages_and_sections_come_from_elements() -> None:
    elements = [ElementSpan("NarrativeText", 0, 13, 1, ("A",)), ElementSpan("NarrativeText", 13, 35, 2, ("B",))]
    chunks = RecursiveChunker(max_tokens=3).chunk(PARAGRAPHS, doc_id="d", elements=elements)
    assert [(c.page, c.section_path) for c in chunks] == [(1, ("A",)), (2, ("B",)), (2, ("B",))]


@PROPERTY_SETTINGS
@given(documents(), max_tokens_values, st.data())
def test_invariants_on_arbitrary_text(text: str, max_tokens: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(0, max_tokens - 1))
    levels = data.draw(st.sampled_from([LEVELS, ("paragraph", "word"), ("sentence",)]))
    chunker = RecursiveChunker(max_tokens=max_tokens, overlap_tokens=overlap, levels=levels)
    assert_chunk_invariants(text, chunker.chunk(text, doc_id="doc"), max_tokens, chunker=chunker)


@PROPERTY_SETTINGS
@given(documents(), max_tokens_values)
def test_oversized_only_for_one_multi_token_character(text: str, max_tokens: int) -> None:
    # All tokens of an oversized unit end in its last character (at most 4 UTF-8 bytes).
    for c in RecursiveChunker(max_tokens=max_tokens).chunk(text):
        assert not c.oversized or (max_tokens < 4 and c.token_count <= 4)


@PROPERTY_SETTINGS
@given(whitespace_only)
def test_whitespace_only_gives_no_chunks(text: str) -> None:
    assert RecursiveChunker(max_tokens=4).chunk(text) == []
