"""The public Python API (`import ragline`) and the packaging it relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import ragline
from ragline.core.errors import AliasNotFound, ConfigError, IndexNotFound, VersionNotFound
from tests.conftest import REPO, write_params
from tests.publishing import publish_texts

HEAVY_FORMATS = (".pdf", ".docx", ".pptx")
PACKAGE_FOLDERS = ("ragline", "core", "chunkers", "indexers", "evaluation", "pipelines", "runner")


def _readme_python_example() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_verbatim(workspace: Path, prefect_harness, capsys: pytest.CaptureFixture) -> None:
    for p in (workspace / "data" / "sample").iterdir():  # the text formats are enough (parsing stays fast)
        if p.suffix in HEAVY_FORMATS:
            p.unlink()
    code = _readme_python_example()
    assert len(code.strip().splitlines()) == 5
    exec(compile(code, "README.md (Use from Python)", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == ["1", "2", "3"]
    assert all(ln.split()[2].startswith("data/sample/") for ln in lines)
    assert ragline.open_index("sample").version == "v0001"  # the example published it
    again = ragline.refresh()  # nothing changed since: nothing published, no Prefect run
    assert again.version is None and again.nothing_changed and again.parent_version == "v0001"


@pytest.fixture()
def published(workspace: Path) -> Path:
    from ragline.pipelines.config import load_params

    publish_texts(load_params("params.yaml"), {"d/a.txt": "hive frames and bee space between the boxes",
                                               "d/b.pdf": "varroa mites counted with a sugar roll every month"})
    return workspace


def test_open_index_and_search(published: Path) -> None:
    index = ragline.open_index("sample@latest")
    assert (index.name, index.version) == ("sample", "v0001") and index.manifest.counts["chunks"] == 2
    hits = index.search("varroa mites", k=1)
    assert [(h.rank, h.source) for h in hits] == [(1, "d/b.pdf")] and isinstance(hits[0], ragline.Hit)
    assert set(hits[0].retriever_ranks) == {"dense", "bm25"}  # retrieval.mode hybrid is the default
    assert [h.source for h in index.search("varroa mites", mode="dense", filters={"source": "*.txt"})] == ["d/a.txt"]
    assert ragline.open_index().version == "v0001"  # index.name@latest


def test_open_index_bad_input_raises_named_errors(published: Path) -> None:
    with pytest.raises(IndexNotFound, match="nope"):
        ragline.open_index("nope")
    with pytest.raises(AliasNotFound, match="prod"):
        ragline.open_index("sample@prod")
    with pytest.raises(VersionNotFound, match="v0042"):
        ragline.open_index("sample@v0042")
    index = ragline.open_index("sample")
    with pytest.raises(ConfigError, match=r"mode: Input should be 'dense', 'bm25' or 'hybrid' \(got 'sparse'\)"):
        index.search("bees", mode="sparse")
    with pytest.raises(ConfigError, match=r"fusion: .*'weighted' or 'rrf' \(got 'max'\)"):
        index.search("bees", fusion="max")
    with pytest.raises(ConfigError, match=r"unknown filter key\(s\) 'colour'; allowed: source, doc_id, page, section"):
        index.search("bees", filters={"colour": "red"})


def test_search_defaults_come_from_the_retrieval_section(published: Path) -> None:
    write_params(published, retrieval={"mode": "bm25", "k": 1})
    hits = ragline.open_index("sample").search("frames")
    assert len(hits) == 1 and set(hits[0].retriever_ranks) == {"bm25"}


def _run_outside_repo(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})


def test_searching_from_python_never_imports_prefect_or_bm25s(published: Path) -> None:
    res = _run_outside_repo(published, """
        import sys
        import ragline
        hits = ragline.open_index("sample@latest").search("varroa mites", k=2)
        assert [h.source for h in hits] == ["d/b.pdf", "d/a.txt"], hits
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("prefect", "pipelines", "runner", "torch",
                                                                   "bm25s", "numba")))
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_only_ragline_is_importable_at_the_top(tmp_path: Path) -> None:
    res = _run_outside_repo(tmp_path, """
        import importlib, ragline, ragline.pipelines.cli
        for name in ("pipelines", "indexers", "runner", "chunkers", "core", "evaluation"):
            try:
                importlib.import_module(name)
            except ModuleNotFoundError:
                continue
            raise SystemExit(f"{name} is importable at the top level")
        print(ragline.__version__, ragline.open_index.__doc__.split(chr(10))[0])
    """)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Open a published index version" in res.stdout


def test_the_wheel_holds_only_the_ragline_package(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy, so setuptools' build/ folder is not left in the repository
    for name in PACKAGE_FOLDERS:
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "--disable-pip-version-check", "-q", "-w", str(tmp_path / "dist"), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (wheel,) = (tmp_path / "dist").glob("ragline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"ragline"} and len(dist_info) == 1
    for sub in ("core", "chunkers", "indexers", "evaluation", "pipelines", "runner"):
        assert f"ragline/{sub}/__init__.py" in names, sub
    assert "ragline/indexers/retriever.py" in names and "ragline/__init__.py" in names
    assert not any(n.startswith("ragline/tests/") or "/__pycache__/" in n for n in names)
