"""Open a published index version and search it (dense retrieval over FAISS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from ragline.indexers.embedders import Embedder, info_of
from ragline.indexers.faiss_index import read_faiss_index, search
from ragline.indexers.manifest import CorruptRegistryError, Manifest, check_embedder
from ragline.indexers.registry import IndexRegistry
from ragline.core.schemas import CHUNKS_SCHEMA, read_table

INDEX_FILE = "index.faiss"
CHUNKS_FILE = "chunks.parquet"
DOCUMENTS_FILE = "documents.parquet"
QUARANTINE_FILE = "quarantine.parquet"


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved chunk.

    Attributes:
        rank: 1-based rank.
        score: similarity (inner product / cosine for ``ip`` indexes; negative L2 distance otherwise).
        chunk_id, doc_id, uri: identities of the chunk and its document.
        page: page number or ``None``.
        char_start, char_end: half-open character offsets into the document's normalized text.
        section_path: section titles, outermost first.
        text: the chunk's full text.
    """

    rank: int
    score: float
    chunk_id: str
    doc_id: str
    uri: str
    page: int | None
    char_start: int
    char_end: int
    section_path: tuple[str, ...]
    text: str

    def to_dict(self) -> dict:
        """JSON-ready dict of every field."""
        return {
            "rank": self.rank, "score": self.score, "chunk_id": self.chunk_id, "doc_id": self.doc_id,
            "source": self.uri, "page": self.page, "char_start": self.char_start,
            "char_end": self.char_end, "section_path": list(self.section_path), "text": self.text,
        }


@dataclass
class PublishedIndex:
    """A loaded index version: manifest, FAISS index and chunk table (row i = FAISS id i)."""

    name: str
    version: str
    path: Path
    manifest: Manifest
    index: object
    chunks: pa.Table
    _columns: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, registry: IndexRegistry, ref: str) -> "PublishedIndex":
        """Load ``NAME[@ALIAS|@VERSION]`` from a registry.

        Raises:
            RegistryError: unknown index, alias or version.
            CorruptRegistryError: damaged manifest or alias.
            OSError, SchemaMismatchError: damaged data files.
        """
        name, version = registry.resolve(ref)
        manifest = registry.manifest(name, version)
        path = registry.version_dir(name, version)
        index = read_faiss_index(path / INDEX_FILE)
        chunks = read_table(path / CHUNKS_FILE, CHUNKS_SCHEMA)
        if index.ntotal != chunks.num_rows:
            raise CorruptRegistryError(
                f"{path}: index holds {index.ntotal} vectors but chunks.parquet {chunks.num_rows} rows; "
                "the version is damaged: promote another version and delete this one"
            )
        return cls(name, version, path, manifest, index, chunks)

    def check_embedder(self, embedder: Embedder) -> None:
        """Raise :class:`IndexCompatibilityError` unless ``embedder`` built this index."""
        i = info_of(embedder)
        check_embedder(self.manifest, i.model_id, i.revision, i.dim, i.normalize, i.quantization)

    def _col(self, name: str) -> list:
        if name not in self._columns:
            self._columns[name] = self.chunks.column(name).to_pylist()
        return self._columns[name]

    def hits(self, scores: np.ndarray, rows: np.ndarray) -> list[Hit]:
        """Turn one query's FAISS result row into :class:`Hit` records (skips -1 rows)."""
        l2 = self.manifest.index.get("metric") == "l2"
        out = []
        for s, r in zip(scores.tolist(), rows.tolist()):
            if r < 0:
                continue
            out.append(
                Hit(
                    rank=len(out) + 1,
                    score=-s if l2 else s,
                    chunk_id=self._col("chunk_id")[r],
                    doc_id=self._col("doc_id")[r],
                    uri=self._col("uri")[r],
                    page=self._col("page")[r],
                    char_start=self._col("char_start")[r],
                    char_end=self._col("char_end")[r],
                    section_path=tuple(self._col("section_path")[r] or ()),
                    text=self._col("text")[r],
                )
            )
        return out

    def search_vectors(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Dense search for query vectors float32 (q, dim); returns q ranked hit lists."""
        scores, rows = search(self.index, queries, k)
        return [self.hits(scores[i], rows[i]) for i in range(len(queries))]

    def search_text(self, embedder: Embedder, query: str, k: int = 5) -> list[Hit]:
        """Embed ``query`` with ``embedder`` (checked against the manifest) and search."""
        self.check_embedder(embedder)
        return self.search_vectors(embedder.embed([query]), k)[0]
