"""Leaks through the session's side doors, end to end: names a client could
reach upstream, EXPLAIN of what is not a query, notifications, timeouts.

Each test attacks the demo's policy as the analyst (aggregate) or the
clinician (masked) through a real pgshroud in front of a real PostgreSQL,
with real clients, and states the class it closes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re

import asyncpg
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from pgshroud.proxy.codec.messages import CommandComplete, DataRow, ErrorResponse
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.proxy.session.release import WITHHELD_ERROR
from pgshroud.proxy.session.release import withheld_error as _withheld_error
from pgshroud.rewriter.names import upstream_name
from tests.fix_health import ledgered_proxy
from tests.fix_proxy import RunningProxy

REFUSED = ("42501", "42601", "0A000")
PRIVATE_QUERY = "SELECT department, count(*) FROM visits GROUP BY department"


@pytest.fixture(scope="module")
def proxy(pg, health_db, health_policy):
    """pgshroud with the healthcare policy and a ledger; budgets ample."""
    with ledgered_proxy(pg, health_db, health_policy) as running:
        yield running


def connect(proxy: RunningProxy, user: str, **kwargs) -> psycopg.Connection:
    return psycopg.connect(proxy.dsn(user, "health"), autocommit=True, **kwargs)


def refused(conn: psycopg.Connection, sql: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql)
    assert caught.value.sqlstate in REFUSED, (sql, caught.value.sqlstate)
    return caught.value


def exact_counts(raw_dsn: str) -> dict[str, int]:
    with psycopg.connect(raw_dsn) as raw:
        return dict(raw.execute(PRIVATE_QUERY).fetchall())


# -- names: a release's bounded SQL must not be reachable by name -------------


def test_sql_execute_cannot_run_a_protocol_prepared_release(proxy, raw_health):
    """A named Parse of a private query puts the bounded SQL upstream; SQL
    EXECUTE of the client's name, of any name the client could compute, or
    of pgshroud's own statement names, runs nothing of it."""
    with connect(proxy, "analyst") as conn:
        conn.execute(PRIVATE_QUERY, prepare=True)  # psycopg: a named Parse, then Bind/Execute
        conn.execute(PRIVATE_QUERY, prepare=True)
        refused(conn, "SELECT name, statement FROM pg_catalog.pg_prepared_statements")
        for name in ("_pg3_0", "_pg3_1", upstream_name("_pg3_0"), "pgshroud_cached_answer"):
            with pytest.raises(psycopg.Error) as caught:
                conn.execute(f'EXECUTE "{name}"')
            # Either the name does not exist (26000) or it was refused: never rows.
            assert caught.value.sqlstate in ("26000", *REFUSED)
        conn.execute("SELECT 1")


@pytest.mark.parametrize(("prepared", "executed"), [("A" * 64, "A" * 63), ("B" * 63, "B" * 70), ("é" * 40, "é" * 31)])
def test_names_that_postgres_truncates_alike_are_one_name(proxy, prepared, executed):
    """PostgreSQL keeps the first 63 bytes of a name: a private statement
    prepared under a long name is the one SQL EXECUTE reaches by a name
    with the same first 63 bytes, and is refused under it too."""
    async def run() -> None:
        conn = await asyncpg.connect(**_asyncpg_args(proxy, "analyst"))
        try:
            await conn.prepare(PRIVATE_QUERY, name=prepared)
            with pytest.raises(asyncpg.PostgresError) as caught:
                await conn.fetch(f'EXECUTE "{executed}"')
            assert caught.value.sqlstate in REFUSED
            assert "private query" in str(caught.value)
        finally:
            await conn.close()

    asyncio.run(run())


def test_fetch_cannot_read_a_named_portal_of_a_release(proxy, raw_health):
    """A named portal of a private statement, bound over the protocol: SQL
    FETCH by its name (or its translated name) returns nothing of it."""
    async def run() -> None:
        conn = await asyncpg.connect(**_asyncpg_args(proxy, "analyst"))
        try:
            async with conn.transaction():
                statement = await conn.prepare(PRIVATE_QUERY)
                cursor = await statement.cursor()  # a named portal, bound upstream
                assert await cursor.fetch(1)
                portal = cursor._portal_name  # the client's own name for it
                for name in (portal, upstream_name(portal)):
                    with pytest.raises(asyncpg.PostgresError) as caught:
                        async with conn.transaction():  # a savepoint: the error does not end the test's transaction
                            await conn.fetch(f'FETCH ALL FROM "{name}"')
                    assert caught.value.sqlstate in ("34000", *REFUSED)
        finally:
            await conn.close()

    asyncio.run(run())


