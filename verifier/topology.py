"""Where the store is: the forms of VERIFIER_REDIS_URL (standalone, Sentinel, Cluster), parsed.

    redis://[user:password@]host[:6379][/db]           one server; rediss:// for TLS
    unix://[user:password@]/path/to/socket[?db=N]      one server on a unix socket
    redis+sentinel://[user:password@]host1[:26379],host2[:26379]/master-name[/db]
    redis+cluster://[user:password@]host1[:6379],host2[:6379]
    rediss+sentinel://, rediss+cluster://               the same over TLS

The user and password in the URL are those of the data nodes (the ACL user verifier runs as). The
Sentinel form is the one the Redis-Sentinel-Url package defined; the Cluster form lists seed
nodes, of which one reachable is enough.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


class Topology(enum.Enum):
    """How the store is deployed."""

    STANDALONE = "standalone"
    SENTINEL = "sentinel"
    CLUSTER = "cluster"


# scheme -> (topology, TLS, default port of the listed hosts)
SCHEMES: dict[str, tuple[Topology, bool, int]] = {
    "redis": (Topology.STANDALONE, False, 6379),
    "rediss": (Topology.STANDALONE, True, 6379),
    "unix": (Topology.STANDALONE, False, 0),
    "redis+sentinel": (Topology.SENTINEL, False, 26379),
    "rediss+sentinel": (Topology.SENTINEL, True, 26379),
    "redis+cluster": (Topology.CLUSTER, False, 6379),
    "rediss+cluster": (Topology.CLUSTER, True, 6379),
}


@dataclass(frozen=True)
class RedisTarget:
    """A parsed store URL. `nodes` are the sentinels or the cluster's seeds (empty standalone)."""

    topology: Topology
    tls: bool
    nodes: tuple[tuple[str, int], ...]
    service_name: str | None
    db: int
    username: str | None
    password: str | None


def parse_redis_url(url: str) -> RedisTarget:
    """Parse any form of VERIFIER_REDIS_URL; ValueError with a one-line reason when it is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError(f"must start with one of {', '.join(s + '://' for s in SCHEMES)}")
    topology, tls, default_port = SCHEMES[scheme.lower()]
    if topology is Topology.STANDALONE:
        return _standalone(url, scheme.lower(), tls)
    userinfo, at, hostpart = rest.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    hosts, _, path = hostpart.partition("/")
    if "?" in hostpart or "#" in hostpart:
        raise ValueError(f"a {scheme}:// URL takes no ?options; use the VERIFIER_REDIS_* settings")
    nodes = tuple(_node(item, default_port) for item in hosts.split(","))
    segments = [s for s in path.split("/") if s] if path else []
    if topology is Topology.SENTINEL:
        example = f"{scheme}://host1:26379,host2:26379/mymaster/0"
        if not segments or len(segments) > 2:
            raise ValueError(f"needs the master name after the sentinels, e.g. {example}")
        db = _db(segments[1]) if len(segments) == 2 else 0
        return RedisTarget(topology, tls, nodes, unquote(segments[0]), db, username, password)
    if segments and segments != ["0"]:
        raise ValueError("a Cluster has only database 0; give no /db, e.g. "
                         f"{scheme}://host1:7000,host2:7001")
    return RedisTarget(topology, tls, nodes, None, 0, username, password)


def _standalone(url: str, scheme: str, tls: bool) -> RedisTarget:
    parts = urlsplit(url)
    if scheme == "unix" and not parts.path:
        raise ValueError("a unix:// URL needs a socket path, e.g. unix:///run/redis.sock")
    if scheme != "unix" and not parts.hostname:
        raise ValueError("needs a host, e.g. redis://127.0.0.1:6379/0")
    if scheme != "unix" and "," in parts.netloc:
        raise ValueError("lists several hosts: use redis+sentinel:// or redis+cluster://")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("has a bad port; it must be 1-65535") from None
    db = _db(parts.path.strip("/")) if scheme != "unix" and parts.path.strip("/") else 0
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return RedisTarget(Topology.STANDALONE, tls, (), None, db, username, password)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    return unquote(user) or None, (unquote(password) or None) if colon else None


def _node(item: str, default_port: int) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [IPv6]:port
        host, bracket, port = item[1:].partition("]")
        port = port.removeprefix(":")
        if not bracket:
            raise ValueError(f"host {item!r} lacks its closing ']'")
    else:
        host, _, port = item.partition(":")
    if not host:
        raise ValueError(f"lists an empty host in {item!r}; write host1:port1,host2:port2")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"host {item!r} has a bad port; it must be 1-65535")
    return host, int(port)


def _db(raw: str) -> int:
    if not raw.isdigit():
        raise ValueError(f"the database must be a number, not {raw!r}")
    return int(raw)
