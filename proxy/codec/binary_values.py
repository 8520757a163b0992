"""Binary send formats of interval, time, timetz and uuid, from the text
PostgreSQL prints for them: what an answer pgshroud builds itself holds is
PostgreSQL's text, and a client that asks for binary results (asyncpg,
pgjdbc with binary transfer) gets what interval_send, time_send,
timetz_send and uuid_send would have given it.

An interval's text depends on the session's IntervalStyle; all four
(postgres, postgres_verbose, sql_standard, iso_8601) are read.
"""

from __future__ import annotations

import re
import struct
import uuid as _uuid
from decimal import Decimal, InvalidOperation

_INTERVAL = struct.Struct("!qii")  # microseconds, days, months
_TIME = struct.Struct("!q")
_TIMETZ = struct.Struct("!qi")  # microseconds, zone in seconds west of UTC
_MICROS = {"hour": 3_600_000_000, "min": 60_000_000, "sec": 1_000_000}
_UNITS = {
    "year": ("months", 12), "years": ("months", 12), "mon": ("months", 1), "mons": ("months", 1),
    "day": ("days", 1), "days": ("days", 1), "hour": ("micros", _MICROS["hour"]),
    "hours": ("micros", _MICROS["hour"]), "min": ("micros", _MICROS["min"]), "mins": ("micros", _MICROS["min"]),
    "sec": ("micros", _MICROS["sec"]), "secs": ("micros", _MICROS["sec"]),
}
_CLOCK = re.compile(r"([+-]?)(\d+):(\d\d):(\d\d)(?:\.(\d{1,6}))?")
_ISO = re.compile(r"P(?:([+-]?\d+)Y)?(?:([+-]?\d+)M)?(?:([+-]?\d+)D)?"
                  r"(?:T(?:([+-]?\d+)H)?(?:([+-]?\d+)M)?(?:([+-]?\d+(?:\.\d+)?)S)?)?")
_YEAR_MONTH = re.compile(r"([+-]?)(\d+)-(\d+)")
_TIMETZ_TEXT = re.compile(r"(\d\d:\d\d:\d\d(?:\.\d{1,6})?)([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?")
_INFINITE = {"infinity": (2**63 - 1, 2**31 - 1, 2**31 - 1), "-infinity": (-(2**63), -(2**31), -(2**31))}


class NotAValue(ValueError):
    """The text is not one PostgreSQL prints for the type."""


def interval_binary(text: str) -> bytes:
    micros, days, months = _interval_fields(text.strip())
    try:
        return _INTERVAL.pack(micros, days, months)
    except struct.error:
        raise NotAValue(f"{text!r} is out of range for an interval") from None


def _interval_fields(text: str) -> tuple[int, int, int]:
    if text in _INFINITE:  # PostgreSQL 17's infinite intervals
        return _INFINITE[text]
    if text.startswith("P"):
        return _iso_interval(text)
    if text.startswith("@"):
        return _verbose_interval(text)
    words = text.split()
    if any(word in _UNITS for word in words):
        return _postgres_interval(words)
    return _sql_standard_interval(words)


def _clock(text: str) -> int:
    """[+-]H:MM:SS[.ffffff] as microseconds."""
    match = _CLOCK.fullmatch(text)
    if match is None:
        raise NotAValue(f"{text!r} is not a time of day or an interval's time")
    sign, hours, minutes, seconds, fraction = match.groups()
    micros = ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1_000_000 + int((fraction or "").ljust(6, "0"))
    return -micros if sign == "-" else micros


def _postgres_interval(words: list[str]) -> tuple[int, int, int]:
    """IntervalStyle postgres: `1 year 2 mons -3 days +04:05:06.789`."""
    fields = {"micros": 0, "days": 0, "months": 0}
    i = 0
    while i < len(words):
        if ":" in words[i]:
            fields["micros"] += _clock(words[i])
            i += 1
            continue
        if i + 1 >= len(words) or words[i + 1] not in _UNITS:
            raise NotAValue(f"{' '.join(words)!r} is not an interval PostgreSQL prints")
        field, scale = _UNITS[words[i + 1]]
        fields[field] += _int(words[i]) * scale
        i += 2
    return fields["micros"], fields["days"], fields["months"]


