"""The strategy registry: strategy name -> (chunker class, config class).

``get_chunker("token", max_tokens=200, overlap_tokens=0)`` validates the keys and values and
returns a ready chunker; unknown names and keys raise :class:`ConfigError` naming the key
and the allowed values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ragline.chunkers.base import Chunker, ConfigError
from ragline.chunkers.recursive import RecursiveChunker, RecursiveChunkerConfig
from ragline.chunkers.semantic import SemanticChunker, SemanticChunkerConfig
from ragline.chunkers.sentence import SentenceChunker, SentenceChunkerConfig
from ragline.chunkers.structure import StructureChunker, StructureChunkerConfig
from ragline.chunkers.token import TokenChunker, TokenChunkerConfig

#: name -> (chunker factory taking a config, config dataclass)
STRATEGIES: dict[str, tuple[Callable[..., Chunker], type]] = {
    "token": (TokenChunker, TokenChunkerConfig),
    "recursive": (RecursiveChunker, RecursiveChunkerConfig),
    "sentence": (SentenceChunker, SentenceChunkerConfig),
    "structure": (StructureChunker, StructureChunkerConfig),
    "semantic": (SemanticChunker, SemanticChunkerConfig),
}


def config_keys(strategy: str) -> list[str]:
    """Names of the config fields the strategy accepts."""
    return [f.name for f in dataclasses.fields(_lookup(strategy)[1])]


def _lookup(strategy: str) -> tuple[Callable[..., Chunker], type]:
    try:
        return STRATEGIES[strategy]
    except KeyError:
        raise ConfigError(
            f"unknown chunk.strategy {strategy!r}; allowed: {', '.join(sorted(STRATEGIES))}"
        ) from None


def needs_embedder(strategy: str) -> bool:
    """True when the strategy's chunker class declares ``needs_embedder = True`` (it must be
    given an embedder callable, e.g. ``semantic``).

    Raises:
        ConfigError: unknown strategy.
    """
    return bool(getattr(_lookup(strategy)[0], "needs_embedder", False))


def get_chunker(strategy: str, embed_fn: Any = None, **config: Any) -> Chunker:
    """Build a chunker from a strategy name and its config values.

    Args:
        strategy: registered strategy name (see ``STRATEGIES``).
        embed_fn: embedder callable (list of n strings -> float32 array (n, dim)), passed
            to strategies whose class sets ``needs_embedder = True`` (semantic, which
            raises ConfigError without one); ignored by the others.
        **config: the strategy's config fields (e.g. ``max_tokens``, ``overlap_tokens``).

    Raises:
        ConfigError: unknown strategy, unknown config key, or invalid value.
    """
    cls, config_cls = _lookup(strategy)
    allowed = config_keys(strategy)
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} for chunk.strategy {strategy!r}; "
            f"allowed: {', '.join(allowed)}"
        )
    cfg = config_cls(**config)
    if getattr(cls, "needs_embedder", False):
        return cls(cfg, embed_fn=embed_fn)
    return cls(cfg)
