"""The contribution-bounding SQL of private queries, run on a real PostgreSQL.

The bounded SQL of a Release is run directly (as a superuser) and its raw
totals are checked exactly against totals computed here in Python from the
same rows, following rewriter/private/bounding.py's semantics:

- each person has an allowance of T = max_groups x max_rows rows over all
  groups (L1). A person with n <= T rows keeps them all; a person with more
  keeps c_g rows of their n_g in group g by systematic sampling: the
  person's groups in key order, a start u in [0, 1) per person (a hash of
  the unit and the query's salt, a literal of the SQL, which PostgreSQL
  computes here for each unit), and c_g = floor(u + cum_g T/n) -
  floor(u + cum_{g-1} T/n), in doubles exactly as the SQL does; so the c_g
  add up to at most T and each is floor or ceil of n_g T/n;
- rows are allocated over all of a person's groups, whatever the query;
  where it releases people counts per group (partition selection,
  COUNT(DISTINCT unit)), each person's groups get a random rank "pick"
  and a group counts the people with rows kept there (c > 0) and pick <=
  max_groups, so each person in at most max_groups groups; an ungrouped
  query keeps least(n, T) rows;
- per person and group: rows c, count(x) least(v, c) (v: rows with a
  value), sums the person's total in the group scaled by c/n (PostgreSQL's
  numeric division, asked here) and clamped to least(v, c) times the
  bounds (sums to [min(low, 0), max(high, 0)], centred sums to +-(high -
  low)/2, sums of squares to [0, largest^2]), rows of SUM clamped one by
  one to T times those bounds first, other values to [low, high];
  histograms keep least(v, c) values and distinct counts c values;
- NaN is no value, infinities clamp.

Two databases: `events`, small and built here so every value is known
(adversarial people with thousands of rows over several groups, with rows in
fifty groups, with NaN, infinities, extreme integers, dates and numerics,
and people a little over the allowance), under a policy written here; and
the demo's `health` database under the demo policy, whose bounds the
expectations read from the policy. The allocation is also checked per
person on synthetic people (any number of rows in any number of groups),
and one person's effect on a query is checked on neighbouring databases:
a person with 5000 rows moves the counts by at most T in L1 over all
groups, sums by T times the largest bound, people counts in at most
max_groups groups. Finally, queries whose row expressions could fail on
some value are run on the adversarial rows: each must be refused at plan
time or run without an error, since an error would tell the analyst that
such a value exists.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import psycopg
import pytest
from psycopg.types.string import TextLoader

from pgshroud.policies.loader import load_policy
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.rewriter import PlanContext, plan
from pgshroud.rewriter.plans import RawResult, Refuse, Release
from pgshroud.rewriter.private import query as q
from pgshroud.rewriter.private.bounding import allocation

MAX_GROUPS, MAX_ROWS = 3, 4
ALLOWANCE = MAX_GROUPS * MAX_ROWS  # T: rows per person over all groups
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

HEAVY, WIDE, ODD, HUGE, VARIED = 500, 600, 31, 32, 38  # the adversarial people
HEAVY_ROWS = 5000
HEAVY_GROUPS = {"a": 3000, "b": 1999, "c": 1}  # HEAVY's rows per grp: shares of T 7.2, 4.8 and 0.0024
HEAVY_BUCKETS = ("a", "b", "c", "h0", "h1", "h2", "h3")  # HEAVY's i-th row is in bucket i % 7
WIDE_GROUPS = 50
# People a little over the allowance of 12 rows: their rows per grp (bucket = grp).
OVER = {33: {"a": 5, "b": 9, "c": 3}, 34: {"a": 13}, 35: {"a": 1, "b": 1, "c": 11}, 36: {"b": 20},
        37: {"a": 7, "c": 7}}

NORMAL_AMOUNTS = ("2.5", "7", "12", "-3", None, "10")
NORMAL_SCORES = ("1.5", "-7", "4", None, "6", "-2.5")
NORMAL_NS = (0, 50, 100, 150, -10, 3)
OVER_AMOUNTS = ("2.5", None, "15", "NaN", "7", "-3", "0.1")
OVER_SCORES = ("1.5", "-7", None, "4.25", "5")
OVER_NS = (3, 100, 77, None, 150)


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
    # A little over the allowance, with values missing, NaN and out of bounds.
    for pid, groups in OVER.items():
        i = 0
        for grp, count in groups.items():
            for _ in range(count):
                amount = ("4" if i % 5 == 0 else None) if pid == 36 else OVER_AMOUNTS[(pid + i) % 7]
                rows.append((pid, grp, grp, amount, OVER_SCORES[(pid + i) % 5], OVER_NS[(pid + i) % 5],
                             f"2024-06-{1 + i % 28:02d}", "o"))
                i += 1
    # 24 rows in each of a and b, every n a different value: keeps 6 rows (and values) of each.
    rows += [(VARIED, grp, grp, "1", "1", 2 * i + g, "2024-07-01", "v")
             for g, grp in enumerate("ab") for i in range(24)]
    # Thousands of rows over three groups (and seven buckets), every value far out of bounds.
    heavy_groups = [grp for grp, count in HEAVY_GROUPS.items() for _ in range(count)]
    rows += [(HEAVY, grp, HEAVY_BUCKETS[i % len(HEAVY_BUCKETS)], "1e6", "-1e308", 100, "2024-04-01", "z")
             for i, grp in enumerate(heavy_groups)]
    # One row in each of fifty groups, none of them public.
    rows += [(WIDE, f"x{i:02d}", f"adv{i:02d}", "1", "1", 1, "2024-05-01", "w") for i in range(WIDE_GROUPS)]
    return rows


ROWS = _rows()
assert sum(1 for r in ROWS if r[0] == HEAVY) == HEAVY_ROWS


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
    planner = lambda sql: plan_one(sql, policy, catalog)
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


def raw_on(conn: psycopg.Connection, sql: str, params=None) -> RawResult:
    cursor = conn.cursor()
    for name in ("int4", "int8", "numeric", "text", "date", "timestamptz", "timestamp", "float8", "bool"):
        cursor.adapters.register_loader(name, TextLoader)
    cursor.execute(sql, params)
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
             if m.kind == kind and (column is None or (m.argument and re.search(rf"\b{column}\b", m.argument)))]
    assert len(found) == 1, (kind, column, release.spec.found)
    return found[0]


def salt_of(sql: str) -> str:
    """The query's salt: the literal the SQL appends to each unit before hashing it."""
    (salt,) = set(re.findall(r"""hashtext\("unit"::text \|\| '([^']*)'\)""", sql))
    return salt


