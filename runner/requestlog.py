"""The request log and user feedback of a served flow (local SQLite files).

Every served request appends one row to ``requests.sqlite`` (path from
``serve.request_log.path``): time, request id, route, flow, variant, index versions, question,
answer, citations, latencies, tokens, cost, status. With ``capture_text: false`` the question,
answer and citations are not stored (NULL). Past ``max_mb`` the file is renamed
``requests.<UTC time>.sqlite`` and a new one started; only the ``keep`` newest rotated files
are kept. Feedback (``POST /feedback``) goes to ``feedback.sqlite`` next to it, which is never
rotated; a feedback row is accepted only for a request id found in the current or a rotated log.

SQLite in WAL mode with ``synchronous=NORMAL``. Appends do not touch the file on the request
path: records go to a queue that one writer thread drains, inserting whatever has gathered in
one transaction (at most 512 rows, or every 0.2 s). Reads (:meth:`RequestLog.find`, feedback)
first wait for the queue to be written; :meth:`RequestLog.close` writes what is left. A hard
kill loses at most the records of the last 0.2 s.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import sqlite3
import threading
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Optional

from ragline.core.serve_config import RequestLogConfig
from ragline.runner.errors import DataError

_REQUEST_COLUMNS = ("request_id", "time", "route", "flow", "variant", "model", "indexes", "question", "answer",
                    "citations", "status", "error", "latency_ms", "retrieval_ms", "llm_ms", "prompt_tokens",
                    "completion_tokens", "cost_usd", "stream", "arm")
_REQUESTS_DDL = """
CREATE TABLE IF NOT EXISTS requests (
  request_id TEXT PRIMARY KEY, time TEXT NOT NULL, route TEXT NOT NULL, flow TEXT NOT NULL, variant TEXT,
  model TEXT, indexes TEXT, question TEXT, answer TEXT, citations TEXT, status INTEGER NOT NULL, error TEXT,
  latency_ms REAL, retrieval_ms REAL, llm_ms REAL, prompt_tokens INTEGER, completion_tokens INTEGER,
  cost_usd REAL, stream INTEGER NOT NULL DEFAULT 0, arm TEXT)"""
_FEEDBACK_DDL = """
CREATE TABLE IF NOT EXISTS feedback (
  id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, time TEXT NOT NULL,
  rating TEXT NOT NULL CHECK (rating IN ('up', 'down')), comment TEXT, correct_source TEXT,
  flow TEXT, variant TEXT, question TEXT, answer TEXT, citations TEXT, indexes TEXT, arm TEXT)"""


def _add_arm_column(conn: sqlite3.Connection, table: str) -> None:
    """Logs written before splits existed have no ``arm`` column: add it (NULL for old rows)."""
    if not any(r[1] == "arm" for r in conn.execute(f"PRAGMA table_info({table})")):
        conn.execute(f"ALTER TABLE {table} ADD COLUMN arm TEXT")


class UnknownRequest(DataError, LookupError):
    """Feedback names a request id that no request log holds."""


def utc_now() -> str:
    """ISO-8601 UTC time with milliseconds, e.g. ``2026-12-02T06:30:00.123Z``."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


@dataclass(frozen=True)
class RequestRecord:
    """One served request (see the module docstring for the columns)."""

    request_id: str
    route: str
    flow: str
    variant: Optional[str]
    model: Optional[str]
    indexes: list[dict]
    question: Optional[str]
    answer: Optional[str]
    citations: list[dict]
    status: int
    error: Optional[str] = None
    latency_ms: float = 0.0
    retrieval_ms: float = 0.0
    llm_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    stream: bool = False
    time: str = ""
    arm: Optional[str] = None


