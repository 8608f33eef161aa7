"""Stage ``load``: discover files, hash them, partition them with unstructured into documents.

A :class:`Document` holds the normalized text of one file (element texts joined by a blank
line) and the boundaries of its elements (type, page, section-title path) as half-open
character offsets into that text. Files that cannot be loaded become
:class:`QuarantineRecord` rows; the run goes on with the rest.
"""

from __future__ import annotations

import fnmatch
import html
import mimetypes
import os
import re
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from ragline.core.hashing import doc_id_for, sha256_bytes
from ragline.core.records import Document, ElementSpan, QuarantineRecord
from ragline.pipelines import formats
from ragline.pipelines.config import LoadConfig
from ragline.pipelines.errors import FailureRateExceeded

if TYPE_CHECKING:
    import pyarrow as pa

#: file suffix -> MIME type of every format ragline partitions.
SUPPORTED_TYPES: dict[str, str] = {
    ".pdf": "application/pdf",
    ".html": "text/html",
    ".htm": "text/html",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".txt": "text/plain",
    ".text": "text/plain",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".eml": "message/rfc822",
    **formats.FORMAT_TYPES,
}
#: suffixes whose bytes must be text (decoded by :func:`formats.decode_text` before partitioning).
TEXT_SUFFIXES = {".html", ".htm", ".md", ".markdown", ".txt", ".text", *formats.TEXT_PARTITIONERS}
STAGE = "load"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A discovered file.

    Attributes:
        path: filesystem path (may be a broken symlink; loading reports it).
        uri: stable source URI (POSIX path as reached from the source given), the doc id's origin.
    """

    path: Path
    uri: str



def _matches(rel: str, patterns: Sequence[str]) -> bool:
    # fnmatch's "*" crosses "/", so "**/*.html" matches at any depth; a leading "**/" may
    # also match nothing, so that the pattern covers files at the top of the source too.
    return any(
        fnmatch.fnmatch(rel, pat) or (pat.startswith("**/") and fnmatch.fnmatch(rel, pat[3:]))
        for pat in patterns
    )


def discover_files(
    sources: Sequence[str | Path], include: Sequence[str] = ("**/*",), exclude: Sequence[str] = ()
) -> list[SourceFile]:
    """List the files under the sources, filtered by include/exclude globs, sorted by URI.

    Hidden files and folders (names starting with ``.``) are skipped. Broken symlinks are
    kept, so that loading quarantines them instead of losing them silently.

    Args:
        sources: folders or single files.
        include: glob patterns relative to the source folder; a file must match one.
        exclude: glob patterns relative to the source folder; a match drops the file.

    Raises:
        FileNotFoundError: a source does not exist.
    """
    found: dict[str, SourceFile] = {}
    for source in sources:
        root = Path(source)
        if root.is_file() or (root.is_symlink() and not root.exists()):
            found[root.as_posix()] = SourceFile(root, root.as_posix())
            continue
        if not root.is_dir():
            raise FileNotFoundError(f"source not found: {root}")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                rel = path.relative_to(root).as_posix()
                if not _matches(rel, include) or _matches(rel, exclude):
                    continue
                found[path.as_posix()] = SourceFile(path, path.as_posix())
    return [found[k] for k in sorted(found)]


def normalize_text(text: str) -> str:
    """NFC-normalize, turn ``\\r\\n``/``\\r`` into ``\\n``, drop NULs, strip the ends."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\x00", "").strip()


class _LoadFailure(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def _read_text(path: Path, data: bytes) -> tuple[str, str]:
    """``(text, encoding)`` of a text file (:func:`formats.decode_text`: BOM, UTF-8, detected)."""
    if formats.bom_encoding(data) is None and b"\x00" in data[:8192]:  # UTF-16/32 with a BOM hold NULs
        raise _LoadFailure("BinaryContent", f"{path}: binary content (NUL bytes) in a text file")
    try:
        return formats.decode_text(data)
    except formats.FormatError as e:
        raise _LoadFailure(e.error_type, f"{path}: {e}") from e


def strip_html(text: str, selectors: Sequence[str]) -> str:
    """Remove the elements matching any CSS selector (``load.html_drop``) from an HTML page.

    Returns the page unchanged when nothing matches (so offsets of untouched pages never
    move); otherwise the serialized remaining tree (BeautifulSoup with the lxml parser).
    """
    if not selectors:
        return text
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "lxml")
    hits = soup.select(", ".join(selectors))
    if not hits:
        return text
    for el in hits:
        el.decompose()
    return str(soup)


