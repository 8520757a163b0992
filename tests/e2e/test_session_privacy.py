"""The session's privacy settings, the notices of private answers, and
private answers fetched a few rows at a time, driven by a fake planner.

The planner answers `SET pgshroud.<name> = <value>`, `RESET pgshroud.<name>`
and `SHOW pgshroud.<name>` (`SHOW pgshroud.all`: one row per setting) as
Local plans, as the real rewriter does, from the PlanContext.privacy it is
given; `release <sql>` charges the session's epsilon and adds 1000 to every
value of <sql>'s single column, with a notice that names the epsilon (the
session joins the cost notice to it, as to a real release's margins);
`broken <sql>` is a release whose finalize fails; anything else passes
through. Real clients and a real PostgreSQL check that
settings hold only once their statement succeeded, as PostgreSQL's own SET
does, that nothing PostgreSQL says while a private answer is computed
reaches the client, and that a portal's rows arrive exactly once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from dataclasses import dataclass, field

import asyncpg
import psycopg
import pytest
from psycopg import errors

from pgshroud.proxy.codec.messages import (
    Bind,
    CommandComplete,
    DataRow,
    ErrorResponse,
    Execute,
    FieldDescription,
    NoticeResponse,
    NotificationResponse,
    ParameterStatus,
    Parse,
    PortalSuspended,
    ReadyForQuery,
    RowDescription,
    Sync,
)
from pgshroud.proxy.session import responses as r
from pgshroud.rewriter import PlanContext
from pgshroud.rewriter.plans import (
    Column,
    Cost,
    Local,
    LocalAnswer,
    Passthrough,
    PrivacySetting,
    RawResult,
    Refuse,
    Release,
)
from tests.memory_ledger import MemoryLedger
from tests.rawclient import RawClient

DEFAULTS = {"epsilon": "1", "delta": "0"}
NOISY = """create function pg_temp.noisy(v int) returns int language plpgsql as $$
begin
    raise notice 'secret %', v;
    raise warning 'another secret %', v;
    return v;
end $$"""
FIVE = "select g from generate_series(1, 5) g"


def margins(epsilon: str) -> str:
    """The fake release's notice, worded as a real release's margins of error."""
    return f"95% margins of error: value ±0 (released at epsilon {epsilon})"


def released(epsilon: str) -> str:
    """The notice a client gets with the fake release's answer: the session's
    cost notice (the memory ledger says nothing of what is left) joined to the
    release's margins."""
    return f"privacy cost: epsilon {epsilon}, delta 0; {margins(epsilon)}"


@dataclass(frozen=True)
class PlusThousand:
    """A release whose 'noise' is +1000, with a notice naming its epsilon."""

    epsilon: str
    columns: tuple[Column, ...] = (Column("value", 20),)

    @property
    def cost(self) -> Cost:
        return Cost(float(self.epsilon))

    def finalize(self, raw: RawResult) -> LocalAnswer:
        rows = tuple((None if v is None else str(int(v) + 1000),) for (v,) in raw.rows)
        return LocalAnswer(f"SELECT {len(rows)}", self.columns, rows, notices=(margins(self.epsilon),))


TENTH = Cost(0.1)


@dataclass(frozen=True)
class Broken:
    """A release whose finalize fails, quoting a value as Python's errors do."""

    cost: Cost = TENTH
    columns: tuple[Column, ...] = (Column("value", 20),)

    def finalize(self, raw: RawResult) -> LocalAnswer:
        return int(f"secret {raw.rows[0][0]}")


