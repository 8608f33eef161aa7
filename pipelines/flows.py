"""The Prefect flows (the only module that imports Prefect).

``ingest`` composes the stage functions of :mod:`pipelines.load`, :mod:`pipelines.chunk`,
:mod:`pipelines.embed` and :mod:`pipelines.publish` as tasks. Retries are declared only
where a retry can help: file discovery (I/O), model loading, and publishing (I/O). Parsing,
chunking and embedding are deterministic: a retry would fail the same way, and a bad
document is quarantined instead. Tasks use ``NO_CACHE``: inputs are large Arrow tables that
ragline caches itself, by content (the embedding cache).

Flows run without a Prefect server: Prefect starts a temporary local API on loopback. Its
start (a subprocess importing Prefect's server: about 4 CPU-seconds, 5-25 s of wall time on a
loaded 2-core machine) is paid once per process and overlapped, not avoided (Prefect 3.8 runs
no flow without an API; ``PREFECT_API_URL`` pointing at a running server avoids it):
:class:`GuardedFlow` starts it in a background thread while the run is prepared in the calling
thread and joins it before the flow runs; later flows in the process reuse it. An ingest
prepares more than its parsers (preloaded) and its embedder (warmed up): a local build from
its sources discovers its files and starts its load-chunk-embed stream right away
(:class:`_HeadStart`, :func:`_prepare_ingest`), and the flow's ``discover`` and
``load-chunk-embed`` tasks take what it found and made (its ``stage_seconds`` say how long it
ran before the flow: ``before-flow (overlapped)``; the run's seconds count from its preparation). So the
API start overlaps parsing and embedding instead of preceding them; a stream the flow never
takes (the API did not start) is cancelled. The
orchestrator is not a single point of failure: :class:`GuardedFlow` (what ``ingest_flow``,
``refresh_flow`` and ``chunking_experiment_flow`` are) waits ``prefect.startup_timeout_s`` for that API to start, retries a lost
API only briefly, and when the API dies mid-run either returns the finished work (publishing
happened; the run just could not be recorded) or fails with one line
(:class:`OrchestratorError`); it never hangs.
"""

from __future__ import annotations

import contextvars
import errno
import functools
import inspect
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

from contextlib import contextmanager, nullcontext

from ragline.core.memory import keep_rows
from ragline.core.offline import set_offline_env
from ragline.pipelines.verbosity import quiet_libraries

set_offline_env()
quiet_libraries()  # before Prefect's import: its INFO lines and bm25s's DEBUG line are not shown by default

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.utilities.annotations import opaque  # noqa: E402

from ragline.indexers.embedders import Embedder, info_of  # noqa: E402
from ragline.indexers.registry import IndexRegistry  # noqa: E402
from ragline.pipelines.config import Params  # noqa: E402
from ragline.pipelines.embed import embedder_key, index_embedder  # noqa: E402
from ragline.pipelines.load import (  # noqa: E402
    QuarantineRecord,
    check_failure_rate,
    documents_to_table,
    load_documents,
    prestart_parsers,
    quarantine_to_table,
)
from ragline.pipelines.errors import PipelineError  # noqa: E402
from ragline.pipelines.progress import Reporter  # noqa: E402
from ragline.pipelines.publish import SharedSegments, publish_index  # noqa: E402
from ragline.pipelines.telemetry import observed, timed as _timed  # noqa: E402  (metrics files, push, spans)
from ragline.pipelines.stream import PARSER_NICE, embed_rows, load_chunk_embed  # noqa: E402
from ragline.pipelines import curate as curation_stage  # noqa: E402  [curate hook]

#: Progress reporter for the current run (set by the CLI; tasks run in the caller's context).
REPORTER: contextvars.ContextVar[Reporter] = contextvars.ContextVar("ragline_reporter", default=Reporter())

#: Where a guarded flow leaves its result the moment its work is done (before Prefect records
#: the final state), so a run whose API died after publishing still reports what it did.
#: ``(params dict, RefreshPlan, seconds it took)`` that :func:`pipelines.refresh.run_refresh` made
#: under the index lock it still holds: the refresh flow of the same params uses it instead of
#: scanning again.
PLANNED: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("ragline_planned_refresh", default=None)
_OUTCOME: contextvars.ContextVar[dict | None] = contextvars.ContextVar("ragline_flow_outcome", default=None)

log = logging.getLogger("ragline.flows")

#: Prefect's own setting for the temporary server's start-up wait; set in the environment it
#: wins over ``prefect.startup_timeout_s``.
STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"

#: Loggers whose records only say that Prefect could not deliver events to a lost API.
_EVENT_LOGGERS = ("prefect.events.utilities", "prefect._internal.concurrency")


class OrchestratorError(PipelineError):
    """The Prefect API did not start in time, or stopped answering before the work was done."""


def _record(result: Any) -> Any:
    """Leave ``result`` where :class:`GuardedFlow` finds it if Prefect cannot record the run."""
    box = _OUTCOME.get()
    if box is not None:
        box["result"] = result
    return result


class _DropOrchestratorNoise(logging.Filter):
    """Drop Prefect's tracebacks of errors the command reports itself in one line: a lost API,
    ragline errors and OS errors (the CLI names the file and what to do)."""

    def filter(self, record: logging.LogRecord) -> bool:
        import httpx

        from ragline.core.errors import CLI_ERRORS

        if record.name in _EVENT_LOGGERS:
            return False
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, (httpx.HTTPError, *CLI_ERRORS))


def _is_api_failure(e: BaseException) -> bool:
    import httpx

    from prefect.exceptions import PrefectHTTPStatusError

    if isinstance(e, (httpx.HTTPError, PrefectHTTPStatusError)):
        return True
    return isinstance(e, RuntimeError) and ("ephemeral Prefect API server" in str(e) or "Failed to reach API" in str(e))


