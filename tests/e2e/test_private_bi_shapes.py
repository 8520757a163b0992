"""Private answers to SQL as BI tools and ORMs write it, through pgshroud
as the demo's analyst against real PostgreSQL: each statement is answered
with the column names and type OIDs PostgreSQL gives the same statement on a
direct connection, and values near the exact ones.

The shapes: names written schema.table.column and quoted (Metabase, Prisma),
outer queries over an aggregate (Power BI, Superset, Tableau), FETCH FIRST
(Looker), LIMIT/OFFSET bind parameters (SQLAlchemy's .limit(), knex), values
that read no row (now(), current_date, literals), and ORDER BY of text keys
under the database's collation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import io
from decimal import Decimal

import asyncpg
import psycopg
import pytest
import sqlalchemy as sa
from psycopg.conninfo import make_conninfo

from pgshroud.policies.errors import PolicyErrors
from pgshroud.policies.loader import load_policy, loads_policy
from pgshroud.policies.model import Budgets, EpsilonDelta
from pgshroud.proxy.budget.ledger import PostgresLedger
from pgshroud.proxy.commands.setup import run_setup
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.proxy.session.driver import SessionContext
from pgshroud.rewriter import PlanContext, plan
from pgshroud.rewriter.plans import Refuse, Release
from tests.fix_proxy import RunningProxy, proxy_config

ROOMY = Budgets(per_user=EpsilonDelta(10_000, 1.0))


def _proxy(pg, database_dsn: str, policy) -> RunningProxy:
    catalog = asyncio.run(read_catalog(database_dsn))
    upstream = make_conninfo(pg.dsn(), sslmode="disable")
    ledger = PostgresLedger(database_dsn, policy)
    shared = SessionContext(proxy_config(upstream), plan, ledger=ledger, policy=policy, catalog=lambda: catalog)
    return RunningProxy(shared)


@pytest.fixture(scope="module")
def bi_proxy(pg, health_db, health_policy):
    """pgshroud with the demo's healthcare policy, a ledger, and budgets large enough for every test here."""
    proxy = _proxy(pg, health_db, dataclasses.replace(health_policy, budgets=ROOMY))
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def health_catalog(health_db):
    return asyncio.run(read_catalog(health_db))


def analyst_dsn(proxy: RunningProxy, dbname: str = "health") -> str:
    return proxy.dsn("analyst", dbname, password="analyst")


def described(dsn: str, sql: str, *before: str) -> tuple[list[tuple[str, int]], list[tuple]]:
    """Column names and type OIDs of the RowDescription, and the rows (after the statements `before`)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in before:
            conn.execute(statement)
        cursor = conn.execute(sql)
        return [(c.name, c.type_code) for c in cursor.description], cursor.fetchall()


def near(private: object, exact: object) -> bool:
    """Close enough for one noisy, contribution-bounded count at epsilon 2:
    counts lose heavy users' extra rows (bounded per person), so the slack is wide."""
    if exact is None or private is None:
        return private is None or exact is None
    p, e = float(private), float(exact)  # type: ignore[arg-type]
    return abs(p - e) <= 0.6 * abs(e) + 1000


