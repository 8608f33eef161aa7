"""``ragline refresh`` and the registry commands ``ragline index show|diff|promote|rollback|gc|compact|restore``.

Registered on the typer apps of :mod:`pipelines.cli` (imported there once). Prefect is only
imported when a refresh has something to do, so a refresh with no changes costs a directory
scan, file hashes and one manifest read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ragline.indexers.backends import recorded_backend
from ragline.indexers.faiss_index import factory_in
from ragline.indexers.registry import VERSION_RE, IndexRegistry, RegistryError, check_alias, check_name
from ragline.indexers.segments import segment_summary
from ragline.pipelines.cli import (
    JsonOpt,
    ParamsOpt,
    _print_json,
    app,
    clean_errors,
    err,
    finish_run,
    index_app,
    out,
    print_run_tail,
)
from ragline.pipelines.config import Params, load_params
from ragline.pipelines.errors import PipelineError

IndexOpt = typer.Option(None, "--index", "-i", help="Index name (default: index.name).")


def _registry(params: Params) -> IndexRegistry:
    return IndexRegistry(params.index.root, params.index.lock_timeout_s, verify=params.index.verify)


def _name(params: Params, index: str | None) -> str:
    return params.index.name if index is None else check_name(index)


def _existing(reg: IndexRegistry, name: str) -> None:
    if not reg.index_dir(name).is_dir() or not reg.versions(name):
        raise RegistryError(f"no index named {name!r} under {reg.root}/ (indexes: {', '.join(reg.names()) or 'none'}); "
                            "run `ragline refresh` first")


# ---------------------------------------------------------------- refresh
@app.command()
@clean_errors
def refresh(
    sources: list[str] = typer.Argument(None, help="Folders or files (default: the sources the index was built from, "
                                        "as its manifest records them; load.sources for a new index)."),
    params_file: Path = ParamsOpt,
    index: Optional[str] = IndexOpt,
    as_json: bool = JsonOpt,
    replace_sources: bool = typer.Option(False, "--replace-sources",
                                         help="Refresh from SOURCES although the index was built from others "
                                              "(documents only in the old sources are removed)."),
    serve: bool = typer.Option(False, "--serve", help="Serve a Prefect deployment that refreshes on a schedule (blocks)."),
    cron: Optional[str] = typer.Option(None, "--cron", help="Cron schedule for --serve (default: refresh.cron)."),
    interval_s: Optional[float] = typer.Option(None, "--interval-s", min=1.0,
                                               help="Refresh every this many seconds (--serve; instead of cron)."),
    runner: Optional[str] = typer.Option(None, "--runner", help="Where parsing runs: local, dask or "
                                         "dask=tcp://HOST:PORT (default: runner: in params)."),
) -> None:
    """Publish a new version with only what changed since `latest` (an ingest when nothing exists).

    Unchanged documents keep their chunks and vectors; added and changed ones are parsed,
    chunked and embedded (through the embedding cache); removed ones are dropped. Files that
    cannot be parsed (unsupported type, empty) are skipped, not counted as added. Prints the
    diff counts; when nothing changed, says so and publishes nothing (exit 0, Prefect not started).
    Without SOURCES, the sources the index was built from are refreshed; other SOURCES are
    refused (naming both) unless --replace-sources is given.
    """
    from ragline.pipelines.cli import make_reporter, with_runner
    from ragline.pipelines.refresh import refresh_params, resolve_sources, run_refresh

    params = with_runner(refresh_params(None, params_file, index), runner)
    if serve:
        if replace_sources:
            raise PipelineError("--replace-sources does not go with --serve: run `ragline refresh --replace-sources "
                                "SOURCES` once, then serve the schedule")
        resolve_sources(params, _registry(params), list(sources or []))  # refuse other sources now, not at 2 am
        _serve(params, params_file, index, list(sources or []), cron, interval_s)
        return
    summary = run_refresh(params, make_reporter(), sources=list(sources or []), replace_sources=replace_sources)
    finish_run(summary, as_json, _print_refresh)


def _print_refresh(s: Any) -> None:
    c = s.counts()
    diff = f"{c['added']} added, {c['changed']} changed, {c['removed']} removed, {c['unchanged']} unchanged"
    skipped = f"; {c['skipped']} skipped (not parseable)" if c.get("skipped") else ""
    if s.nothing_changed:
        out.print(f"refresh {s.index}: nothing changed since {s.parent_version} ({diff}{skipped}); nothing published",
                  highlight=False)
        return
    title = f"refresh → {s.index}@{s.version or '(not published)'}" + (f" (from {s.parent_version})" if s.parent_version else "")
    t = Table(title=title, show_header=False)
    t.add_row("documents", f"{diff}")
    if s.sources:
        t.add_row("sources", ", ".join(s.sources))
    if s.skipped:
        t.add_row("skipped (not parseable)", str(len(s.skipped)))
    if s.still_quarantined:
        t.add_row("still quarantined (unchanged)", str(len(s.still_quarantined)))
    t.add_row("documents / chunks in version", f"{s.documents} / {s.chunks}")
    t.add_row("chunks carried over", str(s.carried_chunks))
    t.add_row("chunks embedded (model / cache)", f"{s.embedded_chunks} ({s.computed} / {s.embedded_chunks - s.computed})")
    t.add_row("embedding backend", s.embed_backend)
    t.add_row("quarantined files", str(len(s.quarantine)))
    for why in s.reasons:
        t.add_row("redone", why)
    for uri in s.kept_previous:
        t.add_row("kept previous version", uri)
    if s.drift:
        d = s.drift
        t.add_row(f"drift from {d.get('a')}", d["error"] if d.get("error") else
                  f"KS {d['tokens']['ks']:.3f}, PSI {d['tokens']['psi']:.3f}"
                  + (f", centroid shift {d['embedding']['centroid_shift']:.4f}"
                     if d.get("embedding") and d["embedding"].get("centroid_shift") is not None else "")
                  + ("; ALERT: " + "; ".join(d["alerts"]) if d.get("alerts") else ""))
    for p in s.promotions:
        t.add_row(f"alias {p['alias']}", ("moved: " if p["moved"] else "not moved: ") + p["reason"])
    print_run_tail(t, s)


def _serve(params: Params, params_file: Path, index: str | None, sources: list[str],
           cron: str | None, interval_s: float | None) -> None:
    from prefect.schedules import Cron, Interval
    from prefect.settings import PREFECT_API_URL

    from ragline.pipelines.flows import scheduled_refresh_flow

    if not PREFECT_API_URL.value():
        raise PipelineError(
            "a schedule needs a Prefect server (a temporary one runs no scheduler): start one with "
            "`prefect server start`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api` and rerun"
        )

    schedule = (Interval(interval_s, timezone=params.refresh.timezone) if interval_s
                else Cron(cron or params.refresh.cron, timezone=params.refresh.timezone))
    name = f"refresh-{params.index.name}"
    when = f"every {interval_s:g} s" if interval_s else f"cron '{cron or params.refresh.cron}' ({params.refresh.timezone})"
    err.print(f"serving deployment scheduled-refresh/{name}: {when}; Ctrl-C stops it", highlight=False)
    scheduled_refresh_flow.serve(
        name=name,
        schedules=[schedule],
        parameters={"params_file": str(params_file.resolve()), "index": index, "sources": sources or None},
        description=f"Incremental refresh of index {params.index.name} (ragline refresh)",
        print_starting_message=False,
        limit=1,  # one refresh at a time; late runs queue instead of piling up
    )


# ---------------------------------------------------------------- registry
def _ref(params: Params, index: str | None, what: str) -> str:
    """NAME@X from VERSION, ALIAS or NAME@X."""
    return what if "@" in what else f"{_name(params, index)}@{what}"


@index_app.command("show")
@clean_errors
def index_show(
    ref: Optional[str] = typer.Argument(None, help="VERSION, ALIAS or NAME@VERSION|ALIAS (default: latest, or what "
                                                   "--index NAME@ALIAS names)."),
    index: Optional[str] = typer.Option(None, "--index", "-i", help="NAME[@ALIAS|@VERSION] (default: index.name)."),
    params_file: Path = ParamsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show a version's manifest summary, the aliases pointing at it and whether its files are intact.

    Exits 1 (after printing) when a file differs from the manifest (size and sha256 checked).
    """
    params = load_params(params_file)
    reg = _registry(params)
    name_part, _, index_sel = (index or "").partition("@")
    what = ref or index_sel or "latest"
    name, version = reg.resolve(what if "@" in what else f"{name_part or params.index.name}@{what}")
    m = reg.manifest(name, version)
    aliases = sorted(a for a, v in reg.aliases(name).items() if v == version)
    problems = reg.damaged_files(name, version, "sha256")
    damaged = sorted(problems)
    info = {
        "index": name, "version": version, "created_at": m.created_at, "aliases": aliases,
        "parent_version": m.parent_version, "sources": m.sources, "counts": m.counts, "params_hash": m.params_hash,
        "chunker": m.chunker, "embedding": m.embedding, "faiss": m.index, "git_commit": m.git_commit,
        "embed_backend": recorded_backend({"params": m.params, "embedding": m.embedding}),  # the backend that embedded
        "dvc_lock_sha256": m.dvc_lock_sha256, "dvc_stage_deps": getattr(m, "dvc_stage_deps", {}),
        "files_intact": not damaged, "damaged_files": damaged, "stats": m.stats,
        "curation": m.stats.get("curation"),  # [curate hook]
        "segments": segment_summary(reg.segments(name, version), m.tombstones),
    }
    sel = what.partition("@")[2] if "@" in what else what
    if not VERSION_RE.match(sel):
        info["alias_history"] = reg.alias_history(name, sel)
    if as_json:
        _print_json(info)
    else:
        out.print(_show_table(info, m, sel), soft_wrap=False)
    if problems:
        err.print(f"[bold red]error:[/] {escape(str(reg.damage_error(name, version, problems)))}", highlight=False,
                  soft_wrap=True)
        raise typer.Exit(1)


