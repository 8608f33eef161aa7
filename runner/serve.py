"""Serve a flow over HTTP with FastAPI.

Endpoints:

- ``POST /score``: the flow's inputs as a JSON object (schema in OpenAPI); returns outputs,
  citations, latency, tokens and the index versions used (``?trace=true`` adds the per-node
  trace). 422 for inputs that do not match the flow's declared inputs, 502 when a model
  endpoint fails, 500 for other node failures.
- ``GET /healthz``: liveness, never authenticated.
- ``GET /metadata``: flow name, variant, inputs, outputs, nodes and index versions.
- ``GET /openapi.json`` and ``/docs``: the OpenAPI schema and its UI.

With an API key configured, ``/score`` and ``/metadata`` answer 401 unless the request has
``X-API-Key: <key>`` or ``Authorization: Bearer <key>`` (compared in constant time). Request
bodies larger than ``max_body_bytes`` are refused with 413 before any parsing.
"""

# No ``from __future__ import annotations``: FastAPI reads the runtime annotation of the
# dynamically built inputs model.

import hmac
import json
from typing import Any, Optional

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from ragline.runner.engine import FlowRunner
from ragline.runner.errors import FlowInputError, NodeError, ProviderError

DEFAULT_MAX_BODY_BYTES = 64 * 1024


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

    outputs: dict[str, Any]
    citations: list[Citation]
    latency_ms: float
    tokens: dict[str, int]
    flow: str
    variant: Optional[str] = None
    indexes: list[IndexVersion]
    trace: Optional[list[dict]] = None


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


def create_app(runner: FlowRunner, api_key: Optional[str] = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app serving ``runner``'s flow.

    Args:
        runner: a prepared flow runner (indexes opened, models warm).
        api_key: required key, or ``None`` for an open endpoint.
        max_body_bytes: largest accepted request body.
    """
    flow = runner.flow
    Inputs = runner.inputs_model
    indexes = runner.indexes
    index_versions = [IndexVersion(node=i["node"], ref=i["ref"], name=i["name"], version=i["version"]) for i in indexes]
    app = FastAPI(
        title=f"ragline flow: {flow.name}",
        description=(flow.spec.description or f"The {flow.name} flow") + " — served by ragline.",
        version="1",
    )
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key, when one is configured.")
    bearer = HTTPBearer(auto_error=False, description="Alternatively: Authorization: Bearer <key>.")

    def authorize(key: Optional[str] = Depends(key_header),
                  creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if api_key is None:
            return
        given = key or (creds.credentials if creds else None)
        if not given or not hmac.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong API key",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.get("/healthz", summary="Liveness probe")
    def healthz() -> dict:
        return {"status": "ok", "flow": flow.name}

    @app.get("/metadata", summary="Flow and index versions", dependencies=[Depends(authorize)])
    def metadata() -> dict:
        return {
            "flow": flow.name, "description": flow.spec.description, "variant": flow.variant,
            "variants": list(flow.spec.variants),
            "inputs": {k: v.model_dump() for k, v in flow.spec.inputs.items()},
            "outputs": list(flow.spec.outputs), "nodes": [{"name": n.name, "type": n.type} for n in flow.spec.nodes],
            "order": list(flow.order),
            "indexes": [{k: i[k] for k in ("node", "ref", "name", "version", "created_at", "params_hash", "counts",
                                           "embedding", "chunker", "query_embedding")} for i in indexes],
        }

    def score(body: Inputs, request: Request, trace: bool = False) -> ScoreResponse:  # type: ignore[valid-type]
        try:
            result = runner.run(body.model_dump(exclude_unset=True))
        except FlowInputError as e:
            raise HTTPException(status_code=422, detail=str(e)) from e
        except NodeError as e:
            cause = e.__cause__
            status = 502 if isinstance(cause, ProviderError) else 500
            raise HTTPException(status_code=status, detail=str(e)) from e
        return ScoreResponse(
            outputs=result.outputs, citations=[Citation(**{k: c.get(k) for k in Citation.model_fields if k in c})
                                               for c in result.citations],
            latency_ms=round(result.latency_ms, 3), tokens=result.tokens, flow=flow.name, variant=flow.variant,
            indexes=index_versions, trace=[t.to_dict() for t in result.trace] if trace else None,
        )

    app.post("/score", response_model=ScoreResponse, summary="Run the flow on one set of inputs",
             dependencies=[Depends(authorize)],
             responses={401: {"description": "Missing or wrong API key"}, 413: {"description": "Body too large"},
                        422: {"description": "Inputs do not match the flow"},
                        502: {"description": "The model endpoint failed"}})(score)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    return app
