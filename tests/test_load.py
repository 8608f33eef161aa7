"""Stage load: discovery, element offsets, and quarantine of every kind of bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from ragline.pipelines.config import LoadConfig
from ragline.pipelines.errors import FailureRateExceeded
from ragline.pipelines.load import (
    Document,
    QuarantineRecord,
    SourceFile,
    check_failure_rate,
    discover_files,
    doc_id_for,
    documents_from_table,
    documents_to_table,
    load_document,
    load_documents,
)
from tests.badfiles import EXPECTED, make_bad_files
from tests.conftest import SAMPLE

CFG = LoadConfig(workers=1)


@pytest.fixture(scope="module")
def sample_docs() -> list[Document]:
    docs, bad = load_documents(discover_files([SAMPLE]), CFG)
    assert bad == []
    return docs


def test_discover_include_exclude(tmp_path: Path) -> None:
    for rel in ["a.md", "sub/b.md", "sub/c.txt", ".hidden.md", "sub/.git/d.md"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    uris = [f.uri for f in discover_files([tmp_path], include=["**/*.md"])]
    assert uris == [(tmp_path / "a.md").as_posix(), (tmp_path / "sub/b.md").as_posix()]
    uris = [f.uri for f in discover_files([tmp_path], exclude=["sub/*"])]
    assert uris == [(tmp_path / "a.md").as_posix()]


def test_discover_missing_source_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        discover_files([tmp_path / "nope"])


def test_every_sample_format_loads_with_elements(sample_docs: list[Document]) -> None:
    by_suffix = {Path(d.uri).suffix for d in sample_docs}
    assert by_suffix == {".pdf", ".html", ".md", ".docx", ".pptx", ".txt", ".csv", ".eml"}
    assert len(sample_docs) == 12
    for d in sample_docs:
        assert d.doc_id == doc_id_for(d.uri)
        assert len(d.sha256) == 64
        assert d.elements, d.uri
        # element spans are exact slices, in order, separated by the blank-line joiner
        prev_end = None
        for e in d.elements:
            piece = d.text[e.char_start : e.char_end]
            assert piece and piece == piece.strip(), (d.uri, e)
            if prev_end is not None:
                assert d.text[prev_end : e.char_start] == "\n\n"
            prev_end = e.char_end
        assert prev_end == len(d.text)


def test_text_pdf_yields_elements_with_pages(sample_docs: list[Document]) -> None:
    """Regression: offline, unstructured's spaCy download failure made PDF partition return
    zero elements silently. The packaged-model hook must keep PDF text extraction working."""
    pdfs = [d for d in sample_docs if d.uri.endswith(".pdf")]
    assert len(pdfs) == 2
    for d in pdfs:
        assert len(d.elements) >= 5
        assert {e.page for e in d.elements} >= {1}
    varroa = next(d for d in pdfs if "varroa" in d.uri)
    assert max(e.page for e in varroa.elements) == 2
    assert "alcohol wash" in varroa.text.lower()


def test_section_paths_follow_headings(sample_docs: list[Document]) -> None:
    html = next(d for d in sample_docs if d.uri.endswith("colony-roles.html"))
    assert html.title == "Roles in the Honey Bee Colony"
    paths = {e.section_path for e in html.elements}
    assert ("Roles in the Honey Bee Colony", "Development times") in paths
    assert all(p[0] == "Roles in the Honey Bee Colony" for p in paths if p)


def test_documents_table_round_trip(sample_docs: list[Document]) -> None:
    assert documents_from_table(documents_to_table(sample_docs)) == sample_docs


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_file_is_quarantined_with_named_reason(tmp_path: Path, name: str) -> None:
    expected = make_bad_files(tmp_path)[name]
    path = tmp_path / name
    result = load_document(SourceFile(path, path.as_posix()), CFG)
    assert isinstance(result, QuarantineRecord), result
    assert result.stage == "load"
    assert result.path == path.as_posix()
    assert name in result.message
    if expected is None:
        assert result.error_type
    else:
        assert result.error_type == expected


def test_file_over_max_size_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("bees " * 5000)  # 25 000 bytes
    small = LoadConfig(workers=1, max_file_mb=0.01)
    result = load_document(SourceFile(path, path.as_posix()), small)
    assert isinstance(result, QuarantineRecord)
    assert result.error_type == "FileTooLarge"
    assert "load.max_file_mb=0.01" in result.message
    assert isinstance(load_document(SourceFile(path, path.as_posix()), CFG), Document)


def test_zero_elements_is_a_failure_not_a_silent_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ragline.pipelines.load as load

    monkeypatch.setattr(load, "_partition", lambda *a, **k: [])
    path = tmp_path / "a.md"
    path.write_text("# Title\n\ntext")
    result = load_document(SourceFile(path, path.as_posix()), CFG)
    assert isinstance(result, QuarantineRecord) and result.error_type == "NoElements"


def test_bad_files_do_not_stop_the_others(tmp_path: Path) -> None:
    make_bad_files(tmp_path / "bad")
    (tmp_path / "good.md").write_text("# Good\n\nA fine document about drones.\n")
    docs, bad = load_documents(discover_files([tmp_path]), CFG)
    assert [Path(d.uri).name for d in docs] == ["good.md"]
    assert sorted(Path(q.path).name for q in bad) == sorted(EXPECTED)


def test_failure_rate_threshold() -> None:
    bad = [QuarantineRecord(f"f{i}", "load", "EmptyFile", "m") for i in range(3)]
    check_failure_rate(10, bad, 0.3)  # 30 % is allowed
    with pytest.raises(FailureRateExceeded, match=r"3 of 10 files.*max_failed_fraction=0.2"):
        check_failure_rate(10, bad, 0.2)


PAGE = """<!DOCTYPE html><html><head><title>Hive tools</title></head><body>
<header><a href="/">Site home</a> | <a href="/shop">Shop</a></header>
<div class="related" role="navigation" aria-label="related navigation"><h3>Navigation</h3>
<ul><li class="right"><a href="genindex.html">index</a></li><li class="right"><a href="prev.html">previous</a> |</li></ul></div>
<div class="sphinxsidebar" role="navigation"><h3>Table of Contents</h3><ul><li>Lifting frames</li><li>Scraping</li></ul>
<div role="search"><h3>Quick search</h3><p>Type a word and press Enter.</p></div></div>
<div class="body" role="main"><article><header><h1>The hive tool</h1></header>
<p>A hive tool is a flat steel lever used to pry apart frames glued with propolis.</p>
<aside><p>Tip: keep a spare hive tool in the smoker box.</p></aside>
</article></div>
<footer><p>Copyright 2026 Example Apiary. All rights reserved.</p></footer>
</body></html>"""


def test_html_boilerplate_is_dropped_before_partitioning(tmp_path: Path) -> None:
    (tmp_path / "tools.html").write_text(PAGE, encoding="utf-8")
    [src] = discover_files([tmp_path])
    doc = load_document(src, CFG)
    assert isinstance(doc, Document), doc
    assert "flat steel lever" in doc.text and "The hive tool" in doc.text  # an article's own header stays
    assert "spare hive tool" in doc.text  # <aside> is content unless a selector says otherwise
    noise = ("Navigation", "previous", "Table of Contents", "Scraping", "Quick search", "Type a word")
    assert [n for n in noise if n in doc.text] == []
    kept = load_document(src, LoadConfig(workers=1, html_drop=[]))  # what unstructured alone keeps
    assert [n for n in noise if n not in kept.text] == []
    custom = load_document(src, LoadConfig(workers=1, html_drop=["aside"]))
    assert "spare hive tool" not in custom.text and "Table of Contents" in custom.text


def test_html_drop_selector_that_does_not_parse_is_named() -> None:
    from ragline.chunkers.base import ConfigError
    from ragline.pipelines.config import Params

    data = Params().to_dict()
    data["load"]["html_drop"] = ["nav", "div[role="]
    with pytest.raises(ConfigError, match=r"load\.html_drop.*div\[role="):
        Params.from_dict(data, source="params.yaml")


# ---------------------------------------------------------------- parsing costs what it must (issue 16)
def _spans(doc: Document) -> list[tuple]:
    return [(e.char_start, e.char_end, e.page, e.section_path, e.type in ("Title", "Table")) for e in doc.elements]


def test_element_types_markup_and_nlp_give_the_same_documents_and_chunks(sample_docs: list[Document]) -> None:
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.config import ChunkConfig

    files = [f for f in discover_files([SAMPLE]) if f.path.suffix in (".md", ".html")]
    assert len(files) >= 2
    fast = [load_document(f, CFG) for f in files]
    nlp = [load_document(f, LoadConfig(workers=1, element_types="nlp", languages=["auto"])) for f in files]
    for a, b in zip(fast, nlp):
        assert isinstance(a, Document) and isinstance(b, Document)
        assert (a.text, a.title, _spans(a)) == (b.text, b.title, _spans(b))
        assert {e.type for e in a.elements} <= {"Title", "Table", "ListItem", "NarrativeText", "UncategorizedText"}
    for strategy in ("token", "structure"):
        cfg = ChunkConfig(strategy=strategy)
        assert chunk_documents(fast, cfg)[0].equals(chunk_documents(nlp, cfg)[0])


def test_element_types_markup_types_paragraphs_without_nlp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unstructured.nlp.tokenize as tok

    p = tmp_path / "notes.md"
    p.write_text("# Tools\n\nHive scales\n\n- a smoker\n- a veil\n\n2026\n\nThe smoker calms the bees.\n")
    [src] = discover_files([tmp_path])
    nlp = load_document(src, LoadConfig(workers=1, element_types="nlp"))
    assert [(e.type, nlp.text[e.char_start:e.char_end]) for e in nlp.elements][1] == ("UncategorizedText", "Hive scales")

    def no_spacy(*a, **k):
        raise AssertionError("spaCy called with element_types: markup")

    monkeypatch.setattr(tok, "sent_tokenize", no_spacy)
    monkeypatch.setattr(tok, "_get_nlp", no_spacy)
    doc = load_document(src, CFG)
    assert isinstance(doc, Document), doc
    assert [(e.type, doc.text[e.char_start:e.char_end]) for e in doc.elements] == [
        ("Title", "Tools"), ("NarrativeText", "Hive scales"), ("ListItem", "a smoker"), ("ListItem", "a veil"),
        ("UncategorizedText", "2026"), ("NarrativeText", "The smoker calms the bees."),
    ]
    from unstructured.partition.html import parser

    assert parser.derive_element_type_from_text.__module__ == parser.__name__  # the hook was restored


def test_plain_text_markup_gives_unstructureds_titles_without_nlp_on_long_paragraphs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """element_types: markup types .txt paragraphs by load._plain_element: the same Titles (so the
    same section paths and chunks) as unstructured's NLP path, with spaCy run on short paragraphs only."""
    import unstructured.partition.text_type as tt

    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.config import ChunkConfig

    mini = Path(__file__).resolve().parent / "evaluation" / "data" / "mini-chunking-eval" / "corpora"
    for md in sorted(mini.glob("*.md")):  # Markdown read as plain text: '#' lines, short lines, long prose
        (tmp_path / f"{md.stem}.txt").write_text(md.read_text())
    (tmp_path / "notes.txt").write_text(
        "HIVE NOTES\n\nInspection Log 2026\n\nThe colony was calm and the queen was seen on frame four.\n\n"
        "- a smoker\n- a veil\n\n2026\n\nQueen Rearing\n\nGrafting larvae younger than a day gives better queens. "
        "It needs a steady hand, a warm room and good light.\n\nbees@example.org\n\nWINTER. IS. COMING.\n")
    files = sorted(discover_files([tmp_path, SAMPLE]), key=lambda f: f.uri)
    files = [f for f in files if f.path.suffix == ".txt"]
    assert len(files) >= 5
    nlp = [load_document(f, LoadConfig(workers=1, element_types="nlp")) for f in files]
    spacy_words: list[int] = []
    real = tt.sent_tokenize
    monkeypatch.setattr(tt, "sent_tokenize", lambda text, *a, **k: spacy_words.append(len(text.split(" "))) or real(text, *a, **k))
    fast = [load_document(f, CFG) for f in files]
    titles = 0
    for a, b in zip(fast, nlp):
        assert isinstance(a, Document) and isinstance(b, Document), (a, b)
        assert (a.text, a.title, _spans(a)) == (b.text, b.title, _spans(b)), a.uri
        types = [(e.type if e.type in ("Title", "ListItem") else "-") for e in a.elements]
        assert types == [(e.type if e.type in ("Title", "ListItem") else "-") for e in b.elements], a.uri
        titles += types.count("Title")
    assert titles >= 10
    assert spacy_words and max(spacy_words) <= 12  # only paragraphs that could be titles reach spaCy
    for strategy in ("token", "structure"):
        cfg = ChunkConfig(strategy=strategy)
        assert chunk_documents(fast, cfg)[0].equals(chunk_documents(nlp, cfg)[0])
    from unstructured.partition import text as ut

    assert ut.element_from_text.__module__ == ut.__name__  # the hook was restored