def persons_of(release: Release, conn: psycopg.Connection) -> dict[tuple, dict]:
    """Per person and group, as the bounded SQL keeps them (`"pgshroud_bounded"`):
    {(unit, key...): {index in spec.found: value as text}}."""
    sql = release.sql
    head = sql[: sql.index(' SELECT 0 AS "kind"')]
    width = len(release.spec.query.keys)
    columns = ", ".join(['"unit"::text'] + [f'"k{i}"::text' for i in range(width)]
                        + [f'"m{i}"::text' for i in range(1, len(release.spec.found))])
    rows = raw_on(conn, f'{head} SELECT {columns} FROM "pgshroud_bounded"').rows
    kept = {}
    for row in rows:
        key = tuple(row[: 1 + width])
        assert key not in kept, key
        kept[key] = dict(enumerate(row[1 + width :], start=1))
    return kept


def allocated(release: Release, conn: psycopg.Connection) -> dict[tuple, tuple[int, int]]:
    """Per person and group the allocation gives a row (every group it
    keeps, c = 0 included): {(unit, key...): (n, c)}, from the query's own
    rows, persons and salt."""
    query, sql = release.spec.query, release.sql
    head = sql[: sql.index(', "pgshroud_bounded" AS (')]
    keys = [f'"k{i}"' for i in range(len(query.keys))]
    given = allocation(query, keys, salt_of(sql))
    columns = ", ".join(['"unit"::text'] + [f"{k}::text" for k in keys] + ['"n"', '"c"'])
    result = {}
    for row in raw_on(conn, f'{head} SELECT {columns} FROM ({given}) AS "given"').rows:
        key = tuple(row[:-2])
        assert key not in result, key
        result[key] = (int(row[-2]), int(row[-1]))
    return result


def picks_of(release: Release, conn: psycopg.Connection) -> dict[tuple, int]:
    """Per person and group the allocation gives a row (c = 0 included):
    the random rank of the group among the person's groups, `"pick"`."""
    query, sql = release.spec.query, release.sql
    head = sql[: sql.index(', "pgshroud_bounded" AS (')]
    keys = [f'"k{i}"' for i in range(len(query.keys))]
    given = allocation(query, keys, salt_of(sql))
    columns = ", ".join(['"unit"::text'] + [f"{k}::text" for k in keys] + ['"pick"'])
    return {tuple(row[:-1]): int(row[-1])
            for row in raw_on(conn, f'{head} SELECT {columns} FROM ({given}) AS "given"').rows}


def run_with_picks(release: Release, conn: psycopg.Connection) -> tuple[dict, dict[tuple, int]]:
    """The release's totals and, from the same picks, each person's "pick"
    per group as `"pgshroud_bounded"` keeps it ({(unit, key...): pick}).
    The picks are random, so the allocation is run once into a temporary
    table that the release's own SQL then reads in its place."""
    query, sql = release.spec.query, release.sql
    keys = [f'"k{i}"' for i in range(len(query.keys))]
    given = allocation(query, keys, salt_of(sql))
    inner = f'FROM ({given}) AS "given" WHERE "c" > 0'
    assert sql.count(inner) == 1
    head = sql[: sql.index(', "pgshroud_bounded" AS (')]
    conn.execute("DROP TABLE IF EXISTS pgshroud_given_fixed")
    conn.execute(f'CREATE TEMP TABLE pgshroud_given_fixed AS {head} SELECT * FROM ({given}) AS "given"')
    fixed = sql.replace(inner, 'FROM pgshroud_given_fixed AS "given" WHERE "c" > 0')
    got = totals(release, raw_on(conn, fixed))
    columns = ", ".join(['"unit"::text'] + [f"{k}::text" for k in keys] + ['"pick"'])
    bounded = fixed[: fixed.index(' SELECT 0 AS "kind"')]
    picks = {}
    for row in raw_on(conn, f'{bounded} SELECT {columns} FROM "pgshroud_bounded"').rows:
        assert tuple(row[:-1]) not in picks
        picks[tuple(row[:-1])] = int(row[-1])
    return got, picks


def check_picks(picks: dict[tuple, int], groups_of: dict[str, set]) -> None:
    """Each person's picks rank all their groups: 1 to the number of groups."""
    mine = defaultdict(dict)
    for (unit, *group), pick in picks.items():
        mine[unit][tuple(group) if len(group) > 1 else group[0]] = pick
    assert mine.keys() == groups_of.keys()
    for unit, ranked in mine.items():
        assert ranked.keys() == groups_of[unit], unit
        assert sorted(ranked.values()) == list(range(1, len(ranked) + 1)), (unit, ranked)


def people_per_group(picks: dict[tuple, int], max_groups: int) -> dict[tuple, int]:
    """People counted per group: those with rows kept there and pick <= max_groups."""
    counted = defaultdict(int)
    for (unit, *group), pick in picks.items():
        counted[tuple(group)] += pick <= max_groups
    return dict(counted)


# the allocation and the clamps, in Python

def starts(conn: psycopg.Connection, units, salt: str) -> dict[str, float]:
    """Each unit's start u in [0, 1), as the bounded SQL computes it (PostgreSQL's hashtext)."""
    units = sorted({str(unit) for unit in units})
    rows = conn.execute("SELECT u, (hashtext(u || %s) & 2147483647)::float8 / 2147483648 "
                        "FROM unnest(%s::text[]) AS u", (salt, units)).fetchall()
    return dict(rows)


def ranks(conn: psycopg.Connection, keys) -> dict[str, int]:
    """The keys' positions in PostgreSQL's order (the database's collation)."""
    rows = conn.execute("SELECT k FROM unnest(%s::text[]) AS k ORDER BY k", (sorted(set(keys)),)).fetchall()
    return {row[0]: i for i, row in enumerate(rows)}


def systematic(counts: dict[str, int], allowance: int, u: float, rank: dict[str, int]) -> dict[str, int]:
    """The rows one person keeps in each group: systematic sampling of the
    allowance over the groups in key order, in doubles as the SQL computes it."""
    n = sum(counts.values())
    share = min(1.0, allowance / n)
    kept, upto = {}, 0
    for group in sorted(counts, key=rank.__getitem__):
        before, upto = upto, upto + counts[group]
        kept[group] = math.floor(u + upto * share) - math.floor(u + before * share)
    return kept


