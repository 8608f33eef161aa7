"""BM25 index: same scores as bm25s, round trip through the version files, publish and old versions."""

from __future__ import annotations

import json
from pathlib import Path

import bm25s
import numpy as np
import pytest
import Stemmer
from hypothesis import given, settings
from hypothesis import strategies as st

from ragline.indexers.bm25 import BM25_ARRAYS_FILE, BM25_META_FILE, BM25Index, BM25Spec, tokenize
from ragline.indexers.registry import IndexRegistry
from tests.publishing import publish_paragraphs

TEXTS = ["the cat sat on the mat", "dogs chase cats", "a quick brown fox", "cat food and cat toys", ""]


UNSTEMMED = BM25Spec(stemmer="none")


@pytest.mark.parametrize("stemmer", ["english", "none"])
def test_scores_equal_bm25s_reference(stemmer: str) -> None:
    ix = BM25Index.build(TEXTS, BM25Spec(stemmer=stemmer))
    stem = Stemmer.Stemmer("english") if stemmer == "english" else None
    ref = bm25s.BM25()
    ref.index(bm25s.tokenize(TEXTS, stopwords="en", stemmer=stem, show_progress=False), show_progress=False)
    for query in (["cat", "toys"], ["fox"], ["dogs", "chase"]):
        terms = stem.stemWords(query) if stem else query
        np.testing.assert_allclose(ix.scores(" ".join(query)), ref.get_scores(terms), rtol=1e-6)


def test_default_spec_stems_queries_and_chunks_alike() -> None:
    # Snowball stemming is the default (index.bm25_stemmer: english): "cats" matches "cat".
    assert BM25Spec().stemmer == "english"
    rows, scores = BM25Index.build(TEXTS).search("cat toys", 10)
    assert rows.tolist() == [3, 0, 1]  # rows 0 and 1 tie (one "cat", three terms): lower row first
    assert scores[0] > scores[1] == scores[2] > 0
    assert BM25Index.build(TEXTS).search("chasing dog", 10)[0].tolist() == [1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("aAbZ éÉßİ_1-'.\n\tThe and OF ")), max_size=40), max_size=4))
def test_tokenize_equals_bm25s(texts: list[str]) -> None:
    """ragline's tokenizer (no bm25s import at search time) splits exactly as bm25s.tokenize."""
    for stop in ("en", "none"):
        for stemmer in ("english", "none"):
            stem = Stemmer.Stemmer("english") if stemmer == "english" else None
            expected = [list(t) for t in bm25s.tokenize(texts, stopwords=None if stop == "none" else stop, stemmer=stem,
                                                        return_ids=False, show_progress=False)] if texts else []
            assert tokenize(texts, BM25Spec(stopwords=stop, stemmer=stemmer)) == expected


def test_search_order_filter_and_no_zero_scores() -> None:
    ix = BM25Index.build(TEXTS, UNSTEMMED)
    rows, scores = ix.search("cat toys", 10)
    assert rows.tolist() == [3, 0]  # unstemmed, "cats" is another token: row 1 shares no term
    assert scores[0] > scores[1] > 0
    rows, _ = ix.search("cat toys", 10, allowed=np.array([True, True, True, False, True]))
    assert rows.tolist() == [0]
    assert ix.search("unknown words only", 5)[0].tolist() == []
    assert ix.search("the and of", 5)[0].tolist() == []  # stopwords only


def test_write_read_round_trip(tmp_path: Path) -> None:
    ix = BM25Index.build(TEXTS)
    ix.write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [BM25_META_FILE, BM25_ARRAYS_FILE]
    back = BM25Index.read(tmp_path)
    assert back.vocab == ix.vocab and back.n_chunks == 5
    np.testing.assert_array_equal(back.scores("cat fox"), ix.scores("cat fox"))
    meta = json.loads((tmp_path / BM25_META_FILE).read_text())
    assert meta["spec"]["stemmer"] == "english" and meta["tokenizer"]["stemmer"] == "snowball:english"
    assert back.spec == ix.spec


