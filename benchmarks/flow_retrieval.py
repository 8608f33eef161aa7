"""Flow-runner benchmark on chunking-eval: throughput, retrieval latency and span recall@5 per mode.

One index over the five corpora of ``../shared/datasets/chunking-eval`` (472 questions), chunked
with the ``chunk:`` params of params.yaml and embedded with the ``embed:`` model (the real
all-MiniLM-L6-v2; vectors go through the embedding cache in ``paths.cache``, so a rerun embeds
nothing). The default flow (flows/qa: retrieve -> prompt -> extractive answer -> sources) runs
as a batch over every question once per retrieval mode, then ``ragline flow eval`` scores span
recall / precision / IoU at k = 5 with the chunking-eval definitions.

Reported per mode: batch throughput (questions/s, whole flow, 1 worker), retrieval latency
p50 / p95 (ms, the retrieve node: query embedding + search + fusion), span recall@5; the
in-process ``Index.search`` latency per mode (``ragline.open_index``: the public API, the same
Retriever the flow's retrieve node runs, one question at a time); and the retrieval components
timed alone (query embedding on ONNX Runtime and on torch, side by side in this run, FAISS
search, BM25 scoring). The flow variants override only ``mode``/``fusion``; everything else
comes from the ``retrieval:`` section of params.yaml, as for ``ragline flow``. Queries are embedded on ONNX Runtime (the runner's
default, ``--query-threads`` threads); the "dense (torch query)" row is the same dense search
with sentence-transformers embedding the query, for the ratio.
Targets: hybrid recall >= dense recall + 0.03; retrieval p50 <= 10 ms; Index.search hybrid p50 <= 10 ms.

Run:  .venv/bin/python benchmarks/flow_retrieval.py [--dataset PATH] [--out build/bench-flow] [--limit N]
                                                  [--query-threads N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ragline.core.offline import set_offline_env  # noqa: E402

set_offline_env()

DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "chunking-eval"
INDEX = "chunking-eval"
# label -> (flow variant, query embedding backend)
MODES = {"dense": ("dense", "onnx"), "bm25": ("bm25", "onnx"), "hybrid (rrf)": ("hybrid_rrf", "onnx"),
         "hybrid (weighted)": (None, "onnx"), "dense (torch query)": ("dense", "torch")}


def build_index(dataset_dir: Path, out: Path, params_file: Path) -> tuple[Path, Path, dict]:
    """Chunk + embed + publish the corpora; write the questions as JSONL (question, corpus_id, references)."""
    from ragline.indexers.embedders import info_of
    from ragline.indexers.registry import IndexRegistry
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.config import Params, load_params
    from ragline.pipelines.embed import embed_chunks, index_embedder
    from ragline.pipelines.evaluate_chunking import corpus_documents, load_dataset
    from ragline.pipelines.load import documents_to_table, quarantine_to_table
    from ragline.pipelines.publish import publish_index

    base = load_params(params_file)
    root = out / "indexes"
    data = base.to_dict()
    data["index"].update(name=INDEX, root=str(root))
    params = Params.from_dict(data, source=f"{params_file} (+ benchmark index)")
    dataset = load_dataset(dataset_dir)
    docs = corpus_documents(dataset)
    t0 = time.perf_counter()
    chunks, bad = chunk_documents(docs, params.chunk)
    if bad:
        raise SystemExit(f"chunking failed: {bad}")
    embedder = index_embedder(params)
    vectors, computed = embed_chunks(chunks, embedder, params.paths.cache, params.embed.batch_size)
    build_s = time.perf_counter() - t0
    if root.exists():
        shutil.rmtree(root)
    m = publish_index(IndexRegistry(root), params, documents_to_table(docs), chunks, vectors,
                      quarantine_to_table([]), info_of(embedder))
    questions = out / "questions.jsonl"
    with open(questions, "w", encoding="utf-8") as f:
        for i, q in enumerate(dataset.questions):
            refs = [{"start_index": r.start, "end_index": r.end} for r in q.references]
            f.write(json.dumps({"id": i, "question": q.question, "corpus_id": q.corpus_id, "references": refs}) + "\n")
    info = {"chunks": chunks.num_rows, "embedded_now": computed, "build_s": round(build_s, 1),
            "version": m.version, "chunk": params.chunk.model_dump(), "model": params.embed.model,
            "questions": len(dataset.questions)}
    return root, questions, info


def make_flow(out: Path) -> Path:
    """flows/qa pointed at the benchmark index."""
    dst = out / "flow"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(REPO / "flows" / "qa", dst, ignore=shutil.ignore_patterns("__pycache__"))
    f = dst / "flow.yaml"
    f.write_text(f.read_text().replace("index: sample@latest", f"index: {INDEX}@latest"))
    return dst


def components(runners: dict, questions: Path, limit: int | None) -> dict:
    """Where retrieval time goes: query embedding per backend, FAISS search, BM25 scoring, each timed alone."""
    import numpy as np

    from ragline.runner.batch import percentiles

    qs = [json.loads(line)["question"] for line in questions.read_text().splitlines() if line][:limit]
    retriever = runners["onnx"].nodes["retrieve"].retriever
    times: dict[str, list[float]] = {f"query_embedding_{b}": [] for b in runners} | {"faiss_search": [], "bm25": []}
    for q in qs:
        for b, runner in runners.items():
            t0 = time.perf_counter()
            runner.nodes["retrieve"].retriever.embed_query(q)
            times[f"query_embedding_{b}"].append((time.perf_counter() - t0) * 1000)
        v = retriever.embed_query(q)
        t1 = time.perf_counter()
        retriever.index.search(np.ascontiguousarray(v, dtype=np.float32), 50)
        t2 = time.perf_counter()
        retriever.lexical(q, 50)
        t3 = time.perf_counter()
        times["faiss_search"].append((t2 - t1) * 1000)
        times["bm25"].append((t3 - t2) * 1000)
    return {k: percentiles(v) for k, v in times.items()}


def index_search(root: Path, params_file: Path, questions: Path, limit: int | None, cache: Path) -> dict:
    """p50 / p95 (ms) of in-process ``Index.search`` per mode, through the public API."""
    import ragline
    from ragline.pipelines.config import Params, load_params
    from ragline.runner.batch import percentiles

    qs = [json.loads(line)["question"] for line in questions.read_text().splitlines() if line][:limit]
    data = load_params(params_file).to_dict()
    data["paths"]["cache"] = str(cache)  # the ONNX export the flow runs used
    index = ragline.open_index(f"{INDEX}@latest", root=root, params=Params.from_dict(data))
    out = {}
    for mode, fusion in (("dense", None), ("bm25", None), ("hybrid", "rrf"), ("hybrid", "weighted")):
        index.search("warm up", mode=mode, fusion=fusion)
        times = []
        for q in qs:
            t0 = time.perf_counter()
            index.search(q, k=5, mode=mode, fusion=fusion)
            times.append((time.perf_counter() - t0) * 1000)
        out[mode if fusion is None else f"{mode} ({fusion})"] = percentiles(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    ap.add_argument("--out", type=Path, default=REPO / "build" / "bench-flow")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--limit", type=int, default=None, help="only the first N questions")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--query-threads", type=int, default=None, help="ONNX Runtime threads per query (default 2)")
    args = ap.parse_args()

    from ragline.pipelines.config import load_params
    from ragline.runner.batch import parse_columns, run_batch
    from ragline.runner.engine import FlowRunner
    from ragline.runner.evaluate import evaluate_run
    from ragline.runner.nodes import QueryEmbedding
    from ragline.runner.spec import load_flow

    args.out.mkdir(parents=True, exist_ok=True)
    root, questions, info = build_index(args.dataset, args.out, args.params)
    print(f"index {INDEX}@{info['version']}: {info['chunks']} chunks "
          f"({info['embedded_now']} embedded now, {info['build_s']} s), chunk {info['chunk']}, model {info['model']}")
    flow_dir = make_flow(args.out)
    runs = args.out / "runs"
    if runs.exists():
        shutil.rmtree(runs)
    retrieval = load_params(args.params).retrieval
    results = {"index": info, "query_threads": args.query_threads, "retrieval": retrieval.record(), "modes": {}}
    runners = {}
    for label, (variant, backend) in MODES.items():
        flow = load_flow(flow_dir, variant)
        runner = FlowRunner(flow, root, QueryEmbedding(backend, args.query_threads, str(args.out / "cache")),
                            retrieval=retrieval)
        runner.warm_up()
        if variant == "dense":
            runners[backend] = runner
        summary = run_batch(flow, questions, parse_columns(["question=${data.question}"], flow), runner, runs,
                            workers=args.workers, run_id=f"{variant or 'hybrid'}-{backend}", limit=args.limit)
        ev = evaluate_run(summary.run_dir, questions, k=5)
        m = summary.metrics
        results["modes"][label] = {
            "run_dir": str(summary.run_dir), "questions": m["lines"], "failed": m["failed"],
            "throughput_qps": m["throughput_qps"], "retrieval_p50_ms": m["retrieval_latency_ms"]["p50"],
            "retrieval_p95_ms": m["retrieval_latency_ms"]["p95"], "flow_p50_ms": m["latency_ms"]["p50"],
            "span_recall@5": ev["spans"]["span_recall"], "span_precision@5": ev["spans"]["span_precision"],
            "span_iou@5": ev["spans"]["span_iou"], "groundedness": ev["answers"]["groundedness"],
            "query_backend": backend,
        }
        r = results["modes"][label]
        print(f"{label:18s} recall@5 {r['span_recall@5']:.4f}  precision {r['span_precision@5']:.4f}  "
              f"IoU {r['span_iou@5']:.4f}  retrieval p50/p95 {r['retrieval_p50_ms']:.1f}/{r['retrieval_p95_ms']:.1f} ms  "
              f"throughput {r['throughput_qps']:.1f} q/s", flush=True)
    c = results["components_ms"] = components(runners, questions, args.limit)
    print("retrieval components (p50 / p95 ms): " + ", ".join(
        f"{k} {v['p50']:.2f} / {v['p95']:.2f}" for k, v in c.items()))
    s = results["index_search_ms"] = index_search(root, args.params, questions, args.limit, args.out / "cache")
    print("Index.search (p50 / p95 ms): " + ", ".join(f"{k} {v['p50']:.2f} / {v['p95']:.2f}" for k, v in s.items()))
    ratio = c["query_embedding_torch"]["p50"] / c["query_embedding_onnx"]["p50"]
    results["query_embedding_torch_over_onnx_p50"] = round(ratio, 2)
    print(f"query embedding p50, torch / onnx (same run): {ratio:.2f}x")
    dense = results["modes"]["dense"]
    results["targets"] = {
        "hybrid_recall_minus_dense": {k: round(results["modes"][k]["span_recall@5"] - dense["span_recall@5"], 4)
                                      for k in ("hybrid (rrf)", "hybrid (weighted)")},
        "hybrid_recall_ge_dense_plus_0.03": {k: results["modes"][k]["span_recall@5"] >= dense["span_recall@5"] + 0.03
                                             for k in ("hybrid (rrf)", "hybrid (weighted)")},
        "retrieval_p50_le_10ms": {k: v["retrieval_p50_ms"] <= 10.0 for k, v in results["modes"].items()},
        "index_search_hybrid_p50_le_10ms": {k: v["p50"] <= 10.0 for k, v in s.items() if k.startswith("hybrid")},
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["targets"], indent=2))
    print(f"written: {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
