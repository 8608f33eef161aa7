"""Incremental refresh: redo only what changed since the version being refreshed.

A refresh compares the sources' current files (sha256 of their bytes) with the ``inputs`` of
the manifest of the index's ``latest`` version (its *parent*) and sorts every document into
added, changed, removed or unchanged. Only added and changed files are parsed, chunked and
embedded; unchanged documents carry their document rows, chunk rows and vectors (read back
from the parent's vectors.npy) into the new version without recomputation; removed documents
are dropped. When the chunker or the embedder differs from the parent's, unchanged documents
are re-chunked from their stored text and/or re-embedded, through the embedding cache, which
still skips every text embedded before.

Failures: a changed file that no longer parses is quarantined and its previous version is
kept (and listed in :attr:`RefreshSummary.kept_previous`). A file that failed in the parent
and has not changed since is not retried; its quarantine record is carried over.

Everything here is a plain function; :mod:`pipelines.flows` composes them as Prefect tasks,
and ``ragline refresh`` calls :func:`plan_refresh` before starting Prefect, so a refresh
with nothing to do costs a directory scan and file hashes.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from enum import IntEnum
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ragline.core.errors import ConfigError
from ragline.core.hashing import FileHashes, sha256_text
from ragline.core.memory import release_unused_memory
from ragline.indexers.embedders import Embedder, EmbedderInfo
from ragline.indexers.faiss_index import build_settings
from ragline.indexers.manifest import Manifest
from ragline.indexers.segments import CHUNKS_FILE, DOCUMENTS_FILE, dead_doc_ids, read_live_table
from ragline.indexers.registry import DEFAULT_ALIAS, IndexRef, IndexRegistry, RegistryError
from ragline.core.schemas import CHUNKS_SCHEMA, DOCUMENTS_SCHEMA, QUARANTINE_SCHEMA, SIGNATURES_FILE, read_table
from ragline.pipelines.chunk import chunk_documents, chunker_record
from ragline.pipelines.config import Params, load_params
from ragline.pipelines.embed import embed_chunks, index_embedder, with_embed_backend
from ragline.pipelines.publish import SharedSegments
from ragline.pipelines.load import (
    SUPPORTED_TYPES,
    Document,
    QuarantineRecord,
    SourceFile,
    doc_id_for,
    documents_from_table,
    documents_to_table,
    quarantine_from_table,
)

#: ``load:`` keys whose change means every document must be parsed again.
RELOAD_KEYS = ("strategy", "max_file_mb", "html_drop")
#: ``index:`` keys whose change means the FAISS index must be rebuilt (vectors are kept):
#: :func:`indexers.faiss_index.build_settings` (old ``kind``/``hnsw_*`` params read as factory strings).
INDEX_KEYS = ("factory_param", "metric", "train_size", "ef_construction")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """A discovered file and its content hash.

    Attributes:
        source: the file (path and URI).
        doc_id: id of the document it becomes (from the URI).
        sha256: sha256 (hex) of its bytes, ``""`` when it cannot be read (broken symlink, ...).
    """

    source: SourceFile
    doc_id: str
    sha256: str

    @property
    def uri(self) -> str:
        """The file's source URI."""
        return self.source.uri


