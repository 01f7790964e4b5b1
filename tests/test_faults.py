"""The fault drill: a few clients verify good and bad tokens against the service under gunicorn
while the store is stopped, paused, put to sleep, frozen, killed and restarted, idle connections
are closed under it and a gunicorn worker is killed. Every answer is counted and the counts are
printed as a table (README quotes it):

    zero 200s for a bad token, zero 401s for a good one, zero 500s, no hang, and every good token
    verifies again within a few seconds of the store's return.

Also the store's idle-connection behaviour through the Flask app. Run alone with
`pytest -m faults`; leave out with `-m "not faults"`; FAULT_DRILL_STEPS=stopped,worker runs only
those steps of the drill (the word after `step_` in each step's name).
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import PROFILE, OwnValkey

from verifier import tokens
from verifier.app import build_services, create_app
from verifier.config import Settings

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

PATH = "/api/v1/mozarto/verify-user"
CLIENTS = 3
GOOD_SESSIONS = 12
PACE_SECONDS = 0.01  # each client's pause between requests: enough load, not a benchmark
HANG_SECONDS = 2.0  # an answer slower than this counts as a hang (the contract says < 1 s)
RECOVERY_BOUND_SECONDS = 3.0


@dataclass(frozen=True)
class Answer:
    """One request's outcome: status None means the connection dropped or it hung."""

    phase: str
    good: bool
    status: int | None
    ended: float
    seconds: float
    wrong_user: bool = False
    hung: bool = False


@dataclass
class Phase:
    """A step of the drill; `returned` is when the store answered again, if it went away."""

    name: str
    started: float
    returned: float | None = None
    drops_expected: bool = False
    probes: list[int] = field(default_factory=list)


class Load:
    """A few client threads verifying good and bad tokens in turn, and a readiness prober."""

    def __init__(self, base: str, good: dict[str, str], bad: list[str]) -> None:
        self.base = base
        self.good = list(good.items())
        self.bad = bad
        self.phase: Phase | None = None
        self.answers: list[Answer] = []
        self.idle = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True)
                         for i in range(CLIENTS)]
        self._threads.append(threading.Thread(target=self._prober, daemon=True))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        for good in itertools.cycle((True, False)):
            if self._stop.is_set():
                break
            if self.idle.is_set() or self.phase is None:
                time.sleep(0.01)
                continue
            phase = self.phase
            if good:
                user_id, token = rng.choice(self.good)
                body: dict[str, str] = {"userId": user_id}
            else:
                token, body = rng.choice(self.bad), {}
            started = time.monotonic()
            status: int | None = None
            wrong_user = hung = False
            try:
                response = session.post(self.base + PATH, json=body, timeout=HANG_SECONDS,
                                        headers={"Authorization": f"Bearer {token}"})
                status = response.status_code
                data = response.json().get("data") if status == 200 else None
                wrong_user = status == 200 and (not good or data["userId"] != body["userId"])
            except requests.Timeout:
                hung = True
                session.close()
                session = requests.Session()
            except requests.JSONDecodeError:  # a body that is not JSON: wrong in a 200
                wrong_user = status == 200
            except requests.RequestException:
                # A dropped or cut-off answer (a killed worker mid-response raises
                # ChunkedEncodingError, not ConnectionError): counted as dropped, never lost.
                status = None
                session.close()
                session = requests.Session()
            ended = time.monotonic()
            # An answer counts in the phase it ended in: one that started just before a fault
            # and was caught by it is that fault's.
            phase = self.phase or phase
            with self._lock:
                self.answers.append(Answer(phase.name, good, status, ended, ended - started,
                                           wrong_user, hung))
            time.sleep(PACE_SECONDS)
        session.close()

    def _prober(self) -> None:
        while not self._stop.is_set():
            phase = self.phase
            if phase is not None:
                try:
                    # A new connection each time, as a balancer's probe, so it reaches every worker.
                    phase.probes.append(requests.get(self.base + "/readyz", timeout=HANG_SECONDS,
                                                     headers={"Connection": "close"}).status_code)
                except requests.RequestException:
                    phase.probes.append(0)
            time.sleep(0.05)