def test_cursors_and_prepared_statements_still_work_by_their_own_names(proxy):
    """Translation keeps the client's view: SQL PREPARE/EXECUTE/DEALLOCATE,
    DECLARE/FETCH/MOVE/CLOSE, psycopg's server-side cursors and asyncpg's
    prepared statements, cursors and statement cache all work as before."""
    with connect(proxy, "clinician") as conn:
        conn.execute("PREPARE by_dept(text) AS SELECT count(*) FROM visits WHERE department = $1")
        assert conn.execute("EXECUTE by_dept('Cardiology')").fetchone()[0] >= 0
        conn.execute("DEALLOCATE by_dept")
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("EXECUTE by_dept('Cardiology')")
        assert caught.value.sqlstate == "26000"
        with conn.transaction():
            conn.execute('DECLARE "Mixed Case" SCROLL CURSOR FOR SELECT patient_id FROM patients ORDER BY 1')
            first = conn.execute('FETCH 2 FROM "Mixed Case"').fetchall()
            conn.execute('MOVE ABSOLUTE 0 IN "Mixed Case"')
            assert conn.execute('FETCH 2 FROM "Mixed Case"').fetchall() == first
            conn.execute('CLOSE "Mixed Case"')
        with conn.transaction(), conn.cursor(name="server side") as cursor:
            cursor.execute("SELECT name FROM patients")
            assert len(cursor.fetchmany(5)) == 5
        for _ in range(3):
            assert conn.execute("SELECT count(*) FROM patients WHERE patient_id > %s", (0,),
                                prepare=True).fetchone()[0] > 0

    async def run() -> None:
        conn = await asyncpg.connect(**_asyncpg_args(proxy, "clinician"))
        try:
            for _ in range(3):
                assert await conn.fetchval("SELECT count(*) FROM visits WHERE cost > $1", 0) >= 0
            async with conn.transaction():
                rows = [r async for r in conn.cursor("SELECT visit_id FROM visits", prefetch=7)]
                assert rows
        finally:
            await conn.close()

    asyncio.run(run())


def test_private_prepared_statements_still_release(proxy):
    """A private query prepared over the protocol is still answered, noised
    and charged, through the translated names (psycopg and asyncpg)."""
    with connect(proxy, "analyst") as conn:
        for _ in range(2):
            rows = conn.execute(PRIVATE_QUERY, prepare=True).fetchall()
            assert rows and all(isinstance(count, int) for _, count in rows)

    async def run() -> None:
        conn = await asyncpg.connect(**_asyncpg_args(proxy, "analyst"))
        try:
            statement = await conn.prepare(PRIVATE_QUERY)
            assert await statement.fetch()
        finally:
            await conn.close()

    asyncio.run(run())


# -- EXPLAIN of anything but a query ---------------------------------------


@pytest.mark.parametrize("user", ["clinician", "analyst"])
@pytest.mark.parametrize(
    "sql",
    [
        ("EXPLAIN ANALYZE MERGE INTO diagnoses d USING patients p ON false WHEN NOT MATCHED AND p.patient_id = 1 "
        "THEN INSERT VALUES (p.ssn::int::text, 'x')"),
        "EXPLAIN ANALYZE INSERT INTO diagnoses SELECT ssn, name FROM patients",
        "EXPLAIN (ANALYZE) CREATE MATERIALIZED VIEW leak AS SELECT ssn FROM patients",
        "EXPLAIN (ANALYZE, FORMAT JSON) UPDATE patients SET name = name",
        "EXPLAIN ANALYZE VERBOSE DELETE FROM patients WHERE ssn::int = 1",
        "EXPLAIN EXECUTE s",
        "EXPLAIN (ANALYZE) SELECT count(*) FROM visits",
        "EXPLAIN ANALYZE SELECT department FROM visits WHERE cost > 100",
        "EXPLAIN (FORMAT JSON, ANALYZE false) SELECT count(*) FROM patients",
        "EXPLAIN ANALYZE WITH x AS (DELETE FROM patients RETURNING ssn) SELECT * FROM x",
        "EXPLAIN /* SELECT */ ANALYZE CREATE TABLE t AS SELECT 1",
    ],
)
def test_explain_of_a_non_query_or_analyze_of_protected_data_is_refused(proxy, raw_health, user, sql):
    with connect(proxy, user) as conn:
        error = refused(conn, sql)
        assert not re.search(r"\d{3}-\d{2}-\d{4}", str(error))
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with psycopg.connect(raw_health) as raw:  # nothing was created or changed
        assert raw.execute("SELECT to_regclass('public.leak'), to_regclass('public.t')").fetchone() == (None, None)


