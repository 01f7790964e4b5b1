"""POST /admin/v1/user-tokens: x-user-tokens minted through the admin API, on a real Valkey."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from conftest import ADMIN_HEADERS, PROFILE, FakeClock, assert_error_envelope
from flask import Flask
from flask.testing import FlaskClient

from verifier.app import create_app
from verifier.config import Settings
from verifier.sessions import SessionManager
from verifier.token_check import check_user_token

SECRET = "s3cr3t-key-for-tests-0123456789abcdef"
PATH = "/admin/v1/user-tokens"


@pytest.fixture
def app(settings: Settings, clock: FakeClock) -> Flask:
    return create_app(settings.with_overrides(mozarto_secret_key=SECRET), clock=clock)


@pytest.fixture
def manager(app: Flask) -> SessionManager:
    return app.extensions["verifier"].sessions  # type: ignore[no-any-return]


def mint(client: FlaskClient, body: Any, headers: dict[str, str] | None = None):
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(PATH, data=data, content_type="application/json",
                       headers=ADMIN_HEADERS if headers is None else headers)


def bad_fields(response) -> dict[str, str]:
    body = assert_error_envelope(response, 400, "invalid_fields")
    assert "WWW-Authenticate" not in response.headers
    return {entry["field"]: entry["message"] for entry in body["errors"][1:]}


def test_mint_from_a_profile(client: FlaskClient, clock: FakeClock) -> None:
    response = mint(client, PROFILE)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    out = response.get_json()
    claims = jwt.decode(out["userToken"], SECRET, algorithms=["HS256"])
    now = int(clock.now)
    assert claims == {**PROFILE, "iat": now - 30, "exp": now + 300} == out["claims"]
    assert out["header"] == f"Bearer {out['userToken']}"
    assert out["expiresAt"] == datetime.fromtimestamp(now + 300, UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z")
    assert check_user_token(out["header"], secret_key=SECRET, now=clock.now).passed(strict=True)


def test_mint_from_a_live_session_with_a_lifetime(client: FlaskClient, manager: SessionManager,
                                                  clock: FakeClock) -> None:
    token = manager.create_session({**PROFILE, "lastName": "Byron"}).token
    response = mint(client, {"sessionToken": token, "ttlSeconds": 60})
    assert response.status_code == 200, response.get_data(as_text=True)
    claims = response.get_json()["claims"]
    assert claims["lastName"] == "Byron" and claims["exp"] == int(clock.now) + 60
    assert token not in response.get_data(as_text=True)


@pytest.mark.parametrize(("spoil", "words"), [
    (lambda m, t: t + "x", "unknown"),
    (lambda m, t: m.revoke_session(t) and t, "unknown"),
    (lambda m, t: m.set_blocked("u-1") or t, "blocked"),
    (lambda m, t: m.set_password_expired("u-1") or t, "password"),
])
def test_a_session_that_does_not_verify_is_a_bad_field_not_a_401(
        client: FlaskClient, manager: SessionManager, spoil, words: str) -> None:
    sent = spoil(manager, manager.create_session(PROFILE).token)
    fields = bad_fields(mint(client, {"sessionToken": sent}))
    assert list(fields) == ["sessionToken"] and words in fields["sessionToken"].lower()


def test_an_expired_session_is_a_bad_field(client: FlaskClient, manager: SessionManager,
                                           clock: FakeClock) -> None:
    token = manager.create_session(PROFILE, ttl_seconds=10).token
    clock.advance(11)
    assert "lifetime" in bad_fields(mint(client, {"sessionToken": token}))["sessionToken"]


@pytest.mark.parametrize(("body", "fields"), [
    ({**PROFILE, "countryCode": "gb", "email": "nope"}, {"countryCode", "email"}),
    ({"userId": "u-1"}, {"email", "firstName", "lastName", "phone", "countryCode"}),
    ({**PROFILE, "ttlSeconds": 0}, {"ttlSeconds"}),
    ({**PROFILE, "ttlSeconds": "60"}, {"ttlSeconds"}),
    ({**PROFILE, "role": "vip"}, {"role"}),
    ({"sessionToken": ""}, {"sessionToken"}),
    ({"sessionToken": "x" * 40, "email": PROFILE["email"]}, {"sessionToken"}),
    ({"sessionToken": "x" * 40, "ttlSeconds": True}, {"ttlSeconds"}),
    ({}, {"userId", "email", "firstName", "lastName", "phone", "countryCode"}),
])
def test_bad_bodies_name_each_field(client: FlaskClient, body: dict[str, Any],
                                    fields: set[str]) -> None:
    assert set(bad_fields(mint(client, body))) == fields


@pytest.mark.parametrize("body", ["[]", "nope", "null"])
def test_a_body_that_is_not_an_object_is_a_bad_request(client: FlaskClient, body: str) -> None:
    assert_error_envelope(mint(client, body), 400, "bad_request")


def test_the_admin_key_is_required(client: FlaskClient) -> None:
    assert_error_envelope(mint(client, PROFILE, headers={}), 401, "missing_admin_key")
    response = mint(client, PROFILE, headers={"Authorization": "Bearer " + "k" * 40})
    assert_error_envelope(response, 401, "invalid_admin_key")


def test_without_a_secret_key_minting_is_not_configured(settings: Settings,
                                                        clock: FakeClock) -> None:
    client = create_app(settings, clock=clock).test_client()
    body = assert_error_envelope(mint(client, PROFILE), 501, "not_configured")
    assert "MOZARTO_SECRET_KEY" in body["errors"][0]["message"]
    assert_error_envelope(mint(client, PROFILE, headers={}), 401, "missing_admin_key")
