"""Ingest benchmark on Python's HTML documentation (Debian's python3.11-doc, 530 pages).

Measures, in one run on the same machine:
  1. the end-to-end ingest (Prefect flow: discover, load, chunk, embed, publish) into a fresh
     workspace with an empty embedding cache (the backend's model, built once per weights
     file, is built before and timed apart unless --cold-model);
  2. embedding the very same chunk texts alone (fresh embedder of the same ``embed.backend``,
     no cache);
  3. with ``--compare-torch`` (and ``embed.backend`` onnx), embedding them alone once more with
     sentence-transformers on torch, for the torch / ONNX ratio.
and prints documents/s, chunks/s, peak RSS, and the ratio ingest wall / embed-only wall
(target ≤ 1.10: parsing, chunking, curation and writing overlap embedding, pipelines/stream.py),
and the Prefect overhead: the wall time outside the run's seconds, which count from the start
of its preparation (parsers preloaded, model warmed up, files discovered, then parsing and
embedding started, all while Prefect's temporary API starts: ``pipelines/flows.py``
``_HeadStart``; ``stage_seconds`` shows how long as ``before-flow (overlapped)``), so what is left
is Prefect's own: the API start not overlapped and the run records.

    .venv/bin/python benchmarks/ingest_pydocs.py [--limit N] [--workers 2] [--workdir DIR]
                                                 [--backend onnx|torch] [--compare-torch] [--json]
                                                 [--text-fraction F]

With ``--text-fraction 0.25`` every embedder of the run embeds only the first quarter of each
chunk text, so embedding is about 3.6x faster on the same CPU while parsing, chunking,
curation and publishing stay as they are: the ratio a CPU with a faster embedder (int8/bf16
units) meets, measured on one without them.

Needs `apt-get install python3.11-doc`. Ratios, not absolute times, are the result: the
machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragline.core.offline import set_offline_env  # noqa: E402

set_offline_env()
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

DOCS = Path("/usr/share/doc/python3.11-doc/html")
TARGET = 1.10  # issue 16: ingest is its embedding


class _CutTexts:
    """An embedder that embeds the first ``fraction`` of each text's characters (its identity is
    the inner embedder's: fine for a throwaway benchmark workspace, never for an index)."""

    def __init__(self, inner, fraction: float) -> None:
        self._inner, self._fraction = inner, fraction

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def embed(self, texts, batch_size: int = 64, progress: bool = False):
        return self._inner.embed([t[: max(1, int(len(t) * self._fraction))] for t in texts], batch_size, progress)


