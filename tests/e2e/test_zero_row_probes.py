"""Zero-row probes over protected tables, as the aggregate user (analyst).

jupysql, Metabase, Superset and Tableau learn a query's columns by sending
it with LIMIT 0 or under a WHERE that is false by its literals. pgshroud
answers such a row-level query with the columns and types PostgreSQL gives
it and no row: it runs it under an outer WHERE false, which PostgreSQL plans
as a Result with a false one-time filter, so nothing below it runs (shown
here with EXPLAIN ANALYZE), no row is read and nothing is charged. A
one-row sample stays refused, with a hint that names LIMIT 0.
"""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgshroud.policies.model import Budgets, EpsilonDelta
from pgshroud.proxy.budget.ledger import PostgresLedger
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.proxy.session.driver import SessionContext
from pgshroud.rewriter import PlanContext, Rewrite, plan
from tests.fix_proxy import RunningProxy, proxy_config

pytestmark = pytest.mark.clients

PROBES = [
    "SELECT * FROM visits LIMIT 0",
    "SELECT * FROM visits WHERE 1=0",
    "SELECT * FROM visits WHERE false",
    "SELECT * FROM visits WHERE 1 <> 1",
    "SELECT * FROM visits WHERE NOT TRUE",
    "SELECT * FROM patients WHERE 'a' = 'b'",
    "select * from visits fetch first 0 rows only",
    # jupysql's and Superset's wrapping of a query
    "SELECT * FROM (SELECT department, cost, visit_date FROM visits WHERE cost > 100) AS t WHERE 1=0",
    "SELECT * FROM (SELECT department, count(*) AS n FROM visits GROUP BY department) AS t LIMIT 0",
    # Metabase writes columns qualified; a conjunct that is false makes the whole WHERE false
    ('SELECT "public"."visits"."visit_id", "public"."visits"."cost" FROM "public"."visits" '
    "WHERE \"public\".\"visits\".\"cost\" > 10 AND 1 = 0"),
    ("SELECT v.cost * 2 AS double_cost, p.ssn, p.birth_date, d.description FROM visits v "
    "JOIN patients p USING (patient_id) LEFT JOIN diagnoses d ON d.code = v.diagnosis_code LIMIT 0"),
    "WITH recent AS (SELECT * FROM visits WHERE visit_date > date '2020-01-01') SELECT * FROM recent LIMIT 0",
    # An expression that would fail on the first row it met: no row is met.
    ("SELECT 1 / (length_of_stay - length_of_stay) AS boom, ssn::integer AS not_a_number FROM visits "
    "JOIN patients USING (patient_id) WHERE false"),
    # Aggregates that return no row: a LIMIT 0 (Metabase's metadata run of a native question), or
    # groups over no row.
    "SELECT department, count(*) AS visits, avg(cost) AS avg_cost FROM visits GROUP BY department LIMIT 0",
    "SELECT count(*) FROM visits LIMIT 0",
    "SELECT department, sum(cost) FROM visits WHERE 1 = 0 GROUP BY department",
]


PROBER = "prober"  # a user of the analyst role with a budget of its own


@pytest.fixture(scope="module")
def health_catalog(health_db):
    return asyncio.run(read_catalog(health_db))


@pytest.fixture(scope="module")
def ledgered(pg, health_db, health_policy, health_catalog):
    """pgshroud with the healthcare policy and a privacy budget ledger, so SHOW pgshroud.budget answers."""
    pg.execute(f"DROP ROLE IF EXISTS {PROBER}")
    pg.execute(f"CREATE ROLE {PROBER} LOGIN PASSWORD '{PROBER}' IN ROLE analyst")
    role = health_policy.roles["analyst"]
    # Budgets of their own: other tests charge the analyst role in the same ledger.
    policy = dataclasses.replace(health_policy, budgets=Budgets(per_user=EpsilonDelta(10_000, 1.0)), roles={
        **health_policy.roles, "analyst": dataclasses.replace(role, users=(*role.users, PROBER))})
    shared = SessionContext(proxy_config(make_conninfo(pg.dsn(), sslmode="disable")), plan,
                            ledger=PostgresLedger(health_db, policy), policy=policy, catalog=lambda: health_catalog)
    proxy = RunningProxy(shared)
    yield proxy
    proxy.stop()


def analyst(proxy: RunningProxy) -> str:
    return proxy.dsn(PROBER, "health")


