"""A/B and canary splits: routing by a stable hash, the arm in the log, metrics, report and
export, the two-proportion decision rule, and promotion of the winner through the gate."""

from __future__ import annotations

import json
import math
import os
import random
import sqlite3
from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest
from typer.testing import CliRunner

from ragline.indexers.registry import IndexRegistry
from ragline.core.serve_config import ServeConfig, SplitConfig
from ragline.runner.engine import FlowRunner
from ragline.runner.errors import FlowInputError, FlowSpecError
from ragline.runner.requestlog import RequestLog, RequestRecord, export_feedback
from ragline.runner.serve import create_app
from ragline.runner.spec import load_flow, with_alias
from ragline.runner.split import ArmStats, arm_stats, decide, parse_split, split_key, two_proportion_z
from tests.publishing import publish_paragraphs
from tests.runner.conftest import CORPUS
from tests.runner.helpers import serve_cli, serving
from tests.runner.test_serve_ops import logged_rows

pytestmark = pytest.mark.network  # loopback only
KEY = "split-key"
H = {"X-API-Key": KEY}
PUMP = "How often should the impeller seal be replaced?"

#: v0002 adds a document, so the two versions differ.
CORPUS_V2 = {**CORPUS, "garden/apples.md": [("Apple trees are pruned in winter while dormant.", None)]}


@pytest.fixture()
def split_registry(tmp_path: Path) -> Path:
    """Index ``mini``: v0001 (aliases latest, prod) and v0002 (latest, candidate)."""
    root = tmp_path / "indexes"
    publish_paragraphs(root, "mini", CORPUS, aliases=("latest", "prod"))
    publish_paragraphs(root, "mini", CORPUS_V2, aliases=("latest", "candidate"))
    return root


# ---------------------------------------------------------------- parsing and routing


def test_parse_split_keeps_the_order_and_refuses_bad_arms() -> None:
    s = parse_split("prod=90, candidate=10")
    assert s.names == ["prod", "candidate"] and s.control == "prod" and s.to_text() == "prod=90,candidate=10"
    assert parse_split({"a": 1, "b": 3}).names == ["a", "b"]
    for bad, msg in (("prod=90", "at least two arms"), ("prod=90,prod=10", "repeat"), ("prod=x,c=1", "positive integer"),
                     ("prod=0,c=1", "positive"), ("prod,c=1", "ARM=WEIGHT")):
        with pytest.raises(FlowInputError, match=msg):
            parse_split(bad)


def test_choose_is_stable_per_id_and_follows_the_weights() -> None:
    s = parse_split("prod=90,candidate=10")
    assert all(s.choose(f"user-{i}") == s.choose(f"user-{i}") for i in range(200))
    arms = [s.choose(f"user-{i}") for i in range(20000)]
    share = arms.count("candidate") / len(arms)
    assert 0.09 < share < 0.11  # binomial sd ~ 0.002
    rng = random.Random(7)
    drawn = [s.choose(None, rng) for _ in range(20000)]
    assert 0.09 < drawn.count("candidate") / len(drawn) < 0.11
    assert split_key({"x-session-id": "s1"}, "u") == "s1"
    assert split_key({"x-ragline-user": "u1", "x-session-id": "s1"}) == "u1"
    assert split_key({}, "openai-user") == "openai-user" and split_key({}) is None


def test_with_alias_points_every_retrieve_node_at_the_alias(mini_flow: Path) -> None:
    flow = with_alias(load_flow(mini_flow), "candidate")
    assert [n.index for n in flow.spec.nodes if n.type == "retrieve"] == ["mini@candidate"]
    with pytest.raises(FlowSpecError, match="not a variant of flow qa nor a valid alias"):
        with_alias(load_flow(mini_flow), "bad alias!")


# ---------------------------------------------------------------- the decision rule


