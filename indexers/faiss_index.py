"""FAISS indexes named by factory strings: build, train, write, open (memory-mapped), search.

One vocabulary names every kind: a FAISS factory string (``"Flat"``, ``"HNSW32"``,
``"IVF4096,Flat"``, ``"IVF1024,PQ48"``, ``"OPQ48,IVF4096,PQ48"``, ...) built with
``faiss.index_factory`` and recorded in the manifest with
``faiss.contrib.factory_tools.reverse_index_factory``, as faiss's own ``contrib/factory_tools.py``
does. ``auto`` picks by size: ``Flat`` (exact) below :data:`AUTO_FLAT_MAX` vectors, else
``IVF{nlist},Flat`` with ``nlist`` from :func:`auto_nlist` (see :func:`resolve_factory`).

Row ``i`` of the index is row ``i`` of the version's chunk table; versions are immutable, so
this positional id map is fixed for a version's life. The float32 vectors themselves are kept
beside the index (:data:`VECTORS_FILE`, :func:`write_vectors`), so a lossy kind (PQ, SQ) never
has to give them back.

The functions here are small on purpose: a publish (or a segment writer) calls
:func:`build_faiss_index` then :func:`write_faiss_index` and :func:`write_vectors`; a reader calls
:func:`read_faiss_index` (memory-mapped where the kind allows) and :func:`search` with
:func:`search_parameters`.

Sources: Johnson, Douze & Jégou, "Billion-scale similarity search with GPUs" (FAISS, 2017);
Malkov & Yashunin, "Efficient and robust approximate nearest neighbor search using
Hierarchical Navigable Small World graphs" (TPAMI 2018); Jégou, Douze & Schmid, "Product
quantization for nearest neighbor search" (TPAMI 2011, IVF and PQ); the FAISS wiki,
"Guidelines to choose an index" (``nlist`` about 4·sqrt(n), 30 to 256 training points per
centroid).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import faiss
import numpy as np

from ragline.core.errors import ConfigError

#: ``index.factory: auto`` builds an exact ``Flat`` index below this many vectors (measured here:
#: a Flat search of 384-d vectors costs about 2.5 ms per 50k vectors with 2 threads, so 50k keeps
#: exact search under the 5 ms per query target), an ``IVF{nlist},Flat`` index from there on.
AUTO_FLAT_MAX = 50_000
#: The kind ``auto`` picks at and above :data:`AUTO_FLAT_MAX` (``{nlist}`` from :func:`auto_nlist`).
AUTO_APPROXIMATE = "IVF{nlist},Flat"
#: File of a version's float32 (n, dim) vectors in NumPy ``.npy`` format (memory-mappable).
VECTORS_FILE = "vectors.npy"
#: Dimensions a factory string is tried with when the params are loaded (the embedding
#: dimension is not known then): PQ/OPQ sub-quantizers must divide it.
_CHECK_DIMS = (384, 768, 960, 1024, 1536)
_TRAIN_SEED = 1234


@dataclass(frozen=True, slots=True)
class FaissSpec:
    """What to build.

    Attributes:
        factory: a FAISS factory string (``"Flat"``, ``"HNSW32"``, ``"IVF4096,Flat"``,
            ``"IVF1024,PQ48"``...) or ``auto`` (:func:`resolve_factory`).
        metric: ``ip`` (inner product) or ``l2``.
        train_size: vectors sampled (uniformly, fixed seed) to train kinds that need
            training (IVF centroids, PQ/SQ codebooks, OPQ rotations).
        ef_construction: HNSW build beam width (HNSW kinds only; FAISS's default is 40).
    """

    factory: str = "Flat"
    metric: Literal["ip", "l2"] = "ip"
    train_size: int = 100_000
    ef_construction: int = 40

    def settings(self) -> dict[str, Any]:
        """The build settings a manifest records under ``index`` (compared by a refresh)."""
        return {"factory_param": self.factory, "metric": self.metric, "train_size": self.train_size,
                "ef_construction": self.ef_construction}


def faiss_metric(metric: str) -> int:
    """``faiss.METRIC_INNER_PRODUCT`` for ``ip``, ``faiss.METRIC_L2`` for ``l2``."""
    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


def auto_nlist(n: int) -> int:
    """IVF list count for n vectors: the power of two nearest 4·sqrt(n) (FAISS wiki), at least 16."""
    return max(16, 2 ** round(math.log2(4 * math.sqrt(max(n, 1)))))


def resolve_factory(factory: str, n: int) -> str:
    """The factory string to build for ``n`` vectors: ``factory`` itself, or for ``auto``
    ``Flat`` when ``n < AUTO_FLAT_MAX`` else ``IVF{auto_nlist(n)},Flat``."""
    if factory.strip().lower() != "auto":
        return factory
    return "Flat" if n < AUTO_FLAT_MAX else AUTO_APPROXIMATE.format(nlist=auto_nlist(n))


def _make(dim: int, factory: str, metric: str, where: str) -> faiss.Index:
    try:
        return faiss.index_factory(int(dim), factory, faiss_metric(metric))
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
        raise ConfigError(f"{where}: FAISS rejects the factory string {factory!r} at dim {dim}: {msg}") from e


@functools.lru_cache(maxsize=64)
def check_factory(factory: str, metric: str = "ip", where: str = "index.factory") -> str:
    """Validate a factory string without vectors (at params load).

    ``auto`` passes. Any other string must build with ``faiss.index_factory`` at one of a few
    common embedding dimensions (PQ sub-quantizers must divide the dimension, which is
    known only at build time; :func:`build_faiss_index` checks again with the real one).

    Returns:
        ``factory`` unchanged.

    Raises:
        ConfigError: FAISS cannot parse or build it at any of those dimensions (quotes
            FAISS's message).
    """
    if not isinstance(factory, str) or not factory.strip():
        raise ConfigError(f"{where}: empty factory string; use auto, Flat, HNSW32, IVF4096,Flat, ...")
    if factory.strip().lower() == "auto":
        return factory
    errors = []
    for dim in _CHECK_DIMS:
        try:
            _make(dim, factory, metric, where)
            return factory
        except ConfigError as e:
            errors.append(e)
    raise errors[0]


def needs_training(index: faiss.Index) -> bool:
    """True when ``index`` must be trained before vectors are added (IVF, PQ, SQ, OPQ...)."""
    return not index.is_trained


def training_sample(vectors: np.ndarray, size: int, seed: int = _TRAIN_SEED) -> np.ndarray:
    """A uniform sample of at most ``size`` rows (fixed seed, rows kept in order), float32 C-contiguous."""
    n = len(vectors)
    if n <= size:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def build_faiss_index(vectors: np.ndarray, spec: FaissSpec, *, add_batch: int = 65_536,
                      trained: faiss.Index | None = None) -> faiss.Index:
    """Build the index ``spec.factory`` names over ``vectors``.

    Kinds that need training (``index.is_trained`` false after ``faiss.index_factory``) are
    trained on :func:`training_sample` of ``spec.train_size`` rows first, unless ``trained``
    is an index of the same kind and dimension: then its trained state (IVF centroids, PQ/SQ
    codebooks) is reused and only the vectors are added (a refresh's small segment takes the
    parent segment's quantizer instead of training on a few rows). Vectors are added
    in batches of ``add_batch`` rows, so a memory-mapped ``vectors`` is never copied whole.

    Args:
        vectors: float32 array (n, dim) (a ``np.memmap`` is fine).
        spec: factory string (or ``auto``), metric, training sample size.
        add_batch: rows per ``index.add`` call.
        trained: an index whose training to reuse (ignored when the kinds differ).

    Returns:
        A FAISS index holding n vectors with ids 0..n-1.

    Raises:
        ValueError: ``vectors`` is not 2-D.
        ConfigError: FAISS rejects the factory string at this dimension (quotes its message),
            or the kind needs training and there are fewer vectors than it needs.
    """
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n, dim), got shape {vectors.shape}")
    n, dim = vectors.shape
    factory = resolve_factory(spec.factory, n)
    index = _make(dim, factory, spec.metric, "index.factory")
    hnsw = _hnsw_of(index)
    if hnsw is not None:
        hnsw.efConstruction = int(spec.ef_construction)
    if needs_training(index) and trained is not None and trained.is_trained and int(trained.d) == dim \
            and type(faiss.downcast_index(trained)) is type(faiss.downcast_index(index)) \
            and int(trained.metric_type) == int(index.metric_type):
        index = faiss.clone_index(trained)
        index.reset()
    if needs_training(index) and n:
        sample = training_sample(vectors, spec.train_size)
        try:
            index.train(sample)
        except RuntimeError as e:
            msg = str(e).strip().splitlines()[-1]
            raise ConfigError(f"index.factory: training {factory!r} on {len(sample)} vectors failed: {msg}; "
                              "use fewer lists/centroids or a larger index.train_size") from e
    for lo in range(0, n, add_batch):
        index.add(np.ascontiguousarray(vectors[lo:lo + add_batch], dtype=np.float32))
    return index


def factory_of(index: faiss.Index, requested: str | None = None) -> str:
    """The factory string of a built index (``reverse_index_factory``), else ``requested``."""
    from faiss.contrib.factory_tools import reverse_index_factory

    try:
        return str(reverse_index_factory(index))
    except (NotImplementedError, AssertionError, AttributeError, RuntimeError):
        if requested is None:
            raise
        return requested


def index_record(index: faiss.Index, spec: FaissSpec, n_trained: int | None = None) -> dict[str, Any]:
    """The ``index`` section of a manifest for an index built from ``spec``.

    Returns:
        ``{"factory", "factory_param", "metric", "ntotal", "dim", "trained_on", "train_size",
        "ef_construction"}``: ``factory`` is what was built (``reverse_index_factory``),
        ``factory_param`` what the params asked for (``auto`` included), ``trained_on`` the
        training sample size (0 for kinds without training).
    """
    n = int(index.ntotal)
    factory = factory_of(index, resolve_factory(spec.factory, n))
    trained = 0 if n_trained is None else int(n_trained)
    if n_trained is None and not _never_trains(factory, index.d, spec.metric):
        trained = min(n, spec.train_size)
    return {"factory": factory, **spec.settings(), "ntotal": n, "dim": int(index.d), "trained_on": trained}


@functools.lru_cache(maxsize=64)
def _never_trains(factory: str, dim: int, metric: str) -> bool:
    try:
        return bool(faiss.index_factory(int(dim), factory, faiss_metric(metric)).is_trained)
    except RuntimeError:
        return True


def build_settings(record: Mapping[str, Any]) -> dict[str, Any]:
    """The build settings (``factory_param``, ``metric``, ``train_size``, ``ef_construction``) of a
    manifest's ``index`` record or a params ``index`` section, old ones included.

    Manifests and params written before factory strings hold ``kind: flat|hnsw`` and
    ``hnsw_m``/``hnsw_ef_construction``: ``flat`` reads as ``Flat``, ``hnsw`` as ``HNSW{hnsw_m}``.
    """
    if "factory_param" in record or "factory" in record:
        factory = str(record.get("factory_param", record.get("factory")))
        ef = record.get("ef_construction", FaissSpec().ef_construction)
    else:
        kind = str(record.get("kind", "flat"))
        factory = "Flat" if kind == "flat" else f"HNSW{int(record.get('hnsw_m', 32))}"
        ef = record.get("hnsw_ef_construction", 200)
    return {"factory_param": factory, "metric": str(record.get("metric", "ip")),
            "train_size": int(record.get("train_size", FaissSpec().train_size)), "ef_construction": int(ef)}


def factory_in(record: Mapping[str, Any]) -> str:
    """The factory string an ``index`` manifest record says was built (old ``kind`` records included)."""
    if "factory" in record:
        return str(record["factory"])
    return build_settings(record)["factory_param"]


# ---------------------------------------------------------------- files
def write_faiss_index(index: faiss.Index, path: Path) -> None:
    """Write an index to ``path`` (the caller makes the folder atomic)."""
    faiss.write_index(index, str(path))


def mmap_flag(factory: str | None) -> int:
    """The ``faiss.read_index`` flag that memory-maps a kind, or 0.

    IVF kinds map their inverted lists (``IO_FLAG_MMAP``: ``OnDiskInvertedLists`` over the
    file); every other kind maps its flat code array (``IO_FLAG_MMAP_IFC``: Flat, HNSW's flat
    storage, PQ/SQ codes). Measured with faiss 1.15: the resident size after opening drops
    from the index size to a few MB for Flat, HNSW and IVF kinds.
    """
    if factory is None:
        return 0
    return faiss.IO_FLAG_MMAP if "IVF" in factory.upper() else faiss.IO_FLAG_MMAP_IFC


def read_faiss_index(path: Path, *, mmap: bool = False, factory: str | None = None) -> faiss.Index:
    """Read an index written by :func:`write_faiss_index`.

    Args:
        path: the ``index.faiss`` file.
        mmap: memory-map it (:func:`mmap_flag` of ``factory``); a kind FAISS cannot map is read
            into memory instead.
        factory: the factory string the manifest records (chooses the mapping flag).

    Raises:
        OSError: the file is missing or not a FAISS index.
    """
    flag = mmap_flag(factory or "Flat") if mmap else 0
    try:
        if flag:
            try:
                return faiss.read_index(str(path), flag)
            except RuntimeError:
                pass  # this kind cannot be mapped: read it into memory
        return faiss.read_index(str(path))
    except RuntimeError as e:
        raise OSError(f"{path}: not a readable FAISS index ({e})") from e


def write_vectors(vectors: np.ndarray, path: Path, *, batch: int = 65_536) -> None:
    """Write float32 (n, dim) ``vectors`` to ``path`` in ``.npy`` format, ``batch`` rows at a time."""
    n, dim = vectors.shape
    out = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float32, shape=(n, dim))
    for lo in range(0, n, batch):
        out[lo:lo + batch] = vectors[lo:lo + batch]
    out.flush()
    del out


def read_vectors(path: Path, *, mmap: bool = True) -> np.ndarray:
    """Read the vectors :func:`write_vectors` wrote: float32 (n, dim), memory-mapped read-only
    when ``mmap``.

    Raises:
        OSError: the file is missing, damaged or not float32 2-D.
    """
    try:
        arr = np.load(str(path), mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError) as e:
        raise OSError(f"{path}: not a readable vectors file ({e})") from e
    if arr.dtype != np.float32 or arr.ndim != 2:
        raise OSError(f"{path}: expected float32 (n, dim) vectors, got {arr.dtype} {arr.shape}")
    return arr


class _Pinned:
    """An array interface over memory an index owns, holding the index so the memory stays valid."""

    def __init__(self, view: np.ndarray, owner: faiss.Index) -> None:
        self.__array_interface__ = {**view.__array_interface__, "data": (view.__array_interface__["data"][0], True)}
        self._owner = owner


def exact_vectors(index: faiss.Index) -> np.ndarray | None:
    """float32 (ntotal, dim) read-only view of the vectors an index stores exactly (``Flat``,
    ``HNSW..,Flat``: their code array is the raw vectors), or ``None`` for any other kind
    (IVF, PQ, SQ, a pre-transform). Nothing is copied: for a memory-mapped index the view reads
    the mapped file; it keeps ``index`` alive. Such a segment needs no :data:`VECTORS_FILE`."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexHNSW):
        inner = faiss.downcast_index(inner.storage)
    if not isinstance(inner, faiss.IndexFlat) or isinstance(inner, faiss.IndexPreTransform):
        return None
    n, d = int(inner.ntotal), int(inner.d)
    if n == 0:
        return np.zeros((0, d), dtype=np.float32)
    view = faiss.rev_swig_ptr(inner.get_xb(), n * d)
    return np.asarray(_Pinned(view.reshape(n, d), index))


def vectors_of(index: faiss.Index) -> np.ndarray:
    """float32 (ntotal, dim) vectors reconstructed from an index (versions without
    :data:`VECTORS_FILE`, all of them Flat or HNSW, whose storage is exact).

    Raises:
        OSError: the kind cannot give its vectors back.
    """
    if index.ntotal == 0:
        return np.zeros((0, index.d), dtype=np.float32)
    try:
        return np.ascontiguousarray(index.reconstruct_n(0, index.ntotal), dtype=np.float32)
    except RuntimeError as e:
        raise OSError(f"the index ({type(index).__name__}) cannot give its vectors back and the version has no "
                      f"{VECTORS_FILE}: rebuild it ({e})") from e


# ---------------------------------------------------------------- searching
def _hnsw_of(index: faiss.Index):  # noqa: ANN202 - a faiss.HNSW or None
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexPreTransform):
        return _hnsw_of(inner.index)
    return inner.hnsw if hasattr(inner, "hnsw") else None


def search_parameters(index: faiss.Index, *, depth: int, ef_search: int | None = None, nprobe: int | None = None,
                      sel: Any = None) -> faiss.SearchParameters | None:
    """Per-query FAISS search parameters for ``index`` (thread-safe: nothing is set on the index).

    HNSW kinds get ``efSearch = max(ef_search, depth)``; IVF kinds ``nprobe``; both carry the id
    selector ``sel``. Pre-transforms (OPQ, PCA) pass their parameters through; a refine stage
    gets them for its base index.

    Args:
        index: the index searched.
        depth: results asked for (efSearch is raised to it).
        ef_search: HNSW beam width (``retrieval.ef_search``).
        nprobe: IVF lists visited (``retrieval.nprobe``).
        sel: a ``faiss.IDSelector`` or ``None``.

    Returns:
        The parameters, or ``None`` when the defaults stored in the index apply and nothing filters.
    """
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexPreTransform):
        return search_parameters(inner.index, depth=depth, ef_search=ef_search, nprobe=nprobe, sel=sel)
    if isinstance(inner, faiss.IndexRefine):
        base = search_parameters(inner.base_index, depth=depth, ef_search=ef_search, nprobe=nprobe, sel=sel)
        if base is None:
            return None
        params = faiss.IndexRefineSearchParameters(base_index_params=base)
        params._ragline_refs = (base,)  # the SWIG object does not own its base parameters
        return params
    if hasattr(inner, "hnsw") and ef_search is not None:
        params = faiss.SearchParametersHNSW(efSearch=max(int(ef_search), int(depth)))
    elif isinstance(inner, faiss.IndexIVF) and nprobe is not None:
        params = faiss.SearchParametersIVF(nprobe=int(nprobe))
    elif sel is not None:
        params = faiss.SearchParameters()
    else:
        return None
    if sel is not None:
        params.sel = sel
        params._ragline_refs = (sel,)
    return params


def search(index: faiss.Index, queries: np.ndarray, k: int, params: faiss.SearchParameters | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k search.

    Args:
        index: the index.
        queries: float32 (q, dim).
        k: results per query (capped at the index size).
        params: from :func:`search_parameters`.

    Returns:
        ``(scores, rows)``: float32 (q, k') and int64 (q, k'), k' = min(k, ntotal); higher
        scores are better for ``ip``, lower for ``l2``; row -1 marks a missing result
        (approximate kinds may find fewer than k').
    """
    k = min(k, index.ntotal)
    if k <= 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    return index.search(q, k, params=params) if params is not None else index.search(q, k)
