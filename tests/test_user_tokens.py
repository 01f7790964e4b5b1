"""Minting x-user-tokens: the claims, the key, the refusals, and `verifier user-token mint`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner
from conftest import PROFILE, ROOT, FakeClock

from verifier.cli import cli
from verifier.config import load_settings
from verifier.errors import BadRequest, ConfigError, UserTokensNotConfigured, ValidationFailed
from verifier.token_check import check_user_token
from verifier.user_tokens import UserTokenIssuer, signature_matches

SECRET = "s3cr3t-key-for-tests-0123456789abcdef"  # 37 bytes
PROFILE_ARGS = ["--user-id", "u-1", "--email", PROFILE["email"], "--first-name", "Ada",
                "--last-name", "Lovelace", "--phone", PROFILE["phone"], "--country-code", "GB",
                "--email-verified", PROFILE["emailVerified"]]


@pytest.fixture
def issuer(clock: FakeClock) -> UserTokenIssuer:
    return UserTokenIssuer(SECRET, ttl_seconds=300, skew_seconds=30, clock=clock)


def test_minted_token_decodes_with_pyjwt_and_the_secret(issuer: UserTokenIssuer,
                                                        clock: FakeClock) -> None:
    issued = issuer.issue(PROFILE)
    claims = jwt.decode(issued.token, SECRET, algorithms=["HS256"])
    now = int(clock.now)
    assert claims == {**PROFILE, "iat": now - 30, "exp": now + 300}
    assert jwt.get_unverified_header(issued.token)["alg"] == "HS256"
    assert issued.claims == claims and issued.expires_at == now + 300
    assert issued.header_value == f"Bearer {issued.token}"


def test_minted_token_passes_check_without_a_single_warning(issuer: UserTokenIssuer,
                                                             clock: FakeClock) -> None:
    issued = issuer.issue(PROFILE)
    for raw in (issued.token, issued.header_value):
        report = check_user_token(raw, secret_key=SECRET, now=clock.now)
        assert report.passed(strict=True), report.findings
        assert report.payload == issued.claims


def test_claims_are_strings_and_emailverified_is_left_out_when_unset(
        issuer: UserTokenIssuer) -> None:
    profile = {k: v for k, v in PROFILE.items() if k != "emailVerified"}
    claims = jwt.decode(issuer.issue({**profile, "userId": 42}).token, SECRET, algorithms=["HS256"])
    assert claims["userId"] == "42"
    assert "emailVerified" not in claims
    assert all(isinstance(claims[k], str) for k in profile)


def test_lifetime_can_be_chosen_per_token(issuer: UserTokenIssuer, clock: FakeClock) -> None:
    assert issuer.issue(PROFILE, ttl_seconds=60).expires_at == int(clock.now) + 60
    with pytest.raises(ValidationFailed) as caught:
        issuer.issue(PROFILE, ttl_seconds=0)
    assert "ttlSeconds" in caught.value.fields


def test_invalid_profile_is_refused_naming_each_field(issuer: UserTokenIssuer) -> None:
    with pytest.raises(ValidationFailed) as caught:
        issuer.issue({**PROFILE, "countryCode": "gb", "email": "nope", "phone": ""})
    assert {"countryCode", "email", "phone"} <= set(caught.value.fields)
    with pytest.raises(ValidationFailed) as caught:
        issuer.issue({"userId": "u-1"})
    assert "firstName" in caught.value.fields
    with pytest.raises(BadRequest):
        issuer.issue(["not", "a", "profile"])


@pytest.mark.parametrize("secret", [None, "", "x" * 31, "é" * 15, b"\x00" * 31])
def test_missing_or_short_secret_is_refused_before_pyjwt_can_warn(secret) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserTokensNotConfigured) as caught:
            UserTokenIssuer(secret, ttl_seconds=300, skew_seconds=30)
    assert "MOZARTO_SECRET_KEY" in str(caught.value)
    with pytest.raises(UserTokensNotConfigured):
        signature_matches("a.b.c", secret)


def test_a_32_byte_secret_signs_without_any_warning(clock: FakeClock) -> None:
    for secret in ("k" * 32, "é" * 16):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            token = UserTokenIssuer(secret, ttl_seconds=300, skew_seconds=0, clock=clock).issue(
                PROFILE).token
            assert signature_matches(token, secret)
            assert not signature_matches(token, secret + "x")


def test_settings_refuse_a_short_secret_without_echoing_it(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**env, "MOZARTO_SECRET_KEY": "tooshort-secret"})
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("MOZARTO_SECRET_KEY=")
    assert "tooshort-secret" not in str(caught.value)
    settings = load_settings({**env, "MOZARTO_SECRET_KEY": SECRET})
    assert settings.user_token_ttl_seconds == 300 and settings.user_token_skew_seconds == 30
    assert settings.masked()["MOZARTO_SECRET_KEY"] == "***"
    assert load_settings(env).mozarto_secret_key is None


def test_issuer_from_settings_uses_the_configured_lifetime_and_skew(env: dict[str, str],
                                                                     clock: FakeClock) -> None:
    settings = load_settings({**env, "MOZARTO_SECRET_KEY": SECRET,
                              "VERIFIER_USER_TOKEN_TTL_SECONDS": "120",
                              "VERIFIER_USER_TOKEN_SKEW_SECONDS": "5"})
    claims = UserTokenIssuer.from_settings(settings, clock).issue(PROFILE).claims
    assert (claims["iat"], claims["exp"]) == (int(clock.now) - 5, int(clock.now) + 120)


def _python_w_error(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MOZARTO_", "VERIFIER_"))}
    return subprocess.run([sys.executable, "-W", "error", "-m", "verifier", *args],
                          env={**clean, **env}, cwd=ROOT, input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_short_secret_under_python_w_error_is_one_clear_line(env: dict[str, str]) -> None:
    result = _python_w_error({**env, "MOZARTO_SECRET_KEY": "short-secret-value"},
                             "user-token", "mint", *PROFILE_ARGS)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "MOZARTO_SECRET_KEY" in result.stderr and "at least 32 bytes" in result.stderr
    assert "short-secret-value" not in result.stderr


def test_mint_under_python_w_error_prints_a_token_that_decodes(env: dict[str, str]) -> None:
    result = _python_w_error({**env, "MOZARTO_SECRET_KEY": SECRET}, "user-token", "mint",
                             *PROFILE_ARGS)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])["userId"] == "u-1"


# `verifier user-token mint`, in process.

@pytest.fixture
def run(env: dict[str, str]):
    runner = CliRunner()

    def invoke(*args: str, secret: str | None = SECRET, stdin: str | None = None):
        extra = {"MOZARTO_SECRET_KEY": secret} if secret is not None else {}
        return runner.invoke(cli, ["user-token", "mint", *args], env={**env, **extra}, input=stdin,
                             catch_exceptions=False)
    return invoke


def test_mint_from_profile_options(run) -> None:
    result = run(*PROFILE_ARGS)
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["email"] == PROFILE["email"]


def test_mint_from_a_file_and_from_stdin(run, tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(PROFILE))
    for result in (run("--from-file", str(path)), run("--from-file", "-", stdin=json.dumps(PROFILE))):
        assert result.exit_code == 0, result.output
        claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
        assert {k: claims[k] for k in PROFILE} == PROFILE


def test_mint_from_a_file_that_is_not_json_is_a_usage_error(run, tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text("{nope")
    result = run("--from-file", str(path))
    assert result.exit_code == 2 and "not JSON" in result.stderr


def test_mint_from_a_live_session(run, sessions) -> None:
    token = sessions.create_session(PROFILE).token
    result = run("--session", token, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["header"] == f"Bearer {out['userToken']}"
    claims = jwt.decode(out["userToken"], SECRET, algorithms=["HS256"])
    assert claims == out["claims"] and claims["userId"] == "u-1"
    assert out["expiresAt"] == datetime.fromtimestamp(claims["exp"], UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z")
    assert token not in result.output
    result = run("--session", "-", stdin=token + "\n")
    assert result.exit_code == 0, result.output


def test_mint_from_a_dead_session_is_refused(run, sessions) -> None:
    token = sessions.create_session(PROFILE).token
    sessions.set_blocked("u-1")
    result = run("--session", token)
    assert result.exit_code == 1 and result.stdout == ""
    assert "blocked" in result.stderr
    result = run("--session", "vfs_0000_" + "A" * 43)
    assert result.exit_code == 1 and "unknown" in result.stderr


@pytest.mark.parametrize("args", [
    (),
    ("--session", "tok", "--user-id", "u-1"),
    ("--from-file", "-", "--email", "a@example.test"),
])
def test_mint_needs_exactly_one_source(run, args: tuple[str, ...]) -> None:
    result = run(*args, stdin="{}")
    assert result.exit_code == 2
    assert "exactly one of" in result.stderr


def test_mint_without_a_secret_is_a_configuration_error(run) -> None:
    result = run(*PROFILE_ARGS, secret=None)
    assert result.exit_code == 2
    assert result.stderr.startswith("verifier: configuration error: MOZARTO_SECRET_KEY is not set")


def test_mint_with_a_bad_profile_names_each_field(run) -> None:
    result = run("--user-id", "u-1", "--country-code", "gb")
    assert result.exit_code == 1 and result.stdout == ""
    assert "countryCode" in result.stderr and "email" in result.stderr
