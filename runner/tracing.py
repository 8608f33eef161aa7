"""OpenTelemetry spans of served flow runs (opentelemetry-sdk).

Each run served by ``/score``, ``/v1/chat/completions`` or the MCP ``answer`` tool gives one
span ``ragline.request`` (attributes ``ragline.route``, ``ragline.request_id``,
``ragline.flow``, ``ragline.variant``, ``ragline.model``, ``ragline.index_versions``,
``ragline.tokens.prompt`` / ``.completion``, ``ragline.cost_usd``; status ERROR with the error
on failure) with one child ``ragline.node`` span per node run, in execution order
(``ragline.node``, ``ragline.node_type``, ``ragline.latency_ms``, token counts of llm and
prompt nodes; for retrieve nodes ``ragline.k``, ``ragline.mode``, ``ragline.index``,
``ragline.index_version``, ``ragline.hits``). Nodes run one after another, so the node spans are
laid end to end from the request's start using each node's measured latency.

The exporter comes from ``serve.traces.exporter``: ``none`` (no provider, no cost),
``console`` or ``otlp`` (``endpoint``, e.g. ``http://127.0.0.1:4318/v1/traces``). A provider
is private to the app (not the global one), so tests can pass their own with an in-memory
exporter.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Optional

from ragline.core.telemetry import tracer_provider  # noqa: F401  (the one provider factory; re-exported)


class RunTracer:
    """Turns one flow run (its node traces) into a request span with node children.

    Args:
        provider: an opentelemetry ``TracerProvider``.
    """

    def __init__(self, provider: Any) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("ragline.runner")

    def record(self, *, served: Any, route: str, request_id: str, start_ns: int, trace: Iterable[Any],
               usage: Any, error: Optional[BaseException]) -> None:
        """Emit the spans of one run that started at ``start_ns`` (``time.time_ns()``)."""
        from opentelemetry import trace as otel
        from opentelemetry.trace import Status, StatusCode

        runner = served.runner
        attrs = {"ragline.route": route, "ragline.request_id": request_id, "ragline.flow": served.flow,
                 "ragline.variant": served.variant or "", "ragline.model": served.model,
                 "ragline.index_versions": [f"{i.name}@{i.version}" for i in served.indexes],
                 "ragline.tokens.prompt": usage.prompt_tokens, "ragline.tokens.completion": usage.completion_tokens,
                 "ragline.cost_usd": usage.cost_usd}
        root = self.tracer.start_span("ragline.request", start_time=start_ns, attributes=attrs)
        ctx = otel.set_span_in_context(root)
        at = start_ns
        versions = {i.node: i for i in served.indexes}
        for t in trace:
            end = at + int(t.latency_ms * 1e6)
            node_attrs: dict = {"ragline.node": t.node, "ragline.node_type": t.type,
                                "ragline.latency_ms": round(t.latency_ms, 3)}
            if t.tokens:
                node_attrs["ragline.tokens.prompt"] = int(t.tokens.get("prompt", 0))
                node_attrs["ragline.tokens.completion"] = int(t.tokens.get("completion", 0))
            if t.type == "retrieve":
                retrieval = getattr(runner.nodes.get(t.node), "retrieval", None)  # the settings the node ran with
                node_attrs["ragline.k"] = int(getattr(retrieval, "k", 0) or 0)
                node_attrs["ragline.mode"] = str(getattr(retrieval, "mode", ""))
                if t.node in versions:
                    node_attrs["ragline.index"] = versions[t.node].name
                    node_attrs["ragline.index_version"] = versions[t.node].version
                if isinstance(t.output, list):
                    node_attrs["ragline.hits"] = len(t.output)
            span = self.tracer.start_span("ragline.node", context=ctx, start_time=at, attributes=node_attrs)
            if t.error:
                span.set_status(Status(StatusCode.ERROR, t.error))
            span.end(end_time=end)
            at = end
        if error is not None:
            root.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        root.end(end_time=max(at, time.time_ns()))


__all__ = ["RunTracer", "tracer_provider"]
