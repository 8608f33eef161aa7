"""Build tests/evaluation/data/mini-chunking-eval: a small slice of the chunking-eval dataset.

Two corpora (state_of_the_union, wikitexts) cut after their last full line before
``--chars`` characters, and the questions whose references all lie inside the cut, as both
questions.csv (the dataset's format) and questions.jsonl. The source is Chroma's general
evaluation set (MIT licence; see ../shared/datasets/chunking-eval/README.md and LICENSE).

    .venv/bin/python scripts/make_mini_chunking_eval.py [--src DIR] [--out DIR] [--chars 12000]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPORA = ("state_of_the_union", "wikitexts")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=str(REPO.parent / "shared" / "datasets" / "chunking-eval"))
    ap.add_argument("--out", default=str(REPO / "tests" / "evaluation" / "data" / "mini-chunking-eval"))
    ap.add_argument("--chars", type=int, default=12000)
    args = ap.parse_args()
    src, out = Path(args.src), Path(args.out)
    (out / "corpora").mkdir(parents=True, exist_ok=True)
    cut: dict[str, int] = {}
    for cid in CORPORA:
        text = (src / "corpora" / f"{cid}.md").read_bytes().decode("utf-8")
        n = text.rfind("\n", 0, args.chars) + 1
        (out / "corpora" / f"{cid}.md").write_bytes(text[:n].encode("utf-8"))
        cut[cid] = n
    with open(src / "questions.csv", encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["corpus_id"] in cut
                and all(ref["end_index"] <= cut[r["corpus_id"]] for ref in json.loads(r["references"]))]
    with open(out / "questions.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["question", "references", "corpus_id"])
        w.writeheader()
        w.writerows(rows)
    with open(out / "questions.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"question": r["question"], "corpus_id": r["corpus_id"],
                                "references": json.loads(r["references"])}, ensure_ascii=False) + "\n")
    shutil.copy(src / "LICENSE", out / "LICENSE")
    print(f"{out}: {len(rows)} questions, corpora {cut}")


if __name__ == "__main__":
    main()
