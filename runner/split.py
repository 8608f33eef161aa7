"""A/B and canary splits between arms of a served flow, and the decision to promote a candidate.

An *arm* is a variant of the flow (``bm25``) or an alias of the index its retrieve nodes
search (``prod``, ``candidate``). ``ragline flow serve flows/qa --split prod=90,candidate=10``
serves both; a request to the flow's own model (``qa``, or ``/score`` without ``?variant=``)
goes to one arm, chosen by a stable hash of the caller's id so that a user stays on one arm:

- the id is the ``X-Ragline-User`` header, else ``X-Session-Id``, else the ``user`` field of an
  OpenAI chat request; without one the arm is drawn at random (by the weights);
- ``u = int(sha256(id)[:8]) / 2**64`` is uniform in [0, 1); the arm is the first whose
  cumulative weight share exceeds ``u`` (so ``prod=90,candidate=10`` sends ids with
  ``u < 0.9`` to prod).

The arm is recorded in the request log (``arm`` column), in feedback rows and in
``/metrics`` (``ragline_arm_requests_total{arm, status}``).

**Decision rule** (:func:`decide`). The first arm is the control, each other arm a
candidate. A candidate *beats* the control when all of these hold:

1. each arm has at least ``min_requests`` logged requests and ``min_feedback`` rated ones;
2. its thumbs-down rate is lower than the control's by a one-sided **two-proportion z-test**
   at level ``alpha``: with ``d1, n1`` thumbs-down and rated answers of the control and
   ``d2, n2`` of the candidate, ``p = (d1 + d2) / (n1 + n2)`` (pooled),
   ``z = (d1/n1 - d2/n2) / sqrt(p (1 - p) (1/n1 + 1/n2))`` and the p-value is
   ``P(Z >= z)`` for a standard normal Z (``scipy.stats.norm.sf``). Reference: NIST/SEMATECH
   e-Handbook of Statistical Methods, section 7.3.3, "How can we determine whether two
   processes produce the same proportion of defectives?"; Agresti, *Categorical Data
   Analysis* (3rd ed., 2013), section 3.1. The normal approximation wants ``n p`` and
   ``n (1 - p)`` of at least about 5 per arm, which ``min_feedback`` (default 30) helps with;
   when every rated answer of both arms is up (or every one down) the test has no evidence
   and the candidate does not beat the control;
3. its median (p50) latency is at most ``max_latency_ratio`` times the control's.

``ragline flow split-status`` prints the figures and the verdict; with
``serve.split.auto_promote: true`` (or ``--promote``) it moves the control's alias to the
version of the winning candidate alias through the promotion gate (``promote:``).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from ragline.core.serve_config import SplitConfig
from ragline.runner.errors import DataError, FlowInputError

#: Headers carrying the id a request is split by, in order of preference.
SPLIT_HEADERS = ("x-ragline-user", "x-session-id")


@dataclass(frozen=True)
class Arm:
    """One arm of a split: a variant or an index alias, and its integer weight (> 0)."""

    name: str
    weight: int


@dataclass(frozen=True)
class Split:
    """Weighted arms; the first is the control.

    Raises:
        FlowInputError: fewer than two arms, a repeated name, or a weight that is not > 0.
    """

    arms: tuple[Arm, ...]

    def __post_init__(self) -> None:
        if len(self.arms) < 2:
            raise FlowInputError("a split needs at least two arms, e.g. prod=90,candidate=10")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise FlowInputError(f"split arms repeat a name: {', '.join(names)}")
        for a in self.arms:
            if a.weight <= 0:
                raise FlowInputError(f"split arm {a.name}={a.weight}: weights must be positive integers")

    @property
    def control(self) -> str:
        """The control arm's name (the first)."""
        return self.arms[0].name

    @property
    def names(self) -> list[str]:
        """Arm names, control first."""
        return [a.name for a in self.arms]

    def to_text(self) -> str:
        """``prod=90,candidate=10``."""
        return ",".join(f"{a.name}={a.weight}" for a in self.arms)

    def choose(self, key: Optional[str], rng: Optional[random.Random] = None) -> str:
        """The arm of one request.

        Args:
            key: the user or session id (``None`` or empty: drawn at random).
            rng: random source for requests without an id (default: the ``random`` module).

        Returns:
            The arm's name; the same ``key`` always gives the same arm.
        """
        if key:
            u = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64
        else:
            u = (rng or random).random()
        total = sum(a.weight for a in self.arms)
        acc = 0
        for a in self.arms:
            acc += a.weight
            if u * total < acc:
                return a.name
        return self.arms[-1].name


