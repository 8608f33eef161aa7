"""``ragline report --html FILE``: one static HTML page about an index (no CDN, no script).

Sections: the versions over time with their document and chunk counts; alias moves
(promotions, rollbacks) from the registry's alias histories; the promotion gate's metric per
version where a gated move recorded one; drift between consecutive versions
(:func:`ragline.evaluation.drift.compute_drift`, without questions: token-length KS and PSI,
centroid shift, new-chunk nearest-neighbour distance); and, when the request log of
``ragline flow serve`` exists (``serve.request_log.path``, SQLite), request counts, latency
percentiles, errors, tokens, cost and feedback per flow. Plots are matplotlib figures saved as
SVG and inlined in the page.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragline.indexers.registry import IndexRegistry
from ragline.pipelines.config import Params

#: Drift is computed for at most this many consecutive pairs (the newest).
MAX_DRIFT_PAIRS = 20


@dataclass
class ReportData:
    """What the page shows (also the ``--json`` output of ``ragline report``)."""

    index: str
    generated_at: str
    versions: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    requests: dict[str, Any] | None = None
    requests_note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(self.__dict__)


def _alias_events(reg: IndexRegistry, name: str) -> tuple[list[dict], list[dict]]:
    events, evals = [], []
    for alias in sorted(reg.aliases(name)):
        rec = reg.alias_record(name, alias) or {}
        rolled = list(rec.get("rolled_back", []))
        moves = list(rec.get("history", [])) + [{"version": rec.get("version"), "at": rec.get("updated_at"),
                                                  "meta": rec.get("meta")}]
        last_is_rollback = bool(rolled) and rolled[-1].get("at") == rec.get("updated_at")
        for i, m in enumerate(moves):
            meta = m.get("meta") or {}
            gate = meta.get("gate") or {}
            at = m.get("at") or ""
            if last_is_rollback and i == len(moves) - 1:
                # a rollback restores the undone move's record (meta, but not its time): show both
                events.append({"at": at, "alias": alias, "version": m.get("version"),
                               "action": "rollback", "from": rolled[-1].get("version"), "reason": ""})
                at = ""
            action = "promote" if meta.get("action") == "promote" else ("publish" if alias == "latest" else "set")
            if meta.get("forced"):
                action = "promote (forced)"
            events.append({"at": at, "alias": alias, "version": m.get("version"), "action": action,
                           "from": moves[i - 1]["version"] if i else None, "reason": gate.get("reason", "")})
            if gate.get("metric") and gate.get("value") is not None:
                evals.append({"version": m.get("version"), "alias": alias, "at": at,
                              "metric": gate["metric"], "value": gate["value"], "threshold": gate.get("threshold"),
                              "passed": gate.get("passed")})
        for rb in rolled[:-1] if last_is_rollback else rolled:
            events.append({"at": rb.get("at") or "", "alias": alias, "version": None, "action": "rollback",
                           "from": rb.get("version"), "reason": ""})
    events.sort(key=lambda e: (e["at"], e["alias"]))
    return events, evals


def _blank() -> dict[str, Any]:
    return {"requests": 0, "errors": 0, "latency": [], "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0,
            "up": 0, "down": 0}


def _columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in con.execute(f"PRAGMA table_info({table})")}


def _requests(path: Path, arm: str | None = None) -> dict[str, Any] | None:
    """Per-flow and per-split-arm figures of a request log (and its feedback.sqlite), ``None``
    when there is none. ``arm``: only the requests (and feedback) of that arm."""
    if not path.is_file():
        return None
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        arm_col = "arm" if "arm" in _columns(con, "requests") else "NULL"
        where, args = (f"WHERE {arm_col} = ?", [arm]) if arm else ("", [])
        rows = con.execute(f"SELECT time, flow, status, latency_ms, prompt_tokens, completion_tokens, cost_usd, "
                           f"{arm_col} FROM requests {where} ORDER BY time", args).fetchall()
    finally:
        con.close()
    flows: dict[str, dict[str, Any]] = {}
    arms: dict[str, dict[str, Any]] = {}
    for _, flow, status, lat, pt, ct, cost, a in rows:
        for f in [flows.setdefault(flow, _blank())] + ([arms.setdefault(a, _blank())] if a else []):
            f["requests"] += 1
            f["errors"] += int(status >= 400)
            if lat is not None:
                f["latency"].append(float(lat))
            f["prompt_tokens"] += int(pt or 0)
            f["completion_tokens"] += int(ct or 0)
            f["cost_usd"] += float(cost or 0.0)
    fb = path.parent / "feedback.sqlite"
    if fb.is_file():
        con = sqlite3.connect(f"file:{fb}?mode=ro", uri=True)
        try:
            fb_arm = "arm" if "arm" in _columns(con, "feedback") else "NULL"
            fwhere, fargs = (f"WHERE {fb_arm} = ?", [arm]) if arm else ("", [])
            for flow, a, rating, n in con.execute(f"SELECT flow, {fb_arm}, rating, COUNT(*) FROM feedback {fwhere} "
                                                  f"GROUP BY flow, {fb_arm}, rating", fargs):
                flows.setdefault(flow or "?", _blank())[rating] += int(n)
                if a:
                    arms.setdefault(a, _blank())[rating] += int(n)
        finally:
            con.close()
    for f in [*flows.values(), *arms.values()]:
        lat = np.asarray(f["latency"])
        f["p50_ms"] = round(float(np.percentile(lat, 50)), 2) if len(lat) else None
        f["p95_ms"] = round(float(np.percentile(lat, 95)), 2) if len(lat) else None
        rated = f["up"] + f["down"]
        f["down_rate"] = round(f["down"] / rated, 4) if rated else None
    return {"path": str(path), "arm": arm, "total": len(rows), "times": [r[0] for r in rows],
            "latency_ms": [r[3] for r in rows], "flows": flows, "arms": arms}


def collect(params: Params, name: str, arm: str | None = None) -> ReportData:
    """Gather the report's data for index ``name`` (registry of ``params.index.root``);
    ``arm``: serving figures of that split arm only.

    Raises:
        RegistryError: no such index.
        CorruptRegistryError: a damaged manifest or alias file.
    """
    from ragline.core.errors import RaglineError
    from ragline.evaluation.drift import compute_drift

    reg = IndexRegistry(params.index.root, params.index.lock_timeout_s, verify=params.index.verify)
    data = ReportData(name, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    aliases = reg.aliases(name)
    for v in reg.versions(name):
        m = reg.manifest(name, v)
        data.versions.append({"version": v, "created_at": m.created_at, "parent": m.parent_version,
                              "documents": int(m.counts.get("documents", 0)), "chunks": int(m.counts.get("chunks", 0)),
                              "quarantined": int(m.counts.get("quarantined", 0)),
                              "embedding": str(m.embedding.get("model_id")),
                              "aliases": sorted(a for a, t in aliases.items() if t == v)})
    data.events, data.evals = _alias_events(reg, name)
    vs = [v["version"] for v in data.versions]
    for a, b in list(zip(vs, vs[1:]))[-MAX_DRIFT_PAIRS:]:
        try:
            d = compute_drift(reg, name, a, b)
            e = d.embedding or {}
            data.drift.append({"a": a, "b": b, "ks": d.tokens["ks"], "psi": d.tokens["psi"],
                               "centroid_shift": e.get("centroid_shift"), "new_chunks": e.get("new_chunks"),
                               "new_chunk_nn_distance": e.get("new_chunk_nn_distance"),
                               "note": d.embedding_refused or ""})
        except (RaglineError, OSError) as exc:
            data.drift.append({"a": a, "b": b, "ks": None, "psi": None, "centroid_shift": None, "new_chunks": None,
                               "new_chunk_nn_distance": None, "note": f"not computed: {exc}"})
    log_path = Path(params.serve.request_log.path)
    try:
        data.requests = _requests(log_path, arm)
    except sqlite3.Error as exc:
        data.requests_note = f"request log {log_path} not readable: {exc}"
    if data.requests is None and not data.requests_note:
        data.requests_note = f"no request log at {log_path} (written by `ragline flow serve`)"
    return data


# ---------------------------------------------------------------- rendering
def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _time(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def _plots(data: ReportData) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "svg.hashsalt": "ragline-report"})
    out: dict[str, str] = {}
    if data.versions:
        fig, ax = plt.subplots(figsize=(7, 2.3))
        t = [_time(v["created_at"]) for v in data.versions]
        ax.plot(t, [v["documents"] for v in data.versions], "o-", label="documents")
        ax2 = ax.twinx()
        ax2.plot(t, [v["chunks"] for v in data.versions], "s--", color="tab:orange", label="chunks")
        for v, x in zip(data.versions, t):
            ax.annotate(v["version"], (x, v["documents"]), textcoords="offset points", xytext=(0, 6), ha="center")
        for e in data.events:
            if e["at"] and (e["action"] == "rollback" or e["action"].startswith("promote")):
                ax.axvline(_time(e["at"]), color="tab:red" if e["action"] == "rollback" else "tab:green",
                           alpha=0.5, lw=1)
        ax.set_ylabel("documents")
        ax2.set_ylabel("chunks")
        ax.set_title("versions over time (green: promotion, red: rollback)")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8)
        fig.autofmt_xdate()
        out["versions"] = _svg(fig)
    pairs = [d for d in data.drift if d["ks"] is not None]
    if pairs:
        fig, ax = plt.subplots(figsize=(7, 1.9))
        x = [f"{d['a']}→{d['b']}" for d in pairs]
        ax.plot(x, [d["ks"] for d in pairs], "o-", label="token-length KS D")
        ax.plot(x, [d["psi"] for d in pairs], "s-", label="token-length PSI")
        ax.plot(x, [d["centroid_shift"] if d["centroid_shift"] is not None else np.nan for d in pairs], "^-",
                label="centroid shift (cosine)")
        ax.set_title("drift between consecutive versions")
        ax.legend()
        out["drift"] = _svg(fig)
    if data.evals:
        fig, ax = plt.subplots(figsize=(7, 1.7))
        for metric in sorted({e["metric"] for e in data.evals}):
            es = [e for e in data.evals if e["metric"] == metric]
            ax.plot([e["version"] for e in es], [e["value"] for e in es], "o-", label=metric)
        ax.set_ylim(0, 1.05)
        ax.set_title("promotion-gate metric per version")
        ax.legend()
        out["evals"] = _svg(fig)
    if data.requests and any(v is not None for v in data.requests["latency_ms"]):
        lat = [v for v in data.requests["latency_ms"] if v is not None]
        fig, ax = plt.subplots(figsize=(7, 1.7))
        ax.hist(lat, bins=min(40, max(5, len(lat) // 5)))
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("requests")
        ax.set_title("serving latency")
        out["latency"] = _svg(fig)
    return out


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{e('' if c is None else str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(x: Any, nd: int = 3) -> str:
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4}.note{color:#666;font-size:13px}svg{max-width:100%;height:auto}"""


