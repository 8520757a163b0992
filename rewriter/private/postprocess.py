"""Post-processing of released values: the analyst's select-list arithmetic,
HAVING and ORDER BY, evaluated by pgshroud on noisy values with
PostgreSQL's meaning (integer division truncates, numeric rounds half away
from zero, NULL propagates), and the text form of each output type."""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

from sqlglot import exp

from pgshroud.rewriter.private import types as t
from pgshroud.rewriter.private.query import OrderItem

Value = int | float | Fraction | Decimal | str | bool | None
# A released row: its keys' text, its values by variable name, and its output.
ReleasedRow = tuple[Any, dict[str, Value], Any]
_ROUNDINGS: dict[type[exp.Expr], Callable[[Any], Value]] = {exp.Abs: abs, exp.Floor: math.floor, exp.Ceil: math.ceil}
_COMPARISONS: dict[type[exp.Expr], Callable[[Any, Any], bool]] = {
    exp.EQ: operator.eq, exp.NEQ: operator.ne, exp.GT: operator.gt, exp.GTE: operator.ge, exp.LT: operator.lt,
    exp.LTE: operator.le,
}


def parse_key(text: str | None, type_name: str) -> Value:
    """A group key's text as a value to compare (its text is what is output)."""
    if text is None:
        return None
    if type_name in t.INTEGERS:
        return int(text)
    if type_name == "numeric":
        return Fraction(Decimal(text)) if text not in ("NaN", "Infinity", "-Infinity") else float(text)
    if type_name in t.FLOATS:
        return float(text)
    return text


# Post-processing runs for every released group, so its numbers are kept
# small enough that each step is cheap, however the expression is written:
# integers to bigint's range, numerics below 10**1000 in magnitude (a result
# beyond is NULL, as one beyond numeric's own range would be an error; the
# widest bounds a policy can state, about 1e308, give aggregates far below)
# and to 100 decimal places (rounded half away from zero), and numbers
# written in the query with more than 100 digits, or beyond 1e+-1000, read
# as doubles. PostgreSQL's own numeric division keeps 16 to 20 digits.
_INT64 = 2**63
_DIGITS = 100
_MAGNITUDE = 1000
_MAGNITUDE_BITS = 3322  # bits of 10**1000
_SCALE_BITS = 333  # bits of 10**100


def _number(value: Value) -> Value:
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except ArithmeticError:
            return value
        if not number.is_finite() or len(number.as_tuple().digits) > _DIGITS or abs(number.adjusted()) >= _MAGNITUDE:
            return float(number)  # NaN, infinities, and numbers too long to read exactly: approximately
        whole = value.strip().lstrip("+-").isdigit() and -_INT64 <= number < _INT64  # else numeric, as PostgreSQL
        return int(number) if whole else Fraction(number)
    return value


