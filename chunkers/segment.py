"""Offset-preserving text segmentation shared by the strategies.

Sentences, trimming, the spans a chunk boundary must not cut (:class:`KeepTogether`: the
rows of tables) and token windows that end at word boundaries (:func:`token_windows`).

Everything here returns half-open character offsets into the text it was given, computed
while scanning (never recovered with ``str.find``). "Whitespace" is what ``str.isspace``
says, which is also what the regex class ``\\s`` matches on ``str`` patterns (it includes
the control characters U+001C..U+001F). A "word" is a maximal run of non-whitespace
characters.
"""

from __future__ import annotations

import bisect
import re
from typing import Iterable, Sequence

import numpy as np

from ragline.chunkers.tokenizer import TokenIndex

#: A span as :func:`chunkers.base.make_chunks` takes it:
#: ``(char_start, char_end, token_count, oversized)``.
Span = tuple[int, int, int, bool]

# Terminal punctuation followed by whitespace (or the end of the text); closing quotes and
# brackets stay with the sentence. CJK full stops end a sentence without a following space.
# A line break always ends a sentence (headings, list items, table rows rarely end in a stop).
_SENTENCE_BOUNDARY = re.compile(
    # The leading lookahead lets the regex engine skip quickly to candidate characters.
    r"""(?=[.!?\u2026\u203c\u2047-\u2049\u3002\uff01\uff1f\uff61\n])"""
    r"""(?:(?P<stop>[.!?\u2026\u203c\u2047-\u2049]+[\"'\u201d\u2019\u00bb)\]]*)(?=\s|\Z)"""
    r"""|(?P<cjk>[\u3002\uff01\uff1f\uff61]+[\u300d\u300f\u201d\u2019)\uff09]*)"""
    r"""|(?P<newline>\n))"""
)
# The word right before a period, to recognize abbreviations ("Dr.") and initials ("J.").
_WORD_BEFORE = re.compile(r"(?:\w+\.)*\w+\Z")
_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st mt vs al e.g i.e cf fig figs eq no nos vol pp
    approx dept est inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec
    u.s u.k a.m p.m ph.d""".split()
)


def strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink ``[start, end)`` to exclude leading and trailing whitespace.

    Returns:
        ``(start', end')`` with ``start <= start' <= end' <= end``; ``start' == end'`` when
        the span is whitespace-only.
    """
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Split ``text[start:end]`` into sentences with a rule-based (regex) splitter.

    A sentence ends after terminal punctuation (``. ! ? …`` plus closing quotes/brackets)
    followed by whitespace, after a CJK full stop (``。！？``), or at a line break. A period
    after a common abbreviation (``Dr.``, ``e.g.``, ``U.S.``) or a single-letter initial
    (``J.``) does not end a sentence. No model is used (no spaCy, no NLTK): the splitter is
    deterministic and fast, and it makes the usual mistakes of rule-based splitters (an
    abbreviation missing from the list, "D.C." in mid-sentence); compare the
    delimiter rules of Chonkie's ``SentenceChunker``.

    Args:
        text: the document text.
        start: first character offset to consider.
        end: end offset (exclusive); defaults to ``len(text)``.

    Returns:
        Sentence spans ``(char_start, char_end)`` in order, each trimmed of surrounding
        whitespace and non-empty; the text between consecutive spans is whitespace only.
        Empty for whitespace-only input.
    """
    if end is None:
        end = len(text)
    spans: list[tuple[int, int]] = []
    cur = start
    for m in _SENTENCE_BOUNDARY.finditer(text, start, end):
        if m.lastgroup == "newline":
            cut = m.start()
        else:
            cut = m.end()
            period = m.start()
            if m.lastgroup == "stop" and m.group() == "." and _is_abbreviation(text, max(cur, period - 12), period):
                continue
        s, e = strip_span(text, cur, cut)
        if s < e:
            spans.append((s, e))
        cur = cut
    s, e = strip_span(text, cur, end)
    if s < e:
        spans.append((s, e))
    return spans


def _is_abbreviation(text: str, lo: int, period: int) -> bool:
    m = _WORD_BEFORE.search(text, lo, period)
    if m is None:
        return False
    word = m.group()
    if len(word) == 1:
        return word.isalpha() and word.isupper()  # an initial: "J. Smith"
    return word.lower() in _ABBREVIATIONS


# --------------------------------------------------------------------- keeping spans whole
#: Every code point is at most this for which ``str.isspace`` is true (U+3000 is the last;
#: tests/chunkers/test_segment.py checks the whole range).
WHITESPACE_MAX = 0x3000
_WHITESPACE = np.zeros(WHITESPACE_MAX + 1, dtype=bool)
_WHITESPACE[[c for c in range(WHITESPACE_MAX + 1) if chr(c).isspace()]] = True


def word_runs(text: str, start: int = 0, end: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Maximal runs of non-whitespace characters of ``text[start:end]`` (what ``\\S+`` matches).

    Returns:
        ``(starts, ends)``: int64 arrays (n_runs,) of half-open character offsets into ``text``.
    """
    end = len(text) if end is None else end
    if end <= start:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cp = np.frombuffer(text[start:end].encode("utf-32-le"), dtype=np.uint32)
    word = np.ones(len(cp) + 2, dtype=bool)  # padded with whitespace on both sides
    word[0] = word[-1] = False
    low = cp <= WHITESPACE_MAX
    inner = word[1:-1]
    inner[low] = ~_WHITESPACE[cp[low]]
    edges = np.flatnonzero(word[1:] != word[:-1])  # alternating run starts and ends
    return edges[0::2].astype(np.int64) + start, edges[1::2].astype(np.int64) + start


