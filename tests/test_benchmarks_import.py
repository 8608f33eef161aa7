"""The benchmarks import only what ragline still has.

Benchmarks run by hand, not by the suite, so a renamed or folded function breaks them
silently, and often only deep in a run (their imports are inside functions). This parses every
``benchmarks/*.py`` and resolves each ``from ragline... import name`` it contains, at any depth.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def _ragline_imports(path: Path) -> list[tuple[int, str, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [(node.lineno, node.module, alias.name) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ragline"
            for alias in node.names]


def _resolves(module: str, name: str) -> bool:
    m = importlib.import_module(module)
    if hasattr(m, name):
        return True
    try:  # a submodule: from ragline.indexers import backends
        importlib.import_module(f"{module}.{name}")
    except ModuleNotFoundError:
        return False
    return True


def test_there_are_benchmarks_to_check() -> None:
    assert len(BENCHMARKS) >= 10 and any(_ragline_imports(p) for p in BENCHMARKS)


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_every_ragline_name_a_benchmark_imports_exists(path: Path) -> None:
    missing = [f"{path.name}:{line}: from {module} import {name}"
               for line, module, name in _ragline_imports(path) if not _resolves(module, name)]
    assert missing == []


def test_a_missing_name_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bench.py"
    bad.write_text("def f():\n    from ragline.pipelines.embed import embedding_texts\n")
    assert _ragline_imports(bad) == [(2, "ragline.pipelines.embed", "embedding_texts")]
    assert not _resolves("ragline.pipelines.embed", "embedding_texts")
    assert _resolves("ragline.core.schemas", "indexed_texts") and _resolves("ragline.indexers", "backends")
