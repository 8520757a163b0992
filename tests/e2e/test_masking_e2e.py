"""The clinician sees masked rows through real clients; the admin sees raw ones."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import psycopg
import pytest
import sqlalchemy as sa

from pgshroud.policies.loader import load_policy
from pgshroud.policies.model import Access
from pgshroud.proxy.ops.catalog import read_catalog


def raw(health_db: str, sql: str) -> list[tuple]:
    with psycopg.connect(health_db) as conn:
        return conn.execute(sql).fetchall()


def test_clinician_sees_masked_identities(guarded, raw_health):
    truth = {r[0]: r for r in raw(raw_health, "select patient_id, name, ssn, email, phone, zip from patients")}
    with psycopg.connect(guarded.dsn("clinician", "health")) as conn:
        rows = conn.execute("select patient_id, name, ssn, email, phone, zip from patients").fetchall()
    assert len(rows) == len(truth)
    real_ssns = {r[2] for r in truth.values()}
    real_names = {r[1] for r in truth.values()}
    for patient_id, name, ssn, email, phone, zip_code in rows:
        assert ssn not in real_ssns and ssn.startswith("XXX-XX-")
        assert email.startswith("****@")
        assert zip_code.endswith("00")
    assert len({r[0] for r in rows} & set(truth)) < len(rows) / 10  # pseudonyms, not ids
    assert len({r[1] for r in rows} & real_names) < len(rows)  # fakes may collide by chance, not all


def test_admin_sees_raw_rows(guarded, raw_health):
    with psycopg.connect(guarded.dsn("admin", "health")) as conn:
        rows = conn.execute("select patient_id, ssn from patients order by patient_id").fetchall()
    assert rows == raw(raw_health, "select patient_id, ssn from patients order by patient_id")


def test_predicates_only_see_masked_values(guarded, raw_health):
    (ssn,) = raw(raw_health, "select ssn from patients limit 1")[0]
    with psycopg.connect(guarded.dsn("clinician", "health")) as conn:
        assert conn.execute("select count(*) from patients where ssn = %s", (ssn,)).fetchone() == (0,)
        assert conn.execute("select count(*) from patients p where p.ssn like %s", (ssn[:3] + "%",)).fetchone() == (0,)


def test_row_filter_hides_rows_from_predicates(guarded, raw_health):
    hidden = raw(raw_health, "select count(*) from visits where department = 'Psychiatry'")[0][0]
    total = raw(raw_health, "select count(*) from visits")[0][0]
    with psycopg.connect(guarded.dsn("clinician", "health")) as conn:
        assert conn.execute("select count(*) from visits").fetchone() == (total - hidden,)
        assert conn.execute("select count(*) from visits where department = 'Psychiatry'").fetchone() == (0,)


def test_joins_on_pseudonyms_still_match(guarded, raw_health):
    expected = raw(raw_health, "select count(*) from visits v join patients p using (patient_id) "
                               "where v.department <> 'Psychiatry'")[0][0]
    with psycopg.connect(guarded.dsn("clinician", "health")) as conn:
        got = conn.execute("select count(*) from visits v join patients p on p.patient_id = v.patient_id").fetchone()
    assert got == (expected,)


def test_asyncpg_and_sqlalchemy_see_the_same_masks(guarded):
    with psycopg.connect(guarded.dsn("clinician", "health")) as conn:
        expected = conn.execute("select patient_id, ssn, birth_date from patients order by 1 limit 20").fetchall()

    async def via_asyncpg():
        conn = await asyncpg.connect(host=guarded.host, port=guarded.port, user="clinician",
                                     password="clinician", database="health", ssl=False)
        try:
            return [tuple(r) for r in await conn.fetch(
                "select patient_id, ssn, birth_date from patients order by 1 limit 20")]
        finally:
            await conn.close()

    assert asyncio.run(via_asyncpg()) == expected
    engine = sa.create_engine(
        f"postgresql+psycopg://clinician:clinician@{guarded.host}:{guarded.port}/health?sslmode=disable")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select patient_id, ssn, birth_date from patients order by 1 limit 20")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == expected


def test_refusals_keep_the_session_usable(guarded):
    with psycopg.connect(guarded.dsn("clinician", "health")) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select pg_sleep(0)")
        conn.rollback()
        assert conn.execute("select count(*) from diagnoses").fetchone()[0] > 0


def test_unknown_and_denied_users(guarded, pg):
    pg.execute("DROP ROLE IF EXISTS stranger")
    pg.execute("CREATE ROLE stranger LOGIN PASSWORD 'stranger'")
    pg.execute("GRANT CONNECT ON DATABASE health TO stranger")
    with pytest.raises(psycopg.OperationalError) as raised:
        psycopg.connect(guarded.dsn("stranger", "health"))
    assert "does not allow" in str(raised.value)


def test_startup_settings_are_pinned_for_masked_roles(guarded):
    with pytest.raises(psycopg.OperationalError) as raised:
        psycopg.connect(guarded.dsn("clinician", "health", options="-c standard_conforming_strings=off"))
    assert "standard_conforming_strings" in str(raised.value)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(guarded.dsn("clinician", "health", options="-c search_path=evil"))
    with psycopg.connect(guarded.dsn("clinician", "health", application_name="metabase")) as conn:
        assert conn.execute("show application_name").fetchone() == ("metabase",)
        # Names resolve upstream as the rewriter resolves them.
        assert conn.execute("show search_path").fetchone() == ("public",)
    with psycopg.connect(guarded.dsn("clinician", "health", options="-c statement_timeout=5000")) as conn:
        assert conn.execute("show statement_timeout").fetchone() == ("5s",)
        assert conn.execute("show search_path").fetchone() == ("public",)


def test_statements_prepared_under_an_old_policy_are_refused(start_proxy, pg, health_db, health_policy):
    catalog = asyncio.run(read_catalog(health_db))
    proxy = start_proxy(policy=health_policy, catalog=catalog)
    with psycopg.connect(proxy.dsn("clinician", "health"), autocommit=True) as conn:
        query = "select ssn from patients where patient_id > %s limit 1"
        conn.execute(query, (0,), prepare=True)
        proxy.server.shared.policy = load_policy(health_policy.source)  # what SIGHUP does
        with pytest.raises(psycopg.errors.FeatureNotSupported) as raised:
            conn.execute(query, (0,), prepare=True)
        assert "previous policy" in str(raised.value)
        assert conn.execute(query, (0,), prepare=False).fetchone()[0].startswith("XXX-XX-")


def test_a_reload_that_demotes_a_raw_session_refuses_it(start_proxy, pg, health_db, health_policy):
    catalog = asyncio.run(read_catalog(health_db))
    proxy = start_proxy(policy=health_policy, catalog=catalog)
    with psycopg.connect(proxy.dsn("admin", "health"), autocommit=True) as conn:
        assert conn.execute("select count(*) from patients").fetchone()[0] > 0
        roles = dict(health_policy.roles)
        roles["admin"] = dataclasses.replace(roles["admin"], access=Access.MASKED)
        proxy.server.shared.policy = dataclasses.replace(health_policy, roles=roles)
        # The session was never vetted as a rewritten one (search_path, settings).
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as raised:
            conn.execute("select ssn from patients limit 1")
        assert "reconnect" in (raised.value.diag.message_hint or "")
    pg.execute("GRANT pgshroud_masked TO admin")  # what `setup --grant-to` does for masked users
    try:
        with psycopg.connect(proxy.dsn("admin", "health"), autocommit=True) as conn:
            assert conn.execute("select ssn from patients limit 1").fetchone()[0].startswith("XXX-XX-")
    finally:
        pg.execute("REVOKE pgshroud_masked FROM admin")
