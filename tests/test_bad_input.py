"""Bad input, property-based: whatever a caller sends in headers, body or method, the answer is a
4xx (or the 200 it deserves), in the envelope, and carries no profile data outside a 200. Through
Flask's test client in depth, a smaller sample through gunicorn over raw sockets, and gunicorn's
own limits on the request line and headers.

Example counts come from the hypothesis profile (tests/conftest.py; HYPOTHESIS_PROFILE=thorough
for more).
"""

from __future__ import annotations

import json
import re
import socket
import string
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import PROFILE
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from verifier.app import create_app
from verifier.config import load_settings
from verifier.web import MAX_JSON_DEPTH

PATH = "/api/v1/mozarto/verify-user"
# What a profile looks like in an answer; none of it may appear outside a 200.
PROFILE_MARKERS = [PROFILE["email"], PROFILE["phone"], PROFILE["lastName"], '"data"']
CLIENT_ERRORS = {400, 401, 403, 404, 405, 413, 414, 431}


@pytest.fixture(scope="module")
def bad_input_app(redis_url: str) -> Iterator[tuple[Flask, str]]:
    """One app and one live session for every example of this module."""
    app = create_app(load_settings({"VERIFIER_REDIS_URL": redis_url,
                                    "VERIFIER_KEY_PREFIX": "badinput"}))
    token = app.extensions["verifier"].sessions.create_session(PROFILE).token
    yield app, token
    app.extensions["verifier"].store.client.close()


@pytest.fixture(scope="module")
def web(bad_input_app: tuple[Flask, str]) -> FlaskClient:
    return bad_input_app[0].test_client()


@pytest.fixture(scope="module")
def token(bad_input_app: tuple[Flask, str]) -> str:
    return bad_input_app[1]


def check_answer(status: int, body: bytes, content_type: str | None, *, may_succeed: bool) -> None:
    """The properties every answer has: no 5xx, the envelope, profile data only in a 200."""
    text = body.decode("utf-8", "replace")
    assert status < 500, text
    if status == 200:
        assert may_succeed, f"a 200 for input that names no live session: {text}"
        return
    assert status in CLIENT_ERRORS, (status, text)
    for marker in PROFILE_MARKERS:
        assert marker not in text, f"profile data in a {status}: {text}"
    if body:
        assert content_type is not None and content_type.startswith("application/json")
        envelope = json.loads(body)
        assert envelope["isSuccess"] is False and envelope["errors"][0]["code"]


def spellings_of(token: str) -> set[str]:
    """Authorization values that must verify: the contract's spellings of a live token."""
    return {token, f"Bearer {token}", f"bearer {token}", f"BEARER {token}"}


def is_valid_spelling(value: str, token: str) -> bool:
    """The contract's rule, written out again: `Bearer` in any case, runs of spaces or tabs."""
    parts = re.split(r"[ \t]+", value.strip(" \t"))
    return parts == [token] or (len(parts) == 2 and parts[0].lower() == "bearer" and parts[1] == token)


SCHEMES = st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Token", "Digest", "Bearer:",
                           "Bearer,", "Bearer=", "B\u00e9arer", "", "Bearer Bearer", "MAC"])
SEPARATORS = st.sampled_from([" ", "  ", "\t", " \t ", "", ",", "=", "\x00", "\x0b", "\x1f"])
CONTROL = st.characters(min_codepoint=0, max_codepoint=31) | st.just("\x7f")
LATIN1 = st.characters(min_codepoint=0, max_codepoint=255)
BASE64ISH = st.text(alphabet=string.ascii_letters + string.digits + "+/-_", min_size=1, max_size=60)