def _verbose_interval(text: str) -> tuple[int, int, int]:
    """IntervalStyle postgres_verbose: `@ 1 year 2 mons 3 days 4 hours 5 mins 6.5 secs ago`."""
    words = text[1:].split()
    ago = bool(words) and words[-1] == "ago"
    if ago:
        words = words[:-1]
    fields = {"micros": 0, "days": 0, "months": 0}
    if words == ["0"]:
        return 0, 0, 0  # `@ 0`
    if len(words) % 2:
        raise NotAValue(f"{text!r} is not an interval PostgreSQL prints")
    for number, unit in zip(words[::2], words[1::2]):
        if unit not in _UNITS:
            raise NotAValue(f"{text!r} is not an interval PostgreSQL prints")
        field, scale = _UNITS[unit]
        fields[field] += _scaled(number, scale) if field == "micros" else _int(number) * scale
    sign = -1 if ago else 1
    return sign * fields["micros"], sign * fields["days"], sign * fields["months"]


def _sql_standard_interval(words: list[str]) -> tuple[int, int, int]:
    """IntervalStyle sql_standard: `1-2`, `3 4:05:06`, `+1-2 -3 +4:05:06.789`, `-3 0:00:00.5`.
    Fields of mixed signs each carry theirs; otherwise one leading minus
    negates them all."""
    negate = bool(words) and words[0].startswith("-") and not any(w[:1] in "+-" for w in words[1:])
    if negate:
        words = [words[0][1:], *words[1:]]
    micros = days = months = 0
    for word in words:
        year_month = _YEAR_MONTH.fullmatch(word)
        if ":" in word:
            micros += _clock(word)
        elif year_month is not None:
            sign, years, extra = year_month.groups()
            total = int(years) * 12 + int(extra)
            months += -total if sign == "-" else total
        else:
            days += _int(word)
    return (-micros, -days, -months) if negate else (micros, days, months)


def _iso_interval(text: str) -> tuple[int, int, int]:
    """IntervalStyle iso_8601: `P1Y2M3DT4H5M6.789S`, `P-1Y-2M3DT-4H-5M-6.789S`, `PT0S`."""
    match = _ISO.fullmatch(text)
    if match is None or text in ("P", "PT"):
        raise NotAValue(f"{text!r} is not an interval PostgreSQL prints")
    years, months, days, hours, minutes, seconds = match.groups()
    micros = (_int(hours or "0") * _MICROS["hour"] + _int(minutes or "0") * _MICROS["min"]
              + _scaled(seconds or "0", _MICROS["sec"]))
    return micros, _int(days or "0"), _int(years or "0") * 12 + _int(months or "0")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise NotAValue(f"{text!r} is not a whole number") from None


def _scaled(text: str, scale: int) -> int:
    """A decimal number of units as whole microseconds, exactly."""
    try:
        value = Decimal(text) * scale
    except InvalidOperation:
        raise NotAValue(f"{text!r} is not a number") from None
    if value != value.to_integral_value():
        raise NotAValue(f"{text!r} has more than microsecond precision")
    return int(value)


def time_binary(text: str) -> bytes:
    """time without time zone: microseconds since midnight."""
    micros = _clock(text.strip())
    if micros < 0 or micros > 86_400_000_000:
        raise NotAValue(f"{text!r} is not a time of day")
    return _TIME.pack(micros)


def timetz_binary(text: str) -> bytes:
    """time with time zone: microseconds since midnight, then the zone in seconds west of UTC."""
    match = _TIMETZ_TEXT.fullmatch(text.strip())
    if match is None:
        raise NotAValue(f"{text!r} is not a time with time zone")
    clock, sign, hours, minutes, seconds = match.groups()
    east = (int(hours) * 60 + int(minutes or 0)) * 60 + int(seconds or 0)
    return _TIMETZ.pack(_clock(clock), -east if sign == "+" else east)


def uuid_binary(text: str) -> bytes:
    try:
        return _uuid.UUID(text.strip()).bytes
    except ValueError:
        raise NotAValue(f"{text!r} is not a uuid") from None
