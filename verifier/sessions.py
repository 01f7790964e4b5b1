"""The session manager: decides what a token means; the store only keeps bytes."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import schemas, tokens
from .errors import (
    BadRequest,
    PasswordExpired,
    TokenExpired,
    TokenInvalid,
    UserBlocked,
    UserMismatch,
    UserNotFound,
    ValidationFailed,
)
from .store import NewSession, Outcome, SessionInfo, SessionRef, SessionStore

Clock = Callable[[], float]

_DENIALS: dict[Outcome, type[Exception]] = {
    Outcome.UNKNOWN: TokenInvalid,
    Outcome.EXPIRED: TokenExpired,
    Outcome.BLOCKED: UserBlocked,
    Outcome.PASSWORD_EXPIRED: PasswordExpired,
    Outcome.MISMATCH: UserMismatch,
}


# What a malformed token is looked up as: no token hashes to '~' (not in the base64url alphabet).
_NO_TOKEN = SessionRef("~", None)


@dataclass(frozen=True)
class CreatedSession:
    """A session just written: the token is only ever seen here, by its creator."""

    token: str
    user_id: str
    expires_at: float
    idle_timeout_seconds: int


@dataclass(frozen=True)
class UserRecord:
    """A user's profile and flags."""

    profile: dict[str, str]
    blocked: bool
    password_expired: bool


