"""A grammar-based fuzzer for the row expressions of private queries: no
expression the planner accepts may fail on any row.

An error raised while PostgreSQL evaluates a row reveals that a row with
such a value exists, outside the noise (issue 9: a cast to numeric(3,0)
failed exactly when one patient had a Psychiatry visit). The grammar below
generates the constructs the private expression checker allows, and some
it refuses, over the demo tables' columns, a protected table of the other
types it knows (floats, unconstrained numeric, smallint, varchar(n),
char(n), timestamp) and a public table read as stored, in WHERE, in GROUP
BY keys, inside aggregates, in FILTER and in a subquery in FROM. The
queries the planner turns into a Release have their bounded SQL run against
tables of adversarial rows: NaN and infinities, numerics of 1e131071 and
1e-16383, the earliest and latest dates and timestamps and 'infinity',
empty and 1 MB strings, a trailing backslash, NULL in every column. Each
runs under three time zones, and prepared under one time zone then executed
under another (the clamps of timestamps are read when the statement is
parsed). None may fail, unless it fails as well without any row (a literal
that is not a date fails for everyone, and tells nothing).

Random compositions reach a given construct on a given column only by
chance, so every construct of the grammar is also applied once to every
column (and pair of columns) of every source.

Derandomized, so CI sees the same examples every run.
"""

from __future__ import annotations

import asyncio
import functools
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.string import TextLoader

from pgshroud.policies.loader import load_policy
from pgshroud.proxy.commands.setup import run_setup
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.rewriter import PlanContext, plan
from pgshroud.rewriter.plans import Release
from pgshroud.rewriter.private.analysis import PrivateAnalyser
from pgshroud.rewriter.statements import parse_statement, split_statements

REPO = Path(__file__).resolve().parents[2]
SESSION = {"epsilon": "1", "delta": "1e-6"}
# East and west of UTC by 99 hours: a POSIX zone PostgreSQL accepts.
TIME_ZONES = ("UTC", "<+99>-99", "<-99>+99")
# (parsed under, executed under) for a prepared statement: the clamps of
# timestamps, read when it is parsed, fall 198 hours earlier in local time.
PREPARED_ZONES = (("<+99>-99", "<-99>+99"),)
MAX_EXAMPLES = 400

# A table of the types the checker knows beyond the demo's, as protected as visits.
READINGS = """
CREATE TABLE readings (
    patient_id integer,
    small smallint,
    big bigint,
    amount numeric,
    ratio double precision,
    level real,
    label varchar(8),
    flag char(4),
    seen timestamp,
    day date
)
"""
# A public table, read as stored (no clamps), joined to readings on its key.
CALENDAR = """
CREATE TABLE calendar (
    day date PRIMARY KEY,
    stamp timestamp,
    moment timestamptz,
    figure numeric,
    ratio double precision,
    note text,
    until date
)
"""
READINGS_POLICY = {
    "privacy_unit": {"column": "patient_id", "references": "patients.patient_id"},
    "contribution": {"max_groups_per_unit": 5, "max_rows_per_group": 10},
    "columns": {"patient_id": "pseudonym", **{name: "none" for name in (
        "small", "big", "amount", "ratio", "level", "label", "flag", "seen", "day")}},
}

