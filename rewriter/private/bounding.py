"""The contribution-bounding rewrite (Wilson et al., "Differentially Private
SQL with Bounded User Contribution", PoPETs 2020).

The bounded query aggregates per person per group first, clamps each
person's per-group totals (not single rows) so that a person moves a
group's count by at most `max_rows` and its sum by at most `max_rows`
times the largest bound, then keeps at most `max_groups` groups per person,
chosen at random, and only then aggregates across people. Sensitivities
follow from these clamps and nothing else.

Values are carried as numeric, so no sum can overflow; NaN reads as NULL
(no value), and infinities clamp to the bounds like any large value.
Quantiles are answered from a histogram of at most `max_rows` values per
person per group, returned as extra rows of the same result.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from rewriter.private import query as q

BUCKETS = 64  # histogram resolution of private quantiles: finer buckets add more noise to each quantile

UNITS = "units"
ROWS = "rows"
COUNT = "count"
SUM = "sum"  # per-person totals clamped
CENTRED_SUM = "centred_sum"  # sum of (x - midpoint): half the sensitivity, for averages
CLAMPED_SUM = "clamped_sum"  # rows clamped, then per-person totals (for variances)
SUM_OF_SQUARES = "sum_of_squares"
HISTOGRAM = "histogram"
DISTINCT = "distinct"  # at most max_rows distinct values per person per group
LISTS = (HISTOGRAM, DISTINCT)  # carried per person as arrays, totalled in their own result rows


@dataclass(frozen=True)
class Measurement:
    """One noisy quantity per group; several aggregates may share it."""

    kind: str
    argument: str | None = None
    bounds: tuple[Fraction, Fraction] | None = None

    def sensitivity(self, max_rows: int) -> Fraction:
        """How much one person can move this quantity in one group."""
        if self.kind == UNITS:
            return Fraction(1)
        if self.kind in (ROWS, COUNT, HISTOGRAM, DISTINCT):
            return Fraction(max_rows)
        assert self.bounds is not None
        largest = max(abs(self.bounds[0]), abs(self.bounds[1]))
        if self.kind == CENTRED_SUM:
            return max_rows * (self.bounds[1] - self.bounds[0]) / 2
        if self.kind == SUM_OF_SQUARES:
            return max_rows * largest * largest
        return max_rows * largest

    @property
    def integer(self) -> bool:
        return self.kind in (UNITS, ROWS, COUNT, HISTOGRAM, DISTINCT)


def measurements_for(aggregate: q.Aggregate) -> tuple[Measurement, ...]:
    a, b = aggregate.argument, aggregate.bounds
    if aggregate.kind == q.COUNT_ROWS:
        return (Measurement(ROWS),)
    if aggregate.kind == q.COUNT_UNITS:
        return (Measurement(UNITS),)
    if aggregate.kind == q.COUNT:
        return (Measurement(COUNT, a),)
    if aggregate.kind == q.COUNT_DISTINCT:
        return (Measurement(DISTINCT, a),)
    if aggregate.kind == q.SUM:
        return (Measurement(SUM, a, b),)
    count = Measurement(ROWS) if aggregate.never_null else Measurement(COUNT, a)
    if aggregate.kind == q.AVG:
        return (Measurement(CENTRED_SUM, a, b), count)
    if aggregate.kind in q.VARIANCES:
        return (Measurement(CLAMPED_SUM, a, b), Measurement(SUM_OF_SQUARES, a, b), count)
    if aggregate.kind in q.QUANTILES:
        return (Measurement(HISTOGRAM, a, b),)
    raise ValueError(f"no measurement for {aggregate.kind}")


def measurements(query: q.PrivateQuery) -> tuple[Measurement, ...]:
    """The distinct noisy quantities of a query; the unit count comes first
    (it decides which groups are released)."""
    found = [Measurement(UNITS)]
    for aggregate in query.aggregates:
        for measurement in measurements_for(aggregate):
            if measurement not in found:
                found.append(measurement)
    return tuple(found)


def _number(x: Fraction) -> str:
    if x.denominator == 1:
        return f"{x.numerator}"
    return f"({x.numerator}::numeric / {x.denominator})"


def _value(argument: str) -> str:
    # NaN equals NaN in numeric, so NULLIF turns it into no value.
    return f"NULLIF(({argument})::numeric, 'NaN'::numeric)"


def _clamp(sql: str, low: Fraction, high: Fraction) -> str:
    """Clamp a value that is never NULL (GREATEST and LEAST skip NULLs)."""
    return f"LEAST(GREATEST({sql}, {_number(low)}), {_number(high)})"


def _clamp_row(sql: str, low: Fraction, high: Fraction) -> str:
    """Clamp a row's value, keeping NULL as NULL (no value, not the lower bound)."""
    return f"CASE WHEN {sql} IS NULL THEN NULL ELSE {_clamp(sql, low, high)} END"


