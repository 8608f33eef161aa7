"""Run a validated flow: inputs checked, nodes executed in dependency order, every node traced."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ragline.runner.errors import FlowInputError, NodeError
from ragline.indexers.retrieval import RetrievalConfig
from ragline.runner.nodes import LlmNode, NodeOutput, QueryEmbedding, RetrieveNode, make_node
from ragline.runner.spec import Flow, InputSpec, follow, resolve_value

_TYPES = {"string": str, "integer": int, "number": float, "boolean": bool, "list": list, "object": dict}


@dataclass(frozen=True)
class NodeTrace:
    """What one node did in one run.

    Attributes:
        node: node name.
        type: node type.
        inputs: the node's resolved reference-bearing fields.
        output: its output (``None`` when it failed).
        latency_ms: wall time in milliseconds.
        tokens: ``{"prompt", "completion", "total"}`` or ``None``.
        error: ``"ErrorType: message"`` when it failed.
    """

    node: str
    type: str
    inputs: dict
    output: Any
    latency_ms: float
    tokens: dict | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"node": self.node, "type": self.type, "inputs": self.inputs, "output": self.output,
                "latency_ms": round(self.latency_ms, 3), "tokens": self.tokens, "error": self.error}


@dataclass(frozen=True)
class FlowResult:
    """One run of a flow.

    Attributes:
        inputs: validated inputs (defaults filled in).
        outputs: the flow's declared outputs.
        citations: citations of the last llm node (every cited chunk: chunk_id, source, page, ...).
        retrieved: output of the last retrieve node (ranked chunk dicts), for evaluation.
        trace: per-node traces in execution order.
        latency_ms: wall time of the whole run.
    """

    inputs: dict
    outputs: dict
    citations: list[dict]
    retrieved: list[dict]
    trace: list[NodeTrace]
    latency_ms: float

    @property
    def tokens(self) -> dict:
        """Token totals over nodes that report usage from a model (llm nodes)."""
        tot = {"prompt": 0, "completion": 0, "total": 0}
        for t in self.trace:
            if t.type == "llm" and t.tokens:
                for k in tot:
                    tot[k] += int(t.tokens.get(k, 0))
        return tot

    def to_dict(self, trace: bool = True) -> dict:
        """JSON-ready dict (``trace`` false leaves the per-node traces out)."""
        d = {"inputs": self.inputs, "outputs": self.outputs, "citations": self.citations,
             "latency_ms": round(self.latency_ms, 3), "tokens": self.tokens}
        if trace:
            d["trace"] = [t.to_dict() for t in self.trace]
        return d


def inputs_model(flow: Flow) -> type[BaseModel]:
    """A pydantic model of the flow's inputs (unknown inputs forbidden), used by the runner and the server."""
    fields: dict[str, Any] = {}
    for name, spec in flow.spec.inputs.items():
        fields[name] = _field(spec)
    return create_model(f"{flow.name.title().replace('_', '')}Inputs", __config__=ConfigDict(extra="forbid"), **fields)


def _field(spec: InputSpec) -> tuple:
    typ: Any = _TYPES[spec.type]
    kwargs: dict[str, Any] = {"description": spec.description or None}
    if spec.type == "string":
        if spec.min_chars is not None:
            kwargs["min_length"] = spec.min_chars
        if spec.max_chars is not None:
            kwargs["max_length"] = spec.max_chars
    if spec.required:
        return (typ, Field(..., **kwargs))
    return (typ | None if spec.default is None else typ, Field(default=spec.default, **kwargs))


