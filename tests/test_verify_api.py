"""The User Auth URL, row by row of CONTRACT.md, through Flask's test client on a real Valkey."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable

import pytest
from conftest import PROFILE, FakeClock, assert_error_envelope
from flask.testing import FlaskClient

PATH = "/api/v1/mozarto/verify-user"
SUCCESS = {"status": "success", "message": "User verified", "isSuccess": True, "data": PROFILE}


def post(client: FlaskClient, auth: str | None, body: object = None, **kwargs: object):
    headers = {} if auth is None else {"Authorization": auth}
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    return client.post(PATH, headers=headers, data=body, content_type="application/json", **kwargs)


def assert_error(response, status: int, code: str) -> dict:
    body = assert_error_envelope(response, status, code)
    if status == 401:
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    return body


@pytest.mark.parametrize("template", [
    "Bearer {t}", "bearer {t}", "BEARER {t}", "Bearer    {t}", "Bearer\t{t}", " \tBearer \t {t}\t ",
    "{t}", "  {t}  ",
])
def test_every_spelling_of_the_header_verifies_with_the_same_body(
        client: FlaskClient, make_session: Callable[..., str], template: str) -> None:
    token = make_session()
    response = post(client, template.format(t=token), {"userId": "u-1"})
    assert response.status_code == 200
    assert response.get_json() == SUCCESS
    assert response.headers["Cache-Control"] == "no-store"
    assert response.mimetype == "application/json"


@pytest.mark.parametrize("body", [None, b"", b"   ", {"userId": "u-1"}, {}, {"other": 1}])
def test_body_is_optional(client: FlaskClient, make_session: Callable[..., str], body) -> None:
    response = post(client, f"Bearer {make_session()}", body)
    assert response.status_code == 200


def test_numeric_user_id_from_the_older_page_is_compared_as_a_string(
        client: FlaskClient, make_session: Callable[..., str]) -> None:
    token = make_session(userId="1")
    response = post(client, f"Bearer {token}", {"userId": 1})
    assert response.status_code == 200
    assert response.get_json()["data"]["userId"] == "1"


def test_get_answers_like_post(client: FlaskClient, make_session: Callable[..., str]) -> None:
    response = client.get(PATH, headers={"Authorization": f"Bearer {make_session()}"})
    assert response.status_code == 200 and response.get_json() == SUCCESS


def test_head_answers_without_a_body(client: FlaskClient, make_session: Callable[..., str]) -> None:
    response = client.head(PATH, headers={"Authorization": f"Bearer {make_session()}"})
    assert response.status_code == 200 and response.data == b""


def test_email_verified_is_left_out_when_the_user_has_none(
        client: FlaskClient, make_session: Callable[..., str]) -> None:
    response = post(client, f"Bearer {make_session(emailVerified=None)}")
    assert "emailVerified" not in response.get_json()["data"]


@pytest.mark.parametrize("auth", [None, "", " ", "\t", "Bearer", "bearer", "Bearer ", "Bearer \t "])
def test_missing_token_is_401(client: FlaskClient, auth: str | None) -> None:
    assert_error(post(client, auth), 401, "missing_token")


@pytest.mark.parametrize("auth", [
    "Bearer a b", "Basic dXNlcjpwYXNz", "Bearer vfs_0000_" + "A" * 43, "not-a-session",
    "Bearer " + "x" * 5000, "Token abc def", "Bearer tok\x7fen",
])
def test_malformed_or_unknown_token_is_401_invalid(client: FlaskClient, auth: str) -> None:
    assert_error(post(client, auth), 401, "invalid_token")


def test_non_ascii_header_is_401_not_500(client: FlaskClient) -> None:
    response = client.post(PATH, headers=[("Authorization", "Bearer t\u00f6ken")])
    assert_error(response, 401, "invalid_token")


def test_revoked_token_is_401_invalid(client: FlaskClient, app, make_session) -> None:
    token = make_session()
    app.extensions["verifier"].sessions.revoke_session(token)
    assert_error(post(client, f"Bearer {token}"), 401, "invalid_token")


def test_expired_session_still_in_redis_is_401_expired_and_not_extended(
        client: FlaskClient, make_session, clock: FakeClock, raw_redis, settings) -> None:
    token = make_session(ttl_seconds=60)
    clock.advance(61)
    keys = raw_redis.keys(f"{settings.key_prefix}:*:s:*")
    assert len(keys) == 1, "the expired session's key is still in Redis"
    ttl_before = raw_redis.pttl(keys[0])
    assert_error(post(client, f"Bearer {token}"), 401, "expired_token")
    assert raw_redis.pttl(keys[0]) <= ttl_before
    clock.advance(-30)  # had the request extended it, it would now verify again at t+31
    assert post(client, f"Bearer {token}").status_code == 200


def test_idle_timeout_expires_an_unused_session(client: FlaskClient, make_session,
                                                clock: FakeClock) -> None:
    token = make_session(idle_seconds=30)
    clock.advance(20)
    assert post(client, f"Bearer {token}").status_code == 200
    clock.advance(20)  # 40 s after creation, 20 s after the last use
    assert post(client, f"Bearer {token}").status_code == 200
    clock.advance(31)
    assert_error(post(client, f"Bearer {token}"), 401, "expired_token")


def test_password_expired_is_403_without_profile(client, app, make_session) -> None:
    token = make_session()
    app.extensions["verifier"].sessions.set_password_expired("u-1")
    body = assert_error(post(client, f"Bearer {token}"), 403, "password_expired")
    assert "ada" not in json.dumps(body).lower()
    app.extensions["verifier"].sessions.set_password_expired("u-1", False)
    assert post(client, f"Bearer {token}").status_code == 200


def test_blocked_user_is_403(client, app, make_session) -> None:
    token = make_session()
    app.extensions["verifier"].sessions.set_blocked("u-1")
    assert_error(post(client, f"Bearer {token}"), 403, "user_blocked")


def test_user_mismatch_is_403(client, make_session) -> None:
    body = assert_error(post(client, f"Bearer {make_session()}", {"userId": "u-2"}), 403,
                        "user_mismatch")
    assert "u-1" not in json.dumps(body)


def test_profile_update_is_seen_by_the_next_verification(client, app, make_session) -> None:
    token = make_session()
    app.extensions["verifier"].sessions.update_profile("u-1", {"lastName": "Byron"})
    assert post(client, f"Bearer {token}").get_json()["data"]["lastName"] == "Byron"


@pytest.mark.parametrize("body", [
    b"not json", b"{", b'"just a string"', b"[1, 2]", b"42", b"null",
    {"userId": None}, {"userId": True}, {"userId": 1.5}, {"userId": ["u-1"]}, {"userId": {}},
    {"userId": ""}, b"\xff\xfe\x00", b"[" * 5000 + b"]" * 5000,
])
def test_bad_body_is_400(client, make_session, body) -> None:
    assert_error(post(client, f"Bearer {make_session()}", body), 400, "bad_request")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405(client, method: str) -> None:
    response = client.open(PATH, method=method)
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}


def test_body_over_the_limit_is_413(client, make_session, settings) -> None:
    big = json.dumps({"userId": "u-1", "pad": "x" * settings.max_body_bytes})
    assert_error(post(client, f"Bearer {make_session()}", big), 413, "payload_too_large")


def test_unknown_path_is_404_in_the_envelope(client) -> None:
    assert_error(client.get("/nope"), 404, "not_found")


def _store_calls(raw_redis) -> Counter[str]:
    stats = raw_redis.info("commandstats")
    return Counter({name: int(s["calls"]) for name, s in stats.items() if name != "cmdstat_info"})


def _shape(client: FlaskClient, raw_redis, auth: str | None) -> Counter[str]:
    before = _store_calls(raw_redis)
    assert post(client, auth).status_code == 401
    return _store_calls(raw_redis) - before


def test_every_401_consults_the_store_the_same_way(client, app, make_session, clock, raw_redis) -> None:
    """Unknown, revoked, expired and malformed tokens cost the same store commands (no timing oracle)."""
    sessions = app.extensions["verifier"].sessions
    revoked, expired = "platform-token-" + "r" * 30, "platform-token-" + "e" * 30
    sessions.register_session(revoked, PROFILE)
    sessions.revoke_session(revoked)
    sessions.register_session(expired, PROFILE, ttl_seconds=60)
    minted_revoked, minted_expired = make_session(), make_session(ttl_seconds=60)
    sessions.revoke_session(minted_revoked)
    clock.advance(61)
    post(client, "Bearer warm-up-the-scripts")

    shapes = {name: _shape(client, raw_redis, auth) for name, auth in {
        "unknown": "Bearer platform-token-" + "u" * 30, "revoked": f"Bearer {revoked}",
        "expired": f"Bearer {expired}", "malformed": "Bearer a b", "bad characters": "Bearer tok\x7fen",
        "too long": "Bearer " + "x" * 5000, "missing": None, "empty": "Bearer ",
    }.items()}
    assert shapes["malformed"], "a malformed token still consults the store"
    assert all(shape == shapes["unknown"] for shape in shapes.values()), shapes

    minted = {name: _shape(client, raw_redis, auth) for name, auth in {
        "unknown": "Bearer vfs_abcd_" + "A" * 43, "revoked": f"Bearer {minted_revoked}",
        "expired": f"Bearer {minted_expired}"}.items()}
    assert all(shape == minted["unknown"] for shape in minted.values()), minted


def chunked_post(client: FlaskClient, token: str, body: bytes):
    """A body with no Content-Length, as a chunked request reaches the app through gunicorn."""
    return client.post(PATH, headers={"Authorization": f"Bearer {token}",
                                      "Transfer-Encoding": "chunked"},
                       content_type="application/json", input_stream=io.BytesIO(body),
                       environ_overrides={"wsgi.input_terminated": True})


@pytest.mark.parametrize("tail", [b" ", b"x"])
def test_chunked_body_over_the_limit_is_413_not_its_truncated_start(
        client, make_session, settings, tail: bytes) -> None:
    # Werkzeug stops reading at the limit: the first bytes alone are valid JSON naming the user.
    body = b'{"userId": "u-1"}' + tail * settings.max_body_bytes
    assert_error(chunked_post(client, make_session(), body), 413, "payload_too_large")


def test_chunked_body_of_exactly_the_limit_is_read(client, make_session, settings) -> None:
    start = b'{"userId": "u-1"}'
    body = start + b" " * (settings.max_body_bytes - len(start))
    assert chunked_post(client, make_session(), body).status_code == 200


def test_nesting_depth_is_judged_the_same_whatever_the_stack(client, make_session) -> None:
    # 32 levels verify; 33 are refused, deterministically (not by the parser's recursion limit).
    token = make_session()
    ok = '{"userId": "u-1", "x": ' + "[" * 31 + "]" * 31 + "}"
    assert post(client, f"Bearer {token}", ok.encode()).status_code == 200
    deep = '{"userId": "u-1", "x": ' + "[" * 32 + "]" * 32 + "}"
    assert_error(post(client, f"Bearer {token}", deep.encode()), 400, "bad_request")
    quoted = '{"userId": "u-1", "x": "' + "[" * 100 + '"}'
    assert post(client, f"Bearer {token}", quoted.encode()).status_code == 200


def test_a_user_id_with_an_unpaired_surrogate_escape_is_400(client, make_session) -> None:
    """JSON's "\\ud800" decodes to a string no UTF-8 store can hold: a 400, not a 500."""
    body = assert_error(post(client, f"Bearer {make_session()}", '{"userId": "\\ud800x"}'),
                        400, "bad_request")
    assert "surrogate" in body["errors"][0]["message"]
