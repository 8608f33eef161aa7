"""Load benchmark of `ragline flow serve`: /score and /v1/chat/completions (plain and streaming).

Two servers run side by side as subprocesses (`ragline flow serve`, the default flows/qa over
an index of data/sample built with the deterministic hashing embedder, so the flow itself is
cheap and serving overhead shows): one with metrics and the request log on (the defaults),
one with both off. A client in this process sends, for each endpoint kind, ``--requests``
requests at concurrency ``--concurrency`` over loopback to each server; both servers are
loaded at the same time, round after round, so both see the same machine load (this
machine is shared: absolute numbers move with it, the on/off comparison much less). Printed per endpoint and server:
non-2xx count, p50 / p99 latency (ms, until the last byte), requests/s, and for streams the
time to the first content chunk; then the overhead of metrics + request log as
``p50(on) / p50(off) - 1`` (target <= 5 %). Under load on a shared machine that ratio is
noisy (p50 at concurrency 50 is mostly queueing), so the script also times the work that
"on" adds to a request directly, in this process: one request-log append (SQLite, WAL) plus
the metric updates of one run and one request, averaged over 2,000 calls, as a share of the
single-request p50 of /score (one request at a time, measured against the "off" server).

Run:  nice -n 10 .venv/bin/python benchmarks/serve_load.py [--requests 2000] [--concurrency 50] [--rounds 4]
                                                          [--index-root DIR --index-ref NAME@ALIAS]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
KEY = "bench-key"
KINDS = ("score", "chat", "chat_stream")


def build_sample_index(root: Path) -> None:
    """Index ``sample`` of data/sample (token chunks, hashing embedder) under ``root``."""
    from ragline.indexers.embedders import HashingEmbedder, info_of
    from ragline.indexers.registry import IndexRegistry
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.config import LoadConfig, Params
    from ragline.pipelines.embed import embed_chunks
    from ragline.pipelines.load import discover_files, documents_to_table, load_documents, quarantine_to_table
    from ragline.pipelines.publish import publish_index

    params = Params.from_dict({"embed": {"model": "hashing"}, "index": {"name": "sample", "root": str(root)},
                               "load": {"workers": 1}})
    docs, _ = load_documents(discover_files([REPO / "data" / "sample"]), LoadConfig(workers=1))
    chunks, _ = chunk_documents(docs, params.chunk)
    embedder = HashingEmbedder()
    vectors, _ = embed_chunks(chunks, embedder, None)
    publish_index(IndexRegistry(root), params, documents_to_table(docs), chunks, vectors, quarantine_to_table([]),
                  info_of(embedder))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(work: Path, name: str, flow: Path, root: Path, on: bool) -> tuple[subprocess.Popen, str]:
    """`ragline flow serve` with metrics + request log on or off; returns (process, base URL)."""
    folder = work / name
    folder.mkdir()
    (folder / "params.yaml").write_text(
        f"index: {{root: {root}}}\nserve:\n  metrics: {str(on).lower()}\n"
        f"  request_log: {{enabled: {str(on).lower()}, path: {folder / 'logs' / 'requests.sqlite'}}}\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ragline.pipelines.cli", "flow", "serve", str(flow), "--port",
                             str(port), "--params", str(folder / "params.yaml"), "--log-level", "error"],
                            cwd=folder, env={**os.environ, "RAGLINE_API_KEY": KEY},
                            stdout=subprocess.DEVNULL, stderr=(folder / "server.log").open("w"), text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server {name} did not start: {(folder / 'server.log').read_text()[-2000:]}")
        time.sleep(0.2)


async def run_round(url: str, kind: str, questions: list[str], n: int, concurrency: int, offset: int) -> dict:
    """``n`` requests of one kind; returns statuses, latencies (ms), first-chunk times (ms), wall (s)."""
    sem = asyncio.Semaphore(concurrency)
    statuses: list[int] = []
    lat: list[float] = []
    first: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, headers=headers) as client:
        async def one(i: int) -> None:
            q = questions[(offset + i) % len(questions)]
            async with sem:
                t0 = time.perf_counter()
                try:
                    await request(q, t0)
                except httpx.TransportError as e:  # counted as a failure, with its kind
                    statuses.append(f"{type(e).__name__}")  # type: ignore[arg-type]
                lat.append((time.perf_counter() - t0) * 1000)

        async def request(q: str, t0: float) -> None:
            if kind == "score":
                r = await client.post("/score", json={"question": q})
                statuses.append(r.status_code)
            elif kind == "chat":
                r = await client.post("/v1/chat/completions",
                                      json={"model": "qa", "messages": [{"role": "user", "content": q}]})
                statuses.append(r.status_code)
            else:
                body = {"model": "qa", "stream": True, "messages": [{"role": "user", "content": q}]}
                async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    got_first = False
                    async for line in r.aiter_lines():
                        if not got_first and line.startswith("data:") and '"content": "' in line \
                                and '"content": ""' not in line:
                            first.append((time.perf_counter() - t0) * 1000)
                            got_first = True
                    statuses.append(r.status_code if got_first else 599)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    return {"statuses": statuses, "lat": lat, "first": first, "wall": wall}


def direct_cost_ms(work: Path, root: Path, flow: Path, n: int = 2000) -> float:
    """Mean ms per request of what metrics + request log add (log append + metric updates)."""
    from ragline.runner.accounting import usage_of
    from ragline.core.serve_config import ServeConfig
    from ragline.runner.engine import FlowRunner
    from ragline.runner.metrics import ServeMetrics
    from ragline.runner.requestlog import RequestLog
    from ragline.runner.serve import Service
    from ragline.runner.spec import load_flow

    config = ServeConfig.model_validate({"request_log": {"path": str(work / "direct" / "requests.sqlite")}})
    runner = FlowRunner(load_flow(flow), root)
    result = runner.run({"question": "How many days does a worker bee need to develop from the egg to an adult?"})
    metrics, log = ServeMetrics(), RequestLog(config.request_log)
    service = Service([runner], config, metrics, log)
    served = service.default
    t0 = time.perf_counter()
    for i in range(n):
        usage = usage_of(result.trace, config)
        metrics.observe_run(served.model, result.trace, config)
        metrics.child(metrics.requests, "/score", served.model, "200").inc()
        metrics.child(metrics.latency, "/score", served.model).observe(0.01)
        log.append(service.record(served, result.inputs, "/score", f"direct-{i}", result, result.trace, usage, None,
                                  10.0, False))
    ms = (time.perf_counter() - t0) * 1000 / n
    log.close()
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per endpoint kind and server")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=10, help="rounds the requests are split into")
    ap.add_argument("--index-root", type=Path, default=None, help="registry to serve (default: a fresh sample index)")
    ap.add_argument("--index-ref", default="sample@latest", help="index of the flow's retrieve node")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args()

    questions = [json.loads(x)["question"] for x in (REPO / "data" / "sample-questions.jsonl").read_text().splitlines()
                 if x.strip()]
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        work = Path(tmp)
        root = args.index_root
        if root is None:
            root = work / "indexes"
            build_sample_index(root)
        flow = work / "flow"
        import shutil

        shutil.copytree(REPO / "flows" / "qa", flow, ignore=shutil.ignore_patterns("__pycache__"))
        f = flow / "flow.yaml"
        f.write_text(f.read_text().replace("index: sample@latest", f"index: {args.index_ref}"))
        servers = {"on": start_server(work, "on", flow, root.resolve(), True),
                   "off": start_server(work, "off", flow, root.resolve(), False)}
        try:
            per_round = max(1, args.requests // args.rounds)
            results: dict = {(k, s): {"statuses": [], "lat": [], "first": [], "wall": 0.0}
                             for k in KINDS for s in servers}
            for kind in KINDS:  # warm both servers up
                for _, url in servers.values():
                    asyncio.run(run_round(url, kind, questions, 50, args.concurrency, 0))
            for rnd in range(args.rounds):
                for kind in KINDS:  # both servers at once: the same machine load for on and off
                    async def both() -> list:
                        return await asyncio.gather(*(run_round(servers[s][1], kind, questions, per_round,
                                                                args.concurrency, rnd * per_round) for s in ("on", "off")))
                    for s, r in zip(("on", "off"), asyncio.run(both())):
                        acc = results[(kind, s)]
                        for key in ("statuses", "lat", "first"):
                            acc[key] += r[key]
                        acc["wall"] += r["wall"]
            single = []
            with httpx.Client(base_url=servers["off"][1], headers={"X-API-Key": KEY}) as c:
                for i in range(200):
                    t0 = time.perf_counter()
                    c.post("/score", json={"question": questions[i % len(questions)]})
                    single.append((time.perf_counter() - t0) * 1000)
            metrics_text = httpx.get(f"{servers['on'][1]}/metrics", headers={"X-API-Key": KEY}).text
        finally:
            for proc, _ in servers.values():
                proc.send_signal(signal.SIGINT)
            for proc, _ in servers.values():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        direct = direct_cost_ms(work, root, flow)
        for s in servers:
            tail = (work / s / "server.log").read_text()[-3000:]
            if "Traceback" in tail or "ERROR" in tail:
                print(f"server {s} log (tail):\n{tail}", file=sys.stderr)
        logged = 0
        import sqlite3

        db = work / "on" / "logs" / "requests.sqlite"
        if db.exists():
            logged = sqlite3.connect(db).execute("SELECT count(*) FROM requests").fetchone()[0]

    out = {}
    print(f"serve load: {per_round * args.rounds} requests per endpoint and server, concurrency {args.concurrency}, "
          f"{args.rounds} rounds, both servers loaded at once (on = metrics + request log, off = both off)")
    print(f"{'endpoint':<14}{'server':<7}{'non-2xx':>8}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}{'first p50':>11}")
    for kind in KINDS:
        for s in ("on", "off"):
            r = results[(kind, s)]
            bad = sum(1 for x in r["statuses"] if not (isinstance(x, int) and 200 <= x < 300))
            errors = sorted({str(x) for x in r["statuses"] if not isinstance(x, int) or not 200 <= x < 300})
            p50, p99 = float(np.percentile(r["lat"], 50)), float(np.percentile(r["lat"], 99))
            rps = len(r["lat"]) / r["wall"]
            fp50 = float(np.percentile(r["first"], 50)) if r["first"] else None
            out[f"{kind}/{s}"] = {"n": len(r["lat"]), "non_2xx": bad, "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
                                  "rps": round(rps, 1), "first_chunk_p50_ms": None if fp50 is None else round(fp50, 2),
                                  "failures": errors}
            print(f"{kind:<14}{s:<7}{bad:>8}{p50:>9.1f}{p99:>9.1f}{rps:>8.1f}"
                  f"{'' if fp50 is None else f'{fp50:.1f}':>11}")
    print("overhead of metrics + request log (p50 on / p50 off - 1; target <= 5 %):")
    for kind in KINDS:
        on, off = out[f"{kind}/on"]["p50_ms"], out[f"{kind}/off"]["p50_ms"]
        out[f"{kind}/overhead"] = round(on / off - 1, 4)
        print(f"  {kind:<12} {100 * (on / off - 1):+.1f} %   (throughput {out[f'{kind}/on']['rps'] / out[f'{kind}/off']['rps'] - 1:+.1%})")
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
                  if line.startswith("ragline_requests_total{") and 'status="200"' in line
                  and ('route="/score"' in line or 'route="/v1/chat/completions"' in line))
    single_p50 = float(np.percentile(single, 50))
    print(f"direct cost of metrics + request log: {direct:.3f} ms per request = {100 * direct / single_p50:.1f} % "
          f"of the single-request /score p50 ({single_p50:.1f} ms, one request at a time)")
    out["direct_cost_ms"] = round(direct, 4)
    out["single_score_p50_ms"] = round(single_p50, 2)
    print(f"server 'on' counted {counted:.0f} 200s in /metrics and logged {logged} requests")
    out["on_counted_200"] = counted
    out["on_logged"] = logged
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
