"""The catalog snapshot follows schema changes, so `*` expands to the new columns."""

from __future__ import annotations

import asyncio

import psycopg

from pgshroud.proxy.ops.catalog import CatalogKeeper, read_catalog
from pgshroud.proxy.ops.connect import asyncpg_arguments
from pgshroud.rewriter.catalog import Catalog


def test_snapshot_has_columns_types_and_function_volatility(health_db):
    catalog = asyncio.run(read_catalog(health_db))
    patients = catalog.relations[("public", "patients")]
    assert patients.columns[0][0] == "patient_id"
    assert ("pg_catalog", "pg_class") in catalog.relations
    assert catalog.catalog_functions["pg_sleep"] == frozenset("v")
    assert "s" in catalog.catalog_functions["now"]


def test_keeper_refreshes_after_alter_table(health_db):
    """Notified by pgshroud setup's event triggers, the keeper reads the
    catalog again at once: its interval here is an hour."""
    async def current(test) -> Catalog:
        for _ in range(500):
            if keeper.catalog is not None and test(keeper.catalog):
                return keeper.catalog
            await asyncio.sleep(0.01)
        raise AssertionError(f"not refreshed: {keeper.stale_reason}")

    keeper = CatalogKeeper(health_db, interval=3600)

    async def scenario():
        await keeper.start()
        try:
            assert keeper.notifying
            with psycopg.connect(health_db, autocommit=True) as conn:
                conn.execute("CREATE TABLE snapshot_probe (a int)")
                try:
                    catalog = await current(lambda c: ("public", "snapshot_probe") in c.relations)
                    assert catalog.relations[("public", "snapshot_probe")].columns == (("a", "integer"),)
                    conn.execute("ALTER TABLE snapshot_probe ADD COLUMN b text")
                    catalog = await current(lambda c: len(c.relations[("public", "snapshot_probe")].columns) == 2)
                    assert catalog.relations[("public", "snapshot_probe")].columns[1] == ("b", "text")
                    # Temporary objects are no one else's: no notification, no refresh.
                    notices = keeper.notices
                    conn.execute("CREATE TEMP TABLE snapshot_scratch (a int); DROP TABLE snapshot_scratch")
                    conn.execute("SELECT pg_notify('nothing', '')")  # a round trip after the commits
                    await asyncio.sleep(0.2)
                    assert keeper.notices == notices and keeper.catalog is catalog
                finally:
                    conn.execute("DROP TABLE snapshot_probe")
        finally:
            keeper.stop()

    asyncio.run(scenario())


def test_libpq_strings_become_asyncpg_arguments():
    assert asyncpg_arguments("host=h port=6 user=u password=p dbname=d sslmode=require") == {
        "host": "h", "port": 6, "user": "u", "password": "p", "database": "d", "ssl": "require",
    }


def test_snapshot_resolves_what_runs_without_a_call(pg, health_db):
    """Operators, attribute calls, types and casts outside pg_catalog, from
    objects the database's owner creates; none of it in the demo database
    itself, so its statements pay nothing for these checks."""
    before = asyncio.run(read_catalog(health_db))
    assert (before.operators, before.types, before.casts, before.type_names) == ((), {}, (), {})
    assert {schema for overloads in before.attribute_functions.values() for schema, *_ in overloads} == {"pg_catalog"}
    assert ("pg_catalog", "pg_sleep", "v") in before.attribute_functions["pg_sleep"]
    owner = pg.dsn(user="admin", password="admin", dbname="health")
    created = [
        "CREATE FUNCTION public.probe_f(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a'",
        "CREATE FUNCTION public.probe_one(a int) RETURNS int LANGUAGE sql AS 'SELECT a'",
        "CREATE OPERATOR public.<~> (LEFTARG = int, RIGHTARG = int, FUNCTION = public.probe_f)",
        "CREATE DOMAIN public.probe_d AS int CHECK (public.probe_one(VALUE) > 0)",
        "CREATE TABLE public.probe_t (d public.probe_d)",
        "CREATE TYPE public.probe_c AS (v int)",
        ("CREATE FUNCTION public.probe_to_c(a int) RETURNS public.probe_c LANGUAGE sql"
        " AS 'SELECT ROW(a)::public.probe_c'"),
        "CREATE CAST (int AS public.probe_c) WITH FUNCTION public.probe_to_c(int) AS IMPLICIT",
    ]
    dropped = [
        "DROP CAST IF EXISTS (int AS public.probe_c)",
        "DROP TABLE IF EXISTS public.probe_t",
        "DROP FUNCTION IF EXISTS public.probe_to_c(int)",
        "DROP TYPE IF EXISTS public.probe_c",
        "DROP DOMAIN IF EXISTS public.probe_d",
        "DROP OPERATOR IF EXISTS public.<~> (int, int)",
        "DROP FUNCTION IF EXISTS public.probe_f(int, int), public.probe_one(int)",
    ]
    with psycopg.connect(owner, autocommit=True) as conn:
        try:
            for statement in created:
                conn.execute(statement)
            catalog = asyncio.run(read_catalog(health_db))
        finally:
            for statement in dropped:
                conn.execute(statement)
    (operator,) = catalog.operators
    assert (operator.qualified, operator.function) == ("public.<~>", "public.probe_f")
    assert catalog.attribute_functions["probe_one"] == {("public", "probe_one", "v")}
    assert "probe_f" not in catalog.attribute_functions  # two arguments: no attribute notation
    by_name = {t.qualified: t for t in catalog.types.values()}
    domain, row, composite = by_name["public.probe_d"], by_name["public.probe_t"], by_name["public.probe_c"]
    assert domain.runs == ("CHECK constraint probe_d_check",)
    assert domain.oid in row.leads_to and row.runs == ()
    assert catalog.type_names["probe_t"] == {row.oid} and catalog.type_names["probe_d"] == {domain.oid}
    assert catalog.type_names["probe_to_c"] == {composite.oid}  # the function returns it
    (cast,) = catalog.casts
    assert (cast.source_name, cast.function, cast.context) == ("integer", "public.probe_to_c", "i")
    # The implicit cast leads from int4, a system type, to the composite.
    assert composite.oid in catalog.types[cast.source].leads_to
    assert composite.oid in catalog.touched_types(())


def test_keeper_refreshes_after_create_operator(pg, health_db):
    owner = pg.dsn(user="admin", password="admin", dbname="health")

    async def scenario():
        keeper = CatalogKeeper(health_db, interval=3600)
        await keeper.start()
        try:
            with psycopg.connect(owner, autocommit=True) as conn:
                conn.execute("CREATE FUNCTION public.probe_g(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a'")
                try:
                    conn.execute("CREATE OPERATOR public.<~> (LEFTARG = int, RIGHTARG = int,"
                                 " FUNCTION = public.probe_g)")
                    await keeper.refresh()
                    assert [op.qualified for op in keeper.catalog.operators] == ["public.<~>"]
                finally:
                    conn.execute("DROP FUNCTION public.probe_g(int, int) CASCADE")
            await keeper.refresh()
            assert keeper.catalog.operators == ()
        finally:
            keeper.stop()

    asyncio.run(scenario())
