"""Binary send formats of date, timestamp and timestamptz, from the text
PostgreSQL prints with DateStyle ISO (its default, which the bounded query's
keys arrive in): days or microseconds since 2000-01-01, over the proleptic
Gregorian calendar, BC years included (which Python's datetime cannot hold).
"""

from __future__ import annotations

import re
import struct

_DATE = struct.Struct("!i")
_TIMESTAMP = struct.Struct("!q")
_ISO = re.compile(
    r"(?P<year>\d{4,})-(?P<month>\d\d)-(?P<day>\d\d)"
    r"(?: (?P<hour>\d\d):(?P<minute>\d\d):(?P<second>\d\d)(?:\.(?P<fraction>\d{1,6}))?)?"
    r"(?P<zone>[+-]\d\d(?::?\d\d(?::?\d\d)?)?)?"
    r"(?P<bc> BC)?"
)
_INFINITIES = {"infinity": (2**31 - 1, 2**63 - 1), "-infinity": (-(2**31), -(2**63))}
_EPOCH_DAYS = 730425  # the algorithm's count (from 0000-03-01) at 2000-01-01


class NotIsoDate(ValueError):
    """The text is not an ISO date or timestamp (another DateStyle is set)."""


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 2000-01-01 of a proleptic Gregorian date (year 0 = 1 BC);
    Howard Hinnant's algorithm, exact for any year."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - _EPOCH_DAYS


def _parse(text: str) -> tuple[int, int, int]:
    """Days since 2000-01-01, microseconds into the day and the zone's offset in microseconds."""
    match = _ISO.fullmatch(text)
    if match is None:
        raise NotIsoDate(f"{text!r} is not an ISO date or timestamp: binary dates need DateStyle ISO")
    year = int(match["year"])
    if match["bc"]:
        year = 1 - year
    days = _days_from_civil(year, int(match["month"]), int(match["day"]))
    micros = 0
    if match["hour"]:
        micros = ((int(match["hour"]) * 60 + int(match["minute"])) * 60 + int(match["second"])) * 1_000_000
        micros += int((match["fraction"] or "").ljust(6, "0"))
    offset = 0
    if match["zone"]:
        sign = -1 if match["zone"][0] == "-" else 1
        parts = match["zone"][1:].replace(":", "")
        hours, minutes, seconds = int(parts[:2]), int(parts[2:4] or 0), int(parts[4:6] or 0)
        offset = sign * ((hours * 60 + minutes) * 60 + seconds) * 1_000_000
    return days, micros, offset


def date_binary(text: str) -> bytes:
    if text in _INFINITIES:
        return _DATE.pack(_INFINITIES[text][0])
    days, _, _ = _parse(text)
    return _DATE.pack(days)


def timestamp_binary(text: str) -> bytes:
    """timestamp and timestamptz: microseconds since 2000-01-01 00:00 (UTC for timestamptz)."""
    if text in _INFINITIES:
        return _TIMESTAMP.pack(_INFINITIES[text][1])
    days, micros, offset = _parse(text)
    return _TIMESTAMP.pack(days * 86_400_000_000 + micros - offset)
