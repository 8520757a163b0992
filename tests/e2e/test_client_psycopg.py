"""psycopg 3 (libpq) through pgshroud behaves as against PostgreSQL directly.

Each test is a function of an endpoint that drives psycopg and returns what
the application saw (rows, raw wire values, descriptions, errors, notices,
notifications, transaction states); `run_both` runs it directly and through
pgshroud and requires equal observations.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from decimal import Decimal

import psycopg
import pytest
from psycopg import errors as e
from psycopg.types.json import Jsonb

from tests.compare import Endpoint, assert_same, error_summary, outcome, run_both

pytestmark = pytest.mark.clients

COLUMNS = "id, name, price, tags, created, payload, doc"
ITEMS = f"select {COLUMNS} from items order by id"


def connect(endpoint: Endpoint, conninfo_params: dict | None = None, **kwargs) -> psycopg.Connection:
    return psycopg.connect(endpoint.conninfo(**(conninfo_params or {})), **kwargs)


def description(cursor: psycopg.Cursor) -> list[tuple]:
    res = cursor.pgresult
    return [
        (c.name, c.type_code, c.display_size, c.internal_size, c.precision, c.scale,
         res.ftable(i), res.ftablecol(i), res.fformat(i), res.fmod(i), res.fsize(i))
        for i, c in enumerate(cursor.description or ())
    ]


def raw_values(cursor: psycopg.Cursor) -> list[list[bytes | None]]:
    """The result's values exactly as they came over the wire."""
    res = cursor.pgresult
    return [[res.get_value(r, c) for c in range(res.nfields)] for r in range(res.ntuples)]


def diag(exc: psycopg.Error) -> dict:
    d = exc.diag
    fields = {name: getattr(d, name) for name in (
        "severity", "severity_nonlocalized", "sqlstate", "message_primary", "message_detail",
        "message_hint", "statement_position", "internal_position", "internal_query", "context",
        "schema_name", "table_name", "column_name", "datatype_name", "constraint_name",
        "source_file", "source_function")} | {"class": type(exc).__name__}
    # A temp table's schema is numbered by the backend's slot, which any
    # two connections may differ in.
    if fields["schema_name"] and re.fullmatch(r"pg_temp_\d+", fields["schema_name"]):
        fields["schema_name"] = "pg_temp"
    return fields


# --------------------------------------------------------------- results


def test_items_text_and_binary(endpoints):
    def observe(ep):
        seen = {}
        with connect(ep) as conn:
            for binary in (False, True):
                cur = conn.cursor(binary=binary)
                cur.execute(ITEMS)
                raw = raw_values(cur)
                cur.scroll(0, "absolute")
                seen[binary] = (description(cur), raw, cur.fetchall(), cur.statusmessage, cur.rowcount)
            # Every value sent back as a parameter, in text and in binary.
            rows = seen[False][2]
            back = []
            for fmt in ("%t", "%b"):
                cur = conn.cursor(binary=fmt == "%b")
                placeholders = ", ".join(
                    f"{fmt}::{t}" for t in ("int", "text", "numeric", "text[]", "date", "bytea", "jsonb"))
                for row in rows[::7]:
                    params = (*row[:6], None if row[6] is None else Jsonb(row[6]))
                    cur.execute(f"select {placeholders}", params)
                    back.append((raw_values(cur), cur.fetchone() == row))
            seen["params"] = back
        return seen

    seen = run_both(endpoints, observe)
    assert len(seen[True][2]) == 500 and all(ok for _, ok in seen["params"])
    assert seen[False][2] == seen[True][2]


def test_multiple_statements_in_one_query(endpoints):
    def observe(ep):
        with connect(ep, autocommit=True) as conn:
            cur = conn.execute("select 1 as a; select 'two' as b, 2; ; set search_path = public; select * from items where false")
            sets = []
            while True:
                sets.append((cur.statusmessage, cur.fetchall() if cur.description else None))
                if not cur.nextset():
                    break
            empty = conn.execute("").statusmessage
            failed = outcome(lambda: conn.execute("select 1; select 1/0; select 3").fetchall())
            return sets, empty, failed, conn.execute("select 42").fetchone()

    run_both(endpoints, observe)


