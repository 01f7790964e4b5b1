"""GET /openapi.json: a valid OpenAPI 3 document that covers every route the app serves."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import FakeClock
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from verifier.app import create_app
from verifier.config import Settings

IMPLICIT = {"HEAD", "OPTIONS"}


def served(app: Flask) -> set[tuple[str, str]]:
    """(OpenAPI path, method) for every route in the app's URL map, worked out from Flask alone."""
    def camel(name: str) -> str:
        head, *rest = name.split("_")
        return head + "".join(part.capitalize() for part in rest)

    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "{" + camel(m[1]) + "}", rule.rule)
        out |= {(path, method) for method in (rule.methods or set()) - IMPLICIT}
    return out


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in document["paths"].items()
            for method in item if method != "parameters"}


def test_the_document_is_valid_openapi_3(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = response.get_json()
    validate(document)
    assert document["openapi"].startswith("3.")


@pytest.mark.parametrize("admin_keys", [True, False], ids=["admin-on", "admin-off"])
def test_every_served_route_is_documented_with_its_methods(
        settings: Settings, clock: FakeClock, admin_keys: bool) -> None:
    app = create_app(settings if admin_keys else settings.with_overrides(admin_keys=None), clock=clock)
    document = app.test_client().get("/openapi.json").get_json()
    assert documented(document) == served(app)
    assert any(path.startswith("/admin/") for path, _ in served(app)) is admin_keys


def test_admin_operations_require_the_admin_key_and_verify_the_session_token(
        client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    assert set(document["components"]["securitySchemes"]) == {"adminKey", "sessionToken"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            expected = ("adminKey" if path.startswith("/admin/") else
                        "sessionToken" if path.startswith("/api/") else None)
            security = [name for entry in operation.get("security", []) for name in entry]
            assert security == ([expected] if expected else []), (path, method)
            if expected:
                assert "401" in operation["responses"], (path, method)


def test_operation_ids_are_unique(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    ids = [op["operationId"] for item in document["paths"].values()
           for method, op in item.items() if method != "parameters"]
    assert len(ids) == len(set(ids))


def test_every_error_answer_is_the_one_envelope(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    for name, response in document["components"]["responses"].items():
        assert response["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorEnvelope"}, name
