"""Derived model files (ONNX exports, int8 models, agreement records) cached under ``paths.cache``.

A derived artifact is one or more files that share a stem (``x.onnx``; ``x.xml`` + ``x.bin``)
plus a JSON sidecar ``x.json`` that records the artifact's *fingerprint* (what it was built
from: weights sha256, backend, quantization recipe, calibration set hash, library versions)
and the sha256 of every file. :func:`cached_artifact` returns the sidecar record when the
fingerprint matches and every file hashes to what the sidecar says; otherwise (missing,
truncated, overwritten, built from other weights or by another recipe) it builds the artifact
again, under a file lock so that concurrent first uses build it once, writing temporary files
that are renamed into place before the sidecar is written (atomically, last). A damaged file
is therefore never used: a reader either finds a sidecar whose hashes match, or rebuilds.

Source: the fingerprinted checkpoints of faiss ``contrib/ondisk.py``; file locks from filelock.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from ragline.core.hashing import sha256_file
from ragline.core.io import write_json_atomic


def sidecar_path(stem: Path) -> Path:
    """The JSON sidecar of the artifact whose files are ``stem`` + suffix."""
    return stem.with_name(stem.name + ".json")


def artifact_files(stem: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """``{suffix: path}`` of the artifact's files."""
    return {s: stem.with_name(stem.name + s) for s in suffixes}


def verified_record(stem: Path, fingerprint: dict[str, Any], suffixes: Sequence[str]) -> dict[str, Any] | None:
    """The sidecar record when it carries ``fingerprint`` and every file matches its sha256, else ``None``."""
    try:
        record = json.loads(sidecar_path(stem).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("fingerprint") != fingerprint:
        return None
    want = record.get("files")
    if not isinstance(want, dict) or set(want) != {p.name for p in artifact_files(stem, suffixes).values()}:
        return None
    for path in artifact_files(stem, suffixes).values():
        try:
            if sha256_file(path) != want[path.name]:
                return None
        except OSError:
            return None
    return record


def cached_artifact(stem: Path, fingerprint: dict[str, Any], suffixes: Sequence[str],
                    build: Callable[[dict[str, Path]], dict[str, Any]]) -> dict[str, Any]:
    """The verified sidecar record of an artifact, building it first when it is missing or damaged.

    Args:
        stem: path without suffix (``<cache>/onnx/all-MiniLM-L6-v2-53aa...-int8``).
        fingerprint: JSON-ready identity of what the artifact is built from; a sidecar with
            another fingerprint is rebuilt.
        suffixes: the artifact's files (``[".onnx"]``, ``[".xml", ".bin"]``, or ``[]`` for a
            record only, e.g. a measured agreement).
        build: writes every file to the temporary paths it is given (``{suffix: path}``, one
            shared temporary stem) and returns what the sidecar records besides the
            fingerprint and the file hashes.

    Returns:
        The sidecar: ``build``'s record plus ``fingerprint`` and ``files`` (``{name: sha256}``).

    Raises:
        OSError: the cache folder is not writable; whatever ``build`` raises (nothing is kept).
    """
    record = verified_record(stem, fingerprint, suffixes)
    if record is not None:
        return record
    from filelock import FileLock

    stem.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(stem) + ".lock"):
        record = verified_record(stem, fingerprint, suffixes)  # built by another process meanwhile
        if record is not None:
            return record
        tmp_stem = stem.with_name(f".{stem.name}.{os.getpid()}.tmp")
        tmp = artifact_files(tmp_stem, suffixes)
        try:
            built = build(tmp)
            files = {}
            for suffix, path in artifact_files(stem, suffixes).items():
                files[path.name] = sha256_file(tmp[suffix])
                os.replace(tmp[suffix], path)
            record = {**built, "fingerprint": fingerprint, "files": files}
            write_json_atomic(sidecar_path(stem), record)
        finally:
            for path in tmp.values():
                path.unlink(missing_ok=True)
    return json.loads(json.dumps(record))  # the same JSON types a later read gives
