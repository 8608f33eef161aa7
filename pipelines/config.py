"""Typed configuration read from ``params.yaml`` (the single source of every tunable number).

Every section is a pydantic model with ``extra="forbid"``: an unknown key or a bad value
raises :class:`~chunkers.base.ConfigError` naming the file, the key and the allowed values.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ragline.core.errors import ConfigError
from ragline.core.hashing import json_sha256
from ragline.chunkers.registry import STRATEGIES, config_keys

if TYPE_CHECKING:
    from ragline.indexers.bm25 import BM25Spec


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Default ``load.html_drop``: site navigation, search boxes, and page-level banner/footer.
HTML_BOILERPLATE = (
    "nav", "[role=navigation]", "[role=search]", "body > header", "body > footer", "[role=banner]",
    "[role=contentinfo]",
)


class LoadConfig(_Section):
    """``load:`` — discovery and parsing.

    Attributes:
        sources: folders or files to ingest (used when the CLI gives none).
        include: glob patterns (relative to each source) a file must match.
        exclude: glob patterns that drop a file.
        strategy: unstructured partition strategy (``fast`` needs no OCR or layout model).
        max_file_mb: files larger than this many MiB are quarantined.
        max_failed_fraction: the run fails when more than this fraction of files is quarantined.
        workers: processes that partition documents in parallel.
        html_drop: CSS selectors of HTML boilerplate removed before partitioning: by default
            navigation and search landmarks and the page-level header and footer (ARIA
            landmark roles, W3C WAI-ARIA 1.2). ``[]`` keeps everything.
    """

    sources: list[str] = Field(default_factory=lambda: ["data/sample"])
    include: list[str] = Field(default_factory=lambda: ["**/*"])
    exclude: list[str] = Field(default_factory=list)
    strategy: Literal["fast", "auto", "hi_res", "ocr_only"] = "fast"
    max_file_mb: float = Field(default=50.0, gt=0)
    max_failed_fraction: float = Field(default=0.25, ge=0, le=1)
    workers: int = Field(default=1, ge=1, le=64)
    html_drop: list[str] = Field(default_factory=lambda: list(HTML_BOILERPLATE))

    @field_validator("html_drop")
    @classmethod
    def _selectors_parse(cls, v: list[str]) -> list[str]:
        import soupsieve

        for sel in v:
            try:
                soupsieve.compile(sel)
            except Exception as e:  # soupsieve.SelectorSyntaxError and friends
                raise ValueError(f"CSS selector {sel!r} does not parse: {e}") from e
        return v


class ChunkConfig(_Section):
    """``chunk:`` — the strategy name, its options, and the embedding-context switch.

    Options a strategy does not accept are ignored for that strategy (so a grid can switch
    strategies with ``-S chunk.strategy=...``); options no strategy accepts are an error.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    strategy: str = "token"
    max_tokens: int = 200
    overlap_tokens: int = 0
    context: bool = False

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        if v not in STRATEGIES:
            raise ValueError(f"unknown strategy {v!r}; allowed: {', '.join(sorted(STRATEGIES))}")
        return v

    def strategy_options(self) -> dict[str, Any]:
        """The options the selected strategy accepts, with their values."""
        values = {"max_tokens": self.max_tokens, "overlap_tokens": self.overlap_tokens, **(self.model_extra or {})}
        all_keys = {k for name in STRATEGIES for k in config_keys(name)}
        unknown = sorted(set(values) - all_keys)
        if unknown:
            raise ConfigError(
                f"unknown chunk option(s) {', '.join(unknown)}; allowed: "
                f"{', '.join(sorted(all_keys | {'strategy', 'context'}))}"
            )
        accepted = set(config_keys(self.strategy))
        return {k: v for k, v in values.items() if k in accepted}


