"""The OpenAI-compatible API of a served flow: ``POST /v1/chat/completions``, ``GET /v1/models``.

Any client of the OpenAI Chat Completions API (the ``openai`` Python package, chat UIs)
can talk to a served flow:

- **Models**: one per served flow and variant, ``flow`` or ``flow:variant`` (``GET /v1/models``).
- **Question**: the content of the *last* ``user`` message (earlier messages are accepted and
  ignored: a flow answers one question from the index). Other flow inputs can be given in
  an extra field ``inputs`` (e.g. ``{"source": "*.md"}``; with the openai client,
  ``extra_body={"inputs": {...}}``).
- **Answer**: the assistant message is the flow's ``answer`` with its ``[n]`` markers,
  followed by a ``References:`` block, one line ``[n] source (p. page)`` per citation.
- **Citations**: the extra top-level field ``citations`` (the same objects as ``/score``:
  ``id`` = n, ``chunk_id``, ``doc_id``, ``source``, ``page``, ``char_start``, ``char_end``,
  ``rank``, ``quotes``), and ``ragline`` = ``{request_id, flow, variant, indexes,
  latency_ms, cost_usd}``. With the openai client: ``completion.model_extra["citations"]``.
- **Id**: the completion ``id`` is ``chatcmpl-<request_id>``; ``POST /feedback`` accepts it.
- **Usage**: ``usage`` = prompt / completion / total tokens of the flow's llm calls.
- **Streaming**: ``stream: true`` answers with server-sent events in the OpenAI chunk format
  (``chat.completion.chunk`` objects, then ``data: [DONE]``): a first chunk with the role,
  the answer text as the provider produces it (the extractive provider one cited sentence
  per chunk, the openai provider relaying the upstream deltas), a chunk with the references,
  a last chunk with ``finish_reason: "stop"`` carrying ``citations`` and ``ragline``, and,
  with ``stream_options.include_usage``, a usage chunk with empty ``choices``. An error before
  the first delta is an ordinary HTTP error; one after it is an ``error`` event.

Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: 400
``invalid_request_error`` for a malformed request (not JSON, no messages, no user message,
an unknown role, non-text content, ``n`` > 1, ``tools``/``functions``, inputs the flow does not
accept), 404 ``model_not_found``, 502 ``upstream_error`` when the flow's model endpoint
fails, 500 ``server_error`` for other node failures.

Source: the OpenAI API reference, "Create chat completion" and "The chat completion chunk
object" (https://platform.openai.com/docs/api-reference/chat).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Optional

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ragline.runner.errors import FlowInputError, NodeError, ProviderError
from ragline.runner.providers import STREAM_SINK
from ragline.runner.split import split_key

if TYPE_CHECKING:
    from ragline.runner.serve import ServedFlow, Service

ROLES = ("system", "developer", "user", "assistant")

#: OpenAPI request body of ``POST /v1/chat/completions`` (the route reads the body itself to
#: answer malformed requests with OpenAI-style 400s instead of FastAPI's 422).
CHAT_REQUEST_SCHEMA = {
    "type": "object", "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "description": "A served model: FLOW or FLOW:VARIANT (GET /v1/models)."},
        "messages": {"type": "array", "minItems": 1, "description": "The last user message is the question.",
                     "items": {"type": "object", "required": ["role"],
                               "properties": {"role": {"type": "string", "enum": list(ROLES)},
                                              "content": {"anyOf": [{"type": "string"}, {"type": "array"}]}}}},
        "stream": {"type": "boolean", "default": False},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        "n": {"type": "integer", "enum": [1]},
        "inputs": {"type": "object", "description": "Other flow inputs (e.g. source)."},
    },
}


class OpenAIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def response(self, headers: Optional[dict] = None) -> JSONResponse:
        """The JSON error response."""
        return JSONResponse(status_code=self.status, headers=headers, content=self.body())

    def body(self) -> dict:
        """``{"error": {...}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise OpenAIError(400, f"{where}.content[{i}]: only text content is supported (got {kind!r})",
                                  param=f"{where}.content")
            texts.append(part["text"])
        return "\n".join(texts)
    if content is None:
        return ""
    raise OpenAIError(400, f"{where}.content must be a string or a list of text parts", param=f"{where}.content")


def parse_request(body: Any, service: "Service", key: Optional[str] = None) -> tuple["ServedFlow", dict, bool, bool]:
    """Check a chat-completions request body.

    The flow's own model is routed to a split arm (:meth:`Service.by_model`) by ``key`` (the
    ``X-Ragline-User``/``X-Session-Id`` header), else by the request's ``user`` field.

    Returns:
        (served flow, flow inputs, stream, include_usage).

    Raises:
        OpenAIError: 400 for a malformed request, 404 for an unknown model.
    """
    if not isinstance(body, dict):
        raise OpenAIError(400, "request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError(400, "you must provide a model parameter", param="model")
    user = body.get("user")
    served = service.by_model(model, key or (user if isinstance(user, str) else None))
    if served is None:
        raise OpenAIError(404, f"the model {model!r} does not exist; served: {', '.join(service.model_ids())}",
                          type_="invalid_request_error", param="model", code="model_not_found")
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n != 1):
        raise OpenAIError(400, f"n={n!r}: only n=1 is supported (a flow gives one answer)", param="n")
    for name in ("tools", "functions"):
        if body.get(name):
            raise OpenAIError(400, f"{name} are not supported: a flow answers from its index", param=name)
    if body.get("tool_choice") not in (None, "none"):
        raise OpenAIError(400, "tool_choice is not supported", param="tool_choice")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise OpenAIError(400, "stream must be a boolean", param="stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise OpenAIError(400, "stream_options must be an object", param="stream_options")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIError(400, "messages must be a non-empty array", param="messages")
    question = None
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise OpenAIError(400, f"{where} must be an object", param=where)
        role = m.get("role")
        if role not in ROLES:
            raise OpenAIError(400, f"{where}.role {role!r} is not supported (use one of: {', '.join(ROLES)})",
                              param=f"{where}.role")
        text = _text_of(m.get("content"), where)
        if role == "user":
            question = text
    if question is None:
        raise OpenAIError(400, "messages hold no user message: the last user message is the question",
                          param="messages")
    extra = body.get("inputs") or {}
    if not isinstance(extra, dict):
        raise OpenAIError(400, "inputs must be an object of flow inputs", param="inputs")
    if "question" in extra:
        raise OpenAIError(400, "inputs.question: the question is the last user message", param="inputs")
    return served, {"question": question, **extra}, stream, bool(opts.get("include_usage"))


def references(citations: list[dict]) -> str:
    """The ``References:`` block appended to an answer (empty without citations)."""
    if not citations:
        return ""
    lines = []
    for c in citations:
        page = f" (p. {c['page']})" if c.get("page") is not None else ""
        lines.append(f"[{c['id']}] {c.get('source') or c.get('doc_id') or c['chunk_id']}{page}")
    return "\n\nReferences:\n" + "\n".join(lines)


def _answer_of(result: Any) -> str:
    a = result.outputs.get("answer")
    return a if isinstance(a, str) else json.dumps(result.outputs, ensure_ascii=False, default=str)


def _flow_error(e: Exception) -> OpenAIError:
    if isinstance(e, FlowInputError):
        return OpenAIError(400, str(e), param="messages")
    if isinstance(e, NodeError) and isinstance(e.__cause__, ProviderError):
        return OpenAIError(502, str(e), type_="upstream_error")
    return OpenAIError(500, str(e), type_="server_error")


def _extras(served: "ServedFlow", result: Any, usage: Any, request_id: str) -> dict:
    from ragline.runner.serve import citation_models

    return {"citations": [c.model_dump() for c in citation_models(result.citations)],
            "ragline": {"request_id": request_id, "flow": served.flow, "variant": served.variant, "arm": served.arm,
                        "indexes": [i.model_dump() for i in served.indexes],
                        "latency_ms": round(result.latency_ms, 3), "cost_usd": round(usage.cost_usd, 8)}}


def _usage(usage: Any) -> dict:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def openai_router(service: "Service") -> APIRouter:
    """The ``/v1`` routes over ``service``'s flows."""
    from ragline.runner.serve import new_request_id

    router = APIRouter(tags=["OpenAI-compatible"])
    started = int(time.time())

    @router.get("/v1/models", summary="Served flows as OpenAI models")
    def models() -> dict:
        routed = ([{"id": service.split_model, "object": "model", "created": started, "owned_by": "ragline",
                    "flow": service.split_model, "split": service.split.to_text()}]
                  if service.split_model and service.split_model not in service.served else [])
        return {"object": "list", "data": routed + [
            {"id": mid, "object": "model", "created": started, "owned_by": "ragline",
             "flow": s.flow, "variant": s.variant, "arm": s.arm, "indexes": [i.model_dump() for i in s.indexes]}
            for mid, s in service.served.items()]}

    @router.post("/v1/chat/completions", summary="OpenAI-compatible chat completion (the flow answers)",
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "application/json": {"schema": CHAT_REQUEST_SCHEMA}}}},
                 responses={400: {"description": "Malformed request (OpenAI error object)"},
                            404: {"description": "Unknown model"}, 502: {"description": "Model endpoint failed"}})
    async def chat_completions(request: Request) -> Any:
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            return OpenAIError(400, "request body is not valid JSON").response()
        try:
            served, inputs, stream, include_usage = parse_request(body, service, split_key(request.headers))
        except OpenAIError as e:
            if service.metrics is not None:
                service.metrics.error("/v1/chat/completions", "-", "InvalidRequest")
            return e.response()
        request.state.model = served.model
        request_id = new_request_id()
        cid = f"chatcmpl-{request_id}"
        headers = {"X-Request-ID": cid}
        created = int(time.time())
        if not stream:
            try:
                result, usage = await run_in_threadpool(service.run, served, inputs, route="/v1/chat/completions",
                                                        request_id=request_id)
            except (FlowInputError, NodeError) as e:
                return _flow_error(e).response(headers)
            content = _answer_of(result) + references(result.citations)
            return JSONResponse(headers=headers, content={
                "id": cid, "object": "chat.completion", "created": created, "model": served.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": _usage(usage), **_extras(served, result, usage, request_id)})
        return await _stream(service, served, inputs, request_id, cid, created, include_usage, headers)

    return router


async def _stream(service: "Service", served: "ServedFlow", inputs: dict, request_id: str, cid: str, created: int,
                  include_usage: bool, headers: dict) -> Any:
    """Run the flow in a worker thread, relaying provider deltas as SSE chunks."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def sink(delta: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ("delta", delta))

    def work() -> None:
        token = STREAM_SINK.set(sink)
        try:
            out = service.run(served, inputs, route="/v1/chat/completions", request_id=request_id, stream=True)
            loop.call_soon_threadsafe(queue.put_nowait, ("done", out))
        except Exception as e:  # handed to the event loop, answered as an error
            loop.call_soon_threadsafe(queue.put_nowait, ("error", e))
        finally:
            STREAM_SINK.reset(token)

    task = asyncio.ensure_future(run_in_threadpool(work))  # anyio's pool (40 threads), as sync routes
    first = await queue.get()
    if first[0] == "error":
        await task
        e = first[1]
        if isinstance(e, (FlowInputError, NodeError)):
            return _flow_error(e).response(headers)
        raise e

    def chunk(delta: dict, finish: Optional[str] = None, **extra: Any) -> str:
        data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": served.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    async def events() -> AsyncIterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        item = first
        streamed = False
        while True:
            kind, value = item
            if kind == "delta":
                streamed = True
                yield chunk({"content": value})
            elif kind == "error":
                err = _flow_error(value) if isinstance(value, (FlowInputError, NodeError)) else \
                    OpenAIError(500, str(value), type_="server_error")
                yield f"data: {json.dumps(err.body())}\n\n"
                yield "data: [DONE]\n\n"
                return
            else:
                result, usage = value
                if not streamed:  # a flow whose llm node did not stream (e.g. no llm node)
                    yield chunk({"content": _answer_of(result)})
                refs = references(result.citations)
                if refs:
                    yield chunk({"content": refs})
                yield chunk({}, "stop", **_extras(served, result, usage, request_id))
                if include_usage:
                    data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": served.model,
                            "choices": [], "usage": _usage(usage)}
                    yield f"data: {json.dumps(data)}\n\n"
                yield "data: [DONE]\n\n"
                await task
                return
            item = await queue.get()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


__all__ = ["OpenAIError", "ROLES", "openai_router", "parse_request", "references"]