MEGABYTE = "'" + "a" * (1 << 20) + "'"
TEXTS = ["NULL", "''", MEGABYTE, "'Psychiatry'", "'\\'", "'%_\\%'", "'é'", "'0'", "'1e400'", "'garbage'"]
# Masks of text (ssn, zip3, ...) run regular expressions that take over a
# second on a megabyte, for every row it is joined to: a matter of time, not
# of errors, so masked columns get strings of 4 kB.
MASKED_TEXTS = [f"'{'9' * 4096}'" if text == MEGABYTE else text for text in TEXTS]
# Values per column type; every table cycles through each column's list.
ADVERSARIAL = {
    "unit": ["1", "2", "3", "1", "2", "NULL", "3", "1", "2", "3", "1", "2", "3", "1", "2", "3"],
    "integer": ["NULL", "0", "-1", "1", "2147483647", "-2147483648", "30", "-30"],
    "bigint": ["NULL", "0", "9223372036854775807", "-9223372036854775808", "1"],
    "smallint": ["NULL", "0", "32767", "-32768", "1"],
    "numeric(10,2)": ["NULL", "'NaN'", "99999999.99", "-99999999.99", "0.01", "-0.01", "0", "5000"],
    "numeric": ["NULL", "'NaN'", "'Infinity'", "'-Infinity'", "1e130", "-1e130", "1e-130", "'1e131071'",
                "'-1e131071'", "'1e-16383'", "0"],
    "double precision": ["NULL", "'NaN'", "'Infinity'", "'-Infinity'", "1.7976931348623157e308",
                         "-1.7976931348623157e308", "5e-324", "-5e-324", "0", "'-0'"],
    "real": ["NULL", "'NaN'", "'Infinity'", "'-Infinity'", "3.4028235e38", "-3.4028235e38", "1.4e-45", "0"],
    "date": ["NULL", "'infinity'", "'-infinity'", "'4713-11-24 BC'", "'5874897-12-31'", "'2024-02-29'",
             "'0001-01-01'", "'294276-12-31'"],
    "timestamp": ["NULL", "'infinity'", "'-infinity'", "'4713-11-24 00:00:00 BC'", "'294276-12-31 23:59:59.999999'",
                  "'2024-02-29 12:34:56.789'", "'0001-01-01 00:00:00'"],
    "timestamptz": ["NULL", "'infinity'", "'-infinity'", "'4713-11-24 00:00:00+00 BC'",
                    "'294276-12-31 23:59:59.999999+00'", "'2024-02-29 12:34:56.789+00'", "'0001-01-01 00:00:00+00'"],
    "text": TEXTS,
    "masked text": MASKED_TEXTS,
    # The public table's key: unique, and short enough for its index.
    "key": ["''", f"'{'a' * 2000}'", "'Psychiatry'", "'\\'", "'%_\\%'", "'é'", "'0'", "'1e400'", "'garbage'",
            "' '", "'X'", "'F32.9'", "'Z99'", "'A00'", "'B'", "'C'"],
    # readings.day: fourteen distinct dates once read through the clamps...
    "reading day": ["'-infinity'", "'4713-11-24 BC'", "'5874897-12-31'", "'2024-02-29'", "'0001-01-01'",
                    "'1970-01-01'", "'2000-01-01'", "'1999-12-31'", "'2024-03-01'", "'1066-10-14'", "'9999-12-31'",
                    "'1900-01-01'", "'2100-01-01'", "'0500-06-15'", "'3000-01-01'", "'infinity'"],
    # ...each the key of a calendar row, so that every row of the public table is joined.
    "day key": ["'-infinity'", "'4700-01-01 BC'", "'294000-01-01'", "'2024-02-29'", "'0001-01-01'",
                "'1970-01-01'", "'2000-01-01'", "'1999-12-31'", "'2024-03-01'", "'1066-10-14'", "'9999-12-31'",
                "'1900-01-01'", "'2100-01-01'", "'0500-06-15'", "'3000-01-01'", "'infinity'"],
    "varchar(8)": ["NULL", "''", "'abcdefgh'", "'\\'", "'Psych'"],
    "char(4)": ["NULL", "''", "'abcd'", "'\\'"],
}
ROWS = 16
COLUMNS = {
    "patients": [("patient_id", "unit"), ("name", "masked text"), ("ssn", "masked text"), ("email", "masked text"),
                 ("phone", "masked text"), ("birth_date", "date"), ("sex", "text"), ("zip", "masked text"),
                 ("city", "masked text"), ("state", "text")],
    "visits": [("visit_id", "bigint"), ("patient_id", "unit"), ("visit_date", "date"), ("diagnosis_code", "text"),
               ("department", "text"), ("cost", "numeric(10,2)"), ("length_of_stay", "integer")],
    "labs": [("lab_id", "bigint"), ("patient_id", "unit"), ("test", "text"), ("value", "numeric(10,2)"),
             ("taken_at", "timestamptz"), ("unit", "text")],
    "diagnoses": [("code", "key"), ("description", "text")],
    "calendar": [("day", "day key"), ("stamp", "timestamp"), ("moment", "timestamptz"), ("figure", "numeric"),
                 ("ratio", "double precision"), ("note", "text"), ("until", "date")],
    "readings": [("patient_id", "unit"), ("small", "smallint"), ("big", "bigint"), ("amount", "numeric"),
                 ("ratio", "double precision"), ("level", "real"), ("label", "varchar(8)"), ("flag", "char(4)"),
                 ("seen", "timestamp"), ("day", "reading day")],
}


def _adversarial_rows(table: str) -> str:
    columns = COLUMNS[table]
    rows = []
    for i in range(ROWS):
        # Shifted per column so that extremes meet each other in one row.
        values = [ADVERSARIAL[kind][i] if kind in ("unit", "key", "reading day", "day key") else
                  ADVERSARIAL[kind][(i + j) % len(ADVERSARIAL[kind])] for j, (_, kind) in enumerate(columns)]
        rows.append(f"({', '.join(values)})")
    return f"INSERT INTO {table} ({', '.join(c for c, _ in columns)}) VALUES {', '.join(rows)}"


