"""A Python client of verifier's admin API: one method per operation, typed errors carrying the
service's error code, one requests.Session so that connections are reused.

    with AdminClient("https://verifier.internal", admin_key) as admin:
        created = admin.create_session(profile, ttl_seconds=3600)
        ...
        admin.revoke_session(created.token)

Tokens only ever travel in request bodies, never in URLs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import __version__

PREFIX = "/admin/v1"
DEFAULT_TIMEOUT_SECONDS = 5.0


class AdminError(Exception):
    """An admin call failed: the HTTP status (None when no answer came), the service's code, its message."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "error",
                 errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors or []

    @property
    def field_errors(self) -> dict[str, str]:
        """Each bad field of a 400 invalid_fields, with what is wrong with it."""
        return {str(e["field"]): str(e.get("message", "")) for e in self.errors if "field" in e}


class ValidationError(AdminError):
    """400: the body is not valid (`code` bad_request or invalid_fields; see `field_errors`)."""


class Unauthorized(AdminError):
    """401: the admin key is missing or not one of VERIFIER_ADMIN_KEYS."""


class NotFound(AdminError):
    """404: no such user, or no admin API there (it is off without VERIFIER_ADMIN_KEYS)."""


class Conflict(AdminError):
    """409: that token is already registered."""


class Unavailable(AdminError):
    """The service or its store cannot answer now (503, 502, 504, or no connection): retry later."""

    def __init__(self, message: str, *, retry_after_seconds: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_seconds = retry_after_seconds


_ERRORS: dict[int, type[AdminError]] = {
    400: ValidationError, 401: Unauthorized, 404: NotFound, 409: Conflict, 413: ValidationError,
    502: Unavailable, 503: Unavailable, 504: Unavailable,
}


@dataclass(frozen=True)
class CreatedSession:
    """A session just created; its token is shown this once (and never in a repr)."""

    token: str = field(repr=False)
    user_id: str
    expires_at: datetime
    idle_timeout_seconds: int


@dataclass(frozen=True)
class RegisteredSession:
    """A platform token just registered for a user."""

    user_id: str
    expires_at: datetime
    idle_timeout_seconds: int


@dataclass(frozen=True)
class Session:
    """One of a user's live sessions; last_verified_at is None until its first verification."""

    session_id: str
    created_at: datetime
    expires_at: datetime
    last_verified_at: datetime | None
    idle_timeout_seconds: int


@dataclass(frozen=True)
class User:
    """A user's profile (the x-user-token fields) and flags."""

    profile: dict[str, str]
    blocked: bool
    password_expired: bool

    @property
    def user_id(self) -> str:
        """The platform's user id."""
        return self.profile["userId"]


class AdminClient:
    """verifier's admin API over one requests.Session; every method raises an AdminError subclass."""

    def __init__(self, base_url: str, admin_key: str, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 *, session: requests.Session | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("base_url must be an http:// or https:// URL, e.g. http://127.0.0.1:8000")
        if not admin_key:
            raise ValueError("admin_key is empty")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._key = admin_key
        if session is None:
            session = requests.Session()
            # A connection that was never made can be tried again whatever the call; nothing else
            # is retried here, since a create sent twice would make two sessions.
            adapter = HTTPAdapter(max_retries=Retry(total=2, connect=2, read=0, status=0, other=0,
                                                    redirect=0, backoff_factor=0.05))
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._http = session

    def __repr__(self) -> str:
        return f"AdminClient({self.base_url!r})"

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def create_session(self, profile: Mapping[str, Any], *, ttl_seconds: int | None = None,
                       idle_timeout_seconds: int | None = None) -> CreatedSession:
        """Create a session for the user in `profile`; the result holds its token."""
        body = self._call("POST", "/sessions", {**profile, **_lifetimes(ttl_seconds,
                                                                         idle_timeout_seconds)})
        return CreatedSession(body["token"], body["userId"], _time(body["expiresAt"]),
                              body["idleTimeoutSeconds"])

    def register_session(self, token: str, profile: Mapping[str, Any], *,
                         ttl_seconds: int | None = None,
                         idle_timeout_seconds: int | None = None) -> RegisteredSession:
        """Register the platform's own token (e.g. its session JWT) for the user in `profile`."""
        body = self._call("POST", "/sessions/register", {
            "token": token, **profile, **_lifetimes(ttl_seconds, idle_timeout_seconds)})
        return RegisteredSession(body["userId"], _time(body["expiresAt"]),
                                 body["idleTimeoutSeconds"])

    def revoke_session(self, token: str) -> None:
        """End one session; no error when it had already ended."""
        self._call("POST", "/sessions/revoke", {"token": token})

    def revoke_user_sessions(self, user_id: str) -> int:
        """End every session of a user; how many were live."""
        return int(self._call("DELETE", f"/users/{_segment(user_id)}/sessions")["revoked"])

    def list_sessions(self, user_id: str) -> list[Session]:
        """The user's live sessions, oldest first."""
        body = self._call("GET", f"/users/{_segment(user_id)}/sessions")
        return [Session(s["sessionId"], _time(s["createdAt"]), _time(s["expiresAt"]),
                        _time(s["lastVerifiedAt"]) if s["lastVerifiedAt"] else None,
                        s["idleTimeoutSeconds"]) for s in body["sessions"]]

    def get_user(self, user_id: str) -> User:
        """The user's profile and flags; NotFound for a user verifier has never seen."""
        return _user(self._call("GET", f"/users/{_segment(user_id)}"))

    def update_user(self, user_id: str, changes: Mapping[str, Any]) -> User:
        """Change any profile fields and the flags `blocked`, `passwordExpired` at once."""
        return _user(self._call("PATCH", f"/users/{_segment(user_id)}", dict(changes)))

    def set_blocked(self, user_id: str, blocked: bool = True) -> None:
        """Block (or unblock) the user: verification answers 403 user_blocked."""
        self._call("PUT" if blocked else "DELETE", f"/users/{_segment(user_id)}/blocked")

    def set_password_expired(self, user_id: str, expired: bool = True) -> None:
        """Mark (or clear) the user's password as expired: verification answers 403 password_expired."""
        self._call("PUT" if expired else "DELETE", f"/users/{_segment(user_id)}/password-expired")

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        with _transport_errors():
            response = self._http.request(
                method, f"{self.base_url}{PREFIX}{path}", json=body, timeout=self.timeout,
                allow_redirects=False,
                headers={"Authorization": f"Bearer {self._key}", "Accept": "application/json",
                         "User-Agent": f"verifier-admin-client/{__version__}"})
        if response.status_code == 204:
            return None
        if 200 <= response.status_code < 300:
            try:
                return response.json()
            except ValueError:
                raise AdminError("the answer is not JSON", status=response.status_code,
                                 code="bad_answer") from None
        raise _error(response)


def _lifetimes(ttl_seconds: int | None, idle_timeout_seconds: int | None) -> dict[str, int]:
    out = {}
    if ttl_seconds is not None:
        out["ttlSeconds"] = ttl_seconds
    if idle_timeout_seconds is not None:
        out["idleTimeoutSeconds"] = idle_timeout_seconds
    return out


def _segment(user_id: str) -> str:
    """The user id as one URL path segment."""
    if not user_id or "/" in user_id or user_id in (".", ".."):
        raise ValueError(f"user id {user_id!r} cannot be a URL path segment of the admin API")
    return quote(user_id, safe="")


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _user(body: Mapping[str, Any]) -> User:
    profile = {key: value for key, value in body.items() if key not in ("blocked", "passwordExpired")}
    return User(profile, bool(body["blocked"]), bool(body["passwordExpired"]))


def _error(response: requests.Response) -> AdminError:
    """The typed error for a failed answer, with the service's code when it sent its envelope."""
    status = response.status_code
    cls = _ERRORS.get(status, AdminError)
    code, message, errors = f"http_{status}", response.reason or "error", []
    try:
        envelope = response.json()
        errors = list(envelope["errors"])
        code, message = str(errors[0]["code"]), str(errors[0]["message"])
    except (ValueError, KeyError, IndexError, TypeError):
        pass  # not verifier's envelope (a proxy's page, say): the status says what there is
    if cls is Unavailable:
        return Unavailable(message, status=status, code=code, errors=errors,
                           retry_after_seconds=_retry_after(response.headers.get("Retry-After")))
    return cls(message, status=status, code=code, errors=errors)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@contextmanager
def _transport_errors() -> Iterator[None]:
    """No answer at all (refused, timed out, reset) is Unavailable with no status."""
    try:
        yield
    except requests.Timeout as exc:
        raise Unavailable(f"no answer in time: {exc}", code="timeout") from exc
    except requests.ConnectionError as exc:
        raise Unavailable(f"cannot connect: {exc}", code="connection_error") from exc