@st.composite
def authorization_values(draw: st.DrawFn, token: str) -> str:
    """An Authorization header value as WSGI sees it (latin-1 str), good or bad."""
    kind = draw(st.sampled_from(["spelling", "scheme", "control", "bytes", "padding", "huge",
                                 "mangled", "text"]))
    if kind == "spelling":
        return draw(st.sampled_from(sorted(spellings_of(token))))
    if kind == "scheme":
        return draw(SCHEMES) + draw(SEPARATORS) + draw(st.sampled_from([token, token[:-1], "x"]))
    if kind == "control":
        where = draw(st.integers(0, len(token)))
        return "Bearer " + token[:where] + draw(CONTROL) + token[where:]
    if kind == "bytes":  # raw bytes, UTF-8 or not, decoded the WSGI way
        return draw(st.binary(min_size=1, max_size=200)).decode("latin-1")
    if kind == "padding":
        return "Bearer " + draw(st.sampled_from([token, draw(BASE64ISH)])) + draw(
            st.sampled_from(["=", "==", "===", "=\t", "= "]))
    if kind == "huge":
        size = draw(st.sampled_from([4096, 4097, 8192, 8190, 16384]))
        return "Bearer " + (token * (size // len(token) + 1))[:size]
    if kind == "mangled":
        where = draw(st.integers(0, len(token) - 1))
        return "Bearer " + token[:where] + draw(st.characters(min_codepoint=33, max_codepoint=126,
                                                              exclude_characters=token[where]))\
            + token[where + 1:]
    return draw(st.text(alphabet=LATIN1, max_size=300))


@given(data=st.data())
def test_any_authorization_header(web: FlaskClient, token: str, data: st.DataObject) -> None:
    value = data.draw(authorization_values(token))
    method = data.draw(st.sampled_from(["POST", "GET", "HEAD"]))
    response = web.open(PATH, method=method, environ_overrides={"HTTP_AUTHORIZATION": value})
    valid = is_valid_spelling(value, token)
    check_answer(response.status_code, response.data, response.content_type, may_succeed=valid)
    if valid:
        assert response.status_code == 200
    if method == "HEAD":
        assert response.data == b""


@given(first=st.sampled_from(["Bearer {t}", "{t}", "Bearer", "", "Basic abc"]),
       second=st.sampled_from(["Bearer {t}", "{t}", "Bearer x", ""]))
def test_duplicated_authorization_headers(web: FlaskClient, token: str, first: str,
                                          second: str) -> None:
    headers = [("Authorization", first.format(t=token)), ("Authorization", second.format(t=token))]
    response = web.post(PATH, headers=headers)
    # Werkzeug keeps the first of two; gunicorn joins them with ", " (see the gunicorn test below).
    check_answer(response.status_code, response.data, response.content_type,
                 may_succeed=is_valid_spelling(first.format(t=token), token))


JSON_LEAVES = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
               | st.text(max_size=20))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A request body, and whether it may verify (none, blank, or an object naming no other user)."""
    kind = draw(st.sampled_from(["value", "user_id", "deep", "bytes", "blank"]))
    if kind == "blank":
        return draw(st.sampled_from([b"", b" ", b"\r\n\t "])), True
    if kind == "bytes":
        raw = draw(st.binary(max_size=300))
        return raw, _may_verify(raw)
    if kind == "deep":
        depth = draw(st.integers(1, 5000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"userId":', "}"), ('{"a":', "}")]))
        raw = (opener * depth + draw(st.sampled_from(["1", '"u-1"', "null", "{}"])) + closer * depth)
        return raw.encode(), _may_verify(raw.encode())
    value: Any = draw(JSON_VALUES)
    if kind == "user_id":
        value = {"userId": draw(JSON_VALUES | st.sampled_from(["u-1", "u-2", "U-1", " u-1"]))}
    raw = json.dumps(value, allow_nan=True).encode()
    return raw, _may_verify(raw)


def _may_verify(raw: bytes) -> bool:
    if not raw.strip():
        return True
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    if _depth(value) > MAX_JSON_DEPTH:
        return False
    return isinstance(value, dict) and ("userId" not in value or value["userId"] == "u-1")


@given(body=bodies(), content_type=st.sampled_from(
    ["application/json", "text/plain", None, "application/json; charset=latin-1",
     "application/octet-stream"]))
def test_any_body(web: FlaskClient, token: str, body: tuple[bytes, bool],
                  content_type: str | None) -> None:
    raw, may_verify = body
    headers = {"Authorization": f"Bearer {token}"}
    if content_type:
        headers["Content-Type"] = content_type
    response = web.post(PATH, headers=headers, data=raw)
    check_answer(response.status_code, response.data, response.content_type, may_succeed=may_verify)
    if may_verify:
        assert response.status_code == 200


@given(method=st.sampled_from(["OPTIONS", "HEAD", "PUT", "DELETE", "PATCH", "TRACE", "PROPFIND",
                               "CONNECT", "BREW"]),
       path=st.sampled_from([PATH, PATH + "/", "/", "/readyz", "/livez", "/nope", "/" + PATH,
                             PATH.replace("/v1/", "//v1/"), "/admin/", "/metrics"]))
@example(method="OPTIONS", path="/livez")  # was an automatic, empty text/html 200
@example(method="POST", path=PATH.replace("/v1/", "//v1/"))  # was an HTML 308 redirect
def test_any_method_and_path(web: FlaskClient, token: str, method: str, path: str) -> None:
    response = web.open("/", method=method, headers={"Authorization": f"Bearer {token}"},
                        environ_overrides={"PATH_INFO": path})
    # Werkzeug routes "//x" as "/x" (it strips leading slashes), so a doubled first slash still
    # reaches the endpoint; a doubled inner one does not.
    # (The test client calls from 127.0.0.1, which VERIFIER_METRICS_ALLOWED lets read /metrics.)
    may_succeed = method == "HEAD" and path.lstrip("/") in (PATH[1:], "readyz", "livez", "metrics")
    check_answer(response.status_code, response.data, response.content_type,
                 may_succeed=may_succeed)
    if method == "HEAD":
        assert response.data == b""


# Through gunicorn, over raw sockets: what the bytes on the wire do.


def raw_exchange(port: int, request: bytes) -> tuple[int, bytes, str | None]:
    """Send one request on a new connection; the status, body and content type of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    content_type = next((v.strip() for k, v in fields.items() if k.lower() == "content-type"), None)
    return status, body, content_type


def verify_request(header_lines: list[bytes], body: bytes = b"", method: bytes = b"POST",
                   target: bytes = PATH.encode()) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", *header_lines,
             b"Content-Length: " + str(len(body)).encode(), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.fixture
def served(gunicorn: Callable[..., Any], redis_url: str, token: str) -> int:
    """The port of a verifier under gunicorn on the module's store (the same live session)."""
    server = gunicorn({"VERIFIER_REDIS_URL": redis_url, "VERIFIER_KEY_PREFIX": "badinput",
                       "VERIFIER_WORKERS": "1", "VERIFIER_THREADS": "4"})
    return int(server.port)


# CR and LF are framing, not header content: left out so that every example is one request.
HEADER_BYTES = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@pytest.mark.e2e
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture],
          max_examples=settings().max_examples // 3 + 1)