# (tool, SQL exactly as the tool writes it); all answered.
TOOL_QUERIES = [
    ("metabase count by",
     ('SELECT "public"."visits"."department" AS "department", COUNT(*) AS "count" FROM "public"."visits" '
     'GROUP BY "public"."visits"."department" ORDER BY "public"."visits"."department" ASC')),
    ("metabase median",
     ('SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY "public"."visits"."length_of_stay") AS "median" '
     'FROM "public"."visits"')),
    ("metabase joined",
     ('SELECT "Patients"."sex" AS "Patients__sex", COUNT(*) AS "count" FROM "public"."visits" '
     'LEFT JOIN "public"."patients" AS "Patients" ON "public"."visits"."patient_id" = "Patients"."patient_id" '
     'GROUP BY "Patients"."sex" ORDER BY "Patients"."sex" ASC')),
    ("metabase filtered sum",
     ('SELECT SUM("public"."visits"."cost") AS "sum", AVG("public"."visits"."length_of_stay") AS "avg" '
     'FROM "public"."visits" WHERE "public"."visits"."department" = \'Cardiology\'')),
    ("prisma",
     ('SELECT "public"."visits"."department", SUM("public"."visits"."cost") AS "_sum_cost", '
     'COUNT("public"."visits"."cost") FILTER (WHERE "public"."visits"."cost" > 100) AS "_count" '
     'FROM "public"."visits" WHERE 1=1 GROUP BY "public"."visits"."department" '
     'ORDER BY "public"."visits"."department" ASC')),
    ("power bi",
     ('select "_"."department", "_"."a0" from (select "rows"."department" as "department", count(1) as "a0" '
     'from (select "_"."department" from "public"."visits" "_") "rows" group by "department") "_" '
     'where not "_"."a0" is null limit 1000001')),
    ("superset",
     ("SELECT department AS department, count(*) AS count FROM public.visits GROUP BY department "
     "ORDER BY count DESC LIMIT 10000")),
    ("superset virtual dataset",
     ("SELECT department AS department, count(*) AS count FROM (SELECT * FROM visits) AS virtual_table "
     "GROUP BY department ORDER BY count DESC LIMIT 10000")),
    ("tableau",
     ('SELECT "visits"."department" AS "department", SUM(1) AS "cnt:visits:ok" FROM "public"."visits" "visits" '
     "GROUP BY 1")),
    ("looker",
     ('SELECT visits.department AS "visits.department", COUNT(*) AS "visits.count" FROM public.visits AS visits '
     "GROUP BY 1 ORDER BY 1 FETCH NEXT 500 ROWS ONLY")),
    ("outer arithmetic",
     ('SELECT t.department, t.n * 10 / 10 AS "same", round(t.a, 1) AS "a", t.a::float AS "af" FROM '
     "(SELECT department, count(*) AS n, avg(cost) AS a FROM visits GROUP BY 1) t "
     "WHERE t.n IS NOT NULL ORDER BY t.department OFFSET 2 ROWS FETCH FIRST 5 ROWS ONLY")),
    ("column aliases of the aggregate",
     "SELECT * FROM (SELECT department, count(*) FROM visits GROUP BY 1) AS t(d, n) WHERE n IS NOT NULL ORDER BY d"),
    ("nested wrappers",
     ("SELECT x.* FROM (SELECT y.department, y.n FROM (SELECT department, count(*) n FROM visits GROUP BY 1) y "
     "ORDER BY y.department LIMIT 5) x ORDER BY x.department DESC LIMIT 2")),
    ("unquoted aliases fold",
     "SELECT Src.department, count(*) FROM (SELECT department FROM visits) AS Src GROUP BY 1 ORDER BY 1"),
    ("cte wrapper",
     ('WITH "source" AS (SELECT department, count(*) AS "count" FROM visits GROUP BY department) '
     'SELECT "source"."department", "source"."count" FROM "source" ORDER BY "source"."department" DESC LIMIT 3')),
]


@pytest.mark.parametrize("tool, sql", TOOL_QUERIES, ids=[tool for tool, _ in TOOL_QUERIES])
def test_tools_get_postgresql_names_types_and_near_values(bi_proxy, raw_health, tool, sql):
    direct_columns, direct_rows = described(raw_health, sql)
    columns, rows = described(analyst_dsn(bi_proxy), sql, "SET pgshroud.epsilon = 2")
    assert columns == direct_columns
    assert len(rows) == len(direct_rows)
    keyed = [i for i, (_, oid) in enumerate(columns) if oid == 25]  # text columns are the group keys here
    counts = [i for i, (_, oid) in enumerate(columns) if oid == 20]  # sums and averages are too noisy to compare
    exact = {tuple(r[i] for i in keyed): r for r in direct_rows}
    if "ORDER BY" in sql.upper() and "count DESC" not in sql:
        assert [tuple(r[i] for i in keyed) for r in rows] == list(exact)  # the same keys in the same order
    for row in rows:
        truth = exact[tuple(row[i] for i in keyed)]
        assert all(near(row[i], truth[i]) for i in counts), (row, truth)


CONSTANTS = ("SELECT now(), current_date, current_timestamp, localtimestamp, now() - interval '1 day' AS yesterday, "
             "'x' AS label, 1e3, 1.50, NULL::int, NULL AS nothing, 7 AS seven, count(*), true, 'y'::varchar, "
             "3000000000, 'z', -2 FROM visits")


def test_values_that_read_no_row_are_postgresql_typed_and_spelt(bi_proxy, raw_health):
    direct_columns, (direct,) = described(raw_health, CONSTANTS)
    columns, (row,) = described(analyst_dsn(bi_proxy), CONSTANTS)
    assert columns == direct_columns
    assert row[5:11] == ("x", Decimal(1000), Decimal("1.50"), None, None, 7) == direct[5:11]
    assert row[1] == direct[1]  # current_date
    for mine, theirs in zip(row[:5], direct[:5]):
        assert abs(mine - theirs) < datetime.timedelta(minutes=1)
    assert near(row[11], direct[11])
    assert row[12:] == (True, "y", 3000000000, "z", -2) == direct[12:]


