"""The ``ragline`` command line (typer).

Every command reads ``params.yaml`` (``--params``), prints a readable summary, and prints
JSON instead with ``--json``. Known failures (every :class:`core.errors.RaglineError`: bad
config, missing index, incompatible manifest, corrupt registry) end with one line on stderr
and exit code 1, not a traceback (:func:`core.cli.clean_errors`, shared with ``ragline flow``).
"""

from __future__ import annotations

import sys

import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich import box as rich_box
from rich.console import Console
from rich.table import Table

from ragline.core.offline import set_offline_env
from ragline.pipelines.verbosity import quiet_libraries

set_offline_env()
quiet_libraries()

from ragline.core.cli import clean_errors  # noqa: E402
from ragline.core.cli import print_json as _print_json  # noqa: E402
from ragline.core.errors import RegistryError  # noqa: E402
from ragline.indexers.registry import IndexRegistry  # noqa: E402
from ragline.pipelines.config import Params, load_params  # noqa: E402
from ragline.pipelines.errors import PipelineError  # noqa: E402
from ragline.runner.cli import feedback_app, flow_app, mcp_app  # noqa: E402

app = typer.Typer(
    name="ragline",
    help="Ingest documents into versioned FAISS indexes, query them, and manage the registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

class Output:
    """How much a command prints: ``-q`` (0: results and errors), default (1), ``-v`` (2+: library logs)."""

    level: int = 1

    @property
    def quiet(self) -> bool:
        """True with ``-q``."""
        return self.level <= 0


OUTPUT = Output()


def configure_output(level: int) -> None:
    """Set the output level (0 quiet, 1 default, 2 verbose, 3 debug) and the library log levels
    (:func:`pipelines.verbosity.quiet_libraries`); Prefect is imported later, lazily."""
    OUTPUT.level = level
    quiet_libraries(level, override_env=level != 1)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ragline")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without an install
        return "unknown"


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"ragline {_version()}\n")
        raise typer.Exit()


@app.callback()
def _root(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only results and errors: no progress bars, "
                               "no warnings from libraries, a one-line summary for ingest/refresh."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                help="Also show the INFO log lines of Prefect and other libraries (-vv: DEBUG)."),
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print ragline's version and exit."),
) -> None:
    """Ingest documents into versioned FAISS indexes, query them, and manage the registry.

    Options before the command (`ragline -q ingest data/sample`) apply to every command.
    """
    configure_output(0 if quiet else 1 + verbose)


def make_reporter():
    """The progress reporter for a command: bars on a terminal (stderr), none with -q or when piped."""
    from ragline.pipelines.progress import Reporter, RichReporter

    return Reporter() if OUTPUT.quiet else RichReporter()
index_app = typer.Typer(help="List and inspect index versions and aliases.", no_args_is_help=True)
stage_app = typer.Typer(help="Run one pipeline stage on files (what dvc.yaml calls).", no_args_is_help=True)
app.add_typer(index_app, name="index")
app.add_typer(stage_app, name="stage")
app.add_typer(flow_app, name="flow")
app.add_typer(mcp_app, name="mcp")
app.add_typer(feedback_app, name="feedback")

out = Console()
err = Console(stderr=True)

ParamsOpt = typer.Option(Path("params.yaml"), "--params", "-p", help="Params file.")
JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts.")


RunnerOpt = typer.Option(None, "--runner", help="Where load/chunk/embed run: local, dask (a local Dask cluster) "
                         "or dask=tcp://HOST:PORT (an existing scheduler); default: runner: in params.")


def with_runner(params: Params, spec: str | None) -> Params:
    """``params`` with ``runner.kind``/``runner.address`` from a ``--runner`` value (unchanged for ``None``).

    Raises:
        ConfigError: a value other than ``local``, ``dask`` or ``dask=ADDRESS``.
    """
    if spec is None:
        return params
    from ragline.pipelines.config import RunnerConfig

    data = params.to_dict()
    data["runner"].update(RunnerConfig.parse(spec))
    return Params.from_dict(data, source=f"params (+ --runner {spec})")


def _params(path: Path, index: str | None = None) -> Params:
    params = load_params(path)
    if index is not None:  # an empty --index is an error (index.name is validated), not the default
        data = params.to_dict()
        data["index"]["name"] = index
        params = Params.from_dict(data, source=f"{path} (+ --index {index})")
    return params


