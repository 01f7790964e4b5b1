"""Logs: JSON lines on stdout, one per request, and never a token or a caller key in any of them.

The request line carries: time, request id (the caller's X-Request-ID when sane, else made; echoed
back), method, route (the rule, not the raw path), status, outcome (the error code, or "verified" /
"ok"), latency_ms, caller (the resolved address), token_fingerprint (never the token) and user_id on
a successful verification.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
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


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, pid, message, then the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": redact(record.getMessage()),
        }
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str, separators=(",", ":"))


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


def configure(level: str, stream: IO[str] | None = None) -> None:
    """Send verifier's records to stdout (or `stream`) as JSON lines; calling it again replaces it."""
    logger = logging.getLogger("verifier")
    for handler in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
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
    return uuid.uuid4().hex


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
    if log_health or record.blueprint != HEALTH_BLUEPRINT:
        # vars(), not asdict(): every field is flat, and asdict's deep copy showed in profiles.
        line = {k: v for k, v in vars(record).items()
                if v is not None and k not in ("blueprint", "endpoint")}
        access_log.info("request", extra={"fields": line})
    return record


def _outcome(response: Response, fields: dict[str, Any]) -> str:
    if response.status_code < 400:
        return str(fields.get("outcome") or "ok")
    body = response.get_json(silent=True) if response.is_json else None
    try:
        return str(body["errors"][0]["code"])  # type: ignore[index]
    except (TypeError, KeyError, IndexError):
        return f"http_{response.status_code}"