def test_now_keeps_the_sessions_time_zone_and_a_grouped_answer_carries_it(bi_proxy):
    with psycopg.connect(analyst_dsn(bi_proxy), autocommit=True) as conn:
        conn.execute("SET TimeZone = 'Asia/Tokyo'")
        (stamp, count), = conn.execute("SELECT now(), count(*) FROM visits").fetchall()
        grouped = conn.execute("SELECT department, localtimestamp AS at, count(*) FROM visits "
                               "GROUP BY 1 ORDER BY 1").fetchall()
        text = conn.execute("SELECT now()::text AS t, count(*) FROM visits").fetchone()[0]
    assert stamp.utcoffset() == datetime.timedelta(hours=9) and count >= 0
    assert len(grouped) == 16 and len({at for _, at, _ in grouped}) == 1
    assert text.endswith("+09")


def test_a_constant_is_answered_when_no_group_is_released(bi_proxy):
    # state has no public domain: groups pass partition selection, and none exists here.
    sql = "SELECT 'none' AS label, state, count(*) FROM patients WHERE birth_date > '3000-01-01' GROUP BY 2"
    columns, rows = described(analyst_dsn(bi_proxy), sql)
    assert columns == [("label", 25), ("state", 25), ("count", 20)] and rows == []


def test_limit_and_offset_bind_parameters(bi_proxy, raw_health):
    sql = "SELECT department, count(*) AS n FROM visits GROUP BY 1 ORDER BY 1 LIMIT $1 OFFSET $2"
    direct = [r[0] for r in described(raw_health, "SELECT DISTINCT department FROM visits ORDER BY 1")[1]]

    async def run():
        conn = await asyncpg.connect(f"postgresql://analyst:analyst@{bi_proxy.host}:{bi_proxy.port}/health"
                                     "?sslmode=disable")
        try:
            statement = await conn.prepare(sql)
            results = [await statement.fetch(*values) for values in ((3, 2), (None, None), (0, 0), (100, 15))]
            empty = await conn.fetch("SELECT state, count(*) FROM patients WHERE birth_date > '3000-01-01' "
                                     "GROUP BY 1 LIMIT $1", 5)
            single = await conn.fetch("SELECT count(*) FROM visits OFFSET $1", 1)
            with pytest.raises(asyncpg.PostgresError) as failed:
                await statement.fetch(-1, 0)
            return results, empty, single, failed.value
        finally:
            await conn.close()

    (three, every, none, last), empty, single, failed = asyncio.run(run())
    assert [r["department"] for r in three] == direct[2:5]
    assert [r["department"] for r in every] == direct
    assert none == [] and [r["department"] for r in last] == direct[15:]
    assert empty == [] and single == []
    # Refused at Bind, before the charge, with PostgreSQL's own error.
    assert failed.sqlstate == "2201W" and str(failed) == "LIMIT must not be negative"


def test_sqlalchemy_limit_binds_a_parameter(bi_proxy):
    engine = sa.create_engine(f"postgresql+psycopg://analyst:analyst@{bi_proxy.host}:{bi_proxy.port}/health"
                              "?sslmode=disable")
    visits = sa.table("visits", sa.column("department"), sa.column("cost"), schema="public")
    query = (sa.select(visits.c.department, sa.func.count().label("n"))
             .group_by(visits.c.department).order_by(visits.c.department).limit(4).offset(1))
    try:
        with engine.connect() as conn:
            rows = conn.execute(query).all()
            again = conn.execute(query.limit(2)).all()
    finally:
        engine.dispose()
    assert [r.department for r in rows][:2] == [r.department for r in again]
    assert len(rows) == 4 and len(again) == 2


@pytest.mark.parametrize("sql, reason", [
    ("SELECT count(*) FROM visits v WHERE public.visits.cost > 1", "names no table of the FROM clause"),
    ("SELECT other.visits.department, count(*) FROM visits GROUP BY 1", "names no table of the FROM clause"),
    ("SELECT department, count(*) FROM visits GROUP BY 1 FETCH FIRST 2 ROWS WITH TIES", "WITH TIES"),
    ("SELECT t.n, count(*) FROM (SELECT department, count(*) AS n FROM visits GROUP BY 1) t GROUP BY 1",
     "must GROUP BY the privacy unit"),
    ("SELECT department FROM (SELECT department, count(*) AS n FROM visits GROUP BY 1) t GROUP BY 1",
     "GROUP BY is not supported in a query over a private aggregate"),
    ("SELECT t.x FROM (SELECT department, count(*) AS n FROM visits GROUP BY 1) t", 'column "x" does not exist'),
    ("SELECT upper(t.department) FROM (SELECT department, count(*) AS n FROM visits GROUP BY 1) t",
     "cannot be applied to the columns of a private aggregate"),
    ("SELECT current_time, count(*) FROM visits", "is not supported"),
    ("SELECT v.a, count(*) FROM visits AS v(a) GROUP BY 1", "column aliases in FROM"),
    ("SELECT count(*) FROM visits LIMIT -1", "LIMIT takes a non-negative integer"),
    ("SELECT count(*) FROM visits LIMIT $1::text", "the argument of LIMIT must be a number"),
    ("SELECT max(birth_date), count(*) FROM patients", "Add bounds: [<first date>, <last date>]"),
    ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY visit_date) FROM visits", "needs a numeric argument"),
])
def test_refusals_say_why(health_policy, health_catalog, sql, reason):
    context = PlanContext(user="analyst", policy=health_policy, role=health_policy.role_for("analyst"),
                          catalog=health_catalog, privacy={})
    (only,) = plan(sql, context)
    assert isinstance(only, Refuse), only
    assert reason in only.message or reason in (only.hint or ""), only


