"""Leaks through what a private answer carries besides its values (issue 9,
"Released rows carry nothing but their values"), as the analyst of the
example policy (an aggregate role):

- row order: the order PostgreSQL produced the groups in (a person's own
  groups first, the empty public groups appended) must not reach the
  client, nor pick the rows of LIMIT without ORDER BY, nor break ties under
  ORDER BY;
- accounting at the edges: costs are the exact decimals SET took, SET takes
  decimal literals only, and epsilon and delta have floors;
- a NULL privacy unit is no person: its rows are dropped;
- the number of groups a release builds is bounded before it is built;
- extreme settings return promptly instead of freezing the proxy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import random
import time
from collections.abc import Iterator
from decimal import Context, Decimal
from fractions import Fraction
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgshroud.policies.errors import PolicyErrors
from pgshroud.policies.loader import loads_policy
from pgshroud.policies.model import EpsilonDelta
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.rewriter import PlanContext, plan
from pgshroud.rewriter.plans import Cost, Local, RawResult, Refuse, Release
from pgshroud.rewriter.private.bounding import MAX_PUBLIC_GROUPS
from pgshroud.rewriter.private.release import TooManyGroups
from tests import dp_audit as A

DEPARTMENTS = sorted(["Primary Care", "Endocrinology", "Orthopedics", "Emergency", "Neurology", "Pulmonology",
                      "Infectious Disease", "Gastroenterology", "Surgery", "Nephrology", "Cardiology",
                      "Psychiatry", "Dermatology", "Ophthalmology", "Oncology", "Obstetrics"])
PEOPLE = (1, 2, 3, 5, 8, 13)


@pytest.fixture(scope="module")
def ledger() -> A.CountingLedger:
    return A.CountingLedger()


@pytest.fixture(scope="module")
def analyst(pg, health_db, health_policy, ledger) -> Iterator[object]:
    """pgshroud with the example policy and a ledger that records every charge."""
    proxy = A.start_audit_proxy(make_conninfo(pg.dsn(), sslmode="disable"), health_policy, health_db, ledger)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def health_catalog(health_db):
    return asyncio.run(read_catalog(health_db))


def analyst_rows(proxy, *statements: str) -> list[tuple]:
    """The rows of the last statement, run as the analyst after the others."""
    with psycopg.connect(A.proxy_dsn(proxy, "analyst", "health"), autocommit=True) as conn:
        for statement in statements[:-1]:
            conn.execute(statement)
        return conn.execute(statements[-1]).fetchall()


def planned(sql: str, policy, catalog, **privacy: str) -> Release:
    (only,) = plan(sql, PlanContext(user="analyst", policy=policy, role=policy.roles["analyst"], catalog=catalog,
                                    privacy=privacy or {"epsilon": "1", "delta": "1e-6"}))
    assert isinstance(only, Release), only
    return only


def raw_result(health_db: str, release: Release) -> RawResult:
    with psycopg.connect(health_db) as conn:
        return A.raw_result(conn, release)


# -- row order -----------------------------------------------------------------


def own_departments(health_db: str, person: int) -> list[str]:
    with psycopg.connect(health_db) as conn:
        rows = conn.execute("SELECT DISTINCT department FROM visits WHERE patient_id = %s", (person,)).fetchall()
    return sorted(department for (department,) in rows)


def test_the_people_tried_have_groups_of_their_own(health_db):
    """The attack needs people whose departments are not the first few by name."""
    assert any(own_departments(health_db, p) and own_departments(health_db, p)[0] != DEPARTMENTS[0] for p in PEOPLE)


@pytest.mark.parametrize("person", PEOPLE)
def test_groups_leave_in_key_order_not_postgresql_order(analyst, person):
    """One person's visits grouped by a public key: every department comes
    back, in the order of their names, whichever the person visited."""
    rows = analyst_rows(analyst, "SET pgshroud.epsilon = 0.01",
                        f"SELECT department, count(*) FROM visits WHERE patient_id = {person} GROUP BY department")
    assert [department for department, _ in rows] == DEPARTMENTS


@pytest.mark.parametrize("person", PEOPLE)
def test_limit_without_order_by_picks_by_key(analyst, person):
    rows = analyst_rows(analyst, "SET pgshroud.epsilon = 0.01",
                        f"SELECT department, count(*) FROM visits WHERE patient_id = {person} "
                        "GROUP BY department LIMIT 3 OFFSET 1")
    assert [department for department, _ in rows] == DEPARTMENTS[1:4]


@pytest.mark.parametrize("person", PEOPLE)
def test_ties_under_order_by_break_by_key(analyst, person):
    """ORDER BY a value that is the same in every group: the order is the keys'."""
    rows = analyst_rows(analyst, "SET pgshroud.epsilon = 0.01",
                        f"SELECT department, count(*) * 0 AS nothing FROM visits WHERE patient_id = {person} "
                        "GROUP BY department ORDER BY nothing DESC")
    assert [department for department, _ in rows] == DEPARTMENTS


