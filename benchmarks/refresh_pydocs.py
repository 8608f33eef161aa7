"""Incremental-refresh benchmark on Python's HTML documentation (Debian's python3.11-doc, 530 pages).

In a temporary copy of the pages, in one process and on the same machine:
  1. full build: ``refresh`` into an empty registry with an empty embedding cache (every page
     parsed, chunked, embedded); 0.5% of the pages are held back to be "added" later;
  2. edit 1% of the pages (a new paragraph before ``</body>``), add the held-back 0.5%, delete
     0.5%, and refresh;
  3. a refresh with nothing changed, as ``ragline refresh`` in a fresh process, against the
     wall time of ``ragline --help`` (process start-up).
Prints the refresh/full wall-time ratio (target <= 0.05), the chunks embedded by the refresh
(must equal the chunks of the added and changed pages exactly: unchanged pages' vectors are
carried over), how many of those the model computed (the rest were embedding-cache hits), and
the no-change wall time beyond start-up (target <= 2 s). Exit 1 when the chunk count differs.

    .venv/bin/python benchmarks/refresh_pydocs.py [--limit N] [--model all-MiniLM-L6-v2] [--workdir DIR] [--json]

The Prefect API is started before timing (a warm-up flow), so neither build pays for it.
Needs `apt-get install python3.11-doc`. Ratios, not absolute times, are the result: the
machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragline.core.offline import set_offline_env  # noqa: E402

set_offline_env()
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

DOCS = Path("/usr/share/doc/python3.11-doc/html")
VENV_BIN = Path(sys.executable).parent


def _pick(rng: random.Random, pool: list[Path], share: float) -> list[Path]:
    """At least one page, ``share`` of the pool otherwise (rounded)."""
    n = max(1, round(len(pool) * share))
    return sorted(rng.sample(pool, n))


def _cli_seconds(args: list[str], cwd: Path, repeat: int = 3) -> tuple[float, str]:
    """Best-of-``repeat`` wall time of a ragline command (and its last stdout)."""
    best, out = float("inf"), ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = subprocess.run([str(VENV_BIN / "ragline"), *args], cwd=cwd, capture_output=True, text=True)
        best = min(best, time.perf_counter() - t0)
        if r.returncode != 0:
            raise RuntimeError(f"ragline {' '.join(args)} failed: {r.stderr[-2000:]}")
        out = r.stdout
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=DOCS, help="folder of HTML pages")
    ap.add_argument("--limit", type=int, default=0, help="use N pages picked at random (0 = all)")
    ap.add_argument("--model", default="all-MiniLM-L6-v2", help="embed.model (hashing = fake, for a smoke run)")
    ap.add_argument("--workers", type=int, default=2, help="load.workers")
    ap.add_argument("--edit", type=float, default=0.01, help="share of pages edited")
    ap.add_argument("--add", type=float, default=0.005, help="share of pages added")
    ap.add_argument("--remove", type=float, default=0.005, help="share of pages removed")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=None, help="work here (default: a temp dir, deleted)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    if not args.source.is_dir():
        print(f"error: {args.source} not found; apt-get install python3.11-doc", file=sys.stderr)
        return 2

    import yaml
    from prefect import flow

    from ragline.indexers.registry import IndexRegistry
    from ragline.pipelines.config import Params
    from ragline.pipelines.flows import refresh_flow

    rng = random.Random(args.seed)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ragline-refresh-bench-"))
    keep = args.workdir is not None
    work.mkdir(parents=True, exist_ok=True)
    pages_dir = work / "pages"
    for d in (pages_dir, work / "indexes", work / "cache"):
        shutil.rmtree(d, ignore_errors=True)
    pages = sorted(args.source.rglob("*.html"))
    if args.limit:
        pages = sorted(rng.sample(pages, min(args.limit, len(pages))))
    held_back = _pick(rng, pages, args.add)  # added by the refresh
    initial = [p for p in pages if p not in held_back]
    for p in initial:
        dst = pages_dir / p.relative_to(args.source)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst)

    params = Params().to_dict()
    params["load"].update(sources=[str(pages_dir)], include=["**/*.html"], workers=args.workers)
    params["embed"].update(model=args.model)
    params["index"].update(name="pydocs", root=str(work / "indexes"))
    params["paths"].update(cache=str(work / "cache"))
    params["promote"].update(gate="none")
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    @flow(name="warm-up")
    def warm_up() -> None:
        """Start the Prefect API before anything is timed."""

    warm_up()

    t0 = time.perf_counter()
    full = refresh_flow(params=params)
    full_s = time.perf_counter() - t0
    if full.version is None:
        print(f"error: the full build published nothing: {full.failed}", file=sys.stderr)
        return 1

    copies = sorted(pages_dir.rglob("*.html"))
    edited = _pick(rng, copies, args.edit)
    removed = _pick(rng, [p for p in copies if p not in edited], args.remove)
    for i, p in enumerate(edited):
        html = p.read_text(encoding="utf-8")
        para = (f"<p>Refresh benchmark edit {i}: this paragraph was added to measure incremental "
                f"refresh; it mentions ragline, FAISS and the embedding cache (seed {args.seed}).</p>")
        p.write_text(html.replace("</body>", para + "</body>", 1) if "</body>" in html else html + para,
                     encoding="utf-8")
    for p in removed:
        p.unlink()
    for p in held_back:
        dst = pages_dir / p.relative_to(args.source)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst)

    t0 = time.perf_counter()
    inc = refresh_flow(params=params)
    refresh_s = time.perf_counter() - t0
    if inc.version is None:
        print(f"error: the refresh published nothing: {inc.failed}", file=sys.stderr)
        return 1
    reg = IndexRegistry(work / "indexes")
    uris = reg.live_table("pydocs", inc.version, "chunks", columns=["uri"]).column("uri").to_pylist()
    redone = set(inc.added) | set(inc.changed)
    expected_embedded = sum(u in redone for u in uris)
    # the carried chunks must be exactly the parent's chunks of the unchanged pages
    parent_uris = reg.live_table("pydocs", full.version, "chunks", columns=["uri"]).column("uri").to_pylist()
    unchanged = {u for u in set(uris) if u not in redone}
    expected_carried = sum(u in unchanged for u in parent_uris)

    startup_s, _ = _cli_seconds(["--help"], work)
    nochange_s, out = _cli_seconds(["refresh", "--json", "--params", str(work / "params.yaml")], work)
    nochange = json.loads(out)

    result = {
        "pages": {"full_build": len(initial), "edited": len(edited), "added": len(held_back), "removed": len(removed)},
        "model": args.model,
        "full": {"wall_s": round(full_s, 2), "documents": full.documents, "chunks": full.chunks,
                 "embedded_by_model": full.computed, "stage_seconds": full.stage_seconds},
        "refresh": {"wall_s": round(refresh_s, 2), "counts": inc.counts(), "chunks": inc.chunks,
                    "embedded_chunks": inc.embedded_chunks, "expected_embedded_chunks": expected_embedded,
                    "embedded_by_model": inc.computed, "carried_chunks": inc.carried_chunks,
                    "expected_carried_chunks": expected_carried, "quarantined": len(inc.quarantine),
                    "stage_seconds": inc.stage_seconds},
        "refresh_over_full": round(refresh_s / full_s, 4),
        "no_change": {"wall_s": round(nochange_s, 3), "startup_s": round(startup_s, 3),
                      "beyond_startup_s": round(nochange_s - startup_s, 3),
                      "nothing_changed": nochange["nothing_changed"]},
        "targets": {"refresh_over_full_max": 0.05, "no_change_beyond_startup_max_s": 2.0},
    }
    ok = (inc.embedded_chunks == expected_embedded and inc.carried_chunks == expected_carried
          and nochange["nothing_changed"])
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        r = result["refresh"]
        print(f"full build: {len(initial)} pages, {full.chunks} chunks in {full_s:.1f} s ({args.model})")
        print(f"refresh: {len(edited)} edited, {len(held_back)} added, {len(removed)} removed pages "
              f"(diff {inc.counts()}) in {refresh_s:.1f} s")
        print(f"refresh / full wall time: {refresh_s / full_s:.4f} (target <= 0.05)")
        print(f"chunks embedded by the refresh: {r['embedded_chunks']} (chunks of added + changed pages: "
              f"{expected_embedded}; {r['embedded_by_model']} computed by the model, the rest cache hits); "
              f"carried: {r['carried_chunks']} (expected {expected_carried})")
        print(f"no-change refresh: {nochange_s:.2f} s wall, start-up {startup_s:.2f} s, "
              f"beyond start-up {nochange_s - startup_s:.2f} s (target <= 2 s)")
        print("OK" if ok else "MISMATCH: embedded/carried chunks differ from the expected counts")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