@app.command()
@clean_errors
def ingest(
    sources: list[str] = typer.Argument(None, help="Folders, files or URLs: s3://, gs://, az://, a sitemap.xml, a URL "
                                        "list .txt (default: load.sources from params)."),
    params_file: Path = ParamsOpt,
    index: Optional[str] = typer.Option(None, "--index", "-i", help="Index name (default: index.name)."),
    runner: Optional[str] = RunnerOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Load, chunk, embed and publish SOURCES as a new version of an index (Prefect flow).

    The manifest records the sources (as given, normalized), so `ragline refresh --index NAME`
    later refreshes the same ones.
    """
    from ragline.pipelines.refresh import normalize_sources, refresh_params
    from ragline.pipelines.sources import discover

    params = with_runner(_params(params_file, index), runner)
    params = refresh_params(params.to_dict(), None, None, normalize_sources(sources or params.load.sources))
    # argument errors (a missing source, an unreachable bucket, no file to ingest) end here, before Prefect starts
    if not discover(params.load.sources, params.load):
        raise PipelineError(f"no files to ingest under {', '.join(params.load.sources)} "
                            f"(load.include {params.load.include}, load.exclude {params.load.exclude})")
    from ragline.pipelines.flows import REPORTER, ingest_flow

    token = REPORTER.set(make_reporter())
    try:
        summary = ingest_flow(list(params.load.sources), params.to_dict())
    finally:
        REPORTER.reset(token)
    finish_run(summary, as_json, _print_summary)


def finish_run(summary: Any, as_json: bool, print_table: Callable[[Any], None]) -> None:
    """Print an ingest/refresh summary (JSON or ``print_table``); exit 1 naming the failure if it failed."""
    if as_json:
        _print_json(summary.to_dict())
    elif OUTPUT.quiet:
        out.print(_one_line(summary), highlight=False, soft_wrap=True)
    else:
        print_table(summary)
    if summary.failed:
        err.print(f"[bold red]error:[/] {summary.failed}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _one_line(summary: Any) -> str:
    """The -q summary of an ingest or refresh: where it published and the counts."""
    if getattr(summary, "nothing_changed", False):
        return f"{summary.index}: nothing changed since {summary.parent_version}; nothing published"
    where = f"{summary.index}@{summary.version}" if summary.version else f"{summary.index}: nothing published"
    counts = getattr(summary, "counts", None)
    diff = ""
    if callable(counts):
        c = counts()
        diff = f"{c['added']} added, {c['changed']} changed, {c['removed']} removed; "
    return (f"{where}: {diff}{summary.documents} documents, {summary.chunks} chunks, "
            f"{len(summary.quarantine)} quarantined, {summary.total_seconds:.1f} s")


def _print_summary(summary: Any) -> None:
    t = Table(title=f"ingest → {summary.index}@{summary.version or '(not published)'}", show_header=False)
    t.add_row("documents", str(summary.documents))
    t.add_row("chunks", str(summary.chunks))
    t.add_row("embedded now / from cache", f"{summary.embedded} / {summary.cache_hits}")
    t.add_row("embedding backend", summary.embed_backend)
    t.add_row("quarantined files", str(len(summary.quarantine)))
    print_run_tail(t, summary)


def print_run_tail(table: Table, summary: Any) -> None:
    """Add the wall time per stage and in total to an ingest/refresh summary ``table``, print
    it, then the quarantine table when files were quarantined."""
    for stage, secs in summary.stage_seconds.items():
        table.add_row(f"wall time: {stage}", f"{secs:.2f} s")
    table.add_row("wall time: total", f"{summary.total_seconds:.2f} s")
    out.print(table)
    if summary.quarantine:
        q = Table(title="quarantine")
        for col in ("source", "stage", "error", "message"):
            q.add_column(col, overflow="fold")
        for r in summary.quarantine:
            q.add_row(r.path, r.stage, r.error_type, r.message)
        out.print(q)


@app.command()
@clean_errors
def query(
    text: str = typer.Argument(..., help="The question or search text."),
    index: Optional[str] = typer.Option(None, "--index", "-i", help="NAME[@ALIAS|@VERSION] (default: index.name@latest)."),
    k: Optional[int] = typer.Option(None, "-k", "--k", min=1, help="Number of chunks to return (default: retrieval.k)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="dense | bm25 | hybrid (default: retrieval.mode)."),
    fusion: Optional[str] = typer.Option(None, "--fusion", help="Hybrid fusion: weighted | rrf (default: retrieval.fusion)."),
    filters: list[str] = typer.Option([], "--filter", help="KEY=VALUE, KEY one of source (glob on the URI or file "
                                      "name), doc_id, page, section (glob); repeat for more."),
    params_file: Path = ParamsOpt,
    model: Optional[str] = typer.Option(None, "--model", help="Query embedding model (default: the version's own)."),
    query_backend: str = typer.Option("auto", "--query-backend", help="Query embedding: auto (the index's backend for bf16/int8 "
                                      "vectors, else onnx) or an embed.backend name (onnx, torch, openvino, ...)."),
    query_threads: Optional[int] = typer.Option(None, "--query-threads", min=1, max=64,
                                                help="ONNX Runtime threads for query embedding (default 2)."),
    as_json: bool = JsonOpt,
) -> None:
    """Search a published index version (the params' retrieval: settings) and print the ranked chunks."""
    from ragline.indexers.retrieval import parse_filter_options
    from ragline.indexers.retriever import Index

    params = load_params(params_file)
    flt = parse_filter_options(filters)
    idx = Index.open(params.index.root, params.index.name if index is None else index, defaults=params.retrieval,
                     query_backend=query_backend, cache_dir=params.paths.cache, model=model,
                     normalize=params.embed.normalize, threads=query_threads, verify=params.index.verify)
    hits = idx.search(text, k=k, mode=mode, fusion=fusion, filters=flt)
    if as_json:
        _print_json([h.to_dict() for h in hits])
        return
    print_hits(f"{idx.name}@{idx.version}: {text}",
               [(h.rank, h.score, h.source + (f" (also in {', '.join(h.duplicates)})" if h.duplicates else ""),  # curate
                 h.page, h.char_start, h.char_end, h.text) for h in hits])


#: Below this console width, tables switch to a narrower (or vertical) layout.
WIDE = 110


def print_hits(title: str, hits: list[tuple[int, float, str, int | None, int, int, str]]) -> None:
    """Print ranked hits ``(rank, score, source, page, char_start, char_end, text)``.

    On a wide console, one table row per hit with a snippet column; below :data:`WIDE`
    columns, one block per hit: a line with rank, score, source, page and offsets, then the
    snippet wrapped to the console's width, so nothing is squeezed into a 20-character column.
    """
    from rich.padding import Padding
    from rich.text import Text

    if out.width >= WIDE:
        t = Table(title=title)
        for col in ("rank", "score", "source", "page", "chars"):
            t.add_column(col, no_wrap=col != "source", overflow="fold")
        t.add_column("snippet", overflow="fold", ratio=1, min_width=30)
        for rank, score, source, page, start, end, text in hits:
            snippet = " ".join(text.split())
            t.add_row(str(rank), f"{score:.3f}", source, "" if page is None else str(page), f"{start}-{end}",
                      snippet[:160] + ("…" if len(snippet) > 160 else ""))
        out.print(t)
        return
    out.print(Text(title, style="bold"), soft_wrap=True)
    for rank, score, source, page, start, end, text in hits:
        head = Text(f"{rank}. ", style="bold")
        head.append(f"{score:.3f}  ")
        head.append(source, style="cyan")
        head.append(("" if page is None else f"  page {page}") + f"  chars {start}-{end}")
        out.print(head, soft_wrap=True)
        snippet = " ".join(text.split())
        out.print(Padding(Text(snippet[:240] + ("…" if len(snippet) > 240 else "")), (0, 0, 0, 3)))


@index_app.command("list")
@clean_errors
def index_list(
    index: Optional[str] = typer.Option(None, "--index", "-i", help="Only this index."),
    params_file: Path = ParamsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List indexes, their versions (with counts) and aliases."""
    params = load_params(params_file)
    reg = IndexRegistry(params.index.root)
    names = [index] if index is not None else reg.names()
    if index is not None and not reg.index_dir(index).is_dir():
        raise RegistryError(f"no index named {index!r} under {reg.root}/ (indexes: {', '.join(reg.names()) or 'none'})")
    rows = []
    for name in names:
        aliases = reg.aliases(name)
        for v in reg.versions(name):
            m = reg.manifest(name, v)
            rows.append({"index": name, "version": v, "created_at": m.created_at,
                         "aliases": sorted(a for a, t in aliases.items() if t == v),
                         "documents": m.counts.get("documents"), "chunks": m.counts.get("chunks"),
                         "quarantined": m.counts.get("quarantined"), "model": m.embedding.get("model_id"),
                         "chunker": m.chunker.get("strategy"), "params_hash": m.params_hash[:12]})
    if as_json:
        _print_json(rows)
        return
    wide = out.width >= WIDE
    # narrow consoles (80 columns): fewer, shorter columns; headers never truncated (min_width)
    cols = (("index", "version", "aliases", "created_at", "documents", "chunks", "quarantined", "chunker", "params_hash")
            if wide else ("index", "version", "aliases", "created", "docs", "chunks", "quar."))
    t = Table(title=f"indexes under {reg.root}/", box=None if not wide else rich_box.SQUARE, header_style="bold")
    for col in cols:
        t.add_column(col, min_width=len(col), overflow="fold",
                     justify="right" if col in ("documents", "docs", "chunks", "quarantined", "quar.") else "left")
    for r in rows:
        if wide:
            t.add_row(r["index"], r["version"], ", ".join(r["aliases"]), r["created_at"], str(r["documents"]),
                      str(r["chunks"]), str(r["quarantined"]), r["chunker"], r["params_hash"])
        else:
            t.add_row(r["index"], r["version"], ", ".join(r["aliases"]), _short_time(r["created_at"]),
                      str(r["documents"]), str(r["chunks"]), str(r["quarantined"]))
    out.print(t)


def _short_time(iso: str) -> str:
    """``2026-12-02T06:05:30+00:00`` → ``2026-12-02 06:05`` (UTC as recorded)."""
    return iso[:16].replace("T", " ") if iso else ""


# ---------------- DVC stages: same stage functions, tables on disk ----------------
@stage_app.command("load")
@clean_errors
def stage_load(params_file: Path = ParamsOpt) -> None:
    """Stage load: load.sources → paths.documents + paths.quarantine."""
    from ragline.core.schemas import DOCUMENTS_SCHEMA, QUARANTINE_SCHEMA, write_table
    from ragline.pipelines.load import check_failure_rate, documents_to_table, load_documents, quarantine_to_table
    from ragline.pipelines.sources import discover

    p = load_params(params_file)
    files = discover(p.load.sources, p.load)
    docs, bad = load_documents(files, p.load)
    check_failure_rate(len(files), bad, p.load.max_failed_fraction)
    _mkparent(p.paths.documents, p.paths.quarantine)
    write_table(documents_to_table(docs), p.paths.documents, DOCUMENTS_SCHEMA)
    write_table(quarantine_to_table(bad), p.paths.quarantine, QUARANTINE_SCHEMA)
    out.print(f"load: {len(docs)} documents, {len(bad)} quarantined → {p.paths.documents}")


@stage_app.command("chunk")
@clean_errors
def stage_chunk(params_file: Path = ParamsOpt) -> None:
    """Stage chunk (curate, then chunk): paths.documents → paths.curated_documents, paths.chunks,
    paths.duplicates, paths.curation."""
    from ragline.core.schemas import CHUNKS_SCHEMA, DOCUMENTS_SCHEMA, read_table, write_table
    from ragline.pipelines import curate
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.embed import index_embedder, with_embed_backend
    from ragline.pipelines.load import documents_from_table, documents_to_table

    p = with_embed_backend(load_params(params_file))  # auto: recorded as the backend used
    docs = documents_from_table(read_table(p.paths.documents, DOCUMENTS_SCHEMA))
    docs, boilerplate = curate.curate_documents(docs, p)  # [curate hook] before the text is chunked
    embed_fn = None
    if p.chunk.needs_embedder:
        embedder = index_embedder(p)
        embed_fn = lambda texts: embedder.embed(list(texts))  # noqa: E731
    chunks, bad = chunk_documents(docs, p.chunk, embed_fn=embed_fn, embed_model=p.embed.model)
    failed = {q.path for q in bad}
    documents = documents_to_table([d for d in docs if d.uri not in failed])
    chunks, curation = curate.curate_ingest(documents, chunks, p, boilerplate)  # [curate hook]
    documents = curate.without_quarantined(documents, curation)  # listed in curation.json shingle_errors
    _mkparent(p.paths.chunks, p.paths.curated_documents, p.paths.duplicates, p.paths.curation)
    write_table(documents, p.paths.curated_documents, DOCUMENTS_SCHEMA)
    write_table(chunks, p.paths.chunks, CHUNKS_SCHEMA)
    curate.write_stage_files(curation, p.paths.duplicates, p.paths.curation)
    out.print(f"chunk: {chunks.num_rows} chunks from {len(docs)} documents ({len(bad)} failed, "
              f"{curation.removed_chunks} not indexed as copies) → {p.paths.chunks}")


@stage_app.command("embed")
@clean_errors
def stage_embed(params_file: Path = ParamsOpt) -> None:
    """Stage embed: paths.chunks → paths.embeddings (through the embedding cache)."""
    import pyarrow.parquet as pq

    from ragline.core.schemas import CHUNKS_SCHEMA, read_table
    from ragline.pipelines.embed import embed_chunks, index_embedder, vectors_to_table, with_embed_backend

    p = with_embed_backend(load_params(params_file))  # auto: recorded as the backend used
    chunks = read_table(p.paths.chunks, CHUNKS_SCHEMA)
    embedder = index_embedder(p)
    vectors, computed = embed_chunks(chunks, embedder, p.paths.cache, p.embed.batch_size)
    _mkparent(p.paths.embeddings)
    pq.write_table(vectors_to_table(chunks.column("chunk_id").to_pylist(), vectors, p.embed.backend), p.paths.embeddings)
    out.print(f"embed: {chunks.num_rows} vectors ({computed} embedded now) → {p.paths.embeddings}")


@stage_app.command("publish")
@clean_errors
def stage_publish(params_file: Path = ParamsOpt) -> None:
    """Stage index + publish: tables → a new version of index.name; writes paths.published."""
    import pyarrow.parquet as pq

    from ragline.indexers.embedders import info_of
    from ragline.core.schemas import CHUNKS_SCHEMA, DOCUMENTS_SCHEMA, QUARANTINE_SCHEMA, read_table
    from ragline.pipelines.embed import backend_of_table, index_embedder, vectors_from_table, with_embed_backend
    from ragline.pipelines.lineage import dvc_stage_deps
    from ragline.pipelines.publish import publish_index

    p = load_params(params_file)
    chunks = read_table(p.paths.chunks, CHUNKS_SCHEMA)
    emb = pq.read_table(p.paths.embeddings)
    # auto: the backend the embed stage used (its file says; DVC may have restored it from another machine)
    p = with_embed_backend(p, made_by=backend_of_table(emb))
    if emb.column("chunk_id").to_pylist() != chunks.column("chunk_id").to_pylist():
        raise PipelineError(f"{p.paths.embeddings} does not match {p.paths.chunks}; run `dvc repro`")
    embedder = index_embedder(p)
    from ragline.pipelines.curate import StoredCuration  # [curate hook]

    manifest = publish_index(
        IndexRegistry(p.index.root), p, read_table(p.paths.curated_documents, DOCUMENTS_SCHEMA), chunks,
        vectors_from_table(emb), read_table(p.paths.quarantine, QUARANTINE_SCHEMA), info_of(embedder),
        dvc_stage_deps=dvc_stage_deps(p),
        curation=StoredCuration(Path(p.paths.duplicates), Path(p.paths.curation)),
    )
    _mkparent(p.paths.published)
    Path(p.paths.published).write_text(json.dumps(
        {"index": manifest.index_name, "version": manifest.version, "params_hash": manifest.params_hash,
         "counts": manifest.counts, "chunk_ids_sha256": _ids_hash(chunks)}, indent=2, sort_keys=True) + "\n")
    out.print(f"publish: {manifest.index_name}@{manifest.version} ({manifest.counts['vectors']} vectors)")


def _ids_hash(chunks: Any) -> str:
    import hashlib

    return hashlib.sha256("\n".join(chunks.column("chunk_id").to_pylist()).encode()).hexdigest()


def _mkparent(*paths: str) -> None:
    for path in paths:
        Path(path).parent.mkdir(parents=True, exist_ok=True)


import ragline.pipelines.cli_eval  # noqa: E402,F401  registers `ragline eval ...` and `ragline experiment ...`
import ragline.pipelines.cli_registry  # noqa: E402,F401  registers `ragline refresh` and `ragline index show|diff|promote|rollback|gc|restore`
import ragline.pipelines.canary  # noqa: E402,F401  registers `ragline flow split-status`


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