def test_the_order_of_the_raw_rows_does_not_reach_the_answer(health_db, health_policy, health_catalog):
    """The finalize step alone: the bounded SQL's rows in any order give the
    same rows in the same order (with the same noise), with public keys and
    with partition selection, with and without ORDER BY and LIMIT."""
    queries = (
        "SELECT department, count(*) FROM visits WHERE patient_id = 2 GROUP BY department",
        "SELECT department, count(*) FROM visits WHERE patient_id = 2 GROUP BY department LIMIT 2",
        "SELECT department, sex, count(*) FROM visits JOIN patients USING (patient_id) GROUP BY department, sex",
        "SELECT date_part('year', visit_date) AS year, count(*) FROM visits GROUP BY 1",
        "SELECT date_part('year', visit_date) AS year, count(*) * 0 AS c FROM visits GROUP BY 1 ORDER BY c LIMIT 3",
    )
    for sql in queries:
        release = planned(sql, health_policy, health_catalog, epsilon="2", delta="1e-5")
        raw = raw_result(health_db, release)
        answers = set()
        for seed in range(6):
            rows = list(raw.rows)
            random.Random(seed).shuffle(rows)
            spec = dataclasses.replace(release.spec, rng=random.Random(7))
            answers.add(spec.finalize(dataclasses.replace(raw, rows=tuple(rows))).rows)
        assert len(answers) == 1, sql
        (answer,) = answers
        keys = [row[:-1] for row in answer]
        assert len(answer) >= 2 and keys == sorted(keys, key=lambda k: [(v is None, v) for v in k]), sql


# -- accounting at the edges -----------------------------------------------------


def plan_one(sql: str, policy, catalog, privacy: dict[str, str] | None = None):
    (only,) = plan(sql, PlanContext(user="analyst", policy=policy, role=policy.roles["analyst"], catalog=catalog,
                                    privacy=privacy if privacy is not None else {}))
    return only


@pytest.mark.parametrize("value", ["'1/3'", "1/3", "'1e-400'", "'NaN'", "'nan'", "'inf'", "'Infinity'", "'-inf'",
                                   "'0x10'", "'1_0'", "'1e5000'", "'0.5 0.5'", "''", "'+'",
                                   "'0." + "1" * 40 + "'", "'1e-1000000000000'"])
@pytest.mark.parametrize("name", ["epsilon", "delta"])
def test_set_takes_decimal_literals_only(health_policy, health_catalog, name, value):
    refusal = plan_one(f"SET pgshroud.{name} = {value}", health_policy, health_catalog)
    assert isinstance(refusal, Refuse) and refusal.sqlstate == "22023", refusal


@pytest.mark.parametrize("sql,fragment", [
    ("SET pgshroud.epsilon = 0.001", "floor 0.01"),
    ("SET pgshroud.epsilon = '1e-30'", "floor 0.01"),
    ("SET pgshroud.epsilon = 0.009999999999999999999", "floor 0.01"),
    ("SET pgshroud.delta = 1e-400", "floor 1E-12"),
    ("SET pgshroud.delta = '1e-13'", "floor 1E-12"),
    ("SET pgshroud.delta = 0.0000000000009", "floor 1E-12"),
])
def test_epsilon_and_delta_have_floors(health_policy, health_catalog, sql, fragment):
    refusal = plan_one(sql, health_policy, health_catalog)
    assert isinstance(refusal, Refuse) and refusal.sqlstate == "22023", refusal
    assert fragment in refusal.message