def test_stream_rows(endpoints):
    # cursor.stream() reads in libpq's single-row / chunked mode.
    def observe(ep):
        with connect(ep) as conn:
            cur = conn.cursor()
            rows = list(cur.stream(ITEMS))
            first = []
            # Large enough that PostgreSQL is still sending when the cancel arrives.
            for row in cur.stream("select g from generate_series(1, 5000000) g"):
                first.append(row)
                if len(first) == 5:
                    break  # abandons the rest of the result: psycopg cancels the query
            status = conn.info.transaction_status
            conn.rollback()
            return (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest(), first, status,
                    conn.execute("select 1").fetchone())

    run_both(endpoints, observe)


# --------------------------------------------------------------- prepared statements


def test_server_side_prepared_statements(endpoints):
    query = "select id, name, price from items where id = %s or id = %s + 100 order by id"

    def observe(ep):
        seen = []
        with connect(ep) as conn:
            cur = conn.cursor()
            for i in range(1, 6):
                cur.execute(query, (i, i), prepare=True)
                seen.append(cur.fetchall())
            cur.execute(query, (7, 7), prepare=False)
            seen.append(cur.fetchall())
            seen.append(conn.execute(
                "select name, statement, parameter_types::text, from_sql, generic_plans + custom_plans"
                " from pg_prepared_statements order by name").fetchall())
            conn.rollback()
        # prepare_threshold=0: every statement is prepared before its first run.
        with connect(ep, prepare_threshold=0) as conn:
            cur = conn.cursor()
            for binary in (False, True):
                cur = conn.cursor(binary=binary)
                for i in (3, 3, 4):
                    cur.execute(f"select {COLUMNS} from items where id > %s order by id limit 5", (i * 10,))
                    seen.append((description(cur), raw_values(cur)))
            cur.execute("select count(*) from items")
            seen.append(cur.fetchone())
            seen.append(conn.execute("select count(*) from pg_prepared_statements").fetchone())
            # A plan whose result type changed under it.
            conn.execute("create temp table shape (a int)")
            conn.execute("insert into shape values (1)")
            seen.append(conn.execute("select * from shape").fetchall())
            conn.execute("alter table shape add column b text default 'x'")
            seen.append(outcome(lambda: conn.execute("select * from shape").fetchall()))
            conn.rollback()
            seen.append(conn.execute("select 'recovered'").fetchone())
            conn.execute("deallocate all")
            seen.append(outcome(lambda: conn.execute("select %s::int + 1", (41,)).fetchone()))
        # A small cache: psycopg deallocates the statements it evicts.
        with connect(ep, prepare_threshold=0, autocommit=True) as conn:
            conn.prepared_max = 3
            for i in range(12):
                seen.append(conn.execute(f"select {i} + %s::int", (i,)).fetchone())
            seen.append(conn.execute("select count(*) from pg_prepared_statements").fetchone())
        return seen

    run_both(endpoints, observe)


# --------------------------------------------------------------- pipeline mode