@dataclass(frozen=True)
class Row:
    """The counts of one phase."""

    phase: str
    good_200: int
    good_401: int
    good_503: int
    bad_200: int
    bad_401: int
    bad_503: int
    errors_5xx: int
    other: int
    dropped: int
    hung: int
    wrong_user: int
    max_ms: float
    recovery_s: float | None
    ready_200: int
    ready_503: int

    HEADER = ("phase", "good 200", "good 401", "good 503", "bad 200", "bad 401", "bad 503",
              "5xx not 503", "other", "dropped", "hung", "wrong user", "max ms", "recovered in s",
              "readyz 200", "readyz 503")

    def cells(self) -> tuple[str, ...]:
        recovery = "-" if self.recovery_s is None else f"{self.recovery_s:.2f}"
        values = (self.good_200, self.good_401, self.good_503, self.bad_200, self.bad_401,
                  self.bad_503, self.errors_5xx, self.other, self.dropped, self.hung,
                  self.wrong_user, f"{self.max_ms:.0f}", recovery, self.ready_200, self.ready_503)
        return (self.phase, *(str(v) for v in values))


def count(phase: Phase, answers: list[Answer]) -> Row:
    mine = [a for a in answers if a.phase == phase.name]
    good = [a for a in mine if a.good]
    bad = [a for a in mine if not a.good]
    recovery = None
    if phase.returned is not None:
        after = [a for a in good if a.ended > phase.returned]
        failing = [a.ended for a in after if a.status != 200]
        recovery = max(0.0, max(failing, default=phase.returned) - phase.returned)
    known = {200, 401, 503}
    return Row(
        phase.name,
        sum(a.status == 200 for a in good), sum(a.status == 401 for a in good),
        sum(a.status == 503 for a in good),
        sum(a.status == 200 for a in bad), sum(a.status == 401 for a in bad),
        sum(a.status == 503 for a in bad),
        sum(a.status is not None and a.status >= 500 and a.status != 503 for a in mine),
        sum(a.status is not None and a.status not in known and a.status < 500 for a in mine),
        sum(a.status is None and not a.hung for a in mine), sum(a.hung for a in mine),
        sum(a.wrong_user for a in mine), max((a.seconds for a in mine), default=0.0) * 1000,
        recovery, phase.probes.count(200), phase.probes.count(503),
    )


