"""Registry safety (issue 11): references, the path guard, verification before serving, gc and
damage, one-line errors. Each test names the defect of issue 11 it pins; each failed on the main
it was written against (68c6780)."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragline.core.errors import error_line
from ragline.indexers.registry import IndexRef, IndexRegistry, InvalidReference, RegistryError
from ragline.pipelines.cli import app
from tests.conftest import write_params
from tests.publishing import segment_key, segment_path
from tests.refresh.conftest import cli, cli_json

runner = CliRunner()


def invoke(*args: str):
    """Run the CLI in-process; fail on an unhandled exception (it would be a traceback)."""
    r = runner.invoke(app, list(args))
    assert r.exception is None or isinstance(r.exception, SystemExit), f"traceback: {r.exception!r}"
    return r


def one_line_error(r) -> str:
    """The stderr of a failed command, asserted to be one line."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 1, (r.exit_code, r.stdout, r.stderr)
    assert len(" ".join(lines)) and "Traceback" not in r.stderr
    return " ".join(r.stderr.split())


# ---------------------------------------------------------------- references and the path guard
def test_index_outside_the_root_is_refused_by_every_command(three_versions: IndexRegistry, tmp_path: Path) -> None:
    """Defect 4: `--index ../elsewhere/indexes/x` was accepted by query, index list/show/gc/promote
    (promote wrote an alias file outside the root)."""
    elsewhere = tmp_path / "elsewhere" / "indexes" / "x"
    shutil.copytree("indexes/sample", elsewhere)
    before = sorted(p.relative_to(elsewhere) for p in elsewhere.rglob("*"))
    bad = "../elsewhere/indexes/x"
    for args in (("query", "bees", "--index", bad), ("index", "list", "--index", bad),
                 ("index", "show", "--index", bad), ("index", "gc", "--keep", "0", "--index", bad),
                 ("index", "promote", "v0001", "--alias", "prod", "--index", bad),
                 ("index", "rollback", "--alias", "latest", "--index", bad), ("refresh", "--index", bad)):
        msg = one_line_error(invoke(*args))
        assert "bad index name '../elsewhere/indexes/x'" in msg, (args, msg)
    assert sorted(p.relative_to(elsewhere) for p in elsewhere.rglob("*")) == before  # nothing written there


def test_alias_selector_with_a_path_is_refused(three_versions: IndexRegistry) -> None:
    """Defect 4: `--index "sample@../../../some/path"` read any path.json as an alias."""
    Path("some").mkdir()
    Path("some/path.json").write_text(json.dumps({"version": "v0001"}))
    msg = one_line_error(invoke("query", "bees", "--index", "sample@../../../some/path"))
    assert "bad alias name '../../../some/path'" in msg
    with pytest.raises(InvalidReference):
        three_versions.resolve("sample@../../../some/path")


def test_alias_file_naming_a_path_is_damage_not_a_folder_to_load(three_versions: IndexRegistry) -> None:
    """Defect 4: an alias file containing {"version": "../../outside/v9"} made query load that folder."""
    shutil.copytree("indexes/sample/v0001", "outside/v9")
    alias = Path("indexes/sample/aliases/latest.json")
    alias.write_text(json.dumps({**json.loads(alias.read_text()), "version": "../../outside/v9"}))
    msg = one_line_error(invoke("query", "bees"))
    assert "latest.json" in msg and "'../../outside/v9', which is not a version" in msg
    assert "ragline index promote VERSION --index sample --alias latest" in msg


def test_promote_with_a_path_as_alias_is_one_line(three_versions: IndexRegistry) -> None:
    """Defect 8: `promote --alias ../../x` ended in a ValueError traceback."""
    msg = one_line_error(invoke("index", "promote", "v0001", "--alias", "../../x"))
    assert "bad alias name '../../x'" in msg
    assert not list(Path(".").rglob("x.json"))


def test_overlong_and_empty_index_names_are_errors(three_versions: IndexRegistry) -> None:
    """Defects 8 and 11: a 300-character --index gave a file-name-too-long traceback; `--index ""`
    silently used the default index."""
    long = "a" * 300
    for args in (("query", "bees", "--index", long), ("index", "show", "--index", long),
                 ("ingest", "--index", long), ("refresh", "--index", long)):
        assert "longer than 100 characters" in one_line_error(invoke(*args)), args
    for args in (("query", "bees", "--index", ""), ("index", "list", "--index", ""),
                 ("index", "gc", "--keep", "1", "--index", ""), ("ingest", "--index", ""), ("refresh", "--index", "")):
        assert "is empty" in one_line_error(invoke(*args)), args


