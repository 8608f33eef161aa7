"""Typed configuration read from ``params.yaml`` (the single source of every tunable number).

Every section is a pydantic model with ``extra="forbid"``: an unknown key at any level (the
top level included) or a bad value raises :class:`~ragline.core.errors.ConfigError` naming the
file, the key, the nearest valid key ("did you mean ``load``?", :mod:`difflib`) and the allowed
values. The set of valid keys is read from the models, so a section added here is known at once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ragline.core.errors import ConfigError, config_error, did_you_mean
from ragline.core.hashing import json_sha256
from ragline.core.serve_config import ServeConfig, TracesConfig
from ragline.chunkers.registry import STRATEGIES, config_keys, needs_embedder
from ragline.indexers.retrieval import RetrievalConfig

if TYPE_CHECKING:
    from ragline.indexers.bm25 import BM25Spec
    from ragline.indexers.faiss_index import FaissSpec


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Permalink anchors beside headings (the ``¶``/``#`` signs): Sphinx and MkDocs
#: ``a.headerlink``, Jupyter ``a.anchor-link``, VitePress/markdown-it-anchor ``a.header-anchor``,
#: Docusaurus ``a.hash-link``, AnchorJS ``a.anchorjs-link``.
HTML_PERMALINKS = ("a.headerlink", "a.anchor-link", "a.header-anchor", "a.hash-link", "a.anchorjs-link")
#: Default ``load.html_drop``: site navigation, search boxes, page-level banner/footer, permalinks.
HTML_BOILERPLATE = (
    "nav", "[role=navigation]", "[role=search]", "body > header", "body > footer", "[role=banner]",
    "[role=contentinfo]", *HTML_PERMALINKS,
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
            landmark roles, W3C WAI-ARIA 1.2), and heading permalink anchors
            (:data:`HTML_PERMALINKS`). ``[]`` keeps everything.
        follow_symlinks: ``within_root`` (default) follows a symlink only when its target lies
            inside one of the source roots; ``always`` follows every link; ``never`` follows
            none. A link not followed is quarantined (``SymlinkOutsideRoot`` /
            ``SymlinkNotFollowed``) without its target being opened.
        timeout_s: wall-clock seconds one file may take to parse in its worker; past it the
            worker is killed and the file quarantined as ``Timeout``.
        max_worker_mb: resident memory, MiB, a parsing worker may reach while it parses one
            file (enforced with ``RLIMIT_AS`` = address space + this - resident size, set
            before each file; at least 128 MiB of headroom); a file that needs more is
            quarantined as ``MemoryLimit``.
        max_tasks_per_child: files a parsing worker parses before it is replaced by a fresh one
            (bounds leaks and fragmentation; workers are forked from a preloaded server).
        max_unzipped_mb: zip containers (DOCX, PPTX, XLSX, EPUB, ODT...) whose members declare
            more than this many MiB uncompressed are quarantined as ``ZipBomb`` before parsing.
        max_zip_ratio: a zip member over 1 MiB uncompressed that expands more than this many
            times its compressed size is a ``ZipBomb`` too.
        languages: the documents' languages as ISO 639 codes (``["eng"]``), handed to
            unstructured so it does not guess them; ``["auto"]`` detects them per document
            (langdetect, 18% of a Markdown file's parsing time).
        element_types: how a paragraph the markup does not type (an HTML ``<p>``, a Markdown
            paragraph) gets its element type. ``markup``: headings, lists and tables come
            from the markup; other paragraphs are ``NarrativeText`` unless numeric or mostly
            non-letters (``Text``), with unstructured's cheap bullet/address/e-mail rules.
            ``nlp``: unstructured's sentence and verb heuristics (spaCy), about 3/4 of the
            parsing time of Markdown and HTML; they only choose between ``NarrativeText``
            and ``Text``, which no chunker reads, so both give the same chunks.
        storage_options: fsspec options of remote sources (:mod:`pipelines.sources`), keyed by
            the source URL as written in ``sources`` or by protocol (``s3``, ``gs``, ``az``):
            endpoint, credentials, ``version_aware``... Empty: the implementation's standard
            environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).
        http_timeout_s: connect/read timeout of every HTTP request to an HTTP source, seconds.
        http_retries: extra attempts after a connection error, a timeout, 429 or 5xx.
        http_redirect_hosts: hosts an HTTP source may be redirected to besides its own host
            (a redirect elsewhere quarantines the page as ``Redirected``).
    """

    sources: list[str] = Field(default_factory=lambda: ["data/sample"])
    include: list[str] = Field(default_factory=lambda: ["**/*"])
    exclude: list[str] = Field(default_factory=list)
    strategy: Literal["fast", "auto", "hi_res", "ocr_only"] = "fast"
    max_file_mb: float = Field(default=50.0, gt=0)
    max_failed_fraction: float = Field(default=0.25, ge=0, le=1)
    workers: int = Field(default=1, ge=1, le=64)
    html_drop: list[str] = Field(default_factory=lambda: list(HTML_BOILERPLATE))
    follow_symlinks: Literal["within_root", "always", "never"] = "within_root"
    timeout_s: float = Field(default=120.0, gt=0, le=86400)
    max_worker_mb: int = Field(default=1536, ge=256, le=1048576)
    max_tasks_per_child: int = Field(default=20, ge=1)
    max_unzipped_mb: float = Field(default=500.0, gt=0)
    max_zip_ratio: float = Field(default=200.0, gt=1)
    languages: list[str] = Field(default_factory=lambda: ["eng"], min_length=1)
    element_types: Literal["markup", "nlp"] = "markup"
    storage_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    http_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    http_retries: int = Field(default=2, ge=0, le=10)
    http_redirect_hosts: list[str] = Field(default_factory=list)

    @field_validator("html_drop")
    @classmethod
    def _selectors_parse(cls, v: list[str]) -> list[str]:
        from cssselect import HTMLTranslator

        translator = HTMLTranslator()
        for sel in v:
            try:
                translator.css_to_xpath(sel)
            except Exception as e:  # cssselect's SelectorSyntaxError, ExpressionError
                raise ValueError(f"CSS selector {sel!r} does not parse: {e}") from e
        return v

    @field_validator("languages")
    @classmethod
    def _languages_known(cls, v: list[str]) -> list[str]:
        if "auto" in v and len(v) > 1:
            raise ValueError(f"{v}: 'auto' (detect) cannot be combined with named languages")
        for code in v:
            if code != "auto" and not re.fullmatch(r"[a-z]{2,3}", code):
                raise ValueError(f"{code!r} is not an ISO 639 code like 'eng' or 'deu' (or 'auto' to detect)")
        return v


