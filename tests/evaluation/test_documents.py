"""The one rule of "is this the right document" (evaluation.documents), shared by the gate and flow eval."""

from __future__ import annotations

import pytest

from ragline.evaluation.documents import doc_matches


@pytest.mark.parametrize("label, doc_id, source, expected", [
    ("data/sample/a.md", None, "data/sample/a.md", True),        # the URI itself
    ("a.md", None, "data/sample/a.md", True),                    # a trailing path ...
    ("sample/a.md", None, "data/sample/a.md", True),
    ("/sample/a.md", None, "data/sample/a.md", True),
    ("a.md", None, "data/sample/ba.md", False),                  # ... on whole path components
    ("ple/a.md", None, "data/sample/a.md", False),
    ("a", None, "data/sample/a.md", True),                       # the base name without extension
    ("wikitexts", None, "wikitexts", True),                      # a chunking-eval corpus id
    ("sample", None, "data/sample/a.md", False),
    ("0123abcd", "0123abcd", "x/y.txt", True),                   # the doc id
    ("a.md", "0123abcd", None, False),
    ("", None, "", False),
    ("b.txt", None, "docs\\b.txt", True),                       # back-slashes are separators
])
def test_doc_matches_one_rule(label: str, doc_id: str | None, source: str | None, expected: bool) -> None:
    assert doc_matches(label, doc_id=doc_id, source=source) is expected
