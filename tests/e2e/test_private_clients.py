"""The demo's analyst through real clients: differentially private answers
to ordinary aggregate SQL, with PostgreSQL's column names and types, in
text and binary, simple and extended protocol, each charged to the ledger."""

from __future__ import annotations

import asyncio
import dataclasses
import decimal
import subprocess

import asyncpg
import psycopg
import pytest
import sqlalchemy as sa
from psycopg.conninfo import make_conninfo

from pgshroud.policies.model import Budgets, EpsilonDelta
from pgshroud.proxy.budget.ledger import PostgresLedger
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.proxy.session.driver import SessionContext
from pgshroud.rewriter import plan
from tests.fix_proxy import RunningProxy, proxy_config

GROUPED = "SELECT department, count(*), avg(cost) FROM visits GROUP BY department ORDER BY department"
DEPARTMENTS = 16  # the policy's public domain of visits.department


@pytest.fixture(scope="module")
def private_proxy(pg, health_db, health_policy):
    """pgshroud with the healthcare policy, a ledger in `health`, and budgets large enough for every test here."""
    policy = dataclasses.replace(health_policy, budgets=Budgets(per_user=EpsilonDelta(10_000, 1.0)))
    catalog = asyncio.run(read_catalog(health_db))
    upstream = make_conninfo(pg.dsn(), sslmode="disable")
    ledger = PostgresLedger(health_db, policy)
    shared = SessionContext(proxy_config(upstream), plan, ledger=ledger, policy=policy, catalog=lambda: catalog)
    proxy = RunningProxy(shared)
    yield proxy
    proxy.stop()


def charges(raw_health: str) -> int:
    with psycopg.connect(raw_health) as conn:
        return conn.execute("SELECT count(*) FROM pgshroud.budget_ledger WHERE user_name = 'analyst'").fetchone()[0]


def analyst_dsn(proxy: RunningProxy) -> str:
    return proxy.dsn("analyst", "health", password="analyst")


def analyst_url(proxy: RunningProxy, scheme: str = "postgresql") -> str:
    return f"{scheme}://analyst:analyst@{proxy.host}:{proxy.port}/health?sslmode=disable"


