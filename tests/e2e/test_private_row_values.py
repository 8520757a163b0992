"""Row values BI tools and ORMs write in private queries (issue 10): bound
parameters, now() and its kin with interval arithmetic, and the functions
dashboards group and filter by (extract, date_part, age, make_date, to_char,
casts of extract and of numerics).

Each is allowed exactly where PostgreSQL's types and the arguments' ranges
show it cannot fail on any row; what can fail stays refused with what to
write instead, whoever the query selects.

Bound parameters: a parameter's value is the analyst's, the same for every
row. Left untyped in Parse (psql, asyncpg, SQLAlchemy's text binds, JDBC
with stringtype=unspecified), PostgreSQL gives it the type its context
asks for (`$1::date` is a date parameter) and converts the value at Bind,
before the statement runs: a value that is not a date fails then, whether
or not any row exists. The tests below run the bounded SQL prepared with
untyped parameters over adversarial rows and over none, with adversarial
values, and expect the same outcome from both.

now(), current_date, current_timestamp, localtimestamp,
statement_timestamp() and transaction_timestamp() are one value per
statement, computed by PostgreSQL in the session's time zone. They are
evaluated for each row, so what is computed from them must not fail either:
intervals written as literals and whole days move them only while the
result stays between 4700 BC and 294000 AD, which any clock and interval
short of 284,000 years satisfy.
"""

from __future__ import annotations

import datetime
import re
from decimal import Decimal

import psycopg
import pytest

from pgshroud.rewriter import plan
from pgshroud.rewriter.plans import Refuse, Release
from tests.e2e.test_leaks_private_errors import REFUSED, analyst, outcome, patients  # noqa: F401  (fixtures)
from tests.e2e.test_private_expressions_fuzz import FIELDS, check_steps, fuzz, run_everywhere  # noqa: F401  (a fixture)


def planned(fuzz, sql: str) -> Release | Refuse:  # noqa: F811
    (result,) = plan(sql, fuzz.context)
    assert isinstance(result, (Release, Refuse)), result
    return result


# -- bound parameters, through the planner, over adversarial rows ------------

DATES = ["2024-01-01", "infinity", "-infinity", "4713-11-24 BC", "5874897-12-31", "294276-12-31", "garbage", ""]
TIMESTAMPS = ["2024-01-01 10:00", "infinity", "4713-11-24 00:00 BC", "294276-12-31 23:59:59.999999", "garbage"]
NUMBERS = ["0", "NaN", "Infinity", "-Infinity", "1e131071", "1e-16383", "99999999.99", "garbage"]
TEXTS = ["Psychiatry", "", "\\", "%", "garbage"]
PATTERNS = ["%card%", "Psych%", "abc\\", "\\\\", "a\\%", "%a" * 17, "%a" * 16, "%" * 40, "", "_"]
UNITS = ["month", "MONTH", "week", "quarter", "microseconds", "century", "millennium", "garbage", ""]
INTERVALS = ["1095 days", "-30 day", "1 year 2 months", "5999 years", "6001 years", "300000 years",
             "-178000000 years", "garbage"]

