"""``ragline eval chunking`` and ``ragline experiment run`` (typer sub-apps).

Importing this module registers both sub-apps on :data:`pipelines.cli.app` (one import line
in ``pipelines/cli.py`` does it). Defaults come from the ``eval:`` section of params.yaml.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from ragline.pipelines.cli import JsonOpt, ParamsOpt, _print_json, app, clean_errors, err, out
from ragline.pipelines.config import Params, load_params

eval_app = typer.Typer(help="Measure ragline on labelled data (chunking: span-labelled questions).",
                       no_args_is_help=True)
experiment_app = typer.Typer(help="Run experiment grids as a Prefect flow (leaderboard + plot).",
                             no_args_is_help=True)
app.add_typer(eval_app, name="eval")
app.add_typer(experiment_app, name="experiment")


def dvc_project_params(params: Params) -> tuple[Params, Path]:
    """Resolve ``paths.cache`` and ``eval.dataset`` against the project root DVC names.

    ``dvc exp run --queue``/``--run-all`` runs each experiment in a temporary copy of the
    repository and sets ``DVC_ROOT`` to the original one; relative input paths from params
    then resolve there, so experiments share one embedding cache and find a dataset kept
    outside the repository (``../shared/...``). Outside DVC (no ``DVC_ROOT``) nothing changes.

    Returns:
        ``(params, dataset_path)``.
    """
    root = os.environ.get("DVC_ROOT")
    dataset = Path(params.eval.dataset)
    if not root:
        return params, dataset
    data = params.to_dict()
    if not Path(params.paths.cache).is_absolute():
        data["paths"]["cache"] = str(Path(root) / params.paths.cache)
    return Params.from_dict(data, source="params (paths resolved against DVC_ROOT)"), (
        dataset if dataset.is_absolute() else Path(root) / dataset)


def _corpora(value: str | None, params: Params) -> list[str]:
    if value is None:
        return list(params.eval.corpora)
    return [c.strip() for c in value.split(",") if c.strip()]


@eval_app.command("chunking")
@clean_errors
def eval_chunking(
    dataset: Optional[Path] = typer.Option(None, "--dataset", "-d", help="Dataset folder (default: eval.dataset)."),
    k: Optional[int] = typer.Option(None, "-k", "--k", help="Chunks retrieved per question (default: retrieval.k)."),
    params_file: Path = ParamsOpt,
    limit_questions: Optional[int] = typer.Option(
        None, "--limit-questions", help="At most N questions, taken in turn from each corpus (default: eval.limit_questions)."),
    corpora: Optional[str] = typer.Option(None, "--corpora", help="Comma-separated corpus ids (default: eval.corpora, all)."),
    metrics_out: Optional[Path] = typer.Option(None, "--metrics-out", help="Also write the flat metrics JSON here (DVC)."),
    plots_out: Optional[Path] = typer.Option(None, "--plots-out", help="Also write recall-vs-IoU points here (DVC plots)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="Search mode: dense | bm25 | hybrid (default: retrieval.mode)."),
    fusion: Optional[str] = typer.Option(None, "--fusion", help="Hybrid fusion: weighted | rrf (default: retrieval.fusion)."),
    as_json: bool = JsonOpt,
) -> None:
    """Chunk, embed (through the cache) and index a span-labelled dataset with the params'
    chunk settings; report recall, precision, IoU and precision_Ω at k, overall and per corpus."""
    from ragline.pipelines.evaluate_chunking import (config_label, evaluate_chunking, load_dataset, retrieval_label,
                                             write_metrics)
    from ragline.pipelines.progress import RichReporter

    params, default_dataset = dvc_project_params(load_params(params_file))
    params = _with_search_mode(params, mode, fusion, k)
    k = params.retrieval.k
    data = load_dataset(dataset or default_dataset, _corpora(corpora, params),
                        params.eval.limit_questions if limit_questions is None else limit_questions)
    reporter = RichReporter()
    from ragline.pipelines.telemetry import RunTelemetry

    run = RunTelemetry("eval", params)
    result = evaluate_chunking(data, params, k, progress=reporter.stage)
    write_metrics(result, metrics_out, plots_out)
    scores = {m: v for m, v in result.metrics_dict().items() if m in ("recall", "precision", "iou", "precision_omega")}
    telemetry = run.finish({"index": data.name, "chunks": result.chunks, "documents": len(result.corpora),
                            "computed": result.embedded_now, "cache_hits": result.cache_hits,
                            "stage_seconds": {"chunk": round(result.chunk_seconds, 3),
                                              "embed": round(result.embed_seconds, 3)},
                            "total_seconds": round((time.time_ns() - run.start_ns) / 1e9, 3), "scores": scores})
    if as_json:
        _print_json({**result.to_dict(), "telemetry": telemetry})
        return
    t = Table(title=f"{config_label(result.chunk)}, {retrieval_label(result.retrieval)} on {data.name}: k={k}, {result.overall.questions} questions, "
                    f"{result.embedder['model_id']}"
                    + (f" ({result.embedder['quantization'].split('/')[0]})" if result.embedder.get("quantization") else ""))
    t.box = box.SIMPLE_HEAD
    for col in ("corpus", "n", "recall", "prec", "IoU", "prec_Ω", "chunks", "tokens"):
        t.add_column(col, justify="left" if col == "corpus" else "right", no_wrap=col == "corpus")
    for c in result.corpora:
        m = c.metrics
        t.add_row(c.corpus_id, str(m.questions), f"{m.recall:.3f}", f"{m.precision:.3f}", f"{m.iou:.3f}",
                  f"{m.precision_omega:.3f}", str(c.chunks), f"{c.mean_chunk_tokens:.0f}")
    o = result.overall
    t.add_row("[bold]all", f"[bold]{o.questions}", f"[bold]{o.recall:.3f}", f"[bold]{o.precision:.3f}",
              f"[bold]{o.iou:.3f}", f"[bold]{o.precision_omega:.3f}", f"[bold]{result.chunks}",
              f"[bold]{result.mean_chunk_tokens:.0f}")
    out.print(t)
    out.print(f"chunking {result.chunk_seconds:.2f} s ({result.chunk_mb_per_s:.2f} MB/s) · embedding "
              f"{result.embed_seconds:.2f} s ({result.embedded_now} embedded now, {result.cache_hits} from cache) · "
              f"curation would leave out {result.curation_removed_chunks} duplicate chunks", highlight=False)


def _with_search_mode(params: Params, mode: str | None, fusion: str | None, k: int | None = None) -> Params:
    """``params`` with ``--mode``/``--fusion``/``-k`` applied to ``retrieval:`` (validated:
    unknown values raise :class:`ConfigError` naming the value and the allowed ones)."""
    retrieval = params.retrieval.override("--mode/--fusion/-k", mode=mode, fusion=fusion, k=k)
    return params if retrieval is params.retrieval else params.model_copy(update={"retrieval": retrieval})


@experiment_app.command("run")
@clean_errors
def experiment_run(
    grid_file: Path = typer.Argument(..., help="Grid YAML (see grids/chunking.yaml)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: experiments/<grid name>/)."),
    params_file: Path = ParamsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run a chunking grid (strategies × max_tokens × overlap × context) as a Prefect flow;
    write leaderboard.csv, leaderboard.md and recall_vs_iou.png."""
    from ragline.pipelines.experiments import plan_grid, read_grid

    params = load_params(params_file)
    grid = read_grid(grid_file)
    plan = plan_grid(grid, params, source=str(grid_file))  # bad grids fail here, before Prefect starts
    target = out_dir or Path("experiments") / plan.name
    if not as_json:
        err.print(f"experiment {plan.name}: {len(plan.points)} configurations → {target}/", highlight=False)
    summary = _run_flow(grid, params, str(target), str(grid_file))
    if as_json:
        _print_json(summary.to_dict())
        return
    t = Table(title=f"experiment {summary.name}: leaderboard ({summary.seconds:.1f} s)", box=box.SIMPLE_HEAD)
    for col in ("#", "config", "recall", "prec", "IoU", "prec_Ω", "Pareto", "chunks", "tokens",
                "MB/s", "embedded"):
        t.add_column(col, justify="left" if col == "config" else "right", no_wrap=col == "config")
    for r in summary.rows:
        t.add_row(str(r["rank"]), r["config"], f"{r['recall']:.3f}", f"{r['precision']:.3f}", f"{r['iou']:.3f}",
                  f"{r['precision_omega']:.3f}", "✓" if r["pareto"] else "", str(r["chunks"]),
                  f"{r['mean_chunk_tokens']:.0f}", f"{r['chunk_mb_per_s']:.2f}", str(r["embedded_now"]))
    (out if out.is_terminal else Console(width=120)).print(t)  # labels need more than 80 columns
    for kind, path in summary.files.items():
        out.print(f"{kind}: {path}", highlight=False)
    for s in summary.skipped:
        err.print(f"[yellow]skipped:[/] {s}", highlight=False, soft_wrap=True)


def _run_flow(grid: dict[str, Any], params: Params, out_dir: str, source: str) -> Any:
    from ragline.pipelines.flows import REPORTER, chunking_experiment_flow
    from ragline.pipelines.progress import RichReporter

    token = REPORTER.set(RichReporter())
    try:
        return chunking_experiment_flow(grid, params.to_dict(), out_dir, source)
    finally:
        REPORTER.reset(token)