@pytest.mark.parametrize("ref", ["", "a/b", "..", "a..b", "x@", "@prod", "a@b/c", "a@v12", "a@" + "p" * 101,
                                 "-x", "a\x00b", "a@v0001/..", "a" * 101])
def test_reference_parser_rejects(ref: str) -> None:
    with pytest.raises(InvalidReference):
        IndexRef.parse(ref)


def test_reference_parser_accepts() -> None:
    assert IndexRef.parse("docs") == IndexRef("docs", "latest")
    assert IndexRef.parse("my.docs-2@prod_1") == IndexRef("my.docs-2", "prod_1")
    assert IndexRef.parse("d@v0012") == IndexRef("d", "v0012")
    assert IndexRef.parse("a" * 100).name == "a" * 100


def test_symlinked_index_folder_leading_out_of_the_root_is_refused(three_versions: IndexRegistry) -> None:
    """Path guard: a path that resolves outside index.root (through a symlink) is not opened."""
    shutil.copytree("indexes/sample", "outside/sample")
    Path("indexes/linked").symlink_to(Path("outside/sample").resolve())
    with pytest.raises(RegistryError, match="outside index.root"):
        three_versions.resolve("linked")
    assert "outside index.root" in one_line_error(invoke("query", "bees", "--index", "linked"))