def _partition(path: Path, suffix: str, data: bytes, strategy: str, html_drop: Sequence[str] = ()) -> list:
    from ragline.pipelines.offline import install_unstructured_nlp

    install_unstructured_nlp()
    if suffix in formats.BYTES_PARTITIONERS:
        return formats.BYTES_PARTITIONERS[suffix](data)
    if suffix == ".eml":
        return _partition_email(data, strategy, html_drop)
    if suffix in TEXT_SUFFIXES:
        text, encoding = _read_text(path, data)
        if not text.strip():
            raise _LoadFailure("EmptyFile", f"{path}: only whitespace")
        if suffix in formats.TEXT_PARTITIONERS:
            parsed = formats.TEXT_PARTITIONERS[suffix](text)
        elif suffix in (".html", ".htm"):
            parsed = _partition_html(text, html_drop)
        elif suffix in (".md", ".markdown"):
            from unstructured.partition.md import partition_md

            parsed = partition_md(text=text)
        else:
            parsed = _partition_plain(text)
        return formats.Partition(parsed, encoding=encoding)
    if suffix == ".pdf":
        from unstructured.partition.pdf import partition_pdf

        return partition_pdf(filename=str(path), strategy=strategy, infer_table_structure=False, languages=["eng"])
    from unstructured.partition.auto import partition

    return partition(filename=str(path), strategy=strategy)


def _partition_html(text: str, html_drop: Sequence[str]) -> list:
    from unstructured.partition.html import partition_html

    return partition_html(text=strip_html(text, html_drop))


def _partition_plain(text: str) -> list:
    from unstructured.partition.text import partition_text

    return partition_text(text=text)


def _partition_email(data: bytes, strategy: str, html_drop: Sequence[str]) -> "formats.Partition":
    """An e-mail (:func:`formats.partition_email`); attachments go through :func:`_partition`."""
    import tempfile

    def attachment(name: str, blob: bytes) -> list:
        suffix = Path(name).suffix.lower()
        with tempfile.TemporaryDirectory(prefix="ragline-attachment-") as tmp:
            p = Path(tmp) / f"attachment{suffix}"  # never a path from the message
            p.write_bytes(blob)
            try:
                return list(_partition(p, suffix, blob, strategy, html_drop))
            except _LoadFailure as f:  # name the attachment, not the temporary file
                raise formats.FormatError(f.error_type, str(f).replace(str(p), name)) from f

    return formats.partition_email(
        data, _partition_plain, lambda text: _partition_html(text, html_drop), attachment,
        supported=[s for s in SUPPORTED_TYPES if s != ".eml"],
    )


_PERMALINK = "\u00b6"  # ¶, the Sphinx/MkDocs permalink sign


def _section_title(text: str) -> str:
    """A heading as a section-path entry: normalized, without a trailing permalink ``¶``."""
    return normalize_text(text).rstrip(_PERMALINK).rstrip()


def _section_paths(elements: list) -> list[tuple[str, ...]]:
    by_id = {e.id: e for e in elements}
    out = []
    for e in elements:
        path: list[str] = []
        cur = e if e.category == "Title" else by_id.get(e.metadata.parent_id)
        seen: set[str] = set()
        while cur is not None and cur.id not in seen:
            seen.add(cur.id)
            if cur.category == "Title":
                path.append(_section_title(cur.text))
            cur = by_id.get(cur.metadata.parent_id)
        out.append(tuple(reversed(path)))
    return out