def check_shares(counts: dict, kept: dict, allowance: int, what) -> None:
    """What systematic sampling promises, checked exactly: light users keep
    everything; a heavy user keeps floor or ceil of each group's share
    n_g T/n, and T in all."""
    n = sum(counts.values())
    assert kept.keys() == counts.keys(), what
    if n <= allowance:
        assert kept == counts, what
        return
    assert sum(kept.values()) == allowance, (what, counts, kept)
    for group, c in kept.items():
        share = Fraction(counts[group] * allowance, n)
        assert 0 <= c <= counts[group], (what, group, counts, kept)
        assert c in (math.floor(share), math.ceil(share)), (what, group, counts, kept)


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


def exact_decimal(x: Fraction) -> Decimal:
    digits = 0
    while (x * 10**digits).denominator != 1:
        digits += 1
        assert digits < 60, x
    return Decimal(f"{(x * 10**digits).numerator}e-{digits}")


def divided(conn: psycopg.Connection, triples) -> dict[tuple, Fraction]:
    """t * c / n for each (t, c, n), by PostgreSQL's numeric division as the
    bounded SQL computes a total scaled to the rows kept (it rounds to at
    least 16 significant digits)."""
    items = sorted(set(triples))
    if not items:
        return {}
    rows = conn.execute("SELECT (t * c / n)::text FROM unnest(%s::numeric[], %s::int8[], %s::int8[]) "
                        "WITH ORDINALITY AS x(t, c, n, i) ORDER BY i",
                        ([exact_decimal(t) for t, _, _ in items], [c for _, c, _ in items],
                         [n for _, _, n in items])).fetchall()
    return {item: Fraction(Decimal(text)) for item, (text,) in zip(items, rows)}


@dataclass(frozen=True)
class Measure:
    kind: str
    value: Callable | None = None  # row -> Decimal | None
    bounds: tuple[Fraction, Fraction] = (Fraction(0), Fraction(0))


def raw_total(measure: Measure, values: list, allowance: int) -> Fraction:
    """A person's total in a group before scaling, rows clamped as bounding.py does."""
    low, high = measure.bounds
    present = [v for v in values if v is not None]
    if measure.kind == "sum":
        # No row counts for more than a whole person may.
        return sum((clamp(v, allowance * min(low, 0), allowance * max(high, 0)) for v in present), Fraction(0))
    clamped = [clamp(v, low, high) for v in present]
    if measure.kind == "centred_sum":
        return sum((v - (low + high) / 2 for v in clamped), Fraction(0))
    if measure.kind == "clamped_sum":
        return sum(clamped, Fraction(0))
    if measure.kind == "sum_of_squares":
        return sum((v * v for v in clamped), Fraction(0))
    raise ValueError(measure.kind)


def limits(measure: Measure) -> tuple[Fraction, Fraction]:
    """Per value kept: how far one value may move the measurement either way."""
    low, high = measure.bounds
    if measure.kind == "centred_sum":
        return -(high - low) / 2, (high - low) / 2
    if measure.kind == "sum_of_squares":
        return Fraction(0), max(abs(low), abs(high)) ** 2
    return min(low, Fraction(0)), max(high, Fraction(0))


class Model:
    """Who keeps how many of their rows in which group, and what each
    person contributes, for rows grouped by `key` (None: ungrouped)."""

    def __init__(self, conn: psycopg.Connection, rows: list[tuple], key: Callable | None, allowance: int,
                 salt: str | None = None):
        self.conn, self.allowance = conn, allowance
        self.people: dict = defaultdict(lambda: defaultdict(list))  # pid -> group -> rows
        for row in rows:
            self.people[row[0]][() if key is None else (key(row),)].append(row)
        self.kept: dict[tuple, int] = {}  # (pid, group) -> c
        if key is None:
            for pid, groups in self.people.items():
                self.kept[(pid, ())] = min(len(groups[()]), allowance)
            return
        assert salt is not None
        u = starts(conn, self.people, salt)
        order = ranks(conn, {g for groups in self.people.values() for (g,) in groups})
        rank = {(g,): i for g, i in order.items()}
        for pid, groups in self.people.items():
            counts = {g: len(r) for g, r in groups.items()}
            kept = systematic(counts, allowance, u[str(pid)], rank)
            check_shares(counts, kept, allowance, pid)
            for g, c in kept.items():
                self.kept[(pid, g)] = c

    def contributions(self, measures: dict[int, Measure]) -> dict[tuple, dict[int, Fraction]]:
        """Per (pid, group) with rows kept: each measure's contribution."""
        pending, result = [], {}
        for (pid, group), c in self.kept.items():
            if c == 0:
                continue
            rows = self.people[pid][group]
            mine = result[(pid, group)] = {}
            for index, measure in measures.items():
                values = [measure.value(r) for r in rows] if measure.value else [None] * len(rows)
                v = sum(value is not None for value in values)
                if measure.kind == "rows":
                    mine[index] = Fraction(c)
                elif measure.kind == "count":
                    mine[index] = Fraction(min(v, c))
                else:
                    t = raw_total(measure, values, self.allowance)
                    pending.append((pid, group, index, (t, c, len(rows)), min(v, c), measure))
        scaled = divided(self.conn, [p[3] for p in pending])
        for pid, group, index, triple, kept_values, measure in pending:
            low, high = limits(measure)
            result[(pid, group)][index] = clamp(scaled[triple], kept_values * low, kept_values * high)
        return result

    def totals(self, measures: dict[int, Measure]) -> dict:
        """Per group: `units` (people with rows kept) and each measure's total."""
        groups: dict = defaultdict(lambda: defaultdict(Fraction))
        for (pid, group), values in self.contributions(measures).items():
            groups[group]["units"] += 1
            for index, value in values.items():
                groups[group][index] += value
        return {g: dict(v) for g, v in groups.items()}


def AMOUNT_OF(row):
    return number(row[3])


def SCORE_OF(row):
    return number(row[4])


def N_OF(row):
    return None if row[5] is None else Decimal(row[5])


def GRP(row):
    return row[1]


def BUCKET(row):
    return row[2]


