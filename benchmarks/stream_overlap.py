"""Overlapped load + chunk + embed (pipelines/stream.py) against embedding alone, alternated.

A shared machine's load drifts by minutes, so one ingest and one embedding-alone run far
apart say little. This runs, in one process and without Prefect, ``--rounds`` times in
turn: (a) embedding alone of the chunk texts, (b) ``load_chunk_embed`` of the same pages,
each with an empty embedding cache and the backend's model built beforehand, and prints
the walls and the ratio of the sums (b)/(a) (the part of ingest that overlap can hide;
the Prefect start and publishing come on top, see ingest_pydocs.py).

    nice -n 5 .venv/bin/python benchmarks/stream_overlap.py [--limit 60] [--rounds 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragline.core.offline import set_offline_env  # noqa: E402

set_offline_env()
DOCS = Path("/usr/share/doc/python3.11-doc/html")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=60, help="Python docs pages, spread over the sorted list")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    from ragline.core.schemas import indexed_texts
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.config import Params
    from ragline.pipelines.embed import index_embedder
    from ragline.pipelines.load import discover_files, load_documents
    from ragline.pipelines.stream import load_chunk_embed

    work = Path(tempfile.mkdtemp(prefix="ragline-overlap-"))
    pages = sorted(DOCS.resolve().rglob("*.html"))
    step = max(1, len(pages) // args.limit)
    src = work / "pages"
    for p in pages[::step][: args.limit]:
        dst = src / p.relative_to(DOCS.resolve())
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst)
    data = Params().to_dict()
    data["load"].update(sources=[str(src)], include=["**/*.html"], workers=2)
    data["paths"].update(cache=str(work / "cache"))
    p = Params.from_dict(data)
    index_embedder(p).warm_up()  # the model is built once per weights file
    files = discover_files(p.load.sources, p.load.include)
    docs, _ = load_documents(files, p.load)
    texts = indexed_texts(chunk_documents(docs, p.chunk, embed_model=p.embed.model)[0])

    alone, streamed = [], []
    for r in range(args.rounds):
        shutil.rmtree(work / "cache" / "embeddings", ignore_errors=True)
        e = index_embedder(p)
        t = time.perf_counter()
        e.warm_up()
        e.embed(texts, batch_size=p.embed.batch_size)
        alone.append(time.perf_counter() - t)
        shutil.rmtree(work / "cache" / "embeddings", ignore_errors=True)
        t = time.perf_counter()
        res = load_chunk_embed(files, p, lambda: index_embedder(p))
        streamed.append(time.perf_counter() - t)
        assert res.chunks.num_rows == len(texts)
        print(f"round {r + 1}: embed alone {alone[-1]:.1f} s, load+chunk+embed overlapped {streamed[-1]:.1f} s "
              f"(inside: {res.seconds})", flush=True)
    print(f"{len(files)} pages, {len(texts)} chunks, embed.backend {p.embed.backend}: "
          f"overlapped / embed alone = {sum(streamed) / sum(alone):.3f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
