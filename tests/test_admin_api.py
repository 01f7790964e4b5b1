"""The admin API under /admin/v1/, through Flask's test client on a real Valkey."""

from __future__ import annotations

import hmac
import io
import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import (
    ADMIN_HEADERS,
    ADMIN_KEY,
    ADMIN_KEY_NEXT,
    PROFILE,
    FakeClock,
    assert_error_envelope,
    free_port,
)
from flask import Flask
from flask.testing import FlaskClient

from verifier import admin
from verifier.app import create_app
from verifier.config import Settings, load_settings
from verifier.errors import ConfigError

VERIFY = "/api/v1/mozarto/verify-user"
PLATFORM_TOKEN = "platform-session-jwt.eyJpZCI6InUtMSJ9.c2lnbmF0dXJlLWJ5dGVz"


def call(client: FlaskClient, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None):
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    return client.open(f"/admin/v1{path}", method=method, data=data,
                       headers=ADMIN_HEADERS if headers is None else headers,
                       content_type="application/json")


def iso(seconds: float) -> str:
    """An ISO 8601 UTC time as the admin API writes it, computed independently of it."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def bad_fields(response) -> set[str]:
    body = assert_error_envelope(response, 400, "invalid_fields")
    return {entry["field"] for entry in body["errors"][1:]}


def verify(client: FlaskClient, token: str):
    return client.post(VERIFY, headers={"Authorization": f"Bearer {token}"})


def create(client: FlaskClient, **changes: Any) -> dict:
    response = call(client, "POST", "/sessions", {**PROFILE, **changes})
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def stored_keys(raw_redis, settings: Settings) -> list[bytes]:
    return sorted(raw_redis.keys(f"{settings.key_prefix}:*"))


# Authentication

@pytest.mark.parametrize("auth", [None, "", "Bearer", "Bearer  "])
def test_no_admin_key_is_401_with_a_bare_challenge(client: FlaskClient, auth: str | None) -> None:
    headers = {} if auth is None else {"Authorization": auth}
    response = call(client, "POST", "/sessions", PROFILE, headers=headers)
    assert_error_envelope(response, 401, "missing_admin_key")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="verifier-admin"'


@pytest.mark.parametrize("auth", [
    f"Bearer {ADMIN_KEY}x", f"Bearer {ADMIN_KEY[:-1]}", "Bearer " + "k" * 40, f"Basic {ADMIN_KEY}",
    f"Bearer {ADMIN_KEY},{ADMIN_KEY_NEXT}", f"Bearer {ADMIN_KEY.upper()}",
])
def test_wrong_admin_key_is_401_and_nothing_is_written(client, raw_redis, settings, auth) -> None:
    response = call(client, "POST", "/sessions", PROFILE, headers={"Authorization": auth})
    body = assert_error_envelope(response, 401, "invalid_admin_key")
    assert response.headers["WWW-Authenticate"] == \
        'Bearer realm="verifier-admin", error="invalid_token"'
    assert ADMIN_KEY not in json.dumps(body)
    assert stored_keys(raw_redis, settings) == []


def test_a_session_token_is_not_an_admin_key(client: FlaskClient) -> None:
    token = create(client)["token"]
    response = call(client, "GET", "/users/u-1", headers={"Authorization": f"Bearer {token}"})
    assert_error_envelope(response, 401, "invalid_admin_key")


@pytest.mark.parametrize("key", [ADMIN_KEY, ADMIN_KEY_NEXT])
def test_every_configured_key_works_so_a_key_can_be_rotated(client: FlaskClient, key: str) -> None:
    response = call(client, "POST", "/sessions", PROFILE, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 201
    assert verify(client, response.get_json()["token"]).status_code == 200


@pytest.mark.parametrize("key", [ADMIN_KEY, ADMIN_KEY_NEXT, "w" * 40])
def test_the_presented_key_is_compared_with_every_configured_key(
        client: FlaskClient, monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(admin.hmac, "compare_digest", spy)
    call(client, "GET", "/users/u-1/sessions", headers={"Authorization": f"Bearer {key}"})
    assert len(compared) == 2, "one comparison per configured key, whichever matched"
    assert all(len(a) == len(b) == 32 for a, b in compared), "digests, so no length leaks"


def test_admin_key_index_says_which_key_matched() -> None:
    keys = ("a" * 32, "b" * 32)
    assert admin.admin_key_index("a" * 32, keys) == 0
    assert admin.admin_key_index("b" * 32, keys) == 1
    assert admin.admin_key_index("c" * 32, keys) is None
    assert admin.admin_key_index("a" * 32, ()) is None


def test_a_refused_key_is_logged_by_fingerprint_only(client, caplog) -> None:
    wrong = "wrong-admin-key-" + "z" * 30
    with caplog.at_level(logging.INFO, logger="verifier"):
        call(client, "GET", "/users/u-1", headers={"Authorization": f"Bearer {wrong}"})
        call(client, "GET", "/users/u-1")
    assert "admin request refused" in caplog.text
    assert wrong not in caplog.text and ADMIN_KEY not in caplog.text


def test_admin_api_is_off_without_keys(settings: Settings, clock: FakeClock, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="verifier"):
        app = create_app(settings.with_overrides(admin_keys=None), clock=clock)
    assert "admin API off" in caplog.text
    client = app.test_client()
    for method, path in [("POST", "/sessions"), ("GET", "/users/u-1"), ("PUT", "/sessions"),
                         ("DELETE", "/users/u-1/sessions"), ("GET", "/nope"), ("OPTIONS", "/sessions")]:
        assert_error_envelope(call(client, method, path, PROFILE), 404, "not_found")
    assert_error_envelope(client.get("/admin/v1"), 404, "not_found")


# Configuration

def test_admin_keys_are_read_from_a_comma_separated_list(env: dict[str, str]) -> None:
    settings = load_settings({**env, "VERIFIER_ADMIN_KEYS": f" {ADMIN_KEY} , {ADMIN_KEY_NEXT} "})
    assert settings.admin_keys == (ADMIN_KEY, ADMIN_KEY_NEXT)
    assert load_settings({**env, "VERIFIER_ADMIN_KEYS": ""}).admin_keys is None
    assert settings.masked()["VERIFIER_ADMIN_KEYS"] == "2 keys, masked"
    assert ADMIN_KEY not in json.dumps(settings.masked())


@pytest.mark.parametrize("value, reason", [
    ("short-key", "key 1 of 1 has 9 characters; each key needs at least 32"),
    (f"{ADMIN_KEY},", "key 2 of 2 is empty"),
    (f"{ADMIN_KEY},,{ADMIN_KEY_NEXT}", "key 2 of 3 is empty"),
    (f"{ADMIN_KEY} {ADMIN_KEY_NEXT}", "key 1 of 1 has spaces"),
    (f"{ADMIN_KEY},caf\u00e9-{ADMIN_KEY}", "key 2 of 2 has spaces or characters other than"),
])
def test_bad_admin_keys_stop_the_start_without_showing_them(env, value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**env, "VERIFIER_ADMIN_KEYS": value})
    [problem] = caught.value.problems
    assert problem.startswith("VERIFIER_ADMIN_KEYS='***': ") and reason in problem
    assert ADMIN_KEY not in problem and "short-key" not in problem


def test_a_bad_redis_url_error_masks_its_password(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**env, "VERIFIER_REDIS_URL": "redis://:s3cret@host:notaport/0"})
    assert "s3cret" not in str(caught.value)


# Creating and registering sessions

def test_create_answers_the_token_user_and_expiry_and_the_token_verifies(
        client: FlaskClient, clock: FakeClock, settings: Settings) -> None:
    clock.now = int(clock.now) + 0.25
    body = create(client)
    assert set(body) == {"token", "userId", "expiresAt", "idleTimeoutSeconds"}
    assert body["userId"] == "u-1" and body["idleTimeoutSeconds"] == 0
    assert body["expiresAt"] == iso(clock.now + settings.session_ttl_seconds)
    assert body["expiresAt"].endswith(".250Z")
    response = verify(client, body["token"])
    assert response.status_code == 200 and response.get_json()["data"] == PROFILE


def test_create_with_a_lifetime_and_an_idle_timeout(client: FlaskClient, clock: FakeClock) -> None:
    body = create(client, ttlSeconds=120, idleTimeoutSeconds=30, userId=7)
    assert body["userId"] == "7" and body["idleTimeoutSeconds"] == 30
    assert datetime.fromisoformat(body["expiresAt"]).timestamp() == pytest.approx(clock.now + 120)
    clock.advance(31)
    assert_error_envelope(verify(client, body["token"]), 401, "expired_token")


def test_null_lifetimes_mean_the_defaults(client: FlaskClient, settings: Settings) -> None:
    body = create(client, ttlSeconds=None, idleTimeoutSeconds=None)
    assert body["idleTimeoutSeconds"] == settings.session_idle_timeout_seconds


def test_an_invalid_create_names_every_bad_field_and_writes_nothing(
        client: FlaskClient, raw_redis, settings: Settings) -> None:
    body = {**PROFILE, "email": "not-an-email", "countryCode": "gb", "role": "admin",
            "ttlSeconds": settings.session_max_ttl_seconds + 1, "idleTimeoutSeconds": "30"}
    del body["lastName"]
    response = call(client, "POST", "/sessions", body)
    assert bad_fields(response) == {"email", "countryCode", "role", "ttlSeconds",
                                    "idleTimeoutSeconds", "lastName"}
    assert stored_keys(raw_redis, settings) == []


@pytest.mark.parametrize("lifetimes", [
    {"ttlSeconds": 0}, {"ttlSeconds": True}, {"ttlSeconds": 1.5}, {"ttlSeconds": "60"},
    {"idleTimeoutSeconds": -1}, {"idleTimeoutSeconds": False},
])
def test_lifetimes_must_be_integers_in_range(client: FlaskClient, lifetimes: dict) -> None:
    response = call(client, "POST", "/sessions", {**PROFILE, **lifetimes})
    assert bad_fields(response) == set(lifetimes)


@pytest.mark.parametrize("body", [None, b"", b"not json", b"[1]", b"null", b'"u-1"', b"42"])
def test_a_create_body_that_is_not_an_object_is_400(client: FlaskClient, body) -> None:
    assert_error_envelope(call(client, "POST", "/sessions", body), 400, "bad_request")


def test_a_body_over_the_limit_is_413(client: FlaskClient, settings: Settings) -> None:
    body = {**PROFILE, "firstName": "x" * settings.max_body_bytes}
    assert_error_envelope(call(client, "POST", "/sessions", body), 413, "payload_too_large")


def test_a_chunked_body_over_the_limit_is_413_and_nothing_is_written(
        client: FlaskClient, settings: Settings) -> None:
    # Its first max_body_bytes alone are a valid profile: they must not be taken for the body.
    body = json.dumps({**PROFILE, "userId": "chunked-1"}).encode() + b" " * settings.max_body_bytes
    response = client.post("/admin/v1/sessions", headers={**ADMIN_HEADERS,
                                                          "Transfer-Encoding": "chunked"},
                           content_type="application/json", input_stream=io.BytesIO(body),
                           environ_overrides={"wsgi.input_terminated": True})
    assert_error_envelope(response, 413, "payload_too_large")
    assert call(client, "GET", "/users/chunked-1").status_code == 404


@pytest.mark.parametrize("path", ["/sessions", "/sessions/register"])
@pytest.mark.parametrize("user_id", ["a/b", "/", ".", ".."])
def test_a_user_id_the_admin_urls_cannot_name_is_refused_and_nothing_is_written(
        client: FlaskClient, raw_redis, settings: Settings, path: str, user_id: str) -> None:
    """Such a user's sessions could never be listed or revoked through /admin/v1/users/<userId>."""
    body = {**PROFILE, "userId": user_id, **({"token": PLATFORM_TOKEN} if "register" in path else {})}
    assert bad_fields(call(client, "POST", path, body)) == {"userId"}
    assert stored_keys(raw_redis, settings) == []


