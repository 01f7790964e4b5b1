"""The `verifier` command: serve, and manage sessions and users from the platform's backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import IO, Any

import click

from . import schemas
from .cashier import COMPANY_TOKEN_VARIABLE, as_curl, as_json, cashier_headers
from .config import VARIABLES, Settings, load_settings
from .embedded import EmbeddedValkey
from .errors import ConfigError, StoreUnavailable, ValidationFailed, VerifierError
from .probe import DEFAULT_TIMEOUT_SECONDS, Prober, ProbeUsageError, format_report
from .sessions import SessionManager
from .token_check import Form, check_user_token
from .tokens import is_acceptable_token
from .user_tokens import UserTokenIssuer

GUNICORN_APP = "verifier:create_app()"


class VerifierGroup(click.Group):
    """Turns every named error into one line on stderr and a non-zero exit; no tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise _Failure(f"configuration error: {'; '.join(exc.problems)}", 2) from None
        except ValidationFailed as exc:
            fields = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.fields.items())
            raise _Failure(f"invalid input: {fields}") from None
        except VerifierError as exc:
            raise _Failure(_describe(exc)) from None


class _Failure(click.ClickException):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        click.echo(f"verifier: {self.format_message()}", err=True)


def _describe(exc: VerifierError) -> str:
    doc = (type(exc).__doc__ or type(exc).__name__).strip().rstrip(".")
    return f"{doc[0].lower()}{doc[1:]}: {exc.detail}" if exc.detail else doc


def _settings() -> Settings:
    return load_settings()


def _sessions() -> SessionManager:
    """The session manager on the configured store, or on the running `verifier serve`'s."""
    from .app import build_services

    settings = _settings()
    if settings.redis_url is None:
        socket = settings.embedded_socket
        if not socket.exists():
            raise StoreUnavailable(
                f"no store: VERIFIER_REDIS_URL is unset and no `verifier serve` is running here "
                f"({socket} does not exist)")
        settings = settings.with_overrides(redis_url=f"unix://{socket}")
    return build_services(settings).sessions


PROFILE_OPTIONS = (
    ("--email", "email", "Email address."),
    ("--first-name", "firstName", "First name."),
    ("--last-name", "lastName", "Last name."),
    ("--phone", "phone", "Phone number, e.g. +441234567890."),
    ("--country-code", "countryCode", "ISO 3166-1 alpha-2 country code, e.g. GB."),
    ("--email-verified", "emailVerified", "The verified email address, if any."),
)


def profile_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the profile options; which are required is the profile schema's call, not click's."""
    for flag, key, help_text in reversed(PROFILE_OPTIONS):
        func = click.option(flag, key, default=None, help=help_text)(func)
    return func


def _profile(user_id: str | None, **options: str | None) -> dict[str, str | None]:
    # An empty --email-verified clears it.
    profile = {key: (value or None if key == "emailVerified" else value)
               for key, value in options.items() if value is not None}
    if user_id is not None:
        profile["userId"] = user_id
    return profile


@click.group(cls=VerifierGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="verifier")
def cli() -> None:
    """verifier: the User Auth URL Mozarto calls to verify your platform's users."""


@cli.command()
def serve() -> None:
    """Run the service under gunicorn (with an embedded Valkey when VERIFIER_REDIS_URL is unset)."""
    settings = _settings()
    env = dict(os.environ)
    embedded = None
    if settings.redis_url is None:
        embedded = EmbeddedValkey(settings.embedded_socket)
        env["VERIFIER_REDIS_URL"] = embedded.start()
        click.echo(f"verifier: embedded Valkey on {embedded.url} (data in {embedded.data_dir})",
                   err=True)
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:verifier.gunicorn_conf", GUNICORN_APP],
            env=env)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda n, _f: child.send_signal(n))
        code = child.wait()
    finally:
        if embedded is not None:
            embedded.stop()
    sys.exit(code)