def per_person(measurement: Measurement, index: int, max_rows: int) -> str:
    """The per-person per-group expression of a measurement, over `pgshroud_rows`."""
    column = f'"a{index}"'
    r = max_rows
    if measurement.kind == ROWS:
        return f"LEAST(count(*), {r})"
    if measurement.kind == COUNT:
        return f"LEAST(count({column}), {r})"
    if measurement.kind == DISTINCT:
        # Each person brings at most max_rows distinct values to a group.
        return f"(array_agg(DISTINCT {column}) FILTER (WHERE {column} IS NOT NULL))[1:{r}]"
    assert measurement.bounds is not None
    low, high = measurement.bounds
    total_low, total_high = r * min(low, Fraction(0)), r * max(high, Fraction(0))
    if measurement.kind == SUM:
        # A single row never counts for more than a whole person may.
        row = _clamp_row(column, total_low, total_high)
        return _clamp(f"COALESCE(sum({row}), 0)", total_low, total_high)
    row = _clamp_row(column, low, high)
    if measurement.kind == CENTRED_SUM:
        # Each row moves the total by at most (high - low)/2 around the midpoint.
        middle, half = (low + high) / 2, (high - low) / 2
        return _clamp(f"COALESCE(sum({row} - {_number(middle)}), 0)", -r * half, r * half)
    if measurement.kind == CLAMPED_SUM:
        return _clamp(f"COALESCE(sum({row}), 0)", total_low, total_high)
    if measurement.kind == SUM_OF_SQUARES:
        largest = max(abs(low), abs(high))
        return _clamp(f"COALESCE(sum({row} * {row}), 0)", Fraction(0), r * largest * largest)
    if measurement.kind == HISTOGRAM:
        bucket = f"LEAST(width_bucket({row}, {_number(low)}, {_number(high)}, {BUCKETS}), {BUCKETS})"
        return f"(array_agg({bucket} ORDER BY random()) FILTER (WHERE {column} IS NOT NULL))[1:{r}]"
    raise ValueError(measurement.kind)


def bounded_sql(query: q.PrivateQuery) -> str:
    found = measurements(query)
    for measurement in found:
        if measurement.kind == HISTOGRAM and measurement.bounds and measurement.bounds[0] >= measurement.bounds[1]:
            raise ValueError("a quantile needs bounds with low < high")
    keys = [f'"k{i}"' for i in range(len(query.keys))]
    row_columns = [f'{query.unit_sql} AS "unit"']
    row_columns += [f"{key.sql} AS {name}" for key, name in zip(query.keys, keys)]
    # Each argument is computed once per row: as numeric for sums and
    # histograms, as itself for distinct counts.
    row_values = list(dict.fromkeys((m.argument, m.kind == DISTINCT) for m in found if m.argument is not None))
    for position, (argument, raw) in enumerate(row_values):
        row_columns.append(f'{f"({argument})" if raw else _value(argument)} AS "a{position}"')
    rows = f"SELECT {', '.join(row_columns)} {query.source_sql}"
    person_columns = ['"unit"'] + keys
    for i, measurement in enumerate(found[1:], start=1):
        index = 0
        if measurement.argument is not None:
            index = row_values.index((measurement.argument, measurement.kind == DISTINCT))
        person_columns.append(f'{per_person(measurement, index, query.max_rows)} AS "m{i}"')
    group_by = ", ".join(['"unit"'] + keys)
    persons = f'SELECT {", ".join(person_columns)} FROM "pgshroud_rows" GROUP BY {group_by}'
    ctes = [f'"pgshroud_rows" AS ({rows})', f'"pgshroud_persons" AS ({persons})']
    bounded = '"pgshroud_persons"'
    if query.grouped:
        ranked = 'SELECT *, row_number() OVER (PARTITION BY "unit" ORDER BY random()) AS "pick" FROM "pgshroud_persons"'
        ctes.append(f'"pgshroud_bounded" AS (SELECT * FROM ({ranked}) AS "ranked" WHERE "pick" <= {query.max_groups})')
        bounded = '"pgshroud_bounded"'
    key_list = ", ".join(keys)
    group = f" GROUP BY {key_list}" if keys else ""
    totals = []
    for i, measurement in enumerate(found[1:], start=1):
        totals.append("NULL::numeric" if measurement.kind in LISTS else f'sum("m{i}")::numeric')
    head = ", ".join(keys + [""]) if keys else ""
    branches = [
        f'SELECT 0 AS "kind", NULL::integer AS "bucket", {head}count(*)::numeric AS "units"'
        + "".join(f", {total} AS \"m{i}\"" for i, total in enumerate(totals, start=1))
        + f" FROM {bounded}{group}"
    ]
    nulls = "".join(", NULL::numeric" for _ in totals)
    for i, measurement in enumerate(found[1:], start=1):
        if measurement.kind == HISTOGRAM:
            branches.append(
                f'SELECT {i}, "b", {head}count(*)::numeric{nulls} FROM {bounded}, unnest("m{i}") AS "b" '
                f'GROUP BY {key_list + ", " if keys else ""}"b"'
            )
        elif measurement.kind == DISTINCT:
            branches.append(
                f'SELECT {i}, NULL::integer, {head}count(DISTINCT "v")::numeric{nulls} '
                f'FROM {bounded}, unnest("m{i}") AS "v"{group}'
            )
    for i, key in enumerate(query.keys):
        if key.domain_sql is not None:
            # The public values of this key, from its public table.
            columns = ", ".join('"d"."v"' if j == i else "NULL" for j in range(len(keys)))
            branches.append(f'SELECT {-1 - i}, NULL::integer, {columns}, NULL::numeric{nulls} '
                            f'FROM ({key.domain_sql}) AS "d"("v")')
    return f"WITH {', '.join(ctes)} " + " UNION ALL ".join(branches)
