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
infinities read as NULL: analysis._tamed), and from clamps the analyst
writes (`least(greatest(x, 0), 100)`). Arithmetic is carried out in
numeric, whose range is checked to stay far below numeric's limit, and the
SQL never lets PostgreSQL convert a computed numeric to a float type it
might not fit. A literal is converted when PostgreSQL parses the
statement, and arithmetic on number literals is folded when it plans it,
whether or not any row exists, so they fail, if at all, independently of
the data; conversions that depend on the time zone are not folded, so
typed date and timestamp literals are checked like values.

Bounds for sensitivity (`bounds_of`) are another matter: they follow from
the policy's column bounds, which the bounded query enforces with clamps of
its own, and are not guarantees about the values.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Callable

from sqlglot import exp

from rewriter.private import types as t


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


Bound = Fraction | None  # None: unbounded on that side
Interval = tuple[Bound, Bound]
UNBOUNDED: Interval = (None, None)

DATE_TRUNC_UNITS = frozenset(
    "microseconds milliseconds second minute hour day week month quarter year decade".split()
)
# date_trunc to these reaches back up to a thousand years, past PostgreSQL's
# earliest timestamp for the earliest dates pgshroud lets through.
FAR_TRUNC_UNITS = frozenset({"century", "millennium"})
DATE_FIELDS = frozenset("year month day dow isodow doy quarter week decade century millennium isoyear epoch julian".split())
TIME_FIELDS = DATE_FIELDS | frozenset("hour minute second milliseconds microseconds".split())
FRACTION_FIELDS = frozenset("epoch second milliseconds microseconds".split())
COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)
ARITHMETIC = (exp.Add, exp.Sub, exp.Mul)
ROUNDING = (exp.Round, exp.Trunc, exp.Floor, exp.Ceil)

# Protected numerics are read clamped to this (analysis.NUMERIC_LIMIT).
TAMED_NUMERIC = Fraction(10) ** 100
# Results of arithmetic stay below this, far from numeric's 10**131072.
MAX_MAGNITUDE = Fraction(10) ** 1000
MAX_LITERAL_DIGITS = 100  # literals, like column values (clamped to 1e100), stay far from it too
NUMERIC_MAX_SCALE = 16383  # numeric rounds products to this many digits after the point
DIVISION_SCALE = 1000  # numeric division rounds to at most this many digits after the point
ROUND_SCALE = 2000  # round(x, d) rounds to at most this many digits after the point
# Differences of dates pgshroud lets through, in days.
DATE_SPAN = Fraction(120_000_000)
# Extracted fields of finite dates and timestamps (epoch seconds reach 9.3e12).
FIELD_MAGNITUDE = Fraction(10) ** 13
MAX_LIKE_WILDCARDS = 16  # each % is a level of recursion in PostgreSQL's LIKE matcher
# char(n) pads every value to n characters: a longer n would let one
# person's rows weigh megabytes each in the query's memory and time.
MAX_CHAR_LENGTH = 1000
_ISO_DATE = re.compile(r"\s*(\d{4})-\d{2}-\d{2}(?:[ T][\d:.]+)?(?:\s*[+-]\d{2}(?::?\d{2})?|Z)?\s*", re.IGNORECASE)


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


def literal_number(node: exp.Expression) -> Fraction | None:
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


