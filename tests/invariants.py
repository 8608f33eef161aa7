"""The one shared check of the chunk invariants every strategy must satisfy.

Use it from every chunker test (unit and property tests alike)::

    from tests.invariants import assert_chunk_invariants
    assert_chunk_invariants(text, chunker.chunk(text, doc_id="d"), max_tokens=64, chunker=chunker)
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from ragline.chunkers.base import Chunk, Chunker, ElementSpan, make_chunk_id, table_rows
from ragline.chunkers.tokenizer import TokenIndex, encode_with_char_offsets

_HEX32 = re.compile(r"[0-9a-f]{32}")
# A sentence may end after a CJK full stop (and closing brackets) with no space after it.
_CJK_SENTENCE_END = frozenset("\u3002\uff01\uff1f\uff61\u300d\u300f\u201d\u2019)\uff09")


def assert_chunk_invariants(
    text: str,
    chunks: Sequence[Chunk],
    max_tokens: int,
    *,
    chunker: Chunker | None = None,
    elements: Sequence[ElementSpan] | None = None,
) -> None:
    """Fail with a message naming the chunk if any chunk invariant is broken.

    Checks:
        * every chunk is a non-empty, non-blank slice: ``text == doc[char_start:char_end]``;
        * chunks are in document order (starts, then ends, nondecreasing; no duplicates);
        * ``token_count <= max_tokens`` unless ``oversized``, and ``oversized`` only when
          ``token_count > max_tokens``;
        * ``token_count`` is a count of the document's tokens for the span: at least the
          non-empty tokens inside it, at most the tokens overlapping it (plus zero-width
          tokens, i.e. pieces of a multi-byte character, at its edges);
        * the chunks cover the text except whitespace-only gaps (so whitespace-only text
          gives no chunks);
        * no chunk starts or ends inside a word (a run of non-whitespace) unless that word
          alone has more than ``max_tokens`` tokens, the cut is at an element boundary, or
          it follows a CJK sentence stop (sentence splitters cut there without a space);
        * no chunk starts or ends strictly inside a row (line) of a ``Table`` element when
          the row has at most ``max_tokens`` tokens;
        * ids are 32 lowercase hex chars, unique, one doc id for all chunks; with
          ``chunker``: ids equal ``make_chunk_id(doc_id, start, end, chunker.fingerprint)``
          and chunking the text again gives exactly the same chunks (determinism).

    Args:
        text: the document text that was chunked.
        chunks: the chunker's output for ``text``.
        max_tokens: the chunker's budget (tokens).
        chunker: the chunker that produced ``chunks``, to check ids and determinism.
        elements: the elements ``chunks`` were produced with (passed again on re-chunking).
    """
    _, bounds = encode_with_char_offsets(text)
    tok_start, tok_end = bounds[:-1], bounds[1:]
    zero_width = tok_start == tok_end
    prev: Chunk | None = None
    for k, c in enumerate(chunks):
        where = f"chunk {k} [{c.char_start}:{c.char_end}] {c.text[:40]!r}"
        assert 0 <= c.char_start < c.char_end <= len(text), f"{where}: offsets outside the text"
        assert c.text == text[c.char_start : c.char_end], f"{where}: text is not the document slice"
        assert c.text.strip(), f"{where}: whitespace-only chunk"
        if c.oversized:
            assert c.token_count > max_tokens, f"{where}: flagged oversized with {c.token_count} tokens"
        else:
            assert c.token_count <= max_tokens, f"{where}: {c.token_count} tokens > max_tokens {max_tokens}"
        s, e = c.char_start, c.char_end
        inside = int(np.sum((tok_start >= s) & (tok_end <= e) & ~zero_width))
        overlapping = np.sum((tok_start < e) & (tok_end > s))
        touching = int(overlapping + np.sum(zero_width & (tok_start >= s) & (tok_start <= e)))
        assert inside <= c.token_count <= touching, (
            f"{where}: token_count {c.token_count} is not a count of the document's tokens "
            f"for the span (between {inside} and {touching})"
        )
        if prev is not None:
            assert (prev.char_start, prev.char_end) < (c.char_start, c.char_end), f"{where}: out of order or repeated"
            assert prev.char_end <= c.char_end, f"{where}: ends before the previous chunk ends"
        prev = c

    _assert_whole_words_and_rows(text, chunks, max_tokens, elements)

    covered = 0
    for c in chunks:
        gap = text[covered : c.char_start]
        assert not gap.strip(), f"text [{covered}:{c.char_start}] {gap[:40]!r} is in no chunk"
        covered = max(covered, c.char_end)
    assert not text[covered:].strip(), f"text [{covered}:] {text[covered:][:40]!r} is in no chunk"

    ids = [c.chunk_id for c in chunks]
    assert len(set(ids)) == len(ids), "chunk ids are not unique"
    assert all(_HEX32.fullmatch(i) for i in ids), "chunk ids must be 32 lowercase hex chars"
    assert len({c.doc_id for c in chunks}) <= 1, "chunks of one document carry different doc ids"
    if chunker is not None:
        for c in chunks:
            assert c.chunk_id == make_chunk_id(c.doc_id, c.char_start, c.char_end, chunker.fingerprint), (
                f"chunk [{c.char_start}:{c.char_end}]: id is not content-addressed"
            )
        doc_id = chunks[0].doc_id if chunks else ""
        again = chunker.chunk(text, doc_id=doc_id, elements=elements)
        assert list(again) == list(chunks), "chunking the same text twice gave different chunks"


def _assert_whole_words_and_rows(
    text: str, chunks: Sequence[Chunk], max_tokens: int, elements: Sequence[ElementSpan] | None
) -> None:
    index: TokenIndex | None = None
    n = len(text)
    element_edges = {p for e in elements or () for p in (e.char_start, e.char_end)}
    for k, c in enumerate(chunks):
        for p in (c.char_start, c.char_end):
            if not 0 < p < n or text[p - 1].isspace() or text[p].isspace():
                continue
            if p in element_edges or text[p - 1] in _CJK_SENTENCE_END:
                continue
            ws, we = p, p
            while ws > 0 and not text[ws - 1].isspace():
                ws -= 1
            while we < n and not text[we].isspace():
                we += 1
            index = index or TokenIndex(text)
            assert index.count(ws, we) > max_tokens, (
                f"chunk {k} [{c.char_start}:{c.char_end}] {c.text[:40]!r}: boundary at {p} cuts the word "
                f"{text[ws:we][:40]!r} ({index.count(ws, we)} tokens <= max_tokens {max_tokens})"
            )
    rows = table_rows(text, elements)
    if not rows:
        return
    index = index or TokenIndex(text)
    for rs, re_ in rows:
        if index.count(rs, re_) > max_tokens:
            continue
        for k, c in enumerate(chunks):
            for p in (c.char_start, c.char_end):
                assert not rs < p < re_, (
                    f"chunk {k} [{c.char_start}:{c.char_end}]: boundary at {p} cuts the table row "
                    f"[{rs}:{re_}] {text[rs:re_][:40]!r} ({index.count(rs, re_)} tokens <= max_tokens {max_tokens})"
                )
