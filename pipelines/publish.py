"""Stages ``index`` and ``publish``: write a segment and publish an immutable version listing it.

A version is a manifest listing segments (:mod:`indexers.segments`) plus tombstones and the
per-version files. :func:`publish_index` writes one new segment for the documents it is given
and lists it after the segments shared with the parent (:class:`SharedSegments`), whose
tombstones say which of their documents the new segment replaces or which were removed.
:func:`compact_index` merges a version's segments into one. The per-version files are
written in one place, :func:`write_version_files` (add a stage's extra file there).
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from ragline.core.errors import ConfigError
from ragline.core.hashing import sha256_file
from ragline.indexers.embedders import EmbedderInfo
from ragline.indexers.faults import crash_point
from ragline.indexers.faiss_index import build_faiss_index, resolve_factory
from ragline.indexers.manifest import Manifest, params_hash
from ragline.indexers.registry import DEFAULT_ALIAS, IndexRegistry, SegmentHold
from ragline.indexers.retriever import QUARANTINE_FILE
from ragline.indexers.segments import INDEX_FILE, INPUTS_FILE, SegmentRef, write_segment_files
from ragline.core.schemas import QUARANTINE_SCHEMA, parquet_write_options, write_table
from ragline.pipelines.config import IndexConfig, Params
from ragline.pipelines.chunk import chunker_record
from ragline.pipelines.sources import input_record


def build_index(vectors: np.ndarray, cfg: IndexConfig):
    """Stage ``index``: a FAISS index over float32 (n, dim) vectors (row i = chunk row i), of the
    kind ``index.factory`` names (trained on ``index.train_size`` vectors when it needs training).

    Raises:
        ConfigError: FAISS rejects the factory string at this dimension, or training failed.
    """
    return build_faiss_index(vectors, cfg.faiss_spec())


def git_commit(cwd: str | Path = ".") -> str | None:
    """HEAD commit of the git work tree at ``cwd`` (``+dirty`` appended when it has changes), or None."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def dvc_lock_sha256(cwd: str | Path = ".") -> str | None:
    """sha256 of ``dvc.lock`` at ``cwd`` when it exists."""
    p = Path(cwd) / "dvc.lock"
    return sha256_file(p) if p.exists() else None


@dataclass(frozen=True)
class SharedSegments:
    """What a new version takes over from its parent (or from earlier in its own run: an
    ingest's flushed segments, :func:`write_segment`) without rewriting it.

    Attributes:
        segments: the parent's segments still holding live rows (or the run's flushed ones), in order.
        tombstones: ``{segment id: {"doc_ids": [...], "chunks": n}}`` for those segments (the
            parent's plus the documents this run replaces or removes).
        inputs: manifest ``inputs`` entries (``uri``, ``doc_id``, ``sha256``) of the live
            documents of those segments.
    """

    segments: list[SegmentRef] = field(default_factory=list)
    tombstones: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs: list[dict[str, str]] = field(default_factory=list)

    @property
    def live_chunks(self) -> int:
        """Chunk rows of the shared segments that are not tombstoned."""
        return sum(r.chunks - int((self.tombstones.get(r.id) or {}).get("chunks") or 0) for r in self.segments)


def input_records(documents: pa.Table) -> list[dict[str, Any]]:
    """The manifest ``inputs`` records (:func:`pipelines.sources.input_record`) of a ``DOCUMENTS_SCHEMA`` table."""
    return [input_record(u, d, s, dict(m or ()), n) for u, d, s, m, n in zip(
        documents.column("uri").to_pylist(), documents.column("doc_id").to_pylist(),
        documents.column("sha256").to_pylist(), documents.column("metadata").to_pylist(),
        documents.column("size_bytes").to_pylist())]


def write_segment(registry: IndexRegistry, params: Params, documents: pa.Table, chunks: pa.Table,
                  vectors: np.ndarray, trained_from: SegmentRef | None = None, hold: SegmentHold | None = None,
                  inputs: list[dict[str, Any]] | None = None, extra: Callable[[Path], None] | None = None,
                  ) -> tuple[SegmentRef, dict[str, Any], list[dict[str, Any]]]:
    """Write one segment of these rows into ``params.index.name`` (no version lists it yet).

    Args:
        registry: the registry.
        params: validated params (``index`` settings).
        documents, chunks, vectors: as :func:`publish_index` takes them.
        trained_from: a segment whose training (IVF centroids, PQ codebooks) a kind that needs
            training reuses, rather than training on these rows.
        hold: keeps the segment from gc until a version lists it (an ingest's flushed segments).
        inputs: the documents' :func:`input_records` when the caller has them already.
        extra: writes more files into the segment's staging folder (its curation signatures:
            :meth:`pipelines.curate.Curation.segment_signatures`), before the segment's own files.

    Returns:
        ``(segment, index record, inputs records of documents)``.

    Raises:
        ConfigError: FAISS rejects the factory string, or training failed.
        LockTimeoutError: another process held the index too long.
    """
    name = params.index.name
    inputs = input_records(documents) if inputs is None else inputs
    record: dict[str, Any] = {}
    trained = registry.segment_dir(name, trained_from.id) / INDEX_FILE if trained_from is not None else None

    def write(folder: Path) -> None:
        if extra is not None:  # first: what it holds may be let go before the index is built
            extra(folder)
        record.update(write_segment_files(folder, documents, chunks, vectors, params.index.faiss_spec(),
                                          params.index.bm25_spec(), trained, inputs=inputs))

    seg = registry.add_segment(name, write, hold=hold)
    return seg, record, inputs


