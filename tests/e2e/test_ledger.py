"""The privacy budget ledger (proxy/budget/ledger.py) against a real PostgreSQL.

Each test gets a fresh database set up by `pgshroud setup`, so the dataset's
budget starts at zero. Charges add up exactly in numeric; an exhausted
budget refuses with 53400 and says what is left, what the query costs and
whether budget returns; per-user, per-role and per-dataset caps all apply;
concurrent charges from two ledgers (two pools, as two pgshroud processes
would have) never overspend, nor do processes killed with SIGKILL while
charging; a charge is committed when charge() returns; an unreachable or
missing ledger raises, so that the session refuses; `pgshroud serve` will
not start with an aggregate role and no ledger tables.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgshroud.policies.accounting import exact, has_aggregate_role, period_window, show_number
from pgshroud.policies.model import Access, Budgets, EpsilonDelta, Policy, Role
from pgshroud.policies.setup_sql import MASKED_ROLE
from pgshroud.proxy.budget.ledger import SHARED_ACCOUNT, PostgresLedger
from pgshroud.proxy.commands.setup import run_setup
from pgshroud.proxy.ops.config import ConfigError
from pgshroud.rewriter.plans import Cost, Refuse

REPO = Path(__file__).resolve().parents[2]
HEALTHCARE = REPO / "policies" / "examples" / "healthcare.yaml"


def make_policy(*, per_user: EpsilonDelta | None = None, per_role: dict[str, EpsilonDelta] | None = None,
                per_dataset: EpsilonDelta | None = None, period: str = "never") -> Policy:
    """analyst: alice, bob; auditor: carol; everyone else: analyst by default."""
    roles = {
        "admin": Role("admin", Access.RAW, ("root",)),
        "analyst": Role("analyst", Access.AGGREGATE, ("alice", "bob")),
        "auditor": Role("auditor", Access.AGGREGATE, ("carol",)),
    }
    return Policy(source="test", roles=roles, default_role="analyst", protected_tables={},
                  public_tables=frozenset(), budgets=Budgets(per_user, per_role or {}, per_dataset, period))


@pytest.fixture
def db(databases) -> str:
    return databases()


def run(coroutine):
    return asyncio.run(coroutine)


async def charge_all(ledger: PostgresLedger, user: str, costs: list[Cost]) -> list[Refuse | None]:
    try:
        return [await ledger.charge(user, cost) for cost in costs]
    finally:
        await ledger.close()


def ledger_rows(dsn: str, where: str = "true") -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(f"SELECT kind, user_name, role_name, epsilon, delta FROM pgshroud.budget_ledger "
                            f"WHERE {where} ORDER BY id").fetchall()


def spent(dsn: str, where: str = "kind = 'charge'") -> tuple[Decimal, Decimal, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(f"SELECT coalesce(sum(epsilon), 0), coalesce(sum(delta), 0), count(*) "
                            f"FROM pgshroud.budget_ledger WHERE {where}").fetchone()


def assert_totals_match_the_ledger(dsn: str) -> None:
    """Every lock row's running totals are the sums of its scope's ledger rows since its last reset."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("""
            SELECT b.scope, b.name, b.spent_epsilon, b.spent_delta, b.granted_epsilon, b.granted_delta,
                   coalesce(sum(l.epsilon) FILTER (WHERE l.kind = 'charge'), 0),
                   coalesce(sum(l.delta) FILTER (WHERE l.kind = 'charge'), 0),
                   coalesce(sum(l.epsilon) FILTER (WHERE l.kind = 'grant'), 0),
                   coalesce(sum(l.delta) FILTER (WHERE l.kind = 'grant'), 0)
            FROM pgshroud.budget_lock AS b
            LEFT JOIN pgshroud.budget_ledger AS l ON l.id > b.reset_id AND CASE b.scope
                WHEN 'user' THEN l.user_name = b.name
                WHEN 'role' THEN l.role_name = b.name
                ELSE l.kind = 'charge' OR (l.user_name IS NULL AND l.role_name IS NULL) END
            GROUP BY b.scope, b.name""").fetchall()
    assert rows
    for scope, name, *figures in rows:
        assert figures[:4] == figures[4:], (scope, name, figures)


# ----------------------------------------------------------------- accounting


def test_charges_add_up_exactly_and_are_committed_when_charge_returns(db) -> None:
    policy = make_policy(per_user=EpsilonDelta(2.0, 2e-6))
    ledger = PostgresLedger(db, policy)

    async def scenario() -> None:
        try:
            for number in range(1, 21):
                assert await ledger.charge("alice", Cost(0.1, 1e-7)) is None
                # Committed, and visible to any other connection, as soon as charge returns.
                assert spent(db) == (Decimal("0.1") * number, Decimal("1E-7") * number, number)
            refusal = await ledger.charge("alice", Cost(0.1, 1e-7))
            assert isinstance(refusal, Refuse) and refusal.sqlstate == "53400"
            # Twenty charges of 0.1 are exactly 2, with no float drift either way.
            [standing] = await ledger.standing("alice")
            assert standing.spent_epsilon == Decimal("2.0") and standing.remaining_epsilon == 0
            assert standing.spent_delta == Decimal("0.0000020") and standing.remaining_delta == 0
            # The ledger's own connections commit synchronously whatever the server's default (off here).
            async with (await ledger._open()).acquire() as conn:
                assert await conn.fetchval("SHOW synchronous_commit") == "on"
                assert await conn.fetchval("SELECT current_setting('synchronous_commit', true)") == "on"
        finally:
            await ledger.close()

    run(scenario())
    rows = ledger_rows(db)
    assert len(rows) == 20
    assert all(row == ("charge", "alice", "analyst", Decimal("0.1"), Decimal("1E-7")) for row in rows)


def test_an_exhausted_budget_is_refused_with_what_is_left_and_what_it_costs(db) -> None:
    policy = make_policy(per_user=EpsilonDelta(1.0, 1e-5))
    results = run(charge_all(PostgresLedger(db, policy), "bob",
                             [Cost(0.5), Cost(0.25), Cost(0.5, 1e-7), Cost(0.25, 2e-5), Cost(0.25)]))
    assert results[:2] == [None, None]
    refusal = results[2]
    assert isinstance(refusal, Refuse) and refusal.sqlstate == "53400"
    assert refusal.message == (
        'privacy budget exhausted: user "bob" has epsilon 0.25 of 1 left (delta 1e-5 of 1e-5); '
        "this query costs epsilon 0.5 and delta 1e-7; spent budget does not return (budgets.period is never)"
    )
    assert "SET pgshroud.epsilon, at most 0.25 now" in refusal.hint
    # Delta alone can exhaust a budget too.
    assert isinstance(results[3], Refuse) and "costs epsilon 0.25 and delta 2e-5" in results[3].message
    # A refusal spends nothing: what was left still fits.
    assert results[4] is None
    assert spent(db) == (Decimal("1.00"), Decimal(0), 3)
    rows = ledger_rows(db)
    assert [row[3] for row in rows] == [Decimal("0.5"), Decimal("0.25"), Decimal("0.25")]
    # Now nothing is left, and the hint does not suggest a smaller epsilon.
    [refusal] = run(charge_all(PostgresLedger(db, policy), "bob", [Cost(0.01)]))
    assert refusal.message.startswith('privacy budget exhausted: user "bob" has epsilon 0 of 1 left')
    assert "SET pgshroud.epsilon" not in refusal.hint and "administrator" in refusal.hint


def test_role_and_dataset_budgets_are_shared(db) -> None:
    policy = make_policy(per_user=EpsilonDelta(10), per_role={"analyst": EpsilonDelta(1.5)},
                         per_dataset=EpsilonDelta(2.5))

    async def scenario() -> list:
        ledger = PostgresLedger(db, policy)
        try:
            return [
                await ledger.charge("alice", Cost(1.0)),  # analyst: 1 of 1.5, dataset 1 of 2.5
                await ledger.charge("bob", Cost(1.0)),    # analyst would be 2 > 1.5: refused
                await ledger.charge("bob", Cost(0.5)),    # analyst 1.5, dataset 1.5
                await ledger.charge("carol", Cost(1.0)),  # auditor (no role cap): dataset 2.5
                await ledger.charge("carol", Cost(0.001)),  # dataset exhausted, for any role
                await ledger.charge("dave", Cost(0.001)),  # analyst by default: role and dataset exhausted
            ]
        finally:
            await ledger.close()

    results = run(scenario())
    assert results[0] is None and results[2] is None and results[3] is None
    assert results[1].message.startswith(
        'privacy budget exhausted: role "analyst", shared by its users, has epsilon 0.5 of 1.5 left')
    assert results[4].message.startswith(
        "privacy budget exhausted: the dataset, shared by all users, has epsilon 0 of 2.5 left")
    assert 'role "analyst", shared by its users, has epsilon 0 of 1.5 left' in results[5].message
    assert "the dataset, shared by all users, has epsilon 0 of 2.5 left" in results[5].message
    assert ledger_rows(db) == [
        ("charge", "alice", "analyst", Decimal("1.0"), Decimal(0)),
        ("charge", "bob", "analyst", Decimal("0.5"), Decimal(0)),
        ("charge", "carol", "auditor", Decimal("1.0"), Decimal(0)),
    ]
    with psycopg.connect(db, autocommit=True) as conn:
        locks = conn.execute("SELECT scope, name FROM pgshroud.budget_lock ORDER BY 1, 2").fetchall()
    assert locks == [("dataset", ""), ("role", "analyst"), ("user", "alice"), ("user", "bob"), ("user", "carol"),
                     ("user", "dave")]


def test_budgets_follow_the_current_policy(db) -> None:
    """The ledger asks for the policy at each charge, as a SIGHUP reload swaps it."""
    current = {"policy": make_policy(per_user=EpsilonDelta(1.0))}
    ledger = PostgresLedger(db, lambda: current["policy"])

    async def scenario() -> list:
        try:
            first = [await ledger.charge("alice", Cost(0.5)) for _ in range(3)]
            current["policy"] = make_policy(per_user=EpsilonDelta(2.0))
            second = [await ledger.charge("alice", Cost(0.5)) for _ in range(3)]
            return first + second
        finally:
            await ledger.close()

    results = run(scenario())
    assert [result is None for result in results] == [True, True, False, True, True, False]


def test_a_cap_the_policy_adds_later_counts_the_charges_made_before(db) -> None:
    """A role's charges while it was not capped are in its budget once it is, and so are those made while the
    cap was lifted for a while."""
    uncapped = make_policy(per_user=EpsilonDelta(10))
    capped = make_policy(per_user=EpsilonDelta(10), per_role={"analyst": EpsilonDelta(4.5)})
    current = {"policy": uncapped}
    ledger = PostgresLedger(db, lambda: current["policy"])

    async def charges(*pairs: tuple[str, float]) -> list:
        return [await ledger.charge(user, Cost(epsilon)) for user, epsilon in pairs]

    async def scenario() -> list:
        try:
            steps = await charges(("alice", 1.0), ("alice", 1.0), ("bob", 1.0))
            current["policy"] = capped  # a reload adds the role's cap
            steps += await charges(("alice", 1.0), ("bob", 1.0))
            current["policy"] = make_policy(per_user=EpsilonDelta(10))  # lifted...
            steps += await charges(("bob", 0.25))
            current["policy"] = capped  # ...and back
            steps += await charges(("alice", 0.5), ("alice", 0.25), ("bob", 0.25))
            return steps
        finally:
            await ledger.close()

    steps = run(scenario())
    assert [step is None for step in steps] == [True, True, True, True, False, True, False, True, False]
    assert steps[4].message.startswith('privacy budget exhausted: role "analyst", shared by its users, has '
                                       "epsilon 0.5 of 4.5 left")
    assert steps[6].message.startswith('privacy budget exhausted: role "analyst", shared by its users, has '
                                       "epsilon 0.25 of 4.5 left")
    assert spent(db, "role_name = 'analyst'")[0] == Decimal("4.5")
    assert_totals_match_the_ledger(db)


def test_a_new_process_recomputes_the_totals_from_the_ledger(db) -> None:
    policy = make_policy(per_user=EpsilonDelta(1.0))
    assert run(charge_all(PostgresLedger(db, policy), "alice", [Cost(0.75)])) == [None]
    with psycopg.connect(db, autocommit=True) as conn:  # the superuser damages the running totals
        conn.execute("UPDATE pgshroud.budget_lock SET spent_epsilon = 0")
    results = run(charge_all(PostgresLedger(db, policy), "alice", [Cost(0.5), Cost(0.25)]))
    assert isinstance(results[0], Refuse) and "has epsilon 0.25 of 1 left" in results[0].message
    assert results[1] is None
    assert_totals_match_the_ledger(db)


def test_a_sharing_role_has_an_account_of_its_own_that_grants_resets_and_periods_keep(db) -> None:
    """A role that shares answers is charged on its account: rows that name no user, counted by the role and
    the dataset (recomputed alike by a new process), granted and reset as the role, within the period."""
    policy = make_policy(per_user=EpsilonDelta(0.5), per_role={"analyst": EpsilonDelta(1.0)},
                         per_dataset=EpsilonDelta(100), period="1d")
    policy = dataclasses.replace(policy, roles={**policy.roles, "analyst": dataclasses.replace(
        policy.roles["analyst"], share_answers=True)})

    async def scenario() -> list:
        ledger = PostgresLedger(db, policy)
        try:
            # alice's own 0.5 does not apply: the role's 1 does, for alice and bob together.
            steps = [await ledger.charge("alice", Cost(0.75)), await ledger.charge("bob", Cost(0.5))]
            await ledger.grant("role", "analyst", 0.25)
            steps.append(await ledger.charge("bob", Cost(0.5)))
            await ledger.reset("role", "analyst")
            steps.append(await ledger.charge("alice", Cost(1.0)))
            steps.append(await ledger.charge("carol", Cost(0.25)))  # auditor does not share
            return steps
        finally:
            await ledger.close()

    steps = run(scenario())
    assert steps[0] is None and steps[2] is None and steps[3] is None and steps[4] is None
    assert 'role "analyst", whose users share its answers and this budget, has epsilon 0.25 of 1 left' \
        in steps[1].message
    assert ledger_rows(db, "kind = 'charge'") == [
        ("charge", SHARED_ACCOUNT, "analyst", Decimal("0.75"), Decimal(0)),
        ("charge", SHARED_ACCOUNT, "analyst", Decimal("0.5"), Decimal(0)),
        ("charge", SHARED_ACCOUNT, "analyst", Decimal("1.0"), Decimal(0)),
        ("charge", "carol", "auditor", Decimal("0.25"), Decimal(0)),
    ]
    assert_totals_match_the_ledger(db)
    with psycopg.connect(db, autocommit=True) as conn:  # the superuser damages the running totals
        conn.execute("UPDATE pgshroud.budget_lock SET spent_epsilon = 0")

    async def again() -> tuple:
        ledger = PostgresLedger(db, policy)
        try:
            return await ledger.charge("bob", Cost(0.01)), await ledger.standing("bob")
        finally:
            await ledger.close()

    refusal, standings = run(again())  # recomputed: the role has spent its 1 since its reset
    assert refusal is not None and "has epsilon 0 of 1 left" in refusal.message
    assert [(s.budget.scope, s.budget.shared, s.spent_epsilon) for s in standings] == [
        ("role", True, Decimal("1.0")), ("dataset", False, Decimal("2.50"))]


def test_grants_add_budget_and_resets_void_earlier_rows(db) -> None:
    policy = make_policy(per_user=EpsilonDelta(1.0), per_dataset=EpsilonDelta(100))

    async def scenario() -> list:
        ledger = PostgresLedger(db, policy)
        try:
            steps = [await ledger.charge("alice", Cost(1.0)), await ledger.charge("alice", Cost(0.5))]
            await ledger.grant("user", "alice", 0.5, note="quarterly review")
            steps += [await ledger.charge("alice", Cost(0.5)), await ledger.charge("alice", Cost(0.5))]
            await ledger.reset("user", "alice")
            steps += [await ledger.charge("alice", Cost(1.0)), await ledger.charge("alice", Cost(0.5))]
            [user, dataset] = await ledger.standing("alice")
            steps += [(user.spent_epsilon, user.allowed_epsilon), (dataset.spent_epsilon, dataset.allowed_epsilon)]
            with pytest.raises(ValueError):
                await ledger.grant("planet", "earth", 1.0)
            with pytest.raises(ValueError):
                await ledger.grant("user", "alice", -1.0)
            return steps
        finally:
            await ledger.close()

    steps = run(scenario())
    assert [step is None for step in steps[:6]] == [True, False, True, False, True, False]
    assert "has epsilon 0 of 1.5 left" in steps[3].message
    # The reset voids the user's earlier charges and grant; the dataset still counts them.
    assert steps[6] == (Decimal("1.0"), Decimal("1.0")) and steps[7] == (Decimal("2.5"), Decimal(100))
    assert [row[0] for row in ledger_rows(db)] == ["charge", "grant", "charge", "reset", "charge"]
    assert_totals_match_the_ledger(db)


def test_a_rolling_period_counts_only_charges_within_it(db) -> None:
    policy = make_policy(per_user=EpsilonDelta(1.0), period="7d")
    ledger = PostgresLedger(db, policy)
    assert run(charge_all(ledger, "alice", [Cost(1.0)])) == [None]
    # An old charge (written as the superuser, who may) has left the window.
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE pgshroud.budget_ledger SET recorded_at = recorded_at - interval '8 days'")
    [ok, refusal] = run(charge_all(PostgresLedger(db, policy), "alice", [Cost(1.0), Cost(0.5)]))
    assert ok is None
    assert refusal.message.startswith('privacy budget exhausted: user "alice" has epsilon 0 of 1 left')
    assert "spent budget returns as its charges leave the 7d window, the oldest at " in refusal.message


def test_without_any_budget_private_answers_are_refused(db) -> None:
    [refusal] = run(charge_all(PostgresLedger(db, make_policy(per_role={"auditor": EpsilonDelta(1)})), "alice",
                               [Cost(0.1)]))
    assert refusal.sqlstate == "55000"
    assert refusal.message == 'no privacy budget applies to user "alice", so no private answer can be charged'
    assert "budgets.per_user, budgets.per_role.analyst or budgets.per_dataset" in refusal.hint
    assert ledger_rows(db) == []


def test_bad_costs_raise_and_charge_nothing(db) -> None:
    ledger = PostgresLedger(db, make_policy(per_user=EpsilonDelta(1)))
    for cost in (Cost(-0.1), Cost(float("nan")), Cost(float("inf")), Cost(0.1, -1e-9)):
        with pytest.raises(ValueError):
            run(charge_all(ledger, "alice", [cost]))
    assert ledger_rows(db) == []


# ------------------------------------------------------------- concurrency


def test_concurrent_charges_from_two_ledgers_never_overspend(db, pg) -> None:
    """50 charges race on one user from two pools (as two pgshroud processes): exactly the affordable ones commit."""
    # Even a database whose default isolation would let the sums miss a concurrent charge.
    database = conninfo_to_dict(db)["dbname"]
    pg.execute(f"ALTER DATABASE {database} SET default_transaction_isolation = 'repeatable read'")
    policy = make_policy(per_user=EpsilonDelta(2.5, 1e-5), per_role={"analyst": EpsilonDelta(100, 0.5)},
                         per_dataset=EpsilonDelta(100, 0.5))

    async def scenario() -> list[Refuse | None]:
        ledgers = [PostgresLedger(db, policy, max_connections=8), PostgresLedger(db, policy, max_connections=8)]
        try:
            return await asyncio.gather(*(ledgers[n % 2].charge("alice", Cost(0.1, 1e-7)) for n in range(50)))
        finally:
            await asyncio.gather(*(ledger.close() for ledger in ledgers))

    results = run(scenario())
    assert sum(result is None for result in results) == 25
    assert all(result.sqlstate == "53400" for result in results if result is not None)
    assert spent(db) == (Decimal("2.5"), Decimal("0.0000025"), 25)
    assert_totals_match_the_ledger(db)


def test_concurrent_charges_of_many_users_share_role_and_dataset_caps(db) -> None:
    policy = make_policy(per_user=EpsilonDelta(1), per_role={"analyst": EpsilonDelta(3)},
                         per_dataset=EpsilonDelta(4))
    users = ["alice", "bob", "dave", "erin", "carol"]

    async def scenario() -> list[Refuse | None]:
        ledgers = [PostgresLedger(db, policy, max_connections=6) for _ in range(2)]
        try:
            return await asyncio.gather(*(ledgers[n % 2].charge(users[n % 5], Cost(0.25)) for n in range(60)))
        finally:
            await asyncio.gather(*(ledger.close() for ledger in ledgers))

    results = run(scenario())
    assert sum(result is None for result in results) == 16
    with psycopg.connect(db, autocommit=True) as conn:
        per_user = dict(conn.execute("SELECT user_name, sum(epsilon) FROM pgshroud.budget_ledger GROUP BY 1"))
        per_role = dict(conn.execute("SELECT role_name, sum(epsilon) FROM pgshroud.budget_ledger GROUP BY 1"))
    assert all(total <= 1 for total in per_user.values()), per_user
    assert per_role == {"analyst": 3, "auditor": 1}
    assert_totals_match_the_ledger(db)


_WORKER = textwrap.dedent("""
    import asyncio, sys
    from pgshroud.policies.model import Access, Budgets, EpsilonDelta, Policy, Role
    from pgshroud.proxy.budget.ledger import PostgresLedger
    from pgshroud.rewriter.plans import Cost

    policy = Policy(source="worker", roles={"analyst": Role("analyst", Access.AGGREGATE, ("kim",))},
                    default_role=None, protected_tables={}, public_tables=frozenset(),
                    budgets=Budgets(EpsilonDelta(float(sys.argv[2])), {}, EpsilonDelta(1000)))

    async def main():
        ledger = PostgresLedger(sys.argv[1], policy, max_connections=4)
        async def one():
            while True:
                refusal = await ledger.charge("kim", Cost(0.25))
                # Released: printed only once the charge has returned.
                print("released" if refusal is None else "refused", flush=True)
                if refusal is not None:
                    return
        await asyncio.gather(*(one() for _ in range(4)))
        await ledger.close()

    asyncio.run(main())
