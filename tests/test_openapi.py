"""GET /openapi.json: a valid OpenAPI 3 document that covers every route the app serves."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from conftest import ADMIN_KEY, PROFILE, FakeClock, Gunicorn, free_port
from flask import Flask
from flask.testing import FlaskClient
from openapi_schema_validator import OAS30Validator
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


class Contract:
    """Checks real answers against the document, and records which operations they covered."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.templates = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path)
                          for path in document["paths"]]
        self.seen: set[tuple[str, str]] = set()

    def resolve(self, node: Any) -> Any:
        """The node with every local $ref replaced by what it points at."""
        if isinstance(node, dict):
            if "$ref" in node:
                target: Any = self.document
                for part in node["$ref"].removeprefix("#/").split("/"):
                    target = target[part]
                return self.resolve(target)
            return {key: self.resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [self.resolve(item) for item in node]
        return node

    def check(self, response: requests.Response) -> requests.Response:
        method = str(response.request.method)
        path = urlsplit(str(response.request.url)).path
        [template] = [t for pattern, t in self.templates if pattern.match(path)]
        operation = self.document["paths"][template][method.lower()]
        status = str(response.status_code)
        assert status in operation["responses"], f"{method} {path} answered {status}: undocumented"
        documented = self.resolve(operation["responses"][status])
        if "text/plain" in documented.get("content", {}):
            assert response.headers["Content-Type"].startswith("text/plain")
        elif "content" in documented:
            assert response.headers["Content-Type"] == "application/json"
            schema = documented["content"]["application/json"]["schema"]
            OAS30Validator(schema, format_checker=OAS30Validator.FORMAT_CHECKER).validate(
                response.json())
        else:
            assert response.content == b""
        for header in documented.get("headers", {}):
            assert header in response.headers, f"{method} {path} {status} lacks {header}"
        self.seen.add((template, method))
        return response

    def all_operations(self) -> set[tuple[str, str]]:
        return {(path, method.upper()) for path, item in self.document["paths"].items()
                for method in item if method != "parameters"}


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """One HTTP session for the test, closed after it (no socket left for the GC to find)."""
    with requests.Session() as session:
        yield session


def test_answers_of_the_running_service_match_the_document(
        gunicorn: Callable[..., Gunicorn], env: dict[str, str], http: requests.Session) -> None:
    server = gunicorn({**env, "VERIFIER_WORKERS": "1",
                       "MOZARTO_SECRET_KEY": "mozarto-secret-key-for-tests-0123456789"})
    document = requests.get(f"{server.url}/openapi.json", timeout=5).json()
    validate(document)
    contract = Contract(document)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def call(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             data: bytes | None = None) -> requests.Response:
        return contract.check(http.request(
            method, server.url + path, json=body, data=data, timeout=5,
            headers=admin if headers is None else headers))

    def verify(method: str, token: str | None, body: Any = None) -> requests.Response:
        raw = body if isinstance(body, bytes) else None
        return call(method, "/api/v1/mozarto/verify-user", None if raw else body,
                    {} if token is None else {"Authorization": f"Bearer {token}"}, raw)

    call("GET", "/openapi.json")
    call("GET", "/livez")
    call("GET", "/readyz")
    token = call("POST", "/admin/v1/sessions", {**PROFILE, "ttlSeconds": 600}).json()["token"]
    call("POST", "/admin/v1/sessions", {**PROFILE, "email": "nope", "role": "x"})
    call("POST", "/admin/v1/sessions", PROFILE, headers={})
    call("POST", "/admin/v1/sessions", PROFILE, headers={"Authorization": "Bearer " + "w" * 40})
    call("POST", "/admin/v1/sessions", data=json.dumps({**PROFILE, "x": "y" * 20000}).encode())
    platform = "platform-session-jwt.eyJpZCI6InUtMSJ9.c2lnbmF0dXJlLWJ5dGVz"
    call("POST", "/admin/v1/sessions/register", {"token": platform, **PROFILE})
    call("POST", "/admin/v1/sessions/register", {"token": platform, **PROFILE})
    verify("POST", token, {"userId": "u-1"})
    verify("GET", token)
    verify("POST", None)
    verify("POST", token, {"userId": "u-2"})
    verify("POST", token, b"[")
    call("GET", "/admin/v1/users/u-1/sessions")
    call("GET", "/admin/v1/users/u-1")
    call("GET", "/admin/v1/users/nobody")
    call("PATCH", "/admin/v1/users/u-1", {"lastName": "Byron", "emailVerified": None})
    call("PATCH", "/admin/v1/users/u-1", {"blocked": "yes"})
    for flag in ("blocked", "password-expired"):
        call("PUT", f"/admin/v1/users/u-1/{flag}")
        verify("POST", token)
        call("DELETE", f"/admin/v1/users/u-1/{flag}")
    call("PUT", "/admin/v1/users/nobody/blocked")
    call("POST", "/admin/v1/sessions/revoke", {"token": platform})
    verify("POST", platform)
    call("POST", "/admin/v1/user-tokens", {"sessionToken": token})
    call("POST", "/admin/v1/user-tokens", {**PROFILE, "ttlSeconds": 60})
    call("POST", "/admin/v1/user-tokens", {"sessionToken": platform})
    call("DELETE", "/admin/v1/users/u-1/sessions")
    call("GET", "/admin/v1/users/u-1/sessions")
    call("GET", "/metrics")
    call("GET", "/metrics", headers={**admin, "X-Forwarded-For": "203.0.113.9"})

    assert contract.seen == contract.all_operations()

    down = gunicorn({**env, "VERIFIER_WORKERS": "1",
                     "VERIFIER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    server.url = down.url
    assert call("GET", "/readyz").status_code == 503
    assert verify("POST", token).status_code == 503
    assert call("POST", "/admin/v1/sessions", PROFILE).status_code == 503
    assert call("POST", "/admin/v1/user-tokens", {"sessionToken": token}).status_code == 501
