"""Atomic file writes: a temporary file beside the target, fsync, ``os.replace``, fsync of the folder.

A reader sees the old file or the new one, never half of one; after a crash the old file is
intact (faiss ``contrib/ondisk.py`` does the same).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable


def fsync_dir(path: str | Path) -> None:
    """fsync a directory so a rename inside it is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: str | Path) -> Path:
    """The hidden temporary name beside ``path`` this process writes before replacing it."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}.tmp")


def write_bytes_atomic(path: str | Path, data: bytes, *, before_replace: Callable[[], None] | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, ``os.replace``, fsync of the folder).

    Args:
        path: the target file; its folder must exist.
        data: the bytes to write.
        before_replace: called after the temp file is durable and before it replaces the
            target (fault injection in tests).

    Raises:
        OSError: the folder is not writable or the disk is full (the target is untouched).
    """
    p = Path(path)
    tmp = temp_path(p)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(p.parent)


def write_json_atomic(path: str | Path, data: Any, *, before_replace: Callable[[], None] | None = None,
                      compact: bool = False) -> None:
    """Write ``data`` as indented, sorted-key JSON (UTF-8, trailing newline) atomically; with
    ``compact``, on one line without spaces (a file written once per version, read by programs).

    Raises:
        OSError: as :func:`write_bytes_atomic`.
        TypeError: ``data`` is not JSON-serializable.
    """
    layout: dict[str, Any] = {"separators": (",", ":")} if compact else {"indent": 2}
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, **layout) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"), before_replace=before_replace)
