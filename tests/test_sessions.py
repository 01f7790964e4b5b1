"""The session manager: what a token means, over a real store."""

from __future__ import annotations

import pytest
from conftest import PROFILE, FakeClock

from verifier.errors import (
    BadRequest,
    TokenConflict,
    TokenExpired,
    TokenInvalid,
    UserNotFound,
    ValidationFailed,
)
from verifier.sessions import SessionManager


def keys(raw_redis, settings) -> list[bytes]:
    return raw_redis.keys(f"{settings.key_prefix}:*")


def test_bad_profile_and_lifetime_are_named_together_and_nothing_is_written(
        sessions: SessionManager, raw_redis, settings) -> None:
    with pytest.raises(ValidationFailed) as info:
        sessions.create_session({**PROFILE, "email": "x", "countryCode": "ZZ"}, ttl_seconds=0)
    assert set(info.value.fields) == {"email", "countryCode", "ttlSeconds"}
    assert keys(raw_redis, settings) == []


def test_lifetime_over_the_maximum_is_refused(sessions: SessionManager, settings) -> None:
    with pytest.raises(ValidationFailed, match="ttlSeconds"):
        sessions.create_session(PROFILE, ttl_seconds=settings.session_max_ttl_seconds + 1)


def test_default_lifetime_is_a_day(sessions: SessionManager, clock: FakeClock) -> None:
    created = sessions.create_session(PROFILE)
    assert created.expires_at == pytest.approx(clock.now + 86400, abs=0.01)
    clock.advance(86399)
    assert sessions.verify_session(created.token)["userId"] == "u-1"
    clock.advance(2)
    with pytest.raises(TokenExpired):
        sessions.verify_session(created.token)


def test_registered_platform_jwt_verifies(sessions: SessionManager) -> None:
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJpZCI6IjEiLCJlbWFpbCI6ImFAYi5jIn0.c2lnbmF0dXJlLXNpZw"
    sessions.register_session(jwt_like, PROFILE, ttl_seconds=3600)
    assert sessions.verify_session(jwt_like) == PROFILE
    with pytest.raises(TokenConflict):
        sessions.register_session(jwt_like, PROFILE)
    assert sessions.revoke_session(jwt_like)
    with pytest.raises(TokenInvalid):
        sessions.verify_session(jwt_like)


def test_short_tokens_cannot_be_registered(sessions: SessionManager, raw_redis, settings) -> None:
    with pytest.raises(ValidationFailed, match="token"):
        sessions.register_session("123456", PROFILE)
    assert keys(raw_redis, settings) == []


def test_a_forged_tag_finds_nothing(sessions: SessionManager) -> None:
    token = sessions.create_session(PROFILE).token
    forged = "vfs_0000_" + token[len("vfs_0000_"):]
    with pytest.raises(TokenInvalid):
        sessions.verify_session(forged)


def test_revoke_user_sessions_counts_live_ones(sessions: SessionManager) -> None:
    tokens_ = [sessions.create_session(PROFILE).token for _ in range(3)]
    assert sessions.revoke_user_sessions("u-1") == 3
    for token in tokens_:
        with pytest.raises(TokenInvalid):
            sessions.verify_session(token)


def test_user_record_and_flags(sessions: SessionManager) -> None:
    sessions.create_session(PROFILE)
    sessions.set_blocked("u-1")
    record = sessions.get_user("u-1")
    assert record.profile == PROFILE and record.blocked and not record.password_expired


def test_unknown_user_operations_are_user_not_found(sessions: SessionManager) -> None:
    for call in (lambda: sessions.set_blocked("ghost"), lambda: sessions.get_user("ghost"),
                 lambda: sessions.set_password_expired("ghost"),
                 lambda: sessions.update_profile("ghost", {"lastName": "X"})):
        with pytest.raises(UserNotFound):
            call()


def test_bad_update_writes_nothing(sessions: SessionManager) -> None:
    token = sessions.create_session(PROFILE).token
    with pytest.raises(ValidationFailed):
        sessions.update_profile("u-1", {"email": "broken", "lastName": "Byron"})
    with pytest.raises(BadRequest):
        sessions.update_profile("u-1", {})
    assert sessions.verify_session(token) == PROFILE


@pytest.mark.parametrize("user_id", ["", "   ", "x" * 129, "a\nb"])
def test_a_user_id_that_names_nobody_is_refused_by_every_user_operation(
        sessions: SessionManager, user_id: str) -> None:
    for call in (lambda: sessions.revoke_user_sessions(user_id), lambda: sessions.list_sessions(user_id),
                 lambda: sessions.get_user(user_id), lambda: sessions.set_blocked(user_id),
                 lambda: sessions.set_password_expired(user_id),
                 lambda: sessions.update_profile(user_id, {"lastName": "X"})):
        with pytest.raises(ValidationFailed, match="userId"):
            call()