class EmbedConfig(_Section):
    """``embed:`` — the embedding model.

    Attributes:
        model: ``all-MiniLM-L6-v2`` (the packaged model), a local folder with a
            sentence-transformers model, or ``hashing`` (a deterministic fake for tests).
        batch_size: texts per forward pass.
        normalize: L2-normalize vectors (required for inner-product = cosine search).
        backend: the runtime and precision (:data:`indexers.backends.BACKENDS`): ``torch``,
            ``onnx`` and ``openvino`` give fp32 vectors (equal within 1e-4, one embedding cache);
            ``torch-bf16``, ``openvino-bf16``, ``onnx-int8`` and ``openvino-int8`` give their
            own (their identity and cache key carry the backend and recipe; queries of such an
            index are embedded by the same backend). Measured side by side in
            ``benchmarks/embed_backends.py``; the default is the fastest whose chunking-eval
            recall is within 0.5 points of fp32. Unknown or not-installed backends are refused.
    """

    model: str = "all-MiniLM-L6-v2"
    batch_size: int = Field(default=64, ge=1, le=4096)
    normalize: bool = True
    backend: str = "onnx-int8"

    @field_validator("backend")
    @classmethod
    def _installed_backend(cls, v: str) -> str:
        from ragline.indexers.backends import require_backend

        return require_backend(v)


