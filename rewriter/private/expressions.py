"""Row-level expressions of a private query: what they may do, their types,
what is certain about their values, and the SQL PostgreSQL evaluates.

A private query's answer is noisy, but whether it runs at all is not: an
error raised while PostgreSQL evaluates a row (a cast that overflows a
numeric(3,0), a division by zero, a LIKE pattern that ends in an escape, a
date that leaves the timestamp range) would tell the analyst that some row
with such a value exists, outside the noise. So every expression over rows
is shown unable to fail on any value its inputs can hold, and refused
otherwise, with what to write instead.

What an expression's values can be (`Facts`) follows from the types
PostgreSQL resolves, modifiers included (a numeric(10,2) is below 10**8 in
magnitude with two digits after the point; a float may be NaN or
infinite), from how pgshroud reads protected columns (numerics clamped to
+-1e100, dates and timestamps to a range well inside PostgreSQL's, with
infinities read as NULL: views.clamp), and from clamps the analyst
writes (`least(greatest(x, 0), 100)`). Arithmetic is carried out in
numeric, whose range is checked to stay far below numeric's limit, and the
SQL never lets PostgreSQL convert a computed numeric to a float type it
might not fit. A literal is converted when PostgreSQL parses the
statement, and arithmetic on number literals is folded when it plans it,
whether or not any row exists, so they fail, if at all, independently of
the data; conversions that depend on the time zone are not folded, so
typed date and timestamp literals are checked like values.

Some values are the same for every row without being folded: bind
parameters and now() with its kin. A parameter left untyped in Parse takes
the type its context asks for (`$1::date` is a date parameter), and
PostgreSQL converts its value at Bind, before anything runs, so a value
that is not a date fails for every statement alike, rows or none; a
parameter bounds nothing, so arithmetic on it is refused like arithmetic
on an unknown value, with three exceptions ORMs need, whose use would fail
for each row on some values: date_trunc's unit bound as a parameter
(Django, SQLAlchemy), an interval bound as one (SQLAlchemy's timedelta)
and a LIKE pattern built from one (Django's icontains) are passed on only
when they are a unit a private query may truncate to, an interval of at
most 6000 years, or a pattern that neither ends in an escape character
nor has more than 16 runs of %, and read as NULL otherwise. (A type the client declares in Parse that differs
from the one the context asks for would make PostgreSQL convert the value
for each row: the session must not let one reach a private statement.)
now(), current_date, current_timestamp, localtimestamp, statement_timestamp()
and transaction_timestamp() are computed for each row, in the session's
time zone, but are near the present (`NOW_EARLIEST`, `NOW_LATEST`): dates
and timestamps carry bounds in seconds, and moving one by an interval
written as a literal or by whole days is allowed where the result stays in
the range protected dates are clamped to, where nothing computed from it
can leave PostgreSQL's.

Bounds for sensitivity (`bounds_of`) are another matter: they follow from
the policy's column bounds, which the bounded query enforces with clamps of
its own, and are not guarantees about the values.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from sqlglot import exp

from pgshroud.rewriter.private import types as t
from pgshroud.rewriter.statements import DATE_PART_MARK


class ExpressionRefused(ValueError):
    """An expression a private query may not evaluate; the message says why."""


@dataclass(frozen=True)
class Facts:
    """What is certain about an expression's values in the SQL pgshroud emits."""

    declared: str  # PostgreSQL's type of the expression as the analyst wrote it
    type: str  # the type of the SQL pgshroud emits for it (arithmetic is numeric)
    low: Fraction | None = None  # numbers: no finite value below it; None: only the type's limit
    high: Fraction | None = None
    scale: int | None = None  # numbers: digits after the point, as numeric; None: up to numeric's limit
    nan: bool = False
    neg_inf: bool = False  # numbers, dates and timestamps: -Infinity possible
    pos_inf: bool = False
    tamed: bool = False  # dates and timestamps: inside the range pgshroud clamps them to
    within: bool = False  # dates and timestamps: finite and years away from PostgreSQL's limits
    nullable: bool = True
    constant: bool = False  # converted when PostgreSQL parses or plans the statement

    @property
    def magnitude(self) -> Fraction | None:
        """The largest finite absolute value, or None when unknown."""
        if self.low is None or self.high is None:
            return None
        return max(abs(self.low), abs(self.high))

    @property
    def infinite(self) -> bool:
        return self.neg_inf or self.pos_inf


@dataclass(frozen=True)
class ColumnInfo:
    """What the rewriter knows about a column a private query reads."""

    type_name: str
    bounds: tuple[Fraction, Fraction] | None = None
    domain: tuple[str, ...] | None = None  # public values of a group key
    domain_sql: str | None = None  # or a query for them (a public table's column)
    protected: bool = False  # read from a protected table
    unit: bool = False  # the privacy unit
    not_null: bool = False  # declared NOT NULL (so count(col) = count(*))
    facts: Facts | None = None  # what its values can be; None: any value of type_name
    day_bounds: tuple[Fraction, Fraction] | None = None  # a date column's policy bounds, as days since 2000-01-01


Bound = Fraction | None  # None: unbounded on that side
Interval = tuple[Bound, Bound]
UNBOUNDED: Interval = (None, None)


def _epoch(year: int, month: int = 1, day: int = 1) -> Fraction:
    """Seconds from 1970-01-01 to a day of the proleptic Gregorian calendar
    (astronomical years: 1 BC is year 0), as PostgreSQL counts them."""
    y = year - (month <= 2)
    era = y // 400
    of_era = y - era * 400
    of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    of_era_days = of_era * 365 + of_era // 4 - of_era // 100 + of_year
    return Fraction((era * 146097 + of_era_days - 719468) * 86400)


DAY = Fraction(86400)
DATE_TRUNC_UNITS = frozenset(
    ["microseconds", "milliseconds", "second", "minute", "hour", "day", "week", "month", "quarter", "year", "decade"]
)
# date_trunc to these reaches back up to a thousand years, past PostgreSQL's
# earliest timestamp for the earliest dates pgshroud lets through.
FAR_TRUNC_UNITS = frozenset({"century", "millennium"})
DATE_FIELDS = frozenset(["year", "month", "day", "dow", "isodow", "doy", "quarter", "week", "decade", "century", "millennium", "isoyear", "epoch", "julian"])
TIME_FIELDS = DATE_FIELDS | frozenset(["hour", "minute", "second", "milliseconds", "microseconds"])
FRACTION_FIELDS = frozenset(["epoch", "second", "milliseconds", "microseconds"])
INTERVAL_FIELDS = frozenset(
    [
        "year", "month", "day", "quarter", "decade", "century", "millennium", "epoch", "hour", "minute", "second",
        "milliseconds", "microseconds",
    ])
# Fields of finite dates and timestamps that cycle: their ranges whatever the
# value, and NULL (not an infinity) for infinite values.
CYCLIC_FIELDS = {
    "month": (1, 12), "day": (1, 31), "dow": (0, 6), "isodow": (1, 7), "doy": (1, 366), "quarter": (1, 4),
    "week": (1, 53), "hour": (0, 23), "minute": (0, 59), "second": (0, 60), "milliseconds": (0, 60_000),
    "microseconds": (0, 60_000_000),
}
# Years per unit of the fields that grow with the value (year, decade, ...).
YEAR_FIELDS = {"year": 1, "isoyear": 1, "decade": 10, "century": 100, "millennium": 1000}
AVERAGE_YEAR = Fraction(3652425, 10000) * DAY  # of the Gregorian calendar
# The first and last day PostgreSQL's dates hold, 4713 BC and 5874897 AD.
DATE_FIRST, DATE_LAST = _epoch(-4712, 11, 24), _epoch(5874898)
# now(), current_timestamp, current_date, localtimestamp: one value per statement.
ROW_INDEPENDENT_TIMES = (exp.CurrentTimestamp, exp.CurrentDate, exp.Localtimestamp)
# Functions sqlglot does not model, by the name PostgreSQL resolves: the method that checks each.
CALLS = {"statement_timestamp": "_now", "transaction_timestamp": "_now", "age": "_age", "make_date": "_make_date"}
COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)
ARITHMETIC = (exp.Add, exp.Sub, exp.Mul)
ROUNDING = (exp.Round, exp.Trunc, exp.Floor, exp.Ceil)

# Protected numerics are read clamped to this (views.NUMERIC_LIMIT).
TAMED_NUMERIC = Fraction(10) ** 100
# Results of arithmetic stay below this, far from numeric's 10**131072.
MAX_MAGNITUDE = Fraction(10) ** 1000
MAX_LITERAL_DIGITS = 100  # literals, like column values (clamped to 1e100), stay far from it too
NUMERIC_MAX_SCALE = 16383  # numeric rounds products to this many digits after the point
DIVISION_SCALE = 1000  # numeric division rounds to at most this many digits after the point
ROUND_SCALE = 2000  # round(x, d) rounds to at most this many digits after the point
# Differences of dates pgshroud lets through, in days.
DATE_SPAN = Fraction(120_000_000)
MAX_LIKE_WILDCARDS = 16  # each % is a level of recursion in PostgreSQL's LIKE matcher
# char(n) pads every value to n characters: a longer n would let one
# person's rows weigh megabytes each in the query's memory and time.
MAX_CHAR_LENGTH = 1000
_ISO_DATE = re.compile(r"\s*(\d{4})-\d{2}-\d{2}(?:[ T][\d:.]+)?(?:\s*[+-]\d{2}(?::?\d{2})?|Z)?\s*", re.IGNORECASE)

