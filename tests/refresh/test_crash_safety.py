"""SIGKILL at every injected point of a refresh (segment writes included) and of a compaction:
the registry stays consistent, the next run succeeds (reusing the embedding cache), and gc
removes what the dead processes left."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

from ragline.indexers.cache import text_sha256
from ragline.indexers.embedders import info_of, make_embedder
from ragline.indexers.faults import COMPACT_CRASH_POINTS, CRASH_ENV, CRASH_POINTS, GC_CRASH_POINTS
from ragline.indexers.registry import VERSION_RE, IndexRegistry
from ragline.indexers.retriever import PublishedIndex
from ragline.core.schemas import indexed_texts
from tests.conftest import write_params
from tests.refresh.conftest import VENV_BIN, params_here

SRC = Path("data/sample")
#: points after which the new chunks' vectors are in the embedding cache
AFTER_EMBED = CRASH_POINTS[CRASH_POINTS.index("refresh:embedded"):]
#: points that leave a version staging folder behind (the segment is written inside the publish)
LEAVES_STAGING = ("segment:staged", "segment:written", "publish:staging-written", "publish:manifest-written")
#: the point crashed with an edited document (parse + embed in the crashed run, so the next
#: refresh must find the vectors in the cache); at the others the crashed refresh removes a
#: document (no parsing, no model: keeps this test's subprocesses cheap)
EDIT_AT = ("refresh:embedded", "segment:staged", "segment:written")


def cached_keys(params) -> set[str]:
    path = Path(params.paths.cache) / "embeddings" / f"{info_of(make_embedder(params.embed.model)).cache_key}.sqlite"
    with sqlite3.connect(path) as db:
        return {k for (k,) in db.execute("SELECT key FROM vectors")}


def assert_consistent(reg: IndexRegistry, name: str) -> None:
    """Every alias resolves to a complete, loadable version; only vNNNN folders with manifests are versions."""
    versions = reg.versions(name)
    assert versions and all(VERSION_RE.match(v) for v in versions)
    for v in versions:
        assert reg.verify(name, v) == [], v
    for alias, v in reg.aliases(name).items():
        assert v in versions, alias
        opened = PublishedIndex.open(reg, f"{name}@{alias}")
        assert opened.index.ntotal == opened.chunks.num_rows == opened.manifest.counts["chunks"]
        listed = {s.id for s in reg.segments(name, v)}
        assert all(reg.segment_dir(name, s).is_dir() for s in listed), v


def test_sigkill_at_each_point_leaves_registry_consistent(light_workspace: Path, subprocess_env, prefect_harness) -> None:
    from ragline.pipelines.flows import refresh_flow

    p = params_here()
    reg = IndexRegistry(p.index.root)
    for point in CRASH_POINTS:  # one short note per removal below
        (SRC / f"note-{point.replace(':', '-')}.txt").write_text(f"Apiary note before {point}: check the brood.\n")
    assert refresh_flow(params=p.to_dict()).version == "v0001"
    for i, point in enumerate(CRASH_POINTS):
        if point in EDIT_AT:
            target = SRC / "swarming.md"
            target.write_text(target.read_text() + f"\n\nCrash drill {i}: {point} with smoke, veil and hive tool {i}.\n")
        else:
            (SRC / f"note-{point.replace(':', '-')}.txt").unlink()
        docs = sorted(SRC.iterdir())
        latest_before = reg.resolve(f"{p.index.name}@latest")[1]
        staging_before = set(reg.index_dir(p.index.name).glob(".staging-*"))
        r = subprocess.run([str(VENV_BIN / "ragline"), "refresh"], env={**subprocess_env, CRASH_ENV: point},
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == -signal.SIGKILL, f"{point}: exit {r.returncode}\n{r.stderr[-3000:]}"
        staging = set(reg.index_dir(p.index.name).glob(".staging-*")) - staging_before
        assert bool(staging) == (point in LEAVES_STAGING), (point, staging)
        assert_consistent(reg, p.index.name)
        latest_after = reg.resolve(f"{p.index.name}@latest")[1]
        assert (latest_after != latest_before) == (point == "publish:aliased"), point

        keys_before = cached_keys(p)
        s = refresh_flow(params=p.to_dict())  # the next refresh, no crash
        assert s.failed is None, point
        if point == "publish:aliased":  # the crashed run had published and moved latest already
            assert s.nothing_changed
            continue
        chunks = PublishedIndex.open(reg, f"{p.index.name}@{s.version}").chunks
        texts = {text_sha256(t) for t in indexed_texts(chunks)}
        assert s.computed == len(texts - keys_before), point
        if point in EDIT_AT and point in AFTER_EMBED:
            assert s.computed == 0 and s.embedded_chunks > 0, point
        assert_consistent(reg, p.index.name)
        m = reg.manifest(p.index.name, s.version)
        assert {r["uri"] for r in m.inputs} == {str(d) for d in docs}

    leftovers = {x.name for x in reg.leftovers(p.index.name)}
    assert leftovers and all(x.startswith((".staging-", ".latest.json.")) for x in leftovers)
    assert any(x.parent.name == "segments" for x in reg.leftovers(p.index.name))  # segment:staged left one
    report = reg.gc(p.index.name, keep=100)
    assert set(report.leftovers) == leftovers and report.deleted == []
    # a segment a killed run wrote is either listed by the next run (same content, same id) or deleted
    listed = {s.id for v in reg.versions(p.index.name) for s in reg.segments(p.index.name, v)}
    assert {d.name for d in reg.segments_dir(p.index.name).iterdir()} == listed
    assert reg.leftovers(p.index.name) == []
    assert_consistent(reg, p.index.name)


def test_sigkill_during_compaction_and_gc_leaves_registry_consistent(light_workspace: Path, subprocess_env,
                                                                      prefect_harness) -> None:
    from ragline.pipelines.flows import refresh_flow

    write_params(light_workspace, curate={"enabled": False})  # refreshes share segments (see test_segments.py)
    p = params_here()
    reg = IndexRegistry(p.index.root)
    name = p.index.name
    assert refresh_flow(params=p.to_dict()).version == "v0001"
    for i, target in enumerate((SRC / "swarming.md", SRC / "hive-anatomy.md")):  # three segments, tombstones in the first
        target.write_text(target.read_text() + f"\n\nCompaction drill {i}: smoke the hive.\n")
        assert refresh_flow(params=p.to_dict()).failed is None
    before = reg.resolve(f"{name}@latest")[1]
    assert len(reg.segments(name, before)) == 3 and reg.manifest(name, before).tombstones
    for point in COMPACT_CRASH_POINTS:
        r = subprocess.run([str(VENV_BIN / "ragline"), "index", "compact"], env={**subprocess_env, CRASH_ENV: point},
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == -signal.SIGKILL, f"{point}: exit {r.returncode}\n{r.stderr[-3000:]}"
        assert_consistent(reg, name)
        now = reg.resolve(f"{name}@latest")[1]
        if point == "publish:aliased":
            assert now != before and len(reg.segments(name, now)) == 1
        else:
            assert now == before, point
    r = subprocess.run([str(VENV_BIN / "ragline"), "index", "compact", "--json"], env=subprocess_env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert_consistent(reg, name)
    for point in GC_CRASH_POINTS:  # gc killed after deleting versions, before deleting their segments
        r = subprocess.run([str(VENV_BIN / "ragline"), "index", "gc", "--keep", "1"],
                           env={**subprocess_env, CRASH_ENV: point}, capture_output=True, text=True, timeout=300)
        assert r.returncode == -signal.SIGKILL, f"{point}: exit {r.returncode}\n{r.stderr[-3000:]}"
        assert_consistent(reg, name)
    report = reg.gc(name, keep=1)
    assert report.segments_deleted and reg.leftovers(name) == []
    assert_consistent(reg, name)
    kept = {s.id for v in reg.versions(name) for s in reg.segments(name, v)}
    stored = {d.name for d in reg.segments_dir(name).iterdir()}
    assert stored == kept


def test_sigkill_while_an_ingest_flushes_segments_leaves_garbage_gc_removes(light_workspace: Path, subprocess_env,
                                                                            prefect_harness) -> None:
    """An ingest that writes segments as it streams (``index.segment_chunks``) and is killed
    publishes nothing; its hold dies with it, so gc deletes the segments no version lists."""
    write_params(light_workspace, curate={"enabled": False}, index={"segment_chunks": 8})
    p = params_here()
    reg = IndexRegistry(p.index.root)
    for point in ("segment:staged", "segment:written"):  # the first flushed segment: half written, then held
        r = subprocess.run([str(VENV_BIN / "ragline"), "ingest"], env={**subprocess_env, CRASH_ENV: point},
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == -signal.SIGKILL, f"{point}: exit {r.returncode}\n{r.stderr[-3000:]}"
        assert reg.versions(p.index.name) == []
    leftovers = {x.name for x in reg.leftovers(p.index.name)}
    assert any(x.startswith(".hold-") for x in leftovers) and any(x.startswith(".staging-") for x in leftovers)
    orphans = {d.name for d in reg.segments_dir(p.index.name).iterdir() if not d.name.startswith(".")}
    assert orphans
    r = subprocess.run([str(VENV_BIN / "ragline"), "ingest"], env=subprocess_env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (v,) = reg.versions(p.index.name)
    assert len(reg.segments(p.index.name, v)) >= 2
    assert orphans <= {s.id for s in reg.segments(p.index.name, v)}  # the same files: the same segments, reused
    report = reg.gc(p.index.name, keep=100)
    assert set(report.leftovers) == leftovers and reg.leftovers(p.index.name) == []
    assert {d.name for d in reg.segments_dir(p.index.name).iterdir()} == {s.id for s in reg.segments(p.index.name, v)}
    assert_consistent(reg, p.index.name)
