"""The session's protocol edge cases as scripted byte exchanges, in memory.

A Conversation is fed what a client and PostgreSQL would send and returns
what pgshroud would do (tests/session_script.py plays the driver). The
planner is the real one, over the small policy and catalog of
tests/rewriter_fixtures.py: clinician is masked, analyst gets private
aggregates, admin sees raw data.
"""

from __future__ import annotations

from pgshroud import sqlstate
from pgshroud.proxy.codec.messages import (
    Bind,
    BindComplete,
    CommandComplete,
    DataRow,
    Describe,
    ErrorResponse,
    Execute,
    FieldDescription,
    Flush,
    FunctionCall,
    NoticeResponse,
    NotificationResponse,
    ParameterStatus,
    Parse,
    ParseComplete,
    Query,
    ReadyForQuery,
    RowDescription,
    Sync,
    Terminate,
)
from pgshroud.proxy.session.conversation import SENTINEL_SQL
from pgshroud.proxy.session.effects import CancelUpstream, Charge, PlanOffLoop, SendClient, SendUpstream, Side
from pgshroud.proxy.session.release import WITHHELD_ERROR
from pgshroud.rewriter.names import upstream_name
from tests.memory_ledger import MemoryLedger, capped
from tests.session_script import DownLedger, Script, backend, frontend

IDLE = ReadyForQuery(b"I")
ONE_COLUMN = RowDescription((FieldDescription("?column?", 0, 0, 23, 4, -1, 0),))
PRIVATE_COUNT = "SELECT count(*) FROM patients"


def _answer_of_one(value: bytes = b"1") -> bytes:
    return b"".join(m.encode() for m in (ONE_COLUMN, DataRow((value,)), CommandComplete("SELECT 1")))


def _errors(messages: list[object]) -> list[ErrorResponse]:
    return [m for m in messages if isinstance(m, ErrorResponse)]


# simple Query


def test_a_query_that_passes_goes_upstream_and_back_byte_for_byte():
    script = Script("clinician")
    sent = Query("SELECT 1").encode()
    script.client(sent)
    assert script.upstream_sent() == sent
    answer = _answer_of_one() + IDLE.encode()
    script.upstream(answer)
    assert script.client_got() == answer
    assert script.effects == [SendUpstream(sent), SendClient(answer)]


def test_frames_split_anywhere_pass_the_same():
    whole = Script("admin")
    pipelined = Query("SELECT 1").encode() + Query("SELECT 2").encode()
    whole.client(pipelined)
    bytewise = Script("admin")
    for i in range(len(pipelined)):
        bytewise.client(pipelined[i : i + 1])
    assert bytewise.upstream_sent() == whole.upstream_sent() == pipelined
    answer = (_answer_of_one() + IDLE.encode()) * 2
    for i in range(len(answer)):
        bytewise.upstream(answer[i : i + 1])
    assert bytewise.client_got() == answer


def test_a_refusal_inside_a_query_ends_it_as_an_error_would():
    script = Script("clinician")
    script.client(Query("SELECT 1; SELECT x FROM unlisted; SELECT 2"))
    (query,) = frontend(script.upstream_sent())
    assert isinstance(query, Query)
    # The statements before the refusal run; the sentinel fails in its place; nothing after it is sent.
    assert query.sql == f"SELECT 1;\n{SENTINEL_SQL}"
    upstream_error = ErrorResponse.build("ERROR", "22P02", "invalid input syntax for type integer")
    script.upstream(_answer_of_one(), upstream_error, ReadyForQuery(b"E"))
    got = backend(script.client_got())
    assert got[:3] == backend(_answer_of_one())
    (refusal,) = _errors(got)
    assert refusal.sqlstate == sqlstate.INSUFFICIENT_PRIVILEGE
    assert "22P02" not in str(refusal.fields)
    assert got[-1] == ReadyForQuery(b"E")
    # The session stays usable.
    script.client(Query("SELECT 3"))
    assert script.upstream_sent() == Query("SELECT 3").encode()


# extended protocol


def test_a_refusal_at_parse_skips_everything_until_sync():
    script = Script("clinician")
    script.client(Parse("", "SELECT x FROM unlisted", ()), Bind("", "", (), (), ()), Describe(b"P", ""),
                  Execute("", 0), Sync())
    sent = frontend(script.upstream_sent())
    # Only the sentinel's Parse and the Sync reach PostgreSQL: nothing of the refused statement runs.
    assert sent == [Parse("", SENTINEL_SQL, ()), Sync()]
    script.upstream(ErrorResponse.build("ERROR", "42883", "the sentinel failed"), IDLE)
    got = backend(script.client_got())
    assert [type(m) for m in got] == [ErrorResponse, ReadyForQuery]
    assert got[0].sqlstate == sqlstate.INSUFFICIENT_PRIVILEGE
    # After the Sync the next statement runs again.
    script.client(Parse("", "SELECT 1", ()), Sync())
    assert frontend(script.upstream_sent()) == [Parse("", "SELECT 1", ()), Sync()]


