"""Logs: JSON lines on stdout, one per request, and never a token or a caller key in any of them.

The request line carries: time, request id (the caller's X-Request-ID when sane, else made; echoed
back), method, route (the rule, not the raw path), status, outcome (the error code, or "verified" /
"ok"), latency_ms, caller (the resolved address), token_fingerprint (never the token) and user_id on
a successful verification.

Request lines are formatted here, not by `logging` (its records, handler lock and formatter cost a
verification 30 us), and wait in memory for up to VERIFIER_LOG_FLUSH_MS so that one write carries
many of them, as nginx's and Envoy's buffered access logs do; every other record goes through
`logging` and is written at once, after the request lines before it.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import math
import os
import re
import secrets
import select
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from flask import Response, g, request
from gunicorn.glogging import Logger as GunicornBaseLogger

from .callers import Address, redact

log = logging.getLogger("verifier")
access_log = logging.getLogger("verifier.access")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
_HANDLER_MARK = "_verifier_json"
HEALTH_BLUEPRINT = "health"


# ensure_ascii (the default): every line is ASCII, so its length in characters is its length in bytes.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)
# A pipe takes a write of up to this many bytes whole, so workers sharing stdout never split a line.
_ATOMIC_WRITE_BYTES = getattr(select, "PIPE_BUF", 512)


_second = (0, "")  # the last whole second formatted, for the lines within it


def _timestamp(created: float) -> str:
    """ISO 8601 in UTC to the millisecond, as datetime.isoformat writes it."""
    global _second
    fraction, whole_float = math.modf(created)
    whole, micros = int(whole_float), round(fraction * 1e6)  # datetime rounds to the microsecond
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{cached[1]}.{micros // 1000:03d}+00:00"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, pid, message, then the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": redact(record.getMessage()),
        }
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return _ENCODER.encode(out)


class LineWriter:
    """Writes whole JSON lines to a stream in order, in writes of at most PIPE_BUF bytes.

    A deferred line waits until `flush_ms` have passed since the oldest one waiting, or 64 KiB are
    waiting, or another line is written at once (0: every line at once). A thread of the process
    flushes what waits; so do exit and `flush()`.
    """

    MAX_WAITING_CHARS = 65536

    def __init__(self, stream: IO[str], flush_ms: int = 0) -> None:
        self.stream = stream
        self.flush_seconds = flush_ms / 1000
        self._lock = threading.Lock()
        self._waiting: list[str] = []
        self._waiting_chars = 0
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None

    def write(self, line: str, *, defer: bool = False) -> None:
        """Write one line (no newline at its end); with `defer`, it may wait up to flush_ms."""
        with self._lock:
            self._waiting.append(line + "\n")
            self._waiting_chars += len(line) + 1
            if not (defer and self.flush_seconds) or self._waiting_chars >= self.MAX_WAITING_CHARS:
                self._write_waiting()
                return
            first = len(self._waiting) == 1
        if first:
            if self._flusher is None:
                self._start_flusher()
            self._wake.set()

    def flush(self) -> None:
        """Write every line that waits."""
        with self._lock:
            self._write_waiting()

    def _write_waiting(self) -> None:
        chunk: list[str] = []
        size = 0
        for line in self._waiting:
            if chunk and size + len(line) > _ATOMIC_WRITE_BYTES:
                self._emit("".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self._emit("".join(chunk))
        self._waiting.clear()
        self._waiting_chars = 0

    def _emit(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stdout must not fail a request
            pass

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_forever, daemon=True,
                                                 name="verifier-log-flusher")
                self._flusher.start()

    def _flush_forever(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.flush_seconds)  # lines that arrive meanwhile go out with the first
            self._wake.clear()
            self.flush()

    def after_fork(self) -> None:
        """In a forked child: no flusher thread came along, and nothing waiting is the child's."""
        self._lock = threading.Lock()
        self._waiting, self._waiting_chars = [], 0
        self._wake = threading.Event()
        self._flusher = None


