"""Query embedding on ONNX Runtime: the same model, the same vectors, a third of the latency.

A retrieve call embeds one short question. Through sentence-transformers and PyTorch that
costs 12-22 ms for all-MiniLM-L6-v2 through sentence-transformers on torch (one thread); the
same graph on ONNX Runtime takes about 7-8 ms on one thread and 5-6 ms on two, and needs
neither torch nor sentence-transformers in the serving process.

The graph is exported from the local sentence-transformers folder, once per weights file, with
PyTorch's TorchScript-based ``torch.onnx.export`` (transformer -> pooling -> normalize, dynamic
batch and sequence axes), then checked against sentence-transformers on probe texts: the
export is kept only if every vector is within ``PARITY_ATOL`` of the torch vector. The
embedder therefore keeps the identity (model_id, revision = sha256 of the weights, dim,
normalize) of :class:`~indexers.embedders.SentenceTransformerEmbedder`, and an index built
with torch is searched with ONNX vectors without re-embedding anything.

Exports live in ``<cache>/onnx/<model>-<sha256[:16]>-opset<N>.onnx`` with a JSON sidecar
recording the parity measured. Writing goes through a file lock, a temporary file and
``os.replace``, so concurrent first uses never see half a file. When the model cannot be
exported (a pooling mode or module this exporter does not know, a torch without the exporter),
the embedder says why once on stderr and falls back to sentence-transformers.

Sources: ONNX Runtime (onnxruntime.ai), PyTorch ``torch.onnx.export``; mean pooling as in
Reimers & Gurevych, "Sentence-BERT" (EMNLP 2019).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ragline.indexers.embedders import (
    PACKAGED_MODEL,
    SentenceTransformerEmbedder,
    pooling_layout,
    resolve_model_folder,
    weights_revision,
)

OPSET = 17
RUN_ROWS = 8  # rows per ONNX Runtime call when embedding many texts
PARITY_ATOL = 1e-4
DEFAULT_CACHE = Path(".ragline/cache")
PROBES = (
    "How long does a worker bee take to develop?",
    "a",
    "Ünïcödé, emoji 🐝 and CJK 蜜蜂 in one query",
    "What are the main differences between the two approaches described in the report? " * 40,  # > 256 pieces
)


class OnnxExportError(RuntimeError):
    """The model could not be exported to ONNX, or the export does not match torch."""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def model_layout(folder: Path) -> dict:
    """What the exporter needs of a sentence-transformers folder:
    :func:`indexers.embedders.pooling_layout` plus a ``tokenizer.json``.

    Returns:
        ``{"pooling": "mean"|"cls"|"max", "normalize": bool, "max_seq_length": int, "dim": int}``.

    Raises:
        OnnxExportError: modules other than Transformer -> Pooling [-> Normalize], another
            pooling mode, or no ``tokenizer.json``.
    """
    try:
        layout = pooling_layout(folder)
    except ValueError as e:
        raise OnnxExportError(str(e)) from e
    if not (folder / "tokenizer.json").is_file():
        raise OnnxExportError(f"{folder}: no tokenizer.json (a fast tokenizer is needed without transformers)")
    return layout


def export_onnx(folder: Path, dest: Path, opset: int = OPSET) -> dict:
    """Export a sentence-transformers folder to ONNX at ``dest`` and check it against torch.

    Imports torch and sentence-transformers (only here). The graph takes int64
    ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the tokenizer makes them),
    shapes (batch, sequence), and returns float32 ``embedding`` (batch, dim).

    Returns:
        The sidecar record: model folder, opset, torch version, pooling, probes, max_abs_diff.

    Raises:
        OnnxExportError: unsupported layout, export failure, or parity above ``PARITY_ATOL``.
    """
    layout = model_layout(folder)
    try:
        import torch
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    except Exception as e:  # missing or unreadable files, an import failure
        raise OnnxExportError(f"loading {folder} with sentence-transformers failed: {type(e).__name__}: {e}") from e
    bert = st[0].auto_model.eval()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in st.tokenizer.model_input_names]
    pooling, normalize = layout["pooling"], layout["normalize"]

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            feats = dict(zip(names, args))
            hidden = self.bert(**feats).last_hidden_state
            mask = feats["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            if pooling == "mean":
                v = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            elif pooling == "cls":
                v = hidden[:, 0]
            else:
                v = (hidden + (mask - 1.0) * 1e9).max(1).values
            return torch.nn.functional.normalize(v, p=2.0, dim=1) if normalize else v

    example = st.tokenizer(["export example"], return_tensors="pt")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"embedding": {0: "batch"}}
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(Graph().eval(), tuple(example[n] for n in names), str(tmp), input_names=names,
                              output_names=["embedding"], dynamic_axes=axes, opset_version=opset, dynamo=False)
        session = _session(tmp, threads=1)
        tok = _tokenizer(folder, layout["max_seq_length"])
        ours = _run(session, tok, list(PROBES), names)
        ref = st.encode(list(PROBES), convert_to_numpy=True, normalize_embeddings=False)
        diff = float(np.abs(ours - ref).max())
        if not diff <= PARITY_ATOL:
            raise OnnxExportError(f"ONNX export of {folder} differs from torch by {diff:.2e} (> {PARITY_ATOL})")
        record = {"model_folder": str(folder), "opset": opset, "torch": torch.__version__, "inputs": names,
                  "dim": int(ours.shape[1]), **layout, "probes": len(PROBES), "max_abs_diff": diff}
        os.replace(tmp, dest)
    except OnnxExportError:
        raise
    except Exception as e:  # the exporter raises many kinds; all mean "no ONNX path"
        raise OnnxExportError(f"exporting {folder} to ONNX failed: {type(e).__name__}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return record


def default_threads() -> int:
    """ONNX Runtime intra-op threads for query embedding: 2, or 1 on a one-core machine."""
    return max(1, min(2, os.cpu_count() or 1))


def _session(path: Path, threads: int, spin: bool = False):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    # Worker threads sleep instead of spinning between operators: with spinning, two threads
    # were 2x slower at p50 once another process kept the cores busy (benchmarks/query_embedding.py).
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _tokenizer(folder: Path, max_len: int):  # -> tokenizers.Tokenizer
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(max_len)
    pad = tok.padding or {}
    tok.enable_padding(pad_id=int(pad.get("pad_id", 0)), pad_token=str(pad.get("pad_token", "[PAD]")))
    return tok


def _run(session, tok, texts: list[str], names: list[str]) -> np.ndarray:
    encs = tok.encode_batch(texts) if len(texts) > 1 else [tok.encode(texts[0])]
    feed = {"input_ids": np.asarray([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in encs], dtype=np.int64)}
    if "token_type_ids" in names:
        feed["token_type_ids"] = np.asarray([e.type_ids for e in encs], dtype=np.int64)
    return np.asarray(session.run(["embedding"], feed)[0], dtype=np.float32)


class OnnxEmbedder:
    """The sentence-transformers model run on ONNX Runtime (CPU), for query embedding.

    Args:
        model: ``"all-MiniLM-L6-v2"`` (the packaged model) or a local sentence-transformers folder.
        normalize: L2-normalize the output vectors.
        cache_dir: where exports are kept (``<cache_dir>/onnx/``); default ``.ragline/cache``.
        threads: ONNX Runtime intra-op threads (>= 1; default :func:`default_threads`, 2).
            Threads do not spin, so two threads stay faster than one on a busy machine too.

    Identity (``model_id``, ``revision``, ``dim``, ``normalize``) equals the torch embedder's,
    so indexes built with either are searched with either. ``embed`` returns float32
    (len(texts), dim). Thread-safe: ONNX Runtime sessions and tokenizers encode concurrently.

    Raises:
        FileNotFoundError: the model is neither the packaged one nor a local folder.
    """

    thread_safe = True

    def __init__(self, model: str = PACKAGED_MODEL, normalize: bool = True,
                 cache_dir: str | Path | None = None, threads: int | None = None) -> None:
        threads = default_threads() if threads is None else threads
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.model_id = model
        self.normalize = normalize
        self.threads = threads
        self._path = resolve_model_folder(model)
        self._cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
        self._session = None
        self._tok = None
        self._names: list[str] = []
        self._dim = 0
        self._fallback: SentenceTransformerEmbedder | None = None
        self._fallback_reason = ""
        self._load_lock = threading.Lock()
        self.export_record: dict = {}

    @property
    def revision(self) -> str:
        """``sha256:<hex>`` of the model weights (:func:`~indexers.embedders.weights_revision`,
        the same as the torch embedder's)."""
        return weights_revision(self._path)

    @property
    def onnx_path(self) -> Path:
        """Where this model's export is (or will be) kept."""
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(self.model_id).name)
        return self._cache / "onnx" / f"{slug}-{self.revision.split(':', 1)[1][:16]}-opset{OPSET}.onnx"

    @property
    def backend(self) -> str:
        """``"onnx"``, or ``"torch"`` after a fallback (see :attr:`fallback_reason`)."""
        self.warm_up()
        return "torch" if self._fallback is not None else "onnx"

    @property
    def fallback_reason(self) -> str:
        """Why the ONNX path is not used ('' when it is)."""
        return self._fallback_reason

    @property
    def uses_torch(self) -> bool:
        """True when embedding runs on torch (fallback)."""
        return self._fallback is not None

    def warm_up(self) -> None:
        """Load the export (exporting it first if missing: about 3 s once), or fall back to torch."""
        if self._session is not None or self._fallback is not None:
            return
        with self._load_lock:
            if self._session is not None or self._fallback is not None:
                return
            try:
                self._load()
            except (OnnxExportError, OSError) as e:  # OSError: e.g. a read-only cache folder
                self._fallback_reason = str(e)
                print(f"ragline: ONNX query embedding unavailable, using sentence-transformers: {e}", file=sys.stderr)
                fb = SentenceTransformerEmbedder(self.model_id, normalize=self.normalize)
                fb.warm_up()
                self._fallback = fb

    def _load(self) -> None:
        from filelock import FileLock

        path = self.onnx_path
        sidecar = path.with_suffix(".json")
        if not (path.is_file() and sidecar.is_file()):
            path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(path) + ".lock"):
                if not (path.is_file() and sidecar.is_file()):
                    record = export_onnx(self._path, path) | {"model_id": self.model_id, "revision": self.revision}
                    tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
                    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
                    os.replace(tmp, sidecar)
        record = _read_json(sidecar)
        if record.get("revision") != self.revision or not record.get("inputs"):
            raise OnnxExportError(f"{sidecar}: does not describe {self.model_id} {self.revision}; delete it to re-export")
        try:
            self._session = _session(path, self.threads)
        except Exception as e:  # onnxruntime raises its own exception types for damaged files
            raise OnnxExportError(f"{path}: cannot be loaded ({e}); delete it to re-export") from e
        self._tok = _tokenizer(self._path, int(record["max_seq_length"]))
        self._names = list(record["inputs"])
        self._dim = int(record["dim"])
        self.export_record = record

    @property
    def dim(self) -> int:
        """Output dimension (384 for all-MiniLM-L6-v2)."""
        self.warm_up()
        return self._fallback.dim if self._fallback is not None else self._dim

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed texts; float32 (len(texts), dim), L2-normalized when ``normalize``.

        ``batch_size`` caps the rows per ONNX Runtime call (at most ``RUN_ROWS``); ``progress``
        is accepted for the :class:`~indexers.embedders.Embedder` protocol (callers show
        their own progress per batch).
        """
        self.warm_up()
        if self._fallback is not None:
            return self._fallback.embed(texts, batch_size, progress)
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        if len(texts) == 1:
            out = _run(self._session, self._tok, [texts[0]], self._names)
        else:
            # Longest first, in runs of at most RUN_ROWS similar lengths: little padding, and
            # small runs stay in cache (8 rows: 30 chunks/s here; 64 rows: 23 chunks/s).
            order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
            step = max(1, min(batch_size, RUN_ROWS))
            out = np.empty((len(texts), self._dim), dtype=np.float32)
            for i in range(0, len(order), step):
                rows = order[i:i + step]
                out[rows] = _run(self._session, self._tok, [texts[r] for r in rows], self._names)
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, norms, out=out, where=norms > 0)
        return np.ascontiguousarray(out, dtype=np.float32)
