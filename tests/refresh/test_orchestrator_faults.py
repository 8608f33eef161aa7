"""Faults around the orchestrator and the disk (issue 11): a Prefect API that is slow to start or
dies mid-run, a disk that fills up while publishing. Each command ends within a bounded time,
with one line or with its work done, never with a traceback or a hang."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from ragline.indexers.registry import IndexRegistry
from tests.conftest import write_params
from tests.refresh.conftest import VENV_BIN, params_here, publish_texts

#: Patches the registry's atomic JSON write to fail with ENOSPC for the staging manifest, then
#: runs the CLI (the subprocess's stderr is what a user sees, Prefect's log lines included).
DISK_FULL = """
import errno, sys
import ragline.indexers.registry as registry
real = registry.write_json_atomic
def full(path, *a, **k):
    if ".staging-" in str(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return real(path, *a, **k)
registry.write_json_atomic = full
from ragline.pipelines.cli import main
sys.argv = ["ragline", *sys.argv[1:]]
main()
"""


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def test_disk_full_during_publish_is_one_line_and_keeps_the_alias(light_workspace: Path, subprocess_env) -> None:
    """Defect 8: disk full during publish printed 3-6 tracebacks (the alias stayed valid)."""
    first = publish_texts(params_here(), {"d/a.txt": "alpha bees and frames"})
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", DISK_FULL, "ingest"], env=subprocess_env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    errors = _error_lines(r.stderr)
    assert len(errors) == 1 and "No space left on device (ENOSPC); the disk is full" in errors[0], r.stderr
    assert "manifest.json" in errors[0]
    assert time.monotonic() - t0 < 120  # ENOSPC is not retried (publish retries transient I/O only)
    reg = IndexRegistry("indexes")
    assert reg.resolve("sample") == ("sample", first.version) and reg.versions("sample") == [first.version]
    assert not list(Path("indexes/sample").glob(".staging-*"))


def _ingest_without_api(workspace: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", PREFECT_LOGGING_LEVEL="INFO", PYTHONUNBUFFERED="1")
    return subprocess.Popen([str(VENV_BIN / "ragline"), "ingest"], cwd=workspace, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_prefect_api_slow_to_start_fails_in_one_line(light_workspace: Path) -> None:
    """Defect 10: a temporary Prefect API slower to start than its timeout (20 s by default, now
    prefect.startup_timeout_s) ended in a RuntimeError traceback."""
    write_params(light_workspace, prefect={"startup_timeout_s": 0.5})
    t0 = time.monotonic()
    proc = _ingest_without_api(light_workspace)
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 1, output
    assert "Traceback" not in output, output
    errors = _error_lines(output)
    assert len(errors) == 1 and "did not start within 0.5 s (prefect.startup_timeout_s" in errors[0], output
    assert time.monotonic() - t0 < 150
    assert not Path("indexes/sample").exists() or not IndexRegistry("indexes").versions("sample")


@pytest.mark.slow
def test_prefect_api_killed_mid_run_ends_cleanly(light_workspace: Path) -> None:
    """Defect 10: the temporary Prefect API died in the middle of an ingest; the version was
    published but the flow raised ConnectError and hung until killed. Now the command either
    finishes its work (exit 0, version published and aliased) or fails with one line (exit 1,
    nothing published), within a bounded time, and the index lock is free afterwards."""
    docs = light_workspace / "data" / "sample"
    for i in range(40):
        (docs / f"note-{i:03d}.txt").write_text(f"note {i}: " + "bees build comb from wax in spring " * 40)
    proc = _ingest_without_api(light_workspace)
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "Beginning flow run" in line:
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(240), "".join(lines)
    servers = [c for c in psutil.Process(proc.pid).children(recursive=True) if "uvicorn" in " ".join(c.cmdline())]
    assert servers, "no temporary Prefect server found"
    t_kill = time.monotonic()
    for s in servers:
        s.kill()
    try:
        proc.wait(timeout=150)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("ragline ingest hung after its Prefect API was killed:\n" + "".join(lines[-30:]))
    reader.join(5)
    output = "".join(lines)
    assert time.monotonic() - t_kill < 150
    assert "Traceback" not in output, output[-3000:]
    reg = IndexRegistry(light_workspace / "indexes")
    if proc.returncode == 0:
        assert reg.versions("sample") == ["v0001"] and reg.resolve("sample") == ("sample", "v0001")
        assert "could not record its final state" in output
    else:
        assert proc.returncode == 1
        errors = _error_lines(output)
        assert len(errors) == 1 and "Prefect API" in errors[0], output[-3000:]
    with reg.lock("sample", timeout_s=5):  # released
        pass


#: Two ingests in one process without PREFECT_API_URL, recording where and when Prefect's
#: temporary API was started and when the run's preparation (_prepare_ingest) ran.
TWO_INGESTS = """
import json, threading, time
from prefect.server.api import server as srv
starts, spans = [], []
real_run, real_start = srv.SubprocessASGIServer._run_uvicorn_command, srv.SubprocessASGIServer.start
def run(self):
    starts.append(threading.current_thread().name)
    return real_run(self)
def start(self, timeout=None):
    t = time.monotonic()
    real_start(self, timeout)
    spans.append((t, time.monotonic()))
srv.SubprocessASGIServer._run_uvicorn_command, srv.SubprocessASGIServer.start = run, start
import ragline.pipelines.flows as flows
from ragline.pipelines.config import load_params
prepared, real_prepare = [], flows._prepare_ingest
def prepare(args, kwargs):
    t = time.monotonic()
    undo = real_prepare(args, kwargs)
    prepared.append((t, time.monotonic()))
    return undo
flows.ingest_flow._before = prepare
versions = [flows.ingest_flow([], load_params("params.yaml").to_dict()).version for _ in range(2)]
print(json.dumps({"versions": versions, "starts": starts, "first_start": spans[0], "prepared": prepared}))
"""


def test_temporary_api_starts_once_per_process_while_the_run_is_prepared(light_workspace: Path) -> None:
    """Issue 16: Prefect's temporary API (5-15 s) started inside the first API call, with the
    caller waiting. Now it starts in a thread while the ingest is prepared (parsers preloaded,
    embedder warmed), is joined before the flow runs, and a second ingest in the process reuses it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    r = subprocess.run([sys.executable, "-c", TWO_INGESTS], cwd=light_workspace, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = __import__("json").loads(r.stdout.strip().splitlines()[-1])
    assert out["versions"] == ["v0001", "v0002"]
    assert out["starts"] == ["ragline-prefect-api"]  # one server, started in the background thread
    (s0, s1), (p0, p1) = out["first_start"], out["prepared"][0]
    assert s0 <= p0 + 1 and p0 < s1  # the preparation ran while the API was starting
    assert len(out["prepared"]) == 2


def test_tasks_take_their_arguments_without_prefect_walking_them(prefect_harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """flows._task: Prefect does not visit the elements of a task's arguments (it visited every
    scanned file, document and chunk row before: the cost grew with the corpus); a future passed
    directly is still resolved, and the function gets the values themselves."""
    from dataclasses import dataclass

    from prefect import flow
    from prefect.utilities import collections

    from ragline.pipelines import flows

    @dataclass
    class Item:
        name: str
        sizes: list[int]

    @flows._task(name="count-items", cache_policy=flows.NO_CACHE)
    def count(items: list[Item], extra: dict, n: int) -> int:
        assert isinstance(items, list) and isinstance(items[0], Item) and isinstance(extra, dict)
        return len(items) + sum(len(i.sizes) for i in items) + len(extra) + n

    @flows._task(name="two", cache_policy=flows.NO_CACHE)
    def two() -> int:
        return 2

    items = [Item(f"f{i}", [i, i + 1]) for i in range(5000)]
    visits = []
    real = collections.visit_collection
    monkeypatch.setattr(collections, "visit_collection", lambda *a, **k: visits.append(1) or real(*a, **k))

    @flow(name="opaque-args")
    def run() -> int:
        return count(items, {"a": items}, n=two.submit())

    assert run() == 5000 + 10000 + 1 + 2
    assert len(visits) < 200, len(visits)  # 100,007 without opaque: every item, field and list element
