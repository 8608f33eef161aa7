"""Embedding backends: names and installs checked, identity includes quantization, int8/bf16
vectors agree with fp32 on real text, damaged quantized models are rebuilt, queries follow the index."""

from __future__ import annotations

import hashlib
import html
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import pytest

from ragline.core.errors import ConfigError, IndexCompatibilityError
from ragline.indexers import backends
from ragline.indexers.backends import AUTO, BACKENDS, query_backend_for, require_backend
from ragline.indexers.cache import EmbeddingCache
from ragline.indexers.embedders import EmbedderInfo, info_of, make_embedder
from ragline.indexers.manifest import Manifest, check_embedder
from ragline.indexers.model_cache import cached_artifact, sidecar_path
from ragline.pipelines.config import Params

REPO = Path(__file__).resolve().parents[2]
#: Documented tolerances (README "Performance"): min cosine to fp32 vectors on real text.
MIN_COSINE = {"onnx-int8": 0.98, "openvino-int8": 0.98, "openvino-bf16": 0.999, "openvino": 0.99999}


def real_text() -> list[str]:
    """Passages of the sample corpus's HTML pages (not part of the calibration set: that is the .md/.txt files)."""
    out = []
    for name in ("colony-roles.html", "wintering.html"):
        raw = (REPO / "data" / "sample" / name).read_text(encoding="utf-8")
        text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", raw)).split())
        words = text.split()
        out += [" ".join(words[i:i + 120]) for i in range(0, len(words), 120)]
    return out + ["How do bees survive the winter?", "What does a drone do?"]


# ---------------------------------------------------------------- names and installs (fast)
def test_unknown_backend_is_a_config_error_naming_it_and_the_installed_ones() -> None:
    with pytest.raises(ConfigError, match=r"'tensorflow' is unknown.*installed: .*onnx"):
        require_backend("tensorflow")
    with pytest.raises(ConfigError, match=r"embed\.backend.*'tensorflow'.*installed"):
        Params.from_dict({"embed": {"backend": "tensorflow"}})
    assert require_backend(AUTO, allow_auto=True) == AUTO
    with pytest.raises(ConfigError):
        require_backend(AUTO)  # where a concrete backend is needed (an embedder): resolve_backend first


def test_a_backend_whose_runtime_is_missing_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert "openvino-int8" not in backends.installed_backends() and "onnx" in backends.installed_backends()
    with pytest.raises(ConfigError, match=r"'openvino-bf16' needs openvino, which is not installed; installed backends: .*onnx-int8"):
        require_backend("openvino-bf16")
    with pytest.raises(ConfigError, match="openvino"):
        make_embedder("all-MiniLM-L6-v2", backend="openvino")
    assert make_embedder("hashing:8", backend="openvino").dim == 8  # the fake needs no runtime


def test_every_listed_backend_is_installed_here() -> None:
    assert backends.installed_backends() == list(BACKENDS)


# ---------------------------------------------------------------- identity (fast)
#: ``flags`` lines of /proc/cpuinfo on the three kinds of machine the backends were measured on
AMX_FLAGS = "fpu sse avx2 avx512f avx512_vnni avx_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 arch_lbr"
VNNI_FLAGS = "fpu sse avx2 avx512f avx512_vnni avx_vnni avx512_bf16 arch_capabilities"
AVX2_FLAGS = "fpu sse sse2 avx avx2 fma sha_ni"  # AMD EPYC: no AVX-512, no VNNI, no AMX


@pytest.mark.parametrize("flags,units,fastest", [
    (AMX_FLAGS, {"avx2", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}, "openvino-bf16"),
    (VNNI_FLAGS, {"avx2", "avx512_vnni", "avx_vnni", "avx512_bf16"}, "openvino-int8"),
    (AVX2_FLAGS, {"avx2"}, "openvino"),
    ("fpu sse sse2 sse4_2", set(), "onnx"),  # no unit the backends were measured on
])
def test_cpu_units_name_the_backend_measured_fastest_on_them(flags: str, units: set[str], fastest: str) -> None:
    cpuinfo = f"processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: {flags}\nbugs\t\t: spectre_v1\n"
    assert backends.cpu_units(cpuinfo) == units
    assert backends.fastest_backend_for(backends.cpu_units(cpuinfo)) == fastest
    assert backends.cpu_units("processor\t: 0\n") == frozenset()  # no flags line (not Linux x86)
    assert backends.fastest_backend_for(frozenset()) == "onnx"
    here = backends.cpu_units()  # this machine's, read from /proc/cpuinfo
    assert here <= set(backends.UNIT_FLAGS)
    assert backends.fastest_backend_for(here) in BACKENDS