# Dates and timestamps carry bounds in seconds from 1970 (local time for the
# types without a time zone). Between these, every conversion between date
# and timestamp types, in any time zone, and date_trunc to a decade or less
# stay inside PostgreSQL's range: they are the clamps of protected columns
# (views.EARLIEST, LATEST), 4700 BC to 294000 AD.
SAFE_EARLIEST, SAFE_LATEST = _epoch(-4699), _epoch(294000)
# The server clock, for now(), current_date and their kin: no clock is this wrong.
NOW_EARLIEST, NOW_LATEST = _epoch(1970), _epoch(10000)
# Bounds of timestamps with time zone are read in local time, and a statement
# prepared under one time zone may run under another: local readings of one
# instant differ by less than this (POSIX zones reach 167 hours either way).
ZONE_MARGIN = 15 * DAY
# date_trunc moves a value back by at most this much (a decade, and leap days).
TRUNC_REACH = 11 * 366 * DAY
# Upper bounds of interval units in seconds (a month may be 31 days, a day 25 hours).
INTERVAL_UNITS = {
    **dict.fromkeys(("microsecond", "microseconds", "us", "usec", "usecs", "useconds"), Fraction(1, 10 ** 6)),
    **dict.fromkeys(("millisecond", "milliseconds", "ms", "msec", "msecs", "mseconds"), Fraction(1, 1000)),
    **dict.fromkeys(("second", "seconds", "s", "sec", "secs"), Fraction(1)),
    **dict.fromkeys(("minute", "minutes", "m", "min", "mins"), Fraction(60)),
    **dict.fromkeys(("hour", "hours", "h", "hr", "hrs"), Fraction(3600)),
    **dict.fromkeys(("day", "days", "d"), 25 * Fraction(3600)),
    **dict.fromkeys(("week", "weeks", "w"), 7 * 25 * Fraction(3600)),
    **dict.fromkeys(("month", "months", "mon", "mons"), 31 * DAY),
    **dict.fromkeys(("year", "years", "y", "yr", "yrs"), 12 * 31 * DAY),
    **dict.fromkeys(("decade", "decades"), 120 * 31 * DAY),
    **dict.fromkeys(("century", "centuries"), 1200 * 31 * DAY),
    **dict.fromkeys(("millennium", "millennia", "millenniums"), 12000 * 31 * DAY),
}
_INTERVAL_PART = re.compile(r"([+-]?\d+(?:\.\d*)?|[+-]?\.\d+)\s*([a-z]+)")
_INTERVAL_CLOCK = re.compile(r"[+-]?\d{1,9}:\d{1,2}(?::\d{1,2}(?:\.\d*)?)?")


def interval_magnitude(text: str) -> Fraction | None:
    """An upper bound on how far an interval written as text moves a
    timestamp, in seconds; None for what this reading does not cover (ISO
    8601 forms, units it does not know), which is then treated as unknown."""
    words = text.strip().lower().removeprefix("@").strip()
    words = re.sub(r"\s+ago$", "", words)
    total, rest = Fraction(0), words
    clock = _INTERVAL_CLOCK.search(rest)
    if clock is not None:
        parts = [Fraction(p) for p in clock.group(0).lstrip("+-").split(":")]
        total += parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) > 2 else 0)
        rest = rest[:clock.start()] + " " + rest[clock.end():]
    position = 0
    for match in _INTERVAL_PART.finditer(rest):
        if rest[position:match.start()].strip():
            return None
        unit = INTERVAL_UNITS.get(match.group(2))
        if unit is None:
            return None
        total += abs(Fraction(match.group(1))) * unit
        position = match.end()
    if rest[position:].strip() or (position == 0 and clock is None):
        return None
    return total


def time_facts(declared: str, kind: str, low: Fraction | None, high: Fraction | None, *,
               nullable: bool = True) -> Facts:
    """Facts for a finite date or timestamp between `low` and `high` (seconds
    from 1970): tamed and within when inside the safe range."""
    safe = (low is not None and high is not None
            and SAFE_EARLIEST - ZONE_MARGIN <= low and high <= SAFE_LATEST + ZONE_MARGIN)
    return Facts(declared, kind, low, high, tamed=safe, within=safe, nullable=nullable)


def _now_facts(kind: str) -> Facts:
    return time_facts(kind, kind, NOW_EARLIEST - ZONE_MARGIN, NOW_LATEST + ZONE_MARGIN, nullable=False)


def _bound_sql(value: Fraction) -> str:
    """A bound as the analyst would write it in a clamp."""
    if value.denominator == 1:
        return str(value.numerator)
    return format(Decimal(value.numerator) / Decimal(value.denominator), "f")


def _round_half_away(value: Fraction, places: int) -> Fraction:
    """numeric's rounding to `places` digits after the point (negative: before it)."""
    scale = Fraction(10) ** places
    rounded = math.floor(abs(value) * scale + Fraction(1, 2))
    return (rounded if value >= 0 else -rounded) / scale


def _truncate(value: Fraction, places: int) -> Fraction:
    scale = Fraction(10) ** places
    return math.trunc(value * scale) / scale


def literal_number(node: exp.Expr) -> Fraction | None:
    """The value of a numeric literal (with sign and parentheses), else None."""
    if isinstance(node, exp.Paren):
        return literal_number(node.this)
    if isinstance(node, exp.Neg):
        inner = literal_number(node.this)
        return None if inner is None else -inner
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return Fraction(node.this)
        except (ValueError, ZeroDivisionError):
            return None
    return None


def literal_string(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Literal) and node.is_string:
        return str(node.this)
    if isinstance(node, exp.Var):
        return node.name
    return None


