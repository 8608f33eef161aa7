"""Stage load against hostile input: sources that point out of their root or never end, files
that hang, crash or exhaust their parser, and reasons that say what happened (issue 11)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragline.pipelines.config import LoadConfig, Params
from ragline.pipelines.load import (
    FAULT_ENV,
    Document,
    QuarantineRecord,
    SourceFile,
    discover_files,
    load_document,
    load_documents,
)
from tests.badfiles import make_hostile_pdfs, make_image_only_pdf, make_special_files, make_zip_bomb_docx
from tests.conftest import write_params

CFG = LoadConfig(workers=1)
GOOD = "# Drones\n\nDrones are the male bees of the colony; they do not sting.\n"


def _load(path: Path, cfg: LoadConfig = CFG) -> Document | QuarantineRecord:
    return load_document(SourceFile(path, path.as_posix()), cfg)


def _reasons(files: list[SourceFile]) -> dict[str, str]:
    return {Path(f.uri).name: f.skip_type for f in files}


# ---------------------------------------------------------------- sources (defects 3 and 6)
def test_symlink_out_of_the_source_root_is_not_read(tmp_path: Path) -> None:
    """Defect 3: `ln -s /etc/passwd docs/p.txt; ragline ingest docs` indexed /etc/passwd."""
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "good.md").write_text(GOOD)
    (tmp_path / "outside.md").write_text("# Secret\n\nroot:x:0:0:root:/root:/bin/bash\n")
    os.symlink("/etc/passwd", docs / "p.txt")
    os.symlink(tmp_path / "outside.md", docs / "sub" / "o.md")
    os.symlink(tmp_path, docs / "up")  # a folder out of the root
    os.symlink(docs / "good.md", docs / "inside.md")  # stays inside: followed
    files = discover_files([docs])
    assert _reasons(files) == {"good.md": "", "inside.md": "", "o.md": "SymlinkOutsideRoot",
                               "p.txt": "SymlinkOutsideRoot", "up": "SymlinkOutsideRoot"}
    loaded, bad = load_documents(files, CFG)
    assert sorted(Path(d.uri).name for d in loaded) == ["good.md", "inside.md"]
    assert {Path(q.path).name: q.error_type for q in bad} == {n: "SymlinkOutsideRoot" for n in ("o.md", "p.txt", "up")}
    assert all(q.sha256 == "" for q in bad)  # never opened
    assert "/etc/passwd" in next(q.message for q in bad if q.path.endswith("p.txt"))
    # the other two policies
    always = discover_files([docs], follow_symlinks="always")
    assert {"p.txt", "sub/o.md", "up/outside.md"} <= {Path(f.uri).relative_to(docs).as_posix() for f in always if not f.skip_type}
    never = discover_files([docs], follow_symlinks="never")
    assert _reasons(never) == {"good.md": "", "inside.md": "SymlinkNotFollowed", "o.md": "SymlinkNotFollowed",
                               "p.txt": "SymlinkNotFollowed", "up": "SymlinkNotFollowed"}


def test_follow_symlinks_param_is_validated() -> None:
    data = Params().to_dict()
    data["load"]["follow_symlinks"] = "sometimes"
    from ragline.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"load\.follow_symlinks.*sometimes"):
        Params.from_dict(data, source="params.yaml")


def test_symlink_loops_end(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "a").mkdir(parents=True)
    (docs / "a" / "note.md").write_text(GOOD)
    os.symlink("..", docs / "a" / "back")  # a cycle through a folder
    os.symlink("self.md", docs / "self.md")  # a link to itself
    os.symlink("pong.md", docs / "ping.md")
    os.symlink("ping.md", docs / "pong.md")
    files = discover_files([docs])
    assert _reasons(files) == {"back": "SymlinkLoop", "note.md": "", "self.md": "SymlinkLoop",
                               "ping.md": "SymlinkLoop", "pong.md": "SymlinkLoop"}


@pytest.mark.timeout(120)
def test_fifo_and_dev_zero_link_never_block_ingest_or_refresh(tmp_path: Path) -> None:
    """Defect 6: a FIFO or a symlink to /dev/zero in a source folder made `ragline refresh`
    block forever holding the index lock (it hashed them), and ingest called them EmptyFile."""
    from ragline.indexers.registry import IndexRegistry
    from ragline.pipelines.refresh import plan_refresh

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text(GOOD)
    names = make_special_files(docs)  # pipe.txt (FIFO), zero.txt -> /dev/zero, socket.md
    data = Params().to_dict()
    data["load"]["sources"] = [str(docs)]
    data["index"]["root"] = str(tmp_path / "indexes")
    data["load"]["follow_symlinks"] = "always"  # even followed, a device is never opened
    for policy in ("within_root", "always"):
        data["load"]["follow_symlinks"] = policy
        params = Params.from_dict(data)
        t0 = time.monotonic()
        plan = plan_refresh(params, IndexRegistry(str(tmp_path / "indexes")))
        assert time.monotonic() - t0 < 30
        assert {Path(f.uri).name: f.sha256 for f in plan.files if f.sha256 == ""} == {n: "" for n in names}
    loaded, bad = load_documents([f.source for f in plan.files], params.load)
    assert [Path(d.uri).name for d in loaded] == ["good.md"]
    kinds = {Path(q.path).name: (q.error_type, q.message) for q in bad}
    assert {n: t for n, (t, _) in kinds.items()} == {n: "NotARegularFile" for n in names}
    assert "FIFO" in kinds["pipe.txt"][1] and "character device" in kinds["zero.txt"][1]


def test_load_document_opens_only_regular_files(tmp_path: Path) -> None:
    """Even without discovery (a SourceFile built by hand), a FIFO is refused, not read."""
    os.mkfifo(tmp_path / "pipe.md")
    r = _load(tmp_path / "pipe.md")
    assert isinstance(r, QuarantineRecord) and r.error_type == "NotARegularFile"


@pytest.mark.slow
def test_cli_ingest_and_refresh_skip_hostile_sources(workspace: Path, prefect_harness) -> None:
    """Defects 3 and 6 through the CLI: `ragline ingest docs` does not index /etc/passwd and
    `ragline refresh docs` returns with a FIFO and a /dev/zero link in the folder."""
    from ragline.indexers.registry import IndexRegistry
    from ragline.pipelines.cli import app

    docs = workspace / "docs"
    docs.mkdir()
    (docs / "good.md").write_text(GOOD)
    os.symlink("/etc/passwd", docs / "p.txt")
    make_special_files(docs)
    write_params(workspace, load={"max_failed_fraction": 1.0})  # 4 of the 5 files are hostile
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", "docs", "--json", "--index", "hostile"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["documents"] == 1
    import pyarrow.parquet as pq

    folder = Path("indexes/hostile") / IndexRegistry("indexes").aliases("hostile")["latest"]
    texts = " ".join(IndexRegistry("indexes").live_table("hostile", folder.name, "chunks").column("text").to_pylist())
    assert "root:" not in texts and "Drones are the male bees" in texts
    q = {Path(r["path"]).name: r["error_type"] for r in pq.read_table(folder / "quarantine.parquet").to_pylist()}
    assert q == {"p.txt": "SymlinkOutsideRoot", "pipe.txt": "NotARegularFile", "zero.txt": "SymlinkOutsideRoot",
                 "socket.md": "NotARegularFile"}
    result = runner.invoke(app, ["refresh", "docs", "--json", "--index", "hostile"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- limits per file (defect 7)
def test_zip_bomb_docx_is_refused_before_parsing(tmp_path: Path) -> None:
    """Defect 7: a 1 MB zip-bomb .docx (1 GiB document.xml) took 2.4 GB RSS for 23 s."""
    path = make_zip_bomb_docx(tmp_path / "bomb.docx", uncompressed_mb=1024)
    assert path.stat().st_size < 4 * 1048576
    t0 = time.monotonic()
    r = _load(path)
    assert time.monotonic() - t0 < 5
    assert isinstance(r, QuarantineRecord) and r.error_type == "ZipBomb", r
    assert "load.max_unzipped_mb=500" in r.message and "word/document.xml" in r.message
    # under the size limit, the compression ratio still gives it away
    small = make_zip_bomb_docx(tmp_path / "ratio.docx", uncompressed_mb=64)
    r = _load(small)
    assert isinstance(r, QuarantineRecord) and r.error_type == "ZipBomb" and "load.max_zip_ratio=200" in r.message


def test_a_dying_hanging_or_bloating_worker_takes_only_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 7: there was no per-file time or memory limit, and a worker that died took the
    process pool, and so the run, down. Faults are injected in the middle of a batch."""
    names = [f"doc{i}.md" for i in range(8)]
    for n in names:
        (tmp_path / n).write_text(GOOD.replace("Drones", n))
    monkeypatch.setenv(FAULT_ENV, "exit:doc1.md,killserver:doc2.md,alloc:doc3.md,sleep:doc4.md,kill:doc6.md")
    cfg = LoadConfig(workers=2, timeout_s=12, max_worker_mb=256, max_tasks_per_child=2)
    stats = []
    docs, bad = load_documents(discover_files([tmp_path]), cfg, observe=stats.append)
    reasons = {Path(q.path).name: q.error_type for q in bad}
    # doc2.md killed the fork server: the pool broke (BrokenProcessPool) and what was left
    # went to a new pool; doc2.md itself is either lost with its worker or parsed again there
    assert (tmp_path / ".doc2.md.killed").exists()
    assert reasons.pop("doc2.md", "WorkerCrashed") == "WorkerCrashed"
    assert [Path(d.uri).name for d in docs if d.uri.endswith("doc2.md")] == (["doc2.md"] if len(bad) == 4 else [])
    assert [Path(d.uri).name for d in docs if not d.uri.endswith("doc2.md")] == ["doc0.md", "doc5.md", "doc7.md"]
    assert reasons == {"doc1.md": "WorkerCrashed", "doc3.md": "MemoryLimit", "doc4.md": "Timeout",
                       "doc6.md": "MemoryLimit"}
    assert "load.timeout_s=12" in next(q.message for q in bad if q.path.endswith("doc4.md"))
    by_uri = {Path(s.uri).name: s for s in stats}
    assert len(by_uri) == 8 and by_uri["doc4.md"].outcome == "Timeout"
    assert by_uri["doc0.md"].peak_rss_mb and by_uri["doc0.md"].peak_rss_mb < 1536


