"""The ``serve:`` section of ``params.yaml``: model prices, the request log, metrics.

The runner may not import ``pipelines``, so this model lives here; ``pipelines/config.py``
includes it as ``Params.serve`` so one params file validates as a whole.

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
    """OpenTelemetry spans of served requests: ``none``, ``console`` (JSON lines on stdout of the
    server) or ``otlp`` (OTLP/HTTP to ``endpoint``; needs opentelemetry-exporter-otlp-proto-http)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exporter: Literal["none", "console", "otlp"] = "none"
    endpoint: Optional[str] = None
    service_name: str = "ragline"


class ServeConfig(BaseModel):
    """``params.yaml`` ``serve:`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: bool = True
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    request_log: RequestLogConfig = Field(default_factory=RequestLogConfig)
    traces: TracesConfig = Field(default_factory=TracesConfig)

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


__all__ = ["ModelPrice", "RequestLogConfig", "ServeConfig", "TracesConfig", "load_serve_config"]
