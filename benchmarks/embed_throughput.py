"""Embedding throughput of the model call, side by side, and chunking-eval recall of the candidates.

Arms (all 2 threads, all-MiniLM-L6-v2, one process, models built beforehand under
``build/bench-embed-backends/models``):

- ``torch``: sentence-transformers fp32, ``encode`` with batch 32 (its default; it sorts by length);
- ``onnx``: ONNX Runtime fp32, 8 rows per call (the fp32 ONNX backend);
- ``onnx-int8``: ONNX Runtime dynamic int8, one text per call;
- ``ov-bf16 onnx-graph LAT``: ``openvino-bf16`` as it ran before ``embed.streams``: the ONNX
  export read by OpenVINO, LATENCY hint, no rounding of token lengths;
- ``ov-bf16 s1 p1``: the converted IR, LATENCY, no rounding;
- ``ov-bf16 s2 p1``: THROUGHPUT, 2 streams (async requests), no rounding;
- ``ov-bf16 s2 p16 dyn``: THROUGHPUT, 2 streams, token lengths rounded to 16, dynamic shapes
  only (``embed.static_shapes: 0``; the default before static shapes);
- ``ov-bf16 s2 p16``: the same with ``embed.static_shapes: 6`` (the ``embed:`` params): a shape's
  32nd call (STATIC_AFTER) compiles a model for exactly that shape (the compilations are timed with the calls);
- ``ov-bf16 onnx-graph s2 p16``: ``s2 p16 dyn`` on the ONNX export's graph (what the conversion adds);
- ``ov-int8 s2 p16``: NNCF static int8 with the same settings;
- ``ov-f32 s2 p16``: ``openvino`` (f32, the fp32 identity) with the same settings; ``ov-f32 s2 p16 dyn``
  without static shapes, ``ov-f32 s1 p16`` with one LATENCY stream.

Texts: token-200 chunks (default chunking, no context) of every chunking-eval corpus,
shuffled with seed 0, the first ``--chunks``. They are timed in ``--slices`` slices, each slice
by every arm in turn (the order rotates per slice), so a change of the machine's load hits
every arm alike: compare the ratios, not the chunks/s. Pass 1 is each arm's first sight of
those texts (OpenVINO prepares kernels per new input shape, as in a fresh ingest); pass 2
times the same slices again (shapes seen: a long ingest's steady state).

``--recall``: chunking-eval (all corpora, all questions unless ``--limit-questions``) with the
shipped params, a fresh embedding cache per arm and the arm's embedder, for ``onnx`` (the fp32
reference), the default backend and ``openvino-bf16`` with the shipped ``embed:`` params;
recall/IoU at k = 5 with the default hybrid retrieval and dense-only, and ``embed_seconds``.

Run:  nice -n 5 .venv/bin/python benchmarks/embed_throughput.py [--chunks 400] [--slices 4]
      [--arms ...] [--recall] [--recall-backends onnx openvino-bf16]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ragline.indexers.backends import cpu_units, fastest_backend_for, resolve_backend  # noqa: E402
from ragline.pipelines.offline import set_offline_env  # noqa: E402

set_offline_env()

DATASET = REPO.parent / "shared" / "datasets" / "chunking-eval"
CACHE = REPO / "build" / "bench-embed-backends" / "models"
MODEL = "all-MiniLM-L6-v2"
ARMS = ("torch", "onnx", "onnx-int8", "ov-bf16 onnx-graph LAT", "ov-bf16 s1 p1", "ov-bf16 s2 p1", "ov-bf16 s2 p16 dyn",
        "ov-bf16 s2 p16", "ov-bf16 onnx-graph s2 p16", "ov-int8 s2 p16", "ov-f32 s2 p16", "ov-f32 s2 p16 dyn",
        "ov-f32 s1 p16")


def chunk_texts(n: int) -> list[str]:
    from ragline.chunkers.registry import get_chunker

    chunker = get_chunker("token", max_tokens=200, overlap_tokens=50)
    texts = [c.text for f in sorted((DATASET / "corpora").glob("*.md")) for c in chunker.chunk(f.read_text())]
    random.Random(0).shuffle(texts)
    return texts[:n]


def make_arm(name: str):
    """``embed(texts)`` of one arm, loaded and warmed on a few texts."""
    from ragline.indexers.embedders import make_embedder

    if name == "torch":
        import torch

        torch.set_num_threads(2)
        e = make_embedder(MODEL, backend="torch")
        return lambda ts: e.embed(ts, batch_size=32)
    if name in ("onnx", "onnx-int8"):
        e = make_embedder(MODEL, backend=name, cache_dir=CACHE, threads=2)
        return lambda ts: e.embed(ts)
    precision = "openvino-int8" if "int8" in name else "openvino" if "f32" in name else "openvino-bf16"
    streams = 2 if " s2" in name else 1
    pad = 16 if "p16" in name else 1
    static = 0 if name.endswith((" dyn", " p1")) or "onnx-graph" in name else 6
    e = make_embedder(MODEL, backend=precision, cache_dir=CACHE, threads=2, streams=streams, pad_multiple=pad,
                      static_shapes=static)
    e.warm_up()
    if "onnx-graph" in name:  # before this change: OpenVINO reads the ONNX export
        from ragline.indexers.openvino_embedder import openvino
        ov = openvino()

        from ragline.indexers.onnx_embedder import ensure_export

        export = ensure_export(e._path, e._cache, e.model_id, e.revision)[0]
        e._compiled = e._compile(ov.Core().read_model(str(export)), e.precision, streams)
    return lambda ts: e.embed(ts)


def throughput(arms: list[str], texts: list[str], slices: int) -> None:
    runs = {}
    for name in arms:
        run = make_arm(name)
        run(["warm up", "a second text to warm up with"])
        runs[name] = run
    step = -(-len(texts) // slices)
    pieces = [texts[s:s + step] for s in range(0, len(texts), step)]
    spent = {p: dict.fromkeys(runs, 0.0) for p in (1, 2)}
    loads = []
    for p in (1, 2):
        for k, piece in enumerate(pieces):
            names = list(runs)
            names = names[k % len(names):] + names[:k % len(names)]
            for name in names:
                t = time.perf_counter()
                runs[name](piece)
                spent[p][name] += time.perf_counter() - t
            loads.append(os.getloadavg()[0])
    print(f"{len(texts)} chunks (token 200, chunking-eval corpora, shuffled), 2 threads, {len(pieces)} slices x 2 passes; "
          f"load average {min(loads):.1f}-{max(loads):.1f}")
    units = cpu_units()
    print(f"CPU units: {', '.join(sorted(units)) or 'none found'}; "
          f"measured fastest for them (embed.backend auto on a new index): {fastest_backend_for(units)}")
    base = {p: {b: len(texts) / spent[p][b] for b in ("torch", "onnx") if b in runs} for p in (1, 2)}
    head = f"{'arm':<27} {'c/s p1':>7} {'x torch':>7} {'x onnx':>6}   {'c/s p2':>7} {'x torch':>7} {'x onnx':>6}"
    print(head + "\n" + "-" * len(head))
    for name in runs:
        cells = []
        for p in (1, 2):
            cps = len(texts) / spent[p][name]
            ratios = [f"{cps / base[p][b]:7.2f}" if b in base[p] else f"{'-':>7}" for b in ("torch", "onnx")]
            cells.append(f"{cps:7.1f} {ratios[0]} {ratios[1][1:]}")
        print(f"{name:<27} {cells[0]}   {cells[1]}")


def recall(backends: list[str], limit_questions: int | None) -> None:
    from ragline.indexers.embedders import make_embedder
    from ragline.pipelines.config import Params, load_params
    from ragline.pipelines.evaluate_chunking import evaluate_chunking, load_dataset

    dataset = load_dataset(DATASET, limit_questions=limit_questions)
    shipped = load_params(REPO / "params.yaml")
    rows = []
    for b in backends:
        with tempfile.TemporaryDirectory(prefix="ragline-et-") as fresh:
            out = {"backend": b}
            for mode in ("hybrid", "dense"):
                params = Params.from_dict({**shipped.model_dump(), "embed": {**shipped.embed.model_dump(), "backend": b},
                                           "paths": {**shipped.paths.model_dump(), "cache": fresh},
                                           "retrieval": {**shipped.retrieval.model_dump(), "mode": mode}})
                e = make_embedder(MODEL, backend=b, cache_dir=CACHE, threads=os.cpu_count() or 1,
                                  streams=params.embed.streams, pad_multiple=params.embed.pad_multiple)
                r = evaluate_chunking(dataset, params, k=5, embedder=e)  # dense reuses hybrid's embedding cache
                out[mode] = (r.overall.recall, r.overall.iou)
                if mode == "hybrid":
                    out["embed_s"], out["chunks"], out["questions"] = r.embed_seconds, r.chunks, r.overall.questions
            rows.append(out)
            print(f"  {b}: recall {100 * out['hybrid'][0]:.2f} (dense {100 * out['dense'][0]:.2f}), "
                  f"embed_seconds {out['embed_s']:.1f}", flush=True)
    ref = rows[0]
    print(f"\nchunking-eval, k = 5, {ref['chunks']} chunks, {ref['questions']} questions, shipped params, fresh embedding cache")
    head = f"{'backend':<14} {'recall':>6} {'d pts':>6} {'IoU':>6} {'dense':>6} {'d pts':>6} {'embed s':>7} {'x ref':>6}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['backend']:<14} {100 * r['hybrid'][0]:6.2f} {100 * (r['hybrid'][0] - ref['hybrid'][0]):+6.2f} "
              f"{100 * r['hybrid'][1]:6.2f} {100 * r['dense'][0]:6.2f} {100 * (r['dense'][0] - ref['dense'][0]):+6.2f} "
              f"{r['embed_s']:7.1f} {ref['embed_s'] / r['embed_s']:6.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--chunks", type=int, default=400)
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--recall", action="store_true", help="also measure chunking-eval recall (minutes)")
    ap.add_argument("--recall-only", action="store_true", help="only the recall table")
    ap.add_argument("--recall-backends", nargs="+", default=None,
                    help="default: onnx, the shipped embed.backend (auto: this CPU's), openvino-bf16")
    ap.add_argument("--limit-questions", type=int, default=None)
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    if not args.recall_only:
        throughput(args.arms, chunk_texts(args.chunks), args.slices)
    if args.recall or args.recall_only:
        from ragline.pipelines.config import load_params

        default = resolve_backend(load_params(REPO / "params.yaml").embed.backend)  # auto: this CPU's fastest
        backends = args.recall_backends or list(dict.fromkeys(["onnx", default, "openvino-bf16"]))
        print()
        recall(backends, args.limit_questions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
