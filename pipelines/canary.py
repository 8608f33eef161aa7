"""``ragline flow split-status``: how the arms of an A/B or canary split compare, and promoting
the winner through the promotion gate.

The figures and the decision rule are :mod:`runner.split`'s (request log + feedback; a one-sided
two-proportion z-test on thumbs-down rate and a p50 latency ratio). This module adds what the
runner may not do: moving an alias. When a candidate arm that is an *alias* of the flow's index
beats the control arm, itself an alias (``prod``), and ``serve.split.auto_promote`` is true (or
``--promote`` is given), the control's alias moves to the candidate alias's version with
:func:`pipelines.promote.promote`, so the ``promote:`` gate (doc recall on the gate questions)
still has the last word. A running ``flow serve`` keeps the versions it opened: restart it to
serve the moved alias.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ragline.core.cli import clean_errors
from ragline.core.cli import print_json as _print_json
from ragline.indexers.registry import IndexRef, IndexRegistry
from ragline.pipelines.config import Params, load_params
from ragline.pipelines.errors import PipelineError
from ragline.runner.cli import err, flow_app, out
from ragline.runner.split import arm_stats, decide, parse_split


class SplitError(PipelineError):
    """The split cannot be assessed (no split configured, a flow without a retrieve node)."""


def _index_of(flow: Any, params: Params) -> tuple[IndexRegistry, str]:
    """The registry and index name of the flow's first retrieve node."""
    from ragline.runner.spec import RetrieveNodeSpec

    for node in flow.spec.nodes:
        if isinstance(node, RetrieveNodeSpec):
            root = node.root or params.index.root
            return (IndexRegistry(root, params.index.lock_timeout_s, verify=params.index.verify),
                    IndexRef.parse(node.index).name)
    raise SplitError(f"{flow.file}: flow {flow.name} has no retrieve node, so no index alias to compare or promote")


def split_status(params: Params, flow_dir: str | Path, split: Optional[str] = None, promote: Optional[bool] = None,
                 since: Optional[str] = None) -> dict[str, Any]:
    """Per-arm figures, the verdict of each candidate against the control, and the promotion.

    Args:
        params: validated params (``serve.split``, ``serve.request_log``, ``promote``, ``index``).
        flow_dir: the served flow's folder.
        split: ``ARM=WEIGHT,...`` as given to ``flow serve --split`` (default: ``serve.split.arms``).
        promote: move the control alias to a winning candidate alias's version (default:
            ``serve.split.auto_promote``).
        since: ISO UTC time; only requests and feedback from then on.

    Returns:
        ``{"split", "control", "arms": {arm: figures + kind + alias target}, "comparisons": [...],
        "winner", "promotion"}``; ``promotion`` is ``None`` when not asked for, else
        ``{"moved", "alias", "from", "to", "reason", "gate"}``.

    Raises:
        SplitError: no split given or configured; the flow has no retrieve node.
        DataError: no request log.
        RegistryError: an alias arm that does not exist.
    """
    from ragline.pipelines.promote import PromotionRefused, promote as promote_alias
    from ragline.runner.spec import load_flow

    cfg = params.serve.split
    if not split and not cfg.arms:
        raise SplitError("no split: give --split ARM=WEIGHT,... (as to `flow serve`) or set serve.split.arms")
    plan = parse_split(split) if split else parse_split(cfg.arms)
    flow = load_flow(flow_dir)
    registry, name = _index_of(flow, params)
    aliases = registry.aliases(name)
    stats = arm_stats(params.serve.request_log.path, plan.names, since)
    arms: dict[str, dict] = {}
    for arm in plan.arms:
        is_variant = arm.name in flow.spec.variants
        target = None if is_variant else aliases.get(arm.name)
        arms[arm.name] = {"weight": arm.weight, "kind": "variant" if is_variant else "alias",
                          "alias_target": target, **stats[arm.name].to_dict()}
    control = stats[plan.control]
    comparisons = [decide(control, stats[a], cfg) for a in plan.names[1:]]
    winners = sorted((c for c in comparisons if c.beats), key=lambda c: (c.p_value, c.candidate))
    winner = winners[0].candidate if winners else None
    result: dict[str, Any] = {"flow": flow.name, "index": name, "split": plan.to_text(), "control": plan.control,
                              "rule": cfg.model_dump(exclude={"arms"}), "arms": arms,
                              "comparisons": [c.to_dict() for c in comparisons], "winner": winner, "promotion": None}
    wanted = cfg.auto_promote if promote is None else promote
    if not wanted:
        return result
    ctrl = arms[plan.control]
    if winner is None:
        result["promotion"] = {"moved": False, "alias": plan.control, "from": ctrl["alias_target"], "to": None,
                               "reason": "no candidate beats the control", "gate": None}
        return result
    cand = arms[winner]
    why = None
    if ctrl["kind"] != "alias" or cand["kind"] != "alias":
        why = "only an alias arm can be promoted over an alias control (variants are flow settings, not versions)"
    elif cand["alias_target"] is None:
        why = f"candidate alias {winner!r} of {name} is not set"
    elif cand["versions"] and cand["versions"] != [f"{name}@{cand['alias_target']}"]:
        why = (f"candidate alias {winner!r} now points to {cand['alias_target']} but the split served "
               f"{', '.join(cand['versions'])}: the feedback is about another version")
    elif cand["alias_target"] == ctrl["alias_target"]:
        why = f"{plan.control} already points to {cand['alias_target']}"
    if why:
        result["promotion"] = {"moved": False, "alias": plan.control, "from": ctrl["alias_target"],
                               "to": cand["alias_target"], "reason": why, "gate": None}
        return result
    try:
        move, gate = promote_alias(registry, params, name, cand["alias_target"], plan.control)
        result["promotion"] = {"moved": True, "alias": plan.control, "from": move.from_version, "to": move.to_version,
                               "reason": f"{winner} beats {plan.control}; gate: {gate.reason}", "gate": gate.to_dict()}
    except PromotionRefused as e:
        result["promotion"] = {"moved": False, "alias": plan.control, "from": ctrl["alias_target"],
                               "to": cand["alias_target"], "reason": str(e), "gate": None}
    return result


