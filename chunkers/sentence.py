"""Whole sentences packed greedily to a token budget, with an overlap counted in sentences."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ragline.chunkers import _validate as v
from ragline.chunkers.base import SpanChunker
from ragline.chunkers.recursive import recursive_spans
from ragline.chunkers.segment import NO_KEEP, KeepTogether, Span, sentence_spans
from ragline.chunkers.tokenizer import ENCODING_NAME, TokenIndex


@dataclass(frozen=True, slots=True)
class SentenceChunkerConfig:
    """Configuration of :class:`SentenceChunker`.

    Attributes:
        max_tokens: budget of every chunk in cl100k_base tokens (> 0).
        overlap_sentences: number of trailing sentences of a chunk repeated at the start of
            the next one (>= 0); fewer are repeated when they would not fit the budget.
        encoding: tiktoken encoding name.
    """

    max_tokens: int = 256
    overlap_sentences: int = 0
    encoding: str = ENCODING_NAME

    def __post_init__(self) -> None:
        v.positive_int("max_tokens", self.max_tokens)
        v.non_negative_int("overlap_sentences", self.overlap_sentences)
        v.encoding_name("encoding", self.encoding)


class SentenceChunker(SpanChunker):
    """Pack whole sentences into chunks of at most ``max_tokens`` tokens.

    Sentences come from the rule-based splitter :func:`chunkers.segment.sentence_spans`
    (terminal punctuation followed by whitespace, CJK full stops, line breaks). Consecutive
    sentences are packed greedily; the next chunk starts with the last
    ``overlap_sentences`` sentences of the previous one (as many as fit). A sentence longer
    than the budget is split on its own with the recursive strategy (words, then tokens).
    Sentences inside one table row that fits the budget are packed as one
    (:class:`chunkers.segment.KeepTogether`). ``token_count`` is measured in the document's tokenization
    (:class:`chunkers.tokenizer.TokenIndex`).

    Source: the sentence-packing chunkers of LlamaIndex (``SentenceSplitter``) and Chonkie
    (``SentenceChunker``); here the overlap is counted in whole sentences.
    """

    name = "sentence"
    #: 2: table rows are kept whole; long sentences split at word ends.
    version = 2

    config_class = SentenceChunkerConfig

    def spans(self, text: str, *, keep: Sequence[tuple[int, int]] = ()) -> list[Span]:
        """``(char_start, char_end, token_count, oversized)`` of every chunk, in order.

        Args:
            text: the document text.
            keep: spans no boundary may cut when they fit the budget (table rows).
        """
        sentences = sentence_spans(text)
        if not sentences:
            return []
        index = TokenIndex(text, self.config.encoding)
        kept = KeepTogether(keep, index, self.config.max_tokens)
        return pack_sentences(
            text, index, kept.merge(sentences),
            max_tokens=self.config.max_tokens, overlap_sentences=self.config.overlap_sentences, keep=kept,
        )


def pack_sentences(
    text: str,
    index: TokenIndex,
    sentences: Sequence[tuple[int, int]],
    *,
    max_tokens: int,
    overlap_sentences: int = 0,
    keep: KeepTogether = NO_KEEP,
) -> list[Span]:
    """Greedily pack consecutive sentences into spans of at most ``max_tokens`` tokens.

    Args:
        text: the whole document text.
        index: token index of ``text``.
        sentences: trimmed ``(char_start, char_end)`` sentence spans in document order.
        max_tokens: budget per span (tokens); a chunk's count runs from its first
            sentence's start to its last sentence's end, whitespace between included.
        overlap_sentences: trailing sentences repeated at the start of the next span.
        keep: spans no cut may fall inside, passed on to the split of a long sentence
            (merge the sentences inside them first, :meth:`KeepTogether.merge`).

    Returns:
        ``(char_start, char_end, token_count, oversized)`` spans in order. A sentence over
        the budget is split by :func:`chunkers.recursive.recursive_spans`.
    """
    starts = index.before([s for s, _ in sentences]).tolist()
    ends = index.before([e for _, e in sentences]).tolist()
    out: list[Span] = []
    n = len(sentences)
    i = done = j = 0

    def emit(first: int, last: int) -> None:  # sentences first..last inclusive
        out.append((sentences[first][0], sentences[last][1], ends[last] - starts[first], False))

    while j < n:
        if ends[j] - starts[j] > max_tokens:  # one sentence over the budget: split it alone
            if j > done:
                emit(i, j - 1)
            s, e = sentences[j]
            out.extend(recursive_spans(text, index, s, e, max_tokens=max_tokens, keep=keep))
            j += 1
            i = done = j
            continue
        if ends[j] - starts[i] > max_tokens:  # sentence j does not fit: close the chunk
            emit(i, j - 1)
            done = j
            i = max(j - overlap_sentences, i + 1)
            while ends[j] - starts[i] > max_tokens:
                i += 1
        j += 1
    if n > done:
        emit(i, n - 1)
    return out