def measures_of(release: Release, **columns: tuple[Callable, tuple[Fraction, Fraction]]) -> dict[int, Measure]:
    """Each of the release's measurements (but units and lists) as a Measure
    over its column's values in a row of ROWS (`columns`: name -> (value, bounds))."""
    result = {}
    for index, measurement in enumerate(release.spec.found[1:], start=1):
        if measurement.kind in ("rows",):
            result[index] = Measure("rows")
            continue
        (name,) = [c for c in columns if re.search(rf"\b{c}\b", measurement.argument or "")]
        value, bounds = columns[name]
        result[index] = Measure(measurement.kind, value, bounds)
    return result


def as_text_keys(contributions: dict) -> dict:
    """Model contributions keyed as `persons_of` keys them."""
    return {(str(pid), *group): values for (pid, group), values in contributions.items()}


# exact totals on the events database

def test_grouped_totals_are_each_persons_share_of_the_allowance(events_dsn, events_planner):
    """Public keys, nobody counted: no cap on groups, each person keeps a
    share of the allowance in each of their groups (WIDE's fifty groups
    included, though finalize drops them), values scaled and clamped."""
    release = released(events_planner, "SELECT grp, count(*), count(amount), sum(amount), avg(amount), "
                                       "variance(score), sum(score) FROM events GROUP BY grp")
    assert '"pick"' not in release.sql
    measures = measures_of(release, amount=(AMOUNT_OF, AMOUNT), score=(SCORE_OF, SCORE))
    assert sorted(m.kind for m in measures.values()) == ["centred_sum", "clamped_sum", "count", "count", "rows",
                                                         "sum", "sum", "sum_of_squares"]
    with psycopg.connect(events_dsn, autocommit=True) as conn:
        got = totals(release, raw_on(conn, release.sql))
        kept = persons_of(release, conn)
        model = Model(conn, ROWS, GRP, ALLOWANCE, salt_of(release.sql))
        want = model.totals(measures)
        mine = as_text_keys(model.contributions(measures))
    # Per person and group: exactly what the model keeps.
    assert kept.keys() == mine.keys()
    for person, values in mine.items():
        for index, value in values.items():
            assert Fraction(Decimal(kept[person][index])) == value, (person, release.spec.found[index])
    # Per group.
    assert got.keys() == want.keys()
    for group, values in want.items():
        assert got[group]["units"] == values["units"], group
        for index in measures:
            assert got[group][index] == values[index], (group, release.spec.found[index])
    # WIDE, heavy with 50 rows in 50 groups, keeps one row in exactly T of them.
    wide = {k: v for k, v in got.items() if k[0].startswith("x")}
    assert len(wide) == ALLOWANCE
    assert all(v["units"] == 1 and v[index_of(release, "rows")] == 1 for v in wide.values())
    # The people over the allowance keep exactly T rows in all.
    rows = index_of(release, "rows")
    assert kept[(str(VARIED), "a")][rows] == kept[(str(VARIED), "b")][rows] == "6"  # share 12/48, exactly
    for pid in (HEAVY, VARIED, *OVER):
        counts = {group[0]: int(kept[(str(pid), *group)][rows]) for (p, *group) in kept if p == str(pid)}
        assert sum(counts.values()) == ALLOWANCE, (pid, counts)


def test_lists_keep_the_values_of_the_rows_kept(events_dsn, events_planner):
    """Histograms keep least(v, c) of a person's values in a group, in a
    random order; distinct counts at most c of their distinct values."""
    release = released(events_planner, "SELECT grp, median(amount), count(DISTINCT n) FROM events GROUP BY grp")
    histogram, distinct = index_of(release, "histogram", "amount"), index_of(release, "distinct", "n")
    with psycopg.connect(events_dsn, autocommit=True) as conn:
        got = totals(release, raw_on(conn, release.sql))
        kept = persons_of(release, conn)
        model = Model(conn, ROWS, GRP, ALLOWANCE, salt_of(release.sql))
    assert kept.keys() == {(str(pid), *group) for (pid, group), c in model.kept.items() if c > 0}
    histograms, values_kept = defaultdict(int), defaultdict(set)
    for (pid, group), c in model.kept.items():
        if c == 0:
            continue
        rows = model.people[pid][group]
        mine = kept[(str(pid), *group)]
        amounts = [clamp(a, *AMOUNT) for a in map(AMOUNT_OF, rows) if a is not None]
        buckets = sorted(min(math.floor((a - AMOUNT[0]) * 64 / (AMOUNT[1] - AMOUNT[0])) + 1, 64) for a in amounts)
        listed = [] if mine[histogram] is None else [int(b) for b in mine[histogram].strip("{}").split(",")]
        assert len(listed) == min(len(amounts), c), (pid, group)
        remaining = list(buckets)
        for b in listed:
            remaining.remove(b)  # a sub-multiset of the person's own buckets
        histograms[group] += len(listed)
        ns = {Decimal(r[5]) for r in rows if r[5] is not None}
        listed = [] if mine[distinct] is None else [Decimal(x) for x in mine[distinct].strip("{}").split(",")]
        assert len(listed) == len(set(listed)) == min(len(ns), c, ALLOWANCE), (pid, group)
        assert set(listed) <= ns, (pid, group)
        values_kept[group] |= set(listed)
    assert len(kept[(str(VARIED), "a")][distinct].split(",")) == 6  # of its 24 values
    for group, count in histograms.items():
        assert sum(got[group]["hist"].get(histogram, {}).values()) == count, group
    for group, values in values_kept.items():
        assert got[group][distinct] == len(values), group


