"""Recursive splitting over a separator hierarchy, packed greedily to a token budget."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from ragline.chunkers import _validate as v
from ragline.chunkers.base import ConfigError, SpanChunker
from ragline.chunkers.segment import NO_KEEP, KeepTogether, Span, sentence_spans, strip_span, token_windows
from ragline.chunkers.tokenizer import ENCODING_NAME, TokenIndex

#: The separator hierarchy, coarse to fine. Tokens are always the last resort.
LEVELS: tuple[str, ...] = ("paragraph", "line", "sentence", "word")

__all__ = ["LEVELS", "RecursiveChunker", "RecursiveChunkerConfig", "Span", "recursive_spans"]

_PARAGRAPH = re.compile(r"\n\s*\n")
_LINE = re.compile(r"\n")
_WORD = re.compile(r"\s+")
_NON_SPACE = re.compile(r"\S")


@dataclass(frozen=True, slots=True)
class RecursiveChunkerConfig:
    """Configuration of :class:`RecursiveChunker`.

    Attributes:
        max_tokens: budget of every chunk in cl100k_base tokens (> 0).
        overlap_tokens: at most this many tokens of the previous chunk start the next one,
            taken as whole pieces of the level being packed (0 <= overlap < max_tokens).
        levels: the separator levels to use, coarse to fine, drawn from ``"paragraph"``
            (a blank line), ``"line"`` (``\\n``), ``"sentence"`` (see
            :func:`chunkers.segment.sentence_spans`) and ``"word"`` (a whitespace run).
            Token windows are always the last resort.
        encoding: tiktoken encoding name.
    """

    max_tokens: int = 256
    overlap_tokens: int = 0
    levels: tuple[str, ...] = LEVELS
    encoding: str = ENCODING_NAME

    def __post_init__(self) -> None:
        v.positive_int("max_tokens", self.max_tokens)
        v.non_negative_int("overlap_tokens", self.overlap_tokens)
        v.smaller_than("overlap_tokens", self.overlap_tokens, "max_tokens", self.max_tokens)
        levels = v.choices("levels", self.levels, LEVELS)
        if list(levels) != sorted(levels, key=LEVELS.index):
            raise ConfigError(
                f"chunk.levels must go from coarse to fine ({', '.join(LEVELS)}), got {list(levels)!r}"
            )
        object.__setattr__(self, "levels", levels)  # lists from YAML become tuples
        v.encoding_name("encoding", self.encoding)


class RecursiveChunker(SpanChunker):
    """Split at the coarsest separator that works, recursing into pieces that are too long.

    The text is cut at every separator of the first level (blank lines); consecutive pieces
    are packed greedily into chunks of at most ``max_tokens`` tokens; a piece that alone
    exceeds the budget is cut at the next level (lines, then sentences, then whitespace)
    and packed the same way, on its own. Windows of tokens are the last resort; they end at
    word ends too (:func:`chunkers.segment.token_windows`), so only a word longer than the
    budget is cut inside. A separator stays with the piece that follows it, and chunks are
    trimmed of surrounding whitespace. No cut falls inside a table row that fits the budget
    (see :class:`chunkers.segment.KeepTogether`).

    Offsets are computed while splitting. The document is tokenized once and every span is
    counted from that tokenization (:class:`chunkers.tokenizer.TokenIndex`), so
    ``token_count`` is measured in the *document's* tokens: encoding a chunk's text on its
    own can differ by a token or two at its edges. A chunk is flagged ``oversized`` only
    when a single character needs more than ``max_tokens`` tokens (possible only for
    ``max_tokens < 4``).

    Source: LangChain's ``RecursiveCharacterTextSplitter`` (separators ``["\\n\\n", "\\n",
    " ", ""]``, greedy merge with overlap) and Chonkie's ``RecursiveChunker`` (recursive
    rules down to tokens), with lengths in tokens.
    """

    name = "recursive"
    #: 2: token windows end at word ends; table rows are kept whole.
    version = 2

    config_class = RecursiveChunkerConfig

    def spans(self, text: str, *, keep: Sequence[tuple[int, int]] = ()) -> list[Span]:
        """``(char_start, char_end, token_count, oversized)`` of every chunk, in order.

        Args:
            text: the document text.
            keep: spans no boundary may cut when they fit the budget (table rows).
        """
        if not text.strip():
            return []
        cfg = self.config
        index = TokenIndex(text, cfg.encoding)
        return recursive_spans(
            text, index, 0, len(text),
            max_tokens=cfg.max_tokens, overlap_tokens=cfg.overlap_tokens, levels=cfg.levels,
            keep=KeepTogether(keep, index, cfg.max_tokens),
        )


def recursive_spans(
    text: str,
    index: TokenIndex,
    start: int,
    end: int,
    *,
    max_tokens: int,
    overlap_tokens: int = 0,
    levels: Sequence[str] = LEVELS,
    keep: KeepTogether = NO_KEEP,
) -> list[Span]:
    """Recursively split ``text[start:end]`` into spans of at most ``max_tokens`` tokens.

    The building block of :class:`RecursiveChunker`, also used by the other strategies to
    split a sentence, element or group that alone exceeds their budget.

    Args:
        text: the whole document text (offsets are into it).
        index: token index of ``text``.
        start: start offset (characters) of the range to split.
        end: end offset (characters, exclusive).
        max_tokens: budget per span (tokens).
        overlap_tokens: tokens of overlap between consecutive spans of one level (< max).
        levels: separator levels, coarse to fine (see :data:`LEVELS`).
        keep: spans no cut may fall inside (cuts of a level inside one are skipped).

    Returns:
        Trimmed, non-empty ``(char_start, char_end, token_count, oversized)`` spans in order.
    """
    packer = _Packer(text, index, max_tokens, overlap_tokens, tuple(levels), keep)
    packer.split(start, end, 0)
    return packer.out


def _cuts(text: str, level: str, start: int, end: int) -> list[int]:
    """Cut offsets of one separator level strictly inside ``(start, end)``."""
    if level == "paragraph":
        return [m.start() for m in _PARAGRAPH.finditer(text, start, end) if m.start() > start]
    if level == "line":
        return [m.start() for m in _LINE.finditer(text, start, end) if m.start() > start]
    if level == "word":
        return [m.start() for m in _WORD.finditer(text, start, end) if m.start() > start]
    if level == "sentence":
        return [e for _, e in sentence_spans(text, start, end)[:-1]]
    raise ValueError(f"unknown separator level {level!r}")


class _Packer:
    """Greedy packing state for one call of :func:`recursive_spans`."""

    __slots__ = ("text", "index", "max_tokens", "overlap", "levels", "keep", "out")

    def __init__(
        self, text: str, index: TokenIndex, max_tokens: int, overlap: int, levels: tuple[str, ...], keep: KeepTogether
    ):
        self.text = text
        self.keep = keep
        self.index = index
        self.max_tokens = max_tokens
        self.overlap = overlap
        self.levels = levels
        self.out: list[Span] = []

    def emit(self, start: int, end: int) -> None:
        s, e = strip_span(self.text, start, end)
        if s < e:
            n = self.index.count(s, e)
            self.out.append((s, e, n, n > self.max_tokens))

    def split(self, start: int, end: int, depth: int) -> None:
        """Emit ``[start, end)`` trimmed if it fits the budget, else split it from level ``depth`` on."""
        start, end = strip_span(self.text, start, end)
        if start >= end:
            return
        if self.index.count(start, end) <= self.max_tokens:
            self.emit(start, end)
            return
        while depth < len(self.levels):
            cuts = self.keep.allowed(_cuts(self.text, self.levels[depth], start, end))
            if cuts:
                self._pack([start, *cuts, end], depth)
                return
            depth += 1
        self._token_windows(start, end)

    def _pack(self, bounds: list[int], depth: int) -> None:
        """Greedily pack the pieces ``[bounds[k], bounds[k+1])`` of one level.

        A chunk of pieces ``i..j`` is counted from the first non-blank character of piece
        ``i`` (the separator that opens a piece is trimmed off a chunk that starts with it)
        to the end of piece ``j``, which never undercounts the emitted, trimmed chunk.
        """
        text, budget, overlap = self.text, self.max_tokens, self.overlap
        n = len(bounds) - 1
        firsts = []  # first non-blank offset of every piece (its end when blank)
        for k in range(n):
            m = _NON_SPACE.search(text, bounds[k], bounds[k + 1])
            firsts.append(m.start() if m else bounds[k + 1])
        pre = self.index.before(bounds).tolist()  # tokens before each piece bound
        pre_first = self.index.before(firsts).tolist()  # tokens before each piece's first non-blank
        i = 0  # first piece of the open chunk
        done = 0  # pieces before this one are already in an emitted chunk
        j = 0
        while j < n:
            if pre[j + 1] - pre_first[j] > budget:  # a piece too long on its own: next level
                if j > done:
                    self.emit(bounds[i], bounds[j])
                self.split(bounds[j], bounds[j + 1], depth + 1)
                j += 1
                i = done = j
                continue
            if pre[j + 1] - pre_first[i] > budget:  # piece j does not fit: close the chunk
                self.emit(bounds[i], bounds[j])
                done = j
                if overlap:
                    i += 1
                    while pre[j] - pre_first[i] > overlap or pre[j + 1] - pre_first[i] > budget:
                        i += 1
                else:
                    i = j
            j += 1
        if n > done:
            self.emit(bounds[i], bounds[n])

    def _token_windows(self, start: int, end: int) -> None:
        """Last resort: windows of whole words, cut inside a word only when it alone is too long."""
        self.out.extend(token_windows(
            self.text, self.index, start, end, max_tokens=self.max_tokens, overlap_tokens=self.overlap, keep=self.keep,
        ))
