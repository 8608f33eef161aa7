"""The README is executed (issue 10, item 2): every ```bash block runs, in order, in one scratch
workspace, and must exit 0 without printing a traceback.

A block preceded by ``<!-- readme-test: skip ... -->`` (on the line before its fence) is not
run: syntax summaries with placeholders, make targets that rebuild the venv, benchmarks, a
schedule that needs a long-running Prefect server, restoring from git history. New blocks are
picked up automatically: mark a block skip only when it cannot run on the sample corpus.

The scratch workspace is a copy of the files the commands read (params.yaml, dvc.yaml, .dvc,
data/, flows/, grids/, the code folders dvc.yaml lists as dependencies), with the project venv
linked as ``.venv`` and ``../shared`` linked to the shared folder, committed to a fresh git
repository (DVC experiments need one). Its params.yaml limits the chunking evaluation to a slice
(``eval.corpora: [chatlogs]``, ``eval.limit_questions: 10``) so the eval and experiment commands
take seconds; everything else is the repository's params.yaml (the real embedding model).

How a block runs: as one ``bash -e -o pipefail`` script (so ``. .venv/bin/activate`` and
``export`` carry over between its lines). A command that serves (``ragline flow serve``,
``ragline serve``) is started in the background and waited for (``/healthz``); it is stopped
when the block ends. Port 8080 is replaced by a free loopback port, and ``curl`` gets
``--fail-with-body`` so an HTTP error status fails the block.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow

SKIP_RE = re.compile(r"<!--\s*readme-test:\s*skip\b[^>]*-->")
FENCE_RE = re.compile(r"^```(\w+)?\s*$")
SERVE_RE = re.compile(r"\bragline\s+(flow\s+)?serve\b")
#: What the scratch workspace copies from the repository.
COPY = ("params.yaml", "dvc.yaml", ".dvcignore", ".gitignore", "pyproject.toml", "data", "flows", "grids", "chunkers",
        "indexers", "pipelines", "runner", "core", "evaluation", "ragline", "tests/evaluation/data", ".dvc/config")
BLOCK_TIMEOUT_S = 900


@dataclass(frozen=True)
class Block:
    """One fenced ```bash block of the README."""

    line: int  # 1-based line of its opening fence
    text: str
    skip: bool


def readme_blocks(text: str) -> list[Block]:
    """The ```bash blocks of a Markdown text, each marked skip when the line before its fence
    (blank lines aside) is a ``<!-- readme-test: skip -->`` comment."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        if m and m.group(1):
            lang, start = m.group(1), i
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if lang in ("bash", "sh", "shell", "console"):
                prev = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
                blocks.append(Block(start + 1, "\n".join(body), bool(SKIP_RE.search(prev))))
        i += 1
    return blocks


def test_block_parser_reads_fences_and_skip_marks() -> None:
    md = ("intro\n```bash\necho one\n```\n\n<!-- readme-test: skip (needs a server) -->\n\n```bash\necho two\n```\n"
          "```yaml\na: 1\n```\n```\nplain\n```\n")
    assert readme_blocks(md) == [Block(2, "echo one", False), Block(8, "echo two", True)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script_for(block: Block, port: int) -> str:
    """The bash script that runs ``block``: servers in the background, a free port, curl failing on HTTP errors."""
    out = ["set -e -o pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    text = block.text.replace("8080", str(port))
    text = re.sub(r"(^|[;&|]\s*|\$\(\s*)curl\b", r"\1curl --fail-with-body", text, flags=re.M)
    for line in text.splitlines():
        if SERVE_RE.search(line) and not line.lstrip().startswith("#"):
            out.append(f"{line} &")
            out.append(f"for i in $(seq 1 240); do curl -s -o /dev/null 127.0.0.1:{port}/healthz && break; "
                       "kill -0 $! 2>/dev/null || { echo 'server exited' >&2; exit 1; }; sleep 0.5; done")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("readme")
    ws = base / "ws"
    ws.mkdir()
    for name in COPY:
        src = REPO / name
        if not src.exists():
            continue
        dst = ws / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(src, dst)
    (ws / ".venv").symlink_to(Path(sys.executable).parent.parent)
    shared = (REPO / ".." / "shared").resolve()
    if shared.exists():
        (base / "shared").symlink_to(shared)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["eval"]["corpora"] = ["chatlogs"]
    params["eval"]["limit_questions"] = 10
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = _env(ws)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "scratch copy for the README test"]):
        subprocess.run(cmd, cwd=ws, env=env, check=True, capture_output=True, timeout=120)
    (ws / ".git" / "info" / "exclude").write_text(".venv\n")
    return ws


def _env(ws: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PYTEST_"))}
    env.update({"PATH": f"{ws / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "100",
                "GIT_AUTHOR_NAME": "readme-test", "GIT_AUTHOR_EMAIL": "readme-test@localhost",
                "GIT_COMMITTER_NAME": "readme-test", "GIT_COMMITTER_EMAIL": "readme-test@localhost",
                "DVC_NO_ANALYTICS": "1"})
    return env


BLOCKS = readme_blocks((REPO / "README.md").read_text(encoding="utf-8"))


def test_readme_has_runnable_blocks() -> None:
    assert sum(not b.skip for b in BLOCKS) >= 8


@pytest.mark.parametrize("block", [b for b in BLOCKS if not b.skip], ids=lambda b: f"README.md:{b.line}")
def test_readme_block_runs(block: Block, scratch: Path) -> None:
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", "-c", script_for(block, _free_port())], cwd=scratch, env=_env(scratch),
                          capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S, stdin=subprocess.DEVNULL)
    output = proc.stdout + proc.stderr
    where = f"README.md:{block.line} ({time.perf_counter() - t0:.0f} s)\n{block.text}\n--- output ---\n{output[-6000:]}"
    assert proc.returncode == 0, f"exit {proc.returncode}: {where}"
    assert "Traceback (most recent call last)" not in output, where
