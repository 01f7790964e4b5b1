# verifier's image: `docker build -t verifier .`, then
# `docker run -p 8000:8000 -e VERIFIER_REDIS_URL=redis://redis-host:6379/0 verifier`.

# Stage 1: wheels for verifier and everything it needs; build tools never reach the final image.
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY verifier ./verifier
RUN python -m pip wheel --wheel-dir /wheels .

# Stage 2: the wheels installed offline, run by an unprivileged user.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VERIFIER_BIND=0.0.0.0:8000 \
    GUNICORN_CMD_ARGS="--worker-tmp-dir /dev/shm"
# gunicorn's worker heartbeat file lives in /dev/shm (memory): a slow or read-only disk never
# makes the arbiter think a worker hung.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin verifier
COPY --from=builder /wheels /wheels
RUN python -m pip install --no-index --find-links=/wheels verifier && rm -rf /wheels
WORKDIR /srv/verifier
# A numeric user, so that orchestrators can tell it is not root (runAsNonRoot).
USER 10001:10001
EXPOSE 8000
# Liveness only: a store outage must not get the container restarted (that is readiness's job,
# /readyz, for the load balancer). python, since the slim image has no curl.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 CMD ["python", "-c", "import urllib.request; from verifier.config import load_settings; port = load_settings().listen_address.rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/livez', timeout=2)"]
# Exec form: gunicorn is PID 1 and gets SIGTERM itself (graceful stop: readiness 503, requests in
# flight finish). Logs go to the container's output, nowhere else.
CMD ["gunicorn", "--config", "python:verifier.gunicorn_conf", "verifier:create_app()"]
