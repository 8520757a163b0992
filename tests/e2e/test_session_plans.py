"""The session carries out every plan kind, driven by a fake planner.

The planner reads a marker word at the start of each statement:
`local` answers locally, `refuse` refuses, `rewrite <sql>` runs <sql>,
`release <sql>` charges and runs <sql> and adds 1000 to its single value;
anything else passes through. Real clients and a real PostgreSQL check that
answers arrive in order and that refusals behave like PostgreSQL errors.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import errors

from pgshroud.proxy.codec.framing import NEED_DATA, FrameReader
from pgshroud.proxy.codec.messages import (
    DataRow,
    ErrorResponse,
    FunctionCall,
    Query,
    ReadyForQuery,
    StartupMessage,
)
from pgshroud.rewriter import PlanContext, plan, plan_function_call
from pgshroud.rewriter.plans import (
    Column,
    Cost,
    Local,
    LocalAnswer,
    Passthrough,
    RawResult,
    Refuse,
    Release,
    Rewrite,
)
from tests.memory_ledger import MemoryLedger, capped

SETTING = LocalAnswer("SHOW", (Column("setting"),), (("on",),))


HALF = Cost(0.5)


@dataclass(frozen=True)
class PlusThousand:
    cost: Cost = HALF
    columns: tuple[Column, ...] = (Column("total", 20),)

    def finalize(self, raw: RawResult) -> LocalAnswer:
        (value,) = raw.rows[0]
        return LocalAnswer("SELECT 1", self.columns, ((str(int(value) + 1000),),))


def fake_planner(sql: str, context: PlanContext):
    plans = []
    for statement in (s.strip() for s in sql.split(";")):
        if not statement:
            continue
        word, _, rest = statement.partition(" ")
        if word == "local":
            plans.append(Local(SETTING))
        elif word == "refuse":
            plans.append(Refuse("42501", "refused by the test planner", hint="do something else"))
        elif word == "rewrite":
            plans.append(Rewrite(rest))
        elif word == "release":
            plans.append(Release(rest, PlusThousand()))
        else:
            plans.append(Passthrough(statement))
    if len(plans) == 1 and isinstance(plans[0], Passthrough):
        return (Passthrough(sql),)
    return plans


@pytest.fixture
def ledger() -> MemoryLedger:
    """Epsilon 1 for all charges together; 10 ms a charge, as a real ledger commits durably before answering."""
    return MemoryLedger(capped(1.0), latency=0.01)


@pytest.fixture
def proxy(start_proxy, ledger):
    return start_proxy(fake_planner, ledger=ledger)


@pytest.fixture
def conn(proxy):
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        yield conn


def simple(conn: psycopg.Connection) -> psycopg.ClientCursor:
    """A cursor that sends simple Query messages."""
    return psycopg.ClientCursor(conn)


def all_results(cursor: psycopg.Cursor) -> list[list[tuple]]:
    results = []
    while True:
        results.append(cursor.fetchall() if cursor.description else [])
        if not cursor.nextset():
            return results


# The default planner


def test_plan_without_policy_passes_the_whole_text_without_lexing():
    text = "select 1; this is not SQL at all $$ unterminated"
    assert plan(text, PlanContext(user="x")) == (Passthrough(text),)
    assert plan(text, PlanContext(user="x", policy=object(), role_sees_raw=True)) == (Passthrough(text),)


def test_plan_with_policy_never_passes_unseen_statements():
    (only,) = plan("select 1", PlanContext(user="x", policy=object()))
    assert isinstance(only, Refuse)


def test_function_calls_only_for_raw_roles():
    assert isinstance(plan_function_call(1, PlanContext(user="x")), Passthrough)
    assert isinstance(plan_function_call(1, PlanContext(user="x", policy=object())), Refuse)


# Local


def test_local_answer_simple_protocol(conn):
    cur = simple(conn).execute("local")
    assert [d.name for d in cur.description] == ["setting"]
    assert cur.fetchall() == [("on",)]


def test_local_answers_in_order_between_upstream_results(conn):
    cur = simple(conn).execute("select 1; local; select 2; local")
    assert all_results(cur) == [[(1,)], [("on",)], [(2,)], [("on",)]]


def test_local_answer_extended_protocol_text_and_binary(conn):
    assert conn.execute("local").fetchall() == [("on",)]
    assert conn.execute("local", binary=True).fetchall() == [("on",)]
    assert conn.execute("local", prepare=True).fetchall() == [("on",)]
    assert conn.execute("local", prepare=True).fetchall() == [("on",)]


def test_local_in_failed_transaction_gets_postgres_error(proxy):
    with psycopg.connect(proxy.dsn()) as conn:
        with pytest.raises(errors.DivisionByZero):
            conn.execute("select 1/0")
        with pytest.raises(errors.InFailedSqlTransaction):
            simple(conn).execute("local")
        conn.rollback()
        assert simple(conn).execute("local").fetchall() == [("on",)]


# Rewrite


def test_rewrite_runs_the_new_text(conn):
    assert simple(conn).execute("rewrite select 42").fetchall() == [(42,)]
    assert conn.execute("rewrite select 43").fetchall() == [(43,)]
    assert conn.execute("rewrite select %s::int", (44,), prepare=True).fetchall() == [(44,)]


# Refuse


def test_refusal_is_a_postgres_error_and_the_session_goes_on(conn):
    with pytest.raises(errors.InsufficientPrivilege) as raised:
        simple(conn).execute("refuse")
    assert raised.value.diag.message_primary == "refused by the test planner"
    assert raised.value.diag.message_hint == "do something else"
    assert raised.value.diag.severity == "ERROR"
    assert simple(conn).execute("select 1").fetchall() == [(1,)]


def test_refusal_stops_a_multi_statement_query_and_rolls_it_back(conn):
    conn.execute("create temp table t(x int)")
    cur = simple(conn)
    with pytest.raises(errors.InsufficientPrivilege):
        cur.execute("insert into t values (1); refuse; insert into t values (2)")
    # The Query ran as one implicit transaction: the first insert is undone.
    assert conn.execute("select count(*) from t").fetchone() == (0,)


def test_refusal_aborts_the_transaction_upstream(proxy):
    with psycopg.connect(proxy.dsn()) as conn:
        conn.execute("create temp table t(x int)")
        conn.commit()
        conn.execute("insert into t values (1)")
        with pytest.raises(errors.InsufficientPrivilege):
            simple(conn).execute("refuse")
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute("select 1")
        conn.rollback()
        assert conn.execute("select count(*) from t").fetchone() == (0,)


def test_refusal_in_extended_protocol(conn):
    with pytest.raises(errors.InsufficientPrivilege):
        conn.execute("refuse", prepare=True)
    assert conn.execute("select %s::int", (5,)).fetchone() == (5,)


def test_refusal_in_a_pipeline_skips_to_sync_on_both_sides(conn):
    conn.execute("create temp table t(x int)")
    with pytest.raises(errors.InsufficientPrivilege), conn.pipeline():
        conn.execute("insert into t values (1)")
        conn.execute("refuse")
        conn.execute("insert into t values (2)")
    # PostgreSQL would have rolled the implicit transaction back: so must we.
    assert conn.execute("select count(*) from t").fetchone() == (0,)
    with conn.pipeline():
        first = conn.execute("select 1")
        second = conn.execute("local")
        third = conn.execute("select 3")
    assert (first.fetchone(), second.fetchone(), third.fetchone()) == ((1,), ("on",), (3,))


def test_named_statements_keep_their_plans(conn):
    conn.execute("local", prepare=True)
    conn.execute("select 7", prepare=True)
    for _ in range(3):
        assert conn.execute("local", prepare=True).fetchall() == [("on",)]
        assert conn.execute("select 7", prepare=True).fetchall() == [(7,)]


# Release


def test_release_charges_then_answers_simple(conn, ledger):
    cur = simple(conn).execute("release select count(*) from items")
    assert cur.fetchall() == [(1500,)]
    assert [d.name for d in cur.description] == ["total"]
    assert ledger.charges == [("app", Cost(0.5))]


def test_release_extended_text_binary_and_prepared(conn, ledger):
    ledger.policy = capped(10)
    assert conn.execute("release select count(*) from items").fetchone() == (1500,)
    assert conn.execute("release select count(*) from items", binary=True).fetchone() == (1500,)
    assert conn.execute("release select count(*) from items", prepare=True).fetchone() == (1500,)
    assert conn.execute("release select count(*) from items", prepare=True).fetchone() == (1500,)
    assert len(ledger.charges) == 4  # every execution is a new release


def test_release_refused_when_budget_is_exhausted(conn, ledger):
    simple(conn).execute("release select 1")
    conn.execute("release select 1")
    with pytest.raises(psycopg.Error) as raised:
        simple(conn).execute("release select 1")
    assert raised.value.sqlstate == "53400"
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("release select 1")
    assert raised.value.sqlstate == "53400"
    assert len(ledger.charges) == 2
    assert conn.execute("select 1").fetchone() == (1,)


def test_release_without_ledger_is_refused(start_proxy):
    proxy = start_proxy(fake_planner)
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as raised:
            conn.execute("release select 1")
        assert raised.value.sqlstate == "55000"


def test_release_error_text_is_withheld(conn):
    with pytest.raises(psycopg.Error) as raised:
        simple(conn).execute("release select 1/0")
    assert raised.value.sqlstate == "22000"
    assert "division" not in str(raised.value)


def test_release_between_other_statements(conn):
    cur = simple(conn).execute("select 1; release select 2; local")
    assert all_results(cur) == [[(1,)], [(1002,)], [("on",)]]


# Raw protocol: FunctionCall, ordering of pipelined simple queries


def _raw_session(proxy) -> tuple[socket.socket, FrameReader]:
    sock = socket.create_connection((proxy.host, proxy.port))
    sock.sendall(StartupMessage(3, 0, (("user", "u_trust"), ("database", "app"))).encode())
    reader = FrameReader(max_length=1 << 20)
    _read_until_ready(sock, reader)
    return sock, reader


def _read_until_ready(sock: socket.socket, reader: FrameReader) -> list[tuple[bytes, bytes]]:
    frames = []
    while True:
        frame = reader.next_frame()
        if frame is NEED_DATA:
            data = sock.recv(65536)
            assert data, "connection closed"
            reader.receive_data(data)
            continue
        frames.append(frame)
        if frame[0] == b"Z":
            return frames


def test_fast_path_function_call_passes_without_policy(start_proxy):
    proxy = start_proxy()
    with psycopg.connect(proxy.dsn()) as conn:
        oid = conn.execute("select 'int4pl'::regproc::oid").fetchone()[0]
    sock, reader = _raw_session(proxy)
    with sock:
        args = (struct.pack("!i", 2), struct.pack("!i", 40))
        sock.sendall(FunctionCall(oid, (1,), args, 1).encode())
        frames = _read_until_ready(sock, reader)
        assert frames[0][0] == b"V"
        assert frames[0][1][4:] == struct.pack("!i", 42)


def test_fast_path_function_call_refused_under_a_policy(start_proxy):
    proxy = start_proxy(policy=object())
    sock, reader = _raw_session(proxy)
    with sock:
        sock.sendall(FunctionCall(1, (), (), 0).encode())
        frames = _read_until_ready(sock, reader)
        assert [kind for kind, _ in frames] == [b"E", b"Z"]
        assert ErrorResponse.decode(frames[0][1]).sqlstate == "42501"


def test_pipelined_simple_queries_keep_their_order(proxy):
    sock, reader = _raw_session(proxy)
    with sock:
        sock.sendall(b"".join(Query(q).encode() for q in ("select 1", "local", "refuse", "select 4", "local")))
        answers = []
        for _ in range(5):
            frames = _read_until_ready(sock, reader)
            rows = [DataRow.decode(p).values for k, p in frames if k == b"D"]
            errors_ = [ErrorResponse.decode(p).sqlstate for k, p in frames if k == b"E"]
            answers.append((rows, errors_, ReadyForQuery.decode(frames[-1][1]).status))
        assert answers == [
            ([(b"1",)], [], b"I"),
            ([(b"on",)], [], b"I"),
            ([], ["42501"], b"I"),
            ([(b"4",)], [], b"I"),
            ([(b"on",)], [], b"I"),
        ]
