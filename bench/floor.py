"""The floor for `make bench`: the least a verify view with one Redis round trip costs on this stack.

A measuring instrument, not a second implementation of verifier: nothing serves Mozarto from
here. One route, `POST /api/v1/mozarto/verify-user`, does only what no verification can skip:
parse the Bearer token, hash it and name its session key with verifier's own code, run verifier's
own verify script (one EVALSHA) over a raw socket per thread read with hiredis, and answer the
profile in verifier's envelope; anything else answers 401. It leaves out, on purpose, everything
that makes verifier a service: the body (no userId check), registered tokens, caller checks, rate
limits, the access log, metrics, socket timeouts and retries, redis-py's pool. `bench/run.py`
runs it under verifier's own gunicorn config, so verify / floor is what verifier spends beyond
the one round trip, and floor / livez the most verify could reach against /livez here.

    VERIFIER_REDIS_URL=redis://127.0.0.1:PORT/0 gunicorn -c python:verifier.gunicorn_conf \
        'bench.floor:create_app()'
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import hiredis
import redis
from flask import Flask, Response, jsonify, request

from verifier.config import Settings, load_settings
from verifier.errors import StoreUnavailable, TokenInvalid, TokenRefused, answer_for
from verifier.schemas import dump_verified
from verifier.store import _VERIFY, PROFILE_KEYS, Outcome, RedisSessionStore
from verifier.tokens import minted_tag, token_from_authorization, token_hash
from verifier.topology import parse_redis_url

VERIFY_PATH = "/api/v1/mozarto/verify-user"


class RawStore:
    """One plain socket per thread to a standalone Redis, replies parsed by hiredis."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.script_sha = hashlib.sha1(_VERIFY.encode(), usedforsecurity=False).hexdigest()
        self._local = threading.local()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def verify(self, key: str, *args: str | int) -> Any:
        """EVALSHA verifier's verify script on one key; loads the script once if Redis lacks it."""
        reply = self._call("EVALSHA", self.script_sha, 1, key, *args)
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            self._call("SCRIPT", "LOAD", _VERIFY)
            reply = self._call("EVALSHA", self.script_sha, 1, key, *args)
        if isinstance(reply, hiredis.ReplyError):
            raise StoreUnavailable(f"the verify script failed: {reply}")
        return reply

    def _call(self, *command: str | int) -> Any:
        sock, reader = self._connection()
        try:
            sock.sendall(hiredis.pack_command(command))
            reply = reader.gets()
            while reply is False:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("the store closed the connection")
                reader.feed(data)
                reply = reader.gets()
        except OSError as exc:
            self._drop(sock)
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return reply

    def _connection(self) -> tuple[socket.socket, hiredis.Reader]:
        connection: tuple[socket.socket, hiredis.Reader] | None = getattr(self._local, "connection", None)
        if connection is None:
            try:
                sock = socket.create_connection(self.address)
            except OSError as exc:
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
            # No timeout (it would add a poll before every send and receive): the floor is the least.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = self._local.connection = (sock, hiredis.Reader())
            with self._lock:
                self._sockets.add(sock)
        return connection

    def _drop(self, sock: socket.socket) -> None:
        self._local.connection = None
        with self._lock:
            self._sockets.discard(sock)
        sock.close()

    def close(self) -> None:
        """Close every thread's socket (tests; gunicorn workers just exit)."""
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            sock.close()


def create_app(settings: Settings | None = None) -> Flask:
    """The floor app on the store of VERIFIER_REDIS_URL (redis://host:port/0 only)."""
    settings = settings or load_settings()
    url = settings.redis_url or ""
    target, parts = parse_redis_url(url), urlsplit(url)
    if parts.scheme != "redis" or target.username or target.password or target.db:
        raise ValueError("the floor speaks to redis://host:port/0 only (no TLS, auth, db or Sentinel)")
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    store = RawStore(host, port)
    # verifier's store, built only for its key names: its client is never used, so never connects.
    keys = RedisSessionStore(redis.Redis(host=host, port=port), settings.key_prefix,
                             settings.expired_grace_seconds * 1000)
    app = Flask(__name__)
    app.extensions["floor"] = store

    @app.post(VERIFY_PATH)
    def verify_user() -> Response:
        try:
            token = token_from_authorization(request.headers.get("Authorization"))
            tag = minted_tag(token)
            if tag is None:  # a registered token costs an alias lookup first: not the floor
                raise TokenInvalid()
            reply = store.verify(keys.session_key(tag, token_hash(token)),
                                 keys.user_key(tag, ""),  # the script's user key prefix
                                 int(time.time() * 1000), keys.grace_ms, "")
        except (TokenRefused, StoreUnavailable) as exc:
            return answer_for(exc)
        if reply[0] != Outcome.VERIFIED:
            return answer_for(TokenInvalid())
        profile = {key: value.decode() for key, value in zip(PROFILE_KEYS, reply[1:], strict=True)
                   if value is not None}
        return jsonify(dump_verified(profile))

    return app