@dataclass
class FakePlanner:
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def __call__(self, sql: str, context: PlanContext):
        self.seen.append((sql, dict(context.privacy)))
        plans = [self._statement(s.strip(), context) for s in sql.split(";") if s.strip()]
        if len(plans) == 1 and isinstance(plans[0], Passthrough):
            return (Passthrough(sql),)
        return plans

    def _statement(self, statement: str, context: PlanContext):
        words = statement.split()
        lowered = [w.lower() for w in words]
        if len(lowered) > 1 and lowered[1].startswith("pgshroud."):
            name = lowered[1].removeprefix("pgshroud.")
            if lowered[0] == "set":
                return Local(LocalAnswer("SET"), PrivacySetting(name, words[-1].strip("'")))
            if lowered[0] == "reset":
                return Local(LocalAnswer("RESET"), PrivacySetting(name, None))
            if lowered[0] == "show" and name == "all":
                rows = tuple((n, context.privacy.get(n, d)) for n, d in DEFAULTS.items())
                return Local(LocalAnswer("SHOW", (Column("name"), Column("setting")), rows))
            if lowered[0] == "show":
                return Local(LocalAnswer("SHOW", (Column(f"pgshroud.{name}"),), ((context.privacy.get(name, DEFAULTS[name]),),)))
        if lowered[:1] == ["release"]:
            return Release(statement.partition(" ")[2], PlusThousand(context.privacy.get("epsilon", DEFAULTS["epsilon"])))
        if lowered[:1] == ["broken"]:
            return Release(statement.partition(" ")[2], Broken())
        if lowered[:1] == ["refuse"]:
            return Refuse("42501", "refused by the test planner")
        return Passthrough(statement)

    def privacy_of(self, marker: str) -> dict[str, str]:
        """The settings the last plan of a text containing `marker` saw."""
        return next(privacy for sql, privacy in reversed(self.seen) if marker in sql)


@pytest.fixture
def planner() -> FakePlanner:
    return FakePlanner()


@pytest.fixture
def ledger() -> MemoryLedger:
    """No limit, and no standings to report (so notices say the cost alone); 5 ms a charge."""
    return MemoryLedger(latency=0.005)


@pytest.fixture
def proxy(start_proxy, planner, ledger):
    return start_proxy(planner, ledger=ledger)


@pytest.fixture
def conn(proxy):
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        yield conn


def simple(conn: psycopg.Connection) -> psycopg.ClientCursor:
    return psycopg.ClientCursor(conn)


def show(cursor_or_conn, name: str = "epsilon") -> str:
    return cursor_or_conn.execute(f"show pgshroud.{name}").fetchone()[0]


def notices_of(conn: psycopg.Connection) -> list[str]:
    seen: list[str] = []
    conn.add_notice_handler(lambda diag: seen.append(diag.message_primary))
    return seen


# Settings: SET, SHOW, RESET


def test_set_show_reset_round_trip_simple_and_extended(conn, planner, ledger):
    for cursor in (simple(conn), conn):
        assert show(cursor) == "1"
        assert cursor.execute("set pgshroud.epsilon = 0.5").statusmessage == "SET"
        assert show(cursor) == "0.5"
        assert planner.privacy_of("show pgshroud.epsilon") == {"epsilon": "0.5"}
        cursor.execute("set pgshroud.delta to '1e-6'")
        assert cursor.execute("show pgshroud.all").fetchall() == [("epsilon", "0.5"), ("delta", "1e-6")]
        assert cursor.execute("release select 7").fetchone() == (1007,)
        assert ledger.costs[-1] == Cost(0.5)
        assert cursor.execute("reset pgshroud.epsilon").statusmessage == "RESET"
        assert planner.privacy_of("show pgshroud.all") == {"epsilon": "0.5", "delta": "1e-6"}
        assert cursor.execute("show pgshroud.all").fetchall() == [("epsilon", "1"), ("delta", "1e-6")]
        cursor.execute("reset pgshroud.delta")
        assert show(cursor, "delta") == "0"
        assert planner.privacy_of("show pgshroud.delta") == {}


def test_settings_belong_to_their_session(proxy, conn):
    conn.execute("set pgshroud.epsilon = 0.5")
    with psycopg.connect(proxy.dsn(), autocommit=True) as other:
        assert show(other) == "1"
    assert show(conn) == "0.5"


def test_set_inside_an_aborted_transaction_does_not_apply(proxy, planner):
    with psycopg.connect(proxy.dsn()) as conn:
        with pytest.raises(errors.DivisionByZero):
            conn.execute("select 1/0")
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute("set pgshroud.epsilon = 0.5")
        with pytest.raises(errors.InFailedSqlTransaction):
            simple(conn).execute("set pgshroud.epsilon = 0.25")
        conn.rollback()
        assert show(conn) == "1"
        assert planner.privacy_of("show pgshroud.epsilon") == {}


