"""pipelines/stream.py: parsing and chunking overlap embedding, with the sequential result."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
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


def test_stream_with_no_documents(tmp_path: Path) -> None:
    p = _params(tmp_path)
    got = load_chunk_embed([], p, HashingEmbedder)
    assert got.chunks.num_rows == 0 and got.vectors.shape == (0, HashingEmbedder().dim)
