"""One settings object, filled from one table of environment variables and validated at start."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .topology import Topology, parse_redis_url


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be zero or a positive integer")
    return value


def _redis_url(raw: str) -> str:
    parse_redis_url(raw)
    return raw


def _readable_file(raw: str) -> Path:
    path = Path(raw)
    if not path.is_file():
        raise ValueError("no such file")
    if not os.access(path, os.R_OK):
        raise ValueError("cannot be read by this process")
    return path


def _text(raw: str) -> str:
    return raw


def _bind(raw: str) -> str:
    if raw.startswith("unix:"):
        return raw
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be HOST:PORT (e.g. 0.0.0.0:8000) or unix:PATH")
    return raw


# RFC 7518 3.2: an HS256 key must be at least as long as the hash; PyJWT warns below it.
SECRET_KEY_MIN_BYTES = 32


def _secret_key(raw: str) -> str:
    if len(raw.encode("utf-8")) < SECRET_KEY_MIN_BYTES:
        raise ValueError(f"must be at least {SECRET_KEY_MIN_BYTES} bytes (HS256 needs a 256-bit key); "
                         "copy the Secret key from Mozarto's Admin Center, API Credentials")
    return raw


def _key_prefix(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", raw):
        raise ValueError("must be 1-32 characters of letters, digits, '_', '.' or '-'")
    return raw


ADMIN_KEY_MIN_CHARS = 32


def _admin_keys(raw: str) -> tuple[str, ...]:
    # Never put a key in the message: config errors are logged.
    keys = tuple(key.strip() for key in raw.split(","))
    for number, key in enumerate(keys, 1):
        where = f"key {number} of {len(keys)}"
        if not key:
            raise ValueError(f"{where} is empty (a stray comma?)")
        if not re.fullmatch(r"[\x21-\x7e]+", key):
            raise ValueError(f"{where} has spaces or characters other than visible ASCII")
        if len(key) < ADMIN_KEY_MIN_CHARS:
            raise ValueError(
                f"{where} has {len(key)} characters; each key needs at least {ADMIN_KEY_MIN_CHARS} "
                "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return keys


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
    return level


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CALLER_KEY_MIN_CHARS = 32
# Characters that go into a URL's query unescaped (RFC 3986 unreserved), so a key pastes as is.
_CALLER_KEY = re.compile(r"[A-Za-z0-9._~-]+")


def _networks(raw: str) -> tuple[Network, ...]:
    networks = []
    for item in re.split(r"[\s,]+", raw.strip()):
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IPv4 or IPv6 address or CIDR block ({exc})") from None
    return tuple(networks)


def _caller_keys(raw: str) -> tuple[str, ...]:
    keys = tuple(re.split(r"[\s,]+", raw.strip()))
    for number, key in enumerate(keys, 1):
        if len(key) < CALLER_KEY_MIN_CHARS or not _CALLER_KEY.fullmatch(key):
            raise ValueError(f"key {number} must be at least {CALLER_KEY_MIN_CHARS} characters of "
                             "letters, digits, '-', '.', '_' or '~' (e.g. `openssl rand -hex 32`)")
    return keys


def _flag(raw: str) -> bool:
    value = raw.lower()
    if value not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ValueError("must be true or false")
    return value in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Var:
    """One environment variable: its settings field, coercer and default (None = unset)."""

    name: str
    field: str
    coerce: Callable[[str], Any]
    default: str | None
    help: str
    secret: bool = False


# The one table of everything verifier reads from its environment.
VARIABLES: tuple[Var, ...] = (
    Var("VERIFIER_REDIS_URL", "redis_url", _redis_url, None,
        "Store URL: redis://, rediss://, unix://, redis+sentinel://h1,h2/master[/db], "
        "redis+cluster://h1,h2 (rediss+... for TLS). Unset: `verifier serve` runs an embedded Valkey.",
        secret=True),
    Var("VERIFIER_REDIS_USERNAME", "redis_username", _text, None,
        "ACL user of the store's data nodes, when not given in the URL."),
    Var("VERIFIER_REDIS_PASSWORD", "redis_password", _text, None,
        "Password of the store's data nodes, when not given in the URL.", secret=True),
    Var("VERIFIER_REDIS_SENTINEL_USERNAME", "redis_sentinel_username", _text, None,
        "ACL user of the sentinels themselves (redis+sentinel:// only)."),
    Var("VERIFIER_REDIS_SENTINEL_PASSWORD", "redis_sentinel_password", _text, None,
        "Password of the sentinels themselves (redis+sentinel:// only).", secret=True),
    Var("VERIFIER_REDIS_TLS_CA_FILE", "redis_tls_ca_file", _readable_file, None,
        "PEM file of the CA(s) that signed the store's certificates (rediss... URLs only)."),
    Var("VERIFIER_REDIS_TLS_CERT_FILE", "redis_tls_cert_file", _readable_file, None,
        "PEM client certificate for mutual TLS (with VERIFIER_REDIS_TLS_KEY_FILE)."),
    Var("VERIFIER_REDIS_TLS_KEY_FILE", "redis_tls_key_file", _readable_file, None,
        "PEM private key of the client certificate."),
    Var("VERIFIER_REDIS_WAIT_REPLICAS", "redis_wait_replicas", _non_negative_int, "0",
        "Replicas that must hold a new session before its creation is confirmed (WAIT; 0: off)."),
    Var("VERIFIER_REDIS_WAIT_TIMEOUT_MS", "redis_wait_timeout_ms", _positive_int, "100",
        "How long a creation waits for those replicas before it fails with 503."),
    Var("VERIFIER_REDIS_CONNECT_TIMEOUT_MS", "redis_connect_timeout_ms", _positive_int, "250",
        "How long to wait for a connection to the store."),
    Var("VERIFIER_REDIS_TIMEOUT_MS", "redis_timeout_ms", _positive_int, "250",
        "How long to wait for the store to answer one command."),
    Var("VERIFIER_REDIS_POOL_SIZE", "redis_pool_size", _positive_int, "32",
        "Most connections one worker process opens to the store."),
    Var("VERIFIER_KEY_PREFIX", "key_prefix", _key_prefix, "vf",
        "Prefix of every key verifier writes, so one Redis can serve several deployments."),
    Var("VERIFIER_SESSION_TTL_SECONDS", "session_ttl_seconds", _positive_int, "86400",
        "Default absolute lifetime of a session."),
    Var("VERIFIER_SESSION_MAX_TTL_SECONDS", "session_max_ttl_seconds", _positive_int, "2592000",
        "Longest lifetime a caller may ask for."),
    Var("VERIFIER_SESSION_IDLE_TIMEOUT_SECONDS", "session_idle_timeout_seconds", _non_negative_int, "0",
        "Default idle timeout of a session (0: none)."),
    Var("VERIFIER_EXPIRED_GRACE_SECONDS", "expired_grace_seconds", _non_negative_int, "3600",
        "How long an expired session is kept so that it answers expired_token, not invalid_token."),
    Var("VERIFIER_MAX_BODY_BYTES", "max_body_bytes", _positive_int, "16384",
        "Largest request body accepted (413 above)."),
    Var("VERIFIER_BIND", "bind", _bind, None,
        "Address gunicorn listens on. Default 0.0.0.0:$PORT when PORT is set, else 127.0.0.1:8000."),
    Var("PORT", "port", _positive_int, None, "Port to listen on all interfaces (Procfile platforms)."),
    Var("VERIFIER_WORKERS", "workers", _positive_int, "2", "gunicorn worker processes."),
    Var("VERIFIER_THREADS", "threads", _positive_int, "8", "Threads per gunicorn worker."),
    Var("VERIFIER_DATA_DIR", "data_dir", Path, "var",
        "Where the embedded Valkey keeps its data (append-only file on)."),
    Var("VERIFIER_LOG_LEVEL", "log_level", _log_level, "INFO", "Log level."),
    Var("VERIFIER_LOG_FLUSH_MS", "log_flush_ms", _non_negative_int, "200",
        "Longest a request's log line waits in memory, so that one write carries many (0: each "
        "line at once). Other records are written at once."),
    Var("MOZARTO_SECRET_KEY", "mozarto_secret_key", _secret_key, None,
        "The Secret key from Mozarto's Admin Center (API Credentials): signs and checks x-user-tokens.",
        secret=True),
    Var("MOZARTO_COMPANY_TOKEN", "mozarto_company_token", str, None,
        "The company JWT from Mozarto's Admin Center, for `verifier cashier-headers`.", secret=True),
    Var("VERIFIER_USER_TOKEN_TTL_SECONDS", "user_token_ttl_seconds", _positive_int, "300",
        "Lifetime of a minted x-user-token (its exp)."),
    Var("VERIFIER_USER_TOKEN_SKEW_SECONDS", "user_token_skew_seconds", _non_negative_int, "30",
        "How far a minted x-user-token's iat is backdated, for receivers whose clock is behind."),
    Var("VERIFIER_ADMIN_KEYS", "admin_keys", _admin_keys, None,
        "Comma-separated keys of the admin API, each at least 32 characters; several at once let a "
        "key be rotated with no downtime. Unset: the admin API is off (every /admin/ path is 404).",
        secret=True),
    Var("VERIFIER_LOG_HEALTH_CHECKS", "log_health_checks", _flag, "false",
        "Also log /livez and /readyz requests (left out by default: probes would drown the rest)."),
    Var("VERIFIER_ALLOWED_CALLERS", "allowed_callers", _networks, None,
        "Addresses or CIDR blocks allowed to call the verify endpoint (unset: everyone)."),
    Var("VERIFIER_TRUSTED_PROXIES", "trusted_proxies", _networks, None,
        "Load balancers whose X-Forwarded-For is believed (unset: none; the peer is the caller)."),
    Var("VERIFIER_CALLER_KEYS", "caller_keys", _caller_keys, None,
        "Keys, one of which the verify endpoint's URL must carry as ?key= (unset: no key needed).",
        secret=True),
    Var("VERIFIER_FAILED_VERIFY_LIMIT", "failed_verify_limit", _non_negative_int, "120",
        "Failed (401) verifications one caller address may have per window before 429 (0: no limit)."),
    Var("VERIFIER_FAILED_VERIFY_WINDOW_SECONDS", "failed_verify_window_seconds", _positive_int, "60",
        "The window of VERIFIER_FAILED_VERIFY_LIMIT."),
    Var("VERIFIER_METRICS_ALLOWED", "metrics_allowed", _networks, "127.0.0.1/32,::1/128",
        "Addresses or CIDR blocks that may read /metrics without the admin key."),
)


@dataclass(frozen=True)
class Settings:
    """Validated configuration of one verifier process; the defaults live in VARIABLES."""

    redis_url: str | None
    redis_connect_timeout_ms: int
    redis_timeout_ms: int
    redis_pool_size: int
    redis_username: str | None
    redis_password: str | None
    redis_sentinel_username: str | None
    redis_sentinel_password: str | None
    redis_tls_ca_file: Path | None
    redis_tls_cert_file: Path | None
    redis_tls_key_file: Path | None
    redis_wait_replicas: int
    redis_wait_timeout_ms: int
    key_prefix: str
    session_ttl_seconds: int
    session_max_ttl_seconds: int
    session_idle_timeout_seconds: int
    expired_grace_seconds: int
    max_body_bytes: int
    bind: str | None
    port: int | None
    workers: int
    threads: int
    data_dir: Path
    log_level: str
    log_flush_ms: int
    mozarto_secret_key: str | None
    mozarto_company_token: str | None
    user_token_ttl_seconds: int
    user_token_skew_seconds: int
    admin_keys: tuple[str, ...] | None
    log_health_checks: bool
    allowed_callers: tuple[Network, ...] | None
    trusted_proxies: tuple[Network, ...] | None
    caller_keys: tuple[str, ...] | None
    failed_verify_limit: int
    failed_verify_window_seconds: int
    metrics_allowed: tuple[Network, ...]

    @property
    def listen_address(self) -> str:
        """The address gunicorn binds: VERIFIER_BIND, else all interfaces on PORT, else local 8000."""
        if self.bind:
            return self.bind
        if self.port:
            return f"0.0.0.0:{self.port}"
        return "127.0.0.1:8000"

    @property
    def embedded_socket(self) -> Path:
        """The unix socket of the embedded Valkey that `verifier serve` starts."""
        return (self.data_dir / "valkey" / "valkey.sock").resolve()

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests and the CLI use it)."""
        return dataclasses.replace(self, **changes)

    def masked(self) -> dict[str, Any]:
        """The effective configuration with secrets masked, for the start-up log."""
        out: dict[str, Any] = {}
        for var in VARIABLES:
            value = getattr(self, var.field)
            if isinstance(value, tuple) and var.secret:
                value = f"{len(value)} key{'s' * (len(value) != 1)}, masked"
            elif isinstance(value, tuple):
                value = [str(v) for v in value]
            elif value is not None and var.secret:
                value = _mask(str(value))
            out[var.name] = str(value) if isinstance(value, Path) else value
        return out