def test_set_is_undone_with_its_transaction_as_postgres_does(proxy):
    with psycopg.connect(proxy.dsn()) as conn:
        conn.execute("set pgshroud.epsilon = 0.5")
        assert show(conn) == "0.5"  # within the transaction
        conn.rollback()
        assert show(conn) == "1"
        conn.execute("set pgshroud.epsilon = 0.5")
        conn.commit()
        assert show(conn) == "0.5"
        conn.commit()
        # A failed transaction ends in a rollback, even when told to commit.
        conn.execute("set pgshroud.epsilon = 0.25")
        with pytest.raises(errors.DivisionByZero):
            conn.execute("select 1/0")
        conn.commit()
        assert show(conn) == "0.5"
        conn.commit()
        # Within one transaction, later changes pile up and go together.
        cur = simple(conn)
        cur.execute("begin; set pgshroud.epsilon = 0.1; set pgshroud.delta = 0.001")
        cur.execute("rollback")
        assert cur.execute("show pgshroud.all").fetchall() == [("epsilon", "0.5"), ("delta", "0")]


def test_set_and_a_failing_statement_in_one_query_are_undone_together(conn):
    # One Query is one implicit transaction: PostgreSQL undoes its SETs on error.
    with pytest.raises(errors.DivisionByZero):
        simple(conn).execute("set pgshroud.epsilon = 0.5; select 1/0")
    assert show(conn) == "1"
    with pytest.raises(errors.InsufficientPrivilege):
        simple(conn).execute("set pgshroud.epsilon = 0.5; refuse")
    assert show(conn) == "1"
    with pytest.raises(errors.DivisionByZero), conn.pipeline():
        conn.execute("set pgshroud.epsilon = 0.5")
        conn.execute("select 1/0")
    assert show(conn) == "1"


def test_statements_after_a_set_in_the_same_query_are_planned_with_it(conn, ledger):
    seen = notices_of(conn)
    cur = simple(conn).execute("set pgshroud.epsilon = 0.25; show pgshroud.epsilon; release select 1")
    assert all_results(cur) == [[], [("0.25",)], [(1001,)]]
    assert seen == [released("0.25")]
    assert ledger.costs == [Cost(0.25)]


def test_statements_after_a_set_in_the_same_pipeline_are_planned_with_it(conn, ledger):
    seen = notices_of(conn)
    with conn.pipeline():
        conn.execute("set pgshroud.epsilon = 0.25")
        shown = conn.execute("show pgshroud.epsilon")
        release = conn.execute("release select 1")
        conn.execute("reset pgshroud.epsilon")
        after = conn.execute("show pgshroud.epsilon")
    assert (shown.fetchone(), release.fetchone(), after.fetchone()) == (("0.25",), (1001,), ("1",))
    assert seen == [released("0.25")]
    assert ledger.costs == [Cost(0.25)]


def test_reset_all_and_discard_all_clear_the_settings(conn, planner):
    for statement, cursor in (("reset all", simple(conn)), ("reset all", conn), ("discard all", simple(conn)),
                              ("DISCARD ALL;", conn), ("  Reset\n All ", simple(conn))):
        conn.execute("set pgshroud.epsilon = 0.5")
        conn.execute("set work_mem = '7MB'")
        cursor.execute(statement)
        assert show(conn) == "1", statement
        assert planner.privacy_of("show pgshroud.epsilon") == {}
        # and PostgreSQL did reset its own settings
        assert conn.execute("show work_mem").fetchone()[0] != "7MB"


def test_reset_all_in_a_rolled_back_transaction_is_undone(proxy):
    with psycopg.connect(proxy.dsn()) as conn:
        conn.execute("set pgshroud.epsilon = 0.5")
        conn.commit()
        conn.execute("reset all")
        assert show(conn) == "1"
        conn.rollback()
        assert show(conn) == "0.5"


def test_prepared_statements_follow_setting_changes(conn, ledger):
    seen = notices_of(conn)
    for _ in range(2):
        assert conn.execute("release select 2", prepare=True).fetchone() == (1002,)
        assert conn.execute("show pgshroud.epsilon", prepare=True).fetchone() == ("1",)
    conn.execute("set pgshroud.epsilon = 0.5")
    assert conn.execute("release select 2", prepare=True).fetchone() == (1002,)
    assert conn.execute("show pgshroud.epsilon", prepare=True).fetchone() == ("0.5",)
    assert seen == [released("1")] * 2 + [released("0.5")]
    assert ledger.costs == [Cost(1.0), Cost(1.0), Cost(0.5)]


