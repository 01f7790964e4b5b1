"""The session store: the only module that speaks Redis.

Key layout (prefix `vf`; `{tag}` is a Redis Cluster hash tag derived from the user id, so a user's
record, their session index and every session minted for them share one slot):

    vf:{tag}:u:<userId>   hash   the profile and the blocked / passwordExpired flags (no TTL)
    vf:{tag}:x:<userId>   zset   the user's session hashes, scored by key expiry (TTL = latest)
    vf:{tag}:s:<hash>     string "created|expires|idle|lastVerified|userId" (ms), TTL = expiry + grace
    vf:a:<hash>           string the tag of a registered (platform-issued) token's session (same TTL)
    vf:f:<caller>         string failed verifications of one caller address in the current window

`<hash>` is 128 bits of the token's SHA-256: a dump of Redis yields no usable token.
"""

from __future__ import annotations

import enum
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast

import hiredis
import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.connection import SSLConnection
from redis.exceptions import NoScriptError, RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from .config import Settings
from .errors import StoreUnavailable, TokenConflict
from .topology import RedisTarget, Topology, parse_redis_url

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

# KEYS[1] failure counter. ARGV: window ms. Returns {count, ms until the window ends}.
_COUNT_FAILURE = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  ttl = tonumber(ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return {n, ttl}
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


StoreClient = redis.Redis | RedisCluster

# Cluster clients retry 10 times and follow 16 redirects by default, re-reading the topology and
# sleeping between tries: one command could then take seconds. These bounds keep the worst case
# near a second (see README, "Redis topologies").
_CLUSTER_REDIRECTS = 3


def connect(settings: Settings, url: str | None = None) -> StoreClient:
    """A client for the configured topology, with bounded timeouts and pool and one jittered retry."""
    raw = url or settings.redis_url
    if raw is None:
        raise StoreUnavailable("no store is configured (VERIFIER_REDIS_URL is unset)")
    target = parse_redis_url(raw)
    # A connection the server closed while idle costs one quick retry, not a 503.
    retry = Retry(ExponentialWithJitterBackoff(base=0.005, cap=0.05), 1,
                  supported_errors=(redis.ConnectionError,))
    common: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout_ms / 1000,
        "socket_connect_timeout": settings.redis_connect_timeout_ms / 1000,
        **_tls_options(settings, target),
    }
    credentials = {"username": target.username or settings.redis_username,
                   "password": target.password or settings.redis_password}
    auth: dict[str, Any] = {key: value for key, value in credentials.items() if value is not None}
    pool_options: dict[str, Any] = {"max_connections": settings.redis_pool_size,
                                    "timeout": settings.redis_connect_timeout_ms / 1000}
    if target.topology is Topology.SENTINEL:
        sentinel_auth = {"username": settings.redis_sentinel_username,
                         "password": settings.redis_sentinel_password}
        if target.tls:  # a URL says TLS for standalone and Cluster; Sentinel needs to be told
            common["ssl"] = True
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            target.nodes,
            # The default would retry each sentinel 10 times with backoff.
            sentinel_kwargs={**common, "retry": Retry(NoBackoff(), 0),
                             **{k: v for k, v in sentinel_auth.items() if v is not None}},
            **common, **auth, retry=retry, health_check_interval=30)
        master = sentinel.master_for(  # type: ignore[no-untyped-call]
            str(target.service_name), db=target.db, connection_pool_class=_BlockingSentinelPool,
            connection_class=_SentinelSSLConnection if target.tls else _SentinelConnection,
            **pool_options)
        return cast(redis.Redis, master)
    if target.topology is Topology.CLUSTER:
        return cast(RedisCluster, _ClusterOnFirstUse(lambda: _cluster(target, common, auth,
                                                                       pool_options, retry)))
    pool = redis.BlockingConnectionPool.from_url(
        raw, **common, **auth, **pool_options, retry=retry, health_check_interval=30)
    return redis.Redis(connection_pool=pool)


