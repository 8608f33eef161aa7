"""Refresh knows its sources (issue 10, item 1): the manifest records what an index was built
from; refresh uses it, refuses other sources unless told, never calls a skipped file "added",
and reports argument errors before Prefect starts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragline.indexers.registry import IndexRegistry
from ragline.pipelines.cli import app
from ragline.pipelines.refresh import normalize_sources
from tests.conftest import write_params

runner = CliRunner()

#: Runs a ragline command in-process and reports which heavy modules it imported.
PROBE = """
import json, sys
from ragline.pipelines.cli import app
code = 0
try:
    code = app(sys.argv[1:], standalone_mode=False) or 0
except SystemExit as e:
    code = e.code
except BaseException as e:
    code = type(e).__name__
finally:
    heavy = sorted(m for m in ("prefect", "torch", "unstructured", "sentence_transformers") if m in sys.modules)
    sys.stderr.write("HEAVY=" + json.dumps(heavy) + "\\n")
    sys.stderr.write("CODE=" + json.dumps(code) + "\\n")
"""


def _probe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)


def test_normalize_sources() -> None:
    assert normalize_sources(["docs/", "./docs", "docs", "a//b", "s3://bucket/x/"]) == ["docs", "a/b", "s3://bucket/x"]


def test_refresh_uses_the_sources_the_index_was_built_from(light_workspace: Path, prefect_harness) -> None:
    """Regression: `ragline ingest docs --index mydocs` then `ragline refresh --index mydocs` fell back
    to load.sources (data/sample) and published "10 added, 0 changed, 16 removed"."""
    for html in (light_workspace / "data" / "sample").glob("*.html"):
        html.unlink()  # md/txt only: parsing stays fast
    docs = light_workspace / "docs"
    docs.mkdir()
    for p in sorted((light_workspace / "data" / "sample").glob("*.md")):
        shutil.copy(p, docs / p.name)
    r = runner.invoke(app, ["ingest", "docs/", "--index", "mydocs", "--json"])
    assert r.exit_code == 0, r.output
    reg = IndexRegistry("indexes")
    m = reg.manifest("mydocs", "v0001")
    assert m.sources == ["docs"] and m.params["load"]["sources"] == ["docs"]

    r = runner.invoke(app, ["refresh", "--index", "mydocs", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["nothing_changed"] and out["version"] is None
    assert out["counts"] == {"added": 0, "changed": 0, "removed": 0, "unchanged": 2, "skipped": 0}
    assert out["sources"] == ["docs"]

    # other sources: refused, naming both sets; nothing published
    r = runner.invoke(app, ["refresh", "--index", "mydocs", "data/sample"])
    assert r.exit_code == 1
    msg = " ".join(r.stderr.split())
    assert "was built from docs" in msg and "names data/sample" in msg and "--replace-sources" in msg
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 3
    assert reg.versions("mydocs") == ["v0001"]
    # the same sources written differently are the same set
    assert runner.invoke(app, ["refresh", "--index", "mydocs", "./docs"]).exit_code == 0

    # a changed file in the recorded source is refreshed from there
    (docs / "swarming.md").write_text((docs / "swarming.md").read_text() + "\n\nA late swarm is worth little.\n")
    r = runner.invoke(app, ["refresh", "--index", "mydocs", "--json"])
    out = json.loads(r.stdout)
    assert r.exit_code == 0 and out["version"] == "v0002"
    assert (out["counts"]["changed"], out["counts"]["removed"]) == (1, 0)

    # --replace-sources: the new sources replace the old, and are recorded
    r = runner.invoke(app, ["refresh", "--index", "mydocs", "data/sample", "--replace-sources", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["version"] == "v0003" and out["counts"]["removed"] == 2
    assert reg.manifest("mydocs", "v0003").sources == ["data/sample"]


def test_unparseable_file_is_skipped_not_added_and_refresh_skips_prefect(light_workspace: Path,
                                                                         prefect_harness) -> None:
    """Regression: the first refresh after ingesting a folder holding team.csv published
    "1 added: team.csv", started Prefect and took 17 s. (CSV is parsed now; an Apple Numbers file
    stands in for a type ragline does not parse.)"""
    write_params(light_workspace, load={"max_failed_fraction": 0.5})
    for html in (light_workspace / "data" / "sample").glob("*.html"):
        html.unlink()  # md/txt only: parsing stays fast
    (light_workspace / "data" / "sample" / "team.numbers").write_text("name,role\nAda,keeper\n")
    (light_workspace / "data" / "sample" / "empty.txt").write_text("")
    r = runner.invoke(app, ["ingest", "data/sample", "--json"])
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    assert {q["path"] for q in first["quarantine"]} == {"data/sample/team.numbers", "data/sample/empty.txt"}
    t0 = time.perf_counter()
    p = _probe("refresh", "--json")
    took = time.perf_counter() - t0
    assert "CODE=0" in p.stderr, p.stderr
    out = json.loads(p.stdout)
    assert out["nothing_changed"] and out["version"] is None and out["added"] == []
    assert sorted(out["skipped"]) == ["data/sample/empty.txt", "data/sample/team.numbers"]
    assert "HEAVY=[]" in p.stderr  # Prefect never started
    assert took < 30  # a scan and hashes; Prefect's temporary server alone takes 5-15 s
    assert IndexRegistry("indexes").versions("sample") == [first["version"]]
    # a new unparseable file alone does not publish either
    (light_workspace / "data" / "sample" / "more.xyz").write_text("x")
    r = runner.invoke(app, ["refresh", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["nothing_changed"]
    # when something parseable changes, the version's quarantine still lists the skipped files
    (light_workspace / "data" / "sample" / "new.md").write_text("# New\n\nQueens are fed royal jelly.\n")
    r = runner.invoke(app, ["refresh", "--json"])
    out = json.loads(r.stdout)
    assert r.exit_code == 0 and out["added"] == ["data/sample/new.md"] and out["version"]
    assert {q["path"] for q in out["quarantine"]} >= {"data/sample/team.numbers", "data/sample/more.xyz"}


@pytest.mark.parametrize("command", [["ingest", "nonexist/"], ["refresh", "nonexist/"],
                                     ["ingest", "data/sample", "--params", "missing.yaml"]])
def test_argument_errors_are_one_line_before_prefect(workspace: Path, command: list[str]) -> None:
    """Regression: `ragline ingest nonexist/` started Prefect (25 s) and printed a 23-line
    traceback before `error: source not found`."""
    p = _probe(*command)
    assert "CODE=1" in p.stderr, p.stderr
    lines = [x for x in p.stderr.splitlines() if not x.startswith(("HEAVY=", "CODE="))]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr and "HEAVY=[]" in p.stderr
    if "nonexist/" in command:
        assert "source not found: nonexist" in lines[0]


def test_empty_source_folder_is_an_argument_error(workspace: Path) -> None:
    (workspace / "empty").mkdir()
    r = runner.invoke(app, ["ingest", "empty"])
    assert r.exit_code == 1 and "no files to ingest under empty" in r.stderr


def test_serve_refuses_other_sources_before_serving(workspace: Path) -> None:
    from tests.refresh.conftest import params_here, publish_texts

    publish_texts(params_here(), {"data/sample/a.txt": "Bees make honey."})
    r = runner.invoke(app, ["refresh", "--serve", "elsewhere/"])
    assert r.exit_code == 1 and "was built from data/sample" in " ".join(r.stderr.split())
