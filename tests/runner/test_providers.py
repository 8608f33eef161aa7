"""The extractive provider (exact answers) and the openai provider against a loopback chat-completions server."""

from __future__ import annotations

import pytest

from ragline.core.tokens import count_tokens
from ragline.runner.errors import FlowSpecError, ProviderError
from ragline.runner.providers import FALLBACK_NOTE, ExtractiveProvider, OpenAIProvider
from ragline.runner.spec import LlmNodeSpec
from tests.runner.fake_openai import FakeOpenAI, Reply

C1 = ("Worker bees live about six weeks in summer. A queen emerges 16 days after the egg is laid, "
      "a worker takes 21 days and a drone 24 days.")
C2 = "Drones are males. They do not sting."
CHUNKS = [
    {"rank": 1, "chunk_id": "c1", "doc_id": "d1", "source": "bees.md", "page": None, "char_start": 100,
     "char_end": 100 + len(C1), "text": C1},
    {"rank": 2, "chunk_id": "c2", "doc_id": "d2", "source": "drones.pdf", "page": 3, "char_start": 0,
     "char_end": len(C2), "text": C2},
]
QUESTION = "How many days does a worker bee take to develop?"


def test_extractive_picks_the_best_sentences_with_quotes_and_offsets() -> None:
    r = ExtractiveProvider(max_answer_tokens=120, max_sentences=3).complete(QUESTION, CHUNKS, prompt="PROMPT TEXT")
    s2 = "A queen emerges 16 days after the egg is laid, a worker takes 21 days and a drone 24 days."
    s1 = "Worker bees live about six weeks in summer."
    assert r.answer == f"{s2} [1]\n{s1} [1]"
    assert [c["chunk_id"] for c in r.citations] == ["c1"]
    c = r.citations[0]
    assert (c["id"], c["source"], c["page"], c["char_start"], c["char_end"]) == (1, "bees.md", None, 100, 100 + len(C1))
    assert c["quotes"] == [
        {"text": s2, "char_start": 100 + C1.index(s2), "char_end": 100 + C1.index(s2) + len(s2)},
        {"text": s1, "char_start": 100, "char_end": 100 + len(s1)},
    ]
    assert r.usage.prompt_tokens == count_tokens("PROMPT TEXT")
    assert r.usage.completion_tokens == count_tokens(f"{s2} {s1}")


def test_extractive_respects_the_token_budget_and_is_deterministic() -> None:
    p = ExtractiveProvider(max_answer_tokens=12, max_sentences=3)
    a = p.complete(QUESTION, CHUNKS)
    assert a.answer == "Worker bees live about six weeks in summer. [1]"
    assert a == p.complete(QUESTION, CHUNKS)


def test_extractive_without_overlap_still_cites_the_top_chunk() -> None:
    r = ExtractiveProvider().complete("What colour is the sky?", CHUNKS)
    assert r.answer == "Worker bees live about six weeks in summer. [1]"
    assert r.info["note"] == FALLBACK_NOTE and r.citations[0]["chunk_id"] == "c1"


def test_extractive_refuses_non_chunks() -> None:
    with pytest.raises(TypeError, match="output of a retrieve node"):
        ExtractiveProvider().complete(QUESTION, "not chunks")  # type: ignore[arg-type]


def _provider(fake: FakeOpenAI, **kw: object) -> OpenAIProvider:
    args = {"model": "m", "api_key": "sk-test", "timeout_s": 2.0, "max_retries": 2, "backoff_s": 0.01, "backoff_max_s": 0.05}
    args.update(kw)
    return OpenAIProvider(fake.base_url, **args)  # type: ignore[arg-type]


def test_openai_answer_citations_usage_and_request() -> None:
    with FakeOpenAI([Reply(content="Workers take 21 days [1]. Drones do not sting [2].")]) as fake:
        p = _provider(fake, system="Be brief.")
        r = p.complete("PROMPT", CHUNKS)
        p.close()
    assert r.answer == "Workers take 21 days [1]. Drones do not sting [2]."
    assert [(c["id"], c["chunk_id"], c["source"], c["page"]) for c in r.citations] == [
        (1, "c1", "bees.md", None), (2, "c2", "drones.pdf", 3)]
    assert r.usage.to_dict() == {"prompt": 11, "completion": 7, "total": 18}
    assert r.info["attempts"] == 1 and r.info["citation_source"] == "markers"
    req = fake.requests[0]
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    assert req["json"] == {"model": "m", "temperature": 0.0, "max_tokens": 512, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "PROMPT"}]}


def test_openai_retries_5xx_and_429_then_succeeds() -> None:
    script = [Reply(status=500, raw='{"error": "boom"}'), Reply(status=429, raw="{}", headers={"Retry-After": "0"}),
              Reply(content="Twenty-one days [1].")]
    with FakeOpenAI(script) as fake:
        r = _provider(fake).complete("PROMPT", CHUNKS)
    assert r.info["attempts"] == 3 and len(fake.requests) == 3
    assert r.citations[0]["chunk_id"] == "c1"


def test_openai_gives_up_after_retries() -> None:
    with FakeOpenAI([Reply(status=503, raw='{"error": "down"}')]) as fake:
        with pytest.raises(ProviderError, match=r"HTTP 503 after 3 attempt\(s\)") as e:
            _provider(fake).complete("PROMPT", CHUNKS)
    assert e.value.status == 503 and len(fake.requests) == 3


def test_openai_client_errors_are_not_retried() -> None:
    with FakeOpenAI([Reply(status=401, raw='{"error": "bad key"}')]) as fake:
        with pytest.raises(ProviderError, match="HTTP 401") as e:
            _provider(fake).complete("PROMPT", CHUNKS)
    assert e.value.status == 401 and len(fake.requests) == 1


def test_openai_timeout() -> None:
    with FakeOpenAI([Reply(delay_s=1.0)]) as fake:
        with pytest.raises(ProviderError, match=r"timed out after 0.2 s \(2 attempt\(s\)\)"):
            _provider(fake, timeout_s=0.2, max_retries=1).complete("PROMPT", CHUNKS)


def test_openai_malformed_response() -> None:
    with FakeOpenAI([Reply(raw='{"choices": []}')]) as fake:
        with pytest.raises(ProviderError, match=r"no choices\[0\].message.content"):
            _provider(fake).complete("PROMPT", CHUNKS)


def test_openai_without_valid_markers_cites_lexically() -> None:
    with FakeOpenAI([Reply(content="A worker takes 21 days to emerge [9]. Drones are males.")]) as fake:
        r = _provider(fake).complete("PROMPT", CHUNKS)
    assert r.info["citation_source"] == "lexical" and r.info["invalid_markers"] == [9]
    assert [c["chunk_id"] for c in r.citations] == ["c1", "c2"]


def test_api_key_env_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAGLINE_TEST_KEY", raising=False)
    spec = LlmNodeSpec(name="answer", type="llm", provider="openai", base_url="http://127.0.0.1:9/v1", model="m",
                       prompt="${prompt.output}", chunks="${retrieve.output}", api_key_env="RAGLINE_TEST_KEY")
    with pytest.raises(FlowSpecError, match="environment variable RAGLINE_TEST_KEY"):
        OpenAIProvider.from_spec(spec, "flow.yaml:3: nodes[2]")
    monkeypatch.setenv("RAGLINE_TEST_KEY", "sk-env")
    p = OpenAIProvider.from_spec(spec, "flow.yaml:3: nodes[2]")
    assert p._client.headers["Authorization"] == "Bearer sk-env"
    p.close()