def _database(pg, name: str, rows: bool) -> str:
    """The demo schema without its NOT NULL and CHECK constraints, plus
    `readings` and `calendar`, with adversarial rows or none; pgshroud set up in it."""
    pg.execute(f"DROP DATABASE IF EXISTS {name}")
    pg.execute(f"CREATE DATABASE {name}")
    dsn = pg.admin_dsn(name)
    schema = (REPO / "proxy" / "commands" / "demo_data" / "schema.sql").read_text()
    schema = re.sub(r"\s+NOT NULL", "", schema)
    schema = re.sub(r"\s+CHECK \([^)]*\)\)", "", schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema)
        conn.execute(READINGS)
        conn.execute(CALENDAR)
        for table in COLUMNS if rows else ():
            conn.execute(_adversarial_rows(table))
        # Public tables are joined on their keys.
        conn.execute("ALTER TABLE diagnoses ADD PRIMARY KEY (code)")
    assert run_setup(dsn, key_env=None, key_file=None, rotate_key=False, grant_to=[], out=io.StringIO()) == 0
    return dsn


@dataclass
class Fuzz:
    """The planner's context and connections to the adversarial and the empty database."""

    context: PlanContext = field(repr=False)
    adversarial: psycopg.Connection = field(repr=False)
    empty: psycopg.Connection = field(repr=False)


@pytest.fixture(scope="module")
def fuzz(pg, tmp_path_factory) -> Iterator[Fuzz]:
    """The analyst of the demo's policy, with `readings` protected like visits and `calendar` public."""
    adversarial, empty = _database(pg, "fuzz", rows=True), _database(pg, "fuzz_empty", rows=False)
    policy = yaml.safe_load((REPO / "policies" / "examples" / "healthcare.yaml").read_text())
    policy["protected_tables"]["readings"] = READINGS_POLICY
    policy["public_tables"].append("calendar")
    path = tmp_path_factory.mktemp("fuzz") / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    loaded = load_policy(path)
    catalog = asyncio.run(read_catalog(adversarial))
    context = PlanContext(user="analyst", policy=loaded, role=loaded.role_for("analyst"), catalog=catalog,
                          privacy=SESSION)
    with psycopg.connect(adversarial, autocommit=True) as rows, psycopg.connect(empty, autocommit=True) as none:
        for conn in (rows, none):
            conn.execute("SET statement_timeout = '30s'")
            # Dates before year 1 have no Python value: read them as text.
            for name in ("date", "timestamp", "timestamptz", "interval"):
                conn.adapters.register_loader(name, TextLoader)
        yield Fuzz(context, rows, none)


# the grammar

class Columns:
    """The columns a generated expression may read, by kind."""

    def __init__(self, numbers: list[str], texts: list[str], dates: list[str], timestamps: list[str]) -> None:
        self.numbers, self.texts, self.dates, self.timestamps = numbers, texts, dates, timestamps


SOURCES = {
    "visits v JOIN patients p USING (patient_id)": Columns(
        ["v.cost", "v.length_of_stay", "v.visit_id", "p.patient_id"],
        ["v.department", "v.diagnosis_code", "p.name", "p.zip", "p.sex", "p.ssn"],
        ["v.visit_date", "p.birth_date"], []),
    "labs l": Columns(["l.value", "l.lab_id"], ["l.test", "l.unit"], [], ["l.taken_at"]),
    "readings r": Columns(["r.small", "r.big", "r.amount", "r.ratio", "r.level"], ["r.label", "r.flag"],
                          ["r.day"], ["r.seen"]),
    "readings r JOIN calendar c ON c.day = r.day": Columns(
        ["r.amount", "r.ratio", "c.figure", "c.ratio"], ["r.label", "c.note"], ["r.day", "c.day", "c.until"],
        ["r.seen", "c.stamp", "c.moment"]),
    "visits v JOIN diagnoses d ON d.code = v.diagnosis_code": Columns(
        ["v.cost", "v.length_of_stay"], ["d.description", "d.code", "v.department"], ["v.visit_date"], []),
}
DERIVED = Columns(["d.x"], ["d.s"], ["d.w"], [])

NUMBER_LITERALS = ["0", "1", "-1", "7", "2.5", "-0.001", "1000", "99999", "2147483647", "1e99", "-1e99", "1e-99",
                   "0.000001", "32767"]