def _number_text(text: str) -> tuple[Fraction | None, int]:
    """A numeric literal's value and scale (digits after the point)."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None, 0
    if not value.is_finite():
        return None, 0
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return Fraction(value), max(0, -exponent)


def type_facts(sql_type: t.SqlType, *, tamed: bool, declared: str | None = None) -> Facts:
    """Facts for any value of a type: a column's, read through pgshroud's
    view of a protected table (`tamed`) or as PostgreSQL stores it."""
    name = sql_type.name
    facts = Facts(declared or name, name)
    if name in t.INTEGER_RANGES:
        low, high = t.INTEGER_RANGES[name]
        return replace(facts, low=Fraction(low), high=Fraction(high), scale=0)
    if name == "numeric":
        if sql_type.modifier:
            precision, scale = sql_type.modifier
            limit = Fraction(10) ** (precision - scale) - Fraction(10) ** (-scale)
            return replace(facts, low=-limit, high=limit, scale=max(scale, 0), nan=True)
        if tamed:
            return replace(facts, low=-TAMED_NUMERIC, high=TAMED_NUMERIC, nan=True)
        return replace(facts, nan=True, neg_inf=True, pos_inf=True)
    if name in t.FLOATS:
        limit = t.FLOAT_MAX[name]
        return replace(facts, low=-limit, high=limit, scale=t.FLOAT_SCALE[name], nan=True, neg_inf=True,
                       pos_inf=True)
    if name in t.TIMES:
        if tamed:
            return replace(facts, low=SAFE_EARLIEST, high=SAFE_LATEST, tamed=True, within=True)
        return replace(facts, neg_inf=True, pos_inf=True)
    if name == "interval":
        return facts  # of unknown size
    if name not in t.OIDS or name == "unknown":
        return Facts(declared or "unknown", "other")
    return facts


def column_facts(format_type: str, *, tamed: bool) -> Facts:
    """Facts for a table column of a type as `format_type` spells it."""
    sql_type = t.parse_format_type(format_type)
    return type_facts(sql_type, tamed=tamed)


def bounded_facts(declared: str, low: Fraction, high: Fraction, *, integer: bool = False) -> Facts:
    """Facts for a value pgshroud clamps to [low, high] itself (NULL or a number)."""
    return Facts(declared, "bigint" if integer else "numeric", low, high, 0 if integer else None)


NO_VALUE = Facts("unknown", "unknown", Fraction(0), Fraction(0), 0, tamed=True, within=True, constant=True)


def _refuse_unknown_magnitude(what: str) -> ExpressionRefused:
    return ExpressionRefused(
        f"{what} could be as large as numeric allows, so arithmetic on it could overflow; "
        f"clamp it first: least(greatest({what}, <low>), <high>)"
    )


class RowExpressions:
    """Checks, types and bounds row-level expressions; `resolve` maps a
    column reference to what is known about it (or raises ExpressionRefused)."""

    def __init__(self, resolve: Callable[[exp.Column], ColumnInfo]) -> None:
        self.resolve = resolve

    # the public face: checking, typing and the SQL come from one pass

    def type_of(self, node: exp.Expr) -> str:
        """The expression's type as PostgreSQL resolves it; raises
        ExpressionRefused for what may fail on some value."""
        return self._emit(node)[1].declared

    def facts_of(self, node: exp.Expr) -> Facts:
        """What is certain about the values of the expression's SQL."""
        return self._emit(node)[1]

    def safe_sql(self, node: exp.Expr) -> str:
        """The expression as SQL whose evaluation cannot fail."""
        return self.safe_node(node).sql("postgres")

    def safe_node(self, node: exp.Expr) -> exp.Expr:
        """A copy of the expression as PostgreSQL must evaluate it: number
        operands of arithmetic cast to numeric, integer division truncating,
        floats matched with computed numerics as numeric."""
        return self._emit(node)[0]

    # one node

    def _emit(self, node: exp.Expr) -> tuple[exp.Expr, Facts]:
        if isinstance(node, exp.Column):
            if isinstance(node.this, exp.Star):
                raise ExpressionRefused("a whole-row reference cannot be used in a private query; name the columns")
            info = self.resolve(node)
            facts = info.facts or type_facts(t.SqlType(info.type_name), tamed=info.protected)
            # A column is read per row, even one a subquery fills with a constant.
            return node.copy(), replace(facts, declared=info.type_name, nullable=True, constant=False)
        if isinstance(node, exp.Literal):
            return node.copy(), self._literal(node)
        if isinstance(node, exp.Null):
            return node.copy(), NO_VALUE
        if isinstance(node, exp.Parameter):
            # A bind value: converted to the type its context gives it at Bind,
            # before any row is read (see the module's account of parameters).
            # Its value is the analyst's: it bounds nothing.
            return node.copy(), Facts("unknown", "unknown")
        if isinstance(node, exp.Boolean):
            return node.copy(), Facts("boolean", "boolean", nullable=False, constant=True)
        if isinstance(node, exp.Paren):
            inner, facts = self._emit(node.this)
            return exp.Paren(this=inner), facts
        if isinstance(node, exp.Neg):
            return self._negate(node)
        if isinstance(node, ARITHMETIC):
            return self._arithmetic(node)
        if isinstance(node, (exp.Div, exp.Mod)):
            return self._division(node)
        if isinstance(node, COMPARISONS):
            (left, right), _ = self._unify([node.this, node.expression], "compare")
            return _rebuild(node, this=left[0], expression=right[0]), self._boolean([left[1], right[1]])
        if isinstance(node, (exp.And, exp.Or)):
            left, right = self._condition(node.this), self._condition(node.expression)
            return _rebuild(node, this=left[0], expression=right[0]), self._boolean([left[1], right[1]])
        if isinstance(node, exp.Not):
            inner, facts = self._condition(node.this)
            return _rebuild(node, this=inner), self._boolean([facts])
        if isinstance(node, exp.Is):
            inner, facts = self._emit(node.this)
            if not isinstance(node.expression, (exp.Null, exp.Boolean)):
                raise ExpressionRefused("IS takes NULL, TRUE or FALSE in a private query")
            if isinstance(node.expression, exp.Boolean) and facts.declared not in ("boolean", "unknown"):
                raise ExpressionRefused(f"IS TRUE and IS FALSE need a boolean, got {facts.declared}")
            return _rebuild(node, this=inner), Facts("boolean", "boolean", nullable=False)
        if isinstance(node, exp.Between):
            (this, low, high), _ = self._unify([node.this, node.args["low"], node.args["high"]], "compare")
            return (_rebuild(node, this=this[0], low=low[0], high=high[0]),
                    self._boolean([this[1], low[1], high[1]]))
        if isinstance(node, exp.In):
            if any(node.args.get(k) is not None for k in ("query", "unnest", "field")):
                raise ExpressionRefused("IN takes a list of values in a private query")
            parts, _ = self._unify([node.this, *node.expressions], "compare")
            return (_rebuild(node, this=parts[0][0], expressions=[p[0] for p in parts[1:]]),
                    self._boolean([p[1] for p in parts]))
        if isinstance(node, (exp.Like, exp.ILike)):
            return self._like(node)
        if isinstance(node, exp.Case):
            return self._case(node)
        if isinstance(node, (exp.Coalesce, exp.Least, exp.Greatest)):
            return self._choice(node)
        if isinstance(node, exp.Nullif):
            # The first value, or NULL, as the comparison takes it.
            (value, other), _ = self._unify([node.this, node.expression], "compare")
            declared = t.nullif_type(value[1].declared, other[1].declared)
            kind = t.nullif_type(value[1].type, other[1].type)
            scale = t.FLOAT_SCALE[kind] if kind in t.FLOATS else value[1].scale
            return _rebuild(node, this=value[0], expression=other[0]), replace(
                value[1], declared=declared, type=kind, scale=scale, nullable=True, constant=False)
        if isinstance(node, exp.Cast):
            return self._cast(node)
        if isinstance(node, exp.TimestampTrunc):
            return self._date_trunc(node)
        if isinstance(node, exp.Extract):
            return self._extract(node)
        if isinstance(node, ROW_INDEPENDENT_TIMES):
            return self._now(node)
        if isinstance(node, exp.Interval):
            return self._interval(node)
        if isinstance(node, exp.TimeToStr):
            return self._to_char(node)
        if isinstance(node, (exp.StrToDate, exp.StrToTime)):
            return self._to_date(node)
        if isinstance(node, exp.AtTimeZone):
            return self._at_time_zone(node)
        if isinstance(node, exp.Anonymous) and node.name.lower() in CALLS:
            call: Callable[[exp.Anonymous], tuple[exp.Expr, Facts]] = getattr(self, CALLS[node.name.lower()])
            return call(node)
        if isinstance(node, (exp.Lower, exp.Upper, exp.Length)):
            inner, facts = self._emit(node.this)
            if facts.type not in t.TEXTS and facts.type != "unknown":
                raise ExpressionRefused(f"{node.key}() needs text in a private query, got {facts.declared}: "
                                        f"cast it to text first")
            if isinstance(node, exp.Length):
                result = Facts("integer", "integer", Fraction(0), Fraction(2 ** 30), 0)
            else:
                result = Facts("text", "text")
            return _rebuild(node, this=inner), result
        if isinstance(node, exp.Abs):
            return self._abs(node)
        if isinstance(node, ROUNDING):
            return self._rounding(node)
        raise ExpressionRefused(
            f"{_short(node)} is not allowed over rows of a private query (what a private query may compute "
            "is limited to what cannot fail on any value, since an error would reveal that such a value "
            "exists); use arithmetic, comparisons, CASE, coalesce, least, greatest, nullif, casts, abs, round, "
            "trunc, floor, ceil, date_trunc, extract, date_part, age, make_date, to_char, now(), current_date, "
            "interval literals, lower, upper, length or LIKE"
        )

    # literals

    def _literal(self, node: exp.Literal) -> Facts:
        if node.is_string:
            return Facts("unknown", "unknown", nullable=False, constant=True)
        value, scale = _number_text(node.this)
        if value is None:
            raise ExpressionRefused(f"{node.this} is not a number")
        if value and not -MAX_LITERAL_DIGITS <= Decimal(node.this).adjusted() <= MAX_LITERAL_DIGITS:
            raise ExpressionRefused(
                f"numbers above 1e{MAX_LITERAL_DIGITS} or below 1e-{MAX_LITERAL_DIGITS} in magnitude "
                "are not allowed in a private query"
            )
        if node.this.isdigit():
            declared = next((name for name, (low, high) in t.INTEGER_RANGES.items()
                             if name != "smallint" and low <= value <= high), "numeric")
        else:
            declared = "numeric"
        return Facts(declared, declared, value, value, scale, nullable=False, constant=True)

    def _adopt(self, node: exp.Expr, facts: Facts, target: str) -> Facts:
        """A string literal, NULL or bind parameter in a context of type `target`:
        PostgreSQL gives it that type when it parses the statement or binds."""
        if isinstance(node, exp.Paren):
            return self._adopt(node.this, facts, target)
        if isinstance(node, exp.Null):
            return replace(NO_VALUE, declared=target, type=target)
        if isinstance(node, exp.Literal) and node.is_string:
            return _typed_literal(node.this, t.SqlType(target))
        return type_facts(t.SqlType(target), tamed=False)

    # arithmetic

    def _number(self, node: exp.Expr, what: str,
                emitted: tuple[exp.Expr, Facts] | None = None) -> tuple[exp.Expr, Facts]:
        """An operand of arithmetic or of a numeric function, as numeric."""
        sql, facts = emitted or self._emit(node)
        if facts.type == "unknown" and isinstance(node, exp.Parameter):
            facts = replace(self._adopt(node, facts, "numeric"), declared="unknown")
        if facts.type not in t.NUMBERS:
            raise ExpressionRefused(f"{what} needs numbers in a private query, got {facts.declared}")
        if facts.type == "numeric" or literal_number(node) is not None:
            return sql, replace(facts, type="numeric")
        if facts.type in t.FLOATS:
            return _numeric_from_float(sql, facts)
        return exp.Cast(this=exp.Paren(this=sql), to=exp.DataType.build("numeric")), replace(facts, type="numeric")

    def _checked(self, facts: Facts, node: exp.Expr, *operands: tuple[exp.Expr, Facts]) -> Facts:
        """Arithmetic's result, refused if numeric could overflow; the message
        names the operand whose size is unknown."""
        magnitude = facts.magnitude
        if magnitude is None:
            unknown = [operand for operand, known in operands if known.magnitude is None]
            raise _refuse_unknown_magnitude(_short(unknown[0] if unknown else node))
        if magnitude > MAX_MAGNITUDE:
            raise ExpressionRefused(
                f"{_short(node)} could reach 1e{len(str(math.floor(magnitude))) - 1} in magnitude, too close "
                "to numeric's limit: clamp its operands with least(greatest(x, <low>), <high>)"
            )
        return facts

    def _negate(self, node: exp.Neg) -> tuple[exp.Expr, Facts]:
        value = literal_number(node)
        if value is not None:
            _, facts = self._emit(node.this)
            return node.copy(), replace(facts, low=value, high=value)
        inner, facts = self._number(node.this, "-")
        declared = facts.declared if facts.declared != "unknown" else "numeric"
        return exp.Neg(this=inner), replace(
            facts, declared=declared, low=None if facts.high is None else -facts.high,
            high=None if facts.low is None else -facts.low, neg_inf=facts.pos_inf, pos_inf=facts.neg_inf)

    def _arithmetic(self, node: exp.Expr) -> tuple[exp.Expr, Facts]:
        left, right = self._emit(node.this), self._emit(node.expression)
        if left[1].type in t.TIMES or right[1].type in t.TIMES:
            return self._date_arithmetic(node, left, right)
        a_node, a = self._number(node.this, "arithmetic", left)
        b_node, b = self._number(node.expression, "arithmetic", right)
        if a.constant and b.constant:
            a_node = _numeric_constant(a_node)
        declared = t.arithmetic(_as_number(a.declared), _as_number(b.declared))
        if isinstance(node, exp.Mul):
            low, high = _product(a, b)
            scale = None if a.scale is None or b.scale is None else min(a.scale + b.scale, NUMERIC_MAX_SCALE)
            infinite = a.infinite or b.infinite
            neg_inf = pos_inf = infinite
        else:
            if isinstance(node, exp.Sub):
                b = replace(b, low=None if b.high is None else -b.high, high=None if b.low is None else -b.low,
                            neg_inf=b.pos_inf, pos_inf=b.neg_inf)
            low = None if a.low is None or b.low is None else a.low + b.low
            high = None if a.high is None or b.high is None else a.high + b.high
            scale = None if a.scale is None or b.scale is None else max(a.scale, b.scale)
            neg_inf, pos_inf = a.neg_inf or b.neg_inf, a.pos_inf or b.pos_inf
        facts = Facts(declared, "numeric", low, high, scale, nan=a.nan or b.nan or a.infinite or b.infinite,
                      neg_inf=neg_inf, pos_inf=pos_inf, nullable=a.nullable or b.nullable,
                      constant=a.constant and b.constant)
        return (_rebuild(node, this=a_node, expression=b_node),
                self._checked(facts, node, (node.this, a), (node.expression, b)))

    def _date_arithmetic(self, node: exp.Expr, left: tuple[exp.Expr, Facts],
                         right: tuple[exp.Expr, Facts]) -> tuple[exp.Expr, Facts]:
        if isinstance(node, exp.Sub) and left[1].type == right[1].type == "date":
            if not (left[1].within and right[1].within):
                raise ExpressionRefused("subtracting dates fails for infinite dates; only dates of protected "
                                        "tables (read without infinities) may be subtracted in a private query")
            facts = Facts("integer", "integer", -DATE_SPAN, DATE_SPAN, 0,
                          nullable=left[1].nullable or right[1].nullable)
            return _rebuild(node, this=left[0], expression=right[0]), facts
        if isinstance(node, exp.Sub) and left[1].type in t.TIMES and right[1].type in t.TIMES:
            raise ExpressionRefused(
                "subtracting timestamps can overflow an interval for timestamps far apart; "
                "subtract their epochs instead: extract(epoch FROM a) - extract(epoch FROM b) (seconds), "
                "subtract dates (days), or use age(a, b)"
            )
        if isinstance(node, exp.Mul):
            raise ExpressionRefused(f"{_short(node)}: dates and timestamps cannot be multiplied")
        base, step = left[1], right[1]
        if isinstance(node, exp.Add) and base.type not in t.TIMES:
            base, step = step, base
        if base.type not in t.TIMES:
            raise ExpressionRefused(f"{_short(node)}: a date or timestamp can only be subtracted from another")
        if step.declared == "interval":
            reach = step.magnitude
            kind = "timestamp without time zone" if base.type == "date" else base.type
        elif base.type == "date" and step.type in ("integer", "smallint"):
            reach = None if step.magnitude is None else step.magnitude * DAY
            kind = "date"
        else:
            raise ExpressionRefused(f"{_short(node)}: dates take whole days (integers) or intervals, "
                                    f"timestamps intervals; got {step.declared}")
        moved = None if reach is None or base.low is None or base.high is None else (
            time_facts(kind, kind, base.low - reach, base.high + reach, nullable=base.nullable or step.nullable))
        if moved is None or not moved.within:
            raise ExpressionRefused(
                f"date arithmetic such as {_short(node)} could leave the range of dates and timestamps, and the "
                "error would reveal such a row; a private query may move now(), current_date, literal dates and "
                "dates of protected tables by intervals written as literals (interval '30 days') or whole days, "
                "where the result stays between 4700 BC and 294000 AD: compute other dates in the client and "
                "compare with them"
            )
        emitted = _rebuild(node, this=left[0], expression=right[0])
        return emitted, moved

    def _division(self, node: exp.Expr) -> tuple[exp.Expr, Facts]:
        divisor = literal_number(node.expression)
        if divisor is None or divisor == 0:
            raise ExpressionRefused(
                "a private query may divide only by a nonzero literal: a division by a column fails "
                "for a zero value, and that error would reveal that such a row exists; divide the "
                "aggregates instead (sum(a) / sum(b))"
            )
        dividend_node, dividend = self._number(node.this, "/" if isinstance(node, exp.Div) else "%")
        if dividend.constant:
            dividend_node = _numeric_constant(dividend_node)
        divisor_node, divisor_facts = self._emit(node.expression)
        if dividend.declared in t.FLOATS and isinstance(node, exp.Mod):
            raise ExpressionRefused(f"% is not defined for {dividend.declared}; cast it to numeric first")
        declared_divisor = _as_number(divisor_facts.declared)
        integers = dividend.declared in t.INTEGERS and declared_divisor in t.INTEGERS
        # _rebuild keeps `typed`: without it sqlglot writes x / y as CAST(x AS DOUBLE PRECISION) / y.
        result: exp.Expr = _rebuild(node, this=dividend_node, expression=divisor_node)
        if isinstance(node, exp.Mod):
            declared = t.arithmetic(dividend.declared, declared_divisor) if integers else "numeric"
            limit = abs(divisor)
            lowest = Fraction(0) if dividend.low is not None and dividend.low >= 0 else -limit
            highest = Fraction(0) if dividend.high is not None and dividend.high <= 0 else limit
            if dividend.low is not None:
                lowest = max(lowest, min(dividend.low, Fraction(0)))
            if dividend.high is not None:
                highest = min(highest, max(dividend.high, Fraction(0)))
            scale = None if dividend.scale is None else max(dividend.scale, divisor_facts.scale or 0)
            facts = Facts(declared, "numeric", lowest, highest, scale, nan=dividend.nan or dividend.infinite,
                          nullable=dividend.nullable)
            return result, facts
        declared = t.arithmetic(_as_number(dividend.declared), declared_divisor)
        bounds = [None if b is None else b / divisor for b in (dividend.low, dividend.high)]
        low, high = (bounds[0], bounds[1]) if divisor > 0 else (bounds[1], bounds[0])
        flip = divisor < 0
        facts = Facts(declared, "numeric", low, high, DIVISION_SCALE, nan=dividend.nan,
                      neg_inf=dividend.pos_inf if flip else dividend.neg_inf,
                      pos_inf=dividend.neg_inf if flip else dividend.pos_inf, nullable=dividend.nullable,
                      constant=dividend.constant)
        if integers:
            # Integer division truncates.
            result = exp.func("trunc", result)
            facts = replace(facts, scale=0)
        return result, self._checked(facts, node, (node.this, dividend))

    def _abs(self, node: exp.Abs) -> tuple[exp.Expr, Facts]:
        inner, facts = self._number(node.this, "abs")
        if facts.constant:
            inner = _numeric_constant(inner)  # abs(5) would be integer, the facts are numeric's
        declared = facts.declared if facts.declared != "unknown" else "numeric"
        if facts.low is None or facts.high is None:
            low, high = Fraction(0), None
        else:
            low = Fraction(0) if facts.low <= 0 <= facts.high else min(abs(facts.low), abs(facts.high))
            high = max(abs(facts.low), abs(facts.high))
        return _rebuild(node, this=inner), replace(facts, declared=declared, low=low, high=high, neg_inf=False,
                                                   pos_inf=facts.infinite)

    def _rounding(self, node: exp.Expr) -> tuple[exp.Expr, Facts]:
        name = node.key.lower()
        inner, facts = self._number(node.this, name)
        if facts.constant:
            inner = _numeric_constant(inner)  # floor(5) would be double precision, the facts are numeric's
        digits_node = node.args.get("decimals")
        places = 0
        if digits_node is not None:
            digits = literal_number(digits_node)
            if digits is None or digits.denominator != 1:
                raise ExpressionRefused(f"{name}() takes a literal whole number of digits in a private query")
            if facts.declared in t.FLOATS:
                raise ExpressionRefused(f"{name}(x, digits) is defined for numeric, not {facts.declared}: "
                                        f"write {name}(CAST(x AS numeric), {digits})")
            places = max(-ROUND_SCALE, min(int(digits), ROUND_SCALE))
        if digits_node is not None or facts.declared in ("numeric", "unknown"):
            declared = "numeric"
        else:
            declared = "double precision"  # round(int) is round(double precision), as PostgreSQL resolves it
        if isinstance(node, exp.Floor):
            move: Callable[[Fraction], Fraction] = lambda v: Fraction(math.floor(v))
        elif isinstance(node, exp.Ceil):
            move = lambda v: Fraction(math.ceil(v))
        elif isinstance(node, exp.Trunc):
            move = lambda v: _truncate(v, places)
        else:
            move = lambda v: _round_half_away(v, places)
        low = None if facts.low is None else move(facts.low)
        high = None if facts.high is None else move(facts.high)
        result = replace(facts, declared=declared, low=low, high=high, scale=max(places, 0))
        return _rebuild(node, this=inner), self._checked(result, node, (node.this, facts))

    # conditions

    def _condition(self, node: exp.Expr) -> tuple[exp.Expr, Facts]:
        emitted, facts = self._emit(node)
        if facts.declared not in ("boolean", "unknown"):
            raise ExpressionRefused(f"a condition must be a boolean, got {facts.declared}")
        return emitted, facts

    @staticmethod
    def _boolean(parts: list[Facts]) -> Facts:
        return Facts("boolean", "boolean", nullable=any(p.nullable for p in parts))

    def _like(self, node: exp.Expr) -> tuple[exp.Expr, Facts]:
        inner, facts = self._emit(node.this)
        if facts.type not in t.TEXTS and facts.type != "unknown":
            raise ExpressionRefused(f"LIKE needs text in a private query, got {facts.declared}")
        if _bound_text(node.expression):
            # A pattern bound as a parameter (Django's icontains, SQLAlchemy's contains): NULL
            # when it would fail, as a literal pattern of that kind is refused.
            return _rebuild(node, this=inner, expression=_guarded_pattern(node.expression)), self._boolean([facts])
        pattern = literal_string(node.expression)
        if pattern is None or _bad_like_pattern(pattern):
            raise ExpressionRefused("LIKE needs a literal pattern that does not end in an escape character")
        if len(re.findall(r"%+", pattern)) > MAX_LIKE_WILDCARDS:
            raise ExpressionRefused(f"a LIKE pattern may have at most {MAX_LIKE_WILDCARDS} runs of % in a "
                                    "private query (each one deepens PostgreSQL's matching, up to its stack limit)")
        return _rebuild(node, this=inner), self._boolean([facts])

    # choosing among values

    def _unify(self, nodes: list[exp.Expr], verb: str) -> tuple[list[tuple[exp.Expr, Facts]], str]:
        """Values PostgreSQL resolves to one type (operands of a comparison,
        results of CASE, arguments of COALESCE, ...), with the conversions it
        makes shown safe. A float that meets a computed numeric is compared
        as numeric, since the numeric may not fit the float."""
        parts = [self._emit(node) for node in nodes]
        try:
            declared = t.common_type([facts.declared for _, facts in parts])
        except ValueError:
            kinds = " and ".join(dict.fromkeys(facts.declared for _, facts in parts))
            raise ExpressionRefused(f"cannot {verb} {kinds} in a private query; cast one to the other's "
                                    "type") from None
        for facts in (f for _, f in parts):
            if facts.type == "other":
                raise ExpressionRefused(f"values of type {facts.declared} cannot be used in a private query "
                                        "beyond counting them")
        adopted = [(emitted, self._adopt(node, facts, declared) if facts.type == "unknown" else facts)
                   for node, (emitted, facts) in zip(nodes, parts)]
        if t.category(declared) == "N":
            computed = any(f.type == "numeric" and not f.constant for _, f in adopted)
            if computed:
                adopted = [(_numeric_from_float(e, f) if f.type in t.FLOATS else (e, f)) for e, f in adopted]
        elif t.category(declared) == "D":
            common = t.common_type([f.type for _, f in adopted])
            for node, (_, facts) in zip(nodes, adopted):
                if facts.type != common and not facts.within:
                    raise ExpressionRefused(
                        f"to {verb} {facts.declared} with {common}, PostgreSQL converts "
                        f"{_short(node)}, which fails for dates near or beyond the ends of the timestamp "
                        f"range; {verb} it with a value of its own type ({facts.declared})"
                    )
        return adopted, declared

    def _case(self, node: exp.Case) -> tuple[exp.Expr, Facts]:
        ifs = node.args.get("ifs") or []
        conditions: list[exp.Expr] = []
        subject_node = None
        if node.this is not None:
            (subject, *values), _ = self._unify([node.this, *(branch.this for branch in ifs)], "compare")
            conditions = [value for value, _ in values]
            subject_node = subject[0]
        else:
            conditions = [self._condition(branch.this)[0] for branch in ifs]
        results = [branch.args["true"] for branch in ifs]
        default = node.args.get("default")
        # PostgreSQL resolves the type of CASE from its ELSE first.
        parts, declared = self._unify(([default] if default is not None else []) + results, "mix")
        otherwise, chosen = (parts[0][0], parts[1:]) if default is not None else (None, parts)
        new_ifs = [exp.If(this=condition, true=part[0]) for condition, part in zip(conditions, chosen)]
        branch_facts = [f for _, f in parts]
        facts = _union(branch_facts, declared, nullable=default is None or any(f.nullable for f in branch_facts))
        return exp.Case(this=subject_node, ifs=new_ifs, default=otherwise), facts

    def _choice(self, node: exp.Expr) -> tuple[exp.Expr, Facts]:
        parts, declared = self._unify([node.this, *node.expressions], "mix")
        rebuilt = _rebuild(node, this=parts[0][0], expressions=[p[0] for p in parts[1:]])
        values = [f for _, f in parts]
        if isinstance(node, exp.Coalesce):
            return rebuilt, _union(values, declared, nullable=all(v.nullable for v in values))
        return rebuilt, _extreme(values, declared, least=isinstance(node, exp.Least))

    # casts

    def _cast(self, node: exp.Cast) -> tuple[exp.Expr, Facts]:
        target = t.cast_target(node.to)
        if target is None:
            raise ExpressionRefused(
                f"a cast to {node.to.sql('postgres')} is not allowed in a private query (casts may go to "
                "numbers, text, varchar, char, dates, timestamps, boolean and interval)"
            )
        source = node.this
        while isinstance(source, exp.Paren):
            source = source.this
        if isinstance(source, exp.Literal) and source.is_string:
            # Converted when PostgreSQL parses the statement, row or no row.
            return node.copy(), _typed_literal(source.this, target)
        if isinstance(source, exp.Null):
            return node.copy(), replace(NO_VALUE, declared=target.name, type=target.name)
        if isinstance(source, exp.Parameter):
            if target.name == "numeric" and target.modifier:
                raise ExpressionRefused(
                    f"a bind parameter cast to {target} is checked against its precision for every row; "
                    "cast it to numeric and pass a value that already has the precision you want"
                )
            if target.name == "interval":
                return _bounded_interval(node), Facts("interval", "interval", -PARAMETER_INTERVAL_REACH,
                                                      PARAMETER_INTERVAL_REACH)
            return node.copy(), type_facts(target, tamed=False)
        text = _constant_text(source)
        if text is not None and target.name == "interval":
            # Text built of literals, converted for each row but always alike (Looker's (-11 || ' month')::INTERVAL).
            magnitude = interval_magnitude(text)
            if magnitude is None or magnitude > MAX_TEXT_INTERVAL:
                raise ExpressionRefused(f"{_short(node)}: write the interval as a literal, e.g. interval '30 days'")
            return node.copy(), Facts("interval", "interval", -magnitude, magnitude, nullable=False)
        inner, facts = self._emit(node.this)
        converted, result = self._convert(inner, facts, target, node.this)
        return _rebuild(node, this=converted), result

    def _convert(self, inner: exp.Expr, facts: Facts, target: t.SqlType,
                 source: exp.Expr) -> tuple[exp.Expr, Facts]:
        """An explicit cast of values with these facts to `target`: the SQL to
        cast and what the result can be; refused if it can fail."""
        name, kind = target.name, facts.type
        described = f"{facts.declared} to {target}"
        if name in t.TEXTS:
            if kind == "other":
                raise ExpressionRefused(f"a cast of {facts.declared} is not allowed in a private query")
            if name == "character" and target.modifier and target.modifier[0] > MAX_CHAR_LENGTH:
                raise ExpressionRefused(f"char(n) pads every value to n characters, so n may be at most "
                                        f"{MAX_CHAR_LENGTH} in a private query; cast to varchar(n) or text")
            # Output functions do not fail; explicit casts to varchar(n) and char(n) truncate.
            return inner, Facts(name, name, nullable=facts.nullable)
        if kind in t.TEXTS or kind == "unknown":
            raise ExpressionRefused(
                f"a cast from {described} fails for text that is not a valid {name}, so a private query may "
                f"not use it; compare the text itself instead (e.g. {_short(source)} = '...')"
            )
        if name == "boolean" or kind == "boolean":
            if (kind, name) in (("boolean", "boolean"), ("boolean", "integer"), ("integer", "boolean")):
                low, high = (Fraction(0), Fraction(1)) if name == "integer" else (None, None)
                return inner, Facts(name, name, low, high, 0, nullable=facts.nullable)
            raise ExpressionRefused(f"a cast from {described} is not allowed in a private query")
        if kind in t.NUMBERS and name in t.NUMBERS:
            return self._convert_number(inner, facts, target, source)
        if kind in t.TIMES and name in t.TIMES:
            needs_range = not (kind == name or (kind == "timestamp without time zone" and name == "date"))
            if needs_range and not facts.within:
                raise ExpressionRefused(
                    f"a cast from {described} fails for values near or beyond the ends of the timestamp "
                    f"range, which {_short(source)} may hold; a private query may convert only dates and "
                    "timestamps of protected tables (read inside a safe range)"
                )
            return inner, replace(facts, declared=name, type=name, constant=False)
        if kind == name == "interval":
            return inner, replace(facts, declared=name, constant=False)
        raise ExpressionRefused(f"a cast from {described} is not allowed in a private query")

    def _convert_number(self, inner: exp.Expr, facts: Facts, target: t.SqlType,
                        source: exp.Expr) -> tuple[exp.Expr, Facts]:
        name, kind = target.name, facts.type
        what = _short(source)
        if kind in t.FLOATS and name not in t.FLOATS:
            facts = _float_as_numeric(facts)
        problems = []
        if name in t.INTEGER_RANGES or (name == "numeric" and target.modifier):
            if name == "numeric":
                precision, scale = target.modifier
                limit = Fraction(10) ** (precision - scale)
                largest = limit - Fraction(10) ** (-scale)
                place = scale
            else:
                largest = Fraction(t.INTEGER_RANGES[name][1])
                limit, place = largest + 1, 0
            if name != "numeric" and facts.nan:
                problems.append("NaN")
            if facts.infinite:
                problems.append("infinities")
            magnitude = facts.magnitude
            rounded = None if magnitude is None else _round_half_away(magnitude, place)
            if rounded is None or rounded >= limit:
                problems.append(f"values that round to {_bound_sql(limit)} or more in magnitude")
            if problems:
                clamp = f"least(greatest({what}, {_bound_sql(-largest)}), {_bound_sql(largest)})"
                instead = (f"cast to numeric without a precision, or clamp it first: CAST({clamp} AS {target})"
                           if name == "numeric" else f"clamp it first: CAST({clamp} AS {target})")
                raise ExpressionRefused(
                    f"a cast from {kind} to {target} fails for {' and '.join(problems)}, which {what} may "
                    f"hold, and the error would reveal such a row; {instead}"
                )
            low = None if facts.low is None else _round_half_away(facts.low, place)
            high = None if facts.high is None else _round_half_away(facts.high, place)
            return inner, replace(facts, declared=name, type=name, low=low, high=high, scale=max(place, 0),
                                  nan=facts.nan and name == "numeric", constant=False)
        if name == "numeric":
            return inner, replace(facts, declared=name, type=name, constant=False)
        # A float type: from integers and narrower floats always fits.
        if kind in t.INTEGERS or kind == name or (kind == "real" and name == "double precision"):
            return inner, replace(facts, declared=name, type=name, scale=t.FLOAT_SCALE[name], constant=False)
        if kind == "double precision":
            raise ExpressionRefused(f"a cast from double precision to real fails for values beyond real's "
                                    f"range, which {what} may hold; keep it double precision or cast it to numeric")
        limit = t.FLOAT_MAX[name] / 2
        magnitude = facts.magnitude
        if magnitude is None or magnitude > limit:
            largest = Fraction(10) ** (38 if name == "real" else 307)
            raise ExpressionRefused(
                f"a cast from numeric to {name} fails for values beyond its range, which {what} may hold, "
                f"and the error would reveal such a row; clamp it first: "
                f"CAST(least(greatest({what}, -{largest}), {largest}) AS {name})"
            )
        digits = t.FLOAT_DIGITS[name]
        if facts.scale is None or facts.scale > digits:
            # Below half the smallest subnormal the conversion fails rather than give 0.
            inner = exp.func("round", inner, exp.Literal.number(digits))
        return inner, replace(facts, declared=name, type=name, scale=t.FLOAT_SCALE[name], constant=False)

    # dates and times

    def _date_trunc(self, node: exp.TimestampTrunc) -> tuple[exp.Expr, Facts]:
        unit_node = node.args.get("unit") or exp.Null()
        unit = literal_string(unit_node)
        if node.args.get("zone") is not None:
            raise ExpressionRefused("date_trunc takes two arguments in a private query (a time zone argument is "
                                    "read for every row, and an invalid one fails there)")
        bound = _bound_unit(unit_node)
        if bound is not None:
            unit = "month"  # checked below as any unit it may name
        if unit is not None and unit.lower() in FAR_TRUNC_UNITS:
            raise ExpressionRefused(f"date_trunc('{unit.lower()}', ...) can leave the timestamp range for the "
                                    f"earliest dates; use extract({unit.lower()} FROM ...) instead")
        if unit is None or unit.lower() not in DATE_TRUNC_UNITS:
            raise ExpressionRefused("date_trunc needs a literal unit such as 'month' in a private query")
        inner, facts = self._emit(node.this)
        if facts.type not in t.TIMES:
            raise ExpressionRefused(f"date_trunc needs a date or timestamp, got {facts.declared}")
        if not facts.tamed:
            raise ExpressionRefused(
                f"date_trunc fails for timestamps near the start of the timestamp range, which "
                f"{_short(node.this)} may hold; a private query may truncate dates and timestamps of "
                "protected tables (read inside a safe range), not results of date_trunc or casts of text"
            )
        declared = ("timestamp without time zone" if facts.type == "timestamp without time zone"
                    else "timestamp with time zone")
        # Back by at most a decade: still years away from PostgreSQL's limits, though outside the clamps.
        low = None if facts.low is None else facts.low - TRUNC_REACH
        result = replace(time_facts(declared, declared, low, facts.high, nullable=facts.nullable), within=True)
        if bound is not None:
            return _rebuild(node, this=inner, unit=bound), replace(result, nullable=True)
        return _rebuild(node, this=inner), result

    def _extract(self, node: exp.Extract) -> tuple[exp.Expr, Facts]:
        field = literal_string(node.this)
        inner, facts = self._emit(node.expression)
        if facts.declared == "interval":
            allowed = INTERVAL_FIELDS
        else:
            allowed = DATE_FIELDS if facts.type == "date" else TIME_FIELDS
        if (facts.type not in t.TIMES and facts.declared != "interval") or field is None \
                or field.lower() not in allowed:
            raise ExpressionRefused(
                f"EXTRACT({field} FROM {facts.declared}) is not allowed in a private query; it takes a date, "
                f"timestamp or interval and one of {', '.join(sorted(allowed))}"
            )
        field = field.lower()
        scale = 6 if field in FRACTION_FIELDS else (None if field == "julian" else 0)
        low, high = _field_bounds(field, facts)
        # Infinite dates and timestamps give infinite years and epochs, and NULL for cyclic fields.
        growing = field not in CYCLIC_FIELDS and facts.declared != "interval"
        result = Facts("numeric", "numeric", low, high, scale, neg_inf=growing and facts.neg_inf,
                       pos_inf=growing and facts.pos_inf, nullable=True)
        if node.meta.get(DATE_PART_MARK):
            # date_part() is extract() in double precision: the same values, rounded to 15 digits;
            # it has no form for dates, which PostgreSQL converts to timestamps with time zone.
            if facts.type == "date" and not facts.within:
                raise ExpressionRefused(
                    f"date_part() converts {_short(node.expression)} to a timestamp with time zone, which fails "
                    f"for dates beyond the timestamp range; write extract({field} FROM ...) instead"
                )
            kind = "double precision"
            return (exp.Anonymous(this="date_part", expressions=[exp.Literal.string(field), inner]),
                    replace(_float_as_numeric(replace(result, type=kind)), declared=kind, type=kind,
                            scale=t.FLOAT_SCALE[kind]))
        return _rebuild(node, expression=inner), result

    # functions of dates and times

    def _now(self, node: exp.Expr) -> tuple[exp.Expr, Facts]:
        """now() and its kin: the same value for every row, computed upstream
        in the session's time zone, and near the present."""
        if isinstance(node, exp.Anonymous):
            if node.expressions:
                raise ExpressionRefused(f"{node.name.lower()}() takes no arguments")
            return node.copy(), _now_facts("timestamp with time zone")
        if isinstance(node, exp.CurrentDate):
            return node.copy(), _now_facts("date")
        kind = "timestamp with time zone" if isinstance(node, exp.CurrentTimestamp) else "timestamp without time zone"
        precision = node.args.get("this")
        if precision is None:
            return node.copy(), _now_facts(kind)
        digits = literal_number(precision)
        if digits is None or digits.denominator != 1 or not 0 <= digits <= 6:
            raise ExpressionRefused(f"{_short(node)} takes a precision from 0 to 6")
        # Written as the cast it means: the time rounded to that many digits.
        cast = exp.Cast(this=exp.CurrentTimestamp() if kind.endswith("with time zone") else exp.Localtimestamp(),
                        to=exp.DataType.build(f"{'timestamptz' if kind.endswith('with time zone') else 'timestamp'}"
                                              f"({int(digits)})", dialect="postgres"))
        return cast, _now_facts(kind)

    def _interval(self, node: exp.Interval) -> tuple[exp.Expr, Facts]:
        """An interval literal: how far it can move a date, when its text says."""
        unit = node.args.get("unit")
        if not (isinstance(node.this, exp.Literal) and node.this.is_string) or (
                unit is not None and not isinstance(unit, exp.Var)):
            raise ExpressionRefused(f"{_short(node)}: write intervals as one literal, e.g. interval '30 days'")
        text = node.this.this if unit is None else f"{node.this.this} {unit.name}"
        facts = _typed_literal(text, t.SqlType("interval"))
        return node.copy(), replace(facts, constant=False)

    def _age(self, node: exp.Anonymous) -> tuple[exp.Expr, Facts]:
        """age(a[, b]): an interval of years, months and days. PostgreSQL converts
        dates to timestamps with time zone for it, so they must be in range."""
        if not 1 <= len(node.expressions) <= 2:
            raise ExpressionRefused("age() takes one or two dates or timestamps")
        parts = [self._emit(argument) for argument in node.expressions]
        for argument, (_, facts) in zip(node.expressions, parts):
            if facts.type not in t.TIMES or not facts.within or facts.low is None or facts.high is None:
                raise ExpressionRefused(
                    f"age() fails for dates and timestamps near or beyond the ends of the timestamp range, "
                    f"which {_short(argument)} may hold; a private query may take age() of dates and timestamps "
                    "of protected tables, now(), current_date and literal dates"
                )
        ends = [f for _, f in parts] + ([] if len(parts) == 2 else [_now_facts("date")])
        span = max(f.high for f in ends) - min(f.low for f in ends) + DAY  # type: ignore[type-var, operator]
        facts = Facts("interval", "interval", -span, span, nullable=any(f.nullable for _, f in parts))
        return _rebuild(node, expressions=[sql for sql, _ in parts]), facts

    def _make_date(self, node: exp.Anonymous) -> tuple[exp.Expr, Facts]:
        """make_date(year, month, day) fails for a day that does not exist: its
        arguments must be integers that cannot name one, or literals (a call
        of literals is computed when PostgreSQL plans the statement, rows or none)."""
        if len(node.expressions) != 3:
            raise ExpressionRefused("make_date() takes a year, a month and a day")
        parts = [self._emit(argument) for argument in node.expressions]
        for argument, (_, facts) in zip(node.expressions, parts):
            if facts.type not in ("integer", "smallint"):
                raise ExpressionRefused(f"make_date() takes integers, got {facts.declared} for "
                                        f"{_short(argument)}: cast it to integer first")
        (year, month, day) = (f for _, f in parts)
        emitted = _rebuild(node, expressions=[sql for sql, _ in parts])
        nullable = any(f.nullable for _, f in parts)
        if all(f.constant for _, f in parts):
            return emitted, replace(_calendar_facts(year, nullable), constant=False)
        fits = (_inside(month, 1, 12) and _inside(day, 1, 28)
                and (_inside(year, 1, 294000) or _inside(year, -4700, -1)))
        if not fits:
            raise ExpressionRefused(
                f"make_date() fails for days that do not exist, which {_short(node)} may name, and the error "
                "would reveal such a row; clamp its arguments: a year from 1 to 294000, a month from 1 to 12 and "
                "a day from 1 to 28, e.g. make_date(y, least(greatest(m, 1), 12), least(greatest(d, 1), 28))"
            )
        return emitted, _calendar_facts(year, nullable)

    def _to_date(self, node: exp.Expr) -> tuple[exp.Expr, Facts]:
        """to_date and to_timestamp of literals (Superset's time ranges): computed
        for each row, so the text must be a valid date in the format's layout."""
        kind = "date" if isinstance(node, exp.StrToDate) else "timestamp with time zone"
        emitted = node.copy()
        written = re.fullmatch(r"TO_(?:DATE|TIMESTAMP)\('((?:[^']|'')*)', '((?:[^']|'')*)'\)", emitted.sql("postgres"))
        layout = None if written is None else DATE_LAYOUTS.get(written.group(2))
        year = None if layout is None else _valid_date(written.group(1), layout)  # type: ignore[union-attr]
        if year is None:
            raise ExpressionRefused(
                f"{_short(node)}: to_date and to_timestamp take a literal date of years 1 to 9999 written in its "
                f"format ({', '.join(repr(f) for f in DATE_LAYOUTS)}) in a private query; or write DATE '2024-01-31'"
            )
        return emitted, time_facts(kind, kind, _epoch(year) - ZONE_MARGIN, _epoch(year + 1) + ZONE_MARGIN,
                                   nullable=False)

    def _at_time_zone(self, node: exp.AtTimeZone) -> tuple[exp.Expr, Facts]:
        """x AT TIME ZONE 'UTC' (Looker's "now" in the query's time zone)."""
        zone = node.args.get("zone")
        if not (isinstance(zone, exp.Literal) and zone.is_string and zone.this.upper() in UTC_NAMES):
            raise ExpressionRefused(f"{_short(node)}: AT TIME ZONE takes 'UTC' in a private query (an unknown zone "
                                    "fails for every row it meets)")
        inner, facts = self._emit(node.this)
        if facts.type not in t.TIMES or not facts.within or facts.low is None or facts.high is None:
            raise ExpressionRefused(
                f"AT TIME ZONE fails for timestamps near the ends of the timestamp range, which "
                f"{_short(node.this)} may hold; a private query may convert dates and timestamps of protected "
                "tables, now(), current_date and literal dates"
            )
        kind = "timestamp with time zone" if facts.type == "timestamp without time zone" else \
            "timestamp without time zone"
        return _rebuild(node, this=inner), time_facts(kind, kind, facts.low - ZONE_MARGIN / 2,
                                                      facts.high + ZONE_MARGIN / 2, nullable=facts.nullable)

    def _to_char(self, node: exp.TimeToStr) -> tuple[exp.Expr, Facts]:
        """to_char of a date or timestamp with a literal format of date fields."""
        inner, facts = self._emit(node.this)
        if facts.type not in t.TIMES:
            raise ExpressionRefused(f"to_char() of {facts.declared} is not allowed in a private query; it formats "
                                    "dates and timestamps (round numbers, or cast them to text)")
        if not facts.within:
            raise ExpressionRefused(
                f"to_char() converts {_short(node.this)} to a timestamp with time zone, which fails near or "
                "beyond the ends of the timestamp range; a private query may format dates and timestamps of "
                "protected tables, now(), current_date and literal dates"
            )
        emitted = _rebuild(node, this=inner)
        written = re.search(r", '((?:[^']|'')*)'\)$", emitted.sql("postgres"))
        if written is None or not TO_CHAR_FORMAT.fullmatch(written.group(1)):
            raise ExpressionRefused(
                "to_char() takes a literal format of date fields in a private query (YYYY, MM, DD, Mon, Month, "
                "Q, IW, HH24, MI, SS, ... with spaces, - / : . , and \"quoted text\")"
            )
        return emitted, Facts("text", "text", nullable=facts.nullable)

    # bounds

    def bounds_of(self, node: exp.Expr) -> Interval:
        """Interval bounds of a numeric expression's values (None: unbounded)."""
        value = literal_number(node)
        if value is not None:
            return (value, value)
        if isinstance(node, exp.Column):
            bounds = self.resolve(node).bounds
            return UNBOUNDED if bounds is None else bounds
        if isinstance(node, exp.Paren):
            return self.bounds_of(node.this)
        if isinstance(node, exp.Neg):
            return _neg(self.bounds_of(node.this))
        if isinstance(node, exp.Add):
            return _add(self.bounds_of(node.this), self.bounds_of(node.expression))
        if isinstance(node, exp.Sub):
            return _add(self.bounds_of(node.this), _neg(self.bounds_of(node.expression)))
        if isinstance(node, exp.Mul):
            return _mul(self.bounds_of(node.this), self.bounds_of(node.expression))
        if isinstance(node, exp.Div):
            divisor = literal_number(node.expression)
            assert divisor  # checked by type_of
            return _mul(self.bounds_of(node.this), (1 / divisor, 1 / divisor))
        if isinstance(node, exp.Cast):
            return self.bounds_of(node.this)
        if isinstance(node, exp.Least):
            parts = [self.bounds_of(c) for c in [node.this, *node.expressions]]
            known_lows = [p[0] for p in parts if p[0] is not None]
            highs = [p[1] for p in parts if p[1] is not None]
            return (None if len(known_lows) < len(parts) else min(known_lows), min(highs) if highs else None)
        if isinstance(node, exp.Greatest):
            parts = [self.bounds_of(c) for c in [node.this, *node.expressions]]
            lows = [p[0] for p in parts if p[0] is not None]
            known_highs = [p[1] for p in parts if p[1] is not None]
            return (max(lows) if lows else None, None if len(known_highs) < len(parts) else max(known_highs))
        if isinstance(node, exp.Case):
            branches = [b.args["true"] for b in node.args.get("ifs") or []]
            if node.args.get("default") is not None:
                branches.append(node.args["default"])
            return _union_bounds([self.bounds_of(b) for b in branches if not isinstance(b, exp.Null)])
        if isinstance(node, exp.Coalesce):
            return _union_bounds([self.bounds_of(c) for c in [node.this, *node.expressions]])
        if isinstance(node, exp.Abs):
            low, high = self.bounds_of(node.this)
            if low is None or high is None:
                return (Fraction(0), None)
            return (Fraction(0) if low <= 0 <= high else min(abs(low), abs(high)), max(abs(low), abs(high)))
        if isinstance(node, ROUNDING):
            low, high = self.bounds_of(node.this)
            return (None if low is None else low - 1, None if high is None else high + 1)
        return UNBOUNDED