def test_files_written_before_stemming_are_read_unstemmed(tmp_path: Path) -> None:
    # bm25.json of versions published before index.bm25_stemmer has no "stemmer": their
    # vocabulary is unstemmed, so queries must not be stemmed either.
    ix = BM25Index.build(TEXTS, UNSTEMMED)
    ix.write(tmp_path)
    meta = json.loads((tmp_path / BM25_META_FILE).read_text())
    del meta["spec"]["stemmer"]
    (tmp_path / BM25_META_FILE).write_text(json.dumps(meta))
    back = BM25Index.read(tmp_path)
    assert back.spec.stemmer == "none"
    assert back.search("cats", 5)[0].tolist() == [1]  # "cats" is in the vocabulary as is


def test_damaged_files_are_reported(tmp_path: Path) -> None:
    BM25Index.build(TEXTS).write(tmp_path)
    (tmp_path / BM25_META_FILE).write_text("{not json")
    with pytest.raises(OSError, match="BM25 files are damaged"):
        BM25Index.read(tmp_path)


def test_published_segment_carries_hashed_bm25_files(tmp_path: Path) -> None:
    root = tmp_path / "indexes"
    m = publish_paragraphs(root, "docs", {"a.md": [("Prime the pump with water.", None)],
                                          "b.md": [("Bake bread at 230 degrees.", None)]})
    (seg,) = m.segments
    assert BM25_ARRAYS_FILE in seg["files"] and BM25_META_FILE in seg["files"]
    reg = IndexRegistry(root)
    assert reg.verify("docs", m.version) == []
    meta = json.loads((reg.segment_dir("docs", seg["id"]) / BM25_META_FILE).read_text())
    assert meta["n_chunks"] == 2 and meta["spec"]["stopwords"] == "en"


def test_open_refuses_bm25_of_another_chunk_count(tmp_path: Path) -> None:
    BM25Index.build(["only one text"]).write(tmp_path)
    with pytest.raises(OSError, match="covers 1 chunks but chunks.parquet has 2"):
        BM25Index.open(tmp_path, 2)


def _write_format_3(ix: BM25Index, folder: Path, vocab: object = None) -> None:
    """``ix`` as ragline wrote it before format 4: the vocabulary in bm25.json, the arrays as held."""
    ix.write(folder)
    meta = json.loads((folder / BM25_META_FILE).read_text())
    meta.update(format=3, vocab=vocab if vocab is not None else sorted(ix.vocab, key=ix.vocab.__getitem__))
    (folder / BM25_META_FILE).write_text(json.dumps(meta))
    with open(folder / BM25_ARRAYS_FILE, "wb") as f:
        np.savez_compressed(f, tf=ix.tf, indices=ix.indices, indptr=ix.indptr, doc_len=ix.doc_len)


@pytest.mark.parametrize("fmt", [2, 3])
def test_files_of_formats_2_and_3_are_read(tmp_path: Path, fmt: int) -> None:
    """bm25.json format 2 stored the vocabulary as ``{token: row}``; format 3 as a list in row
    order; both with the arrays as the index holds them (format 4 moved the vocabulary into bm25.npz)."""
    ix = BM25Index.build(TEXTS)
    _write_format_3(ix, tmp_path, dict(ix.vocab) if fmt == 2 else None)
    if fmt == 2:
        meta = json.loads((tmp_path / BM25_META_FILE).read_text())
        (tmp_path / BM25_META_FILE).write_text(json.dumps({**meta, "format": 2}))
    back = BM25Index.read(tmp_path)
    assert back.vocab == ix.vocab
    np.testing.assert_array_equal(back.indptr, ix.indptr)
    np.testing.assert_array_equal(back.scores("cat toys"), ix.scores("cat toys"))


