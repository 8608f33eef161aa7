"""Run telemetry of ingest and refresh: a metrics file per run (JSON + Prometheus text), a push to
a real Prometheus Pushgateway (Debian's ``prometheus-pushgateway``; a loopback recorder when the
binary is absent), and OpenTelemetry spans per stage (in-memory exporter)."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragline.core.hashing import sha256_file
from ragline.indexers.registry import IndexRegistry
from tests.conftest import write_params
from tests.refresh.conftest import cli_json, params_here

PUSHGATEWAY = shutil.which("prometheus-pushgateway")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """A Pushgateway on loopback: ``url`` to push to, :meth:`metrics` what it holds now."""

    def __init__(self, url: str, recorded: list[str] | None = None) -> None:
        self.url = url
        self.recorded = recorded
        self.real = recorded is None

    def metrics(self) -> str:
        if self.recorded is None:
            return httpx.get(f"{self.url}/metrics", timeout=10).text
        return "\n".join(self.recorded)


@pytest.fixture()
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    """The real ``prometheus-pushgateway`` (apt package) on a free port; without it, a loopback
    HTTP server recording the pushed bodies (the same text exposition)."""
    port = _free_port()
    if PUSHGATEWAY:
        proc = subprocess.Popen([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}", "--log.level=error"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"pushgateway did not start: {proc.stderr.read() if proc.stderr else ''}")
                time.sleep(0.1)
            yield Gateway(url)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return
    recorded: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 - push_to_gateway uses PUT
            recorded.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", port), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Gateway(f"http://127.0.0.1:{port}", recorded)
    finally:
        server.shutdown()
        server.server_close()


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of the one sample ``name`` whose labels include ``labels``."""
    found = [s.value for fam in text_string_to_metric_families(text) for s in fam.samples
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


@pytest.fixture()
def spans(monkeypatch: pytest.MonkeyPatch):
    """An in-memory exporter put where ``telemetry.traces`` builds its provider (``console`` is
    asked for, so the run reaches the provider factory)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ragline.core import telemetry

    class KeptExporter(InMemorySpanExporter):
        def shutdown(self) -> None:  # each run shuts its provider down; keep collecting across runs
            pass

    exporter = KeptExporter()
    real = telemetry.tracer_provider

    def provider(config, section: str = "serve.traces", console_stream=None):
        assert section == "telemetry.traces" and real(config, section, console_stream) is not None
        p = TracerProvider()
        p.add_span_processor(SimpleSpanProcessor(exporter))
        return p

    monkeypatch.setattr(telemetry, "tracer_provider", provider)
    return exporter


def test_ingest_and_refresh_write_metrics_push_them_and_trace_their_stages(
        light_workspace: Path, prefect_harness, gateway: Gateway, spans) -> None:
    write_params(light_workspace, telemetry={"metrics_dir": "logs/runs", "pushgateway": gateway.url, "job": "rl-test",
                                             "traces": {"exporter": "console"}})
    ingest = cli_json("ingest", "data/sample")
    tele = ingest["telemetry"]
    assert tele["pushed"] and tele["push_error"] is None
    figures = json.loads(Path(tele["metrics_file"]).read_text())
    assert figures["kind"] == "ingest" and figures["index"] == "sample" and figures["version"] == "v0001"
    assert (figures["documents"], figures["chunks"]) == (ingest["documents"], ingest["chunks"])
    assert figures["cache_hits"] == ingest["cache_hits"] and figures["computed"] == ingest["embedded"]
    assert figures["stage_seconds"] == ingest["stage_seconds"]
    # the ingest streams load, chunk and embed in one stage; their overlapping parts are reported beside it
    # (before-flow: how long the stream ran before the flow, while Prefect's API started; issue 16)
    overlapped = {f"{part} (overlapped)" for part in ("before-flow", "load", "curate", "chunk", "load-model", "embed",
                                                      "embed-idle", "curate-duplicates")}
    assert set(figures["stage_seconds"]) == {"discover", "load-chunk-embed", "curate", "publish"} | overlapped
    manifest = IndexRegistry(params_here().index.root).version_dir("sample", "v0001") / "manifest.json"
    assert figures["manifest_sha256"] == sha256_file(manifest)
    prom = Path(tele["metrics_file"]).with_suffix(".prom").read_text()
    lab = {"kind": "ingest", "index": "sample"}
    assert _sample(prom, "ragline_run_documents", **lab) == ingest["documents"]
    assert _sample(prom, "ragline_run_stage_seconds", stage="embed (overlapped)", **lab) == \
        ingest["stage_seconds"]["embed (overlapped)"]
    pushed = gateway.metrics()
    assert _sample(pushed, "ragline_run_chunks", **lab) == ingest["chunks"]
    if gateway.real:  # the job and grouping key became labels of the pushed group
        assert _sample(pushed, "ragline_run_chunks", job="rl-test", **lab) == ingest["chunks"]

    finished = spans.get_finished_spans()
    run = [s for s in finished if s.name == "ragline.ingest"]
    assert len(run) == 1
    stages = [s for s in finished if s.name == "ragline.stage" and s.parent and s.parent.span_id == run[0].context.span_id]
    assert [s.attributes["ragline.stage"] for s in stages] == [k for k in ingest["stage_seconds"] if k not in overlapped]
    for s in (run[0], *stages):
        assert s.attributes["ragline.index"] == "sample" and s.attributes["ragline.version"] == "v0001"
        assert s.attributes["ragline.manifest_sha256"] == figures["manifest_sha256"]
        assert (s.attributes["ragline.documents"], s.attributes["ragline.chunks"]) == (ingest["documents"],
                                                                                         ingest["chunks"])
    assert all(run[0].start_time <= s.start_time <= s.end_time <= run[0].end_time for s in stages)

    (light_workspace / "data" / "sample" / "new-note.md").write_text("# Swarms\n\nA swarm leaves with the old queen.\n")
    refresh = cli_json("refresh")
    rt = refresh["telemetry"]
    assert rt["kind"] == "refresh" and rt["version"] == "v0002" and rt["pushed"]
    assert refresh["embed_backend"] == ingest["embed_backend"] != "auto"  # auto resolved: the parent's backend
    assert rt["cache_hits"] == refresh["embedded_chunks"] - refresh["computed"]
    assert rt["added"] == 1 and rt["carried_chunks"] == refresh["carried_chunks"]
    pushed = gateway.metrics()
    assert _sample(pushed, "ragline_run_documents", kind="refresh", index="sample") == refresh["documents"]
    if gateway.real:  # both groups are kept (grouping key kind + index)
        assert _sample(pushed, "ragline_run_documents", kind="ingest", index="sample") == ingest["documents"]
    assert len(list(Path("logs/runs").glob("*.json"))) == 2 and len(list(Path("logs/runs").glob("*.prom"))) == 2
    assert [s.attributes["ragline.version"] for s in spans.get_finished_spans() if s.name == "ragline.refresh"] == ["v0002"]


def test_a_failed_push_is_a_warning_and_the_run_still_publishes(light_workspace: Path, prefect_harness) -> None:
    write_params(light_workspace, telemetry={"pushgateway": f"http://127.0.0.1:{_free_port()}", "push_timeout_s": 2})
    out = cli_json("ingest", "data/sample")
    assert out["version"] == "v0001" and not out["telemetry"]["pushed"]
    assert "push to http://127.0.0.1:" in out["telemetry"]["push_error"]
    assert Path(out["telemetry"]["metrics_file"]).is_file()  # logs/runs by default