PARAMETERS = [
    ("SELECT count(*) FROM visits v WHERE v.visit_date >= $1::date", DATES),
    ("SELECT count(*) FROM visits v WHERE v.visit_date >= $1", DATES),
    ("SELECT count(*) FROM visits v WHERE v.visit_date >= $1::timestamp", TIMESTAMPS),
    ("SELECT count(*) FROM visits v WHERE v.visit_date BETWEEN $1::date AND $2::date", DATES),
    ("SELECT count(*) FROM labs l WHERE l.taken_at >= $1::timestamptz", TIMESTAMPS),
    ("SELECT count(*) FROM readings r WHERE r.seen < $1::timestamp", TIMESTAMPS),
    ("SELECT count(*) FROM readings r WHERE r.day >= $1::date", DATES),
    ("SELECT count(*) FROM visits v WHERE v.department = $1", TEXTS),
    ("SELECT count(*) FROM visits v WHERE v.department IN ($1, $2)", TEXTS),
    ("SELECT count(*) FROM visits v WHERE v.cost > $1::numeric", NUMBERS),
    ("SELECT count(*) FROM visits v WHERE v.cost > $1", NUMBERS),
    ("SELECT count(*) FROM readings r WHERE r.amount > $1", NUMBERS),
    ("SELECT count(*) FROM readings r WHERE r.ratio > $1::float8", NUMBERS),
    ("SELECT count(*) FROM readings r JOIN calendar c ON c.day = r.day WHERE c.figure < $1::numeric", NUMBERS),
    (("SELECT CASE WHEN v.cost > $1::numeric THEN 'high' ELSE 'low' END AS band, count(*) FROM visits v "
     "GROUP BY 1"), NUMBERS),
    ("SELECT count(*) FILTER (WHERE v.visit_date >= $1::date) FROM visits v", DATES),
    # Django with server-side binding, SQLAlchemy's func.date_trunc: the unit is bound
    ("SELECT date_trunc($1, v.visit_date) AS m, count(*) FROM visits v GROUP BY 1", UNITS),
    ("SELECT date_trunc($1::varchar, r.seen) AS m, count(*) FROM readings r GROUP BY 1", UNITS),
    # Django's icontains, SQLAlchemy's contains: a LIKE pattern bound as a parameter
    ("SELECT count(*) FROM visits v WHERE upper(v.department::text) LIKE upper($1)", PATTERNS),
    ("SELECT count(*) FROM visits v WHERE v.department LIKE '%' || $1 || '%'", PATTERNS),
    ("SELECT count(*) FROM readings r WHERE r.label ILIKE $1", PATTERNS),
    ("SELECT count(*) FROM readings r WHERE r.flag NOT LIKE $1::varchar", PATTERNS),
    # SQLAlchemy's timedelta: an interval bound as a parameter
    ("SELECT count(*) FROM visits v WHERE v.visit_date >= now() - $1::interval", INTERVALS),
    ("SELECT count(*) FROM readings r WHERE r.seen < localtimestamp + $1::interval", INTERVALS),
]


def _outcome(conn: psycopg.Connection, sql: str, values: list[str]) -> str:
    """'answer', or the SQLSTATE, of the statement prepared with untyped
    parameters and executed with these values, in every time zone."""
    try:
        conn.execute(f"PREPARE pgshroud_values AS {sql}")
    except psycopg.Error as exc:
        return f"prepare {exc.sqlstate}"
    try:
        for zone in ("UTC", "<+99>-99", "<-99>+99"):
            conn.execute(f"SET TimeZone = '{zone}'")
            arguments = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
            conn.execute(f"EXECUTE pgshroud_values({arguments})").fetchall()
    except psycopg.Error as exc:
        return exc.sqlstate or "?"
    finally:
        conn.execute("DEALLOCATE pgshroud_values")
        conn.execute("RESET TimeZone")
    return "answer"


@pytest.mark.parametrize(("sql", "values"), PARAMETERS, ids=[sql for sql, _ in PARAMETERS])
def test_bound_parameters_fail_alike_with_rows_and_without(sql, values, fuzz):  # noqa: F811
    """Each value, bound to every parameter, gets the same outcome over the
    adversarial rows as over no rows: a value that fails, fails at Bind."""
    result = planned(fuzz, sql)
    assert isinstance(result, Release), result
    answered = 0
    for value in values:
        count = max(int(n) for n in re.findall(r"\$(\d+)", result.sql))
        with_rows = _outcome(fuzz.adversarial, result.sql, [value] * count)
        without = _outcome(fuzz.empty, result.sql, [value] * count)
        assert with_rows == without, (sql, value, with_rows, without)
        answered += with_rows == "answer"
    assert answered >= 1


