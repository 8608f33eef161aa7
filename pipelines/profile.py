"""``ragline index profile``: what a published version's data is (exploratory data analysis).

:func:`build_profile` reads a version's tables and curation files and returns a JSON-ready
dict; :func:`render_html` turns it into one self-contained HTML page whose histograms are PNG
pictures (matplotlib, Agg backend) embedded as ``data:`` URIs, so the report opens offline.
Languages are detected with langdetect (a port of Nakatani Shuyo's language-detection,
naive Bayes over character n-grams), seeded for repeatable results, on the first
:data:`LANG_CHARS` characters of each document.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow.parquet as pq

#: Characters of each document handed to the language detector.
LANG_CHARS = 2000
#: Largest documents listed.
TOP_DOCS = 10


def _detect(text: str) -> str:
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0
    try:
        return detect(text[:LANG_CHARS]) if text.strip() else "unknown"
    except LangDetectException:
        return "unknown"


def _histogram(values: list[int], bins: int = 20) -> dict[str, Any]:
    if not values:
        return {"count": 0, "min": None, "median": None, "p95": None, "max": None, "bins": [], "counts": []}
    a = np.asarray(values, dtype=np.float64)
    counts, edges = np.histogram(a, bins=min(bins, max(1, len(set(values)))))
    return {"count": len(values), "min": int(a.min()), "median": float(np.median(a)), "p95": float(np.percentile(a, 95)),
            "max": int(a.max()), "bins": [round(float(e), 1) for e in edges], "counts": counts.astype(int).tolist()}


def build_profile(registry: Any, name: str, version: str) -> dict[str, Any]:
    """The data profile of one version: its live documents and chunks, over its segments.

    Args:
        registry: the :class:`indexers.registry.IndexRegistry` (its files already verified by the caller).
        name, version: the version.

    Returns:
        Dict with ``documents`` (count, ``by_type``, ``by_folder``), ``text_chars`` and
        ``chunk_tokens`` histograms (count, min, median, p95, max, bin edges, counts),
        ``languages`` (code -> documents), ``pdf_pages`` (uri -> pages), ``quarantine``
        (error type -> files), ``curation`` (the counts of ``curation.json``, or ``None``), and
        ``largest`` (the :data:`TOP_DOCS` longest documents: uri, chars, chunks).
    """
    folder = Path(registry.version_dir(name, version))
    docs = registry.live_table(name, version, "documents", ["doc_id", "uri", "mime_type", "text", "elements"])
    chunks = registry.live_table(name, version, "chunks", ["doc_id", "token_count"])
    uris = docs.column("uri").to_pylist()
    texts = docs.column("text").to_pylist()
    mimes = docs.column("mime_type").to_pylist()
    per_doc = Counter(chunks.column("doc_id").to_pylist())
    pdf_pages = {}
    for uri, mime, els in zip(uris, mimes, docs.column("elements").to_pylist()):
        if mime == "application/pdf":
            pages = [e["page"] for e in els or [] if e.get("page") is not None]
            pdf_pages[uri] = max(pages) if pages else 0
    quarantine: Counter[str] = Counter()
    if (folder / "quarantine.parquet").exists():
        quarantine.update(pq.read_table(folder / "quarantine.parquet", columns=["error_type"]).column("error_type").to_pylist())
    curation = None
    if (folder / "curation.json").exists():
        curation = json.loads((folder / "curation.json").read_text(encoding="utf-8")).get("counts")
    order = sorted(range(len(uris)), key=lambda i: (-len(texts[i]), uris[i]))[:TOP_DOCS]
    ids = docs.column("doc_id").to_pylist()
    return {
        "index": name, "version": version,
        "documents": {"count": len(uris), "by_type": dict(Counter(mimes).most_common()),
                      "by_folder": dict(Counter(str(PurePosixPath(u).parent) for u in uris).most_common())},
        "chunks": chunks.num_rows,
        "text_chars": _histogram([len(t) for t in texts]),
        "chunk_tokens": _histogram(chunks.column("token_count").to_pylist()),
        "languages": dict(Counter(_detect(t) for t in texts).most_common()),
        "pdf_pages": pdf_pages,
        "quarantine": dict(quarantine.most_common()),
        "curation": curation,
        "largest": [{"uri": uris[i], "chars": len(texts[i]), "chunks": per_doc.get(ids[i], 0)} for i in order],
    }


def histogram_png(hist: dict[str, Any], title: str, xlabel: str) -> bytes:
    """A PNG (bytes) bar chart of a :func:`build_profile` histogram (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    edges, counts = hist["bins"], hist["counts"]
    if counts:
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4c72b0", edgecolor="white")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return _png(fig)


def _table(rows: list[tuple[Any, ...]], head: tuple[str, ...]) -> str:
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + cells + "</table>"
            if rows else "<p>none</p>")


