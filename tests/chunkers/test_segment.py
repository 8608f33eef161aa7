"""Sentence splitting with offsets, and whitespace trimming."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

import re

from ragline.chunkers.segment import WHITESPACE_MAX, sentence_spans, strip_span, word_runs
from tests.chunkers.strategies import PROPERTY_SETTINGS, documents, small_blocks, whitespace_only


def _sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in sentence_spans(text)]


def test_terminal_punctuation_closers_and_line_breaks() -> None:
    text = 'It rained. "Really?" she asked! Yes...\nHeading\n\n  Last one'
    assert _sentences(text) == ["It rained.", '"Really?"', "she asked!", "Yes...", "Heading", "Last one"]


def test_abbreviations_initials_and_decimals_do_not_end_sentences() -> None:
    text = "Dr. Smith met J. Doe at 3.14 p.m. on Jan. 5. They left, e.g. early."
    assert _sentences(text) == ["Dr. Smith met J. Doe at 3.14 p.m. on Jan. 5.", "They left, e.g. early."]


def test_cjk_full_stops_need_no_space() -> None:
    assert _sentences("你好。世界！好吗？") == ["你好。", "世界！", "好吗？"]


def test_lowercase_sentence_starts_still_split() -> None:
    # The finance corpus is lowercased: a lowercase next word must not block a boundary.
    assert _sentences("the year ended. the company grew.") == ["the year ended.", "the company grew."]


def test_range_arguments_limit_the_scan() -> None:
    text = "Skip me. Take this. And this. Not this."
    assert [text[s:e] for s, e in sentence_spans(text, 9, 29)] == ["Take this.", "And this."]


def test_strip_span() -> None:
    assert strip_span("  ab \x1c\n", 0, 7) == (2, 4)
    assert strip_span(" \t\n", 0, 3) == (3, 3)


@PROPERTY_SETTINGS
@given(documents())
def test_sentences_are_trimmed_ordered_and_cover_the_text(text: str) -> None:
    covered = 0
    for s, e in sentence_spans(text):
        assert covered <= s < e
        assert not text[covered:s].strip()
        assert text[s:e] == text[s:e].strip()
        covered = e
    assert not text[covered:].strip()


@PROPERTY_SETTINGS
@given(whitespace_only)
def test_whitespace_only_has_no_sentences(text: str) -> None:
    assert sentence_spans(text) == []


def test_no_whitespace_above_the_table_limit() -> None:
    # word_runs looks whitespace up in a table of code points <= WHITESPACE_MAX.
    assert not [c for c in range(WHITESPACE_MAX + 1, 0x110000) if chr(c).isspace()]


def test_word_runs() -> None:
    text = "  ab\u3000cd\x1ce😀 \n"
    starts, ends = word_runs(text)
    assert [text[s:e] for s, e in zip(starts, ends)] == ["ab", "cd", "e😀"]
    starts, ends = word_runs(text, 3, 9)
    assert [text[s:e] for s, e in zip(starts, ends)] == ["b", "cd", "e"]
    assert len(word_runs("", 0)[0]) == 0 and len(word_runs(" \t")[0]) == 0


@PROPERTY_SETTINGS
@given(documents(), st.sampled_from([1, 3, 1 << 20]))
def test_word_runs_are_what_the_regex_matches(text: str, block: int) -> None:
    # computed a block of characters at a time (issue 11: bounded memory on a 200 MB text);
    # a run across a block edge is one run
    with small_blocks(block, block):
        starts, ends = word_runs(text)
    assert list(zip(starts.tolist(), ends.tolist())) == [m.span() for m in re.finditer(r"\S+", text)]


@PROPERTY_SETTINGS
@given(documents(), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 60)), max_size=12), st.booleans())
def test_units_vectorized_equal_the_word_by_word_split(text: str, raw: list, at_words: bool) -> None:
    """KeepTogether.units without a kept-span edge inside a word (numpy) gives the units of the
    word-by-word split (its reference), and falls back to that split when an edge is inside one."""
    import numpy as np

    from ragline.chunkers.segment import KeepTogether

    runs = list(zip(*word_runs(text, 0, len(text))))
    spans = []
    for a, n in raw:  # spans from word to word (the usual: table rows), or anywhere
        if at_words and runs:
            i, j = sorted((a % len(runs), (a + n // 10) % len(runs)))
            spans.append((runs[i][0], runs[j][1]))
        else:
            spans.append(strip_span(text, min(a, len(text)), min(a + n, len(text))))
    keep = KeepTogether([s for s in spans if s[1] - s[0] >= 2])
    got = keep.units(text, 0, len(text))
    want = keep._split_units(*word_runs(text, 0, len(text)))
    assert got[0].dtype == np.int64 and got[1].dtype == np.int64
    assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
