"""Fast token→character offset mapping over the cl100k_base tokenizer (loaded offline by
:mod:`core.tokens`, which also counts tokens).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from ragline.core.tokens import ENCODING_NAME, count_tokens, get_encoding

__all__ = ["ENCODING_NAME", "count_tokens", "get_encoding", "token_byte_lengths", "encode_with_char_offsets",
           "TokenIndex"]


@functools.lru_cache(maxsize=4)
def token_byte_lengths(name: str = ENCODING_NAME) -> np.ndarray:
    """int64 array (n_vocab,): UTF-8 byte length of every token id of the encoding."""
    enc = get_encoding(name)
    lengths = np.zeros(enc.n_vocab, dtype=np.int64)
    for tok in range(enc.n_vocab):
        try:
            lengths[tok] = len(enc.decode_single_token_bytes(tok))
        except KeyError:  # holes in the id space between ordinary and special tokens
            lengths[tok] = 0
    return lengths


@functools.lru_cache(maxsize=4)
def _token_byte_lengths_u16(name: str) -> np.ndarray:
    lengths = token_byte_lengths(name)
    if lengths.max(initial=0) > np.iinfo(np.uint16).max:
        return lengths
    return lengths.astype(np.uint16)


#: Tokens (or characters) handled per step by the blockwise loops below: bounds temporaries.
_BLOCK = 1 << 20


def _char_ends(tokens: np.ndarray, text: str, name: str) -> np.ndarray:
    """Character offset where every token of ``text`` ends (see :func:`encode_with_char_offsets`).

    Returns:
        uint32 array (n_tokens,) for texts under 2**30 characters, else int64;
        nondecreasing, ``[-1] == len(text)``.
    """
    lengths = _token_byte_lengths_u16(name)
    n = len(tokens)
    # byte offsets bound character offsets; UTF-8 takes at most 4 bytes per character
    dtype = np.uint32 if 4 * len(text) < (1 << 32) else np.int64
    ends = np.empty(n, dtype=dtype)
    carry = 0
    for b0 in range(0, n, _BLOCK):  # cumulative byte lengths, one block of tokens at a time
        block = ends[b0:b0 + _BLOCK]
        np.cumsum(lengths[tokens[b0:b0 + _BLOCK]], dtype=dtype, out=block)
        block += dtype(carry)
        carry = int(block[-1])
    if text.isascii():  # one byte per character: byte offsets are character offsets
        return ends
    # characters before byte offset b = UTF-8 lead (non-continuation) bytes before b; a bound
    # inside a character thus counts that character, i.e. rounds up to its end. Computed over
    # blocks of characters so that no per-byte table of the whole text is built.
    byte0 = 0
    for c0 in range(0, len(text), _BLOCK):
        data = np.frombuffer(text[c0:c0 + _BLOCK].encode("utf-8"), dtype=np.uint8)
        # (the query has the array's dtype: a mixed-dtype searchsorted would copy the array)
        lo, hi = np.searchsorted(ends, np.array([byte0, byte0 + len(data)], dtype=dtype), side="right")
        if hi > lo:  # token ends in (byte0, byte0 + len(data)]
            leads = np.cumsum((data & 0xC0) != 0x80, dtype=np.int32)
            ends[lo:hi] = c0 + leads[ends[lo:hi].astype(np.int64) - byte0 - 1]
        byte0 += len(data)
    return ends


def encode_with_char_offsets(text: str, name: str = ENCODING_NAME) -> tuple[np.ndarray, np.ndarray]:
    """Encode ``text`` and map every token boundary to a character offset.

    Returns:
        ``(tokens, bounds)``: ``tokens`` a uint32 array (n_tokens,) of token ids; ``bounds``
        an int64 array of shape (n_tokens + 1,): ``bounds[i]`` is the character offset where
        token ``i`` starts and ``bounds[-1] == len(text)``. A boundary that falls inside a
        multi-byte character (byte-level BPE can split one) is rounded up to the end of that
        character, so slices ``text[bounds[i]:bounds[j]]`` are always valid and contiguous
        windows stay contiguous.
    """
    tokens = get_encoding(name).encode_to_numpy(text, disallowed_special=())
    bounds = np.zeros(len(tokens) + 1, dtype=np.int64)
    bounds[1:] = _char_ends(tokens, text, name)
    return tokens, bounds


class TokenIndex:
    """Token counts of arbitrary character spans of one document, from one tokenization.

    The document is encoded once and the character offset where each token ends is kept
    (``ends``, token ends as in :func:`encode_with_char_offsets`, rounded up to character
    boundaries). The count of a span is the number of tokens that end inside it,
    :meth:`before` ``(end) - before(start)``: additive (the counts of adjacent spans sum to
    the count of their union), and the counts of a partition of the text sum to the
    document's token count. A token that straddles the span's end is attributed to the next
    span, one that straddles its start to this span. A look-up is a binary search
    (``numpy.searchsorted``), O(log n_tokens).

    Counts are measured in the *document's* tokenization: encoding a chunk's text on its
    own can differ by a token or two at its edges, because BPE merges depend on context.

    Memory: 4 bytes per token once built (``ends``); while building, the token ids as well
    (4 bytes per token) and blockwise temporaries. A 200 MB one-line English text (45 M
    tokens) peaks at about 1.8x its size (a per-character table took 4 bytes per character).

    Attributes:
        n_tokens: number of tokens of the whole document.
        n_chars: ``len(text)``.
        ends: uint32 array (n_tokens,) (int64 from 2**30 characters on), nondecreasing, of the
            character offset where each token ends; ``ends[-1] == n_chars``.
    """

    __slots__ = ("n_tokens", "n_chars", "ends", "_search", "_offset")

    def __init__(self, text: str, name: str = ENCODING_NAME) -> None:
        tokens = get_encoding(name).encode_to_numpy(text, disallowed_special=())
        self.ends: np.ndarray = _char_ends(tokens, text, name)
        del tokens
        self.n_tokens = len(self.ends)
        self.n_chars = len(text)
        self._search = self.ends.searchsorted
        # look-ups take the array's own dtype: numpy would otherwise cast the whole array to
        # the common dtype of a Python int (int64) on every call (O(n_tokens), not O(log))
        self._offset = self.ends.dtype.type

    def before(self, offsets: "int | np.ndarray | Sequence[int]") -> "int | np.ndarray":
        """Tokens that end at or before each character offset (0 <= offset <= n_chars).

        Args:
            offsets: one offset (an ``int``) or a sequence/array of them.

        Returns:
            An ``int`` for an ``int``, else an int64 array of the offsets' shape.
        """
        if isinstance(offsets, (int, np.integer)):
            return int(self._search(self._offset(offsets), "right"))
        return self._search(np.asarray(offsets, dtype=self.ends.dtype), "right").astype(np.int64)

    def count(self, start: int, end: int) -> int:
        """Tokens of the half-open character span ``[start, end)``."""
        return self.before(end) - self.before(start)  # type: ignore[operator]

    def _end_of(self, k: int) -> int:
        """Smallest offset where ``k`` tokens have ended (0 for ``k <= 0``)."""
        return int(self.ends[k - 1]) if k > 0 else 0

    def last_cut_within(self, start: int, budget: int) -> int:
        """Largest token end ``c > start`` with ``count(start, c) <= budget``, or ``start``.

        Only offsets where a token ends are returned, so a cut there does not split a token.
        """
        k = self.before(start) + budget  # at most this many tokens may have ended at the cut
        if k >= self.n_tokens:
            m = self.n_tokens
        else:  # tokens ended just before token k's end: the most reachable without it
            m = int(self._search(self.ends[k], "left"))
        c = self._end_of(m)
        return c if c > start else start

    def next_token_end(self, start: int) -> int:
        """Smallest offset ``c > start`` where at least one more token has ended
        (``n_chars + 1`` when none is left)."""
        k = self.before(start) + 1
        return self._end_of(k) if k <= self.n_tokens else self.n_chars + 1

    def first_cut_with(self, end: int, tokens: int) -> int:
        """Smallest token end ``c <= end`` with ``count(c, end) <= tokens``."""
        return self._end_of(self.before(end) - tokens)
