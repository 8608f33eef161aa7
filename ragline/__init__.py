"""ragline: ingestion, incremental indexing, an index registry and a retrieval-grounded flow runner for RAG.

The public Python API is the same objects the ``ragline`` command uses::

    import ragline

    ragline.ingest(["data/sample"])                  # -> Version (what `ragline ingest` does)
    index = ragline.open_index("sample@latest")       # -> Index
    hits = index.search("How long does a worker bee take to develop?", k=3)  # -> list[Hit]

- :func:`ingest` and :func:`refresh` run the ingest and incremental-refresh pipelines (Prefect
  flows; a refresh with nothing to do returns without starting Prefect).
- :func:`open_index` opens a published version for searching; :meth:`Index.search` runs the
  one retriever behind ``ragline query``, the promotion gate, ``ragline eval chunking`` and
  flows (dense, BM25 or hybrid, defaults from the ``retrieval:`` section of params.yaml).
  Searching never imports Prefect.

Errors derive from :class:`ragline.core.errors.RaglineError`: a bad value is a
:class:`~ragline.core.errors.ConfigError`, a missing index, alias or version an
:class:`~ragline.core.errors.IndexNotFound`, :class:`~ragline.core.errors.AliasNotFound` or
:class:`~ragline.core.errors.VersionNotFound`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version as _dist_version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ragline.core.errors import (
    AliasNotFound,
    ConfigError,
    IndexNotFound,
    RaglineError,
    RegistryError,
    VersionNotFound,
)
from ragline.core.records import Hit

if TYPE_CHECKING:
    from ragline.indexers.retriever import Index
    from ragline.pipelines.config import Params
    from ragline.pipelines.flows import IngestSummary
    from ragline.pipelines.refresh import RefreshSummary as RefreshResult

try:
    __version__ = _dist_version("ragline")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

DEFAULT_PARAMS = "params.yaml"


@dataclass(frozen=True)
class Version:
    """A version an ingest published.

    Attributes:
        index: the index name.
        version: the version id, ``vNNNN``.
        root: the registry folder (``index.root``).
        summary: what the ingest did (counts, quarantine, wall times; what ``ragline ingest --json`` prints).
    """

    index: str
    version: str
    root: str
    summary: "IngestSummary"

    @property
    def ref(self) -> str:
        """``NAME@vNNNN``."""
        return f"{self.index}@{self.version}"


def _params(params: "str | Path | Params | None", index: str | None = None) -> "Params":
    """Validated params: a file (``params.yaml`` may be absent: then the defaults), a
    :class:`~ragline.pipelines.config.Params`, or ``None`` (the defaults); ``index`` overrides ``index.name``."""
    from ragline.pipelines.config import Params, load_params

    if isinstance(params, Params):
        p = params
    elif params is None or (str(params) == DEFAULT_PARAMS and not Path(params).is_file()):
        p = Params()
    else:
        p = load_params(params)
    if index:
        data = p.to_dict()
        data["index"]["name"] = index
        p = Params.from_dict(data, source=f"index={index!r}")
    return p


def ingest(sources: Sequence[str | Path] | str | Path, *, index: str | None = None,
           params: "str | Path | Params | None" = DEFAULT_PARAMS) -> Version:
    """Load, chunk, embed and publish ``sources`` as a new version of an index (``ragline ingest``).

    Args:
        sources: folders, files or URLs (``s3://...``, a sitemap ``https://.../sitemap.xml``; one or a
            list; see README "Sources beyond one folder"); empty: ``load.sources`` of the params.
        index: index name (default: ``index.name``).
        params: a params file (``params.yaml`` may be missing: then the defaults), a ``Params``
            object, or ``None`` for the defaults.

    Returns:
        The published :class:`Version`.

    Raises:
        ConfigError: invalid params or index name.
        PipelineError: the run failed (e.g. too many files quarantined; the message says why).
        LockTimeoutError: another publish held the index lock past ``index.lock_timeout_s``.
    """
    from ragline.pipelines.errors import PipelineError
    from ragline.pipelines.flows import ingest_flow

    p = _params(params, index)
    items = [sources] if isinstance(sources, (str, Path)) else list(sources or [])
    summary = ingest_flow([str(s) for s in items], p.to_dict())
    if summary.failed or not summary.version:
        raise PipelineError(summary.failed or "ingest published nothing")
    return Version(summary.index, summary.version, p.index.root, summary)


def refresh(sources: Sequence[str | Path] | str | Path | None = None, *, index: str | None = None,
            params: "str | Path | Params | None" = DEFAULT_PARAMS, replace_sources: bool = False) -> "RefreshResult":
    """Publish a new version with only what changed since ``latest`` (``ragline refresh``).

    Args:
        sources: folders or files (default: the sources the index was built from, as its
            manifest records them; ``load.sources`` for a new index).
        index: index name (default: ``index.name``).
        params: as for :func:`ingest`.
        replace_sources: allow ``sources`` to differ from the recorded ones (documents only
            in the old sources are removed); otherwise that is a ``SourcesChanged`` ConfigError.

    Returns:
        The :class:`~ragline.pipelines.refresh.RefreshSummary`; ``version`` is ``None`` when
        nothing changed (nothing is published then).

    Raises:
        ConfigError, LockTimeoutError: as for :func:`ingest`.
        PipelineError: the run failed.
    """
    from ragline.pipelines.errors import PipelineError
    from ragline.pipelines.refresh import refresh_params, run_refresh

    p = _params(params, index)
    items = None if sources is None else ([sources] if isinstance(sources, (str, Path)) else list(sources))
    p = refresh_params(p.to_dict(), None, None)
    summary = run_refresh(p, sources=[str(s) for s in items] if items else None, replace_sources=replace_sources)
    if summary.failed:
        raise PipelineError(summary.failed)
    return summary


def open_index(ref: str | None = None, *, root: str | Path | None = None,
               params: "str | Path | Params | None" = DEFAULT_PARAMS, query_backend: str = "auto",
               model: str | None = None, query_threads: int | None = None) -> "Index":
    """Open a published index version for searching (what ``ragline query`` searches).

    Args:
        ref: ``NAME``, ``NAME@ALIAS`` or ``NAME@vNNNN`` (default: ``index.name@latest``); an
            alias is resolved now, so the :class:`Index` keeps its version if the alias moves.
        root: registry folder (default: ``index.root`` of the params).
        params: as for :func:`ingest`; its ``retrieval:`` section is the default of
            :meth:`Index.search` and ``paths.cache`` holds the exported ONNX query model.
        query_backend: ``auto`` (the index's own backend for bf16/int8 vectors, else ``onnx``) or
            an ``embed.backend`` name.
        model: query embedding model (default: the one the version's manifest records).
        query_threads: ONNX Runtime threads for query embedding (default 2).

    Returns:
        The :class:`~ragline.indexers.retriever.Index`.

    Raises:
        IndexNotFound, AliasNotFound, VersionNotFound: the index, alias or version does not exist.
        CorruptRegistryError: damaged registry files.
        IndexCompatibilityError: ``model`` did not build the version.
        ConfigError: invalid params or ``query_backend``.
    """
    from ragline.indexers.retriever import Index

    p = _params(params)
    return Index.open(root if root is not None else p.index.root, p.index.name if ref is None else ref,
                      defaults=p.retrieval, query_backend=query_backend, cache_dir=p.paths.cache, model=model,
                      normalize=p.embed.normalize, threads=query_threads, verify=p.index.verify)


def __getattr__(name: str) -> Any:
    if name == "Index":
        from ragline.indexers.retriever import Index

        return Index
    if name == "RefreshResult":
        from ragline.pipelines.refresh import RefreshSummary

        return RefreshSummary
    raise AttributeError(f"module 'ragline' has no attribute {name!r}")


__all__ = ["ingest", "refresh", "open_index", "Index", "Hit", "Version", "RefreshResult", "RaglineError",
           "ConfigError", "RegistryError", "IndexNotFound", "AliasNotFound", "VersionNotFound", "__version__"]
