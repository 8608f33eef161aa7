"""Figures and spans of ingest, refresh and eval runs: a metrics file per run, a Pushgateway
push, and OpenTelemetry spans per stage (``telemetry:`` params).

What a run records (:func:`run_figures`): wall time per stage and in all, documents, chunks,
chunks embedded now and embedding-cache hits, quarantined files, and whether it failed; a
refresh adds carried chunks and the input diff; an eval its scores. The figures are written,
when ``telemetry.metrics_dir`` is set, as ``<metrics_dir>/<kind>-<index>-<UTC time>.json`` and,
in the Prometheus text format, as ``.prom`` beside it (prometheus-client's
``write_to_textfile``, atomic). Gauges (labels ``kind``, ``index``):

- ``ragline_run_stage_seconds{stage}``, ``ragline_run_seconds``;
- ``ragline_run_documents``, ``ragline_run_chunks``, ``ragline_run_embedded_chunks``,
  ``ragline_run_cache_hits``, ``ragline_run_quarantined``, ``ragline_run_failed`` (0/1);
- ``ragline_run_last_timestamp_seconds`` (end of the run, Unix time);
- eval only: ``ragline_eval_score{metric}``.

With ``telemetry.pushgateway`` set (a URL), the same registry is pushed with
``prometheus_client.push_to_gateway`` (job ``telemetry.job``, grouping key ``kind`` and
``index``, so each kind of run of each index keeps its own group); a failed push is a warning
in the result (``push_error``), never a failed run.

Spans (``telemetry.traces``: ``none``, ``console`` (on stderr), ``otlp``): one ``ragline.<kind>`` span per run
with one ``ragline.stage`` child per stage, laid out at the measured times; every span carries
``ragline.index``, ``ragline.version``, ``ragline.manifest_sha256``, ``ragline.documents``,
``ragline.chunks`` (and ``ragline.stage`` on stages). They are emitted when the run ends (its
version and counts are known then); a run that raises ends with status ERROR.

The stage hook is :func:`timed` (``pipelines/flows.py`` times each stage with it) and the run
hook the :func:`observed` decorator; neither imports Prefect.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

log = logging.getLogger("ragline.telemetry")

#: The run being observed in this context (set by :func:`observed`).
_RUN: contextvars.ContextVar[Optional["RunTelemetry"]] = contextvars.ContextVar("ragline_run", default=None)


@contextmanager
def timed(times: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of the block to ``times[name]`` (seconds, 3 decimals) and, inside an
    observed run, record the stage for its span."""
    t0 = time.perf_counter()
    start_ns = time.time_ns()
    try:
        yield
    finally:
        times[name] = round(times.get(name, 0.0) + time.perf_counter() - t0, 3)
        run = _RUN.get()
        if run is not None:
            run.stages.append((name, start_ns, time.time_ns()))


def run_figures(kind: str, summary: Any) -> dict[str, Any]:
    """The figures of one run from its summary (an ``IngestSummary``, a ``RefreshSummary`` or an
    eval result dict).

    Returns:
        ``{"kind", "index", "version", "documents", "chunks", "embedded_chunks" (vectors the run
        produced), "computed" (of which the model embedded now), "cache_hits" (of which came from the
        embedding cache), "quarantined", "failed", "stage_seconds", "total_seconds", ...}``: counts are ints,
        times seconds; a refresh adds ``carried_chunks``, ``added``, ``changed``, ``removed``,
        ``nothing_changed``; an eval adds ``scores`` (metric -> float).
    """
    g = (lambda k, d=None: summary.get(k, d)) if isinstance(summary, dict) else (lambda k, d=None: getattr(summary, k, d))
    quarantine = g("quarantine") or []
    computed = g("computed") if g("computed") is not None else g("embedded")  # texts the model embedded now
    computed = int(computed or 0)
    if g("cache_hits") is not None:
        cache_hits = int(g("cache_hits"))
    else:
        cache_hits = max(0, int(g("embedded_chunks") or 0) - computed)
    out: dict[str, Any] = {
        "kind": kind, "index": g("index"), "version": g("version"), "documents": int(g("documents", 0) or 0),
        "chunks": int(g("chunks", 0) or 0), "embedded_chunks": computed + cache_hits, "computed": computed,
        "cache_hits": cache_hits,
        "quarantined": len(quarantine) if isinstance(quarantine, list) else int(quarantine or 0),
        "failed": g("failed"), "stage_seconds": dict(g("stage_seconds") or {}),
        "total_seconds": float(g("total_seconds", 0.0) or 0.0),
    }
    if kind == "refresh":
        out.update(carried_chunks=int(g("carried_chunks", 0) or 0), added=len(g("added") or []),
                   changed=len(g("changed") or []), removed=len(g("removed") or []),
                   nothing_changed=bool(g("nothing_changed", False)))
    if kind == "eval":
        out["scores"] = {k: float(v) for k, v in (g("scores") or {}).items()}
    return out


