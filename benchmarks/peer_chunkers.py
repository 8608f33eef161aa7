"""ragline's chunkers against peer chunkers on the span-labelled chunking-eval dataset.

Run with ``make bench-peers`` (it creates ``benchmarks/.venv-peers`` with the pinned peers of
``benchmarks/requirements-peers.txt``; that venv also sees the project venv through a .pth
line, so ragline itself is shared and the peers never become ragline dependencies)::

    benchmarks/.venv-peers/bin/python benchmarks/peer_chunkers.py [--dataset DIR] [-k 5]
        [--ours "recursive:max_tokens=128,overlap_tokens=32,context=true" ...]
        [--peer-size 200 --peer-overlap 0 ...] [--repeats 3] [--json FILE]

Every chunker is evaluated the same way: one FAISS index (exact inner product over
normalized all-MiniLM-L6-v2 vectors, embedded through ragline's persistent cache) over the
chunks of all corpora, k chunks per question, Chroma's metrics
(:mod:`pipelines.evaluate_chunking`). Quality uses the whole dataset (472 questions).

Offsets. ragline's chunkers return exact offsets. A peer that returns offsets (Chonkie) is
checked: ``corpus[start:end] == chunk.text``; a wrong one is counted ("wrong") and the chunk
is located by search instead. Peers that return only strings (LangChain, LlamaIndex) are
located as Chroma's evaluation does, by searching the chunk text in the corpus — here with
``str.find`` from the previous chunk's start (so repeated passages map in order, which is
better than Chroma's search from the beginning), then from the start of the corpus, then
ignoring whitespace differences; a chunk still not found is dropped and counted
("unmapped"). That search is acceptable for peers in a benchmark, never in ragline.

Speed. Chunking MB/s = UTF-8 MB of all corpora / the best of ``--repeats`` timings of
chunking every corpus (one thread). For peers the split alone is timed ("MB/s"); the
column "MB/s+off" also includes locating offsets. Targets compare ragline against the
peers' split-only speed (the stricter comparison).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ragline.core.offline import set_offline_env  # noqa: E402

set_offline_env()

from ragline.chunkers.registry import get_chunker  # noqa: E402
from ragline.chunkers.tokenizer import get_encoding  # noqa: E402
from ragline.indexers.cache import EmbeddingCache, embed_with_cache  # noqa: E402
from ragline.indexers.embedders import info_of  # noqa: E402
from ragline.pipelines.embed import index_embedder  # noqa: E402
from ragline.indexers.faiss_index import FaissSpec, build_faiss_index, search  # noqa: E402
from ragline.pipelines.config import Params, load_params  # noqa: E402
from ragline.pipelines.evaluate_chunking import (  # noqa: E402
    EvalDataset,
    MetricMeans,
    config_label,
    evaluate_chunking,
    load_dataset,
    score_chunks,
)

#: Targets of issue 4 (k = 5, all-MiniLM-L6-v2, 472 questions).
TARGET_RECALL = 0.85
TARGET_IOU = 0.05
#: Our default configurations (the first is the README's reference point).
DEFAULT_OURS = (
    "token:max_tokens=200,overlap_tokens=0",
    "recursive:max_tokens=200,overlap_tokens=0",
    "sentence:max_tokens=200,overlap_sentences=1",
    "token:max_tokens=200,overlap_tokens=50",
    "token:max_tokens=200,overlap_tokens=50,context=true",
    "sentence:max_tokens=200,overlap_sentences=1,context=true",
)


@dataclass
class Row:
    """One chunker's line in the table."""

    family: str  # "ragline" or the peer library
    name: str
    config: str
    metrics: MetricMeans | None = None
    chunks: int = 0
    mean_tokens: float = 0.0
    mb_per_s: float = 0.0
    mb_per_s_offsets: float = 0.0
    offsets: str = "exact"
    error: str = ""


# ------------------------------------------------------------------------- peer splitters
def peer_factories(size: int, overlap: int) -> dict[str, Callable[[], Any]]:
    """name -> zero-argument constructor of a peer splitter (cl100k tokens, the same encoding
    ragline uses, so sizes mean the same thing)."""
    enc = get_encoding()

    def lc_recursive():
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        return RecursiveCharacterTextSplitter.from_tiktoken_encoder(
            encoding_name=enc.name, chunk_size=size, chunk_overlap=overlap)

    def lc_token():
        from langchain_text_splitters import TokenTextSplitter

        return TokenTextSplitter(encoding_name=enc.name, chunk_size=size, chunk_overlap=overlap)

    def ck_token():
        from chonkie import TokenChunker

        return TokenChunker(tokenizer=enc, chunk_size=size, chunk_overlap=overlap)

    def ck_recursive():
        from chonkie import RecursiveChunker

        return RecursiveChunker(tokenizer=enc, chunk_size=size)  # takes no overlap

    def ck_sentence():
        from chonkie import SentenceChunker

        return SentenceChunker(tokenizer=enc, chunk_size=size, chunk_overlap=overlap)

    def li_sentence():
        from llama_index.core.node_parser import SentenceSplitter

        return SentenceSplitter(chunk_size=size, chunk_overlap=overlap, tokenizer=enc.encode)

    return {
        "langchain RecursiveCharacterTextSplitter": lc_recursive,
        "langchain TokenTextSplitter": lc_token,
        "chonkie TokenChunker": ck_token,
        "chonkie RecursiveChunker": ck_recursive,
        "chonkie SentenceChunker": ck_sentence,
        "llama-index SentenceSplitter": li_sentence,
    }