# An interval bound as a parameter moves dates by at most this much: larger
# ones read as NULL (interval '6000 years' in PostgreSQL's comparison of
# intervals, months as 30 days, is at most 2.25 million days of movement).
PARAMETER_INTERVAL_BOUND = "6000 years"
PARAMETER_INTERVAL_REACH = 2_300_000 * DAY
# Intervals written as text built of literals: PostgreSQL reads any this size.
MAX_TEXT_INTERVAL = 1_000_000 * 366 * DAY
# date_trunc's units PostgreSQL reads for the fields a private query may truncate to
# (datetime.c, deltatktbl; it compares the first 10 characters).
TRUNC_UNIT_SPELLINGS = frozenset(["microsecon", "us", "usec", "usecond", "useconds", "usecs", "millisecon", "ms", "msec", "msecond", "mseconds", "msecs", "s", "sec", "second", "seconds", "secs", "m", "min", "mins", "minute", "minutes", "h", "hour", "hours", "hr", "hrs", "d", "day", "days", "w", "week", "weeks", "mon", "mons", "month", "months", "qtr", "quarter", "y", "year", "years", "yr", "yrs", "dec", "decade", "decades", "decs", "microseconds", "milliseconds"])
UTC_NAMES = frozenset({"UTC", "GMT", "ETC/UTC", "ETC/GMT"})
# to_date/to_timestamp formats of literal dates (as sqlglot writes them back), and their layouts.
DATE_LAYOUTS = {
    "YYYY-MM-DD": r"(\d{4})-(\d{2})-(\d{2})",
    "YYYY-MM-DD HH24:MI:SS": r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})",
    "YYYY-MM-DD HH24:MI:SS.US": r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})\.\d{1,6}",
    "YYYY-MM-DD HH24:MI:SS.MS": r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})\.\d{1,3}",
}