class _TemporaryApiStart:
    """Prefect's temporary local API, started in a background thread (so the caller can prepare
    the run meanwhile) and joined before the flow runs.

    ``get_client`` starts the same process-wide ``SubprocessASGIServer`` on a flow's first API
    call; its ``start()`` sets ``running`` before it waits for the server's health check, so a
    flow started while this thread still waits would not wait: :meth:`join` must come first.
    Nothing is started when ``PREFECT_API_URL`` names a server or the temporary API already runs
    (it is started once per process and stopped at exit).
    """

    def __init__(self) -> None:
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def begin(cls) -> "_TemporaryApiStart":
        """Start the temporary API in a thread (with the caller's Prefect settings: the start-up
        timeout, the subprocess's environment), unless no temporary API is needed."""
        from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

        self = cls()
        if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():  # get_client's own condition
            return self
        ctx = contextvars.copy_context()  # the temporary settings of GuardedFlow live in a ContextVar

        def start() -> None:  # imports Prefect's server (about 1.6 s) in the thread too
            from prefect.server.api.server import SubprocessASGIServer

            server = SubprocessASGIServer()
            if not server.running:
                server.start()

        def run() -> None:
            try:
                ctx.run(start)
            except BaseException as e:  # noqa: BLE001 - handed to join()
                self._error = e

        self._thread = threading.Thread(target=run, name="ragline-prefect-api", daemon=True)
        self._thread.start()
        return self

    def join(self) -> None:
        """Wait for the start to end; raise what it raised (``RuntimeError`` "...ephemeral
        Prefect API server..." on a time-out, as Prefect's own start would)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or "a temporary local API"


class GuardedFlow:
    """A Prefect flow that fails with one line, or returns its finished work, when the API fails.

    Calling it runs the flow with Prefect's temporary-server start-up wait set from
    ``prefect.startup_timeout_s`` (unless ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``
    is set), API requests retried at most ``prefect.api_retries`` times (Prefect's default of
    5 with exponential back-off is minutes of waiting per request once the API is gone), and
    logging to a *temporary* API switched off (no one can read it afterwards). Attributes of
    the flow (``fn``, ``name``, ``serve``) are reached through it.

    Raises:
        OrchestratorError: the API did not start within the timeout, or was lost before the
            flow's work was done (nothing was published then).
    """

    def __init__(self, flow_obj: Any, params_of: Callable[[tuple, dict], dict | None],
                 before: Callable[[tuple, dict], Callable[[], None] | None] | None = None) -> None:
        self._flow = flow_obj
        self._params_of = params_of
        self._before = before  # given the call's (args, kwargs); runs while the temporary API starts; may
        # return what to undo when the flow ends (what it prepared or started and the flow did not take)
        functools.update_wrapper(self, flow_obj.fn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._flow, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from prefect.settings import (
            PREFECT_API_URL,
            PREFECT_CLIENT_MAX_RETRIES,
            PREFECT_LOGGING_TO_API_ENABLED,
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
            temporary_settings,
        )

        from ragline.pipelines.config import PrefectConfig

        raw = self._params_of(args, kwargs)
        cfg = PrefectConfig.model_validate((raw or {}).get("prefect") or {})
        flow_obj = _with_task_runner(self._flow, (raw or {}).get("runner"))
        updates: dict[Any, Any] = {}
        if not os.environ.get(STARTUP_TIMEOUT_ENV):
            updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = max(1, round(cfg.startup_timeout_s))
        if not os.environ.get("PREFECT_CLIENT_MAX_RETRIES"):
            updates[PREFECT_CLIENT_MAX_RETRIES] = cfg.api_retries
        if not PREFECT_API_URL.value() and not os.environ.get("PREFECT_LOGGING_TO_API_ENABLED"):
            updates[PREFECT_LOGGING_TO_API_ENABLED] = False
        box: dict[str, Any] = {}
        token = _OUTCOME.set(box)
        noise = _DropOrchestratorNoise()
        loggers = [logging.getLogger(n) for n in (*_EVENT_LOGGERS, "prefect.flow_runs", "prefect.task_runs")]
        for lg in loggers:
            lg.addFilter(noise)
        undo: Callable[[], None] | None = None
        try:
            with temporary_settings(updates=updates) if updates else nullcontext(), _quiet_dask_shutdown():
                api = _TemporaryApiStart.begin()  # the API starts in a thread while the run is prepared here
                try:
                    if self._before is not None:
                        undo = self._before(args, kwargs)
                finally:
                    api.join()  # before the flow: a second start() would not wait for the server
                return flow_obj(*args, **kwargs)
        except Exception as e:
            if not _is_api_failure(e):
                raise
            if "result" in box:
                log.warning("the Prefect API (%s) was lost after the work was done (%s); the run finished but "
                            "Prefect could not record its final state", _api_url(), type(e).__name__)
                return box["result"]
            if isinstance(e, RuntimeError) and "ephemeral" in str(e):
                raise OrchestratorError(
                    f"the temporary Prefect API did not start within {cfg.startup_timeout_s:g} s "
                    f"(prefect.startup_timeout_s in params, or {STARTUP_TIMEOUT_ENV}); raise it on a loaded machine, "
                    "or start a server (`prefect server start`) and set PREFECT_API_URL"
                ) from None
            raise OrchestratorError(
                f"lost the Prefect API ({_api_url()}) in the middle of flow {self._flow.name!r} "
                f"({type(e).__name__}: {e}); nothing was published and the index lock is released: run the command "
                "again (a new temporary API is started), or point PREFECT_API_URL at a running server"
            ) from None
        finally:
            _OUTCOME.reset(token)
            if undo is not None:
                undo()
            for lg in loggers:
                lg.removeFilter(noise)


@dataclass
class IngestSummary:
    """What an ingest did (printed by the CLI, ``--json`` prints :meth:`to_dict`)."""

    index: str
    version: str | None
    documents: int
    chunks: int
    embedded: int
    cache_hits: int
    quarantine: list[QuarantineRecord]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0
    failed: str | None = None
    telemetry: dict[str, Any] | None = None  # run figures (pipelines.telemetry), set when the run ends
    embed_backend: str = ""  # the embed.backend that embedded the chunks (auto resolved: indexers.backends.resolve_backend)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["quarantined"] = len(self.quarantine)
        return d


def _opaque(value: Any) -> Any:
    """``value`` wrapped in Prefect's ``opaque`` annotation, except scalars (run names format them)."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else opaque(value)


class _OpaqueArgs:
    """A Prefect task whose arguments Prefect does not walk.

    Before a task runs, Prefect visits every element of every argument, recursively (its
    ``visit_collection``, twice: to record upstream futures and states, and to resolve them).
    ragline's tasks take and return whole corpora (scanned files, documents, assemblies), so
    that cost grows with the corpus: 576,000 visits, most of a 1% refresh of 20,000 documents.
    Each argument is passed in Prefect's ``opaque`` annotation (``prefect.utilities.annotations``):
    a future given directly is still resolved, nothing inside is visited. ragline never nests
    futures inside its arguments.
    """

    def __init__(self, prefect_task: Any) -> None:
        self.task = prefect_task

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.task(*map(_opaque, args), **{k: _opaque(v) for k, v in kwargs.items()})

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        return self.task.submit(*map(_opaque, args), **{k: _opaque(v) for k, v in kwargs.items()})

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)


def _task(**options: Any) -> Callable[[Callable], _OpaqueArgs]:
    """``prefect.task(**options)`` for a task called directly from a flow (:class:`_OpaqueArgs`)."""
    return lambda fn: _OpaqueArgs(task(**options)(fn))


#: OS errors a retry cannot fix (a full disk, a denied permission, a too-long name, a missing file).
_PERMANENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                               errno.ENAMETOOLONG, errno.ENOENT, errno.ENOTDIR, errno.EISDIR})


def _retry_on_io(task, task_run, state) -> bool:
    """Retry transient I/O failures only: a damaged registry, a missing source, a full disk or a
    denied permission fail the same way again."""
    exc = state.data
    return isinstance(exc, OSError) and exc.errno not in _PERMANENT_ERRNOS