""")


def _worker(dsn: str, cap: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", _WORKER, dsn, str(cap)], stdout=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)


def test_processes_killed_while_charging_leave_a_consistent_ledger(db) -> None:
    """SIGKILL two charging processes mid-way: every released answer has its committed charge, the spend stays
    under the cap, no lock is left behind, and a new process spends exactly what was left."""
    cap = 100.0  # 400 charges of 0.25
    workers = [_worker(db, cap), _worker(db, cap)]
    released = 0
    try:
        for worker in workers:
            assert worker.stdout is not None
        # Kill once both are charging and a good part of the budget has gone.
        while released < 120:
            line = workers[released % 2].stdout.readline()
            assert line == "released\n", line
            released += 1
        for worker in workers:
            worker.send_signal(signal.SIGKILL)
        for worker in workers:
            worker.wait(20)
            released += worker.stdout.read().count("released\n")  # printed before the kill, read after
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(20)
    epsilon, _, count = spent(db)
    assert count >= released  # no answer released unpaid
    assert epsilon == Decimal("0.25") * count <= Decimal(cap)
    assert epsilon < Decimal(cap)  # they were killed before the end
    assert_totals_match_the_ledger(db)

    # A fresh process is not blocked by the killed ones' locks, and spends exactly the rest.
    survivor = _worker(db, cap)
    out, _ = survivor.communicate(timeout=120)
    assert survivor.returncode == 0
    assert out.count("released\n") == (Decimal(cap) - epsilon) / Decimal("0.25")
    assert out.count("refused\n") == 4
    assert spent(db)[:1] == (Decimal("100.00"),) and spent(db)[2] == 400
    assert_totals_match_the_ledger(db)


# ----------------------------------------------------------------- failures


def test_an_unreachable_ledger_raises(db, pg) -> None:
    policy = make_policy(per_user=EpsilonDelta(1))
    with pytest.raises(OSError):
        run(charge_all(PostgresLedger(make_conninfo(host="127.0.0.1", port=1, user="postgres", dbname="x"),
                                      policy, timeout=5), "alice", [Cost(0.1)]))
    with pytest.raises(asyncpg.InvalidPasswordError):
        run(charge_all(PostgresLedger(pg.dsn(user="app", dbname="app", password="wrong"), policy), "alice",
                       [Cost(0.1)]))


@pytest.fixture
def bare_database(pg) -> Iterator[str]:
    """A database without pgshroud's schema."""
    name = "pgshroud_ledger_bare"
    pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg.execute(f"CREATE DATABASE {name}")
    yield name
    pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_database_without_the_ledger_raises_and_fails_the_check(pg, bare_database) -> None:
    policy = make_policy(per_user=EpsilonDelta(1))
    with pytest.raises(asyncpg.UndefinedTableError):
        run(charge_all(PostgresLedger(pg.admin_dsn(bare_database), policy), "alice", [Cost(0.1)]))

    async def check() -> None:
        ledger = PostgresLedger(pg.admin_dsn(bare_database), policy)
        try:
            await ledger.check()
        finally:
            await ledger.close()

    with pytest.raises(ConfigError, match=rf'not set up in database "{bare_database}" .*run pgshroud setup '
                                          r'--upstream DSN'):
        run(check())


