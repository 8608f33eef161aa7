"""Retrieval at scale through ragline's own search path: latency, recall and memory per FAISS kind.

Builds ``--n`` synthetic chunks (default 1,000,000) with 384-d unit vectors drawn around
``--centers`` random directions (a Gaussian mixture: real embeddings are clustered, uniform
random vectors are not and no ANN method does well on them) and short texts of words drawn
from a Zipf law over a 50k-word vocabulary (so BM25 has something to rank). Each kind in
``--kinds`` is published as a version with :func:`pipelines.publish.publish_index` (``auto``'s
IVF nlist by default, and HNSW32 at ``--ef-construction``), then opened with
:meth:`indexers.retriever.Retriever.open` (FAISS memory-mapped, chunk rows read lazily) and asked
``--queries`` queries, one at a time:

- ``raw_p50_ms``: ``index.search`` on the same opened FAISS index with the same efSearch/nprobe;
- ``dense_p50_ms``: ``Retriever.search`` (mode dense, k 10), query vector given (embedding is
  not timed), hits with their text; ``overhead``: dense / raw - 1 (target <= 0.20);
- ``dense_recall@10``: against exact (brute force inner product) top 10 (target >= 0.95);
- ``hybrid_p50_ms`` and ``hybrid_recall@10``: ``Retriever.search`` hybrid (weighted fusion of
  the params' defaults, 50 candidates; BM25 at ``--bm25-budget``: ``auto``, the default's, reads
  4096 postings from 500k rows, ``exact`` or N postings) against the same
  hybrid search over an exact Flat index with exact BM25;
- ``hybrid_exact_bm25_p50_ms``: the same hybrid search with exact BM25 (``bm25_budget`` null);
- ``query_cli_s`` / ``query_cli_cpu_s`` / ``query_cli_rss_mb``: ``ragline query TEXT --index
  NAME@VERSION`` in a new process (start, params, open, embed with the hashing embedder, hybrid
  search, print), its wall time (target <= 1.5 s; on a loaded machine the CPU time tells more)
  and peak RSS (target <= the index file size + 1 GB; the version is
  opened with ``index.verify: size``, as README advises for large indexes).

Targets (issue 12): p50 <= 5 ms, recall@10 >= 0.95 for dense and for hybrid, overhead <= 20%,
``ragline query`` <= 1.5 s and RSS <= index size + 1 GB.

Run:  nice -n 5 .venv/bin/python benchmarks/retrieval_scale.py [--n 1000000] [--kinds ivf,hnsw]
      [--queries 200] [--nprobe 32] [--ef-search 64] [--ef-construction 40] [--bm25-budget auto|exact|N] [--out DIR]

``--bm25-only`` measures BM25 alone, in about a minute at 1M rows: its statistics are counted
from the synthetic word numbers (no vectors, no publish), and ``BM25Corpus.search`` is timed
exact and at each of ``--bm25-budgets`` for the same queries, with recall@10 against exact
BM25 scores (:func:`bm25_only`):
      nice -n 5 .venv/bin/python benchmarks/retrieval_scale.py --bm25-only [--n 1000000]
      [--queries 200] [--bm25-budgets 1024,2048,4096,8192] [--candidates 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import yaml

REPO = Path(__file__).resolve().parents[1]
VOCAB = 50_000
WORDS_PER_CHUNK = 24


def synthetic_vectors(n: int, dim: int, centers: int, seed: int = 0, batch: int = 100_000) -> np.ndarray:
    """float32 (n, dim) unit vectors: a random center plus Gaussian noise (sigma 0.06 per axis)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, batch):
        m = min(batch, n - lo)
        x = c[rng.integers(0, centers, m)] + 0.06 * rng.standard_normal((m, dim)).astype(np.float32)
        out[lo:lo + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def synthetic_word_ids(n: int, seed: int = 1) -> np.ndarray:
    """int64 (n, WORDS_PER_CHUNK) word numbers of the synthetic texts (Zipf, exponent 1.3)."""
    rng = np.random.default_rng(seed)
    return np.minimum(rng.zipf(1.3, size=(n, WORDS_PER_CHUNK)), VOCAB) - 1


def synthetic_texts(n: int, seed: int = 1) -> list[str]:
    return [" ".join(f"w{i}" for i in row) for row in synthetic_word_ids(n, seed)]


def query_rows(n: int, queries: int) -> np.ndarray:
    """The rows whose first four words are the queries (the same in both modes)."""
    return np.random.default_rng(42).choice(n, size=queries, replace=False)


def bm25_from_ids(ids: np.ndarray):  # noqa: ANN201 - a BM25Index
    """The :class:`indexers.bm25.BM25Index` that ``BM25Index.build(synthetic_texts(n))`` builds
    (word ``w{i}`` is one token: two or more word characters, no stopword, unchanged by the
    stemmer), counted from the word numbers without making 1M strings (checked equal on a
    small corpus by :func:`bm25_only`)."""
    from ragline.indexers.bm25 import BM25Index, BM25Spec

    n, width = ids.shape
    used, tok = np.unique(ids.reshape(-1), return_inverse=True)
    keys, counts = np.unique(tok.astype(np.int64) * n + np.repeat(np.arange(n, dtype=np.int64), width),
                             return_counts=True)
    tok_of, row_of = np.divmod(keys, n)
    indptr = np.zeros(len(used) + 1, dtype=np.int64)
    np.cumsum(np.bincount(tok_of, minlength=len(used)), out=indptr[1:])
    return BM25Index(counts.astype(np.float32), row_of.astype(np.int32), indptr, np.full(n, width, np.int32),
                     {f"w{w}": i for i, w in enumerate(used.tolist())}, BM25Spec())


def bm25_only(args: argparse.Namespace) -> None:
    """``--bm25-only``: BM25 statistics of the ``--n`` synthetic texts (no vectors, no FAISS, no
    publish), then ``BM25Corpus.search`` exact and with each ``--bm25-budgets`` value for the
    same queries as the full run, at depth ``--candidates`` (what hybrid asks BM25 for):
    p50/p90 ms per query and recall@10 against exact BM25 scores (every row scored with
    :meth:`BM25Corpus.scores`; the exact search is checked equal to them)."""
    from ragline.indexers.bm25 import BM25Corpus, BM25Index

    small = synthetic_word_ids(500, seed=3)  # the shortcut builds what BM25Index.build builds
    a, b = bm25_from_ids(small), BM25Index.build([" ".join(f"w{i}" for i in r) for r in small])
    for q in ("w0 w1", "w7 w3 w0", "w20 w2"):
        assert np.array_equal(a.scores(q), b.scores(q)), q
    t0 = time.perf_counter()
    ids = synthetic_word_ids(args.n)
    corpus = BM25Corpus([bm25_from_ids(ids)])
    qtext = [" ".join(f"w{i}" for i in ids[r][:4]) for r in query_rows(args.n, args.queries)]
    del ids
    print(f"BM25 statistics of {args.n} synthetic texts in {time.perf_counter() - t0:.0f} s", flush=True)
    depth = args.candidates
    truth = []
    for q in qtext:
        s = corpus.scores(q)
        cand = np.flatnonzero(s > 0)
        truth.append(cand[np.lexsort((cand, -s[cand]))][:depth])
    print(f"\nBM25 at {args.n:,} rows, {args.queries} queries, depth {depth} (after 10 warm-up queries)")
    print("".join(f"{h:>14}" for h in ("budget", "p50", "p90", "recall@10", f"recall@{depth}")))
    for budget in [None, *[int(x) for x in args.bm25_budgets.split(",") if x.strip()]]:
        run = BM25Corpus(corpus.parts)  # a freshly opened version: nothing memoized
        for q in qtext[:10]:  # as the full run: ten queries first
            run.search(q, depth, budget=budget)
        ms, got = p50_ms(lambda q: run.search(q, depth, budget=budget), qtext)  # noqa: B023
        if budget is None:
            for (rows, _), want in zip(got, truth):
                assert rows.tolist() == want.tolist(), "exact BM25 search differs from scoring every row"
        p90 = float(np.percentile(_last_times, 90))
        r10 = recall([r[:10].tolist() for r, _ in got], [t[:10].tolist() for t in truth])
        rd = recall([r.tolist() for r, _ in got], [t.tolist() for t in truth])
        print("".join(f"{v:>14}" for v in ("exact" if budget is None else budget, f"{ms:.2f} ms", f"{p90:.2f} ms",
                                               f"{r10:.3f}", f"{rd:.3f}")), flush=True)
    print("target (hybrid through Retriever): p50 <= 5 ms with dense, recall@10 >= 0.95")


def tables(n: int, texts: list[str]) -> tuple[pa.Table, pa.Table]:
    from ragline.core.hashing import doc_id_for
    from ragline.core.schemas import ELEMENT_TYPE

    per_doc = 10
    uris = [f"synthetic/doc{d:07d}.txt" for d in range((n + per_doc - 1) // per_doc)]
    doc_ids = [doc_id_for(u) for u in uris]
    rows = np.arange(n)
    d = rows // per_doc
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=n)
    chunks = pa.table({
        "row": pa.array(rows, pa.int64()),
        "chunk_id": pa.array([f"{i:032x}" for i in range(n)]),
        "doc_id": pa.array([doc_ids[i] for i in d]),
        "uri": pa.array([uris[i] for i in d]),
        "char_start": pa.array(np.zeros(n, np.int64)),
        "char_end": pa.array(lengths),
        "token_count": pa.array(np.full(n, WORDS_PER_CHUNK, np.int32)),
        "page": pa.nulls(n, pa.int32()),
        "section_path": pa.array([[] for _ in range(n)], pa.list_(pa.string())),
        "oversized": pa.array(np.zeros(n, bool)),
        "text": pa.array(texts, pa.large_string()),
        "context": pa.array([""] * n),
    })
    documents = pa.table({
        "doc_id": doc_ids, "uri": uris, "sha256": ["0" * 64] * len(uris), "mime_type": ["text/plain"] * len(uris),
        "size_bytes": pa.array(np.zeros(len(uris), np.int64)), "title": [""] * len(uris), "text": [""] * len(uris),
        "elements": pa.array([[] for _ in uris], pa.list_(ELEMENT_TYPE)),
        "metadata": pa.nulls(len(uris), pa.map_(pa.string(), pa.string())), "encoding": pa.nulls(len(uris), pa.string()),
    })
    return documents, chunks


_last_times: list[float] = []  # the per-item ms of the last p50_ms call


def p50_ms(fn, items) -> tuple[float, list]:  # noqa: ANN001
    times, out = [], []
    for it in items:
        t0 = time.perf_counter()
        out.append(fn(it))
        times.append((time.perf_counter() - t0) * 1e3)
    _last_times[:] = times
    return statistics.median(times), out


def recall(got: list[list[int]], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(g) & set(t)) / max(1, len(t)) for g, t in zip(got, truth)]))