def literal_string(node: exp.Expression) -> str | None:
    if isinstance(node, exp.Literal) and node.is_string:
        return node.this
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
            return replace(facts, tamed=True, within=True)
        return replace(facts, neg_inf=True, pos_inf=True)
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

    def type_of(self, node: exp.Expression) -> str:
        """The expression's type as PostgreSQL resolves it; raises
        ExpressionRefused for what may fail on some value."""
        return self._emit(node)[1].declared

    def facts_of(self, node: exp.Expression) -> Facts:
        """What is certain about the values of the expression's SQL."""
        return self._emit(node)[1]

    def safe_sql(self, node: exp.Expression) -> str:
        """The expression as SQL whose evaluation cannot fail."""
        return self.safe_node(node).sql("postgres")

    def safe_node(self, node: exp.Expression) -> exp.Expression:
        """A copy of the expression as PostgreSQL must evaluate it: number
        operands of arithmetic cast to numeric, integer division truncating,
        floats matched with computed numerics as numeric."""
        return self._emit(node)[0]

    # one node

    def _emit(self, node: exp.Expression) -> tuple[exp.Expression, Facts]:
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
            # A bind value: converted to its type at Bind, before any row is
            # read. Its value is the analyst's: it bounds nothing.
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
            f"{node.key.upper()} expressions are not allowed over rows of a private query "
            "(they could fail on some values, and an error would reveal that such a value exists); use "
            "arithmetic, comparisons, CASE, coalesce, least, greatest, nullif, casts, abs, round, trunc, floor, "
            "ceil, date_trunc, extract, lower, upper, length or LIKE"
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

    def _adopt(self, node: exp.Expression, facts: Facts, target: str) -> Facts:
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

    def _number(self, node: exp.Expression, what: str,
                emitted: tuple[exp.Expression, Facts] | None = None) -> tuple[exp.Expression, Facts]:
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

    def _checked(self, facts: Facts, node: exp.Expression, *operands: tuple[exp.Expression, Facts]) -> Facts:
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

    def _negate(self, node: exp.Neg) -> tuple[exp.Expression, Facts]:
        value = literal_number(node)
        if value is not None:
            _, facts = self._emit(node.this)
            return node.copy(), replace(facts, low=value, high=value)
        inner, facts = self._number(node.this, "-")
        declared = facts.declared if facts.declared != "unknown" else "numeric"
        return exp.Neg(this=inner), replace(
            facts, declared=declared, low=None if facts.high is None else -facts.high,
            high=None if facts.low is None else -facts.low, neg_inf=facts.pos_inf, pos_inf=facts.neg_inf)

    def _arithmetic(self, node: exp.Expression) -> tuple[exp.Expression, Facts]:
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

    def _date_arithmetic(self, node: exp.Expression, left: tuple[exp.Expression, Facts],
                         right: tuple[exp.Expression, Facts]) -> tuple[exp.Expression, Facts]:
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
                "or subtract dates (days)"
            )
        # date + integer leaves the date range for some integers.
        raise ExpressionRefused("date arithmetic other than subtracting two dates is not allowed in a private "
                                "query; compare dates with literals instead, or use date_trunc/extract")

    def _division(self, node: exp.Expression) -> tuple[exp.Expression, Facts]:
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
        result: exp.Expression = _rebuild(node, this=dividend_node, expression=divisor_node)
        if isinstance(node, exp.Mod):
            declared = t.arithmetic(dividend.declared, declared_divisor) if integers else "numeric"
            limit = abs(divisor)
            low = Fraction(0) if dividend.low is not None and dividend.low >= 0 else -limit
            high = Fraction(0) if dividend.high is not None and dividend.high <= 0 else limit
            if dividend.low is not None:
                low = max(low, min(dividend.low, Fraction(0)))
            if dividend.high is not None:
                high = min(high, max(dividend.high, Fraction(0)))
            scale = None if dividend.scale is None else max(dividend.scale, divisor_facts.scale or 0)
            facts = Facts(declared, "numeric", low, high, scale, nan=dividend.nan or dividend.infinite,
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

    def _abs(self, node: exp.Abs) -> tuple[exp.Expression, Facts]:
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

    def _rounding(self, node: exp.Expression) -> tuple[exp.Expression, Facts]:
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

    def _condition(self, node: exp.Expression) -> tuple[exp.Expression, Facts]:
        emitted, facts = self._emit(node)
        if facts.declared not in ("boolean", "unknown"):
            raise ExpressionRefused(f"a condition must be a boolean, got {facts.declared}")
        return emitted, facts

    @staticmethod
    def _boolean(parts: list[Facts]) -> Facts:
        return Facts("boolean", "boolean", nullable=any(p.nullable for p in parts))

    def _like(self, node: exp.Expression) -> tuple[exp.Expression, Facts]:
        inner, facts = self._emit(node.this)
        if facts.type not in t.TEXTS and facts.type != "unknown":
            raise ExpressionRefused(f"LIKE needs text in a private query, got {facts.declared}")
        pattern = literal_string(node.expression)
        if pattern is None or _bad_like_pattern(pattern):
            raise ExpressionRefused("LIKE needs a literal pattern that does not end in an escape character")
        if len(re.findall(r"%+", pattern)) > MAX_LIKE_WILDCARDS:
            raise ExpressionRefused(f"a LIKE pattern may have at most {MAX_LIKE_WILDCARDS} runs of % in a "
                                    "private query (each one deepens PostgreSQL's matching, up to its stack limit)")
        return _rebuild(node, this=inner), self._boolean([facts])

    # choosing among values

    def _unify(self, nodes: list[exp.Expression], verb: str) -> tuple[list[tuple[exp.Expression, Facts]], str]:
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

    def _case(self, node: exp.Case) -> tuple[exp.Expression, Facts]:
        ifs = node.args.get("ifs") or []
        conditions: list[exp.Expression] = []
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
        values = [f for _, f in parts]
        facts = _union(values, declared, nullable=default is None or any(v.nullable for v in values))
        return exp.Case(this=subject_node, ifs=new_ifs, default=otherwise), facts

    def _choice(self, node: exp.Expression) -> tuple[exp.Expression, Facts]:
        parts, declared = self._unify([node.this, *node.expressions], "mix")
        rebuilt = _rebuild(node, this=parts[0][0], expressions=[p[0] for p in parts[1:]])
        values = [f for _, f in parts]
        if isinstance(node, exp.Coalesce):
            return rebuilt, _union(values, declared, nullable=all(v.nullable for v in values))
        return rebuilt, _extreme(values, declared, least=isinstance(node, exp.Least))

    # casts

    def _cast(self, node: exp.Cast) -> tuple[exp.Expression, Facts]:
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
            return node.copy(), type_facts(target, tamed=False)
        inner, facts = self._emit(node.this)
        converted, result = self._convert(inner, facts, target, node.this)
        return _rebuild(node, this=converted), result

    def _convert(self, inner: exp.Expression, facts: Facts, target: t.SqlType,
                 source: exp.Expression) -> tuple[exp.Expression, Facts]:
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

    def _convert_number(self, inner: exp.Expression, facts: Facts, target: t.SqlType,
                        source: exp.Expression) -> tuple[exp.Expression, Facts]:
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

    def _date_trunc(self, node: exp.TimestampTrunc) -> tuple[exp.Expression, Facts]:
        unit = literal_string(node.args.get("unit") or exp.Null())
        if node.args.get("zone") is not None:
            raise ExpressionRefused("date_trunc takes two arguments in a private query (a time zone argument is "
                                    "read for every row, and an invalid one fails there)")
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
        return (_rebuild(node, this=inner),
                Facts(declared, declared, within=True, nullable=facts.nullable))

    def _extract(self, node: exp.Extract) -> tuple[exp.Expression, Facts]:
        field = literal_string(node.this)
        inner, facts = self._emit(node.expression)
        allowed = DATE_FIELDS if facts.type == "date" else TIME_FIELDS
        if facts.type not in t.TIMES or field is None or field.lower() not in allowed:
            raise ExpressionRefused(
                f"EXTRACT({field} FROM {facts.declared}) is not allowed in a private query; it takes a date or "
                f"timestamp and one of {', '.join(sorted(allowed))}"
            )
        field = field.lower()
        scale = 6 if field in FRACTION_FIELDS else (None if field == "julian" else 0)
        return _rebuild(node, expression=inner), Facts(
            "numeric", "numeric", -FIELD_MAGNITUDE, FIELD_MAGNITUDE, scale,
            neg_inf=not facts.within, pos_inf=not facts.within, nullable=True)

    # bounds

    def bounds_of(self, node: exp.Expression) -> Interval:
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
            lows = [p[0] for p in parts]
            highs = [p[1] for p in parts if p[1] is not None]
            return (None if None in lows else min(lows), min(highs) if highs else None)  # type: ignore[type-var]
        if isinstance(node, exp.Greatest):
            parts = [self.bounds_of(c) for c in [node.this, *node.expressions]]
            lows = [p[0] for p in parts if p[0] is not None]
            highs = [p[1] for p in parts]
            return (max(lows) if lows else None, None if None in highs else max(highs))  # type: ignore[type-var]
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


def _rebuild(node: exp.Expression, **children: object) -> exp.Expression:
    """A node of the same kind with some children replaced and the rest copied."""
    args: dict[str, object] = {}
    for key, value in node.args.items():
        if key in children:
            args[key] = children[key]
        elif isinstance(value, exp.Expression):
            args[key] = value.copy()
        elif isinstance(value, list):
            args[key] = [v.copy() if isinstance(v, exp.Expression) else v for v in value]
        else:
            args[key] = value
    return node.__class__(**args)


def _short(node: exp.Expression) -> str:
    text = node.sql("postgres")
    return text if len(text) <= 60 else text[:57] + "..."


def _as_number(declared: str) -> str:
    return declared if declared != "unknown" else "numeric"


def _numeric_constant(node: exp.Expression) -> exp.Expression:
    """A constant operand as numeric: integer constants would overflow in
    integer arithmetic when PostgreSQL folds them."""
    return exp.Cast(this=exp.Paren(this=node), to=exp.DataType.build("numeric"))


def _numeric_from_float(node: exp.Expression, facts: Facts) -> tuple[exp.Expression, Facts]:
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
        ordinary = match is not None and 1 <= int(match.group(1)) <= 9999
        return replace(facts, within=ordinary, neg_inf=not ordinary, pos_inf=not ordinary)
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
