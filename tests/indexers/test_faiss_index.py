"""FAISS kinds from factory strings: build, train, record, memory-mapped open, approximate recall,
and the lazy open of a version (no chunk text read until a search needs it)."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pytest

from ragline.core.errors import ConfigError
from ragline.core.schemas import CHUNKS_ROW_GROUP, HIT_COLUMNS
from ragline.indexers.embedders import HashingEmbedder
from ragline.indexers.faiss_index import (
    AUTO_FLAT_MAX,
    FaissSpec,
    auto_nlist,
    build_faiss_index,
    build_settings,
    check_factory,
    factory_of,
    read_faiss_index,
    read_vectors,
    resolve_factory,
    training_sample,
    write_faiss_index,
)
from ragline.indexers.registry import IndexRegistry
from ragline.indexers.retrieval import RetrievalConfig
from ragline.indexers.retriever import PublishedIndex, Retriever
from ragline.pipelines.config import Params
from tests.publishing import make_old_version, paragraphs_tables, publish_documents

DIM = 32


def clustered(n: int, dim: int = DIM, centers: int = 40, seed: int = 0) -> np.ndarray:
    """float32 (n, dim) unit vectors around ``centers`` random directions (ANN methods need structure)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32)
    x = c[rng.integers(0, centers, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(("factory", "recorded"), [
    ("Flat", "Flat"), ("HNSW16", "HNSW16"), ("IVF16,Flat", "IVF16,Flat"), ("IVF16,PQ8x4", "IVF16,PQ8x4"),
])
def test_factory_round_trip(tmp_path: Path, factory: str, recorded: str) -> None:
    x = clustered(3000)
    index = build_faiss_index(x, FaissSpec(factory, train_size=2500))
    assert index.ntotal == 3000 and index.metric_type == faiss.METRIC_INNER_PRODUCT
    assert factory_of(index) == recorded
    write_faiss_index(index, tmp_path / "i.faiss")
    back = read_faiss_index(tmp_path / "i.faiss", mmap=True, factory=recorded)
    assert factory_of(back) == recorded
    np.testing.assert_array_equal(back.search(x[:5], 4)[1], index.search(x[:5], 4)[1])


def test_ivf_is_trained_on_a_sample_of_train_size() -> None:
    x = clustered(3000)
    sample = training_sample(x, 1000)
    assert sample.shape == (1000, DIM) and sample.flags.c_contiguous
    np.testing.assert_array_equal(sample, training_sample(x, 1000))  # fixed seed: the same sample every build
    assert not faiss.index_factory(DIM, "IVF16,Flat").is_trained
    index = build_faiss_index(x, FaissSpec("IVF16,Flat", train_size=1000))
    assert index.is_trained and index.ntotal == 3000
    # the centroids are k-means of that sample: every centroid lies near the sample's points
    centroids = index.quantizer.reconstruct_n(0, 16)
    assert np.linalg.norm(centroids, axis=1).max() < 1.01
    with pytest.raises(ConfigError, match=r"training 'IVF16,Flat' on 10 vectors failed"):
        build_faiss_index(x[:10], FaissSpec("IVF16,Flat"))


def test_auto_picks_flat_below_the_threshold_and_ivf_above() -> None:
    assert resolve_factory("auto", AUTO_FLAT_MAX - 1) == "Flat"
    assert resolve_factory("auto", 1_000_000) == "IVF4096,Flat" and auto_nlist(1_000_000) == 4096
    assert resolve_factory("HNSW32", 10) == "HNSW32"


@pytest.mark.parametrize(("factory", "fragment"), [
    ("IVFx,Flat", "could not parse index string IVFx,Flat"),
    ("Annoy", "could not parse index string Annoy"),
    ("", "empty factory string"),
])
def test_bad_factory_strings_are_config_errors_quoting_faiss(factory: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        check_factory(factory)
    with pytest.raises(ConfigError, match="index.factory"):
        Params.from_dict({"index": {"factory": factory}})


def test_a_factory_wrong_for_the_dimension_fails_at_build_naming_it() -> None:
    check_factory("IVF16,PQ48")  # fits 384-d embeddings: passes at params load
    with pytest.raises(ConfigError, match=r"'IVF16,PQ48' at dim 32: .*multiple of the number of subquantizers"):
        build_faiss_index(clustered(500), FaissSpec("IVF16,PQ48"))


def test_old_kind_records_read_as_factory_strings() -> None:
    assert build_settings({"kind": "flat", "metric": "ip"})["factory_param"] == "Flat"
    old = build_settings({"kind": "hnsw", "metric": "ip", "hnsw_m": 16, "hnsw_ef_construction": 200})
    assert (old["factory_param"], old["ef_construction"]) == ("HNSW16", 200)


@pytest.mark.parametrize(("factory", "config"), [
    ("HNSW16", RetrievalConfig(mode="dense", k=10, ef_search=128)),
    ("IVF32,Flat", RetrievalConfig(mode="dense", k=10, nprobe=8)),
])
def test_approximate_kinds_find_what_flat_finds(factory: str, config: RetrievalConfig) -> None:
    n = 4000
    x = clustered(n)
    chunks = _chunks(n)
    emb = HashingEmbedder(dim=DIM)
    exact = Retriever.in_memory(chunks, x, emb, FaissSpec("Flat"))
    approx = Retriever.in_memory(chunks, x, emb, FaissSpec(factory, train_size=n))
    queries = clustered(50, seed=7)
    recalls = []
    for q in queries:
        truth = {h.row for h in exact.search("", config, vector=q)}
        got = {h.row for h in approx.search("", config, vector=q)}
        recalls.append(len(truth & got) / len(truth))
    assert np.mean(recalls) >= 0.9
    # fewer lists probed / a narrower beam finds less: the search parameters reach FAISS
    narrow = config.override(nprobe=1, ef_search=1)
    low = np.mean([len({h.row for h in exact.search("", config, vector=q)}
                       & {h.row for h in approx.search("", narrow.override(k=10), vector=q)}) / 10 for q in queries])
    if factory.startswith("IVF"):
        assert low < np.mean(recalls)


def _chunks(n: int) -> pa.Table:
    corpus = {f"doc{i // 50}.txt": [] for i in range(n)}
    for i in range(n):
        corpus[f"doc{i // 50}.txt"].append((f"paragraph {i} about topic{i % 17} and word{i % 101}", None))
    _, chunks = paragraphs_tables(corpus)
    return chunks


def _publish(root: Path, factory: str, n: int) -> tuple[IndexRegistry, dict]:
    corpus = {f"doc{d}.txt": [(f"chunk {d}-{i}: colour{(d * 7 + i) % 23} shape{i % 5} " + "filler " * 20, None)
                              for i in range(25)] for d in range(n // 25)}
    documents, chunks = paragraphs_tables(corpus)
    params = Params.from_dict({"embed": {"model": f"hashing:{DIM}"},
                               "index": {"name": "docs", "root": str(root), "factory": factory, "train_size": n}})
    m = publish_documents(params, documents, chunks=chunks, embedder=HashingEmbedder(dim=DIM), cache=False)
    return IndexRegistry(root), m.index


def test_publish_records_the_factory_and_keeps_the_vectors(tmp_path: Path) -> None:
    registry, record = _publish(tmp_path, "IVF8,PQ4x4", 1000)
    assert record["factory"] == "IVF8,PQ4x4" and record["factory_param"] == "IVF8,PQ4x4"
    assert record["trained_on"] == 1000 and record["ntotal"] == 1000 and record["dim"] == DIM
    manifest = json.loads((registry.version_dir("docs", "v0001") / "manifest.json").read_text())
    (segment,) = manifest["segments"]  # the data files live in the version's segment
    assert "vectors.npy" in segment["files"]
    folder = registry.segment_dir("docs", segment["id"])
    published = PublishedIndex.open(registry, "docs")
    vectors = read_vectors(folder / "vectors.npy")
    # the vectors are the embedder's, exactly (a PQ index could only give back approximations)
    emb = HashingEmbedder(dim=DIM)
    texts = published.chunks.column("text").to_pylist()
    np.testing.assert_array_equal(vectors[:10], emb.embed(texts[:10]))
    np.testing.assert_array_equal(published.vectors()[:10], vectors[:10])


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat", "HNSW8"])
def test_open_memory_maps_the_faiss_file(tmp_path: Path, factory: str) -> None:
    registry, _ = _publish(tmp_path, factory, 500)
    published = PublishedIndex.open(registry, "docs")
    (segment,) = registry.segments("docs", "v0001")
    index_file = str((registry.segment_dir("docs", segment.id) / "index.faiss").resolve())
    maps = Path("/proc/self/maps").read_text()
    assert index_file in maps, f"{factory}: index.faiss is not memory-mapped"
    assert published.index.ntotal == 500


class _CountingFile:
    """A ParquetFile wrapper that records what is read."""

    def __init__(self, inner) -> None:  # noqa: ANN001 - pq.ParquetFile
        self.inner, self.whole_columns, self.groups = inner, [], []

    def read(self, columns=None, **kw):  # noqa: ANN001,ANN201
        self.whole_columns.extend(columns or ["*"])
        return self.inner.read(columns=columns, **kw)

    def read_row_groups(self, groups, columns=None, **kw):  # noqa: ANN001,ANN201
        self.groups.append(list(groups))
        return self.inner.read_row_groups(groups, columns=columns, **kw)


def _small_limit(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    """Make tables of more than ``rows`` rows "large" (they get a ``chunks.arrow``)."""
    import ragline.core.schemas as schemas
    import ragline.indexers.segments as segments

    monkeypatch.setattr(schemas, "SMALL_TABLE_ROWS", rows)
    monkeypatch.setattr(segments, "SMALL_TABLE_ROWS", rows)


@pytest.mark.parametrize("layout", ["row_file", "old", "small"])
def test_lazy_open_reads_only_the_hits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    """row_file: a large segment, hits from its memory-mapped chunks.arrow; old: a large segment
    published before chunks.arrow, hits from Parquet row groups; small: a segment of at most
    SMALL_TABLE_ROWS chunks (no chunks.arrow), its hit columns read whole at the first hit, not at open."""
    if layout != "small":
        _small_limit(monkeypatch, 1000)
    registry, _ = _publish(tmp_path, "Flat", 1500)
    (segment,) = registry.segments("docs", "v0001")
    assert ("chunks.arrow" in segment.files) == (layout != "small")
    if layout == "old":  # a version published before chunks.arrow: hits come from Parquet row groups
        make_old_version(registry.version_dir("docs", "v0001"), "chunks.arrow")
    retriever = Retriever.open(registry, "docs")
    assert retriever.published is not None and retriever.published._table is None
    assert (retriever.rows._row_table is not None) == (layout == "row_file")
    spy = _CountingFile(retriever.rows._file)
    retriever.rows._file = spy
    assert spy.inner.metadata.num_row_groups == -(-1500 // CHUNKS_ROW_GROUP) > 1
    for mode in ("dense", "bm25", "hybrid"):
        hits = retriever.search("colour7 shape3", RetrievalConfig(mode=mode, k=3))
        assert len(hits) == 3 and all(h.text.startswith("chunk ") for h in hits)
        expected = [sorted({h.row // CHUNKS_ROW_GROUP for h in hits})] if layout == "old" else []
        assert spy.groups[-1:] == expected
        spy.groups.clear()
    # a small segment's hit columns were read once, whole; no other layout reads a text column whole
    assert spy.whole_columns == (list(HIT_COLUMNS) if layout == "small" else [])
    assert retriever.published._table is None
    spy.whole_columns.clear()
    # a filter reads the column it needs, once, and never the texts
    retriever.search("colour7", RetrievalConfig(mode="dense", k=3), flt=_doc_filter("doc3.txt"))
    retriever.search("colour8", RetrievalConfig(mode="dense", k=3), flt=_doc_filter("doc4.txt"))
    assert spy.whole_columns == ["uri"]
    # the same hits either way
    assert [h.text for h in retriever.search("colour9", RetrievalConfig(mode="hybrid", k=5))] == \
        [h.text for h in Retriever.in_memory(retriever.published.chunks, retriever.published.vectors(),
                                             HashingEmbedder(dim=DIM)).search("colour9", RetrievalConfig(mode="hybrid", k=5))]


def _doc_filter(name: str):  # noqa: ANN202
    from ragline.indexers.retrieval import ChunkFilter

    return ChunkFilter(sources=(name,))


@pytest.mark.parametrize("factory", ["Flat", "HNSW8"])
def test_exact_kinds_keep_no_second_copy_of_the_vectors(tmp_path: Path, factory: str) -> None:
    """Flat and HNSW-Flat store the vectors as they are: the segment has no vectors.npy and
    ``vectors()`` is a read-only view of the memory-mapped index that stays valid on its own."""
    import gc

    registry, _ = _publish(tmp_path, factory, 500)
    (segment,) = registry.segments("docs", "v0001")
    assert "vectors.npy" not in segment.files
    published = PublishedIndex.open(registry, "docs")
    vectors = published.vectors()
    texts = published.chunks.column("text").to_pylist()
    del published
    gc.collect()  # the view holds its index
    assert vectors.shape == (500, DIM) and not vectors.flags.writeable
    np.testing.assert_array_equal(vectors, HashingEmbedder(dim=DIM).embed(texts))


def test_small_tables_keep_no_row_file_and_read_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (refresh disk, issue 12): a small segment stored its chunk texts twice, in
    chunks.parquet and in a zstd-compressed chunks.arrow. Now a table of at most SMALL_TABLE_ROWS
    rows has no row file and its rows read from Parquet equal those of a large table's row file
    and of a row file written compressed by an older ragline."""
    import ragline.core.schemas as schemas

    corpus = {f"doc{d}.txt": [(f"chunk {d}-{i}: " + "the same words again " * 20, None) for i in range(20)]
              for d in range(10)}
    _, chunks = paragraphs_tables(corpus)
    rows = [0, 57, 199, 3, 57]
    folder = tmp_path / "t"
    folder.mkdir()
    schemas.write_table(chunks, folder / "chunks.parquet", schemas.CHUNKS_SCHEMA, schemas.CHUNKS_ROW_GROUP)
    # 200 rows: small, no row file
    small = schemas.ParquetRows(folder / "chunks.parquet", schemas.CHUNKS_SCHEMA, folder / "chunks.arrow")
    got = [small.take(rows, schemas.HIT_COLUMNS)]
    assert small._row_table is not None and small._row_table.num_rows == 200
    # over the limit: an uncompressed row file in record batches of 64 rows (hits found across them)
    monkeypatch.setattr(schemas, "SMALL_TABLE_ROWS", 10)
    schemas.write_row_file(chunks, folder / "chunks.arrow", schemas.CHUNKS_SCHEMA, batch_rows=64)
    got.append(schemas.ParquetRows(folder / "chunks.parquet", schemas.CHUNKS_SCHEMA, folder / "chunks.arrow")
               .take(rows, schemas.HIT_COLUMNS))
    # an older ragline's small segment: a zstd-compressed row file
    monkeypatch.setattr(schemas, "SMALL_TABLE_ROWS", 16_384)
    old = chunks.select(list(schemas.HIT_COLUMNS)).cast(pa.schema([schemas.CHUNKS_SCHEMA.field(c) for c in schemas.HIT_COLUMNS]))
    with pa.OSFile(str(folder / "chunks.arrow"), "wb") as sink, \
            pa.ipc.new_file(sink, old.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(old)
    got.append(schemas.ParquetRows(folder / "chunks.parquet", schemas.CHUNKS_SCHEMA, folder / "chunks.arrow")
               .take(rows, schemas.HIT_COLUMNS))
    assert got[0] == got[1] == got[2]
    assert got[0]["text"] == [chunks.column("text")[r].as_py() for r in rows]
    assert got[0]["chunk_id"] == [chunks.column("chunk_id")[r].as_py() for r in rows]
    assert got[0]["section_path"] == [chunks.column("section_path")[r].as_py() for r in rows]