class IndexConfig(_Section):
    """``index:`` — the FAISS index and where versions are published.

    Attributes:
        name: index name; versions go to ``<root>/<name>/<version>/``.
        root: folder that holds every index.
        kind: ``flat`` (exact) or ``hnsw`` (approximate, Malkov & Yashunin 2018).
        metric: ``ip`` (inner product; cosine over normalized vectors) or ``l2``.
        hnsw_m: HNSW graph degree.
        hnsw_ef_construction: HNSW build-time beam width.
        hnsw_ef_search: HNSW query-time beam width.
        lock_timeout_s: seconds a publish waits for another one on the same index.
        bm25_k1: BM25 term-frequency saturation of the BM25 index published with each version
            (Robertson & Zaragoza 2009; bm25s's default 1.5).
        bm25_b: BM25 document-length normalization in [0, 1] (default 0.75).
    """

    name: str = Field(default="sample", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    root: str = "indexes"
    kind: Literal["flat", "hnsw"] = "flat"
    metric: Literal["ip", "l2"] = "ip"
    hnsw_m: int = Field(default=32, ge=4, le=256)
    hnsw_ef_construction: int = Field(default=200, ge=8)
    hnsw_ef_search: int = Field(default=64, ge=1)
    lock_timeout_s: float = Field(default=600.0, ge=0)
    bm25_k1: float = Field(default=1.5, ge=0)
    bm25_b: float = Field(default=0.75, ge=0, le=1)

    def bm25_spec(self) -> BM25Spec:
        """The :class:`indexers.bm25.BM25Spec` these params give."""
        from ragline.indexers.bm25 import BM25Spec

        return BM25Spec(k1=self.bm25_k1, b=self.bm25_b)


class PathsConfig(_Section):
    """``paths:`` — where the DVC stages keep their intermediate tables and the cache."""

    documents: str = "build/documents.parquet"
    chunks: str = "build/chunks.parquet"
    embeddings: str = "build/embeddings.parquet"
    quarantine: str = "build/quarantine.parquet"
    published: str = "build/published.json"
    cache: str = ".ragline/cache"


class EvalWeights(_Section):
    """``eval.weights`` — hybrid fusion weights (>= 0) of the dense and BM25 retrievers."""

    dense: float = Field(default=0.5, ge=0)
    bm25: float = Field(default=0.5, ge=0)


class EvalConfig(_Section):
    """``eval:`` — the chunking evaluation (``ragline eval chunking``, DVC stage ``eval``).

    Attributes:
        dataset: folder with ``corpora/*.md`` and ``questions.csv`` (or ``questions.jsonl``).
        k: chunks retrieved per question.
        limit_questions: evaluate at most this many questions (``null``: all of them).
        corpora: evaluate only these corpus ids (empty: all).
        metrics: metrics JSON the DVC stage writes (``dvc exp show`` compares it); outside
            the git-ignored ``build/`` because DVC experiments commit only files git tracks.
        plots: recall-vs-IoU points the DVC stage writes (``dvc plots show``).
        mode: search mode: ``dense`` (FAISS), ``bm25`` (:mod:`indexers.bm25` over the same
            chunks) or ``hybrid`` (both, fused by :mod:`indexers.hybrid`).
        fusion: ``rrf`` | ``weighted`` (hybrid only; see :mod:`indexers.hybrid`).
        weights: fusion weights of the two retrievers (hybrid only).
        candidates: rows each retriever contributes before fusion (hybrid only; raised to ``k``).
    """

    dataset: str = "../shared/datasets/chunking-eval"
    k: int = Field(default=5, ge=1, le=1000)
    limit_questions: int | None = Field(default=None, ge=1)
    corpora: list[str] = Field(default_factory=list)
    metrics: str = "metrics/chunking.json"
    plots: str = "metrics/chunking_recall_iou.json"
    mode: Literal["dense", "bm25", "hybrid"] = "dense"
    fusion: Literal["rrf", "weighted"] = "rrf"
    weights: EvalWeights = Field(default_factory=lambda: EvalWeights())
    candidates: int = Field(default=50, ge=1, le=10000)


class RefreshConfig(_Section):
    """``refresh:`` — the scheduled incremental refresh (``ragline refresh``).

    Attributes:
        cron: schedule of ``ragline refresh --serve`` (5-field cron, in ``timezone``).
        timezone: IANA time zone of ``cron``.
        promote_aliases: aliases to move to each newly published version, each through the
            promotion gate (``promote:``); ``latest`` always moves.
    """

    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    promote_aliases: list[str] = Field(default_factory=list)


class PromoteConfig(_Section):
    """``promote:`` — the gate an alias must pass before it moves (``ragline index promote``).

    Attributes:
        gate: ``none``, or ``doc_recall``: document recall@k on ``questions`` must be at least
            ``min_doc_recall``.
        gated_aliases: aliases the gate guards; other aliases move freely.
        questions: JSONL file of ``{"question", "doc"}`` objects.
        k: chunks retrieved per question.
        min_doc_recall: the lowest recall (0..1) that lets the alias move.
    """

    gate: Literal["none", "doc_recall"] = "none"
    gated_aliases: list[str] = Field(default_factory=lambda: ["prod"])
    questions: str = "data/sample-questions.jsonl"
    k: int = Field(default=5, ge=1, le=1000)
    min_doc_recall: float = Field(default=0.8, ge=0, le=1)


class Params(_Section):
    """The whole of ``params.yaml``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    load: LoadConfig = Field(default_factory=LoadConfig)
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    refresh: RefreshConfig = Field(default_factory=RefreshConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict of every value (round-trips through :meth:`from_dict`)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> "Params":
        """Validate a mapping; raises :class:`ConfigError` naming ``source`` and the key."""
        try:
            params = cls.model_validate(data or {})
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{source}: {loc}: {err['msg']} (got {err.get('input')!r})") from e
        params.chunk.strategy_options()  # unknown chunk options fail now, not mid-run
        return params

    def section_hash(self, *sections: str) -> str:
        """sha256 (hex) of the JSON of the named sections, or of everything when none given."""
        data = self.to_dict()
        if sections:
            data = {k: data[k] for k in sections}
        return json_sha256(data)


def load_params(path: str | Path | None = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; a missing file gives the defaults only when
    ``path`` is ``None``.

    Raises:
        ConfigError: the file is missing, is not YAML, or holds an invalid value.
    """
    if path is None:
        return Params()
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"params file not found: {p}; pass --params FILE") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return Params.from_dict(data or {}, source=str(p))
