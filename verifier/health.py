"""Health endpoints for load balancers: liveness touches nothing, readiness pings the store."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from . import openapi, schemas
from .web import services

bp = Blueprint("health", __name__)


@bp.get("/livez")
@openapi.operation(responses={200: schemas.HealthSchema})
def livez() -> Response:
    """200 while the process serves requests."""
    return jsonify(status="ok")


@bp.get("/readyz")
@openapi.operation(responses={200: schemas.HealthSchema}, errors=(503,))
def readyz() -> Response:
    """200 while the store answers (with hysteresis); 503 not_ready or shutting_down otherwise."""
    services().readiness.check()
    return jsonify(status="ready")