@pytest.mark.parametrize("sql", ["SET pgshroud.epsilon = 0.01", "SET pgshroud.epsilon = '1e-2'",
                                 "SET pgshroud.epsilon = 2", "SET pgshroud.delta = 0", "SET pgshroud.delta = 1e-12",
                                 "SET pgshroud.delta = '0.00001'", "SET pgshroud.epsilon = .5"])
def test_the_floors_and_maxima_themselves_may_be_set(health_policy, health_catalog, sql):
    assert isinstance(plan_one(sql, health_policy, health_catalog), Local)


def test_a_session_value_below_the_floor_is_refused_at_the_query(health_policy, health_catalog):
    """However a value got into the session's settings, the query checks it again."""
    for privacy in ({"epsilon": "1e-30"}, {"epsilon": "1/3"}, {"delta": "1e-400"}, {"epsilon": "NaN"}):
        refusal = plan_one("SELECT count(*) FROM visits", health_policy, health_catalog, privacy)
        assert isinstance(refusal, Refuse) and refusal.sqlstate == "22023", (privacy, refusal)


def test_costs_are_the_exact_decimals_set(analyst, ledger):
    """What is charged is the decimal SET took, not a float near it, and
    it is exactly what the noise was calibrated to spend."""
    # 38 significant digits: more than a float's 17 or a default decimal context's 28.
    epsilon, delta = "0.33333333333333333333333333333333333333", "0.000000123456789123456789123456789123"
    before = len(ledger.charges)
    analyst_rows(analyst, f"SET pgshroud.epsilon = {epsilon}", f"SET pgshroud.delta = '{delta}'",
                 "SELECT date_trunc('year', visit_date) AS year, count(*) FROM visits GROUP BY 1")
    analyst_rows(analyst, f"SET pgshroud.epsilon = {epsilon}", "SELECT count(*) FROM visits")
    [(_, grouped), (_, ungrouped)] = ledger.charges[before:]
    assert grouped == Cost(Decimal(epsilon), Decimal(delta))
    assert (grouped.epsilon, grouped.delta) == (Decimal(epsilon), Decimal(delta))
    assert (ungrouped.epsilon, ungrouped.delta) == (Decimal(epsilon), 0)


def test_the_release_spends_what_it_charges(health_policy, health_catalog):
    release = planned("SELECT department, count(*), avg(cost) FROM visits GROUP BY department",
                      health_policy, health_catalog, epsilon="0.123456789", delta="0")
    spec = release.spec
    assert sum(noise.epsilon for noise in spec.noises.values()) == Fraction(Decimal("0.123456789"))
    assert Fraction(spec.cost.epsilon) == spec.epsilon and spec.cost.delta == 0


def test_a_cost_is_never_rounded_down():
    assert Cost(Fraction(1, 3)).epsilon == Decimal("0.3333333333333333333333333333333334")
    assert Fraction(Cost(Fraction(1, 3)).epsilon) >= Fraction(1, 3)
    assert Fraction(Cost(Fraction(2, 3), Fraction(1, 7)).delta) >= Fraction(1, 7)
    assert Cost(Fraction(3, 8)).epsilon == Decimal("0.375")
    long = Decimal("0.12345678901234567890123456789012345678")
    assert Cost(Fraction(long), Fraction(long) / 10**30).epsilon == long
    assert Cost(Fraction(long), Fraction(long) / 10**30).delta == long.scaleb(-30, Context(prec=100))
    assert Cost(0.1).epsilon == Decimal("0.1")


FLOOR_POLICY = """
privacy:
  floor: {floor}
  per_query:
    epsilon: {{default: 0.5, max: 2.0}}
    delta: {{default: 1.0e-7, max: 1.0e-5}}
"""


