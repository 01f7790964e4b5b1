"""Settings: one table, every bad variable named at once, no default secrets."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

from verifier.config import VARIABLES, load_settings
from verifier.errors import ConfigError


def test_defaults_are_sane() -> None:
    settings = load_settings({})
    assert settings.redis_url is None
    assert settings.session_ttl_seconds == 86400
    assert settings.redis_timeout_ms < 1000 and settings.redis_connect_timeout_ms < 1000
    assert settings.listen_address == "127.0.0.1:8000"


def test_port_for_procfile_platforms_and_bind_wins() -> None:
    assert load_settings({"PORT": "5000"}).listen_address == "0.0.0.0:5000"
    assert load_settings({"PORT": "5000", "VERIFIER_BIND": "127.0.0.1:9"}).listen_address == \
        "127.0.0.1:9"


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://user:pw@h:6380/1",
                                 "unix:///run/redis.sock"])
def test_redis_url_forms(url: str) -> None:
    assert load_settings({"VERIFIER_REDIS_URL": url}).redis_url == url


def test_every_bad_variable_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({
            "VERIFIER_REDIS_URL": "http://x",
            "VERIFIER_SESSION_TTL_SECONDS": "soon",
            "VERIFIER_BIND": "nowhere",
            "VERIFIER_WORKERS": "0",
        })
    problems = "\n".join(info.value.problems)
    for name in ("VERIFIER_REDIS_URL", "VERIFIER_SESSION_TTL_SECONDS", "VERIFIER_BIND",
                 "VERIFIER_WORKERS"):
        assert name in problems
    assert len(info.value.problems) == 4


def test_timeouts_must_stay_under_a_second() -> None:
    with pytest.raises(ConfigError, match="VERIFIER_REDIS_TIMEOUT_MS"):
        load_settings({"VERIFIER_REDIS_TIMEOUT_MS": "5000"})


def test_ttl_cannot_exceed_the_maximum() -> None:
    with pytest.raises(ConfigError, match="VERIFIER_SESSION_TTL_SECONDS"):
        load_settings({"VERIFIER_SESSION_TTL_SECONDS": "100", "VERIFIER_SESSION_MAX_TTL_SECONDS": "10"})


def test_secrets_are_masked() -> None:
    masked = load_settings({"VERIFIER_REDIS_URL": "redis://user:hunter2@h:6379/0"}).masked()
    assert "hunter2" not in str(masked)
    for var in VARIABLES:
        assert var.name in masked


def test_no_variable_has_a_default_secret() -> None:
    assert all(var.default is None for var in VARIABLES if var.secret)


def test_gunicorn_refuses_to_start_on_bad_config_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "python:verifier.gunicorn_conf", "wsgi:app"],
        cwd=ROOT, env={"PATH": "/usr/bin:/bin", "VERIFIER_WORKERS": "many"},
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "VERIFIER_WORKERS" in result.stderr
    assert "Traceback" not in result.stderr
    assert "configuration error" in result.stderr.splitlines()[0]


def test_gunicorn_without_a_store_url_says_how_to_get_one() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "python:verifier.gunicorn_conf", "wsgi:app"],
        cwd=ROOT, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "VERIFIER_REDIS_URL" in result.stderr and "verifier serve" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_secret_is_not_echoed_in_the_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"VERIFIER_REDIS_URL": "http://user:hunter2@h:6379/0"})
    assert "VERIFIER_REDIS_URL" in info.value.problems[0]
    assert "hunter2" not in str(info.value)


def test_every_variable_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    assert [var.name for var in VARIABLES if f"`{var.name}`" not in readme] == []


def test_config_command_prints_the_effective_configuration_masked() -> None:
    from click.testing import CliRunner

    from verifier.cli import cli

    env = {"VERIFIER_REDIS_URL": "redis://u:hunter2hunter2@h:6379/0", "VERIFIER_WORKERS": "3"}
    result = CliRunner().invoke(cli, ["config"], env=env)
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert any(line.split() == ["VERIFIER_WORKERS", "3"] for line in result.output.splitlines())
    bad = CliRunner().invoke(cli, ["config"], env={"VERIFIER_WORKERS": "x"})
    assert bad.exit_code == 2 and "VERIFIER_WORKERS" in bad.stderr


def test_a_pool_too_small_for_the_threads_is_refused(env: dict[str, str]) -> None:
    """Each thread keeps a connection for verification: with fewer than two per thread, a burst
    of verifications left none for readiness, the admin API or a malformed token's 401."""
    with pytest.raises(ConfigError, match="VERIFIER_REDIS_POOL_SIZE: must be at least twice"):
        load_settings({**env, "VERIFIER_REDIS_POOL_SIZE": "4", "VERIFIER_THREADS": "8"})
    assert load_settings({**env, "VERIFIER_REDIS_POOL_SIZE": "16", "VERIFIER_THREADS": "8"})