def test_pipeline_with_a_failing_statement(endpoints):
    def observe(ep):
        raised: list = []
        cursors: list[psycopg.Cursor] = []

        def attempt(function):
            try:
                function()
            except psycopg.Error as exc:
                raised.append(error_summary(exc))

        def execute(conn, sql, params=None):
            cur = conn.cursor()
            cursors.append(cur)
            attempt(lambda: cur.execute(sql, params))

        with connect(ep, autocommit=True) as conn:
            conn.execute("create temp table p (id int primary key, v text)")
            try:
                with conn.pipeline() as pipeline:
                    for i in range(30):
                        execute(conn, "insert into p values (%s, %s) returning id, v", (i, f"v{i}"))
                    execute(conn, "select count(*) from p")
                    attempt(pipeline.sync)
                    execute(conn, "insert into p values (%s, %s)", (3, "duplicate"))
                    execute(conn, "insert into p values (%s, %s)", (100, "aborted"))
                    execute(conn, "select count(*) from p")
                    attempt(pipeline.sync)
                    execute(conn, "select count(*) from p")
                    execute(conn, "select 1/0")
                    execute(conn, "select 'never'")
            except psycopg.Error as exc:
                raised.append(error_summary(exc))
            states = []
            for cur in cursors:
                states.append(outcome(lambda cur=cur: (cur.statusmessage, cur.fetchall() if cur.description else None)))
            after = conn.execute("select id, v from p order by id").fetchall()
            # A pipeline inside a transaction, rolled back by its error.
            conn.autocommit = False
            def failing_pipeline():
                with conn.pipeline():
                    conn.execute("insert into p values (500, 'x')")
                    conn.execute("insert into p values (500, 'y')")
            attempt(failing_pipeline)
            status = conn.info.transaction_status
            conn.rollback()
            last = conn.execute("select count(*) from p").fetchone()
            # Whether psycopg also raises PipelineAborted at some later call
            # depends on when results arrive relative to the calls (it reads
            # them opportunistically), not on what the server sent.
            raised = [r for r in raised if r[0] != "PipelineAborted"]
            return raised, states, after, status, last

    raised, _states, after, _status, last = run_both(endpoints, observe)
    assert [r[0] for r in raised] == ["UniqueViolation", "DivisionByZero", "UniqueViolation"], raised
    assert len(after) == 30 and last == (30,)


# --------------------------------------------------------------- server-side cursors


def test_named_cursors(endpoints):
    def observe(ep):
        seen = []
        with connect(ep) as conn:
            for binary in (False, True):
                with conn.cursor(f"items_{int(binary)}", binary=binary) as cur:
                    cur.itersize = 7
                    cur.execute(ITEMS)
                    seen.append((description(cur), list(cur)))
            with conn.cursor("scroll", scrollable=True) as cur:
                cur.execute("select g from generate_series(1, 50) g")
                seen.append(cur.fetchmany(5))
                cur.scroll(-3)
                seen.append(cur.fetchmany(2))
                cur.scroll(40, "absolute")
                seen.append(cur.fetchall())
            seen.append(conn.execute("select name, statement, is_holdable, is_scrollable from pg_cursors").fetchall())
            conn.commit()
            with conn.cursor("held", withhold=True) as cur:
                cur.itersize = 11
                cur.execute("select id, name from items where id <= 40 order by id")
                conn.commit()
                seen.append(list(cur))
            with conn.cursor("broken") as cur:
                seen.append(outcome(lambda: cur.execute("select 1/(id - 250) from items order by id").fetchall()))
            conn.rollback()
            seen.append(conn.execute("select count(*) from pg_cursors").fetchone())
        return seen

    seen = run_both(endpoints, observe)
    assert len(seen[0][1]) == 500


# --------------------------------------------------------------- COPY


def test_copy_to(endpoints):
    def observe(ep):
        seen = {}
        with connect(ep) as conn:
            cur = conn.cursor()
            with cur.copy("copy items to stdout") as copy:
                seen["text"] = b"".join(bytes(block) for block in copy)
            with cur.copy(f"copy ({ITEMS}) to stdout (format binary)") as copy:
                seen["binary"] = b"".join(bytes(block) for block in copy)
            with cur.copy(f"copy ({ITEMS}) to stdout (format binary)") as copy:
                copy.set_types(["int4", "text", "numeric", "text[]", "date", "bytea", "jsonb"])
                seen["rows"] = list(copy.rows())
            with cur.copy("copy (select g, repeat('x', g % 300) from generate_series(1, 50000) g) to stdout (format csv)") as copy:
                seen["big"] = hashlib.sha256(b"".join(bytes(b) for b in copy)).hexdigest()
            seen["status"] = (cur.statusmessage, cur.rowcount)
            seen["error"] = outcome(lambda: cur.copy("copy (select 1/(id - 300) from items order by id) to stdout").__enter__().read())
            conn.rollback()
            seen["after"] = conn.execute("select 'ok'").fetchone()
        return seen

    seen = run_both(endpoints, observe)
    assert len(seen["rows"]) == 500 and seen["text"].count(b"\n") == 500


