"""Table rows stay whole: no chunk boundary falls inside a row of a ``Table`` element that
fits the budget, for every strategy (the shared machinery in chunkers/base.py and segment.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragline.chunkers.base import ElementSpan, table_rows
from ragline.chunkers.registry import get_chunker
from ragline.chunkers.segment import KeepTogether
from ragline.chunkers.tokenizer import TokenIndex
from tests.chunkers.strategies import PROPERTY_SETTINGS, documents, fake_embed, small_blocks
from tests.invariants import assert_chunk_invariants

ALL = ["token", "recursive", "sentence", "structure", "semantic"]

# One row per line, as the loaders emit CSV/TSV/XLSX tables; rows of 10-16 tokens.
CSV = "\n".join([
    "year,region,product,units sold,revenue",
    "2020,north america,garden hoses,1200,15300",
    "2021,south america,watering cans,900,8100",
    "2022,western europe,rain barrels,450,22500",
    "2023,eastern europe,sprinklers,3100,40300",
])
INTRO = "Sales by region and year are listed below for every product line we sell."


def _document(table_type: str) -> tuple[str, list[ElementSpan]]:
    text = INTRO + "\n\n" + CSV + "\n\nEnd of report."
    t0 = len(INTRO) + 2
    return text, [
        ElementSpan("NarrativeText", 0, len(INTRO)),
        ElementSpan(table_type, t0, t0 + len(CSV)),
        ElementSpan("NarrativeText", t0 + len(CSV) + 2, len(text)),
    ]


def _chunker(strategy: str, max_tokens: int, **options: int):
    if strategy == "structure":
        options.setdefault("min_tokens", 0)
    return get_chunker(strategy, embed_fn=fake_embed, max_tokens=max_tokens, **options)


def _cuts_inside_rows(text: str, chunks: list, rows: list[tuple[int, int]]) -> list[int]:
    return [p for c in chunks for p in (c.char_start, c.char_end) for s, e in rows if s < p < e]


def test_table_rows_are_the_trimmed_lines_of_table_elements() -> None:
    text, elements = _document("Table")
    rows = table_rows(text, elements)
    assert [text[s:e] for s, e in rows] == CSV.split("\n")
    assert table_rows(text, None) == [] and table_rows(*_document("NarrativeText")) == []


def test_table_rows_clip_overlapping_elements_like_the_structure_chunker() -> None:
    text = "intro a,b\n  c,d  \n\ne,f"
    elements = [ElementSpan("NarrativeText", 0, 6), ElementSpan("Table", 4, 17), ElementSpan("Table", 19, 22)]
    assert [text[s:e] for s, e in table_rows(text, elements)] == ["a,b", "c,d", "e,f"]


@pytest.mark.parametrize("strategy", ALL)
@pytest.mark.parametrize("max_tokens", [16, 24, 40])
def test_no_boundary_inside_a_row_of_a_table(strategy: str, max_tokens: int) -> None:
    chunker = _chunker(strategy, max_tokens)
    text, elements = _document("Table")
    chunks = chunker.chunk(text, doc_id="d", elements=elements)
    assert_chunk_invariants(text, chunks, max_tokens, chunker=chunker, elements=elements)
    assert _cuts_inside_rows(text, chunks, table_rows(text, elements)) == []


@pytest.mark.parametrize("overlap", [0, 6])
def test_the_same_lines_as_plain_text_are_cut_inside(overlap: int) -> None:
    # Without the Table type the rows are ordinary words and token windows cut them (so
    # the test above can fail); with it, windows hold whole rows.
    text, elements = _document("NarrativeText")
    rows = table_rows(*_document("Table"))
    chunks = _chunker("token", 24, overlap_tokens=overlap).chunk(text, doc_id="d", elements=elements)
    assert _cuts_inside_rows(text, chunks, rows) != []
    text, elements = _document("Table")
    chunks = _chunker("token", 24, overlap_tokens=overlap).chunk(text, doc_id="d", elements=elements)
    assert [c.text for c in chunks][2:5] == CSV.split("\n")[1:4]  # 14 + 14 tokens do not fit in 24
    assert chunks[-1].text == CSV.split("\n")[4] + "\n\nEnd of report."


def test_a_row_over_the_budget_is_split_like_any_text() -> None:
    text, elements = _document("Table")
    chunker = get_chunker("token", max_tokens=8)  # every row is 10-16 tokens
    chunks = chunker.chunk(text, doc_id="d", elements=elements)
    assert_chunk_invariants(text, chunks, 8, chunker=chunker, elements=elements)
    assert _cuts_inside_rows(text, chunks, table_rows(text, elements)) != []


def test_keep_together_units_merge_a_row_and_split_words_at_its_edges() -> None:
    text = "ab cd,ef gh"
    index = TokenIndex(text)
    keep = KeepTogether([(3, 8)], index, 10)  # "cd,ef"
    assert [text[s:e] for s, e in zip(*keep.units(text, 0, len(text)))] == ["ab", "cd,ef", "gh"]
    keep = KeepTogether([(0, 5)], index, 10)  # "ab cd" of "ab cd,ef"
    assert [text[s:e] for s, e in zip(*keep.units(text, 0, len(text)))] == ["ab cd", ",ef", "gh"]
    assert keep.allowed([1, 2, 5, 6]) == [5, 6]
    assert keep.merge([(0, 2), (3, 8), (9, 11)]) == [(0, 8), (9, 11)]
    assert not KeepTogether([(0, 5)], index, 1)  # over the budget: not kept


_WORDS = st.sampled_from(["north", "2020", "1,200", "garden hoses", "naïve café", "日本", "😀", "x" * 30, "Dr.", "a. b"])


@st.composite
def documents_with_tables(draw: st.DrawFn) -> tuple[str, list[ElementSpan]]:
    """Paragraphs (arbitrary text) and tables (rows of cells, one row per line) as elements."""
    text, elements = "", []
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            sep = draw(st.sampled_from([",", "\t", " | ", ";"]))
            rows = draw(st.lists(st.lists(_WORDS, min_size=1, max_size=6), min_size=1, max_size=6))
            body = "\n".join(sep.join(r) for r in rows)
            kind = "Table"
        else:
            body = draw(documents(max_fragments=30))
            kind = draw(st.sampled_from(["NarrativeText", "Title", "ListItem"]))
        if text:
            text += "\n\n"
        elements.append(ElementSpan(kind, len(text), len(text) + len(body), 1, ("S",)))
        text += body
    return text, elements


@PROPERTY_SETTINGS
@given(documents_with_tables(), st.sampled_from(ALL), st.integers(1, 40), st.data())
def test_rows_that_fit_are_never_cut(
    doc: tuple[str, list[ElementSpan]], strategy: str, max_tokens: int, data: st.DataObject
) -> None:
    text, elements = doc
    options: dict[str, int] = {"max_tokens": max_tokens}
    if strategy in ("token", "recursive"):
        options["overlap_tokens"] = data.draw(st.integers(0, max_tokens - 1))
    if strategy == "sentence":
        options["overlap_sentences"] = data.draw(st.integers(0, 2))
    chunker = _chunker(strategy, **options)
    chunks = chunker.chunk(text, doc_id="doc", elements=elements)
    assert_chunk_invariants(text, chunks, max_tokens, chunker=chunker, elements=elements)


@PROPERTY_SETTINGS
@given(documents_with_tables(), st.sampled_from(ALL), st.integers(1, 40), st.sampled_from([1, 4, 9]), st.data())
def test_the_block_size_does_not_change_the_chunks(
    doc: tuple[str, list[ElementSpan]], strategy: str, max_tokens: int, block: int, data: st.DataObject
) -> None:
    # Issue 11: token windows read words a block of characters at a time and token ends are
    # built a block of tokens at a time (bounded memory on a 200 MB text). A block must end
    # where no unit (word, kept row) crosses it, so tiny blocks give exactly the chunks of
    # one block.
    text, elements = doc
    options: dict[str, int] = {"max_tokens": max_tokens}
    if strategy in ("token", "recursive"):
        options["overlap_tokens"] = data.draw(st.integers(0, max_tokens - 1))
    chunker = _chunker(strategy, **options)
    expected = chunker.chunk(text, doc_id="d", elements=elements)
    with small_blocks(block, block):
        assert chunker.chunk(text, doc_id="d", elements=elements) == expected
