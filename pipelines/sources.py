"""Sources: where documents come from (local folders, fsspec URLs, HTTP sitemaps and URL lists).

``load.sources`` holds local paths and URLs. Every source is a :class:`Source`: it lists its
entries (one :class:`~pipelines.load.SourceFile` each, with the size, ETag, object version id
and modification time the listing gives) and reads one entry's bytes. Three kinds exist:

- **local** folders and files (and ``file://`` URLs): :func:`pipelines.load.discover_files`,
  with its symlink and special-file rules; bytes are read by :func:`pipelines.load.load_document`.
- **object stores** through fsspec (``s3://``, ``gs://``, ``az://``/``abfs://``, ``memory://``,
  any protocol fsspec knows): one recursive listing (``fs.find``); credentials and endpoints
  from ``load.storage_options`` (per source URL, or per protocol) or the implementation's
  standard environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...). With
  ``version_aware: true`` in the storage options of an S3 source the listing carries object
  version ids, which are read back exactly and recorded in the manifest.
- **HTTP(S)**: a URL ending in ``.xml`` is a sitemap (sitemaps.org 0.9; a sitemap index is
  followed; parsed incrementally with lxml's pull parser while it downloads, so a sitemap of
  10^6 URLs is never held whole); one ending in ``.txt`` is a URL list (one URL per line,
  ``#`` comments); any other URL is one page. Pages are fetched with ``load.http_timeout_s``,
  ``load.max_file_mb``, ``load.http_retries`` (tenacity, exponential back-off, on connection
  errors, timeouts, 429 and 5xx only), and never follow a redirect to another host unless the
  host is in ``load.http_redirect_hosts``. A page's type comes from its URL's suffix when
  ragline supports it, else it is HTML.

Change detection (refresh, :func:`scan_remote`) never downloads an object store entry: the
listing's ETag, size and version id equal to the parent version's record mean "unchanged".
HTTP pages are unchanged when the sitemap's ``<lastmod>`` equals the recorded one, or when a
conditional request (``If-None-Match`` / ``If-Modified-Since`` from the recorded ETag and
Last-Modified) answers 304, or when the page's sha256 equals the recorded one. The sha256 of
the bytes stays the content identity. What the listing said is kept in the document's
``metadata`` (:data:`META_KEYS`) and, through it, in the manifest's ``inputs``.

Failures: a source that cannot be listed (unreachable endpoint, bad credentials, missing
bucket, a sitemap that does not parse) raises :class:`SourceUnavailable` before any work
starts, in one line naming the URL (user and password removed) and never the credentials.
One entry that cannot be downloaded is quarantined (``HTTPError`` with the status,
``DownloadTimeout``, ``FileTooLarge``, ``Redirected``, ``DownloadFailed``) and the run goes on.
"""

from __future__ import annotations

import functools
import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Protocol, Sequence
from urllib.parse import urljoin, urlsplit, urlunsplit

from ragline.pipelines.errors import PipelineError

if TYPE_CHECKING:
    import httpx

    from ragline.pipelines.config import LoadConfig
    from ragline.pipelines.load import SourceFile

#: Document metadata keys holding what the listing or the HTTP response said about a remote entry.
META_KEYS = ("source_etag", "source_version_id", "source_last_modified")
#: URL schemes read over HTTP by :class:`HttpSource` (not through fsspec).
HTTP_SCHEMES = ("http", "https")
#: storage option keys whose values are never shown
_SECRET_WORDS = ("key", "secret", "token", "password", "credential", "sas", "sig")
#: redirects followed per request (each one checked against the allowed hosts)
MAX_REDIRECTS = 5
#: threads making conditional requests while a refresh scans an HTTP source
HTTP_PROBE_THREADS = 8
#: top-level folders of an object store prefix listed at once
LIST_THREADS = 8


class SourceUnavailable(PipelineError):
    """A source could not be listed (unreachable, refused, missing); nothing was started."""


class DownloadFailed(Exception):
    """One entry could not be downloaded; ``error_type`` is the quarantine reason."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class Source(Protocol):
    """What every source does: list its entries, read one entry's bytes."""

    url: str

    def entries(self, include: Sequence[str], exclude: Sequence[str]) -> Iterator["SourceFile"]:
        """The entries matching the globs (relative to the source), with their listing facts.

        Raises:
            SourceUnavailable: the source cannot be listed.
        """
        ...

    def read(self, entry: "SourceFile", max_bytes: int) -> tuple[bytes, dict[str, str]]:
        """``(bytes, facts)``: the entry's content and what the response said (``META_KEYS``).

        Raises:
            DownloadFailed: the reason, for the quarantine table.
        """
        ...


