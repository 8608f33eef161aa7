"""Scale benchmark for segments (issue 12): a refresh costs the change, not the corpus.

Synthetic prose documents (2-20 KB of plain text, deterministic from ``--seed``), the
``hashing`` embedder (so embedding cost is not in the figures), in one process and on one
machine, with the Prefect API started before anything is timed:

  1. full build: ``ragline ingest`` (the ingest flow: every document parsed, chunked and
     embedded in one stream that writes a segment per ``index.segment_chunks`` chunk rows, so
     its memory does not grow with the corpus); the next steps run as ``ragline refresh``
     does (:func:`pipelines.refresh.run_refresh`: plan under the index lock, then the Prefect
     flow only when something changed);
  2. change ``--change`` of the corpus (half added, half removed; 1% by default) and refresh:
     one new segment for the added documents, tombstones for the removed ones (this first
     refresh reads every file once: an ingest records no file hashes);
  3. a refresh with nothing changed (plan only: scan the files; those whose stat did not change
     since they were hashed are not read, ``refresh.hash_cache``), ``--no-change-runs`` times
     (5): the median is reported. ``--no-change-only --workdir DIR`` times only these on the
     run kept in DIR (a re-measure on a quiet machine without rebuilding).

Prints the refresh/full wall-time ratio (target <= 0.02), the disk the refresh added (new
segment + version folder) against the bytes of the added documents (target <= 3x), and the
no-change refresh wall time (target <= 2 s at 100k documents).

    .venv/bin/python benchmarks/scale.py [--docs 20000] [--change 0.01] [--workdir DIR] [--curate] [--json]

The build and refresh run without curation unless ``--curate`` (then the refresh clusters its
new documents and chunks against the version's, and still writes only the changed documents).

Memory (issue 12, bounded memory): ``--memory 1000,5000`` measures, at each corpus size, the
peak RSS of each phase in a child process of its own (``VmHWM`` after the Prefect API started,
reset through ``/proc/self/clear_refs``): an ingest (``ragline ingest``; ``curate.enabled``
false, then true, each into its own index), then a refresh of each after ``--change`` of the
corpus changed (each writes one new segment beside its parent's). Prints the peaks side by side, peak(largest)/peak(smallest) per phase
(target at 100k/10k documents: <= 1.5) and refresh peak / ingest peak (target <= 1).

    .venv/bin/python benchmarks/scale.py --memory 1000,5000 [--segment-chunks N] [--workdir DIR] [--json]

``--segment-chunks N`` sets ``index.segment_chunks`` of every phase: ``--memory 1000,10000
--segment-chunks 25000`` is the 10k/100k ratio at a tenth of the scale (the small ingest writes
one segment, the large one about ten).

It also prints the peak RSS of the full build and of the refresh (``VmHWM``, reset before
each; the Prefect API already started), so running it at 10k and at 100k documents gives the
bounded-memory ratio of an ingest too.

Ratios, not absolute times, are the result: the machines are shared and noisy. 20,000
documents took about four minutes for the full build on a quiet 2-core machine (469,578 chunks).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragline.core.offline import set_offline_env  # noqa: E402

set_offline_env()
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

SYLLABLES = ("ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "dan", "bel", "tor", "ish", "gar", "fen", "qu",
             "ab", "ul", "or", "ex", "hy", "zo", "wen", "pra")


def vocabulary(rng: random.Random, n: int = 20000) -> list[str]:
    """``n`` pseudo-words of 1-4 syllables."""
    return ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(n)]


def prose(rng: random.Random, words: list[str], size_bytes: int) -> str:
    """Paragraphs of sentences of Zipf-distributed words, about ``size_bytes`` long."""
    out, total = [], 0
    while total < size_bytes:
        sentences = []
        for _ in range(rng.randint(3, 8)):
            n = rng.randint(6, 22)
            sent = " ".join(words[min(int(rng.paretovariate(1.1)) - 1, len(words) - 1)] if rng.random() < 0.6
                            else rng.choice(words) for _ in range(n))
            sentences.append(sent.capitalize() + ".")
        para = " ".join(sentences)
        out.append(para)
        total += len(para) + 2
    return "\n\n".join(out)[:size_bytes]


def write_doc(folder: Path, i: int, rng: random.Random, words: list[str]) -> int:
    text = f"Document {i}\n\n" + prose(rng, words, rng.randint(2048, 20480))
    path = folder / f"{i // 1000:03d}" / f"doc-{i:06d}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path.stat().st_size


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def file_sizes(folder: Path) -> dict[str, int]:
    """``{relative path: bytes}`` of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def peak_rss_reset() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS; False where Linux does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (``VmHWM``, else ``ru_maxrss``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_params(work: Path, curate: bool, segment_chunks: int | None = None) -> dict:
    """Params of a memory phase: hashing embedder, the corpus of ``work``, one index per curate
    setting; ``segment_chunks``: ``index.segment_chunks`` (default: params.yaml's)."""
    from ragline.pipelines.config import Params

    params = Params().to_dict()
    params["load"].update(sources=[str(work / "docs")], workers=2)
    params["embed"].update(model="hashing")
    params["index"].update(name="scale", root=str(work / ("indexes-curated" if curate else "indexes")))
    params["paths"].update(cache=str(work / ("cache-curated" if curate else "cache")))
    params["promote"].update(gate="none")
    params["drift"].update(on_refresh=False)
    params.setdefault("curate", {}).update(enabled=curate)
    if segment_chunks:
        params["index"].update(segment_chunks=segment_chunks)
    return params


def run_phase(phase: str, work: Path, segment_chunks: int | None = None) -> dict:
    """One memory phase in this process (``ingest``, ``ingest-curated``, ``refresh``,
    ``refresh-curated``): ``{"peak_rss_bytes", "process_peak_rss_bytes", "wall_s", "chunks"}``."""
    from prefect import flow

    from ragline.pipelines.flows import ingest_flow, refresh_flow

    curate = phase.endswith("-curated")
    params = memory_params(work, curate, segment_chunks)

    @flow(name="warm-up")
    def warm_up() -> None:
        """Start the Prefect API before anything is measured."""

    warm_up()
    reset = peak_rss_reset()
    t0 = time.perf_counter()
    if phase.startswith("ingest"):
        s = ingest_flow(sources=[str(work / "docs")], params=params)
    else:
        s = refresh_flow(params=params)
    wall = time.perf_counter() - t0
    if s.version is None:
        raise SystemExit(f"error: {phase} published nothing: {getattr(s, 'failed', None)}")
    return {"peak_rss_bytes": peak_rss(), "peak_reset": reset, "wall_s": round(wall, 2), "chunks": s.chunks}


def child_phase(phase: str, work: Path, segment_chunks: int | None = None) -> dict:
    """Run :func:`run_phase` in a fresh interpreter (so every phase's peak is its own)."""
    import subprocess

    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--workdir", str(work)]
                         + (["--segment-chunks", str(segment_chunks)] if segment_chunks else []),
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"error: phase {phase} in {work} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


PHASES = ("ingest", "ingest-curated", "refresh", "refresh-curated")


def memory_main(sizes: list[int], change: float, seed: int, workdir: Path | None, as_json: bool,
                phases: tuple[str, ...] = PHASES, segment_chunks: int | None = None) -> int:
    """``--memory``: per-phase peak RSS at each corpus size, side by side (see the module docstring);
    ``phases``: a subset of :data:`PHASES` (a refresh phase needs its ingest phase)."""
    base = workdir or Path(tempfile.mkdtemp(prefix="ragline-scale-mem-"))
    results: dict[int, dict] = {}
    for n in sizes:
        rng = random.Random(seed)
        words = vocabulary(rng)
        work = base / f"docs-{n}"
        shutil.rmtree(work, ignore_errors=True)
        (work / "docs").mkdir(parents=True)
        for i in range(n):
            write_doc(work / "docs", i, rng, words)
        res = {ph: child_phase(ph, work, segment_chunks) for ph in ("ingest", "ingest-curated") if ph in phases}
        n_add = max(1, round(n * change / 2))
        for p in rng.sample(sorted((work / "docs").rglob("*.txt")), n_add):
            p.unlink()
        for j in range(n_add):
            write_doc(work / "docs", n + j, rng, words)
        res.update({ph: child_phase(ph, work, segment_chunks) for ph in ("refresh", "refresh-curated") if ph in phases})
        results[n] = res
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    lo, hi = min(sizes), max(sizes)
    ratios = {ph: round(results[hi][ph]["peak_rss_bytes"] / results[lo][ph]["peak_rss_bytes"], 3) for ph in phases}
    refresh_over_ingest = {f"{n}{suffix}": round(results[n]["refresh" + suffix]["peak_rss_bytes"]
                                                 / results[n]["ingest" + suffix]["peak_rss_bytes"], 3)
                           for n in sizes for suffix in ("", "-curated")
                           if "refresh" + suffix in phases and "ingest" + suffix in phases}
    per_chunk = {ph: round((results[hi][ph]["peak_rss_bytes"] - results[lo][ph]["peak_rss_bytes"])
                           / max(1, results[hi][ph]["chunks"] - results[lo][ph]["chunks"]))
                 for ph in ("ingest", "ingest-curated") if ph in phases}
    if as_json:
        print(json.dumps({"sizes": sizes, "results": {str(k): v for k, v in results.items()},
                          "peak_large_over_small": ratios, "refresh_over_ingest": refresh_over_ingest,
                          "ingest_bytes_per_added_chunk": per_chunk,
                          "targets": {"peak_100k_over_10k_max": 1.5, "refresh_over_ingest_max": 1.0}}, indent=2))
    else:
        print("peak RSS per phase (MB; each phase in a child process of its own):")
        print(f"  {'phase':<16}" + "".join(f"{f'{n} docs':>14}" for n in sizes) + f"{'large/small':>13}")
        for ph in phases:
            print(f"  {ph:<16}" + "".join(f"{results[n][ph]['peak_rss_bytes'] / 1e6:>14.0f}" for n in sizes)
                  + f"{ratios[ph]:>13.3f}")
        first = next((ph for ph in phases if ph.startswith("ingest")), phases[0])  # (an ingest's chunks)
        print(f"  {'chunks':<16}" + "".join(f"{results[n][first]['chunks']:>14}" for n in sizes))
        print("ingest peak growth per added chunk: "
              + ", ".join(f"{ph} {v / 1e3:.1f} kB" for ph, v in per_chunk.items()))
        print("refresh peak / ingest peak (target <= 1): "
              + ", ".join(f"{k} docs {v:.3f}" for k, v in refresh_over_ingest.items()))
        print("target: peak(100k docs) / peak(10k docs) <= 1.5")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20000, help="documents in the full build")
    ap.add_argument("--change", type=float, default=0.01, help="share of documents changed (half added, half removed)")
    ap.add_argument("--workers", type=int, default=2, help="load.workers")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--workdir", type=Path, default=None, help="work here (default: a temp dir, deleted)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--segment-chunks", type=int, default=None,
                    help="index.segment_chunks of the full build, or of each --memory phase (default: params.yaml's)")
    ap.add_argument("--memory", default=None, help="comma-separated corpus sizes: per-phase peak RSS instead")
    ap.add_argument("--phases", default=",".join(PHASES), help="with --memory: the phases to run (comma-separated)")
    ap.add_argument("--curate", action="store_true",
                    help="curate.enabled true (the params default): the refresh clusters its change against the version")
    ap.add_argument("--no-change-runs", type=int, default=5, help="no-change refreshes to time (median reported)")
    ap.add_argument("--no-change-only", action="store_true",
                    help="with --workdir of a finished run (kept): time only the no-change refreshes")
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)  # one memory phase (a child process)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.workdir, args.segment_chunks)))
        return 0
    if args.memory:
        sizes = sorted({int(x) for x in args.memory.split(",") if x.strip()})
        phases = tuple(ph for ph in PHASES if ph in args.phases.split(","))
        return memory_main(sizes, args.change, args.seed, args.workdir, args.json, phases, args.segment_chunks)

    from prefect import flow

    from ragline.indexers.registry import IndexRegistry
    from ragline.pipelines.config import Params
    from ragline.pipelines.flows import ingest_flow
    from ragline.pipelines.refresh import run_refresh

    rng = random.Random(args.seed)
    words = vocabulary(rng)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ragline-scale-"))
    keep = args.workdir is not None
    docs = work / "docs"
    if args.no_change_only:
        if not (work / "indexes" / "scale").is_dir():
            print(f"error: --no-change-only needs --workdir holding a finished run; {work} has no index", file=sys.stderr)
            return 1
    else:
        for d in ("docs", "indexes", "cache"):
            shutil.rmtree(work / d, ignore_errors=True)
        docs.mkdir(parents=True)
        for i in range(args.docs):
            write_doc(docs, i, rng, words)

    params = Params().to_dict()
    params["load"].update(sources=[str(docs)], workers=args.workers)
    params["embed"].update(model="hashing")
    params["index"].update(name="scale", root=str(work / "indexes"))
    if args.segment_chunks:
        params["index"].update(segment_chunks=args.segment_chunks)
    params["paths"].update(cache=str(work / "cache"))
    params["promote"].update(gate="none")
    params["drift"].update(on_refresh=False)
    params.setdefault("curate", {}).update(enabled=args.curate)  # curation off unless --curate

    @flow(name="warm-up")
    def warm_up() -> None:
        """Start the Prefect API before anything is timed."""

    warm_up()

    def no_change() -> dict:
        """``--no-change-runs`` refreshes with nothing changed: their median and min wall seconds."""
        runs = []
        for _ in range(args.no_change_runs):
            t0 = time.perf_counter()
            none = run_refresh(Params.from_dict(params))
            runs.append(round(time.perf_counter() - t0, 3))
            if not none.nothing_changed:
                raise SystemExit(f"error: the no-change refresh found changes: {none.counts()}")
        return {"median_s": statistics.median(runs), "min_s": min(runs), "runs_s": runs}

    if args.no_change_only:
        nc = no_change()
        n_files = sum(1 for _ in docs.rglob("*.txt"))
        if args.json:
            print(json.dumps({"docs": n_files, "no_change": nc, "no_change_max_s": 2.0}, indent=2))
        else:
            print(f"no-change refresh of {n_files} documents: median {nc['median_s']:.2f} s, min {nc['min_s']:.2f} s "
                  f"over {len(nc['runs_s'])} runs (target <= 2 s at 100k documents)")
        return 0
    peak_rss_reset()
    t0 = time.perf_counter()
    full = ingest_flow(sources=[str(docs)], params=params)
    full_s = time.perf_counter() - t0
    full_peak = peak_rss()
    if full.version is None:
        print(f"error: the full build published nothing: {full.failed}", file=sys.stderr)
        return 1

    n_add = max(1, round(args.docs * args.change / 2))
    files = sorted(docs.rglob("*.txt"))
    for p in rng.sample(files, n_add):
        p.unlink()
    added_bytes = sum(write_doc(docs, args.docs + j, rng, words) for j in range(n_add))
    index_dir = work / "indexes" / "scale"
    before = disk_bytes(index_dir)
    files_before = file_sizes(index_dir)
    reset = peak_rss_reset()
    t0 = time.perf_counter()
    inc = run_refresh(Params.from_dict(params))
    refresh_s = time.perf_counter() - t0
    refresh_peak = peak_rss()
    added_disk = disk_bytes(index_dir) - before
    by_file: dict[str, int] = {}  # the new files by name (segment files, manifest.json, ...)
    for rel, size in file_sizes(index_dir).items():
        if rel not in files_before:
            by_file[Path(rel).name] = by_file.get(Path(rel).name, 0) + size

    nc = no_change()
    nochange_s = nc["median_s"]

    reg = IndexRegistry(work / "indexes")
    m = reg.manifest("scale", inc.version)
    result = {
        "docs": args.docs, "added": n_add, "removed": n_add,
        "full": {"wall_s": round(full_s, 2), "chunks": full.chunks, "stage_seconds": full.stage_seconds,
                 "disk_bytes": before, "segments": len(reg.manifest("scale", full.version).segments)},
        "refresh": {"wall_s": round(refresh_s, 2), "counts": inc.counts(), "chunks": inc.chunks,
                    "embedded_chunks": inc.embedded_chunks, "segments": len(m.segments),
                    "stage_seconds": inc.stage_seconds},
        "refresh_over_full": round(refresh_s / full_s, 4),
        "disk_added_bytes": added_disk, "added_docs_bytes": added_bytes,
        "disk_added_over_changed": round(added_disk / added_bytes, 3),
        "disk_added_by_file": dict(sorted(by_file.items(), key=lambda kv: -kv[1])),
        "no_change_wall_s": nochange_s, "no_change": nc,
        "peak_rss_bytes": {"full": full_peak, "refresh": refresh_peak, "reset": reset},
        "refresh_peak_over_full_peak": round(refresh_peak / full_peak, 3),
        "targets": {"refresh_over_full_max": 0.02, "disk_added_over_changed_max": 3.0, "no_change_max_s": 2.0},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"full build: {args.docs} documents, {full.chunks} chunks in {full_s:.1f} s "
              f"({result['full']['segments']} segments); {before / 1e6:.1f} MB on disk")
        print(f"refresh: {n_add} added, {n_add} removed in {refresh_s:.2f} s "
              f"({len(m.segments)} segments, {inc.embedded_chunks} chunks embedded)")
        print(f"refresh / full wall time: {refresh_s / full_s:.4f} (target <= 0.02)")
        print(f"disk added by the refresh: {added_disk / 1e6:.2f} MB for {added_bytes / 1e6:.2f} MB of added documents: "
              f"{added_disk / added_bytes:.2f}x (target <= 3x)")
        print("  by file: " + ", ".join(f"{k} {v / 1e3:.1f} kB" for k, v in sorted(by_file.items(), key=lambda kv: -kv[1])))
        print(f"no-change refresh: median {nochange_s:.2f} s, min {nc['min_s']:.2f} s over {len(nc['runs_s'])} runs "
              "(target <= 2 s at 100k documents)")
        print(f"peak RSS: full build {full_peak / 1e6:.0f} MB, refresh {refresh_peak / 1e6:.0f} MB "
              f"({refresh_peak / full_peak:.3f}; target <= 1); compare the full build's peak across --docs sizes "
              "(target: 100k / 10k <= 1.5)")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
