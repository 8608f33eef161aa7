"""The REST endpoint, started for real (uvicorn on 127.0.0.1, free port) and called over HTTP."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest

from ragline.runner.engine import FlowRunner
from ragline.runner.serve import create_app
from ragline.runner.spec import load_flow
from tests.conftest import REPO
from tests.runner.fake_openai import FakeOpenAI, Reply
from tests.runner.helpers import serve_cli, serving

pytestmark = pytest.mark.network  # loopback only
KEY = "s3cret-key"
QUESTION = "How many days does a worker bee need to develop from the egg to an adult?"


@pytest.fixture(scope="module")
def sample_runner(sample_registry: Path) -> FlowRunner:
    runner = FlowRunner(load_flow(REPO / "flows" / "qa"), sample_registry)
    runner.warm_up()
    return runner


@pytest.fixture(scope="module")
def server(sample_runner: FlowRunner) -> Iterator[str]:
    with serving(create_app(sample_runner, api_key=KEY, max_body_bytes=8 * 1024)) as url:
        yield url


def test_healthz_needs_no_key_and_openapi_does(server: str) -> None:
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok", "flow": "qa"}
    assert httpx.get(f"{server}/openapi.json").status_code == 401
    spec = httpx.get(f"{server}/openapi.json", headers={"X-API-Key": KEY}).json()
    assert {"/score", "/healthz", "/metadata", "/v1/chat/completions", "/v1/models", "/feedback", "/metrics"} <= set(spec["paths"])
    chat = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert chat["required"] == ["model", "messages"]
    body_ref = spec["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    inputs = spec["components"]["schemas"][body_ref.rsplit("/", 1)[-1]]
    assert inputs["required"] == ["question"] and inputs["properties"]["question"]["maxLength"] == 2000
    assert inputs["additionalProperties"] is False
    assert "APIKeyHeader" in spec["components"]["securitySchemes"]


def test_api_key_is_enforced(server: str) -> None:
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
        r = httpx.post(f"{server}/score", json={"question": QUESTION}, headers=headers)
        assert r.status_code == 401 and r.json() == {"detail": "missing or wrong API key"}
    assert httpx.get(f"{server}/metadata").status_code == 401
    assert httpx.post(f"{server}/score", json={"question": QUESTION}, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_score_returns_outputs_citations_and_index_version(server: str, sample_runner: FlowRunner) -> None:
    r = httpx.post(f"{server}/score", json={"question": QUESTION}, headers={"X-API-Key": KEY})
    assert r.status_code == 200
    body = r.json()
    expected = sample_runner.run({"question": QUESTION})
    assert body["outputs"]["answer"] == expected.outputs["answer"]
    assert [c["chunk_id"] for c in body["citations"]] == [c["chunk_id"] for c in expected.citations]
    assert [(c["source"], c["page"]) for c in body["citations"]] == [(c["source"], c["page"]) for c in expected.citations]
    assert body["citations"][0]["source"] == str(REPO / "data" / "sample" / "colony-roles.html")
    assert body["indexes"] == [{"node": "retrieve", "ref": "sample@latest", "name": "sample", "version": "v0001"}]
    assert body["trace"] is None and body["tokens"]["total"] > 0
    traced = httpx.post(f"{server}/score?trace=true", json={"question": QUESTION}, headers={"X-API-Key": KEY}).json()
    assert [t["node"] for t in traced["trace"]] == ["retrieve", "prompt", "answer", "sources"]


def test_metadata(server: str) -> None:
    m = httpx.get(f"{server}/metadata", headers={"X-API-Key": KEY}).json()
    assert m["flow"] == "qa" and m["order"] == ["retrieve", "prompt", "answer", "sources"]
    assert m["indexes"][0]["version"] == "v0001" and m["indexes"][0]["embedding"]["model_id"] == "hashing"
    assert m["indexes"][0]["query_embedding"] == {"backend": "hashing"}
    assert "bm25" in m["variants"] and m["inputs"]["question"]["max_chars"] == 2000


def test_bad_inputs_give_422_and_the_server_keeps_serving(server: str) -> None:
    h = {"X-API-Key": KEY}
    cases = [({}, "missing"), ({"question": QUESTION, "extra": 1}, "extra_forbidden"),
             ({"question": 42}, "string_type"), ({"question": ""}, "string_too_short")]
    for payload, kind in cases:
        r = httpx.post(f"{server}/score", json=payload, headers=h)
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == kind
    r = httpx.post(f"{server}/score", content=b"{not json", headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 422
    assert httpx.get(f"{server}/healthz").status_code == 200


def test_oversized_bodies_get_413(server: str) -> None:
    h = {"X-API-Key": KEY}
    r = httpx.post(f"{server}/score", json={"question": "x" * 9000}, headers=h)
    assert r.status_code == 413 and r.json() == {"detail": "request body larger than 8192 bytes"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies to the streamed bytes
        yield b'{"question": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    r = httpx.post(f"{server}/score", content=chunks(), headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert httpx.post(f"{server}/score", json={"question": QUESTION}, headers=h).status_code == 200


def test_model_endpoint_failure_is_502(qa_flow: Path, sample_registry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk")
    with FakeOpenAI([Reply(status=400, raw='{"error": "no"}')]) as fake:
        f = qa_flow / "flow.yaml"
        f.write_text(f.read_text().replace("http://127.0.0.1:8000/v1", fake.base_url))
        runner = FlowRunner(load_flow(qa_flow, "openai_local"), sample_registry)
        with serving(create_app(runner, no_auth=True)) as url:
            r = httpx.post(f"{url}/score", json={"question": QUESTION})
            assert r.status_code == 502 and "HTTP 400" in r.json()["detail"]
            assert httpx.get(f"{url}/healthz").status_code == 200


def test_bounded_load_has_no_5xx(sample_runner: FlowRunner, capsys: pytest.CaptureFixture) -> None:
    """About 500 requests at concurrency 20 over loopback; reports p50/p95 latency."""
    questions = [line for line in (REPO / "data" / "sample-questions.jsonl").read_text().splitlines() if line]
    import json

    qs = [json.loads(q)["question"] for q in questions]
    n, concurrency = 500, 20

    async def load(url: str) -> tuple[list[int], list[float]]:
        sem = asyncio.Semaphore(concurrency)
        statuses: list[int] = []
        lat: list[float] = []
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            async def one(i: int) -> None:
                async with sem:
                    t0 = time.perf_counter()
                    r = await client.post("/score", json={"question": qs[i % len(qs)]}, headers={"X-API-Key": KEY})
                    lat.append((time.perf_counter() - t0) * 1000)
                    statuses.append(r.status_code)
            await asyncio.gather(*(one(i) for i in range(n)))
        return statuses, lat

    with serving(create_app(sample_runner, api_key=KEY)) as url:
        t0 = time.perf_counter()
        statuses, lat = asyncio.run(load(url))
        wall = time.perf_counter() - t0
    assert len(statuses) == n and not [s for s in statuses if s >= 500]
    assert set(statuses) == {200}
    p50, p95 = np.percentile(lat, 50), np.percentile(lat, 95)
    with capsys.disabled():
        print(f"\nload test: {n} requests, concurrency {concurrency}: {n / wall:.0f} req/s, "
              f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, no 5xx")


def test_cli_serve_subprocess(tmp_path: Path, sample_registry: Path) -> None:
    """`ragline flow serve` itself: starts, answers /healthz and /score, stops on SIGINT."""
    env = {**os.environ, "RAGLINE_API_KEY": KEY}
    args = [str(REPO / "flows" / "qa"), "--index-root", str(sample_registry), "--log-level", "warning"]
    with serve_cli(args, tmp_path, env) as server:
        assert httpx.post(f"{server.url}/score", json={"question": QUESTION}).status_code == 401
        r = httpx.post(f"{server.url}/score", json={"question": QUESTION}, headers={"X-API-Key": KEY})
        assert r.status_code == 200 and r.json()["citations"]
    stderr = server.stderr
    assert "serving flow qa (index sample@v0001)" in stderr and "API key required" in stderr
