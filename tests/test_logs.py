"""Logs: one JSON line per request, the configuration at start, never a token or a caller key."""

from __future__ import annotations

import io
import json
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from verifier import logs
from verifier.app import create_app
from verifier.config import load_settings

PATH = "/api/v1/mozarto/verify-user"
KEY = "caller-key-" + "q" * 32


class Lines:
    """What verifier wrote to its log stream, one parsed JSON object per line."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]

    def requests(self) -> list[dict[str, Any]]:
        return [line for line in self.all() if line["message"] == "request"]


@pytest.fixture
def lines(app) -> Iterator[Lines]:
    """verifier's log records, captured after create_app pointed them at stdout."""
    captured = Lines()
    logs.configure("INFO", captured.stream)
    yield captured
    logs.configure("INFO")


def test_one_line_per_verification_with_every_field(client: FlaskClient, make_session, lines) -> None:
    token = make_session()
    response = client.post(PATH, headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-42"},
                           json={"userId": "u-1"})
    assert response.status_code == 200 and response.headers["X-Request-ID"] == "req-42"
    [line] = lines.requests()
    assert line["request_id"] == "req-42"
    assert line["method"] == "POST" and line["route"] == PATH
    assert line["status"] == 200 and line["outcome"] == "verified"
    assert line["user_id"] == "u-1"
    assert line["caller"] == "127.0.0.1"
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0
    assert line["level"] == "INFO" and line["time"].endswith("+00:00") and line["pid"]
    assert len(line["token_fingerprint"]) == 12
    assert token not in lines.text


@pytest.mark.parametrize(("auth", "outcome"), [
    (None, "missing_token"), ("Bearer vfs_abcd_" + "A" * 43, "invalid_token"),
    ("Bearer a b", "invalid_token"),
])
def test_a_refusal_logs_its_code_and_no_user(client: FlaskClient, lines, auth: str | None,
                                             outcome: str) -> None:
    client.post(PATH, headers={} if auth is None else {"Authorization": auth})
    [line] = lines.requests()
    assert line["status"] == 401 and line["outcome"] == outcome
    assert "user_id" not in line
    if auth is not None:
        assert auth.split(" ", 1)[1] not in lines.text


def test_other_routes_log_their_rule_not_their_path(client: FlaskClient, lines) -> None:
    client.get("/no/such/path?key=" + KEY)
    client.put(PATH)
    first, second = lines.requests()
    assert first["status"] == 404 and first["outcome"] == "not_found" and "route" not in first
    assert second["status"] == 405 and second["outcome"] == "method_not_allowed"
    assert "/no/such/path" not in lines.text and KEY not in lines.text


@pytest.mark.parametrize("sent", ["", "x" * 129, "has space", "tab\there", "caf\u00e9", "nul\x00", "del\x7f"])
def test_an_insane_request_id_is_replaced(client: FlaskClient, lines, sent: str) -> None:
    response = client.get("/livez", headers=[("X-Request-ID", sent)])
    made = response.headers["X-Request-ID"]
    assert made != sent and len(made) == 32
    assert sent.strip() == "" or sent not in lines.text


def test_a_request_id_is_made_when_none_is_sent(client: FlaskClient) -> None:
    first = client.get("/livez").headers["X-Request-ID"]
    second = client.get("/livez").headers["X-Request-ID"]
    assert first != second


def test_health_probes_are_not_logged_unless_asked(env, clock, client: FlaskClient, lines) -> None:
    client.get("/livez")
    client.get("/readyz")
    assert lines.requests() == []
    noisy = create_app(load_settings({**env, "VERIFIER_LOG_HEALTH_CHECKS": "true"}), clock=clock)
    logs.configure("INFO", lines.stream)
    noisy.test_client().get("/livez")
    [line] = lines.requests()
    assert line["route"] == "/livez" and line["outcome"] == "ok"


def test_no_token_and_no_caller_key_in_any_line(env, clock, lines) -> None:
    app = create_app(load_settings({**env, "VERIFIER_CALLER_KEYS": KEY}), clock=clock)
    logs.configure("INFO", lines.stream)
    client = app.test_client()
    token = app.extensions["verifier"].sessions.create_session({
        "userId": "u-1", "email": "ada@example.test", "firstName": "Ada", "lastName": "Lovelace",
        "phone": "+441234567890", "countryCode": "GB"}).token
    for query in (f"?key={KEY}", "?key=wrong", ""):
        for auth in (f"Bearer {token}", token, f"Bearer {token}x", "Bearer a " + token):
            client.post(PATH + query, headers={"Authorization": auth}, json={"userId": "u-1"})
    # A record that quotes a URL is redacted too (e.g. an error mentioning the request).
    logging.getLogger("verifier").warning("odd request to %s", f"{PATH}?key={KEY}")
    assert len(lines.requests()) == 12
    assert {line["status"] for line in lines.requests()} == {200, 401, 403}
    assert token not in lines.text and KEY not in lines.text
    assert f"{PATH}?key=***" in lines.text


