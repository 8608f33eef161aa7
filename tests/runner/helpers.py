"""Test helpers: publish a tiny index from paragraphs (one chunk per paragraph, hashing vectors)."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import pyarrow as pa

from ragline.indexers.embedders import Embedder, HashingEmbedder, info_of
from ragline.indexers.manifest import Manifest
from ragline.indexers.registry import IndexRegistry
from ragline.core.schemas import CHUNKS_SCHEMA, DOCUMENTS_SCHEMA


def paragraphs_tables(corpus: Mapping[str, Sequence[tuple[str, int | None]]]) -> tuple[pa.Table, pa.Table]:
    """Documents (paragraphs joined by a blank line) and chunks (one per paragraph, exact offsets)."""
    docs, chunks = [], []
    for uri, paras in corpus.items():
        doc_id = hashlib.sha256(uri.encode()).hexdigest()[:32]
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
            chunks.append({"row": len(chunks), "chunk_id": hashlib.sha256(f"{doc_id}:{start}:{end}".encode()).hexdigest()[:32],
                           "doc_id": doc_id, "uri": uri, "char_start": start, "char_end": end,
                           "token_count": len(para.split()), "page": page, "section_path": [], "oversized": False,
                           "text": para, "context": ""})
        docs.append({"doc_id": doc_id, "uri": uri, "sha256": hashlib.sha256(text.encode()).hexdigest(),
                     "mime_type": "text/plain", "size_bytes": len(text.encode()), "title": uri, "text": text,
                     "elements": elements})
    return pa.Table.from_pylist(docs, schema=DOCUMENTS_SCHEMA), pa.Table.from_pylist(chunks, schema=CHUNKS_SCHEMA)


def publish_paragraphs(root: Path, name: str, corpus: Mapping[str, Sequence[tuple[str, int | None]]],
                       aliases: tuple[str, ...] = ("latest",), embedder: Embedder | None = None) -> Manifest:
    """Publish ``corpus`` as a new version of ``name`` under ``root`` (default: hashing embedder, 64 dims)."""
    from ragline.pipelines.config import Params
    from ragline.pipelines.load import quarantine_to_table
    from ragline.pipelines.publish import publish_index

    documents, chunks = paragraphs_tables(corpus)
    embedder = embedder or HashingEmbedder()
    vectors = embedder.embed(chunks.column("text").to_pylist())
    params = Params.from_dict({"embed": {"model": embedder.model_id}, "index": {"name": name, "root": str(root)}})
    return publish_index(IndexRegistry(root), params, documents, chunks, vectors, quarantine_to_table([]),
                         info_of(embedder), aliases=aliases)


def make_old_version(folder: Path, *file_names: str) -> None:
    """Turn a published version into one built before ``file_names`` existed: delete the files
    and drop them from ``manifest.json`` (so the version is intact, just older)."""
    import json

    manifest_path = folder / "manifest.json"
    data = json.loads(manifest_path.read_text())
    for name in file_names:
        (folder / name).unlink()
        data["files"].pop(name, None)
        data.get("file_sizes", {}).pop(name, None)
    manifest_path.write_text(json.dumps(data))
@contextmanager
def serving(app: object, lifespan: str = "off") -> Iterator[str]:
    """Run an ASGI ``app`` with uvicorn in a thread on a free loopback port; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