@cli.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def config_command(as_json: bool) -> None:
    """Validate the environment and print the effective configuration, secrets masked."""
    effective = _settings().masked()
    if as_json:
        click.echo(json.dumps(effective, indent=2))
        return
    width = max(len(name) for name in effective)
    for var in VARIABLES:
        value = effective[var.name]
        shown = "(unset)" if value is None else value
        click.echo(f"{var.name:<{width}}  {shown}")


@cli.group()
def session() -> None:
    """Create, register and revoke sessions."""


def _lifetime_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--idle-timeout", "idle", type=int, default=None,
                        help="Idle timeout in seconds (0: none).")(func)
    return click.option("--ttl", type=int, default=None,
                        help="Absolute lifetime in seconds (default 24 h).")(func)


@session.command("create")
@click.option("--user-id", required=True, help="The platform's user id.")
@profile_options
@_lifetime_options
def session_create(user_id: str, ttl: int | None, idle: int | None, **profile: str | None) -> None:
    """Mint a session for a user; prints the token alone on stdout."""
    created = _sessions().create_session(_profile(user_id, **profile), ttl, idle)
    click.echo(created.token)


@session.command("register")
@click.argument("token")
@click.option("--user-id", required=True, help="The platform's user id.")
@profile_options
@_lifetime_options
def session_register(token: str, user_id: str, ttl: int | None, idle: int | None,
                     **profile: str | None) -> None:
    """Register a token the platform issued itself (e.g. its session JWT) for a user."""
    _sessions().register_session(token, _profile(user_id, **profile), ttl, idle)
    click.echo("registered", err=True)


@session.command("revoke")
@click.argument("token")
def session_revoke(token: str) -> None:
    """End one session."""
    found = _sessions().revoke_session(token)
    click.echo("revoked" if found else "no such session (already revoked or expired)", err=True)


@session.command("revoke-user")
@click.argument("user_id")
def session_revoke_user(user_id: str) -> None:
    """End every session of a user; prints how many were live."""
    click.echo(_sessions().revoke_user_sessions(user_id))


@session.command("list")
@click.argument("user_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, as the admin API answers.")
def session_list(user_id: str, as_json: bool) -> None:
    """List a user's live sessions, oldest first (ids and times; never tokens)."""
    user_id = schemas.load_user_id(user_id)
    listed = schemas.SESSION_LIST.dump(
        {"userId": user_id, "sessions": _sessions().list_sessions(user_id)})
    if as_json:
        click.echo(json.dumps(listed))
        return
    columns = {"SESSION ID": "sessionId", "CREATED": "createdAt", "EXPIRES": "expiresAt",
               "LAST VERIFIED": "lastVerifiedAt", "IDLE TIMEOUT": "idleTimeoutSeconds"}
    rows = [[_cell(s[key]) for key in columns.values()] for s in listed["sessions"]]
    click.echo(_table(list(columns), rows))


@cli.group()
def user() -> None:
    """Read and change what verification says about a user."""


@user.command("show")
@click.argument("user_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, as the admin API answers.")
def user_show(user_id: str, as_json: bool) -> None:
    """Show a user's details and flags."""
    shown = schemas.USER.dump(_sessions().get_user(schemas.load_user_id(user_id)))
    if as_json:
        click.echo(json.dumps(shown))
        return
    click.echo(_table(["FIELD", "VALUE"], [[key, _cell(value)] for key, value in shown.items()]))


def _cell(value: Any) -> str:
    if value is None:
        return "never"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=False)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in [headers, *rows])


@user.command("expire-password")
@click.argument("user_id")
@click.option("--clear", is_flag=True, help="The user has changed their password.")
def user_expire_password(user_id: str, clear: bool) -> None:
    """Mark the user's password expired: verification answers 403 password_expired."""
    _sessions().set_password_expired(user_id, not clear)
    click.echo("password expiry cleared" if clear else "password marked expired", err=True)


