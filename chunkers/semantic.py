"""Semantic chunking by embedding-distance breakpoints between adjacent sentences."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ragline.chunkers import _validate as v
from ragline.chunkers.base import ConfigError, EmbedFn, SpanChunker
from ragline.chunkers.segment import KeepTogether, Span, sentence_spans
from ragline.chunkers.sentence import pack_sentences
from ragline.chunkers.tokenizer import ENCODING_NAME, TokenIndex


class EmbeddingError(ValueError):
    """The embedder returned something other than one finite vector per input text."""


@dataclass(frozen=True, slots=True)
class SemanticChunkerConfig:
    """Configuration of :class:`SemanticChunker`.

    Attributes:
        max_tokens: hard budget of every chunk in cl100k_base tokens (> 0).
        breakpoint_percentile: a chunk boundary is placed where the cosine distance between
            adjacent sentences exceeds this percentile of all the document's adjacent
            distances (a number in [0, 100]; 95 splits at the top 5 % of distances).
        buffer_size: sentences on each side joined to a sentence before embedding it
            (>= 0; 1 embeds a window of three sentences), which smooths the distances.
        embedding_model: identity of the embedder (model id and revision), recorded in the
            fingerprint so that chunk ids change when the embedder does; set it from
            params whenever the embedder can change.
        encoding: tiktoken encoding name.
    """

    max_tokens: int = 256
    breakpoint_percentile: float = 95.0
    buffer_size: int = 1
    embedding_model: str = ""
    encoding: str = ENCODING_NAME

    def __post_init__(self) -> None:
        v.positive_int("max_tokens", self.max_tokens)
        v.number_in_range("breakpoint_percentile", self.breakpoint_percentile, 0.0, 100.0)
        object.__setattr__(self, "breakpoint_percentile", float(self.breakpoint_percentile))
        v.non_negative_int("buffer_size", self.buffer_size)
        if not isinstance(self.embedding_model, str):
            raise ConfigError(f"chunk.embedding_model must be a string, got {self.embedding_model!r}")
        v.encoding_name("encoding", self.encoding)


class SemanticChunker(SpanChunker):
    """Split where the meaning shifts: the breakpoint method over sentence embeddings.

    1. Split the text into sentences (:func:`chunkers.segment.sentence_spans`).
    2. Embed each sentence together with ``buffer_size`` neighbours on each side (one call
       of ``embed_fn`` with all of them).
    3. Compute the cosine distance ``1 - cos(e_i, e_{i+1})`` between adjacent sentences.
    4. Break after sentence ``i`` where that distance is above the
       ``breakpoint_percentile``-th percentile of the document's distances.
    5. Enforce ``max_tokens``: a group over the budget is packed into whole sentences
       (:func:`chunkers.sentence.pack_sentences`), a sentence over it split recursively.

    ``token_count`` is measured in the document's tokenization
    (:class:`chunkers.tokenizer.TokenIndex`). A document of one sentence is one group.

    Source: Greg Kamradt, "5 Levels of Text Splitting" (2023), level 4 "semantic
    splitting", as implemented in LangChain's ``SemanticChunker`` (percentile breakpoints,
    ``buffer_size=1``, threshold 95) and LlamaIndex's ``SemanticSplitterNodeParser``.
    """

    name = "semantic"
    #: 2: table rows are kept whole; long sentences split at word ends.
    version = 2
    #: The registry passes ``embed_fn`` only to strategies that declare they need it.
    needs_embedder = True
    config_class = SemanticChunkerConfig

    def __init__(
        self,
        config: SemanticChunkerConfig | None = None,
        *,
        embed_fn: EmbedFn | None = None,
        **kwargs: object,
    ) -> None:
        """Build the chunker.

        Args:
            config: the configuration; or pass its fields as keyword values instead.
            embed_fn: embedder callable, list of n strings -> float32 array (n, dim). Only
                called from :meth:`chunk`, so constructing the chunker is cheap.

        Raises:
            ConfigError: if ``embed_fn`` is missing or not callable, or the config is invalid.
        """
        super().__init__(config, **kwargs)
        if embed_fn is None or not callable(embed_fn):
            raise ConfigError(
                "chunk.strategy 'semantic' needs an embedder: pass embed_fn= (a callable "
                "list[str] -> float32 array (n, dim)) to SemanticChunker or get_chunker"
            )
        self.embed_fn = embed_fn

    def spans(self, text: str, *, keep: Sequence[tuple[int, int]] = ()) -> list[Span]:
        """``(char_start, char_end, token_count, oversized)`` of every chunk, in order.

        Args:
            text: the document text.
            keep: spans no boundary may cut when they fit the budget (table rows): the
                sentences inside one are treated as one sentence.

        Raises:
            EmbeddingError: if ``embed_fn`` does not return one finite vector per sentence.
        """
        sentences = sentence_spans(text)
        if not sentences:
            return []
        index = TokenIndex(text, self.config.encoding)
        kept = KeepTogether(keep, index, self.config.max_tokens)
        sentences = kept.merge(sentences)
        out: list[Span] = []
        for group in self.groups(text, sentences):
            out.extend(pack_sentences(text, index, group, max_tokens=self.config.max_tokens, keep=kept))
        return out

    def groups(self, text: str, sentences: Sequence[tuple[int, int]]) -> list[list[tuple[int, int]]]:
        """Split the sentence list at the semantic breakpoints (no token budget applied).

        Args:
            text: the document text.
            sentences: sentence spans in order (from :func:`chunkers.segment.sentence_spans`).

        Returns:
            Consecutive runs of sentences, in order, together covering all of them.
        """
        n = len(sentences)
        if n < 2:
            return [list(sentences)]
        distances = self.distances(text, sentences)
        threshold = np.percentile(distances, self.config.breakpoint_percentile)
        breaks = (np.flatnonzero(distances > threshold) + 1).tolist()
        bounds = [0, *breaks, n]
        return [list(sentences[a:b]) for a, b in zip(bounds, bounds[1:])]

    def distances(self, text: str, sentences: Sequence[tuple[int, int]]) -> np.ndarray:
        """Cosine distances between adjacent buffered-sentence embeddings.

        Returns:
            float64 array (n - 1,): entry ``i`` is ``1 - cos(e_i, e_{i+1})``, in [0, 2]; a
            zero vector has cosine 0 with everything.

        Raises:
            EmbeddingError: if the embedder's output is not a finite (n, dim) array.
        """
        n = len(sentences)
        b = self.config.buffer_size
        windows = [text[sentences[max(0, i - b)][0] : sentences[min(n - 1, i + b)][1]] for i in range(n)]
        emb = np.asarray(self.embed_fn(windows), dtype=np.float64)
        if emb.ndim != 2 or emb.shape[0] != n or emb.shape[1] == 0:
            raise EmbeddingError(
                f"embed_fn returned an array of shape {emb.shape} for {n} texts; expected ({n}, dim)"
            )
        if not np.isfinite(emb).all():
            raise EmbeddingError("embed_fn returned non-finite values (nan or inf)")
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        unit = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
        cos = np.einsum("ij,ij->i", unit[:-1], unit[1:])
        return 1.0 - np.clip(cos, -1.0, 1.0)
