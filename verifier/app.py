"""The composition root: create_app builds the store, the session manager and the blueprints."""

from __future__ import annotations

import logging

from flask import Flask, Response

from . import admin, callers, health, logs, metrics, openapi, verify
from .callers import CallerPolicy
from .config import Settings, load_settings
from .errors import register_error_handlers
from .ratelimit import FailureLimiter
from .readiness import Readiness
from .sessions import Clock, SessionManager
from .store import RedisSessionStore, connect
from .user_tokens import UserTokenIssuer
from .web import EXTENSION, Services, drain_body_after, services

log = logging.getLogger("verifier")


def build_services(settings: Settings, clock: Clock | None = None) -> Services:
    """The store and session manager for these settings (shared by the app and the CLI)."""
    store = metrics.timed(RedisSessionStore(connect(settings), settings.key_prefix,
                                            settings.expired_grace_seconds * 1000,
                                            wait_replicas=settings.redis_wait_replicas,
                                            wait_timeout_ms=settings.redis_wait_timeout_ms))
    manager = SessionManager(
        store,
        default_ttl_seconds=settings.session_ttl_seconds,
        max_ttl_seconds=settings.session_max_ttl_seconds,
        default_idle_seconds=settings.session_idle_timeout_seconds,
        **({"clock": clock} if clock else {}),
    )
    issuer = UserTokenIssuer.from_settings(settings, clock) if settings.mozarto_secret_key else None
    return Services(settings, store, manager, Readiness(store), CallerPolicy.from_settings(settings),
                    FailureLimiter.from_settings(store, settings), issuer)


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> Flask:
    """Build the WSGI app; settings default to the environment's, validated."""
    settings = settings or load_settings()
    app = Flask("verifier")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Every answer in the one JSON envelope: no automatic OPTIONS (an empty text/html 200) and no
    # HTML redirect for a path with doubled slashes (it answers 404 instead).
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.url_map.merge_slashes = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = build_services(settings, clock)
    logs.configure(settings.log_level, flush_ms=settings.log_flush_ms)

    register_error_handlers(app)
    app.register_blueprint(verify.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    if settings.admin_keys:
        app.register_blueprint(admin.bp)
    else:
        log.warning("admin API off: VERIFIER_ADMIN_KEYS is unset, so every /admin/ path answers 404")
    app.register_blueprint(metrics.bp)

    @app.before_request
    def _begin() -> None:
        logs.begin_request()
        callers.resolve_current(services().callers)

    @app.after_request
    def _finish(response: Response) -> Response:
        drain_body_after(response)
        record = logs.finish_request(response, callers.current(),
                                     log_health=settings.log_health_checks)
        metrics.observe(record)
        return response

    @app.after_request
    def _no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        return response

    return app