def policy_with_floor(health_policy, floor: str):
    text = Path(health_policy.source).read_text()
    start = text.index("privacy:\n")
    end = text.index("budgets:")
    return loads_policy(text[:start] + FLOOR_POLICY.format(floor=floor).lstrip() + "\n" + text[end:], "floor.yaml")


def test_the_policy_sets_the_floors(health_policy, health_catalog):
    policy = policy_with_floor(health_policy, "{epsilon: 0.001, delta: 1.0e-9}")
    assert policy.privacy.floor == EpsilonDelta(0.001, 1e-9)
    assert isinstance(plan_one("SET pgshroud.epsilon = 0.001", policy, health_catalog), Local)
    assert isinstance(plan_one("SET pgshroud.epsilon = 0.0009", policy, health_catalog), Refuse)
    assert isinstance(plan_one("SET pgshroud.delta = 1e-9", policy, health_catalog), Local)
    assert isinstance(plan_one("SET pgshroud.delta = 1e-10", policy, health_catalog), Refuse)
    assert health_policy.privacy.floor == EpsilonDelta(0.01, 1e-12)


@pytest.mark.parametrize("floor,key,expected", [
    ("{epsilon: 0}", "privacy.floor.epsilon", "a number above 0"),
    ("{epsilon: 0.9}", "privacy.floor.epsilon", "no larger than privacy.per_query.epsilon.default"),
    ("{delta: 0}", "privacy.floor.delta", "above 0 and below 1"),
    ("{delta: 1}", "privacy.floor.delta", "above 0 and below 1"),
    ("{delta: 1.0e-6}", "privacy.floor.delta", "no larger than privacy.per_query.delta.default"),
    ("{epsilon: lots}", "privacy.floor.epsilon", "a number above 0"),
    ("{rho: 1}", "privacy.floor.rho", "one of the keys epsilon, delta"),
    ("0.01", "privacy.floor", "a mapping (keys: epsilon, delta)"),
])
def test_floors_are_validated(health_policy, floor, key, expected):
    with pytest.raises(PolicyErrors) as caught:
        policy_with_floor(health_policy, floor)
    (error,) = caught.value.errors
    assert error.key == key and expected in error.expected, str(error)


def test_a_default_below_the_built_in_floor_names_the_floor(health_policy):
    text = Path(health_policy.source).read_text().replace("epsilon: {default: 0.5, max: 2.0}",
                                                           "epsilon: {default: 0.005, max: 2.0}")
    with pytest.raises(PolicyErrors) as caught:
        loads_policy(text, "low.yaml")
    (error,) = caught.value.errors
    assert error.key == "privacy.per_query.epsilon.default" and "privacy.floor.epsilon" in error.expected


# -- a NULL privacy unit ------------------------------------------------------------

LOOSE_POLICY = """
version: 1
default_role: deny
roles:
  analyst: {access: aggregate, users: [analyst]}
protected_tables:
  tips:
    privacy_unit: person
    contribution: {max_groups_per_unit: 2, max_rows_per_group: 3}
    columns:
      person: none
      kind: {mask: none, public_domain: [a, b]}
      amount: {mask: none, bounds: [0, 10]}
  notes:
    privacy_unit: person
    contribution: {max_groups_per_unit: 2, max_rows_per_group: 3}
    columns:
      person: none
      kind: {mask: none, public_domain: [a, b]}
      amount: {mask: none, bounds: [0, 10]}
"""


@pytest.fixture(scope="module")
def loose_db(pg) -> str:
    """Five people with one tip each, and a thousand tips of no one (person
    NULL); the same people with a note each, and two notes of no one (within
    one person's allowance, so that no sampling step drops them)."""
    pg.execute("DROP DATABASE IF EXISTS leaks_loose")
    pg.execute("CREATE DATABASE leaks_loose")
    pg.execute("CREATE TABLE tips (person integer, kind text, amount numeric);"
               "INSERT INTO tips SELECT p, 'a', 1 FROM generate_series(1, 5) AS p;"
               "INSERT INTO tips SELECT NULL, (ARRAY['a', 'b'])[1 + g % 2], 10 FROM generate_series(1, 1000) AS g;"
               "CREATE TABLE notes AS SELECT * FROM tips WHERE person IS NOT NULL;"
               "INSERT INTO notes VALUES (NULL, 'b', 10), (NULL, 'b', 10);",
               dbname="leaks_loose")
    return pg.admin_dsn("leaks_loose")


