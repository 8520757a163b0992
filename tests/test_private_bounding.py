"""The contribution-bounding SQL of private queries, run on a real PostgreSQL.

The bounded SQL of a Release is run directly (as a superuser) and its raw
totals are checked exactly against totals computed here in Python from the
same rows, following the clamps rewriter/private/bounding.py documents:
per person per group, counts are capped at max_rows, sums are totals of
rows clamped into the person's range and then clamped themselves, averages
are centred sums of rows clamped to the bounds, NaN is no value and
infinities clamp; each person keeps at most max_groups groups, and an
ungrouped query gives one person max_groups x max_rows rows.

Two databases: `events`, small and built here so every value is known
(adversarial people with thousands of rows, with rows in fifty groups,
with NaN, infinities, extreme integers, dates and numerics), under a policy
written here; and the demo's `health` database under the demo policy, whose
bounds the expectations read from the policy. Finally, queries whose row
expressions could fail on some value are run on the adversarial rows: each
must be refused at plan time or run without an error, since an error would
tell the analyst that such a value exists.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from decimal import Decimal
from fractions import Fraction

import psycopg
import pytest
from psycopg.types.string import TextLoader

from policies.loader import load_policy
from proxy.catalog import read_catalog
from rewriter import PlanContext, plan
from rewriter.plans import RawResult, Refuse, Release

MAX_GROUPS, MAX_ROWS = 3, 4
DOMAIN = ("a", "b", "c", "d")  # grp's public domain; nobody has rows in d
AMOUNT, SCORE, N = (Fraction(0), Fraction(10)), (Fraction(-5), Fraction(5)), (Fraction(0), Fraction(100))

POLICY = f"""
version: 1
default_role: deny
roles:
  analyst: {{access: aggregate, users: [analyst]}}
protected_tables:
  events:
    privacy_unit: pid
    contribution: {{max_groups_per_unit: {MAX_GROUPS}, max_rows_per_group: {MAX_ROWS}}}
    columns:
      pid: none
      grp: {{mask: none, public_domain: [{", ".join(DOMAIN)}]}}
      bucket: none
      amount: {{mask: none, bounds: [0, 10]}}
      score: {{mask: none, bounds: [-5, 5]}}
      n: {{mask: none, bounds: [0, 100]}}
      day: none
      label: none
  marks:
    privacy_unit: pid
    contribution: {{max_groups_per_unit: 1, max_rows_per_group: 1}}
    columns:
      pid: none
      flag: {{mask: none, public_domain: [true, false]}}
      grade: {{mask: none, public_domain: [0, 1, 2]}}
privacy:
  per_query:
    epsilon: {{default: 1, max: 10}}
    delta: {{default: 1.0e-6, max: 1.0e-3}}
budgets:
  period: never
  per_user: {{epsilon: 1000, delta: 0.5}}