@pytest.mark.parametrize(("sql", "people_counted"), [
    ("SELECT grp, count(*) FROM events GROUP BY grp", False),
    ("SELECT bucket, count(*) FROM events GROUP BY bucket", True),  # partition selection
    ("SELECT grp, count(DISTINCT pid) FROM events GROUP BY grp", True),
])
def test_each_person_keeps_a_share_of_the_allowance_in_each_group(sql, people_counted, events_dsn, events_planner):
    """The allocation, person by person: every group of a person, with
    people counts or without, and in those exactly the systematic sampling
    of the allowance computed here. With people counts, each person's
    groups are ranked at random (read from the SQL), and each group counts
    the people with rows kept there and a rank <= max_groups: each person
    in at most max_groups groups."""
    release = released(events_planner, sql)
    assert ('"pick"' in release.sql) == people_counted
    key = BUCKET if "bucket" in sql else GRP
    people = defaultdict(lambda: defaultdict(int))
    for row in ROWS:
        people[str(row[0])][key(row)] += 1
    with psycopg.connect(events_dsn, autocommit=True) as conn:
        given = allocated(release, conn)
        u = starts(conn, {r[0] for r in ROWS}, salt_of(release.sql))
        rank = ranks(conn, {key(r) for r in ROWS})
        if people_counted:
            check_picks(picks_of(release, conn), {pid: set(counts) for pid, counts in people.items()})
            got, picks = run_with_picks(release, conn)
    for pid, counts in people.items():
        mine = {group: nc for (p, group), nc in given.items() if p == pid}
        assert mine.keys() == counts.keys(), pid
        assert {group: n for group, (n, _) in mine.items()} == counts, pid
        expected = systematic(counts, ALLOWANCE, u[pid], rank)
        assert {group: c for group, (_, c) in mine.items()} == expected, (pid, counts)
        check_shares(counts, expected, ALLOWANCE, pid)
    if people_counted:
        # The bounded rows are the groups with rows kept, their picks a subset of the person's ranks.
        assert picks.keys() == {key for key, (_, c) in given.items() if c > 0}
        counted = defaultdict(int)
        for (pid, _), pick in picks.items():
            counted[pid] += pick <= MAX_GROUPS
        assert max(counted.values()) <= MAX_GROUPS
        assert {g: v["units"] for g, v in got.items()} == people_per_group(picks, MAX_GROUPS)


def test_ungrouped_query_gives_each_person_the_whole_allowance(events_dsn, events_planner):
    release = released(events_planner, "SELECT count(*), sum(amount), avg(n), count(DISTINCT pid) FROM events")
    assert (release.spec.query.max_groups, release.spec.query.max_rows) == (1, ALLOWANCE)
    assert "hashtext" not in release.sql and '"pick"' not in release.sql
    measures = measures_of(release, amount=(AMOUNT_OF, AMOUNT), n=(N_OF, N))
    with psycopg.connect(events_dsn, autocommit=True) as conn:
        got = totals(release, raw_on(conn, release.sql))[()]
        want = Model(conn, ROWS, None, ALLOWANCE).totals(measures)[()]
    assert got["units"] == want["units"] == len({r[0] for r in ROWS})
    for index in measures:
        assert got[index] == want[index], release.spec.found[index]
    assert want[index_of(release, "rows")] == sum(min(sum(1 for r in ROWS if r[0] == pid), ALLOWANCE)
                                                  for pid in {r[0] for r in ROWS})


def test_nan_is_no_value_and_infinities_clamp(events_dsn, events_planner):
    """ODD's 7 rows (fewer than T, so all kept): amount NaN, Infinity,
    -Infinity, 1e100000, 5, NULL, NaN; score NaN, Infinity, -Infinity,
    1e308, 2, NULL, -1e308."""
    release = released(events_planner, "SELECT count(amount), sum(amount), avg(amount), sum(score), "
                                       f"stddev(score), median(amount) FROM events WHERE pid = {ODD}")
    raw = run_raw(events_dsn, release.sql)
    got = totals(release, raw)[()]
    assert got["units"] == 1
    assert got[index_of(release, "count", "amount")] == 4  # NaN and NULL are no values
    # Infinity and 1e100000 reach T x 10 as rows, -Infinity 0, and 5: the total
    # clamps to the 4 values' 4 x 10.
    assert got[index_of(release, "sum", "amount")] == 4 * 10
    assert got[index_of(release, "centred_sum", "amount")] == 5  # (10-5) + (0-5) + (10-5) + (5-5)
    # Infinity and 1e308 reach +60 as rows, -Infinity and -1e308 -60, and 2.
    assert got[index_of(release, "sum", "score")] == 2
    assert got[index_of(release, "sum_of_squares", "score")] == 25 + 25 + 25 + 4 + 25
    assert got[index_of(release, "count", "score")] == 5
    histogram = got["hist"][index_of(release, "histogram", "amount")]
    assert histogram == {64: 2, 1: 1, 33: 1}  # 10, 10, 0 and 5
    answer = release.spec.finalize(raw)
    assert len(answer.rows) == 1 and None not in answer.rows[0]
    for text in answer.rows[0]:
        assert "nan" not in text.lower() and "inf" not in text.lower(), answer.rows


def test_a_person_in_fifty_groups_counts_in_at_most_max_groups(events_dsn, events_planner):
    release = released(events_planner, "SELECT bucket, count(*), count(DISTINCT pid) FROM events GROUP BY bucket")
    assert release.spec.selection is not None  # bucket has no public domain
    assert release.spec.noises[release.spec.found[0]].sensitivity == MAX_GROUPS
    with psycopg.connect(events_dsn, autocommit=True) as conn:
        got, picks = run_with_picks(release, conn)
    rows = index_of(release, "rows")
    # WIDE's rows are allocated over all fifty buckets: one row in each of T of them.
    adversary = {k: v for k, v in got.items() if k[0].startswith("adv")}
    assert len(adversary) == ALLOWANCE
    assert all(v[rows] == 1 for v in adversary.values())
    # ... but WIDE is counted in at most max_groups of them, those ranked <= max_groups.
    wide = {tuple(group): pick for (unit, *group), pick in picks.items() if unit == str(WIDE)}
    assert len(wide) == ALLOWANCE
    assert {k: v["units"] for k, v in adversary.items()} == {g: int(p <= MAX_GROUPS) for g, p in wide.items()}
    assert sum(v["units"] for v in adversary.values()) <= MAX_GROUPS
    # HEAVY's seven buckets: rows kept in all seven, T in all, counted in exactly max_groups.
    heavy = {k: v for k, v in got.items() if k[0].startswith("h")}
    assert len(heavy) == 4 and all(v[rows] > 0 for v in heavy.values())
    assert sum(int(got[(b,)][rows]) for b in HEAVY_BUCKETS) > ALLOWANCE  # others in a, b, c
    assert sum(p <= MAX_GROUPS for (unit, *_), p in picks.items() if unit == str(HEAVY)) == MAX_GROUPS
    # Everyone counted in at most max_groups groups, and every group's count is its picks.
    assert {k: v["units"] for k, v in got.items()} == people_per_group(picks, MAX_GROUPS)
    counted = defaultdict(int)
    for (unit, *_), pick in picks.items():
        counted[unit] += pick <= MAX_GROUPS
    assert max(counted.values()) == MAX_GROUPS
    groups_per_person = defaultdict(set)
    for row in ROWS:
        groups_per_person[row[0]].add(row[2])
    assert sum(v["units"] for v in got.values()) <= sum(min(len(g), MAX_GROUPS) for g in groups_per_person.values())
    assert max(len(g) for g in groups_per_person.values()) == WIDE_GROUPS