@dataclass
class RunTelemetry:
    """One observed run: its stages as they happen, then files, push and spans at the end.

    Args:
        kind: ``ingest``, ``refresh`` or ``eval``.
        params: validated :class:`pipelines.config.Params` (``telemetry:``, ``index.root``).
        tracer_provider: an OpenTelemetry ``TracerProvider`` (default: ``telemetry.traces``'s;
            tests pass one with an in-memory exporter).
    """

    kind: str
    params: Any
    tracer_provider: Any = None
    stages: list[tuple[str, int, int]] = field(default_factory=list)
    start_ns: int = field(default_factory=time.time_ns)

    def manifest_sha256(self, index: Optional[str], version: Optional[str]) -> Optional[str]:
        """sha256 of the published version's ``manifest.json`` (``None`` when nothing was published)."""
        if not index or not version:
            return None
        from ragline.core.hashing import sha256_file
        from ragline.indexers.registry import IndexRegistry

        path = IndexRegistry(self.params.index.root).version_dir(index, version) / "manifest.json"
        return sha256_file(path) if path.is_file() else None

    def finish(self, summary: Any, error: Optional[BaseException] = None) -> dict[str, Any]:
        """Write the metrics files, push them, emit the spans; returns the figures with
        ``metrics_file``, ``pushed`` and ``push_error`` added. Never raises on I/O trouble of its own
        (logged as a warning and returned in the figures)."""
        cfg = self.params.telemetry
        figures = run_figures(self.kind, summary) if summary is not None else {
            "kind": self.kind, "index": self.params.index.name, "version": None, "documents": 0, "chunks": 0,
            "embedded_chunks": 0, "cache_hits": 0, "quarantined": 0, "stage_seconds": {},
            "total_seconds": round((time.time_ns() - self.start_ns) / 1e9, 3)}
        if error is not None and not figures.get("failed"):
            figures["failed"] = f"{type(error).__name__}: {error}"
        figures["index"] = figures.get("index") or self.params.index.name
        figures["manifest_sha256"] = self.manifest_sha256(figures["index"], figures.get("version"))
        figures["time"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        registry = prometheus_registry(figures)
        figures["metrics_file"] = None
        if cfg.metrics_dir:
            try:
                figures["metrics_file"] = str(write_metrics_files(figures, registry, Path(cfg.metrics_dir)))
            except OSError as e:
                log.warning("metrics file not written to %s: %s", cfg.metrics_dir, e)
        figures["pushed"], figures["push_error"] = False, None
        if cfg.pushgateway:
            from prometheus_client import push_to_gateway

            try:
                push_to_gateway(cfg.pushgateway, job=cfg.job, registry=registry, timeout=cfg.push_timeout_s,
                                grouping_key={"kind": self.kind, "index": str(figures["index"])})
                figures["pushed"] = True
            except Exception as e:  # noqa: BLE001 - urllib raises URLError, OSError, HTTPError...: a push never fails a run
                figures["push_error"] = f"push to {cfg.pushgateway} failed: {type(e).__name__}: {e}"
                log.warning("%s", figures["push_error"])
        self.emit_spans(figures, error)
        return figures

    def emit_spans(self, figures: dict[str, Any], error: Optional[BaseException] = None) -> None:
        """The run span and its stage children (see the module docstring)."""
        provider = self.tracer_provider
        if provider is None:
            from ragline.core.telemetry import tracer_provider

            provider = tracer_provider(self.params.telemetry.traces, "telemetry.traces", sys.stderr)
            if provider is None:
                return
        from opentelemetry.trace import Status, StatusCode, set_span_in_context

        attrs = {"ragline.kind": self.kind, "ragline.index": str(figures["index"]),
                 "ragline.version": str(figures.get("version") or ""),
                 "ragline.manifest_sha256": str(figures.get("manifest_sha256") or ""),
                 "ragline.documents": int(figures["documents"]), "ragline.chunks": int(figures["chunks"])}
        tracer = provider.get_tracer("ragline.pipelines")
        end_ns = time.time_ns()
        root = tracer.start_span(f"ragline.{self.kind}", start_time=self.start_ns,
                                 attributes={**attrs, "ragline.cache_hits": int(figures["cache_hits"]),
                                             "ragline.quarantined": int(figures["quarantined"]),
                                             "ragline.total_seconds": float(figures["total_seconds"])})
        ctx = set_span_in_context(root)
        for name, s, e in self.stages:
            span = tracer.start_span("ragline.stage", context=ctx, start_time=s,
                                     attributes={**attrs, "ragline.stage": name,
                                                 "ragline.seconds": round((e - s) / 1e9, 6)})
            span.end(end_time=e)
        if figures.get("failed"):
            root.set_status(Status(StatusCode.ERROR, str(figures["failed"])[:500]))
        root.end(end_time=end_ns)
        if self.tracer_provider is None:
            provider.shutdown()  # a provider of our own: flush its batch processor now


def prometheus_registry(figures: dict[str, Any]) -> Any:
    """A prometheus-client ``CollectorRegistry`` holding the gauges of one run's figures."""
    from prometheus_client import CollectorRegistry, Gauge

    r = CollectorRegistry()
    lab = {"kind": figures["kind"], "index": str(figures["index"])}

    def gauge(name: str, doc: str, value: float, **extra: str) -> None:
        g = Gauge(name, doc, [*lab, *extra], registry=r)
        g.labels(**lab, **extra).set(value)

    stage = Gauge("ragline_run_stage_seconds", "Wall time of one stage of the run.", ["kind", "index", "stage"],
                  registry=r)
    for name, secs in figures["stage_seconds"].items():
        stage.labels(**lab, stage=name).set(secs)
    gauge("ragline_run_seconds", "Wall time of the run.", figures["total_seconds"])
    gauge("ragline_run_documents", "Documents in the published version (or loaded).", figures["documents"])
    gauge("ragline_run_chunks", "Chunks in the published version (or chunked).", figures["chunks"])
    gauge("ragline_run_embedded_chunks", "Chunks whose vectors the run produced.", figures["embedded_chunks"])
    gauge("ragline_run_cache_hits", "Embedding-cache hits among them.", figures["cache_hits"])
    gauge("ragline_run_quarantined", "Files quarantined by the run.", figures["quarantined"])
    gauge("ragline_run_failed", "1 when the run failed and published nothing.", 1 if figures.get("failed") else 0)
    gauge("ragline_run_last_timestamp_seconds", "End of the run (Unix time).", time.time())
    if figures.get("scores"):
        score = Gauge("ragline_eval_score", "Scores of an eval run.", ["kind", "index", "metric"], registry=r)
        for metric, value in figures["scores"].items():
            score.labels(**lab, metric=metric).set(value)
    return r


def write_metrics_files(figures: dict[str, Any], registry: Any, folder: Path) -> Path:
    """Write ``<kind>-<index>-<UTC time>.json`` and ``.prom`` into ``folder``; returns the JSON path.

    Raises:
        OSError: the folder cannot be created or written.
    """
    from prometheus_client import write_to_textfile

    from ragline.core.io import write_json_atomic

    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    base = folder / f"{figures['kind']}-{figures['index']}-{stamp}"
    path = base.with_suffix(".json")
    write_json_atomic(path, {k: v for k, v in figures.items() if k not in ("metrics_file", "pushed", "push_error")})
    write_to_textfile(str(base.with_suffix(".prom")), registry)
    return path


def _params_of(kind: str, args: tuple, kwargs: dict) -> Any:
    """The validated params a flow call will run with (defaults when they cannot be read: the
    flow then fails with its own message)."""
    from ragline.core.errors import RaglineError
    from ragline.pipelines.config import Params, load_params

    try:
        raw = kwargs.get("params")
        if raw is None and kind == "ingest" and len(args) > 1:
            raw = args[1]
        if raw is None and kind == "refresh" and args:
            raw = args[0]
        if raw is not None:
            return raw if isinstance(raw, Params) else Params.from_dict(raw)
        return load_params(kwargs.get("params_file") or (args[2] if len(args) > 2 else None) or "params.yaml")
    except (RaglineError, OSError):
        return Params()


def observed(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator of a flow function returning a run summary: stages timed with :func:`timed`
    inside it become spans, and the run's figures are written, pushed and traced when it ends
    (on an exception too, which is re-raised). The summary gets ``telemetry`` (the figures)
    when it has such an attribute."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            rt = RunTelemetry(kind, _params_of(kind, args, kwargs))
            token = _RUN.set(rt)
            try:
                summary = fn(*args, **kwargs)
            except BaseException as e:
                _RUN.reset(token)
                _finish_quietly(rt, None, e)
                raise
            _RUN.reset(token)
            figures = _finish_quietly(rt, summary, None)
            if figures is not None and hasattr(summary, "telemetry"):
                summary.telemetry = figures
            return summary

        return run

    return wrap


def _finish_quietly(rt: RunTelemetry, summary: Any, error: Optional[BaseException]) -> Optional[dict]:
    try:
        return rt.finish(summary, error)
    except Exception as e:  # noqa: BLE001 - telemetry must never turn a finished run into a failure
        log.warning("run telemetry failed: %s: %s", type(e).__name__, e)
        return None


__all__ = ["RunTelemetry", "observed", "prometheus_registry", "run_figures", "timed", "write_metrics_files"]
