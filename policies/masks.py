"""The catalogue of masks for dynamic data masking.

Each mask kind is a small, pure builder: from an already-quoted column
reference, the column's type as `format_type()` spells it and the mask's
parameters, it returns the text of a SQL expression that computes the masked
value. The rewriter puts that expression into the masked subquery that
replaces a protected table, so WHERE, JOIN, GROUP BY and ORDER BY only ever
see its result.

What every mask promises:

- It never raises an error inside PostgreSQL, whatever the stored value is:
  NULL, '', very long or non-ASCII text, the largest and smallest numbers,
  NaN and infinities, infinite dates and the first and last days PostgreSQL
  can store. An error that depends on the data is an oracle. Arithmetic is
  done in numeric and kept inside the column type's range; dates move only
  within their type's range.
- NULL stays NULL (the `null` mask hides NULL-ness too).
- The masked value keeps the column's type, typmod included: a generalized
  date is still a date, a pseudonymised integer still an integer, so clients
  and ORMs see the schema they expect. Only `age_band` changes the type, to
  text, because its bands are labels.
- The keyed masks (pseudonym, noise_number, noise_date, fake_name, fake_city)
  are deterministic for the database's key: the same stored value always gives
  the same output, so joins and GROUP BY still work, and repeating a query
  averages no noise away. They call the functions of the `pgshroud` schema
  that `pgshroud setup` creates (see policies/setup_sql.py), on a canonical
  text of the value that no session setting (DateStyle, TimeZone,
  extra_float_digits) can change. Without a key stored they give NULL.
- Nothing from a policy reaches SQL unchecked: numbers are validated Python
  ints and floats written back by Python, strings go through `sql_literal`,
  the column reference and the type name must have the shapes that quoted
  identifiers and `format_type()` produce.
- Functions and types are schema-qualified (`pg_catalog.`, `pgshroud.`), so
  a function planted earlier on the search_path is not called; operators are
  not qualified. No generated text contains a backslash outside a quoted
  identifier, so standard_conforming_strings cannot change a literal.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from pgshroud.policies.model import MaskSpec

SCHEMA = "pgshroud"

# Type families a mask can apply to.
TEXT = "text"
INTEGER = "integer"
NUMERIC = "numeric"
FLOAT = "float"
DATE = "date"
TIMESTAMP = "timestamp"
UUID = "uuid"
OTHER = "other"

_NUMBERS = (INTEGER, NUMERIC, FLOAT)
_DATES = (DATE, TIMESTAMP)


# -- SQL text ----------------------------------------------------------------


def sql_literal(value: str) -> str:
    """A SQL string constant for `value`, safe to splice into any statement.

    Quotes are doubled. A backslash is written as `chr(92)`, so the text means
    the same whether standard_conforming_strings is on or off (the result is
    then a parenthesized concatenation, valid wherever an expression is).
    NUL cannot be stored in PostgreSQL text and is refused.
    """
    if not isinstance(value, str):
        raise TypeError(f"sql_literal takes a str, not {type(value).__name__}")
    if "\x00" in value:
        raise ValueError("a SQL string cannot contain the NUL character")
    if "\\" not in value:
        return "'" + value.replace("'", "''") + "'"
    parts = ["'" + part.replace("'", "''") + "'" for part in value.split("\\")]
    return "(" + " || pg_catalog.chr(92) || ".join(parts) + ")"


_WORD = r'(?:"(?:[^"\x00]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_COLUMN_RE = re.compile(rf"{_WORD}(?:\.{_WORD}){{0,3}}")
_TYPMOD = r"\(\s*-?\d{1,10}\s*(?:,\s*-?\d{1,10}\s*)?\)"
_TYPE_RE = re.compile(rf"{_WORD}(?:\.{_WORD})?(?:\s*{_TYPMOD})?(?:\s+{_WORD}(?:\s*{_TYPMOD})?)*(?:\s*\[\d*\])*")


def _column(column_sql: str) -> str:
    if not isinstance(column_sql, str) or not _COLUMN_RE.fullmatch(column_sql):
        raise ValueError(f"not a column reference: {column_sql!r} (expected quoted identifiers joined by dots, "
                         'such as "t"."ssn")')
    return column_sql


def _column_name(column_sql: str) -> str:
    """The column's own name, the last part of the reference, unquoted."""
    last: str = re.findall(_WORD, column_sql)[-1]
    return last[1:-1].replace('""', '"') if last.startswith('"') else last.lower()


def _num(value: float | Decimal) -> str:
    """A numeric constant; negative ones in parentheses."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise TypeError(f"not a number: {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        value = Decimal(repr(value))
    text = str(value)
    if not re.fullmatch(r"-?\d+(?:\.\d+)?(?:E[+-]?\d+)?", text):
        raise ValueError(f"cannot write {value!r} as a SQL number")
    return f"({text})" if text.startswith("-") else text


# -- column types ------------------------------------------------------------


@dataclass(frozen=True)
class ColumnType:
    """What a mask needs to know of a column's type."""

    sql: str  # the type as given, used in casts back to it
    family: str
    low: Decimal | None = None  # numbers: the smallest storable value
    high: Decimal | None = None  # numbers: the largest storable value
    scale: int | None = None  # numbers: decimal digits kept (numeric(p,s): s)
    with_time_zone: bool = False
    float_send: str = ""  # floats: float4send or float8send

    @property
    def is_plain_text(self) -> bool:
        return self.sql == "text"


