"""Span metrics: exact hand-computed values, and agreement with a character-set oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragline.evaluation.spans import (
    intersect_spans,
    omega_precision,
    retrieval_scores,
    subtract_spans,
    union_spans,
)


def test_union_merges_overlapping_and_touching_spans() -> None:
    assert union_spans([(5, 8), (0, 2), (2, 4), (7, 9), (20, 21)]) == [(0, 4), (5, 9), (20, 21)]
    assert union_spans([]) == []


def test_intersect_and_subtract() -> None:
    assert intersect_spans([(0, 10), (20, 30)], [(5, 25)]) == [(5, 10), (20, 25)]
    assert intersect_spans([(0, 10)], [(10, 20)]) == []  # touching: nothing in common
    assert subtract_spans((0, 30), [(5, 10), (20, 25)]) == [(0, 5), (10, 20), (25, 30)]
    assert subtract_spans((5, 10), [(0, 20)]) == []


def test_retrieval_scores_by_hand() -> None:
    # references 10-20 and 30-40 (20 chars); retrieved: a 0-15 (hits 10-15), a 35-50 (hits 35-40),
    # and a 100-char chunk of another corpus, which hits nothing but counts in the denominators.
    recall, precision, iou = retrieval_scores([("a", 0, 15), ("a", 35, 50), ("b", 0, 100)], "a", [(10, 20), (30, 40)])
    assert recall == pytest.approx(10 / 20)
    assert precision == pytest.approx(10 / 130)
    assert iou == pytest.approx(10 / (130 + 10))  # 5 + 5 reference chars missed


def test_overlapping_retrieved_chunks_count_twice_in_denominators() -> None:
    recall, precision, iou = retrieval_scores([("a", 0, 8), ("a", 4, 12)], "a", [(0, 10)])
    assert (recall, precision, iou) == (1.0, 10 / 16, 10 / 16)


def test_nothing_retrieved_or_wrong_corpus_scores_zero() -> None:
    assert retrieval_scores([], "a", [(0, 10)]) == (0.0, 0.0, 0.0)
    assert retrieval_scores([("b", 0, 10)], "a", [(0, 10)]) == (0.0, 0.0, 0.0)


def test_omega_precision_by_hand() -> None:
    starts, ends = np.array([0, 10, 20, 30]), np.array([10, 20, 30, 40])
    assert omega_precision(starts, ends, [(12, 18)]) == pytest.approx(6 / 10)
    # Chroma tests intersection on closed intervals: chunk 10-20 *touches* reference 20-25,
    # so it joins the oracle's chunks (denominator 10-30), giving 5/20 rather than 5/10.
    assert omega_precision(starts, ends, [(20, 25)]) == pytest.approx(5 / 20)
    assert omega_precision(starts, ends, [(2, 4), (12, 14)]) == pytest.approx(4 / 20)
    assert omega_precision(np.array([], dtype=np.int64), np.array([], dtype=np.int64), [(0, 5)]) == 0.0


spans = st.tuples(st.integers(0, 60), st.integers(1, 20)).map(lambda t: (t[0], t[0] + t[1]))


@settings(max_examples=200, deadline=None)
@given(refs=st.lists(spans, min_size=1, max_size=4), got=st.lists(st.tuples(st.sampled_from("ab"), spans), max_size=5))
def test_scores_match_character_set_oracle(refs: list[tuple[int, int]], got: list[tuple[str, tuple[int, int]]]) -> None:
    retrieved = [(c, s, e) for c, (s, e) in got]
    own = {i for c, s, e in retrieved if c == "a" for i in range(s, e)}
    ref_chars = {i for s, e in refs for i in range(s, e)}
    hit = len(own & ref_chars)
    ref_sum = sum(e - s for s, e in refs)
    ret_sum = sum(e - s for _, s, e in retrieved)
    missed = sum(len(set(range(s, e)) - own) for s, e in refs)
    recall, precision, iou = retrieval_scores(retrieved, "a", refs)
    assert recall == pytest.approx(hit / ref_sum)
    assert precision == pytest.approx(hit / ret_sum if ret_sum else 0.0)
    assert iou == pytest.approx(hit / (ret_sum + missed))


@settings(max_examples=200, deadline=None)
@given(refs=st.lists(spans, min_size=1, max_size=4), chunks=st.lists(spans, max_size=8))
def test_omega_matches_character_set_oracle(refs: list[tuple[int, int]], chunks: list[tuple[int, int]]) -> None:
    chosen = [c for c in chunks if any(c[0] <= r[1] and r[0] <= c[1] for r in refs)]
    s_chars = {i for s, e in chosen for i in range(s, e)}
    r_chars = {i for s, e in refs for i in range(s, e)}
    expected = len(s_chars & r_chars) / len(s_chars | r_chars) if chosen else 0.0
    starts = np.array([c[0] for c in chunks], dtype=np.int64)
    ends = np.array([c[1] for c in chunks], dtype=np.int64)
    assert omega_precision(starts, ends, refs) == pytest.approx(expected)
