"""The contribution-bounding rewrite, after Wilson et al., "Differentially
Private SQL with Bounded User Contribution" (PoPETs 2020).

The bounded query aggregates per person per group first. Each person may
contribute `allowance` = max_groups x max_rows rows over all groups (L1):
a person with more rows keeps the same share of each of their groups
(systematic sampling: integer counts that add up to at most the allowance,
each group's expected count exactly its share), so no group loses more of
a heavy user's rows than another. When the query releases counts of people
per group (partition selection, COUNT(DISTINCT unit)), each person is
counted in at most `max_groups` of their groups, chosen at random (L0);
their rows are still allocated over all their groups. A group's
per-person totals are scaled to the rows kept and clamped: a sum by rows
kept times the largest bound. So one person moves a query's counts by at
most `allowance` in L1, its sums by `allowance` times the largest bound, and
its people counts by `max_groups`: the sensitivities the noise is
calibrated to.

Rows whose privacy unit is NULL are dropped: they are no one's. Values
are carried as numeric, so no sum can overflow; NaN reads as NULL (no
value). Quantiles are answered from a histogram of the kept values,
returned as extra rows of the same result, as are distinct counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from pgshroud.rewriter.private import query as q

BUCKETS = 64  # histogram resolution of private quantiles: finer buckets add more noise to each quantile
# The most groups a release of public keys builds (each is noised and sent,
# so the product of the keys' domains is checked before any is built).
MAX_PUBLIC_GROUPS = 10_000

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

    def sensitivity(self, allowance: int) -> Fraction:
        """How much one person with `allowance` rows can move this quantity,
        in L1 over all groups; for UNITS, in each group (one person counts
        once in each of at most max_groups groups)."""
        if self.kind == UNITS:
            return Fraction(1)
        if self.kind in (ROWS, COUNT, HISTOGRAM, DISTINCT):
            return Fraction(allowance)
        assert self.bounds is not None
        largest = max(abs(self.bounds[0]), abs(self.bounds[1]))
        if self.kind == CENTRED_SUM:
            return allowance * (self.bounds[1] - self.bounds[0]) / 2
        if self.kind == SUM_OF_SQUARES:
            return allowance * largest * largest
        return allowance * largest

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


def raw_total(measurement: Measurement, column: str, allowance: int) -> str | None:
    """A person's total of a measurement in one group, over all their rows
    there (aggregated from `pgshroud_rows`); None when the counts suffice."""
    if measurement.kind in (ROWS, COUNT):
        return None
    if measurement.kind == DISTINCT:
        return f"(array_agg(DISTINCT {column}) FILTER (WHERE {column} IS NOT NULL))[1:{allowance}]"
    assert measurement.bounds is not None
    low, high = measurement.bounds
    if measurement.kind == SUM:
        # No row counts for more than a whole person may; the total is clamped once scaled.
        row = _clamp_row(column, allowance * min(low, Fraction(0)), allowance * max(high, Fraction(0)))
        return f"COALESCE(sum({row}), 0)"
    row = _clamp_row(column, low, high)
    if measurement.kind == CENTRED_SUM:
        # Each value moves the total by at most (high - low)/2 around the midpoint.
        return f"COALESCE(sum({row} - {_number((low + high) / 2)}), 0)"
    if measurement.kind == CLAMPED_SUM:
        return f"COALESCE(sum({row}), 0)"
    if measurement.kind == SUM_OF_SQUARES:
        return f"COALESCE(sum({row} * {row}), 0)"
    if measurement.kind == HISTOGRAM:
        bucket = f"LEAST(width_bucket({row}, {_number(low)}, {_number(high)}, {BUCKETS}), {BUCKETS})"
        return f"(array_agg({bucket} ORDER BY random()) FILTER (WHERE {column} IS NOT NULL))[1:{allowance}]"
    raise ValueError(measurement.kind)


def kept(measurement: Measurement, index: int, total: str) -> str:
    """A person's contribution to one group from the `"c"` rows kept of its
    `"n"`, of which `"v{index}"` have a value of the argument."""
    values = f'LEAST("v{index}", "c")'
    if measurement.kind == ROWS:
        return '"c"'
    if measurement.kind == COUNT:
        return values
    if measurement.kind == DISTINCT:
        return f'{total}[1:"c"]'
    if measurement.kind == HISTOGRAM:
        return f"{total}[1:{values}]"
    assert measurement.bounds is not None
    low, high = measurement.bounds
    # The person's total in the group, scaled to the rows kept.
    scaled = f'({total} * "c" / "n")'
    if measurement.kind == SUM_OF_SQUARES:
        largest = max(abs(low), abs(high))
        limits = (_number(Fraction(0)), _number(largest * largest))
    elif measurement.kind == CENTRED_SUM:
        half = (high - low) / 2
        limits = (_number(-half), _number(half))
    else:
        limits = (_number(min(low, Fraction(0))), _number(max(high, Fraction(0))))
    return f"LEAST(GREATEST({scaled}, {values} * {limits[0]}), {values} * {limits[1]})"


def needs_people_counts(query: q.PrivateQuery) -> bool:
    """Whether the answer releases, per group, how many people are in it."""
    return any(not k.public for k in query.keys) or any(a.kind == q.COUNT_UNITS for a in query.aggregates)


def allocation(query: q.PrivateQuery, keys: list[str], salt: str) -> str:
    """Per person and group: `"c"`, the rows kept, over `"pgshroud_persons"`."""
    allowance = query.allowance
    if not query.grouped:
        return f'SELECT *, LEAST("n", {allowance}) AS "c" FROM "pgshroud_persons"'
    source = '"pgshroud_persons"'
    if needs_people_counts(query):
        # A random rank of each person's groups: people are counted in their
        # first max_groups only (rows are allocated over all of them).
        source = '(SELECT *, row_number() OVER (PARTITION BY "unit" ORDER BY random()) AS "pick" FROM "pgshroud_persons")'
    # Systematic sampling: the person's groups in a fixed order, a start
    # u = k / 2**31 in [0, 1) per person, and floor(u + upto * T / N) steps
    # (N the person's rows, upto those in this and earlier groups): integer
    # counts that telescope to at most the allowance T. Exact integer
    # arithmetic, only for people with more rows than the allowance.
    start = f"(hashtext(\"unit\"::text || '{salt}') & 2147483647)::numeric"
    shares = (f'SELECT *, sum("n") OVER "upto" AS "upto", sum("n") OVER "person" AS "total", {start} AS "k" '
              f'FROM {source} AS "mine" WINDOW "person" AS (PARTITION BY "unit"), '
              f'"upto" AS (PARTITION BY "unit" ORDER BY {", ".join(keys)} ROWS UNBOUNDED PRECEDING)')
    scale = '"total" * 2147483648'
    steps = (f'div("k" * "total" + "upto" * {allowance} * 2147483648, {scale}) '
             f'- div("k" * "total" + ("upto" - "n") * {allowance} * 2147483648, {scale})')
    return (f'SELECT *, (CASE WHEN "total" <= {allowance} THEN "n" ELSE {steps} END)::bigint AS "c" '
            f'FROM ({shares}) AS "shares"')


def bounded_sql(query: q.PrivateQuery, salt: str = "") -> str:
    found = measurements(query)
    for measurement in found:
        if measurement.kind == HISTOGRAM and measurement.bounds and measurement.bounds[0] >= measurement.bounds[1]:
            raise ValueError("a quantile needs bounds with low < high")
    allowance = query.allowance
    keys = [f'"k{i}"' for i in range(len(query.keys))]
    row_columns = [f'{query.unit_sql} AS "unit"']
    row_columns += [f"{key.sql} AS {name}" for key, name in zip(query.keys, keys)]
    # Each argument is computed once per row: as numeric for sums and
    # histograms (and counts that share their argument, so that NaN is no
    # value to either), as itself for distinct counts and other counts,
    # which only ask whether it is NULL (a cast of text could fail).
    numeric = {m.argument for m in found if m.argument is not None and m.kind not in (COUNT, DISTINCT)}

    def as_itself(measurement: Measurement) -> bool:
        return measurement.kind == DISTINCT or (measurement.kind == COUNT and measurement.argument not in numeric)

    row_values = list(dict.fromkeys((m.argument, as_itself(m)) for m in found if m.argument is not None))
    for position, (argument, raw) in enumerate(row_values):
        row_columns.append(f'{f"({argument})" if raw else _value(argument)} AS "a{position}"')
    # A row whose unit is NULL belongs to no one: kept, all such rows would
    # pool into one pseudo-person with a whole allowance of their own.
    every = f"SELECT {', '.join(row_columns)} {query.source_sql}"
    rows = f'SELECT * FROM ({every}) AS "pgshroud_all" WHERE "unit" IS NOT NULL'

    person_columns = ['"unit"'] + keys + ['count(*) AS "n"']
    person_columns += [f'count("a{p}") AS "v{p}"' for p in range(len(row_values))]
    kept_columns = []
    for i, measurement in enumerate(found[1:], start=1):
        index = 0
        if measurement.argument is not None:
            index = row_values.index((measurement.argument, as_itself(measurement)))
        total = raw_total(measurement, f'"a{index}"', allowance)
        if total is not None:
            person_columns.append(f'{total} AS "t{i}"')
        kept_columns.append(f'{kept(measurement, index, f"{chr(34)}t{i}{chr(34)}")} AS "m{i}"')
    group_by = ", ".join(['"unit"'] + keys)
    persons = f'SELECT {", ".join(person_columns)} FROM "pgshroud_rows" GROUP BY {group_by}'
    given = allocation(query, keys, salt)
    ranked = query.grouped and needs_people_counts(query)
    bounded_columns = ", ".join(['"unit"'] + keys + (['"pick"'] if ranked else []) + kept_columns)
    people = f'count(*) FILTER (WHERE "pick" <= {query.max_groups})' if ranked else "count(*)"
    ctes = [f'"pgshroud_rows" AS ({rows})', f'"pgshroud_persons" AS ({persons})',
            f'"pgshroud_bounded" AS (SELECT {bounded_columns} FROM ({given}) AS "given" WHERE "c" > 0)']
    bounded = '"pgshroud_bounded"'
    key_list = ", ".join(keys)
    group = f" GROUP BY {key_list}" if keys else ""
    totals = []
    for i, measurement in enumerate(found[1:], start=1):
        totals.append("NULL::numeric" if measurement.kind in LISTS else f'sum("m{i}")::numeric')
    head = ", ".join(keys + [""]) if keys else ""
    branches = [
        f'SELECT 0 AS "kind", NULL::integer AS "bucket", {head}{people}::numeric AS "units"'
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
            # The public values of this key, as PostgreSQL spells them; one
            # more than a release may use is enough to know there are too many.
            columns = ", ".join('"d"."v"' if j == i else "NULL" for j in range(len(keys)))
            branches.append(f'SELECT {-1 - i}, NULL::integer, {columns}, NULL::numeric{nulls} '
                            f'FROM ({key.domain_sql} LIMIT {MAX_PUBLIC_GROUPS + 1}) AS "d"("v")')
    union = " UNION ALL ".join(branches)
    if not query.constants and not query.ranked_keys and not query.key_tests:
        return f"WITH {', '.join(ctes)} " + union
    ctes.append(f'"pgshroud_answer" AS ({union})')
    return f"WITH {', '.join(ctes)} " + extra_columns(query)


def extra_columns(query: q.PrivateQuery) -> str:
    """The answer's rows, then (when the query needs them) each ranked text
    key's rank under PostgreSQL's ORDER BY (its collation), each key test's
    result, and each constant. Constants come from a one-row subquery joined to the answer,
    so they are read even when the answer has no row; PostgreSQL computes
    them before any row is read, and a negative LIMIT or OFFSET fails there
    with PostgreSQL's own error."""
    ranks = [f'dense_rank() OVER (ORDER BY "r"."k{i}") AS "pgshroud_rank{i}"' for i in query.ranked_keys]
    ranks += [f'("r"."k{test.key}" {test.operator} {test.literal}) AS "pgshroud_test{j}"'
              for j, test in enumerate(query.key_tests)]
    if not query.constants:
        columns = ", ".join(['"r".*'] + ranks)
        return f'SELECT {columns} FROM "pgshroud_answer" AS "r"'
    values = [f'{c.sql} AS "c{i}"' for i, c in enumerate(query.constants)]
    checks = {"limit": "", "offset": ""}
    for i, constant in enumerate(query.constants):
        if constant.check == "zero_offset":
            # A subquery's OFFSET that must skip nothing: a negative one fails
            # as PostgreSQL's own, any other but 0 with a cast of its text
            # (not a literal, which PostgreSQL would fold and fail on always).
            checks["offset"] += (f" WHEN {constant.sql} < 0 THEN {constant.sql} WHEN {constant.sql} <> 0 THEN "
                                 f"CAST(('OFFSET of a subquery must be 0 in a private query, not ' || "
                                 f"{constant.sql}) AS bigint)")
        elif constant.check is not None:
            checks[constant.check] += f" WHEN {constant.sql} < 0 THEN {constant.sql}"
    listed = ", ".join(values)
    one = f'(SELECT {listed}) AS "v"'
    if checks["limit"] or checks["offset"]:
        # LIMIT of 1 and OFFSET 0 keep the one row; a negative value fails as the analyst's LIMIT would.
        limit = f'CASE{checks["limit"]} ELSE 1 END' if checks["limit"] else "1"
        offset = f'CASE{checks["offset"]} ELSE 0 END' if checks["offset"] else "0"
        one = f'(SELECT * FROM {one} LIMIT {limit} OFFSET {offset}) AS "v"'
    columns = ", ".join(['"r".*'] + ranks + [f'"v"."c{i}"' for i in range(len(query.constants))])
    return f'SELECT {columns} FROM {one} LEFT JOIN "pgshroud_answer" AS "r" ON true'