"""

SCHEMA = """
CREATE TABLE events (
    pid integer NOT NULL,
    grp text NOT NULL,
    bucket text NOT NULL,
    amount numeric,          -- unconstrained: holds NaN, infinities and 10**131071
    score double precision,  -- holds NaN and infinities
    n integer,
    day date,
    label text
);
CREATE TABLE marks (pid integer NOT NULL, flag boolean, grade numeric(3,1));
INSERT INTO marks SELECT p, p % 2 = 0, p % 3 FROM generate_series(1, 40) AS p;
"""

HEAVY, WIDE, ODD, HUGE = 500, 600, 31, 32  # the adversarial people
HEAVY_ROWS = 5000
WIDE_GROUPS = 50

NORMAL_AMOUNTS = ("2.5", "7", "12", "-3", None, "10")
NORMAL_SCORES = ("1.5", "-7", "4", None, "6", "-2.5")
NORMAL_NS = (0, 50, 100, 150, -10, 3)


def _rows() -> list[tuple]:
    """(pid, grp, bucket, amount, score, n, day, label), amount and score as text."""
    rows = []
    for pid in range(1, 31):  # ordinary people: 1 to 3 of the groups a, b, c; 1 to 6 rows in each
        groups = ["a", "b", "c"][pid % 3:] + ["a", "b", "c"][: pid % 3]
        for g, grp in enumerate(groups[: 1 + pid % 3]):
            for i in range(1 + (pid + g) % 6):
                k = pid + i
                rows.append((pid, grp, grp, NORMAL_AMOUNTS[k % 6], NORMAL_SCORES[k % 6], NORMAL_NS[k % 6],
                             f"2024-01-{1 + k % 28:02d}", "x"))
    # NaN, infinities and extremes, all in group b.
    odd = [("NaN", "NaN", 2147483647), ("Infinity", "Infinity", -2147483648), ("-Infinity", "-Infinity", 5),
           ("1e100000", "1e308", 7), ("5", "2", None), (None, None, 1), ("NaN", "-1e308", 2)]
    days = ["infinity", "300000-01-01", "-infinity", "2024-02-01", "2024-02-02", None, "4713-01-01 BC"]
    for (amount, score, n), day in zip(odd, days):
        rows.append((ODD, "b", "b", amount, score, n, day, "x\\"))
    # The largest numeric values, twice.
    rows += [(HUGE, "c", "c", "9e131071", "1", 1, "2024-03-01", "y")] * 2
    # Thousands of rows in one group.
    rows += [(HEAVY, "a", "a", "10", "5", 100, "2024-04-01", "z")] * HEAVY_ROWS
    # One row in each of fifty groups, none of them public.
    rows += [(WIDE, f"x{i:02d}", f"adv{i:02d}", "1", "1", 1, "2024-05-01", "w") for i in range(WIDE_GROUPS)]
    return rows


ROWS = _rows()


@pytest.fixture(scope="module")
def events_dsn(pg) -> str:
    pg.execute("DROP DATABASE IF EXISTS private_bounding")
    pg.execute("CREATE DATABASE private_bounding")
    dsn = pg.admin_dsn("private_bounding")
    with psycopg.connect(dsn) as conn:
        conn.execute(SCHEMA)
        with conn.cursor().copy("COPY events FROM STDIN") as copy:
            for row in ROWS:
                copy.write_row(row)
        conn.execute("ANALYZE events")
    return dsn


@pytest.fixture(scope="module")
def events_planner(events_dsn, tmp_path_factory):
    path = tmp_path_factory.mktemp("policy") / "events.yaml"
    path.write_text(POLICY)
    policy = load_policy(path)
    catalog = asyncio.run(read_catalog(events_dsn))
    planner = lambda sql: plan_one(sql, policy, catalog)  # noqa: E731
    planner.context = (policy, catalog)
    return planner


def plan_one(sql: str, policy, catalog, privacy=None):
    context = PlanContext(user="analyst", policy=policy, role=policy.role_for("analyst"), catalog=catalog,
                          privacy=privacy or {"epsilon": "1", "delta": "1e-6"})
    (result,) = plan(sql, context)
    return result


def released(planner, sql: str) -> Release:
    result = planner(sql)
    assert isinstance(result, Release), (sql, result)
    return result


# running the bounded SQL

def run_raw(dsn: str, sql: str) -> RawResult:
    """The upstream rows of a Release, as text, as the proxy reads them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return raw_on(conn, sql)


def raw_on(conn: psycopg.Connection, sql: str) -> RawResult:
    cursor = conn.cursor()
    for name in ("int4", "int8", "numeric", "text", "date", "timestamptz", "timestamp", "float8", "bool"):
        cursor.adapters.register_loader(name, TextLoader)
    cursor.execute(sql)
    names = tuple(column.name for column in cursor.description)
    oids = tuple(column.type_code for column in cursor.description)
    return RawResult(names, oids, tuple(cursor.fetchall()))


def totals(release: Release, raw: RawResult) -> dict[tuple, dict]:
    """Raw totals per group: `units`, each measurement by its index in
    `spec.found`, and histograms as {index: {bucket: count}}."""
    width = len(release.spec.query.keys)
    groups: dict[tuple, dict] = {}
    for row in raw.rows:
        kind = int(row[0])
        if kind < 0:
            continue  # a public value of a key
        key = tuple(row[2 : 2 + width])
        group = groups.setdefault(key, {"units": 0, "hist": defaultdict(dict)})
        values = row[2 + width :]
        if kind == 0:
            group["units"] = int(values[0])
            for i, value in enumerate(values[1:], start=1):
                group[i] = None if value is None else Fraction(Decimal(value))
        elif row[1] is None:
            group[kind] = Fraction(Decimal(values[0]))
        else:
            group["hist"][kind][int(row[1])] = int(values[0])
    return groups


