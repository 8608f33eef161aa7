"""Helpers of benchmarks/peer_chunkers.py that run without the peers installed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("peer_chunkers", REPO / "benchmarks" / "peer_chunkers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["peer_chunkers"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("peer_chunkers", None)


def test_locate_maps_repeated_text_in_order_and_tolerates_whitespace(bench) -> None:
    corpus = "A cat. B dog.\nA cat. C  bird."
    spans, counts = bench.locate_chunks(corpus, ["A cat.", "B dog.", "A cat.", "C bird."])
    assert spans == [(0, 6), (7, 13), (14, 20), (21, 29)]  # the 2nd "A cat." maps to its own place
    assert counts == {"exact": 0, "wrong": 0, "found": 4, "unmapped": 0}
    assert bench.locate_chunks(corpus, ["zebra"])[1]["unmapped"] == 1


def test_peer_offsets_are_checked_before_use(bench) -> None:
    corpus = "one two three"
    good = SimpleNamespace(text="two", start_index=4, end_index=7)
    wrong = SimpleNamespace(text="three", start_index=0, end_index=5)
    spans, counts = bench.locate_chunks(corpus, [good, wrong])
    assert spans == [(4, 7), (8, 13)]
    assert counts == {"exact": 1, "wrong": 1, "found": 1, "unmapped": 0}


def test_parse_ours(bench) -> None:
    assert bench.parse_ours("sentence:max_tokens=200,overlap_sentences=1,context=true") == {
        "strategy": "sentence", "max_tokens": 200, "overlap_sentences": 1, "context": True}
