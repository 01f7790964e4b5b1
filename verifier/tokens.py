"""Session tokens: minting, hashing, routing tags, the Authorization header; JWTs are user_tokens'."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

from .errors import TokenInvalid, TokenMissing

MINTED_PREFIX = "vfs_"
SECRET_BYTES = 32  # 256 bits from `secrets`
TOKEN_MAX_CHARS = 4096
REGISTERED_MIN_CHARS = 32
_MINTED = re.compile(r"vfs_([0-9a-f]{4})_[A-Za-z0-9_-]{43}")
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
_WHITESPACE = re.compile(r"[ \t]+")


def routing_tag(user_id: str) -> str:
    """The 4-hex tag that places a user's record and all their sessions in one Redis Cluster slot."""
    return hashlib.sha256(user_id.encode()).hexdigest()[:4]


def mint_token(user_id: str) -> str:
    """A new session token: a visible prefix, the user's routing tag and 256 random bits."""
    return f"{MINTED_PREFIX}{routing_tag(user_id)}_{secrets.token_urlsafe(SECRET_BYTES)}"


def minted_tag(token: str) -> str | None:
    """The routing tag of a token verifier minted, or None for any other token."""
    match = _MINTED.fullmatch(token)
    return match.group(1) if match else None


def token_hash(token: str) -> str:
    """What the store keeps instead of the token: 128 bits of its SHA-256, base64url."""
    digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def fingerprint(token: str) -> str:
    """A short hash of a token, safe to log."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def is_acceptable_token(token: str) -> bool:
    """True for a token that could be a session token: visible ASCII, bounded length."""
    return len(token) <= TOKEN_MAX_CHARS and _VISIBLE_ASCII.fullmatch(token) is not None


def check_registrable(token: str) -> str | None:
    """Why a platform's own token cannot be registered, or None when it can."""
    if not is_acceptable_token(token):
        return f"Must be 1-{TOKEN_MAX_CHARS} visible ASCII characters with no spaces."
    if len(token) < REGISTERED_MIN_CHARS:
        return f"Must be at least {REGISTERED_MIN_CHARS} characters, so that it cannot be guessed."
    if token.startswith(MINTED_PREFIX):
        return f"Tokens starting with {MINTED_PREFIX!r} are minted by verifier and cannot be registered."
    return None


def token_from_authorization(header: str | None) -> str:
    """The token in `Authorization: Bearer <T>` (any case, any spaces or tabs) or a bare `<T>`."""
    if header is None:
        raise TokenMissing()
    parts = _WHITESPACE.split(header.strip(" \t"))
    if parts == [""] or (len(parts) == 1 and parts[0].lower() == "bearer"):
        raise TokenMissing()
    if len(parts) == 1:
        token = parts[0]
    elif len(parts) == 2 and parts[0].lower() == "bearer":
        token = parts[1]
    else:
        raise TokenInvalid("the Authorization header is not 'Bearer <token>'")
    if not is_acceptable_token(token):
        raise TokenInvalid("the token has characters or a length no session token has")
    return token
