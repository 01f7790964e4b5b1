"""Metrics: what is counted, who may read /metrics, and exact totals across gunicorn workers."""

from __future__ import annotations

import os
import signal

import pytest
import requests
from conftest import ADMIN_HEADERS, ADMIN_KEY, PROFILE, free_port
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from verifier.app import build_services, create_app
from verifier.config import load_settings

PATH = "/api/v1/mozarto/verify-user"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_verifications_are_counted_by_outcome(client: FlaskClient, make_session) -> None:
    before = {o: sample("verifier_verifications_total", outcome=o)
              for o in ("verified", "invalid_token", "missing_token", "user_mismatch")}
    latency_before = sample("verifier_verify_duration_seconds_count")
    token = make_session()
    client.post(PATH, headers={"Authorization": f"Bearer {token}"})
    client.post(PATH, headers={"Authorization": f"Bearer {token}"})
    client.post(PATH, headers={"Authorization": "Bearer vfs_abcd_" + "A" * 43})
    client.post(PATH)
    client.post(PATH, headers={"Authorization": f"Bearer {token}"}, json={"userId": "u-2"})
    after = {o: sample("verifier_verifications_total", outcome=o) for o in before}
    assert {o: after[o] - before[o] for o in before} == {
        "verified": 2, "invalid_token": 1, "missing_token": 1, "user_mismatch": 1}
    assert sample("verifier_verify_duration_seconds_count") - latency_before == 5


def test_metrics_endpoint_serves_prometheus_text_to_localhost(client: FlaskClient, make_session) -> None:
    client.post(PATH, headers={"Authorization": f"Bearer {make_session()}"})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    values = scrape(response.get_data(as_text=True))
    assert values[("verifier_verifications_total", frozenset({("outcome", "verified")}))] >= 1
    assert any(name == "verifier_store_call_duration_seconds_count" and ("operation", "verify") in labels
               for name, labels in values)
    openmetrics = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert openmetrics.content_type.startswith("application/openmetrics-text")
    assert openmetrics.get_data(as_text=True).endswith("# EOF\n")


def test_metrics_is_refused_outside_its_allowlist(env, clock) -> None:
    client = create_app(load_settings({**env, "VERIFIER_METRICS_ALLOWED": "10.20.0.0/16"}),
                        clock=clock).test_client()
    refused = client.get("/metrics")  # the test client calls from 127.0.0.1
    assert refused.status_code == 403
    assert refused.get_json()["errors"][0]["code"] == "caller_not_allowed"
    assert "verifier_" not in refused.get_data(as_text=True)
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.20.3.4"}).status_code == 200
    # Behind a trusted proxy, the scraper's real address is what counts.
    proxied = create_app(load_settings({**env, "VERIFIER_METRICS_ALLOWED": "10.20.0.0/16",
                                        "VERIFIER_TRUSTED_PROXIES": "10.99.0.0/16"}), clock=clock)
    assert proxied.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "10.99.0.1"},
                                     headers={"X-Forwarded-For": "10.20.3.4"}).status_code == 200
    assert proxied.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "10.99.0.1"},
                                     headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403


def test_the_admin_key_opens_metrics_from_anywhere(env, clock) -> None:
    client = create_app(load_settings({**env, "VERIFIER_METRICS_ALLOWED": "10.20.0.0/16"}),
                        clock=clock).test_client()
    outside = {"REMOTE_ADDR": "203.0.113.9"}
    assert client.get("/metrics", headers=ADMIN_HEADERS, environ_base=outside).status_code == 200
    for auth in ("Bearer wrong-" + ADMIN_KEY, ADMIN_KEY[:-1], "Bearer a b", ""):
        response = client.get("/metrics", headers={"Authorization": auth}, environ_base=outside)
        assert response.status_code == 403, auth


def test_admin_operations_are_counted(client: FlaskClient) -> None:
    name = "verifier_admin_operations_total"
    before = sample(name, operation="create_session", outcome="ok")
    refused = sample(name, operation="create_session", outcome="invalid_admin_key")
    assert client.post("/admin/v1/sessions", json=PROFILE, headers=ADMIN_HEADERS).status_code == 201
    client.post("/admin/v1/sessions", json=PROFILE, headers={"Authorization": "Bearer " + "n" * 40})
    assert sample(name, operation="create_session", outcome="ok") - before == 1
    assert sample(name, operation="create_session", outcome="invalid_admin_key") - refused == 1


