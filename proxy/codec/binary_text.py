"""The text form of a binary parameter value, as PostgreSQL's output
function would print it, for the types drivers send in binary.

A private statement's parameters reach PostgreSQL untyped (proxy/session/driver.py
says why), so a value a client sent in binary as one type may be read by
the query as another: pgshroud then sends it as text, which PostgreSQL
converts once, at Bind, to the type the query gives it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np

_EPOCH = datetime(2000, 1, 1)
_INT32_LIMITS = (-(2**31), 2**31 - 1)
_INT64_LIMITS = (-(2**63), 2**63 - 1)
_TEXT_TYPES = frozenset({25, 1043, 1042, 19, 705})  # text, varchar, bpchar, name, unknown: UTF-8 bytes


class NoTextForm(ValueError):
    """pgshroud cannot read a binary value of this type."""


def _numeric(data: bytes) -> str:
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHH", data)
    specials = {0xC000: "NaN", 0xD000: "Infinity", 0xF000: "-Infinity"}
    if sign in specials:
        return specials[sign]
    digits = struct.unpack_from(f"!{ndigits}h", data, 8)
    value = Decimal(0)
    for index, digit in enumerate(digits):
        value += Decimal(digit).scaleb(4 * (weight - index))
    text = f"{value:.{dscale}f}"
    return "-" + text if sign == 0x4000 else text


def _date(data: bytes) -> str:
    (days,) = struct.unpack("!i", data)
    if days in _INT32_LIMITS:
        return "-infinity" if days < 0 else "infinity"
    try:
        return (_EPOCH.date() + timedelta(days=days)).isoformat()
    except OverflowError:
        raise NoTextForm("a date outside years 1 to 9999") from None


def _timestamp(data: bytes, zone: str) -> str:
    (micros,) = struct.unpack("!q", data)
    if micros in _INT64_LIMITS:
        return "-infinity" if micros < 0 else "infinity"
    try:
        return (_EPOCH + timedelta(microseconds=micros)).isoformat(sep=" ") + zone
    except OverflowError:
        raise NoTextForm("a timestamp outside years 1 to 9999") from None


_READERS: dict[int, Callable[[bytes], str]] = {
    16: lambda d: "true" if d == b"\x01" else "false",
    21: lambda d: str(struct.unpack("!h", d)[0]),
    23: lambda d: str(struct.unpack("!i", d)[0]),
    20: lambda d: str(struct.unpack("!q", d)[0]),
    700: lambda d: str(np.frombuffer(d, dtype=">f4")[0]),
    701: lambda d: repr(struct.unpack("!d", d)[0]),
    1700: _numeric,
    1082: _date,
    1114: lambda d: _timestamp(d, ""),
    1184: lambda d: _timestamp(d, "+00"),
}


def text_form(type_oid: int, data: bytes) -> bytes:
    """The value's text, UTF-8; raises NoTextForm for a type pgshroud cannot read."""
    if type_oid in _TEXT_TYPES:
        return data
    reader = _READERS.get(type_oid)
    if reader is None:
        raise NoTextForm(f"binary values of type OID {type_oid}")
    try:
        text = reader(data)
    except struct.error:
        raise NoTextForm(f"a binary value of type OID {type_oid} of the wrong length") from None
    return text.encode()
