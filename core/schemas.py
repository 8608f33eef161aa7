"""Declared Arrow schemas of every table ragline writes (Parquet in a published version).

Each schema carries ``ragline.schema_version`` metadata; readers refuse other versions with
:class:`SchemaMismatchError` instead of guessing.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
_META = {b"ragline.schema_version": str(SCHEMA_VERSION).encode()}
#: field metadata of a column added to a schema after its version shipped: a file without it
#: reads with nulls in its place (no version bump, no rebuild).
_OPTIONAL = {b"ragline.optional": b"1"}


from ragline.core.errors import SchemaMismatchError  # noqa: E402  (re-exported)


ELEMENT_TYPE = pa.struct(
    [
        ("type", pa.string()),
        ("char_start", pa.int64()),
        ("char_end", pa.int64()),
        ("page", pa.int32()),
        ("section_path", pa.list_(pa.string())),
    ]
)

DOCUMENTS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("uri", pa.string()),
        ("sha256", pa.string()),
        ("mime_type", pa.string()),
        ("size_bytes", pa.int64()),
        ("title", pa.string()),
        ("text", pa.large_string()),
        ("elements", pa.list_(ELEMENT_TYPE)),
        # added after schema version 1 shipped: optional, so tables written before them read
        # back with nulls (see read_table)
        pa.field("metadata", pa.map_(pa.string(), pa.string()), metadata=_OPTIONAL),  # e-mail headers, ...
        pa.field("encoding", pa.string(), metadata=_OPTIONAL),  # codec of a text file, null for binary formats
    ],
    metadata=_META,
)

CHUNKS_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),  # FAISS id of the chunk's vector in this version
        ("chunk_id", pa.string()),
        ("doc_id", pa.string()),
        ("uri", pa.string()),
        ("char_start", pa.int64()),
        ("char_end", pa.int64()),
        ("token_count", pa.int32()),
        ("page", pa.int32()),
        ("section_path", pa.list_(pa.string())),
        ("oversized", pa.bool_()),
        ("text", pa.large_string()),
        ("context", pa.string()),  # prefix embedded before the text (chunk.context), else ""
    ],
    metadata=_META,
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
        ("sha256", pa.string()),
    ],
    metadata=_META,
)


#: ``duplicates.parquet`` of a version: one row per member of each duplicate cluster (two or more
#: members), written by :mod:`pipelines.curate`. ``level`` is ``document`` or ``chunk``;
#: ``member_id`` a doc id or chunk id; ``cluster_id`` the canonical member's id; ``method``
#: ``exact`` (sha256 of the normalized text), ``near`` (MinHash/LSH Jaccard estimate) or
#: ``canonical`` (the member that is indexed); ``similarity`` the estimated Jaccard of word
#: shingles with the canonical member (1.0 for exact copies and the canonical row).
DUPLICATES_SCHEMA = pa.schema(
    [
        ("cluster_id", pa.string()),
        ("level", pa.string()),
        ("member_id", pa.string()),
        ("doc_id", pa.string()),
        ("uri", pa.string()),
        ("canonical", pa.bool_()),
        ("canonical_id", pa.string()),
        ("similarity", pa.float32()),
        ("method", pa.string()),
    ],
    metadata=_META,
)


#: ``signatures.parquet``: the MinHash signature of every document and clustered chunk, so a
#: refresh compares new content without recomputing the unchanged. Each curated segment holds the
#: rows of its own documents (so its tombstones mask them by ``doc_id``; a version's signatures are
#: its segments' live rows); versions written before that hold one file of all their rows.
SIGNATURES_FILE = "signatures.parquet"
SIGNATURES_SCHEMA = pa.schema(
    [
        ("level", pa.string()),          # document | chunk
        ("member_id", pa.string()),      # doc id or chunk id
        ("text_sha256", pa.string()),    # sha256 of the whitespace-collapsed text
        ("num_perm", pa.int32()),
        ("shingle_words", pa.int32()),
        # empty when the text has no words; null in a segment's file when the segment holds the
        # text (made again from it when needed: pipelines.curate.signatures_from_texts)
        ("hashvalues", pa.list_(pa.uint32())),
        # added later: how the text was turned into words (pipelines.curate.SHINGLER); null in
        # older tables, whose signatures are then recomputed rather than compared
        pa.field("shingler", pa.string(), metadata=_OPTIONAL),
        # added later: the document a member belongs to (a segment's file: its tombstones apply);
        # null in version-level tables written before signatures moved into segments
        pa.field("doc_id", pa.string(), metadata=_OPTIONAL),
        # added later: one uint32 key per LSH band of hashvalues (pipelines.curate.band_keys), so a
        # refresh finds near-duplicate candidates without reading every signature; empty without one
        pa.field("bands", pa.list_(pa.uint32()), metadata=_OPTIONAL),
    ],
    metadata=_META,
)

def embeddings_schema(dim: int) -> pa.Schema:
    """Schema of ``embeddings.parquet``: chunk_id and a float32 vector of ``dim`` values."""
    return pa.schema(
        [("chunk_id", pa.string()), ("vector", pa.list_(pa.float32(), dim))], metadata=_META
    )


#: Rows per Parquet row group of a published ``chunks.parquet``: small groups let a search read
#: only the groups holding its hits (:class:`ParquetRows`). Measured on 200k 700-character texts
#: (zstd): 5 random rows in 1.7 ms with 256-row groups, 20 ms with 4096; the file is no larger.
CHUNKS_ROW_GROUP = 256
#: The chunk columns a search hit carries: what :func:`write_row_file` keeps for random access.
HIT_COLUMNS = ("chunk_id", "doc_id", "uri", "page", "char_start", "char_end", "section_path", "text")


#: Tables of at most this many rows get no row file (:func:`write_row_file`): :class:`ParquetRows`
#: reads their hit columns from the Parquet file whole at the first hit (a few MB at most) and
#: then serves rows from memory, as fast as from a row file. A refresh's small segment so keeps
#: one copy of its chunk texts, not two (segments written before this keep a zstd-compressed
#: ``chunks.arrow``, read alike).
SMALL_TABLE_ROWS = 16_384


def write_row_file(table: pa.Table, path: str | Path, schema: pa.Schema, columns: tuple[str, ...] = HIT_COLUMNS,
                   batch_rows: int = 65_536) -> None:
    """Write ``columns`` of ``table`` as an uncompressed Arrow IPC file: memory-mapped by a
    reader, so nothing of it is resident until a row is read, and any row is read in
    microseconds (:class:`ParquetRows` uses it for a search's hits; Parquet needs about 0.3 ms
    per row group and column). It repeats those columns of the Parquet table on disk, so only
    tables of more than :data:`SMALL_TABLE_ROWS` rows get one."""
    try:
        t = table.select(list(columns)).cast(pa.schema([schema.field(c) for c in columns]))
    except (KeyError, pa.ArrowInvalid, ValueError) as e:
        raise SchemaMismatchError(f"{path}: table does not fit the declared schema: {e}") from e
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, t.schema) as writer:
        for lo in range(0, t.num_rows, batch_rows):  # the same bytes however the table is chunked in memory
            writer.write_table(t.slice(lo, batch_rows).combine_chunks())


#: zstd level of the Parquet files ragline writes (pyarrow's default is 1), and the higher one of
#: tables of at most :data:`PARQUET_SMALL_BYTES` (Arrow bytes in memory), such as a refresh's
#: segment (a 1% refresh of 20k synthetic documents writes 2,321 chunk rows, about 1.5 MB).
#: Larger tables (a full build, a compaction) take level 6: 16 MB take about 2.3 s at level 15,
#: most of the publish step of an ingest of the Python docs (12k chunks), for 10% less disk. Measured on synthetic prose (benchmarks/scale.py), a 7,071-row chunks table of
#: 4.6 MB: 1.34 MB at level 1, 1.07 MB at 6 (0.07 s), 1.05 MB at 9 (0.11 s), 0.96 MB at 15
#: (0.66 s), 0.95 MB at 19 (1.65 s), one core; decompression speed does not depend on the level.
PARQUET_ZSTD_LEVEL = 6
PARQUET_SMALL_ZSTD_LEVEL = 15
PARQUET_SMALL_BYTES = 4 * 2**20
#: ``pq.write_table`` options of every Parquet file ragline writes but the level: no column
#: statistics (no reader of ragline's prunes on them, and a text column's min and max are two
#: whole texts in the footer and in every page header: 8.8 of the 17.3 KB of a 2-document
#: table) and no dictionary encoding (zstd finds the repeats; plain encoding is smaller for
#: every table measured, texts and ids alike).
PARQUET_WRITE_OPTIONS: dict = {"compression": "zstd", "use_dictionary": False, "write_statistics": False}


def parquet_write_options(table: pa.Table | None = None, *, nbytes: int | None = None) -> dict:
    """The ``pq.write_table`` options for ``table`` (:data:`PARQUET_WRITE_OPTIONS` and its zstd
    level), or for a table of ``nbytes`` Arrow bytes written piece by piece."""
    small = (table.nbytes if nbytes is None else nbytes) <= PARQUET_SMALL_BYTES
    return {**PARQUET_WRITE_OPTIONS, "compression_level": PARQUET_SMALL_ZSTD_LEVEL if small else PARQUET_ZSTD_LEVEL}


def write_table(table: pa.Table, path: str | Path, schema: pa.Schema, row_group_size: int | None = None) -> None:
    """Cast ``table`` to ``schema`` and write it as Parquet (:func:`parquet_write_options`:
    zstd, plain encoding, no statistics), in row groups of ``row_group_size`` rows (pyarrow's
    default, about 1M rows, when ``None``). Files written with other options (dictionaries,
    statistics, zstd level 1) read alike.

    Raises:
        SchemaMismatchError: a column is missing or cannot be cast.
    """
    try:
        table = table.select(schema.names).cast(schema)
    except (KeyError, pa.ArrowInvalid, ValueError) as e:
        raise SchemaMismatchError(f"{path}: table does not fit the declared schema: {e}") from e
    pq.write_table(table, str(path), row_group_size=row_group_size, **parquet_write_options(table))


def read_table(path: str | Path, schema: pa.Schema) -> pa.Table:
    """Read a Parquet table and check it against ``schema``.

    Raises:
        SchemaMismatchError: other schema version or other columns/types (a column marked
            optional in ``schema`` that the file lacks is added as nulls, not an error).
        OSError: the file is missing or unreadable.
    """
    try:
        table = pq.read_table(str(path))
    except pa.ArrowInvalid as e:
        raise OSError(f"{path}: not a readable Parquet file ({e})") from e
    meta = table.schema.metadata or {}
    found = meta.get(b"ragline.schema_version", b"?").decode()
    if found != str(SCHEMA_VERSION):
        raise SchemaMismatchError(
            f"{path}: schema version {found}, this ragline reads {SCHEMA_VERSION}; rebuild the index"
        )
    missing = [f for f in schema if f.name not in table.schema.names]
    if missing and all((f.metadata or {}).get(b"ragline.optional") == b"1" for f in missing):
        # columns added later as optional: a table written before them reads with nulls
        for f in missing:
            table = table.append_column(f, pa.nulls(table.num_rows, f.type))
        table = table.select(schema.names)
    if not table.schema.equals(schema, check_metadata=False):
        raise SchemaMismatchError(f"{path}: columns {table.schema.names} do not match {schema.names}")
    return table


def indexed_texts(chunks: pa.Table) -> list[str]:
    """Per row of a ``CHUNKS_SCHEMA`` table, the text that is embedded and BM25-indexed: the
    chunk's ``context`` prefix (may be empty) followed by its ``text`` (stored text and offsets
    stay those of the source)."""
    return [c + t for c, t in zip(chunks.column("context").to_pylist(), chunks.column("text").to_pylist())]



class ParquetRows:
    """A Parquet table read on demand: whole columns when asked for, single rows from a
    memory-mapped Arrow row file (:func:`write_row_file`) when there is one, from the hit
    columns read whole at the first :meth:`take` when the table has at most
    :data:`SMALL_TABLE_ROWS` rows, else by row group.

    Opening reads only the file footer (schema and row-group sizes), checked like
    :func:`read_table`; nothing else is read until :meth:`take`, :meth:`column` or
    :meth:`table` is called. :meth:`take` reads just the row groups holding the asked rows,
    with just the asked columns, so its cost follows the file's row-group size
    (:data:`CHUNKS_ROW_GROUP`), not its row count (a small table's are read once, whole). Reads are serialized (one lock), so one
    instance may be shared by threads.

    Args:
        path: the Parquet file.
        schema: the schema it must have (version metadata, names and types).
        row_file: the Arrow IPC file :func:`write_row_file` wrote beside it (optional: small
            tables have none, and large ones of versions published before row files read
            rows from Parquet row groups).

    Raises:
        SchemaMismatchError: another schema version or other columns/types.
        OSError: the file is missing or not Parquet.
    """

    def __init__(self, path: str | Path, schema: pa.Schema, row_file: str | Path | None = None) -> None:
        self.path = Path(path)
        self.schema = schema
        try:
            self._file = pq.ParquetFile(str(self.path), memory_map=True, pre_buffer=False)
        except pa.ArrowInvalid as e:
            raise OSError(f"{path}: not a readable Parquet file ({e})") from e
        found_schema = self._file.schema_arrow
        found = (found_schema.metadata or {}).get(b"ragline.schema_version", b"?").decode()
        if found != str(SCHEMA_VERSION):
            raise SchemaMismatchError(f"{path}: schema version {found}, this ragline reads {SCHEMA_VERSION}; "
                                      "rebuild the index")
        self._missing = {f.name for f in schema if f.name not in found_schema.names
                         and (f.metadata or {}).get(b"ragline.optional") == b"1"}
        if [(f.name, f.type) for f in found_schema] != [(f.name, f.type) for f in schema if f.name not in self._missing]:
            raise SchemaMismatchError(f"{path}: columns {found_schema.names} do not match {schema.names}")
        md = self._file.metadata
        self.num_rows = int(md.num_rows)
        self._starts = list(itertools.accumulate((md.row_group(i).num_rows for i in range(md.num_row_groups)), initial=0))
        self._lock = threading.Lock()
        self._columns: dict[str, pa.ChunkedArray] = {}
        self._row_table: pa.Table | None = None
        self._row_starts: list[int] = [0]
        self._has_row_file = row_file is not None and Path(row_file).exists()
        if self._has_row_file:
            try:  # zero-copy: the table's buffers are the mapped file (a small compressed one is decompressed)
                self._row_table = pa.ipc.open_file(pa.memory_map(str(row_file))).read_all()
            except (pa.ArrowInvalid, OSError) as e:
                raise OSError(f"{row_file}: not a readable Arrow IPC file ({e})") from e
            if self._row_table.num_rows != self.num_rows:
                raise SchemaMismatchError(f"{row_file}: {self._row_table.num_rows} rows but {self.path.name} has "
                                          f"{self.num_rows}; the version is damaged")
            # every column is chunked alike (one chunk per record batch): a row's chunk is found
            # once here, not by each ChunkedArray[] (twice as fast for a search's hits)
            first = self._row_table.column(0).chunks if self._row_table.num_columns else []
            self._row_starts = list(itertools.accumulate((len(c) for c in first), initial=0))

    def column(self, name: str) -> pa.ChunkedArray:
        """One whole column as Arrow (read once, then kept)."""
        got = self._columns.get(name)
        if got is None:
            if name in self._missing:
                got = pa.chunked_array([pa.nulls(self.num_rows, self.schema.field(name).type)])
            else:
                with self._lock:
                    got = self._file.read(columns=[name]).column(name)
            self._columns[name] = got
        return got

    def take(self, rows: "list[int]", columns: "list[str] | tuple[str, ...]") -> dict[str, list]:
        """``{column: [value per row]}`` for ``rows`` (in the order given; repeats allowed).

        Raises:
            IndexError: a row outside ``0..num_rows-1``.
        """
        if not rows:
            return {c: [] for c in columns}
        r = [int(x) for x in rows]
        if min(r) < 0 or max(r) >= self.num_rows:
            raise IndexError(f"{self.path}: rows {rows} outside 0..{self.num_rows - 1}")
        fast = self._row_table
        if fast is None and not self._has_row_file and self.num_rows <= SMALL_TABLE_ROWS \
                and all(c in HIT_COLUMNS for c in columns):
            fast = self._small_rows()
        if fast is not None and all(c in fast.column_names for c in columns):
            starts = self._row_starts
            at = [bisect.bisect_right(starts, x) - 1 for x in r]
            out_fast: dict[str, list] = {}
            for c in columns:
                parts = fast.column(c).chunks
                out_fast[c] = [parts[g][x - starts[g]].as_py() for g, x in zip(at, r)]
            return out_fast
        groups = [bisect.bisect_right(self._starts, x) - 1 for x in r]
        wanted = sorted(set(groups))
        present = [c for c in columns if c not in self._missing]
        with self._lock:
            part = self._file.read_row_groups(wanted, columns=present)
        # position of each row inside the concatenation of the wanted groups
        base, at = {}, 0
        for g in wanted:
            base[g] = at
            at += self._starts[g + 1] - self._starts[g]
        pos = [base[g] + x - self._starts[g] for g, x in zip(groups, r)]
        # element access, not Table.take: take loads pyarrow.compute, which imports pandas (1.5 s)
        out: dict[str, list] = {}
        for c in columns:
            col = part.column(c) if c in present else None
            out[c] = [col[p].as_py() for p in pos] if col is not None else [None] * len(rows)
        return out

    def _small_rows(self) -> pa.Table:
        """The hit columns of a small table without a row file, read whole once (one chunk per column)."""
        if self._row_table is None:
            present = [c for c in HIT_COLUMNS if c in self.schema.names and c not in self._missing]
            with self._lock:
                if self._row_table is None:
                    table = self._file.read(columns=present).combine_chunks()
                    self._row_starts = [0, table.num_rows]
                    self._row_table = table
        return self._row_table

    def table(self) -> pa.Table:
        """The whole table (:func:`read_table`)."""
        return read_table(self.path, self.schema)
