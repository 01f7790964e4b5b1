"""VERIFIER_REDIS_URL's forms (standalone, Sentinel, Cluster) and the TLS, ACL and WAIT settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from verifier.config import load_settings
from verifier.errors import ConfigError
from verifier.topology import RedisTarget, Topology, parse_redis_url


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://h:6379/2", RedisTarget(Topology.STANDALONE, False, (), None, 2, None, None)),
    ("rediss://u:p%40ss@h/0", RedisTarget(Topology.STANDALONE, True, (), None, 0, "u", "p@ss")),
    ("unix:///run/redis.sock", RedisTarget(Topology.STANDALONE, False, (), None, 0, None, None)),
    ("redis+sentinel://s1:26379,s2:26380,s3/mymaster/3",
     RedisTarget(Topology.SENTINEL, False, (("s1", 26379), ("s2", 26380), ("s3", 26379)),
                 "mymaster", 3, None, None)),
    ("rediss+sentinel://app:pw@s1/primary",
     RedisTarget(Topology.SENTINEL, True, (("s1", 26379),), "primary", 0, "app", "pw")),
    ("redis+cluster://n1:7000,n2:7001",
     RedisTarget(Topology.CLUSTER, False, (("n1", 7000), ("n2", 7001)), None, 0, None, None)),
    ("rediss+cluster://:only-password@[::1]:7000,n2/",
     RedisTarget(Topology.CLUSTER, True, (("::1", 7000), ("n2", 6379)), None, 0, None,
                 "only-password")),
])
def test_url_forms(url: str, expected: RedisTarget) -> None:
    assert parse_redis_url(url) == expected
    assert load_settings({"VERIFIER_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(("url", "reason"), [
    ("http://h", "must start with one of redis://, rediss://, unix://, redis+sentinel://"),
    ("sentinel://h/m", "must start with one of"),
    ("redis+sentinel://s1:26379,s2:26379", "needs the master name after the sentinels, e.g. "
                                           "redis+sentinel://host1:26379,host2:26379/mymaster/0"),
    ("redis+sentinel://s1/m/0/extra", "needs the master name"),
    ("redis+sentinel://s1/m/zero", "the database must be a number, not 'zero'"),
    ("redis+sentinel://s1:0/m", "host 's1:0' has a bad port; it must be 1-65535"),
    ("redis+sentinel://s1:x/m", "host 's1:x' has a bad port"),
    ("redis+sentinel://s1,,s2/m", "lists an empty host"),
    ("redis+cluster://n1:7000/1", "a Cluster has only database 0"),
    ("redis+cluster://n1:7000?ssl=true", "takes no ?options; use the VERIFIER_REDIS_* settings"),
    ("redis://h1:6379,h2:6379/0", "lists several hosts: use redis+sentinel:// or redis+cluster://"),
    ("redis://h:99999/0", "has a bad port"),
    ("redis:///0", "needs a host"),
    ("unix://", "needs a socket path"),
])
def test_bad_urls_are_refused_with_one_line_naming_the_variable(url: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"VERIFIER_REDIS_URL": url})
    [problem] = info.value.problems
    assert problem.startswith(f"VERIFIER_REDIS_URL={url!r}: ") and reason in problem
    assert "\n" not in problem


def _pem_files(tmp_path: Path) -> dict[str, str]:
    files = {}
    for name in ("ca", "cert", "key"):
        path = tmp_path / f"{name}.pem"
        path.write_text("not checked here: the TLS handshake is tested against a server\n")
        files[f"VERIFIER_REDIS_TLS_{name.upper()}_FILE"] = str(path)
    return files


def test_mutual_tls_settings(tmp_path: Path) -> None:
    settings = load_settings({"VERIFIER_REDIS_URL": "rediss+cluster://n1:7000", **_pem_files(tmp_path)})
    assert settings.redis_tls_ca_file == tmp_path / "ca.pem"
    assert settings.redis_tls_cert_file == tmp_path / "cert.pem"
    assert settings.redis_tls_key_file == tmp_path / "key.pem"


def test_tls_files_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"VERIFIER_REDIS_URL": "rediss://h/0",
                       "VERIFIER_REDIS_TLS_CA_FILE": str(tmp_path / "missing.pem")})
    assert info.value.problems == [f"VERIFIER_REDIS_TLS_CA_FILE={str(tmp_path / 'missing.pem')!r}: "
                                   "no such file"]


def test_tls_files_need_a_tls_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="VERIFIER_REDIS_TLS_CA_FILE, VERIFIER_REDIS_TLS_CERT_FILE, "
                       "VERIFIER_REDIS_TLS_KEY_FILE: set, but VERIFIER_REDIS_URL is not a rediss"):
        load_settings({"VERIFIER_REDIS_URL": "redis://h/0", **_pem_files(tmp_path)})


def test_client_certificate_needs_its_key(tmp_path: Path) -> None:
    files = _pem_files(tmp_path)
    del files["VERIFIER_REDIS_TLS_KEY_FILE"]
    with pytest.raises(ConfigError, match="give both"):
        load_settings({"VERIFIER_REDIS_URL": "rediss://h/0", **files})


def test_acl_credentials_from_settings_or_url_but_not_both() -> None:
    settings = load_settings({"VERIFIER_REDIS_URL": "redis://h/0", "VERIFIER_REDIS_USERNAME": "app",
                              "VERIFIER_REDIS_PASSWORD": "pw"})
    assert (settings.redis_username, settings.redis_password) == ("app", "pw")
    with pytest.raises(ConfigError) as info:
        load_settings({"VERIFIER_REDIS_URL": "redis://app:pw@h/0",
                       "VERIFIER_REDIS_USERNAME": "app", "VERIFIER_REDIS_PASSWORD": "pw"})
    assert info.value.problems == [
        "VERIFIER_REDIS_USERNAME: the URL has a username too; give it in one place only",
        "VERIFIER_REDIS_PASSWORD: the URL has a password too; give it in one place only"]


def test_sentinel_credentials_only_with_a_sentinel_url() -> None:
    sentinel = load_settings({"VERIFIER_REDIS_URL": "redis+sentinel://s1/m",
                              "VERIFIER_REDIS_SENTINEL_PASSWORD": "spw"})
    assert sentinel.redis_sentinel_password == "spw"
    with pytest.raises(ConfigError, match="VERIFIER_REDIS_SENTINEL_PASSWORD: set, but"):
        load_settings({"VERIFIER_REDIS_URL": "redis://h/0", "VERIFIER_REDIS_SENTINEL_PASSWORD": "x"})


def test_passwords_are_masked_in_every_form() -> None:
    masked = load_settings({
        "VERIFIER_REDIS_URL": "redis+sentinel://app:url-secret@s1,s2/m",
        "VERIFIER_REDIS_SENTINEL_PASSWORD": "sentinel-secret",
    }).masked()
    assert masked["VERIFIER_REDIS_URL"] == "redis+sentinel://app:***@s1,s2/m"
    assert masked["VERIFIER_REDIS_SENTINEL_PASSWORD"] == "***"
    masked = load_settings({"VERIFIER_REDIS_URL": "redis+cluster://n1",
                            "VERIFIER_REDIS_PASSWORD": "data-secret"}).masked()
    assert masked["VERIFIER_REDIS_PASSWORD"] == "***"
    assert "secret" not in repr(masked)


def test_wait_is_off_by_default_and_its_timeout_is_bounded() -> None:
    assert load_settings({}).redis_wait_replicas == 0
    on = load_settings({"VERIFIER_REDIS_URL": "redis+sentinel://s1/m",
                        "VERIFIER_REDIS_WAIT_REPLICAS": "1", "VERIFIER_REDIS_WAIT_TIMEOUT_MS": "50"})
    assert (on.redis_wait_replicas, on.redis_wait_timeout_ms) == (1, 50)
    with pytest.raises(ConfigError, match="VERIFIER_REDIS_WAIT_TIMEOUT_MS: must be under "
                                          "VERIFIER_REDIS_TIMEOUT_MS \\(250\\)"):
        load_settings({"VERIFIER_REDIS_URL": "redis://h/0", "VERIFIER_REDIS_WAIT_REPLICAS": "1",
                       "VERIFIER_REDIS_WAIT_TIMEOUT_MS": "250"})
    with pytest.raises(ConfigError, match="the embedded Valkey has no replicas"):
        load_settings({"VERIFIER_REDIS_WAIT_REPLICAS": "1"})
