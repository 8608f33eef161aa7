"""Builders of real sample files for every format ragline loads beyond the sample corpus.

Archives (EPUB, ODT) are assembled by hand from their specifications' minimal parts, so that
the files do not come from the same tool (pandoc) that reads them.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

RTF = (rb"{\rtf1\ansi\deff0{\fonttbl{\f0 Times;}}{\pard\b Hive scales\b0\par}"
       rb"{\pard A hive that gains two kilograms a day is on a strong nectar flow.\par}}")

RST = """Hive inspection
===============

Check the brood pattern every week.

Queen
-----

Look for eggs standing upright in the cells.
"""


def _stored(z: zipfile.ZipFile, name: str, text: str) -> None:
    z.writestr(zipfile.ZipInfo(name), text, compress_type=zipfile.ZIP_STORED)


def write_epub(path: Path) -> Path:
    """An EPUB 3 book (OCF container, package document, nav, one chapter)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        _stored(z, "mimetype", "application/epub+zip")
        z.writestr("META-INF/container.xml",
                   '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
                   '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
                   "</rootfiles></container>")
        z.writestr("OEBPS/content.opf",
                   '<?xml version="1.0" encoding="UTF-8"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
                   'unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
                   '<dc:identifier id="id">urn:uuid:beekeeping-1</dc:identifier><dc:title>Small Apiary Handbook</dc:title>'
                   '<dc:language>en</dc:language><meta property="dcterms:modified">2024-05-01T00:00:00Z</meta></metadata>'
                   '<manifest><item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>'
                   '<item id="c1" href="ch1.xhtml" media-type="application/xhtml+xml"/></manifest>'
                   '<spine><itemref idref="c1"/></spine></package>')
        z.writestr("OEBPS/nav.xhtml",
                   '<?xml version="1.0" encoding="UTF-8"?><html xmlns="http://www.w3.org/1999/xhtml" '
                   'xmlns:epub="http://www.idpf.org/2007/ops"><head><title>Contents</title></head><body>'
                   '<nav epub:type="toc"><ol><li><a href="ch1.xhtml">Feeding</a></li></ol></nav></body></html>')
        z.writestr("OEBPS/ch1.xhtml",
                   '<?xml version="1.0" encoding="UTF-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head>'
                   "<title>Feeding</title></head><body><h1>Feeding in autumn</h1><p>Give a thick sugar syrup of two "
                   "parts sugar to one part water in September.</p></body></html>")
    return path


def write_odt(path: Path) -> Path:
    """An OpenDocument text file (mimetype, manifest, content, styles)."""
    office = 'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        _stored(z, "mimetype", "application/vnd.oasis.opendocument.text")
        z.writestr("META-INF/manifest.xml",
                   '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
                   'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
                   '<manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.text"/>'
                   '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
                   '<manifest:file-entry manifest:full-path="styles.xml" manifest:media-type="text/xml"/>'
                   "</manifest:manifest>")
        z.writestr("content.xml",
                   f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {office} '
                   'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2"><office:body>'
                   '<office:text><text:h text:outline-level="1">Smoker fuel</text:h><text:p>Burlap and dry pine '
                   "needles give a cool, long-lasting smoke.</text:p></office:text></office:body></office:document-content>")
        z.writestr("styles.xml", f'<?xml version="1.0" encoding="UTF-8"?><office:document-styles {office} '
                                 'office:version="1.2"><office:styles/></office:document-styles>')
    return path


def write_xlsx(path: Path) -> Path:
    """A workbook with two sheets of inspections and one empty sheet (openpyxl)."""
    import datetime as dt

    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Inspections"
    ws.append(["date", "hive", "frames of brood", "queen seen"])
    ws.append([dt.date(2024, 5, 2), "Hive 1", 6, True])
    ws.append([])
    ws.append([dt.date(2024, 5, 9), "Hive 2", 4.0, False])
    wb.create_sheet("Empty")
    honey = wb.create_sheet("Harvest")
    honey.append(["hive", "kg"])
    honey.append(["Hive 1", 12.5])
    wb.save(path)
    return path


def write_email(path: Path, attachments: list[tuple[str, bytes, str]]) -> Path:
    """An RFC 5322 message about a swarm with the given ``(filename, bytes, mime type)`` attachments."""
    from email.message import EmailMessage

    m = EmailMessage()
    m["Subject"] = "Swarm in the apple tree"
    m["From"] = "Alice Keeper <alice@example.org>"
    m["To"] = "Bob Drone <bob@example.org>, club@example.org"
    m["Date"] = "Tue, 14 May 2024 10:03:00 +0200"
    m.set_content("Hi Bob,\n\nA swarm left hive 3 this morning and clustered in the apple tree.\n\n"
                  "I shook it into a spare box at noon.\n")
    for name, blob, mime in attachments:
        main, sub = mime.split("/")
        m.add_attachment(blob, maintype=main, subtype=sub, filename=name)
    path.write_bytes(bytes(m))
    return path
