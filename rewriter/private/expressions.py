"""Row-level expressions of a private query: what they may do, their types,
and the bounds of their values.

A private query's answer is noisy, but whether it runs at all is not: an
error raised while PostgreSQL evaluates a row (a division by zero, a failed
cast, an integer overflow, a bad LIKE pattern) would tell the analyst that
some row with such a value exists, outside the noise. So expressions over
rows are limited to node kinds that cannot fail on any value, checked here
with their argument types: arithmetic is carried out in numeric (which
holds every integer and float, NaN and infinities included), division only
by a nonzero literal, casts only those that accept every value of their
source type, function arguments that could fail (a date_trunc unit, a LIKE
pattern) only as valid literals.

Bounds follow by interval arithmetic from the policy's column bounds and
from explicit clamps the analyst writes (`least(greatest(x, 0), 100)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Callable

from sqlglot import exp

from rewriter.private import types as t


class ExpressionRefused(ValueError):
    """An expression a private query may not evaluate; the message says why."""


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


Bound = Fraction | None  # None: unbounded on that side
Interval = tuple[Bound, Bound]
UNBOUNDED: Interval = (None, None)

DATE_TRUNC_UNITS = frozenset(
    "microseconds milliseconds second minute hour day week month quarter year decade century millennium".split()
)
DATE_FIELDS = frozenset("year month day dow isodow doy quarter week decade century millennium isoyear epoch julian".split())
TIME_FIELDS = DATE_FIELDS | frozenset("hour minute second milliseconds microseconds".split())
# Casts that accept every value of the source type.
SAFE_CASTS = {
    "smallint": {"smallint", "integer", "bigint", "numeric", "double precision", "real", "text"},
    "integer": {"integer", "bigint", "numeric", "double precision", "text"},
    "bigint": {"bigint", "numeric", "double precision", "text"},
    "numeric": {"numeric", "text"},
    "real": {"real", "double precision", "numeric", "text"},
    "double precision": {"double precision", "numeric", "text"},
    "date": {"date", "timestamp without time zone", "timestamp with time zone", "text"},
    "timestamp without time zone": {"timestamp without time zone", "timestamp with time zone", "date", "text"},
    "timestamp with time zone": {"timestamp with time zone", "timestamp without time zone", "date", "text"},
    "text": {"text", "character varying"},
    "character varying": {"text", "character varying"},
    "character": {"text", "character varying", "character"},
    "boolean": {"boolean", "text"},
}
COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)
LOGIC = (exp.And, exp.Or, exp.Not, exp.Paren, exp.Is, exp.Between, exp.In)
ARITHMETIC = (exp.Add, exp.Sub, exp.Mul)
MAX_MULTIPLICATIONS = 8  # keeps numeric products far from numeric's 10**131072 limit
MAX_LITERAL_DIGITS = 100  # literals, like column values (clamped to 1e100), stay far from it too


def _lo(a: Bound, b: Bound, pick) -> Bound:
    return None if a is None or b is None else pick(a, b)


def _add(a: Interval, b: Interval) -> Interval:
    return (_lo(a[0], b[0], lambda x, y: x + y), _lo(a[1], b[1], lambda x, y: x + y))


def _neg(a: Interval) -> Interval:
    return (None if a[1] is None else -a[1], None if a[0] is None else -a[0])


def _mul(a: Interval, b: Interval) -> Interval:
    if None in a or None in b:
        return UNBOUNDED
    products = [x * y for x in a for y in b]  # type: ignore[operator]
    return (min(products), max(products))


def _union(intervals: list[Interval]) -> Interval:
    if not intervals:
        return UNBOUNDED
    lows, highs = [i[0] for i in intervals], [i[1] for i in intervals]
    return (None if None in lows else min(lows), None if None in highs else max(highs))  # type: ignore[type-var]


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


class RowExpressions:
    """Checks, types and bounds row-level expressions; `resolve` maps a
    column reference to what is known about it (or raises ExpressionRefused)."""

    def __init__(self, resolve: Callable[[exp.Column], ColumnInfo]) -> None:
        self.resolve = resolve

    # checking and typing together: every node is visited once

    def type_of(self, node: exp.Expression) -> str:
        """The expression's type; raises ExpressionRefused for what may fail."""
        if isinstance(node, exp.Column):
            if isinstance(node.this, exp.Star):
                raise ExpressionRefused("a whole-row reference cannot be used in a private query")
            return self.resolve(node).type_name
        if isinstance(node, exp.Literal):
            if node.is_string:
                return "unknown"
            try:
                magnitude = Decimal(node.this).adjusted()
            except ArithmeticError:
                raise ExpressionRefused(f"{node.this} is not a number") from None
            if magnitude > MAX_LITERAL_DIGITS:
                raise ExpressionRefused(f"numbers above 1e{MAX_LITERAL_DIGITS} are not allowed in a private query")
            return "integer" if node.this.lstrip("-").isdigit() else "numeric"
        if isinstance(node, exp.Null):
            return "unknown"
        if isinstance(node, exp.Parameter):
            # A bind value: converted to its type at Bind, before any row is
            # read, so using it cannot fail on a row. Its value is not known
            # here, so it gives no bounds and cannot be a divisor.
            return "unknown"
        if isinstance(node, exp.Boolean):
            return "boolean"
        if isinstance(node, exp.Paren):
            return self.type_of(node.this)
        if isinstance(node, exp.Neg):
            return self._number(node.this, "-")
        if isinstance(node, ARITHMETIC):
            return self._arithmetic(node)
        if isinstance(node, (exp.Div, exp.Mod)):
            return self._division(node)
        if isinstance(node, COMPARISONS):
            self.type_of(node.this), self.type_of(node.expression)
            return "boolean"
        if isinstance(node, LOGIC):
            for child in node.iter_expressions():
                if isinstance(child, exp.Expression):
                    self.type_of(child)
            return "boolean"
        if isinstance(node, (exp.Like, exp.ILike)):
            self.type_of(node.this)
            pattern = literal_string(node.expression)
            if pattern is None or _bad_like_pattern(pattern):
                raise ExpressionRefused("LIKE needs a literal pattern that does not end in an escape character")
            return "boolean"
        if isinstance(node, exp.Case):
            return self._case(node)
        if isinstance(node, (exp.Coalesce, exp.Least, exp.Greatest)):
            kinds = [self.type_of(c) for c in [node.this, *node.expressions]]
            return _common(kinds)
        if isinstance(node, exp.Nullif):
            self.type_of(node.expression)
            return self.type_of(node.this)
        if isinstance(node, exp.Cast):
            return self._cast(node)
        if isinstance(node, exp.TimestampTrunc):
            return self._date_trunc(node)
        if isinstance(node, exp.Extract):
            return self._extract(node)
        if isinstance(node, (exp.Lower, exp.Upper)):
            self._text(node.this, node.key)
            return "text"
        if isinstance(node, exp.Length):
            self._text(node.this, "length")
            return "integer"
        if isinstance(node, (exp.Abs, exp.Floor, exp.Ceil, exp.Round)):
            kind = self._number(node.this, node.key)
            digits = node.args.get("decimals")
            if digits is not None and literal_number(digits) is None:
                raise ExpressionRefused("round() takes a literal number of digits in a private query")
            return "numeric" if kind == "numeric" or isinstance(node, exp.Round) and digits is not None else kind
        raise ExpressionRefused(
            f"{node.key.upper()} expressions are not allowed over rows of a private query "
            "(they could fail on some values, and an error would reveal that such a value exists)"
        )

    def _number(self, node: exp.Expression, operator: str) -> str:
        kind = self.type_of(node)
        if kind == "unknown" and _number_like(node):
            return "numeric"
        if not t.is_number(kind):
            raise ExpressionRefused(f"{operator} needs numbers in a private query, got {kind}")
        return kind

    def _text(self, node: exp.Expression, name: str) -> None:
        kind = self.type_of(node)
        if kind not in t.TEXTS and kind != "unknown":
            raise ExpressionRefused(f"{name}() needs text in a private query, got {kind}")

    def _arithmetic(self, node: exp.Expression) -> str:
        if isinstance(node, exp.Mul) and sum(1 for _ in node.find_all(exp.Mul)) > MAX_MULTIPLICATIONS:
            raise ExpressionRefused(f"more than {MAX_MULTIPLICATIONS} multiplications in one expression")
        left, right = self.type_of(node.this), self.type_of(node.expression)
        if isinstance(node, exp.Sub) and left in t.TIMES and left == right:
            return "integer" if left == "date" else "interval"
        if left in t.TIMES or right in t.TIMES:
            # date + integer overflows the date range for some integers.
            raise ExpressionRefused("date arithmetic other than subtracting two dates is not allowed in a private query")
        for side, kind in ((node.this, left), (node.expression, right)):
            if not t.is_number(kind) and not (kind == "unknown" and _number_like(side)):
                raise ExpressionRefused(f"arithmetic needs numbers in a private query, got {kind}")
        return t.arithmetic(left if left != "unknown" else "numeric", right if right != "unknown" else "numeric")

    def _division(self, node: exp.Expression) -> str:
        divisor = literal_number(node.expression)
        if divisor is None or divisor == 0:
            raise ExpressionRefused(
                "a private query may divide only by a nonzero literal: a division by a column fails "
                "for a zero value, and that error would reveal that such a row exists"
            )
        kind = self._number(node.this, "/")
        divisor_kind = self.type_of(node.expression)
        if isinstance(node, exp.Mod):
            return kind
        return t.arithmetic(kind, divisor_kind)

    def _case(self, node: exp.Case) -> str:
        if node.this is not None:
            self.type_of(node.this)
        results = []
        for branch in node.args.get("ifs") or []:
            self.type_of(branch.this)
            results.append(self.type_of(branch.args["true"]))
        if node.args.get("default") is not None:
            results.append(self.type_of(node.args["default"]))
        return _common(results)

    def _cast(self, node: exp.Cast) -> str:
        target = t.CAST_NAMES.get(node.to.sql("postgres").lower().split("(")[0].strip())
        if target is None:
            raise ExpressionRefused(f"a cast to {node.to.sql('postgres')} is not allowed in a private query")
        if isinstance(node.this, exp.Literal):
            return target  # a literal fails, if at all, whether or not any row exists
        source = self.type_of(node.this)
        if target not in SAFE_CASTS.get(source, set()):
            raise ExpressionRefused(
                f"a cast from {source} to {target} fails for some values, so a private query may not use it"
            )
        return target

    def _date_trunc(self, node: exp.TimestampTrunc) -> str:
        unit = literal_string(node.args.get("unit") or exp.Null())
        if unit is None or unit.lower() not in DATE_TRUNC_UNITS:
            raise ExpressionRefused("date_trunc needs a literal unit such as 'month' in a private query")
        kind = self.type_of(node.this)
        if kind not in t.TIMES:
            raise ExpressionRefused(f"date_trunc needs a date or timestamp, got {kind}")
        return "timestamp without time zone" if kind == "timestamp without time zone" else "timestamp with time zone"

    def _extract(self, node: exp.Extract) -> str:
        field = literal_string(node.this)
        kind = self.type_of(node.expression)
        allowed = DATE_FIELDS if kind == "date" else TIME_FIELDS
        if kind not in t.TIMES or field is None or field.lower() not in allowed:
            raise ExpressionRefused(f"EXTRACT({field} FROM {kind}) is not allowed in a private query")
        return "numeric"

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
            return _union([self.bounds_of(b) for b in branches if not isinstance(b, exp.Null)])
        if isinstance(node, exp.Coalesce):
            return _union([self.bounds_of(c) for c in [node.this, *node.expressions]])
        if isinstance(node, exp.Abs):
            low, high = self.bounds_of(node.this)
            if low is None or high is None:
                return (Fraction(0), None)
            return (Fraction(0) if low <= 0 <= high else min(abs(low), abs(high)), max(abs(low), abs(high)))
        if isinstance(node, (exp.Round, exp.Floor, exp.Ceil)):
            low, high = self.bounds_of(node.this)
            return (None if low is None else low - 1, None if high is None else high + 1)
        return UNBOUNDED

    # SQL PostgreSQL evaluates

    def safe_sql(self, node: exp.Expression) -> str:
        """The expression as SQL whose evaluation cannot fail: number
        operands of arithmetic are cast to numeric, and integer division
        keeps its truncating meaning."""
        return self.safe_node(node).sql("postgres")

    def safe_node(self, node: exp.Expression) -> exp.Expression:
        """A copy of the expression, rebuilt bottom-up so that every
        arithmetic operator, however deeply nested, gets numeric operands."""
        if isinstance(node, (exp.Column, exp.Literal, exp.Parameter, exp.Null, exp.Boolean)):
            return node.copy()
        rebuilt = node.copy()
        for key, value in node.args.items():
            if isinstance(value, exp.Expression):
                rebuilt.set(key, self.safe_node(value))
            elif isinstance(value, list):
                rebuilt.set(key, [self.safe_node(v) if isinstance(v, exp.Expression) else v for v in value])
        if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod)):
            left_kind, right_kind = self.type_of(node.this), self.type_of(node.expression)
            if left_kind in t.TIMES or right_kind in t.TIMES:
                return rebuilt
            result = node.__class__(this=_as_numeric(rebuilt.this), expression=_as_numeric(rebuilt.expression))
            if isinstance(node, exp.Div) and left_kind in t.INTEGERS and right_kind in t.INTEGERS:
                return exp.func("trunc", result)  # integer division truncates
            return result
        if isinstance(node, (exp.Neg, exp.Abs, exp.Floor, exp.Ceil, exp.Round)) and t.is_number(self.type_of(node.this)):
            rebuilt.set("this", _as_numeric(rebuilt.this))
        return rebuilt


def _as_numeric(node: exp.Expression) -> exp.Expression:
    if literal_number(node) is not None:
        return node
    return exp.Cast(this=exp.Paren(this=node), to=exp.DataType.build("numeric"))


def _number_like(node: exp.Expression) -> bool:
    """A numeric literal, or a bind parameter PostgreSQL will type from its use."""
    return literal_number(node) is not None or isinstance(node, exp.Parameter)


def _common(kinds: list[str]) -> str:
    known = [k for k in kinds if k != "unknown"]
    if not known:
        return "text"
    if all(k in t.NUMBERS for k in known):
        result = known[0]
        for k in known[1:]:
            result = t.arithmetic(result, k) if result != k else k
        return result
    return known[0]


def _bad_like_pattern(pattern: str) -> bool:
    trailing = len(pattern) - len(pattern.rstrip("\\"))
    return trailing % 2 == 1
