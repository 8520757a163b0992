"""One user's privacy budget under a race and under a crash, end to end.

Two `pgshroud serve` processes front the demo's `health` database and so share
its ledger (pgshroud.budget_ledger). Fifty clients, half on each process, send
private queries for one user at a fixed epsilon until each is refused with
53400. The ledger must hold exactly as many charges as fit in the user's cap,
and every answer a client received must have its own committed charge (its
notice reports what was left after its charge: all different, all on the
ledger's grid). Then kill -9 of one process under that load and a restart:
the ledger stays consistent (never an answer without its charge; a charge
whose answer died with the process is allowed), the restarted process serves,
and its charges continue from the committed total.

Each test uses a fresh user in the policy's aggregate role `analyst`, with the
role's and dataset's budgets set out of reach, so charges made elsewhere in the
suite to the shared `health` ledger do not matter. The answer cache is off
(`--answer-cache-seconds 0`): every answer is a new release and must be paid.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgshroud.policies.accounting import show_number
from tests.e2e.test_cli_serve import REPO, cli_env, free_port

HEALTHCARE = REPO / "policies" / "examples" / "healthcare.yaml"
QUERY = "SELECT count(*) FROM visits"
STEP = Decimal("0.1")  # SET pgshroud.epsilon, the cost of each answer
CLIENTS = 50
LEFT_NOW = re.compile(r"privacy cost: epsilon 0\.1, delta 0; left now: epsilon ([0-9.]+),")


# ------------------------------------------------------------------ pieces


class Serve:
    """`python -m pgshroud serve` on a fixed port (so that it can be restarted there)."""

    def __init__(self, port: int, upstream: str, policy: Path) -> None:
        self.port = port
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pgshroud.proxy.commands.cli", "--log-level", "info", "serve",
             "--listen", f"127.0.0.1:{port}", "--upstream", upstream, "--policy", str(policy),
             "--answer-cache-seconds", "0", "--drain-timeout", "5"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 30
        while not any("listening on" in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"pgshroud serve did not start:\n{self.stderr}")
            time.sleep(0.02)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._reader.join(5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(5)


@dataclass
class Tally:
    """What the clients saw, shared by their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: dict[int, int] = field(default_factory=dict)  # port -> answers received
    left: list[Decimal] = field(default_factory=list)  # each answer's "left now", from its notice
    exhausted: int = 0  # clients refused with 53400
    lost: int = 0  # connections that broke (the killed process)
    errors: list[str] = field(default_factory=list)  # anything else: a failure

    @property
    def total(self) -> int:
        return sum(self.answers.values())


def client_dsn(port: int, user: str) -> str:
    return make_conninfo(host="127.0.0.1", port=port, user=user, password="racer", dbname="health",
                         sslmode="disable", connect_timeout=10)


def connect(port: int, user: str, notices: list[str]) -> psycopg.Connection:
    conn = psycopg.connect(client_dsn(port, user), autocommit=True)
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    conn.execute(f"SET pgshroud.epsilon = {STEP}")
    return conn


def run_client(index: int, ports: list[int], user: str, tally: Tally, stop: threading.Event,
               start: threading.Barrier, reconnect: bool) -> None:
    """Send QUERY until refused with 53400 (or told to stop). With `reconnect`, a
    broken connection is counted as lost and the client tries the other process."""
    which = index % len(ports)
    notices: list[str] = []
    conn: psycopg.Connection | None = None
    try:
        # Connected before the race starts, so that a slow login on one process does not leave the whole budget
        # to the other's clients.
        conn = connect(ports[which], user, notices)
        start.wait(30)
        while not stop.is_set():
            port = ports[which]
            try:
                if conn is None:
                    conn = connect(port, user, notices)
                notices.clear()
                row = conn.execute(QUERY).fetchone()
                assert row is not None and isinstance(row[0], int)
                left = [Decimal(m.group(1)) for m in map(LEFT_NOW.search, notices) if m]
                with tally.lock:
                    tally.answers[port] = tally.answers.get(port, 0) + 1
                    if len(left) == 1:
                        tally.left.append(left[0])
                    else:
                        tally.errors.append(f"client {index}: an answer without one cost notice: {notices!r}")
            except psycopg.Error as exc:
                if exc.sqlstate == "53400":
                    with tally.lock:
                        tally.exhausted += 1
                    return
                if reconnect and isinstance(exc, psycopg.OperationalError):
                    with tally.lock:
                        tally.lost += 1
                    if conn is not None:
                        conn.close()
                    conn = None
                    which = (which + 1) % len(ports)
                    time.sleep(0.02)
                    continue
                with tally.lock:
                    tally.errors.append(f"client {index} on port {port}: {exc.sqlstate} {exc}")
                return
    except Exception as exc:  # noqa: BLE001 - reported by the test, not lost in a thread
        with tally.lock:
            tally.errors.append(f"client {index}: {type(exc).__name__}: {exc}")
    finally:
        if conn is not None:
            conn.close()