def _valid_date(text: str, layout: str) -> int | None:
    """The year of a literal written in the layout that names a real day and time, else None."""
    match = re.fullmatch(layout, text)
    if match is None:
        return None
    fields = [int(g) for g in match.groups()]
    try:
        datetime.datetime(*fields)  # type: ignore[arg-type]  # year, month, day and the time's fields
    except ValueError:
        return None
    return fields[0]


def _bounded_unit_guard(unit: exp.Expr) -> exp.Expr:
    """date_trunc's unit bound as a parameter, passed on only when it names
    a unit a private query may truncate to, else NULL: an unknown unit would
    fail for each row, and century or millennium can leave the range."""
    spelled = exp.func("lower", exp.Cast(this=unit.copy(), to=exp.DataType.build("text")))
    known = exp.In(this=spelled, expressions=[exp.Literal.string(u) for u in sorted(TRUNC_UNIT_SPELLINGS)])
    return exp.Case(ifs=[exp.If(this=known, true=unit.copy())])


def _bound_unit(unit: exp.Expr) -> exp.Expr | None:
    """The guarded unit, when date_trunc's unit is a bind parameter (Django, SQLAlchemy)."""
    inner = unit.this if isinstance(unit, exp.Cast) and t.cast_target(unit.to) is not None \
        and t.cast_target(unit.to).name in t.TEXTS else unit  # type: ignore[union-attr]
    if not isinstance(inner, exp.Parameter):
        return None
    return _bounded_unit_guard(unit)