def test_format_4_holds_the_vocabulary_in_the_npz_in_narrow_types(tmp_path: Path) -> None:
    """Regression (refresh disk, issue 12): a refresh's small segment spent 29 of its 39 KB of
    BM25 files on the vocabulary as JSON and 4 or 8 bytes on each count, row and pointer. Format 4
    keeps the vocabulary in bm25.npz and every array in its narrowest type; read back, the index
    is the same (dtypes included) and scores the same, and it is smaller than format 3."""
    texts = [f"shared word{i % 97} term{i % 13} token{i} " * (1 + i % 4) for i in range(300)] + ["", "the and of"]
    ix = BM25Index.build(texts)
    for d in ("new", "old", "empty"):
        (tmp_path / d).mkdir()
    ix.write(tmp_path / "new")
    meta = json.loads((tmp_path / "new" / BM25_META_FILE).read_text())
    assert meta["format"] == 4 and "vocab" not in meta and meta["n_vocab"] == ix.n_vocab
    with np.load(tmp_path / "new" / BM25_ARRAYS_FILE) as z:
        assert {k: z[k].dtype for k in z} == {"tf": np.uint8, "indices": np.uint16, "postings": np.uint16,
                                              "doc_len": np.uint8, "vocab": np.uint8}
    back = BM25Index.read(tmp_path / "new")
    assert back.vocab == ix.vocab
    for name in ("tf", "indices", "indptr", "doc_len"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ix, name))
        assert getattr(back, name).dtype == getattr(ix, name).dtype
    for q in ("word5 term3", "token299", "nothing here"):
        np.testing.assert_array_equal(back.scores(q), ix.scores(q))
    _write_format_3(ix, tmp_path / "old")
    size = lambda d: sum(p.stat().st_size for p in (tmp_path / d).iterdir())  # noqa: E731
    assert size("new") < 0.75 * size("old")
    empty = BM25Index.build(["", "the"])  # no vocabulary at all
    empty.write(tmp_path / "empty")
    assert BM25Index.read(tmp_path / "empty").vocab == {} and BM25Index.read(tmp_path / "empty").n_chunks == 2


def test_files_of_the_score_matrix_format_are_refused(tmp_path: Path) -> None:
    """bm25.json format 1 (precomputed bm25s scores, before segments) cannot be rescored: refused by name."""
    BM25Index.build(TEXTS).write(tmp_path)
    meta = json.loads((tmp_path / BM25_META_FILE).read_text())
    meta["format"] = 1
    (tmp_path / BM25_META_FILE).write_text(json.dumps(meta))
    with pytest.raises(OSError, match="BM25 format 1, this ragline reads 2, 3, 4"):
        BM25Index.read(tmp_path)


def _dense_reference(texts: list[str], live: list[int], query: str, spec: BM25Spec) -> np.ndarray:
    """Lucene BM25 of every live row, scored row by row (every row of the corpus visited, as
    BM25Corpus did before it scored only the query terms' postings)."""
    from collections import Counter

    toks = tokenize([texts[i] for i in live], spec)
    counts = [Counter(t) for t in toks]
    dl = np.array([len(t) for t in toks], dtype=np.float64)
    n, avgdl = len(live), (dl.sum() / len(live) if dl.sum() > 0 else 1.0)
    out = np.zeros(n, dtype=np.float64)
    for term in tokenize([query], spec)[0]:
        tf = np.array([c[term] for c in counts], dtype=np.float64)
        df = int((tf > 0).sum())
        if not df:
            continue
        idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
        out += idf * (tf / (spec.k1 * (1 - spec.b + spec.b * dl / avgdl) + tf))
    return out.astype(np.float32)


