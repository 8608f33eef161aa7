"""Rerun the top configurations of the defaults search (benchmarks/defaults_search.md).

Each configuration is the repository's params.yaml with a few keys overridden, measured with
the real command, one process per configuration:

    nice -n 10 ragline eval chunking --dataset DATASET --params <tmp params> --json

and printed as one Markdown table (config -> recall, IoU, precision, precision_Ω, chunks).
Embeddings are cached in ``paths.cache``, so configurations that share a chunking cost one
embedding pass; a fresh chunking of the 1.45 MB dataset costs 1-10 minutes of embedding
(about 30 chunks/s on an idle 2-core machine).

    .venv/bin/python benchmarks/defaults_search.py                # the four rows below
    .venv/bin/python benchmarks/defaults_search.py --only 1       # just the shipped default
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: The params section that holds the search mode (mode, fusion, weights, candidates).
RETRIEVAL_SECTION = "eval"

#: (label, overrides per params section). The first row is what params.yaml ships.
CONFIGS: list[tuple[str, dict[str, dict]]] = [
    ("shipped: token 200/50 +ctx, hybrid weighted 0.4/0.6, BM25 k1 1.2 b 0.75 stemmed", {}),
    ("same, BM25 not stemmed", {"index": {"bm25_stemmer": "none"}}),
    ("previous best: token 200/50 +ctx, weighted 0.5/0.5, k1 1.5, not stemmed",
     {"index": {"bm25_k1": 1.5, "bm25_stemmer": "none"},
      RETRIEVAL_SECTION: {"weights": {"dense": 0.5, "bm25": 0.5}}}),
    ("previously shipped: token 200/0, dense",
     {"chunk": {"strategy": "token", "max_tokens": 200, "overlap_tokens": 0, "context": False},
      RETRIEVAL_SECTION: {"mode": "dense"}}),
]


def measure(overrides: dict[str, dict], dataset: str) -> dict:
    """Run ``ragline eval chunking --json`` on params.yaml with ``overrides``; return its JSON."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params = copy.deepcopy(params)
    for section, values in overrides.items():
        if section == "chunk" and "strategy" in values:
            params[section] = dict(values)  # a new strategy: its own options only
        else:
            params.setdefault(section, {}).update(values)
    params["paths"]["cache"] = str((ROOT / params["paths"]["cache"]).resolve())
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(params, f, sort_keys=False)
    try:
        cmd = ["nice", "-n", "10", str(Path(sys.executable).with_name("ragline")), "eval", "chunking",
               "--dataset", dataset, "--params", f.name, "--json"]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr.strip()}")
        return json.loads(out.stdout)
    finally:
        Path(f.name).unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=str((ROOT / "../shared/datasets/chunking-eval").resolve()))
    ap.add_argument("--only", type=int, default=len(CONFIGS), help="measure the first N rows")
    args = ap.parse_args()
    print("| config | recall | IoU | precision | precision_Ω | chunks |")
    print("|---|---|---|---|---|---|")
    for label, overrides in CONFIGS[: args.only]:
        r = measure(overrides, args.dataset)
        o = r["overall"]
        print(f"| {label} | {o['recall']:.4f} | {o['iou']:.4f} | {o['precision']:.4f} | "
              f"{o['precision_omega']:.4f} | {r['chunks']} |", flush=True)


if __name__ == "__main__":
    main()
