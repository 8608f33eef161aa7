"""Builders of the bad inputs ragline must quarantine (one place, used by several tests)."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from pypdf import PdfReader, PdfWriter

SAMPLE_PDF = Path(__file__).resolve().parents[1] / "data" / "sample" / "varroa-mites.pdf"

#: file name -> the quarantine error_type expected for it
EXPECTED = {
    "empty.txt": "EmptyFile",
    "whitespace.md": "EmptyFile",
    "notes.xyz": "UnsupportedType",
    "corrupt.pdf": "CorruptPDF",
    "encrypted.pdf": "EncryptedPDF",
    "binary.txt": "BinaryContent",
    "undecodable.txt": "DecodeError",  # no BOM, not UTF-8, no encoding charset-normalizer finds
    "broken-link.md": "BrokenSymlink",
    "blank.pdf": "NoTextLayer",
}


def make_bad_files(folder: Path) -> dict[str, str | None]:
    """Write every bad file into ``folder``; returns :data:`EXPECTED`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "whitespace.md").write_text("  \n\t\n   \n")
    (folder / "notes.xyz").write_text("some notes in an unknown format\n")
    (folder / "corrupt.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nthis is not a pdf\x00\xff" * 20)
    writer = PdfWriter(clone_from=PdfReader(SAMPLE_PDF))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-128")
    with open(folder / "encrypted.pdf", "wb") as f:
        writer.write(f)
    blank = PdfWriter()
    blank.add_blank_page(width=595, height=842)
    with open(folder / "blank.pdf", "wb") as f:
        blank.write(f)
    (folder / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    (folder / "undecodable.txt").write_bytes(bytes(range(0x80, 0x100)) * 4)
    os.symlink(folder / "does-not-exist.md", folder / "broken-link.md")
    return dict(EXPECTED)


SAMPLE_DOCX = SAMPLE_PDF.parent / "honey-harvest.docx"


def make_special_files(folder: Path) -> list[str]:
    """A FIFO (``pipe.txt``), a symlink to ``/dev/zero`` (``zero.txt``) and a Unix socket
    (``socket.md``) in ``folder``; returns their names. Reading any of them would block or
    never end."""
    import socket

    os.mkfifo(folder / "pipe.txt")
    os.symlink("/dev/zero", folder / "zero.txt")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(folder / "socket.md"))
    s.close()
    return ["pipe.txt", "socket.md", "zero.txt"]


def make_hostile_pdfs(folder: Path) -> list[str]:
    """``encrypted.pdf`` (AES, user password), ``truncated.pdf`` (the sample cut in half) and
    ``page.pdf`` (an HTML page named .pdf) in ``folder``; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = PdfWriter(clone_from=PdfReader(SAMPLE_PDF))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-128")
    with open(folder / "encrypted.pdf", "wb") as f:
        writer.write(f)
    data = SAMPLE_PDF.read_bytes()
    (folder / "truncated.pdf").write_bytes(data[: len(data) // 2])
    (folder / "page.pdf").write_text("<!DOCTYPE html><html><body><h1>Not found</h1><p>The file moved.</p></body></html>")
    return ["encrypted.pdf", "truncated.pdf", "page.pdf"]


def make_image_only_pdf(path: Path) -> Path:
    """A one-page PDF holding only a picture (fpdf2 + Pillow): pages, but no text layer."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (400, 120), "white")
    ImageDraw.Draw(img).text((10, 40), "Scanned hive inspection notes", fill="black")
    pdf = FPDF()
    pdf.add_page()
    pdf.image(img, x=10, y=10, w=150)
    pdf.output(str(path))
    return path


class _RepeatedBlockDeflater:
    """A raw-deflate compressor for a stream made of one block repeated: the block is
    compressed once, ending in a full flush (which resets the dictionary, so every repeat
    compresses to the same bytes), and those bytes are reused. Makes a GiB bomb in a second."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(9, zlib.DEFLATED, -15)
        self._cache: tuple[bytes, bytes] | None = None

    def compress(self, data: bytes) -> bytes:
        if self._cache is None or self._cache[0] is not data:
            self._cache = (data, self._z.compress(data) + self._z.flush(zlib.Z_FULL_FLUSH))
        return self._cache[1]

    def flush(self) -> bytes:
        return self._z.flush(zlib.Z_FINISH)


def make_zip_bomb_docx(path: Path, uncompressed_mb: int = 1024) -> Path:
    """The sample DOCX with its ``word/document.xml`` replaced by ``uncompressed_mb`` MiB of
    repeated paragraph XML (a valid deflate stream, correct CRC; about 3 MiB on disk per
    GiB); returns ``path``."""
    import zipfile

    unit = b"<w:p><w:r><w:t>bee</w:t></w:r></w:p>"
    block = (unit * ((1 << 20) // len(unit))).ljust(1 << 20)  # 1 MiB of whole paragraphs
    with zipfile.ZipFile(SAMPLE_DOCX) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            if info.filename != "word/document.xml":
                out.writestr(info, src.read(info))
        with out.open("word/document.xml", "w", force_zip64=True) as f:
            f._compressor = _RepeatedBlockDeflater()  # zipfile's own writer, our deflate output
            for _ in range(uncompressed_mb):
                f.write(block)
    return path
