"""Failed verifications are limited per caller address, in the store, so every worker agrees."""

from __future__ import annotations

import pytest
from conftest import free_port
from flask.testing import FlaskClient

from verifier.app import build_services, create_app
from verifier.config import load_settings
from verifier.errors import RateLimited, StoreUnavailable
from verifier.ratelimit import FailureLimiter

PATH = "/api/v1/mozarto/verify-user"
BAD = "Bearer " + "not-a-session-" * 3


def limited_client(env: dict[str, str], clock, limit: int = 3, **variables: str) -> FlaskClient:
    settings = load_settings({**env, "VERIFIER_FAILED_VERIFY_LIMIT": str(limit), **variables})
    return create_app(settings, clock=clock).test_client()


def call(client: FlaskClient, auth: str | None, peer: str = "198.51.100.1"):
    headers = {} if auth is None else {"Authorization": auth}
    return client.post(PATH, headers=headers, environ_base={"REMOTE_ADDR": peer})


def code(response) -> str:
    return str(response.get_json()["errors"][0]["code"])


def test_past_the_limit_failures_answer_429_with_retry_after(env, clock) -> None:
    client = limited_client(env, clock, VERIFIER_FAILED_VERIFY_WINDOW_SECONDS="30")
    assert [call(client, BAD).status_code for _ in range(3)] == [401, 401, 401]
    response = call(client, BAD)
    assert response.status_code == 429 and code(response) == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 30
    assert "WWW-Authenticate" not in response.headers
    # Every kind of 401 counts: missing, malformed, unknown.
    assert call(client, None).status_code == 429
    assert call(client, "Bearer a b").status_code == 429


def test_successes_never_count_and_are_never_refused(env, clock, make_session) -> None:
    client = limited_client(env, clock)
    token = make_session()
    for _ in range(10):
        assert call(client, f"Bearer {token}").status_code == 200
    assert [call(client, BAD).status_code for _ in range(4)] == [401, 401, 401, 429]
    # Over the limit, a good token is still answered: Mozarto's address carries every user.
    assert call(client, f"Bearer {token}").status_code == 200


def test_other_callers_are_not_affected(env, clock) -> None:
    client = limited_client(env, clock, limit=1)
    assert [call(client, BAD).status_code for _ in range(2)] == [401, 429]
    assert call(client, BAD, peer="198.51.100.2").status_code == 401
    # IPv6 callers are counted per /64.
    assert call(client, BAD, peer="2001:db8:0:1::1").status_code == 401
    assert call(client, BAD, peer="2001:db8:0:1::2").status_code == 429
    assert call(client, BAD, peer="2001:db8:0:2::1").status_code == 401


def test_the_count_is_shared_by_every_worker(env, clock) -> None:
    # Two apps on one store stand for two gunicorn workers (or two instances).
    first, second = limited_client(env, clock, limit=2), limited_client(env, clock, limit=2)
    assert call(first, BAD).status_code == 401
    assert call(second, BAD).status_code == 401
    assert call(first, BAD).status_code == 429
    assert call(second, BAD).status_code == 429


def test_the_window_ends(env, clock, settings, raw_redis) -> None:
    client = limited_client(env, clock, limit=1)
    assert [call(client, BAD).status_code for _ in range(2)] == [401, 429]
    key = f"{settings.key_prefix}:f:198.51.100.1"
    assert 0 < raw_redis.pttl(key) <= 60_000, "the counter always has its window's expiry"
    raw_redis.delete(key)  # what the window's end does
    assert call(client, BAD).status_code == 401


def test_zero_turns_it_off(env, clock, settings, raw_redis) -> None:
    client = limited_client(env, clock, limit=0)
    assert {call(client, BAD).status_code for _ in range(20)} == {401}
    assert not raw_redis.keys(f"{settings.key_prefix}:f:*")


def test_other_errors_do_not_count(env, clock, make_session) -> None:
    client = limited_client(env, clock, limit=1)
    token = make_session()
    for _ in range(3):
        response = client.post(PATH, headers={"Authorization": f"Bearer {token}"},
                               json={"userId": "someone-else"}, environ_base={"REMOTE_ADDR": "198.51.100.1"})
        assert response.status_code == 403
    assert call(client, BAD).status_code == 401


def test_a_lost_count_leaves_the_401_a_401() -> None:
    class DownCounter:
        def count_failure(self, subject: str, window_ms: int) -> tuple[int, int]:
            raise StoreUnavailable("down")

    FailureLimiter(DownCounter(), limit=1, window_seconds=60).record_failure(None)  # no raise


def test_limiter_against_the_store(settings) -> None:
    store = build_services(settings).store
    limiter = FailureLimiter(store, limit=2, window_seconds=5)  # type: ignore[arg-type]
    limiter.record_failure(None)
    limiter.record_failure(None)
    with pytest.raises(RateLimited) as info:
        limiter.record_failure(None)
    assert 1 <= info.value.retry_after_seconds <= 5


def test_store_down_is_503_not_429_nor_401(settings) -> None:
    down = settings.with_overrides(redis_url=f"redis://127.0.0.1:{free_port()}/0", failed_verify_limit=1)
    client = create_app(down).test_client()
    for _ in range(3):
        assert call(client, BAD).status_code == 503
        assert call(client, None).status_code == 503
