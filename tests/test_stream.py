"""pipelines/stream.py: parsing and chunking overlap embedding, with the sequential result."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ragline.indexers.embedders import HashingEmbedder
from ragline.pipelines.chunk import chunk_documents
from ragline.pipelines.config import Params
from ragline.pipelines.embed import embed_chunks
from ragline.pipelines.load import discover_files, load_documents
from ragline.pipelines.stream import load_chunk_embed
from tests.conftest import SAMPLE


class ThreadRecordingEmbedder(HashingEmbedder):
    """The hashing embedder that records the threads it embeds in."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    def embed(self, texts, batch_size=64, progress=False):
        self.threads.add(threading.current_thread().name)
        return super().embed(texts, batch_size, progress)


def _params(tmp_path: Path, **chunk) -> Params:
    data = Params().to_dict()
    data["embed"]["model"] = "hashing"
    data["load"]["workers"] = 1
    data["paths"]["cache"] = str(tmp_path / "cache")
    data["chunk"].update(chunk)
    return Params.from_dict(data)


@pytest.mark.parametrize("chunk", [{}, {"strategy": "semantic", "max_tokens": 64}])
def test_stream_gives_the_sequential_documents_chunks_and_vectors(tmp_path: Path, chunk: dict) -> None:
    p = _params(tmp_path, **chunk)
    files = discover_files([SAMPLE])
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "empty.txt").write_text("   ")  # quarantined in the middle of the stream
    files = sorted(files + discover_files([tmp_path / "extra"]), key=lambda f: f.path.name)
    docs, bad = load_documents(files, p.load)
    emb = HashingEmbedder()
    fn = (lambda texts: emb.embed(list(texts))) if p.chunk.needs_embedder else None
    chunks, chunk_bad = chunk_documents(docs, p.chunk, embed_fn=fn, embed_model=p.embed.model)
    vectors, computed = embed_chunks(chunks, emb, None, p.embed.batch_size)

    model = ThreadRecordingEmbedder()
    done: list[int] = []
    got = load_chunk_embed(files, p, lambda: model, progress=done.append)
    assert [d.doc_id for d in got.documents] == [d.doc_id for d in docs]
    assert [q.path for q in got.quarantine] == [q.path for q in bad + chunk_bad] and bad
    assert got.chunks.equals(chunks)
    assert got.chunks.column("row").to_pylist() == list(range(chunks.num_rows))
    np.testing.assert_array_equal(got.vectors, vectors)
    assert got.embedded == computed
    assert sum(done) == len(files)
    if not p.chunk.needs_embedder:
        assert model.threads == {"ragline-embed"}  # the embedding thread, not the parsing caller


def test_stream_reports_an_embedder_failure_and_stops(tmp_path: Path) -> None:
    p = _params(tmp_path)

    def broken():
        raise RuntimeError("model file damaged")

    with pytest.raises(RuntimeError, match="model file damaged"):
        load_chunk_embed(discover_files([SAMPLE]), p, broken)


def test_stream_stops_its_parsing_when_cancelled(tmp_path: Path) -> None:
    """Issue 16: an ingest started before its flow (pipelines/flows.py _HeadStart) that the flow
    never takes is stopped: the next file delivered raises, the parsing workers are stopped, and
    nothing more is chunked or embedded."""
    from ragline.pipelines.stream import StreamCancelled

    p = _params(tmp_path)
    files = discover_files([SAMPLE])
    assert len(files) > 2
    cancel = threading.Event()
    model = CountingEmbedder()
    delivered: list[int] = []

    def progress(n: int) -> None:  # the first file embedded: stop the run
        delivered.append(n)
        cancel.set()

    with pytest.raises(StreamCancelled, match=rf"of {len(files)} files parsed"):
        load_chunk_embed(files, p, lambda: model, progress=progress, cancel=cancel)
    assert 0 < sum(delivered) < len(files)
    cancel.set()  # set from the start: not one file is chunked
    model.texts = 0
    with pytest.raises(StreamCancelled, match=rf"stopped after 0 of {len(files)} files parsed"):
        load_chunk_embed(files, p, lambda: model, cancel=cancel)
    assert model.texts == 0


