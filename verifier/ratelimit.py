"""Failed verifications per caller address, counted in the store so every worker and instance agrees.

Only failures are counted, after they happen: a successful verification costs no extra round trip
and is never refused, so Mozarto (one address carrying every user's calls) never loses a good
answer to someone else's bad tokens. Past the limit a failure answers 429 instead of 401. This does
not stop a caller from trying tokens (256 random bits do that); it tells a misbehaving caller to back
off, caps what it costs in logs, and makes it visible in the metrics.
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

from .callers import Address, limit_subject
from .config import Settings
from .errors import RateLimited, StoreUnavailable

log = logging.getLogger("verifier")


class FailureCounter(Protocol):
    """What the limiter needs from the store."""

    def count_failure(self, subject: str, window_ms: int) -> tuple[int, int]:
        """Add one failure for `subject`; the count in the current window and ms until it ends.

        Raises StoreUnavailable when the store cannot be reached.
        """


class FailureLimiter:
    """Counts a caller's failed verifications and refuses past `limit` per window (0: off)."""

    def __init__(self, counter: FailureCounter, *, limit: int, window_seconds: int) -> None:
        self.counter = counter
        self.limit = limit
        self.window_ms = window_seconds * 1000

    @classmethod
    def from_settings(cls, counter: FailureCounter, settings: Settings) -> FailureLimiter:
        """The limiter the settings describe."""
        return cls(counter, limit=settings.failed_verify_limit,
                   window_seconds=settings.failed_verify_window_seconds)

    def record_failure(self, caller: Address | None) -> None:
        """Count one failed verification; RateLimited when the caller is now over the limit."""
        if self.limit <= 0:
            return
        try:
            count, remaining_ms = self.counter.count_failure(limit_subject(caller), self.window_ms)
        except StoreUnavailable as exc:
            # The 401 is already decided and true; a lost count must not turn it into a 503.
            log.warning("failed verification not counted: %s", exc.detail or exc)
            return
        if count > self.limit:
            raise RateLimited(max(1, math.ceil(remaining_ms / 1000)))
