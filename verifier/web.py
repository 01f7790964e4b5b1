"""What every blueprint needs from a request: the services create_app built, and a JSON body."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from .callers import CallerPolicy
from .config import Settings
from .errors import BadRequest
from .ratelimit import FailureLimiter
from .readiness import Readiness
from .sessions import SessionManager
from .store import SessionStore
from .user_tokens import UserTokenIssuer

EXTENSION = "verifier"


@dataclass(frozen=True)
class Services:
    """The objects create_app built once per process; views reach them through `services()`."""

    settings: Settings
    store: SessionStore
    sessions: SessionManager
    readiness: Readiness
    callers: CallerPolicy
    limiter: FailureLimiter
    # None when MOZARTO_SECRET_KEY is unset: minting answers 501.
    user_tokens: UserTokenIssuer | None = None


def services() -> Services:
    """The current app's services."""
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


def json_body() -> Any:
    """The request body parsed as JSON, None when there is none; BadRequest when it is not JSON.

    Werkzeug raises 413 here when the body is over MAX_CONTENT_LENGTH.
    """
    raw = request.get_data(cache=True)
    # A body without Content-Length (chunked) is read only up to the limit, and Werkzeug hands
    # back that prefix as if it were all: one byte more on the wire means the body is too large.
    limit = request.max_content_length
    if (limit is not None and request.content_length is None and len(raw) >= limit
            and request.input_stream.read(1)):
        raise RequestEntityTooLarge()
    if not raw.strip():
        return None
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("The body is not valid JSON.") from None
    if parsed is None:
        raise BadRequest("The body must be a JSON object, not null.")
    return parsed
