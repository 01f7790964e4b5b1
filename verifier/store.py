"""The session store: the only module that speaks Redis.

Key layout (prefix `vf`; `{tag}` is a Redis Cluster hash tag derived from the user id, so a user's
record, their session index and every session minted for them share one slot):

    vf:{tag}:u:<userId>   hash   the profile and the blocked / passwordExpired flags (no TTL)
    vf:{tag}:x:<userId>   zset   the user's session hashes, scored by key expiry (TTL = latest)
    vf:{tag}:s:<hash>     string "created|expires|idle|lastVerified|userId" (ms), TTL = expiry + grace
    vf:a:<hash>           string the tag of a registered (platform-issued) token's session (same TTL)

`<hash>` is 128 bits of the token's SHA-256: a dump of Redis yields no usable token.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from .config import Settings
from .errors import StoreUnavailable, TokenConflict

PROFILE_KEYS = ("userId", "email", "firstName", "lastName", "phone", "countryCode", "emailVerified")
FLAG_KEYS = ("blocked", "passwordExpired")


class Outcome(enum.IntEnum):
    """What the store found for a token; the session manager turns it into an answer."""

    UNKNOWN = 0
    VERIFIED = 1
    EXPIRED = 2
    BLOCKED = 3
    PASSWORD_EXPIRED = 4
    MISMATCH = 5


@dataclass(frozen=True)
class SessionRef:
    """Where a token's session lives: its hash, and its routing tag when the token carries one."""

    token_hash: str
    tag: str | None


@dataclass(frozen=True)
class NewSession:
    """A session to write: times in ms since the epoch; idle_ms 0 means no idle timeout."""

    ref: SessionRef
    user_id: str
    tag: str
    created_ms: int
    expires_ms: int
    idle_ms: int
    registered: bool


@dataclass(frozen=True)
class SessionInfo:
    """One live session as listed: no token, no full hash."""

    session_id: str
    created_ms: int
    expires_ms: int
    idle_ms: int
    last_verified_ms: int


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of one verification, and the profile when it is VERIFIED."""

    outcome: Outcome
    profile: dict[str, str] | None = None


class SessionStore(Protocol):
    """What the session manager needs from a store. Every method raises StoreUnavailable when the
    store cannot be reached or answers too slowly, and never anything else for store trouble."""

    def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailable otherwise."""

    def create(self, session: NewSession, profile: Mapping[str, str]) -> None:
        """Write the session and the user's profile atomically; TokenConflict if the token exists."""

    def verify(self, ref: SessionRef, now_ms: int, expected_user_id: str | None) -> VerifyResult:
        """Look the session up, check its lifetime and user, and on success record the visit."""

    def revoke(self, ref: SessionRef) -> bool:
        """Delete one session; False when there was none."""

    def revoke_user(self, user_id: str, tag: str, now_ms: int) -> int:
        """Delete every session of a user; the number of live sessions deleted."""

    def list_sessions(self, user_id: str, tag: str, now_ms: int) -> list[SessionInfo]:
        """The user's sessions that have not expired, oldest first."""

    def get_user(self, user_id: str, tag: str) -> dict[str, str] | None:
        """The user's record (profile and flags), or None when there is none."""

    def update_profile(self, user_id: str, tag: str, profile: Mapping[str, str]) -> bool:
        """Replace an existing user's profile, keeping the flags; False when there is no user."""

    def set_flag(self, user_id: str, tag: str, flag: str, on: bool) -> bool:
        """Set or clear `blocked` or `passwordExpired`; False when there is no user."""


# KEYS[1] session key. ARGV: user key prefix, now, grace, expected user id or "".
_VERIFY = """
local v = redis.call('GET', KEYS[1])
if not v then return {0} end
local created, expires, idle, last, uid = string.match(v, '^(%d+)|(%d+)|(%d+)|(%d+)|(.*)$')
if not created then return {0} end
local now = tonumber(ARGV[2])
expires = tonumber(expires); idle = tonumber(idle); last = tonumber(last)
if now >= expires then return {2} end
if idle > 0 and now >= math.max(last, tonumber(created)) + idle then return {2} end
if ARGV[4] ~= '' and ARGV[4] ~= uid then return {5} end
local u = redis.call('HMGET', ARGV[1] .. uid, 'userId', 'email', 'firstName', 'lastName', 'phone',
                     'countryCode', 'emailVerified', 'blocked', 'passwordExpired')
if not u[1] then return {0} end
if u[8] then return {3} end
if u[9] then return {4} end
local value = created .. '|' .. expires .. '|' .. idle .. '|' .. now .. '|' .. uid
if idle > 0 then
  redis.call('SET', KEYS[1], value, 'PXAT', math.min(expires, now + idle) + tonumber(ARGV[3]))
else
  redis.call('SET', KEYS[1], value, 'KEEPTTL')
end
return {1, u[1], u[2], u[3], u[4], u[5], u[6], u[7]}
"""