_HTML_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _title_hint(suffix: str, data: bytes) -> str:
    """The ``<title>`` of an HTML page (first 64 KiB), else ``""``."""
    if suffix not in (".html", ".htm"):
        return ""
    m = _HTML_TITLE.search(data[:65536])
    if not m:
        return ""
    return normalize_text(html.unescape(" ".join(m.group(1).decode("utf-8", "replace").split())))


def _build_document(
    src: SourceFile, sha: str, mime: str, size: int, raw_elements: list, title_hint: str = ""
) -> Document:
    sections = _section_paths(raw_elements)
    parts: list[str] = []
    spans: list[ElementSpan] = []
    pos = 0
    title = ""
    for el, section in zip(raw_elements, sections):
        text = normalize_text(el.text or "")
        if not text:
            continue
        if parts:
            pos += 2  # the "\n\n" separator
        spans.append(ElementSpan(el.category, pos, pos + len(text), el.metadata.page_number, section))
        parts.append(text)
        pos += len(text)
        if not title and el.category == "Title":
            title = _section_title(text)
    if not parts:
        raise _LoadFailure("NoElements", f"{src.uri}: partition returned no text elements")
    return Document(
        doc_id=doc_id_for(src.uri),
        uri=src.uri,
        sha256=sha,
        mime_type=mime,
        size_bytes=size,
        title=title_hint or getattr(raw_elements, "title", "") or title or Path(src.uri).stem,
        text="\n\n".join(parts),
        elements=tuple(spans),
        metadata=dict(getattr(raw_elements, "metadata", {}) or {}),
        encoding=getattr(raw_elements, "encoding", None),
    )


def load_document(src: SourceFile, cfg: LoadConfig) -> Document | QuarantineRecord:
    """Load one file into a :class:`Document`, or a :class:`QuarantineRecord` explaining why not.

    Never raises for bad input: empty files, unsupported types, files over
    ``cfg.max_file_mb``, broken symlinks, binary or non-UTF-8 text, and parser errors
    (corrupt or encrypted PDFs, ...) all come back as quarantine records, as does a
    document whose partition yields no text (a failure, not a silent success).
    """
    path = src.path
    sha = ""
    try:
        if path.is_symlink() and not path.exists():
            raise _LoadFailure("BrokenSymlink", f"{src.uri}: symlink to missing {os.readlink(path)}")
        suffix = path.suffix.lower()
        mime = SUPPORTED_TYPES.get(suffix)
        if mime is None:
            guessed = mimetypes.guess_type(path.name)[0] or "unknown"
            raise _LoadFailure(
                "UnsupportedType",
                f"{src.uri}: unsupported file type {suffix or '(no suffix)'} ({guessed}); "
                f"supported: {', '.join(sorted(SUPPORTED_TYPES))}",
            )
        size = path.stat().st_size
        if size == 0:
            raise _LoadFailure("EmptyFile", f"{src.uri}: empty file (0 bytes)")
        if size > cfg.max_file_mb * 1024 * 1024:
            raise _LoadFailure(
                "FileTooLarge",
                f"{src.uri}: {size / 1048576:.1f} MiB exceeds load.max_file_mb={cfg.max_file_mb}",
            )
        data = path.read_bytes()
        sha = sha256_bytes(data)
        try:
            raw = _partition(path, suffix, data, cfg.strategy, cfg.html_drop)
        except _LoadFailure:
            raise
        except formats.FormatError as e:  # a malformed file of a supported format: its own reason
            raise _LoadFailure(e.error_type, f"{src.uri}: {e}") from e
        except Exception as e:  # parser libraries raise anything; keep the type name
            raise _LoadFailure(type(e).__name__, f"{src.uri}: {type(e).__name__}: {e}".strip()) from e
        return _build_document(src, sha, mime, size, raw, _title_hint(suffix, data))
    except _LoadFailure as f:
        return QuarantineRecord(src.uri, STAGE, f.error_type, str(f), sha)
    except OSError as e:
        return QuarantineRecord(src.uri, STAGE, type(e).__name__, f"{src.uri}: {e}", sha)


def _load_one(args: tuple[SourceFile, LoadConfig]) -> Document | QuarantineRecord:
    return load_document(*args)