def test_outer_queries_read_only_released_values(health_policy, health_catalog):
    """What an outer query evaluates is built from the aggregate's keys,
    noisy aggregates and constants only: nothing of it runs on rows."""
    sql = ("SELECT t.department, t.n + 1 AS m FROM (SELECT department, count(*) AS n FROM visits GROUP BY 1) t "
           "WHERE t.n > 10 ORDER BY m DESC LIMIT $1")
    context = PlanContext(user="analyst", policy=health_policy, role=health_policy.role_for("analyst"),
                          catalog=health_catalog, privacy={})
    (only,) = plan(sql, context)
    assert isinstance(only, Release)
    query = only.spec.query
    (stage,) = query.outer
    expressions = [o.expression for o in query.outputs] + [stage.where] + [i.expression for i in stage.order]
    variables = {v.name for e in expressions for v in e.walk() if v.key == "var"}
    assert variables <= {"key0", "agg0"} and stage.limit == "const0"
    assert query.constants[0].sql == "CAST(($1) AS bigint)" and query.constants[0].check == "limit"
    assert only.spec.bound_parameters == ((1, "limit"),)


COLLATED_POLICY = """
version: 1
default_role: deny
roles:
  analyst: {access: aggregate, users: [analyst]}
protected_tables:
  stays:
    privacy_unit: person
    contribution: {max_groups_per_unit: 1, max_rows_per_group: 1}
    columns:
      person: pseudonym
      ward: {mask: redact, roles: {analyst: none}, public_domain: [alpha, Beta, gamma, Delta]}
      label: {mask: redact, roles: {analyst: none}}
"""


@pytest.fixture(scope="module")
def collated(pg, health_db, tmp_path_factory):
    """A database whose text columns sort under ICU's root collation ('a' < 'B'),
    unlike the C collation of its default (and Python's order of strings)."""
    pg.execute("DROP DATABASE IF EXISTS bi_collated")
    pg.execute("CREATE DATABASE bi_collated")
    pg.execute('CREATE TABLE stays (person int, ward text COLLATE "und-x-icu", label text COLLATE "und-x-icu")',
               dbname="bi_collated")
    pg.execute("INSERT INTO stays SELECT i, (ARRAY['alpha','Beta','gamma','Delta'])[1 + i % 4], "
               "(ARRAY['alpha','Beta','gamma','Delta'])[1 + i % 4] FROM generate_series(1, 4000) AS i",
               dbname="bi_collated")
    pg.execute("GRANT SELECT ON stays TO analyst", dbname="bi_collated")
    status = run_setup(pg.admin_dsn("bi_collated"), key_env=None, key_file=None, rotate_key=False,
                       grant_to=["analyst"], out=io.StringIO())
    assert status == 0
    path = tmp_path_factory.mktemp("collated") / "policy.yaml"
    path.write_text(COLLATED_POLICY)
    policy = dataclasses.replace(load_policy(path), budgets=ROOMY)
    dsn = pg.admin_dsn("bi_collated")
    proxy = _proxy(pg, dsn, policy)
    yield proxy, dsn
    proxy.stop()


@pytest.mark.parametrize("key", ["ward", "label"])
def test_order_by_a_text_key_follows_the_database_collation(collated, key):
    proxy, dsn = collated
    sql = f"SELECT {key}, count(*) FROM stays GROUP BY 1 ORDER BY 1"
    direct = [r[0] for r in described(dsn, sql)[1]]
    assert direct == ["alpha", "Beta", "Delta", "gamma"]  # not Python's (or C's) order
    with psycopg.connect(analyst_dsn(proxy, "bi_collated"), autocommit=True) as conn:
        conn.execute("SET pgshroud.delta = 1e-5")
        ascending = [r[0] for r in conn.execute(sql).fetchall()]
        descending = [r[0] for r in conn.execute(sql.replace("ORDER BY 1", "ORDER BY 1 DESC")).fetchall()]
    assert ascending == direct
    assert descending == direct[::-1]


