"""Embedding backends side by side in one run: speed, memory, agreement with fp32, retrieval quality.

For every ``embed.backend`` that is installed (:data:`indexers.backends.BACKENDS`), in one
child process each (so peak RSS is the backend's own), on the same texts:

- **chunks/s** of the model call (``embedder.embed``; OpenVINO with the shipped
  ``embed.streams`` and ``embed.pad_multiple``, as ingest runs it) on a sample of the Python docs (Debian's
  ``python3.11-doc``; the first ``--pages`` pages loaded and chunked with the default params,
  then ``--sample`` chunks taken evenly, 1,000 by default): at 2 threads on the whole sample
  and at 1 thread on its first half. The rows per call (4, 8, 16, 32) and the order (longest
  first, or as given) are chosen per backend on the first 32 chunks (in its own process);
  then every backend is loaded into one process and the sample is timed in slices,
  round-robin over the backends, so that a change of the machine's load (it is shared) hits
  every backend alike and the ratios stay meaningful;
- **cosine to fp32**: min and mean over the sample, against ONNX Runtime fp32 (``onnx``);
- **peak RSS** (MiB) of the backend's own child process (tuning + chunking eval);
- **chunking-eval recall and IoU at k = 5** with the default ``eval:`` retrieval settings, through
  :func:`pipelines.evaluate_chunking.evaluate_chunking` with ``embed.backend`` set, a fresh
  embedding cache and a freshly constructed embedder (its model files already built), so
  ``embed_s`` is what ``ragline eval chunking`` reports as ``embed_seconds`` end to end; queries
  are embedded by the same backend (same identity);
- **build_s**: the one-time export / quantization / agreement measurement (cached afterwards).

The table ends with each backend's speed ratio to ``onnx`` (today's fp32 default) and the
recommendation: the fastest backend (2-thread chunks/s) whose recall is within 0.5 points of
fp32's. Ratios measured side by side are the result; absolute numbers move with the machine's load.

Run:  nice -n 10 .venv/bin/python benchmarks/embed_backends.py [--backends onnx openvino-int8 ...]
      [--sample 1000] [--pages 120] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ragline.pipelines.offline import set_offline_env  # noqa: E402

set_offline_env()

DOCS = Path("/usr/share/doc/python3.11-doc/html")
DATASET = REPO.parent / "shared" / "datasets" / "chunking-eval"
RECALL_POINTS = 0.5  # recall within this many points (of 100) of fp32's qualifies
TUNE_ROWS = (4, 8, 16, 32)


def pydocs_sample(pages: int, sample: int, work: Path) -> list[str]:
    """``sample`` chunk texts of the first ``pages`` HTML pages, chunked with the default params."""
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.config import LoadConfig, Params
    from ragline.core.schemas import indexed_texts
    from ragline.pipelines.load import discover_files, load_documents

    files = discover_files([DOCS], include=["**/*.html"])[:pages]
    docs, _ = load_documents(files, LoadConfig(sources=[str(DOCS)], include=["**/*.html"], workers=2))
    chunks, _ = chunk_documents(docs, Params().chunk)
    texts = indexed_texts(chunks)
    step = max(1, len(texts) // sample)
    return texts[::step][:sample]


def bulk_options() -> dict:
    """``embed.streams`` / ``embed.pad_multiple`` of the shipped params.yaml (OpenVINO bulk embedding)."""
    from ragline.pipelines.config import load_params

    embed = load_params(REPO / "params.yaml").embed
    return {"streams": embed.streams, "pad_multiple": embed.pad_multiple}


def _set_rows(embedder, rows: int, sort: bool) -> int:
    """Configure rows per call and order; returns the batch_size to pass to ``embed``."""
    if hasattr(embedder, "run_rows"):
        embedder.run_rows, embedder.sort_by_length = rows, sort
        return rows
    return rows  # sentence-transformers: batch_size is the rows per call; it always sorts by length


def worker(backend: str, texts_file: Path, out: Path, model_cache: Path, limit_questions: int | None,
           corpora: list[str] | None) -> None:
    import numpy as np

    from ragline.indexers.embedders import info_of, make_embedder
    from ragline.pipelines.config import Params
    from ragline.pipelines.evaluate_chunking import evaluate_chunking, load_dataset

    texts = json.loads(texts_file.read_text())

    def embedder(threads: int):
        if backend.startswith("torch"):
            import torch

            torch.set_num_threads(threads)
        return make_embedder("all-MiniLM-L6-v2", backend=backend, cache_dir=model_cache, threads=threads,
                             **bulk_options())

    t0 = time.perf_counter()
    e = embedder(2)
    e.warm_up()
    build_s = time.perf_counter() - t0
    info = info_of(e)
    tune = texts[:32]
    e.embed(tune[:16], batch_size=8)
    best = (0.0, 8, True)
    orders = (True,) if not hasattr(e, "run_rows") else (True, False)
    for rows in (TUNE_ROWS if getattr(e, "tunable_rows", True) else (1,)):
        bs = _set_rows(e, rows, True)
        t = time.perf_counter()
        e.embed(tune, batch_size=bs)
        rate = len(tune) / (time.perf_counter() - t)
        best = max(best, (rate, rows, True))
    for sort in orders[1:]:
        bs = _set_rows(e, best[1], sort)
        t = time.perf_counter()
        e.embed(tune, batch_size=bs)
        rate = len(tune) / (time.perf_counter() - t)
        best = max(best, (rate, best[1], sort))
    rows, sort = best[1], best[2]
    bs = _set_rows(e, rows, sort)
    np.save(out.with_suffix(".npy"), e.embed(texts, batch_size=bs))
    del e

    dataset = load_dataset(DATASET, corpora=corpora or None, limit_questions=limit_questions)
    with tempfile.TemporaryDirectory(prefix="ragline-eb-") as fresh:
        params = Params.from_dict({"embed": {"backend": backend}, "paths": {"cache": fresh}})
        ev_embedder = embedder(2)
        _set_rows(ev_embedder, rows, sort)
        # the embedding cache is fresh; the model files come from model_cache (built above)
        result = evaluate_chunking(dataset, params, k=5, embedder=ev_embedder)
    out.write_text(json.dumps({
        "backend": backend, "quantization": info.quantization, "build_s": build_s,
        "rows": rows, "sorted": sort,
        "recall": result.overall.recall, "iou": result.overall.iou, "eval_chunks": result.chunks,
        "eval_questions": result.overall.questions, "embed_s": result.embed_seconds,
        "embedded_now": result.embedded_now,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "agreement_record": {k: getattr(ev_embedder, "model_record", {}).get(k)
                             for k in ("max_abs_diff", "min_cosine", "mean_cosine")},
    }))


def round_robin(rows: list[dict], texts: list[str], model_cache: Path, slices: int = 5) -> None:
    """Time every backend's model call at 2 and 1 threads, slice by slice, rotating the order."""
    from ragline.indexers.embedders import make_embedder

    def torch_threads(backend: str, n: int) -> None:
        if backend.startswith("torch"):
            import torch

            torch.set_num_threads(n)

    for threads, part in ((2, texts), (1, texts[: max(1, len(texts) // 2)])):
        embedders = {}
        for r in rows:
            e = make_embedder("all-MiniLM-L6-v2", backend=r["backend"], cache_dir=model_cache, threads=threads,
                              **bulk_options())
            _set_rows(e, r["rows"], r["sorted"])
            torch_threads(r["backend"], threads)
            e.embed(part[:8], batch_size=r["rows"])  # load + first shapes
            embedders[r["backend"]] = e
        spent = dict.fromkeys(embedders, 0.0)
        step = -(-len(part) // slices)
        for i, start in enumerate(range(0, len(part), step)):
            piece = part[start:start + step]
            names = list(embedders)
            names = names[i % len(names):] + names[: i % len(names)]
            for name in names:
                row = next(r for r in rows if r["backend"] == name)
                torch_threads(name, threads)
                t = time.perf_counter()
                embedders[name].embed(piece, batch_size=row["rows"])
                spent[name] += time.perf_counter() - t
        for r in rows:
            r[f"chunks_per_s_{threads}t"] = len(part) / spent[r["backend"]]
        del embedders


def main() -> int:
    from ragline.indexers.backends import installed_backends

    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--backends", nargs="+", default=None, help="default: every installed backend")
    ap.add_argument("--sample", type=int, default=1000, help="Python-docs chunks timed (default 1000)")
    ap.add_argument("--pages", type=int, default=120, help="Python-docs pages loaded to draw the sample from")
    ap.add_argument("--limit-questions", type=int, default=None, help="chunking-eval questions (default: all)")
    ap.add_argument("--corpora", nargs="+", default=None, help="chunking-eval corpora (default: all)")
    ap.add_argument("--workdir", type=Path, default=REPO / "build" / "bench-embed-backends")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true",
                    help="keep the per-backend results (tuning, vectors, eval) already in --workdir; time them again")
    ap.add_argument("--worker", nargs=4, metavar=("BACKEND", "TEXTS", "OUT", "CACHE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        b, texts, out, cache = args.worker
        worker(b, Path(texts), Path(out), Path(cache), args.limit_questions, args.corpora)
        return 0
    if not DOCS.is_dir():
        print(f"error: {DOCS} not found; apt-get install python3.11-doc", file=sys.stderr)
        return 1
    import numpy as np

    backends = args.backends or installed_backends()
    if "onnx" in backends:  # the fp32 reference first
        backends = ["onnx"] + [b for b in backends if b != "onnx"]
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    texts_file = work / f"pydocs-{args.pages}p-{args.sample}.json"
    if not texts_file.is_file():
        texts_file.write_text(json.dumps(pydocs_sample(args.pages, args.sample, work)))
    n = len(json.loads(texts_file.read_text()))
    print(f"{n} Python-docs chunks (first {args.pages} pages, default chunking); chunking-eval at k=5, "
          "default retrieval", flush=True)
    rows: list[dict] = []
    for b in backends:
        out = work / f"{b}.json"
        if args.reuse and out.is_file() and out.with_suffix(".npy").is_file():
            rows.append(json.loads(out.read_text()))
            continue
        cmd = [sys.executable, __file__, "--worker", b, str(texts_file), str(out), str(work / "model-cache")]
        if args.limit_questions:
            cmd += ["--limit-questions", str(args.limit_questions)]
        if args.corpora:
            cmd += ["--corpora", *args.corpora]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{b}: failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
            continue
        r = json.loads(out.read_text())
        rows.append(r)
        print(f"  {b}: rows {r['rows']}, recall {100 * r['recall']:.2f}, eval embed {r['embed_s']:.1f} s", flush=True)
    if not rows:
        return 1
    round_robin(rows, json.loads(texts_file.read_text()), work / "model-cache")
    ref_row = next((r for r in rows if r["backend"] == "onnx"), rows[0])
    ref = np.load((work / f"{ref_row['backend']}.json").with_suffix(".npy"))
    for r in rows:
        v = np.load((work / f"{r['backend']}.json").with_suffix(".npy"))
        cos = (v * ref).sum(1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(ref, axis=1))
        r["cos_min"], r["cos_mean"] = float(cos.min()), float(cos.mean())
        r["speedup_2t"] = r["chunks_per_s_2t"] / ref_row["chunks_per_s_2t"]
        r["speedup_1t"] = r["chunks_per_s_1t"] / ref_row["chunks_per_s_1t"]
        r["embed_s_speedup"] = ref_row["embed_s"] / r["embed_s"]
        r["recall_delta_points"] = 100 * (r["recall"] - ref_row["recall"])
    head = (f"{'backend':14s} {'rows':>4s} {'sort':>5s} {'c/s 2t':>7s} {'c/s 1t':>7s} {'x onnx':>6s} "
            f"{'eval s':>7s} {'x onnx':>6s} {'RSS MiB':>7s} {'cos min':>8s} {'cos mean':>8s} "
            f"{'recall':>6s} {'d pts':>6s} {'IoU':>6s} {'build s':>7s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['backend']:14s} {r['rows']:4d} {'len' if r['sorted'] else 'as-is':>5s} {r['chunks_per_s_2t']:7.1f} "
            f"{r['chunks_per_s_1t']:7.1f} {r['speedup_2t']:6.2f} {r['embed_s']:7.1f} {r['embed_s_speedup']:6.2f} "
            f"{r['peak_rss_mib']:7.0f} {r['cos_min']:8.5f} {r['cos_mean']:8.5f} {100 * r['recall']:6.2f} "
            f"{r['recall_delta_points']:+6.2f} {100 * r['iou']:6.2f} {r['build_s']:7.1f}")
    fp32_recall = max((r["recall"] for r in rows if r["quantization"] == ""), default=ref_row["recall"])
    ok = [r for r in rows if 100 * (fp32_recall - r["recall"]) <= RECALL_POINTS]
    best = max(ok, key=lambda r: r["chunks_per_s_2t"])
    lines.append("")
    lines.append(f"x onnx: ratio to ONNX Runtime fp32 (c/s: model call; eval s: `ragline eval chunking` embed_seconds, "
                 f"fresh embedding cache, {ref_row['eval_chunks']} chunks + {ref_row['eval_questions']} questions)")
    lines.append(f"recommended embed.backend: {best['backend']} ({best['speedup_2t']:.2f}x onnx in the model call, "
                 f"{best['embed_s_speedup']:.2f}x in eval embed_seconds, recall {best['recall_delta_points']:+.2f} points "
                 f"vs onnx; fastest within {RECALL_POINTS} points of fp32 recall)")
    print("\n" + "\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "recommended": best["backend"], "sample": n,
                                         "pages": args.pages}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