def _tls_options(settings: Settings, target: RedisTarget) -> dict[str, Any]:
    if not target.tls:
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required"}
    if settings.redis_tls_ca_file:
        options["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    if settings.redis_tls_cert_file and settings.redis_tls_key_file:
        options["ssl_certfile"] = str(settings.redis_tls_cert_file)
        options["ssl_keyfile"] = str(settings.redis_tls_key_file)
    return options


def _cluster(target: RedisTarget, common: dict[str, Any], auth: dict[str, Any],
             pool_options: dict[str, Any], retry: Retry) -> RedisCluster:
    (host, port), *others = target.nodes
    scheme = "rediss" if target.tls else "redis"
    # Built from a URL so that every node gets a BlockingConnectionPool, like standalone.
    client = RedisCluster(
        url=f"{scheme}://{host}:{port}", startup_nodes=[ClusterNode(h, p) for h, p in others],  # type: ignore[no-untyped-call]
        connection_pool_class=redis.BlockingConnectionPool, retry=retry,
        require_full_coverage=False, **common, **auth, **pool_options)
    client.RedisClusterRequestTTL = _CLUSTER_REDIRECTS
    return client


# Incremented in a forked child, so that no thread there uses a connection its parent opened.
_fork_generation = 0


def _after_fork() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork)


class _ScriptOnOwnConnection:
    """A Lua script run on connections of its own: the hot path's store call.

    Connections are checked out of the client's pool when none of its own is idle, and kept, idle
    ones on a stack (one per request in flight at most; the pool's limit still bounds them all);
    each call is one EVALSHA packed by hiredis in one piece: a send and a receive. redis-py's own
    path (pool checkout and release with a poll of the socket, per-argument encoding, the reply
    callbacks) cost 75 us of client CPU a call where this costs 19 (see README, "Where a
    verification's time goes"). Failures are handled as redis-py's commands handle them: a
    connection that cannot be opened fails at once; one that was open and fails (closed by the
    server while idle, a demoted Sentinel primary) is retried by the connection's Retry policy; a
    server without the script (restarted, failed over) gets it loaded; redis-py closes the
    connection on every socket error, timeout or interruption, so no late reply is ever read as
    the next one.
    """

    def __init__(self, client: redis.Redis, source: str) -> None:
        self._pool = client.connection_pool
        self._source = source
        self._sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self._idle: list[Any] = []
        self._generation = _fork_generation

    def __call__(self, key: str, *args: str | int) -> Any:
        # (hiredis's stub types the tuple as one element long)
        command = hiredis.pack_command(("EVALSHA", self._sha, 1, key, *args))  # type: ignore[arg-type]
        if self._generation != _fork_generation:  # a forked child: the parent's connections stay its
            self._idle, self._generation = [], _fork_generation
        try:
            connection = self._idle.pop()  # atomic: two threads never get the same one
        except IndexError:
            connection = self._pool.get_connection()
        try:
            connection.connect()  # at once when open; opening it is not retried
            return connection.retry.call_with_retry(lambda: self._run(connection, command),
                                                    lambda _error: connection.disconnect())
        finally:
            self._idle.append(connection)  # closed if its state is unknown: it reconnects

    def _run(self, connection: Any, command: bytes) -> Any:
        connection.send_packed_command([command])
        try:
            return connection.read_response()
        except NoScriptError:
            connection.send_command("SCRIPT", "LOAD", self._source)
            connection.read_response()
            connection.send_packed_command([command])
            return connection.read_response()


