"""Functions that run without a call in the text: operators, casts, types,
domains and attribute notation, resolved through the catalog snapshot.

The database's owner creates, in the demo's health database, objects that
each hand out a raw SSN: an operator `->` over two integers and a prefix
operator, a domain whose CHECK puts the SSN into an error, a composite type
holding that domain, a cast from integer to a user type, and functions that
attribute notation calls (`(1).f`, `d.f`). Through pgshroud the masked
clinician and the aggregate analyst are refused each one with 42501 and a
message that says how to allow it; admin (raw) still runs them. Ordinary
built-in operators and the BI tools' catalog queries still pass, and an
implicit cast from a system type refuses every statement.

Then the rules themselves on hand-built catalogs: how runs of operator
characters are read, which operators, attribute calls, types and casts a
statement may use, and allow_functions lifting each refusal.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.proxy.session.driver import SessionContext
from pgshroud.rewriter import PlanContext, plan
from pgshroud.rewriter.catalog import Cast, Catalog, CatalogType, Operator
from pgshroud.rewriter.functions import FunctionRefused, called_functions, check_functions, operator_runs
from pgshroud.rewriter.plans import Refuse
from pgshroud.rewriter.statements import split_statements
from tests.e2e.test_bi_catalog import CATALOG_QUERIES
from tests.fix_proxy import RunningProxy, proxy_config
from tests.rewriter_fixtures import CATALOG, POLICY

POLICY_STATE = "42501"
NON_RAW = ("clinician", "analyst")

OBJECTS = [
    """CREATE FUNCTION public.leak_ssn_of(id int) RETURNS text LANGUAGE sql STABLE
       AS 'SELECT ssn FROM public.patients WHERE patient_id = id'""",
    """CREATE FUNCTION public.leak_ssn_by_id(id int, unused int) RETURNS text LANGUAGE sql STABLE
       AS 'SELECT public.leak_ssn_of(id)'""",
    "CREATE OPERATOR public.-> (LEFTARG = int, RIGHTARG = int, FUNCTION = public.leak_ssn_by_id)",
    "CREATE OPERATOR public.!!! (RIGHTARG = int, FUNCTION = public.leak_ssn_of)",
    # The CHECK casts the SSN to int: the error quotes it.
    "CREATE DOMAIN public.leak_probe AS int CHECK (public.leak_ssn_of(VALUE)::int IS NOT NULL)",
    "CREATE TYPE public.leak_box AS (probe public.leak_probe)",
    "CREATE TYPE public.leak_ssn AS (ssn text)",
    """CREATE FUNCTION public.leak_to_ssn(id int) RETURNS public.leak_ssn LANGUAGE sql STABLE
       AS 'SELECT ROW(public.leak_ssn_of(id))::public.leak_ssn'""",
    "CREATE CAST (int AS public.leak_ssn) WITH FUNCTION public.leak_to_ssn(int)",
    """CREATE FUNCTION public.leak_any_ssn(d public.diagnoses) RETURNS text LANGUAGE sql STABLE
       AS 'SELECT public.leak_ssn_of(1)'""",
]
DROPS = [
    "DROP CAST IF EXISTS (int AS public.leak_ssn)",
    "DROP FUNCTION IF EXISTS public.leak_any_ssn(public.diagnoses), public.leak_to_ssn(int)",
    "DROP TYPE IF EXISTS public.leak_box, public.leak_ssn",
    "DROP DOMAIN IF EXISTS public.leak_probe",
    "DROP OPERATOR IF EXISTS public.-> (int, int), public.!!! (none, int)",
    "DROP FUNCTION IF EXISTS public.leak_ssn_by_id(int, int), public.leak_ssn_of(int)",
]

# Each statement hands out patient 1's SSN, in its rows or its error.
LEAKS = {
    "operator": "SELECT 1 -> 0",
    "operator, qualified": "SELECT 1 OPERATOR(public.->) 0",
    "operator, no spaces": "SELECT 1->0",
    "prefix operator": "SELECT !!! 1",
    "domain CHECK": "SELECT 1::leak_probe",
    "domain CHECK, CAST": "SELECT CAST(1 AS public.leak_probe)",
    "domain in a composite type": "SELECT (ROW(1)::leak_box).probe",
    "cast to a user type": "SELECT (1::leak_ssn).ssn",
    "cast to a user type, CAST": "SELECT (CAST(1 AS leak_ssn)).ssn",
    "attribute notation on a value": "SELECT (1).leak_ssn_of",
    "attribute notation on a row": "SELECT d.leak_any_ssn FROM diagnoses d LIMIT 1",
    "attribute notation on a parenthesised row": "SELECT (d).leak_any_ssn FROM diagnoses d LIMIT 1",
}
# Built-in operators, casts and attribute calls with those objects present.
ORDINARY = [
    "SELECT 1 = 1, 2 < 3, 2 >= 1, 1 <> 2, 1 != 2, 'a' || 'b', 7 % 3, -1, 2 ^ 3",
    "SELECT '{\"a\": 1}'::jsonb @> '{}'::jsonb, 'abc' LIKE 'a%', 'abc' ~~ 'a%', 'abc' ~ 'b', '7'::int + 1",
    "SELECT code FROM diagnoses WHERE code IN ('E11.9', 'I10') OR code BETWEEN 'A' AND 'B' ORDER BY code",
    "SELECT (1).abs, (d.code).length FROM diagnoses d LIMIT 1",
    "SELECT 1 OPERATOR(pg_catalog.+) 2, ARRAY[1] && ARRAY[1]",
    "SELECT '->' AS arrow, 1 AS \"->\"",
]


def _owner(pg) -> str:
    return pg.dsn(user="admin", password="admin", dbname="health")


def _run_all(dsn: str, statements: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _proxy(pg, policy, catalog: Catalog) -> RunningProxy:
    upstream = make_conninfo(pg.dsn(), sslmode="disable")
    return RunningProxy(SessionContext(proxy_config(upstream), plan, policy=policy, catalog=lambda: catalog))


@pytest.fixture(scope="module")
def owner_objects(pg, health_db) -> Iterator[Catalog]:
    """The objects above, created by the database's owner; the catalog snapshot that sees them."""
    _run_all(_owner(pg), DROPS)
    _run_all(_owner(pg), OBJECTS)
    try:
        yield asyncio.run(read_catalog(health_db))
    finally:
        _run_all(_owner(pg), DROPS)