@pytest.mark.parametrize("sql,rows", [
    ("SELECT count(*), sum(amount) FROM tips", {(0, None): (5, 5, 5)}),
    ("SELECT kind, count(*), sum(amount) FROM tips GROUP BY kind", {(0, None, "a"): (5, 5, 5)}),
    ("SELECT count(DISTINCT person) FROM tips", {(0, None): (5,)}),
    ("SELECT count(*) FROM notes", {(0, None): (5, 5)}),
    ("SELECT kind, count(*), sum(amount) FROM notes GROUP BY kind", {(0, None, "a"): (5, 5, 5)}),
    ("SELECT kind, count(DISTINCT person) FROM notes GROUP BY kind", {(0, None, "a"): (5,)}),
])
def test_rows_of_no_one_are_dropped(loose_db, sql, rows):
    """Kept, the rows with a NULL unit would count as one more person, with
    a whole allowance of rows of their own."""
    policy = loads_policy(LOOSE_POLICY, "loose.yaml")
    catalog = asyncio.run(read_catalog(loose_db))
    release = planned(sql, policy, catalog)
    with psycopg.connect(loose_db) as conn:
        totals = {k: v for k, v in A.bounded_totals(conn, release).items() if k[0] >= 0}
    assert totals == {k: tuple(Fraction(x) for x in v) for k, v in rows.items()}


# -- how many groups a release builds ------------------------------------------------

# 45 ICD-10 codes in the public diagnoses table, three times over: 91,125
# groups to noise on the event loop (four times: 4.1 million).
THREE_CODES = ("SELECT d1.code AS a, d2.code AS b, d3.code AS c, count(*) FROM visits v "
               "JOIN diagnoses d1 ON d1.code = v.diagnosis_code JOIN diagnoses d2 ON d2.code = v.diagnosis_code "
               "JOIN diagnoses d3 ON d3.code = v.diagnosis_code GROUP BY 1, 2, 3")


def case_key(column: str, values: int) -> str:
    """A CASE whose results are `values` literals: a public domain of values + 1 (NULL)."""
    return "CASE " + " ".join(f"WHEN {column} = {i} THEN 'v{i}'" for i in range(values)) + " END"


# Each under the 1,000 terms a private statement may have.
@pytest.mark.parametrize("sql", [
    (f"SELECT department, {case_key('length_of_stay', 40)} AS k, {case_key('cost', 20)} AS l, count(*) FROM visits "
    "GROUP BY 1, 2, 3"),
    (f"SELECT {case_key('length_of_stay', 25)} AS k, {case_key('cost', 25)} AS l, "
    f"{case_key('visit_id', 25)} AS m, count(*) FROM visits GROUP BY 1, 2, 3"),
    ("SELECT department, sex, count(*) FROM visits JOIN patients "
    f"USING (patient_id) GROUP BY 1, 2, {case_key('length_of_stay', 60)}, {case_key('cost', 5)}"),
])
def test_listed_domains_are_counted_when_planned(health_policy, health_catalog, sql):
    """Domains the plan knows (the policy's lists, a CASE's literals) are
    multiplied before anything runs: the statement is refused, not charged."""
    refusal = plan_one(sql, health_policy, health_catalog, {"epsilon": "1", "delta": "1e-6"})
    assert isinstance(refusal, Refuse) and refusal.sqlstate == "42501", refusal
    assert "combinations" in refusal.message and "10000" in refusal.message


