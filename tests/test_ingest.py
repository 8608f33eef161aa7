"""The ingest flow and the CLI around it, with the deterministic hashing embedder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ragline.indexers.embedders import HashingEmbedder
from ragline.indexers.backends import resolve_backend
from ragline.indexers.registry import IndexRegistry
from ragline.indexers.retriever import PublishedIndex
from ragline.core.schemas import QUARANTINE_SCHEMA, read_table
from ragline.pipelines.cli import app
from ragline.pipelines.config import load_params
from ragline.pipelines.load import documents_from_table
from tests.badfiles import EXPECTED, make_bad_files
from tests.conftest import write_params

runner = CliRunner()


def _ingest(*args: str):
    return runner.invoke(app, ["ingest", *args], catch_exceptions=False)


@pytest.fixture()
def ingested(workspace: Path, prefect_harness) -> Path:
    result = _ingest("data/sample", "--json")
    assert result.exit_code == 0, result.output
    return workspace


def test_ingest_publishes_a_complete_version(ingested: Path) -> None:
    reg = IndexRegistry("indexes")
    assert reg.versions("sample") == ["v0001"]
    assert reg.aliases("sample") == {"latest": "v0001"}
    assert reg.verify("sample", "v0001") == []
    m = reg.manifest("sample", "v0001")
    assert m.counts == {"documents": 12, "chunks": m.counts["chunks"], "vectors": m.counts["chunks"], "quarantined": 0,
                        "segments": 1}
    assert m.embedding == {"model_id": "hashing", "revision": "hashing-v2-d256", "dim": 256, "normalize": True}
    assert m.chunker["strategy"] == "token" and len(m.chunker["fingerprint"]) == 16
    shipped = load_params("params.yaml").to_dict()
    assert shipped["embed"]["backend"] == "auto"  # recorded as the backend used: this CPU's fastest (no earlier version)
    shipped["embed"]["backend"] = resolve_backend("auto")
    assert m.params == shipped
    assert len(m.params_hash) == 64
    assert sorted(i["uri"] for i in m.inputs) == sorted(f"data/sample/{p.name}" for p in Path("data/sample").iterdir())
    # per-version files (quarantine, curation); the data is in the one segment
    assert set(m.files) == {"quarantine.parquet", "duplicates.parquet", "curation.json"}
    (seg,) = m.segments
    # a Flat index holds the exact vectors (no vectors.npy beside it), a small segment's chunk texts
    # are in chunks.parquet only (no chunks.arrow); the segment records its inputs and its
    # documents' and chunks' MinHash signatures (curation)
    assert set(seg["files"]) == {"documents.parquet", "chunks.parquet", "index.faiss", "bm25.npz", "bm25.json",
                                 "inputs.json", "signatures.parquet"}
    manifest_text = (Path("indexes/sample/v0001") / "manifest.json").read_text()
    assert m.inputs_in_segments and json.loads(manifest_text)["inputs"] == []
    assert manifest_text.count("\n") == 1  # compact JSON: one line
    assert seg["documents"] == 12 and seg["chunks"] == m.counts["chunks"] and m.tombstones == {}
    assert m.created_at.endswith("+00:00")
    # nothing half-written is left behind
    assert [p.name for p in Path("indexes/sample").iterdir() if p.name.startswith(".staging")] == []


def test_published_chunks_slice_their_documents(ingested: Path) -> None:
    idx = PublishedIndex.open(IndexRegistry("indexes"), "sample@latest")
    docs = {d.doc_id: d for d in documents_from_table(IndexRegistry("indexes").live_table("sample", idx.version, "documents"))}
    rows = idx.chunks.to_pylist()
    assert [r["row"] for r in rows] == list(range(len(rows)))
    assert len({r["chunk_id"] for r in rows}) == len(rows)
    for r in rows:
        assert docs[r["doc_id"]].text[r["char_start"] : r["char_end"]] == r["text"]
        assert 0 < r["token_count"] <= 200
    # vectors in the index are the embedder's vectors of each chunk's context + text (params.yaml
    # ships chunk.context: true, so every chunk carries its "Title > Section" prefix), L2-normalized
    assert all(r["context"].endswith("\n\n") and r["context"].strip() for r in rows)
    vecs = idx.vectors()
    np.testing.assert_allclose(vecs, HashingEmbedder().embed([r["context"] + r["text"] for r in rows]), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_second_ingest_reuses_the_embedding_cache_and_keeps_ids(ingested: Path) -> None:
    result = _ingest("data/sample", "--json")
    summary = json.loads(result.stdout)
    assert summary["version"] == "v0002"
    assert summary["embedded"] == 0 and summary["cache_hits"] == summary["chunks"]
    # the summary names the backend that embedded (auto resolved), the one the manifests record
    reg = IndexRegistry("indexes")
    recorded = reg.manifest("sample", "v0001").params["embed"]["backend"]
    assert summary["embed_backend"] == recorded == resolve_backend("auto") != "auto"
    a = PublishedIndex.open(reg, "sample@v0001").chunks.column("chunk_id").to_pylist()
    b = PublishedIndex.open(reg, "sample@v0002").chunks.column("chunk_id").to_pylist()
    assert a == b
    assert reg.aliases("sample") == {"latest": "v0002"}
    table = _ingest("data/sample").stdout  # the table a person reads names the backend too
    assert "embedding backend" in table and f" {recorded} " in table
    shown = runner.invoke(app, ["index", "show", "--json"])  # and so does `index show`
    assert json.loads(shown.stdout)["embed_backend"] == recorded


def test_query_json_has_every_field(ingested: Path) -> None:
    result = runner.invoke(app, ["query", "varroa mites alcohol wash", "--json", "-k", "3"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert set(hits[0]) == {"rank", "score", "row", "chunk_id", "doc_id", "source", "page", "char_start",
                            "char_end", "section_path", "text", "retriever_ranks", "retriever_scores", "duplicates"}
    assert hits[0]["source"] == "data/sample/varroa-mites.pdf"
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]


def test_query_table_output(ingested: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    import ragline.pipelines.cli as pipelines_cli

    monkeypatch.setattr(pipelines_cli, "out", Console(width=200))
    result = runner.invoke(app, ["query", "smoker fuel pine needles burlap puffs entrance", "-k", "2"])
    assert result.exit_code == 0
    assert "sample@v0001" in result.stdout and "protective-equipment.txt" in result.stdout


def test_query_mode_fusion_and_filter_options(ingested: Path) -> None:
    def q(*args: str) -> list[dict]:
        result = runner.invoke(app, ["query", "varroa mites in the brood", "--json", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert all(set(h["retriever_ranks"]) == {"dense"} for h in q("--mode", "dense"))
    assert all(set(h["retriever_ranks"]) == {"bm25"} for h in q("--mode", "bm25"))
    hybrid = q("--fusion", "rrf", "-k", "4")  # retrieval.mode is hybrid as shipped
    assert len(hybrid) == 4 and any(set(h["retriever_ranks"]) == {"dense", "bm25"} for h in hybrid)
    only_md = q("--filter", "source=*.md", "--filter", "source=*.txt", "-k", "8")
    assert only_md and all(h["source"].endswith((".md", ".txt")) for h in only_md)


@pytest.mark.parametrize("args, message", [
    (["--filter", "colour=red"], "unknown filter key(s) 'colour'; allowed: source, doc_id, page, section"),
    (["--mode", "sparse"], "mode: Input should be 'dense', 'bm25' or 'hybrid' (got 'sparse')"),
    (["--fusion", "max"], "fusion: Input should be 'weighted' or 'rrf' (got 'max')"),
    (["--index", "sample@prod"], "index 'sample' has no alias 'prod'"),
    (["--index", "sample@v0042"], "v0042"),
])
def test_query_bad_input_is_one_line(ingested: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["query", "bees", *args])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().count("\n") == 0 and message in " ".join(result.stderr.split())


def test_index_list(ingested: Path) -> None:
    rows = json.loads(runner.invoke(app, ["index", "list", "--json"]).stdout)
    assert [(r["index"], r["version"], r["aliases"], r["documents"]) for r in rows] == [("sample", "v0001", ["latest"], 12)]


def test_query_missing_index_is_one_clear_line(workspace: Path) -> None:
    result = runner.invoke(app, ["query", "bees", "--index", "nope"])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert "no index named 'nope'" in result.stderr and "Traceback" not in result.output


def test_query_with_another_embedder_is_refused(ingested: Path) -> None:
    result = runner.invoke(app, ["query", "bees", "--model", "hashing:32"])
    assert result.exit_code == 1
    assert "built with another embedder" in result.stderr
    assert "dim: index has 256, query embedder has 32" in result.stderr


def test_bad_files_are_quarantined_published_and_summarized(workspace: Path, prefect_harness) -> None:
    make_bad_files(workspace / "data" / "sample" / "bad")
    write_params(workspace, load={"max_failed_fraction": 0.5})
    result = _ingest("data/sample", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["documents"] == 12 and summary["quarantined"] == len(EXPECTED)
    reg = IndexRegistry("indexes")
    q = read_table(reg.version_dir("sample", "v0001") / "quarantine.parquet", QUARANTINE_SCHEMA).to_pylist()
    assert sorted(Path(r["path"]).name for r in q) == sorted(EXPECTED)
    assert all(r["stage"] == "load" and r["message"] for r in q)
    # the human summary prints the quarantine table
    text = _ingest("data/sample")
    assert "quarantine" in text.stdout and "BrokenSymlink" in text.stdout


def test_failure_rate_over_threshold_exits_nonzero_and_publishes_nothing(workspace: Path, prefect_harness) -> None:
    make_bad_files(workspace / "data" / "sample" / "bad")
    write_params(workspace, load={"max_failed_fraction": 0.25})
    result = _ingest("data/sample")
    assert result.exit_code == 1
    assert "max_failed_fraction=0.25" in result.stderr
    assert IndexRegistry("indexes").versions("sample") == []


def test_bm25_params_are_published_with_the_version(workspace: Path, prefect_harness) -> None:
    from ragline.indexers.bm25 import BM25Index

    write_params(workspace, index={"bm25_k1": 0.9, "bm25_b": 0.3})
    assert _ingest("data/sample").exit_code == 0
    published = PublishedIndex.open(IndexRegistry("indexes"), "sample@latest")
    (_, folder, _), = published.segments
    meta = json.loads((folder / "bm25.json").read_text())
    assert meta["spec"]["k1"] == 0.9 and meta["spec"]["b"] == 0.3
    opened = BM25Index.open(folder, published.chunks.num_rows)
    default = BM25Index.from_chunks(published.chunks)
    q = "varroa mites alcohol wash"
    assert not np.allclose(opened.scores(q), default.scores(q))  # the published scores use k1/b from params


class _WarmRecordingEmbedder:
    """Wraps an embedder; records where ``warm_up`` ran (inside a Prefect flow run or not)."""

    instances: list["_WarmRecordingEmbedder"] = []

    def __init__(self, inner) -> None:
        self._inner = inner
        self.warmed_in_flow: list[bool] = []
        self.embedded = 0
        _WarmRecordingEmbedder.instances.append(self)

    def warm_up(self) -> None:
        from prefect.context import FlowRunContext

        self.warmed_in_flow.append(FlowRunContext.get() is not None)
        self._inner.warm_up()

    def embed(self, texts, batch_size=64, progress=False):
        self.embedded += len(texts)
        return self._inner.embed(texts, batch_size, progress)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_ingest_warms_its_embedder_before_the_flow_and_uses_that_one(
        workspace: Path, prefect_harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: the model is warmed up while Prefect's temporary API starts (before the flow
    run), and the flow's load-model task takes that embedder instead of loading another."""
    import ragline.pipelines.flows as flows
    from ragline.pipelines.config import load_params

    real = flows.index_embedder
    _WarmRecordingEmbedder.instances = []
    monkeypatch.setattr(flows, "index_embedder", lambda *a, **k: _WarmRecordingEmbedder(real(*a, **k)))
    summary = flows.ingest_flow([], load_params("params.yaml").to_dict())
    assert summary.version == "v0001" and summary.embedded > 0
    (emb,) = _WarmRecordingEmbedder.instances  # one embedder made for the run
    assert emb.warmed_in_flow[0] is False and emb.embedded == summary.embedded
    assert not flows._WARMED  # taken by the flow, nothing left behind