def test_languages_named_skip_detection_auto_detects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unstructured.partition.common.lang as lang

    calls: list[str] = []
    real = lang.detect_langs
    monkeypatch.setattr(lang, "detect_langs", lambda text: calls.append(text) or real(text))
    p = tmp_path / "queen.md"
    p.write_text("# Queen\n\nThe queen lays up to two thousand eggs a day in early summer.\n")
    [src] = discover_files([tmp_path])
    named = load_document(src, CFG)
    assert calls == []
    auto = load_document(src, LoadConfig(workers=1, languages=["auto"]))
    assert len(calls) == 1 and auto.text == named.text


@pytest.mark.parametrize("value, match", [(["auto", "eng"], "cannot be combined"), (["English"], "ISO 639"), ([], "")])
def test_bad_languages_are_named(value: list[str], match: str) -> None:
    from ragline.chunkers.base import ConfigError
    from ragline.pipelines.config import Params

    data = Params().to_dict()
    data["load"]["languages"] = value
    with pytest.raises(ConfigError, match=r"load\.languages.*" + match):
        Params.from_dict(data, source="params.yaml")


def test_html_drop_keeps_the_text_after_a_dropped_element() -> None:
    from ragline.pipelines.load import strip_html

    page = '<html><body><p>Open the hive<a class="headerlink" href="#x">¶</a> slowly.</p><nav>Menu</nav>Tail</body></html>'
    out = strip_html(page, ["nav", "a.headerlink"])
    assert "Menu" not in out and "¶" not in out and "Open the hive slowly." in out and "Tail" in out
    assert strip_html(page, ["aside"]) is page  # nothing matched: the page itself, offsets untouched


