"""PostgreSQL's reading of what pgshroud lets through, over whole corpora.

pgshroud decides from its own reading of a statement which functions,
operators, casts and types it touches. Here PostgreSQL reads the same SQL:
every statement of the BI/ORM catalog corpus (tests/bi_queries), the leak
corpus (tests/leak_cases.py) and a set of private aggregates is planned for
the clinician and the analyst; whatever pgshroud would send upstream (the
passed or rewritten text, a release's bounded SQL) is made into a temporary
view in a transaction that is rolled back, and the view's dependencies in
pg_depend (the functions, operators, types and relations PostgreSQL resolved,
casts and operators included) must all be pg_catalog's, information_schema's
or pgshroud's own mask functions. PostgreSQL records no dependency on its
built-in (pinned) objects, so what the view depends on beyond relations is
exactly what was defined after initdb: by the database's owner, an
extension, or pgshroud setup.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import psycopg
import pytest

from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.rewriter import PlanContext, plan
from pgshroud.rewriter.plans import Passthrough, Release, Rewrite
from tests import leak_cases as lc

BI_QUERIES = Path(__file__).resolve().parents[1] / "bi_queries"
ROLES = ("clinician", "analyst")
QUERY_START = re.compile(r"\s*(?:/\*.*?\*/\s*)*(select|with|values|\()", re.IGNORECASE | re.DOTALL)
PRIVATE_QUERIES = [
    "SELECT department, count(*), avg(cost) FROM visits GROUP BY 1",
    "SELECT date_trunc('month', visit_date) AS month, count(DISTINCT patient_id) FROM visits GROUP BY 1",
    "SELECT sex, sum(v.cost) FROM patients p JOIN visits v USING (patient_id) GROUP BY sex",
    "SELECT avg(n) FROM (SELECT patient_id, count(*) AS n FROM visits GROUP BY patient_id) AS per_patient",
    "SELECT median(length_of_stay), percentile_cont(0.9) WITHIN GROUP (ORDER BY cost) FROM visits",
    "SELECT count(*) FILTER (WHERE department = 'Cardiology'), stddev(cost) FROM visits WHERE cost > 10",
    "SELECT CASE WHEN cost > 1000 THEN 'high' ELSE 'low' END AS band, count(*) FROM visits GROUP BY 1",
]

_DEPENDENCIES = """
SELECT d.refclassid::regclass::text, d.refobjid,
       coalesce(pn.nspname, opn.nspname, tn.nspname, cn.nspname),
       coalesce(p.proname, o.oprname, t.typname, c.relname),
       t.typtype, t.typrelid <> 0