DIVISORS = ["2", "-3", "0.5", "7", "1e-50", "1e50", "0.001"]
NUMBER_TYPES = ["numeric(3,0)", "numeric(5,2)", "numeric(12,2)", "numeric(20,4)", "decimal(7,3)", "numeric(3)",
                "numeric", "integer", "smallint", "bigint", "real", "double precision", "float(24)"]
TEXT_LITERALS = ["''", "'Psychiatry'", "'a'", "'\\'", "'Z'"]
TEXT_TYPES = ["text", "varchar(3)", "char(2)", "varchar", "character varying(1)"]
TIME_TYPES = ["date", "timestamp", "timestamptz", "timestamp(0)", "timestamptz(2)", "timestamp(3) with time zone"]
TIME_LITERALS = ["DATE '2024-01-01'", "TIMESTAMP '2024-01-01 10:00'", "TIMESTAMPTZ '2024-01-01 10:00+02'",
                 "'294276-12-31'::timestamp", "'infinity'::date", "'4713-11-24 BC'::date", "'2024-06-01'"]
# One value per statement, computed upstream in the session's time zone.
NOW = ["now()", "current_date", "current_timestamp", "localtimestamp", "current_timestamp(0)", "localtimestamp(2)",
       "statement_timestamp()", "transaction_timestamp()"]
INTERVALS = ["interval '12 months'", "interval '-30 day'", "interval '1 year 2 months'", "interval '1:30:00'",
             "interval '300000 years'", "'30 days'::interval", "interval '10 days'", "interval '4000 years'",
             "interval '2 weeks 3 hours'"]
DAYS = ["1", "-30", "10", "365", "100000000", "2147483647", "-2147483648"]
TO_CHAR_FORMATS = ["'YYYY-MM'", "'YYYY-\"Q\"Q'", "'IYYY-IW'", "'FMMonth YYYY'", "'Dy DD Mon YYYY HH24:MI:SS'",
                   "'J'", "'YYYY-MM-DD TZ'", "'999.99'"]
INTERVAL_FIELDS = ["year", "month", "day", "hour", "epoch", "quarter", "decade", "week"]
TRUNC_UNITS = ["microseconds", "second", "minute", "hour", "day", "week", "month", "quarter", "year", "decade",
               "century", "millennium"]
FIELDS = ["year", "month", "day", "dow", "isodow", "doy", "quarter", "week", "decade", "century", "millennium",
          "isoyear", "epoch", "julian", "hour", "minute", "second", "milliseconds", "microseconds"]
PATTERNS = ["'%a%'", "'Psych%'", "'%%_%'", "'a\\%'", "'%'", "'" + "%a" * 20 + "'", "'\\\\'", "'_'",
            "'Psych\\'", "'%\\'"]
COMPARE = ["=", "<>", "<", "<=", ">", ">=", "IS DISTINCT FROM"]


