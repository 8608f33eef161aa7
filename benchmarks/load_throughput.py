"""Load-stage throughput per format, before and after "parsing costs what it must" (issue 16).

Runs, in one process and file by file alternately (so both see the same machine load):
  before  the old path: ``load.languages: [auto]`` (langdetect), ``load.element_types: nlp``
          (unstructured's spaCy sentence/verb heuristics) and ``load.html_drop`` applied with
          BeautifulSoup (the implementation this change replaced, kept here as the reference);
  after   the defaults: ``languages: [eng]``, ``element_types: markup``, ``html_drop`` with
          lxml + cssselect on the tree unstructured parses (one parse per page).
Both call :func:`ragline.pipelines.load.load_document` in this process (no worker pool, so
the CPU time is the parsing's own) and print, per format, MB/s, documents/s, CPU ms per
document and the CPU ratio before/after (target: after <= 1/3 of before). Then both runs'
documents are chunked with the ``token`` (default) and ``structure`` strategies and compared:
identical document texts, element boundaries, titles, section paths and chunks, and the
element types that differ (``NarrativeText`` <-> ``Text`` only, which no chunker reads).

    nice -n 5 .venv/bin/python benchmarks/load_throughput.py [--html-limit 60] [--md-limit 30] [--txt-limit 30] [--json]

Formats: Markdown = 8 KB pieces (cut at blank lines) of ../shared/datasets/chunking-eval's
corpora, like the 5,000 x 8 KB Markdown ingest the issue measured; plain text = the same pieces
as ``.txt`` files; HTML = Python's
documentation (``apt-get install python3.11-doc``), ``--html-limit`` pages spread over the
sorted list; plus the bundled sample corpus's Markdown/HTML/text files.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragline.core.offline import set_offline_env  # noqa: E402

set_offline_env()

PYDOCS = Path("/usr/share/doc/python3.11-doc/html")
CORPORA = ROOT.parent / "shared" / "datasets" / "chunking-eval" / "corpora"
TARGET = 1 / 3


def partition_html_bs4(text: str, html_drop: Sequence[str], languages: list[str]) -> list:
    """``_partition_html`` before this change: the page stripped with BeautifulSoup, serialized,
    then partitioned (unstructured's default element ids)."""
    from unstructured.partition.html import partition_html

    return partition_html(text=strip_html_bs4(text, html_drop), languages=languages)


def strip_html_bs4(text: str, selectors: Sequence[str]) -> str:
    """The ``load.html_drop`` implementation before this change (BeautifulSoup + soupsieve)."""
    if not selectors:
        return text
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "lxml")
    hits = soup.select(", ".join(selectors))
    if not hits:
        return text
    for el in hits:
        el.decompose()
    return str(soup)