@pytest.mark.parametrize("prefix,first,dense_rows", [(4096, 64, 65536), (2, 1, 65536), (5, 3, 0)])
def test_pruned_search_equals_scoring_every_row(prefix: int, first: int, dense_rows: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """BM25 search (threshold algorithm over impact-ordered rows) returns the top-k and scores of
    scoring every live row, over segments with tombstones, with an allowed mask, repeated terms
    and ties; also when the impact prefixes are short and extended over many rounds, and when
    frequent terms' counts are looked up in dense arrays. A budget covering every posting
    gives the same; a small one returns rows that match, with their exact scores."""
    import random

    import ragline.indexers.bm25 as bm25
    from ragline.indexers.bm25 import BM25Corpus

    monkeypatch.setattr(bm25, "IMPACT_PREFIX", prefix)
    monkeypatch.setattr(bm25, "FIRST_DEPTH", first)
    monkeypatch.setattr(bm25, "DENSE_TF_MIN_ROWS", dense_rows)

    rng = random.Random(7)
    words = ["cat", "dog", "fox", "mat", "toy", "sun", "rain", "tree", "leaf", "stone", "river", "bird"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 15))) for _ in range(300)]
    cuts = [0, 120, 200, 300]
    parts = [BM25Index.build(texts[a:b], UNSTEMMED) for a, b in zip(cuts, cuts[1:])]
    dead = set(rng.sample(range(300), 40))
    lives = [np.array([i - a for i in range(a, b) if i not in dead], dtype=np.int64) for a, b in zip(cuts, cuts[1:])]
    corpus = BM25Corpus(parts, lives)
    live = [i for i in range(300) if i not in dead]
    allowed = np.array([rng.random() < 0.7 for _ in live])
    for query in ("cat dog", "river river stone", "bird", "leaf tree sun rain fox", "unknown", "cat cat cat mat"):
        ref = _dense_reference(texts, live, query, UNSTEMMED)
        np.testing.assert_array_equal(corpus.scores(query), ref)
        for mask in (None, allowed):
            s = ref if mask is None else np.where(mask, ref, 0)
            for k in (1, 5, 10, 400):
                cand = np.flatnonzero(s > 0)
                want = cand[np.lexsort((cand, -s[cand]))][:k]
                got_rows, got_scores = corpus.search(query, k, mask)
                assert got_rows.tolist() == want.tolist()
                np.testing.assert_array_equal(got_scores, s[want])
                got_rows, got_scores = corpus.search(query, k, mask, budget=10**6)
                assert got_rows.tolist() == want.tolist()
                np.testing.assert_array_equal(got_scores, s[want])
                got_rows, got_scores = corpus.search(query, k, mask, budget=3)
                assert len(got_rows) <= k and (s[got_rows] > 0).all()
                np.testing.assert_array_equal(got_scores, s[got_rows])
                assert (np.diff(got_scores) <= 0).all()


def test_search_reads_a_frequent_terms_rows_only_to_the_depth_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threshold algorithm: a frequent term's rows are read in impact order only as deep as the
    top k needs (not its whole postings), and the result stays exact."""
    import ragline.indexers.bm25 as bm25
    from ragline.indexers.bm25 import BM25Corpus

    monkeypatch.setattr(bm25, "IMPACT_PREFIX", 8)
    monkeypatch.setattr(bm25, "FIRST_DEPTH", 4)
    texts = [f"common words row{i}" + (" zebra" if i in (5, 17, 40) else "") for i in range(200)]
    corpus = BM25Corpus([BM25Index.build(texts, UNSTEMMED)])
    ref = corpus.scores("zebra common")
    rows, scores = corpus.search("zebra common", 2)
    assert rows.tolist() == [5, 17]
    np.testing.assert_array_equal(scores, ref[[5, 17]])
    common = corpus._impact_cache["common"]
    assert not common.complete and len(common.rows) < 200
    # k larger than the rare term's rows: the frequent term is read deeper, and the result stays exact
    rows, scores = corpus.search("zebra common", 5)
    assert rows.tolist() == [5, 17, 40, 0, 1]
    np.testing.assert_array_equal(scores, ref[[5, 17, 40, 0, 1]])


def test_budgeted_search_recall_on_a_zipf_corpus() -> None:
    """The approximate search (``budget``) on a generated corpus of Zipf-distributed words
    (many rows share the frequent words, the hard case): recall@10 against exact BM25 is at
    least 0.95 at a budget of 1024 postings, every score returned is exact, and a budget
    covering every posting returns the exact top 10."""
    from ragline.indexers.bm25 import BM25Corpus

    rng = np.random.default_rng(5)
    n = 20_000
    ids = np.minimum(rng.zipf(1.3, size=(n, 16)), 5000) - 1
    texts = [" ".join(f"w{i}" for i in row) for row in ids]
    cuts = [0, 12_000, 17_000, n]
    parts = [BM25Index.build(texts[a:b], UNSTEMMED) for a, b in zip(cuts, cuts[1:])]
    corpus = BM25Corpus(parts)
    queries = [" ".join(f"w{i}" for i in ids[r][:4]) for r in rng.choice(n, 60, replace=False)]
    hits = []
    for q in queries:
        ref = corpus.scores(q)
        cand = np.flatnonzero(ref > 0)
        want = cand[np.lexsort((cand, -ref[cand]))][:10]
        rows, scores = corpus.search(q, 10, budget=1024)
        np.testing.assert_array_equal(scores, ref[rows])
        hits.append(len(set(rows.tolist()) & set(want.tolist())) / len(want))
        assert corpus.search(q, 10, budget=n * 16)[0].tolist() == want.tolist()
    assert np.mean(hits) >= 0.95


def test_concurrent_searches_with_evicting_caches_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Searches from several threads (as a served Retriever runs them) while the per-term caches
    evict each other give the single-threaded results."""
    from concurrent.futures import ThreadPoolExecutor

    import ragline.indexers.bm25 as bm25
    from ragline.indexers.bm25 import BM25Corpus

    monkeypatch.setattr(bm25, "IMPACT_PREFIX", 4)
    monkeypatch.setattr(bm25, "IMPACT_CACHE_ROWS", 40)
    monkeypatch.setattr(bm25, "DENSE_TF_MIN_ROWS", 0)
    monkeypatch.setattr(bm25, "DENSE_TF_CACHE_BYTES", 2000)
    rng = np.random.default_rng(9)
    texts = [" ".join(f"w{i}" for i in row) for row in np.minimum(rng.zipf(1.5, size=(800, 8)), 200)]
    queries = [f"w{a} w{b} w{c}" for a, b, c in rng.integers(1, 30, size=(60, 3))]
    want = [BM25Corpus([BM25Index.build(texts, UNSTEMMED)]).search(q, 7) for q in queries]
    corpus = BM25Corpus([BM25Index.build(texts, UNSTEMMED)])
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda q: corpus.search(q, 7), queries * 3))
    for (rows, scores), (wr, ws) in zip(got, want * 3):
        assert rows.tolist() == wr.tolist()
        np.testing.assert_array_equal(scores, ws)


