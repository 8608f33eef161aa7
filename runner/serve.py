"""Serve flows over HTTP with FastAPI.

Endpoints:

- ``POST /score``: the flow's inputs as a JSON object (schema in OpenAPI); returns outputs,
  citations, latency, tokens, cost, the index versions used and the ``request_id``
  (``?trace=true`` adds the per-node trace, ``?variant=NAME`` picks a served variant). 422 for
  inputs that do not match the flow's declared inputs, 502 when a model endpoint fails, 500
  for other node failures.
- ``POST /v1/chat/completions`` and ``GET /v1/models``: the OpenAI-compatible API
  (:mod:`runner.openai_api`), one model per served flow and variant.
- ``POST /feedback``: ``{request_id, rating: up|down, comment?, correct_source?}`` about a
  logged request (404 for an unknown id).
- ``GET /metrics``: Prometheus metrics (:mod:`runner.metrics`), when ``serve.metrics`` is on.
- ``GET /healthz``: liveness, never authenticated.
- With a split (``create_app(split=..., arms=...)``, :mod:`runner.split`), the flow's own model
  and ``/score`` without ``?variant=`` are routed to an arm by a stable hash of the
  ``X-Ragline-User`` / ``X-Session-Id`` header (or the OpenAI ``user`` field); the arm is in the
  response (``arm``, ``X-Ragline-Arm``), the request log and ``/metrics``.
- ``GET /metadata``: flow name, variants, inputs, outputs, nodes and index versions.
- ``GET /openapi.json``, ``/docs`` (Swagger UI) and ``/redoc``: the schema and its UIs, whose
  JavaScript and CSS are served from the installed ``fastapi-offline`` package under
  ``/static-offline-docs`` (no CDN: they render offline).

Every route but ``/healthz`` and the static documentation assets needs the API key:
``X-API-Key: <key>``, ``Authorization: Bearer <key>``, or HTTP Basic with the key as the
password (so a browser can open ``/docs``); compared in constant time. An app without a key
must be asked for explicitly (``no_auth=True``; ``ragline flow serve --no-auth``). Request
bodies larger than ``max_body_bytes`` are refused with 413 before any parsing.
"""

# No ``from __future__ import annotations``: FastAPI reads the runtime annotation of the
# dynamically built inputs model.

import hmac
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence, Union

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from ragline.core.errors import ConfigError
from ragline.runner.accounting import Usage, usage_of
from ragline.core.serve_config import ServeConfig
from ragline.runner.engine import FlowResult, FlowRunner, NodeTrace
from ragline.runner.errors import FlowInputError, NodeError, ProviderError
from ragline.runner.metrics import CONTENT_TYPE_LATEST, MetricsMiddleware, ServeMetrics
from ragline.runner.requestlog import RequestLog, RequestRecord, UnknownRequest
from ragline.runner.split import split_key

DEFAULT_MAX_BODY_BYTES = 64 * 1024
#: Where the Swagger UI / ReDoc assets are mounted (files of the fastapi-offline package).
STATIC_DOCS_URL = "/static-offline-docs"


class Citation(BaseModel):
    """A cited chunk."""

    id: int = Field(description="The n of the [n] markers in the answer.")
    chunk_id: str
    doc_id: Optional[str] = None
    source: Optional[str] = Field(default=None, description="Source URI of the document.")
    page: Optional[int] = None
    char_start: Optional[int] = None
    char_end: Optional[int] = None
    rank: Optional[int] = Field(default=None, description="Retrieval rank of the chunk.")
    quotes: list[dict] = Field(default_factory=list, description="Quoted sentences with document offsets (extractive).")


class IndexVersion(BaseModel):
    """An index version a retrieve node searches."""

    node: str
    ref: str
    name: str
    version: str


class ScoreResponse(BaseModel):
    """Result of one flow run."""

    request_id: str = Field(description="Id of this request in the request log (give it to POST /feedback).")
    outputs: dict[str, Any]
    citations: list[Citation]
    latency_ms: float
    tokens: dict[str, int]
    cost_usd: float = Field(description="Priced cost of the llm calls (serve.prices; 0 when unpriced).")
    flow: str
    variant: Optional[str] = None
    arm: Optional[str] = Field(default=None, description="The split arm that answered (flow serve --split).")
    indexes: list[IndexVersion]
    trace: Optional[list[dict]] = None