def table(rows: list[Row]) -> str:
    cells = [Row.HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(Row.HEADER))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
             for line in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def worker_pids(master_pid: int) -> list[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text()
    return [int(pid) for pid in children.split()]


@dataclass
class Drill:
    """What a step of the drill acts on."""

    load: Load
    store: OwnValkey
    master_pid: int
    phase: Phase

    def store_back(self) -> None:
        self.phase.returned = time.monotonic()


def step_steady(drill: Drill) -> None:
    """steady"""
    time.sleep(1.0)


def step_stopped(drill: Drill) -> None:
    """store stopped 1.5 s, restarted"""
    drill.store.stop()
    time.sleep(1.5)
    drill.store.start()
    drill.store_back()
    time.sleep(2.5)


def step_paused(drill: Drill) -> None:
    """CLIENT PAUSE ALL 1 s"""
    with drill.store.admin() as admin:
        admin.execute_command("CLIENT", "PAUSE", "1000", "ALL")
    time.sleep(1.0)
    drill.store_back()
    time.sleep(2.0)


def step_sleeping(drill: Drill) -> None:
    """DEBUG SLEEP 1 s"""
    with drill.store.admin() as admin:
        admin.execute_command("DEBUG", "SLEEP", "1")
    drill.store_back()
    time.sleep(2.0)


def step_frozen(drill: Drill) -> None:
    """store frozen (SIGSTOP) 1 s"""
    drill.store.freeze()
    time.sleep(1.0)
    drill.store.thaw()
    drill.store_back()
    time.sleep(2.0)


def step_killed(drill: Drill) -> None:
    """store killed (SIGKILL), restarted"""
    drill.store.kill()
    time.sleep(1.0)
    drill.store.start()
    drill.store_back()
    time.sleep(2.5)


def step_idle(drill: Drill) -> None:
    """idle connections closed by the store"""
    drill.load.idle.set()
    time.sleep(1.5)  # the store's `timeout 1` closes every pooled connection
    with drill.store.admin() as admin:
        admin.client_kill_filter(_type="normal", skipme=True)
    drill.load.idle.clear()
    time.sleep(1.5)


def step_worker_killed(drill: Drill) -> None:
    """gunicorn worker killed (SIGKILL)"""
    os.kill(worker_pids(drill.master_pid)[0], signal.SIGKILL)
    time.sleep(3.0)


STEPS = (step_steady, step_stopped, step_paused, step_sleeping, step_frozen, step_killed,
         step_idle, step_worker_killed)


@pytest.fixture
def drill_store(tmp_path: Path) -> Iterator[OwnValkey]:
    """The drill's own store; it also closes connections idle for over a second, as servers with
    `timeout` set do."""
    server = OwnValkey(tmp_path / "drill-valkey", timeout="1", appendfsync="everysec")
    server.start()
    yield server
    server.close()


def test_fault_drill(gunicorn: Callable[..., object], drill_store: OwnValkey, settings: Settings,
                     capsys: pytest.CaptureFixture[str]) -> None:
    store_settings = settings.with_overrides(redis_url=drill_store.url)
    services = build_services(store_settings)
    good = {f"u-{i}": services.sessions.create_session({**PROFILE, "userId": f"u-{i}"}).token
            for i in range(GOOD_SESSIONS)}
    revoked = services.sessions.create_session(PROFILE).token
    services.sessions.revoke_session(revoked)
    # Redis.close() leaves open a connection pool it was handed: disconnect the pool itself.
    services.store.client.connection_pool.disconnect()  # type: ignore[attr-defined]
    bad = [revoked, tokens.mint_token("u-1"), tokens.mint_token("nobody"),
           "platform-jwt." + "q" * 40, "not-a-session"]

    # The drill's bad tokens all come from one address: no failure limit, so each answers 401.
    server = gunicorn({"VERIFIER_REDIS_URL": drill_store.url,
                       "VERIFIER_KEY_PREFIX": store_settings.key_prefix,
                       "VERIFIER_FAILED_VERIFY_LIMIT": "0"})
    base: str = server.url  # type: ignore[attr-defined]
    master: int = server.process.pid  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while requests.get(base + "/readyz", timeout=2).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    only = os.environ.get("FAULT_DRILL_STEPS")  # e.g. "idle,worker" while investigating
    steps = [step for step in STEPS if not only or step.__name__.split("_")[1] in only.split(",")]
    phases: list[Phase] = []
    with Load(base, good, bad) as load:
        for step in steps:
            phase = Phase(step.__doc__ or step.__name__, time.monotonic(),
                          drops_expected=step is step_worker_killed)
            phases.append(phase)
            load.phase = phase
            step(Drill(load, drill_store, master, phase))
        load.phase = None

    rows = [count(phase, load.answers) for phase in phases]
    with capsys.disabled():
        print(f"\n\nFault drill: {CLIENTS} clients, gunicorn 2 workers x 8 threads, "
              f"{len(load.answers)} answers\n\n{table(rows)}\n")


    for phase, row in zip(phases, rows, strict=True):
        assert row.good_200 > 0, f"{phase.name}: no good token verified"
        assert row.bad_200 == 0 and row.wrong_user == 0, f"{phase.name}: a wrong 200"
        assert row.good_401 == 0, f"{phase.name}: a good token was refused"
        assert row.errors_5xx == 0 and row.other == 0, f"{phase.name}: unexpected statuses"
        assert row.hung == 0, f"{phase.name}: an answer took over {HANG_SECONDS} s"
        if not phase.drops_expected:
            assert row.dropped == 0, f"{phase.name}: connections dropped"
        if phase.returned is not None:
            assert row.recovery_s is not None and row.recovery_s < RECOVERY_BOUND_SECONDS, phase.name
        if phase.name.startswith(("steady", "idle", "gunicorn")):
            assert row.good_503 == 0 and row.bad_503 == 0, f"{phase.name}: 503 with the store up"
    for phase in phases:
        if phase.name.startswith(("store stopped", "store killed")):
            assert 503 in phase.probes, f"{phase.name}: readiness never turned 503"
            assert phase.probes[-3:] == [200] * 3, f"{phase.name}: readiness did not come back"


@pytest.fixture
def verify_on_own_valkey(settings: Settings,
                         own_valkey: OwnValkey) -> Iterator[Callable[[], Any]]:
    """Verify one live session, through the app, on a store the test can stop and kill."""
    app = create_app(settings.with_overrides(redis_url=own_valkey.url))
    client = app.test_client()
    token = app.extensions["verifier"].sessions.create_session(PROFILE).token
    headers = {"Authorization": f"Bearer {token}"}
    yield lambda: client.post(PATH, headers=headers)
    app.extensions["verifier"].store.close()


def test_an_idle_connection_the_store_closed_costs_no_503(
        own_valkey: OwnValkey, verify_on_own_valkey: Callable[[], Any]) -> None:
    assert verify_on_own_valkey().status_code == 200
    for _ in range(3):
        with own_valkey.admin() as admin:
            assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        assert verify_on_own_valkey().status_code == 200


def test_a_store_restart_mid_traffic_costs_503s_only_while_it_is_down(
        own_valkey: OwnValkey, verify_on_own_valkey: Callable[[], Any]) -> None:
    assert verify_on_own_valkey().status_code == 200
    own_valkey.stop()
    down = verify_on_own_valkey()
    assert down.status_code == 503 and down.get_json()["errors"][0]["code"] == "unavailable"
    own_valkey.start()
    assert verify_on_own_valkey().status_code == 200, "the session survived"
