"""The shape of a private query once analysed: what the bounding rewrite and
the release need, and nothing of sqlglot's tree beyond post-processing
expressions."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from fractions import Fraction

from sqlglot import exp

# Aggregate kinds and the per-person quantities each one needs.
COUNT_ROWS = "count_rows"  # count(*)
COUNT = "count"  # count(x)
COUNT_UNITS = "count_units"  # count(DISTINCT privacy unit)
COUNT_DISTINCT = "count_distinct"  # count(DISTINCT x)
SUM = "sum"
AVG = "avg"
VAR_POP, VAR_SAMP, STDDEV_POP, STDDEV_SAMP = "var_pop", "var_samp", "stddev_pop", "stddev_samp"
QUANTILE_CONT, QUANTILE_DISC = "percentile_cont", "percentile_disc"
MIN, MAX = "min", "max"
VARIANCES = (VAR_POP, VAR_SAMP, STDDEV_POP, STDDEV_SAMP)
QUANTILES = (QUANTILE_CONT, QUANTILE_DISC, MIN, MAX)
# Quantiles of a date are of its day number: days since this date (PostgreSQL's epoch).
DAY_ZERO = datetime.date(2000, 1, 1)
# MIN and MAX are answered as these private quantiles.
EXTREME_QUANTILES = {MIN: Fraction(1, 100), MAX: Fraction(99, 100)}


@dataclass(frozen=True)
class Aggregate:
    """One aggregate of the query, over one row-level expression."""

    kind: str
    argument: str | None  # SQL evaluated per row (safe); None for count(*) and count(DISTINCT unit)
    bounds: tuple[Fraction, Fraction] | None  # of the argument, for sums, averages, quantiles
    output_type: str
    quantile: Fraction | None = None
    label: str = ""  # as the analyst wrote it, for messages and explain
    never_null: bool = False  # the argument is never NULL: its count is the row count


@dataclass(frozen=True)
class Key:
    """One GROUP BY key: its SQL per row and, if public, its values."""

    sql: str
    type_name: str
    domain: tuple[str | None, ...] | None
    label: str = ""
    domain_sql: str | None = None  # a query returning the public values, when they live in a public table

    @property
    def public(self) -> bool:
        return self.domain is not None or self.domain_sql is not None


@dataclass(frozen=True)
class Output:
    """One output column: a post-processing expression over keys and
    aggregates (exp.Var names `key{i}` and `agg{i}`), with its type."""

    name: str
    expression: exp.Expr
    type_name: str


@dataclass(frozen=True)
class OrderItem:
    expression: exp.Expr  # over keys and aggregates, as Output
    descending: bool
    nulls_first: bool


@dataclass(frozen=True)
class Constant:
    """A value that depends on no row (now(), current_date, a literal, a
    bind parameter), computed by PostgreSQL once beside the aggregates, so
    that the session's TimeZone and the Bind's values hold and its text and
    type are PostgreSQL's. Post-processing reads it as the variable
    `const{i}`. `check`: "limit" or "offset" when it is one, so that a
    negative value fails as PostgreSQL's own LIMIT would; "zero_offset" for
    a subquery's OFFSET $n, which must be 0 (or NULL), as any other skips
    rows that depend on other people's rows."""

    sql: str
    type_name: str
    check: str | None = None
    parameter: int | None = None  # for a LIMIT or OFFSET: the bind parameter's number ($n)


@dataclass(frozen=True)
class KeyTest:
    """An order comparison of a text key with a literal (department > 'M'),
    which only PostgreSQL can evaluate under the key's collation: it is
    computed there for each group's key, and read as the variable `test{i}`."""

    key: int
    operator: str  # <, <=, > or >=, with the key on the left
    literal: str  # SQL


@dataclass(frozen=True)
class Running:
    """SUM(<aggregate expression>) OVER (ORDER BY <group keys> [frame]), as
    Metabase writes cumulative sums and counts: a running total over the
    released groups, computed on them and read as the variable `run{i}`.
    `peers`: a RANGE frame (the default), where groups equal in the ORDER BY
    share the total that includes them all; ROWS adds one group at a time."""

    expression: exp.Expr  # over keys and aggregates, as Output
    order: tuple[OrderItem, ...]
    peers: bool
    type_name: str


# What a LIMIT or OFFSET is: a literal, or the name of a Constant (`const{i}`).
Bound = int | str | None


@dataclass(frozen=True)
class Stage:
    """An outer query over the released rows (Power BI, Superset and
    Tableau wrap aggregates): its WHERE, ORDER BY and LIMIT evaluated on
    them, after the stages inside it."""

    where: exp.Expr | None = None
    order: tuple[OrderItem, ...] = ()
    limit: Bound = None
    offset: Bound = 0


TEXT_TYPES = ("text", "character", "character varying")


@dataclass(frozen=True)
class PrivateQuery:
    source_sql: str  # FROM ... [WHERE ...], protected relations already replaced
    unit_sql: str
    keys: tuple[Key, ...]
    aggregates: tuple[Aggregate, ...]
    outputs: tuple[Output, ...]
    having: exp.Expr | None = None
    order: tuple[OrderItem, ...] = ()
    limit: Bound = None
    offset: Bound = 0
    max_groups: int = 1  # L0: groups one person may contribute to
    max_rows: int = 1  # Linf: rows one person may contribute to a group
    notices: tuple[str, ...] = field(default=())
    outer: tuple[Stage, ...] = ()  # outer queries, innermost first
    constants: tuple[Constant, ...] = ()
    key_tests: tuple[KeyTest, ...] = ()
    running: tuple[Running, ...] = ()  # running totals over the released groups

    @property
    def ranked_keys(self) -> tuple[int, ...]:
        """The text keys some ORDER BY sorts by: PostgreSQL ranks their values
        under their collation, since Python's order of strings is not it."""
        orders = list(self.order) + [item for stage in self.outer for item in stage.order]
        orders += [item for running in self.running for item in running.order]
        named = {item.expression.name for item in orders if isinstance(item.expression, exp.Var)}
        return tuple(i for i, key in enumerate(self.keys) if f"key{i}" in named and key.type_name in TEXT_TYPES)

    @property
    def grouped(self) -> bool:
        return bool(self.keys)

    @property
    def allowance(self) -> int:
        """The rows one person may contribute over all groups (L1)."""
        return self.max_groups * self.max_rows