def test_grouped_html_drop_selector_matches_what_lxml_cssselector_matches() -> None:
    """``_selector`` (simple selectors grouped by element, one walk each) selects the elements
    lxml's ``CSSSelector`` of the same list selects, in the same order, for the default
    ``load.html_drop`` and for lists mixing every kind of selector, on the sample pages,
    Python-docs pages when installed and a page made to hit them; a pseudo-element keeps its own walk."""
    import lxml.html
    from lxml.cssselect import CSSSelector

    from ragline.pipelines.load import _grouped_xpath, _selector

    lists = [tuple(LoadConfig().html_drop),
             ("nav", "[role=navigation]", "[ROLE=search]", "a.headerlink", ".x.y", "#top", "div[data-x]",
              "[data-x~=y]", "a:not(.b)", "p:first-child", "body > header", "main footer", "A.B", "*|aside", "li + li",
              "[lang|=en]", "span[title^=Fo]"),
             ("a", "a.headerlink"), ("*",), ("[role=banner]", "[role]")]
    page = ("<html><body><header id='top'>h</header><nav role='navigation'>n</nav><main><p class='x y'>xy</p>"
            "<p class='y x z'>yx</p><div data-x='a y b'>d</div><a class='b'>b</a><a>plain</a><a class='B'>B</a>"
            "<ul><li>1</li><li lang='en-GB'>2</li></ul><span title='Foo'>t</span><aside role='banner'>s</aside>"
            "<footer>f</footer><a class='headerlink other'>¶</a></main>"
            "<footer role='contentinfo'>site</footer></body></html>")
    pages = [page] + [p.read_text(encoding="utf-8") for p in sorted(SAMPLE.glob("*.html"))]
    pydocs = Path("/usr/share/doc/python3.11-doc/html")
    if pydocs.is_dir():
        pages += [p.read_text(encoding="utf-8") for p in sorted(pydocs.rglob("*.html"))[::30]]
    trees = [lxml.html.document_fromstring(p.encode("utf-8")) for p in pages]
    matched = 0
    for sels in lists:
        assert "CSSSelector" not in type(_selector(sels)).__name__  # grouped, not the fallback
        want = CSSSelector(", ".join(sels), translator="html")
        for tree in trees:
            got = _selector(sels)(tree)
            assert got == want(tree), (sels, [e.tag for e in got])
            matched += len(got)
    assert matched > 100
    assert _grouped_xpath(["nav", "a::before"]).count("descendant-or-self::") == 2  # its own walk