def test_rate_limit_refusals_are_counted(env, clock) -> None:
    client = create_app(load_settings({**env, "VERIFIER_FAILED_VERIFY_LIMIT": "1"}),
                        clock=clock).test_client()
    before = sample("verifier_rate_limited_total")
    statuses = [client.post(PATH, headers={"Authorization": "Bearer nope"}).status_code for _ in range(3)]
    assert statuses == [401, 429, 429]
    assert sample("verifier_rate_limited_total") - before == 2
    assert sample("verifier_store_call_duration_seconds_count", operation="count_failure") >= 3


def test_store_errors_are_counted(settings) -> None:
    down = create_app(settings.with_overrides(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    before = sample("verifier_store_errors_total", operation="verify")
    assert down.test_client().post(PATH, headers={"Authorization": "Bearer nope"}).status_code == 503
    assert sample("verifier_store_errors_total", operation="verify") - before == 1


def test_the_timed_store_answers_as_the_store_does(services, raw_redis) -> None:
    before = sample("verifier_store_call_duration_seconds_count", operation="ping")
    services.store.ping()
    assert sample("verifier_store_call_duration_seconds_count", operation="ping") - before == 1
    assert services.store.prefix == services.settings.key_prefix  # attributes pass through


@pytest.mark.e2e
def test_four_workers_report_exactly_the_verifications_sent(gunicorn, env) -> None:
    server = gunicorn({**env, "VERIFIER_WORKERS": "4", "VERIFIER_THREADS": "2"})
    token = build_services(load_settings(env)).sessions.create_session(PROFILE).token
    sent = 60
    outcomes = []
    for number in range(sent):
        auth = f"Bearer {token}" if number % 3 else "Bearer vfs_abcd_" + "A" * 43
        # A new connection each time, so that the requests spread over the workers.
        outcomes.append(requests.post(server.url + PATH, headers={"Authorization": auth,
                                                                  "Connection": "close"}, timeout=5))
    assert {r.status_code for r in outcomes} == {200, 401}
    served_by = {line["pid"] for line in server.request_lines(sent)}
    values = scrape(requests.get(server.url + "/metrics", timeout=5).text)
    verified = values[("verifier_verifications_total", frozenset({("outcome", "verified")}))]
    invalid = values[("verifier_verifications_total", frozenset({("outcome", "invalid_token")}))]
    assert (verified, invalid) == (40, 20), f"served by {len(served_by)} workers"
    assert values[("verifier_verify_duration_seconds_count", frozenset())] == sent
    assert len(served_by) > 1, "the requests reached more than one worker"
    print(f"{sent} verifications over {len(served_by)} workers; /metrics: {verified:.0f} + {invalid:.0f}")


def _verified_total(server) -> float:
    values = scrape(requests.get(server.url + "/metrics", timeout=5).text)
    return values.get(("verifier_verifications_total", frozenset({("outcome", "verified")})), 0.0)


@pytest.mark.e2e
def test_a_restart_counts_from_zero_and_a_killed_worker_keeps_its_counts(gunicorn, env, tmp_path) -> None:
    metrics_dir = tmp_path / "metrics"
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "VERIFIER_WORKERS": "2"}
    token = build_services(load_settings(env)).sessions.create_session(PROFILE).token
    headers = {"Authorization": f"Bearer {token}", "Connection": "close"}

    first = gunicorn(env)
    for _ in range(5):
        assert requests.post(first.url + PATH, headers=headers, timeout=5).status_code == 200
    assert _verified_total(first) == 5
    first.stop()
    assert list(metrics_dir.glob("*.db")), "the first run's values are on disk"

    second = gunicorn(env)
    for _ in range(6):
        assert requests.post(second.url + PATH, headers=headers, timeout=5).status_code == 200
    assert _verified_total(second) == 6, "nothing from the first run is added in"
    pids = {line["pid"] for line in second.request_lines(6)}
    os.kill(max(pids), signal.SIGKILL)
    for _ in range(6):
        assert requests.post(second.url + PATH, headers=headers, timeout=5).status_code == 200
    assert _verified_total(second) == 12, "a dead worker's counts stay in the total"
