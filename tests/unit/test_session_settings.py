"""The session's own state, in scripted exchanges: privacy settings and their
undo, SHOW pgshroud.budget from the ledger, and answers repeated from the
answer cache (tests/session_script.py plays the driver, in memory)."""

from __future__ import annotations

import pytest

from pgshroud import sqlstate
from pgshroud.proxy.codec.messages import (
    CommandComplete,
    DataRow,
    ErrorResponse,
    NoticeResponse,
    ParseComplete,
    Query,
    ReadyForQuery,
    RowDescription,
)
from pgshroud.proxy.session.effects import Charge, ClaimAnswer, ReadStanding, WaitCancelled
from pgshroud.proxy.session.registry import PLACEHOLDER_SQL
from tests.memory_ledger import MemoryLedger, capped
from tests.session_script import Script, backend, frontend

IDLE, IN_TRANSACTION = ReadyForQuery(b"I"), ReadyForQuery(b"T")
PRIVATE_COUNT = "SELECT count(*) FROM patients"


def _passes(script: Script, sql: str, tag: str, status: ReadyForQuery) -> None:
    script.client(Query(sql))
    assert script.upstream_sent() == Query(sql).encode()
    script.upstream(CommandComplete(tag), status)
    script.client_got()


def _local(script: Script, sql: str, status: ReadyForQuery = IDLE) -> list[object]:
    """A statement pgshroud answers itself, in the turn of a placeholder PostgreSQL runs."""
    script.client(Query(sql))
    assert frontend(script.upstream_sent()) == [Query(PLACEHOLDER_SQL)]
    script.upstream(RowDescription(()), CommandComplete("SELECT 0"), status)
    return backend(script.client_got())


def _epsilon(script: Script, status: ReadyForQuery = IDLE) -> bytes | None:
    rows = [m for m in _local(script, "SHOW pgshroud.epsilon", status) if isinstance(m, DataRow)]
    return rows[0].values[0]


@pytest.mark.parametrize(("end", "kept"), [("COMMIT", b"0.5"), ("ROLLBACK", b"0.1")])
def test_a_setting_changed_in_a_transaction_holds_as_it_ends(end, kept):
    script = Script("analyst")
    _passes(script, "BEGIN", "BEGIN", IN_TRANSACTION)
    got = _local(script, "SET pgshroud.epsilon = 0.5", IN_TRANSACTION)
    assert got == [CommandComplete("SET"), IN_TRANSACTION]
    assert _epsilon(script, IN_TRANSACTION) == b"0.5"
    _passes(script, end, end, IDLE)
    assert _epsilon(script) == kept


def test_a_setting_whose_statement_failed_does_not_hold():
    script = Script("analyst")
    script.client(Query("SET pgshroud.epsilon = 0.5"))
    script.upstream_sent()
    script.upstream(ErrorResponse.build("ERROR", "25P02", "current transaction is aborted"), ReadyForQuery(b"E"))
    assert _epsilon(script) == b"0.1"


def test_show_budget_reads_the_ledger():
    script = Script("analyst", ledger=MemoryLedger(capped(1.0)))
    got = _local(script, "SHOW pgshroud.budget")
    assert any(isinstance(e, ReadStanding) for e in script.effects)
    (row,) = [m for m in got if isinstance(m, DataRow)]
    assert row.values[0].startswith(b"1 epsilon left now")


def test_show_budget_without_a_ledger_is_refused_with_the_reason():
    script = Script("analyst")
    script.client(Query("SHOW pgshroud.budget"))
    script.upstream_sent()
    script.upstream(ErrorResponse.build("ERROR", "42883", "the sentinel failed"), IDLE)
    error, _ = backend(script.client_got())
    assert error.sqlstate == sqlstate.OBJECT_NOT_IN_PREREQUISITE_STATE and "ledger" in error.message


def _release(script: Script) -> list[object]:
    script.client(Query(PRIVATE_COUNT))
    script.upstream_sent()
    script.upstream(ParseComplete(), RowDescription(()), IDLE)  # PostgreSQL accepts the statement pgshroud built
    script.upstream_sent()
    script.upstream(DataRow((b"0", None, b"40", b"40")), CommandComplete("SELECT 1"), IDLE)
    return backend(script.client_got())


def test_a_repeated_private_answer_comes_from_the_cache_at_no_cost():
    ledger = MemoryLedger(capped(1.0))
    script = Script("analyst", ledger=ledger, cache_seconds=60)
    first = _release(script)
    (answer,) = [m for m in first if isinstance(m, DataRow)]
    again = _local(script, PRIVATE_COUNT)
    assert [m for m in again if isinstance(m, DataRow)] == [answer]
    assert any(isinstance(m, NoticeResponse) for m in again)
    assert len(ledger.charges) == 1 and sum(isinstance(e, Charge) for e in script.effects) == 1


def test_a_cancel_request_ends_the_wait_for_another_sessions_release():
    def cancelled(claim: ClaimAnswer) -> None:
        raise WaitCancelled

    ledger = MemoryLedger(capped(1.0))
    script = Script("analyst", ledger=ledger, cache_seconds=60, claim=cancelled)
    script.client(Query(PRIVATE_COUNT))
    # Nothing of the private query goes upstream, nothing is charged.
    assert frontend(script.upstream_sent()) == [Query("SELECT 'pgshroud: statement refused'::pg_catalog.int4")]
    assert not ledger.charges
    script.upstream(ErrorResponse.build("ERROR", "22P02", "the sentinel failed"), IDLE)
    error, ready = backend(script.client_got())
    assert error.sqlstate == sqlstate.QUERY_CANCELED and ready == IDLE