class KeepTogether:
    """Spans of a document that no chunk boundary may fall inside (the rows of its tables).

    Built from candidate spans (:func:`chunkers.base.table_rows`), keeping those that fit
    the budget: a span of more than ``max_tokens`` tokens cannot lie in one chunk, so it
    is split like any other text. A boundary at a span's start or end is allowed; one
    strictly inside it is not.

    Args:
        spans: candidate ``(char_start, char_end)`` spans, trimmed and disjoint.
        index: token index of the document (to count each span's tokens).
        max_tokens: the chunker's budget (tokens).
    """

    __slots__ = ("starts", "ends")

    def __init__(
        self, spans: Iterable[tuple[int, int]] = (), index: TokenIndex | None = None, max_tokens: int | None = None
    ) -> None:
        kept: list[tuple[int, int]] = []
        for s, e in sorted(spans):
            if e - s < 2 or (index is not None and max_tokens is not None and index.count(s, e) > max_tokens):
                continue  # nothing fits strictly inside one character; too long for one chunk
            if kept and s < kept[-1][1]:
                continue  # overlapping candidates: the first one wins
            kept.append((s, e))
        self.starts = [s for s, _ in kept]
        self.ends = [e for _, e in kept]

    def __bool__(self) -> bool:
        return bool(self.starts)

    def __len__(self) -> int:
        return len(self.starts)

    def _at(self, pos: int) -> int:
        """Index of the kept span with ``start < pos < end``, or -1."""
        k = bisect.bisect_left(self.starts, pos) - 1
        return k if k >= 0 and pos < self.ends[k] else -1

    def inside(self, pos: int) -> bool:
        """True when a boundary at ``pos`` would cut a kept span."""
        return bool(self.starts) and self._at(pos) >= 0

    def allowed(self, cuts: Sequence[int]) -> list[int]:
        """The cut offsets that do not fall inside a kept span (order preserved)."""
        if not self.starts:
            return list(cuts)
        return [c for c in cuts if self._at(c) < 0]

    def merge(self, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """Join consecutive spans (e.g. sentences) where the boundary between them would cut a
        kept span; spans must be sorted, disjoint and trimmed."""
        if not self.starts:
            return list(spans)
        out: list[tuple[int, int]] = []
        for s, e in spans:
            if out and (self._at(out[-1][1]) >= 0 or self._at(s) >= 0):
                out[-1] = (out[-1][0], e)
            else:
                out.append((s, e))
        return out

    def units(self, text: str, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """The indivisible units of ``text[start:end]`` for token windows, in order.

        Words (runs of non-whitespace, :func:`word_runs`), where every kept span is one
        unit; a word that crosses a kept span's edge is split there. Units are trimmed,
        disjoint and cover every non-whitespace character of the range.

        Returns:
            ``(starts, ends)``: int64 arrays (n_units,) of character offsets.
        """
        rs, re_ = word_runs(text, start, end)
        if not self.starts:
            return rs, re_
        out: list[tuple[int, int]] = []
        last_k = -2  # kept span the last unit lies in (-1: none)
        for s, e in zip(rs.tolist(), re_.tolist()):
            lo = bisect.bisect_right(self.starts, s)
            hi = bisect.bisect_left(self.starts, e)
            edges = sorted({p for k in range(max(lo - 1, 0), hi) for p in (self.starts[k], self.ends[k]) if s < p < e})
            for a, b in zip([s, *edges], [*edges, e]):
                k = self._containing(a, b)
                if k >= 0 and k == last_k:
                    out[-1] = (out[-1][0], b)
                else:
                    out.append((a, b))
                last_k = k
        return (np.asarray([u[0] for u in out], dtype=np.int64), np.asarray([u[1] for u in out], dtype=np.int64))

    def _containing(self, a: int, b: int) -> int:
        k = bisect.bisect_right(self.starts, a) - 1
        return k if k >= 0 and b <= self.ends[k] else -1


#: No span kept whole (plain text).
NO_KEEP = KeepTogether()


def token_windows(
    text: str,
    index: TokenIndex,
    start: int,
    end: int,
    *,
    max_tokens: int,
    overlap_tokens: int = 0,
    keep: KeepTogether = NO_KEEP,
) -> list[Span]:
    """Windows of at most ``max_tokens`` tokens over ``text[start:end]`` that end at word ends.

    Whole words (and kept spans, see :meth:`KeepTogether.units`) are packed greedily, so a
    window never starts or ends inside a word: the cut lands on the last whitespace before
    the token budget runs out (usually within a token or two of it). Only a word that
    alone exceeds the budget is cut inside, at token ends; its last piece continues with
    the words after it. With ``overlap_tokens``, the next window starts at the first word
    of the previous window such that at most ``overlap_tokens`` tokens are repeated and the
    next word still fits (so it may repeat fewer, or none).

    Args:
        text: the whole document text (offsets are into it).
        index: token index of ``text``; counts are in the document's tokenization.
        start: start offset (characters) of the range.
        end: end offset (characters, exclusive).
        max_tokens: budget per window (tokens, > 0).
        overlap_tokens: at most this many tokens shared by consecutive windows (>= 0).
        keep: spans no window boundary may cut.

    Returns:
        Trimmed, non-empty ``(char_start, char_end, token_count, oversized)`` spans in
        order; ``oversized`` only for one character that needs more than ``max_tokens``
        tokens.
    """
    us, ue = keep.units(text, start, end)
    if len(us) == 0:
        return []
    prefix = index.prefix
    p_start = prefix[us].astype(np.int64)
    p_end = prefix[ue].astype(np.int64)
    budget, overlap, n = max_tokens, overlap_tokens, len(us)
    out: list[Span] = []

    def emit(s: int, e: int) -> None:
        count = int(prefix[e] - prefix[s])
        out.append((s, e, count, count > budget))

    i, a = 0, int(us[0])
    while True:
        j = int(np.searchsorted(p_end, int(prefix[a]) + budget, side="right")) - 1
        if j >= i:  # units i..j fit from a
            emit(a, int(ue[j]))
            if j == n - 1:
                return out
            nxt = j + 1
            if overlap:
                threshold = max(int(p_end[j]) - overlap, int(p_end[j + 1]) - budget)
                nxt = min(max(int(np.searchsorted(p_start, threshold, side="left")), i + 1), j + 1)
            i, a = nxt, int(us[nxt])
            continue
        # Unit i alone (from a) exceeds the budget: cut it at token ends.
        c = index.last_cut_within(a, budget)
        if c <= a:  # one character needs more tokens than the budget: indivisible
            c = min(index.next_token_end(a), int(ue[i]))
        emit(a, c)
        if c >= ue[i]:
            if i == n - 1:
                return out
            i, a = i + 1, int(us[i + 1])
            continue
        nxt = index.first_cut_with(c, overlap) if overlap else c
        a = nxt if nxt > a else c