def split_peer(splitter: Any, text: str) -> list[Any]:
    """Run a peer splitter: Chonkie objects have ``chunk``, LangChain/LlamaIndex ``split_text``."""
    return splitter.chunk(text) if hasattr(splitter, "chunk") else splitter.split_text(text)


def locate_chunks(corpus: str, pieces: Sequence[Any]) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """Character spans of peer chunks in ``corpus`` (see the module docstring).

    Returns:
        ``(spans, counts)``: one ``(start, end)`` per located chunk, in order, and counts of
        ``exact`` (peer offsets verified), ``wrong`` (peer offsets that did not match),
        ``found`` (located by search) and ``unmapped`` (dropped).
    """
    spans: list[tuple[int, int]] = []
    counts = {"exact": 0, "wrong": 0, "found": 0, "unmapped": 0}
    last = 0
    for piece in pieces:
        text = piece if isinstance(piece, str) else piece.text
        if not isinstance(piece, str) and hasattr(piece, "start_index"):
            s, e = int(piece.start_index), int(piece.end_index)
            if corpus[s:e] == text and e > s:
                spans.append((s, e))
                counts["exact"] += 1
                last = s
                continue
            counts["wrong"] += 1
        if not text:
            counts["unmapped"] += 1
            continue
        s = corpus.find(text, last)
        if s < 0:
            s = corpus.find(text)
        if s >= 0:
            e = s + len(text)
        else:
            m = _loose_search(corpus, text, last) or _loose_search(corpus, text, 0)
            if m is None:
                counts["unmapped"] += 1
                continue
            s, e = m
        spans.append((s, e))
        counts["found"] += 1
        last = s
    return spans, counts


def _loose_search(corpus: str, text: str, start: int) -> tuple[int, int] | None:
    words = text.split()
    if not words:
        return None
    m = re.compile(r"\s*".join(re.escape(w) for w in words)).search(corpus, start)
    return (m.start(), m.end()) if m else None


