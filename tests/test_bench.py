"""`make bench` seeds through the service's own code: what it writes verifies like any session."""

from __future__ import annotations

import io
from pathlib import Path

import redis
from flask.testing import FlaskClient

from bench.run import sample_tokens
from bench.seed import Seeder, profile
from verifier.config import Settings
from verifier.sessions import SessionManager

PATH = "/api/v1/mozarto/verify-user"


def test_seeded_sessions_verify_with_their_users_profiles(
        settings: Settings, client: FlaskClient, sessions: SessionManager) -> None:
    tokens = io.StringIO()
    with Seeder(settings, users=3) as seeder:
        seeder.create(3, tokens)
        seeder.create(4, tokens)
    pairs = [line.split("\t") for line in tokens.getvalue().splitlines()]
    assert [user_id for _, user_id in pairs] == [f"u-{n % 3:07d}" for n in range(7)]
    for token, user_id in pairs:
        response = client.post(PATH, headers={"Authorization": f"Bearer {token}"},
                               json={"userId": user_id})
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["data"] == profile(int(user_id[2:]))
    assert len(sessions.list_sessions("u-0000000")) == 3


def test_seeded_keys_are_the_keys_the_service_writes(
        settings: Settings, sessions: SessionManager, raw_redis: redis.Redis) -> None:
    with Seeder(settings, users=1) as seeder:
        seeder.create(1, io.StringIO())
    seeded = {key.decode(): raw_redis.type(key) for key in raw_redis.scan_iter(f"{settings.key_prefix}:*")}
    raw_redis.delete(*seeded)
    sessions.create_session(profile(0))
    created = {key.decode(): raw_redis.type(key) for key in raw_redis.scan_iter(f"{settings.key_prefix}:*")}
    # The same user's record and index, and one session key each (its name is the token's hash).
    assert sorted(seeded.values()) == sorted(created.values())
    assert {k for k in seeded if ":s:" not in k} == {k for k in created if ":s:" not in k}
    assert raw_redis.hgetall(next(k for k in created if ":u:" in k)) == {
        key.encode(): value.encode() for key, value in profile(0).items()}


def test_wrk_draws_from_a_sample_of_the_seeded_tokens(tmp_path: Path) -> None:
    seeded = tmp_path / "tokens.tsv"
    seeded.write_text("".join(f"t{n}\tu-{n}\n" for n in range(100)))
    sample = sample_tokens(seeded, 10, tmp_path / "sample.tsv").read_text().splitlines()
    assert len(sample) == len(set(sample)) == 10
    assert set(sample) <= set(seeded.read_text().splitlines())
