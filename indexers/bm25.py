"""BM25 lexical index over a version's chunks, built with bm25s and published with the version.

The index is bm25s's eager sparse score matrix (one row per vocabulary token, one column per
chunk row, so column ``i`` is FAISS id ``i``; numpy only, no scipy) saved as two top-level files of the version
folder, which the registry hashes into the manifest like every other file:

- ``bm25.npz``: the CSR arrays ``data`` (float32 BM25 term scores), ``indices`` (int32 chunk
  rows) and ``indptr`` (int64), one row per vocabulary token.
- ``bm25.json``: format version, BM25 parameters, tokenizer settings, chunk count, vocabulary.

Text indexed per chunk is what the chunk's vector embeds: its ``context`` prefix (may be
empty) followed by its ``text``. Tokenization is ``bm25s.tokenize``'s: lower-case, the
scikit-learn token pattern ``(?u)\\b\\w\\w+\\b``, a stopword list, and optionally a Snowball
stemmer (PyStemmer), applied the same way to chunks and queries and recorded in ``bm25.json``;
reimplemented in :func:`tokenize` so that searching never imports bm25s (tested equal to it).
Nothing reaches the network.

Sources: Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond"
(Foundations and Trends in IR, 2009); Lù, "BM25S: Orders of magnitude faster lexical search
via eager sparse scoring" (arXiv:2407.03618, 2024), library ``bm25s``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ragline.core.schemas import indexed_texts

BM25_ARRAYS_FILE = "bm25.npz"
BM25_META_FILE = "bm25.json"
BM25_FILES = (BM25_ARRAYS_FILE, BM25_META_FILE)
BM25_FORMAT = 1

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
    """A BM25 index over the chunk rows of one version.

    The score matrix is in CSR form with one row per vocabulary token: the chunk rows holding
    token ``t`` are ``indices[indptr[t]:indptr[t + 1]]`` and their BM25 term scores the same
    slice of ``data`` (bm25s's eager scores).

    Args:
        data: float32 (nnz,) precomputed BM25 term scores.
        indices: int32 (nnz,) chunk rows.
        indptr: int64 (n_vocab + 1,) row pointers.
        n_chunks: number of chunk rows.
        vocab: token -> vocabulary row.
        spec: the settings it was built with.
    """

    def __init__(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n_chunks: int,
                 vocab: dict[str, int], spec: BM25Spec) -> None:
        self.data = np.asarray(data, dtype=np.float32)
        self.indices = np.asarray(indices, dtype=np.int32)
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.n_chunks = int(n_chunks)
        self.vocab = vocab
        self.spec = spec

    @property
    def n_vocab(self) -> int:
        """Vocabulary size."""
        return len(self.indptr) - 1

    # ---------- building ----------
    @classmethod
    def build(cls, texts: Sequence[str], spec: BM25Spec = BM25Spec()) -> "BM25Index":
        """Index ``texts`` (row i = chunk row i) with bm25s.

        Args:
            texts: one text per chunk row (see :func:`core.schemas.indexed_texts`).
            spec: BM25 settings.

        Returns:
            The index; empty texts are allowed (they never match).
        """
        import bm25s

        n = len(texts)
        tokens = tokenize(texts, spec)
        vocab: dict[str, int] = {}
        ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in tokens]
        if not vocab:
            return cls(np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(1, np.int64), n, {}, spec)
        model = bm25s.BM25(k1=spec.k1, b=spec.b, method=spec.method)
        model.index((ids, vocab), create_empty_token=False, show_progress=False)
        s = model.scores
        return cls(s["data"], s["indices"], s["indptr"], n, dict(model.vocab_dict), spec)

    @classmethod
    def from_chunks(cls, chunks: pa.Table, spec: BM25Spec = BM25Spec()) -> "BM25Index":
        """Index the chunk table of a version (``CHUNKS_SCHEMA``)."""
        return cls.build(indexed_texts(chunks), spec)

    # ---------- files ----------
    def write(self, folder: Path) -> None:
        """Write ``bm25.npz`` and ``bm25.json`` at the top level of ``folder``."""
        folder = Path(folder)
        with open(folder / BM25_ARRAYS_FILE, "wb") as f:
            np.savez(f, data=self.data, indices=self.indices, indptr=self.indptr)
        meta = {"format": BM25_FORMAT, "library": "bm25s", "library_version": _bm25s_version(),
                "spec": self.spec.to_dict(), "n_chunks": self.n_chunks, "n_vocab": self.n_vocab,
                "tokenizer": {"lower": True, "token_pattern": r"(?u)\b\w\w+\b",
                              "stemmer": None if self.spec.stemmer == "none" else f"snowball:{self.spec.stemmer}"},
                "vocab": self.vocab}
        (folder / BM25_META_FILE).write_text(json.dumps(meta, ensure_ascii=False, sort_keys=True), encoding="utf-8")

    @classmethod
    def read(cls, folder: Path) -> "BM25Index":
        """Read the files :meth:`write` wrote.

        Raises:
            FileNotFoundError: the version has no BM25 files.
            OSError: the files are damaged or of another format.
        """
        folder = Path(folder)
        meta_path = folder / BM25_META_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            with np.load(folder / BM25_ARRAYS_FILE) as z:
                data, indices, indptr = z["data"], z["indices"], z["indptr"]
        except FileNotFoundError:
            raise
        except (json.JSONDecodeError, ValueError, KeyError, OSError) as e:
            raise OSError(f"{folder}: BM25 files are damaged ({e}); rebuild the index") from e
        if meta.get("format") != BM25_FORMAT:
            raise OSError(f"{meta_path}: BM25 format {meta.get('format')!r}, this ragline reads {BM25_FORMAT}")
        if len(indptr) != int(meta["n_vocab"]) + 1 or len(data) != len(indices):
            raise OSError(f"{folder}: BM25 arrays do not match {BM25_META_FILE}; rebuild the index")
        spec = BM25Spec(**{"stemmer": "none", **meta["spec"]})  # files from before stemming: none
        return cls(data, indices, indptr, int(meta["n_chunks"]), {str(k): int(v) for k, v in meta["vocab"].items()}, spec)

    @classmethod
    def open(cls, folder: Path, chunks: "pa.Table | Any") -> "BM25Index":
        """Read the version's BM25 files, or build them from ``chunks`` when the version predates them.

        Args:
            folder: the version folder.
            chunks: the version's chunk table, or rows read on demand (anything with ``num_rows``
                and ``table()``, e.g. :class:`core.schemas.ParquetRows`); read whole only when
                the files are absent.

        Raises:
            OSError: the files exist but are damaged or do not match ``chunks``.
        """
        folder = Path(folder)
        if not (folder / BM25_META_FILE).exists():
            log.info("%s has no %s (published before BM25); building BM25 from chunks.parquet (%d chunks)",
                     folder, BM25_META_FILE, chunks.num_rows)
            return cls.from_chunks(chunks if isinstance(chunks, pa.Table) else chunks.table())
        index = cls.read(folder)
        if index.n_chunks != chunks.num_rows:
            raise OSError(f"{folder / BM25_META_FILE}: BM25 covers {index.n_chunks} chunks but chunks.parquet "
                          f"has {chunks.num_rows}; the version is damaged")
        return index

    # ---------- searching ----------
    def query_ids(self, query: str) -> np.ndarray:
        """int64 vocabulary rows of the query's tokens (unknown tokens dropped, repeats kept)."""
        toks = tokenize([query], self.spec)[0]
        return np.asarray([self.vocab[t] for t in toks if t in self.vocab], dtype=np.int64)

    def scores(self, query: str) -> np.ndarray:
        """float32 (n_chunks,) BM25 score of every chunk row for ``query`` (0 = no shared term)."""
        out = np.zeros(self.n_chunks, dtype=np.float32)
        for t in self.query_ids(query).tolist():
            lo, hi = self.indptr[t], self.indptr[t + 1]
            out[self.indices[lo:hi]] += self.data[lo:hi]  # rows are unique within one token's slice
        return out

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k chunk rows by BM25 score; rows with score 0 (no shared term) are never returned.

        Args:
            query: the query text.
            k: maximum number of rows.
            allowed: optional bool (n_chunks,) mask; rows where it is False are skipped.

        Returns:
            ``(rows, scores)``: int64 (k',) rows and float32 (k',) scores, best first
            (ties broken by lower row), k' <= k.
        """
        s = self.scores(query)
        if allowed is not None:
            s = np.where(allowed, s, 0.0).astype(np.float32)
        candidates = np.flatnonzero(s > 0)
        if len(candidates) == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if len(candidates) > k:
            part = np.argpartition(-s[candidates], k - 1)[:k]
            candidates = candidates[part]
        order = np.lexsort((candidates, -s[candidates]))
        rows = candidates[order].astype(np.int64)
        return rows, s[rows]


def _bm25s_version() -> str:
    import bm25s

    return str(getattr(bm25s, "__version__", "unknown"))


def write_bm25(chunks: pa.Table, folder: Path, spec: BM25Spec = BM25Spec()) -> BM25Index:
    """Build the BM25 index of a version's chunks and write it into ``folder`` (publish step)."""
    index = BM25Index.from_chunks(chunks, spec)
    index.write(folder)
    return index
