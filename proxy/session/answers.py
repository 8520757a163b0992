"""Wire encoding of answers pgshroud builds itself (Local and Release plans).

Values are held as text; a client that asks for binary results gets the
binary send format of the column's type, for the types answers use.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from pgshroud import sqlstate
from pgshroud.proxy.codec.binary_values import NotAValue, interval_binary, time_binary, timetz_binary, uuid_binary
from pgshroud.proxy.codec.datetimes import NotIsoDate, date_binary, timestamp_binary
from pgshroud.proxy.codec.messages import (
    CommandComplete,
    DataRow,
    FieldDescription,
    NoData,
    NoticeResponse,
    RowDescription,
)
from pgshroud.rewriter.plans import Column, LocalAnswer

TEXT, BINARY = 0, 1
_TEXT_LIKE = {25, 1043, 19, 18, 1042}  # text, varchar, name, "char", bpchar: binary == text bytes
_INTS = {21: struct.Struct("!h"), 23: struct.Struct("!i"), 20: struct.Struct("!q"), 26: struct.Struct("!I")}
_FLOATS = {700: struct.Struct("!f"), 701: struct.Struct("!d")}
_DATES = {1082: date_binary, 1114: timestamp_binary, 1184: timestamp_binary}
# interval, time, timetz, uuid: read from the text PostgreSQL prints (any IntervalStyle).
_FROM_TEXT = {1186: interval_binary, 1083: time_binary, 1266: timetz_binary, 2950: uuid_binary}
BINARY_TYPES = frozenset(_TEXT_LIKE | set(_INTS) | set(_FLOATS) | set(_DATES) | set(_FROM_TEXT) | {16, 1700})


class UnsupportedFormat(ValueError):
    """A client asked for a binary format pgshroud cannot produce for a type."""


def result_formats(requested: Sequence[int], columns: int) -> tuple[int, ...]:
    """Expand Bind's result-format codes (none, one for all, or one each)."""
    if not requested:
        return (TEXT,) * columns
    if len(requested) == 1:
        return (requested[0],) * columns
    if len(requested) != columns:
        raise UnsupportedFormat(f"bind message has {len(requested)} result formats but query has {columns} columns")
    return tuple(requested)


# Binary dates and timestamps are encoded from PostgreSQL's text, which they
# can read only in DateStyle ISO (proxy/codec/datetimes.py).
_DATESTYLE_TYPES = frozenset({1082, 1114, 1184})


def check_formats(columns: Sequence[Column], formats: Sequence[int], date_style: str = "ISO") -> None:
    """Refuse, before anything runs, result formats pgshroud cannot encode."""
    for column, fmt in zip(columns, formats):
        if fmt == BINARY and column.type_oid not in BINARY_TYPES:
            raise UnsupportedFormat(f"binary format is not available for column {column.name!r} of type OID {column.type_oid}")
        if fmt == BINARY and column.type_oid in _DATESTYLE_TYPES and not date_style.startswith("ISO"):
            raise UnsupportedFormat(f"binary format of column {column.name!r} needs DateStyle ISO, and this "
                                    f"session's is {date_style}")


_INTEGER_RANGES = {21: ("smallint", 2**15), 23: ("integer", 2**31), 20: ("bigint", 2**63)}


def out_of_range(answer: LocalAnswer) -> str | None:
    """PostgreSQL's error for an integer column value its type cannot hold
    (an outer query's arithmetic on noisy values), or None."""
    for index, column in enumerate(answer.columns):
        kind = _INTEGER_RANGES.get(column.type_oid)
        if kind is None:
            continue
        name, limit = kind
        for row in answer.rows:
            value = row[index]
            try:
                if value is not None and not -limit <= int(value) < limit:
                    return f"{name} out of range"
            except ValueError:
                continue
    return None


