"""Embedding backends: which runtimes run the model, at which precision, and what that does to identity.

``embed.backend`` names one of :data:`BACKENDS`. Every backend runs the same weights (the
packaged all-MiniLM-L6-v2 or a local sentence-transformers folder); the quantized and
reduced-precision ones derive their model from the checked fp32 ONNX export
(:mod:`indexers.onnx_embedder`) once per weights file and keep it under ``paths.cache``
(:mod:`indexers.model_cache`).

Identity. A backend whose vectors agree with fp32 within :data:`IDENTITY_ATOL` (max absolute
difference per component of L2-normalized vectors, measured on :data:`AGREEMENT_TEXTS`, real
text, when the backend's model is first built) shares the fp32 identity and its embedding
cache; ``torch``, ``onnx`` and ``openvino`` do. Any other backend (bf16, int8) gets a
``quantization`` identity ``"<backend>/<recipe>"``, which goes into the embedding cache key
and the manifest; a query must then be embedded by the same backend and recipe
(:func:`indexers.manifest.check_embedder`). The agreement measured is kept in the model's
sidecar (``max_abs_diff``, ``min_cosine``, ``mean_cosine``).

Sources: ONNX Runtime quantization (``onnxruntime.quantization.quantize_dynamic``); OpenVINO
``INFERENCE_PRECISION_HINT``; NNCF post-training static quantization
(``nncf.quantize``, ``ModelType.TRANSFORMER``: SmoothQuant + fast bias correction).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ragline.core.errors import ConfigError
from ragline.indexers.calibration import CALIBRATION_TEXTS

#: Max |component| difference to fp32 (normalized vectors) under which a backend keeps the fp32 identity.
IDENTITY_ATOL = 1e-4
#: ``embed.backend`` / ``--query-backend`` value: for queries, "the backend the index was built
#: with"; for indexing, that of the index's latest version, else this CPU's fastest (:func:`resolve_backend`).
AUTO = "auto"


@dataclass(frozen=True, slots=True)
class Backend:
    """One ``embed.backend`` value.

    Attributes:
        name: the params value.
        runtimes: import names that must be installed.
        precision: ``fp32``, ``bf16`` or ``int8`` (of the matrix products).
        summary: one line for help texts.
    """

    name: str
    runtimes: tuple[str, ...]
    precision: str
    summary: str

    @property
    def installed(self) -> bool:
        """Every runtime of this backend can be imported."""
        return all(importlib.util.find_spec(r) is not None for r in self.runtimes)


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", ("torch", "sentence_transformers"), "fp32", "sentence-transformers on PyTorch"),
    Backend("torch-bf16", ("torch", "sentence_transformers"), "bf16", "sentence-transformers on PyTorch, weights in bfloat16"),
    Backend("onnx", ("onnxruntime",), "fp32", "ONNX Runtime, the checked fp32 export"),
    Backend("onnx-int8", ("onnxruntime",), "int8", "ONNX Runtime, dynamic int8 quantization of the export"),
    Backend("openvino", ("openvino",), "fp32", "OpenVINO reading the export, f32 inference precision"),
    Backend("openvino-bf16", ("openvino",), "bf16", "OpenVINO reading the export, bf16 inference precision (AMX)"),
    Backend("openvino-int8", ("openvino", "nncf"), "int8",
            "OpenVINO, static int8 (NNCF, calibrated on the bundled sample corpus)"),
)}


def installed_backends() -> list[str]:
    """Names of the backends whose runtimes are installed, in :data:`BACKENDS` order."""
    return [name for name, b in BACKENDS.items() if b.installed]


def require_backend(name: str, allow_auto: bool = False) -> str:
    """Check a backend name; returns it.

    Raises:
        ConfigError: unknown name, or a runtime it needs is not installed (names the backend,
            what is missing and the installed backends).
    """
    if allow_auto and name == AUTO:
        return name
    backend = BACKENDS.get(name)
    installed = ", ".join(installed_backends()) or "none"
    if backend is None:
        extra = f"{AUTO}, " if allow_auto else ""
        raise ConfigError(f"embedding backend {name!r} is unknown; known: {extra}{', '.join(BACKENDS)}; "
                          f"installed: {installed}")
    if not backend.installed:
        missing = [r for r in backend.runtimes if importlib.util.find_spec(r) is None]
        raise ConfigError(f"embedding backend {name!r} needs {', '.join(missing)}, which is not installed; "
                          f"installed backends: {installed}")
    return name


def query_backend_for(embedding: Mapping[str, Any], requested: str = AUTO, fp32_default: str = "onnx") -> str:
    """The backend that embeds queries for an index whose manifest records ``embedding``.

    ``auto`` gives the index's own backend when its vectors carry a ``quantization`` identity
    (bf16, int8: only that backend reproduces them), else ``fp32_default``. An explicit
    backend is returned as is: :func:`indexers.manifest.check_embedder` refuses it when its
    identity differs from the index's.
    """
    if requested != AUTO:
        return requested
    quantization = str(embedding.get("quantization") or "")
    return quantization.split("/", 1)[0] if quantization else fp32_default


#: CPU flags (Linux ``/proc/cpuinfo``) of the matrix units the reduced-precision backends run on.
MATRIX_FLAGS: tuple[str, ...] = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx_vnni")
#: CPU flags that choose the backend: the matrix units and AVX2 (the vector unit the fp32
#: OpenVINO kernels were measured on where there is no matrix unit).
UNIT_FLAGS: tuple[str, ...] = (*MATRIX_FLAGS, "avx2")


def cpu_units(cpuinfo: str | None = None) -> frozenset[str]:
    """The :data:`UNIT_FLAGS` this CPU reports.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (default: read it; empty where it cannot be
            read, e.g. off Linux).

    Returns:
        The flags of the first ``flags`` line that are in :data:`UNIT_FLAGS` (empty off
        Linux x86, whose ``/proc/cpuinfo`` has no ``flags`` line).
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split()) & frozenset(UNIT_FLAGS)
    return frozenset()


