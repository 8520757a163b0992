"""Bound values of private statements are converted once, at Bind, to the
type the query gives them: never row by row, where a failure would tell
whether some row reached the cast.

A client may declare a parameter's type (psycopg declares text for str,
pgjdbc's setString declares varchar). Sent upstream with that type,
`$2::date` would be a cast of a text value evaluated for each row, failing
only where a row reaches it: an error oracle at any epsilon. pgshroud
prepares private statements with their parameters untyped, so PostgreSQL
converts each value at Bind, and refuses a binary value declared as a type
other than the one PostgreSQL reads it as.
"""

from __future__ import annotations

import datetime
import decimal
import uuid

import psycopg
import pytest
from psycopg.types.string import StrDumper

from pgshroud.proxy.codec.binary_text import text_form
from tests.e2e.test_private_clients import analyst_dsn, charges, private_proxy  # noqa: F401 (fixture)

ORACLE = ("SELECT count(*) FROM visits WHERE CASE WHEN patient_id = %s THEN visit_date >= %s::date END")


def outcome(conn: psycopg.Connection, patient: int, value: str) -> str:
    try:
        conn.execute(ORACLE, (patient, value)).fetchall()
        return "answered"
    except psycopg.Error as exc:
        return exc.sqlstate or "?"


def test_a_value_declared_text_fails_at_bind_whoever_is_in_the_data(private_proxy, raw_health):  # noqa: F811
    with psycopg.connect(raw_health) as conn:
        present = conn.execute("SELECT patient_id FROM visits LIMIT 1").fetchone()[0]
        absent = conn.execute("SELECT max(patient_id) + 1000 FROM patients").fetchone()[0]
    before = charges(raw_health)
    with psycopg.connect(analyst_dsn(private_proxy), autocommit=True) as conn:
        conn.adapters.register_dumper(str, StrDumper)  # declares str values as text
        seen = {outcome(conn, patient, "garbage") for patient in (present, absent)}
        assert seen == {"22007"}, seen  # invalid date, at Bind, for both
        assert outcome(conn, present, "2020-01-01") == "answered"
    assert charges(raw_health) == before + 1


def test_binary_values_of_another_type_are_sent_as_text_or_refused_before_the_charge(
        private_proxy, raw_health):  # noqa: F811
    before = charges(raw_health)
    with psycopg.connect(analyst_dsn(private_proxy), autocommit=True) as conn:
        # psycopg sends these in binary as int2, float8 and date; the query reads numeric and date.
        for value in (100, 100.5):
            assert conn.execute("SELECT count(*) FROM visits WHERE cost > %b", (value,)).fetchone()[0] >= 0
        day = datetime.date(2020, 1, 1)
        assert conn.execute("SELECT count(*) FROM visits WHERE visit_date >= %b", (day,)).fetchone()[0] >= 0
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SELECT count(*) FROM visits WHERE department = %b", (uuid.uuid4(),)).fetchall()
        assert caught.value.sqlstate == "42804"
        assert "text format" in caught.value.diag.message_hint
    assert charges(raw_health) == before + 3


def test_binary_text_forms_are_postgresqls(raw_health):
    """Each decoded binary value reads back in PostgreSQL as the value sent."""
    values = {"int2": -7, "int4": 2**31 - 1, "int8": -(2**63), "float8": 0.1, "float4": 0.1, "bool": True,
              "numeric": decimal.Decimal("-12345678901234567890.000123"), "date": datetime.date(1999, 12, 31),
              "timestamp": datetime.datetime(2024, 2, 29, 23, 59, 59, 999999),
              "timestamptz": datetime.datetime(2024, 2, 29, 1, 2, 3, tzinfo=datetime.UTC),
              "text": "naïve"}
    with psycopg.connect(raw_health, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for name, value in values.items():
            binary = conn.execute(f"SELECT %s::{name}", (value,), binary=True)
            raw = binary.pgresult.get_value(0, 0)
            oid = binary.description[0].type_code
            text = text_form(oid, raw).decode()
            same = conn.execute(f"SELECT %s::{name} = %s::{name}", (text, value)).fetchone()[0]
            assert same, (name, text)


def test_a_subquery_offset_other_than_zero_is_refused_at_bind(private_proxy, raw_health):  # noqa: F811
    """Prisma aggregates over (SELECT ... OFFSET $1) AS "sub", binding 0; any
    other value would skip rows chosen by other people's rows."""
    sql = 'SELECT count(*) AS "_count._all" FROM (SELECT "public"."visits"."visit_id" FROM "public"."visits" ' \
          'WHERE 1=1 OFFSET %s) AS "sub"'
    before = charges(raw_health)
    with psycopg.connect(analyst_dsn(private_proxy), autocommit=True) as conn:
        assert conn.execute(sql, (0,)).fetchone()[0] >= 0
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(sql, (5,)).fetchall()
        assert caught.value.sqlstate == "42501" and "must be 0" in str(caught.value)
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SELECT count(*) FROM visits LIMIT %s", (-1,)).fetchall()
        assert caught.value.sqlstate == "2201W"
    assert charges(raw_health) == before + 1
