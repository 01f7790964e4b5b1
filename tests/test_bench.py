"""`make bench` seeds through the service's own code: what it writes verifies like any session;
its floor (bench/floor.py) verifies what verifier verifies; its report sets verify beside both."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import redis
from conftest import OwnValkey
from flask.testing import FlaskClient

from bench import floor
from bench.run import FLOOR_APP, Deployment, Run, gunicorn, http_request, parse_args, report, sample_tokens
from bench.seed import Seeder, profile
from verifier.config import Settings, load_settings
from verifier.sessions import SessionManager
from verifier.tokens import mint_token

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


def seed_one(settings: Settings) -> str:
    """One session for user 0 through the bench's seeder; its token."""
    tokens = io.StringIO()
    with Seeder(settings, users=1) as seeder:
        seeder.create(1, tokens)
    return tokens.getvalue().split("\t")[0]


@pytest.mark.e2e
def test_the_floor_under_gunicorn_verifies_a_seeded_session_and_refuses_others(
        settings: Settings, env: dict[str, str], redis_url: str, tmp_path: Path) -> None:
    token = seed_one(settings)
    with gunicorn(redis_url, tmp_path / "floor.log", FLOOR_APP, env) as (url, _):
        port = int(url.rsplit(":", 1)[1])

        def verify(authorization: str) -> tuple[int, dict[str, object]]:
            status, raw = http_request(port, "POST", PATH, b'{"userId": "u-0000000"}',
                                       {"Authorization": authorization})
            return status, json.loads(raw)

        status, body = verify(f"Bearer {token}")
        assert status == 200, body
        assert body["data"] == profile(0) and body["isSuccess"] is True
        for authorization, code in ((f"Bearer {mint_token('u-0000000')}", "invalid_token"),
                                    ("Bearer", "missing_token")):
            status, body = verify(authorization)
            assert status == 401
            assert body["errors"][0]["code"] == code  # type: ignore[index]


def test_the_floor_loads_verifiers_script_when_the_store_lacks_it(
        env: dict[str, str], own_valkey: OwnValkey) -> None:
    settings = load_settings({**env, "VERIFIER_REDIS_URL": own_valkey.url})
    token = seed_one(settings)
    app = floor.create_app(settings)
    store: floor.RawStore = app.extensions["floor"]
    with own_valkey.admin() as admin:
        assert admin.script_exists(store.script_sha) == [False]
        try:
            response = app.test_client().post(PATH, headers={"Authorization": f"Bearer {token}"})
        finally:
            store.close()
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["data"] == profile(0)
        assert admin.script_exists(store.script_sha) == [True]


def fake_runs(with_floor: bool) -> list[Run]:
    """Two rounds of each target in both modes: req/s, p99 and service CPU fixed per target."""
    figures = {"verify": (1000.0, 50.0, 600.0), "livez": (2000.0, 40.0, 300.0)}
    if with_floor:
        figures["floor"] = (1250.0, 45.0, 450.0)
    return [Run(f"{target}@100k", connection, round_number, rps, 10.0, p99, 0, 0, cpu_us, 50.0, 30.0)
            for target, (rps, p99, cpu_us) in figures.items()
            for connection in ("keep-alive", "close") for round_number in (1, 2)]


@pytest.mark.parametrize("with_floor", [True, False])
def test_the_report_sets_verify_beside_the_floor(
        raw_redis: redis.Redis, tmp_path: Path, with_floor: bool) -> None:
    memory = {"used_memory_delta": 2**20, "bytes_per_session_all_in": 450.0,
              "bytes_per_extra_session": 230.0, "bytes_per_user_alone": 440.0}
    deployment = Deployment("100k", 100_000, 50_000, "http://127.0.0.1:1", 1, raw_redis,
                            tmp_path / "tokens.tsv", "valkey 9", memory,
                            ("http://127.0.0.1:2", 2) if with_floor else None)
    runs = fake_runs(with_floor)
    summary, met = report([deployment], runs, parse_args([] if with_floor else ["--no-floor"]),
                          ["1.00", "2.00"], [])
    lines = summary.splitlines()
    assert "verify / livez, keep-alive: req/s 0.50, p99 1.25  (targets >= 0.8: NOT met, <= 1.5: met)" \
        in lines
    assert met == {"keep_alive_rps_ratio": False, "keep_alive_p99_ratio": True, "bytes_per_session": True}
    if not with_floor:
        assert "floor" not in summary
        return
    assert any(line.startswith("floor@100k") and "1,250" in line for line in lines)
    assert "floor / livez,  keep-alive: req/s 0.62, p99 1.12  (the most one round trip leaves verify here)" \
        in lines
    assert "floor / livez,  close     : req/s 0.62, p99 1.12" in lines
    assert "verify / floor, keep-alive: req/s 0.80, p99 1.11  (1.00: verify as cheap as the floor)" \
        in lines
    assert "verify / floor, close     : req/s 0.80, p99 1.11" in lines
    assert any(line.startswith("CPU per request") and line.endswith(
        "; floor 500 us, verify beyond the floor 150 us") for line in lines)
    # A floor that answered anything but 200 measured something cheaper than a verification.
    runs[-1].non2xx = 3
    summary, _ = report([deployment], runs, parse_args([]), ["1.00", "2.00"], [])
    assert "WARNING: 1 verify or floor runs had non-2xx answers or socket errors: " \
           "floor@100k close round 2: 3 non-2xx, 0 socket errors" in summary
