"""Batch runs: a flow over every line of a JSONL file, into a self-describing run directory.

Layout of ``<runs_dir>/<run_id>/``:

- ``outputs.jsonl``: one record per data line, in file order: ``line``, ``id``, ``status``
  (``ok`` | ``failed``), ``error``, ``data``, ``inputs``, ``outputs``, ``citations``,
  ``retrieved`` (ranked chunks of the last retrieve node), ``latency_ms``,
  ``node_latency_ms``, ``tokens``, ``cost_usd`` (priced by ``serve.prices``, 0 when unpriced).
- ``traces.jsonl``: ``{"line", "id", "trace": [per-node trace]}`` per data line.
- ``metrics.json``: counts, wall time, throughput, latency percentiles (run and per node), token
  totals, and ``cost_usd`` (total and mean per line) with ``unpriced_models`` (llm models without
  a ``serve.prices`` entry, counted as 0).
- ``run.json``: flow, variant, data file and its sha256, column mapping, workers, times.
- ``index.json`` and ``index/<name>-<version>.manifest.json``: the index versions searched.
- ``flow/``: a copy of the flow folder; ``flow.resolved.json``: the variant-applied spec.

A line that does not parse, lacks a mapped field or fails in a node is recorded as
``failed`` with its error; the other lines go on.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ragline.core.hashing import sha256_file
from ragline.core.serve_config import ServeConfig
from ragline.runner.accounting import usage_of
from ragline.runner.engine import FlowRunner
from ragline.runner.errors import DataError, FlowError, FlowInputError, NodeError
from ragline.runner.spec import Flow, follow, iter_refs, resolve_value

OUTPUTS_FILE = "outputs.jsonl"
TRACES_FILE = "traces.jsonl"
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"
INDEX_FILE = "index.json"


@dataclass(frozen=True, slots=True)
class DataLine:
    """One line of a JSONL data file.

    Attributes:
        line: 1-based line number.
        data: the parsed object, or ``None`` when the line is not a JSON object.
        error: why the line is unusable (``file:line: ...``), else ``None``.
    """

    line: int
    data: dict | None
    error: str | None = None


def read_jsonl(path: str | Path) -> Iterator[DataLine]:
    """Parse a JSONL file line by line; blank lines are skipped, bad lines carry an error.

    Raises:
        DataError: the file does not exist.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such data file")
    with open(p, encoding="utf-8") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                yield DataLine(n, None, f"{p}:{n}: not valid JSON: {e.msg} (column {e.colno})")
                continue
            if not isinstance(obj, dict):
                yield DataLine(n, None, f"{p}:{n}: a data line must be a JSON object, got {type(obj).__name__}")
                continue
            yield DataLine(n, obj)


def parse_columns(items: Sequence[str], flow: Flow) -> dict[str, str]:
    """Parse ``--column NAME=EXPR`` options (EXPR: ``${data.FIELD}`` or a literal).

    Without options, every flow input maps to the data field of the same name. An input the
    flow declares with a ``default`` is mapped only on lines that have the field (see
    :func:`run_batch`); a required input whose field is missing fails that line.

    Raises:
        FlowInputError: malformed option, unknown input name or bad reference (names the option).
    """
    if not items:
        return {name: "${data." + name + "}" for name in flow.spec.inputs}
    cols: dict[str, str] = {}
    for item in items:
        name, sep, expr = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise FlowInputError(f"--column {item!r}: use NAME=EXPR, e.g. question='${{data.question}}'")
        if name not in flow.spec.inputs:
            raise FlowInputError(f"--column {item!r}: flow {flow.name!r} has no input {name!r} "
                                 f"(inputs: {', '.join(flow.spec.inputs) or 'none'})")
        try:
            refs = list(iter_refs(expr, allow_data=True))
        except ValueError as e:
            raise FlowInputError(f"--column {item!r}: {e}") from e
        bad = [r.text for r in refs if r.kind != "data"]
        if bad:
            raise FlowInputError(f"--column {item!r}: only ${{data.FIELD}} references are allowed here, got {', '.join(bad)}")
        cols[name] = expr
    return cols


def percentiles(values: Sequence[float]) -> dict:
    """``{"p50", "p95", "mean", "max"}`` of values (numpy linear interpolation); zeros when empty."""
    if not values:
        return {"p50": 0.0, "p95": 0.0, "mean": 0.0, "max": 0.0}
    a = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "mean": round(float(a.mean()), 3), "max": round(float(a.max()), 3)}


class _MissingField(KeyError):
    """A ``${data.FIELD}`` reference to a field the line does not have."""