def fastest_backend_for(units: frozenset[str] | set[str]) -> str:
    """The backend measured fastest, within 0.5 chunking-eval recall points of fp32, on a CPU
    with ``units`` (:func:`cpu_units`); the README's "Embedding backends" shows the runs.

    - AMX (``amx_bf16``): ``openvino-bf16`` (3.6-5.3x ONNX Runtime fp32 in the model call;
      ``openvino-int8`` 3.6-4.3x);
    - AVX-512 VNNI or AVX-VNNI without AMX: ``openvino-int8`` (2.7-3.0x; ``openvino-bf16``
      0.83-0.96x there: without AMX its bf16 products are no faster than fp32);
    - AVX2 and no matrix unit: ``openvino`` (f32, 1.09-1.21x in the model call and 1.12x in
      ``ragline eval chunking``'s ``embed_seconds``, measured on an AMD EPYC; its vectors are
      within 1e-4 of fp32's, so it keeps the fp32 identity and embedding cache; ``openvino-int8``
      0.58x there, ``onnx-int8`` 0.95-1.20x with a quantized identity);
    - none of these (not Linux x86): ``onnx`` (not measured on such a CPU).

    Source: ``benchmarks/embed_throughput.py`` on the three kinds of machine; OpenVINO's CPU
    plugin runs bf16 inference on AMX where present, int8 on VNNI.
    """
    if "amx_bf16" in units:
        return "openvino-bf16"
    if units & {"avx512_vnni", "avx_vnni"}:
        return "openvino-int8"
    if "avx2" in units:
        return "openvino"
    return "onnx"


