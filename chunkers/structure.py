"""Chunks that follow the document's structure: sections, titles, tables."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Sequence

from ragline.chunkers import _validate as v
from ragline.chunkers.base import Chunk, ElementSpan, SpanChunker, iter_chunks, table_rows
from ragline.chunkers.recursive import recursive_spans
from ragline.chunkers.segment import KeepTogether, Span, strip_span
from ragline.chunkers.tokenizer import ENCODING_NAME, TokenIndex

#: Element types that open a new chunk (unstructured's category for headings).
TITLE_TYPES = frozenset({"Title"})
#: Type given to text that no element covers, and to fallback paragraphs.
GAP_TYPE = "UncategorizedText"
PARAGRAPH_TYPE = "NarrativeText"

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_MARKDOWN_HEADING = re.compile(r"#{1,6}[ \t]")


@dataclass(frozen=True, slots=True)
class StructureChunkerConfig:
    """Configuration of :class:`StructureChunker`.

    Attributes:
        max_tokens: hard budget of every chunk in cl100k_base tokens (> 0).
        min_tokens: a chunk shorter than this (tokens) is not closed at a section boundary
            but takes in the next section too, while the result fits ``max_tokens``
            (0 <= min_tokens <= max_tokens; 0 never merges sections).
        encoding: tiktoken encoding name.
    """

    max_tokens: int = 256
    min_tokens: int = 32
    encoding: str = ENCODING_NAME

    def __post_init__(self) -> None:
        v.positive_int("max_tokens", self.max_tokens)
        v.non_negative_int("min_tokens", self.min_tokens)
        v.at_most("min_tokens", self.min_tokens, "max_tokens", self.max_tokens)
        v.encoding_name("encoding", self.encoding)


class StructureChunker(SpanChunker):
    """Pack whole document elements into chunks that stay inside one section.

    Walks the elements in order (see :func:`normalize_elements`) and packs them greedily
    up to ``max_tokens`` tokens. A chunk is closed at a section boundary, i.e. at a
    ``Title`` element or where ``section_path`` changes, unless it is still shorter than
    ``min_tokens`` (small consecutive sections merge) or holds only titles (a heading stays
    with its body). Elements are never split (a ``Table`` included) unless one alone
    exceeds ``max_tokens``; then it is split on its own with the recursive strategy (rows,
    i.e. lines, before sentences and words), an open heading joining its first piece when
    they fit together. Each chunk carries the page and section path
    of its first element. ``token_count`` is measured in the document's tokenization
    (:class:`chunkers.tokenizer.TokenIndex`).

    Without elements, paragraphs separated by blank lines are the elements, and a
    paragraph that starts with a Markdown heading (``#`` to ``######``) is a title.

    Source: unstructured's ``chunk_by_title`` (sections opened by titles, small sections
    combined under ``combine_text_under_n_chars``, ``max_characters`` as the hard
    maximum), with sizes in tokens instead of characters; unlike it, a table that fits may
    share a chunk with the text of its section.
    """

    name = "structure"
    #: 2: rows of a split table are kept whole under every level; splits end at word ends.
    version = 2

    config_class = StructureChunkerConfig

    def chunk_iter(
        self, text: str, *, doc_id: str = "", elements: Sequence[ElementSpan] | None = None
    ) -> Iterator[Chunk]:
        """Chunk one document's normalized text along its elements, one chunk at a time
        (:meth:`chunk` gives the list; boundaries and errors come at this call).

        Args:
            text: the document's normalized text.
            doc_id: id of the document (part of every chunk id).
            elements: the document's element spans (offsets into ``text``); ``None`` or
                empty falls back to blank-line-separated paragraphs.

        Returns:
            Chunks in document order, each at most ``max_tokens`` tokens unless flagged
            ``oversized``; empty for empty or whitespace-only text.

        Raises:
            ValueError: if an element's offsets fall outside ``text``.
        """
        units = normalize_elements(text, elements) if elements else paragraph_elements(text)
        spans = self.spans(text, units, keep=table_rows(text, elements))
        return iter_chunks(text, spans, doc_id=doc_id, fingerprint=self.fingerprint, elements=units)

    def spans(  # type: ignore[override]
        self, text: str, units: Sequence[ElementSpan], *, keep: Sequence[tuple[int, int]] = ()
    ) -> list[Span]:
        """``(char_start, char_end, token_count, oversized)`` of every chunk, in order.

        Args:
            text: the document text.
            units: sorted, non-overlapping, trimmed elements (:func:`normalize_elements`).
            keep: spans no boundary may cut when they fit the budget (table rows, see
                :func:`chunkers.base.table_rows`); they matter only inside an element
                split for being over the budget.
        """
        if not units:
            return []
        budget, min_tokens = self.config.max_tokens, self.config.min_tokens
        index = TokenIndex(text, self.config.encoding)
        kept = KeepTogether(keep, index, budget)
        pre_start = index.before([u.char_start for u in units]).tolist()  # tokens ended before each element
        pre_end = index.before([u.char_end for u in units]).tolist()  # ... and at its end
        out: list[Span] = []
        start = -1  # start offset of the open chunk, -1 when none is open
        p_start = 0  # tokens before start
        last = 0  # index of the last element of the open chunk
        only_titles = True  # the open chunk holds only titles so far

        def close() -> None:
            nonlocal start
            if start >= 0:
                out.append((start, units[last].char_end, pre_end[last] - p_start, False))
            start = -1

        for k, u in enumerate(units):
            is_title = u.type in TITLE_TYPES
            if pre_end[k] - pre_start[k] > budget:  # alone over budget
                pieces = recursive_spans(text, index, u.char_start, u.char_end, max_tokens=budget, keep=kept)
                if start >= 0 and only_titles and pieces and not pieces[0][3]:
                    # Keep the open heading(s) with the first piece when they fit together.
                    first_end = pieces[0][1]
                    merged = index.before(first_end) - p_start
                    if merged <= budget:
                        pieces[0] = (start, first_end, merged, False)
                        start = -1
                close()
                out.extend(pieces)
                continue
            if start >= 0:
                boundary = is_title or u.section_path != units[last].section_path
                if pre_end[k] - p_start > budget or (
                    boundary
                    and not only_titles
                    and pre_end[last] - p_start >= min_tokens
                ):
                    close()
            if start < 0:
                start, p_start, only_titles = u.char_start, pre_start[k], True
            last = k
            only_titles = only_titles and is_title
        close()
        return out


def normalize_elements(text: str, elements: Sequence[ElementSpan]) -> list[ElementSpan]:
    """Sorted, non-overlapping, whitespace-trimmed elements that cover all non-blank text.

    Elements are sorted by start; an element overlapping its predecessor is clipped to
    start where the predecessor ends (one nested inside it is dropped). Text that no
    element covers and that is not whitespace becomes an element of type
    ``"UncategorizedText"`` with the page and section path of the element before it, so
    no text is lost. Whitespace-only elements are dropped.

    Raises:
        ValueError: if an element's offsets fall outside ``text`` or end before they start.
    """
    n = len(text)
    out: list[ElementSpan] = []
    prev_end = 0
    prev: ElementSpan | None = None
    for el in sorted(elements, key=lambda e: (e.char_start, e.char_end)):
        if not (0 <= el.char_start <= el.char_end <= n):
            raise ValueError(
                f"element {el.type} span ({el.char_start}, {el.char_end}) is outside the text "
                f"of length {n}; the loader must give offsets into the normalized text"
            )
        _add_gap(text, prev_end, el.char_start, prev, out)
        s, e = strip_span(text, max(el.char_start, prev_end), el.char_end)
        if s < e:
            out.append(ElementSpan(el.type, s, e, el.page, tuple(el.section_path)))
        prev_end = max(prev_end, el.char_end)
        prev = el
    _add_gap(text, prev_end, n, prev, out)
    return out


def _add_gap(text: str, start: int, end: int, prev: ElementSpan | None, out: list[ElementSpan]) -> None:
    s, e = strip_span(text, start, end)
    if s < e:
        page, section = (prev.page, tuple(prev.section_path)) if prev is not None else (None, ())
        out.append(ElementSpan(GAP_TYPE, s, e, page, section))


def paragraph_elements(text: str) -> list[ElementSpan]:
    """Fallback elements: blank-line-separated paragraphs, Markdown headings as titles.

    Returns:
        Trimmed, non-empty paragraphs of type ``"NarrativeText"``, or ``"Title"`` when the
        paragraph starts with ``#`` .. ``######`` and a space; no page, no section path.
    """
    out: list[ElementSpan] = []
    cur = 0
    for m in _PARAGRAPH_BREAK.finditer(text):
        _add_paragraph(text, cur, m.start(), out)
        cur = m.end()
    _add_paragraph(text, cur, len(text), out)
    return out


def _add_paragraph(text: str, start: int, end: int, out: list[ElementSpan]) -> None:
    s, e = strip_span(text, start, end)
    if s < e:
        kind = "Title" if _MARKDOWN_HEADING.match(text, s, e) else PARAGRAPH_TYPE
        out.append(ElementSpan(kind, s, e))
