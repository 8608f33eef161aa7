"""Test-only fault injection: kill the process at a named point of a refresh or publish.

``RAGLINE_CRASH_AT=<point>`` makes :func:`crash_point` send ``SIGKILL`` to the current
process when execution reaches ``<point>``: no ``finally`` blocks, no cleanup, exactly what a
power cut or an OOM kill leaves behind. The crash-safety tests loop over :data:`CRASH_POINTS`;
the variable is unset in normal runs, where a crash point costs one dictionary lookup.

``RAGLINE_CRASH_ONCE=<file>`` beside it makes the kill happen once among all processes that
share the file system: only the process that creates ``<file>`` (exclusively; it writes its
pid there) is killed, later ones pass. That is how a test kills exactly one Dask worker in the
middle of a partition (:data:`WORKER_CRASH_POINTS`) and lets the rerun succeed.
"""

from __future__ import annotations

import os
import signal

#: Environment variable naming the point to crash at.
CRASH_ENV = "RAGLINE_CRASH_AT"
#: Environment variable naming a file whose exclusive creation licenses the one kill.
CRASH_ONCE_ENV = "RAGLINE_CRASH_ONCE"

#: Every named point, in the order a refresh reaches them.
CRASH_POINTS: tuple[str, ...] = (
    "refresh:planned",  # diff computed, nothing loaded
    "refresh:loaded",  # added/changed documents parsed
    "refresh:embedded",  # new chunks embedded (vectors in the embedding cache)
    "segment:staged",  # the new segment's files in segments/.staging-*, fsynced, not yet renamed
    "segment:written",  # segments/<id>/ in place, no manifest lists it yet
    "publish:staging-written",  # data files in .staging-*, no manifest yet
    "publish:manifest-written",  # complete staging folder, not yet renamed
    "publish:renamed",  # version folder in place, aliases not moved
    "alias:tmp-written",  # alias temp file written, not yet os.replace'd
    "publish:aliased",  # aliases moved, process not yet done
)

#: Points only gc reaches (not in a refresh): versions deleted, unlisted segments not yet.
GC_CRASH_POINTS: tuple[str, ...] = ("gc:versions-deleted",)

#: Points ``ragline index compact`` reaches, in order (it writes a segment and publishes too).
COMPACT_CRASH_POINTS: tuple[str, ...] = ("compact:read", "segment:staged", "segment:written",
                                         "publish:staging-written", "publish:manifest-written", "publish:renamed",
                                         "alias:tmp-written", "publish:aliased")


#: Points a Dask worker reaches inside one partition (``pipelines/distributed.py``), in order.
WORKER_CRASH_POINTS: tuple[str, ...] = ("partition:loaded",)


def crash_point(name: str) -> None:
    """SIGKILL this process when ``RAGLINE_CRASH_AT`` equals ``name`` (test hook; no-op otherwise);
    with ``RAGLINE_CRASH_ONCE`` set, only if this process is the first to create that file."""
    if os.environ.get(CRASH_ENV) != name:
        return
    once = os.environ.get(CRASH_ONCE_ENV)
    if once:
        try:
            fd = os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.fsync(fd)
        os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
