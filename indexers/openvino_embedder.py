"""The packaged model on OpenVINO (CPU): fp32, bf16 (AMX) or static int8 (NNCF).

OpenVINO reads the checked fp32 ONNX export of :mod:`indexers.onnx_embedder` directly
(``ov.Core().read_model``; output 0 is the pooled, normalized sentence vector) and compiles it
for the CPU with an ``INFERENCE_PRECISION_HINT``:

- ``openvino``: ``f32``. Its vectors agree with ONNX Runtime fp32 within 1e-4, so it shares
  the fp32 identity and embedding cache. The hint is explicit: on a CPU with bf16 units
  OpenVINO otherwise defaults to bf16.
- ``openvino-bf16``: ``bf16``, run on AMX / AVX-512 BF16 where the CPU has them
  (``ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")``).
- ``openvino-int8``: the export quantized once per weights file with NNCF post-training
  static quantization (``nncf.quantize``, ``ModelType.TRANSFORMER``: SmoothQuant, fast bias
  correction), calibrated on :data:`indexers.calibration.CALIBRATION_TEXTS`, saved as
  OpenVINO IR (``.xml`` + ``.bin``) under ``<cache>/openvino/``; the operations left in float
  run at f32.

Whether a backend's vectors carry their own identity is measured against the fp32 export on
real text when its model is first used (:func:`indexers.backends.identity_record`) and kept in
a sidecar whose fingerprint is (weights sha256, backend, recipe, calibration set hash,
OpenVINO/NNCF versions); a damaged IR fails its sha256 and is rebuilt.

Sources: OpenVINO Runtime (docs.openvino.ai, "Precision Control"); NNCF
(github.com/openvinotoolkit/nncf, post-training quantization); SmoothQuant (Xiao et al., ICML 2023).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ragline.indexers.backends import identity_record
from ragline.indexers.calibration import CALIBRATION_SHA256, CALIBRATION_TEXTS
from ragline.indexers.embedders import PACKAGED_MODEL, resolve_model_folder, weights_revision
from ragline.indexers.model_cache import cached_artifact
from ragline.indexers.onnx_embedder import (
    DEFAULT_CACHE,
    OnnxExportError,
    _run,
    _session,
    _tokenizer,
    default_threads,
    embed_sorted,
    ensure_export,
    model_slug,
)

#: rows per OpenVINO call when embedding many texts (benchmarks/embed_backends.py chose it).
RUN_ROWS = {"f32": 8, "bf16": 8, "int8": 8}
BACKEND_OF = {"f32": "openvino", "bf16": "openvino-bf16", "int8": "openvino-int8"}
#: How ``openvino-int8`` quantizes (part of its fingerprint and identity).
INT8_RECIPE = {"quantizer": "nncf.quantize", "model_type": "TRANSFORMER", "preset": "MIXED",
               "calibration_sha256": CALIBRATION_SHA256, "calibration_texts": len(CALIBRATION_TEXTS),
               "inference_precision": "f32"}


class OpenVinoEmbedder:
    """The sentence-transformers model run on OpenVINO's CPU plugin.

    Args:
        model: ``"all-MiniLM-L6-v2"`` (the packaged model) or a local sentence-transformers folder.
        normalize: L2-normalize the output vectors.
        cache_dir: ``paths.cache`` (exports under ``onnx/``, int8 IR under ``openvino/``).
        threads: ``INFERENCE_NUM_THREADS`` (>= 1; default 2, or 1 on a one-core machine).
        precision: ``"f32"``, ``"bf16"`` or ``"int8"``.

    ``embed`` returns float32 (len(texts), dim). Thread-safe: one infer request per thread.

    Raises:
        FileNotFoundError: the model is neither the packaged one nor a local folder.
        ValueError: ``threads`` < 1 or an unknown precision.
    """

    thread_safe = True

    def __init__(self, model: str = PACKAGED_MODEL, normalize: bool = True, cache_dir: str | Path | None = None,
                 threads: int | None = None, precision: str = "f32") -> None:
        threads = default_threads() if threads is None else threads
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if precision not in BACKEND_OF:
            raise ValueError(f"OpenVINO precision {precision!r}: use one of {', '.join(BACKEND_OF)}")
        self.model_id = model
        self.normalize = normalize
        self.threads = threads
        self.precision = precision
        self.backend = BACKEND_OF[precision]
        self.run_rows = RUN_ROWS[precision]
        self.sort_by_length = True
        self._path = resolve_model_folder(model)
        self._cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
        self._compiled: Any = None
        self._tok = None
        self._names: list[str] = []
        self._dim = 0
        self._local = threading.local()
        self._load_lock = threading.Lock()
        self.export_record: dict = {}
        self.model_record: dict = {}

    @property
    def revision(self) -> str:
        """``sha256:<hex>`` of the model weights (shared with every backend of the model)."""
        return weights_revision(self._path)

    @property
    def model_stem(self) -> Path:
        """``<cache>/openvino/<model>-<sha256[:16]>-<precision>``: this backend's model/record files."""
        return self._cache / "openvino" / f"{model_slug(self.model_id)}-{self.revision.split(':', 1)[1][:16]}-{self.precision}"

    @property
    def quantization(self) -> str:
        """``""`` when the vectors agree with fp32 within 1e-4, else ``"<backend>/<recipe>"``."""
        self.warm_up()
        return str(self.model_record.get("quantization", ""))

    @property
    def dim(self) -> int:
        """Output dimension (384 for all-MiniLM-L6-v2)."""
        self.warm_up()
        return self._dim

    def warm_up(self) -> None:
        """Export / quantize / measure once (cached), then compile for the CPU (about 1-2 s).

        Raises:
            OnnxExportError: the export, the quantization or the compilation failed.
        """
        if self._compiled is not None:
            return
        with self._load_lock:
            if self._compiled is None:
                try:
                    self._load()
                except OnnxExportError:
                    raise
                except Exception as e:  # OpenVINO and NNCF raise their own exception types
                    raise OnnxExportError(f"embedding backend {self.backend} unavailable: {type(e).__name__}: {e}") from e

    def _compile(self, model: Any, hint: str) -> Any:
        import openvino as ov

        return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                      "INFERENCE_NUM_THREADS": self.threads,
                                                      "PERFORMANCE_HINT": "LATENCY"})

    def _load(self) -> None:
        import openvino as ov

        export, record = ensure_export(self._path, self._cache, self.model_id, self.revision)
        self.export_record = record
        self._tok = _tokenizer(self._path, int(record["max_seq_length"]))
        self._names = list(record["inputs"])
        self._dim = int(record["dim"])
        fp32 = _session(export, self.threads)
        reference = lambda t: embed_sorted(lambda p: _run(fp32, self._tok, p, self._names), t, self._dim, 8)  # noqa: E731
        base = {"revision": self.revision, "backend": self.backend, "openvino": ov.__version__,
                "export_sha256": record["files"][export.name]}
        if self.precision == "int8":
            import nncf

            recipe = {**INT8_RECIPE, "nncf": nncf.__version__}
            stem = self.model_stem

            def build_int8(tmp: dict[str, Path]) -> dict:
                import contextlib
                import io
                import logging

                nncf.set_log_level(logging.ERROR)
                with contextlib.redirect_stdout(io.StringIO()):  # NNCF draws progress bars on stdout
                    quantized = nncf.quantize(ov.Core().read_model(str(export)),
                                              nncf.Dataset(list(CALIBRATION_TEXTS), self._feed),
                                              model_type=nncf.ModelType.TRANSFORMER,
                                              preset=nncf.QuantizationPreset.MIXED, subset_size=len(CALIBRATION_TEXTS))
                ov.save_model(quantized, str(tmp[".xml"]))
                compiled = self._compile(ov.Core().read_model(str(tmp[".xml"])), "f32")
                label = f"nncf{nncf.__version__}-static-int8-calib{CALIBRATION_SHA256[:12]}"
                return identity_record(self.backend, label, lambda t: self._embed_with(compiled, t), reference)

            self.model_record = cached_artifact(stem, {"artifact": "openvino-int8", **base, "recipe": recipe},
                                                [".xml", ".bin"], build_int8)
            compiled = self._compile(ov.Core().read_model(str(stem.with_name(stem.name + ".xml"))), "f32")
        else:
            compiled = self._compile(ov.Core().read_model(str(export)), self.precision)
            label = f"ov{ov.__version__.split('-')[0]}-{self.precision}"
            self.model_record = cached_artifact(
                self.model_stem, {"artifact": "openvino-agreement", **base, "precision": self.precision}, [],
                lambda tmp: identity_record(self.backend, label, lambda t: self._embed_with(compiled, t), reference))
        self._compiled = compiled

    def _feed(self, texts: str | Sequence[str]) -> dict[str, np.ndarray]:
        encs = self._tok.encode_batch([texts] if isinstance(texts, str) else list(texts))  # type: ignore[union-attr]
        feed = {"input_ids": np.asarray([e.ids for e in encs], dtype=np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in encs], dtype=np.int64)}
        if "token_type_ids" in self._names:
            feed["token_type_ids"] = np.asarray([e.type_ids for e in encs], dtype=np.int64)
        return feed

    def _request(self, compiled: Any) -> Any:
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        if id(compiled) not in requests:
            requests[id(compiled)] = compiled.create_infer_request()
        return requests[id(compiled)]

    def _infer(self, compiled: Any, texts: list[str]) -> np.ndarray:
        result = self._request(compiled).infer(self._feed(texts))
        return np.array(result[0], dtype=np.float32)  # a copy: the request reuses its output buffer

    def _embed_with(self, compiled: Any, texts: Sequence[str]) -> np.ndarray:
        return embed_sorted(lambda p: self._infer(compiled, p), texts, self._dim, self.run_rows)

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed texts; float32 (len(texts), dim), L2-normalized when ``normalize``.

        ``batch_size`` caps the rows per call (at most :attr:`run_rows`); ``progress`` is
        accepted for the :class:`~indexers.embedders.Embedder` protocol.
        """
        self.warm_up()
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        out = embed_sorted(lambda p: self._infer(self._compiled, p), texts, self._dim,
                           max(1, min(batch_size, self.run_rows)), self.sort_by_length)
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, norms, out=out, where=norms > 0)
        return np.ascontiguousarray(out, dtype=np.float32)