def test_statement_and_portal_names_go_upstream_translated():
    script = Script("clinician")
    script.client(Parse("mine", "SELECT 1", ()), Bind("cur", "mine", (), (), ()), Describe(b"P", "cur"),
                  Execute("cur", 0), Sync())
    parse, bind, describe, execute, sync = frontend(script.upstream_sent())
    assert parse == Parse(upstream_name("mine"), "SELECT 1", ())
    assert (bind.portal, bind.statement) == (upstream_name("cur"), upstream_name("mine"))
    assert describe == Describe(b"P", upstream_name("cur"))
    assert execute == Execute(upstream_name("cur"), 0)
    assert upstream_name("mine") != "mine" and sync == Sync()


def test_a_raw_session_sends_names_as_the_client_gave_them():
    script = Script("admin")
    sent = b"".join(m.encode() for m in (Parse("mine", "SELECT 1", ()), Bind("cur", "mine", (), (), ()),
                                         Execute("cur", 0), Sync()))
    script.client(sent)
    assert script.upstream_sent() == sent


def test_an_upstream_error_quoting_a_translated_name_shows_the_clients_name():
    script = Script("clinician")
    script.client(Bind("", "missing", (), (), ()), Sync())
    script.upstream_sent()
    translated = upstream_name("missing")
    script.upstream(ErrorResponse.build("ERROR", "26000", f'prepared statement "{translated}" does not exist'), IDLE)
    (error, ready) = backend(script.client_got())
    assert error.message == 'prepared statement "missing" does not exist'
    assert ready == IDLE


# private answers


def _run_check(script: Script) -> None:
    """PostgreSQL accepts the statement pgshroud built (its Parse, Describe and Sync)."""
    parse, describe, sync = frontend(script.upstream_sent())
    assert isinstance(parse, Parse) and describe == Describe(b"S", "") and sync == Sync()
    script.upstream(ParseComplete(), RowDescription(()), IDLE)


def test_a_private_answer_is_charged_before_it_is_sent():
    ledger = MemoryLedger(capped(1.0))
    script = Script("analyst", ledger=ledger)
    script.client(Query(PRIVATE_COUNT))
    assert (Side.CLIENT, "charging") in script.paused
    _run_check(script)
    (query,) = frontend(script.upstream_sent())
    assert isinstance(query, Query) and "pgshroud_rows" in query.sql
    charge = next(i for i, e in enumerate(script.effects) if isinstance(e, Charge))
    sent = next(i for i, e in enumerate(script.effects) if isinstance(e, SendUpstream) and e.data == query.encode())
    assert charge < sent
    assert [user for user, _ in ledger.charges] == ["analyst"]
    assert not script.paused
    script.upstream(RowDescription(()), DataRow((b"0", None, b"40", b"40")), CommandComplete("SELECT 1"), IDLE)
    got = backend(script.client_got())
    assert [type(m) for m in got] == [NoticeResponse, RowDescription, DataRow, CommandComplete, ReadyForQuery]
    assert got[1].fields[0].name == "count"


def test_a_refused_charge_sends_nothing_of_the_private_query():
    script = Script("analyst", ledger=MemoryLedger(capped(0.01)))
    script.client(Query(PRIVATE_COUNT))
    _run_check(script)
    (query,) = frontend(script.upstream_sent())
    assert query == Query(SENTINEL_SQL)
    script.upstream(ErrorResponse.build("ERROR", "42883", "the sentinel failed"), IDLE)
    error, ready = backend(script.client_got())
    assert error.sqlstate == "53400" and ready == IDLE


def test_a_ledger_that_fails_releases_nothing():
    script = Script("analyst", ledger=DownLedger())
    script.client(Query(PRIVATE_COUNT))
    _run_check(script)
    assert frontend(script.upstream_sent()) == [Query(SENTINEL_SQL)]
    script.upstream(ErrorResponse.build("ERROR", "42883", "the sentinel failed"), IDLE)
    error, _ = backend(script.client_got())
    assert error.sqlstate == sqlstate.SYSTEM_ERROR


def test_without_a_ledger_nothing_is_released():
    script = Script("analyst")
    script.client(Query(PRIVATE_COUNT))
    _run_check(script)
    assert frontend(script.upstream_sent()) == [Query(SENTINEL_SQL)]