def test_two_proportion_z_matches_the_textbook_formula() -> None:
    # control 30/100 down, candidate 15/100 down: pooled p = 0.225
    z, p = two_proportion_z(30, 100, 15, 100)
    se = math.sqrt(0.225 * 0.775 * (1 / 100 + 1 / 100))
    assert z == pytest.approx(0.15 / se)
    assert p == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)))  # P(Z >= z), independent of scipy
    assert round(z, 3) == 2.540 and round(p, 4) == 0.0055
    assert two_proportion_z(0, 50, 0, 50) == (None, None)  # no thumbs-down at all: no evidence
    assert two_proportion_z(3, 0, 1, 10) == (None, None)


def _stats(arm: str, requests: int, up: int, down: int, p50: float) -> ArmStats:
    return ArmStats(arm, requests=requests, up=up, down=down, p50_ms=p50)


def test_decide_needs_volume_a_significant_drop_and_no_slower_latency() -> None:
    rule = SplitConfig(min_requests=100, min_feedback=40, alpha=0.05, max_latency_ratio=1.1)
    ctrl = _stats("prod", 900, up=70, down=30, p50=10.0)
    good = decide(ctrl, _stats("candidate", 150, up=85, down=15, p50=10.5), rule)
    assert good.beats and good.reasons == () and good.p_value < 0.05 and good.latency_ratio == 1.05
    few = decide(ctrl, _stats("candidate", 50, up=35, down=5, p50=10.0), rule)
    assert not few.beats and any("50 requests < min_requests 100" in r for r in few.reasons)
    same = decide(ctrl, _stats("candidate", 150, up=72, down=28, p50=10.0), rule)
    assert not same.beats and any("p = " in r and ">= alpha 0.05" in r for r in same.reasons)
    slow = decide(ctrl, _stats("candidate", 150, up=85, down=15, p50=12.0), rule)
    assert not slow.beats and any("1.20x" in r and "max_latency_ratio 1.1" in r for r in slow.reasons)


# ---------------------------------------------------------------- serving


