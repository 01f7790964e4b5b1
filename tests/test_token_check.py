"""`user-token check`: every defect Mozarto would trip on, each with a hand-made bad token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import PROFILE

from verifier.cli import cli
from verifier.token_check import CheckReport, Form, Severity, check_user_token

SECRET = "s3cr3t-key-for-tests-0123456789abcdef"
NOW = 1_800_000_000
HS256 = {"alg": "HS256", "typ": "JWT"}
CLAIMS = {**PROFILE, "iat": NOW - 30, "exp": NOW + 300}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def part(value: Any) -> str:
    return b64(value if isinstance(value, bytes) else json.dumps(value).encode())


def make(payload: Any = None, header: Any = None, key: str = SECRET,
         signature: str | None = None) -> str:
    """A JWT built by hand (no PyJWT), so that any part can be wrong."""
    signing_input = f"{part(HS256 if header is None else header)}." \
                    f"{part(CLAIMS if payload is None else payload)}"
    if signature is None:
        signature = b64(hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest())
    return f"{signing_input}.{signature}"


def check(raw: str, form: Form = Form.AUTO, secret: str | None = SECRET) -> CheckReport:
    return check_user_token(raw, secret_key=secret, form=form, now=NOW)


def codes(report: CheckReport, severity: Severity) -> set[str]:
    return {f.code for f in report.findings if f.severity is severity}


GOOD = make()
WITHOUT = {k: v for k, v in CLAIMS.items() if k != "exp"}


def test_a_hand_made_good_token_is_clean_in_both_forms() -> None:
    for raw in (GOOD, f"Bearer {GOOD}"):
        report = check(raw)
        assert report.passed(strict=True), report.findings
        assert report.payload == CLAIMS and report.header == HS256


# (what is wrong, the input, its form, the one error expected).
ERRORS = [
    ("plain string: Mozarto's 504", "user_123", Form.AUTO, "not_a_jwt"),
    ("two parts", "abc.def", Form.AUTO, "not_a_jwt"),
    ("five parts (JWE)", "a.b.c.d.e", Form.AUTO, "not_a_jwt"),
    ("not base64url", GOOD.replace(".", ".!", 1), Form.AUTO, "not_a_jwt"),
    ("padding", make().split(".")[0] + "==." + GOOD.split(".", 1)[1], Form.AUTO, "not_a_jwt"),
    ("a space inside", GOOD[:20] + " " + GOOD[20:], Form.AUTO, "not_a_jwt"),
    ("Bearer and nothing", "Bearer", Form.AUTO, "not_a_jwt"),
    ("empty", "", Form.AUTO, "empty"),
    ("header not JSON", f"{b64(b'nope')}.{part(CLAIMS)}.sig", Form.AUTO, "malformed_header"),
    ("header not an object", make(header=["HS256"]), Form.AUTO, "malformed_header"),
    ("payload not JSON", f"{part(HS256)}.{b64(b'{nope')}.sig", Form.AUTO, "malformed_payload"),
    ("payload not UTF-8", f"{part(HS256)}.{b64(bytes([0xff, 0xfe]))}.sig", Form.AUTO,
     "malformed_payload"),
    ("payload a string", make(payload="user_123"), Form.AUTO, "payload_not_object"),
    ("empty payload", make(payload={}), Form.AUTO, "empty_payload"),
    ("alg none", make(header={"alg": "none", "typ": "JWT"}, signature=""), Form.AUTO, "alg_none"),
    ("alg None", make(header={"alg": "None"}, signature=""), Form.AUTO, "alg_none"),
    ("alg null", make(header={"alg": None}), Form.AUTO, "alg_none"),
    ("alg missing", make(header={"typ": "JWT"}), Form.AUTO, "alg_missing"),
    ("alg HS512", make(header={"alg": "HS512", "typ": "JWT"}), Form.AUTO, "alg_not_hs256"),
    ("alg RS256", make(header={"alg": "RS256", "typ": "JWT"}), Form.AUTO, "alg_not_hs256"),
    ("signature cut off", make(signature=""), Form.AUTO, "signature_missing"),
    ("another key", make(key="another-secret-key-0123456789abcdef"), Form.AUTO,
     "signature_mismatch"),
    ("payload edited after signing",
     f"{part(HS256)}.{part({**CLAIMS, 'userId': 'u-2'})}.{GOOD.rsplit('.', 1)[1]}", Form.AUTO,
     "signature_mismatch"),
    ("expired", make({**CLAIMS, "exp": NOW - 1}), Form.AUTO, "expired"),
    ("expired exactly now", make({**CLAIMS, "exp": NOW}), Form.AUTO, "expired"),
    ("iat in the future", make({**CLAIMS, "iat": NOW + 60}), Form.AUTO, "iat_in_future"),
    ("nbf in the future", make({**CLAIMS, "nbf": NOW + 60}), Form.AUTO, "not_yet_valid"),
    ("exp a string", make({**CLAIMS, "exp": str(NOW + 300)}), Form.AUTO, "malformed_claim"),
    ("iat a boolean", make({**CLAIMS, "iat": True}), Form.AUTO, "malformed_claim"),
    ("nbf null", make({**CLAIMS, "nbf": None}), Form.AUTO, "malformed_claim"),
    ("iat an object", make({**CLAIMS, "iat": {"t": 1}}), Form.AUTO, "malformed_claim"),
    ("countryCode lower case", make({**CLAIMS, "countryCode": "gb"}), Form.AUTO,
     "invalid_country_code"),
    ("countryCode UK", make({**CLAIMS, "countryCode": "UK"}), Form.AUTO, "invalid_country_code"),
    ("countryCode alpha-3", make({**CLAIMS, "countryCode": "GBR"}), Form.AUTO,
     "invalid_country_code"),
    ("countryCode a name", make({**CLAIMS, "countryCode": "Germany"}), Form.AUTO,
     "invalid_country_code"),
    ("Bearer in a bare token", f"Bearer {GOOD}", Form.JWT, "bearer_unexpected"),
    ("Bearer twice", f"Bearer Bearer {GOOD}", Form.AUTO, "bearer_repeated"),
    ("Bearer twice in a header value", f"Bearer Bearer {GOOD}", Form.HEADER, "bearer_repeated"),
    ("Bearer:", f"Bearer: {GOOD}", Form.AUTO, "bearer_colon"),
    ("header name pasted too", f"x-user-token: Bearer {GOOD}", Form.AUTO, "header_name_included"),
    ("a line break", f"Bearer {GOOD}\n", Form.AUTO, "line_break"),
    # JSON null decodes to None: it must not pass for "nothing to report".
    ("payload null", f"{part(HS256)}.{b64(b'null')}.sig", Form.AUTO, "payload_not_object"),
    ("header null", f"{b64(b'null')}.{part(CLAIMS)}.sig", Form.AUTO, "malformed_header"),
    ("exp beyond any float", make({**CLAIMS, "exp": 10**400}), Form.AUTO, "malformed_claim"),
    ("iat beyond any float", make({**CLAIMS, "iat": -10**400}), Form.AUTO, "malformed_claim"),
    ("nbf beyond any float", make({**CLAIMS, "nbf": 10**400}), Form.AUTO, "malformed_claim"),
    # Receivers differ on which of two same-named members wins; the checker must not pick one.
    ("userId twice", make(b'{"userId": 7, ' + json.dumps(CLAIMS).encode()[1:]), Form.AUTO,
     "duplicate_key"),
    ("alg twice", make(header=b'{"alg": "none", "alg": "HS256"}'), Form.AUTO, "duplicate_key"),
]


@pytest.mark.parametrize(("raw", "form", "code"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_each_defect_is_exactly_one_error(raw: str, form: Form, code: str) -> None:
    report = check(raw, form)
    assert codes(report, Severity.ERROR) == {code}, report.findings
    assert not report.passed()
    finding = next(f for f in report.findings if f.code == code)
    assert finding.message


@pytest.mark.parametrize("field", ["userId", "email", "firstName", "lastName", "phone", "countryCode"])
def test_each_missing_required_field_is_an_error(field: str) -> None:
    report = check(make({k: v for k, v in CLAIMS.items() if k != field}))
    assert codes(report, Severity.ERROR) == {"missing_field"}
    assert [f.message.split(":")[0] for f in report.errors] == [field]


def test_emailverified_is_optional() -> None:
    assert check(make({k: v for k, v in CLAIMS.items() if k != "emailVerified"})).passed(strict=True)


@pytest.mark.parametrize("value", ["", "   "])
@pytest.mark.parametrize("field", ["userId", "email", "firstName", "emailVerified", "countryCode"])
def test_empty_fields_are_errors(field: str, value: str) -> None:
    report = check(make({**CLAIMS, field: value}))
    assert codes(report, Severity.ERROR) == {"empty_field"}
    assert report.errors[0].message.startswith(f"{field}:")


@pytest.mark.parametrize(("field", "value"), [
    ("userId", 123), ("emailVerified", True), ("phone", 441234567890), ("countryCode", None),
    ("firstName", ["Ada"]), ("lastName", {"name": "Lovelace"}),
])
def test_non_string_values_are_errors(field: str, value: Any) -> None:
    report = check(make({**CLAIMS, field: value}))
    assert codes(report, Severity.ERROR) == {"not_a_string"}
    assert report.errors[0].message.startswith(f"{field}: must be a string")


def test_only_the_payload_defects_are_reported_on_a_token_with_many() -> None:
    payload = {"userId": 7, "email": "", "countryCode": "gb", "exp": "soon"}
    report = check(make(payload))
    assert codes(report, Severity.ERROR) == {"not_a_string", "empty_field", "missing_field",
                                             "invalid_country_code", "malformed_claim"}
    missing = sorted(f.message.split(":")[0] for f in report.errors if f.code == "missing_field")
    assert missing == ["firstName", "lastName", "phone"]


def test_country_code_hint_suggests_the_upper_case_code() -> None:
    report = check(make({**CLAIMS, "countryCode": "de"}))
    assert "did you mean 'DE'" in report.errors[0].message


# (what, input, form, the warning expected); none of these is an error.
WARNINGS = [
    ("no Bearer where the examples put it", GOOD, Form.HEADER, "bearer_missing"),
    ("bearer in lower case", f"bearer {GOOD}", Form.AUTO, "bearer_spelling"),
    ("a tab after Bearer", f"Bearer\t{GOOD}", Form.AUTO, "bearer_spacing"),
    ("two spaces after Bearer", f"Bearer  {GOOD}", Form.AUTO, "bearer_spacing"),
    ("trailing spaces", f"{GOOD}  ", Form.AUTO, "surrounding_whitespace"),
    ("no exp", make(WITHOUT), Form.AUTO, "exp_missing"),
    ("exp in a year", make({**CLAIMS, "exp": NOW + 365 * 86400}), Form.AUTO, "long_lived"),
    ("an email that is not one", make({**CLAIMS, "email": "ada-at-example"}), Form.AUTO,
     "invalid_field"),
    ("a phone that is not one", make({**CLAIMS, "phone": "12"}), Form.AUTO, "invalid_field"),
    ("typ not JWT", make(header={"alg": "HS256", "typ": "JWE"}), Form.AUTO, "unusual_typ"),
]


@pytest.mark.parametrize(("raw", "form", "code"), [w[1:] for w in WARNINGS],
                         ids=[w[0] for w in WARNINGS])
def test_each_risk_is_a_warning_not_an_error(raw: str, form: Form, code: str) -> None:
    report = check(raw, form)
    assert not report.errors, report.findings
    assert codes(report, Severity.WARNING) == {code}
    assert report.passed() and not report.passed(strict=True)


def test_what_is_only_worth_knowing_is_info() -> None:
    report = check(make({**CLAIMS, "role": "vip"}), secret=None)
    assert codes(report, Severity.INFO) == {"read_as_jwt", "extra_claims", "signature_not_checked"}
    assert report.passed(strict=True)
    assert "read_as_header" in codes(check(f"Bearer {GOOD}"), Severity.INFO)


def test_the_clock_is_the_callers() -> None:
    token = make({**CLAIMS, "exp": int(time.time()) + 60, "iat": int(time.time()) - 1})
    assert check_user_token(token, secret_key=SECRET).passed(strict=True)


# `verifier user-token check`.

@pytest.fixture
def run(env: dict[str, str]):
    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None, secret: str | None = SECRET):
        extra = {"MOZARTO_SECRET_KEY": secret} if secret is not None else {}
        return runner.invoke(cli, ["user-token", "check", *args], env={**env, **extra}, input=stdin,
                             catch_exceptions=False)
    return invoke


def fresh() -> str:
    now = int(time.time())
    return make({**CLAIMS, "iat": now - 30, "exp": now + 300})


def test_cli_clean_token_exits_0(run) -> None:
    result = run(fresh())
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "OK: 0 errors, 0 warnings"


def test_cli_findings_exit_1_one_a_line_with_severity_and_code(run) -> None:
    result = run("user_123")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[-1] == "FAILED: 1 errors, 0 warnings"
    assert any(line.split()[:2] == ["error", "not_a_jwt"] and "504" in line for line in lines)


def test_cli_reads_stdin_and_drops_the_final_newline(run) -> None:
    for args in ((), ("-",)):
        result = run(*args, stdin=f"Bearer {fresh()}\n")
        assert result.exit_code == 0, result.output
    assert run("-", stdin=f"Bearer {fresh()}\n\n").exit_code == 1


def test_cli_warnings_pass_unless_strict(run) -> None:
    token = fresh()
    assert run("--form", "header", token).exit_code == 0
    assert run("--form", "header", "--strict", token).exit_code == 1


def test_cli_json_for_machines(run) -> None:
    token = make({**CLAIMS, "iat": int(time.time()) - 30, "exp": 1})
    result = run("--json", token)
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["ok"] is False and out["errors"] == 1
    assert {"severity": "error", "code": "expired"}.items() <= out["findings"][-1].items()
    assert out["payload"]["userId"] == "u-1" and out["header"] == HS256


def test_cli_checks_the_signature_only_with_a_secret(run) -> None:
    now = int(time.time())
    forged = make({**CLAIMS, "iat": now - 30, "exp": now + 300},
                  key="another-secret-key-0123456789abcdef")
    result = run(forged)
    assert result.exit_code == 1 and "signature_mismatch" in result.stdout
    result = run(forged, secret=None)
    assert result.exit_code == 0 and "signature_not_checked" in result.stdout


@pytest.mark.parametrize("args", [("--form", "bogus", "x"), ("a", "b"), ("--nope",)])
def test_cli_usage_errors_exit_2(run, args: tuple[str, ...]) -> None:
    assert run(*args).exit_code == 2


def test_cli_short_secret_is_a_configuration_error(run) -> None:
    result = run(fresh(), secret="short")
    assert result.exit_code == 2 and "MOZARTO_SECRET_KEY" in result.stderr


def test_cli_never_prints_the_signature(run) -> None:
    token = fresh()
    for args in ((token,), ("--json", token)):
        result = run(*args)
        assert token.rsplit(".", 1)[1] not in result.output
