"""A grammar of the aggregate SQL that BI tools, ORMs and drivers send over
the demo schema (proxy/demo_data/schema.sql), as hypothesis strategies.

Each query is spelled the way one tool spells everything: bare names
(psql, pandas), table-qualified (Django, SQLAlchemy), schema-qualified and
quoted (Metabase: `"public"."visits"."department"`), aliased (Tableau's
`"Visits"`, Looker's `visits`, an aliased join patients JOIN visits on
patient_id), or Power BI's `"rows"` subquery of the columns it reads. Over
that: aggregates (count, count DISTINCT, sum, avg, min, max, percentile_cont
WITHIN GROUP, stddev, FILTER, COALESCE and ROUND of them), group keys
(columns, date_trunc, extract, date_part, to_char, age, casts), GROUP BY as
expressions, ordinals or output names, WHERE (literals, bound parameters
with and without casts, now()/current_date with intervals, IN, BETWEEN, IS
NULL), HAVING, ORDER BY, LIMIT/OFFSET literal or bound, FETCH FIRST/NEXT,
the outer queries Power BI, Superset and Tableau wrap an aggregate in, and
cursors (DECLARE ... FETCH) as Tableau, psqlODBC and psql's FETCH_COUNT
read through them.

Nothing here touches a database: a `BiQuery` is text, bound values and the
tags that say which shapes it is made of (for the outcome tables).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

# The demo tables' columns as the analyst may name them, with their kinds.
COLUMNS: dict[str, dict[str, str]] = {
    "patients": {"patient_id": "id", "birth_date": "date", "sex": "text", "zip": "text", "state": "text",
                 "city": "text"},
    "visits": {"visit_id": "id", "patient_id": "id", "visit_date": "date", "diagnosis_code": "text",
               "department": "text", "cost": "number", "length_of_stay": "number"},
    "labs": {"lab_id": "id", "patient_id": "id", "test": "text", "value": "number", "taken_at": "date",
             "unit": "text"},
    "diagnoses": {"code": "text", "description": "text"},
}
# Values a filter compares a text column with.
TEXT_VALUES: dict[str, tuple[str, ...]] = {
    "department": ("Cardiology", "Psychiatry", "Primary Care", "Oncology", "Emergency"),
    "sex": ("F", "M"),
    "test": ("HbA1c", "Glucose", "LDL Cholesterol"),
    "unit": ("mg/dL", "%"),
    "diagnosis_code": ("I10", "E11.9"),
    "code": ("I10", "E11.9"),
    "description": ("Essential (primary) hypertension",),
    "zip": ("021", "100"),
    "state": ("MA", "NY"),
    "city": ("Boston",),
}
NUMBER_RANGES: dict[str, tuple[int, int]] = {"cost": (0, 5000), "length_of_stay": (0, 30), "value": (0, 500)}
DATES = (datetime.date(2020, 1, 1), datetime.date(2023, 6, 30), datetime.date(1970, 1, 1), datetime.date(2024, 12, 31))

# Sources: one table, or a join as BI tools write them (patients to visits on
# the privacy unit, visits to the public ICD-10 table on its code).
SINGLE = ("visits", "patients", "labs")
JOINS = {("patients", "visits"): ("patient_id", "patient_id"), ("visits", "patients"): ("patient_id", "patient_id"),
         ("visits", "diagnoses"): ("diagnosis_code", "code")}
# bare: psql, pandas; table: SQLAlchemy; django: Django (quoted, no schema);
# schema and quoted: Metabase, Prisma; alias: Tableau, Looker, aliased joins;
# rows: Power BI's and Superset's subquery of the rows they read.
STYLES = ("bare", "table", "django", "schema", "quoted", "alias", "rows")
ALIASES = {"patients": ("p", '"Patients"', '"t1"'), "visits": ("v", '"Visits"', '"t0"'),
           "labs": ("l", '"Labs"', '"t0"'), "diagnoses": ("d", '"Diagnoses"', '"t2"')}


@dataclass
class BiQuery:
    """One statement as a tool sends it; `cursor` is set when it is read through DECLARE/FETCH."""

    sql: str
    params: tuple[Any, ...]
    tags: tuple[str, ...]
    simple: bool = False  # sent with the simple query protocol (no bound values)
    cursor: Cursor | None = None
    prepared: bool = False  # a named prepared statement, as drivers make of repeated statements
    binary: bool = False  # results in binary format (asyncpg, pgjdbc for some types, psycopg binary cursors)

    def show(self) -> str:
        text = self.sql if self.cursor is None else self.cursor.declare(self.sql)
        return text + (f"   -- bound: {list(self.params)!r}" if self.params else "")


PSYCOPG = "psycopg"  # a Cursor read through psycopg's ServerCursor rather than by statements


@dataclass(frozen=True)
class Cursor:
    """DECLARE <name> ... CURSOR ... FOR <query>; FETCH ...; CLOSE, in a transaction."""

    name: str
    options: str  # "", "NO SCROLL", "WITH HOLD", ...
    fetches: tuple[str, ...]  # FETCH statements with {name} in them

    def declare(self, query: str) -> str:
        before = [self.options] if self.options.startswith("NO") else []
        after = [self.options] if self.options.startswith("WITH") else []
        return " ".join([f"DECLARE {self.name}", *before, "CURSOR", *after, f"FOR {query}"])

    def statements(self) -> tuple[str, ...]:
        return tuple(fetch.format(name=self.name) for fetch in self.fetches)


@dataclass
class Names:
    """How one query names its tables and columns, and what it read (for Power BI's rows subquery)."""

    style: str
    tables: tuple[str, ...]
    aliases: dict[str, str]
    upper: bool
    join: str = "JOIN"
    using: bool = False
    rows: str = '"rows"'  # the name of the rows subquery (style "rows")
    star: bool = False  # the rows subquery reads SELECT * (Superset's virtual dataset)
    used: dict[str, list[str]] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)

    def tag(self, name: str) -> None:
        if name not in self.tags:
            self.tags.append(name)

    def kw(self, words: str) -> str:
        return words.upper() if self.upper else words.lower()

    def ambiguous(self, column: str) -> bool:
        return sum(column in COLUMNS[t] for t in self.tables) > 1 and not (self.using and column == "patient_id")

    def col(self, table: str, column: str) -> str:
        if column not in self.used.setdefault(table, []):
            self.used[table].append(column)
        if self.style == "bare":
            return f"{table}.{column}" if self.ambiguous(column) else column
        if self.style == "table":
            return f"{table}.{column}"
        if self.style == "schema":
            return f"public.{table}.{column}"
        if self.style == "django":
            return f'"{table}"."{column}"'
        if self.style == "quoted":
            return f'"public"."{table}"."{column}"'
        if self.style == "alias":
            return f'{self.aliases[table]}."{column}"' if self.aliases[table].startswith('"') else \
                f"{self.aliases[table]}.{column}"
        return f'{self.rows}."{column}"'

    def relation(self, table: str) -> str:
        if self.style in ("bare", "table"):
            return table
        if self.style == "schema":
            return f"public.{table}"
        if self.style == "django":
            return f'"{table}"'
        if self.style == "quoted":
            return f'"public"."{table}"'
        return f'"public"."{table}" {self.kw("AS")} {self.aliases[table]}'

    def from_clause(self) -> str:
        if self.style == "rows":
            (table,) = self.tables
            if self.star:
                return f"(SELECT * FROM {table}) {self.kw('AS')} {self.rows}"
            columns = ", ".join(f'"_"."{c}"' for c in self.used.get(table, ["patient_id"]))
            return f'(select {columns} from "public"."{table}" "_") {self.rows}'
        first = self.relation(self.tables[0])
        if len(self.tables) == 1:
            return first
        left, right = self.tables
        left_key, right_key = JOINS[(left, right)]
        if self.using:
            return f"{first} {self.kw(self.join)} {self.relation(right)} {self.kw('USING')} ({left_key})"
        on = f"{self.col(left, left_key)} = {self.col(right, right_key)}"
        return f"{first} {self.kw(self.join)} {self.relation(right)} {self.kw('ON')} {on}"