# KEYS: session, user, index. ARGV: value, key expiry, now, session hash, then profile k/v pairs.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local pxat = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', pxat)
local profile = {}
for i = 5, #ARGV do profile[#profile + 1] = ARGV[i] end
redis.call('HDEL', KEYS[2], 'emailVerified')
redis.call('HSET', KEYS[2], unpack(profile))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
redis.call('ZADD', KEYS[3], pxat, ARGV[4])
if redis.call('PEXPIRETIME', KEYS[3]) < pxat then redis.call('PEXPIREAT', KEYS[3], pxat) end
return 1
"""

# KEYS[1] session key. ARGV: index key prefix, session hash.
_REVOKE = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local uid = string.match(v, '^%d+|%d+|%d+|%d+|(.*)$')
redis.call('DEL', KEYS[1])
if uid then redis.call('ZREM', ARGV[1] .. uid, ARGV[2]) end
return 1
"""

# KEYS[1] index key. ARGV: session key prefix, now. Returns {live count, hash...}.
_REVOKE_USER = """
local hashes = redis.call('ZRANGE', KEYS[1], 0, -1)
local live = 0
local now = tonumber(ARGV[2])
for _, h in ipairs(hashes) do
  local key = ARGV[1] .. h
  local v = redis.call('GET', key)
  if v then
    local expires = tonumber(string.match(v, '^%d+|(%d+)|'))
    if expires and expires > now then live = live + 1 end
    redis.call('DEL', key)
  end
end
redis.call('DEL', KEYS[1])
local out = {live}
for _, h in ipairs(hashes) do out[#out + 1] = h end
return out
"""

# KEYS[1] user key. ARGV: profile k/v pairs. Replaces the profile of an existing user.
_UPDATE_PROFILE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], 'emailVerified')
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS[1] user key. ARGV: flag, "1" to set or "" to clear.
_SET_FLAG = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[2] == '1' then redis.call('HSET', KEYS[1], ARGV[1], '1')
else redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""


def connect(settings: Settings, url: str | None = None) -> redis.Redis:
    """A redis-py client with bounded timeouts, a bounded pool and one jittered retry on a drop."""
    target = url or settings.redis_url
    if target is None:
        raise StoreUnavailable("no store is configured (VERIFIER_REDIS_URL is unset)")
    pool = redis.BlockingConnectionPool.from_url(
        target,
        max_connections=settings.redis_pool_size,
        timeout=settings.redis_connect_timeout_ms / 1000,
        socket_timeout=settings.redis_timeout_ms / 1000,
        socket_connect_timeout=settings.redis_connect_timeout_ms / 1000,
        # A connection the server closed while idle costs one quick retry, not a 503.
        retry=Retry(ExponentialWithJitterBackoff(base=0.005, cap=0.05), 1,
                    supported_errors=(redis.ConnectionError,)),
        health_check_interval=30,
    )
    return redis.Redis(connection_pool=pool)


@contextmanager
def _store_errors() -> Iterator[None]:
    """Turn every redis-py failure into StoreUnavailable at the boundary."""
    try:
        yield
    except redis.RedisError as exc:
        raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc


