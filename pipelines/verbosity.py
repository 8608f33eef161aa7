"""How much ragline prints: log levels of Prefect and other libraries, set before they load.

By default a command shows its own results, warnings and errors, and no INFO/DEBUG lines of
the libraries it drives (Prefect's task-state lines, bm25s's "Building index", HTTP clients).
``ragline -v`` shows their INFO lines, ``-vv`` DEBUG, ``-q`` errors only.
"""

from __future__ import annotations

import logging
import os
import sys

#: Loggers of libraries whose INFO/DEBUG lines are noise in a command's output.
NOISY_LOGGERS = ("prefect", "bm25s", "httpx", "httpcore", "urllib3", "uvicorn", "distributed", "sentence_transformers",
                 "transformers", "onnxruntime", "unstructured", "pdfminer", "faiss", "filelock", "asyncio", "docket")

#: Output level -> log level name.
LEVELS = {0: "ERROR", 1: "WARNING", 2: "INFO"}


class _MinLevel(logging.Filter):
    """Drops records below ``level``; a filter, not ``setLevel``, because some libraries
    (bm25s) set their own logger to DEBUG when imported, after we configured it."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


_FILTERS: dict[str, _MinLevel] = {}


def level_name(level: int) -> str:
    """The log level name for an output level (0 quiet, 1 default, 2 verbose, 3+ debug)."""
    return LEVELS.get(level, "DEBUG")


def quiet_libraries(level: int = 1, override_env: bool = False) -> None:
    """Show library log records at or above the output ``level``'s log level only.

    Sets ``PREFECT_LOGGING_LEVEL`` (read when Prefect is imported; a value the user exported
    is kept unless ``override_env``), and a level filter plus the level on every logger of
    :data:`NOISY_LOGGERS`, including those Prefect has already created.

    Args:
        level: 0 quiet (errors), 1 default (warnings), 2 verbose (INFO), 3+ debug.
        override_env: replace a ``PREFECT_LOGGING_LEVEL`` already set (the CLI's -q/-v).
    """
    name = level_name(level)
    numeric = logging.getLevelName(name)
    if override_env:
        os.environ["PREFECT_LOGGING_LEVEL"] = name
    else:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", name)
    names = set(NOISY_LOGGERS)
    if "prefect" in sys.modules:
        names |= {n for n in logging.root.manager.loggerDict if n.startswith("prefect")}
    for logger_name in names:
        logger = logging.getLogger(logger_name)
        logger.setLevel(numeric)
        f = _FILTERS.get(logger_name)
        if f is None:
            f = _FILTERS[logger_name] = _MinLevel(numeric)
            logger.addFilter(f)
        f.level = numeric