class ChunkConfig(_Section):
    """``chunk:`` — the strategy name, its options, and the embedding-context switch.

    Options a strategy does not accept are ignored for that strategy (so a grid can switch
    strategies with ``-S chunk.strategy=...``); options no strategy accepts are an error.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    strategy: str = "token"
    max_tokens: int = Field(default=200, ge=1, le=100_000)
    overlap_tokens: int = Field(default=0, ge=0)
    context: bool = False

    @model_validator(mode="after")
    def _overlap_below_max(self) -> "ChunkConfig":
        if self.overlap_tokens and self.overlap_tokens >= self.max_tokens:
            raise ValueError(
                f"overlap_tokens ({self.overlap_tokens}) must be smaller than max_tokens ({self.max_tokens})"
            )
        return self

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        if v not in STRATEGIES:
            raise ValueError(f"unknown strategy {v!r}; allowed: {', '.join(sorted(STRATEGIES))}")
        return v

    @property
    def needs_embedder(self) -> bool:
        """True when the strategy's chunker needs an embedder (its class says so, e.g. ``semantic``)."""
        return needs_embedder(self.strategy)

    def strategy_options(self) -> dict[str, Any]:
        """The options the selected strategy accepts, with their values."""
        values = {"max_tokens": self.max_tokens, "overlap_tokens": self.overlap_tokens, **(self.model_extra or {})}
        all_keys = {k for name in STRATEGIES for k in config_keys(name)}
        unknown = sorted(set(values) - all_keys)
        if unknown:
            allowed = sorted(all_keys | {"strategy", "context"})
            raise ConfigError(
                f"unknown chunk option(s) {', '.join(f'`{k}`{did_you_mean(k, allowed)}' for k in unknown)}; "
                f"allowed: {', '.join(allowed)}"
            )
        accepted = set(config_keys(self.strategy))
        return {k: v for k, v in values.items() if k in accepted}