def test_register_a_platform_token(client: FlaskClient) -> None:
    response = call(client, "POST", "/sessions/register",
                    {"token": PLATFORM_TOKEN, **PROFILE, "ttlSeconds": 600})
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"userId", "expiresAt", "idleTimeoutSeconds"}
    assert PLATFORM_TOKEN not in response.get_data(as_text=True)
    assert verify(client, PLATFORM_TOKEN).get_json()["data"] == PROFILE


def test_registering_a_token_twice_is_409(client: FlaskClient) -> None:
    assert call(client, "POST", "/sessions/register", {"token": PLATFORM_TOKEN, **PROFILE}).status_code == 201
    response = call(client, "POST", "/sessions/register", {"token": PLATFORM_TOKEN, **PROFILE})
    assert_error_envelope(response, 409, "token_exists")


@pytest.mark.parametrize("token", [None, "", "too-short", "vfs_0000_" + "A" * 43, "has space " * 4, 42])
def test_register_refuses_a_token_that_cannot_be_a_platform_token(client, raw_redis, settings,
                                                                  token) -> None:
    body = {**PROFILE, "email": "bad"} if token is None else {"token": token, **PROFILE, "email": "bad"}
    response = call(client, "POST", "/sessions/register", body)
    assert bad_fields(response) == {"token", "email"}
    assert stored_keys(raw_redis, settings) == []


