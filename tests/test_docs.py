"""Every CLI command is documented in the README and has help text (sqlite-utils' habit)."""

from __future__ import annotations

from typing import Any

import typer

from ragline.pipelines.cli import app
from tests.conftest import REPO


def _commands(cmd: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if getattr(cmd, "commands", None):
        out = []
        for name, sub in cmd.commands.items():
            out += _commands(sub, prefix + (name,))
        return out
    return [(prefix, cmd)]


def test_every_command_is_in_the_readme_with_help() -> None:
    readme = REPO.joinpath("README.md").read_text()
    commands = _commands(typer.main.get_command(app))
    assert len(commands) >= 15
    undocumented = [" ".join(p) for p, _ in commands if f"ragline {' '.join(p)}" not in readme]
    assert undocumented == []
    no_help = [" ".join(p) for p, c in commands if not (c.help or "").strip()]
    assert no_help == []
