"""The store's contract, one suite for every backend: each test runs against a standalone Valkey,
a Sentinel group (with WAIT for one replica on) and a 3-master Cluster (`store_backend`)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from conftest import PROFILE
from redis_topologies import StoreBackend

from verifier import tokens
from verifier.errors import StoreUnavailable, TokenConflict
from verifier.store import NewSession, Outcome, RedisSessionStore, SessionRef, connect

# NOW is fixed at import: an hour of grace keeps these keys alive however long the suite runs first.
GRACE_MS = 3_600_000
NOW = int(time.time() * 1000)
TAG = tokens.routing_tag(PROFILE["userId"])


@pytest.fixture
def env(env: dict[str, str], store_backend: StoreBackend) -> dict[str, str]:
    return {**env, **store_backend.env}


@pytest.fixture
def raw_redis(store_backend: StoreBackend) -> Iterator[redis.Redis | redis.RedisCluster]:
    client = store_backend.raw_client()
    yield client
    client.close()


@pytest.fixture
def store(settings) -> Iterator[RedisSessionStore]:
    built = RedisSessionStore(connect(settings), settings.key_prefix, GRACE_MS,
                              wait_replicas=settings.redis_wait_replicas,
                              wait_timeout_ms=settings.redis_wait_timeout_ms)
    yield built
    built.close()


def new_session(token: str | None = None, *, user_id: str = "u-1", ttl_ms: int = 60_000,
                idle_ms: int = 0, created_ms: int = NOW) -> tuple[str, NewSession]:
    token = token or tokens.mint_token(user_id)
    ref = SessionRef(tokens.token_hash(token), tokens.minted_tag(token))
    return token, NewSession(ref, user_id, tokens.routing_tag(user_id), created_ms,
                             created_ms + ttl_ms, idle_ms, registered=ref.tag is None)


def profile_for(user_id: str) -> dict[str, str]:
    return {**PROFILE, "userId": user_id}


def test_created_session_verifies_with_the_profile(store: RedisSessionStore) -> None:
    _, session = new_session()
    store.create(session, PROFILE)
    result = store.verify(session.ref, NOW + 1, None)
    assert result.outcome is Outcome.VERIFIED and result.profile == PROFILE


def test_missing_key_is_unknown(store: RedisSessionStore) -> None:
    _, session = new_session()
    assert store.verify(session.ref, NOW, None).outcome is Outcome.UNKNOWN
    registered = SessionRef(tokens.token_hash("x" * 40), None)
    assert store.verify(registered, NOW, None).outcome is Outcome.UNKNOWN


def test_every_session_key_has_a_ttl_and_no_token_is_stored(store, raw_redis, settings) -> None:
    token, session = new_session()
    store.create(session, PROFILE)
    registered, reg_session = new_session("platform-jwt." + "y" * 40)
    store.create(reg_session, PROFILE)
    keys = raw_redis.keys(f"{settings.key_prefix}:*")
    for key in keys:
        name = key.decode()
        if ":u:" not in name:  # only the user record is persistent
            assert raw_redis.pttl(key) > 0, name
        dumped = raw_redis.dump(key) or b""
        for secret in (token, registered, token[len("vfs_0000_"):]):
            assert secret.encode() not in key and secret.encode() not in dumped


def test_key_ttl_is_the_expiry_plus_grace(store, raw_redis, settings) -> None:
    _, session = new_session(ttl_ms=600_000, created_ms=int(time.time() * 1000))
    store.create(session, PROFILE)
    [key] = raw_redis.keys(f"{settings.key_prefix}:*:s:*")
    assert 600_000 < raw_redis.pttl(key) <= 600_000 + GRACE_MS


def test_same_token_twice_is_a_conflict_and_changes_nothing(store) -> None:
    token, session = new_session("platform-token-" + "z" * 30)
    store.create(session, PROFILE)
    _, again = new_session(token, user_id="u-2")
    with pytest.raises(TokenConflict):
        store.create(again, profile_for("u-2"))
    assert store.verify(session.ref, NOW, None).profile == PROFILE


def test_expired_is_reported_and_not_extended(store, raw_redis, settings) -> None:
    _, session = new_session(ttl_ms=1000)
    store.create(session, PROFILE)
    [key] = raw_redis.keys(f"{settings.key_prefix}:*:s:*")
    before = raw_redis.get(key)
    assert store.verify(session.ref, NOW + 1000, None).outcome is Outcome.EXPIRED
    assert raw_redis.get(key) == before


def test_idle_timeout_counts_from_the_last_verification(store) -> None:
    _, session = new_session(idle_ms=1000)
    store.create(session, PROFILE)
    assert store.verify(session.ref, NOW + 900, None).outcome is Outcome.VERIFIED
    assert store.verify(session.ref, NOW + 1800, None).outcome is Outcome.VERIFIED
    assert store.verify(session.ref, NOW + 2800, None).outcome is Outcome.EXPIRED


def test_mismatch_blocked_and_password_expired(store) -> None:
    _, session = new_session()
    store.create(session, PROFILE)
    assert store.verify(session.ref, NOW, "u-2").outcome is Outcome.MISMATCH
    assert store.verify(session.ref, NOW, "u-1").outcome is Outcome.VERIFIED
    assert store.set_flag("u-1", TAG, "passwordExpired", True)
    assert store.verify(session.ref, NOW, None).outcome is Outcome.PASSWORD_EXPIRED
    assert store.set_flag("u-1", TAG, "blocked", True)
    assert store.verify(session.ref, NOW, None).outcome is Outcome.BLOCKED
    store.set_flag("u-1", TAG, "blocked", False)
    store.set_flag("u-1", TAG, "passwordExpired", False)
    assert store.verify(session.ref, NOW, None).outcome is Outcome.VERIFIED


def test_flags_survive_a_new_login(store) -> None:
    _, first = new_session()
    store.create(first, PROFILE)
    store.set_flag("u-1", TAG, "blocked", True)
    _, second = new_session()
    store.create(second, PROFILE)
    assert store.verify(second.ref, NOW, None).outcome is Outcome.BLOCKED


def test_flags_and_updates_of_unknown_users_report_false(store) -> None:
    assert not store.set_flag("nobody", tokens.routing_tag("nobody"), "blocked", True)
    assert not store.update_profile("nobody", tokens.routing_tag("nobody"), profile_for("nobody"))
    assert store.get_user("nobody", tokens.routing_tag("nobody")) is None


def test_update_profile_reaches_every_session_and_can_drop_email_verified(store) -> None:
    _, one = new_session()
    _, two = new_session()
    store.create(one, PROFILE)
    store.create(two, PROFILE)
    changed = {k: v for k, v in PROFILE.items() if k != "emailVerified"} | {"lastName": "Byron"}
    assert store.update_profile("u-1", TAG, changed)
    for session in (one, two):
        assert store.verify(session.ref, NOW, None).profile == changed


def test_revoke_one(store) -> None:
    _, one = new_session()
    _, two = new_session()
    store.create(one, PROFILE)
    store.create(two, PROFILE)
    assert store.revoke(one.ref) is True
    assert store.revoke(one.ref) is False
    assert store.verify(one.ref, NOW, None).outcome is Outcome.UNKNOWN
    assert store.verify(two.ref, NOW, None).outcome is Outcome.VERIFIED
    assert [s.created_ms for s in store.list_sessions("u-1", TAG, NOW)] == [NOW]


def test_revoke_registered_token_removes_its_alias(store, raw_redis, settings) -> None:
    _, session = new_session("platform-token-" + "q" * 30)
    store.create(session, PROFILE)
    assert store.revoke(session.ref)
    assert raw_redis.keys(f"{settings.key_prefix}:a:*") == []
    # The same token can be registered again afterwards.
    store.create(session, PROFILE)


def test_revoke_user_ends_minted_and_registered_sessions_only_of_that_user(store) -> None:
    sessions = [new_session()[1], new_session("platform-token-" + "r" * 30)[1]]
    _, other = new_session(user_id="u-2")
    for session in sessions:
        store.create(session, PROFILE)
    store.create(other, profile_for("u-2"))
    assert store.revoke_user("u-1", TAG, NOW) == 2
    for session in sessions:
        assert store.verify(session.ref, NOW, None).outcome is Outcome.UNKNOWN
    assert store.verify(other.ref, NOW, None).outcome is Outcome.VERIFIED
    assert store.revoke_user("u-1", TAG, NOW) == 0
    # A revoked registered token can be registered again.
    store.create(sessions[1], PROFILE)


def test_list_sessions_skips_expired_and_reports_last_verified(store) -> None:
    _, old = new_session(ttl_ms=1000)
    _, live = new_session(ttl_ms=60_000, created_ms=NOW + 1)
    store.create(old, PROFILE)
    store.create(live, PROFILE)
    store.verify(live.ref, NOW + 500, None)
    listed = store.list_sessions("u-1", TAG, NOW + 2000)
    assert [(s.created_ms, s.last_verified_ms) for s in listed] == [(NOW + 1, NOW + 500)]
    assert len(listed[0].session_id) == 12 and listed[0].session_id in live.ref.token_hash


def test_store_down_raises_store_unavailable(settings) -> None:
    from conftest import free_port
    closed = RedisSessionStore(
        connect(settings.with_overrides(redis_url=f"redis://127.0.0.1:{free_port()}/0")),
        settings.key_prefix, GRACE_MS)
    _, session = new_session()
    for call in (closed.ping, lambda: closed.verify(session.ref, NOW, None),
                 lambda: closed.create(session, PROFILE), lambda: closed.revoke(session.ref)):
        with pytest.raises(StoreUnavailable):
            call()


def test_redis_errors_never_escape_as_redis_errors(store, raw_redis, settings) -> None:
    _, session = new_session()
    # A key of the wrong type where the session should be: a store fault, not a crash.
    key = f"{settings.key_prefix}:{{{session.tag}}}:s:{session.ref.token_hash}"
    raw_redis.hset(key, "x", "y")
    with pytest.raises(StoreUnavailable):
        store.verify(session.ref, NOW, None)
    assert not isinstance(StoreUnavailable(), redis.RedisError)


def _on_every_primary(raw: redis.Redis | redis.RedisCluster, *command: str) -> None:
    if isinstance(raw, redis.RedisCluster):
        for node in raw.get_primaries():
            raw.get_redis_connection(node).execute_command(*command)
    else:
        raw.execute_command(*command)


def test_verification_loads_its_script_again_on_a_store_that_lost_it(
        store: RedisSessionStore, raw_redis: redis.Redis | redis.RedisCluster) -> None:
    """A restarted or failed-over server has no scripts: the next verification loads it."""
    _, session = new_session()
    store.create(session, PROFILE)
    assert store.verify(session.ref, NOW + 1, None).outcome is Outcome.VERIFIED
    _on_every_primary(raw_redis, "SCRIPT", "FLUSH")
    assert store.verify(session.ref, NOW + 2, None).outcome is Outcome.VERIFIED


def test_connections_the_store_closed_are_replaced_at_the_next_verification(
        store: RedisSessionStore, raw_redis: redis.Redis | redis.RedisCluster) -> None:
    """A server's idle `timeout`, a CLIENT KILL or a proxy closing idle connections: no 503."""
    _, session = new_session()
    store.create(session, PROFILE)
    assert store.verify(session.ref, NOW + 1, None).outcome is Outcome.VERIFIED
    _on_every_primary(raw_redis, "CLIENT", "KILL", "TYPE", "normal")  # all but the caller's own
    assert store.verify(session.ref, NOW + 2, None).outcome is Outcome.VERIFIED
