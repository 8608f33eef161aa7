"""Flow specification: ``flows/<name>/flow.yaml`` parsed, validated with pydantic, and turned into a DAG.

A flow is a folder holding ``flow.yaml`` and the files it names (Jinja2 templates, Python
modules). The YAML declares ``inputs``, ``nodes`` and ``outputs`` (and optional ``variants``)::

    name: qa
    inputs:
      question: {type: string, min_chars: 1, max_chars: 2000}
    nodes:
      - {name: retrieve, type: retrieve, index: sample@latest, query: "${inputs.question}", k: 5}
      - {name: prompt, type: prompt, template: prompt.jinja2,
         inputs: {question: "${inputs.question}", chunks: "${retrieve.output}"}}
      - {name: answer, type: llm, provider: extractive, prompt: "${prompt.output}",
         question: "${inputs.question}", chunks: "${retrieve.output}"}
    outputs:
      answer: ${answer.output.answer}
    variants:
      bm25: {retrieve: {mode: bm25}}

References are ``${inputs.NAME}`` and ``${NODE.output}`` (optionally followed by ``.field``
steps into the output). A value that is exactly one reference takes the referenced object;
references inside a longer string are interpolated as text. Everything is checked before
anything runs: YAML syntax, node types and fields (pydantic), references, cycles, template
files and their variables, Python functions and their parameters. Errors name the file, the
line and the field. The node graph is ordered topologically with Kahn's algorithm (Kahn,
"Topological sorting of large networks", CACM 1962), ties in declaration order.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Iterator, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ragline.core.errors import pydantic_message
from ragline.indexers.retrieval import RETRIEVAL_FIELDS, Fusion, Mode, RetrievalConfig, Weights
from ragline.runner.errors import FlowSpecError

FLOW_FILE = "flow.yaml"
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
NODE_TYPES = ("retrieve", "prompt", "llm", "python")
REF_RE = re.compile(r"\$\{([^}]*)\}")
_STEP_RE = re.compile(r"^[A-Za-z0-9_-]+$")


# ---------------------------------------------------------------- references
@dataclass(frozen=True, slots=True)
class Ref:
    """A parsed reference.

    Attributes:
        kind: ``inputs`` (a flow input), ``node`` (a node's output) or ``data`` (a batch data field).
        name: the input name, node name or first data field.
        path: further steps into the value (dict keys or list indexes).
        text: the reference as written, ``${...}``.
    """

    kind: Literal["inputs", "node", "data"]
    name: str
    path: tuple[str, ...]
    text: str


def parse_ref(body: str, allow_data: bool = False) -> Ref:
    """Parse the inside of ``${...}``.

    Raises:
        ValueError: not ``inputs.NAME``, ``NODE.output[.step...]`` (or ``data.FIELD`` when allowed).
    """
    text = "${" + body + "}"
    parts = body.strip().split(".")
    if any(not _STEP_RE.match(p) for p in parts) or len(parts) < 2:
        forms = "${inputs.NAME} or ${NODE.output[.field]}" + (" or ${data.FIELD}" if allow_data else "")
        raise ValueError(f"bad reference {text}: use {forms}")
    head, rest = parts[0], parts[1:]
    if head == "inputs":
        return Ref("inputs", rest[0], tuple(rest[1:]), text)
    if head == "data":
        if not allow_data:
            raise ValueError(f"{text}: ${{data.*}} references are only allowed in batch --column mappings")
        return Ref("data", rest[0], tuple(rest[1:]), text)
    if rest[0] != "output":
        raise ValueError(f"bad reference {text}: node references take the form ${{{head}.output[.field]}}")
    return Ref("node", head, tuple(rest[1:]), text)


def iter_refs(value: Any, allow_data: bool = False) -> Iterator[Ref]:
    """Every reference inside a value (strings, lists and dicts, recursively)."""
    if isinstance(value, str):
        for m in REF_RE.finditer(value):
            yield parse_ref(m.group(1), allow_data)
    elif isinstance(value, dict):
        for v in value.values():
            yield from iter_refs(v, allow_data)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from iter_refs(v, allow_data)


def follow(value: Any, path: tuple[str, ...], ref_text: str) -> Any:
    """Step into ``value`` along ``path`` (dict keys, list indexes or attributes).

    Raises:
        KeyError: a step does not exist (message names the reference and the step).
    """
    for step in path:
        if isinstance(value, dict):
            if step not in value:
                raise KeyError(f"{ref_text}: no field {step!r} (fields: {', '.join(map(str, value)) or 'none'})")
            value = value[step]
        elif isinstance(value, (list, tuple)):
            try:
                value = value[int(step)]
            except (ValueError, IndexError):
                raise KeyError(f"{ref_text}: no item {step!r} in a list of {len(value)}") from None
        else:
            raise KeyError(f"{ref_text}: cannot take {step!r} of a {type(value).__name__}")
    return value


def resolve_value(value: Any, lookup: Any) -> Any:
    """Replace references in ``value`` using ``lookup(ref) -> object``.

    A string that is exactly one reference becomes the referenced object; references inside
    longer strings are interpolated (non-strings as ``str``). Lists and dicts are walked.
    """
    if isinstance(value, str):
        m = REF_RE.fullmatch(value.strip())
        if m:
            return lookup(parse_ref(m.group(1), allow_data=True))
        if "${" not in value:
            return value
        return REF_RE.sub(lambda mm: _as_text(lookup(parse_ref(mm.group(1), allow_data=True))), value)
    if isinstance(value, dict):
        return {k: resolve_value(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_value(v, lookup) for v in value]
    return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def is_single_ref(value: Any) -> bool:
    """True when ``value`` is a string holding exactly one reference and nothing else."""
    return isinstance(value, str) and REF_RE.fullmatch(value.strip()) is not None


# ---------------------------------------------------------------- pydantic models
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Model):
    """One flow input.

    Attributes:
        type: ``string`` | ``integer`` | ``number`` | ``boolean`` | ``list`` | ``object``.
        description: shown in ``/metadata`` and the OpenAPI schema.
        default: value when the input is not given; an input without ``default`` is required.
        min_chars, max_chars: length bounds of string inputs (characters).
    """

    type: Literal["string", "integer", "number", "boolean", "list", "object"] = "string"
    description: str = ""
    default: Any = None
    min_chars: int | None = Field(default=None, ge=0)
    max_chars: int | None = Field(default=None, ge=1)

    @property
    def required(self) -> bool:
        """True when no default is declared."""
        return "default" not in self.model_fields_set


class PageRange(_Model):
    """Inclusive page range."""

    min: int | None = None
    max: int | None = None


class FilterSpec(_Model):
    """Metadata filters of a retrieve node (values may be references; null = no filter).

    Attributes:
        source: glob(s) on the source URI or its base name (``"*.pdf"``, ``"swarming.md"``).
        doc_id: document id(s).
        page: page number, list of pages, or ``{min, max}``.
        section: glob(s) on section titles.
    """

    source: str | list[str] | None = None
    doc_id: str | list[str] | None = None
    page: int | list[int] | PageRange | str | None = None
    section: str | list[str] | None = None

    @model_validator(mode="after")
    def _page_str_is_ref(self) -> "FilterSpec":
        if isinstance(self.page, str) and not is_single_ref(self.page):
            raise ValueError("page must be an integer, a list, {min, max} or a ${...} reference")
        return self


class _NodeSpec(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    #: fields whose values may hold references (resolved at run time).
    REF_FIELDS: ClassVar[tuple[str, ...]] = ()


class RetrieveNodeSpec(_NodeSpec):
    """``type: retrieve`` — search a published index version.

    Attributes:
        index: ``NAME@ALIAS`` or ``NAME@vNNNN`` (``NAME`` alone = ``NAME@latest``).
        root: registry folder (default: the runner's index root, ``index.root`` of params.yaml).
        query: the query text, usually ``${inputs.question}``.
        k, mode, fusion, weights, rrf_k, candidates: override the runner's retrieval defaults
            (the ``retrieval:`` section of params.yaml; :class:`indexers.retrieval.RetrievalConfig`)
            for this node; unset fields keep the defaults.
        filters: metadata filters.
    """

    type: Literal["retrieve"]
    index: str = Field(min_length=1)
    root: str | None = None
    query: str
    k: int | None = Field(default=None, ge=1, le=1000)
    mode: Mode | None = None
    fusion: Fusion | None = None
    weights: Weights | None = None
    rrf_k: int | None = Field(default=None, ge=0)
    candidates: int | None = Field(default=None, ge=1, le=100000)
    filters: FilterSpec = Field(default_factory=FilterSpec)

    def retrieval(self, defaults: RetrievalConfig) -> RetrievalConfig:
        """``defaults`` with this node's fields applied."""
        return defaults.override(f"retrieve node {self.name!r}",
                                 **{f: getattr(self, f) for f in RETRIEVAL_FIELDS})

    REF_FIELDS: ClassVar[tuple[str, ...]] = ("query", "filters")

    @field_validator("index")
    @classmethod
    def _valid_reference(cls, v: str) -> str:
        from ragline.indexers.registry import IndexRef

        if "${" not in v:  # a reference is reported as such by the structural checks
            IndexRef.parse(v)  # the registry's one reference parser (InvalidReference is a ValueError)
        return v


class PromptNodeSpec(_NodeSpec):
    """``type: prompt`` — render a Jinja2 template (StrictUndefined) over ``inputs``.

    Attributes:
        template: template file, relative to the flow folder.
        template_text: inline template (instead of ``template``).
        inputs: template variables (values may be references).
    """

    type: Literal["prompt"]
    template: str | None = None
    template_text: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    REF_FIELDS: ClassVar[tuple[str, ...]] = ("inputs",)

    @model_validator(mode="after")
    def _one_template(self) -> "PromptNodeSpec":
        if (self.template is None) == (self.template_text is None):
            raise ValueError("give exactly one of template (a file in the flow folder) or template_text")
        return self


class LlmNodeSpec(_NodeSpec):
    """``type: llm`` — answer with citations.

    Attributes:
        provider: ``extractive`` (offline, deterministic) or ``openai`` (chat completions).
        prompt: the prompt text (required for ``openai``), usually ``${prompt.output}``.
        question: the question (required for ``extractive``).
        chunks: the retrieved chunks the answer cites, ``${retrieve.output}``.
        max_answer_tokens: extractive answer budget (cl100k tokens).
        max_sentences: extractive answer length in sentences.
        base_url: OpenAI-compatible API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: model name sent to the endpoint.
        api_key_env: environment variable holding the API key (none = no Authorization header).
        system: optional system message.
        temperature, max_tokens: sampling settings sent to the endpoint.
        timeout_s: per-request timeout in seconds.
        max_retries: retries after the first attempt (timeouts, connection errors, 429, 5xx).
        backoff_s: first retry delay; doubles per retry, capped at ``backoff_max_s``.
        backoff_max_s: longest retry delay (also caps ``Retry-After``).
    """

    type: Literal["llm"]
    provider: Literal["extractive", "openai"] = "extractive"
    prompt: str | None = None
    question: str | None = None
    chunks: str
    max_answer_tokens: int = Field(default=120, ge=8, le=8192)
    max_sentences: int = Field(default=4, ge=1, le=50)
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    system: str | None = None
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_tokens: int = Field(default=512, ge=1, le=131072)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    max_retries: int = Field(default=2, ge=0, le=10)
    backoff_s: float = Field(default=0.5, ge=0, le=60)
    backoff_max_s: float = Field(default=8.0, ge=0, le=600)
    REF_FIELDS: ClassVar[tuple[str, ...]] = ("prompt", "question", "chunks")

    @model_validator(mode="after")
    def _provider_fields(self) -> "LlmNodeSpec":
        if self.provider == "openai":
            missing = [f for f in ("base_url", "model", "prompt") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"provider openai needs {', '.join(missing)}")
        elif self.question is None:
            raise ValueError("provider extractive needs question (e.g. ${inputs.question})")
        return self


class PythonNodeSpec(_NodeSpec):
    """``type: python`` — call ``function`` (``module:function``, module = a .py file in the flow folder).

    Attributes:
        function: ``module:function``; ``pkg.mod`` means ``pkg/mod.py`` under the flow folder.
        inputs: keyword arguments (values may be references).
    """

    type: Literal["python"]
    function: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")
    inputs: dict[str, Any] = Field(default_factory=dict)
    REF_FIELDS: ClassVar[tuple[str, ...]] = ("inputs",)


NodeSpec = Annotated[
    Union[RetrieveNodeSpec, PromptNodeSpec, LlmNodeSpec, PythonNodeSpec], Field(discriminator="type")
]


class FlowSpec(_Model):
    """The whole ``flow.yaml``.

    Attributes:
        name: flow name.
        description: free text.
        inputs: input name -> :class:`InputSpec`.
        nodes: nodes (run in dependency order).
        outputs: output name -> value (usually a reference).
        variants: variant name -> node name -> field overrides (``k``, ``mode``, ``template``...).
    """

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    nodes: list[NodeSpec] = Field(min_length=1)
    outputs: dict[str, Any] = Field(min_length=1)
    variants: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)

    def node(self, name: str) -> Any:
        """The node called ``name``.

        Raises:
            KeyError: no such node.
        """
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


# ---------------------------------------------------------------- loading
@dataclass(frozen=True)
class Flow:
    """A validated flow ready to run.

    Attributes:
        folder: the flow folder.
        file: its ``flow.yaml``.
        spec: the validated spec with the variant applied.
        variant: the variant applied, or ``None``.
        order: node names in topological order.
        deps: node name -> names of the nodes it references.
        raw: the variant-applied YAML mapping (what was validated).
    """

    folder: Path
    file: Path
    spec: FlowSpec
    variant: str | None
    order: tuple[str, ...]
    deps: dict[str, tuple[str, ...]]
    raw: dict = field(repr=False, default_factory=dict)
    lines: dict = field(repr=False, default_factory=dict)

    @property
    def name(self) -> str:
        """The flow's name."""
        return self.spec.name

    def where(self, *loc: Any) -> str:
        """``file:line: field`` for a location such as ``("nodes", 1, "k")``."""
        return _where(self.file, self.lines, loc, self.raw)


def _line_map(text: str) -> dict[tuple, int]:
    """Path tuple (keys / list indexes) -> 1-based line where it appears in the YAML text."""
    lines: dict[tuple, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node: Any, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


def _describe(loc: tuple, raw: dict) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            if i == 1 and loc[0] == "nodes":
                nodes = raw.get("nodes") if isinstance(raw, dict) else None
                if isinstance(nodes, list) and part < len(nodes) and isinstance(nodes[part], dict) and nodes[part].get("name"):
                    out += f" (node {nodes[part]['name']!r})"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _where(file: Path, lines: dict, loc: tuple, raw: dict) -> str:
    loc = tuple(loc)
    line = None
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            line = lines[loc[:n]]
            break
    return f"{file}{':' + str(line) if line else ''}: {_describe(loc, raw)}"


def _clean_loc(loc: tuple) -> tuple:
    # pydantic puts the discriminator tag into the location of union members: drop it.
    if len(loc) > 2 and loc[0] == "nodes" and loc[2] in NODE_TYPES:
        return loc[:2] + loc[3:]
    return loc


def read_flow_yaml(folder: str | Path) -> tuple[Path, dict, dict]:
    """Read ``<folder>/flow.yaml`` (or a path to the YAML file itself).

    Returns:
        ``(file, mapping, line_map)``.

    Raises:
        FlowSpecError: missing file, YAML syntax error (with line and column), not a mapping.
    """
    p = Path(folder)
    file = p if p.is_file() else p / FLOW_FILE
    if not file.is_file():
        raise FlowSpecError(f"{file}: no such flow file; a flow is a folder holding {FLOW_FILE}")
    text = file.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
        raise FlowSpecError(f"{where}: malformed YAML: {e.problem or e}") from e
    except yaml.YAMLError as e:
        raise FlowSpecError(f"{file}: malformed YAML: {e}") from e
    if not isinstance(data, dict):
        raise FlowSpecError(f"{file}:1: (top level): a flow file must be a mapping with inputs, nodes and outputs")
    return file, data, _line_map(text)


def apply_variant(raw: dict, variant: str | None, file: Path, lines: dict) -> dict:
    """The flow mapping with a variant's field overrides merged into its nodes.

    Raises:
        FlowSpecError: unknown variant, or the variant names a node the flow lacks.
    """
    if variant is None:
        return raw
    variants = raw.get("variants") or {}
    if not isinstance(variants, dict) or variant not in variants:
        known = ", ".join(variants) if isinstance(variants, dict) else ""
        raise FlowSpecError(f"{file}: variants: no variant {variant!r} (variants: {known or 'none'})")
    out = copy.deepcopy(raw)
    overrides = variants[variant]
    if not isinstance(overrides, dict):
        raise FlowSpecError(f"{_where(file, lines, ('variants', variant), raw)}: a variant maps node names to field overrides")
    nodes = out.get("nodes") if isinstance(out.get("nodes"), list) else []
    by_name = {n.get("name"): n for n in nodes if isinstance(n, dict)}
    for node_name, fields in overrides.items():
        loc = ("variants", variant, node_name)
        if node_name not in by_name:
            raise FlowSpecError(f"{_where(file, lines, loc, raw)}: variant {variant!r} overrides unknown node "
                                f"{node_name!r} (nodes: {', '.join(map(str, by_name))})")
        if not isinstance(fields, dict):
            raise FlowSpecError(f"{_where(file, lines, loc, raw)}: overrides must be a mapping of node fields")
        for key in ("name", "type"):
            if key in fields:
                raise FlowSpecError(f"{_where(file, lines, loc + (key,), raw)}: a variant cannot change a node's {key}")
        node = by_name[node_name]
        # a variant giving one kind of template replaces the other kind
        for given, other in (("template", "template_text"), ("template_text", "template")):
            if given in fields and other not in fields:
                node.pop(other, None)
        node.update(copy.deepcopy(fields))
    return out


def _validation_message(e: ValidationError, file: Path, lines: dict, raw: dict, variant: str | None) -> str:
    msgs = []
    overridden = (raw.get("variants") or {}).get(variant, {}) if variant else {}
    for err in e.errors():
        loc = _clean_loc(tuple(err["loc"]))
        msg = pydantic_message(err)
        if err["type"] == "union_tag_invalid":
            msg = f"unknown node type {err.get('input', {}).get('type')!r}; allowed: {', '.join(NODE_TYPES)}" \
                if isinstance(err.get("input"), dict) else msg
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        where = _where(file, lines, loc, raw)
        # a field set by the variant: point at the variant's line.
        if variant and len(loc) >= 3 and loc[0] == "nodes" and isinstance(loc[1], int):
            nodes = raw.get("nodes") or []
            name = nodes[loc[1]].get("name") if loc[1] < len(nodes) and isinstance(nodes[loc[1]], dict) else None
            if name in overridden and loc[2] in overridden[name]:
                where = _where(file, lines, ("variants", variant, name, loc[2]), raw)
        msgs.append(f"{where}: {msg}" + (f" (variant {variant!r})" if variant else ""))
    return "\n".join(msgs)


def _check_refs(spec: FlowSpec, file: Path, lines: dict, raw: dict) -> dict[str, tuple[str, ...]]:
    """Validate every reference; return node -> referenced nodes."""
    names = [n.name for n in spec.nodes]
    problems: list[str] = []
    seen: set[str] = set()
    for i, n in enumerate(spec.nodes):
        if n.name in seen:
            problems.append(f"{_where(file, lines, ('nodes', i, 'name'), raw)}: duplicate node name {n.name!r}")
        seen.add(n.name)
    deps: dict[str, list[str]] = {n: [] for n in names}

    def check(value: Any, loc: tuple, owner: str | None) -> None:
        try:
            refs = list(iter_refs(value))
        except ValueError as e:
            problems.append(f"{_where(file, lines, loc, raw)}: {e}")
            return
        for r in refs:
            if r.kind == "inputs":
                if r.name not in spec.inputs:
                    problems.append(f"{_where(file, lines, loc, raw)}: unknown reference {r.text}: the flow declares "
                                    f"no input {r.name!r} (inputs: {', '.join(spec.inputs) or 'none'})")
            elif r.name not in names:
                problems.append(f"{_where(file, lines, loc, raw)}: unknown reference {r.text}: no node named "
                                f"{r.name!r} (nodes: {', '.join(names)})")
            elif owner is not None and r.name not in deps[owner]:
                deps[owner].append(r.name)

    for i, n in enumerate(spec.nodes):
        for f in n.REF_FIELDS:
            value = getattr(n, f)
            if isinstance(value, BaseModel):
                value = value.model_dump()
            check(value, ("nodes", i, f), n.name)
        # fields that are not reference-bearing must not hold references
        for f in type(n).model_fields:
            if f in n.REF_FIELDS:
                continue
            v = getattr(n, f)
            if isinstance(v, str) and "${" in v:
                problems.append(f"{_where(file, lines, ('nodes', i, f), raw)}: field {f!r} cannot hold references "
                                f"(references are allowed in: {', '.join(n.REF_FIELDS)})")
    for out_name, value in spec.outputs.items():
        check(value, ("outputs", out_name), None)
    if problems:
        raise FlowSpecError("\n".join(problems))
    return {k: tuple(v) for k, v in deps.items()}


def topological_order(names: list[str], deps: dict[str, tuple[str, ...]]) -> tuple[list[str], list[str] | None]:
    """Kahn's algorithm (CACM 1962), ties in declaration order.

    Returns:
        ``(order, cycle)``: the order, and one cycle as a node list (``None`` when acyclic).
    """
    indeg = {n: len(set(deps[n])) for n in names}
    users: dict[str, list[str]] = {n: [] for n in names}
    for n in names:
        for d in set(deps[n]):
            users[d].append(n)
    ready = [n for n in names if indeg[n] == 0]
    order: list[str] = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for u in users[n]:
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
                ready.sort(key=names.index)
    if len(order) == len(names):
        return order, None
    # find one cycle among the remaining nodes by walking dependencies
    left = [n for n in names if n not in order]
    start = left[0]
    path = [start]
    while True:
        nxt = next(d for d in deps[path[-1]] if d in left)
        if nxt in path:
            return order, path[path.index(nxt):] + [nxt]
        path.append(nxt)


def _check_template(spec: PromptNodeSpec, i: int, folder: Path, file: Path, lines: dict, raw: dict) -> None:
    import jinja2
    import jinja2.meta

    from ragline.runner.nodes import template_env

    loc = ("nodes", i, "template" if spec.template is not None else "template_text")
    where = _where(file, lines, loc, raw)
    if spec.template is not None:
        path = (folder / spec.template).resolve()
        if folder.resolve() not in path.parents:
            raise FlowSpecError(f"{where}: template {spec.template!r} must be inside the flow folder {folder}")
        if not path.is_file():
            raise FlowSpecError(f"{where}: template file {path} does not exist")
        source, name = path.read_text(encoding="utf-8"), str(path)
    else:
        source, name = spec.template_text or "", "<template_text>"
    env = template_env(folder)
    try:
        ast = env.parse(source, name=name)
    except jinja2.TemplateSyntaxError as e:
        raise FlowSpecError(f"{where}: template syntax error at {name}:{e.lineno}: {e.message}") from e
    used = jinja2.meta.find_undeclared_variables(ast)
    missing = sorted(used - set(spec.inputs))
    if missing:
        raise FlowSpecError(f"{where}: template {name} uses {', '.join(missing)} but node {spec.name!r} gives "
                            f"only inputs: {', '.join(spec.inputs) or 'none'}; add them under inputs")


def load_python_function(folder: Path, function: str) -> Any:
    """Import ``module:function`` from a ``.py`` file in the flow folder (never from sys.path).

    Raises:
        FileNotFoundError: no such module file.
        AttributeError: the module has no such callable.
        Exception: whatever importing the module raises.
    """
    module, _, fn_name = function.partition(":")
    path = (folder / Path(*module.split("."))).with_suffix(".py")
    if not path.is_file():
        raise FileNotFoundError(f"module file {path} does not exist")
    mod_name = f"ragline_flow_{abs(hash(str(path.resolve()))):x}_{module.replace('.', '_')}"
    if mod_name in sys.modules:
        mod = sys.modules[mod_name]
    else:
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise FileNotFoundError(f"cannot import {path}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[mod_name]
            raise
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise AttributeError(f"{path} has no function {fn_name!r}")
    return fn


def _check_python(spec: PythonNodeSpec, i: int, folder: Path, file: Path, lines: dict, raw: dict) -> None:
    where = _where(file, lines, ("nodes", i, "function"), raw)
    try:
        fn = load_python_function(folder, spec.function)
    except (FileNotFoundError, AttributeError) as e:
        raise FlowSpecError(f"{where}: {e}") from e
    except Exception as e:  # user code failed at import: report it as a spec error
        raise FlowSpecError(f"{where}: importing {spec.function} failed: {type(e).__name__}: {e}") from e
    sig = inspect.signature(fn)
    params = sig.parameters
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in spec.inputs if k not in params and not var_kw]
    required = [k for k, p in params.items() if p.default is p.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and k not in spec.inputs]
    if unknown or required:
        parts = []
        if unknown:
            parts.append(f"inputs {', '.join(unknown)} are not parameters of {spec.function}{sig}")
        if required:
            parts.append(f"{spec.function}{sig} needs {', '.join(required)}; add them under inputs")
        raise FlowSpecError(f"{_where(file, lines, ('nodes', i, 'inputs'), raw)}: {'; '.join(parts)}")


def validate_flow(folder: Path, file: Path, raw: dict, lines: dict, variant: str | None) -> Flow:
    """Validate one (variant-applied) flow mapping; see :func:`load_flow`."""
    data = apply_variant(raw, variant, file, lines)
    try:
        spec = FlowSpec.model_validate(data)
    except ValidationError as e:
        raise FlowSpecError(_validation_message(e, file, lines, data, variant)) from e
    deps = _check_refs(spec, file, lines, data)
    names = [n.name for n in spec.nodes]
    order, cycle = topological_order(names, deps)
    if cycle:
        i = names.index(cycle[0])
        field_name = next(f for f in spec.nodes[i].REF_FIELDS
                          if any(r.kind == "node" and r.name == cycle[1] for r in iter_refs(
                              getattr(spec.nodes[i], f).model_dump() if isinstance(getattr(spec.nodes[i], f), BaseModel)
                              else getattr(spec.nodes[i], f))))
        raise FlowSpecError(f"{_where(file, lines, ('nodes', i, field_name), data)}: the nodes form a cycle: "
                            f"{' -> '.join(cycle)}; a node may only use outputs of nodes that do not depend on it")
    for i, n in enumerate(spec.nodes):
        if isinstance(n, PromptNodeSpec):
            _check_template(n, i, folder, file, lines, data)
        elif isinstance(n, PythonNodeSpec):
            _check_python(n, i, folder, file, lines, data)
    return Flow(folder=folder, file=file, spec=spec, variant=variant, order=tuple(order), deps=deps, raw=data, lines=lines)


def check_indexes(flow: Flow, index_root: str | Path, variants: bool = True) -> list[str]:
    """Resolve the index (and alias or version) every retrieve node names, in the flow and,
    with ``variants``, in each of its variants.

    Args:
        flow: a validated flow (:func:`load_flow`).
        index_root: registry folder for retrieve nodes without their own ``root``.
        variants: also check each variant declared in the flow.

    Returns:
        One ``flow.yaml:LINE: nodes[i].index: problem`` message per node whose index, alias or
        version does not resolve (the registry's message: which indexes/aliases exist); empty
        when all resolve.
    """
    from ragline.core.errors import RaglineError
    from ragline.indexers.registry import IndexRegistry

    flows = [flow]
    if variants:
        flows += [validate_flow(flow.folder, flow.file, _base_raw(flow), flow.lines, v)
                  for v in flow.spec.variants if v != flow.variant]
    problems: list[str] = []
    seen: set[tuple[str, str, str]] = set()
    for f in flows:
        for i, node in enumerate(f.spec.nodes):
            if not isinstance(node, RetrieveNodeSpec):
                continue
            root = str(node.root or index_root)
            key = (root, node.index, f.where("nodes", i, "index"))
            if key in seen:
                continue
            seen.add(key)
            try:
                IndexRegistry(root).resolve(node.index if "@" in node.index else f"{node.index}@latest")
            except RaglineError as e:
                label = f" (variant {f.variant})" if f.variant else ""
                problems.append(f"{key[2]}: index {node.index}{label}: {e}")
    return problems


def _base_raw(flow: Flow) -> dict:
    """The flow's YAML mapping before any variant was applied."""
    _, raw, _ = read_flow_yaml(flow.folder)
    return raw


def with_alias(flow: Flow, alias: str) -> Flow:
    """``flow`` with every retrieve node searching alias ``alias`` of its index (``NAME@alias``),
    for an A/B arm that serves another alias of the same index (``flow serve --split``).

    Raises:
        FlowSpecError: ``alias`` is not a valid alias name, or a node's index is a reference.
    """
    import dataclasses

    from ragline.indexers.registry import IndexRef

    nodes = []
    for i, n in enumerate(flow.spec.nodes):
        if isinstance(n, RetrieveNodeSpec):
            if "${" in n.index:
                raise FlowSpecError(f"{flow.where('nodes', i, 'index')}: an index given by reference cannot be "
                                    f"switched to alias {alias!r}")
            try:
                ref = IndexRef.parse(f"{IndexRef.parse(n.index).name}@{alias}")
            except ValueError as e:
                raise FlowSpecError(f"split arm {alias!r}: not a variant of flow {flow.name} nor a valid alias: "
                                    f"{e}") from e
            n = n.model_copy(update={"index": f"{ref.name}@{ref.selector}"})
        nodes.append(n)
    return dataclasses.replace(flow, spec=flow.spec.model_copy(update={"nodes": nodes}))


def load_flow(folder: str | Path, variant: str | None = None) -> Flow:
    """Load and validate a flow folder; every variant is validated too.

    Args:
        folder: the flow folder (or its ``flow.yaml``).
        variant: a variant to apply, or ``None`` for the base flow.

    Returns:
        The validated flow with ``variant`` applied.

    Raises:
        FlowSpecError: anything wrong, as ``file:line: field: problem`` (several lines when
            several problems are found).
    """
    file, raw, lines = read_flow_yaml(folder)
    root = file.parent
    base = validate_flow(root, file, raw, lines, None)
    for name in (raw.get("variants") or {}):
        if name != variant:
            validate_flow(root, file, raw, lines, name)
    return base if variant is None else validate_flow(root, file, raw, lines, variant)