# A differential sweep: the shapes above composed (names as tools write
# them, aggregates, GROUP BY and ORDER BY forms, LIMIT/FETCH and bind
# parameters, constants, outer queries), each one run directly and as the
# analyst's bounded SQL against the same PostgreSQL. PostgreSQL accepts every
# composition, so pgshroud must answer it: a bounded SQL that PostgreSQL
# rejects is a pgshroud bug, as is an answer whose names or types differ.

FROMS = [  # (FROM clause, ways to qualify a column of it)
    ("visits", ["", "visits.", '"visits".', "public.visits."]),
    ('"public"."visits"', ["", '"visits".', '"public"."visits".']),
    ("public.visits AS v", ["v.", '"v".']),
    ('"public"."visits" "V"', ['"V".']),
    ("(SELECT * FROM visits) AS virtual_table", ["", "virtual_table."]),
    ('(select "_"."department", "_"."cost", "_"."length_of_stay", "_"."patient_id" from "public"."visits" "_") "rows"',
     ['"rows".', ""]),
]
AGGREGATES = ["count(*)", "sum({q}cost)", "avg({q}length_of_stay)",
              "percentile_cont(0.5) WITHIN GROUP (ORDER BY {q}cost)",
              "count({q}cost) FILTER (WHERE {q}cost > 100)", "COUNT(DISTINCT {q}patient_id)"]
ORDERS = ["", " ORDER BY 1", " ORDER BY {key}", ' ORDER BY "n" DESC, 1']
TAILS = [("", ()), (" LIMIT 3", ()), (" FETCH FIRST 3 ROWS ONLY", ()), (" OFFSET 1 LIMIT 2", ()),
         (" LIMIT $1", (b"4",)), (" LIMIT $1 OFFSET $2", (b"2", b"1")), (" LIMIT $1", (None,))]
CONSTANTS_IN = ["", "now() AS at, ", "'x' AS label, ", "current_date, "]
WRAPPERS = ["{inner}", 'SELECT * FROM ({inner}) "_" WHERE "_"."n" IS NOT NULL',
            'SELECT "_"."department", "_"."n" * 2 AS twice FROM ({inner}) "_" ORDER BY 1 LIMIT 5',
            ("SELECT t.department, round(t.n::numeric, 1) AS r, 'k' AS tag FROM ({inner}) AS t "
            "WHERE t.department <> 'Psychiatry' AND NOT t.n IS NULL ORDER BY t.n DESC, t.department")]


def _composed(rng) -> tuple[str, tuple]:
    source, qualifiers = rng.choice(FROMS)
    q = rng.choice(qualifiers)
    key = f"{q}department"
    aggregate = rng.choice(AGGREGATES).format(q=q)
    constant = rng.choice(CONSTANTS_IN)
    group = rng.choice([key, "2" if constant else "1"])
    order = rng.choice(ORDERS).format(key=key)
    tail, params = rng.choice(TAILS)
    wrapper = rng.choice(WRAPPERS)
    if wrapper != "{inner}":
        tail, params = rng.choice(TAILS[:4])  # the outer query's own LIMIT comes after
    inner = (f"SELECT {constant}{key}, {aggregate} AS n FROM {source} "
             f"GROUP BY {group}{order}{tail}")
    return wrapper.format(inner=inner), params


def _run(conn, sql: str, params: tuple) -> tuple[list[tuple[str, int]], list[tuple]]:
    """Names, type OIDs and text rows, through libpq's extended protocol."""
    result = conn.pgconn.exec_params(sql.encode(), list(params))
    if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
        raise AssertionError(f"{result.error_message.decode()}\n{sql}")
    columns = [(result.fname(i).decode(), result.ftype(i)) for i in range(result.nfields)]
    rows = [tuple(None if (v := result.get_value(r, c)) is None else v.decode() for c in range(result.nfields))
            for r in range(result.ntuples)]
    return columns, rows


def test_composed_shapes_are_answered_as_postgresql_reads_them(health_db, health_policy, health_catalog):
    import random

    from pgshroud.rewriter.plans import RawResult

    context = PlanContext(user="analyst", policy=health_policy, role=health_policy.role_for("analyst"),
                          catalog=health_catalog, privacy={})
    rng = random.Random(10)
    seen = 0
    with psycopg.connect(health_db, autocommit=True) as conn:
        for _ in range(300):
            sql, params = _composed(rng)
            direct_columns, _ = _run(conn, sql, params)
            (only,) = plan(sql, context)
            assert isinstance(only, Release), (sql, only)
            _, raw = _run(conn, only.sql, params)
            answer = only.spec.finalize(RawResult(tuple(n for n, _ in direct_columns), (), tuple(raw)))
            assert [(c.name, c.type_oid) for c in answer.columns] == direct_columns, sql
            assert all(len(row) == len(direct_columns) for row in answer.rows)
            seen += 1
    assert seen == 300


