"""core.memory: freed memory handed back to the OS between build steps (issue 12, bounded memory)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ragline.core.memory import keep_rows, release_unused_memory


def test_release_unused_memory_keeps_live_buffers_and_frees_dead_ones() -> None:
    pool = pa.default_memory_pool()
    live = pa.array(list(range(100_000)), pa.int64())
    before = pool.bytes_allocated()
    dead = pa.array([str(i) for i in range(100_000)])
    assert pool.bytes_allocated() > before
    del dead
    release_unused_memory()
    assert pool.bytes_allocated() == before and live.sum().as_py() == sum(range(100_000))


@pytest.mark.parametrize("share", [0.0, 0.3, 0.9, 1.0])
def test_keep_rows_equals_a_boolean_index_without_copying_the_array(share: float) -> None:
    rng = np.random.default_rng(7)
    a = rng.standard_normal((5000, 16)).astype(np.float32)
    keep = rng.random(5000) < share
    want = a[keep].copy()
    got = keep_rows(a, keep, block=64)  # blocks smaller than the gaps and than the run of kept rows
    assert (got is a or got.base is a) and np.array_equal(got, want)  # a view of a, no copy
    with pytest.raises(ValueError, match="keep has 3 rows"):
        keep_rows(a, keep[:3])
