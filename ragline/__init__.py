"""ragline: ingestion, incremental indexing, an index registry and a retrieval-grounded flow runner for RAG."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _dist_version

try:
    __version__ = _dist_version("ragline")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
