"""The index registry: immutable versions, atomically moved aliases, and publishing.

Layout under the registry root::

    <root>/<name>/<version>/            one immutable version: manifest.json (segments, tombstones)
                                        and the per-version files (quarantine.parquet, ...)
    <root>/<name>/segments/<id>/        one immutable, content-addressed segment (tables, FAISS,
                                        BM25 statistics), shared by every version that lists it
    <root>/<name>/segments/.staging-<pid>-<n>  a segment being written (never listed)
    <root>/<name>/.staging-<version>-<pid>  a version being written (never listed)
    <root>/<name>/.trash-<version>-<pid>    a version being deleted by gc (never listed)
    <root>/<name>/aliases/<alias>.json  {"version", "updated_at", "meta", "history": [...]}
    <root>/<name>/.lock                 publish lock (filelock; also held by refresh and gc)

Publishing writes every file into the staging folder, fsyncs it, renames it to
``<version>`` and only then replaces the alias file (``os.replace``), so a reader never sees
a half-written version and a crash leaves the previous alias valid. ``gc`` renames a
version to ``.trash-*`` before deleting it, so a crash mid-delete never leaves a listed,
incomplete version. Leftover staging and trash folders of dead processes are removed by
``gc``. A segment is written into a staging folder, fsynced and renamed to its id before the
manifest that lists it is written, so a listed segment is always complete; ``gc`` deletes a
segment only when no remaining version lists it (and keeps every segment while a version
folder is damaged, since its manifest cannot say what it lists).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import stat
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    import pyarrow as pa

from filelock import FileLock, Timeout

from ragline.indexers.manifest import (
    MANIFEST_FILE,
    CorruptRegistryError,
    Manifest,
    fsync_dir,
    read_manifest,
    sha256_file,
    write_json_atomic,
)
from ragline.indexers.faults import crash_point
from ragline.indexers.segments import SEGMENT_ID_RE, SEGMENTS_DIR, SegmentRef, segment_id
from ragline.core.errors import ConfigError

#: Values of ``index.verify``: what opening a version for serving checks against the manifest.
VERIFY_MODES = ("sha256", "size")

#: Index names: a letter or digit, then letters, digits, ``.``, ``_``, ``-``; at most
#: :data:`MAX_NAME_CHARS` characters; never ``..`` (no separators, so never a path).
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
#: Aliases: a letter, then letters, digits, ``_``, ``-`` (never of the form ``vNNNN``).
ALIAS_PATTERN = r"[A-Za-z][A-Za-z0-9_-]*"
#: Versions: ``v`` and at least four digits (``v0001``).
VERSION_PATTERN = r"v(\d{4,12})"
MAX_NAME_CHARS = 100

VERSION_RE = re.compile(rf"^{VERSION_PATTERN}$")
NAME_RE = re.compile(rf"^{NAME_PATTERN}$")
ALIAS_RE = re.compile(rf"^{ALIAS_PATTERN}$")
LEFTOVER_RE = re.compile(r"^\.(staging|trash)-(v\d{4,})-(\d+)$")
SEGMENT_LEFTOVER_RE = re.compile(r"^\.(staging|trash|hold)-(?:[0-9a-f]{32}-)?(\d+)-\d+$")
#: A hold file (``segments/.hold-<pid>-<n>``): segments a running ingest wrote that no version lists yet.
HOLD_RE = re.compile(r"^\.hold-(\d+)-\d+$")
DEFAULT_ALIAS = "latest"

# One FileLock object per lock file and process, shared by threads: the lock is re-entrant
# within a process (a refresh holds it and then publishes), exclusive between processes.
_LOCKS: dict[str, FileLock] = {}
_LOCKS_GUARD = threading.Lock()
# manifest file (path, inode, mtime, size) -> the inputs its segments list (IndexRegistry._segment_inputs)
_INPUTS_CACHE: dict[tuple, list[dict]] = {}


from ragline.core.errors import (  # noqa: E402  (re-exported: callers import them from here too)
    AliasNotFound,
    IndexNotFound,
    LockTimeoutError,
    RegistryError,
    VersionNotFound,
)


class InvalidReference(RegistryError, ValueError):
    """An index name, alias or version reference does not match its pattern (names the value).

    Derives from ``ValueError`` too, so callers that validated input with ``ValueError`` keep working.
    """


class OutsideRootError(RegistryError, ValueError):
    """A path the registry would open resolves outside ``index.root`` (names the path)."""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...' ({len(str(value))} characters)"


def check_name(value: object, what: str = "index name") -> str:
    """Validate an index name (:data:`NAME_PATTERN`, at most :data:`MAX_NAME_CHARS` characters, no ``..``).

    Every index name the registry receives, from the CLI, the Python API, a flow file or a
    manifest, passes through here before it becomes part of a path.

    Returns:
        ``value`` unchanged.

    Raises:
        InvalidReference: empty, too long, with a separator or ``..``, or another character.
    """
    if not isinstance(value, str) or not value:
        raise InvalidReference(f"{what} {_shown(value)} is empty; give a name such as 'docs'")
    if len(value) > MAX_NAME_CHARS:
        raise InvalidReference(f"{what} {_shown(value)} is longer than {MAX_NAME_CHARS} characters")
    if not NAME_RE.match(value) or ".." in value:
        raise InvalidReference(
            f"bad {what} {_shown(value)}: use letters, digits, '.', '_' and '-' (starting with a letter "
            "or digit, no '..', no '/')"
        )
    return value


def check_alias(value: object) -> str:
    """Validate an alias name (:data:`ALIAS_PATTERN`, at most :data:`MAX_NAME_CHARS` characters, not ``vNNNN``).

    Raises:
        InvalidReference: the alias does not match.
    """
    if not isinstance(value, str) or not value:
        raise InvalidReference(f"alias {_shown(value)} is empty; give a name such as 'prod'")
    if len(value) > MAX_NAME_CHARS or not ALIAS_RE.match(value) or VERSION_RE.match(value):
        raise InvalidReference(
            f"bad alias name {_shown(value)}: letters, digits, '_' and '-', starting with a letter, at most "
            f"{MAX_NAME_CHARS} characters, not vNNNN"
        )
    return value


def check_version(value: object) -> str:
    """Validate a version id (``vNNNN``: ``v`` and 4 to 12 digits).

    Raises:
        InvalidReference: the version does not match.
    """
    if not isinstance(value, str) or not VERSION_RE.match(value):
        raise InvalidReference(f"bad version {_shown(value)}: versions look like v0001")
    return value


def check_selector(value: object) -> str:
    """Validate the part after ``@`` of a reference: a version (``vNNNN``) or an alias."""
    if isinstance(value, str) and value[:1] == "v" and value[1:].isdigit():
        return check_version(value)
    return check_alias(value)


@dataclass(frozen=True, slots=True)
class IndexRef:
    """A parsed ``NAME[@ALIAS|@VERSION]`` reference (both parts validated)."""

    name: str
    selector: str = DEFAULT_ALIAS

    def __post_init__(self) -> None:
        check_name(self.name)
        check_selector(self.selector)

    @classmethod
    def parse(cls, ref: str) -> "IndexRef":
        """Parse ``"docs"``, ``"docs@prod"`` or ``"docs@v0003"``.

        This is the one parser of index references: the CLI, the Python API, flow files and
        the registry itself go through it.

        Raises:
            InvalidReference: a malformed name or selector (names the value).
        """
        if not isinstance(ref, str) or not ref:
            raise InvalidReference(f"index reference {_shown(ref)} is empty; use NAME, NAME@ALIAS or NAME@VERSION")
        name, at, sel = ref.partition("@")
        if not name:
            raise InvalidReference(f"bad index reference {_shown(ref)}; use NAME, NAME@ALIAS or NAME@VERSION")
        if at and not sel:
            raise InvalidReference(f"bad index reference {_shown(ref)}: nothing after '@'; use NAME@ALIAS or NAME@VERSION")
        return cls(name, sel or DEFAULT_ALIAS)


@dataclass(frozen=True, slots=True)
class AliasMove:
    """One alias move made by :meth:`IndexRegistry.rollback_alias` or ``set_alias``.

    Attributes:
        alias: the alias.
        from_version: its target before the move (``None`` when it is new).
        to_version: its target now.
    """

    alias: str
    from_version: str | None
    to_version: str


class SegmentHold:
    """Segment ids a running process wrote that no version lists yet, in a hold file gc reads
    (:meth:`IndexRegistry.hold_segments`). Not thread-safe; one per run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ids: list[str] = []

    def add(self, seg: str) -> None:
        """Hold segment ``seg`` (the file is replaced atomically)."""
        self.ids.append(seg)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.ids, compact=True)

    def release(self) -> None:
        """Drop the hold: gc may delete the segments that no kept version lists."""
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class GcReport:
    """What :meth:`IndexRegistry.gc` deleted and kept.

    Attributes:
        deleted: versions deleted (or that would be, with ``dry_run``), oldest first.
        kept: version -> reasons it was kept (``newest``, ``alias prod``, ``rollback target of prod``).
        leftovers: staging/trash folders and alias temp files of dead processes that were removed.
        dry_run: nothing was deleted.
        damaged: version -> why it is damaged, who needs it and how to repair it (never deleted).
        segments_deleted: ids of segments no remaining version lists (deleted, or would be).
        segments_kept: number of segments still listed by a remaining version.
    """

    deleted: list[str]
    kept: dict[str, list[str]]
    leftovers: list[str]
    dry_run: bool = False
    damaged: dict[str, str] = field(default_factory=dict)
    segments_deleted: list[str] = field(default_factory=list)
    segments_kept: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"deleted": self.deleted, "kept": self.kept, "leftovers": self.leftovers, "dry_run": self.dry_run,
                "damaged": self.damaged, "segments_deleted": self.segments_deleted,
                "segments_kept": self.segments_kept}