def index_of(release: Release, kind: str, column: str | None = None) -> int:
    """The position in `spec.found` of the measurement of this kind (over this column)."""
    found = [i for i, m in enumerate(release.spec.found)
             if m.kind == kind and (column is None or (m.argument and column in m.argument))]
    assert len(found) == 1, (kind, column, release.spec.found)
    return found[0]


# the clamps, in Python

def number(text: str | None) -> Decimal | None:
    """A row's value as the bounded SQL reads it: NaN is no value."""
    if text is None:
        return None
    value = Decimal(text)
    return None if value.is_nan() else value


def clamp(x, low: Fraction, high: Fraction) -> Fraction:
    """x (a Fraction, or a Decimal that may be infinite or huge) clamped, exactly."""
    if x <= low:
        return low
    if x >= high:
        return high
    return Fraction(x)


def per_person(values: list, kind: str, bounds: tuple[Fraction, Fraction], rows: int) -> Fraction:
    """One person's contribution to one group, as bounding.py defines it."""
    low, high = bounds
    present = [v for v in values if v is not None]
    if kind == "rows":
        return Fraction(min(len(values), rows))
    if kind == "count":
        return Fraction(min(len(present), rows))
    total_low, total_high = rows * min(low, Fraction(0)), rows * max(high, Fraction(0))
    if kind == "sum":
        # A row never counts for more than a whole person may; then the total is clamped.
        return clamp(sum((clamp(v, total_low, total_high) for v in present), Fraction(0)), total_low, total_high)
    clamped = [clamp(v, low, high) for v in present]
    if kind == "centred_sum":
        half, middle = (high - low) / 2, (high + low) / 2
        return clamp(sum((v - middle for v in clamped), Fraction(0)), -rows * half, rows * half)
    if kind == "clamped_sum":
        return clamp(sum(clamped, Fraction(0)), total_low, total_high)
    if kind == "sum_of_squares":
        largest = max(abs(low), abs(high))
        return clamp(sum((v * v for v in clamped), Fraction(0)), Fraction(0), rows * largest * largest)
    raise ValueError(kind)


def expected(rows: list[tuple], key, value, kind: str, bounds=(Fraction(0), Fraction(0)), rows_per_group=MAX_ROWS):
    """Per group: the sum over people of their clamped contribution.
    `key(row)` is the row's group, `value(row)` its value."""
    people: dict[tuple, list] = defaultdict(list)
    for row in rows:
        people[(key(row), row[0])].append(None if value is None else value(row))
    result: dict = defaultdict(Fraction)
    for (group, _), values in people.items():
        result[group] += per_person(values, kind, bounds, rows_per_group)
    return dict(result)


def units(rows: list[tuple], key) -> dict:
    people = defaultdict(set)
    for row in rows:
        people[key(row)].add(row[0])
    return {group: len(members) for group, members in people.items()}


def AMOUNT_OF(row):
    return number(row[3])


def SCORE_OF(row):
    return number(row[4])


def N_OF(row):
    return None if row[5] is None else Decimal(row[5])


def GRP(row):
    return row[1]


# exact totals on the events database

def test_grouped_totals_are_clamped_per_person_per_group(events_dsn, events_planner):
    release = released(events_planner, "SELECT grp, count(*), count(amount), sum(amount), avg(amount), "
                                       "variance(score) FROM events GROUP BY grp")
    got = totals(release, run_raw(events_dsn, release.sql))
    # Only WIDE has more than MAX_GROUPS groups, and none of them is public:
    # groups a, b and c hold everyone else's rows, whole.
    public = [r for r in ROWS if r[1] in DOMAIN]
    assert {k for k in got if k[0] in DOMAIN} == {("a",), ("b",), ("c",)}
    checks = {
        index_of(release, "rows"): expected(public, GRP, None, "rows"),
        index_of(release, "count", "amount"): expected(public, GRP, AMOUNT_OF, "count"),
        index_of(release, "sum", "amount"): expected(public, GRP, AMOUNT_OF, "sum", AMOUNT),
        index_of(release, "centred_sum", "amount"): expected(public, GRP, AMOUNT_OF, "centred_sum", AMOUNT),
        index_of(release, "clamped_sum", "score"): expected(public, GRP, SCORE_OF, "clamped_sum", SCORE),
        index_of(release, "sum_of_squares", "score"): expected(public, GRP, SCORE_OF, "sum_of_squares", SCORE),
        index_of(release, "count", "score"): expected(public, GRP, SCORE_OF, "count"),
    }
    people = units(public, GRP)
    for grp in ("a", "b", "c"):
        assert got[(grp,)]["units"] == people[grp]
        for index, by_group in checks.items():
            assert got[(grp,)][index] == by_group[grp], (grp, release.spec.found[index])
    # WIDE's fifty groups: at most MAX_GROUPS of them, one row each.
    wide = {k: v for k, v in got.items() if k[0].startswith("x")}
    assert len(wide) == MAX_GROUPS
    assert all(v["units"] == 1 and v[index_of(release, "rows")] == 1 for v in wide.values())


