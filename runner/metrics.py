"""Prometheus metrics of a served flow (prometheus-client, one registry per app).

Exposed at ``GET /metrics`` in the Prometheus text format:

- ``ragline_requests_total{route, model, status}``: requests by route, served model
  (``flow`` or ``flow:variant``) and HTTP status;
- ``ragline_request_latency_seconds{route, model}``: wall time until the last byte
  (streams included);
- ``ragline_retrieval_latency_seconds{model}`` and ``ragline_llm_latency_seconds{model, provider}``:
  node latencies of each flow run;
- ``ragline_tokens_total{model, llm, direction}``: prompt / completion tokens;
- ``ragline_cost_usd_total{model, llm}``: priced cost (``serve.prices``);
- ``ragline_errors_total{route, model, type}``: failures by error class (``FlowInputError``,
  ``ProviderError``, ``Unauthorized``, ``InvalidRequest``, ...);
- ``ragline_index_version_info{model, node, index, version}``: 1 for each index version served.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the route)

#: Histogram buckets in seconds: 1 ms .. 30 s.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServeMetrics:
    """The metric families of one app (their own :class:`CollectorRegistry`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("ragline_requests", "Requests served.", ["route", "model", "status"], registry=r)
        self.latency = Histogram("ragline_request_latency_seconds", "Request wall time until the last byte.",
                                 ["route", "model"], buckets=BUCKETS, registry=r)
        self.retrieval = Histogram("ragline_retrieval_latency_seconds", "Retrieve-node time per flow run.",
                                   ["model"], buckets=BUCKETS, registry=r)
        self.llm = Histogram("ragline_llm_latency_seconds", "LLM-node time per flow run.", ["model", "provider"],
                             buckets=BUCKETS, registry=r)
        self.tokens = Counter("ragline_tokens", "Tokens of llm calls.", ["model", "llm", "direction"], registry=r)
        self.cost = Counter("ragline_cost_usd", "Priced cost of llm calls (USD).", ["model", "llm"], registry=r)
        self.errors = Counter("ragline_errors", "Failed requests by error type.", ["route", "model", "type"],
                              registry=r)
        self.arm_requests = Counter("ragline_arm_requests", "Flow runs per split arm (flow serve --split).",
                                    ["arm", "status"], registry=r)
        self.index_version = Gauge("ragline_index_version_info", "Index versions served (value 1).",
                                   ["model", "node", "index", "version"], registry=r)
        self._children: dict[tuple, Any] = {}

    def child(self, family: Any, *labels: str) -> Any:
        """``family.labels(*labels)``, cached (``labels()`` validates and locks on every call)."""
        key = (id(family), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = family.labels(*labels)
        return c

    def set_indexes(self, model: str, indexes: Iterable[dict]) -> None:
        """Record the index versions a served model searches."""
        for i in indexes:
            self.index_version.labels(model, i["node"], i["name"], i["version"]).set(1)

    def observe_run(self, model: str, trace: Iterable[Any], prices: Any) -> None:
        """Node latencies, tokens and cost of one flow run (``trace``: :class:`NodeTrace` list)."""
        from ragline.runner.accounting import model_of

        retrieval = llm = 0.0
        provider = "none"
        for t in trace:
            if t.type == "retrieve":
                retrieval += t.latency_ms
            elif t.type == "llm":
                llm += t.latency_ms
                name = model_of(t.output)
                provider = str(t.output.get("provider", name)) if isinstance(t.output, dict) else name
                if t.tokens:
                    p, c = int(t.tokens.get("prompt", 0)), int(t.tokens.get("completion", 0))
                    self.child(self.tokens, model, name, "prompt").inc(p)
                    self.child(self.tokens, model, name, "completion").inc(c)
                    price = prices.price_of(name)
                    if price is not None:
                        self.child(self.cost, model, name).inc(price.cost_usd(p, c))
        self.child(self.retrieval, model).observe(retrieval / 1000)
        self.child(self.llm, model, provider).observe(llm / 1000)

    def observe_arm(self, arm: str, ok: bool) -> None:
        """Count one flow run of a split arm (``status`` ``ok`` or ``error``)."""
        self.child(self.arm_requests, arm, "ok" if ok else "error").inc()

    def error(self, route: str, model: str, kind: str) -> None:
        """Count one failure."""
        self.child(self.errors, route, model, kind).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware: request count and latency per route template and served model.

    The route is the matched path template (``/score``, ``/v1/chat/completions``; unknown
    paths are ``other``); the model is what the handler stored in ``request.state.model``
    (``-`` when none, e.g. ``/healthz`` or a 401).
    """

    def __init__(self, app: Any, metrics: ServeMetrics, routes: Iterable[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = set(routes)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        state = scope.setdefault("state", {})

        async def wrapped(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            path = scope.get("path", "")
            route = path if path in self.routes else "other"
            model = state.get("model", "-")
            m = self.metrics
            m.child(m.requests, route, model, str(status)).inc()
            m.child(m.latency, route, model).observe(time.perf_counter() - t0)
            if status == 401:
                self.metrics.error(route, model, "Unauthorized")


__all__ = ["BUCKETS", "MetricsMiddleware", "ServeMetrics"]
