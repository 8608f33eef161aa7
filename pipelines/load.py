"""Stage ``load``: discover files, hash them, partition them with unstructured into documents.

A :class:`Document` holds the normalized text of one file (element texts joined by a blank
line) and the boundaries of its elements (type, page, section-title path) as half-open
character offsets into that text. Files that cannot be loaded become
:class:`QuarantineRecord` rows; the run goes on with the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import html
import io
import mimetypes
import os
import re
import stat
import types
import unicodedata
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

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


#: ``load.follow_symlinks`` values.
FOLLOW_SYMLINKS = ("within_root", "always", "never")


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A discovered file.

    Attributes:
        path: filesystem path as reached from the source given (may be a symlink).
        uri: stable source URI (POSIX path as reached from the source given), the doc id's origin.
        skip_type: non-empty when discovery refused the file without opening it (a special
            file, a link out of the source roots or in a loop, a broken link): the quarantine
            reason (``NotARegularFile``, ``SymlinkOutsideRoot``, ``SymlinkNotFollowed``,
            ``SymlinkLoop``, ``BrokenSymlink``). Loading and refresh hashing never read it.
        skip_message: the one-line explanation that goes with ``skip_type``.
        source: for an entry of a remote source (:mod:`pipelines.sources`), the source URL it
            was listed from; ``""`` for a local file. A remote entry's ``path`` is only its
            name (the suffix names the type); its bytes come from the source.
        size: bytes the listing gives (``-1``: not listed).
        etag, version_id, mtime: the listing's ETag, object version id and modification time
            (or a sitemap's ``<lastmod>``); ``""`` when it gives none.
    """

    path: Path
    uri: str
    skip_type: str = ""
    skip_message: str = ""
    source: str = ""
    size: int = -1
    etag: str = ""
    version_id: str = ""
    mtime: str = ""


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    return _matcher(tuple(patterns))(rel) is not None


@functools.lru_cache(maxsize=64)
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], re.Match | None]:
    """One compiled regex for glob ``patterns`` (its ``match``). fnmatch's "*" crosses "/",
    so "**/*.html" matches at any depth; a leading "**/" may also match nothing, so that the
    pattern covers files at the top of the source too."""
    alts = [fnmatch.translate(p) for p in patterns] + [fnmatch.translate(p[3:]) for p in patterns if p.startswith("**/")]
    return re.compile("|".join(f"(?:{a})" for a in alts) or r"(?!)").match


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"))


