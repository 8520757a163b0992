"""Private answers read through cursors, checked before they are charged,
and the last answer's cost on demand.

- `DECLARE c CURSOR FOR <private query>` is charged once; FETCH, MOVE and
  CLOSE read the held answer forward (psql's FETCH_COUNT, psycopg's named
  cursors, the declare/fetch of psqlODBC and Tableau), as PostgreSQL would:
  a cursor without HOLD needs a transaction block and ends with it.
- A private statement of a simple Query is parsed and described by
  PostgreSQL before the charge: if PostgreSQL refuses the SQL pgshroud
  built, the client gets that error and nothing is charged.
- `SHOW pgshroud.last_answer` repeats the last answer's cost notice, for
  clients that drop notices.
"""

from __future__ import annotations

import asyncio
import subprocess

import asyncpg
import psycopg
import pytest

from tests.e2e.test_private_clients import analyst_dsn, analyst_url, charges, private_proxy  # noqa: F401 (fixture)
from tests.e2e.test_session_privacy import FakePlanner, MemoryLedger

GROUPED = "SELECT department, count(*) AS n FROM visits GROUP BY department ORDER BY department"
DEPARTMENTS = 16  # the policy's public domain of visits.department


@pytest.fixture
def analyst(private_proxy):  # noqa: F811
    with psycopg.connect(analyst_dsn(private_proxy)) as conn:
        yield conn


def refused(conn: psycopg.Connection, sql: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql)
    conn.rollback()
    return caught.value


def test_declare_fetch_move_close_read_one_release_forward(analyst, raw_health):
    before = charges(raw_health)
    analyst.execute(f"DECLARE c NO SCROLL CURSOR FOR {GROUPED}")
    first = analyst.execute("FETCH 5 FROM c")
    assert [d.name for d in first.description] == ["department", "n"]
    head = first.fetchall()
    assert len(head) == 5 and first.statusmessage == "FETCH 5"
    moved = analyst.execute("MOVE FORWARD 2 IN c")
    assert moved.statusmessage == "MOVE 2" and moved.description is None
    rest = analyst.execute("FETCH ALL FROM c").fetchall()
    assert len(head) + 2 + len(rest) == DEPARTMENTS
    assert analyst.execute("FETCH NEXT FROM c").fetchall() == []
    assert [r[0] for r in head] == sorted(r[0] for r in head)
    analyst.execute("CLOSE c")
    gone = refused(analyst, "FETCH 1 FROM c")
    # PostgreSQL's own error, with the name as the client wrote it (upstream it is translated).
    assert gone.sqlstate == "34000" and str(gone).startswith('cursor "c" does not exist')
    assert charges(raw_health) == before + 1


