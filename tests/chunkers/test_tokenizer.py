"""TokenIndex: span token counts from one tokenization of the document."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from ragline.chunkers.tokenizer import TokenIndex, count_tokens, get_encoding
from tests.chunkers.strategies import PROPERTY_SETTINGS, documents, small_blocks


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


def _reference_ends(text: str) -> list[int]:
    """Token end offsets the slow way: byte lengths token by token, then UTF-8 lead bytes before
    each end (a token ending inside a character counts that character)."""
    enc = get_encoding()
    leads = np.cumsum([(b & 0xC0) != 0x80 for b in text.encode("utf-8")], dtype=np.int64)
    ends, pos = [], 0
    for tok in enc.encode(text, disallowed_special=()):
        pos += len(enc.decode_single_token_bytes(tok))
        ends.append(int(leads[pos - 1]) if pos else 0)
    return ends


@PROPERTY_SETTINGS
@given(documents(), st.sampled_from([2, 7, 1 << 20]), st.data())
def test_lookups_equal_the_per_character_table(text: str, block: int, data: st.DataObject) -> None:
    # Issue 11: the per-character prefix table (4 bytes per character, 4x a 200 MB text on its
    # own) was replaced by token ends and binary search; every answer must stay the same,
    # whatever the block size of the construction.
    with small_blocks(block, block):
        index = TokenIndex(text)
    ends = _reference_ends(text)
    assert index.ends.tolist() == ends
    n = len(text)
    prefix = np.searchsorted(np.asarray(ends, dtype=np.int64), np.arange(n + 1), side="right")  # old table
    assert index.before(np.arange(n + 1)).tolist() == prefix.tolist()
    for _ in range(5):
        start = data.draw(st.integers(0, n))
        budget = data.draw(st.integers(0, 20))
        old_cut = int(np.searchsorted(prefix, prefix[int(np.searchsorted(prefix, prefix[start] + budget, "right")) - 1]))
        assert index.last_cut_within(start, budget) == (old_cut if old_cut > start else start)
        assert index.next_token_end(start) == int(np.searchsorted(prefix, prefix[start] + 1, "left"))
        assert index.first_cut_with(start, budget) == int(np.searchsorted(prefix, prefix[start] - budget, "left"))
