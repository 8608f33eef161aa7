"""Fixed windows of tiktoken tokens with overlap (the baseline every chunking study uses)."""

from __future__ import annotations

from dataclasses import dataclass

from typing import Sequence

from ragline.chunkers import _validate as v
from ragline.chunkers.base import SpanChunker
from ragline.chunkers.segment import KeepTogether, Span, token_windows
from ragline.chunkers.tokenizer import ENCODING_NAME, TokenIndex


@dataclass(frozen=True, slots=True)
class TokenChunkerConfig:
    """Configuration of :class:`TokenChunker`.

    Attributes:
        max_tokens: window size in cl100k_base tokens (> 0).
        overlap_tokens: at most this many tokens (whole words) shared by consecutive
            windows (0 <= overlap < max_tokens).
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
    """Split text into windows of at most ``max_tokens`` tokens that end at word boundaries,
    consecutive windows sharing at most ``overlap_tokens`` tokens.

    The text is tokenized once (:class:`chunkers.tokenizer.TokenIndex`) and whole words are
    packed greedily up to the budget (:func:`chunkers.segment.token_windows`): a window
    ends at the last whitespace before the budget runs out, so no chunk starts or ends
    inside a word unless that word alone exceeds ``max_tokens`` (then it is cut at token
    ends). Windows are trimmed of surrounding whitespace; a table row that fits the budget
    is never cut (:class:`chunkers.segment.KeepTogether`). Offsets are exact and no text
    is lost. ``token_count`` is the number of the document's tokens in the window
    (<= ``max_tokens``); re-encoding the slice on its own can differ by a token or two at
    the edges, as BPE is context dependent.

    Source: the fixed-size token baseline of Smith & Troynikov, "Evaluating Chunking
    Strategies for Retrieval" (Chroma, 2024), as in LangChain's ``TokenTextSplitter``;
    whole words packed to the token budget as LlamaIndex's ``TokenTextSplitter`` does
    (it splits on a separator, then merges splits up to ``chunk_size`` tokens).
    """

    name = "token"
    #: 2: windows end at word boundaries (were raw token cuts); table rows are kept whole.
    version = 2

    config_class = TokenChunkerConfig

    def spans(self, text: str, *, keep: Sequence[tuple[int, int]] = ()) -> list[Span]:
        """``(char_start, char_end, token_count, oversized)`` of every window, in order.

        Args:
            text: the document text.
            keep: spans no boundary may cut when they fit the budget (table rows).
        """
        if not text.strip():
            return []
        cfg = self.config
        index = TokenIndex(text, cfg.encoding)
        return token_windows(
            text, index, 0, len(text), max_tokens=cfg.max_tokens, overlap_tokens=cfg.overlap_tokens,
            keep=KeepTogether(keep, index, cfg.max_tokens),
        )
