"""A flow's published index as Model Context Protocol tools (the official ``mcp`` SDK).

``ragline mcp serve flows/qa`` exposes two tools to MCP clients (Claude Desktop, IDEs,
agents), over stdio (default) or streamable HTTP (``--transport http``, path ``/mcp``):

- ``search(query, k=5, mode=None, filters=None)``: the ranked chunks of the flow's (last)
  retrieve node: ``rank``, ``score``, ``chunk_id``, ``doc_id``, ``source``, ``page``,
  ``char_start``, ``char_end``, ``section_path``, ``text``. ``mode`` is ``dense``, ``bm25`` or
  ``hybrid`` (default: the node's); ``filters`` as in a flow's retrieve node (``source`` glob,
  ``doc_id``, ``page`` or ``{min, max}``, ``section``).
- ``answer(question)``: the whole flow; returns ``answer``, ``citations``, ``request_id``,
  ``flow``, ``variant``, ``indexes``, ``tokens``, ``cost_usd`` (the request is logged like
  ``/score``, so ``POST /feedback`` of ``flow serve`` on the same log accepts its id).

Over HTTP the same API key rule as ``flow serve`` applies (``Authorization: Bearer <key>`` or
``X-API-Key``; ``--no-auth`` to open it); stdio needs none (the client starts the process).
A bad argument is returned as a tool error (``isError``) with a one-line message.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Literal, Optional

from ragline.core.serve_config import ServeConfig
from ragline.runner.engine import FlowRunner
from ragline.runner.errors import FlowInputError, NodeError
from ragline.indexers.retrieval import ChunkFilter
from ragline.runner.nodes import RetrieveNode


def _retrieve_node(runner: FlowRunner) -> RetrieveNode:
    nodes = [n for n in runner.nodes.values() if isinstance(n, RetrieveNode)]
    if not nodes:
        raise FlowInputError(f"flow {runner.flow.name!r} has no retrieve node to search")
    return nodes[-1]


def search_index(runner: FlowRunner, query: str, k: int = 5, mode: Optional[str] = None,
                 filters: Optional[dict] = None) -> list[dict]:
    """Search the flow's last retrieve node's index.

    Args:
        runner: a prepared runner.
        query: the query text (non-empty).
        k: chunks returned, 1..100.
        mode: ``dense`` | ``bm25`` | ``hybrid``, or ``None`` for the node's own.
        filters: retrieve-node filters (``source``, ``doc_id``, ``page``, ``section``).

    Returns:
        Ranked chunk dicts (see the module docstring).

    Raises:
        FlowInputError: an empty query, ``k`` out of range, an unknown mode or filter.
    """
    if not isinstance(query, str) or not query.strip():
        raise FlowInputError("search: query must be a non-empty string")
    if not 1 <= int(k) <= 100:
        raise FlowInputError(f"search: k={k}: use 1..100")
    node = _retrieve_node(runner)
    try:
        spec = node.retrieval.override("arguments", k=int(k), mode=mode)
        chunk_filter = ChunkFilter.from_mapping(filters or {}, "filters")
    except ValueError as e:  # ConfigError: an unknown mode or filter key, named with the allowed ones
        raise FlowInputError(f"search: {e}") from e
    return [h.to_dict() for h in node.retriever.search(query, spec, chunk_filter)]


def build_mcp_server(runner: FlowRunner, config: Optional[ServeConfig] = None) -> Any:
    """An :class:`mcp.server.mcpserver.MCPServer` with the ``search`` and ``answer`` tools.

    Args:
        runner: a prepared runner (indexes open, models warm).
        config: ``serve:`` params (request log, prices); default: request log off.
    """
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from ragline.runner.requestlog import RequestLog
    from ragline.runner.serve import Service, new_request_id

    if config is None:
        config = ServeConfig.model_validate({"request_log": {"enabled": False}})
    from ragline.runner.tracing import RunTracer, tracer_provider

    log = RequestLog(config.request_log) if config.request_log.enabled else None
    provider = tracer_provider(config.traces)
    service = Service([runner], config, None, log, RunTracer(provider) if provider is not None else None)
    served = service.default
    idx = ", ".join(f"{i.name}@{i.version}" for i in served.indexes) or "no index"
    server = MCPServer(name=f"ragline-{runner.flow.name}", version="1", log_level="WARNING",
                       instructions=f"Search and answer from the ragline index {idx} (flow {served.model}).")

    @server.tool(description=f"Search the index {idx}: the k best chunks for a query, with their source, page "
                             "and character offsets. mode: dense | bm25 | hybrid (default: the flow's). filters: "
                             "{source: glob, doc_id, page: n or {min, max}, section}.")
    def search(query: str, k: int = 5, mode: Optional[Literal["dense", "bm25", "hybrid"]] = None,
               filters: Optional[dict[str, Any]] = None) -> list[dict]:
        try:
            return search_index(runner, query, k, mode, filters)
        except FlowInputError as e:
            raise ToolError(str(e)) from e

    @server.tool(description=f"Answer a question from the index {idx} with the {served.model} flow; the answer "
                             "cites its chunks as [n], listed in citations.", structured_output=True)
    def answer(question: str) -> dict[str, Any]:
        request_id = new_request_id()
        try:
            result, usage = service.run(served, {"question": question}, route="mcp:answer", request_id=request_id)
        except (FlowInputError, NodeError) as e:
            raise ToolError(str(e)) from e
        a = result.outputs.get("answer")
        return {"answer": a if isinstance(a, str) else json.dumps(result.outputs, default=str),
                "citations": result.citations, "request_id": request_id, "flow": served.flow,
                "variant": served.variant, "indexes": [i.model_dump() for i in served.indexes],
                "tokens": usage.to_dict(), "cost_usd": round(usage.cost_usd, 8)}

    server.ragline_service = service  # type: ignore[attr-defined]  (closed by the CLI)
    return server


class ApiKeyMiddleware:
    """ASGI middleware: 401 unless ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (constant time)."""

    def __init__(self, app: Any, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers", []))
            given = headers.get(b"x-api-key")
            auth = headers.get(b"authorization", b"")
            if given is None and auth[:7].lower() == b"bearer ":
                given = auth[7:].strip()
            if not given or not hmac.compare_digest(given, self.key):
                body = b'{"detail": "missing or wrong API key"}'
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b"Bearer"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def http_app(server: Any, api_key: Optional[str], host: str = "127.0.0.1") -> Any:
    """The streamable-HTTP ASGI app of ``server`` (``/mcp``), behind the API key when one is given.

    Stateless (``stateless_http``): the tools keep no per-client state, so every request stands
    alone, and a shutdown does not wait for idle sessions to time out.
    """
    app = server.streamable_http_app(streamable_http_path="/mcp", host=host, stateless_http=True)
    return app if api_key is None else ApiKeyMiddleware(app, api_key)


__all__ = ["ApiKeyMiddleware", "build_mcp_server", "http_app", "search_index"]
