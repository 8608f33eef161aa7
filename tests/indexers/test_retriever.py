"""The one Retriever: fusion arithmetic, retrieval modes, metadata filters, the retrieval: settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragline.core.errors import ConfigError
from ragline.indexers.retrieval import ChunkFilter, RetrievalConfig, parse_filter_options
from ragline.indexers.retriever import Retriever, min_max, rrf_fuse, weighted_fuse
from ragline.indexers.registry import IndexRegistry
from tests.runner.conftest import CORPUS
from ragline.indexers.manifest import CorruptRegistryError
from tests.publishing import make_pre_segment_version, publish_paragraphs


def test_rrf_matches_the_formula() -> None:
    fused = rrf_fuse({"dense": [7, 3, 5], "bm25": [3, 9]}, {"dense": 1.0, "bm25": 2.0}, rrf_k=60)
    assert fused[3] == pytest.approx(1 / 62 + 2 / 61)
    assert fused[7] == pytest.approx(1 / 61)
    assert fused[9] == pytest.approx(2 / 62)
    assert fused[5] == pytest.approx(1 / 63)


def test_weighted_fusion_uses_min_max_scores() -> None:
    np.testing.assert_allclose(min_max(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])
    np.testing.assert_allclose(min_max(np.array([5.0, 5.0])), [1.0, 1.0])
    fused = weighted_fuse({"dense": ([1, 2, 3], [0.9, 0.5, 0.1]), "bm25": ([3, 4], [10.0, 2.0])},
                          {"dense": 0.5, "bm25": 0.5})
    assert fused == pytest.approx({1: 0.5, 2: 0.25, 3: 0.5, 4: 0.0})


def RetrievalSpec(**kw: object) -> RetrievalConfig:  # noqa: N802  the settings under test, validated
    return RetrievalConfig().override(**kw)


def test_config_errors_name_the_value_and_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"mode: Input should be 'dense', 'bm25' or 'hybrid' \(got 'sparse'\)"):
        RetrievalConfig().override("--mode", mode="sparse")
    with pytest.raises(ConfigError, match=r"fusion: Input should be 'weighted' or 'rrf' \(got 'max'\)"):
        RetrievalConfig.from_dict({"fusion": "max"})
    with pytest.raises(ConfigError, match="k: Input should be greater than or equal to 1"):
        RetrievalConfig().override(k=0)
    with pytest.raises(ConfigError, match="unknown filter key.*'colour'.*allowed: source, doc_id, page, section"):
        ChunkFilter.from_mapping({"colour": "red"})
    with pytest.raises(ConfigError, match="--filter 'source'"):
        parse_filter_options(["source"])


def test_override_keeps_unset_fields_and_merges_weights() -> None:
    base = RetrievalConfig.from_dict({"weights": {"dense": 0.7, "bm25": 0.3}, "k": 8})
    assert base.override() is base
    c = base.override(mode="dense", weights={"bm25": 1.0})
    assert (c.mode, c.k, c.weights.dense, c.weights.bm25, c.fusion) == ("dense", 8, 0.7, 1.0, "weighted")
    assert RetrievalConfig().record() == {"mode": "hybrid", "fusion": "weighted",
                                          "weights": {"dense": 0.5, "bm25": 0.5}, "candidates": 50,
                                          "bm25_budget": "auto"}


def test_filter_options_parse_like_flow_filters() -> None:
    assert parse_filter_options(["source=*.md", "source=a.pdf", "page=3"]) == ChunkFilter(
        sources=("*.md", "a.pdf"), pages=(3,))
    assert ChunkFilter.from_mapping({"page": {"min": 2, "max": "3"}, "section": "Intro"}) == ChunkFilter(
        page_min=2, page_max=3, sections=("Intro",))
    assert ChunkFilter.from_mapping({"source": None}).empty


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory) -> Retriever:
    root = tmp_path_factory.mktemp("hy") / "indexes"
    publish_paragraphs(root, "mini", CORPUS)
    return Retriever.open(IndexRegistry(root), "mini@latest")


def _sources(hits: list) -> list[str]:
    return [h.source for h in hits]


def test_bm25_mode_ranks_the_exact_term_match_first(retriever: Retriever) -> None:
    hits = retriever.search("impeller seal", RetrievalSpec(k=3, mode="bm25"))
    assert [h.text for h in hits] == ["Replace the impeller seal every two years or after 500 hours of running."]
    assert hits[0].retriever_ranks == {"bm25": 1} and hits[0].page == 2


def test_every_mode_returns_k_ranked_hits(retriever: Retriever) -> None:
    for mode in ("dense", "hybrid"):
        hits = retriever.search("prune roses in winter", RetrievalSpec(k=4, mode=mode))
        assert [h.rank for h in hits] == [1, 2, 3, 4]
        assert len({h.chunk_id for h in hits}) == 4
        assert hits[0].source == "garden/roses.md"


def test_hybrid_fuses_both_lists_and_is_deterministic(retriever: Retriever) -> None:
    spec = RetrievalSpec(k=5, mode="hybrid", fusion="rrf", weights={"dense": 1.0, "bm25": 1.0})
    a = retriever.search("sourdough dough ferment", spec)
    b = retriever.search("sourdough dough ferment", spec)
    assert [h.chunk_id for h in a] == [h.chunk_id for h in b]
    top = a[0]
    assert top.source == "kitchen/bread.txt" and set(top.retriever_ranks) == {"dense", "bm25"}
    assert top.score == pytest.approx(sum(1 / (60 + r) for r in top.retriever_ranks.values()))
    w = retriever.search("sourdough dough ferment", RetrievalSpec(k=5, mode="hybrid", fusion="weighted",
                                                                  weights={"dense": 0.0, "bm25": 1.0}))
    assert w[0].score == pytest.approx(1.0)  # the best BM25 row after min-max


def test_bm25_budget_reaches_bm25_in_bm25_and_hybrid_modes(retriever: Retriever) -> None:
    """``retrieval.bm25_budget``: a budget covering every posting gives the exact hits; a budget
    of one posting reads one row of the best term, so BM25 contributes a single row."""
    query = "prune roses sourdough impeller seal"
    for mode in ("bm25", "hybrid"):
        exact = retriever.search(query, RetrievalSpec(k=5, mode=mode))
        wide = retriever.search(query, RetrievalSpec(k=5, mode=mode, bm25_budget=10**6))
        assert [(h.row, h.score) for h in wide] == [(h.row, h.score) for h in exact]
        one = retriever.search(query, RetrievalSpec(k=5, mode=mode, bm25_budget=1))
        assert len([h for h in one if "bm25" in h.retriever_ranks]) == 1
        assert len([h for h in exact if "bm25" in h.retriever_ranks]) > 1
    assert RetrievalSpec(mode="bm25", bm25_budget=8).record() == {"mode": "bm25", "bm25_budget": 8}
    assert "bm25_budget" not in RetrievalSpec(mode="dense", bm25_budget=8).record()


def test_bm25_budget_auto_is_exact_below_the_row_threshold_and_budgeted_above(
        retriever: Retriever, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bm25_budget: auto`` (the default) resolves by the live row count: exact below
    ``AUTO_EXACT_ROWS``, ``AUTO_BUDGET`` postings at and above; other strings are refused."""
    from ragline.indexers import bm25

    query = "prune roses sourdough impeller seal"
    assert RetrievalSpec().bm25_budget == "auto"
    hits = lambda **kw: [(h.row, h.score) for h in retriever.search(query, RetrievalSpec(k=5, mode="bm25", **kw))]  # noqa: E731
    exact, one = hits(bm25_budget=None), hits(bm25_budget=1)
    assert exact != one
    assert hits() == exact  # a small index: exact
    monkeypatch.setattr(bm25, "AUTO_EXACT_ROWS", 1)
    monkeypatch.setattr(bm25, "AUTO_BUDGET", 1)
    assert hits() == one  # at the threshold: the budget
    assert bm25.resolve_budget("auto", 0) is None and bm25.resolve_budget(7, 10**9) == 7
    with pytest.raises(ValueError, match="'some'"):
        bm25.resolve_budget("some", 10)
    for bad in ("some", 0):
        with pytest.raises(ConfigError, match="bm25_budget"):
            RetrievalConfig.from_dict({"bm25_budget": bad})