def render_html(profile: dict[str, Any]) -> str:
    """One self-contained HTML page of ``profile`` (no external resources; pictures inline)."""
    def img(hist: dict[str, Any], title: str, xlabel: str) -> str:
        data = base64.b64encode(histogram_png(hist, title, xlabel)).decode()
        return f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'

    p = profile
    cur = p.get("curation") or {}
    cur_rows = []
    if cur:
        cur_rows = [("documents: exact copies", cur["documents"]["exact"]), ("documents: near copies", cur["documents"]["near"]),
                    ("chunks: exact copies", cur["chunks"]["exact"]), ("chunks: near copies", cur["chunks"]["near"]),
                    ("chunks not indexed", cur["removed_chunks"]),
                    ("documents indexed through a copy", cur["removed_documents"]),
                    ("boilerplate elements removed", cur["boilerplate"]["elements"]),
                    ("boilerplate characters removed", cur["boilerplate"]["chars"])]
    d = p["documents"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>ragline profile {html.escape(p['index'])}@{html.escape(p['version'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}</style></head><body>",
        f"<h1>{html.escape(p['index'])}@{html.escape(p['version'])}</h1>",
        f"<p>{d['count']} documents, {p['chunks']} chunks.</p>",
        "<h2>Documents by type</h2>", _table(list(d["by_type"].items()), ("type", "documents")),
        "<h2>Documents by source folder</h2>", _table(list(d["by_folder"].items()), ("folder", "documents")),
        "<h2>Text length</h2>", img(p["text_chars"], "document text length", "characters"),
        "<h2>Chunk tokens</h2>", img(p["chunk_tokens"], "chunk length", "cl100k_base tokens"),
        "<h2>Languages</h2>", _table(list(p["languages"].items()), ("language", "documents")),
        "<h2>Pages per PDF</h2>", _table(list(p["pdf_pages"].items()), ("PDF", "pages")),
        "<h2>Quarantine</h2>", _table(list(p["quarantine"].items()), ("reason", "files")),
        "<h2>Curation</h2>", _table(cur_rows, ("rule", "count")) if cur else "<p>no curation recorded</p>",
        "<h2>Largest documents</h2>", _table([(r["uri"], r["chars"], r["chunks"]) for r in p["largest"]],
                                             ("source", "characters", "chunks")),
        "</body></html>",
    ]
    return "\n".join(parts)


def overview_png(profile: dict[str, Any]) -> bytes:
    """A PNG (bytes) with the text-length and chunk-token histograms side by side (the README picture)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), dpi=100)
    for ax, (key, title, xlabel) in zip(axes, (("text_chars", "document text length", "characters"),
                                              ("chunk_tokens", "chunk length", "cl100k_base tokens"))):
        hist = profile[key]
        if hist["counts"]:
            ax.bar(hist["bins"][:-1], hist["counts"], width=np.diff(hist["bins"]), align="edge", color="#4c72b0",
                   edgecolor="white")
        ax.set_title(f"{profile['index']}@{profile['version']}: {title}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
    return _png(fig)


def _png(fig) -> bytes:
    """PNG bytes of a matplotlib figure (laid out tight), closed afterwards."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
