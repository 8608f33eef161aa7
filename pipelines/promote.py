"""Moving aliases through the promotion gate (``promote:`` params).

A gated alias (``promote.gated_aliases``, e.g. ``prod``) moves to a version only when the
version passes the gate: with ``promote.gate: doc_recall``, document recall@k
(:func:`pipelines.evaluate.doc_recall_at_k`) on ``promote.questions``, retrieved the way the
alias will serve (the ``retrieval:`` section: mode, fusion, weights, k), must be at least
``promote.min_doc_recall``. A failing gate leaves the alias where it was and raises
:class:`PromotionRefused` saying why. The evaluation is recorded with the alias move.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ragline.pipelines.embed import index_embedder, with_embed_backend
from ragline.indexers.registry import AliasMove, IndexRegistry
from ragline.indexers.retrieval import RetrievalConfig
from ragline.indexers.retriever import Retriever
from ragline.pipelines.config import Params
from ragline.pipelines.errors import PipelineError
from ragline.pipelines.evaluate import doc_recall_at_k, load_questions


class PromotionRefused(PipelineError):
    """The promotion gate failed; the alias did not move (the message says why)."""


@dataclass(frozen=True)
class GateResult:
    """The promotion gate's verdict on one version for one alias.

    Attributes:
        index: index name.
        version: the version evaluated.
        alias: the alias asked for.
        gated: whether a gate applies to this alias.
        passed: the alias may move.
        metric: e.g. ``doc_recall@5`` (``None`` when not gated).
        value: the measured value (``None`` when not gated).
        threshold: the required minimum (``None`` when not gated).
        questions: the question file used.
        n_questions: questions asked.
        misses: questions whose document was not retrieved (at most 10).
        reason: one line for humans.
    """

    index: str
    version: str
    alias: str
    gated: bool
    passed: bool
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None
    questions: str | None = None
    n_questions: int = 0
    misses: tuple[str, ...] = ()
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["misses"] = list(self.misses)
        return d


def evaluate_gate(registry: IndexRegistry, params: Params, name: str, version: str, alias: str) -> GateResult:
    """Run the promotion gate of ``params.promote`` for moving ``alias`` to ``name@version``.

    The version is searched by the one retriever, as ``params.retrieval`` says (the mode
    the alias will serve), with the embedder its manifest records (``embed.model``).

    Raises:
        RegistryError, CorruptRegistryError: unknown or damaged version.
        QuestionsError: the question file is missing or malformed.
        IndexCompatibilityError: the embedder in use does not match the version.
    """
    cfg = params.promote
    if cfg.gate == "none" or alias not in cfg.gated_aliases:
        why = "promote.gate is none" if cfg.gate == "none" else f"alias {alias!r} is not in promote.gated_aliases"
        return GateResult(name, version, alias, gated=False, passed=True, reason=f"no gate ({why})")
    questions = load_questions(cfg.questions)
    m = registry.manifest(name, version)
    embedder = index_embedder(with_embed_backend(params, manifest=m),  # auto: the version's own backend
                              m.params.get("embed", {}).get("model"), bool(m.embedding["normalize"]))
    retriever = Retriever.open(registry, f"{name}@{version}", embedder=embedder)
    result = doc_recall_at_k(retriever, questions, params.retrieval)
    passed = result.recall >= cfg.min_doc_recall
    metric = f"doc_recall@{result.k}"
    verdict = ">=" if passed else "<"
    reason = (f"{metric} = {result.recall:.3f} {verdict} promote.min_doc_recall = {cfg.min_doc_recall:g} "
              f"on {cfg.questions} ({result.hits}/{result.n_questions} questions, {_mode(params.retrieval)})")
    return GateResult(name, version, alias, True, passed, metric, round(result.recall, 6), cfg.min_doc_recall,
                      cfg.questions, result.n_questions, result.misses[:10], reason)


def _mode(cfg: RetrievalConfig) -> str:
    return cfg.mode if cfg.mode != "hybrid" else f"hybrid {cfg.fusion}"


def promote(
    registry: IndexRegistry, params: Params, name: str, version: str, alias: str, force: bool = False
) -> tuple[AliasMove, GateResult]:
    """Move ``alias`` of ``name`` to ``version`` if the promotion gate allows it.

    Args:
        registry: the registry.
        params: validated params (``promote:`` is used).
        name: index name.
        version: target version (``vNNNN``) or another alias to copy.
        alias: the alias to move.
        force: skip the gate (recorded in the alias history as ``forced``).

    Returns:
        ``(move, gate)``.

    Raises:
        PromotionRefused: the gate failed; the alias was not moved.
        RegistryError, CorruptRegistryError, QuestionsError, IndexCompatibilityError: see
            :func:`evaluate_gate`.
    """
    version = registry.resolve(f"{name}@{version}")[1]
    if force:
        gate = GateResult(name, version, alias, gated=False, passed=True, reason="gate skipped (--force)")
    else:
        gate = evaluate_gate(registry, params, name, version, alias)
    if not gate.passed:
        current = registry.aliases(name).get(alias)
        raise PromotionRefused(
            f"promotion gate failed for {name}@{version} -> {alias}: {gate.reason}; "
            f"{alias} stays at {current or '(unset)'}"
        )
    move = registry.set_alias(name, alias, version, meta={"action": "promote", "gate": gate.to_dict(),
                                                           "forced": force})
    return move, gate