def test_copy_from(endpoints):
    def observe(ep):
        seen = {}
        with connect(ep) as conn:
            rows = conn.execute(ITEMS).fetchall()
            cur = conn.cursor()
            cur.execute("create temp table c_text (like items)")
            cur.execute("create temp table c_bin (like items)")
            with cur.copy(f"copy c_text ({COLUMNS}) from stdin") as copy:
                for row in rows:
                    copy.write_row((*row[:6], None if row[6] is None else Jsonb(row[6])))
            seen["text"] = (cur.statusmessage, cur.rowcount)
            with cur.copy(f"copy c_bin ({COLUMNS}) from stdin (format binary)") as copy:
                copy.set_types(["int4", "text", "numeric", "text[]", "date", "bytea", "jsonb"])
                for row in rows:
                    copy.write_row((*row[:6], None if row[6] is None else Jsonb(row[6])))
            seen["binary"] = (cur.statusmessage, cur.rowcount)
            for table in ("c_text", "c_bin"):
                seen[table] = conn.execute(
                    f"select count(*), (select count(*) from (select * from {table} except select * from items) d)"
                    f" from {table}").fetchone()
            # Raw blocks, a large stream in pieces the proxy must relay unbuffered.
            cur.execute("create temp table c_raw (id int, body text)")
            block = "".join(f"{i}\t{'y' * (i % 500)}\n" for i in range(20000)).encode()
            with cur.copy("copy c_raw from stdin") as copy:
                for start in range(0, len(block), 65521):
                    copy.write(block[start:start + 65521])
            seen["raw"] = conn.execute("select count(*), md5(string_agg(body, ',' order by id)) from c_raw").fetchone()
            conn.commit()
            # The client aborts the COPY: psycopg sends CopyFail.
            def aborted():
                with cur.copy("copy c_raw from stdin") as copy:
                    copy.write(b"1\tpartial\n")
                    raise RuntimeError("client gave up")
            seen["copyfail"] = outcome(aborted)
            seen["copyfail_state"] = conn.info.transaction_status
            conn.rollback()
            # The server rejects a row in the middle of the stream.
            def bad_row():
                with cur.copy("copy c_raw from stdin") as copy:
                    copy.write(b"1\tgood\nnot-a-number\tbad\n2\tgood\n")
            seen["bad_row"] = outcome(bad_row)
            conn.rollback()
            seen["after"] = conn.execute("select count(*) from c_raw").fetchone()
        return seen

    seen = run_both(endpoints, observe)
    assert seen["c_text"] == seen["c_bin"] == (500, 0)
    assert seen["raw"][0] == 20000 and seen["after"] == (20000,)


# --------------------------------------------------------------- executemany, transactions, errors


def test_executemany(endpoints):
    def observe(ep):
        seen = []
        with connect(ep) as conn:
            cur = conn.cursor()
            cur.execute("create temp table em (id int primary key, v text, n numeric)")
            cur.executemany("insert into em values (%s, %s, %s)", [(i, f"v{i}", Decimal(i) / 8) for i in range(200)])
            seen.append((cur.rowcount, cur.statusmessage))
            cur.executemany("update em set v = %s where id = %s returning id, v", [(f"u{i}", i) for i in range(0, 200, 20)],
                            returning=True)
            results = []
            while True:
                results.append(cur.fetchall())
                if not cur.nextset():
                    break
            seen.append(results)
            conn.commit()
            seen.append(outcome(lambda: cur.executemany("insert into em values (%s, %s, %s)",
                                                        [(1000, "a", 1), (1001, "b", 2), (5, "dup", 3), (1002, "c", 4)])))
            seen.append(conn.info.transaction_status)
            conn.rollback()
            conn.autocommit = True
            seen.append(outcome(lambda: cur.executemany("insert into em values (%s, %s, %s)",
                                                        [(2000, "a", 1), (5, "dup", 3), (2001, "c", 4)])))
            seen.append(conn.execute("select id, v, n from em where id >= 1000 or id % 20 = 0 order by id").fetchall())
        return seen

    run_both(endpoints, observe)


