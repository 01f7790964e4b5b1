"""Named error conditions, and the one place that turns each into an HTTP status, a code and JSON."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask, Response

log = logging.getLogger("verifier")


class VerifierError(Exception):
    """Base of every condition verifier names; carries no HTTP."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.__class__.__doc__ or self.__class__.__name__)
        self.detail = detail


class TokenRefused(VerifierError):
    """The token opens no session: missing, invalid or expired (every failed verification)."""


class TokenMissing(TokenRefused):
    """No session token was sent."""


class TokenInvalid(TokenRefused):
    """The session token is unknown, revoked or malformed."""


class TokenExpired(TokenRefused):
    """The session's lifetime has passed."""


class PasswordExpired(VerifierError):
    """The user must change an expired password."""


class UserBlocked(VerifierError):
    """The platform has blocked the user."""


class UserMismatch(VerifierError):
    """The userId in the request is not the session's user."""


class BadRequest(VerifierError):
    """The request is malformed."""


class ValidationFailed(VerifierError):
    """Some fields are invalid; `fields` maps each bad field to its messages."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.fields = {name: _messages(msgs) for name, msgs in fields.items()}
        summary = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in self.fields.items())
        super().__init__(f"invalid fields: {summary}")


class TokenConflict(VerifierError):
    """That token is already registered for a session."""


class UserNotFound(VerifierError):
    """No such user is known."""


class AdminKeyMissing(VerifierError):
    """No admin key was sent to an admin route."""


class AdminKeyInvalid(VerifierError):
    """The admin key sent is not one of the configured keys."""


class CallerNotAllowed(VerifierError):
    """The caller's address is not allowed, or the URL does not carry a valid caller key."""


class RateLimited(VerifierError):
    """This caller has had too many failed verifications; `retry_after_seconds` until it may retry."""

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(f"too many failed verifications; retry after {retry_after_seconds} s")
        self.retry_after_seconds = retry_after_seconds


class StoreUnavailable(VerifierError):
    """The session store cannot be reached or answered too slowly."""


class NotReady(VerifierError):
    """The store has failed repeated readiness checks, or has not answered yet."""


class ShuttingDown(VerifierError):
    """This process is shutting down; requests in flight complete, new traffic goes elsewhere."""


