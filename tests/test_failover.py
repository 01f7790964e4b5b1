"""The Sentinel primary dies under load: verification answers 503 while the sentinels elect a new
one, never 401 for a good token, 200 for a bad one, or 500; sessions whose creation WAIT confirmed
still verify afterwards; creations fail (503) until the old primary is back as a replica."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
import requests
from conftest import PROFILE
from redis_topologies import SentinelGroup, group_ready, wait_until

from verifier import tokens
from verifier.app import build_services
from verifier.config import load_settings
from verifier.errors import StoreUnavailable

pytestmark = pytest.mark.e2e
PATH = "/api/v1/mozarto/verify-user"


def test_primary_killed_under_load(gunicorn, env: dict[str, str],
                                   fresh_sentinel_group: SentinelGroup,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    group = fresh_sentinel_group
    # The load's bad tokens all come from one address: no failure limit, so each answers 401.
    service_env = {**env, "VERIFIER_REDIS_URL": group.url, "VERIFIER_REDIS_WAIT_REPLICAS": "1",
                   "VERIFIER_WORKERS": "2", "VERIFIER_THREADS": "4", "VERIFIER_FAILED_VERIFY_LIMIT": "0"}
    manager = build_services(load_settings(service_env)).sessions
    good = [manager.create_session({**PROFILE, "userId": f"u-{i}"}).token for i in range(20)]
    good.append(manager.register_session("platform-jwt." + "g" * 40, PROFILE).token)
    bad = [tokens.mint_token("u-1") for _ in range(10)] + ["platform-jwt." + "b" * 40]
    server = gunicorn(service_env)

    counts: Counter[tuple[str, int | str]] = Counter()
    slowest: dict[str, float] = {}
    created: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def record(kind: str, outcome: int | str, seconds: float) -> None:
        with lock:
            counts[(kind, outcome)] += 1
            slowest[kind] = max(slowest.get(kind, 0.0), seconds)

    def drive(kind: str, pool: list[str]) -> None:
        with requests.Session() as http:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    outcome: int | str = http.post(
                        server.url + PATH, headers={"Authorization": f"Bearer {random.choice(pool)}"},
                        json={}, timeout=5).status_code
                except requests.RequestException as exc:
                    outcome = type(exc).__name__
                record(kind, outcome, time.monotonic() - started)

    def create() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                token = manager.create_session({**PROFILE, "userId": "u-new"}).token
            except StoreUnavailable:
                record("create", 503, time.monotonic() - started)
            else:
                record("create", 201, time.monotonic() - started)
                with lock:
                    created.append(token)
            stop.wait(0.02)

    workers: list[tuple[Callable[..., None], tuple[object, ...]]] = [
        (drive, ("good", good)), (drive, ("good", good)), (drive, ("bad", bad)), (create, ())]
    threads = [threading.Thread(target=target, args=args, daemon=True) for target, args in workers]
    for thread in threads:
        thread.start()
    try:
        stop.wait(1.0)
        old_port = group.master_port()
        killed_at = time.monotonic()
        group.primary.kill()
        wait_until(lambda: group.master_port() != old_port, 30, "the sentinels to elect a new primary")
        elected = time.monotonic() - killed_at
        wait_until(lambda: requests.post(server.url + PATH, headers={"Authorization": f"Bearer {good[0]}"},
                                         json={}, timeout=5).status_code == 200,
                   15, "verification to recover")
        recovered = time.monotonic() - killed_at
        stop.wait(1.0)
        # Until the old primary comes back as a replica, no creation can be confirmed.
        group.primary.restart()
        wait_until(lambda: group_ready(group), 30, "the old primary to rejoin as a replica")
        rejoined = time.monotonic() - killed_at
        confirmed_before = counts[("create", 201)]
        wait_until(lambda: counts[("create", 201)] > confirmed_before, 10, "a confirmed creation")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)

    after = Counter(requests.post(server.url + PATH, headers={"Authorization": f"Bearer {token}"},
                                  json={}, timeout=5).status_code for token in good + created)
    with capsys.disabled():
        print(f"\nfailover: new primary elected {elected:.1f} s after the kill, verification "
              f"recovered at {recovered:.1f} s, the old primary rejoined as a replica at "
              f"{rejoined:.1f} s; answers {dict(sorted(counts.items()))}; slowest answer per kind "
              f"{({k: round(v, 3) for k, v in slowest.items()})}; afterwards {len(good)} pre-kill "
              f"and {len(created)} WAIT-confirmed sessions verify as {dict(after)}")

    assert set(counts) <= {("good", 200), ("good", 503), ("bad", 401), ("bad", 503),
                           ("create", 201), ("create", 503)}, counts
    assert counts[("good", 200)] and counts[("bad", 401)] and counts[("create", 201)]
    assert after == {200: len(good) + len(created)}
    assert "Traceback" not in server.log()
