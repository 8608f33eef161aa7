"""Test helper of the serving tests: run an ASGI app on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def serving(app: object, lifespan: str = "off") -> Iterator[str]:
    """Run an ASGI ``app`` with uvicorn in a thread on a free loopback port; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


class ServerProcess:
    """``ragline flow serve`` run as a subprocess on a free loopback port (see :func:`serve_cli`).

    Attributes:
        url: ``http://127.0.0.1:PORT``.
        stderr: what the server printed on stderr, set once it has stopped.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.stderr = ""


@contextmanager
def serve_cli(args: list[str], cwd: Path, env: dict[str, str]) -> Iterator[ServerProcess]:
    """Start ``ragline flow serve ARGS --port PORT`` in ``cwd``, wait for ``/healthz``, yield the
    server; on exit stop it with SIGINT (killed after 20 s) and keep its stderr."""
    import signal
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ragline.pipelines.cli", "flow", "serve", *args, "--port", str(port)],
                            cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server = ServerProcess(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start: {proc.communicate()[1]}")
            time.sleep(0.2)
        yield server
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, server.stderr = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, server.stderr = proc.communicate()