# ------------------------------------------------------------------------------- timing
def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Best wall time (s) of ``repeats`` calls and the last result."""
    best, result = float("inf"), None
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def parse_ours(spec: str) -> dict[str, Any]:
    """``"recursive:max_tokens=128,overlap_tokens=32,context=true"`` -> a ``chunk:`` section."""
    strategy, _, rest = spec.partition(":")
    chunk: dict[str, Any] = {"strategy": strategy.strip()}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, _, value = item.partition("=")
        v: Any = value.strip()
        if v.lower() in ("true", "false"):
            v = v.lower() == "true"
        else:
            try:
                v = int(v)
            except ValueError:
                pass
        chunk[key.strip()] = v
    return chunk


# ---------------------------------------------------------------------------- benchmark
def run_ours(dataset: EvalDataset, base: Params, spec: str, k: int, embedder: Any, repeats: int,
             speed_only: bool = False) -> Row:
    """Quality through :func:`evaluate_chunking`; speed of the bare chunker on every corpus."""
    data = base.to_dict()
    data["chunk"] = parse_ours(spec)
    params = Params.from_dict(data, source=f"--ours {spec}")
    chunker = get_chunker(params.chunk.strategy, **params.chunk.strategy_options())
    texts = list(dataset.corpora.values())
    seconds, chunked = best_time(lambda: [chunker.chunk(t, doc_id="bench") for t in texts], repeats)
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    label = config_label({"strategy": params.chunk.strategy, "options": params.chunk.strategy_options(),
                          "context": params.chunk.context})
    if speed_only:
        tokens = [c.token_count for cs in chunked for c in cs]
        return Row("ragline", params.chunk.strategy, label, None, len(tokens), float(np.mean(tokens)),
                   mb / seconds, mb / seconds, "exact")
    result = evaluate_chunking(dataset, params, k, embedder)
    return Row("ragline", params.chunk.strategy, label, result.overall, result.chunks,
               result.mean_chunk_tokens, mb / seconds, mb / seconds, "exact")


def run_peer(dataset: EvalDataset, name: str, factory: Callable[[], Any], size: int, overlap: int, k: int,
             embedder: Any, cache_dir: str, batch_size: int, qvecs: np.ndarray | None, repeats: int) -> Row:
    """One peer: split every corpus (timed), locate offsets (timed), embed, search, score."""
    family = name.split()[0]
    config = f"{size}/{overlap}" if "RecursiveChunker" not in name else f"{size}/-"
    try:
        splitter = factory()
    except ImportError as e:
        return Row(family, name, config, error=f"not installed ({e.name}); run `make bench-peers`")
    texts = list(dataset.corpora.items())
    split_s, pieces = best_time(lambda: [split_peer(splitter, t) for _, t in texts], repeats)
    t0 = time.perf_counter()
    located = [locate_chunks(t, p) for (_, t), p in zip(texts, pieces)]
    locate_s = time.perf_counter() - t0
    corpus_ids, starts, ends, chunk_texts = [], [], [], []
    counts = {"exact": 0, "wrong": 0, "found": 0, "unmapped": 0}
    for (cid, text), (spans, c) in zip(texts, located):
        for key in counts:
            counts[key] += c[key]
        for s, e in spans:
            corpus_ids.append(cid)
            starts.append(s)
            ends.append(e)
            chunk_texts.append(text[s:e])
    enc = get_encoding()
    tokens = [len(enc.encode(t, disallowed_special=())) for t in chunk_texts]
    mb = sum(len(t.encode("utf-8")) for _, t in texts) / 1e6
    offsets = ", ".join(f"{v} {k_}" for k_, v in counts.items() if v)
    if qvecs is None:  # --speed-only
        return Row(family, name, config, None, len(chunk_texts), float(np.mean(tokens)), mb / split_s,
                   mb / (split_s + locate_s), offsets)
    cache = EmbeddingCache(cache_dir, info_of(embedder))
    try:
        vectors, _ = embed_with_cache(chunk_texts, embedder, cache, batch_size)
    finally:
        cache.close()
    _, rows = search(build_faiss_index(vectors, FaissSpec("Flat", "ip")), qvecs, k)
    per_q, _ = score_chunks(dataset, corpus_ids, starts, ends, rows)
    return Row(family, name, config, MetricMeans.of(per_q), len(chunk_texts), float(np.mean(tokens)),
               mb / split_s, mb / (split_s + locate_s), offsets)


def targets(rows: list[Row]) -> list[tuple[str, bool, str]]:
    """The issue's targets: (description, met, evidence)."""
    out: list[tuple[str, bool, str]] = []
    ours = [r for r in rows if r.family == "ragline" and r.metrics]
    peers = [r for r in rows if r.family != "ragline" and r.metrics]
    good = [r for r in ours if r.metrics.iou >= TARGET_IOU] or ours
    best = max(good, key=lambda r: r.metrics.recall, default=None)
    if best:
        out.append((f"best ragline config recall >= {TARGET_RECALL} with IoU >= {TARGET_IOU}",
                    best.metrics.recall >= TARGET_RECALL and best.metrics.iou >= TARGET_IOU,
                    f"{best.config}: recall {best.metrics.recall:.3f}, IoU {best.metrics.iou:.3f}"))
    if ours and peers:
        bp = max(peers, key=lambda r: (r.metrics.recall, r.metrics.iou))
        beat = [r for r in ours if r.metrics.recall > bp.metrics.recall and r.metrics.iou >= bp.metrics.iou]
        win = max(beat, key=lambda r: r.metrics.recall, default=None)
        out.append(("a ragline config beats the best peer's recall at equal or better IoU", win is not None,
                    f"best peer {bp.name} {bp.config}: recall {bp.metrics.recall:.3f}, IoU {bp.metrics.iou:.3f}; "
                    + (f"ragline {win.config}: recall {win.metrics.recall:.3f}, IoU {win.metrics.iou:.3f}"
                       if win else "no ragline config does")))

    def speed(family: str, name: str) -> float | None:
        vals = [r.mb_per_s for r in rows if r.name == name and r.family == family and r.mb_per_s]
        return max(vals) if vals else None

    for ours_name, peer_name, factor in (("token", "chonkie TokenChunker", 1.0),
                                         ("recursive", "chonkie RecursiveChunker", 1.0),
                                         ("recursive", "langchain RecursiveCharacterTextSplitter", 2.0)):
        a, b = speed("ragline", ours_name), speed(peer_name.split()[0], peer_name)
        if a is not None and b is not None:
            out.append((f"ragline {ours_name} >= {factor:g}x {peer_name} (MB/s)", a >= factor * b,
                        f"{a:.2f} vs {b:.2f} MB/s ({a / b:.2f}x)"))
    return out