@user.command("block")
@click.argument("user_id")
@click.option("--clear", is_flag=True, help="Unblock the user.")
def user_block(user_id: str, clear: bool) -> None:
    """Block the user: verification answers 403 user_blocked."""
    _sessions().set_blocked(user_id, not clear)
    click.echo("unblocked" if clear else "blocked", err=True)


@user.command("update")
@click.argument("user_id")
@profile_options
def user_update(user_id: str, **profile: str | None) -> None:
    """Change some of a user's details; seen by the next verification of every session."""
    _sessions().update_profile(user_id, _profile(None, **profile))
    click.echo("updated", err=True)


@cli.group("user-token")
def user_token() -> None:
    """Mint and check x-user-tokens, Mozarto's mode without a callback."""


def _read_value(value: str, what: str) -> str:
    """The value itself, or stdin when it is '-' (less shell history); one final newline dropped."""
    if value != "-":
        return value
    stdin = sys.stdin
    if stdin.isatty():
        raise click.UsageError(f"{what}: '-' reads stdin, which is a terminal; pipe the value in")
    text = stdin.read()
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def _issuer() -> UserTokenIssuer:
    return UserTokenIssuer.from_settings(_settings())


@user_token.command("mint")
@click.option("--user-id", default=None, help="The platform's user id (with the profile options).")
@profile_options
@click.option("--session", "session_token", metavar="TOKEN", default=None,
              help="Take the profile from this live session ('-': read it from stdin).")
@click.option("--from-file", "from_file", type=click.File("r"), default=None,
              help="Take the profile from a JSON file ('-': stdin).")
@click.option("--ttl", type=click.IntRange(min=1), default=None,
              help="Lifetime in seconds (default VERIFIER_USER_TOKEN_TTL_SECONDS).")
@click.option("--json", "as_json", is_flag=True, help="Print the token, its claims and expiry as JSON.")
def user_token_mint(user_id: str | None, session_token: str | None, from_file: IO[str] | None,
                    ttl: int | None, as_json: bool, **profile: str | None) -> None:
    """Sign a user's details with MOZARTO_SECRET_KEY; prints the bare JWT on stdout.

    Send it as `x-user-token: Bearer <jwt>`. The profile comes from exactly one source: the
    profile options (--user-id and the rest), --session or --from-file.
    """
    from_options = user_id is not None or any(v is not None for v in profile.values())
    sources = [name for name, given in (("the profile options", from_options),
                                        ("--session", session_token is not None),
                                        ("--from-file", from_file is not None)) if given]
    if len(sources) != 1:
        raise click.UsageError("give the profile by exactly one of --user-id with the profile "
                               "options, --session or --from-file"
                               + (f" (got {' and '.join(sources)})" if sources else ""))
    issuer = _issuer()  # before any store or file work: a missing key is the likeliest mistake
    if session_token is not None:
        # Looking the session up counts as a verification: minting is a use of the session.
        source: Any = _sessions().verify_session(_read_value(session_token, "--session"))
    elif from_file is not None:
        try:
            source = json.load(from_file)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--from-file") from None
    else:
        source = _profile(user_id, **profile)
    issued = issuer.issue(source, ttl)
    if as_json:
        click.echo(json.dumps(schemas.USER_TOKEN_ISSUED.dump(issued), indent=2))
    else:
        click.echo(issued.token)


@user_token.command("check")
@click.argument("token", required=False, default="-")
@click.option("--form", type=click.Choice([f.value for f in Form]), default=Form.AUTO.value,
              show_default=True,
              help="What TOKEN is: the header value 'Bearer <jwt>', the bare jwt, or either.")
