"""PostgreSQL types of private answers, inferred without asking PostgreSQL.

A private answer is built by pgshroud, so its RowDescription must name the
types the original query would have produced (count bigint, avg numeric,
...) before anything runs: asyncpg and JDBC describe a statement before they
execute it. Types are named as `format_type` prints them and the catalog
snapshot holds; their modifiers (numeric(3,0), varchar(10), timestamp(0))
are kept apart, because whether a cast can fail depends on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from sqlglot import exp

# format_type names (without modifiers) -> OID.
OIDS = {
    "boolean": 16, "bigint": 20, "smallint": 21, "integer": 23, "text": 25, "real": 700,
    "double precision": 701, "character": 1042, "character varying": 1043, "date": 1082,
    "timestamp without time zone": 1114, "timestamp with time zone": 1184, "interval": 1186,
    "numeric": 1700, "uuid": 2950, "unknown": 25,
}
INTEGERS = ("smallint", "integer", "bigint")
FLOATS = ("real", "double precision")
NUMBERS = INTEGERS + FLOATS + ("numeric",)
TEXTS = ("text", "character", "character varying")
TIMES = ("date", "timestamp without time zone", "timestamp with time zone")

# Spellings of type names in casts, as sqlglot prints them for postgres.
CAST_NAMES = {
    "int": "integer", "int4": "integer", "integer": "integer", "int2": "smallint", "smallint": "smallint",
    "int8": "bigint", "bigint": "bigint", "numeric": "numeric", "decimal": "numeric", "float": "double precision",
    "float8": "double precision", "double precision": "double precision", "double": "double precision",
    "real": "real", "float4": "real", "text": "text", "varchar": "character varying", "char": "character",
    "date": "date", "timestamp": "timestamp without time zone", "timestamptz": "timestamp with time zone",
    "boolean": "boolean", "bool": "boolean", "interval": "interval",
}


def base_type(format_type: str) -> str:
    """'numeric(10,2)' -> 'numeric', 'character varying(20)' -> 'character varying'."""
    name = re.sub(r"\(.*?\)", "", format_type).strip().lower()
    return name if name in OIDS else "unknown"


def oid(type_name: str) -> int:
    return OIDS.get(type_name, 25)


def is_number(type_name: str) -> bool:
    return type_name in NUMBERS


def arithmetic(left: str, right: str) -> str:
    """The type of left (+ - * /) right for numbers, as PostgreSQL resolves it:
    the operand type when both agree, double precision when a float meets
    any other type (float8 is the preferred number type), else the wider."""
    if left == right:
        return left
    if left in FLOATS or right in FLOATS:
        return "double precision"
    if "numeric" in (left, right):
        return "numeric"
    if "bigint" in (left, right):
        return "bigint"
    if left in INTEGERS and right in INTEGERS:
        return "integer"
    return "numeric"


def nullif_type(left: str, right: str) -> str:
    """The type of NULLIF(left, right): its first argument as the `=` operator
    PostgreSQL picks takes it (cross-type operators keep integers, floats and
    dates as they are; a float meeting another number is compared as float8)."""
    if left in NUMBERS and right in NUMBERS:
        if left in FLOATS:
            return left
        if right in FLOATS:
            return "double precision"
        return "numeric" if "numeric" in (left, right) else left
    if left in TEXTS and right in TEXTS:
        if "text" in (left, right):
            return "text"
        return "character" if "character" in (left, right) else "text"
    return left


def sum_type(argument: str) -> str:
    """sum(x): bigint for smallint/integer, numeric for bigint/numeric, the float type for floats."""
    if argument in ("smallint", "integer"):
        return "bigint"
    if argument in FLOATS:
        return argument if argument == "double precision" else "real"
    if argument == "interval":
        return "interval"
    return "numeric"


def average_type(argument: str) -> str:
    """avg, variance and stddev: double precision for floats, numeric otherwise."""
    return "double precision" if argument in FLOATS else "numeric"


# Type categories and implicit casts (pg_cast with castcontext 'i') among the
# types private queries use, as PostgreSQL's select_common_type reads them.
CATEGORIES = {
    **{name: "N" for name in NUMBERS}, **{name: "S" for name in TEXTS}, **{name: "D" for name in TIMES},
    "boolean": "B", "interval": "T", "uuid": "U",
}
PREFERRED = frozenset({"double precision", "text", "timestamp with time zone", "boolean", "interval"})
IMPLICIT = {
    "smallint": {"integer", "bigint", "numeric", "real", "double precision"},
    "integer": {"bigint", "numeric", "real", "double precision"},
    "bigint": {"numeric", "real", "double precision"},
    "numeric": {"real", "double precision"},
    "real": {"double precision"},
    "character": {"text", "character varying"},
    "character varying": {"text", "character"},
    "text": {"character varying", "character"},
    "date": {"timestamp without time zone", "timestamp with time zone"},
    "timestamp without time zone": {"timestamp with time zone"},
}

INTEGER_RANGES = {name: (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
                  for name, bits in (("smallint", 16), ("integer", 32), ("bigint", 64))}
# The largest finite float4 and float8.
FLOAT_MAX = {"real": Fraction("3.4028234663852886e38"), "double precision": Fraction("1.7976931348623157e308")}
# Digits after the point a float can have once converted to numeric (15 or
# 6 significant digits down to the smallest subnormal, 4.9e-324 or 1.4e-45).
FLOAT_SCALE = {"real": 52, "double precision": 340}
# numeric -> float fails ("out of range") for nonzero values too small to
# round to a subnormal; rounded to these many digits first, they are 0.
FLOAT_DIGITS = {"real": 45, "double precision": 323}


@dataclass(frozen=True)
class SqlType:
    """A type with its modifier: numeric (precision, scale), a character or
    bit type (length,), a timestamp (precision,); () when there is none."""

    name: str
    modifier: tuple[int, ...] = ()

    def __str__(self) -> str:
        if not self.modifier:
            return self.name
        inner = f"({','.join(str(m) for m in self.modifier)})"
        if self.name.startswith("timestamp"):
            return self.name.replace("timestamp", "timestamp" + inner, 1)
        return self.name + inner


_FORMAT_TYPE = re.compile(r"^(?P<head>[a-z ]+?)\s*(?:\((?P<mods>[-\d, ]+)\))?(?P<tail>(?: with(?:out)? time zone)?)$")


def parse_format_type(format_type: str) -> SqlType:
    """'numeric(10,2)' -> numeric (10, 2); 'timestamp(3) with time zone' -> that
    type (3,); an unknown type name -> 'unknown'."""
    match = _FORMAT_TYPE.match(format_type.strip().lower())
    if match is None:
        return SqlType("unknown")
    name = f"{match['head'].strip()}{match['tail']}"
    if name not in OIDS:
        return SqlType("unknown")
    modifier = tuple(int(m) for m in match["mods"].split(",")) if match["mods"] else ()
    if name == "numeric" and len(modifier) == 1:
        modifier = (modifier[0], 0)
    return SqlType(name, modifier)


_DATA_TYPES = {
    exp.DataType.Type.SMALLINT: "smallint", exp.DataType.Type.INT: "integer", exp.DataType.Type.BIGINT: "bigint",
    exp.DataType.Type.DECIMAL: "numeric", exp.DataType.Type.FLOAT: "real", exp.DataType.Type.DOUBLE: "double precision",
    exp.DataType.Type.TEXT: "text", exp.DataType.Type.VARCHAR: "character varying",
    exp.DataType.Type.CHAR: "character", exp.DataType.Type.BPCHAR: "character", exp.DataType.Type.DATE: "date",
    exp.DataType.Type.TIMESTAMP: "timestamp without time zone",
    exp.DataType.Type.TIMESTAMPTZ: "timestamp with time zone", exp.DataType.Type.BOOLEAN: "boolean",
    exp.DataType.Type.INTERVAL: "interval",
}


def cast_target(to: exp.DataType) -> SqlType | None:
    """The type a CAST names, with its modifier, as PostgreSQL reads it; None
    for a type private queries do not cast to (bit, arrays, user types, ...)."""
    name = _DATA_TYPES.get(to.this) if isinstance(to.this, exp.DataType.Type) else None
    if name is None or to.args.get("kind") or to.args.get("nested"):
        return None
    modifier: list[int] = []
    for parameter in to.expressions:
        text = parameter.sql("postgres")
        if not re.fullmatch(r"\d+", text):
            return None
        modifier.append(int(text))
    if name == "double precision" and modifier:
        # float(p): real up to 24 binary digits of precision.
        return SqlType("real" if modifier[0] <= 24 else "double precision")
    if name == "numeric" and len(modifier) == 1:
        modifier.append(0)
    if name == "character" and not modifier and to.this == exp.DataType.Type.CHAR:
        modifier = [1]  # char is char(1); bpchar has no length
    if name == "interval" and modifier:
        return None
    return SqlType(name, tuple(modifier))


def category(type_name: str) -> str:
    return CATEGORIES.get(type_name, type_name)


def common_type(kinds: list[str]) -> str:
    """The type PostgreSQL resolves for CASE, COALESCE, IN, ... over values
    of these types (select_common_type; 'unknown' literals take it);
    ValueError when their categories differ."""
    known = [k for k in kinds if k != "unknown"]
    if not known:
        return "text"
    chosen = known[0]
    for kind in known[1:]:
        if kind == chosen:
            continue
        if category(kind) != category(chosen):
            raise ValueError(f"{chosen} and {kind} cannot be matched")
        if (chosen not in PREFERRED and kind in IMPLICIT.get(chosen, ())
                and chosen not in IMPLICIT.get(kind, ())):
            chosen = kind
    return chosen
