"""`verifier probe`: all green against verifier under gunicorn, and precise against wrong servers."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from click.testing import CliRunner
from conftest import PROFILE, free_port

from verifier.cli import cli
from verifier.probe import Prober, ProbeReport, ProbeUsageError, Result, probe

PATH = "/api/v1/mozarto/verify-user"
TOKEN = "probe-test-session-token-0123456789abcdef"
SUCCESS = {"status": "success", "message": "User verified", "isSuccess": True, "data": PROFILE}
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


# Tiny servers, each wrong in its own way, on free ports.

class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def answer(start_response: Callable[..., Any], status: str, body: Any,
           headers: dict[str, str] | None = None) -> list[bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    start_response(status, list({"Content-Type": "application/json", "Cache-Control": "no-store",
                                 **(headers or {})}.items()))
    return [raw]


def denial(start_response: Callable[..., Any], status: int, code: str) -> list[bytes]:
    reason = {401: "401 Unauthorized", 403: "403 Forbidden"}[status]
    extra = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else {}
    return answer(start_response, reason, {"status": "error", "message": "No", "isSuccess": False,
                                           "errors": [{"code": code, "message": "No."}]}, extra)


def by_the_contract(success: Any) -> WSGIApp:
    """A server that denies as CONTRACT.md says, and answers `success` for the right token."""
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        auth = environ.get("HTTP_AUTHORIZATION")
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(size) or b"{}")
        if not auth:
            return denial(start_response, 401, "missing_token")
        if auth != f"Bearer {TOKEN}":
            return denial(start_response, 401, "invalid_token")
        if str(body.get("userId", "u-1")) != "u-1":
            return denial(start_response, 403, "user_mismatch")
        return answer(start_response, "200 OK", success)
    return app


def always_yes(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """200 and the user's details to everything, token or not."""
    return answer(start_response, "200 OK", SUCCESS)


