"""gunicorn configuration: `gunicorn -c python:verifier.gunicorn_conf wsgi:app`."""

import atexit
import glob
import os
import shutil
import signal
import sys
import tempfile
from types import FrameType
from typing import Any

# prometheus-client picks multiprocess mode when it is first imported (importing `verifier` does),
# so the directory where every worker writes its metrics is in the environment before that, and
# holds nothing from an earlier run.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if not _metrics_dir:
    _metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="verifier-metrics-")

    def _remove_metrics_dir(path: str = _metrics_dir, master: int = os.getpid()) -> None:
        if os.getpid() == master:  # workers exit through sys.exit too, and run this
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(_remove_metrics_dir)
os.makedirs(_metrics_dir, exist_ok=True)
for _stale in glob.glob(os.path.join(_metrics_dir, "*.db")):
    os.remove(_stale)

from verifier import logs, metrics, readiness
from verifier.config import load_settings
from verifier.errors import ConfigError

try:
    _settings = load_settings()
except ConfigError as _exc:
    sys.stderr.write(f"verifier: configuration error: {'; '.join(_exc.problems)}\n")
    sys.exit(2)
if _settings.redis_url is None:
    sys.stderr.write(
        "verifier: configuration error: VERIFIER_REDIS_URL is unset; set it, or start with "
        "`verifier serve`, which runs an embedded Valkey\n")
    sys.exit(2)

bind = [_settings.listen_address]
# gthread, measured on 2 cores (shared/notes/performance-baseline.md, the real verify view with
# keep-alive): gthread 2x8 2,484 req/s, gevent x2 2,240, sync x5 1,843. gevent only pulls ahead
# when every store call waits ~1 ms (a store on another host) and needs monkey-patching; sync
# wins only with `Connection: close`, and a load balancer keeps connections alive.
worker_class = "gthread"
# One process per core (more processes than cores measured slower); threads overlap store waits.
workers = _settings.workers
threads = _settings.threads
# Longer than the idle timeouts of common load balancers (AWS ALB 60 s, Azure 240 s, Google Cloud
# 600 s), so the balancer always closes an idle connection first and never sends a request down
# one gunicorn is closing. A kept-alive connection costs a poller entry, not a thread.
keepalive = 620
# The arbiter restarts a worker whose main loop has been stuck this long.
timeout = 30
# After SIGTERM: requests in flight finish (each is bounded well under a second by the store
# timeouts), then the worker exits; inside the usual 30 s a platform waits before SIGKILL.
graceful_timeout = 10
# Bounds on what a caller may send before the app sees it (gunicorn answers 414 / 431 / 400).
limit_request_line = 4094
limit_request_fields = 64
limit_request_field_size = 8190
errorlog = "-"
# gunicorn 25+ opens a management socket at ~/.gunicorn/gunicorn.ctl by default: one path shared by
# every instance on the host, and a way to resize or stop the service besides signals. Off.
control_socket_disable = True
loglevel = _settings.log_level.lower()
proc_name = "verifier"


def post_worker_init(worker: Any) -> None:
    """Chain the worker's SIGTERM handler so that readiness turns 503 the moment it arrives.

    gunicorn 27 calls no hook on SIGTERM in a worker (worker_int is for SIGINT/SIGQUIT, worker_abort
    for SIGABRT, on_exit runs in the arbiter); the gthread worker's own handler stops accepting
    and lets the requests in flight finish within graceful_timeout.
    """
    graceful = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        readiness.begin_shutdown()
        if callable(graceful):
            graceful(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    # signal.signal() makes the signal interrupt system calls again; gunicorn had turned that off.
    signal.siginterrupt(signal.SIGTERM, False)


def worker_int(worker: Any) -> None:
    """SIGINT / SIGQUIT: the worker exits at once; say not ready for whatever still asks."""
    readiness.begin_shutdown()


# Caller keys are redacted from gunicorn's own logs too (the access log, when it is turned on).
logger_class = "verifier.logs.GunicornLogger"


def on_starting(server: Any) -> None:
    """Log the effective configuration once, secrets masked, as a JSON line on stdout."""
    logs.configure(_settings.log_level)
    logs.log_configuration(_settings.masked())


def child_exit(server: Any, worker: Any) -> None:
    """A worker has gone: let go of its live metric values (its counts stay in the total)."""
    metrics.worker_exited(worker.pid)
