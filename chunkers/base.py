"""The chunk record, the chunker contract and the helpers every strategy shares.

A chunker turns one document's normalized text into an ordered list of :class:`Chunk`
records whose half-open character offsets are computed while splitting (never recovered
with ``str.find``), so that ``chunk.text == text[chunk.char_start:chunk.char_end]`` always
holds. Chunk ids are content-addressed: ``sha256(doc_id, char_start, char_end,
chunker fingerprint)``, so the same document chunked with the same configuration yields
the same ids on every run and on every code path.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from dataclasses import asdict
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np


from ragline.core.errors import ConfigError  # noqa: E402,F401  (re-exported)
from ragline.core.records import Chunk, ElementSpan  # noqa: E402,F401  (re-exported)


@runtime_checkable
class Tokenizer(Protocol):
    """Anything that can count and encode tokens (tiktoken ``Encoding`` satisfies it)."""

    def encode(self, text: str, **kwargs: Any) -> list[int]: ...

    def decode_single_token_bytes(self, token: int) -> bytes: ...


#: An embedder callable for semantic chunking: list of n strings -> float32 array (n, dim).
EmbedFn = Callable[[Sequence[str]], np.ndarray]


@runtime_checkable
class Chunker(Protocol):
    """The chunker contract: one small method over one document, ``chunk``, and its lazy
    form ``chunk_iter`` (chunks made as they are consumed; :class:`SpanChunker` gives both).

    ``name`` and ``version`` identify the strategy; ``fingerprint`` hashes them with the
    configuration so that ids and caches change whenever the output could change.
    """

    name: str
    version: int

    @property
    def fingerprint(self) -> str: ...

    def chunk(
        self, text: str, *, doc_id: str = "", elements: Sequence[ElementSpan] | None = None
    ) -> list[Chunk]: ...

    def chunk_iter(
        self, text: str, *, doc_id: str = "", elements: Sequence[ElementSpan] | None = None
    ) -> Iterator[Chunk]: ...


def fingerprint_of(name: str, version: int, config: Any) -> str:
    """Return a 16-hex-char fingerprint of a strategy name, version and config.

    Args:
        name: strategy name, e.g. ``"token"``.
        version: integer version of the strategy's algorithm; bump it when output changes.
        config: a dataclass instance or a JSON-serializable mapping.
    """
    payload = asdict(config) if hasattr(config, "__dataclass_fields__") else dict(config)
    blob = json.dumps({"name": name, "version": version, "config": payload}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def make_chunk_id(doc_id: str, char_start: int, char_end: int, fingerprint: str) -> str:
    """Content-addressed chunk id: 32 hex chars of sha256 over (doc_id, offsets, fingerprint)."""
    blob = f"{doc_id}\x1f{char_start}\x1f{char_end}\x1f{fingerprint}".encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:32]


def _locate(
    starts: list[int], elements: Sequence[ElementSpan], char_start: int
) -> tuple[int | None, tuple[str, ...]]:
    e = elements[max(bisect.bisect_right(starts, char_start) - 1, 0)]
    return e.page, e.section_path


#: The element type whose rows (lines) are kept whole (unstructured's category for tables).
TABLE_TYPE = "Table"
_LINE = re.compile(r"[^\n]+")


def table_rows(text: str, elements: Sequence[ElementSpan] | None) -> list[tuple[int, int]]:
    """The rows of the document's tables: trimmed, non-empty lines of every ``Table`` element.

    Every strategy keeps a row that fits its budget inside one chunk
    (:class:`chunkers.segment.KeepTogether`); loaders emit CSV, TSV and spreadsheet tables
    as ``Table`` elements with one row per line. Elements are read as
    :func:`chunkers.structure.normalize_elements` reads them: sorted by start, an element
    overlapping its predecessor clipped to start where the predecessor ends, and offsets
    clamped to the text.

    Args:
        text: the document's normalized text.
        elements: its element spans, or ``None``.

    Returns:
        Sorted, disjoint ``(char_start, char_end)`` row spans (empty without tables).
    """
    rows: list[tuple[int, int]] = []
    if not elements:
        return rows
    n = len(text)
    prev_end = 0
    for el in sorted(elements, key=lambda e: (e.char_start, e.char_end)):
        start, end = max(el.char_start, prev_end, 0), min(el.char_end, n)
        prev_end = max(prev_end, el.char_end)
        if el.type != TABLE_TYPE or start >= end:
            continue
        for m in _LINE.finditer(text, start, end):
            s, e = m.span()
            while s < e and text[s].isspace():
                s += 1
            while e > s and text[e - 1].isspace():
                e -= 1
            if s < e:
                rows.append((s, e))
    return rows


def make_chunks(
    text: str,
    spans: Sequence[tuple[int, int, int] | tuple[int, int, int, bool]],
    *,
    doc_id: str,
    fingerprint: str,
    elements: Sequence[ElementSpan] | None = None,
) -> list[Chunk]:
    """Build :class:`Chunk` records from ``(char_start, char_end, token_count[, oversized])`` spans.

    Pages and section paths come from ``elements`` (the element the chunk starts in).

    Raises:
        ValueError: if a span is out of range or empty.
    """
    return list(iter_chunks(text, spans, doc_id=doc_id, fingerprint=fingerprint, elements=elements))


def iter_chunks(
    text: str,
    spans: Sequence[tuple[int, int, int] | tuple[int, int, int, bool]],
    *,
    doc_id: str,
    fingerprint: str,
    elements: Sequence[ElementSpan] | None = None,
) -> Iterator[Chunk]:
    """:func:`make_chunks`, one chunk at a time: every span is checked when this is called,
    and each :class:`Chunk` (with its text, a copy of the slice) is made when it is consumed,
    so a consumer that keeps only a batch holds a batch of chunk texts, not the document's.

    Raises:
        ValueError: if a span is out of range or empty (raised by this call, before any chunk).
    """
    n = len(text)
    for span in spans:
        if not (0 <= span[0] < span[1] <= n):
            raise ValueError(f"chunk span ({span[0]}, {span[1]}) is outside the text of length {n} (doc {doc_id!r})")
    return _chunks(text, spans, doc_id, fingerprint, elements)


def _chunks(
    text: str,
    spans: Sequence[tuple[int, int, int] | tuple[int, int, int, bool]],
    doc_id: str,
    fingerprint: str,
    elements: Sequence[ElementSpan] | None,
) -> Iterator[Chunk]:
    starts = [e.char_start for e in elements] if elements else []
    for span in spans:
        s, e, tok = span[0], span[1], span[2]
        oversized = bool(span[3]) if len(span) > 3 else False
        page: int | None = None
        section: tuple[str, ...] = ()
        if starts:
            page, section = _locate(starts, elements, s)  # type: ignore[arg-type]
        yield Chunk(
            chunk_id=make_chunk_id(doc_id, s, e, fingerprint),
            doc_id=doc_id,
            char_start=s,
            char_end=e,
            token_count=tok,
            text=text[s:e],
            page=page,
            section_path=section,
            oversized=oversized,
        )


class SpanChunker:
    """The body every strategy shares: config handling, the fingerprint, and :meth:`chunk`
    built from the strategy's ``spans(text)``.

    A strategy sets ``name``, ``version`` and ``config_class`` (a frozen, validated
    dataclass) and implements ``spans(text, *, keep=()) -> [(char_start, char_end,
    token_count[, oversized])]``, where ``keep`` are spans no boundary may cut when they fit
    the budget: :meth:`chunk` passes the document's table rows (:func:`table_rows`).
    """

    name: str
    version: int
    config_class: type

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        """Take a config, or its fields as keyword values (not both).

        Raises:
            ConfigError: both given, or an invalid field value.
        """
        if config is not None and kwargs:
            raise ConfigError(f"pass either a config or keyword values, not both (got {sorted(kwargs)})")
        self.config = config if config is not None else self.config_class(**kwargs)

    @property
    def fingerprint(self) -> str:
        """16 hex chars over (name, version, config)."""
        return fingerprint_of(self.name, self.version, self.config)

    def spans(self, text: str, *, keep: Sequence[tuple[int, int]] = ()) -> list:
        """``(char_start, char_end, token_count[, oversized])`` of every chunk, in order."""
        raise NotImplementedError

    def chunk(
        self, text: str, *, doc_id: str = "", elements: Sequence[ElementSpan] | None = None
    ) -> list[Chunk]:
        """Chunk one document's normalized text.

        Args:
            text: the document's normalized text.
            doc_id: id of the document (part of every chunk id).
            elements: optional element spans, used for page and section path, and for the
                rows of ``Table`` elements, which no chunk boundary cuts when they fit.

        Returns:
            Chunks in document order, each at most ``max_tokens`` tokens unless flagged
            ``oversized``; empty for empty or whitespace-only text.
        """
        return list(self.chunk_iter(text, doc_id=doc_id, elements=elements))

    def chunk_iter(
        self, text: str, *, doc_id: str = "", elements: Sequence[ElementSpan] | None = None
    ) -> Iterator[Chunk]:
        """:meth:`chunk`, one chunk at a time: the boundaries are computed (and any error
        raised) by this call, each chunk's text is sliced when it is consumed
        (:func:`iter_chunks`)."""
        spans = self.spans(text, keep=table_rows(text, elements))
        return iter_chunks(text, spans, doc_id=doc_id, fingerprint=self.fingerprint, elements=elements)
