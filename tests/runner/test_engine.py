"""Running flows: outputs, citations that point to retrieved chunks, traces, and clear failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragline.runner.engine import FlowRunner
from ragline.runner.errors import FlowInputError, FlowSpecError, NodeError
from ragline.runner.spec import load_flow
from tests.runner.fake_openai import FakeOpenAI, Reply

PUMP_Q = "How often should the impeller seal be replaced?"


def test_default_flow_answers_with_citations_and_trace(mini_flow: Path, mini_registry: Path) -> None:
    runner = FlowRunner(load_flow(mini_flow), mini_registry)
    r = runner.run({"question": PUMP_Q})
    assert r.outputs["answer"] == "Replace the impeller seal every two years or after 500 hours of running. [1]"
    assert r.outputs["citations"] == r.citations
    (c,) = r.citations
    retrieved = {h["chunk_id"]: h for h in r.retrieved}
    assert c["chunk_id"] in retrieved and (c["source"], c["page"]) == ("manuals/pump.pdf", 2)
    assert r.outputs["sources"] == [{"source": "manuals/pump.pdf", "pages": [2]}]
    assert [t.node for t in r.trace] == ["retrieve", "prompt", "answer", "sources"]
    assert all(t.latency_ms >= 0 and t.error is None for t in r.trace)
    assert r.trace[0].inputs == {"query": PUMP_Q, "filters": {"source": None, "doc_id": None, "page": None, "section": None}}
    assert len(r.trace[0].output) == 5
    assert "Question: " + PUMP_Q in r.trace[1].output
    assert r.trace[2].tokens["prompt"] == r.trace[1].tokens["prompt"] > 0
    assert r.tokens == r.trace[2].tokens
    assert runner.indexes[0]["name"] == "mini" and runner.indexes[0]["version"] == "v0001"


def test_filter_input_restricts_retrieval(mini_flow: Path, mini_registry: Path) -> None:
    runner = FlowRunner(load_flow(mini_flow), mini_registry)
    r = runner.run({"question": "water", "source": "*.md"})
    assert r.retrieved and {h["source"] for h in r.retrieved} <= {"garden/roses.md", "garden/tomatoes.md"}


def test_variants_change_the_node(mini_flow: Path, mini_registry: Path) -> None:
    r = FlowRunner(load_flow(mini_flow, "bm25"), mini_registry).run({"question": PUMP_Q})
    assert [h["retriever_ranks"] for h in r.retrieved] == [{"bm25": 1}]
    r = FlowRunner(load_flow(mini_flow, "k10"), mini_registry).run({"question": "pump"})
    assert len(r.retrieved) == 9  # k=10 over a 9-chunk index


def test_bad_inputs_are_refused_before_running(mini_flow: Path, mini_registry: Path) -> None:
    runner = FlowRunner(load_flow(mini_flow), mini_registry)
    with pytest.raises(FlowInputError, match="question: Field required"):
        runner.run({})
    with pytest.raises(FlowInputError, match="topic: Extra inputs are not permitted"):
        runner.run({"question": "x", "topic": "y"})
    with pytest.raises(FlowInputError, match="question: String should have at most 2000 characters"):
        runner.run({"question": "x" * 2001})


def test_unknown_alias_names_file_line_and_field(mini_flow: Path, mini_registry: Path) -> None:
    f = mini_flow / "flow.yaml"
    f.write_text(f.read_text().replace("mini@latest", "mini@prod"))
    with pytest.raises(FlowSpecError) as e:
        FlowRunner(load_flow(mini_flow), mini_registry)
    assert str(e.value) == f"{f}:20: nodes[0] (node 'retrieve').index: index 'mini' has no alias 'prod' (aliases: latest)"


def test_missing_template_attribute_names_template_file_and_line(mini_flow: Path, mini_registry: Path) -> None:
    (mini_flow / "prompt.jinja2").write_text("Q: {{ question }}\n{% for c in chunks %}{{ c.title }}{% endfor %}\n")
    runner = FlowRunner(load_flow(mini_flow), mini_registry)
    with pytest.raises(NodeError) as e:
        runner.run({"question": PUMP_Q})
    assert e.value.node == "prompt"
    assert f"{mini_flow / 'prompt.jinja2'}:2 (" in str(e.value) and "has no attribute 'title'" in str(e.value)
    assert [t.node for t in e.value.trace] == ["retrieve", "prompt"] and e.value.trace[-1].error


def test_python_node_must_return_json(tmp_path: Path, mini_flow: Path, mini_registry: Path) -> None:
    (mini_flow / "helpers.py").write_text("def list_sources(citations):\n    return {1, 2}\n")
    with pytest.raises(NodeError, match="not JSON-serializable"):
        FlowRunner(load_flow(mini_flow), mini_registry).run({"question": PUMP_Q})


def test_openai_provider_inside_a_flow(mini_flow: Path, mini_registry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-flow")
    with FakeOpenAI([Reply(content="Every two years or 500 hours [1].")]) as fake:
        f = mini_flow / "flow.yaml"
        f.write_text(f.read_text().replace("http://127.0.0.1:8000/v1", fake.base_url))
        runner = FlowRunner(load_flow(mini_flow, "openai_local"), mini_registry)
        r = runner.run({"question": PUMP_Q})
        runner.close()
    assert r.outputs["answer"] == "Every two years or 500 hours [1]."
    assert r.citations[0]["chunk_id"] == r.retrieved[0]["chunk_id"]
    assert r.trace[2].tokens == {"prompt": 11, "completion": 7, "total": 18}
    sent = fake.requests[0]
    assert sent["headers"]["Authorization"] == "Bearer sk-flow"
    assert sent["json"]["messages"][-1]["content"] == r.trace[1].output


def test_openai_failure_is_a_node_error(mini_flow: Path, mini_registry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-flow")
    with FakeOpenAI([Reply(status=400, raw='{"error": "bad request"}')]) as fake:
        f = mini_flow / "flow.yaml"
        f.write_text(f.read_text().replace("http://127.0.0.1:8000/v1", fake.base_url))
        runner = FlowRunner(load_flow(mini_flow, "openai_local"), mini_registry)
        with pytest.raises(NodeError, match=r"node 'answer' \(llm\) failed: ProviderError: .*HTTP 400"):
            runner.run({"question": PUMP_Q})


def test_variant_can_swap_the_template(mini_flow: Path, mini_registry: Path) -> None:
    (mini_flow / "short.jinja2").write_text("{{ question }} / {{ chunks | length }} passages")
    f = mini_flow / "flow.yaml"
    f.write_text(f.read_text() + "  short_prompt:\n    prompt: {template: short.jinja2}\n"
                 "  inline_prompt:\n    prompt: {template_text: 'Q={{ question }}'}\n")
    r = FlowRunner(load_flow(mini_flow, "short_prompt"), mini_registry).run({"question": PUMP_Q})
    assert r.trace[1].output == f"{PUMP_Q} / 5 passages"
    r = FlowRunner(load_flow(mini_flow, "inline_prompt"), mini_registry).run({"question": PUMP_Q})
    assert r.trace[1].output == f"Q={PUMP_Q}"
