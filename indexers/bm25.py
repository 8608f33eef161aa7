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

Text indexed per chunk is what the chunk's vector embeds: its ``context`` prefix (may be
empty) followed by its ``text``. Tokenization is ``bm25s.tokenize``'s: lower-case, the
scikit-learn token pattern ``(?u)\\b\\w\\w+\\b``, a stopword list, and optionally a Snowball
stemmer (PyStemmer), applied the same way to chunks and queries and recorded in ``bm25.json``;
reimplemented in :func:`tokenize` so that neither building nor searching imports bm25s
(tested equal to it). Nothing reaches the network.

Sources: Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond"
(Foundations and Trends in IR, 2009); Kamphuis, de Vries, Boytsov & Lin, "Which BM25 Do You
Mean? A Large-Scale Reproducibility Study of Scoring Variants" (ECIR 2020); Lù, "BM25S"
(arXiv:2407.03618, 2024), library ``bm25s`` (the reference the tests compare with).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from ragline.core.schemas import indexed_texts

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
    def build(cls, texts: Sequence[str], spec: BM25Spec = BM25Spec()) -> "BM25Index":
        """Count the terms of ``texts`` (row i = chunk row i), tokenized by :func:`tokenize`.

        Args:
            texts: one text per chunk row (see :func:`core.schemas.indexed_texts`).
            spec: BM25 settings.

        Returns:
            The index; empty texts are allowed (they never match).
        """
        if spec.method not in _METHODS:
            raise ValueError(f"BM25 method {spec.method!r}: ragline scores {', '.join(_METHODS)}")
        tokens = tokenize(texts, spec)
        vocab: dict[str, int] = {}
        ids = [vocab.setdefault(t, len(vocab)) for doc in tokens for t in doc]
        doc_len = np.fromiter((len(doc) for doc in tokens), dtype=np.int32, count=len(tokens))
        if not vocab:
            return cls(np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(1, np.int64), doc_len, {}, spec)
        tok = np.asarray(ids, dtype=np.int64)
        row = np.repeat(np.arange(len(tokens), dtype=np.int64), doc_len)
        keys, counts = np.unique(tok * max(len(tokens), 1) + row, return_counts=True)  # sorted by token, then row
        tok_of, row_of = np.divmod(keys, max(len(tokens), 1))
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum(np.bincount(tok_of, minlength=len(vocab)), out=indptr[1:])
        return cls(counts.astype(np.float32), row_of.astype(np.int32), indptr, doc_len, vocab, spec)

    @classmethod
    def from_chunks(cls, chunks: pa.Table, spec: BM25Spec = BM25Spec()) -> "BM25Index":
        """Index the chunk table of a segment (``CHUNKS_SCHEMA``)."""
        return cls.build(indexed_texts(chunks), spec)

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

    # ---------- top-k with MaxScore pruning ----------
    def _df(self, token: str) -> int:
        """Live rows holding ``token`` (memoized: the live rows of an opened version never change)."""
        got = self._dfs.get(token)
        if got is None:
            got = 0
            for p, g, live in zip(self.parts, self._to_global, self._live):
                t = p.vocab.get(token)
                if t is not None:
                    lo, hi = int(p.indptr[t]), int(p.indptr[t + 1])
                    got += hi - lo if live is None else int(np.count_nonzero(g[p.indices[lo:hi]] >= 0))
            self._dfs[token] = got
        return got

    def _postings(self, token: str) -> np.ndarray:
        """int64 sorted global live rows holding ``token`` (reads that token's postings only)."""
        out = []
        for p, g in zip(self.parts, self._to_global):
            t = p.vocab.get(token)
            if t is not None:
                glob = g[p.indices[p.indptr[t]:p.indptr[t + 1]]]
                out.append(glob[glob >= 0])
        return np.concatenate(out) if out else np.zeros(0, np.int64)

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

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k live rows by BM25 score; rows with score 0 (no shared term) are never returned.

        MaxScore pruning (Turtle & Flood, "Query evaluation: strategies and optimizations",
        IP&M 1995): a term adds less than its upper bound ``idf`` (``idf * (k1 + 1)`` for
        ``atire``) to any row, since ``tf / (norm + tf) < 1``. Terms are taken rarest first; the
        rows holding any taken term are scored exactly (:meth:`_score`), and once the bounds of
        the terms not taken add up to less than the k-th best score, no other row can enter
        the top k, so only those rows are scored. Frequent terms' postings are never
        read whole. Results and scores are those of scoring every row (:meth:`scores`; tested).

        Args:
            query: the query text.
            k: maximum number of rows.
            allowed: optional bool (n_chunks,) mask; rows where it is False are skipped.

        Returns:
            ``(rows, scores)``: int64 (k',) global rows and float32 (k',) scores, best first
            (ties broken by lower row), k' <= k.
        """
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        if not self.parts or not self.n_chunks or k <= 0:
            return empty
        tokens = tokenize([query], self.spec)[0]
        idfs: dict[str, float] = {}
        for token in dict.fromkeys(tokens):
            df = self._df(token)
            if df:
                idfs[token] = _idf(self.spec.method, float(df), float(self.n_chunks))
        if not idfs:
            return empty
        factor = self.spec.k1 + 1 if self.spec.method == "atire" else 1.0
        repeats = {t: tokens.count(t) for t in idfs}
        bound = {t: max(idfs[t], 0.0) * factor * repeats[t] for t in idfs}
        order = sorted(idfs, key=lambda t: (-bound[t], t))  # rarest (highest bound) first
        mask = None if allowed is None else np.asarray(allowed, dtype=bool)
        for taken in range(1, len(order) + 1):
            rest = sum(bound[t] for t in order[taken:])
            rows = self._postings(order[0]) if taken == 1 else np.sort(np.concatenate([self._postings(t) for t in order[:taken]]))
            if taken > 1 and len(rows):  # a sorted union (np.unique hashes: slower on large postings)
                rows = rows[np.concatenate([[True], rows[1:] != rows[:-1]])]
            if mask is not None:
                rows = rows[mask[rows]]
            scores = self._score(tokens, idfs, rows).astype(np.float32)
            keep = scores > 0
            rows, scores = rows[keep], scores[keep]
            if taken < len(order) and len(rows) >= k:
                kth = float(scores[np.argpartition(-scores, k - 1)[k - 1]])
                # strictly below, with room for float32 rounding: a row outside can neither pass nor tie
                if rest * (1 + 1e-6) + 1e-12 < kth * (1 - 1e-6):
                    break
        if len(rows) == 0:
            return empty
        if len(rows) > k:  # the k best, and every row tying with the k-th (the lower rows win the tie)
            kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
            top = scores >= kth
            rows, scores = rows[top], scores[top]
        order_ = np.lexsort((rows, -scores))[:k]
        return rows[order_].astype(np.int64), scores[order_]


def write_bm25(chunks: pa.Table, folder: Path, spec: BM25Spec = BM25Spec()) -> BM25Index:
    """Count the terms of a segment's chunks and write ``bm25.npz`` + ``bm25.json`` into ``folder``."""
    index = BM25Index.from_chunks(chunks, spec)
    index.write(folder)
    return index