def _in_range(value: Value) -> Value:
    """A result within the ranges above: None beyond them (as for division
    by zero), a fraction with too fine a denominator rounded to 100 places."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else None
    if isinstance(value, Fraction):
        if value.numerator.bit_length() - value.denominator.bit_length() > _MAGNITUDE_BITS:
            return None
        if value.denominator.bit_length() > _SCALE_BITS:
            return _round_half_away(value, _DIGITS)
    return value


def _finite(value: Value) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def _round_half_away(value: Fraction, places: int = 0) -> Fraction:
    scale = Fraction(10) ** places
    scaled = abs(value) * scale
    rounded = math.floor(scaled + Fraction(1, 2))
    return Fraction(rounded if value >= 0 else -rounded) / scale


def evaluate(node: exp.Expr, values: dict[str, Value]) -> Value:
    if isinstance(node, exp.Var):
        return values[node.name]
    if isinstance(node, exp.Literal):
        return node.this if node.is_string else _number(node.this)
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Paren):
        return evaluate(node.this, values)
    if isinstance(node, exp.Neg):
        inner = evaluate(node.this, values)
        return None if inner is None else -inner  # type: ignore[operator]
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod)):
        return _arithmetic(node, evaluate(node.this, values), evaluate(node.expression, values))
    if isinstance(node, exp.Cast):
        return _cast(evaluate(node.this, values), node.to.sql("postgres").lower().split("(")[0].strip())
    if isinstance(node, exp.Round):
        inner = evaluate(node.this, values)
        digits = node.args.get("decimals")
        places = 0 if digits is None else int(evaluate(digits, values))  # type: ignore[arg-type]
        # As PostgreSQL's numeric round clamps the scale to its range, but to ours.
        places = max(-_DIGITS, min(places, _DIGITS))
        if inner is None or not _finite(inner):
            return inner
        if isinstance(inner, float) and digits is None:
            return float(round(inner))
        rounded = _in_range(_round_half_away(Fraction(inner), places))
        if digits is None or rounded is None:
            return rounded
        # numeric round(x, n) prints n decimals, trailing zeros included;
        # 10**n is a multiple of the denominator, so this is exact.
        shown = max(places, 0)
        return Decimal(f"{rounded.numerator * 10**shown // rounded.denominator}E-{shown}")  # type: ignore[union-attr]
    if isinstance(node, (exp.Abs, exp.Floor, exp.Ceil)):
        inner = evaluate(node.this, values)
        if inner is None or not _finite(inner):
            return inner
        return _ROUNDINGS[type(node)](inner)
    if isinstance(node, exp.Coalesce):
        for child in [node.this, *node.expressions]:
            value = evaluate(child, values)
            if value is not None:
                return value
        return None
    if isinstance(node, exp.Nullif):
        value, other = evaluate(node.this, values), evaluate(node.expression, values)
        if value is None or other is None:
            return value
        if isinstance(value, str) != isinstance(other, str):
            value, other = _number(value), _number(other)
        return None if value == other else value
    if isinstance(node, (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)):
        left, right = evaluate(node.this, values), evaluate(node.expression, values)
        if left is None or right is None:
            return None
        if isinstance(left, str) != isinstance(right, str):
            left, right = _number(left), _number(right)
        return _COMPARISONS[type(node)](left, right)
    if isinstance(node, exp.And):
        left, right = evaluate(node.this, values), evaluate(node.expression, values)
        if left is False or right is False:
            return False
        return None if left is None or right is None else True
    if isinstance(node, exp.Or):
        left, right = evaluate(node.this, values), evaluate(node.expression, values)
        if left is True or right is True:
            return True
        return None if left is None or right is None else False
    if isinstance(node, exp.Not):
        inner = evaluate(node.this, values)
        return None if inner is None else not inner
    if isinstance(node, exp.Is):
        inner = evaluate(node.this, values)
        result = inner is None if isinstance(node.expression, exp.Null) else inner == evaluate(node.expression, values)
        return not result if node.args.get("negate") else result  # IS NOT NULL
    raise ValueError(f"cannot evaluate {node.key}")


def _arithmetic(node: exp.Expr, left: Value, right: Value) -> Value:
    return _in_range(_exact_arithmetic(node, left, right))


def _exact_arithmetic(node: exp.Expr, left: Value, right: Value) -> Value:
    if left is None or right is None:
        return None
    left, right = (Fraction(v) if isinstance(v, Decimal) else v for v in (left, right))
    if isinstance(left, float) or isinstance(right, float):
        left, right = float(left), float(right)
    if isinstance(node, exp.Add):
        return left + right  # type: ignore[operator]
    if isinstance(node, exp.Sub):
        return left - right  # type: ignore[operator]
    if isinstance(node, exp.Mul):
        return left * right  # type: ignore[operator]
    if right == 0:
        return None  # PostgreSQL would fail; a released value is not worth an error
    if isinstance(node, exp.Mod):
        return math.fmod(left, right) if isinstance(left, float) else left - right * int(Fraction(left) / right)  # type: ignore[arg-type, operator]
    if isinstance(left, int) and isinstance(right, int):
        return int(Fraction(left, right))  # truncates toward zero, as PostgreSQL
    if isinstance(left, float):
        return left / right  # type: ignore[operator]
    return Fraction(left) / Fraction(right)


def _cast(value: Value, target: str) -> Value:
    kind = t.CAST_NAMES.get(target, target)
    if value is None:
        return None
    if kind in t.INTEGERS:
        return _in_range(int(_round_half_away(Fraction(value)))) if _finite(value) else None
    if kind == "numeric":
        if isinstance(value, str) or not _finite(value):
            return _number(value)
        return Fraction(value)
    if kind in t.FLOATS:
        return float(value)
    if kind == "text":
        return format_value(value, "numeric" if isinstance(value, Fraction) else "text")
    return value


def format_value(value: Value, type_name: str) -> str | None:
    """The text form PostgreSQL would send for a value of this type."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "t" if value else "f"
    if not _finite(value):  # as PostgreSQL spells them for floats and numerics; no integer is infinite
        return None if type_name in t.INTEGERS else {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[repr(value)]
    if type_name in t.INTEGERS:
        return str(int(_round_half_away(Fraction(value)))) if not isinstance(value, str) else value
    if type_name in t.FLOATS:
        return repr(float(value)) if not isinstance(value, str) else value
    if isinstance(value, Decimal):
        return format(value, "f")
    if type_name == "numeric" and not isinstance(value, str):
        return decimal_text(Fraction(value))
    if isinstance(value, Fraction):
        return decimal_text(value)
    return str(value)


def decimal_text(value: Fraction, places: int = 6) -> str:
    """A numeric's text with at most `places` decimals, trailing zeros dropped."""
    with localcontext() as context:
        context.prec = 80
        text = f"{Decimal(value.numerator) / Decimal(value.denominator):.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def key_order(key_text: tuple[str | None, ...], types: tuple[str, ...]) -> tuple[tuple[int, Any, str], ...]:
    """Where a released group goes before the analyst's ORDER BY: by its
    keys' values (numbers as numbers, other values by their text, NaN after
    numbers, NULL last), a total order that depends on the released keys
    alone, never on the order PostgreSQL produced the groups in."""
    parts: list[tuple[int, Any, str]] = []
    for text, type_name in zip(key_text, types):
        if text is None:
            parts.append((3, 0, ""))
            continue
        try:
            value = parse_key(text, type_name)
        except (ValueError, ArithmeticError):
            value = text
        if isinstance(value, str):
            parts.append((1, 0, text))
        elif isinstance(value, float) and math.isnan(value):
            parts.append((2, 0, text))
        else:
            parts.append((0, value, text))
    return tuple(parts)


def sort_rows(rows: list[ReleasedRow], order: Sequence[OrderItem]) -> list[ReleasedRow]:
    """ORDER BY on evaluated rows; NULLs last ascending and first descending, as PostgreSQL.
    The sort is stable: ties keep the order rows come in (see key_order)."""
    if not order:
        return rows

    def compare(a: ReleasedRow, b: ReleasedRow) -> int:
        for item in order:
            # Values an ORDER BY compares are of one type: PostgreSQL typed the expression.
            x: Any = evaluate(item.expression, a[1])
            y: Any = evaluate(item.expression, b[1])
            if x == y:
                continue
            if x is None or y is None:
                first = x is None
                return (-1 if first else 1) if item.nulls_first else (1 if first else -1)
            result = -1 if x < y else 1
            return -result if item.descending else result
        return 0

    return sorted(rows, key=functools.cmp_to_key(compare))
