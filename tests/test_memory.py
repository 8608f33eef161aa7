"""core.memory: freed memory handed back to the OS between build steps (issue 12, bounded memory)."""

from __future__ import annotations

import pyarrow as pa

from ragline.core.memory import release_unused_memory


def test_release_unused_memory_keeps_live_buffers_and_frees_dead_ones() -> None:
    pool = pa.default_memory_pool()
    live = pa.array(list(range(100_000)), pa.int64())
    before = pool.bytes_allocated()
    dead = pa.array([str(i) for i in range(100_000)])
    assert pool.bytes_allocated() > before
    del dead
    release_unused_memory()
    assert pool.bytes_allocated() == before and live.sum().as_py() == sum(range(100_000))