def test_transactions_and_savepoints(endpoints):
    def observe(ep):
        table = "tx_scratch"  # a temp table: the same name in both sessions, for equal error messages
        seen = []
        with connect(ep) as conn:
            try:
                conn.execute(f"create temp table {table} (id int primary key)")
                conn.commit()
                seen.append(conn.info.transaction_status)
                conn.execute(f"insert into {table} values (1)")
                seen.append(conn.info.transaction_status)
                conn.commit()
                conn.execute(f"insert into {table} values (2)")
                conn.rollback()
                with conn.transaction():
                    conn.execute(f"insert into {table} values (3)")
                    with conn.transaction():
                        conn.execute(f"insert into {table} values (4)")
                        raise psycopg.Rollback()
                    try:
                        with conn.transaction():
                            conn.execute(f"insert into {table} values (5)")
                            conn.execute(f"insert into {table} values (1)")
                    except e.UniqueViolation as exc:
                        seen.append(diag(exc))
                    seen.append(conn.info.transaction_status)
                    with conn.transaction(savepoint_name="named_sp"):
                        conn.execute(f"insert into {table} values (6)")
                conn.execute("savepoint manual")
                conn.execute(f"insert into {table} values (7)")
                conn.execute("rollback to savepoint manual")
                conn.execute("release savepoint manual")
                conn.commit()
                seen.append(conn.execute(f"select array_agg(id order by id) from {table}").fetchone())
                conn.commit()
                # Read-only and isolation level come through as SET TRANSACTION / BEGIN options.
                conn.read_only = True
                conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
                seen.append(conn.execute("select current_setting('transaction_read_only'), current_setting('transaction_isolation')").fetchone())
                seen.append(outcome(lambda: conn.execute(f"insert into {table} values (8)").statusmessage))
                seen.append(outcome(lambda: conn.execute("create temp table other_tx (id int)").statusmessage))
                conn.rollback()
            finally:
                conn.rollback()
                conn.read_only = None
                conn.autocommit = True
                conn.execute(f"drop table if exists {table}")
        return seen

    seen = run_both(endpoints, observe)
    assert seen[-4] == ([1, 3, 6],)


def test_error_then_recovery(endpoints):
    def observe(ep):
        seen = []
        with connect(ep) as conn:
            for sql, params in [("select 1/0", None),
                                ("select nosuch from items where id = %s", (1,)),
                                ("select * from items where id = 'x'", None),
                                ("insert into items (id) values (1)", None),
                                ("selec 1", None),
                                ("select %s::int", ("NaN",))]:
                try:
                    conn.execute(sql, params)
                except psycopg.Error as exc:
                    seen.append(diag(exc))
                seen.append(conn.info.transaction_status)
                seen.append(outcome(lambda: conn.execute("select 1").fetchone()))
                conn.rollback()
                seen.append(conn.execute("select count(*) from items").fetchone())
            conn.rollback()
            conn.autocommit = True
            seen.append(outcome(lambda: conn.execute("select 1/0")))
            seen.append((conn.info.transaction_status, conn.execute("select 2").fetchone()))
        return seen

    run_both(endpoints, observe)


