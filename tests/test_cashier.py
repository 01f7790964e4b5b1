"""`verifier cashier-headers`: the headers of a Pay-In or Pay-Out call, secrets masked by default."""

from __future__ import annotations

import json
import shlex

import pytest
from click.testing import CliRunner
from conftest import PROFILE, FakeClock

from verifier.cashier import cashier_headers
from verifier.cli import cli
from verifier.tokens import fingerprint
from verifier.user_tokens import UserTokenIssuer

SECRET = "s3cr3t-key-for-tests-0123456789abcdef"
COMPANY = "eyJhbGciOiJIUzI1NiJ9.eyJjb21wYW55IjoiYWNtZSJ9.company-signature"
SESSION = "vfs_abcd_" + "S" * 43


@pytest.fixture
def user_token(clock: FakeClock) -> str:
    return UserTokenIssuer(SECRET, ttl_seconds=300, skew_seconds=30, clock=clock).issue(PROFILE).token


@pytest.fixture
def run(env: dict[str, str]):
    runner = CliRunner()

    def invoke(*args: str, company: str | None = COMPANY, stdin: str | None = None):
        extra = {"MOZARTO_SECRET_KEY": SECRET}
        if company is not None:
            extra["MOZARTO_COMPANY_TOKEN"] = company
        return runner.invoke(cli, ["cashier-headers", *args], env={**env, **extra}, input=stdin,
                             catch_exceptions=False)
    return invoke


def curl_headers(output: str) -> dict[str, str]:
    words = shlex.split(output.replace("\\\n", " "))
    assert words[::2] == ["-H"] * (len(words) // 2)
    return dict(w.split(": ", 1) for w in words[1::2])


def test_session_mode_revealed_as_curl(run) -> None:
    result = run("--session", SESSION, "--reveal")
    assert result.exit_code == 0, result.output
    assert curl_headers(result.stdout) == {"Authorization": f"Bearer {COMPANY}",
                                           "x-user-authorization": SESSION,
                                           "Content-Type": "application/json"}


def test_user_token_mode_revealed_as_json(run, user_token: str) -> None:
    result = run("--user-token", user_token, "--format", "json", "--reveal")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"Authorization": f"Bearer {COMPANY}",
                                         "x-user-token": f"Bearer {user_token}",
                                         "Content-Type": "application/json"}


def test_secrets_are_masked_unless_revealed(run, user_token: str) -> None:
    for args in (("--session", SESSION), ("--user-token", user_token, "--format", "json")):
        result = run(*args)
        assert result.exit_code == 0, result.output
        for secret in (COMPANY, SESSION, user_token):
            assert secret not in result.output
        assert fingerprint(COMPANY) in result.stdout
    headers = json.loads(run("--user-token", user_token, "--format", "json").stdout)
    assert headers["x-user-token"] == (f"Bearer <masked {len(user_token)} chars, "
                                       f"sha256 {fingerprint(user_token)}>")


def test_tokens_can_come_from_stdin(run, user_token: str) -> None:
    result = run("--user-token", "-", "--reveal", stdin=user_token + "\n")
    assert result.exit_code == 0, result.output
    assert curl_headers(result.stdout)["x-user-token"] == f"Bearer {user_token}"


def test_a_bad_user_token_is_refused_with_the_checks_findings(run, user_token: str) -> None:
    result = run("--user-token", "user_123")
    assert result.exit_code == 1 and result.stdout == ""
    assert "not_a_jwt" in result.stderr
    result = run("--user-token", f"Bearer {user_token}")
    assert result.exit_code == 1 and "bearer_unexpected" in result.stderr


@pytest.mark.parametrize("args", [(), ("--session", SESSION, "--user-token", "x"),
                                  ("--session", "has space"), ("--session", SESSION, "--format", "xml")])
def test_usage_errors_exit_2(run, args: tuple[str, ...]) -> None:
    assert run(*args).exit_code == 2


def test_without_the_company_token_it_says_which_variable(run) -> None:
    result = run("--session", SESSION, company=None)
    assert result.exit_code == 2
    assert "MOZARTO_COMPANY_TOKEN is not set" in result.stderr


def test_exactly_one_mode() -> None:
    with pytest.raises(ValueError):
        cashier_headers(COMPANY)
    with pytest.raises(ValueError):
        cashier_headers(COMPANY, session_token=SESSION, user_token="x")