class CurateConfig(_Section):
    """``curate:`` — duplicate and boilerplate removal between load and chunk (:mod:`pipelines.curate`).

    Attributes:
        enabled: run curation (``false``: no duplicate clusters and no boilerplate removal).
            Either way a refresh writes one new segment and shares the parent's others; with
            curation it clusters its new documents and chunks against the version's
            (:func:`pipelines.curate.curate_increment`), or, when a copy loses its canonical
            copy, decides the clusters over the whole version first, and a document whose
            indexed rows change (a copy promoted to canonical) moves into the new segment
            (:func:`pipelines.refresh.split_curated`).
        duplicates: ``link`` (default) indexes one canonical copy of each duplicate cluster and
            lists the other copies' sources on its hits; ``keep_first`` indexes the canonical
            copy only; ``keep_all`` indexes every copy (clusters are still recorded, and queries
            return one hit per chunk cluster). The canonical copy is the earliest by source
            order, and a copy that was canonical in the parent version stays canonical.
        near_duplicate_threshold: Jaccard similarity (0, 1] of word shingles at or above which
            two documents (or chunks) are near-duplicates (MinHash + LSH, Broder 1997).
        near_duplicates: detect near-duplicates (``false``: exact copies only).
        chunk_level: also cluster chunks (exact and near) across documents.
        shingle_words: words per shingle.
        num_perm: MinHash permutations (more: a closer Jaccard estimate, larger signatures).
        boilerplate: remove elements repeated on most pages of a PDF or most pages of a
            folder of documents (running headers, footers, page numbers, banners).
        boilerplate_min_docs: pages (of one PDF) or documents (of one folder) needed before
            frequencies are trusted.
        boilerplate_min_share: share (0, 1] of those pages/documents an element must appear on.
        boilerplate_edge_elements: elements at the start and at the end of each document of a
            folder where site boilerplate is looked for (navigation, banners, footers; at most a
            third of a document's elements each); an element in the middle is never site boilerplate.
    """

    enabled: bool = True
    duplicates: Literal["keep_all", "keep_first", "link"] = "link"
    near_duplicate_threshold: float = Field(default=0.9, gt=0, le=1)
    near_duplicates: bool = True
    chunk_level: bool = True
    shingle_words: int = Field(default=3, ge=1, le=50)
    num_perm: int = Field(default=128, ge=16, le=1024)
    boilerplate: bool = True
    boilerplate_min_docs: int = Field(default=5, ge=2)
    boilerplate_min_share: float = Field(default=0.8, gt=0, le=1)
    boilerplate_edge_elements: int = Field(default=8, ge=1)


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
            ``benchmarks/embed_backends.py`` and ``benchmarks/embed_throughput.py``. The default,
            ``auto``, picks per run (:func:`indexers.backends.resolve_backend`): the backend of
            the index's latest version, else the fastest measured on this CPU whose
            chunking-eval recall is within 0.5 points of fp32 (``openvino-bf16`` with AMX,
            ``openvino-int8`` with VNNI but no AMX, else ``onnx``); the manifest records the
            one used. Unknown or not-installed backends are refused.
        streams: OpenVINO backends, bulk embedding (ingest, refresh, eval): inference streams
            run in parallel (``PERFORMANCE_HINT: THROUGHPUT``, an ``AsyncInferQueue`` of that
            many requests), at most one per thread; 1 = ``LATENCY``, synchronous calls. Query
            embedding always runs one stream. Other backends ignore it.
        pad_multiple: OpenVINO backends: each call's token length is rounded up to a multiple
            of this (padding is masked: same vectors), so the CPU plugin meets few distinct
            input shapes (it prepares kernels per new shape); 1 = no rounding.
        static_shapes: OpenVINO backends, bulk embedding: up to this many input shapes (rows,
            tokens) get a model compiled for exactly that shape once 32 calls of it ran on the
            dynamic-shape model (same vectors; about 15% less CPU per call, 0.3 CPU-s and about
            65 MiB per shape; ``benchmarks/embed_throughput.py``); 0 = dynamic shapes only.
    """

    model: str = "all-MiniLM-L6-v2"
    batch_size: int = Field(default=64, ge=1, le=4096)
    normalize: bool = True
    backend: str = "auto"
    streams: int = Field(default=2, ge=1, le=64)
    pad_multiple: int = Field(default=16, ge=1, le=512)
    static_shapes: int = Field(default=6, ge=0, le=64)

    @field_validator("backend")
    @classmethod
    def _installed_backend(cls, v: str) -> str:
        from ragline.indexers.backends import require_backend

        return require_backend(v, allow_auto=True)


class IndexConfig(_Section):
    """``index:`` — the FAISS index and where versions are published.

    Attributes:
        name: index name; versions go to ``<root>/<name>/<version>/``.
        root: folder that holds every index.
        factory: the FAISS kind as a factory string (``Flat``, ``HNSW32``, ``IVF4096,Flat``,
            ``IVF1024,PQ48``...; :mod:`indexers.faiss_index`) or ``auto``: ``Flat`` (exact) below
            :data:`indexers.faiss_index.AUTO_FLAT_MAX` chunks, ``IVF{nlist},Flat`` above. Checked
            with ``faiss.index_factory`` when the params are loaded. Search-time settings
            (``ef_search``, ``nprobe``) are in ``retrieval:``.
        metric: ``ip`` (inner product; cosine over normalized vectors) or ``l2``.
        train_size: vectors sampled to train kinds that need it (IVF, PQ, SQ, OPQ).
        ef_construction: HNSW build-time beam width (HNSW kinds only).
        lock_timeout_s: seconds a publish waits for another one on the same index.
        verify: what opening a version for serving checks against its manifest: ``sha256``
            (size and content hash of every file; the default) or ``size`` (sizes only, for
            very large indexes). A mismatch refuses to serve, naming the file.
        bm25_k1: BM25 term-frequency saturation of the BM25 index published with each version
            (Robertson & Zaragoza 2009; bm25s's default 1.5).
        bm25_b: BM25 document-length normalization in [0, 1] (default 0.75).
        bm25_stemmer: ``english`` (Snowball/Porter2 stemming of chunks and queries, through
            PyStemmer; +0.010 recall on chunking-eval with the shipped params) or ``none``.
        compact_max_segments: a refresh whose version would list more segments than this
            merges them all into one (compaction; ``ragline index compact`` does it on demand).
        compact_max_tombstone_ratio: likewise when more than this share of the chunk rows
            of the version's segments would be tombstoned (replaced or removed documents).
        segment_chunks: an ingest writes a segment each time this many chunk rows are
            chunked and embedded (in file order), so its memory does not grow with the corpus
            (Lucene's flush); ``None``: one segment. Applies to an ingest on the local runner;
            with curation on, each part is clustered against the parts written before it
            (:class:`pipelines.curate.StreamedCuration`).
    """

    name: str = "sample"
    root: str = "indexes"
    factory: str = "auto"
    metric: Literal["ip", "l2"] = "ip"
    train_size: int = Field(default=100_000, ge=1)
    ef_construction: int = Field(default=40, ge=8)
    lock_timeout_s: float = Field(default=600.0, ge=0)
    bm25_k1: float = Field(default=1.5, ge=0)
    bm25_b: float = Field(default=0.75, ge=0, le=1)
    verify: Literal["sha256", "size"] = "sha256"
    bm25_stemmer: Literal["english", "none"] = "english"
    compact_max_segments: int = Field(default=16, ge=1)
    compact_max_tombstone_ratio: float = Field(default=0.3, ge=0, le=1)
    segment_chunks: int | None = Field(default=250_000, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            old = [k for k in ("kind", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search") if k in data]
            if old:
                raise ValueError(f"index.{old[0]} was replaced by index.factory, a FAISS factory string "
                                 "(kind: flat -> factory: Flat; kind: hnsw + hnsw_m: 32 -> factory: HNSW32; "
                                 "hnsw_ef_construction -> index.ef_construction; hnsw_ef_search -> retrieval.ef_search)")
        return data

    @field_validator("factory")
    @classmethod
    def _valid_factory(cls, v: str) -> str:
        from ragline.indexers.faiss_index import check_factory

        try:
            return check_factory(v.strip())
        except ConfigError as e:
            raise ValueError(str(e).removeprefix("index.factory: ")) from e

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        from ragline.indexers.registry import check_name

        return check_name(v)  # InvalidReference is a ValueError: pydantic reports it under index.name

    def bm25_spec(self) -> BM25Spec:
        """The :class:`indexers.bm25.BM25Spec` these params give."""
        from ragline.indexers.bm25 import BM25Spec

        return BM25Spec(k1=self.bm25_k1, b=self.bm25_b, stemmer=self.bm25_stemmer)

    def faiss_spec(self) -> FaissSpec:
        """The :class:`indexers.faiss_index.FaissSpec` these params give."""
        from ragline.indexers.faiss_index import FaissSpec

        return FaissSpec(self.factory, self.metric, self.train_size, self.ef_construction)


class PathsConfig(_Section):
    """``paths:`` — where the DVC stages keep their intermediate tables and the cache."""

    documents: str = "build/documents.parquet"
    curated_documents: str = "build/curated_documents.parquet"  # after boilerplate removal (stage chunk)
    duplicates: str = "build/duplicates.parquet"
    curation: str = "build/curation.json"
    chunks: str = "build/chunks.parquet"
    embeddings: str = "build/embeddings.parquet"
    quarantine: str = "build/quarantine.parquet"
    published: str = "build/published.json"
    cache: str = ".ragline/cache"


class EvalConfig(_Section):
    """``eval:`` — the chunking evaluation (``ragline eval chunking``, DVC stage ``eval``).

    How it retrieves (mode, fusion, weights, candidates, k) is the ``retrieval:`` section,
    as for every other caller.

    Attributes:
        dataset: folder with ``corpora/*.md`` and ``questions.csv`` (or ``questions.jsonl``).
        limit_questions: evaluate at most this many questions (``null``: all of them).
        corpora: evaluate only these corpus ids (empty: all).
        metrics: metrics JSON the DVC stage writes (``dvc exp show`` compares it); outside
            the git-ignored ``build/`` because DVC experiments commit only files git tracks.
        plots: recall-vs-IoU points the DVC stage writes (``dvc plots show``).
    """

    dataset: str = "../shared/datasets/chunking-eval"
    limit_questions: int | None = Field(default=None, ge=1)
    corpora: list[str] = Field(default_factory=list)
    metrics: str = "metrics/chunking.json"
    plots: str = "metrics/chunking_recall_iou.json"


class RefreshConfig(_Section):
    """``refresh:`` — the scheduled incremental refresh (``ragline refresh``).

    Attributes:
        cron: schedule of ``ragline refresh --serve`` (5-field cron, in ``timezone``).
        timezone: IANA time zone of ``cron``.
        promote_aliases: aliases to move to each newly published version, each through the
            promotion gate (``promote:``); ``latest`` always moves.
        hash_cache: reuse a local file's sha256 when its inode, size, mtime and ctime are those
            recorded when it was hashed (:class:`core.hashing.FileHashes`, under
            ``paths.cache``); ``false`` reads and hashes every file on every refresh.
    """

    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    promote_aliases: list[str] = Field(default_factory=list)
    hash_cache: bool = True


class PromoteConfig(_Section):
    """``promote:`` — the gate an alias must pass before it moves (``ragline index promote``).

    Attributes:
        gate: ``none``, or ``doc_recall``: document recall@k on ``questions``, retrieved as
            the alias will serve (the ``retrieval:`` section, k included), must be at least
            ``min_doc_recall``.
        gated_aliases: aliases the gate guards; other aliases move freely.
        questions: JSONL file of ``{"question", "doc"}`` objects.
        min_doc_recall: the lowest recall (0..1) that lets the alias move.
    """

    gate: Literal["none", "doc_recall"] = "none"
    gated_aliases: list[str] = Field(default_factory=lambda: ["prod"])
    questions: str = "data/sample-questions.jsonl"
    min_doc_recall: float = Field(default=0.8, ge=0, le=1)


class DriftConfig(_Section):
    """``drift:`` — drift of each refreshed version from its parent (:mod:`evaluation.drift`).

    After a refresh publishes, the new version is compared with its parent; when a measure is
    past its threshold, the gated aliases of ``refresh.promote_aliases`` (those in
    ``promote.gated_aliases``) do not move and the run's result says why (``latest`` always
    moves). A ``null`` threshold is not checked.

    Attributes:
        on_refresh: compute drift after each refresh that has a parent version.
        max_ks: largest two-sample KS statistic D (0..1) of chunk token lengths.
        max_psi: largest population stability index of chunk token lengths.
        max_centroid_shift: largest cosine distance (0..2) between the mean vectors.
        max_new_chunk_distance: largest mean nearest-neighbour cosine distance of new chunks.
        min_top_k_overlap: smallest mean Jaccard overlap (0..1) of top-k chunk ids on
            ``questions`` (the only measure that searches; skipped when ``null``).
        questions: JSONL ``{"question", "doc"}`` file (``null``: ``promote.questions``).
    """

    on_refresh: bool = True
    max_ks: float | None = Field(default=None, ge=0, le=1)
    max_psi: float | None = Field(default=None, ge=0)
    max_centroid_shift: float | None = Field(default=None, ge=0, le=2)
    max_new_chunk_distance: float | None = Field(default=None, ge=0, le=2)
    min_top_k_overlap: float | None = Field(default=None, ge=0, le=1)
    questions: str | None = None

    def thresholds(self) -> dict[str, float | None]:
        """Keyword arguments of :func:`evaluation.drift.drift_alerts`."""
        return {"max_ks": self.max_ks, "max_psi": self.max_psi, "max_centroid_shift": self.max_centroid_shift,
                "max_new_chunk_distance": self.max_new_chunk_distance, "min_top_k_overlap": self.min_top_k_overlap}

    @property
    def gating(self) -> bool:
        """True when any threshold is set."""
        return any(v is not None for v in self.thresholds().values())


class PrefectConfig(_Section):
    """``prefect:`` — how the flows reach the Prefect API (only :mod:`pipelines.flows` uses it).

    Attributes:
        startup_timeout_s: seconds to wait for the temporary local API Prefect starts when no
            ``PREFECT_API_URL`` is set (Prefect's ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``,
            whose default of 20 s is too short on a loaded machine). An environment variable
            of that name, when set, wins.
        api_retries: times one API request is retried (exponential back-off: 2, 4, 8 ... s)
            before the run gives up on a lost API; Prefect's own default (5) means minutes of
            waiting per request once a temporary server has died.
    """

    startup_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    api_retries: int = Field(default=2, ge=0, le=10)


class TelemetryConfig(_Section):
    """``telemetry:`` — figures and spans of ingest, refresh and eval runs (:mod:`pipelines.telemetry`).

    Attributes:
        metrics_dir: folder of one metrics file per run (``<kind>-<index>-<UTC time>.json``
            and ``.prom``, Prometheus text); ``null``: none written.
        pushgateway: Prometheus Pushgateway URL (e.g. ``http://127.0.0.1:9091``) the figures
            are pushed to at the end of each run; ``null``: no push.
        job: the Pushgateway job name (grouping key: ``kind`` and ``index``).
        push_timeout_s: timeout of one push; a failed push is a warning, not a failed run.
        traces: span exporter of the run and stage spans (``none`` | ``console`` | ``otlp``).
    """

    metrics_dir: Optional[str] = "logs/runs"
    pushgateway: Optional[str] = None
    job: str = Field(default="ragline", min_length=1)
    push_timeout_s: float = Field(default=10.0, gt=0, le=600)
    traces: TracesConfig = Field(default_factory=TracesConfig)
class RunnerConfig(_Section):
    """``runner:`` — where ingest and refresh run load, chunk and embed (``--runner``).

    Attributes:
        kind: ``local`` (this process and its parsing workers) or ``dask``: Prefect tasks
            mapped over partitions of the document list on a Dask cluster (prefect-dask's
            ``DaskTaskRunner``), then merged and published by this process.
        address: scheduler address (``tcp://host:8786``) of an existing cluster; ``None``
            starts a ``LocalCluster`` of ``n_workers`` processes.
        n_workers: worker processes of the local cluster.
        threads_per_worker: threads per worker process (also the embedder's threads there).
        partitions: partitions of the document list; 0 means two per worker.
        partition_retries: times a partition whose worker died is run again before its files
            are quarantined (``WorkerLost``).
    """

    kind: Literal["local", "dask"] = "local"
    address: str | None = None
    n_workers: int = Field(default=2, ge=1, le=256)
    threads_per_worker: int = Field(default=1, ge=1, le=64)
    partitions: int = Field(default=0, ge=0, le=100000)
    partition_retries: int = Field(default=1, ge=0, le=10)

    @classmethod
    def parse(cls, spec: str) -> dict[str, Any]:
        """``--runner`` values: ``local``, ``dask`` or ``dask=ADDRESS`` → ``{"kind", "address"}``.

        Raises:
            ConfigError: another value.
        """
        kind, _, address = spec.partition("=")
        if kind not in ("local", "dask") or (kind == "local" and address):
            raise ConfigError(f"--runner {spec!r}: use local, dask or dask=tcp://HOST:PORT")
        return {"kind": kind, "address": address or None}


class Params(_Section):
    """The whole of ``params.yaml``."""

    load: LoadConfig = Field(default_factory=LoadConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    refresh: RefreshConfig = Field(default_factory=RefreshConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    prefect: PrefectConfig = Field(default_factory=PrefectConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict of every value (round-trips through :meth:`from_dict`)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> "Params":
        """Validate a mapping; raises :class:`ConfigError` naming ``source`` and the key."""
        try:
            params = cls.model_validate(data or {})
        except ValidationError as e:
            raise config_error(e, source, model=cls) from e
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
