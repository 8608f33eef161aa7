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


#: Characters handled per step by :func:`word_runs` and :func:`token_windows`: the bound of
#: their temporaries (about 12 bytes per character of a block), whatever the text's length.
BLOCK_CHARS = 1 << 20
_SPACE = re.compile(r"\s")


def word_runs(text: str, start: int = 0, end: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Maximal runs of non-whitespace characters of ``text[start:end]`` (what ``\\S+`` matches).

    Computed over blocks of :data:`BLOCK_CHARS` characters (a run across a block edge is
    joined), so the temporaries do not grow with the text; the output takes 16 bytes per run.

    Returns:
        ``(starts, ends)``: int64 arrays (n_runs,) of half-open character offsets into ``text``.
    """
    end = len(text) if end is None else end
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    for b0 in range(start, end, BLOCK_CHARS):
        s, e = _word_runs_block(text, b0, min(b0 + BLOCK_CHARS, end))
        if not len(s):
            continue
        if ends and ends[-1][-1] == b0 and s[0] == b0:  # one run across the block edge
            ends[-1][-1] = e[0]
            s, e = s[1:], e[1:]
        if len(s):
            starts.append(s)
            ends.append(e)
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(starts) == 1:
        return starts[0], ends[0]
    return np.concatenate(starts), np.concatenate(ends)


def _word_runs_block(text: str, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
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
        starts = np.asarray(self.starts, dtype=np.int64)
        edges_all = np.sort(np.concatenate([starts, np.asarray(self.ends, dtype=np.int64)]))
        if not (np.searchsorted(edges_all, re_, "left") > np.searchsorted(edges_all, rs, "right")).any():
            # no kept span's edge falls inside a word (the usual case): each word is one piece,
            # and consecutive words inside the same kept span join into one unit, as below
            k = np.searchsorted(starts, rs, "right") - 1
            inside = (k >= 0) & (re_ <= np.asarray(self.ends, dtype=np.int64)[np.maximum(k, 0)])
            k = np.where(inside, k, -1)
            first = np.ones(len(rs), dtype=bool)
            first[1:] = ~((k[1:] >= 0) & (k[1:] == k[:-1]))
            at = np.flatnonzero(first)
            return rs[at], re_[np.append(at[1:] - 1, len(rs) - 1)] if len(rs) else re_
        return self._split_units(rs, re_)

    def _split_units(self, rs: np.ndarray, re_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`units` word by word: words cut at the kept spans' edges inside them, pieces
        inside one kept span joined (also the reference the vectorized path is tested against)."""
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

    Memory: the units are read a block at a time (:class:`_UnitStream`), so a window pass
    over a huge text holds about one block's units, not the whole text's.

    Returns:
        Trimmed, non-empty ``(char_start, char_end, token_count, oversized)`` spans in
        order; ``oversized`` only for one character that needs more than ``max_tokens``
        tokens.
    """
    units = _UnitStream(text, index, start, end, keep)
    units.extend(0)
    if not len(units.us):
        return []
    before = index.before
    budget, overlap = max_tokens, overlap_tokens
    out: list[Span] = []

    def emit(s: int, e: int, count: int) -> None:
        out.append((s, e, count, count > budget))

    i, a, pa = 0, int(units.us[0]), int(units.ps[0])  # pa: tokens ended before a
    while True:
        target = pa + budget
        while True:  # the last unit that fits from a; the buffer grows while it may hold more
            j = int(np.searchsorted(units.pe, target, side="right")) - 1
            if j < len(units.us) - 1 or units.exhausted:
                break
            units.extend(i)
            i, j = 0, j - i
        n = len(units.us)
        if j >= i:  # units i..j fit from a
            emit(a, int(units.ue[j]), int(units.pe[j]) - pa)
            if j == n - 1:
                return out
            nxt = j + 1
            if overlap:
                threshold = max(int(units.pe[j]) - overlap, int(units.pe[j + 1]) - budget)
                nxt = min(max(int(np.searchsorted(units.ps, threshold, side="left")), i + 1), j + 1)
            i, a, pa = nxt, int(units.us[nxt]), int(units.ps[nxt])
            continue
        # Unit i alone (from a) exceeds the budget: cut it at token ends.
        end_i = int(units.ue[i])
        c = index.last_cut_within(a, budget)
        if c <= a:  # one character needs more tokens than the budget: indivisible
            c = min(index.next_token_end(a), end_i)
        emit(a, c, before(c) - pa)
        if c >= end_i:
            if i == n - 1:
                units.extend(n)
                if not len(units.us):
                    return out
                i = -1
            i += 1
            a, pa = int(units.us[i]), int(units.ps[i])
            continue
        nxt = index.first_cut_with(c, overlap) if overlap else c
        a = nxt if nxt > a else c
        pa = before(a)


class _UnitStream:
    """The units of ``text[start:end]`` (:meth:`KeepTogether.units`) and the tokens ended
    before each unit's start (``ps``) and end (``pe``), produced a block of about
    :data:`BLOCK_CHARS` characters at a time so that memory stays bounded on a huge text.

    A block ends where no unit can cross: next to whitespace and not inside a kept span, so
    the units of consecutive blocks are exactly those of the whole range.
    """

    __slots__ = ("text", "index", "keep", "pos", "end", "us", "ue", "ps", "pe")

    def __init__(self, text: str, index: TokenIndex, start: int, end: int, keep: KeepTogether) -> None:
        self.text, self.index, self.keep, self.pos, self.end = text, index, keep, start, end
        self.us = self.ue = self.ps = self.pe = np.zeros(0, np.int64)

    @property
    def exhausted(self) -> bool:
        """True when every unit of the range is in the buffer (or was dropped from it)."""
        return self.pos >= self.end

    def extend(self, drop: int) -> None:
        """Drop the first ``drop`` units of the buffer and append the units of the next
        blocks, at least one unless the range is exhausted."""
        self.us, self.ue, self.ps, self.pe = self.us[drop:], self.ue[drop:], self.ps[drop:], self.pe[drop:]
        while self.pos < self.end:
            s = self.pos
            self.pos = self._block_end(s)
            us, ue = self.keep.units(self.text, s, self.pos)
            if len(us):
                before = self.index.before
                self.us, self.ue = np.concatenate((self.us, us)), np.concatenate((self.ue, ue))
                self.ps = np.concatenate((self.ps, before(us)))
                self.pe = np.concatenate((self.pe, before(ue)))
                return

    def _block_end(self, start: int) -> int:
        text, keep, end = self.text, self.keep, self.end
        e = start + BLOCK_CHARS
        while e < end:
            if not text[e - 1].isspace() and not text[e].isspace():  # inside a word: to its end
                m = _SPACE.search(text, e, end)
                e = m.start() if m else end
                continue
            k = keep._at(e) if keep else -1
            if k < 0:
                return e
            e = keep.ends[k]  # inside a kept span: to its end
        return end
