"""Node executors: ``retrieve``, ``prompt``, ``llm`` and ``python``.

A node is prepared once (indexes opened, templates compiled, functions imported, HTTP
clients made) and then run many times, possibly from several threads. ``run(values)`` takes
the node's reference-bearing fields already resolved and returns a :class:`NodeOutput`.
"""

from __future__ import annotations

import json
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ragline.indexers.retrieval import ChunkFilter, RetrievalConfig
from ragline.runner.errors import FlowSpecError
from ragline.runner.spec import (
    Flow,
    LlmNodeSpec,
    PromptNodeSpec,
    PythonNodeSpec,
    RetrieveNodeSpec,
    load_python_function,
)


@dataclass(frozen=True)
class NodeOutput:
    """A node's result.

    Attributes:
        value: the output (JSON-ready).
        tokens: ``{"prompt", "completion", "total"}`` when the node counts tokens, else ``None``.
    """

    value: Any
    tokens: dict | None = None


def template_env(folder: Path) -> Any:
    """The Jinja2 environment of a flow: sandboxed, StrictUndefined, templates from the flow folder."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(folder)), undefined=jinja2.StrictUndefined,
        autoescape=False, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
    )


# ---------------------------------------------------------------- retrieve
_RETRIEVERS: dict[tuple, Any] = {}
_RETRIEVERS_LOCK = threading.Lock()


@dataclass(frozen=True)
class QueryEmbedding:
    """How retrieve nodes embed queries.

    Attributes:
        backend: ``"auto"`` (the default: the backend that built the index when its vectors
            are bf16/int8, which only that backend reproduces; ONNX Runtime for fp32 indexes)
            or an ``embed.backend`` name (``onnx``, ``torch``, ``openvino``, ...; checked
            against the index's embedder identity).
        threads: runtime intra-op threads per query (``None``: 2, or 1 on a one-core machine).
        cache_dir: folder of the model cache (``None``: ``.ragline/cache``).
    """

    backend: str = "auto"
    threads: int | None = None
    cache_dir: str | None = None


def open_retriever(root: str | Path, ref: str, query: QueryEmbedding = QueryEmbedding()) -> Any:
    """The :class:`indexers.retriever.Retriever` for ``ref`` under ``root``, shared per
    (root, name, version, query embedding settings).

    The alias is resolved now: a prepared flow keeps the version it resolved even if the
    alias moves later.

    Raises:
        RegistryError, CorruptRegistryError, OSError, SchemaMismatchError, IndexCompatibilityError.
    """
    from ragline.indexers.registry import IndexRegistry
    from ragline.indexers.retriever import Retriever

    registry = IndexRegistry(root)
    name, version = registry.resolve(ref)
    key = (str(Path(root).resolve()), name, version, query)
    with _RETRIEVERS_LOCK:
        if key not in _RETRIEVERS:
            _RETRIEVERS[key] = Retriever.open(registry, f"{name}@{version}", backend=query.backend,
                                              cache_dir=query.cache_dir, threads=query.threads)
        return _RETRIEVERS[key]


class RetrieveNode:
    """Runs a retrieve node: ``{"query", "filters"}`` in, list of hit dicts out
    (:meth:`core.records.Hit.to_dict`), retrieved as the runner's ``retrieval`` defaults
    overridden by the node's fields say."""

    def __init__(self, spec: RetrieveNodeSpec, index_root: str | Path, where: str,
                 query: QueryEmbedding = QueryEmbedding(), retrieval: RetrievalConfig = RetrievalConfig()) -> None:
        self.spec = spec
        self.root = Path(spec.root) if spec.root else Path(index_root)
        try:
            self.retriever = open_retriever(self.root, spec.index, query)
        except LookupError as e:  # RegistryError: unknown index / alias / version
            raise FlowSpecError(f"{where}: {e}") from e
        self.retrieval = spec.retrieval(retrieval)

    @property
    def index_info(self) -> dict:
        """Name, version, path and manifest summary of the version this node searches."""
        p = self.retriever.published
        m = p.manifest
        e = self.retriever.embedder
        query = {"backend": getattr(e, "backend", type(e).__name__)}
        if hasattr(e, "threads"):
            query["threads"] = e.threads
        return {"ref": self.spec.index, "name": p.name, "version": p.version, "path": str(p.path),
                "created_at": m.created_at, "params_hash": m.params_hash, "counts": dict(m.counts),
                "embedding": dict(m.embedding), "chunker": dict(m.chunker), "files": dict(m.files),
                "query_embedding": query, "retrieval": self.retrieval.record()}

    def run(self, values: dict) -> NodeOutput:
        """Search; ``values["query"]`` must be a non-empty string."""
        query = values["query"]
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        flt = ChunkFilter.from_mapping(values.get("filters") or {}, f"{self.spec.name}.filters")
        hits = self.retriever.search(query, self.retrieval, flt)
        return NodeOutput([h.to_dict() for h in hits])


# ---------------------------------------------------------------- prompt
class PromptNode:
    """Renders a Jinja2 template (StrictUndefined) over the node's ``inputs``."""

    def __init__(self, spec: PromptNodeSpec, folder: Path, where: str) -> None:
        self.spec = spec
        self.where = where
        env = template_env(folder)
        if spec.template is not None:
            self.template_name = str(folder / spec.template)
            self.template = env.get_template(spec.template)
        else:
            self.template_name = "<template_text>"
            self.template = env.from_string(spec.template_text or "")

    def run(self, values: dict) -> NodeOutput:
        """Render; a missing variable raises ``UndefinedError`` naming the template file and line."""
        import jinja2

        from ragline.core.tokens import count_tokens

        try:
            text = self.template.render(**values["inputs"])
        except jinja2.UndefinedError as e:
            line = next((f.lineno for f in reversed(traceback.extract_tb(e.__traceback__))
                         if f.filename == self.template_name or f.filename == "<template>"), None)
            loc = f"{self.template_name}:{line}" if line else self.template_name
            raise jinja2.UndefinedError(f"{loc} ({self.where}): {e.message}") from e
        return NodeOutput(text, {"prompt": count_tokens(text), "completion": 0, "total": count_tokens(text)})


# ---------------------------------------------------------------- llm
class LlmNode:
    """Calls the node's provider: ``{"prompt", "question", "chunks"}`` in, answer + citations out."""

    def __init__(self, spec: LlmNodeSpec, where: str) -> None:
        from ragline.runner.providers import ExtractiveProvider, OpenAIProvider

        self.spec = spec
        if spec.provider == "openai":
            self.provider: Any = OpenAIProvider.from_spec(spec, where)
        else:
            self.provider = ExtractiveProvider(spec.max_answer_tokens, spec.max_sentences)

    def run(self, values: dict) -> NodeOutput:
        """Answer; raises :class:`ProviderError` on endpoint failures."""
        chunks = values.get("chunks")
        prompt = values.get("prompt")
        question = values.get("question")
        for name, v in (("prompt", prompt), ("question", question)):
            if v is not None and not isinstance(v, str):
                raise TypeError(f"{name} must be a string, got {type(v).__name__}")
        if self.spec.provider == "openai":
            result = self.provider.complete(prompt, chunks, question)
        else:
            result = self.provider.complete(question, chunks, prompt)
        return NodeOutput(result.to_dict(), result.usage.to_dict())

    def close(self) -> None:
        """Release the provider's HTTP client."""
        close = getattr(self.provider, "close", None)
        if close:
            close()


# ---------------------------------------------------------------- python
class PythonNode:
    """Calls ``module:function`` from the flow folder with the node's ``inputs`` as keyword arguments."""

    def __init__(self, spec: PythonNodeSpec, folder: Path) -> None:
        self.spec = spec
        self.fn: Callable[..., Any] = load_python_function(folder, spec.function)

    def run(self, values: dict) -> NodeOutput:
        """Call the function; its result must be JSON-serializable."""
        out = self.fn(**values["inputs"])
        try:
            json.dumps(out)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{self.spec.function} returned a value that is not JSON-serializable: {e}") from e
        return NodeOutput(out)


def make_node(spec: Any, flow: Flow, index: int, index_root: str | Path, query: QueryEmbedding = QueryEmbedding(),
              retrieval: RetrievalConfig = RetrievalConfig()) -> Any:
    """Prepare the executor of ``spec`` (the ``index``-th node of ``flow``); retrieve nodes
    embed queries as ``query`` says and retrieve with ``retrieval`` overridden by their fields.

    Raises:
        FlowSpecError: an index alias or version does not exist, an API key variable is unset.
    """
    where = flow.where("nodes", index, "index" if isinstance(spec, RetrieveNodeSpec) else "type")
    if isinstance(spec, RetrieveNodeSpec):
        return RetrieveNode(spec, index_root, where, query, retrieval)
    if isinstance(spec, PromptNodeSpec):
        return PromptNode(spec, flow.folder, flow.where("nodes", index, "template"))
    if isinstance(spec, LlmNodeSpec):
        return LlmNode(spec, flow.where("nodes", index, "api_key_env" if spec.api_key_env else "provider"))
    if isinstance(spec, PythonNodeSpec):
        return PythonNode(spec, flow.folder)
    raise FlowSpecError(f"{where}: unknown node type {type(spec).__name__}")  # pragma: no cover
