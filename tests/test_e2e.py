"""End to end: the service under gunicorn, as deployed, and `verifier serve` with its embedded store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import PROFILE, ROOT, free_port

pytestmark = pytest.mark.e2e
PATH = "/api/v1/mozarto/verify-user"
CLI = [sys.executable, "-c", "from verifier.cli import main; main()"]
PROFILE_ARGS = ["--user-id", "u-1", "--email", PROFILE["email"], "--first-name", "Ada",
                "--last-name", "Lovelace", "--phone", PROFILE["phone"], "--country-code", "GB"]


def verify(base: str, token: str, user_id: object = "u-1", close: bool = False) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if close:
        headers["Connection"] = "close"
    return requests.post(base + PATH, headers=headers, json={"userId": user_id}, timeout=5)


def cli(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env={**os.environ, **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_create_verify_revoke_under_gunicorn(gunicorn, env) -> None:
    server = gunicorn({**env, "VERIFIER_WORKERS": "2"})
    created = cli(env, "session", "create", *PROFILE_ARGS)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    response = verify(server.url, token)
    assert response.status_code == 200
    assert response.json()["data"]["userId"] == "u-1"
    assert response.headers["Cache-Control"] == "no-store"
    assert verify(server.url, token, user_id=1).status_code == 403
    assert cli(env, "session", "revoke", token).returncode == 0
    response = verify(server.url, token)
    assert response.status_code == 401 and response.json()["errors"][0]["code"] == "invalid_token"
    server.request_lines(3)  # every verification's line is written
    assert token not in server.log()


def test_a_revocation_is_seen_by_every_worker_at_once(gunicorn, env) -> None:
    server = gunicorn({**env, "VERIFIER_WORKERS": "3", "VERIFIER_THREADS": "2"})
    token = cli(env, "session", "create", *PROFILE_ARGS).stdout.strip()
    # Fresh connections spread over the workers; each has answered 200 before the revoke.
    assert {verify(server.url, token, close=True).status_code for _ in range(30)} == {200}
    assert cli(env, "session", "revoke-user", "u-1").stdout.strip() == "1"
    assert {verify(server.url, token, close=True).status_code for _ in range(30)} == {401}


@pytest.fixture
def silent_redis() -> Iterator[int]:
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_store_that_never_answers_is_503_quickly_and_the_worker_serves_on(
        gunicorn, env, silent_redis: int) -> None:
    server = gunicorn({**env, "VERIFIER_REDIS_URL": f"redis://127.0.0.1:{silent_redis}/0",
                       "VERIFIER_WORKERS": "1", "VERIFIER_THREADS": "1"})
    for _ in range(3):
        started = time.monotonic()
        response = verify(server.url, "vfs_abcd_" + "A" * 43)
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert time.monotonic() - started < 2.0
    assert requests.get(server.url + "/livez", timeout=2).status_code == 200


def test_a_closed_store_port_is_503_within_a_second(gunicorn, env) -> None:
    server = gunicorn({**env, "VERIFIER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    started = time.monotonic()
    response = verify(server.url, "vfs_abcd_" + "A" * 43)
    assert response.status_code == 503
    assert response.json()["errors"][0]["code"] == "unavailable"
    assert time.monotonic() - started < 1.0


def _serve(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VERIFIER_BIND": f"127.0.0.1:{port}", "VERIFIER_WORKERS": "1"}
    env.pop("VERIFIER_REDIS_URL", None)
    return subprocess.Popen([*CLI, "serve"], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_live(url: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        assert process.poll() is None, "verifier serve exited"
        try:
            if requests.get(url + "/readyz", timeout=0.5).ok:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.1)
    raise AssertionError("verifier serve did not become ready")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_serve_runs_an_embedded_store_that_keeps_sessions_across_restarts(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = _serve(tmp_path, port)
    try:
        _wait_live(url, process)
        env = {"VERIFIER_REDIS_URL": ""}
        created = cli(env, "session", "create", *PROFILE_ARGS, cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        token = created.stdout.strip()
        assert verify(url, token).status_code == 200
    finally:
        _stop(process)
    socket_path = tmp_path / "var" / "valkey" / "valkey.sock"
    assert not socket_path.exists(), "the embedded store was stopped with the service"
    assert list((tmp_path / "var" / "valkey").glob("appendonly*"))

    process = _serve(tmp_path, port)
    try:
        _wait_live(url, process)
        assert verify(url, token).status_code == 200
    finally:
        _stop(process)
