"""The error root of ragline and its named cases.

Every error a command can end with derives from :class:`RaglineError`, so a CLI or a notebook
catches one class; the message names the file, field or value and says what to do. Each
class also derives from the builtin it refines (``ValueError``, ``LookupError``,
``RuntimeError``), so callers that catch those keep working.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

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
def did_you_mean(key: str, allowed: "Iterable[str]") -> str:
    """``" (did you mean `load`?)"``-style hint for a mistyped ``key`` (difflib), or ``""``."""
    import difflib

    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _model_at(model: Any, loc: tuple[Any, ...]) -> Any:
    """The pydantic model class reached by following ``loc`` (field names) from ``model``, or None."""
    import typing

    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        ann = field.annotation
        nxt = next((c for c in (ann, *typing.get_args(ann)) if isinstance(c, type) and hasattr(c, "model_fields")), None)
        if nxt is None:
            return None
        model = nxt
    return model


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + f"...' ({len(str(value))} characters)"


def pydantic_message(err: Mapping[str, Any]) -> str:
    """The words of one pydantic error (an item of ``ValidationError.errors()``): its ``msg``
    without the ``"Value error, "`` that pydantic puts before a validator's own message. Every
    conversion of a pydantic error to a ragline message goes through it (:func:`config_error`
    here, the flow-spec errors with file:line in ``runner/spec.py``)."""
    return str(err["msg"]).removeprefix("Value error, ")


def config_error(e: Exception, source: str, prefix: str = "", model: Any = None) -> ConfigError:
    """One :class:`ConfigError` from a pydantic ``ValidationError`` (its first error): the one
    conversion every config reader uses.

    The message is ``"{source}: {prefix}{location}: {pydantic message} (got {value!r})"``; for
    a ``Literal`` field pydantic's message lists the allowed values. With ``model`` (the
    validated pydantic class), an unknown key gets the nearest valid name (difflib) and the
    valid ones, read from the models, so every section and key is covered without a list.
    Raise it with ``raise config_error(e, source) from e``.

    Args:
        e: the ``pydantic.ValidationError`` (duck-typed: anything with ``errors()``).
        source: the file or option the values came from, e.g. ``params.yaml``.
        prefix: prepended to the location, e.g. ``"retrieval."``.
        model: the pydantic model class that was validated, for unknown-key hints.
    """
    err = e.errors()[0]  # type: ignore[attr-defined]
    loc = tuple(err["loc"])
    dotted = prefix + ".".join(str(p) for p in loc)
    if err.get("type") == "extra_forbidden" and model is not None:
        parent = _model_at(model, loc[:-1])
        allowed = sorted(parent.model_fields) if parent is not None else []
        return ConfigError(f"{source}: unknown key `{dotted}`{did_you_mean(str(loc[-1]), allowed)}; "
                           f"allowed: {', '.join(allowed) or '-'}")
    msg = pydantic_message(err)
    value = err.get("input")
    shown = "input" in err and not isinstance(value, dict) and not (isinstance(value, str) and value[:20] in msg)
    got = f" (got {_shown(value)})" if shown else ""
    return ConfigError(f"{source}: {dotted.rstrip('.') or '(top level)'}: {msg}{got}")


__all__ = [
    "config_error", "pydantic_message", "did_you_mean",
    "RaglineError", "ConfigError", "SchemaMismatchError", "RegistryError", "IndexNotFound",
    "AliasNotFound", "VersionNotFound", "CorruptRegistryError", "IndexCompatibilityError",
    "LockTimeoutError", "CLI_ERRORS", "error_line",
]

#: What a command's one-line error catches: every ragline error and every OS error (disk full,
#: permission denied, file name too long, a file that vanished). Both CLIs catch this tuple.
CLI_ERRORS: tuple[type[BaseException], ...] = (RaglineError, OSError)
