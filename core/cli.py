"""What both command lines (``ragline ...`` and ``ragline flow ...``) share: one-line errors
and JSON output. typer and rich are imported when a command runs, not with this module."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

from ragline.core.errors import CLI_ERRORS, error_line


def print_json(data: Any) -> None:
    """Write ``data`` to stdout as indented JSON (non-JSON values as ``str``, UTF-8 kept)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def print_error(message: object) -> None:
    """``error: MESSAGE`` on stderr (rich markup in the prefix only); an exception is given as
    :func:`ragline.core.errors.error_line` words it (one line naming the file and what to do)."""
    from rich.console import Console
    from rich.markup import escape

    text = error_line(message) if isinstance(message, BaseException) else str(message)
    Console(stderr=True).print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)


def clean_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a typer command: a :data:`ragline.core.errors.CLI_ERRORS` error (every ragline
    error and every OS error: disk full, permission denied, a name too long, a missing file)
    becomes one line on stderr (:func:`ragline.core.errors.error_line`) and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CLI_ERRORS as e:
            import typer

            print_error(e)
            raise typer.Exit(1) from None

    return wrapper


__all__ = ["print_json", "print_error", "clean_errors"]
