"""The records every layer passes around: documents, their element spans, chunks, quarantine records, hits.

Records are frozen dataclasses; offsets are half-open character offsets into the document's
normalized text, and ``chunk.text == document.text[chunk.char_start:chunk.char_end]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True, slots=True)
class ElementSpan:
    """One element of a loaded document, as the chunkers see it.

    Attributes:
        type: unstructured element category, e.g. ``"Title"``, ``"NarrativeText"``,
            ``"ListItem"``, ``"Table"``.
        char_start: half-open start offset (characters) into the document's normalized text.
        char_end: half-open end offset (characters).
        page: 1-based page number when the format has pages, else ``None``.
        section_path: titles of the enclosing sections, outermost first.
    """

    type: str
    char_start: int
    char_end: int
    page: int | None = None
    section_path: tuple[str, ...] = ()

    def __reduce__(self) -> tuple:
        """Pickled as its constructor's arguments: a parsing worker sends every span of every
        document to the ingest process (96,000 on the Python docs), and the dataclass's own
        slot state (``__getstate__``/``__setstate__``, Python functions) cost twice as much."""
        return ElementSpan, (self.type, self.char_start, self.char_end, self.page, self.section_path)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of one document.

    Attributes:
        chunk_id: 32 hex chars, ``sha256(doc_id, char_start, char_end, fingerprint)``.
        doc_id: id of the document the chunk belongs to.
        char_start: half-open start offset (characters) into the document's normalized text.
        char_end: half-open end offset (characters); ``text == doc_text[char_start:char_end]``.
        token_count: number of cl100k_base tokens of ``text``.
        text: the chunk's text, exactly the document slice.
        page: page of the element the chunk starts in, or ``None``.
        section_path: section-title path of the element the chunk starts in.
        oversized: True when the chunk is a single indivisible unit longer than ``max_tokens``.
    """

    chunk_id: str
    doc_id: str
    char_start: int
    char_end: int
    token_count: int
    text: str
    page: int | None = None
    section_path: tuple[str, ...] = ()
    oversized: bool = False


@dataclass(frozen=True, slots=True)
class Document:
    """One loaded document.

    Attributes:
        doc_id: 32 hex chars, sha256 of the source URI.
        uri: source URI.
        sha256: sha256 (hex) of the file's bytes.
        mime_type: MIME type from the file suffix.
        size_bytes: file size in bytes.
        title: the HTML ``<title>``, else the first Title element, else the file stem.
        text: normalized text: NFC, ``\\n`` line ends, elements joined by ``\\n\\n``.
        elements: element spans into ``text`` in document order.
        metadata: document-level facts from the format (an e-mail's ``subject``, ``from``,
            ``to``, ``cc``, ``date``, ``attachments``, ``attachments_skipped``); ``{}`` when none.
        encoding: codec the text was decoded with (``"utf-8"``, ``"utf-16"``, ``"cp1252"``,
            ...); ``None`` for binary formats (PDF, DOCX, PPTX, XLSX, ...).
    """

    doc_id: str
    uri: str
    sha256: str
    mime_type: str
    size_bytes: int
    title: str
    text: str
    elements: tuple[ElementSpan, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    encoding: str | None = None


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    """A file (or document) that a stage could not process.

    Attributes:
        path: source URI of the file.
        stage: stage that failed (``load``, ``chunk``, ``embed``).
        error_type: short error class, e.g. ``EmptyFile``, ``UnsupportedType``, ``PDFSyntaxError``.
        message: what went wrong and, where possible, what to do.
        sha256: the file's sha256 when it could be read, else ``""``.
    """

    path: str
    stage: str
    error_type: str
    message: str
    sha256: str = ""


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved chunk: what ``ragline query --json`` prints, ``Index.search`` returns and a
    flow's retrieve node outputs (the same field names everywhere).

    Attributes:
        rank: 1-based rank in the final list.
        score: the mode's score: cosine (inner product) or negative L2 distance for dense,
            BM25 for bm25, the fused score for hybrid. Higher is better.
        row: chunk row (= FAISS id) in the version.
        chunk_id, doc_id: identities of the chunk and its document.
        source: the document's source URI.
        page: page number or ``None``.
        char_start, char_end: half-open character offsets into the document's normalized text.
        section_path: section titles, outermost first.
        text: the chunk's full text.
        retriever_ranks: ``{"dense": r, "bm25": r}`` 1-based ranks in each retriever's list
            (only retrievers that returned the row).
        retriever_scores: the raw scores behind those ranks.
        duplicates: source URIs of the other copies of this passage (its duplicate cluster, as
            ``duplicates.parquet`` records it), not returned as hits of their own; ``()`` when none.
    """

    rank: int
    score: float
    row: int
    chunk_id: str
    doc_id: str
    source: str
    page: int | None
    char_start: int
    char_end: int
    section_path: tuple[str, ...]
    text: str
    retriever_ranks: Mapping[str, int] = field(default_factory=dict)
    retriever_scores: Mapping[str, float] = field(default_factory=dict)
    duplicates: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (the keys are the attribute names)."""
        return {
            "rank": self.rank, "score": self.score, "row": self.row, "chunk_id": self.chunk_id,
            "doc_id": self.doc_id, "source": self.source, "page": self.page, "char_start": self.char_start,
            "char_end": self.char_end, "section_path": list(self.section_path), "text": self.text,
            "retriever_ranks": dict(self.retriever_ranks), "retriever_scores": dict(self.retriever_scores),
            "duplicates": list(self.duplicates),
        }