@pytest.fixture()
def split_app(mini_flow: Path, split_registry: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    flow = load_flow(mini_flow)
    arms = {a: FlowRunner(with_alias(flow, a), split_registry) for a in ("prod", "candidate")}
    log = tmp_path / "logs" / "requests.sqlite"
    cfg = ServeConfig.model_validate({"request_log": {"path": str(log)}})
    app = create_app([], api_key=KEY, config=cfg, split=parse_split("prod=50,candidate=50"), arms=arms)
    with serving(app) as url:
        yield url, log
    app.state.service.log.close()


def test_split_routes_users_stably_and_records_the_arm(split_app: tuple[str, Path]) -> None:
    url, log = split_app
    seen: dict[str, str] = {}
    for i in range(12):
        user = f"user-{i % 4}"
        r = httpx.post(f"{url}/score", json={"question": PUMP}, headers={**H, "X-Ragline-User": user})
        assert r.status_code == 200, r.text
        body = r.json()
        assert r.headers["X-Ragline-Arm"] == body["arm"]
        assert seen.setdefault(user, body["arm"]) == body["arm"]  # the same user stays on one arm
        version = {"prod": "v0001", "candidate": "v0002"}[body["arm"]]
        assert body["indexes"][0]["version"] == version and body["indexes"][0]["ref"] == f"mini@{body['arm']}"
    expected = {u: parse_split("prod=50,candidate=50").choose(u) for u in seen}
    assert seen == expected
    pinned = httpx.post(f"{url}/score?variant=candidate", json={"question": PUMP}, headers=H).json()
    assert pinned["arm"] == "candidate"
    rows = logged_rows(log, 13)
    assert len(rows) == 13 and {r["arm"] for r in rows} <= {"prod", "candidate"}
    by_id = {r["request_id"]: r for r in rows}
    assert by_id[pinned["request_id"]]["arm"] == "candidate" and by_id[pinned["request_id"]]["model"] == "qa@candidate"
    metrics = httpx.get(f"{url}/metrics", headers=H).text
    for arm in ("prod", "candidate"):
        n = sum(1 for r in rows if r["arm"] == arm)
        assert f'ragline_arm_requests_total{{arm="{arm}",status="ok"}} {float(n)}' in metrics


def test_openai_user_field_routes_the_flow_model(split_app: tuple[str, Path]) -> None:
    url, log = split_app
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == "qa" and set(ids[1:]) == {"qa@prod", "qa@candidate"}
    want = parse_split("prod=50,candidate=50").choose("alice")
    for _ in range(3):
        done = client.chat.completions.create(model="qa", user="alice", messages=[{"role": "user", "content": PUMP}])
        assert done.model == f"qa@{want}" and done.model_extra["ragline"]["arm"] == want
    direct = client.chat.completions.create(model="qa@prod", user="alice", messages=[{"role": "user", "content": PUMP}])
    assert direct.model_extra["ragline"]["arm"] == "prod"
    rows = logged_rows(log, 4)
    assert [r["arm"] for r in rows] == [want, want, want, "prod"]


def test_cli_serves_a_split_of_aliases(mini_flow: Path, split_registry: Path, tmp_path: Path) -> None:
    env = {**os.environ, "RAGLINE_API_KEY": KEY}
    with serve_cli([str(mini_flow), "--index-root", str(split_registry), "--split", "prod=90,candidate=10"],
                   tmp_path, env) as server:
        models = httpx.get(f"{server.url}/v1/models", headers=H).json()["data"]
        assert [m["id"] for m in models] == ["qa", "qa@prod", "qa@candidate"]
        arm = parse_split("prod=90,candidate=10").choose("bob")
        r = httpx.post(f"{server.url}/score", json={"question": PUMP}, headers={**H, "X-Session-Id": "bob"})
        assert r.status_code == 200 and r.json()["arm"] == arm
    assert "split prod=90,candidate=10" in server.stderr


def test_cli_refuses_an_arm_that_is_neither_a_variant_nor_an_alias(mini_flow: Path, split_registry: Path) -> None:
    from ragline.pipelines.cli import app

    r = CliRunner().invoke(app, ["flow", "serve", str(mini_flow), "--index-root", str(split_registry), "--no-auth",
                                 "--split", "prod=90,nosuch=10"])
    assert r.exit_code == 1 and "--split arm 'nosuch'" in r.output and "Traceback" not in r.output


# ---------------------------------------------------------------- feedback, report, split-status


def _synthetic_log(path: Path, arms: dict[str, tuple[int, int, int, float, str]]) -> None:
    """Requests and feedback per arm: ``arm -> (requests, thumbs up, thumbs down, latency ms, version)``."""
    log = RequestLog(ServeConfig.model_validate({"request_log": {"path": str(path)}}).request_log)
    try:
        for arm, (n, up, down, lat, version) in arms.items():
            ids = []
            for i in range(n):
                rid = f"{arm}-{i}"
                ids.append(rid)
                log.append(RequestRecord(
                    request_id=rid, route="/score", flow="qa", variant=None, model=f"qa@{arm}",
                    indexes=[{"node": "retrieve", "ref": f"mini@{arm}", "name": "mini", "version": version}],
                    question=f"question {i} of {arm}", answer="an answer",
                    citations=[{"source": "manuals/pump.pdf"}], status=200, latency_ms=lat, arm=arm))
            log.flush()
            for rid in ids[:up]:
                log.add_feedback(rid, "up")
            for rid in ids[up:up + down]:
                log.add_feedback(rid, "down", correct_source="manuals/pump.pdf")
    finally:
        log.close()


def test_arm_stats_export_and_report_break_down_per_arm(tmp_path: Path) -> None:
    from ragline.pipelines.report import ReportData, _requests, render_html

    log = tmp_path / "logs" / "requests.sqlite"
    _synthetic_log(log, {"prod": (40, 20, 12, 10.0, "v0001"), "candidate": (20, 12, 3, 11.0, "v0002")})
    stats = arm_stats(log, ["prod", "candidate"])
    assert (stats["prod"].requests, stats["prod"].up, stats["prod"].down) == (40, 20, 12)
    assert stats["candidate"].down_rate == pytest.approx(3 / 15) and stats["candidate"].p50_ms == 11.0
    assert stats["candidate"].versions == ["mini@v0002"]
    out = tmp_path / "down.jsonl"
    summary = export_feedback(log.with_name("feedback.sqlite"), out, rating="down", arm="candidate")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert summary["written"] == 3 and summary["by_arm"] == {"candidate": 3}
    assert {x["arm"] for x in lines} == {"candidate"} and lines[0]["doc"] == "pump.pdf"
    assert export_feedback(log.with_name("feedback.sqlite"), out, rating="down")["by_arm"] == {"prod": 12, "candidate": 3}
    r = _requests(log)
    assert r["arms"]["prod"]["requests"] == 40 and r["arms"]["candidate"]["down"] == 3
    assert r["arms"]["prod"]["down_rate"] == pytest.approx(12 / 32, abs=1e-4)
    only = _requests(log, "candidate")
    assert only["total"] == 20 and list(only["arms"]) == ["candidate"]
    page = render_html(ReportData("mini", "now", requests=r))
    assert "<h3>Per split arm</h3>" in page and "<td>candidate</td><td>20</td>" in page


def _params(root: Path, log: Path, questions: Path, min_doc_recall: float, auto: bool) -> "object":
    from ragline.pipelines.config import Params

    return Params.from_dict({
        "embed": {"model": "hashing"}, "index": {"name": "mini", "root": str(root)},
        "promote": {"gate": "doc_recall", "gated_aliases": ["prod"], "questions": str(questions),
                    "min_doc_recall": min_doc_recall},
        "serve": {"request_log": {"path": str(log)},
                  "split": {"arms": {"prod": 90, "candidate": 10}, "auto_promote": auto, "min_requests": 100,
                            "min_feedback": 40, "alpha": 0.05, "max_latency_ratio": 1.1}}})


@pytest.fixture()
def questions(tmp_path: Path) -> Path:
    q = tmp_path / "questions.jsonl"
    q.write_text(json.dumps({"question": PUMP, "doc": "pump.pdf"}) + "\n"
                 + json.dumps({"question": "When are roses pruned?", "doc": "roses.md"}) + "\n")
    return q


def test_split_status_promotes_a_winning_candidate_through_the_gate(mini_flow: Path, split_registry: Path,
                                                                      tmp_path: Path, questions: Path) -> None:
    from ragline.pipelines.canary import split_status

    log = tmp_path / "logs" / "requests.sqlite"
    # control: 30 % thumbs-down of 100 rated; candidate: 12 % of 50 rated; both over min_requests
    _synthetic_log(log, {"prod": (900, 70, 30, 10.0, "v0001"), "candidate": (120, 44, 6, 10.4, "v0002")})
    params = _params(split_registry, log, questions, 0.5, auto=False)
    watch = split_status(params, mini_flow)
    assert watch["winner"] == "candidate" and watch["promotion"] is None
    c = watch["comparisons"][0]
    z, p = two_proportion_z(30, 100, 6, 50)
    assert c["beats"] and c["z"] == pytest.approx(z, abs=1e-4) and c["p_value"] == pytest.approx(p, abs=1e-6)
    assert IndexRegistry(split_registry).aliases("mini")["prod"] == "v0001"
    done = split_status(_params(split_registry, log, questions, 0.5, auto=True), mini_flow)
    assert done["promotion"]["moved"] and (done["promotion"]["from"], done["promotion"]["to"]) == ("v0001", "v0002")
    assert done["promotion"]["gate"]["passed"] and done["promotion"]["gate"]["metric"].startswith("doc_recall@")
    assert IndexRegistry(split_registry).aliases("mini")["prod"] == "v0002"
    again = split_status(_params(split_registry, log, questions, 0.5, auto=True), mini_flow)
    assert not again["promotion"]["moved"] and "already points to v0002" in again["promotion"]["reason"]


def test_split_status_leaves_prod_when_the_gate_refuses_or_the_candidate_loses(
        mini_flow: Path, split_registry: Path, tmp_path: Path, questions: Path) -> None:
    from ragline.pipelines.canary import split_status
    from ragline.pipelines.cli import app

    log = tmp_path / "logs" / "requests.sqlite"
    _synthetic_log(log, {"prod": (900, 70, 30, 10.0, "v0001"), "candidate": (120, 44, 6, 10.4, "v0002")})
    bad_q = tmp_path / "bad.jsonl"
    bad_q.write_text(json.dumps({"question": PUMP, "doc": "no-such-document.md"}) + "\n")
    refused = split_status(_params(split_registry, log, bad_q, 0.9, auto=True), mini_flow)
    assert not refused["promotion"]["moved"] and "promotion gate failed" in refused["promotion"]["reason"]
    assert IndexRegistry(split_registry).aliases("mini")["prod"] == "v0001"

    log2 = tmp_path / "logs2" / "requests.sqlite"
    _synthetic_log(log2, {"prod": (900, 70, 30, 10.0, "v0001"), "candidate": (120, 34, 16, 10.0, "v0002")})
    lost = split_status(_params(split_registry, log2, questions, 0.5, auto=True), mini_flow)
    assert lost["winner"] is None and not lost["promotion"]["moved"]
    assert IndexRegistry(split_registry).aliases("mini")["prod"] == "v0001"

    params_file = tmp_path / "params.yaml"
    params_file.write_text(json.dumps({"serve": {"request_log": {"path": str(log)},
                                                 "split": {"min_requests": 100, "min_feedback": 40}},
                                       "index": {"name": "mini", "root": str(split_registry)}}))
    r = CliRunner().invoke(app, ["flow", "split-status", str(mini_flow), "--split", "prod=90,candidate=10",
                                 "-p", str(params_file), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["winner"] == "candidate" and out["arms"]["prod"]["alias_target"] == "v0001"
    assert out["arms"]["candidate"]["requests"] == 120 and out["promotion"] is None
    r = CliRunner().invoke(app, ["flow", "split-status", str(mini_flow), "-p", str(params_file)])
    assert r.exit_code == 1 and "no split: give --split" in r.output


def test_variant_arms_are_served_as_flow_variant_models(mini_flow: Path, mini_registry: Path) -> None:
    arms = {v: FlowRunner(load_flow(mini_flow, v), mini_registry) for v in ("bm25", "dense")}
    app = create_app([], api_key=KEY, split=parse_split("bm25=1,dense=1"), arms=arms)
    with serving(app) as url:
        ids = [m["id"] for m in httpx.get(f"{url}/v1/models", headers=H).json()["data"]]
        assert ids == ["qa", "qa:bm25", "qa:dense"]
        for user in ("u1", "u2", "u3", "u4"):
            body = httpx.post(f"{url}/score", json={"question": PUMP}, headers={**H, "X-Ragline-User": user}).json()
            assert body["arm"] == body["variant"] == parse_split("bm25=1,dense=1").choose(user)
        meta = httpx.get(f"{url}/metadata?variant=dense", headers=H).json()
        assert meta["split"] == "bm25=1,dense=1" and meta["arm"] == "dense"


def test_logs_written_before_splits_get_an_arm_column(tmp_path: Path) -> None:
    log = tmp_path / "requests.sqlite"
    old = sqlite3.connect(log)
    old.execute("CREATE TABLE requests (request_id TEXT PRIMARY KEY, time TEXT NOT NULL, route TEXT NOT NULL, "
                "flow TEXT NOT NULL, variant TEXT, model TEXT, indexes TEXT, question TEXT, answer TEXT, citations TEXT, "
                "status INTEGER NOT NULL, error TEXT, latency_ms REAL, retrieval_ms REAL, llm_ms REAL, "
                "prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL, stream INTEGER NOT NULL DEFAULT 0)")
    old.execute("INSERT INTO requests (request_id, time, route, flow, status) VALUES ('old1', '2026-01-01', '/score', "
                "'qa', 200)")
    old.commit()
    old.close()
    rl = RequestLog(ServeConfig.model_validate({"request_log": {"path": str(log)}}).request_log)
    try:
        rl.append(RequestRecord(request_id="new1", route="/score", flow="qa", variant=None, model="qa@prod",
                                indexes=[], question="q", answer="a", citations=[], status=200, arm="prod"))
        assert rl.find("old1")["arm"] is None and rl.find("new1")["arm"] == "prod"
        assert rl.add_feedback("new1", "down", correct_source="x.md")["arm"] == "prod"
    finally:
        rl.close()
    assert arm_stats(log, ["prod"])["prod"].down == 1
