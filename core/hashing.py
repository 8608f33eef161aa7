"""Content hashes: the one place ragline computes sha256 of files, bytes, text and JSON values
(and remembers the hashes of unchanged local files: :class:`FileHashes`)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

BLOCK_BYTES = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """sha256 (64 hex chars) of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """sha256 (64 hex chars) of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | Path, block_bytes: int = BLOCK_BYTES) -> str:
    """sha256 (64 hex chars) of a file's bytes, read in ``block_bytes`` blocks (1 MiB).

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(block_bytes):
            h.update(block)
    return h.hexdigest()


def json_sha256(value: Any) -> str:
    """sha256 (hex) of the sorted-key JSON of a JSON-ready value (params, configs)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def doc_id_for(uri: str) -> str:
    """Document id: the first 32 hex chars of sha256 of the source URI (stable across runs)."""
    return sha256_text(uri)[:32]


#: A remembered file hash is reused only when the file's last change (mtime and ctime) lies at
#: least this long before the moment it was hashed; a file changed within the same timestamp
#: tick as that hash ("racily clean", in git's terms) is hashed again. 2 s covers coarse
#: timestamps (FAT: 2 s; ext4, XFS, tmpfs: the kernel tick).
RACY_NS = 2_000_000_000


class FileHashes:
    """sha256 of local files, remembered by their ``stat`` so that an unchanged file is not read.

    The quick check of git's index and DVC's state database: a file whose device, inode, size,
    mtime and ctime (nanoseconds) equal those recorded when it was hashed, and whose last
    change came at least :data:`RACY_NS` before that hash, keeps the recorded sha256. ctime
    cannot be set back by a program (``touch -m`` and ``os.utime`` set mtime, and move ctime
    to now), so rewriting a file with the same size and an old mtime is still seen. Anything
    else, an unreadable or damaged state file included, hashes the file.

    The state is a Parquet table (``uri``, ``dev``, ``ino``, ``size``, ``mtime_ns``,
    ``ctime_ns``, ``hashed_ns``, ``sha256``) written atomically by :meth:`save`, holding the
    files hashed or checked since it was opened.

    Attributes:
        reused: files whose recorded sha256 was reused.
        hashed: files read and hashed.
    """

    _FIELDS = ("dev", "ino", "size", "mtime_ns", "ctime_ns", "hashed_ns", "sha256")

    def __init__(self, path: str | Path | None) -> None:
        """``path``: the state file (``None``: remember nothing, hash every file)."""
        self.path = Path(path) if path is not None else None
        self._old: dict[str, tuple] = {}
        self._new: dict[str, tuple] = {}
        self.reused = self.hashed = 0
        if self.path is not None and self.path.is_file():
            try:
                import pyarrow.parquet as pq

                t = pq.read_table(self.path, columns=["uri", *self._FIELDS])
                cols = [t.column(c).to_pylist() for c in self._FIELDS]
                self._old = dict(zip(t.column("uri").to_pylist(), zip(*cols)))
            except Exception:  # noqa: BLE001 - a damaged state only costs hashing again
                self._old = {}

    def sha256(self, path: str | Path, uri: str) -> str:
        """sha256 (hex) of the file at ``path`` (known to the state as ``uri``).

        Raises:
            OSError: the file cannot be read.
        """
        st = os.stat(path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        old = self._old.get(uri)
        if old is not None and tuple(old[:5]) == key and max(key[3], key[4]) < old[5] - RACY_NS:
            self._new[uri] = old
            self.reused += 1
            return old[6]
        hashed_ns = time.time_ns()
        sha = sha256_file(path)
        self.hashed += 1
        after = os.stat(path)
        if (after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns) == key[1:]:  # not changed while read
            self._new[uri] = (*key, hashed_ns, sha)
        return sha

    def save(self) -> None:
        """Write the files seen since opening (removed files drop out) to the state file.

        Raises:
            OSError: the folder cannot be created or written.
        """
        if self.path is None or self._new == self._old:  # nothing changed: the state file stays as it is
            return
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        from ragline.core.io import write_bytes_atomic

        uris = sorted(self._new)
        rows = [self._new[u] for u in uris]
        cols = {"uri": pa.array(uris, pa.string())}
        for i, name in enumerate(self._FIELDS):
            cols[name] = pa.array([r[i] for r in rows], pa.string() if name == "sha256" else pa.int64())
        buf = io.BytesIO()
        pq.write_table(pa.table(cols), buf, compression="zstd")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.path, buf.getvalue())
