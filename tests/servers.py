"""Real servers on loopback for source tests and benchmarks: moto's S3 server mode (a
subprocess) and a threaded HTTP file server with request counting and test routes."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

MOTO_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    """A TCP port nobody listens on now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server(timeout_s: float = 60.0) -> Iterator[str]:
    """``moto_server -H 127.0.0.1 -p PORT`` as a subprocess; yields its endpoint URL and stops it.

    The caller sets ``AWS_ENDPOINT_URL`` to the endpoint and :data:`MOTO_ENV` (moto accepts any
    credentials).
    """
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {url}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files (with Last-Modified / If-Modified-Since) plus test routes:
    ``/moved/NAME`` redirects to the same path on ``localhost`` (another host name), and
    ``/slow-sitemap.xml`` sends half a sitemap, then waits for ``server.release``."""

    def log_message(self, *args) -> None:  # quiet
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        self.server.responses[(self.path, code)] += 1
        super().send_response(code, message)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.requests[self.path] += 1
        if self.path.startswith("/moved/"):
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.server.server_port}/{self.path[7:]}")
            self.end_headers()
            return
        if self.path == "/slow-sitemap.xml":
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self.end_headers()
            head = ('<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                    '<url><loc>http://127.0.0.1/first.html</loc></url>')
            self.wfile.write(head.encode())
            self.wfile.flush()
            self.server.release.wait(30)
            self.wfile.write(b"<url><loc>http://127.0.0.1/second.html</loc></url></urlset>")
            return
        super().do_GET()


@contextlib.contextmanager
def http_server(root: str | os.PathLike) -> Iterator[http.server.ThreadingHTTPServer]:
    """A threaded HTTP server serving ``root`` on ``127.0.0.1``; ``server.requests`` counts GETs
    per path and ``server.responses`` per ``(path, status)``, ``server.url`` is its base URL, ``server.release`` lets the slow route finish."""

    def handler(*args, **kwargs):
        return _Handler(*args, directory=str(root), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.requests = Counter()
    server.responses = Counter()
    server.release = threading.Event()
    server.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def dask_cluster(n_workers: int = 2, cwd: str | os.PathLike | None = None, timeout_s: float = 120.0,
                 worker_env: dict[str, str] | None = None) -> Iterator[str]:
    """A real Dask cluster on loopback: ``dask scheduler`` plus ``n_workers`` ``dask worker``
    processes (one thread each, no dashboard; each under a nanny), started in ``cwd``, the
    workers with ``worker_env`` added to their environment; yields the scheduler address and
    stops every process it started."""
    port = free_port()
    exe = str(Path(sys.executable).with_name("dask"))
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_LOGGING__DISTRIBUTED": "error"}
    wenv = {**env, **(worker_env or {})}
    procs = [subprocess.Popen([exe, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        _wait_port(port, procs[0], timeout_s)
        for _ in range(n_workers):
            procs.append(subprocess.Popen([exe, "worker", address, "--nthreads", "1", "--nworkers", "1",
                                           "--no-dashboard", "--host", "127.0.0.1"],
                                          cwd=cwd, env=wenv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout=timeout_s) as client:
            client.wait_for_workers(n_workers, timeout=timeout_s)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _wait_port(port: int, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")
            time.sleep(0.2)