@_task(name="discover", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def discover_task(sources: list[str], params: Params, head: "_HeadStart | None" = None):
    """The files of ``sources``; ``head``: those the ingest started before its flow discovered."""
    from ragline.pipelines.sources import discover

    return head.files if head is not None else discover(sources, params.load)


@_task(name="pin-inputs", cache_policy=NO_CACHE)
def pinned_task(inputs: list[dict[str, Any]], params: Params):
    from ragline.pipelines.sources import pinned_entries

    return pinned_entries(inputs, list(params.load.sources), params.load)


@_task(name="load", cache_policy=NO_CACHE)
def load_task(files, params: Params):
    with REPORTER.get().stage("load", len(files)) as advance:
        return load_documents(files, params.load, progress=advance)


# [curate hook] boilerplate before chunking, duplicate clusters after (pipelines/curate.py)
@_task(name="curate-documents", cache_policy=NO_CACHE)
def curate_documents_task(docs, params: Params, state=None):
    return curation_stage.curate_documents(docs, params, state)


@_task(name="curate", cache_policy=NO_CACHE)
def curate_task(documents, chunks, params: Params, boilerplate):
    """Duplicate clusters of a full build: ``(indexed chunks, curation, keep)``, keep a bool mask
    (n_chunks,) of the rows indexed (the same rows of the vectors)."""
    curation, keep = curation_stage.curate_chunks(documents, chunks, params.curate, boilerplate=boilerplate)
    return curation_stage.take_rows(chunks, keep), curation, keep


@_task(name="curate-refresh", cache_policy=NO_CACHE)
def curate_refresh_task(assembly, parent, params: Params, state, boilerplate, embedder):
    embed_fn = (lambda texts: embedder.embed(list(texts))) if params.chunk.needs_embedder and embedder else None
    return curation_stage.curate_refresh(assembly, parent, params, state=state, boilerplate=boilerplate,
                                         embed_fn=embed_fn)


#: embedders warmed up while Prefect's temporary API started (:func:`_prepare_ingest`), by
#: :func:`pipelines.embed.embedder_key`; :func:`load_model_task` takes its own (once), the flow's end drops the rest
_WARMED: dict[str, Embedder] = {}


def _ingest_params(sources: list[str], params: dict[str, Any]) -> Params:
    """The params of an ingest of ``sources`` (the manifest records the sources read:
    ``load.sources``, as given and normalized, and the embedding backend used)."""
    from ragline.pipelines.embed import with_embed_backend
    from ragline.pipelines.refresh import normalize_sources, refresh_params

    p = refresh_params(params, None, None, normalize_sources(sources)) if sources else Params.from_dict(params)
    return with_embed_backend(p)  # embed.backend auto: the index's latest version's, else this CPU's fastest


def _stream_curation(files: list, p: Params) -> tuple[Any, Callable | None]:
    """The curation hooks of a streamed ingest: boilerplate removal that releases each document
    once its folder's frequencies decide it, and the duplicate clustering that runs, on the
    chunks, while the embedder still works through its queue (when the ingest writes no segment
    before its end; else each part is clustered as it is written: :func:`ingest_flush`).
    ``(stripper, after_chunking)``."""
    # [curate hook] boilerplate: each document released once its folder's frequencies decide it
    stripper = (curation_stage.StreamedBoilerplate([f.uri for f in files], p.curate, keep=False)
                if p.curate.enabled and p.curate.boilerplate else None)

    def cluster(table, all_chunks, bad):  # [curate hook] duplicate clusters need chunks, not vectors:
        # they are found while the embedder still works through the queue (table: the chunked documents)
        return table, curate_task.fn(table, all_chunks, p, stripper.report if stripper else None)

    return stripper, (cluster if p.curate.enabled else None)


class _HeadStart:
    """An ingest's load-chunk-embed stream started before its flow, while Prefect's temporary API
    starts (seconds of a subprocess importing Prefect's server, which no Prefect 3.8 setting
    avoids: a flow run needs an API). The flow's ``discover`` and ``load-chunk-embed`` tasks then
    take its files and its result (:func:`_take_head_start`), so the API start overlaps parsing and
    embedding instead of preceding them; the stages are the same functions with the same
    arguments, so the output is that of a run started inside the flow. The stream runs in a
    thread of its own, which is reniced like the parsing workers (``PARSER_NICE``) once the
    embedding thread has started (niceness is per thread on Linux, and a new thread inherits
    its creator's): chunking and curation then take the CPU the embedder leaves, as parsing does.

    Attributes:
        params: the run's params as a dict (the flow takes the head start only for these).
        files: the files discovered.
        stripper: the boilerplate curator the stream used (its report goes to the manifest).
        t0: ``time.perf_counter()`` when discovery began (the flow counts its run from there).
    """

    def __init__(self, p: Params, files: list, embedder: Embedder, t0: float) -> None:
        self.params, self.files, self.t0 = p.to_dict(), files, t0
        self.stripper, after = _stream_curation(files, p)
        self.holds: list = []  # of the segments its stream flushes (the flow's run releases them)
        flush = ingest_flush(p, self.holds, lambda: embedder)
        self.cancel = threading.Event()
        self.taken = False  # by the flow's tasks
        self.seconds = 0.0  # the stream's wall time, start to end
        self._box: dict[str, Any] = {}
        ctx = contextvars.copy_context()  # the caller's progress reporter (REPORTER)
        producer: list[int] = []  # the native id of the stream's calling thread

        def model() -> Embedder:  # called first thing in the stream's embedding thread (already started)
            if threading.get_native_id() != producer[0]:  # (a semantic chunker embeds in the stream's thread)
                _renice(producer[0], PARSER_NICE)  # chunking and curation then yield the cores to the embedder
            return embedder

        def run() -> None:
            producer.append(threading.get_native_id())
            t = time.perf_counter()
            try:
                self._box["result"] = ctx.run(load_chunk_embed_task.fn, files, p, model, self.stripper,
                                              after_chunking=after, flush=flush, cancel=self.cancel)
            except BaseException as e:  # noqa: BLE001 - handed to the flow by result()
                self._box["error"] = e
            finally:
                self.seconds = time.perf_counter() - t

        self._thread = threading.Thread(target=run, name="ragline-head-start", daemon=True)
        self._thread.start()

    def result(self):
        """Wait for the stream; its :class:`~pipelines.stream.StreamResult`, or raise what it raised."""
        self._thread.join()
        if "error" in self._box:
            raise self._box.pop("error")
        return self._box["result"]

    def stop(self) -> None:
        """Cancel the stream (its parsing workers are stopped), wait for it to end, and release
        the holds on the segments it flushed (gc may delete them: no version lists them)."""
        self.cancel.set()
        self._thread.join()
        for hold in self.holds:
            hold.release()


def _renice(tid: int, increment: int) -> None:
    """Add ``increment`` to the niceness of thread ``tid`` only (Linux: ``setpriority`` on a
    thread id; niceness cannot be lowered back without privileges, so only for a thread that
    ends with its work). Elsewhere, or when refused, nothing changes."""
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
    except (AttributeError, OSError):
        pass


#: the ingest started before its flow in this context (:func:`_prepare_ingest`); the flow of the same params takes it
_HEAD: contextvars.ContextVar[_HeadStart | None] = contextvars.ContextVar("ragline_head_start", default=None)


def _take_head_start(p: Params) -> _HeadStart | None:
    """The head start of an ingest with params ``p`` (once: it is then ``taken``), else ``None``."""
    head = _HEAD.get()
    if head is None or head.taken or head.params != p.to_dict():
        return None
    head.taken = True
    return head


def _prepare_ingest(args: tuple, kwargs: dict) -> Callable[[], None] | None:
    """What an ingest can do before its flow runs, while Prefect's temporary API starts: start
    the parsers' fork server (its preload: unstructured, spaCy), warm the embedder up (the
    model's compilation), which :func:`load_model_task` then takes instead of loading again,
    and, for a local build from its sources, discover the files and start the load-chunk-embed
    stream (:class:`_HeadStart`), which the flow's tasks take.
    Best effort: a failure here is left to the flow's own tasks (which retry and report it).
    Returns what undoes it when the flow did not take it (the embedder dropped, the stream stopped)."""
    try:
        bound = inspect.signature(_ingest_flow_fn).bind(*args, **kwargs)
        bound.apply_defaults()
        t0 = time.perf_counter()
        p = _ingest_params(bound.arguments["sources"], bound.arguments["params"])
    except Exception as e:  # noqa: BLE001 - the flow validates the params again and reports them
        log.debug("ingest not prepared before the flow: %s: %s", type(e).__name__, e)
        return None
    if p.runner.kind == "dask":  # the workers parse and load the model; the driver does neither
        return None
    prestart_parsers()
    try:
        embedder = index_embedder(p)
        getattr(embedder, "warm_up", lambda: None)()
    except Exception as e:  # noqa: BLE001 - load_model_task meets it again, with retries and a report
        log.debug("embedder not warmed before the flow: %s: %s", type(e).__name__, e)
        return None
    key = embedder_key(p)
    _WARMED[key] = embedder
    head = None
    if bound.arguments["inputs"] is None:  # a restore reads pinned versions: discovered in the flow
        try:
            from ragline.pipelines.sources import discover

            head = _HeadStart(p, discover(list(p.load.sources), p.load), embedder, t0)
            _HEAD.set(head)
        except Exception as e:  # noqa: BLE001 - discover_task meets it again, with retries and a report
            log.debug("ingest not started before the flow: %s: %s", type(e).__name__, e)

    def undo() -> None:
        _WARMED.pop(key, None)  # a run that failed before load_model_task took it
        if head is not None:
            _HEAD.set(None)
            if not head.taken:  # the flow did not take it (its API did not start, ...)
                head.stop()

    return undo


@_task(name="load-model", retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def load_model_task(params: Params) -> Embedder:
    embedder = _WARMED.pop(embedder_key(params), None) or index_embedder(params)
    getattr(embedder, "warm_up", lambda: None)()
    return embedder


@_task(name="load-chunk-embed", cache_policy=NO_CACHE)
def load_chunk_embed_task(files, params: Params, embedder: Callable[[], Embedder], curate=None, after_chunking=None,
                          flush=None, head: _HeadStart | None = None, cancel: threading.Event | None = None):
    """Parsing and chunking overlap embedding (:mod:`pipelines.stream`); ``embedder`` waits for
    the model task, submitted beside this one, so a first export overlaps parsing too; ``curate``
    (boilerplate removal, :class:`pipelines.curate.StreamedBoilerplate`) releases each parsed
    document to chunking once its outcome is decided. When curation indexes
    one copy of a document (``curate.duplicates`` ``link``/``keep_first``), exact copies are not embedded;
    ``after_chunking`` (duplicate clusters) runs while the embedder works through the queue;
    ``flush`` writes a segment per ``index.segment_chunks`` rows (:func:`ingest_flush`).
    ``head``: the stream the ingest started before its flow (:class:`_HeadStart`): its result is
    taken (waited for) instead; ``cancel``: :func:`pipelines.stream.load_chunk_embed`'s."""
    if head is not None:
        return head.result()
    skip = params.curate.enabled and params.curate.duplicates != "keep_all"
    with REPORTER.get().stage("ingest", len(files)) as advance:
        return load_chunk_embed(files, params, embedder, progress=advance, curate=curate, skip_copies=skip,
                                after_chunking=after_chunking, keep_documents=False, flush=flush,
                                flush_chunks=params.index.segment_chunks if flush is not None else None,
                                cancel=cancel)


@dataclass
class _Flushed:
    """What an ingest's ``flush`` wrote: the segment, its documents' input records, and with
    curation on the part's :class:`pipelines.curate.StreamedCuration` and the embeddings it computed."""

    segment: Any
    inputs: list
    curation: Any = None
    embedded: int = 0


def ingest_flush(params: Params, holds: list, embedder: Callable[[], Embedder]) -> Callable | None:
    """The stream's ``flush`` for an ingest (:func:`pipelines.stream.load_chunk_embed`): each
    part becomes a segment (:func:`pipelines.publish.write_segment`, held from gc by a hold
    appended to ``holds``, for the caller to release once the version lists it or the run
    failed; kinds that train reuse the first segment's training), so
    memory does not grow with the corpus. ``None`` when ``index.segment_chunks`` is off.

    With curation on, each part is clustered against the parts written before it
    (:class:`pipelines.curate.StreamedCuration`) and only its indexed rows are written, with
    their signatures; a copy kept after all (its original was quarantined) is embedded then
    (``embedder``). The parts' curation goes on in every :class:`_Flushed`'s ``curation``."""
    if not params.index.segment_chunks:
        return None
    from ragline.pipelines.publish import write_segment

    registry = IndexRegistry(params.index.root, params.index.lock_timeout_s)
    hold = registry.hold_segments(params.index.name)
    holds.append(hold)
    first: list = []
    streamed = curation_stage.StreamedCuration(params.curate) if params.curate.enabled else None

    def flush(documents, chunks, vectors, not_embedded):
        cur, embedded = None, 0
        if streamed is not None:  # [curate hook] the part's clusters, against the parts written before it
            cur, keep = streamed.cluster(documents, chunks)
            if (keep & not_embedded).any():  # a copy kept after all
                embedded = embed_rows(chunks, vectors, keep & not_embedded, embedder(), params)
            documents = curation_stage.without_quarantined(documents, cur)
            chunks, vectors = curation_stage.take_rows(chunks, keep), keep_rows(vectors, keep)  # (the stream's own array)
        seg, _, inputs = write_segment(registry, params, documents, chunks, vectors, first[0] if first else None,
                                       hold, extra=cur.segment_signatures(documents, chunks, release=True) if cur else None)
        if streamed is not None:
            streamed.written(cur, registry.segment_dir(params.index.name, seg.id) / curation_stage.SIGNATURES_FILE)
        if not first:
            first.append(seg)
        return _Flushed(seg, inputs, streamed, embedded)

    return flush


@_task(name="publish", retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_retry_on_io,
      cache_policy=NO_CACHE)
def publish_task(params: Params, documents, chunks, vectors, quarantine, embedder: Embedder, stats: dict,
                 curation=None, shared=None):
    return publish_index(IndexRegistry(params.index.root), params, documents, chunks, vectors,
                         quarantine_to_table(quarantine), info_of(embedder), stats=stats, curation=curation,
                         shared=shared)


@observed("ingest")
def _ingest_flow_fn(sources: list[str], params: dict[str, Any],
                    inputs: list[dict[str, Any]] | None = None) -> IngestSummary:
    """Load, chunk, embed, index and publish ``sources`` as a new version of ``index.name``.

    Args:
        sources: folders or files (``load.sources`` from params when empty).
        params: validated params as a dict (``Params.to_dict()``).
        inputs: a manifest's ``inputs`` to rebuild from instead of discovering ``sources``
            (``ragline index restore``): objects read back by their recorded version ids
            (:func:`pipelines.sources.pinned_entries`).

    Returns:
        The run summary; ``failed`` is set (and nothing published) when the quarantined share
        exceeds ``load.max_failed_fraction``.
    """
    holds: list = []  # segments the stream flushed (index.segment_chunks): kept from gc until the version lists them
    try:
        return _ingest(sources, params, inputs, holds)
    finally:
        for hold in holds:
            hold.release()


def _ingest(sources: list[str], params: dict[str, Any], inputs: list[dict[str, Any]] | None,
            holds: list) -> IngestSummary:
    """The body of :func:`_ingest_flow_fn`; the segment holds it takes go in ``holds``."""
    p = _ingest_params(sources, params)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    head = _take_head_start(p) if inputs is None else None  # started while the temporary API started
    if head is not None:
        holds.extend(head.holds)  # the segments its stream flushes: released when this run ends
        times["before-flow (overlapped)"] = round(t0 - head.t0, 3)
        t0 = head.t0  # the run's seconds count from its start
    with _timed(times, "discover"):
        files = pinned_task(inputs, p) if inputs is not None else discover_task(list(p.load.sources), p, head)
    return _build(p, files, holds, times, t0, head)


def _build(p: Params, files: list, holds: list, times: dict[str, float], t0: float, head: "_HeadStart | None" = None,
           stats: dict[str, Any] | None = None, scanned: Sequence[Any] = ()) -> IngestSummary:
    """Load, chunk, embed and publish ``files`` as a new version without a parent (an ingest, or
    a refresh of an index that has no version yet): one stream that writes a segment per
    ``index.segment_chunks`` rows, so memory does not grow with the corpus. ``times`` gets
    the stage seconds; ``stats`` is added to the manifest's stats; ``scanned``: a refresh's
    scanned files, whose sha256 the records of files that failed to load keep
    (:func:`pipelines.refresh.with_scanned_sha`); the segment holds taken go in ``holds``
    (the caller releases them)."""
    boilerplate = None
    not_embedded = None  # rows of exact copies the streamed ingest did not embed
    clustered = None  # (documents, (indexed chunks, curation, keep)) found while the stream embedded
    flushed = None  # segments the stream wrote before the end (index.segment_chunks)
    if p.runner.kind == "dask":  # load, chunk and embed per partition on the cluster; merged here
        with _timed(times, "cluster"):
            docs, quarantine, chunks, vectors, computed, embedder = build_on_cluster(files, p)
        chunk_bad = [q for q in quarantine if q.stage == "chunk"]
        # partitions are chunked apart, so curate.boilerplate (corpus-wide frequencies) is not applied
        # on a cluster (README "Scaling out"); duplicate clusters are, below
    else:  # parsing and chunking overlap embedding (pipelines/stream.py)
        # [curate hook] boilerplate removal and duplicate clusters, inside the stream
        stripper, cluster = (head.stripper, None) if head is not None else _stream_curation(files, p)
        model = load_model_task.submit(p)  # runs in the task runner's thread while files are parsed
        flush = ingest_flush(p, holds, model.result) if head is None else None  # (a head start flushes in its own stream)
        with _timed(times, "load-chunk-embed"):
            streamed = load_chunk_embed_task(files, p, model.result, stripper, after_chunking=cluster, flush=flush,
                                             head=head)
        if head is not None:  # the stream's own wall time, most of it before the flow
            times["load-chunk-embed"] = round(head.seconds, 3)
        if streamed.flushed:
            flushed = SharedSegments([f.segment for f in streamed.flushed], {},
                                     [r for f in streamed.flushed for r in f.inputs])
        chunks, chunk_bad, quarantine = streamed.chunks, streamed.chunk_bad, streamed.quarantine
        n_docs = streamed.n_documents  # no Document is kept: each became its documents-table row when chunked
        embedder, vectors, computed = model.result(), streamed.vectors, streamed.embedded
        not_embedded, clustered = streamed.not_embedded, streamed.after_chunking
        seconds = dict(streamed.seconds)
        if "after-chunking" in seconds:
            seconds["curate-duplicates"] = seconds.pop("after-chunking")
        times.update({f"{k} (overlapped)": v for k, v in seconds.items()})
        boilerplate = stripper.report if stripper else None
    curation = None
    if clustered is not None:  # the streamed ingest clustered while it embedded
        documents, (chunks, curation, keep) = clustered
    elif p.runner.kind != "dask":
        documents = streamed.documents_table
    else:
        good = {q.path for q in chunk_bad}
        documents = documents_to_table([d for d in docs if d.uri not in good])
        n_docs = len(docs)
        docs = None
    if p.curate.enabled:
        with _timed(times, "curate"):  # [curate hook] duplicate clusters; only the indexed rows (and vectors) go on
            all_chunks = chunks if clustered is None else streamed.chunks
            parts = streamed.flushed[-1].curation if p.runner.kind != "dask" and streamed.flushed else None
            if parts is not None:  # the rows after the last segment written: clustered against the segments
                curation, keep = parts.cluster(documents, chunks, boilerplate)
                curation = parts.finish(curation, boilerplate)
                computed += sum(f.embedded for f in streamed.flushed)
                chunks = curation_stage.take_rows(chunks, keep)
            elif clustered is None:  # a cluster build: duplicate clusters of the merged partitions
                chunks, curation, keep = curate_task(documents, chunks, p, boilerplate)
            if not_embedded is not None and (keep & not_embedded).any():  # a copy kept after all
                computed += embed_rows(all_chunks, vectors, keep & not_embedded, embedder, p)
            vectors = keep_rows(vectors, keep)  # in place: the stream's (or the cluster build's) own array
            all_chunks = None
            if p.runner.kind != "dask":  # the uncurated rows and vectors are not held while publishing
                streamed.chunks, streamed.vectors = chunks, vectors
            documents = curation_stage.without_quarantined(documents, curation)  # the shingler failed on them
            quarantine = list(quarantine) + curation.quarantine
    if scanned:  # (the chunker's records carry their document's sha256 already)
        from ragline.pipelines.refresh import with_scanned_sha

        quarantine = with_scanned_sha(quarantine, scanned)
    n_chunks = chunks.num_rows + (flushed.live_chunks if flushed is not None else 0)
    summary = IngestSummary(p.index.name, None, n_docs, n_chunks, computed, max(0, n_chunks - computed), quarantine,
                            times, embed_backend=p.embed.backend)
    try:
        check_failure_rate(len(files), quarantine, p.load.max_failed_fraction)
    except Exception as e:  # FailureRateExceeded: report, publish nothing (vectors stay in the cache)
        summary.failed = str(e)
        summary.total_seconds = round(time.perf_counter() - t0, 3)
        return summary
    with _timed(times, "publish"):
        manifest = publish_task(p, documents, chunks, vectors, quarantine, embedder,
                                {"stage_seconds": times, "embedded": computed, **(stats or {}),
                                 **({"copies_not_embedded": int(not_embedded.sum())} if not_embedded is not None else {})},
                                curation, flushed)
    summary.version = manifest.version
    summary.total_seconds = round(time.perf_counter() - t0, 3)
    return _record(summary)


# the function stays a module attribute under its own name, so that a Dask task runner (which
# ships the flow run's context to its workers) pickles it by reference, not with this module's globals
_ingest_flow = flow(name="ingest", validate_parameters=False, log_prints=False)(_ingest_flow_fn)
ingest_flow = GuardedFlow(_ingest_flow, lambda args, kwargs: kwargs.get("params", args[1] if len(args) > 1 else None),
                          before=_prepare_ingest)  # parsers preloaded and the model warmed while Prefect starts


# ---------------- chunking experiments (grid of chunk configs → leaderboard + plot) ----------------
@_task(name="load-eval-dataset", cache_policy=NO_CACHE)
def load_eval_dataset_task(root: str, corpora: list[str], limit_questions: int | None):
    from ragline.pipelines.evaluate_chunking import load_dataset

    return load_dataset(root, corpora, limit_questions)


@_task(name="eval-chunking", task_run_name="eval {label}", cache_policy=NO_CACHE)
def eval_chunking_task(label: str, dataset, params: Params, k: int, embedder: Embedder):
    from ragline.pipelines.evaluate_chunking import evaluate_chunking

    return evaluate_chunking(dataset, params, k, embedder, progress=REPORTER.get().stage)


@_task(name="write-leaderboard", retries=1, retry_delay_seconds=[1], cache_policy=NO_CACHE)
def write_leaderboard_task(results: list, out_dir: str, name: str, meta: dict[str, Any]):
    from ragline.pipelines.experiments import write_experiment_outputs

    return write_experiment_outputs(results, out_dir, name, meta)


@flow(name="chunking-experiment", validate_parameters=False, log_prints=False)
def _chunking_experiment_flow(grid: dict[str, Any], params: dict[str, Any], out_dir: str, source: str = "<grid>"):
    """Evaluate every configuration of a chunking grid on one dataset (one embedder, one
    question set, the embedding cache shared by all) and write the leaderboard and plot.

    Args:
        grid: the grid mapping (see :mod:`pipelines.experiments`).
        params: validated params as a dict (``Params.to_dict()``).
        out_dir: folder for leaderboard.csv, leaderboard.md, recall_vs_iou.png, results.json.
        source: grid file name for error messages.

    Returns:
        :class:`pipelines.experiments.ExperimentSummary`.
    """
    from ragline.pipelines.experiments import ExperimentSummary, plan_grid

    t0 = time.perf_counter()
    plan = plan_grid(grid, Params.from_dict(params), source)
    dataset = load_eval_dataset_task(plan.dataset, list(plan.corpora), plan.limit_questions)
    embedder = load_model_task(plan.base)
    results = [eval_chunking_task(label, dataset, plan.params_for(i), plan.k, embedder)
               for i, label in enumerate(plan.labels)]
    meta = {"dataset": plan.dataset, "k": plan.k, "questions": len(dataset.questions),
            "corpora": ", ".join(dataset.corpora), "embedder": plan.base.embed.model,
            "configurations": len(plan.points), "retrieval": plan.base.retrieval.record()}
    rows, files = write_leaderboard_task(results, out_dir, plan.name, meta)
    return _record(ExperimentSummary(plan.name, out_dir, tuple(rows), files,
                                     tuple(f"{p}: {why}" for p, why in plan.skipped), round(time.perf_counter() - t0, 3)))


chunking_experiment_flow = GuardedFlow(_chunking_experiment_flow,
                                       lambda args, kwargs: kwargs.get("params", args[1] if len(args) > 1 else None))


# ---------------- incremental refresh (plain functions in pipelines/refresh.py) ----------------
@_task(name="plan-refresh", retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_retry_on_io, cache_policy=NO_CACHE)
def plan_refresh_task(params: Params, sources: list[str]):
    from ragline.pipelines.refresh import plan_refresh

    return plan_refresh(params, IndexRegistry(params.index.root, params.index.lock_timeout_s), sources or None)


@_task(name="read-parent", retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_retry_on_io, cache_policy=NO_CACHE)
def read_parent_task(params: Params, version: str):
    from ragline.pipelines.refresh import read_parent

    return read_parent(IndexRegistry(params.index.root, verify=params.index.verify), params.index.name, version)


@_task(name="assemble", cache_policy=NO_CACHE)
def assemble_task(plan, parent, docs, quarantine, params: Params, embedder: Embedder | None, prechunked=None,
                  curation_state=None):
    from ragline.pipelines.refresh import assemble

    embed_fn = ((lambda texts: embedder.embed(list(texts)))
                if params.chunk.needs_embedder and embedder is not None else None)
    with REPORTER.get().stage("chunk", len(docs)) as advance:
        return assemble(plan, parent, docs, quarantine, params, embed_fn=embed_fn, progress=advance,
                        prechunked=prechunked, curation_state=curation_state)


@_task(name="embed-new", cache_policy=NO_CACHE)
def fill_vectors_task(assembly, params: Params, embedder: Embedder | None, known=None):
    from ragline.pipelines.refresh import fill_vectors

    with REPORTER.get().stage("embed", int(assembly.need_embed.sum())) as advance:
        return fill_vectors(assembly, embedder, params.paths.cache, params.embed.batch_size, progress=advance,
                            known=known)


@_task(name="publish-refresh", retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_retry_on_io,
      cache_policy=NO_CACHE)
def publish_refresh_task(params: Params, assembly, vectors, info, parent_version: str | None, stats: dict,
                         curation=None):
    return publish_index(IndexRegistry(params.index.root, params.index.lock_timeout_s), params, assembly.documents,
                         assembly.chunks, vectors, quarantine_to_table(assembly.quarantine), info, stats=stats,
                         parent_version=parent_version, shared=assembly.shared, curation=curation)


@observed("refresh")
def _refresh_flow_fn(
    params: dict[str, Any] | None = None,
    sources: list[str] | None = None,
    params_file: str | None = None,
    index: str | None = None,
):
    """Refresh ``index.name`` incrementally: publish a new version only when something changed.

    Holds the index lock (``index.lock_timeout_s``) from planning to publishing, so two
    refreshes never publish at once. The steps are the plain functions of
    :mod:`pipelines.refresh`; see there for what is carried over and what is redone.

    Args:
        params: validated params as a dict; when ``None``, read from ``params_file`` (at run
            time, so a scheduled deployment picks up edits).
        sources: folders or files overriding ``load.sources`` (with ``params``); with
            ``params_file``, checked against the sources the index was built from
            (:func:`pipelines.refresh.resolve_sources`: other sources are refused), and those
            recorded sources are used when none are given.
        params_file: params file used when ``params`` is ``None`` (default ``params.yaml``).
        index: index name overriding ``index.name``.

    Returns:
        :class:`pipelines.refresh.RefreshSummary`; ``version`` is ``None`` when nothing changed
        or the run failed (``failed`` says why).

    Raises:
        LockTimeoutError: another refresh or publish held the index past the timeout.
    """
    from ragline.indexers.faults import crash_point
    from ragline.pipelines.errors import FailureRateExceeded
    from ragline.pipelines.refresh import (Prechunked, RefreshSummary, embedder_info_for, refresh_params,
                                          resolve_sources, split_curated)
    from ragline.pipelines.embed import with_embed_backend

    p = refresh_params(params, params_file, index, sources if params is not None else None)
    registry = IndexRegistry(p.index.root, p.index.lock_timeout_s)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    with registry.lock(p.index.name):
        if params is None:  # a scheduled run: the sources the index was built from, unless others are given
            p = resolve_sources(p, registry, sources)
        p = with_embed_backend(p, registry)  # auto: the parent's backend (run_refresh resolved it already)
        planned = PLANNED.get()
        if planned is not None and planned[0] == p.to_dict():  # run_refresh planned it under this lock
            plan, times["plan"] = planned[1], planned[2]
        else:
            with _timed(times, "plan"):
                plan = plan_refresh_task(p, [])
        crash_point("refresh:planned")
        summary = RefreshSummary.from_plan(plan, p.embed.backend)
        summary.stage_seconds = times
        if plan.nothing_to_do:
            summary.total_seconds = round(time.perf_counter() - t0, 3)
            return summary
        parent = read_parent_task(p, plan.parent_version) if plan.parent_version else None
        files = plan.to_load()
        if parent is None and p.runner.kind != "dask" and not p.curate.enabled:
            return _first_build(registry, p, plan, files, summary, times, t0)
        prechunked = None
        if files and p.runner.kind == "dask":  # load, chunk and embed the change per partition on the cluster
            with _timed(times, "cluster"):
                docs, bad, new_chunks, new_vectors, cluster_computed, embedder = build_on_cluster(files, p)
            prechunked = Prechunked(new_chunks, [q for q in bad if q.stage == "chunk"], new_vectors)
            bad = [q for q in bad if q.stage != "chunk"]
        else:
            with _timed(times, "load"):
                docs, bad = load_task(files, p) if files else ([], [])
            cluster_computed, embedder = 0, None
        crash_point("refresh:loaded")
        cur_state = boilerplate = curation = None
        if p.curate.enabled:
            with _timed(times, "curate"):  # [curate hook] the parent's clusters, signatures and boilerplate keys
                cur_state = curation_stage.read_parent_curation(registry, p.index.name, plan.parent_version)
                if prechunked is None:  # chunked on the cluster: boilerplate kept, as in a cluster ingest
                    docs, boilerplate = curate_documents_task(docs, p, cur_state)
        needs_model = (parent is None or bool(docs) or plan.reembed_all or plan.rechunk_all
                       or p.chunk.needs_embedder)
        if needs_model and embedder is None:  # (the cluster's embedder loads weights only for rows it lacks)
            with _timed(times, "load-model"):
                embedder = load_model_task(p)
        with _timed(times, "chunk"):
            assembly = assemble_task(plan, parent, docs, bad, p, embedder, prechunked, cur_state)
        if p.curate.enabled:
            with _timed(times, "curate"):  # [curate hook] cluster the change (or the version, when a copy's canonical went)
                assembly, curation = curate_refresh_task(assembly, parent, p, cur_state, boilerplate, embedder)
                assembly = split_curated(assembly, parent, p)  # a new segment; the parent's others shared
        summary.quarantine, summary.kept_previous = assembly.quarantine, assembly.kept_previous
        summary.documents, summary.chunks = assembly.version_documents, assembly.version_chunks
        summary.carried_chunks = assembly.carried_chunks
        try:
            check_failure_rate(len(plan.files), assembly.quarantine, p.load.max_failed_fraction)
        except FailureRateExceeded as e:  # report, publish nothing
            summary.failed = str(e)
            summary.total_seconds = round(time.perf_counter() - t0, 3)
            return summary
        info = embedder_info_for(plan, parent, assembly, p)
        if info is None and embedder is None:
            with _timed(times, "load-model"):
                embedder = load_model_task(p)
        if parent is not None:  # assembled and curated: the parent's tables and index are not held to the end
            parent.release()
        with _timed(times, "embed"):
            vectors, summary.embedded_chunks, summary.computed = fill_vectors_task(
                assembly, p, embedder, prechunked.known() if prechunked is not None else None)
        summary.computed += cluster_computed
        crash_point("refresh:embedded")
        info = info or info_of(embedder)
        stats = {"stage_seconds": times, "refresh": summary.counts(), "embedded": summary.computed,
                 "embedded_chunks": summary.embedded_chunks, "carried_chunks": summary.carried_chunks,
                 "kept_previous": summary.kept_previous, "reasons": summary.reasons,
                 **({"compaction": assembly.compaction} if assembly.compaction else {})}
        with _timed(times, "publish"):
            manifest = publish_refresh_task(p, assembly, vectors, info, plan.parent_version, stats, curation)
        summary.version = manifest.version
        if p.drift.on_refresh and plan.parent_version:
            with _timed(times, "drift"):
                summary.drift = parent_drift(registry, p, plan.parent_version, manifest.version)
        _promote_new(registry, p, summary)
    summary.total_seconds = round(time.perf_counter() - t0, 3)
    return _record(summary)


def _first_build(registry: IndexRegistry, p: Params, plan: Any, files: list, summary: Any, times: dict[str, float],
                 t0: float) -> Any:
    """A refresh of an index with no version yet builds as an ingest does (:func:`_build`: one
    stream writing segments as it goes, so memory does not grow with the corpus), then moves
    ``refresh.promote_aliases``. Returns the filled :class:`pipelines.refresh.RefreshSummary`."""
    holds: list = []
    try:
        built = _build(p, files, holds, times, t0, stats={"refresh": summary.counts(), "reasons": summary.reasons},
                       scanned=plan.files)
    finally:
        for hold in holds:
            hold.release()
    summary.version, summary.failed, summary.quarantine = built.version, built.failed, built.quarantine
    summary.documents, summary.chunks, summary.embedded_chunks, summary.computed = \
        built.documents, built.chunks, built.chunks, built.embedded
    if built.version is not None:
        _promote_new(registry, p, summary)
    summary.total_seconds = round(time.perf_counter() - t0, 3)
    return _record(summary)


def _promote_new(registry: IndexRegistry, p: Params, summary: Any) -> None:
    """Move each of ``refresh.promote_aliases`` to the refresh's new version (through the
    promotion gate, unless drift blocks it); each outcome goes in ``summary.promotions``."""
    from ragline.pipelines.promote import PromotionRefused, promote

    for alias in p.refresh.promote_aliases:
        blocked = drift_block(p, summary.drift, alias)
        if blocked:
            summary.promotions.append({"alias": alias, "moved": False, "reason": blocked})
            continue
        try:
            move, gate = promote(registry, p, p.index.name, summary.version, alias)
            summary.promotions.append({"alias": alias, "moved": True, "from": move.from_version,
                                       "to": move.to_version, "reason": gate.reason})
        except PromotionRefused as e:
            summary.promotions.append({"alias": alias, "moved": False, "reason": str(e)})


def parent_drift(registry: IndexRegistry, p: Params, parent: str, version: str) -> dict[str, Any]:
    """Drift of ``version`` from ``parent`` (:func:`evaluation.drift.compute_drift`) with the
    ``drift:`` thresholds checked: the report's dict with ``alerts``; ``{"error": ...}`` when it
    could not be computed (the refresh goes on; gated aliases then stay)."""
    from ragline.core.errors import RaglineError
    from ragline.evaluation.drift import compute_drift, drift_alerts
    from ragline.indexers.retriever import embedder_for
    from ragline.pipelines.evaluate import load_questions

    cfg = p.drift
    try:
        qs = None
        if cfg.min_top_k_overlap is not None:
            qs = [(q.question, q.doc) for q in load_questions(cfg.questions or p.promote.questions)]
        report = compute_drift(registry, p.index.name, parent, version, qs, p.retrieval,
                               embedder_of=lambda m: embedder_for(m, p.embed.backend, p.paths.cache))
        report.alerts = drift_alerts(report, **cfg.thresholds())
        return report.to_dict()
    except (RaglineError, OSError) as e:
        return {"a": parent, "b": version, "error": f"drift not computed: {e}", "alerts": []}
    except Exception as e:  # noqa: BLE001 - advisory: the version is published, the run must still end cleanly
        return {"a": parent, "b": version, "error": f"drift not computed: {type(e).__name__}: {e}", "alerts": []}


def drift_block(p: Params, drift: dict[str, Any] | None, alias: str) -> str | None:
    """Why the drift check keeps gated ``alias`` where it is (``None``: it may go to the gate)."""
    if alias not in p.promote.gated_aliases or not p.drift.gating or not p.drift.on_refresh or drift is None:
        return None
    if drift.get("error"):
        return str(drift["error"])
    if drift.get("alerts"):
        return (f"drift from {drift['a']} past thresholds: {'; '.join(drift['alerts'])}; "
                f"{alias} stays (promote it by hand after review: ragline index promote {drift['b']} --alias {alias})")
    return None


_refresh_flow = flow(name="refresh", validate_parameters=False, log_prints=False)(_refresh_flow_fn)  # see _ingest_flow
refresh_flow = GuardedFlow(_refresh_flow, lambda args, kwargs: kwargs.get("params", args[0] if args else None))


@flow(name="scheduled-refresh", validate_parameters=False, log_prints=False)
def scheduled_refresh_flow(
    params_file: str = "params.yaml", index: str | None = None, sources: list[str] | None = None
) -> dict[str, Any]:
    """What ``ragline refresh --serve`` deploys: read params at run time, run :func:`refresh_flow`.

    The runner ships this flow to a fresh process with cloudpickle, which copies the function
    by value; its body therefore refers to no module global (this module's tasks reach the
    progress ContextVar, which cannot be pickled) and imports what it needs when it runs.

    Returns:
        The refresh summary as a dict.
    """
    from ragline.pipelines.flows import refresh_flow as run_refresh

    return run_refresh(params_file=params_file, index=index, sources=sources).to_dict()


# ---------------- distributed builds: Prefect tasks on Dask (prefect-dask) ----------------
def _partition_task():
    """The ``build-partition`` task around :func:`pipelines.distributed.build_partition` (a
    module-level function, so Dask pickles it by reference, not with this module's globals)."""
    from ragline.pipelines.distributed import build_partition

    return task(name="build-partition", cache_policy=NO_CACHE)(build_partition)


def build_on_cluster(files, p: Params):
    """Map :func:`pipelines.distributed.build_partition` over partitions of ``files`` with the
    flow's task runner (a ``DaskTaskRunner`` under ``runner.kind: dask``) and merge the results.

    A partition that still fails after ``runner.partition_retries`` reruns (its worker died,
    the cluster lost it) has its files quarantined as ``WorkerLost``; the others are kept.

    Returns:
        ``(documents, quarantine, chunks, vectors, computed, embedder)``: ``embedder`` is the
        identity-only embedder of ``embed:`` (its weights are never loaded on the driver).
    """
    from prefect import unmapped

    from ragline.pipelines.distributed import lost_partition, merge_partitions, partition

    parts = partition(files, p.runner.partitions or 2 * p.runner.n_workers)
    embedder = index_embedder(p)
    if not parts:
        docs, bad, chunks, vectors, computed = merge_partitions([], info_of(embedder).dim)
        return docs, bad, chunks, vectors, computed, embedder
    runner_task = _partition_task().with_options(retries=p.runner.partition_retries, retry_delay_seconds=1)
    futures = runner_task.map(parts, unmapped(p))
    results = []
    for part, fut in zip(parts, futures):
        try:
            results.append(fut.result())
        except Exception as e:  # noqa: BLE001 - a lost partition is quarantined, the run goes on
            log.warning("partition of %d files failed on the cluster: %s", len(part), type(e).__name__)
            results.append(lost_partition(part, e))
    docs, bad, chunks, vectors, computed = merge_partitions(results, info_of(embedder).dim)
    return docs, bad, chunks, vectors, computed, embedder


def _with_task_runner(flow_obj: Any, runner: dict | None) -> Any:
    """``flow_obj`` with prefect-dask's ``DaskTaskRunner`` when ``runner.kind`` is ``dask``:
    connected to ``runner.address``, or a ``LocalCluster`` of ``runner.n_workers`` processes
    with ``runner.threads_per_worker`` threads each (no dashboard)."""
    from ragline.pipelines.config import RunnerConfig

    cfg = RunnerConfig.model_validate(runner or {})
    if cfg.kind != "dask":
        return flow_obj
    from prefect_dask import DaskTaskRunner

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")  # a local cluster's worker processes: quiet too
    if cfg.address:
        task_runner = DaskTaskRunner(address=cfg.address)
    else:
        task_runner = DaskTaskRunner(cluster_kwargs={"n_workers": cfg.n_workers, "processes": True,
                                                     "threads_per_worker": cfg.threads_per_worker,
                                                     "dashboard_address": None})
    return flow_obj.with_options(task_runner=task_runner)


class _DropCommClosed(logging.Filter):
    """Drop distributed's tracebacks of connections closed while a cluster shuts down."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        text = record.getMessage()
        return not (type(exc).__name__ in ("CommClosedError", "StreamClosedError")
                    or "CommClosedError" in text or "Stream is closed" in text)


#: loggers through which distributed reports connections closed at shutdown
_DASK_LOGGERS = ("distributed", "distributed.core", "distributed.client", "distributed.worker",
                 "distributed.nanny", "distributed.scheduler", "distributed.comm.tcp", "distributed.batched",
                 "tornado.application", "asyncio")


@contextmanager
def _quiet_dask_shutdown() -> Iterator[None]:
    """While a flow runs, distributed's shutdown ``CommClosedError`` noise is not printed, and
    its INFO/WARNING lines about clusters starting and stopping are not shown (errors are)."""
    noise = _DropCommClosed()
    loggers = [logging.getLogger(n) for n in _DASK_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addFilter(noise)
        if lg.name.startswith("distributed"):
            lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeFilter(noise)
            lg.setLevel(level)
