"""Error oracles in private queries (issue 9, finding 1, and its class): no
data-dependent error can escape a private query.

As the analyst of the demo's policy, `SELECT count(*) FROM visits WHERE
CAST(CASE WHEN patient_id = 1 AND department = 'Psychiatry' THEN 1000 ELSE
0 END AS numeric(3,0)) = 0` failed exactly when patient 1 had a Psychiatry
visit, and a binary search on `cost * 100` read one visit's cost in 24
queries: the expression check treated numeric(3,0) as numeric.

End to end, through pgshroud in front of the demo data: the finding and its
disguises (numeric(p,s) on cost * 100, integer and smallint overflow, casts
of text to numbers and dates, floats overflowing) must get the same outcome
for a patient who has such a visit and one who has not, and that outcome
is a refusal that says what to write instead; the casts that cannot fail
(varchar(n) and char(n) truncate, timestamp(p) rounds, a clamped value fits
numeric(5,2)) answer for both. Then, through the planner and against
tables of adversarial rows (tests/e2e/test_private_expressions_fuzz.py), the
types the demo lacks: floats with NaN and infinities, unconstrained numeric
from 1e-16383 to 1e131071, timestamps and time zones, per-person values
of a subquery, bind parameters, LIKE patterns.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgshroud.policies.model import Budgets, EpsilonDelta
from pgshroud.proxy.budget.ledger import PostgresLedger
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.proxy.session.driver import SessionContext
from pgshroud.rewriter import plan
from pgshroud.rewriter.plans import Refuse, Release
from tests.e2e.test_private_expressions_fuzz import fuzz, run_everywhere  # noqa: F401  (a fixture)
from tests.fix_proxy import RunningProxy, proxy_config

REFUSED = "42501"


def outcome(dsn: str, sql: str) -> str:
    """'answer', or the SQLSTATE of the error, of one statement as the analyst."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(sql).fetchall()
        except psycopg.Error as exc:
            return exc.sqlstate or "?"
        return "answer"


@pytest.fixture(scope="module")
def analyst(pg, health_db, health_policy) -> Iterator[str]:
    """The analyst's DSN through pgshroud with the demo's policy, a ledger, and budget for every test here."""
    policy = dataclasses.replace(health_policy, budgets=Budgets(per_user=EpsilonDelta(10_000, 1.0)))
    catalog = asyncio.run(read_catalog(health_db))
    shared = SessionContext(proxy_config(make_conninfo(pg.dsn(), sslmode="disable")), plan,
                            ledger=PostgresLedger(health_db, policy), policy=policy, catalog=lambda: catalog)
    proxy = RunningProxy(shared)
    yield proxy.dsn("analyst", "health")
    proxy.stop()


@pytest.fixture(scope="module")
def patients(raw_health) -> tuple[int, int]:
    """A patient with a Psychiatry visit and one without any."""
    with psycopg.connect(raw_health) as conn:
        (with_visit,) = conn.execute(
            "SELECT min(patient_id) FROM visits WHERE department = 'Psychiatry'").fetchone()
        (without,) = conn.execute(
            "SELECT min(patient_id) FROM patients p WHERE NOT EXISTS "
            "(SELECT 1 FROM visits v WHERE v.patient_id = p.patient_id AND v.department = 'Psychiatry')").fetchone()
    assert with_visit is not None and without is not None
    return with_visit, without


def test_the_finding_is_refused_whether_or_not_the_patient_has_the_visit(analyst, patients):
    sql = ("SELECT count(*) FROM visits WHERE CAST(CASE WHEN patient_id = {p} AND department = 'Psychiatry' "
           "THEN 1000 ELSE 0 END AS numeric(3,0)) = 0")
    with psycopg.connect(analyst, autocommit=True) as conn:
        # As in the finding; below the policy's floor, so refused as an invalid value.
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SET pgshroud.epsilon = 0.000001")
        assert caught.value.sqlstate == "22023"
        messages = []
        for patient in patients:
            with pytest.raises(psycopg.Error) as refused:
                conn.execute(sql.format(p=patient)).fetchall()
            assert refused.value.sqlstate == REFUSED
            messages.append(refused.value.diag.message_primary or "")
    assert "numeric(3,0)" in messages[0] and "least(greatest(" in messages[0], messages[0]
    assert "without a precision" in messages[0], messages[0]