class _BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's pool, but waiting (bounded) for a free connection like standalone's."""


class _ClusterOnFirstUse:
    """A RedisCluster built at its first command, so that the service starts, and answers 503,
    while no seed node answers; a failed build is tried again at the next command."""

    def __init__(self, build: Callable[[], RedisCluster]) -> None:
        self._build = build
        self._client: RedisCluster | None = None
        self._lock = threading.Lock()
        self._attempts = 0
        self._failure: Exception | None = None

    def register_script(self, script: str) -> Script:
        """A script that runs on the cluster once it is built (as bytes: Script then needs no
        encoder from a client that may not exist yet)."""
        return Script(cast(RedisCluster, self), script.encode())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client or self._built(), name)

    def close(self) -> None:
        """Close the cluster's connections, if it was ever reached."""
        if self._client is not None:
            self._client.close()

    def _built(self) -> RedisCluster:
        attempts = self._attempts
        with self._lock:
            if self._client is not None:
                return self._client
            # Requests that queued behind a failed attempt share its failure rather than each
            # waiting for the seeds' timeouts in turn.
            if self._attempts != attempts and self._failure is not None:
                raise self._failure
            self._attempts += 1
            try:
                self._client = self._build()
            except Exception as exc:
                self._failure = exc
                raise
            return self._client


class _SentinelConnection(SentinelManagedConnection):
    """A connection to the primary that asks the sentinels where it is at every (re)connect,
    once. redis-py asks only in connect(), and twice there (its retry repeats the round, so hung
    sentinels cost their timeouts twice); a command's retry reconnects by another way, to the
    old address, which after a demotion answers READONLY again, request after request."""

    def connect(self) -> None:
        self.connect_check_health()

    def connect_check_health(self, check_health: bool = True,
                             retry_socket_connect: bool = True) -> None:
        if self._sock:
            return
        self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health=self.connection_pool.check_connection,
                                     retry_socket_connect=False)


class _SentinelSSLConnection(_SentinelConnection, SSLConnection):
    """The same over TLS."""


class _ScriptOnCluster:
    """A script through redis-py's client, called like _ScriptOnOwnConnection (one key)."""

    def __init__(self, script: Script) -> None:
        self._script = script

    def __call__(self, key: str, *args: str | int) -> Any:
        return self._script(keys=[key], args=list(args))


@contextmanager
def _store_errors() -> Iterator[None]:
    """Turn every redis-py failure into StoreUnavailable at the boundary."""
    try:
        yield
    except (redis.RedisError, RedisClusterException) as exc:
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


# (tag, hash) of a session key that never exists: '~' is not in a hash's base64url alphabet.
_NO_SESSION = ("0000", "~")