def test_finalize_answers_every_public_group_and_only_those(events_dsn, events_planner):
    release = released(events_planner, "SELECT grp, count(*), avg(amount), sum(n) FROM events GROUP BY grp")
    raw = run_raw(events_dsn, release.sql)
    assert ("d",) not in totals(release, raw)
    answer = release.spec.finalize(raw)
    assert [c.name for c in answer.columns] == ["grp", "count", "avg", "sum"]
    assert sorted(row[0] for row in answer.rows) == list(DOMAIN)  # d with a noisy value, no x..
    for row in answer.rows:
        assert None not in row, row
        assert int(row[1]) >= 0
        assert 0 <= Decimal(row[2]) <= 10


def test_ungrouped_query_gives_each_person_max_groups_times_max_rows(events_dsn, events_planner):
    release = released(events_planner, "SELECT count(*), sum(amount), avg(n), count(DISTINCT pid) FROM events")
    assert (release.spec.query.max_groups, release.spec.query.max_rows) == (1, MAX_GROUPS * MAX_ROWS)
    got = totals(release, run_raw(events_dsn, release.sql))[()]
    everyone = lambda r: ()  # noqa: E731
    allowance = MAX_GROUPS * MAX_ROWS
    assert got["units"] == len({r[0] for r in ROWS})
    assert got[index_of(release, "rows")] == expected(ROWS, everyone, None, "rows", rows_per_group=allowance)[()]
    assert got[index_of(release, "sum")] == expected(ROWS, everyone, AMOUNT_OF, "sum", AMOUNT,
                                                     rows_per_group=allowance)[()]
    assert got[index_of(release, "centred_sum")] == expected(ROWS, everyone, N_OF, "centred_sum", N,
                                                             rows_per_group=allowance)[()]


def test_nan_is_no_value_and_infinities_clamp(events_dsn, events_planner):
    """ODD's rows: amount NaN, Infinity, -Infinity, 1e100000, 5, NULL, NaN;
    score NaN, Infinity, -Infinity, 1e308, 2, NULL, -1e308."""
    release = released(events_planner, "SELECT count(amount), sum(amount), avg(amount), sum(score), "
                                       f"stddev(score), median(amount) FROM events WHERE pid = {ODD}")
    raw = run_raw(events_dsn, release.sql)
    got = totals(release, raw)[()]
    allowance = MAX_GROUPS * MAX_ROWS
    assert got[index_of(release, "count", "amount")] == 4  # NaN and NULL are no values
    assert got[index_of(release, "sum", "amount")] == allowance * 10  # Infinity and 1e100000 reach the cap
    assert got[index_of(release, "centred_sum", "amount")] == 5  # (10-5) + (0-5) + (10-5) + (5-5)
    # Infinity and 1e308 reach +60, -Infinity and -1e308 reach -60, and 2.
    assert got[index_of(release, "sum", "score")] == 2
    assert got[index_of(release, "sum_of_squares", "score")] == 25 + 25 + 25 + 4 + 25
    histogram = got["hist"][index_of(release, "histogram", "amount")]
    assert sum(histogram.values()) == 4
    answer = release.spec.finalize(raw)
    assert len(answer.rows) == 1 and None not in answer.rows[0]
    for text in answer.rows[0]:
        assert "nan" not in text.lower() and "inf" not in text.lower(), answer.rows


