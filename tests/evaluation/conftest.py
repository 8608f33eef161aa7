"""Fixtures for the chunking-evaluation and experiment tests."""

from __future__ import annotations

from pathlib import Path

import pytest

MINI = Path(__file__).resolve().parent / "data" / "mini-chunking-eval"


@pytest.fixture()
def mini_dataset() -> Path:
    """A 2-corpus slice of chunking-eval (37 questions; see scripts/make_mini_chunking_eval.py)."""
    return MINI