@given(value=HEADER_BYTES | st.sampled_from([b"", b"Bearer", b"bearer \t"]), body=bodies())
def test_any_header_bytes_and_body_through_gunicorn(served: int, token: str, value: bytes,
                                                    body: tuple[bytes, bool]) -> None:
    raw, _ = body  # no body verifies here: the header holds no live token
    request = verify_request([b"Authorization: " + value], raw)
    status, answer, content_type = raw_exchange(served, request)
    if status in (400, 431) and (content_type or "").startswith("text/"):
        return  # gunicorn refused the header line itself (e.g. a CR, LF or NUL in it)
    check_answer(status, answer, content_type, may_succeed=False)


@pytest.mark.e2e
def test_gunicorn_joins_duplicated_headers_and_nothing_verifies(served: int, token: str) -> None:
    for first, second in [(f"Bearer {token}", f"Bearer {token}"), ("Bearer", token),
                          (token, token), (f"Bearer {token}", "")]:
        request = verify_request([f"Authorization: {first}".encode(),
                                  f"Authorization: {second}".encode()])
        status, answer, content_type = raw_exchange(served, request)
        check_answer(status, answer, content_type, may_succeed=False)
        assert status == 401


def chunked_request(auth: str, body: bytes) -> bytes:
    """A verify request whose body comes chunked, with no Content-Length."""
    head = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n").encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 4096]), body[i:i + 4096])
                      for i in range(0, len(body), 4096))
    return head + chunks + b"0\r\n\r\n"


