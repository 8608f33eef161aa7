"""Throughput (MB/s of UTF-8 input) of ragline's chunkers on the chunking-eval corpora.

Usage (from the repo root)::

    .venv/bin/python benchmarks/chunker_speed.py                  # token and recursive
    .venv/bin/python benchmarks/chunker_speed.py --strategies token recursive sentence structure
    .venv/bin/python benchmarks/chunker_speed.py --json build/chunker_speed.json

Each row is a name and a factory ``max_tokens -> (text -> chunks)``; peers (Chonkie,
LangChain, ...) are added as extra rows by a script running in the benchmark env, e.g.::

    from chunker_speed import Row, load_corpora, run
    rows = [*our_rows(["recursive"]), Row("chonkie.RecursiveChunker", make_chonkie)]
    run(rows, load_corpora(CORPORA), max_tokens=256, repeats=5)

Every row chunks all corpora once to warm up (tokenizer load, caches), then ``repeats``
times; the table reports the best and the median pass. Input size is the UTF-8 byte size of
the corpora (1.45 MB for the five chunking-eval files). Nothing here uses the network.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ragline.chunkers.registry import get_chunker  # noqa: E402

#: Where the chunking-eval corpora live: shared/ sits beside the repository checkout.
CORPORA = REPO.parent / "shared" / "datasets" / "chunking-eval" / "corpora"

#: A chunker under test: ``max_tokens -> (document text -> list of chunks)``.
ChunkFn = Callable[[str], Sequence[Any]]


@dataclass(frozen=True)
class Row:
    """One line of the table: a display name and a factory of chunk functions."""

    name: str
    build: Callable[[int], ChunkFn]


@dataclass(frozen=True)
class Result:
    """Throughput of one row (MB = 10**6 bytes of UTF-8 input)."""

    name: str
    max_tokens: int
    mb: float
    best_mb_s: float
    median_mb_s: float
    chunks: int


def our_rows(strategies: Sequence[str]) -> list[Row]:
    """Rows for ragline strategies built through the registry (``chunk(text)`` only)."""

    def factory(strategy: str) -> Callable[[int], ChunkFn]:
        def build(max_tokens: int) -> ChunkFn:
            return get_chunker(strategy, max_tokens=max_tokens).chunk

        return build

    return [Row(f"ragline.{s}", factory(s)) for s in strategies]


def load_corpora(folder: Path) -> list[str]:
    """Texts of every ``*.md`` file in ``folder``, read as UTF-8, sorted by name.

    Raises:
        FileNotFoundError: if the folder has no ``*.md`` file.
    """
    paths = sorted(folder.glob("*.md"))
    if not paths:
        raise FileNotFoundError(f"no *.md corpora in {folder}; pass --corpora DIR")
    return [p.read_text(encoding="utf-8") for p in paths]


def measure(row: Row, texts: Sequence[str], *, max_tokens: int, repeats: int) -> Result:
    """Chunk all ``texts`` once to warm up, then ``repeats`` timed passes."""
    chunk = row.build(max_tokens)
    n_chunks = sum(len(chunk(t)) for t in texts)
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for t in texts:
            chunk(t)
        times.append(time.perf_counter() - t0)
    return Result(row.name, max_tokens, mb, mb / min(times), mb / statistics.median(times), n_chunks)


def run(rows: Sequence[Row], texts: Sequence[str], *, max_tokens: int, repeats: int) -> list[Result]:
    """Measure every row and print a Markdown table; return the results."""
    results = [measure(r, texts, max_tokens=max_tokens, repeats=repeats) for r in rows]
    print("| chunker | max_tokens | MB | best MB/s | median MB/s | chunks |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.name} | {r.max_tokens} | {r.mb:.2f} | {r.best_mb_s:.2f} | {r.median_mb_s:.2f} | {r.chunks} |")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=CORPORA, help="folder of *.md corpora")
    parser.add_argument("--strategies", nargs="+", default=["token", "recursive"])
    parser.add_argument("--max-tokens", type=int, nargs="+", default=[256], help="budgets (tokens)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here (list of objects)")
    args = parser.parse_args(argv)

    texts = load_corpora(args.corpora)
    rows = our_rows(args.strategies)
    results = [res for mt in args.max_tokens for res in run(rows, texts, max_tokens=mt, repeats=args.repeats)]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n", encoding="utf-8")
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
