"""`ragline refresh --serve`: a Prefect deployment on a schedule publishes a version.

Schedules need a real Prefect server (the temporary one runs no scheduler), so this test
starts `prefect server start` on a free loopback port with its own home and database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragline.indexers.registry import IndexRegistry
from ragline.pipelines.cli import app
from tests.refresh.conftest import VENV_BIN, params_here


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout_s: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture()
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
           "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(home / "server.log", "w"),
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait(lambda: _healthy(url) or proc.poll() is not None, 120, "the Prefect server")
        assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_serve_without_server_says_how_to_start_one(workspace: Path) -> None:
    import prefect.settings

    with prefect.settings.temporary_settings(updates={prefect.settings.PREFECT_API_URL: None}):
        r = CliRunner().invoke(app, ["refresh", "--serve"])
    assert r.exit_code == 1 and "prefect server start" in r.stderr and "PREFECT_API_URL" in r.stderr


def test_scheduled_run_publishes_a_version(light_workspace: Path, prefect_harness, prefect_server: str) -> None:
    from ragline.pipelines.flows import refresh_flow

    reg = IndexRegistry(params_here().index.root)
    first = refresh_flow(params=params_here().to_dict())  # v0001, here (the scheduled run then has no parsing to do)
    (light_workspace / "data" / "sample" / "swarming.md").unlink()
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "PREFECT_API_URL": prefect_server,
           "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = light_workspace / "serve.log"
    serve = subprocess.Popen([str(VENV_BIN / "ragline"), "refresh", "--serve", "--interval-s", "3"], env=env,
                             stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # wait for the alias, not the version folder: the folder appears (rename) just before `latest` moves
        _wait(lambda: reg.resolve("sample@latest")[1] != first.version or serve.poll() is not None, 240,
              "a scheduled run to publish and move latest")
        assert serve.poll() is None, log.read_text()[-3000:]
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)
    assert reg.versions("sample")[:2] == [first.version, "v0002"]
    m = reg.manifest("sample", "v0002")
    assert m.parent_version == first.version and m.stats["refresh"]["removed"] == 1
    assert m.counts["documents"] == first.documents - 1
    assert reg.resolve("sample@latest")[1] in reg.versions("sample")[1:]


def test_prefect_cli_lists_deployments_and_flow_runs(prefect_server: str, tmp_path: Path) -> None:
    """Regression: with fastapi >= 0.151, `prefect deployment ls` and `prefect flow-run ls` got
    `422 Unprocessable Entity for url .../api/deployments/filter` from the server this test
    starts (the client sends `"limit": null`; constraints.txt pins fastapi 0.150.0)."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_HOME": str(tmp_path)}
    script = ("from prefect import flow\n"
              "@flow(name='ux-probe')\n"
              "def probe():\n    return 1\n"
              "probe()\n")
    run = subprocess.run([str(VENV_BIN / "python"), "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    for cmd in (["deployment", "ls"], ["flow-run", "ls"]):
        r = subprocess.run([str(VENV_BIN / "prefect"), *cmd], env={**env, "COLUMNS": "200"}, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, f"prefect {' '.join(cmd)}: {r.stdout[-1500:]}{r.stderr[-1500:]}"
        assert "422" not in r.stdout + r.stderr and "Traceback" not in r.stderr
    assert "ux-probe" in r.stdout  # flow-run ls shows the run made above
