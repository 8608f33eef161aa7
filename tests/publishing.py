"""The one test helper that publishes a small index version straight from documents
(no Prefect, no parsing): chunked with the params' chunker unless chunks are given, embedded
through the stage function (hashing embedder unless told otherwise), published with
:func:`pipelines.publish.publish_index`."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import pyarrow as pa

from ragline.core.hashing import doc_id_for, sha256_text
from ragline.core.records import Document, ElementSpan
from ragline.core.schemas import CHUNKS_SCHEMA, DOCUMENTS_SCHEMA
from ragline.indexers.embedders import Embedder, HashingEmbedder, info_of, make_embedder
from ragline.indexers.manifest import Manifest
from ragline.indexers.registry import IndexRegistry


def publish_documents(params, documents: Sequence[Document] | pa.Table, *, chunks: pa.Table | None = None,
                      embedder: Embedder | None = None, aliases: Sequence[str] = ("latest",),
                      cache: bool = True) -> Manifest:
    """Publish ``documents`` as a new version of ``params.index.name`` under ``params.index.root``.

    Args:
        params: validated :class:`pipelines.config.Params`.
        documents: :class:`Document` records, or a ``DOCUMENTS_SCHEMA`` table when ``chunks`` is given.
        chunks: a ``CHUNKS_SCHEMA`` table to publish as it is (default: chunk with ``params.chunk``).
        embedder: default: ``params.embed.model`` (tests use ``hashing``).
        aliases: aliases moved to the new version.
        cache: embed through ``params.paths.cache`` (False: no cache).
    """
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.embed import embed_chunks
    from ragline.pipelines.load import documents_to_table, quarantine_to_table
    from ragline.pipelines.publish import publish_index

    if chunks is None:
        chunks, bad = chunk_documents(list(documents), params.chunk, embed_model=params.embed.model)
        if bad:
            raise RuntimeError(f"chunking failed: {bad}")
    table = documents if isinstance(documents, pa.Table) else documents_to_table(list(documents))
    embedder = embedder or make_embedder(params.embed.model, params.embed.normalize)
    vectors, _ = embed_chunks(chunks, embedder, params.paths.cache if cache else None)
    return publish_index(IndexRegistry(params.index.root), params, table, chunks, vectors, quarantine_to_table([]),
                         info_of(embedder), aliases=aliases)


def text_document(uri: str, text: str) -> Document:
    """A one-element plain-text :class:`Document` (no parsing)."""
    return Document(doc_id_for(uri), uri, sha256_text(text), "text/plain", len(text.encode()), Path(uri).stem, text,
                    (ElementSpan("NarrativeText", 0, len(text)),))


def publish_texts(params, texts: Mapping[str, str]) -> Manifest:
    """Publish ``{uri: text}`` (one document each, chunked with ``params.chunk``)."""
    return publish_documents(params, [text_document(u, t) for u, t in sorted(texts.items())])


def paragraphs_tables(corpus: Mapping[str, Sequence[tuple[str, int | None]]]) -> tuple[pa.Table, pa.Table]:
    """Documents (paragraphs joined by a blank line) and chunks (one per paragraph, exact offsets)."""
    docs, chunks = [], []
    for uri, paras in corpus.items():
        doc_id = doc_id_for(uri)
        text, elements, pos = "", [], 0
        for i, (para, page) in enumerate(paras):
            if i:
                text += "\n\n"
                pos += 2
            start, end = pos, pos + len(para)
            text += para
            pos = end
            elements.append({"type": "NarrativeText", "char_start": start, "char_end": end, "page": page,
                             "section_path": []})
            chunks.append({"row": len(chunks), "chunk_id": sha256_text(f"{doc_id}:{start}:{end}")[:32],
                           "doc_id": doc_id, "uri": uri, "char_start": start, "char_end": end,
                           "token_count": len(para.split()), "page": page, "section_path": [], "oversized": False,
                           "text": para, "context": ""})
        docs.append({"doc_id": doc_id, "uri": uri, "sha256": sha256_text(text), "mime_type": "text/plain",
                     "size_bytes": len(text.encode()), "title": uri, "text": text, "elements": elements})
    return pa.Table.from_pylist(docs, schema=DOCUMENTS_SCHEMA), pa.Table.from_pylist(chunks, schema=CHUNKS_SCHEMA)


def publish_paragraphs(root: Path, name: str, corpus: Mapping[str, Sequence[tuple[str, int | None]]],
                       aliases: tuple[str, ...] = ("latest",), embedder: Embedder | None = None) -> Manifest:
    """Publish ``corpus`` (one chunk per paragraph) as a new version of ``name`` under ``root``
    (default: hashing embedder, no embedding cache)."""
    from ragline.pipelines.config import Params

    documents, chunks = paragraphs_tables(corpus)
    embedder = embedder or HashingEmbedder()
    params = Params.from_dict({"embed": {"model": embedder.model_id}, "index": {"name": name, "root": str(root)}})
    return publish_documents(params, documents, chunks=chunks, embedder=embedder, aliases=aliases, cache=False)


def make_pre_segment_version(folder: Path) -> None:
    """Turn a published version into one written before segments (manifest schema_version 1,
    every file in the version folder): the layout of ragline before segments."""
    import json
    import shutil

    manifest_path = folder / "manifest.json"
    data = json.loads(manifest_path.read_text())
    root = folder.parent / "segments"
    for seg in data.pop("segments"):
        for name in seg["files"]:
            shutil.copyfile(root / seg["id"] / name, folder / name)
        data["files"].update(seg["files"])
    data.pop("tombstones")
    data["schema_version"] = 1
    manifest_path.write_text(json.dumps(data))


def segment_path(version: str, file_name: str, name: str = "sample", root: str | Path = "indexes",
                 index: int = -1) -> Path:
    """``<root>/<name>/segments/<id>/<file_name>`` for the ``index``-th segment a version lists
    (the last, i.e. newest, by default): where a version's data files live."""
    seg = IndexRegistry(root).segments(name, version)[index]
    return Path(root) / name / "segments" / seg.id / file_name


def segment_key(version: str, file_name: str, name: str = "sample", root: str | Path = "indexes") -> str:
    """The key ``IndexRegistry.damaged_files`` reports for that file: ``segments/<id>/<file_name>``."""
    return str(segment_path(version, file_name, name, root).relative_to(Path(root) / name))


def make_old_version(folder: Path, *file_names: str) -> None:
    """Turn a published version into one built before ``file_names`` existed: delete the files
    from the version folder or from its segments and drop them from ``manifest.json`` (so the
    version is intact, just older; a segment keeps its id, as one written back then would)."""
    import json

    manifest_path = folder / "manifest.json"
    data = json.loads(manifest_path.read_text())
    for name in file_names:
        if (folder / name).exists():
            (folder / name).unlink()
            data["files"].pop(name, None)
            data.get("file_sizes", {}).pop(name, None)
        for seg in data.get("segments", []):
            seg_file = folder.parent / "segments" / seg["id"] / name
            if name in seg["files"]:
                seg_file.unlink(missing_ok=True)
                seg["files"].pop(name)
                seg.get("file_sizes", {}).pop(name, None)
    manifest_path.write_text(json.dumps(data))