def admin_direct(pg) -> str:
    return make_conninfo(pg.dsn(user="admin", password="admin", dbname="health"), sslmode="disable")


def described(conn: psycopg.Connection, sql: str, params=None) -> tuple[list[tuple[str, int]], list]:
    cursor = conn.execute(sql, params)
    return [(d.name, d.type_code) for d in cursor.description], cursor.fetchall()


def budget(conn: psycopg.Connection) -> str:
    return conn.execute("SHOW pgshroud.budget").fetchone()[0]


@pytest.fixture(scope="module")
def planner_context(health_policy, health_catalog) -> PlanContext:
    """The analyst's planning context, as pgshroud has it."""
    return PlanContext(user="analyst", policy=health_policy, role=health_policy.roles["analyst"],
                       catalog=health_catalog)


@pytest.mark.parametrize("sql", PROBES)
def test_probe_has_postgresql_columns_and_no_row(ledgered, pg, sql):
    with psycopg.connect(admin_direct(pg), autocommit=True) as direct:
        expected_columns, expected_rows = described(direct, sql)
    assert expected_rows == []
    with psycopg.connect(analyst(ledgered), autocommit=True) as conn:
        before = budget(conn)
        columns, rows = described(conn, sql)
        assert (columns, rows) == (expected_columns, [])
        assert budget(conn) == before, "a zero-row probe is free"


@pytest.mark.parametrize("sql", PROBES)
def test_probe_runs_nothing_below_a_false_one_time_filter(planner_context, health_db, sql):
    (planned,) = plan(sql, planner_context)
    assert isinstance(planned, Rewrite), planned
    with psycopg.connect(health_db, autocommit=True) as conn:
        # ANALYZE runs the statement: every node below the top one must never have run.
        (explained,) = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {planned.sql}").fetchone()[0]
    top = explained["Plan"]
    assert top["Node Type"] == "Result" and "false" in top["One-Time Filter"], top
    assert top["Actual Rows"] == 0
    below = list(_descendants(top))
    assert all(node["Actual Loops"] == 0 for node in below), [n["Node Type"] for n in below]


def _descendants(node: dict):
    for child in node.get("Plans", ()):
        yield child
        yield from _descendants(child)


def test_a_charged_aggregate_moves_the_budget(ledgered):
    """The control for the budget comparison above: SHOW pgshroud.budget does change when a
    private answer is charged."""
    with psycopg.connect(analyst(ledgered), autocommit=True) as conn:
        before = budget(conn)
        conn.execute("SELECT count(*) FROM visits").fetchall()
        assert budget(conn) != before


def test_an_aggregate_without_groups_over_no_row_is_answered_privately(ledgered):
    """It returns one row (count 0) in PostgreSQL, so it is no probe: a private answer, charged."""
    with psycopg.connect(analyst(ledgered), autocommit=True) as conn:
        before = budget(conn)
        assert len(conn.execute("SELECT count(*) FROM visits WHERE 1 = 0").fetchall()) == 1
        assert budget(conn) != before


def test_probe_with_bound_parameters_and_binary_results(ledgered, pg):
    """Extended protocol: psycopg binds $1; asyncpg describes the statement and reads binary."""
    sql = "SELECT visit_id, cost, department FROM visits WHERE department = %s LIMIT 0"
    with psycopg.connect(admin_direct(pg), autocommit=True) as direct:
        expected = described(direct, sql, ["Cardiology"])
    with psycopg.connect(analyst(ledgered), autocommit=True) as conn:
        assert described(conn, sql, ["Cardiology"]) == expected

    async def attributes(dsn: str) -> list[tuple[str, str]]:
        params = conninfo_to_dict(dsn)
        conn = await asyncpg.connect(host=params["host"], port=int(params["port"]), user=params["user"],
                                     password=params["password"], database=params["dbname"], ssl=False)
        try:
            statement = await conn.prepare("SELECT * FROM visits WHERE visit_date > $1 LIMIT 0")
            rows = await statement.fetch(__import__("datetime").date(2020, 1, 1))
            return [(a.name, a.type.name) for a in statement.get_attributes()] + [("rows", str(len(rows)))]
        finally:
            await conn.close()

    assert asyncio.run(attributes(analyst(ledgered))) == asyncio.run(attributes(admin_direct(pg)))


