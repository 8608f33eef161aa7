"""Progress reporting for long stages: rich progress bars on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter:
    """Hands out ``advance(n)`` callbacks for stages; this base class shows nothing."""

    @contextmanager
    def stage(self, name: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """Context for one stage of ``total`` units; yields ``advance(n)``."""
        yield lambda n=1: None


class RichReporter(Reporter):
    """One rich progress bar per stage, on stderr, only when stderr is a terminal
    (or ``force`` is set)."""

    def __init__(self, force: bool = False) -> None:
        self.console = Console(stderr=True)
        self.enabled = force or sys.stderr.isatty()

    @contextmanager
    def stage(self, name: str, total: int | None) -> Iterator[Callable[[int], None]]:
        if not self.enabled:
            yield lambda n=1: None
            return
        with Progress(
            TextColumn("[bold]{task.description:<8}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False,
        ) as progress:
            task = progress.add_task(name, total=total)
            yield lambda n=1: progress.advance(task, n)
