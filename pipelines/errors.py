"""Errors raised by the pipeline stages (narrow, named, with messages that say what to do)."""

from __future__ import annotations

from ragline.core.errors import ConfigError, RaglineError


class PipelineError(RaglineError, RuntimeError):
    """Base class of pipeline failures that end a run with one clear line."""


class ParseError(PipelineError):
    """A document could not be turned into elements (names the file and the reason); the
    load stage quarantines it (:class:`pipelines.formats.FormatError` carries the reason)."""


class FailureRateExceeded(PipelineError):
    """More documents were quarantined than ``load.max_failed_fraction`` allows."""


__all__ = ["ConfigError", "PipelineError", "ParseError", "FailureRateExceeded"]
