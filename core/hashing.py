"""Content hashes: the one place ragline computes sha256 of files, bytes, text and JSON values."""

from __future__ import annotations

import hashlib
import json
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
