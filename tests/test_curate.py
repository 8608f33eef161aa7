"""Curation (pipelines/curate.py): exact and near-duplicate clusters, boilerplate removal with
the offset invariant kept, the files published with a version, refresh that never drops content."""

from __future__ import annotations

import itertools
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ragline.core.errors import ConfigError
from ragline.core.hashing import doc_id_for
from ragline.core.records import Document, ElementSpan
from ragline.pipelines.config import CurateConfig, Params
from ragline.pipelines.curate import Member, find_duplicates, strip_boilerplate
from tests.conftest import write_params
from tests.invariants import assert_chunk_invariants
from tests.refresh.conftest import light_workspace, params_here  # noqa: F401  (fixture)

SRC = Path("data/sample")
WORDS = [f"w{i}" for i in range(3000)]


def _text(seed: int, n: int = 600) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _edit(text: str, frac: float, seed: int = 7) -> str:
    words = text.split()
    rng = random.Random(seed)
    for i in rng.sample(range(len(words)), int(frac * len(words))):
        words[i] = f"changed{i}"
    return " ".join(words)


def _doc(uri: str, parts: list[str], pages: list[int | None] | None = None) -> Document:
    spans, pos = [], 0
    for i, p in enumerate(parts):
        if i:
            pos += 2
        spans.append(ElementSpan("NarrativeText", pos, pos + len(p), (pages or [None] * len(parts))[i]))
        pos += len(p)
    return Document(doc_id_for(uri), uri, "0" * 64, "text/plain", 1, uri, "\n\n".join(parts), tuple(spans))


# ------------------------------------------------------------------ unit: clusters
def test_exact_and_near_duplicates_by_edit_rate() -> None:
    base = _text(1)
    members = [Member("a", "a", "x/a", base), Member("b", "b", "x/b", base.replace(" ", "\n  ")),
               Member("c", "c", "x/c", _edit(base, 0.01)), Member("d", "d", "x/d", _edit(base, 0.20)),
               Member("e", "e", "x/e", _text(2))]
    cl = find_duplicates(members, CurateConfig(), "document")
    assert cl.aliases == {"b": "a", "c": "a"}  # 20 % edited and unrelated texts stay apart
    rows = {r["member_id"]: r for r in cl.rows}
    assert rows["a"]["canonical"] and rows["a"]["method"] == "canonical"
    assert rows["b"]["method"] == "exact" and rows["b"]["similarity"] == 1.0
    assert rows["c"]["method"] == "near" and 0.85 < rows["c"]["similarity"] < 1.0
    # a lower threshold also takes the 20 % copy; exact-only takes neither near copy
    assert set(find_duplicates(members, CurateConfig(near_duplicate_threshold=0.2), "document").aliases) == {"b", "c", "d"}
    assert find_duplicates(members, CurateConfig(near_duplicates=False), "document").aliases == {"b": "a"}


