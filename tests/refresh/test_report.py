"""`ragline report --html`: the page holds the versions, alias moves, gate metrics, drift and the
request log's figures (hashing embedder, versions published without Prefect)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ragline.indexers.registry import IndexRegistry
from ragline.pipelines.promote import promote
from ragline.core.serve_config import RequestLogConfig
from ragline.runner.requestlog import RequestLog, RequestRecord
from tests.conftest import write_params
from tests.refresh.conftest import A, B, C, D, cli, params_here, publish_texts


def test_report_renders_versions_events_drift_and_requests(workspace: Path) -> None:
    write_params(workspace, promote={"gate": "doc_recall", "questions": "q.jsonl", "min_doc_recall": 0.5},
                 retrieval={"k": 2})
    Path("q.jsonl").write_text(json.dumps({"question": "varroa mites sugar roll", "doc": "b.txt"}) + "\n")
    p = params_here()
    publish_texts(p, {"d/a.txt": A, "d/b.txt": B})
    publish_texts(p, {"d/a.txt": A, "d/b.txt": B, "e/c.txt": C})
    publish_texts(p, {"d/a.txt": A, "d/b.txt": B, "e/c.txt": C, "e/d.txt": D * 5})
    reg = IndexRegistry(p.index.root)
    promote(reg, p, "sample", "v0002", "prod")
    promote(reg, p, "sample", "v0003", "prod")
    reg.rollback_alias("sample", "prod")
    code, out, err = cli("report", "--html", "out/report.html")
    assert code == 0, err
    assert "3 versions, 2 drift pairs, no request log" in out
    page = Path("out/report.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") == 3  # versions, evals, drift
    assert not re.search(r"(src|href)=['\"]https?:", page)  # nothing fetched from elsewhere
    for v in ("v0001", "v0002", "v0003"):
        assert f"<td>{v}</td>" in page
    # prod: promoted to v0002, then v0003, rolled back to v0002 (the registry keeps the undone
    # move only as a rolled-back version, without its gate record)
    assert "<td>(time not kept: restored by the rollback)</td><td>prod</td><td>promote</td><td>-</td><td>v0002</td>" in page
    assert "<td>prod</td><td>rollback</td><td>v0003</td><td>v0002</td>" in page
    assert "doc_recall@2" in page and "no request log at logs/requests.sqlite" in page
    data = json.loads(cli("report", "--html", "out/r2.html", "--json")[1])
    assert [v["chunks"] for v in data["versions"]] == [2, 3, 4]
    assert [(d["a"], d["b"]) for d in data["drift"]] == [("v0001", "v0002"), ("v0002", "v0003")]
    assert data["drift"][1]["new_chunks"] == 1 and data["drift"][1]["ks"] > 0
    assert [e["version"] for e in data["evals"]] == ["v0002"] and data["evals"][0]["value"] == 1.0

    log = RequestLog(RequestLogConfig(path="logs/requests.sqlite"))
    for i, (lat, status) in enumerate([(10.0, 200), (20.0, 200), (30.0, 500)]):
        log.append(RequestRecord(f"r{i}", "/v1/chat/completions", "qa", None, None, [], "q", "a", [], status,
                                 latency_ms=lat, prompt_tokens=5, completion_tokens=7, cost_usd=0.001))
    log.add_feedback("r0", "down")
    log.close()
    code, out, err = cli("report", "--html", "out/report.html")
    assert code == 0 and "3 requests" in out, err
    page = Path("out/report.html").read_text()
    assert page.count("<svg") == 4 and "serving latency" in page
    assert "<td>qa</td><td>3</td><td>1</td><td>20.0</td>" in page  # flow, requests, errors, p50
    assert "<td>15</td><td>21</td><td>0.0030</td><td>0</td><td>1</td>" in page  # tokens, cost, feedback


def test_report_unknown_index_is_one_line(workspace: Path) -> None:
    code, _, err = cli("report", "--html", "x.html", "--index", "nope")
    assert code == 1 and "no index named 'nope'" in err and "Traceback" not in err
    assert not Path("x.html").exists()
