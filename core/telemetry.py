"""The OpenTelemetry tracer provider of a :class:`core.serve_config.TracesConfig` (opentelemetry-sdk).

Shared by served requests (:mod:`runner.tracing`) and ingest/refresh runs
(:mod:`pipelines.telemetry`); the SDK is imported only when an exporter is configured.
"""

from __future__ import annotations

from typing import Any, Optional

from ragline.core.errors import ConfigError
from ragline.core.serve_config import TracesConfig


def tracer_provider(config: TracesConfig, section: str = "serve.traces", console_stream: Any = None) -> Optional[Any]:
    """A ``TracerProvider`` for ``config``, or ``None`` for ``exporter: none``.

    Args:
        config: the exporter settings.
        section: the params key named in errors (``serve.traces``, ``telemetry.traces``).
        console_stream: where ``console`` writes (default stdout; runs of the CLI use stderr so
            that ``--json`` output stays parseable).

    Raises:
        ConfigError: ``otlp`` without an endpoint, or its exporter package is not installed.
    """
    if config.exporter == "none":
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
    if config.exporter == "console":
        exporter: Any = ConsoleSpanExporter(out=console_stream) if console_stream is not None else ConsoleSpanExporter()
    else:
        if not config.endpoint:
            raise ConfigError(f"{section}: exporter otlp needs an endpoint (e.g. http://127.0.0.1:4318/v1/traces)")
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as e:
            raise ConfigError(f"{section}.exporter otlp: install opentelemetry-exporter-otlp-proto-http") from e
        exporter = OTLPSpanExporter(endpoint=config.endpoint)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


__all__ = ["tracer_provider"]