def l1(before: dict, after: dict, index) -> Fraction:
    """The L1 distance over all groups between two results' totals of one measurement."""
    return sum((abs((before.get(g, {}).get(index) or 0) - (after.get(g, {}).get(index) or 0))
                for g in before.keys() | after.keys()), Fraction(0))


def test_a_person_with_thousands_of_rows_moves_the_answer_by_at_most_the_sensitivity(events_dsn, events_planner):
    """Neighbouring databases: with and without HEAVY (5000 rows over groups
    a, b and c, buckets a, b, c, h0 to h3; every value far out of bounds).
    The same bounded SQL (the same salt) runs on both, so everyone else keeps
    the same rows, and the differences are HEAVY's contribution: T rows in
    L1 over all groups, T times the largest bound for sums, people in at most
    max_groups groups (though their rows are allocated over all their
    groups); exactly the sensitivities the noise is scaled for."""
    queries = {
        "grp": released(events_planner, "SELECT grp, count(*), sum(n), sum(amount), sum(score) FROM events "
                                        "GROUP BY grp"),
        "bucket": released(events_planner, "SELECT bucket, count(*), sum(n) FROM events GROUP BY bucket"),
        "all": released(events_planner, "SELECT count(*), sum(n), sum(amount), count(DISTINCT pid) FROM events"),
    }
    with psycopg.connect(events_dsn) as conn:  # deleted, run, rolled back
        with_heavy = {name: totals(r, raw_on(conn, r.sql)) for name, r in queries.items()}
        u = starts(conn, [HEAVY], salt_of(queries["grp"].sql))[str(HEAVY)]
        rank = ranks(conn, HEAVY_GROUPS)
        bucket_u = starts(conn, [HEAVY], salt_of(queries["bucket"].sql))[str(HEAVY)]
        bucket_rank = ranks(conn, HEAVY_BUCKETS)
        conn.execute("DELETE FROM events WHERE pid = %s", (HEAVY,))
        without = {name: totals(r, raw_on(conn, r.sql)) for name, r in queries.items()}
        conn.rollback()

    def sensitivity(release, index):
        return release.spec.noises[release.spec.found[index]].sensitivity

    # Public keys: HEAVY keeps the systematic sample of T rows over a, b, c.
    grouped = queries["grp"]
    kept = systematic(HEAVY_GROUPS, ALLOWANCE, u, rank)
    assert sum(kept.values()) == ALLOWANCE
    rows, n_sum = index_of(grouped, "rows"), index_of(grouped, "sum", "n")
    amount, score = index_of(grouped, "sum", "amount"), index_of(grouped, "sum", "score")
    before, after = with_heavy["grp"], without["grp"]
    for grp, c in kept.items():
        assert before[(grp,)]["units"] - after[(grp,)]["units"] == (1 if c else 0), grp
        assert before[(grp,)][rows] - after[(grp,)][rows] == c, grp
        assert before[(grp,)][n_sum] - after[(grp,)][n_sum] == 100 * c, grp
        assert before[(grp,)][amount] - after[(grp,)][amount] == 10 * c, grp  # 1e6 clamps to the upper bound
        assert before[(grp,)][score] - after[(grp,)][score] == -5 * c, grp  # -1e308 to the lower
    assert l1(before, after, rows) == ALLOWANCE == sensitivity(grouped, rows)
    assert l1(before, after, n_sum) == ALLOWANCE * 100 == sensitivity(grouped, n_sum)
    assert l1(before, after, amount) == ALLOWANCE * 10 == sensitivity(grouped, amount)
    assert l1(before, after, score) == ALLOWANCE * 5 == sensitivity(grouped, score)

    # Partition selection: HEAVY's T rows are allocated over all seven
    # buckets (the systematic sample, as for public keys), but HEAVY counts
    # in max_groups of them only.
    selected = queries["bucket"]
    rows, n_sum = index_of(selected, "rows"), index_of(selected, "sum", "n")
    before = {k: v for k, v in with_heavy["bucket"].items() if not k[0].startswith("adv")}  # WIDE's picks vary
    after = {k: v for k, v in without["bucket"].items() if not k[0].startswith("adv")}
    heavy_buckets = defaultdict(int)
    for i in range(HEAVY_ROWS):
        heavy_buckets[HEAVY_BUCKETS[i % len(HEAVY_BUCKETS)]] += 1
    kept = systematic(heavy_buckets, ALLOWANCE, bucket_u, bucket_rank)
    assert sum(kept.values()) == ALLOWANCE and all(c > 0 for c in kept.values())
    for bucket, c in kept.items():
        assert before[(bucket,)][rows] - after.get((bucket,), {}).get(rows, 0) == c, bucket
        assert before[(bucket,)][n_sum] - (after.get((bucket,), {}).get(n_sum) or 0) == 100 * c, bucket
    changed = [g for g in before.keys() | after.keys() if before.get(g) != after.get(g)]
    assert {g[0] for g in changed} == set(HEAVY_BUCKETS), changed
    assert l1(before, after, "units") == MAX_GROUPS == selected.spec.noises[selected.spec.found[0]].sensitivity
    assert l1(before, after, rows) == ALLOWANCE == sensitivity(selected, rows)
    assert l1(before, after, n_sum) == ALLOWANCE * 100 == sensitivity(selected, n_sum)

    # Ungrouped: one group, the whole allowance.
    ungrouped = queries["all"]
    rows, n_sum = index_of(ungrouped, "rows"), index_of(ungrouped, "sum", "n")
    amount = index_of(ungrouped, "sum", "amount")
    before, after = with_heavy["all"][()], without["all"][()]
    assert before["units"] - after["units"] == 1
    assert before[rows] - after[rows] == ALLOWANCE == sensitivity(ungrouped, rows)
    assert before[n_sum] - after[n_sum] == ALLOWANCE * 100 == sensitivity(ungrouped, n_sum)
    assert before[amount] - after[amount] == ALLOWANCE * 10 == sensitivity(ungrouped, amount)


