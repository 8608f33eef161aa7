"""Hypothesis strategies shared by the chunker property tests (documents, budgets, embedder)."""

from __future__ import annotations

import os
import zlib
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Modest settings so the whole chunkers suite stays fast; set RAGLINE_HYPOTHESIS_EXAMPLES
#: (e.g. 2000) for a deeper local run.
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("RAGLINE_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Fragments that stress the splitters: separators of every level, non-ASCII letters, emoji
# (multi-token characters, ZWJ sequences), control characters (U+001C..U+001F are
# whitespace to str.isspace), CJK stops, abbreviations, Markdown headings, table rows.
_FRAGMENTS = [
    "Hello", "world", "the", "quick brown fox", "naïve café", "Ελληνικά", "日本語のテキスト",
    "😀", "🎉🎉", "👩\u200d👩\u200d👧", "🇫🇷", "\x00", "\x07", "\x1c", "\x1f", "\u200b",
    " ", "  ", "\t", "\n", "\n\n", "\r\n", "\n \n", "\u3000", "\xa0",
    ". ", "! ", "? ", "...", "。", "！", "Dr.", "e.g.", "J.", "3.14", "U.S.",
    "# Title\n", "| a | b |\n", "- item\n", "x" * 40, "ab" * 15,
]

fragments = st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=12))


@st.composite
def documents(draw: st.DrawFn, max_fragments: int = 120) -> str:
    """Arbitrary Unicode documents: fragment soups, plain text, and repeated text."""
    kind = draw(st.sampled_from(["soup", "text", "repeat"]))
    if kind == "text":
        return draw(st.text(max_size=400))
    doc = "".join(draw(st.lists(fragments, max_size=max_fragments)))
    if kind == "repeat":
        doc = doc * draw(st.integers(2, 4))
    return doc


whitespace_only = st.text(alphabet=" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\xa0\u2028\u3000", max_size=50)

#: Budgets small enough to force every split level, including the indivisible-character path.
max_tokens_values = st.integers(min_value=1, max_value=48)


def fake_embed(texts: Sequence[str], dim: int = 32) -> np.ndarray:
    """Deterministic fake embedder: a hashed bag of lowercase words, float32 (n, dim)."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, zlib.crc32(w.encode("utf-8")) % dim] += 1.0
    return out


@contextmanager
def small_blocks(chars: int, tokens: int) -> Iterator[None]:
    """Run the blockwise loops (``chunkers.segment.BLOCK_CHARS`` characters, ``tokenizer._BLOCK``
    tokens per step) with tiny blocks, so that short test texts cross many block edges."""
    from ragline.chunkers import segment, tokenizer

    saved = segment.BLOCK_CHARS, tokenizer._BLOCK
    segment.BLOCK_CHARS, tokenizer._BLOCK = chars, tokens
    try:
        yield
    finally:
        segment.BLOCK_CHARS, tokenizer._BLOCK = saved
