"""Who may call: the real caller behind trusted proxies, the allowlist and the caller key."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from conftest import PROFILE
from flask.testing import FlaskClient

from verifier.app import create_app
from verifier.callers import CallerPolicy, limit_subject, parse_address, redact
from verifier.config import load_settings
from verifier.errors import ConfigError

PATH = "/api/v1/mozarto/verify-user"
KEY = "k" * 40
OLD_KEY = "o" * 40


def nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


@pytest.mark.parametrize(("text", "expected"), [
    ("203.0.113.7", "203.0.113.7"), (" 203.0.113.7 ", "203.0.113.7"), ("203.0.113.7:5555", "203.0.113.7"),
    ("2001:db8::1", "2001:db8::1"), ("[2001:db8::1]:443", "2001:db8::1"), ("[2001:db8::1]", "2001:db8::1"),
    ("::ffff:10.0.0.1", "10.0.0.1"), ('"198.51.100.2"', "198.51.100.2"),
    ("unknown", None), ("", None), (None, None), ("1.2.3", None), ("300.1.1.1", None), ("_hidden", None),
])
def test_parse_address(text: str | None, expected: str | None) -> None:
    parsed = parse_address(text)
    assert (None if parsed is None else str(parsed)) == expected


LB = nets("10.0.0.0/8", "fd00::/8")


@pytest.mark.parametrize(("peer", "xff", "expected"), [
    # Not a trusted proxy: X-Forwarded-For is never read, whatever it says.
    ("203.0.113.7", "10.9.9.9", "203.0.113.7"),
    ("203.0.113.7", "198.51.100.1, 10.0.0.1", "203.0.113.7"),
    # Behind one trusted proxy: the rightmost entry is the client.
    ("10.0.0.5", "198.51.100.1", "198.51.100.1"),
    # A client-written entry left of the real one changes nothing.
    ("10.0.0.5", "127.0.0.1, 198.51.100.1", "198.51.100.1"),
    ("10.0.0.5", "garbage, 198.51.100.1", "198.51.100.1"),
    # Two trusted hops, then the client.
    ("10.0.0.5", "198.51.100.1, 10.1.1.1", "198.51.100.1"),
    ("fd00::5", "2001:db8::9, fd00::1", "2001:db8::9"),
    # A trusted proxy with no header: the proxy itself is the caller.
    ("10.0.0.5", None, "10.0.0.5"),
    ("10.0.0.5", "", "10.0.0.5"),
    # Every hop trusted: the leftmost is as far as the chain goes.
    ("10.0.0.5", "10.2.2.2, 10.1.1.1", "10.2.2.2"),
    # Junk where a trusted proxy's entry should be: unknown, never the proxy.
    ("10.0.0.5", "198.51.100.1, not-an-ip", None),
    ("::ffff:10.0.0.5", "198.51.100.1", "198.51.100.1"),
])
def test_resolve_walks_forwarded_for_from_the_right(peer: str, xff: str | None,
                                                     expected: str | None) -> None:
    caller = CallerPolicy(trusted_proxies=LB).resolve(peer, xff)
    assert (None if caller is None else str(caller)) == expected


def test_no_trusted_proxies_by_default_means_forwarded_for_is_never_believed() -> None:
    policy = CallerPolicy.from_settings(load_settings({}))
    assert str(policy.resolve("10.0.0.5", "198.51.100.1")) == "10.0.0.5"


def test_allowlist_and_keys() -> None:
    caller = parse_address("198.51.100.1")
    assert CallerPolicy().admits(caller, None)
    assert CallerPolicy().admits(None, None)
    allow = CallerPolicy(allowed_callers=nets("198.51.100.0/24"))
    assert allow.admits(caller, None)
    assert not allow.admits(parse_address("198.51.101.1"), None)
    assert not allow.admits(None, None)
    keyed = CallerPolicy(caller_keys=[KEY, OLD_KEY])
    assert keyed.admits(caller, KEY) and keyed.admits(caller, OLD_KEY)
    for wrong in (None, "", KEY[:-1], KEY + "k", KEY.upper(), "x" * 1000):
        assert not keyed.admits(caller, wrong)
    both = CallerPolicy(allowed_callers=nets("198.51.100.0/24"), caller_keys=[KEY])
    assert both.admits(caller, KEY)
    assert not both.admits(parse_address("203.0.113.1"), KEY)
    assert not both.admits(caller, OLD_KEY)


def test_limit_subject_groups_ipv6_by_64() -> None:
    assert limit_subject(parse_address("198.51.100.1")) == "198.51.100.1"
    assert limit_subject(parse_address("2001:db8:1:2:aaaa::1")) == "2001:db8:1:2::/64"
    assert limit_subject(parse_address("2001:db8:1:2:bbbb::9")) == "2001:db8:1:2::/64"
    assert limit_subject(None) == "unknown"


@pytest.mark.parametrize(("text", "expected"), [
    (f"GET /verify-user?key={KEY} HTTP/1.1", "GET /verify-user?key=*** HTTP/1.1"),
    (f"/p?a=1&key={KEY}&b=2", "/p?a=1&key=***&b=2"),
    (f"key={KEY}", "key=***"),
    (f"/p?KEY={KEY}", "/p?key=***"),
    # Percent-encoded spellings of the name: the app decodes them, so they carry the key too.
    (f"GET /v?%6bey={KEY} HTTP/1.1", "GET /v?key=*** HTTP/1.1"),
    (f"/v?a=1&k%65%79={KEY}", "/v?a=1&key=***"),
    (f"/v?%6B%65%79={KEY}", "/v?key=***"),
    ("/p?monkey=1&api_key=2", "/p?monkey=1&api_key=2"),
    ("nothing here", "nothing here"),
])
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(("variable", "value"), [
    ("VERIFIER_ALLOWED_CALLERS", "10.0.0.0/33"),
    ("VERIFIER_ALLOWED_CALLERS", "10.0.0.1/8"),  # host bits set: probably not what was meant
    ("VERIFIER_TRUSTED_PROXIES", "proxy.internal"),
    ("VERIFIER_METRICS_ALLOWED", "10.0.0.0/8, nope"),
    ("VERIFIER_CALLER_KEYS", "short"),
    ("VERIFIER_CALLER_KEYS", f"{KEY},{'x' * 31}"),
    ("VERIFIER_CALLER_KEYS", "k" * 39 + "&"),
    ("VERIFIER_FAILED_VERIFY_LIMIT", "-1"),
    ("VERIFIER_FAILED_VERIFY_WINDOW_SECONDS", "0"),
    ("VERIFIER_LOG_HEALTH_CHECKS", "maybe"),
])
def test_bad_settings_are_named(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({variable: value})
    assert variable in info.value.problems[0]
    if variable == "VERIFIER_CALLER_KEYS":
        assert value not in info.value.problems[0], "a key, even a bad one, is never echoed"


def test_settings_lists() -> None:
    settings = load_settings({"VERIFIER_ALLOWED_CALLERS": "198.51.100.0/24, 2001:db8::/32 203.0.113.9",
                              "VERIFIER_CALLER_KEYS": f"{KEY}, {OLD_KEY}"})
    assert [str(n) for n in settings.allowed_callers or ()] == [
        "198.51.100.0/24", "2001:db8::/32", "203.0.113.9/32"]
    assert settings.caller_keys == (KEY, OLD_KEY)
    masked = settings.masked()
    assert masked["VERIFIER_CALLER_KEYS"] == "2 keys, masked"
    assert KEY not in str(masked)
    assert masked["VERIFIER_ALLOWED_CALLERS"][0] == "198.51.100.0/24"
    defaults = load_settings({})
    assert defaults.allowed_callers is None and defaults.trusted_proxies is None
    assert defaults.caller_keys is None


# Through the app: refusals come before any lookup, and the real caller is judged.

def guarded_client(env: dict[str, str], clock, **variables: str) -> FlaskClient:
    return create_app(load_settings({**env, **variables}), clock=clock).test_client()


def verify(client: FlaskClient, token: str, peer: str = "127.0.0.1", query: str = "",
           xff: str | None = None):
    headers = {"Authorization": f"Bearer {token}"}
    if xff is not None:
        headers["X-Forwarded-For"] = xff
    return client.post(PATH + query, headers=headers, environ_base={"REMOTE_ADDR": peer})


@pytest.fixture
def token(make_session: Callable[..., str]) -> str:
    return make_session()


def test_a_caller_outside_the_allowlist_is_refused_before_any_lookup(
        env, clock, token: str, raw_redis) -> None:
    client = guarded_client(env, clock, VERIFIER_ALLOWED_CALLERS="198.51.100.0/24")
    raw_redis.config_resetstat()
    response = verify(client, token, peer="203.0.113.7")
    assert response.status_code == 403
    assert response.get_json()["errors"][0]["code"] == "caller_not_allowed"
    assert PROFILE["email"] not in response.get_data(as_text=True)
    stats = raw_redis.info("commandstats")
    assert not any(name in stats for name in ("cmdstat_get", "cmdstat_evalsha", "cmdstat_eval")), stats
    assert verify(client, token, peer="198.51.100.20").status_code == 200


def test_a_caller_behind_a_trusted_proxy_is_judged_by_its_real_address(env, clock, token: str) -> None:
    client = guarded_client(env, clock, VERIFIER_ALLOWED_CALLERS="198.51.100.0/24",
                            VERIFIER_TRUSTED_PROXIES="10.0.0.0/8")
    assert verify(client, token, peer="10.0.0.5", xff="198.51.100.20").status_code == 200
    assert verify(client, token, peer="10.0.0.5", xff="203.0.113.7").status_code == 403
    # The balancer's own address is not the caller, allowed or not.
    assert verify(client, token, peer="10.0.0.5").status_code == 403
    # A client's own X-Forwarded-For is left of what the balancer appends: it changes nothing.
    assert verify(client, token, peer="10.0.0.5", xff="198.51.100.20, 203.0.113.7").status_code == 403


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing(env, clock, token: str) -> None:
    client = guarded_client(env, clock, VERIFIER_ALLOWED_CALLERS="198.51.100.0/24")
    for xff in ("198.51.100.20", "10.0.0.5, 198.51.100.20", "198.51.100.20, 198.51.100.21"):
        assert verify(client, token, peer="203.0.113.7", xff=xff).status_code == 403
    client = guarded_client(env, clock, VERIFIER_ALLOWED_CALLERS="198.51.100.0/24",
                            VERIFIER_TRUSTED_PROXIES="10.0.0.0/8")
    assert verify(client, token, peer="203.0.113.7", xff="198.51.100.20").status_code == 403


def test_caller_keys_in_the_registered_url(env, clock, token: str) -> None:
    client = guarded_client(env, clock, VERIFIER_CALLER_KEYS=f"{KEY},{OLD_KEY}")
    assert verify(client, token, query=f"?key={KEY}").status_code == 200
    assert verify(client, token, query=f"?key={OLD_KEY}").status_code == 200
    for query in ("", "?key=", f"?key={KEY[:-1]}", f"?other={KEY}", "?key=" + "x" * 5000):
        response = verify(client, token, query=query)
        assert response.status_code == 403, query
        assert response.get_json()["errors"][0]["code"] == "caller_not_allowed"
        assert KEY not in response.get_data(as_text=True)


def test_the_allowlist_guards_the_verify_endpoint_only(env, clock) -> None:
    client = guarded_client(env, clock, VERIFIER_ALLOWED_CALLERS="198.51.100.0/24",
                            VERIFIER_CALLER_KEYS=KEY)
    assert client.get("/livez", environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code == 200
