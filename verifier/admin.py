"""The admin API under /admin/v1/: the platform's backend creates, lists and ends sessions, and keeps
its users' profiles and flags.

Every route on `bp` requires `Authorization: Bearer <admin key>` (`require_admin_key` runs before
each request); add one with `@admin_route(...)` and it is authenticated and documented. With no
VERIFIER_ADMIN_KEYS, create_app does not register `bp`, so every /admin/ path answers 404.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flask import Blueprint, Response, g, jsonify, request

from . import openapi, schemas, tokens
from .errors import (
    AdminKeyInvalid,
    AdminKeyMissing,
    PasswordExpired,
    TokenExpired,
    TokenInvalid,
    TokenMissing,
    UserBlocked,
    UserTokensNotConfigured,
    ValidationFailed,
)
from .web import json_body, services

log = logging.getLogger("verifier")

bp = Blueprint("admin", __name__, url_prefix="/admin/v1")
SECURITY = "adminKey"
# Every admin route can answer these, whatever it does.
COMMON_ERRORS = (401, 503)

View = TypeVar("View", bound=Callable[..., Any])


def admin_key_index(presented: str, keys: Sequence[str]) -> int | None:
    """The position of the configured key that was presented, or None; constant time over all keys."""
    # Equal-length digests: compare_digest then leaks neither a key's length nor its content, and
    # comparing every key (no early exit) does not tell which one matched.
    digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
    found = None
    for index, key in enumerate(keys):
        if hmac.compare_digest(digest, hashlib.sha256(key.encode()).digest()):
            found = index
    return found


def require_admin_key() -> None:
    """Let the request through only with one of VERIFIER_ADMIN_KEYS; AdminKey* (401) otherwise."""
    try:
        presented = tokens.token_from_authorization(request.headers.get("Authorization"))
    except TokenMissing:
        raise AdminKeyMissing() from None
    except TokenInvalid:
        raise AdminKeyInvalid() from None
    keys = services().settings.admin_keys or ()
    index = admin_key_index(presented, keys)
    if index is None:
        log.warning("admin request refused: unknown key %s on %s %s from %s",
                    tokens.fingerprint(presented), request.method, request.path, request.remote_addr)
        raise AdminKeyInvalid()
    g.admin_key = tokens.fingerprint(keys[index])


bp.before_request(require_admin_key)


@bp.after_request
def _audit(response: Response) -> Response:
    # Which key did what, so that an operator sees when a retired key stops being used.
    log.info("admin %s %s -> %d (key %s)", request.method, request.path, response.status_code,
             g.get("admin_key", "-"))
    return response


def admin_route(rule: str, method: str, *, errors: Sequence[int] = (),
                **doc: Any) -> Callable[[View], View]:
    """Serve a view at /admin/v1 + rule behind the admin key, and describe it in /openapi.json."""
    def register(view: View) -> View:
        described = openapi.operation(
            security=SECURITY, errors=tuple(sorted({*errors, *COMMON_ERRORS})), **doc)(view)
        bp.route(rule, methods=[method], provide_automatic_options=False)(described)
        return view
    return register


def _json(body: Any, status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def _no_content() -> Response:
    return Response(status=204, mimetype="application/json")


@admin_route("/sessions", "POST", body=schemas.CreateSessionSchema,
             responses={201: schemas.SessionCreatedSchema}, errors=(400, 413))
def create_session() -> Response:
    """Create a session for a user; the answer holds its token, shown this once."""
    manager = services().sessions
    data = schemas.load_session_request(
        json_body(), max_ttl_seconds=manager.max_ttl_seconds)
    ttl, idle = (data.pop(name, None) for name in schemas.LIFETIME_FIELDS)
    created = manager.create_session(data, ttl, idle)
    return _json(schemas.SESSION_CREATED.dump(created), 201)


@admin_route("/sessions/register", "POST", body=schemas.RegisterSessionSchema,
             responses={201: schemas.SessionRegisteredSchema}, errors=(400, 409, 413))
def register_session() -> Response:
    """Register a token the platform issued itself (e.g. its session JWT) for a user."""
    manager = services().sessions
    data = schemas.load_session_request(
        json_body(), max_ttl_seconds=manager.max_ttl_seconds, register=True)
    token = data.pop("token")
    ttl, idle = (data.pop(name, None) for name in schemas.LIFETIME_FIELDS)
    created = manager.register_session(token, data, ttl, idle)
    return _json(schemas.SESSION_REGISTERED.dump(created), 201)


@admin_route("/sessions/revoke", "POST", body=schemas.RevokeSessionSchema,
             responses={204: None}, errors=(400, 413),
             description="204 also when the session had already ended or never existed.")
def revoke_session() -> Response:
    """End one session; the token goes in the body, never in the URL."""
    services().sessions.revoke_session(schemas.load_revoke_request(json_body()))
    return _no_content()


@admin_route("/users/<user_id>/sessions", "GET", responses={200: schemas.SessionListSchema},
             errors=(400,), description="An empty list for a user with no live session.")
def list_user_sessions(user_id: str) -> Response:
    """List a user's live sessions, oldest first."""
    user_id = schemas.load_user_id(user_id)
    infos = services().sessions.list_sessions(user_id)
    return _json(schemas.SESSION_LIST.dump({"userId": user_id, "sessions": infos}))