def row_description(columns: Sequence[Column], formats: Sequence[int]) -> bytes:
    if not columns:
        return NoData().encode()
    fields = tuple(
        FieldDescription(c.name, 0, 0, c.type_oid, -1, -1, fmt) for c, fmt in zip(columns, formats)
    )
    return RowDescription(fields).encode()


def data_row_frames(answer: LocalAnswer, formats: Sequence[int]) -> list[bytes]:
    """One DataRow frame per row of the answer."""
    types = [c.type_oid for c in answer.columns]
    return [DataRow(tuple(encode_value(v, t, f) for v, t, f in zip(row, types, formats))).encode()
            for row in answer.rows]


def data_rows(answer: LocalAnswer, formats: Sequence[int]) -> bytes:
    return b"".join(data_row_frames(answer, formats))


def notices(answer: LocalAnswer) -> bytes:
    """The answer's notices as NoticeResponses (severity NOTICE, SQLSTATE 00000)."""
    if not answer.notices:
        return b""
    return b"".join(NoticeResponse.build("NOTICE", sqlstate.SUCCESSFUL_COMPLETION, text).encode() for text in answer.notices)


def simple_query_answer(answer: LocalAnswer) -> bytes:
    """Notices, RowDescription (if any columns), DataRows and CommandComplete, all text."""
    formats = (TEXT,) * len(answer.columns)
    head = row_description(answer.columns, formats) if answer.columns else b""
    return notices(answer) + head + data_rows(answer, formats) + CommandComplete(answer.command_tag).encode()


def encode_value(value: str | None, type_oid: int, fmt: int) -> bytes | None:
    if value is None:
        return None
    if fmt == TEXT or type_oid in _TEXT_LIKE:
        return value.encode()
    if type_oid in _INTS:
        return _INTS[type_oid].pack(int(value))
    if type_oid in _FLOATS:
        return _FLOATS[type_oid].pack(float(value))
    if type_oid == 16:
        return b"\x01" if value.lower() in ("t", "true", "on", "yes", "1") else b"\x00"
    if type_oid == 1700:
        return numeric_binary(value)
    if type_oid in _DATES:
        try:
            return _DATES[type_oid](value)
        except NotIsoDate as exc:
            raise UnsupportedFormat(str(exc)) from None
    if type_oid in _FROM_TEXT:
        try:
            return _FROM_TEXT[type_oid](value)
        except NotAValue as exc:
            raise UnsupportedFormat(str(exc)) from None
    raise UnsupportedFormat(f"binary format is not available for type OID {type_oid}")


_NUMERIC_HEAD = struct.Struct("!hhHH")
_SPECIAL = {"NaN": 0xC000, "Infinity": 0xD000, "-Infinity": 0xF000}


def numeric_binary(text: str) -> bytes:
    """PostgreSQL's numeric send format: base-10000 digit groups, weight, sign, scale."""
    if text in _SPECIAL:
        return _NUMERIC_HEAD.pack(0, 0, _SPECIAL[text], 0)
    try:
        sign, digits, exponent = Decimal(text).as_tuple()
    except InvalidOperation:
        raise UnsupportedFormat(f"{text!r} is not a numeric value") from None
    assert isinstance(exponent, int)
    scale = max(0, -exponent)
    string = "".join(map(str, digits)) + "0" * max(0, exponent)
    point = len(string) - scale
    integer, fraction = (string[:point], string[point:]) if point > 0 else ("", "0" * -point + string)
    integer = integer.lstrip("0")
    integer = integer.zfill(-(-len(integer) // 4) * 4)
    fraction = fraction + "0" * (-len(fraction) % 4)
    groups = [int(integer[i : i + 4]) for i in range(0, len(integer), 4)]
    weight = len(groups) - 1
    groups += [int(fraction[i : i + 4]) for i in range(0, len(fraction), 4)]
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    head = _NUMERIC_HEAD.pack(len(groups), weight, 0x4000 if sign and groups else 0, scale)
    return head + struct.pack(f"!{len(groups)}h", *groups)
