"""How to retrieve: the ``retrieval:`` settings and metadata filters (no FAISS import here).

:class:`RetrievalConfig` is the one model of retrieval settings. ``params.yaml``'s
``retrieval:`` section is the default of ``ragline query``, ``Index.search``, the promotion
gate, ``ragline eval chunking`` and flow ``retrieve`` nodes; a flow node or a command-line
option overrides single fields (:meth:`RetrievalConfig.override`). :class:`ChunkFilter` is
the metadata filter every mode applies before ranking (and before fusion).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragline.core.errors import ConfigError, config_error

Mode = Literal["dense", "bm25", "hybrid"]
Fusion = Literal["weighted", "rrf"]
MODES: tuple[str, ...] = ("dense", "bm25", "hybrid")
FUSIONS: tuple[str, ...] = ("weighted", "rrf")
#: The RRF rank constant of Cormack, Clarke & Büttcher (SIGIR 2009).
RRF_K = 60
#: The filter keys of ``ragline query --filter KEY=VALUE``, ``Index.search(filters=...)`` and flow nodes.
FILTER_KEYS: tuple[str, ...] = ("source", "doc_id", "page", "section")
#: The fields of :class:`RetrievalConfig` a flow node may set.
RETRIEVAL_FIELDS: tuple[str, ...] = ("mode", "fusion", "weights", "candidates", "k", "rrf_k")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Weights(_Model):
    """Fusion weights (>= 0) of the dense and the BM25 retriever (hybrid only)."""

    dense: float = Field(default=0.5, ge=0)
    bm25: float = Field(default=0.5, ge=0)


class RetrievalConfig(_Model):
    """``retrieval:`` — how every caller retrieves chunks.

    Attributes:
        mode: ``dense`` (FAISS over the chunk vectors), ``bm25`` (:mod:`indexers.bm25` over the
            same rows) or ``hybrid`` (both, fused; :mod:`indexers.retriever`).
        fusion: ``weighted`` (weighted sum of min-max normalized scores) or ``rrf``
            (reciprocal rank fusion); hybrid only.
        weights: ``{dense, bm25}`` fusion weights (hybrid only).
        candidates: rows each retriever contributes before fusion (hybrid only; raised to ``k``).
        k: chunks returned.
        rrf_k: the RRF rank constant (60 in Cormack et al. 2009).
        ef_search: HNSW query beam width (FAISS ``efSearch``; raised to the rows asked for);
            HNSW kinds of ``index.factory`` only.
        nprobe: IVF lists visited per query (FAISS ``nprobe``); IVF kinds only. Recall grows
            and speed drops with both (``benchmarks/retrieval_scale.py`` measures them).
        bm25_budget: ``None`` (exact BM25 top rows) or the number of postings, over all query
            terms, BM25 reads in impact order before returning its best rows (approximate,
            bounded cost: :meth:`indexers.bm25.BM25Corpus.search`); bm25 and hybrid modes.
            ``"auto"`` (the default): exact below 500,000 live rows, 4096 postings at and above
            (:func:`indexers.bm25.resolve_budget`).
    """

    mode: Mode = "hybrid"
    fusion: Fusion = "weighted"
    weights: Weights = Field(default_factory=Weights)
    candidates: int = Field(default=50, ge=1, le=100000)
    k: int = Field(default=5, ge=1, le=1000)
    rrf_k: int = Field(default=RRF_K, ge=0)
    ef_search: int = Field(default=64, ge=1, le=100000)
    nprobe: int = Field(default=32, ge=1, le=1 << 20)
    bm25_budget: Annotated[int, Field(ge=1)] | Literal["auto"] | None = "auto"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, source: str = "retrieval", prefix: str = "") -> "RetrievalConfig":
        """Validate a mapping.

        Raises:
            ConfigError: an unknown key or a bad value (names ``source``, the key, the value
                and, for ``mode``/``fusion``, the allowed values).
        """
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as e:
            raise config_error(e, source, prefix) from e

    def override(self, source: str = "retrieval", **changes: Any) -> "RetrievalConfig":
        """A copy with the non-``None`` ``changes`` applied and validated (``weights`` may be a dict).

        Raises:
            ConfigError: an unknown field or a bad value (see :meth:`from_dict`).
        """
        changes = {k: v for k, v in changes.items() if v is not None}
        if not changes:
            return self
        data = self.model_dump()
        if isinstance(changes.get("weights"), BaseModel):
            changes["weights"] = changes["weights"].model_dump(exclude_unset=True)
        if isinstance(changes.get("weights"), Mapping):
            changes["weights"] = {**data["weights"], **changes["weights"]}
        return self.from_dict({**data, **changes}, source)

    def record(self) -> dict[str, Any]:
        """The settings as reported: ``{"mode"}`` for dense and bm25, with fusion settings for
        hybrid, and ``bm25_budget`` for bm25 and hybrid when set (approximate BM25)."""
        budget = {} if self.bm25_budget is None or self.mode == "dense" else {"bm25_budget": self.bm25_budget}
        if self.mode != "hybrid":
            return {"mode": self.mode, **budget}
        out: dict[str, Any] = {"mode": self.mode, "fusion": self.fusion,
                               "weights": {"dense": self.weights.dense, "bm25": self.weights.bm25},
                               "candidates": self.candidates}
        if self.fusion == "rrf":
            out["rrf_k"] = self.rrf_k
        return {**out, **budget}


@dataclass(frozen=True, slots=True)
class ChunkFilter:
    """Metadata filter on chunks; empty fields do not filter.

    Attributes:
        sources: glob patterns; a chunk passes when its source URI or the URI's base name
            matches one (``"swarming.md"``, ``"*.pdf"``, ``"data/sample/*"``).
        doc_ids: document ids a chunk's ``doc_id`` must be one of.
        pages: allowed page numbers (chunks without a page fail a page filter).
        page_min, page_max: inclusive page range.
        sections: glob patterns; a chunk passes when one title of its section path matches one.
    """

    sources: tuple[str, ...] = ()
    doc_ids: tuple[str, ...] = ()
    pages: tuple[int, ...] = ()
    page_min: int | None = None
    page_max: int | None = None
    sections: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when nothing is filtered."""
        return not (self.sources or self.doc_ids or self.pages or self.sections
                    or self.page_min is not None or self.page_max is not None)

    @classmethod
    def from_mapping(cls, filters: Mapping[str, Any] | None, where: str = "filters") -> "ChunkFilter":
        """A filter from ``{source, doc_id, page, section}`` (the keys of :data:`FILTER_KEYS`).

        Values may be one value or a list; ``None`` does not filter. ``page`` is a page number,
        a list of pages, or ``{"min": a, "max": b}``; numeric strings count as page numbers.

        Raises:
            ConfigError: an unknown key (names it and the allowed ones) or a value of the wrong type.
        """
        f = dict(filters or {})
        unknown = sorted(set(f) - set(FILTER_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown filter key(s) {', '.join(map(repr, unknown))}; "
                              f"allowed: {', '.join(FILTER_KEYS)}")
        page = f.get("page")
        page_min = page_max = None
        pages: tuple = ()
        if isinstance(page, Mapping):
            bad = sorted(set(page) - {"min", "max"})
            if bad:
                raise ConfigError(f"{where}: page range keys are min and max, got {', '.join(map(repr, bad))}")
            page_min, page_max = _one_int(page.get("min"), f"{where}.page.min"), _one_int(page.get("max"), f"{where}.page.max")
        else:
            pages = _as_tuple(page, int, f"{where}.page")
        return cls(sources=_as_tuple(f.get("source"), str, f"{where}.source"),
                   doc_ids=_as_tuple(f.get("doc_id"), str, f"{where}.doc_id"), pages=pages,
                   page_min=page_min, page_max=page_max, sections=_as_tuple(f.get("section"), str, f"{where}.section"))


def _one_int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    got = _as_tuple(value, int, where)
    if len(got) != 1:
        raise ConfigError(f"{where}: expected one integer, got {value!r}")
    return got[0]


def _as_tuple(value: Any, kind: type, where: str) -> tuple:
    if value is None:
        return ()
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in items:
        if kind is int and isinstance(v, str) and v.strip().lstrip("-").isdigit():
            v = int(v)
        if not isinstance(v, kind) or isinstance(v, bool):
            raise ConfigError(f"{where}: expected {kind.__name__} values, got {v!r}")
        out.append(v)
    return tuple(out)


def parse_filter_options(items: list[str] | tuple[str, ...] | None, where: str = "--filter") -> ChunkFilter:
    """A :class:`ChunkFilter` from ``KEY=VALUE`` strings (``--filter source=*.md``); a key
    given twice keeps every value (any of them matches).

    Raises:
        ConfigError: an item without ``=``, an unknown key (names the allowed ones) or a bad value.
    """
    values: dict[str, list[str]] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where} {item!r}: use KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)}")
        values.setdefault(key.strip(), []).append(value)
    return ChunkFilter.from_mapping(values, where)


__all__ = ["Mode", "Fusion", "MODES", "FUSIONS", "RRF_K", "FILTER_KEYS", "RETRIEVAL_FIELDS", "Weights",
           "RetrievalConfig", "ChunkFilter", "parse_filter_options"]
