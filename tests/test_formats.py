"""Formats beyond the sample corpus, text decoding, e-mail metadata, permalinks, and their bad input.

Every format is loaded from a real file built here (tests/formatfiles.py) and compared with the
exact text and elements expected.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ragline.core.schemas import DOCUMENTS_SCHEMA, read_table, write_table
from ragline.pipelines.config import LoadConfig
from ragline.pipelines.load import (
    Document,
    QuarantineRecord,
    SourceFile,
    discover_files,
    documents_from_table,
    documents_to_table,
    load_document,
    load_documents,
)
from tests import formatfiles

CFG = LoadConfig(workers=1)


def load(path: Path, cfg: LoadConfig = CFG) -> Document | QuarantineRecord:
    return load_document(SourceFile(path, path.as_posix()), cfg)


def loaded(path: Path, cfg: LoadConfig = CFG) -> Document:
    doc = load(path, cfg)
    assert isinstance(doc, Document), doc
    return doc


def elements(doc: Document) -> list[tuple[str, str, tuple[str, ...]]]:
    """(type, text, section path) of every element: text sliced by the element's offsets."""
    return [(e.type, doc.text[e.char_start:e.char_end], e.section_path) for e in doc.elements]


# ---------------------------------------------------------------- tables
def test_csv_is_one_table_with_one_row_per_line(tmp_path: Path) -> None:
    p = tmp_path / "inspections.csv"
    p.write_text('date,hive,note\r\n2024-05-02,Hive 1,"calm, gentle"\r\n\r\n2024-05-09,Hive 2,"queen\nless"\r\n')
    doc = loaded(p)
    assert doc.mime_type == "text/csv" and doc.encoding == "utf-8" and doc.title == "inspections"
    assert elements(doc) == [("Table", "date | hive | note\n2024-05-02 | Hive 1 | calm, gentle\n"
                                       "2024-05-09 | Hive 2 | queen less", ())]


def test_semicolon_csv(tmp_path: Path) -> None:
    p = tmp_path / "harvest.csv"
    p.write_text("hive;kg;note\nHive 1;12,5;light, floral\n")
    assert elements(loaded(p)) == [("Table", "hive | kg | note\nHive 1 | 12,5 | light, floral", ())]


def test_tsv(tmp_path: Path) -> None:
    p = tmp_path / "mites.tsv"
    p.write_text("hive\tmites per 100 bees\nHive 1\t2\nHive 2\t11\n")
    assert elements(loaded(p)) == [("Table", "hive | mites per 100 bees\nHive 1 | 2\nHive 2 | 11", ())]


def test_xlsx_sheet_titles_and_tables(tmp_path: Path) -> None:
    doc = loaded(formatfiles.write_xlsx(tmp_path / "apiary.xlsx"))
    assert doc.encoding is None and doc.title == "Inspections"
    assert elements(doc) == [
        ("Title", "Inspections", ("Inspections",)),
        ("Table", "date | hive | frames of brood | queen seen\n2024-05-02 | Hive 1 | 6 | true\n"
                  "2024-05-09 | Hive 2 | 4 | false", ("Inspections",)),
        ("Title", "Harvest", ("Harvest",)),  # the empty sheet is skipped
        ("Table", "hive | kg\nHive 1 | 12.5", ("Harvest",)),
    ]


# ---------------------------------------------------------------- records
def test_json_list_is_one_record_per_item(tmp_path: Path) -> None:
    p = tmp_path / "hives.json"
    p.write_text('[{"hive": "Hive 1", "queen": {"marked": true, "colour": "blue"}, "frames": [{"brood": "capped"}, '
                 '{"brood": "open"}], "tags": ["calm", "gentle"], "weight_kg": 31.5, "notes": null}, '
                 '{"hive": "Hive 2", "queen": {}}]')
    doc = loaded(p)
    assert doc.mime_type == "application/json"
    assert [t for _, t, _ in elements(doc)] == [
        "hive: Hive 1\nqueen.marked: true\nqueen.colour: blue\nframes[0].brood: capped\nframes[1].brood: open\n"
        "tags: calm, gentle\nweight_kg: 31.5\nnotes: null",
        "hive: Hive 2\nqueen: {}",
    ]


def test_json_object_is_one_record_per_top_level_key(tmp_path: Path) -> None:
    p = tmp_path / "apiary.json"
    p.write_text('{"apiary": "North", "hives": 2, "location": {"lat": 52.1, "lon": 4.3}}')
    assert [t for _, t, _ in elements(loaded(p))] == ["apiary: North", "hives: 2",
                                                      "location.lat: 52.1\nlocation.lon: 4.3"]


