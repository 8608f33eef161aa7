"""Same inputs, same outputs: documents, chunks and curation decisions pinned on real pages.

Regression pins for the speed work of issue 16 ("parsing costs what it must", the MinHash and
chunking CPU): loading, boilerplate removal, chunking and duplicate clustering were made
cheaper and must give exactly what they gave before (main at 5c3a127, when the digests in
``tests/data/outputs_golden.json`` were written). Each document, its chunks and every
curation decision (indexed rows, duplicate rows, signatures, boilerplate removed) is compared
by a sha256 of its content, so a failure names the document or the decision that moved.

Corpora: the bundled sample corpus (every format) and, when Debian's ``python3.11-doc`` is
installed (the corpus of ``benchmarks/ingest_pydocs.py``), 48 of its pages spread over its folders, or
all 530 with ``RAGLINE_TEST_ALL_PYDOCS=1`` (about 30 s).

Regenerate only for a change of output that is intended and explained in the commit:
``.venv/bin/python -m tests.test_outputs_unchanged --write``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLE

GOLDEN = Path(__file__).parent / "data" / "outputs_golden.json"
PYDOCS = Path("/usr/share/doc/python3.11-doc/html")
PYDOCS_PAGES = 48


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:20]


def pydocs_files(every: bool = False) -> list:
    """48 pages of the Python docs, spread over the sorted list (several folders of each kind), or all."""
    from ragline.pipelines.load import discover_files

    files = discover_files([PYDOCS], ["**/*.html"])
    if every:
        return files
    step = len(files) / PYDOCS_PAGES
    return [files[int(k * step)] for k in range(PYDOCS_PAGES)]


def outputs(files: list) -> dict[str, Any]:
    """Digests of what load -> boilerplate -> chunk -> duplicate clusters make of ``files``
    (default params; in this process, as a parsing worker runs it)."""
    from ragline.pipelines import curate
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.config import Params
    from ragline.pipelines.load import Document, documents_to_table, load_document

    p = Params()
    loaded = [load_document(f, p.load) for f in files]
    out: dict[str, Any] = {"documents": {}, "quarantine": {}, "chunks": {}, "curation": {}}
    docs = []
    for r in loaded:
        if isinstance(r, Document):
            docs.append(r)
            out["documents"][r.uri] = _sha([r.doc_id, r.sha256, r.mime_type, r.size_bytes, r.title, r.text,
                                            [list(map(str, (e.type, e.char_start, e.char_end, e.page)))
                                             + list(e.section_path) for e in r.elements],
                                            r.metadata, r.encoding])
        else:
            out["quarantine"][r.path] = r.error_type
    curated, report = curate.strip_boilerplate(docs, p.curate)
    out["boilerplate"] = {"removed": _sha(report.removed), "keys": _sha(report.keys), "chars": report.chars}
    chunks, bad = chunk_documents(curated, p.chunk, embed_model=p.embed.model)
    assert bad == []
    cols = ["row", "chunk_id", "doc_id", "uri", "char_start", "char_end", "token_count", "page", "section_path",
            "oversized", "text", "context"]
    by_doc: dict[str, list] = {}
    for row in chunks.select(cols).to_pylist():
        by_doc.setdefault(row["uri"], []).append(row)
    out["chunks"] = {uri: _sha(rows) for uri, rows in by_doc.items()}
    table = documents_to_table(curated)
    cur, keep = curate.curate_chunks(table, chunks, p.curate, boilerplate=report)
    out["curation"] = {
        "keep": _sha(keep.astype(int).tolist()),
        "duplicates": _sha(cur.duplicates_table().to_pylist()),
        # (the doc_id column, filled only where a segment's file is written, is not part of the pin)
        "signatures": _sha(cur.signatures_table().drop_columns(["doc_id", "bands"]).to_pylist()),
        "counts": {k: v for k, v in cur.counts().items() if k != "seconds"},
    }
    return out


def _compare(name: str, got: dict[str, Any]) -> None:
    want = json.loads(GOLDEN.read_text(encoding="utf-8"))[name]
    for part in ("documents", "quarantine", "chunks"):
        moved = sorted(k for k in {*want[part], *got[part]} if want[part].get(k) != got[part].get(k))
        assert moved == [], f"{name}: {part} changed for {moved}"
    assert got["boilerplate"] == want["boilerplate"], f"{name}: boilerplate removal changed"
    for k in want["curation"]:
        assert got["curation"][k] == want["curation"][k], f"{name}: curation {k} changed"


def sample_files() -> list:
    """The sample corpus under stable URIs (not this checkout's path), plus exact copies of two
    files in a second folder (so duplicate clustering has copies to find)."""
    from ragline.pipelines.load import SourceFile, discover_files

    files = [SourceFile(f.path, f"sample/{f.path.name}") for f in discover_files([SAMPLE])]
    return files + [SourceFile(SAMPLE / n, f"sample-copy/{n}") for n in ("swarming.md", "colony-roles.html")]


def test_sample_corpus_documents_chunks_and_curation_are_unchanged() -> None:
    _compare("sample", outputs(sample_files()))


@pytest.mark.skipif(not PYDOCS.is_dir(), reason="apt-get install python3.11-doc")
def test_python_docs_documents_chunks_and_curation_are_unchanged() -> None:
    every = os.environ.get("RAGLINE_TEST_ALL_PYDOCS") == "1"
    _compare("pydocs-all" if every else "pydocs", outputs(pydocs_files(every)))


if __name__ == "__main__" and "--write" in sys.argv:
    from ragline.core.offline import set_offline_env

    set_offline_env()
    GOLDEN.parent.mkdir(exist_ok=True)
    golden = {"sample": outputs(sample_files()), "pydocs": outputs(pydocs_files()),
              "pydocs-all": outputs(pydocs_files(every=True))}
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}")