def _budget(value: str) -> int | str | None:
    """``--bm25-budget``: ``auto``, ``exact`` (``None``) or a positive number of postings."""
    return None if value == "exact" else value if value == "auto" else int(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--centers", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--kinds", default="ivf,hnsw", help="comma list of ivf (auto's IVF), hnsw (HNSW32) or factory strings")
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--ef-search", type=int, default=64)
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--train-size", type=int, default=100_000)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temp folder, removed)")
    ap.add_argument("--bm25-budget", type=_budget, default="auto",
                    help="retrieval.bm25_budget of the hybrid search: auto (the default's), exact, or N postings")
    ap.add_argument("--bm25-only", action="store_true",
                    help="only BM25: build its statistics, time BM25Corpus.search exact and at --bm25-budgets")
    ap.add_argument("--bm25-budgets", default="1024,2048,4096,8192")
    ap.add_argument("--candidates", type=int, default=50, help="BM25 depth of --bm25-only (hybrid's candidates)")
    args = ap.parse_args()
    if args.bm25_only:
        bm25_only(args)
        return

    from ragline.indexers.bm25 import BM25Index
    from ragline.indexers.embedders import HashingEmbedder, info_of
    from ragline.indexers.faiss_index import AUTO_APPROXIMATE, auto_nlist
    from ragline.indexers.registry import IndexRegistry
    from ragline.indexers.retrieval import RetrievalConfig
    from ragline.indexers.retriever import Retriever
    from ragline.pipelines.config import Params
    from ragline.pipelines.load import quarantine_to_table
    from ragline.pipelines.publish import publish_index

    work = args.out or Path(tempfile.mkdtemp(prefix="ragline-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    n, dim = args.n, args.dim
    t0 = time.perf_counter()
    vectors = synthetic_vectors(n, dim, args.centers)
    texts = synthetic_texts(n)
    documents, chunks = tables(n, texts)
    del texts
    rng = np.random.default_rng(42)
    qrows = rng.choice(n, size=args.queries, replace=False)  # = query_rows(n, args.queries)
    qvec = vectors[qrows] + 0.03 * rng.standard_normal((args.queries, dim)).astype(np.float32)
    qvec /= np.linalg.norm(qvec, axis=1, keepdims=True)
    qtext = [" ".join(t.split()[:4]) for t in chunks.column("text").take(pa.array(qrows)).to_pylist()]
    print(f"data: {n} chunks x {dim}-d in {time.perf_counter() - t0:.0f} s", flush=True)

    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    truth = [r.tolist() for r in exact.search(qvec, 10)[1]]
    emb = HashingEmbedder(dim=dim)
    kinds = {"ivf": AUTO_APPROXIMATE.format(nlist=auto_nlist(n)), "hnsw": "HNSW32"}
    results: dict = {"n": n, "dim": dim, "queries": args.queries, "nprobe": args.nprobe, "ef_search": args.ef_search,
                     "bm25_budget": args.bm25_budget,
                     "ef_construction": args.ef_construction, "kinds": {}}
    cfg_dense = RetrievalConfig(mode="dense", k=10, nprobe=args.nprobe, ef_search=args.ef_search)
    cfg_hybrid = RetrievalConfig(mode="hybrid", k=10, nprobe=args.nprobe, ef_search=args.ef_search,
                                 weights={"dense": 0.4, "bm25": 0.6}, bm25_budget=args.bm25_budget)
    cfg_truth = cfg_hybrid.model_copy(update={"bm25_budget": None})  # exact dense and exact BM25
    hybrid_truth = None
    for key in [k.strip() for k in args.kinds.split(",") if k.strip()]:
        factory = kinds.get(key, key)
        params = Params.from_dict({
            "embed": {"model": f"hashing:{dim}"},
            "index": {"name": "scale", "root": str(work / "indexes"), "factory": factory, "train_size": args.train_size,
                      "ef_construction": args.ef_construction, "verify": "size"},
            "retrieval": cfg_hybrid.model_dump(),
        })
        t1 = time.process_time()
        w1 = time.perf_counter()
        m = publish_index(IndexRegistry(params.index.root, verify="size"), params, documents, chunks, vectors,
                          quarantine_to_table([]), info_of(emb), aliases=())
        build_cpu, build_wall = time.process_time() - t1, time.perf_counter() - w1
        print(f"{factory}: published {m.version} in {build_wall:.0f} s wall, {build_cpu:.0f} CPU-s", flush=True)
        retriever = Retriever.open(IndexRegistry(params.index.root, verify="size"), f"scale@{m.version}", embedder=emb)
        (index,) = retriever.index.parts  # the one segment's FAISS index: the raw baseline of the same rows
        from ragline.indexers.faiss_index import search_parameters

        def raw(i: int) -> list[int]:
            p = search_parameters(index, depth=10, ef_search=args.ef_search, nprobe=args.nprobe)
            return index.search(qvec[i:i + 1], 10, params=p)[1][0].tolist()

        def dense(i: int) -> list[int]:
            return [h.row for h in retriever.search(qtext[i], cfg_dense, vector=qvec[i])]

        def hybrid(i: int) -> list[int]:
            return [h.row for h in retriever.search(qtext[i], cfg_hybrid, vector=qvec[i])]

        idx = list(range(args.queries))
        for f in (raw, dense, hybrid):  # warm the page cache and the BM25 arrays
            for i in idx[:10]:
                f(i)
        raw_ms, _ = p50_ms(raw, idx)
        dense_ms, dense_rows = p50_ms(dense, idx)
        hybrid_ms, hybrid_rows = p50_ms(hybrid, idx)
        exact_bm25_ms, _ = p50_ms(lambda i: retriever.search(qtext[i], cfg_truth, vector=qvec[i]), idx)
        if hybrid_truth is None:
            flat = Retriever(exact, retriever.rows, retriever.bm25, emb)
            hybrid_truth = [[h.row for h in flat.search(qtext[i], cfg_truth, vector=qvec[i])] for i in idx]
        reg = IndexRegistry(params.index.root)
        size_mb = sum((reg.segment_dir("scale", s.id) / "index.faiss").stat().st_size
                      for s in reg.segments("scale", m.version)) / 2**20  # the version's segments' FAISS files
        params_file = work / "params.yaml"
        params_file.write_text(yaml.safe_dump(params.to_dict()))
        cli = [str(Path(sys.executable).parent / "ragline"), "query", qtext[0], "--index", f"scale@{m.version}",
               "--params", str(params_file), "-k", "10", "--json"]
        subprocess.run(cli, cwd=work, capture_output=True, check=True)  # warm the page cache
        walls, rss, cpus = [], [], []
        for _ in range(3):
            w = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *cli], cwd=work, capture_output=True,
                                 text=True, check=True)
            walls.append(time.perf_counter() - w)
            usage = json.loads(res.stderr.strip().splitlines()[-1])
            rss.append(usage["maxrss_kb"] / 1024)
            cpus.append(usage["cpu_s"])
        results["kinds"][factory] = row = {
            "build_wall_s": round(build_wall, 1), "build_cpu_s": round(build_cpu, 1),
            "index_file_mb": round(size_mb, 1),
            "raw_p50_ms": round(raw_ms, 3), "dense_p50_ms": round(dense_ms, 3),
            "overhead": round(dense_ms / raw_ms - 1, 3),
            "dense_recall@10": round(recall(dense_rows, truth), 4),
            "hybrid_p50_ms": round(hybrid_ms, 3), "hybrid_recall@10": round(recall(hybrid_rows, hybrid_truth), 4),
            "hybrid_exact_bm25_p50_ms": round(exact_bm25_ms, 3),
            "query_cli_s": round(statistics.median(walls), 3), "query_cli_cpu_s": round(statistics.median(cpus), 3),
            "query_cli_rss_mb": round(max(rss), 1),
            "rss_budget_mb": round(size_mb + 1024, 1),
        }
        print(json.dumps({factory: row}), flush=True)
        del retriever, index
    _report(results)
    (work / "retrieval_scale.json").write_text(json.dumps(results, indent=2))
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)