def test_auto_resolves_to_the_recorded_backend_else_this_cpus_fastest_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    amx, vnni = frozenset({"amx_bf16", "avx512_vnni"}), frozenset({"avx512_vnni"})
    assert backends.resolve_backend("onnx-int8", units=amx) == "onnx-int8"  # explicit: as it is
    assert [backends.resolve_backend(AUTO, units=u) for u in (amx, vnni, frozenset({"avx2"}), frozenset())] == \
        ["openvino-bf16", "openvino-int8", "openvino", "onnx"]
    # the latest version's backend wins over the CPU's: its params, else its vectors' quantization
    assert backends.resolve_backend(AUTO, {"params": {"embed": {"backend": "torch"}}, "embedding": {}}, units=vnni) == "torch"
    recorded = {"params": {"embed": {"backend": AUTO}}, "embedding": {"quantization": "openvino-bf16/ov-x"}}
    assert backends.resolve_backend(AUTO, recorded, units=vnni) == "openvino-bf16"
    fp32_made = {"params": {}, "embedding": {"model_id": "m"}}  # fp32 vectors, backend not recorded: onnx reproduces them
    assert backends.resolve_backend(AUTO, fp32_made, units=amx) == "onnx"
    assert backends.resolve_backend(AUTO, {"params": {"embed": {"backend": "tensorflow"}}}, units=vnni) == "onnx"
    real = importlib.util.find_spec
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    # a runtime that is not installed here is never chosen: the recorded one, then the CPU's, fall back
    assert backends.resolve_backend(AUTO, recorded, units=amx) == "onnx"
    e = make_embedder("all-MiniLM-L6-v2", backend=AUTO)  # an embedder given auto runs what resolve_backend says
    assert type(e).__name__ == "OnnxEmbedder" and e.precision == "fp32"


def test_recorded_backend_is_what_a_manifest_says_embedded_it() -> None:
    """What ``index show`` prints and ``auto`` follows: the params' backend when it names one,
    else the one the vectors' quantization names (``onnx`` for fp32), even when not installed."""
    assert backends.recorded_backend({"params": {"embed": {"backend": "openvino"}}, "embedding": {}}) == "openvino"
    assert backends.recorded_backend({"params": {"embed": {"backend": AUTO}},  # an older manifest
                                      "embedding": {"quantization": "openvino-bf16/ov-x"}}) == "openvino-bf16"
    assert backends.recorded_backend({"params": {"embed": {"backend": AUTO}}, "embedding": {"dim": 384}}) == "onnx"
    assert backends.recorded_backend({"params": {"embed": {"backend": "tensorflow"}}}) == "onnx"
    assert backends.recorded_backend({}) == "onnx"


def test_the_backend_that_made_the_vectors_wins_when_they_are_published(tmp_path) -> None:
    import numpy as np
    import pyarrow.parquet as pq

    from ragline.pipelines.config import Params
    from ragline.pipelines.embed import backend_of_table, vectors_to_table, with_embed_backend

    path = tmp_path / "embeddings.parquet"
    pq.write_table(vectors_to_table(["a", "b"], np.eye(2, 3, dtype=np.float32), "onnx-int8"), path)
    assert backend_of_table(pq.read_table(path)) == "onnx-int8"
    assert backend_of_table(pq.read_table(path)) is not None and backend_of_table(vectors_to_table(["a"], np.ones((1, 3)))) is None
    auto = Params.from_dict({"index": {"root": str(tmp_path / "indexes")}})
    assert auto.embed.backend == AUTO
    assert with_embed_backend(auto, made_by="onnx-int8").embed.backend == "onnx-int8"
    assert with_embed_backend(auto).embed.backend == backends.resolve_backend(AUTO)  # no version yet: this CPU's
    pinned = Params.from_dict({"embed": {"backend": "onnx"}})
    assert with_embed_backend(pinned, made_by="onnx-int8") is pinned  # an explicit backend is never replaced