def test_asyncpg_settings_and_its_statement_cache(proxy, ledger):
    async def run():
        conn = await asyncpg.connect(**asyncpg_args(proxy))
        seen: list[str] = []
        conn.add_log_listener(lambda _conn, message: seen.append(message.message))
        try:
            assert await conn.fetchval("release select 3") == 1003
            assert await conn.fetchval("show pgshroud.epsilon") == "1"
            await conn.execute("set pgshroud.epsilon = 0.5")
            assert await conn.fetchval("show pgshroud.epsilon") == "0.5"
            assert await conn.fetchval("release select 3") == 1003  # the cached statement, planned again
            await conn.execute("reset all")
            assert await conn.fetchval("show pgshroud.epsilon") == "1"
        finally:
            await conn.close()
        return seen

    seen = asyncio.run(asyncio.wait_for(run(), 60))
    assert seen == [released("1"), released("0.5")]
    assert ledger.costs == [Cost(1.0), Cost(0.5)]


def test_psql_set_show_and_release_notice(proxy, ledger):
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("psql is not on PATH; install postgresql-client", pytrace=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD="app", PGSSLMODE="disable", LC_ALL="C.UTF-8")
    script = "set pgshroud.epsilon = 0.5;\nshow pgshroud.epsilon;\nrelease select 4;\nreset pgshroud.epsilon;\n" \
             "show pgshroud.epsilon;\n"
    proc = subprocess.run([psql, "-X", "-A", "-t", "-h", proxy.host, "-p", str(proxy.port), "-U", "app", "-d", "app",
                           "-f", "-"], input=script, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["SET", "0.5", "1004", "RESET", "1"]
    assert proc.stderr == f"psql:<stdin>:3: NOTICE:  {released('0.5')}\n"
    assert ledger.costs == [Cost(0.5)]


# Notices


def test_upstream_notices_during_a_release_are_dropped_simple_and_extended(conn):
    seen = notices_of(conn)
    conn.execute(NOISY)
    for cursor in (simple(conn), conn):
        seen.clear()
        assert cursor.execute("release select pg_temp.noisy(42)").fetchone() == (1042,)
        assert seen == [released("1")]
        seen.clear()
        # Outside a release PostgreSQL's notices pass as ever.
        assert cursor.execute("select pg_temp.noisy(7)").fetchone() == (7,)
        assert seen == ["secret 7", "another secret 7"]


def test_notices_of_statements_around_a_release_still_pass(conn):
    seen = notices_of(conn)
    conn.execute(NOISY)
    cur = simple(conn).execute("select pg_temp.noisy(1); release select pg_temp.noisy(2); select pg_temp.noisy(3)")
    assert all_results(cur) == [[(1,)], [(1002,)], [(3,)]]
    assert seen == ["secret 1", "another secret 1", released("1"), "secret 3", "another secret 3"]


def test_asyncpg_gets_the_release_notice_and_not_upstreams(proxy):
    async def run():
        conn = await asyncpg.connect(**asyncpg_args(proxy))
        seen: list[tuple[str, str]] = []
        conn.add_log_listener(lambda _conn, message: seen.append((message.sqlstate, message.message)))
        try:
            await conn.execute(NOISY)
            value = await conn.fetchval("release select pg_temp.noisy(9)")
        finally:
            await conn.close()
        return value, seen

    value, seen = asyncio.run(asyncio.wait_for(run(), 60))
    assert value == 1009
    assert seen == [("00000", released("1"))]


def test_notices_come_before_the_rows_on_the_wire(proxy):
    with raw_session(proxy) as client:
        messages = client.query("release select 5")
        assert [type(m).__name__ for m in messages] == [
            "NoticeResponse", "RowDescription", "DataRow", "CommandComplete", "ReadyForQuery"]
        notice = messages[0]
        assert (notice.field("S"), notice.field("V"), notice.sqlstate, notice.message) == (
            "NOTICE", "NOTICE", "00000", released("1"))
        client.send(b"".join(m.encode() for m in (
            Parse("", "release select 5", ()), Bind("", "", (), (), ()), Execute("", 0), Sync())))
        assert [type(m).__name__ for m in client.read_until_ready()] == [
            "ParseComplete", "BindComplete", "NoticeResponse", "DataRow", "CommandComplete", "ReadyForQuery"]


def test_transform_drops_only_notices():
    def finalize(raw: RawResult) -> LocalAnswer:
        return LocalAnswer("SELECT 1", (Column("n", 20),), ((str(len(raw.rows)),),), notices=("ours",))

    transform = r.Transform(finalize, (Column("n", 20),), (0,), describe=True, on_error=lambda f: f)
    statements = r.Statements([None, transform])
    upstream_notice = NoticeResponse.build("NOTICE", "00000", "secret").encode()
    status = ParameterStatus("application_name", "x").encode()
    notification = NotificationResponse(1, "chan", "hi").encode()
    first = [upstream_notice, CommandComplete("SELECT 1").encode()]  # the statement before the release
    during = [upstream_notice, status, DataRow((b"1",)).encode(), notification, upstream_notice,
              DataRow((b"2",)).encode(), CommandComplete("SELECT 2").encode()]
    out = b""
    for f in first + during:
        try:
            out += statements.frame(f[0], f)
        except r.NeedsWorker as deferred:  # as the session does: built on a worker, then the frame again
            deferred.transform.prepare()
            out += statements.frame(f[0], f)
    expected = (
        first[0] + first[1] + status + notification
        + NoticeResponse.build("NOTICE", "00000", "ours").encode()
        + RowDescription((FieldDescription("n", 0, 0, 20, -1, -1, 0),)).encode()
        + DataRow((b"2",)).encode() + CommandComplete("SELECT 1").encode()
    )
    assert out == expected


def test_a_release_that_fails_to_finalize_ends_the_connection(proxy, caplog):
    for execute in (lambda c: simple(c).execute("select 1; broken select 424242"),
                    lambda c: c.execute("broken select 424242")):
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            with pytest.raises(psycopg.Error) as raised:
                execute(conn)
            assert (raised.value.sqlstate, raised.value.diag.severity) == ("XX000", "FATAL")
            assert "424242" not in str(raised.value)
            assert conn.closed or conn.broken
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    assert "424242" not in caplog.text


# Executes with a row limit


def test_execute_with_row_limits_serves_the_release_once_in_pieces(proxy, ledger):
    with raw_session(proxy) as client:
        client.query("begin")
        client.send(encode(Parse("s", f"release {FIVE}", ()), Bind("p", "s", (), (), ()), Execute("p", 2), Sync()))
        assert summary(client.read_until_ready()) == [
            "ParseComplete", "BindComplete", "N:" + released("1"), "D:1001", "D:1002", "PortalSuspended", "Z:T"]
        client.send(encode(Execute("p", 2), Sync()))
        assert summary(client.read_until_ready()) == ["D:1003", "D:1004", "PortalSuspended", "Z:T"]
        client.send(encode(Execute("p", 2), Execute("p", 2), Execute("p", 0), Sync()))
        assert summary(client.read_until_ready()) == [
            "D:1005", "C:SELECT 1", "C:SELECT 0", "C:SELECT 0", "Z:T"]
        client.query("commit")
    assert ledger.costs == [Cost(1.0)]


def test_row_limits_behave_as_postgres_for_the_same_rows(proxy):
    """The same Execute sequence on a release and on the query that computes
    its answer directly gives the same messages, notices aside."""
    def run(sql: str) -> list[str]:
        with raw_session(proxy) as client:
            client.query("begin")
            messages = []
            client.send(encode(Parse("", sql, ()), Bind("p", "", (), (), ()), Execute("p", 3), Sync()))
            messages += client.read_until_ready()
            client.send(encode(Execute("p", 2), Execute("p", 1), Sync()))
            messages += client.read_until_ready()
            client.send(encode(Bind("q", "", (), (), ()), Execute("q", 5), Execute("q", 5), Execute("q", 5), Sync()))
            messages += client.read_until_ready()
            client.send(encode(Bind("", "", (), (), ()), Execute("", 0), Execute("", 0), Sync()))
            messages += client.read_until_ready()
            return [m for m in summary(messages) if not m.startswith("N:")]

    private = run(f"release {FIVE}")
    direct = run("select g + 1000 from generate_series(1, 5) g")
    assert private == direct
    assert private.count("PortalSuspended") == 3


def test_pipelined_executes_of_two_portals_stay_in_order(proxy, ledger):
    with raw_session(proxy) as client:
        client.query("begin")
        client.send(encode(
            Parse("rel", f"release {FIVE}", ()), Parse("raw", "select g from generate_series(1, 3) g", ()),
            Bind("p", "rel", (), (), ()), Bind("q", "raw", (), (), ()),
            Execute("p", 2), Execute("q", 1), Execute("p", 2), Execute("q", 0), Execute("p", 0), Sync(),
            Execute("p", 1), Sync(),
        ))
        first = summary(client.read_until_ready())
        second = summary(client.read_until_ready())
        assert first == [
            "ParseComplete", "ParseComplete", "BindComplete", "BindComplete",
            "N:" + released("1"), "D:1001", "D:1002", "PortalSuspended",
            "D:1", "PortalSuspended",
            "D:1003", "D:1004", "PortalSuspended",
            "D:2", "D:3", "C:SELECT 2",
            "D:1005", "C:SELECT 1",
            "Z:T",
        ]
        assert second == ["C:SELECT 0", "Z:T"]
        client.query("rollback")
    assert ledger.costs == [Cost(1.0)]


def test_local_answer_with_a_row_limit(proxy):
    with raw_session(proxy) as client:
        client.query("begin")
        client.send(encode(Parse("", "show pgshroud.all", ()), Bind("p", "", (), (), ()), Execute("p", 1), Sync()))
        assert summary(client.read_until_ready()) == ["ParseComplete", "BindComplete", "D:epsilon|1", "PortalSuspended",
                                                      "Z:T"]
        client.send(encode(Execute("p", 1), Execute("p", 1), Sync()))
        assert summary(client.read_until_ready()) == ["D:delta|0", "PortalSuspended", "C:SHOW", "Z:T"]
        client.query("commit")


def test_a_portal_gone_upstream_is_an_error_as_in_postgres(proxy, ledger):
    with raw_session(proxy) as client:
        client.query("begin")
        client.send(encode(Parse("s", f"release {FIVE}", ()), Bind("p", "s", (), (), ()), Execute("p", 2), Sync()))
        client.read_until_ready()
        client.query("commit")  # the portal ends with its transaction
        client.send(encode(Execute("p", 2), Sync()))
        messages = client.read_until_ready()
        assert summary(messages) == ["E:34000", "Z:I"]
        # A new Bind of the same name is a new portal: a new release.
        client.send(encode(Bind("p", "s", (), (), ()), Execute("p", 0), Sync()))
        assert summary(client.read_until_ready())[2:] == [
            "D:1001", "D:1002", "D:1003", "D:1004", "D:1005", "C:SELECT 5", "Z:I"]
    assert len(ledger.charges) == 2


def test_a_failed_transaction_refuses_later_fetches(proxy, ledger):
    with raw_session(proxy) as client:
        client.query("begin")
        client.send(encode(Parse("s", f"release {FIVE}", ()), Bind("p", "s", (), (), ()), Execute("p", 2), Sync()))
        client.read_until_ready()
        assert summary(client.query("select 1/0")) == ["E:22012", "Z:E"]
        client.send(encode(Execute("p", 2), Sync()))
        assert summary(client.read_until_ready()) == ["E:25P02", "Z:E"]
        client.query("rollback")
    assert ledger.costs == [Cost(1.0)]


def test_asyncpg_cursor_fetches_a_release_in_pieces(proxy, ledger):
    async def run():
        conn = await asyncpg.connect(**asyncpg_args(proxy))
        try:
            async with conn.transaction():
                cursor = await conn.cursor(f"release {FIVE}")
                pieces = [await cursor.fetch(2) for _ in range(4)]
            async with conn.transaction():
                iterated = [record[0] async for record in conn.cursor(f"release {FIVE}", prefetch=2)]
        finally:
            await conn.close()
        return [[record[0] for record in piece] for piece in pieces], iterated

    pieces, iterated = asyncio.run(asyncio.wait_for(run(), 60))
    assert pieces == [[1001, 1002], [1003, 1004], [1005], []]
    assert iterated == [1001, 1002, 1003, 1004, 1005]
    assert ledger.costs == [Cost(1.0), Cost(1.0)]


JDBC_FETCH = """
import java.sql.*;

public class FetchCheck {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/app?sslmode=disable&prepareThreshold=1";
        try (Connection conn = DriverManager.getConnection(url, "app", "app")) {
            conn.setAutoCommit(false);  // fetchSize needs a transaction to keep the portal in
            for (String epsilon : new String[] {null, "0.5"}) {
                if (epsilon != null) {
                    try (Statement set = conn.createStatement()) { set.execute("set pgshroud.epsilon = " + epsilon); }
                }
                try (PreparedStatement ps = conn.prepareStatement("release select g from generate_series(1, 5) g")) {
                    ps.setFetchSize(2);
                    StringBuilder line = new StringBuilder("rows");
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) line.append(' ').append(rs.getLong(1));
                    }
                    System.out.println(line);
                    for (SQLWarning w = ps.getWarnings(); w != null; w = w.getNextWarning()) {
                        System.out.println("notice " + w.getMessage());
                    }
                }
                conn.commit();
            }
        }
    }
}
"""


@pytest.mark.clients
def test_jdbc_fetch_size_and_its_server_prepared_statement(proxy, ledger, tmp_path):
    """pgjdbc fetches 2 rows per Execute in a transaction, and reuses its
    server-side prepared statement after the SET."""
    javac, java = shutil.which("javac"), shutil.which("java")
    jar = os.environ.get("PGSHROUD_JDBC_JAR", "/usr/share/java/postgresql.jar")
    if javac is None or java is None or not os.path.isfile(jar):
        pytest.fail("pgjdbc needs javac, java and the driver jar: "
                    "apt-get install -y openjdk-17-jdk-headless libpostgresql-jdbc-java", pytrace=False)
    (tmp_path / "FetchCheck.java").write_text(JDBC_FETCH)
    subprocess.run([javac, "-d", str(tmp_path), "-cp", jar, str(tmp_path / "FetchCheck.java")], check=True,
                   capture_output=True, timeout=180)
    proc = subprocess.run([java, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", f"{jar}{os.pathsep}{tmp_path}",
                           "FetchCheck", proxy.host, str(proxy.port)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "rows 1001 1002 1003 1004 1005", "notice " + released("1"),
        "rows 1001 1002 1003 1004 1005", "notice " + released("0.5"),
    ]
    assert ledger.costs == [Cost(1.0), Cost(0.5)]


def test_executing_a_release_portal_again_does_not_run_it_again(proxy, ledger):
    with raw_session(proxy) as client:
        client.send(encode(Parse("", "release select 1", ()), Bind("", "", (), (), ()), Execute("", 0), Execute("", 0),
                           Sync()))
        assert summary(client.read_until_ready()) == [
            "ParseComplete", "BindComplete", "N:" + released("1"), "D:1001", "C:SELECT 1", "C:SELECT 0", "Z:I"]
    assert ledger.costs == [Cost(1.0)]


# helpers


def all_results(cursor: psycopg.Cursor) -> list[list[tuple]]:
    results = []
    while True:
        results.append(cursor.fetchall() if cursor.description else [])
        if not cursor.nextset():
            return results


def asyncpg_args(proxy) -> dict:
    return {"host": proxy.host, "port": proxy.port, "user": "app", "password": "app", "database": "app", "ssl": False}


def raw_session(proxy) -> RawClient:
    client = RawClient.connect(proxy.host, proxy.port)
    client.startup("u_trust", "app")
    return client


def encode(*messages) -> bytes:
    return b"".join(m.encode() for m in messages)


def summary(messages) -> list[str]:
    out = []
    for m in messages:
        if isinstance(m, DataRow):
            out.append("D:" + "|".join("NULL" if v is None else v.decode() for v in m.values))
        elif isinstance(m, CommandComplete):
            out.append(f"C:{m.tag}")
        elif isinstance(m, NoticeResponse):
            out.append(f"N:{m.message}")
        elif isinstance(m, ErrorResponse):
            out.append(f"E:{m.sqlstate}")
        elif isinstance(m, ReadyForQuery):
            out.append(f"Z:{m.status.decode()}")
        elif isinstance(m, PortalSuspended):
            out.append("PortalSuspended")
        else:
            out.append(type(m).__name__)
    return out
