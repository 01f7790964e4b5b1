"""x-user-token JWTs: minting them with the merchant's Secret key; the only module that speaks PyJWT."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from . import schemas
from .config import SECRET_KEY_MIN_BYTES, Settings
from .errors import UserTokensNotConfigured, ValidationFailed

# Every example on Mozarto's pages signs with HS256, and the Secret key is a shared secret.
ALGORITHM = "HS256"
SECRET_KEY_VARIABLE = "MOZARTO_SECRET_KEY"  # noqa: S105 (a variable name)


def secret_key_bytes(secret_key: str | bytes | None) -> bytes:
    """The key as bytes; UserTokensNotConfigured when it is missing or too short for HS256.

    Checked here, before PyJWT sees the key: PyJWT >= 2.10 only warns (InsecureKeyLengthWarning)
    about a short HMAC key and signs anyway, and under `-W error` that warning is a traceback.
    """
    if secret_key is None or secret_key == "" or secret_key == b"":
        raise UserTokensNotConfigured(
            f"{SECRET_KEY_VARIABLE} is not set: export the Secret key from Mozarto's Admin Center "
            "(API Credentials) in the environment")
    key = secret_key.encode("utf-8") if isinstance(secret_key, str) else secret_key
    if len(key) < SECRET_KEY_MIN_BYTES:
        raise UserTokensNotConfigured(
            f"{SECRET_KEY_VARIABLE} is {len(key)} bytes long; it must be at least "
            f"{SECRET_KEY_MIN_BYTES} bytes (HS256 needs a 256-bit key)")
    return key


@dataclass(frozen=True)
class IssuedUserToken:
    """A minted x-user-token and the claims it carries."""

    token: str
    claims: dict[str, Any]

    @property
    def expires_at(self) -> int:
        """exp, in seconds since the epoch."""
        return int(self.claims["exp"])

    @property
    def header_value(self) -> str:
        """The value of the x-user-token header, as Mozarto's examples send it."""
        return f"Bearer {self.token}"


class UserTokenIssuer:
    """Mints x-user-tokens: the profile's fields as string claims, iat backdated, a short exp."""

    def __init__(self, secret_key: str | bytes | None, *, ttl_seconds: int, skew_seconds: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._key = secret_key_bytes(secret_key)
        if ttl_seconds <= 0 or skew_seconds < 0:
            raise ValueError("ttl_seconds must be positive and skew_seconds not negative")
        self.ttl_seconds = ttl_seconds
        self.skew_seconds = skew_seconds
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings,
                      clock: Callable[[], float] | None = None) -> UserTokenIssuer:
        """An issuer with the configured key, lifetime and skew."""
        return cls(settings.mozarto_secret_key, ttl_seconds=settings.user_token_ttl_seconds,
                   skew_seconds=settings.user_token_skew_seconds,
                   **({"clock": clock} if clock else {}))

    def issue(self, profile: Any, ttl_seconds: int | None = None) -> IssuedUserToken:
        """Validate the profile and sign it; ValidationFailed or BadRequest when it is not valid."""
        valid = schemas.load_profile(profile)
        ttl = self.ttl_seconds if ttl_seconds is None else ttl_seconds
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            raise ValidationFailed({"ttlSeconds": ["Must be a positive integer."]})
        now = math.floor(self.clock())
        claims: dict[str, Any] = {key: str(valid[key]) for key in schemas.PROFILE_FIELDS
                                  if valid.get(key) is not None}
        # iat backdated: a receiver whose clock is a little behind ours must not see it as future.
        claims["iat"] = now - self.skew_seconds
        claims["exp"] = now + ttl
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM)
        return IssuedUserToken(token, claims)


def signature_matches(token: str, secret_key: str | bytes) -> bool:
    """True when the token's HS256 signature is the Secret key's; claims are not looked at."""
    key = secret_key_bytes(secret_key)
    try:
        jwt.PyJWS().decode(token, key, algorithms=[ALGORITHM])
    except jwt.InvalidSignatureError:
        return False
    except jwt.PyJWTError:
        # Not an HS256 JWS at all: its signature cannot match.
        return False
    return True