def test_explain_of_a_query_still_works(proxy):
    with connect(proxy, "analyst") as conn:
        lines = [row[0] for row in conn.execute("EXPLAIN " + PRIVATE_QUERY).fetchall()]
        assert any("epsilon" in line for line in lines)
    with connect(proxy, "clinician") as conn:
        assert conn.execute("EXPLAIN SELECT * FROM diagnoses").fetchall()


# -- notifications -------------------------------------------------------------


@pytest.mark.parametrize("user", ["clinician", "analyst"])
def test_listen_is_refused_and_notifications_never_arrive(proxy, raw_health, user):
    with connect(proxy, user) as conn:
        refused(conn, "LISTEN leak")
        refused(conn, 'LISTEN "leak"')
        conn.execute("UNLISTEN *")  # harmless, and drivers send it when resetting a connection
        with psycopg.connect(raw_health, autocommit=True) as raw:
            raw.execute("NOTIFY leak, '123-45-6789'")
        conn.execute("SELECT 1")
        assert list(conn.notifies(timeout=0.3, stop_after=1)) == []


# -- timing: a timeout must not turn a private query's time into an error ------


def test_timeouts_are_pinned_off_for_the_aggregate_role(proxy):
    """statement_timeout and lock_timeout given at connect are accepted and
    ignored (pinned to 0); SET of them is refused; RESET ALL returns to the pin."""
    options = "-c statement_timeout=1 -c lock_timeout=1"
    with connect(proxy, "analyst", options=options) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
        assert conn.execute("SHOW lock_timeout").fetchone() == ("0",)
        error = refused(conn, "SET statement_timeout = 1")
        assert "fixed by pgshroud" in str(error)
        refused(conn, "SET LOCAL lock_timeout TO '1ms'")
        refused(conn, "SET SESSION idle_in_transaction_session_timeout = 5")
        refused(conn, "SELECT set_config('statement_timeout', '1', false)")
        for shaper in ("SET work_mem = '64kB'", "SET enable_seqscan = off", "SET jit = on",
                       "SET max_parallel_workers_per_gather = 0"):
            refused(conn, shaper)
        conn.execute("RESET ALL")
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
        assert conn.execute("SELECT count(*) FROM visits").fetchone()[0] >= 0
    # The masked role keeps its own timeouts.
    with connect(proxy, "clinician", options="-c statement_timeout=12345") as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("12345ms",)
        conn.execute("SET statement_timeout = 5000")


@pytest.mark.parametrize("sqlstate", ["57014", "57P01", "53200", "53100", "40001", "08006", "22012", "XX000"])
def test_every_failure_of_a_charged_release_gets_one_answer(sqlstate):
    """A timeout, a cancel, running out of memory or disk, a serialization
    failure or a data error: which one happened could depend on protected
    data, so the client sees the same withheld error for all."""
    upstream = ErrorResponse((("S", "ERROR"), ("C", sqlstate), ("M", "canceling statement 123-45-6789")))
    assert _withheld_error(upstream.encode()) == WITHHELD_ERROR


def test_an_aborted_transaction_is_still_reported_as_such():
    upstream = ErrorResponse((("S", "ERROR"), ("C", "25P02"), ("M", "current transaction is aborted")))
    assert _withheld_error(upstream.encode()) == upstream.encode()


def _asyncpg_args(proxy: RunningProxy, user: str) -> dict:
    parts = conninfo_to_dict(proxy.dsn(user, "health"))
    return {"host": parts["host"], "port": int(parts["port"]), "user": user, "password": user,
            "database": "health", "ssl": False}


# -- no one statement freezes the proxy -----------------------------------------


# ~200,000 characters, about three seconds of planning.
HUGE = "SELECT name FROM patients WHERE patient_id IN (" + ", ".join(str(i) for i in range(30_000)) + ")"


def _huge_query(conn: psycopg.Connection) -> int:
    return len(conn.execute(HUGE).fetchall())


