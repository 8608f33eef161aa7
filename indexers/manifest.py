"""The manifest of a published index version: everything needed to reproduce or refuse it."""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

MANIFEST_FILE = "manifest.json"
#: 2: versions are lists of segments plus tombstones (1: one folder holding every file).
MANIFEST_SCHEMA_VERSION = 2


from ragline.core.errors import CorruptRegistryError, IndexCompatibilityError  # noqa: E402,F401  (re-exported)
from ragline.core.hashing import json_sha256, sha256_file  # noqa: E402,F401  (re-exported)
from ragline.core.io import fsync_dir, write_json_atomic  # noqa: E402,F401  (re-exported)


@dataclass(frozen=True)
class Manifest:
    """Contents of ``manifest.json``.

    Attributes:
        schema_version: manifest format version (:data:`MANIFEST_SCHEMA_VERSION`).
        segments: the immutable, content-addressed segments the version is made of, in search
            order: ``[{"id", "files", "file_sizes", "documents", "chunks"}]``
            (:class:`indexers.segments.SegmentRef`); stored once per index under
            ``<root>/<name>/segments/<id>/`` and shared by every version that lists them.
        tombstones: ``{segment id: {"doc_ids": [...], "chunks": n}}``: documents of a listed
            segment that a later segment replaces or that were removed, and how many chunk
            rows they hold; their rows are not searched.
        index_name: index name.
        version: version id, e.g. ``v0003``.
        created_at: ISO-8601 UTC time of publishing.
        params: every params value the build used (``params.yaml`` as validated).
        params_hash: sha256 of ``params`` (sorted JSON).
        chunker: ``{"strategy", "fingerprint", "options", "context"}``.
        embedding: ``{"model_id", "revision", "dim", "normalize"[, "quantization"]}``
            (:meth:`indexers.embedders.EmbedderInfo.to_manifest`).
        index: FAISS settings (:func:`indexers.faiss_index.index_record`: ``factory``, ``metric``,
            ``ntotal``...; versions before factory strings: ``{"kind", "metric", ...}``).
        counts: ``{"documents", "chunks", "vectors", "quarantined"}``.
        inputs: ``[{"uri", "doc_id", "sha256"}]`` of every input document, sorted by uri; an
            entry of a remote source adds what its listing said (``etag``, ``version_id``,
            ``last_modified``, ``size``), see ``pipelines/sources.py``. With
            ``inputs_in_segments`` the file holds ``[]`` and :meth:`IndexRegistry.manifest
            <indexers.registry.IndexRegistry.manifest>` fills this list from the segments.
        inputs_in_segments: the inputs are recorded per segment (each segment's ``inputs.json``,
            tombstoned documents left out), not in the manifest: a refresh's manifest then grows
            with its segments and tombstones, not with the corpus.
        files: ``{file name: sha256}`` of every file in the version folder but the manifest:
            the per-version files (``quarantine.parquet``, and whatever else a stage publishes
            with the version); the search data lives in ``segments``.
        file_sizes: ``{file name: size in bytes}`` of the same files (empty in manifests written
            before sizes were recorded: then only the sha256 is checked).
        git_commit: commit of the working tree that built it, when there is one.
        dvc_lock_sha256: sha256 of ``dvc.lock`` when there is one.
        parent_version: the version a refresh started from, else ``None``.
        stats: free-form run statistics (wall time per stage, cache hits, ...).
        dvc_stage_deps: ``{path: md5}`` of the data files the DVC ``publish`` stage read, as
            ``dvc.lock`` records them once ``dvc repro`` finishes (``dvc.lock`` is written after
            the stage runs, so this, not ``dvc_lock_sha256``, links a version to the commit of
            ``dvc.lock`` that reproduces it); empty outside ``dvc repro``.
        sources: the folders, files or URLs the version was built from, as given and normalized
            (what ``ragline refresh`` scans when it is given none); defaults to
            ``params["load"]["sources"]``, which the ingest and refresh commands set to them
            (and which manifests written before this field hold).
    """

    index_name: str
    version: str
    created_at: str
    params: dict[str, Any]
    params_hash: str
    chunker: dict[str, Any]
    embedding: dict[str, Any]
    index: dict[str, Any]
    counts: dict[str, int]
    inputs: list[dict[str, Any]]
    files: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    dvc_lock_sha256: str | None = None
    parent_version: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    dvc_stage_deps: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    file_sizes: dict[str, int] = field(default_factory=dict)
    segments: list[dict[str, Any]] = field(default_factory=list)
    tombstones: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs_in_segments: bool = False
    schema_version: int = MANIFEST_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.sources:
            load = self.params.get("load") if isinstance(self.params, dict) else None
            given = load.get("sources") if isinstance(load, dict) else None
            if isinstance(given, list):
                object.__setattr__(self, "sources", [str(s) for s in given])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (round-trips through :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> "Manifest":
        """Build from a dict, every field type-checked (pydantic).

        Raises:
            CorruptRegistryError: not an object, a missing field, a field of the wrong type
                or another schema version (names ``source`` and the field).
        """
        if not isinstance(data, dict):
            raise CorruptRegistryError(f"{source}: manifest is not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise CorruptRegistryError(f"{source}: manifest lacks field(s) {', '.join(missing)}")
        if data.get("schema_version", MANIFEST_SCHEMA_VERSION) != MANIFEST_SCHEMA_VERSION:
            old = data.get("schema_version") == 1
            raise CorruptRegistryError(
                f"{source}: manifest schema_version {data.get('schema_version')} is not {MANIFEST_SCHEMA_VERSION}"
                + ("; the version was published before segments (one folder per version) and this ragline does "
                   "not read it: rebuild the index with `ragline ingest SOURCES --index NAME`" if old else
                   "; rebuild the index with this ragline")
            )
        try:
            return _adapter().validate_python({k: v for k, v in data.items() if k in names})
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            raise CorruptRegistryError(
                f"{source}: manifest field {loc}: {err['msg']} (got {_short(err.get('input'))}); the version is "
                "damaged: promote another version and delete this one, or rebuild it"
            ) from e


@functools.lru_cache(maxsize=1)
def _adapter() -> TypeAdapter:
    return TypeAdapter(Manifest)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def params_hash(params: dict[str, Any]) -> str:
    """sha256 (hex) of the sorted-key JSON of a params dict."""
    return json_sha256(params)


def read_manifest(folder: Path) -> Manifest:
    """Read ``<folder>/manifest.json``.

    Raises:
        CorruptRegistryError: missing, truncated or invalid manifest (names the file).
    """
    path = folder / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise CorruptRegistryError(
            f"{path}: manifest missing; remove the folder or run `ragline index gc` to repair"
        ) from e
    except json.JSONDecodeError as e:
        raise CorruptRegistryError(
            f"{path}: manifest is not valid JSON ({e.msg} at line {e.lineno}); the version is "
            f"damaged: point each alias on it elsewhere with `ragline index promote VERSION --index "
            f"{folder.parent.name} --alias ALIAS`, then delete {folder}"
        ) from e
    return Manifest.from_dict(data, source=str(path))


def check_embedder(manifest: Manifest, model_id: str, revision: str, dim: int, normalize: bool,
                   quantization: str = "") -> None:
    """Refuse to query an index built with another embedder.

    Raises:
        IndexCompatibilityError: model, revision, dim, normalization or quantization (the
            bf16/int8 backend and recipe; ``""`` for fp32) differ (names both).
    """
    want = {"model_id": model_id, "revision": revision, "dim": dim, "normalize": normalize,
            "quantization": quantization}
    have = {k: manifest.embedding.get(k) for k in want}
    have["quantization"] = have["quantization"] or ""
    diffs = [f"{k}: index has {have[k]!r}, query embedder has {want[k]!r}" for k in want if have[k] != want[k]]
    if diffs:
        raise IndexCompatibilityError(
            f"index {manifest.index_name}@{manifest.version} was built with another embedder ("
            + "; ".join(diffs) + "); rebuild it or query with the matching --model / --query-backend (auto uses the index's)"
        )
