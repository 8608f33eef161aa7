"""Flow spec validation: every bad input is refused before running, naming the file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragline.runner.errors import FlowSpecError
from ragline.runner.spec import load_flow, parse_ref, topological_order
from tests.conftest import REPO

BASE = """\
name: t
inputs:
  question: {type: string}
nodes:
  - name: retrieve
    type: retrieve
    index: mini@latest
    query: ${inputs.question}
  - name: prompt
    type: prompt
    template_text: "Q: {{ question }} ({{ chunks | length }} chunks)"
    inputs:
      question: ${inputs.question}
      chunks: ${retrieve.output}
  - name: answer
    type: llm
    question: ${inputs.question}
    prompt: ${prompt.output}
    chunks: ${retrieve.output}
outputs:
  answer: ${answer.output.answer}
"""


def write_flow(folder: Path, text: str, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flow.yaml").write_text(text)
    for name, body in (files or {}).items():
        (folder / name).write_text(body)
    return folder


def error_of(folder: Path, variant: str | None = None) -> str:
    with pytest.raises(FlowSpecError) as e:
        load_flow(folder, variant)
    return str(e.value)


def test_default_flow_and_all_its_variants_validate() -> None:
    flow = load_flow(REPO / "flows" / "qa")
    assert flow.order == ("retrieve", "prompt", "answer", "sources")
    assert flow.deps["answer"] == ("prompt", "retrieve")
    assert load_flow(REPO / "flows" / "qa", "bm25").spec.node("retrieve").mode == "bm25"
    assert load_flow(REPO / "flows" / "qa", "k10").spec.node("retrieve").k == 10


def test_refs_parse() -> None:
    r = parse_ref("answer.output.citations")
    assert (r.kind, r.name, r.path) == ("node", "answer", ("citations",))
    assert parse_ref("inputs.question").kind == "inputs"
    with pytest.raises(ValueError, match=r"\$\{answer.output\[.field\]\}"):
        parse_ref("answer.outputs")


def test_malformed_yaml_names_file_line_and_column(tmp_path: Path) -> None:
    f = write_flow(tmp_path / "f", "name: t\nnodes:\n  - name: a\n   type: retrieve\n")
    msg = error_of(f)
    assert msg.startswith(f"{f / 'flow.yaml'}:4:") and "malformed YAML" in msg


def test_unknown_node_type(tmp_path: Path) -> None:
    f = write_flow(tmp_path / "f", BASE.replace("type: prompt", "type: summarize"))
    assert error_of(f) == (f"{f / 'flow.yaml'}:9: nodes[1] (node 'prompt'): unknown node type 'summarize'; "
                           "allowed: retrieve, prompt, llm, python")


def test_unknown_field_and_bad_value(tmp_path: Path) -> None:
    f = write_flow(tmp_path / "f", BASE.replace("    query: ${inputs.question}\n",
                                                "    query: ${inputs.question}\n    mode: sparse\n    topk: 3\n"))
    msg = error_of(f)
    assert f"{f / 'flow.yaml'}:9: nodes[0] (node 'retrieve').mode: Input should be 'dense', 'bm25' or 'hybrid'" in msg
    assert f"{f / 'flow.yaml'}:10: nodes[0] (node 'retrieve').topk: unknown field" in msg


def test_unknown_references(tmp_path: Path) -> None:
    f = write_flow(tmp_path / "f", BASE.replace("chunks: ${retrieve.output}\noutputs", "chunks: ${search.output}\noutputs")
                   .replace("question: ${inputs.question}\n    prompt", "question: ${inputs.query}\n    prompt"))
    msg = error_of(f)
    assert (f"{f / 'flow.yaml'}:17: nodes[2] (node 'answer').question: unknown reference ${{inputs.query}}: "
            "the flow declares no input 'query' (inputs: question)") in msg
    assert (f"{f / 'flow.yaml'}:19: nodes[2] (node 'answer').chunks: unknown reference ${{search.output}}: "
            "no node named 'search' (nodes: retrieve, prompt, answer)") in msg


def test_cycles_are_rejected(tmp_path: Path) -> None:
    text = BASE.replace("query: ${inputs.question}", "query: ${answer.output.answer}")
    f = write_flow(tmp_path / "f", text)
    assert error_of(f) == (f"{f / 'flow.yaml'}:8: nodes[0] (node 'retrieve').query: the nodes form a cycle: "
                           "retrieve -> answer -> prompt -> retrieve; a node may only use outputs of nodes "
                           "that do not depend on it")
    self_ref = BASE.replace("prompt: ${prompt.output}", "prompt: ${answer.output}")
    assert "cycle: answer -> answer" in error_of(write_flow(tmp_path / "g", self_ref))


def test_topological_order_is_stable() -> None:
    order, cycle = topological_order(["a", "b", "c", "d"], {"a": (), "b": ("d",), "c": ("a",), "d": ()})
    assert (order, cycle) == (["a", "c", "d", "b"], None)


def test_template_problems(tmp_path: Path) -> None:
    missing = write_flow(tmp_path / "a", BASE.replace("{{ chunks | length }}", "{{ passages }}"))
    assert error_of(missing) == (f"{missing / 'flow.yaml'}:11: nodes[1] (node 'prompt').template_text: template "
                                 "<template_text> uses passages but node 'prompt' gives only inputs: question, "
                                 "chunks; add them under inputs")
    file_flow = BASE.replace('template_text: "Q: {{ question }} ({{ chunks | length }} chunks)"', "template: p.jinja2")
    nofile = write_flow(tmp_path / "b", file_flow)
    assert f"template file {(nofile / 'p.jinja2').resolve()} does not exist" in error_of(nofile)
    syntax = write_flow(tmp_path / "c", file_flow, {"p.jinja2": "line one\n{% for c in chunks %}\n"})
    assert f"template syntax error at {(syntax / 'p.jinja2').resolve()}:" in error_of(syntax)
    escape = write_flow(tmp_path / "d", file_flow.replace("p.jinja2", "../x.jinja2"))
    assert "must be inside the flow folder" in error_of(escape)


def test_python_node_problems(tmp_path: Path) -> None:
    node = ("  - name: post\n    type: python\n    function: {fn}\n    inputs:\n      answer: ${{answer.output.answer}}\n"
            "outputs:")
    missing_mod = write_flow(tmp_path / "a", BASE.replace("outputs:", node.format(fn="tools:shout")))
    assert f"module file {missing_mod / 'tools.py'} does not exist" in error_of(missing_mod)
    bad_sig = write_flow(tmp_path / "b", BASE.replace("outputs:", node.format(fn="tools:shout")),
                         {"tools.py": "def shout(text):\n    return text.upper()\n"})
    msg = error_of(bad_sig)
    assert "nodes[3] (node 'post').inputs: inputs answer are not parameters of tools:shout(text)" in msg
    assert "tools:shout(text) needs text" in msg
    no_fn = write_flow(tmp_path / "c", BASE.replace("outputs:", node.format(fn="tools:whisper")),
                       {"tools.py": "def shout(answer):\n    return answer.upper()\n"})
    assert "has no function 'whisper'" in error_of(no_fn)
    ok = write_flow(tmp_path / "d", BASE.replace("outputs:", node.format(fn="tools:shout")),
                    {"tools.py": "def shout(answer):\n    return answer.upper()\n"})
    assert load_flow(ok).order[-1] == "post"


def test_variants(tmp_path: Path) -> None:
    text = BASE + "variants:\n  dense:\n    retrieve: {mode: dense, k: 3}\n  broken:\n    retrieve:\n      k: 0\n"
    f = write_flow(tmp_path / "f", text)
    with pytest.raises(FlowSpecError) as e:
        load_flow(f, "dense")  # every variant is validated, so the broken one fails the load
    assert str(e.value) == (f"{f / 'flow.yaml'}:27: variants.broken.retrieve.k: Input should be greater than or "
                            "equal to 1 (variant 'broken')")
    good = write_flow(tmp_path / "g", BASE + "variants:\n  dense:\n    retrieve: {mode: dense, k: 3}\n")
    spec = load_flow(good, "dense").spec.node("retrieve")
    assert (spec.mode, spec.k) == ("dense", 3)
    assert "no variant 'sparse' (variants: dense)" in error_of(good, "sparse")
    unknown_node = write_flow(tmp_path / "h", BASE + "variants:\n  x:\n    rerank: {k: 3}\n")
    assert "variant 'x' overrides unknown node 'rerank'" in error_of(unknown_node)


def test_other_structural_errors(tmp_path: Path) -> None:
    dup = write_flow(tmp_path / "a", BASE.replace("  - name: answer", "  - name: prompt"))
    assert "duplicate node name 'prompt'" in error_of(dup)
    ref_in_static = write_flow(tmp_path / "b", BASE.replace("index: mini@latest", "index: ${inputs.question}"))
    assert "field 'index' cannot hold references" in error_of(ref_in_static)
    openai = write_flow(tmp_path / "c", BASE.replace("    question: ${inputs.question}\n    prompt",
                                                     "    provider: openai\n    question: ${inputs.question}\n    prompt"))
    assert "nodes[2] (node 'answer'): provider openai needs base_url, model" in error_of(openai)
    assert "no such flow file" in error_of(tmp_path / "nowhere")
    listing = write_flow(tmp_path / "d", "- just\n- a list\n")
    assert "a flow file must be a mapping" in error_of(listing)


@pytest.mark.parametrize("ref", ["../elsewhere/indexes/x", "mini@../../../some/path", "mini@", "x" * 101])
def test_retrieve_index_goes_through_the_registry_reference_parser(tmp_path: Path, ref: str) -> None:
    """Issue 11 defect 4: a flow file's index reference is parsed like the CLI's (no paths)."""
    f = write_flow(tmp_path / "f", BASE.replace("index: mini@latest", f"index: '{ref}'"))
    msg = error_of(f)
    assert f"{f / 'flow.yaml'}:" in msg and "nodes[0] (node 'retrieve').index" in msg and ("bad " in msg or "longer" in msg)