class FeedbackRequest(BaseModel):
    """A user's verdict on one served answer."""

    model_config = {"extra": "forbid"}

    request_id: str = Field(min_length=1, max_length=200, description="request_id of /score, or the completion id.")
    rating: Literal["up", "down"]
    comment: Optional[str] = Field(default=None, max_length=4000)
    correct_source: Optional[str] = Field(default=None, max_length=2000,
                                          description="The document that holds the right answer (file name or URI).")


def citation_models(citations: Sequence[dict]) -> list[Citation]:
    """Citation dicts of a flow result as :class:`Citation` models."""
    return [Citation(**{k: c.get(k) for k in Citation.model_fields if k in c}) for c in citations]


@dataclass
class ServedFlow:
    """One served model: a flow (one variant of it) and its prepared runner.

    Attributes:
        model: the model id, ``flow`` or ``flow:variant``.
        runner: the prepared runner.
        indexes: index versions its retrieve nodes search.
        arm: the split arm it serves (``None`` outside a split).
    """

    model: str
    runner: FlowRunner
    indexes: list[IndexVersion]
    arm: Optional[str] = None

    @property
    def flow(self) -> str:
        """Flow name."""
        return self.runner.flow.name

    @property
    def variant(self) -> Optional[str]:
        """Variant name, or ``None``."""
        return self.runner.flow.variant


def model_id(runner: FlowRunner) -> str:
    """The OpenAI model id of a served flow: ``flow`` or ``flow:variant``."""
    return runner.flow.name + (f":{runner.flow.variant}" if runner.flow.variant else "")


def new_request_id() -> str:
    """A fresh request id (32 hex digits, random)."""
    return uuid.uuid4().hex


def arm_model_id(arm: str, runner: FlowRunner) -> str:
    """The model id of a split arm: ``flow:variant`` for a variant arm, ``flow@alias`` for an alias arm."""
    return model_id(runner) if runner.flow.variant == arm else f"{runner.flow.name}@{arm}"


