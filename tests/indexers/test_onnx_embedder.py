"""The ONNX Runtime query embedder: same identity and vectors as torch, cached export, fallback."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ragline.indexers import onnx_embedder
from ragline.indexers.embedders import SentenceTransformerEmbedder, info_of, make_embedder
from ragline.indexers.onnx_embedder import OnnxEmbedder, OnnxExportError, model_layout

REPO = Path(__file__).resolve().parents[2]
TEXTS = [
    "How long does a worker bee take to develop?",
    "Varroa mites are counted with a sugar roll or an alcohol wash.",
    "蜜蜂 🐝 Ünïcödé",
    "A long passage about hive inspections, frames, brood and stores. " * 60,  # truncated at 256 pieces
]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def torch_embedder() -> SentenceTransformerEmbedder:
    e = SentenceTransformerEmbedder()
    e.warm_up()
    return e


@pytest.mark.slow
def test_onnx_vectors_and_identity_match_torch(onnx_cache: Path, torch_embedder: SentenceTransformerEmbedder) -> None:
    onnx = make_embedder("all-MiniLM-L6-v2", backend="onnx", cache_dir=onnx_cache)
    assert isinstance(onnx, OnnxEmbedder)
    assert info_of(onnx) == info_of(torch_embedder)  # model_id, revision, dim, normalize: manifests accept it
    a, b = onnx.embed(TEXTS), torch_embedder.embed(TEXTS)
    assert a.dtype == np.float32 and a.shape == (len(TEXTS), 384)
    assert np.abs(a - b).max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # one query at a time (no padding) gives the batch's vectors
    single = np.concatenate([onnx.embed([t]) for t in TEXTS])
    assert np.abs(single - a).max() < 1e-5
    assert onnx.backend == "onnx" and onnx.fallback_reason == ""
    record = json.loads(onnx.onnx_path.with_suffix(".json").read_text())
    assert record["revision"] == torch_embedder.revision and record["max_abs_diff"] < 1e-4
    assert record["pooling"] == "mean" and record["normalize"] is True and record["max_seq_length"] == 256


@pytest.mark.slow
def test_cached_export_is_reused_and_the_query_path_imports_no_torch(onnx_cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     torch_embedder: SentenceTransformerEmbedder) -> None:
    first = OnnxEmbedder(cache_dir=onnx_cache)
    first.warm_up()
    mtime = first.onnx_path.stat().st_mtime_ns

    def no_export(*a: object, **k: object) -> dict:
        raise AssertionError("exported again although the cache holds the export")

    monkeypatch.setattr(onnx_embedder, "export_onnx", no_export)
    again = OnnxEmbedder(cache_dir=onnx_cache)
    assert again.backend == "onnx" and again.onnx_path.stat().st_mtime_ns == mtime
    code = (
        "import sys, json\n"
        "from ragline.core.offline import set_offline_env; set_offline_env()\n"
        "from ragline.indexers.onnx_embedder import OnnxEmbedder\n"
        f"e = OnnxEmbedder(cache_dir={str(onnx_cache)!r})\n"
        f"v = e.embed({TEXTS[:1]!r})\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'st': 'sentence_transformers' in sys.modules,"
        " 'v': v[0].tolist()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["torch"] is False and got["st"] is False
    assert np.abs(np.asarray(got["v"], dtype=np.float32) - torch_embedder.embed(TEXTS[:1])[0]).max() < 1e-4


@pytest.mark.slow
def test_concurrent_queries_give_the_sequential_vectors(onnx_cache: Path) -> None:
    e = OnnxEmbedder(cache_dir=onnx_cache, threads=1)
    queries = [f"question {i}: how do bees {w}?" for i, w in enumerate(["swarm", "forage", "dance", "sting"] * 8)]
    sequential = np.concatenate([e.embed([q]) for q in queries])
    with ThreadPoolExecutor(8) as pool:
        parallel = np.concatenate(list(pool.map(lambda q: e.embed([q]), queries)))
    np.testing.assert_array_equal(parallel, sequential)


@pytest.mark.slow
def test_export_failure_falls_back_to_torch_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str],
                                                         torch_embedder: SentenceTransformerEmbedder) -> None:
    def broken(folder: Path, dest: Path, opset: int = 17) -> dict:
        raise OnnxExportError(f"exporting {folder} to ONNX failed: RuntimeError: exporter missing")

    monkeypatch.setattr(onnx_embedder, "export_onnx", broken)
    e = OnnxEmbedder(cache_dir=tmp_path)
    assert e.backend == "torch" and e.uses_torch
    assert "exporter missing" in e.fallback_reason
    assert "ONNX query embedding unavailable" in capsys.readouterr().err
    np.testing.assert_allclose(e.embed(TEXTS[:2]), torch_embedder.embed(TEXTS[:2]), atol=1e-6)


@pytest.mark.slow
def test_a_damaged_export_is_detected_by_its_sha256_and_rebuilt(tmp_path: Path, onnx_cache: Path,
                                                                 torch_embedder: SentenceTransformerEmbedder) -> None:
    from ragline.core.hashing import sha256_file

    good = OnnxEmbedder(cache_dir=onnx_cache)
    good.warm_up()
    e = OnnxEmbedder(cache_dir=tmp_path)
    e.onnx_path.parent.mkdir(parents=True)
    e.onnx_path.write_bytes(b"not an onnx file")  # beside the sidecar of a good export: its sha256 differs
    e.onnx_path.with_suffix(".json").write_text(good.onnx_path.with_suffix(".json").read_text())
    assert e.backend == "onnx" and e.fallback_reason == ""
    record = json.loads(e.onnx_path.with_suffix(".json").read_text())
    assert record["files"][e.onnx_path.name] == sha256_file(e.onnx_path)
    assert np.abs(e.embed(TEXTS[:2]) - torch_embedder.embed(TEXTS[:2])).max() < 1e-4


def _folder(tmp_path: Path, modules: list[str], pooling: dict, tokenizer: bool = True) -> Path:
    folder = tmp_path / "model"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "modules.json").write_text(json.dumps(
        [{"idx": i, "name": str(i), "path": "" if i == 0 else f"{i}_{m}", "type": f"sentence_transformers.models.{m}"}
         for i, m in enumerate(modules)]))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 8, **pooling}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    if tokenizer:
        (folder / "tokenizer.json").write_text("{}")
    return folder


def test_model_layout_accepts_transformer_pooling_normalize(tmp_path: Path) -> None:
    f = _folder(tmp_path, ["Transformer", "Pooling", "Normalize"], {"pooling_mode_mean_tokens": True})
    assert model_layout(f) == {"pooling": "mean", "normalize": True, "max_seq_length": 128, "dim": 8}


@pytest.mark.parametrize("modules,pooling,tokenizer,needle", [
    (["Transformer", "Pooling", "Dense"], {"pooling_mode_mean_tokens": True}, True, "modules"),
    (["Transformer", "Pooling"], {"pooling_mode_weightedmean_tokens": True}, True, "pooling"),
    (["Transformer", "Pooling"], {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}, True, "pooling"),
    (["Transformer", "Pooling"], {"pooling_mode_cls_token": True}, False, "tokenizer.json"),
])
def test_model_layout_rejects_what_the_exporter_cannot_reproduce(tmp_path: Path, modules: list[str], pooling: dict,
                                                                 tokenizer: bool, needle: str) -> None:
    with pytest.raises(OnnxExportError, match=needle):
        model_layout(_folder(tmp_path, modules, pooling, tokenizer))


def test_unknown_backend_and_bad_threads_are_refused() -> None:
    with pytest.raises(ValueError, match="backend 'tensorflow'"):
        make_embedder("all-MiniLM-L6-v2", backend="tensorflow")
    with pytest.raises(ValueError, match="threads"):
        OnnxEmbedder(threads=0)
    assert make_embedder("hashing:32", backend="onnx").dim == 32  # the test fake ignores the backend


@pytest.mark.slow
def test_torch_embedder_dim_is_read_without_loading_the_model(tmp_path: Path) -> None:
    e = SentenceTransformerEmbedder()
    assert e.dim == 384 and e._model is None  # a fully cached eval rerun needs only this
    e.warm_up()
    assert e.dim == int(e._model.get_embedding_dimension())
    # a layout the pooling config cannot describe (two pooling modes) is not guessed
    from ragline.indexers.embedders import pooling_layout

    folder = _folder(tmp_path, ["Transformer", "Pooling"], {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True})
    with pytest.raises(ValueError, match="config.json"):
        pooling_layout(folder)
    assert pooling_layout(_folder(tmp_path / "b", ["Transformer", "Pooling"], {"pooling_mode_cls_token": True}))["dim"] == 8


@pytest.mark.slow
def test_embed_stage_backends_share_the_cache_and_agree(tmp_path: Path, onnx_cache: Path) -> None:
    import pyarrow as pa

    from ragline.pipelines.config import Params
    from ragline.pipelines.embed import embed_chunks, index_embedder

    texts = [f"Chunk {i}: " + "frames of capped brood and pollen " * (i % 7 + 1) for i in range(40)]
    chunks = pa.table({"text": texts, "context": [""] * len(texts)})
    vecs = {}
    for backend in ("onnx", "torch"):
        p = Params.from_dict({"embed": {"backend": backend}, "paths": {"cache": str(onnx_cache)}})
        e = index_embedder(p)
        assert type(e).__name__ == ("OnnxEmbedder" if backend == "onnx" else "SentenceTransformerEmbedder")
        vecs[backend], computed = embed_chunks(chunks, e, tmp_path / backend, batch_size=16)
        assert computed == len(texts)
    assert np.abs(vecs["onnx"] - vecs["torch"]).max() < 1e-4  # sorted runs of 8 rows, unsorted torch batches
    # one cache serves both backends (same model identity): the second backend computes nothing
    onnx = index_embedder(Params.from_dict({"embed": {"backend": "onnx"}, "paths": {"cache": str(onnx_cache)}}))
    again, computed = embed_chunks(chunks, onnx, tmp_path / "torch", batch_size=16)
    assert computed == 0 and np.array_equal(again, vecs["torch"])
