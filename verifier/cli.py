"""The `verifier` command: serve, and manage sessions and users from the platform's backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import click

from .config import Settings, load_settings
from .embedded import EmbeddedValkey
from .errors import ConfigError, StoreUnavailable, ValidationFailed, VerifierError
from .sessions import SessionManager

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


@cli.group()
def user() -> None:
    """Change what verification says about a user."""


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


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="verifier")