def _decode(value: bytes | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", "surrogateescape")


def _profile_args(profile: Mapping[str, str]) -> list[str]:
    args: list[str] = []
    for key in PROFILE_KEYS:
        if profile.get(key) is not None:
            args += [key, profile[key]]
    return args


class RedisSessionStore:
    """SessionStore on Redis (standalone or Sentinel), in one round trip per verification."""

    def __init__(self, client: redis.Redis, key_prefix: str, grace_ms: int) -> None:
        self.client = client
        self.prefix = key_prefix
        # An expired session's key outlives it by this much, so it answers expired_token.
        self.grace_ms = grace_ms
        self._verify = client.register_script(_VERIFY)
        self._create = client.register_script(_CREATE)
        self._revoke = client.register_script(_REVOKE)
        self._revoke_user = client.register_script(_REVOKE_USER)
        self._update_profile = client.register_script(_UPDATE_PROFILE)
        self._set_flag = client.register_script(_SET_FLAG)

    # Key names, all in one place.
    def _slot(self, tag: str) -> str:
        return f"{self.prefix}:{{{tag}}}"

    def session_key(self, tag: str, token_hash: str) -> str:
        return f"{self._slot(tag)}:s:{token_hash}"

    def user_key(self, tag: str, user_id: str) -> str:
        return f"{self._slot(tag)}:u:{user_id}"

    def index_key(self, tag: str, user_id: str) -> str:
        return f"{self._slot(tag)}:x:{user_id}"

    def alias_key(self, token_hash: str) -> str:
        return f"{self.prefix}:a:{token_hash}"

    def _tag_of(self, ref: SessionRef) -> str | None:
        if ref.tag is not None:
            return ref.tag
        return _decode(self.client.get(self.alias_key(ref.token_hash)))

    def ping(self) -> None:
        with _store_errors():
            self.client.ping()

    def create(self, session: NewSession, profile: Mapping[str, str]) -> None:
        ref, tag = session.ref, session.tag
        pxat = session.expires_ms + self.grace_ms
        value = (f"{session.created_ms}|{session.expires_ms}|{session.idle_ms}|0|"
                 f"{session.user_id}")
        with _store_errors():
            if session.registered and not self.client.set(
                    self.alias_key(ref.token_hash), tag, pxat=pxat, nx=True):
                raise TokenConflict()
            created = self._create(
                keys=[self.session_key(tag, ref.token_hash), self.user_key(tag, session.user_id),
                      self.index_key(tag, session.user_id)],
                args=[value, pxat, session.created_ms, ref.token_hash, *_profile_args(profile)])
            if not created:
                if session.registered:
                    self.client.delete(self.alias_key(ref.token_hash))
                raise TokenConflict()

    def verify(self, ref: SessionRef, now_ms: int, expected_user_id: str | None) -> VerifyResult:
        with _store_errors():
            tag = self._tag_of(ref)
            if tag is None:
                return VerifyResult(Outcome.UNKNOWN)
            reply = self._verify(
                keys=[self.session_key(tag, ref.token_hash)],
                args=[f"{self._slot(tag)}:u:", now_ms, self.grace_ms, expected_user_id or ""])
        outcome = Outcome(int(reply[0]))
        if outcome is not Outcome.VERIFIED:
            return VerifyResult(outcome)
        profile = {key: _decode(value) for key, value in zip(PROFILE_KEYS, reply[1:], strict=True)
                   if value is not None}
        return VerifyResult(outcome, profile)  # type: ignore[arg-type]

    def revoke(self, ref: SessionRef) -> bool:
        with _store_errors():
            tag = self._tag_of(ref)
            if tag is None:
                return False
            revoked = self._revoke(keys=[self.session_key(tag, ref.token_hash)],
                                   args=[f"{self._slot(tag)}:x:", ref.token_hash])
            if ref.tag is None:
                self.client.delete(self.alias_key(ref.token_hash))
        return bool(revoked)

    def revoke_user(self, user_id: str, tag: str, now_ms: int) -> int:
        with _store_errors():
            reply = self._revoke_user(keys=[self.index_key(tag, user_id)],
                                      args=[f"{self._slot(tag)}:s:", now_ms])
            hashes = [_decode(h) for h in reply[1:]]
            if hashes:
                # Registered tokens' aliases live in other slots: one DEL each, pipelined.
                pipe = self.client.pipeline(transaction=False)
                for token_hash in hashes:
                    pipe.delete(self.alias_key(str(token_hash)))
                pipe.execute()
        return int(reply[0])

    def list_sessions(self, user_id: str, tag: str, now_ms: int) -> list[SessionInfo]:
        with _store_errors():
            members: list[bytes] = self.client.zrangebyscore(  # type: ignore[assignment]
                self.index_key(tag, user_id), now_ms, "+inf")
            hashes = [_decode(h) for h in members]
            values = self.client.mget([self.session_key(tag, str(h)) for h in hashes]) if hashes else []
        sessions = []
        for token_hash, raw in zip(hashes, values, strict=True):
            if raw is None:
                continue
            created, expires, idle, last, _ = str(_decode(raw)).split("|", 4)
            info = SessionInfo(str(token_hash)[:12], int(created), int(expires), int(idle), int(last))
            if info.expires_ms > now_ms and not (
                    info.idle_ms and now_ms >= max(info.last_verified_ms, info.created_ms) + info.idle_ms):
                sessions.append(info)
        return sorted(sessions, key=lambda s: s.created_ms)

    def get_user(self, user_id: str, tag: str) -> dict[str, str] | None:
        with _store_errors():
            raw: dict[Any, Any] = self.client.hgetall(self.user_key(tag, user_id))
        if not raw:
            return None
        return {str(_decode(k)): str(_decode(v)) for k, v in raw.items()}

    def update_profile(self, user_id: str, tag: str, profile: Mapping[str, str]) -> bool:
        with _store_errors():
            return bool(self._update_profile(keys=[self.user_key(tag, user_id)],
                                             args=_profile_args(profile)))

    def set_flag(self, user_id: str, tag: str, flag: str, on: bool) -> bool:
        if flag not in FLAG_KEYS:
            raise ValueError(f"unknown flag {flag!r}")
        with _store_errors():
            return bool(self._set_flag(keys=[self.user_key(tag, user_id)],
                                       args=[flag, "1" if on else ""]))
