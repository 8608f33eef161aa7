"""Declared Arrow schemas of every table ragline writes (Parquet in a published version).

Each schema carries ``ragline.schema_version`` metadata; readers refuse other versions with
:class:`SchemaMismatchError` instead of guessing.
"""

from __future__ import annotations

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


#: ``signatures.parquet``: the MinHash signature of every document and indexed chunk of a
#: version, so a refresh compares new content without recomputing the unchanged.
SIGNATURES_SCHEMA = pa.schema(
    [
        ("level", pa.string()),          # document | chunk
        ("member_id", pa.string()),      # doc id or chunk id
        ("text_sha256", pa.string()),    # sha256 of the whitespace-collapsed text
        ("num_perm", pa.int32()),
        ("shingle_words", pa.int32()),
        ("hashvalues", pa.list_(pa.uint32())),  # empty when the text has no words
    ],
    metadata=_META,
)

def embeddings_schema(dim: int) -> pa.Schema:
    """Schema of ``embeddings.parquet``: chunk_id and a float32 vector of ``dim`` values."""
    return pa.schema(
        [("chunk_id", pa.string()), ("vector", pa.list_(pa.float32(), dim))], metadata=_META
    )


def write_table(table: pa.Table, path: str | Path, schema: pa.Schema) -> None:
    """Cast ``table`` to ``schema`` and write it as Parquet (zstd).

    Raises:
        SchemaMismatchError: a column is missing or cannot be cast.
    """
    try:
        table = table.select(schema.names).cast(schema)
    except (KeyError, pa.ArrowInvalid, ValueError) as e:
        raise SchemaMismatchError(f"{path}: table does not fit the declared schema: {e}") from e
    pq.write_table(table, str(path), compression="zstd")


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