def test_a_person_in_fifty_groups_counts_in_at_most_max_groups(events_dsn, events_planner):
    release = released(events_planner, "SELECT bucket, count(*), count(DISTINCT pid) FROM events GROUP BY bucket")
    assert release.spec.selection is not None  # bucket has no public domain
    got = totals(release, run_raw(events_dsn, release.sql))
    adversary = {k: v for k, v in got.items() if k[0].startswith("adv")}
    assert len(adversary) == MAX_GROUPS
    assert all(v["units"] == 1 and v[index_of(release, "rows")] == 1 for v in adversary.values())
    groups_per_person = defaultdict(set)
    for row in ROWS:
        groups_per_person[row[0]].add(row[2])
    assert sum(v["units"] for v in got.values()) == sum(min(len(g), MAX_GROUPS) for g in groups_per_person.values())


def test_a_person_with_thousands_of_rows_moves_a_count_by_at_most_max_rows(events_dsn, events_planner):
    """Neighbouring databases: with and without HEAVY (5000 rows in group a)."""
    grouped = released(events_planner, "SELECT grp, count(*), sum(n) FROM events GROUP BY grp")
    ungrouped = released(events_planner, "SELECT count(*), sum(n) FROM events")
    with_heavy = [totals(r, run_raw(events_dsn, r.sql)) for r in (grouped, ungrouped)]
    with psycopg.connect(events_dsn) as conn:  # deleted, run, rolled back
        conn.execute("DELETE FROM events WHERE pid = %s", (HEAVY,))
        without = [totals(r, raw_on(conn, r.sql)) for r in (grouped, ungrouped)]
        conn.rollback()
    rows, total = index_of(grouped, "rows"), index_of(grouped, "sum")
    a_with, a_without = with_heavy[0][("a",)], without[0][("a",)]
    assert a_with["units"] - a_without["units"] == 1
    assert a_with[rows] - a_without[rows] == MAX_ROWS
    assert a_with[total] - a_without[total] == MAX_ROWS * 100
    for grp in ("b", "c"):
        assert with_heavy[0][(grp,)] == without[0][(grp,)]
    rows, total = index_of(ungrouped, "rows"), index_of(ungrouped, "sum")
    everyone_with, everyone_without = with_heavy[1][()], without[1][()]
    assert everyone_with[rows] - everyone_without[rows] == MAX_GROUPS * MAX_ROWS
    assert everyone_with[total] - everyone_without[total] == MAX_GROUPS * MAX_ROWS * 100
    # ...which is exactly the sensitivity the noise is scaled for.
    assert ungrouped.spec.noises[ungrouped.spec.found[rows]].sensitivity == MAX_GROUPS * MAX_ROWS
    assert grouped.spec.noises[grouped.spec.found[index_of(grouped, "rows")]].sensitivity == MAX_GROUPS * MAX_ROWS


def test_empty_input_still_gets_one_noisy_row(events_dsn, events_planner):
    release = released(events_planner, "SELECT count(*), sum(amount), avg(amount), stddev(n), median(n), "
                                       "count(DISTINCT label) FROM events WHERE pid < 0")
    raw = run_raw(events_dsn, release.sql)
    assert [row[0] for row in raw.rows].count("0") == 1  # one row of totals, with no people in it
    assert totals(release, raw)[()]["units"] == 0
    answer = release.spec.finalize(raw)
    assert len(answer.rows) == 1 and None not in answer.rows[0], answer.rows


def test_empty_public_groups_are_answered(events_dsn, events_planner):
    for sql, groups in [
        ("SELECT grp, count(*), avg(amount) FROM events WHERE pid < 0 GROUP BY grp", set(DOMAIN)),
        ("SELECT CASE WHEN n < -2147483648 THEN 'impossible' ELSE 'possible' END AS kind, count(*), sum(amount) "
         "FROM events GROUP BY 1", {"impossible", "possible"}),
    ]:
        release = released(events_planner, sql)
        answer = release.spec.finalize(run_raw(events_dsn, release.sql))
        assert {row[0] for row in answer.rows} == groups, sql
        assert all(value is not None for row in answer.rows for value in row), answer.rows


@pytest.mark.parametrize(("column", "truth"), [("flag", {"t": 20, "f": 20}),
                                              ("grade", {"0.0": 13, "1.0": 14, "2.0": 13})])
