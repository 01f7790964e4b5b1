"""Liveness touches nothing; readiness needs the store."""

from __future__ import annotations

from conftest import free_port

from verifier.app import create_app


def test_livez_and_readyz(client) -> None:
    assert client.get("/livez").status_code == 200
    response = client.get("/readyz")
    assert response.status_code == 200 and response.get_json() == {"status": "ready"}


def test_store_down_livez_200_readyz_503(settings) -> None:
    app = create_app(settings.with_overrides(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    client = app.test_client()
    assert client.get("/livez").status_code == 200
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.get_json()["errors"][0]["code"] == "not_ready"


def test_verify_with_store_down_is_503_never_401(settings) -> None:
    app = create_app(settings.with_overrides(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    response = app.test_client().post("/api/v1/mozarto/verify-user",
                                      headers={"Authorization": "Bearer vfs_abcd_" + "A" * 43})
    assert response.status_code == 503
    assert response.get_json()["errors"][0]["code"] == "unavailable"
