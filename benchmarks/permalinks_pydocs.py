#!/usr/bin/env python
"""Count permalink signs (¶) in the chunks and section paths of Python's HTML docs, with the
``load.html_drop`` defaults before permalink anchors were dropped and with today's defaults.

Usage::

    .venv/bin/python benchmarks/permalinks_pydocs.py [--every 13] [--limit 24] [--json]

Needs ``apt-get install python3.11-doc``. Pages: every N-th file of ``library/*.html`` (sorted).
"Before" also restores the old section titles (no ``¶`` stripping), so it shows what a user saw.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path("/usr/share/doc/python3.11/html/library")


def count(folder: Path, html_drop: list[str], strip_titles: bool) -> dict[str, int]:
    from ragline.pipelines import load
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.config import ChunkConfig, LoadConfig

    original = load._section_title
    load._section_title = original if strip_titles else load.normalize_text
    try:
        docs, bad = load.load_documents(load.discover_files([folder]), LoadConfig(workers=1, html_drop=html_drop))
    finally:
        load._section_title = original
    chunks, _ = chunk_documents(docs, ChunkConfig())
    rows = chunks.to_pylist()
    return {
        "pages": len(docs), "quarantined": len(bad), "chunks": len(rows),
        "chunks_with_pilcrow": sum("\u00b6" in r["text"] for r in rows),
        "chunk_section_paths_ending_in_pilcrow": sum(
            any(s.endswith("\u00b6") for s in (r["section_path"] or ())) for r in rows),
        "element_section_paths_ending_in_pilcrow": sum(
            any(s.endswith("\u00b6") for s in e.section_path) for d in docs for e in d.elements),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--every", type=int, default=13, help="take every N-th page (default 13)")
    ap.add_argument("--limit", type=int, default=24, help="at most this many pages (default 24)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    if not DOCS.is_dir():
        print(f"error: {DOCS} not found; apt-get install python3.11-doc", file=sys.stderr)
        return 1
    from ragline.pipelines.config import HTML_BOILERPLATE, HTML_PERMALINKS

    pages = sorted(DOCS.glob("*.html"))[args.every - 1::args.every][: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        for p in pages:
            shutil.copyfile(p, Path(tmp) / p.name)
        old = [s for s in HTML_BOILERPLATE if s not in HTML_PERMALINKS]
        result = {"before": count(Path(tmp), old, strip_titles=False),
                  "after": count(Path(tmp), list(HTML_BOILERPLATE), strip_titles=True)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for label, r in result.items():
            print(f"{label:6}  {r['pages']} pages, {r['chunks']} chunks: {r['chunks_with_pilcrow']} contain ¶, "
                  f"{r['chunk_section_paths_ending_in_pilcrow']} chunk / "
                  f"{r['element_section_paths_ending_in_pilcrow']} element section paths end in ¶")
    return 0


if __name__ == "__main__":
    sys.exit(main())