class _LineHandler(logging.Handler):
    """A logging handler that writes each record at once through the process's LineWriter."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.write(self.format(record))
        except Exception:  # logging's own contract: report, never raise
            self.handleError(record)


class RedactingFilter(logging.Filter):
    """Rewrites a record whose text carries a caller key (e.g. gunicorn's access log request line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class GunicornLogger(GunicornBaseLogger):  # type: ignore[misc]
    """gunicorn's own logger, with caller keys redacted from its error and access logs."""

    def setup(self, cfg: Any) -> None:
        """Set up gunicorn's handlers, then put the redacting filter on each of them."""
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                    handler.addFilter(RedactingFilter())


_writer = LineWriter(sys.stdout)
_pid = os.getpid()
# Made request ids: a random prefix per process and a counter (unique, and no system call each).
_id_prefix = secrets.token_hex(10)
_id_counter = itertools.count()


def _after_fork() -> None:
    global _pid, _id_prefix, _id_counter
    _pid, _id_prefix, _id_counter = os.getpid(), secrets.token_hex(10), itertools.count()
    _writer.after_fork()


os.register_at_fork(after_in_child=_after_fork)
atexit.register(lambda: _writer.flush())


def configure(level: str, stream: IO[str] | None = None, *, flush_ms: int = 0) -> None:
    """Send verifier's records to stdout (or `stream`) as JSON lines, request lines deferred up to
    `flush_ms`; calling it again replaces it (after writing what waits)."""
    global _writer
    _writer.flush()
    _writer = LineWriter(stream or sys.stdout, flush_ms)
    logger = logging.getLogger("verifier")
    for handler in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(handler)
    handler = _LineHandler(_writer)
    handler.setFormatter(JsonFormatter())  # it redacts caller keys itself
    setattr(handler, _HANDLER_MARK, True)
    logger.addHandler(handler)
    logger.setLevel(level)


def log_configuration(masked: dict[str, Any]) -> None:
    """Log the effective configuration (secrets already masked) once at start."""
    log.info("configuration", extra={"fields": {"configuration": masked}})


@dataclass(frozen=True)
class RequestRecord:
    """What one request did: the request log line's fields, also what the metrics count."""

    request_id: str
    method: str
    route: str | None
    blueprint: str | None
    endpoint: str | None
    status: int
    outcome: str
    latency_ms: float
    caller: str | None
    token_fingerprint: str | None
    user_id: str | None


def request_id(sent: str | None) -> str:
    """The caller's request id when it is 1-128 visible ASCII characters, else a new one."""
    if sent is not None and _SANE_REQUEST_ID.fullmatch(sent):
        return sent
    return f"{_id_prefix}{next(_id_counter):012x}"


def begin_request() -> None:
    """Start the clock and fix the request id; first thing for every request."""
    g.log_started = time.perf_counter()
    g.request_id = request_id(request.headers.get(REQUEST_ID_HEADER))
    g.log_fields = {}


def annotate(**fields: str | None) -> None:
    """Add fields (outcome, token_fingerprint, user_id) to this request's log line."""
    g.setdefault("log_fields", {}).update(fields)


def finish_request(response: Response, caller: Address | None, *, log_health: bool) -> RequestRecord:
    """Write the request's log line (health probes only when `log_health`) and echo its id."""
    started = g.get("log_started", time.perf_counter())
    fields: dict[str, Any] = g.get("log_fields", {})
    rid = g.get("request_id") or request_id(None)
    response.headers[REQUEST_ID_HEADER] = rid
    rule = request.url_rule
    record = RequestRecord(
        request_id=rid,
        method=request.method,
        route=rule.rule if rule is not None else None,
        blueprint=request.blueprint,
        endpoint=request.endpoint,
        status=response.status_code,
        outcome=_outcome(response, fields),
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
        caller=None if caller is None else str(caller),
        token_fingerprint=fields.get("token_fingerprint"),
        user_id=fields.get("user_id"),
    )
    if (log_health or record.blueprint != HEALTH_BLUEPRINT) and access_log.isEnabledFor(logging.INFO):
        _writer.write(_request_line(record), defer=True)
    return record


_REQUEST_LINE_START = '{"time":"%s","level":"INFO","logger":"%s","pid":%d,"message":"request",'


def _request_line(record: RequestRecord) -> str:
    """The record as a JSON line like JsonFormatter's, without a LogRecord's cost."""
    # vars(), not asdict(): every field is flat, and asdict's deep copy showed in profiles.
    fields = {k: v for k, v in vars(record).items()
              if v is not None and k not in ("blueprint", "endpoint")}
    start = _REQUEST_LINE_START % (_timestamp(time.time()), access_log.name, _pid)
    return start + _ENCODER.encode(fields)[1:]


def _outcome(response: Response, fields: dict[str, Any]) -> str:
    if response.status_code < 400:
        return str(fields.get("outcome") or "ok")
    body = response.get_json(silent=True) if response.is_json else None
    try:
        return str(body["errors"][0]["code"])  # type: ignore[index]
    except (TypeError, KeyError, IndexError):
        return f"http_{response.status_code}"