def hammer(ports: list[int], user: str, *, reconnect: bool = False,
           stop: threading.Event | None = None) -> tuple[Tally, list[threading.Thread]]:
    """Start CLIENTS threads, alternating between `ports`; returns at once."""
    tally, stop = Tally(), stop or threading.Event()
    start = threading.Barrier(CLIENTS)
    threads = [threading.Thread(target=run_client, args=(i, ports, user, tally, stop, start, reconnect),
                                daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    return tally, threads


def join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a client hung"


def charges(raw: str, user: str) -> tuple[int, Decimal]:
    with psycopg.connect(raw, autocommit=True) as conn:
        count, total = conn.execute(
            "SELECT count(*), coalesce(sum(epsilon), 0) FROM pgshroud.budget_ledger "
            "WHERE kind = 'charge' AND user_name = %s", [user]).fetchone()
    return count, total


def assert_lock_matches_ledger(raw: str, user: str) -> None:
    """The user's running total in pgshroud.budget_lock is the sum of the ledger's charges."""
    with psycopg.connect(raw, autocommit=True) as conn:
        spent = conn.execute("SELECT spent_epsilon FROM pgshroud.budget_lock WHERE scope = 'user' AND name = %s",
                             [user]).fetchone()
    assert spent is not None and spent[0] == charges(raw, user)[1]


def wait_for_quiet_upstream(raw: str, timeout: float = 15) -> None:
    """No backend of `health` is still working or inside a transaction: a charge begun by a
    killed process has been committed or rolled back by now, so the ledger will not change."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(raw, autocommit=True) as conn:
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = 'health' "
                           "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
                           "AND state IS DISTINCT FROM 'idle'").fetchone()[0]:
            assert time.monotonic() < deadline, "upstream backends still busy"
            time.sleep(0.05)


def assert_left_values_are_distinct_charges(left: list[Decimal], cap: Decimal) -> None:
    """Each answer's notice says what its own charge left: no two answers share a charge."""
    assert len(set(left)) == len(left), sorted(left)
    assert all(0 <= value < cap and (cap - value) % STEP == 0 for value in left), sorted(left)


@pytest.fixture
def racer(pg, health_db) -> str:
    """A new login that pgshroud puts in the aggregate role `analyst` (its SQL privileges come from analyst)."""
    user = f"racer_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE ROLE {user} LOGIN PASSWORD 'racer' IN ROLE analyst")
    return user


def write_policy(path: Path, user: str, cap: Decimal) -> Path:
    """healthcare.yaml with `user` an analyst whose own budget is the only one within reach."""
    text = HEALTHCARE.read_text()
    assert "    users: [analyst]\n" in text and "\nbudgets:\n" in text
    text = text.replace("    users: [analyst]\n", f"    users: [analyst, {user}]\n")
    text = text[: text.index("\nbudgets:\n")] + (
        "\nbudgets:\n"
        "  period: never\n"
        f"  per_user: {{epsilon: {cap}, delta: 1.0e-3}}\n"
        "  per_role:\n"
        "    analyst: {epsilon: 1000000, delta: 0.5}\n"
        "  per_dataset: {epsilon: 1000000, delta: 0.5}\n"
    )
    path.write_text(text)
    return path


@pytest.fixture
def launch(pg, health_db):
    """Start `pgshroud serve` processes on the `health` database; all are killed at the end."""
    started: list[Serve] = []
    upstream = make_conninfo(pg.dsn(dbname="health"), sslmode="disable")

    def start(policy: Path, port: int | None = None) -> Serve:
        process = Serve(port or free_port(), upstream, policy)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


# ------------------------------------------------------------------- tests


def test_fifty_clients_on_two_processes_spend_exactly_the_cap(tmp_path, launch, raw_health, racer):
    cap = Decimal("2.5")
    fits = int(cap / STEP)  # 25 answers
    policy = write_policy(tmp_path / "policy.yaml", racer, cap)
    first, second = launch(policy), launch(policy)

    tally, threads = hammer([first.port, second.port], racer)
    join(threads)

    assert tally.errors == [], tally.errors[:5]
    assert tally.exhausted == CLIENTS and tally.lost == 0
    count, total = charges(raw_health, racer)
    # Exactly the cap is spent, and not a charge more.
    assert (count, total) == (fits, cap)
    assert_lock_matches_ledger(raw_health, racer)
    # Every answer has its own committed charge; with nothing crashing, none was lost.
    assert tally.total == count, (tally.answers, count)
    assert_left_values_are_distinct_charges(tally.left, cap)
    assert sorted(tally.left) == [cap - STEP * k for k in range(fits, 0, -1)]
    # Both processes answered (each client stays on its process), so the race did cross processes.
    assert len(tally.answers) == 2 and all(tally.answers.values()), tally.answers
    print(f"\n{tally.total} answers ({tally.answers}) to {CLIENTS} clients; ledger: {count} charges, "
          f"epsilon {total} of {cap}")
    for process in (first, second):
        assert process.process.poll() is None, process.stderr
        assert "Traceback" not in process.stderr, process.stderr


def test_kill_9_under_load_then_restart_keeps_the_ledger_consistent(tmp_path, launch, raw_health, racer):
    cap = Decimal(20)
    fits = int(cap / STEP)  # 200 answers
    policy = write_policy(tmp_path / "policy.yaml", racer, cap)
    victim, survivor = launch(policy), launch(policy)
    ports = [victim.port, survivor.port]

    # Phase 1: both processes under load; kill -9 one of them while charges are being made.
    stop = threading.Event()
    tally, threads = hammer(ports, racer, reconnect=True, stop=stop)
    deadline = time.monotonic() + 60
    with psycopg.connect(raw_health, autocommit=True) as watch:
        while True:
            with tally.lock:
                on_victim = tally.answers.get(victim.port, 0)
            made = watch.execute("SELECT count(*) FROM pgshroud.budget_ledger WHERE kind = 'charge' "
                                 "AND user_name = %s", [racer]).fetchone()[0]
            if made >= 20 and on_victim:
                break
            assert time.monotonic() < deadline and not tally.errors, (tally.errors[:5], tally.answers)
            time.sleep(0.002)
    victim.kill9()
    time.sleep(0.3)  # the victim's clients find it gone and move to the survivor
    stop.set()
    join(threads)
    wait_for_quiet_upstream(raw_health)

    assert tally.errors == [], tally.errors[:5]
    assert tally.lost >= 1, "no client was connected to the killed process"
    after_crash, spent = charges(raw_health, racer)
    assert spent == STEP * after_crash and after_crash <= fits
    assert_lock_matches_ledger(raw_health, racer)
    # Never an answer without its charge; a charge whose answer died with the process may exist.
    assert tally.total <= after_crash, (tally.answers, after_crash)
    assert_left_values_are_distinct_charges(tally.left, cap)
    assert all(value >= cap - spent for value in tally.left)
    if after_crash == fits:
        pytest.fail("the whole budget went before the kill; nothing is left to test the restart with")

    # The restarted process (same port) reads the committed total and continues from it.
    restarted = launch(policy, port=victim.port)
    notices: list[str] = []
    with connect(restarted.port, racer, notices) as conn:
        show = conn.execute("SHOW pgshroud.budget").fetchone()[0]
        assert show.startswith(f"{show_number(cap - spent)} epsilon left now"), show
        notices.clear()
        conn.execute(QUERY).fetchone()
    [left] = [Decimal(m.group(1)) for m in map(LEFT_NOW.search, notices) if m]
    assert left == cap - spent - STEP
    assert charges(raw_health, racer) == (after_crash + 1, spent + STEP)

    # Phase 2: the restarted and the surviving process, to exhaustion.
    again, threads = hammer(ports, racer)
    join(threads)
    assert again.errors == [], again.errors[:5]
    assert again.exhausted == CLIENTS and again.lost == 0
    count, total = charges(raw_health, racer)
    assert (count, total) == (fits, cap)
    assert_lock_matches_ledger(raw_health, racer)
    # With no crash in phase 2, each of its answers is exactly one of its charges.
    assert again.total == fits - after_crash - 1, (again.answers, after_crash)
    assert_left_values_are_distinct_charges(again.left + [left], cap)
    assert sorted(again.left) == [cap - STEP * k for k in range(fits, after_crash + 1, -1)]
    # Over both phases: answers seen never exceed charges committed.
    assert tally.total + 1 + again.total <= count
    assert "Traceback" not in restarted.stderr + survivor.stderr, restarted.stderr + survivor.stderr
    def by_process(answers: dict[int, int]) -> str:
        return f"killed/restarted {answers.get(victim.port, 0)}, survivor {answers.get(survivor.port, 0)}"

    print(f"\nphase 1: {after_crash} charges committed, {tally.total} answers received "
          f"({by_process(tally.answers)}), {tally.lost} broken connections; phase 2: {again.total} answers "
          f"({by_process(again.answers)}); ledger: {count} charges, epsilon {total} of {cap}")
