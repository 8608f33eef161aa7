"""StructureChunker: sections, titles and tables from the loader's elements."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragline.chunkers.base import ElementSpan
from ragline.chunkers.structure import StructureChunker, normalize_elements, paragraph_elements
from ragline.chunkers.tokenizer import TokenIndex
from tests.chunkers.strategies import PROPERTY_SETTINGS, documents, max_tokens_values, whitespace_only
from tests.invariants import assert_chunk_invariants


def _document(parts: list[tuple[str, str, tuple[str, ...], int]]) -> tuple[str, list[ElementSpan]]:
    """Join (type, text, section_path, page) parts with blank lines, as the loader does."""
    text, elements = "", []
    for kind, body, section, page in parts:
        if text:
            text += "\n\n"
        elements.append(ElementSpan(kind, len(text), len(text) + len(body), page, section))
        text += body
    return text, elements


TABLE = "| year | sales |\n| 2020 | 10 |\n| 2021 | 12 |"  # 20 tokens
TEXT, ELEMENTS = _document(
    [
        ("Title", "Intro", ("Intro",), 1),
        ("NarrativeText", "Cats purr when they are happy.", ("Intro",), 1),
        ("Title", "Data", ("Data",), 2),
        ("Table", TABLE, ("Data",), 2),
        ("NarrativeText", "Sales grew.", ("Data",), 2),
        ("Title", "Outlook", ("Outlook",), 3),
        ("ListItem", "- more cats", ("Outlook",), 3),
    ]
)


Row = tuple[str, int, int | None, tuple[str, ...]]  # text, token_count, page, section_path


def _out(text: str, elements: list[ElementSpan] | None, **config: object) -> list[Row]:
    chunker = StructureChunker(**config)  # type: ignore[arg-type]
    chunks = chunker.chunk(text, doc_id="d", elements=elements)
    assert_chunk_invariants(text, chunks, chunker.config.max_tokens, chunker=chunker, elements=elements)
    return [(c.text, c.token_count, c.page, c.section_path) for c in chunks]


def test_one_chunk_per_section_with_page_and_section_of_first_element() -> None:
    assert _out(TEXT, ELEMENTS, max_tokens=40, min_tokens=0) == [
        ("Intro\n\nCats purr when they are happy.", 10, 1, ("Intro",)),
        ("Data\n\n" + TABLE + "\n\nSales grew.", 25, 2, ("Data",)),
        ("Outlook\n\n- more cats", 6, 3, ("Outlook",)),
    ]


def test_small_sections_merge_up_to_min_tokens() -> None:
    # "Intro" (10 tokens) is under min_tokens, so the "Data" section joins it.
    assert _out(TEXT, ELEMENTS, max_tokens=40, min_tokens=20) == [
        ("Intro\n\nCats purr when they are happy.\n\nData\n\n" + TABLE + "\n\nSales grew.", 36, 1, ("Intro",)),
        ("Outlook\n\n- more cats", 6, 3, ("Outlook",)),
    ]
    assert [t for t, *_ in _out(TEXT, ELEMENTS, max_tokens=100, min_tokens=100)] == [TEXT]


def test_a_table_is_kept_whole_when_it_fits() -> None:
    # The table (20 tokens) does not fit after its heading under 20 tokens: it moves whole.
    out = _out(TEXT, ELEMENTS, max_tokens=20, min_tokens=0)
    assert (TABLE, 20, 2, ("Data",)) in out
    assert ("Data", 1, 2, ("Data",)) in out


def test_a_table_over_the_budget_is_split_into_rows() -> None:
    assert _out(TEXT, ELEMENTS, max_tokens=12, min_tokens=0) == [
        ("Intro\n\nCats purr when they are happy.", 10, 1, ("Intro",)),
        ("Data", 1, 2, ("Data",)),
        ("| year | sales |\n| 2020 | 10 |", 12, 2, ("Data",)),
        ("| 2021 | 12 |", 7, 2, ("Data",)),
        ("Sales grew.", 2, 2, ("Data",)),
        ("Outlook\n\n- more cats", 6, 3, ("Outlook",)),
    ]


def test_a_heading_joins_the_first_piece_of_a_split_element() -> None:
    text, elements = _document([("Title", "Data", ("Data",), 1), ("Table", TABLE, ("Data",), 1)])
    assert _out(text, elements, max_tokens=15, min_tokens=0) == [
        ("Data\n\n| year | sales |\n| 2020 | 10 |", 14, 1, ("Data",)),
        ("| 2021 | 12 |", 8, 1, ("Data",)),  # at the end of the text " |" is its own token
    ]


def test_section_path_change_without_title_closes_the_chunk() -> None:
    text, elements = _document(
        [("NarrativeText", "Alpha text here.", ("A",), 1), ("NarrativeText", "Beta text here.", ("B",), 1)]
    )
    assert [s for *_, s in _out(text, elements, max_tokens=50, min_tokens=0)] == [("A",), ("B",)]
    assert [s for *_, s in _out(text, elements, max_tokens=50, min_tokens=30)] == [("A",)]


def test_text_outside_every_element_is_kept() -> None:
    text = "Intro\n\nnot in any element\n\nBody text."
    elements = [ElementSpan("Title", 0, 5, 1, ("Intro",)), ElementSpan("NarrativeText", 27, 37, 1, ("Intro",))]
    units = normalize_elements(text, elements)
    assert [(u.type, text[u.char_start : u.char_end], u.section_path) for u in units] == [
        ("Title", "Intro", ("Intro",)),
        ("UncategorizedText", "not in any element", ("Intro",)),
        ("NarrativeText", "Body text.", ("Intro",)),
    ]
    assert [t for t, *_ in _out(text, elements, max_tokens=50, min_tokens=0)] == [text]


def test_overlapping_elements_are_clipped() -> None:
    text = "one two three"
    units = normalize_elements(text, [ElementSpan("NarrativeText", 0, 7), ElementSpan("NarrativeText", 4, 13)])
    assert [text[u.char_start : u.char_end] for u in units] == ["one two", "three"]


def test_element_outside_the_text_is_an_error() -> None:
    with pytest.raises(ValueError, match="outside the text"):
        StructureChunker().chunk("short", elements=[ElementSpan("NarrativeText", 0, 99)])


def test_without_elements_paragraphs_and_markdown_headings_are_used() -> None:
    text = "# Intro\n\nShort para.\n\n# Two\n\nPara A is here.\n\nPara B."
    assert [(e.type, text[e.char_start : e.char_end]) for e in paragraph_elements(text)] == [
        ("Title", "# Intro"),
        ("NarrativeText", "Short para."),
        ("Title", "# Two"),
        ("NarrativeText", "Para A is here."),
        ("NarrativeText", "Para B."),
    ]
    assert [t for t, *_ in _out(text, None, max_tokens=20, min_tokens=0)] == [
        "# Intro\n\nShort para.",
        "# Two\n\nPara A is here.\n\nPara B.",
    ]


@st.composite
def documents_with_elements(draw: st.DrawFn) -> tuple[str, list[ElementSpan]]:
    """A document cut into random elements (random types, sections, pages), some gaps left."""
    text = draw(documents())
    cuts = sorted(set(draw(st.lists(st.integers(0, len(text)), max_size=12))) | {0, len(text)})
    elements = []
    for a, b in zip(cuts, cuts[1:]):
        if draw(st.booleans()) or not draw(st.booleans()):  # about 3 in 4 segments are elements
            kind = draw(st.sampled_from(["Title", "NarrativeText", "ListItem", "Table"]))
            section = draw(st.sampled_from([(), ("A",), ("A", "x"), ("B",)]))
            elements.append(ElementSpan(kind, a, b, draw(st.integers(1, 3)), section))
    return text, elements


@PROPERTY_SETTINGS
@given(documents_with_elements(), max_tokens_values, st.integers(0, 48))
def test_invariants_on_arbitrary_elements(doc: tuple[str, list[ElementSpan]], max_tokens: int, min_tokens: int) -> None:
    text, elements = doc
    chunker = StructureChunker(max_tokens=max_tokens, min_tokens=min(min_tokens, max_tokens))
    chunks = chunker.chunk(text, doc_id="doc", elements=elements)
    assert_chunk_invariants(text, chunks, max_tokens, chunker=chunker, elements=elements)


@PROPERTY_SETTINGS
@given(documents_with_elements(), max_tokens_values)
def test_sections_stay_apart_and_fitting_elements_stay_whole(
    doc: tuple[str, list[ElementSpan]], max_tokens: int
) -> None:
    text, elements = doc
    units = normalize_elements(text, elements)
    index = TokenIndex(text)
    chunks = StructureChunker(max_tokens=max_tokens, min_tokens=0).chunk(text, elements=elements)
    for u in units:  # an element that fits the budget lies inside one chunk
        if index.count(u.char_start, u.char_end) <= max_tokens:
            assert any(c.char_start <= u.char_start and u.char_end <= c.char_end for c in chunks), u
    for c in chunks:  # titles lead a chunk; the body of a chunk is one section
        inside = [u for u in units if c.char_start <= u.char_start and u.char_end <= c.char_end]
        body = [u for u in inside if u.type != "Title"]
        if body:
            first_body = inside.index(body[0])
            assert all(u.type != "Title" for u in inside[first_body:])
            assert len({u.section_path for u in body}) == 1


@PROPERTY_SETTINGS
@given(whitespace_only)
def test_whitespace_only_gives_no_chunks(text: str) -> None:
    assert StructureChunker(max_tokens=4, min_tokens=0).chunk(text) == []
    assert StructureChunker(max_tokens=4, min_tokens=0).chunk(text, elements=[ElementSpan("Title", 0, len(text))]) == []