# Revoking

def test_revoke_ends_the_session_and_answers_204_again_when_gone(client: FlaskClient) -> None:
    token = create(client)["token"]
    for _ in range(2):
        response = call(client, "POST", "/sessions/revoke", {"token": token})
        assert response.status_code == 204 and response.data == b""
    assert_error_envelope(verify(client, token), 401, "invalid_token")
    assert call(client, "POST", "/sessions/revoke", {"token": PLATFORM_TOKEN}).status_code == 204


@pytest.mark.parametrize("body, field", [
    ({}, "token"), ({"token": ""}, "token"), ({"token": 5}, "token"), ({"token": None}, "token"),
    ({"token": "x" * 40, "userId": "u-1"}, "userId"),
])
def test_an_invalid_revoke_is_400(client: FlaskClient, body: dict, field: str) -> None:
    assert bad_fields(call(client, "POST", "/sessions/revoke", body)) == {field}


def test_revoke_every_session_of_a_user(client: FlaskClient) -> None:
    tokens = [create(client)["token"] for _ in range(2)]
    other = create(client, userId="u-2")["token"]
    response = call(client, "DELETE", "/users/u-1/sessions")
    assert response.status_code == 200 and response.get_json() == {"revoked": 2}
    assert all(verify(client, t).status_code == 401 for t in tokens)
    assert verify(client, other).status_code == 200
    assert call(client, "DELETE", "/users/u-1/sessions").get_json() == {"revoked": 0}


