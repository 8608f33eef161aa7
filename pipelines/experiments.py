"""Chunking-experiment grids: parse a grid YAML, expand it, and write the leaderboard and plot.

A grid file (see ``grids/chunking.yaml``)::

    name: chunking                 # output folder experiments/<name>/ unless --out is given
    dataset: ../shared/datasets/chunking-eval   # default: eval.dataset from params
    k: 5                           # default: retrieval.k
    limit_questions: null          # default: eval.limit_questions
    corpora: []                    # default: eval.corpora
    params: {embed: {batch_size: 32}}   # optional overrides of params sections
    skip_invalid: false            # true: drop grid points whose values are invalid
    grid:                          # cartesian product of chunk.* values
      strategy: [token, recursive]
      max_tokens: [128, 256]
      overlap_tokens: [0, 32]
      context: [false, true]
    configs:                       # optional extra points, taken as they are
      - {strategy: sentence, max_tokens: 128, overlap_sentences: 1}

Besides chunk options, a grid or config may vary the search mode with ``mode``
(``dense | bm25 | hybrid``) and ``fusion`` (``rrf | weighted``); they set ``retrieval.mode`` and
``retrieval.fusion`` of that point (default: the params' ``retrieval:``), and the label of a point
whose search differs from the params' ends with its mode, e.g. ``token 200/0 [dense]``.

Points that configure the same chunker (a strategy ignores options it does not take, e.g.
``sentence`` and ``overlap_tokens``) are run once. The Prefect flow that runs a grid is
:func:`pipelines.flows.chunking_experiment_flow`; this module holds the plain functions.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragline.core.errors import ConfigError, config_error
from ragline.chunkers.registry import STRATEGIES, config_keys
from ragline.pipelines.chunk import chunker_record
from ragline.indexers.retrieval import RetrievalConfig
from ragline.pipelines.config import Params
from ragline.pipelines.evaluate_chunking import ChunkingEvalResult, config_label, retrieval_label

log = logging.getLogger(__name__)

LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_MD = "leaderboard.md"
PLOT_PNG = "recall_vs_iou.png"
RESULTS_JSON = "results.json"
#: Grid keys that set ``retrieval:`` values of a point rather than ``chunk:`` options.
GRID_EVAL_KEYS = ("mode", "fusion")


class GridSpec(BaseModel):
    """A parsed grid file (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="chunking", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    dataset: str | None = None
    k: int | None = Field(default=None, ge=1, le=1000)
    limit_questions: int | None = Field(default=None, ge=1)
    corpora: list[str] | None = None
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    skip_invalid: bool = False
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    configs: list[dict[str, Any]] = Field(default_factory=list)


@dataclass(frozen=True)
class ExperimentPlan:
    """What a grid expands to.

    Attributes:
        name: grid name.
        base: validated params every point starts from (grid ``params`` applied).
        points: one ``chunk:`` section per distinct configuration, in grid order.
        labels: a short label per point (see :func:`config_label`).
        skipped: ``(point, reason)`` of invalid points dropped with ``skip_invalid``.
        dataset: dataset folder.
        k: chunks retrieved per question.
        limit_questions: question limit or ``None``.
        corpora: corpus ids to keep (empty: all).
        searches: per point, the ``retrieval:`` values it sets (``mode``/``fusion``; empty: none).
    """

    name: str
    base: Params
    points: tuple[dict[str, Any], ...]
    labels: tuple[str, ...]
    skipped: tuple[tuple[dict[str, Any], str], ...]
    dataset: str
    k: int
    limit_questions: int | None
    corpora: tuple[str, ...]
    searches: tuple[dict[str, Any], ...] = ()

    def params_for(self, i: int) -> Params:
        """The full params of point ``i``."""
        data = self.base.to_dict()
        data["chunk"] = dict(self.points[i])
        if self.searches:
            data["retrieval"] = {**data["retrieval"], **self.searches[i]}
        return Params.from_dict(data, source=f"grid point {self.labels[i]}")


def read_grid(path: str | Path) -> dict[str, Any]:
    """Read a grid YAML file as a mapping.

    Raises:
        ConfigError: missing file, invalid YAML, or not a mapping.
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"grid file not found: {p}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def plan_grid(grid: dict[str, Any], params: Params, source: str = "<grid>") -> ExperimentPlan:
    """Validate a grid and expand it into distinct chunk configurations.

    Args:
        grid: the grid mapping (see the module docstring).
        params: the project params (``chunk:`` values the grid leaves out come from here).
        source: file name used in error messages.

    Returns:
        The plan; every point has been validated by building its chunker.

    Raises:
        ConfigError: an unknown key (in the grid or in a chunk option), an unknown strategy,
            an invalid value (e.g. overlap >= max_tokens) unless ``skip_invalid``, or no points.
    """
    try:
        spec = GridSpec.model_validate(grid)
    except ValidationError as e:
        raise config_error(e, source) from e
    data = params.to_dict()
    for section, values in spec.params.items():
        if not isinstance(data.get(section), dict):
            raise ConfigError(f"{source}: params.{section}: unknown params section; allowed: "
                              f"{', '.join(k for k, v in data.items() if isinstance(v, dict))}")
        data[section] = {**data[section], **values}
    base = Params.from_dict(data, source=f"{source} (params)")
    base_chunk = base.chunk.model_dump(mode="json")
    _check_keys(spec, source)
    raw_points: list[dict[str, Any]] = []
    if spec.grid:
        for key, values in spec.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{source}: grid.{key}: expected a non-empty list of values")
        keys = list(spec.grid)
        for combo in itertools.product(*(spec.grid[k] for k in keys)):
            raw_points.append({**base_chunk, **dict(zip(keys, combo))})
    raw_points += [{**base_chunk, **c} for c in spec.configs]
    if not raw_points:
        raise ConfigError(f"{source}: no configurations; give grid: and/or configs:")
    points: list[dict[str, Any]] = []
    searches: list[dict[str, Any]] = []
    labels: list[str] = []
    skipped: list[tuple[dict[str, Any], str]] = []
    seen: set[str] = set()
    for point in raw_points:
        search = {k: point[k] for k in GRID_EVAL_KEYS if k in point}
        chunk = {k: v for k, v in point.items() if k not in GRID_EVAL_KEYS}
        try:
            p = Params.from_dict({**base.to_dict(), "chunk": chunk, "retrieval": {**base.retrieval.model_dump(mode="json"), **search}},
                                 source=f"{source}: point {_short(point)}")
            record = chunker_record(p.chunk, p.embed.model)
        except ConfigError as e:
            if spec.skip_invalid:
                skipped.append((point, str(e)))
                log.warning("skipping grid point %s: %s", _short(point), e)
                continue
            raise ConfigError(f"{source}: point {_short(point)}: {e}") from e
        retrieval = p.retrieval.record()
        key = json.dumps([record["fingerprint"], record["context"], retrieval], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        points.append(p.chunk.model_dump(mode="json"))
        searches.append(search)
        labels.append(run_label(record, retrieval, base.retrieval.record()))
    if not points:
        raise ConfigError(f"{source}: every grid point is invalid")
    ev = base.eval
    return ExperimentPlan(
        name=spec.name, base=base, points=tuple(points), labels=tuple(labels), skipped=tuple(skipped),
        dataset=spec.dataset or ev.dataset, k=spec.k or base.retrieval.k,
        limit_questions=spec.limit_questions if spec.limit_questions is not None else ev.limit_questions,
        corpora=tuple(spec.corpora if spec.corpora is not None else ev.corpora), searches=tuple(searches),
    )


def run_label(chunk: dict[str, Any], retrieval: dict[str, Any], default: dict[str, Any] | None = None) -> str:
    """:func:`config_label`, plus ``[mode]`` when the search mode differs from ``default``
    (the base params' ``retrieval:`` record; ``None``: the shipped defaults)."""
    label = config_label(chunk)
    default = RetrievalConfig().record() if default is None else default
    return label if retrieval == default else f"{label} [{retrieval_label(retrieval)}]"


def _check_keys(spec: GridSpec, source: str) -> None:
    """Unknown chunk keys and strategies are errors even with ``skip_invalid``."""
    allowed = {k for name in STRATEGIES for k in config_keys(name)} | {"strategy", "context", *GRID_EVAL_KEYS}
    named = [(f"grid.{k}", k) for k in spec.grid] + [
        (f"configs[{i}].{k}", k) for i, c in enumerate(spec.configs) for k in c]
    for where, key in named:
        if key not in allowed:
            raise ConfigError(f"{source}: {where}: unknown chunk option {key!r}; allowed: {', '.join(sorted(allowed))}")
    strategies = list(spec.grid.get("strategy", [])) + [c["strategy"] for c in spec.configs if "strategy" in c]
    for s in strategies:
        if s not in STRATEGIES:
            raise ConfigError(f"{source}: strategy: unknown chunk.strategy {s!r}; allowed: {', '.join(sorted(STRATEGIES))}")


def _short(point: dict[str, Any]) -> str:
    return json.dumps(point, sort_keys=True)


# ------------------------------------------------------------------------ leaderboard
@dataclass(frozen=True)
class ExperimentSummary:
    """What a grid run produced.

    Attributes:
        name: grid name.
        out_dir: output folder.
        rows: leaderboard rows, best first (dicts of :data:`LEADERBOARD_COLUMNS`).
        files: output file paths (csv, md, png, json).
        skipped: descriptions of invalid grid points that were dropped.
        seconds: wall time of the flow (s).
    """

    name: str
    out_dir: str
    rows: tuple[dict[str, Any], ...]
    files: dict[str, str] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"name": self.name, "out_dir": self.out_dir, "leaderboard": list(self.rows),
                "files": self.files, "skipped": list(self.skipped), "seconds": self.seconds}


#: Leaderboard columns, in order.
LEADERBOARD_COLUMNS = (
    "rank", "config", "strategy", "options", "context", "mode", "recall", "precision", "iou", "precision_omega",
    "pareto", "chunks", "mean_chunk_tokens", "chunk_seconds", "chunk_mb_per_s", "embed_seconds",
    "embedded_now", "questions", "k", "fingerprint",
)


def leaderboard_rows(results: Sequence[ChunkingEvalResult], default_retrieval: dict[str, Any] | None = None
                     ) -> list[dict[str, Any]]:
    """Rows sorted by recall, then IoU (both descending), with rank and Pareto flag; a label
    names the search mode when it differs from ``default_retrieval`` (see :func:`run_label`).

    A configuration is on the Pareto front when no other one has both recall and IoU at
    least as high and one of them strictly higher.
    """
    rows = []
    for r in results:
        o = r.overall
        rows.append({
            "config": run_label(r.chunk, r.retrieval, default_retrieval), "strategy": r.chunk["strategy"],
            "options": json.dumps(r.chunk["options"], sort_keys=True), "context": bool(r.chunk["context"]),
            "mode": retrieval_label(r.retrieval),
            "recall": round(o.recall, 4), "precision": round(o.precision, 4), "iou": round(o.iou, 4),
            "precision_omega": round(o.precision_omega, 4), "chunks": r.chunks,
            "mean_chunk_tokens": round(r.mean_chunk_tokens, 1), "chunk_seconds": round(r.chunk_seconds, 3),
            "chunk_mb_per_s": round(r.chunk_mb_per_s, 2), "embed_seconds": round(r.embed_seconds, 2),
            "embedded_now": r.embedded_now, "questions": o.questions, "k": r.k, "fingerprint": r.fingerprint,
        })
    for row in rows:
        row["pareto"] = not any(
            o["recall"] >= row["recall"] and o["iou"] >= row["iou"] and (o["recall"] > row["recall"] or o["iou"] > row["iou"])
            for o in rows
        )
    rows.sort(key=lambda r: (-r["recall"], -r["iou"], r["config"]))
    for i, row in enumerate(rows, start=1):
        row["rank"] = i
    return [{c: row[c] for c in LEADERBOARD_COLUMNS} for row in rows]


def leaderboard_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text of the leaderboard (header = :data:`LEADERBOARD_COLUMNS`)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(LEADERBOARD_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def leaderboard_markdown(rows: Sequence[dict[str, Any]], title: str, meta: dict[str, Any]) -> str:
    """Markdown leaderboard: a heading, the run's settings, and one table row per config."""
    lines = [f"# {title}", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "| rank | config | recall | precision | IoU | precision_Ω | Pareto | chunks | mean tokens | chunk MB/s | embedded now |",
              "|---:|---|---:|---:|---:|---:|:---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['rank']} | {r['config']} | {r['recall']:.3f} | {r['precision']:.3f} | {r['iou']:.3f} | "
            f"{r['precision_omega']:.3f} | {'✓' if r['pareto'] else ''} | {r['chunks']} | {r['mean_chunk_tokens']:.0f} | "
            f"{r['chunk_mb_per_s']:.2f} | {r['embedded_now']} |"
        )
    return "\n".join(lines) + "\n"


def plot_recall_vs_iou(rows: Sequence[dict[str, Any]], path: str | Path, title: str) -> None:
    """PNG scatter of recall (y) against IoU (x), one labelled point per configuration,
    the Pareto front joined by a line (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    try:
        strategies = sorted({r["strategy"] for r in rows})
        markers = dict(zip(strategies, "osD^vP*X<>"))
        for s in strategies:
            pts = [r for r in rows if r["strategy"] == s]
            ax.scatter([r["iou"] for r in pts], [r["recall"] for r in pts], marker=markers[s], s=40, label=s,
                       edgecolors=["black" if r["context"] else "none" for r in pts], linewidths=1.2)
        front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["iou"])
        if len(front) > 1:
            ax.plot([r["iou"] for r in front], [r["recall"] for r in front], "--", color="grey", lw=1,
                    label="Pareto front")
        for r in rows:
            ax.annotate(r["config"], (r["iou"], r["recall"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax.set_xlabel("IoU (mean over questions)")
        ax.set_ylabel("recall (mean over questions)")
        ax.set_title(title + "  (black edge: +context)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)


def write_experiment_outputs(
    results: Sequence[ChunkingEvalResult], out_dir: str | Path, name: str, meta: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Write ``leaderboard.csv``, ``leaderboard.md``, ``recall_vs_iou.png`` and ``results.json``.

    Returns:
        ``(rows, files)``: the leaderboard rows and kind -> path of every file written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = leaderboard_rows(results, meta.get("retrieval"))
    files = {"csv": str(out / LEADERBOARD_CSV), "md": str(out / LEADERBOARD_MD), "png": str(out / PLOT_PNG),
             "json": str(out / RESULTS_JSON)}
    Path(files["csv"]).write_text(leaderboard_csv(rows), encoding="utf-8")
    Path(files["md"]).write_text(leaderboard_markdown(rows, f"Chunking experiment: {name}", meta), encoding="utf-8")
    plot_recall_vs_iou(rows, files["png"], f"{name}: recall vs IoU at k={meta.get('k')}")
    Path(files["json"]).write_text(json.dumps({"meta": meta, "results": [r.to_dict() for r in results]},
                                              indent=2, default=str) + "\n", encoding="utf-8")
    return rows, files