def test_small_segments_arrays_are_deflated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zipfile

    import ragline.indexers.bm25 as bm25

    ix = BM25Index.build(TEXTS * 50)
    for limit, kind in ((10**6, zipfile.ZIP_DEFLATED), (10, zipfile.ZIP_STORED)):
        monkeypatch.setattr(bm25, "BM25_COMPRESS_MAX", limit)
        folder = tmp_path / str(limit)
        folder.mkdir()
        ix.write(folder)
        with zipfile.ZipFile(folder / BM25_ARRAYS_FILE) as z:
            assert {i.compress_type for i in z.infolist()} == {kind}
        back = BM25Index.read(folder)
        np.testing.assert_array_equal(back.scores("cat toys"), ix.scores("cat toys"))


def _corpus(n: int, seed: int = 3) -> list[str]:
    import random

    rng = random.Random(seed)
    words = ["cat", "cats", "dog", "the", "and", "fox", "mat"] + [f"w{i}x" for i in range(400)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 40))) for _ in range(n)]


@pytest.mark.parametrize("batch_rows", [1, 7, 64])
def test_batched_build_equals_one_batch(batch_rows: int) -> None:
    # the build reduces batch after batch; vocabulary numbering and every array must not depend on the batch size
    texts = _corpus(300)
    whole, part = BM25Index.build(texts, batch_rows=10**6), BM25Index.build(iter(texts), batch_rows=batch_rows)
    assert part.vocab == whole.vocab
    for name in ("tf", "indices", "indptr", "doc_len"):
        a, b = getattr(part, name), getattr(whole, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    np.testing.assert_array_equal(part.scores("cat dog"), whole.scores("cat dog"))


def test_build_memory_does_not_hold_every_token() -> None:
    # regression (issue 12, bounded memory): the build tokenized every text into one Python list of
    # token strings before counting; batched, Python memory stays near the arrays (12 bytes a term)
    import tracemalloc

    texts = _corpus(6000, seed=5)
    n_tokens = sum(len(t.split()) for t in texts)
    tracemalloc.start()
    try:
        BM25Index.build(texts, BM25Spec(stemmer="none"), batch_rows=256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * n_tokens, (peak, n_tokens)  # measured: 22 bytes a token batched, 131 before
