"""The Prefect flows (the only module that imports Prefect).

``ingest`` composes the stage functions of :mod:`pipelines.load`, :mod:`pipelines.chunk`,
:mod:`pipelines.embed` and :mod:`pipelines.publish` as tasks. Retries are declared only
where a retry can help: file discovery (I/O), model loading, and publishing (I/O). Parsing,
chunking and embedding are deterministic: a retry would fail the same way, and a bad
document is quarantined instead. Tasks use ``NO_CACHE``: inputs are large Arrow tables that
ragline caches itself, by content (the embedding cache).

Flows run without a Prefect server: Prefect starts a temporary local API on loopback.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from contextlib import contextmanager

from pipelines.offline import set_offline_env

set_offline_env()

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from indexers.embedders import Embedder, info_of, make_embedder  # noqa: E402
from indexers.registry import IndexRegistry  # noqa: E402
from pipelines.chunk import chunk_documents  # noqa: E402
from pipelines.config import Params  # noqa: E402
from pipelines.embed import embed_chunks  # noqa: E402
from pipelines.load import (  # noqa: E402
    QuarantineRecord,
    check_failure_rate,
    discover_files,
    documents_to_table,
    load_documents,
    quarantine_to_table,
)
from pipelines.progress import Reporter  # noqa: E402
from pipelines.publish import publish_index  # noqa: E402

#: Progress reporter for the current run (set by the CLI; tasks run in the caller's context).
REPORTER: contextvars.ContextVar[Reporter] = contextvars.ContextVar("ragline_reporter", default=Reporter())


@dataclass
class IngestSummary:
    """What an ingest did (printed by the CLI, ``--json`` prints :meth:`to_dict`)."""

    index: str
    version: str | None
    documents: int
    chunks: int
    embedded: int
    cache_hits: int
    quarantine: list[QuarantineRecord]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0
    failed: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["quarantined"] = len(self.quarantine)
        return d


@contextmanager
def _timed(times: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        times[name] = round(times.get(name, 0.0) + time.perf_counter() - t0, 3)


@task(name="discover", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def discover_task(sources: list[str], params: Params):
    return discover_files(sources, params.load.include, params.load.exclude)


@task(name="load", cache_policy=NO_CACHE)
def load_task(files, params: Params):
    with REPORTER.get().stage("load", len(files)) as advance:
        return load_documents(files, params.load, progress=advance)


@task(name="chunk", cache_policy=NO_CACHE)
def chunk_task(docs, params: Params, embedder: Embedder):
    embed_fn = (lambda texts: embedder.embed(list(texts))) if params.chunk.strategy == "semantic" else None
    with REPORTER.get().stage("chunk", len(docs)) as advance:
        return chunk_documents(docs, params.chunk, embed_fn=embed_fn, progress=advance)


@task(name="load-model", retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def load_model_task(params: Params) -> Embedder:
    embedder = make_embedder(params.embed.model, params.embed.normalize)
    getattr(embedder, "warm_up", lambda: None)()
    return embedder


@task(name="embed", cache_policy=NO_CACHE)
def embed_task(chunks, params: Params, embedder: Embedder):
    with REPORTER.get().stage("embed", chunks.num_rows) as advance:
        return embed_chunks(chunks, embedder, params.paths.cache, params.embed.batch_size, progress=advance)


@task(name="publish", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def publish_task(params: Params, documents, chunks, vectors, quarantine, embedder: Embedder, stats: dict):
    return publish_index(IndexRegistry(params.index.root), params, documents, chunks, vectors,
                         quarantine_to_table(quarantine), info_of(embedder), stats=stats)


@flow(name="ingest", validate_parameters=False, log_prints=False)
def ingest_flow(sources: list[str], params: dict[str, Any]) -> IngestSummary:
    """Load, chunk, embed, index and publish ``sources`` as a new version of ``index.name``.

    Args:
        sources: folders or files (``load.sources`` from params when empty).
        params: validated params as a dict (``Params.to_dict()``).

    Returns:
        The run summary; ``failed`` is set (and nothing published) when the quarantined share
        exceeds ``load.max_failed_fraction``.
    """
    p = Params.from_dict(params)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    with _timed(times, "discover"):
        files = discover_task(sources or p.load.sources, p)
    with _timed(times, "load"):
        docs, quarantine = load_task(files, p)
    with _timed(times, "load-model"):
        embedder = load_model_task(p)
    with _timed(times, "chunk"):
        chunks, chunk_bad = chunk_task(docs, p, embedder)
    quarantine = quarantine + chunk_bad
    summary = IngestSummary(p.index.name, None, len(docs), chunks.num_rows, 0, 0, quarantine, times)
    try:
        check_failure_rate(len(files), quarantine, p.load.max_failed_fraction)
    except Exception as e:  # FailureRateExceeded: report, publish nothing
        summary.failed = str(e)
        summary.total_seconds = round(time.perf_counter() - t0, 3)
        return summary
    with _timed(times, "embed"):
        vectors, computed = embed_task(chunks, p, embedder)
    summary.embedded, summary.cache_hits = computed, chunks.num_rows - computed
    good = {q.path for q in chunk_bad}
    documents = documents_to_table([d for d in docs if d.uri not in good])
    with _timed(times, "publish"):
        manifest = publish_task(p, documents, chunks, vectors, quarantine, embedder,
                                {"stage_seconds": times, "embedded": computed})
    summary.version = manifest.version
    summary.total_seconds = round(time.perf_counter() - t0, 3)
    return summary
