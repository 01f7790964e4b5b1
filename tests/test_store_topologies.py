"""What only some topologies have: mutual TLS (standalone, Sentinel, Cluster) and ACL, WAIT for
replicas, Sentinel and Cluster clients that cannot reach anything, and a Cluster slot that moves."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from conftest import PROFILE, free_port
from redis_topologies import (
    ACL_PASSWORD,
    ACL_USER,
    Cluster,
    SentinelGroup,
    SilentServer,
    Tls,
    TlsServer,
    primary_has_replica,
    wait_until,
)

from verifier import tokens
from verifier.app import build_services, create_app
from verifier.config import Settings, load_settings
from verifier.errors import StoreUnavailable, TokenConflict
from verifier.store import NewSession, Outcome, RedisSessionStore, SessionRef, connect

NOW = int(time.time() * 1000)
# NOW is fixed at import: an hour of grace keeps these keys alive however long the suite runs first.
GRACE_MS = 3_600_000


_opened: list[RedisSessionStore] = []


def store_for(settings: Settings) -> RedisSessionStore:
    store = RedisSessionStore(connect(settings), settings.key_prefix, GRACE_MS,
                              wait_replicas=settings.redis_wait_replicas,
                              wait_timeout_ms=settings.redis_wait_timeout_ms)
    _opened.append(store)
    return store


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    """Close every client a test opened, so that no socket is left to the garbage collector."""
    yield
    while _opened:
        _opened.pop().client.close()


def new_session(token: str | None = None, user_id: str = "u-1") -> NewSession:
    token = token or tokens.mint_token(user_id)
    ref = SessionRef(tokens.token_hash(token), tokens.minted_tag(token))
    return NewSession(ref, user_id, tokens.routing_tag(user_id), NOW, NOW + 3_600_000, 0,
                      registered=ref.tag is None)


def tls_env(server: TlsServer, **changes: str) -> dict[str, str]:
    return {"VERIFIER_REDIS_URL": server.url, **server.tls.env(),
            "VERIFIER_REDIS_USERNAME": ACL_USER, "VERIFIER_REDIS_PASSWORD": ACL_PASSWORD, **changes}


def test_mutual_tls_with_an_acl_user_of_the_least_rights(tls_server: TlsServer,
                                                         env: dict[str, str]) -> None:
    manager = build_services(load_settings({**env, **tls_env(tls_server)})).sessions
    token = manager.create_session(PROFILE).token
    registered = manager.register_session("platform-session-" + "t" * 30, PROFILE).token
    assert manager.verify_session(token) == PROFILE == manager.verify_session(registered)
    manager.set_blocked("u-1")
    assert manager.get_user("u-1").blocked
    assert len(manager.list_sessions("u-1")) == 2
    assert manager.revoke_user_sessions("u-1") == 2


def test_acl_credentials_in_the_url(tls_server: TlsServer) -> None:
    url = f"rediss://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{tls_server.server.port}/0"
    env = tls_env(tls_server, VERIFIER_REDIS_URL=url)
    del env["VERIFIER_REDIS_USERNAME"], env["VERIFIER_REDIS_PASSWORD"]
    store_for(load_settings(env)).ping()


@pytest.mark.parametrize("topology", ["tls_sentinel_group", "tls_cluster"])
def test_sentinel_and_cluster_over_mutual_tls(request: pytest.FixtureRequest, topology: str,
                                              tls: Tls, env: dict[str, str]) -> None:
    group: SentinelGroup | Cluster = request.getfixturevalue(topology)
    settings = load_settings({**env, "VERIFIER_REDIS_URL": group.url, **tls.env(),
                              "VERIFIER_REDIS_WAIT_REPLICAS": str(int(topology == "tls_sentinel_group"))})
    store = store_for(settings)
    store.ping()
    session = new_session()
    store.create(session, PROFILE)
    assert store.verify(session.ref, NOW + 1, None).profile == PROFILE
    without_certificate = {**tls.env(), "VERIFIER_REDIS_TLS_CERT_FILE": "",
                           "VERIFIER_REDIS_TLS_KEY_FILE": ""}
    with pytest.raises(StoreUnavailable):
        store_for(load_settings({**env, "VERIFIER_REDIS_URL": group.url,
                                 **without_certificate})).verify(session.ref, NOW, None)


@pytest.mark.parametrize("change", [
    {"VERIFIER_REDIS_PASSWORD": "wrong"},
    {"VERIFIER_REDIS_USERNAME": "default"},
    {"VERIFIER_REDIS_TLS_CERT_FILE": "", "VERIFIER_REDIS_TLS_KEY_FILE": ""},  # no client cert
    {"VERIFIER_REDIS_TLS_CA_FILE": ""},  # the server's certificate cannot be verified
])
def test_refused_tls_or_acl_is_store_unavailable(tls_server: TlsServer, change: dict[str, str]) -> None:
    store = store_for(load_settings(tls_env(tls_server, **change)))
    with pytest.raises(StoreUnavailable):
        store.ping()
    with pytest.raises(StoreUnavailable):
        store.verify(new_session().ref, NOW, None)


def test_with_wait_a_created_session_is_on_the_replica_when_create_returns(
        sentinel_group: SentinelGroup, env: dict[str, str]) -> None:
    settings = load_settings({**env, "VERIFIER_REDIS_URL": sentinel_group.url,
                              "VERIFIER_REDIS_WAIT_REPLICAS": "1"})
    store = store_for(settings)
    replica_port = next(s.port for s in sentinel_group.data_nodes()
                        if s.port != sentinel_group.master_port())
    with redis.Redis(port=replica_port) as replica:
        for token in (None, "platform-session-" + "r" * 30):
            session = new_session(token)
            store.create(session, PROFILE)
            key = store.session_key(session.tag, session.ref.token_hash)
            assert replica.exists(key) == 1
            if session.registered:
                assert replica.get(store.alias_key(session.ref.token_hash)) == session.tag.encode()


def test_a_planned_sentinel_failover_is_followed_at_the_next_request(
        fresh_sentinel_group: SentinelGroup, env: dict[str, str]) -> None:
    group = fresh_sentinel_group
    store = store_for(load_settings({**env, "VERIFIER_REDIS_URL": group.url,
                                     "VERIFIER_REDIS_WAIT_REPLICAS": "1"}))
    session = new_session()
    store.create(session, PROFILE)
    assert store.verify(session.ref, NOW + 1, None).outcome is Outcome.VERIFIED
    old_port = group.master_port()
    with group.sentinels[0].client() as sentinel:
        sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster")
    wait_until(lambda: group.master_port() != old_port, 30, "the new primary")
    wait_until(lambda: primary_has_replica(group), 30, "the old primary to follow it")
    # The pool's connections still lead to the old primary, now a replica: a write there is
    # refused (READONLY), which must send the client to the new primary, not answer 503.
    result = store.verify(session.ref, NOW + 2, None)
    assert result.outcome is Outcome.VERIFIED
    store.create(new_session(), PROFILE)
    [listed] = [s for s in store.list_sessions("u-1", session.tag, NOW + 3)
                if session.ref.token_hash.startswith(s.session_id)]
    assert listed.last_verified_ms == NOW + 2


def test_a_connection_to_a_demoted_primary_finds_the_new_one_at_its_retry(
        fresh_sentinel_group: SentinelGroup, env: dict[str, str]) -> None:
    group = fresh_sentinel_group
    store = store_for(load_settings({**env, "VERIFIER_REDIS_URL": group.url}))
    session = new_session()
    store.create(session, PROFILE)
    assert store.verify(session.ref, NOW + 1, None).outcome is Outcome.VERIFIED
    # Swap the roles behind the pool's back: the sentinels now name the replica, and the old
    # primary follows it without closing its clients (a Sentinel failover would close them).
    for sentinel in group.sentinels:
        with sentinel.client() as client:
            client.execute_command("SENTINEL", "REMOVE", "mymaster")
    with group.replica.client() as client:
        client.execute_command("REPLICAOF", "NO", "ONE")
    for sentinel in group.sentinels:
        with sentinel.client() as client:
            client.execute_command("SENTINEL", "MONITOR", "mymaster", "127.0.0.1",
                                   group.replica.port, 2)
    with group.primary.client() as client:
        client.execute_command("REPLICAOF", "127.0.0.1", group.replica.port)
    # The pooled connection meets READONLY; its one retry must ask the sentinels, not redial
    # the old address (which would answer READONLY again, request after request).
    for offset in (2, 3):
        assert store.verify(session.ref, NOW + offset, None).outcome is Outcome.VERIFIED


@pytest.fixture(params=["standalone", "cluster"])
def replica_less_env(request: pytest.FixtureRequest, env: dict[str, str]) -> dict[str, str]:
    """A store with no replica at all, so that every WAIT for one times out."""
    if request.param == "cluster":
        cluster: Cluster = request.getfixturevalue("valkey_cluster")
        env = {**env, "VERIFIER_REDIS_URL": cluster.url}
    return {**env, "VERIFIER_REDIS_WAIT_REPLICAS": "1", "VERIFIER_REDIS_WAIT_TIMEOUT_MS": "20"}


@pytest.mark.parametrize("token", [None, "platform-session-" + "w" * 30])
def test_when_no_replica_confirms_creation_fails_and_leaves_nothing(
        replica_less_env: dict[str, str], token: str | None) -> None:
    settings = load_settings(replica_less_env)
    store = store_for(settings)
    session = new_session(token)
    with pytest.raises(StoreUnavailable, match=r"WAIT: 0 of 1 replicas .* it was deleted"):
        store.create(session, PROFILE)
    assert store.verify(session.ref, NOW, None).outcome is Outcome.UNKNOWN
    assert store.list_sessions("u-1", session.tag, NOW) == []
    # So a retried registration of the same token is not refused as token_exists.
    relaxed = store_for(settings.with_overrides(redis_wait_replicas=0))
    relaxed.create(session, PROFILE)
    with pytest.raises(TokenConflict):
        relaxed.create(session, PROFILE)


def test_a_conflict_under_wait_is_still_a_conflict_and_keeps_the_owner(
        replica_less_env: dict[str, str]) -> None:
    settings = load_settings(replica_less_env)
    owner = new_session("platform-session-" + "o" * 30)
    store_for(settings.with_overrides(redis_wait_replicas=0)).create(owner, PROFILE)
    with pytest.raises(TokenConflict):
        store_for(settings).create(new_session("platform-session-" + "o" * 30, "u-2"), PROFILE)
    assert store_for(settings).verify(owner.ref, NOW, None).profile == PROFILE


@pytest.mark.parametrize("url", [
    lambda: f"redis+sentinel://127.0.0.1:{free_port()},127.0.0.1:{free_port()}/mymaster/0",
    lambda: f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}",
], ids=["sentinel", "cluster"])
def test_nothing_reachable_is_store_unavailable_and_the_app_still_starts(
        env: dict[str, str], url: Callable[[], str]) -> None:
    settings = load_settings({**env, "VERIFIER_REDIS_URL": url()})
    store = store_for(settings)
    session = new_session()
    for call in (store.ping, lambda: store.verify(session.ref, NOW, None),
                 lambda: store.create(session, PROFILE), lambda: store.revoke(session.ref)):
        with pytest.raises(StoreUnavailable):
            call()
    client = create_app(settings).test_client()
    assert client.get("/readyz").status_code == 503
    token = tokens.mint_token("u-1")
    response = client.post("/api/v1/mozarto/verify-user", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503
    assert response.get_json()["errors"][0]["code"] == "unavailable"


def test_hung_sentinels_are_asked_once_per_request(
        env: dict[str, str], silent_servers: Callable[[], SilentServer]) -> None:
    sentinels = [silent_servers() for _ in range(2)]
    url = "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in sentinels) + "/mymaster/0"
    store = store_for(load_settings({**env, "VERIFIER_REDIS_URL": url}))
    with pytest.raises(StoreUnavailable, match="MasterNotFoundError"):
        store.verify(new_session().ref, NOW, None)
    # Each question to a hung sentinel costs a timeout: asking twice would pass a second.
    wait_until(lambda: sum(len(s.accepted) for s in sentinels) >= 2, 5, "the connections")
    assert [len(s.accepted) for s in sentinels] == [1, 1]


def test_requests_waiting_for_a_hung_cluster_share_one_attempt_to_reach_it(
        env: dict[str, str], silent_servers: Callable[[], SilentServer]) -> None:
    seed = silent_servers()
    store = store_for(load_settings({**env, "VERIFIER_REDIS_URL": f"redis+cluster://127.0.0.1:{seed.port}"}))
    requests = 6
    start = threading.Barrier(requests)
    failures: list[Exception] = []

    def verify() -> None:
        start.wait()
        try:
            store.verify(new_session().ref, NOW, None)
        except StoreUnavailable as exc:
            failures.append(exc)

    threads = [threading.Thread(target=verify) for _ in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(failures) == requests
    # One by one, each would wait for the seed's timeout after all the others before it.
    assert len(seed.accepted) <= 2


def test_sentinel_without_the_named_master_is_store_unavailable(
        sentinel_group: SentinelGroup, env: dict[str, str]) -> None:
    url = sentinel_group.url.replace("/mymaster/", "/no-such-master/")
    store = store_for(load_settings({**env, "VERIFIER_REDIS_URL": url}))
    with pytest.raises(StoreUnavailable, match="MasterNotFoundError"):
        store.verify(new_session().ref, NOW, None)


def test_cluster_follows_a_slot_that_moved_to_another_node(
        valkey_cluster: Cluster, env: dict[str, str]) -> None:
    store = store_for(load_settings({**env, "VERIFIER_REDIS_URL": valkey_cluster.url}))
    session = new_session()
    store.create(session, PROFILE)
    store.verify(session.ref, NOW + 1, None)  # the client now knows where the slot is
    inspector = valkey_cluster.client()
    key = store.session_key(session.tag, session.ref.token_hash)
    slot = inspector.keyslot(key)
    source = inspector.get_node_from_key(key)
    target = next(n for n in inspector.get_primaries() if n.name != source.name)
    move_slot(inspector, slot, source, target)
    try:
        result = store.verify(session.ref, NOW + 2, None)
        assert result.outcome is Outcome.VERIFIED and result.profile == PROFILE
        assert store.list_sessions("u-1", session.tag, NOW + 3)[0].last_verified_ms == NOW + 2
    finally:
        move_slot(inspector, slot, target, source)
        inspector.close()


def move_slot(cluster: redis.RedisCluster, slot: int, source: redis.cluster.ClusterNode,
              target: redis.cluster.ClusterNode) -> None:
    """Reshard one slot with its keys, as redis-cli --cluster reshard would."""
    src = cluster.get_redis_connection(source)
    dst = cluster.get_redis_connection(target)
    src_id, dst_id = (node.execute_command("CLUSTER", "MYID").decode() for node in (src, dst))
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
    for node in cluster.get_primaries():
        cluster.get_redis_connection(node).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
