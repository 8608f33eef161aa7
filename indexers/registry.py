"""The index registry: immutable versions, atomically moved aliases, and publishing.

Layout under the registry root::

    <root>/<name>/<version>/            one immutable version (manifest.json + tables + index)
    <root>/<name>/.staging-<version>-<pid>  a version being written (never listed)
    <root>/<name>/.trash-<version>-<pid>    a version being deleted by gc (never listed)
    <root>/<name>/aliases/<alias>.json  {"version", "updated_at", "meta", "history": [...]}
    <root>/<name>/.lock                 publish lock (filelock; also held by refresh and gc)

Publishing writes every file into the staging folder, fsyncs it, renames it to
``<version>`` and only then replaces the alias file (``os.replace``), so a reader never sees
a half-written version and a crash leaves the previous alias valid. ``gc`` renames a
version to ``.trash-*`` before deleting it, so a crash mid-delete never leaves a listed,
incomplete version. Leftover staging and trash folders of dead processes are removed by
``gc``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

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

VERSION_RE = re.compile(r"^v(\d{4,})$")
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
LEFTOVER_RE = re.compile(r"^\.(staging|trash)-(v\d{4,})-(\d+)$")
DEFAULT_ALIAS = "latest"

# One FileLock object per lock file and process, shared by threads: the lock is re-entrant
# within a process (a refresh holds it and then publishes), exclusive between processes.
_LOCKS: dict[str, FileLock] = {}
_LOCKS_GUARD = threading.Lock()


from ragline.core.errors import (  # noqa: E402  (re-exported: callers import them from here too)
    AliasNotFound,
    IndexNotFound,
    LockTimeoutError,
    RegistryError,
    VersionNotFound,
)


@dataclass(frozen=True, slots=True)
class IndexRef:
    """A parsed ``NAME[@ALIAS|@VERSION]`` reference."""

    name: str
    selector: str = DEFAULT_ALIAS

    @classmethod
    def parse(cls, ref: str) -> "IndexRef":
        """Parse ``"docs"``, ``"docs@prod"`` or ``"docs@v0003"``."""
        name, _, sel = ref.partition("@")
        if not name:
            raise RegistryError(f"bad index reference {ref!r}; use NAME, NAME@ALIAS or NAME@VERSION")
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


@dataclass(frozen=True)
class GcReport:
    """What :meth:`IndexRegistry.gc` deleted and kept.

    Attributes:
        deleted: versions deleted (or that would be, with ``dry_run``), oldest first.
        kept: version -> reasons it was kept (``newest``, ``alias prod``, ``rollback target of prod``).
        leftovers: staging/trash folders and alias temp files of dead processes that were removed.
        dry_run: nothing was deleted.
    """

    deleted: list[str]
    kept: dict[str, list[str]]
    leftovers: list[str]
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"deleted": self.deleted, "kept": self.kept, "leftovers": self.leftovers, "dry_run": self.dry_run}


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

    def __init__(self, root: str | Path, lock_timeout_s: float = 600.0) -> None:
        self.root = Path(root)
        self.lock_timeout_s = lock_timeout_s

    # ---------- reading ----------
    def names(self) -> list[str]:
        """Index names that have at least one folder under the root."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def index_dir(self, name: str) -> Path:
        """Folder of an index (may not exist)."""
        return self.root / name

    def versions(self, name: str) -> list[str]:
        """Complete versions of ``name`` (folders named ``vNNNN`` with a manifest), oldest first."""
        d = self.index_dir(name)
        if not d.is_dir():
            return []
        found = [p.name for p in d.iterdir() if p.is_dir() and VERSION_RE.match(p.name)
                 and (p / MANIFEST_FILE).exists()]
        return sorted(found, key=lambda v: int(v[1:]))

    def version_dir(self, name: str, version: str) -> Path:
        """Folder of one version (may not exist)."""
        return self.index_dir(name) / version

    def manifest(self, name: str, version: str) -> Manifest:
        """The manifest of a version.

        Raises:
            RegistryError: no such version.
            CorruptRegistryError: the manifest is damaged.
        """
        folder = self.version_dir(name, version)
        if not folder.is_dir():
            raise VersionNotFound(
                f"index {name!r} has no version {version!r}; versions: {', '.join(self.versions(name)) or 'none'}"
            )
        return read_manifest(folder)

    def _alias_path(self, name: str, alias: str) -> Path:
        return self.index_dir(name) / "aliases" / f"{alias}.json"

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
        return data

    def aliases(self, name: str) -> dict[str, str]:
        """alias -> version for every alias of ``name``."""
        d = self.index_dir(name) / "aliases"
        if not d.is_dir():
            return {}
        out = {}
        for p in sorted(d.glob("*.json")):
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
            ValueError: bad alias name.
            RegistryError: no such version.
            CorruptRegistryError: the version's manifest is damaged.
        """
        if not ALIAS_RE.match(alias) or VERSION_RE.match(alias):
            raise ValueError(f"bad alias name {alias!r}: letters, digits, '_' and '-', not vNNNN")
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
                files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
                crash_point("publish:staging-written")
                manifest = Manifest.from_dict({**manifest.to_dict(), "version": version, "files": files})
                write_json_atomic(staging / MANIFEST_FILE, manifest.to_dict())
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

    def verify(self, name: str, version: str) -> list[str]:
        """Files of a version whose sha256 differs from the manifest (empty when intact)."""
        m = self.manifest(name, version)
        folder = self.version_dir(name, version)
        bad = []
        for fname, digest in m.files.items():
            p = folder / fname
            if not p.exists() or sha256_file(p) != digest:
                bad.append(fname)
        return bad

    # ---------- maintenance ----------
    def leftovers(self, name: str) -> list[Path]:
        """Staging/trash folders and alias temp files left by processes that no longer run, and
        ``vNNNN`` folders without a manifest (never listed as versions)."""
        d = self.index_dir(name)
        found: list[Path] = []
        if d.is_dir():
            for p in sorted(d.iterdir()):
                m = LEFTOVER_RE.match(p.name)
                if m and not _pid_alive(int(m.group(3))):
                    found.append(p)
                elif p.is_dir() and VERSION_RE.match(p.name) and not (p / MANIFEST_FILE).exists():
                    found.append(p)
        adir = d / "aliases"
        if adir.is_dir():
            for p in sorted(adir.glob(".*.tmp")):
                pid = p.name.rsplit(".", 2)[-2]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    found.append(p)
        return found

    def gc(self, name: str, keep: int, dry_run: bool = False) -> GcReport:
        """Delete old versions no alias needs, and leftovers of dead processes.

        Kept: the ``keep`` newest versions, every version an alias points at, and each alias's
        rollback target (the last entry of its history). A version is renamed to
        ``.trash-*`` before it is deleted, so a crash never leaves a listed, partial version.

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
            versions = self.versions(name)
            kept: dict[str, list[str]] = {}
            for v in versions[len(versions) - keep:] if keep else []:
                kept.setdefault(v, []).append("newest")
            for alias, target in self.aliases(name).items():
                kept.setdefault(target, []).append(f"alias {alias}")
                history = self.alias_history(name, alias)
                if history:
                    kept.setdefault(history[-1]["version"], []).append(f"rollback target of {alias}")
            deleted = [v for v in versions if v not in kept]
            leftovers = self.leftovers(name)
            if not dry_run:
                for v in deleted:
                    trash = self.index_dir(name) / f".trash-{v}-{os.getpid()}"
                    os.rename(self.version_dir(name, v), trash)
                    fsync_dir(self.index_dir(name))
                    shutil.rmtree(trash)
                for p in leftovers:
                    if p.is_dir():
                        shutil.rmtree(p)
                    else:
                        p.unlink(missing_ok=True)
            return GcReport(deleted, {v: kept[v] for v in versions if v in kept},
                            [p.name for p in leftovers], dry_run)

    def diff_versions(self, name: str, a: str, b: str) -> VersionDiff:
        """Compare two versions: documents added/removed/changed, chunk counts, settings.

        Args:
            name: index name.
            a, b: versions (or aliases) to compare; ``b`` is the newer side.

        Raises:
            RegistryError: unknown version or alias.
            CorruptRegistryError: a manifest is damaged.
        """
        import pyarrow.parquet as pq

        va, vb = self.resolve(IndexRef(name, a))[1], self.resolve(IndexRef(name, b))[1]
        ma, mb = self.manifest(name, va), self.manifest(name, vb)
        ia = {r["uri"]: r["sha256"] for r in ma.inputs}
        ib = {r["uri"]: r["sha256"] for r in mb.inputs}
        added = sorted(set(ib) - set(ia))
        removed = sorted(set(ia) - set(ib))
        changed = sorted(u for u in set(ia) & set(ib) if ia[u] != ib[u])

        def chunk_cols(version: str) -> tuple[list[str], list[str]]:
            t = pq.read_table(str(self.version_dir(name, version) / "chunks.parquet"), columns=["chunk_id", "uri"])
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
