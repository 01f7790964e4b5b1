"""The `verifier` command: tokens alone on stdout, one clear line on stderr for errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import PROFILE, free_port

from verifier.cli import cli

PROFILE_ARGS = ["--user-id", "u-1", "--email", PROFILE["email"], "--first-name", "Ada",
                "--last-name", "Lovelace", "--phone", PROFILE["phone"], "--country-code", "GB",
                "--email-verified", PROFILE["emailVerified"]]


@pytest.fixture
def run(env: dict[str, str]):
    runner = CliRunner()

    def invoke(*args: str, extra_env: dict[str, str] | None = None):
        return runner.invoke(cli, list(args), env={**env, **(extra_env or {})}, catch_exceptions=False)
    return invoke


def test_session_create_prints_the_token_alone_and_it_verifies(run, env, sessions) -> None:
    result = run("session", "create", *PROFILE_ARGS, "--ttl", "600")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert result.stdout == token + "\n" and token.startswith("vfs_")
    assert sessions.verify_session(token) == PROFILE


def test_a_user_id_the_admin_urls_cannot_name_is_refused(run, sessions) -> None:
    args = [a if a != "u-1" else "a/b" for a in PROFILE_ARGS]
    result = run("session", "create", *args)
    assert result.exit_code == 1 and result.stdout == ""
    assert "userId" in result.stderr
    assert sessions.list_sessions("a/b") == []


def test_bad_profile_is_one_line_naming_each_field(run) -> None:
    result = run("session", "create", "--user-id", "u-1", "--email", "nope", "--country-code", "gb")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    for field in ("email", "countryCode", "firstName", "lastName", "phone"):
        assert field in lines[0]
    assert "Traceback" not in result.stderr


def test_register_revoke_and_revoke_user(run, sessions) -> None:
    jwt_like = "eyJhbGciOiJIUzI1NiJ9." + "p" * 40
    assert run("session", "register", jwt_like, *PROFILE_ARGS).exit_code == 0
    assert sessions.verify_session(jwt_like)["userId"] == "u-1"
    assert run("session", "register", jwt_like, *PROFILE_ARGS).exit_code == 1
    assert run("session", "revoke", jwt_like).exit_code == 0
    token = run("session", "create", *PROFILE_ARGS).stdout.strip()
    run("session", "create", *PROFILE_ARGS)
    result = run("session", "revoke-user", "u-1")
    assert result.exit_code == 0 and result.stdout.strip() == "2"
    with pytest.raises(Exception):
        sessions.verify_session(token)


def test_user_flags_and_update(run, sessions) -> None:
    token = run("session", "create", *PROFILE_ARGS).stdout.strip()
    assert run("user", "block", "u-1").exit_code == 0
    assert sessions.get_user("u-1").blocked
    assert run("user", "block", "u-1", "--clear").exit_code == 0
    assert run("user", "expire-password", "u-1").exit_code == 0
    assert sessions.get_user("u-1").password_expired
    assert run("user", "expire-password", "u-1", "--clear").exit_code == 0
    result = run("user", "update", "u-1", "--last-name", "Byron", "--email-verified", "")
    assert result.exit_code == 0, result.output
    profile = sessions.verify_session(token)
    assert profile["lastName"] == "Byron" and "emailVerified" not in profile


def test_unknown_user_is_an_error_line(run) -> None:
    result = run("user", "block", "ghost")
    assert result.exit_code == 1
    assert result.stderr.startswith("verifier: ") and "user" in result.stderr.lower()


def test_store_down_is_an_error_line_not_a_traceback(run) -> None:
    result = run("session", "revoke-user", "u-1",
                 extra_env={"VERIFIER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "store" in result.stderr


def test_bad_configuration_exits_2(run) -> None:
    result = run("session", "revoke-user", "u-1", extra_env={"VERIFIER_REDIS_TIMEOUT_MS": "x"})
    assert result.exit_code == 2 and "VERIFIER_REDIS_TIMEOUT_MS" in result.stderr


def test_no_store_and_no_serve_says_so(run, tmp_path) -> None:
    result = run("session", "revoke-user", "u-1",
                 extra_env={"VERIFIER_REDIS_URL": "", "VERIFIER_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1 and "verifier serve" in result.stderr


def test_session_list_is_a_table_and_json_as_the_admin_api_answers(run, sessions) -> None:
    assert run("session", "list", "u-1").stdout.splitlines() == [
        "SESSION ID  CREATED  EXPIRES  LAST VERIFIED  IDLE TIMEOUT"]
    token = run("session", "create", *PROFILE_ARGS, "--idle-timeout", "300").stdout.strip()
    run("session", "create", *PROFILE_ARGS)
    sessions.verify_session(token)
    result = run("session", "list", "u-1")
    assert result.exit_code == 0, result.output
    header, first, second = result.stdout.splitlines()
    assert header.split("  ")[0] == "SESSION ID" and "LAST VERIFIED" in header
    assert first.split()[-1] == "300" and second.split()[-2:] == ["never", "0"]
    assert token not in result.stdout
    listed = json.loads(run("session", "list", "u-1", "--json").stdout)
    assert listed["userId"] == "u-1" and [s["idleTimeoutSeconds"] for s in listed["sessions"]] == [300, 0]
    assert listed["sessions"][0]["lastVerifiedAt"].endswith("Z")
    assert listed["sessions"][1]["lastVerifiedAt"] is None
    assert first.split()[0] == listed["sessions"][0]["sessionId"]


def test_user_show_is_a_table_and_json(run) -> None:
    run("session", "create", *PROFILE_ARGS)
    run("user", "block", "u-1")
    result = run("user", "show", "u-1")
    assert result.exit_code == 0, result.output
    rows = dict(line.split(None, 1) for line in result.stdout.splitlines()[1:])
    assert rows["email"] == PROFILE["email"] and rows["blocked"] == "yes"
    assert rows["passwordExpired"] == "no"
    shown = json.loads(run("user", "show", "u-1", "--json").stdout)
    assert shown == {**PROFILE, "blocked": True, "passwordExpired": False}


def test_user_show_and_session_list_refuse_what_cannot_be_a_user(run) -> None:
    assert run("user", "show", "ghost").exit_code == 1
    result = run("session", "list", "u" * 200)
    assert result.exit_code == 1 and "userId" in result.stderr


def test_revoke_user_with_an_empty_id_is_an_error(run) -> None:
    result = run("session", "revoke-user", "")
    assert result.exit_code == 1 and "userId" in result.stderr