def _cut_texts(make, fraction: float):
    """``make`` (``index_embedder``), its embedders wrapped in :class:`_CutTexts`."""
    return lambda *a, **k: _CutTexts(make(*a, **k), fraction)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=DOCS, help="folder of HTML pages")
    ap.add_argument("--limit", type=int, default=0, help="only the first N pages (0 = all)")
    ap.add_argument("--workers", type=int, default=2, help="load.workers")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the index here (default: temp dir, deleted)")
    ap.add_argument("--backend", default=None, help="embed.backend (default: the params default)")
    ap.add_argument("--compare-torch", action="store_true", help="also time embedding alone on torch")
    ap.add_argument("--bracket", action="store_true",
                    help="also embed alone before the ingest; the ratio uses the mean of before and after")
    ap.add_argument("--cold-model", action="store_true",
                    help="build the backend's model inside the timed ingest (default: built before, timed apart)")
    ap.add_argument("--text-fraction", type=float, default=1.0,
                    help="embed only this leading fraction of each chunk text, in the ingest and alone alike: "
                         "a faster embedder on this CPU (0.25: about 3.6x), to see the ratio a faster CPU meets")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    if not 0 < args.text_fraction <= 1:
        print(f"error: --text-fraction {args.text_fraction}: need 0 < f <= 1", file=sys.stderr)
        return 2
    if not args.source.is_dir():
        print(f"error: {args.source} not found; apt-get install python3.11-doc", file=sys.stderr)
        return 2

    from ragline.indexers.backends import cpu_units, fastest_backend_for
    from ragline.indexers.embedders import SentenceTransformerEmbedder
    from ragline.indexers.registry import IndexRegistry
    from ragline.indexers.retriever import PublishedIndex
    from ragline.pipelines.config import Params
    from ragline.core.schemas import indexed_texts
    from ragline.pipelines import flows
    from ragline.pipelines.embed import index_embedder
    from ragline.pipelines.flows import ingest_flow

    if args.text_fraction < 1:  # every embedder of the run (the ingest's, embedding alone) sees the cut texts
        index_embedder = _cut_texts(index_embedder, args.text_fraction)
        flows.index_embedder = index_embedder

    work = args.workdir or Path(tempfile.mkdtemp(prefix="ragline-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    source = args.source
    if args.limit:
        source = work / "pages"
        shutil.rmtree(source, ignore_errors=True)
        pages = sorted(p for p in args.source.rglob("*.html"))[: args.limit]
        for p in pages:
            dst = source / p.relative_to(args.source)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dst)
    params = Params().to_dict()
    params["load"].update(sources=[str(source)], include=["**/*.html"], workers=args.workers)
    params["index"].update(name="pydocs", root=str(work / "indexes"))
    params["paths"].update(cache=str(work / "cache"))
    if args.backend:
        params["embed"]["backend"] = args.backend
    shutil.rmtree(work / "cache", ignore_errors=True)
    # The backend's model (ONNX export, int8 quantization, OpenVINO IR) is built once per
    # weights file and kept under paths.cache; build it first and time it apart, then start
    # the ingest with an empty *embedding* cache. --cold-model includes the build in the ingest.
    build_s = None
    if not args.cold_model:
        t_build = time.perf_counter()
        index_embedder(Params.from_dict(params)).warm_up()
        build_s = time.perf_counter() - t_build
        shutil.rmtree(work / "cache" / "embeddings", ignore_errors=True)

    p = Params.from_dict(params)

    def embed_alone(texts: list[str]) -> float:
        embedder = index_embedder(p)  # the model built above is reused: this times embedding only
        t = time.perf_counter()
        embedder.warm_up()
        embedder.embed(texts, batch_size=p.embed.batch_size)
        return time.perf_counter() - t

    embed_before_s = None
    if args.bracket:  # embedding alone before AND after the ingest: a shared machine's drift cancels
        from ragline.pipelines.chunk import chunk_documents
        from ragline.pipelines.load import discover_files, load_documents

        files = discover_files(p.load.sources, p.load.include, p.load.exclude)
        docs, _ = load_documents(files, p.load)
        embed_before_s = embed_alone(indexed_texts(chunk_documents(docs, p.chunk, embed_model=p.embed.model)[0]))

    t0 = time.perf_counter()
    summary = ingest_flow([], params)
    ingest_s = time.perf_counter() - t0
    if summary.version is None:
        print(f"error: ingest published nothing: {summary.failed}", file=sys.stderr)
        return 1

    published = PublishedIndex.open(IndexRegistry(work / "indexes"), "pydocs@latest")
    texts = indexed_texts(published.chunks)
    embed_after_s = embed_alone(texts)
    embed_s = embed_after_s if embed_before_s is None else (embed_before_s + embed_after_s) / 2
    torch_s = None
    if args.compare_torch and summary.embed_backend == "onnx":
        torch_embedder = SentenceTransformerEmbedder(p.embed.model, p.embed.normalize)
        t2 = time.perf_counter()
        torch_embedder.warm_up()
        torch_embedder.embed(texts, batch_size=p.embed.batch_size)
        torch_s = time.perf_counter() - t2

    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        "documents": summary.documents,
        "chunks": summary.chunks,
        "quarantined": len(summary.quarantine),
        "stage_seconds": summary.stage_seconds,
        "ingest_wall_s": round(ingest_s, 2),
        "embed_only_wall_s": round(embed_s, 2),
        "embed_only_before_after_s": [None if embed_before_s is None else round(embed_before_s, 2),
                                      round(embed_after_s, 2)],
        "ratio_ingest_to_embed": round(ingest_s / embed_s, 3),
        "model_build_s (once per weights file, not in the ingest)": None if build_s is None else round(build_s, 2),
        "flow_body_s": summary.total_seconds,
        # Prefect's own: the API start not overlapped with the run's work + the run records
        "prefect_overhead_s": round(ingest_s - summary.total_seconds, 2),
        "embed_backend": summary.embed_backend,  # auto resolved, as the ingest used it
        "cpu_units": sorted(cpu_units()),  # openvino-bf16 is fast only with amx_bf16 (README)
        "fastest_backend_for_this_cpu": fastest_backend_for(cpu_units()),
        "embed_only_torch_wall_s": None if torch_s is None else round(torch_s, 2),
        "ratio_torch_to_onnx_embed": None if torch_s is None else round(torch_s / embed_s, 3),
        "documents_per_s": round(summary.documents / ingest_s, 2),
        "chunks_per_s": round(summary.chunks / ingest_s, 2),
        "peak_rss_mib": round(rss_self, 1),
        "peak_rss_children_mib": round(rss_children, 1),
        "target_ratio": TARGET,
        "text_fraction": args.text_fraction,
        "index": str(work / "indexes"),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:>24}: {v}")
        print(f"{'target met':>24}: {result['ratio_ingest_to_embed'] <= TARGET}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
