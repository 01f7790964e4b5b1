"""Probe a User Auth URL the way Mozarto calls it, and check every answer against CONTRACT.md.

Only what goes over the wire is checked, so the probe works against any implementation.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from . import schemas
from .errors import ValidationFailed

DEFAULT_TIMEOUT_SECONDS = 5.0
SLOW_MS = 1000.0
# A User Auth URL answers a few hundred bytes; anything past this is not an answer to read whole.
MAX_BODY_BYTES = 1 << 20
JSON_TYPES = ("application/json",)


class Result(enum.StrEnum):
    """The outcome of one check: FAIL fails the probe; WARN only with --strict."""

    PASS = "pass"  # noqa: S105 (a check result)
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """One expectation and how the answer met it."""

    result: Result
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """The check as JSON-ready strings."""
        return {"result": self.result.value, "code": self.code, "message": self.message}


@dataclass
class Step:
    """One request the probe sent, what came back and the checks on it."""

    name: str
    title: str
    expected_status: int
    request_headers: dict[str, str]
    request_body: Any
    status: int | None = None
    latency_ms: float | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def result(self) -> Result:
        """The worst result among the step's checks."""
        results = {c.result for c in self.checks}
        for worst in (Result.FAIL, Result.WARN):
            if worst in results:
                return worst
        return Result.PASS

    def passed(self, what: str, code: str) -> None:
        """Record a check that passed."""
        self.checks.append(Check(Result.PASS, code, what))

    def warned(self, what: str, code: str) -> None:
        """Record a check that passed with a warning."""
        self.checks.append(Check(Result.WARN, code, what))

    def failed(self, what: str, code: str) -> None:
        """Record a check that failed."""
        self.checks.append(Check(Result.FAIL, code, what))

    def expect(self, ok: bool, code: str, good: str, bad: str, *, warn_only: bool = False) -> bool:
        """Record `good` when ok, else `bad` as a failure (or a warning); return ok."""
        if ok:
            self.passed(good, code)
        elif warn_only:
            self.warned(bad, code)
        else:
            self.failed(bad, code)
        return ok

    def as_dict(self) -> dict[str, Any]:
        """The step as JSON: the request (token masked), status, latency and checks."""
        return {
            "name": self.name, "title": self.title, "result": self.result.value,
            "request": {"method": "POST", "headers": self.request_headers, "body": self.request_body},
            "expectedStatus": self.expected_status, "status": self.status,
            "latencyMs": None if self.latency_ms is None else round(self.latency_ms, 1),
            "checks": [c.as_dict() for c in self.checks],
        }


@dataclass
class ProbeReport:
    """Every step of one probe of a User Auth URL."""

    url: str
    steps: list[Step] = field(default_factory=list)
    notes: list[Check] = field(default_factory=list)

    @property
    def failures(self) -> list[tuple[str, Check]]:
        """(step name, check) of every failed check."""
        return [(s.name, c) for s in self.steps for c in s.checks if c.result is Result.FAIL] + \
            [("url", c) for c in self.notes if c.result is Result.FAIL]

    @property
    def warnings(self) -> list[tuple[str, Check]]:
        """(step name, check) of every warning."""
        return [(s.name, c) for s in self.steps for c in s.checks if c.result is Result.WARN] + \
            [("url", c) for c in self.notes if c.result is Result.WARN]

    def passed(self, strict: bool = False) -> bool:
        """No failure (and, when strict, no warning)."""
        return not self.failures and not (strict and self.warnings)

    def as_dict(self, strict: bool = False) -> dict[str, Any]:
        """The report as JSON."""
        return {"url": self.url, "ok": self.passed(strict),
                "failures": len(self.failures), "warnings": len(self.warnings),
                "notes": [c.as_dict() for c in self.notes],
                "steps": [s.as_dict() for s in self.steps]}


class ProbeUsageError(ValueError):
    """The probe cannot start: a bad URL or token."""