def _bounded_interval(cast: exp.Cast) -> exp.Expr:
    """CAST($n AS interval), or NULL when it could move a date out of range."""
    bound = exp.Interval(this=exp.Literal.string(PARAMETER_INTERVAL_BOUND))
    between = exp.Between(this=cast.copy(), low=exp.Neg(this=bound.copy()), high=bound)
    return exp.Case(ifs=[exp.If(this=between, true=cast.copy())])


def _bound_text(node: exp.Expr) -> bool:
    """Text computed from bind parameters and literals only, with at least one
    parameter: '%' || $1 || '%', upper($1), $1::text."""
    def plain(part: exp.Expr) -> bool:
        if isinstance(part, exp.Paren):
            return plain(part.this)
        if isinstance(part, (exp.Parameter, exp.Literal)):
            return isinstance(part, exp.Parameter) or part.is_string
        if isinstance(part, exp.Cast):
            target = t.cast_target(part.to)
            return target is not None and target.name in t.TEXTS and not target.modifier and plain(part.this)
        if isinstance(part, (exp.Upper, exp.Lower)):
            return plain(part.this)
        if isinstance(part, exp.DPipe):
            return plain(part.this) and plain(part.expression)
        return False
    return plain(node) and any(isinstance(n, exp.Parameter) for n in node.walk())