def write_version_files(folder: Path, quarantine: pa.Table, extra: dict[str, Any] | None = None) -> None:
    """Write the per-version files (not segment data) into the staging ``folder``.

    The one place listing them: ``quarantine.parquet``, plus ``extra``: ``{file name: a
    pyarrow Table (written as Parquet) | bytes | str}`` that a stage publishes with the version
    (the registry hashes whatever is here into the manifest's ``files``).
    """
    write_table(quarantine, folder / QUARANTINE_FILE, QUARANTINE_SCHEMA)
    for fname, content in (extra or {}).items():
        path = folder / fname
        if isinstance(content, pa.Table):
            import pyarrow.parquet as pq

            pq.write_table(content, str(path), **parquet_write_options(content))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(str(content), encoding="utf-8")


def publish_index(
    registry: IndexRegistry,
    params: Params,
    documents: pa.Table,
    chunks: pa.Table,
    vectors: np.ndarray,
    quarantine: pa.Table,
    embedder: EmbedderInfo,
    stats: dict[str, Any] | None = None,
    parent_version: str | None = None,
    aliases: Sequence[str] = (DEFAULT_ALIAS,),
    dvc_stage_deps: dict[str, str] | None = None,
    curation: Any = None,
    shared: SharedSegments | None = None,
    extra_files: dict[str, Any] | None = None,
) -> Manifest:
    """Stage ``publish``: write a segment of these rows and publish a version listing it atomically.

    Args:
        registry: the registry to publish into.
        params: validated params (recorded whole, with their hash).
        documents: table of ``DOCUMENTS_SCHEMA``: the new segment's documents (every document
            for a full build; the added and changed ones for a refresh).
        chunks: table of ``CHUNKS_SCHEMA``; row i is FAISS id i of the new segment.
        vectors: float32 (n_chunks, dim).
        quarantine: table of ``QUARANTINE_SCHEMA``.
        embedder: identity of the embedder that made ``vectors``.
        stats: run statistics to record (wall times, cache hits, ...).
        parent_version: the version a refresh started from.
        aliases: aliases moved to the new version once it is complete.
        dvc_stage_deps: ``{path: md5}`` of the DVC publish stage's data inputs (``ragline stage publish``).
        curation: :class:`pipelines.curate.Curation` of this version; its files
            (``duplicates.parquet``, ``curation.json``) are published with it, and the new segment
            holds its documents' signatures (``signatures.parquet``).
        shared: segments taken over from the parent, or flushed earlier by this ingest
            (:func:`write_segment`); ``None``: one segment.
        extra_files: more per-version files (:func:`write_version_files`).

    Returns:
        The written manifest.

    Raises:
        ValueError: vectors and chunks disagree in count, or vectors are not ``embedder.dim`` wide.
        LockTimeoutError: another publish held the index too long.
    """
    if vectors.shape != (chunks.num_rows, embedder.dim):
        raise ValueError(f"vectors have shape {vectors.shape}, expected ({chunks.num_rows}, {embedder.dim})")
    name = params.index.name
    shared = shared or SharedSegments()
    param_values = params.to_dict()
    new_inputs = input_records(documents)
    inputs = sorted(list(shared.inputs) + new_inputs, key=lambda r: r["uri"])
    spec = params.index.faiss_spec()

    def write(folder: Path, version: str) -> Manifest:
        segments = list(shared.segments)
        record: dict[str, Any] = {}
        # [curate hook] the new segment holds its documents' MinHash signatures
        signatures = curation.segment_signatures(documents, chunks) if hasattr(curation, "segment_signatures") else None
        if documents.num_rows or chunks.num_rows or not segments:
            # a kind that needs training reuses the first shared segment's training (compaction retrains)
            seg, made, _ = write_segment(registry, params, documents, chunks, vectors, segments[0] if segments else None,
                                         inputs=new_inputs, extra=signatures)
            record.update(made)
            if seg.id in {r.id for r in segments}:
                raise RuntimeError(f"segment {seg.id} is already listed by the parent with live rows")
            segments.append(seg)
        write_version_files(folder, quarantine, extra_files)
        if curation is not None:  # [curate hook] duplicates.parquet, curation.json
            curation.write(folder)
        live = shared.live_chunks + chunks.num_rows
        # every segment records its documents' inputs: the manifest lists none (it grows with the change)
        per_segment = all(INPUTS_FILE in r.files for r in segments)
        if not record:  # no new segment (a refresh that only removed documents): the settings, nothing built
            record = {"factory": resolve_factory(spec.factory, live), **spec.settings(), "dim": int(embedder.dim),
                      "trained_on": 0}
        return Manifest(
            index_name=name,
            version=version,
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            params=param_values,
            params_hash=params_hash(param_values),
            chunker=chunker_record(params.chunk, params.embed.model),
            embedding=embedder.to_manifest(),
            # the new segment's kind and training; every segment is built from the same settings
            index={**record, "ntotal": live},
            counts={"documents": len(inputs), "chunks": live, "vectors": live, "quarantined": quarantine.num_rows,
                    "segments": len(segments)},
            inputs=[] if per_segment else inputs,
            inputs_in_segments=per_segment,
            git_commit=git_commit(),
            dvc_lock_sha256=dvc_lock_sha256(),
            parent_version=parent_version,
            stats={**(stats or {}), **({"curation": curation.counts()} if curation is not None else {})},
            dvc_stage_deps=dict(dvc_stage_deps or {}),
            segments=[r.to_dict() for r in segments],
            tombstones={k: v for k, v in shared.tombstones.items() if k in {r.id for r in segments}},
        )

    return registry.publish(name, write, aliases=tuple(aliases), lock_timeout_s=params.index.lock_timeout_s)