def test_fp32_cache_key_is_unchanged_and_quantization_gets_its_own() -> None:
    fp32 = EmbedderInfo("all-MiniLM-L6-v2", "sha256:ab", 384, True)
    old = hashlib.sha256("all-MiniLM-L6-v2\x1fsha256:ab\x1f1".encode()).hexdigest()[:16]
    assert fp32.cache_key == old  # caches of earlier versions stay valid
    q = EmbedderInfo("all-MiniLM-L6-v2", "sha256:ab", 384, True, "openvino-int8/nncf-x")
    assert q.cache_key != fp32.cache_key
    assert EmbedderInfo("all-MiniLM-L6-v2", "sha256:ab", 384, True, "onnx-int8/ort").cache_key not in (q.cache_key, old)
    assert fp32.to_manifest() == {"model_id": "all-MiniLM-L6-v2", "revision": "sha256:ab", "dim": 384, "normalize": True}
    assert EmbedderInfo.from_manifest(q.to_manifest()) == q and EmbedderInfo.from_manifest(fp32.to_manifest()) == fp32


def _manifest(info: EmbedderInfo) -> Manifest:
    return Manifest(index_name="t", version="v0001", created_at="", params={}, params_hash="", chunker={},
                    embedding=info.to_manifest(), index={}, counts={}, inputs=[])


def test_check_embedder_refuses_another_quantization_and_auto_follows_the_index() -> None:
    q = EmbedderInfo("m", "sha256:ab", 384, True, "openvino-int8/nncf-x")
    m = _manifest(q)
    check_embedder(m, "m", "sha256:ab", 384, True, "openvino-int8/nncf-x")
    with pytest.raises(IndexCompatibilityError, match="quantization: index has 'openvino-int8/nncf-x', query embedder has ''"):
        check_embedder(m, "m", "sha256:ab", 384, True)
    fp32 = _manifest(EmbedderInfo("m", "sha256:ab", 384, True))
    with pytest.raises(IndexCompatibilityError, match="quantization"):
        check_embedder(fp32, "m", "sha256:ab", 384, True, "onnx-int8/ort")
    assert query_backend_for(m.embedding) == "openvino-int8"
    assert query_backend_for(fp32.embedding) == "onnx"
    assert query_backend_for(m.embedding, "torch") == "torch"  # explicit: check_embedder decides


def test_embedding_cache_files_are_separate_per_quantization(tmp_path: Path) -> None:
    fp32 = EmbeddingCache(tmp_path, EmbedderInfo("m", "sha256:ab", 4, True))
    q = EmbeddingCache(tmp_path, EmbedderInfo("m", "sha256:ab", 4, True, "onnx-int8/ort"))
    fp32.put_many({"k": np.ones(4, np.float32)})
    assert fp32.path != q.path and q.get_many(["k"]) == {} and len(fp32) == 1
    fp32.close()
    q.close()


