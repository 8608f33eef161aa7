"""Builders of the bad inputs ragline must quarantine (one place, used by several tests)."""

from __future__ import annotations

import os
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