def _masked(token: str) -> str:
    return f"Bearer <token: {len(token)} chars>"


def _is_local(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Prober:
    """Sends Mozarto's request and the failure cases to one URL."""

    def __init__(self, url: str, token: str, user_id: str | None = None, *,
                 timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, slow_ms: float = SLOW_MS,
                 http: requests.Session | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProbeUsageError(f"not an http(s) URL: {url!r}")
        if not token or token != token.strip() or any(c in token for c in "\r\n"):
            raise ProbeUsageError("the token must be non-empty, with no surrounding whitespace")
        if token.lower().startswith("bearer "):
            raise ProbeUsageError("give the token alone; the probe adds 'Bearer ' itself")
        self.url = url
        self.token = token
        self.user_id = user_id
        self.timeout_seconds = timeout_seconds
        self.slow_ms = slow_ms
        self._own_http = http is None
        self.http = http or requests.Session()
        self.report = ProbeReport(url)

    def run(self) -> ProbeReport:
        """Every step, in order; the report says what passed."""
        try:
            return self._run()
        finally:
            if self._own_http:
                self.http.close()

    def _run(self) -> ProbeReport:
        self.check_url()
        body = {"userId": self.user_id} if self.user_id is not None else None
        valid = self.send("valid_token", "the session token, as Mozarto forwards it", 200,
                          self.token, body)
        verified_user = self.check_success(valid) if valid is not None else None
        missing = self.send("no_token", "no Authorization header", 401, None, body)
        if missing is not None:
            self.check_denial(missing, 401, "missing_token")
        wrong = self.send("wrong_token", "a token nobody issued", 401,
                          f"probe_{secrets.token_urlsafe(32)}", body)
        if wrong is not None:
            self.check_denial(wrong, 401, "invalid_token")
        other = f"probe-not-{verified_user or self.user_id or 'the-user'}-{secrets.token_hex(4)}"
        mismatch = self.send("wrong_user_id", "the session token with another user's userId",
                             403, self.token, {"userId": other})
        if mismatch is not None:
            self.check_denial(mismatch, 403, "user_mismatch")
        return self.report

    def check_url(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme != "https" and not _is_local(parts.hostname or ""):
            self.report.notes.append(Check(
                Result.WARN, "not_https",
                "The URL is plain http: Mozarto will send your users' session tokens over it. "
                "Register an https URL."))

    def send(self, name: str, title: str, expected: int, token: str | None,
             body: Mapping[str, Any] | None) -> tuple[Step, requests.Response] | None:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        shown = dict(headers)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
            shown["Authorization"] = _masked(token)
        step = Step(name, title, expected, shown, body)
        self.report.steps.append(step)
        data = json.dumps(body).encode() if body is not None else None
        started = time.perf_counter()
        try:
            response = self.http.post(self.url, headers=headers, data=data, stream=True,
                                      timeout=self.timeout_seconds, allow_redirects=False)
            with response:
                too_long = _read_body(response, started + self.timeout_seconds)
        except requests.Timeout:
            step.latency_ms = (time.perf_counter() - started) * 1000
            step.failed(f"no answer within {self.timeout_seconds:g} s; Mozarto's own timeout is "
                        "unknown, answers should come well inside a second", "timeout")
            return None
        except requests.RequestException as exc:
            step.latency_ms = (time.perf_counter() - started) * 1000
            step.failed(f"no answer: {type(exc).__name__}: {_short(str(exc))}", "unreachable")
            return None
        step.latency_ms = (time.perf_counter() - started) * 1000
        step.status = response.status_code
        if too_long:
            step.failed(f"the body was still coming after {self.timeout_seconds:g} s or "
                        f"{MAX_BODY_BYTES} bytes; an answer is a small JSON object", too_long)
            return None
        step.expect(step.latency_ms < self.slow_ms, "latency",
                    f"answered in {step.latency_ms:.0f} ms",
                    f"answered in {step.latency_ms:.0f} ms; keep answers well inside a second",
                    warn_only=True)
        return step, response

    # What every answer must have.
    def check_common(self, step: Step, response: requests.Response) -> Any:
        step.expect(response.status_code == step.expected_status, "status",
                    f"status {response.status_code}",
                    f"status {response.status_code}, expected {step.expected_status}"
                    + _status_hint(response))
        ctype = response.headers.get("Content-Type", "")
        step.expect(ctype.split(";")[0].strip().lower() in JSON_TYPES, "content_type",
                    f"Content-Type {ctype}",
                    f"Content-Type {ctype or '(none)'}, expected application/json")
        cache = response.headers.get("Cache-Control", "")
        step.expect("no-store" in [d.strip().lower() for d in cache.split(",")], "cache_control",
                    "Cache-Control: no-store",
                    f"Cache-Control {cache or '(none)'}, expected no-store: a cache could keep "
                    "the user's details")
        try:
            body = _json(response)
        except ValueError:
            step.failed(f"the body is not JSON: {_short(response.text)!r}", "body_not_json")
            return None
        if not isinstance(body, dict):
            step.failed(f"the body is JSON {type(body).__name__}, not an object", "envelope")
            return None
        return body

    def check_success(self, sent: tuple[Step, requests.Response]) -> str | None:
        step, response = sent
        body = self.check_common(step, response)
        if body is None or response.status_code != 200:
            # A denial is not a malformed success: the status check already says why.
            return None
        envelope_ok = all([
            step.expect(body.get("status") == "success", "envelope_status",
                        'envelope status "success"',
                        f'envelope status is {_show(body.get("status"))}, expected "success"'),
            step.expect(body.get("isSuccess") is True, "envelope_is_success",
                        "envelope isSuccess true",
                        f"envelope isSuccess is {_show(body.get('isSuccess'))}, expected true"),
            step.expect(isinstance(body.get("message"), str), "envelope_message",
                        "envelope message is a string",
                        f"envelope message is {_show(body.get('message'))}, expected a string"),
        ])
        data = body.get("data")
        if not isinstance(data, dict):
            flat = [k for k in schemas.PROFILE_FIELDS if k in body]
            hint = (f"; the profile fields ({', '.join(flat)}) are at the top level: wrap them "
                    'in {"status": "success", "isSuccess": true, "message": ..., "data": {...}}'
                    if flat else "")
            step.failed(f"no profile object in data (data is {_show(data)}){hint}", "envelope_data")
            return None
        if envelope_ok:
            step.passed("the envelope is Mozarto's", "envelope")
        return self.check_profile(step, data)

    def check_profile(self, step: Step, data: Mapping[str, Any]) -> str | None:
        not_strings = [k for k in schemas.PROFILE_FIELDS
                       if k in data and data[k] is not None and not isinstance(data[k], str)]
        step.expect(not not_strings, "profile_strings", "every profile field is a string",
                    f"not strings: {', '.join(f'{k}={_show(data[k])}' for k in not_strings)}")
        if data.get("emailVerified", "") is None:
            step.warned("emailVerified is null; leave it out when the user has none",
                        "profile_null")
        try:
            # Extra fields are the implementation's business: Mozarto reads only these.
            profile = schemas.load_profile({k: v for k, v in data.items() if k in schemas.PROFILE_FIELDS
                                            and not (k == "emailVerified" and v is None)})
        except ValidationFailed as exc:
            for key, messages in exc.fields.items():
                step.failed(f"profile {key}: {' '.join(messages)}", "profile")
            return None
        step.passed("the profile has every required field, valid", "profile")
        user_id = str(profile["userId"])
        if self.user_id is not None:
            step.expect(user_id == self.user_id, "profile_user_id",
                        f"data.userId is the user asked for ({self.user_id})",
                        f"data.userId is {user_id!r}, the request asked for {self.user_id!r}")
        return user_id

    def check_denial(self, sent: tuple[Step, requests.Response], status: int, code: str) -> None:
        step, response = sent
        body = self.check_common(step, response)
        if status == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            step.expect(challenge.lower().startswith("bearer"), "www_authenticate",
                        f"WWW-Authenticate: {challenge}",
                        f"WWW-Authenticate is {challenge or '(none)'}, expected "
                        'Bearer error="invalid_token" (RFC 6750)')
        if body is None:
            return
        step.expect(body.get("status") == "error" and body.get("isSuccess") is False,
                    "envelope", 'error envelope (status "error", isSuccess false)',
                    f"not the error envelope: status {_show(body.get('status'))}, "
                    f"isSuccess {_show(body.get('isSuccess'))}")
        data = body.get("data")
        leaked = [k for k in schemas.PROFILE_FIELDS
                  if k in body or (isinstance(data, dict) and k in data)]
        step.expect(not leaked, "no_profile", "no profile data in a denial",
                    f"a denial carries profile data ({', '.join(leaked)})")
        errors = body.get("errors")
        first = errors[0] if isinstance(errors, list) and errors else None
        if not isinstance(first, dict) or not isinstance(first.get("code"), str):
            step.failed('no errors list with a machine-readable code, e.g. '
                        f'"errors": [{{"code": "{code}", "message": "..."}}]', "error_code")
            return
        # The codes are this contract's (CONTRACT.md); Mozarto documents only the status.
        step.expect(first["code"] == code, "error_code", f"error code {code}",
                    f"error code {first['code']!r}, CONTRACT.md says {code!r}", warn_only=True)


def _read_body(response: requests.Response, deadline: float) -> str | None:
    """Read the body within the deadline and size cap; the failure code when it overran."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(8192):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return "body_too_large"
        if time.perf_counter() > deadline:
            return "timeout"
        chunks.append(chunk)
    response._content = b"".join(chunks)  # what .json() and .text read from now on
    return None


def _json(response: requests.Response) -> Any:
    """The body as JSON; ValueError also for JSON nested too deep to decode."""
    try:
        return response.json()
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def _show(value: Any) -> str:
    return "missing" if value is None else _short(json.dumps(value))


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _status_hint(response: requests.Response) -> str:
    if 300 <= response.status_code < 400:
        return f" (a redirect to {response.headers.get('Location', '?')}: register the final URL)"
    try:
        first = _json(response)["errors"][0]
        return f" (the server says {first['code']}: {_short(str(first.get('message', '')))})"
    except (ValueError, LookupError, TypeError):
        return ""


def probe(url: str, token: str, user_id: str | None = None, *,
          timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> ProbeReport:
    """Probe a User Auth URL with a live session token; ProbeUsageError for a bad URL or token."""
    return Prober(url, token, user_id, timeout_seconds=timeout_seconds).run()


def format_report(report: ProbeReport, strict: bool = False) -> str:
    """The report for people: one block per step, one line per check that did not pass."""
    lines = [f"probe {report.url}"]
    for note in report.notes:
        lines.append(f"  {note.result.value.upper():4}  {note.code}: {note.message}")
    for step in report.steps:
        status = "-" if step.status is None else str(step.status)
        latency = "" if step.latency_ms is None else f"{step.latency_ms:6.0f} ms"
        lines.append(f"  {step.result.value.upper():4}  {step.name:<14} {status:>3} "
                     f"(expected {step.expected_status}) {latency}  {step.title}")
        for check in step.checks:
            if check.result is not Result.PASS:
                lines.append(f"        {check.result.value}: {check.code}: {check.message}")
    failures, warnings = len(report.failures), len(report.warnings)
    verdict = "OK" if report.passed(strict) else "FAILED"
    lines.append(f"{verdict}: {len(report.steps)} requests, {failures} failures, "
                 f"{warnings} warnings")
    return "\n".join(lines)
