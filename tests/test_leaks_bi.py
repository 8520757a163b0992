"""Attacks on the BI and ORM shapes the aggregate role may now send: outer
queries over a private aggregate, constants and parameters computed upstream,
cursors, zero-row probes, set_config, the answer cache.

Each test reproduces one finding through a real client against real
PostgreSQL, and states what pgshroud should do instead.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.test_private_clients import analyst_dsn, charges, private_proxy  # noqa: F401 (fixture)

SMALLINT_MAX = 32767
INTEGER_MAX = 2147483647

# Outer queries whose arithmetic leaves the type PostgreSQL gives the column:
# PostgreSQL raises 22003 (out of range) for each of them, whatever the count.
OUT_OF_TYPE = [
    ("SELECT (c * 0 + 40000)::smallint AS x FROM (SELECT count(*) AS c FROM visits) AS t", SMALLINT_MAX),
    ("SELECT c * 0 + 2147483647 + 1 AS x FROM (SELECT count(*)::int AS c FROM visits) AS t", INTEGER_MAX),
    ("SELECT (c * 0 + 2147483647)::int + 1 AS x FROM (SELECT count(*) AS c FROM visits) AS t", INTEGER_MAX),
]


def _connect(proxy) -> psycopg.Connection:
    conn = psycopg.connect(analyst_dsn(proxy), autocommit=True)
    conn.execute("SET pgshroud.epsilon = 0.01")
    return conn


@pytest.mark.parametrize("sql,limit", OUT_OF_TYPE)
def test_outer_arithmetic_never_releases_a_value_outside_its_column_type(private_proxy, sql, limit):
    """Text format: pgshroud answers 40000 in a column it describes as
    smallint (2147483648 as integer), where PostgreSQL raises 22003. A client
    that trusts RowDescription (pgjdbc getShort, Npgsql) fails on it; the
    statement should be refused before the charge or fail as PostgreSQL
    fails, never answer a value its type cannot hold."""
    with _connect(private_proxy) as conn:
        try:
            rows = conn.execute(sql).fetchall()
        except psycopg.Error as error:
            assert error.sqlstate in ("22003", "42501"), error
            return
        assert all(abs(value) <= limit for (value,) in rows if value is not None), rows


@pytest.mark.parametrize("sql,limit", OUT_OF_TYPE)
def test_outer_arithmetic_in_binary_does_not_close_the_connection(private_proxy, raw_health, sql, limit):
    """Binary format: the same statements end the connection with XX000
    ("failed while building an answer") after the release is charged; psycopg,
    asyncpg and pgjdbc ask for binary results of integers."""
    before = charges(raw_health)
    with _connect(private_proxy) as conn:
        try:
            conn.cursor(binary=True).execute(sql).fetchall()
        except psycopg.Error as error:
            assert error.sqlstate != "XX000", f"charged {charges(raw_health) - before}, then: {error}"
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_cast_of_a_noisy_count_to_smallint_does_not_close_the_connection(private_proxy):
    """The plain spelling: count(*)::smallint over a table with more rows than
    smallint holds after noise. PostgreSQL would raise 22003 on the exact count;
    pgshroud types it smallint and, in binary, fails while building the answer."""
    with _connect(private_proxy) as conn:
        for _ in range(5):
            try:
                conn.cursor(binary=True).execute(
                    "SELECT c::smallint AS x FROM (SELECT count(*) + 40000 AS c FROM visits) AS t").fetchall()
            except psycopg.Error as error:
                assert error.sqlstate != "XX000", error
            assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("sql,written", [
    ("SELECT generate_series(1, c) FROM (SELECT count(*) AS c FROM visits) AS t", "generate_series"),
    ("SELECT c ^ 2 FROM (SELECT count(*) AS c FROM visits) AS t", "^"),
])
def test_refusals_of_outer_functions_name_them_as_written(private_proxy, sql, written):
    """The refusal says "EXPLODINGGENERATESERIES cannot be applied ..." (a
    parser class name) for generate_series and "POW" for the ^ operator."""
    with _connect(private_proxy) as conn:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(sql)
    message = caught.value.diag.message_primary or ""
    assert "EXPLODING" not in message.upper(), message
    assert written in message.lower(), message


def test_integer_arithmetic_postgresql_refuses_is_not_answered(private_proxy, raw_health):
    """(current_date - birth_date) * 100000 overflows integer for everyone born
    more than 58 years ago: PostgreSQL raises 22003 for the statement, while
    pgshroud computes it in numeric and answers (and charges). PostgreSQL's
    reading of a statement is the truth: a statement it cannot run should be
    refused before the charge, not answered with another meaning."""
    sql = "SELECT count(*) FROM patients WHERE (current_date - birth_date) * 100000 > 0"
    with psycopg.connect(raw_health) as direct:
        with pytest.raises(psycopg.errors.NumericValueOutOfRange):
            direct.execute(sql)
    before = charges(raw_health)
    with _connect(private_proxy) as conn:
        with pytest.raises(psycopg.Error):
            conn.execute(sql).fetchall()
    assert charges(raw_health) == before