class Params:
    """Bound values in order of appearance: $1, $2, ..."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


@dataclass
class Item:
    """A select-list entry: its SQL, its output name (None: PostgreSQL's own) and whether it is an aggregate."""

    sql: str
    alias: str | None
    aggregate: bool


@st.composite
def names(draw: st.DrawFn) -> Names:
    join = draw(st.sampled_from([None, *JOINS]))
    tables = (draw(st.sampled_from(SINGLE)),) if join is None else join
    styles = [s for s in STYLES if not (s == "rows" and len(tables) > 1)]
    style = draw(st.sampled_from(styles))
    aliases = {t: draw(st.sampled_from(ALIASES[t])) for t in tables}
    if len(set(aliases.values())) < len(aliases):
        aliases = {t: ALIASES[t][1] for t in tables}
    upper = draw(st.booleans())
    kind = draw(st.sampled_from(["JOIN", "INNER JOIN", "LEFT JOIN", "LEFT OUTER JOIN"]))
    using = len(tables) > 1 and style in ("bare", "table") and JOINS[tables][0] == JOINS[tables][1] \
        and draw(st.booleans())
    rows, star = draw(st.sampled_from([('"rows"', False), ("virtual_table", True), ("virtual_table", False)]))
    return Names(style, tables, aliases, upper, kind, using, rows, star)


def columns_of(n: Names, kind: str) -> list[tuple[str, str]]:
    return [(t, c) for t in n.tables for c, k in COLUMNS[t].items() if k == kind]


def _text_key(draw: st.DrawFn, n: Names) -> tuple[str, str]:
    table, column = draw(st.sampled_from(columns_of(n, "text")))
    return n.col(table, column), column


def _date_key(draw: st.DrawFn, n: Names) -> tuple[str, str]:
    table, column = draw(st.sampled_from(columns_of(n, "date")))
    ref = n.col(table, column)
    unit = draw(st.sampled_from(["year", "quarter", "month", "week", "day"]))
    field_ = draw(st.sampled_from(["year", "month", "quarter", "dow", "isodow"]))
    forms = [
        (f"date_trunc('{unit}', {ref})", unit),
        (f"CAST(date_trunc('{unit}', {ref}) AS date)", unit),
        (f"date_trunc('{unit}', {ref})::date", unit),
        (f"extract({field_} FROM {ref})", field_),
        (f"EXTRACT({field_.upper()} FROM {ref})::int", field_),
        (f"CAST(extract({field_} from {ref}) AS integer)", field_),
        (f"date_part('{field_}', {ref})", field_),
        (f"to_char({ref}, 'YYYY-MM')", "period"),
        (f"CAST({ref} AS date)", column),
        (ref, column),
        # Superset's time grain, named __timestamp or after the column
        (f"DATE_TRUNC('{unit}', {ref})", draw(st.sampled_from(["__timestamp", column]))),
        # Metabase's week, starting on Sunday
        (f"CAST((date_trunc('week', CAST(({ref} + INTERVAL '1 day') AS timestamp)) + INTERVAL '-1 day') AS date)",
         column),
        # Grafana's $__timeGroupAlias(column, '1d')
        (f"floor(extract(epoch from {ref})/86400)*86400", "time"),
        # Django's TruncMonth of a DateTimeField, in the current time zone
        (f"DATE_TRUNC('{unit}', {ref} AT TIME ZONE 'UTC')", f"{column}__{unit}"),
        # Looker's dimension groups
        (f"TO_CHAR(DATE_TRUNC('month', {ref}), 'YYYY-MM')", f"{table}.{column}_month"),
        # Tableau's date parts
        (f"DATE_TRUNC( '{unit.upper()}', CAST({ref} AS DATE) )", f"t{unit[:2]}:{column}:ok"),
        (f"CAST(EXTRACT(YEAR FROM {ref}) AS INTEGER)", f"yr:{column}:ok"),
        (f"to_char({ref}, 'Mon YYYY')", "month_name"),
        (f"make_date(extract(year from {ref})::int, 1, 1)", "year_start"),
    ]
    if column == "birth_date":
        forms += [(f"date_part('year', age({ref}))", "age"), (f"extract(year from age(current_date, {ref}))::int",
                                                           "age")]
    return draw(st.sampled_from(forms))


def _number_key(draw: st.DrawFn, n: Names) -> tuple[str, str]:
    table, column = draw(st.sampled_from([(t, c) for t, c in columns_of(n, "number") if c == "length_of_stay"]
                                         or columns_of(n, "text")))
    return n.col(table, column), column


def group_key(draw: st.DrawFn, n: Names) -> tuple[str, str]:
    kinds = ["text", "date"] + (["number"] if any(c == "length_of_stay" for _, c in columns_of(n, "number")) else [])
    kind = draw(st.sampled_from(kinds))
    return {"text": _text_key, "date": _date_key, "number": _number_key}[kind](draw, n)


def condition(draw: st.DrawFn, n: Names, p: Params, depth: int = 0) -> str:
    """A row condition as filters, date pickers and ORMs write them."""
    kinds = ["text", "number", "date", "date", "null", "trivial", "param text", "param number"]
    if depth == 0:
        kinds += ["not", "or"]
    kinds = [k for k in kinds if not (k.endswith("number") and not columns_of(n, "number"))]
    kind = draw(st.sampled_from(kinds))
    n.tag(f"where:{kind}")
    if kind == "not":
        return f"{n.kw('NOT')} ({condition(draw, n, p, 1)})"
    if kind == "or":
        return f"({condition(draw, n, p, 1)} {n.kw('OR')} {condition(draw, n, p, 1)})"
    if kind == "trivial":
        return draw(st.sampled_from(["1 = 1", "1=1", "TRUE", "true"]))
    if kind == "null":
        table, column = draw(st.sampled_from([(t, c) for t in n.tables for c in COLUMNS[t]]))
        return f"{n.col(table, column)} {n.kw(draw(st.sampled_from(['IS NULL', 'IS NOT NULL'])))}"
    if kind in ("text", "param text"):
        table, column = draw(st.sampled_from(columns_of(n, "text")))
        ref, values = n.col(table, column), TEXT_VALUES[column]
        one = draw(st.sampled_from(values))
        if kind == "param text":
            form = draw(st.sampled_from(["eq", "in", "cast"]))
            if form == "in":
                return f"{ref} {n.kw('IN')} ({p.add(one)}, {p.add(draw(st.sampled_from(values)))})"
            # SQLAlchemy's psycopg dialect casts its bound values: %(department_1)s::VARCHAR
            cast = draw(st.sampled_from(["::text", "::VARCHAR"]))
            return f"{ref} = {p.add(one)}" if form == "eq" else f"{ref} = {p.add(one)}{cast}"
        form = draw(st.sampled_from(["=", "<>", "!=", "IN", "NOT IN", "LIKE"]))
        if form in ("IN", "NOT IN"):
            listed = ", ".join(f"'{v}'" for v in sorted(set(draw(st.lists(st.sampled_from(values), min_size=1,
                                                                          max_size=3)))))
            return f"{ref} {n.kw(form)} ({listed})"
        if form == "LIKE":
            return f"{ref} {n.kw('LIKE')} '{one[:2]}%'"
        return f"{ref} {form} '{one}'"
    if kind in ("number", "param number"):
        table, column = draw(st.sampled_from(columns_of(n, "number")))
        ref = n.col(table, column)
        low, high = NUMBER_RANGES[column]
        a = draw(st.integers(low, high))
        b = draw(st.integers(a, high))
        if kind == "param number":
            form = draw(st.sampled_from(["gt", "between", "cast"]))
            if form == "between":
                return f"{ref} {n.kw('BETWEEN')} {p.add(a)} {n.kw('AND')} {p.add(b)}"
            return f"{ref} > {p.add(a)}" if form == "gt" else f"{ref} >= CAST({p.add(a)} AS integer)"
        form = draw(st.sampled_from([">", ">=", "<", "=", "BETWEEN"]))
        if form == "BETWEEN":
            return f"{ref} {n.kw('BETWEEN')} {a} {n.kw('AND')} {b}"
        return f"{ref} {form} {a}"
    table, column = draw(st.sampled_from(columns_of(n, "date")))
    return f"{n.col(table, column)} {date_bound(draw, n, p)}"




def date_bound(draw: st.DrawFn, n: Names, p: Params) -> str:
    """The right-hand side of a date filter: literals, bound values, and dates relative to now."""
    day = draw(st.sampled_from(DATES))
    op = draw(st.sampled_from([">=", "<", ">", "<="]))
    amount = draw(st.sampled_from(["12 months", "30 days", "1 year", "90 day", "2 years", "7 days"]))
    later = day + datetime.timedelta(days=400)
    forms: list[tuple[str, Callable[[], str]]] = [
        ("literal", lambda: f"{op} DATE '{day}'"),
        ("literal", lambda: f"{op} '{day}'"),
        ("literal", lambda: f"{op} '{day}'::date"),
        ("literal", lambda: f"{op} CAST('{day}' AS DATE)"),
        ("literal", lambda: f"{n.kw('BETWEEN')} '{day}' {n.kw('AND')} '{later}'"),
        ("$n", lambda: f"{op} {p.add(day)}"),
        ("$n::date", lambda: f"{op} {p.add(day)}::date"),
        ("$n::date", lambda: f"{op} CAST({p.add(str(day))} AS date)"),
        ("$n::date", lambda: f"{op} {p.add(str(day))}::date"),
        ("$n::date", lambda: f"{op} {p.add(day)}::DATE"),
        ("$n", lambda: f"{op} {p.add(datetime.datetime(day.year, day.month, day.day))}"),
        ("$n", lambda: f"{n.kw('BETWEEN')} {p.add(day)} {n.kw('AND')} {p.add(later)}"),
        ("now-interval", lambda: f"{op} now() - interval '{amount}'"),
        ("now-interval", lambda: f"{op} current_date - interval '{amount}'"),
        ("now-interval", lambda: f"{op} CURRENT_DATE - INTERVAL '{amount}'"),
        ("now-interval", lambda: f"{op} current_timestamp - interval '{amount}'"),
        ("now-interval", lambda: f"{op} localtimestamp - interval '{amount}'"),
        ("now-interval", lambda: f"{op} date_trunc('month', now()) - interval '{amount}'"),
        ("now-interval", lambda: f"{op} (now() - INTERVAL '{amount}')::date"),
        ("now-interval", lambda: f"{op} NOW() - INTERVAL '1' YEAR"),
        ("now", lambda: f"{op} current_date"),
        ("now", lambda: f"{op} now()"),
        ("now", lambda: f"{op} CURRENT_DATE - 30"),
        # Metabase's relative dates ("previous 30 days")
        ("now-interval", lambda: f"{op} CAST((CAST(now() AS timestamp) + INTERVAL '-30 day') AS date)"),
        ("now", lambda: f"{op} CAST(CAST(now() AS timestamp) AS date)"),
        # Grafana's $__timeFilter(column)
        ("literal", lambda: f"{n.kw('BETWEEN')} '{day}T00:00:00Z' {n.kw('AND')} '{later}T23:59:59.999Z'"),
        # Tableau
        ("literal", lambda: f"{op} (DATE '{day}')"),
    ]
    tag, form = draw(st.sampled_from(forms))
    n.tag(f"date:{tag}")
    return form()


def measure(draw: st.DrawFn, n: Names, p: Params) -> tuple[str, str]:
    """An aggregate as BI tools write them, and a name a tool would give it
    (min and max of dates are named first_ and last_, as they are no numbers)."""
    numbers = columns_of(n, "number")
    with_unit = [t for t in n.tables if "patient_id" in COLUMNS[t]]
    kinds = ["count(*)", "count(1)", "count(col)", "count(distinct)", "sum(1)", "min/max(date)", "count filter",
             "sum(case)", "count(distinct key)", "per person"]
    if numbers:
        kinds += ["sum", "avg", "min/max", "percentile_cont", "stddev", "coalesce(sum)", "round(avg)",
                  "avg(::float)", "sum filter", "ratio", "spread"]
    kind = draw(st.sampled_from(kinds))
    n.tag(f"agg:{kind}")
    count = n.kw("count")
    if kind == "count(*)":
        return f"{count}(*)", "count"
    if kind == "count(1)":
        return f"{count}(1)", "count"
    if kind == "sum(1)":
        return f"{n.kw('sum')}(1)", "sum"
    if kind == "count(col)":
        table, column = draw(st.sampled_from([(t, c) for t in n.tables for c in COLUMNS[t]]))
        return f"{count}({n.col(table, column)})", "count"
    if kind == "count(distinct)":
        return f"{count}({n.kw('DISTINCT')} {n.col(draw(st.sampled_from(with_unit)), 'patient_id')})", "patients"
    if kind == "count(distinct key)":
        table, column = draw(st.sampled_from(columns_of(n, "text")))
        return f"{count}({n.kw('DISTINCT')} {n.col(table, column)})", "distinct"
    if kind == "per person":  # Metabase's and Looker's ratios of two aggregates
        unit = n.col(draw(st.sampled_from(with_unit)), "patient_id")
        return draw(st.sampled_from([
            f"{count}(*)::float / NULLIF({count}({n.kw('DISTINCT')} {unit}), 0)",
            f"CAST({count}(*) AS DOUBLE PRECISION) / {count}({n.kw('DISTINCT')} {unit})",
            f"1.0 * {count}(*) / NULLIF({count}({n.kw('DISTINCT')} {unit}), 0)",
        ])), "per_patient"
    if kind == "min/max(date)":
        table, column = draw(st.sampled_from(columns_of(n, "date")))
        fn = draw(st.sampled_from(["min", "max"]))
        return f"{n.kw(fn)}({n.col(table, column)})", {"min": "first_", "max": "last_"}[fn] + column
    if kind in ("count filter", "sum(case)"):
        cond = condition(draw, n, p, 1)
        if kind == "count filter":
            return f"{count}(*) {n.kw('FILTER')} ({n.kw('WHERE')} {cond})", "filtered"
        return f"{n.kw('sum')}({n.kw('CASE WHEN')} {cond} {n.kw('THEN')} 1 {n.kw('ELSE')} 0 {n.kw('END')})", "flag"
    table, column = draw(st.sampled_from(numbers))
    ref = n.col(table, column)
    if kind in ("sum", "avg", "stddev"):
        fn = draw(st.sampled_from(["stddev", "stddev_samp", "stddev_pop", "variance"])) if kind == "stddev" else kind
        return f"{n.kw(fn)}({ref})", fn
    if kind == "min/max":
        fn = draw(st.sampled_from(["min", "max"]))
        return f"{n.kw(fn)}({ref})", fn
    if kind == "percentile_cont":
        q = draw(st.sampled_from(["0.5", "0.9", "0.25"]))
        fn = draw(st.sampled_from(["percentile_cont", "percentile_cont", "percentile_disc"]))
        return f"{n.kw(fn)}({q}) {n.kw('WITHIN GROUP')} ({n.kw('ORDER BY')} {ref})", "median"
    if kind == "ratio":
        return draw(st.sampled_from([f"{n.kw('sum')}({ref}) / NULLIF({count}(*), 0)",
                                     f"{n.kw('sum')}({ref}) / {count}(*)",
                                     f"{n.kw('avg')}({ref})::numeric(10,2)"])), "ratio"
    if kind == "spread":
        return f"{n.kw('max')}({ref}) - {n.kw('min')}({ref})", "spread"
    if kind == "coalesce(sum)":
        return f"{n.kw('COALESCE')}({n.kw('sum')}({ref}), 0)", "total"
    if kind == "round(avg)":
        return f"{n.kw('ROUND')}({n.kw('avg')}({ref})::numeric, 2)", "average"
    if kind == "avg(::float)":
        return draw(st.sampled_from([f"avg({ref}::float)", f"AVG(CAST({ref} AS double precision))"])), "avg"
    cond = condition(draw, n, p, 1)
    return f"{n.kw('sum')}({ref}) {n.kw('FILTER')} ({n.kw('WHERE')} {cond})", "filtered_sum"


CONSTANTS = (("now()", "now"), ("current_date", "current_date"), ("CURRENT_TIMESTAMP", "current_timestamp"),
             ("'all'", "segment"), ("1", "one"), ("localtimestamp", "localtimestamp"))


@dataclass
class Aggregate:
    """An aggregate statement and its output names (None where PostgreSQL names the column)."""

    sql: str
    outputs: list[str | None]
    measures: list[int]  # positions (0-based) of the aggregate outputs
    numbers: list[int]  # those of them that are numbers


def _unique(name: str, taken: set[str]) -> str:
    candidate, i = name, 1
    while candidate in taken:
        candidate, i = f"{name}_{i}", i + 1
    taken.add(candidate)
    return candidate


# Output names that PostgreSQL reserves, which only work quoted.
RESERVED = frozenset({"current_date", "current_timestamp", "localtimestamp"})


def quote(n: Names, name: str) -> str:
    plain = n.style not in ("quoted", "django", "alias", "rows") and name.isidentifier() and name not in RESERVED
    return name if plain else f'"{name}"'


def aggregate(draw: st.DrawFn, n: Names, p: Params, named: bool) -> Aggregate:
    """SELECT keys, constants, aggregates FROM ... WHERE ... GROUP BY ... HAVING ... ORDER BY ... LIMIT."""
    keys = [group_key(draw, n) for _ in range(draw(st.integers(0, 2)))]
    keys = list({sql: (sql, hint) for sql, hint in keys}.values())
    constants = draw(st.lists(st.sampled_from(CONSTANTS), max_size=1)) if draw(st.integers(0, 5)) == 0 else []
    measures = [measure(draw, n, p) for _ in range(draw(st.integers(1, 3)))]
    aliased = named or draw(st.booleans())
    taken: set[str] = set()
    items: list[Item] = []
    for sql, hint in [*keys, *constants]:
        items.append(Item(sql, _unique(hint, taken) if aliased else None, False))
    numbers: list[int] = []
    for i, (sql, hint) in enumerate(measures):
        if not hint.startswith(("first_", "last_")):
            numbers.append(len(items))
        # Power BI's a0, Looker's "visits.count", Tableau's "sum:cost:ok", Django's "cost__avg"
        hint = draw(st.sampled_from([hint, hint, f"a{i}", f"{n.tables[0]}.{hint}", f"{hint}:ok", f"{hint}__agg"]))
        items.append(Item(sql, _unique(hint, taken) if aliased else None, True))
    if constants:
        n.tag("select:constant")
    select = ", ".join(item.sql if item.alias is None else f"{item.sql} {n.kw('AS')} {quote(n, item.alias)}"
                       for item in items)
    clauses = [f"{n.kw('SELECT')} {select}"]
    conditions = [condition(draw, n, p) for _ in range(draw(st.integers(0, 3)))]
    tail = _group_by(draw, n, keys, items) + _having(draw, n, p) + _order_by(draw, n, items)
    tail += limit_clause(draw, n, p)
    clauses.append(f"{n.kw('FROM')} {n.from_clause()}")  # after the columns: Power BI's rows subquery lists them
    if conditions:
        joiner = f" {n.kw('AND')} "
        clauses.append(f"{n.kw('WHERE')} {joiner.join(conditions)}")
    sql = " ".join(clauses + tail)
    return Aggregate(sql, [item.alias for item in items], [i for i, item in enumerate(items) if item.aggregate],
                     numbers)


def _group_by(draw: st.DrawFn, n: Names, keys: list[tuple[str, str]], items: list[Item]) -> list[str]:
    if not keys:
        return []
    form = draw(st.sampled_from(["expression", "ordinal"] + (["name"] if items[0].alias is not None else [])))
    n.tag(f"group:{form}")
    if form == "ordinal":
        terms = [str(i + 1) for i in range(len(keys))]
    elif form == "name":
        terms = [quote(n, item.alias or "") for item in items[:len(keys)]]
    else:
        terms = [sql for sql, _ in keys]
    return [f"{n.kw('GROUP BY')} {', '.join(terms)}"]


def _having(draw: st.DrawFn, n: Names, p: Params) -> list[str]:
    if draw(st.integers(0, 4)) != 0:
        return []
    n.tag("having")
    bound = draw(st.sampled_from(["5", "0", "100"]))
    if draw(st.booleans()):
        bound = p.add(int(bound))
    return [f"{n.kw('HAVING')} {n.kw('count')}(*) > {bound}"]


def _order_by(draw: st.DrawFn, n: Names, items: list[Item]) -> list[str]:
    if draw(st.booleans()):
        return []
    position = draw(st.integers(0, len(items) - 1))
    item = items[position]
    constant = any(item.sql == sql for sql, _ in CONSTANTS)  # ORDER BY 'all' is no ordering PostgreSQL accepts
    form = draw(st.sampled_from(["ordinal"] + ([] if constant else ["expression"]) + (["name"] if item.alias else [])))
    n.tag(f"order:{form}")
    term = {"ordinal": str(position + 1), "expression": item.sql, "name": quote(n, item.alias or "")}[form]
    direction = draw(st.sampled_from(["", " DESC", " ASC", " DESC NULLS LAST", " ASC NULLS FIRST"]))
    return [f"{n.kw('ORDER BY')} {term}{n.kw(direction)}"]


def limit_clause(draw: st.DrawFn, n: Names, p: Params) -> list[str]:
    """LIMIT and OFFSET, literal or bound (SQLAlchemy's .limit(), knex), and the standard's FETCH (Looker)."""
    form = draw(st.sampled_from(["none", "none", "limit", "limit $n", "limit offset", "offset $n", "fetch next",
                                 "offset fetch", "limit all"]))
    if form == "none":
        return []
    n.tag(f"limit:{form}")
    count = draw(st.sampled_from([1, 10, 500, 1000001]))
    return [{
        "limit": lambda: f"{n.kw('LIMIT')} {count}",
        "limit $n": lambda: f"{n.kw('LIMIT')} {p.add(count)}{draw(st.sampled_from(['', '::INTEGER']))}",
        "limit offset": lambda: f"{n.kw('LIMIT')} {count} {n.kw('OFFSET')} 2",
        "offset $n": lambda: f"{n.kw('LIMIT')} {p.add(count)} {n.kw('OFFSET')} {p.add(1)}",
        "fetch next": lambda: f"{n.kw('FETCH NEXT')} {count} {n.kw('ROWS ONLY')}",
        "offset fetch": lambda: f"{n.kw('OFFSET')} 0 {n.kw('ROWS FETCH FIRST')} {count} {n.kw('ROWS ONLY')}",
        "limit all": lambda: f"{n.kw('LIMIT ALL')}",
    }[form]()]


def wrapped(draw: st.DrawFn, n: Names, p: Params, inner: Aggregate) -> str:
    """The outer queries tools put around an aggregate: only post-processing of its rows."""
    forms = ["powerbi", "superset", "select star", "cte", "metabase nested"] + (
        ["outer arithmetic"] if inner.numbers else [])
    form = draw(st.sampled_from(forms))
    n.tag(f"wrapper:{form}")
    names = [name or "" for name in inner.outputs]
    measure = names[draw(st.sampled_from(inner.numbers if form == "outer arithmetic" else inner.measures))]
    if form == "powerbi":
        columns = ", ".join(f'"_"."{name}"' for name in names)
        return f'select {columns} from ({inner.sql}) "_" where not "_"."{measure}" is null limit 1000001'
    if form == "superset":
        return f"SELECT * FROM ({inner.sql}) AS virtual_table ORDER BY {min(2, len(names))} DESC LIMIT 10"
    if form == "select star":
        return f'SELECT * FROM ({inner.sql}) "Custom SQL Query" LIMIT 1000'
    if form == "cte":
        return f'WITH "q" AS ({inner.sql}) SELECT * FROM "q" ORDER BY 1'
    if form == "metabase nested":
        columns = ", ".join(f'"source"."{name}" AS "{name}"' for name in names)
        keep = f'"source"."{measure}" > 1' if measure in [names[i] for i in inner.numbers] else \
            f'"source"."{measure}" IS NOT NULL'
        order = f'"source"."{measure}" DESC'
        return f'SELECT {columns} FROM ({inner.sql}) AS "source" WHERE {keep} ORDER BY {order} LIMIT 2000'
    keys = [f'"t0"."{name}"' for i, name in enumerate(names) if i not in inner.measures]
    arithmetic = draw(st.sampled_from([f'"t0"."{measure}" * 100.0 / 7 AS "share"',
                                       f'CAST("t0"."{measure}" AS double precision) AS "value"',
                                       f'round("t0"."{measure}"::numeric, 1) AS "rounded"']))
    page = draw(st.sampled_from(["", " LIMIT 5", " OFFSET 1", " FETCH FIRST 3 ROWS ONLY"]))
    if draw(st.booleans()):
        page = f" LIMIT {p.add(5)} OFFSET {p.add(1)}"
    n.tag(f"outer page:{page.split()[0] if page else 'none'}")
    return f'SELECT {", ".join([*keys, arithmetic])} FROM ({inner.sql}) "t0" WHERE "t0"."{measure}" IS NOT NULL{page}'


CURSORS = (
    # Tableau and psqlODBC's declare/fetch
    Cursor('"SQL_CUR0x7f3a10"', "WITH HOLD", ("FETCH 10000 IN {name}",)),
    # psql with \set FETCH_COUNT 100
    Cursor("_psql_cursor", "NO SCROLL", ("FETCH FORWARD 100 FROM {name}", "FETCH FORWARD 100 FROM {name}")),
    # psycopg's named cursors
    Cursor('"report_rows"', "", ("FETCH FORWARD 2 FROM {name}", "FETCH ALL FROM {name}")),
    Cursor("c1", "", ("MOVE FORWARD 1 IN {name}", "FETCH NEXT FROM {name}")),
    # psycopg's own server-side cursor object (DECLARE, Describe of the portal, FETCH FORWARD n)
    Cursor('"psycopg_named"', PSYCOPG, ()),
)


@st.composite
def bi_queries(draw: st.DrawFn) -> BiQuery:
    n = draw(names())
    n.tag(f"names:{n.style}")
    n.tag(f"source:{'+'.join(n.tables)}")
    p = Params()
    wrap = draw(st.integers(0, 3)) == 0
    inner = aggregate(draw, n, p, named=wrap)
    sql = wrapped(draw, n, p, inner) if wrap else inner.sql
    if wrap and draw(st.integers(0, 4)) == 0:  # Power BI folds one step onto another
        n.tag("wrapper:twice")
        sql = f'select * from ({sql}) "_1" limit 1000001'
    cursor = draw(st.sampled_from(CURSORS)) if draw(st.integers(0, 5)) == 0 else None
    if cursor is not None:
        n.tag("cursor")
    if p.values:
        n.tag("bound values")
    simple = not p.values and cursor is None and draw(st.booleans())
    prepared = not simple and cursor is None and draw(st.integers(0, 4)) == 0
    binary = not simple and cursor is None and draw(st.integers(0, 4)) == 0
    for flag, tag in ((simple, "simple protocol"), (prepared, "prepared"), (binary, "binary results")):
        if flag:
            n.tag(tag)
    return BiQuery(sql, tuple(p.values), tuple(n.tags), simple, cursor, prepared, binary)