@pytest.fixture(scope="module")
def shrouded(pg, owner_objects, health_policy) -> Iterator[RunningProxy]:
    proxy = _proxy(pg, health_policy, owner_objects)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def ssn(raw_health) -> str:
    with psycopg.connect(raw_health) as conn:
        return conn.execute("SELECT ssn FROM patients WHERE patient_id = 1").fetchone()[0]


def _outcome(dsn: str, sql: str) -> tuple[str | None, str]:
    """(SQLSTATE or None, the rows or the error message as text)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            rows = conn.execute(sql).fetchall()
        except psycopg.Error as exc:
            return exc.sqlstate, str(exc)
        assert conn.execute("SELECT 1").fetchone() == (1,)
        return None, repr(rows)


# -- end to end ---------------------------------------------------------------


@pytest.mark.parametrize("case", LEAKS)
def test_admin_gets_the_raw_ssn_so_each_object_is_a_real_leak(shrouded, ssn, case):
    _, text = _outcome(shrouded.dsn("admin", "health"), LEAKS[case])
    assert ssn in text, case


@pytest.mark.parametrize("role", NON_RAW)
@pytest.mark.parametrize("case", LEAKS)
def test_non_raw_roles_are_refused_each_object(shrouded, ssn, role, case):
    sqlstate, text = _outcome(shrouded.dsn(role, "health"), LEAKS[case])
    assert ssn not in text, case
    assert sqlstate == POLICY_STATE, f"{case}: {text}"
    assert "allow_functions" in text, text


@pytest.mark.parametrize("role", NON_RAW)
def test_refusals_name_what_runs_and_how_to_allow_it(shrouded, role):
    messages = {case: _outcome(shrouded.dsn(role, "health"), LEAKS[case])[1] for case in LEAKS}
    assert 'operator public.-> (function public.leak_ssn_by_id)' in messages["operator"]
    assert '"public.leak_ssn_by_id" or \'public."->"\'' in messages["operator"]
    assert "operator public.!!! (function public.leak_ssn_of)" in messages["prefix operator"]
    assert "type public.leak_probe runs CHECK constraint leak_probe_check" in messages["domain CHECK"]
    assert 'through "leak_box"' in messages["domain in a composite type"]
    assert "runs function public.leak_to_ssn" in messages["cast to a user type"]
    assert '"public.leak_ssn_of" (".leak_ssn_of" calls it: attribute notation)' in messages[
        "attribute notation on a value"]
    assert '"public.leak_any_ssn"' in messages["attribute notation on a row"]


@pytest.mark.parametrize("role", NON_RAW)
@pytest.mark.parametrize("sql", ORDINARY)
def test_built_in_operators_pass_beside_user_ones(shrouded, role, sql):
    sqlstate, text = _outcome(shrouded.dsn(role, "health"), sql)
    assert sqlstate is None, text


def test_an_operator_that_contains_a_user_operator_is_refused(shrouded):
    """`->>` is json's, but the run holds `->`: pgshroud does not model how
    PostgreSQL splits runs of operator characters, so it refuses."""
    sqlstate, text = _outcome(shrouded.dsn("clinician", "health"), "SELECT '{\"a\": 1}'::json ->> 'a'")
    assert sqlstate == POLICY_STATE and '"->>" in the statement' in text, text


def test_bi_catalog_queries_plan_alike_with_and_without_user_objects(owner_objects, health_policy):
    bare = dataclasses.replace(
        owner_objects, operators=(), types={}, casts=(), type_names={},
        attribute_functions={n: {o for o in f if o[0] == "pg_catalog"} for n, f in
                             owner_objects.attribute_functions.items()},
    )
    for query in CATALOG_QUERIES:
        sql = query.sql
        if query.params is not None or query.params_from is not None:
            for i in range(1, sql.count("%s") + 1):
                sql = sql.replace("%s", f"${i}", 1)
            sql = sql.replace("%%", "%")
        for role in query.roles:
            context = PlanContext(user=role, policy=health_policy, role=health_policy.role_for(role))
            with_objects = plan(sql, dataclasses.replace(context, catalog=owner_objects))
            without = plan(sql, dataclasses.replace(context, catalog=bare))
            assert with_objects == without, f"{query.name} as {role}: {with_objects}"


def test_an_implicit_cast_from_a_system_type_refuses_every_statement(pg, owner_objects, health_policy, health_db):
    implicit = [
        "DROP CAST (int AS public.leak_ssn)",
        "CREATE CAST (int AS public.leak_ssn) WITH FUNCTION public.leak_to_ssn(int) AS IMPLICIT",
    ]
    explicit = [
        "DROP CAST (int AS public.leak_ssn)",
        "CREATE CAST (int AS public.leak_ssn) WITH FUNCTION public.leak_to_ssn(int)",
    ]
    _run_all(_owner(pg), implicit)
    try:
        proxy = _proxy(pg, health_policy, asyncio.run(read_catalog(health_db)))
        try:
            for role in NON_RAW:
                sqlstate, text = _outcome(proxy.dsn(role, "health"), "SELECT 1")
                assert sqlstate == POLICY_STATE, text
                assert "implicit cast from integer to leak_ssn" in text and '"public.leak_to_ssn"' in text, text
            assert _outcome(proxy.dsn("admin", "health"), "SELECT 1") == (None, "[(1,)]")
        finally:
            proxy.stop()
    finally:
        _run_all(_owner(pg), explicit)


# -- the rules, on hand-built catalogs ----------------------------------------


def _tokens(sql: str):
    (statement,) = split_statements(sql)
    return statement.tokens


def _check(sql: str, catalog: Catalog, allowed: frozenset[str] = frozenset(), aggregate_role: bool = False) -> None:
    check_functions(_tokens(sql), catalog, allowed=allowed, aggregate_role=aggregate_role)


def _refused(sql: str, catalog: Catalog, allowed: frozenset[str] = frozenset()) -> str:
    with pytest.raises(FunctionRefused) as caught:
        _check(sql, catalog, allowed)
    return str(caught.value)


@pytest.mark.parametrize(
    ("sql", "runs"),
    [
        ("select 1 -> 0", [(None, "->")]),
        ("select 1->0, a->>b", [(None, "->"), (None, "->>")]),
        ("select a @-@ b, x !=-1", [(None, "@-@"), (None, "!=-")]),
        # A comment or a space ends a run, as it ends PostgreSQL's operator.
        ("select a +-- c\n- b, a/**/->b, a - > b", [(None, "+"), (None, "-"), (None, "->"), (None, "-"), (None, ">")]),
        ("select '->', \"->\", $$->$$, E'\\'->'", []),
        ("select 1 operator(public.->) 2, 1 OPERATOR(->) 2", [("public", "->"), (None, "->")]),
        ("select a `b", [(None, "`")]),
    ],
)
def test_runs_of_operator_characters(sql, runs):
    assert operator_runs(_tokens(sql)) == runs


ARROW = Operator("public", "->", "public.ssn_of")
EQUALS = Operator("public", "=", "public.text_eq_int")
ELSEWHERE = Operator("ext", "<#>", "ext.distance")
WITH_OPERATORS = dataclasses.replace(CATALOG, operators=(ARROW, EQUALS, ELSEWHERE))


@pytest.mark.parametrize(
    "sql",
    ["select 1 -> 0", "select 1->0", "select -> 1", "select x ->> 'a' from t", "select 1 operator(public.->) 0",
     "select 1 = 1", "select 1 != 2", "select * from t where x in (1)", "select case x when 1 then 2 end from t",
     "select nullif(1, 2)", "select 1 is distinct from 2", "select * from a join b using (id)",
     "select 1 operator(ext.<#>) 2", "select 1 operator(nowhere.+) 2"],
)
def test_user_operators_the_statement_may_use_are_refused(sql):
    message = _refused(sql, WITH_OPERATORS)
    assert "allow_functions" in message or "not an operator pgshroud knows" in message


@pytest.mark.parametrize(
    "sql",
    ["select 1 < 2, 'a' || 'b', x @> y from t", "select '->', \"->\" from t", "select 1 operator(pg_catalog.->) 0",
     "select 1 <#> 2", "select * from t where x like 'a%'"],
)
def test_operators_the_statement_cannot_use_pass(sql):
    # ext.<#> is not on the pinned search path: only OPERATOR(ext.<#>) reaches it.
    _check(sql, WITH_OPERATORS)


def test_an_operator_is_allowed_by_its_function_or_its_name():
    catalog = dataclasses.replace(CATALOG, operators=(ARROW,))
    _check("select 1 -> 0", catalog, frozenset({"public.ssn_of"}))
    _check("select 1 operator(public.->) 0", catalog, frozenset({"public.->"}))


ATTRIBUTES = dataclasses.replace(CATALOG, attribute_functions={
    "nick": frozenset({("public", "nick", "s")}),
    "pg_sleep": frozenset({("pg_catalog", "pg_sleep", "v")}),
    "pg_read_file": frozenset({("pg_catalog", "pg_read_file", "v")}),
    "length": frozenset({("pg_catalog", "length", "i")}),
})


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("select p.nick from t p", '"public.nick"'),
        ("select (p).nick from t p", '"public.nick"'),
        ('select p."NICK" from t p', '"public.nick"'),
        ("select (p.name).nick from t p", '"public.nick"'),
        ("select (1).pg_sleep", "volatile"),
        ("select ('/etc/passwd').pg_read_file", "reads data outside the policy"),
    ],
)
def test_attribute_notation_is_checked_as_a_call(sql, words):
    assert words in _refused(sql, ATTRIBUTES)


def test_attribute_notation_passes_for_stable_catalog_functions_and_allowed_ones():
    _check("select (p.name).length, p.name, t.* from t p", ATTRIBUTES)
    _check("select p.nick from t p", ATTRIBUTES, frozenset({"public.nick"}))
    _check("select (1).pg_sleep", ATTRIBUTES, frozenset({"pg_catalog.pg_sleep"}))  # as pg_sleep(1) would be
    _check("select public.nick(p) from t p", dataclasses.replace(ATTRIBUTES, user_function_names=frozenset()),
           frozenset({"public.nick"}))


DOMAIN, BOX, ROWS, COMP, INT4 = 9001, 9002, 9003, 9004, 23
TYPES = dataclasses.replace(
    CATALOG,
    types={
        DOMAIN: CatalogType(DOMAIN, "public", "probe", ("CHECK constraint probe_check",)),
        BOX: CatalogType(BOX, "public", "box", leads_to=frozenset({DOMAIN})),
        ROWS: CatalogType(ROWS, "public", "boxes", leads_to=frozenset({BOX})),
        COMP: CatalogType(COMP, "public", "comp"),
    },
    casts=(Cast(INT4, COMP, "integer", "comp", "public.to_comp", "e"),),
    type_names={"probe": frozenset({DOMAIN}), "box": frozenset({BOX}), "boxes": frozenset({ROWS}),
                "comp": frozenset({COMP}), "make_box": frozenset({BOX})},
)


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("select 1::probe", "type public.probe runs CHECK constraint probe_check"),
        ("select cast(1 as public.PROBE)", "type public.probe runs"),
        ("select * from generate_series(1, 1) as r(a probe)", "type public.probe runs"),
        ("select (row(1)::box).v", 'through "box"'),
        ("select b from boxes b", 'through "boxes"'),
        ("select 1::comp", "cast from integer to comp"),
    ],
)
def test_types_and_casts_the_statement_may_hold_are_refused(sql, words):
    assert words in _refused(sql, TYPES)


def test_types_and_casts_the_statement_cannot_hold_pass_or_are_allowed():
    _check("select 1, 'probe', \"x\"::text, comp_id from t", TYPES)
    _check("select 1::probe, b from boxes b", TYPES, frozenset({"public.probe"}))
    _check("select 1::comp", TYPES, frozenset({"public.to_comp"}))


def test_an_implicit_cast_from_a_system_type_reaches_every_statement():
    catalog = dataclasses.replace(
        TYPES,
        types={**TYPES.types, INT4: CatalogType(INT4, "pg_catalog", "int4", leads_to=frozenset({COMP}))},
        casts=(Cast(INT4, COMP, "integer", "comp", "public.to_comp", "i"),),
    )
    message = _refused("select 1", catalog)
    assert message.startswith("implicit cast from integer to comp") and "no cast in the text" in message


def test_the_types_of_allowed_functions_and_operators_are_reached():
    assert 'through "make_box"' in _refused("select make_box(1)", TYPES, frozenset({"pg_catalog.make_box"}))
    catalog = dataclasses.replace(TYPES, operators=(Operator("public", "#=#", "public.f", frozenset({DOMAIN})),))
    assert "type public.probe" in _refused("select 1 #=# 2", catalog, frozenset({"public.f"}))


def test_the_planner_refuses_with_42501():
    context = PlanContext(user="clinician", policy=POLICY, role=POLICY.role_for("clinician"),
                          catalog=WITH_OPERATORS)
    (result,) = plan("select 1 -> 0", context)
    assert isinstance(result, Refuse) and result.sqlstate == POLICY_STATE


def test_keywords_before_a_parenthesis_are_no_calls_and_user_functions_still_are():
    """Looker writes HAVING (COUNT(*)) > 100; CTEs say AS [NOT] MATERIALIZED (...):
    neither is a call. materialized is not reserved in PostgreSQL, so a
    function of that name is checked as any other."""
    calls = [name for _, name in called_functions(_tokens("SELECT a FROM t GROUP BY a HAVING (COUNT(*)) > 100"))]
    assert calls == ["count"]
    assert called_functions(_tokens("WITH q AS MATERIALIZED (SELECT 1) SELECT * FROM q")) == []
    assert called_functions(_tokens("WITH q AS NOT MATERIALIZED (SELECT 1) SELECT * FROM q")) == []
    assert called_functions(_tokens("SELECT materialized(1)")) == [(None, "materialized")]