def test_an_upstream_error_inside_a_private_answer_is_withheld():
    script = Script("analyst", ledger=MemoryLedger(capped(1.0)))
    script.client(Query(PRIVATE_COUNT))
    _run_check(script)
    script.upstream_sent()
    script.upstream(ErrorResponse.build("ERROR", "22012", "division by zero in a row of alice"), ReadyForQuery(b"I"))
    assert script.client_got() == WITHHELD_ERROR + IDLE.encode()


def test_a_prepared_private_statement_lives_upstream_under_a_name_of_its_own_and_is_charged_at_execute():
    ledger = MemoryLedger(capped(1.0))
    script = Script("analyst", ledger=ledger)
    script.client(Parse("counted", PRIVATE_COUNT, ()), Bind("", "counted", (), (), ()), Execute("", 0), Sync())
    parse, bind, flush = frontend(script.upstream_sent())
    assert parse.name == "pgshroud_r1" and "pgshroud_rows" in parse.sql
    assert bind.statement == "pgshroud_r1" and bind.portal.startswith("pgshroud_q")
    # Whether the Bind succeeded is known before the charge: a Flush asks PostgreSQL now.
    assert flush == Flush() and not ledger.charges
    script.upstream(ParseComplete(), BindComplete())
    execute, flush, sync = frontend(script.upstream_sent())
    assert execute == Execute(bind.portal, 0) and sync == Sync()
    assert len(ledger.charges) == 1
    script.upstream(DataRow((b"0", None, b"40", b"40")), CommandComplete("SELECT 1"), IDLE)
    got = backend(script.client_got())
    assert [type(m) for m in got] == [ParseComplete, BindComplete, NoticeResponse, DataRow, CommandComplete,
                                      ReadyForQuery]


def test_a_private_execute_whose_bind_failed_is_not_charged():
    ledger = MemoryLedger(capped(1.0))
    script = Script("analyst", ledger=ledger)
    script.client(Parse("counted", PRIVATE_COUNT, ()), Bind("", "counted", (), (), ()), Execute("", 0), Sync())
    script.upstream_sent()
    script.upstream(ParseComplete(), ErrorResponse.build("ERROR", "22P02", "invalid input syntax"))
    assert frontend(script.upstream_sent()) == [Sync()]
    assert not ledger.charges
    script.upstream(IDLE)
    assert [type(m) for m in backend(script.client_got())] == [ParseComplete, ErrorResponse, ReadyForQuery]



def test_a_private_query_after_a_failed_batch_is_neither_checked_nor_charged():
    """A Query pipelined after extended messages without Sync: the batch is open until Sync, so the private
    Query waits for PostgreSQL's answers before the charge; the batch failed, PostgreSQL ignores the Query, and
    pgshroud sends nothing for it (no check with a Sync of its own) and charges nothing."""
    ledger = MemoryLedger(capped(1.0))
    script = Script("analyst", ledger=ledger)
    script.client(Parse("", "SELECT 1", ()), Bind("", "", (), (), ()), Execute("", 0), Flush(),
                  Query("SELECT 1"), Query(PRIVATE_COUNT))
    assert (Side.CLIENT, "charging") in script.paused
    sent = frontend(script.upstream_sent())
    assert [type(m) for m in sent] == [Parse, Bind, Execute, Flush, Query, Flush]
    script.upstream(ParseComplete(), ErrorResponse.build("ERROR", "22P02", "invalid input syntax"))
    assert frontend(script.upstream_sent()) == []
    assert not ledger.charges and not script.paused
    script.client(Sync())
    assert frontend(script.upstream_sent()) == [Sync()]
    script.upstream(IDLE)
    assert [type(m) for m in backend(script.client_got())] == [ParseComplete, ErrorResponse, ReadyForQuery]


def test_a_portal_ends_with_its_transaction():
    """PostgreSQL drops a Bind's portal when the transaction ends: an Execute of it later is PostgreSQL's to
    refuse, and is not charged."""
    ledger = MemoryLedger(capped(1.0))
    script = Script("analyst", ledger=ledger)
    script.client(Parse("counted", PRIVATE_COUNT, ()), Bind("kept", "counted", (), (), ()), Sync())
    script.upstream_sent()
    script.upstream(ParseComplete(), BindComplete(), IDLE)
    script.client_got()
    script.client(Execute("kept", 0), Sync())
    assert not ledger.charges
    assert [type(m) for m in frontend(script.upstream_sent())] == [Execute, Sync]


# the end of a session


def test_a_malformed_frame_closes_the_session_with_a_protocol_violation():
    script = Script("clinician")
    script.client(b"Q\x00\x00\x00\x02")  # a length shorter than the length word
    (error,) = backend(script.client_got())
    assert error.sqlstate == sqlstate.PROTOCOL_VIOLATION
    assert script.closed == {Side.CLIENT, Side.UPSTREAM}
    assert script.upstream_sent() == Terminate().encode()
    script.client(Query("SELECT 1"))
    assert script.upstream_sent() == b""


