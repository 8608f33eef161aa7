"""Errors of the flow runner: narrow, named, with messages that name the file, line and field."""

from __future__ import annotations

from ragline.core.errors import RaglineError


class FlowError(RaglineError):
    """Base class of flow-runner failures that end a command with one clear line."""


class FlowSpecError(FlowError, ValueError):
    """A flow folder is invalid: bad YAML, unknown node type or field, bad reference, cycle,
    missing template or function, unknown variant (message: ``file:line: field: problem``)."""


class FlowInputError(FlowError, ValueError):
    """Inputs given to a flow do not match its declared inputs (names the input)."""


class NodeError(FlowError, RuntimeError):
    """A node failed while running.

    Attributes:
        node: the node's name.
        trace: per-node trace records up to and including the failed node.
    """

    def __init__(self, message: str, node: str, trace: list | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.trace = list(trace or [])


class ProviderError(FlowError, RuntimeError):
    """A model provider failed (HTTP error, timeout after retries, malformed response).

    Attributes:
        status: HTTP status code when the endpoint answered, else ``None``.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DataError(FlowError, ValueError):
    """A batch data or labels file is unusable as a whole (missing, empty); names the file."""