def _huge_after_settings(conn: psycopg.Connection) -> int:
    """Every SET of a privacy setting in the Query has the rest planned again."""
    sets = "SET pgshroud.epsilon = 0.5; SET pgshroud.epsilon = 0.6; SET pgshroud.epsilon = 0.5; "
    cursor = psycopg.ClientCursor(conn)
    cursor.execute(sets + HUGE)
    while cursor.nextset():  # to the last statement's result
        pass
    return len(cursor.fetchall())


@pytest.mark.parametrize("attack", [_huge_query, _huge_after_settings])
def test_another_session_answers_while_a_huge_statement_is_planned(proxy, attack):
    """Planned once, or again after each change of the privacy settings."""
    _another_session_answers_meanwhile(proxy, attack)


def test_another_session_answers_while_a_prepared_statement_is_planned_again(start_proxy, health_db,
                                                                             health_policy):
    """A long prepared statement planned again at Bind after the catalog
    snapshot changed is planned on a worker thread too."""
    catalog = asyncio.run(read_catalog(health_db))
    current = [catalog]
    proxy = start_proxy(policy=health_policy, catalog=catalog)
    proxy.server.shared.catalog = lambda: current[0]

    def prepared_then_refreshed(conn: psycopg.Connection) -> int:
        conn.execute(HUGE, prepare=True).fetchall()
        current[0] = dataclasses.replace(catalog)  # a refreshed snapshot
        return len(conn.execute(HUGE, prepare=True).fetchall())

    _another_session_answers_meanwhile(proxy, prepared_then_refreshed)


def _another_session_answers_meanwhile(proxy: RunningProxy, attack) -> None:
    """While `attack` has a long statement planned (on a worker thread),
    another session's statements, planned on the event loop, keep
    answering within a second."""
    import threading
    import time

    done = threading.Event()
    outcome: list[object] = []

    def run_attack() -> None:
        try:
            with connect(proxy, "clinician") as conn:
                outcome.append(attack(conn))
        except psycopg.Error as exc:
            outcome.append(exc.sqlstate)
        finally:
            done.set()

    attacker = threading.Thread(target=run_attack)
    with connect(proxy, "clinician") as conn:
        conn.execute("SELECT count(*) FROM patients")
        attacker.start()
        slowest = 0.0
        answers = 0
        while not done.is_set() or answers < 3:
            started = time.perf_counter()
            assert conn.execute("SELECT count(*) FROM patients WHERE patient_id > %s", (answers,)).fetchone()
            slowest = max(slowest, time.perf_counter() - started)
            answers += 1
        attacker.join(60)
    # The huge statement was answered too (no rows: the clinician's ids are pseudonyms).
    assert outcome == [0]
    assert answers > 3 and slowest < 1.0, f"another session waited {slowest:.2f}s"


def test_statements_longer_than_the_planning_limit_are_refused(start_proxy, health_db, health_policy):
    catalog = asyncio.run(read_catalog(health_db))
    limited = start_proxy(policy=health_policy, catalog=catalog, max_statement_length=5000)
    with connect(limited, "clinician") as conn:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SELECT " + ", ".join("1" for _ in range(4000)))
        assert caught.value.sqlstate == "54000"
        assert "--max-statement-length" in (caught.value.diag.message_hint or "")
        assert conn.execute("SELECT " + ", ".join("1" for _ in range(1000))).fetchone()[0] == 1


def test_statements_prepared_before_a_schema_change_are_planned_again(start_proxy, health_db, health_policy):
    """A named statement prepared under an older catalog snapshot runs only
    if, planned again under the current one, it sends PostgreSQL the same
    text: what it calls may now be something the policy refuses."""
    catalog = asyncio.run(read_catalog(health_db))
    current = [catalog]
    proxy = start_proxy(policy=health_policy, catalog=catalog)
    proxy.server.shared.catalog = lambda: current[0]
    query = "SELECT count(*) FROM patients WHERE patient_id > %s"
    with connect(proxy, "clinician", prepare_threshold=0) as conn:
        assert conn.execute(query, (0,)).fetchone()[0] > 0
        current[0] = dataclasses.replace(catalog)  # a refreshed snapshot, nothing changed
        assert conn.execute(query, (1,)).fetchone()[0] > 0
        relations = {key: value for key, value in catalog.relations.items() if key != ("public", "patients")}
        current[0] = dataclasses.replace(catalog, relations=relations)  # now it reads something else
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(query, (2,))
        assert caught.value.sqlstate in REFUSED
        current[0] = catalog
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_release_of_many_groups_is_built_off_the_event_loop(proxy):
    """Partition selection over a key with thousands of groups: PostgreSQL
    returns a row per group, and the answer is built on a worker thread
    while another session is served; the answer and the session are intact."""
    import threading
    import time

    many_groups = "SELECT visit_id, count(*) FROM visits GROUP BY visit_id"
    done = threading.Event()
    outcome: list[object] = []

    def release() -> None:
        try:
            with connect(proxy, "analyst") as conn:
                for _ in range(3):
                    outcome.append(len(conn.execute(many_groups).fetchall()))
                outcome.append(conn.execute("SELECT 1").fetchone())
        finally:
            done.set()

    worker = threading.Thread(target=release)
    with connect(proxy, "clinician") as conn:
        worker.start()
        slowest, answers = 0.0, 0
        while not done.is_set():
            started = time.perf_counter()
            conn.execute("SELECT 1")
            slowest = max(slowest, time.perf_counter() - started)
            answers += 1
        worker.join(60)
    assert len(outcome) == 4 and outcome[-1] == (1,), outcome
    assert slowest < 1.0, f"another session waited {slowest:.2f}s"