def render_html(data: ReportData) -> str:
    """The page: one HTML document with inline CSS and SVG (no external resource)."""
    e = html.escape
    plots = _plots(data)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>ragline report: {e(data.index)}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>ragline report: index {e(data.index)}</h1>",
             f"<p class='note'>generated {e(data.generated_at)}; {len(data.versions)} versions</p>",
             "<h2>Versions</h2>", plots.get("versions", ""),
             _table(["version", "created", "parent", "documents", "chunks", "quarantined", "embedder", "aliases"],
                    [[v["version"], v["created_at"].replace("T", " ")[:19], v["parent"] or "-", v["documents"],
                      v["chunks"], v["quarantined"], v["embedding"], ", ".join(v["aliases"]) or "-"]
                     for v in data.versions]),
             "<h2>Promotions and rollbacks</h2>"]
    moves = [ev for ev in data.events if ev["alias"] != "latest"]
    parts.append(_table(["time", "alias", "action", "from", "to", "gate"],
                        [[ev["at"].replace("T", " ")[:19] or "(time not kept: restored by the rollback)", ev["alias"], ev["action"], ev["from"] or "-",
                          ev["version"] or "-", ev["reason"]] for ev in moves])
                 if moves else "<p class='note'>no alias other than latest has moved</p>")
    parts.append("<h2>Evaluation per version</h2>")
    parts.append(plots.get("evals", ""))
    parts.append(_table(["version", "alias", "metric", "value", "threshold", "passed"],
                        [[x["version"], x["alias"], x["metric"], _fmt(x["value"]), _fmt(x["threshold"]),
                          x["passed"]] for x in data.evals])
                 if data.evals else "<p class='note'>no evaluation recorded (the promotion gate records one when "
                                    "a gated alias is promoted)</p>")
    parts.append("<h2>Drift between consecutive versions</h2>")
    parts.append(plots.get("drift", ""))
    parts.append(_table(["from", "to", "KS D", "PSI", "centroid shift", "new chunks", "new-chunk NN distance", "note"],
                        [[d["a"], d["b"], _fmt(d["ks"]), _fmt(d["psi"]), _fmt(d["centroid_shift"], 4),
                          _fmt(d["new_chunks"]), _fmt(d["new_chunk_nn_distance"], 4), d["note"]] for d in data.drift])
                 if data.drift else "<p class='note'>one version only: no drift to show</p>")
    parts.append("<h2>Serving</h2>")
    if data.requests:
        r = data.requests
        parts.append(f"<p class='note'>{r['total']} requests in {e(r['path'])}</p>")
        parts.append(plots.get("latency", ""))
        parts.append(_table(["flow", "requests", "errors", "p50 ms", "p95 ms", "prompt tokens", "completion tokens",
                             "cost USD", "feedback up", "feedback down"],
                            [[fl, f["requests"], f["errors"], _fmt(f["p50_ms"], 1), _fmt(f["p95_ms"], 1),
                              f["prompt_tokens"], f["completion_tokens"], f"{f['cost_usd']:.4f}", f["up"], f["down"]]
                             for fl, f in sorted(r["flows"].items())]))
        if r.get("arms"):
            parts.append("<h3>Per split arm</h3>")
            parts.append(_table(["arm", "requests", "errors", "p50 ms", "p95 ms", "cost USD", "feedback up",
                                 "feedback down", "down rate"],
                                [[a, f["requests"], f["errors"], _fmt(f["p50_ms"], 1), _fmt(f["p95_ms"], 1),
                                  f"{f['cost_usd']:.4f}", f["up"], f["down"], _fmt(f["down_rate"], 3)]
                                 for a, f in sorted(r["arms"].items())]))
    else:
        parts.append(f"<p class='note'>{e(data.requests_note)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(params: Params, name: str, path: str | Path, arm: str | None = None) -> ReportData:
    """Collect and write the page to ``path`` (atomically); returns the data shown.

    Raises:
        RegistryError, CorruptRegistryError: see :func:`collect`.
        OSError: ``path`` cannot be written.
    """
    from ragline.core.io import write_bytes_atomic

    data = collect(params, name, arm)
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, render_html(data).encode("utf-8"))
    return data


__all__ = ["ReportData", "collect", "render_html", "write_report", "MAX_DRIFT_PAIRS"]
