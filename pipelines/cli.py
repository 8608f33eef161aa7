"""The ``ragline`` command line (typer).

Every command reads ``params.yaml`` (``--params``), prints a readable summary, and prints
JSON instead with ``--json``. Known failures (bad config, missing index, incompatible
manifest, corrupt registry) end with one line on stderr and exit code 1, not a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from ragline.pipelines.offline import set_offline_env

set_offline_env()

from ragline.chunkers.base import ConfigError  # noqa: E402
from ragline.indexers.manifest import CorruptRegistryError, IndexCompatibilityError  # noqa: E402
from ragline.indexers.registry import IndexRegistry, LockTimeoutError, RegistryError  # noqa: E402
from ragline.core.schemas import SchemaMismatchError  # noqa: E402
from ragline.pipelines.config import Params, load_params  # noqa: E402
from ragline.pipelines.errors import PipelineError  # noqa: E402
from ragline.runner.cli import flow_app  # noqa: E402

app = typer.Typer(
    name="ragline",
    help="Ingest documents into versioned FAISS indexes, query them, and manage the registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
index_app = typer.Typer(help="List and inspect index versions and aliases.", no_args_is_help=True)
stage_app = typer.Typer(help="Run one pipeline stage on files (what dvc.yaml calls).", no_args_is_help=True)
app.add_typer(index_app, name="index")
app.add_typer(stage_app, name="stage")
app.add_typer(flow_app, name="flow")

out = Console()
err = Console(stderr=True)

KNOWN_ERRORS = (ConfigError, RegistryError, CorruptRegistryError, IndexCompatibilityError,
                SchemaMismatchError, LockTimeoutError, PipelineError, FileNotFoundError)

ParamsOpt = typer.Option(Path("params.yaml"), "--params", "-p", help="Params file.")
JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts.")


def clean_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn known errors into one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KNOWN_ERRORS as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _params(path: Path, index: str | None = None) -> Params:
    params = load_params(path)
    if index:
        data = params.to_dict()
        data["index"]["name"] = index
        params = Params.from_dict(data, source=f"{path} (+ --index {index})")
    return params


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.command()
@clean_errors
def ingest(
    sources: list[str] = typer.Argument(None, help="Folders or files (default: load.sources from params)."),
    params_file: Path = ParamsOpt,
    index: Optional[str] = typer.Option(None, "--index", "-i", help="Index name (default: index.name)."),
    as_json: bool = JsonOpt,
) -> None:
    """Load, chunk, embed and publish SOURCES as a new version of an index (Prefect flow)."""
    from ragline.pipelines.flows import REPORTER, ingest_flow
    from ragline.pipelines.progress import RichReporter

    params = _params(params_file, index)
    token = REPORTER.set(RichReporter())
    try:
        summary = ingest_flow(list(sources or []), params.to_dict())
    finally:
        REPORTER.reset(token)
    finish_run(summary, as_json, _print_summary)


def finish_run(summary: Any, as_json: bool, print_table: Callable[[Any], None]) -> None:
    """Print an ingest/refresh summary (JSON or ``print_table``); exit 1 naming the failure if it failed."""
    if as_json:
        _print_json(summary.to_dict())
    else:
        print_table(summary)
    if summary.failed:
        err.print(f"[bold red]error:[/] {summary.failed}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _print_summary(summary: Any) -> None:
    t = Table(title=f"ingest → {summary.index}@{summary.version or '(not published)'}", show_header=False)
    t.add_row("documents", str(summary.documents))
    t.add_row("chunks", str(summary.chunks))
    t.add_row("embedded now / from cache", f"{summary.embedded} / {summary.cache_hits}")
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
        for col in ("path", "stage", "error", "message"):
            q.add_column(col, overflow="fold")
        for r in summary.quarantine:
            q.add_row(r.path, r.stage, r.error_type, r.message)
        out.print(q)


@app.command()
@clean_errors
def query(
    text: str = typer.Argument(..., help="The question or search text."),
    index: Optional[str] = typer.Option(None, "--index", "-i", help="NAME[@ALIAS|@VERSION] (default: index.name@latest)."),
    k: int = typer.Option(5, "-k", "--k", min=1, help="Number of chunks to return."),
    params_file: Path = ParamsOpt,
    model: Optional[str] = typer.Option(None, "--model", help="Embedding model (default: embed.model)."),
    query_backend: str = typer.Option("auto", "--query-backend", help="Query embedding: auto (the index's backend for bf16/int8 "
                                      "vectors, else onnx) or an embed.backend name (onnx, torch, openvino, ...)."),
    as_json: bool = JsonOpt,
) -> None:
    """Search a published index version and print the ranked chunks."""
    from ragline.indexers.backends import query_backend_for, require_backend
    from ragline.indexers.embedders import make_embedder
    from ragline.indexers.retriever import PublishedIndex

    params = load_params(params_file)
    ref = index or params.index.name
    published = PublishedIndex.open(IndexRegistry(params.index.root), ref)
    require_backend(query_backend, allow_auto=True)
    embedder = make_embedder(model or params.embed.model, params.embed.normalize,
                             backend=query_backend_for(published.manifest.embedding, query_backend),
                             cache_dir=params.paths.cache)
    hits = published.search_text(embedder, text, k)
    if as_json:
        _print_json([h.to_dict() for h in hits])
        return
    t = Table(title=f"{published.name}@{published.version}: {text}")
    for col in ("rank", "score", "source", "page", "chars", "snippet"):
        t.add_column(col, overflow="fold")
    for h in hits:
        snippet = " ".join(h.text.split())
        t.add_row(str(h.rank), f"{h.score:.3f}", h.uri, "" if h.page is None else str(h.page),
                  f"{h.char_start}-{h.char_end}", snippet[:160] + ("…" if len(snippet) > 160 else ""))
    out.print(t)


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
    names = [index] if index else reg.names()
    if index and not reg.index_dir(index).is_dir():
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
    t = Table(title=f"indexes under {reg.root}/")
    for col in ("index", "version", "aliases", "created_at", "documents", "chunks", "quarantined", "chunker", "params_hash"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["index"], r["version"], ", ".join(r["aliases"]), r["created_at"], str(r["documents"]),
                  str(r["chunks"]), str(r["quarantined"]), r["chunker"], r["params_hash"])
    out.print(t)


# ---------------- DVC stages: same stage functions, tables on disk ----------------
@stage_app.command("load")
@clean_errors
def stage_load(params_file: Path = ParamsOpt) -> None:
    """Stage load: load.sources → paths.documents + paths.quarantine."""
    from ragline.core.schemas import DOCUMENTS_SCHEMA, QUARANTINE_SCHEMA, write_table
    from ragline.pipelines.load import check_failure_rate, discover_files, documents_to_table, load_documents, quarantine_to_table

    p = load_params(params_file)
    files = discover_files(p.load.sources, p.load.include, p.load.exclude)
    docs, bad = load_documents(files, p.load)
    check_failure_rate(len(files), bad, p.load.max_failed_fraction)
    _mkparent(p.paths.documents, p.paths.quarantine)
    write_table(documents_to_table(docs), p.paths.documents, DOCUMENTS_SCHEMA)
    write_table(quarantine_to_table(bad), p.paths.quarantine, QUARANTINE_SCHEMA)
    out.print(f"load: {len(docs)} documents, {len(bad)} quarantined → {p.paths.documents}")


@stage_app.command("chunk")
@clean_errors
def stage_chunk(params_file: Path = ParamsOpt) -> None:
    """Stage chunk: paths.documents → paths.chunks."""
    from ragline.core.schemas import CHUNKS_SCHEMA, DOCUMENTS_SCHEMA, read_table, write_table
    from ragline.pipelines.chunk import chunk_documents
    from ragline.pipelines.embed import index_embedder
    from ragline.pipelines.load import documents_from_table

    p = load_params(params_file)
    docs = documents_from_table(read_table(p.paths.documents, DOCUMENTS_SCHEMA))
    embed_fn = None
    if p.chunk.strategy == "semantic":
        embedder = index_embedder(p)
        embed_fn = lambda texts: embedder.embed(list(texts))  # noqa: E731
    chunks, bad = chunk_documents(docs, p.chunk, embed_fn=embed_fn, embed_model=p.embed.model)
    _mkparent(p.paths.chunks)
    write_table(chunks, p.paths.chunks, CHUNKS_SCHEMA)
    out.print(f"chunk: {chunks.num_rows} chunks from {len(docs)} documents ({len(bad)} failed) → {p.paths.chunks}")


@stage_app.command("embed")
@clean_errors
def stage_embed(params_file: Path = ParamsOpt) -> None:
    """Stage embed: paths.chunks → paths.embeddings (through the embedding cache)."""
    import pyarrow.parquet as pq

    from ragline.core.schemas import CHUNKS_SCHEMA, read_table
    from ragline.pipelines.embed import embed_chunks, index_embedder, vectors_to_table

    p = load_params(params_file)
    chunks = read_table(p.paths.chunks, CHUNKS_SCHEMA)
    embedder = index_embedder(p)
    vectors, computed = embed_chunks(chunks, embedder, p.paths.cache, p.embed.batch_size)
    _mkparent(p.paths.embeddings)
    pq.write_table(vectors_to_table(chunks.column("chunk_id").to_pylist(), vectors), p.paths.embeddings)
    out.print(f"embed: {chunks.num_rows} vectors ({computed} embedded now) → {p.paths.embeddings}")


@stage_app.command("publish")
@clean_errors
def stage_publish(params_file: Path = ParamsOpt) -> None:
    """Stage index + publish: tables → a new version of index.name; writes paths.published."""
    import pyarrow.parquet as pq

    from ragline.indexers.embedders import info_of
    from ragline.core.schemas import CHUNKS_SCHEMA, DOCUMENTS_SCHEMA, QUARANTINE_SCHEMA, read_table
    from ragline.pipelines.embed import index_embedder, vectors_from_table
    from ragline.pipelines.lineage import dvc_stage_deps
    from ragline.pipelines.publish import publish_index

    p = load_params(params_file)
    chunks = read_table(p.paths.chunks, CHUNKS_SCHEMA)
    emb = pq.read_table(p.paths.embeddings)
    if emb.column("chunk_id").to_pylist() != chunks.column("chunk_id").to_pylist():
        raise PipelineError(f"{p.paths.embeddings} does not match {p.paths.chunks}; run `dvc repro`")
    embedder = index_embedder(p)
    manifest = publish_index(
        IndexRegistry(p.index.root), p, read_table(p.paths.documents, DOCUMENTS_SCHEMA), chunks,
        vectors_from_table(emb), read_table(p.paths.quarantine, QUARANTINE_SCHEMA), info_of(embedder),
        dvc_stage_deps=dvc_stage_deps(p),
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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