def test_stream_with_no_documents(tmp_path: Path) -> None:
    p = _params(tmp_path)
    got = load_chunk_embed([], p, HashingEmbedder)
    assert got.chunks.num_rows == 0 and got.vectors.shape == (0, HashingEmbedder().dim)


class CountingEmbedder(HashingEmbedder):
    """The hashing embedder that counts the texts it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.texts = 0

    def embed(self, texts, batch_size=64, progress=False):
        self.texts += len(texts)
        return super().embed(texts, batch_size, progress)


def test_stream_does_not_embed_exact_copies_and_keeps_their_rows(tmp_path: Path) -> None:
    p = Params.from_dict({**_params(tmp_path).to_dict(), "paths": {"cache": ""}})  # no cache: every miss is embedded
    folder = tmp_path / "docs"
    folder.mkdir()
    paras = [" ".join(f"w{i}x{j}" for j in range(120)) for i in range(4)]
    (folder / "a.txt").write_text("\n\n".join(paras))
    (folder / "b.txt").write_text("\n\n".join(paras))  # an exact copy
    (folder / "c.txt").write_text("\n\n".join(paras).replace(" ", "  "))  # the same words, other spacing
    (folder / "d.txt").write_text(" ".join(f"other{j}" for j in range(300)))  # not a copy
    files = discover_files([folder])
    full_model, skip_model = CountingEmbedder(), CountingEmbedder()
    full = load_chunk_embed(files, p, lambda: full_model)
    got = load_chunk_embed(files, p, lambda: skip_model, skip_copies=True)
    assert got.chunks.equals(full.chunks) and not full.not_embedded.any()
    copies = {d.doc_id for d in got.documents if Path(d.uri).name in ("b.txt", "c.txt")}
    assert got.not_embedded.tolist() == [d in copies for d in got.chunks.column("doc_id").to_pylist()]
    # each embedding call embeds its distinct texts once; the copies' texts (titled by their own file) are never sent
    from ragline.core.schemas import indexed_texts

    assert skip_model.texts <= int((~got.not_embedded).sum()) < len(set(indexed_texts(full.chunks))) <= full_model.texts
    np.testing.assert_array_equal(got.vectors[~got.not_embedded], full.vectors[~got.not_embedded])
    assert not got.vectors[got.not_embedded].any()
    from ragline.pipelines.stream import embed_rows

    copy_texts = got.chunks.filter(got.not_embedded).column("text").to_pylist()
    assert embed_rows(got.chunks, got.vectors, got.not_embedded, skip_model, p) == len(set(copy_texts))
    np.testing.assert_array_equal(got.vectors, full.vectors)


class GatedEmbedder(HashingEmbedder):
    """The hashing embedder that embeds nothing until ``gate`` is set (or 120 s passed)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.waited_out = False

    def embed(self, texts, batch_size=64, progress=False):
        if not self.gate.wait(120):
            self.waited_out = True
        return super().embed(texts, batch_size, progress)


def test_after_chunking_runs_while_the_embedder_works_and_sees_the_result(tmp_path: Path) -> None:
    """Duplicate clustering (the flow's after_chunking) overlaps embedding: it is called before the
    embedder has embedded anything here, with the documents, chunks and chunker quarantine of the result."""
    p = _params(tmp_path)
    model = GatedEmbedder()
    seen = {}

    def after(documents, chunks, bad):
        seen.update(docs=documents.column("doc_id").to_pylist(), chunks=chunks, bad=list(bad))
        model.gate.set()
        return "clusters"

    got = load_chunk_embed(discover_files([SAMPLE]), p, lambda: model, after_chunking=after)
    assert not model.waited_out  # the embedder was held until after_chunking ran: it ran while embedding waited
    assert got.after_chunking == "clusters" and "after-chunking" in got.seconds
    assert seen["docs"] == [d.doc_id for d in got.documents] and seen["chunks"].equals(got.chunks)
    assert seen["bad"] == got.chunk_bad
    sequential = load_chunk_embed(discover_files([SAMPLE]), p, HashingEmbedder)
    assert got.chunks.equals(sequential.chunks) and sequential.after_chunking is None
    np.testing.assert_array_equal(got.vectors, sequential.vectors)