def compact_index(registry: IndexRegistry, params: Params, ref: str, aliases: Sequence[str] | None = None,
                  stats: dict[str, Any] | None = None) -> Manifest:
    """Merge the live rows of a version's segments into one segment, published as a new version.

    Nothing is re-parsed, re-chunked or re-embedded: documents, chunks and vectors are read
    from the segments (vectors kept in the segment, or reconstructed exactly from a
    flat-storage index), tombstoned rows left out, and one segment is written in document (URI)
    order, as a full build orders them, with the FAISS and BM25 settings of ``params``; the
    per-version files (quarantine records; a curated version's duplicates and curation counts)
    are carried, and so are the live rows of its segments' curation signatures (into the merged
    segment). The new version's parent is the compacted one; its inputs and counts are the same.

    Args:
        registry: the registry.
        params: validated params (``index.name`` is not used: ``ref`` names the index).
        ref: ``NAME[@ALIAS|@VERSION]``.
        aliases: aliases moved to the new version (default: the alias ``ref`` names, if any,
            and ``latest`` when it pointed at the compacted version).
        stats: recorded under ``stats`` besides ``{"compacted_from", "segments_before"}``.

    Returns:
        The new version's manifest.

    Raises:
        CorruptRegistryError: a file of the version or of one of its segments differs from the
            manifest (names the segment file; nothing is written).
        RegistryError: unknown index, alias or version.
    """
    import pyarrow.compute as pc

    from ragline.core.schemas import CHUNKS_SCHEMA, DOCUMENTS_SCHEMA, read_table
    from ragline.indexers.embedders import EmbedderInfo as _Info
    from ragline.indexers.registry import IndexRef
    from ragline.indexers.retriever import PublishedIndex

    r = IndexRef.parse(ref)
    name, version = registry.resolve(r)
    with registry.lock(name, params.index.lock_timeout_s):
        pub = PublishedIndex.open(registry, f"{name}@{version}")  # checks every file against the manifest first
        m = pub.manifest
        crash_point("compact:read")
        documents = registry.live_table(name, version, "documents").cast(DOCUMENTS_SCHEMA)
        chunks, vectors = pub.chunks, pub.vectors()
        # full-build order: documents by URI, chunks by document (their order within a document kept)
        documents = documents.take(pc.sort_indices(documents, sort_keys=[("uri", "ascending")]))
        uris = chunks.column("uri").to_pylist()
        order = sorted(range(len(uris)), key=uris.__getitem__)
        chunks = chunks.take(pa.array(order, type=pa.int64())).cast(CHUNKS_SCHEMA)
        vectors = vectors[order] if len(order) else vectors
        q = registry.version_dir(name, version) / QUARANTINE_FILE
        quarantine = read_table(q, QUARANTINE_SCHEMA) if q.exists() else QUARANTINE_SCHEMA.empty_table()
        if aliases is None:
            moving = [r.selector] if r.selector != version else []
            if registry.aliases(name).get(DEFAULT_ALIAS) == version and DEFAULT_ALIAS not in moving:
                moving.append(DEFAULT_ALIAS)
            aliases = moving
        try:  # the version's own settings: the merged segment is what a full build with them gives
            run_params = Params.from_dict(m.params, f"{name}@{version} manifest params")
        except ConfigError:
            run_params = params.model_copy(update={"index": params.index.model_copy(update={"name": name})})
        from ragline.pipelines.curate import carried_curation  # [curate hook] duplicates, counts, signatures

        return publish_index(registry, run_params, documents, chunks, vectors, quarantine,
                             _Info.from_manifest(m.embedding),
                             stats={**dict(stats or {}), "compacted_from": version, "segments_before": len(m.segments)},
                             parent_version=version, aliases=tuple(aliases),
                             curation=carried_curation(registry, name, version))
