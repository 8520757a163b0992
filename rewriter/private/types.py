"""PostgreSQL types of private answers, inferred without asking PostgreSQL.

A private answer is built by pgshroud, so its RowDescription must name the
types the original query would have produced (count bigint, avg numeric,
...) before anything runs: asyncpg and JDBC describe a statement before they
execute it. Types are tracked coarsely, by the names `format_type` prints
and the catalog snapshot holds.
"""

from __future__ import annotations

import re

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
    """The type of left (+ - *) right for numbers, as PostgreSQL resolves it."""
    if "double precision" in (left, right) or ("real" in (left, right) and "numeric" not in (left, right)):
        return "double precision" if "double precision" in (left, right) or "numeric" in (left, right) else "real"
    if "numeric" in (left, right):
        return "numeric"
    if "bigint" in (left, right):
        return "bigint"
    if left in INTEGERS and right in INTEGERS:
        return "integer"
    return "numeric"


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
