"""Offset-preserving text segmentation shared by the strategies: sentences and trimming.

Everything here returns half-open character offsets into the text it was given, computed
while scanning (never recovered with ``str.find``). "Whitespace" is what ``str.isspace``
says, which is also what the regex class ``\\s`` matches on ``str`` patterns (it includes
the control characters U+001C..U+001F).
"""

from __future__ import annotations

import re

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
