"""Cost of verifying a version before serving it (``index.verify: sha256`` vs ``size``).

Builds one index with the deterministic ``hashing`` embedder (dim 384, like all-MiniLM-L6-v2,
so the FAISS file has the real model's size per chunk) from synthetic documents, or with
``--pydocs`` from Python's HTML documentation (Debian's python3.11-doc, 530 pages, loaded with
the real loaders and the shipped ``load:``/``chunk:`` params; only the embedder is the fake,
which does not matter here: the cost is hashing the files), publishes it, then times, side by
side in this run and best of ``--repeat``:

- ``check_files(sha256)``: size and sha256 of every file against the manifest (the default);
- ``check_files(size)``: sizes only;
- ``PublishedIndex.open`` with each mode (verification + reading FAISS and chunks.parquet).

Prints the version's file sizes, the times in ms and the share of the open time spent
verifying. The page cache is warm (the files were just written), as for a server that reopens
a version it has served before; a cold read adds the disk's read time to both modes.

With ``--workdir DIR`` the index is kept in ``DIR/indexes`` and reused by the next run with
the same ``--workdir`` (nothing is rebuilt when it already holds a version of the index).

Run:  .venv/bin/python benchmarks/verify_cost.py [--docs 2000 | --pydocs [--source DIR]]
                                                  [--workdir DIR] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ragline.core.offline import set_offline_env  # noqa: E402

set_offline_env()

WORDS = ("hive frame comb brood queen drone worker nectar pollen honey wax varroa mite sugar syrup smoke "
         "super box entrance forage swarm winter spring colony apiary extractor frame bee space").split()


PYDOCS = Path("/usr/share/doc/python3.11-doc/html")


def synthetic_documents(n_docs: int) -> tuple[list, list]:
    """``n_docs`` synthetic documents of about 600 words each (no quarantine)."""
    from ragline.chunkers.base import ElementSpan
    from ragline.core.hashing import doc_id_for
    from ragline.core.records import Document

    rng = random.Random(7)
    docs = []
    for i in range(n_docs):
        text = " ".join(rng.choice(WORDS) for _ in range(600))
        uri = f"synthetic/doc-{i:05d}.txt"
        docs.append(Document(doc_id_for(uri), uri, hashlib.sha256(text.encode()).hexdigest(), "text/plain",
                             len(text), Path(uri).stem, text, (ElementSpan("NarrativeText", 0, len(text)),)))
    return docs, []


def html_documents(source: Path, workers: int) -> tuple[list, list]:
    """Every ``*.html`` page under ``source``, through the load stage (real loaders, default params)."""
    from ragline.pipelines.config import Params
    from ragline.pipelines.load import discover_files, load_documents

    load = Params().load.model_copy(update={"workers": workers})
    files = discover_files([source], ["**/*.html"], load.exclude, follow_symlinks=load.follow_symlinks)
    return load_documents(files, load)


def build(root: Path, name: str, docs: list, bad: list) -> tuple[str, dict[str, int]]:
    """Chunk, embed (``hashing``) and publish ``docs`` as index ``name`` under ``root``."""
    from ragline.indexers.embedders import info_of, make_embedder
    from ragline.indexers.registry import IndexRegistry
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.config import Params
    from ragline.pipelines.embed import embed_chunks
    from ragline.pipelines.load import documents_to_table, quarantine_to_table
    from ragline.pipelines.publish import publish_index

    data = Params().to_dict()
    data["embed"]["model"] = "hashing"
    data["index"].update(name=name, root=str(root))
    data["paths"]["cache"] = str(root.parent / "cache")
    params = Params.from_dict(data, source="benchmark params")
    chunks, chunk_bad = chunk_documents(docs, params.chunk)
    embedder = make_embedder("hashing", True)
    vectors, _ = embed_chunks(chunks, embedder, params.paths.cache)
    m = publish_index(IndexRegistry(root), params, documents_to_table(docs), chunks, vectors,
                      quarantine_to_table([*bad, *chunk_bad]), info_of(embedder))
    return m.version, dict(m.file_sizes)


def best_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=2000, help="synthetic documents (without --pydocs)")
    ap.add_argument("--pydocs", action="store_true", help="index Python's HTML documentation instead")
    ap.add_argument("--source", type=Path, default=PYDOCS, help="folder of HTML pages for --pydocs")
    ap.add_argument("--workers", type=int, default=2, help="load.workers for --pydocs")
    ap.add_argument("--workdir", type=Path, default=None, help="keep (and reuse) the index here")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.pydocs and not args.source.is_dir():
        print(f"error: {args.source} not found; apt-get install python3.11-doc", file=sys.stderr)
        return 2

    from ragline.indexers.registry import IndexRegistry
    from ragline.indexers.retriever import PublishedIndex

    name = "pydocs" if args.pydocs else "bench"
    with tempfile.TemporaryDirectory() as tmp:
        root = (args.workdir or Path(tmp)) / "indexes"
        built = None
        if (root / name).is_dir() and IndexRegistry(root).versions(name):
            version = IndexRegistry(root).versions(name)[-1]
            sizes = dict(IndexRegistry(root).manifest(name, version).file_sizes)
        else:
            t0 = time.perf_counter()
            docs, bad = html_documents(args.source, args.workers) if args.pydocs else synthetic_documents(args.docs)
            version, sizes = build(root, name, docs, bad)
            built = {"documents": len(docs), "quarantined": len(bad), "build_s": round(time.perf_counter() - t0, 1)}
        reg = {mode: IndexRegistry(root, verify=mode) for mode in ("sha256", "size")}
        result = {
            "index": name, "source": str(args.source) if args.pydocs else f"{args.docs} synthetic documents",
            "version": version, "built": built or "reused",
            "files_mb": {k: round(v / 2**20, 2) for k, v in sorted(sizes.items())},
            "total_mb": round(sum(sizes.values()) / 2**20, 2),
            "chunks": PublishedIndex.open(reg["size"], name).chunks.num_rows,
        }
        for mode, r in reg.items():
            result[f"check_files_{mode}_ms"] = round(
                best_ms(functools.partial(r.check_files, name, version), args.repeat), 2)
            result[f"open_{mode}_ms"] = round(best_ms(functools.partial(PublishedIndex.open, r, name), args.repeat), 2)
        result["sha256_share_of_open"] = round(result["check_files_sha256_ms"] / result["open_sha256_ms"], 3)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    how = "reused" if built is None else (f"built from {built['documents']} documents "
                                          f"({built['quarantined']} quarantined) in {built['build_s']} s")
    print(f"index {name} ({result['source']}; {how}), "
          f"{result['chunks']} chunks, {result['total_mb']} MiB: "
          + ", ".join(f"{k} {v} MiB" for k, v in result["files_mb"].items()))
    print(f"{'':22}{'sha256':>10}{'size':>10}   (ms, best of {args.repeat})")
    print(f"{'check_files':22}{result['check_files_sha256_ms']:>10}{result['check_files_size_ms']:>10}")
    print(f"{'PublishedIndex.open':22}{result['open_sha256_ms']:>10}{result['open_size_ms']:>10}")
    print(f"sha256 verification is {result['sha256_share_of_open']:.0%} of the open time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
