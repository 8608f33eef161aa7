"""CPU-seconds per stage of the streamed ingest, without the embedder's (issue 16: "ingest is its embedding").

On 2 cores every CPU-second that parsing, curation and chunking take beside the embedder is
taken from it, so their CPU, not their wall time, is what the ratio of
``benchmarks/ingest_pydocs.py`` pays. This runs the ingest's own stream
(:func:`pipelines.stream.load_chunk_embed` with the streamed boilerplate removal and the
duplicate clustering the ingest flow hands it) with the deterministic ``hashing`` embedder and
no embedding cache, and prints the CPU-seconds of each stage:

  parse workers   the parsing worker processes (user + system time of the workers the fork
                  server started and reaped: /proc/<fork server>/stat cutime + cstime)
  chunk           chunking, in the calling thread (``time.thread_time``)
  boilerplate     StreamedBoilerplate.add (per document) and .finish (the batch check)
  clusters        exact and near-duplicate clusters (MinHash + LSH, the ``after_chunking`` step)
  embed (hashing) the fake embedder (to subtract: not a cost of the real ingest)
  parent total    every thread of this process (pool management, queues, the above)

CPU time is robust to the load of a shared machine (wall time is not), though contention
inflates it somewhat. Python's HTML docs (``apt-get install python3.11-doc``, 530 pages) by default.

    nice -n 5 .venv/bin/python benchmarks/ingest_cpu.py [--source DIR] [--limit N] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragline.core.offline import set_offline_env  # noqa: E402

set_offline_env()

DOCS = Path("/usr/share/doc/python3.11-doc/html")


def _children_cpu(pid: int) -> float:
    """CPU-seconds of the reaped children of process ``pid`` (cutime + cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=DOCS, help="folder of HTML pages")
    ap.add_argument("--limit", type=int, default=0, help="only the first N pages (0 = all)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    if not args.source.is_dir():
        print(f"error: {args.source} not found; apt-get install python3.11-doc", file=sys.stderr)
        return 2

    from multiprocessing import forkserver

    from ragline.pipelines import curate, load, stream
    from ragline.pipelines.config import Params
    from ragline.pipelines.embed import index_embedder

    params = Params().to_dict()
    params["load"].update(sources=[str(args.source)], include=["**/*.html"])
    params["embed"]["model"] = "hashing"
    params["paths"]["cache"] = ""
    p = Params.from_dict(params)
    files = load.discover_files(p.load.sources, p.load.include, p.load.exclude)
    if args.limit:
        files = files[: args.limit]
    cpu: dict[str, float] = {}

    def timed(name, fn):
        @functools.wraps(fn)
        def run(*a, **k):
            t = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                cpu[name] = cpu.get(name, 0.0) + time.thread_time() - t
        return run

    stream.chunk_documents = timed("chunk", stream.chunk_documents)
    stream.embed_with_cache = timed("embed (hashing)", stream.embed_with_cache)
    stripper = curate.StreamedBoilerplate([f.uri for f in files], p.curate)
    stripper.add = timed("boilerplate add", stripper.add)
    stripper.finish = timed("boilerplate finish", stripper.finish)

    @functools.partial(timed, "clusters")
    def cluster(table, chunks, bad):  # as pipelines/flows.py's ingest hands it to the stream (the chunked documents)
        return curate.curate_chunks(table, chunks, p.curate, boilerplate=stripper.report)

    load.prestart_parsers()  # the fork server's preload is paid before, as in the ingest
    server = forkserver._forkserver._forkserver_pid
    embedder = index_embedder(p)
    embedder.warm_up()
    time.sleep(3)  # the preload finishes
    workers0, cpu0, wall0 = _children_cpu(server), time.process_time(), time.perf_counter()
    result = stream.load_chunk_embed(files, p, lambda: embedder, curate=stripper,
                                     skip_copies=p.curate.duplicates != "keep_all", after_chunking=cluster)
    wall = time.perf_counter() - wall0
    parent = time.process_time() - cpu0
    time.sleep(0.5)  # the last workers are reaped
    workers = _children_cpu(server) - workers0
    rows = {"parse workers": workers, **cpu, "parent total": parent}
    rows["non-embedding total"] = workers + parent - cpu.get("embed (hashing)", 0.0)
    out = {"files": len(files), "documents": len(result.documents), "chunks": result.chunks.num_rows,
           "cpu_s": {k: round(v, 2) for k, v in rows.items()}, "wall_s": round(wall, 2),
           "cpu_ms_per_page": {k: round(1000 * v / max(len(files), 1), 1) for k, v in rows.items()}}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{len(files)} files -> {out['documents']} documents, {out['chunks']} chunks; wall {wall:.1f} s")
        for k, v in rows.items():
            print(f"{k:>20}: {v:7.2f} CPU-s  ({1000 * v / max(len(files), 1):6.1f} ms/page)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