def test_html_drop_in_the_parsed_tree_equals_strip_then_partition() -> None:
    """Dropping ``load.html_drop`` elements from the tree unstructured parses (one parse) gives
    the elements that stripping the page, serializing it and partitioning that gave (two parses),
    on the sample pages, Python-docs pages when installed, and pages made to be awkward."""
    from unstructured.partition.html import partition_html

    from ragline.pipelines.load import _partition_html, _section_paths, element_types, strip_html
    from ragline.pipelines.offline import install_unstructured_nlp

    install_unstructured_nlp()
    drop = list(LoadConfig().html_drop)
    pages = [p.read_text(encoding="utf-8") for p in sorted(SAMPLE.glob("*.html"))] + [PAGE] + [
        "<html><body><pre>\n\nindented\n  code</pre><nav>x</nav><p>after</p></body></html>",
        "<html><body><!-- c --><nav><a class='headerlink'>¶</a>in nav</nav>tail<p>p<a class='headerlink'>¶</a>q</p></body></html>",
        "<nav><p>only navigation</p></nav>",
        "<html><body><header><h1>Top</h1></header><main><h2>Doc</h2><p>Body <b>bold</b></p><footer>f</footer></main>"
        "<footer>site</footer></body></html>",
        "<html role='navigation'><body><p>all of it</p></body></html>",
        '<?xml version="1.0" encoding="utf-8"?><html><body><nav>n</nav><p>declared</p></body></html>',
    ]
    pydocs = Path("/usr/share/doc/python3.11-doc/html")
    if pydocs.is_dir():
        pages += [p.read_text(encoding="utf-8") for p in sorted(pydocs.rglob("*.html"))[::40]]

    def view(elements: list) -> list:
        return list(zip([e.category for e in elements], [e.text for e in elements], _section_paths(elements)))

    with element_types("markup"):
        for page in pages:
            want = view(partition_html(text=strip_html(page, drop), languages=["eng"], unique_element_ids=True))
            assert view(_partition_html(page, drop, ["eng"])) == want, page[:200]


_KATEX_PAGE = ('<html><body><p>Area is <span class="katex"><span class="katex-mathml"><math><semantics><mrow><mi>x'
               '</mi></mrow><annotation encoding="application/x-tex">\\pi r^2</annotation></semantics></math></span>'
               '<span class="katex-html" aria-hidden="true">VISUAL</span></span> here.</p></body></html>')


