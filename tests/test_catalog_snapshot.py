"""The catalog snapshot follows schema changes, so `*` expands to the new columns."""

from __future__ import annotations

import asyncio

import psycopg

from proxy.catalog import CatalogKeeper, asyncpg_arguments, read_catalog


def test_snapshot_has_columns_types_and_function_volatility(health_db):
    catalog = asyncio.run(read_catalog(health_db))
    patients = catalog.relations[("public", "patients")]
    assert patients.columns[0][0] == "patient_id"
    assert ("pg_catalog", "pg_class") in catalog.relations
    assert catalog.catalog_functions["pg_sleep"] == frozenset("v")
    assert "s" in catalog.catalog_functions["now"]


def test_keeper_refreshes_after_alter_table(health_db):
    async def scenario():
        keeper = CatalogKeeper(health_db, interval=0.2)
        await keeper.start()
        try:
            before = keeper.catalog
            with psycopg.connect(health_db, autocommit=True) as conn:
                conn.execute("CREATE TABLE snapshot_probe (a int)")
                try:
                    for _ in range(50):
                        await asyncio.sleep(0.1)
                        if ("public", "snapshot_probe") in keeper.catalog.relations:
                            break
                    assert keeper.catalog is not before
                    assert keeper.catalog.relations[("public", "snapshot_probe")].columns == (("a", "integer"),)
                    conn.execute("ALTER TABLE snapshot_probe ADD COLUMN b text")
                    for _ in range(50):
                        await asyncio.sleep(0.1)
                        if len(keeper.catalog.relations[("public", "snapshot_probe")].columns) == 2:
                            break
                    assert keeper.catalog.relations[("public", "snapshot_probe")].columns[1] == ("b", "text")
                finally:
                    conn.execute("DROP TABLE snapshot_probe")
        finally:
            keeper.stop()

    asyncio.run(scenario())


def test_libpq_strings_become_asyncpg_arguments():
    assert asyncpg_arguments("host=h port=6 user=u password=p dbname=d sslmode=require") == {
        "host": "h", "port": 6, "user": "u", "password": "p", "database": "d", "ssl": "require",
    }
