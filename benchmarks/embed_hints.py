"""Probe: can batch rows, threads or OpenVINO performance hints lift the model call to 4x ONNX fp32?

Times, round robin over slices in one process (2 threads each): ONNX Runtime fp32 and int8
(one intra-op session of 2 threads, or one of 1 thread called from 2 Python threads),
OpenVINO bf16 and int8 with PERFORMANCE_HINT LATENCY (8 or 32 rows per call) or THROUGHPUT
(1 stream of 16 rows, or 2 streams fed by an AsyncInferQueue of 2 requests). Texts: token-200
chunks of chunking-eval's wikitexts corpus. The backends' models come from
build/bench-embed-backends/models (built on first use).

    nice -n 5 .venv/bin/python benchmarks/embed_hints.py [N_CHUNKS=160]
"""
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ragline.core.offline import set_offline_env  # noqa: E402

set_offline_env()
import numpy as np
from ragline.indexers.embedders import make_embedder
from ragline.indexers.onnx_embedder import ensure_export, embed_sorted
from ragline.chunkers.registry import get_chunker
N = int(sys.argv[1]) if len(sys.argv) > 1 else 160
text = (ROOT.parent / "shared" / "datasets" / "chunking-eval" / "corpora" / "wikitexts.md").read_text()
ch = get_chunker("token", max_tokens=200, overlap_tokens=50)
texts = [c.text for c in ch.chunk(text)][:N]
cache = ROOT / "build" / "bench-embed-backends" / "models"
cache.mkdir(parents=True, exist_ok=True)
from ragline.indexers.openvino_embedder import openvino
ov = openvino()
core = ov.Core()
def ov_variant(backend, cfg, rows, jobs):
    e = make_embedder("all-MiniLM-L6-v2", backend=backend, cache_dir=cache, threads=2)
    e.warm_up()
    if backend == "openvino-int8":
        xml = str(e.model_stem.with_name(e.model_stem.name + ".xml")); prec = "f32"
    else:
        xml = str(ensure_export(e._path, e._cache, e.model_id, e.revision)[0]); prec = e.precision
    comp = core.compile_model(core.read_model(xml), "CPU", {"INFERENCE_PRECISION_HINT": prec, **cfg})
    if jobs == 1:
        req = comp.create_infer_request()
        def run(ts):
            return embed_sorted(lambda p: np.array(req.infer(e._feed(p))[0]), ts, 384, rows)
    else:
        def run(ts):
            order = sorted(range(len(ts)), key=lambda i: -len(ts[i]))
            out = np.zeros((len(ts), 384), np.float32)
            q = ov.AsyncInferQueue(comp, jobs)
            def cb(r, idx):
                out[idx] = r.get_output_tensor(0).data
            q.set_callback(cb)
            for s in range(0, len(order), rows):
                idx = order[s:s+rows]
                q.start_async(e._feed([ts[i] for i in idx]), idx)
            q.wait_all()
            return out
    run(texts[:8])
    return run
variants = {}
o = make_embedder("all-MiniLM-L6-v2", backend="onnx", cache_dir=cache, threads=2); o.warm_up(); o.embed(texts[:8])
variants["onnx fp32"] = lambda ts: o.embed(ts)
i8 = make_embedder("all-MiniLM-L6-v2", backend="onnx-int8", cache_dir=cache, threads=2); i8.warm_up(); i8.embed(texts[:8])
variants["onnx-int8"] = lambda ts: i8.embed(ts)
from concurrent.futures import ThreadPoolExecutor
i81 = make_embedder("all-MiniLM-L6-v2", backend="onnx-int8", cache_dir=cache, threads=1); i81.warm_up(); i81.embed(texts[:8])
pool = ThreadPoolExecutor(2)
def two(e):
    def run(ts):
        parts = [ts[0::2], ts[1::2]]
        return list(pool.map(lambda p: e.embed(p), parts))
    return run
variants["onnx-int8 2x1t"] = two(i81)
o1 = make_embedder("all-MiniLM-L6-v2", backend="onnx", cache_dir=cache, threads=1); o1.warm_up(); o1.embed(texts[:8])
variants["onnx fp32 2x1t"] = two(o1)
T2 = {"INFERENCE_NUM_THREADS": 2}
variants["ov-bf16 LAT r8"] = ov_variant("openvino-bf16", {**T2, "PERFORMANCE_HINT": "LATENCY"}, 8, 1)
variants["ov-bf16 LAT r32"] = ov_variant("openvino-bf16", {**T2, "PERFORMANCE_HINT": "LATENCY"}, 32, 1)
variants["ov-bf16 TPUT s2 r8 async2"] = ov_variant("openvino-bf16", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2, "INFERENCE_NUM_THREADS": 2}, 8, 2)
variants["ov-bf16 TPUT s1 r16"] = ov_variant("openvino-bf16", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": 2}, 16, 1)
variants["ov-int8 LAT r8"] = ov_variant("openvino-int8", {**T2, "PERFORMANCE_HINT": "LATENCY"}, 8, 1)
variants["ov-int8 TPUT s2 r8 async2"] = ov_variant("openvino-int8", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2, "INFERENCE_NUM_THREADS": 2}, 8, 2)
spent = dict.fromkeys(variants, 0.0)
slices = 4; step = -(-len(texts)//slices)
for k, s in enumerate(range(0, len(texts), step)):
    piece = texts[s:s+step]
    names = list(variants); names = names[k % len(names):] + names[:k % len(names)]
    for n in names:
        t = time.perf_counter(); variants[n](piece); spent[n] += time.perf_counter() - t
base = len(texts) / spent["onnx fp32"]
print(f"{len(texts)} chunks (token 200 of wikitexts), 2 threads, round robin over {slices} slices; load {os.getloadavg()[0]:.1f}")
for n in variants:
    cps = len(texts) / spent[n]
    print(f"{n:<28} {cps:7.1f} chunks/s  x onnx {cps/base:5.2f}")