def test_the_configuration_line_masks_secrets(env) -> None:
    captured = Lines()
    logs.configure("INFO", captured.stream)
    try:
        settings = load_settings({**env, "VERIFIER_CALLER_KEYS": KEY,
                                  "VERIFIER_REDIS_URL": "redis://user:hunter2@127.0.0.1:1/0"})
        logs.log_configuration(settings.masked())
    finally:
        logs.configure("INFO")
    [line] = captured.all()
    assert line["message"] == "configuration"
    assert line["configuration"]["VERIFIER_CALLER_KEYS"] == "1 key, masked"
    assert line["configuration"]["VERIFIER_REDIS_URL"] == "redis://user:***@127.0.0.1:1/0"
    assert "hunter2" not in captured.text and KEY not in captured.text


def test_an_unexpected_error_is_logged_as_json_with_its_traceback(lines) -> None:
    try:
        raise RuntimeError(f"boom at {PATH}?key={KEY}")
    except RuntimeError:
        logging.getLogger("verifier").exception("unexpected error")
    [line] = lines.all()
    assert line["level"] == "ERROR" and "RuntimeError" in line["exception"]
    assert KEY not in lines.text


@pytest.mark.e2e
def test_gunicorn_access_log_is_redacted(gunicorn, env) -> None:
    server = gunicorn({**env, "VERIFIER_CALLER_KEYS": KEY, "GUNICORN_CMD_ARGS": "--access-logfile -"})
    response = requests.get(f"{server.url}{PATH}?key={KEY}", headers={"X-Request-ID": "e2e-1"}, timeout=5)
    assert response.status_code == 401 and response.headers["X-Request-ID"] == "e2e-1"
    [line] = server.request_lines(1)
    assert line["request_id"] == "e2e-1"
    # gunicorn writes its access line after the response has gone: wait for it.
    deadline = time.monotonic() + 10
    while f"{PATH}?key=" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log()
    assert f"{PATH}?key=***" in log, "gunicorn's access log line is there, redacted"
    assert KEY not in log
    config = [json.loads(line) for line in log.splitlines() if '"message":"configuration"' in line]
    assert len(config) == 1 and config[0]["configuration"]["VERIFIER_CALLER_KEYS"] == "1 key, masked"


class _Writes(io.StringIO):
    """A stream that records each flushed write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self._since_flush = ""

    def write(self, text: str) -> int:
        self._since_flush += text
        return super().write(text)

    def flush(self) -> None:
        if self._since_flush:
            self.writes.append(self._since_flush)
            self._since_flush = ""


def test_deferred_lines_wait_and_go_out_whole_in_order_before_a_record_written_at_once() -> None:
    stream = _Writes()
    writer = logs.LineWriter(stream, flush_ms=60_000)
    for number in range(40):
        writer.write(json.dumps({"n": number, "pad": "x" * 200}), defer=True)
    assert stream.writes == [], "deferred lines wait"
    writer.write(json.dumps({"n": "now"}))
    numbers = [json.loads(line)["n"] for line in stream.getvalue().splitlines()]
    assert numbers == [*range(40), "now"]
    assert len(stream.writes) > 1, "40 lines of 220 bytes take more than one write"
    for write in stream.writes:
        assert write.endswith("\n") and len(write.encode()) <= select.PIPE_BUF, \
            "each write is whole lines a pipe takes at once, so workers never split a line"


def test_a_deferred_line_is_written_within_the_flush_interval() -> None:
    stream = _Writes()
    writer = logs.LineWriter(stream, flush_ms=50)
    writer.write('{"n":1}', defer=True)
    deadline = time.monotonic() + 5
    while not stream.writes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.writes == ['{"n":1}\n']


def test_lines_still_waiting_are_written_at_exit(env) -> None:
    program = (
        "from verifier.app import create_app; from verifier.config import load_settings\n"
        "app = create_app(load_settings())\n"
        "assert app.test_client().get('/no/such/path').status_code == 404\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env, "VERIFIER_LOG_FLUSH_MS": "600000"})
    assert done.returncode == 0, done.stderr
    [line] = [json.loads(line) for line in done.stdout.splitlines() if '"message":"request"' in line]
    assert line["status"] == 404


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_line_times_are_written_as_datetime_writes_them(created: float) -> None:
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert logs._timestamp(created) == expected
    assert logs._timestamp(created) == expected, "and again, from the second it keeps"