def test_lsh_bands_are_found_once_per_setting_and_are_datasketchs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: datasketch's MinHashLSH integrates its error probabilities for every (b, r) when
    built (0.16 CPU-s), and an ingest builds one for documents and one for chunks: the bands are
    now found once per (threshold, num_perm), with the same (b, r) and so the same clusters."""
    from datasketch import MinHashLSH, lsh

    from ragline.pipelines import curate

    calls: list[tuple] = []
    real = lsh._optimal_param
    monkeypatch.setattr(lsh, "_optimal_param", lambda *a: calls.append(a) or real(*a))
    curate.lsh_bands.cache_clear()
    base = _text(11)
    members = [Member("a", "a", "x/a", base), Member("c", "c", "x/c", _edit(base, 0.01)), Member("e", "e", "x/e", _text(12))]
    for cfg in (CurateConfig(), CurateConfig(), CurateConfig(near_duplicate_threshold=0.5)):
        assert find_duplicates(members, cfg, "chunk").aliases == {"c": "a"}
    assert [a[:2] for a in calls] == [(0.9, 128), (0.5, 128)]
    for t in (0.9, 0.5):
        own = MinHashLSH(threshold=t, num_perm=128)
        assert curate.lsh_bands(t, 128) == (own.b, own.r)


def test_preferred_member_stays_canonical_and_stored_signatures_are_reused() -> None:
    base = _text(3)
    members = [Member("a", "a", "x/a", base), Member("b", "b", "x/b", base, preferred=True)]
    cl = find_duplicates(members, CurateConfig(), "document")
    assert cl.aliases == {"a": "b"}
    poisoned = {"a": (cl.signatures["a"][0], cl.signatures["a"][1] * 0)}  # stored: reused as is, not recomputed
    again = find_duplicates(members, CurateConfig(), "document", stored=poisoned)
    assert (again.signatures["a"][1] == 0).all() and (again.signatures["b"][1] == cl.signatures["b"][1]).all()


@pytest.mark.parametrize("value", [0, -0.1, 1.01, "high"])
def test_threshold_outside_unit_interval_is_a_config_error(value) -> None:
    with pytest.raises(ConfigError, match=r"curate\.near_duplicate_threshold"):
        Params.from_dict({"curate": {"near_duplicate_threshold": value}})


def test_unknown_policy_and_key_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"curate\.duplicates"):
        Params.from_dict({"curate": {"duplicates": "drop"}})
    with pytest.raises(ConfigError, match=r"curate\.boilerplat"):
        Params.from_dict({"curate": {"boilerplat": True}})


# ------------------------------------------------------------------ unit: boilerplate
def test_pdf_running_header_and_page_numbers_are_removed_offsets_hold() -> None:
    from ragline.chunkers.registry import get_chunker

    parts, pages = [], []
    for page in range(1, 7):
        parts += ["ACME Handbook - Confidential", f"Body of page {page}: " + _text(page, 80), f"Page {page} of 6"]
        pages += [page, page, page]
    doc = _doc("docs/handbook.pdf", parts, pages)
    (out,), report = strip_boilerplate([doc], CurateConfig())
    assert len(out.elements) == 6 and "ACME Handbook" not in out.text and "of 6" not in out.text
    assert report.removed["docs/handbook.pdf"][:2] == ["ACME Handbook - Confidential", "Page 1 of 6"]
    assert report.chars == len(doc.text) - len(out.text) > 0
    for e in out.elements:  # every span indexes the rebuilt text
        assert out.text[e.char_start:e.char_end].startswith("Body of page")
    chunks = get_chunker("token", max_tokens=50).chunk(out.text, doc_id=out.doc_id, elements=out.elements)
    assert_chunk_invariants(out.text, chunks, 50, elements=out.elements)
    off, _ = strip_boilerplate([doc], CurateConfig(boilerplate=False))
    assert off[0] is doc


def test_site_banner_removed_from_a_folder_but_not_below_min_docs() -> None:
    docs = [_doc(f"site/p{i}.html", ["Accept cookies to continue", _text(10 + i, 50), "Edit on GitHub"])
            for i in range(5)]
    out, report = strip_boilerplate(docs, CurateConfig())
    assert all(d.text == docs[i].text.split("\n\n")[1] for i, d in enumerate(out))
    assert sorted(report.keys["site"]) == ["accept cookies to continue", "edit on github"]
    few, rep = strip_boilerplate(docs[:4], CurateConfig())  # 4 < boilerplate_min_docs
    assert [d.text for d in few] == [d.text for d in docs[:4]] and not rep.removed
    only = [_doc(f"s2/p{i}.html", ["Same line"]) for i in range(5)]
    kept, rep = strip_boilerplate(only, CurateConfig())  # never empties a document
    assert [d.text for d in kept] == ["Same line"] * 5 and not rep.removed


def test_folder_boilerplate_is_taken_from_document_edges_and_a_repeated_content_line_stays() -> None:
    # regression: "New in version 3.5." repeated mid-page in every page of a small folder of the
    # Python docs was removed as site boilerplate
    docs = []
    for i in range(6):
        body = [f"Section {i}.{j}: " + _text(100 * i + j, 30) for j in range(8)]
        middle = body[:4] + ["New in version 3.5."] + body[4:]
        docs.append(_doc(f"py/p{i}.html", ["Navigation", "Edit on GitHub", *middle,
                                           "© Copyright 2001-2026, Python Software Foundation."]))
    out, report = strip_boilerplate(docs, CurateConfig())
    assert report.keys["py"] == ["edit on github", "navigation", "© copyright 2001-2026, python software foundation."]
    for d, o in zip(docs, out):
        assert "New in version 3.5." in o.text and o.text.startswith("Section") and "Copyright" not in o.text
        assert report.removed[d.uri] == ["Navigation", "Edit on GitHub",
                                         "© Copyright 2001-2026, Python Software Foundation."]
        assert [o.text[e.char_start:e.char_end] for e in o.elements] == o.text.split("\n\n")
    # a page that carries the footer mid-page (quoting it) keeps it there
    quoted = _doc("py/quote.html", ["Navigation", *[_text(900 + j, 30) for j in range(8)],
                                    "Edit on GitHub", *[_text(950 + j, 30) for j in range(8)], "The end."])
    out, report = strip_boilerplate(docs + [quoted], CurateConfig())
    assert report.removed[quoted.uri] == ["Navigation"] and "Edit on GitHub" in out[-1].text
    # a narrower edge zone (params) finds less
    _, narrow = strip_boilerplate(docs, CurateConfig(boilerplate_edge_elements=1))
    assert narrow.keys["py"] == ["navigation", "© copyright 2001-2026, python software foundation."]


# ------------------------------------------------------------------ flows: ingest and refresh
def _plant_copies() -> str:
    """An exact copy and a 1 %-edited copy of swarming.md in later folders; returns the original text."""
    text = (SRC / "swarming.md").read_text()
    (SRC / "zz-copies").mkdir()
    (SRC / "zz-copies" / "swarming-copy.md").write_text(text)
    words = text.split(" ")
    words[len(words) // 2] = "CHANGED"
    (SRC / "zz-copies" / "swarming-edit.md").write_text(" ".join(words))
    return text


def _version(name: str, version: str):
    from ragline.indexers.registry import IndexRegistry

    folder, reg = Path("indexes") / name / version, IndexRegistry("indexes")
    return (folder, reg.live_table(name, version, "documents"), reg.live_table(name, version, "chunks"),
            pq.read_table(folder / "duplicates.parquet"), json.loads((folder / "curation.json").read_text()))


def _no_silent_drop(docs, chunks, dups) -> None:
    """Every document has indexed chunks or a duplicate record; every chunk the chunker makes of the
    published text is indexed, or recorded as a copy (itself or its whole document)."""
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.load import documents_from_table

    indexed = set(chunks.column("doc_id").to_pylist())
    recorded = {r["doc_id"] for r in dups.to_pylist()}
    assert all(d in indexed or d in recorded for d in docs.column("doc_id").to_pylist())
    made, _ = chunk_documents(documents_from_table(docs), params_here().chunk)
    copies = {r["member_id"] for r in dups.to_pylist() if not r["canonical"]}
    kept = set(chunks.column("chunk_id").to_pylist())
    lost = [c for c, d in zip(made.column("chunk_id").to_pylist(), made.column("doc_id").to_pylist())
            if c not in kept and c not in copies and d not in copies]
    assert lost == [] and kept <= set(made.column("chunk_id").to_pylist())
    texts = dict(zip(docs.column("doc_id").to_pylist(), docs.column("text").to_pylist()))
    for r in chunks.to_pylist():
        assert texts[r["doc_id"]][r["char_start"]:r["char_end"]] == r["text"]


def test_ingest_links_copies_and_one_hit_lists_every_source(light_workspace: Path, prefect_harness) -> None:
    from ragline.indexers.retriever import Index
    from ragline.pipelines.flows import ingest_flow

    _plant_copies()
    s = ingest_flow([], params_here().to_dict())
    folder, docs, chunks, dups, cur = _version("sample", s.version)
    assert docs.num_rows == 8 and s.chunks == chunks.num_rows
    orig, copy, edit = (doc_id_for(str(SRC / p)) for p in ("swarming.md", "zz-copies/swarming-copy.md",
                                                          "zz-copies/swarming-edit.md"))
    doc_rows = {r["member_id"]: r for r in dups.to_pylist() if r["level"] == "document"}
    assert doc_rows[orig]["canonical"] and doc_rows[copy]["method"] == "exact"
    assert doc_rows[edit]["method"] == "near" and doc_rows[edit]["canonical_id"] == orig
    assert not ({copy, edit} & set(chunks.column("doc_id").to_pylist()))
    assert cur["counts"]["documents"] == {"exact": 1, "near": 1} and cur["counts"]["removed_documents"] == 2
    assert cur["counts"]["removed_chunks"] > 0
    _no_silent_drop(docs, chunks, dups)
    hits = Index.open("indexes", "sample@latest").search("swarm", k=5)
    swarm = [h for h in hits if h.doc_id == orig]
    assert swarm and set(swarm[0].duplicates) == {str(SRC / "zz-copies/swarming-copy.md"),
                                                  str(SRC / "zz-copies/swarming-edit.md")}
    assert "duplicates" in swarm[0].to_dict()


def test_keep_all_indexes_every_copy_but_returns_one_hit_per_cluster(light_workspace: Path, prefect_harness) -> None:
    from ragline.indexers.retriever import Index
    from ragline.pipelines.flows import ingest_flow

    _plant_copies()
    write_params(light_workspace, curate={"duplicates": "keep_all"})
    s = ingest_flow([], params_here().to_dict())
    _, docs, chunks, dups, cur = _version("sample", s.version)
    assert len(set(chunks.column("doc_id").to_pylist())) == 8 and cur["counts"]["removed_chunks"] == 0
    hits = Index.open("indexes", "sample@latest").search("swarm colony queen", k=5, mode="bm25")
    texts = [h.text for h in hits]
    assert len(texts) == len(set(texts))  # exact copies collapsed into one hit
    assert any(h.duplicates for h in hits)


def test_refresh_deleting_the_canonical_copy_keeps_its_content(light_workspace: Path, prefect_harness) -> None:
    from ragline.indexers.retriever import Index
    from ragline.pipelines.flows import refresh_flow

    _plant_copies()
    s1 = refresh_flow(params=params_here().to_dict())
    _, docs1, chunks1, dups1, _ = _version("sample", s1.version)
    copy = doc_id_for(str(SRC / "zz-copies/swarming-copy.md"))
    assert copy not in set(chunks1.column("doc_id").to_pylist())
    (SRC / "swarming.md").unlink()
    s2 = refresh_flow(params=params_here().to_dict())
    folder, docs2, chunks2, dups2, cur2 = _version("sample", s2.version)
    mine = chunks2.filter(pc.equal(chunks2.column("doc_id"), copy))
    assert mine.num_rows > 0, "the copy's content must be indexed once its canonical is deleted"
    orig = chunks1.filter(pc.equal(chunks1.column("doc_id"), doc_id_for(str(SRC / "swarming.md"))))
    assert mine.column("text").to_pylist() == orig.column("text").to_pylist()  # the same passages, now from the copy
    rows = {r["member_id"]: r for r in dups2.to_pylist() if r["level"] == "document"}
    assert rows[copy]["canonical"]  # promoted; the edited copy now points at it
    assert rows[doc_id_for(str(SRC / "zz-copies/swarming-edit.md"))]["canonical_id"] == copy
    _no_silent_drop(docs2, chunks2, dups2)
    hit = Index.open("indexes", "sample@latest").search("swarm", k=3)[0]
    assert hit.source.endswith("swarming-copy.md")
    # a refresh that changes nothing reuses every stored signature and does not publish
    assert refresh_flow(params=params_here().to_dict()).version is None


def test_refresh_adding_a_copy_links_it_without_reembedding(light_workspace: Path, prefect_harness) -> None:
    from ragline.pipelines.flows import refresh_flow

    s1 = refresh_flow(params=params_here().to_dict())
    (SRC / "zz").mkdir()
    shutil.copy(SRC / "hive-anatomy.md", SRC / "zz" / "hive-anatomy.md")
    s2 = refresh_flow(params=params_here().to_dict())
    assert s2.chunks == s1.chunks and s2.computed == 0
    _, docs, chunks, dups, cur = _version("sample", s2.version)
    assert cur["counts"]["documents"]["exact"] == 1
    _no_silent_drop(docs, chunks, dups)


def test_profile_show_and_diff_report_curation(light_workspace: Path, prefect_harness) -> None:
    from ragline.pipelines.flows import refresh_flow
    from tests.refresh.conftest import cli

    _plant_copies()
    refresh_flow(params=params_here().to_dict())
    code, stdout, _ = cli("index", "profile", "--json", "--html", "report/profile.html")
    assert code == 0, stdout
    prof = json.loads(stdout)
    assert prof["documents"]["count"] == 8 and prof["documents"]["by_folder"]["data/sample/zz-copies"] == 2
    assert prof["languages"] == {"en": 8}
    assert prof["curation"]["documents"] == {"exact": 1, "near": 1}
    assert prof["chunk_tokens"]["count"] == prof["chunks"] and sum(prof["chunk_tokens"]["counts"]) == prof["chunks"]
    page = Path("report/profile.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2 and "http://" not in page and "https://" not in page
    code, stdout, _ = cli("index", "profile")
    assert code == 0 and "curation" in stdout and "exact" in stdout
    code, stdout, _ = cli("index", "show", "--json")
    assert json.loads(stdout)["curation"]["removed_documents"] == 2
    (SRC / "swarming.md").unlink()
    refresh_flow(params=params_here().to_dict())
    code, stdout, _ = cli("index", "diff", "v0001", "v0002", "--json")
    dups = json.loads(stdout)["duplicates"]
    assert dups["promoted"] == [doc_id_for(str(SRC / "zz-copies/swarming-copy.md"))]
    code, stdout, _ = cli("index", "diff", "v0001", "v0002")
    assert "1 copies promoted to canonical" in " ".join(stdout.split())


def test_eval_chunking_reports_chunks_curation_leaves_out(workspace: Path) -> None:
    from ragline.pipelines.evaluate_chunking import EvalDataset, Question, Reference, evaluate_chunking

    text = _text(5, 900)
    ds = EvalDataset("mem", {"a": text, "b": text, "c": _text(6, 900)},
                     (Question(text[:40], "a", (Reference(0, 40, text[:40]),)),))
    p = params_here()
    res = evaluate_chunking(ds, p, k=1)
    assert res.curation_removed_chunks == res.corpora[1].chunks > 0  # corpus b is an exact copy of a
    keep_all = Params.from_dict({**p.to_dict(), "curate": {"duplicates": "keep_all"}})
    assert evaluate_chunking(ds, keep_all, k=1).curation_removed_chunks == 0


def test_changing_curate_params_makes_refresh_redo_curation(light_workspace: Path, prefect_harness) -> None:
    from ragline.pipelines.flows import refresh_flow

    _plant_copies()
    s1 = refresh_flow(params=params_here().to_dict())
    write_params(light_workspace, curate={"duplicates": "keep_all"})
    s2 = refresh_flow(params=params_here().to_dict())
    assert s2.version == "v0002" and any("curate.duplicates changed" in r for r in s2.reasons)
    # the copies' chunks are indexed now; the exact copy's texts come from the embedding cache
    assert s2.chunks > s1.chunks and s2.computed < s2.chunks - s1.chunks
    write_params(light_workspace, curate={"boilerplate": False})
    p = params_here()
    from ragline.indexers.registry import IndexRegistry
    from ragline.pipelines.refresh import plan_refresh

    plan = plan_refresh(p, IndexRegistry(p.index.root))
    assert plan.reload_all and plan.rechunk_all


def test_stored_signatures_are_reused_only_when_made_the_same_way(tmp_path: Path) -> None:
    from ragline.pipelines.curate import SIGNATURES_FILE, Curation, ParentCuration

    cfg = CurateConfig()
    cur = Curation(cfg)
    cur.documents = find_duplicates([Member("a", "a", "x/a", _text(1))], cfg, "document")
    cur.write(tmp_path)
    cur.write_signatures(tmp_path / SIGNATURES_FILE)  # a version folder's file (before segments held them)
    state = ParentCuration.read(tmp_path)
    assert set(state.stored("document", cfg)) == {"a"}
    assert state.stored("document", CurateConfig(shingle_words=5)) == {}
    assert state.stored("document", CurateConfig(num_perm=64)) == {}


def test_query_table_names_the_other_copies(light_workspace: Path, prefect_harness) -> None:
    from ragline.pipelines.flows import ingest_flow
    from tests.refresh.conftest import cli

    _plant_copies()
    ingest_flow([], params_here().to_dict())
    code, stdout, _ = cli("query", "swarm cells queen", "-k", "3", "--mode", "bm25")
    assert code == 0 and "also in" in stdout and "swarming-copy.md" in " ".join(stdout.split()).replace(" ", "")


def test_a_text_the_shingler_fails_on_is_in_no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    base = _text(9)
    _fail_shingling_on(monkeypatch, "poison")
    members = [Member("a", "a", "x/a", base), Member("b", "b", "x/b", "poison " + base),
               Member("c", "c", "x/c", base)]
    cl = find_duplicates(members, CurateConfig(), "document")
    assert cl.errors == {"b": ("UnicodeError", "cannot shingle this text (poison)")}
    assert cl.aliases == {"c": "a"} and "b" not in cl.signatures  # no stored signature: retried next time
    assert "b" not in {r["member_id"] for r in cl.rows}


def _fail_shingling_on(monkeypatch: pytest.MonkeyPatch, marker: str, max_words: int | None = None) -> None:
    """Make the shingler raise on every text holding ``marker`` (only texts up to ``max_words``
    words when given: chunks, not their documents), as a text the tokenizer chokes on would."""
    import ragline.pipelines.curate as curate

    real = curate.word_grams

    def shingler(text: str, n: int):
        if marker in text and (max_words is None or len(text.split()) <= max_words):
            raise UnicodeError(f"cannot shingle\nthis text ({marker})")
        return real(text, n)

    shingler.__wrapped__ = real  # type: ignore[attr-defined]
    monkeypatch.setattr(curate, "word_grams", shingler)


def test_a_chunk_the_shingler_fails_on_quarantines_its_document_and_promotes_its_copy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.curate import curate_chunks
    from ragline.pipelines.load import documents_to_table

    base = _text(21, 900).split()
    base[5] = "poison"
    a = " ".join(base)
    base[5] = "antidote"
    docs = [_doc("x/a.txt", [a]), _doc("x/b.txt", [" ".join(base)]), _doc("x/c.txt", [_text(22, 300)])]
    p = Params.from_dict({"chunk": {"strategy": "token", "max_tokens": 200, "overlap_tokens": 0}})
    chunks, _ = chunk_documents(docs, p.chunk)
    clean, keep0 = curate_chunks(documents_to_table(docs), chunks, p.curate)
    assert clean.documents.aliases == {docs[1].doc_id: docs[0].doc_id}  # b is a near copy of a
    _fail_shingling_on(monkeypatch, "poison", max_words=400)  # a's first chunk, not a itself
    cur, keep = curate_chunks(documents_to_table(docs), chunks, p.curate)
    assert [(q.path, q.stage, q.error_type) for q in cur.quarantine] == [("x/a.txt", "curate", "UnicodeError")]
    msg = cur.quarantine[0].message
    assert "x/a.txt" in msg and "\n" not in msg and "cannot shingle this text" in msg
    kept_docs = set(chunks.filter(pa.array(keep)).column("doc_id").to_pylist())
    assert kept_docs == {docs[1].doc_id, docs[2].doc_id}  # a's copy b is indexed now, a is not
    assert not cur.documents.aliases and docs[0].doc_id not in cur.documents.signatures
    assert cur.counts()["quarantined_documents"] == 1 and cur.removed_chunks == 0
    assert keep0.sum() == sum(1 for d in chunks.column("doc_id").to_pylist() if d != docs[1].doc_id)


def test_ingest_quarantines_a_document_the_shingler_fails_on(
        light_workspace: Path, prefect_harness, monkeypatch: pytest.MonkeyPatch) -> None:
    from ragline.pipelines.flows import ingest_flow

    _plant_copies()
    _fail_shingling_on(monkeypatch, "CHANGED")  # the 1 %-edited copy (zz-copies/swarming-edit.md)
    s = ingest_flow([], params_here().to_dict())
    folder, docs, chunks, dups, cur = _version("sample", s.version)
    edit = str(SRC / "zz-copies/swarming-edit.md")
    q = pq.read_table(folder / "quarantine.parquet").to_pylist()
    assert [(r["path"], r["stage"]) for r in q] == [(edit, "curate")] and edit in q[0]["message"]
    assert [r.path for r in s.quarantine] == [edit]
    assert docs.num_rows == 7 and edit not in docs.column("uri").to_pylist()
    assert edit not in set(chunks.column("uri").to_pylist()) | {r["uri"] for r in dups.to_pylist()}
    assert cur["counts"]["quarantined_documents"] == 1 and cur["counts"]["documents"] == {"exact": 1, "near": 0}
    _no_silent_drop(docs, chunks, dups)


def test_refresh_quarantines_a_changed_document_the_shingler_fails_on(
        light_workspace: Path, prefect_harness, monkeypatch: pytest.MonkeyPatch) -> None:
    from ragline.pipelines.flows import refresh_flow

    s1 = refresh_flow(params=params_here().to_dict())
    target = SRC / "hive-anatomy.md"
    target.write_text(target.read_text() + "\n\nZZPOISON appended paragraph.\n")
    _fail_shingling_on(monkeypatch, "ZZPOISON")
    s2 = refresh_flow(params=params_here().to_dict())
    folder, docs, chunks, dups, cur = _version("sample", s2.version)
    q = pq.read_table(folder / "quarantine.parquet").to_pylist()
    assert [(r["path"], r["stage"], r["error_type"]) for r in q] == [(str(target), "curate", "UnicodeError")]
    assert q[0]["sha256"]  # the file's hash: the next refresh does not retry the unchanged file
    assert str(target) not in docs.column("uri").to_pylist() + chunks.column("uri").to_pylist()
    assert docs.num_rows == s1.documents - 1 and s2.documents == docs.num_rows
    import ragline.pipelines.curate as curate

    monkeypatch.setattr(curate, "word_grams", curate.word_grams.__wrapped__)  # the real shingler again
    s3 = refresh_flow(params=params_here().to_dict())
    assert s3.version is None  # still quarantined, unchanged: nothing to publish


def test_exact_copy_of_a_near_copy_joins_its_cluster() -> None:
    base = _text(11)
    near = _edit(base, 0.01)
    members = [Member("a", "a", "x/a", base), Member("b", "b", "x/b", near), Member("c", "c", "x/c", near)]
    cl = find_duplicates(members, CurateConfig(), "document")
    rows = {r["member_id"]: r for r in cl.rows}
    assert cl.aliases == {"b": "a", "c": "a"}
    assert rows["c"]["method"] == "exact" and rows["c"]["similarity"] == rows["b"]["similarity"] < 1.0


def _record_embedded_texts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text the (hashing) index embedder is asked to embed, in call order."""
    from ragline.indexers.embedders import HashingEmbedder

    seen: list[str] = []
    real = HashingEmbedder.embed

    def embed(self, texts, *args, **kwargs):
        seen.extend(texts)
        return real(self, texts, *args, **kwargs)

    monkeypatch.setattr(HashingEmbedder, "embed", embed)
    return seen