_INT_RANGES = {
    "smallint": 16, "int2": 16,
    "integer": 32, "int": 32, "int4": 32,
    "bigint": 64, "int8": 64,
}
_TEXT_RE = re.compile(
    r"(?:text|name|bpchar|varchar|character varying|character|char)(?:\(\d+\))?|(?:[a-z_][a-z0-9_$]*\.)?citext"
)
_NUMERIC_RE = re.compile(r"(?:numeric|decimal)(?:\((\d+)(?:,(-?\d+))?\))?")
_TIMESTAMP_RE = re.compile(r"timestamp(?:\(\d\))?(?: (with|without) time zone)?|timestamptz(?:\(\d\))?")
# The largest finite float4 (slightly below, so that numeric -> real never rounds up) and float8.
_FLOAT_MAX = {"real": Decimal("3.4028234E+38"), "double precision": Decimal("1.7976931348623157E+308")}
# Unconstrained numeric: beyond this magnitude (numeric's own limit is 10^131072)
# results are pinned, so no arithmetic can overflow.
_NUMERIC_HUGE = Decimal("1E+130000")


# The words that follow the first in the types format_type() spells in several.
_TYPE_WORDS = frozenset(
    ["varying", "precision", "with", "without", "time", "zone", "year", "month", "day", "hour", "minute", "second", "to"]
)


def column_type(type_name: str) -> ColumnType:
    """Classify a type as `format_type()` spells it; ValueError if it is not a type name."""
    if not isinstance(type_name, str) or not _TYPE_RE.fullmatch(type_name.strip()):
        raise ValueError(f"not a type name: {type_name!r}")
    words = re.sub(r'"(?:[^"]|"")*"|\(.*?\)|\[\d*\]', " ", type_name).split()
    if any(word.lower() not in _TYPE_WORDS for word in words[1:]):
        raise ValueError(f"not a type name: {type_name!r}")
    sql = " ".join(type_name.split())
    key = sql.lower() if '"' not in sql else sql
    key = re.sub(r"\s*([(,])\s*|\s*(\))", r"\1\2", key)
    if key in _INT_RANGES:
        bits = _INT_RANGES[key]
        return ColumnType(sql, INTEGER, Decimal(-(2 ** (bits - 1))), Decimal(2 ** (bits - 1) - 1), 0)
    if _TEXT_RE.fullmatch(key):
        return ColumnType(sql, TEXT)
    match = _NUMERIC_RE.fullmatch(key)
    if match:
        if match.group(1) is None:
            return ColumnType(sql, NUMERIC)
        precision, scale = int(match.group(1)), int(match.group(2) or 0)
        high = Decimal(10) ** (precision - scale) - Decimal(10) ** (-scale)
        return ColumnType(sql, NUMERIC, -high, high, scale)
    if key in ("real", "float4", "double precision", "float8", "float"):
        name = "real" if key in ("real", "float4") else "double precision"
        send = "float4send" if name == "real" else "float8send"
        return ColumnType(sql, FLOAT, -_FLOAT_MAX[name], _FLOAT_MAX[name], None, float_send=send)
    if key == "date":
        return ColumnType(sql, DATE)
    match = _TIMESTAMP_RE.fullmatch(key)
    if match:
        return ColumnType(sql, TIMESTAMP, with_time_zone=match.group(1) == "with" or key.startswith("timestamptz"))
    if key == "uuid":
        return ColumnType(sql, UUID)
    return ColumnType(sql, OTHER)


def _cast(expr: str, ct: ColumnType) -> str:
    return expr if ct.is_plain_text else f"CAST({expr} AS {ct.sql})"


def _as_text(col: str, ct: ColumnType) -> str:
    return col if ct.is_plain_text else f"CAST({col} AS pg_catalog.text)"


def _canonical_text(col: str, ct: ColumnType) -> str:
    """The value as text that no session setting changes: the input of keyed hashes."""
    if ct.family == FLOAT:
        return f"pg_catalog.encode(pg_catalog.{ct.float_send}({col}), 'hex')"
    if ct.family in _DATES:
        # numeric since PostgreSQL 14; DateStyle and TimeZone do not enter.
        return f"CAST(EXTRACT(epoch FROM {col}) AS pg_catalog.text)"
    return _as_text(col, ct)


def _specials(col: str, ct: ColumnType) -> str | None:
    """A condition true for NaN and the infinities, which masks pass through."""
    if ct.family == FLOAT:
        base = "pg_catalog.float4" if ct.float_send == "float4send" else "pg_catalog.float8"
    elif ct.family == NUMERIC:
        base = "pg_catalog.numeric"
    else:
        return None
    return f"{col} IN (CAST('NaN' AS {base}), CAST('Infinity' AS {base}), CAST('-Infinity' AS {base}))"