def parse_split(text: str | Mapping[str, int]) -> Split:
    """``"prod=90,candidate=10"`` (or a mapping ``{prod: 90, candidate: 10}``) as a :class:`Split`.

    Raises:
        FlowInputError: malformed text, fewer than two arms, a repeated arm, a weight that is not
            a positive integer.
    """
    if isinstance(text, Mapping):
        pairs = [(str(k), v) for k, v in text.items()]
    else:
        pairs = []
        for part in [p.strip() for p in str(text).split(",") if p.strip()]:
            name, sep, w = part.partition("=")
            if not sep or not name.strip():
                raise FlowInputError(f"--split {text!r}: use ARM=WEIGHT,ARM=WEIGHT, e.g. prod=90,candidate=10")
            pairs.append((name.strip(), w.strip()))
    arms = []
    for name, w in pairs:
        try:
            weight = int(w)
        except (TypeError, ValueError) as e:
            raise FlowInputError(f"split arm {name}={w!r}: the weight must be a positive integer") from e
        arms.append(Arm(name, weight))
    return Split(tuple(arms))


def split_key(headers: Mapping[str, str], user: Any = None) -> Optional[str]:
    """The id a request is split by: ``X-Ragline-User``, else ``X-Session-Id``, else ``user``."""
    for h in SPLIT_HEADERS:
        v = headers.get(h)
        if v:
            return v
    return user if isinstance(user, str) and user else None


# ---------------------------------------------------------------- statistics


@dataclass
class ArmStats:
    """What the request log and the feedback say about one arm.

    Attributes:
        arm: arm name.
        requests: logged requests of the arm.
        errors: of which failed (HTTP status >= 400).
        p50_ms: median request latency (ms), ``None`` without requests.
        up, down: thumbs-up and thumbs-down feedback on the arm's answers.
        models: served model ids seen for the arm.
        versions: index versions the arm served (``name@version``).
    """

    arm: str
    requests: int = 0
    errors: int = 0
    p50_ms: Optional[float] = None
    up: int = 0
    down: int = 0
    models: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)

    @property
    def rated(self) -> int:
        """Answers with feedback."""
        return self.up + self.down

    @property
    def down_rate(self) -> Optional[float]:
        """Share of rated answers rated down (``None`` without feedback)."""
        return self.down / self.rated if self.rated else None

    def to_dict(self) -> dict:
        """JSON-ready dict (with ``rated`` and ``down_rate``)."""
        return {**asdict(self), "rated": self.rated, "down_rate": self.down_rate}


def _log_files(path: Path) -> list[Path]:
    rotated = sorted(path.parent.glob(f"{path.stem}.*{path.suffix}")) if path.parent.is_dir() else []
    return [*rotated, *([path] if path.is_file() else [])]


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(r[1] == column for r in conn.execute(f"PRAGMA table_info({table})"))


def arm_stats(log_path: str | Path, arms: Iterable[str], since: Optional[str] = None) -> dict[str, ArmStats]:
    """Per-arm figures from a request log (current and rotated files) and its ``feedback.sqlite``.

    Args:
        log_path: ``serve.request_log.path``.
        arms: the arms to report (each gets an entry, empty when it has no rows).
        since: ISO UTC time; only requests (and feedback) at or after it.

    Returns:
        ``{arm: ArmStats}`` in the order of ``arms``.

    Raises:
        DataError: no request log at ``log_path``.
    """
    import numpy as np

    path = Path(log_path)
    files = _log_files(path)
    if not files:
        raise DataError(f"no request log at {path} (written by `ragline flow serve`; serve.request_log.path)")
    out = {a: ArmStats(a) for a in arms}
    latency: dict[str, list[float]] = {a: [] for a in out}
    where, args = ("WHERE time >= ?", [since]) if since else ("", [])
    for f in files:
        conn = sqlite3.connect(f"file:{f}?mode=ro", uri=True)
        try:
            if not _has_column(conn, "requests", "arm"):
                continue
            rows = conn.execute(f"SELECT arm, status, latency_ms, model, indexes FROM requests {where}", args)
            for arm, status, lat, model, indexes in rows:
                s = out.get(arm)
                if s is None:
                    continue
                s.requests += 1
                s.errors += int(status >= 400)
                if lat is not None:
                    latency[arm].append(float(lat))
                if model and model not in s.models:
                    s.models.append(model)
                for i in json.loads(indexes or "[]"):
                    v = f"{i.get('name')}@{i.get('version')}"
                    if v not in s.versions:
                        s.versions.append(v)
        finally:
            conn.close()
    fb = path.with_name("feedback.sqlite")
    if fb.is_file():
        conn = sqlite3.connect(f"file:{fb}?mode=ro", uri=True)
        try:
            if _has_column(conn, "feedback", "arm"):
                for arm, rating, n in conn.execute(
                        f"SELECT arm, rating, COUNT(*) FROM feedback {where} GROUP BY arm, rating", args):
                    if arm in out:
                        setattr(out[arm], rating, getattr(out[arm], rating) + int(n))
        finally:
            conn.close()
    for a, s in out.items():
        if latency[a]:
            s.p50_ms = round(float(np.percentile(latency[a], 50)), 3)
    return out


