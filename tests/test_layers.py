"""The whiteboard holds: each layer imports only the layers below it (ARCHITECTURE.md), and
only pipelines/flows.py imports Prefect at module level."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

#: layer -> the ragline layers its modules may import (itself included).
ALLOWED = {
    "core": {"core"},
    "chunkers": {"core", "chunkers"},
    "indexers": {"core", "indexers"},
    "evaluation": {"core", "indexers", "evaluation"},
    "runner": {"core", "indexers", "evaluation", "runner"},
    "pipelines": {"core", "chunkers", "indexers", "evaluation", "pipelines", "runner"},
}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(module, at_module_level)`` of every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.module, id(node) in top))
    return out


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_the_layers_below(layer: str) -> None:
    bad = []
    for path in sorted((REPO / layer).rglob("*.py")):
        for module, _ in _imports(path):
            parts = module.split(".")
            if parts[0] in ALLOWED and parts[0] != "ragline":
                bad.append(f"{path.relative_to(REPO)}: import {module} (use ragline.{module})")
            elif parts[0] == "ragline":
                used = parts[1] if len(parts) > 1 else "ragline"
                if used not in ALLOWED[layer]:
                    bad.append(f"{path.relative_to(REPO)}: imports {module}")
    assert bad == []


def test_only_the_flows_module_imports_prefect_at_module_level() -> None:
    bad = [f"{p.relative_to(REPO)}: {m}" for layer in ALLOWED for p in sorted((REPO / layer).rglob("*.py"))
           for m, top in _imports(p) if top and m.split(".")[0] == "prefect" and p != REPO / "pipelines" / "flows.py"]
    assert bad == []
