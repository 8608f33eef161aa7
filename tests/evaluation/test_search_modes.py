"""Search modes of the chunking evaluation: dense, BM25 and hybrid (retrieval.mode / --mode), through the one Retriever."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragline.chunkers.base import ConfigError
from ragline.indexers.bm25 import BM25Index
from ragline.indexers.embedders import HashingEmbedder
from ragline.indexers.faiss_index import search
from ragline.indexers.retrieval import RetrievalConfig
from ragline.indexers.retriever import Retriever
from ragline.pipelines.chunk import chunk_documents
from ragline.pipelines.cli import app
from ragline.pipelines.config import Params
from ragline.pipelines.evaluate_chunking import corpus_documents, evaluate_chunking, load_dataset, retrieve_rows
from ragline.pipelines.experiments import plan_grid
from tests.conftest import write_params

CHUNK = {"strategy": "token", "max_tokens": 96, "overlap_tokens": 0, "context": False}


def _params(tmp_path: Path, **ev: object) -> Params:
    return Params.from_dict({"chunk": CHUNK, "embed": {"model": "hashing"}, "paths": {"cache": str(tmp_path / "cache")},
                             "retrieval": ev})


@pytest.mark.parametrize("ev, retrieval", [
    ({"mode": "dense"}, {"mode": "dense"}),
    ({"mode": "bm25"}, {"mode": "bm25", "bm25_budget": "auto"}),
    ({}, {"mode": "hybrid", "fusion": "weighted", "weights": {"dense": 0.5, "bm25": 0.5}, "candidates": 50,
          "bm25_budget": "auto"}),
    ({"fusion": "rrf"}, {"mode": "hybrid", "fusion": "rrf", "weights": {"dense": 0.5, "bm25": 0.5}, "candidates": 50,
                         "rrf_k": 60, "bm25_budget": "auto"}),
    ({"mode": "hybrid", "fusion": "weighted", "weights": {"dense": 0.3, "bm25": 0.7}, "candidates": 20,
      "bm25_budget": None},
     {"mode": "hybrid", "fusion": "weighted", "weights": {"dense": 0.3, "bm25": 0.7}, "candidates": 20}),
])
def test_every_mode_gives_metrics(tmp_path: Path, mini_dataset: Path, ev: dict, retrieval: dict) -> None:
    data = load_dataset(mini_dataset, limit_questions=12)
    result = evaluate_chunking(data, _params(tmp_path, **ev), k=3, embedder=HashingEmbedder(dim=64))
    assert result.retrieval == retrieval
    assert result.to_dict()["retrieval"] == retrieval and result.metrics_dict()["mode"] == retrieval["mode"]
    assert result.overall.questions == 12
    for key in ("recall", "precision", "iou", "precision_omega"):
        assert 0.0 < getattr(result.overall, key) <= 1.0


def test_the_result_names_the_quantization_of_the_vectors(tmp_path: Path, mini_dataset: Path) -> None:
    class Int8(HashingEmbedder):  # what embed.backend auto gives on a CPU with VNNI and no AMX
        quantization = "openvino-int8/nncf-x"

    data = load_dataset(mini_dataset, limit_questions=3)
    quantized = evaluate_chunking(data, _params(tmp_path), k=3, embedder=Int8(dim=64))
    assert quantized.embedder["quantization"] == "openvino-int8/nncf-x"
    assert quantized.to_dict()["embedder"]["quantization"] == "openvino-int8/nncf-x"
    assert "quantization" not in evaluate_chunking(data, _params(tmp_path), k=3, embedder=HashingEmbedder(dim=64)).embedder


def _setup(tmp_path: Path, mini_dataset: Path):
    data = load_dataset(mini_dataset)
    chunks, bad = chunk_documents(corpus_documents(data), Params.from_dict({"chunk": CHUNK}).chunk)
    assert not bad
    emb = HashingEmbedder(dim=64)
    texts = [c + t for c, t in zip(chunks.column("context").to_pylist(), chunks.column("text").to_pylist())]
    retriever = Retriever.in_memory(chunks, emb.embed(texts), emb)
    questions = [q.question for q in data.questions]
    return chunks, retriever, emb.embed(questions), questions


def _rows(retriever: Retriever, qvecs, questions: list[str], k: int, **cfg: object):
    return retrieve_rows(retriever, RetrievalConfig().override(k=k, **cfg), questions, qvecs)[0]


def test_bm25_mode_returns_the_bm25_index_ranking(tmp_path: Path, mini_dataset: Path) -> None:
    chunks, retriever, qvecs, questions = _setup(tmp_path, mini_dataset)
    rows = _rows(retriever, qvecs, questions, 4, mode="bm25")
    bm25 = BM25Index.from_chunks(chunks)
    assert rows.shape == (len(questions), 4)
    for i, q in enumerate(questions):
        expected = bm25.search(q, 4)[0].tolist()
        assert rows[i].tolist() == expected + [-1] * (4 - len(expected))


@pytest.mark.parametrize("fusion", ["rrf", "weighted"])
def test_hybrid_with_one_zero_weight_is_the_other_retriever(tmp_path: Path, mini_dataset: Path, fusion: str) -> None:
    chunks, retriever, qvecs, questions = _setup(tmp_path, mini_dataset)
    k = 3
    (faiss_index,) = retriever.index.parts  # in memory: one FAISS index
    _, dense = search(faiss_index, qvecs, 50)  # the candidate depth: FAISS orders tied scores by depth
    dense = dense[:, :k]
    only_dense = _rows(retriever, qvecs, questions, k, mode="hybrid", fusion=fusion, weights={"dense": 1, "bm25": 0})
    assert only_dense.tolist() == dense.tolist()
    bm25 = BM25Index.from_chunks(chunks)
    only_bm25 = _rows(retriever, qvecs, questions, k, mode="hybrid", fusion=fusion, weights={"dense": 0, "bm25": 1})
    for i, q in enumerate(questions):
        expected = bm25.search(q, 50)[0].tolist()
        if len(expected) > k:  # enough BM25 candidates that none of the top k ties at 0 with dense-only rows
            assert only_bm25[i].tolist() == expected[:k]


def test_unknown_mode_is_a_config_error_naming_retrieval_mode(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"retrieval\.mode: Input should be 'dense', 'bm25' or 'hybrid' \(got 'sparse'\)"):
        Params.from_dict({"retrieval": {"mode": "sparse"}})
    with pytest.raises(ConfigError, match=r"retrieval\.fusion"):
        Params.from_dict({"retrieval": {"fusion": "max"}})
    with pytest.raises(ConfigError, match=r"unknown key `eval\.mode`; allowed: "):  # the old keys are gone
        Params.from_dict({"eval": {"mode": "dense"}})


def test_cli_mode_and_fusion_options(workspace: Path, mini_dataset: Path) -> None:
    write_params(workspace, chunk=CHUNK)
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "chunking", "--dataset", str(mini_dataset), "--limit-questions", "6",
                              "--mode", "hybrid", "--fusion", "weighted", "--metrics-out", "m.json", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["retrieval"]["mode"] == "hybrid" and out["retrieval"]["fusion"] == "weighted"
    assert json.loads((workspace / "m.json").read_text())["mode"] == "hybrid"
    res = runner.invoke(app, ["eval", "chunking", "--dataset", str(mini_dataset), "--mode", "sparse"])
    assert res.exit_code == 1 and "mode" in res.stderr and "'sparse'" in res.stderr and "'hybrid'" in res.stderr


def test_grids_vary_the_mode() -> None:
    plan = plan_grid({"grid": {"max_tokens": [128], "mode": ["dense", "bm25", "hybrid"]},
                      "configs": [{"max_tokens": 128, "mode": "hybrid", "fusion": "rrf"},
                                  {"max_tokens": 128, "mode": "dense", "fusion": "rrf"}]}, Params())
    # dense ignores fusion: the last point repeats the first
    assert plan.labels == ("token 128/0 [dense]", "token 128/0 [bm25]", "token 128/0",
                           "token 128/0 [hybrid rrf]")
    assert [plan.params_for(i).retrieval.mode for i in range(4)] == ["dense", "bm25", "hybrid", "hybrid"]
    assert plan.params_for(3).retrieval.fusion == "rrf" and "mode" not in plan.points[3]
    with pytest.raises(ConfigError, match=r"retrieval\.mode"):
        plan_grid({"grid": {"mode": ["sparse"]}}, Params(), source="g.yaml")