@dataclass(frozen=True)
class Comparison:
    """A candidate arm against the control.

    Attributes:
        candidate: the candidate arm.
        control: the control arm.
        z: the two-proportion z statistic (positive: the candidate has fewer thumbs-down),
            ``None`` when it cannot be computed.
        p_value: one-sided p-value of "the candidate's thumbs-down rate is lower".
        latency_ratio: candidate p50 / control p50 (``None`` without latencies).
        beats: all three conditions hold.
        reasons: why not (empty when ``beats``).
    """

    candidate: str
    control: str
    z: Optional[float]
    p_value: Optional[float]
    latency_ratio: Optional[float]
    beats: bool
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d


def two_proportion_z(d1: int, n1: int, d2: int, n2: int) -> tuple[Optional[float], Optional[float]]:
    """One-sided pooled two-proportion z-test of ``d2/n2 < d1/n1``.

    Args:
        d1, n1: events (thumbs-down) and trials (rated answers) of the control.
        d2, n2: the same of the candidate.

    Returns:
        ``(z, p_value)`` with ``p_value = P(Z >= z)``; ``(None, None)`` when a sample is empty
        or the pooled proportion is 0 or 1 (no variance: no evidence either way).

    Source: NIST/SEMATECH e-Handbook of Statistical Methods, section 7.3.3; Agresti,
    *Categorical Data Analysis*, section 3.1.
    """
    from scipy.stats import norm

    if n1 <= 0 or n2 <= 0:
        return None, None
    p = (d1 + d2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return None, None
    z = (d1 / n1 - d2 / n2) / se
    return z, float(norm.sf(z))


def decide(control: ArmStats, candidate: ArmStats, rule: SplitConfig) -> Comparison:
    """Whether ``candidate`` beats ``control`` under ``rule`` (``serve.split``; see the module docstring)."""
    reasons = []
    for s in (control, candidate):
        if s.requests < rule.min_requests:
            reasons.append(f"{s.arm}: {s.requests} requests < min_requests {rule.min_requests}")
        if s.rated < rule.min_feedback:
            reasons.append(f"{s.arm}: {s.rated} rated answers < min_feedback {rule.min_feedback}")
    z, p = two_proportion_z(control.down, control.rated, candidate.down, candidate.rated)
    if z is None:
        reasons.append("thumbs-down rates cannot be compared (no feedback, or every answer rated alike)")
    elif p is not None and p >= rule.alpha:
        reasons.append(f"thumbs-down rate {candidate.down_rate:.3f} vs {control.down_rate:.3f}: "
                       f"p = {p:.4f} >= alpha {rule.alpha:g} (z = {z:.2f})")
    ratio = None
    if control.p50_ms and candidate.p50_ms is not None:
        ratio = candidate.p50_ms / control.p50_ms
        if ratio > rule.max_latency_ratio:
            reasons.append(f"p50 latency {candidate.p50_ms:.1f} ms is {ratio:.2f}x the control's "
                           f"{control.p50_ms:.1f} ms > max_latency_ratio {rule.max_latency_ratio:g}")
    else:
        reasons.append("no latency to compare")
    return Comparison(candidate.arm, control.arm, None if z is None else round(z, 4),
                      None if p is None else round(p, 6), None if ratio is None else round(ratio, 4),
                      not reasons, tuple(reasons))


__all__ = ["Arm", "ArmStats", "Comparison", "SPLIT_HEADERS", "Split", "arm_stats", "decide",
           "parse_split", "split_key", "two_proportion_z"]