# A LIKE pattern fails when it ends in an odd number of backslashes (the
# escape), and may exhaust the stack with more than MAX_LIKE_WILDCARDS runs of %.
_BAD_PATTERN_SQL = (r"(^|[^\\])(\\\\)*\\$", f"(%+[^%]*){{{MAX_LIKE_WILDCARDS + 1}}}")


def _guarded_pattern(pattern: exp.Expr) -> exp.Expr:
    bad = exp.or_(*(exp.RegexpLike(this=exp.Paren(this=pattern.copy()), expression=exp.Literal.string(regex))
                    for regex in _BAD_PATTERN_SQL))
    return exp.Case(ifs=[exp.If(this=bad, true=exp.Null())], default=exp.Paren(this=pattern.copy()))


def _constant_text(node: exp.Expr) -> str | None:
    """The text of literals joined with ||, as PostgreSQL prints them, else None."""
    if isinstance(node, exp.Paren):
        return _constant_text(node.this)
    if isinstance(node, exp.Literal):
        return node.this if node.is_string else (node.this if re.fullmatch(r"\d+", node.this) else None)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        inner = _constant_text(node.this)
        return None if inner is None else "-" + inner
    if isinstance(node, exp.DPipe):
        left, right = _constant_text(node.this), _constant_text(node.expression)
        return None if left is None or right is None else left + right
    return None


