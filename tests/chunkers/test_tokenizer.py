"""TokenIndex: span token counts from one tokenization of the document."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ragline.chunkers.tokenizer import TokenIndex, count_tokens
from tests.chunkers.strategies import PROPERTY_SETTINGS, documents


def test_counts_of_word_spans() -> None:
    index = TokenIndex("one two three")  # one | " two" | " three"
    assert index.n_tokens == 3
    assert [index.count(0, 3), index.count(3, 7), index.count(7, 13)] == [1, 1, 1]
    assert index.count(0, 13) == 3
    assert index.count(4, 7) == 1  # "two": " two" straddles the start, counted here


def test_multi_token_character_is_counted_in_its_own_span() -> None:
    # "😀" is two byte-level tokens; both belong to the emoji's span, none to "b".
    index = TokenIndex("a😀b")
    assert index.n_tokens == count_tokens("a😀b") == 4
    assert [index.count(0, 1), index.count(1, 2), index.count(2, 3)] == [1, 2, 1]


def test_cut_helpers_land_on_token_ends() -> None:
    index = TokenIndex("one two three four")
    assert index.last_cut_within(0, 2) == 7  # "one two"
    assert index.last_cut_within(0, 0) == 0  # no progress possible
    assert index.next_token_end(0) == 3
    assert index.first_cut_with(18, 1) == 13  # " four"


@PROPERTY_SETTINGS
@given(documents(), st.data())
def test_counts_of_a_partition_add_up_to_the_document(text: str, data: st.DataObject) -> None:
    index = TokenIndex(text)
    assert index.n_tokens == count_tokens(text)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(text)), max_size=8))) | {0, len(text)})
    assert sum(index.count(a, b) for a, b in zip(cuts, cuts[1:])) == index.n_tokens