@pytest.mark.e2e
def test_chunked_body_over_the_limit_is_413_through_gunicorn(served: int, token: str) -> None:
    """Not its first 16 KiB taken for the whole: they alone are valid JSON that names the user."""
    small = b'{"userId": "u-1"}'
    status, _, _ = raw_exchange(served, chunked_request(f"Bearer {token}", small))
    assert status == 200
    for tail in (b" ", b"x"):
        status, answer, _ = raw_exchange(served, chunked_request(f"Bearer {token}",
                                                                 small + tail * 20_000))
        assert status == 413, answer
        assert json.loads(answer)["errors"][0]["code"] == "payload_too_large"


@pytest.mark.e2e
def test_gunicorn_limits_on_request_line_and_headers(served: int, token: str) -> None:
    """gunicorn_conf sets them; each refusal is a 4xx and the worker serves on."""
    ok = verify_request([f"Authorization: Bearer {token}".encode()])
    assert raw_exchange(served, ok)[0] == 200

    long_target = (PATH + "?" + "a" * 4100).encode()
    assert raw_exchange(served, verify_request([], target=long_target))[0] == 414

    at_limit = [f"X-Pad-{i}: {i}".encode() for i in range(60)]  # + Host, Length, Connection = 63
    status = raw_exchange(served, verify_request([*at_limit, f"Authorization: Bearer {token}"
                                                  .encode()]))[0]
    assert status == 200
    too_many = [f"X-Pad-{i}: {i}".encode() for i in range(70)]
    assert raw_exchange(served, verify_request(too_many))[0] == 431

    big_token = "A" * 8000  # 8 KB but under the field limit: the app refuses it
    status, answer, _ = raw_exchange(
        served, verify_request([f"Authorization: Bearer {big_token}".encode()]))
    assert status == 401 and json.loads(answer)["errors"][0]["code"] == "invalid_token"
    huge_field = "A" * 8192
    assert raw_exchange(served, verify_request([f"Authorization: Bearer {huge_field}"
                                                .encode()]))[0] == 431

    assert raw_exchange(served, ok)[0] == 200, "the worker serves on after every refusal"


def _depth(value: Any) -> int:
    """How deeply a parsed JSON value nests arrays and objects (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


@pytest.mark.e2e
def test_an_answer_before_the_body_is_read_still_reaches_the_client(served: int) -> None:
    """A 401 decided from the header alone, on a connection the client asked to close: the body it
    sent is read first, since closing a socket with unread input resets it (the client would see
    ECONNRESET instead of the answer)."""
    body = json.dumps({"userId": "u-1", "pad": "x" * 15_000}).encode()
    for auth in ([], [b"Authorization: "], [b"Authorization: Bearer vfs_abcd_" + b"A" * 43]):
        for _ in range(10):
            status, answer, _ = raw_exchange(served, verify_request(auth, body))
            # 429 once the module's earlier tests have used up the caller's failures
            assert status in (401, 429), answer


@pytest.mark.e2e
def test_a_client_that_stops_sending_its_body_does_not_hold_a_thread(served: int) -> None:
    """Early 401s on closing connections whose bodies never come, for more clients than the worker
    has threads: every answer arrives (reading what is left of a body never waits for more)."""
    head = verify_request([], b"").replace(b"Content-Length: 0", b"Content-Length: 1000000")
    stalled = []
    try:
        for _ in range(6):  # the served worker has 4 threads
            sock = socket.create_connection(("127.0.0.1", served), timeout=5)
            sock.sendall(head + b'{"userId":')
            stalled.append(sock)
        for sock in stalled:
            data = b""
            while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
                chunk = sock.recv(65536)  # a thread held by an earlier client: a timeout here
                assert chunk, data
                data += chunk
            assert data.startswith((b"HTTP/1.1 401", b"HTTP/1.1 429")), data[:80]
    finally:
        for sock in stalled:
            sock.close()
    status, _, _ = raw_exchange(served, b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200


def _length(response: bytes) -> int:
    head = response.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    return int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])


@pytest.mark.e2e
def test_a_malformed_chunked_body_is_400_through_gunicorn(served: int, token: str) -> None:
    head = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n").encode()
    status, answer, _ = raw_exchange(served, head + b"zz\r\nabc\r\n0\r\n\r\n")
    assert status == 400, answer
    assert json.loads(answer)["errors"][0]["code"] == "bad_request"