def test_partition_html_without_unread_metadata_equals_partition_html() -> None:
    """``_partition_html`` (unstructured's partitioner unwrapped, its language, file-type, link and
    emphasis metadata skipped, its KaTeX clean-up and page-number search only where a page can hold
    them) gives the elements
    ``partition_html`` gives: categories, texts, page numbers and parent links (by position),
    on the sample pages, Python-docs pages when installed, and KaTeX pages (the class written
    plainly or through character references) and pages with page numbers (any case)."""
    from unstructured.partition.html import partition_html

    from ragline.pipelines.load import _PAGE_ATTR, _html_drop, _katex_possible, _partition_html, element_types
    from ragline.pipelines.offline import install_unstructured_nlp

    install_unstructured_nlp()
    drop = list(LoadConfig().html_drop)
    katex = [_KATEX_PAGE, _KATEX_PAGE.replace('class="katex"', 'class="&#107;atex"'),
             _KATEX_PAGE.replace('class="katex"', "class='k&#x61;tex'"),
             _KATEX_PAGE.replace('class="katex"', 'class="kat&#0101;x other"')]
    pages = [p.read_text(encoding="utf-8") for p in sorted(SAMPLE.glob("*.html"))] + [PAGE] + katex + [
        "<html><body><h1>T</h1><div data-page-number='3'><h2>U</h2><p>in page three</p></div>"
        "<p>after</p></body></html>",
        "<html><body><DIV DATA-PAGE-NUMBER='7'><p>page <b>seven</b></p><table><tr><td>c</td></tr></table></DIV>"
        "<p>after</p></body></html>",
        "<html><body><p class='KaTeX katexish'>not KaTeX, a near name</p></body></html>"]
    pydocs = Path("/usr/share/doc/python3.11-doc/html")
    if pydocs.is_dir():
        pages += [p.read_text(encoding="utf-8") for p in sorted(pydocs.rglob("*.html"))[::40]]

    def view(elements: list) -> list:
        at = {e.id: i for i, e in enumerate(elements)}
        return [(e.category, e.text, e.metadata.page_number, at.get(e.metadata.parent_id)) for e in elements]

    numbers: set = set()
    linked = False
    with element_types("markup"):
        for page in pages:
            with _html_drop(drop):
                want = partition_html(text=page, languages=["eng"], unique_element_ids=True)
            assert view(_partition_html(page, drop, ["eng"])) == view(want), page[:200]
            numbers |= {e.metadata.page_number for e in want}
            linked |= any(e.metadata.parent_id for e in want)
    assert linked  # parent links were compared (on some page; the Python docs are not always installed)
    assert {3, 7} <= numbers  # page numbers were compared too
    assert all(_katex_possible(p) for p in katex)
    if pydocs.is_dir():  # the gate skips the clean-up on these pages: the comparison above covered skipping
        sampled = [p.read_text(encoding="utf-8") for p in sorted(pydocs.rglob("*.html"))[::40]]
        assert not any(_katex_possible(p) or _PAGE_ATTR.search(p) for p in sampled)


def test_html_elements_carry_no_link_or_emphasis_metadata() -> None:
    """The annotations ragline does not read (links, emphasis) are not gathered into the
    elements' metadata; the elements' categories and texts are those unstructured gives with them."""
    from unstructured.partition.html import partition_html

    from ragline.pipelines.load import _partition_html

    page = ("<html><body><h1>Hive <em>care</em></h1><p>See <a href='https://bees.example/x'>the <b>guide</b></a> "
            "and <i>rest</i>.</p><ul><li><a href='#y'>item</a></li></ul></body></html>")
    want = partition_html(text=page, languages=["eng"], unique_element_ids=True)
    got = _partition_html(page, [], ["eng"])
    assert [(e.category, e.text) for e in got] == [(e.category, e.text) for e in want]
    assert any(e.metadata.link_urls for e in want) and any(e.metadata.emphasized_text_tags for e in want)
    assert not any(e.metadata.link_urls or e.metadata.link_texts or e.metadata.emphasized_text_contents
                   for e in got)


def test_lean_metadata_is_the_constructors_object() -> None:
    """``lean_metadata`` leaves the ``__dict__`` unstructured's ``ElementMetadata`` constructor
    leaves (fields given ``None`` absent, equality and attribute reads alike), and hands
    ``filename`` and ``file_directory`` (which the constructor combines) to the constructor."""
    from unstructured.documents.elements import ElementMetadata

    from ragline.pipelines.load import lean_metadata

    cases = [{}, {"page_number": 3}, {"category_depth": 0, "page_number": None},
             {"category_depth": 2, "page_number": 1, "text_as_html": "<table/>", "link_urls": ["u"], "languages": None},
             {"filename": "/x/y/page.html", "page_number": 2}, {"file_directory": "/d", "page_number": None},
             {"image_base64": "AAAA", "image_mime_type": "image/png", "emphasized_text_tags": ["b"]}]
    for kw in cases:
        got, want = lean_metadata(**kw), ElementMetadata(**kw)
        assert type(got) is ElementMetadata and got.__dict__ == want.__dict__ and got == want, kw
        assert got.page_number == want.page_number and got.parent_id is None and got.to_dict() == want.to_dict()
    assert lean_metadata(filename="/x/y/page.html").file_directory == "/x/y"