# ---------------------------------------------------------------- naming
def scheme_of(source: str | Path) -> str:
    """``"s3"``, ``"https"``, ... of a URL; ``""`` for a local path (``file://`` included)."""
    s = str(source)
    if "://" not in s:
        return ""
    scheme = s.split("://", 1)[0].lower()
    return "" if scheme in ("file", "local") else scheme


def is_remote(source: str | Path) -> bool:
    """True for a source read through fsspec or HTTP (not a local path or ``file://`` URL)."""
    return bool(scheme_of(source))


def local_path(source: str | Path) -> str:
    """A local source as a path: ``file:///data/docs`` → ``/data/docs``; paths unchanged."""
    s = str(source)
    return s.split("://", 1)[1] if "://" in s else s


def redact_url(url: str) -> str:
    """``url`` without user and password (``https://u:p@host/x`` → ``https://host/x``)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _scrub(message: str, options: Mapping[str, Any]) -> str:
    """``message`` on one line with every secret-looking storage option value masked."""
    text = " ".join(str(message).split())
    for k, v in _flatten(options):
        if isinstance(v, str) and len(v) >= 4 and any(w in k.lower() for w in _SECRET_WORDS):
            text = text.replace(v, "***")
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN"):
        v = os.environ.get(var, "")
        if len(v) >= 4:
            text = text.replace(v, "***")
    return text


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        if isinstance(v, Mapping):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def storage_options_for(source: str, cfg: "LoadConfig") -> dict[str, Any]:
    """The fsspec storage options of ``source``: ``load.storage_options[source]`` (the URL as
    written, trailing ``/`` ignored), else ``load.storage_options[<protocol>]``, else ``{}``."""
    opts = cfg.storage_options
    key = source.rstrip("/")
    for k, v in opts.items():
        if k.rstrip("/") == key:
            return dict(v)
    return dict(opts.get(scheme_of(source), {}))


def _rel_matches(rel: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    from ragline.pipelines.load import _matches

    if any(part.startswith(".") for part in rel.split("/")):
        return False  # hidden, as for local folders
    return _matches(rel, include) and not _matches(rel, exclude)


def _entry_path(uri: str, suffix_default: str = "") -> Path:
    """The :attr:`SourceFile.path` of a remote entry: a relative POSIX path whose suffix names
    the type (never a path on this machine; nothing opens it)."""
    name = PurePosixPath(urlsplit(uri).path).name or "index"
    if suffix_default:
        from ragline.pipelines.load import SUPPORTED_TYPES

        if PurePosixPath(name).suffix.lower() not in SUPPORTED_TYPES:
            name += suffix_default
    return Path(name)


def _object_path(uri: str) -> Path:
    """The :attr:`SourceFile.path` of an object-store entry ``PROTOCOL://BUCKET/KEY``: the key's
    last part as it is (``?``, ``#`` and ``%`` are characters of a key, not URL syntax), the same
    whether the entry was listed or pinned by a manifest."""
    return Path(posixpath.basename(uri.split("://", 1)[-1]) or "index")


# ---------------------------------------------------------------- object stores (fsspec)
class FsspecSource:
    """A folder (prefix) of an object store or any fsspec file system.

    Args:
        url: ``s3://bucket/prefix``, ``gs://...``, ``az://container/prefix``, ``memory://...``.
        storage_options: keyword arguments of the fsspec file system (endpoint, credentials,
            ``version_aware``...); empty means the implementation's environment variables.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})

    def _fs(self, version_aware: bool = False):
        """``(file system, root path)``; ``version_aware`` asks for one that reads object
        versions by id (s3fs, gcsfs and adlfs take ``version_aware=True``)."""
        import fsspec

        opts = {**self.storage_options, "version_aware": True} if version_aware else self.storage_options
        if scheme_of(self.url) in ("s3", "s3a") and not {"session", "profile"} & opts.keys():
            opts = {**opts, "session": _s3_session()}
        try:
            fs, root = fsspec.core.url_to_fs(self.url, **opts)
        except (ImportError, ValueError) as e:
            raise SourceUnavailable(
                f"{redact_url(self.url)}: no fsspec file system for {scheme_of(self.url)}:// "
                f"({_scrub(str(e), self.storage_options)}); install its package (s3fs, gcsfs, adlfs)") from None
        return fs, root

    def _listing(self, fs: Any, root: str) -> dict[str, dict[str, Any]]:
        """``{key: info}`` of every object under ``root``: one delimited listing of the top level
        (``fs.ls``), then one recursive listing (``fs.find``) per top-level folder,
        :data:`LIST_THREADS` at a time. Each request pages 1,000 keys (S3's limit); no object
        is HEADed. Listing folders concurrently overlaps the server's work on one page with the
        client's parsing of another (a flat prefix is one sequential listing, as before)."""
        top = fs.ls(root, detail=True)
        found = {i["name"]: i for i in top if i.get("type", "file") == "file"}
        folders = [i["name"] for i in top if i.get("type") == "directory"]
        if len(folders) == 1:
            found.update(fs.find(folders[0], detail=True, withdirs=False))
        elif folders:
            with ThreadPoolExecutor(min(LIST_THREADS, len(folders))) as pool:
                for part in pool.map(lambda d: fs.find(d, detail=True, withdirs=False), folders):
                    found.update(part)
        return found

    def entries(self, include: Sequence[str], exclude: Sequence[str]) -> Iterator["SourceFile"]:
        """The objects under the source's prefix (:meth:`_listing`), sorted by key."""
        from ragline.pipelines.load import SourceFile

        fs, root = self._fs()
        try:
            if hasattr(fs, "invalidate_cache"):
                fs.invalidate_cache()
            listing = self._listing(fs, root)
        except FileNotFoundError as e:
            raise SourceUnavailable(f"{redact_url(self.url)}: cannot list the source: no such bucket, container or folder "
                                    f"({_scrub(str(e), self.storage_options)})") from None
        except Exception as e:  # noqa: BLE001 - botocore/aiohttp/gcsfs raise anything; one line, no secrets
            raise SourceUnavailable(
                f"{redact_url(self.url)}: cannot list the source ({type(e).__name__}: "
                f"{_scrub(str(e), self.storage_options)}); check the URL, the endpoint and the credentials "
                "(load.storage_options or the environment)") from None
        if not listing and not fs.exists(root):
            raise SourceUnavailable(f"{redact_url(self.url)}: no such bucket, container or folder")
        protocol = self.url.split("://", 1)[0]
        root_key = root.rstrip("/")
        for key in sorted(listing):
            info = listing[key]
            if info.get("type", "file") != "file":
                continue
            if key == root_key:
                rel = posixpath.basename(key)  # the source names one object
            elif key.startswith(root_key + "/"):
                rel = key[len(root_key) + 1:]
            else:
                continue
            if not _rel_matches(rel, include, exclude):
                continue
            uri = f"{protocol}://{key}"
            yield SourceFile(_object_path(uri), uri, size=int(info.get("size") or 0), etag=_etag(info),
                             version_id=_version(info), mtime=_mtime(info), source=self.url)

    def read(self, entry: "SourceFile", max_bytes: int) -> tuple[bytes, dict[str, str]]:
        """The entry's bytes (its listed version when it has a version id)."""
        fs, _ = self._fs(version_aware=bool(entry.version_id))
        path = fs._strip_protocol(entry.uri)
        kwargs = {"version_id": entry.version_id} if entry.version_id else {}
        try:
            with fs.open(path, "rb", **kwargs) as f:
                data = f.read(max_bytes + 1)
        except FileNotFoundError:
            if entry.version_id:
                raise DownloadFailed("VersionGone", f"{entry.uri}: version {entry.version_id} is gone from the "
                                                    "bucket (deleted, or expired by a lifecycle rule)") from None
            raise DownloadFailed("DownloadFailed", f"{entry.uri}: gone since the listing (deleted while the run "
                                                   "was going?)") from None
        except TimeoutError as e:
            raise DownloadFailed("DownloadTimeout", f"{entry.uri}: download timed out ({type(e).__name__})") from None
        except PermissionError as e:
            raise DownloadFailed("DownloadFailed", f"{entry.uri}: access denied "
                                                   f"({_scrub(str(e), self.storage_options)})") from None
        except Exception as e:  # noqa: BLE001 - one object fails, the run goes on
            raise DownloadFailed("DownloadFailed", f"{entry.uri}: {type(e).__name__}: "
                                                   f"{_scrub(str(e), self.storage_options)}") from None
        if len(data) > max_bytes:
            raise DownloadFailed("FileTooLarge", f"{entry.uri}: more than {max_bytes / 1048576:g} MiB (load.max_file_mb)")
        return data, _facts(entry.etag, entry.version_id, entry.mtime)


def _fast_timestamp(value: Any) -> Any:
    """botocore's timestamp parser, with ISO 8601 strings read by ``datetime.fromisoformat``
    (same tz-aware value): botocore parses every ``LastModified`` of a listing with dateutil,
    about 0.15 ms each, a quarter of the client's time on a 1,000-key page."""
    from datetime import datetime

    from botocore.utils import parse_timestamp

    if isinstance(value, str) and len(value) >= 20 and value[:4].isdigit() and value[4] == "-":
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    return parse_timestamp(value)


@functools.lru_cache(maxsize=1)
def _s3_session() -> Any:
    """One aiobotocore session per process for every s3:// source (so fsspec reuses one file
    system per set of options), its response parser using :func:`_fast_timestamp`
    (``ResponseParserFactory.set_parser_defaults``, botocore's documented hook)."""
    from aiobotocore.session import AioSession

    session = AioSession()
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_fast_timestamp)
    return session