def print_table(rows: list[Row], k: int, n_questions: int, model: str) -> None:
    """One rich table of every chunker, then the targets."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 180)
    t = Table(title=f"chunkers on chunking-eval: k={k}, {n_questions} questions, {model}")
    for col in ("library", "chunker", "config", "recall", "precision", "IoU", "precision_Ω", "chunks",
                "mean tokens", "MB/s", "MB/s+off", "offsets"):
        t.add_column(col, justify="right" if col not in ("library", "chunker", "config", "offsets") else "left")
    for r in rows:
        if r.error:
            t.add_row(r.family, r.name, r.config, *[""] * 8, r.error)
            continue
        if r.metrics is None:  # --speed-only
            t.add_row(r.family, r.name, r.config, "", "", "", "", str(r.chunks), f"{r.mean_tokens:.0f}",
                      f"{r.mb_per_s:.2f}", f"{r.mb_per_s_offsets:.2f}", r.offsets)
            continue
        m = r.metrics
        t.add_row(r.family, r.name, r.config, f"{m.recall:.3f}", f"{m.precision:.3f}", f"{m.iou:.3f}",
                  f"{m.precision_omega:.3f}", str(r.chunks), f"{r.mean_tokens:.0f}", f"{r.mb_per_s:.2f}",
                  f"{r.mb_per_s_offsets:.2f}", r.offsets)
    console.print(t)
    for desc, met, evidence in targets(rows):
        console.print(f"[{'green' if met else 'red'}]{'MET    ' if met else 'NOT MET'}[/] {desc}: {evidence}",
                      highlight=False, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default=None, help="dataset folder (default: eval.dataset from params)")
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--params", default=str(REPO / "params.yaml"), help="params file (embed.*, paths.cache)")
    ap.add_argument("--cache", default=None, help="embedding cache folder (default: paths.cache, relative to the repo)")
    ap.add_argument("--ours", action="append", default=None,
                    help="ragline config 'strategy:key=value,...' (repeatable; default: DEFAULT_OURS)")
    ap.add_argument("--peer-size", type=int, action="append", default=None, help="peer chunk size in tokens (repeatable)")
    ap.add_argument("--peer-overlap", type=int, action="append", default=None,
                    help="peer overlap in tokens (repeatable; default 0 and 50)")
    ap.add_argument("--peers", default="all", help="comma-separated peer name substrings, 'all' or 'none'")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (best is kept)")
    ap.add_argument("--limit-questions", type=int, default=None)
    ap.add_argument("--speed-only", action="store_true", help="chunking speed and counts only (no embedding)")
    ap.add_argument("--json", dest="json_out", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)

    base = load_params(args.params)
    cache = args.cache or str((REPO / base.paths.cache) if not Path(base.paths.cache).is_absolute() else base.paths.cache)
    data = base.to_dict()
    data["paths"]["cache"] = cache
    base = Params.from_dict(data)
    dataset_dir = args.dataset or str((REPO / base.eval.dataset).resolve())
    dataset = load_dataset(dataset_dir, None, args.limit_questions)
    embedder = index_embedder(base)
    rows: list[Row] = []
    for spec in args.ours or DEFAULT_OURS:
        print(f"ragline {spec} ...", file=sys.stderr, flush=True)
        rows.append(run_ours(dataset, base, spec, args.k, embedder, args.repeats, args.speed_only))
    if args.peers != "none":
        qvecs = None
        if not args.speed_only:
            qcache = EmbeddingCache(cache, info_of(embedder))
            try:
                qvecs, _ = embed_with_cache([q.question for q in dataset.questions], embedder, qcache,
                                            base.embed.batch_size)
            finally:
                qcache.close()
        wanted = None if args.peers == "all" else [p.strip().lower() for p in args.peers.split(",")]
        for size in args.peer_size or [200]:
            for overlap in args.peer_overlap or [0, 50]:
                for name, factory in peer_factories(size, overlap).items():
                    if wanted and not any(w in name.lower() for w in wanted):
                        continue
                    if overlap and "RecursiveChunker" in name:
                        continue  # Chonkie's recursive chunker takes no overlap
                    print(f"{name} {size}/{overlap} ...", file=sys.stderr, flush=True)
                    rows.append(run_peer(dataset, name, factory, size, overlap, args.k, embedder, cache,
                                         base.embed.batch_size, qvecs, args.repeats))
    print_table(rows, args.k, len(dataset.questions), base.embed.model + (" (speed only)" if args.speed_only else ""))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            [{**dataclasses.asdict(r), "metrics": dataclasses.asdict(r.metrics) if r.metrics else None} for r in rows]
            + [{"target": d, "met": m, "evidence": e} for d, m, e in targets(rows)], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