def test_stream_keeps_no_document_objects_and_builds_the_same_documents_table(tmp_path: Path) -> None:
    """Bounded memory (issue 12): with keep_documents=False no parsed Document (text, elements) outlives
    its chunking; each became its documents-table row, and the table (and its Parquet bytes) equal
    those built from the documents kept to the end."""
    import gc

    from ragline.core.records import Document
    from ragline.core.schemas import DOCUMENTS_SCHEMA, write_table
    from ragline.pipelines.load import documents_to_table

    def live_documents() -> int:  # other tests' fixtures may hold Documents: count, do not expect none
        gc.collect()
        return sum(isinstance(o, Document) for o in gc.get_objects())

    p = _params(tmp_path)
    files = discover_files([SAMPLE])
    kept = load_chunk_embed(files, p, HashingEmbedder)
    held = live_documents()
    bad = {q.path for q in kept.chunk_bad}
    expected = documents_to_table([d for d in kept.documents if d.uri not in bad])
    n_kept = len(kept.documents)
    del kept
    before = live_documents()
    assert held >= before + n_kept  # the count sees Documents when they are held
    got = load_chunk_embed(files, p, HashingEmbedder, keep_documents=False)
    assert got.documents == [] and live_documents() == before
    assert got.n_documents == n_kept and got.documents_table.equals(expected)
    write_table(got.documents_table, tmp_path / "a.parquet", DOCUMENTS_SCHEMA)
    write_table(expected, tmp_path / "b.parquet", DOCUMENTS_SCHEMA)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


class SlowEmbedder(HashingEmbedder):
    """The hashing embedder, slowed so parsing runs ahead of it by a varying amount."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def embed(self, texts, batch_size=64, progress=False):
        threading.Event().wait(self.delay)
        return super().embed(texts, batch_size, progress)


@pytest.mark.parametrize("delay", [0.0, 0.05])
def test_flush_hands_on_file_order_parts_that_concatenate_to_the_unflushed_result(tmp_path: Path, delay: float) -> None:
    p = _params(tmp_path)
    files = discover_files([SAMPLE])
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "empty.txt").write_text("   ")  # a quarantined file between flushed parts
    files = sorted(files + discover_files([tmp_path / "extra"]), key=lambda f: f.path.name)
    whole = load_chunk_embed(files, p, HashingEmbedder, keep_documents=False)
    assert whole.chunks.num_rows > 40
    parts: list = []

    def flush(documents, chunks, vectors, not_embedded):
        assert chunks.column("row").to_pylist() == list(range(chunks.num_rows))
        assert not_embedded.shape == (chunks.num_rows,) and not not_embedded.any()
        parts.append((documents, chunks, vectors))
        return len(parts)

    got = load_chunk_embed(files, p, lambda: SlowEmbedder(delay), keep_documents=False, flush=flush, flush_chunks=20)
    assert got.flushed == list(range(1, len(parts) + 1)) and len(parts) >= 2
    assert all(c.num_rows >= 20 for _, c, _ in parts) and got.chunks.num_rows < 20  # the tail: under one part
    # the parts and the tail are the unflushed result, split at file boundaries
    docs = pa.concat_tables([d for d, _, _ in parts] + [got.documents_table])
    chunks = pa.concat_tables([c for _, c, _ in parts] + [got.chunks])
    assert docs.equals(whole.documents_table)
    assert chunks.drop(["row"]).equals(whole.chunks.drop(["row"]))
    np.testing.assert_array_equal(np.concatenate([v for _, _, v in parts] + [got.vectors]), whole.vectors)
    assert [q.path for q in got.quarantine] == [q.path for q in whole.quarantine]
    assert got.n_documents == whole.n_documents
    # each part ends at the first file at which it reaches 20 rows, wherever the embedder was
    for _, c, _ in parts:
        uris = c.column("uri").to_pylist()
        assert uris.index(uris[-1]) < 20  # the rows before its last file's


def test_a_failed_flush_is_raised_after_the_embedder_finishes(tmp_path: Path) -> None:
    p = _params(tmp_path)

    def flush(documents, chunks, vectors, not_embedded):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        load_chunk_embed(discover_files([SAMPLE]), p, HashingEmbedder, keep_documents=False, flush=flush,
                         flush_chunks=10)
    with pytest.raises(ValueError, match="flush needs"):
        load_chunk_embed([], p, HashingEmbedder, flush=flush, flush_chunks=None)