def test_public_domains_match_the_column_values_whatever_their_type(column, truth, events_dsn, events_planner):
    """A public domain written [true, false] or [0, 1, 2] in the policy names
    the values PostgreSQL prints as t/f and 0.0/1.0/2.0 for a boolean and a
    numeric(3,1) column: the released groups carry the data's counts (the
    noise at epsilon 10 and sensitivity 1 is far below 5), and a boolean key
    is sent as PostgreSQL sends a boolean."""
    result = plan_one(f"SELECT {column}, count(*) FROM marks GROUP BY {column}", *events_planner.context,
                      privacy={"epsilon": "10", "delta": "0"})
    assert isinstance(result, Release), result
    raw = run_raw(events_dsn, result.sql)
    assert {k[0]: v["units"] for k, v in totals(result, raw).items()} == truth
    answer = result.spec.finalize(raw)
    same = Decimal if column == "grade" else str  # 0.0 and 0 are one numeric value
    released = {same(key): int(count) for key, count in answer.rows}
    assert released.keys() == {same(key) for key in truth}, answer.rows
    for key, count in truth.items():
        assert abs(released[same(key)] - count) < 5, answer.rows


# the demo database under the demo policy

def test_health_totals_match_the_policy_bounds(health_db, health_policy, health_catalog_for_bounding):
    visits = health_policy.protected_tables["public.visits"]
    patients = health_policy.protected_tables["public.patients"]
    groups = max(visits.contribution.max_groups_per_unit, patients.contribution.max_groups_per_unit)
    per_group = max(visits.contribution.max_rows_per_group, patients.contribution.max_rows_per_group)
    cost = tuple(Fraction(b) for b in visits.columns["cost"].bounds)
    stay = tuple(Fraction(b) for b in visits.columns["length_of_stay"].bounds)
    with psycopg.connect(health_db) as conn:
        data = conn.execute("SELECT v.patient_id, p.sex, v.department, v.cost::text, v.length_of_stay "
                            "FROM visits v JOIN patients p USING (patient_id)").fetchall()
    planner = lambda sql: plan_one(sql, health_policy, health_catalog_for_bounding)  # noqa: E731
    cost_of, stay24_of = (lambda r: Decimal(r[3])), (lambda r: Decimal(r[4] * 24))

    release = released(planner, "SELECT count(*), sum(cost), avg(length_of_stay * 24) FROM visits")
    got = totals(release, run_raw(health_db, release.sql))[()]
    allowance = visits.contribution.max_groups_per_unit * visits.contribution.max_rows_per_group
    everyone = lambda r: ()  # noqa: E731
    assert got[index_of(release, "rows")] == expected(data, everyone, None, "rows", rows_per_group=allowance)[()]
    assert got[index_of(release, "sum")] == expected(data, everyone, cost_of, "sum", cost, rows_per_group=allowance)[()]
    assert got[index_of(release, "centred_sum")] == expected(data, everyone, stay24_of, "centred_sum",
                                                             (stay[0] * 24, stay[1] * 24), rows_per_group=allowance)[()]

    # One sex per patient: one group each, so nothing is dropped at random.
    release = released(planner, "SELECT sex, count(*), sum(cost) FROM patients JOIN visits USING (patient_id) "
                                "GROUP BY sex")
    got = totals(release, run_raw(health_db, release.sql))
    sex = lambda r: r[1]  # noqa: E731
    rows = expected(data, sex, None, "rows", rows_per_group=per_group)
    sums = expected(data, sex, cost_of, "sum", cost, rows_per_group=per_group)
    for value in ("F", "M"):
        assert got[(value,)][index_of(release, "rows")] == rows[value]
        assert got[(value,)][index_of(release, "sum")] == sums[value]

    # Departments: people with more than max_groups departments keep a random
    # max_groups of them; the totals are bracketed, the number of kept groups exact.
    release = released(planner, "SELECT department, count(*) FROM visits GROUP BY department")
    got = totals(release, run_raw(health_db, release.sql))
    departments = defaultdict(lambda: defaultdict(int))
    for row in data:
        departments[row[0]][row[2]] += 1
    assert sum(v["units"] for v in got.values()) == sum(min(len(d), groups) for d in departments.values())
    for (department,), group in got.items():
        sure = sum(min(c[department], per_group) for c in departments.values() if len(c) <= groups)
        maybe = sum(min(c[department], per_group) for c in departments.values() if len(c) > groups)
        assert sure <= group[index_of(release, "rows")] <= sure + maybe, department