@click.option("--strict", is_flag=True, help="Fail on warnings too.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def user_token_check(token: str, form: str, strict: bool, as_json: bool) -> None:
    """Report everything that would make Mozarto fail on an x-user-token or mis-identify the user.

    TOKEN is the x-user-token header value ('-' or nothing: read stdin). Exit 0 when there are no
    errors (warnings too with --strict), 1 otherwise, 2 on usage errors. The signature is checked
    when MOZARTO_SECRET_KEY is set.
    """
    raw = _read_value(token, "TOKEN")
    report = check_user_token(raw, secret_key=_settings().mozarto_secret_key, form=Form(form))
    ok = report.passed(strict)
    if as_json:
        click.echo(json.dumps({"ok": ok, "errors": len(report.errors),
                               "warnings": len(report.warnings),
                               "findings": [f.as_dict() for f in report.findings],
                               "header": report.header, "payload": report.payload}, indent=2))
    else:
        for finding in report.findings:
            click.echo(f"{finding.severity.value:<8} {finding.code:<22} {finding.message}")
        click.echo(f"{'OK' if ok else 'FAILED'}: {len(report.errors)} errors, "
                   f"{len(report.warnings)} warnings")
    sys.exit(0 if ok else 1)


@cli.command("probe")
@click.argument("url")
@click.option("--token", required=True,
              help="A live session token of a test user ('-': read it from stdin).")
@click.option("--user-id", default=None, help="That user's id, sent as Mozarto sends it.")
@click.option("--timeout", type=click.FloatRange(min=0.1, max=60), default=DEFAULT_TIMEOUT_SECONDS,
              show_default=True, help="Seconds to wait for each answer.")
@click.option("--strict", is_flag=True, help="Fail on warnings too.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def probe_command(url: str, token: str, user_id: str | None, timeout: float, strict: bool,
                  as_json: bool) -> None:
    """Call a User Auth URL the way Mozarto does, then the failure cases, and check every answer.

    Exit 0 when every check passes (warnings allowed unless --strict), 1 otherwise, 2 on usage
    errors. Works against any implementation of the User Auth URL.
    """
    try:
        prober = Prober(url, _read_value(token, "--token"), user_id, timeout_seconds=timeout)
    except ProbeUsageError as exc:
        raise click.UsageError(str(exc)) from None
    report = prober.run()
    if as_json:
        click.echo(json.dumps(report.as_dict(strict), indent=2))
    else:
        click.echo(format_report(report, strict))
    sys.exit(0 if report.passed(strict) else 1)


@cli.command("cashier-headers")
@click.option("--session", "session_token", metavar="TOKEN", default=None,
              help="x-user-authorization mode: the user's session token ('-': stdin).")
@click.option("--user-token", metavar="JWT", default=None,
              help="x-user-token mode: the bare x-user-token JWT ('-': stdin).")
@click.option("--format", "fmt", type=click.Choice(["curl", "json"]), default="curl",
              show_default=True)
@click.option("--reveal", is_flag=True, help="Print the tokens instead of masking them.")
def cashier_headers_command(session_token: str | None, user_token: str | None, fmt: str,
                            reveal: bool) -> None:
    """Print the headers of a Pay-In or Pay-Out call; the company JWT is MOZARTO_COMPANY_TOKEN."""
    if (session_token is None) == (user_token is None):
        raise click.UsageError("give exactly one of --session and --user-token")
    company = _settings().mozarto_company_token
    if not company:
        raise _Failure(f"configuration error: {COMPANY_TOKEN_VARIABLE} is not set: export the "
                       "company JWT from Mozarto's Admin Center (API Credentials)", 2)
    if session_token is not None:
        session_token = _read_value(session_token, "--session")
        if not is_acceptable_token(session_token):
            raise click.BadParameter("not a session token (visible ASCII, no spaces)",
                                     param_hint="--session")
    else:
        user_token = _read_value(user_token or "", "--user-token")
        report = check_user_token(user_token, secret_key=_settings().mozarto_secret_key,
                                  form=Form.JWT)
        for finding in report.errors + report.warnings:
            click.echo(f"verifier: {finding.severity.value}: {finding.code}: {finding.message}",
                       err=True)
        if report.errors:
            raise _Failure("the x-user-token would fail at Mozarto; see `verifier user-token check`")
    headers = cashier_headers(company, session_token=session_token, user_token=user_token)
    click.echo(as_curl(headers, reveal) if fmt == "curl" else as_json(headers, reveal))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="verifier")
