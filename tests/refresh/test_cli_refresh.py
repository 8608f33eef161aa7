"""`ragline refresh` as a command: the no-change path skips Prefect; the index lock."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from ragline.indexers.registry import IndexRegistry, LockTimeoutError
from ragline.pipelines.cli import app
from tests.conftest import write_params
from tests.refresh.conftest import params_here

runner = CliRunner()

NO_CHANGE_PROBE = """
import json, sys
from ragline.pipelines.cli import app
try:
    app(["refresh", "--json"], standalone_mode=False)
finally:
    heavy = sorted(m for m in ("prefect", "torch", "unstructured", "sentence_transformers") if m in sys.modules)
    sys.stderr.write("HEAVY=" + json.dumps(heavy) + "\\n")
"""

HOLD_LOCK = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_no_change_refresh_exits_0_without_prefect_or_models(light_workspace: Path, prefect_harness) -> None:
    from ragline.pipelines.flows import refresh_flow

    first = refresh_flow(params=params_here().to_dict())
    r = subprocess.run([sys.executable, "-c", NO_CHANGE_PROBE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["nothing_changed"] and out["version"] is None and out["parent_version"] == first.version
    assert out["counts"] == {"added": 0, "changed": 0, "removed": 0, "unchanged": first.documents, "skipped": 0}
    assert "HEAVY=[]" in r.stderr
    text = runner.invoke(app, ["refresh"])
    assert text.exit_code == 0
    assert f"nothing changed since {first.version}" in " ".join(text.stdout.split())
    assert IndexRegistry("indexes").versions("sample") == [first.version]


def test_refresh_waits_for_the_lock_then_fails_clearly(workspace: Path) -> None:
    write_params(workspace, index={"lock_timeout_s": 0.5})
    reg = IndexRegistry(params_here().index.root)
    lock_file = (reg.index_dir("sample") / ".lock")
    lock_file.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock_file.resolve()), "60"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        r = runner.invoke(app, ["refresh"])
        waited = time.perf_counter() - t0
        flat = " ".join(r.stderr.split())
        assert r.exit_code == 1 and "index 'sample' is locked by another refresh, publish or gc" in flat
        assert "waited 0.5 s = index.lock_timeout_s" in flat and "Traceback" not in r.stderr
        assert waited >= 0.5
        assert reg.versions("sample") == []
    finally:
        holder.kill()
        holder.wait()


def test_lock_is_exclusive_between_processes_and_reentrant_within_one(workspace: Path) -> None:
    reg = IndexRegistry("indexes")
    lock_file = reg.index_dir("sample") / ".lock"
    lock_file.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock_file.resolve()), "1.0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        with reg.lock("sample", timeout_s=60):  # waits for the holder to exit, then holds
            waited = time.perf_counter() - t0
            with reg.lock("sample", timeout_s=0):  # same process: re-entrant, no wait
                pass
            probe = subprocess.run([sys.executable, "-c",
                                    "import sys; from ragline.indexers.registry import IndexRegistry as R\n"
                                    "with R('indexes').lock('sample', timeout_s=0.2): pass"],
                                   capture_output=True, text=True, timeout=60)
        assert waited > 0.3 and holder.wait(timeout=30) == 0
        assert probe.returncode == 1 and LockTimeoutError.__name__ in probe.stderr
    finally:
        holder.kill()