def test_notice_handler(endpoints):
    def observe(ep):
        notices = []
        with connect(ep, autocommit=True) as conn:
            conn.add_notice_handler(lambda d: notices.append(
                (d.severity, d.sqlstate, d.message_primary, d.message_detail, d.message_hint, d.context)))
            conn.execute("DO $$ BEGIN RAISE NOTICE 'x'; END $$")
            conn.execute("set client_min_messages = debug1")
            conn.execute("""DO $$ BEGIN
                RAISE NOTICE 'first %', 1;
                RAISE WARNING 'careful' USING DETAIL = 'some detail', HINT = 'a hint', ERRCODE = '01000';
                RAISE INFO 'info';
                RAISE DEBUG 'debug';
                RAISE NOTICE '%', repeat('long ', 2000);
            END $$""")
            conn.execute("reset client_min_messages")
            conn.execute("create temp table if not exists nt (id int)")
            conn.execute("create temp table if not exists nt (id int)")
            rows = conn.execute("select g from generate_series(1, 3) g where (select count(*) from (select pg_notify('x', 'y')) s) = 1").fetchall()
            with conn.pipeline():
                conn.execute("DO $$ BEGIN RAISE NOTICE 'in pipeline'; END $$")
        return notices, rows

    notices, _ = run_both(endpoints, observe)
    assert len(notices) == 8


# --------------------------------------------------------------- LISTEN / NOTIFY


def test_listen_notify(endpoints):
    def observe(ep):
        with connect(ep, autocommit=True) as listener, connect(ep, autocommit=True) as sender:
            listener.execute("listen chan")
            listener.execute('listen "Other Chan"')
            sender_pid = sender.execute("select pg_backend_pid()").fetchone()[0]
            sender.execute("notify chan, 'one'")
            sender.execute("select pg_notify('Other Chan', 'two')")
            with sender.transaction():
                sender.execute("notify chan, 'in transaction'")
                sender.execute("notify chan, 'in transaction'")  # folded into one
            sender.execute("select pg_notify('chan', %s)", ("payload ☕ " + "z" * 7000,))
            start = time.monotonic()
            got = [(n.channel, n.payload, n.pid == sender_pid) for n in listener.notifies(timeout=5, stop_after=4)]
            waited_for_four = time.monotonic() - start
            # Nothing more arrives: the generator gives up after its timeout.
            start = time.monotonic()
            extra = list(listener.notifies(timeout=0.5))
            timed_out_after = time.monotonic() - start
            listener.execute("unlisten *")
            sender.execute("notify chan, 'unheard'")
            unheard = list(listener.notifies(timeout=0.3))
            return got, extra, unheard, waited_for_four < 4, 0.4 < timed_out_after < 3

    got, *_ = run_both(endpoints, observe)
    assert len(got) == 4 and all(same_pid for *_, same_pid in got)


def test_own_notification_carries_own_backend_pid(endpoints):
    """libpq documents PQbackendPID for "comparison to NOTIFY messages (which
    include the PID of the notifying backend process)": a listener tells its
    own notifications apart that way, and so must it through pgshroud."""

    def observe(ep):
        with connect(ep, autocommit=True) as conn:
            conn.execute("listen self_chan")
            conn.execute("notify self_chan, 'mine'")
            (note,) = conn.notifies(timeout=5, stop_after=1)
            server_pid = conn.execute("select pg_backend_pid()").fetchone()[0]
            return {"notify pid == conn.info.backend_pid": note.pid == conn.info.backend_pid,
                    "pg_backend_pid() == conn.info.backend_pid": server_pid == conn.info.backend_pid}

    run_both(endpoints, observe)


# --------------------------------------------------------------- session settings


def test_connection_errors(endpoints):
    """Failures during startup and authentication reach the client as PostgreSQL's."""

    def attempt(ep: Endpoint, **params):
        try:
            psycopg.connect(ep.conninfo(**params)).close()
        except psycopg.OperationalError as exc:
            message = str(exc).replace(f'port {ep.port}', "port <port>")
            return type(exc).__name__, exc.sqlstate, message
        return "connected"

    def observe(ep):
        return [
            attempt(ep, password="wrong"),
            attempt(ep, dbname="no_such_database"),
            attempt(ep, user="no_such_user", password="x"),
            attempt(ep, options="-c no_such_setting=1"),
            attempt(ep, options="-c work_mem=nonsense"),
            attempt(ep, options="-c search_path=public"),
        ]

    seen = run_both(endpoints, observe)
    assert "password authentication failed" in seen[0][2] and seen[-1] == "connected"