@functools.cache
def grammar(columns: Columns, depth: int) -> dict[str, st.SearchStrategy[str]]:
    """Strategies for number, text, time and boolean expressions up to `depth` levels deep."""
    # Columns as often as literals: only values read from rows can make an error depend on data.
    number_leaves = st.one_of(st.sampled_from(columns.numbers), st.sampled_from(NUMBER_LITERALS))
    text_leaves = st.one_of(st.sampled_from(columns.texts), st.sampled_from(TEXT_LITERALS))
    time_leaves = st.one_of(st.sampled_from(columns.dates + columns.timestamps), st.sampled_from(TIME_LITERALS),
                            st.sampled_from(NOW))
    if depth == 0:
        comparison = st.builds(lambda a, op, b: f"{a} {op} {b}", number_leaves, st.sampled_from(COMPARE), number_leaves)
        return {"number": number_leaves, "text": text_leaves, "time": time_leaves,
                "bool": st.one_of(comparison, st.just("TRUE"))}
    inner = grammar(columns, depth - 1)
    n, s, d, b = inner["number"], inner["text"], inner["time"], inner["bool"]
    dates = st.sampled_from(columns.dates) if columns.dates else d
    # Casts and functions mostly read columns: of literals they are refused or fail whatever the rows.
    t = st.one_of(st.sampled_from(columns.dates + columns.timestamps), d)
    m = st.one_of(st.sampled_from(columns.numbers), n)
    numbers = st.one_of(
        number_leaves,
        st.builds(lambda x, op, y: f"({x} {op} {y})", n, st.sampled_from(["+", "-", "*"]), n),
        st.builds(lambda x, op, c: f"({x} {op} {c})", n, st.sampled_from(["/", "%"]), st.sampled_from(DIVISORS)),
        st.builds(lambda f, x: f"{f}({x})", st.sampled_from(["-", "abs", "round", "trunc", "floor", "ceil"]), n),
        st.builds(lambda f, x, k: f"{f}({x}, {k})", st.sampled_from(["round", "trunc"]), n,
                  st.sampled_from(["0", "2", "-2", "40"])),
        st.builds(lambda x, ty: f"CAST({x} AS {ty})", m, st.sampled_from(NUMBER_TYPES)),
        st.builds(lambda x, lo, hi: f"least(greatest({x}, {lo}), {hi})", m, st.sampled_from(["-999", "0", "-1e50"]),
                  st.sampled_from(["999", "99.994", "1e50", "32767", "999.4999999999999999"])),
        st.builds(lambda f, x, y: f"{f}({x}, {y})", st.sampled_from(["least", "greatest", "coalesce", "nullif"]), n, n),
        st.builds(lambda c, x, y: f"CASE WHEN {c} THEN {x} ELSE {y} END", b, n, n),
        st.builds(lambda c, x: f"CASE WHEN {c} THEN {x} END", b, n),
        st.builds(lambda f, x: f"extract({f} FROM {x})", st.sampled_from(FIELDS), t),
        st.builds(lambda x: f"length({x})", s),
        st.builds(lambda x, y: f"({x} - {y})", dates, dates),
        st.builds(lambda x, ty: f"CAST({x} AS {ty})", st.sampled_from(columns.texts),
                  st.sampled_from(["integer", "numeric"])),
        st.builds(lambda f, x, ty: f"CAST(extract({f} FROM {x}) AS {ty})", st.sampled_from(FIELDS), t,
                  st.sampled_from(["integer", "bigint", "smallint"])),
        st.builds(lambda f, x: f"date_part('{f}', {x})", st.sampled_from(FIELDS), t),
        st.builds(lambda f, x: f"extract({f} FROM age({x}))", st.sampled_from(INTERVAL_FIELDS), t),
        st.builds(lambda f, x, y: f"extract({f} FROM age({x}, {y}))", st.sampled_from(INTERVAL_FIELDS), t, t),
    )
    texts = st.one_of(
        text_leaves,
        st.builds(lambda f, x: f"{f}({x})", st.sampled_from(["lower", "upper"]), s),
        st.builds(lambda x, ty: f"CAST({x} AS {ty})", st.one_of(s, n, d), st.sampled_from(TEXT_TYPES)),
        st.builds(lambda x, y: f"coalesce({x}, {y})", s, s),
        st.builds(lambda c, x, y: f"CASE WHEN {c} THEN {x} ELSE {y} END", b, s, s),
        st.builds(lambda x, f: f"to_char({x}, {f})", t, st.sampled_from(TO_CHAR_FORMATS)),
    )
    times = st.one_of(
        time_leaves,
        st.builds(lambda u, x: f"date_trunc('{u}', {x})", st.sampled_from(TRUNC_UNITS), t),
        st.builds(lambda u, x, z: f"date_trunc('{u}', {x}, {z})", st.sampled_from(TRUNC_UNITS), t,
                  st.sampled_from(["'UTC'", "'Mars/Olympus'"])),
        st.builds(lambda x, ty: f"CAST({x} AS {ty})", t, st.sampled_from(TIME_TYPES)),
        st.builds(lambda f, x, y: f"{f}({x}, {y})", st.sampled_from(["least", "greatest", "coalesce"]), d, d),
        st.builds(lambda c, x, y: f"CASE WHEN {c} THEN {x} ELSE {y} END", b, d, d),
        st.builds(lambda x: f"CAST({x} AS date)", st.sampled_from(columns.texts)),
        st.builds(lambda x, op, i: f"({x} {op} {i})", t, st.sampled_from(["+", "-"]), st.sampled_from(INTERVALS)),
        st.builds(lambda x, op, n: f"({x} {op} {n})", dates, st.sampled_from(["+", "-"]), st.sampled_from(DAYS)),
        st.builds(lambda y, m, day: f"make_date({y}, {m}, {day})",
                  st.sampled_from(["2024", "CAST(extract(year FROM now()) AS integer)", "0", "-4800"]),
                  st.sampled_from(["1", "12", "2", "13"]), st.sampled_from(["1", "28", "29", "31"])),
    )
    bools = st.one_of(
        st.builds(lambda x, op, y: f"{x} {op} {y}", n, st.sampled_from(COMPARE), n),
        st.builds(lambda x, op, y: f"{x} {op} {y}", s, st.sampled_from(COMPARE), s),
        st.builds(lambda x, op, y: f"{x} {op} {y}", d, st.sampled_from(COMPARE), d),
        st.builds(lambda x, op, p: f"{x} {op} {p}", s, st.sampled_from(["LIKE", "ILIKE", "NOT LIKE"]),
                  st.sampled_from(PATTERNS)),
        st.builds(lambda x, op: f"{x} {op}", st.one_of(n, s, d), st.sampled_from(["IS NULL", "IS NOT NULL"])),
        st.builds(lambda x, lo, hi: f"{x} BETWEEN {lo} AND {hi}", n, n, n),
        st.builds(lambda x, a, c: f"{x} IN ({a}, {c}, 5)", n, n, n),
        st.builds(lambda x, y, op: f"({x} {op} {y})", b, b, st.sampled_from(["AND", "OR"])),
        st.builds(lambda x: f"NOT ({x})", b),
        st.builds(lambda x, op, i: f"age({x}) {op} {i}", t, st.sampled_from(["<", ">="]),
                  st.sampled_from(INTERVALS)),
    )
    return {"number": numbers, "text": texts, "time": times, "bool": bools}


