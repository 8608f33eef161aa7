"""Bounded fuzzing of the load stage: mutated copies of the sample files (byte flips,
truncation, inserted and duplicated bytes) never crash or hang it; each one is either loaded
into a well-formed document or quarantined with a named reason (issue 11).

Fixed seed (``derandomize=True``) and no example database, so every run tries the same files.
``RAGLINE_FUZZ_EXAMPLES`` changes the number of examples (default 300).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragline.pipelines.config import LoadConfig
from ragline.pipelines.load import Document, QuarantineRecord, SourceFile, load_document
from tests.conftest import SAMPLE

CFG = LoadConfig(workers=1)
SAMPLES = {p.name: p.read_bytes() for p in sorted(SAMPLE.iterdir())}


@st.composite
def mutated_files(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(SAMPLES)))
    data = bytearray(SAMPLES[name])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "duplicate", "zero"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip":
            for i in range(at, min(at + draw(st.integers(1, 64)), len(data))):
                data[i] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=256))
        elif op == "duplicate":
            data[at:at] = data[at:at + draw(st.integers(1, 4096))]
        else:
            data[at:at + draw(st.integers(1, 512))] = b"\x00" * 16
    return name, bytes(data)


@pytest.mark.timeout(240)
@settings(max_examples=int(os.environ.get("RAGLINE_FUZZ_EXAMPLES", "300")), derandomize=True, database=None,
          deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_files())
def test_mutated_sample_files_are_loaded_or_quarantined(case: tuple[str, bytes]) -> None:
    name, data = case
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        result = load_document(SourceFile(path, path.as_posix()), CFG)
    assert isinstance(result, (Document, QuarantineRecord))
    if isinstance(result, QuarantineRecord):
        assert result.error_type and result.stage == "load" and name in result.message
        return
    assert result.text and result.elements
    prev = None
    for e in result.elements:
        piece = result.text[e.char_start:e.char_end]
        assert piece and piece == piece.strip()
        if prev is not None:
            assert result.text[prev:e.char_start] == "\n\n"
        prev = e.char_end
    assert prev == len(result.text)
