"""Which document a label names: the one rule of "is this the right document".

A label (a question's ``doc``, a flow label's ``docs``/``doc_id``/``corpus_id``) names a
retrieved chunk's document when it is

- the document's ``doc_id``, or its source URI, exactly; or
- a trailing path of the source URI, on whole path components (``"a.md"`` and
  ``"sample/a.md"`` name ``data/sample/a.md``; ``"a.md"`` does not name ``data/sample/ba.md``); or
- the URI's base name without its extension (``"a"`` names ``data/sample/a.md``; how the
  chunking-eval datasets name corpora).

Back-slashes in URIs count as path separators. Used by the promotion gate and ``ragline flow eval``.
"""

from __future__ import annotations

import posixpath


def doc_matches(label: str, *, doc_id: str | None = None, source: str | None = None) -> bool:
    """True when ``label`` names the document with ``doc_id`` / ``source`` (rule in the module docstring)."""
    if not label:
        return False
    if label == doc_id or label == source:
        return True
    if not source:
        return False
    uri = source.replace("\\", "/")
    want = label.replace("\\", "/").lstrip("/")
    if uri == want or uri.endswith("/" + want):
        return True
    base = posixpath.basename(uri)
    return "." in base and label == base.rsplit(".", 1)[0]


__all__ = ["doc_matches"]
