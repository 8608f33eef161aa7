"""`ragline query` end to end (process start included): this checkout against another one.

Builds the sample index once with this checkout (the `ragline stage` commands over
data/sample, the real model) in a scratch folder, then runs `QUERY` through each `ragline` executable alternately,
``--runs`` times after one warm-up each (the warm-up also exports the ONNX query model into
the shared ``paths.cache``), and prints the median and min wall time of each and their ratio.
This checkout searches with the params' ``retrieval:`` section (hybrid as shipped); pass
``--mode dense`` to time the dense path alone.

Target: this checkout's median <= 1.10 x the baseline's median.

Run:  .venv/bin/python benchmarks/query_cli.py --baseline /work/main/.venv/bin/ragline [--runs 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
QUERY = "How many days does a worker bee need to develop from egg to adult?"


def _run(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--baseline", type=Path, required=True, help="the other checkout's ragline executable")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "build" / "bench-query")
    ap.add_argument("--mode", default=None, help="--mode for this checkout (default: retrieval.mode)")
    args = ap.parse_args()
    ours = Path(sys.executable).parent / "ragline"
    work = args.out
    if not (work / "indexes" / "sample").is_dir():
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(REPO / "data" / "sample", work / "data" / "sample")
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["paths"]["cache"] = str(work / "cache")
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        print(f"building the sample index in {work}/indexes (ragline stage load|chunk|embed|publish) ...", flush=True)
        for stage in ("load", "chunk", "embed", "publish"):  # the DVC stages: no Prefect server to start
            _run([str(ours), "stage", stage], work)
    cmds = {"this checkout": [str(ours), "query", QUERY, "--index", "sample", "-k", "3"] +
            (["--mode", args.mode] if args.mode else []),
            "baseline": [str(args.baseline), "query", QUERY, "--index", "sample", "-k", "3"]}
    for cmd in cmds.values():
        _run(cmd, work)  # warm-up: ONNX export, page cache
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(args.runs):
        for name, cmd in cmds.items():
            times[name].append(_run(cmd, work))
    for name, ts in times.items():
        print(f"{name:14s} median {statistics.median(ts):.3f} s  min {min(ts):.3f} s  runs {', '.join(f'{t:.2f}' for t in ts)}")
    ratio = statistics.median(times["this checkout"]) / statistics.median(times["baseline"])
    print(f"ratio (this / baseline, medians): {ratio:.3f}  target <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'}")


if __name__ == "__main__":
    main()
