"""The error root of ragline and its named cases.

Every error a command can end with derives from :class:`RaglineError`, so a CLI or a notebook
catches one class; the message names the file, field or value and says what to do. Each
class also derives from the builtin it refines (``ValueError``, ``LookupError``,
``RuntimeError``), so callers that catch those keep working.
"""

from __future__ import annotations


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


def config_error(e: Exception, source: str, prefix: str = "") -> ConfigError:
    """One :class:`ConfigError` from a pydantic ``ValidationError`` (its first error).

    The message is ``"{source}: {prefix}{location}: {pydantic message} (got {value!r})"``;
    for a ``Literal`` field pydantic's message lists the allowed values. Raise it with
    ``raise config_error(e, source) from e``.

    Args:
        e: the ``pydantic.ValidationError`` (duck-typed: anything with ``errors()``).
        source: the file or option the values came from, e.g. ``params.yaml``.
        prefix: prepended to the location, e.g. ``"retrieval."``.
    """
    err = e.errors()[0]  # type: ignore[attr-defined]
    loc = prefix + ".".join(str(p) for p in err["loc"])
    got = f" (got {err['input']!r})" if "input" in err else ""
    return ConfigError(f"{source}: {loc.rstrip('.') or '(top level)'}: {err['msg']}{got}")


__all__ = [
    "config_error",
    "RaglineError", "ConfigError", "SchemaMismatchError", "RegistryError", "IndexNotFound",
    "AliasNotFound", "VersionNotFound", "CorruptRegistryError", "IndexCompatibilityError",
    "LockTimeoutError",
]