def _without_early_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    """The streamed ingest as before the early skip: every chunk embedded, curation drops the copies' rows."""
    import ragline.pipelines.flows as flows

    real = flows.load_chunk_embed
    monkeypatch.setattr(flows, "load_chunk_embed", lambda *a, **k: real(*a, **{**k, "skip_copies": False}))


@pytest.mark.parametrize("policy", ["link", "keep_all"])
def test_streamed_ingest_does_not_embed_exact_copies_and_publishes_the_same_version(
        light_workspace: Path, prefect_harness, monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    from ragline.indexers.registry import IndexRegistry
    from ragline.pipelines.flows import ingest_flow

    from ragline.core.schemas import indexed_texts
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.load import discover_files, load_documents

    _plant_copies()
    (orig,), _ = load_documents(discover_files([SRC / "swarming.md"]), params_here().load)
    spaced = SRC / "zz-copies" / "swarming-spaced.txt"
    spaced.write_text(orig.text.replace(" ", "  "))  # an exact copy (normalized text) whose chunk texts differ
    write_params(light_workspace, paths={"cache": ""}, curate={"duplicates": policy})  # every text embedded
    seen = _record_embedded_texts(monkeypatch)
    with monkeypatch.context() as m:
        _without_early_skip(m)
        s1 = ingest_flow([], params_here().to_dict())
    full = list(seen)
    seen.clear()
    s2 = ingest_flow([], params_here().to_dict())
    reg = IndexRegistry("indexes")
    # the same tables and vectors: segments are content-addressed
    assert [g.id for g in reg.segments("sample", s1.version)] == [g.id for g in reg.segments("sample", s2.version)]
    v1, v2 = (_version("sample", v) for v in (s1.version, s2.version))
    assert v1[2].equals(v2[2]) and v1[3].equals(v2[3])  # chunks, duplicates.parquet
    assert {k: v for k, v in v1[4]["counts"].items() if k != "seconds"} == \
        {k: v for k, v in v2[4]["counts"].items() if k != "seconds"}
    stats = reg.manifest("sample", s2.version).stats
    copy_rows = {r["member_id"] for r in v2[3].to_pylist() if r["level"] == "document" and r["method"] == "exact"}
    assert len(copy_rows) == 2
    if policy == "keep_all":  # every copy is indexed, so every copy is embedded
        assert stats["copies_not_embedded"] == 0 and set(seen) == set(full)
        return
    spaced_doc, _ = load_documents(discover_files([spaced]), params_here().load)
    made, _ = chunk_documents(spaced_doc, params_here().chunk)
    assert stats["copies_not_embedded"] > made.num_rows and s2.embedded < s1.embedded
    assert set(full) - set(seen) == set(indexed_texts(made))  # the spaced copy was never embedded


def test_streamed_ingest_embeds_a_skipped_copy_that_curation_keeps_after_all(
        light_workspace: Path, prefect_harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The original's chunk makes the shingler fail, so it is quarantined and its exact copy, not
    embedded while streaming, is indexed instead: embedded after curation, as without the skip."""
    from ragline.indexers.registry import IndexRegistry
    from ragline.pipelines.flows import ingest_flow
    from ragline.pipelines.load import discover_files, load_documents

    (orig,), _ = load_documents(discover_files([SRC / "swarming.md"]), params_here().load)
    spaced = SRC / "zz-copies" / "swarming-spaced.txt"
    spaced.parent.mkdir()
    spaced.write_text(orig.text.replace(" ", "  "))  # same normalized text; its chunks are spaced apart
    write_params(light_workspace, paths={"cache": ""})
    _fail_shingling_on(monkeypatch, "Swarming is how", max_words=250)  # a chunk of the original only
    with monkeypatch.context() as m:
        _without_early_skip(m)
        s1 = ingest_flow([], params_here().to_dict())
    s2 = ingest_flow([], params_here().to_dict())
    reg = IndexRegistry("indexes")
    assert [g.id for g in reg.segments("sample", s1.version)] == [g.id for g in reg.segments("sample", s2.version)]
    folder, docs, chunks, dups, cur = _version("sample", s2.version)
    assert [r.path for r in s2.quarantine] == [str(SRC / "swarming.md")]
    assert str(spaced) in set(chunks.column("uri").to_pylist())
    assert reg.manifest("sample", s2.version).stats["copies_not_embedded"] > 0


def test_rst_source_and_its_rendered_page_shingle_alike() -> None:
    from ragline.pipelines.curate import shingles, strip_markup

    rst = (".. _json-intro:\n\n:mod:`json` exposes an API familiar to users of :mod:`marshal`, see\n"
           ":func:`~json.dumps` and `the JSON site <https://json.org>`_, specified by :rfc:`7159` [#errata]_.\n\n"
           ".. versionadded:: 3.5\n\n.. function:: dumps(obj)\n   :noindex:\n\n   Serialize *obj*.")
    html = ("json exposes an API familiar to users of marshal, see\ndumps() and the JSON site, specified by "
            "RFC 7159 [1].\n\nNew in version 3.5.\n\ndumps(obj)\n\nSerialize obj.")
    assert shingles(rst, 3) == shingles(html, 3)
    prose = "Plain prose: a list [x] and a time 12:30 stay as they are."
    assert strip_markup(prose) == prose
    assert shingles("The `x` of y", 3) == {b"the x of", b"x of y"}


def test_signatures_made_by_another_shingler_are_recomputed(tmp_path: Path) -> None:
    from ragline.pipelines.curate import SIGNATURES_FILE, Curation, ParentCuration

    cfg = CurateConfig()
    cur = Curation(cfg)
    cur.documents = find_duplicates([Member("a", "a", "x/a", _text(1))], cfg, "document")
    cur.write(tmp_path)
    cur.write_signatures(tmp_path / SIGNATURES_FILE)
    assert set(ParentCuration.read(tmp_path).stored("document", cfg)) == {"a"}
    old = pq.read_table(tmp_path / SIGNATURES_FILE).drop_columns(["shingler", "doc_id"])  # as written before them
    pq.write_table(old, tmp_path / SIGNATURES_FILE)
    assert ParentCuration.read(tmp_path).stored("document", cfg) == {}


# ------------------------------------------------------------------ streamed boilerplate (issue 16)
def _site(rng: random.Random) -> list[Document | None]:
    """Three folders (one interleaved with another in file order), navigation on most pages of
    two of them, a footer on about the share threshold of one, a PDF with a running header,
    titles repeated on a few pages, and files that fail to load (``None``)."""
    out: list[Document | None] = []
    for i in range(40):
        folder = ("lib", "ref", "top")[i % 3] if i % 5 else "lib"
        parts = [f"Title {i}", f"body {i} " + " ".join(f"w{rng.randrange(50)}" for _ in range(30)),
                 f"more {i}", f"end {i}"]
        if folder != "top" and rng.random() < 0.9:
            parts.insert(0, "Navigation Home Library Reference")
        if folder == "lib" and rng.random() < 0.8:
            parts.append("Copyright 2001-2024 the Python Software Foundation")
        if rng.random() < 0.15:
            parts[0] = "Shared Title"
        out.append(None if rng.random() < 0.08 else _doc(f"site/{folder}/p{i:02d}.html", parts))
    out.append(_doc("site/lib/manual.pdf", [f"Manual page {p}" for p in range(1, 7)] + ["body"] * 6,
                    pages=[*range(1, 7), *range(1, 7)]))
    return out


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_streamed_boilerplate_releases_early_and_equals_the_batch_stage(seed: int, keep: bool) -> None:
    """Issue 16: boilerplate removal made chunking (and so embedding) wait for the last parsed file.
    StreamedBoilerplate releases a document once its folder's frequencies decide it; in any
    arrival order, with files failing to load, every released document equals the batch stage's
    result and the report is the same. Without ``keep`` (issue 12), no released document is held."""
    import gc

    from ragline.pipelines.curate import StreamedBoilerplate

    rng = random.Random(seed)
    files = _site(rng)
    uris = [d.uri if d else f"site/{('lib', 'ref', 'top')[i % 3]}/p{i:02d}.html" for i, d in enumerate(files)]
    cfg = CurateConfig(boilerplate_min_share=rng.choice([0.5, 0.7, 0.8]), boilerplate_min_docs=rng.choice([3, 5]))
    batch, report = strip_boilerplate([d for d in files if d is not None], cfg)
    stream = StreamedBoilerplate(uris, cfg, keep=keep)
    order = list(range(len(files)))
    rng.shuffle(order)
    released: dict[int, Document] = {}
    before_last = 0
    for n, i in enumerate(order):
        for j, d in stream.add(i, files[i]):
            assert j not in released
            released[j] = d
            before_last += n < len(order) - 1
    if not keep:  # the stream holds a released document no more: only its caller does
        gc.collect()
        held = {id(o) for o in gc.get_referents(stream.__dict__, *stream.__dict__.values()) if isinstance(o, Document)}
        assert not held & {id(d) for d in released.values()}
        assert not held & {id(files[j]) for j in released}
    final, again = stream.finish()
    by_uri = {d.uri: d for d in batch}
    want = [by_uri[d.uri] if d is not None else None for d in files]
    if keep:
        assert [d for d in final if d is not None] == batch
    else:  # the documents released before are not given back
        assert final == [None if i in released else want[i] for i in range(len(files))]
    assert again == [(i, want[i]) for i in sorted(set(range(len(files))) - set(released)) if want[i] is not None]
    assert all(released[j] == want[j] for j in released)
    assert stream.report == report and report.removed
    assert before_last >= len(batch) // 2  # most documents go on before the last file is parsed


def test_streamed_boilerplate_without_keep_refuses_a_release_the_corpus_contradicts() -> None:
    """Without ``keep`` a released document cannot be chunked again, so a release that the
    whole corpus's rule would make another way is an error naming the document, not a silent
    difference (the decision rule never lets it happen; here a sketch is tampered with)."""
    from dataclasses import replace

    from ragline.pipelines.curate import StreamedBoilerplate

    cfg = CurateConfig(boilerplate_min_share=0.5, boilerplate_min_docs=3)
    docs = [_doc(f"site/p{i}.html", ["Navigation Home", f"body {i} text", f"more {i}", f"end {i}"]) for i in range(6)]
    stream = StreamedBoilerplate([d.uri for d in docs], cfg, keep=False)
    released = [j for i, d in enumerate(docs) for j, _ in stream.add(i, d)]
    assert released == list(range(6)) and all(sk.released == {0} for sk in stream._sketch.values())
    stream._sketch[2] = replace(stream._sketch[2], released=frozenset())  # as if released with its banner
    with pytest.raises(RuntimeError, match="site/p2.html"):
        stream.finish()


def test_streamed_boilerplate_holds_the_text_only_of_keys_two_documents_share() -> None:
    """Issue 12 (bounded memory): what a stream holds of a released document is its sketch, key
    ids, not the edge elements' text: a key is named only once a second document of its folder
    has it, and a decided folder's counts are dropped. The report still names every key."""
    from ragline.pipelines.curate import StreamedBoilerplate

    cfg = CurateConfig(boilerplate_min_share=0.5, boilerplate_min_docs=3)
    docs = [_doc(f"site/{f}/p{i}.html", ["Navigation Home", f"Lead {f} {i}", f"body {i}", f"more {i}", f"Tail {f} {i}"])
            for f in "ab" for i in range(6)]
    stream = StreamedBoilerplate([d.uri for d in docs], cfg, keep=False)
    released = [j for i, d in enumerate(docs) for j, _ in stream.add(i, d)]
    assert released == list(range(len(docs)))
    assert set(stream._names.values()) == {"navigation home"}  # no lead or tail line is held as text
    assert not stream._counts and not stream._undecided
    assert all(sk.keys.dtype == np.int64 and len(sk.keys) == 2 for sk in stream._sketch.values())
    stream.finish()
    assert stream.report.keys == {"site/a": ["navigation home"], "site/b": ["navigation home"]}
    assert stream.report == strip_boilerplate(docs, cfg)[1]


def test_a_segments_signatures_let_go_once_written_are_not_written_again(tmp_path: Path) -> None:
    """Issue 12: a streamed ingest's part lets its signatures go once its segment holds them
    (``release``); a second write would make a file without them, so it is refused."""
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.curate import curate_chunks
    from ragline.pipelines.load import documents_to_table

    docs = [_doc("x/a.txt", [_text(31, 400)]), _doc("x/b.txt", [_text(31, 400)]), _doc("x/c.txt", [_text(32, 300)])]
    p = Params.from_dict({"chunk": {"strategy": "token", "max_tokens": 200, "overlap_tokens": 0}})
    chunks, _ = chunk_documents(docs, p.chunk)
    documents = documents_to_table(docs)
    kept, _ = curate_chunks(documents, chunks, p.curate)
    let_go, _ = curate_chunks(documents, chunks, p.curate)
    for cur, folder in ((kept, tmp_path / "kept"), (let_go, tmp_path / "let-go")):
        folder.mkdir()
        write = cur.segment_signatures(documents, chunks, release=cur is let_go)
        write(folder)
    assert pq.read_table(tmp_path / "kept" / "signatures.parquet").equals(
        pq.read_table(tmp_path / "let-go" / "signatures.parquet"))
    assert len(let_go.chunks.signatures) == 0 and len(kept.chunks.signatures) > 0  # (only indexed documents are shingled)
    with pytest.raises(RuntimeError, match="let-go/signatures.parquet"):
        write(tmp_path / "let-go")


# ---------------------------------------------------------------- the same decisions at less CPU (issue 16)
def _real_texts() -> list[str]:
    """Texts curation meets: the sample corpus's documents, reST sources and pages of the Python
    docs when installed, and edge cases (no words, fewer words than a shingle, repeats, Unicode)."""
    from ragline.pipelines.load import discover_files, load_document

    texts = [d.text for d in (load_document(f, Params().load) for f in discover_files([SRC]))
             if isinstance(d, Document)]
    pydocs = Path("/usr/share/doc/python3.11-doc/html")
    if pydocs.is_dir():
        rst = sorted((pydocs / "_sources" / "library").glob("*.rst.txt"))[:40:4]
        texts += [p.read_text(encoding="utf-8") for p in rst]
    return texts + ["", "   ", "...", "one", "two words", "a b c", "a a a a a a", "Ünïcödé straße STRASSE ﬁ",
                    ".. note::\n\n   :func:`~os.path.join` [#x]_ `t <u>`_ `y`__ :opt: x", _text(3, 5000)]


def _reference_strip_markup(text: str) -> str:
    """strip_markup as it was (every substitution, none skipped): the reference for the gated one."""
    from ragline.pipelines import curate as c

    if "`" not in text and ".." not in text and "[" not in text and ":" not in text:
        return text
    text = c._RST_TARGET.sub(" ", text)
    text = c._RST_DIRECTIVE.sub(c._directive_words, text)
    text = c._RST_FOOTNOTE.sub(" ", text)
    text = c._RST_LINK.sub("", text)
    text = c._RST_TILDE.sub(r"`\1", text)
    text = c._RST_ROLE.sub(c._role_words, text)
    text = c._RST_LINK_END.sub("`", text)
    return c._RST_FIELD.sub(" ", text)


def test_minhash_signatures_equal_datasketch_minhash_bulk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The numpy signatures are datasketch's (MinHash.bulk, seed 1, affine32, sha1_hash32), for
    several num_perm / shingle sizes, and for texts cut by a block boundary (a tiny block)."""
    import numpy as np
    from datasketch import MinHash

    from ragline.pipelines import curate as c

    texts = _real_texts()
    for num_perm, words, block, n_texts in ((128, 3, c._MINHASH_BLOCK, c._MINHASH_TEXTS), (64, 1, 7, 3),
                                            (256, 5, 1000, 1)):
        monkeypatch.setattr(c, "_MINHASH_BLOCK", block)
        monkeypatch.setattr(c, "_MINHASH_TEXTS", n_texts)  # texts hashed a few at a time: the same rows
        cfg = CurateConfig(num_perm=num_perm, shingle_words=words)
        values, has = c.minhash_matrix(texts, cfg)
        assert values.dtype == np.uint32 and values.shape == (len(texts), num_perm)
        sets = [c.shingles(t, words) for t in texts]
        want = [m.hashvalues for m in MinHash.bulk([list(s) for s in sets], num_perm=num_perm, seed=1, scheme="affine32")]
        assert has.tolist() == [bool(s) for s in sets]
        for s, g, w in zip(sets, values, want):
            if s:
                assert g.tolist() == w.tolist()


def test_gated_strip_markup_and_split_collapse_equal_the_regex_reference() -> None:
    import re
    import sys

    from ragline.pipelines.curate import collapse, strip_markup

    # str.split()'s whitespace is re's \s on str, code point by code point
    assert [c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace() != bool(re.match(r"\s", c))] == []
    rng = random.Random(5)
    alphabet = list("`~:._[]#<>_-  \n\tab1") + [".. ", "::", ":func:", "`x <y>`_", "[#a]_", "[12]", "\u00a0", "\u2028"]
    fuzz = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(3000)]
    for text in _real_texts() + fuzz:
        assert strip_markup(text) == _reference_strip_markup(text), text
        assert collapse(text) == re.sub(r"\s+", " ", text).strip(), text


def test_rebuild_equals_rebuilding_every_span() -> None:
    """``_rebuild`` (spans whose offsets stay kept as they are, the others built directly) gives
    the document that rebuilding every span with ``dataclasses.replace`` gave, for drops at the
    edges, in the middle, of everything but one element, with pages and section paths, and with
    a span past the end of the text (its offsets follow the text it slices)."""
    from dataclasses import replace

    from ragline.pipelines.curate import _rebuild

    def reference(doc: Document, drop: set[int]) -> Document:
        kept = [e for i, e in enumerate(doc.elements) if i not in drop]
        texts = [doc.text[e.char_start:e.char_end] for e in kept]
        starts = itertools.accumulate((len(t) + 2 for t in texts[:-1]), initial=0)  # "\n\n" between texts
        spans = [replace(e, char_start=at, char_end=at + len(t)) for e, at, t in zip(kept, starts, texts)]
        return replace(doc, text="\n\n".join(texts), elements=tuple(spans))

    rng = random.Random(7)
    parts = [_text(i, rng.randint(1, 40)) for i in range(12)]
    doc = _doc("x/a.pdf", parts, [1 + i // 4 for i in range(12)])
    doc = replace(doc, elements=tuple(replace(e, section_path=("S", str(i))) for i, e in enumerate(doc.elements)))
    past = replace(doc, elements=doc.elements[:-1] + (replace(doc.elements[-1], char_end=len(doc.text) + 9),))
    for d in (doc, past):
        for drop in ({0}, {11}, {0, 1, 11}, {5, 6}, set(range(1, 12)), set(), set(rng.sample(range(12), 4))):
            got, want = _rebuild(d, drop), reference(d, drop)
            assert got == want and got.text == want.text, drop
            kept = [e for i, e in enumerate(d.elements) if i not in drop]
            assert [g is k for g, k in zip(got.elements, kept)] == [g == k for g, k in zip(got.elements, kept)]


def test_stored_band_keys_find_the_same_candidates_as_the_signatures(tmp_path: Path) -> None:
    """A refresh's one pass over the parent's signature files (``_scan_fixed``) compares the
    stored LSH band keys; a file written before they were stored gives the same candidates
    from its signatures; tombstoned documents' rows are never candidates."""
    import numpy as np

    from ragline.pipelines import curate as c

    cfg = CurateConfig()
    bands = c.lsh_bands(cfg.near_duplicate_threshold, cfg.num_perm)
    rng = np.random.default_rng(7)
    n = 40
    values = rng.integers(0, 2**32, (n, cfg.num_perm), dtype=np.uint32)
    has = np.ones(n, dtype=bool)
    has[5] = False  # a text without words: no signature, no band keys
    new = rng.integers(0, 2**32, (1, cfg.num_perm), dtype=np.uint32)
    new[0, 2 * bands[1]:3 * bands[1]] = values[3, 2 * bands[1]:3 * bands[1]]  # shares band 2 with c3 only
    ids = [f"c{i}" for i in range(n)]
    cur = c.Curation(cfg)
    cur.chunks.signatures = c.Signatures(ids, [f"{i:064x}" for i in range(n)], values, has)
    path = tmp_path / "with-bands.parquet"
    cur.write_signatures(path, doc_of=(pa.array(ids), pa.array([f"d{i // 10}" for i in range(n)])))
    t = pq.read_table(path)
    keys = c.band_keys(values, bands)
    assert t.column("bands").to_pylist() == [[] if i == 5 else keys[i].tolist() for i in range(n)]
    old = tmp_path / "before-bands.parquet"
    pq.write_table(t.drop_columns(["bands"]), old)
    wanted = {"chunk": ([f"{7:064x}"], c.band_keys(new, bands)), "document": ([], None)}
    for p in (path, old):
        fx = c._scan_fixed([c.SignaturePart(p)], set(), wanted, bands, cfg)
        assert fx["chunk"].ids == ["c3", "c7"] and fx["document"].ids == []
        assert fx["chunk"].by_sha[f"{7:064x}"] == "c7" and fx["chunk"].docs == ["d0", "d0"]
        np.testing.assert_array_equal(fx["chunk"].values[0], values[3])
        assert fx["chunk"].candidates(c.band_keys(new, bands)[0]) == [0]  # c3 (c7 is an exact copy only)
        assert c._scan_fixed([c.SignaturePart(p)], {"d0"}, wanted, bands, cfg)["chunk"].ids == []


def test_a_segment_leaves_out_the_signatures_of_the_texts_it_holds_and_they_are_made_again(tmp_path: Path) -> None:
    """A segment's ``signatures.parquet`` stores no values for members whose text the segment
    holds (their sha256 and band keys stay); every reader makes them again from that text, equal
    to the stored ones; a text that is gone or changed is a damaged segment, named."""
    import numpy as np

    from ragline.core.errors import CorruptRegistryError
    from ragline.core.schemas import CHUNKS_SCHEMA, DOCUMENTS_SCHEMA, write_table
    from ragline.pipelines import curate as c

    cfg = CurateConfig()
    bands = c.lsh_bands(cfg.near_duplicate_threshold, cfg.num_perm)
    words = [f"w{i}" for i in range(400)]
    rng = random.Random(3)
    texts = [" ".join(rng.choices(words, k=60)) for _ in range(6)] + ["", "  "]  # two without words
    ids = [f"c{i}" for i in range(len(texts))]
    values, has = c.minhash_matrix(texts, cfg)
    cur = c.Curation(cfg)
    cur.chunks.signatures = c.Signatures(ids, [c.content_sha256(t) for t in texts], values, has)
    seg = tmp_path / "seg"
    seg.mkdir()
    held = ids[:3] + ids[6:]  # the segment holds c0-c2 and the empty ones; c3-c5 (copies, say) it does not
    write_table(pa.Table.from_pylist([{"chunk_id": i, "doc_id": "d0", "uri": "a.txt", "text": texts[int(i[1:])]}
                                      for i in held], schema=CHUNKS_SCHEMA), seg / "chunks.parquet", CHUNKS_SCHEMA)
    write_table(pa.Table.from_pylist([{"doc_id": "d0", "uri": "a.txt", "text": " ".join(texts)}], schema=DOCUMENTS_SCHEMA),
                seg / "documents.parquet", DOCUMENTS_SCHEMA)
    path = seg / c.SIGNATURES_FILE
    cur.write_signatures(path, pa.array(["d0"]), (pa.array(ids), pa.array(["d0"] * len(ids))),
                         (pa.array(["d0"]), pa.array(held)))
    t = pq.read_table(path)
    hv = t.column("hashvalues").to_pylist()
    assert [v is None for v in hv] == [True] * 3 + [False] * 5  # a text without words keeps its empty list
    assert hv[6] == [] and hv[3] == values[3].tolist()
    assert t.column("bands").to_pylist()[0] == c.band_keys(values[:1], bands)[0].tolist()
    state = c.ParentCuration(pa.Table.from_pylist([], schema=c.DUPLICATES_SCHEMA), {}, [c.SignaturePart(path)])
    assert state.lengths.tolist() == [-1] * 3 + [cfg.num_perm] * 3 + [0, 0]
    assert sorted(state.stored("chunk", cfg)) == ids[3:]  # c0-c2: made again from the texts by the clustering
    got = state.signatures_of("chunk", ids)
    assert [got[i][0] for i in ids] == [c.content_sha256(x) for x in texts]
    assert [got[i][1].tolist() for i in ids] == [v.tolist() if h else [] for v, h in zip(values, has)]
    near = values[1:2].copy()
    near[0, bands[1]:] = 0  # shares band 0 with c1 only
    fx = c._scan_fixed([c.SignaturePart(path)], set(), {"chunk": ([], c.band_keys(near, bands))}, bands, cfg)["chunk"]
    assert fx.ids == ["c1"]
    np.testing.assert_array_equal(fx.values[0], values[1])
    # the segment's text changed under its signature (or went): refused, naming the segment and member
    write_table(pa.Table.from_pylist([{"chunk_id": "c1", "doc_id": "d0", "uri": "a.txt", "text": texts[1] + " more"}],
                                     schema=CHUNKS_SCHEMA), seg / "chunks.parquet", CHUNKS_SCHEMA)
    for call in (lambda: state.signatures_of("chunk", ["c1"]),
                 lambda: c._scan_fixed([c.SignaturePart(path)], set(), {"chunk": ([], c.band_keys(near, bands))}, bands, cfg)):
        with pytest.raises(CorruptRegistryError, match=r"seg: chunk c1 has no signature stored.*damaged"):
            call()
    with pytest.raises(CorruptRegistryError, match="chunk c0"):
        state.signatures_of("chunk", ["c0"])
    # a row carried from a file without band keys keeps its values (its keys come from them)
    full = cur.signatures_table()
    keys = full.schema.get_field_index("bands")
    old = full.set_column(keys, c.SIGNATURES_SCHEMA.field("bands"), pa.nulls(full.num_rows, pa.list_(pa.uint32())))
    assert c._without_held(full, (pa.array(["d0"]), pa.array(held))).column("hashvalues").null_count == 3
    assert c._without_held(old, (pa.array(["d0"]), pa.array(held))).column("hashvalues").null_count == 0


def test_lazy_signatures_are_made_again_only_where_they_share_an_lsh_bucket() -> None:
    """Stored signatures whose values were left out (lazy rows: band keys only) cluster as the
    full values do; only the rows sharing a bucket with another member are made again from
    their texts, and the others are written back without values."""
    import numpy as np

    from ragline.pipelines import curate as c

    cfg = CurateConfig()
    bands = c.lsh_bands(cfg.near_duplicate_threshold, cfg.num_perm)
    rng = random.Random(5)
    words = [f"w{i}" for i in range(2000)]
    carried = [" ".join(rng.choices(words, k=150)) for _ in range(20)]
    new = [carried[3] + " one more line", carried[11], " ".join(rng.choices(words, k=150))]  # near, exact, other
    texts = carried + new
    members = [Member(f"m{i}", f"d{i}", f"u{i}", "", i < 20) for i in range(len(texts))]
    values, has = c.minhash_matrix(carried, cfg)
    stored = c.Signatures([f"m{i}" for i in range(20)], [c.content_sha256(t) for t in carried],
                          np.zeros_like(values), has, keys=c.band_keys(values, bands), lazy=np.ones(20, dtype=bool))
    with pytest.raises(KeyError):
        stored["m3"]
    got = find_duplicates(members, cfg, "chunk", stored, texts=c.ColumnTexts(pa.array(texts)),
                          trusted={f"m{i}" for i in range(20)})
    want = find_duplicates([Member(m.member_id, m.doc_id, m.uri, t, m.preferred) for m, t in zip(members, texts)],
                           cfg, "chunk")
    assert got.rows == want.rows and {r["method"] for r in got.rows} == {"canonical", "near", "exact"}
    assert got.remade == 2  # m3 and m11, which share buckets with the new copies; the other 18 stay lazy
    sig = got.signatures
    assert sig.lazy.sum() == 18 and not sig.lazy[[3, 11]].any()
    np.testing.assert_array_equal(sig.values[3], values[3])
    table = sig.table("chunk", cfg)
    assert table.column("hashvalues").null_count == 18
    assert table.column("bands").to_pylist()[:20] == c.band_keys(values, bands).tolist()
    sig.materialize(np.arange(20), cfg)  # written where the texts are not held: made from them
    assert sig.lazy is None or not sig.lazy.any()
    np.testing.assert_array_equal(sig.values[:20], values)
