"""The ``serve:`` section of ``params.yaml``: model prices, the request log, metrics, traces, splits.

One model, in the bottom layer because both top layers read it: the runner (``flow serve``,
``mcp serve``, which may not import ``pipelines``) and ``pipelines/config.py``, which includes
it as ``Params.serve`` so one params file validates as a whole (and whose ``report``,
``split-status`` and run telemetry read it). :class:`TracesConfig` also describes the span
exporter of ingest and refresh runs (``telemetry.traces``).

Example::

    serve:
      metrics: true                 # GET /metrics (Prometheus text format)
      prices:                       # USD per million tokens, by model name
        gpt-4o-mini: {prompt_per_mtok: 0.15, completion_per_mtok: 0.60}
      request_log:
        enabled: true
        path: logs/requests.sqlite  # feedback.sqlite is written next to it
        capture_text: true          # false: question, answer and citations are not stored
        max_mb: 64                  # rotate past this size
        keep: 5                     # rotated files kept
      traces: {exporter: none}      # none | console | otlp (with endpoint)
      split:                        # A/B and canary (runner.split)
        arms: {}                    # e.g. {prod: 90, candidate: 10}; --split overrides
        auto_promote: false
        min_requests: 200
        min_feedback: 30
        alpha: 0.05
        max_latency_ratio: 1.1
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragline.core.errors import ConfigError


class ModelPrice(BaseModel):
    """Price of one model in USD per million tokens (prompt = input, completion = output)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_per_mtok: float = Field(default=0.0, ge=0)
    completion_per_mtok: float = Field(default=0.0, ge=0)

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Cost in USD of one call."""
        return (prompt_tokens * self.prompt_per_mtok + completion_tokens * self.completion_per_mtok) / 1e6


class RequestLogConfig(BaseModel):
    """Where and what the server records about each request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    path: str = "logs/requests.sqlite"
    capture_text: bool = True
    max_mb: float = Field(default=64.0, gt=0)
    keep: int = Field(default=5, ge=0)


class TracesConfig(BaseModel):
    """OpenTelemetry span exporter (served requests: ``serve.traces``; ingest/refresh runs:
    ``telemetry.traces``): ``none``, ``console`` (JSON on stdout) or ``otlp`` (OTLP/HTTP to
    ``endpoint``; needs opentelemetry-exporter-otlp-proto-http)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exporter: Literal["none", "console", "otlp"] = "none"
    endpoint: Optional[str] = None
    service_name: str = "ragline"


class SplitConfig(BaseModel):
    """A/B and canary splits (``ragline flow serve --split``; :mod:`runner.split` has the rule).

    Attributes:
        arms: default split when ``--split`` is not given, ``{arm: weight}``, the control
            first (empty: no split).
        auto_promote: ``ragline flow split-status`` moves the control's alias to the version of
            a candidate alias that beats it (through the promotion gate).
        min_requests: logged requests each arm needs before a decision.
        min_feedback: rated answers (thumbs up or down) each arm needs.
        alpha: level of the one-sided two-proportion z-test on thumbs-down rates.
        max_latency_ratio: the candidate's p50 latency may be at most this times the control's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    arms: dict[str, int] = Field(default_factory=dict)
    auto_promote: bool = False
    min_requests: int = Field(default=200, ge=1)
    min_feedback: int = Field(default=30, ge=1)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    max_latency_ratio: float = Field(default=1.1, gt=0)


class ServeConfig(BaseModel):
    """``params.yaml`` ``serve:`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: bool = True
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    request_log: RequestLogConfig = Field(default_factory=RequestLogConfig)
    traces: TracesConfig = Field(default_factory=TracesConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)

    def price_of(self, model: str | None) -> ModelPrice | None:
        """The price entry of ``model`` (``None`` when the table has none: cost unknown, counted as 0)."""
        return self.prices.get(model) if model else None

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "ServeConfig":
        """Validate a ``serve:`` mapping.

        Raises:
            ConfigError: an unknown key or a bad value (e.g. a negative price), naming
                ``source`` and the key path.
        """
        try:
            return cls.model_validate(data or {})
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{source}: serve.{loc}: {err['msg']} (got {err.get('input')!r})") from e


def load_serve_config(params_file: str | Path) -> ServeConfig:
    """``serve:`` of a params file; defaults when the file or the section is absent.

    Raises:
        ConfigError: the file is not YAML, or the section is invalid.
    """
    p = Path(params_file)
    if not p.is_file():
        return ServeConfig()
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    section = data.get("serve") if isinstance(data, dict) else None
    return ServeConfig.from_dict(section, source=str(p))


__all__ = ["ModelPrice", "RequestLogConfig", "ServeConfig", "SplitConfig", "TracesConfig", "load_serve_config"]
