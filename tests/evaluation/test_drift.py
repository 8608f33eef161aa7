"""Drift between index versions (evaluation.drift, `ragline index drift`), hashing embedder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ks_2samp

from ragline.evaluation.drift import compute_drift, drift_alerts, psi
from ragline.indexers.embedders import HashingEmbedder
from ragline.indexers.registry import IndexRegistry
from tests.publishing import publish_paragraphs

HIVE = [("alpha bees build comb in hive frames", None), ("varroa mites counted with a sugar roll", None)]
QUEEN = [("the queen lays eggs in drawn comb during spring", None)]
HONEY = [("honey is extracted after capping with an uncapping knife " * 6, None)]


@pytest.fixture()
def two_versions(tmp_path: Path) -> Path:
    root = tmp_path / "indexes"
    publish_paragraphs(root, "t", {"d/hive.txt": HIVE, "d/queen.md": QUEEN})
    publish_paragraphs(root, "t", {"d/hive.txt": HIVE, "e/honey.md": HONEY})
    return root


def test_psi_definition_and_identity() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(100, 10, 2000)
    assert psi(a, a)[0] == pytest.approx(0.0, abs=1e-12)
    shifted, edges = psi(a, a + 10)
    assert len(edges) == 9 and shifted > 0.25  # a one-sigma shift is a "large" shift
    # the formula by hand on the same bins
    e = np.concatenate([[-np.inf], edges, [np.inf]])
    pa_ = np.maximum(np.histogram(a, e)[0] / len(a), 1e-4)
    pb_ = np.maximum(np.histogram(a + 10, e)[0] / len(a), 1e-4)
    assert shifted == pytest.approx(float(np.sum((pb_ - pa_) * np.log(pb_ / pa_))))


def test_counts_tokens_embeddings_and_retrieval(two_versions: Path) -> None:
    reg = IndexRegistry(two_versions)
    qs = [("queen eggs spring", "queen.md"), ("uncapping knife honey", "honey.md"), ("varroa sugar roll", "hive.txt")]
    r = compute_drift(reg, "t", "v0001", "latest", qs)
    assert (r.a, r.b) == ("v0001", "v0002")
    assert r.documents == {"a": 2, "b": 2, "delta": 0} and r.chunks == {"a": 3, "b": 3, "delta": 0}
    assert r.by_folder == {"d": {"documents": [2, 1, -1], "chunks": [3, 2, -1]},
                           "e": {"documents": [0, 1, 1], "chunks": [0, 1, 1]}}
    assert r.by_suffix[".md"] == {"documents": [1, 1, 0], "chunks": [1, 1, 0]}
    assert r.by_mime == {"text/plain": {"documents": [2, 2, 0]}}
    tok_a, tok_b = [7, 7, 9], [7, 7, 9 * 6]  # token_count = words per paragraph in the helper
    assert r.tokens["ks"] == pytest.approx(ks_2samp(tok_a, tok_b).statistic)
    assert r.tokens["psi"] == pytest.approx(psi(tok_a, tok_b)[0], abs=1e-6)
    assert r.tokens["b"]["max"] == 54
    # embeddings: recompute the centroid shift and the NN distance from the vectors
    emb = HashingEmbedder()
    va = emb.embed([p for p, _ in HIVE + QUEEN])
    vb = emb.embed([p for p, _ in HIVE + HONEY])
    ca, cb = va.mean(0), vb.mean(0)
    assert r.embedding["centroid_shift"] == pytest.approx(1 - ca @ cb / np.linalg.norm(ca) / np.linalg.norm(cb), abs=1e-5)
    assert r.embedding["new_chunks"] == 1
    assert r.embedding["new_chunk_nn_distance"] == pytest.approx(1 - float((va @ vb[2]).max()), abs=1e-5)
    assert r.embedding_refused is None
    # retrieval: queen.md is gone in B, honey.md is new
    assert r.retrieval["questions"] == 3 and r.retrieval["k"] == 5
    assert r.retrieval["recall_a"] == pytest.approx(2 / 3) and r.retrieval["recall_b"] == pytest.approx(2 / 3)
    assert r.retrieval["chunk_jaccard"] == pytest.approx(0.5)  # every question: {3 rows} vs {3 rows}, 2 shared
    assert drift_alerts(r, max_ks=0.0) and not drift_alerts(r, max_ks=1.0)
    assert drift_alerts(r, min_top_k_overlap=0.9) == ["top-5 chunk overlap 0.500 < drift.min_top_k_overlap 0.9"]


def test_same_version_has_no_drift(two_versions: Path) -> None:
    r = compute_drift(IndexRegistry(two_versions), "t", "v0002", "v0002", [("queen eggs", "queen.md")])
    assert r.tokens["ks"] == 0 and r.tokens["psi"] == 0
    assert r.embedding["centroid_shift"] == pytest.approx(0, abs=1e-6) and r.embedding["new_chunks"] == 0
    assert r.retrieval["chunk_jaccard"] == 1.0


def test_other_embedder_refuses_embedding_measures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.refresh.conftest import cli

    root = tmp_path / "indexes"
    publish_paragraphs(root, "t", {"d/hive.txt": HIVE})
    publish_paragraphs(root, "t", {"d/hive.txt": HIVE, "d/queen.md": QUEEN}, embedder=HashingEmbedder(dim=32))
    r = compute_drift(IndexRegistry(root), "t", "v0001", "v0002", [("queen eggs", "queen.md")])
    assert r.embedding is None and "different embedders" in r.embedding_refused and "dim 256 vs 32" in r.embedding_refused
    assert r.chunks == {"a": 2, "b": 3, "delta": 1} and r.retrieval["recall_b"] == 1.0
    # the CLI reports it and exits 0
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("index: {name: t, root: indexes}\n")
    code, out, err = cli("index", "drift", "v0001", "v0002")
    assert code == 0, err
    assert "documents 1 → 2 (+1), chunks 2 → 3 (+1)" in out and "embedding measures refused" in out


def test_cli_json_and_questions(two_versions: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.refresh.conftest import cli

    monkeypatch.chdir(two_versions.parent)
    Path("params.yaml").write_text("index: {name: t, root: indexes}\nretrieval: {k: 2}\n")
    Path("q.jsonl").write_text(json.dumps({"question": "queen eggs spring", "doc": "queen.md"}) + "\n")
    code, out, err = cli("index", "drift", "v0001", "--questions", "q.jsonl", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["b"] == "v0002" and d["retrieval"]["k"] == 2 and d["retrieval"]["recall_a"] == 1.0
    assert d["retrieval"]["recall_b"] == 0.0
    code, out, err = cli("index", "drift", "v0001")
    assert code == 0 and "KS D =" in out and "by folder" in out and "centroid shift" in out
    code, out, err = cli("index", "drift", "v0009")
    assert code == 1 and "v0009" in err and "Traceback" not in err
    code, out, err = cli("index", "drift", "v0001", "--questions", "missing.jsonl")
    assert code == 1 and "missing.jsonl" in err