DEPTH = 2


@st.composite
def queries(draw) -> str:
    source = draw(st.sampled_from(sorted(SOURCES)))
    g = grammar(SOURCES[source], DEPTH)
    shape = draw(st.sampled_from(["where", "key", "aggregates", "filter", "derived"]))
    if shape == "where":
        return f"SELECT count(*) FROM {source} WHERE {draw(g['bool'])}"
    if shape == "key":
        key = draw(st.one_of(g["number"], g["text"], g["time"], g["bool"]))
        return f"SELECT {key} AS k, count(*) FROM {source} GROUP BY 1"
    if shape == "aggregates":
        number = draw(g["number"])
        counted, distinct = (draw(st.one_of(g["number"], g["text"], g["time"])) for _ in range(2))
        function = draw(st.sampled_from(["sum", "avg", "median", "stddev", "max"]))
        return (f"SELECT {function}(least(greatest({number}, -1000), 1000)), count({counted}), "
                f"count(DISTINCT {distinct}) FROM {source}")
    if shape == "filter":
        return (f"SELECT count(*) FILTER (WHERE {draw(g['bool'])}), "
                f"sum(least(greatest({draw(g['number'])}, 0), 10)) FILTER (WHERE {draw(g['bool'])}) FROM {source}")
    outer = grammar(DERIVED, DEPTH)
    return (f"SELECT count(*) FROM (SELECT {draw(g['number'])} AS x, {draw(g['text'])} AS s, "
            f"{draw(g['time'])} AS w FROM {source}) AS d WHERE {draw(outer['bool'])}")


def run_everywhere(conn: psycopg.Connection, sql: str, *, zones: bool = True) -> None:
    """The bounded SQL under each time zone, and prepared under one zone then
    executed under another; `zones` False: once, for values no zone changes."""
    for zone in TIME_ZONES if zones else TIME_ZONES[:1]:
        conn.execute(f"SET TimeZone = '{zone}'")
        conn.execute(sql).fetchall()
    for parsed, executed in PREPARED_ZONES if zones else ():
        conn.execute(f"SET TimeZone = '{parsed}'")
        conn.execute(f"PREPARE pgshroud_fuzz AS {sql}")
        try:
            conn.execute(f"SET TimeZone = '{executed}'")
            conn.execute("EXECUTE pgshroud_fuzz").fetchall()
        finally:
            conn.execute("DEALLOCATE pgshroud_fuzz")
    conn.execute("RESET TimeZone")


def released(fuzz: Fuzz, query: str, outcomes: Counter[str]) -> Release | None:
    """The query planned as the analyst, if pgshroud answers it privately."""
    (planned,) = plan(query, fuzz.context)
    outcomes["released" if isinstance(planned, Release) else "refused"] += 1
    return planned if isinstance(planned, Release) else None


def failure(fuzz: Fuzz, query: str, planned: Release, outcomes: Counter[str], *, zones: bool = True) -> str | None:
    """Run a released query over the adversarial rows: the error, if it is
    one only rows can cause."""
    try:
        run_everywhere(fuzz.adversarial, planned.sql, zones=zones)
    except psycopg.Error as exc:
        try:
            run_everywhere(fuzz.empty, planned.sql, zones=zones)
        except psycopg.Error as without_rows:
            if without_rows.sqlstate == exc.sqlstate:
                # It fails whether or not any row exists (a bad literal): no oracle.
                outcomes["fails without rows"] += 1
                return None
        return f"{query}\n{type(exc).__name__}: {exc}"
    return None