# Each disguise reads one patient's rows ({p}); its outcome must not depend on them.
REFUSED_DISGUISES = [
    # the finding's cast, other spellings
    "CAST(CASE WHEN patient_id = {p} AND department = 'Psychiatry' THEN 1000 ELSE 0 END AS decimal(3)) = 0",
    "(CASE WHEN patient_id = {p} AND department = 'Psychiatry' THEN 1000 ELSE 0 END)::numeric(3, 0) = 0",
    # the binary search on a visit's cost
    "patient_id = {p} AND CAST(cost * 100 AS numeric(5,2)) > 0",
    "CAST(CASE WHEN patient_id = {p} THEN cost * 100 ELSE 0 END AS numeric(7,2)) > 0",
    "CAST(CASE WHEN patient_id = {p} THEN cost ELSE 0 END AS numeric(4,0)) > 0",
    # integer overflow
    "CAST(CASE WHEN patient_id = {p} AND department = 'Psychiatry' THEN 3000000000 ELSE 0 END AS integer) = 0",
    "CAST(CASE WHEN patient_id = {p} THEN length_of_stay * 10000 ELSE 0 END AS smallint) = 0",
    "CAST(CASE WHEN patient_id = {p} THEN cost ELSE 0 END AS integer) > 0",
    # text that is not a number or a date
    "CAST(CASE WHEN patient_id = {p} THEN department ELSE '0' END AS integer) = 0",
    "CAST(CASE WHEN patient_id = {p} THEN diagnosis_code ELSE '2024-01-01' END AS date) > '2000-01-01'",
    "patient_id = {p} AND department::numeric > 0",
    # floats overflowing: arithmetic is numeric, the cast is not
    ("CAST(CASE WHEN patient_id = {p} AND department = 'Psychiatry' THEN 1e99 * 1e99 * 1e99 * 1e99 ELSE 0 END "
    "AS double precision) = 0"),
    "CAST(CASE WHEN patient_id = {p} THEN cost * 1e35 ELSE 0 END AS real) > 0",
    # bit strings and other types the checker does not model
    "CAST(CASE WHEN patient_id = {p} THEN length_of_stay ELSE 0 END AS bit(3)) = B'101'",
    # dates that could leave the timestamp range
    "patient_id = {p} AND date_trunc('millennium', visit_date) > '2000-01-01'",
    "patient_id = {p} AND date_trunc('month', visit_date, 'Mars/Olympus') > '2000-01-01'",
    "patient_id = {p} AND visit_date + 36500000 > '2000-01-01'",
]
ANSWERED_DISGUISES = [
    # explicit casts to varchar(n) and char(n) truncate, they never fail
    "patient_id = {p} AND CAST(department AS varchar(3)) = 'Psy'",
    "patient_id = {p} AND CAST(department AS char(2)) = 'Ps'",
    # timestamp(p) rounds
    "patient_id = {p} AND CAST(visit_date AS timestamp(0)) > '2000-01-01'",
    # a clamped value fits
    "patient_id = {p} AND CAST(least(greatest(cost * 100, -999), 999) AS numeric(5,2)) > 0",
    "CAST(CASE WHEN patient_id = {p} AND department = 'Psychiatry' THEN 999 ELSE 0 END AS numeric(3,0)) = 0",
    "patient_id = {p} AND CAST(cost AS numeric(12,2)) > 0 AND CAST(length_of_stay AS bigint) >= 0",
    "patient_id = {p} AND CAST(cost AS double precision) > 0",
]