# the allocation on synthetic people

def synthetic_query(max_groups: int, max_rows: int, people_counted: bool) -> q.PrivateQuery:
    """A grouped query as the allocation sees it: one key, public or not."""
    key = q.Key(sql='"k"', type_name="text", domain=None if people_counted else ("x",))
    return q.PrivateQuery(source_sql="", unit_sql="", keys=(key,), aggregates=(), outputs=(),
                          max_groups=max_groups, max_rows=max_rows)


def allocate_synthetic(conn, people: dict[int, dict[str, int]], query: q.PrivateQuery, salt: str,
                       column: str = "c") -> dict:
    """Run the allocation on people given as {unit: {group: rows}}: {(unit, group): (n, c)}
    (or (n, pick) with column="pick")."""
    units, groups, counts = [], [], []
    for unit, mine in people.items():
        for group, n in mine.items():
            units.append(unit)
            groups.append(group)
            counts.append(n)
    given = allocation(query, ['"k0"'], salt)
    sql = ('WITH "pgshroud_persons" AS (SELECT * FROM unnest(%s::int8[], %s::text[], %s::int8[]) '
           f'AS "p"("unit", "k0", "n")) SELECT "unit", "k0", "n", "{column}" FROM ({given}) AS "given"')
    result = {}
    for unit, group, n, c in conn.execute(sql, (units, groups, counts)).fetchall():
        assert (unit, group) not in result
        result[(unit, group)] = (n, c)
    return result


@pytest.mark.parametrize(("max_groups", "max_rows"), [(3, 4), (5, 10), (1, 1), (2, 7), (40, 25)])
@pytest.mark.parametrize("people_counted", [False, True])
def test_systematic_sampling_on_synthetic_people(max_groups, max_rows, people_counted, events_dsn):
    """Four hundred people with 1 to 30 groups of 1 to 5000 rows each: the
    allocation the SQL gives each person is the one computed here, keeps
    floor or ceil of each group's share of the allowance, the allowance in
    all for a heavy user, everything for a light one, over all their groups;
    where people are counted, the groups are also ranked at random, 1 to
    their number, so each person counts in at most max_groups of them."""
    generator = random.Random(f"{max_groups} {max_rows} {people_counted}")
    allowance = max_groups * max_rows
    people = {}
    for unit in range(1, 401):
        width = generator.choice([1, 1, 2, 3, 5, 8, 13, 30])
        sizes = [1, 2, 3, 7, 50, 999, 5000]
        people[unit] = {f"g{generator.randrange(100):02d}": generator.choice(sizes) for _ in range(width)}
    salt = f"{generator.getrandbits(64):016x}"
    query = synthetic_query(max_groups, max_rows, people_counted)
    with psycopg.connect(events_dsn, autocommit=True) as conn:
        given = allocate_synthetic(conn, people, query, salt)
        picks = allocate_synthetic(conn, people, query, salt, "pick") if people_counted else {}
        u = starts(conn, people, salt)
        rank = ranks(conn, {g for mine in people.values() for g in mine})
    heavy = 0
    for unit, counts in people.items():
        mine = {group: nc for (p, group), nc in given.items() if p == unit}
        assert mine.keys() == counts.keys(), unit
        assert {group: n for group, (n, _) in mine.items()} == counts
        kept = {group: c for group, (_, c) in mine.items()}
        assert kept == systematic(counts, allowance, u[str(unit)], rank), (unit, counts)
        check_shares(counts, kept, allowance, unit)
        if people_counted:
            ranked = {group: pick for (p, group), (_, pick) in picks.items() if p == unit}
            assert ranked.keys() == counts.keys(), unit
            assert sorted(ranked.values()) == list(range(1, len(counts) + 1)), (unit, ranked)
            assert sum(kept[g] > 0 and ranked[g] <= max_groups for g in counts) <= max_groups, unit
        heavy += sum(counts.values()) > allowance
    assert heavy >= 50  # the case that matters is well covered


def test_systematic_sampling_keeps_each_groups_share_on_average(events_dsn):
    """Four thousand people with the same rows, 700, 300 and 1 in three
    groups, and an allowance of 4: each keeps 4 rows, and on average the
    groups' shares 2.8, 1.2 and 0.004 (no group loses more than another).
    The starts are a hash, so the test is deterministic; the tolerance is
    six standard errors of the mean (each count varies by at most 1/2)."""
    people = {unit: {"a": 700, "b": 300, "c": 1} for unit in range(1, 4001)}
    with psycopg.connect(events_dsn, autocommit=True) as conn:
        given = allocate_synthetic(conn, people, synthetic_query(2, 2, False), "0123456789abcdef")
    means = {g: Fraction(sum(c for (_, group), (_, c) in given.items() if group == g), len(people))
             for g in ("a", "b", "c")}
    for unit in people:
        assert sum(given[(unit, g)][1] for g in ("a", "b", "c")) == 4
    for group, share in {"a": Fraction(28, 10), "b": Fraction(12, 10), "c": Fraction(4, 1001)}.items():
        assert abs(means[group] - share) <= 6 * Fraction(1, 2) / math.sqrt(len(people)), (group, means)


