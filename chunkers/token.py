"""Fixed windows of tiktoken tokens with overlap (the baseline every chunking study uses)."""

from __future__ import annotations

from dataclasses import dataclass

from ragline.chunkers import _validate as v
from ragline.chunkers.base import SpanChunker
from ragline.chunkers.tokenizer import ENCODING_NAME, encode_with_char_offsets


@dataclass(frozen=True, slots=True)
class TokenChunkerConfig:
    """Configuration of :class:`TokenChunker`.

    Attributes:
        max_tokens: window size in cl100k_base tokens (> 0).
        overlap_tokens: tokens shared by consecutive windows (0 <= overlap < max_tokens).
        encoding: tiktoken encoding name.
    """

    max_tokens: int = 256
    overlap_tokens: int = 0
    encoding: str = ENCODING_NAME

    def __post_init__(self) -> None:
        v.positive_int("max_tokens", self.max_tokens)
        v.non_negative_int("overlap_tokens", self.overlap_tokens)
        v.smaller_than("overlap_tokens", self.overlap_tokens, "max_tokens", self.max_tokens)
        v.encoding_name("encoding", self.encoding)


class TokenChunker(SpanChunker):
    """Split text into windows of ``max_tokens`` tokens, consecutive windows sharing
    ``overlap_tokens`` tokens.

    The text is tokenized once; window boundaries are token boundaries mapped to character
    offsets with :func:`chunkers.tokenizer.encode_with_char_offsets`, so offsets are exact
    and no text is lost or duplicated (beyond the overlap). ``token_count`` is the number of
    the document's tokens inside the window (<= ``max_tokens``); re-encoding the slice on its
    own can differ by a token or two at the edges, as BPE is context dependent.

    Source: the fixed-size token baseline of Smith & Troynikov, "Evaluating Chunking
    Strategies for Retrieval" (Chroma, 2024), as in LangChain's ``TokenTextSplitter``.
    """

    name = "token"
    version = 1

    config_class = TokenChunkerConfig

    def spans(self, text: str) -> list[tuple[int, int, int]]:
        """``(char_start, char_end, token_count)`` of every window, in order."""
        if not text.strip():
            return []
        _, bounds = encode_with_char_offsets(text, self.config.encoding)
        n_tokens = len(bounds) - 1
        step = self.config.max_tokens - self.config.overlap_tokens
        out: list[tuple[int, int, int]] = []
        start = 0
        while start < n_tokens:
            end = min(start + self.config.max_tokens, n_tokens)
            cs, ce = int(bounds[start]), int(bounds[end])
            # A window can map to the same characters as the previous one when tokens split
            # multi-byte characters and the overlap is large: it adds no text, skip it.
            if ce > cs and text[cs:ce].strip() and (not out or ce > out[-1][1]):
                out.append((cs, ce, end - start))
            if end == n_tokens:
                break
            start += step
        return out