@pytest.mark.parametrize("sql", [
    "SELECT t.{key} FROM (SELECT {key}, count(*) FROM stays GROUP BY 1) t WHERE t.{key} > 'alpha' ORDER BY 1",
    ("SELECT {key}, count(*) > -1000000 AS counted FROM stays GROUP BY 1 HAVING {key} > 'alpha' AND count(*) IS NOT NULL "
    "ORDER BY 1"),
    "SELECT t.{key}, 'b' <= t.{key} AS after_b FROM (SELECT {key}, count(*) FROM stays GROUP BY 1) t ORDER BY 1 DESC",
])
@pytest.mark.parametrize("key", ["ward", "label"])
def test_comparisons_of_a_text_key_follow_the_database_collation(collated, key, sql):
    proxy, dsn = collated
    sql = sql.format(key=key)
    direct = described(dsn, sql)
    with psycopg.connect(analyst_dsn(proxy, "bi_collated"), autocommit=True) as conn:
        conn.execute("SET pgshroud.delta = 1e-5")
        cursor = conn.execute(sql)
        mine = [(c.name, c.type_code) for c in cursor.description], cursor.fetchall()
    assert mine == direct


@pytest.mark.parametrize("sql", [
    # Superset's and Metabase's ratios guard the divisor with NULLIF.
    "SELECT count(*)::float / NULLIF(count(DISTINCT patient_id), 0) AS per_patient, NULLIF(count(*), 0) FROM visits",
    # Django's joins USING the key name it unqualified: the one merged column.
    ("SELECT count(DISTINCT patient_id), count(*) FROM visits AS V LEFT JOIN patients AS Pat USING (patient_id) "
    "WHERE patient_id > 5"),
    "SELECT CAST(extract(month FROM visit_date) AS integer), count(*) FROM visits GROUP BY 1 ORDER BY 1",
    # A function of a group key (Metabase casts its month buckets to date): a key of its own that groups no differently.
    ("SELECT CAST(date_trunc('month', visit_date) AS date) AS month, count(*) FROM visits "
    "GROUP BY date_trunc('month', visit_date) ORDER BY 1"),
    "SELECT lower(department) AS d, count(*) FROM visits GROUP BY department ORDER BY lower(department)",
    # Looker groups by its dimension in parentheses and formats it with to_char.
    ("SELECT to_char(date_trunc('month', visits.visit_date), 'YYYY-MM') AS m, coalesce(sum(visits.cost), 0) AS c "
    "FROM public.visits AS visits GROUP BY (date_trunc('month', visits.visit_date)) ORDER BY 1 DESC LIMIT 500"),
    # Tableau's FIXED level of detail: each patient's first visit date, joined back IS NOT DISTINCT FROM the unit.
    ('SELECT CAST(EXTRACT(YEAR FROM "t0"."first") AS BIGINT) AS "yr", COUNT(DISTINCT "visits"."patient_id") AS "n" '
    'FROM "public"."visits" "visits" INNER JOIN (SELECT "visits"."patient_id" AS "patient_id", '
    'MIN("visits"."visit_date") AS "first" FROM "public"."visits" "visits" GROUP BY 1) "t0" '
    'ON ("visits"."patient_id" IS NOT DISTINCT FROM "t0"."patient_id") GROUP BY 1 ORDER BY 1'),
    # Grafana and Superset wrap a query that has a WITH of its own.
    ('SELECT * FROM (WITH "q" AS (SELECT department, count(*) AS n FROM visits GROUP BY 1 ORDER BY 1) '
    'SELECT * FROM "q" ORDER BY 1) "_1" LIMIT 1000001'),
])
def test_more_tool_spellings_are_answered(bi_proxy, raw_health, sql):
    direct_columns, direct_rows = described(raw_health, sql)
    columns, rows = described(analyst_dsn(bi_proxy), sql, "SET pgshroud.epsilon = 2")
    assert columns == direct_columns
    assert len(rows) <= len(direct_rows)  # small groups may not pass partition selection


@pytest.mark.parametrize("group_by", ["department", "1, 2"])
def test_a_function_of_a_public_key_pairs_each_key_with_its_own_value(bi_proxy, group_by):
    """A CASE of literals has a public domain of its own, but as a function of
    another key it must not be paired with every value of that key."""
    sql = ("SELECT department, CASE WHEN department = 'Surgery' THEN 'a' ELSE 'b' END AS c, count(*) "
           f"FROM visits GROUP BY {group_by} ORDER BY 1")
    _, rows = described(analyst_dsn(bi_proxy), sql, "SET pgshroud.epsilon = 2")
    assert len({department for department, _, _ in rows}) == len(rows)
    assert all(c == ("a" if department == "Surgery" else "b") for department, c, _ in rows)


