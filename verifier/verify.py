"""The User Auth URL that Mozarto calls: POST (or GET) /api/v1/mozarto/verify-user."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from . import schemas, tokens
from .web import json_body, services

bp = Blueprint("verify", __name__)

VERIFY_PATH = "/api/v1/mozarto/verify-user"


@bp.route(VERIFY_PATH, methods=["GET", "POST"], provide_automatic_options=False)
def verify_user() -> Response:
    """Answer Mozarto: the user's details for a live session token, or a typed denial."""
    token = tokens.token_from_authorization(request.headers.get("Authorization"))
    expected_user_id = schemas.load_verify_request(json_body())
    profile = services().sessions.verify_session(token, expected_user_id)
    return jsonify(schemas.dump_verified(profile))