@pytest.mark.parametrize("sql", [
    THREE_CODES,
    (f"SELECT diagnosis_code, department, {case_key('length_of_stay', 14)} AS k, count(*) FROM visits "
    "GROUP BY 1, 2, 3"),
])
def test_public_table_domains_are_counted_before_groups_are_built(health_db, health_policy, health_catalog, sql):
    """A public table's values are known only from the answer: they are
    read up to one more than the limit, and counted before any group is built."""
    release = planned(sql, health_policy, health_catalog)
    assert f"LIMIT {MAX_PUBLIC_GROUPS + 1}" in release.sql
    raw = raw_result(health_db, release)
    started = time.monotonic()
    with pytest.raises(TooManyGroups, match="combinations"):
        release.spec.finalize(raw)
    assert time.monotonic() - started < 0.5


def test_public_table_domains_within_the_limit_are_answered(health_db, health_policy, health_catalog):
    release = planned("SELECT diagnosis_code, sex, count(*) FROM visits JOIN patients USING (patient_id) "
                      "GROUP BY 1, 2", health_policy, health_catalog)
    answer = release.spec.finalize(raw_result(health_db, release))
    with psycopg.connect(health_db) as conn:
        (codes,) = conn.execute("SELECT count(*) FROM diagnoses").fetchone()
    assert len(answer.rows) == 2 * codes


def test_too_many_groups_do_not_freeze_the_proxy(analyst):
    """Through the wire: the statement fails within seconds, and another
    session is answered meanwhile."""
    started = time.monotonic()
    with pytest.raises(psycopg.Error):
        analyst_rows(analyst, THREE_CODES)
    assert time.monotonic() - started < 10
    assert analyst_rows(analyst, "SELECT 1") == [(1,)]


# -- extreme settings return promptly ----------------------------------------------------


def test_a_tiny_epsilon_is_refused_at_set(analyst):
    started = time.monotonic()
    with psycopg.connect(A.proxy_dsn(analyst, "analyst", "health"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="floor"):
            conn.execute("SET pgshroud.epsilon = '1e-30'")
        assert conn.execute("EXPLAIN SELECT count(*) FROM patients").fetchall()
    assert time.monotonic() - started < 10


def _plan_in_child(policy, catalog, sql: str, privacy: dict[str, str], results) -> None:
    outcome = plan_one(sql, policy, catalog, privacy)
    results.put(type(outcome).__name__ + ": " + (outcome.message if isinstance(outcome, Refuse) else ""))


@pytest.mark.parametrize("sql,epsilon,delta", [
    ("EXPLAIN SELECT count(*) FROM patients", "1e-30", "0"),
    ("SELECT count(*) FROM patients", "1e-30", "0"),
    ("EXPLAIN SELECT sum(cost), avg(cost) FROM visits", "1e-30", "0"),
    ("SELECT sum(cost) FROM visits", "1e-39", "0"),
    ("EXPLAIN SELECT date_trunc('month', visit_date), count(*) FROM visits GROUP BY 1", "1e-30", "1e-300"),
    ("SELECT date_trunc('month', visit_date), count(*) FROM visits GROUP BY 1", "1e-39", "1e-300"),
])
def test_the_smallest_epsilon_a_policy_allows_plans_promptly(health_policy, health_catalog, sql, epsilon, delta):
    """Floors are the policy's to lower; even at 1e-39 (where margins of
    error are refused) and delta 1e-300, planning ends within seconds. Run in
    a child process with a deadline, so that a regression fails instead of
    hanging the suite."""
    policy = policy_with_floor(health_policy, "{epsilon: 1.0e-40, delta: 1.0e-300}")
    results = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(
        target=_plan_in_child, args=(policy, health_catalog, sql, {"epsilon": epsilon, "delta": delta}, results))
    child.start()
    child.join(20)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail(f"planning {sql} at epsilon {epsilon} did not end within 20 seconds")
    assert child.exitcode == 0
    outcome = results.get(timeout=5)
    assert outcome.startswith(("Local", "Release", "Refuse: pgshroud cannot answer this privately: a noise scale")), \
        outcome


def _release_in_child(policy, catalog, health_db: str, sql: str, results) -> None:
    release = planned(sql, policy, catalog, epsilon="0.01", delta="1e-12")
    raw = raw_result(health_db, release)
    # Noise decides how large the values are: every draw must be answered.
    results.put(repr([release.spec.finalize(raw).rows[:1] for _ in range(50)][-1]))


@pytest.mark.parametrize("sql", [
    "SELECT sum(cost), avg(cost), stddev(cost) FROM visits",
    "SELECT stddev(cost), variance(cost), stddev(cost) * 2 FROM visits",
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY cost), max(cost) FROM visits",
    "SELECT date_trunc('month', visit_date) AS month, sum(cost) FROM visits GROUP BY 1",
])
def test_extreme_bounds_answer_promptly(health_db, health_policy, health_catalog, sql):
    """Bounds of +-1e300 on a column (the policy's to choose) at the floor
    epsilon and delta: planned and answered within seconds, in a child
    process with a deadline."""
    text = Path(health_policy.source).read_text().replace("bounds: [0, 5000]", "bounds: [-1.0e300, 1.0e300]")
    policy = loads_policy(text, "wide.yaml")
    results = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(
        target=_release_in_child, args=(policy, health_catalog, health_db, sql, results))
    child.start()
    child.join(30)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail(f"answering {sql} with bounds of 1e300 did not end within 30 seconds")
    assert child.exitcode == 0
    assert results.get(timeout=5)