def test_health_public_table_domain_answers_codes_nobody_has(health_db, health_policy, health_catalog_for_bounding):
    release = released(lambda sql: plan_one(sql, health_policy, health_catalog_for_bounding),
                       "SELECT diagnosis_code, count(*) FROM visits WHERE department = 'Dermatology' "
                       "GROUP BY diagnosis_code")
    with psycopg.connect(health_db) as conn:
        codes = {row[0] for row in conn.execute("SELECT code FROM diagnoses")}
        present = {row[0] for row in conn.execute("SELECT DISTINCT diagnosis_code FROM visits "
                                                  "WHERE department = 'Dermatology'")}
    assert present < codes
    answer = release.spec.finalize(run_raw(health_db, release.sql))
    assert {row[0] for row in answer.rows} == codes
    assert all(row[1] is not None for row in answer.rows)


@pytest.fixture(scope="module")
def health_catalog_for_bounding(health_db):
    return asyncio.run(read_catalog(health_db))


# side channels: row expressions that could fail on some value

SIDE_CHANNELS = [
    # integer overflow: carried in numeric
    "SELECT sum(n * 1000000000) FROM events",
    "SELECT sum(abs(n)) FROM events",
    "SELECT count(*) FROM events WHERE -n > 0",
    "SELECT count(*) FROM events WHERE n + n > 0",
    "SELECT count(*) FROM events WHERE n::bigint * 4611686018427387904 > 0",
    "SELECT avg(least(greatest(n * n * n, 0), 100)) FROM events",
    "SELECT count(*) FROM events WHERE n / 2 > 1 AND n % 7 = 1",
    "SELECT n / 3 AS third, count(*) FROM events GROUP BY 1",
    # floats and numerics with NaN and infinities
    "SELECT count(*) FROM events WHERE score * score > 0",
    "SELECT sum(least(greatest(score * 2 - score, -5), 5)) FROM events",
    "SELECT count(*) FROM events WHERE floor(score) > 0 AND ceil(amount) > 0",
    "SELECT count(*) FROM events WHERE round(amount, 2) > 1",
    "SELECT sum(least(greatest(amount / 3, 0), 10)) FROM events",
    "SELECT count(*) FROM events WHERE score::numeric > 0",
    "SELECT count(*) FROM events WHERE amount::text = 'NaN'",
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY least(greatest(score, -5), 5)) FROM events",
    "SELECT count(DISTINCT amount), count(DISTINCT score) FROM events",
    # numeric's own range: 10**131072
    "SELECT avg(least(greatest(amount * amount, 0), 10)) FROM events",
    "SELECT count(*) FROM events WHERE amount + amount > 0",
    "SELECT count(*) FROM events WHERE n * 1e131065 > 0",
    "SELECT avg(total) FROM (SELECT pid, sum(amount) AS total FROM events GROUP BY pid) AS per_person",
    # dates: infinite dates and dates beyond the timestamp range
    "SELECT count(*) FROM events WHERE day - day = 0",
    "SELECT date_trunc('month', day) AS month, count(*) FROM events GROUP BY 1",
    "SELECT count(*) FROM events WHERE day::timestamp > '2024-01-01'",
    "SELECT count(*) FROM events WHERE extract(year FROM day) > 2000",
    "SELECT count(*) FROM events WHERE extract(epoch FROM day) > 0",
    # text
    "SELECT count(*) FROM events WHERE lower(label) LIKE 'x%' AND length(label) = 2",
    "SELECT count(*) FROM events WHERE label LIKE '%\\\\'",
]


@pytest.mark.parametrize("sql", SIDE_CHANNELS)
def test_row_expressions_cannot_fail_on_adversarial_values(sql, events_dsn, events_planner):
    """Refused at plan time, or no error on rows with NaN, infinities,
    +-2**31, 1e100000, 9e131071, infinite dates and the year 300000."""
    result = events_planner(sql)
    if isinstance(result, Refuse):
        return
    assert isinstance(result, Release), result
    try:
        raw = run_raw(events_dsn, result.sql)
    except psycopg.Error as exc:
        pytest.fail(f"the bounded SQL of {sql!r} fails on adversarial rows: {exc}")
    answer = result.spec.finalize(raw)
    assert answer.rows or result.spec.selection is not None