def test_an_unknown_message_type_closes_the_session():
    script = Script("clinician")
    script.client(b"Z\x00\x00\x00\x04")
    (error,) = backend(script.client_got())
    assert error.sqlstate == sqlstate.PROTOCOL_VIOLATION and "'Z'" in (error.message or "")
    assert script.closed == {Side.CLIENT, Side.UPSTREAM}


def test_terminate_goes_upstream_and_ends_both_connections():
    script = Script("clinician")
    script.client(Terminate(), Query("SELECT 1"))
    assert script.upstream_sent() == Terminate().encode()
    assert script.closed == {Side.CLIENT, Side.UPSTREAM}


def test_draining_closes_an_idle_session_at_once_and_a_busy_one_when_it_is_done():
    idle = Script("clinician")
    idle.drain()
    (error,) = backend(idle.client_got())
    assert error.sqlstate == sqlstate.ADMIN_SHUTDOWN
    busy = Script("clinician")
    busy.client(Query("SELECT 1"))
    busy.drain()
    assert busy.closed == set()
    busy.upstream(_answer_of_one(), IDLE)
    got = backend(busy.client_got())
    assert got[-1].sqlstate == sqlstate.ADMIN_SHUTDOWN and busy.closed == {Side.CLIENT, Side.UPSTREAM}


def test_a_long_statement_is_planned_off_the_loop_and_then_sent_as_a_short_one_is():
    script = Script("clinician")
    long_sql = "SELECT 1 AS " + "x" * 40 + ", " + ", ".join(f"{i} AS c{i}" for i in range(200))
    script.client(Query(long_sql), Query("SELECT 2"))
    assert any(isinstance(e, PlanOffLoop) for e in script.effects)
    # The client's input waited for the plan, so the two Queries went upstream in order.
    assert script.upstream_sent() == Query(long_sql).encode() + Query("SELECT 2").encode()
    assert not script.paused


def test_a_refused_function_call_is_answered_in_its_turn():
    script = Script("clinician")
    script.client(FunctionCall(1, (), (), 0))
    assert frontend(script.upstream_sent()) == [Query(SENTINEL_SQL)]
    script.upstream(ErrorResponse.build("ERROR", "42883", "the sentinel failed"), IDLE)
    error, ready = backend(script.client_got())
    assert error.sqlstate == sqlstate.INSUFFICIENT_PRIVILEGE and ready == IDLE


def test_a_private_answer_split_anywhere_is_the_same_answer():
    def answer(split: bool) -> list[type]:
        script = Script("analyst", ledger=MemoryLedger(capped(1.0)))
        script.client(Query(PRIVATE_COUNT))
        _run_check(script)
        script.upstream_sent()
        rows = b"".join(m.encode() for m in (RowDescription(()), DataRow((b"0", None, b"40", b"40")),
                                             CommandComplete("SELECT 1"), IDLE))
        for chunk in ([rows[i : i + 1] for i in range(len(rows))] if split else [rows]):
            script.upstream(chunk)
        return [type(m) for m in backend(script.client_got())]

    assert answer(split=True) == answer(split=False) == [NoticeResponse, RowDescription, DataRow, CommandComplete,
                                                         ReadyForQuery]


def test_a_session_whose_settings_become_unsafe_is_closed():
    script = Script("clinician")
    script.client(Query("SELECT 1"))
    script.upstream(ParameterStatus("standard_conforming_strings", "off"))
    (error,) = backend(script.client_got())
    assert error.sqlstate == sqlstate.INSUFFICIENT_PRIVILEGE and "standard_conforming_strings" in error.message
    assert script.closed == {Side.CLIENT, Side.UPSTREAM}


def test_notifications_never_reach_a_rewritten_session():
    script = Script("clinician")
    script.client(Query("SELECT 1"))
    script.upstream(NotificationResponse(1, "channel", "a value"), _answer_of_one(), IDLE)
    assert backend(script.client_got()) == [*backend(_answer_of_one()), IDLE]


def test_a_client_that_goes_away_mid_statement_gets_its_statement_cancelled():
    busy = Script("clinician")
    busy.client(Query("SELECT 1"))
    busy.client_lost()
    assert CancelUpstream() in busy.effects and busy.closed == {Side.UPSTREAM}
    idle = Script("clinician")
    idle.client_lost()
    assert CancelUpstream() not in idle.effects
    assert idle.upstream_sent() == Terminate().encode() and idle.closed == {Side.UPSTREAM}
