"""Fixtures of the flow-runner tests: small published indexes built with the hashing embedder
(no Prefect, no model) and copies of the default flow pointing at them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, SAMPLE
from tests.publishing import publish_documents, publish_paragraphs

#: The synthetic corpus: source URI -> paragraphs as (text, page).
CORPUS: dict[str, list[tuple[str, int | None]]] = {
    "garden/roses.md": [
        ("Roses are pruned in late winter. Cut each cane back to an outward facing bud.", None),
        ("Feed roses with compost in spring. Water them deeply once a week in dry weather.", None),
    ],
    "garden/tomatoes.md": [
        ("Tomatoes need full sun and warm soil. Plant them out after the last frost.", None),
        ("Pinch out the side shoots of cordon tomatoes every week.", None),
    ],
    "manuals/pump.pdf": [
        ("The pump must be primed with water before the first start.", 1),
        ("Replace the impeller seal every two years or after 500 hours of running.", 2),
        ("If the pump vibrates, check the mounting bolts and the inlet strainer.", 3),
    ],
    "kitchen/bread.txt": [
        ("Sourdough bread rises slowly. Let the dough ferment for twelve hours at room temperature.", None),
        ("Bake the loaf at 230 degrees for forty minutes until the crust is dark.", None),
    ],
}


@pytest.fixture(scope="session")
def mini_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding index ``mini`` (v0001, alias latest) over :data:`CORPUS`, one chunk per paragraph."""
    root = tmp_path_factory.mktemp("registry") / "indexes"
    publish_paragraphs(root, "mini", CORPUS)
    return root


@pytest.fixture(scope="session")
def sample_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding index ``sample`` built from data/sample (token chunks, hashing embedder)."""
    from ragline.indexers.embedders import HashingEmbedder
    from ragline.pipelines.config import LoadConfig, Params
    from ragline.pipelines.load import discover_files, load_documents

    root = tmp_path_factory.mktemp("sample-registry") / "indexes"
    params = Params.from_dict({"embed": {"model": "hashing"}, "index": {"name": "sample", "root": str(root)},
                               "load": {"workers": 1}})
    docs, bad = load_documents(discover_files([SAMPLE]), LoadConfig(workers=1))
    assert not bad, bad
    publish_documents(params, docs, embedder=HashingEmbedder(), cache=False)
    return root


@pytest.fixture()
def qa_flow(tmp_path: Path) -> Path:
    """A copy of flows/qa (index sample@latest)."""
    dst = tmp_path / "flows" / "qa"
    shutil.copytree(REPO / "flows" / "qa", dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.fixture()
def mini_flow(tmp_path: Path) -> Path:
    """A copy of flows/qa searching index ``mini`` instead of ``sample``."""
    dst = tmp_path / "flows" / "mini"
    shutil.copytree(REPO / "flows" / "qa", dst, ignore=shutil.ignore_patterns("__pycache__"))
    f = dst / "flow.yaml"
    f.write_text(f.read_text().replace("index: sample@latest", "index: mini@latest"))
    return dst