@pytest.mark.parametrize("sql", [
    "SELECT * FROM visits LIMIT 1",
    "SELECT * FROM visits WHERE 1 = 1",
    "SELECT * FROM visits WHERE '1' = 1",  # a cast PostgreSQL resolves: not decided by pgshroud
    "SELECT * FROM visits WHERE cost < 0 LIMIT 5",
])
def test_row_samples_stay_refused_with_a_hint(ledgered, sql):
    with psycopg.connect(analyst(ledgered), autocommit=True) as conn:
        before = budget(conn)
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(sql)
        assert raised.value.sqlstate == "42501"
        assert "LIMIT 0" in (raised.value.diag.message_hint or ""), raised.value.diag.message_hint
        assert budget(conn) == before


@pytest.mark.parametrize(("sql", "words"), [
    ("SELECT pg_sleep(1), * FROM visits LIMIT 0", "pg_sleep"),
    ("SELECT * FROM visits, pgshroud.budget_ledger LIMIT 0", "pgshroud"),
    ("SELECT * FROM visits, pg_stats LIMIT 0", "pg_stats"),
    ("SELECT reltuples FROM pg_class, visits WHERE false", "row-count"),
    ("SELECT * FROM visits LIMIT 0; SELECT * FROM visits", "row-level"),
])
def test_everything_inside_a_probe_is_still_checked(ledgered, sql, words):
    with psycopg.connect(analyst(ledgered), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(sql)
        assert raised.value.sqlstate == "42501"
        assert words in str(raised.value), raised.value


def test_masked_role_reads_masked_rows_as_before(guarded, pg):
    """The clinician's LIMIT 0 reads the masked subquery, as any query of theirs: same columns."""
    sql = "SELECT * FROM patients LIMIT 0"
    with psycopg.connect(admin_direct(pg), autocommit=True) as direct:
        expected = described(direct, sql)
    with psycopg.connect(guarded.dsn("clinician", "health"), autocommit=True) as conn:
        assert described(conn, sql) == expected
        rows = conn.execute("SELECT ssn FROM patients LIMIT 1").fetchall()
        assert rows and rows[0][0].startswith("XXX-XX-")


def test_probes_and_samples_never_share_a_cached_plan():
    """LIMIT 0 and LIMIT 1 differ only by a literal, which the plan cache keys without: a probe's plan
    must never be served for a sample, nor the other way round."""
    from pgshroud.rewriter import Refuse
    from tests.rewriter_fixtures import context

    for _ in range(2):
        (probe,) = plan("SELECT * FROM visits LIMIT 0", context("analyst"))
        (sample,) = plan("SELECT * FROM visits LIMIT 1", context("analyst"))
        assert isinstance(probe, Rewrite) and probe.sql.endswith('AS "pgshroud_probe" WHERE false')
        assert isinstance(sample, Refuse)
        (false_where,) = plan("SELECT * FROM visits WHERE 1 = 0", context("analyst"))
        (true_where,) = plan("SELECT * FROM visits WHERE 1 = 1", context("analyst"))
        assert isinstance(false_where, Rewrite) and isinstance(true_where, Refuse)


@pytest.mark.parametrize(("where", "probe"), [
    ("false", True), ("FALSE", True), ("(false)", True), ("NOT TRUE", True), ("NOT (1 = 1)", True),
    ("1 = 0", True), ("1 <> 1", True), ("1 != 1", True), ("'a' = 'b'", True), ("-1 = 1", True),
    ("1.0 = 1.5", True), ("cost > 5 AND 1 = 0", True), ("1 = 0 AND cost > 5", True),
    ("true", False), ("1 = 1", False), ("1e0 <> 1.0", True), ("'1' = 1", False), ("E'a' = 'b'", False),
    ("cost > 5 OR 1 = 0", False), ("NOT FALSE", False), ("NULL", False), ("cost = 0", False),
    ("'a' = 'a' AND false", True), ("$$a$$ = 'b'", False),
])
def test_which_wheres_are_false_by_their_literals(health_db, where, probe):
    """PostgreSQL's reading is the truth: what pgshroud takes for false, PostgreSQL finds no row for."""
    from tests.rewriter_fixtures import context

    (planned,) = plan(f"SELECT * FROM visits WHERE {where}", context("analyst"))
    assert isinstance(planned, Rewrite) is probe, planned
    if probe:
        with psycopg.connect(health_db, autocommit=True) as conn:
            assert conn.execute(f"SELECT count(*) FROM visits WHERE {where}").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM visits").fetchone()[0] > 0