def markdown_pieces(out: Path, limit: int, size: int = 8000, suffix: str = ".md") -> list[Path]:
    """Cut the chunking-eval corpora into ~``size``-character Markdown files (at blank lines),
    named ``*{suffix}`` (``.txt``: the same prose parsed as plain text)."""
    out.mkdir(parents=True, exist_ok=True)
    corpora = sorted(CORPORA.glob("*.md"))
    per = max(1, -(-limit // max(len(corpora), 1)))
    files = []
    for c in corpora:
        text, i, n = c.read_text(encoding="utf-8"), 0, 0
        while i < len(text) and n < per and len(files) < limit:
            j = text.find("\n\n", i + size)
            j = len(text) if j < 0 else j
            p = out / f"{c.stem}-{n:03d}{suffix}"
            p.write_text(text[i:j], encoding="utf-8")
            files.append(p)
            i, n = j, n + 1
    return files


def spread(paths: list[Path], limit: int) -> list[Path]:
    if limit <= 0 or limit >= len(paths):
        return paths
    step = len(paths) / limit
    return [paths[int(k * step)] for k in range(limit)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--html-limit", type=int, default=60, help="Python docs pages (0 = all 530)")
    ap.add_argument("--md-limit", type=int, default=30, help="8 KB Markdown files")
    ap.add_argument("--txt-limit", type=int, default=30, help="8 KB plain-text files (the same pieces as .txt)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()

    import ragline.pipelines.load_preload  # noqa: F401  (the workers' warm state: spaCy, parsers)
    from ragline.pipelines import load
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.config import ChunkConfig, LoadConfig

    work = Path(tempfile.mkdtemp(prefix="ragline-loadbench-"))
    sets: dict[str, list[Path]] = {"markdown": markdown_pieces(work / "md", args.md_limit),
                                   "plain text": markdown_pieces(work / "txt", args.txt_limit, suffix=".txt")}
    if PYDOCS.is_dir():
        sets["html (python docs)"] = spread(sorted(PYDOCS.resolve().rglob("*.html")), args.html_limit)
    else:
        print(f"note: {PYDOCS} missing (apt-get install python3.11-doc); HTML row skipped", file=sys.stderr)
    sample = sorted((ROOT / "data" / "sample").glob("*"))
    sets["sample md/html/txt"] = [p for p in sample if p.suffix in (".md", ".html", ".txt")]

    modes = {
        "before": (LoadConfig(workers=1, languages=["auto"], element_types="nlp"), partition_html_bs4),
        "after": (LoadConfig(workers=1), load._partition_html),
    }
    current = load._partition_html
    rows, docs = [], {m: [] for m in modes}
    for name, files in sets.items():
        cpu = dict.fromkeys(modes, 0.0)
        wall = dict.fromkeys(modes, 0.0)
        for f in files:
            src = load.SourceFile(f, f.as_posix())
            for mode, (cfg, partition) in modes.items():
                load._partition_html = partition
                try:
                    c0, w0 = time.process_time(), time.perf_counter()
                    r = load.load_document(src, cfg)
                    cpu[mode] += time.process_time() - c0
                    wall[mode] += time.perf_counter() - w0
                finally:
                    load._partition_html = current
                docs[mode].append(r)
        mb = sum(f.stat().st_size for f in files) / 1e6
        row = {"format": name, "files": len(files), "mb": round(mb, 3)}
        for mode in modes:
            row[f"{mode}_cpu_ms_per_doc"] = round(1000 * cpu[mode] / len(files), 1)
            row[f"{mode}_mb_per_s"] = round(mb / wall[mode], 3)
            row[f"{mode}_docs_per_s"] = round(len(files) / wall[mode], 2)
        row["cpu_after_over_before"] = round(cpu["after"] / cpu["before"], 3)
        row["target_met"] = row["cpu_after_over_before"] <= TARGET
        rows.append(row)

    # same documents, same chunks?
    diff: dict = {"quarantined": [], "text_or_boundaries": [], "titles_or_sections": [],
                  "element_types": collections.Counter(), "chunks": {}}
    pairs = list(zip(docs["before"], docs["after"]))
    for b, a in pairs:
        if not isinstance(b, load.Document) or not isinstance(a, load.Document):
            if type(b) is not type(a) or getattr(b, "error_type", "") != getattr(a, "error_type", ""):
                diff["quarantined"].append(getattr(b, "uri", getattr(b, "path", "")))
            continue
        if b.text != a.text or [(e.char_start, e.char_end) for e in b.elements] != \
                [(e.char_start, e.char_end) for e in a.elements]:
            diff["text_or_boundaries"].append(b.uri)
            continue
        if b.title != a.title or [e.section_path for e in b.elements] != [e.section_path for e in a.elements] or \
                [e.type == "Title" for e in b.elements] != [e.type == "Title" for e in a.elements] or \
                [e.type == "Table" for e in b.elements] != [e.type == "Table" for e in a.elements]:
            diff["titles_or_sections"].append(b.uri)
        for eb, ea in zip(b.elements, a.elements):
            if eb.type != ea.type:
                diff["element_types"][f"{eb.type} -> {ea.type}"] += 1
    ok = [(b, a) for b, a in pairs if isinstance(b, load.Document) and isinstance(a, load.Document)]
    n_elements = sum(len(b.elements) for b, _ in ok)
    for strategy in ("token", "structure"):
        cfg = ChunkConfig(strategy=strategy)
        tb, _ = chunk_documents([b for b, _ in ok], cfg)
        ta, _ = chunk_documents([a for _, a in ok], cfg)
        cols = ["chunk_id", "char_start", "char_end", "text", "section_path", "page", "context"]
        same = tb.select(cols).to_pylist() == ta.select(cols).to_pylist()
        diff["chunks"][strategy] = {"before": tb.num_rows, "after": ta.num_rows, "identical": same}
    diff["element_types"] = dict(diff["element_types"])
    diff["elements_compared"] = n_elements
    shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps({"formats": rows, "comparison": diff}, indent=2))
        return 0
    head = (f"{'format':<20} {'files':>5} {'MB':>6} | {'before MB/s':>11} {'docs/s':>7} {'CPU ms/doc':>10} | "
            f"{'after MB/s':>10} {'docs/s':>7} {'CPU ms/doc':>10} | {'CPU after/before':>16}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['format']:<20} {r['files']:>5} {r['mb']:>6.2f} | {r['before_mb_per_s']:>11.3f} "
              f"{r['before_docs_per_s']:>7.2f} {r['before_cpu_ms_per_doc']:>10.1f} | {r['after_mb_per_s']:>10.3f} "
              f"{r['after_docs_per_s']:>7.2f} {r['after_cpu_ms_per_doc']:>10.1f} | "
              f"{r['cpu_after_over_before']:>10.3f} {'(met)' if r['target_met'] else '(MISSED)':>5}")
    print(f"target: CPU per document after <= 1/3 of before ({TARGET:.3f})")
    print(f"documents with different text/element boundaries: {len(diff['text_or_boundaries'])} "
          f"{diff['text_or_boundaries'][:5]}")
    print(f"documents with different titles/section paths/Title-Table elements: {len(diff['titles_or_sections'])} "
          f"{diff['titles_or_sections'][:5]}")
    print(f"different quarantine outcome: {len(diff['quarantined'])} {diff['quarantined'][:5]}")
    print(f"element types changed (of {n_elements}): {diff['element_types'] or 'none'}")
    for strategy, c in diff["chunks"].items():
        print(f"chunks ({strategy}): before {c['before']}, after {c['after']}, identical: {c['identical']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