def _show_table(info: dict[str, Any], m: Any, sel: str) -> Table:
    """``index show`` as label/value rows of plain words (no Python reprs)."""
    from rich.markup import escape

    def kv(d: dict[str, Any]) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(d.items())) if d else "-"

    c, ch, e, fx = m.counts, m.chunker, m.embedding, m.index
    t = Table(title=f"{info['index']}@{info['version']}", show_header=False, box=None, padding=(0, 2, 0, 0))
    t.add_column("field", style="bold", no_wrap=True)
    t.add_column("value", overflow="fold")
    rows: list[tuple[str, str]] = [
        ("aliases", ", ".join(info["aliases"]) or "-"),
        ("created", info["created_at"].replace("T", " ")),
        ("parent version", info["parent_version"] or "- (a full build)"),
        ("sources", ", ".join(info["sources"]) or "-"),
        ("counts", f"{c.get('documents', 0)} documents, {c.get('chunks', 0)} chunks, {c.get('vectors', 0)} vectors, "
                   f"{c.get('quarantined', 0)} quarantined"),
        ("chunker", f"{ch.get('strategy')} ({kv(ch.get('options') or {})})"
                    + (", context" if ch.get("context") else "") + f"; fingerprint {ch.get('fingerprint')}"),
        ("embedding", f"{e.get('model_id')}, dim {e.get('dim')}, " + ("normalized" if e.get("normalize") else "not normalized")
                      + f"; revision {str(e.get('revision'))[:16]}"
                      + (f"; backend {info['embed_backend']}" if info["embed_backend"] else "")
                      + (f" ({e['quantization']})" if e.get("quantization") else "")),
        ("faiss", f"{factory_in(fx)}, metric {fx.get('metric')}"
                  + "".join(f", {k} {v}" for k, v in fx.items() if k not in ("kind", "factory", "metric", "ntotal"))),
        ("params hash", info["params_hash"][:16]),
        ("git commit", info["git_commit"] or "-"),
        ("dvc.lock", info["dvc_lock_sha256"][:16] if info["dvc_lock_sha256"] else "-"),
        ("files", "intact (sha256 checked)" if info["files_intact"] else "DAMAGED: " + ", ".join(info["damaged_files"])),
    ]
    from ragline.pipelines.curate import summary_line  # [curate hook]

    rows.append(("curation", summary_line(m.stats.get("curation"))))
    for i, seg in enumerate(info["segments"]):
        dead = f", {seg['deleted_documents']} documents / {seg['deleted_chunks']} chunks tombstoned" \
            if seg["deleted_documents"] else ""
        rows.append((f"segment {i + 1}", f"{seg['id'][:12]}: {seg['documents']} documents, {seg['chunks']} chunks"
                                        f"{dead}, {seg['bytes'] / 1e6:.2f} MB"))
    refresh_stats = m.stats.get("refresh")
    if refresh_stats:
        rows.append(("refresh diff", ", ".join(f"{v} {k}" for k, v in refresh_stats.items())))
    secs = (m.stats.get("stage_seconds") or {})
    if secs:
        rows.append(("wall time", ", ".join(f"{k} {v:.1f} s" for k, v in secs.items())))
    if "alias_history" in info:
        rows.append((f"history of {sel}", " → ".join([h["version"] for h in info["alias_history"]] + [info["version"]])))
    for k, v in rows:
        t.add_row(k, escape(str(v)))
    return t