# ---------------------------------------------------------------- cached artifacts (fast)
def test_cached_artifact_builds_once_and_rebuilds_a_damaged_or_foreign_file(tmp_path: Path) -> None:
    builds: list[int] = []

    def build(tmp: dict[str, Path]) -> dict:
        builds.append(1)
        tmp[".bin"].write_bytes(b"model bytes " * 100)
        tmp[".xml"].write_text("<net/>")
        return {"measured": 0.5}

    stem = tmp_path / "m-int8"
    fp = {"revision": "sha256:ab", "recipe": "r1", "calibration": "c1"}
    first = cached_artifact(stem, fp, [".xml", ".bin"], build)
    assert first["measured"] == 0.5 and set(first["files"]) == {"m-int8.xml", "m-int8.bin"}
    assert cached_artifact(stem, fp, [".xml", ".bin"], build) == first and len(builds) == 1
    # damaged (same size, one byte changed): detected by the sidecar's sha256, rebuilt
    data = bytearray((tmp_path / "m-int8.bin").read_bytes())
    data[5] ^= 1
    (tmp_path / "m-int8.bin").write_bytes(bytes(data))
    assert cached_artifact(stem, fp, [".xml", ".bin"], build) == first and len(builds) == 2
    assert (tmp_path / "m-int8.bin").read_bytes() == b"model bytes " * 100
    # another recipe or calibration set: rebuilt; a missing file: rebuilt
    cached_artifact(stem, {**fp, "calibration": "c2"}, [".xml", ".bin"], build)
    (tmp_path / "m-int8.xml").unlink()
    cached_artifact(stem, {**fp, "calibration": "c2"}, [".xml", ".bin"], build)
    assert len(builds) == 4 and not list(tmp_path.glob(".*tmp*"))
    sidecar_path(stem).write_text("{not json")
    cached_artifact(stem, {**fp, "calibration": "c2"}, [".xml", ".bin"], build)
    assert len(builds) == 5


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def broken(tmp: dict[str, Path]) -> dict:
        tmp[".onnx"].write_bytes(b"half")
        raise RuntimeError("quantizer crashed")

    with pytest.raises(RuntimeError, match="quantizer crashed"):
        cached_artifact(tmp_path / "x", {"a": 1}, [".onnx"], broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.lock"]


# ---------------------------------------------------------------- real model (slow)
@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def fp32_vectors(model_cache: Path) -> np.ndarray:
    return make_embedder("all-MiniLM-L6-v2", backend="onnx", cache_dir=model_cache).embed(real_text())


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["openvino", "openvino-bf16", "onnx-int8", "openvino-int8"])
def test_backend_vectors_agree_with_fp32_and_identity_says_when_they_differ(
        backend: str, model_cache: Path, fp32_vectors: np.ndarray) -> None:
    e = make_embedder("all-MiniLM-L6-v2", backend=backend, cache_dir=model_cache)
    v = e.embed(real_text())
    assert v.dtype == np.float32 and v.shape == fp32_vectors.shape
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    cos = (v * fp32_vectors).sum(axis=1)
    assert cos.min() >= MIN_COSINE[backend], (backend, float(cos.min()))
    info, ref = info_of(e), info_of(make_embedder("all-MiniLM-L6-v2", backend="onnx", cache_dir=model_cache))
    record = e.model_record  # measured when the model was first built
    # OpenVINO runs the bf16 hint in f32 on a CPU without bf16 units (AVX2 only): measured equal, so fp32's identity
    no_bf16 = not {"amx_bf16", "avx512_bf16"} & backends.cpu_units()
    if backend == "openvino" or (backend == "openvino-bf16" and no_bf16):
        assert info == ref and record["max_abs_diff"] <= 1e-4  # fp32: one identity, one embedding cache
        assert np.abs(v - fp32_vectors).max() <= 1e-4
    else:
        assert record["max_abs_diff"] > 1e-4 and info.quantization.startswith(backend + "/")
        assert info.cache_key != ref.cache_key and (info.model_id, info.revision) == (ref.model_id, ref.revision)
        assert np.abs(v - fp32_vectors).max() > 1e-4  # bf16/int8 vectors really differ
    # one query alone gives the batch's vector (no padding effects)
    np.testing.assert_allclose(e.embed(real_text()[-1:])[0], v[-1], atol=2e-3 if "int8" in backend else 1e-4)