def test_a_cursor_without_hold_needs_a_transaction_and_ends_with_it(private_proxy, raw_health):  # noqa: F811
    before = charges(raw_health)
    with psycopg.connect(analyst_dsn(private_proxy), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(f"DECLARE c CURSOR FOR {GROUPED}")
        assert caught.value.sqlstate == "25P01"
        assert "WITH HOLD" in caught.value.diag.message_hint
        assert charges(raw_health) == before  # refused before the charge
        conn.execute("BEGIN")
        conn.execute(f"DECLARE c CURSOR FOR {GROUPED}")
        assert len(conn.execute("FETCH 3 FROM c").fetchall()) == 3
        conn.execute("COMMIT")
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("FETCH 3 FROM c")
        assert caught.value.sqlstate == "34000"
        # WITH HOLD outlives its transaction, as Tableau's and psqlODBC's cursors do.
        conn.execute(f'DECLARE "SQL_CUR0x1" CURSOR WITH HOLD FOR {GROUPED}; FETCH 10 IN "SQL_CUR0x1"')
        assert len(conn.execute('FETCH 10000 IN "SQL_CUR0x1"').fetchall()) == DEPARTMENTS - 10
        conn.execute('CLOSE "SQL_CUR0x1"')
    assert charges(raw_health) == before + 2


def test_held_cursors_are_read_forward_only_and_in_text(analyst):
    analyst.execute(f"DECLARE c SCROLL CURSOR FOR {GROUPED}")
    error = refused(analyst, "FETCH BACKWARD 1 FROM c")
    assert error.sqlstate == "0A000" and "forward only" in str(error)
    error = refused(analyst, f"DECLARE b BINARY CURSOR FOR {GROUPED}")
    assert error.sqlstate == "0A000" and "without BINARY" in error.diag.message_hint


def test_a_cursor_over_a_zero_row_probe_is_postgresqls_own_and_free(analyst, raw_health):
    before = charges(raw_health)
    analyst.execute("DECLARE probe CURSOR FOR SELECT * FROM visits LIMIT 0")
    fetched = analyst.execute("FETCH 100 FROM probe")
    assert fetched.fetchall() == [] and "visit_id" in [d.name for d in fetched.description]
    assert charges(raw_health) == before


def test_psql_fetch_count_reads_a_private_answer_through_its_cursor(private_proxy, raw_health):  # noqa: F811
    before = charges(raw_health)
    out = subprocess.run(
        ["psql", "-X", "-A", "-F", "|", "-v", "FETCH_COUNT=3", analyst_dsn(private_proxy), "-c", GROUPED],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "department|n"
    assert len([line for line in lines[1:] if "|" in line]) == DEPARTMENTS
    assert lines[-1] == f"({DEPARTMENTS} rows)"
    assert charges(raw_health) == before + 1


@pytest.mark.parametrize("withhold", [False, True])
def test_psycopg_named_cursors_read_a_private_answer(private_proxy, raw_health, withhold):  # noqa: F811
    before = charges(raw_health)
    with psycopg.connect(analyst_dsn(private_proxy)) as conn:
        with conn.cursor(name="departments", withhold=withhold) as cursor:
            cursor.execute(GROUPED)
            assert [d.name for d in cursor.description] == ["department", "n"]
            rows = cursor.fetchmany(4) + cursor.fetchall()
        conn.commit()
    assert len(rows) == DEPARTMENTS
    assert all(isinstance(n, int) and n >= 0 for _, n in rows)
    assert charges(raw_health) == before + 1


def test_show_last_answer_repeats_what_the_last_release_cost(analyst):
    fresh = analyst.execute("SHOW pgshroud.last_answer").fetchone()[0]
    assert fresh.startswith("no private answer")
    analyst.execute("SELECT count(*) FROM visits").fetchall()
    last = analyst.execute("SHOW pgshroud.last_answer").fetchone()[0]
    assert last.startswith("privacy cost: epsilon ") and "95% margins of error" in last
    assert refused(analyst, "SET pgshroud.last_answer = 'x'").sqlstate == "55P02"


# ------------------------------------------------- checked before the charge


@pytest.fixture
def checked(start_proxy):
    ledger = MemoryLedger()
    proxy = start_proxy(FakePlanner(), ledger=ledger)
    with psycopg.connect(proxy.dsn()) as conn:
        yield conn, ledger


def test_sql_postgresql_refuses_to_parse_is_relayed_and_not_charged(checked):
    conn, ledger = checked
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("release SELECT no_such_column FROM generate_series(1, 3) g")
    assert caught.value.sqlstate == "42703"
    assert "PostgreSQL refused the query pgshroud built" in str(caught.value)
    assert "Nothing was charged" in caught.value.diag.message_hint
    assert ledger.charges == []
    conn.rollback()
    # Inside a transaction block it fails the transaction, as the error would have.
    conn.execute("SELECT 1")
    with pytest.raises(psycopg.Error):
        conn.execute("release SELECT no_such_column FROM generate_series(1, 3) g")
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT 1")
    assert caught.value.sqlstate == "25P02"
    conn.rollback()
    assert conn.execute("release SELECT g FROM generate_series(1, 3) g").fetchall() == [(1001,), (1002,), (1003,)]
    assert len(ledger.charges) == 1


def test_binary_dates_under_another_datestyle_are_refused_before_the_charge(private_proxy, raw_health):  # noqa: F811
    """asyncpg reads results in binary, which pgshroud encodes from
    PostgreSQL's ISO text: under another DateStyle the Bind is refused, uncharged."""

    async def run() -> tuple[str, int]:
        conn = await asyncpg.connect(analyst_url(private_proxy))
        try:
            await conn.execute("SET DateStyle = 'German'")
            with pytest.raises(asyncpg.PostgresError) as caught:
                await conn.fetch("SELECT current_date AS today, count(*) FROM visits")
            await conn.execute("SET DateStyle = 'ISO, MDY'")
            rows = await conn.fetch("SELECT current_date AS today, count(*) FROM visits")
            return caught.value.sqlstate, len(rows)
        finally:
            await conn.close()

    before = charges(raw_health)
    sqlstate, rows = asyncio.run(run())
    assert sqlstate == "0A000" and rows == 1
    assert charges(raw_health) == before + 1