# Listing

def test_list_a_users_live_sessions(client: FlaskClient, clock: FakeClock) -> None:
    clock.now = start = float(int(clock.now))
    first = create(client, ttlSeconds=60)["token"]
    clock.advance(1)
    create(client, idleTimeoutSeconds=600)
    clock.advance(1)
    assert verify(client, first).status_code == 200
    response = call(client, "GET", "/users/u-1/sessions")
    assert response.status_code == 200
    body = response.get_json()
    assert body["userId"] == "u-1"
    old, new = body["sessions"]
    assert old == {"sessionId": old["sessionId"], "createdAt": iso(start),
                   "expiresAt": iso(start + 60), "lastVerifiedAt": iso(start + 2),
                   "idleTimeoutSeconds": 0}
    assert new["lastVerifiedAt"] is None and new["idleTimeoutSeconds"] == 600
    assert len({old["sessionId"], new["sessionId"]}) == 2
    assert old["sessionId"] not in first and len(old["sessionId"]) < 22
    clock.advance(60)
    assert [s["sessionId"] for s in call(client, "GET", "/users/u-1/sessions").get_json()["sessions"]] \
        == [new["sessionId"]]


def test_a_user_without_sessions_has_an_empty_list(client: FlaskClient) -> None:
    response = call(client, "GET", "/users/nobody/sessions")
    assert response.status_code == 200 and response.get_json() == {"userId": "nobody", "sessions": []}


@pytest.mark.parametrize("path", ["/users/" + "u" * 129, "/users/u%01x", "/users/u%01x/sessions"])
def test_a_user_id_in_the_path_is_checked(client: FlaskClient, path: str) -> None:
    assert bad_fields(call(client, "GET", path)) == {"userId"}


# Users

def test_read_a_user(client: FlaskClient) -> None:
    create(client)
    response = call(client, "GET", "/users/u-1")
    assert response.status_code == 200
    assert response.get_json() == {**PROFILE, "blocked": False, "passwordExpired": False}


def test_an_unknown_user_is_404(client: FlaskClient) -> None:
    for method, path, body in [("GET", "/users/nobody", None),
                               ("PATCH", "/users/nobody", {"lastName": "X"}),
                               ("PUT", "/users/nobody/blocked", None),
                               ("DELETE", "/users/nobody/password-expired", None)]:
        assert_error_envelope(call(client, method, path, body), 404, "user_not_found")


