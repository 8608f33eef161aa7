"""A loopback HTTP server speaking the OpenAI chat-completions protocol, with scripted replies."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted reply: HTTP status, JSON body (or raw text) and a delay before answering."""

    status: int = 200
    content: str = "ok"
    usage: dict | None = field(default_factory=lambda: {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})
    delay_s: float = 0.0
    raw: str | None = None
    headers: dict = field(default_factory=dict)


class FakeOpenAI:
    """Serve ``POST /v1/chat/completions`` on 127.0.0.1; replies are popped from ``script``
    (the last one repeats). ``requests`` records every request's headers and JSON body."""

    def __init__(self, script: list[Reply]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
                reply = fake.script.pop(0) if len(fake.script) > 1 else fake.script[0]
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if self.path != "/v1/chat/completions":
                    reply = Reply(status=404, raw='{"error": "not found"}')
                if reply.status == 200 and reply.raw is None and fake.requests[-1]["json"].get("stream"):
                    self._stream(reply)
                    return
                if reply.raw is not None:
                    payload = reply.raw.encode()
                else:
                    data: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "model": "fake-model",
                                            "choices": [{"index": 0, "finish_reason": "stop",
                                                         "message": {"role": "assistant", "content": reply.content}}]}
                    if reply.usage is not None:
                        data["usage"] = reply.usage
                    payload = json.dumps(data).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    pass

            def _stream(self, reply: Reply) -> None:
                """SSE chunks of ``reply.content`` split after each space, then usage (if any) and [DONE]."""
                words = reply.content.split(" ")
                pieces = [w + " " for w in words[:-1]] + [words[-1]]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for piece in pieces:
                    event = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "fake-model",
                             "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                if reply.usage is not None:
                    event = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "fake-model",
                             "choices": [], "usage": reply.usage}
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