def test_the_ledger_is_the_owners_only_and_append_only(pg, databases) -> None:
    db = databases()
    database = conninfo_to_dict(db)["dbname"]
    policy = make_policy(per_user=EpsilonDelta(1))
    assert run(charge_all(PostgresLedger(db, policy), "alice", [Cost(0.1)])) == [None]
    pg.execute(f"GRANT {MASKED_ROLE} TO u_scram")
    try:
        with psycopg.connect(pg.dsn(user="u_scram", dbname=database, password="u_scram"), autocommit=True) as member:
            for statement in ("SELECT * FROM pgshroud.budget_ledger", "SELECT * FROM pgshroud.budget_lock",
                              ("INSERT INTO pgshroud.budget_ledger (kind, user_name, epsilon, delta) "
                              "VALUES ('grant', 'u_scram', 100, 0)")):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    member.execute(statement)

        async def check_as_member() -> None:
            ledger = PostgresLedger(pg.dsn(user="u_scram", dbname=database, password="u_scram"), policy)
            try:
                await ledger.check()
            finally:
                await ledger.close()

        with pytest.raises(ConfigError, match='user "u_scram" may not use the privacy budget ledger'):
            run(check_as_member())
    finally:
        pg.execute(f"REVOKE {MASKED_ROLE} FROM u_scram")

    # The owner (not a superuser) appends, but changes and removes nothing.
    owned = "pgshroud_ledger_owned"
    pg.execute(f"DROP DATABASE IF EXISTS {owned} WITH (FORCE)")
    pg.execute(f"CREATE DATABASE {owned} OWNER app")
    try:
        pg.execute(f"DO $$ BEGIN CREATE ROLE {MASKED_ROLE} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; "
                   "END $$")
        owner_dsn = pg.dsn(user="app", dbname=owned, password="app")
        assert run_setup(owner_dsn, key_env=None, key_file=None, rotate_key=False, grant_to=[],
                         out=io.StringIO()) == 0
        assert run(charge_all(PostgresLedger(owner_dsn, policy), "alice", [Cost(0.1)])) == [None]
        with psycopg.connect(owner_dsn, autocommit=True) as owner:
            for statement in ("UPDATE pgshroud.budget_ledger SET epsilon = 0", "DELETE FROM pgshroud.budget_ledger",
                              "TRUNCATE pgshroud.budget_ledger"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    owner.execute(statement)
        assert spent(owner_dsn) == (Decimal("0.1"), Decimal(0), 1)
        # Setup again changes nothing, and keeps the ledger.
        assert run_setup(owner_dsn, key_env=None, key_file=None, rotate_key=False, grant_to=[],
                         out=io.StringIO()) == 0
        assert spent(owner_dsn) == (Decimal("0.1"), Decimal(0), 1)
    finally:
        pg.execute(f"DROP DATABASE IF EXISTS {owned} WITH (FORCE)")


# ---------------------------------------------------------------- serve


def _serve(policy: Path, upstream: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pgshroud.proxy.commands.cli", "serve", "--policy", str(policy), "--upstream", upstream,
         "--listen", "127.0.0.1:0", "--drain-timeout", "5"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_serve_refuses_to_start_without_the_ledger_tables(pg, databases, bare_database) -> None:
    proc = _serve(HEALTHCARE, make_conninfo(pg.dsn(dbname=bare_database), sslmode="disable"))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr
    assert f'pgshroud: the privacy budget ledger is not set up in database "{bare_database}"' in stderr
    assert "run pgshroud setup --upstream DSN" in stderr and "listening on" not in stderr
    assert "Traceback" not in stderr

    # Once set up, it starts.
    db = databases()
    database = conninfo_to_dict(db)["dbname"]
    proc = _serve(HEALTHCARE, make_conninfo(pg.dsn(dbname=database), sslmode="disable"))
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "listening on" in line or not line:
                break
        assert "listening on" in lines[-1], "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# ------------------------------------------------------------------ pieces


def test_numbers_periods_and_roles() -> None:
    assert exact(0.1, "e") == Decimal("0.1") and exact(1e-7, "d") == Decimal("1e-7") and exact(3, "e") == 3
    assert sum([exact(0.1, "e")] * 200) == 20
    for bad in (-1.0, float("nan"), float("inf"), Decimal("-0.5")):
        with pytest.raises(ValueError):
            exact(bad, "e")
    with pytest.raises(TypeError):
        exact(True, "e")
    assert [show_number(Decimal(text)) for text in ("0", "20.0", "19.90", "0.0001", "0.00002", "1E-7", "2E+1")] == [
        "0", "20", "19.9", "0.0001", "2e-5", "1e-7", "20"]
    assert period_window("never") is None
    assert period_window("7d").days == 7 and period_window("12h").total_seconds() == 12 * 3600
    assert has_aggregate_role(make_policy())
    masked_only = Policy(source="t", roles={"c": Role("c", Access.MASKED, ("x",))}, default_role=None,
                         protected_tables={}, public_tables=frozenset())
    assert not has_aggregate_role(masked_only) and not has_aggregate_role(None)
    mixed = Policy(source="t", roles={"c": Role("c", Access.MASKED, ("x",), {"public.t": Access.AGGREGATE})},
                   default_role=None, protected_tables={}, public_tables=frozenset())
    assert has_aggregate_role(mixed)