@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(query=queries())
def _accepted_queries_never_fail(fuzz, outcomes: Counter[str], query) -> None:
    planned = released(fuzz, query, outcomes)
    found = None if planned is None else failure(fuzz, query, planned, outcomes)
    if found is not None:
        pytest.fail(f"an accepted private query failed on adversarial rows:\n{found}")


def test_accepted_row_expressions_never_fail_on_adversarial_rows(fuzz):
    outcomes: Counter[str] = Counter()
    _accepted_queries_never_fail(fuzz, outcomes)
    # The grammar is not mostly refused: a fuzzer whose queries never reach
    # PostgreSQL would pass without testing anything.
    assert outcomes["released"] - outcomes["fails without rows"] >= MAX_EXAMPLES // 4, outcomes


# Every construct of the grammar once, on every column of a source: each
# single step the checker allows meets every adversarial value, which random
# compositions reach only by chance.

def single_steps(columns: Columns) -> list[str]:
    """Conditions, one per construct and column (or pair of columns)."""
    numbers, texts = columns.numbers, columns.texts
    times = columns.dates + columns.timestamps
    steps: list[str] = []
    for x in numbers:
        inner = [x, f"({x} * {x})", f"({x} / 3)", f"least(greatest({x}, -999.4999999999999999), 999.4999999999999999)"]
        steps += [f"CAST({value} AS {kind}) IS NULL" for value in inner for kind in NUMBER_TYPES + ["varchar(3)"]]
        steps += [f"{f}({x}) IS NULL" for f in ("abs", "round", "trunc", "floor", "ceil")]
        steps += [f"{f}({x}, {k}) IS NULL" for f in ("round", "trunc") for k in ("2", "-2")]
        steps += [f"({x} {op} {c}) IS NULL" for op in ("/", "%") for c in DIVISORS]
        steps += [f"({x} {op} {y}) IS NULL" for y in numbers for op in ("+", "-", "*")]
        steps += [f"{x} < {y}" for y in numbers] + [f"{x} IN ({y}, 1, 2.5)" for y in numbers]
        steps += [f"{f}({x}, {y}) IS NULL" for y in numbers for f in ("coalesce", "least", "nullif")]
        steps += [f"CASE WHEN TRUE THEN {x} ELSE {y} END IS NULL" for y in numbers]
    for x in texts:
        steps += [f"CAST({x} AS {kind}) IS NULL" for kind in NUMBER_TYPES + TEXT_TYPES + TIME_TYPES]
        steps += [f"{f}({x}) IS NULL" for f in ("lower", "upper", "length")]
        steps += [f"{x} LIKE {pattern}" for pattern in PATTERNS] + [f"{x} < {y}" for y in texts]
    for x in times:
        steps += [f"date_trunc('{unit}', {x}) IS NULL" for unit in TRUNC_UNITS]
        steps += [f"date_trunc('month', {x}, {zone}) IS NULL" for zone in ("'UTC'", "'Mars/Olympus'")]
        steps += [f"extract({field} FROM {x}) IS NULL" for field in FIELDS]
        steps += [f"CAST({x} AS {kind}) IS NULL" for kind in TIME_TYPES + TEXT_TYPES]
        steps += [f"{x} < {y}" for y in times + TIME_LITERALS] + [f"({x} - {y}) IS NULL" for y in times]
        steps += [f"{f}({x}, {y}) IS NULL" for y in times for f in ("coalesce", "greatest")]
        steps += [f"CAST(extract({field} FROM {x}) AS {kind}) IS NULL" for field in FIELDS
                  for kind in ("integer", "smallint")]
        steps += [f"({x} {op} {i}) IS NULL" for i in INTERVALS for op in ("+", "-")]
        steps += [f"({x} {op} {n}) IS NULL" for n in DAYS for op in ("+", "-")]
        steps += [f"to_char({x}, {f}) IS NULL" for f in TO_CHAR_FORMATS]
        steps += [f"extract({f} FROM age({x})) IS NULL" for f in INTERVAL_FIELDS]
        steps += [f"extract({f} FROM age({x}, {y})) IS NULL" for f in ("year", "epoch") for y in times + NOW]
        steps += [f"{x} < {n}" for n in NOW] + [f"{x} >= {n} - {i}" for n in NOW[:2] for i in INTERVALS]
        steps += [f"{x} BETWEEN now() - {i} AND now()" for i in INTERVALS]
        steps += [f"({x} AT TIME ZONE 'UTC') IS NULL", f"{x} >= TO_DATE('2025-01-01', 'YYYY-MM-DD')",
                  f"{x} < TO_TIMESTAMP('2026-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US')"]
        steps += [f"make_date(CAST(extract(year FROM {x}) AS integer), 1, 1) IS NULL",
                  (f"make_date(CAST(least(greatest(extract(year FROM {x}), 1), 9999) AS integer), "
                  f"CAST(extract(month FROM {x}) AS integer), "
                  f"least(CAST(extract(day FROM {x}) AS integer), 28)) IS NULL")]
    return steps