def test_the_allowance_holds_for_people_with_millions_of_rows(events_dsn):
    """The allocation computes floor(u + rows so far x share) in doubles;
    the sum of a person's counts telescopes to floor(u + n x share) -
    floor(u), which must not exceed the allowance however many rows the
    person has. A double holds u + x exactly only while x < 2**22 (u has 31
    bits after the point), so a person with 2**22 rows or more, under an
    allowance as large, can round u + n x share up to the next integer and
    keep one row more than the allowance (or than they have). The people
    here have 2**40 or 2**41 rows in one group: the starts that round up
    (u > 1 - 2**-13) are found among 400000 units."""
    allowance = 2**40
    query = synthetic_query(1, allowance, False)
    salt = "0123456789abcdef"
    with psycopg.connect(events_dsn, autocommit=True) as conn:
        units = [unit for (unit,) in conn.execute(
            "SELECT u FROM generate_series(1, 400000) AS u "
            "WHERE (hashtext(u::text || %s) & 2147483647) >= 2147483648 - 262144", (salt,))]
        assert len(units) >= 10  # about 49 of them
        # Alternately heavy (share 1/2) and light (share 1, all rows kept).
        people = {unit: {"g": (2 - i % 2) * allowance} for i, unit in enumerate(units)}
        given = allocate_synthetic(conn, people, query, salt)
    too_many = {unit: c for (unit, _), (n, c) in given.items() if c > min(n, allowance)}
    assert not too_many, f"{len(too_many)} of {len(people)} people keep more than min(n, allowance) rows: {too_many}"


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
        (("SELECT CASE WHEN n < -2147483648 THEN 'impossible' ELSE 'possible' END AS kind, count(*), sum(amount) "
         "FROM events GROUP BY 1"), {"impossible", "possible"}),
        ("SELECT grp, count(DISTINCT pid), sum(amount) FROM events WHERE pid < 0 GROUP BY grp", set(DOMAIN)),
    ]:
        release = released(events_planner, sql)
        answer = release.spec.finalize(run_raw(events_dsn, release.sql))
        assert {row[0] for row in answer.rows} == groups, sql
        assert all(value is not None for row in answer.rows for value in row), answer.rows


def test_finalize_answers_every_public_group_and_only_those(events_dsn, events_planner):
    release = released(events_planner, "SELECT grp, count(*), avg(amount), sum(n) FROM events GROUP BY grp")
    raw = run_raw(events_dsn, release.sql)
    assert ("d",) not in totals(release, raw)
    assert any(k[0].startswith("x") for k in totals(release, raw))  # WIDE's groups, in the raw totals only
    answer = release.spec.finalize(raw)
    assert [c.name for c in answer.columns] == ["grp", "count", "avg", "sum"]
    assert sorted(row[0] for row in answer.rows) == list(DOMAIN)  # d with a noisy value, no x..
    for row in answer.rows:
        assert None not in row, row
        assert int(row[1]) >= 0
        assert 0 <= Decimal(row[2]) <= 10


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
    """The demo's patients, some with hundreds of visits in up to fifteen
    departments: exact totals, ungrouped, by sex (one group per patient)
    and by department (public, so no cap on groups: each patient's
    allowance shared over all their departments)."""
    visits = health_policy.protected_tables["public.visits"]
    patients = health_policy.protected_tables["public.patients"]
    groups = max(visits.contribution.max_groups_per_unit, patients.contribution.max_groups_per_unit)
    per_group = max(visits.contribution.max_rows_per_group, patients.contribution.max_rows_per_group)
    allowance = groups * per_group
    cost = tuple(Fraction(b) for b in visits.columns["cost"].bounds)
    stay = tuple(Fraction(b) for b in visits.columns["length_of_stay"].bounds)
    planner = lambda sql: plan_one(sql, health_policy, health_catalog_for_bounding)
    cost_of, stay24_of = (lambda r: Decimal(r[3])), (lambda r: Decimal(r[4] * 24))
    with psycopg.connect(health_db, autocommit=True) as conn:
        data = conn.execute("SELECT v.patient_id, p.sex, v.department, v.cost::text, v.length_of_stay "
                            "FROM visits v JOIN patients p USING (patient_id)").fetchall()
        visits_per_patient = defaultdict(int)
        for row in data:
            visits_per_patient[row[0]] += 1
        assert max(visits_per_patient.values()) > allowance  # heavy users, whose rows are sampled

        release = released(planner, "SELECT count(*), sum(cost), avg(length_of_stay * 24) FROM visits")
        got = totals(release, raw_on(conn, release.sql))[()]
        measures = {index_of(release, "rows"): Measure("rows"),
                    index_of(release, "sum"): Measure("sum", cost_of, cost),
                    index_of(release, "centred_sum"): Measure("centred_sum", stay24_of, (stay[0] * 24, stay[1] * 24))}
        want = Model(conn, data, None, allowance).totals(measures)[()]
        for index in measures:
            assert got[index] == want[index], release.spec.found[index]

        for sql, key in [("SELECT sex, count(*), sum(cost) FROM patients JOIN visits USING (patient_id) GROUP BY sex",
                          lambda r: r[1]),
                         ("SELECT department, count(*), sum(cost) FROM visits GROUP BY department", lambda r: r[2])]:
            release = released(planner, sql)
            assert '"pick"' not in release.sql and release.spec.query.allowance == allowance
            got = totals(release, raw_on(conn, release.sql))
            measures = {index_of(release, "rows"): Measure("rows"),
                        index_of(release, "sum"): Measure("sum", cost_of, cost)}
            want = Model(conn, data, key, allowance, salt_of(release.sql)).totals(measures)
            assert got.keys() == want.keys(), sql
            for group, values in want.items():
                assert got[group]["units"] == values["units"], (sql, group)
                for index in measures:
                    assert got[group][index] == values[index], (sql, group, release.spec.found[index])

        # Departments with people counted: rows allocated over all of a
        # patient's departments, exactly as without people counts; each
        # patient counted in at most max_groups departments.
        release = released(planner, "SELECT department, count(DISTINCT patient_id), count(*) FROM visits "
                                    "GROUP BY department")
        assert 'count(*) FILTER (WHERE "pick" <= ' in release.sql
        given = allocated(release, conn)
        got, picks = run_with_picks(release, conn)
        model = Model(conn, data, lambda r: r[2], allowance, salt_of(release.sql))
        want = model.totals({index_of(release, "rows"): Measure("rows")})
    departments = defaultdict(set)
    for row in data:
        departments[str(row[0])].add(row[2])
    assert {(str(p), *g): c for (p, g), c in model.kept.items()} == {k: c for k, (_, c) in given.items()}
    assert picks.keys() == {k for k, (_, c) in given.items() if c > 0}
    assert got.keys() == want.keys()
    rows = index_of(release, "rows")
    assert {g: v[rows] for g, v in got.items()} == {g: v[rows] for g, v in want.items()}
    assert {g: v["units"] for g, v in got.items()} == people_per_group(picks, groups)
    assert any(len(mine) > groups for mine in departments.values())
    for patient, mine in departments.items():
        assert {g for (p, g) in given if p == patient} == mine, patient
        assert sum(c for (p, _), (_, c) in given.items() if p == patient) <= allowance, patient
        assert sum(pick <= groups for (p, _), pick in picks.items() if p == patient) <= groups, patient


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