def test_katex_gate_skips_only_what_would_find_nothing() -> None:
    """The KaTeX clean-up changes a KaTeX page (so skipping it there would show), and no named
    character reference stands for a letter of ``katex`` (the gate looks for numeric ones only)."""
    import html.entities

    from unstructured.partition.html import partition_html

    from ragline.pipelines.load import _katex_gate, _partition_html
    from ragline.pipelines.offline import install_unstructured_nlp

    install_unstructured_nlp()
    from ragline.pipelines.load import _PAGE_ATTR, _katex_possible

    for text in ("<p class='katex'>", "<p class='&#107;atex'>", "<p class='k&#X61;tex'>", "<p class='kate&#0120;'>",
                 "<p class='ka&#x0074;ex'>", "<p class=kat&#101x>"):
        assert _katex_possible(text), text
    for text, want in (("<p class='KaTeX'>", False), ("<p>&#1070; &#x6b0; &#107", True), ("<p>&#1071;</p>", False),
                       ("<p>&#x6bf; &#97</p>", True), ("<p>&#9;&#x0a;</p>", False)):
        assert _katex_possible(text) == want, text
    for text in ("<div data-page-number=2>", "<DIV DATA-PAGE-NUMBER=2>", "<div Data-Page-Number='2'>"):
        assert _PAGE_ATTR.search(text), text
    assert not _PAGE_ATTR.search("<div data-page=2 page number>")
    assert [k for k, v in html.entities.html5.items() if v in set("katex")] == []
    assert [k for k, v in html.entities.name2codepoint.items() if chr(v) in set("katex")] == []
    with _katex_gate("<p>no such class</p>"):  # the gate closed: the visual copy stays
        skipped = [e.text for e in partition_html(text=_KATEX_PAGE, languages=["eng"], unique_element_ids=True)]
    assert skipped == ["Area is \\pi r^2VISUAL here."]
    assert [e.text for e in _partition_html(_KATEX_PAGE, [], ["eng"])] == ["Area is \\pi r^2 here."]


def test_gated_paragraph_rules_equal_unstructured_s() -> None:
    """The address, e-mail and letter-share rules of ``element_types: markup`` answer as
    unstructured's own functions, on the sample and Python-docs paragraphs and on texts made
    to hit each rule (addresses, e-mails, ASCII separators that are spaces, non-ASCII letters)."""
    import sys

    from unstructured.partition import text_type as tt

    from ragline.pipelines.load import _is_email_address, _is_us_city_state_zip, _under_non_alpha_ratio

    assert [c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace() and c.isalpha()] == []
    texts = ["", " ", "a", "1", "12345", "Doylestown, PA 18901", "doylestown, pennsylvania, 18901-1234",
             "  New Hope,   NJ 08530 ", "Springfield, IL 6270", "Springfield IL 62701", "x@y.io", " bee@hive.org ",
             "mail: bee@hive.org", "@@", "\x1c\x1d\x1e\x1f a", "---BREAK---", "ärger über ÖL 12", "١٢٣٤٥, ab",
             "Ⅻ, 12345", "x,\u00a012345", "a\tb\nc\x0b\x0c\rd 1 2 3 4 5 6 7 8"]
    pages = [p.read_text(encoding="utf-8") for p in sorted(SAMPLE.glob("*.*")) if p.suffix in (".md", ".txt", ".html")]
    pydocs = Path("/usr/share/doc/python3.11-doc/html")
    if pydocs.is_dir():
        pages += [p.read_text(encoding="utf-8") for p in sorted(pydocs.rglob("*.html"))[::25]]
    texts += [line for page in pages for line in page.splitlines()]
    for t in texts:
        assert _is_us_city_state_zip(t) == tt.is_us_city_state_zip(t), t
        assert _is_email_address(t) == tt.is_email_address(t), t
        assert _under_non_alpha_ratio(t) == tt.under_non_alpha_ratio(t), t
    # each rule was hit (the sample alone hits the non-alpha rule 11 times; the Python docs, when installed, 100s)
    assert sum(map(tt.is_us_city_state_zip, texts)) >= 2
    assert sum(map(tt.under_non_alpha_ratio, texts)) > (100 if pydocs.is_dir() else 5)