class FlowRunner:
    """A prepared flow: indexes opened, templates compiled, functions imported, providers built.

    Args:
        flow: the validated flow.
        index_root: registry folder for retrieve nodes without their own ``root``.
        query: how retrieve nodes embed queries (:class:`runner.nodes.QueryEmbedding`): ONNX
            Runtime with two non-spinning threads by default. The vectors equal torch's within 1e-4, so
            the choice changes latency, not results.
        torch_threads: torch intra-op threads set by :meth:`warm_up` when a retrieve node embeds
            queries with torch (``query.backend == "torch"`` or an ONNX fallback; process-wide;
            ``None`` keeps torch's default). One thread suits one short query per call: on a
            busy 2-core machine two threads made a MiniLM query take ~950 ms at p50 against ~17 ms.
        retrieval: the retrieval defaults of retrieve nodes (the ``retrieval:`` section of
            params.yaml); a node's own fields override them.

    Raises:
        FlowSpecError: an index alias or version does not exist, an API key variable is unset.
        CorruptRegistryError, OSError, IndexCompatibilityError: a damaged or incompatible index.
    """

    def __init__(self, flow: Flow, index_root: str | Path = "indexes", query: QueryEmbedding = QueryEmbedding(),
                 torch_threads: int | None = 1, retrieval: RetrievalConfig = RetrievalConfig()) -> None:
        self.flow = flow
        self.index_root = Path(index_root)
        self.query = query
        self.torch_threads = torch_threads
        self.retrieval = retrieval
        specs = {n.name: (i, n) for i, n in enumerate(flow.spec.nodes)}
        self.nodes = {name: make_node(specs[name][1], flow, specs[name][0], index_root, query, retrieval)
                      for name in flow.order}
        self.specs = {name: specs[name][1] for name in flow.order}
        self.inputs_model = inputs_model(flow)
        retrieves = [n for n in flow.order if isinstance(self.nodes[n], RetrieveNode)]
        llms = [n for n in flow.order if isinstance(self.nodes[n], LlmNode)]
        self._retrieve_node = retrieves[-1] if retrieves else None
        self._llm_node = llms[-1] if llms else None

    @property
    def indexes(self) -> list[dict]:
        """For each retrieve node: node name + the index version it searches."""
        return [{"node": n, **node.index_info} for n, node in self.nodes.items() if isinstance(node, RetrieveNode)]

    def warm_up(self) -> None:
        """Load embedding models and the tokenizer now (the first query would otherwise pay for it)."""
        from ragline.core.tokens import count_tokens

        from ragline.indexers.embedders import SentenceTransformerEmbedder

        count_tokens("warm up")
        retrievers = [n.retriever for n in self.nodes.values() if isinstance(n, RetrieveNode)]
        for r in retrievers:
            warm = getattr(r.embedder, "warm_up", None)
            if warm:
                warm()  # loads (or exports) the model; an ONNX fallback to torch is known after this
        if self.torch_threads and any(isinstance(r.embedder, SentenceTransformerEmbedder)
                                      or getattr(r.embedder, "uses_torch", False) for r in retrievers):
            import torch

            torch.set_num_threads(self.torch_threads)
        for r in retrievers:
            r.warm_up()

    def close(self) -> None:
        """Release HTTP clients."""
        for node in self.nodes.values():
            if isinstance(node, LlmNode):
                node.close()

    def validate_inputs(self, inputs: dict) -> dict:
        """Check and coerce inputs against the declared ones.

        Raises:
            FlowInputError: unknown, missing or ill-typed inputs (names them).
        """
        try:
            return self.inputs_model.model_validate(inputs).model_dump()
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'inputs'}: {err['msg']}" for err in e.errors())
            raise FlowInputError(f"flow {self.flow.name!r} inputs: {problems} "
                                 f"(declared: {', '.join(self.flow.spec.inputs) or 'none'})") from e

    def run(self, inputs: dict) -> FlowResult:
        """Run the flow once.

        Args:
            inputs: input name -> value.

        Returns:
            The result with outputs, citations, retrieved chunks and per-node traces.

        Raises:
            FlowInputError: bad inputs (nothing ran).
            NodeError: a node failed; ``.trace`` holds the traces so far (the failed node last).
        """
        started = time.perf_counter()
        values = self.validate_inputs(inputs)
        outputs: dict[str, Any] = {}
        trace: list[NodeTrace] = []

        def lookup(ref: Any) -> Any:
            if ref.kind == "inputs":
                return follow(values[ref.name], ref.path, ref.text)
            if ref.kind == "node":
                return follow(outputs[ref.name], ref.path, ref.text)
            raise KeyError(f"{ref.text}: ${{data.*}} references are only valid in batch --column mappings")

        for name in self.flow.order:
            spec, node = self.specs[name], self.nodes[name]
            t0 = time.perf_counter()
            resolved: dict = {}
            try:
                for f in spec.REF_FIELDS:
                    v = getattr(spec, f)
                    resolved[f] = resolve_value(v.model_dump() if isinstance(v, BaseModel) else v, lookup)
                out: NodeOutput = node.run(resolved)
            except Exception as e:  # any node failure is reported with the node's name and trace
                ms = (time.perf_counter() - t0) * 1000
                msg = f"{type(e).__name__}: {e}"
                trace.append(NodeTrace(name, spec.type, resolved, None, ms, None, msg))
                raise NodeError(f"{self.flow.file}: node {name!r} ({spec.type}) failed: {msg}", name, trace) from e
            ms = (time.perf_counter() - t0) * 1000
            outputs[name] = out.value
            trace.append(NodeTrace(name, spec.type, resolved, out.value, ms, out.tokens))
        try:
            flow_outputs = {k: resolve_value(v, lookup) for k, v in self.flow.spec.outputs.items()}
        except KeyError as e:
            raise NodeError(f"{self.flow.file}: outputs: {e.args[0] if e.args else e}", "outputs", trace) from e
        citations = list(outputs[self._llm_node].get("citations", [])) if self._llm_node else []
        retrieved = list(outputs[self._retrieve_node]) if self._retrieve_node else []
        return FlowResult(values, flow_outputs, citations, retrieved, trace, (time.perf_counter() - started) * 1000)


__all__ = ["FlowRunner", "FlowResult", "NodeTrace", "inputs_model"]
