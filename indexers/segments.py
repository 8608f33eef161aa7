"""Segments: the immutable, content-addressed pieces a published version is made of.

A segment is a folder ``<root>/<name>/segments/<id>/`` holding the rows of some documents:

- ``documents.parquet`` (``DOCUMENTS_SCHEMA``) and ``chunks.parquet`` (``CHUNKS_SCHEMA``; its
  ``row`` column is the segment-local FAISS id),
- ``chunks.arrow``: the hit columns as an uncompressed Arrow IPC file, memory-mapped so that a
  search reads its hits' rows only (:func:`core.schemas.write_row_file`,
  :class:`core.schemas.ParquetRows`); only in segments of more than
  :data:`core.schemas.SMALL_TABLE_ROWS` chunks (a smaller one's hit columns are read from
  ``chunks.parquet`` whole at its first hit, so its texts are stored once),
- ``index.faiss``: the FAISS index over the chunks' vectors, of the kind ``index.factory`` names,
  built by :func:`indexers.faiss_index.build_faiss_index` (the one place that builds one; kinds
  that need training are trained on the segment's own rows), memory-mapped when opened,
- ``vectors.npy``: float32 (n, dim) exact vectors, unless the index stores them exactly
  (``Flat``, ``HNSW..,Flat``: :func:`indexers.faiss_index.exact_vectors` reads them from its
  memory-mapped codes instead of a second copy); a lossy kind (IVF, PQ, SQ) cannot give them
  back, and compaction and drift read them memory-mapped,
- ``bm25.npz`` / ``bm25.json``: term statistics (:class:`indexers.bm25.BM25Index`),
- ``inputs.json``: the manifest ``inputs`` records of the segment's documents, so a version's
  manifest lists only its segments and tombstones, not every input again
  (:func:`segment_inputs`; a version's inputs are its segments' live ones).

Its id is the first 32 hex digits of the sha256 of its files' names and sha256s, so the same
content always lands in the same folder and a segment is written once per index. A version's
manifest lists the segments it is made of (:class:`SegmentRef`) and *tombstones*: documents of
a listed segment that a later segment replaces, or that were removed; their chunk rows are
not searched. A refresh writes one segment with the added and changed documents and shares
every other segment with its parent; compaction merges the live rows of several segments into
one. Lucene's segments and deletion bitmaps are the model (Lucene ``IndexWriter``; Cutting &
Pedersen, "Optimizations for dynamic inverted index maintenance", SIGIR 1990).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ragline.core.io import write_json_atomic
from ragline.core.memory import release_unused_memory
from ragline.core.schemas import (CHUNKS_ROW_GROUP, CHUNKS_SCHEMA, DOCUMENTS_SCHEMA, SIGNATURES_FILE, SMALL_TABLE_ROWS,
                                  read_table, write_row_file, write_table)
from ragline.indexers.bm25 import BM25_ARRAYS_FILE, BM25_META_FILE, BM25Index, BM25Spec
from ragline.indexers.faiss_index import (VECTORS_FILE, FaissSpec, build_faiss_index, read_faiss_index,
                                          _never_trains, exact_vectors, index_record, read_vectors as read_vectors_file,
                                          resolve_factory, search_parameters, vectors_of, write_faiss_index,
                                          write_vectors)

SEGMENTS_DIR = "segments"
DOCUMENTS_FILE = "documents.parquet"
CHUNKS_FILE = "chunks.parquet"
INDEX_FILE = "index.faiss"
#: The hit columns of every chunk row as a memory-mapped Arrow IPC file (:func:`core.schemas.write_row_file`).
CHUNK_ROWS_FILE = "chunks.arrow"
#: The manifest ``inputs`` records of the segment's documents (a JSON list sorted by uri).
INPUTS_FILE = "inputs.json"
#: Files a segment may hold (``chunks.arrow``, ``vectors.npy`` and ``inputs.json`` are absent in
#: segments written before them; ``chunks.arrow`` in segments of at most
#: :data:`core.schemas.SMALL_TABLE_ROWS` chunks; ``vectors.npy`` in segments whose index stores the
#: vectors exactly; ``signatures.parquet`` in segments of curated versions only).
SEGMENT_FILES: tuple[str, ...] = (DOCUMENTS_FILE, CHUNKS_FILE, CHUNK_ROWS_FILE, INDEX_FILE, VECTORS_FILE,
                                  BM25_ARRAYS_FILE, BM25_META_FILE, INPUTS_FILE, SIGNATURES_FILE)
SEGMENT_ID_RE = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class SegmentRef:
    """A segment as a manifest lists it.

    Attributes:
        id: 32 hex digits, from the files' sha256s (:func:`segment_id`).
        files: ``{file name: sha256}`` of every file of the segment.
        file_sizes: ``{file name: size in bytes}``.
        documents: document rows in the segment (tombstoned ones included).
        chunks: chunk rows (= vectors) in the segment (tombstoned ones included).
    """

    id: str
    files: dict[str, str]
    file_sizes: dict[str, int]
    documents: int
    chunks: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the manifest's ``segments`` entries)."""
        return {"id": self.id, "files": dict(self.files), "file_sizes": dict(self.file_sizes),
                "documents": self.documents, "chunks": self.chunks}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SegmentRef":
        """Read a manifest entry.

        Raises:
            ValueError: a missing field, an id that is not 32 hex digits, or a file name that is
                not one of :data:`SEGMENT_FILES` (names the value).
        """
        try:
            ref = cls(str(data["id"]), {str(k): str(v) for k, v in dict(data["files"]).items()},
                      {str(k): int(v) for k, v in dict(data.get("file_sizes") or {}).items()},
                      int(data["documents"]), int(data["chunks"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"segment entry {str(dict(data))[:80]!r} is malformed ({e})") from e
        if not SEGMENT_ID_RE.match(ref.id):
            raise ValueError(f"segment id {ref.id[:80]!r} is not 32 hex digits")
        bad = sorted(set(ref.files) - set(SEGMENT_FILES))
        if bad:
            raise ValueError(f"segment {ref.id} lists file {bad[0][:80]!r}, not a segment file")
        return ref


def segment_id(files: Mapping[str, str]) -> str:
    """The id of a segment holding ``files`` (``{name: sha256}``): sha256 of their sorted JSON, 32 hex digits."""
    from ragline.core.hashing import json_sha256

    return json_sha256(dict(sorted(files.items())))[:32]


def write_segment_files(folder: Path, documents: pa.Table, chunks: pa.Table, vectors: np.ndarray,
                        faiss_spec: FaissSpec, bm25_spec: BM25Spec, trained_from: Path | None = None,
                        inputs: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Write the files of one segment into ``folder`` (the registry names and places it).

    Args:
        folder: an empty staging folder.
        documents: ``DOCUMENTS_SCHEMA`` rows of the segment's documents.
        chunks: ``CHUNKS_SCHEMA`` rows; ``row`` is renumbered 0..n-1 (the FAISS ids).
        vectors: float32 (n_chunks, dim), row i = chunk row i.
        faiss_spec: what :func:`build_faiss_index` builds.
        bm25_spec: BM25 tokenization and scoring settings.
        trained_from: the ``index.faiss`` of a segment (the parent's first) whose training a
            kind that needs training reuses (IVF centroids, PQ codebooks) rather than training
            on this segment's rows, which a refresh keeps few; compaction trains afresh.
        inputs: the manifest ``inputs`` records of ``documents`` (written as ``inputs.json``,
            sorted by uri); ``None``: no ``inputs.json`` (the manifest lists them).

    Returns:
        The manifest ``index`` record of the built index (:func:`indexers.faiss_index.index_record`).

    Raises:
        ValueError: vectors and chunks differ in count.
        ConfigError: FAISS rejects the factory string, or training failed.
    """
    if len(vectors) != chunks.num_rows:
        raise ValueError(f"segment: {len(vectors)} vectors for {chunks.num_rows} chunks")
    chunks = chunks.set_column(chunks.schema.get_field_index("row"), "row",
                               pa.array(np.arange(chunks.num_rows, dtype=np.int64)))
    # each file's transient buffers go back to the OS before the next: steps do not pile up (core/memory.py)
    write_table(documents, folder / DOCUMENTS_FILE, DOCUMENTS_SCHEMA)
    release_unused_memory()
    write_table(chunks, folder / CHUNKS_FILE, CHUNKS_SCHEMA, CHUNKS_ROW_GROUP)
    release_unused_memory()
    if chunks.num_rows > SMALL_TABLE_ROWS:  # a search's hits, read by row from a memory map (a small one's: from Parquet)
        write_row_file(chunks, folder / CHUNK_ROWS_FILE, CHUNKS_SCHEMA)
        release_unused_memory()
    trained = None
    n, dim = vectors.shape
    factory = resolve_factory(faiss_spec.factory, n)
    if trained_from is not None and n and Path(trained_from).exists() and not _never_trains(factory, dim, faiss_spec.metric):
        trained = read_faiss_index(Path(trained_from))  # in memory: a memory-mapped IVF cannot be cloned
    index = build_faiss_index(vectors, faiss_spec, trained=trained)
    write_faiss_index(index, folder / INDEX_FILE)
    if exact_vectors(index) is None:  # kept: a lossy kind (PQ, SQ) cannot give them back; Flat stores them as they are
        write_vectors(vectors, folder / VECTORS_FILE)
    record = index_record(index, faiss_spec)
    del index  # built and written: its copy of the vectors is not held while BM25 is counted
    release_unused_memory()
    BM25Index.from_chunks(chunks, bm25_spec).write(folder)
    if inputs is not None:
        records = sorted((dict(r) for r in inputs), key=lambda r: r["uri"])
        write_json_atomic(folder / INPUTS_FILE, records, compact=True)
    return record


def segment_inputs(folder: Path, dead_doc_ids: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The manifest ``inputs`` records of a segment's documents that are not tombstoned
    (``inputs.json``), sorted by uri.

    Raises:
        OSError: the file is missing, or not a JSON list of records with ``uri`` and ``doc_id``.
    """
    path = folder / INPUTS_FILE
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise OSError(f"{path}: cannot read the segment's inputs ({e})") from e
    if not isinstance(records, list) or not all(isinstance(r, dict) and "uri" in r and "doc_id" in r for r in records):
        raise OSError(f"{path}: not a list of input records with uri and doc_id")
    dead = set(dead_doc_ids)
    return [r for r in records if r["doc_id"] not in dead]


def read_vectors(folder: Path, index: faiss.Index | None = None) -> np.ndarray:
    """float32 (n, dim) vectors of a segment: ``vectors.npy`` memory-mapped read-only when
    present, else a read-only view of its exact-storage FAISS index's codes (``Flat``, ``HNSW..,Flat``:
    :func:`indexers.faiss_index.exact_vectors`), else reconstructed from it.

    Raises:
        OSError: the file is damaged, or the index cannot give its vectors back.
    """
    if (folder / VECTORS_FILE).exists():
        return read_vectors_file(folder / VECTORS_FILE)
    index = index if index is not None else read_faiss_index(folder / INDEX_FILE, mmap=True, factory="Flat")
    exact = exact_vectors(index)
    return exact if exact is not None else vectors_of(index)


def live_rows(folder: Path, dead_doc_ids: Iterable[str], n_chunks: int) -> np.ndarray | None:
    """int64 sorted local chunk rows of a segment that are not tombstoned, or ``None`` when all are live."""
    dead = sorted(set(dead_doc_ids))
    if not dead:
        return None
    doc = pq.read_table(str(folder / CHUNKS_FILE), columns=["doc_id"]).column("doc_id")
    if len(doc) != n_chunks:
        raise OSError(f"{folder / CHUNKS_FILE}: {len(doc)} rows, the manifest says {n_chunks}")
    keep = pc.invert(pc.is_in(doc, value_set=pa.array(dead, pa.string())))
    return np.flatnonzero(np.asarray(keep.to_numpy(zero_copy_only=False), dtype=bool)).astype(np.int64)


def read_live_table(folder: Path, file_name: str, schema: pa.Schema, dead_doc_ids: Iterable[str],
                    columns: Sequence[str] | None = None) -> pa.Table:
    """The rows of a segment table whose ``doc_id`` is not tombstoned (all columns unless ``columns``)."""
    if columns is None:
        table = read_table(folder / file_name, schema)
    else:
        table = pq.read_table(str(folder / file_name), columns=list(dict.fromkeys([*columns, "doc_id"])))
    dead = sorted(set(dead_doc_ids))
    if dead:
        table = table.filter(pc.invert(pc.is_in(table.column("doc_id"), value_set=pa.array(dead, pa.string()))))
    return table if columns is None or "doc_id" in columns else table.drop(["doc_id"])


def dead_doc_ids(tombstones: Mapping[str, Mapping[str, Any]], seg: str) -> list[str]:
    """Tombstoned doc ids of segment ``seg`` in a manifest's ``tombstones``."""
    return list((tombstones.get(seg) or {}).get("doc_ids") or [])


class SegmentedDense:
    """Dense search fanned out over the FAISS indexes of several segments, merged exactly.

    Global rows are the live rows of the parts in order. Each part is searched for the
    ``depth`` best of its live (and allowed) rows (FAISS ``IDSelectorBatch`` when rows are
    excluded), and the lists are merged by score (a stable sort: ties keep segment order, then
    FAISS's order); for exact indexes this gives the scores one index over the same rows gives.

    Args:
        parts: the segments' FAISS indexes.
        live: per part, int64 sorted live local rows, or ``None`` when all are live.
        metric: ``ip`` (higher better) or ``l2`` (lower distance better).
    """

    def __init__(self, parts: Sequence[faiss.Index], live: Sequence[np.ndarray | None] | None = None,
                 metric: str = "ip") -> None:
        self.parts = list(parts)
        self.live = list(live) if live is not None else [None] * len(self.parts)
        self.l2 = metric == "l2"
        sizes = [p.ntotal if rows is None else len(rows) for p, rows in zip(self.parts, self.live)]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64) if sizes else np.zeros(1, np.int64)
        self.ntotal = int(self.offsets[-1])
        self.d = int(self.parts[0].d) if self.parts else 0

    def search(self, q: np.ndarray, depth: int, allowed: np.ndarray | None = None, *,
               ef_search: int | None = None, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``depth`` global rows for one query.

        Args:
            q: float32 (1, dim).
            depth: rows wanted.
            allowed: optional bool (ntotal,) mask over global rows.
            ef_search: HNSW beam width for every HNSW segment (``retrieval.ef_search``).
            nprobe: IVF lists visited in every IVF segment (``retrieval.nprobe``); both are
                per-query :func:`indexers.faiss_index.search_parameters`, nothing is set on an index.

        Returns:
            ``(rows, raw)``: int64 (k',) global rows and float32 (k',) FAISS scores (inner
            products, or L2 distances), best first.
        """
        all_rows, all_scores = [], []
        for i, (index, rows) in enumerate(zip(self.parts, self.live)):
            lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
            if hi == lo:
                continue
            local = rows
            if allowed is not None:
                pick = np.flatnonzero(allowed[lo:hi])
                if len(pick) == 0:
                    continue
                local = pick if rows is None else rows[pick]
            n = index.ntotal if local is None else len(local)
            k = min(depth, n)
            if k <= 0:
                continue
            sel = None if local is None else faiss.IDSelectorBatch(np.ascontiguousarray(local, dtype=np.int64))
            params = search_parameters(index, depth=k, ef_search=ef_search, nprobe=nprobe, sel=sel)
            scores, found = index.search(q, k, params=params) if params is not None else index.search(q, k)
            keep = found[0] >= 0
            f = found[0][keep].astype(np.int64)
            g = f if rows is None else np.searchsorted(rows, f)
            all_rows.append(g + lo)
            all_scores.append(scores[0][keep].astype(np.float32))
        if not all_rows:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if len(all_rows) == 1:  # one segment: FAISS's own order, ties included
            return all_rows[0][:depth], all_scores[0][:depth]
        rows_, scores_ = np.concatenate(all_rows), np.concatenate(all_scores)
        order = np.argsort(scores_ if self.l2 else -scores_, kind="stable")[:depth]  # ties: segment order, then FAISS's
        return rows_[order], scores_[order]


def segment_summary(refs: Sequence[SegmentRef], tombstones: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per segment: ``{"id", "documents", "chunks", "deleted_documents", "deleted_chunks", "bytes"}``
    (what ``ragline index show`` lists)."""
    out = []
    for r in refs:
        t = tombstones.get(r.id) or {}
        out.append({"id": r.id, "documents": r.documents, "chunks": r.chunks,
                    "deleted_documents": len(t.get("doc_ids") or []), "deleted_chunks": int(t.get("chunks") or 0),
                    "bytes": sum(r.file_sizes.values())})
    return out


def tombstone_ratio(refs: Sequence[SegmentRef], tombstones: Mapping[str, Mapping[str, Any]]) -> float:
    """Share of a version's chunk rows that are tombstoned (0 when it has none)."""
    total = sum(r.chunks for r in refs)
    dead = sum(int((tombstones.get(r.id) or {}).get("chunks") or 0) for r in refs)
    return dead / total if total else 0.0


class SegmentRows:
    """The live chunk rows of several segments read on demand, behind
    :class:`core.schemas.ParquetRows`' interface (``num_rows``, ``column``, ``take``, ``table``).

    Global row ``i`` is the ``i``-th live row, segment after segment; the ``row`` column gives
    the global row. Each part is a :class:`core.schemas.ParquetRows` (hits read from its
    memory-mapped ``chunks.arrow``, or its Parquet row groups); nothing is read whole until
    :meth:`column` or :meth:`table` asks for it.

    Args:
        parts: per segment, its chunk rows.
        live: per segment, int64 sorted live local rows, or ``None`` when every row is live.
    """

    def __init__(self, parts: Sequence[Any], live: Sequence[np.ndarray | None]) -> None:
        self.parts = list(parts)
        self.live = list(live)
        sizes = [p.num_rows if rows is None else len(rows) for p, rows in zip(self.parts, self.live)]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64) if sizes else np.zeros(1, np.int64)
        self.num_rows = int(self.offsets[-1])

    def column(self, name: str) -> pa.ChunkedArray:
        """One whole column over the live rows (``row``: the global rows)."""
        if name == "row":
            return pa.chunked_array([pa.array(np.arange(self.num_rows, dtype=np.int64))])
        chunks: list[pa.Array] = []
        for p, rows in zip(self.parts, self.live):
            col = p.column(name)
            if rows is not None:
                col = col.take(pa.array(rows, type=pa.int64()))
            chunks.extend(col.chunks)
        if not chunks:
            return pa.chunked_array([], type=CHUNKS_SCHEMA.field(name).type)
        return pa.chunked_array(chunks, type=CHUNKS_SCHEMA.field(name).type)

    def take(self, rows: Sequence[int], columns: Sequence[str]) -> dict[str, list]:
        """``{column: [value per row]}`` for global ``rows`` in the order given.

        Raises:
            IndexError: a row outside ``0..num_rows-1``.
        """
        r = np.asarray([int(x) for x in rows], dtype=np.int64)
        out: dict[str, list] = {c: [None] * len(r) for c in columns}
        if len(r) == 0:
            return out
        if r.min() < 0 or r.max() >= self.num_rows:
            raise IndexError(f"rows {list(rows)} outside 0..{self.num_rows - 1}")
        seg = np.searchsorted(self.offsets, r, side="right") - 1
        for s in np.unique(seg).tolist():
            at = np.flatnonzero(seg == s)
            local = r[at] - self.offsets[s]
            if self.live[s] is not None:
                local = self.live[s][local]
            wanted = [c for c in columns if c != "row"]
            got = self.parts[s].take(local.tolist(), wanted)
            for c in columns:
                vals = r[at].tolist() if c == "row" else got[c]
                for i, v in zip(at.tolist(), vals):
                    out[c][i] = v
        return out

    def table(self) -> pa.Table:
        """The live rows as one ``CHUNKS_SCHEMA`` table, ``row`` renumbered to the global rows."""
        tables = []
        for p, rows in zip(self.parts, self.live):
            t = p.table()
            tables.append(t if rows is None else t.take(pa.array(rows, type=pa.int64())))
        t = pa.concat_tables(tables) if tables else CHUNKS_SCHEMA.empty_table()
        return t.set_column(t.schema.get_field_index("row"), "row", pa.array(np.arange(t.num_rows, dtype=np.int64)))
