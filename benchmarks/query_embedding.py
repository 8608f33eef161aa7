"""Query embedding latency of every embedding backend, side by side in one run.

One question at a time (what a retrieve node does), the 472 chunking-eval questions, the
packaged all-MiniLM-L6-v2. Rows:

- ``torch (1 thread)``: ``SentenceTransformerEmbedder`` with ``torch.set_num_threads(1)``
  (what the runner did before the ONNX path);
- ``onnx N thread(s)``: ``OnnxEmbedder`` with N intra-op threads, worker threads sleeping
  between operators (ragline's setting) or spinning (ONNX Runtime's default);
- ``<backend> N thread(s)`` for ``onnx-int8``, ``openvino``, ``openvino-bf16`` and
  ``openvino-int8`` (``--backends``): a query of an index built with a bf16/int8 backend is
  embedded by that backend (same identity), so its latency is what ``auto`` gives.

With ``--busy N`` the same rows run again while N processes keep cores busy (a pure-Python
busy loop each), so the choice of threads and spinning is judged on a shared machine too.
The table gives p50 / p95 in ms and each row's p50 ratio to the torch row of the same phase.

Run:  .venv/bin/python benchmarks/query_embedding.py [--limit N] [--busy 0 1 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ragline.core.offline import set_offline_env  # noqa: E402

set_offline_env()

QUESTIONS = REPO.parent / "shared" / "datasets" / "chunking-eval" / "questions.csv"


def _burn() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


def _time(fn, queries: list[str]) -> dict:
    for q in queries[:20]:
        fn(q)
    ts = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        ts.append((time.perf_counter() - t0) * 1000)
    ts.sort()
    return {"p50": statistics.median(ts), "p95": ts[min(len(ts) - 1, int(0.95 * len(ts)))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N questions")
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="busy processes per phase")
    ap.add_argument("--cache", type=Path, default=REPO / "build" / "bench-query" / "cache")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--backends", nargs="*", default=["onnx-int8", "openvino", "openvino-bf16", "openvino-int8"],
                    help="more backends, each at 1 and 2 threads")
    args = ap.parse_args()

    import numpy as np
    import torch

    from ragline.indexers.embedders import SentenceTransformerEmbedder
    from ragline.indexers.onnx_embedder import OnnxEmbedder, _session

    with open(QUESTIONS, newline="", encoding="utf-8") as f:
        queries = [r["question"] for r in csv.DictReader(f)][: args.limit]
    torch.set_num_threads(1)
    st = SentenceTransformerEmbedder()
    st.warm_up()
    rows: dict[str, object] = {"torch (1 thread)": lambda q: st.embed([q])}
    for threads, spin in ((1, False), (2, False), (2, True)):
        e = OnnxEmbedder(cache_dir=args.cache, threads=threads)
        e.warm_up()
        if e.backend != "onnx":
            raise SystemExit(f"ONNX path unavailable: {e.fallback_reason}")
        if spin:
            e._session = _session(e.onnx_path, threads, spin=True)
        rows[f"onnx {threads} thread{'s' if threads > 1 else ''}{', spinning' if spin else ''}"] = \
            (lambda emb: (lambda q: emb.embed([q])))(e)
    from ragline.indexers.embedders import make_embedder

    for backend in args.backends:
        for threads in (1, 2):
            e = make_embedder("all-MiniLM-L6-v2", backend=backend, cache_dir=args.cache, threads=threads)
            e.warm_up()
            rows[f"{backend} {threads} thread{'s' if threads > 1 else ''}"] = (lambda emb: (lambda q: emb.embed([q])))(e)
    check = max(float(np.abs(rows["onnx 1 thread"](q) - st.embed([q])).max()) for q in queries[:50])  # type: ignore[operator]
    print(f"{len(queries)} questions; max |onnx - torch| over 50 query vectors: {check:.1e}")

    results: dict = {"questions": len(queries), "max_abs_diff": check, "phases": {}}
    for busy in args.busy:
        procs = [mp.Process(target=_burn, daemon=True) for _ in range(busy)]
        for p in procs:
            p.start()
        try:
            phase = {name: _time(fn, queries) for name, fn in rows.items()}  # type: ignore[arg-type]
        finally:
            for p in procs:
                p.terminate()
                p.join()
        base = phase["torch (1 thread)"]["p50"]
        for v in phase.values():
            v["speedup_vs_torch"] = base / v["p50"]
        results["phases"][f"busy={busy}"] = phase
        print(f"\n{busy} busy process(es)")
        print(f"  {'row':30s} {'p50 ms':>8s} {'p95 ms':>8s} {'torch/row':>10s}")
        for name, v in phase.items():
            print(f"  {name:30s} {v['p50']:8.2f} {v['p95']:8.2f} {v['speedup_vs_torch']:9.2f}x", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"written: {args.json}")


if __name__ == "__main__":
    main()