def test_autocommit(endpoints):
    def observe(ep):
        seen = []
        with connect(ep) as conn:
            seen.append(outcome(lambda: conn.execute("vacuum items")))
            conn.rollback()
            conn.autocommit = True
            seen.append(outcome(lambda: conn.execute("vacuum (analyze) items").statusmessage))
            seen.append(conn.info.transaction_status)
            conn.execute("begin")
            seen.append(conn.info.transaction_status)
            seen.append(outcome(lambda: conn.execute("create database should_not_exist")))
            seen.append(conn.info.transaction_status)
            conn.execute("rollback")
            seen.append(conn.execute("select txid_current_if_assigned() is null").fetchone())
        return seen

    seen = run_both(endpoints, observe)
    assert seen[0][0] == "error" and seen[1] == ("ok", "VACUUM")


def test_parameter_status(endpoints):
    names = ("server_version", "server_encoding", "client_encoding", "DateStyle", "IntervalStyle", "TimeZone",
             "integer_datetimes", "standard_conforming_strings", "is_superuser", "session_authorization",
             "application_name", "default_transaction_read_only", "in_hot_standby")

    def observe(ep):
        seen = []
        with connect(ep, autocommit=True) as conn:
            seen.append({n: conn.info.parameter_status(n) for n in names})
            seen.append((conn.info.server_version, conn.info.encoding, conn.info.timezone.key,
                         conn.info.user, conn.info.dbname, conn.info.status, conn.info.transaction_status,
                         conn.pgconn.full_protocol_version, conn.info.backend_pid > 0))
            conn.execute("set application_name = 'changed'")
            conn.execute("set timezone = 'Asia/Kathmandu'")
            conn.execute("set datestyle = 'SQL, DMY'")
            conn.execute("set client_encoding = 'LATIN1'")
            seen.append({n: conn.info.parameter_status(n) for n in names})
            seen.append(conn.execute("select now()::date = current_date, '2024-02-03'::date::text").fetchone())
            conn.execute("reset all")
            seen.append({n: conn.info.parameter_status(n) for n in names})
        return seen

    seen = run_both(endpoints, observe)
    assert seen[0]["server_version"].startswith("15")


def test_startup_parameters_reach_postgresql(endpoints):
    def observe(ep):
        params = {"application_name": "pgshroud-suite ☂", "options": "-c search_path=pg_catalog,public -c statement_timeout=1234 -c work_mem=5MB",
                  "client_encoding": "UTF8", "fallback_application_name": "ignored"}
        with connect(ep, params) as conn:
            settings = conn.execute(
                "select current_setting('application_name'), current_setting('search_path'),"
                " current_setting('statement_timeout'), current_setting('work_mem'), current_schemas(true)::text,"
                " (select application_name from pg_stat_activity where pid = pg_backend_pid())").fetchone()
            status = conn.info.parameter_status("application_name")
            # Unqualified names now resolve in pg_catalog first.
            resolved = conn.execute("select count(*) from items").fetchone()
        with connect(ep, {"fallback_application_name": "fallback-name"}) as conn:
            fallback = conn.execute("select current_setting('application_name')").fetchone()
        with connect(ep, {"options": "-c statement_timeout=200"}) as conn:
            timeout = outcome(lambda: conn.execute("select pg_sleep(2)"))
        return settings, status, resolved, fallback, timeout

    settings, *_ = run_both(endpoints, observe)
    # PostgreSQL itself replaces non-ASCII characters in application_name.
    assert settings[0].startswith("pgshroud-suite ") and settings[1] == "pg_catalog,public"


# --------------------------------------------------------------- large values


