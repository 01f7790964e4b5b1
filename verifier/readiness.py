"""Readiness for load balancers: the store's health with hysteresis, and draining on shutdown.

Per process (each gunicorn worker judges for itself). A process starts not ready and becomes ready
at the store's first answer; once ready it stays ready until `failures_to_unready` checks in a row
fail, and once it has fallen it needs `successes_to_ready` checks in a row to succeed, so one slow
ping never flips it and a store that answers every other ping keeps it out. On SIGTERM the
gunicorn config calls `begin_shutdown()`: from then on readiness answers 503 whatever the store
does, while the requests in flight complete.
"""

from __future__ import annotations

import logging
import threading

from .errors import NotReady, ShuttingDown, StoreUnavailable
from .store import SessionStore

log = logging.getLogger("verifier")

FAILURES_TO_UNREADY = 3
SUCCESSES_TO_READY = 2

# Set by a signal handler, so one per process: the signal is per process too.
_SHUTDOWN = threading.Event()


def begin_shutdown() -> None:
    """Mark this process as shutting down: readiness answers 503 from now on."""
    _SHUTDOWN.set()


class Readiness:
    """Decides whether this process should get traffic; `check()` pings the store."""

    def __init__(self, store: SessionStore, *, failures_to_unready: int = FAILURES_TO_UNREADY,
                 successes_to_ready: int = SUCCESSES_TO_READY,
                 shutdown: threading.Event = _SHUTDOWN) -> None:
        self.store = store
        self.failures_to_unready = failures_to_unready
        self.successes_to_ready = successes_to_ready
        self.shutdown = shutdown
        self._lock = threading.Lock()
        self._ready = False
        self._ever_ready = False
        self._failures = 0
        self._successes = 0
        self._last_error = "the store has not answered yet"

    @property
    def ready(self) -> bool:
        """The current verdict, without pinging."""
        return self._ready and not self.shutdown.is_set()

    def check(self) -> None:
        """Ping the store and update the verdict; raise ShuttingDown or NotReady when not ready."""
        if self.shutdown.is_set():
            raise ShuttingDown()
        try:
            self.store.ping()
            error = None
        except StoreUnavailable as exc:
            error = exc.detail or str(exc)
        with self._lock:
            self._record(error)
            ready, last_error = self._ready, self._last_error
        if self.shutdown.is_set():
            raise ShuttingDown()
        if not ready:
            raise NotReady(last_error)

    def _record(self, error: str | None) -> None:
        if error is None:
            self._failures = 0
            self._successes += 1
            needed = self.successes_to_ready if self._ever_ready else 1
            if not self._ready and self._successes >= needed:
                self._ready = self._ever_ready = True
                log.info("readiness: ready (the store answers)")
            return
        self._successes = 0
        self._failures += 1
        self._last_error = error
        if self._ready and self._failures >= self.failures_to_unready:
            self._ready = False
            log.warning("readiness: not ready after %d failed store checks: %s",
                        self._failures, error)