# to_char's date and time fields (with the FM prefix), separators and quoted text.
TO_CHAR_FORMAT = re.compile(
    r'(?:(?:FM)?(?:HH24|HH12|HH|MI|SSSSS|SSSS|SS|MS|US|AM|PM|A\.M\.|P\.M\.|Y,YYY|YYYY|YYY|YY|Y|IYYY|IYY|IY|I|BC|AD'
    r'|B\.C\.|A\.D\.|MONTH|MON|MM|DAY|DY|DDD|IDDD|DD|D|ID|WW|IW|W|CC|J|Q|RM)|[-/:., T_]|"[^"\\]*")*',
    re.IGNORECASE,
)


def _inside(facts: Facts, low: int, high: int) -> bool:
    return facts.low is not None and facts.high is not None and low <= facts.low and facts.high <= high \
        and not (facts.nan or facts.infinite)


def _calendar_facts(year: Facts, nullable: bool) -> Facts:
    """A date of make_date() in these years (negative: BC), or of no known year."""
    if year.low is None or year.high is None:
        return Facts("date", "date", nullable=nullable)
    first, last = (int(y) + (1 if y < 0 else 0) for y in (year.low, year.high))
    return time_facts("date", "date", _epoch(first), _epoch(last + 1), nullable=nullable)


def _interval_field_limit(field: str, reach: Fraction) -> Fraction:
    """The largest magnitude of a field of an interval that moves a timestamp
    by at most `reach` seconds: it holds fewer than reach / 28 days months,
    reach / 23 hours days (a day across a change of time) and reach seconds."""
    months = reach / (28 * DAY) + 1
    fixed = {"month": 11, "quarter": 4, "minute": 59, "second": 60, "milliseconds": 60_000,
             "microseconds": 60_000_000}
    if field in fixed:
        return Fraction(fixed[field])
    if field in YEAR_FIELDS:
        return months / 12 / YEAR_FIELDS[field] + 1
    if field == "day":
        return reach / (23 * Fraction(3600)) + 1
    if field == "hour":
        return reach / 3600 + 1
    return months * 30 * DAY + reach + DAY  # epoch: months of 30 days, days and time


def _field_bounds(field: str, facts: Facts) -> Interval:
    """The finite values EXTRACT(field FROM x) can take."""
    if facts.declared == "interval":
        reach = facts.magnitude
        if reach is None:
            return UNBOUNDED
        limit = _interval_field_limit(field, reach)
        return (-limit, limit)
    if field in CYCLIC_FIELDS:
        low, high = CYCLIC_FIELDS[field]
        return (Fraction(low), Fraction(high))
    first = facts.low if facts.low is not None and not facts.neg_inf else DATE_FIRST
    last = facts.high if facts.high is not None and not facts.pos_inf else DATE_LAST
    first, last = first - ZONE_MARGIN, last + ZONE_MARGIN
    if field == "epoch":
        return (first, last)
    if field == "julian":
        return (first / DAY + 2440588 - 1, last / DAY + 2440588 + 1)
    years = YEAR_FIELDS[field]
    low = math.floor(first / AVERAGE_YEAR) + 1970 - 2
    high = math.floor(last / AVERAGE_YEAR) + 1970 + 2
    return (Fraction(low // years - 1), Fraction(high // years + 1))


def _rebuild(node: exp.Expr, **children: object) -> exp.Expr:
    """A node of the same kind with some children replaced and the rest copied."""
    args: dict[str, object] = {}
    for key, value in node.args.items():
        if key in children:
            args[key] = children[key]
        elif isinstance(value, exp.Expr):
            args[key] = value.copy()
        elif isinstance(value, list):
            args[key] = [v.copy() if isinstance(v, exp.Expr) else v for v in value]
        else:
            args[key] = value
    return node.__class__(**args)


def _short(node: exp.Expr) -> str:
    text = node.sql("postgres")
    return text if len(text) <= 60 else text[:57] + "..."


def _as_number(declared: str) -> str:
    return declared if declared != "unknown" else "numeric"


def _numeric_constant(node: exp.Expr) -> exp.Expr:
    """A constant operand as numeric: integer constants would overflow in
    integer arithmetic when PostgreSQL folds them."""
    return exp.Cast(this=exp.Paren(this=node), to=exp.DataType.build("numeric"))


def _numeric_from_float(node: exp.Expr, facts: Facts) -> tuple[exp.Expr, Facts]:
    cast = exp.Cast(this=exp.Paren(this=node), to=exp.DataType.build("numeric"))
    return cast, _float_as_numeric(facts)


def _float_as_numeric(facts: Facts) -> Facts:
    """A float's facts once converted to numeric. A float's bounds may come
    from numeric literals it was compared with (least(x, 999.4999999999999999)
    is 999.5 as a float), and float -> numeric keeps 15 significant digits:
    so the bounds widen by a relative 1e-14."""
    widen = Fraction(1, 10 ** 14)
    low = None if facts.low is None else facts.low - abs(facts.low) * widen
    high = None if facts.high is None else facts.high + abs(facts.high) * widen
    return replace(facts, type="numeric", low=low, high=high, scale=t.FLOAT_SCALE[facts.type])


def _typed_literal(text: str, target: t.SqlType) -> Facts:
    """A string literal PostgreSQL converts to `target` when it parses the statement."""
    facts = replace(type_facts(target, tamed=False), nullable=False, constant=True)
    if target.name in t.NUMBERS:
        value, scale = _number_text(text)
        special = text.strip().lower()
        if value is not None:
            return replace(facts, low=value, high=value, scale=scale, nan=False, neg_inf=False, pos_inf=False)
        return replace(facts, nan=special == "nan", neg_inf=special in ("-infinity", "-inf"),
                       pos_inf=special in ("infinity", "+infinity", "inf", "+inf"))
    if target.name in t.TIMES:
        match = _ISO_DATE.fullmatch(text)
        if match is None or not 1 <= int(match.group(1)) <= 9999:
            return facts
        # An ordinary date of years 1 to 9999, somewhere in its year in any time zone.
        year = int(match.group(1))
        return replace(time_facts(target.name, target.name, _epoch(year) - ZONE_MARGIN,
                                  _epoch(year + 1) + ZONE_MARGIN, nullable=False), constant=True)
    if target.name == "interval":
        magnitude = interval_magnitude(text)
        if magnitude is not None:
            return replace(facts, low=-magnitude, high=magnitude)
    return facts


def _product(a: Facts, b: Facts) -> Interval:
    if a.low is None or a.high is None or b.low is None or b.high is None:
        return UNBOUNDED
    products = [x * y for x in (a.low, a.high) for y in (b.low, b.high)]
    return (min(products), max(products))


def _union(values: list[Facts], declared: str, *, nullable: bool) -> Facts:
    """The values of one of several expressions (CASE results, COALESCE arguments)."""
    lows, highs = [v.low for v in values], [v.high for v in values]
    scales = [v.scale for v in values]
    kinds = [v.type for v in values if v.type != "unknown"]
    return Facts(
        declared, t.common_type(kinds) if kinds else declared,
        None if None in lows else min(lows),  # type: ignore[type-var]
        None if None in highs else max(highs),  # type: ignore[type-var]
        None if None in scales else max(scales),  # type: ignore[type-var]
        nan=any(v.nan for v in values), neg_inf=any(v.neg_inf for v in values),
        pos_inf=any(v.pos_inf for v in values), tamed=all(v.tamed for v in values),
        within=all(v.within for v in values), nullable=nullable, constant=all(v.constant for v in values),
    )


def _extreme(values: list[Facts], declared: str, *, least: bool) -> Facts:
    """LEAST or GREATEST: the smallest or largest argument that is not NULL,
    where NaN is larger than every number. An argument that is never NULL
    bounds the result on its side (`least(x, 100)` is at most 100, never NaN)."""
    facts = replace(_union(values, declared, nullable=all(v.nullable for v in values)), constant=False)
    firm = [v for v in values if not v.nullable]
    if least:
        if any(not v.nan for v in firm):
            facts = replace(facts, nan=False)
        capped = [v for v in firm if not v.pos_inf and not v.nan]
        if capped:
            facts = replace(facts, pos_inf=False)
        caps = [v.high for v in capped if v.high is not None]
        if caps:
            facts = replace(facts, high=min(caps) if facts.high is None else min(facts.high, *caps))
    else:
        floored = [v for v in firm if not v.neg_inf]
        if floored:
            facts = replace(facts, neg_inf=False)
        floors = [v.low for v in floored if v.low is not None]
        if floors:
            facts = replace(facts, low=max(floors) if facts.low is None else max(facts.low, *floors))
    return facts


def _neg(a: Interval) -> Interval:
    return (None if a[1] is None else -a[1], None if a[0] is None else -a[0])


def _add(a: Interval, b: Interval) -> Interval:
    low = None if a[0] is None or b[0] is None else a[0] + b[0]
    high = None if a[1] is None or b[1] is None else a[1] + b[1]
    return (low, high)


def _mul(a: Interval, b: Interval) -> Interval:
    if None in a or None in b:
        return UNBOUNDED
    products = [x * y for x in a for y in b]  # type: ignore[operator]
    return (min(products), max(products))


def _union_bounds(intervals: list[Interval]) -> Interval:
    if not intervals:
        return UNBOUNDED
    lows, highs = [i[0] for i in intervals], [i[1] for i in intervals]
    return (None if None in lows else min(lows), None if None in highs else max(highs))  # type: ignore[type-var]


def _bad_like_pattern(pattern: str) -> bool:
    trailing = len(pattern) - len(pattern.rstrip("\\"))
    return trailing % 2 == 1