def _f(v: Any, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


@flow_app.command("split-status")
@clean_errors
def split_status_cmd(
    flow_dir: Path = typer.Argument(..., help="Flow folder (holding flow.yaml) served with --split."),
    split: Optional[str] = typer.Option(None, "--split", help="ARM=WEIGHT,... as given to flow serve "
                                        "(default: serve.split.arms)."),
    promote: Optional[bool] = typer.Option(None, "--promote/--no-promote", help="Move the control alias to a winning "
                                           "candidate alias's version, through the gate (default: "
                                           "serve.split.auto_promote)."),
    since: Optional[str] = typer.Option(None, "--since", help="Only requests and feedback from this UTC time on (ISO)."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", "-p", help="Params file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Compare the arms of a split (requests, p50 latency, thumbs-down rate, z-test) and promote the winner."""
    from rich.table import Table

    result = split_status(load_params(params_file), flow_dir, split, promote, since)
    if as_json:
        _print_json(result)
        return
    t = Table(title=f"split {result['split']} of {result['flow']} (index {result['index']})", title_justify="left")
    for col in ("arm", "kind", "serves", "requests", "errors", "p50 ms", "up", "down", "down rate"):
        t.add_column(col, justify="left" if col in ("arm", "kind", "serves") else "right")
    for arm, a in result["arms"].items():
        serves = ", ".join(v.rsplit("@", 1)[-1] for v in a["versions"]) or (a["alias_target"] or "-")
        t.add_row(arm, a["kind"], serves, str(a["requests"]), str(a["errors"]), _f(a["p50_ms"], "{:.1f}"),
                  str(a["up"]), str(a["down"]), _f(a["down_rate"]))
    out.print(t)
    for c in result["comparisons"]:
        head = f"{c['candidate']} vs {c['control']}: z = {_f(c['z'], '{:.2f}')}, p = {_f(c['p_value'], '{:.4f}')}, " \
               f"latency ratio {_f(c['latency_ratio'], '{:.2f}')}"
        out.print(head + (" -> beats the control" if c["beats"] else " -> no: " + "; ".join(c["reasons"])),
                  highlight=False, soft_wrap=True, markup=False)
    p = result["promotion"]
    if p is not None:
        msg = (f"promoted: {p['alias']} {p['from']} -> {p['to']}" if p["moved"]
               else f"not promoted: {p['reason']}")
        err.print(msg, highlight=False, soft_wrap=True, markup=False)


__all__ = ["SplitError", "split_status"]
