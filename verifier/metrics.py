"""Prometheus metrics, and GET /metrics for allowed addresses (VERIFIER_METRICS_ALLOWED) or the
admin key (`Authorization: Bearer <one of VERIFIER_ADMIN_KEYS>`).

Under gunicorn every worker is its own process, so the metrics live in prometheus-client's
multiprocess mode: each process writes its values to files in PROMETHEUS_MULTIPROC_DIR (prepared by
verifier/gunicorn_conf.py before any worker starts) and a scrape adds them up, whichever worker it
reaches. Without that variable (tests, `flask run`) the process's own registry is served.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Blueprint, Response, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder

from . import admin, callers, openapi, tokens
from .errors import CallerNotAllowed, StoreUnavailable, TokenRefused
from .logs import RequestRecord
from .store import SessionStore
from .verify import VERIFY_PATH
from .web import services

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ADMIN_BLUEPRINT = "admin"

VERIFICATIONS = Counter(
    "verifier_verifications", "Verify requests answered, by outcome: verified or the error code.",
    ["outcome"])
VERIFY_SECONDS = Histogram(
    "verifier_verify_duration_seconds", "Time to answer a verify request, whatever the outcome.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
RATE_LIMITED = Counter(
    "verifier_rate_limited", "Failed verifications answered 429 because the caller was over the limit.")
STORE_SECONDS = Histogram(
    "verifier_store_call_duration_seconds", "Time of one store operation, by operation.",
    ["operation"], buckets=(0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
STORE_ERRORS = Counter(
    "verifier_store_errors", "Store operations that failed (unreachable, timed out), by operation.",
    ["operation"])
ADMIN_OPERATIONS = Counter(
    "verifier_admin_operations", "Admin API requests, by operation (endpoint) and outcome.",
    ["operation", "outcome"])
REQUESTS = Counter(
    "verifier_http_requests", "Requests answered, by route (the rule, not the path) and status.",
    ["route", "status"])

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@openapi.operation(
    responses={200: {"type": "string"}}, errors=(403,), media_type="text/plain",
    description="Prometheus metrics (text format; OpenMetrics when asked for), summed over every "
                "worker. Only for addresses in VERIFIER_METRICS_ALLOWED (default: this host) or "
                "with `Authorization: Bearer <admin key>`; 403 caller_not_allowed otherwise.")
def scrape() -> Response:
    """The metrics of every worker, in the format the scraper asks for; 403 to anyone not allowed."""
    if not _may_scrape():
        raise CallerNotAllowed()
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(_registry()), content_type=content_type)


def _may_scrape() -> bool:
    settings = services().settings
    if callers.within(callers.current(), settings.metrics_allowed):
        return True
    try:
        presented = tokens.token_from_authorization(request.headers.get("Authorization"))
    except TokenRefused:
        return False
    return admin.admin_key_index(presented, settings.admin_keys or ()) is not None


def _registry() -> CollectorRegistry:
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def observe(record: RequestRecord) -> None:
    """Count one finished request."""
    _requests(record.route or "unmatched", record.status).inc()
    if record.route == VERIFY_PATH:
        _verifications(record.outcome).inc()
        VERIFY_SECONDS.observe(record.latency_ms / 1000)
        if record.outcome == "rate_limited":
            RATE_LIMITED.inc()
    elif record.blueprint == ADMIN_BLUEPRINT:
        admin_operation((record.endpoint or "unknown").removeprefix(f"{ADMIN_BLUEPRINT}."), record.outcome)


# The labelled children every request counts into, each looked up once (labels() takes a lock and
# checks its arguments at every call). Routes are the app's rules and outcomes its error codes, so
# the caches stay as small as the label sets themselves.
@functools.lru_cache(maxsize=1024)
def _requests(route: str, status: int) -> Any:
    return REQUESTS.labels(route, str(status))


@functools.lru_cache(maxsize=256)
def _verifications(outcome: str) -> Any:
    return VERIFICATIONS.labels(outcome)


def admin_operation(operation: str, outcome: str) -> None:
    """Count one admin operation (the request hook calls it for every request to the admin API)."""
    ADMIN_OPERATIONS.labels(operation, outcome).inc()


StoreT = TypeVar("StoreT")
# The operations timed: the store contract's methods, and the failure counter's.
STORE_OPERATIONS = frozenset(
    {name for name in vars(SessionStore) if not name.startswith("_")} | {"count_failure"})


class _TimedStore:
    """Delegates to a store, timing each public method call and counting its StoreUnavailable."""

    def __init__(self, store: Any) -> None:
        self._store = store
        # The timed methods are made once, as attributes: __getattr__ only sees the rest.
        for name in STORE_OPERATIONS:
            if hasattr(store, name):
                setattr(self, name, _timed(name, getattr(store, name)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _timed(operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
    seconds, errors = STORE_SECONDS.labels(operation), STORE_ERRORS.labels(operation)

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        except StoreUnavailable:
            errors.inc()
            raise
        finally:
            seconds.observe(time.perf_counter() - started)
    return timed


def timed(store: StoreT) -> StoreT:
    """The store, with every call's latency and failures recorded (same interface)."""
    return cast(StoreT, _TimedStore(store))


def worker_exited(pid: int) -> None:
    """Let go of a dead worker's live values (its counts stay: they still happened)."""
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