def test_psql_gets_a_noisy_grouped_answer_and_a_notice(private_proxy, raw_health):
    before = charges(raw_health)
    out = subprocess.run(
        ["psql", "-X", "-A", "-F", "|", analyst_dsn(private_proxy), "-c", GROUPED,
         "-c", "SELECT min(cost) FROM visits"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "department|count|avg"
    rows = [line.split("|") for line in lines[1 : 1 + DEPARTMENTS]]
    assert len(rows) == DEPARTMENTS and rows == sorted(rows)
    assert all(int(count) >= 0 and 0 <= float(avg) <= 5000 for _, count, avg in rows)
    assert "NOTICE:  MIN(cost) is answered as a private estimate of the 1st percentile" in out.stderr
    assert charges(raw_health) == before + 2


def test_psql_refusals_say_what_to_write_instead(private_proxy):
    out = subprocess.run(
        ["psql", "-X", analyst_dsn(private_proxy), "-c", "SELECT ssn FROM patients",
         "-c", "SELECT sum(birth_date - DATE '2000-01-01') FROM patients"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert "row-level results are not released" in out.stderr
    assert "HINT:  Use count(*), sum, avg" in out.stderr
    assert "needs bounds on its argument" in out.stderr


def test_psycopg_text_binary_and_prepared(private_proxy, raw_health):
    before = charges(raw_health)
    with psycopg.connect(analyst_dsn(private_proxy), autocommit=True) as conn:
        text = conn.execute(GROUPED).fetchall()
        binary = conn.cursor(binary=True).execute(GROUPED).fetchall()
        prepared = conn.execute(GROUPED, prepare=True).fetchall()
        again = conn.execute(GROUPED, prepare=True).fetchall()
        cursor = conn.execute("SELECT count(*) AS n, sum(length_of_stay), stddev(cost) FROM visits WHERE cost > %s",
                              [100])
        names = [c.name for c in cursor.description]
        n, total, spread = cursor.fetchone()
    for rows in (text, binary, prepared, again):
        assert len(rows) == DEPARTMENTS
        assert all(isinstance(c, int) and isinstance(a, decimal.Decimal) for _, c, a in rows)
    assert names == ["n", "sum", "stddev"]
    assert isinstance(n, int) and isinstance(total, int) and isinstance(spread, decimal.Decimal)
    assert charges(raw_health) == before + 5  # every execution is a release


def test_psycopg_settings_change_the_cost(private_proxy, raw_health):
    with psycopg.connect(analyst_dsn(private_proxy), autocommit=True) as conn:
        conn.execute("SET pgshroud.epsilon = 0.25")
        assert conn.execute("SHOW pgshroud.epsilon").fetchone() == ("0.25",)
        conn.execute("SELECT count(*) FROM patients").fetchone()
        conn.execute("RESET pgshroud.epsilon")
        assert conn.execute("SHOW pgshroud.epsilon").fetchone() == ("0.5",)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="at most the policy's per-query maximum"):
            conn.execute("SET pgshroud.epsilon = 3")
    with psycopg.connect(raw_health) as conn:
        last = conn.execute("SELECT epsilon FROM pgshroud.budget_ledger WHERE user_name = 'analyst' "
                            "ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert last == decimal.Decimal("0.25")


def test_asyncpg_describes_then_executes_in_binary(private_proxy):
    async def run():
        conn = await asyncpg.connect(analyst_url(private_proxy))
        try:
            statement = await conn.prepare(
                "SELECT sex, count(*) AS people, avg(v.length_of_stay) AS stay, "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY v.cost) AS median_cost "
                "FROM patients p JOIN visits v ON p.patient_id = v.patient_id GROUP BY sex ORDER BY sex")
            types = [(a.name, a.type.name) for a in statement.get_attributes()]
            rows = await statement.fetch()
            once = await conn.fetchval("SELECT count(DISTINCT patient_id) FROM visits")
            return types, rows, once
        finally:
            await conn.close()

    types, rows, distinct = asyncio.run(run())
    assert types == [("sex", "text"), ("people", "int8"), ("stay", "numeric"), ("median_cost", "float8")]
    assert [r["sex"] for r in rows] == ["F", "M"]
    assert all(0 <= r["stay"] <= 30 and 0 <= r["median_cost"] <= 5000 for r in rows)
    assert isinstance(distinct, int) and distinct >= 0


def test_sqlalchemy_core_and_two_level_pattern(private_proxy):
    engine = sa.create_engine(analyst_url(private_proxy, "postgresql+psycopg"))
    visits = sa.table("visits", sa.column("patient_id"), sa.column("department"), sa.column("cost"))
    try:
        with engine.connect() as conn:
            query = (sa.select(visits.c.department, sa.func.count().label("n"), sa.func.sum(visits.c.cost).label("total"))
                     .group_by(visits.c.department).order_by(visits.c.department))
            rows = conn.execute(query).all()
            per_patient = sa.select(visits.c.patient_id, sa.func.count().label("n")).group_by(visits.c.patient_id).subquery()
            average = conn.execute(sa.select(sa.func.avg(per_patient.c.n))).scalar_one()
    finally:
        engine.dispose()
    assert len(rows) == DEPARTMENTS and all(r.n >= 0 and r.total >= 0 for r in rows)
    assert 0 <= average <= 50  # per-patient counts are clamped to the policy's allowance


def test_exhausted_budget_is_refused_with_53400(pg, health_db, health_policy):
    policy = dataclasses.replace(health_policy, budgets=Budgets(per_user=EpsilonDelta(0.75, 1.0)))
    catalog = asyncio.run(read_catalog(health_db))
    ledger = PostgresLedger(health_db, policy)
    shared = SessionContext(proxy_config(make_conninfo(pg.dsn(), sslmode="disable")), plan, ledger=ledger,
                            policy=policy, catalog=lambda: catalog)
    proxy = RunningProxy(shared)
    try:
        with psycopg.connect(proxy.dsn("analyst", "health", password="analyst"), autocommit=True) as conn:
            # Earlier tests may have spent the user's budget already: spend until refused.
            with pytest.raises(psycopg.errors.ConfigurationLimitExceeded) as refused:
                for _ in range(3):
                    conn.execute("SELECT count(*) FROM visits").fetchone()
            assert str(refused.value).startswith("privacy budget exhausted")
            assert conn.execute("SELECT count(*) FROM diagnoses").fetchone()[0] > 0  # the session goes on
    finally:
        proxy.stop()


def test_asyncpg_reads_date_and_timestamp_keys_in_binary(private_proxy):
    async def run():
        conn = await asyncpg.connect(analyst_url(private_proxy))
        try:
            await conn.execute("SET pgshroud.delta = 1e-5")
            return await conn.fetch("SELECT date_trunc('year', visit_date) AS year, count(*) FROM visits GROUP BY 1")
        finally:
            await conn.close()

    rows = asyncio.run(run())
    assert all(r["year"].month == 1 and r["year"].day == 1 for r in rows)


def test_a_release_after_a_refused_statement_is_not_charged(private_proxy, raw_health):
    before = charges(raw_health)
    with (psycopg.connect(analyst_dsn(private_proxy), autocommit=True) as conn,
          pytest.raises(psycopg.errors.InsufficientPrivilege)):
        conn.execute("SELECT ssn FROM patients; SELECT count(*) FROM visits")
    assert charges(raw_health) == before
