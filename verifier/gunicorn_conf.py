"""gunicorn configuration: `gunicorn -c python:verifier.gunicorn_conf wsgi:app`."""

import sys

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
# gthread: with keep-alive it ties gevent and beats sync on 2 cores (shared/notes), and needs no
# monkey-patching; one process per core, threads to overlap the store round trips.
worker_class = "gthread"
workers = _settings.workers
threads = _settings.threads
# Longer than common load balancers' idle timeouts (AWS ALB 60 s), so the LB closes first.
keepalive = 75
timeout = 30
graceful_timeout = 20
# Bounds on what a caller may send before the app sees it.
limit_request_line = 4094
limit_request_fields = 64
limit_request_field_size = 8190
errorlog = "-"
loglevel = _settings.log_level.lower()
proc_name = "verifier"
