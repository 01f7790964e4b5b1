"""The User Auth URL that Mozarto calls: POST (or GET) /api/v1/mozarto/verify-user."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from . import callers, logs, openapi, schemas, tokens
from .errors import CallerNotAllowed, TokenRefused
from .web import json_body, services

bp = Blueprint("verify", __name__)

VERIFY_PATH = "/api/v1/mozarto/verify-user"


@bp.before_request
def admit_caller() -> None:
    """Refuse (403) a caller outside the allowlist or without a caller key, before any lookup."""
    policy = services().callers
    key = request.args.get(callers.KEY_PARAMETER) if policy.needs_key else None
    if not policy.admits(callers.current(), key):
        raise CallerNotAllowed()


@bp.route(VERIFY_PATH, methods=["GET", "POST"], provide_automatic_options=False)
@openapi.operation(
    security="sessionToken", body=schemas.VerifyRequestSchema, body_required=False,
    responses={200: schemas.VerifiedEnvelopeSchema}, errors=(400, 401, 403, 413, 429, 503),
    description="Mozarto's User Auth URL call. The body is optional; a userId in it must be the "
                "session's user. A 403 carries no profile data. With VERIFIER_CALLER_KEYS set, the "
                "URL carries one of them as `?key=`; with VERIFIER_ALLOWED_CALLERS set, only those "
                "addresses may call (403 caller_not_allowed, before any lookup). Past "
                "VERIFIER_FAILED_VERIFY_LIMIT failures per caller, a failure answers 429.")
def verify_user() -> Response:
    """Answer Mozarto: the user's details for a live session token, or a typed denial."""
    try:
        profile = _verified_profile()
    except TokenRefused:
        services().limiter.record_failure(callers.current())  # RateLimited (429) past the limit
        raise
    logs.annotate(outcome="verified", user_id=profile["userId"])
    return jsonify(schemas.dump_verified(profile))


def _verified_profile() -> dict[str, str]:
    header = request.headers.get("Authorization")
    try:
        token = tokens.token_from_authorization(header)
    except TokenRefused:
        if header and header.strip():
            logs.annotate(token_fingerprint=tokens.fingerprint(header.strip()))
        # Every 401 costs the same store round trips: a malformed token is no faster to refuse.
        services().sessions.look_up_nothing()
        raise
    logs.annotate(token_fingerprint=tokens.fingerprint(token))
    return services().sessions.verify_session(token, schemas.load_verify_request(json_body()))