# ---------------------------------------------------------------- verification before serving
def _flip(path: Path, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_the_faiss_file_refuse_to_serve(three_versions: IndexRegistry) -> None:
    """Defect 2: flipping 64 bytes inside index.faiss → query exited 0 and served the corrupted vectors."""
    _flip(segment_path("v0003", "index.faiss"))
    msg = one_line_error(invoke("query", "bees"))
    assert f"{segment_key('v0003', 'index.faiss')}: sha256 differs from the manifest" in msg.replace(" ", " ")
    assert "sample@v0003 is damaged and is not served" in msg
    assert cli_json("query", "bees", "--index", "sample@v0002")  # an intact version still serves


def test_verify_size_mode_checks_sizes_only(three_versions: IndexRegistry) -> None:
    """index.verify: size skips hashing (same-size damage passes, truncation does not)."""
    write_params(Path("."), index={"verify": "size"})
    _flip(segment_path("v0003", "index.faiss"))
    r = invoke("query", "bees", "--json")
    assert r.exit_code == 0, r.stderr  # the documented trade-off: same-size damage passes a size check
    chunks = segment_path("v0002", "chunks.parquet")
    chunks.write_bytes(chunks.read_bytes()[:-10])
    msg = one_line_error(invoke("query", "bees", "--index", "sample@v0002"))
    assert segment_key("v0002", "chunks.parquet") in msg and "bytes, the manifest says" in msg


@pytest.mark.parametrize("damage", ["delete-faiss", "truncate-faiss", "delete-chunks", "truncate-chunks"])
def test_missing_or_truncated_data_files_are_one_line(three_versions: IndexRegistry, damage: str) -> None:
    """Defect 2: a deleted or truncated index.faiss / chunks.parquet gave an OSError traceback."""
    what, kind = damage.split("-")
    path = segment_path("v0003", "index.faiss" if kind == "faiss" else "chunks.parquet")
    key = segment_key("v0003", path.name)
    if what == "delete":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    msg = one_line_error(invoke("query", "bees"))
    assert f"{key}: " in msg and "sample@v0003 is damaged" in msg and ("missing" in msg if what == "delete" else "bytes, the manifest says" in msg)


def test_show_exits_non_zero_on_a_damaged_version(three_versions: IndexRegistry) -> None:
    """Defect 2: `ragline index show` printed files_intact False and exited 0."""
    _flip(segment_path("v0002", "index.faiss"))
    r = invoke("index", "show", "sample@v0002", "--json")
    assert r.exit_code == 1
    info = json.loads(r.stdout)
    key = segment_key("v0002", "index.faiss")
    assert info["files_intact"] is False and info["damaged_files"] == [key]
    assert f"{key}: sha256 differs" in " ".join(r.stderr.split())
    assert invoke("index", "show", "v0003").exit_code == 0


@pytest.mark.parametrize(("field", "value"), [("counts", "many"), ("embedding", []), ("files", {"index.faiss": 7}),
                                             ("version", 3), ("inputs", "all")])
def test_manifest_with_wrong_field_types_is_one_line(three_versions: IndexRegistry, field: str, value) -> None:
    """Defect 8: a manifest with wrong field types gave an AttributeError in list/show/query."""
    path = Path("indexes/sample/v0003/manifest.json")
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    for args in (("index", "list"), ("index", "show"), ("query", "bees")):
        msg = one_line_error(invoke(*args))
        assert "v0003/manifest.json" in msg.replace(" ", "") or "v0003/manifest.json" in msg, args
        assert f"manifest field {field}" in msg, (args, msg)


def test_manifest_listing_a_file_outside_its_folder_is_damage(three_versions: IndexRegistry) -> None:
    """Path guard: file names in a manifest are plain names inside the version folder."""
    path = Path("indexes/sample/v0003/manifest.json")
    data = json.loads(path.read_text())
    data["files"]["../../../secret"] = data["files"]["quarantine.parquet"]
    path.write_text(json.dumps(data))
    assert "not a plain file name" in one_line_error(invoke("query", "bees"))


# ---------------------------------------------------------------- gc and damage
def test_gc_never_deletes_an_aliased_version_without_manifest(three_versions: IndexRegistry) -> None:
    """Defect 1 (data loss): with manifest.json missing from the version `latest` points at,
    `ragline index gc --keep 0` deleted the whole folder and left the alias dangling."""
    faiss_file = segment_path("v0003", "index.faiss")
    Path("indexes/sample/v0003/manifest.json").unlink()
    r = invoke("index", "gc", "--keep", "0", "--json")
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    assert Path("indexes/sample/v0003/quarantine.parquet").exists()
    assert faiss_file.exists() and report["segments_deleted"] == []  # what v0003 lists is unknown: every segment kept
    assert "v0003" not in report["deleted"] and "v0003" not in report["leftovers"]
    assert "alias latest" in report["damaged"]["v0003"]
    assert "ragline index promote VERSION --index sample --alias ALIAS" in report["damaged"]["v0003"]
    # what no alias needs is still collected: v0001 (v0002 is latest's rollback target)
    assert report["deleted"] == ["v0001"] and three_versions.versions("sample") == ["v0002"]
    text = invoke("index", "gc", "--keep", "0")
    assert text.exit_code == 1 and "damaged: sample@v0003" in " ".join(text.stderr.split())


def test_gc_keeps_an_unaliased_damaged_version_too(three_versions: IndexRegistry) -> None:
    """gc deletes only what it can prove is garbage: a damaged folder is reported, not deleted."""
    Path("indexes/sample/v0001/manifest.json").write_text("{")
    code, stdout, _ = cli("index", "gc", "--keep", "0", "--json")
    assert code == 1 and Path("indexes/sample/v0001").is_dir()
    assert "no alias" in json.loads(stdout)["damaged"]["v0001"]


# ---------------------------------------------------------------- OS errors end in one line
def test_permission_denied_while_reading_is_one_line(three_versions: IndexRegistry, monkeypatch) -> None:
    """Defect 8 (OSError tracebacks): EACCES reading a version file ends in one line naming it."""
    import ragline.indexers.retriever as retriever

    target = str(segment_path("v0003", "index.faiss").resolve())

    def denied(path, **_):
        raise PermissionError(errno.EACCES, "Permission denied", target)

    monkeypatch.setattr(retriever, "read_faiss_index", denied)
    msg = one_line_error(invoke("query", "bees"))
    assert msg.startswith("error: ") and f"{target}: Permission denied (EACCES)" in msg and "permission" in msg


def test_disk_full_during_gc_is_one_line(three_versions: IndexRegistry, monkeypatch) -> None:
    """ENOSPC anywhere reaching the CLI ends in one line naming the file and what to do."""
    import ragline.indexers.registry as registry

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "indexes/sample/aliases/.latest.json.tmp")

    monkeypatch.setattr(registry, "write_json_atomic", full)
    msg = one_line_error(invoke("index", "promote", "v0001", "--alias", "latest"))
    assert "aliases/.latest.json.tmp: No space left on device (ENOSPC); the disk is full" in msg
    assert three_versions.resolve("sample") == ("sample", "v0003")


def test_error_line_for_os_errors() -> None:
    e = OSError(errno.ENAMETOOLONG, "File name too long", "x" * 10)
    assert error_line(e) == "xxxxxxxxxx: File name too long (ENAMETOOLONG); the file name is too long: use a shorter name or path"
    assert error_line(FileNotFoundError(errno.ENOENT, "No such file or directory", "a", None, "b")).startswith("a -> b: ")


def test_refresh_refuses_to_carry_over_a_damaged_parent(three_versions: IndexRegistry, subprocess_env) -> None:
    """Defect 2: a refresh read the parent's vectors without checking them, so flipped bytes in
    index.faiss would be carried into the next version. (A subprocess: what a user sees,
    Prefect's log lines included.)"""
    _flip(segment_path("v0003", "index.faiss"))
    r = subprocess.run(["ragline", "refresh"], env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    key = segment_key("v0003", "index.faiss")
    assert len(errors) == 1 and f"{key}: sha256 differs from the manifest" in errors[0], r.stderr
    assert three_versions.versions("sample") == ["v0001", "v0002", "v0003"]