def test_transform_defers_its_answer_to_a_worker():
    from pgshroud.proxy.session import responses as r
    from pgshroud.rewriter.plans import Column, LocalAnswer

    built: list[int] = []

    def finalize(raw):
        built.append(len(raw.rows))
        return LocalAnswer("SELECT 1", (Column("n", 20),), (("1",),))

    transform = r.Transform(finalize, (Column("n", 20),), (0,), describe=True, on_error=lambda frame: frame)
    row = DataRow((b"1",)).encode()
    for _ in range(5):
        transform.frame(ord("D"), row)
    complete = CommandComplete("SELECT 1").encode()
    with pytest.raises(r.NeedsWorker):
        transform.frame(ord("C"), complete)
    transform.prepare()  # as on the worker thread
    out = transform.frame(ord("C"), complete)
    assert built == [5] and out.endswith(CommandComplete("SELECT 1").encode())


def test_a_private_statement_lives_under_a_name_no_client_name_reaches(proxy, raw_health):
    """A Release's statement and portal live upstream under names of
    pgshroud's own: a re-Parse that pgshroud refuses or PostgreSQL rejects,
    a name sharing the first 63 bytes, or SQL EXECUTE never reaches the
    bounded query (each once returned a patient's exact visit count)."""
    from psycopg.pq import ExecStatus

    private = PRIVATE_QUERY.encode()
    exact = exact_counts(raw_health)
    with connect(proxy, "analyst") as conn:
        pg = conn.pgconn
        assert pg.prepare(b"p5", private).status == ExecStatus.COMMAND_OK
        assert pg.prepare(b"p5", b"SELECT ssn FROM patients").status == ExecStatus.FATAL_ERROR  # refused
        for attempt in (lambda: conn.execute("EXECUTE p5").fetchall(),
                        lambda: _rows(pg.exec_prepared(b"p5", []))):
            try:
                rows = attempt()
            except psycopg.Error as exc:
                assert exc.sqlstate in ("26000", *REFUSED)
                continue
            assert not rows or dict(rows) != exact
        # A name PostgreSQL already has: its second Parse succeeds as a plain statement.
        assert pg.prepare(b"p6", private).status == ExecStatus.COMMAND_OK
        assert pg.prepare(b"p6", b"SELECT 1").status == ExecStatus.COMMAND_OK
        assert _rows(pg.exec_prepared(b"p6", [])) == [(b"1",)]
        assert conn.execute("EXECUTE p6").fetchall() == [(1,)]
        # Two names with the same first 63 bytes.
        assert pg.prepare(b"A" * 63 + b"X", private).status == ExecStatus.COMMAND_OK
        result = pg.exec_prepared(b"A" * 63 + b"Y", [])
        assert result.status == ExecStatus.FATAL_ERROR, _rows(result)
        # SQL DEALLOCATE of a private statement reaches it, and only it.
        assert pg.prepare(b"p7", private).status == ExecStatus.COMMAND_OK
        conn.execute("DEALLOCATE p7")
        assert pg.exec_prepared(b"p7", []).status == ExecStatus.FATAL_ERROR
        assert conn.execute("SELECT 1").fetchone() == (1,)


def _rows(result) -> list[tuple]:
    return [tuple(result.get_value(r, c) for c in range(result.nfields)) for r in range(result.ntuples)]