@pytest.mark.parametrize(("sql", "reason"), [
    ("SELECT count(*) FROM visits v WHERE v.visit_date >= $1::date - 30", "compute other dates in the client"),
    ("SELECT count(*) FROM visits v WHERE v.visit_date + $1::integer > now()", "whole days"),
    ("SELECT count(*) FROM readings r WHERE CAST($1 AS numeric(3,0)) = r.small", "bind parameter"),
    ("SELECT count(*) FROM readings r WHERE r.amount * $1 > 0", "clamp it first"),
])
def test_parameters_that_could_fail_per_row_are_refused(sql, reason, fuzz):  # noqa: F811
    result = planned(fuzz, sql)
    assert isinstance(result, Refuse) and result.sqlstate == REFUSED, result
    assert reason in result.message, result.message


# -- values of the statement and functions, through the planner --------------

ALLOWED = [
    "SELECT count(*) FROM visits v WHERE v.visit_date >= now() - interval '12 months'",
    "SELECT count(*) FROM visits v WHERE v.visit_date > current_date - 30",
    "SELECT count(*) FROM visits v WHERE v.visit_date BETWEEN now() - interval '1 year' AND now()",
    "SELECT count(*) FROM visits v WHERE v.visit_date >= CAST((now() + INTERVAL '-30 day') AS date)",
    "SELECT count(*) FROM visits v WHERE v.visit_date >= date_trunc('month', now() - interval '1 month')",
    "SELECT count(*) FROM visits v WHERE v.visit_date > localtimestamp(0) - interval '1 year 2 months'",
    "SELECT count(*) FROM readings r WHERE r.seen >= statement_timestamp() - interval '1:30:00'",
    "SELECT count(*) FROM readings r WHERE r.day + 10 > transaction_timestamp()",
    "SELECT date_trunc('month', now()) AS m, count(*) FROM visits v GROUP BY 1",
    "SELECT extract(year FROM v.visit_date)::int AS y, count(*) FROM visits v GROUP BY 1",
    "SELECT date_part('month', r.seen)::smallint AS m, count(*) FROM readings r GROUP BY 1",
    "SELECT extract(quarter FROM r.day)::int AS q, count(*) FROM readings r GROUP BY 1",
    "SELECT extract(epoch FROM r.seen)::bigint / 86400 AS d, count(*) FROM readings r GROUP BY 1",
    "SELECT extract(year FROM age(p.birth_date))::int AS a, count(*) FROM patients p GROUP BY 1",
    "SELECT count(*) FROM patients p WHERE age(p.birth_date) >= interval '65 years'",
    "SELECT extract(year FROM age(r.seen, r.day)) AS a, count(*) FROM readings r GROUP BY 1",
    "SELECT to_char(v.visit_date, 'YYYY-MM') AS m, count(*) FROM visits v GROUP BY 1",
    "SELECT to_char(r.seen, 'FMMonth YYYY HH24:MI') AS m, count(*) FROM readings r GROUP BY 1",
    "SELECT make_date(extract(year FROM now())::int, 1, 1) AS y, count(*) FROM visits v GROUP BY 1",
    ("SELECT make_date(CAST(least(greatest(extract(year FROM r.day), 1), 9999) AS integer), "
    "CAST(extract(month FROM r.day) AS integer), 1) AS m, count(*) FROM readings r GROUP BY 1"),
    "SELECT avg(v.cost::float) FROM visits v",
    "SELECT avg(CAST(least(greatest(r.amount, -1e6), 1e6) AS double precision)) FROM readings r",
    "SELECT v.visit_date::text AS d, count(*) FROM visits v GROUP BY 1",
    "SELECT coalesce(to_char(r.day, 'YYYY'), 'none') AS y, count(*) FROM readings r GROUP BY 1",
    ("SELECT CASE WHEN r.day >= current_date - 365 THEN 'recent' ELSE 'old' END AS k, count(*) "
    "FROM readings r GROUP BY 1"),
    # Superset's time ranges, Looker's "past 12 months"
    "SELECT count(*) FROM visits v WHERE v.visit_date >= TO_DATE('2025-01-01', 'YYYY-MM-DD')",
    ("SELECT count(*) FROM labs l WHERE l.taken_at < TO_TIMESTAMP('2026-01-01 00:00:00.000000', "
    "'YYYY-MM-DD HH24:MI:SS.US')"),
    ("SELECT count(*) FROM visits v WHERE v.visit_date >= ((DATE_TRUNC('month', DATE_TRUNC('day', "
    "CURRENT_TIMESTAMP AT TIME ZONE 'UTC')) + (-11 || ' month')::INTERVAL)) AND v.visit_date < "
    "((DATE_TRUNC('month', DATE_TRUNC('day', CURRENT_TIMESTAMP AT TIME ZONE 'UTC')) + (-11 || ' month')::INTERVAL) "
    "+ (12 || ' month')::INTERVAL)"),
    "SELECT date_trunc('month', r.seen AT TIME ZONE 'UTC') AS m, count(*) FROM readings r GROUP BY 1",
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_row_values_bi_tools_write_run_on_adversarial_rows(sql, fuzz):  # noqa: F811
    result = planned(fuzz, sql)
    assert isinstance(result, Release), result
    run_everywhere(fuzz.adversarial, result.sql)


REFUSED_FORMS = [
    # extract returns Infinity for an infinite date, and ::int of it fails: public dates can be infinite
    (("SELECT extract(year FROM c.until)::int AS y, count(*) FROM readings r JOIN calendar c ON c.day = r.day "
     "GROUP BY 1"), "infinities"),
    # the epoch of a date 2,000 years away is beyond integer
    ("SELECT extract(epoch FROM v.visit_date)::int AS e, count(*) FROM visits v GROUP BY 1", "least(greatest("),
    # unconstrained numeric of a public table (read as stored) can overflow double precision
    ("SELECT count(*) FROM readings r JOIN calendar c ON c.day = r.day WHERE c.figure::float > 0",
     "clamp it first"),
    # dates moved beyond the range
    ("SELECT count(*) FROM visits v WHERE v.visit_date >= now() - interval '400000 years'", "4700 BC"),
    ("SELECT count(*) FROM visits v WHERE v.visit_date + 36500000 > '2000-01-01'", "4700 BC"),
    ("SELECT count(*) FROM readings r JOIN calendar c ON c.day = r.day WHERE c.until + 1 > now()", "4700 BC"),
    ("SELECT count(*) FROM visits v WHERE v.visit_date * 2 > now()", "cannot be multiplied"),
    # an interval the checker cannot size
    ("SELECT count(*) FROM visits v WHERE v.visit_date > now() - interval '1 fortnight'", "4700 BC"),
    # age() and to_char() of dates that may be infinite convert them to timestamps
    ("SELECT count(*) FROM readings r JOIN calendar c ON c.day = r.day WHERE age(c.until) > interval '1 year'",
     "age() fails"),
    (("SELECT to_char(c.until, 'YYYY') AS y, count(*) FROM readings r JOIN calendar c ON c.day = r.day "
     "GROUP BY 1"), "to_char() converts"),
    ("SELECT to_char(v.visit_date, 'YYYY TZ') AS y, count(*) FROM visits v GROUP BY 1", "literal format"),
    ("SELECT to_char(v.cost, '999.99') AS y, count(*) FROM visits v GROUP BY 1", "round numbers"),
    # make_date of values that may name no day
    ("SELECT make_date(v.length_of_stay, 1, 1) AS y, count(*) FROM visits v GROUP BY 1", "clamp its arguments"),
    ("SELECT make_date(2024, 2, v.length_of_stay) AS y, count(*) FROM visits v GROUP BY 1", "a day from 1 to 28"),
    ("SELECT make_date(2024, 1, v.cost) AS y, count(*) FROM visits v GROUP BY 1", "takes integers"),
    ("SELECT count(*) FROM visits v WHERE v.visit_date > current_time", "is not allowed over rows"),
    # literal dates that are not (February 30th), or in a layout not checked, fail for each row
    ("SELECT count(*) FROM visits v WHERE v.visit_date >= TO_DATE('2025-02-30', 'YYYY-MM-DD')", "DATE '2024-01-31'"),
    ("SELECT count(*) FROM visits v WHERE v.visit_date >= TO_DATE('2025-01-01', 'YYYY-DD-MM')", "in its format"),
    ("SELECT count(*) FROM visits v WHERE v.visit_date >= now() AT TIME ZONE 'Mars/Olympus'", "takes 'UTC'"),
    ("SELECT count(*) FROM readings r JOIN calendar c ON c.day = r.day WHERE c.stamp AT TIME ZONE 'UTC' > now()",
     "AT TIME ZONE fails"),
    ("SELECT count(*) FROM visits v WHERE v.visit_date >= now() + ('1000000000' || ' years')::interval",
     "as a literal"),
    ("SELECT date_trunc(v.department, v.visit_date) AS m, count(*) FROM visits v GROUP BY 1", "literal unit"),
]


@pytest.mark.parametrize(("sql", "reason"), REFUSED_FORMS)
def test_row_values_that_can_fail_are_refused_with_what_to_write(sql, reason, fuzz):  # noqa: F811
    result = planned(fuzz, sql)
    assert isinstance(result, Refuse) and result.sqlstate == REFUSED, result
    assert reason in result.message, result.message
    for internal in ("Anonymous", "ANONYMOUS", "TimeToStr", "TIMETOSTR", "CurrentTimestamp", "CURRENTTIMESTAMP"):
        assert internal not in result.message, result.message


# -- end to end, through pgshroud as the analyst ------------------------------

def _answer(dsn: str, sql: str, params: tuple = ()) -> tuple[list[tuple], list[int]]:
    """Rows and column types; through pgshroud at the largest epsilon the
    policy allows (95% of the count's noise within +-75)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if "analyst" in dsn:
            conn.execute("SET pgshroud.epsilon = 2")
        cursor = conn.execute(sql, params)
        return cursor.fetchall(), [column.type_code for column in cursor.description]


CLIENT_QUERIES = [
    # SQLAlchemy and psycopg bind dates, strings and decimals
    ("SELECT count(*) FROM visits WHERE visit_date >= %s::date", ("2020-01-01",)),
    ("SELECT count(*) FROM visits WHERE visit_date >= %s", (datetime.date(2020, 1, 1),)),
    ("SELECT count(*) FROM visits WHERE visit_date < %s::timestamp", (datetime.datetime(2030, 1, 1),)),
    ("SELECT count(*) FROM visits WHERE department = %s", ("Cardiology",)),
    ("SELECT count(*) FROM visits WHERE cost > %s::numeric", (Decimal("100.5"),)),
    ("SELECT count(*) FROM visits WHERE cost > %s", (100,)),
    # BI tools' relative date filters
    ("SELECT count(*) FROM visits WHERE visit_date >= now() - interval '100 years'", ()),
    ("SELECT count(*) FROM visits WHERE visit_date > current_date - 36500", ()),
    ("SELECT count(*) FROM visits WHERE visit_date BETWEEN now() - interval '100 years' AND now()", ()),
    ("SELECT count(*) FROM visits WHERE visit_date < date_trunc('month', now())", ()),
    ("SELECT count(*) FROM visits WHERE visit_date >= now() - %s::interval", ("36500 days",)),
    ("SELECT count(*) FROM visits WHERE visit_date >= TO_DATE('2000-01-01', 'YYYY-MM-DD')", ()),
    # Django's icontains
    ("SELECT count(*) FROM visits WHERE UPPER(department::text) LIKE UPPER(%s)", ("%care%",)),
]


@pytest.mark.parametrize(("sql", "params"), CLIENT_QUERIES, ids=[sql for sql, _ in CLIENT_QUERIES])
def test_filters_bi_tools_send_are_answered_near_the_true_count(sql, params, analyst, raw_health):  # noqa: F811
    private, types = _answer(analyst, sql, params)
    exact, direct_types = _answer(raw_health, sql, params)
    assert types == direct_types
    ((noisy,),), ((true,),) = private, exact
    # Bounding each patient's rows lowers the count; noise moves it either way.
    assert true > 0 and true // 2 - 150 <= noisy <= true + 150, (noisy, true)


GROUPINGS = [
    "SELECT extract(year FROM visit_date)::int AS year, count(*) FROM visits GROUP BY 1",
    "SELECT to_char(visit_date, 'YYYY') AS year, count(*) FROM visits GROUP BY 1",
    "SELECT extract(year FROM age(birth_date))::int / 10 AS decade, count(*) FROM patients GROUP BY 1",
    "SELECT date_trunc('year', visit_date) AS year, avg(cost::float) FROM visits GROUP BY 1",
]
BOUND_GROUPINGS = [
    ("SELECT date_trunc(%s, visit_date) AS year, count(*) FROM visits GROUP BY 1", ("year",)),
    ("SELECT date_trunc(%s::varchar, visit_date) AS year, count(visit_id) AS n FROM visits GROUP BY year",
     ("YEAR",)),
]


@pytest.mark.parametrize(("sql", "params"), BOUND_GROUPINGS)
def test_groupings_with_a_bound_unit_are_answered(sql, params, analyst, raw_health):  # noqa: F811
    private, types = _answer(analyst, sql, params)
    exact, direct_types = _answer(raw_health, sql, params)
    assert types == direct_types
    assert private and {row[0] for row in private} <= {row[0] for row in exact}


@pytest.mark.parametrize("sql", GROUPINGS)
def test_groupings_bi_tools_send_are_answered_with_postgresqls_types(sql, analyst, raw_health):  # noqa: F811
    private, types = _answer(analyst, sql)
    exact, direct_types = _answer(raw_health, sql)
    assert types == direct_types
    assert private and {row[0] for row in private} <= {row[0] for row in exact}


# Each condition reads one patient's rows ({p}); its outcome must not depend on them.
PATIENT_REFUSED = [
    "patient_id = {p} AND department = 'Psychiatry' AND visit_date > now() - interval '300000 years'",
    "patient_id = {p} AND department = 'Psychiatry' AND extract(epoch FROM visit_date)::int > 0",
    "patient_id = {p} AND department = 'Psychiatry' AND make_date(length_of_stay, 1, 1) > '2000-01-01'",
    "patient_id = {p} AND department = 'Psychiatry' AND visit_date + length_of_stay * 100000 > now()",
]
PATIENT_ANSWERED = [
    "patient_id = {p} AND department = 'Psychiatry' AND visit_date >= now() - interval '12 months'",
    "patient_id = {p} AND department = 'Psychiatry' AND extract(year FROM visit_date)::int > 2000",
    "patient_id = {p} AND department = 'Psychiatry' AND to_char(visit_date, 'YYYY-MM') > '2000'",
    "patient_id = {p} AND department = 'Psychiatry' AND visit_date + 10 > current_date - 3650",
]


@pytest.mark.parametrize("condition", PATIENT_REFUSED)
def test_a_row_value_that_can_fail_is_refused_for_everyone(condition, analyst, patients):  # noqa: F811
    sql = f"SELECT count(*) FROM visits WHERE {condition}"
    assert {outcome(analyst, sql.format(p=p)) for p in patients} == {REFUSED}


@pytest.mark.parametrize("condition", PATIENT_ANSWERED)
def test_a_row_value_that_cannot_fail_answers_for_everyone(condition, analyst, patients):  # noqa: F811
    sql = f"SELECT count(*) FROM visits WHERE {condition}"
    assert {outcome(analyst, sql.format(p=p)) for p in patients} == {"answer"}


# -- date_part ------------------------------------------------------------------

@pytest.mark.parametrize("source", ["readings r", "readings r JOIN calendar c ON c.day = r.day"])
def test_date_part_has_postgresqls_type_and_never_fails(source, fuzz):  # noqa: F811
    columns = ["r.day", "r.seen"] + (["c.until", "c.stamp", "c.moment"] if "calendar" in source else [])
    steps = [f"date_part('{f}', {x}) IS NULL" for f in FIELDS for x in columns]
    steps += [f"CAST(date_part('{f}', {x}) AS {kind}) IS NULL" for f in ("year", "month", "epoch", "dow")
              for x in columns for kind in ("integer", "bigint")]
    steps += [f"floor(date_part('year', age({x})) / 10) * 10 IS NULL" for x in columns]
    check_steps(fuzz, source, steps, ["r.", "c."])
