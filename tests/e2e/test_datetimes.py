"""pgshroud's binary dates and timestamps against PostgreSQL's own send functions."""

from __future__ import annotations

import random

import pytest

from pgshroud.proxy.codec.datetimes import NotIsoDate, date_binary, timestamp_binary

FIXED = {
    "date": ["2000-01-01", "1999-12-31", "2016-02-29", "1900-03-01", "0001-01-01", "4700-01-01 BC", "294000-01-01",
             "infinity", "-infinity"],
    "timestamp": ["2000-01-01 00:00:00", "2016-02-29 12:34:56.789", "0044-03-15 12:00:00 BC",
                  "1970-01-01 00:00:00.000001", "infinity"],
    "timestamptz": ["2016-01-01 00:00:00+00", "2016-01-01 00:00:00+05:30", "2016-01-01 00:00:00-03",
                    "1900-01-01 00:00:00+00:09:21", "-infinity"],
}


def random_values(count: int, seed: int = 5) -> dict[str, list[str]]:
    rng = random.Random(seed)
    values: dict[str, list[str]] = {kind: [] for kind in FIXED}
    for _ in range(count):
        bc = rng.random() < 0.1
        year = rng.randint(1, 4700 if bc else 9999)  # PostgreSQL's dates begin in 4713 BC
        date = f"{year:04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}{' BC' if bc else ''}"
        values["date"].append(date)
        clock = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999999):06d}"
        values["timestamp"].append(f"{date[:10]} {clock}")
        values["timestamptz"].append(f"{date[:10]} {clock}{rng.choice(['+00', '-07', '+05:30', '+13'])}")
    return values


def test_binary_dates_match_postgresql(pg):
    encoders = {"date": date_binary, "timestamp": timestamp_binary, "timestamptz": timestamp_binary}
    checked = 0
    for source in (FIXED, random_values(300)):
        for kind, texts in source.items():
            # PostgreSQL's own text of each value (timestamptz shown in the session's zone) and its send bytes.
            rows = pg.execute(
                f"SELECT v::{kind}::text, {kind}_send(v::{kind}) FROM unnest(ARRAY[{', '.join(repr(t) for t in texts)}]) v"
            )
            for text, sent in rows:
                assert encoders[kind](text) == bytes(sent), (kind, text)
                checked += 1
    assert checked > 900


@pytest.mark.parametrize("text", ["01/02/2016", "Fri Jan 01 00:00:00 2016 UTC", "2016-1-1"])
def test_other_date_styles_are_not_guessed(text):
    with pytest.raises(NotIsoDate):
        timestamp_binary(text)
