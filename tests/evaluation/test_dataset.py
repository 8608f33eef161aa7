"""Loading span-labelled datasets: CSV and JSONL, filters, limits, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ragline.chunkers.base import ConfigError
from ragline.pipelines.evaluate_chunking import DatasetError, corpus_documents, corpus_elements, load_dataset


def test_csv_dataset_loads_with_offsets_into_unchanged_text(mini_dataset: Path) -> None:
    ds = load_dataset(mini_dataset)
    assert list(ds.corpora) == ["state_of_the_union", "wikitexts"]
    assert len(ds.questions) == 37
    for cid, text in ds.corpora.items():
        assert text == (mini_dataset / "corpora" / f"{cid}.md").read_bytes().decode("utf-8")
    for q in ds.questions:
        for r in q.references:
            assert ds.corpora[q.corpus_id][r.start:r.end] == r.content


def test_jsonl_dataset_equals_csv(mini_dataset: Path, tmp_path: Path) -> None:
    shutil.copytree(mini_dataset / "corpora", tmp_path / "corpora")
    shutil.copy(mini_dataset / "questions.jsonl", tmp_path / "questions.jsonl")
    assert load_dataset(tmp_path).questions == load_dataset(mini_dataset).questions


def test_limit_takes_questions_in_turn_from_each_corpus(mini_dataset: Path) -> None:
    full = load_dataset(mini_dataset).questions
    sotu = [q for q in full if q.corpus_id == "state_of_the_union"]
    wiki = [q for q in full if q.corpus_id == "wikitexts"]
    assert load_dataset(mini_dataset, limit_questions=5).questions == (sotu[0], wiki[0], sotu[1], wiki[1], sotu[2])


def test_corpora_filter_keeps_only_those_corpora(mini_dataset: Path) -> None:
    ds = load_dataset(mini_dataset, corpora=["wikitexts"])
    assert list(ds.corpora) == ["wikitexts"]
    assert {q.corpus_id for q in ds.questions} == {"wikitexts"}
    assert len(ds.questions) == 17


def test_unknown_corpus_is_a_config_error_naming_the_allowed_ids(mini_dataset: Path) -> None:
    with pytest.raises(ConfigError, match=r"eval.corpora.*nope.*allowed: state_of_the_union, wikitexts"):
        load_dataset(mini_dataset, corpora=["nope"])


def _copy_with_questions(src: Path, dst: Path, rows: list[dict]) -> Path:
    shutil.copytree(src / "corpora", dst / "corpora")
    (dst / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dst


@pytest.mark.parametrize("ref, message", [
    ({"content": "Good evening", "start_index": 1, "end_index": 13}, r"differs from the reference content"),
    ({"content": "x", "start_index": 0, "end_index": 10**9}, r"outside corpus 'state_of_the_union'"),
    ({"content": "x", "start_index": "a", "end_index": 3}, r"integer start_index and end_index"),
])
def test_bad_references_name_the_line(mini_dataset: Path, tmp_path: Path, ref: dict, message: str) -> None:
    _copy_with_questions(mini_dataset, tmp_path, [{"question": "q", "corpus_id": "state_of_the_union", "references": [ref]}])
    with pytest.raises(DatasetError, match=r"questions.jsonl:1: .*" + message):
        load_dataset(tmp_path)


def test_missing_parts_are_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no corpora/ folder"):
        load_dataset(tmp_path)
    (tmp_path / "corpora").mkdir()
    (tmp_path / "corpora" / "a.md").write_text("some text\n")
    with pytest.raises(DatasetError, match="no questions.csv or questions.jsonl"):
        load_dataset(tmp_path)


def test_corpus_elements_find_wikitext_sections_with_exact_offsets() -> None:
    text = " = Game = \n Intro line .\n\n = = Plot = = \n The plot .\n = = = Cast = = = \n Someone .\n = Other = \n Body\n"
    els = corpus_elements(text)
    assert [(e.type, text[e.char_start:e.char_end], e.section_path) for e in els] == [
        ("Title", "= Game =", ("Game",)),
        ("NarrativeText", "Intro line .", ("Game",)),
        ("Title", "= = Plot = =", ("Game", "Plot")),
        ("NarrativeText", "The plot .", ("Game", "Plot")),
        ("Title", "= = = Cast = = =", ("Game", "Plot", "Cast")),
        ("NarrativeText", "Someone .", ("Game", "Plot", "Cast")),
        ("Title", "= Other =", ("Other",)),
        ("NarrativeText", "Body", ("Other",)),
    ]


def test_corpus_documents_keep_text_and_use_corpus_id(mini_dataset: Path) -> None:
    ds = load_dataset(mini_dataset)
    docs = corpus_documents(ds)
    assert [(d.uri, d.title) for d in docs] == [("state_of_the_union", "state of the union"), ("wikitexts", "wikitexts")]
    assert all(d.text == ds.corpora[d.uri] for d in docs)