FROM pg_catalog.pg_depend d
JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid AND d.classid = 'pg_catalog.pg_rewrite'::regclass
LEFT JOIN pg_catalog.pg_proc p ON d.refclassid = 'pg_catalog.pg_proc'::regclass AND p.oid = d.refobjid
LEFT JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
LEFT JOIN pg_catalog.pg_operator o ON d.refclassid = 'pg_catalog.pg_operator'::regclass AND o.oid = d.refobjid
LEFT JOIN pg_catalog.pg_namespace opn ON opn.oid = o.oprnamespace
LEFT JOIN pg_catalog.pg_type t ON d.refclassid = 'pg_catalog.pg_type'::regclass AND t.oid = d.refobjid
LEFT JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
LEFT JOIN pg_catalog.pg_class c ON d.refclassid = 'pg_catalog.pg_class'::regclass AND c.oid = d.refobjid
LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
WHERE r.ev_class = 'pg_temp.pgshroud_crosscheck'::regclass AND d.refobjid <> r.ev_class
"""


def _bi_statements(cursor: psycopg.ClientCursor) -> list[str]:
    statements = []
    for path in sorted(BI_QUERIES.rglob("*.sql")):
        text = path.read_text()
        params = next((json.loads(line.split(":", 1)[1]) for line in text.splitlines()
                       if line.startswith("-- params:")), None)
        body = "\n".join(line for line in text.splitlines() if not line.startswith("--")).strip().rstrip(";")
        statements.append(cursor.mogrify(body, params) if params is not None else body)
    return statements


def _leak_statements() -> list[str]:
    statements = []
    for case in lc.CASES:
        for step in case.steps:
            for sql in step.sql if isinstance(step.sql, tuple) else (step.sql,):
                if isinstance(sql, str):
                    sql = re.sub(r"<<\w+>>", "'x'", sql).replace("%s", "NULL")
                    statements.append(sql)
    return statements


def _sent_upstream(sql: str, context: PlanContext) -> list[str]:
    """The texts pgshroud would send upstream for `sql` that are queries."""
    texts = []
    for planned in plan(sql, context):
        if isinstance(planned, (Passthrough, Rewrite, Release)) and QUERY_START.match(planned.sql):
            texts.append(planned.sql)
    return texts


def _problems(conn: psycopg.Connection, sql: str) -> list[str] | None:
    """What PostgreSQL resolves in `sql` that pgshroud must not let run;
    None when PostgreSQL cannot make a view of it (parameters, temp objects)."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET LOCAL search_path = public")
            conn.execute(f"CREATE TEMP VIEW pgshroud_crosscheck AS {sql}")
            rows = conn.execute(_DEPENDENCIES).fetchall()
    except psycopg.Error:
        return None
    problems = []
    for kind, _oid, schema, name, type_kind, row_type in rows:
        if kind in ("pg_proc", "pg_operator", "pg_type"):
            if schema == "pgshroud" and kind == "pg_proc":
                continue  # pgshroud's own masks, which its rewrite adds
            if kind == "pg_type" and row_type and schema == "public":
                continue  # a table's row type (whole-row references)
            if schema not in ("pg_catalog", "information_schema"):
                problems.append(f"{kind} {schema}.{name}")
            elif kind == "pg_type" and type_kind == "d" and schema != "information_schema":
                problems.append(f"domain {schema}.{name}")
    return problems


@pytest.fixture(scope="module")
def contexts(health_db, health_policy) -> dict[str, PlanContext]:
    catalog = asyncio.run(read_catalog(health_db))
    return {role: PlanContext(user=role, policy=health_policy, role=health_policy.role_for(role), catalog=catalog)
            for role in ROLES}


def test_postgres_resolves_only_what_pgshroud_allows(raw_health, contexts):
    checked = 0
    failures: list[str] = []
    with psycopg.connect(raw_health, autocommit=True) as conn:
        cursor = psycopg.ClientCursor(conn)
        corpus = _bi_statements(cursor) + _leak_statements() + PRIVATE_QUERIES
        for sql in corpus:
            for role in ROLES:
                for text in _sent_upstream(sql, contexts[role]):
                    problems = _problems(conn, text)
                    if problems is None:
                        continue
                    checked += 1
                    if problems:
                        failures.append(f"{role}: {sql[:100]!r}: {sorted(set(problems))}")
    assert not failures, "\n".join(failures)
    # The corpus is large, and most of it must really have been read by PostgreSQL.
    assert checked >= 150, f"only {checked} statements were cross-checked"


def test_the_crosscheck_sees_what_pgshroud_must_refuse(raw_health):
    """The check itself: PostgreSQL's dependencies name a user's operator
    and a domain, where built-ins leave no trace."""
    with psycopg.connect(raw_health, autocommit=True) as conn:
        assert _problems(conn, "SELECT random(), 1 + 2, '3'::numeric(3,0), now()") == []
        with conn.transaction(force_rollback=True):
            conn.execute("CREATE FUNCTION public.pgshroud_probe(int, int) RETURNS int LANGUAGE sql AS 'SELECT 1'")
            conn.execute("CREATE OPERATOR public.### (LEFTARG = int, RIGHTARG = int, FUNCTION = public.pgshroud_probe)")
            conn.execute("CREATE DOMAIN public.pgshroud_probe_domain AS int CHECK (VALUE > 0)")
            assert sorted(_problems(conn, "SELECT 1 ### 2, 3::pgshroud_probe_domain") or []) == [
                "pg_operator public.###", "pg_type public.pgshroud_probe_domain"]
