"""The User Auth URL that Mozarto calls: POST (or GET) /api/v1/mozarto/verify-user."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from . import openapi, schemas, tokens
from .web import json_body, services

bp = Blueprint("verify", __name__)

VERIFY_PATH = "/api/v1/mozarto/verify-user"


@bp.route(VERIFY_PATH, methods=["GET", "POST"], provide_automatic_options=False)
@openapi.operation(
    security="sessionToken", body=schemas.VerifyRequestSchema, body_required=False,
    responses={200: schemas.VerifiedEnvelopeSchema}, errors=(400, 401, 403, 413, 503),
    description="Mozarto's User Auth URL call. The body is optional; a userId in it must be the "
                "session's user. A 403 carries no profile data.")
def verify_user() -> Response:
    """Answer Mozarto: the user's details for a live session token, or a typed denial."""
    token = tokens.token_from_authorization(request.headers.get("Authorization"))
    expected_user_id = schemas.load_verify_request(json_body())
    profile = services().sessions.verify_session(token, expected_user_id)
    return jsonify(schemas.dump_verified(profile))
