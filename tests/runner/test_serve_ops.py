"""Operating a served flow: the key rule, offline docs, metrics, the request log, feedback and its export."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from typer.testing import CliRunner

from ragline.core.errors import ConfigError
from ragline.core.serve_config import RequestLogConfig, ServeConfig, load_serve_config
from ragline.runner.engine import FlowRunner
from ragline.runner.requestlog import RequestLog, RequestRecord, export_feedback
from ragline.runner.serve import create_app
from ragline.runner.spec import load_flow
from tests.runner.helpers import serve_cli, serving

pytestmark = pytest.mark.network  # loopback only
KEY = "ops-key"
H = {"X-API-Key": KEY}
PUMP = "How often should the impeller seal be replaced?"
ROSES = "When are roses pruned?"


@pytest.fixture()
def runner(mini_flow: Path, mini_registry: Path) -> FlowRunner:
    r = FlowRunner(load_flow(mini_flow), mini_registry)
    r.warm_up()
    return r


def logged_rows(db: Path, n: int) -> list[dict]:
    """The rows of a request log once it holds ``n`` (the writer thread commits every 0.2 s)."""
    deadline = time.monotonic() + 10
    while True:
        rows: list[dict] = []
        if db.exists():
            conn = sqlite3.connect(db)
            conn.row_factory = sqlite3.Row
            rows = [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY time")]
            conn.close()
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def _config(tmp_path: Path, **log: object) -> ServeConfig:
    return ServeConfig.model_validate({"request_log": {"path": str(tmp_path / "logs" / "requests.sqlite"), **log},
                                       "prices": {"extractive": {"prompt_per_mtok": 1.0, "completion_per_mtok": 4.0}}})


@pytest.fixture()
def server(runner: FlowRunner, tmp_path: Path) -> Iterator[str]:
    with serving(create_app(runner, api_key=KEY, config=_config(tmp_path))) as url:
        yield url


def test_an_app_without_a_key_must_be_asked_for(runner: FlowRunner) -> None:
    with pytest.raises(ConfigError, match="no API key: set RAGLINE_API_KEY"):
        create_app(runner)


def test_every_route_but_healthz_needs_the_key(server: str) -> None:
    assert httpx.get(f"{server}/healthz").status_code == 200
    for method, path in (("GET", "/metadata"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc"),
                         ("GET", "/metrics"), ("GET", "/v1/models"), ("POST", "/score"), ("POST", "/feedback"),
                         ("POST", "/v1/chat/completions")):
        r = httpx.request(method, f"{server}{path}", json={})
        assert r.status_code == 401, path
    assert httpx.get(f"{server}/docs").headers["www-authenticate"] == 'Basic realm="ragline"'
    assert httpx.get(f"{server}/docs", auth=("any", KEY)).status_code == 200  # a browser's Basic prompt
    assert httpx.get(f"{server}/docs", auth=("any", "wrong")).status_code == 401


def test_docs_and_redoc_load_their_assets_from_the_server(server: str) -> None:
    import re

    for page, assets in (("/docs", ("swagger-ui-bundle.js", "swagger-ui.css")), ("/redoc", ("redoc.standalone.js",))):
        html = httpx.get(f"{server}{page}", headers=H).text
        urls = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert urls and all(u.startswith("/static-offline-docs/") for u in urls), urls  # nothing from a CDN
        for name in assets:
            assert f"/static-offline-docs/{name}" in urls
            r = httpx.get(f"{server}/static-offline-docs/{name}")
            assert r.status_code == 200 and len(r.content) > 100_000
        assert "/openapi.json" in html
    assert "SwaggerUIBundle" in httpx.get(f"{server}/static-offline-docs/swagger-ui-bundle.js").text


def test_request_log_feedback_and_export(server: str, tmp_path: Path) -> None:
    from ragline.pipelines.evaluate import load_questions
    from ragline.runner.evaluate import parse_label

    s = httpx.post(f"{server}/score", json={"question": PUMP}, headers=H)
    assert s.status_code == 200 and s.headers["x-request-id"] == s.json()["request_id"]
    body = s.json()
    chat = httpx.post(f"{server}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "qa", "messages": [{"role": "user", "content": ROSES}]}).json()
    bad = httpx.post(f"{server}/score", json={"question": "x" * 3000}, headers=H)
    assert bad.status_code == 422
    rows = {r["request_id"]: r for r in logged_rows(tmp_path / "logs" / "requests.sqlite", 2)}
    assert len(rows) == 2  # the 422 never reached the flow
    rec = rows[body["request_id"]]
    assert rec["route"] == "/score" and rec["flow"] == "qa" and rec["question"] == PUMP and rec["status"] == 200
    assert rec["answer"] == body["outputs"]["answer"]
    assert json.loads(rec["citations"])[0]["chunk_id"] == body["citations"][0]["chunk_id"]
    assert json.loads(rec["indexes"]) == [{"node": "retrieve", "ref": "mini@latest", "name": "mini", "version": "v0001"}]
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (body["tokens"]["prompt"], body["tokens"]["completion"])
    assert rec["cost_usd"] == pytest.approx(body["cost_usd"]) and rec["cost_usd"] > 0
    assert rec["latency_ms"] >= rec["retrieval_ms"] > 0 and rec["llm_ms"] > 0
    chat_rec = rows[chat["id"].removeprefix("chatcmpl-")]
    assert chat_rec["route"] == "/v1/chat/completions" and chat_rec["question"] == ROSES and chat_rec["model"] == "qa"

    fb = httpx.post(f"{server}/feedback", headers=H, json={"request_id": body["request_id"], "rating": "down",
                                                             "comment": "wrong part", "correct_source": "manuals/pump.pdf"})
    assert fb.status_code == 201 and fb.json()["rating"] == "down"
    assert httpx.post(f"{server}/feedback", headers=H, json={"request_id": chat["id"], "rating": "up"}).status_code == 201
    missing = httpx.post(f"{server}/feedback", headers=H, json={"request_id": "feedfacefeedface", "rating": "down"})
    assert missing.status_code == 404 and "unknown request_id 'feedfacefeedface'" in missing.json()["detail"]
    assert httpx.post(f"{server}/feedback", headers=H,
                      json={"request_id": body["request_id"], "rating": "meh"}).status_code == 422

    out = tmp_path / "gate.jsonl"
    summary = export_feedback(tmp_path / "logs" / "feedback.sqlite", out, since="2000-01-01")
    assert summary == {"written": 2, "skipped_no_question": 0, "skipped_no_doc": 0, "out": str(out), "by_arm": {"-": 2}}
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["question"], x["doc"], x["rating"]) for x in lines] == [(PUMP, "pump.pdf", "down"),
                                                                      (ROSES, "roses.md", "up")]
    assert [q.question for q in load_questions(out)] == [PUMP, ROSES]  # the promote gate reads it
    assert parse_label(lines[0], "gate.jsonl:1").docs == ("pump.pdf",)  # and so does flow eval
    down = export_feedback(tmp_path / "logs" / "feedback.sqlite", tmp_path / "down.jsonl", rating="down")
    assert down["written"] == 1
    assert export_feedback(tmp_path / "logs" / "feedback.sqlite", tmp_path / "later.jsonl",
                           since="2999-01-01")["written"] == 0


def test_capture_off_keeps_text_out_of_the_log(runner: FlowRunner, tmp_path: Path) -> None:
    with serving(create_app(runner, api_key=KEY, config=_config(tmp_path, capture_text=False))) as url:
        rid = httpx.post(f"{url}/score", json={"question": PUMP}, headers=H).json()["request_id"]
        assert httpx.post(f"{url}/feedback", headers=H, json={"request_id": rid, "rating": "down",
                                                               "correct_source": "pump.pdf"}).status_code == 201
    (row,) = logged_rows(tmp_path / "logs" / "requests.sqlite", 1)
    assert (row["question"], row["answer"], row["citations"]) == (None, None, None) and row["prompt_tokens"] > 0
    summary = export_feedback(tmp_path / "logs" / "feedback.sqlite", tmp_path / "q.jsonl")
    assert summary["written"] == 0 and summary["skipped_no_question"] == 1


def test_request_log_rotates_and_feedback_finds_rotated_requests(tmp_path: Path) -> None:
    log = RequestLog(RequestLogConfig(path=str(tmp_path / "requests.sqlite"), max_mb=0.05, keep=2))
    for i in range(2000):
        log.append(RequestRecord(f"r{i:04d}", "/score", "qa", None, "qa", [], "q" * 200, "a" * 200, [], 200))
    log.flush()
    rotated = log.rotated()
    assert 1 <= len(rotated) <= 2 and (tmp_path / "requests.sqlite").exists()
    oldest_kept = sqlite3.connect(rotated[-1]).execute("SELECT min(request_id) FROM requests").fetchone()[0]
    assert log.add_feedback(oldest_kept, "up")["request_id"] == oldest_kept
    assert log.find("r1999") is not None and log.find("r2000") is None
    log.close()


def test_metrics_count_routes_tokens_cost_errors_and_index_version(server: str) -> None:
    httpx.post(f"{server}/score", json={"question": PUMP}, headers=H)
    httpx.post(f"{server}/score", json={"question": ""}, headers=H)
    httpx.post(f"{server}/v1/chat/completions", headers=H, json={"model": "qa", "n": 3,
                                                                 "messages": [{"role": "user", "content": "x"}]})
    httpx.get(f"{server}/metadata")
    text = httpx.get(f"{server}/metrics", headers=H).text
    from prometheus_client.parser import text_string_to_metric_families

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}

    def get(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert get("ragline_requests_total", route="/score", model="qa", status="200") == 1
    assert get("ragline_requests_total", route="/score", model="-", status="422") == 1
    assert get("ragline_requests_total", route="/metadata", model="-", status="401") == 1
    assert get("ragline_request_latency_seconds_count", route="/score", model="qa") == 1
    assert get("ragline_retrieval_latency_seconds_count", model="qa") == 1
    assert get("ragline_llm_latency_seconds_count", model="qa", provider="extractive") == 1
    prompt = get("ragline_tokens_total", model="qa", llm="extractive", direction="prompt")
    completion = get("ragline_tokens_total", model="qa", llm="extractive", direction="completion")
    assert prompt > 0 and completion > 0
    assert get("ragline_cost_usd_total", model="qa", llm="extractive") == pytest.approx((prompt + 4 * completion) / 1e6)
    assert get("ragline_errors_total", route="/v1/chat/completions", model="-", type="InvalidRequest") == 1
    assert get("ragline_errors_total", route="/metadata", model="-", type="Unauthorized") == 1
    assert get("ragline_index_version_info", model="qa", node="retrieve", index="mini", version="v0001") == 1


def test_negative_price_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("serve:\n  prices:\n    gpt-4o: {prompt_per_mtok: -0.5}\n")
    with pytest.raises(ConfigError, match=r"params.yaml: serve.prices.gpt-4o.prompt_per_mtok: .*greater than or equal to 0"):
        load_serve_config(p)
    p.write_text("serve:\n  request_log: {capture: false}\n")
    with pytest.raises(ConfigError, match=r"serve.request_log.capture: Extra inputs"):
        load_serve_config(p)


def test_cli_refuses_to_start_without_a_key(mini_flow: Path, mini_registry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ragline.pipelines.cli import app

    monkeypatch.delenv("RAGLINE_API_KEY", raising=False)
    r = CliRunner().invoke(app, ["flow", "serve", str(mini_flow), "--index-root", str(mini_registry)])
    assert r.exit_code == 1
    assert "environment variable RAGLINE_API_KEY is not set" in r.output and "--no-auth" in r.output
    assert "Traceback" not in r.output


def test_cli_no_auth_warns_and_serves_openly(mini_flow: Path, mini_registry: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAGLINE_API_KEY"}
    with serve_cli([str(mini_flow), "--index-root", str(mini_registry), "--no-auth"], tmp_path, env) as server:
        assert httpx.post(f"{server.url}/score", json={"question": PUMP}).status_code == 200
        assert httpx.get(f"{server.url}/openapi.json").status_code == 200
    stderr = server.stderr
    assert "warning: --no-auth: no API key is checked" in stderr and "API key not required" in stderr
    assert (tmp_path / "logs" / "requests.sqlite").is_file()  # params serve: defaults (no params.yaml here)


def test_cli_feedback_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ragline.pipelines.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("serve:\n  request_log: {path: state/requests.sqlite}\n")
    log = RequestLog(load_serve_config(tmp_path / "params.yaml").request_log)
    log.append(RequestRecord("a1", "/score", "qa", None, "qa", [], PUMP, "x [1]",
                             [{"id": 1, "chunk_id": "c", "source": "manuals/pump.pdf"}], 200))
    log.append(RequestRecord("a2", "/score", "qa", None, "qa", [], ROSES, "y", [], 200))
    log.add_feedback("a1", "up")
    log.add_feedback("a2", "down")
    log.close()
    r = CliRunner().invoke(app, ["feedback", "export", "--since", "2020-01-01", "--rating", "up", "--out", "up.jsonl"])
    assert r.exit_code == 0, r.output
    assert "wrote 1 question(s) to up.jsonl" in r.output
    assert json.loads((tmp_path / "up.jsonl").read_text())["doc"] == "pump.pdf"
    r = CliRunner().invoke(app, ["feedback", "export", "--rating", "down"])
    assert r.exit_code == 0 and "skipped 1 without a known document" in r.output
    r = CliRunner().invoke(app, ["feedback", "export", "--since", "yesterday"])
    assert r.exit_code == 1 and "--since 'yesterday': use an ISO date" in r.output


def test_traces_span_tree_per_request(runner: FlowRunner) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = ServeConfig.model_validate({"request_log": {"enabled": False},
                                         "prices": {"extractive": {"prompt_per_mtok": 1.0}}})
    with serving(create_app(runner, api_key=KEY, config=config, tracer_provider=provider)) as url:
        body = httpx.post(f"{url}/score", json={"question": PUMP}, headers=H).json()
        httpx.post(f"{url}/v1/chat/completions", headers=H, json={"model": "qa", "messages": [
            {"role": "user", "content": ROSES}]})
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.name == "ragline.request"]
    assert [r.attributes["ragline.route"] for r in roots] == ["/score", "/v1/chat/completions"]
    root = roots[0]
    assert root.attributes["ragline.request_id"] == body["request_id"] and root.attributes["ragline.flow"] == "qa"
    assert list(root.attributes["ragline.index_versions"]) == ["mini@v0001"]
    assert root.attributes["ragline.tokens.prompt"] == body["tokens"]["prompt"]
    assert root.attributes["ragline.cost_usd"] == pytest.approx(body["cost_usd"])
    children = sorted((s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id),
                      key=lambda s: s.start_time)
    assert [c.attributes["ragline.node"] for c in children] == ["retrieve", "prompt", "answer", "sources"]
    assert all(c.context.trace_id == root.context.trace_id for c in children)
    retrieve = children[0].attributes
    assert (retrieve["ragline.k"], retrieve["ragline.mode"], retrieve["ragline.index_version"]) == (5, "hybrid", "v0001")
    assert children[2].attributes["ragline.tokens.completion"] == body["tokens"]["completion"]
    assert root.start_time <= children[0].start_time and children[-1].end_time <= root.end_time
    assert all(a.end_time == b.start_time for a, b in zip(children, children[1:]))  # laid end to end
    assert root.status.status_code != StatusCode.ERROR


def test_traces_otlp_without_endpoint_is_a_config_error(runner: FlowRunner) -> None:
    config = ServeConfig.model_validate({"request_log": {"enabled": False}, "traces": {"exporter": "otlp"}})
    with pytest.raises(ConfigError, match="exporter otlp needs an endpoint"):
        create_app(runner, api_key=KEY, config=config)
