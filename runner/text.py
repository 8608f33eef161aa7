"""Text helpers shared by the extractive provider and the evaluation: sentences with offsets,
content terms, and lexical support of a sentence by a passage.

Content terms are lower-cased words of two or more word characters, minus English stopwords
(bm25s's NLTK-derived list), reduced with Harman's S-stemmer (Harman, "How effective is
suffixing?", JASIS 1991): ``-ies`` -> ``-y`` (not ``-eies``/``-aies``), ``-es`` -> ``-e`` (not
``-aes``/``-ees``/``-oes``), ``-s`` -> ``""`` (not ``-us``/``-ss``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bm25s.stopwords import STOPWORDS_EN

_WORD = re.compile(r"(?u)\b\w\w+\b")
_STOP = frozenset(STOPWORDS_EN) | frozenset(
    {"what", "which", "who", "whom", "how", "when", "where", "why", "does", "did", "do", "can", "could",
     "should", "would", "many", "much", "there", "their", "about", "i", "my", "me", "you", "your", "its"}
)
# a sentence ends at . ! ? (optionally followed by closing quotes/brackets) before whitespace,
# or at a line break; blank lines always end one.
_BOUNDARY = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+|\n+")
_MARKER = re.compile(r"\s*\[(\d+(?:\s*,\s*\d+)*)\]")


@dataclass(frozen=True, slots=True)
class Sentence:
    """A sentence of a text.

    Attributes:
        text: the sentence, stripped.
        start, end: half-open character offsets of ``text`` in the source text.
    """

    text: str
    start: int
    end: int


def split_sentences(text: str) -> list[Sentence]:
    """Split ``text`` into sentences at ``.!?`` + whitespace and at line breaks.

    Returns:
        Non-empty sentences in order; ``text[s.start:s.end] == s.text`` for each.
    """
    out: list[Sentence] = []
    pos = 0
    for m in _BOUNDARY.finditer(text):
        _add(text, pos, m.start() if m.group(0).startswith("\n") else m.end(), out)
        pos = m.end()
    _add(text, pos, len(text), out)
    return out


def _add(text: str, start: int, end: int, out: list[Sentence]) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return
    lead = len(piece) - len(piece.lstrip())
    s = start + lead
    out.append(Sentence(stripped, s, s + len(stripped)))


def s_stem(word: str) -> str:
    """Harman's S-stemmer (JASIS 1991) on one lower-case word."""
    if len(word) > 3 and word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if len(word) > 2 and word.endswith("s") and not word.endswith(("us", "ss")):
        return word[:-1]
    return word


def terms(text: str) -> list[str]:
    """Content terms of ``text`` in order (lower-cased, stopwords removed, S-stemmed)."""
    return [s_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP]


def strip_markers(text: str) -> str:
    """``text`` without citation markers like ``[1]`` or ``[1, 2]``."""
    return _MARKER.sub("", text).strip()


def markers(text: str) -> list[int]:
    """Citation numbers in ``text`` (``[2]`` and ``[1, 3]`` give 2, 1, 3), in order."""
    return [int(n) for m in _MARKER.finditer(text) for n in m.group(1).split(",")]


def support(sentence: str, passage_terms: set[str]) -> float:
    """Share of the sentence's distinct content terms found in a passage (1.0 for a sentence without any)."""
    st = set(terms(strip_markers(sentence)))
    if not st:
        return 1.0
    return len(st & passage_terms) / len(st)


def answer_sentences(answer: str) -> list[str]:
    """Sentences of an answer with their citation markers kept, for coverage/groundedness.

    Markers that follow a sentence's final punctuation (``"... colony. [1]"``) stay with that
    sentence, and a marker followed by a capitalized word ends a sentence even without
    punctuation (``"... the alcohol wash: [1] The mite ..."``).
    """
    out: list[str] = []
    pieces = []
    for s in split_sentences(answer):
        # a marker followed by a capitalized word also ends a sentence ("... wash: [1] The mite ...")
        pos = 0
        for m in _MARKER_THEN_CAPITAL.finditer(s.text):
            pieces.append(s.text[pos:m.end(1)].strip())
            pos = m.end(1)
        pieces.append(s.text[pos:].strip())
    for text in pieces:
        lead = _LEADING_MARKERS.match(text)
        if out and lead:
            out[-1] = out[-1] + " " + lead.group(0).strip()
            text = text[lead.end():].strip()
        if text:
            out.append(text)
    return out


_LEADING_MARKERS = re.compile(r"^(?:\s*\[\d+(?:\s*,\s*\d+)*\])+")
_MARKER_THEN_CAPITAL = re.compile(r"(\[\d+(?:\s*,\s*\d+)*\])\s+(?=[A-Z])")
