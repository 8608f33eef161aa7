"""Sources and distributed builds, measured side by side (issue 13).

Prints, as one JSON object per part:

1. ``s3_vs_local``: discovery + load (parse) of the sample corpus from a moto S3 server on
   loopback vs from local disk (same parsing workers): wall-time ratio.
2. ``listing``: a refresh with nothing changed over N objects (default 10,000, 10 folders) in
   moto S3: seconds spent listing and deciding "unchanged" without downloading (target <= 2 s),
   beside the previous listing call (ratio), plain boto3 paging and the server's share alone.
3. ``dask_embed``: the embed stage with the real model (all-MiniLM-L6-v2, ``--backend``,
   one thread per worker, no embedding cache) on a LocalCluster of 2 workers vs 1 worker,
   same texts in the same partitions: speed-up (target >= 1.7x) and max |difference|.
4. ``driver_rss``: peak RSS of the driver process of ``ragline ingest`` of the sample corpus
   (the real model unless ``--rss-model hashing``), ``--runner local`` vs ``--runner dask``
   (workers not counted: under Dask the driver never loads the model).

Run: ``nice -n 5 .venv/bin/python benchmarks/distributed.py [--parts 1,2,3,4] [--objects 10000]``.
The machine is shared (2 cores): results vary with its load; numbers are printed, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# this file's folder must not shadow the `distributed` package (Dask's) it imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))

from tests.servers import MOTO_ENV, moto_server  # noqa: E402

SAMPLE = REPO / "data" / "sample"


def _s3_env(endpoint: str) -> None:
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    os.environ.update(MOTO_ENV)


def s3_vs_local(endpoint: str) -> dict:
    import s3fs

    from ragline.pipelines.config import LoadConfig
    from ragline.pipelines.load import load_documents
    from ragline.pipelines.sources import discover

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("bench-sample")
    fs.put(str(SAMPLE) + "/", "bench-sample/docs/", recursive=True)
    cfg = LoadConfig(workers=2)
    out = {}
    for name, src in (("local", str(SAMPLE)), ("s3", "s3://bench-sample/docs")):
        load_documents(discover([src], cfg)[:1], cfg)  # warm the parsing workers' fork server
        t = time.perf_counter()
        docs, bad = load_documents(discover([src], cfg), cfg)
        out[f"{name}_s"] = round(time.perf_counter() - t, 2)
        out[f"{name}_documents"] = len(docs)
    out["ratio_s3_over_local"] = round(out["s3_s"] / out["local_s"], 2)
    out["loadavg"] = os.getloadavg()[0]
    return out


def listing(endpoint: str, n: int, reps: int = 2) -> dict:
    """A no-change refresh's listing + diff over ``n`` objects in 10 folders, against what it
    costs elsewhere in the same run (best of ``reps`` each):

    - ``before_find_only_s``: the listing call ragline made before (one sequential
      ``s3fs.find(detail=True)``, botocore's default timestamp parsing), without its per-entry
      work: a lower bound of the old time;
    - ``boto3_pages_only_s``: the same pages with plain boto3 (no fsspec, no ragline);
    - ``server_only_s``: the same pages fetched as raw HTTP, not parsed: the server's share.
    """
    # (the variants run interleaved, best of ``reps`` each)
    import re

    import boto3
    import httpx
    import s3fs

    from ragline.pipelines.config import LoadConfig
    from ragline.pipelines.sources import discover, input_record, scan_remote

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    bucket = f"bench-list-{n}"
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    t = time.perf_counter()
    fs.pipe({f"{bucket}/docs/d{i // 1000:02d}/page-{i:05d}.txt": f"page {i} about bees\n".encode() for i in range(n)})
    upload = time.perf_counter() - t
    cfg = LoadConfig()
    files = discover([f"s3://{bucket}/docs"], cfg)
    parent = [input_record(f.uri, "", "0" * 64, {"source_etag": f.etag}, f.size) for f in files]  # the last version

    def ours() -> tuple[float, float, int]:
        t = time.perf_counter()
        found = discover([f"s3://{bucket}/docs"], cfg)
        listed = time.perf_counter() - t
        scanned = scan_remote(found, cfg, parent, {})
        return listed, time.perf_counter() - t, sum(1 for _f, sha in scanned if sha)

    def before() -> int:
        return len(s3fs.S3FileSystem(skip_instance_cache=True).find(f"{bucket}/docs", detail=True))

    client = boto3.client("s3")

    def boto3_pages() -> int:
        kw, keys = {}, 0
        while True:
            page = client.list_objects_v2(Bucket=bucket, Prefix="docs/", **kw)
            keys += len(page.get("Contents", []))
            if not page.get("IsTruncated"):
                return keys
            kw = {"ContinuationToken": page["NextContinuationToken"]}

    def server_only() -> int:
        token, keys = None, 0
        with httpx.Client() as http:
            while True:
                q = {"list-type": "2", "prefix": "docs/", **({"continuation-token": token} if token else {})}
                body = http.get(f"{endpoint}/{bucket}", params=q).text
                keys += body.count("<Key>")
                m = re.search(r"<NextContinuationToken>(.*?)</NextContinuationToken>", body)
                if not m:
                    return keys
                token = m.group(1)

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    runs, others = [], {"before": [], "boto3": [], "server": []}
    for _ in range(reps):  # interleaved, so a change of the machine's load hits every variant alike
        runs.append(ours())
        for key, fn in (("before", before), ("boto3", boto3_pages), ("server", server_only)):
            others[key].append(timed(fn))
    listed, total, unchanged = min(runs, key=lambda r: r[1])
    old, raw, server = (min(others[k]) for k in ("before", "boto3", "server"))
    return {"objects": len(files), "unchanged": unchanged, "listing_s": round(listed, 2),
            "listing_and_diff_s": round(total, 2), "before_find_only_s": round(old, 2),
            "ratio_before_over_after": round(old / total, 2), "boto3_pages_only_s": round(raw, 2),
            "server_only_s": round(server, 2), "target_s": 2.0, "met": total <= 2.0,
            "upload_s": round(upload, 1), "loadavg": os.getloadavg()[0]}


def _embed_part(texts: list[str], backend: str) -> tuple[float, "object"]:
    """Embed one partition with the worker's embedder (built once per worker, as in a cluster build)."""
    import time as _t

    from ragline.pipelines.config import Params, load_params
    from ragline.pipelines.distributed import worker_embedder

    data = load_params(REPO / "params.yaml").to_dict()
    data["embed"].update(model="all-MiniLM-L6-v2", backend=backend, normalize=True)
    data["paths"]["cache"] = str(REPO / ".cache")
    data["runner"]["threads_per_worker"] = 1
    e = worker_embedder(Params.from_dict(data, source="benchmark"))
    e.embed(texts[:2])  # weights loaded before the clock starts
    t = _t.perf_counter()
    v = e.embed(texts)
    return _t.perf_counter() - t, v


def dask_embed(n_texts: int, backend: str) -> dict:
    import numpy as np
    from distributed import Client, LocalCluster

    words = " ".join((SAMPLE / "hive-anatomy.md").read_text().split())
    texts = [f"{i} {words[(i * 37) % 2000:(i * 37) % 2000 + 1100]}" for i in range(n_texts)]
    parts = [texts[i::4] for i in range(4)]
    out = {"texts": n_texts, "backend": backend}
    results = {}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            client.run(lambda: _embed_part(["warm up"], backend))  # load the model in every worker
            t = time.perf_counter()
            res = client.gather(client.map(_embed_part, parts, backend=backend, pure=False))
            wall = time.perf_counter() - t
        results[workers] = np.concatenate([v for _s, v in res])
        out[f"workers_{workers}_s"] = round(wall, 2)
    out["speedup"] = round(out["workers_1_s"] / out["workers_2_s"], 2)
    out["loadavg"] = os.getloadavg()[0]
    out["target"] = 1.7
    out["max_abs_diff"] = float(np.abs(results[1] - results[2]).max())
    return out


_DRIVER = """
import json, resource, sys
from ragline.pipelines.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    sys.stderr.write("RSS_MB=" + str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024) + "\\n")
"""


def driver_rss(model: str) -> dict:
    import shutil

    import yaml

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(SAMPLE, Path(tmp) / "data" / "sample")
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["embed"]["model"] = model
        (Path(tmp) / "params.yaml").write_text(yaml.safe_dump(params))
        for runner in ("local", "dask"):
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", _DRIVER, "-q", "ingest", "data/sample", "--index", runner,
                                "--runner", runner], cwd=tmp, capture_output=True, text=True, timeout=900)
            rss = [line for line in r.stderr.splitlines() if line.startswith("RSS_MB=")]
            out[f"{runner}_rss_mb"] = round(float(rss[-1].split("=")[1]), 1) if rss else None
            out[f"{runner}_s"] = round(time.perf_counter() - t, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="1,2,3,4")
    ap.add_argument("--objects", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=3, help="part 2: interleaved repetitions (best of)")
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--rss-model", default="all-MiniLM-L6-v2", help="embed.model of part 4 (hashing: no model)")
    a = ap.parse_args()
    parts = {int(p) for p in a.parts.split(",")}
    if parts & {1, 2}:
        with moto_server() as endpoint:
            _s3_env(endpoint)
            if 1 in parts:
                print(json.dumps({"s3_vs_local": s3_vs_local(endpoint)}), flush=True)
            if 2 in parts:
                print(json.dumps({"listing": listing(endpoint, a.objects, a.reps)}), flush=True)
    if 3 in parts:
        print(json.dumps({"dask_embed": dask_embed(a.texts, a.backend)}), flush=True)
    if 4 in parts:
        print(json.dumps({"driver_rss": {"model": a.rss_model, **driver_rss(a.rss_model)}}), flush=True)


if __name__ == "__main__":
    main()