def _run_one(runner: FlowRunner, item: DataLine, columns: dict[str, str], data_path: Path,
             optional: frozenset[str] = frozenset(), prices: ServeConfig = ServeConfig()) -> tuple[dict, dict]:
    """Run one data line; ``optional`` inputs (declared with a default) are mapped only when
    the line has the fields their column names, else the flow's default applies."""
    rec: dict[str, Any] = {"line": item.line, "id": (item.data or {}).get("id"), "status": "failed", "error": None,
                           "data": item.data, "inputs": None, "outputs": None, "citations": [], "retrieved": [],
                           "latency_ms": None, "node_latency_ms": {}, "tokens": None, "cost_usd": None,
                           "unpriced": []}
    trace: list = []
    if item.error:
        rec["error"] = item.error
        return rec, {"line": item.line, "id": None, "trace": trace}

    def lookup(ref: Any) -> Any:
        if ref.kind != "data":
            raise KeyError(f"{ref.text}: only ${{data.*}} is allowed in --column")
        if ref.name not in item.data:
            raise _MissingField(f"{ref.text}: line has no field {ref.name!r} (fields: {', '.join(item.data) or 'none'})")
        return follow(item.data[ref.name], ref.path, ref.text)

    try:
        inputs = {}
        for name, expr in columns.items():
            try:
                inputs[name] = resolve_value(expr, lookup)
            except _MissingField as e:
                if name in optional:
                    continue  # an optional input: the line does not give it, the flow's default applies
                raise FlowInputError(f"{data_path}:{item.line}: column {name}: {e.args[0]}") from e
            except KeyError as e:
                raise FlowInputError(f"{data_path}:{item.line}: column {name}: {e.args[0]}") from e
        rec["inputs"] = inputs
        result = runner.run(inputs)
    except FlowInputError as e:
        msg = str(e)
        rec["error"] = msg if msg.startswith(str(data_path)) else f"{data_path}:{item.line}: {msg}"
    except NodeError as e:
        rec["error"] = f"{data_path}:{item.line}: {e}"
        trace = [t.to_dict() for t in e.trace]
    except Exception as e:  # one bad line must not stop the batch; it is recorded with its error
        rec["error"] = f"{data_path}:{item.line}: {type(e).__name__}: {e}"
    else:
        trace = [t.to_dict() for t in result.trace]
        node_ms: dict[str, float] = {}
        for t in result.trace:
            node_ms[t.node] = round(node_ms.get(t.node, 0.0) + t.latency_ms, 3)
        usage = usage_of(result.trace, prices)
        rec.update(status="ok", inputs=result.inputs, outputs=result.outputs, citations=result.citations,
                   retrieved=result.retrieved, latency_ms=round(result.latency_ms, 3), node_latency_ms=node_ms,
                   tokens=result.tokens, cost_usd=round(usage.cost_usd, 8), unpriced=list(usage.unpriced))
    return rec, {"line": item.line, "id": rec["id"], "trace": trace}


