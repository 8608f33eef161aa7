"""Formats beyond unstructured's defaults, and the decoding rule of every text format.

Each ``partition_*`` function turns one file's bytes (or its decoded text) into the element
records :mod:`ragline.pipelines.load` builds documents from: unstructured ``Element`` objects
(``category``, ``text``, ``metadata.page_number``, ``metadata.parent_id``), returned in a
:class:`Partition`, a list that also carries what the format says about the whole document
(title, metadata, text encoding).

| suffix | parser | elements |
|---|---|---|
| ``.csv``, ``.tsv`` | :mod:`csv` (stdlib, ``strict``) | one ``Table`` |
| ``.xlsx`` | openpyxl (read-only, cached values) | per sheet: ``Title`` (sheet name) + ``Table`` |
| ``.json`` | :mod:`json` | one element per record (top-level list) or top-level key |
| ``.jsonl``, ``.ndjson`` | :mod:`json`, line by line | one element per line |
| ``.xml`` | lxml (no DTD, no entities, no network) | one element per child of the root |
| ``.eml`` | :mod:`email` (``policy.default``) + unstructured for the body | body, then each attachment |
| ``.rst``, ``.epub``, ``.odt``, ``.rtf`` | unstructured through pandoc (``pypandoc-binary``) | unstructured's |

Tables have one row per line, cells separated by ``" | "``; the first line is the header
row as the file has it (written once: the document text is the source's content, so chunk
offsets stay exact). Records (JSON, JSONL, XML) are ``key: value`` lines whose keys are
dotted paths (``queen.marked: true``, ``frames[0].brood: capped``; XML attributes as
``hive@id: 3``).

Decoding (:func:`decode_text`): a UTF-8/16/32 byte-order mark decides; else strict UTF-8;
else the encoding charset-normalizer detects (windows-1252 when it ties with another, as the
WHATWG Encoding Standard defaults to it), recorded as the document's ``encoding``; else the
file is quarantined as ``DecodeError``.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable

from ragline.pipelines.errors import ParseError

#: suffix -> MIME type of the formats this module partitions (merged into load.SUPPORTED_TYPES).
FORMAT_TYPES: dict[str, str] = {
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".json": "application/json",
    ".jsonl": "application/jsonl",
    ".ndjson": "application/jsonl",
    ".xml": "application/xml",
    ".rst": "text/x-rst",
    ".epub": "application/epub+zip",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".rtf": "application/rtf",
}
#: cell separator of a ``Table`` element's lines (rows are separated by ``"\n"``).
CELL_SEP = " | "

# (BOM, codec) — UTF-32 first: its little-endian BOM starts with UTF-16's.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class FormatError(ParseError):
    """A file of a supported format is malformed; ``error_type`` names the case for quarantine.

    Attributes:
        error_type: short name recorded as the quarantine ``error_type`` (``RaggedRows``,
            ``MalformedCSV``, ``NotAWorkbook``, ``BadWorkbook``, ``BadSheet``, ``MalformedJSON``, ``MalformedXML``,
            ``DecodeError``).
    """

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class Partition(list):
    """The elements of one document, plus what its format says about the whole document.

    A plain ``list`` of unstructured elements, so every caller that expects a list keeps working.

    Attributes:
        title: document title from the format (an e-mail's Subject), ``""`` when it has none.
        metadata: document-level facts (``from``, ``to``, ``date``, ``attachments``, ...).
        encoding: the text encoding the bytes were decoded with; ``None`` for binary formats.
    """

    def __init__(self, elements: Iterable = (), *, title: str = "", metadata: dict[str, str] | None = None,
                 encoding: str | None = None) -> None:
        super().__init__(elements)
        self.title = title
        self.metadata = dict(metadata or {})
        self.encoding = encoding


# ---------------------------------------------------------------- decoding
def bom_encoding(data: bytes) -> str | None:
    """The codec a UTF-8/16/32 byte-order mark at the start of ``data`` names, else ``None``."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return codec
    return None


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode a text file's bytes: BOM, else strict UTF-8, else charset-normalizer's best guess.

    Args:
        data: the file's bytes.

    Returns:
        ``(text, encoding)``; ``encoding`` is the codec used (``"utf-8"``, ``"utf-16"``,
        ``"cp1252"``, ...), BOM variants reported as ``utf-8-sig``/``utf-16``/``utf-32``.

    Raises:
        FormatError: ``DecodeError`` when a BOM's codec fails or no encoding fits; the message
            names the first byte that is not UTF-8 and its offset.
    """
    codec = bom_encoding(data)
    if codec is not None:
        try:
            return data.decode(codec), codec
        except UnicodeDecodeError as e:
            raise FormatError("DecodeError", f"starts with a {codec} byte-order mark but is not valid "
                                             f"{codec} (offset {e.start}); re-encode the file") from e
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as e:
        first_bad = e
    from charset_normalizer import from_bytes

    results = from_bytes(data)
    best = results.best()
    if best is not None:
        # charset-normalizer ranks by chaos, then coherence; on a tie prefer windows-1252, the
        # WHATWG Encoding Standard's legacy default (latin-1 text otherwise ties with cp1250)
        tied = [m for m in results if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
        best = next((m for m in tied if "cp1252" in m.could_be_from_charset), best)
    if best is None:
        raise FormatError(
            "DecodeError",
            f"not valid UTF-8 (byte 0x{data[first_bad.start]:02x} at offset {first_bad.start}) and no other "
            "encoding fits (charset-normalizer); re-encode the file as UTF-8",
        ) from first_bad
    if "cp1252" in best.could_be_from_charset:
        return data.decode("cp1252"), "cp1252"
    return str(best), best.encoding


# ---------------------------------------------------------------- element helpers
def _elements():
    from unstructured.documents import elements

    return elements


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return " ".join(str(value).split())


def table_text(rows: Iterable[Iterable[Any]]) -> str:
    """One line per row, cells joined by :data:`CELL_SEP`; trailing empty cells dropped."""
    lines = []
    for row in rows:
        cells = [_cell(c) for c in row]
        while cells and not cells[-1]:
            cells.pop()
        lines.append(CELL_SEP.join(cells))
    return "\n".join(lines)


def _table(text: str, parent=None, page: int | None = None):
    el = _elements()
    return el.Table(text=text, metadata=el.ElementMetadata(
        parent_id=parent.id if parent is not None else None, page_number=page))


# ---------------------------------------------------------------- CSV / TSV
def csv_delimiter(text: str) -> str:
    """``";"`` when the first line holds more semicolons than commas (exports from locales with
    a decimal comma), else ``","``."""
    first = text.split("\n", 1)[0]
    return ";" if first.count(";") > first.count(",") else ","


def partition_delimited(text: str, delimiter: str | None = None) -> Partition:
    """A CSV or TSV file (decoded text) as one ``Table`` element, header row first.

    Blank lines are skipped. Every record must have as many cells as the header.

    Args:
        text: the decoded file.
        delimiter: cell delimiter; ``None`` picks ``","`` or ``";"`` (:func:`csv_delimiter`).

    Raises:
        FormatError: ``RaggedRows`` naming the first record (and its line) whose cell count
            differs from the header's; ``MalformedCSV`` for a quoting error (with its line).
    """
    delimiter = delimiter or csv_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[list[str]] = []
    try:
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if rows and len(row) != len(rows[0]):
                raise FormatError(
                    "RaggedRows",
                    f"row {len(rows) + 1} (line {reader.line_num}) has {len(row)} cells, the header row has "
                    f"{len(rows[0])}; fix the row or quote cells that contain {delimiter!r}",
                )
            rows.append(row)
    except csv.Error as e:
        raise FormatError("MalformedCSV", f"line {reader.line_num}: {e}") from e
    if not rows:
        return Partition()
    return Partition([_table(table_text(rows))])


# ---------------------------------------------------------------- XLSX
def partition_xlsx(data: bytes) -> Partition:
    """An XLSX workbook: per non-empty sheet a ``Title`` (sheet name) and a ``Table``.

    Cells hold the values Excel last computed (formulas are not evaluated); whole-empty rows
    are skipped; dates are ISO 8601.

    Raises:
        FormatError: ``NotAWorkbook`` when the bytes are not an XLSX (zip) workbook;
            ``BadWorkbook`` when a part is damaged (openpyxl reads every sheet's size on
            opening, so the XML error's line and column are named, not the sheet);
            ``BadSheet`` naming a sheet whose rows could not be read.
    """
    import zipfile

    from openpyxl import load_workbook

    try:
        wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except zipfile.BadZipFile as e:
        raise FormatError("NotAWorkbook", f"not an XLSX workbook ({e}); a CSV or text file renamed to .xlsx? "
                                          "save it as .csv or re-export it from the spreadsheet") from e
    except Exception as e:  # a damaged part: openpyxl raises KeyError, XML ParseError, ...
        raise FormatError("BadWorkbook", f"damaged XLSX workbook: {type(e).__name__}: {e}") from e
    el = _elements()
    out = Partition()
    try:
        for ws in wb.worksheets:
            try:
                rows = [r for r in ws.iter_rows(values_only=True) if any(_cell(c) for c in r)]
            except Exception as e:  # openpyxl raises anything on a damaged sheet part
                raise FormatError("BadSheet", f"sheet {ws.title!r}: {type(e).__name__}: {e}") from e
            if not rows:
                continue
            width = max(len(r) for r in rows)
            title = el.Title(text=ws.title)
            out += [title, _table(table_text([list(r) + [None] * (width - len(r)) for r in rows]), parent=title)]
    finally:
        wb.close()
    return out


# ---------------------------------------------------------------- JSON / JSONL / XML records
def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return " ".join(str(v).split()) if isinstance(v, str) else json.dumps(v)


def record_lines(value: Any, path: str = "") -> list[str]:
    """``key: value`` lines of a JSON value, keys as dotted paths (``a.b``, ``a[0].c``).

    A list of scalars is one line (``tags: calm, gentle``); empty containers are ``{}``/``[]``.
    """
    def line(p: str, text: str) -> str:
        return f"{p}: {text}" if p else text

    if isinstance(value, dict):
        if not value:
            return [line(path, "{}")]
        out: list[str] = []
        for k, v in value.items():
            out += record_lines(v, f"{path}.{k}" if path else str(k))
        return out
    if isinstance(value, list):
        if not value:
            return [line(path, "[]")]
        if all(not isinstance(v, (dict, list)) for v in value):
            return [line(path, ", ".join(_scalar(v) for v in value))]
        out = []
        for i, v in enumerate(value):
            out += record_lines(v, f"{path}[{i}]")
        return out
    return [line(path, _scalar(value))]


def _record(lines: list[str]):
    return _elements().Text(text="\n".join(lines))


def _json_error(e: json.JSONDecodeError, where: str = "") -> FormatError:
    return FormatError("MalformedJSON", f"{where}line {e.lineno} column {e.colno} (char {e.pos}): {e.msg}")


def partition_json(text: str) -> Partition:
    """A JSON document: one record element per item of a top-level list, or per top-level key.

    Raises:
        FormatError: ``MalformedJSON`` with the line, column and character offset of the error.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise _json_error(e) from e
    if isinstance(value, list):
        return Partition(_record(record_lines(v)) for v in value)
    if isinstance(value, dict):
        return Partition(_record(record_lines(v, str(k))) for k, v in value.items())
    return Partition([_record(record_lines(value))])


def partition_jsonl(text: str) -> Partition:
    """JSON Lines: one record element per non-blank line.

    Raises:
        FormatError: ``MalformedJSON`` naming the line that does not parse.
    """
    out = Partition()
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            raise FormatError("MalformedJSON", f"line {n} column {e.colno}: {e.msg}") from e
        out.append(_record(record_lines(value)))
    return out


def _xml_lines(node, path: str) -> list[str]:
    from lxml import etree

    out = [f"{path}@{_xml_name(k)}: {' '.join(v.split())}" for k, v in node.attrib.items()]
    text = " ".join((node.text or "").split())
    if text:
        out.append(f"{path}: {text}")
    for child in node:
        if isinstance(child, etree._Element) and isinstance(child.tag, str):
            out += _xml_lines(child, f"{path}.{_xml_name(child.tag)}")
        tail = " ".join((child.tail or "").split())
        if tail:
            out.append(f"{path}: {tail}")
    return out


def _xml_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # drop a "{namespace}" prefix


def partition_xml(data: bytes) -> Partition:
    """An XML document: one record element per child element of the root (``path: text`` lines).

    Parsed by lxml without loading DTDs, resolving entities or touching the network; the
    encoding comes from the XML declaration (UTF-8 by default).

    Raises:
        FormatError: ``MalformedXML`` with lxml's line and column.
    """
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        line, col = e.position if e.position else (None, None)
        msg = re.sub(r", line \d+, column \d+$", "", e.msg or str(e))
        raise FormatError("MalformedXML", f"line {line} column {col}: {msg}") from e
    name = _xml_name(root.tag)
    children = [c for c in root if isinstance(c.tag, str)]
    out = Partition(encoding=(root.getroottree().docinfo.encoding or "utf-8").lower())
    head = [f"{name}@{_xml_name(k)}: {' '.join(v.split())}" for k, v in root.attrib.items()]
    head += [f"{name}: {t}" for t in [" ".join((root.text or "").split())] if t]
    if head:
        out.append(_record(head))
    for child in children:
        lines = _xml_lines(child, _xml_name(child.tag))
        if lines:
            out.append(_record(lines))
    return out


# ---------------------------------------------------------------- pandoc formats
def partition_rst(text: str) -> Partition:
    """reStructuredText (decoded text) through unstructured's ``partition_rst`` (pandoc)."""
    from unstructured.partition.rst import partition_rst as _rst

    return Partition(_rst(file=io.BytesIO(text.encode("utf-8"))))


# ---------------------------------------------------------------- e-mail
def _address_list(msg, name: str) -> str:
    values = msg.get_all(name) or []
    return ", ".join(" ".join(str(v).split()) for v in values)


def partition_email(
    data: bytes,
    partition_text: Callable[[str], list],
    partition_html: Callable[[str], list],
    partition_attachment: Callable[[str, bytes], list],
    supported: Iterable[str],
) -> Partition:
    """An RFC 5322 message: Subject as the title, From/To/Cc/Date as metadata, body and attachments.

    The body is the ``text/plain`` part (else ``text/html``), partitioned with the callables
    given. Each attachment whose suffix is in ``supported`` is partitioned by
    ``partition_attachment(filename, bytes)`` and appended under a ``Title`` element
    ``"Attachment: <filename>"``, so its elements' section paths start with it. Other
    attachments, and those that fail to parse, are listed in ``metadata["attachments_skipped"]``
    with the reason; they never fail the e-mail.

    Args:
        data: the message's bytes.
        partition_text: text -> elements (the plain-text partitioner).
        partition_html: HTML -> elements (the HTML partitioner, with ``load.html_drop``).
        partition_attachment: (file name, bytes) -> elements.
        supported: file suffixes (with the dot) ragline loads.

    Returns:
        The partition; ``metadata`` holds ``subject``, ``from``, ``to``, ``cc``, ``date``
        (ISO 8601 when it parses), ``attachments`` and ``attachments_skipped`` when present.
    """
    from email import policy
    from email.parser import BytesParser
    from email.utils import parsedate_to_datetime

    msg = BytesParser(policy=policy.default).parsebytes(data)
    subject = " ".join(str(msg.get("subject", "")).split())
    meta = {"subject": subject, "from": _address_list(msg, "from"), "to": _address_list(msg, "to"),
            "cc": _address_list(msg, "cc")}
    if msg.get("date"):
        raw = str(msg["date"])
        try:
            meta["date"] = parsedate_to_datetime(raw).isoformat()
        except (TypeError, ValueError):
            meta["date"] = raw
    body = msg.get_body(preferencelist=("plain", "html"))
    out = Partition(title=subject, encoding=body.get_content_charset("us-ascii") if body is not None else None)
    if body is not None:
        content = body.get_content()
        if content.strip():
            out += partition_html(content) if body.get_content_type() == "text/html" else partition_text(content)
    supported = set(supported)
    loaded, skipped = [], []
    el = _elements()
    for i, part in enumerate(msg.iter_attachments()):
        name = " ".join(Path(part.get_filename() or "").name.split())
        if name in ("", ".", ".."):
            name = f"attachment-{i + 1}"
        suffix = Path(name).suffix.lower()
        if suffix not in supported or part.get_content_type() == "message/rfc822":
            skipped.append(f"{name} (unsupported type {part.get_content_type()})")
            continue
        try:
            blob = part.get_payload(decode=True) or b""
            elements = list(partition_attachment(name, blob))
        except Exception as e:  # one bad attachment never fails the message
            why = getattr(e, "error_type", type(e).__name__)
            skipped.append(f"{name} ({why}: {' '.join(str(e).split())[:200]})")
            continue
        if not any((e.text or "").strip() for e in elements):
            skipped.append(f"{name} (no text)")
            continue
        head = el.Title(text=f"Attachment: {name}")
        ids = {e.id for e in elements}
        for e in elements:
            if e.metadata.parent_id not in ids:
                e.metadata.parent_id = head.id
        out += [head, *elements]
        loaded.append(name)
    if loaded:
        meta["attachments"] = ", ".join(loaded)
    if skipped:
        meta["attachments_skipped"] = "; ".join(skipped)
    out.metadata = {k: v for k, v in meta.items() if v}
    return out


#: suffixes whose bytes are decoded (:func:`decode_text`) and handed over as text.
TEXT_PARTITIONERS: dict[str, Callable[[str], Partition]] = {
    ".csv": partition_delimited,
    ".tsv": lambda text: partition_delimited(text, "\t"),
    ".json": partition_json,
    ".jsonl": partition_jsonl,
    ".ndjson": partition_jsonl,
    ".rst": partition_rst,
}
#: suffixes whose bytes are handed over as they are.
BYTES_PARTITIONERS: dict[str, Callable[[bytes], Partition]] = {
    ".xlsx": partition_xlsx,
    ".xml": partition_xml,
}

