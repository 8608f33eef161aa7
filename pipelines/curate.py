"""Stage ``curate`` (between load and chunk): boilerplate removal, exact and near-duplicate clusters.

Three rules, each recorded so that nothing is dropped silently (``curation.json`` counts and
lists what each rule removed; ``duplicates.parquet`` lists every member of every cluster):

- **Boilerplate** (:func:`strip_boilerplate`, before chunking): an element whose text (case
  folded, whitespace collapsed, digits of short elements masked so "Page 3" equals "Page 4") appears on at least
  ``boilerplate_min_share`` of the pages of one PDF is removed, when that PDF has at least
  ``boilerplate_min_docs`` pages. Across the documents of one folder (a site) only the
  leading and trailing zone of each document counts (the first and last
  ``boilerplate_edge_elements`` elements, :func:`edge_zone`): an element found there in at
  least ``boilerplate_min_share`` of the folder's documents (at least ``boilerplate_min_docs``)
  is removed from those zones, and a line repeated in the middle of pages stays. The document's normalized text is rebuilt from the kept elements (joined by
  ``\\n\\n`` as loading does) *before* chunking, so chunk offsets index the published text
  (``text == doc_text[char_start:char_end]``). A document is never emptied: when every
  element would go, none does.
- **Exact duplicates**: documents (and chunks) whose whitespace-collapsed text has the same
  sha256.
- **Near-duplicates**: MinHash signatures over word shingles and locality-sensitive hashing
  (the values and bands of datasketch's ``MinHash`` / ``MinHashLSH``, computed with numpy and
  held as arrays: :func:`minhash_matrix`, :class:`BandIndex`) find candidates whose estimated Jaccard
  similarity is at least ``near_duplicate_threshold``. Sources: A. Broder, "On the
  resemblance and containment of documents" (Compression and Complexity of Sequences, 1997);
  Leskovec, Rajaraman & Ullman, *Mining of Massive Datasets*, ch. 3 (banded LSH).

A document whose text (or one of whose chunks) makes the shingler fail is quarantined (stage
``curate``, the error in the record) with none of its chunks indexed; the run goes on.

Clusters have one canonical member: members are visited in priority order (a member indexed
in the parent version first, then source order: documents by URI, chunks by row) and each
joins the cluster of the most similar earlier member it matches (exact or at least the
threshold; so a copy of a near copy joins too), else becomes a canonical itself. The recorded
similarity is the estimate against the canonical member. ``curate.duplicates`` decides what is indexed: ``link`` and ``keep_first``
index the canonical members only (``link`` lists the others on hits, see
:class:`indexers.retriever.Retriever`), ``keep_all`` indexes everything.

Refresh (:func:`curate_refresh`) reuses the signatures stored with the parent version
(``signatures.parquet``) for every unchanged document and chunk, and re-chunks a carried copy
whose canonical was deleted or changed, so deleting one copy never drops content another
source still has.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
from collections import ChainMap, Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ragline.core.errors import CorruptRegistryError
from ragline.core.hashing import sha256_text
from ragline.core.io import write_json_atomic
from ragline.core.memory import release_unused_memory
from ragline.core.records import Document, ElementSpan, QuarantineRecord
from ragline.core.schemas import (CHUNKS_SCHEMA, DUPLICATES_SCHEMA, SIGNATURES_FILE, SIGNATURES_SCHEMA,
                                  parquet_write_options,
                                  read_table, write_table)
from ragline.pipelines.config import CurateConfig

STAGE = "curate"
DUPLICATES_FILE = "duplicates.parquet"
CURATION_FILE = "curation.json"
#: rows per Parquet row group of ``signatures.parquet``: the writer encodes one group at a time
#: (4 MiB of values at 128 permutations, not the whole table's; issue 12, bounded memory)
SIGNATURES_ROW_GROUP = 8_192

_WORD = re.compile(r"\w+", re.UNICODE)
_DIGITS = re.compile(r"\d+")
_SHORT_CHARS = 80  # elements up to this long have their digits masked in boilerplate keys
_SEED = 1  # MinHash permutation seed: fixed, so signatures stored with a version stay comparable


# ------------------------------------------------------------------ text keys
def collapse(text: str) -> str:
    """Text with every run of whitespace turned into one space, stripped (NFC already applied by load).

    ``str.split()`` cuts at the characters ``str.isspace`` names, the very set of ``re``'s
    ``\\s`` on ``str`` (both are CPython's ``Py_UNICODE_ISSPACE``; ``tests/test_curate.py``
    checks every code point), so this equals ``re.sub(r"\\s+", " ", text).strip()`` at a
    third of its cost.
    """
    return " ".join(text.split())


def content_sha256(text: str) -> str:
    """sha256 (hex) of the whitespace-collapsed text: the exact-duplicate key."""
    return sha256_text(collapse(text))


#: how :func:`shingles` makes words (stored with signatures; others are recomputed, not compared)
SHINGLER = "words+rst-1"
_ADMONITIONS = {"note": "note", "warning": "warning", "seealso": "see also", "versionadded": "new in version",
                "versionchanged": "changed in version", "deprecated": "deprecated since version",
                "important": "important", "tip": "tip", "caution": "caution", "attention": "attention",
                "danger": "danger", "hint": "hint", "error": "error"}
_RST_TARGET = re.compile(r"\.\.\s+_[^:`\s][^:`]*:")           # .. _label:
_RST_DIRECTIVE = re.compile(r"\.\.\s+([\w:-]+)::")             # .. function::  .. versionadded::
_RST_FOOTNOTE = re.compile(r"\[#[\w-]*\]_|\[\d+\]")              # [#note]_ (reST) and [1] (as rendered)
_RST_LINK = re.compile(r"\s*<[^<>`\s]+>(?=`)")                  # `title <target>`
_RST_TILDE = re.compile(r"`~(?:\w+\.)*(\w+)")                   # `~json.JSONDecoder` renders JSONDecoder
_RST_ROLE = re.compile(r":(?:[A-Za-z][\w.+-]*:)+(?=`)")         # :func:`  :py:meth:`
_RST_FIELD = re.compile(r"(?<!\S):[A-Za-z][\w-]*:(?=\s)")       # :synopsis: (directive options)
_RST_LINK_END = re.compile(r"`__?(?!\w)")                       # `link`_  `anonymous`__


def _directive_words(m: re.Match) -> str:
    name = m.group(1).rsplit(":", 1)[-1].lower()
    return f" {_ADMONITIONS[name]} " if name in _ADMONITIONS else " "


def _role_words(m: re.Match) -> str:
    role = m.group(0).strip(":").rsplit(":", 1)[-1].lower()
    return {"rfc": "RFC ", "pep": "PEP "}.get(role, "")


#: the substitutions of :func:`strip_markup`, in order: (literals every match holds, pattern, replacement)
_RST_STEPS = ((("..",), _RST_TARGET, " "), (("..", "::"), _RST_DIRECTIVE, _directive_words),
              (("[",), _RST_FOOTNOTE, " "), ((">`",), _RST_LINK, ""), (("`~",), _RST_TILDE, r"`\1"),
              ((":`",), _RST_ROLE, _role_words), (("`_",), _RST_LINK_END, "`"), ((":",), _RST_FIELD, " "))


def strip_markup(text: str) -> str:
    """``text`` with reStructuredText markup reduced to the words a rendered page shows.

    Directive names go (an admonition or version note keeps the words Sphinx renders:
    ``.. versionadded:: 3.5`` becomes ``new in version 3.5``), so do label targets, link
    targets in ``<...>``, role prefixes (``:func:`` ; ``:rfc:`` renders ``RFC``), the module
    path of a ``~`` reference, directive option names and footnote references (``[#x]_``,
    and ``[1]`` as rendered). Plain prose is unchanged. So a Sphinx ``_sources/*.rst.txt``
    file and its HTML page shingle alike (their Jaccard on the Python docs goes from 0.70-0.83
    to 0.80-0.97; ``benchmarks/curation.py``).
    """
    if "`" not in text and ".." not in text and "[" not in text and ":" not in text:
        return text
    # each pattern runs only when the text (as the patterns before left it) holds the literal
    # characters every match of it contains: a skipped substitution could not have matched
    for needles, pattern, repl in _RST_STEPS:
        if all(n in text for n in needles):
            text = pattern.sub(repl, text)
    return text


def word_grams(text: str, n: int) -> Iterable[str]:
    """The shingler: word ``n``-grams of ``text`` (lower-cased ``\\w+`` words of :func:`strip_markup`),
    in text order, repeats included. A text shorter than ``n`` words gives one gram of all its
    words; no words gives none."""
    words = _WORD.findall(strip_markup(text).casefold())
    if len(words) <= n:
        return [" ".join(words)] if words else []
    # the windows words[i:i + n] for i in 0..len(words) - n, as n shifted views zipped
    return map(" ".join, zip(*(words[k:] for k in range(n))))


def shingles(text: str, n: int) -> set[bytes]:
    """Word ``n``-shingles of ``text`` (:func:`word_grams`), UTF-8 encoded, as a set.

    A text shorter than ``n`` words gives one shingle of all its words; no words gives ``set()``.
    """
    return {g.encode() for g in word_grams(text, n)}


#: MinHash rows (shingles) permuted at a time: 8,192 x num_perm uint32, 4 MiB at 128 permutations
#: (as fast as 65,536 rows, which took 32 MiB: the block stays in the CPU caches)
_MINHASH_BLOCK = 1 << 13


@functools.lru_cache(maxsize=4)
def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters ``(a, b)`` (uint32 (num_perm,)) for seed :data:`_SEED`."""
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=_SEED, scheme="affine32").permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (``fmix32``, Appleby's reference code), as datasketch's
    affine32 scheme applies it to every hash before permuting (uint32 in, uint32 out)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _shingle_hashes(text: str, n: int) -> np.ndarray:
    """datasketch's ``sha1_hash32`` (the first 4 bytes of the SHA-1, little-endian) of every
    shingle of ``text`` (:func:`word_grams`), uint32; a shingle met twice is hashed twice (a
    minimum does not care), which costs less than building the set."""
    sha1 = hashlib.sha1
    return np.frombuffer(b"".join([sha1(g.encode()).digest()[:4] for g in word_grams(text, n)]),
                         dtype="<u4").astype(np.uint32)


#: texts shingled and hashed at a time by :func:`minhash_matrix`: its temporaries (the shingle
#: hashes, about 4 bytes per shingle, several copies) stay bounded whatever the corpus size
_MINHASH_TEXTS = 1024


def minhash_matrix(
    texts: Sequence[str], cfg: CurateConfig, *, errors: dict[int, Exception] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures of word shingles, one row per text.

    Source: Broder 1997; the signatures of datasketch's ``MinHash`` (seed 1, scheme affine32,
    its default ``sha1_hash32``): a permuted hash is ``a * fmix32(h) + b`` modulo 2^32 and the
    signature is its minimum over the shingles. Computed here with numpy over the shingles of
    many texts at once (blocks of :data:`_MINHASH_BLOCK` rows, :data:`_MINHASH_TEXTS` texts
    at a time), instead of one ``MinHash`` object and one Python call per shingle: the same
    values (``tests/test_curate.py`` compares them with ``MinHash.bulk``) at a fraction of the
    CPU, in one array instead of one numpy object per text.

    Args:
        texts: the texts.
        cfg: the ``curate:`` params (``num_perm``, ``shingle_words``).
        errors: when given, a text the shingler fails on is recorded here (text index ->
            exception; its row has no words) and the others are still computed; when ``None``,
            the error is raised.

    Returns:
        ``(values, has_words)``: uint32 (n, num_perm) and bool (n,); the row of a text without
        words (or that failed) is not a signature (all 0xFFFFFFFF) and ``has_words`` is False.
    """
    values = np.full((len(texts), cfg.num_perm), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    has = np.zeros(len(texts), dtype=bool)
    for lo in range(0, len(texts), _MINHASH_TEXTS):
        part = texts[lo:lo + _MINHASH_TEXTS]
        try:
            _minhash_into(part, cfg, values[lo:lo + len(part)], has[lo:lo + len(part)])
        except Exception:
            if errors is None:
                raise
            for k, text in enumerate(part):  # find the bad text one by one
                try:
                    _minhash_into([text], cfg, values[lo + k:lo + k + 1], has[lo + k:lo + k + 1])
                except Exception as e:  # noqa: BLE001 - recorded for the caller (one bad text is not fatal)
                    errors[lo + k] = e
    return values, has


def _minhash_into(texts: Sequence[str], cfg: CurateConfig, sigs: np.ndarray, has: np.ndarray) -> None:
    """:func:`minhash_matrix` of a few texts, written into ``sigs`` (uint32 (n, num_perm), all
    0xFFFFFFFF) and ``has`` (bool (n,)); nothing is written when the shingler raises."""
    hashes = [_shingle_hashes(t, cfg.shingle_words) for t in texts]
    idx = np.fromiter((i for i, h in enumerate(hashes) if len(h)), dtype=np.int64)
    if not len(idx):
        return
    a, b = _permutations(cfg.num_perm)
    lens = np.fromiter((len(hashes[i]) for i in idx), dtype=np.int64, count=len(idx))
    owner = np.repeat(idx, lens)  # shingle row -> text
    rows = _fmix32(np.concatenate([hashes[i] for i in idx]))
    del hashes
    buf = np.empty((cfg.num_perm, min(len(rows), _MINHASH_BLOCK)), dtype=np.uint32)
    a, b = a[:, None], b[:, None]
    for lo in range(0, len(rows), _MINHASH_BLOCK):
        hi = min(lo + _MINHASH_BLOCK, len(rows))
        permuted = buf[:, :hi - lo]  # (num_perm, rows): the minimum runs along contiguous memory
        np.multiply(a, rows[None, lo:hi], out=permuted)  # uint32 arithmetic wraps: modulo 2^32
        np.add(permuted, b, out=permuted)
        seg = owner[lo:hi]
        starts = np.concatenate(([0], np.flatnonzero(seg[1:] != seg[:-1]) + 1))
        mins = np.minimum.reduceat(permuted, starts, axis=1).T
        who = seg[starts]
        sigs[who] = np.minimum(sigs[who], mins)  # a text cut by the block boundary: its running minimum
    has[idx] = True


@functools.lru_cache(maxsize=16)
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """``(bands, rows per band)`` of datasketch's ``MinHashLSH`` for ``threshold`` (its optimum
    for equal false-positive and false-negative weights; Leskovec, Rajaraman & Ullman, ch. 3.4)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


class BandIndex:
    """Banded locality-sensitive hashing over the rows of one signature array, as datasketch's
    ``MinHashLSH`` with its dict storage answers it: :meth:`query` gives the rows inserted so far
    that equal row ``i`` on all ``r`` values of at least one of the ``b`` bands.

    Held as arrays, not as per-row Python objects: a bucket id per (row, band) (the band's
    values grouped by ``np.unique``, so two rows share a bucket exactly when their band values
    are equal) and one linked list of inserted rows per bucket (``head`` per bucket, ``next``
    per (row, band)). About ``12 * b`` bytes per row (int32) instead of datasketch's few
    kilobytes (a ``bytes`` key and a set entry per band, a ``LeanMinHash`` per row).

    Args:
        values: uint32 (n, num_perm) signatures.
        bands: ``(b, r)``, :func:`lsh_bands`.
        keys: uint32 (n, b) band keys (:func:`band_keys`) to bucket by instead of the band
            values (then ``values`` is not read): rows share a bucket when their keys are
            equal, so a 32-bit collision of unequal bands adds a candidate (rejected by
            :func:`jaccard` unless the rows are near copies anyway).
    """

    def __init__(self, values: np.ndarray, bands: tuple[int, int], keys: np.ndarray | None = None) -> None:
        b, r = bands
        n = len(values) if keys is None else len(keys)
        dtype = np.int32 if n * b < 2**31 - 1 else np.int64
        self.bucket = np.empty((n, b), dtype=dtype)
        total = 0
        for k in range(b):
            band = keys[:, k] if keys is not None else \
                np.ascontiguousarray(values[:, k * r:(k + 1) * r]).view(np.dtype((np.void, 4 * r))).ravel()
            _, inv = np.unique(band, return_inverse=True)
            self.bucket[:, k] = inv.ravel() + total
            total += int(inv.max()) + 1 if n else 0
        self.head = np.full(total, -1, dtype=dtype)
        self.next = np.full((n, b), -1, dtype=dtype)

    def shared(self, rows: np.ndarray) -> np.ndarray:
        """bool (n,): which of ``rows`` (bool (n,)) share a bucket of some band with another of them."""
        out = np.zeros(len(rows), dtype=bool)
        for k in range(self.bucket.shape[1]):
            counts = np.bincount(self.bucket[rows, k], minlength=len(self.head))
            out |= counts[self.bucket[:, k]] >= 2
        return out & rows

    def query(self, i: int) -> set[int]:
        """Rows inserted before that share a band bucket with row ``i``."""
        out: set[int] = set()
        for k, bucket in enumerate(self.bucket[i].tolist()):
            j = int(self.head[bucket])
            while j >= 0:
                out.add(j)
                j = int(self.next[j, k])
        return out

    def insert(self, i: int) -> None:
        """Add row ``i`` to its buckets."""
        for k, bucket in enumerate(self.bucket[i].tolist()):
            self.next[i, k] = self.head[bucket]
            self.head[bucket] = i


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two signatures: the share of equal values (datasketch's
    ``MinHash.jaccard``, the same float)."""
    return float(np.count_nonzero(a == b)) / float(len(a))


# ------------------------------------------------------------------ boilerplate
def _element_key(text: str, paged: bool = False) -> str:
    """Case-folded, whitespace-collapsed text; on pages of one PDF (``paged``) the digits of short
    elements are masked, so running footers ``Page 3 of 9`` / ``Page 4 of 9`` share a key. Across
    the documents of a folder digits are kept (``Changed in version 3.2`` is content)."""
    key = collapse(text).casefold()
    return _DIGITS.sub("#", key) if paged and len(key) <= _SHORT_CHARS else key


def _group_of(uri: str) -> str:
    return str(PurePosixPath(uri).parent)


@dataclass
class BoilerplateReport:
    """What :func:`strip_boilerplate` removed.

    Attributes:
        removed: source URI -> element texts removed from it (in document order).
        keys: group (``pdf:<uri>`` or a folder) -> boilerplate keys detected there.
        chars: characters removed in total.
    """

    removed: dict[str, list[str]] = field(default_factory=dict)
    keys: dict[str, list[str]] = field(default_factory=dict)
    chars: int = 0

    def merge(self, other: "BoilerplateReport") -> "BoilerplateReport":
        keys = {g: sorted(set(self.keys.get(g, [])) | set(other.keys.get(g, []))) for g in {*self.keys, *other.keys}}
        return BoilerplateReport({**self.removed, **other.removed}, keys, self.chars + other.chars)


def _frequent(units: Sequence[set], cfg: CurateConfig) -> set:
    """Keys present in at least ``boilerplate_min_share`` of ``units`` (each a set of keys), at least two."""
    if len(units) < cfg.boilerplate_min_docs:
        return set()
    counts = Counter(k for u in units for k in u)
    need = max(2, int(np.ceil(cfg.boilerplate_min_share * len(units))))
    return {k for k, c in counts.items() if c >= need}


def edge_zone(n_elements: int, edge_elements: int) -> range | list[int]:
    """Indices of the leading and trailing zone of a document of ``n_elements`` elements, where
    site boilerplate lives (navigation, banners, footers, "Edit on GitHub", copyright lines):
    the first and last ``min(edge_elements, max(1, n_elements // 3))`` elements, so a short
    document keeps its middle third. An element outside both zones is content, however often
    it repeats (``New in version 3.5.`` in the middle of many pages)."""
    k = min(edge_elements, max(1, n_elements // 3))
    if 2 * k >= n_elements:
        return range(n_elements)
    return [*range(k), *range(n_elements - k, n_elements)]


def _rebuild(doc: Document, drop: set[int]) -> Document:
    """``doc`` without the elements at indices ``drop``: text rejoined with ``\\n\\n``, spans recomputed
    (a span whose offsets do not move is kept as it is; the others are built by the constructor,
    not ``dataclasses.replace``: 190,000 spans on the Python docs)."""
    parts: list[str] = []
    spans: list[ElementSpan] = []
    pos = 0
    for i, el in enumerate(doc.elements):
        if i in drop:
            continue
        text = doc.text[el.char_start:el.char_end]
        if parts:
            pos += 2
        parts.append(text)
        if el.char_start == pos and el.char_end == pos + len(text):
            spans.append(el)
        else:
            spans.append(ElementSpan(el.type, pos, pos + len(text), el.page, el.section_path))
        pos += len(text)
    return replace(doc, text="\n\n".join(parts), elements=tuple(spans))


def _paged_drop(d: Document, cfg: CurateConfig, known: Mapping[str, Sequence[str]]) -> tuple[str, set[str], set[int]]:
    """Running headers/footers of one paged document (PDF pages): ``(group, keys, element indices)``."""
    group = f"pdf:{d.uri}"
    if not any(e.page is not None for e in d.elements):
        return group, set(), set()
    paged = [_element_key(d.text[e.char_start:e.char_end], paged=True) for e in d.elements]
    pages: dict[int, set[str]] = defaultdict(set)
    for e, k in zip(d.elements, paged):
        if e.page is not None:
            pages[e.page].add(k)
    bad = _frequent(list(pages.values()), cfg) | set(known.get(group, ()))
    return group, bad, {i for i, k in enumerate(paged) if k in bad}


def _without(d: Document, idx: set[int]) -> Document:
    """``d`` without the elements ``idx``; unchanged (the same object) when none or all would go."""
    if not idx or len(idx) >= len(d.elements):  # never empty a document
        return d
    return _rebuild(d, idx)


_NO_KEYS = np.zeros(0, dtype=np.int64)


def _key_id(key: str) -> int:
    """The id of an element key in :class:`_Sketch`: Python's (per-process salted) str hash, 64
    bits. Sketches are only compared within the process that made them, never stored."""
    return hash(key)


@dataclass(frozen=True, slots=True, eq=False)
class _Sketch:
    """What the boilerplate rule (:func:`_boilerplate_drops`) reads of one document: its URI, the
    ids of its edge-zone elements' keys and its running headers' drop (:func:`_paged_drop`), not
    its text. A streamed ingest holds this of a document it released, and the document no longer
    (about 0.3 kB a document, issue 12: the keys themselves are held only for keys seen twice).

    Attributes:
        uri: the document's URI.
        n: its number of elements.
        keys: int64 (len(edge_zone(n, boilerplate_edge_elements)),): :func:`_key_id` of the
            :func:`_element_key` of each edge-zone element, in :func:`edge_zone` order.
        paged: :func:`_paged_drop`'s ``(group, keys, element indices)``.
        released: the elements removed when it was released early (``None``: not released).
        removed: ``(element texts, chars)`` that release removed (``None``: nothing).
    """

    uri: str
    n: int
    keys: np.ndarray
    paged: tuple[str, frozenset[str], frozenset[int]]
    released: frozenset[int] | None = None
    removed: tuple[tuple[str, ...], int] | None = None

    @classmethod
    def of(cls, d: Document, cfg: CurateConfig, known: Mapping[str, Sequence[str]],
           names: dict[int, str], seen: Collection[int] | None = None) -> "_Sketch":
        """The sketch of ``d``; ``names`` (key id -> key) gets each of its edge keys that ``seen``
        holds (every one when ``seen`` is ``None``): a key counts as boilerplate only when at
        least two documents have it, so the second sighting names it."""
        edges = edge_zone(len(d.elements), cfg.boilerplate_edge_elements)
        ids = []
        for i in edges:
            key = _element_key(d.text[d.elements[i].char_start:d.elements[i].char_end])
            kid = _key_id(key)
            if seen is None or kid in seen:
                names.setdefault(kid, key)
            ids.append(kid)
        group, bad, idx = _paged_drop(d, cfg, known)
        return cls(d.uri, len(d.elements), np.array(ids, dtype=np.int64), (group, frozenset(bad), frozenset(idx)))

    def edge_keys(self, cfg: CurateConfig) -> Iterable[tuple[int, int]]:
        """``(element index, key id)`` of its edge-zone elements."""
        return zip(edge_zone(self.n, cfg.boilerplate_edge_elements), self.keys.tolist())

    def effective(self, drop: Collection[int]) -> frozenset[int]:
        """The elements ``drop`` removes from it: none when none or all would go (:func:`_without`)."""
        return frozenset(drop) if 0 < len(drop) < self.n else frozenset()


def _boilerplate_drops(sketches: Sequence[_Sketch], cfg: CurateConfig, known: Mapping[str, Sequence[str]],
                       names: Mapping[int, str]) -> tuple[dict[int, set[int]], dict[str, list[str]]]:
    """The boilerplate rule over a corpus: ``(drop, keys)``, the element indices to remove per
    document (position in ``sketches``) and the keys detected per group (running headers of one
    paged document, then edge-zone elements repeated in ``boilerplate_min_share`` of a folder;
    ``names``: key id -> key, for every key of two or more sketches)."""
    drop: dict[int, set[int]] = defaultdict(set)
    keys: dict[str, list[str]] = {}
    for di, sk in enumerate(sketches):  # running headers/footers of one paged document (PDF pages)
        group, bad, idx = sk.paged
        if bad:
            keys[group] = sorted(bad)
            drop[di] |= idx
    # site boilerplate: elements repeated in the leading/trailing zone of the documents of one folder
    groups: dict[str, list[int]] = defaultdict(list)
    for di, sk in enumerate(sketches):
        groups[_group_of(sk.uri)].append(di)
    for group, members in groups.items():
        named = {_key_id(k): k for k in known.get(group, ())}
        bad = _frequent([set(sketches[di].keys.tolist()) for di in members], cfg) | set(named)
        if bad:
            keys[group] = sorted({named.get(k) or names[k] for k in bad})
            for di in members:
                drop[di] |= {i for i, k in sketches[di].edge_keys(cfg) if k in bad}
    return drop, keys


def _removal(d: Document, idx: set[int]) -> tuple[Document, tuple[tuple[str, ...], int] | None]:
    """``(d without the elements idx, (their texts, chars removed))``; ``(d, None)`` when
    nothing goes (:func:`_without`)."""
    out = _without(d, idx)
    if out is d:
        return d, None
    return out, (tuple(d.text[d.elements[i].char_start:d.elements[i].char_end] for i in sorted(idx)),
                 len(d.text) - len(out.text))


def strip_boilerplate(
    docs: Sequence[Document], cfg: CurateConfig, known: Mapping[str, Sequence[str]] | None = None,
) -> tuple[list[Document], BoilerplateReport]:
    """Remove elements repeated on most pages of a PDF or at the edges of most documents of a folder.

    Args:
        docs: loaded documents (their text is the ``\\n\\n`` join of their elements).
        cfg: the ``curate:`` params (``boilerplate``, ``boilerplate_min_docs``, ``boilerplate_min_share``,
            ``boilerplate_edge_elements``).
        known: group -> keys detected before (a refresh passes the parent's, so a changed page
            of a folder loses the same banner even when few pages changed).

    Returns:
        ``(documents, report)``: documents in the same order (unchanged ones are the same
        objects), and what was removed from each.
    """
    report = BoilerplateReport()
    if not cfg.boilerplate or not docs:
        return list(docs), report
    known = known or {}
    names: dict[int, str] = {}
    drop, report.keys = _boilerplate_drops([_Sketch.of(d, cfg, known, names) for d in docs], cfg, known, names)
    out = list(docs)
    for di, idx in drop.items():
        out[di], removed = _removal(docs[di], idx)
        if removed is not None:
            report.removed[docs[di].uri] = list(removed[0])
            report.chars += removed[1]
    return out, report


class StreamedBoilerplate:
    """:func:`strip_boilerplate` decided document by document while the corpus is still parsed.

    A folder's boilerplate keys are those in at least ``boilerplate_min_share`` of the folder's
    documents (:func:`_frequent`), so a document cannot be curated before its folder is known.
    It can be once every key in its edge zone is *decided* whatever the files not parsed yet
    turn out to be: with ``m`` documents of the folder parsed (``c`` of them with key ``k`` in
    their edge zone) and ``r`` of its files still to come (each may fail, or have ``k``), ``k`` is
    boilerplate for sure when ``m >= boilerplate_min_docs`` and ``c >= need(m + r)``, and
    content for sure when ``c + s < need(m + s)`` (or ``m + s < boilerplate_min_docs``) for
    every ``s`` in ``0..r`` (``need`` as :func:`_frequent` computes it, non-decreasing). A site's
    navigation (on every page) is decided once ``boilerplate_min_share`` of the folder is
    parsed, a page's own title once ``1 - boilerplate_min_share`` of it is. Running headers of
    a PDF depend on that document only. So documents go on to chunking and embedding long
    before the last file is parsed (:func:`pipelines.stream.load_chunk_embed`), and
    :meth:`finish` runs the batch stage's rule (:func:`_boilerplate_drops`) on the whole corpus:
    the final documents and the report are exactly the batch stage's (a document released early
    that differs from them is handed back for chunking again; the decision rule above makes that
    not happen). Of a released document only its :class:`_Sketch` is held (edge keys, what its
    release removed), unless ``keep``.

    Args:
        uris: the URI of every file to come, in file order (``SourceFile.uri``).
        cfg: the ``curate:`` params.
        known: group -> keys detected before (as :func:`strip_boilerplate`).
        keep: hold every document to :meth:`finish`, which then gives them all; ``False``: a
            released document is the caller's alone (a streamed ingest that writes segments as
            it goes: its memory does not grow with the documents' text, issue 12).
    """

    def __init__(self, uris: Sequence[str], cfg: CurateConfig, known: Mapping[str, Sequence[str]] | None = None,
                 keep: bool = True) -> None:
        self.cfg = cfg
        self.keep = keep
        self.known = {g: set(k) for g, k in (known or {}).items()}
        self._known_ids = {g: {_key_id(k) for k in ks} for g, ks in self.known.items()}
        self.report = BoilerplateReport()
        self._n = len(uris)
        self._group = [sys.intern(_group_of(u)) for u in uris]
        self._pending: Counter[str] = Counter(self._group)  # files of each folder not delivered yet
        self._size: Counter[str] = Counter(self._group)  # files of each folder
        self._undecided: dict[str, set[int]] = defaultdict(set)  # folder -> documents not released yet
        self._since: Counter[str] = Counter()  # folder -> arrivals since its documents were last decided
        self._parsed: Counter[str] = Counter()  # documents of each folder delivered
        self._counts: dict[str, Counter[int]] = defaultdict(Counter)  # open folder -> edge key id -> documents
        self._names: dict[int, str] = {}  # edge key id -> key, for keys seen twice in a folder (_Sketch.of)
        self._docs: list[Document | None] = [None] * len(uris)  # parsed (and, with keep, released) documents
        self._sketch: dict[int, _Sketch] = {}  # parsed documents: what the rule reads of them
        self._edge_keys: dict[int, set[int]] = {}  # undecided documents: their edge-zone key ids
        self._released: dict[int, Document] = {}
        self._limits: dict[str, tuple[tuple[int, int], int, int]] = {}  # folder -> ((m, r), bad_at, content_below)
        self._blocked: set[str] = set()  # folders whose size the file list does not tell

    def _need(self, m: int) -> int:
        return max(2, int(np.ceil(self.cfg.boilerplate_min_share * m)))

    def _limits_of(self, group: str) -> tuple[int, int]:
        """``(bad_at, content_below)``: a key counted ``c`` times is boilerplate for sure when
        ``c >= bad_at``, content for sure when ``c < content_below``."""
        m, r = self._parsed[group], self._pending[group]
        cached = self._limits.get(group)
        if cached is not None and cached[0] == (m, r):
            return cached[1], cached[2]
        min_docs = self.cfg.boilerplate_min_docs
        bad_at = self._need(m + r) if m >= min_docs else 1 << 62
        below = [self._need(m + s) - s for s in range(r + 1) if m + s >= min_docs]
        content_below = min(below) if below else 1 << 62
        self._limits[group] = ((m, r), bad_at, content_below)
        return bad_at, content_below

    def _decide(self, i: int) -> Document | None:
        """Document ``i`` curated, or ``None`` while one of its edge keys is undecided."""
        d = self._docs[i]
        group = self._group[i]
        if group in self._blocked:
            return None
        bad_at, content_below = self._limits_of(group)
        known = self._known_ids.get(group, set())
        counts = self._counts[group]
        keys = self._edge_keys[i]
        if any(not (k in known or counts[k] >= bad_at or counts[k] < content_below) for k in keys):
            return None
        sk = self._sketch[i]
        drop = set(sk.paged[2]) | {j for j, k in sk.edge_keys(self.cfg) if k in known or counts[k] >= bad_at}
        out, removed = _removal(d, drop)
        self._sketch[i] = replace(sk, released=sk.effective(drop), removed=removed)
        return out

    def add(self, i: int, doc: Document | None) -> list[tuple[int, Document]]:
        """File ``i`` was parsed into ``doc`` (``None``: it failed to load).

        Returns:
            ``(file index, curated document)`` for every document decided now (each once, in
            file order).
        """
        group = self._group[i]
        self._pending[group] -= 1
        if doc is not None:
            if not self.cfg.boilerplate:
                if self.keep:
                    self._docs[i] = self._released[i] = doc
                self._sketch[i] = _Sketch(doc.uri, len(doc.elements), _NO_KEYS, ("", frozenset(), frozenset()),
                                          frozenset())
                return [(i, doc)]
            if _group_of(doc.uri) != group:  # not the folder of its file: its folder is decided at the end only
                self._group[i] = group = sys.intern(_group_of(doc.uri))
                self._blocked.add(group)
            self._docs[i] = doc
            self._parsed[group] += 1
            counts = self._counts[group]
            # (a blocked folder's counts may have been dropped: every key of its documents is named)
            self._sketch[i] = sk = _Sketch.of(doc, self.cfg, self.known, self._names,
                                              None if group in self._blocked else counts)
            keys = set(sk.keys.tolist())
            counts.update(keys)
            self._edge_keys[i] = keys
            self._undecided[group].add(i)
        # A folder's undecided documents are looked at again every 1% of its files (and at its
        # last one), not at every arrival: linear in the folder's size, a release late by <= 1%.
        self._since[group] += 1
        if group in self._blocked or (self._pending[group] and self._since[group] < max(1, self._size[group] // 100)):
            return []
        self._since[group] = 0
        out = []
        undecided = self._undecided[group]
        for j in sorted(undecided):
            curated = self._decide(j)
            if curated is not None:
                undecided.discard(j)
                del self._edge_keys[j]
                if self.keep:
                    self._released[j] = curated
                else:  # the caller's alone now: its sketch says what the release removed
                    self._docs[j] = None
                out.append((j, curated))
        if not self._pending[group] and not undecided:  # the folder is decided: its counts are not needed again
            for held in (self._counts, self._limits, self._undecided, self._since):
                held.pop(group, None)
        return out

    def finish(self) -> tuple[list[Document | None], list[tuple[int, Document]]]:
        """Every file delivered: the batch stage on the whole corpus.

        Returns:
            ``(documents, again)``: the curated document of every file (``None`` for one that
            failed to load; without ``keep``, also for one released before), and ``(file index,
            document)`` of those not released before or released in another form (to chunk now,
            replacing what was made of them).

        Raises:
            RuntimeError: without ``keep``, a document released before would have been released
                in another form (the decision rule makes that not happen).
        """
        idx = sorted(self._sketch)
        known = {g: sorted(k) for g, k in self.known.items()}
        self.report = BoilerplateReport()
        drop: dict[int, set[int]] = {}
        if self.cfg.boilerplate:
            drop, self.report.keys = _boilerplate_drops([self._sketch[i] for i in idx], self.cfg, known, self._names)
        out: list[Document | None] = [None] * self._n
        again = []
        for k, i in enumerate(idx):
            sk, d = self._sketch[i], self._docs[i]
            removed = sk.removed
            if d is not None:  # held: undecided, or kept
                d, removed = _removal(d, drop.get(k, set()))
                out[i] = d
                if self._released.get(i) != d:
                    again.append((i, d))
            elif sk.effective(drop.get(k, ())) != sk.released:
                raise RuntimeError(f"{sk.uri}: boilerplate removal released it in another form than the corpus gives")
            if removed is not None:
                self.report.removed[sk.uri] = list(removed[0])
                self.report.chars += removed[1]
        self._edge_keys.clear()
        self._names.clear()
        # decided: the parsed and released documents are the caller's now (they are not held to the run's end)
        self._docs = [None] * self._n
        self._released.clear()
        self._sketch.clear()
        return out, again


# ------------------------------------------------------------------ clustering
class ColumnTexts(Sequence):
    """The strings of an Arrow string column at some rows, made Python strings a slice at a
    time (:data:`_MINHASH_TEXTS` rows), so clustering a corpus never holds every text as a
    Python object at once (issue 12, bounded memory). :func:`find_duplicates` takes it in
    place of the members' own ``text``.

    Args:
        column: an Arrow string column (array or chunked array).
        rows: int64 (n,) rows of ``column``, in member order (default: all).
    """

    def __init__(self, column: pa.Array | pa.ChunkedArray, rows: np.ndarray | None = None) -> None:
        self.column = column
        self.rows = np.arange(len(column), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        self._starts = np.cumsum([0] + [len(c) for c in chunks[:-1]], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k):  # noqa: ANN001, ANN204 - an int or a slice, as a list
        if not isinstance(k, slice):
            return self.column[int(self.rows[k])].as_py()
        rows = self.rows[k]
        if len(rows) > 1 and bool(np.all(np.diff(rows) == 1)):  # a run of rows: a zero-copy slice
            return self.column.slice(int(rows[0]), len(rows)).to_pylist()
        if not isinstance(self.column, pa.ChunkedArray) or self.column.num_chunks < 2:
            return self.column.take(pa.array(rows, type=pa.int64())).to_pylist()
        # taken chunk by chunk: a chunked array's take would concatenate every chunk first
        which = np.searchsorted(self._starts, rows, side="right") - 1
        out: list = [None] * len(rows)
        for c in np.unique(which).tolist():
            at = np.flatnonzero(which == c)
            got = self.column.chunk(c).take(pa.array(rows[at] - self._starts[c], type=pa.int64())).to_pylist()
            for i, v in zip(at.tolist(), got):
                out[i] = v
        return out

    def __iter__(self):  # noqa: ANN204 - an iterator of str
        for lo in range(0, len(self.rows), _MINHASH_TEXTS):
            yield from self[lo:lo + _MINHASH_TEXTS]

    def subset(self, idx: Sequence[int]) -> "ColumnTexts":
        """The texts at positions ``idx`` of this sequence."""
        return ColumnTexts(self.column, self.rows[np.asarray(idx, dtype=np.int64)])


def _shared_strings(column: pa.Array | pa.ChunkedArray) -> list[str]:
    """``column.to_pylist()`` with one ``str`` object per distinct value (a document's id and
    URI repeated on each of its chunks are one object, not one per chunk)."""
    enc = column.dictionary_encode()
    chunks = enc.chunks if isinstance(enc, pa.ChunkedArray) else [enc]
    out: list[str] = []
    for ch in chunks:
        values = ch.dictionary.to_pylist()
        out += [values[i] for i in ch.indices.to_numpy(zero_copy_only=False).tolist()]
    return out


@dataclass(frozen=True, slots=True)
class Member:
    """One document or chunk to cluster.

    Attributes:
        member_id: doc id or chunk id.
        doc_id, uri: the document it belongs to.
        text: its text (unused when :func:`find_duplicates` is given the texts apart).
        preferred: True when it was canonical in the parent version (visited first).
    """

    member_id: str
    doc_id: str
    uri: str
    text: str
    preferred: bool = False


def _list_lengths(pieces: Sequence[pa.ListArray]) -> np.ndarray:
    """int64 values per row of a list column given as pieces (a null row: -1)."""
    if not len(pieces):
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([p.value_lengths().fill_null(-1).to_numpy(zero_copy_only=False) for p in pieces]).astype(np.int64)


_NO_SIGNATURE = np.zeros(0, dtype=np.uint32)
_NO_SIGNATURE.setflags(write=False)


def _bands_column(keys: np.ndarray, with_keys: np.ndarray) -> pa.Array:
    """The ``bands`` column of signature rows: row ``i`` of ``with_keys`` (bool (n,)) holds the
    next row of ``keys`` (uint32 (with_keys.sum(), b), :func:`band_keys`), the others an empty list."""
    offsets = np.concatenate([[0], np.cumsum(np.where(with_keys, keys.shape[1], 0))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(keys.reshape(-1), pa.uint32()))


class Signatures(Mapping):
    """member id -> ``(text sha256, uint32 signature)`` of many members, held as one uint32
    ``(n, width)`` array and two string columns (Python lists, or Arrow arrays for signatures
    read back from a version), not as a numpy object and a tuple per member (issue 12, bounded
    memory: about 0.5 KB per chunk less at 128 permutations, and no Python int per value when
    written or read back).

    A member without a signature (a text without words, or ``curate.near_duplicates: false``)
    maps to an empty array. A few entries can be added (:meth:`__setitem__`: the stored
    signatures of carried aliases); they follow the array's rows when iterated and written.

    A row can be *lazy*: it has a signature whose values were left out of its file
    (:func:`_without_held`), so only its LSH band keys are held; :func:`find_duplicates` makes
    the values again from the text only for rows that share a band bucket with another, and
    a lazy row is written back as it was read (null values, its keys). ``self[m]`` of a lazy
    row raises ``KeyError`` (a caller recomputes it).

    Args:
        ids: member ids, one per row (a list, or an Arrow string array).
        shas: text sha256 (hex) per row (the same).
        values: uint32 (n, width) signatures (width 0: none).
        has: bool (n,): rows holding a signature.
        keys: uint32 (n, b) LSH band keys (:func:`band_keys`) of the lazy rows (other rows' are
            computed from ``values`` when written); ``None`` without lazy rows.
        lazy: bool (n,): rows whose values are not held; ``None``: none.
        texts: the rows' texts (:class:`ColumnTexts`, row order), to make a lazy row's values
            when it is written where its text is not held (:meth:`materialize`).
    """

    def __init__(self, ids: list[str] | pa.Array | None = None, shas: list[str] | pa.Array | None = None,
                 values: np.ndarray | None = None, has: np.ndarray | None = None, *,
                 keys: np.ndarray | None = None, lazy: np.ndarray | None = None,
                 texts: "ColumnTexts | None" = None) -> None:
        self.ids = ids if ids is not None else []
        self.shas = shas if shas is not None else []
        self.values = values if values is not None else np.zeros((len(self.ids), 0), dtype=np.uint32)
        self.has = has if has is not None else np.zeros(len(self.ids), dtype=bool)
        self.keys = keys
        self.lazy = lazy if lazy is not None and lazy.any() else None
        self.texts = texts
        self._extra: dict[str, tuple[str, np.ndarray]] = {}
        self._row: dict[str, int] | None = None

    def materialize(self, rows: np.ndarray, cfg: CurateConfig) -> None:
        """Make the values of the lazy ones of ``rows`` (int64) from :attr:`texts`.

        Raises:
            ValueError: a lazy row to make and no texts to make it from.
        """
        if self.lazy is None:
            return
        rows = np.asarray(rows, dtype=np.int64)
        rows = rows[self.lazy[rows]]
        if not len(rows):
            return
        if self.texts is None:
            raise ValueError(f"signatures of {len(rows)} members were left out and no texts are at hand to make them")
        texts = self.texts
        values, has = minhash_matrix(texts.subset(rows) if isinstance(texts, ColumnTexts)
                                     else [texts[i] for i in rows.tolist()], cfg)
        self.values[rows], self.has[rows] = values, has
        self.lazy[rows] = False

    def _id_list(self) -> list[str]:
        return self.ids if isinstance(self.ids, list) else self.ids.to_pylist()

    def _rows(self) -> dict[str, int]:
        if self._row is None:
            self._row = {m: r for r, m in enumerate(self._id_list())}
        return self._row

    def _sha(self, r: int) -> str:
        return self.shas[r] if isinstance(self.shas, list) else self.shas[r].as_py()

    def __getitem__(self, member_id: str) -> tuple[str, np.ndarray]:
        r = self._rows().get(member_id)
        if r is None:
            return self._extra[member_id]
        if self.lazy is not None and self.lazy[r]:
            raise KeyError(member_id)  # its values are not held: the caller makes them again
        return self._sha(r), (self.values[r] if self.has[r] else _NO_SIGNATURE)

    def __setitem__(self, member_id: str, value: tuple[str, np.ndarray]) -> None:
        if member_id in self._rows():
            raise KeyError(f"{member_id} already has a signature row")
        self._extra[member_id] = (value[0], np.asarray(value[1], dtype=np.uint32))

    def __contains__(self, member_id: object) -> bool:
        return member_id in self._rows() or member_id in self._extra

    def __iter__(self):  # noqa: ANN204 - an iterator of member ids
        yield from self._id_list()
        yield from self._extra

    def __len__(self) -> int:
        return len(self.ids) + len(self._extra)

    def rows_of(self, member_ids: Sequence[str]) -> np.ndarray:
        """int64 (len(member_ids),): the array row of each member id, -1 where it has none
        (added entries included as -1); looked up with Arrow, no dict of the ids built."""
        ids = self.ids if isinstance(self.ids, pa.Array) else pa.array(self.ids, pa.string())
        found = pc.index_in(pa.array(list(member_ids), pa.string()), value_set=ids)
        return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)

    def shas_at(self, rows: np.ndarray) -> list[str]:
        """The text sha256 of the given array rows."""
        if isinstance(self.shas, list):
            return [self.shas[r] for r in rows.tolist()]
        return self.shas.take(pa.array(rows, type=pa.int64())).to_pylist()

    def table(self, level: str, cfg: CurateConfig) -> pa.Table:
        """``SIGNATURES_SCHEMA`` rows of every member (``level``; made with ``cfg`` and :data:`SHINGLER`),
        built column by column from the arrays."""
        return pa.concat_tables(list(self.tables(level, cfg)))

    def tables(self, level: str, cfg: CurateConfig, rows: int = 1 << 62) -> Iterable[pa.Table]:
        """:meth:`table` as tables of at most ``rows`` array rows each (the added entries in the last):
        a writer needs only one of them at a time."""
        n = len(self.ids)
        for lo in range(0, max(n, 1), rows):
            yield self._table(level, cfg, lo, min(n, lo + rows), lo + rows >= n)

    def _table(self, level: str, cfg: CurateConfig, lo: int, hi: int, last: bool) -> pa.Table:
        def column(base: list[str] | pa.Array, more: list[str]) -> pa.Array:
            if isinstance(base, list):
                return pa.array(base[lo:hi] + more, pa.string())
            return pa.concat_arrays([base[lo:hi].cast(pa.string()), pa.array(more, pa.string())])

        extra = self._extra if last else {}
        ids = column(self.ids, list(extra))
        shas = column(self.shas, [v[0] for v in extra.values()])
        has, values = self.has[lo:hi], self.values[lo:hi]
        lazy = self.lazy[lo:hi] if self.lazy is not None else np.zeros(hi - lo, dtype=bool)
        held = has & ~lazy  # rows whose values are written
        more = [np.asarray(v[1], dtype=np.uint32) for v in extra.values()]
        lengths = np.concatenate([np.where(held, values.shape[1], 0), np.fromiter(map(len, more), dtype=np.int64)])
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        flat = values.reshape(-1) if held.all() else values[held].reshape(-1)  # a view when all have one
        if extra:
            flat = np.concatenate([flat, *more]).astype(np.uint32, copy=False)
        n = len(ids)
        bands = lsh_bands(cfg.near_duplicate_threshold, cfg.num_perm)
        keys = np.zeros((hi - lo, bands[0]), dtype=np.uint32)
        keyed = has if values.shape[1] == cfg.num_perm else np.zeros(hi - lo, dtype=bool)
        if keyed.any():
            keys[held] = band_keys(values if held.all() else values[held], bands)
            if lazy.any():
                keys[lazy] = self.keys[lo:hi][lazy]
        full = [v for v in more if len(v) == cfg.num_perm]
        keys = np.concatenate([keys[keyed]] + [band_keys(v.reshape(1, -1), bands) for v in full])
        return pa.Table.from_arrays(
            [pa.array([level] * n, pa.string()), ids, shas,
             pa.array(np.full(n, cfg.num_perm, dtype=np.int32)), pa.array(np.full(n, cfg.shingle_words, dtype=np.int32)),
             pa.ListArray.from_arrays(pa.array(offsets), pa.Array.from_buffers(  # the values not copied
                 pa.uint32(), len(flat), [None, pa.py_buffer(np.ascontiguousarray(flat))]),
                 mask=pa.array(np.concatenate([lazy, np.zeros(len(more), dtype=bool)])) if lazy.any() else None),
             pa.array([SHINGLER] * n, pa.string()), pa.nulls(n, pa.string()),
             _bands_column(keys, np.concatenate([keyed, np.fromiter((len(v) == cfg.num_perm for v in more), dtype=bool,
                                                                     count=len(more))]))],
            schema=SIGNATURES_SCHEMA)

    def nbytes(self) -> int:
        """About the bytes of :meth:`table` (the zstd level of the file depends on it)."""
        ids, shas = self.ids, self.shas
        strings = (ids.nbytes + shas.nbytes) if isinstance(ids, pa.Array) else 8 * len(ids) + sum(map(len, ids)) + \
            sum(map(len, shas))
        return int(self.has.sum()) * self.values.shape[1] * 4 + strings + 32 * len(self)

    @classmethod
    def from_table(cls, table: pa.Table, width: int | None = None, mask: np.ndarray | None = None, *,
                   lengths: np.ndarray | None = None, hashvalues: Iterable[pa.ListArray] | None = None,
                   lazy_bands: int = 0) -> "Signatures":
        """The signatures of ``SIGNATURES_SCHEMA`` rows (those of ``mask``, bool (n,), when given),
        read a Parquet row group (column chunk) at a time into one array: no copy of the table
        and no Python int per value. Rows whose signature is neither empty nor ``width`` long
        (default: the longest) are left out. ``hashvalues`` (the column's pieces, in row order)
        and ``lengths`` (values per row, -1 where null) stand for a ``hashvalues`` column
        ``table`` lacks. With ``lazy_bands`` (b > 0: the band keys were made with this
        :func:`lsh_bands`), a row whose values were left out but holds ``b`` band keys is a lazy
        row (see the class); without it, such a row is left out too."""
        if hashvalues is None:
            hashvalues = table.column("hashvalues").chunks
            lengths = _list_lengths(hashvalues)
        width = int(lengths.max()) if width is None and len(lengths) else (width or 0)
        sel = (lengths == 0) | (lengths == width)
        bands = None
        if lazy_bands and width and "bands" in table.column_names:  # rows left out with their keys: lazy
            bands = table.column("bands").combine_chunks()
            sel |= (lengths == -1) & (_list_lengths([bands]) == lazy_bands)
        if mask is not None:
            sel &= mask
        rows = np.flatnonzero(sel)
        lazy = lengths[rows] == -1
        has = (lengths[rows] > 0) | lazy
        keys = None
        if lazy.any():
            keys = np.zeros((len(rows), lazy_bands), dtype=np.uint32)
            flat, offs = bands.values.to_numpy(zero_copy_only=False), bands.offsets.to_numpy(zero_copy_only=False)
            keys[lazy] = flat[offs[rows[lazy]][:, None] + np.arange(lazy_bands)]
        values = np.zeros((len(rows), width), dtype=np.uint32)
        at, start = 0, 0  # rows of earlier chunks placed; the first table row of this chunk
        for ch in hashvalues:
            mine = rows[at:at + int(np.searchsorted(rows[at:], start + len(ch)))] - start
            full = mine[lengths[mine + start] > 0]
            if len(full):
                flat = ch.values.to_numpy(zero_copy_only=False)  # the chunk's values (``offsets`` index them)
                offs = ch.offsets.to_numpy(zero_copy_only=False)
                dst = at + np.flatnonzero(lengths[mine + start] > 0)
                if (lengths[start:start + len(ch)] == width).all():  # every row full: a (rows, width) view
                    block = flat[offs[0]:offs[0] + len(ch) * width].reshape(len(ch), width)
                    if full[-1] - full[0] + 1 == len(full) and dst[-1] - dst[0] + 1 == len(dst):
                        values[dst[0]:dst[-1] + 1] = block[full[0]:full[-1] + 1]
                    else:
                        values[dst] = block[full]
                else:  # gathered a few rows at a time
                    for lo in range(0, len(full), 1024):
                        values[dst[lo:lo + 1024]] = flat[offs[full[lo:lo + 1024]][:, None] + np.arange(width)]
            at += len(mine)
            start += len(ch)
        picked = table.select(["member_id", "text_sha256"]).take(pa.array(rows, type=pa.int64())).combine_chunks()
        return cls(picked.column("member_id").chunk(0) if picked.num_rows else pa.array([], pa.string()),
                   picked.column("text_sha256").chunk(0) if picked.num_rows else pa.array([], pa.string()), values, has,
                   keys=keys, lazy=lazy)


@dataclass
class Clusters:
    """Result of :func:`find_duplicates` for one level.

    Attributes:
        rows: ``DUPLICATES_SCHEMA`` rows (dicts) of clusters with two or more members.
        aliases: member id -> canonical member id, for non-canonical members.
        signatures: member id -> (text sha256, uint32 signature) of every member (:class:`Signatures`).
        errors: member id -> ``(error type, message)`` of a member whose shingles could not be
            computed; it is left out of every cluster and of ``signatures`` (its document is
            quarantined, see :func:`curate_chunks`).
        remade: lazy stored signatures made again from their texts (they shared an LSH bucket).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    signatures: Signatures = field(default_factory=Signatures)
    errors: dict[str, tuple[str, str]] = field(default_factory=dict)
    remade: int = 0

    def count(self, method: str) -> int:
        """Non-canonical members found by ``method`` (``exact`` or ``near``)."""
        return sum(1 for r in self.rows if r["method"] == method)


def find_duplicates(
    members: Sequence[Member], cfg: CurateConfig, level: str,
    stored: Mapping[str, tuple[str, np.ndarray]] | None = None, texts: ColumnTexts | None = None,
    trusted: Collection[str] = (),
) -> Clusters:
    """Cluster exact and near-duplicate members (see the module docstring for the order and method).

    Args:
        members: documents or chunks in source order.
        cfg: the ``curate:`` params.
        level: ``document`` or ``chunk`` (recorded in the rows).
        stored: member id -> (text sha256, signature) from the parent version; reused when the
            sha256 still matches (nothing is recomputed for unchanged members).
        texts: the members' texts (:class:`ColumnTexts`), read in place of ``Member.text``.
        trusted: ids of members whose text is the one their ``stored`` row was made from (a
            refresh's carried rows): their stored sha256 is taken, their text not even read.

    Returns:
        The clusters.
    """
    stored = stored or {}
    order = sorted(range(len(members)), key=lambda i: (not members[i].preferred, i))
    texts = texts if texts is not None else [m.text for m in members]
    shas = _stored_shas(members, stored, trusted)
    missing = [i for i, sha in enumerate(shas) if sha is None]
    picked = texts.subset(missing) if isinstance(texts, ColumnTexts) else [texts[i] for i in missing]
    for i, t in zip(missing, picked):
        shas[i] = content_sha256(t)
    out = Clusters()
    width = cfg.num_perm if cfg.near_duplicates else 0
    values = np.zeros((len(members), width), dtype=np.uint32)  # row i: member i's signature (when has[i])
    has = np.zeros(len(members), dtype=bool)
    lazy, keys = None, None  # rows reused without their values (lazy in ``stored``), and their band keys
    bad: dict[int, Exception] = {}
    if cfg.near_duplicates and isinstance(stored, Signatures) and not stored._extra:
        # the parent's signatures (one array): matched by id with Arrow, copied row blocks at a time
        at = stored.rows_of([m.member_id for m in members])
        found = np.flatnonzero(at >= 0)
        same = np.fromiter((a == shas[i] for i, a in zip(found.tolist(), stored.shas_at(at[found]))),
                           dtype=bool, count=len(found))
        idx = found[same]
        src = at[idx]
        if stored.values.shape[1] != cfg.num_perm:  # only empty ones are usable
            idx, src = idx[~stored.has[src]], src[~stored.has[src]]
        has[idx] = stored.has[src]
        if stored.values.shape[1] == cfg.num_perm:
            for lo in range(0, len(idx), _MINHASH_BLOCK):  # no temporary of every reused row
                values[idx[lo:lo + _MINHASH_BLOCK]] = stored.values[src[lo:lo + _MINHASH_BLOCK]]
            if stored.lazy is not None and stored.lazy[src].any():  # left out of their files: band keys only
                lazy_src = stored.lazy[src]
                lazy = np.zeros(len(members), dtype=bool)
                lazy[idx[lazy_src]] = True
                keys = np.zeros((len(members), stored.keys.shape[1]), dtype=np.uint32)
                keys[idx[lazy_src]] = stored.keys[src[lazy_src]]
        reused = np.zeros(len(members), dtype=bool)
        reused[idx] = True
        todo = np.flatnonzero(~reused).tolist()
    elif cfg.near_duplicates:
        todo = []
        for i, m in enumerate(members):
            s = stored.get(m.member_id) if stored else None
            if s is not None and s[0] == shas[i] and len(s[1]) in (0, cfg.num_perm):
                if len(s[1]):
                    values[i], has[i] = s[1], True
            else:
                todo.append(i)
    stored = None  # copied: the caller may hold no other reference (then it is freed now)
    if cfg.near_duplicates:
        if len(todo) == len(members):  # nothing stored (a full build): computed in place
            values, has = minhash_matrix(texts, cfg, errors=bad)
        elif todo:
            picked = texts.subset(todo) if isinstance(texts, ColumnTexts) else [texts[i] for i in todo]
            computed, computed_has = minhash_matrix(picked, cfg, errors=bad)
            values[todo], has[todo] = computed, computed_has
            del computed
            release_unused_memory()  # the shingle hashes of the texts: not held through the clustering
            bad = {todo[k]: e for k, e in bad.items()}
        for i, e in bad.items():  # one bad text is quarantined, never fatal
            out.errors[members[i].member_id] = (type(e).__name__, collapse(str(e)) or type(e).__name__)
    bands = lsh_bands(cfg.near_duplicate_threshold, cfg.num_perm)
    index = None
    if cfg.near_duplicates and lazy is not None:
        # lazy rows: bucketed by band keys, and their values made again from the text only when
        # they share a bucket with another row (only then are they compared)
        for lo in range(0, len(members), _MINHASH_BLOCK):
            rows = lo + np.flatnonzero(has[lo:lo + _MINHASH_BLOCK] & ~lazy[lo:lo + _MINHASH_BLOCK])
            keys[rows] = band_keys(values[rows], bands)
        index = BandIndex(values, bands, keys)
        make = np.flatnonzero(lazy & index.shared(has))
        if len(make):
            made, made_has = minhash_matrix(texts.subset(make) if isinstance(texts, ColumnTexts)
                                            else [texts[i] for i in make.tolist()], cfg)
            values[make], has[make] = made, made_has
            lazy[make] = False
            out.remade = len(make)
    elif cfg.near_duplicates:
        index = BandIndex(values, bands)
    lazy = lazy if lazy is not None and lazy.any() else None  # (the texts are held only for lazy rows)
    if not bad:
        out.signatures = Signatures([m.member_id for m in members], shas, values, has, keys=keys, lazy=lazy,
                                    texts=texts if lazy is not None else None)
    else:
        kept = [i for i in range(len(members)) if i not in bad]
        out.signatures = Signatures(
            [members[i].member_id for i in kept], [shas[i] for i in kept], values[kept], has[kept],
            keys=keys[kept] if lazy is not None else None, lazy=lazy[kept] if lazy is not None else None,
            texts=None if lazy is None else texts.subset(kept) if isinstance(texts, ColumnTexts) else [texts[i] for i in kept])
    by_sha: dict[str, tuple[int, float]] = {}
    cluster_of: dict[int, int] = {}
    members_of: dict[int, list[tuple[int, float, str]]] = defaultdict(list)
    for i in order:
        m = members[i]
        if i in bad:  # its document is quarantined: in no cluster
            continue
        hit = by_sha.get(shas[i])
        if hit is not None:  # an exact copy of a canonical member, or of a near copy (then its cluster)
            members_of[hit[0]].append((i, hit[1], "exact"))
            continue
        if index is not None and has[i]:
            sig = values[i]
            best, best_sim = None, -1.0
            for j in index.query(i):
                sim = jaccard(sig, values[j])
                if sim >= cfg.near_duplicate_threshold and (sim > best_sim or (sim == best_sim and j < best)):
                    best, best_sim = j, sim
            index.insert(i)  # near copies are indexed too: a copy of a copy joins the same cluster
            if best is not None:
                canon = cluster_of[best]
                sim = best_sim if canon == best else jaccard(sig, values[canon])
                members_of[canon].append((i, sim, "near"))
                cluster_of[i] = canon
                by_sha.setdefault(shas[i], (canon, sim))
                continue
            cluster_of[i] = i
        by_sha[shas[i]] = (i, 1.0)
    del index
    for c, mem in sorted(members_of.items()):
        cm = members[c]
        out.rows.append({"cluster_id": cm.member_id, "level": level, "member_id": cm.member_id, "doc_id": cm.doc_id,
                         "uri": cm.uri, "canonical": True, "canonical_id": cm.member_id, "similarity": 1.0,
                         "method": "canonical"})
        for i, sim, method in mem:
            m = members[i]
            out.aliases[m.member_id] = cm.member_id
            out.rows.append({"cluster_id": cm.member_id, "level": level, "member_id": m.member_id, "doc_id": m.doc_id,
                             "uri": m.uri, "canonical": False, "canonical_id": cm.member_id,
                             "similarity": round(sim, 4), "method": method})
    return out


def _stored_shas(members: Sequence[Member], stored: Mapping[str, tuple[str, np.ndarray]],
                 trusted: Collection[str]) -> list[str | None]:
    """Per member, the stored text sha256 of a ``trusted`` member, else ``None`` (to compute)."""
    out: list[str | None] = [None] * len(members)
    if not trusted or not len(members):
        return out
    if isinstance(stored, Signatures) and not stored._extra:
        at = stored.rows_of([m.member_id for m in members])
        ok = np.flatnonzero(at >= 0)
        ok = ok[np.fromiter((members[i].member_id in trusted for i in ok.tolist()), dtype=bool, count=len(ok))]
        for i, sha in zip(ok.tolist(), stored.shas_at(at[ok])):
            out[i] = sha
        return out
    for i, m in enumerate(members):
        if m.member_id in trusted and m.member_id in stored:
            out[i] = stored[m.member_id][0]
    return out


# ------------------------------------------------------------------ the version's curation
@dataclass
class Curation:
    """What curation decided for one version (published as three files with it).

    Attributes:
        config: the ``curate:`` params used.
        documents: document-level clusters.
        chunks: chunk-level clusters.
        boilerplate: boilerplate removals.
        removed_chunks: chunk rows not indexed (aliases under ``link``/``keep_first``).
        removed_documents: documents indexed through another copy only (no chunks of their own).
        carried: duplicate rows carried from the parent (unchanged aliases whose canonical is still there).
        quarantine: documents the shingler failed on (stage ``curate``), with none of their
            chunks indexed; the flows drop them from the version's documents (:func:`without_quarantined`)
            and add these records to its quarantine table.
        seconds: wall time of the curation.
    """

    config: CurateConfig
    documents: Clusters = field(default_factory=Clusters)
    chunks: Clusters = field(default_factory=Clusters)
    boilerplate: BoilerplateReport = field(default_factory=BoilerplateReport)
    removed_chunks: int = 0
    removed_documents: int = 0
    carried: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[QuarantineRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def quarantined_uris(self) -> set[str]:
        """Source URIs of the documents curation quarantined."""
        return {q.path for q in self.quarantine}

    def duplicates_table(self) -> pa.Table:
        """``DUPLICATES_SCHEMA`` table: document clusters, then chunk clusters (carried rows included)."""
        rows = self.documents.rows + self.chunks.rows
        seen = {(r["level"], r["member_id"]) for r in rows}
        rows += [r for r in self.carried if (r["level"], r["member_id"]) not in seen]
        return pa.Table.from_pylist(rows, schema=DUPLICATES_SCHEMA)

    def signatures_table(self) -> pa.Table:
        """``SIGNATURES_SCHEMA`` table of every document and chunk signature (documents first)."""
        return pa.concat_tables([cl.signatures.table(lvl, self.config)
                                 for lvl, cl in (("document", self.documents), ("chunk", self.chunks))])

    def write_signatures(self, path: str | Path, docs: pa.Array | None = None,
                         doc_of: tuple[pa.Array, pa.Array] | None = None,
                         held: tuple[pa.Array, pa.Array] | None = None) -> None:
        """Write :meth:`signatures_table` as Parquet, :data:`SIGNATURES_ROW_GROUP` rows at a time
        (the whole table is never built: issue 12, bounded memory).

        Args:
            path: the file.
            docs: write only the rows of these doc ids (a segment's documents); default: every row.
            doc_of: ``(chunk ids, their doc ids)``: the ``doc_id`` column of chunk rows (a
                document row's doc id is its member id); a chunk not in it gets null (and is
                left out when ``docs`` is given).
            held: ``(doc ids, chunk ids)`` whose texts the file's segment holds: their
                signatures are left out (:func:`_without_held`); default: every one written.
        """
        import pyarrow.parquet as pq

        parts = (("document", self.documents.signatures), ("chunk", self.chunks.signatures))
        for level, sig in parts:  # a lazy row written where its text is not held: its values are made now
            if sig.lazy is not None:
                ids = sig.ids if isinstance(sig.ids, pa.Array) else pa.array(sig.ids, pa.string())
                owner = ids if level == "document" else _chunk_owner(ids, doc_of)
                out = pc.fill_null(pc.is_in(owner, value_set=docs), False) if docs is not None else \
                    pa.array(np.ones(len(ids), dtype=bool))
                if held is not None:
                    out = pc.and_(out, pc.invert(_held(ids, level, held)))
                sig.materialize(np.flatnonzero(np.asarray(out.to_numpy(zero_copy_only=False), dtype=bool)), self.config)
        options = parquet_write_options(nbytes=sum(sig.nbytes() for _, sig in parts))
        with pq.ParquetWriter(str(path), SIGNATURES_SCHEMA, **options) as writer:
            for level, sig in parts:
                for t in sig.tables(level, self.config, SIGNATURES_ROW_GROUP):
                    t = _without_held(_with_owners(t, doc_of, docs), held)
                    if t.num_rows:
                        writer.write_table(t, row_group_size=SIGNATURES_ROW_GROUP)
                        del t
                        # the writer's freed level and page buffers stay in Arrow's allocator otherwise:
                        # about 40 MB at 27k rows (4 row groups), 10 MB with this
                        release_unused_memory()

    def segment_signatures(self, documents: pa.Table, chunks: pa.Table,
                           release: bool = False) -> Callable[[Path], None] | None:
        """A writer of a new segment's ``signatures.parquet``: the signatures of its documents
        and of their chunks (each document's rows live in its document's segment, so its
        tombstones mask them), or ``None`` when it has no documents.

        Args:
            documents: ``DOCUMENTS_SCHEMA`` rows of the segment.
            chunks: ``CHUNKS_SCHEMA`` rows of the segment (with the duplicate rows, they name
                the document of each chunk member; a copy's chunks are not indexed).
            release: once written, this curation's signatures are let go (a streamed ingest's
                part: about 0.8 kB a chunk, not held while the segment's index is built; issue
                12). The writer then writes once: called again, it raises ``RuntimeError``
                rather than write a file without them.
        """
        if not documents.num_rows:
            return None
        doc_of = _chunk_owners(chunks, self.duplicates_table())
        docs = documents.column("doc_id").combine_chunks()
        held = (docs, chunks.column("chunk_id").combine_chunks())
        written: list[Path] = []

        def write(folder: Path) -> None:
            if release and written:
                raise RuntimeError(f"{written[0]}: these signatures were written and let go; they cannot be written again")
            self.write_signatures(Path(folder) / SIGNATURES_FILE, docs, doc_of, held)
            written.append(Path(folder) / SIGNATURES_FILE)
            if release:
                self.documents.signatures, self.chunks.signatures = Signatures(), Signatures()

        return write

    def counts(self) -> dict[str, Any]:
        """Counts by rule (what ``curation.json`` and ``ragline index show`` report)."""
        carried = Counter((r["level"], r["method"]) for r in self.carried if not r["canonical"])
        return {
            "policy": self.config.duplicates,
            "near_duplicate_threshold": self.config.near_duplicate_threshold,
            "documents": {"exact": self.documents.count("exact") + carried[("document", "exact")],
                          "near": self.documents.count("near") + carried[("document", "near")]},
            "chunks": {"exact": self.chunks.count("exact") + carried[("chunk", "exact")],
                       "near": self.chunks.count("near") + carried[("chunk", "near")]},
            "removed_documents": self.removed_documents,
            "removed_chunks": self.removed_chunks,
            "boilerplate": {"documents": len(self.boilerplate.removed),
                            "elements": sum(len(v) for v in self.boilerplate.removed.values()),
                            "chars": self.boilerplate.chars},
            "shingle_errors": len(self.documents.errors) + len(self.chunks.errors),
            "quarantined_documents": len(self.quarantine),
            "seconds": round(self.seconds, 3),
        }

    def to_json(self) -> dict[str, Any]:
        """``curation.json``: counts, config, boilerplate removed per document and keys per group, errors."""
        return {"counts": self.counts(), "config": self.config.model_dump(mode="json"),
                "boilerplate_removed": self.boilerplate.removed, "boilerplate_keys": self.boilerplate.keys,
                "shingle_errors": {m: f"{t}: {msg}" for m, (t, msg) in {**self.documents.errors,
                                                                        **self.chunks.errors}.items()}}

    def write(self, folder: str | Path) -> None:
        """Write ``duplicates.parquet`` and ``curation.json`` into the version ``folder`` (the
        signatures go into segments: :meth:`segment_signatures`)."""
        folder = Path(folder)
        write_table(self.duplicates_table(), folder / DUPLICATES_FILE, DUPLICATES_SCHEMA)
        write_json_atomic(folder / CURATION_FILE, self.to_json())


@dataclass(frozen=True)
class SignaturePart:
    """One ``signatures.parquet`` a version's signatures are read from.

    Attributes:
        path: the file (a segment's, or a version folder's written before signatures moved into segments).
        live: bool (rows,): rows whose ``doc_id`` is not tombstoned in that segment; ``None``: all.
    """

    path: Path
    live: np.ndarray | None = None


@dataclass(frozen=True)
class CarriedCuration:
    """A version's curation as it is, published again with a compaction of that version
    (same interface as :class:`Curation` for :func:`pipelines.publish.publish_index`): its
    ``duplicates.parquet`` and ``curation.json``, and the live rows of its signature files
    written into the merged segment."""

    folder: Path
    parts: list[SignaturePart]

    def write(self, folder: str | Path) -> None:
        """Copy ``duplicates.parquet`` and ``curation.json`` into the new version ``folder``."""
        import shutil

        for fname in (DUPLICATES_FILE, CURATION_FILE):
            if (self.folder / fname).exists():
                shutil.copyfile(self.folder / fname, Path(folder) / fname)

    def counts(self) -> dict[str, Any]:
        """The counts of the carried ``curation.json`` (empty without one)."""
        path = self.folder / CURATION_FILE
        return json.loads(path.read_text(encoding="utf-8")).get("counts", {}) if path.exists() else {}

    def segment_signatures(self, documents: pa.Table, chunks: pa.Table) -> Callable[[Path], None] | None:
        """A writer of the merged segment's ``signatures.parquet``: the live rows of the
        version's signature files, a row group at a time, each with its document (a version
        file written before segments held signatures has none: a document row's is its member
        id, a chunk's comes from ``chunks`` and ``duplicates.parquet``); rows of no document of
        ``documents`` are left out. ``None`` without signatures."""
        if not self.parts:
            return None
        dup_path = self.folder / DUPLICATES_FILE
        doc_of = _chunk_owners(chunks, read_table(dup_path, DUPLICATES_SCHEMA) if dup_path.exists()
                               else DUPLICATES_SCHEMA.empty_table())
        docs = documents.column("doc_id").combine_chunks()
        held = (docs, chunks.column("chunk_id").combine_chunks())
        parts = self.parts

        def write(folder: Path) -> None:
            import pyarrow.parquet as pq

            with pq.ParquetWriter(str(Path(folder) / SIGNATURES_FILE), SIGNATURES_SCHEMA,
                                  **parquet_write_options(nbytes=sum(p.path.stat().st_size for p in parts))) as writer:
                for b in _live_batches(parts, None):
                    t = _without_held(_with_owners(_as_signatures(pa.Table.from_batches([b])), doc_of, docs), held)
                    if t.num_rows:
                        writer.write_table(t, row_group_size=SIGNATURES_ROW_GROUP)

        return write


def _chunk_owners(chunks: pa.Table, duplicates: pa.Table) -> tuple[pa.Array, pa.Array]:
    """``(chunk member ids, their doc ids)``: the indexed ``chunks`` and the chunk rows of
    ``duplicates`` (the copies, which are not indexed)."""
    dup = duplicates.filter(pc.equal(pc.field("level"), "chunk"))
    return tuple(pa.concat_arrays([chunks.column(a).combine_chunks().cast(pa.string()),
                                   dup.column(b).combine_chunks().cast(pa.string())])
                 for a, b in (("chunk_id", "member_id"), ("doc_id", "doc_id")))


def _with_owners(t: pa.Table, doc_of: tuple[pa.Array, pa.Array] | None, docs: pa.Array | None) -> pa.Table:
    """``SIGNATURES_SCHEMA`` rows with their ``doc_id`` filled where null (a document row's is
    its member id, a chunk's is looked up in ``doc_of``), only the rows of ``docs`` when given."""
    ids = t.column("member_id")
    found = pc.if_else(pc.equal(t.column("level"), "document"), ids, _chunk_owner(ids, doc_of))
    t = t.set_column(t.schema.get_field_index("doc_id"), SIGNATURES_SCHEMA.field("doc_id"),
                     pc.coalesce(t.column("doc_id"), found))
    return t if docs is None else t.filter(pc.fill_null(pc.is_in(t.column("doc_id"), value_set=docs), False))


def _chunk_owner(ids: pa.Array | pa.ChunkedArray, doc_of: tuple[pa.Array, pa.Array] | None) -> pa.Array:
    """The doc id of each chunk id, looked up in ``doc_of`` (``(chunk ids, their doc ids)``);
    null where it is not there or ``doc_of`` is ``None``."""
    if doc_of is None:
        return pa.nulls(len(ids), pa.string())
    return doc_of[1].take(pc.index_in(ids, value_set=doc_of[0]))


def _held(ids: pa.Array | pa.ChunkedArray, level: str | pa.Array | pa.ChunkedArray,
          held: tuple[pa.Array, pa.Array]) -> pa.Array | pa.ChunkedArray:
    """Boolean mask: the segment holds the member's text (a ``"document"`` row whose id is in
    ``held[0]``, a ``"chunk"`` row whose id is in ``held[1]``); ``level``: per row, or one for all."""
    return pc.or_(pc.and_(pc.equal(level, "document"), pc.is_in(ids, value_set=held[0])),
                  pc.and_(pc.equal(level, "chunk"), pc.is_in(ids, value_set=held[1])))


def _without_held(t: pa.Table, held: tuple[pa.Array, pa.Array] | None) -> pa.Table:
    """``SIGNATURES_SCHEMA`` rows with a null ``hashvalues`` where the segment holds the member's
    text (a document row of ``held[0]``, a chunk row of ``held[1]``) and the signature is a full
    one: readers recompute it from that text when they need it (:func:`signatures_from_texts`),
    which a refresh does only for the few members sharing a text sha256 or an LSH band key with
    its change. The sha256 and band keys stay (a row without band keys keeps its values: its
    keys come from them). 128 uint32 values are about 0.5 KB of a member's 0.6 KB (issue 12:
    the disk a refresh adds). A text without words keeps its empty list; ``held=None`` keeps
    every signature."""
    if held is None or not t.num_rows:
        return t
    ids, level, hv = t.column("member_id"), t.column("level"), t.column("hashvalues")
    mine = _held(ids, level, held)
    omit = pc.fill_null(pc.and_(pc.and_(mine, pc.greater(pc.list_value_length(hv), 0)),
                                pc.is_valid(t.column("bands"))), False)
    if not pc.any(omit).as_py():
        return t
    return t.set_column(t.schema.get_field_index("hashvalues"), SIGNATURES_SCHEMA.field("hashvalues"),
                        pc.if_else(omit, pa.scalar(None, hv.type), hv))


def signatures_from_texts(folder: Path, level: str, member_ids: Sequence[str], shas: Sequence[str],
                          cfg: CurateConfig) -> list[np.ndarray]:
    """The signatures a segment's ``signatures.parquet`` leaves out (null ``hashvalues``:
    :func:`_without_held`), made again from the texts the segment holds (``documents.parquet``
    for ``document`` members, ``chunks.parquet`` for ``chunk`` ones; only their row groups are
    read, :class:`core.schemas.ParquetRows`).

    Args:
        folder: the segment folder.
        level: ``document`` or ``chunk``.
        member_ids: doc ids or chunk ids.
        shas: their stored text sha256 (checked against the texts).
        cfg: the ``num_perm`` and ``shingle_words`` they were made with.

    Returns:
        One uint32 (num_perm,) signature per member (empty for a text without words).

    Raises:
        CorruptRegistryError: a member's text is not in the segment, or is not the text its
            signature was made from (the segment is damaged).
    """
    from ragline.core.schemas import DOCUMENTS_SCHEMA, ParquetRows
    from ragline.indexers.segments import CHUNK_ROWS_FILE, CHUNKS_FILE, DOCUMENTS_FILE

    if not len(member_ids):
        return []
    folder = Path(folder)
    rows = (ParquetRows(folder / DOCUMENTS_FILE, DOCUMENTS_SCHEMA) if level == "document"
            else ParquetRows(folder / CHUNKS_FILE, CHUNKS_SCHEMA, folder / CHUNK_ROWS_FILE))
    at = pc.index_in(pa.array(list(member_ids), pa.string()),
                     value_set=rows.column("doc_id" if level == "document" else "chunk_id"))
    found = at.to_pylist()
    got = iter(rows.take([r for r in found if r is not None], ["text"])["text"])
    texts = [next(got) if r is not None else None for r in found]
    bad = [m for m, t, sha in zip(member_ids, texts, shas) if t is None or content_sha256(t) != sha]
    if bad:
        raise CorruptRegistryError(f"{folder}: {level} {bad[0]} has no signature stored and not the text it was made "
                                  "from in the segment; the segment is damaged")
    values, has = minhash_matrix(texts, cfg)
    return [values[i] if has[i] else _NO_SIGNATURE for i in range(len(texts))]


def _as_signatures(t: pa.Table) -> pa.Table:
    """``t`` with ``SIGNATURES_SCHEMA``'s columns (optional ones it lacks as nulls)."""
    cols = [t.column(f.name) if f.name in t.column_names else pa.nulls(t.num_rows, f.type) for f in SIGNATURES_SCHEMA]
    return pa.Table.from_arrays(cols, schema=SIGNATURES_SCHEMA)


def _live_batches(parts: Sequence[SignaturePart], columns: list[str] | None) -> Iterable[pa.RecordBatch]:
    """``columns`` (default: all) of the live rows of ``parts``' files, a row group at a time, in order."""
    import pyarrow.parquet as pq

    for part in parts:
        lo = 0
        for b in pq.ParquetFile(part.path).iter_batches(batch_size=SIGNATURES_ROW_GROUP, columns=columns):
            n = b.num_rows
            if part.live is not None:
                b = b.filter(pa.array(part.live[lo:lo + n], type=pa.bool_()))
            lo += n
            yield b


def carried_curation(registry: Any, name: str, version: str) -> CarriedCuration | None:
    """``name@version``'s curation to carry into a compaction of it, or ``None`` when it has none."""
    folder = registry.version_dir(name, version)
    if not (folder / CURATION_FILE).exists():
        return None
    return CarriedCuration(folder, version_signature_parts(registry, name, version))


def version_signature_parts(registry: Any, name: str, version: str) -> list[SignaturePart]:
    """Where ``name@version``'s signatures are: its segments' files (:func:`signature_parts`),
    or the version folder's one file when it was written before segments held them."""
    folder = registry.version_dir(name, version)
    if (folder / SIGNATURES_FILE).exists():
        return [SignaturePart(folder / SIGNATURES_FILE)]
    return signature_parts(registry, name, registry.segments(name, version), registry.manifest(name, version).tombstones)


def signature_parts(registry: Any, name: str, segments: Sequence[Any],
                    tombstones: Mapping[str, Mapping[str, Any]]) -> list[SignaturePart]:
    """The segments' ``signatures.parquet`` files, in segment order (each holds the rows of its
    own documents), with the rows of tombstoned documents masked out."""
    import pyarrow.parquet as pq

    out = []
    for ref in segments:
        path = registry.segment_dir(name, ref.id) / SIGNATURES_FILE
        if not path.exists():
            continue
        dead = list((tombstones.get(ref.id) or {}).get("doc_ids") or [])
        live = None
        if dead:
            docs = pq.read_table(str(path), columns=["doc_id"]).column("doc_id")
            live = np.asarray(pc.invert(pc.fill_null(pc.is_in(docs, value_set=pa.array(dead, pa.string())), False))
                              .to_numpy(zero_copy_only=False), dtype=bool)
        out.append(SignaturePart(path, live))
    return out


def made_with(t: pa.Table, cfg: CurateConfig) -> pa.ChunkedArray:
    """bool per row of a ``SIGNATURES_SCHEMA`` table (null where ``shingler`` is): the signature
    was made with ``cfg``'s ``num_perm`` and ``shingle_words`` and this :data:`SHINGLER`, so it
    can be compared with new ones (rows made another way are recomputed)."""
    return pc.and_(pc.and_(pc.equal(t.column("num_perm"), cfg.num_perm), pc.equal(t.column("shingle_words"), cfg.shingle_words)),
                   pc.equal(t.column("shingler"), SHINGLER))


@dataclass
class ParentCuration:
    """The curation files of a parent version (empty when it has none).

    Attributes:
        duplicates: its ``DUPLICATES_SCHEMA`` table.
        boilerplate_keys: group -> boilerplate keys detected.
        parts: the ``signatures.parquet`` files (:class:`SignaturePart`; empty: none).
        signatures: (read on first use) the live rows of those files without the
            ``hashvalues`` column: the signatures are read a row group at a time, straight into
            the arrays of :meth:`stored` (no copy of them held beside those; never a Python int
            per value). A refresh that clusters only its change never reads them
            (:func:`curate_increment` scans the files once instead).
        lengths: (read with ``signatures``) int64 (signatures rows,): values in each row's
            signature, -1 where the file left it out (:func:`_without_held`; :meth:`stored`
            gives such a row as a lazy one, see :class:`Signatures`).
        made_bands: the :func:`lsh_bands` its band keys were made with (its ``curation.json``
            config; ``None``: unknown, or no near-duplicate detection).
    """

    duplicates: pa.Table
    boilerplate_keys: dict[str, list[str]]
    parts: list[SignaturePart] = field(default_factory=list)
    made_bands: tuple[int, int] | None = None
    _loaded: tuple[pa.Table, np.ndarray] | None = field(default=None, repr=False)

    @property
    def signatures(self) -> pa.Table:
        return self._load()[0]

    @property
    def lengths(self) -> np.ndarray:
        return self._load()[1]

    def _load(self) -> tuple[pa.Table, np.ndarray]:
        if self._loaded is None:
            empty = SIGNATURES_SCHEMA.empty_table().drop_columns(["hashvalues"])
            tables, lengths = [empty], [np.zeros(0, dtype=np.int64)]
            for part in self.parts:
                full = read_table(part.path, SIGNATURES_SCHEMA)  # (checked against the schema)
                if part.live is not None:
                    full = full.filter(pa.array(part.live, type=pa.bool_()))
                lengths.append(_list_lengths(full.column("hashvalues").chunks))
                tables.append(full.drop_columns(["hashvalues"]))
                del full
                release_unused_memory()
            self._loaded = (pa.concat_tables(tables), np.concatenate(lengths))
        return self._loaded

    @classmethod
    def read(cls, folder: str | Path | None, parts: Sequence[SignaturePart] | None = None) -> "ParentCuration":
        """Read a version folder's curation files; missing files give empty state (its
        signatures are read when first used).

        Args:
            folder: the version folder.
            parts: where its signatures are (:func:`version_signature_parts`); default: the
                folder's own ``signatures.parquet``, when it has one.
        """
        if folder is None:
            return cls(DUPLICATES_SCHEMA.empty_table(), {})
        folder = Path(folder)
        dup = (read_table(folder / DUPLICATES_FILE, DUPLICATES_SCHEMA) if (folder / DUPLICATES_FILE).exists()
               else DUPLICATES_SCHEMA.empty_table())
        keys, made_bands = {}, None
        if (folder / CURATION_FILE).exists():
            doc = json.loads((folder / CURATION_FILE).read_text(encoding="utf-8"))
            keys, made = doc.get("boilerplate_keys", {}), doc.get("config") or {}
            if made.get("near_duplicates") and made.get("near_duplicate_threshold") and made.get("num_perm"):
                made_bands = lsh_bands(float(made["near_duplicate_threshold"]), int(made["num_perm"]))
        if parts is None:
            parts = [SignaturePart(folder / SIGNATURES_FILE)] if (folder / SIGNATURES_FILE).exists() else []
        return cls(dup, keys, list(parts), made_bands)

    def _batches(self, columns: list[str]) -> Iterable[pa.RecordBatch]:
        """``columns`` of the live rows of the signature files, a row group at a time, in row order."""
        return _live_batches(self.parts, columns)

    def stored(self, level: str, cfg: CurateConfig) -> Signatures:
        """member id -> (sha256, signature) of one level, made with ``cfg``'s num_perm and shingle_words
        and this :data:`SHINGLER` (signatures made another way are recomputed); a signature its
        file left out is a lazy row when its band keys were made with ``cfg``'s bands, else it
        is left out too (made again from the text)."""
        t = self.signatures
        mask = pc.and_(pc.equal(t.column("level"), level), made_with(t, cfg))
        mask = pc.fill_null(mask, False).to_numpy(zero_copy_only=False) if t.num_rows else np.zeros(0, dtype=bool)
        bands = lsh_bands(cfg.near_duplicate_threshold, cfg.num_perm)
        out = Signatures.from_table(t, cfg.num_perm, mask, lengths=self.lengths,
                                    hashvalues=(b.column(0) for b in self._batches(["hashvalues"])),
                                    lazy_bands=bands[0] if cfg.near_duplicates and self.made_bands == bands else 0)
        release_unused_memory()  # the Parquet reader's decoded pages
        return out

    def signatures_of(self, level: str, member_ids: Iterable[str]) -> dict[str, tuple[str, np.ndarray]]:
        """member id -> (sha256, signature) of the given members of one level, however made (one
        a segment left out is made again from the text it holds: :func:`signatures_from_texts`)."""
        ids = pa.array(sorted(set(member_ids)), pa.string())
        out: dict[str, tuple[str, np.ndarray]] = {}
        if not len(ids):
            return out
        columns = ["level", "member_id", "text_sha256", "hashvalues", "num_perm", "shingle_words"]
        for part in self.parts:
            left: dict[tuple[int, int], list[tuple[str, str]]] = defaultdict(list)  # (num_perm, words) -> rows
            for b in _live_batches([part], columns):
                t = pa.Table.from_batches([b])
                t = t.filter(pc.and_(pc.equal(t.column("level"), level), pc.is_in(t.column("member_id"), ids)))
                for mid, sha, hv, n, w in zip(*(t.column(c).to_pylist() for c in columns[1:])):
                    if hv is None:
                        left[(n, w)].append((mid, sha))
                    else:
                        out[mid] = (sha, np.asarray(hv, dtype=np.uint32))
            for (n, w), rows in left.items():
                made = signatures_from_texts(part.path.parent, level, [m for m, _ in rows], [h for _, h in rows],
                                             CurateConfig(num_perm=n, shingle_words=w))
                out.update({m: (h, v) for (m, h), v in zip(rows, made)})
        return out

    def rows(self) -> list[dict[str, Any]]:
        """The parent's duplicate rows as dicts."""
        return self.duplicates.to_pylist()


def curate_chunks(
    documents: pa.Table, chunks: pa.Table, cfg: CurateConfig, *,
    boilerplate: BoilerplateReport | None = None, parent: ParentCuration | None = None,
    fixed_aliases: Sequence[dict[str, Any]] = (), trusted: Collection[str] = (),
) -> tuple[Curation, np.ndarray]:
    """Cluster documents and chunks and decide which chunk rows are indexed.

    Args:
        documents: ``DOCUMENTS_SCHEMA`` table of the version (every document, copies included).
        chunks: ``CHUNKS_SCHEMA`` table of every chunk made (row order = source order).
        cfg: the ``curate:`` params.
        boilerplate: what :func:`strip_boilerplate` removed (recorded).
        parent: the parent version's curation (signatures reused, its canonical members preferred).
        fixed_aliases: parent duplicate rows carried as they are (aliases of unchanged documents
            whose canonical is still indexed; their chunks are not in ``chunks``).
        trusted: ids of documents and chunks carried unchanged from ``parent`` (their stored
            text sha256 is used: :func:`find_duplicates`).

    A document the shingler fails on (its text, or the text of one of its chunks) is
    quarantined: it joins no cluster, none of its chunks is kept, and ``curation.quarantine``
    holds its record (the caller removes it from the version's documents); the run goes on.

    Returns:
        ``(curation, keep)``: keep is bool (n_chunks,), the rows to index.
    """
    out = _curate_chunks(documents, chunks, cfg, boilerplate, parent, fixed_aliases, trusted)
    release_unused_memory()  # the clustering's temporaries (texts, member lists, band index) go back to the OS
    return out


def _curate_chunks(documents: pa.Table, chunks: pa.Table, cfg: CurateConfig, boilerplate: BoilerplateReport | None,
                   parent: ParentCuration | None, fixed_aliases: Sequence[dict[str, Any]],
                   trusted: Collection[str] = ()) -> tuple[Curation, np.ndarray]:
    """:func:`curate_chunks` (its temporaries freed when this returns)."""
    import time

    t0 = time.perf_counter()
    parent = parent or ParentCuration.read(None)
    # members indexed in the parent stay canonical (stable across refreshes)
    not_canonical = {r["member_id"] for r in parent.rows() if not r["canonical"]}
    # the carried copies stay out (their clusters are carried), their canonical copies stay in:
    # a new copy of one joins its cluster
    fixed_docs = {r["member_id"] for r in fixed_aliases if r["level"] == "document" and not r["canonical"]}
    d_ids, d_uris, d_shas = (documents.column(c).to_pylist() for c in ("doc_id", "uri", "sha256"))
    cur = Curation(cfg, boilerplate=boilerplate or BoilerplateReport(), carried=list(fixed_aliases))
    c_doc, c_uris = _shared_strings(chunks.column("doc_id")), _shared_strings(chunks.column("uri"))
    c_ids = chunks.column("chunk_id").to_pylist()
    drop_copies = cfg.duplicates != "keep_all"
    doc_stored = parent.stored("document", cfg)
    chunk_rounds: list[Signatures] = []  # chunk signatures of earlier rounds (reused by the next)
    parent_ids = parent.signatures.column("member_id").combine_chunks()

    def preferred(ids: Sequence[str]) -> list[bool]:
        """Which of ``ids`` have a stored signature (of either level) and are no alias there."""
        if not len(parent_ids) or not len(ids):
            return [False] * len(ids)
        flags = pc.is_in(pa.array(list(ids), pa.string()), value_set=parent_ids).to_pylist()
        return [f and m not in not_canonical for f, m in zip(flags, ids)]
    doc_errors: dict[str, tuple[str, str]] = {}
    chunk_errors: dict[str, tuple[str, str]] = {}
    failed: dict[str, tuple[str, str]] = {}  # doc id -> the shingler's error (document or one of its chunks)
    while True:  # a chunk the shingler fails on quarantines its document: cluster again without it
        d_rows = [r for r, i in enumerate(d_ids) if i not in fixed_docs and i not in failed]
        doc_members = [Member(d_ids[r], d_ids[r], d_uris[r], "", f)
                       for r, f in zip(d_rows, preferred([d_ids[r] for r in d_rows]))]
        cur.documents = find_duplicates(doc_members, cfg, "document", doc_stored,
                                        texts=ColumnTexts(documents.column("text"), np.array(d_rows, dtype=np.int64)),
                                        trusted=trusted)
        doc_errors |= cur.documents.errors
        failed |= {d: e for d, e in cur.documents.errors.items() if d not in failed}
        doc_stored = ChainMap(cur.documents.signatures, doc_stored)  # the next round recomputes nothing
        keep = np.fromiter((d not in failed for d in c_doc), dtype=bool, count=len(c_doc))
        if drop_copies:
            alias_docs = set(cur.documents.aliases)
            keep &= np.fromiter((d not in alias_docs for d in c_doc), dtype=bool, count=len(c_doc))
        if not cfg.chunk_level:
            break
        rows = np.flatnonzero(keep)
        ch_members = [Member(c_ids[r], c_doc[r], c_uris[r], "", f)
                      for r, f in zip(rows.tolist(), preferred([c_ids[r] for r in rows.tolist()]))]
        # the parent's chunk signatures are read for the call only: find_duplicates drops them
        # once it has copied the rows it reuses (they are not held while it clusters)
        cur.chunks = find_duplicates(
            ch_members, cfg, "chunk",
            ChainMap(*reversed(chunk_rounds), parent.stored("chunk", cfg)) if chunk_rounds else parent.stored("chunk", cfg),
            texts=ColumnTexts(chunks.column("text"), rows), trusted=trusted)
        chunk_rounds.append(cur.chunks.signatures)
        chunk_errors |= cur.chunks.errors
        owner = dict(zip(c_ids, c_doc))
        new = {owner[c]: e for c, e in cur.chunks.errors.items() if owner[c] not in failed}
        if not new:
            break
        failed |= new
    if cfg.chunk_level and drop_copies:
        alias_chunks = set(cur.chunks.aliases)
        keep &= np.fromiter((c not in alias_chunks for c in c_ids), dtype=bool, count=len(c_ids))
    cur.documents.errors, cur.chunks.errors = doc_errors, chunk_errors
    where = {d: (u, s) for d, u, s in zip(d_ids, d_uris, d_shas)}
    cur.quarantine = [QuarantineRecord(where[d][0], STAGE, etype, f"curate: the shingler failed on {where[d][0]} "
                                       f"({etype}: {msg}); the document is not indexed", where[d][1] or "")
                      for d, (etype, msg) in sorted(failed.items(), key=lambda kv: where[kv[0]][0])]
    carried_sigs = {lvl: parent.signatures_of(lvl, (r["member_id"] for r in fixed_aliases if r["level"] == lvl))
                    for lvl in ("document", "chunk")}
    for r in fixed_aliases:  # carried aliases keep their stored signatures for the next refresh
        sig = carried_sigs[r["level"]].get(r["member_id"])
        target = cur.documents if r["level"] == "document" else cur.chunks
        if sig is not None and r["member_id"] not in target.signatures:
            target.signatures[r["member_id"]] = sig
    cur.removed_chunks = int((~keep).sum()) - sum(1 for d in c_doc if d in failed)  # copies only
    indexed_docs = {d for d, k in zip(c_doc, keep) if k}
    cur.removed_documents = sum(1 for d in d_ids if d not in indexed_docs and d in cur.documents.aliases) + \
        sum(1 for r in fixed_aliases if r["level"] == "document" and not r["canonical"])
    cur.seconds = time.perf_counter() - t0
    return cur, keep


def without_quarantined(documents: pa.Table, curation: "Curation | None") -> pa.Table:
    """``documents`` (``DOCUMENTS_SCHEMA``) without the rows ``curation`` quarantined."""
    if curation is None or not curation.quarantine:
        return documents
    bad = curation.quarantined_uris
    return documents.filter(pa.array([u not in bad for u in documents.column("uri").to_pylist()], type=pa.bool_()))


def take_rows(chunks: pa.Table, keep: np.ndarray) -> pa.Table:
    """The kept rows of a ``CHUNKS_SCHEMA`` table, ``row`` renumbered 0..n-1 (the FAISS ids).
    When every row is kept, the columns are ``chunks``' own (Arrow's filter would copy them all)."""
    out = chunks if bool(np.all(keep)) else chunks.filter(pa.array(keep, type=pa.bool_()))
    return out.set_column(0, "row", pa.array(np.arange(out.num_rows, dtype=np.int64))).cast(CHUNKS_SCHEMA)


# ------------------------------------------------------------------ refresh
def carried_aliases(parent: ParentCuration, carried_ids: set[str]) -> tuple[list[dict[str, Any]], set[str]]:
    """Split the parent's alias rows of carried (unchanged) documents.

    Args:
        parent: the parent's curation.
        carried_ids: doc ids carried unchanged into the new version.

    Returns:
        ``(rows, rechunk)``: duplicate rows (alias + canonical rows) that stay true as they are
        (alias and canonical documents both carried unchanged), and doc ids of carried
        documents that must be chunked again because their canonical copy was deleted or changed.
    """
    rows = parent.rows()
    canon_doc = {r["member_id"]: r["doc_id"] for r in rows if r["canonical"]}
    keep_rows: list[dict[str, Any]] = []
    rechunk: set[str] = set()
    for r in rows:
        if r["canonical"] or r["doc_id"] not in carried_ids:
            continue
        if canon_doc.get(r["canonical_id"]) in carried_ids:
            keep_rows.append(r)
        else:
            rechunk.add(r["doc_id"])
    clusters = {r["cluster_id"] for r in keep_rows}
    keep_rows += [r for r in rows if r["canonical"] and r["cluster_id"] in clusters]
    return keep_rows, rechunk


def curate_refresh(
    assembly: Any, parent: Any, params: Any, *, state: ParentCuration | None = None,
    boilerplate: BoilerplateReport | None = None,
    embed_fn: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> tuple[Any, Curation]:
    """Curate a refresh's assembly (:class:`pipelines.refresh.Assembly`) against its parent.

    Unchanged documents keep their signatures and clusters; a carried copy whose canonical
    copy was deleted or changed is chunked again from its stored text (its chunks then need
    embedding, through the embedding cache), so its content stays indexed; new and changed
    documents are compared with every document of the version.

    Args:
        assembly: the refresh assembly (documents, chunks, carried vectors, need_embed).
        parent: :class:`pipelines.refresh.ParentData` or ``None`` (a first build).
        params: validated :class:`pipelines.config.Params`.
        state: the parent version's curation files (:meth:`ParentCuration.read`).
        boilerplate: what :func:`strip_boilerplate` removed from the new documents.
        embed_fn: embedder callable, for a chunking strategy that needs one.

    Returns:
        ``(assembly, curation)``: the assembly restricted to the indexed rows (a deferred one:
        with them marked in ``kept``), without the documents curation quarantined (their records
        added to ``assembly.quarantine``).
    """
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.load import documents_from_table

    cfg = params.curate
    state = state or ParentCuration.read(None)
    if parent is not None and assembly.shared is not None and not getattr(assembly, "deferred", False):
        return curate_increment(assembly, parent, params, state=state, boilerplate=boilerplate)  # only the change
    docs, chunks = assembly.documents, assembly.chunks
    need, carried_vec = assembly.need_embed, assembly.carried_vectors
    fixed: list[dict[str, Any]] = []
    if parent is not None:
        parent_sha = parent.document_shas()
        new_chunk_docs = set(pc.unique(chunks.column("doc_id").filter(pa.array(need, type=pa.bool_()))).to_pylist()) \
            if chunks.num_rows else set()
        carried_ids = {d for d, s in zip(docs.column("doc_id").to_pylist(), docs.column("sha256").to_pylist())
                       if parent_sha.get(d) == s and d not in new_chunk_docs}
        fixed, rechunk = carried_aliases(state, carried_ids)
        if cfg.duplicates == "keep_all":
            fixed, rechunk = [], set()
        if rechunk:
            ids = docs.column("doc_id").to_pylist()
            table = docs.take(pa.array([i for i, d in enumerate(ids) if d in rechunk], type=pa.int64()))
            fresh, _bad = chunk_documents(documents_from_table(table), params.chunk, embed_fn=embed_fn,
                                          embed_model=params.embed.model)
            have = set(chunks.column("chunk_id").to_pylist())
            add = np.array([c not in have for c in fresh.column("chunk_id").to_pylist()], dtype=bool)
            fresh = fresh.filter(pa.array(add))
            if fresh.num_rows:
                chunks = pa.concat_tables([chunks, fresh.cast(CHUNKS_SCHEMA)])
                need = np.concatenate([need, np.ones(fresh.num_rows, dtype=bool)])
                if carried_vec is not None:
                    carried_vec = np.concatenate(
                        [carried_vec, np.zeros((fresh.num_rows, carried_vec.shape[1]), dtype=np.float32)])
    # carried rows: their text is the parent's, so is its sha256 (stored with its signature)
    trusted: set[str] = set()
    if parent is not None:
        trusted = carried_ids | (set(chunks.column("chunk_id").filter(pa.array(~need, type=pa.bool_())).to_pylist())
                                 if chunks.num_rows else set())
    cur, keep = curate_chunks(docs, chunks, cfg, boilerplate=boilerplate, parent=state, fixed_aliases=fixed,
                              trusted=trusted)
    cur.boilerplate.keys = {**state.boilerplate_keys, **cur.boilerplate.keys}
    if getattr(assembly, "deferred", False):  # split_curated takes the kept rows it writes: no copy of all of them
        return replace(assembly, documents=without_quarantined(docs, cur), chunks=chunks, need_embed=need, kept=keep,
                       quarantine=list(assembly.quarantine) + cur.quarantine), cur
    all_kept = bool(keep.all())  # then the carried vectors are not copied
    assembly = replace(assembly, documents=without_quarantined(docs, cur), chunks=take_rows(chunks, keep),
                       need_embed=need[keep],
                       carried_vectors=None if carried_vec is None else carried_vec if all_kept else carried_vec[keep],
                       quarantine=list(assembly.quarantine) + cur.quarantine)
    return assembly, cur


# ------------------------------------------------------------------ refresh: only the change
def band_keys(values: np.ndarray, bands: tuple[int, int]) -> np.ndarray:
    """uint32 (n, b): one key per LSH band of each uint32 (n, num_perm) signature row; rows
    whose ``r`` values of a band are equal get equal keys (a polynomial over the values modulo
    2^64, FNV-1's prime, folded to 32 bits). A key collision of unequal bands only adds a
    candidate, which :func:`jaccard` then rejects. Stored with the signatures (``bands``)."""
    b, r = bands
    keys = np.zeros((len(values), b), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(r):  # column j of every band at once: (n, b) temporaries only
            keys *= np.uint64(0x100000001B3)
            keys += values[:, j:b * r:r]
    return (keys ^ (keys >> np.uint64(32))).astype(np.uint32)


@dataclass
class _Fixed:
    """Live carried members of one level that a new member may join (:func:`_scan_fixed`):
    those with a text sha256 or an LSH band key of the new members, with their signatures."""

    by_sha: dict[str, str] = field(default_factory=dict)          # text sha256 -> first member id
    ids: list[str] = field(default_factory=list)
    docs: list[str] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)        # uint32 (num_perm,) or empty
    by_key: list[dict[int, list[int]]] = field(default_factory=list)  # per band: key -> rows

    def candidates(self, keys: np.ndarray) -> list[int]:
        """Rows sharing at least one band key with ``keys`` (uint64 (b,)), ascending."""
        out: set[int] = set()
        for band, key in enumerate(keys.tolist()):
            out.update(self.by_key[band].get(key, ()))
        return sorted(out)


def _scan_fixed(parts: Sequence[SignaturePart], dead: set[str], wanted: Mapping[str, tuple[Collection[str], np.ndarray | None]],
                bands: tuple[int, int] | None, cfg: CurateConfig) -> dict[str, _Fixed]:
    """One pass over the live rows of the parent's signature files, a row group at a time: per
    level of ``wanted`` (level -> (the new members' text sha256s, their band keys: uint32 (n, b),
    or ``None`` for exact copies only)), the members outside the ``dead`` documents whose text
    sha256 is one of those or one of whose band keys is, with their signatures. The stored band
    keys (``bands``) are compared; only a row group holding a candidate has its signatures and
    member ids read (files written before ``bands`` existed have them computed from the signatures),
    and a signature the file left out is made again from the segment's text
    (:func:`signatures_from_texts`, once per file for all its candidates)."""
    import pyarrow.parquet as pq

    num_perm = cfg.num_perm
    out = {lv: _Fixed(by_key=[{} for _ in range(bands[0] if bands else 0)]) for lv in wanted}
    want_sha = {lv: pa.array(sorted(set(sh)), pa.string()) for lv, (sh, _) in wanted.items()}
    want_keys = {lv: [np.unique(k[:, j]) for j in range(k.shape[1])] if k is not None and len(k) else None
                 for lv, (_, k) in wanted.items()}
    near_wanted = bands is not None and any(k is not None for k in want_keys.values())
    dead_ids = pa.array(sorted(dead), pa.string())

    def mask(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
        return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)

    def rows_of(lists: pa.ListArray, rows: np.ndarray, width: int) -> np.ndarray:
        """uint32 (len(rows), width): the values of list ``rows`` that all hold ``width``."""
        flat = lists.values.to_numpy(zero_copy_only=False)
        return flat[np.asarray(lists.offsets.to_numpy(zero_copy_only=False))[rows][:, None] + np.arange(width)]

    for part in parts:
        pf, lo = pq.ParquetFile(part.path), 0
        stored = "bands" in pf.schema_arrow.names
        left: dict[str, list[tuple[int, str, str]]] = defaultdict(list)  # level -> (row, id, sha) left out
        for g in range(pf.num_row_groups):
            cols = ["level", "text_sha256"] + (["doc_id"] if dead else []) + (["bands"] if stored else [])
            t = pf.read_row_group(g, columns=cols)
            n = t.num_rows
            live = np.ones(n, dtype=bool) if part.live is None else part.live[lo:lo + n].copy()
            lo += n
            if dead:
                live &= ~mask(pc.is_in(t.column("doc_id"), value_set=dead_ids))
            hv = None
            keyed = np.zeros(0, dtype=np.int64)
            row_keys = None
            if near_wanted:
                bl = t.column("bands").combine_chunks() if stored else None
                if bl is not None and not bl.null_count:
                    keyed = np.flatnonzero(live & (np.asarray(bl.value_lengths().to_numpy(zero_copy_only=False)) == bands[0]))
                    row_keys = rows_of(bl, keyed, bands[0])
                else:  # no stored keys: from the signatures
                    hv = pf.read_row_group(g, columns=["hashvalues"]).column("hashvalues").combine_chunks()
                    keyed = np.flatnonzero(live & (np.asarray(hv.value_lengths().fill_null(0).to_numpy(
                        zero_copy_only=False)) == num_perm))
                    row_keys = band_keys(rows_of(hv, keyed, num_perm), bands)
            picked: list[tuple[str, np.ndarray]] = []
            for level in out:
                take = live & mask(pc.equal(t.column("level"), level))
                hit = take & mask(pc.is_in(t.column("text_sha256"), value_set=want_sha[level]))
                if row_keys is not None and want_keys[level] is not None and len(keyed):
                    near = np.zeros(len(keyed), dtype=bool)
                    for k, keys in enumerate(want_keys[level]):
                        near |= np.isin(row_keys[:, k], keys)
                    hit[keyed[near]] |= take[keyed[near]]
                if hit.any():
                    picked.append((level, np.flatnonzero(hit)))
            if not picked:
                continue
            extra = pf.read_row_group(g, columns=["member_id"] + ([] if hv is not None else ["hashvalues"])
                                      + ([] if dead else ["doc_id"]))  # (the signatures: when not read above)
            doc_col = (t if dead else extra).column("doc_id")
            hv = hv if hv is not None else extra.column("hashvalues").combine_chunks()
            lengths = np.asarray(hv.value_lengths().fill_null(-1).to_numpy(zero_copy_only=False))
            pos = np.full(n, -1, dtype=np.int64)
            pos[keyed] = np.arange(len(keyed))
            for level, rows in picked:
                fx = out[level]
                idx = pa.array(rows)
                full = rows[lengths[rows] == num_perm]
                sig = dict(zip(full.tolist(), rows_of(hv, full, num_perm))) if len(full) else {}
                for r, mid, sha, doc in zip(rows.tolist(), extra.column("member_id").take(idx).to_pylist(),
                                            t.column("text_sha256").take(idx).to_pylist(),
                                            doc_col.take(idx).to_pylist()):
                    fx.by_sha.setdefault(sha, mid)
                    row = len(fx.ids)
                    fx.ids.append(mid)
                    fx.docs.append(doc)
                    fx.values.append(sig.get(r, _NO_SIGNATURE))
                    if lengths[r] < 0:
                        left[level].append((row, mid, sha))
                    if row_keys is not None and pos[r] >= 0:
                        for k, key in enumerate(row_keys[pos[r]].tolist()):
                            fx.by_key[k].setdefault(key, []).append(row)
        for level, rows in left.items():
            made = signatures_from_texts(part.path.parent, level, [m for _, m, _ in rows], [h for *_, h in rows], cfg)
            for (row, _, _), v in zip(rows, made):
                out[level].values[row] = v
    return out


@dataclass
class _Pending:
    """A refresh's new members of one level, shingled once (:func:`curate_increment`)."""

    members: list[Member]
    shas: list[str]
    values: np.ndarray            # uint32 (n, num_perm), or (n, 0) without near-duplicate detection
    has: np.ndarray               # bool (n,)
    keys: np.ndarray | None       # uint64 (n, b) band keys, or None
    errors: dict[int, Exception]  # row -> the shingler's error

    @classmethod
    def of(cls, members: list[Member], texts: Sequence[str], cfg: CurateConfig,
           bands: tuple[int, int] | None) -> "_Pending":
        # (a ColumnTexts stays one: its strings are made a slice at a time, not all held at once)
        texts = texts if isinstance(texts, ColumnTexts) else list(texts)
        bad: dict[int, Exception] = {}
        if cfg.near_duplicates:
            values, has = minhash_matrix(texts, cfg, errors=bad)
            keys = band_keys(values, bands)
        else:
            values, has, keys = np.zeros((len(texts), 0), dtype=np.uint32), np.zeros(len(texts), dtype=bool), None
        return cls(members, [content_sha256(t) for t in texts], values, has, keys, bad)

    def wanted(self) -> tuple[list[str], np.ndarray | None]:
        """(text sha256s, band keys of the rows with a signature) to look for among the carried members."""
        return self.shas, (self.keys[self.has] if self.keys is not None else None)


def _cluster_change(pend: _Pending, rows: Sequence[int], fixed: _Fixed, cfg: CurateConfig, level: str,
                    state: ParentCuration, canon_of: Mapping[tuple[str, str], tuple[str, float]],
                    canon_doc: Mapping[tuple[str, str], str], uri_of: Mapping[str, str]) -> Clusters:
    """Cluster a refresh's new members of one level (the ``rows`` of ``pend``, in source order)
    against the version's live carried members (``fixed``: :func:`_scan_fixed`), which keep
    their clusters (see :func:`curate_increment`).

    Each new member, in source order: an exact copy (text sha256) of a carried member joins
    that member's cluster, else of an earlier new member; else the most similar member with
    estimated Jaccard >= the threshold among the carried ones sharing an LSH band with it
    (preferred on ties, as the parent's canonical members are visited first in a whole-version
    clustering) and the earlier new ones (:class:`BandIndex`) gives its cluster; else it is
    canonical. A copy of a carried alias joins that alias's canonical member.
    """
    thr = cfg.near_duplicate_threshold
    rows = np.asarray(rows, dtype=np.int64)
    members = [pend.members[r] for r in rows.tolist()]
    shas = [pend.shas[r] for r in rows.tolist()]
    values, has = pend.values[rows], pend.has[rows]
    keys = pend.keys[rows] if pend.keys is not None else None
    bands = lsh_bands(thr, cfg.num_perm) if cfg.near_duplicates else None
    out = Clusters()
    index = BandIndex(values, bands) if cfg.near_duplicates else None
    cluster_of: dict[int, tuple[str, Any]] = {}
    by_sha: dict[str, tuple[tuple[str, Any], float | None]] = {}
    members_of: dict[tuple[str, Any], list[list]] = defaultdict(list)  # [i, similarity (None: to compute), method]
    fixed_sig = {m: v for m, v in zip(fixed.ids, fixed.values) if len(v)}

    def fixed_cluster(f: str, sim: float) -> tuple[tuple[str, Any], float | None]:
        """The cluster of carried member ``f``, and ``sim`` when ``f`` is its canonical member
        (``None``: the similarity to that member is computed once its signature is read)."""
        canon = canon_of.get((level, f), (f, 1.0))[0]
        return ("fixed", canon), (sim if canon == f else None)

    for i in range(len(members)):
        f = fixed.by_sha.get(shas[i])
        if f is not None:  # an exact copy: the similarity its carried twin has to their canonical member
            members_of[fixed_cluster(f, 1.0)[0]].append([i, canon_of.get((level, f), (f, 1.0))[1], "exact"])
            continue
        hit = by_sha.get(shas[i])
        if hit is not None:
            members_of[hit[0]].append([i, hit[1], "exact"])
            continue
        if index is not None and has[i]:
            best, best_sim = None, -1.0
            for j in fixed.candidates(keys[i]):
                if len(fixed.values[j]):
                    sim = jaccard(values[i], fixed.values[j])
                    if sim >= thr and sim > best_sim:
                        best, best_sim = ("fixed", j), sim
            for j in sorted(index.query(i)):
                sim = jaccard(values[i], values[j])
                if sim >= thr and sim > best_sim:
                    best, best_sim = ("new", j), sim
            index.insert(i)  # near copies are indexed too: a copy of a copy joins the same cluster
            if best is not None:
                if best[0] == "fixed":
                    key, sim = fixed_cluster(fixed.ids[best[1]], best_sim)
                else:
                    key = cluster_of[best[1]]
                    sim = best_sim if key == ("new", best[1]) else (
                        jaccard(values[i], values[key[1]]) if key[0] == "new" else None)
                members_of[key].append([i, sim, "near"])
                cluster_of[i] = key
                by_sha.setdefault(shas[i], (key, sim))
                continue
        cluster_of[i] = ("new", i)
        by_sha[shas[i]] = (("new", i), 1.0)
    need = {k[1] for k, mem in members_of.items() if k[0] == "fixed" and any(x[1] is None for x in mem)}
    sigs = {**fixed_sig, **{m: v for m, (_, v) in state.signatures_of(level, need - set(fixed_sig)).items()}} \
        if need else fixed_sig
    for key, mem in sorted(members_of.items(), key=lambda kv: min(x[0] for x in kv[1])):
        if key[0] == "new":
            cm = members[key[1]]
            cid, cdoc, curi = cm.member_id, cm.doc_id, cm.uri
        else:
            cid = key[1]
            cdoc = canon_doc.get((level, cid)) or fixed.docs[fixed.ids.index(cid)]
            curi = uri_of.get(cdoc, "")
        out.rows.append({"cluster_id": cid, "level": level, "member_id": cid, "doc_id": cdoc, "uri": curi,
                         "canonical": True, "canonical_id": cid, "similarity": 1.0, "method": "canonical"})
        for i, sim, method in mem:
            if sim is None:
                sim = jaccard(values[i], sigs[cid]) if cid in sigs and len(sigs[cid]) else 0.0
            m = members[i]
            out.aliases[m.member_id] = cid
            out.rows.append({"cluster_id": cid, "level": level, "member_id": m.member_id, "doc_id": m.doc_id,
                             "uri": m.uri, "canonical": False, "canonical_id": cid,
                             "similarity": round(sim, 4), "method": method})
    out.signatures = Signatures([m.member_id for m in members], shas, values, has)
    return out


def increment_blocker(state: ParentCuration, parent: Any, dead_uris: Collection[str], cfg: CurateConfig) -> str | None:
    """Why a curated refresh must cluster the whole version (``None``: it clusters only its change,
    :func:`curate_increment`).

    Args:
        state: the parent's curation files.
        parent: :class:`pipelines.refresh.ParentData`.
        dead_uris: URIs whose parent documents the refresh may tombstone (changed, removed).
        cfg: the ``curate:`` params (equal to the parent's: else the plan re-chunks everything).

    Returns:
        ``None``, or the reason: a segment without signatures (or signatures kept per version,
        written before segments held them), signatures made another way, or a copy whose
        canonical copy changes or goes (it may become canonical: its rows must be made).
    """
    import pyarrow.parquet as pq

    if any(SIGNATURES_FILE not in r.files for r in parent.segments) or not state.parts or \
            (parent.registry.version_dir(parent.name, parent.version) / SIGNATURES_FILE).exists():
        return "a segment of the parent has no signatures"
    for part in state.parts:
        t = pq.read_table(str(part.path), columns=["num_perm", "shingle_words", "shingler", "doc_id"])
        if t.column("doc_id").null_count or not t.num_rows:
            return "signatures without their documents"
        if not pc.all(pc.fill_null(made_with(t, cfg), False)).as_py():
            return "signatures made another way"
    where = parent.doc_locations
    dead = {where[u][1] for u in dead_uris if u in where}
    d = state.duplicates
    if d.num_rows and dead:
        canonical = d.filter(pc.equal(d.column("canonical"), True))
        gone = canonical.filter(pc.is_in(canonical.column("doc_id"), value_set=pa.array(sorted(dead), pa.string())))
        if gone.num_rows:
            aliases = d.filter(pc.and_(pc.equal(d.column("canonical"), False),
                                       pc.is_in(d.column("cluster_id"), value_set=gone.column("cluster_id"))))
            if pc.any(pc.invert(pc.is_in(aliases.column("doc_id"), value_set=pa.array(sorted(dead), pa.string())))).as_py():
                return "a copy whose canonical copy changed or went"
    return None


def curate_increment(assembly: Any, parent: Any, params: Any, *, state: ParentCuration,
                     boilerplate: BoilerplateReport | None = None) -> tuple[Any, Curation]:
    """Curate an incremental refresh's new segment (:func:`pipelines.refresh.assemble_increment`):
    its documents and chunks are clustered against the version's live carried members, which
    keep their clusters (:func:`_cluster_change`); nothing else of the version is read but one
    pass over the parent's signature files (:func:`_scan_fixed`). Only used when
    :func:`increment_blocker` finds nothing that needs the whole version.

    Returns:
        ``(assembly, curation)``: the new segment's rows restricted to the indexed ones (a copy's
        rows left out under ``link``/``keep_first``), without the documents the shingler failed
        on (quarantined, as :func:`curate_chunks` does); the curation lists the parent's duplicate
        rows of live documents plus the new ones.
    """
    docs, chunks = assembly.documents, assembly.chunks
    uri_of = {d: u for u, (_, d) in parent.doc_locations.items()}
    dead = set(uri_of) - {i["doc_id"] for i in assembly.shared.inputs}
    cur, keep = curate_change(docs, chunks, params.curate, state, dead=dead, uri_of=uri_of, boilerplate=boilerplate)
    kept = take_rows(chunks, keep)
    n, dim = kept.num_rows, assembly.carried_vectors.shape[1]
    return replace(assembly, documents=without_quarantined(docs, cur), chunks=kept,
                   carried_vectors=np.zeros((n, dim), dtype=np.float32), need_embed=np.ones(n, dtype=bool),
                   quarantine=list(assembly.quarantine) + cur.quarantine), cur


def curate_change(docs: pa.Table, chunks: pa.Table, cfg: CurateConfig, state: ParentCuration, *,
                  dead: Collection[str] = (), uri_of: Mapping[str, str],
                  boilerplate: BoilerplateReport | None = None) -> tuple[Curation, np.ndarray]:
    """Cluster new documents and their chunks against the live members of ``state`` (which keep
    their clusters; :func:`_cluster_change`), reading nothing of those but one pass over
    ``state``'s signature files (:func:`_scan_fixed`): a refresh's change
    (:func:`curate_increment`), or a streamed ingest's part against the parts written before it
    (:class:`StreamedCuration`).

    Args:
        docs: ``DOCUMENTS_SCHEMA`` rows of the new documents.
        chunks: ``CHUNKS_SCHEMA`` rows of their chunks.
        cfg: the ``curate:`` params (``state``'s signatures made with the same).
        state: the members clustered before (their duplicate rows and signature files).
        dead: doc ids of ``state`` that are gone (their rows are not carried, their members not matched).
        uri_of: doc id -> URI of ``state``'s documents (the URI of a carried canonical member's row).
        boilerplate: what boilerplate removal took from the new documents (recorded).

    Returns:
        ``(curation, keep)``: the curation lists ``state``'s duplicate rows of live documents
        plus the new ones; keep is bool (chunks.num_rows,), the rows to index (a copy's rows left
        out under ``link``/``keep_first``, none of a document the shingler failed on: those are
        quarantined, as :func:`curate_chunks` does).
    """
    import time

    t0 = time.perf_counter()
    drop = cfg.duplicates != "keep_all"
    dead = set(dead)
    rows = [r for r in state.rows() if r["doc_id"] not in dead]
    canon_of = {(r["level"], r["member_id"]): (r["canonical_id"], r["similarity"]) for r in rows if not r["canonical"]}
    canon_doc = {(r["level"], r["member_id"]): r["doc_id"] for r in rows if r["canonical"]}
    d_ids, d_uris, d_shas = (docs.column(c).to_pylist() for c in ("doc_id", "uri", "sha256"))
    c_ids, c_doc = chunks.column("chunk_id").to_pylist(), chunks.column("doc_id").to_pylist()
    c_uris = chunks.column("uri").to_pylist()
    bands = lsh_bands(cfg.near_duplicate_threshold, cfg.num_perm) if cfg.near_duplicates else None
    pend_d = _Pending.of([Member(d, d, u, "") for d, u in zip(d_ids, d_uris)], ColumnTexts(docs.column("text")), cfg, bands)
    pend_c = _Pending.of([Member(c, d, u, "") for c, d, u in zip(c_ids, c_doc, c_uris)] if cfg.chunk_level else [],
                         ColumnTexts(chunks.column("text")) if cfg.chunk_level else [], cfg, bands)
    fixed = _scan_fixed(state.parts, dead, {"document": pend_d.wanted(), "chunk": pend_c.wanted()}, bands, cfg)
    error = {lv: {p.members[i].member_id: (type(e).__name__, collapse(str(e)) or type(e).__name__)
                  for i, e in p.errors.items()} for lv, p in (("document", pend_d), ("chunk", pend_c))}
    failed: dict[str, tuple[str, str]] = dict(error["document"])
    while True:  # a chunk the shingler fails on quarantines its document: cluster again without it
        doc_cl = _cluster_change(pend_d, [r for r, d in enumerate(d_ids) if d not in failed], fixed["document"], cfg,
                                 "document", state, canon_of, canon_doc, uri_of)
        keep = np.fromiter((d not in failed and not (drop and d in doc_cl.aliases) for d in c_doc),
                           dtype=bool, count=len(c_doc))
        # (as a whole-version clustering does, only the chunks of indexed documents are shingled for it)
        new = {c_doc[r]: error["chunk"][c_ids[r]] for r in np.flatnonzero(keep).tolist() if c_ids[r] in error["chunk"]}
        if not new:
            break
        failed |= new
    doc_cl.errors = {d: e for d, e in error["document"].items()}
    ch_cl = Clusters()
    if cfg.chunk_level:
        ch_cl = _cluster_change(pend_c, np.flatnonzero(keep), fixed["chunk"], cfg, "chunk", state,
                                canon_of, canon_doc, uri_of)
    owner = dict(zip(c_ids, c_doc)) if error["chunk"] else {}
    ch_cl.errors = {c: e for c, e in error["chunk"].items() if owner[c] in failed}
    if drop:
        keep &= np.fromiter((c not in ch_cl.aliases for c in c_ids), dtype=bool, count=len(c_ids))
    clusters = {(r["level"], r["cluster_id"]) for r in rows + doc_cl.rows + ch_cl.rows if not r["canonical"]}
    carried = [r for r in rows if not r["canonical"] or (r["level"], r["cluster_id"]) in clusters]
    cur = Curation(cfg, documents=doc_cl, chunks=ch_cl, boilerplate=boilerplate or BoilerplateReport(), carried=carried)
    cur.boilerplate.keys = {**state.boilerplate_keys, **cur.boilerplate.keys}
    at = {d: (u, s) for d, u, s in zip(d_ids, d_uris, d_shas)}
    cur.quarantine = [QuarantineRecord(at[d][0], STAGE, etype, f"curate: the shingler failed on {at[d][0]} "
                                       f"({etype}: {msg}); the document is not indexed", at[d][1] or "")
                      for d, (etype, msg) in sorted(failed.items(), key=lambda kv: at[kv[0]][0])]
    cur.removed_chunks = int((~keep).sum()) - sum(1 for d in c_doc if d in failed)
    cur.removed_documents = (len(doc_cl.aliases) + sum(1 for r in carried if r["level"] == "document"
                                                       and not r["canonical"])) if drop else 0
    cur.seconds = time.perf_counter() - t0
    return cur, keep


class StreamedCuration:
    """A streamed ingest's duplicate clustering, one part at a time (issue 12, bounded memory).

    A streamed ingest writes a segment each time the files chunked and embedded so far, in file
    order, hold ``index.segment_chunks`` rows (:func:`pipelines.stream.load_chunk_embed`'s
    ``flush``). With curation on, each part is clustered against the parts written before it
    as a refresh clusters its change against its parent (:func:`curate_change`): earlier parts'
    members come first in file order, so they are the ones a whole-corpus clustering
    (:func:`curate_chunks`) prefers too, and the clusters are the same. What is held between
    parts is their duplicate rows and the doc ids' URIs; their signatures are read back from the
    segments' ``signatures.parquet`` files, one pass per part.

    Args:
        cfg: the ``curate:`` params.
    """

    def __init__(self, cfg: CurateConfig) -> None:
        self.cfg = cfg
        bands = lsh_bands(cfg.near_duplicate_threshold, cfg.num_perm) if cfg.near_duplicates else None
        self.state = ParentCuration(DUPLICATES_SCHEMA.empty_table(), {}, [], bands)
        self.uri_of: dict[str, str] = {}
        self.removed_chunks = 0
        self.quarantine: list[QuarantineRecord] = []
        self.errors: tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str]]] = ({}, {})
        self.seconds = 0.0

    def cluster(self, documents: pa.Table, chunks: pa.Table,
                boilerplate: BoilerplateReport | None = None) -> tuple[Curation, np.ndarray]:
        """Cluster one part (``DOCUMENTS_SCHEMA`` and ``CHUNKS_SCHEMA`` rows, file order) against
        the parts written before it: ``(curation, keep)`` as :func:`curate_change` gives them."""
        cur, keep = curate_change(documents, chunks, self.cfg, self.state, uri_of=self.uri_of, boilerplate=boilerplate)
        self.seconds += cur.seconds
        self.removed_chunks += cur.removed_chunks
        self.quarantine += cur.quarantine
        self.errors[0].update(cur.documents.errors)
        self.errors[1].update(cur.chunks.errors)
        self.uri_of.update(zip(documents.column("doc_id").to_pylist(), documents.column("uri").to_pylist()))
        return cur, keep

    def written(self, cur: Curation, signatures: Path) -> None:
        """The part ``cur`` clustered is written, its signatures in the file ``signatures``
        (a part without documents writes none): the next part is clustered against it too."""
        parts = self.state.parts + ([SignaturePart(Path(signatures))] if Path(signatures).exists() else [])
        self.state = ParentCuration(cur.duplicates_table(), {}, parts, self.state.made_bands)

    def finish(self, cur: Curation, boilerplate: BoilerplateReport | None) -> Curation:
        """The version's curation: the last part's (``cur``, which lists the earlier parts'
        duplicate rows), with the counts, errors and quarantine of every part and the
        boilerplate removal of the whole ingest."""
        cur.removed_chunks = self.removed_chunks
        cur.quarantine = list(self.quarantine)
        cur.documents.errors, cur.chunks.errors = dict(self.errors[0]), dict(self.errors[1])
        cur.boilerplate = boilerplate or BoilerplateReport()
        cur.seconds = self.seconds
        return cur


def removed_rows_check(documents: pa.Table, chunks: pa.Table, curation: Curation) -> list[str]:
    """Documents of ``documents`` that have no indexed chunk and no duplicate record (should be empty).

    Used by tests and ``ragline index profile`` to show that curation drops nothing silently.
    """
    indexed = set(chunks.column("doc_id").to_pylist())
    recorded = set(curation.duplicates_table().column("doc_id").to_pylist())
    return [u for d, u in zip(documents.column("doc_id").to_pylist(), documents.column("uri").to_pylist())
            if d not in indexed and d not in recorded]


# ------------------------------------------------------------------ stage entry points (flows, DVC, API)
def curate_documents(
    docs: Sequence[Document], params: Any, state: ParentCuration | None = None,
) -> tuple[list[Document], BoilerplateReport]:
    """Boilerplate removal on loaded documents, before chunking (``curate.boilerplate``).

    Args:
        docs: loaded documents.
        params: validated :class:`pipelines.config.Params`.
        state: the parent version's curation (its boilerplate keys apply too), or ``None``.

    Returns:
        ``(documents, report)``.
    """
    return strip_boilerplate(docs, params.curate, (state.boilerplate_keys if state else None))


def curate_ingest(
    documents: pa.Table, chunks: pa.Table, params: Any, boilerplate: BoilerplateReport | None = None,
) -> tuple[pa.Table, Curation]:
    """Cluster a full build's documents and chunks; the chunk rows to index (``row`` renumbered).

    Returns:
        ``(chunks, curation)``: the indexed chunks and what curation decided.
    """
    cur, keep = curate_chunks(documents, chunks, params.curate, boilerplate=boilerplate)
    return take_rows(chunks, keep), cur


def read_parent_curation(registry: Any, name: str, version: str | None) -> ParentCuration:
    """The curation files of ``name@version`` (empty state for ``None`` or a version without them):
    its duplicates and boilerplate keys, and the signatures of its segments' live rows."""
    if not version:
        return ParentCuration.read(None)
    return ParentCuration.read(registry.version_dir(name, version), version_signature_parts(registry, name, version))


# ------------------------------------------------------------------ reporting (index show / diff)
def cluster_diff(folder_a: str | Path, folder_b: str | Path) -> dict[str, Any]:
    """Duplicate-cluster changes between two version folders (``ragline index diff``).

    Returns:
        ``{"clusters_a", "clusters_b", "added", "removed", "changed", "promoted"}``: cluster
        counts, ids (``level:cluster_id``) of clusters only in b / only in a / with other
        members, and member ids canonical in b but not in a (copies promoted when their
        canonical went). Versions without ``duplicates.parquet`` count as having no clusters.
    """
    def members(folder: str | Path) -> tuple[dict[str, set[str]], set[str]]:
        path = Path(folder) / DUPLICATES_FILE
        rows = read_table(path, DUPLICATES_SCHEMA).to_pylist() if path.exists() else []
        out: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            out[f"{r['level']}:{r['cluster_id']}"].add(r["member_id"])
        return out, {r["member_id"] for r in rows if r["canonical"]}

    a, canon_a = members(folder_a)
    b, canon_b = members(folder_b)
    members_a = {m for ms in a.values() for m in ms}
    return {"clusters_a": len(a), "clusters_b": len(b), "added": sorted(set(b) - set(a)),
            "removed": sorted(set(a) - set(b)), "changed": sorted(k for k in set(a) & set(b) if a[k] != b[k]),
            "promoted": sorted((canon_b - canon_a) & members_a)}


def summary_line(counts: dict[str, Any] | None) -> str:
    """One line of a version's curation counts (``ragline index show``); ``-`` when none recorded."""
    if not counts:
        return "-"
    d, c, b = counts["documents"], counts["chunks"], counts["boilerplate"]
    return (f"{counts['policy']} (Jaccard >= {counts['near_duplicate_threshold']}): documents {d['exact']} exact + "
            f"{d['near']} near copies, chunks {c['exact']} exact + {c['near']} near; {counts['removed_chunks']} chunks "
            f"not indexed; boilerplate {b['elements']} elements ({b['chars']} chars) from {b['documents']} documents")


# ------------------------------------------------------------------ DVC stage files
@dataclass(frozen=True)
class StoredCuration:
    """A curation written by the DVC ``chunk`` stage (``paths.duplicates`` + ``paths.curation``),
    published with the version by ``ragline stage publish`` (same interface as :class:`Curation`
    for :func:`pipelines.publish.publish_index`; no signatures: a DVC build is always a full build)."""

    duplicates: Path
    curation: Path

    def write(self, folder: str | Path) -> None:
        """Copy both files into ``folder`` under their published names."""
        import shutil

        shutil.copyfile(self.duplicates, Path(folder) / DUPLICATES_FILE)
        shutil.copyfile(self.curation, Path(folder) / CURATION_FILE)

    def counts(self) -> dict[str, Any]:
        """The counts of the stored ``curation.json``."""
        return json.loads(Path(self.curation).read_text(encoding="utf-8"))["counts"]


def write_stage_files(curation: Curation, duplicates_path: str | Path, curation_path: str | Path) -> None:
    """Write the DVC ``chunk`` stage's curation outputs (``paths.duplicates``, ``paths.curation``)."""
    write_table(curation.duplicates_table(), duplicates_path, DUPLICATES_SCHEMA)
    write_json_atomic(curation_path, curation.to_json())


#: ``curate:`` keys whose change means every file is parsed again (removed boilerplate is not
#: in the stored text); a change of any other key re-chunks and re-clusters every document.
RELOAD_KEYS = ("boilerplate", "boilerplate_min_docs", "boilerplate_min_share", "boilerplate_edge_elements")


def plan_changes(old: Mapping[str, Any] | None, cfg: CurateConfig) -> tuple[bool, bool, str | None]:
    """How a refresh must react to ``curate:`` params that differ from the parent's.

    Args:
        old: the parent manifest's ``params["curate"]`` (``None``: built before curation existed).
        cfg: the current ``curate:`` params.

    Returns:
        ``(reload_all, rechunk_all, reason)``; ``reason`` is ``None`` when nothing changed.
    """
    new = cfg.model_dump(mode="json")
    if old == new:
        return False, False, None
    changed = sorted(k for k in new if (old or {}).get(k) != new[k])
    reload_all = old is None or any(k in RELOAD_KEYS for k in changed)
    what = "every file is parsed again" if reload_all else "every document is re-chunked and re-clustered"
    return reload_all, True, f"curate.{'/'.join(changed)} changed: {what}"