class Service:
    """What the routes share: served flows, price table, metrics and the request log.

    Args:
        runners: prepared runners, one per served model (the first is the default).
        config: ``serve:`` params.
        metrics: the metric families, or ``None`` when metrics are off.
        log: the request log, or ``None`` when it is off.
        tracer: a :class:`runner.tracing.RunTracer`, or ``None`` when traces are off.
        split: an A/B split (:class:`runner.split.Split`); requests for the flow's own model
            (and ``/score`` without ``?variant=``) are routed to one of its arms.
        arms: the prepared runner of each arm of ``split``.

    Raises:
        ConfigError: a model served twice; an arm without a runner; nothing to serve.
    """

    def __init__(self, runners: Sequence[FlowRunner], config: ServeConfig, metrics: Optional[ServeMetrics],
                 log: Optional[RequestLog], tracer: Optional[Any] = None, split: Optional[Any] = None,
                 arms: Optional[dict[str, FlowRunner]] = None) -> None:
        self.config = config
        self.metrics = metrics
        self.log = log
        self.tracer = tracer
        self.split = split
        self.served: dict[str, ServedFlow] = {}
        self.arms: dict[str, ServedFlow] = {}
        pairs: list[tuple[str, FlowRunner, Optional[str]]] = []
        if split is not None:
            for name in split.names:
                if not arms or name not in arms:
                    raise ConfigError(f"split arm {name!r} has no prepared runner")
                pairs.append((arm_model_id(name, arms[name]), arms[name], name))
        pairs += [(model_id(r), r, None) for r in runners]
        if not pairs:
            raise ConfigError("nothing to serve: no flow runner")
        for mid, r, arm in pairs:
            if mid in self.served:
                raise ConfigError(f"model {mid!r} is served twice (give each --variant or split arm once)")
            versions = [IndexVersion(node=i["node"], ref=i["ref"], name=i["name"], version=i["version"])
                        for i in r.indexes]
            self.served[mid] = ServedFlow(mid, r, versions, arm)
            if arm is not None:
                self.arms[arm] = self.served[mid]
            if metrics is not None:
                metrics.set_indexes(mid, r.indexes)
        self.default = next(iter(self.served.values()))
        #: The model id that is routed by the split (the flow's name), or ``None``.
        self.split_model = self.default.flow if split is not None else None

    def route(self, key: Optional[str]) -> ServedFlow:
        """The arm of a request with split id ``key`` (``None``: random); the default without a split."""
        if self.split is None:
            return self.default
        return self.arms[self.split.choose(key)]

    def by_model(self, model: str, key: Optional[str] = None) -> Optional[ServedFlow]:
        """The served flow of an OpenAI model id; the split's model is routed by ``key``."""
        if model == self.split_model and model not in self.served:
            return self.route(key)
        return self.served.get(model)

    def model_ids(self) -> list[str]:
        """Model ids to list: the split's routed model first, then every served one."""
        return ([self.split_model] if self.split_model and self.split_model not in self.served else []) \
            + list(self.served)

    def by_variant(self, variant: Optional[str], key: Optional[str] = None) -> ServedFlow:
        """The served flow of ``variant`` or split arm ``variant`` (``None``: the split's arm for
        ``key``, else the default).

        Raises:
            FlowInputError: the variant is not served.
        """
        if variant is None:
            return self.route(key)
        if variant in self.arms:
            return self.arms[variant]
        for s in self.served.values():
            if s.variant == variant:
                return s
        served = ", ".join(str(s.variant or s.arm) for s in self.served.values())
        raise FlowInputError(f"variant {variant!r} is not served (served: {served})")

    def run(self, served: ServedFlow, inputs: dict, *, route: str, request_id: str,
            stream: bool = False) -> tuple[FlowResult, Usage]:
        """Run one request of ``served``; records metrics and the request log (failures too).

        Raises:
            FlowInputError, NodeError: as :meth:`FlowRunner.run`.
        """
        t0 = time.perf_counter()
        start_ns = time.time_ns()
        result: Optional[FlowResult] = None
        trace: list[NodeTrace] = []
        error: Optional[BaseException] = None
        try:
            result = served.runner.run(inputs)
            trace = result.trace
            return result, usage_of(result.trace, self.config)
        except NodeError as e:
            error, trace = e, e.trace
            raise
        except FlowInputError as e:
            error = e
            raise
        finally:
            usage = usage_of(trace, self.config)
            if self.metrics is not None:
                self.metrics.observe_run(served.model, trace, self.config)
                if served.arm is not None:
                    self.metrics.observe_arm(served.arm, error is None)
                if error is not None:
                    kind = type(error.__cause__).__name__ if isinstance(error, NodeError) and error.__cause__ else type(error).__name__
                    self.metrics.error(route, served.model, kind)
            if self.log is not None:
                self.log.append(self.record(served, inputs, route, request_id, result, trace, usage, error,
                                            (time.perf_counter() - t0) * 1000, stream))
            if self.tracer is not None:
                self.tracer.record(served=served, route=route, request_id=request_id, start_ns=start_ns, trace=trace,
                                   usage=usage, error=error)

    @staticmethod
    def record(served: ServedFlow, inputs: dict, route: str, request_id: str, result: Optional[FlowResult],
               trace: list[NodeTrace], usage: Usage, error: Optional[BaseException], latency_ms: float,
               stream: bool) -> RequestRecord:
        """The request-log record of one run."""
        question = inputs.get("question") if isinstance(inputs.get("question"), str) else json.dumps(inputs, default=str)
        answer = None
        if result is not None:
            a = result.outputs.get("answer")
            answer = a if isinstance(a, str) else json.dumps(result.outputs, default=str, ensure_ascii=False)
        status = 200 if error is None else (422 if isinstance(error, FlowInputError) else
                                            502 if isinstance(error.__cause__, ProviderError) else 500)
        return RequestRecord(
            request_id=request_id, route=route, flow=served.flow, variant=served.variant, model=served.model,
            indexes=[i.model_dump() for i in served.indexes], question=question, answer=answer,
            citations=list(result.citations) if result is not None else [], status=status,
            error=None if error is None else f"{type(error).__name__}: {error}", latency_ms=latency_ms,
            retrieval_ms=sum(t.latency_ms for t in trace if t.type == "retrieve"),
            llm_ms=sum(t.latency_ms for t in trace if t.type == "llm"), prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, cost_usd=usage.cost_usd, stream=stream, arm=served.arm)


