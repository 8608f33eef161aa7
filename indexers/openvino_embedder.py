"""The packaged model on OpenVINO (CPU): fp32, bf16 (AMX) or static int8 (NNCF).

``openvino`` and ``openvino-bf16`` run the model converted from PyTorch by OpenVINO's own
frontend (``ov.convert_model`` on :func:`indexers.onnx_embedder.sentence_graph`: transformer
-> pooling -> normalize), saved once per weights file as OpenVINO IR under
``<cache>/openvino/`` and kept only if its f32 vectors are within 1e-4 of the checked ONNX
export. That graph keeps PyTorch's scaled-dot-product attention as one operation, which the
CPU plugin fuses; read from the ONNX export it is split into MatMul/Softmax/Transpose
(54 Transpose and 98 Reorder nodes at run time against 12 and 62) and ran 2-17% slower in
bf16 (``benchmarks/embed_throughput.py``). ``openvino-int8`` quantizes the ONNX export
(``ov.Core().read_model``). Output 0 is the pooled, normalized sentence vector. Each is
compiled for the CPU with an ``INFERENCE_PRECISION_HINT``:

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

Bulk embedding (``embed``). Texts are tokenized once, sorted by token count (longest first)
and cut into calls of :data:`RUN_ROWS` rows, each padded to its longest text rounded up to a
multiple of ``pad_multiple`` tokens. Padding is masked, so vectors do not change beyond
rounding. The rounding is there because the CPU plugin prepares its kernels for each input
shape the first time it sees one (in one probe here, 8 rows of about 220 tokens took a median
0.42 s on a new length and 0.23 s on a seen one), and sorted calls of mixed-length text would
otherwise meet a new shape almost every call. Side by side, with 2 streams, it added 2-18%
(``benchmarks/embed_throughput.py``: most on the first pass over new texts). With
``streams`` > 1 the model is compiled with ``PERFORMANCE_HINT: THROUGHPUT`` and
``NUM_STREAMS`` = streams (each stream runs its own calls on its share of the threads; CPU
pinning off, which measured faster on a shared machine) and the calls are fed through an
``ov.AsyncInferQueue`` of ``streams`` requests: tokenizing the next call overlaps the running
ones, and a stream never waits for the other's threads. Rows land in input order whatever
order the requests finish in. ``streams`` = 1 (queries) compiles with ``LATENCY`` and runs
one synchronous request per thread.

Static shapes (``static_shapes``, bulk embedding only). The model compiled with dynamic
shapes runs every call; once one input shape (rows, tokens) has had :data:`STATIC_AFTER` full
calls, a clone of the IR reshaped to exactly that shape is compiled on a background thread
(the streams keep running meanwhile) and later calls of that shape run on it, at most
``static_shapes`` shapes per embedder. With static shapes the CPU plugin fuses the residual
Add and the LayerNorm scale/shift into one kernel and drops activation reorders; its
FullyConnected (AMX) kernels ran about a third faster in a PERF_COUNT profile (8 x 240 tokens:
184 vs 275 ms over all calls). Same graph, same weights: the vectors matched the dynamic
model's exactly in every probe. Measured on one thread with CPU time (a loaded machine's
wall time is noise): 8 rows of ~200 tokens cost 1.13-1.23x less CPU; a compilation cost
0.26-0.29 CPU-s and about 65 MiB of memory (its bf16 weights and two requests), so a shape
pays back after about 16 calls. ``benchmarks/embed_throughput.py`` (arm ``s2 p16 dyn`` is
``static_shapes: 0``) times the compilations with the calls.

Whether a backend's vectors carry their own identity is measured against the fp32 export on
real text when its model is first used (:func:`indexers.backends.identity_record`) and kept in
a sidecar whose fingerprint is (weights sha256, backend, recipe, calibration set hash,
OpenVINO/NNCF versions); a damaged IR fails its sha256 and is rebuilt.

Sources: OpenVINO Runtime (docs.openvino.ai, "Precision Control", "High-level Performance
Hints", "Python API: AsyncInferQueue", "Model conversion from PyTorch"); NNCF
(github.com/openvinotoolkit/nncf, post-training quantization); SmoothQuant (Xiao et al., ICML 2023).
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ragline.indexers.backends import identity_record
from ragline.indexers.calibration import CALIBRATION_SHA256, CALIBRATION_TEXTS
from ragline.indexers.embedders import PACKAGED_MODEL, resolve_model_folder, weights_revision
from ragline.indexers.model_cache import cached_artifact
from ragline.indexers.onnx_embedder import (
    DEFAULT_CACHE,
    PARITY_ATOL,
    PROBES,
    OnnxExportError,
    _run,
    _session,
    _tokenizer,
    default_threads,
    embed_sorted,
    ensure_export,
    model_slug,
    sentence_graph,
)

#: Held while OpenVINO's consent check is swapped (a class attribute): threads that compile
#: or convert at once must not restore each other's swap half-way.
_TELEMETRY_LOCK = threading.RLock()


@contextlib.contextmanager
def telemetry_declined() -> Iterator[None]:
    """Decline OpenVINO's usage telemetry while the block runs.

    ``import openvino`` (its ``tools.ovc`` package), ``ov.convert_model`` and ``import nncf``
    start ``openvino_telemetry`` with ``enable_opt_in_dialog=False``, which counts a missing
    consent file as consent: an event is sent to Google Analytics and files are written under
    ``~/intel``. ragline reaches no network it was not configured for and writes nothing outside
    its roots, so the consent check answers "declined" here. The telemetry object is a per-process
    singleton, checked again only when another tool re-initializes it, so every such entry point
    in ragline runs under this (:func:`openvino`). Without the package the tools use a no-op stub.
    """
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:
        yield
        return
    with _TELEMETRY_LOCK:
        check = OptInChecker.check
        OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED
        try:
            yield
        finally:
            OptInChecker.check = check


def openvino() -> Any:
    """The ``openvino`` module, imported with its usage telemetry declined (:func:`telemetry_declined`)."""
    with telemetry_declined():
        import openvino as ov
    return ov


#: rows per OpenVINO call when embedding many texts (benchmarks/embed_backends.py chose it).
RUN_ROWS = {"f32": 8, "bf16": 8, "int8": 8}
#: Full calls of one input shape (rows, tokens) an embedder runs on the dynamic-shape model
#: before it compiles a model for exactly that shape (``static_shapes``). A compilation cost
#: 0.26-0.29 CPU-s here and a static-shape call about 17 ms less CPU than a dynamic one
#: (8 rows of ~200 tokens, 1 thread), so 16 calls are about the break-even; a shape that has
#: had 32 calls is likely to have 16 more. At 16, the compilations cost the first pass over
#: 320 chunks 16% in ``benchmarks/embed_throughput.py`` (4 shapes compiled for ~40 calls).
STATIC_AFTER = 32
#: Bump when the converted IR changes: old IR is rebuilt.
IR_FORMAT = 1
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
        streams: inference streams for bulk embedding (``embed.streams``); more than 1
            compiles with the THROUGHPUT hint and feeds an ``AsyncInferQueue`` of that many
            requests; at most ``threads`` are used; 1: LATENCY hint, synchronous calls.
        pad_multiple: each call's sequence length is rounded up to a multiple of this many
            tokens (``embed.pad_multiple``; at most the model's max sequence length); 1: no rounding.
        static_shapes: bulk embedding (more texts than one call): at most this many input shapes
            get a model compiled for exactly that shape once :data:`STATIC_AFTER` full calls of
            it ran on the dynamic-shape model (``embed.static_shapes``); 0: dynamic shapes only.

    ``embed`` returns float32 (len(texts), dim) in input order. Thread-safe: each thread has
    its own requests.

    Raises:
        FileNotFoundError: the model is neither the packaged one nor a local folder.
        ValueError: ``threads``, ``streams`` or ``pad_multiple`` < 1, ``static_shapes`` < 0,
            or an unknown precision.
    """

    thread_safe = True

    def __init__(self, model: str = PACKAGED_MODEL, normalize: bool = True, cache_dir: str | Path | None = None,
                 threads: int | None = None, precision: str = "f32", streams: int = 1,
                 pad_multiple: int = 16, static_shapes: int = 6) -> None:
        threads = default_threads() if threads is None else threads
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if streams < 1 or pad_multiple < 1:
            raise ValueError(f"streams and pad_multiple must be >= 1, got {streams} and {pad_multiple}")
        if static_shapes < 0:
            raise ValueError(f"static_shapes must be >= 0, got {static_shapes}")
        if precision not in BACKEND_OF:
            raise ValueError(f"OpenVINO precision {precision!r}: use one of {', '.join(BACKEND_OF)}")
        self.model_id = model
        self.normalize = normalize
        self.threads = threads
        self.precision = precision
        self.backend = BACKEND_OF[precision]
        self.run_rows = RUN_ROWS[precision]
        self.sort_by_length = True
        self.streams = min(streams, threads)
        self.pad_multiple = pad_multiple
        self.static_shapes = static_shapes
        self._source: Any = None  # the ov.Model the bulk model was compiled from (cloned per static shape)
        self._shape_calls: dict[tuple[int, int], int] = {}
        self._static: dict[tuple[int, int], Any] = {}
        self._static_lock = threading.Lock()
        self._pending: dict[tuple[int, int], Future] = {}  # shapes whose static model was started
        self._compiler: ThreadPoolExecutor | None = None
        self._compiler_pid = 0  # the process that made it: a forked child inherits no running thread
        self._hint = ""
        self._path = resolve_model_folder(model)
        self._cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
        self._compiled: Any = None
        self._tok = None
        self._bare_tok = None  # the tokenizer without padding (embed pads each call itself)
        self._max_len = 0
        self._pad_id = 0
        self._names: list[str] = []
        self._dim = 0
        self._local = threading.local()
        self._load_lock = threading.Lock()
        self.export_record: dict = {}
        self.model_record: dict = {}
        self.ir_record: dict = {}

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

    @property
    def ir_stem(self) -> Path:
        """``<cache>/openvino/<model>-<sha256[:16]>-ir``: the IR converted from PyTorch (f32 and bf16 run it)."""
        return self._cache / "openvino" / f"{model_slug(self.model_id)}-{self.revision.split(':', 1)[1][:16]}-ir"

    def _compile(self, model: Any, hint: str, streams: int = 1) -> Any:
        ov = openvino()

        # no pinning: OpenVINO pins its threads to the same first cores in every process, so two
        # workers of one machine (Dask, 1 thread each) shared one core (benchmarks/distributed.py part 3)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": self.threads,
                                  "ENABLE_CPU_PINNING": False}
        if streams > 1:
            config |= {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams}
        else:
            config["PERFORMANCE_HINT"] = "LATENCY"
        return ov.Core().compile_model(model, "CPU", config)

    def _ensure_ir(self, export: Path, reference: Any) -> Path:
        """The IR converted from PyTorch (:func:`sentence_graph`), converting and checking it
        against the ONNX export (f32, :data:`PROBES`, within ``PARITY_ATOL``) when missing or damaged."""
        ov = openvino()

        stem = self.ir_stem
        fingerprint = {"artifact": "openvino-ir", "revision": self.revision, "format": IR_FORMAT,
                       "openvino": ov.__version__}

        def build(tmp: dict[str, Path]) -> dict:
            import torch

            graph, names, _, st = sentence_graph(self._path)
            example = st.tokenizer(["conversion example", "a second, longer conversion example"], padding=True,
                                   return_tensors="pt")
            with warnings.catch_warnings(), torch.inference_mode(), telemetry_declined():
                warnings.simplefilter("ignore")
                model = ov.convert_model(graph, example_input=tuple(example[n] for n in names),
                                         input=[([-1, -1], ov.Type.i64) for _ in names])
            for port, name in zip(model.inputs, names):  # the module's inputs are positional
                port.get_tensor().set_names({name})
            ov.save_model(model, str(tmp[".xml"]), compress_to_fp16=False)
            compiled = self._compile(ov.Core().read_model(str(tmp[".xml"])), "f32")
            probes = list(PROBES)
            diff = float(np.abs(self._embed_with(compiled, probes) - reference(probes)).max())
            if not diff <= PARITY_ATOL:
                raise OnnxExportError(f"OpenVINO conversion of {self._path} differs from the ONNX export by "
                                      f"{diff:.2e} (> {PARITY_ATOL})")
            return {"inputs": names, "probes": len(probes), "max_abs_diff": diff, "torch": torch.__version__}

        self.ir_record = cached_artifact(stem, fingerprint, [".xml", ".bin"], build)
        return stem.with_name(stem.name + ".xml")

    def _load(self) -> None:
        ov = openvino()

        export, record = ensure_export(self._path, self._cache, self.model_id, self.revision)
        self.export_record = record
        self._max_len = int(record["max_seq_length"])
        self._tok = _tokenizer(self._path, self._max_len)
        self._pad_id = int((self._tok.padding or {}).get("pad_id", 0))
        self._bare_tok = _tokenizer(self._path, self._max_len)
        self._bare_tok.no_padding()
        self._names = list(record["inputs"])
        self._dim = int(record["dim"])
        fp32: list[Any] = []  # the fp32 ONNX session, opened only when something is built

        def reference(texts: Sequence[str]) -> np.ndarray:
            if not fp32:
                fp32.append(_session(export, self.threads))
            return embed_sorted(lambda p: _run(fp32[0], self._tok, p, self._names), texts, self._dim, 8)

        base = {"revision": self.revision, "backend": self.backend, "openvino": ov.__version__,
                "export_sha256": record["files"][export.name]}
        if self.precision == "int8":
            with telemetry_declined():
                import nncf

            recipe = {**INT8_RECIPE, "nncf": nncf.__version__}
            stem = self.model_stem

            def build_int8(tmp: dict[str, Path]) -> dict:
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
            self._source, self._hint = ov.Core().read_model(str(stem.with_name(stem.name + ".xml"))), "f32"
            compiled = self._compile(self._source, "f32", self.streams)
        else:
            ir = self._ensure_ir(export, reference)
            base["ir_sha256"] = self.ir_record["files"][ir.name]
            model = ov.Core().read_model(str(ir))
            self._source, self._hint = model, self.precision
            compiled = self._compile(model, self.precision, self.streams)
            label = f"ov{ov.__version__.split('-')[0]}-{self.precision}-ptir"

            def agreement(tmp: Path) -> dict:  # measured on a LATENCY compilation, as queries run (the
                # agreement does not depend on streams); compiled only when the record is not cached yet
                measure = compiled if self.streams == 1 else self._compile(model, self.precision)
                return identity_record(self.backend, label, lambda t: self._embed_with(measure, t), reference)

            self.model_record = cached_artifact(
                self.model_stem, {"artifact": "openvino-agreement", **base, "precision": self.precision}, [], agreement)
        self._compiled = compiled

    def _feed(self, texts: str | Sequence[str]) -> dict[str, np.ndarray]:
        """Tokenized, padded model inputs of one call (int64 (rows, tokens) each); NNCF calibrates on it."""
        encs = self._tok.encode_batch([texts] if isinstance(texts, str) else list(texts))  # type: ignore[union-attr]
        feed = {"input_ids": np.asarray([e.ids for e in encs], dtype=np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in encs], dtype=np.int64)}
        if "token_type_ids" in self._names:
            feed["token_type_ids"] = np.asarray([e.type_ids for e in encs], dtype=np.int64)
        return feed

    def _calls(self, texts: Sequence[str], rows: int, sort: bool) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
        """``(row indices, model inputs)`` per call: texts tokenized once, longest (in tokens)
        first when ``sort``, ``rows`` per call, each call padded to a multiple of ``pad_multiple``."""
        encs = self._bare_tok.encode_batch(list(texts))  # type: ignore[union-attr]
        lengths = [len(e.ids) for e in encs]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i]) if sort else list(range(len(texts)))
        m = self.pad_multiple
        for start in range(0, len(order), rows):
            part = order[start:start + rows]
            longest = max(lengths[i] for i in part)
            width = max(longest, min(-(-longest // m) * m, self._max_len))
            ids = np.full((len(part), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(part), width), dtype=np.int64)
            types = np.zeros((len(part), width), dtype=np.int64)
            for r, i in enumerate(part):
                e, n = encs[i], lengths[i]
                ids[r, :n], mask[r, :n], types[r, :n] = e.ids, e.attention_mask, e.type_ids
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._names:
                feed["token_type_ids"] = types
            yield part, feed

    def _request(self, compiled: Any) -> Any:
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        if id(compiled) not in requests:
            requests[id(compiled)] = compiled.create_infer_request()
        return requests[id(compiled)]

    def _queue(self, compiled: Any) -> Any:
        """This thread's ``AsyncInferQueue`` of :attr:`streams` requests for ``compiled``; its
        callback copies each call's output into the rows the call was given and frees a slot
        (``userdata = (out, rows, errors, slots)``)."""
        queues = getattr(self._local, "queues", None)
        if queues is None:
            queues = self._local.queues = {}
        if id(compiled) not in queues:
            queue = openvino().AsyncInferQueue(compiled, self.streams)

            def done(request: Any, userdata: tuple[np.ndarray, list[int], list[BaseException], Any]) -> None:
                out, part, errors, slots = userdata
                try:
                    out[part] = request.get_output_tensor(0).data  # copies: the request reuses its buffer
                except BaseException as e:  # noqa: BLE001 - raised again by _run_calls
                    errors.append(e)
                finally:
                    slots.release()

            queue.set_callback(done)
            queues[id(compiled)] = queue
        return queues[id(compiled)]

    def _model_for(self, compiled: Any, feed: dict[str, np.ndarray], rows: int) -> Any:
        """The model to run one bulk call on: the one compiled for its exact shape when it is
        ready; ``compiled`` (dynamic shapes) otherwise. Counts full calls per shape; a shape's
        :data:`STATIC_AFTER`-th call starts compiling its model on a background thread (the
        streams keep running meanwhile), up to :attr:`static_shapes` shapes. The model is
        reshaped from a clone of the IR: the same graph and weights, so the same vectors."""
        shape = tuple(feed["input_ids"].shape)
        if self.static_shapes == 0 or shape[0] != rows:
            return compiled
        with self._static_lock:
            static = self._static.get(shape)  # type: ignore[arg-type]
            if static is not None:
                return static
            n = self._shape_calls[shape] = self._shape_calls.get(shape, 0) + 1  # type: ignore[index]
            if n == STATIC_AFTER and len(self._pending) < self.static_shapes:
                if self._compiler is None or self._compiler_pid != os.getpid():
                    self._compiler = ThreadPoolExecutor(1, thread_name_prefix="ragline-ov-static")
                    self._compiler_pid = os.getpid()
                self._pending[shape] = self._compiler.submit(self._compile_static, shape)  # type: ignore[index]
            return compiled

    def _compile_static(self, shape: tuple[int, int]) -> None:
        """Compile the model for one input shape (background thread); a failure leaves the
        shape on the dynamic model and warns once (the vectors are the same either way)."""
        try:
            model = self._source.clone()
            model.reshape({name: list(shape) for name in self._names})
            static = self._compile(model, self._hint, self.streams)
        except Exception as e:  # OpenVINO raises its own types; the dynamic model still works
            warnings.warn(f"OpenVINO: compiling {self.backend} for input shape {shape} failed, "
                          f"dynamic shapes kept: {type(e).__name__}: {e}", RuntimeWarning, stacklevel=1)
            return
        with self._static_lock:
            self._static[shape] = static

    def _run_calls(self, compiled: Any, texts: Sequence[str], rows: int, sort: bool, streams: int,
                   static: bool = False) -> np.ndarray:
        """float32 (len(texts), dim) in input order (not normalized here); ``static``: full
        calls may run on models compiled for their exact shape (:meth:`_model_for`)."""
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        if streams == 1:
            for part, feed in self._calls(texts, rows, sort):
                model = self._model_for(compiled, feed, rows) if static else compiled
                out[part] = self._request(model).infer(feed)[0]
            return out
        # at most `streams` calls in flight over every model's queue (each has `streams` requests)
        slots, errors, used = threading.Semaphore(streams), [], {}
        try:
            for part, feed in self._calls(texts, rows, sort):
                model = self._model_for(compiled, feed, rows) if static else compiled
                queue = used.get(id(model))
                if queue is None:
                    queue = used[id(model)] = self._queue(model)
                slots.acquire()
                try:
                    queue.start_async(feed, (out, part, errors, slots))
                except BaseException:
                    slots.release()
                    raise
        finally:  # no request left writing into `out`
            for queue in used.values():
                queue.wait_all()
        if errors:
            raise errors[0]
        return out

    def _embed_with(self, compiled: Any, texts: Sequence[str]) -> np.ndarray:
        return self._run_calls(compiled, texts, self.run_rows, True, 1)

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed texts; float32 (len(texts), dim) in input order, L2-normalized when ``normalize``.

        ``batch_size`` caps the rows per call (at most :attr:`run_rows`); ``progress`` is
        accepted for the :class:`~indexers.embedders.Embedder` protocol. With more than one
        stream, a single call (at most ``run_rows`` texts) runs synchronously on one request.
        """
        self.warm_up()
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        rows = max(1, min(batch_size, self.run_rows))
        streams = self.streams if len(texts) > rows else 1
        out = self._run_calls(self._compiled, texts, rows, self.sort_by_length, streams, static=len(texts) > rows)
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, norms, out=out, where=norms > 0)
        return np.ascontiguousarray(out, dtype=np.float32)
