"""Validators shared by the chunker config dataclasses.

Every failure raises :class:`chunkers.base.ConfigError` with a message that names the
``chunk.<field>`` key, the value received and the values allowed, so a bad ``params.yaml``
entry is fixed from the message alone.
"""

from __future__ import annotations

from typing import Any, Iterable

from ragline.chunkers.base import ConfigError


def positive_int(field: str, value: Any) -> None:
    """Require an ``int`` (not ``bool``) > 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"chunk.{field} must be a positive integer, got {value!r}")


def non_negative_int(field: str, value: Any) -> None:
    """Require an ``int`` (not ``bool``) >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"chunk.{field} must be an integer >= 0, got {value!r}")


def smaller_than(field: str, value: int, limit_field: str, limit: int) -> None:
    """Require ``value < limit`` (e.g. an overlap smaller than the window)."""
    if value >= limit:
        raise ConfigError(
            f"chunk.{field} ({value}) must be smaller than chunk.{limit_field} ({limit})"
        )


def at_most(field: str, value: int, limit_field: str, limit: int) -> None:
    """Require ``value <= limit``."""
    if value > limit:
        raise ConfigError(
            f"chunk.{field} ({value}) must not exceed chunk.{limit_field} ({limit})"
        )


def number_in_range(field: str, value: Any, low: float, high: float) -> None:
    """Require a real number (not ``bool``) with ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise ConfigError(f"chunk.{field} must be a number in [{low:g}, {high:g}], got {value!r}")


def encoding_name(field: str, value: Any) -> None:
    """Require a non-empty string naming a tiktoken encoding that is installed locally."""
    from ragline.chunkers.tokenizer import get_encoding

    if not isinstance(value, str) or not value:
        raise ConfigError(f"chunk.{field} must be a tiktoken encoding name, got {value!r}")
    try:
        get_encoding(value)
    except ValueError as e:
        raise ConfigError(f"chunk.{field}: {e}") from e


def choices(field: str, values: Any, allowed: Iterable[str]) -> tuple[str, ...]:
    """Require a non-empty sequence of distinct names from ``allowed``; return it as a tuple."""
    allowed = tuple(allowed)
    if isinstance(values, str) or not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(
            f"chunk.{field} must be a non-empty list drawn from {', '.join(allowed)}; got {values!r}"
        )
    out = tuple(values)
    for v in out:
        if v not in allowed:
            raise ConfigError(f"chunk.{field}: unknown value {v!r}; allowed: {', '.join(allowed)}")
    if len(set(out)) != len(out):
        raise ConfigError(f"chunk.{field} lists a value twice: {list(out)!r}")
    return out
