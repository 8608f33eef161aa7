"""One retrieval path: `ragline eval chunking`, the served flow (REST /score), `Index.search`,
`ragline query` and the promotion gate's retriever return the same chunk ids for the same
question on the same version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import ragline
from ragline.indexers.registry import IndexRegistry
from ragline.indexers.retriever import Retriever
from ragline.pipelines.cli import app
from ragline.pipelines.config import Params
from ragline.pipelines.evaluate_chunking import corpus_documents, evaluate_chunking, load_dataset
from ragline.runner.engine import FlowRunner
from ragline.runner.serve import create_app
from ragline.runner.spec import load_flow
from tests.conftest import REPO, write_params
from tests.evaluation.conftest import MINI
from tests.publishing import publish_documents

N_QUESTIONS = 8


@pytest.mark.parametrize("retrieval", [{}, {"fusion": "rrf", "k": 4}, {"mode": "dense", "k": 3}, {"mode": "bm25"}])
def test_eval_chunking_and_the_served_flow_retrieve_the_same_chunks(workspace: Path, retrieval: dict) -> None:
    write_params(workspace, chunk={"strategy": "token", "max_tokens": 96, "overlap_tokens": 16, "context": True},
                 index={"name": "evalset"}, retrieval=retrieval)
    params = Params.from_dict(yaml.safe_load(Path("params.yaml").read_text()))
    data = load_dataset(MINI, limit_questions=N_QUESTIONS)
    result = evaluate_chunking(data, params)
    assert len(result.retrieved_ids) == N_QUESTIONS and all(len(ids) == params.retrieval.k for ids in result.retrieved_ids)

    # the same corpora, chunked and embedded by the same stage functions, published as a version
    publish_documents(params, corpus_documents(data))
    flow_dir = workspace / "flows" / "qa"
    shutil.copytree(REPO / "flows" / "qa", flow_dir, ignore=shutil.ignore_patterns("__pycache__"))
    spec = yaml.safe_load((flow_dir / "flow.yaml").read_text())
    spec["nodes"][0]["index"] = "evalset@latest"  # the node sets nothing else: retrieval: is the default
    (flow_dir / "flow.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    runner = FlowRunner(load_flow(flow_dir), params.index.root, retrieval=params.retrieval)
    client = TestClient(create_app(runner, no_auth=True))
    index = ragline.open_index("evalset")
    retriever = Retriever.open(IndexRegistry(params.index.root), "evalset@latest")  # what the gate opens
    for q, expected in zip(data.questions, result.retrieved_ids):
        r = client.post("/score?trace=true", json={"question": q.question})
        assert r.status_code == 200, r.text
        served = [c["chunk_id"] for c in next(t for t in r.json()["trace"] if t["node"] == "retrieve")["output"]]
        assert served == list(expected), q.question
        assert [h.chunk_id for h in index.search(q.question)] == list(expected)
        assert [h.chunk_id for h in retriever.search(q.question, params.retrieval)] == list(expected)
    cli = CliRunner().invoke(app, ["query", data.questions[0].question, "--index", "evalset", "--json"])
    assert cli.exit_code == 0, cli.output
    assert [h["chunk_id"] for h in json.loads(cli.stdout)] == list(result.retrieved_ids[0])


def test_a_flow_node_overrides_single_retrieval_fields(workspace: Path) -> None:
    from tests.publishing import publish_texts

    write_params(workspace, retrieval={"mode": "bm25", "k": 2})
    params = Params.from_dict(yaml.safe_load(Path("params.yaml").read_text()))
    publish_texts(params, {"a.txt": "hive frames and bee space", "b.txt": "varroa mites on the brood frames",
                           "c.txt": "the queen lays eggs in spring"})
    flow_dir = workspace / "flows" / "qa"
    shutil.copytree(REPO / "flows" / "qa", flow_dir, ignore=shutil.ignore_patterns("__pycache__"))
    base = FlowRunner(load_flow(flow_dir), params.index.root, retrieval=params.retrieval)
    k10 = FlowRunner(load_flow(flow_dir, "k10"), params.index.root, retrieval=params.retrieval)
    dense = FlowRunner(load_flow(flow_dir, "dense"), params.index.root, retrieval=params.retrieval)
    assert base.nodes["retrieve"].retrieval == params.retrieval
    assert k10.nodes["retrieve"].retrieval == params.retrieval.override(k=10)
    assert dense.nodes["retrieve"].retrieval.model_dump() == {**params.retrieval.model_dump(), "mode": "dense"}
    out = base.run({"question": "frames"}).retrieved
    assert [c["source"] for c in out] == ["a.txt", "b.txt"] and all(set(c["retriever_ranks"]) == {"bm25"} for c in out)