class RequestLog:
    """Append-only request log plus the feedback store next to it.

    Args:
        config: ``serve.request_log``.

    Raises:
        OSError: the folder cannot be created or the files cannot be opened.
    """

    def __init__(self, config: RequestLogConfig) -> None:
        self.config = config
        self.path = Path(config.path)
        self.feedback_path = self.path.with_name("feedback.sqlite")
        self._lock = threading.Lock()
        self._conn = self._open_requests()
        self._fb = _connect(self.feedback_path)
        self._fb.execute(_FEEDBACK_DDL)
        _add_arm_column(self._fb, "feedback")
        self._writes = 0
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="ragline-request-log", daemon=True)
        self._writer.start()

    def _open_requests(self) -> sqlite3.Connection:
        conn = _connect(self.path)
        conn.execute(_REQUESTS_DDL)
        _add_arm_column(conn, "requests")
        return conn

    def close(self) -> None:
        """Write what is queued, stop the writer and close both files (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join(timeout=30)
        with self._lock:
            self._conn.close()
            self._fb.close()

    def flush(self) -> None:
        """Wait until every record appended so far is in the file."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout=30)

    def _write_loop(self) -> None:
        sql = (f"INSERT OR REPLACE INTO requests ({', '.join(_REQUEST_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(_REQUEST_COLUMNS))})")
        while True:
            item = self._queue.get()
            batch, events, stop = [], [], False
            deadline = time.monotonic() + 0.2
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    events.append(item)
                else:
                    batch.append(self._row(item))
                if stop or events or len(batch) >= 512:
                    break
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            if batch:
                with self._lock:
                    self._conn.execute("BEGIN")
                    self._conn.executemany(sql, batch)
                    self._conn.execute("COMMIT")
                    self._writes += len(batch)
                    if self._writes >= 256:
                        self._writes = 0
                        self._rotate_if_needed()
            for e in events:
                e.set()
            if stop:
                return

    def rotated(self) -> list[Path]:
        """Rotated request logs, newest first."""
        stem = self.path.stem
        return sorted(self.path.parent.glob(f"{stem}.*{self.path.suffix}"), reverse=True)

    def _rotate_if_needed(self) -> None:
        try:
            size = self.path.stat().st_size + self.path.with_name(self.path.name + "-wal").stat().st_size
        except FileNotFoundError:
            size = self.path.stat().st_size if self.path.exists() else 0
        if size <= self.config.max_mb * 1024 * 1024:
            return
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._conn.close()
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        os.replace(self.path, self.path.with_name(f"{self.path.stem}.{stamp}{self.path.suffix}"))
        for extra in ("-wal", "-shm"):
            self.path.with_name(self.path.name + extra).unlink(missing_ok=True)
        for old in self.rotated()[self.config.keep:]:
            old.unlink(missing_ok=True)
        self._conn = self._open_requests()

    def append(self, rec: RequestRecord) -> None:
        """Queue one record for the writer thread (question/answer/citations are dropped when
        ``capture_text`` is false); returns at once."""
        if not rec.time:
            rec = dataclasses.replace(rec, time=utc_now())
        self._queue.put(rec)

    def _row(self, rec: RequestRecord) -> list:
        capture = self.config.capture_text
        row = {
            "request_id": rec.request_id, "time": rec.time, "route": rec.route, "flow": rec.flow,
            "variant": rec.variant, "model": rec.model, "indexes": json.dumps(rec.indexes),
            "question": rec.question if capture else None, "answer": rec.answer if capture else None,
            "citations": json.dumps(rec.citations, ensure_ascii=False) if capture else None,
            "status": rec.status, "error": rec.error, "latency_ms": round(rec.latency_ms, 3),
            "retrieval_ms": round(rec.retrieval_ms, 3), "llm_ms": round(rec.llm_ms, 3),
            "prompt_tokens": rec.prompt_tokens, "completion_tokens": rec.completion_tokens,
            "cost_usd": rec.cost_usd, "stream": int(rec.stream), "arm": rec.arm,
        }
        return [row[c] for c in _REQUEST_COLUMNS]

    def find(self, request_id: str) -> Optional[dict]:
        """The logged request with this id (current log first, then rotated ones), or ``None``."""
        self.flush()
        with self._lock:
            cur = self._conn.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,))
            row = cur.fetchone()
            if row is not None:
                return dict(zip([d[0] for d in cur.description], row))
        for old in self.rotated():
            conn = sqlite3.connect(f"file:{old}?mode=ro", uri=True)
            try:
                cur = conn.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,))
                row = cur.fetchone()
                if row is not None:
                    return dict(zip([d[0] for d in cur.description], row))
            finally:
                conn.close()
        return None

    def add_feedback(self, request_id: str, rating: Literal["up", "down"], comment: Optional[str] = None,
                     correct_source: Optional[str] = None) -> dict:
        """Store feedback on a logged request; returns the stored row.

        Raises:
            UnknownRequest: no request log holds ``request_id``.
        """
        req = self.find(request_id)
        if req is None:
            raise UnknownRequest(f"unknown request_id {request_id!r}: no logged request has it")
        row = {"request_id": request_id, "time": utc_now(), "rating": rating, "comment": comment,
               "correct_source": correct_source, "flow": req["flow"], "variant": req["variant"],
               "question": req["question"], "answer": req["answer"], "citations": req["citations"],
               "indexes": req["indexes"], "arm": req.get("arm")}
        with self._lock:
            self._fb.execute(f"INSERT INTO feedback ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                             list(row.values()))
        return row


def iter_requests(path: str | Path) -> Iterator[dict]:
    """Rows of a request log file (read-only), oldest first."""
    conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        cur = conn.execute("SELECT * FROM requests ORDER BY time")
        names = [d[0] for d in cur.description]
        for row in cur:
            yield dict(zip(names, row))
    finally:
        conn.close()


def _doc_of(source: str) -> str:
    return source.replace("\\", "/").rsplit("/", 1)[-1]


def export_feedback(feedback_path: str | Path, out: str | Path, since: Optional[str] = None,
                    rating: Optional[str] = None, arm: Optional[str] = None) -> dict:
    """Write feedback as a JSONL question file for ``ragline index promote``'s gate and ``flow eval``.

    Each line: ``question``, ``doc`` (the ``correct_source`` given with the feedback; for a
    thumbs-up without one, the first cited source, since the user confirmed it), plus
    ``rating``, ``comment``, ``request_id``, ``time``, ``flow``, ``variant``, ``arm`` (of a split;
    ``null`` otherwise), ``served_answer``.
    ``doc`` is a file name (the trailing path part), as in ``data/sample-questions.jsonl``.
    Rows whose question was not captured, or with no known document, are skipped and counted.

    Args:
        feedback_path: ``feedback.sqlite``.
        out: output JSONL file (overwritten).
        since: ISO date or datetime (UTC); only feedback at or after it.
        rating: ``up`` or ``down`` to keep only one kind.
        arm: keep only feedback on answers of this split arm.

    Returns:
        ``{"written", "skipped_no_question", "skipped_no_doc", "out", "by_arm"}``; ``by_arm``
        counts the written lines per arm (``"-"`` for answers served outside a split).

    Raises:
        DataError: the feedback file does not exist, or ``since``/``rating`` are invalid.
    """
    fp = Path(feedback_path)
    if not fp.is_file():
        raise DataError(f"feedback file not found: {fp} (serve.request_log.path decides where it is)")
    if rating not in (None, "up", "down"):
        raise DataError(f"--rating {rating!r}: use up or down")
    since_iso = None
    if since:
        try:
            since_dt = dt.datetime.fromisoformat(since)
        except ValueError as e:
            raise DataError(f"--since {since!r}: use an ISO date such as 2026-12-01") from e
        if since_dt.tzinfo is None:
            since_dt = since_dt.replace(tzinfo=dt.timezone.utc)
        since_iso = since_dt.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    sql, args = "SELECT * FROM feedback WHERE 1=1", []
    if since_iso:
        sql += " AND time >= ?"
        args.append(since_iso)
    if rating:
        sql += " AND rating = ?"
        args.append(rating)
    conn = sqlite3.connect(f"file:{fp}?mode=ro", uri=True)
    try:
        has_arm = any(r[1] == "arm" for r in conn.execute("PRAGMA table_info(feedback)"))
        if arm:
            if not has_arm:
                return _empty_export(out)
            sql += " AND arm = ?"
            args.append(arm)
        cur = conn.execute(sql + " ORDER BY time, id", args)
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur]
    finally:
        conn.close()
    written = no_q = no_doc = 0
    by_arm: dict[str, int] = {}
    out_p = Path(out)
    out_p.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_p.with_name(out_p.name + f".tmp{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            if not r["question"]:
                no_q += 1
                continue
            doc = r["correct_source"]
            if not doc and r["rating"] == "up" and r["citations"]:
                cites = json.loads(r["citations"])
                doc = next((c.get("source") for c in cites if c.get("source")), None)
            if not doc:
                no_doc += 1
                continue
            line = {"question": r["question"], "doc": _doc_of(doc), "rating": r["rating"], "comment": r["comment"],
                    "request_id": r["request_id"], "time": r["time"], "flow": r["flow"], "variant": r["variant"],
                    "arm": r.get("arm"), "served_answer": r["answer"]}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
            written += 1
            by_arm[r.get("arm") or "-"] = by_arm.get(r.get("arm") or "-", 0) + 1
    os.replace(tmp, out_p)
    return {"written": written, "skipped_no_question": no_q, "skipped_no_doc": no_doc, "out": str(out_p),
            "by_arm": by_arm}


def _empty_export(out: str | Path) -> dict:
    """An empty question file (a feedback store older than splits has no arm to filter on)."""
    out_p = Path(out)
    out_p.parent.mkdir(parents=True, exist_ok=True)
    out_p.write_text("", encoding="utf-8")
    return {"written": 0, "skipped_no_question": 0, "skipped_no_doc": 0, "out": str(out_p), "by_arm": {}}


def monotonic_ms(t0: float) -> float:
    """Milliseconds since ``t0`` (a ``time.perf_counter()`` value)."""
    return (time.perf_counter() - t0) * 1000


__all__ = ["RequestLog", "RequestRecord", "UnknownRequest", "export_feedback", "iter_requests", "utc_now"]