@index_app.command("diff")
@clean_errors
def index_diff(
    a: str = typer.Argument(..., help="Older VERSION or ALIAS."),
    b: str = typer.Argument("latest", help="Newer VERSION or ALIAS (default: latest)."),
    index: Optional[str] = IndexOpt,
    params_file: Path = ParamsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Documents added, removed and changed between two versions, and their chunk counts."""
    params = load_params(params_file)
    reg = _registry(params)
    d = reg.diff_versions(_name(params, index), a, b)
    from ragline.pipelines.curate import cluster_diff  # [curate hook] duplicate-cluster changes

    dups = cluster_diff(reg.version_dir(d.name, d.a), reg.version_dir(d.name, d.b))
    if as_json:
        _print_json({**d.to_dict(), "duplicates": dups})
        return
    out.print(f"{d.name}: {d.a} → {d.b}: {len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} changed, "
              f"{d.unchanged} unchanged documents; chunks {d.chunks_a} → {d.chunks_b} "
              f"(+{d.chunks_added} / -{d.chunks_removed} chunk ids)", highlight=False)
    if d.doc_chunks:
        t = Table()
        for col in ("source", "change", f"chunks in {d.a}", f"chunks in {d.b}"):
            t.add_column(col, overflow="fold")
        kind = {**{u: "added" for u in d.added}, **{u: "removed" for u in d.removed}, **{u: "changed" for u in d.changed}}
        for uri, (ca, cb) in d.doc_chunks.items():
            t.add_row(uri, kind[uri], str(ca), str(cb))
        out.print(t)
    out.print(f"duplicate clusters {dups['clusters_a']} → {dups['clusters_b']}: {len(dups['added'])} new, "
              f"{len(dups['removed'])} gone, {len(dups['changed'])} with other members, "
              f"{len(dups['promoted'])} copies promoted to canonical", highlight=False)
    if d.params_changed:
        out.print(f"params changed: {', '.join(d.params_changed)}", highlight=False)
    if d.chunker_changed or d.embedding_changed:
        out.print(f"chunker changed: {d.chunker_changed}; embedder changed: {d.embedding_changed}", highlight=False)


@index_app.command("profile")
@clean_errors
def index_profile(
    ref: Optional[str] = typer.Argument(None, help="NAME@ALIAS, NAME@VERSION, ALIAS or VERSION (default: latest)."),
    params_file: Path = ParamsOpt,
    as_json: bool = JsonOpt,
    html_out: Optional[Path] = typer.Option(None, "--html", help="Also write a self-contained HTML report (histograms "
                                                                 "inline) to this file."),
) -> None:
    """Profile a version's data: documents by type and folder, text and chunk-length histograms, languages,
    pages per PDF, quarantine reasons, duplicates and boilerplate removed, the largest documents."""
    from ragline.pipelines.profile import build_profile, render_html

    params = load_params(params_file)
    reg = _registry(params)
    what = ref or "latest"
    name, version = reg.resolve(what if "@" in what else f"{params.index.name}@{what}")
    reg.check_files(name, version)
    prof = build_profile(reg, name, version)
    if html_out is not None:
        html_out.parent.mkdir(parents=True, exist_ok=True)
        html_out.write_text(render_html(prof), encoding="utf-8")
    if as_json:
        _print_json(prof)
        return
    from ragline.pipelines.curate import summary_line

    t = Table(title=f"{name}@{version}", show_header=False, box=None, padding=(0, 2, 0, 0))
    t.add_column("field", style="bold", no_wrap=True)
    t.add_column("value", overflow="fold")

    def counts(d: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"

    h, c = prof["text_chars"], prof["chunk_tokens"]
    for k, v in (("documents", f"{prof['documents']['count']} ({counts(prof['documents']['by_type'])})"),
                 ("folders", counts(prof["documents"]["by_folder"])),
                 ("text chars", f"median {h['median']}, p95 {h['p95']}, max {h['max']}"),
                 ("chunk tokens", f"{c['count']} chunks, median {c['median']}, p95 {c['p95']}, max {c['max']}"),
                 ("languages", counts(prof["languages"])), ("PDF pages", counts(prof["pdf_pages"])),
                 ("quarantine", counts(prof["quarantine"])), ("curation", summary_line(prof["curation"])),
                 ("largest", ", ".join(f"{r['uri']} ({r['chars']} chars)" for r in prof["largest"][:3])),
                 *((("html", str(html_out)),) if html_out else ())):
        t.add_row(k, escape(str(v)))
    out.print(t, soft_wrap=False)


@index_app.command("drift")
@clean_errors
def index_drift(
    a: str = typer.Argument(..., help="Reference (older) VERSION or ALIAS."),
    b: str = typer.Argument("latest", help="Newer VERSION or ALIAS (default: latest)."),
    index: Optional[str] = IndexOpt,
    questions: Optional[Path] = typer.Option(None, "--questions", "-q",
                                             help="JSONL {\"question\", \"doc\"} file: also compare top-k results "
                                                  "and recall@k (retrieval: settings)."),
    params_file: Path = ParamsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """How version B drifted from A: counts, chunk token lengths, embeddings, top-k results.

    Counts by source folder and type, chunk token lengths (KS statistic, PSI), embedding
    centroid shift and the distance of new chunks to A, and (with --questions) top-k overlap
    and recall@k.

    Versions built with different embedders get counts and token lengths only (the embedding
    measures are refused with a message; exit 0).
    """
    from ragline.evaluation.drift import compute_drift
    from ragline.pipelines.evaluate import load_questions

    params = load_params(params_file)
    reg = _registry(params)
    name = _name(params, index)
    _existing(reg, name)
    qs = [(q.question, q.doc) for q in load_questions(questions)] if questions is not None else None
    d = compute_drift(reg, name, a, b, qs, params.retrieval, embedder_of=_query_embedder(params))
    if as_json:
        _print_json(d.to_dict())
        return
    _print_drift(d)


def _query_embedder(params: Params) -> Any:
    from ragline.indexers.retriever import embedder_for

    return lambda manifest: embedder_for(manifest, params.embed.backend, params.paths.cache)


def _print_drift(d: Any) -> None:
    out.print(f"drift {d.name}: {d.a} → {d.b}: documents {d.documents['a']} → {d.documents['b']} "
              f"({d.documents['delta']:+d}), chunks {d.chunks['a']} → {d.chunks['b']} ({d.chunks['delta']:+d})",
              highlight=False)
    for title, groups in (("folder", d.by_folder), ("type", d.by_suffix)):
        t = Table(title=f"by {title}")
        for col in (title, "documents", "Δ", "chunks", "Δ "):
            t.add_column(col, overflow="fold")
        for key, row in groups.items():
            da, db, dd = row["documents"]
            ca, cb, cd = row["chunks"]
            t.add_row(escape(key), f"{da} → {db}", f"{dd:+d}", f"{ca} → {cb}", f"{cd:+d}")
        out.print(t)
    tk = d.tokens
    out.print(f"chunk tokens: mean {tk['a']['mean']:g} → {tk['b']['mean']:g}, p90 {tk['a']['p90']:g} → "
              f"{tk['b']['p90']:g}; KS D = {tk['ks']:.3f} (p = {tk['ks_pvalue']:.3g}), PSI = {tk['psi']:.3f}",
              highlight=False)
    if d.embedding is not None:
        e = d.embedding
        nn = "-" if e["new_chunk_nn_distance"] is None else f"{e['new_chunk_nn_distance']:.4f}"
        cs = "-" if e["centroid_shift"] is None else f"{e['centroid_shift']:.4f}"
        out.print(f"embeddings: centroid shift (cosine distance) {cs}; {e['new_chunks']} new chunks, "
                  f"mean nearest-neighbour cosine distance to {d.a}: {nn}", highlight=False)
    else:
        out.print(escape(str(d.embedding_refused)), highlight=False)
    if d.retrieval is not None:
        r = d.retrieval
        out.print(f"retrieval on {r['questions']} questions ({r['mode']}, k={r['k']}): top-k overlap chunks "
                  f"{r['chunk_jaccard']:.3f}, documents {r['doc_jaccard']:.3f} (Jaccard); recall@{r['k']} "
                  f"{r['recall_a']:.3f} → {r['recall_b']:.3f}", highlight=False)


@app.command("report")
@clean_errors
def report(
    html_file: Path = typer.Option(..., "--html", help="Write the page here (one static HTML file, inline SVG)."),
    index: Optional[str] = IndexOpt,
    arm: Optional[str] = typer.Option(None, "--arm", help="Serving figures of this split arm only (flow serve --split)."),
    params_file: Path = ParamsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Write a static HTML dashboard of an index (inline SVG plots, no network).

    Versions over time, promotions and rollbacks, gate metrics per version, drift between
    consecutive versions, and serving figures from the request log of `ragline flow serve`
    when one exists, per flow and per split arm.
    """
    from ragline.pipelines.report import write_report

    params = load_params(params_file)
    name = _name(params, index)
    _existing(_registry(params), name)
    data = write_report(params, name, html_file, arm)
    if as_json:
        _print_json({"html": str(html_file), **data.to_dict()})
        return
    serving = f"{data.requests['total']} requests" if data.requests else "no request log"
    if data.requests and data.requests["arms"]:
        serving += " (" + ", ".join(f"{a}: {f['requests']}" for a, f in sorted(data.requests["arms"].items())) + ")"
    out.print(f"wrote {html_file}: {name}, {len(data.versions)} versions, {len(data.drift)} drift pairs, {serving}",
              highlight=False)


@index_app.command("promote")
@clean_errors
def index_promote(
    version: str = typer.Argument(..., help="VERSION (or an ALIAS whose target to take)."),
    alias: str = typer.Option(..., "--alias", "-a", help="Alias to move, e.g. prod."),
    index: Optional[str] = IndexOpt,
    force: bool = typer.Option(False, "--force", help="Skip the promotion gate (recorded in the alias history)."),
    params_file: Path = ParamsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Move ALIAS to VERSION, if the promotion gate (promote: in params) passes."""
    from ragline.pipelines.promote import promote

    params = load_params(params_file)
    reg = _registry(params)
    name = _name(params, index)
    check_alias(alias)
    _existing(reg, name)
    move, gate = promote(reg, params, name, version, alias, force=force)
    if as_json:
        _print_json({"index": name, "alias": alias, "from": move.from_version, "to": move.to_version,
                     "gate": gate.to_dict()})
        return
    out.print(f"{name}@{alias}: {move.from_version or '(new)'} → {move.to_version} ({gate.reason})", highlight=False)


@index_app.command("rollback")
@clean_errors
def index_rollback(
    alias: str = typer.Option(..., "--alias", "-a", help="Alias to move back, e.g. prod."),
    index: Optional[str] = IndexOpt,
    params_file: Path = ParamsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Move ALIAS back to the version it pointed at before its last move (repeat to go further back)."""
    params = load_params(params_file)
    reg = _registry(params)
    name = _name(params, index)
    check_alias(alias)
    _existing(reg, name)
    move = reg.rollback_alias(name, alias)
    if as_json:
        _print_json({"index": name, "alias": alias, "from": move.from_version, "to": move.to_version})
        return
    out.print(f"{name}@{alias}: rolled back {move.from_version} → {move.to_version}", highlight=False)


@index_app.command("gc")
@clean_errors
def index_gc(
    keep: int = typer.Option(..., "--keep", "-k", min=0, help="Newest versions to keep besides those aliases need."),
    index: Optional[str] = IndexOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Only report what would be deleted."),
    params_file: Path = ParamsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Delete old versions no alias points at (or could roll back to), and leftovers of crashed runs.

    A version folder without a valid manifest is never deleted: it is reported as damaged (with
    the repair) and the command exits 1.
    """
    params = load_params(params_file)
    reg = _registry(params)
    name = _name(params, index)
    report = reg.gc(name, keep, dry_run=dry_run)
    if as_json:
        _print_json({"index": name, **report.to_dict()})
        if report.damaged:
            raise typer.Exit(1)
        return
    verb = "would delete" if dry_run else "deleted"
    out.print(f"{name}: {verb} {len(report.deleted)} version(s): {', '.join(report.deleted) or '-'}", highlight=False)
    for v, why in report.kept.items():
        out.print(f"  kept {v}: {', '.join(why)}", highlight=False)
    if report.leftovers:
        out.print(f"  {'would remove' if dry_run else 'removed'} leftovers of dead processes: {', '.join(report.leftovers)}",
                  highlight=False)
    if report.segments_deleted:
        out.print(f"  {verb} {len(report.segments_deleted)} segment(s) no kept version lists; "
                  f"{report.segments_kept} kept", highlight=False)
    for v, why in report.damaged.items():
        err.print(f"[bold red]damaged:[/] {name}@{v}: {escape(why)}", highlight=False, soft_wrap=True)
    if report.damaged:
        raise typer.Exit(1)


@index_app.command("compact")
@clean_errors
def index_compact(
    ref: Optional[str] = typer.Argument(None, help="NAME[@ALIAS|@VERSION] to compact (default: index.name@latest)."),
    params_file: Path = ParamsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Merge a version's segments into one (tombstoned rows dropped) and publish it as a new version.

    Nothing is re-embedded. The alias named (and ``latest``, when it pointed at the compacted
    version) moves to the new version; a refresh also compacts by itself past
    ``index.compact_max_segments`` segments or ``index.compact_max_tombstone_ratio``
    tombstoned rows. A damaged segment makes it refuse, naming the file.
    """
    from ragline.pipelines.publish import compact_index

    params = load_params(params_file)
    reg = _registry(params)
    target = ref or f"{params.index.name}@latest"
    name, before = reg.resolve(target)
    m = compact_index(reg, params, target)
    moved = sorted(a for a, v in reg.aliases(name).items() if v == m.version)
    info = {"index": name, "compacted": before, "version": m.version, "segments_before": m.stats["segments_before"],
            "segments": len(m.segments), "documents": m.counts["documents"], "chunks": m.counts["chunks"],
            "aliases": moved}
    if as_json:
        _print_json(info)
        return
    out.print(f"{name}@{m.version}: {before} compacted from {info['segments_before']} segment(s) into "
              f"{info['segments']} ({info['documents']} documents, {info['chunks']} chunks); "
              f"aliases moved: {', '.join(moved) or '-'}", highlight=False)


@index_app.command("restore")
@clean_errors
def index_restore(
    version: str = typer.Argument(..., help="The VERSION (or ALIAS) to rebuild from its git commit and DVC data."),
    index: Optional[str] = IndexOpt,
    force: bool = typer.Option(False, "--force", help="`dvc repro --force`: recompute every stage, not only what changed."),
    pull: bool = typer.Option(False, "--pull", help="`dvc pull` (fetch from the DVC remote) instead of `dvc checkout`."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the commit and the commands; run nothing."),
    params_file: Path = ParamsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Rebuild VERSION from the git commit whose dvc.lock records its inputs, and check it equals VERSION.

    Runs `git checkout COMMIT -- params.yaml dvc.lock *.dvc`, `dvc checkout` (or `dvc pull`),
    `dvc repro publish` in the current folder (a git + DVC repository), then compares the version it
    published with VERSION: vector count, chunk ids, vectors within 1e-6, params hash.
    Exit 1 when they differ. Return to your branch's state with
    `git checkout HEAD -- params.yaml dvc.lock *.dvc && dvc checkout`.

    A version built by `ragline ingest|refresh` from object stores or web pages (not by `dvc repro`)
    is rebuilt from its manifest instead: every input is fetched again (objects by their recorded
    version id, so a versioned bucket gives back the exact bytes whatever it holds now) and its sha256
    checked against the manifest before anything is built; a version gone or changed bytes refuse,
    naming the object. The rebuild uses the version's recorded params and is published as a new version.
    """
    import json

    from ragline.pipelines.lineage import LineageError, compare_versions, find_dvc_commit, restore_commands, run_commands
    from ragline.pipelines.sources import is_remote

    params = load_params(params_file)
    reg = _registry(params)
    name, recorded = reg.resolve(_ref(params, index, version))
    manifest = reg.manifest(name, recorded)
    if not manifest.dvc_stage_deps and any(is_remote(str(i["uri"])) for i in manifest.inputs):
        _restore_from_sources(reg, name, recorded, manifest, dry_run, as_json)
        return
    commit = find_dvc_commit(manifest)
    if commit is None:
        raise LineageError(f"no commit of dvc.lock in this repository records the inputs of {name}@{recorded}; "
                           "commit dvc.lock after each `dvc repro` so versions can be restored")
    commands = restore_commands(commit, force=force, pull=pull)
    if dry_run:
        if as_json:
            _print_json({"index": name, "version": recorded, "commit": commit, "commands": commands})
        else:
            out.print(f"{name}@{recorded} was built from commit {commit}; restore with:", highlight=False)
            for c in commands:
                out.print("  " + " ".join(c), highlight=False)
        return
    run_commands(commands, echo=None if as_json else (lambda c: err.print(f"$ {c}", highlight=False)))
    rebuilt_params = load_params(params_file)
    published = json.loads(Path(rebuilt_params.paths.published).read_text())
    if published.get("index") != name:
        raise LineageError(f"{rebuilt_params.paths.published} names index {published.get('index')!r}, not {name!r}")
    cmp = compare_versions(IndexRegistry(rebuilt_params.index.root), name, recorded, published["version"])
    if as_json:
        _print_json({"index": name, "version": recorded, "commit": commit, **cmp.to_dict()})
    else:
        out.print(f"{name}@{recorded} (commit {commit[:12]}) rebuilt as {cmp.rebuilt}: vectors {cmp.vectors[0]} / "
                  f"{cmp.vectors[1]}, chunk ids equal: {cmp.chunk_ids_equal}, max |Δ| = {cmp.max_abs_diff}, "
                  f"params hash equal: {cmp.params_hash_equal} → {'EQUAL' if cmp.equal else 'DIFFERENT'}", highlight=False)
    if not cmp.equal:
        raise typer.Exit(1)


def _restore_from_sources(reg: IndexRegistry, name: str, recorded: str, manifest: Any, dry_run: bool,
                          as_json: bool) -> None:
    """``index restore`` of a version built from remote sources: pin its inputs (version ids),
    verify their bytes (sha256), rebuild with the recorded params through the ingest flow,
    compare. Exit 1 when the rebuilt version differs."""
    from ragline.pipelines.cli import make_reporter
    from ragline.pipelines.lineage import compare_versions
    from ragline.pipelines.sources import pinned_entries, verify_inputs

    p = Params.from_dict(manifest.params)  # the params the version was built with (its params hash)
    entries = pinned_entries(manifest.inputs, manifest.sources, p.load)
    verified = verify_inputs(entries, manifest.inputs, p.load)
    pinned = sum(1 for e in entries if e.version_id)
    if dry_run:
        if as_json:
            _print_json({"index": name, "version": recorded, "from": "sources", "inputs": verified,
                         "pinned_versions": pinned})
        else:
            out.print(f"{name}@{recorded}: {verified} inputs fetched and verified (sha256), {pinned} by object "
                      "version id; run without --dry-run to rebuild", highlight=False)
        return
    from ragline.pipelines.flows import REPORTER, ingest_flow

    token = REPORTER.set(make_reporter())
    try:
        summary = ingest_flow(list(manifest.sources), p.to_dict(), inputs=list(manifest.inputs))
    finally:
        REPORTER.reset(token)
    if summary.failed or summary.version is None:
        raise PipelineError(f"rebuilding {name}@{recorded} from its inputs published nothing: {summary.failed}")
    cmp = compare_versions(IndexRegistry(p.index.root), name, recorded, summary.version)
    if as_json:
        _print_json({"index": name, "version": recorded, "from": "sources", "inputs": verified,
                     "pinned_versions": pinned, **cmp.to_dict()})
    else:
        out.print(f"{name}@{recorded} ({verified} inputs verified, {pinned} by version id) rebuilt as {cmp.rebuilt}: "
                  f"vectors {cmp.vectors[0]} / {cmp.vectors[1]}, chunk ids equal: {cmp.chunk_ids_equal}, "
                  f"max |Δ| = {cmp.max_abs_diff}, params hash equal: {cmp.params_hash_equal} → "
                  f"{'EQUAL' if cmp.equal else 'DIFFERENT'}", highlight=False)
    if not cmp.equal:
        raise typer.Exit(1)
