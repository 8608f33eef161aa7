"""The index registry: immutable versions, atomically moved aliases, and publishing.

Layout under the registry root::

    <root>/<name>/<version>/            one immutable version (manifest.json + tables + index)
    <root>/<name>/.staging-<version>-*  a version being written (never listed)
    <root>/<name>/aliases/<alias>.json  {"version", "updated_at", "history": [...]}
    <root>/<name>/.lock                 publish lock (filelock)

Publishing writes every file into the staging folder, fsyncs it, renames it to
``<version>`` and only then replaces the alias file (``os.replace``), so a reader never sees
a half-written version and a crash leaves the previous alias valid.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from indexers.manifest import (
    MANIFEST_FILE,
    CorruptRegistryError,
    Manifest,
    fsync_dir,
    read_manifest,
    sha256_file,
    write_json_atomic,
)

VERSION_RE = re.compile(r"^v(\d{4,})$")
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
DEFAULT_ALIAS = "latest"


class RegistryError(LookupError):
    """An index, version or alias does not exist (the message says what does)."""


class LockTimeoutError(RuntimeError):
    """Another process holds the index's publish lock past the timeout."""


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


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class IndexRegistry:
    """Versions and aliases of the indexes under ``root``.

    Args:
        root: the registry folder (``index.root`` in params).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

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
            raise RegistryError(
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
            raise RegistryError(f"no index named {r.name!r} under {self.root}/ (indexes: {known}); run `ragline ingest` first")
        if VERSION_RE.match(r.selector):
            self.manifest(r.name, r.selector)
            return r.name, r.selector
        data = self._read_alias(r.name, r.selector)
        if data is None:
            known = ", ".join(self.aliases(r.name)) or "none"
            raise RegistryError(f"index {r.name!r} has no alias {r.selector!r} (aliases: {known})")
        version = data["version"]
        if not (self.version_dir(r.name, version) / MANIFEST_FILE).exists():
            raise CorruptRegistryError(
                f"{self._alias_path(r.name, r.selector)}: alias {r.selector!r} names missing version "
                f"{version!r}; repair with `ragline index promote VERSION --index {r.name} --alias {r.selector}`"
            )
        return r.name, version

    # ---------- writing ----------
    @contextmanager
    def lock(self, name: str, timeout_s: float = 600.0) -> Iterator[None]:
        """Hold the publish lock of ``name`` (one publisher per index at a time).

        Raises:
            LockTimeoutError: another publish held the lock for ``timeout_s`` seconds.
        """
        d = self.index_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(d / ".lock"), timeout=timeout_s)
        try:
            lock.acquire()
        except Timeout as e:
            raise LockTimeoutError(
                f"index {name!r} is locked by another publish (waited {timeout_s:g} s, "
                f"index.lock_timeout_s); try again when it finishes"
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

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` atomically, appending the old target to its history.

        Raises:
            ValueError: bad alias name.
            RegistryError: no such version.
        """
        if not ALIAS_RE.match(alias) or VERSION_RE.match(alias):
            raise ValueError(f"bad alias name {alias!r}: letters, digits, '_' and '-', not vNNNN")
        self.manifest(name, version)
        path = self._alias_path(name, alias)
        path.parent.mkdir(parents=True, exist_ok=True)
        old = self._read_alias(name, alias)
        history = list(old.get("history", [])) if old else []
        if old:
            history.append({"version": old["version"], "at": old.get("updated_at")})
        write_json_atomic(path, {"alias": alias, "version": version, "updated_at": _now(), "history": history})

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
                manifest = Manifest.from_dict({**manifest.to_dict(), "version": version, "files": files})
                write_json_atomic(staging / MANIFEST_FILE, manifest.to_dict())
                for p in staging.iterdir():
                    with open(p, "rb") as f:
                        os.fsync(f.fileno())
                fsync_dir(staging)
                os.rename(staging, self.version_dir(name, version))
                fsync_dir(self.index_dir(name))
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            for alias in aliases:
                self.set_alias(name, alias, version)
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
