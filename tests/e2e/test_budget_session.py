"""The analyst's view of their privacy budget, in their own session.

- `SHOW pgshroud.budget` is answered by pgshroud from the ledger: one row,
  one text column named pgshroud.budget, whose value begins with the
  epsilon the user can spend now (the least left over the user's, role's
  and dataset's budgets) and goes on with the detail;
- after each private answer, one notice: its cost, what is left, and the
  release's 95% margins of error;
- the answer cache: a repeat of a released private answer (same user, same
  text with every literal, same bind values and formats, same epsilon and
  delta) within --answer-cache-seconds is the same answer at no new cost;
  it expires, it can be off (the test proxies' default), and the privacy
  tests run with it off.

Through psql, psycopg and asyncpg, against the demo's healthcare data and a
real ledger, as users `budgetee` and `budgetee2` of the analyst role (their
own users, so that other tests' charges do not move their budgets).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
import time
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgshroud.policies.accounting import Budget, Standing
from pgshroud.policies.model import Budgets, EpsilonDelta
from pgshroud.proxy.budget.answer_cache import AnswerCache
from pgshroud.proxy.budget.ledger import PostgresLedger
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.proxy.session.budget_notes import budget_value, cost_notice, repeat_notice, with_notice
from pgshroud.proxy.session.driver import SessionContext
from pgshroud.rewriter import plan
from pgshroud.rewriter.plans import Column, Cost, LocalAnswer
from tests.fix_proxy import RunningProxy, proxy_config

USERS = ("budgetee", "budgetee2")
HALF = Cost(0.5)
POINT = "SELECT count(*) FROM visits WHERE patient_id = {}"
NUMBER = r"([0-9.e+-]+)"
NOTICE = re.compile(rf"privacy cost: epsilon {NUMBER}, delta {NUMBER}; left now: epsilon {NUMBER}, delta {NUMBER}; "
                    r"95% margins of error")
REPEAT = re.compile(rf"privacy cost: none, this is the answer released at \d\d:\d\d:\d\d UTC for epsilon {NUMBER}, "
                    rf"delta {NUMBER}, repeated from pgshroud's answer cache \(kept \d+ s\); left now: epsilon "
                    rf"{NUMBER}, delta {NUMBER}; 95% margins of error")


# --- the wording and the cache, without a database ------------------------------


def standing(scope: str, name: str, cap: str, spent: str, granted: str = "0", delta_cap: str = "0.001",
             delta_spent: str = "0") -> Standing:
    return Standing(Budget(scope, name, Decimal(cap), Decimal(delta_cap)), Decimal(spent), Decimal(delta_spent),
                    Decimal(granted), Decimal(0), None)


def test_budget_value_begins_with_the_least_left_over_every_budget():
    standings = [standing("user", "ann", "40", "1.5", granted="2"), standing("role", "analyst", "10", "7.25"),
                 standing("dataset", "", "500", "99", delta_spent="0.0002")]
    value = budget_value("ann", standings, "never")
    assert value.split()[0] == "2.75"  # the role's 10 - 7.25, less than the user's 42 - 1.5
    assert value.startswith("2.75 epsilon left now (delta 0.0008)")
    assert 'user "ann": epsilon spent 1.5 of 42 (cap 40, granted 2), delta spent 0 of 0.001' in value
    assert 'role "analyst" (shared by its users): epsilon spent 7.25 of 10 (cap 10, granted 0)' in value
    assert "dataset (shared by all users): epsilon spent 99 of 500" in value
    assert value.endswith("period never: spent budget does not return")

    rolling = [dataclasses.replace(standings[0], oldest_charge=datetime(2026, 1, 1, 12, tzinfo=UTC))]
    assert budget_value("ann", rolling, "7d").endswith(
        "period 7d: each charge counts for 7d, the oldest that counts returns at 2026-01-08 12:00:00 UTC")
    assert budget_value("ann", [], "never").startswith('0 epsilon left now: no privacy budget applies to user "ann"')


def test_the_cost_notice_joins_the_margins_notice():
    answer = LocalAnswer("SELECT 1", (Column("count", 20),), (("12",),),
                         notices=("MIN is answered as a private estimate", "95% margins of error from the noise: count ±4"))
    text = cost_notice(Cost(0.5, 1e-7), [standing("user", "ann", "40", "1.5")])
    assert text == "privacy cost: epsilon 0.5, delta 1e-7; left now: epsilon 38.5, delta 0.001"
    joined = with_notice(answer, text)
    assert joined.notices == ("MIN is answered as a private estimate",
                              f"{text}; 95% margins of error from the noise: count ±4")
    assert (joined.rows, joined.columns, joined.command_tag) == (answer.rows, answer.columns, answer.command_tag)
    # A release without noisy columns, or a ledger that does not say what is left.
    assert with_notice(LocalAnswer("SELECT 0"), cost_notice(Cost(1), None)).notices == (
        "privacy cost: epsilon 1, delta 0",)
    assert "left now: unknown" in repeat_notice(Cost(1), time.time(), 300, None, lookup_failed=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_answer_cache_keeps_literals_owners_expiry_and_bounds():
    clock = Clock()
    cache = AnswerCache(300, max_entries=3, clock=clock)
    policy, catalog = object(), object()
    answer = LocalAnswer("SELECT 1", (Column("count", 20),), (("7",),))

    def key(statement, user="ann", policy=policy, catalog=catalog, privacy=None, cost=HALF):
        return cache.key(user=user, role="analyst", policy=policy, catalog=catalog, privacy=privacy or {},
                         cost=cost, statement=statement)

    five = key(("query", POINT.format(5), 0))
    cache.put(five, answer, Cost(0.5))
    assert cache.get(key(("query", POINT.format(5), 0))).answer is answer
    for other in (key(("query", POINT.format(6), 0)), key(("query", POINT.format(5), 1)),
                  key(("query", POINT.format(5), 0), user="bob"),
                  key(("query", POINT.format(5), 0), privacy={"epsilon": "0.25"}),
                  key(("query", POINT.format(5), 0), cost=Cost(0.5, 1e-7)),
                  key(("query", POINT.format(5), 0), policy=object()),
                  key(("query", POINT.format(5), 0), catalog=object())):
        assert cache.get(other) is None
    clock.now += 299
    assert cache.get(five) is not None
    clock.now += 1
    assert cache.get(five) is None and len(cache) == 0  # expired, and gone
    # Least recently used first, at most max_entries.
    keys = [key(("query", POINT.format(n), 0)) for n in range(4)]
    for k in keys[:3]:
        cache.put(k, answer, Cost(0.5))
    assert cache.get(keys[0]) is not None
    cache.put(keys[3], answer, Cost(0.5))
    assert [cache.get(k) is not None for k in keys] == [True, False, True, True]
    # An answer larger than an eighth of the byte bound is not kept.
    small = AnswerCache(300, max_bytes=8000, clock=clock)
    big = LocalAnswer("SELECT 100", (Column("n"),), tuple((str(n) * 10,) for n in range(100)))
    small.put(keys[0], big, Cost(0.5))
    assert len(small) == 0


# --- through the wire --------------------------------------------------------------


@pytest.fixture(scope="module")
def budget_users(pg, health_db):
    for user in USERS:
        pg.execute(f"DROP ROLE IF EXISTS {user}")
        pg.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{user}' IN ROLE analyst")
    return USERS


@pytest.fixture(scope="module")
def budget_policy(health_policy):
    analyst = health_policy.roles["analyst"]
    roles = {**health_policy.roles, "analyst": dataclasses.replace(analyst, users=(*analyst.users, *USERS))}
    budgets = Budgets(per_user=EpsilonDelta(40, 1e-3), per_role={"analyst": EpsilonDelta(100_000, 1.0)},
                      per_dataset=EpsilonDelta(200_000, 1.0))
    return dataclasses.replace(health_policy, roles=roles, budgets=budgets)


@pytest.fixture(scope="module")
def health_catalog(health_db):
    return asyncio.run(read_catalog(health_db))


@pytest.fixture(scope="module")
def start_budget_proxy(pg, health_db, budget_users, budget_policy, health_catalog):
    """pgshroud with the budget policy and a ledger (or none), and the answer cache on or off."""
    started: list[RunningProxy] = []

    def start(answer_cache_seconds: float = 0, ledger: bool = True) -> RunningProxy:
        upstream = make_conninfo(pg.dsn(), sslmode="disable")
        shared = SessionContext(proxy_config(upstream, answer_cache_seconds=answer_cache_seconds), plan,
                                ledger=PostgresLedger(health_db, budget_policy) if ledger else None,
                                policy=budget_policy, catalog=lambda: health_catalog)
        started.append(RunningProxy(shared))
        return started[-1]

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope="module")
def cached(start_budget_proxy):
    return start_budget_proxy(answer_cache_seconds=300)


@pytest.fixture(scope="module")
def uncached(start_budget_proxy):
    return start_budget_proxy()


def dsn(proxy: RunningProxy, user: str = "budgetee") -> str:
    return proxy.dsn(user, "health", password=user)


def charges(health_db: str, user: str = "budgetee") -> int:
    with psycopg.connect(health_db) as conn:
        return conn.execute("SELECT count(*) FROM pgshroud.budget_ledger WHERE user_name = %s AND kind = 'charge'",
                            [user]).fetchone()[0]


def left_now(health_db: str, policy, user: str = "budgetee") -> tuple[Decimal, Decimal]:
    """What the ledger itself says the user can spend now."""
    async def read():
        ledger = PostgresLedger(health_db, policy)
        try:
            return await ledger.standing(user)
        finally:
            await ledger.close()

    standings = asyncio.run(read())
    assert [s.budget.scope for s in standings] == ["user", "role", "dataset"]
    return min(s.remaining_epsilon for s in standings), min(s.remaining_delta for s in standings)


def psql(proxy: RunningProxy, *commands: str, user: str = "budgetee") -> subprocess.CompletedProcess:
    args = ["psql", "-X", "-A", "-v", "ON_ERROR_STOP=1", dsn(proxy, user)]
    for command in commands:
        args += ["-c", command]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_psql_show_budget_is_pgshroud_s_answer(cached, health_db, budget_policy):
    out = psql(cached, "SHOW pgshroud.budget")
    assert out.returncode == 0, out.stderr
    header, value, footer = out.stdout.splitlines()
    assert (header, footer) == ("pgshroud.budget", "(1 row)")
    epsilon, _delta = left_now(health_db, budget_policy)
    assert Decimal(value.split()[0]) == epsilon
    assert value.startswith(f"{value.split()[0]} epsilon left now (delta ")
    for part in ('user "budgetee": epsilon spent', "(cap 40, granted 0)", 'role "analyst" (shared by its users)',
                 "dataset (shared by all users)", "period never: spent budget does not return"):
        assert part in value
    # Read-only, as PostgreSQL's own read-only parameters.
    out = psql(cached, "SET pgshroud.budget = 100")
    assert out.returncode != 0 and 'parameter "pgshroud.budget" cannot be changed' in out.stderr


def test_psql_notice_after_a_private_answer_and_show_in_the_same_query(cached, health_db, budget_policy):
    before = charges(health_db)
    out = psql(cached, "SELECT count(*) FROM visits WHERE patient_id = 11; SHOW pgshroud.budget")
    assert out.returncode == 0, out.stderr
    assert charges(health_db) == before + 1
    notices = [line for line in out.stderr.splitlines() if "NOTICE:" in line]
    assert len(notices) == 1, out.stderr
    cost_epsilon, _, left_epsilon, left_delta = NOTICE.search(notices[0]).groups()
    assert Decimal(cost_epsilon) == Decimal("0.5")
    epsilon, delta = left_now(health_db, budget_policy)
    assert (Decimal(left_epsilon), Decimal(left_delta)) == (epsilon, delta)
    # The SHOW after the release in the same Query sees its charge.
    shown = out.stdout.splitlines()[-2]
    assert Decimal(shown.split()[0]) == epsilon


def test_psql_repeat_is_the_same_answer_at_no_cost(cached, health_db):
    before = charges(health_db)
    out = psql(cached, POINT.format(21), POINT.format(21), POINT.format(22))
    assert out.returncode == 0, out.stderr
    first, repeat, _other = (out.stdout.splitlines()[i] for i in (1, 4, 7))
    assert first == repeat
    assert charges(health_db) == before + 2  # 21 once, 22 once
    notices = [line for line in out.stderr.splitlines() if "NOTICE:" in line]
    assert NOTICE.search(notices[0]) and REPEAT.search(notices[1]) and NOTICE.search(notices[2]), out.stderr


def test_psycopg_literals_and_bind_values_do_not_share_answers(cached, health_db):
    seen: list[str] = []
    with psycopg.connect(dsn(cached), autocommit=True) as conn:
        conn.add_notice_handler(lambda diagnostic: seen.append(diagnostic.message_primary))
        before = charges(health_db)
        five = conn.execute(POINT.format(5)).fetchone()
        assert charges(health_db) == before + 1 and NOTICE.search(seen[-1])
        assert conn.execute(POINT.format(5)).fetchone() == five
        assert charges(health_db) == before + 1 and REPEAT.search(seen[-1])
        conn.execute(POINT.format(6)).fetchone()
        assert charges(health_db) == before + 2  # `= 6` is another query
        conn.execute(POINT.format(" 5")).fetchone()
        assert charges(health_db) == before + 3  # the text exactly, not a normalised one
        # Bind values: each value its own answer; the same value the same answer.
        bound = "SELECT count(*) FROM visits WHERE patient_id = %s"
        seven = conn.execute(bound, [7]).fetchone()
        assert conn.execute(bound, [7]).fetchone() == seven
        assert charges(health_db) == before + 4
        conn.execute(bound, [8]).fetchone()
        assert charges(health_db) == before + 5
        # A named prepared statement of the same text, types and values is the same query;
        # binary results are keyed apart.
        assert conn.execute(bound, [7], prepare=True).fetchone() == seven
        assert conn.execute(bound, [7], prepare=True).fetchone() == seven
        assert charges(health_db) == before + 5
        count = charges(health_db)
        binary = conn.cursor(binary=True).execute(POINT.format(5)).fetchone()
        assert charges(health_db) == count + 1
        assert conn.cursor(binary=True).execute(POINT.format(5)).fetchone() == binary
        # Another epsilon is another release.
        conn.execute("SET pgshroud.epsilon = 0.25")
        conn.execute(POINT.format(5)).fetchone()
        assert charges(health_db) == count + 2
        assert conn.execute(POINT.format(5)).fetchone() is not None
        assert charges(health_db) == count + 2
        conn.execute("RESET pgshroud.epsilon")
        assert conn.execute(POINT.format(5)).fetchone() == five  # the first answer again
        assert charges(health_db) == count + 2


def test_psycopg_show_budget_prepared_and_in_a_transaction(cached, health_db, budget_policy):
    with psycopg.connect(dsn(cached)) as conn:
        cursor = conn.execute("SHOW pgshroud.budget")
        assert [c.name for c in cursor.description] == ["pgshroud.budget"]
        (value,) = cursor.fetchone()
        assert Decimal(value.split()[0]) == left_now(health_db, budget_policy)[0]
        conn.execute("SELECT count(*) FROM visits WHERE patient_id = 12").fetchone()
        again = conn.execute("SHOW pgshroud.budget", prepare=True).fetchone()[0]
        assert Decimal(again.split()[0]) == Decimal(value.split()[0]) - Decimal("0.5")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        # In a failed transaction PostgreSQL still decides: nothing is answered.
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SHOW pgshroud.budget")
        conn.rollback()
        assert conn.execute("SHOW pgshroud.budget").fetchone()[0].split()[0] == again.split()[0]


def test_per_user_answers_are_not_shared(cached, health_db):
    first = {user: charges(health_db, user) for user in USERS}
    for user in USERS:
        with psycopg.connect(dsn(cached, user), autocommit=True) as conn:
            conn.execute(POINT.format(31)).fetchone()
            conn.execute(POINT.format(31)).fetchone()
    assert {user: charges(health_db, user) for user in USERS} == {user: first[user] + 1 for user in USERS}


def test_an_answer_is_repeated_only_under_the_settings_it_was_released_under(cached, health_db):
    """now() and dates read differently under another TimeZone or DateStyle,
    so a repeat under other settings is a new release, not the kept answer."""
    sql = "SELECT now()::date AS today, count(*) FROM visits WHERE visit_id < 41"
    before = charges(health_db)
    with psycopg.connect(dsn(cached), autocommit=True) as conn:
        conn.execute(sql).fetchall()
        conn.execute(sql).fetchall()
        assert charges(health_db) == before + 1
        conn.execute("SET TimeZone = 'Pacific/Kiritimati'")
        conn.execute(sql).fetchall()
        conn.execute("SET DateStyle = 'German'")
        conn.execute(sql).fetchall()
        conn.execute(sql).fetchall()
    assert charges(health_db) == before + 3


def test_asyncpg_log_listener_gets_the_notices_and_prepared_repeats_hit(cached, health_db, budget_policy):
    async def run():
        conn = await asyncpg.connect(f"postgresql://budgetee:budgetee@{cached.host}:{cached.port}/health"
                                     "?sslmode=disable")
        seen: list[str] = []
        conn.add_log_listener(lambda _, message: seen.append(message.message))
        try:
            shown = await conn.fetchval("SHOW pgshroud.budget")
            before = charges(health_db)
            first = await conn.fetchval(POINT.format(41))
            statement = await conn.prepare("SELECT count(*) FROM visits WHERE patient_id = $1")
            values = [await statement.fetchval(42), await statement.fetchval(42), await statement.fetchval(43)]
            again = await conn.fetchval(POINT.format(41))
            await asyncio.sleep(0.05)  # log listeners run soon after, not within the fetch
            return shown, before, first, values, again, seen
        finally:
            await conn.close()

    shown, before, first, (forty_two, repeat, _forty_three), again, seen = asyncio.run(run())
    assert shown.split()[0] != "" and Decimal(shown.split()[0]) > 0
    assert again == first and repeat == forty_two
    assert charges(health_db) == before + 3  # 41, 42 and 43 once each
    assert [bool(NOTICE.search(m)) for m in seen] == [True, True, False, True, False]
    assert REPEAT.search(seen[2]) and REPEAT.search(seen[4])
    epsilon, _delta = left_now(health_db, budget_policy)
    assert Decimal(NOTICE.search(seen[3]).group(3)) == epsilon
    assert Decimal(REPEAT.search(seen[4]).group(3)) == epsilon


def test_cached_answers_expire(start_budget_proxy, health_db):
    proxy = start_budget_proxy(answer_cache_seconds=1)
    with psycopg.connect(dsn(proxy), autocommit=True) as conn:
        before = charges(health_db)
        conn.execute(POINT.format(51)).fetchone()
        conn.execute(POINT.format(51)).fetchone()
        assert charges(health_db) == before + 1
        time.sleep(1.2)
        conn.execute(POINT.format(51)).fetchone()
        assert charges(health_db) == before + 2


def test_with_the_cache_off_every_repeat_is_a_fresh_release(uncached, health_db):
    before = charges(health_db)
    seen: list[str] = []
    with psycopg.connect(dsn(uncached), autocommit=True) as conn:
        conn.add_notice_handler(lambda diagnostic: seen.append(diagnostic.message_primary))
        for _ in range(3):
            conn.execute(POINT.format(61)).fetchone()
    out = psql(uncached, POINT.format(61), POINT.format(61))
    assert out.returncode == 0, out.stderr
    assert charges(health_db) == before + 5
    assert len(seen) == 3 and all(NOTICE.search(m) for m in seen)


def test_the_test_proxies_run_without_a_cache_unless_asked(pg):
    config = proxy_config(make_conninfo(pg.dsn(), sslmode="disable"))
    assert config.answer_cache_seconds == 0
    assert SessionContext(config, plan).answers is None
    assert SessionContext(proxy_config(make_conninfo(pg.dsn(), sslmode="disable"), answer_cache_seconds=5),
                          plan).answers.seconds == 5


def test_show_budget_without_a_ledger_is_refused_as_releases_are(start_budget_proxy):
    proxy = start_budget_proxy(answer_cache_seconds=300, ledger=False)
    with psycopg.connect(dsn(proxy), autocommit=True) as conn:
        for execute in (conn.execute, psycopg.ClientCursor(conn).execute):
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="needs a privacy budget ledger"):
                execute("SHOW pgshroud.budget")
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="need a privacy budget ledger"):
                execute(POINT.format(5))
        assert conn.execute("SELECT count(*) FROM diagnoses").fetchone()[0] > 0  # the session goes on
    out = psql(proxy, "SHOW pgshroud.budget")
    assert out.returncode != 0 and "SHOW pgshroud.budget needs a privacy budget ledger" in out.stderr


def test_repeats_inside_a_transaction_and_after_it_failed(cached, health_db):
    with psycopg.connect(dsn(cached)) as conn:
        before = charges(health_db)
        bound = "SELECT count(*) FROM visits WHERE patient_id = %s"
        first = conn.execute(bound, [71]).fetchone()
        assert conn.execute(bound, [71]).fetchone() == first
        simple = psycopg.ClientCursor(conn).execute(POINT.format(72)).fetchone()  # a simple Query
        assert psycopg.ClientCursor(conn).execute(POINT.format(72)).fetchone() == simple
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        # PostgreSQL still refuses a repeat in the failed transaction, in either protocol.
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute(bound, [71])
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            psycopg.ClientCursor(conn).execute(POINT.format(72))
        conn.rollback()
        assert conn.execute(bound, [71]).fetchone() == first
        assert psycopg.ClientCursor(conn).execute(POINT.format(72)).fetchone() == simple
        assert conn.execute("SELECT count(*) FROM diagnoses").fetchone()[0] > 0
    assert charges(health_db) == before + 2


def test_serve_checks_answer_cache_seconds():
    from tests.e2e.test_cli_serve import run_cli

    result = run_cli("serve", "--listen", "127.0.0.1:0", "--upstream", "host=localhost", "--answer-cache-seconds", "-1")
    assert result.returncode == 2
    assert result.stderr.strip() == "pgshroud: --answer-cache-seconds must be a finite number >= 0, not -1.0"
