"""Registry operations: promote / rollback with history, gc, diff, show, corrupt-registry errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ragline.indexers.manifest import CorruptRegistryError
from ragline.indexers.registry import IndexRegistry, RegistryError

from tests.publishing import publish_texts, segment_key, segment_path  # noqa: F401
from tests.refresh.conftest import A, B, C, D, cli, cli_json, params_here  # noqa: F401


def test_promote_and_rollback_walk_the_alias_history(three_versions: IndexRegistry) -> None:
    reg = three_versions
    assert cli_json("index", "promote", "v0001", "--alias", "prod")["to"] == "v0001"
    moved = cli_json("index", "promote", "v0002", "--alias", "prod")
    assert (moved["from"], moved["to"]) == ("v0001", "v0002")
    cli_json("index", "promote", "v0003", "--alias", "prod")
    assert [h["version"] for h in reg.alias_history("sample", "prod")] == ["v0001", "v0002"]

    back = cli_json("index", "rollback", "--alias", "prod")
    assert (back["from"], back["to"]) == ("v0003", "v0002")
    assert reg.resolve("sample@prod") == ("sample", "v0002")
    cli_json("index", "rollback", "--alias", "prod")
    assert reg.resolve("sample@prod") == ("sample", "v0001")
    code, _, stderr = cli("index", "rollback", "--alias", "prod")
    assert code == 1 and "no earlier target" in stderr and "ragline index promote" in stderr
    # latest was never touched by the prod moves
    assert reg.resolve("sample@latest") == ("sample", "v0003")
    # query resolves NAME@ALIAS
    hits = cli_json("query", "sugar roll varroa", "--index", "sample@prod", "-k", "1")
    assert hits[0]["source"] == "d/b.txt"


def test_promote_unknown_version_or_bad_alias_fails_cleanly(three_versions: IndexRegistry) -> None:
    code, _, stderr = cli("index", "promote", "v0042", "--alias", "prod")
    assert code == 1 and "v0042" in stderr and "v0001, v0002, v0003" in stderr
    assert three_versions.aliases("sample") == {"latest": "v0003"}


def test_diff_reports_documents_and_chunk_counts(three_versions: IndexRegistry) -> None:
    d = cli_json("index", "diff", "v0001", "v0002")
    assert (d["added"], d["removed"], d["changed"], d["unchanged"]) == (["d/d.txt"], ["d/c.txt"], ["d/b.txt"], 1)
    uris = {v: three_versions.live_table("sample", v, "chunks").column("uri").to_pylist() for v in ("v0001", "v0002")}
    assert d["chunks_a"] == len(uris["v0001"]) and d["chunks_b"] == len(uris["v0002"])
    assert d["doc_chunks"] == {u: [uris["v0001"].count(u), uris["v0002"].count(u)] for u in ("d/b.txt", "d/c.txt", "d/d.txt")}
    assert d["params_changed"] == [] and not d["chunker_changed"] and not d["embedding_changed"]
    # aliases work as diff operands
    assert cli_json("index", "diff", "v0002", "latest")["removed"] == ["d/b.txt"]


def test_gc_keeps_alias_targets_and_rollback_targets(three_versions: IndexRegistry) -> None:
    reg = three_versions
    p = params_here()
    publish_texts(p, {"d/a.txt": A})  # v0004
    publish_texts(p, {"d/b.txt": B})  # v0005: rollback target of latest
    publish_texts(p, {"d/c.txt": C})  # v0006: latest
    reg.set_alias("sample", "prod", "v0002")
    reg.set_alias("sample", "prod", "v0003")  # rollback target of prod: v0002
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = reg.index_dir("sample") / f".staging-v0009-{dead.pid}"
    stale.mkdir()
    (stale / "chunks.parquet").write_bytes(b"partial")
    live = reg.index_dir("sample") / f".staging-v0010-{os.getpid()}"
    live.mkdir()

    dry = cli_json("index", "gc", "--keep", "1", "--dry-run")
    assert dry["deleted"] == ["v0001", "v0004"] and reg.versions("sample") == [f"v000{i}" for i in range(1, 7)]
    report = cli_json("index", "gc", "--keep", "1")
    assert report["deleted"] == ["v0001", "v0004"]
    assert report["kept"] == {"v0002": ["rollback target of prod"], "v0003": ["alias prod"],
                              "v0005": ["rollback target of latest"], "v0006": ["newest", "alias latest"]}
    assert report["leftovers"] == [stale.name]
    assert reg.versions("sample") == ["v0002", "v0003", "v0005", "v0006"]
    assert not stale.exists() and live.exists()  # a running process's staging folder is left alone
    assert not list(reg.index_dir("sample").glob(".trash-*"))
    # the kept versions still load
    assert cli_json("query", "queen", "--index", "sample@prod", "-k", "1")[0]["source"]
    code, _, stderr = cli("index", "gc", "--keep", "-1")
    assert code != 0


def test_show_reports_manifest_and_damaged_files(three_versions: IndexRegistry) -> None:
    info = cli_json("index", "show", "v0002")
    assert info["version"] == "v0002" and info["aliases"] == [] and info["files_intact"] is True
    assert info["counts"]["documents"] == 3 and info["counts"]["vectors"] == info["counts"]["chunks"]
    latest = cli_json("index", "show")  # default: latest
    assert latest["version"] == "v0003" and latest["aliases"] == ["latest"]
    assert [h["version"] for h in latest["alias_history"]] == ["v0001", "v0002"]
    assert [s["id"] for s in info["segments"]] == [s.id for s in three_versions.segments("sample", "v0002")]
    assert sum(s["chunks"] - s["deleted_chunks"] for s in info["segments"]) == info["counts"]["chunks"]
    faiss_file = segment_path("v0002", "index.faiss")
    key = segment_key("v0002", "index.faiss")
    data = bytearray(faiss_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    faiss_file.write_bytes(bytes(data))
    code, stdout, stderr = cli("index", "show", "sample@v0002", "--json")  # exits 1 on damage (issue 11)
    damaged = json.loads(stdout)
    assert code == 1 and damaged["files_intact"] is False and damaged["damaged_files"] == [key]
    assert f"{key}: sha256 differs from the manifest" in " ".join(stderr.split())
    assert "sample@v0002 is damaged" in " ".join(stderr.split())


def test_truncated_manifest_is_a_clear_error_naming_file_and_repair(three_versions: IndexRegistry) -> None:
    manifest = Path("indexes/sample/v0003/manifest.json")
    manifest.write_text(manifest.read_text()[:100])
    for args in (("refresh",), ("query", "bees"), ("index", "show")):
        code, _, stderr = cli(*args)
        flat = " ".join(stderr.split())
        assert code == 1, args
        assert str(manifest) in flat.replace(" ", "") or "v0003/manifest.json" in flat.replace(" ", "")
        assert "ragline index promote VERSION --index sample --alias" in flat
    # the repair it names works: move latest elsewhere, then the damaged version can be deleted
    cli_json("index", "promote", "v0002", "--alias", "latest")
    assert cli_json("query", "varroa", "-k", "1")[0]["source"] == "d/b.txt"


def test_alias_naming_missing_version_is_a_clear_error_and_repairable(three_versions: IndexRegistry) -> None:
    alias = Path("indexes/sample/aliases/latest.json")
    data = json.loads(alias.read_text())
    data["version"] = "v0007"
    alias.write_text(json.dumps(data))
    code, _, stderr = cli("refresh")
    flat = " ".join(stderr.split())
    assert code == 1 and "latest.json" in flat and "missing version 'v0007'" in flat
    assert "ragline index promote VERSION --index sample --alias latest" in flat
    with pytest.raises(CorruptRegistryError):
        three_versions.resolve("sample@latest")
    cli_json("index", "promote", "v0003", "--alias", "latest")
    assert three_versions.resolve("sample") == ("sample", "v0003")


def test_unreadable_alias_file_is_an_error_and_promote_repairs_it(three_versions: IndexRegistry) -> None:
    alias = Path("indexes/sample/aliases/latest.json")
    alias.write_text('{"version": "v00')
    code, _, stderr = cli("index", "list")
    assert code == 1 and "latest.json" in " ".join(stderr.split()) and "not valid JSON" in stderr
    cli_json("index", "promote", "v0002", "--alias", "latest")
    record = three_versions.alias_record("sample", "latest")
    assert record["version"] == "v0002" and "not valid JSON" in record["repaired"]


def test_versions_without_latest_alias_refuse_to_refresh(three_versions: IndexRegistry) -> None:
    Path("indexes/sample/aliases/latest.json").unlink()
    code, _, stderr = cli("refresh")
    assert code == 1 and "no alias 'latest'" in stderr and "ragline index promote v0003" in " ".join(stderr.split())
    with pytest.raises(RegistryError):
        three_versions.rollback_alias("sample", "latest")