def test_memoized_section_paths_equal_the_walk_per_element() -> None:
    """Section paths built once per chain of parents equal the walk from every element, on
    partitioned sample and Python-docs pages; loops of parent links and repeated ids take the walk."""
    from unstructured.documents.elements import NarrativeText, Title
    from unstructured.partition.html import partition_html

    from ragline.pipelines.load import _section_paths, _section_paths_walked, element_types
    from ragline.pipelines.offline import install_unstructured_nlp

    install_unstructured_nlp()
    pages = [p.read_text(encoding="utf-8") for p in sorted(SAMPLE.glob("*.html"))] + [PAGE]
    pydocs = Path("/usr/share/doc/python3.11-doc/html")
    if pydocs.is_dir():
        pages += [p.read_text(encoding="utf-8") for p in sorted(pydocs.rglob("*.html"))[::60]]
    with element_types("markup"):
        docs = [partition_html(text=page, languages=["eng"]) for page in pages]
    # parent links were compared (the sample alone has 42; with the Python docs installed, 100s)
    assert sum(len(e.metadata.parent_id or "") > 0 for d in docs for e in d) > (100 if pydocs.is_dir() else 20)
    for els in docs:
        assert _section_paths(els) == _section_paths_walked(els, {e.id: e for e in els})
    a, b, c = Title("A"), Title("B"), NarrativeText("c")
    b.metadata.parent_id, c.metadata.parent_id = a.id, b.id
    assert _section_paths([a, b, c]) == [("A",), ("A", "B"), ("A", "B")]
    a.metadata.parent_id = c.id  # a loop: each walk stops where it meets an element twice
    assert _section_paths([a, b, c]) == _section_paths_walked([a, b, c], {e.id: e for e in (a, b, c)})
    assert _section_paths([a, b, c]) == [("B", "A"), ("A", "B"), ("A", "B")]