def test_large_results(endpoints):
    def observe(ep):
        seen = {}
        with connect(ep) as conn:
            for binary in (False, True):
                cur = conn.cursor(binary=binary)
                cur.execute("select g, md5(g::text), g * 1.5 from generate_series(1, 200000) g")
                rows = cur.fetchall()
                seen[f"series-{binary}"] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
            # 20 MB of bytea, fetched as text (hex, 40 MB) and as binary.
            conn.execute("create temp table blob as select string_agg(decode(repeat(md5(g::text), 16), 'hex'),"
                         " ''::bytea order by g) as b from generate_series(1, 81920) g")
            for binary in (False, True):
                cur = conn.cursor(binary=binary)
                value = cur.execute("select b, sha256(b) from blob").fetchone()
                seen[f"bytea-{binary}"] = (len(value[0]), hashlib.sha256(value[0]).digest() == value[1],
                                           value[1].hex())
                payload = value[0]
            # And sent back as one binary parameter: a 20 MB Bind message.
            seen["param"] = conn.execute("select length(%b::bytea), encode(sha256(%b::bytea), 'hex')",
                                         (payload, payload)).fetchone()
        return seen

    seen = run_both(endpoints, observe)
    assert seen["bytea-True"][0] == 20 * 1024 * 1024 and seen["bytea-True"][1]
    assert seen["series-False"][0] == 200000


def test_large_bind_message_is_relayed_whole(endpoints):
    """A 64 MB text parameter arrives as one Bind message in many chunks;
    pgshroud joins it once (its speed is for bench/, not for a test)."""
    value = "x" * (64 << 20)

    def observe(ep):
        with connect(ep) as conn:
            return conn.execute("select length(%s::text), md5(%s::text)", (value, value)).fetchone()

    run_both(endpoints, observe)


# --------------------------------------------------------------- cancellation, protocol 3.2


def cancel_during_sleep(conn: psycopg.Connection) -> tuple:
    # cancel_safe(), not cancel(): libpq's PQcancel blocks while holding the
    # GIL, which would starve the pgshroud running in this very process.
    timer = threading.Timer(0.5, conn.cancel_safe)
    start = time.monotonic()
    timer.start()
    try:
        result = outcome(lambda: conn.execute("select pg_sleep(20)"))
    finally:
        timer.cancel()
    elapsed = time.monotonic() - start
    conn.rollback()
    return result, elapsed < 5, conn.execute("select 'usable'").fetchone()


def test_cancel(endpoints):
    def observe(ep):
        with connect(ep) as conn:
            return cancel_during_sleep(conn), cancel_during_sleep(conn)

    seen = run_both(endpoints, observe)
    assert seen[0][0][1][0] == "QueryCanceled" and seen[0][1]


def test_cancel_when_idle_does_not_hit_the_next_statement(endpoints):
    """PostgreSQL has signalled the backend by the time it closes the cancel
    connection; a backend that is idle then ignores the cancel. The next
    statement, sent right after cancel_safe() returns, must run."""

    def observe(ep):
        seen = []
        with connect(ep, autocommit=True) as conn:
            for _ in range(3):
                conn.execute("select 1")
                conn.cancel_safe()
                seen.append(outcome(lambda: conn.execute("select pg_sleep(0.3), 'ran'").fetchone()[1]))
        return seen

    seen = run_both(endpoints, observe)
    assert seen == [("ok", "ran")] * 3


def test_protocol_3_2(endpoints):
    """libpq 18 can ask for protocol 3.2 (256-bit cancel keys). PostgreSQL 15
    answers with NegotiateProtocolVersion and the session runs 3.0; pgshroud
    may grant 3.2 itself. Either way the session must work, cancellation
    included."""

    def observe(ep):
        with connect(ep, {"max_protocol_version": "3.2"}) as conn:
            version = conn.pgconn.full_protocol_version
            rows = conn.execute(ITEMS).fetchall()
            binary = conn.cursor(binary=True).execute(ITEMS).fetchall()
            cancelled = cancel_during_sleep(conn)
            return version, (len(rows), rows == binary, hashlib.sha256(repr(rows).encode()).hexdigest()), cancelled

    direct = observe(endpoints.direct)
    proxied = observe(endpoints.proxied)
    assert direct[0] == 30000
    assert proxied[0] in (30000, 30002)
    assert_same(direct[1:], proxied[1:], what="protocol 3.2 session")
    assert direct[2][0][1][0] == "QueryCanceled"
