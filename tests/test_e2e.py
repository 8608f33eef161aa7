"""End to end with the real model (all-MiniLM-L6-v2 from its installed package), offline."""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragline.indexers.backends import resolve_backend
from ragline.indexers.embedders import SentenceTransformerEmbedder
from ragline.indexers.registry import IndexRegistry
from ragline.indexers.retrieval import RetrievalConfig
from ragline.indexers.retriever import PublishedIndex, Retriever
from ragline.pipelines.cli import app
from tests.conftest import SAMPLE_QUESTIONS, write_params

pytestmark = pytest.mark.slow


def _is_local(address: object) -> bool:
    if isinstance(address, (str, bytes)) and not isinstance(address, tuple):
        return True  # AF_UNIX path
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Block every non-loopback connection and name resolution; returns the attempts made."""
    attempts: list[str] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def guard(address: object) -> None:
        if not _is_local(address):
            attempts.append(repr(address))
            raise OSError(f"network blocked by test: {address!r}")

    def connect(self, address):  # type: ignore[no-untyped-def]
        guard(address)
        return real_connect(self, address)

    def connect_ex(self, address):  # type: ignore[no-untyped-def]
        guard(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        guard((host, 0))
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


def test_sample_corpus_offline_every_question_finds_its_document(
    workspace: Path, prefect_harness, no_network: list[str]
) -> None:
    write_params(workspace, embed={"model": "all-MiniLM-L6-v2"})
    result = CliRunner().invoke(app, ["ingest", "data/sample", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["documents"] == 12 and summary["quarantined"] == 0

    published = PublishedIndex.open(IndexRegistry("indexes"), "sample@latest")
    from ragline.indexers.embedders import info_of
    from ragline.indexers.retriever import embedder_for
    from ragline.pipelines.config import load_params
    from ragline.pipelines.embed import index_embedder

    params = load_params("params.yaml")
    fp32 = info_of(SentenceTransformerEmbedder())
    built = info_of(index_embedder(params))  # embed.backend of params.yaml (the default, auto: this CPU's fastest)
    assert published.manifest.embedding == built.to_manifest()
    assert (built.model_id, built.revision, built.dim, built.normalize) == (fp32.model_id, fp32.revision, 384, True)
    used = published.manifest.params["embed"]["backend"]
    assert params.embed.backend == "auto" and used == resolve_backend("auto")
    assert built.quantization.startswith(used + "/") if used not in ("torch", "onnx", "openvino") \
        else built.quantization == ""
    embedder = embedder_for(published.manifest, cache_dir=params.paths.cache)  # queries: the index's identity
    published.check_embedder(embedder)
    questions = [json.loads(line) for line in SAMPLE_QUESTIONS.read_text().splitlines() if line.strip()]
    assert len(questions) >= 10
    for mode in ("dense", "hybrid"):  # the shipped retrieval: section is hybrid
        retriever = Retriever.open(IndexRegistry("indexes"), "sample@latest", embedder=embedder)
        assert retriever.published.manifest.embedding == built.to_manifest()
        cfg = RetrievalConfig(mode=mode, k=5)
        misses = [q["question"] for q in questions
                  if f"data/sample/{q['doc']}" not in [h.source for h in retriever.search(q["question"], cfg)]]
        assert misses == [], mode
    assert no_network == []


def test_cli_query_with_the_real_model(workspace: Path, prefect_harness, no_network: list[str]) -> None:
    write_params(workspace, embed={"model": "all-MiniLM-L6-v2"})
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", "data/sample"]).exit_code == 0
    question = "How long does a worker bee take to develop?"
    result = runner.invoke(app, ["query", question, "--json", "-k", "3", "--mode", "dense"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert hits[0]["source"] == "data/sample/colony-roles.html"
    assert 0.0 < hits[0]["score"] <= 1.0 + 1e-6  # cosine
    served = json.loads(runner.invoke(app, ["query", question, "--json", "-k", "3"]).stdout)  # retrieval: hybrid
    assert "data/sample/colony-roles.html" in [h["source"] for h in served]
    assert all(set(h["retriever_ranks"]) <= {"dense", "bm25"} for h in served)
    # the query was embedded on ONNX Runtime: exported offline into paths.cache, checked against torch
    sidecars = list((workspace / ".ragline" / "cache" / "onnx").glob("*-opset[0-9][0-9].json"))  # the fp32 export
    assert len(sidecars) == 1 and json.loads(sidecars[0].read_text())["max_abs_diff"] < 1e-4
    torch_run = runner.invoke(app, ["query", question, "--json", "-k", "3", "--mode", "dense", "--query-backend", "torch"])
    published = PublishedIndex.open(IndexRegistry("indexes"), "sample@latest")
    if published.manifest.embedding.get("quantization"):  # bf16/int8 vectors: only their backend may query them
        assert torch_run.exit_code == 1 and "quantization" in torch_run.output
        backend = published.manifest.embedding["quantization"].split("/")[0]
        same = json.loads(runner.invoke(app, ["query", question, "--json", "-k", "3", "--mode", "dense", "--query-backend", backend]).stdout)
        assert [h["chunk_id"] for h in same] == [h["chunk_id"] for h in hits]
    else:
        assert [h["chunk_id"] for h in json.loads(torch_run.stdout)] == [h["chunk_id"] for h in hits]
    assert no_network == []