def test_jsonl_is_one_record_per_line(tmp_path: Path) -> None:
    p = tmp_path / "counts.jsonl"
    p.write_text('{"hive": "Hive 1", "mites": 3}\n\n{"hive": "Hive 2", "mites": 11}\n')
    assert [t for _, t, _ in elements(loaded(p))] == ["hive: Hive 1\nmites: 3", "hive: Hive 2\nmites: 11"]


def test_xml_records_and_declared_encoding(tmp_path: Path) -> None:
    p = tmp_path / "apiary.xml"
    p.write_bytes(b'<?xml version="1.0" encoding="ISO-8859-1"?><apiary name="North"><hive id="1">'
                  b'<queen marked="yes">blue dot</queen><note>calm bees, caf\xe9 colour</note></hive>'
                  b'<hive id="2"><note>queenless</note></hive></apiary>')
    doc = loaded(p)
    assert doc.encoding == "iso-8859-1"
    assert [t for _, t, _ in elements(doc)] == [
        "apiary@name: North",
        "hive@id: 1\nhive.queen@marked: yes\nhive.queen: blue dot\nhive.note: calm bees, café colour",
        "hive@id: 2\nhive.note: queenless",
    ]


def test_xml_entities_are_not_expanded(tmp_path: Path) -> None:
    p = tmp_path / "xxe.xml"
    p.write_text('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                 "<r><a>safe &x;</a></r>")
    doc = loaded(p)
    assert "root:" not in doc.text and "a: safe" in doc.text


# ---------------------------------------------------------------- pandoc formats (pypandoc-binary)
def test_rst(tmp_path: Path) -> None:
    p = tmp_path / "inspection.rst"
    p.write_text(formatfiles.RST)
    doc = loaded(p)
    assert doc.mime_type == "text/x-rst" and doc.encoding == "utf-8"
    assert elements(doc) == [
        ("Title", "Hive inspection", ("Hive inspection",)),
        ("NarrativeText", "Check the brood pattern every week.", ("Hive inspection",)),
        ("Title", "Queen", ("Hive inspection", "Queen")),
        ("NarrativeText", "Look for eggs standing upright in the cells.", ("Hive inspection", "Queen")),
    ]


@pytest.mark.parametrize("name, build, expected", [
    ("handbook.epub", formatfiles.write_epub,
     [("Title", "Feeding in autumn", ("Feeding in autumn",)),
      ("NarrativeText", "Give a thick sugar syrup of two parts sugar to one part water in September.",
       ("Feeding in autumn",))]),
    ("smoker.odt", formatfiles.write_odt,
     [("Title", "Smoker fuel", ("Smoker fuel",)),
      ("NarrativeText", "Burlap and dry pine needles give a cool, long-lasting smoke.", ("Smoker fuel",))]),
    ("scales.rtf", lambda p: p.write_bytes(formatfiles.RTF) and p,
     [("NarrativeText", "Hive scales", ()),  # load.element_types: markup (nlp: UncategorizedText, no verb)
      ("NarrativeText", "A hive that gains two kilograms a day is on a strong nectar flow.", ())]),
])
def test_epub_odt_rtf(tmp_path: Path, name: str, build, expected) -> None:
    p = tmp_path / name
    build(p)
    doc = loaded(p)
    assert elements(doc) == expected
    assert doc.encoding is None


# ---------------------------------------------------------------- e-mail
def test_email_subject_title_headers_metadata_and_attachments(tmp_path: Path) -> None:
    p = formatfiles.write_email(tmp_path / "swarm.eml", [
        ("notes.md", b"# Notes\n\nThe swarm clustered two metres up.\n", "text/markdown"),
        ("count.csv", b"hive,frames\nHive 3,7\n", "text/csv"),
        ("photo.jpg", b"\xff\xd8\xff\xe0 not really a jpeg", "image/jpeg"),
        ("empty.txt", b"   \n", "text/plain"),
    ])
    doc = loaded(p)
    assert doc.title == "Swarm in the apple tree"
    skipped = doc.metadata.pop("attachments_skipped")
    assert doc.metadata == {
        "subject": "Swarm in the apple tree",
        "from": "Alice Keeper <alice@example.org>",
        "to": "Bob Drone <bob@example.org>, club@example.org",
        "date": "2024-05-14T10:03:00+02:00",
        "attachments": "notes.md, count.csv",
    }
    assert skipped == "photo.jpg (unsupported type image/jpeg); empty.txt (EmptyFile: empty.txt: only whitespace)"
    assert doc.encoding == "utf-8"  # the body part's charset
    assert elements(doc) == [
        ("NarrativeText", "Hi Bob,", ()),  # element_types: markup (nlp: UncategorizedText, no verb)
        ("NarrativeText", "A swarm left hive 3 this morning and clustered in the apple tree.", ()),
        ("NarrativeText", "I shook it into a spare box at noon.", ()),
        ("Title", "Attachment: notes.md", ("Attachment: notes.md",)),
        ("Title", "Notes", ("Attachment: notes.md", "Notes")),
        ("NarrativeText", "The swarm clustered two metres up.", ("Attachment: notes.md", "Notes")),
        ("Title", "Attachment: count.csv", ("Attachment: count.csv",)),
        ("Table", "hive | frames\nHive 3 | 7", ("Attachment: count.csv",)),
    ]
    # metadata survives the documents table (and Parquet)
    write_table(documents_to_table([doc]), tmp_path / "d.parquet", DOCUMENTS_SCHEMA)
    assert documents_from_table(read_table(tmp_path / "d.parquet", DOCUMENTS_SCHEMA)) == [doc]


def test_email_with_only_an_html_body(tmp_path: Path) -> None:
    from email.message import EmailMessage

    m = EmailMessage()
    m["Subject"] = "Club meeting"
    m["From"] = "club@example.org"
    m.set_content("<html><body><nav>Home | Events</nav><h1>Club meeting</h1>"
                  "<p>We meet at the apiary on Thursday at six.</p></body></html>", subtype="html")
    p = tmp_path / "meeting.eml"
    p.write_bytes(bytes(m))
    doc = loaded(p)
    assert doc.title == "Club meeting" and doc.metadata == {"subject": "Club meeting", "from": "club@example.org"}
    assert doc.text == "Club meeting\n\nWe meet at the apiary on Thursday at six."  # <nav> dropped (load.html_drop)


# ---------------------------------------------------------------- encodings
LATIN1 = ("Le rucher est installé près du verger. Les abeilles récoltent le nectar des pommiers, "
          "et l'apiculteur vérifie la cire operculée chaque été. Café, crème brûlée, naïve façade.\n")


@pytest.mark.parametrize("codec, recorded", [
    ("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("utf-16", "utf-16"), ("utf-16-be", None),
    ("utf-32", "utf-32"), ("latin-1", None), ("cp1252", None),
])
def test_text_encodings_are_decoded_and_recorded(tmp_path: Path, codec: str, recorded: str | None) -> None:
    import codecs

    p = tmp_path / "rucher.txt"
    data = LATIN1.encode(codec)
    if codec == "utf-16-be":
        data = codecs.BOM_UTF16_BE + data  # big-endian with its BOM
        recorded = "utf-16"
    p.write_bytes(data)
    doc = loaded(p)
    assert doc.text == LATIN1.strip()
    if recorded:
        assert doc.encoding == recorded
    else:  # single-byte: what charset-normalizer detects; any codec that gives the same text
        assert doc.encoding not in (None, "utf-8") and data.decode(doc.encoding) == LATIN1


def test_utf16_csv_with_bom(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_bytes("ruche,reine\nRuche 1,marquée\n".encode("utf-16"))
    doc = loaded(p)
    assert doc.encoding == "utf-16" and doc.text == "ruche | reine\nRuche 1 | marquée"


def test_encoding_is_recorded_in_the_documents_table(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_bytes(LATIN1.encode("utf-16"))
    t = documents_to_table([loaded(p)])
    assert t.column("encoding").to_pylist() == ["utf-16"] and t.column("metadata").to_pylist() == [None]


def test_a_table_written_before_metadata_and_encoding_reads_with_nulls(tmp_path: Path) -> None:
    """Regression: adding the nullable columns must not make earlier versions unreadable."""
    p = tmp_path / "a.md"
    p.write_text("# Title\n\nSome text.\n")
    new = documents_to_table([loaded(p)])
    old = new.drop_columns(["metadata", "encoding"]).replace_schema_metadata(DOCUMENTS_SCHEMA.metadata)
    pq.write_table(old, tmp_path / "old.parquet")
    back = read_table(tmp_path / "old.parquet", DOCUMENTS_SCHEMA)
    assert back.schema.names == DOCUMENTS_SCHEMA.names
    [doc] = documents_from_table(back)
    assert doc.metadata == {} and doc.encoding is None and doc.text == "Title\n\nSome text."
    # a missing non-nullable-by-meaning column (text) is still refused
    from ragline.core.errors import SchemaMismatchError

    pq.write_table(pa.table({"doc_id": ["x"]}).replace_schema_metadata(DOCUMENTS_SCHEMA.metadata),
                   tmp_path / "bad.parquet")
    with pytest.raises(SchemaMismatchError):
        read_table(tmp_path / "bad.parquet", DOCUMENTS_SCHEMA)


# ---------------------------------------------------------------- permalinks
SPHINX = """<!DOCTYPE html><html><head><title>json — JSON encoder and decoder</title></head><body>
<div class="body" role="main"><section id="module-json">
<h1><code>json</code> — JSON encoder and decoder<a class="headerlink" href="#module-json" title="Permalink to this headline">¶</a></h1>
<p>JSON is a lightweight data interchange format inspired by JavaScript object literal syntax.</p>
<section id="encoders"><h2>Encoders and Decoders<a class="headerlink" href="#encoders" title="Permalink to this headline">¶</a></h2>
<dl><dt id="json.dumps"><code>json.dumps</code>(obj)<a class="headerlink" href="#json.dumps" title="Permalink to this definition">¶</a></dt>
<dd><p>Serialize obj to a JSON formatted str.</p></dd></dl>
</section></section></div></body></html>"""


def test_permalinks_are_dropped_and_never_end_a_section_path(tmp_path: Path) -> None:
    p = tmp_path / "json.html"
    p.write_text(SPHINX)
    doc = loaded(p)
    assert "¶" not in doc.text
    assert ("Title", "Encoders and Decoders", ("json — JSON encoder and decoder", "Encoders and Decoders")) \
        in elements(doc)
    kept = loaded(p, LoadConfig(workers=1, html_drop=[]))  # permalinks kept in the text ...
    assert kept.text.count("¶") == 3
    paths = {s for e in kept.elements for s in e.section_path}  # ... but not in section paths
    assert paths and not [s for s in paths if s.endswith("¶")]
    assert "Encoders and Decoders" in paths


# ---------------------------------------------------------------- bad input
def test_broken_files_of_new_formats_are_quarantined_with_where(tmp_path: Path) -> None:
    (tmp_path / "ragged.csv").write_text("date,hive,note\n2024-05-02,Hive 1,calm\n2024-05-09,Hive 2\n")
    (tmp_path / "quote.csv").write_text('a,b\n1,"unterminated\n')
    (tmp_path / "renamed.xlsx").write_text("date,hive\n2024-05-02,Hive 1\n")
    (tmp_path / "broken.json").write_text('{"hive": "Hive 1",\n "mites": 3,,\n}')
    (tmp_path / "broken.jsonl").write_text('{"a": 1}\n{"a": 2}\n{"a": \n')
    (tmp_path / "broken.xml").write_text("<apiary>\n<hive>one</apiary>")
    (tmp_path / "good.csv").write_text("hive,kg\nHive 1,12\n")
    docs, bad = load_documents(discover_files([tmp_path]), CFG)
    assert [Path(d.uri).name for d in docs] == ["good.csv"]
    got = {Path(q.path).name: (q.error_type, q.message.split(": ", 1)[1]) for q in bad}
    assert got == {
        "ragged.csv": ("RaggedRows", "row 3 (line 3) has 2 cells, the header row has 3; fix the row or quote "
                                     "cells that contain ','"),
        "quote.csv": ("MalformedCSV", "line 2: unexpected end of data"),
        "renamed.xlsx": ("NotAWorkbook", "not an XLSX workbook (File is not a zip file); a CSV or text file "
                                         "renamed to .xlsx? save it as .csv or re-export it from the spreadsheet"),
        "broken.json": ("MalformedJSON", "line 2 column 13 (char 31): Expecting property name enclosed in "
                                         "double quotes"),
        "broken.jsonl": ("MalformedJSON", "line 3 column 7: Expecting value"),
        "broken.xml": ("MalformedXML", "line 2 column 19: Opening and ending tag mismatch: hive line 2 and apiary"),
    }
    assert all(q.sha256 for q in bad)


def test_xlsx_with_a_damaged_sheet_is_quarantined(tmp_path: Path) -> None:
    import zipfile

    good = formatfiles.write_xlsx(tmp_path / "good.xlsx")
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tmp_path / "damaged.xlsx", "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, b"<worksheet><sheetData><row><c r='A1'" if name.endswith("sheet3.xml") else data)
    q = load(tmp_path / "damaged.xlsx")
    assert isinstance(q, QuarantineRecord) and q.error_type == "BadWorkbook"
    assert q.message.endswith("damaged XLSX workbook: ParseError: unclosed token: line 1, column 27")


def test_undecodable_text_names_the_byte(tmp_path: Path) -> None:
    p = tmp_path / "noise.txt"
    p.write_bytes(bytes(range(0x80, 0x100)) * 4)  # no NUL, no BOM, no encoding fits
    q = load(p)
    assert isinstance(q, QuarantineRecord) and q.error_type == "DecodeError"
    assert "not valid UTF-8 (byte 0x80 at offset 0) and no other encoding fits" in q.message