# Post-processing runs for every released group: numbers the analyst writes
# (round's digits, literals, products) must not make it work with integers
# of a billion digits. (sql, the one value released)
POST_PROCESSING = [
    ("SELECT round(count(*)::numeric, 1000000000) FROM visits", lambda v: v.endswith("." + "0" * 100)),
    ("SELECT round(count(*)::numeric, -1000000000) FROM visits", lambda v: v == "0"),
    ("SELECT round(avg(cost), 20000) FROM visits", lambda v: len(v.split(".")[1]) == 100),
    ("SELECT count(*) * 1e100000000 FROM visits", lambda v: v == "Infinity"),
    ("SELECT count(*) * 1e-100000000 FROM visits", lambda v: v == "0"),
    ("SELECT count(*) * 1e999 * 1e999 FROM visits", lambda v: v is None),
    ("SELECT count(*) * 1e99 * 1e99 FROM visits", lambda v: len(v) > 198),
    ("SELECT count(*) * 100000000000 * 100000000000 FROM visits", lambda v: v is None),
    ("SELECT count(*) * 100000000000000000000000000000 FROM visits", lambda v: v.endswith("0" * 29)),
    ("SELECT (count(*) * 1e300::float8 * 1e300::float8)::integer FROM visits", lambda v: v is None),
    ("SELECT floor(count(*) * 1e300::float8 * 1e300::float8) FROM visits", lambda v: v == "Infinity"),
    ("SELECT round(count(*) * 1e300::float8 * 1e300::float8, 2) FROM visits", lambda v: v == "Infinity"),
    ("SELECT (count(*) * 1e300::float8 * 1e300::float8)::numeric FROM visits", lambda v: v == "Infinity"),
    (("SELECT avg(cost) / 3 / 7 / 11 / 13 / 17 / 19 / 23 / 29 / 31 / 37 / 41 / 43 / 47 / 53 / 59 / 61 / 67 "
     "/ 71 / 73 / 79 / 83 / 89 / 97 / 101 / 103 / 107 / 109 / 113 / 127 FROM visits"), lambda v: v == "0"),
]


@pytest.mark.parametrize("sql,check", POST_PROCESSING, ids=[sql for sql, _ in POST_PROCESSING])
def test_post_processing_numbers_stay_small(health_db, health_policy, health_catalog, sql, check):
    release = planned(sql, health_policy, health_catalog, epsilon="1", delta="0")
    raw = raw_result(health_db, release)
    started = time.monotonic()
    answer = release.spec.finalize(raw)
    assert time.monotonic() - started < 1
    ((value,),) = answer.rows
    assert check(value), value