def file_kind(mode: int) -> str:
    """``"a regular file"``, ``"a FIFO (named pipe)"``, ``"a socket"``, ... for an ``st_mode``."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def discover_files(
    sources: Sequence[str | Path],
    include: Sequence[str] = ("**/*",),
    exclude: Sequence[str] = (),
    *,
    follow_symlinks: str = "within_root",
) -> list[SourceFile]:
    """List the files under the sources, filtered by include/exclude globs, sorted by URI.

    The one discovery function of ingest and refresh. Hidden files and folders (names
    starting with ``.``) are skipped. Nothing is opened: entries are classified with
    ``lstat``/``stat`` and ``realpath``. Entries that must not be read come back with
    ``skip_type`` set, so that loading quarantines them (reported, never read):

    - special files (FIFOs, sockets, devices, also as link targets): ``NotARegularFile``;
    - with ``follow_symlinks="within_root"``, a link whose target lies outside every source
      root (after resolving every link on the way): ``SymlinkOutsideRoot``; with ``"never"``
      every link: ``SymlinkNotFollowed``; ``"always"`` follows every link;
    - a link that cannot be resolved because it loops, or a linked folder already walked
      (a cycle): ``SymlinkLoop``; a link to nothing: ``BrokenSymlink``.

    A source given as a single file is its own root (the user named it).

    Args:
        sources: folders or single files.
        include: glob patterns relative to the source folder; a file must match one.
        exclude: glob patterns relative to the source folder; a match drops the file.
        follow_symlinks: ``within_root`` | ``always`` | ``never`` (``load.follow_symlinks``).

    Raises:
        FileNotFoundError: a source does not exist.
        ValueError: an unknown ``follow_symlinks`` value.
    """
    if follow_symlinks not in FOLLOW_SYMLINKS:
        raise ValueError(f"follow_symlinks={follow_symlinks!r}; allowed: {', '.join(FOLLOW_SYMLINKS)}")
    found: dict[str, SourceFile] = {}
    dirs = [Path(s) for s in sources if Path(s).is_dir()]
    roots = [os.path.realpath(d) for d in dirs]

    included, excluded = _matcher(tuple(include)), _matcher(tuple(exclude))

    def add(path: Path, rel: str | None, skip_type: str = "", msg: str = "", uri: str = "") -> None:
        if rel is not None and (included(rel) is None or excluded(rel) is not None):
            return
        uri = uri or path.as_posix()
        found[uri] = SourceFile(path, uri, skip_type, f"{uri}: {msg}" if msg else "")

    for source in sources:
        root = Path(source)
        if not root.is_dir():
            if root.is_symlink() and not root.exists():
                add(root, None, "BrokenSymlink", f"symlink to missing {os.readlink(root)}")
            elif root.exists():
                mode = root.stat().st_mode
                add(root, None, *(("", "") if stat.S_ISREG(mode) else
                                  ("NotARegularFile", f"{file_kind(mode)}, not a regular file; not opened")))
            else:
                raise FileNotFoundError(f"source not found: {root}")
            continue
        walked: set[str] = {os.path.realpath(root)}
        stack = [root]
        root_s = str(root)
        while stack:
            folder = stack.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
            except OSError as e:
                add(folder, folder.relative_to(root).as_posix(), type(e).__name__, f"cannot list folder: {e}")
                continue
            top = str(folder) == "."  # scandir(".") names its entries "./x"; Path("./x") is "x"
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                path = folder / entry.name  # (a child of a parsed Path: half the cost of parsing entry.path)
                uri = entry.name if top else entry.path  # == str(path); POSIX: str is as_posix, and the path
                # relative to the root is a suffix of it
                if root_s == ".":
                    rel = uri
                elif uri.startswith(root_s) and uri[len(root_s):len(root_s) + 1] == "/":
                    rel = uri[len(root_s) + 1:]
                else:
                    rel = path.relative_to(root).as_posix()
                is_link = entry.is_symlink()
                if not is_link and entry.is_file(follow_symlinks=False):  # d_type: no stat call
                    add(path, rel, uri=uri)
                    continue
                if is_link:
                    target = os.readlink(path)
                    if follow_symlinks == "never":
                        add(path, rel, "SymlinkNotFollowed", f"symlink to {target} not followed (load.follow_symlinks=never)")
                        continue
                    try:
                        real = os.path.realpath(path, strict=True)
                    except FileNotFoundError:
                        add(path, rel, "BrokenSymlink", f"symlink to missing {target}")
                        continue
                    except OSError as e:  # ELOOP: a link cycle
                        add(path, rel, "SymlinkLoop", f"symlink {target} cannot be resolved ({e.strerror})")
                        continue
                    if follow_symlinks == "within_root" and not _inside(real, roots):
                        add(path, rel, "SymlinkOutsideRoot",
                            f"symlink to {real}, outside every source root; not read "
                            "(load.follow_symlinks=within_root; set it to always to follow it)")
                        continue
                    mode = os.stat(real).st_mode
                else:
                    real = None
                    mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    key = real or os.path.realpath(path)
                    if key in walked:
                        add(path, rel, "SymlinkLoop", f"symlink to {key}, a folder already walked (a cycle); skipped")
                        continue
                    walked.add(key)
                    stack.append(path)
                elif stat.S_ISREG(mode):
                    add(path, rel)
                else:
                    what = f"{'symlink to ' + real + ', ' if real else ''}{file_kind(mode)}"
                    add(path, rel, "NotARegularFile", f"{what}, not a regular file; not opened")
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
    """``(text, encoding)`` of a text file (:func:`formats.decode_text`: BOM, UTF-8, detected).

    The NUL rule (README "Bad input"): a NUL byte anywhere in a text file quarantines it,
    unless the file starts with a UTF-16/32 byte-order mark (such text holds NULs by design).
    """
    if formats.bom_encoding(data) is None:
        nul = data.find(b"\x00")
        if nul >= 0:
            raise _LoadFailure("BinaryContent", f"{path}: binary content in a text file (NUL byte at offset {nul})")
    try:
        return formats.decode_text(data)
    except formats.FormatError as e:
        raise _LoadFailure(e.error_type, f"{path}: {e}") from e


def strip_html(text: str, selectors: Sequence[str]) -> str:
    """Remove the elements matching any CSS selector (``load.html_drop``) from an HTML page.

    Returns the page unchanged when nothing matches (so offsets of untouched pages never
    move); otherwise the remaining tree serialized as HTML. Parsed with lxml, selectors
    translated to XPath by cssselect (HTML rules: case-insensitive names); a removed
    element's tail text stays (:func:`drop_matches`), as with BeautifulSoup's ``decompose``,
    which this replaced (the same pages, 1/10 of the time). Loading does not serialize: it
    drops the same elements from the tree unstructured parses (:func:`_partition_html`).
    """
    if not selectors:
        return text
    import lxml.html

    root = lxml.html.document_fromstring(text.encode("utf-8"), parser=_utf8_html_parser())
    if not drop_matches(root, selectors):
        return text
    return lxml.html.tostring(root, encoding="unicode", method="html", doctype="<!DOCTYPE html>")


def drop_matches(root, selectors: Sequence[str]) -> bool:
    """Remove from the lxml tree under ``root`` every element matching one of the CSS
    ``selectors``, each with its children and text, its tail text joined to the element before
    it (lxml.html's ``drop_tree``, for any lxml element class); ``root`` itself matching is
    emptied. Returns whether anything matched."""
    hits = _selector(tuple(selectors))(root)
    for el in hits:  # document order: an element inside one dropped before goes with a detached tree
        parent = el.getparent()
        if parent is None:  # the root itself: nothing is left
            el.clear()
            continue
        if el.tail:
            previous = el.getprevious()
            if previous is None:
                parent.text = (parent.text or "") + el.tail
            else:
                previous.tail = (previous.tail or "") + el.tail
        parent.remove(el)
    return bool(hits)


@functools.lru_cache(maxsize=8)
def _selector(selectors: tuple[str, ...]):  # -> lxml.etree.XPath
    """The elements matching any of the CSS ``selectors``, as one XPath (lxml's ``CSSSelector``
    of the selector list, cssselect's HTML translation) with the simple selectors (no
    combinator) grouped by element name: each group walks the tree once, its conditions joined
    by ``or`` behind a test that the element has an attribute one of them needs (``@role``,
    ``@class``...; libxml2 compares an attribute on every element otherwise). The same elements,
    in document order, at 1/2 to 2/3 of the cost of one walk per selector. Selectors this
    cannot group (pseudo-elements, an attribute name XPath cannot spell) keep their own walk;
    a selector list the grouping fails on is lxml's ``CSSSelector`` itself."""
    from lxml import etree
    from lxml.cssselect import CSSSelector

    plain = CSSSelector(", ".join(selectors), translator="html")  # (raises as before for a bad selector)
    try:
        return etree.XPath(_grouped_xpath(selectors))
    except Exception:  # noqa: BLE001 - any surprise of cssselect's internals: the plain translation
        return plain


_XPATH_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")


def _grouped_xpath(selectors: Sequence[str]) -> str:
    """The XPath of :func:`_selector` (cssselect's parsed selectors and ``HTMLTranslator``)."""
    import cssselect
    from cssselect import HTMLTranslator
    from cssselect import parser as css

    tr = HTMLTranslator()
    groups: dict[str, list[tuple[str, str | None]]] = {}  # element -> (condition, an attribute it needs)
    walks: list[str] = []
    for text in selectors:
        for sel in cssselect.parse(text):
            xpath = tr.xpath(sel.parsed_tree)
            if sel.pseudo_element is not None or isinstance(sel.parsed_tree, css.CombinedSelector) or xpath.path:
                walks.append(tr.selector_to_xpath(sel, prefix="descendant-or-self::"))
                continue
            need, node = None, sel.parsed_tree
            while need is None and not isinstance(node, css.Element):  # the selector's own chain (not inside :not)
                if isinstance(node, css.Class):
                    need = "class"
                elif isinstance(node, css.Hash):
                    need = "id"
                elif isinstance(node, css.Attrib) and node.namespace is None:
                    need = node.attrib.lower()
                node = node.selector
            groups.setdefault(xpath.element, []).append(
                (xpath.condition, need if need and _XPATH_NAME.match(need) else None))
    for element, members in groups.items():
        step = f"descendant-or-self::{element}"
        if all(cond for cond, _ in members):
            if all(need for _, need in members):
                step += "[" + " or ".join(sorted({f"@{need}" for _, need in members})) + "]"
            step += "[" + " or ".join(f"({cond})" for cond, _ in members) + "]"
        walks.append(step)
    return " | ".join(walks)


@functools.lru_cache(maxsize=1)
def _utf8_html_parser():  # -> lxml.html.HTMLParser
    import lxml.html

    return lxml.html.HTMLParser(encoding="utf-8")


#: five digits in a row: every match of unstructured's US city/state/zip pattern holds them (its ZIP code)
_FIVE_DIGITS = re.compile(r"\d{5}")
#: ASCII characters ``str.isspace`` / ``str.isalpha`` accept (no character is both)
_ASCII_SPACE = bytes(c for c in range(128) if chr(c).isspace())
_ASCII_ALPHA = bytes(c for c in range(128) if chr(c).isalpha())


def _is_us_city_state_zip(text: str) -> bool:
    """unstructured's ``is_us_city_state_zip``, its regex (a backtracking one, 25 µs a paragraph)
    run only on a text holding what every match holds: a comma and five digits in a row."""
    from unstructured.partition import text_type as tt

    return "," in text and _FIVE_DIGITS.search(text) is not None and tt.is_us_city_state_zip(text)


def _is_email_address(text: str) -> bool:
    """unstructured's ``is_email_address``, run only on a text holding an ``@``."""
    from unstructured.partition import text_type as tt

    return "@" in text and tt.is_email_address(text)


def _under_non_alpha_ratio(text: str) -> bool:
    """unstructured's ``under_non_alpha_ratio`` (letters are under half of the non-space
    characters), counted in C instead of its Python loop over the characters: by
    ``bytes.translate`` for ASCII text, by ``str.isalpha`` / ``str.isspace`` mapped over other
    text (no character is both a letter and a space, checked per code point by the tests, so
    counting letters among all characters counts them among the non-space ones)."""
    if text.isascii():
        data = text.encode("ascii")
        total = len(data.translate(None, _ASCII_SPACE))
        alpha = len(data) - len(data.translate(None, _ASCII_ALPHA))
    else:
        total = len(text) - sum(map(str.isspace, text))
        alpha = sum(map(str.isalpha, text))
    return (alpha / total) < 0.5 if total > 0 else False


def _markup_element_type(text: str):  # -> type[unstructured Text] | None
    """Element type of a paragraph the markup does not type, without NLP (``element_types: markup``).

    unstructured's ``derive_element_type_from_text`` with the same cheap rules in the same
    order (bullet -> ``ListItem``, US city/state/zip -> ``Address``, e-mail -> ``EmailAddress``,
    one character -> skipped) but without its spaCy sentence and verb checks: a paragraph is
    ``NarrativeText`` unless it is numeric or under half letters (``Text``). The address,
    e-mail and letter-share rules are unstructured's, run only where they can say yes
    (:func:`_is_us_city_state_zip`, :func:`_is_email_address`, :func:`_under_non_alpha_ratio`).
    """
    from unstructured.documents.elements import Address, EmailAddress, ListItem, NarrativeText, Text
    from unstructured.partition import text_type as tt

    if tt.is_bulleted_text(text):
        return ListItem
    if _is_us_city_state_zip(text):
        return Address
    if _is_email_address(text):
        return EmailAddress
    if len(text) < 2:
        return None
    if text.isnumeric() or _under_non_alpha_ratio(text):
        return Text
    return NarrativeText


def _plain_element(text: str, coordinates=None, coordinate_system=None):  # -> unstructured Element
    """Element of one plain-text paragraph (``element_types: markup``): the same ``Title``
    decisions as unstructured's ``partition.text.element_from_text``, without running spaCy on
    paragraphs that cannot be titles.

    unstructured types a paragraph ``NarrativeText`` if its NLP narrative check passes, else
    ``Title`` if :func:`unstructured.partition.text_type.is_possible_title` passes, else ``Text``.
    So a paragraph is a ``Title`` exactly when it could be a title and is not narrative. The
    title check rejects long paragraphs (more than 12 words) before any NLP; only the short
    ones that pass it get the narrative check (spaCy on a few words). A paragraph that cannot be
    a title is ``NarrativeText``, or ``Text`` when numeric or under half letters, as in
    :func:`_markup_element_type`: no chunker reads that difference. Bullets, e-mail addresses,
    US addresses and numbered lists come first, in unstructured's order.
    """
    from unstructured.documents.elements import Address, EmailAddress, ListItem, NarrativeText, Text, Title
    from unstructured.partition import text as ut

    if coordinates is not None:  # laid-out text (header/footer positions): unstructured decides
        return _ELEMENT_FROM_TEXT[0](text, coordinates, coordinate_system)
    if ut.is_bulleted_text(text):
        return ListItem(text=ut.clean_bullets(text))
    if _is_email_address(text):
        return EmailAddress(text=text)
    if _is_us_city_state_zip(text):
        return Address(text=text)
    if ut.is_possible_numbered_list(text):
        return ListItem(text=text)
    if ut.is_possible_title(text):
        return NarrativeText(text=text) if ut.is_possible_narrative_text(text) else Title(text=text)
    if text.isnumeric() or _under_non_alpha_ratio(text):
        return Text(text=text)
    return NarrativeText(text=text)


#: unstructured's own ``partition.text.element_from_text`` (saved at the first swap)
_ELEMENT_FROM_TEXT: list = []


@contextlib.contextmanager
def _swapped(hooks: Sequence[tuple[Any, str, Any]], caller: str) -> Iterator[None]:
    """Within the block, each ``(owner, name, replacement)`` of ``hooks`` (an attribute of a module
    or class of the pinned unstructured, in the owner's own namespace) is set to its
    replacement, and restored after; parsing workers are single-threaded. The one way
    ragline hooks into unstructured (the functions below name their hooks).

    Raises:
        RuntimeError: an owner no longer has that name (the pinned unstructured changed); names
            ``caller``, the function of this module to update.
    """
    for owner, name, _ in hooks:
        if name not in vars(owner):
            where = owner.__name__ if isinstance(owner, types.ModuleType) else f"{owner.__module__}.{owner.__qualname__}"
            raise RuntimeError(f"{where} has no {name}: the pinned unstructured version changed; "
                               f"update pipelines/load.py {caller}")
    saved = [vars(owner)[name] for owner, name, _ in hooks]
    for owner, name, new in hooks:
        setattr(owner, name, new)
    try:
        yield
    finally:
        for (owner, name, _), old in zip(hooks, saved):
            setattr(owner, name, old)


@contextlib.contextmanager
def element_types(mode: str) -> Iterator[None]:
    """Within the block, unstructured's HTML parser (HTML, Markdown, e-mail bodies, pandoc
    formats) types untyped paragraphs by :func:`_markup_element_type`, and its plain-text
    partitioner by :func:`_plain_element` (``mode="markup"``); ``"nlp"`` leaves unstructured's
    own NLP heuristics.

    The hooks: ``unstructured.partition.html.parser.derive_element_type_from_text`` and
    ``unstructured.partition.text.element_from_text`` (0.27.x), swapped and restored; parsing
    workers are single-threaded.

    Raises:
        RuntimeError: the pinned unstructured no longer has those functions.
    """
    if mode != "markup":
        yield
        return
    from unstructured.partition import text as ut
    from unstructured.partition.html import parser

    if not _ELEMENT_FROM_TEXT and hasattr(ut, "element_from_text"):
        _ELEMENT_FROM_TEXT.append(ut.element_from_text)
    with _swapped(((parser, "derive_element_type_from_text", _markup_element_type),
                   (ut, "element_from_text", _plain_element)), "element_types"):
        yield


def _partition(path: Path, suffix: str, data: bytes, strategy: str, html_drop: Sequence[str] = (),
               languages: Sequence[str] = ("eng",), from_bytes: bool = False) -> list:
    """Elements of one file; ``from_bytes`` (a remote entry: ``path`` is only a name) hands
    PDF and generic partitioners ``file=`` (the bytes) instead of ``filename=``."""
    from ragline.pipelines.offline import install_unstructured_nlp

    install_unstructured_nlp()
    langs = list(languages)  # unstructured: ["auto"] detects
    if suffix in formats.BYTES_PARTITIONERS:
        return formats.BYTES_PARTITIONERS[suffix](data)
    if suffix == ".eml":
        return _partition_email(data, strategy, html_drop, langs)
    if suffix in TEXT_SUFFIXES:
        text, encoding = _read_text(path, data)
        if not text or text.isspace():  # not text.strip(): that copies the whole text
            raise _LoadFailure("EmptyFile", f"{path}: only whitespace")
        if suffix in formats.TEXT_PARTITIONERS:
            parsed = formats.TEXT_PARTITIONERS[suffix](text)
        elif suffix in (".html", ".htm"):
            parsed = _partition_html(text, html_drop, langs)
        elif suffix in (".md", ".markdown"):
            from unstructured.partition.md import partition_md

            parsed = partition_md(text=text, languages=langs)
        else:
            parsed = _partition_plain(text, langs)
        return formats.Partition(parsed, encoding=encoding)
    if suffix == ".pdf":
        from unstructured.partition.pdf import partition_pdf

        where = {"file": io.BytesIO(data)} if from_bytes else {"filename": str(path)}
        return partition_pdf(**where, strategy=strategy, infer_table_structure=False,
                             languages=["eng"] if langs == ["auto"] else langs)  # OCR needs named languages
    from unstructured.partition.auto import partition

    if from_bytes:
        return partition(file=io.BytesIO(data), metadata_filename=path.name, strategy=strategy, languages=langs)
    return partition(filename=str(path), strategy=strategy, languages=langs)


#: plain-text files longer than this (characters) skip unstructured's per-paragraph
#: classification (which took 2.6 GB and 24 s for one 20 MB line) and become one
#: ``NarrativeText`` element per blank-line-separated paragraph.
LARGE_TEXT_CHARS = 1_000_000
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")


def _paragraph_elements(text: str) -> list:
    """Blank-line-separated paragraphs of ``text`` as unstructured ``NarrativeText`` elements.

    A text without blank lines is one element holding ``text`` itself (no copy).
    """
    from unstructured.documents.elements import NarrativeText

    out, start = [], 0
    for m in _PARAGRAPH_BREAK.finditer(text):
        if m.start() > start:
            out.append(NarrativeText(text=text[start:m.start()]))
        start = m.end()
    if start < len(text):
        out.append(NarrativeText(text=text[start:] if start else text))
    return out


class _DroppingEtree:
    """``lxml.etree`` as unstructured's HTML partitioner sees it inside :func:`_html_drop`: its
    ``fromstring`` (the page's one parse) drops the ``load.html_drop`` elements from the tree."""

    def __init__(self, etree, selectors: Sequence[str]) -> None:
        self._etree = etree
        self._selectors = selectors

    def __getattr__(self, name: str):
        return getattr(self._etree, name)

    def fromstring(self, text, parser=None, **kwargs):
        root = self._etree.fromstring(text, parser, **kwargs)
        drop_matches(root, self._selectors)
        return root


@contextlib.contextmanager
def _html_drop(selectors: Sequence[str]) -> Iterator[None]:
    """Within the block, unstructured's ``partition_html`` drops the elements matching
    ``selectors`` from the tree it parses, right after parsing (before its own clean-up), so a
    page is parsed once instead of parsed, serialized and parsed again (:func:`strip_html`):
    the same elements, at 1/2 of the cost of ``html_drop``.

    The hook: the ``etree`` name of ``unstructured.partition.html.partition`` (0.27.x), swapped
    and restored; parsing workers are single-threaded.

    Raises:
        RuntimeError: the pinned unstructured no longer has that name (a version that parses
            elsewhere is caught by ``tests/test_load.py``: the dropped text would stay).
    """
    if not selectors:
        yield
        return
    from unstructured.partition.html import partition as html_partition

    with _swapped(((html_partition, "etree", _DroppingEtree(getattr(html_partition, "etree", None), selectors)),),
                  "_html_drop"):
        yield


_KATEX_REF = re.compile(r"&#(?:0*(?:107|97|116|101|120)(?!\d)|[xX]0*(?:6[bB]|61|74|65|78)(?![0-9a-fA-F]))")


def _katex_possible(text: str) -> bool:
    """Whether a class attribute of the page ``text`` can hold ``katex`` once parsed: the word, or
    a numeric character reference to one of its letters (no named reference stands for an
    ASCII letter: ``html.entities``; checked by the tests)."""
    return "katex" in text or _KATEX_REF.search(text) is not None


class _NoKatexMath:
    """``Math`` as unstructured's ``partition_html`` uses it (``Math._normalize_katex(root)``,
    its only use there), for a page that cannot hold KaTeX: nothing to normalize."""

    @staticmethod
    def _normalize_katex(root) -> None:  # noqa: ANN001 - an lxml element
        return None


@contextlib.contextmanager
def _katex_gate(text: str) -> Iterator[None]:
    """Within the block, unstructured's ``partition_html`` skips its KaTeX clean-up
    (``Math._normalize_katex``: an XPath matching the class token ``katex`` on every element,
    5% of its CPU on the Python docs) when ``text`` cannot hold that class
    (:func:`_katex_possible`): it would find nothing.

    The hook: the ``Math`` name of ``unstructured.partition.html.partition`` (0.27.x), swapped
    and restored; parsing workers are single-threaded.

    Raises:
        RuntimeError: the pinned unstructured no longer has that name.
    """
    if _katex_possible(text):
        yield
        return
    from unstructured.partition.html import partition as html_partition

    math = getattr(html_partition, "Math", None)
    if not hasattr(math, "_normalize_katex"):  # (what _NoKatexMath stands in for)
        raise RuntimeError("unstructured.partition.html.partition has no Math._normalize_katex: the pinned "
                           "unstructured version changed; update pipelines/load.py _katex_gate")
    with _swapped(((html_partition, "Math", _NoKatexMath),), "_katex_gate"):
        yield


def _no_annotations(annotations) -> Mapping:  # noqa: ANN001 - an iterable of mappings, not read
    """unstructured's ``_consolidate_annotations`` for :func:`_unread_annotations`: none."""
    return _NO_ANNOTATIONS


_NO_ANNOTATIONS: Mapping = types.MappingProxyType({})


def _no_segment_annotation(self, text: str, emphasis: str) -> Mapping:  # noqa: ANN001 - a Phrasing element
    """unstructured's ``Phrasing._annotation`` (a text segment's emphasis) for :func:`_unread_annotations`: none."""
    return _NO_ANNOTATIONS


@contextlib.contextmanager
def _unread_annotations() -> Iterator[None]:
    """Within the block, unstructured's HTML parser makes no text-segment annotations
    (``Phrasing._annotation``) and merges none into its elements' metadata
    (``_consolidate_annotations``): the ``link_texts``, ``link_urls`` and ``emphasized_text_*``
    fields, which ragline does not read (a tenth of the partitioner's CPU on the Python docs).
    Categories and texts do not depend on them.

    The hooks: ``unstructured.partition.html.parser._consolidate_annotations`` and
    ``Phrasing._annotation`` (0.27.x), swapped and restored; parsing workers are single-threaded.

    Raises:
        RuntimeError: the pinned unstructured no longer has it.
    """
    from unstructured.partition.html import parser

    with _swapped(((parser, "_consolidate_annotations", _no_annotations),
                   (parser.Phrasing, "_annotation", _no_segment_annotation)), "_unread_annotations"):
        yield


#: what the attribute unstructured's HTML parser reads page numbers from holds, in any case
#: (``data-page-number``: names are case-insensitive in HTML); the literal ``-`` first makes the
#: search of a page that holds none fast (a scan for ``-``, not a case-folded match at every character)
_PAGE_ATTR = re.compile(r"-(?i:page-number)")
_NO_PAGE = property(lambda self: None, doc="No page number: the page has no data-page-number attribute.")


@contextlib.contextmanager
def _page_numbers(text: str) -> Iterator[None]:
    """Within the block, unstructured's HTML parser looks for no page number when ``text`` has no
    ``data-page-number`` attribute (it would walk from every element up to the root to find none:
    5% of its CPU on the Python docs); with one, it does as before.

    The hooks: the ``_page_number`` properties of ``Flow`` and ``Math`` in
    ``unstructured.partition.html.parser`` (0.27.x), swapped and restored; parsing workers are
    single-threaded.

    Raises:
        RuntimeError: the pinned unstructured no longer has them.
    """
    if _PAGE_ATTR.search(text):
        yield
        return
    from unstructured.partition.html import parser

    with _swapped(((parser.Flow, "_page_number", _NO_PAGE), (parser.Math, "_page_number", _NO_PAGE)),
                  "_page_numbers"):
        yield


@functools.lru_cache(maxsize=1)
def _lean_fields() -> tuple[type, frozenset[str]]:
    """unstructured's ``ElementMetadata`` and the fields :func:`lean_metadata` sets directly: those
    its constructor assigns as given (every parameter but ``filename``/``file_directory``, which
    it splits, and the debug fields it drops)."""
    import inspect

    from unstructured.documents.elements import ElementMetadata

    names = set(inspect.signature(ElementMetadata.__init__).parameters) - {"self", "filename", "file_directory"}
    return ElementMetadata, frozenset(names - set(ElementMetadata.DEBUG_FIELD_NAMES))


def lean_metadata(**fields: Any):  # -> unstructured ElementMetadata
    """``ElementMetadata(**fields)`` without its constructor's 49 attribute assignments (each
    through its ``__setattr__``): the instance's ``__dict__`` holds the fields that are not
    ``None``, as the constructor leaves it. Any other field: the constructor itself."""
    cls, lean = _lean_fields()
    if not fields.keys() <= lean:
        return cls(**fields)
    md = object.__new__(cls)
    md.__dict__.update({k: v for k, v in fields.items() if v is not None})
    return md


@contextlib.contextmanager
def _lean_element_metadata() -> Iterator[None]:
    """Within the block, unstructured's HTML parser builds its elements' metadata with
    :func:`lean_metadata` (the same objects; its constructor was a tenth of the parser's CPU).

    The hook: the ``ElementMetadata`` name of ``unstructured.partition.html.parser`` (0.27.x),
    swapped and restored; parsing workers are single-threaded.

    Raises:
        RuntimeError: the pinned unstructured no longer has that name.
    """
    from unstructured.partition.html import parser

    if getattr(parser, "ElementMetadata", None) is not _lean_fields()[0]:  # (the class lean_metadata builds)
        raise RuntimeError("unstructured.partition.html.parser has no ElementMetadata: the pinned unstructured "
                           "version changed; update pipelines/load.py _lean_element_metadata")
    with _swapped(((parser, "ElementMetadata", lean_metadata),), "_lean_element_metadata"):
        yield


@functools.lru_cache(maxsize=1)
def _html_partitioner() -> tuple[Callable[..., list], Callable[[list], list], Callable[[list], list]]:
    """unstructured's ``partition_html`` without its decorators (``inspect.unwrap``), and the two
    steps of its ``apply_metadata`` decorator whose output ragline reads:
    ``_uniqueify_elements_and_metadata`` and ``set_element_hierarchy`` (``parent_id``).

    Raises:
        RuntimeError: the pinned unstructured (0.27.x) no longer has them.
    """
    import inspect

    from unstructured.partition.common import metadata
    from unstructured.partition.html import partition_html

    raw = inspect.unwrap(partition_html)
    steps = [getattr(metadata, name, None) for name in ("_uniqueify_elements_and_metadata", "set_element_hierarchy")]
    if raw is partition_html or not all(callable(f) for f in steps):
        raise RuntimeError("unstructured's partition_html is no longer a decorated function beside "
                           "_uniqueify_elements_and_metadata and set_element_hierarchy: the pinned unstructured "
                           "version changed; update pipelines/load.py _html_partitioner")
    return raw, steps[0], steps[1]


def _partition_html(text: str, html_drop: Sequence[str], languages: list[str]) -> list:
    """Elements of an HTML page: unstructured's ``partition_html`` (with ``load.html_drop``,
    :func:`_html_drop`), of which ragline reads each element's category, text, id,
    ``metadata.page_number`` and ``metadata.parent_id`` (``pipelines/formats.py``'s contract).

    Its ``apply_metadata`` decorator's steps that set nothing of those are skipped (a fifth of
    the partitioner's CPU on the Python docs): the ``languages`` metadata (given or detected per
    document: ``languages`` is not used here), the ``filetype`` metadata (a new
    ``ElementMetadata`` merged into every element's), and the sha256 element ids (ids only link
    parents, as ``unique_element_ids=True`` gave them). Its steps that do (instances made unique,
    ``set_element_hierarchy``) run as the decorator runs them (:func:`_html_partitioner`). Its
    KaTeX clean-up runs only on a page that can hold KaTeX (:func:`_katex_gate`), and the link
    and emphasis metadata of its elements are not gathered (:func:`_unread_annotations`); their
    metadata objects are built without the constructor's per-field assignments (:func:`lean_metadata`),
    and a page without page-number attributes is not searched for them (:func:`_page_numbers`).
    ``tests/test_load.py`` compares the elements with ``partition_html``'s.
    """
    partition, uniqueify, hierarchy = _html_partitioner()
    with _html_drop(html_drop), _katex_gate(text), _page_numbers(text), _unread_annotations(), \
            _lean_element_metadata():
        elements = partition(text=text)
    return hierarchy(uniqueify(elements))


def _partition_plain(text: str, languages: list[str]) -> list:
    if len(text) > LARGE_TEXT_CHARS:
        return _paragraph_elements(text)
    from unstructured.partition.text import partition_text

    return partition_text(text=text, languages=languages)


def _partition_email(data: bytes, strategy: str, html_drop: Sequence[str], languages: list[str]) -> "formats.Partition":
    """An e-mail (:func:`formats.partition_email`); attachments go through :func:`_partition`."""
    import tempfile

    def attachment(name: str, blob: bytes) -> list:
        suffix = Path(name).suffix.lower()
        with tempfile.TemporaryDirectory(prefix="ragline-attachment-") as tmp:
            p = Path(tmp) / f"attachment{suffix}"  # never a path from the message
            p.write_bytes(blob)
            try:
                return list(_partition(p, suffix, blob, strategy, html_drop, languages))
            except _LoadFailure as f:  # name the attachment, not the temporary file
                raise formats.FormatError(f.error_type, str(f).replace(str(p), name)) from f

    return formats.partition_email(
        data, lambda text: _partition_plain(text, languages), lambda text: _partition_html(text, html_drop, languages),
        attachment,
        supported=[s for s in SUPPORTED_TYPES if s != ".eml"],
    )


_PERMALINK = "\u00b6"  # ¶, the Sphinx/MkDocs permalink sign


def _section_title(text: str) -> str:
    """A heading as a section-path entry: normalized, without a trailing permalink ``¶``."""
    return normalize_text(text).rstrip(_PERMALINK).rstrip()


def _section_paths(elements: list) -> list[tuple[str, ...]]:
    """The heading path of every element: the titles on its chain of parents (unstructured's
    ``parent_id``), itself included when it is a ``Title``, outermost first.

    Each chain is walked once: an element's path extends its parent's (memoized by id). A
    document whose ids repeat or whose parent links loop is walked element by element, as
    before, each walk stopping at the first element met twice.
    """
    by_id = {e.id: e for e in elements}
    if len(by_id) == len(elements):
        memo: dict[str, tuple[str, ...]] = {}
        out = []
        for e in elements:
            start = e if e.category == "Title" else by_id.get(e.metadata.parent_id)
            path = _chain_titles(start, by_id, memo)
            if path is None:  # a loop of parent links
                return _section_paths_walked(elements, by_id)
            out.append(path)
        return out
    return _section_paths_walked(elements, by_id)


def _chain_titles(start, by_id: dict, memo: dict) -> tuple[str, ...] | None:
    """Titles on the chain of parents from ``start`` up, outermost first; ``None`` on a loop."""
    stack: list = []
    seen: set[str] = set()
    cur = start
    while cur is not None and cur.id not in memo:
        if cur.id in seen:
            return None
        seen.add(cur.id)
        stack.append(cur)
        cur = by_id.get(cur.metadata.parent_id)
    path = memo[cur.id] if cur is not None else ()
    for node in reversed(stack):
        if node.category == "Title":
            path = (*path, _section_title(node.text))
        memo[node.id] = path
    return path


def _section_paths_walked(elements: list, by_id: dict) -> list[tuple[str, ...]]:
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


#: zip containers whose declared uncompressed size is checked before parsing (``load.max_unzipped_mb``).
ZIP_SUFFIXES = {".docx", ".docm", ".pptx", ".pptm", ".xlsx", ".xlsm", ".epub", ".odt", ".ods", ".odp"}
_ZIP_RATIO_FLOOR = 1 << 20  # members smaller than 1 MiB are never a bomb, whatever their ratio


def check_zip_container(uri: str, data: bytes, max_unzipped_mb: float, max_ratio: float) -> None:
    """Refuse a zip container (DOCX, PPTX, EPUB, ODT...) that would expand past the limits.

    Reads only the central directory (no member is decompressed). Python's zipfile never
    inflates a member past its declared size, so declared sizes bound what a parser reads.

    Args:
        uri: the file, for the message.
        data: the container's bytes.
        max_unzipped_mb: limit on the sum of declared uncompressed sizes, MiB.
        max_ratio: limit on uncompressed/compressed size of a member over 1 MiB.

    Raises:
        _LoadFailure: ``ZipBomb`` naming the member, its sizes and the param to change.
            An unreadable zip is left to the parser (which reports it).
    """
    import io
    import zipfile

    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return
    total = sum(i.file_size for i in infos)
    if total > max_unzipped_mb * 1048576:
        big = max(infos, key=lambda i: i.file_size)
        raise _LoadFailure(
            "ZipBomb",
            f"{uri}: zip members declare {total / 1048576:.0f} MiB uncompressed (largest {big.filename}: "
            f"{big.file_size / 1048576:.0f} MiB) from {len(data) / 1048576:.1f} MiB, over "
            f"load.max_unzipped_mb={max_unzipped_mb:g}; not parsed",
        )
    for i in infos:
        if i.file_size > _ZIP_RATIO_FLOOR and i.file_size > max_ratio * max(i.compress_size, 1):
            raise _LoadFailure(
                "ZipBomb",
                f"{uri}: zip member {i.filename} expands {i.file_size / max(i.compress_size, 1):.0f}x "
                f"({i.compress_size} -> {i.file_size} bytes), over load.max_zip_ratio={max_ratio:g}; not parsed",
            )


_SIGNATURES = (
    (b"PK\x03\x04", "a zip archive (DOCX/ODT/EPUB?)"), (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"), (b"{\\rtf", "an RTF document"), (b"\xd0\xcf\x11\xe0", "a legacy Office (OLE2) file"),
    (b"\x1f\x8b", "a gzip archive"),
)


def sniff_content(data: bytes) -> str:
    """What the first bytes of ``data`` look like: ``"HTML"``, ``"a PNG image"``, ``"text"``, ..."""
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    head = data[:1024].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "HTML"
    if head.startswith(b"<?xml"):
        return "XML"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data"
    return "text"


def check_pdf(uri: str, data: bytes) -> int:
    """Check a file named ``.pdf`` before partitioning; returns its page count.

    Raises:
        _LoadFailure: ``NotAPDF`` (no ``%PDF-`` header in the first 1 KiB, the PDF rule of
            ISO 32000-1 7.5.2; the message says what the content looks like), ``CorruptPDF``
            (truncated: no ``%%EOF`` in the last 8 KiB; or pypdf cannot read its pages),
            ``EncryptedPDF`` (needs a password: the empty user password does not open it).
    """
    import io
    import logging

    if b"%PDF-" not in data[:1024]:
        raise _LoadFailure(
            "NotAPDF", f"{uri}: named .pdf but the content is {sniff_content(data)} (no %PDF- header); "
            "rename it to its real type or re-export it")
    if b"%%EOF" not in data[-8192:]:
        raise _LoadFailure(
            "CorruptPDF", f"{uri}: truncated PDF ({len(data)} bytes, no %%EOF marker at the end); "
            "download or export it again")
    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # repairs of damaged files are reported here, once
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                opened = bool(reader.decrypt(""))
            except Exception:  # pypdf's DependencyError/FileNotDecryptedError and friends
                opened = False
            if not opened:
                raise _LoadFailure(
                    "EncryptedPDF", f"{uri}: encrypted PDF that needs a password; "
                    "save an unencrypted copy to index it")
        pages = len(reader.pages)
    except _LoadFailure:
        raise
    except Exception as e:  # pypdf raises PdfReadError, KeyError, ValueError... on damaged files
        raise _LoadFailure("CorruptPDF", f"{uri}: damaged PDF ({type(e).__name__}: {e}); export it again") from e
    if pages == 0:
        raise _LoadFailure("CorruptPDF", f"{uri}: PDF without pages")
    return pages


def load_document(src: SourceFile, cfg: LoadConfig) -> Document | QuarantineRecord:
    """Load one file into a :class:`Document`, or a :class:`QuarantineRecord` explaining why not.

    Never raises for bad input: files discovery refused (special files, links out of the
    source roots or in loops, broken links), empty files, unsupported types, files over
    ``cfg.max_file_mb``, zip containers over ``cfg.max_unzipped_mb``/``cfg.max_zip_ratio``,
    binary (any NUL byte) or non-UTF-8 text, encrypted/truncated/disguised PDFs and PDFs
    without a text layer, parser errors, and running out of memory (``MemoryLimit``) all
    come back as quarantine records, as does a document whose partition yields no text (a
    failure, not a silent success). Only regular files are opened (``O_NONBLOCK``, checked
    with ``fstat``), so a FIFO can never block a run. Time and memory limits apply in the
    workers of :func:`load_documents`, not here.
    """
    path = src.path
    sha = ""
    facts: dict[str, str] = {}
    try:
        if src.skip_type:
            raise _LoadFailure(src.skip_type, src.skip_message or f"{src.uri}: not read ({src.skip_type})")
        if not src.source and path.is_symlink() and not path.exists():
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
        if src.source:  # a remote entry (pipelines/sources.py): downloaded here, in the parsing worker
            data, facts, size = _read_remote(src, cfg)
        else:
            data, size = _read_local(src, cfg)
        sha = sha256_bytes(data)
        pages = 0
        if suffix in ZIP_SUFFIXES:
            check_zip_container(src.uri, data, cfg.max_unzipped_mb, cfg.max_zip_ratio)
        elif suffix == ".pdf":
            pages = check_pdf(src.uri, data)
        title_hint = _title_hint(suffix, data)
        try:
            with element_types(cfg.element_types):
                raw = _partition(path, suffix, data, cfg.strategy, cfg.html_drop, cfg.languages,
                                 from_bytes=bool(src.source))
        except (_LoadFailure, MemoryError):
            raise
        except formats.FormatError as e:  # a malformed file of a supported format: its own reason
            raise _LoadFailure(e.error_type, f"{src.uri}: {e}") from e
        except Exception as e:  # parser libraries raise anything; keep the type name
            if pages:
                raise _LoadFailure("CorruptPDF", f"{src.uri}: damaged PDF ({type(e).__name__}: {e})".strip()) from e
            raise _LoadFailure(type(e).__name__, f"{src.uri}: {type(e).__name__}: {e}".strip()) from e
        del data
        try:
            doc = _build_document(src, sha, mime, size, raw, title_hint)
            return dataclasses.replace(doc, metadata={**doc.metadata, **facts}) if facts else doc
        except _LoadFailure as f:
            if pages and f.error_type == "NoElements":
                raise _LoadFailure(
                    "NoTextLayer", f"{src.uri}: {pages} page(s) but no text layer (a scan or image-only PDF?); "
                    "its text needs OCR (load.strategy: ocr_only or hi_res, with Tesseract installed)") from None
            raise
    except _LoadFailure as f:
        return QuarantineRecord(src.uri, STAGE, f.error_type, str(f), _quarantine_sha(src, sha))
    except MemoryError:
        return QuarantineRecord(src.uri, STAGE, "MemoryLimit",
                                f"{src.uri}: out of memory while parsing (load.max_worker_mb={cfg.max_worker_mb})",
                                _quarantine_sha(src, sha))
    except OSError as e:
        return QuarantineRecord(src.uri, STAGE, type(e).__name__, f"{src.uri}: {e}", _quarantine_sha(src, sha))


def _quarantine_sha(src: SourceFile, sha: str) -> str:
    """The ``sha256`` of a quarantine record: the bytes' sha256 for a local file; for a remote
    entry its listing fingerprint (:func:`pipelines.sources.listing_fingerprint`), which a
    refresh compares without downloading."""
    if not src.source:
        return sha
    from ragline.pipelines.sources import listing_fingerprint

    return listing_fingerprint(src)


def _read_remote(src: SourceFile, cfg: LoadConfig) -> tuple[bytes, dict[str, str], int]:
    """``(bytes, facts, size)`` of a remote entry (:func:`pipelines.sources.read_entry`)."""
    from ragline.pipelines.sources import DownloadFailed, read_entry

    try:
        data, facts = read_entry(src, cfg)
    except DownloadFailed as e:
        raise _LoadFailure(e.error_type, str(e)) from None
    if not data:
        raise _LoadFailure("EmptyFile", f"{src.uri}: empty (0 bytes)")
    return data, facts, len(data)


def _read_local(src: SourceFile, cfg: LoadConfig) -> tuple[bytes, int]:
    """``(bytes, size)`` of a local regular file, opened without blocking (a FIFO never blocks).

    Raises:
        _LoadFailure: not a regular file, empty, over ``cfg.max_file_mb``.
        OSError: it cannot be read.
    """
    fd = os.open(src.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise _LoadFailure("NotARegularFile", f"{src.uri}: {file_kind(st.st_mode)}, not a regular file; not read")
        size = st.st_size
        if size == 0:
            raise _LoadFailure("EmptyFile", f"{src.uri}: empty file (0 bytes)")
        if size > cfg.max_file_mb * 1024 * 1024:
            raise _LoadFailure(
                "FileTooLarge",
                f"{src.uri}: {size / 1048576:.1f} MiB exceeds load.max_file_mb={cfg.max_file_mb}",
            )
        return f.read(size), size


# ---------------------------------------------------------------- parsing workers
#: Test hook (fault injection, like ``RAGLINE_CRASH_AT``): ``KIND:NAME[,KIND:NAME...]`` makes
#: the parsing worker that meets the file named NAME ``exit`` (``os._exit(3)``), ``kill``
#: itself (SIGKILL), ``alloc`` memory until its limit, ``sleep`` for an hour, or kill the
#: fork server the workers come from (``killserver``: the pool breaks; once, marked by a file
#: ``.NAME.killed`` beside it). Acts only in a worker with limits (never in the calling process).
FAULT_ENV = "RAGLINE_LOAD_FAULT"
_IN_LIMITED_WORKER = False


@dataclass(frozen=True, slots=True)
class FileLoadStats:
    """How loading one file went (for benchmarks and progress reports).

    Attributes:
        uri: the file.
        seconds: wall time from the worker picking the file up to its result (or the kill).
        peak_rss_mb: the worker's peak resident set size while it parsed this file, MiB
            (``VmHWM`` of ``/proc/self/status``, reset before each file through
            ``/proc/self/clear_refs``); ``None`` when the worker died or was not measured.
        outcome: ``"document"`` or the quarantine reason.
    """

    uri: str
    seconds: float
    peak_rss_mb: float | None
    outcome: str


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _worker_init(nice: int = 0) -> None:
    import logging

    global _IN_LIMITED_WORKER
    _IN_LIMITED_WORKER = True
    if nice:
        os.nice(nice)
    # quiet by default: what a parser skips ("Skipping attachment ...") is not the user's
    # business; what fails reaches the quarantine table
    logging.getLogger("unstructured").setLevel(logging.ERROR)


#: headroom a worker always gets for one file, MiB, even when it is already near its limit
_MIN_HEADROOM_MB = 128


def _limit_memory(suffix: str, max_worker_mb: int) -> None:
    """Cap this worker's memory for the next file so its resident size stays within
    ``max_worker_mb`` MiB: ``RLIMIT_AS`` = current address space + (``max_worker_mb`` -
    current resident size), at least :data:`_MIN_HEADROOM_MB`.

    Done before every file, after importing what the file's parser needs (importing the PDF
    stack maps torch and OpenCV, several hundred MiB of address space), so the headroom is
    the file's. Memory a file touches grows the address space at least as much as the
    resident size, so the resident size cannot pass the limit (mapped but untouched memory
    makes the cap stricter, not looser). The soft limit is raised back first (allowed up to
    the hard limit).
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    if suffix == ".pdf":
        import unstructured.partition.pdf  # noqa: F401
    headroom_kb = max(max_worker_mb * 1024 - _status_kb("VmRSS"), _MIN_HEADROOM_MB * 1024)
    limit = (_status_kb("VmSize") + headroom_kb) * 1024
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _inject_fault(src: SourceFile, spec: str) -> None:
    import signal
    import time

    for item in spec.split(","):
        kind, _, name = item.strip().partition(":")
        if not name or Path(src.uri).name != name:
            continue
        if kind == "exit":
            os._exit(3)
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "sleep":
            time.sleep(3600)
        if kind == "killserver":
            marker = src.path.with_name(f".{src.path.name}.killed")
            if not marker.exists():
                marker.touch()
                os.kill(os.getppid(), signal.SIGKILL)  # in a forked worker, the parent is the fork server
                os._exit(3)
        if kind == "alloc":
            hog = []
            while True:  # ends in MemoryError at the worker's RLIMIT_AS
                hog.append(b"\x01" * (64 << 20))


#: environment variables that object-store clients read (credentials, endpoints, regions)
REMOTE_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCS_", "AZURE_", "FSSPEC_")


def _remote_env() -> dict[str, str]:
    """The caller's object-store variables, handed to a parsing worker with each remote entry:
    workers fork from a server that may have started before the caller set them."""
    return {k: v for k, v in os.environ.items() if k.startswith(REMOTE_ENV_PREFIXES)}


def _load_in_worker(
    src: SourceFile, cfg: LoadConfig, fault: str, env: dict[str, str] | None = None
) -> tuple[Document | QuarantineRecord, float | None, float]:
    import time

    if env:  # the caller's object-store settings now (the worker forked from a server started earlier)
        os.environ.update(env)

    t0 = time.monotonic()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM: the peak is this file's, not the worker's life's
        measured = True
    except OSError:
        measured = False
    if _IN_LIMITED_WORKER:
        _limit_memory(src.path.suffix.lower(), cfg.max_worker_mb)
    if fault and _IN_LIMITED_WORKER:
        try:
            _inject_fault(src, fault)
        except MemoryError:
            return (QuarantineRecord(src.uri, STAGE, "MemoryLimit",
                                     f"{src.uri}: out of memory while parsing (load.max_worker_mb={cfg.max_worker_mb})"),
                    _status_kb("VmHWM") / 1024 if measured else None, time.monotonic() - t0)
    result = load_document(src, cfg)
    return result, (_status_kb("VmHWM") / 1024 if measured else None), time.monotonic() - t0


#: modules the fork server imports when the calling process has them: every new worker runs
#: the caller's main script again (multiprocessing's ``__main__`` fix-up), and the ``ragline``
#: command's script is one import of the CLI, 0.13 CPU-s a worker (3.5 CPU-s per 530 files at
#: ``load.max_tasks_per_child: 20``) unless the fork server has it already
_PRELOAD_IF_LOADED = ("ragline.pipelines.cli",)


def _worker_context():
    import sys

    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(["ragline.pipelines.load_preload",
                                *(m for m in _PRELOAD_IF_LOADED if m in sys.modules)])
    return ctx


def prestart_parsers() -> None:
    """Start the fork server of the parsing workers now, so that its preload (unstructured,
    spaCy, the parsers' warm-up: seconds of CPU) runs while the caller does something else
    (an ingest: while Prefect's temporary API starts). Idempotent; returns at once."""
    from multiprocessing import forkserver

    _worker_context()
    forkserver.ensure_running()


def _died(src: SourceFile, cfg: LoadConfig, exitcode: int | None) -> QuarantineRecord:
    import signal

    if exitcode is not None and exitcode < 0:
        sig = signal.Signals(-exitcode).name if -exitcode in signal.Signals._value2member_map_ else str(-exitcode)
        how = f"was killed by {sig}"
    else:
        how = f"exited with status {exitcode}"
    if exitcode == -9:  # SIGKILL from outside: on Linux almost always the OOM killer
        return QuarantineRecord(src.uri, STAGE, "MemoryLimit",
                                f"{src.uri}: the parsing worker {how} (out of memory?); "
                                f"lower load.max_worker_mb={cfg.max_worker_mb} or exclude the file")
    return QuarantineRecord(src.uri, STAGE, "WorkerCrashed",
                            f"{src.uri}: the parsing worker {how} while parsing this file; the run went on")


#: times a broken worker pool is replaced before the files still waiting are quarantined
POOL_ROUNDS = 3

#: files handed to the pool ahead of those delivered, per worker: parsing runs at most this far
#: ahead of a ``deliver`` that is busy (a streamed ingest writing a segment), so the parsed but not
#: yet delivered documents stay a few dozen, whatever the corpus size (issue 12, bounded memory)
PREFETCH_PER_WORKER = 32


class _TrackedContext:
    """The parsing workers' multiprocessing context, recording every worker process the pool
    starts, so that :func:`_run_pool` can stop them all before the pool closes its channels.

    Pebble 5 (``WorkerChannel.close``) unlinks the channel's named semaphores *before* it stops
    its workers; a worker still starting at that moment (unpickling its channel) dies with a
    ``FileNotFoundError`` traceback on stderr. Stopping every started worker first keeps runs quiet.
    """

    def __init__(self, ctx) -> None:
        self._ctx = ctx
        self.processes: list = []

    def __getattr__(self, name: str):
        return getattr(self._ctx, name)

    def Process(self, *args, **kwargs):  # noqa: N802 (multiprocessing's name)
        self.processes = [p for p in self.processes if p.pid is None or p.exitcode is None]
        proc = self._ctx.Process(*args, **kwargs)
        self.processes.append(proc)
        return proc


def _stop_pool(pool, ctx: _TrackedContext) -> None:
    """Stop ``pool``: no new worker, every started worker stopped, then the pool joined."""
    pool.stop()
    manager = getattr(pool, "_pool_manager_loop", None)  # pebble's loop that starts replacement workers
    if manager is not None:
        manager.join(timeout=30)
    started = [p for p in ctx.processes if p.pid is not None]
    for proc in started:
        if proc.exitcode is None:
            proc.terminate()
    for proc in started:
        proc.join(timeout=5)
        if proc.exitcode is None:
            proc.kill()
            proc.join(timeout=5)
    try:
        pool.join(timeout=30)
    except Exception:  # a broken pool may fail to join; its workers are stopped
        pass


def _run_pool(
    files: Sequence[SourceFile], todo: list[int], cfg: LoadConfig, fault: str,
    done: Callable[[int, Document | QuarantineRecord, float, float | None], None], nice: int = 0,
) -> list[int]:
    """Parse ``files[i]`` for ``i`` in ``todo`` in one pool; returns the indices left when the
    pool itself broke (BrokenProcessPool: its fork server died, it could not start a worker),
    for the caller to resubmit to a new pool."""
    import time
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures import TimeoutError as FutureTimeout
    from concurrent.futures.process import BrokenProcessPool

    from pebble import ProcessExpired, ProcessPool

    ctx = _TrackedContext(_worker_context())
    pool = ProcessPool(max_workers=min(cfg.workers, len(todo)), max_tasks=cfg.max_tasks_per_child,
                       initializer=_worker_init, initargs=(nice,), context=ctx)
    futures: dict = {}  # scheduled and not yet delivered -> file index
    left: list[int] = []
    window = max(1, cfg.workers) * PREFETCH_PER_WORKER
    at = 0  # todo[at:] not scheduled yet

    def schedule() -> None:
        nonlocal at
        try:
            while at < len(todo) and len(futures) < window:
                i = todo[at]
                env = _remote_env() if files[i].source else None
                futures[pool.schedule(_load_in_worker, args=(files[i], cfg, fault, env), timeout=cfg.timeout_s)] = i
                at += 1
        except (BrokenProcessPool, RuntimeError):  # broken: the rest goes to a new pool
            left.extend(todo[at:])
            at = len(todo)

    try:
        started = time.monotonic()
        schedule()
        while futures:
            finished, _ = wait(list(futures), timeout=1.0, return_when=FIRST_COMPLETED)
            if not finished and not pool.active:  # broken: queued tasks would never finish
                left += list(futures.values()) + todo[at:]
                break
            # in file order (a set has none), so that one worker delivers the files in file order;
            # each future let go once delivered (it holds its Document: with keep=False nothing else does)
            batch = sorted(finished, key=futures.__getitem__, reverse=True)
            del finished
            while batch:
                fut = batch.pop()
                i = futures.pop(fut)
                src = files[i]
                seconds = time.monotonic() - started  # upper bound, for files whose worker did not answer
                try:
                    r, peak, seconds = fut.result()
                except FutureTimeout:
                    seconds = cfg.timeout_s
                    r, peak = QuarantineRecord(src.uri, STAGE, "Timeout",
                                               f"{src.uri}: parsing took longer than load.timeout_s={cfg.timeout_s:g}; "
                                               "the worker was stopped"), None
                except ProcessExpired as e:
                    r, peak = _died(src, cfg, e.exitcode), None
                except BrokenProcessPool:
                    left.append(i)
                    continue
                except Exception as e:  # the result could not come back (pickling, ...)
                    r, peak = QuarantineRecord(src.uri, STAGE, "WorkerError",
                                               f"{src.uri}: {type(e).__name__}: {e}"), None
                del fut
                done(i, r, seconds, peak)
            schedule()  # as many files again as were delivered (none while ``done`` is busy)
    finally:
        # stop, not close: every file is done (or will be resubmitted)
        _stop_pool(pool, ctx)
    return sorted(left)


def load_documents(
    files: Sequence[SourceFile],
    cfg: LoadConfig,
    progress: Callable[[int], None] | None = None,
    observe: Callable[[FileLoadStats], None] | None = None,
    deliver: Callable[[int, Document | QuarantineRecord], None] | None = None,
    nice: int = 0,
    keep: bool = True,
) -> tuple[list[Document], list[QuarantineRecord]]:
    """Stage ``load``: partition every file in ``cfg.workers`` limited, recycled worker processes.

    Workers are forked from a fork server that preloaded the parsers
    (:mod:`pipelines.load_preload`), run at most ``cfg.max_tasks_per_child`` files each, and
    may grow by ``cfg.max_worker_mb`` MiB of address space (``RLIMIT_AS``). A file that takes
    longer than ``cfg.timeout_s`` has its worker killed and is quarantined as ``Timeout``; a
    worker that dies (``os._exit``, a segfault in a parser, the OOM killer) is replaced and
    takes only its own file with it (``WorkerCrashed`` / ``MemoryLimit``); the other files
    go on. Pool: pebble's ``ProcessPool`` (per-task timeouts, worker replacement). When the
    pool itself breaks (``BrokenProcessPool``: its fork server died, a worker cannot start),
    the files not yet done are resubmitted to a new pool, up to :data:`POOL_ROUNDS` times.
    Files that discovery refused are quarantined here without a worker.

    Args:
        files: files from :func:`discover_files`.
        cfg: the ``load:`` params.
        progress: called with the number of files finished since the last call.
        observe: called once per file with its :class:`FileLoadStats`.
        deliver: called once per file, in the calling thread, with its index in ``files`` and
            its result, as soon as it is parsed (completion order; :mod:`pipelines.stream`).
            Parsing runs at most ``cfg.workers`` × :data:`PREFETCH_PER_WORKER` files ahead of
            it, so a ``deliver`` that takes long (a segment written) does not pile up documents.
        nice: niceness added to the parsing workers (``os.nice``), so that work running beside
            them (the embedder) keeps the cores.
        keep: False: the documents are not kept once delivered (``deliver`` owns them; the
            returned document list is empty), so the parsed texts of the whole corpus are never
            held at once (:mod:`pipelines.stream`).

    Returns:
        ``(documents, quarantine)``, both in the order of ``files``.
    """
    results: list[Document | QuarantineRecord | None] = [None] * len(files)

    def done(i: int, r: Document | QuarantineRecord, seconds: float, peak: float | None) -> None:
        results[i] = r if keep or not isinstance(r, Document) else None
        if deliver:
            deliver(i, r)
        if observe:
            observe(FileLoadStats(files[i].uri, round(seconds, 3), None if peak is None else round(peak, 1),
                                  "document" if isinstance(r, Document) else r.error_type))
        if progress:
            progress(1)

    todo = []
    for i, f in enumerate(files):
        if f.skip_type:
            done(i, load_document(f, cfg), 0.0, None)
        else:
            todo.append(i)
    fault = os.environ.get(FAULT_ENV, "")
    for _round in range(POOL_ROUNDS):
        if not todo:
            break
        todo = _run_pool(files, todo, cfg, fault, done, nice)
    for i in todo:  # the pool broke POOL_ROUNDS times with these files still waiting
        done(i, QuarantineRecord(files[i].uri, STAGE, "WorkerError",
                                 f"{files[i].uri}: the parsing worker pool broke {POOL_ROUNDS} times before "
                                 "this file was parsed"), 0.0, None)
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