def test_ingest_parses_and_embeds_while_prefect_starts_with_the_same_result(
        workspace: Path, prefect_harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: an ingest from its sources discovers its files and starts its load-chunk-embed
    stream before the flow runs (while Prefect's temporary API starts), and the flow's tasks take
    that stream; the published version is the one of a run that does all of it inside the flow."""
    from prefect.context import FlowRunContext

    import ragline.pipelines.flows as flows

    import os
    import threading

    from ragline.pipelines import stream

    calls: list[bool] = []
    real = flows.load_chunk_embed

    def recording(*args, **kwargs):
        calls.append(FlowRunContext.get() is not None)
        return real(*args, **kwargs)

    nice: dict[str, list[int]] = {"chunk": [], "embed": []}

    def niceness_of(name, fn):
        def run(*args, **kwargs):
            nice[name].append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return fn(*args, **kwargs)
        return run

    monkeypatch.setattr(flows, "load_chunk_embed", recording)
    monkeypatch.setattr(stream, "chunk_documents", niceness_of("chunk", stream.chunk_documents))
    monkeypatch.setattr(stream, "embed_with_cache", niceness_of("embed", stream.embed_with_cache))
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    params = load_params("params.yaml").to_dict()
    early = flows.ingest_flow([], params)
    assert calls == [False]  # one stream, started outside the flow run
    # its chunking yields to the embedder (reniced once the embedding thread runs: the last file at
    # least), as the parsing workers do; the embedder and the caller keep their niceness
    assert nice["chunk"][-1] == base + stream.PARSER_NICE and set(nice["embed"]) == {base}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
    assert early.stage_seconds["before-flow (overlapped)"] > 0 and early.total_seconds >= early.stage_seconds[
        "load-chunk-embed"]
    monkeypatch.setattr(flows.ingest_flow, "_before", None)
    params["paths"]["cache"] = str(workspace / "other-cache")  # embedded again, not read from the cache
    inside = flows.ingest_flow([], params)
    assert calls == [False, True]
    assert (early.version, inside.version) == ("v0001", "v0002")
    reg = IndexRegistry("indexes")
    a, b = (PublishedIndex.open(reg, f"sample@{v}") for v in ("v0001", "v0002"))
    assert a.chunks.num_rows == early.chunks > 0 and a.chunks.equals(b.chunks)
    # segments are named by the hash of their contents (chunks, documents, vectors' index, BM25)
    assert [s["id"] for s in a.manifest.segments] == [s["id"] for s in b.manifest.segments]
    assert a.manifest.files["duplicates.parquet"] == b.manifest.files["duplicates.parquet"]
    assert early.embedded == inside.embedded == a.chunks.num_rows


def test_ingest_started_before_its_flow_is_stopped_when_the_api_does_not_start(
        workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: when Prefect's temporary API does not start, the stream started before the flow
    is cancelled (its parsing workers stopped) before the one-line OrchestratorError, and nothing
    is published."""
    import ragline.pipelines.flows as flows

    heads: list = []

    class Recorded(flows._HeadStart):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            heads.append(self)

    class NoApi:
        def join(self):
            raise RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(flows, "_HeadStart", Recorded)
    monkeypatch.setattr(flows._TemporaryApiStart, "begin", classmethod(lambda cls: NoApi()))
    with pytest.raises(flows.OrchestratorError, match="did not start"):
        flows.ingest_flow([], load_params("params.yaml").to_dict())
    (head,) = heads
    assert head.cancel.is_set() and not head._thread.is_alive() and not head.taken
    assert flows._HEAD.get() is None and not flows._WARMED
    assert not (workspace / "indexes").exists() or IndexRegistry("indexes").versions("sample") == []