def plain_ok(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """200 'OK' as text to everything."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"OK"]


def sloppy_denials(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Right statuses, but no WWW-Authenticate, its own codes, and the profile in a 403."""
    if environ.get("HTTP_AUTHORIZATION") != f"Bearer {TOKEN}":
        return answer(start_response, "401 Unauthorized",
                      {"status": "error", "message": "No", "isSuccess": False,
                       "errors": [{"code": "unauthorized", "message": "No."}]})
    size = int(environ.get("CONTENT_LENGTH") or 0)
    if json.loads(environ["wsgi.input"].read(size) or b"{}").get("userId", "u-1") != "u-1":
        return answer(start_response, "403 Forbidden",
                      {"status": "error", "message": "No", "isSuccess": False, "data": PROFILE,
                       "errors": [{"code": "user_mismatch", "message": "No."}]})
    return answer(start_response, "200 OK", SUCCESS)


def redirects(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """A 302 to somewhere else for everything."""
    start_response("302 Found", [("Location", "https://elsewhere.example/verify")])
    return [b""]


@pytest.fixture
def serve() -> Iterator[Callable[[WSGIApp], str]]:
    """Serve a WSGI app on a free loopback port; its URL of the verify path."""
    servers: list[_Server] = []

    def start(app: WSGIApp) -> str:
        server = make_server("127.0.0.1", free_port(), app, server_class=_Server,
                             handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()
        servers.append(server)  # type: ignore[arg-type]
        return f"http://127.0.0.1:{server.server_port}{PATH}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def failed(report: ProbeReport) -> dict[str, set[str]]:
    """Step name to the codes of its failed checks, for every step."""
    return {s.name: {c.code for c in s.checks if c.result is Result.FAIL} for s in report.steps}


def warned(report: ProbeReport) -> dict[str, set[str]]:
    return {s.name: {c.code for c in s.checks if c.result is Result.WARN and c.code != "latency"}
            for s in report.steps}


def message(report: ProbeReport, step: str, code: str) -> str:
    return next(c.message for s in report.steps if s.name == step for c in s.checks
                if c.code == code and c.result is not Result.PASS)


NO_FAILURES = {"valid_token": set(), "no_token": set(), "wrong_token": set(), "wrong_user_id": set()}


# Against the real thing.

def test_probe_against_verifier_under_gunicorn_is_all_green(gunicorn, env, sessions) -> None:
    token = sessions.create_session(PROFILE).token
    url = gunicorn(env).url + PATH
    for user_id in ("u-1", None):
        report = probe(url, token, user_id)
        assert failed(report) == NO_FAILURES
        assert warned(report) == NO_FAILURES
        assert [(s.name, s.status) for s in report.steps] == [
            ("valid_token", 200), ("no_token", 401), ("wrong_token", 401), ("wrong_user_id", 403)]
        assert all(s.latency_ms is not None and s.latency_ms > 0 for s in report.steps)
        assert report.passed()
    result = CliRunner().invoke(cli, ["probe", url, "--token", token, "--user-id", "u-1", "--json"],
                                env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["ok"] is True and out["failures"] == 0
    assert [s["status"] for s in out["steps"]] == [200, 401, 401, 403]
    assert token not in result.output
    result = CliRunner().invoke(cli, ["probe", url, "--token", token], env=env)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1].startswith("OK: 4 requests, 0 failures")
    # An unknown token fails the first step, and the report says what the server said.
    report = probe(url, "vfs_0000_" + "A" * 43, "u-1")
    assert failed(report)["valid_token"] == {"status"}
    assert "invalid_token" in message(report, "valid_token", "status")
    assert not report.passed()


# Against servers that are wrong.

def test_a_server_that_says_yes_to_everything_fails_every_denial(serve) -> None:
    report = probe(serve(always_yes), TOKEN, "u-1")
    denial_401 = {"status", "www_authenticate", "envelope", "no_profile", "error_code"}
    assert failed(report) == {"valid_token": set(), "no_token": denial_401, "wrong_token": denial_401,
                              "wrong_user_id": denial_401 - {"www_authenticate"}}
    assert message(report, "no_token", "status") == "status 200, expected 401"
    assert message(report, "wrong_user_id", "status") == "status 200, expected 403"
    assert "profile data" in message(report, "wrong_token", "no_profile")


def test_a_flat_profile_without_the_envelope_is_named_as_such(serve) -> None:
    report = probe(serve(by_the_contract(PROFILE)), TOKEN, "u-1")
    assert failed(report) == {**NO_FAILURES, "valid_token": {
        "envelope_status", "envelope_is_success", "envelope_message", "envelope_data"}}
    hint = message(report, "valid_token", "envelope_data")
    assert "at the top level" in hint and "userId" in hint and '"data"' in hint


def test_the_contract_server_with_the_envelope_passes(serve) -> None:
    report = probe(serve(by_the_contract(SUCCESS)), TOKEN, "u-1")
    assert failed(report) == NO_FAILURES and report.passed()


@pytest.mark.parametrize(("data", "code", "words"), [
    ({**PROFILE, "userId": 1}, "profile_strings", "userId=1"),
    ({**PROFILE, "countryCode": "gb"}, "profile", "countryCode"),
    ({k: v for k, v in PROFILE.items() if k != "phone"}, "profile", "phone"),
    ({**PROFILE, "userId": "u-2"}, "profile_user_id", "'u-2'"),
])
def test_a_bad_profile_in_the_envelope_is_named_field_by_field(serve, data, code, words) -> None:
    report = probe(serve(by_the_contract({**SUCCESS, "data": data})), TOKEN, "u-1")
    assert code in failed(report)["valid_token"]
    assert words in message(report, "valid_token", code)


def test_plain_text_answers_fail_on_type_and_body(serve) -> None:
    report = probe(serve(plain_ok), TOKEN, "u-1")
    assert failed(report)["valid_token"] == {"content_type", "cache_control", "body_not_json"}
    assert failed(report)["no_token"] == {"status", "content_type", "cache_control", "body_not_json",
                                          "www_authenticate"}


def test_sloppy_denials_fail_on_headers_and_leaks_and_warn_on_codes(serve) -> None:
    report = probe(serve(sloppy_denials), TOKEN, "u-1")
    assert failed(report) == {**NO_FAILURES, "no_token": {"www_authenticate"},
                              "wrong_token": {"www_authenticate"}, "wrong_user_id": {"no_profile"}}
    assert warned(report) == {**NO_FAILURES, "no_token": {"error_code"},
                              "wrong_token": {"error_code"}}
    assert "CONTRACT.md says 'missing_token'" in message(report, "no_token", "error_code")


def test_warnings_pass_unless_strict(serve) -> None:
    url = serve(by_the_contract(SUCCESS))
    report = probe(url, TOKEN, "u-1")
    report.notes.append(report.steps[0].checks[0].__class__(Result.WARN, "x", "y"))
    assert report.passed() and not report.passed(strict=True)


def test_a_redirect_is_not_followed(serve) -> None:
    report = probe(serve(redirects), TOKEN, "u-1")
    assert "register the final URL" in message(report, "valid_token", "status")


def test_nobody_listening_fails_every_step_and_the_cli_exits_1() -> None:
    url = f"http://127.0.0.1:{free_port()}{PATH}"
    report = probe(url, TOKEN, "u-1")
    assert failed(report) == {name: {"unreachable"} for name in NO_FAILURES}
    result = CliRunner().invoke(cli, ["probe", url, "--token", TOKEN], env={})
    assert result.exit_code == 1
    assert "unreachable" in result.stdout and result.stdout.splitlines()[-1].startswith("FAILED")


def test_a_server_that_hangs_times_out(serve) -> None:
    release = threading.Event()

    def hangs(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        release.wait(10)
        return always_yes(environ, start_response)

    try:
        report = probe(serve(hangs), TOKEN, "u-1", timeout_seconds=0.2)
    finally:
        release.set()
    assert failed(report) == {name: {"timeout"} for name in NO_FAILURES}


def test_the_cli_report_is_readable_and_json_masks_the_token(serve) -> None:
    url = serve(always_yes)
    result = CliRunner().invoke(cli, ["probe", url, "--token", TOKEN], env={})
    assert result.exit_code == 1
    assert "fail: status: status 200, expected 401" in result.stdout
    result = CliRunner().invoke(cli, ["probe", url, "--token", TOKEN, "--json"], env={})
    out = json.loads(result.stdout)
    assert out["ok"] is False and out["failures"] == 14
    assert out["steps"][0]["request"]["headers"]["Authorization"].startswith("Bearer <token")
    assert TOKEN not in result.stdout


@pytest.mark.parametrize("args", [
    ("ftp://example.test/x", "--token", TOKEN),
    ("example.test/x", "--token", TOKEN),
    ("http://127.0.0.1/x", "--token", f"Bearer {TOKEN}"),
    ("http://127.0.0.1/x", "--token", ""),
    ("http://127.0.0.1/x",),
    ("http://127.0.0.1/x", "--token", TOKEN, "--timeout", "0"),
])
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    assert CliRunner().invoke(cli, ["probe", *args], env={}).exit_code == 2


def test_plain_http_to_a_public_host_is_a_warning() -> None:
    def notes(url: str) -> list[str]:
        prober = Prober(url, TOKEN)
        prober.check_url()
        return [n.code for n in prober.report.notes]

    assert notes("http://verifier.example/x") == ["not_https"]
    assert notes("https://verifier.example/x") == []
    assert notes("http://127.0.0.1:8000/x") == notes("http://localhost/x") == []
    with pytest.raises(ProbeUsageError):
        Prober("mailto:x", TOKEN)


def test_a_body_nested_too_deep_is_not_json_not_a_traceback(serve) -> None:
    def deep(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        # Read the request: wsgiref closing on unread bytes resets the connection mid-answer.
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        return answer(start_response, "200 OK", b"[" * 100_000 + b"]" * 100_000)

    report = probe(serve(deep), TOKEN, "u-1")
    assert all("body_not_json" in codes for codes in failed(report).values()), failed(report)


def test_an_endless_body_fails_at_the_size_cap(serve) -> None:
    def endless(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/json")])
        while True:
            yield b" " * 65536

    report = probe(serve(endless), TOKEN, "u-1")
    assert failed(report) == {name: {"body_too_large"} for name in NO_FAILURES}
