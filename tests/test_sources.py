"""Sources beyond local folders (issue 13, item 1): S3 through fsspec against a real moto
server on loopback, and HTTP sitemaps / URL lists against a local HTTP server."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragline.indexers.registry import IndexRegistry
from ragline.pipelines.cli import app
from ragline.pipelines.config import LoadConfig, Params, load_params
from ragline.pipelines.load import load_document, load_documents
from ragline.pipelines.sources import (
    FsspecSource,
    HttpSource,
    SourceUnavailable,
    discover,
    read_entry,
)
from ragline.pipelines.refresh import plan_refresh
from tests.conftest import SAMPLE
from tests.servers import MOTO_ENV, http_server, moto_server

runner = CliRunner()


@pytest.fixture(scope="module")
def moto_endpoint():
    with moto_server() as url:
        yield url


@pytest.fixture()
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """An s3fs file system on the moto server with a fresh bucket holding the sample corpus
    under ``docs/``; yields ``(fs, bucket)``."""
    import uuid

    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    for k, v in MOTO_ENV.items():
        monkeypatch.setenv(k, v)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    bucket = f"b{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    fs.put(str(SAMPLE) + "/", f"{bucket}/docs/", recursive=True)
    return fs, bucket


def _cli(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _documents(name: str, version: str) -> dict[str, dict]:
    reg = IndexRegistry("indexes")
    rows = reg.live_table(name, version, "documents").to_pylist()  # the version's live documents, over its segments
    return {r["uri"]: r for r in rows}


def test_s3_ingest_refresh_propagates_changes_and_deletions(workspace: Path, prefect_harness, s3,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    fs, bucket = s3
    url = f"s3://{bucket}/docs"
    fs.pipe(f"{bucket}/docs/broken.txt", b"text \x00\x01 with a NUL")  # quarantined (BinaryContent)
    r = _cli("ingest", url, "--index", "s3docs", "--json")
    assert r.exit_code == 0, r.output
    assert [(q["path"], q["error_type"]) for q in json.loads(r.output)["quarantine"]] == [
        (f"{url}/broken.txt", "BinaryContent")]
    reg = IndexRegistry("indexes")
    m = reg.manifest("s3docs", "v0001")
    assert m.sources == [url]
    # every sample file parsed from downloaded bytes (PDF, DOCX, PPTX, e-mail included), same text as from disk
    local_docs, local_bad = load_documents(discover([str(SAMPLE)], LoadConfig(workers=1)), LoadConfig(workers=1))
    assert local_bad == []
    docs = _documents("s3docs", "v0001")
    assert {u.rsplit("/", 1)[1]: d["text"] for u, d in docs.items()} == {Path(d.uri).name: d.text for d in local_docs}
    assert {u.rsplit("/", 1)[1]: d["sha256"] for u, d in docs.items()} == {Path(d.uri).name: d.sha256 for d in local_docs}
    listing = fs.find(f"{bucket}/docs", detail=True)
    for rec in m.inputs:  # (broken.txt is quarantined, not an input)  # the listing's ETag and size are recorded beside the content hash
        info = listing[rec["uri"].removeprefix("s3://")]
        assert rec["etag"] == info["ETag"].strip('"') and rec["size"] == info["size"]

    # nothing changed: the plan is decided from the listing alone (a download would raise)
    def no_download(*a, **k):
        raise AssertionError("downloaded during planning")

    params = load_params("params.yaml").to_dict()
    params["index"]["name"], params["load"]["sources"] = "s3docs", [url]
    with monkeypatch.context() as mp:
        mp.setattr(FsspecSource, "read", no_download)
        plan = plan_refresh(Params.from_dict(params), reg)
    assert plan.nothing_to_do and len(plan.diff.unchanged) == 12
    assert plan.diff.still_quarantined == (f"{url}/broken.txt",)  # unchanged listing: not retried

    # one change, one deletion, one addition in the bucket
    fs.pipe(f"{bucket}/docs/swarming.md", b"# Swarming\n\nBees leave the hive with the old queen in late spring.\n")
    fs.rm(f"{bucket}/docs/wintering.html")
    fs.pipe(f"{bucket}/docs/new/feeding.txt", b"Feed sugar syrup in autumn when stores are low.\n")
    r = _cli("refresh", "--index", "s3docs", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["added"] == [f"{url}/new/feeding.txt"]
    assert out["changed"] == [f"{url}/swarming.md"]
    assert out["removed"] == [f"{url}/wintering.html"]
    assert out["counts"]["unchanged"] == 10
    v2 = _documents("s3docs", out["version"])
    assert f"{url}/wintering.html" not in v2
    assert "old queen" in v2[f"{url}/swarming.md"]["text"]
    assert "sugar syrup" in v2[f"{url}/new/feeding.txt"]["text"]
    # the deleted document's chunks are gone from the published chunk table too
    chunks = reg.live_table("s3docs", out["version"], "chunks", ["doc_id"]).column("doc_id").to_pylist()
    assert docs[f"{url}/wintering.html"]["doc_id"] not in chunks


def test_version_ids_are_recorded_and_read_back_exactly(s3, tmp_path: Path) -> None:
    import boto3

    fs, bucket = s3
    boto3.client("s3").put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    fs.pipe(f"{bucket}/v/note.txt", b"first words about bees\n")
    cfg = LoadConfig(workers=1, storage_options={"s3": {"version_aware": True}})
    [entry] = discover([f"s3://{bucket}/v"], cfg)
    assert entry.version_id and entry.etag and entry.size == 23
    fs.pipe(f"{bucket}/v/note.txt", b"second words about wasps\n")  # a newer version
    doc = load_document(entry, cfg)  # the listed version, not the newest
    assert "first words" in doc.text
    assert doc.metadata["source_version_id"] == entry.version_id
    [newer] = discover([f"s3://{bucket}/v"], cfg)
    assert newer.version_id != entry.version_id and "second words" in load_document(newer, cfg).text


def test_bad_s3_sources_fail_in_one_line_without_credentials(s3, moto_endpoint: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "SuperSecret-9f8e7d6c"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    cfg = LoadConfig(storage_options={"s3": {"secret": secret, "key": "test"}})
    with pytest.raises(SourceUnavailable) as e:
        discover(["s3://no-such-bucket-here/docs"], cfg)
    msg = str(e.value)
    assert msg.startswith("s3://no-such-bucket-here/docs: ") and "\n" not in msg and secret not in msg
    assert "does not exist" in msg
    # unreachable endpoint (nothing listens on the port): fails, names the URL, no secret
    from tests.servers import free_port

    dead = {"s3": {"secret": secret, "key": "test", "endpoint_url": f"http://127.0.0.1:{free_port()}",
                   "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}}
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailable) as e:
        discover(["s3://anything/docs"], LoadConfig(storage_options=dead))
    assert time.monotonic() - t0 < 60
    msg = str(e.value)
    assert msg.startswith("s3://anything/docs: cannot list the source") and secret not in msg and "\n" not in msg


def test_cli_ingest_of_a_missing_bucket_starts_nothing(workspace: Path, s3) -> None:
    r = runner.invoke(app, ["ingest", "s3://no-such-bucket-here/docs"])
    assert r.exit_code == 1
    assert "s3://no-such-bucket-here/docs: cannot list the source" in r.output
    assert not Path("indexes").exists()


def test_one_object_too_large_is_quarantined_and_the_run_goes_on(s3) -> None:
    fs, bucket = s3
    fs.pipe(f"{bucket}/big/huge.txt", b"bees " * 300_000)  # 1.5 MB
    fs.pipe(f"{bucket}/big/small.txt", b"a small note on bees\n")
    cfg = LoadConfig(workers=1, max_file_mb=1)
    docs, bad = load_documents(discover([f"s3://{bucket}/big"], cfg), cfg)
    assert [d.uri for d in docs] == [f"s3://{bucket}/big/small.txt"]
    assert [(q.path, q.error_type) for q in bad] == [(f"s3://{bucket}/big/huge.txt", "FileTooLarge")]
    assert "not downloaded" in bad[0].message and bad[0].sha256.startswith("listing:etag=")


# ---------------------------------------------------------------- HTTP
def _site(root: Path, base: str, pages: list[str]) -> None:
    urls = "".join(f"<url><loc>{base}/{p}</loc></url>" for p in pages)
    (root / "sitemap.xml").write_text('<?xml version="1.0" encoding="UTF-8"?>\n'
                                      f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>')


@pytest.fixture()
def site(tmp_path: Path):
    root = tmp_path / "site"
    root.mkdir()
    for name in ("colony-roles.html", "wintering.html", "swarming.md", "protective-equipment.txt"):
        shutil.copy(SAMPLE / name, root / name)
    with http_server(root) as server:
        _site(root, server.url, ["colony-roles.html", "wintering.html", "swarming.md", "protective-equipment.txt"])
        yield root, server


def test_http_sitemap_ingest_refresh_uses_conditional_requests(workspace: Path, prefect_harness, site) -> None:
    root, server = site
    url = f"{server.url}/sitemap.xml"
    r = _cli("ingest", url, "--index", "web", "--json")
    assert r.exit_code == 0, r.output
    docs = _documents("web", "v0001")
    assert sorted(docs) == sorted(f"{server.url}/{n}" for n in
                                  ("colony-roles.html", "wintering.html", "swarming.md", "protective-equipment.txt"))
    assert docs[f"{server.url}/colony-roles.html"]["mime_type"] == "text/html"
    inputs = {i["uri"]: i for i in IndexRegistry("indexes").manifest("web", "v0001").inputs}
    assert all(i["last_modified"] for i in inputs.values())  # the Last-Modified header, for the next refresh

    # change one page (newer mtime: the server's Last-Modified moves), drop one from the sitemap
    page = root / "swarming.md"
    page.write_text("# Swarming\n\nA swarm settles on a branch before it finds a new home.\n")
    later = time.time() + 10
    os.utime(page, (later, later))
    _site(root, server.url, ["colony-roles.html", "swarming.md", "protective-equipment.txt"])
    server.responses.clear()
    r = _cli("refresh", "--index", "web", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["changed"] == [f"{server.url}/swarming.md"]
    assert out["removed"] == [f"{server.url}/wintering.html"]
    assert out["counts"]["unchanged"] == 2
    v2 = _documents("web", out["version"])
    assert "settles on a branch" in v2[f"{server.url}/swarming.md"]["text"]
    assert f"{server.url}/wintering.html" not in v2
    # unchanged pages: conditional requests answered 304 (the CLI plans once before Prefect starts,
    # the flow once more), never downloaded again
    for page in ("/colony-roles.html", "/protective-equipment.txt"):
        assert server.responses[(page, 304)] >= 1 and server.responses[(page, 200)] == 0
    assert server.responses[("/swarming.md", 200)] >= 1


def test_http_failures_are_quarantined_with_their_reason(site) -> None:
    root, server = site
    (root / "urls.txt").write_text("# pages\n"
                                   f"{server.url}/colony-roles.html\n"
                                   "/missing.html\n"  # relative to the list
                                   f"{server.url}/moved/wintering.html\n")
    cfg = LoadConfig(workers=1, http_retries=0)
    files = discover([f"{server.url}/urls.txt"], cfg)
    assert [f.uri for f in files] == sorted([f"{server.url}/colony-roles.html", f"{server.url}/missing.html",
                                             f"{server.url}/moved/wintering.html"])
    docs, bad = load_documents(files, cfg)
    assert [d.uri for d in docs] == [f"{server.url}/colony-roles.html"]
    reasons = {q.path.rsplit("/", 1)[1]: (q.error_type, q.message) for q in bad}
    assert reasons["missing.html"][0] == "HTTPError" and "HTTP 404" in reasons["missing.html"][1]
    assert reasons["wintering.html"][0] == "Redirected" and "localhost" in reasons["wintering.html"][1]
    # allowed in params: the redirect is followed
    allowed = LoadConfig(workers=1, http_redirect_hosts=["localhost"])
    [moved] = [f for f in files if "moved" in f.uri]
    assert "winter" in load_document(moved, allowed).text.lower()
    # size limit while streaming the body
    tiny = LoadConfig(max_file_mb=0.001)
    with pytest.raises(Exception) as e:
        read_entry(files[0], tiny)
    assert getattr(e.value, "error_type", "") == "FileTooLarge"


def test_unreachable_http_source_fails_before_work(tmp_path: Path) -> None:
    from tests.servers import free_port

    url = f"http://user:pw-secret@127.0.0.1:{free_port()}/sitemap.xml"
    with pytest.raises(SourceUnavailable) as e:
        discover([url], LoadConfig(http_retries=0, http_timeout_s=2))
    msg = str(e.value)
    assert msg.startswith("http://127.0.0.1:") and "pw-secret" not in msg and "\n" not in msg


def test_sitemap_is_streamed_not_loaded_whole(site) -> None:
    """The first URL comes out while the server is still holding back the rest of the sitemap."""
    _root, server = site
    entries = HttpSource(f"{server.url}/slow-sitemap.xml", timeout_s=20).entries(["**/*"], [])
    first = next(entries)
    assert first.uri == "http://127.0.0.1/first.html" and not server.release.is_set()
    server.release.set()
    assert [f.uri for f in entries] == ["http://127.0.0.1/second.html"]


# ---------------------------------------------------------------- restore by object version id
def test_restore_refetches_the_exact_bytes_of_a_versioned_bucket(workspace: Path, prefect_harness, s3) -> None:
    """`index restore` of a version built from a versioned bucket reads every object back by its
    recorded version id (not the newest bytes), checks sha256, rebuilds an equal version; once
    a recorded version is deleted it refuses in one line naming the object and the version."""
    import hashlib

    import boto3

    from tests.conftest import write_params

    fs, bucket = s3
    client = boto3.client("s3")
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    names = ("swarming.md", "wintering.html", "protective-equipment.txt")
    for n in names:  # written after versioning is on: each object has a version id
        fs.pipe(f"{bucket}/v/{n}", (SAMPLE / n).read_bytes())
    write_params(workspace, load={"storage_options": {"s3": {"version_aware": True}}})
    url = f"s3://{bucket}/v"
    r = _cli("ingest", url, "--index", "vdocs", "--json")
    assert r.exit_code == 0, r.output
    reg = IndexRegistry("indexes")
    v1 = {i["uri"]: i for i in reg.manifest("vdocs", "v0001").inputs}
    assert all(i["version_id"] for i in v1.values()) and len(v1) == 3

    # the bucket moves on: swarming.md overwritten, and a refresh publishes the new bytes
    fs.pipe(f"{bucket}/v/swarming.md", b"# Swarming\n\nWasps, not bees, were seen this year.\n")
    r = _cli("refresh", "--index", "vdocs", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["changed"] == [f"{url}/swarming.md"]

    r = _cli("index", "restore", "v0001", "--index", "vdocs", "--dry-run", "--json")  # fetch and verify only
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"index": "vdocs", "version": "v0001", "from": "sources", "inputs": 3,
                                    "pinned_versions": 3}
    assert reg.versions("vdocs")[-1] == "v0002"
    r = _cli("index", "restore", "v0001", "--index", "vdocs", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["equal"] and out["inputs"] == 3 and out["pinned_versions"] == 3 and out["rebuilt"] == "v0003"
    restored = _documents("vdocs", "v0003")
    originals = {f"{url}/{n}": hashlib.sha256((SAMPLE / n).read_bytes()).hexdigest() for n in names}
    assert {u: d["sha256"] for u, d in restored.items()} == originals  # the bytes first ingested
    assert "Wasps" not in restored[f"{url}/swarming.md"]["text"]
    assert {i["uri"]: i["version_id"] for i in reg.manifest("vdocs", "v0003").inputs} == \
        {u: i["version_id"] for u, i in v1.items()}

    # the recorded version of one object is deleted for good: refused before anything is built
    old = v1[f"{url}/swarming.md"]["version_id"]
    client.delete_object(Bucket=bucket, Key="v/swarming.md", VersionId=old)
    r = runner.invoke(app, ["index", "restore", "v0001", "--index", "vdocs"])
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{url}/swarming.md: version {old} is gone" in lines[0], r.output
    assert reg.versions("vdocs")[-1] == "v0003"  # nothing published


def test_folders_listed_concurrently_equal_one_recursive_listing(s3) -> None:
    """The listing (top level, then folders at once, fast timestamp parsing) gives what one plain
    recursive s3fs listing gives: the same keys, sizes, ETags and modification times."""
    import s3fs

    fs, bucket = s3
    for key in ("top.txt", "a/1.txt", "a/deeper/2.txt", "b/3.txt", "c/4.md", "c/5.txt"):
        fs.pipe(f"{bucket}/tree/{key}", f"notes on {key}\n".encode())
    entries = discover([f"s3://{bucket}/tree"], LoadConfig())
    plain = s3fs.S3FileSystem(skip_instance_cache=True).find(f"{bucket}/tree", detail=True)  # botocore's defaults
    assert [e.uri for e in entries] == [f"s3://{k}" for k in sorted(plain)]
    for e in entries:
        info = plain[e.uri.removeprefix("s3://")]
        assert (e.size, e.etag, e.mtime) == (info["size"], info["ETag"].strip('"'), info["LastModified"].isoformat())


def test_a_pinned_object_keeps_the_name_its_listing_gave_it() -> None:
    """A restore pins an object-store input from the manifest: its entry is named by the key's last
    part as the listing named it (``?``, ``#``, ``%`` belong to the key), so its type and path match
    the original ingest's."""
    from ragline.pipelines.sources import pinned_entries

    uris = ["s3://bkt/docs/notes?v=2#top%20.md", "s3://bkt/docs/sub/plain.txt"]
    got = pinned_entries([{"uri": u, "size": 3} for u in uris], ["s3://bkt/docs"], LoadConfig())
    assert [(f.uri, f.path) for f in got] == [(uris[0], Path("notes?v=2#top%20.md")), (uris[1], Path("plain.txt"))]
