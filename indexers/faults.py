"""Test-only fault injection: kill the process at a named point of a refresh or publish.

``RAGLINE_CRASH_AT=<point>`` makes :func:`crash_point` send ``SIGKILL`` to the current
process when execution reaches ``<point>``: no ``finally`` blocks, no cleanup, exactly what a
power cut or an OOM kill leaves behind. The crash-safety tests loop over :data:`CRASH_POINTS`;
the variable is unset in normal runs, where a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

#: Environment variable naming the point to crash at.
CRASH_ENV = "RAGLINE_CRASH_AT"

#: Every named point, in the order a refresh reaches them.
CRASH_POINTS: tuple[str, ...] = (
    "refresh:planned",  # diff computed, nothing loaded
    "refresh:loaded",  # added/changed documents parsed
    "refresh:embedded",  # new chunks embedded (vectors in the embedding cache)
    "publish:staging-written",  # data files in .staging-*, no manifest yet
    "publish:manifest-written",  # complete staging folder, not yet renamed
    "publish:renamed",  # version folder in place, aliases not moved
    "alias:tmp-written",  # alias temp file written, not yet os.replace'd
    "publish:aliased",  # aliases moved, process not yet done
)


def crash_point(name: str) -> None:
    """SIGKILL this process when ``RAGLINE_CRASH_AT`` equals ``name`` (test hook; no-op otherwise)."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