def test_patch_changes_the_profile_seen_by_every_session(client: FlaskClient) -> None:
    token = create(client)["token"]
    response = call(client, "PATCH", "/users/u-1", {"lastName": "Byron", "emailVerified": None})
    expected = {**PROFILE, "lastName": "Byron", "blocked": False, "passwordExpired": False}
    del expected["emailVerified"]
    assert response.status_code == 200 and response.get_json() == expected
    data = verify(client, token).get_json()["data"]
    assert data["lastName"] == "Byron" and "emailVerified" not in data


def test_patch_sets_flags_and_a_read_user_can_be_sent_back(client: FlaskClient) -> None:
    token = create(client)["token"]
    user = call(client, "GET", "/users/u-1").get_json()
    response = call(client, "PATCH", "/users/u-1", {**user, "firstName": "Augusta", "blocked": True})
    assert response.get_json()["blocked"] is True and response.get_json()["firstName"] == "Augusta"
    assert_error_envelope(verify(client, token), 403, "user_blocked")
    call(client, "PATCH", "/users/u-1", {"blocked": False, "passwordExpired": True})
    assert_error_envelope(verify(client, token), 403, "password_expired")


def test_patch_with_a_national_phone_is_checked_against_the_stored_country(client) -> None:
    create(client)
    assert call(client, "PATCH", "/users/u-1", {"phone": "020 7946 0000"}).status_code == 200
    assert bad_fields(call(client, "PATCH", "/users/u-1", {"countryCode": "US"})) == {"phone"}


@pytest.mark.parametrize("changes, fields", [
    ({"email": "nope", "lastName": "Byron"}, {"email"}),
    ({"lastName": "Byron", "blocked": "yes"}, {"blocked"}),
    ({"lastName": "Byron", "passwordExpired": 1}, {"passwordExpired"}),
    ({"lastName": "Byron", "userId": "u-2"}, {"userId"}),
    ({"lastName": "Byron", "ttlSeconds": 60, "role": "x"}, {"ttlSeconds", "role"}),
    ({"firstName": "", "lastName": None}, {"firstName", "lastName"}),
])
def test_an_invalid_patch_names_every_bad_field_and_changes_nothing(
        client: FlaskClient, changes: dict, fields: set[str]) -> None:
    create(client)
    assert bad_fields(call(client, "PATCH", "/users/u-1", changes)) == fields
    assert call(client, "GET", "/users/u-1").get_json() == {
        **PROFILE, "blocked": False, "passwordExpired": False}


@pytest.mark.parametrize("body", [b"", b"{}", b"[]", b"nope"])
def test_an_empty_or_malformed_patch_is_400(client: FlaskClient, body: bytes) -> None:
    create(client)
    assert_error_envelope(call(client, "PATCH", "/users/u-1", body), 400, "bad_request")


@pytest.mark.parametrize("flag, code", [("blocked", "user_blocked"),
                                        ("password-expired", "password_expired")])
def test_put_sets_a_flag_and_delete_clears_it(client: FlaskClient, flag: str, code: str) -> None:
    token = create(client)["token"]
    for _ in range(2):
        response = call(client, "PUT", f"/users/u-1/{flag}")
        assert response.status_code == 204 and response.data == b""
    assert_error_envelope(verify(client, token), 403, code)
    assert call(client, "DELETE", f"/users/u-1/{flag}").status_code == 204
    assert verify(client, token).status_code == 200


# Failures

@pytest.mark.parametrize("method, path", [("PUT", "/sessions"), ("GET", "/sessions/revoke"),
                                          ("POST", "/users/u-1"), ("OPTIONS", "/users/u-1")])
def test_other_methods_are_405(client: FlaskClient, method: str, path: str) -> None:
    assert_error_envelope(call(client, method, path), 405, "method_not_allowed")


def test_store_trouble_is_503_never_401_or_404(settings: Settings, clock: FakeClock) -> None:
    dead = settings.with_overrides(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client = create_app(dead, clock=clock).test_client()
    for method, path, body in [("POST", "/sessions", PROFILE), ("GET", "/users/u-1", None),
                               ("GET", "/users/u-1/sessions", None),
                               ("POST", "/sessions/revoke", {"token": "x" * 40})]:
        response = call(client, method, path, body)
        assert_error_envelope(response, 503, "unavailable")
        assert response.headers["Retry-After"] == "1"
    assert_error_envelope(call(client, "GET", "/users/u-1", headers={}), 401, "missing_admin_key")


def test_admin_answers_are_not_cached(client: FlaskClient, app: Flask) -> None:
    assert call(client, "GET", "/users/nobody/sessions").headers["Cache-Control"] == "no-store"