def recorded_backend(recorded: Mapping[str, Any]) -> str:
    """The backend a version's manifest says embedded its chunks: its ``params.embed.backend``
    when that names a backend (runs that publish record the resolved one), else the backend its
    ``embedding.quantization`` names (:func:`query_backend_for`: ``onnx`` for fp32 vectors; an
    older manifest may record ``auto``).

    Args:
        recorded: the version's manifest fields ``{"params": ..., "embedding": ...}``.

    Returns:
        A backend name (installed or not).
    """
    named = str(((recorded.get("params") or {}).get("embed") or {}).get("backend") or "")
    return named if named in BACKENDS else query_backend_for(recorded.get("embedding") or {})


def resolve_backend(requested: str, recorded: Mapping[str, Any] | None = None,
                    units: frozenset[str] | set[str] | None = None) -> str:
    """The backend that embeds chunks for ``embed.backend: requested``.

    An explicit name is returned as it is. ``auto`` gives, in this order:

    1. the backend the index's latest version was built with, when ``recorded`` (that
       version's manifest: ``{"params": ..., "embedding": ...}``) names one that is installed:
       its ``params.embed.backend``, else the backend its ``embedding.quantization`` names
       (:func:`query_backend_for`). So a refresh never re-embeds a corpus because it runs on
       another kind of CPU, and its vectors never mix identities;
    2. :func:`fastest_backend_for` this CPU's ``units`` (default :func:`cpu_units`),
       when installed;
    3. ``onnx``.

    Args:
        requested: an ``embed.backend`` value (:data:`AUTO` or a :data:`BACKENDS` name).
        recorded: the latest version's manifest fields, or ``None`` (no version yet).
        units: the CPU's :data:`UNIT_FLAGS` (tests pass them; default: read ``/proc/cpuinfo``).

    Returns:
        A :data:`BACKENDS` name.
    """
    if requested != AUTO:
        return requested
    if recorded:
        named = recorded_backend(recorded)
        if named in BACKENDS and BACKENDS[named].installed:
            return named
    fastest = fastest_backend_for(cpu_units() if units is None else units)
    return fastest if BACKENDS[fastest].installed else "onnx"


#: Real text the vectors of every backend are compared on: the calibration passages and two
#: queries (the calibration set itself is what static int8 was tuned on; the benchmark
#: measures agreement on the Python docs too).
AGREEMENT_TEXTS: tuple[str, ...] = CALIBRATION_TEXTS + (
    "How long does a worker bee take to develop?",
    "When should the honey supers be removed?",
)


def _normalized(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, n, out=np.zeros_like(v), where=n > 0)


def agreement(vectors: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How close ``vectors`` are to fp32 ``reference`` (both float (n, dim); compared L2-normalized).

    Returns:
        ``{"max_abs_diff", "min_cosine", "mean_cosine"}``.
    """
    a, b = _normalized(vectors), _normalized(reference)
    cos = (a * b).sum(axis=1)
    return {"max_abs_diff": float(np.abs(a - b).max()), "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean())}


def identity_record(backend: str, recipe: str, embed: Callable[[Sequence[str]], np.ndarray],
                    reference: Callable[[Sequence[str]], np.ndarray]) -> dict[str, Any]:
    """Measure a backend against fp32 on :data:`AGREEMENT_TEXTS` and decide its identity.

    Args:
        backend: the backend name.
        recipe: how its model was made (quantizer, options, versions, calibration hash).
        embed: the backend's embedding function.
        reference: the fp32 embedding function of the same weights.

    Returns:
        ``{"backend", "recipe", "quantization", "agreement_texts", "max_abs_diff",
        "min_cosine", "mean_cosine"}``; ``quantization`` is ``""`` when the vectors agree
        with fp32 within :data:`IDENTITY_ATOL`, else ``"<backend>/<recipe>"``.
    """
    texts = list(AGREEMENT_TEXTS)
    measured = agreement(embed(texts), reference(texts))
    quantization = "" if measured["max_abs_diff"] <= IDENTITY_ATOL else f"{backend}/{recipe}"
    return {"backend": backend, "recipe": recipe, "quantization": quantization,
            "agreement_texts": len(texts), **measured}
