"""Seed sessions through verifier's own SessionManager and store, pipelined, and list their tokens."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from verifier.config import Settings
from verifier.sessions import SessionManager
from verifier.store import RedisSessionStore, connect

BATCH = 2000


def profile(n: int) -> dict[str, str]:
    """A plausible, valid profile for user number n (every field as long as a real one)."""
    return {
        "userId": f"u-{n:07d}",
        "email": f"user{n:07d}@example.test",
        "firstName": "Ada",
        "lastName": f"Lovelace{n % 1000:03d}",
        "phone": f"+447700{n % 1_000_000:06d}",
        "countryCode": "GB",
        "emailVerified": f"user{n:07d}@example.test",
    }


@dataclass
class Seeder:
    """Creates sessions for users 0..users-1, round-robin, exactly as the service would."""

    settings: Settings
    users: int
    created: int = 0

    def __post_init__(self) -> None:
        s = self.settings
        # The service's own store and manager, built on a pipeline instead of a client: each
        # create_session queues the store's EVALSHA, and _flush sends a batch in one round trip.
        self._client = connect(s)
        self._pipe = self._client.pipeline(transaction=False)
        store = RedisSessionStore(self._pipe, s.key_prefix, s.expired_grace_seconds * 1000)
        self._sessions = SessionManager(
            store, default_ttl_seconds=s.session_ttl_seconds, max_ttl_seconds=s.session_max_ttl_seconds,
            default_idle_seconds=s.session_idle_timeout_seconds)
        self._profiles = [profile(n) for n in range(self.users)]

    def create(self, count: int, tokens: TextIO) -> float:
        """Create `count` more sessions; write "token<TAB>userId" lines; return seconds taken."""
        started = time.monotonic()
        pending: list[str] = []
        for _ in range(count):
            user = self._profiles[self.created % self.users]
            created = self._sessions.create_session(user)
            pending.append(f"{created.token}\t{created.user_id}\n")
            self.created += 1
            if len(pending) == BATCH:
                self._flush(pending, tokens)
        self._flush(pending, tokens)
        return time.monotonic() - started

    def close(self) -> None:
        """Close the connections (the pool's sockets would otherwise wait for the collector)."""
        self._pipe.reset()
        self._client.connection_pool.disconnect()

    def __enter__(self) -> Seeder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _flush(self, pending: list[str], tokens: TextIO) -> None:
        if not pending:
            return
        replies = self._pipe.execute()
        if replies.count(1) != len(pending):
            raise RuntimeError(f"seeding failed: {[r for r in replies if r != 1][:3]}")
        tokens.writelines(pending)
        pending.clear()


def read_tokens(path: Path) -> Iterator[tuple[str, str]]:
    """The (token, userId) pairs of a token file."""
    with path.open() as lines:
        for line in lines:
            token, user_id = line.rstrip("\n").split("\t")
            yield token, user_id