def make_authorize(api_key: Optional[str]) -> Callable[..., None]:
    """A FastAPI dependency enforcing ``api_key`` (``None``: open)."""
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key.")
    bearer = HTTPBearer(auto_error=False, description="Alternatively: Authorization: Bearer <key>.")

    def authorize(request: Request, key: Optional[str] = Depends(key_header),
                  creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if api_key is None:
            return
        given = key or (creds.credentials if creds and creds.scheme.lower() == "bearer" else None)
        if not given:
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("basic "):
                import base64
                import binascii

                try:
                    given = base64.b64decode(auth[6:].strip()).decode().partition(":")[2]
                except (binascii.Error, UnicodeDecodeError):
                    given = None
        if not given or not hmac.compare_digest(given.encode(), api_key.encode()):
            docs = request.url.path in ("/docs", "/redoc", "/openapi.json")
            raise HTTPException(status_code=401, detail="missing or wrong API key",
                                headers={"WWW-Authenticate": 'Basic realm="ragline"' if docs else "Bearer"})

    return authorize


class BodySizeLimit:
    """ASGI middleware: 413 for request bodies over ``max_bytes`` (Content-Length or streamed)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Any) -> None:
        body = json.dumps({"detail": f"request body larger than {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(send)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _docs_static_dir() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def create_app(runner: Union[FlowRunner, Sequence[FlowRunner]], api_key: Optional[str] = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, config: Optional[ServeConfig] = None,
               no_auth: bool = False, tracer_provider: Optional[Any] = None, split: Optional[Any] = None,
               arms: Optional[dict[str, FlowRunner]] = None) -> FastAPI:
    """The FastAPI app serving one or more prepared flow runners.

    Args:
        runner: a prepared runner (indexes opened, models warm), or several (one per variant;
            the first answers ``/score`` without ``?variant=``).
        api_key: the required key.
        max_body_bytes: largest accepted request body.
        config: ``serve:`` params (prices, request log, metrics); default: metrics on, request
            log off (the CLI turns it on from params).
        no_auth: serve without a key (every route open). Required when ``api_key`` is ``None``.
        tracer_provider: an OpenTelemetry ``TracerProvider`` for request spans (default: the one
            ``config.traces`` describes, none for ``exporter: none``).
        split: an A/B split (:class:`runner.split.Split`) over ``arms``, the prepared runner of
            each arm; ``runner`` may then be empty (extra ``--variant`` models only).

    Raises:
        ConfigError: no ``api_key`` and ``no_auth`` not set; a model served twice; traces
            misconfigured.
    """
    from ragline.runner.openai_api import openai_router

    runners = [runner] if isinstance(runner, FlowRunner) else list(runner)
    if not runners and split is None:
        raise ConfigError("create_app: no flow runner to serve")
    if api_key is None and not no_auth:
        raise ConfigError("no API key: set RAGLINE_API_KEY (or pass no_auth=True / --no-auth to serve without one)")
    if config is None:
        config = ServeConfig.model_validate({"request_log": {"enabled": False}})
    metrics = ServeMetrics() if config.metrics else None
    log = RequestLog(config.request_log) if config.request_log.enabled else None
    from ragline.runner.tracing import RunTracer, tracer_provider as make_provider

    provider = tracer_provider if tracer_provider is not None else make_provider(config.traces)
    service = Service(runners, config, metrics, log, RunTracer(provider) if provider is not None else None,
                      split=split, arms=arms)
    first = service.default.runner.flow
    app = FastAPI(
        title=f"ragline flow: {first.name}",
        description=(first.spec.description or f"The {first.name} flow") + " — served by ragline.",
        version="1", openapi_url=None, docs_url=None, redoc_url=None,
    )
    app.state.service = service
    authorize = make_authorize(None if no_auth else api_key)
    auth = [Depends(authorize)]

    @app.get("/healthz", summary="Liveness probe")
    def healthz() -> dict:
        return {"status": "ok", "flow": first.name}

    @app.get("/metadata", summary="Flow and index versions", dependencies=auth)
    def metadata(variant: Optional[str] = None) -> dict:
        try:
            served = service.by_variant(variant)
        except FlowInputError as e:
            raise HTTPException(status_code=404, detail=str(e)) from e
        flow, runner_ = served.runner.flow, served.runner
        return {
            "flow": flow.name, "description": flow.spec.description, "variant": flow.variant,
            "variants": list(flow.spec.variants), "models": service.model_ids(),
            "split": service.split.to_text() if service.split is not None else None, "arm": served.arm,
            "inputs": {k: v.model_dump() for k, v in flow.spec.inputs.items()},
            "outputs": list(flow.spec.outputs), "nodes": [{"name": n.name, "type": n.type} for n in flow.spec.nodes],
            "order": list(flow.order),
            "indexes": [{k: i[k] for k in ("node", "ref", "name", "version", "created_at", "params_hash", "counts",
                                           "embedding", "chunker", "query_embedding")} for i in runner_.indexes],
        }

    Inputs = service.default.runner.inputs_model

    def score(body: Inputs, request: Request, response: Response, trace: bool = False,  # type: ignore[valid-type]
              variant: Optional[str] = None) -> ScoreResponse:
        try:
            served = service.by_variant(variant, split_key(request.headers))
        except FlowInputError as e:
            raise HTTPException(status_code=404, detail=str(e)) from e
        request.state.model = served.model
        request_id = new_request_id()
        response.headers["X-Request-ID"] = request_id
        if served.arm is not None:
            response.headers["X-Ragline-Arm"] = served.arm
        try:
            result, usage = service.run(served, body.model_dump(exclude_unset=True), route="/score",
                                        request_id=request_id)
        except FlowInputError as e:
            raise HTTPException(status_code=422, detail=str(e), headers={"X-Request-ID": request_id}) from e
        except NodeError as e:
            status = 502 if isinstance(e.__cause__, ProviderError) else 500
            raise HTTPException(status_code=status, detail=str(e), headers={"X-Request-ID": request_id}) from e
        return ScoreResponse(
            request_id=request_id, outputs=result.outputs, citations=citation_models(result.citations),
            latency_ms=round(result.latency_ms, 3), tokens=result.tokens, cost_usd=round(usage.cost_usd, 8),
            flow=served.flow, variant=served.variant, arm=served.arm, indexes=served.indexes,
            trace=[t.to_dict() for t in result.trace] if trace else None,
        )

    app.post("/score", response_model=ScoreResponse, summary="Run the flow on one set of inputs",
             dependencies=auth,
             responses={401: {"description": "Missing or wrong API key"}, 413: {"description": "Body too large"},
                        422: {"description": "Inputs do not match the flow"},
                        502: {"description": "The model endpoint failed"}})(score)

    @app.post("/feedback", summary="Thumbs up or down on a served answer", dependencies=auth, status_code=201,
              responses={404: {"description": "Unknown request_id"},
                         503: {"description": "The request log is turned off"}})
    def feedback(body: FeedbackRequest) -> dict:
        if service.log is None:
            raise HTTPException(status_code=503, detail="the request log is off (serve.request_log.enabled: false)")
        rid = body.request_id.removeprefix("chatcmpl-")
        try:
            row = service.log.add_feedback(rid, body.rating, body.comment, body.correct_source)
        except UnknownRequest as e:
            raise HTTPException(status_code=404, detail=str(e)) from e
        return {"request_id": row["request_id"], "rating": row["rating"], "time": row["time"]}

    if metrics is not None:
        @app.get("/metrics", summary="Prometheus metrics", dependencies=auth, response_class=Response)
        def prometheus() -> Response:
            return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(openai_router(service), dependencies=auth)

    # The schema and its UIs, behind the same key; the JS/CSS come from fastapi-offline's files.
    @app.get("/openapi.json", include_in_schema=False, dependencies=auth)
    def openapi_json() -> dict:
        return app.openapi()

    @app.get("/docs", include_in_schema=False, dependencies=auth)
    def swagger() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title + " - Swagger UI",
                                   swagger_js_url=f"{STATIC_DOCS_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{STATIC_DOCS_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{STATIC_DOCS_URL}/favicon.png")

    @app.get("/redoc", include_in_schema=False, dependencies=auth)
    def redoc() -> Response:
        return get_redoc_html(openapi_url="/openapi.json", title=app.title + " - ReDoc",
                              redoc_js_url=f"{STATIC_DOCS_URL}/redoc.standalone.js", with_google_fonts=False,
                              redoc_favicon_url=f"{STATIC_DOCS_URL}/favicon.png")

    app.mount(STATIC_DOCS_URL, StaticFiles(directory=str(_docs_static_dir())), name="static-offline-docs")

    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    if metrics is not None:
        app.add_middleware(MetricsMiddleware, metrics=metrics,
                           routes=["/score", "/v1/chat/completions", "/v1/models", "/feedback", "/metadata",
                                   "/metrics", "/healthz", "/openapi.json", "/docs", "/redoc"])
    return app


__all__ = ["Citation", "FeedbackRequest", "IndexVersion", "ScoreResponse", "ServedFlow", "Service", "arm_model_id",
           "create_app", "model_id", "new_request_id"]