def _mask(value: str) -> str:
    parts = urlsplit(value)
    if parts.password:
        return value.replace(f":{parts.password}@", ":***@")
    return value if "://" in value else "***"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every variable; raise ConfigError naming all bad ones at once."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for var in VARIABLES:
        raw = env.get(var.name)
        if raw is None or raw.strip() == "":
            raw = var.default
        if raw is None:
            values[var.field] = None
            continue
        try:
            values[var.field] = var.coerce(raw.strip())
        except ValueError as exc:
            reason = str(exc) if not str(exc).startswith("invalid literal") else "must be an integer"
            # A secret's value never reaches the screen, not even a wrong one.
            shown = _mask(raw.strip()) if var.secret else raw
            problems.append(f"{var.name}={shown!r}: {reason}")
    if not problems:
        _check_consistency(values, problems)
    if problems:
        raise ConfigError(problems)
    return Settings(**values)


def _check_consistency(values: dict[str, Any], problems: list[str]) -> None:
    if values["session_ttl_seconds"] > values["session_max_ttl_seconds"]:
        problems.append(
            "VERIFIER_SESSION_TTL_SECONDS: must not exceed VERIFIER_SESSION_MAX_TTL_SECONDS "
            f"({values['session_max_ttl_seconds']})"
        )
    if values["redis_timeout_ms"] >= 1000 or values["redis_connect_timeout_ms"] >= 1000:
        problems.append(
            "VERIFIER_REDIS_TIMEOUT_MS / VERIFIER_REDIS_CONNECT_TIMEOUT_MS: must be under 1000, "
            "so that every answer, including 'the store is down', reaches Mozarto within a second"
        )
    if values["redis_pool_size"] < 2 * values["threads"]:
        problems.append(
            f"VERIFIER_REDIS_POOL_SIZE: must be at least twice VERIFIER_THREADS "
            f"({2 * values['threads']}): each thread keeps a connection for verification and may "
            "need a second one at the same moment for anything else")
    _check_store(values, problems)