@pytest.mark.parametrize("condition", REFUSED_DISGUISES)
def test_a_cast_that_can_fail_is_refused_for_everyone(condition, analyst, patients):
    sql = f"SELECT count(*) FROM visits WHERE {condition}"
    outcomes = {outcome(analyst, sql.format(p=patient)) for patient in patients}
    assert outcomes == {REFUSED}, (condition, outcomes)


@pytest.mark.parametrize("condition", ANSWERED_DISGUISES)
def test_a_cast_that_cannot_fail_answers_for_everyone(condition, analyst, patients):
    sql = f"SELECT count(*) FROM visits WHERE {condition}"
    outcomes = {outcome(analyst, sql.format(p=patient)) for patient in patients}
    assert outcomes == {"answer"}, (condition, outcomes)


def test_a_literal_that_is_not_a_date_fails_for_everyone(analyst, patients):
    """PostgreSQL reads the literal when it parses the statement, before any
    row: the error is the same whoever the query selects."""
    sql = "SELECT count(*) FROM visits WHERE patient_id = {p} AND visit_date > 'garbage'"
    outcomes = {outcome(analyst, sql.format(p=patient)) for patient in patients}
    assert len(outcomes) == 1 and outcomes != {"answer"}, outcomes


# Through the planner, over adversarial rows: the types the demo lacks.

def planned(fuzz, sql: str) -> Release | Refuse:  # noqa: F811
    (result,) = plan(sql, fuzz.context)
    assert isinstance(result, (Release, Refuse)), result
    return result


@pytest.mark.parametrize(("sql", "reason"), [
    ("SELECT count(*) FROM readings r WHERE CAST(r.ratio AS numeric(10,2)) > 0", "infinities"),
    (("SELECT count(*) FROM readings r WHERE CAST(least(greatest(r.ratio, -999.4999999999999999), "
     "999.4999999999999999) AS numeric(3,0)) > 0"), "1000 or more"),
    ("SELECT count(*) FROM readings r WHERE CAST(r.ratio AS real) > 0", "keep it double precision"),
    ("SELECT count(*) FROM readings r WHERE CAST(r.ratio AS integer) > 0", "NaN"),
    ("SELECT count(*) FROM readings r WHERE CAST(r.big AS integer) > 0", "least(greatest("),
    ("SELECT count(*) FROM readings r WHERE CAST(r.amount * r.amount * r.amount * r.amount AS double precision) > 0",
     "beyond its range"),
    (("SELECT count(*) FROM readings r WHERE r.amount * r.amount * r.amount * r.amount * r.amount * r.amount * "
     "r.amount * r.amount * r.amount * r.amount * r.amount > 0"), "numeric's limit"),
    ("SELECT count(*) FROM labs l WHERE l.taken_at > CAST('294276-12-31' AS timestamp)", "its own type"),
    ("SELECT count(*) FROM readings r WHERE r.seen - r.seen > interval '1 day'", "extract(epoch"),
    ("SELECT count(*) FROM readings r WHERE CAST($1 AS numeric(3,0)) = r.small", "bind parameter"),
    ("SELECT count(*) FROM readings r WHERE r.amount * $1 > 0", "clamp it first"),
    ("SELECT count(*) FROM readings r WHERE r.label LIKE '" + "%a" * 17 + "'", "at most 16 runs of %"),
    ("SELECT count(*) FROM readings r WHERE CAST(r.label AS char(10485760)) = 'a'", "cast to varchar(n)"),
    (("SELECT count(*) FROM (SELECT patient_id, length_of_stay * 100000 AS big FROM visits) v "
     "WHERE CAST(big AS integer) > 0"), "from numeric to integer"),
    (("SELECT count(*) FROM (SELECT patient_id, sum(least(greatest(cost, 0), 100)) AS total FROM visits "
     "GROUP BY patient_id) per WHERE CAST(total AS numeric(3,0)) > 0"), "numeric(3,0)"),
])
def test_failable_expressions_over_other_types_are_refused(sql, reason, fuzz):  # noqa: F811
    result = planned(fuzz, sql)
    assert isinstance(result, Refuse) and result.sqlstate == REFUSED, result
    assert reason in result.message, result.message