@dataclass(frozen=True)
class InputDiff:
    """How the current files differ from the parent version's inputs (URIs, sorted).

    Attributes:
        added: files the parent does not have.
        changed: files whose sha256 differs from the parent's.
        removed: parent documents whose file is gone (or no longer matches include/exclude).
        unchanged: files with the parent's sha256.
        still_quarantined: files the parent quarantined whose bytes have not changed since
            (not retried; when the parent kept an earlier version of one, it stays).
        skipped: files the parent has no document for that load refuses without parsing
            (unsupported type, empty, over ``load.max_file_mb``, unreadable): not documents,
            so they never make a refresh publish; when one runs they are quarantined again.
    """

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    still_quarantined: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when no document was added, changed or removed (skipped files do not count)."""
        return not (self.added or self.changed or self.removed)

    def counts(self) -> dict[str, int]:
        """``{"added", "changed", "removed", "unchanged", "still_quarantined", "skipped"}`` counts."""
        return {k: len(getattr(self, k))
                for k in ("added", "changed", "removed", "unchanged", "still_quarantined", "skipped")}


@dataclass(frozen=True)
class RefreshPlan:
    """What a refresh will do, decided before anything is loaded.

    Attributes:
        index: index name.
        parent_version: the version refreshed (``latest``), ``None`` for a first build.
        files: every current file, sorted by URI.
        diff: the input diff against the parent.
        reload_all: ``load.strategy``/``load.max_file_mb`` changed: parse every file again.
        rechunk_all: the chunker record (strategy, fingerprint, options, context) changed.
        reembed_all: the embedder identity (model, revision, normalization) changed.
        reindex: the FAISS settings changed (vectors are reused).
        reasons: human-readable reasons for the four flags above.
        sources: the sources scanned (normalized).
    """

    index: str
    parent_version: str | None
    files: tuple[ScannedFile, ...]
    diff: InputDiff
    reload_all: bool = False
    rechunk_all: bool = False
    reembed_all: bool = False
    reindex: bool = False
    reasons: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    @property
    def nothing_to_do(self) -> bool:
        """True when a parent exists and neither the files nor the content settings changed."""
        return (self.parent_version is not None and self.diff.empty and not
                (self.reload_all or self.rechunk_all or self.reembed_all or self.reindex))

    def to_load(self) -> list[SourceFile]:
        """Files to parse now: added and changed ones (every file with ``reload_all``)."""
        if self.reload_all or self.parent_version is None:
            return [f.source for f in self.files]
        todo = set(self.diff.added) | set(self.diff.changed) | set(self.diff.skipped)
        return [f.source for f in self.files if f.uri in todo]


class ParentData:
    """The version being refreshed; its tables and vectors are read only when asked for.

    An incremental refresh needs only the manifest and where each live document is
    (:meth:`doc_locations`); a refresh that redoes everything (settings changed, or
    compaction due) reads the live rows of every segment.

    Attributes:
        version: its version id.
        manifest: its manifest.
        quarantine: its quarantine records.
        segments: its segments (:class:`indexers.segments.SegmentRef`), in order.
    """

    def __init__(self, registry: IndexRegistry, name: str, version: str, manifest: Manifest,
                 quarantine: list[QuarantineRecord]) -> None:
        self.registry, self.name, self.version, self.manifest = registry, name, version, manifest
        self.quarantine = quarantine
        self.segments = registry.segments(name, version)

    @functools.cached_property
    def documents(self) -> pa.Table:
        """``DOCUMENTS_SCHEMA`` table of the live documents."""
        return self.registry.live_table(self.name, self.version, "documents").cast(DOCUMENTS_SCHEMA)

    @functools.cached_property
    def _published(self):  # noqa: ANN202 - a PublishedIndex
        from ragline.indexers.retriever import PublishedIndex

        # read_parent checked every file's sha256 already: sizes only here, not a second full read
        checked = IndexRegistry(self.registry.root, self.registry.lock_timeout_s, verify="size")
        return PublishedIndex.open(checked, f"{self.name}@{self.version}")

    @functools.cached_property
    def chunks(self) -> pa.Table:
        """``CHUNKS_SCHEMA`` table of the live chunks (row i = vector i; ``row`` is the
        segment-local FAISS id). Read from the segments' tables: no FAISS index or BM25
        statistics are opened for it."""
        return self.registry.live_table(self.name, self.version, "chunks").cast(CHUNKS_SCHEMA)

    @functools.cached_property
    def vectors(self) -> np.ndarray:
        """float32 (n_chunks, dim) vectors of the live chunks (exact: kept or flat-stored)."""
        return np.ascontiguousarray(self._published.vectors(), dtype=np.float32)

    def release(self) -> None:
        """Drop the tables, vectors and opened index read so far (read again if asked for): once
        the new version's rows are assembled, a refresh does not hold the parent's data while it
        curates, embeds and publishes."""
        for name in ("documents", "chunks", "_published", "vectors"):
            self.__dict__.pop(name, None)

    def document_shas(self) -> dict[str, str]:
        """doc id -> content sha256 of every live document (two columns read, not the texts)."""
        t = self.registry.live_table(self.name, self.version, "documents", columns=["doc_id", "sha256"])
        return dict(zip(t.column("doc_id").to_pylist(), t.column("sha256").to_pylist()))

    @functools.cached_property
    def doc_locations(self) -> dict[str, tuple[str, str]]:
        """uri -> ``(segment id, doc id)`` of every live document."""
        out: dict[str, tuple[str, str]] = {}
        for ref in self.segments:
            t = read_live_table(self.registry.segment_dir(self.name, ref.id), DOCUMENTS_FILE, DOCUMENTS_SCHEMA,
                                dead_doc_ids(self.manifest.tombstones, ref.id), columns=["uri", "doc_id"])
            for u, d in zip(t.column("uri").to_pylist(), t.column("doc_id").to_pylist()):
                out[u] = (ref.id, d)
        return out


@dataclass
class Assembly:
    """The new version's tables before embedding.

    Attributes:
        documents: ``DOCUMENTS_SCHEMA`` table, sorted by URI.
        chunks: ``CHUNKS_SCHEMA`` table in document order, ``row`` renumbered 0..n-1.
        carried_vectors: float32 (n_chunks, parent dim) holding the parent's vectors on the rows
            where ``need_embed`` is False (other rows are zero), or ``None`` without a parent;
            :func:`fill_vectors` fills its other rows in place (one (n, dim) array, not two).
        need_embed: bool (n_chunks,): rows whose vectors the embed stage must produce.
        shared: for an incremental refresh, the parent's segments the new version lists
            (``documents`` and ``chunks`` then hold only the new segment's rows); ``None``
            when the new version is one segment holding everything.
        compaction: why a refresh merged the parent's segments (``index.compact_*``), else ``None``.
        quarantine: quarantine records of the new version.
        kept_previous: URIs whose new content failed and whose parent version was kept.
        carried_docs: documents taken from the parent without parsing.
        deferred: a curated refresh's whole version, assembled without the parent's vectors
            (``carried_vectors`` is ``None``): once curation has decided the clusters,
            :func:`split_curated` makes it a new segment beside the parent's (or, when
            compaction is due, copies the parent's vectors).
        kept: a deferred assembly once curated: bool (n_chunks,), the rows curation indexes
            (:func:`split_curated` takes them); ``None``: every row.
    """

    documents: pa.Table
    chunks: pa.Table
    carried_vectors: np.ndarray | None
    need_embed: np.ndarray
    quarantine: list[QuarantineRecord]
    kept_previous: list[str]
    carried_docs: int
    shared: SharedSegments | None = None
    compaction: str | None = None
    deferred: bool = False
    kept: np.ndarray | None = None

    @property
    def carried_chunks(self) -> int:
        """Chunks whose rows and vectors come from the parent unchanged (copied, or shared in
        the parent's segments)."""
        return int((~self.need_embed).sum()) + (self.shared.live_chunks if self.shared else 0)

    @property
    def version_documents(self) -> int:
        """Documents in the new version (shared segments included)."""
        return self.documents.num_rows + (len(self.shared.inputs) if self.shared else 0)

    @property
    def version_chunks(self) -> int:
        """Chunks in the new version (shared segments included)."""
        return self.chunks.num_rows + (self.shared.live_chunks if self.shared else 0)


@dataclass
class RefreshSummary:
    """What a refresh did (printed by the CLI; ``--json`` prints :meth:`to_dict`).

    Attributes:
        index: index name.
        version: the published version, ``None`` when nothing was published.
        parent_version: the version refreshed.
        added, changed, removed: URIs of the input diff.
        unchanged: number of unchanged documents.
        still_quarantined: unchanged files the parent already quarantined (not retried).
        skipped: files load refuses without parsing (see :attr:`InputDiff.skipped`).
        sources: the sources scanned (as recorded in the manifest).
        documents, chunks: counts in the new version.
        carried_chunks: chunks (and vectors) copied from the parent.
        embedded_chunks: chunks whose vectors the embed stage produced (added/changed documents,
            plus everything re-chunked or re-embedded after a settings change).
        computed: texts the model embedded now (embedding-cache misses among ``embedded_chunks``).
        quarantine: quarantine records of this run.
        kept_previous: URIs whose new content failed and whose previous version stays.
        reasons: why unchanged documents were redone (settings changes).
        promotions: promotion results for ``refresh.promote_aliases``.
        drift: the new version's drift from its parent (``drift:`` params): the measures,
            ``alerts`` (thresholds exceeded) and ``error`` when it could not be computed;
            ``None`` without a parent or with ``drift.on_refresh: false``.
        stage_seconds: wall time per stage.
        total_seconds: wall time of the run.
        failed: set when the run failed and published nothing.
        nothing_changed: nothing to do; nothing published.
        telemetry: the run's figures (:func:`pipelines.telemetry.run_figures`, with the metrics
            file written and the push result), set when the run ends.
        embed_backend: the ``embed.backend`` that embeds this refresh's chunks (``auto`` resolved:
            the parent's, :func:`indexers.backends.resolve_backend`).
    """

    index: str
    version: str | None
    parent_version: str | None
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    still_quarantined: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    documents: int = 0
    chunks: int = 0
    carried_chunks: int = 0
    embedded_chunks: int = 0
    computed: int = 0
    quarantine: list[QuarantineRecord] = field(default_factory=list)
    kept_previous: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    promotions: list[dict[str, Any]] = field(default_factory=list)
    drift: dict[str, Any] | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0
    failed: str | None = None
    nothing_changed: bool = False
    telemetry: dict[str, Any] | None = None
    embed_backend: str = ""

    @classmethod
    def from_plan(cls, plan: RefreshPlan, embed_backend: str = "") -> "RefreshSummary":
        """A summary holding the plan's diff (and nothing done yet)."""
        d = plan.diff
        return cls(index=plan.index, version=None, parent_version=plan.parent_version,
                   added=list(d.added), changed=list(d.changed), removed=list(d.removed),
                   unchanged=len(d.unchanged), still_quarantined=list(d.still_quarantined),
                   skipped=list(d.skipped), sources=list(plan.sources),
                   reasons=list(plan.reasons), nothing_changed=plan.nothing_to_do, embed_backend=embed_backend)

    def counts(self) -> dict[str, int]:
        """Diff counts: added, changed, removed, unchanged, skipped."""
        return {"added": len(self.added), "changed": len(self.changed), "removed": len(self.removed),
                "unchanged": self.unchanged, "skipped": len(self.skipped)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (adds ``counts`` and ``quarantined``)."""
        d = asdict(self)
        d["counts"] = self.counts()
        d["quarantined"] = len(self.quarantine)
        return d


# ---------------------------------------------------------------- planning
def refresh_params(
    params: dict[str, Any] | None = None,
    params_file: str | Path | None = None,
    index: str | None = None,
    sources: Sequence[str] | None = None,
) -> Params:
    """Params for a refresh: ``params`` (a dict) or the file, with ``index.name`` and
    ``load.sources`` overridden when given (so the manifest records what was really read).

    Raises:
        ConfigError: invalid params.
    """
    p = Params.from_dict(params) if params is not None else load_params(params_file or "params.yaml")
    if index is None and not sources:
        return p
    data = p.to_dict()
    if index is not None:  # "" is an error (index.name is validated), not the default index
        data["index"]["name"] = index
    if sources:
        data["load"]["sources"] = [str(s) for s in sources]
    return Params.from_dict(data, source=f"{params_file or 'params'} (+ command-line overrides)")


class SourcesChanged(ConfigError):
    """A refresh was given other sources than the ones the index was built from."""


def normalize_sources(sources: Sequence[str | Path]) -> list[str]:
    """Sources as given, normalized and without duplicates (first occurrence kept).

    A local path is normalized as :class:`pathlib.Path` reads it, the form document URIs are
    built from (``docs/`` and ``./docs`` both become ``docs``; relative paths stay relative,
    ``..`` is kept); a URL (``scheme://...``) loses trailing slashes only.
    """
    out: list[str] = []
    for s in sources:
        s = str(s)
        n = s.rstrip("/") if "://" in s else Path(s).as_posix()
        if n not in out:
            out.append(n)
    return out


def recorded_sources(registry: IndexRegistry, name: str) -> tuple[str | None, list[str]]:
    """``(parent version, sources its manifest records)``; ``(None, [])`` for an index with no version."""
    parent = parent_version(registry, name)
    if parent is None:
        return None, []
    return parent, normalize_sources(registry.manifest(name, parent).sources)


def resolve_sources(
    params: Params, registry: IndexRegistry, sources: Sequence[str | Path] | None = None,
    replace_sources: bool = False,
) -> Params:
    """Params whose ``load.sources`` are the sources a refresh of ``params.index.name`` scans.

    Without ``sources``, these are the sources the ``latest`` version was built from (its
    manifest's ``sources``), so ``ragline ingest docs --index mydocs`` then
    ``ragline refresh --index mydocs`` refreshes ``docs``, not ``load.sources``. For an index
    with no version yet, ``sources`` or else ``load.sources``.

    Raises:
        SourcesChanged: ``sources`` differ (as a set, normalized) from the recorded ones and
            ``replace_sources`` is False; the message names both sets.
        RegistryError, CorruptRegistryError: see :func:`parent_version`.
    """
    name = params.index.name
    given = normalize_sources(sources or [])
    parent, recorded = recorded_sources(registry, name)
    if not recorded:
        chosen = given or normalize_sources(params.load.sources)
    elif not given:
        chosen = recorded
    elif set(given) != set(recorded) and not replace_sources:
        raise SourcesChanged(
            f"index {name!r} was built from {', '.join(recorded)} ({name}@{parent}), but this refresh names "
            f"{', '.join(given)}; documents of the old sources would be removed. Run `ragline refresh --index {name}` "
            "to refresh the recorded sources, or add --replace-sources to replace them"
        )
    else:
        chosen = given
    data = params.to_dict()
    data["load"]["sources"] = chosen
    return Params.from_dict(data, source=f"params (+ sources {', '.join(chosen)})")


def skip_reason(f: ScannedFile, max_file_mb: float) -> str | None:
    """Why load refuses ``f`` without parsing it, or ``None`` when it would be parsed.

    The checks are the cheap ones :func:`pipelines.load.load_document` makes before reading
    the bytes: unsupported type, unreadable (broken symlink), empty, larger than ``max_file_mb``.
    """
    path = f.source.path
    if path.suffix.lower() not in SUPPORTED_TYPES:
        return "unsupported type"
    if f.source.source:  # a remote entry: what the listing says (-1: not listed, e.g. a web page)
        size = f.source.size
        if size < 0:
            return None
    else:
        try:
            size = path.stat().st_size
        except OSError:
            return "unreadable"
    if size == 0:
        return "empty"
    if size > max_file_mb * 1024 * 1024:
        return "too large"
    return None


def hash_state_path(params: Params) -> Path:
    """The :class:`core.hashing.FileHashes` state of ``params.index``:
    ``paths.cache/file-hashes/<sha256 of the index root's real path and the index name>.parquet``."""
    key = sha256_text(f"{os.path.realpath(params.index.root)}\0{params.index.name}")[:32]
    return Path(params.paths.cache) / "file-hashes" / f"{key}.parquet"


def scan_sources(sources: Sequence[str | Path], params: Params, parent_inputs: Sequence[dict[str, Any]] = (),
                 parent_quarantine: dict[str, str] | None = None) -> list[ScannedFile]:
    """Discover the files under ``sources`` (``load.include``/``exclude``/``follow_symlinks``,
    the same :func:`~pipelines.sources.discover` as ingest) and hash them.

    Files discovery refused (special files such as FIFOs or devices, links out of the source
    roots or in loops) are not opened, so a FIFO or a link to ``/dev/zero`` cannot block
    the scan; they get ``sha256=""`` and loading quarantines them with their reason. Entries
    of remote sources are not downloaded: :func:`pipelines.sources.scan_remote` decides from
    the listing (ETag, size, version id) or a conditional HTTP request against
    ``parent_inputs`` / ``parent_quarantine`` whether they are unchanged.

    Local files are hashed through :class:`core.hashing.FileHashes` when ``refresh.hash_cache``
    is on (the default): a file whose inode, size, mtime and ctime are those recorded when it
    was last hashed keeps that sha256 without being read (the state lives under ``paths.cache``,
    one file per index: :func:`hash_state_path`; an empty ``paths.cache`` keeps no state).

    Returns:
        One :class:`ScannedFile` per file, sorted by URI; unreadable files, and remote entries
        that are new or changed, get ``sha256=""``.

    Raises:
        FileNotFoundError: a source does not exist.
        SourceUnavailable: a remote source cannot be listed.
    """
    from ragline.pipelines.sources import discover, scan_remote

    out = []
    remote = []
    hashes = FileHashes(hash_state_path(params) if params.refresh.hash_cache and params.paths.cache else None)
    for f in discover(sources, params.load):
        if f.source:
            remote.append(f)
            continue
        try:
            sha = "" if f.skip_type else hashes.sha256(f.uri, f.uri)  # a local file's uri is its path as a str
        except OSError:
            sha = ""
        out.append(ScannedFile(f, doc_id_for(f.uri), sha))
    try:
        hashes.save()
    except OSError as e:  # the state only saves reading files: a read-only cache must not stop a refresh
        log.warning("file hash state not saved (%s); the next refresh reads every file again", e)
    if remote:
        out += [ScannedFile(f, doc_id_for(f.uri), sha)
                for f, sha in scan_remote(remote, params.load, parent_inputs, parent_quarantine or {})]
        out.sort(key=lambda s: s.uri)
    return out


def diff_inputs(
    files: Sequence[ScannedFile],
    parent_inputs: Sequence[dict[str, str]],
    parent_quarantine: dict[str, str] | None = None,
    skip: Callable[[ScannedFile], object] | None = None,
) -> InputDiff:
    """Sort files into added / changed / removed / unchanged / still-quarantined / skipped.

    Args:
        files: current files (from :func:`scan_sources`).
        parent_inputs: the parent manifest's ``inputs`` (``uri``, ``doc_id``, ``sha256``).
        parent_quarantine: URI -> sha256 of the files the parent quarantined.
        skip: truthy for a file load refuses without parsing (:func:`skip_reason`); such a
            file that the parent has no document for is ``skipped``, not ``added``.

    Returns:
        The diff; every list sorted by URI.
    """
    parent = {r["uri"]: r["sha256"] for r in parent_inputs}
    bad = parent_quarantine or {}
    added, changed, unchanged, still_bad, skipped = [], [], [], [], []
    for f in files:
        if f.uri in parent and parent[f.uri] == f.sha256 and f.sha256:
            unchanged.append(f.uri)
        elif f.uri in bad and bad[f.uri] == f.sha256 and (f.sha256 or not f.source.source):
            still_bad.append(f.uri)
        elif f.uri in parent:
            changed.append(f.uri)
        elif skip is not None and skip(f):
            skipped.append(f.uri)
        else:
            added.append(f.uri)
    current = {f.uri for f in files}
    removed = [u for u in parent if u not in current]
    return InputDiff(*(tuple(sorted(x)) for x in (added, changed, removed, unchanged, still_bad, skipped)))


def embedder_identity(params: Params) -> tuple[str, str, bool, str]:
    """``(model_id, revision, normalize, quantization)`` of ``embed:`` (fp32 backends load no
    weights; a bf16/int8 backend reads, or first builds, its model's sidecar)."""
    e = index_embedder(params)
    return e.model_id, e.revision, e.normalize, str(getattr(e, "quantization", "") or "")


def parent_version(registry: IndexRegistry, name: str) -> str | None:
    """The version a refresh of ``name`` starts from: the target of its ``latest`` alias.

    Returns:
        ``None`` when the index has no version yet (the refresh is a first build).

    Raises:
        RegistryError: versions exist but no ``latest`` alias (says how to set one).
        CorruptRegistryError: the alias file is damaged or names a missing version.
    """
    if registry.alias_record(name, DEFAULT_ALIAS) is not None:
        return registry.resolve(IndexRef(name, DEFAULT_ALIAS))[1]
    versions = registry.versions(name)
    if versions:
        raise RegistryError(
            f"index {name!r} has versions ({', '.join(versions)}) but no alias {DEFAULT_ALIAS!r} to refresh "
            f"from; set it with `ragline index promote {versions[-1]} --index {name} --alias {DEFAULT_ALIAS}`"
        )
    return None


def _parent_quarantine(registry: IndexRegistry, name: str, version: str) -> dict[str, str]:
    path = registry.version_dir(name, version) / "quarantine.parquet"
    if not path.exists():
        return {}
    t = read_table(path, QUARANTINE_SCHEMA)
    return dict(zip(t.column("path").to_pylist(), t.column("sha256").to_pylist()))


def plan_refresh(params: Params, registry: IndexRegistry, sources: Sequence[str | Path] | None = None) -> RefreshPlan:
    """Decide what a refresh of ``params.index.name`` must redo (reads no document content).

    Args:
        params: validated params (``load.sources`` are scanned unless ``sources`` is given).
        registry: the registry holding the index.
        sources: folders or files overriding ``load.sources``.

    Returns:
        The plan; :attr:`RefreshPlan.nothing_to_do` says whether to publish at all.

    Raises:
        FileNotFoundError: a source does not exist.
        RegistryError, CorruptRegistryError: see :func:`parent_version`; a damaged parent manifest.
    """
    name = params.index.name
    scanned = normalize_sources(list(sources or params.load.sources))
    parent = parent_version(registry, name)

    def skip(f: ScannedFile) -> str | None:
        return skip_reason(f, params.load.max_file_mb)

    if parent is None:
        files = tuple(scan_sources(scanned, params))
        return RefreshPlan(name, None, files, diff_inputs(files, [], {}, skip), sources=tuple(scanned))
    m = registry.manifest(name, parent)
    bad = _parent_quarantine(registry, name, parent)
    files = tuple(scan_sources(scanned, params, m.inputs, bad))
    diff = diff_inputs(files, m.inputs, bad, skip)
    reasons: list[str] = []
    old_load = m.params.get("load", {})
    load_changed = [k for k in RELOAD_KEYS if old_load.get(k) != getattr(params.load, k)]
    if load_changed:
        reasons.append(f"load.{'/'.join(load_changed)} changed: every file is parsed again")
    rec = chunker_record(params.chunk, params.embed.model)
    rechunk = rec != m.chunker
    if rechunk:
        reasons.append(f"chunker changed ({m.chunker.get('strategy')}:{m.chunker.get('fingerprint')} -> "
                       f"{rec['strategy']}:{rec['fingerprint']}): every document is re-chunked")
    model_id, revision, normalize, quantization = embedder_identity(params)
    old_e = m.embedding
    reembed = (old_e.get("model_id"), old_e.get("revision"), old_e.get("normalize"), old_e.get("quantization") or "") \
        != (model_id, revision, normalize, quantization)
    if reembed:
        reasons.append(f"embedder changed ({old_e.get('model_id')} {old_e.get('revision')} "
                       f"{old_e.get('quantization') or 'fp32'} -> {model_id} {revision} {quantization or 'fp32'}): "
                       "every chunk is embedded again (through the embedding cache)")
    from ragline.pipelines.curate import plan_changes  # [curate hook] curate: params changed

    cur_reload, cur_rechunk, cur_reason = plan_changes(m.params.get("curate"), params.curate)
    if cur_reason:
        reasons.append(cur_reason)
        load_changed = load_changed or (["curate"] if cur_reload else [])
        rechunk = rechunk or cur_rechunk
    old_index, new_index = build_settings(m.params.get("index", {})), params.index.faiss_spec().settings()
    index_changed = [k.removesuffix("_param") for k in INDEX_KEYS if old_index.get(k) != new_index.get(k)]
    if index_changed:
        reasons.append(f"index.{'/'.join(index_changed)} changed: the FAISS index is rebuilt")
    return RefreshPlan(name, parent, files, diff, reload_all=bool(load_changed), rechunk_all=rechunk,
                       reembed_all=reembed, reindex=bool(index_changed), reasons=tuple(reasons),
                       sources=tuple(scanned))


# ---------------------------------------------------------------- carrying over
def read_parent(registry: IndexRegistry, name: str, version: str) -> ParentData:
    """Open the version a refresh starts from: check every file, read its quarantine records.

    Raises:
        CorruptRegistryError: a file of the version or of a segment differs from the manifest
            (``index.verify``), or the manifest is damaged.
        OSError, SchemaMismatchError: a damaged data file.
    """
    m = registry.check_files(name, version)  # never carry damaged vectors or chunks into a new version
    q = registry.version_dir(name, version) / "quarantine.parquet"
    quarantine = quarantine_from_table(read_table(q, QUARANTINE_SCHEMA)) if q.exists() else []
    return ParentData(registry, name, version, m, quarantine)


def compaction_due(segments: int, tombstone_ratio: float, max_segments: int, max_tombstone_ratio: float) -> str | None:
    """Why a version of ``segments`` segments with ``tombstone_ratio`` dead rows should be
    compacted under ``index.compact_max_segments`` / ``index.compact_max_tombstone_ratio``, or ``None``."""
    if segments > max_segments:
        return f"{segments} segments > index.compact_max_segments {max_segments}"
    if tombstone_ratio > max_tombstone_ratio:
        return f"{tombstone_ratio:.1%} of rows tombstoned > index.compact_max_tombstone_ratio {max_tombstone_ratio:g}"
    return None


@dataclass(frozen=True)
class Prechunked:
    """The documents parsed now, already chunked (and embedded) elsewhere: on a Dask cluster
    (:func:`pipelines.distributed.build_partition`), so the driver neither chunks nor embeds them.

    Attributes:
        chunks: ``CHUNKS_SCHEMA`` table of the new documents' chunks.
        quarantine: the chunk-stage quarantine records of the new documents.
        vectors: float32 (n_chunks, dim), row i the vector of ``chunks`` row i.
    """

    chunks: pa.Table
    quarantine: list[QuarantineRecord]
    vectors: np.ndarray

    def known(self) -> tuple[list[str], np.ndarray]:
        """``(chunk ids, vectors)`` for :func:`fill_vectors`."""
        return self.chunks.column("chunk_id").to_pylist(), self.vectors


def with_scanned_sha(quarantine: Sequence[QuarantineRecord], files: Sequence[ScannedFile]) -> list[QuarantineRecord]:
    """``quarantine`` (records of files that failed to load) with the sha256 the scan saw filled
    in where a record has none, so that the next refresh recognises an unchanged bad file
    (``still_quarantined``) instead of trying it again."""
    scanned = {f.uri: f for f in files}
    return [q if q.sha256 or q.path not in scanned else replace(q, sha256=scanned[q.path].sha256) for q in quarantine]


def _chunk_new(plan: RefreshPlan, new_docs: Sequence[Document], load_quarantine: Sequence[QuarantineRecord],
               params: Params, embed_fn: Callable[[Sequence[str]], np.ndarray] | None,
               progress: Callable[[int], None] | None, prechunked: Prechunked | None = None,
               ) -> tuple[list[QuarantineRecord], pa.Table, set[str], dict]:
    """Chunk the documents parsed now: ``(quarantine, chunks, URIs that failed now, {uri: document}
    of the chunked ones)``. Records of files that failed now carry the sha256 the scan saw, so an
    unchanged bad file is recognised as such by the next refresh and not retried. With
    ``prechunked``, its chunks and chunk quarantine are taken as they are."""
    quarantine = with_scanned_sha(load_quarantine, plan.files)
    if prechunked is not None:
        new_chunks, chunk_bad = prechunked.chunks, list(prechunked.quarantine)
    else:
        new_chunks, chunk_bad = chunk_documents(list(new_docs), params.chunk, embed_fn=embed_fn, progress=progress,
                                                embed_model=params.embed.model)
    quarantine += chunk_bad
    chunk_failed = {q.path for q in chunk_bad}
    new_by_uri = {d.uri: d for d in new_docs if d.uri not in chunk_failed}
    return quarantine, new_chunks, {q.path for q in quarantine}, new_by_uri


def assemble_increment(
    plan: RefreshPlan,
    parent: ParentData,
    new_docs: Sequence[Document],
    load_quarantine: Sequence[QuarantineRecord],
    params: Params,
    embed_fn: Callable[[Sequence[str]], np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
    prechunked: Prechunked | None = None,
) -> Assembly:
    """The new segment's rows and the tombstones of an incremental refresh (settings unchanged).

    Added and changed documents that parse and chunk go into the new segment; the parent's
    copies of changed documents, and removed documents, are tombstoned; every other document
    stays where it is, in a segment shared with the parent. A changed file that fails now
    keeps its parent version (not tombstoned). Segments left without live documents are
    dropped from the list.

    Returns:
        An assembly whose ``documents``/``chunks`` are the new segment's rows (all to embed)
        and whose ``shared`` lists the parent's segments and tombstones the version keeps.
    """
    quarantine, new_chunks, failed_now, new_by_uri = _chunk_new(plan, new_docs, load_quarantine, params, embed_fn,
                                                                 progress, prechunked)
    where = parent.doc_locations
    still_bad = set(plan.diff.still_quarantined)
    loaded_now = {s.uri for s in plan.to_load()}
    quarantine += [rec for rec in parent.quarantine if rec.path in still_bad and rec.path not in loaded_now]
    kept_previous = [f.uri for f in plan.files
                     if f.uri not in new_by_uri and f.uri in where and (f.uri in failed_now or f.uri in still_bad)]
    if kept_previous:
        kp = set(kept_previous)
        quarantine = [_kept_note(q, parent.version) if q.path in kp and "previous version" not in q.message else q
                      for q in quarantine]
    scanned_uris = {f.uri for f in plan.files}
    shared = _shared_without(parent, {u for u in where if u not in scanned_uris or u in new_by_uri})

    new_doc_table = documents_to_table([new_by_uri[f.uri] for f in plan.files if f.uri in new_by_uri])
    rows_of = _rows_by_uri(new_chunks)
    order = [r for f in plan.files if f.uri in new_by_uri for r in rows_of.get(f.uri, [])]
    chunks = new_chunks.cast(CHUNKS_SCHEMA).take(pa.array(order, type=pa.int64())) if order else CHUNKS_SCHEMA.empty_table()
    chunks = chunks.set_column(0, "row", pa.array(np.arange(chunks.num_rows, dtype=np.int64)))
    dim = int(parent.manifest.embedding.get("dim") or 0)
    return Assembly(new_doc_table.cast(DOCUMENTS_SCHEMA), chunks, np.zeros((chunks.num_rows, dim), dtype=np.float32),
                    np.ones(chunks.num_rows, dtype=bool), quarantine, kept_previous,
                    carried_docs=len(shared.inputs), shared=shared)


def _shared_without(parent: ParentData, dead_uris: set[str]) -> SharedSegments:
    """The parent's segments with the documents at ``dead_uris`` (replaced or removed now)
    tombstoned besides the parent's own tombstones; segments left without a live document
    are dropped from the list."""
    where = parent.doc_locations
    tombstones = {k: {"doc_ids": list(v.get("doc_ids") or []), "chunks": int(v.get("chunks") or 0)}
                  for k, v in parent.manifest.tombstones.items()}
    by_segment: dict[str, list[str]] = {}
    for u in sorted(dead_uris):
        seg, doc = where[u]
        by_segment.setdefault(seg, []).append(doc)
    for seg, docs in by_segment.items():
        folder = parent.registry.segment_dir(parent.name, seg)
        doc_col = pq.read_table(str(folder / CHUNKS_FILE), columns=["doc_id"]).column("doc_id")
        rows = int(pc.sum(pc.is_in(doc_col, value_set=pa.array(docs, pa.string())).cast(pa.int64())).as_py() or 0)
        t = tombstones.setdefault(seg, {"doc_ids": [], "chunks": 0})
        t["doc_ids"] = sorted(set(t["doc_ids"]) | set(docs))
        t["chunks"] += rows
    segments = [r for r in parent.segments if r.documents > len((tombstones.get(r.id) or {}).get("doc_ids", []))]
    kept_ids = {r.id for r in segments}
    tombstones = {k: v for k, v in tombstones.items() if k in kept_ids}
    inputs = [r for r in parent.manifest.inputs if r["uri"] not in dead_uris]
    return SharedSegments(segments, tombstones, inputs)


#: parent vector rows copied at a time into a merged segment (:func:`_parent_vectors`)
VECTOR_COPY_ROWS = 65_536

class RowSource(IntEnum):
    """Which table a row of the new version comes from (the index into :func:`_take_sources`' tables)."""

    PARENT = 0      #: carried from the parent version
    NEW = 1         #: parsed and chunked in this run
    RECHUNKED = 2   #: an unchanged document re-chunked from its stored text (``plan.rechunk_all``)


def _rows_by_uri(table: pa.Table) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, u in enumerate(table.column("uri").to_pylist()):
        out.setdefault(u, []).append(i)
    return out


def _kept_note(rec: QuarantineRecord, parent: str) -> QuarantineRecord:
    return replace(rec, message=f"{rec.message} (previous version from {parent} kept in the index)")


def assemble(
    plan: RefreshPlan,
    parent: ParentData | None,
    new_docs: Sequence[Document],
    load_quarantine: Sequence[QuarantineRecord],
    params: Params,
    embed_fn: Callable[[Sequence[str]], np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
    prechunked: Prechunked | None = None,
    curation_state: Any = None,
) -> Assembly:
    """Build the new version's documents and chunks from new documents and the parent.

    New documents are chunked here; unchanged documents are carried from ``parent`` (rows,
    chunks and vectors), or re-chunked from their stored text when ``plan.rechunk_all``.
    A file that failed now keeps its parent version when there is one. Documents are ordered
    by URI and chunks by document then position, exactly as a full ingest orders them.

    Args:
        plan: the refresh plan.
        parent: the parent's data (``None`` for a first build).
        new_docs: documents parsed now (``plan.to_load()``).
        load_quarantine: files that failed to parse now.
        params: validated params (``chunk:`` is used).
        embed_fn: embedder callable for the semantic chunking strategy.
        progress: called with 1 per chunked document.
        prechunked: ``new_docs`` already chunked on a cluster (their chunks are used as they are).
        curation_state: the parent's curation files (:class:`pipelines.curate.ParentCuration`)
            of a curated refresh.

    Returns:
        The assembly; ``need_embed`` marks the rows the embed stage must fill. When nothing but
        documents changed, this is :func:`assemble_increment` (a new segment, the rest shared)
        unless the result would call for compaction (``index.compact_*``): then every live
        row goes into one new segment, the parent's vectors reused. A curated refresh does the
        same when only its change needs clustering (:func:`pipelines.curate.increment_blocker`;
        :func:`pipelines.curate.curate_increment` then curates the new segment); otherwise it
        assembles the whole version (``deferred``) for :func:`split_curated`.
    """
    compaction = None
    if parent is not None and not (plan.reload_all or plan.rechunk_all or plan.reembed_all or plan.reindex):
        if params.curate.enabled:  # [curate hook] only the change is clustered, unless a copy's canonical went
            from ragline.pipelines.curate import increment_blocker

            scanned = {f.uri for f in plan.files}
            dead = {u for u in parent.doc_locations if u not in scanned} | {s.uri for s in plan.to_load()}
            if curation_state is not None and increment_blocker(curation_state, parent, dead, params.curate) is None:
                inc = assemble_increment(plan, parent, new_docs, load_quarantine, params, embed_fn, progress, prechunked)
                if _compaction_of(inc, params) is None:
                    return inc
            # clusters span the whole version: split_curated after curation
            return _assemble_full(plan, parent, new_docs, load_quarantine, params, embed_fn, progress, None,
                                  prechunked, deferred=True)
        inc = assemble_increment(plan, parent, new_docs, load_quarantine, params, embed_fn, progress, prechunked)
        compaction = _compaction_of(inc, params)
        if compaction is None:
            return inc
    return _assemble_full(plan, parent, new_docs, load_quarantine, params, embed_fn, progress, compaction, prechunked)


def _compaction_of(inc: Assembly, params: Params) -> str | None:
    """Why an incremental assembly must be compacted instead (:func:`compaction_due`), else ``None``."""
    sh = inc.shared
    n_seg = len(sh.segments) + (1 if inc.documents.num_rows else 0)
    total = sum(r.chunks for r in sh.segments) + inc.chunks.num_rows
    dead = sum(int(t.get("chunks") or 0) for t in sh.tombstones.values())
    return compaction_due(n_seg, dead / total if total else 0.0, params.index.compact_max_segments,
                          params.index.compact_max_tombstone_ratio)


def _assemble_full(plan: RefreshPlan, parent: ParentData | None, new_docs: Sequence[Document],
                   load_quarantine: Sequence[QuarantineRecord], params: Params,
                   embed_fn: Callable[[Sequence[str]], np.ndarray] | None, progress: Callable[[int], None] | None,
                   compaction: str | None, prechunked: Prechunked | None = None, deferred: bool = False) -> Assembly:
    """Every live row of the new version in one segment (see :func:`assemble`); with ``deferred``
    (a curated refresh), without copying the parent's vectors (:func:`split_curated`)."""
    quarantine, new_chunks, failed_now, new_by_uri = _chunk_new(plan, new_docs, load_quarantine, params, embed_fn,
                                                                 progress, prechunked)

    parent_docs = _rows_by_uri(parent.documents) if parent else {}
    kept_previous: list[str] = []
    carried: list[str] = []
    still_bad = set(plan.diff.still_quarantined)
    loaded_now = {s.uri for s in plan.to_load()}
    if parent:
        quarantine += [rec for rec in parent.quarantine if rec.path in still_bad and rec.path not in loaded_now]
    for f in plan.files:
        u = f.uri
        if u in new_by_uri:
            continue
        if u in parent_docs and (u in failed_now or u in still_bad):
            kept_previous.append(u)
            carried.append(u)
        elif u in parent_docs and u not in failed_now:
            carried.append(u)
    if parent and kept_previous:
        kp = set(kept_previous)
        quarantine = [_kept_note(q, parent.version) if q.path in kp and "previous version" not in q.message else q
                      for q in quarantine]

    carried_set = set(carried)
    # documents: parent rows for carried URIs + rows of new documents, ordered by URI
    new_doc_table = documents_to_table(list(new_by_uri.values()))
    doc_sources: list[tuple[RowSource, int]] = []
    new_doc_rows = {u: i for i, u in enumerate(new_doc_table.column("uri").to_pylist())}
    for f in plan.files:
        if f.uri in new_doc_rows:
            doc_sources.append((RowSource.NEW, new_doc_rows[f.uri]))
        elif f.uri in carried_set:
            doc_sources.append((RowSource.PARENT, parent_docs[f.uri][0]))
    documents = _take_sources({RowSource.PARENT: parent.documents if parent else None, RowSource.NEW: new_doc_table},
                              doc_sources, DOCUMENTS_SCHEMA)

    # chunks: carried or re-chunked for carried URIs, new chunks for new URIs
    rechunked = None
    if parent and plan.rechunk_all and carried:
        kept_docs = documents_from_table(parent.documents.take(pa.array([parent_docs[u][0] for u in carried])))
        rechunked, rebad = chunk_documents(kept_docs, params.chunk, embed_fn=embed_fn, progress=progress,
                                                embed_model=params.embed.model)
        quarantine += rebad
        lost = {q.path for q in rebad}
        if lost:
            carried_set -= lost
            documents = documents.filter(pc.invert(pc.is_in(documents.column("uri"), pa.array(sorted(lost)))))
    parent_chunk_rows = _rows_by_uri(parent.chunks) if parent else {}
    new_chunk_rows = _rows_by_uri(new_chunks)
    re_rows = _rows_by_uri(rechunked) if rechunked is not None else {}
    sources: list[tuple[RowSource, int]] = []
    for f in plan.files:
        u = f.uri
        if u in new_by_uri:
            sources += [(RowSource.NEW, r) for r in new_chunk_rows.get(u, [])]
        elif u in carried_set:
            if rechunked is not None:
                sources += [(RowSource.RECHUNKED, r) for r in re_rows.get(u, [])]
            else:
                sources += [(RowSource.PARENT, r) for r in parent_chunk_rows.get(u, [])]
    tables = {RowSource.PARENT: parent.chunks if parent else None, RowSource.NEW: new_chunks,
              RowSource.RECHUNKED: rechunked}
    chunks = _take_sources(tables, sources, CHUNKS_SCHEMA)
    chunks = chunks.set_column(0, "row", pa.array(np.arange(chunks.num_rows, dtype=np.int64)))
    need = np.array([s is not RowSource.PARENT or plan.reembed_all for s, _ in sources], dtype=bool)
    carried_vectors = None
    if parent is not None and not deferred:
        kind = np.fromiter((s for s, _ in sources), dtype=np.int8, count=len(sources))
        src = np.full(len(sources), -1, dtype=np.int64)
        src[kind == RowSource.PARENT] = np.fromiter((r for s, r in sources if s is RowSource.PARENT), dtype=np.int64)
        carried_vectors = _parent_vectors(parent, np.where(need, -1, src))
    elif parent is not None:  # the rows are taken: the parent's tables are not held while they are curated
        parent.release()
        release_unused_memory()
    return Assembly(documents, chunks, carried_vectors, need, quarantine, kept_previous,
                    carried_docs=len(carried_set), compaction=compaction, deferred=deferred)


def _parent_vectors(parent: ParentData, src: np.ndarray) -> np.ndarray:
    """float32 (len(src), parent dim): row i the parent's live vector ``src[i]``, zero where
    ``src[i]`` is -1. Then the parent's tables, mapped index and vectors are released: they are
    not held while the new rows are curated, embedded and published (core/memory.py)."""
    out = np.zeros((len(src), parent.vectors.shape[1]), dtype=np.float32)
    dst = np.flatnonzero(src >= 0)
    for lo in range(0, len(dst), VECTOR_COPY_ROWS):  # no (n, dim) temporary beside the two arrays
        rows = dst[lo:lo + VECTOR_COPY_ROWS]
        out[rows] = parent.vectors[src[rows]]
    parent.release()
    release_unused_memory()
    return out


def split_curated(assembly: Assembly, parent: ParentData | None, params: Params) -> Assembly:
    """A curated refresh's whole version (:attr:`Assembly.deferred`), once curation has decided
    the clusters, as a new segment beside the parent's segments.

    A document stays where it is (in a segment shared with the parent) when it has the URI,
    doc id and content sha256 it has in the parent, none of its chunk rows is new (parsed,
    re-chunked or promoted to canonical now), and it keeps as many indexed chunk rows as the
    parent indexes (curation only removes rows, so these are the same rows). Every other
    document of the version goes into the new segment with all its rows, and its parent copy,
    like a removed document's, is tombstoned. So a document's rows are always in one segment,
    and tombstones stay per document. The carried rows of a moved document (a copy promoted
    when its canonical copy went) are embedded again, through the embedding cache.

    When the result calls for compaction (``index.compact_*``), or a shared segment lacks its
    documents' signatures (written before segments held them), the version stays one segment
    and the parent's vectors are copied for its carried rows instead.

    Returns:
        ``assembly`` itself unless it is deferred; else an incremental assembly (``shared``
        set) or a compacted one (``compaction`` set, ``carried_vectors`` filled).
    """
    if not assembly.deferred or parent is None:
        return assembly
    from ragline.pipelines.curate import take_rows

    docs, chunks, need = assembly.documents, assembly.chunks, assembly.need_embed
    kept = assembly.kept if assembly.kept is not None else np.ones(chunks.num_rows, dtype=bool)
    where, shas = parent.doc_locations, parent.document_shas()
    parent_rows = _row_counts(parent.registry.live_table(parent.name, parent.version, "chunks", columns=["doc_id"])
                              .column("doc_id"))
    doc_col = chunks.column("doc_id")
    rows = _row_counts(doc_col.filter(pa.array(kept, type=pa.bool_())))
    redone = set(pc.unique(doc_col.filter(pa.array(need & kept, type=pa.bool_()))).to_pylist()) \
        if (need & kept).any() else set()
    stay = {u for u, d, s in zip(docs.column("uri").to_pylist(), docs.column("doc_id").to_pylist(),
                                 docs.column("sha256").to_pylist())
            if u in where and where[u][1] == d and shas.get(d) == s and d not in redone
            and rows.get(d, 0) == parent_rows.get(d, 0)}
    shared = _shared_without(parent, {u for u in where if u not in stay})
    moved = pc.invert(pc.is_in(docs.column("uri"), value_set=pa.array(sorted(stay), pa.string())))
    new_docs = docs.filter(moved)
    in_new = pc.is_in(doc_col, value_set=new_docs.column("doc_id"))
    keep = kept & np.asarray(in_new.to_numpy(zero_copy_only=False), dtype=bool)
    n, dim = int(keep.sum()), int(parent.manifest.embedding.get("dim") or 0)
    inc = replace(assembly, documents=new_docs, chunks=take_rows(chunks, keep),
                  carried_vectors=np.zeros((n, dim), dtype=np.float32), need_embed=np.ones(n, dtype=bool),
                  shared=shared, deferred=False, kept=None)
    compaction = _compaction_of(inc, params)
    if compaction is None and any(SIGNATURES_FILE not in r.files for r in shared.segments):
        # a segment without its documents' signatures (written before segments held them, or by
        # `ragline stage publish`): the version is written again once, with every signature
        compaction = "curation signatures move into the segments (a shared segment has none)"
    if compaction is None:
        return inc
    chunks, need = take_rows(chunks, kept), need[kept]
    src = pc.index_in(chunks.column("chunk_id"), value_set=parent.chunks.column("chunk_id")).fill_null(-1)
    src = np.where(need, -1, np.asarray(src.to_numpy(zero_copy_only=False), dtype=np.int64))
    return replace(assembly, chunks=chunks, carried_vectors=_parent_vectors(parent, src), need_embed=src < 0,
                   compaction=compaction, deferred=False, kept=None)


def _row_counts(doc_ids: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """doc id -> number of rows of a ``doc_id`` column."""
    vc = pc.value_counts(doc_ids)
    return dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()))


def _take_sources(tables: dict[RowSource, pa.Table | None], sources: list[tuple[RowSource, int]],
                  schema: pa.Schema) -> pa.Table:
    """Rows ``(source table, row)`` of several same-schema tables, in the given order."""
    order = list(tables)
    parts = [tables[k].cast(schema) if tables[k] is not None else schema.empty_table() for k in order]
    offsets = dict(zip(order, np.cumsum([0] + [p.num_rows for p in parts]).tolist()))
    combined = pa.concat_tables(parts)
    idx = np.array([offsets[s] + r for s, r in sources], dtype=np.int64)
    return combined.take(pa.array(idx, type=pa.int64())).cast(schema)


def fill_vectors(
    assembly: Assembly,
    embedder: Embedder | None,
    cache_dir: str | Path | None,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    known: tuple[Sequence[str], np.ndarray] | None = None,
) -> tuple[np.ndarray, int, int]:
    """Embed the rows the assembly marks (through the embedding cache) and merge the carried vectors.

    Args:
        assembly: from :func:`assemble`.
        embedder: the embedder; may be ``None`` when no row needs embedding and a parent exists.
        cache_dir: ``paths.cache``.
        batch_size: texts per forward pass.
        progress: called with the number of chunks finished since the last call.
        known: ``(chunk ids, float32 (k, dim) vectors)`` already embedded elsewhere (a Dask
            cluster, :class:`Prechunked`): rows with those chunk ids take them, only the others
            go to ``embedder``.

    Returns:
        ``(vectors, embedded, computed)``: float32 (n_chunks, dim) in chunk-row order, the number
        of chunks embedded by this stage (``known`` ones included), and how many of their texts
        the model computed now (here). ``vectors`` is ``assembly.carried_vectors`` itself, its
        rows to embed filled in place, when that array has the embedder's dim.

    Raises:
        ValueError: ``embedder`` is ``None`` but needed.
    """
    idx = np.flatnonzero(assembly.need_embed)
    n = assembly.chunks.num_rows
    given: dict[str, int] = {}
    if known is not None and len(idx):
        ids = dict((c, i) for i, c in enumerate(known[0]))
        need_ids = assembly.chunks.column("chunk_id").take(pa.array(idx, type=pa.int64())).to_pylist()
        given = {int(r): ids[c] for r, c in zip(idx, need_ids) if c in ids}
    todo = np.array([r for r in idx if int(r) not in given], dtype=np.int64)
    if embedder is None and (len(todo) or (assembly.carried_vectors is None and not given)):
        raise ValueError("fill_vectors needs an embedder: rows need embedding or there is no parent")
    new, computed = None, 0
    if len(todo):
        new, computed = embed_chunks(assembly.chunks.take(pa.array(todo, type=pa.int64())), embedder,
                                     cache_dir, batch_size, progress=progress)
        dim = new.shape[1]
    elif given:
        dim = known[1].shape[1]
    else:
        dim = assembly.carried_vectors.shape[1] if assembly.carried_vectors is not None else embedder.dim
    carried = assembly.carried_vectors
    if carried is not None and carried.shape == (n, dim) and carried.dtype == np.float32 and carried.flags.writeable:
        out = carried  # filled in place: every row to embed is written below, the carried ones are already there
    else:
        out = np.zeros((n, dim), dtype=np.float32)
        if carried is not None and (~assembly.need_embed).any():
            out[~assembly.need_embed] = carried[~assembly.need_embed]
    if new is not None:
        out[todo] = new
    if given:
        rows = np.fromiter(given.keys(), dtype=np.int64, count=len(given))
        out[rows] = known[1][np.fromiter(given.values(), dtype=np.int64, count=len(given))]
        if progress is not None:
            progress(len(given))
    return out, int(len(idx)), int(computed)


def embedder_info_for(plan: RefreshPlan, parent: ParentData | None, assembly: Assembly, params: Params) -> EmbedderInfo | None:
    """The embedder identity of the new version when no model needs loading, else ``None``.

    A refresh that only carries vectors (removals, quarantined changes, FAISS settings) keeps
    the parent's embedder, whose identity the parent manifest records.
    """
    if parent is None or plan.reembed_all or assembly.need_embed.any() or params.chunk.needs_embedder:
        return None
    return EmbedderInfo.from_manifest(parent.manifest.embedding)


def run_refresh(params: Params, reporter: Any = None, *, sources: Sequence[str | Path] | None = None,
                replace_sources: bool = False) -> RefreshSummary:
    """Refresh ``params.index.name`` as ``ragline refresh`` does (``ragline.refresh`` calls this too).

    Resolves the sources (:func:`resolve_sources`: by default the ones the index was built
    from) and plans under the index lock; when nothing changed, returns at once without
    starting Prefect; otherwise runs :func:`pipelines.flows.refresh_flow` with that plan
    (:data:`pipelines.flows.PLANNED`; the sources are scanned once).

    Args:
        params: validated params (index name applied, see :func:`refresh_params`).
        reporter: a :class:`pipelines.progress.Reporter` for progress bars (default: silent).
        sources: folders or files to refresh from (default: the recorded sources).
        replace_sources: allow ``sources`` to differ from the recorded ones.

    Returns:
        The summary; ``failed`` is set when the run failed and published nothing.

    Raises:
        LockTimeoutError: another refresh or publish held the index past the timeout.
        SourcesChanged: ``sources`` differ from the recorded ones without ``replace_sources``.
    """
    import time

    t0 = time.perf_counter()
    registry = IndexRegistry(params.index.root, params.index.lock_timeout_s, verify=params.index.verify)
    with registry.lock(params.index.name):
        params = resolve_sources(params, registry, sources, replace_sources)
        params = with_embed_backend(params, registry)  # auto: the parent's backend, else this CPU's fastest
        t_plan = time.perf_counter()
        plan = plan_refresh(params, registry)
        plan_s = round(time.perf_counter() - t_plan, 3)
        if plan.nothing_to_do:
            summary = RefreshSummary.from_plan(plan, params.embed.backend)
            summary.stage_seconds = {"plan": plan_s}
            summary.total_seconds = round(time.perf_counter() - t0, 3)
            return summary
        from ragline.pipelines.flows import PLANNED, REPORTER, refresh_flow

        token = REPORTER.set(reporter) if reporter is not None else None
        data = params.to_dict()
        planned = PLANNED.set((data, plan, plan_s))  # the flow uses this plan: the sources are scanned once
        try:
            return refresh_flow(params=data)
        finally:
            PLANNED.reset(planned)
            if token is not None:
                REPORTER.reset(token)