@admin_route("/users/<user_id>/sessions", "DELETE", responses={200: schemas.RevokedSchema},
             errors=(400,))
def revoke_user_sessions(user_id: str) -> Response:
    """End every session of a user (e.g. after a password change); says how many were live."""
    revoked = services().sessions.revoke_user_sessions(schemas.load_user_id(user_id))
    return _json(schemas.REVOKED.dump({"revoked": revoked}))


@admin_route("/users/<user_id>", "GET", responses={200: schemas.UserSchema}, errors=(400, 404))
def get_user(user_id: str) -> Response:
    """Read a user's profile and flags."""
    record = services().sessions.get_user(schemas.load_user_id(user_id))
    return _json(schemas.USER.dump(record))


@admin_route("/users/<user_id>", "PATCH", body=schemas.UserUpdateSchema(partial=True),
             responses={200: schemas.UserSchema}, errors=(400, 404, 413),
             description="Any subset of the profile fields and flags; emailVerified null clears it. "
                         "The result is validated whole before anything is written.")
def update_user(user_id: str) -> Response:
    """Change a user's profile and flags; every session sees them at its next verification."""
    record = services().sessions.update_user(schemas.load_user_id(user_id), json_body())
    return _json(schemas.USER.dump(record))


@admin_route("/users/<user_id>/blocked", "PUT", responses={204: None}, errors=(400, 404))
def block_user(user_id: str) -> Response:
    """Block the user: verification answers 403 user_blocked."""
    services().sessions.set_blocked(schemas.load_user_id(user_id), True)
    return _no_content()


@admin_route("/users/<user_id>/blocked", "DELETE", responses={204: None}, errors=(400, 404))
def unblock_user(user_id: str) -> Response:
    """Unblock the user."""
    services().sessions.set_blocked(schemas.load_user_id(user_id), False)
    return _no_content()


@admin_route("/users/<user_id>/password-expired", "PUT", responses={204: None}, errors=(400, 404))
def expire_password(user_id: str) -> Response:
    """Mark the user's password expired: verification answers 403 password_expired."""
    services().sessions.set_password_expired(schemas.load_user_id(user_id), True)
    return _no_content()


@admin_route("/users/<user_id>/password-expired", "DELETE", responses={204: None},
             errors=(400, 404))
def clear_password_expired(user_id: str) -> Response:
    """Clear the user's password expiry (they have changed it)."""
    services().sessions.set_password_expired(schemas.load_user_id(user_id), False)
    return _no_content()


# A session that cannot be used is a bad field of the body here: a 401 would read as a bad admin key.
_SESSION_DENIALS = (TokenInvalid, TokenExpired, UserBlocked, PasswordExpired)


@admin_route("/user-tokens", "POST",
             body={"oneOf": [schemas.UserTokenFromSessionSchema, schemas.UserTokenFromProfileSchema]},
             responses={200: schemas.UserTokenIssuedSchema}, errors=(400, 413, 501),
             description="Mozarto's x-user-token mode: a JWT of the user's details, HS256 with "
                         "MOZARTO_SECRET_KEY, iat backdated by VERIFIER_USER_TOKEN_SKEW_SECONDS. "
                         "The body is {\"sessionToken\": ...} (the session must verify; that "
                         "counts as a verification) or the profile fields as for creating a "
                         "session. 501 when MOZARTO_SECRET_KEY is unset.")
def issue_user_token() -> Response:
    """Mint an x-user-token for a live session's user or for a profile."""
    issuer = services().user_tokens
    if issuer is None:
        raise UserTokensNotConfigured("MOZARTO_SECRET_KEY is not set")
    session_token, profile, ttl = schemas.load_user_token_request(json_body())
    if session_token is not None:
        try:
            profile = services().sessions.verify_session(session_token)
        except _SESSION_DENIALS as exc:
            raise ValidationFailed({"sessionToken": [str(type(exc).__doc__)]}) from None
    return _json(schemas.USER_TOKEN_ISSUED.dump(issuer.issue(profile, ttl)))
