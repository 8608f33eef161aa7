"""The OpenAI-compatible API, driven by the official ``openai`` client against a real server on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest

from ragline.core.tokens import count_tokens
from ragline.core.serve_config import ServeConfig
from ragline.runner.engine import FlowRunner
from ragline.runner.openai_api import references
from ragline.runner.serve import create_app
from ragline.runner.spec import load_flow
from tests.runner.fake_openai import FakeOpenAI, Reply
from tests.runner.helpers import serving

pytestmark = pytest.mark.network  # loopback only
KEY = "chat-key"
QUESTION = "How often should the impeller seal be replaced?"
PRICES = {"extractive": {"prompt_per_mtok": 2.0, "completion_per_mtok": 10.0}}


@pytest.fixture(scope="module")
def runners(mini_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> list[FlowRunner]:
    import shutil

    from tests.conftest import REPO

    flow = tmp_path_factory.mktemp("flows") / "mini"
    shutil.copytree(REPO / "flows" / "qa", flow, ignore=shutil.ignore_patterns("__pycache__"))
    f = flow / "flow.yaml"
    f.write_text(f.read_text().replace("index: sample@latest", "index: mini@latest"))
    out = [FlowRunner(load_flow(flow), mini_registry), FlowRunner(load_flow(flow, "bm25"), mini_registry)]
    for r in out:
        r.warm_up()
    return out


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module")
def server(runners: list[FlowRunner], log_dir: Path) -> Iterator[str]:
    config = ServeConfig.model_validate({"prices": PRICES, "request_log": {"path": str(log_dir / "requests.sqlite")}})
    with serving(create_app(runners, api_key=KEY, config=config)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=30)


def test_models_one_per_flow_and_variant(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["qa", "qa:bm25"]
    assert models.data[1].model_extra["variant"] == "bm25"
    assert models.data[0].model_extra["indexes"][0]["version"] == "v0001"


def test_chat_completion_answers_with_citations_usage_and_cost(client: openai.OpenAI, runners: list[FlowRunner]) -> None:
    c = client.chat.completions.create(model="qa", messages=[
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Tell me about roses."},
        {"role": "assistant", "content": "Roses are pruned in late winter. [1]"},
        {"role": "user", "content": QUESTION}])
    expected = runners[0].run({"question": QUESTION})
    assert c.id.startswith("chatcmpl-") and c.model == "qa" and c.choices[0].finish_reason == "stop"
    content = c.choices[0].message.content
    assert content == expected.outputs["answer"] + references(expected.citations)
    assert "impeller seal every two years" in content and "\n\nReferences:\n[1] manuals/pump.pdf (p. 2)" in content
    cites = c.model_extra["citations"]
    assert [x["chunk_id"] for x in cites] == [x["chunk_id"] for x in expected.citations]
    assert cites[0]["source"] == "manuals/pump.pdf" and cites[0]["quotes"][0]["text"].startswith("Replace the impeller")
    assert c.usage.prompt_tokens == expected.tokens["prompt"] > 0
    assert c.usage.completion_tokens == count_tokens("Replace the impeller seal every two years or after 500 hours of running.")
    extra = c.model_extra["ragline"]
    assert extra["request_id"] == c.id.removeprefix("chatcmpl-")
    assert extra["cost_usd"] == pytest.approx((c.usage.prompt_tokens * 2 + c.usage.completion_tokens * 10) / 1e6)
    assert extra["indexes"] == [{"node": "retrieve", "ref": "mini@latest", "name": "mini", "version": "v0001"}]


def test_streaming_gives_the_same_text_in_openai_chunks(client: openai.OpenAI) -> None:
    question = "How do I look after roses?"
    whole = client.chat.completions.create(model="qa:bm25", messages=[{"role": "user", "content": question}])
    stream = client.chat.completions.create(model="qa:bm25", messages=[{"role": "user", "content": question}],
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    answer = whole.choices[0].message.content
    assert "".join(deltas) == answer
    n_sentences = whole.choices[0].message.content.split("\n\nReferences:")[0].count("\n") + 1
    assert n_sentences >= 2 and len(deltas) == n_sentences + 1  # one chunk per cited sentence, then references
    finals = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason == "stop"]
    assert len(finals) == 1
    assert [c["chunk_id"] for c in finals[0].model_extra["citations"]] == [
        c["chunk_id"] for c in whole.model_extra["citations"]]
    assert len({ch.id for ch in chunks}) == 1 and chunks[0].id != whole.id
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


@pytest.mark.parametrize("kwargs, param, words", [
    ({"messages": [{"role": "system", "content": "hi"}]}, "messages", "no user message"),
    ({"messages": []}, "messages", "non-empty"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "'robot' is not supported"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n", "only n=1"),
    ({"messages": [{"role": "user", "content": "hi"}],
      "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}, "tools", "tools"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
     "messages[0].content", "only text content"),
    ({"messages": [{"role": "user", "content": "x" * 2001}]}, "messages", "at most 2000 characters"),
])
def test_malformed_requests_get_openai_400s(client: openai.OpenAI, kwargs: dict, param: str, words: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="qa", **kwargs)
    assert e.value.status_code == 400
    err = e.value.body
    assert err["type"] == "invalid_request_error" and err["param"] == param and words in err["message"]


def test_unknown_model_wrong_key_and_bad_json(client: openai.OpenAI, server: str) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found" and "served: qa, qa:bm25" in e.value.body["message"]
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="qa", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    r = httpx.post(f"{server}/v1/chat/completions", content=b"{oops", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "request body is not valid JSON"


def test_openai_provider_relays_upstream_stream(mini_flow: Path, mini_registry: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    upstream = "Worker bees develop in 21 days [1]. Queens take 16 days [2]."
    with FakeOpenAI([Reply(content=upstream, usage={"prompt_tokens": 500, "completion_tokens": 20})]) as fake:
        f = mini_flow / "flow.yaml"
        f.write_text(f.read_text().replace("http://127.0.0.1:8000/v1", fake.base_url))
        runner = FlowRunner(load_flow(mini_flow, "openai_local"), mini_registry)
        config = ServeConfig.model_validate({"request_log": {"enabled": False},
                                             "prices": {"fake-model": {"prompt_per_mtok": 1.0}}})
        with serving(create_app(runner, api_key=KEY, config=config)) as url:
            c = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
            chunks = list(c.chat.completions.create(model="qa:openai_local", stream=True,
                                                    stream_options={"include_usage": True},
                                                    messages=[{"role": "user", "content": "How long?"}]))
        assert fake.requests[-1]["json"]["stream"] is True
        deltas = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
        assert deltas[:-1] == [w + " " for w in upstream.split(" ")[:-1]] + [upstream.split(" ")[-1]]
        assert deltas[-1].startswith("\n\nReferences:\n[1] ") and "\n[2] " in deltas[-1]
        assert chunks[-1].usage.prompt_tokens == 500 and chunks[-1].usage.completion_tokens == 20
        final = next(ch for ch in chunks if ch.choices and ch.choices[0].finish_reason)
        assert final.model_extra["ragline"]["cost_usd"] == pytest.approx(500 / 1e6)
        runner.close()


def test_openai_provider_counts_tokens_with_tiktoken_without_usage(mini_flow: Path, mini_registry: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    upstream = "Worker bees develop in 21 days [1]."
    with FakeOpenAI([Reply(content=upstream, usage=None)]) as fake:
        f = mini_flow / "flow.yaml"
        f.write_text(f.read_text().replace("http://127.0.0.1:8000/v1", fake.base_url))
        runner = FlowRunner(load_flow(mini_flow, "openai_local"), mini_registry)
        result = runner.run({"question": "How long does a worker take?"})
        runner.close()
    llm = next(t for t in result.trace if t.type == "llm")
    prompt = fake.requests[-1]["json"]["messages"][-1]["content"]
    assert llm.output["usage_source"] == "tiktoken"
    assert llm.tokens == {"prompt": count_tokens(prompt), "completion": count_tokens(upstream),
                          "total": count_tokens(prompt) + count_tokens(upstream)}


def test_upstream_failure_is_openai_502(mini_flow: Path, mini_registry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI([Reply(status=400, raw='{"error": "bad"}')]) as fake:
        f = mini_flow / "flow.yaml"
        f.write_text(f.read_text().replace("http://127.0.0.1:8000/v1", fake.base_url))
        runner = FlowRunner(load_flow(mini_flow, "openai_local"), mini_registry)
        with serving(create_app(runner, api_key=KEY)) as url:
            c = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
            for stream in (False, True):
                with pytest.raises(openai.APIStatusError) as e:
                    c.chat.completions.create(model="qa:openai_local", stream=stream,
                                              messages=[{"role": "user", "content": "How long?"}])
                assert e.value.status_code == 502 and e.value.body["type"] == "upstream_error"
        runner.close()