def _check_store(values: dict[str, Any], problems: list[str]) -> None:
    url = values["redis_url"]
    target = parse_redis_url(url) if url else None
    tls_files = [name for name, field in (("VERIFIER_REDIS_TLS_CA_FILE", "redis_tls_ca_file"),
                                          ("VERIFIER_REDIS_TLS_CERT_FILE", "redis_tls_cert_file"),
                                          ("VERIFIER_REDIS_TLS_KEY_FILE", "redis_tls_key_file"))
                 if values[field] is not None]
    if tls_files and not (target and target.tls):
        problems.append(f"{', '.join(tls_files)}: set, but VERIFIER_REDIS_URL is not a rediss... URL")
    if (values["redis_tls_cert_file"] is None) != (values["redis_tls_key_file"] is None):
        problems.append("VERIFIER_REDIS_TLS_CERT_FILE / VERIFIER_REDIS_TLS_KEY_FILE: "
                        "give both (mutual TLS) or neither")
    for field, name in (("username", "VERIFIER_REDIS_USERNAME"),
                        ("password", "VERIFIER_REDIS_PASSWORD")):
        if values[f"redis_{field}"] is not None and target and getattr(target, field) is not None:
            problems.append(f"{name}: the URL has a {field} too; give it in one place only")
    sentinel_auth = [name for name in ("VERIFIER_REDIS_SENTINEL_USERNAME",
                                       "VERIFIER_REDIS_SENTINEL_PASSWORD")
                     if values[name.removeprefix("VERIFIER_").lower()] is not None]
    if sentinel_auth and not (target and target.topology is Topology.SENTINEL):
        problems.append(f"{', '.join(sentinel_auth)}: set, but VERIFIER_REDIS_URL is not "
                        "a redis+sentinel:// URL")
    if values["redis_wait_replicas"] > 0:
        if target is None:
            problems.append("VERIFIER_REDIS_WAIT_REPLICAS: needs VERIFIER_REDIS_URL "
                            "(the embedded Valkey has no replicas)")
        if values["redis_wait_timeout_ms"] >= values["redis_timeout_ms"]:
            problems.append("VERIFIER_REDIS_WAIT_TIMEOUT_MS: must be under VERIFIER_REDIS_TIMEOUT_MS "
                            f"({values['redis_timeout_ms']}), or the client gives up before WAIT answers")
