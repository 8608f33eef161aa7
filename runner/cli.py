"""``ragline flow``: run, batch, evaluate, compare and serve retrieval-grounded flows.

Registered in ``pipelines/cli.py`` with ``app.add_typer(flow_app, name="flow")``. Heavy
imports happen inside the commands so ``ragline --help`` stays fast. Known errors end with
one line on stderr and exit code 1; every command takes ``--json``.
"""

from __future__ import annotations

import sys

import json
from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from rich.console import Console

from rich.table import Table

from ragline.core.cli import clean_errors
from ragline.core.cli import print_json as _print_json

flow_app = typer.Typer(help="Run, batch, evaluate, compare and serve retrieval-grounded flows.", no_args_is_help=True)

out = Console()
err = Console(stderr=True)

ParamsOpt = typer.Option(Path("params.yaml"), "--params", "-p", help="Params file (its index.root is the default registry).")
IndexRootOpt = typer.Option(None, "--index-root", help="Registry folder (default: index.root of --params, else ./indexes).")
VariantOpt = typer.Option(None, "--variant", "-v", help="A variant declared in the flow's variants.")
JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts.")
QueryBackendOpt = typer.Option("auto", "--query-backend", help="Query embedding: auto (the index's own backend for "
                               "bf16/int8 vectors, else onnx), or an embed.backend name (onnx, torch, openvino, ...).")
QueryThreadsOpt = typer.Option(None, "--query-threads", min=1, max=64,
                               help="ONNX Runtime threads per query embedding (default: 2, or 1 on one core).")


def _param(params_file: Path, section: str, key: str) -> Optional[str]:
    """``section.key`` of the params file when it is a non-empty string (the file may be absent or partial)."""
    if params_file.is_file():
        try:
            data = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            data = {}
        value = (data.get(section) or {}).get(key) if isinstance(data, dict) else None
        if isinstance(value, str) and value:
            return value
    return None


def retrieval_defaults(params_file: Path) -> Any:
    """The ``retrieval:`` section of the params file (the defaults when the file or the section is absent).

    Raises:
        ConfigError: the section holds an unknown key or a bad value.
    """
    from ragline.indexers.retrieval import RetrievalConfig

    data: Any = {}
    if params_file.is_file():
        try:
            data = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            data = {}
    section = data.get("retrieval") if isinstance(data, dict) else None
    return RetrievalConfig.from_dict(section if isinstance(section, dict) else {}, str(params_file), "retrieval.")


def index_root(params_file: Path, override: Optional[Path]) -> Path:
    """The registry folder: ``--index-root``, else ``index.root`` of the params file, else ``indexes``."""
    if override is not None:
        return override
    return Path(_param(params_file, "index", "root") or "indexes")


def _prepare(flow_dir: Path, variant: Optional[str], params_file: Path, root: Optional[Path],
             query_backend: str = "auto", query_threads: Optional[int] = None, alias: Optional[str] = None) -> Any:
    from ragline.core.offline import set_offline_env
    from ragline.runner.engine import FlowRunner
    from ragline.runner.errors import FlowInputError
    from ragline.runner.nodes import QueryEmbedding
    from ragline.runner.spec import load_flow

    set_offline_env()
    from ragline.core.errors import ConfigError
    from ragline.indexers.backends import require_backend

    try:
        require_backend(query_backend, allow_auto=True)
    except ConfigError as e:
        raise FlowInputError(f"--query-backend: {e}") from e
    flow = load_flow(flow_dir, variant)
    if alias is not None:
        from ragline.runner.spec import with_alias

        flow = with_alias(flow, alias)
    query = QueryEmbedding(query_backend, query_threads, _param(params_file, "paths", "cache"))
    runner = FlowRunner(flow, index_root(params_file, root), query, retrieval=retrieval_defaults(params_file))
    runner.warm_up()
    return flow, runner