# ---------------------------------------------------------------- reasons (defect 9)
@pytest.mark.parametrize("name, reason, words", [
    ("encrypted.pdf", "EncryptedPDF", "password"),
    ("truncated.pdf", "CorruptPDF", "truncated"),
    ("page.pdf", "NotAPDF", "HTML"),
    ("image-only.pdf", "NoTextLayer", "OCR"),
])
def test_pdf_reasons_say_what_happened(tmp_path: Path, name: str, reason: str, words: str) -> None:
    """Defect 9: encrypted, truncated and HTML-disguised PDFs were all "NoElements"."""
    if name == "image-only.pdf":
        make_image_only_pdf(tmp_path / name)
    else:
        make_hostile_pdfs(tmp_path)
    r = _load(tmp_path / name)
    assert isinstance(r, QuarantineRecord), r
    assert r.error_type == reason and words in r.message and name in r.message


@pytest.mark.parametrize("offset", [100, 20_000])
def test_nul_rule_is_the_same_at_any_offset(tmp_path: Path, offset: int) -> None:
    """Defect 9: NULs after the first 8 KiB were silently stripped while NULs before it
    quarantined the file. One rule now: a NUL byte anywhere quarantines a text file."""
    text = ("Bees forage for nectar and pollen. " * 1000).encode()
    path = tmp_path / "nul.txt"
    path.write_bytes(text[:offset] + b"\x00" + text[offset:])
    r = _load(path)
    assert isinstance(r, QuarantineRecord) and r.error_type == "BinaryContent"
    assert f"offset {offset}" in r.message
    path.write_bytes(text)
    assert isinstance(_load(path), Document)