@pytest.mark.slow
def test_a_damaged_quantized_model_is_rebuilt_never_used(model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from ragline.core.hashing import sha256_file
    from ragline.indexers import onnx_embedder

    texts = real_text()[:4]
    first = make_embedder("all-MiniLM-L6-v2", backend="onnx-int8", cache_dir=model_cache)
    v = first.embed(texts)
    path = first.model_path
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # a truncated copy, as a crash or a full disk leaves it
    calls: list[Path] = []
    real = onnx_embedder.quantize_int8
    monkeypatch.setattr(onnx_embedder, "quantize_int8", lambda src, dest: (calls.append(dest), real(src, dest))[1])
    again = make_embedder("all-MiniLM-L6-v2", backend="onnx-int8", cache_dir=model_cache)
    np.testing.assert_allclose(again.embed(texts), v, atol=1e-6)
    assert len(calls) == 1  # rebuilt once, from the export
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["files"][path.name] == sha256_file(path) and path.stat().st_size == len(good)
    assert info_of(again) == info_of(first)
    # intact now: the next embedder loads it without quantizing
    make_embedder("all-MiniLM-L6-v2", backend="onnx-int8", cache_dir=model_cache).warm_up()
    assert len(calls) == 1


@pytest.mark.slow
def test_switching_backend_reembeds_through_the_cache_and_queries_follow_the_index(tmp_path: Path, model_cache: Path) -> None:
    import pyarrow as pa

    from ragline.indexers.retriever import embedder_for
    from ragline.pipelines.embed import embed_chunks

    texts = real_text()[:12]
    chunks = pa.table({"text": texts, "context": [""] * len(texts)})
    emb_cache = tmp_path / "emb"
    fp32 = make_embedder("all-MiniLM-L6-v2", backend="onnx", cache_dir=model_cache)
    int8 = make_embedder("all-MiniLM-L6-v2", backend="onnx-int8", cache_dir=model_cache)
    a, n_a = embed_chunks(chunks, fp32, emb_cache)
    b, n_b = embed_chunks(chunks, int8, emb_cache)
    assert n_a == n_b == len(texts)  # the int8 vectors are computed, not read from the fp32 cache
    assert np.abs(a - b).max() > 1e-4
    back, n = embed_chunks(chunks, fp32, emb_cache)
    assert n == 0 and np.array_equal(back, a)
    again, n = embed_chunks(chunks, int8, emb_cache)
    assert n == 0 and np.array_equal(again, b)
    assert len(list((emb_cache / "embeddings").glob("*.sqlite"))) == 2
    # an index of int8 vectors is queried by int8 (auto), and refuses fp32 queries
    m = _manifest(info_of(int8))
    q = embedder_for(m, cache_dir=model_cache)
    assert info_of(q) == info_of(int8)
    np.testing.assert_allclose(q.embed(texts[:1]), b[:1], atol=2e-3)
    with pytest.raises(IndexCompatibilityError, match="quantization"):
        check_embedder(m, *(lambda i: (i.model_id, i.revision, i.dim, i.normalize, i.quantization))(info_of(fp32)))


# ---------------------------------------------------------------- OpenVINO streams (embed.streams / embed.pad_multiple)
def test_embed_streams_and_pad_multiple_are_checked_and_reach_the_index_embedder(tmp_path: Path) -> None:
    from ragline.pipelines.embed import index_embedder

    with pytest.raises(ConfigError, match=r"embed\.streams"):
        Params.from_dict({"embed": {"streams": 0}})
    with pytest.raises(ConfigError, match=r"embed\.pad_multiple"):
        Params.from_dict({"embed": {"pad_multiple": 0}})
    with pytest.raises(ConfigError, match=r"did you mean `streams`"):
        Params.from_dict({"embed": {"stream": 2}})
    with pytest.raises(ConfigError, match=r"embed\.static_shapes"):
        Params.from_dict({"embed": {"static_shapes": -1}})
    p = Params.from_dict({"embed": {"backend": "openvino-bf16", "streams": 3, "pad_multiple": 32, "static_shapes": 2},
                          "paths": {"cache": str(tmp_path)}})
    e = index_embedder(p)  # constructing loads nothing
    assert (e.streams, e.pad_multiple, e.static_shapes) == (min(3, os.cpu_count() or 1), 32, 2)
    assert Params.from_dict({}).embed.static_shapes == e.__class__.__init__.__defaults__[-1]  # one default
    q = make_embedder("all-MiniLM-L6-v2", backend="openvino-bf16", cache_dir=tmp_path)
    assert q.streams == 1  # queries: LATENCY, one synchronous request
    assert make_embedder("all-MiniLM-L6-v2", backend="openvino", threads=1, streams=4, cache_dir=tmp_path).streams == 1


def _mixed_lengths() -> list[str]:
    words = " ".join(real_text()[:3]).split()
    # 13 texts of 1..~300 words in a scrambled order: several calls of 8 rows, several shapes
    sizes = [40, 3, 300, 17, 1, 120, 64, 9, 250, 33, 5, 90, 2]
    return [" ".join(words[i:i + n]) for i, n in enumerate(sizes)]


@pytest.mark.slow
@pytest.mark.parametrize("backend,atol", [("openvino", 1e-5), ("openvino-bf16", 3e-3)])
def test_async_streams_give_the_synchronous_vectors_in_input_order(backend: str, atol: float, model_cache: Path) -> None:
    texts = _mixed_lengths()
    sync = make_embedder("all-MiniLM-L6-v2", backend=backend, cache_dir=model_cache, threads=2, streams=1, pad_multiple=1)
    fast = make_embedder("all-MiniLM-L6-v2", backend=backend, cache_dir=model_cache, threads=2, streams=2, pad_multiple=16)
    if fast.streams < 2:
        pytest.skip("one core: a single stream")
    a, b = sync.embed(texts), fast.embed(texts)
    assert b.shape == (len(texts), 384) and b.dtype == np.float32
    np.testing.assert_allclose(b, a, atol=atol)
    # row i is text i's vector: each row is closest to its own synchronous vector
    assert (np.argmax(b @ a.T, axis=1) == np.arange(len(texts))).all()
    # and the order follows the input whatever order the requests finish in
    order = np.random.default_rng(0).permutation(len(texts))
    np.testing.assert_allclose(fast.embed([texts[i] for i in order]), b[order], atol=atol)
    # a text alone (one synchronous call) gives its batch vector
    np.testing.assert_allclose(fast.embed(texts[2:3])[0], b[2], atol=atol)
    assert info_of(fast) == info_of(sync)  # streams and padding do not change the identity


@pytest.mark.slow
@pytest.mark.parametrize("streams", [1, 2])
def test_static_shape_models_give_the_dynamic_vectors_and_are_capped(
        streams: int, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ragline.indexers import openvino_embedder

    monkeypatch.setattr(openvino_embedder, "STATIC_AFTER", 2)
    # 43 texts: 5 full calls of 8 rows in 5 widths (1 to ~300 words, rounded to 16) and a call of 3
    texts = _mixed_lengths() * 3 + _mixed_lengths()[:4]
    dynamic = make_embedder("all-MiniLM-L6-v2", backend="openvino-bf16", cache_dir=model_cache, threads=2,
                            streams=streams, static_shapes=0)
    static = make_embedder("all-MiniLM-L6-v2", backend="openvino-bf16", cache_dir=model_cache, threads=2,
                           streams=streams, static_shapes=2)
    a = dynamic.embed(texts)
    assert dynamic._static == {} and dynamic._shape_calls == {}
    static.warm_up()
    shapes = [f["input_ids"].shape for _, f in static._calls(texts, static.run_rows, True)]
    full = {s for s in shapes if s[0] == static.run_rows}
    assert len(full) >= 3 and len(shapes) > len(full)  # more full shapes than the cap, and a partial call
    first = static.embed(texts)  # every shape's first call: all on the dynamic model
    assert static._static == {} and static._shape_calls == {s: shapes.count(s) for s in full}
    second = static.embed(texts)  # a full shape's 2nd call starts compiling its model, for the first 2 shapes
    assert len(static._pending) == 2 and set(static._pending) < full
    for future in static._pending.values():  # compiled on a background thread; the calls went on meanwhile
        future.result()
    assert set(static._static) == set(static._pending)
    assert all(tuple(m.inputs[0].get_partial_shape().to_shape()) == s for s, m in static._static.items())
    # the static-shape models give the dynamic model's vectors, in input order
    np.testing.assert_allclose(first, a, atol=1e-5)
    np.testing.assert_allclose(second, a, atol=1e-5)
    order = np.random.default_rng(1).permutation(len(texts))
    np.testing.assert_allclose(static.embed([texts[i] for i in order]), a[order], atol=1e-5)
    assert len(static._pending) == len(static._static) == 2  # capped
    ran = static._local.requests if streams == 1 else static._local.queues  # this thread's requests per model
    assert {id(m) for m in static._static.values()} <= set(ran)  # the third embed ran on them
    assert info_of(static) == info_of(dynamic)  # static shapes do not change the identity


def test_openvino_conversion_and_nncf_decline_usage_telemetry(tmp_path: Path) -> None:
    """``import openvino``, ``ov.convert_model`` and ``import nncf`` count a missing consent file as
    consent to send usage events and write ``~/intel``; through ``openvino()`` and under
    ``telemetry_declined`` nothing is written to the home folder and no socket is opened."""
    import subprocess
    import sys

    script = (
        "import socket\n"
        "attempts = []\n"
        "real = socket.socket.connect\n"
        "socket.socket.connect = lambda self, addr: attempts.append(addr) or real(self, addr)\n"
        "import torch\n"
        "from ragline.indexers.openvino_embedder import openvino, telemetry_declined\n"
        "ov = openvino()\n"
        "with telemetry_declined():\n"
        "    model = ov.convert_model(torch.nn.Linear(4, 2), example_input=torch.zeros(1, 4))\n"
        "    import nncf\n"
        "from openvino_telemetry import Telemetry\n"
        "assert Telemetry().consent is False, Telemetry().consent\n"
        "assert not attempts, attempts\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NNCF_CI")} | {"HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "intel").exists(), sorted(p.name for p in (tmp_path / "intel").rglob("*"))