class SessionManager:
    """Creates, verifies and revokes sessions, and keeps users' profiles and flags."""

    def __init__(self, store: SessionStore, *, default_ttl_seconds: int, max_ttl_seconds: int,
                 default_idle_seconds: int, clock: Clock = time.time) -> None:
        self.store = store
        self.default_ttl_seconds = default_ttl_seconds
        self.max_ttl_seconds = max_ttl_seconds
        self.default_idle_seconds = default_idle_seconds
        self.clock = clock

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    @staticmethod
    def _ref(token: str) -> SessionRef:
        return SessionRef(tokens.token_hash(token), tokens.minted_tag(token))

    def _lifetimes(self, ttl_seconds: int | None, idle_seconds: int | None) -> tuple[int, int]:
        ttl = self.default_ttl_seconds if ttl_seconds is None else ttl_seconds
        idle = self.default_idle_seconds if idle_seconds is None else idle_seconds
        problems: dict[str, list[str]] = {}
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= self.max_ttl_seconds:
            problems["ttlSeconds"] = [f"Must be an integer from 1 to {self.max_ttl_seconds}."]
        if isinstance(idle, bool) or not isinstance(idle, int) or not 0 <= idle <= self.max_ttl_seconds:
            problems["idleTimeoutSeconds"] = [
                f"Must be an integer from 0 (none) to {self.max_ttl_seconds}."]
        if problems:
            raise ValidationFailed(problems)
        return ttl, idle

    def create_session(self, profile: Any, ttl_seconds: int | None = None,
                       idle_seconds: int | None = None) -> CreatedSession:
        """Mint a token for the user in `profile` (validated, and saved as their profile)."""
        return self._write(None, profile, ttl_seconds, idle_seconds)

    def register_session(self, token: str, profile: Any, ttl_seconds: int | None = None,
                         idle_seconds: int | None = None) -> CreatedSession:
        """Register a token the platform issued itself (e.g. its own session JWT) for `profile`."""
        problem = tokens.check_registrable(token)
        if problem:
            raise ValidationFailed({"token": [problem]})
        return self._write(token, profile, ttl_seconds, idle_seconds)

    def _write(self, token: str | None, profile: Any, ttl_seconds: int | None,
               idle_seconds: int | None) -> CreatedSession:
        errors: dict[str, list[str]] = {}
        try:
            valid = schemas.load_profile(profile, for_session=True)
        except ValidationFailed as exc:
            errors.update(exc.fields)
        try:
            ttl, idle = self._lifetimes(ttl_seconds, idle_seconds)
        except ValidationFailed as exc:
            errors.update(exc.fields)
        if errors:
            raise ValidationFailed(errors)
        user_id = valid["userId"]
        token = token or tokens.mint_token(user_id)
        now_ms = self._now_ms()
        session = NewSession(
            ref=self._ref(token), user_id=user_id, tag=tokens.routing_tag(user_id), created_ms=now_ms,
            expires_ms=now_ms + ttl * 1000, idle_ms=idle * 1000,
            registered=tokens.minted_tag(token) is None,
        )
        self.store.create(session, valid)
        return CreatedSession(token, user_id, session.expires_ms / 1000, idle)

    def verify_session(self, token: str, expected_user_id: str | None = None) -> dict[str, str]:
        """The profile of the token's user; raise the named denial otherwise."""
        result = self.store.verify(self._ref(token), self._now_ms(), expected_user_id)
        if result.outcome is Outcome.VERIFIED and result.profile is not None:
            return result.profile
        raise _DENIALS.get(result.outcome, TokenInvalid)()

    def look_up_nothing(self) -> None:
        """Spend the store round trips an unknown token costs; for a token too malformed to look up,
        so that timing cannot tell a malformed token from an unknown, revoked or expired one."""
        self.store.verify(_NO_TOKEN, self._now_ms(), None)

    def revoke_session(self, token: str) -> bool:
        """End one session; False when it was already gone."""
        return self.store.revoke(self._ref(token))

    @staticmethod
    def _addressed(user_id: str) -> tuple[str, str]:
        """A user id that names a user (checked like a profile's userId: ValidationFailed) and its
        routing tag, so that every caller (admin API, CLI, Python) is held to the same rule."""
        checked = schemas.load_user_id(user_id)
        return checked, tokens.routing_tag(checked)

    def revoke_user_sessions(self, user_id: str) -> int:
        """End every session of a user; how many live ones there were."""
        return self.store.revoke_user(*self._addressed(user_id), self._now_ms())

    def list_sessions(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, oldest first."""
        return self.store.list_sessions(*self._addressed(user_id), self._now_ms())

    def get_user(self, user_id: str) -> UserRecord:
        """The user's profile and flags; UserNotFound when verifier has never seen them."""
        raw = self.store.get_user(*self._addressed(user_id))
        if raw is None or "userId" not in raw:
            raise UserNotFound()
        profile = {key: raw[key] for key in schemas.PROFILE_FIELDS if key in raw}
        return UserRecord(profile, raw.get("blocked") == "1", raw.get("passwordExpired") == "1")

    def update_profile(self, user_id: str, changes: Mapping[str, Any]) -> dict[str, str]:
        """Change some of a user's details; every session sees them at its next verification."""
        if not changes:
            raise BadRequest("Give at least one field to change.")
        merged = schemas.merge_profile(self.get_user(user_id).profile, changes)
        if not self.store.update_profile(*self._addressed(user_id), merged):
            raise UserNotFound()
        return merged

    def update_user(self, user_id: str, changes: Any) -> UserRecord:
        """Change a user's details and flags together; all is validated before anything is written."""
        current = self.get_user(user_id)
        merged = schemas.merge_user({**current.profile, "blocked": current.blocked,
                                     "passwordExpired": current.password_expired}, changes)
        profile = {key: merged[key] for key in schemas.PROFILE_FIELDS if merged.get(key) is not None}
        profile_changed = any(key in changes for key in schemas.PROFILE_FIELDS if key != "userId")
        if profile_changed and not self.store.update_profile(*self._addressed(user_id), profile):
            raise UserNotFound()
        for flag in schemas.FLAG_FIELDS:
            if flag in changes:
                self._set_flag(user_id, flag, merged[flag])
        return UserRecord(profile, merged["blocked"], merged["passwordExpired"])

    def set_password_expired(self, user_id: str, expired: bool = True) -> None:
        """Mark (or clear) that the user must change their password: verification answers 403."""
        self._set_flag(user_id, "passwordExpired", expired)

    def set_blocked(self, user_id: str, blocked: bool = True) -> None:
        """Block (or unblock) the user: verification answers 403 user_blocked."""
        self._set_flag(user_id, "blocked", blocked)

    def _set_flag(self, user_id: str, flag: str, on: bool) -> None:
        if not self.store.set_flag(*self._addressed(user_id), flag, on):
            raise UserNotFound()