@dataclass(frozen=True)
class VersionDiff:
    """Differences between two versions of one index (``b`` compared with ``a``).

    Attributes:
        name: index name.
        a, b: the versions compared.
        added, removed, changed: source URIs of documents only in ``b``, only in ``a``, and in
            both with different content (sha256), sorted.
        unchanged: number of documents with the same content in both.
        chunks_a, chunks_b: chunk counts of the two versions.
        chunks_added, chunks_removed: chunk ids only in ``b`` / only in ``a``.
        doc_chunks: uri -> ``[chunks in a, chunks in b]`` for every added, removed or changed document.
        params_changed: dotted params keys whose values differ.
        chunker_changed, embedding_changed: the chunker record / embedder identity differ.
    """

    name: str
    a: str
    b: str
    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: int
    chunks_a: int
    chunks_b: int
    chunks_added: int
    chunks_removed: int
    doc_chunks: dict[str, list[int]] = field(default_factory=dict)
    params_changed: list[str] = field(default_factory=list)
    chunker_changed: bool = False
    embedding_changed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _flat_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _flat_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


class IndexRegistry:
    """Versions and aliases of the indexes under ``root``.

    Args:
        root: the registry folder (``index.root`` in params).
        lock_timeout_s: default seconds to wait for another process's lock on an index
            (``index.lock_timeout_s`` in params).
    """

    def __init__(self, root: str | Path, lock_timeout_s: float = 600.0, verify: str = "sha256") -> None:
        if verify not in VERIFY_MODES:
            raise ConfigError(f"index.verify {verify!r}: use one of {', '.join(VERIFY_MODES)}")
        self.root = Path(root)
        self.lock_timeout_s = lock_timeout_s
        self.verify_mode = verify

    # ---------- the path guard ----------
    def _inside(self, path: Path) -> Path:
        """``path`` if it resolves (symlinks followed) to a place inside the root, else raise.

        Raises:
            OutsideRootError: the path leaves ``index.root`` (names it and where it leads).
        """
        root = self.root.resolve()
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as e:  # symlink loop, name too long
            raise OutsideRootError(f"{path}: cannot be resolved inside index.root {root} ({e})") from e
        if resolved != root and root not in resolved.parents:
            raise OutsideRootError(
                f"{path} resolves to {resolved}, outside index.root {root}; the registry reads and writes "
                "only inside its root (check the index name and any symlinks under the root)"
            )
        return path

    # ---------- reading ----------
    def names(self) -> list[str]:
        """Index names that have at least one folder under the root."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and NAME_RE.match(p.name) and len(p.name) <= MAX_NAME_CHARS)

    def index_dir(self, name: str) -> Path:
        """Folder of an index (may not exist).

        Raises:
            InvalidReference: ``name`` is not a valid index name.
            OutsideRootError: the folder resolves outside the root (a symlink).
        """
        return self._inside(self.root / check_name(name))

    def versions(self, name: str) -> list[str]:
        """Complete versions of ``name`` (folders named ``vNNNN`` with a manifest), oldest first."""
        d = self.index_dir(name)
        if not d.is_dir():
            return []
        found = [p.name for p in d.iterdir() if p.is_dir() and VERSION_RE.match(p.name)
                 and (p / MANIFEST_FILE).exists()]
        return sorted(found, key=lambda v: int(v[1:]))

    def version_dir(self, name: str, version: str) -> Path:
        """Folder of one version (may not exist).

        Raises:
            InvalidReference: bad name or version.
            OutsideRootError: the folder resolves outside the root (a symlink).
        """
        return self._inside(self.index_dir(name) / check_version(version))

    def file_path(self, name: str, version: str, file_name: str) -> Path:
        """Path of one file of a version, checked to stay inside the version folder.

        Raises:
            CorruptRegistryError: ``file_name`` is not a plain file name (a manifest naming
                ``../x`` or ``a/b``).
            OutsideRootError: it resolves outside the root.
        """
        folder = self.version_dir(name, version)
        if not isinstance(file_name, str) or not file_name or file_name in (".", "..") or "/" in file_name \
                or "\\" in file_name or "\0" in file_name:
            raise CorruptRegistryError(
                f"{folder / MANIFEST_FILE}: lists file {_shown(file_name)}, which is not a plain file name; "
                "the version is damaged: promote another version and delete this one"
            )
        return self._inside(folder / file_name)

    def manifest(self, name: str, version: str) -> Manifest:
        """The manifest of a version (fields type-checked; name and version must match the folder).

        Raises:
            RegistryError: no such version, or a malformed name or version.
            CorruptRegistryError: the manifest is missing, damaged or of the wrong types.
        """
        folder = self.version_dir(name, version)
        if not folder.is_dir():
            raise VersionNotFound(
                f"index {name!r} has no version {version!r}; versions: {', '.join(self.versions(name)) or 'none'}"
            )
        m = read_manifest(folder)
        path = folder / MANIFEST_FILE
        repair = (f"the version is damaged: point each alias on it elsewhere with `ragline index promote VERSION "
                  f"--index {name} --alias ALIAS`, then delete {folder}")
        try:
            check_version(m.version)
            if m.parent_version is not None:
                check_version(m.parent_version)
            check_name(m.index_name)
        except InvalidReference as e:
            raise CorruptRegistryError(f"{path}: {e}; {repair}") from e
        if m.version != version:
            raise CorruptRegistryError(f"{path}: manifest says version {m.version!r}, the folder is {version!r}; {repair}")
        for fname in m.files:
            self.file_path(name, version, fname)
        try:
            refs = [SegmentRef.from_dict(d) for d in m.segments]
        except ValueError as e:
            raise CorruptRegistryError(f"{path}: {e}; {repair}") from e
        ids = {r.id for r in refs}
        if len(ids) != len(refs) or not set(m.tombstones) <= ids:
            raise CorruptRegistryError(f"{path}: segments listed twice, or tombstones of an unlisted segment; {repair}")
        if m.inputs_in_segments:
            m = dataclasses.replace(m, inputs=self._segment_inputs(name, version, path, m, refs))
        return m

    def _segment_inputs(self, name: str, version: str, path: Path, m: Manifest, refs: list[SegmentRef]) -> list[dict]:
        """The live inputs of a version's segments (``inputs.json`` less tombstones), sorted by uri;
        memoized per manifest file (a version is immutable) for the few versions read last.

        Raises:
            CorruptRegistryError: a segment lacks ``inputs.json`` or it is unreadable (names it).
        """
        from ragline.indexers.segments import INPUTS_FILE, dead_doc_ids, segment_inputs

        st = path.stat()
        key = (str(path.resolve()), st.st_ino, st.st_mtime_ns, st.st_size)
        with _LOCKS_GUARD:
            cached = _INPUTS_CACHE.get(key)
        if cached is not None:
            return list(cached)
        records: list[dict] = []
        for ref in refs:
            folder = self.segment_dir(name, ref.id)
            try:
                if INPUTS_FILE not in ref.files:
                    raise OSError(f"{folder / INPUTS_FILE}: not listed by the manifest, which says the inputs are there")
                records += segment_inputs(folder, dead_doc_ids(m.tombstones, ref.id))
            except OSError as e:
                raise CorruptRegistryError(f"{e}; {name}@{version} is damaged: promote another version "
                                           f"(`ragline index promote VERSION --index {name} --alias ALIAS`) or "
                                           f"rebuild it (`ragline index restore {version} --index {name}`)") from e
        records.sort(key=lambda r: r["uri"])
        with _LOCKS_GUARD:
            if len(_INPUTS_CACHE) >= 8:
                _INPUTS_CACHE.pop(next(iter(_INPUTS_CACHE)))
            _INPUTS_CACHE[key] = records
        return list(records)

    # ---------- segments ----------
    def segments_dir(self, name: str) -> Path:
        """``<root>/<name>/segments`` (may not exist)."""
        return self._inside(self.index_dir(name) / SEGMENTS_DIR)

    def segment_dir(self, name: str, seg: str) -> Path:
        """Folder of one segment, checked to stay inside the root.

        Raises:
            CorruptRegistryError: ``seg`` is not a segment id (32 hex digits).
            OutsideRootError: it resolves outside the root (a symlink).
        """
        if not isinstance(seg, str) or not SEGMENT_ID_RE.match(seg):
            raise CorruptRegistryError(f"{_shown(seg)} is not a segment id (32 hex digits)")
        return self._inside(self.segments_dir(name) / seg)

    def segments(self, name: str, version: str) -> list[SegmentRef]:
        """The segments a version lists, in search order.

        Raises:
            RegistryError, CorruptRegistryError: as :meth:`manifest`.
        """
        return [SegmentRef.from_dict(d) for d in self.manifest(name, version).segments]

    def add_segment(self, name: str, write: Callable[[Path], None], hold: SegmentHold | None = None) -> SegmentRef:
        """Write a segment and move it, complete and fsynced, to ``segments/<id>/``.

        Args:
            name: index name.
            write: ``write(folder)`` writes the segment's files (see
                :func:`indexers.segments.write_segment_files`) into an empty staging folder.
            hold: held until a version lists it (:meth:`hold_segments`), from before the lock is released.

        Returns:
            The segment as a manifest lists it. When a segment with the same content exists
            already, it is reused (segments are content-addressed) and the staging copy removed.

        Raises:
            LockTimeoutError: another process holds the index.
        """
        import pyarrow.parquet as pq

        with self.lock(name):
            root = self.segments_dir(name)
            root.mkdir(parents=True, exist_ok=True)
            staging = root / f".staging-{os.getpid()}-{time.monotonic_ns()}"
            staging.mkdir()
            try:
                write(staging)
                listed = sorted(p for p in staging.iterdir() if p.is_file())
                files = {p.name: sha256_file(p) for p in listed}
                sizes = {p.name: p.stat().st_size for p in listed}
                for p in listed:
                    with open(p, "rb") as f:
                        os.fsync(f.fileno())
                fsync_dir(staging)
                crash_point("segment:staged")
                seg = segment_id(files)
                docs = pq.read_metadata(str(staging / "documents.parquet")).num_rows
                chunks = pq.read_metadata(str(staging / "chunks.parquet")).num_rows
                final = self.segment_dir(name, seg)
                if final.is_dir():
                    shutil.rmtree(staging)
                else:
                    os.rename(staging, final)
                    fsync_dir(root)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            if hold is not None:
                hold.add(seg)
            crash_point("segment:written")
            return SegmentRef(seg, files, sizes, docs, chunks)

    def hold_segments(self, name: str) -> "SegmentHold":
        """A hold on segments written before the version listing them is published (an
        ingest's flushed segments): gc keeps them while this process runs and the hold is not
        released; a dead process's hold is a leftover (its segments then are garbage).

        Returns:
            :class:`SegmentHold`; ``add`` each segment as it is written, ``release`` once the
            version is published (or the run failed).
        """
        return SegmentHold(self.segments_dir(name) / f".hold-{os.getpid()}-{time.monotonic_ns()}")

    def held_segments(self, name: str) -> set[str]:
        """Segment ids held by running processes (:meth:`hold_segments`)."""
        sdir = self.segments_dir(name)
        held: set[str] = set()
        for p in sdir.glob(".hold-*") if sdir.is_dir() else ():
            m = HOLD_RE.match(p.name)
            if m and _pid_alive(int(m.group(1))):
                try:
                    held.update(str(s) for s in json.loads(p.read_text(encoding="utf-8")))
                except (OSError, ValueError):
                    continue  # released (deleted) while read, or being replaced: its segments are listed then
        return held

    def live_table(self, name: str, version: str, table: str, columns: list[str] | None = None) -> "pa.Table":
        """The live rows of a version's ``documents`` or ``chunks`` table, segment after segment
        (tombstoned documents left out); all columns unless ``columns``.

        Raises:
            RegistryError, CorruptRegistryError: as :meth:`manifest`.
            OSError, SchemaMismatchError: a damaged table.
        """
        import pyarrow as pa

        from ragline.core.schemas import CHUNKS_SCHEMA, DOCUMENTS_SCHEMA
        from ragline.indexers.segments import CHUNKS_FILE, DOCUMENTS_FILE, dead_doc_ids, read_live_table

        fname, schema = {"documents": (DOCUMENTS_FILE, DOCUMENTS_SCHEMA), "chunks": (CHUNKS_FILE, CHUNKS_SCHEMA)}[table]
        m = self.manifest(name, version)
        parts = [read_live_table(self.segment_dir(name, r.id), fname, schema, dead_doc_ids(m.tombstones, r.id), columns)
                 for r in self.segments(name, version)]
        if not parts:
            empty = schema.empty_table()
            return empty.select(columns) if columns else empty
        return pa.concat_tables(parts)

    def version_files(self, name: str, version: str) -> dict[str, tuple[Path, str, int | None]]:
        """Every file a version is made of: ``{key: (path, sha256, size or None)}``.

        Keys are the per-version file names (``quarantine.parquet``, ...) and
        ``segments/<id>/<file>`` for the files of each listed segment. This is the one list
        the checks (:meth:`damaged_files`) and ``ragline index show`` read.

        Raises:
            RegistryError, CorruptRegistryError: as :meth:`manifest` (names, ids, paths checked).
        """
        m = self.manifest(name, version)
        out: dict[str, tuple[Path, str, int | None]] = {}
        for fname, digest in m.files.items():
            out[fname] = (self.file_path(name, version, fname), digest, m.file_sizes.get(fname))
        for ref in self.segments(name, version):
            folder = self.segment_dir(name, ref.id)
            for fname, digest in ref.files.items():
                out[f"{SEGMENTS_DIR}/{ref.id}/{fname}"] = (self._inside(folder / fname), digest, ref.file_sizes.get(fname))
        return out

    def _alias_path(self, name: str, alias: str) -> Path:
        return self._inside(self.index_dir(name) / "aliases" / f"{check_alias(alias)}.json")

    def _read_alias(self, name: str, alias: str) -> dict | None:
        path = self._alias_path(name, alias)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as e:
            raise CorruptRegistryError(
                f"{path}: alias file is not valid JSON ({e.msg}); repair with "
                f"`ragline index promote VERSION --index {name} --alias {alias}`"
            ) from e
        if not isinstance(data, dict) or not isinstance(data.get("version"), str):
            raise CorruptRegistryError(
                f"{path}: alias file has no version; repair with "
                f"`ragline index promote VERSION --index {name} --alias {alias}`"
            )
        history = data.get("history", [])
        versions = [data["version"]]
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise CorruptRegistryError(
                f"{path}: alias history is not a list of records; repair with "
                f"`ragline index promote VERSION --index {name} --alias {alias}`"
            )
        versions += [h.get("version") for h in history]
        for v in versions:
            if not isinstance(v, str) or not VERSION_RE.match(v):
                raise CorruptRegistryError(
                    f"{path}: alias names {_shown(v)}, which is not a version (vNNNN); repair with "
                    f"`ragline index promote VERSION --index {name} --alias {alias}`"
                )
        return data

    def aliases(self, name: str) -> dict[str, str]:
        """alias -> version for every alias of ``name``."""
        d = self.index_dir(name) / "aliases"
        if not d.is_dir():
            return {}
        out = {}
        for p in sorted(d.glob("*.json")):
            if not ALIAS_RE.match(p.stem) or VERSION_RE.match(p.stem) or len(p.stem) > MAX_NAME_CHARS:
                continue  # not an alias file the registry wrote (and not one it can name safely)
            data = self._read_alias(name, p.stem)
            if data is not None:
                out[p.stem] = data["version"]
        return out

    def alias_history(self, name: str, alias: str) -> list[dict]:
        """Earlier targets of an alias, oldest first: ``[{"version", "at"}]``."""
        data = self._read_alias(name, alias)
        return list(data.get("history", [])) if data else []

    def resolve(self, ref: str | IndexRef) -> tuple[str, str]:
        """Resolve ``NAME[@ALIAS|@VERSION]`` to ``(name, version)``.

        Raises:
            RegistryError: the index, alias or version does not exist.
            CorruptRegistryError: the alias names a version that is missing or damaged.
        """
        r = IndexRef.parse(ref) if isinstance(ref, str) else ref
        if not self.index_dir(r.name).is_dir():
            known = ", ".join(self.names()) or "none"
            raise IndexNotFound(f"no index named {r.name!r} under {self.root}/ (indexes: {known}); run `ragline ingest` first")
        if VERSION_RE.match(r.selector):
            self.manifest(r.name, r.selector)
            return r.name, r.selector
        data = self._read_alias(r.name, r.selector)
        if data is None:
            known = ", ".join(self.aliases(r.name)) or "none"
            raise AliasNotFound(f"index {r.name!r} has no alias {r.selector!r} (aliases: {known})")
        version = data["version"]
        if not (self.version_dir(r.name, version) / MANIFEST_FILE).exists():
            raise CorruptRegistryError(
                f"{self._alias_path(r.name, r.selector)}: alias {r.selector!r} names missing version "
                f"{version!r}; repair with `ragline index promote VERSION --index {r.name} --alias {r.selector}`"
            )
        return r.name, version

    # ---------- writing ----------
    @contextmanager
    def lock(self, name: str, timeout_s: float | None = None) -> Iterator[None]:
        """Hold the publish lock of ``name`` (one publisher per index at a time).

        Re-entrant within a process (a refresh holds it across planning and publishing),
        exclusive between processes; the kernel releases it when the holder dies.

        Raises:
            LockTimeoutError: another publish held the lock for ``timeout_s`` seconds.
        """
        d = self.index_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        timeout_s = self.lock_timeout_s if timeout_s is None else timeout_s
        path = str((d / ".lock").resolve())
        with _LOCKS_GUARD:
            lock = _LOCKS.get(path)
            if lock is None:
                lock = _LOCKS[path] = FileLock(path, thread_local=False)
        try:
            lock.acquire(timeout=timeout_s)
        except Timeout as e:
            raise LockTimeoutError(
                f"index {name!r} is locked by another refresh, publish or gc (lock file {path}; waited "
                f"{timeout_s:g} s = index.lock_timeout_s); try again when it finishes, or raise the timeout"
            ) from e
        try:
            yield
        finally:
            lock.release()

    def next_version(self, name: str) -> str:
        """The version id after the highest existing one (staging folders count too)."""
        d = self.index_dir(name)
        nums = [0]
        if d.is_dir():
            for p in d.iterdir():
                m = VERSION_RE.match(p.name) or re.match(r"^\.staging-v(\d+)-", p.name)
                if m:
                    nums.append(int(m.group(1)))
        return f"v{max(nums) + 1:04d}"

    def alias_record(self, name: str, alias: str) -> dict | None:
        """The alias file's content (``{"alias", "version", "updated_at", "meta", "history"}``) or None.

        Raises:
            CorruptRegistryError: the alias file is damaged.
        """
        return self._read_alias(name, alias)

    def _write_alias(self, name: str, alias: str, record: dict) -> None:
        path = self._alias_path(name, alias)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record, before_replace=lambda: crash_point("alias:tmp-written"))

    def set_alias(self, name: str, alias: str, version: str, meta: dict[str, Any] | None = None) -> AliasMove:
        """Point ``alias`` at ``version`` atomically, appending the old target to its history.

        A damaged alias file is replaced (this is the repair path the registry's error
        messages name); its history is lost and the new record says so under ``repaired``.

        Args:
            name: index name.
            alias: alias name (letters, digits, ``_``, ``-``; not ``vNNNN``).
            version: the version to point at; must exist with a readable manifest.
            meta: recorded with the move (e.g. the promotion gate's evaluation).

        Returns:
            The move made.

        Raises:
            InvalidReference: bad alias name or version (a ``ValueError`` too).
            RegistryError: no such version.
            CorruptRegistryError: the version's manifest is damaged.
        """
        check_alias(alias)
        with self.lock(name):
            self.manifest(name, version)
            repaired = None
            try:
                old = self._read_alias(name, alias)
            except CorruptRegistryError as e:
                old, repaired = None, str(e)
            history = list(old.get("history", [])) if old else []
            if old and old["version"] == version:
                return AliasMove(alias, version, version)
            if old:
                history.append({"version": old["version"], "at": old.get("updated_at"), "meta": old.get("meta")})
            record: dict[str, Any] = {"alias": alias, "version": version, "updated_at": _now(),
                                      "meta": dict(meta or {}), "history": history}
            if repaired:
                record["repaired"] = repaired
            self._write_alias(name, alias, record)
            return AliasMove(alias, old["version"] if old else None, version)

    def rollback_alias(self, name: str, alias: str) -> AliasMove:
        """Move ``alias`` back to the version it pointed at before its last move (undo).

        The history entry is consumed, so a second rollback goes one step further back.

        Raises:
            RegistryError: the alias does not exist or has no earlier target.
            CorruptRegistryError: the alias file is damaged, or the earlier target was deleted.
        """
        with self.lock(name):
            old = self._read_alias(name, alias)
            if old is None:
                known = ", ".join(self.aliases(name)) or "none"
                raise RegistryError(f"index {name!r} has no alias {alias!r} (aliases: {known})")
            history = list(old.get("history", []))
            if not history:
                raise RegistryError(
                    f"alias {name}@{alias} has no earlier target to roll back to (it points at "
                    f"{old['version']}); move it with `ragline index promote VERSION --index {name} --alias {alias}`"
                )
            prev = history.pop()
            target = prev["version"]
            if not (self.version_dir(name, target) / MANIFEST_FILE).exists():
                raise CorruptRegistryError(
                    f"{self._alias_path(name, alias)}: earlier target {target!r} of alias {alias!r} no longer "
                    f"exists; promote an existing version with `ragline index promote VERSION --index {name} "
                    f"--alias {alias}` (versions: {', '.join(self.versions(name)) or 'none'})"
                )
            self.manifest(name, target)
            rolled = list(old.get("rolled_back", []))
            rolled.append({"version": old["version"], "at": _now()})
            self._write_alias(name, alias, {"alias": alias, "version": target, "updated_at": _now(),
                                            "meta": prev.get("meta") or {}, "history": history,
                                            "rolled_back": rolled})
            return AliasMove(alias, old["version"], target)

    def publish(
        self,
        name: str,
        write: Callable[[Path, str], Manifest],
        aliases: tuple[str, ...] = (DEFAULT_ALIAS,),
        lock_timeout_s: float = 600.0,
    ) -> Manifest:
        """Publish a new version atomically and move ``aliases`` to it.

        Args:
            name: index name.
            write: ``write(staging_dir, version) -> Manifest`` writes every data file into
                ``staging_dir`` and returns the manifest (without ``files``); this method adds
                the files' sha256s, writes ``manifest.json``, fsyncs and renames.
            aliases: aliases to move once the version is in place.

        Returns:
            The manifest as written.
        """
        with self.lock(name, lock_timeout_s):
            version = self.next_version(name)
            staging = self.index_dir(name) / f".staging-{version}-{os.getpid()}"
            staging.mkdir(parents=True)
            try:
                manifest = write(staging, version)
                listed = sorted(p for p in staging.iterdir() if p.is_file())
                files = {p.name: sha256_file(p) for p in listed}
                sizes = {p.name: p.stat().st_size for p in listed}
                crash_point("publish:staging-written")
                manifest = Manifest.from_dict({**manifest.to_dict(), "version": version, "files": files,
                                               "file_sizes": sizes})
                # compact: a refresh's disk is its change, and the manifest is a fixed share of it
                # (8.4 -> 6.2 KB; `ragline index show` summarizes it for people, `python -m json.tool` indents it)
                write_json_atomic(staging / MANIFEST_FILE, manifest.to_dict(), compact=True)
                for p in staging.iterdir():
                    with open(p, "rb") as f:
                        os.fsync(f.fileno())
                fsync_dir(staging)
                crash_point("publish:manifest-written")
                os.rename(staging, self.version_dir(name, version))
                fsync_dir(self.index_dir(name))
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            crash_point("publish:renamed")
            for alias in aliases:
                self.set_alias(name, alias, version)
            crash_point("publish:aliased")
            return manifest

    def damaged_files(self, name: str, version: str, mode: str | None = None) -> dict[str, str]:
        """Files of a version that differ from its manifest: ``{file name: what is wrong}``.

        Args:
            name, version: the version.
            mode: ``sha256`` (size, then content hash of every file) or ``size`` (size only,
                for very large indexes); default: this registry's ``verify`` mode
                (``index.verify`` in params).

        Returns:
            Empty when every file the manifest lists is present, a regular file, of the
            recorded size and (``sha256``) of the recorded hash.

        Raises:
            RegistryError, CorruptRegistryError: as :meth:`manifest`.
        """
        mode = mode or self.verify_mode
        if mode not in VERIFY_MODES:
            raise ConfigError(f"index.verify {mode!r}: use one of {', '.join(VERIFY_MODES)}")
        bad: dict[str, str] = {}
        for fname, (p, digest, want) in self.version_files(name, version).items():
            try:
                st = p.lstat()
            except FileNotFoundError:
                bad[fname] = "missing"
                continue
            if not stat.S_ISREG(st.st_mode):
                bad[fname] = "not a regular file"
                continue
            if want is not None and st.st_size != want:
                bad[fname] = f"{st.st_size} bytes, the manifest says {want}"
            elif mode == "sha256" and sha256_file(p) != digest:
                bad[fname] = "sha256 differs from the manifest"
        return bad

    def verify(self, name: str, version: str, mode: str = "sha256") -> list[str]:
        """Names of the files of a version that differ from the manifest (empty when intact)."""
        return sorted(self.damaged_files(name, version, mode))

    def check_files(self, name: str, version: str, mode: str | None = None) -> Manifest:
        """Refuse to serve a damaged version: the check :meth:`PublishedIndex.open` makes.

        Args:
            mode: ``sha256`` | ``size``; default: this registry's ``verify`` mode.

        Returns:
            The version's manifest.

        Raises:
            CorruptRegistryError: a file is missing, truncated or altered (one line naming the
                first such file and the repair).
        """
        bad = self.damaged_files(name, version, mode)
        if bad:
            raise self.damage_error(name, version, bad)
        return self.manifest(name, version)

    def damage_error(self, name: str, version: str, bad: dict[str, str]) -> CorruptRegistryError:
        """The one-line error for the damaged files ``bad`` (from :meth:`damaged_files`) of a version."""
        fname, why = sorted(bad.items())[0]
        more = f" (and {len(bad) - 1} more file(s))" if len(bad) > 1 else ""
        where = self.index_dir(name) / fname if fname.startswith(f"{SEGMENTS_DIR}/") else self.version_dir(name, version) / fname
        return CorruptRegistryError(
            f"{where}: {why}{more}; {name}@{version} is damaged and is not "
            f"served: promote another version (`ragline index promote VERSION --index {name} --alias ALIAS`) "
            f"or rebuild it (`ragline index restore {version} --index {name}`)"
        )

    # ---------- maintenance ----------
    def leftovers(self, name: str) -> list[Path]:
        """Staging/trash folders, dead holds, and alias and hold temp files left by processes that
        no longer run.

        A ``vNNNN`` folder without a valid manifest is never a leftover: it may be what an
        alias points at (see :meth:`damaged_versions`).
        """
        d = self.index_dir(name)
        found: list[Path] = []
        if d.is_dir():
            for p in sorted(d.iterdir()):
                m = LEFTOVER_RE.match(p.name)
                if m and not _pid_alive(int(m.group(3))):
                    found.append(p)
        sdir = d / SEGMENTS_DIR
        if sdir.is_dir():
            for p in sorted(sdir.iterdir()):
                m = SEGMENT_LEFTOVER_RE.match(p.name)
                if m and not _pid_alive(int(m.group(2))):
                    found.append(p)
        for folder in (d / "aliases", sdir):  # temporaries of alias and hold files (core.io.temp_path)
            for p in sorted(folder.glob(".*.tmp")) if folder.is_dir() else ():
                pid = p.name.rsplit(".", 2)[-2]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    found.append(p)
        return found

    def damaged_versions(self, name: str) -> dict[str, str]:
        """``vNNNN`` folders whose manifest is missing or invalid: ``{version: the error}``.

        gc never deletes them (nothing proves they are garbage); the error says how to repair.
        """
        d = self.index_dir(name)
        out: dict[str, str] = {}
        if not d.is_dir():
            return out
        for p in sorted(d.iterdir(), key=lambda p: p.name):
            if not (p.is_dir() and VERSION_RE.match(p.name)):
                continue
            try:
                self.manifest(name, p.name)
            except (CorruptRegistryError, RegistryError) as e:
                out[p.name] = str(e)
        return out

    def gc(self, name: str, keep: int, dry_run: bool = False) -> GcReport:
        """Delete what is provably garbage: old complete versions no alias needs, and leftovers
        of dead processes.

        Kept: the ``keep`` newest versions, every version an alias points at, and each alias's
        rollback target (the last entry of its history). A version folder without a valid
        manifest is never deleted: it is reported under ``damaged`` with the repair. A version
        is renamed to ``.trash-*`` before it is deleted, so a crash never leaves a listed,
        partial version.

        Args:
            name: index name.
            keep: number of newest versions to keep regardless of aliases (>= 0).
            dry_run: report only.

        Raises:
            ValueError: ``keep`` is negative.
            RegistryError: no such index.
            CorruptRegistryError: an alias file is damaged (gc refuses to guess what it protects).
            LockTimeoutError: another process holds the index.
        """
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        if not self.index_dir(name).is_dir():
            raise RegistryError(f"no index named {name!r} under {self.root}/ (indexes: {', '.join(self.names()) or 'none'})")
        with self.lock(name):
            damaged = self.damaged_versions(name)
            versions = [v for v in self.versions(name) if v not in damaged]
            kept: dict[str, list[str]] = {}
            for v in versions[len(versions) - keep:] if keep else []:
                kept.setdefault(v, []).append("newest")
            needed_by: dict[str, list[str]] = {}
            for alias, target in self.aliases(name).items():
                needed_by.setdefault(target, []).append(f"alias {alias}")
                history = self.alias_history(name, alias)
                if history:
                    needed_by.setdefault(history[-1]["version"], []).append(f"rollback target of {alias}")
            for v, why in needed_by.items():
                if v not in damaged:
                    kept.setdefault(v, []).extend(why)
            deleted = [v for v in versions if v not in kept]
            for v, message in damaged.items():
                users = ", ".join(needed_by.get(v, [])) or "no alias"
                repair = (f"point each alias on it elsewhere with `ragline index promote VERSION --index {name} "
                          f"--alias ALIAS` or rebuild it with `ragline index restore {v} --index {name}`, then delete "
                          f"{self.version_dir(name, v)} by hand") if v in needed_by else \
                    f"delete {self.version_dir(name, v)} by hand once you have checked it"
                damaged[v] = f"needed by {users}; not deleted: {message.split('; ')[0]}; {repair}"
            leftovers = self.leftovers(name)
            listed = {r.id for v in versions if v not in deleted for r in self.segments(name, v)}
            sdir = self.segments_dir(name)
            stored = sorted(p.name for p in sdir.iterdir() if SEGMENT_ID_RE.match(p.name)) if sdir.is_dir() else []
            # a damaged version's manifest cannot say which segments it lists: keep them all then
            listed |= self.held_segments(name)  # written by a running ingest, listed once it publishes
            seg_deleted = [] if damaged else [s for s in stored if s not in listed]
            if not dry_run:
                for v in deleted:
                    trash = self.index_dir(name) / f".trash-{v}-{os.getpid()}"
                    os.rename(self.version_dir(name, v), trash)
                    fsync_dir(self.index_dir(name))
                    shutil.rmtree(trash)
                crash_point("gc:versions-deleted")
                for seg in seg_deleted:  # only after the versions listing them are gone
                    trash = sdir / f".trash-{seg}-{os.getpid()}-0"
                    os.rename(self.segment_dir(name, seg), trash)
                    fsync_dir(sdir)
                    shutil.rmtree(trash)
                for p in leftovers:
                    if p.is_dir():
                        shutil.rmtree(p)
                    else:
                        p.unlink(missing_ok=True)
            return GcReport(deleted, {v: kept[v] for v in versions if v in kept},
                            [p.name for p in leftovers], dry_run, damaged, seg_deleted,
                            len([s for s in stored if s not in seg_deleted]))

    def diff_versions(self, name: str, a: str, b: str) -> VersionDiff:
        """Compare two versions: documents added/removed/changed, chunk counts, settings.

        Args:
            name: index name.
            a, b: versions (or aliases) to compare; ``b`` is the newer side.

        Raises:
            RegistryError: unknown version or alias.
            CorruptRegistryError: a manifest is damaged.
        """
        va, vb = self.resolve(IndexRef(name, a))[1], self.resolve(IndexRef(name, b))[1]
        ma, mb = self.manifest(name, va), self.manifest(name, vb)
        ia = {r["uri"]: r["sha256"] for r in ma.inputs}
        ib = {r["uri"]: r["sha256"] for r in mb.inputs}
        added = sorted(set(ib) - set(ia))
        removed = sorted(set(ia) - set(ib))
        changed = sorted(u for u in set(ia) & set(ib) if ia[u] != ib[u])

        def chunk_cols(version: str) -> tuple[list[str], list[str]]:
            t = self.live_table(name, version, "chunks", columns=["chunk_id", "uri"])
            return t.column("chunk_id").to_pylist(), t.column("uri").to_pylist()

        ids_a, uris_a = chunk_cols(va)
        ids_b, uris_b = chunk_cols(vb)
        count_a, count_b = Counter(uris_a), Counter(uris_b)
        doc_chunks = {u: [count_a[u], count_b[u]] for u in sorted(added + removed + changed)}
        return VersionDiff(
            name=name, a=va, b=vb, added=added, removed=removed, changed=changed,
            unchanged=len(set(ia) & set(ib)) - len(changed),
            chunks_a=len(ids_a), chunks_b=len(ids_b),
            chunks_added=len(set(ids_b) - set(ids_a)), chunks_removed=len(set(ids_a) - set(ids_b)),
            doc_chunks=doc_chunks,
            params_changed=_flat_diff(ma.params, mb.params),
            chunker_changed=ma.chunker != mb.chunker,
            embedding_changed=ma.embedding != mb.embedding,
        )
