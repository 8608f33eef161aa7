"""Cost of verifying a version before serving it (``index.verify: sha256`` vs ``size``).

Builds one index from synthetic documents with the deterministic ``hashing`` embedder (dim
384, like all-MiniLM-L6-v2, so the FAISS file has the real model's size per chunk), publishes
it, then times, side by side in this run and best of ``--repeat``:

- ``check_files(sha256)``: size and sha256 of every file against the manifest (the default);
- ``check_files(size)``: sizes only;
- ``PublishedIndex.open`` with each mode (verification + reading FAISS and chunks.parquet).

Prints the version's file sizes, the times in ms and the share of the open time spent
verifying. The page cache is warm (the files were just written), as for a server that reopens
a version it has served before; a cold read adds the disk's read time to both modes.

Run:  .venv/bin/python benchmarks/verify_cost.py [--docs 2000] [--repeat 5] [--json]
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


def build(root: Path, n_docs: int) -> tuple[str, dict[str, int]]:
    """Publish ``n_docs`` synthetic documents (about 600 words each) as index ``bench``."""
    from ragline.chunkers.base import ElementSpan
    from ragline.core.hashing import doc_id_for
    from ragline.core.records import Document
    from ragline.indexers.embedders import info_of, make_embedder
    from ragline.indexers.registry import IndexRegistry
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.config import Params
    from ragline.pipelines.embed import embed_chunks
    from ragline.pipelines.load import documents_to_table, quarantine_to_table
    from ragline.pipelines.publish import publish_index

    rng = random.Random(7)
    docs = []
    for i in range(n_docs):
        text = " ".join(rng.choice(WORDS) for _ in range(600))
        uri = f"synthetic/doc-{i:05d}.txt"
        docs.append(Document(doc_id_for(uri), uri, hashlib.sha256(text.encode()).hexdigest(), "text/plain",
                             len(text), Path(uri).stem, text, (ElementSpan("NarrativeText", 0, len(text)),)))
    data = Params().to_dict()
    data["embed"]["model"] = "hashing"
    data["index"].update(name="bench", root=str(root))
    data["paths"]["cache"] = str(root.parent / "cache")
    params = Params.from_dict(data, source="benchmark params")
    chunks, bad = chunk_documents(docs, params.chunk)
    embedder = make_embedder("hashing", True)
    vectors, _ = embed_chunks(chunks, embedder, params.paths.cache)
    m = publish_index(IndexRegistry(root), params, documents_to_table(docs), chunks, vectors,
                      quarantine_to_table(bad), info_of(embedder))
    return m.version, dict(m.file_sizes)


def best_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from ragline.indexers.registry import IndexRegistry
    from ragline.indexers.retriever import PublishedIndex

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "indexes"
        version, sizes = build(root, args.docs)
        reg = {mode: IndexRegistry(root, verify=mode) for mode in ("sha256", "size")}
        result = {
            "documents": args.docs, "version": version,
            "files_mb": {k: round(v / 2**20, 2) for k, v in sorted(sizes.items())},
            "total_mb": round(sum(sizes.values()) / 2**20, 2),
            "chunks": PublishedIndex.open(reg["size"], "bench").chunks.num_rows,
        }
        for mode, r in reg.items():
            result[f"check_files_{mode}_ms"] = round(
                best_ms(functools.partial(r.check_files, "bench", version), args.repeat), 2)
            result[f"open_{mode}_ms"] = round(best_ms(functools.partial(PublishedIndex.open, r, "bench"), args.repeat), 2)
        result["sha256_share_of_open"] = round(result["check_files_sha256_ms"] / result["open_sha256_ms"], 3)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"index of {result['documents']} documents, {result['chunks']} chunks, {result['total_mb']} MiB: "
          + ", ".join(f"{k} {v} MiB" for k, v in result["files_mb"].items()))
    print(f"{'':22}{'sha256':>10}{'size':>10}   (ms, best of {args.repeat})")
    print(f"{'check_files':22}{result['check_files_sha256_ms']:>10}{result['check_files_size_ms']:>10}")
    print(f"{'PublishedIndex.open':22}{result['open_sha256_ms']:>10}{result['open_size_ms']:>10}")
    print(f"sha256 verification is {result['sha256_share_of_open']:.0%} of the open time")


if __name__ == "__main__":
    main()