def load_documents(
    files: Sequence[SourceFile],
    cfg: LoadConfig,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Document], list[QuarantineRecord]]:
    """Stage ``load``: partition every file, in ``cfg.workers`` processes.

    Args:
        files: files from :func:`discover_files`.
        cfg: the ``load:`` params.
        progress: called with the number of files finished since the last call.

    Returns:
        ``(documents, quarantine)``, both in the order of ``files``.
    """
    results: list[Document | QuarantineRecord]
    jobs = [(f, cfg) for f in files]
    if cfg.workers > 1 and len(files) > 4:
        # spawn, not fork: the parent may already hold torch/OpenMP threads.
        with ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn")) as pool:
            results = []
            for r in pool.map(_load_one, jobs, chunksize=4):
                results.append(r)
                if progress:
                    progress(1)
    else:
        results = []
        for job in jobs:
            results.append(_load_one(job))
            if progress:
                progress(1)
    docs = [r for r in results if isinstance(r, Document)]
    bad = [r for r in results if isinstance(r, QuarantineRecord)]
    return docs, bad


def check_failure_rate(n_files: int, quarantine: Iterable[QuarantineRecord], max_failed_fraction: float) -> None:
    """Raise when the quarantined share of ``n_files`` exceeds ``max_failed_fraction``.

    Raises:
        FailureRateExceeded: with the counts and the param to change.
    """
    n_bad = len({q.path for q in quarantine})
    if n_files and n_bad / n_files > max_failed_fraction:
        raise FailureRateExceeded(
            f"{n_bad} of {n_files} files quarantined ({n_bad / n_files:.0%}), more than "
            f"load.max_failed_fraction={max_failed_fraction:g}; see the quarantine table"
        )


def documents_to_table(docs: Sequence[Document]) -> "pa.Table":
    """Documents as an Arrow table of :data:`ragline.core.schemas.DOCUMENTS_SCHEMA`."""
    import pyarrow as pa

    from ragline.core.schemas import DOCUMENTS_SCHEMA

    rows = [
        {
            "doc_id": d.doc_id, "uri": d.uri, "sha256": d.sha256, "mime_type": d.mime_type,
            "size_bytes": d.size_bytes, "title": d.title, "text": d.text,
            "elements": [
                {"type": e.type, "char_start": e.char_start, "char_end": e.char_end, "page": e.page,
                 "section_path": list(e.section_path)}
                for e in d.elements
            ],
            "metadata": d.metadata or None, "encoding": d.encoding,
        }
        for d in docs
    ]
    return pa.Table.from_pylist(rows, schema=DOCUMENTS_SCHEMA)


def documents_from_table(table: "pa.Table") -> list[Document]:
    """Inverse of :func:`documents_to_table`."""
    return [
        Document(
            doc_id=r["doc_id"], uri=r["uri"], sha256=r["sha256"], mime_type=r["mime_type"],
            size_bytes=r["size_bytes"], title=r["title"], text=r["text"],
            elements=tuple(
                ElementSpan(e["type"], e["char_start"], e["char_end"], e["page"], tuple(e["section_path"] or ()))
                for e in r["elements"]
            ),
            metadata=dict(r.get("metadata") or ()),
            encoding=r.get("encoding"),
        )
        for r in table.to_pylist()
    ]


def quarantine_to_table(records: Sequence[QuarantineRecord]) -> "pa.Table":
    """Quarantine records as an Arrow table of :data:`ragline.core.schemas.QUARANTINE_SCHEMA`."""
    import pyarrow as pa

    from ragline.core.schemas import QUARANTINE_SCHEMA

    return pa.Table.from_pylist(
        [{"path": q.path, "stage": q.stage, "error_type": q.error_type, "message": q.message, "sha256": q.sha256}
         for q in records],
        schema=QUARANTINE_SCHEMA,
    )


def quarantine_from_table(table: "pa.Table") -> list[QuarantineRecord]:
    """Inverse of :func:`quarantine_to_table`."""
    return [QuarantineRecord(**r) for r in table.to_pylist()]