def new_run_dir(runs_dir: str | Path, flow: Flow, run_id: str | None = None) -> Path:
    """Create ``<runs_dir>/<run_id>`` (default id: UTC time + flow + variant; ``-2``, ``-3``... on collision).

    Raises:
        FlowInputError: an explicit ``run_id`` that already exists or holds a path separator.
    """
    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    if run_id is not None:
        if "/" in run_id or "\\" in run_id or run_id in (".", ".."):
            raise FlowInputError(f"--run-id {run_id!r}: must be a plain folder name")
        path = root / run_id
        try:
            path.mkdir()
        except FileExistsError:
            raise FlowInputError(f"run directory {path} already exists; pick another --run-id") from None
        return path
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = f"{stamp}-{flow.name}" + (f"-{flow.variant}" if flow.variant else "")
    for i in range(1, 1000):
        path = root / (base if i == 1 else f"{base}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FlowError(f"{root}: could not create a new run directory for {base}")  # pragma: no cover


def _copy_flow(flow: Flow, run_dir: Path, runner: FlowRunner) -> None:
    shutil.copytree(flow.folder, run_dir / "flow", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (run_dir / "flow.resolved.json").write_text(
        json.dumps(flow.spec.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (run_dir / INDEX_FILE).write_text(json.dumps(runner.indexes, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    copies = run_dir / "index"
    for info in runner.indexes:
        src = Path(info["path"]) / "manifest.json"
        if src.exists():
            copies.mkdir(exist_ok=True)
            shutil.copy2(src, copies / f"{info['name']}-{info['version']}.manifest.json")


def batch_metrics(records: list[dict], wall_s: float, flow: Flow) -> dict:
    """Run metrics from the output records (see module docstring)."""
    ok = [r for r in records if r["status"] == "ok"]
    nodes: dict[str, list[float]] = {}
    for r in ok:
        for n, ms in r["node_latency_ms"].items():
            nodes.setdefault(n, []).append(ms)
    types = {n.name: n.type for n in flow.spec.nodes}
    retrieval = [sum(ms for n, ms in r["node_latency_ms"].items() if types.get(n) == "retrieve") for r in ok]
    tok = {k: sum(int((r["tokens"] or {}).get(k, 0)) for r in ok) for k in ("prompt", "completion", "total")}
    return {
        "flow": flow.name, "variant": flow.variant, "lines": len(records), "ok": len(ok),
        "failed": len(records) - len(ok), "wall_s": round(wall_s, 3),
        "throughput_qps": round(len(records) / wall_s, 3) if wall_s > 0 else 0.0,
        "latency_ms": percentiles([r["latency_ms"] for r in ok]),
        "retrieval_latency_ms": percentiles(retrieval),
        "node_latency_ms": {n: percentiles(v) for n, v in nodes.items()},
        "tokens": {**tok, "mean_total": round(tok["total"] / len(ok), 3) if ok else 0.0},
        "cost_usd": cost_totals(ok),
        "unpriced_models": sorted({m for r in ok for m in (r.get("unpriced") or [])}),
    }


def cost_totals(records: Sequence[dict]) -> dict:
    """``{"total", "mean"}`` USD of the records' ``cost_usd`` (absent: 0, e.g. runs older than costs)."""
    costs = [float(r.get("cost_usd") or 0.0) for r in records]
    return {"total": round(sum(costs), 8), "mean": round(sum(costs) / len(costs), 8) if costs else 0.0}


@dataclass(frozen=True)
class BatchSummary:
    """What a batch run produced: its folder and metrics."""

    run_dir: Path
    metrics: dict

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"run_dir": str(self.run_dir), **self.metrics}


def run_batch(
    flow: Flow,
    data: str | Path,
    columns: dict[str, str],
    runner: FlowRunner,
    runs_dir: str | Path = "runs",
    workers: int = 1,
    run_id: str | None = None,
    limit: int | None = None,
    prices: ServeConfig | None = None,
) -> BatchSummary:
    """Run ``flow`` over every line of ``data`` and write a run directory.

    Args:
        flow: the validated flow (variant applied).
        data: JSONL file, one JSON object per line.
        columns: input name -> ``${data.FIELD}`` expression (:func:`parse_columns`).
        runner: the prepared runner of ``flow``.
        runs_dir: parent of run directories.
        workers: threads running lines concurrently (>= 1).
        run_id: folder name (default: UTC timestamp + flow + variant).
        limit: only the first ``limit`` lines.
        prices: the ``serve:`` section whose ``prices`` price the llm calls (default: no prices,
            every call costs 0 and its model is listed in ``unpriced_models``).

    Returns:
        The run directory and its metrics.

    Raises:
        DataError: no data file, or no lines in it.
        FlowInputError: bad ``workers`` or ``run_id``.
    """
    if workers < 1:
        raise FlowInputError(f"--workers must be >= 1, got {workers}")
    data_path = Path(data)
    lines = list(read_jsonl(data_path))
    if limit is not None:
        lines = lines[:limit]
    if not lines:
        raise DataError(f"{data_path}: no data lines")
    run_dir = new_run_dir(runs_dir, flow, run_id)
    started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    _copy_flow(flow, run_dir, runner)
    optional = frozenset(n for n, spec in flow.spec.inputs.items() if not spec.required)
    prices = prices or ServeConfig()
    t0 = time.perf_counter()
    records: list[dict] = []
    with open(run_dir / OUTPUTS_FILE, "w", encoding="utf-8") as out_f, \
            open(run_dir / TRACES_FILE, "w", encoding="utf-8") as tr_f:
        def emit(pair: tuple[dict, dict]) -> None:
            rec, tr = pair
            records.append(rec)
            out_f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
            tr_f.write(json.dumps(tr, ensure_ascii=False, default=str) + "\n")

        if workers == 1:
            for item in lines:
                emit(_run_one(runner, item, columns, data_path, optional, prices))
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flow-batch") as pool:
                for pair in pool.map(lambda it: _run_one(runner, it, columns, data_path, optional, prices), lines):
                    emit(pair)
    wall = time.perf_counter() - t0
    metrics = batch_metrics(records, wall, flow)
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    run_info = {
        "run_id": run_dir.name, "flow": flow.name, "flow_folder": str(flow.folder), "variant": flow.variant,
        "data": str(data_path), "data_sha256": sha256_file(data_path), "columns": columns, "workers": workers,
        "limit": limit, "started_at": started_at,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "indexes": [{"node": i["node"], "ref": i["ref"], "name": i["name"], "version": i["version"]} for i in runner.indexes],
    }
    (run_dir / RUN_FILE).write_text(json.dumps(run_info, indent=2) + "\n", encoding="utf-8")
    return BatchSummary(run_dir, metrics)


def load_run(run_dir: str | Path) -> tuple[dict, dict, list[dict]]:
    """Read a run directory: ``(run.json, metrics.json, output records)``.

    Raises:
        DataError: not a run directory (names the missing file) or a damaged outputs line.
    """
    d = Path(run_dir)
    for name in (RUN_FILE, METRICS_FILE, OUTPUTS_FILE):
        if not (d / name).is_file():
            raise DataError(f"{d}: not a run directory (no {name}); create one with `ragline flow batch`")
    records = []
    with open(d / OUTPUTS_FILE, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{d / OUTPUTS_FILE}:{n}: damaged record ({e.msg})") from e
    return (json.loads((d / RUN_FILE).read_text(encoding="utf-8")),
            json.loads((d / METRICS_FILE).read_text(encoding="utf-8")), records)


__all__ = ["BatchSummary", "DataLine", "cost_totals", "load_run", "parse_columns", "percentiles", "read_jsonl",
           "run_batch", "batch_metrics", "new_run_dir"]
