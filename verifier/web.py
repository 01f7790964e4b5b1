"""What every blueprint needs from a request: the services create_app built, and a JSON body."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app, request
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


MAX_JSON_DEPTH = 32


def _nests_too_deeply(raw: bytes) -> bool:
    """True when the JSON text nests arrays and objects deeper than MAX_JSON_DEPTH.

    Checked before parsing so that the answer does not depend on how much stack the parser has
    left (a deep body would otherwise be 400 or 200 by chance); most bodies skip the scan.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


def json_body() -> Any:
    """The request body parsed as JSON, None when there is none; BadRequest when it is not JSON.

    Werkzeug raises 413 here when the body is over MAX_CONTENT_LENGTH.
    """
    try:
        raw = request.get_data(cache=True)
        # A body without Content-Length (chunked) is read only up to the limit, and Werkzeug hands
        # back that prefix as if it were all: one byte more on the wire means the body is too large.
        limit = request.max_content_length
        if (limit is not None and len(raw) >= limit and request.content_length is None
                and request.input_stream.read(1)):
            raise RequestEntityTooLarge()
    except RequestEntityTooLarge:
        raise
    except Exception as exc:  # the WSGI server's own error: a malformed chunk, a client gone
        raise BadRequest("The body could not be read (malformed chunked encoding, or the "
                         "client stopped sending it).") from exc
    if not raw.strip():
        return None
    if _nests_too_deeply(raw):
        raise BadRequest(f"The body nests arrays or objects deeper than {MAX_JSON_DEPTH} levels.")
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("The body is not valid JSON.") from None
    if parsed is None:
        raise BadRequest("The body must be a JSON object, not null.")
    return parsed


# Reading more than this of an unread body, to let one answer through, is not worth it.
DRAIN_MAX_BYTES = 1 << 20


def drain_body_after(response: Response) -> None:
    """Once the answer is sent on a connection that closes, read what the client has already sent
    of the body and the view did not (never waiting for more, at most DRAIN_MAX_BYTES).

    A socket closed with unread input is reset rather than closed, and the reset can overtake the
    answer: a 401 decided from the header alone, on a connection the client asked to close, would
    come back as ECONNRESET. The server closes the connection after the response is closed, so
    reading there lets the answer arrive without delaying it. On a kept-alive connection gunicorn
    reads past the body itself before the next request, and gunicorn 27's gthread worker also
    lingers on close; this keeps the answer whole under gunicorn's other workers and releases,
    and never waits.
    """
    environ = request.environ  # plain lookups first: most requests are kept alive, and skip out
    sock = environ.get("gunicorn.socket")
    if sock is None or not _closes_after(environ.get("HTTP_CONNECTION"), environ.get("SERVER_PROTOCOL")):
        return
    if not (request.content_length or "HTTP_TRANSFER_ENCODING" in environ):
        return
    stream = request.input_stream
    response.call_on_close(lambda: _discard_received(stream, sock, DRAIN_MAX_BYTES))


def _closes_after(connection: str | None, protocol: str | None) -> bool:
    """True when the connection ends with this request (as gunicorn decides from the request)."""
    tokens = {token.strip().lower() for token in (connection or "").split(",")}
    if "close" in tokens:
        return True
    return protocol == "HTTP/1.0" and "keep-alive" not in tokens


def _discard_received(stream: Any, sock: Any, most: int) -> None:
    try:
        sock.setblocking(False)  # a client that stops sending must not hold the thread
        while most > 0:
            chunk = stream.read(min(most, 65536))
            if not chunk:
                return
            most -= len(chunk)
    except Exception:  # nothing more received yet, a client gone, a malformed chunk: done
        return
    finally:
        with contextlib.suppress(OSError):  # closed already
            sock.setblocking(True)