class RedisSessionStore:
    """SessionStore on Redis (standalone, Sentinel or Cluster), one round trip per verification."""

    def __init__(self, client: StoreClient, key_prefix: str, grace_ms: int, *,
                 wait_replicas: int = 0, wait_timeout_ms: int = 100) -> None:
        self.client = client
        self.prefix = key_prefix
        # An expired session's key outlives it by this much, so it answers expired_token.
        self.grace_ms = grace_ms
        # A creation is confirmed only once this many replicas hold it (WAIT); 0: at once.
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        # Standalone and Sentinel verify on connections of the store's own; Cluster routes each key
        # to its node through redis-py (MOVED and ASK included).
        self._verify: Callable[..., Any] = (
            _ScriptOnOwnConnection(client, _VERIFY) if isinstance(client, redis.Redis)
            else _ScriptOnCluster(client.register_script(_VERIFY)))
        self._create = client.register_script(_CREATE)
        self._revoke = client.register_script(_REVOKE)
        self._revoke_user = client.register_script(_REVOKE_USER)
        self._update_profile = client.register_script(_UPDATE_PROFILE)
        self._set_flag = client.register_script(_SET_FLAG)
        self._count_failure = client.register_script(_COUNT_FAILURE)

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

    def failure_key(self, subject: str) -> str:
        return f"{self.prefix}:f:{subject}"

    def _tag_of(self, ref: SessionRef) -> str | None:
        if ref.tag is not None:
            return ref.tag
        return _decode(self.client.get(self.alias_key(ref.token_hash)))

    def close(self) -> None:
        """Close every connection to the store now (redis-py leaves a pool it was given open)."""
        pool = getattr(self.client, "connection_pool", None)
        self.client.close()
        if pool is not None:
            pool.disconnect()

    def ping(self) -> None:
        with _store_errors():
            self.client.ping()

    def create(self, session: NewSession, profile: Mapping[str, str]) -> None:
        ref, tag = session.ref, session.tag
        pxat = session.expires_ms + self.grace_ms
        value = (f"{session.created_ms}|{session.expires_ms}|{session.idle_ms}|0|"
                 f"{session.user_id}")
        alias = self.alias_key(ref.token_hash)
        keys = [self.session_key(tag, ref.token_hash), self.user_key(tag, session.user_id),
                self.index_key(tag, session.user_id)]
        args: list[str | int] = [value, pxat, session.created_ms, ref.token_hash,
                                 *_profile_args(profile)]
        with _store_errors():
            if session.registered and not self._confirmed(
                    alias, lambda c: c.set(alias, tag, pxat=pxat, nx=True), session):
                raise TokenConflict()
            created = self._confirmed(
                keys[0], lambda c: self._create(keys=keys, args=args, client=c), session)
            if not created:
                if session.registered:
                    self.client.delete(alias)
                raise TokenConflict()

    def _confirmed(self, key: str, write: Callable[[Any], Any], session: NewSession) -> Any:
        """Run one write of `session`; when WAIT is on, return only once enough replicas hold it,
        else undo the session and raise StoreUnavailable."""
        if not self.wait_replicas:
            return write(self.client)
        # WAIT counts the writes of its own connection: send both on one, to the key's node.
        node = self.client
        if isinstance(node, (RedisCluster, _ClusterOnFirstUse)):
            node = node.get_redis_connection(node.get_node_from_key(key))  # type: ignore[no-untyped-call]
        pipe = node.pipeline(transaction=False)
        write(pipe)
        pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)  # type: ignore[no-untyped-call]
        reply, acked = pipe.execute()
        if reply and int(acked) < self.wait_replicas:  # a refused write (conflict) needs no WAIT
            fate = "deleted" if self._forget(session) else "left to expire (delete failed)"
            raise StoreUnavailable(f"WAIT: {acked} of {self.wait_replicas} replicas acknowledged "
                                   f"the new session within {self.wait_timeout_ms} ms; it was {fate}")
        return reply

    def _forget(self, session: NewSession) -> bool:
        """Delete a session whose creation failed, so that a retried registration does not meet
        token_exists; False when that fails too (the session then stays until it expires)."""
        ref = session.ref
        try:
            self._revoke(keys=[self.session_key(session.tag, ref.token_hash)],
                         args=[f"{self._slot(session.tag)}:x:", ref.token_hash])
            if session.registered:
                self.client.delete(self.alias_key(ref.token_hash))
        except (redis.RedisError, RedisClusterException, OSError):
            return False
        return True

    def verify(self, ref: SessionRef, now_ms: int, expected_user_id: str | None) -> VerifyResult:
        with _store_errors():
            tag = self._tag_of(ref)
            # An unknown registered token still runs the script, on a key that never exists, so it
            # costs the same two round trips as a known one: timing cannot tell them apart.
            tag, token_hash = (tag, ref.token_hash) if tag else _NO_SESSION
            reply = self._verify(self.session_key(tag, token_hash), f"{self._slot(tag)}:u:", now_ms,
                                 self.grace_ms, expected_user_id or "")
        outcome = Outcome(int(reply[0]))
        if outcome is not Outcome.VERIFIED:
            return VerifyResult(outcome)
        profile = {key: _decode(value) for key, value in zip(PROFILE_KEYS, reply[1:], strict=True)
                   if value is not None}
        return VerifyResult(outcome, profile)  # type: ignore[arg-type]

    def count_failure(self, subject: str, window_ms: int) -> tuple[int, int]:
        """Add one failure for `subject`; the window's count and ms until it ends (one round trip)."""
        with _store_errors():
            count, remaining_ms = self._count_failure(keys=[self.failure_key(subject)], args=[window_ms])
        return int(count), int(remaining_ms)

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