def test_fork_server_preloads_the_cli_for_the_ragline_command() -> None:
    """A parsing worker re-runs its caller's main script (multiprocessing's __main__ fix-up):
    for the ``ragline`` command that is an import of the CLI, done once in the fork server when
    the caller has it (it starts no thread, so the server may still fork)."""
    import subprocess
    import sys

    code = ("import threading, ragline.pipelines.cli\n"
            "from ragline.pipelines.load import _worker_context\n"
            "from multiprocessing import forkserver\n"
            "_worker_context()\n"
            "print(threading.active_count(), forkserver._forkserver._preload_modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert out[0] == "1" and "'ragline.pipelines.cli'" in out[1]
    code = code.replace("import threading, ragline.pipelines.cli\n", "import threading\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ragline.pipelines.cli" not in out and "ragline.pipelines.load_preload" in out


def test_fork_server_preload_builds_the_default_html_path() -> None:
    """The fork server's preload builds what ragline's HTML path would build in every new worker:
    the default ``load.html_drop`` selector (cssselect imported, XPath compiled) and the
    unwrapped partitioner, so a forked worker finds them built."""
    import subprocess
    import sys

    code = ("import sys, ragline.pipelines.load_preload\n"
            "from ragline.pipelines import load\n"
            "from ragline.pipelines.config import LoadConfig\n"
            "n = load._selector.cache_info().currsize\n"
            "load._selector(tuple(LoadConfig().html_drop)); load._html_partitioner()\n"
            "print(n, load._selector.cache_info().hits, load._html_partitioner.cache_info().hits, "
            "'cssselect' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "1", "1", "True"]


def test_fork_server_preload_leaves_torch_out_of_spacy() -> None:
    """spaCy's import would pull torch in through thinc (1.2 CPU-s of the preload); the preload
    keeps it out, and spaCy's pipeline splits and tags sentences (numpy ops) and unstructured
    types elements exactly as with torch imported; torch still imports afterwards (a worker
    meeting a PDF)."""
    import subprocess
    import sys

    text = ("Bees fly. They forage for nectar. Hive scales\n\nWorkers forage for nectar all day long.\n\n"
            "QUEEN REARING\n\n- frames\n- smoke")
    probe = ("import sys, ragline.pipelines.load_preload\n"
             "import thinc.compat, unstructured.nlp.tokenize as tok\n"
             "from unstructured.partition.text import partition_text\n"
             "print('torch' in sys.modules, thinc.compat.has_torch)\n"
             f"print(tok.sent_tokenize({text!r}))\n"
             f"print(tok.pos_tag({text!r}))\n"
             f"print([(type(e).__name__, e.text) for e in partition_text(text={text!r})])\n")

    def run(code: str) -> list[str]:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout.splitlines()

    without = run(probe + "import torch\nprint(torch.ones(2).sum().item())\n")
    with_torch = run("import torch\n" + probe)
    assert without[0] == "False False" and with_torch[0] == "True True"
    assert without[1:4] == with_torch[1:4]
    assert "'They forage for nectar.'" in without[1] and "NarrativeText" in without[3]
    assert without[4] == "2.0"


def test_one_worker_delivers_files_in_file_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files that finish within one wait of the pool are delivered in file order (a set of
    futures has no order): with one worker, arrival order is file order, which the stream's
    exact-copy skip relies on (the first copy in file order is the one embedded)."""
    import concurrent.futures
    import time

    real_wait = concurrent.futures.wait

    def slow_wait(*a, **k):  # let several files finish between two looks
        time.sleep(0.3)
        return real_wait(*a, **k)

    monkeypatch.setattr(concurrent.futures, "wait", slow_wait)
    for i in range(12):
        (tmp_path / f"n{i:02d}.txt").write_text(f"note {i}: the bees were calm today.\n")
    files = discover_files([tmp_path])
    arrived: list[int] = []
    load_documents(files, LoadConfig(workers=1), deliver=lambda i, r: arrived.append(i))
    assert arrived == list(range(12))


def _notes_and_documents_alive(folder: Path, n: int = 24) -> tuple[list, Callable[[], int]]:
    """``n`` small text files in ``folder`` (discovered), and a count of the ``Document`` objects
    alive beyond those alive now (a scan of the heap: seconds, so not per delivery)."""
    import gc

    from ragline.core.records import Document

    for i in range(n):
        (folder / f"n{i:02d}.txt").write_text(f"note {i}: the bees were calm today. " * 40)
    gc.collect()
    before = sum(isinstance(o, Document) for o in gc.get_objects())

    def alive() -> int:
        gc.collect()
        return sum(isinstance(o, Document) for o in gc.get_objects()) - before

    return discover_files([folder]), alive


def test_without_keep_a_delivered_document_is_not_held_by_the_pool(tmp_path: Path) -> None:
    """``keep=False``: once delivered, a Document is the caller's alone (a finished future no
    longer holds it), so a streamed ingest's memory does not grow with the files parsed."""
    from ragline.core.records import Document

    files, documents_alive = _notes_and_documents_alive(tmp_path)
    delivered: list[int] = []
    live: list[int] = []

    def deliver(i, r):
        assert isinstance(r, Document)
        delivered.append(i)
        if len(delivered) == len(files):  # (a scan of the heap per delivery would take seconds each)
            live.append(documents_alive())

    docs, bad = load_documents(files, LoadConfig(workers=1), deliver=deliver, keep=False)
    assert docs == [] and bad == [] and sorted(delivered) == list(range(24)) and len(live) == 1
    # the pool may run ahead of deliveries (finished, not yet delivered); delivered ones are let go,
    # so at the last delivery only that one is alive (a pool holding its futures: all 24)
    assert live[-1] <= 2, live


def test_parsing_runs_a_bounded_window_ahead_of_a_busy_deliver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While ``deliver`` is busy (a streamed ingest writing a segment), the workers parse at most
    ``workers`` × ``PREFETCH_PER_WORKER`` files ahead of it, not the rest of the corpus: the
    parsed, undelivered documents the pool holds stay that many (issue 12, bounded memory)."""
    import time

    from ragline.pipelines import load as load_mod

    monkeypatch.setattr(load_mod, "PREFETCH_PER_WORKER", 2)
    files, documents_alive = _notes_and_documents_alive(tmp_path)
    delivered: list[int] = []
    live: list[int] = []

    def deliver(i, r):
        delivered.append(i)
        if len(delivered) == 1:  # busy: the whole rest would be parsed meanwhile without a window
            time.sleep(2.0)
            live.append(documents_alive())

    docs, bad = load_documents(files, LoadConfig(workers=1), deliver=deliver, keep=False)
    assert docs == [] and bad == [] and sorted(delivered) == list(range(24))
    assert delivered == list(range(24))  # one worker: still file order
    assert live and 1 <= live[0] <= 1 + 2, live  # the one being delivered + at most the window


def test_documents_round_trip_through_pickle_with_their_spans() -> None:
    """A parsing worker pickles each Document (its ElementSpans by their constructor's
    arguments, ``ElementSpan.__reduce__``) and the ingest process gets the same records."""
    import pickle

    from ragline.core.records import ElementSpan
    from ragline.pipelines.load import Document, load_document

    docs = [load_document(f, CFG) for f in discover_files([SAMPLE])]
    docs = [d for d in docs if isinstance(d, Document)]
    spans = [ElementSpan("Title", 0, 4), ElementSpan("Table", 6, 9, 2, ("A", "B")), ElementSpan("Text", 1, 1, None, ())]
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        assert pickle.loads(pickle.dumps(spans, protocol)) == spans
        back = pickle.loads(pickle.dumps(docs, protocol))
        assert back == docs and sum(len(d.elements) for d in back) > 20
        assert all(type(e) is ElementSpan for d in back for e in d.elements)


def test_unstructured_hooks_are_restored_and_a_missing_one_is_named() -> None:
    """pipelines.load._swapped, the one way ragline hooks into unstructured: each hook is set
    within the block and restored after it, also when the block raises; an owner that lacks the
    name (the pinned unstructured changed) is a RuntimeError naming the function to update."""
    import types

    from ragline.pipelines.load import _swapped

    mod = types.ModuleType("fake_unstructured")
    mod.f = original = object()
    with pytest.raises(ValueError), _swapped(((mod, "f", "hook"),), "caller_fn"):
        assert mod.f == "hook"
        raise ValueError("inside")
    assert mod.f is original
    with pytest.raises(RuntimeError, match=r"fake_unstructured has no g: .*update pipelines/load.py caller_fn"):
        with _swapped(((mod, "f", "hook"), (mod, "g", "hook")), "caller_fn"):
            pass
    assert mod.f is original  # nothing was set
