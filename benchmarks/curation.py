"""Curation benchmark on Python's documentation (Debian's python3.11-doc) plus planted copies.

Corpus (in a temporary folder): ``--pages`` library pages (HTML) and, beside each, the
Sphinx source copy Debian ships (``_sources/library/<page>.rst.txt``), plus a planted set made
from ``--planted`` of those pages: an exact copy of the HTML file in another folder, copies of
the page's text with 1 %, 5 % and 20 % of its words replaced (``.txt``), and the text converted
to Markdown (``.md``). PDFs are not planted (no converter in the stack; fpdf2 is a test extra).

It runs the stage functions directly (no Prefect): load, curate (boilerplate), chunk, curate
(clusters), and prints

- near-duplicate precision and recall at document level against the planted labels (recall
  per kind of copy; precision over every detected pair, a pair being right when both members
  come from the same page: planted copies and the page's own ``_sources`` copy),
- chunks curation removed, and the embedding time that saves (removed chunks x the seconds
  per chunk of ``--model`` on ``embed.backend`` measured on a 64-chunk sample; ``--model hashing`` measures the
  fake embedder, a smoke run),
- the share of top-5 slots holding a chunk that is a copy (word 3-shingle Jaccard >= 0.8) of a
  higher-ranked hit, on 30 questions, before (every chunk indexed) and after (curated,
  ``link``, one hit per cluster). Retrieval is BM25 (the same Retriever; no model needed),
- curation's share of ingest time: (boilerplate + clustering) / (load + curate + chunk +
  embedding of the indexed chunks at the measured rate); target <= 5 %,
- with ``--compare-plain-words``, the same detection with words taken as they are (before
  :func:`pipelines.curate.strip_markup` reduced reST markup), side by side,
- the embedding time ``ragline ingest`` itself saves by not embedding exact copies while it
  streams (:func:`pipelines.stream.load_chunk_embed`, as the ingest flow calls it: boilerplate
  hook, ``--model`` on ``embed.backend``, no embedding cache), run side by side with and without
  ``skip_copies`` on the same files: the embedder's seconds and texts in each run
  (``--no-ingest`` leaves this out; it parses the corpus twice more).

    .venv/bin/python benchmarks/curation.py [--pages 20] [--planted 10] [--model all-MiniLM-L6-v2] [--json]

Bounded for a shared 2-core machine: 20 pages by default (not all 530), BM25 for the top-5
measure, the real model only on a 64-chunk sample (parsing the large pages dominates the
run time: about 3 minutes for 20 pages here). Needs ``apt-get install python3.11-doc``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragline.core.offline import set_offline_env  # noqa: E402

set_offline_env()
from ragline.pipelines.verbosity import quiet_libraries  # noqa: E402

quiet_libraries()

DOCS = Path("/usr/share/doc/python3.11-doc/html")
PAGES = ("json", "os", "os.path", "re", "datetime", "collections", "itertools", "functools", "pathlib", "subprocess",
         "threading", "logging", "argparse", "unittest", "sqlite3", "csv", "random", "math", "statistics", "typing",
         "dataclasses", "enum", "shutil", "tempfile", "pickle", "hashlib", "time", "string", "textwrap", "heapq",
         "bisect", "copy", "glob", "zipfile", "gzip", "urllib.parse", "socket", "struct", "decimal", "secrets")
QUESTIONS = (
    "How do I parse a JSON string into a Python object?",
    "How can I pretty-print JSON with indentation?",
    "How do I get the current working directory?",
    "How do I join path components in a portable way?",
    "How do I check whether a file exists?",
    "How do I compile a regular expression and reuse it?",
    "What does re.sub do with a function as replacement?",
    "How do I format a datetime as a string?",
    "How do I count hashable items with a Counter?",
    "What is a defaultdict?",
    "How do I chain several iterables together?",
    "How do I cache the results of a function call?",
    "How do I read all text from a file with pathlib?",
    "How do I run a command and capture its output with subprocess?",
    "How do I start a thread and wait for it to finish?",
    "How do I configure logging to write to a file?",
    "How do I add an optional command-line flag with argparse?",
    "How do I write a test case with unittest?",
    "How do I use placeholders in sqlite3 queries?",
    "How do I read rows from a CSV file as dictionaries?",
    "How do I pick a random element from a list?",
    "How do I compute the median of a list of numbers?",
    "How do I declare a dataclass with default values?",
    "How do I copy a directory tree recursively?",
    "How do I create a temporary file that is deleted automatically?",
    "How do I compute the SHA-256 of some bytes?",
    "How do I keep a heap of the smallest items?",
    "How do I make a deep copy of an object?",
    "How do I pack integers into bytes with struct?",
    "How do I generate a secure random token?",
)
KINDS = ("exact", "edit01", "edit05", "edit20", "markdown")
EDIT = {"edit01": 0.01, "edit05": 0.05, "edit20": 0.20}
_WORD = re.compile(r"\w+")


def origin(uri: str) -> str:
    """The page a file comes from: ``library/json`` for the page, its source and its planted copies."""
    name = Path(uri).name
    for suffix in (".rst.txt", ".html", ".txt", ".md"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.split("__")[-1]


def kind_of(uri: str) -> str:
    parts = Path(uri).parts
    if "planted" in parts:
        return parts[parts.index("planted") + 1]
    return "source" if uri.endswith(".rst.txt") else "page"


def edit_words(text: str, share: float, rng: random.Random) -> str:
    words = text.split(" ")
    for i in rng.sample(range(len(words)), int(share * len(words))):
        words[i] = f"edited{i}"
    return " ".join(words)


def shingle_set(text: str) -> set[str]:
    w = _WORD.findall(text.casefold())
    return {" ".join(w[i:i + 3]) for i in range(max(1, len(w) - 2))}


def copy_share(hit_lists: list[list]) -> float:
    """Share of slots whose chunk is a copy (3-shingle Jaccard >= 0.8) of a higher-ranked hit."""
    slots = copies = 0
    for hits in hit_lists:
        sets = [shingle_set(h.text) for h in hits]
        for i, s in enumerate(sets):
            slots += 1
            if any(len(s & t) / max(1, len(s | t)) >= 0.8 for t in sets[:i]):
                copies += 1
    return copies / slots if slots else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=20, help="library pages used (max %d)" % len(PAGES))
    ap.add_argument("--planted", type=int, default=10, help="pages that get planted copies")
    ap.add_argument("--model", default="all-MiniLM-L6-v2", help="embedder timed on a 64-chunk sample (hashing = fake)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threshold", type=float, nargs="*", default=None,
                    help="curate.near_duplicate_threshold values to measure on the same corpus (default: params)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--compare-plain-words", action="store_true",
                    help="also cluster with the words taken as they are (no reST markup stripping), side by side")
    ap.add_argument("--no-ingest", action="store_true",
                    help="skip the side-by-side streamed ingest (with / without the early skip of exact copies)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not DOCS.is_dir():
        print(f"error: {DOCS} not found; apt-get install python3.11-doc", file=sys.stderr)
        return 2

    from ragline.indexers.embedders import make_embedder
    from ragline.indexers.retrieval import RetrievalConfig
    from ragline.indexers.retriever import Retriever
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.config import Params, load_params
    from ragline.pipelines.curate import curate_documents, curate_ingest
    from ragline.pipelines.load import discover_files, documents_to_table, load_documents

    repo = Path(__file__).resolve().parents[1]
    base = load_params(repo / "params.yaml").to_dict()
    base["load"]["workers"] = args.workers
    params = Params.from_dict(base)
    rng = random.Random(args.seed)
    pages = [p for p in PAGES[: args.pages] if (DOCS / "library" / f"{p}.html").exists()]
    work = Path(tempfile.mkdtemp(prefix="ragline-curation-"))
    try:
        corpus = work / "pydocs"
        for p in pages:
            (corpus / "library").mkdir(parents=True, exist_ok=True)
            (corpus / "_sources" / "library").mkdir(parents=True, exist_ok=True)
            shutil.copy(DOCS / "library" / f"{p}.html", corpus / "library" / f"{p}.html")
            src = DOCS / "_sources" / "library" / f"{p}.rst.txt"
            if src.exists():
                shutil.copy(src, corpus / "_sources" / "library" / f"{p}.rst.txt")
        t0 = time.perf_counter()
        docs, bad = load_documents(discover_files([str(corpus)], ["**/*"], []), params.load)
        t_load = time.perf_counter() - t0
        # the planted copies, made from the pages' curated text (what a copy of the page's content carries)
        chosen = set(rng.sample(pages, min(args.planted, len(pages))))
        seeds = [d for d in curate_documents(docs, params)[0] if kind_of(d.uri) == "page" and origin(d.uri) in chosen]
        for d in seeds:
            name = f"library__{origin(d.uri)}"
            for kind in KINDS:
                (corpus / "planted" / kind).mkdir(parents=True, exist_ok=True)
            shutil.copy(d.uri, corpus / "planted" / "exact" / f"{name}.html")
            for kind, share in EDIT.items():
                (corpus / "planted" / kind / f"{name}.txt").write_text(edit_words(d.text, share, rng), encoding="utf-8")
            (corpus / "planted" / "markdown" / f"{name}.md").write_text(f"# {d.title}\n\n{d.text}\n", encoding="utf-8")
        t0 = time.perf_counter()
        more, bad2 = load_documents(discover_files([str(corpus / "planted")], ["**/*"], []), params.load)
        t_load += time.perf_counter() - t0
        docs, bad = sorted(docs + more, key=lambda d: d.uri), bad + bad2
        early_skip = None if args.no_ingest else ingest_side_by_side(corpus, params, args.model)
        t0 = time.perf_counter()
        curated_docs, boiler = curate_documents(docs, params)
        t_boiler = time.perf_counter() - t0
        t0 = time.perf_counter()
        raw_chunks, _ = chunk_documents(docs, params.chunk)  # before: no curation at all
        chunks, chunk_bad = chunk_documents(curated_docs, params.chunk)
        t_chunk = (time.perf_counter() - t0) / 2
        documents = documents_to_table(curated_docs)

        # embedding time per chunk on a 64-chunk sample (the params' backend)
        embedder = make_embedder(args.model, True, backend=params.embed.backend, cache_dir=params.paths.cache)
        sample = [t for t in raw_chunks.column("text").to_pylist()[:64]]
        embedder.embed(sample[:4])
        t0 = time.perf_counter()
        embedder.embed(sample)
        s_per_chunk = (time.perf_counter() - t0) / max(1, len(sample))

        # top-5 copies before curation (BM25 through the one Retriever)
        hashing = make_embedder("hashing", True)
        cfg = RetrievalConfig(mode="bm25", k=5)
        before = Retriever.in_memory(raw_chunks, hashing.embed(raw_chunks.column("text").to_pylist()), hashing,
                                     params.index.faiss_spec(), params.index.bm25_spec())
        share_before = copy_share([before.search(q, cfg) for q in QUESTIONS])

        results = []
        import ragline.pipelines.curate as curate_mod

        strip = curate_mod.strip_markup
        words_modes = ["rst-stripped", "plain"] if args.compare_plain_words else ["rst-stripped"]
        for threshold, words_mode in [(t, w) for t in args.threshold or [params.curate.near_duplicate_threshold]
                                      for w in words_modes]:
            pt = Params.from_dict({**params.to_dict(), "curate": {**params.to_dict()["curate"],
                                                                  "near_duplicate_threshold": threshold}})
            # plain: words as before reST markup was stripped (the shingler's own words otherwise)
            curate_mod.strip_markup = strip if words_mode == "rst-stripped" else (lambda text: text)
            try:
                t0 = time.perf_counter()
                kept, cur = curate_ingest(documents, chunks, pt, boiler)
                t_cluster = time.perf_counter() - t0
            finally:
                curate_mod.strip_markup = strip

            # precision / recall of document-level near-duplicate detection
            canon_of = {r["member_id"]: r["canonical_id"] for r in cur.documents.rows}
            uri_of = dict(zip(documents.column("doc_id").to_pylist(), documents.column("uri").to_pylist()))
            pairs = [(uri_of[m], uri_of[c]) for m, c in cur.documents.aliases.items()]
            right = [x for x in pairs if origin(x[0]) == origin(x[1])]
            precision = len(right) / len(pairs) if pairs else 1.0
            cluster_of = {uri_of[m]: canon_of.get(m, m) for m in uri_of}
            page_of = {origin(u): u for u in uri_of.values() if kind_of(u) == "page"}
            recall: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for u in uri_of.values():
                k = kind_of(u)
                if k in KINDS:
                    recall[k][1] += 1
                    orig = page_of.get(origin(u))
                    recall[k][0] += int(orig is not None and cluster_of[u] == cluster_of[orig])
            sources = [u for u in uri_of.values() if kind_of(u) == "source"]
            sources_linked = sum(1 for u in sources
                                 if origin(u) in page_of and cluster_of[u] == cluster_of[page_of[origin(u)]])
            wrong = [x for x in pairs if origin(x[0]) != origin(x[1])]

            after = Retriever.in_memory(kept, hashing.embed(kept.column("text").to_pylist()), hashing,
                                        params.index.faiss_spec(), params.index.bm25_spec())
            after = Retriever(after.index, kept, after.bm25, hashing, duplicates=cur.duplicates_table())
            hits_after = [after.search(q, cfg) for q in QUESTIONS]
            share_after = copy_share(hits_after)
            listed = sum(1 for hs in hits_after for h in hs if h.duplicates)

            embed_after = kept.num_rows * s_per_chunk
            ingest = t_load + t_boiler + t_chunk + t_cluster + embed_after
            results.append({
                "ingest_early_skip": early_skip,
                "documents": len(docs), "quarantined": len(bad) + len(chunk_bad), "pages": len(pages),
                "planted_from": len(seeds),
                "threshold": threshold, "words": words_mode,
                "recall": {k: {"found": v[0], "of": v[1], "recall": round(v[0] / v[1], 3) if v[1] else None}
                           for k, v in sorted(recall.items())},
                "precision": round(precision, 3), "pairs_detected": len(pairs), "pairs_wrong": wrong[:10],
                "sources_linked_to_their_page": f"{sources_linked}/{len(sources)}",
                "chunks_before": raw_chunks.num_rows, "chunks_after": kept.num_rows,
                "chunks_removed": cur.removed_chunks, "chunk_clusters": cur.counts()["chunks"],
                "boilerplate": cur.counts()["boilerplate"],
                "boilerplate_keys": {g: k[:5] for g, k in sorted(cur.boilerplate.keys.items())},
                "embed_model": f"{args.model} ({params.embed.backend})", "embed_s_per_chunk": round(s_per_chunk, 5),
                "embedding_seconds_saved": round(cur.removed_chunks * s_per_chunk, 2),
                "top5_copy_share_before": round(share_before, 3), "top5_copy_share_after": round(share_after, 3),
                "hits_listing_other_sources": listed,
                "seconds": {"load": round(t_load, 2), "boilerplate": round(t_boiler, 3), "chunk": round(t_chunk, 2),
                            "cluster": round(t_cluster, 3), "embed_estimated": round(embed_after, 2)},
                "curation_share_of_ingest": round((t_boiler + t_cluster) / ingest, 4) if ingest else 0.0,
            })
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        report(result, len(QUESTIONS))
    return 0


def ingest_side_by_side(corpus: Path, params, model: str) -> dict:
    """Stream the corpus as ``ragline ingest`` does, without and with the early skip of exact copies.

    Returns:
        ``{"without": ..., "with": ...}``: per run the chunks, the texts embedded, the rows not
        embedded, the embedder's seconds and the stream's wall seconds; and ``embed_seconds_saved``.
    """
    from ragline.pipelines.curate import curate_documents
    from ragline.pipelines.config import Params
    from ragline.pipelines.embed import index_embedder
    from ragline.pipelines.load import discover_files
    from ragline.pipelines.stream import load_chunk_embed

    with_model = Params.from_dict({**params.to_dict(), "embed": {**params.to_dict()["embed"], "model": model}})
    embedder = index_embedder(with_model)  # its ONNX export stays in paths.cache
    # the stream without an embedding cache: every text is embedded
    p = Params.from_dict({**with_model.to_dict(), "paths": {**with_model.to_dict()["paths"], "cache": ""}})
    getattr(embedder, "warm_up", lambda: None)()
    embedder.embed(["warm up"])
    files = discover_files([str(corpus)], ["**/*"], [])
    out: dict = {}
    for label, skip in (("without", False), ("with", True)):
        t0 = time.perf_counter()
        res = load_chunk_embed(files, p, lambda: embedder, curate=lambda d: curate_documents(d, p)[0],
                               skip_copies=skip)
        out[label] = {"chunks": res.chunks.num_rows, "embedded_texts": res.embedded,
                      "rows_not_embedded": int(res.not_embedded.sum()), "embed_s": res.seconds["embed"],
                      "wall_s": round(time.perf_counter() - t0, 2)}
    out["embed_seconds_saved"] = round(out["without"]["embed_s"] - out["with"]["embed_s"], 2)
    # the same saving at the with-run's own rate (less sensitive to other load on the machine)
    w = out["with"]
    out["embed_seconds_saved_at_rate"] = round(w["rows_not_embedded"] * w["embed_s"] / max(1, w["embedded_texts"]), 2)
    out["model"] = f"{model} ({p.embed.backend})"
    return out


def report(result: dict, n_questions: int) -> None:
    """Print one threshold's results."""
    print(f"corpus: {result['pages']} Python library pages + their _sources copies + planted copies of "
          f"{result['planted_from']} pages = {result['documents']} documents ({result['quarantined']} quarantined)")
    print(f"near-duplicate detection (Jaccard >= {result['threshold']}, words {result['words']}), document level:")
    for k, v in result["recall"].items():
        print(f"  recall {k:9s} {v['found']:3d}/{v['of']:<3d} = {v['recall']}")
    print(f"  precision {result['precision']} over {result['pairs_detected']} detected pairs "
          f"({len(result['pairs_wrong'])} from different pages)")
    print(f"  _sources copies linked to their HTML page: {result['sources_linked_to_their_page']}")
    print(f"chunks: {result['chunks_before']} -> {result['chunks_after']} ({result['chunks_removed']} removed; "
          f"clusters {result['chunk_clusters']}); boilerplate {result['boilerplate']}")
    for g, keys in result["boilerplate_keys"].items():
        print(f"  boilerplate in {Path(g).name or g}: {'; '.join(k[:50] for k in keys)}")
    print(f"embedding time saved: {result['embedding_seconds_saved']} s ({result['embed_model']}, "
          f"{result['embed_s_per_chunk']} s/chunk on a 64-chunk sample)")
    print(f"top-5 slots holding a copy of a higher hit (BM25, {n_questions} questions): "
          f"{result['top5_copy_share_before']} before -> {result['top5_copy_share_after']} after; "
          f"{result['hits_listing_other_sources']} hits list other sources")
    s = result["seconds"]
    print(f"curation share of ingest: {result['curation_share_of_ingest']:.2%} (boilerplate {s['boilerplate']} s + "
          f"clustering {s['cluster']} s of load {s['load']} s + chunk {s['chunk']} s + embed {s['embed_estimated']} s); "
          "target <= 5%")
    ing = result.get("ingest_early_skip")
    if ing:
        a, b = ing["without"], ing["with"]
        print(f"streamed ingest ({ing['model']}, no cache), without -> with the early skip of exact copies: "
              f"{a['chunks']} chunks both; texts embedded {a['embedded_texts']} -> {b['embedded_texts']} "
              f"({b['rows_not_embedded']} copy rows not embedded); embedder {a['embed_s']} s -> {b['embed_s']} s "
              f"(saved {ing['embed_seconds_saved']} s; {ing['embed_seconds_saved_at_rate']} s at the run's own s/text); "
              f"stream wall {a['wall_s']} s -> {b['wall_s']} s")


if __name__ == "__main__":
    sys.exit(main())