@pytest.mark.parametrize("sql", [
    # a float meets a numeric (1e-16383 has no float value): compared as numeric
    "SELECT count(*) FROM readings r WHERE r.ratio < r.amount",
    "SELECT count(*) FROM readings r WHERE coalesce(r.level, r.amount * 2) > 0",
    "SELECT count(*) FROM readings r WHERE r.level IN (r.amount, 1, 2.5)",
    # numeric -> double precision of 1e-16383 rounds to zero rather than fail
    "SELECT count(*) FROM readings r WHERE CAST(r.amount AS double precision) > 0",
    "SELECT count(*) FROM readings r WHERE CAST(least(greatest(r.ratio, -1e6), 1e6) AS numeric(10,2)) > 0",
    ("SELECT count(*) FROM readings r WHERE CAST(least(greatest(r.ratio, -1e30), 1e30) AS numeric) > 0 "
    "AND CAST(r.small AS integer) > 0"),
    "SELECT count(*) FROM readings r WHERE r.amount * r.amount > 0 AND r.amount / 1e-50 > 0 AND r.amount % 7 < 1",
    # dates and timestamps read from protected tables convert and truncate safely in any time zone
    "SELECT count(*) FROM readings r WHERE r.day < r.seen AND date_trunc('week', r.day) < CAST(r.seen AS timestamptz)",
    "SELECT date_trunc('decade', r.seen) AS k, count(*) FROM readings r GROUP BY 1",
    "SELECT extract(epoch FROM r.seen) - extract(epoch FROM r.day) AS k, count(*) FROM readings r GROUP BY 1",
    "SELECT count(*) FROM labs l WHERE l.taken_at > CAST('2024-01-01' AS timestamp)",
    # per person values and subquery columns carry what is known of them
    ("SELECT count(*) FROM (SELECT patient_id, sum(least(greatest(cost, 0), 100)) AS total FROM visits "
    "GROUP BY patient_id) per WHERE CAST(total AS numeric(6,2)) > 0"),
    ("SELECT count(*) FROM (SELECT patient_id, length_of_stay * 1000 AS big FROM visits) v "
    "WHERE CAST(big AS bigint) > 0"),
    "SELECT count(*) FROM readings r WHERE r.label LIKE '%a%b%' AND r.flag ILIKE '\\\\%'",
])
def test_safe_expressions_over_other_types_run_on_adversarial_rows(sql, fuzz):  # noqa: F811
    result = planned(fuzz, sql)
    assert isinstance(result, Release), result
    run_everywhere(fuzz.adversarial, result.sql)


def test_many_like_wildcards_overflow_the_stack_on_long_text(fuzz):  # noqa: F811
    """Why LIKE patterns are limited: PostgreSQL's matcher recurses at each %,
    so on a long enough text of matches it fails, on a short one it does not."""
    pattern = "%a" * 200_000
    with pytest.raises(psycopg.errors.StatementTooComplex):
        fuzz.adversarial.execute(f"SELECT repeat('a', 1 << 20) LIKE '{pattern}'").fetchall()
    assert fuzz.adversarial.execute(f"SELECT 'b' LIKE '{pattern}'").fetchone() == (False,)
    result = planned(fuzz, f"SELECT count(*) FROM visits v WHERE v.department LIKE '{pattern}'")
    assert isinstance(result, Refuse), result


def test_count_of_a_nullable_text_column_runs_on_adversarial_rows(fuzz):  # noqa: F811
    """count(x) only asks whether x is NULL: its argument was once cast to
    numeric, which fails on text that is not a number."""
    result = planned(fuzz, "SELECT count(l.test) FROM labs l")
    assert isinstance(result, Release), result
    run_everywhere(fuzz.adversarial, result.sql)