@pytest.mark.parametrize("condition, params", [
    ("department IN (%s::varchar, %s::varchar)", ["Surgery", "Cardiology"]),
    ("department IN ('Surgery', 'Cardiology', 'No Such Department')", []),
    ("department = %s", ["Surgery"]),
    ("department <> 'Surgery' AND department NOT IN (%s)", ["Cardiology"]),
    ("department IS NULL", []),
    ("department IS NOT NULL AND cost > 100", []),
    ("sex = 'F' AND department = 'Neurology'", []),
    ("(department = 'Surgery' OR department = %s OR department IS NULL) AND sex = 'M'", ["Oncology"]),
])
def test_conditions_on_a_public_key_narrow_its_released_groups(bi_proxy, raw_health, condition, params):
    """A public key's groups are those of its domain that pass the WHERE's
    conditions on the key, as PostgreSQL forms no other group: evaluated
    upstream on the public values, with the Bind's values."""
    sql = f"SELECT department, sex, count(*) FROM visits JOIN patients USING (patient_id) WHERE {condition} " \
          "GROUP BY 1, 2 ORDER BY 1, 2"
    with psycopg.connect(raw_health, autocommit=True) as conn:
        direct = {r[0] for r in conn.execute(sql, params or None, prepare=True).fetchall()}
    with psycopg.connect(analyst_dsn(bi_proxy), autocommit=True) as conn:
        conn.execute("SET pgshroud.epsilon = 2")
        released = {r[0] for r in conn.execute(sql, params or None, prepare=True).fetchall()}
    # Public keys: every department that passes is released (paired with each sex, some pairs empty).
    assert released == direct


def test_a_subquery_offset_is_answered_only_when_it_skips_nothing(bi_proxy, health_policy, health_catalog):
    """Prisma aggregates over (SELECT ... OFFSET $1) AS "sub" and binds 0: an
    OFFSET that skips no row is dropped; any other would skip rows chosen by
    other people's rows, so a literal is refused and a bound value fails."""
    sql = ('SELECT count(*) AS n, sum("cost") AS s FROM (SELECT "public"."visits"."cost" FROM "public"."visits" '
           'WHERE "public"."visits"."department" = $1 OFFSET $2) AS "sub"')
    context = PlanContext(user="analyst", policy=health_policy, role=health_policy.role_for("analyst"),
                          catalog=health_catalog, privacy={})
    (release,) = plan(sql, context)
    assert isinstance(release, Release) and release.spec.bound_parameters == ((2, "zero_offset"),)
    (refused,) = plan(sql.replace("$2", "2"), context)
    assert isinstance(refused, Refuse) and "OFFSET 0" in refused.message and refused.hint

    async def run():
        conn = await asyncpg.connect(f"postgresql://analyst:analyst@{bi_proxy.host}:{bi_proxy.port}/health"
                                     "?sslmode=disable")
        try:
            await conn.execute("SET pgshroud.epsilon = 2")
            statement = await conn.prepare(sql)
            answered = [await statement.fetch("Surgery", value) for value in (0, None)]
            with pytest.raises(asyncpg.PostgresError):
                await statement.fetch("Surgery", 3)
            return answered
        finally:
            await conn.close()

    answered = asyncio.run(run())
    assert all(len(rows) == 1 and rows[0]["n"] >= 0 for rows in answered)


def test_a_group_by_without_aggregates_releases_keys_that_pass_selection(bi_proxy, raw_health, health_policy,
                                                                           health_catalog):
    """Metabase's field values scan: the keys that have rows, each released
    only through partition selection, never because a public domain lists it."""
    sql = 'SELECT "public"."visits"."department" AS "department" FROM "public"."visits" ' \
          'GROUP BY "public"."visits"."department" ORDER BY "public"."visits"."department" ASC LIMIT 5000'
    context = PlanContext(user="analyst", policy=health_policy, role=health_policy.role_for("analyst"),
                          catalog=health_catalog, privacy={"delta": "1e-6"})
    (release,) = plan(sql, context)
    assert isinstance(release, Release) and release.spec.cost.delta > 0 and release.spec.cost.epsilon > 0
    direct_columns, direct_rows = described(raw_health, sql)
    columns, rows = described(analyst_dsn(bi_proxy), sql, "SET pgshroud.epsilon = 2")
    assert columns == direct_columns and set(rows) <= set(direct_rows) and rows == sorted(rows)
    # No row has such a cost: a public domain would still list every department.
    _, none = described(analyst_dsn(bi_proxy), "SELECT department FROM visits WHERE cost > 1e12 GROUP BY 1")
    assert none == []


