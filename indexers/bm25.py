"""BM25 lexical statistics per segment, scored with corpus-wide statistics at search time.

Each segment of a version stores its chunk rows' raw term statistics (one row per vocabulary
token, one column per chunk row of the segment; numpy only, no scipy) as two files of the
segment folder, which the registry hashes into the manifest like every other file:

- ``bm25.npz``: the CSR arrays ``tf`` (term counts), ``indices`` (chunk rows) and ``postings``
  (entries per vocabulary token: the row pointers' differences), one row per vocabulary token,
  ``doc_len`` (tokens per row), each in the smallest unsigned type that holds it (read back as
  float32, int32, int64 pointers and int32), and ``vocab`` (the tokens in vocabulary-row order,
  UTF-8, joined by newlines); deflated when the segment is small (:data:`BM25_COMPRESS_MAX`).
- ``bm25.json``: format version (:data:`BM25_FORMAT`), BM25 parameters, tokenizer settings,
  chunk count, vocabulary size.

Scores are computed per query over the live rows of every segment of a version
(:class:`BM25Corpus`): document frequencies, the row count and the average row length are
those of the live rows, so a version of several segments with tombstones scores exactly as a
single-segment build of the same rows, and as bm25s over the same texts (both tested).
Top-k search (:meth:`BM25Corpus.search`) reads each query term's rows in impact order (largest
term weight first, derived at search time from the stored counts and the corpus-wide average
length, memoized per term: no extra file, and segments of any age are searched alike) only as
deep as the top k needs (exact), or to a postings budget (approximate, ``retrieval.bm25_budget``).

Text indexed per chunk is what the chunk's vector embeds: its ``context`` prefix (may be
empty) followed by its ``text``. Tokenization is ``bm25s.tokenize``'s: lower-case, the
scikit-learn token pattern ``(?u)\\b\\w\\w+\\b``, a stopword list, and optionally a Snowball
stemmer (PyStemmer), applied the same way to chunks and queries and recorded in ``bm25.json``;
reimplemented in :func:`tokenize` so that neither building nor searching imports bm25s
(tested equal to it). Nothing reaches the network.

Sources: Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond"
(Foundations and Trends in IR, 2009); Kamphuis, de Vries, Boytsov & Lin, "Which BM25 Do You
Mean? A Large-Scale Reproducibility Study of Scoring Variants" (ECIR 2020); Lù, "BM25S"
(arXiv:2407.03618, 2024), library ``bm25s`` (the reference the tests compare with); for top-k
search, Fagin, Lotem & Naor, "Optimal aggregation algorithms for middleware" (JCSS 2003: the
threshold algorithm, TA, and its no-random-access variant, NRA) and Anh & Moffat, "Pruned
query evaluation using pre-computed impacts" (SIGIR 2006: impact-ordered, score-at-a-time).
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
import logging
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from ragline.core.schemas import indexed_texts

#: chunk texts tokenized at a time while a segment's BM25 statistics are built (:meth:`BM25Index.build`)
BM25_BUILD_BATCH = 1024

BM25_ARRAYS_FILE = "bm25.npz"
BM25_META_FILE = "bm25.json"
BM25_FILES = (BM25_ARRAYS_FILE, BM25_META_FILE)
#: 4: the vocabulary is in ``bm25.npz`` (``vocab``: the UTF-8 tokens joined by newlines, row i's
#: token i-th; a token never holds a newline) and the row pointers are stored as the postings
#: count of each token (``postings``), every array in the smallest integer type that holds it
#: (the reader casts them back); 3: the vocabulary is a JSON list in ``bm25.json``, the arrays
#: as :class:`BM25Index` holds them; 2: a ``{token: row}`` object. 2 and 3 are still read.
BM25_FORMAT = 4
BM25_FORMATS_READ = (2, 3, 4)
#: ``bm25.npz`` of at most this many postings (term, row pairs) is written deflated (``np.savez_compressed``).
BM25_COMPRESS_MAX = 1_000_000
#: Rows per query term read in the first round of :meth:`BM25Corpus.search` (at least 2k; doubles per round).
FIRST_DEPTH = 64
#: Rows kept per term in impact order at first computation (:meth:`BM25Corpus._impacts`).
IMPACT_PREFIX = 4096
#: Most rows a budgeted search (:meth:`BM25Corpus.search`) scores exactly.
RESCORE_MAX = 4096
#: ``retrieval.bm25_budget: auto`` searches exactly below this many live rows, and with
#: :data:`AUTO_BUDGET` postings at and above it (:func:`resolve_budget`). Measured on 1M
#: synthetic rows (``benchmarks/retrieval_scale.py``): exact hybrid p50 6.7 ms; with 4096
#: postings 4.6 ms at hybrid recall@10 0.96 against exact (BM25 alone: 7.5 -> 1.1 ms, 0.951).
AUTO_EXACT_ROWS = 500_000
AUTO_BUDGET = 4096


def resolve_budget(budget: int | str | None, n_rows: int) -> int | None:
    """The postings budget a search uses: ``budget`` itself (``None``: exact), or for ``"auto"``
    ``None`` below :data:`AUTO_EXACT_ROWS` live rows and :data:`AUTO_BUDGET` at and above.

    Raises:
        ValueError: ``budget`` is a string other than ``"auto"``.
    """
    if isinstance(budget, str):
        if budget != "auto":
            raise ValueError(f"bm25 budget {budget!r}: expected a positive number, 'auto' or None")
        return AUTO_BUDGET if n_rows >= AUTO_EXACT_ROWS else None
    return budget
#: A term held by at least 1/DENSE_TF_RATIO of a segment's rows (of at least DENSE_TF_MIN_ROWS) has its
#: counts looked up in a dense array when rows are scored (:meth:`BM25Corpus._dense_tf`).
DENSE_TF_RATIO = 16
DENSE_TF_MIN_ROWS = 65_536
#: Bytes of dense term counts an opened corpus keeps.
DENSE_TF_CACHE_BYTES = 64 * 2**20
#: Impact-ordered rows an opened corpus keeps over all terms (16 bytes each; the oldest term computed goes first).
IMPACT_CACHE_ROWS = 4_000_000

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BM25Spec:
    """BM25 scoring and tokenization settings (recorded in ``bm25.json``).

    Attributes:
        k1: term-frequency saturation (Robertson & Zaragoza 2009; 1.5 is bm25s's default).
        b: document-length normalization in [0, 1].
        method: bm25s scoring variant (``lucene`` = Lucene's BM25, the bm25s default).
        stopwords: bm25s stopword list name: ``en`` (Lucene's 33 English words),
            ``en_plus`` (NLTK's 179), or ``none``.
        stemmer: a Snowball stemmer language of PyStemmer (``english``: Porter2) or ``none``.
            Versions published before this field existed are read as ``none``.
    """

    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    stopwords: str = "en"
    stemmer: str = "english"

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"k1": self.k1, "b": self.b, "method": self.method, "stopwords": self.stopwords,
                "stemmer": self.stemmer}


#: bm25s's default token pattern (scikit-learn's ``CountVectorizer``): words of two or more word characters.
TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")


@functools.lru_cache(maxsize=4)
def stopwords(name: str) -> frozenset[str]:
    """bm25s's stopword list ``name`` (``en``/``english``, or ``none`` for no list).

    Read from ``bm25s/stopwords.py`` without importing the ``bm25s`` package, whose import
    (numba, scipy) costs about 2 s: a query is tokenized in a process that never imports it.

    Raises:
        ValueError: another list name.
    """
    if name == "none":
        return frozenset()
    if name not in ("en", "english"):
        raise ValueError(f"BM25 stopwords {name!r}: ragline reads en or none")
    spec = importlib.util.find_spec("bm25s")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("bm25s is not installed; run `make install`")
    path = Path(spec.submodule_search_locations[0]) / "stopwords.py"
    loader_spec = importlib.util.spec_from_file_location("_ragline_bm25s_stopwords", path)
    module = importlib.util.module_from_spec(loader_spec)  # type: ignore[arg-type]
    loader_spec.loader.exec_module(module)  # type: ignore[union-attr]
    return frozenset(module.STOPWORDS_EN)


@functools.lru_cache(maxsize=4)
def _stemmer(language: str):  # noqa: ANN202 - a PyStemmer Stemmer
    try:
        import Stemmer
    except ImportError as e:
        raise ImportError(f"BM25 stemmer {language!r} needs PyStemmer (pinned in constraints.txt)") from e
    try:
        return Stemmer.Stemmer(language)
    except KeyError as e:
        raise ValueError(f"unknown BM25 stemmer {language!r}; allowed: none, "
                         f"{', '.join(sorted(Stemmer.algorithms()))}") from e


def tokenize(texts: Sequence[str], spec: BM25Spec) -> list[list[str]]:
    """Tokenize texts exactly as ``bm25s.tokenize(texts, stopwords=..., stemmer=..., return_ids=False)``
    does (lower-case, :data:`TOKEN_PATTERN`, stopwords dropped, then ``spec.stemmer``'s Snowball
    stemmer through PyStemmer), without importing bm25s.

    Raises:
        ImportError: a stemmer is set and PyStemmer is not installed.
        ValueError: unknown stopword list or stemmer language.
    """
    stop = stopwords(spec.stopwords)
    out = [[t for t in TOKEN_PATTERN.findall(text.lower()) if t not in stop] for text in texts]
    if spec.stemmer != "none":
        stem = _stemmer(spec.stemmer).stemWords
        out = [stem(tokens) for tokens in out]
    return out


class BM25Index:
    """BM25 term statistics over the chunk rows of one segment, searchable alone or with others.

    What is stored is what BM25 needs to be recomputed over any set of live rows: the raw
    term frequencies in CSR form with one row per vocabulary token (the chunk rows holding
    token ``t`` are ``indices[indptr[t]:indptr[t + 1]]``, their term counts the same slice of
    ``tf``) and every row's length in tokens. Document frequencies, the row count and the
    average length are taken at search time over the live rows of every segment searched
    together (:class:`BM25Corpus`), so a version split into segments scores exactly as one
    segment holding the same rows.

    Args:
        tf: float32 (nnz,) term counts.
        indices: int32 (nnz,) chunk rows.
        indptr: int64 (n_vocab + 1,) row pointers.
        doc_len: int32 (n_chunks,) tokens per chunk row (after stopwords and stemming).
        vocab: token -> vocabulary row.
        spec: the settings it was built with.
    """

    def __init__(self, tf: np.ndarray, indices: np.ndarray, indptr: np.ndarray, doc_len: np.ndarray,
                 vocab: dict[str, int], spec: BM25Spec) -> None:
        self.tf = np.asarray(tf, dtype=np.float32)
        self.indices = np.asarray(indices, dtype=np.int32)
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.doc_len = np.asarray(doc_len, dtype=np.int32)
        self.vocab = vocab
        self.spec = spec

    @property
    def n_chunks(self) -> int:
        """Number of chunk rows."""
        return len(self.doc_len)

    @property
    def n_vocab(self) -> int:
        """Vocabulary size."""
        return len(self.indptr) - 1

    # ---------- building ----------
    @classmethod
    def build(cls, texts: Iterable[str], spec: BM25Spec = BM25Spec(), batch_rows: int = BM25_BUILD_BATCH) -> "BM25Index":
        """Count the terms of ``texts`` (row i = chunk row i), tokenized by :func:`tokenize`.

        The texts are tokenized ``batch_rows`` at a time and each batch is reduced at once to
        its (token id, row, count) triples (int32, int32, float32), so memory grows by about 12
        bytes per distinct term of a row, not by a Python list of every token of the corpus
        (about 10 KB per 200-token chunk). The vocabulary is numbered in order of first
        appearance and the result is the same whatever ``batch_rows`` is.

        Args:
            texts: one text per chunk row (see :func:`core.schemas.indexed_texts`); any
                iterable, consumed once (:meth:`from_chunks` feeds it batch by batch).
            spec: BM25 settings.
            batch_rows: texts tokenized at a time (>= 1).

        Returns:
            The index; empty texts are allowed (they never match).

        Raises:
            ValueError: unknown ``spec.method``, or ``batch_rows`` < 1.
        """
        if spec.method not in _METHODS:
            raise ValueError(f"BM25 method {spec.method!r}: ragline scores {', '.join(_METHODS)}")
        if batch_rows < 1:
            raise ValueError(f"BM25 build: batch_rows {batch_rows}, need >= 1")
        vocab: dict[str, int] = {}
        toks: list[np.ndarray] = []  # per batch: int32 token ids of its distinct (token, row) pairs
        rows: list[np.ndarray] = []  # ... their int32 global rows
        counts: list[np.ndarray] = []  # ... their float32 counts
        lens: list[np.ndarray] = []
        n = 0
        it = iter(texts)
        while True:
            batch = list(itertools.islice(it, batch_rows))
            if not batch:
                break
            tokens = tokenize(batch, spec)
            ids = np.fromiter((vocab.setdefault(t, len(vocab)) for doc in tokens for t in doc), dtype=np.int64)
            doc_len = np.fromiter((len(doc) for doc in tokens), dtype=np.int32, count=len(tokens))
            del tokens
            row = np.repeat(np.arange(len(batch), dtype=np.int64), doc_len)
            keys, c = np.unique(ids * len(batch) + row, return_counts=True)  # sorted by token, then row
            tok_of, row_of = np.divmod(keys, len(batch))
            toks.append(tok_of.astype(np.int32))
            rows.append((row_of + n).astype(np.int32))
            counts.append(c.astype(np.float32))
            lens.append(doc_len)
            n += len(batch)
        doc_len = np.concatenate(lens) if lens else np.zeros(0, np.int32)
        if not vocab:
            return cls(np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(1, np.int64), doc_len, {}, spec)
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        for t in toks:
            indptr[1:] += np.bincount(t, minlength=len(vocab))
        np.cumsum(indptr, out=indptr)
        # CSR filled batch by batch (rows ascend from batch to batch; a batch is sorted by token,
        # then row), so no (nnz,) sort and no int64 (nnz,) order is ever held
        cursor = indptr[:-1].copy()
        row_of = np.empty(int(indptr[-1]), dtype=np.int32)
        tf = np.empty(int(indptr[-1]), dtype=np.float32)
        for _ in range(len(toks)):
            t, r, c = toks.pop(0), rows.pop(0), counts.pop(0)
            first = np.searchsorted(t, t, side="left")  # index of each pair's token's first pair in the batch
            at = cursor[t] + (np.arange(len(t), dtype=np.int64) - first)
            row_of[at], tf[at] = r, c
            cursor += np.bincount(t, minlength=len(vocab))
        return cls(tf, row_of, indptr, doc_len, vocab, spec)

    @classmethod
    def from_chunks(cls, chunks: pa.Table, spec: BM25Spec = BM25Spec(),
                    batch_rows: int = BM25_BUILD_BATCH) -> "BM25Index":
        """Index the chunk table of a segment (``CHUNKS_SCHEMA``), its texts turned into Python
        strings ``batch_rows`` rows at a time (:func:`core.schemas.indexed_texts` per slice)."""
        def texts() -> Iterator[str]:
            for lo in range(0, chunks.num_rows, batch_rows):
                yield from indexed_texts(chunks.slice(lo, batch_rows))

        return cls.build(texts(), spec, batch_rows)

    # ---------- files ----------
    def write(self, folder: Path) -> None:
        """Write ``bm25.npz`` and ``bm25.json`` at the top level of ``folder``."""
        folder = Path(folder)
        # a small segment's arrays (a refresh's) are deflated: about half the disk, read in microseconds;
        # a large one's are stored as they are (inflating hundreds of MB would slow every open)
        save = np.savez_compressed if len(self.tf) <= BM25_COMPRESS_MAX else np.savez
        tokens = sorted(self.vocab, key=self.vocab.__getitem__)  # row i's token at i: no ids stored
        vocab = np.frombuffer("\n".join(tokens).encode("utf-8"), dtype=np.uint8)
        with open(folder / BM25_ARRAYS_FILE, "wb") as f:
            # a refresh's segment: the vocabulary was 73% of its BM25 bytes as JSON, 4-byte counts
            # and rows of a few hundred chunks fit one byte (benchmarks/scale.py: 39 -> 15 KB)
            save(f, tf=_narrow(self.tf), indices=_narrow(self.indices), postings=_narrow(np.diff(self.indptr)),
                 doc_len=_narrow(self.doc_len), vocab=vocab)
        meta = {"format": BM25_FORMAT, "spec": self.spec.to_dict(), "n_chunks": self.n_chunks, "n_vocab": self.n_vocab,
                "tokenizer": {"lower": True, "token_pattern": r"(?u)\b\w\w+\b",
                              "stemmer": None if self.spec.stemmer == "none" else f"snowball:{self.spec.stemmer}"}}
        (folder / BM25_META_FILE).write_text(json.dumps(meta, ensure_ascii=False, sort_keys=True), encoding="utf-8")

    @classmethod
    def read(cls, folder: Path) -> "BM25Index":
        """Read the files :meth:`write` wrote.

        Raises:
            FileNotFoundError: the folder has no BM25 files.
            OSError: the files are damaged or of another format.
        """
        folder = Path(folder)
        meta_path = folder / BM25_META_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("format") not in BM25_FORMATS_READ:
                raise OSError(f"{meta_path}: BM25 format {meta.get('format')!r}, this ragline reads "
                              f"{', '.join(map(str, BM25_FORMATS_READ))}")
            with np.load(folder / BM25_ARRAYS_FILE) as z:
                tf, indices, doc_len = z["tf"], z["indices"], z["doc_len"]
                if meta["format"] >= 4:
                    indptr = np.zeros(int(meta["n_vocab"]) + 1, dtype=np.int64)
                    np.cumsum(z["postings"], dtype=np.int64, out=indptr[1:])
                    vocab = z["vocab"].tobytes().decode("utf-8").split("\n") if int(meta["n_vocab"]) else []
                else:
                    indptr, vocab = z["indptr"], meta["vocab"]
        except FileNotFoundError:
            raise
        except (json.JSONDecodeError, ValueError, KeyError) as e:  # UnicodeDecodeError is a ValueError
            raise OSError(f"{folder}: BM25 files are damaged ({e}); rebuild the index") from e
        if (len(vocab) != int(meta["n_vocab"]) or len(indptr) != int(meta["n_vocab"]) + 1 or len(tf) != len(indices)
                or len(doc_len) != int(meta["n_chunks"]) or (len(indptr) > 1 and indptr[-1] != len(tf))):
            raise OSError(f"{folder}: BM25 arrays do not match {BM25_META_FILE}; rebuild the index")
        spec = BM25Spec(**{"stemmer": "none", **meta["spec"]})  # files from before stemming: none
        pairs = enumerate(vocab) if isinstance(vocab, list) else ((int(v), k) for k, v in vocab.items())
        return cls(tf, indices, indptr, doc_len, {str(k): i for i, k in pairs}, spec)

    @classmethod
    def open(cls, folder: Path, n_chunks: int) -> "BM25Index":
        """Read a segment's BM25 files and check they cover its ``n_chunks`` chunk rows.

        Raises:
            FileNotFoundError: the files are missing.
            OSError: the files are damaged or cover another number of rows.
        """
        index = cls.read(folder)
        if index.n_chunks != n_chunks:
            raise OSError(f"{Path(folder) / BM25_META_FILE}: BM25 covers {index.n_chunks} chunks but chunks.parquet "
                          f"has {n_chunks}; the segment is damaged")
        return index

    # ---------- searching (this segment alone) ----------
    def query_ids(self, query: str) -> np.ndarray:
        """int64 vocabulary rows of the query's tokens (unknown tokens dropped, repeats kept)."""
        toks = tokenize([query], self.spec)[0]
        return np.asarray([self.vocab[t] for t in toks if t in self.vocab], dtype=np.int64)

    def scores(self, query: str) -> np.ndarray:
        """float32 (n_chunks,) BM25 score of every row for ``query`` with this segment's own
        statistics (0 = no shared term); equal to bm25s's over the same texts."""
        return BM25Corpus([self]).scores(query)

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows of this segment alone (see :meth:`BM25Corpus.search`)."""
        return BM25Corpus([self]).search(query, k, allowed)


def _narrow(a: np.ndarray) -> np.ndarray:
    """``a`` in the smallest unsigned integer type that holds it exactly (``a`` itself when it
    has negative or fractional values); :class:`BM25Index` casts it back when read."""
    if a.size == 0:
        return a.astype(np.uint8)
    if a.min() < 0 or (a.dtype.kind == "f" and not np.array_equal(a, np.floor(a))):
        return a
    top = a.max()
    for t in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(t).max:
            return a.astype(t)
    return a


#: Scoring variants (Kamphuis et al., "Which BM25 Do You Mean?", ECIR 2020), as bm25s names them.
_METHODS = ("lucene", "robertson", "atire")


def _idf(method: str, df: float, n: float) -> float:
    if method == "lucene":
        return math.log(1 + (n - df + 0.5) / (df + 0.5))
    if method == "robertson":
        return math.log(max((n - df + 0.5) / (df + 0.5), 1.0))
    return math.log(n / df)  # atire


def _tfc(method: str, tf: np.ndarray, dl: np.ndarray, avgdl: float, k1: float, b: float) -> np.ndarray:
    norm = k1 * (1 - b + b * dl / avgdl)
    if method == "atire":
        return tf * (k1 + 1) / (tf + norm)
    return tf / (norm + tf)


class BM25Corpus:
    """BM25 over the live rows of several segments, with corpus-wide statistics.

    Global rows are the live rows of ``parts`` in order (part 0's live rows first). The row
    count ``N``, each query term's document frequency and the average row length are taken
    over live rows only, so the scores are those of one index built over exactly those rows
    (Robertson & Zaragoza 2009; the Lucene variant by default, as bm25s).

    Args:
        parts: the segments' :class:`BM25Index` (all with the same :class:`BM25Spec`).
        live: per part, int64 sorted local rows that are live, or ``None`` when every row is.

    Raises:
        ValueError: the parts were built with different settings.
    """

    def __init__(self, parts: Sequence[BM25Index], live: Sequence[np.ndarray | None] | None = None) -> None:
        self.parts = list(parts)
        live = list(live) if live is not None else [None] * len(self.parts)
        specs = {p.spec for p in self.parts}
        if len(specs) > 1:
            raise ValueError(f"segments were built with different BM25 settings: {sorted(map(str, specs))}")
        self.spec = self.parts[0].spec if self.parts else BM25Spec()
        self._to_global: list[np.ndarray] = []  # per part: local row -> global row (-1 = tombstoned)
        offset, total_len = 0, 0
        for p, rows in zip(self.parts, live):
            g = np.full(p.n_chunks, -1, dtype=np.int64)
            rows = np.arange(p.n_chunks, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
            g[rows] = np.arange(offset, offset + len(rows), dtype=np.int64)
            self._to_global.append(g)
            offset += len(rows)
            total_len += int(p.doc_len[rows].sum(dtype=np.int64))
        self.n_chunks = offset
        self.avgdl = total_len / offset if offset else 1.0
        self._live = [None if rows is None else np.asarray(rows, dtype=np.int64) for rows in live]
        sizes = [p.n_chunks if rows is None else len(rows) for p, rows in zip(self.parts, self._live)]
        self._offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        self._dfs: dict[str, int] = {}
        self._impact_cache: dict[str, _Impacts] = {}
        self._impact_rows = 0
        self._dense_cache: dict[tuple[int, int], np.ndarray] = {}
        self._cache_lock = threading.Lock()

    def scores(self, query: str) -> np.ndarray:
        """float32 (n_chunks,) BM25 score of every live row for ``query`` (0 = no shared term)."""
        out = np.zeros(self.n_chunks, dtype=np.float64)
        if not self.parts or not self.n_chunks:
            return out.astype(np.float32)
        s = self.spec
        avgdl = self.avgdl if self.avgdl > 0 else 1.0
        for token in tokenize([query], s)[0]:
            postings = []
            for p, g in zip(self.parts, self._to_global):
                t = p.vocab.get(token)
                if t is None:
                    continue
                lo, hi = p.indptr[t], p.indptr[t + 1]
                local = p.indices[lo:hi]
                glob = g[local]
                keep = glob >= 0
                postings.append((glob[keep], p.tf[lo:hi][keep].astype(np.float64), p.doc_len[local[keep]]))
            df = sum(len(x[0]) for x in postings)
            if not df:
                continue
            idf = _idf(s.method, float(df), float(self.n_chunks))
            for glob, tf, dl in postings:
                out[glob] += idf * _tfc(s.method, tf, dl.astype(np.float64), avgdl, s.k1, s.b)
        return out.astype(np.float32)

    # ---------- top-k: threshold algorithm over impact-ordered rows ----------
    def _df(self, token: str) -> int:
        """Live rows holding ``token``. Counting live rows through tombstones is memoized (the
        live rows of an opened version never change); only tokens some part holds are kept, so
        query words in no vocabulary do not grow the memo."""
        got = self._dfs.get(token)
        if got is None:
            got, counted = 0, False
            for p, g, live in zip(self.parts, self._to_global, self._live):
                t = p.vocab.get(token)
                if t is not None:
                    lo, hi = int(p.indptr[t]), int(p.indptr[t + 1])
                    if live is None:
                        got += hi - lo
                    else:
                        got += int(np.count_nonzero(g[p.indices[lo:hi]] >= 0))
                        counted = True
            if counted:
                self._dfs[token] = got
        return got

    def _impacts(self, token: str, depth: int) -> _Impacts:
        """The live rows holding ``token``, in impact order (decreasing BM25 term weight, idf
        excluded, with this corpus's average length; ties by lower row), at least their first
        ``depth`` (all of them when there are few). Memoized per token in a bounded cache and
        extended fourfold when a search asks deeper: O(postings) per computation, the sort
        limited to the prefix kept (``np.argpartition`` first)."""
        got = self._impact_cache.get(token)
        if got is not None and (got.complete or len(got.rows) >= depth):
            return got
        s = self.spec
        avgdl = self.avgdl if self.avgdl > 0 else 1.0
        rows, weights = [], []
        for p, g in zip(self.parts, self._to_global):
            t = p.vocab.get(token)
            if t is None:
                continue
            lo, hi = int(p.indptr[t]), int(p.indptr[t + 1])
            local = p.indices[lo:hi]
            glob = g[local]
            keep = glob >= 0
            rows.append(glob[keep])
            weights.append(_tfc(s.method, p.tf[lo:hi][keep].astype(np.float64),
                                p.doc_len[local[keep]].astype(np.float64), avgdl, s.k1, s.b))
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        w = np.concatenate(weights) if weights else np.zeros(0, np.float64)
        keep_n = max(depth, 4 * (len(got.rows) if got is not None else 0), IMPACT_PREFIX)
        if keep_n * 2 >= len(w):
            order = np.lexsort((r, -w))
            out = _Impacts(r[order], w[order], 0.0, True)
        else:
            # the first keep_n in (-weight, row) order, so that a deeper prefix extends this one
            # (ties at the cut are common: term counts are small integers); r is ascending
            v = w[np.argpartition(-w, keep_n - 1)[keep_n - 1]]
            above = np.flatnonzero(w > v)
            head = np.concatenate([above, np.flatnonzero(w == v)[:keep_n - len(above)]])
            head = head[np.lexsort((r[head], -w[head]))]
            out = _Impacts(r[head], w[head], float(v), False)
        with self._cache_lock:  # searches may run in several threads (Retriever is thread-safe)
            old = self._impact_cache.pop(token, None)
            if old is not None:
                self._impact_rows -= len(old.rows)
            while self._impact_cache and self._impact_rows + len(out.rows) > IMPACT_CACHE_ROWS:
                self._impact_rows -= len(self._impact_cache.pop(next(iter(self._impact_cache))).rows)
            self._impact_cache[token] = out
            self._impact_rows += len(out.rows)
        return out

    def _dense_tf(self, i: int, t: int) -> np.ndarray | None:
        """uint8 (uint16 when a count passes 255) (part's n_chunks,) term counts of vocabulary row ``t`` of part ``i`` by local row,
        when the term is frequent there (held by at least 1/:data:`DENSE_TF_RATIO` of the part's
        rows, which are at least :data:`DENSE_TF_MIN_ROWS`): looking a row up is then one
        gather, not a binary search in long postings. Built on first use; the cache holds at
        most :data:`DENSE_TF_CACHE_BYTES` (the oldest built goes first). ``None`` otherwise."""
        p = self.parts[i]
        lo, hi = int(p.indptr[t]), int(p.indptr[t + 1])
        if p.n_chunks < DENSE_TF_MIN_ROWS or (hi - lo) * DENSE_TF_RATIO < p.n_chunks:
            return None
        got = self._dense_cache.get((i, t))
        if got is None:
            tf = p.tf[lo:hi]
            top = float(tf.max()) if len(tf) else 0.0
            if top > np.iinfo(np.uint16).max:
                return None
            got = np.zeros(p.n_chunks, dtype=np.uint8 if top <= np.iinfo(np.uint8).max else np.uint16)
            got[p.indices[lo:hi]] = tf
            with self._cache_lock:
                held = sum(a.nbytes for a in self._dense_cache.values())
                while self._dense_cache and held + got.nbytes > DENSE_TF_CACHE_BYTES:
                    held -= self._dense_cache.pop(next(iter(self._dense_cache))).nbytes
                self._dense_cache[(i, t)] = got
        return got

    def _score(self, tokens: Sequence[str], idfs: Mapping[str, float], rows: np.ndarray) -> np.ndarray:
        """float64 BM25 scores of the global ``rows`` (sorted): per row, the query tokens' terms
        added in query order from 0.0, as :meth:`scores` adds them (so equal to its values);
        each row's term frequency is found by binary search in the token's postings."""
        s = self.spec
        avgdl = self.avgdl if self.avgdl > 0 else 1.0
        out = np.zeros(len(rows), dtype=np.float64)
        bounds = np.searchsorted(rows, self._offsets)  # rows of part i: rows[bounds[i]:bounds[i + 1]]
        for token in tokens:
            idf = idfs.get(token)
            if idf is None:
                continue
            for i, (p, live) in enumerate(zip(self.parts, self._live)):
                t = p.vocab.get(token)
                a, b = int(bounds[i]), int(bounds[i + 1])
                if t is None or a == b:
                    continue
                local = rows[a:b] - self._offsets[i]
                if live is not None:
                    local = live[local]
                lo, hi = int(p.indptr[t]), int(p.indptr[t + 1])
                post = p.indices[lo:hi]
                if len(post) <= len(local):  # few postings: find each posting among the rows
                    at = np.searchsorted(local, post)
                    hit = at < len(local)
                    hit[hit] = local[at[hit]] == post[hit]
                    where, tf = at[hit], p.tf[lo:hi][hit]
                elif (dense := self._dense_tf(i, t)) is not None:  # a frequent term: its counts by row
                    tf = dense[local]
                    where = np.flatnonzero(tf)
                    tf = tf[where]
                else:  # many postings: find each row among them (same dtype: no copy of the postings)
                    at = np.searchsorted(post, local.astype(post.dtype))
                    found = at < len(post)
                    found[found] = post[at[found]] == local[found]
                    where, tf = np.flatnonzero(found), p.tf[lo + at[found]]
                if not len(where):
                    continue
                dl = p.doc_len[local[where]].astype(np.float64)
                out[a + where] += idf * _tfc(s.method, tf.astype(np.float64), dl, avgdl, s.k1, s.b)
        return out

    def search(self, query: str, k: int, allowed: np.ndarray | None = None, *,
               budget: int | str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k live rows by BM25 score; rows with score 0 (no shared term) are never returned.

        Fagin's threshold algorithm (Fagin, Lotem & Naor, "Optimal aggregation algorithms for
        middleware", JCSS 2003) over impact-ordered postings (Anh & Moffat, "Pruned query
        evaluation using pre-computed impacts", SIGIR 2006): each query term's live rows are
        taken in decreasing term weight (:meth:`_impacts`) to a depth that doubles per round,
        starting at ``max(2k,`` :data:`FIRST_DEPTH` ``)``; every row met is scored exactly
        (all query terms, :meth:`_score`); a row not met yet scores at most the sum over the
        terms of ``idf`` times the weight at the term's depth, so once that sum is below the
        k-th best score found, no other row can enter or tie the top k and the result is exact:
        rows and scores equal those of scoring every row (:meth:`scores`; tested across segment
        layouts with tombstones). Work grows with the depth reached, not with the row count.

        ``budget`` makes the search approximate and its cost bounded (an anytime ranking,
        Mackenzie, Petri & Moffat, "Anytime ranking on document-ordered indexes", TOIS 2022):
        at most ``budget`` postings in total over the query's terms are read
        (:meth:`_search_budget`), and the best rows met are returned.
        Their scores are still exact; rows whose every term weight is below the ones read may
        be missed (recall measured by ``benchmarks/retrieval_scale.py --bm25-only``).

        Args:
            query: the query text.
            k: maximum number of rows.
            allowed: optional bool (n_chunks,) mask; rows where it is False are skipped.
            budget: most postings read over all query terms (``None``: exact, no limit;
                ``"auto"``: :func:`resolve_budget` over the live row count).

        Returns:
            ``(rows, scores)``: int64 (k',) global rows and float32 (k',) scores, best first
            (ties broken by lower row), k' <= k.
        """
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        if not self.parts or not self.n_chunks or k <= 0:
            return empty
        budget = resolve_budget(budget, self.n_chunks)
        tokens = tokenize([query], self.spec)[0]
        idfs: dict[str, float] = {}
        for token in dict.fromkeys(tokens):
            df = self._df(token)
            if df:
                idfs[token] = _idf(self.spec.method, float(df), float(self.n_chunks))
        if not idfs:
            return empty
        mask = None if allowed is None else np.asarray(allowed, dtype=bool)
        weight = {t: max(idfs[t], 0.0) * tokens.count(t) for t in idfs}  # what a term adds per unit of weight
        if budget is not None:
            return self._search_budget(tokens, idfs, weight, k, mask, max(int(budget), 1))
        seen = np.zeros(0, np.int64)  # sorted rows scored so far
        rows, scores = np.zeros(0, np.int64), np.zeros(0, np.float64)
        lo, depth = 0, max(2 * k, FIRST_DEPTH)
        while True:
            imps = {t: self._impacts(t, depth) for t in idfs}
            new = np.concatenate([imp.rows[lo:depth] for imp in imps.values()])
            new = np.unique(new)  # sorted, each once
            if len(seen):
                new = new[~np.isin(new, seen, assume_unique=True)]
                seen = np.union1d(seen, new)
            else:
                seen = new
            if mask is not None:
                new = new[mask[new]]
            got = self._score(tokens, idfs, new)
            keep = got > 0
            rows, scores = np.concatenate([rows, new[keep]]), np.concatenate([scores, got[keep]])
            done = all(imp.complete and depth >= len(imp.rows) for imp in imps.values())
            if len(rows) >= k:
                kth = float(scores[np.argpartition(-scores, k - 1)[k - 1]])
                top = scores >= kth  # the k best and every row tying with the k-th: the rest never return
                rows, scores = rows[top], scores[top]
                rest = sum(weight[t] * imp.after(depth) for t, imp in imps.items())
                # strictly below, with room for float rounding: a row not met can neither pass nor tie
                if rest * (1 + 1e-6) + 1e-12 < kth * (1 - 1e-6):
                    break
            if done:
                break
            lo, depth = depth, depth * 2
        if len(rows) == 0:
            return empty
        scores32 = scores.astype(np.float32)
        order_ = np.lexsort((rows, -scores32))[:k]
        return rows[order_].astype(np.int64), scores32[order_]

    def _search_budget(self, tokens: Sequence[str], idfs: Mapping[str, float], weight: Mapping[str, float], k: int,
                       mask: np.ndarray | None, budget: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` with a budget: score-at-a-time over the impact-ordered rows (Anh &
        Moffat 2006) with no random access while reading (Fagin et al.'s NRA, JCSS 2003).

        The ``budget`` postings of largest contribution (``idf x weight``) over all query terms
        are read, so a frequent term of small idf costs nothing; each row met gets a lower bound
        (the contributions read) and an upper bound (plus, for each term it was not met in, the
        term's next unread contribution). The rows whose upper bound reaches the k-th best lower
        bound, at most :data:`RESCORE_MAX` of them by the mean of their bounds, are scored exactly
        (:meth:`_score`); the best k of those are returned, with exact scores."""
        terms = list(idfs)
        imps = [self._impacts(t, budget) for t in terms]
        contrib = [weight[t] * imp.weights[:budget] for t, imp in zip(terms, imps)]
        flat = np.concatenate(contrib)
        if len(flat) > budget:
            tau = flat[np.argpartition(-flat, budget - 1)[budget - 1]]
            depth = [int(np.count_nonzero(c >= tau)) for c in contrib]  # descending: a prefix each
        else:
            depth = [len(c) for c in contrib]
        rem = np.array([weight[t] * imp.after(d) for t, imp, d in zip(terms, imps, depth)], dtype=np.float64)
        rows = np.concatenate([imp.rows[:d] for imp, d in zip(imps, depth)])
        if not len(rows):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        uniq, inv = np.unique(rows, return_inverse=True)
        lower = np.bincount(inv, np.concatenate([c[:d] for c, d in zip(contrib, depth)]), minlength=len(uniq))
        upper = lower + (rem.sum() - np.bincount(inv, np.repeat(rem, depth), minlength=len(uniq)))
        if mask is not None:
            ok = mask[uniq]
            uniq, lower, upper = uniq[ok], lower[ok], upper[ok]
        if len(uniq) > k:
            kth = lower[np.argpartition(-lower, k - 1)[k - 1]]
            ok = upper >= kth * (1 - 1e-6)
            uniq, lower, upper = uniq[ok], lower[ok], upper[ok]
        if len(uniq) > RESCORE_MAX:
            uniq = np.sort(uniq[np.argpartition(-(lower + upper), RESCORE_MAX - 1)[:RESCORE_MAX]])
        scores = self._score(tokens, idfs, uniq).astype(np.float32)
        keep = scores > 0
        uniq, scores = uniq[keep], scores[keep]
        order = np.lexsort((uniq, -scores))[:k]
        return uniq[order].astype(np.int64), scores[order]


@dataclass(frozen=True, slots=True)
class _Impacts:
    """A term's live rows in impact order (see :meth:`BM25Corpus._impacts`)."""

    rows: np.ndarray  # int64 (m,) global rows, decreasing weight
    weights: np.ndarray  # float64 (m,) their term weights (idf excluded)
    rest: float  # largest weight of the rows not kept (0.0 when complete)
    complete: bool  # every live row holding the term is kept

    def after(self, depth: int) -> float:
        """The largest weight of a row past the first ``depth`` (0.0 when none)."""
        if depth < len(self.rows):
            return float(self.weights[depth])
        return 0.0 if self.complete else self.rest


def write_bm25(chunks: pa.Table, folder: Path, spec: BM25Spec = BM25Spec()) -> BM25Index:
    """Count the terms of a segment's chunks and write ``bm25.npz`` + ``bm25.json`` into ``folder``."""
    index = BM25Index.from_chunks(chunks, spec)
    index.write(folder)
    return index
