"""verifier.client.AdminClient against the service running under gunicorn, as deployed."""

from __future__ import annotations

import http.server
import itertools
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
from conftest import ADMIN_KEY, ADMIN_KEY_NEXT, PROFILE, Gunicorn, free_port

from verifier.client import (
    AdminClient,
    AdminError,
    Conflict,
    NotFound,
    Unauthorized,
    Unavailable,
    ValidationError,
)

pytestmark = pytest.mark.e2e
PLATFORM_TOKEN = "platform-session-jwt.eyJpZCI6InUtMSJ9.c2lnbmF0dXJlLWJ5dGVz"
_users = itertools.count()


@pytest.fixture(scope="module")
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    """One service for the module (each test uses users of its own)."""
    started = Gunicorn({"VERIFIER_REDIS_URL": redis_url, "VERIFIER_KEY_PREFIX": "client",
                        "VERIFIER_ADMIN_KEYS": f"{ADMIN_KEY},{ADMIN_KEY_NEXT}",
                        "VERIFIER_WORKERS": "1", "VERIFIER_THREADS": "4"},
                       tmp_path_factory.mktemp("client"))
    yield started
    started.stop()


@pytest.fixture
def admin(server: Gunicorn) -> Iterator[AdminClient]:
    with AdminClient(server.url, ADMIN_KEY, timeout=5) as client:
        yield client


@pytest.fixture
def profile() -> dict[str, str]:
    return {**PROFILE, "userId": f"client-{next(_users)}"}


def verify(server: Gunicorn, token: str) -> requests.Response:
    return requests.post(f"{server.url}/api/v1/mozarto/verify-user",
                         headers={"Authorization": f"Bearer {token}"}, timeout=5)


def test_create_verify_list_revoke_as_a_platform_backend_would(server, admin, profile) -> None:
    before = datetime.now(UTC)
    created = admin.create_session(profile, ttl_seconds=600, idle_timeout_seconds=300)
    assert created.user_id == profile["userId"] and created.idle_timeout_seconds == 300
    assert created.token not in repr(created)
    assert before + timedelta(seconds=599) < created.expires_at < before + timedelta(seconds=610)
    assert verify(server, created.token).json()["data"] == profile

    [listed] = admin.list_sessions(profile["userId"])
    assert listed.expires_at == created.expires_at and listed.idle_timeout_seconds == 300
    assert listed.last_verified_at is not None and listed.last_verified_at >= listed.created_at

    admin.revoke_session(created.token)
    admin.revoke_session(created.token)  # already gone: no error
    assert verify(server, created.token).status_code == 401
    assert admin.list_sessions(profile["userId"]) == []


def test_users_profiles_and_flags(server, admin, profile) -> None:
    token = admin.create_session(profile).token
    user = admin.get_user(profile["userId"])
    assert user.user_id == profile["userId"] and user.profile == profile
    assert not user.blocked and not user.password_expired

    user = admin.update_user(profile["userId"], {"lastName": "Byron", "passwordExpired": True})
    assert user.profile["lastName"] == "Byron" and user.password_expired
    assert verify(server, token).json()["errors"][0]["code"] == "password_expired"
    admin.set_password_expired(profile["userId"], False)
    admin.set_blocked(profile["userId"])
    assert verify(server, token).json()["errors"][0]["code"] == "user_blocked"
    admin.set_blocked(profile["userId"], False)
    assert verify(server, token).json()["data"]["lastName"] == "Byron"


def test_register_and_revoke_every_session_of_a_user(server, admin, profile) -> None:
    token = f"{PLATFORM_TOKEN}.{profile['userId']}"
    registered = admin.register_session(token, profile, ttl_seconds=60)
    assert registered.user_id == profile["userId"]
    admin.create_session(profile)
    with pytest.raises(Conflict) as caught:
        admin.register_session(token, profile)
    assert caught.value.status == 409 and caught.value.code == "token_exists"
    assert admin.revoke_user_sessions(profile["userId"]) == 2
    assert verify(server, token).status_code == 401


def test_validation_errors_name_each_field(admin, profile) -> None:
    with pytest.raises(ValidationError) as caught:
        admin.create_session({**profile, "email": "nope", "role": "x"}, ttl_seconds=0)
    assert caught.value.status == 400 and caught.value.code == "invalid_fields"
    assert set(caught.value.field_errors) == {"email", "role", "ttlSeconds"}
    assert isinstance(caught.value, AdminError)


def test_unknown_user_is_not_found(admin) -> None:
    with pytest.raises(NotFound) as caught:
        admin.get_user("nobody-at-all")
    assert caught.value.code == "user_not_found" and caught.value.status == 404
    with pytest.raises(NotFound):
        admin.set_blocked("nobody-at-all")


@pytest.mark.parametrize("key, code", [("w" * 40, "invalid_admin_key"),
                                       (ADMIN_KEY_NEXT, None)])
def test_a_wrong_key_is_unauthorized_and_the_next_key_works(server, profile, key, code) -> None:
    with AdminClient(server.url, key) as client:
        if code is None:
            assert client.create_session(profile).user_id == profile["userId"]
            return
        with pytest.raises(Unauthorized) as caught:
            client.create_session(profile)
    assert caught.value.status == 401 and caught.value.code == code
    assert key not in str(caught.value)


def test_connections_are_reused(server, admin, profile) -> None:
    for _ in range(5):
        admin.list_sessions(profile["userId"])
    pools = admin._http.get_adapter(server.url).poolmanager.pools
    [key] = pools.keys()
    assert pools[key].num_connections == 1


@pytest.mark.parametrize("user_id", ["a/b", ".", "..", ""])
def test_a_user_id_that_cannot_be_a_path_segment_is_refused_before_any_call(admin, user_id) -> None:
    with pytest.raises(ValueError):
        admin.get_user(user_id)


def test_nothing_listening_is_unavailable_without_a_status() -> None:
    client = AdminClient(f"http://127.0.0.1:{free_port()}", ADMIN_KEY, timeout=2)
    with client, pytest.raises(Unavailable) as caught:
        client.list_sessions("u-1")
    assert caught.value.status is None and caught.value.code == "connection_error"


def test_a_store_that_is_down_is_unavailable_with_retry_after(
        gunicorn: Callable[..., Gunicorn], env: dict[str, str], profile) -> None:
    server = gunicorn({**env, "VERIFIER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    with AdminClient(server.url, ADMIN_KEY) as client, pytest.raises(Unavailable) as caught:
        client.create_session(profile)
    assert caught.value.status == 503 and caught.value.code == "unavailable"
    assert caught.value.retry_after_seconds == 1


class _ProxyPage(http.server.BaseHTTPRequestHandler):
    """What a reverse proxy answers when the service behind it is down: HTML, not the envelope."""

    def do_GET(self) -> None:
        body = b"<html><body>502 Bad Gateway</body></html>"
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_an_error_page_that_is_not_the_envelope_still_raises_a_typed_error() -> None:
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ProxyPage)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        client = AdminClient(f"http://127.0.0.1:{proxy.server_address[1]}", ADMIN_KEY)
        with client, pytest.raises(Unavailable) as caught:
            client.get_user("u-1")
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert caught.value.status == 502 and caught.value.code == "http_502"


@pytest.mark.parametrize("base_url, key", [("ftp://x", ADMIN_KEY), ("127.0.0.1:8000", ADMIN_KEY),
                                           ("http://127.0.0.1:8000", "")])
def test_bad_construction_arguments_are_refused(base_url: str, key: str) -> None:
    with pytest.raises(ValueError):
        AdminClient(base_url, key)