def _etag(info: Mapping[str, Any]) -> str:
    v = info.get("ETag") or info.get("etag") or info.get("md5Hash") or ""
    return str(v).strip('"')


def _version(info: Mapping[str, Any]) -> str:
    v = info.get("VersionId") or info.get("version_id") or info.get("generation") or ""
    return "" if str(v) == "null" else str(v)


def _mtime(info: Mapping[str, Any]) -> str:
    v = info.get("LastModified") or info.get("last_modified") or info.get("updated") or info.get("mtime") or ""
    return v.isoformat() if hasattr(v, "isoformat") else str(v)


def _facts(etag: str, version_id: str, last_modified: str) -> dict[str, str]:
    vals = (etag, version_id, last_modified)
    return {k: v for k, v in zip(META_KEYS, vals) if v}


# ---------------------------------------------------------------- HTTP
class HttpSource:
    """A sitemap (``.xml``), a URL list (``.txt``) or one page over HTTP(S).

    Args:
        url: the sitemap, list or page URL.
        timeout_s: connect/read timeout of every request, seconds.
        retries: extra attempts after a connection error, timeout, 429 or 5xx.
        redirect_hosts: hosts a redirect may lead to besides the URL's own host.
    """

    def __init__(self, url: str, timeout_s: float = 30.0, retries: int = 2,
                 redirect_hosts: Sequence[str] = ()) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.hosts = {urlsplit(url).hostname or "", *(h.lower() for h in redirect_hosts)}

    @property
    def kind(self) -> str:
        """``sitemap``, ``urls`` or ``page`` (from the URL's suffix)."""
        suffix = PurePosixPath(urlsplit(self.url).path).suffix.lower()
        return {".xml": "sitemap", ".txt": "urls"}.get(suffix, "page")

    def _client(self) -> "httpx.Client":
        import httpx

        return httpx.Client(timeout=self.timeout_s, follow_redirects=False,
                            headers={"User-Agent": "ragline (+https://github.com/ragline)"})

    def _open(self, client: "httpx.Client", url: str, headers: Mapping[str, str] | None = None):
        """A streamed response after following allowed redirects, with retries (tenacity).

        Returns a response context manager's result that the caller must close.

        Raises:
            DownloadFailed: a status >= 400, a timeout, a redirect to another host, a connection error.
        """
        import httpx
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

        def transient(e: BaseException) -> bool:
            return isinstance(e, DownloadFailed) and e.error_type in ("DownloadTimeout", "DownloadFailed", "Retry")

        def once():
            target = url
            for _hop in range(MAX_REDIRECTS + 1):
                try:
                    r = client.send(client.build_request("GET", target, headers=dict(headers or {})), stream=True)
                except httpx.TimeoutException:
                    raise DownloadFailed("DownloadTimeout", f"{redact_url(url)}: no answer within "
                                                            f"load.http_timeout_s={self.timeout_s:g} s") from None
                except httpx.HTTPError as e:
                    raise DownloadFailed("DownloadFailed", f"{redact_url(url)}: {type(e).__name__}: {e}") from None
                if r.status_code in (301, 302, 303, 307, 308) and r.headers.get("location"):
                    nxt = urljoin(target, r.headers.get("location", ""))
                    r.close()
                    host = (urlsplit(nxt).hostname or "").lower()
                    if host not in self.hosts:
                        raise DownloadFailed("Redirected", f"{redact_url(url)}: redirected to another host ({host}); "
                                                           "add it to load.http_redirect_hosts to follow it")
                    target = nxt
                    continue
                if r.status_code == 429 or r.status_code >= 500:
                    r.close()
                    raise DownloadFailed("Retry", f"{redact_url(url)}: HTTP {r.status_code}")
                if r.status_code >= 400:
                    r.close()
                    raise DownloadFailed("HTTPError", f"{redact_url(url)}: HTTP {r.status_code} {r.reason_phrase}")
                return r
            raise DownloadFailed("Redirected", f"{redact_url(url)}: more than {MAX_REDIRECTS} redirects")

        try:
            for attempt in Retrying(stop=stop_after_attempt(self.retries + 1), reraise=True,
                                    wait=wait_exponential(multiplier=0.2, max=5), retry=retry_if_exception(transient)):
                with attempt:
                    return once()
        except DownloadFailed as e:
            if e.error_type == "Retry":
                raise DownloadFailed("HTTPError", str(e)) from None
            raise
        raise AssertionError("unreachable")  # pragma: no cover - Retrying either returns or raises

    def _fetch(self, client: "httpx.Client", url: str, max_bytes: int,
               headers: Mapping[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        """``(status, body, facts)``; a 304 has an empty body."""
        r = self._open(client, url, headers)
        try:
            facts = _facts(r.headers.get("etag", ""), "", r.headers.get("last-modified", ""))  # ETag as sent (W/"..." kept)
            if r.status_code == 304:
                return 304, b"", facts
            declared = r.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise DownloadFailed("FileTooLarge", f"{redact_url(url)}: {int(declared) / 1048576:.1f} MiB declared, "
                                                     f"over load.max_file_mb")
            buf = bytearray()
            import httpx

            try:
                for chunk in r.iter_bytes():
                    buf += chunk
                    if len(buf) > max_bytes:
                        raise DownloadFailed("FileTooLarge", f"{redact_url(url)}: more than "
                                                             f"{max_bytes / 1048576:g} MiB (load.max_file_mb)")
            except httpx.TimeoutException:
                raise DownloadFailed("DownloadTimeout", f"{redact_url(url)}: the body did not arrive within "
                                                        f"load.http_timeout_s={self.timeout_s:g} s") from None
            return r.status_code, bytes(buf), facts
        finally:
            r.close()

    # -- listing
    def _iter_sitemap(self, client: "httpx.Client", url: str, depth: int = 0) -> Iterator[tuple[str, str]]:
        """``(loc, lastmod)`` of every ``<url>`` of a sitemap (a sitemap index is followed),
        parsed while it downloads; elements are freed as they are read."""
        from lxml import etree

        r = self._open(client, url)
        children: list[str] = []
        try:
            parser = etree.XMLPullParser(events=("end",), resolve_entities=False, no_network=True, huge_tree=False)
            loc = lastmod = ""
            for chunk in r.iter_bytes():
                parser.feed(chunk)
                for _ev, el in parser.read_events():
                    tag = etree.QName(el).localname if isinstance(el.tag, str) else ""
                    if tag == "loc":
                        loc = (el.text or "").strip()
                    elif tag == "lastmod":
                        lastmod = (el.text or "").strip()
                    elif tag in ("url", "sitemap"):
                        if loc:
                            if tag == "url":
                                yield loc, lastmod
                            else:
                                children.append(loc)
                        loc = lastmod = ""
                        el.clear()
                        parent = el.getparent()
                        while parent is not None and el.getprevious() is not None:
                            del parent[0]
            parser.close()
        except etree.XMLSyntaxError as e:
            raise SourceUnavailable(f"{redact_url(url)}: not a sitemap (XML error: {e})") from None
        finally:
            r.close()
        if depth >= 2 and children:
            raise SourceUnavailable(f"{redact_url(url)}: sitemap indexes nested more than 2 levels")
        for child in children:
            yield from self._iter_sitemap(client, child, depth + 1)

    def _iter_list(self, client: "httpx.Client") -> Iterator[tuple[str, str]]:
        r = self._open(client, self.url)
        try:
            for line in r.iter_lines():
                line = line.strip()
                if line and not line.startswith("#"):
                    yield urljoin(self.url, line), ""
        finally:
            r.close()

    def entries(self, include: Sequence[str], exclude: Sequence[str]) -> Iterator["SourceFile"]:
        """The pages of the sitemap / list (or the one page), in listing order, without duplicates."""
        from ragline.pipelines.load import SourceFile

        seen: set[str] = set()
        with self._client() as client:
            try:
                if self.kind == "sitemap":
                    pages = self._iter_sitemap(client, self.url)
                elif self.kind == "urls":
                    pages = self._iter_list(client)
                else:
                    pages = iter([(self.url, "")])
                for loc, lastmod in pages:
                    parts = urlsplit(loc)
                    if parts.scheme not in HTTP_SCHEMES or loc in seen:
                        continue
                    if not _rel_matches(parts.path.lstrip("/") or "index", include, exclude):
                        continue
                    seen.add(loc)
                    yield SourceFile(_entry_path(loc, ".html"), loc, mtime=lastmod, source=self.url)
            except DownloadFailed as e:
                raise SourceUnavailable(f"{redact_url(self.url)}: cannot read the source ({e})") from None

    def read(self, entry: "SourceFile", max_bytes: int, headers: Mapping[str, str] | None = None
             ) -> tuple[bytes, dict[str, str]]:
        """The page's bytes and its ``ETag`` / ``Last-Modified``."""
        with self._client() as client:
            _status, body, facts = self._fetch(client, entry.uri, max_bytes, headers)
        if entry.mtime and "source_last_modified" not in facts:
            facts["source_last_modified"] = entry.mtime
        return body, facts

    def probe(self, entry: "SourceFile", recorded: Mapping[str, str], max_bytes: int) -> bool:
        """True when the page is unchanged since ``recorded`` (the parent's manifest input):
        the sitemap's ``<lastmod>`` equals the recorded one, or a conditional GET answers 304,
        or the body's sha256 equals the recorded one. A failed request means "changed" (the
        load stage then quarantines the page with its reason)."""
        from ragline.core.hashing import sha256_bytes

        if entry.mtime and recorded.get("last_modified") == entry.mtime:
            return True
        headers = {}
        if recorded.get("etag"):
            headers["If-None-Match"] = recorded["etag"]
        if recorded.get("last_modified") and not entry.mtime:
            headers["If-Modified-Since"] = recorded["last_modified"]
        try:
            with self._client() as client:
                status, body, _ = self._fetch(client, entry.uri, max_bytes, headers)
        except DownloadFailed:
            return False
        return status == 304 or sha256_bytes(body) == recorded.get("sha256")


# ---------------------------------------------------------------- the entry points
def open_source(url: str, cfg: "LoadConfig") -> Source:
    """The :class:`Source` for a remote ``url`` with the ``load:`` settings."""
    if scheme_of(url) in HTTP_SCHEMES:
        return HttpSource(url, cfg.http_timeout_s, cfg.http_retries, cfg.http_redirect_hosts)
    return FsspecSource(url, storage_options_for(url, cfg))


def discover(sources: Sequence[str | Path], cfg: "LoadConfig") -> list["SourceFile"]:
    """Every entry of ``sources``, sorted by URI: the one discovery of ingest and refresh.

    Local paths (and ``file://`` URLs) go through :func:`pipelines.load.discover_files`
    (hidden files skipped, symlink and special-file rules); remote sources are listed once
    each (:meth:`Source.entries`), filtered by ``load.include`` / ``load.exclude`` on the key
    relative to the source. Every remote source is listed before anything is returned.

    Raises:
        FileNotFoundError: a local source does not exist.
        SourceUnavailable: a remote source cannot be listed (one line naming the URL).
    """
    from ragline.pipelines.load import discover_files

    local = [local_path(s) for s in sources if not is_remote(s)]
    if len(local) == len(sources):  # (discover_files returns them sorted by URI, each once)
        return discover_files(local, cfg.include, cfg.exclude, follow_symlinks=cfg.follow_symlinks)
    found = {f.uri: f for f in discover_files(local, cfg.include, cfg.exclude, follow_symlinks=cfg.follow_symlinks)} \
        if local else {}
    for s in sources:
        if is_remote(s):
            for f in open_source(str(s), cfg).entries(cfg.include, cfg.exclude):
                found.setdefault(f.uri, f)
    return [found[k] for k in sorted(found)]


def read_entry(entry: "SourceFile", cfg: "LoadConfig") -> tuple[bytes, dict[str, str]]:
    """Download a remote entry (in a parsing worker: its time and memory limits apply).

    Returns:
        ``(bytes, facts)``: the content, at most ``cfg.max_file_mb`` MiB, and the
        :data:`META_KEYS` facts to keep in the document's metadata.

    Raises:
        DownloadFailed: the quarantine reason (HTTP status, timeout, size limit...).
    """
    max_bytes = int(cfg.max_file_mb * 1024 * 1024)
    if entry.size > max_bytes:
        raise DownloadFailed("FileTooLarge", f"{entry.uri}: {entry.size / 1048576:.1f} MiB listed, over "
                                             f"load.max_file_mb={cfg.max_file_mb:g}; not downloaded")
    return open_source(entry.source, cfg).read(entry, max_bytes)


def listing_fingerprint(entry: "SourceFile") -> str:
    """What the listing says about a remote entry, as one string (``""`` when it says nothing):
    kept as the ``sha256`` of a remote entry's quarantine record, so a refresh can tell an
    unchanged failed object without downloading it."""
    parts = [f"{k}={v}" for k, v in (("etag", entry.etag), ("version", entry.version_id),
                                     ("size", entry.size if entry.size >= 0 and entry.etag else ""),
                                     ("lastmod", entry.mtime if entry.source and scheme_of(entry.source) in HTTP_SCHEMES
                                      else "")) if v != ""]
    return "listing:" + ";".join(parts) if parts else ""


def input_record(uri: str, doc_id: str, sha256: str, metadata: Mapping[str, str] | None,
                 size_bytes: int | None = None) -> dict[str, Any]:
    """A manifest ``inputs`` row: ``uri``, ``doc_id``, ``sha256``, plus ``etag``, ``version_id``,
    ``last_modified`` and ``size`` (bytes) of a remote entry (what :func:`scan_remote` compares
    next time; ``version_id`` lets a restore refetch the exact bytes from a versioned bucket)."""
    rec: dict[str, Any] = {"uri": uri, "doc_id": doc_id, "sha256": sha256}
    for k in META_KEYS:
        v = (metadata or {}).get(k)
        if v:
            rec[k.removeprefix("source_")] = v
    if len(rec) > 3 and size_bytes is not None:
        rec["size"] = int(size_bytes)
    return rec


def unchanged_by_listing(entry: "SourceFile", recorded: Mapping[str, Any]) -> bool:
    """An object store entry is unchanged when its listed ETag and size equal the recorded
    ones, and so does its version id when the parent recorded one."""
    if not entry.etag or entry.etag != recorded.get("etag"):
        return False
    if "size" in recorded and int(recorded["size"]) != entry.size:
        return False
    return not recorded.get("version_id") or entry.version_id == recorded.get("version_id")


def scan_remote(files: Sequence["SourceFile"], cfg: "LoadConfig", parent_inputs: Sequence[Mapping[str, str]],
                parent_quarantine: Mapping[str, str]) -> list[tuple["SourceFile", str]]:
    """``(entry, sha256)`` for remote entries, without downloading what the listing settles.

    ``sha256`` is the parent's sha256 of an unchanged entry, the entry's
    :func:`listing_fingerprint` when it equals the parent's quarantine record (an unchanged
    failed entry), else ``""`` (new or changed: the load stage downloads and hashes it).
    HTTP pages without a settling ``<lastmod>`` are probed with conditional requests
    (:meth:`HttpSource.probe`), :data:`HTTP_PROBE_THREADS` at a time.
    """
    recorded = {r["uri"]: r for r in parent_inputs}
    max_bytes = int(cfg.max_file_mb * 1024 * 1024)
    out: list[tuple[SourceFile, str]] = []
    probes: list[tuple[int, HttpSource, SourceFile, Mapping[str, str]]] = []
    sources: dict[str, Source] = {}
    for f in files:
        fp = listing_fingerprint(f)
        rec = recorded.get(f.uri)
        sha = ""
        if rec is not None:
            src = sources.setdefault(f.source, open_source(f.source, cfg))
            if isinstance(src, HttpSource):
                probes.append((len(out), src, f, rec))
            elif unchanged_by_listing(f, rec):
                sha = rec["sha256"]
        elif fp and parent_quarantine.get(f.uri) == fp:
            sha = fp
        out.append((f, sha))
    if probes:
        with ThreadPoolExecutor(HTTP_PROBE_THREADS) as pool:
            same = list(pool.map(lambda p: p[1].probe(p[2], p[3], max_bytes), probes))
        for (i, _src, f, rec), ok in zip(probes, same):
            out[i] = (f, rec["sha256"] if ok else "")
    return out



# ---------------------------------------------------------------- restore (the exact bytes of a version)
class RestoreRefused(PipelineError):
    """A version's inputs cannot be fetched exactly as they were (a version gone, bytes changed)."""


def _source_of(uri: str, sources: Sequence[str]) -> str:
    """The recorded source an input's ``uri`` was listed from ("" for a local file)."""
    if not is_remote(uri):
        return ""
    if scheme_of(uri) in HTTP_SCHEMES:  # a page of a sitemap or URL list: any HTTP source of its host reads it
        host = urlsplit(uri).hostname
        web = [s for s in sources if scheme_of(s) in HTTP_SCHEMES]
        return next((s for s in web if urlsplit(s).hostname == host), web[0] if web else "")
    roots = [s.rstrip("/") for s in sources if is_remote(s)]
    under = [r for r in roots if uri == r or uri.startswith(r + "/")]
    return max(under, key=len) if under else ""


def pinned_entries(inputs: Sequence[Mapping[str, Any]], sources: Sequence[str], cfg: "LoadConfig"
                   ) -> list["SourceFile"]:
    """The entries of a manifest's ``inputs``, pinned to what was read then: an object store
    entry carries its recorded ``version_id`` (read back by id, whatever the bucket holds now),
    ETag and size; an HTTP page is its URL; a local file comes from discovery of its recorded
    source (symlink and special-file rules apply). Sorted by URI.

    Raises:
        RestoreRefused: an input belongs to none of ``sources``, or a local file is missing.
    """
    from ragline.pipelines.load import SourceFile, discover_files

    local_roots = [local_path(s) for s in sources if not is_remote(s)]
    local = {f.uri: f for f in discover_files(local_roots, cfg.include, cfg.exclude, follow_symlinks=cfg.follow_symlinks)} \
        if local_roots and any(not is_remote(r["uri"]) for r in inputs) else {}
    out = []
    for rec in inputs:
        uri = str(rec["uri"])
        if not is_remote(uri):
            if uri not in local:
                raise RestoreRefused(f"{uri}: the local input is missing (none of {', '.join(local_roots) or '-'} "
                                     "holds it)")
            out.append(local[uri])
            continue
        src = _source_of(uri, sources)
        if not src:
            raise RestoreRefused(f"{redact_url(uri)}: belongs to none of the recorded sources {list(sources)}")
        if scheme_of(uri) in HTTP_SCHEMES:
            out.append(SourceFile(_entry_path(uri, ".html"), uri, source=src))
        else:
            out.append(SourceFile(_object_path(uri), uri, size=int(rec.get("size", -1)), etag=str(rec.get("etag", "")),
                                  version_id=str(rec.get("version_id", "")),
                                  mtime=str(rec.get("last_modified", "")), source=src))
    return sorted(out, key=lambda f: f.uri)


def verify_inputs(entries: Sequence["SourceFile"], inputs: Sequence[Mapping[str, Any]], cfg: "LoadConfig",
                  threads: int = HTTP_PROBE_THREADS) -> int:
    """Fetch every pinned entry (:func:`pinned_entries`) and check its sha256 against the
    manifest's, before anything is rebuilt: object store entries by version id, HTTP pages and
    local files as they are now. ``threads`` downloads run at once.

    Returns:
        The number of entries verified (all of them).

    Raises:
        RestoreRefused: the first entry (by URI) whose version is gone, whose download failed or
            whose bytes differ, in one line naming it.
    """
    from ragline.core.hashing import sha256_bytes, sha256_file

    want = {str(r["uri"]): str(r["sha256"]) for r in inputs}

    def check(entry: "SourceFile") -> str | None:
        try:
            sha = sha256_bytes(read_entry(entry, cfg)[0]) if entry.source else sha256_file(entry.path)
        except DownloadFailed as e:
            return f"{e}; the version cannot be restored exactly"
        except OSError as e:
            return f"{entry.uri}: cannot read ({type(e).__name__}: {e})"
        if sha != want.get(entry.uri):
            pinned = f"version {entry.version_id} " if entry.version_id else ""
            hint = "" if entry.version_id or not scheme_of(entry.uri) or scheme_of(entry.uri) in HTTP_SCHEMES else \
                "; record object versions (load.storage_options: {version_aware: true} on a versioned bucket)"
            return (f"{redact_url(entry.uri)}: {pinned}has sha256 {sha[:12]}…, the manifest records "
                    f"{want.get(entry.uri, '?')[:12]}…: the input changed{hint}")
        return None

    with ThreadPoolExecutor(max(1, threads)) as pool:
        problems = list(pool.map(check, entries))
    for why in problems:
        if why:
            raise RestoreRefused(why)
    return len(entries)