def _hybrid_rows_in_child(retriever: Retriever, out) -> None:  # noqa: ANN001 - a multiprocessing queue
    import os

    out.put([h.row for h in retriever.search("prune roses sourdough", RetrievalSpec(k=5, mode="hybrid"))])
    out.close()
    out.join_thread()
    os._exit(0)  # not the exit handlers of whatever else the forked test process inherited


def test_hybrid_search_works_in_a_forked_child(retriever: Retriever) -> None:
    """The BM25 side thread pool of a hybrid search is made again in a forked child (which
    inherits the parent's pool object but none of its threads) instead of waiting forever."""
    import multiprocessing

    want = [h.row for h in retriever.search("prune roses sourdough", RetrievalSpec(k=5, mode="hybrid"))]
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_hybrid_rows_in_child, args=(retriever, out))
    child.start()
    try:
        assert out.get(timeout=60) == want
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0


def test_filters_restrict_every_mode(retriever: Retriever) -> None:
    only_pdf = ChunkFilter(sources=("*.pdf",))
    for mode in ("dense", "bm25", "hybrid"):
        hits = retriever.search("water", RetrievalSpec(k=10, mode=mode), only_pdf)
        assert hits and set(_sources(hits)) == {"manuals/pump.pdf"}
    pages = retriever.search("pump", RetrievalSpec(k=10, mode="dense"), ChunkFilter(page_min=2, page_max=3))
    assert sorted(h.page for h in pages) == [2, 3]
    by_name = retriever.search("roses", RetrievalSpec(k=10, mode="dense"), ChunkFilter(sources=("roses.md",)))
    assert set(_sources(by_name)) == {"garden/roses.md"} and len(by_name) == 2
    none = retriever.search("roses", RetrievalSpec(k=10, mode="dense"), ChunkFilter(doc_ids=("nope",)))
    assert none == []


def test_version_from_before_segments_is_refused_with_the_fix(tmp_path: Path) -> None:
    """Versions written before segments (one folder per version) are not read: one line says how to rebuild."""
    root = tmp_path / "indexes"
    m = publish_paragraphs(root, "old", CORPUS)
    make_pre_segment_version(IndexRegistry(root).version_dir("old", m.version))
    with pytest.raises(CorruptRegistryError) as e:
        Retriever.open(IndexRegistry(root), "old")
    msg = str(e.value)
    assert "\n" not in msg and "schema_version 1" in msg and "before segments" in msg
    assert "ragline ingest SOURCES --index NAME" in msg