def _parse_inputs(items: list[str]) -> dict[str, Any]:
    from ragline.runner.errors import FlowInputError

    inputs: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise FlowInputError(f"--input {item!r}: use NAME=VALUE, e.g. question=\"...\"")
        inputs[name.strip()] = value
    return inputs


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@flow_app.command("validate")
@clean_errors
def validate(
    flow_dir: Path = typer.Argument(..., help="Flow folder (holding flow.yaml)."),
    variant: Optional[str] = VariantOpt,
    params_file: Path = ParamsOpt,
    root: Optional[Path] = IndexRootOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Validate a flow (and all its variants) without running it: spec, references, templates,
    functions, and every index and alias its retrieve nodes name; print its node order."""
    from ragline.runner.errors import FlowSpecError
    from ragline.runner.spec import check_indexes, load_flow

    flow = load_flow(flow_dir, variant)
    problems = check_indexes(flow, index_root(params_file, root))
    if problems:
        raise FlowSpecError("\n".join(problems))
    info = {"flow": flow.name, "variant": flow.variant, "order": list(flow.order),
            "deps": {k: list(v) for k, v in flow.deps.items()}, "variants": list(flow.spec.variants)}
    if as_json:
        _print_json(info)
        return
    out.print(f"{flow.file}: ok — {' → '.join(flow.order)}"
              + (f"; variants: {', '.join(flow.spec.variants)}" if flow.spec.variants else ""))


@flow_app.command("test")
@clean_errors
def test(
    flow_dir: Path = typer.Argument(..., help="Flow folder (holding flow.yaml)."),
    inputs: list[str] = typer.Option([], "--input", "-i", help="NAME=VALUE, repeatable."),
    variant: Optional[str] = VariantOpt,
    params_file: Path = ParamsOpt,
    root: Optional[Path] = IndexRootOpt,
    query_backend: str = QueryBackendOpt,
    query_threads: Optional[int] = QueryThreadsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run a flow once and print the answer, its citations and a per-node trace."""
    flow, runner = _prepare(flow_dir, variant, params_file, root, query_backend, query_threads)
    try:
        result = runner.run(_parse_inputs(inputs))
    finally:
        runner.close()
    if as_json:
        _print_json({**result.to_dict(), "flow": flow.name, "variant": flow.variant,
                     "indexes": [{k: i[k] for k in ("node", "ref", "name", "version")} for i in runner.indexes]})
        return
    idx = ", ".join(f"{i['name']}@{i['version']}" for i in runner.indexes) or "none"
    out.rule(f"{flow.name}{' [' + flow.variant + ']' if flow.variant else ''} · index {idx}")
    for name, value in result.outputs.items():
        if name == "citations":
            continue
        out.print(f"[bold]{name}[/]: {value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}",
                  highlight=False, soft_wrap=True)
    t = Table(title="citations")
    for col in ("n", "source", "page", "chunk_id", "chars", "quote"):
        t.add_column(col, overflow="fold")
    for c in result.citations:
        quote = " … ".join(q["text"] for q in c.get("quotes", []))
        t.add_row(str(c["id"]), str(c.get("source")), "" if c.get("page") is None else str(c["page"]),
                  c["chunk_id"][:12], f"{c.get('char_start')}-{c.get('char_end')}", _short(quote, 100))
    out.print(t)
    tr = Table(title=f"trace ({result.latency_ms:.1f} ms total)")
    for col in ("node", "type", "inputs", "output", "ms", "tokens"):
        tr.add_column(col, overflow="fold")
    for n in result.trace:
        tok = "" if not n.tokens else f"{n.tokens.get('prompt', 0)}+{n.tokens.get('completion', 0)}"
        output = f"{len(n.output)} chunks: " + ", ".join(
            f"{c['source'].rsplit('/', 1)[-1]}#{c['rank']}" for c in n.output) if n.type == "retrieve" else _short(n.output, 100)
        tr.add_row(n.node, n.type, _short(n.inputs, 80), _short(output, 120), f"{n.latency_ms:.1f}", tok)
    out.print(tr)


@flow_app.command("batch")
@clean_errors
def batch(
    flow_dir: Path = typer.Argument(..., help="Flow folder (holding flow.yaml)."),
    data: Path = typer.Option(..., "--data", "-d", help="JSONL file, one JSON object per line."),
    columns: list[str] = typer.Option([], "--column", "-c",
                                      help="INPUT=EXPR, e.g. question='${data.question}' (default: same-named fields)."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, max=64, help="Lines run concurrently (threads)."),
    variant: Optional[str] = VariantOpt,
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Parent folder of run directories."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Run folder name (default: UTC time + flow + variant)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N lines."),
    params_file: Path = ParamsOpt,
    root: Optional[Path] = IndexRootOpt,
    query_backend: str = QueryBackendOpt,
    query_threads: Optional[int] = QueryThreadsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run a flow over a JSONL file; write outputs, traces, metrics (tokens and cost, priced by serve.prices) and a copy of the flow to a run directory."""
    from ragline.core.serve_config import load_serve_config
    from ragline.runner.batch import parse_columns, run_batch

    prices = load_serve_config(params_file)
    flow, runner = _prepare(flow_dir, variant, params_file, root, query_backend, query_threads)
    try:
        summary = run_batch(flow, data, parse_columns(columns, flow), runner, runs_dir, workers, run_id, limit,
                            prices=prices)
    finally:
        runner.close()
    m = summary.metrics
    if as_json:
        _print_json(summary.to_dict())
        _fail_if_lines_failed(m, summary.run_dir)
        return
    t = Table(title=f"batch {flow.name}{' [' + flow.variant + ']' if flow.variant else ''} → {summary.run_dir}",
              show_header=False)
    t.add_row("lines ok / failed", f"{m['ok']} / {m['failed']}")
    t.add_row("wall time", f"{m['wall_s']:.2f} s")
    t.add_row("throughput", f"{m['throughput_qps']:.2f} lines/s")
    t.add_row("latency p50 / p95", f"{m['latency_ms']['p50']:.1f} / {m['latency_ms']['p95']:.1f} ms")
    t.add_row("retrieval p50 / p95", f"{m['retrieval_latency_ms']['p50']:.1f} / {m['retrieval_latency_ms']['p95']:.1f} ms")
    t.add_row("tokens prompt / completion", f"{m['tokens']['prompt']} / {m['tokens']['completion']}")
    unpriced = f" (unpriced: {', '.join(m['unpriced_models'])})" if m["unpriced_models"] else ""
    t.add_row("cost total / mean", f"${m['cost_usd']['total']:.6f} / ${m['cost_usd']['mean']:.6f}{unpriced}")
    out.print(t)
    _fail_if_lines_failed(m, summary.run_dir)


def _fail_if_lines_failed(metrics: dict, run_dir: Path) -> None:
    """Exit 1 naming how many lines failed (and one error) when any did; the run directory is kept."""
    if not metrics["failed"]:
        return
    from ragline.runner.batch import OUTPUTS_FILE, load_run

    first = ""
    try:
        first = next((r["error"] for r in load_run(run_dir)[2] if r.get("status") != "ok" and r.get("error")), "")
    except Exception:  # the summary line matters more than the example error
        first = ""
    total = metrics["failed"] + metrics["ok"]
    err.print(f"[bold red]error:[/] {metrics['failed']} of {total} line(s) failed; see status/error in "
              f"{run_dir / OUTPUTS_FILE}" + (f"; first: {first}" if first else ""), highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


@flow_app.command("eval")
@clean_errors
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory from `ragline flow batch`."),
    labels: Path = typer.Option(..., "--labels", "-l", help="JSONL labels: docs / spans / answer per line."),
    k: Optional[int] = typer.Option(None, "--k", "-k", min=1, help="Depth for ranking and span metrics (default: all retrieved)."),
    key: Optional[str] = typer.Option(None, "--key", help="Field matching labels to data lines (default: line numbers)."),
    support_threshold: float = typer.Option(0.8, "--support-threshold", min=0.0, max=1.0,
                                            help="Share of a sentence's content terms a cited chunk must contain."),
    as_json: bool = JsonOpt,
) -> None:
    """Score a run against labels: hit@k, MRR, nDCG@k, recall@k, span recall/precision/IoU, citations, groundedness, latency, tokens."""
    from ragline.runner.evaluate import EVAL_FILE, evaluate_run

    result = evaluate_run(run_dir, labels, k, key, support_threshold)
    if as_json:
        _print_json(result)
        _fail_if_nothing_scored(result, run_dir)
        return
    t = Table(title=f"eval {result['run']} (k={result['k']}, {result['scored']} scored, {result['failed']} failed)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for section in ("retrieval", "spans", "answers"):
        for name, v in result[section].items():
            if v is not None:
                t.add_row(name, _fmt(v))
    for name, p in result["latency_ms"].items():
        t.add_row(f"latency {name} p50 / p95 (ms)", f"{p['p50']:.1f} / {p['p95']:.1f}")
    t.add_row("tokens total / mean", f"{result['tokens']['total']} / {result['tokens']['mean_total']:.1f}")
    t.add_row("cost total / mean (USD)", f"{result['cost_usd']['total']:.6f} / {result['cost_usd']['mean']:.6f}")
    out.print(t)
    for problem in result["label_errors"]:
        err.print(f"warning: skipped label line: {problem}", highlight=False, soft_wrap=True)
    out.print(f"written: {run_dir / EVAL_FILE}", highlight=False)
    _fail_if_nothing_scored(result, run_dir)


def _fail_if_nothing_scored(result: dict, run_dir: Path) -> None:
    """Exit 1 when no line of the run could be scored (every line failed or had no label)."""
    if result.get("scored"):
        return
    err.print(f"[bold red]error:[/] no line of {run_dir} was scored ({result.get('failed', 0)} failed, "
              f"{result.get('labelled', 0)} labelled); metrics over zero lines mean nothing", highlight=False,
              soft_wrap=True)
    raise typer.Exit(1)


@flow_app.command("compare")
@clean_errors
def compare(
    run_a: Path = typer.Argument(..., help="First run directory (A)."),
    run_b: Path = typer.Argument(..., help="Second run directory (B)."),
    show_all: bool = typer.Option(False, "--all", help="Every metric (means, maxima, per-node p95, eval copies)."),
    as_json: bool = JsonOpt,
) -> None:
    """Print the metrics of two runs side by side with their deltas (B − A)."""
    from ragline.runner.evaluate import compare_runs

    result = compare_runs(run_a, run_b, full=show_all)
    if as_json:
        _print_json(result)
        return
    a, b = result["a"], result["b"]
    t = Table(title="compare runs")
    t.add_column("metric")
    t.add_column(f"A: {a['run_id']}", justify="right", overflow="fold")
    t.add_column(f"B: {b['run_id']}", justify="right", overflow="fold")
    t.add_column("Δ (B − A)", justify="right")
    t.add_row("variant", str(a["variant"]), str(b["variant"]), "")
    t.add_row("index", ", ".join(a["indexes"]), ", ".join(b["indexes"]), "")
    for r in result["rows"]:
        if isinstance(r["a"], (list, dict)) or isinstance(r["b"], (list, dict)):
            continue
        d = r["delta"]
        text = "" if d is None else (f"{d:+d}" if isinstance(d, int) else f"{d:+.4f}")
        delta = "" if d is None else (f"[green]{text}[/]" if d > 0 else f"[red]{text}[/]" if d < 0 else "0")
        t.add_row(r["metric"], _fmt(r["a"]), _fmt(r["b"]), delta)
    out.print(t)
    if not (a["evaluated"] and b["evaluated"]):
        err.print("note: run `ragline flow eval RUN --labels FILE` on both runs to compare quality metrics too",
                  highlight=False)


@flow_app.command("serve")
@clean_errors
def serve(
    flow_dir: Path = typer.Argument(..., help="Flow folder (holding flow.yaml)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (127.0.0.1 = this machine only)."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="TCP port."),
    variants: list[str] = typer.Option([], "--variant", "-v",
                                       help="Variant to serve too, repeatable: each is an OpenAI model FLOW:VARIANT "
                                            "(the flow as written is always model FLOW); the first answers /score."),
    api_key_env: str = typer.Option("RAGLINE_API_KEY", "--api-key-env",
                                    help="Environment variable holding the API key every route but /healthz needs."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve without an API key (every route open; warns)."),
    _require_key: bool = typer.Option(False, "--require-key", hidden=True,
                                      help="Kept for old scripts: a key is now always required unless --no-auth."),
    max_body_kb: int = typer.Option(64, "--max-body-kb", min=1, max=65536, help="Largest request body (KiB)."),
    params_file: Path = ParamsOpt,
    root: Optional[Path] = IndexRootOpt,
    query_backend: str = QueryBackendOpt,
    query_threads: Optional[int] = QueryThreadsOpt,
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
    keep_alive_s: int = typer.Option(30, "--keep-alive-s", min=1, max=3600,
                                     help="Seconds an idle client connection stays open (uvicorn's default is 5)."),
    split: Optional[str] = typer.Option(None, "--split", help="A/B or canary: ARM=WEIGHT,..., each ARM a variant or an "
                                        "alias of the flow's index, the control first (e.g. prod=90,candidate=10); "
                                        "default: serve.split.arms."),
) -> None:
    """Serve a flow: POST /score, the OpenAI API (/v1/chat/completions, /v1/models), /feedback, /metrics, /docs.

    Refuses to start without the API key variable unless --no-auth is given. Prices, the
    request log and metrics come from the params file's serve: section. With --split, requests
    for the flow's model go to one arm by a stable hash of X-Ragline-User / X-Session-Id / the
    OpenAI `user` field (random without one).
    """
    import os

    import uvicorn

    from ragline.core.errors import RaglineError
    from ragline.core.serve_config import load_serve_config
    from ragline.runner.errors import FlowInputError
    from ragline.runner.serve import create_app
    from ragline.runner.split import parse_split

    key = os.environ.get(api_key_env) or None
    if key is None and not no_auth:
        raise FlowInputError(f"environment variable {api_key_env} is not set: set it to the API key clients must "
                             "send, or pass --no-auth to serve without one")
    config = load_serve_config(params_file)
    plan = parse_split(split) if split else (parse_split(config.split.arms) if config.split.arms else None)
    runners: list[Any] = []
    arms: dict[str, Any] = {}
    app = None
    try:
        if plan is not None:
            from ragline.runner.spec import load_flow

            declared = load_flow(flow_dir).spec.variants
            for arm in plan.names:
                v, alias = (arm, None) if arm in declared else (None, arm)
                try:
                    arms[arm] = _prepare(flow_dir, v, params_file, root, query_backend, query_threads, alias)[1]
                except RaglineError as e:
                    raise FlowInputError(f"--split arm {arm!r} (not a variant, so an alias of the flow's index): "
                                         f"{e}") from e
        for v in [*dict.fromkeys(variants), *([] if plan is not None else [None])]:
            runners.append(_prepare(flow_dir, v, params_file, root, query_backend, query_threads)[1])
        app = create_app(runners, api_key=key, max_body_bytes=max_body_kb * 1024, config=config, no_auth=no_auth,
                         split=plan, arms=arms)
        service = app.state.service
        first = service.default.runner
        idx = ", ".join(f"{i['name']}@{i['version']}" for i in first.indexes) or "none"
        how = (f"split {plan.to_text()} of " if plan is not None else "")
        err.print(f"serving {how}flow {first.flow.name}{' [' + first.flow.variant + ']' if first.flow.variant else ''} "
                  f"(index {idx}) on http://{host}:{port}; models: {', '.join(service.model_ids())}; "
                  f"API key {'required' if key and not no_auth else 'not required'}", highlight=False, soft_wrap=True, markup=False)
        if no_auth:
            err.print(f"warning: --no-auth: no API key is checked; anyone who can reach {host}:{port} can call "
                      "every route", highlight=False, soft_wrap=True)
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=keep_alive_s)
    finally:
        for r in [*runners, *arms.values()]:
            r.close()
        if app is not None and app.state.service.log is not None:
            app.state.service.log.close()


mcp_app = typer.Typer(help="Serve a flow's index to MCP clients (Model Context Protocol).", no_args_is_help=True)
feedback_app = typer.Typer(help="User feedback captured by `ragline flow serve`.", no_args_is_help=True)


@mcp_app.command("serve")
@clean_errors
def mcp_serve(
    flow_dir: Path = typer.Argument(..., help="Flow folder (holding flow.yaml)."),
    transport: str = typer.Option("stdio", "--transport", "-t", help="stdio (the client starts this process) or "
                                  "http (streamable HTTP at http://HOST:PORT/mcp)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (http)."),
    port: int = typer.Option(8090, "--port", min=0, max=65535, help="TCP port (http)."),
    variant: Optional[str] = VariantOpt,
    api_key_env: str = typer.Option("RAGLINE_API_KEY", "--api-key-env",
                                    help="Environment variable holding the API key (http)."),
    no_auth: bool = typer.Option(False, "--no-auth", help="http: serve without an API key (warns)."),
    params_file: Path = ParamsOpt,
    root: Optional[Path] = IndexRootOpt,
    query_backend: str = QueryBackendOpt,
    query_threads: Optional[int] = QueryThreadsOpt,
) -> None:
    """Expose tools search(query, k, mode, filters) and answer(question) over the flow's published index."""
    import os

    from ragline.core.serve_config import load_serve_config
    from ragline.runner.errors import FlowInputError
    from ragline.runner.mcp_server import build_mcp_server, http_app

    if transport not in ("stdio", "http"):
        raise FlowInputError(f"--transport {transport!r}: use stdio or http")
    key = os.environ.get(api_key_env) or None
    if transport == "http" and key is None and not no_auth:
        raise FlowInputError(f"environment variable {api_key_env} is not set: set it to the API key clients must "
                             "send, or pass --no-auth to serve without one")
    config = load_serve_config(params_file)
    flow, runner = _prepare(flow_dir, variant, params_file, root, query_backend, query_threads)
    server = build_mcp_server(runner, config)
    try:
        if transport == "stdio":
            server.run("stdio")
            return
        import uvicorn

        idx = ", ".join(f"{i['name']}@{i['version']}" for i in runner.indexes) or "none"
        err.print(f"MCP server for flow {flow.name} (index {idx}) on http://{host}:{port}/mcp; API key "
                  f"{'not required' if no_auth else 'required'}", highlight=False, soft_wrap=True)
        if no_auth:
            err.print(f"warning: --no-auth: anyone who can reach {host}:{port} can call the tools", highlight=False)
        uvicorn.run(http_app(server, None if no_auth else key, host), host=host, port=port, log_level="warning",
                    timeout_graceful_shutdown=5)
    finally:
        runner.close()
        if server.ragline_service.log is not None:
            server.ragline_service.log.close()


@feedback_app.command("export")
@clean_errors
def feedback_export(
    since: Optional[str] = typer.Option(None, "--since", help="Only feedback at or after this UTC date/time "
                                        "(ISO, e.g. 2026-12-01)."),
    rating: Optional[str] = typer.Option(None, "--rating", help="Only up or only down."),
    arm: Optional[str] = typer.Option(None, "--arm", help="Only feedback on answers of this split arm (flow serve --split)."),
    out_file: str = typer.Option("-", "--out", "-o", help="JSONL file to write (- = stdout)."),
    params_file: Path = ParamsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Write feedback as a JSONL question file ({question, doc, ...}) for the promote gate and `flow eval`."""
    import os
    import tempfile

    from ragline.core.serve_config import load_serve_config
    from ragline.runner.requestlog import export_feedback

    cfg = load_serve_config(params_file)
    feedback = Path(cfg.request_log.path).with_name("feedback.sqlite")
    if out_file == "-":
        fd, tmp = tempfile.mkstemp(suffix=".jsonl")
        os.close(fd)
        try:
            summary = export_feedback(feedback, tmp, since, rating, arm)
            sys.stdout.write(Path(tmp).read_text(encoding="utf-8"))
        finally:
            Path(tmp).unlink(missing_ok=True)
        summary["out"] = "-"
    else:
        summary = export_feedback(feedback, out_file, since, rating, arm)
    skipped = summary["skipped_no_question"] + summary["skipped_no_doc"]
    if as_json:  # the summary goes to stdout unless the questions do
        (err.print(json.dumps(summary), highlight=False, soft_wrap=True) if out_file == "-" else _print_json(summary))
        return
    note = (f"; skipped {summary['skipped_no_doc']} without a known document (no correct_source) and "
            f"{summary['skipped_no_question']} without a captured question") if skipped else ""
    arms = [a for a in summary["by_arm"] if a != "-"]
    per_arm = (" (" + ", ".join(f"{a}: {summary['by_arm'][a]}" for a in arms) + ")") if arms else ""
    err.print(f"wrote {summary['written']} question(s){per_arm} to {summary['out']}{note}", highlight=False,
              soft_wrap=True)