#: Runs a command and prints its peak RSS (the child's ru_maxrss) as JSON on stderr.
_RSS_WRAPPER = ("import json, resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
                "sys.stdout.buffer.write(r.stdout); sys.stderr.write(r.stderr.decode(errors='replace') + '\\n' + "
                "json.dumps({'maxrss_kb': (u := resource.getrusage(resource.RUSAGE_CHILDREN)).ru_maxrss, "
                "'cpu_s': u.ru_utime + u.ru_stime}) + '\\n'); "
                "sys.exit(r.returncode)")


def _report(r: dict) -> None:
    print(f"\nretrieval at {r['n']:,} chunks x {r['dim']}-d, {r['queries']} queries, nprobe {r['nprobe']}, "
          f"efSearch {r['ef_search']}, efConstruction {r['ef_construction']}, bm25_budget {r['bm25_budget']}")
    head = ("kind", "raw p50", "dense p50", "overhead", "dense R@10", "hybrid p50", "hybrid R@10", "exact-BM25 p50", "query s",
            "query CPU s", "query RSS", "RSS budget")
    print("".join(f"{h:>15}" for h in head))
    for kind, x in r["kinds"].items():
        vals = (kind, f"{x['raw_p50_ms']:.2f} ms", f"{x['dense_p50_ms']:.2f} ms", f"{x['overhead']:+.0%}",
                f"{x['dense_recall@10']:.3f}", f"{x['hybrid_p50_ms']:.2f} ms", f"{x['hybrid_recall@10']:.3f}",
                f"{x['hybrid_exact_bm25_p50_ms']:.2f} ms", f"{x['query_cli_s']:.2f}", f"{x['query_cli_cpu_s']:.2f}", f"{x['query_cli_rss_mb']:.0f} MB", f"{x['rss_budget_mb']:.0f} MB")
        print("".join(f"{v:>15}" for v in vals))
    print("targets: p50 <= 5 ms, recall@10 >= 0.95, overhead <= +20%, query <= 1.5 s, RSS <= index + 1 GB")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