def _as_numeric(col: str, ct: ColumnType) -> str:
    """The value as numeric; floats clamped to the finite range (float8 -> numeric rounds to 15 digits)."""
    n = f"CAST({col} AS pg_catalog.numeric)"
    if ct.float_send == "float4send":
        # real -> numeric keeps 6 digits; through double precision, 15.
        n = f"CAST(CAST({col} AS pg_catalog.float8) AS pg_catalog.numeric)"
    if ct.family == FLOAT:
        assert ct.low is not None and ct.high is not None
        n = f"GREATEST({_num(ct.low)}, LEAST({_num(ct.high)}, {n}))"
    return n


def _float_round(expr: str, ct: ColumnType) -> str:
    # Below half the smallest subnormal, numeric -> float raises "out of range":
    # round such values to zero first.
    digits = 45 if ct.float_send == "float4send" else 323
    return f"pg_catalog.round({expr}, {digits})"


# -- parameters --------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One parameter of a mask kind."""

    name: str
    expects: str  # what a valid value is, for messages: "int >= 0"
    default: Any  # None: no value (the mask then says what happens)
    valid: Callable[[Any], bool]
    default_text: str | None = None  # how to show the default, when not repr(default)

    def describe(self) -> str:
        if self.default_text is not None:
            shown = self.default_text
        elif self.default is None:
            return f"{self.name} ({self.expects})"
        elif isinstance(self.default, str):
            shown = repr(self.default)
        else:
            shown = str(self.default)
        return f"{self.name} ({self.expects}, default {shown})"


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_number(value: Any, low: float, high: float, *, low_open: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not math.isfinite(value):
        return False
    return (low < value if low_open else low <= value) and value <= high


def _is_string(value: Any, max_length: int) -> bool:
    return isinstance(value, str) and "\x00" not in value and len(value) <= max_length


# Characters that mean something in a regexp_replace replacement (\ and &) or
# that would need quoting are not mask characters.
_MASK_CHARS = frozenset(chr(code) for code in range(0x21, 0x7F)) - {"\\", "&", "'", '"'}


def _is_mask_char(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 1 and value in _MASK_CHARS


def _iso_date(value: str) -> bool:
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        try:
            datetime.datetime.fromisoformat(value)
        except ValueError:
            return False
    return True


def _is_redact_value(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" not in value and _iso_date(value)
    return _is_number(value, -1e308, 1e308)


def _int_param(name: str, default: int, low: int, high: int) -> Param:
    expects = f"int >= {low}" if high >= 10**6 else f"int from {low} to {high}"
    return Param(name, expects, default, lambda v: _is_int(v, low, high))


def _mask_char_param(default: str) -> Param:
    return Param("mask_char", "one ASCII character other than \\ & ' \"", default, _is_mask_char)


def _salt_param(default: str | None, default_text: str | None = None) -> Param:
    return Param("salt", "string of up to 200 characters", default, lambda v: _is_string(v, 200), default_text)


def _choice_param(name: str, choices: tuple[str, ...], default: str) -> Param:
    return Param(name, " | ".join(choices), default, lambda v: v in choices)


# -- mask kinds --------------------------------------------------------------

Builder = Callable[[str, ColumnType, Mapping[str, Any]], str]


@dataclass(frozen=True)
class MaskKind:
    """A kind of mask: its parameters and the builder of its SQL expression."""

    name: str
    params: Mapping[str, Param]
    description: str
    applies_to: str  # the column types it takes, for messages
    _builder: Builder
    _check_params: Callable[[Mapping[str, Any]], str | None] | None = None

    def takes(self) -> str:
        if not self.params:
            return f"{self.name} takes no parameters"
        return f"{self.name} takes " + ", ".join(param.describe() for param in self.params.values())

    def check(self, params: Any) -> str | None:
        """None if `params` are valid for this kind, else what was expected."""
        if not isinstance(params, Mapping):
            return f"mask {self.name}: parameters must be a mapping; {self.takes()}"
        for name, value in params.items():
            param = self.params.get(name)
            if param is None:
                return f"mask {self.name}: unknown parameter {name!r}; {self.takes()}"
            if value is None and param.default is None:
                continue
            if not param.valid(value):
                return f"mask {self.name}: {name} must be {param.expects}, not {value!r}; {self.takes()}"
        if self._check_params is not None:
            problem = self._check_params(params)
            if problem:
                return f"mask {self.name}: {problem}; {self.takes()}"
        return None

    def build(self, column_sql: str, type_name: str, params: Mapping[str, Any] | None = None) -> str:
        """The SQL expression masking `column_sql`, a column of type `type_name`.

        ValueError if the parameters are invalid, or the mask does not apply
        to the type.
        """
        params = {} if params is None else params
        problem = self.check(params)
        if problem:
            raise ValueError(problem)
        col = _column(column_sql)
        ct = column_type(type_name)
        resolved = {name: param.default for name, param in self.params.items()} | dict(params)
        expr = self._builder(col, ct, resolved)
        # Parenthesized, so that it splices into any expression unchanged.
        return expr if expr == col else f"({expr})"

    def _refuse(self, col: str, ct: ColumnType) -> ValueError:
        return ValueError(f"mask {self.name} applies to {self.applies_to}; column {col} is {ct.sql}")


def _require(kind: str, col: str, ct: ColumnType, *families: str) -> None:
    if ct.family not in families:
        raise MASKS[kind]._refuse(col, ct)


def _typed(ct: ColumnType, case: str) -> str:
    # A CASE with a NULL branch loses the typmod: cast the whole of it.
    return f"CAST({case} AS {ct.sql})"


def _null_safe(col: str, expr: str, ct: ColumnType) -> str:
    return _typed(ct, f"CASE WHEN {col} IS NULL THEN NULL ELSE {expr} END")


# none, null, redact


def _build_none(col: str, ct: ColumnType, p: Mapping[str, Any]) -> str:
    return col


def _build_null(col: str, ct: ColumnType, p: Mapping[str, Any]) -> str:
    return f"CAST(NULL AS {ct.sql})"


def _fits(value: Decimal, ct: ColumnType) -> bool:
    if ct.low is None or ct.high is None:
        return True
    if ct.scale is not None and ct.family != FLOAT:
        value = round(value, ct.scale)
    return ct.low <= value <= ct.high


def _iso_constant(value: str, ct: ColumnType) -> str:
    """An ISO date or timestamp constant for the column; the same instant in every time zone."""
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        moment = datetime.datetime.combine(datetime.date.fromisoformat(value), datetime.time())
    if ct.family == DATE:
        return moment.date().isoformat()
    if not ct.with_time_zone:
        return moment.replace(tzinfo=None).isoformat(sep=" ")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.isoformat(sep=" ")


def _build_redact(col: str, ct: ColumnType, p: Mapping[str, Any]) -> str:
    value = p["value"]
    if ct.family == TEXT:
        if value is not None:
            raise ValueError(f"mask redact: on text column {col}, give `text`, not `value`")
        return _null_safe(col, sql_literal(p["text"]), ct)
    if ct.family in _NUMBERS:
        number = Decimal(0) if value is None else Decimal(repr(value) if isinstance(value, float) else value)
        if isinstance(value, str) or (ct.family == INTEGER and number != number.to_integral_value()):
            raise ValueError(f"mask redact: value {value!r} is not a number of column {col}'s type {ct.sql}")
        if not _fits(number, ct):
            raise ValueError(f"mask redact: value {value!r} does not fit column {col}'s type {ct.sql}")
        return _null_safe(col, _num(number), ct)
    if ct.family in _DATES and isinstance(value, str):
        return _null_safe(col, sql_literal(_iso_constant(value, ct)), ct)
    if value is not None:
        raise ValueError(f"mask redact: value {value!r} does not apply to column {col} of type {ct.sql}")
    return f"CAST(NULL AS {ct.sql})"


# text masks


def _build_partial(col: str, ct: ColumnType, p: Mapping[str, Any]) -> str:
    _require("partial", col, ct, TEXT)
    t = _as_text(col, ct)
    first, last, char = p["keep_first"], p["keep_last"], sql_literal(p["mask_char"])
    length = f"pg_catalog.char_length({t})"
    # A value no longer than what would be kept is masked whole.
    expr = (
        f"CASE WHEN {t} IS NULL THEN NULL "
        f"WHEN {length} <= {first + last} THEN pg_catalog.repeat({char}, {length}) "
        f"ELSE pg_catalog.left({t}, {first}) || pg_catalog.repeat({char}, {length} - {first + last}) "
        f"|| pg_catalog.right({t}, {last}) END"
    )
    return _cast(expr, ct)


def _build_email(col: str, ct: ColumnType, p: Mapping[str, Any]) -> str:
    _require("email", col, ct, TEXT)
    t = _as_text(col, ct)
    mask = sql_literal(p["mask_char"] * 4)
    # The domain is what follows the last '@'; without '@' nothing is kept.
    domain = f"pg_catalog.reverse(pg_catalog.split_part(pg_catalog.reverse({t}), '@', 1))"
    expr = (
        f"CASE WHEN {t} IS NULL THEN NULL "
        f"WHEN pg_catalog.strpos({t}, '@') > 0 THEN {mask} || '@' || {domain} "
        f"ELSE {mask} END"
    )
    return _cast(expr, ct)


# Characters a phone number or SSN is formatted with; every other character
# except the kept digits is replaced.
_SEPARATORS = " ()+./-"
# Longer values are not phone numbers: masked whole, which also bounds the
# regular-expression work per value.
_DIGITS_MAX_LENGTH = 64


def _keep_last_digits(col: str, ct: ColumnType, keep_last: int, mask_char: str) -> str:
    t = _as_text(col, ct)
    char = sql_literal(mask_char)
    mask_all = f"pg_catalog.regexp_replace({t}, '[^{_SEPARATORS}]', {char}, 'g')"
    if keep_last == 0:
        return _cast(mask_all, ct)
    digits = f"pg_catalog.char_length(pg_catalog.regexp_replace({t}, '[^0-9]', '', 'g'))"
    tail = f"pg_catalog.substring({t}, '(?:[0-9][^0-9]*){{{keep_last}}}$')"
    head = f"pg_catalog.left({t}, pg_catalog.char_length({t}) - pg_catalog.char_length({tail}))"
    # Only a value with more digits than are kept shows any.
    expr = (
        f"CASE WHEN {t} IS NULL THEN NULL "
        f"WHEN pg_catalog.char_length({t}) > {_DIGITS_MAX_LENGTH} OR {digits} <= {keep_last} THEN {mask_all} "
        f"ELSE pg_catalog.regexp_replace({head}, '[^{_SEPARATORS}]', {char}, 'g') "
        f"|| pg_catalog.regexp_replace({tail}, '[^0-9{_SEPARATORS}]', {char}, 'g') END"
    )
    return _cast(expr, ct)


def _build_phone(col: str, ct: ColumnType, p: Mapping[str, Any]) -> str:
    _require("phone", col, ct, TEXT)
    return _keep_last_digits(col, ct, p["keep_last"], p["mask_char"])


def _build_ssn(col: str, ct: ColumnType, p: Mapping[str, Any]) -> str:
    _require("ssn", col, ct, TEXT)
    return _keep_last_digits(col, ct, p["keep_last"], p["mask_char"])


def _build_zip3(col: str, ct: ColumnType, p: Mapping[str, Any]) -> str:
    _require("zip3", col, ct, TEXT)
    t = _as_text(col, ct)
    digits = f"pg_catalog.regexp_replace(pg_catalog.left({t}, 32), '[^0-9]', '', 'g')"
    expr = (
        f"CASE WHEN {t} IS NULL THEN NULL "
        f"WHEN pg_catalog.char_length({digits}) >= 3 THEN pg_catalog.left({digits}, 3) || '00' "
        f"ELSE '00000' END"
    )
    return _cast(expr, ct)


# keyed masks


def _build_pseudonym(col: str, ct: ColumnType, p: Mapping[str, Any]) -> str:
    salt = sql_literal(p["salt"])
    if ct.family == TEXT:
        return _cast(f"{SCHEMA}.pseudonym_text({_as_text(col, ct)}, {salt}, {p['length']})", ct)
    if ct.family == UUID:
        return _cast(f"{SCHEMA}.pseudonym_uuid({_as_text(col, ct)}, {salt})", ct)
    if ct.family == INTEGER or (ct.family == NUMERIC and ct.scale in (None, 0)):
        # Positive and within the type: 1 .. the type's maximum (bigint's at most).
        top = min(ct.high, Decimal(2**63 - 1)) if ct.high is not None else Decimal(2**63 - 1)
        if top < 1:
            raise ValueError(f"mask pseudonym: column {col} of type {ct.sql} cannot hold a positive integer")
        return _cast(f"{SCHEMA}.pseudonym_bigint({_as_text(col, ct)}, {salt}, {_num(top)})", ct)
    raise ValueError(
        f"mask pseudonym applies to text, integer, numeric without decimals and uuid columns; "
        f"column {col} is {ct.sql}"
    )


def _noise_salt(col: str, p: Mapping[str, Any]) -> str:
    return sql_literal(p["salt"] if p["salt"] is not None else _column_name(col))


def _build_noise_number(col: str, ct: ColumnType, p: Mapping[str, Any]) -> str:
    _require("noise_number", col, ct, *_NUMBERS)
    relative, absolute = p["relative"], p["absolute"]
    if relative is None and absolute is None:
        relative = 0.1
    fraction = f"CAST({SCHEMA}.noise_fraction({_canonical_text(col, ct)}, {_noise_salt(col, p)}) AS pg_catalog.numeric)"
    n = _as_numeric(col, ct)
    noise = f"({n} * {_num(relative)} * {fraction})" if relative is not None else f"({_num(absolute)} * {fraction})"

    # Beyond +-guard, noise only moves a value towards zero, so it stays in range.
    if ct.high is None:
        guard = _NUMERIC_HUGE
    else:
        ulp = Decimal(1) if ct.family == INTEGER else Decimal(10) ** -(ct.scale or 0) if ct.family == NUMERIC else 0
        if relative is not None:
            guard = (ct.high - ulp) / (1 + Decimal(repr(relative)))
        else:
            spread = Decimal(repr(absolute)) if isinstance(absolute, float) else Decimal(absolute)
            if spread > ct.high / 4:
                raise ValueError(f"mask noise_number: absolute {absolute!r} is too large for column {col} "
                                 f"of type {ct.sql}")
            if ct.family == INTEGER and spread < 1:
                raise ValueError(f"mask noise_number: absolute {absolute!r} is below 1, which rounds to no "
                                 f"noise on integer column {col}")
            guard = ct.high - spread - ulp
        if guard > 1:
            guard = guard.to_integral_value(rounding=ROUND_FLOOR)

    def finish(expr: str) -> str:
        if ct.family == INTEGER:
            expr = f"pg_catalog.round({expr})"
        elif ct.family == NUMERIC:
            digits = ct.scale if ct.scale is not None else f"pg_catalog.scale({n})"
            expr = f"pg_catalog.round({expr}, {digits})"
        else:
            expr = _float_round(expr, ct)
        return f"CAST({expr} AS {ct.sql})"

    specials = _specials(col, ct)
    return _typed(ct, (
        f"CASE WHEN {col} IS NULL THEN NULL "
        + (f"WHEN {specials} THEN {col} " if specials else "")
        + f"WHEN {n} > {_num(guard)} THEN {finish(f'{n} - pg_catalog.abs({noise})')} "
        f"WHEN {n} < {_num(-guard)} THEN {finish(f'{n} + pg_catalog.abs({noise})')} "
        f"ELSE {finish(f'{n} + {noise}')} END"
    ))


def _check_noise_number(params: Mapping[str, Any]) -> str | None:
    if params.get("relative") is not None and params.get("absolute") is not None:
        return "give relative or absolute, not both"
    return None


# The first and last instants PostgreSQL stores (dates reach further, but
# these bound both), written so that they read the same in every time zone.
_TS_MIN = "'4714-11-24 00:00:00+00 BC'"
_TS_MAX = "'294276-12-31 23:59:59.999999+00'"
_DATE_MIN = "'4714-11-24 BC'"
_DATE_MAX = "'5874897-12-31'"


def _date_base(ct: ColumnType) -> str:
    if ct.family == DATE:
        return "pg_catalog.date"
    return "pg_catalog.timestamptz" if ct.with_time_zone else "pg_catalog.timestamp"


def _build_noise_date(col: str, ct: ColumnType, p: Mapping[str, Any]) -> str:
    _require("noise_date", col, ct, *_DATES)
    days = p["days"]
    shift = f"{SCHEMA}.noise_offset({_canonical_text(col, ct)}, {_noise_salt(col, p)}, {days})"
    base = _date_base(ct)
    if ct.family == DATE:
        low = f"CAST({_DATE_MIN} AS {base}) + {days + 1}"
        high = f"CAST({_DATE_MAX} AS {base}) - {days + 1}"

        def move(sign: str, amount: str) -> str:
            return f"{col} {sign} CAST({amount} AS pg_catalog.int4)"
    else:
        margin = f"CAST('{(days + 1) * 24} hours' AS pg_catalog.interval)"
        low = f"CAST({_TS_MIN} AS {base}) + {margin}"
        high = f"CAST({_TS_MAX} AS {base}) - {margin}"

        def move(sign: str, amount: str) -> str:
            return (f"CAST({col} {sign} CAST({amount} AS pg_catalog.float8) "
                    f"* CAST('24 hours' AS pg_catalog.interval) AS {ct.sql})")
    # Near the ends of the range, the shift goes inwards.
    return _typed(ct, (
        f"CASE WHEN {col} IS NULL THEN NULL WHEN NOT pg_catalog.isfinite({col}) THEN {col} "
        f"WHEN {col} < {low} THEN {move('+', f'pg_catalog.abs({shift})')} "
        f"WHEN {col} > {high} THEN {move('-', f'pg_catalog.abs({shift})')} "
        f"ELSE {move('+', shift)} END"
    ))


def _build_fake_name(col: str, ct: ColumnType, p: Mapping[str, Any]) -> str:
    _require("fake_name", col, ct, TEXT)
    t, salt = _as_text(col, ct), sql_literal(p["salt"])
    first = f"{SCHEMA}.fake('first_name', {t}, {salt})"
    last = f"{SCHEMA}.fake('last_name', {t}, {salt})"
    expr = {"first": first, "last": last, "full": f"{first} || ' ' || {last}"}[p["part"]]
    return _cast(expr, ct)


def _build_fake_city(col: str, ct: ColumnType, p: Mapping[str, Any]) -> str:
    _require("fake_city", col, ct, TEXT)
    return _cast(f"{SCHEMA}.fake('city', {_as_text(col, ct)}, {sql_literal(p['salt'])})", ct)


# generalization


def _build_generalize_number(col: str, ct: ColumnType, p: Mapping[str, Any]) -> str:
    _require("generalize_number", col, ct, *_NUMBERS)
    width = p["width"]
    if ct.family == INTEGER and not (isinstance(width, int) or float(width).is_integer()):
        raise ValueError(f"mask generalize_number: width {width!r} is not a whole number, and column {col} "
                         f"is {ct.sql}")
    w = _num(int(width) if ct.family == INTEGER else width)
    n = _as_numeric(col, ct)
    # floor(n / w) * w, exactly: div() truncates towards zero.
    band = f"((pg_catalog.div({n}, {w}) - CASE WHEN pg_catalog.mod({n}, {w}) < 0 THEN 1 ELSE 0 END) * {w})"
    whens = []
    specials = _specials(col, ct)
    if specials:
        whens.append(f"WHEN {specials} THEN {col}")
    if ct.low is not None:
        # The lowest band starts below the type's range: it reads as the minimum.
        whens.append(f"WHEN {n} < {_num(ct.low)} + {w} THEN CAST({_num(ct.low)} AS {ct.sql})")
    else:
        huge = _num(_NUMERIC_HUGE)
        whens.append(f"WHEN {n} >= {huge} THEN CAST({huge} AS {ct.sql})")
        whens.append(f"WHEN {n} <= -{huge} THEN CAST(-{huge} AS {ct.sql})")
    return _typed(ct, f"CASE WHEN {col} IS NULL THEN NULL {' '.join(whens)} ELSE CAST({band} AS {ct.sql}) END")


def _build_generalize_date(col: str, ct: ColumnType, p: Mapping[str, Any]) -> str:
    _require("generalize_date", col, ct, *_DATES)
    to = p["to"]
    base = _date_base(ct)
    if ct.family == DATE:
        field = {"year": "doy", "month": "day"}.get(to)
        if field is None:
            return col
        # Dates before 4713 BC would truncate below the first storable day.
        return _typed(ct, (
            f"CASE WHEN {col} IS NULL THEN NULL WHEN NOT pg_catalog.isfinite({col}) THEN {col} "
            f"WHEN {col} < CAST('4713-01-01 BC' AS {base}) THEN CAST({_DATE_MIN} AS {ct.sql}) "
            f"ELSE {col} - (CAST(EXTRACT({field} FROM {col}) AS pg_catalog.int4) - 1) END"
        ))
    # date_trunc fails near the ends of the range (in the session's time zone,
    # and on the values a typmod rounded past the last instant): those read
    # as a fixed start of a year, month or day.
    last = {"year": "294276-01-01", "month": "294276-12-01", "day": "294276-12-30"}[to]
    return _typed(ct, (
        f"CASE WHEN {col} IS NULL THEN NULL WHEN NOT pg_catalog.isfinite({col}) THEN {col} "
        f"WHEN {col} < CAST('4713-01-02 00:00:00+00 BC' AS {base}) THEN CAST({_TS_MIN} AS {ct.sql}) "
        f"WHEN {col} >= CAST('294276-12-30 00:00:00+00' AS {base}) THEN CAST('{last} 00:00:00+00' AS {ct.sql}) "
        f"ELSE CAST(pg_catalog.date_trunc('{to}', {col}) AS {ct.sql}) END"
    ))


def _build_age_band(col: str, ct: ColumnType, p: Mapping[str, Any]) -> str:
    _require("age_band", col, ct, *_DATES)
    width, top = p["width"], p["top"]
    born = col if ct.family == DATE else f"CAST({col} AS pg_catalog.date)"
    years = (
        "CAST(EXTRACT(year FROM pg_catalog.age(CAST(CURRENT_DATE AS pg_catalog.timestamp), "
        f"CAST({born} AS pg_catalog.timestamp))) AS pg_catalog.int4)"
    )
    start = f"({years} / {width} * {width})"
    band = (
        f"CAST({start} AS pg_catalog.text) || '-' || "
        f"CAST(LEAST({start} + {width - 1}, {top - 1}) AS pg_catalog.text)"
    )
    # age() needs dates a timestamp can hold: the very old are in the top band,
    # births after today have no age.
    return (
        f"CASE WHEN {col} IS NULL OR NOT pg_catalog.isfinite({col}) THEN NULL "
        f"WHEN {born} > CURRENT_DATE THEN NULL "
        f"WHEN {born} < CAST('1800-01-01' AS pg_catalog.date) THEN '{top}+' "
        f"WHEN {years} >= {top} THEN '{top}+' "
        f"ELSE {band} END"
    )


def _kind(name: str, description: str, applies_to: str, builder: Builder, *params: Param,
          check: Callable[[Mapping[str, Any]], str | None] | None = None) -> MaskKind:
    return MaskKind(name, {param.name: param for param in params}, description, applies_to, builder, check)


_ANY = "columns of any type"
_TEXTS = "text columns (text, varchar, char, name, citext)"
_NUMBER_TYPES = "number columns (smallint, integer, bigint, numeric, real, double precision)"
_DATE_TYPES = "date and timestamp columns"

MASKS: dict[str, MaskKind] = {
    kind.name: kind
    for kind in (
        _kind("none", "The column itself, unmasked.", _ANY, _build_none),
        _kind("null", "NULL of the column's type, for every row: hides NULL-ness too.", _ANY, _build_null),
        _kind(
            "redact",
            "A constant of the column's type for every non-NULL value: `text` on text columns, `value` "
            "(default 0) on number columns, `value` (an ISO date or timestamp, UTC unless it says "
            "otherwise; default NULL) on date and timestamp columns, NULL on columns of other types.",
            _ANY,
            _build_redact,
            Param("text", "string of up to 1000 characters", "[REDACTED]", lambda v: _is_string(v, 1000)),
            Param("value", "number, or ISO date for date columns", None, _is_redact_value,
                  "0 for numbers, NULL for dates"),
        ),
        _kind(
            "partial",
            "Keeps the first keep_first and last keep_last characters and replaces the others with "
            "mask_char, keeping the length. A value no longer than keep_first + keep_last is masked whole.",
            _TEXTS,
            _build_partial,
            _int_param("keep_first", 0, 0, 1000),
            _int_param("keep_last", 4, 0, 1000),
            _mask_char_param("*"),
        ),
        _kind(
            "email",
            "Keeps the domain, after the last '@': 'j.doe@example.org' reads '****@example.org'. A value "
            "without '@' reads '****'.",
            _TEXTS,
            _build_email,
            _mask_char_param("*"),
        ),
        _kind(
            "phone",
            "Keeps the format (spaces and ()+./-) and the last keep_last digits, replacing every other "
            "character: '+1 (555) 123-4567' reads '+X (XXX) XXX-XX67'. A value with no more digits than "
            "keep_last, or longer than 64 characters, is masked whole.",
            _TEXTS,
            _build_phone,
            _int_param("keep_last", 2, 0, 20),
            _mask_char_param("X"),
        ),
        _kind(
            "ssn",
            "Like phone, keeping the last 4 digits: '123-45-6789' reads 'XXX-XX-6789'.",
            _TEXTS,
            _build_ssn,
            _int_param("keep_last", 4, 0, 20),
            _mask_char_param("X"),
        ),
        _kind(
            "zip3",
            "The first three digits followed by '00': '94107' and '94107-1234' read '94100'. A value with "
            "fewer than three digits in its first 32 characters reads '00000'.",
            _TEXTS,
            _build_zip3,
        ),
        _kind(
            "pseudonym",
            "A keyed HMAC-SHA256 pseudonym, the same for the same value and salt, so joins and GROUP BY "
            "still match. Text reads 'p_' and `length` hex digits; integers read a positive integer of "
            "the same type (distinct values can collide, within int4 more often than within bigint); "
            "uuids read a uuid.",
            "text, integer, numeric without decimals and uuid columns",
            _build_pseudonym,
            _salt_param(""),
            _int_param("length", 16, 8, 64),
        ),
        _kind(
            "generalize_number",
            "The start of the value's band of `width`: floor(x / width) * width, of the column's type. "
            "NaN and infinities stay; values in a band that starts below the type's range read as its "
            "minimum.",
            _NUMBER_TYPES,
            _build_generalize_number,
            Param("width", "number from 0.000001 to 1e100", 10,
                  lambda v: _is_number(v, 1e-6, 1e100)),
        ),
        _kind(
            "generalize_date",
            "The start of the value's year, month or day, of the column's type (timestamps with time "
            "zone in the session's time zone). Infinite values stay.",
            _DATE_TYPES,
            _build_generalize_date,
            _choice_param("to", ("year", "month", "day"), "year"),
        ),
        _kind(
            "age_band",
            "The age today of a birth date, as a text band of `width` years ('30-39'); ages from `top` "
            "read 'top+' ('90+'). Births after today and infinite dates read NULL. The result is text.",
            _DATE_TYPES,
            _build_age_band,
            _int_param("width", 10, 1, 100),
            _int_param("top", 90, 1, 200),
        ),
        _kind(
            "noise_number",
            "Adds keyed deterministic noise, uniform within +-relative * |x| or +-absolute, derived "
            "from HMAC(key, salt and the value): the same value always gets the same noise, so repeating "
            "a query averages nothing away. The mean absolute noise is half the bound. Results are "
            "rounded to the column's scale; NaN and infinities stay.",
            _NUMBER_TYPES,
            _build_noise_number,
            Param("relative", "number in (0, 1]", None, lambda v: _is_number(v, 0, 1, low_open=True),
                  "0.1 when absolute is not given"),
            Param("absolute", "number from 0.000001 to 1e300", None, lambda v: _is_number(v, 1e-6, 1e300)),
            _salt_param(None, "the column's name"),
            check=_check_noise_number,
        ),
        _kind(
            "noise_date",
            "Shifts the value by a keyed deterministic whole number of days within +-days (the same "
            "value, the same shift). Infinite values stay; near the ends of the type's range the shift "
            "goes inwards.",
            _DATE_TYPES,
            _build_noise_date,
            _int_param("days", 30, 1, 36500),
            _salt_param(None, "the column's name"),
        ),
        _kind(
            "fake_name",
            "A realistic name chosen by keyed hash of the value from the shipped dictionaries: the same "
            "value, the same fake. part: full ('First Last'), first or last.",
            _TEXTS,
            _build_fake_name,
            _salt_param(""),
            _choice_param("part", ("full", "first", "last"), "full"),
        ),
        _kind(
            "fake_city",
            "A real city name chosen by keyed hash of the value: the same value, the same fake.",
            _TEXTS,
            _build_fake_city,
            _salt_param(""),
        ),
    )
}


def check_mask(spec: MaskSpec) -> str | None:
    """None if `spec` names a known kind with valid parameters, else what was expected."""
    kind = MASKS.get(spec.kind) if isinstance(spec.kind, str) else None
    if kind is None:
        return f"unknown mask {spec.kind!r}; the masks are: {', '.join(MASKS)}"
    return kind.check(spec.params)


def mask_expression(spec: MaskSpec, column_sql: str, type_name: str) -> str:
    """The SQL expression computing the masked value of `column_sql` (of type `type_name`).

    ValueError if the spec is invalid or the mask does not apply to the type.
    """
    problem = check_mask(spec)
    if problem:
        raise ValueError(problem)
    return MASKS[spec.kind].build(column_sql, type_name, spec.params)