class ConfigError(VerifierError):
    """The configuration is invalid; `problems` has one line per bad variable."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration: " + "; ".join(self.problems))


class UserTokensNotConfigured(ConfigError):
    """x-user-tokens cannot be minted or checked: the Secret key is missing or too short."""

    def __init__(self, problem: str) -> None:
        super().__init__([problem])
        self.detail = problem


def _messages(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [f"{k}: {' '.join(_messages(v))}" for k, v in value.items()]
    return [str(v) for v in value]


# The whole mapping from condition to answer: (status, code, envelope message, human message).
ANSWERS: dict[type[VerifierError], tuple[int, str, str, str]] = {
    BadRequest: (400, "bad_request", "Bad request", "The request body is not valid."),
    ValidationFailed: (400, "invalid_fields", "Bad request", "Some fields are invalid."),
    TokenMissing: (401, "missing_token", "Unauthorized",
                   "No session token was sent in the Authorization header."),
    TokenInvalid: (401, "invalid_token", "Unauthorized",
                   "The session token is unknown, revoked or malformed."),
    TokenExpired: (401, "expired_token", "Unauthorized", "The session has expired."),
    AdminKeyMissing: (401, "missing_admin_key", "Unauthorized",
                      "Send an admin key in the header 'Authorization: Bearer <admin key>'."),
    AdminKeyInvalid: (401, "invalid_admin_key", "Unauthorized",
                      "The admin key is not one of the keys in VERIFIER_ADMIN_KEYS."),
    PasswordExpired: (403, "password_expired", "Forbidden",
                      "The user's password has expired and must be changed."),
    UserBlocked: (403, "user_blocked", "Forbidden", "The platform has blocked this user."),
    UserMismatch: (403, "user_mismatch", "Forbidden",
                   "The userId in the request is not the session's user."),
    UserNotFound: (404, "user_not_found", "Not found", "No such user is known."),
    CallerNotAllowed: (403, "caller_not_allowed", "Forbidden", "This caller may not use this endpoint."),
    TokenConflict: (409, "token_exists", "Conflict", "That token is already registered."),
    RateLimited: (429, "rate_limited", "Too many requests",
                  "Too many failed verifications from this caller; retry after the Retry-After delay."),
    StoreUnavailable: (503, "unavailable", "Service unavailable",
                       "The session store is unavailable; retry shortly."),
    UserTokensNotConfigured: (501, "not_configured", "Not implemented",
                              "This server has no MOZARTO_SECRET_KEY, so it mints no x-user-tokens."),
    NotReady: (503, "not_ready", "Service unavailable",
               "Not ready: the session store has not answered the last readiness checks."),
    ShuttingDown: (503, "shutting_down", "Service unavailable",
                   "This process is shutting down; send new requests elsewhere."),
}

# Werkzeug's own HTTP errors (routing, body size) in the same envelope.
HTTP_ANSWERS: dict[int, tuple[str, str, str]] = {
    400: ("bad_request", "Bad request", "The request is malformed."),
    404: ("not_found", "Not found", "There is nothing at this path."),
    405: ("method_not_allowed", "Method not allowed", "This path does not answer that method."),
    413: ("payload_too_large", "Payload too large", "The request body is over the size limit."),
    500: ("internal_error", "Internal error", "An unexpected error occurred."),
}

RETRY_AFTER_SECONDS = "1"

# RFC 6750: a request with no credentials gets a challenge without an error code.
CHALLENGES: dict[type[VerifierError], str] = {
    AdminKeyMissing: 'Bearer realm="verifier-admin"',
    AdminKeyInvalid: 'Bearer realm="verifier-admin", error="invalid_token"',
}


def envelope(status: int, code: str, message: str, detail: str,
             extra: Sequence[Mapping[str, Any]] = ()) -> Response:
    """The one error envelope: status, a machine-readable code and a human message."""
    from flask import jsonify

    errors = [{"code": code, "message": detail}, *extra]
    response = jsonify(status="error", message=message, isSuccess=False, errors=errors)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    if status == 503:
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return response


def answer_for(error: VerifierError) -> Response:
    """Turn a domain error into its JSON answer."""
    status, code, message, human = ANSWERS[_answer_key(error)]
    extra: list[dict[str, Any]] = []
    if isinstance(error, ValidationFailed):
        extra = [{"code": "invalid_field", "field": name, "message": " ".join(msgs)}
                 for name, msgs in error.fields.items()]
    elif isinstance(error, BadRequest) and error.detail:
        human = error.detail
    response = envelope(status, code, message, human, extra)
    if type(error) in CHALLENGES:
        response.headers["WWW-Authenticate"] = CHALLENGES[type(error)]
    if isinstance(error, RateLimited):
        response.headers["Retry-After"] = str(error.retry_after_seconds)
    return response


def _answer_key(error: VerifierError) -> type[VerifierError]:
    for cls in type(error).__mro__:
        if cls in ANSWERS:
            return cls  # type: ignore[return-value]
    raise LookupError(f"no answer is defined for {type(error).__name__}")


def register_error_handlers(app: Flask) -> None:
    """Make every error, domain or HTTP (404, 405, 413, 500), answer in the one envelope."""
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(VerifierError)
    def _domain(error: VerifierError) -> Response:
        if isinstance(error, StoreUnavailable):
            log.error("store unavailable: %s", error.detail or error)
        return answer_for(error)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        status = error.code or 500
        code, message, human = HTTP_ANSWERS.get(
            status, (f"http_{status}", error.name, error.description or error.name))
        response = envelope(status, code, message, human)
        if status == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unexpected error: %s", type(error).__name__)
        return envelope(500, *HTTP_ANSWERS[500])
