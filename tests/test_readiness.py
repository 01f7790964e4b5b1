"""Readiness: hysteresis over store checks, starting with the store down, and draining on SIGTERM."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests
from conftest import PROFILE, OwnValkey

from verifier.app import build_services, create_app
from verifier.config import Settings
from verifier.errors import NotReady, ShuttingDown
from verifier.readiness import Readiness

PATH = "/api/v1/mozarto/verify-user"


@pytest.fixture
def readiness_on(settings: Settings) -> Iterator[Callable[..., Readiness]]:
    """Readiness over a store at the given URL, with its own shutdown flag; closed after the test."""
    clients: list[redis.Redis] = []

    def make(url: str, shutdown: threading.Event | None = None) -> Readiness:
        store = build_services(settings.with_overrides(redis_url=url)).store
        clients.append(store.client)  # type: ignore[attr-defined]
        return Readiness(store, failures_to_unready=3, successes_to_ready=2,
                         shutdown=shutdown or threading.Event())

    yield make
    for client in clients:
        client.close()


def is_ready(readiness: Readiness) -> bool:
    try:
        readiness.check()
    except NotReady:
        return False
    return True


def test_not_ready_until_the_store_first_answers(readiness_on, tmp_path: Path) -> None:
    store = OwnValkey(tmp_path / "v")
    try:
        readiness = readiness_on(store.url)
        assert [is_ready(readiness) for _ in range(3)] == [False] * 3
        store.start()
        assert is_ready(readiness), "one answer is enough at start: there is no history to flap"
    finally:
        store.close()


def test_falls_after_three_failures_in_a_row_and_rises_after_two_successes(
        readiness_on, own_valkey: OwnValkey) -> None:
    readiness = readiness_on(own_valkey.url)
    assert is_ready(readiness)
    own_valkey.stop()
    assert [is_ready(readiness) for _ in range(4)] == [True, True, False, False]
    own_valkey.start()
    assert [is_ready(readiness) for _ in range(3)] == [False, True, True]


def test_a_store_that_answers_every_other_check_does_not_flap_it(
        readiness_on, own_valkey: OwnValkey) -> None:
    readiness = readiness_on(own_valkey.url)
    assert is_ready(readiness)
    verdicts = []
    for _ in range(3):
        own_valkey.stop()
        verdicts.append(is_ready(readiness))
        own_valkey.start()
        verdicts.append(is_ready(readiness))
    assert verdicts == [True] * 6, "single failures between successes never take it out"

    own_valkey.stop()
    assert [is_ready(readiness) for _ in range(3)] == [True, True, False]
    verdicts = []
    for _ in range(3):
        own_valkey.start()
        verdicts.append(is_ready(readiness))
        own_valkey.stop()
        verdicts.append(is_ready(readiness))
    assert verdicts == [False] * 6, "single successes between failures never bring it back"


def test_shutdown_answers_503_whatever_the_store_does(readiness_on, redis_url: str) -> None:
    shutdown = threading.Event()
    readiness = readiness_on(redis_url, shutdown)
    readiness.check()
    shutdown.set()
    with pytest.raises(ShuttingDown):
        readiness.check()
    assert not readiness.ready


def test_readyz_answers_each_state_in_the_envelope(settings: Settings, own_valkey: OwnValkey) -> None:
    app = create_app(settings.with_overrides(redis_url=own_valkey.url))
    client = app.test_client()
    assert client.get("/readyz").get_json() == {"status": "ready"}
    app.extensions["verifier"].store.client.close()
    own_valkey.stop()
    statuses = [client.get("/readyz").status_code for _ in range(3)]
    assert statuses == [200, 200, 503]
    response = client.get("/readyz")
    body = response.get_json()
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert body["errors"][0]["code"] == "not_ready"
    assert "Connection refused" not in json.dumps(body), "no internal detail in the answer"
    assert client.get("/livez").status_code == 200

    app.extensions["verifier"].readiness.shutdown = threading.Event()
    app.extensions["verifier"].readiness.shutdown.set()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["errors"][0]["code"] == "shutting_down"


@pytest.mark.e2e
def test_the_service_starts_with_the_store_down_and_gets_ready_when_it_answers(
        gunicorn: Callable[..., object], tmp_path: Path) -> None:
    store = OwnValkey(tmp_path / "v")
    try:
        server = gunicorn({"VERIFIER_REDIS_URL": store.url, "VERIFIER_KEY_PREFIX": "late"})
        base = server.url  # type: ignore[attr-defined]
        assert requests.get(base + "/livez", timeout=2).status_code == 200
        response = requests.get(base + "/readyz", timeout=2)
        assert response.status_code == 503
        assert response.json()["errors"][0]["code"] == "not_ready"
        store.start()
        deadline = time.monotonic() + 10
        while requests.get(base + "/readyz", timeout=2).status_code != 200:
            assert time.monotonic() < deadline, "not ready although the store answers"
            time.sleep(0.05)
    finally:
        store.close()


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.e2e
def test_sigterm_turns_readiness_503_at_once_and_requests_in_flight_complete(
        gunicorn: Callable[..., object], env: dict[str, str],
        make_session: Callable[..., str]) -> None:
    token = make_session()
    server = gunicorn({**env, "VERIFIER_WORKERS": "1"})
    host, port = "127.0.0.1", server.port  # type: ignore[attr-defined]
    probe = http.client.HTTPConnection(host, port, timeout=5)
    probe.request("GET", "/readyz")
    first = probe.getresponse()
    assert first.status == 200
    first.read()

    # A request in flight: the worker has taken it (gunicorn sends 100 Continue when it builds
    # the request for the app), and waits for the rest of its body.
    body = json.dumps({"userId": PROFILE["userId"]}).encode()
    in_flight = socket.create_connection((host, port), timeout=10)
    in_flight.sendall(
        f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\n\r\n".encode())
    assert b"100 Continue" in _read_until(in_flight, b"\r\n\r\n")
    in_flight.sendall(body[:5])

    os.kill(server.process.pid, signal.SIGTERM)  # type: ignore[attr-defined]
    # On the kept-alive connection (the way a balancer probes), readiness turns 503 as soon as
    # the signal has reached the worker.
    deadline = time.monotonic() + 5
    while True:
        probe.request("GET", "/readyz")
        answer = probe.getresponse()
        payload = answer.read()
        if answer.status != 200:
            break
        assert time.monotonic() < deadline, "readiness still 200 after SIGTERM"
    assert answer.status == 503
    assert json.loads(payload)["errors"][0]["code"] == "shutting_down"
    assert server.process.poll() is None, "the worker waits for the request in flight"  # type: ignore[attr-defined]

    in_flight.sendall(body[5:])
    reply = _read_until(in_flight, b'"isSuccess":true')
    in_flight.close()
    assert reply.split(b"\r\n", 1)[0].endswith(b"200 OK"), reply[:200]
    assert b'"userId":"u-1"' in reply
    probe.close()
    assert server.process.wait(timeout=15) == 0  # type: ignore[attr-defined]