def test_large_one_line_text_is_one_element_holding_the_text(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    line = "bee hive queen drone worker nectar pollen " * 30_000  # 1.26 MB, one line
    path.write_text(line + "\n\nsecond paragraph\n")
    doc = _load(path)
    assert isinstance(doc, Document)
    assert [e.type for e in doc.elements] == ["NarrativeText", "NarrativeText"]
    assert doc.text == line.strip() + "\n\nsecond paragraph"


@pytest.mark.slow  # 25 pools
def test_pools_that_stop_while_a_worker_starts_stay_quiet(tmp_path: Path) -> None:
    """A worker still starting when its pool stops used to print a FileNotFoundError traceback
    (pebble unlinks the channel's semaphores before it stops the workers): with two workers and
    two small files, one worker often parses both while the other is still starting."""
    import subprocess
    import sys

    for name in ("a.md", "b.md"):
        (tmp_path / name).write_text(GOOD)
    script = (
        "from ragline.pipelines.config import LoadConfig\n"
        "from ragline.pipelines.load import discover_files, load_documents\n"
        f"files = discover_files([{str(tmp_path)!r}])\n"
        "for _ in range(25):\n"
        "    docs, bad = load_documents(files, LoadConfig(workers=2))\n"
        "    assert len(docs) == 2 and not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
