"""The error root of ragline and its named cases.

Every error a command can end with derives from :class:`RaglineError`, so a CLI or a notebook
catches one class; the message names the file, field or value and says what to do. Each
class also derives from the builtin it refines (``ValueError``, ``LookupError``,
``RuntimeError``), so callers that catch those keep working.
"""

from __future__ import annotations

import errno as _errno
import os as _os


class RaglineError(Exception):
    """Root of every ragline error that ends a command with one clear line."""


class ConfigError(RaglineError, ValueError):
    """A configuration value is invalid (names the file, the key and the allowed values)."""


class SchemaMismatchError(RaglineError, ValueError):
    """A table's schema is not the one this ragline version reads (names file and field)."""


class RegistryError(RaglineError, LookupError):
    """An index, version or alias does not exist, or a reference is malformed (the message says what does exist)."""


class IndexNotFound(RegistryError):
    """No index of that name under the index root."""


class AliasNotFound(RegistryError):
    """The index has no alias of that name."""


class VersionNotFound(RegistryError):
    """The index has no version of that id."""


class CorruptRegistryError(RaglineError, RuntimeError):
    """A registry file is missing, truncated or inconsistent (names the file and a repair)."""


class IndexCompatibilityError(RaglineError, RuntimeError):
    """A published index does not match the embedder in use (names both sides)."""


class LockTimeoutError(RaglineError, RuntimeError):
    """Another process holds the index's publish lock past the timeout."""


_OS_HINTS = {
    _errno.ENOSPC: "the disk is full: free space there and run the command again (a publish that failed left "
                   "the previous version and its aliases as they were)",
    _errno.EDQUOT: "the disk quota is exceeded: free space there and run the command again",
    _errno.EACCES: "permission denied: check the owner and mode of that file or folder",
    _errno.EPERM: "operation not permitted: check the owner and mode of that file or folder",
    _errno.EROFS: "the file system is read-only: write somewhere else (e.g. another index.root)",
    _errno.ENAMETOOLONG: "the file name is too long: use a shorter name or path",
    _errno.ENOENT: "no such file or folder: check the path",
    _errno.ENOTDIR: "a part of the path is not a folder: check the path",
    _errno.EISDIR: "a folder was found where a file was expected: check the path",
    _errno.EMFILE: "too many open files: raise the limit (ulimit -n) or use fewer workers",
    _errno.EIO: "input/output error: the disk or network file system failed; check it and run again",
}


def error_line(e: BaseException) -> str:
    """The one line a command prints for ``e`` (a :class:`RaglineError` or an ``OSError``).

    A ragline error's message already names the file, field or value and says what to do;
    an ``OSError`` is given as ``<file>: <what happened> (<ERRNO>); <what to do>``.
    """
    if isinstance(e, OSError) and not isinstance(e, RaglineError) and e.errno is not None:
        where = " -> ".join(_os.fsdecode(f) for f in (e.filename, e.filename2) if f is not None)
        code = _errno.errorcode.get(e.errno, str(e.errno))
        hint = _OS_HINTS.get(e.errno, "check that file or folder and run the command again")
        return f"{where + ': ' if where else ''}{e.strerror or _os.strerror(e.errno)} ({code}); {hint}"
    if isinstance(e, RaglineError):
        return str(e) or type(e).__name__  # one line, or one line per problem (flow spec errors)
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


__all__ = [
    "RaglineError", "ConfigError", "SchemaMismatchError", "RegistryError", "IndexNotFound",
    "AliasNotFound", "VersionNotFound", "CorruptRegistryError", "IndexCompatibilityError",
    "LockTimeoutError", "CLI_ERRORS", "error_line",
]

#: What a command's one-line error catches: every ragline error and every OS error (disk full,
#: permission denied, file name too long, a file that vanished). Both CLIs catch this tuple.
CLI_ERRORS: tuple[type[BaseException], ...] = (RaglineError, OSError)