def test_min_and_max_of_a_date_are_private_quantiles_typed_date(bi_proxy, raw_health, health_policy):
    """Django's date range for a date picker: min and max of a date with
    bounds in the policy are the 1st and 99th percentiles of its day number,
    typed date as PostgreSQL types min(date)."""
    sql = 'SELECT MAX("visits"."visit_date") AS "hi", MIN("visits"."visit_date") AS "lo", ' \
          'percentile_disc(0.5) WITHIN GROUP (ORDER BY visit_date) AS "mid" FROM "visits"'
    direct_columns, [(high, low, _)] = described(raw_health, sql)
    columns, [(private_high, private_low, private_middle)] = described(analyst_dsn(bi_proxy), sql,
                                                                        "SET pgshroud.epsilon = 2")
    assert columns == direct_columns and direct_columns[0][1] == 1082
    first, last = next(t for n, t in health_policy.protected_tables.items() if n.endswith("visits")).columns["visit_date"].date_bounds
    assert all(isinstance(d, datetime.date) and first <= d <= last
               for d in (private_high, private_low, private_middle))
    # Within a fifth of the policy's range of the exact values (the median, a small group's, is mostly noise).
    slack = (last - first) / 5
    assert abs(private_high - high) <= slack and abs(private_low - low) <= slack


@pytest.mark.parametrize("bounds, problem", [
    ("[2020-01-01, 2019-12-31]", "low before high"),
    ("[2020-01-01, 2020-13-01]", "two dates written YYYY-MM-DD"),
    ("[2020-01-01, 5]", "two dates written YYYY-MM-DD"),
])
def test_date_bounds_in_a_policy_are_checked(bounds, problem):
    text = f"""version: 1
roles:
  analyst: {{access: aggregate}}
protected_tables:
  visits:
    privacy_unit: patient_id
    columns:
      visit_date: {{mask: none, bounds: {bounds}}}
"""
    with pytest.raises(PolicyErrors) as raised:
        loads_policy(text)
    message = str(raised.value)
    assert problem in message and "visit_date.bounds" in message and "<string>:8:" in message, message


def test_date_bounds_load_as_dates():
    policy = loads_policy("""version: 1
roles:
  analyst: {access: aggregate}
protected_tables:
  visits:
    privacy_unit: patient_id
    columns:
      visit_date: {mask: none, bounds: [2015-01-01, 2025-12-31]}
""")
    column = next(t for n, t in policy.protected_tables.items() if n.endswith("visits")).columns["visit_date"]
    assert column.date_bounds == (datetime.date(2015, 1, 1), datetime.date(2025, 12, 31)) and column.bounds is None


@pytest.mark.parametrize("frame", ["", " ROWS UNBOUNDED PRECEDING", " RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
                                   " ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"])
def test_running_totals_over_released_groups(bi_proxy, raw_health, frame):
    """Metabase's cumulative sum and count: SUM(<aggregate>) OVER (ORDER BY
    <group keys>) is a running total of the released values in key order
    (text keys under the database's collation), typed as PostgreSQL types
    it, computed before ORDER BY and LIMIT."""
    sql = ("SELECT department AS d, count(*) AS n, sum(cost) AS s, "
           f"SUM(COUNT(*)) OVER (ORDER BY department{frame}) AS cn, "
           f"SUM(SUM(cost)) OVER (ORDER BY department DESC{frame}) AS cs "
           "FROM visits GROUP BY department ORDER BY 1 LIMIT 6")
    direct_columns, direct_rows = described(raw_health, sql)
    columns, rows = described(analyst_dsn(bi_proxy), sql, "SET pgshroud.epsilon = 2")
    # department has a public domain: every department is released, in the direct answer's order.
    assert columns == direct_columns and [r[0] for r in rows] == [r[0] for r in direct_rows]
    running = 0
    for _, n, _, cn, _ in rows:
        running += n
        assert cn == running
    # The descending total of the last department is its own sum, and of the first every department's.
    everything = described(analyst_dsn(bi_proxy), sql.replace(" LIMIT 6", ""), "SET pgshroud.epsilon = 2")[1]
    # (Values are sent rounded to 6 decimals: their sum may differ in the last places.)
    assert abs(everything[-1][4] - everything[-1][2]) < Decimal("0.001")
    assert abs(everything[0][4] - sum(r[2] for r in everything)) < Decimal("0.001")


@pytest.mark.parametrize("window", [
    "SUM(SUM(cost)) OVER (PARTITION BY department ORDER BY department)",
    "SUM(SUM(cost)) OVER (ORDER BY department ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)",
    "AVG(SUM(cost)) OVER (ORDER BY department)",
    "SUM(SUM(cost)) OVER (ORDER BY sum(cost))",
    "SUM(SUM(cost)) OVER (ORDER BY department) + 1",
])
def test_other_windows_are_refused(health_policy, health_catalog, window):
    context = PlanContext(user="analyst", policy=health_policy, role=health_policy.role_for("analyst"),
                          catalog=health_catalog, privacy={})
    (only,) = plan(f"SELECT department, {window} FROM visits GROUP BY 1", context)
    assert isinstance(only, Refuse) and only.hint, only