def now_steps() -> list[str]:
    """Values computed once per statement, as group keys: they meet no row,
    but run in every time zone, also after a prepared statement changes zone."""
    steps = [f"{n} IS NULL" for n in NOW]
    steps += [f"({n} {op} {i}) IS NULL" for n in NOW for i in INTERVALS for op in ("+", "-")]
    steps += [f"(current_date {op} {d}) IS NULL" for d in DAYS for op in ("+", "-")]
    steps += [f"date_trunc('{u}', {n}) IS NULL" for u in TRUNC_UNITS for n in NOW[:2]]
    steps += [f"to_char({n}, {f}) IS NULL" for n in NOW[:3] for f in TO_CHAR_FORMATS]
    steps += [f"CAST(extract({f} FROM {n}) AS integer) IS NULL" for f in FIELDS for n in NOW[:3]]
    # Looker's and Superset's spellings
    steps += [f"(date_trunc('month', date_trunc('day', {n} AT TIME ZONE 'UTC')) + ({k} || ' month')::interval) IS NULL"
              for n in NOW[:3] for k in ("-11", "12", "-1000000", "999999999")]
    steps += ["TO_TIMESTAMP('2024-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') IS NULL",
              "TO_DATE('2024-02-29', 'YYYY-MM-DD') IS NULL", "TO_DATE('2023-02-29', 'YYYY-MM-DD') IS NULL"]
    return steps


def _described(conn: psycopg.Connection, sql: str) -> str:
    """The type PostgreSQL resolves for the first column of a query, without reading a row."""
    cursor = conn.execute(f"SELECT * FROM ({sql}) AS q LIMIT 0")
    return conn.execute("SELECT format_type(%s, NULL)", (cursor.description[0].type_code,)).fetchone()[0]


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_single_step_on_every_column_never_fails_and_has_postgresqls_types(source, fuzz):
    """Each single step as a group key runs over the adversarial rows without
    an error; the type the checker gives the analyst's expression is the one
    PostgreSQL resolves for it, and the type its facts name for the SQL
    pgshroud emits (which decides the conversions PostgreSQL makes, so what
    can fail) is the one PostgreSQL resolves for that SQL."""
    columns = SOURCES[source]
    check_steps(fuzz, source, single_steps(columns), columns.dates + columns.timestamps + TIME_TYPES)


def test_values_of_the_statement_never_fail_and_have_postgresqls_types(fuzz):
    """now(), current_date and their kin, moved by intervals and days,
    truncated, formatted and taken apart, as group keys over adversarial rows."""
    check_steps(fuzz, "readings r", now_steps(), ["now", "current", "localtimestamp", "_timestamp"])


def check_steps(fuzz: Fuzz, source: str, steps: list[str], zoned: list[str]) -> None:
    outcomes: Counter[str] = Counter()
    failures, wrong = [], []
    for step in steps:
        expression = step.removesuffix(" IS NULL")
        query = f"SELECT {expression} AS k, count(*) FROM {source} GROUP BY 1"
        planned = released(fuzz, query, outcomes)
        if planned is None:
            continue
        # Time zones change only dates and timestamps.
        zones = any(word in step for word in zoned)
        found = failure(fuzz, query, planned, outcomes, zones=zones)
        if found is not None:
            failures.append(found)
            continue
        analyser = PrivateAnalyser(fuzz.context.policy, fuzz.context.role, fuzz.context.catalog, "analyst")
        analyser.analyse(parse_statement(split_statements(query)[0]))
        facts = analyser.rows.facts_of(analyser.key_nodes[0])
        try:
            declared = _described(fuzz.empty, f"SELECT {expression} FROM {source}")
            evaluated = _described(fuzz.empty, f"SELECT {planned.spec.query.keys[0].sql} "
                                               f"{planned.spec.query.source_sql}")
        except psycopg.Error:
            continue  # a constant PostgreSQL folds fails while planning, rows or none
        if (facts.declared, facts.type) != (declared, evaluated):
            wrong.append(f"{expression}: checker {facts.declared}/{facts.type}, PostgreSQL {declared}/{evaluated}")
    assert not failures, "accepted private queries failed on adversarial rows:\n" + "\n".join(failures)
    assert not wrong, "types other than PostgreSQL's:\n" + "\n".join(wrong)
    assert outcomes["released"] >= outcomes["refused"] // 4, outcomes
