"""From the bounded query's raw per-group totals to the private answer.

Budget split: the query's epsilon is divided equally among its noisy
quantities (the unit count that partition selection thresholds, each
distinct count, sum, sum of squares and histogram). Quantities are shared:
AVG(cost) and SUM(cost) use one noisy sum, AVG(cost) and COUNT(cost) one
noisy count, so asking for more columns over the same values costs no
accuracy. Equal shares minimise the largest relative error when the
quantities have similar signal-to-noise, which is the usual case; the
shares are shown by `pgshroud explain`. Delta is spent only by partition
selection (a noisy threshold on the unit count, Wilson et al. 2020,
Section 5), so queries whose group keys are all public cost delta 0.

Everything after the noise (averages as noisy sum over noisy count, clamps
to feasible ranges, quantiles from a noisy histogram, the analyst's own
arithmetic, HAVING, ORDER BY, LIMIT) is post-processing and costs nothing.
"""

from __future__ import annotations

import datetime
import itertools
import math
import secrets
from dataclasses import dataclass, field
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal
from fractions import Fraction
from typing import Any

from sqlglot import exp

from pgshroud.rewriter.mechanisms import DiscreteLaplace, Rng, margin_of_error, release_real
from pgshroud.rewriter.partition_selection import NoisyThresholdSelection
from pgshroud.rewriter.plans import Column, Cost, LocalAnswer, RawResult, cost_decimal
from pgshroud.rewriter.private import query as q
from pgshroud.rewriter.private import types as t
from pgshroud.rewriter.private.bounding import (
    BUCKETS,
    HISTOGRAM,
    MAX_PUBLIC_GROUPS,
    UNITS,
    Measurement,
    bounded_sql,
    measurements,
    measurements_for,
    needs_people_counts,
)
from pgshroud.rewriter.private.postprocess import (
    ReleasedRow,
    Value,
    evaluate,
    format_value,
    key_order,
    parse_key,
    sort_rows,
)

# A group's noisy measurements: a value each, or a histogram's noisy counts.
Noisy = dict[Measurement, Any]


@dataclass
class _Totals:
    """One group's raw totals: its people, each measurement's total, each histogram's counts by bucket."""

    units: Fraction = Fraction(0)
    measures: dict[int, Fraction] = field(default_factory=dict)
    histograms: dict[int, dict[int, int]] = field(default_factory=dict)


def _not_null(text: str | None) -> str:
    """A total PostgreSQL computes for every row it sends (a count is never NULL)."""
    if text is None:
        raise ValueError("a count of the bounded query is NULL")
    return text


GRID_STEPS = 1024  # grid points per L1 sensitivity of a real-valued sum
_ROOT = Context(prec=40, Emax=MAX_EMAX, Emin=MIN_EMIN)  # standard deviations, to 40 digits


@dataclass(frozen=True)
class Noise:
    """How one measurement is noised."""

    measurement: Measurement
    epsilon: Fraction
    sensitivity: Fraction  # L1 over all groups
    mechanism: DiscreteLaplace
    granularity: Fraction | None  # None: integer quantity

    @property
    def scale(self) -> Fraction:
        """The noise's scale in value units."""
        return self.mechanism.scale * (self.granularity or 1)

    def add(self, value: Fraction, rng: Rng | None) -> Fraction:
        if self.granularity is None:
            return Fraction(self.mechanism.release(int(value), rng))
        return release_real(value, self.granularity, self.mechanism, rng)


@dataclass(frozen=True)
class PrivateRelease:
    """A ReleaseSpec: the cost, the output columns and the finalize step."""

    query: q.PrivateQuery
    epsilon: Fraction
    delta: Fraction
    sql: str = field(init=False)
    found: tuple[Measurement, ...] = field(init=False)
    noises: dict[Measurement, Noise] = field(init=False)
    selection: NoisyThresholdSelection | None = field(init=False)
    margins: dict[Measurement, Fraction] = field(init=False)  # 95% margin of each noise, in value units
    rng: Rng | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        query = self.query
        found = measurements(query)
        selection_needed = query.grouped and not all(k.public for k in query.keys)
        if query.grouped and not selection_needed:
            # Every combination of public values is a group to noise and send.
            # Domains the plan lists (the policy's lists, a CASE's results) are
            # counted now; a public table's values only once PostgreSQL has
            # sent them (at most MAX_PUBLIC_GROUPS + 1 of each), before any
            # group is built (see _groups).
            _check_groups(math.prod(len(k.domain) for k in query.keys if k.domain is not None))
        noised = [m for m in found[1:]]
        units_released = any(a.kind == q.COUNT_UNITS for a in query.aggregates)
        if selection_needed or units_released:
            noised = [found[0]] + noised
        share = self.epsilon / len(noised)
        groups = query.max_groups
        noises = {}
        for measurement in noised:
            # Units: a person counts once in each of at most max_groups groups.
            l1 = Fraction(groups) if measurement.kind == UNITS else measurement.sensitivity(query.allowance)
            if measurement.integer or l1 == 0:
                mechanism = DiscreteLaplace.for_epsilon(share, l1)
                noises[measurement] = Noise(measurement, share, l1, mechanism, None)
            else:
                # Each group's value is rounded to the grid on its own: a person
                # moves the grid indices by at most GRID_STEPS plus one per group
                # they keep rows in (at most one per row kept).
                touched = query.allowance if query.grouped else 1
                granularity = l1 / GRID_STEPS
                mechanism = DiscreteLaplace.for_epsilon(share, GRID_STEPS + touched)
                noises[measurement] = Noise(measurement, share, l1, mechanism, granularity)
        selection = None
        if selection_needed and self.delta == 0:
            private_keys = ", ".join(k.label for k in query.keys if not k.public)
            if not query.aggregates:
                raise ValueError(f"the keys of a GROUP BY without aggregates ({private_keys}) are released only "
                                 "when they pass partition selection, which spends delta: SET pgshroud.delta above 0")
            raise ValueError(f"the group keys {private_keys} have no public domain, so their groups pass partition "
                             "selection, which spends delta: SET pgshroud.delta above 0, or group by keys whose "
                             "values the policy declares public")
        if selection_needed:
            selection = NoisyThresholdSelection(noises[found[0]].mechanism, self.delta, groups)
        # The systematic sampling's start per person: not noise, but unpredictable all the same.
        object.__setattr__(self, "sql", bounded_sql(query, secrets.token_hex(8)))
        object.__setattr__(self, "found", found)
        object.__setattr__(self, "noises", noises)
        object.__setattr__(self, "margins", {
            m: margin_of_error(n.mechanism) * (n.granularity or 1) for m, n in noises.items() if m.kind != HISTOGRAM
        })
        object.__setattr__(self, "selection", selection)

    @property
    def bound_parameters(self) -> tuple[tuple[int, str], ...]:
        """(n, check) for each bind parameter $n that is a LIMIT ("limit"),
        an OFFSET ("offset") or a subquery's OFFSET that must be 0
        ("zero_offset"): the session refuses a negative value at Bind, before
        the charge, as PostgreSQL would (2201W, 2201X), and a "zero_offset"
        other than 0 or NULL. Unchecked, the bounded SQL fails on it
        upstream, after the charge (on the value alone, never on a row)."""
        return tuple((c.parameter, c.check) for c in self.query.constants
                     if c.check is not None and c.parameter is not None)

    # ReleaseSpec

    @property
    def cost(self) -> Cost:
        # Exactly the epsilon and delta the mechanisms were built from.
        return Cost(cost_decimal(self.epsilon), cost_decimal(self.delta if self.selection is not None else Fraction(0)))

    @property
    def columns(self) -> tuple[Column, ...]:
        return tuple(Column(o.name, t.oid(o.type_name)) for o in self.query.outputs)

    def finalize(self, raw: RawResult) -> LocalAnswer:
        # PostgreSQL's order of the groups says which ones hold data (empty
        # public groups come last): groups are noised and leave in the order
        # of their keys, so that ties under ORDER BY, and LIMIT without it,
        # go by key too, and the same draws land on the same groups.
        query = self.query
        types = tuple(k.type_name for k in query.keys)
        answer, per_key, constants = self._split(raw)
        values_of_constants = {f"const{i}": None if text is None else parse_key(text, c.type_name)
                               for i, (text, c) in enumerate(zip(constants, query.constants))}
        groups = sorted(self._groups(answer), key=lambda group: key_order(group[0], types))
        rows = []
        for key_text, totals in groups:
            kept = self._noisy(totals)
            if kept is None:
                continue
            keys = [parse_key(text, k.type_name) for text, k in zip(key_text, query.keys)]
            # Values post-processing reads (a date quantile is a date).
            values: dict[str, Any] = {f"key{i}": v for i, v in enumerate(keys)}
            values.update({f"agg{i}": self._aggregate(a, kept) for i, a in enumerate(query.aggregates)})
            values.update(values_of_constants)
            for name, (i, of_key) in per_key.items():  # ranks and tests of text keys, computed by PostgreSQL
                text = key_text[i]
                values[name] = None if text is None else of_key.get(text)
            if query.having is not None and evaluate(query.having, values) is not True:
                continue
            rows.append((key_text, values, kept))
        self._running(rows)
        rows = self._stage(rows, None, query.order, query.limit, query.offset, values_of_constants)
        for stage in query.outer:
            rows = self._stage(rows, stage.where, stage.order, stage.limit, stage.offset, values_of_constants)
        out = []
        for key_text, values, _ in rows:
            out.append(tuple(self._output(o, key_text, values, constants) for o in query.outputs))
        notices = query.notices + self._margins([noisy for _, _, noisy in rows])
        return LocalAnswer(f"SELECT {len(out)}", self.columns, tuple(out), notices=notices)

    def _split(self, raw: RawResult) -> tuple[RawResult, dict[str, tuple[int, dict[str, object]]],
                                               tuple[str | None, ...]]:
        """The answer's own rows; for each variable `rank{i}` and `test{j}`,
        its key and its value for each value of the key; the constants' text
        (bounding.extra_columns)."""
        ranked, tests, count = self.query.ranked_keys, self.query.key_tests, len(self.query.constants)
        extra = len(ranked) + len(tests) + count
        if not extra:
            return raw, {}, ()
        # Counted from each row's end: raw.columns are the answer's, not the bounded SQL's.
        constants: tuple[str | None, ...] = tuple(raw.rows[0][len(raw.rows[0]) - count:]) if raw.rows \
            else (None,) * count
        per_key: dict[str, dict[str, object]] = {f"rank{i}": {} for i in ranked}
        per_key.update({f"test{j}": {} for j in range(len(tests))})
        keys_of = [i for i in ranked] + [test.key for test in tests]
        rows = []
        for row in raw.rows:
            width = len(row) - extra
            for position, (name, key) in enumerate(zip(per_key, keys_of)):
                value, result = row[2 + key], row[width + position]
                if value is not None and result is not None:
                    per_key[name][value] = int(result) if name.startswith("rank") else result == "t"
            if row[0] is not None:  # the row of constants alone (no answer row joined to it) has no kind
                rows.append(tuple(row[:width]))
        keyed = {name: (key, values) for (name, values), key in zip(per_key.items(), keys_of)}
        return RawResult(raw.columns, raw.type_oids, tuple(rows)), keyed, constants

    def _stage(self, rows: list[ReleasedRow], where: exp.Expr | None, order: tuple[q.OrderItem, ...],
               limit: q.Bound, offset: q.Bound, constants: dict[str, Value]) -> list[ReleasedRow]:
        """One query level's WHERE, ORDER BY (text keys by PostgreSQL's rank of
        them), OFFSET and LIMIT over released rows."""
        if where is not None:
            rows = [row for row in rows if evaluate(where, row[1]) is True]
        rows = sort_rows(rows, tuple(self._by_rank(item) for item in order))
        start, count = (_bound(b, constants) for b in (offset, limit))
        return rows[start or 0 : None if count is None else (start or 0) + count]

    def _running(self, rows: list[ReleasedRow]) -> None:
        """Each running total (SUM(...) OVER (ORDER BY keys)) over the released
        groups, in the window's order: with RANGE, groups equal in it (peers)
        share the total that includes them all. NULLs add nothing; a total
        of nothing but NULLs is NULL, as SUM's."""
        for index, running in enumerate(self.query.running):
            order = tuple(self._by_rank(item) for item in running.order)
            ordered = sort_rows(rows, order)
            total: Any = None  # a sum of released values of one type, as PostgreSQL typed them
            position = 0
            while position < len(ordered):
                end = position + 1
                if running.peers:
                    here = [evaluate(item.expression, ordered[position][1]) for item in order]
                    while end < len(ordered) and [evaluate(item.expression, ordered[end][1]) for item in order] == here:
                        end += 1
                for _, values, _ in ordered[position:end]:
                    value = evaluate(running.expression, values)
                    if value is not None:
                        total = value if total is None else total + value
                for _, values, _ in ordered[position:end]:
                    values[f"run{index}"] = total
                position = end

    def _by_rank(self, item: q.OrderItem) -> q.OrderItem:
        node = item.expression
        if isinstance(node, exp.Var) and node.name.startswith("key") and int(node.name[3:]) in self.query.ranked_keys:
            return q.OrderItem(exp.var(f"rank{node.name[3:]}"), item.descending, item.nulls_first)
        return item

    def _margins(self, released: list[Noisy]) -> tuple[str, ...]:
        """A notice with each noisy column's 95% margin of error (the largest
        over the rows released), from the noise's scale and released values only."""
        parts = []
        for output in self.query.outputs:
            node = output.expression
            if node.key != "var" or not node.name.startswith("agg"):
                continue
            aggregate = self.query.aggregates[int(node.name[3:])]
            margins = [m for noisy in released if (m := self._margin(aggregate, noisy)) is not None]
            if margins:
                parts.append(f"{output.name} ±{format_value(max(margins), output.type_name)}")
        if not parts:
            return ()
        return ("95% margins of error from the noise (not from bounding): " + ", ".join(parts),)

    def _margin(self, aggregate: q.Aggregate, noisy: Noisy) -> Fraction | None:
        """The 95% margin of one aggregate in one group: counts and sums from
        their mechanism; an average by first-order propagation through the
        noisy centred sum over the noisy count. None where no simple margin
        exists (variances, quantiles)."""
        found = measurements_for(aggregate)
        if aggregate.kind in q.VARIANCES + q.QUANTILES or any(m not in self.noises for m in found):
            return None
        margins = [self.margins[m] for m in found]
        if aggregate.kind != q.AVG:
            return margins[0]
        centred: Fraction = noisy[found[0]]
        count: Fraction = max(noisy[found[1]], Fraction(1))
        return margins[0] / count + abs(centred) * margins[1] / (count * count)

    # steps

    def _groups(self, raw: RawResult) -> list[tuple[tuple[str | None, ...], _Totals]]:
        """Raw totals per group, empty public groups included."""
        width = len(self.query.keys)
        groups: dict[tuple[str | None, ...], _Totals] = {}
        # Domains PostgreSQL lists (policy lists cast to the column's type,
        # public tables' values) are read from the result.
        domains: list[set[str] | tuple[str | None, ...] | None] = [
            set() if k.domain_sql else k.domain for k in self.query.keys]
        for row in raw.rows:
            kind, bucket = int(row[0] or 0), row[1]
            if kind < 0:  # a public value of key -kind-1
                value = row[2 - kind - 1]
                if value is not None:
                    domains[-kind - 1].add(value)  # type: ignore[union-attr]
                continue
            key = tuple(row[2 : 2 + width])
            totals = groups.setdefault(key, _Totals())
            values = row[2 + width :]
            if kind == 0:
                totals.units = Fraction(values[0] or 0)
                for i, value in enumerate(values[1:], start=1):
                    if value is not None or i not in totals.measures:
                        totals.measures[i] = Fraction(Decimal(value)) if value is not None else Fraction(0)
            elif bucket is None:  # a distinct count, totalled in its own row
                totals.measures[kind] = Fraction(Decimal(_not_null(values[0])))
            else:
                totals.histograms.setdefault(kind, {})[int(bucket)] = int(Decimal(_not_null(values[0])))
        if any(d is not None for d in domains):
            groups = {k: v for k, v in groups.items()
                      if all(d is None or value in d for value, d in zip(k, domains))}
        if self.query.keys and all(d is not None for d in domains):
            ordered = [sorted(d) if isinstance(d, set) else d for d in domains if d is not None]
            _check_groups(math.prod(len(d) for d in ordered))
            for key in itertools.product(*ordered):
                groups.setdefault(tuple(key), _Totals())
        if not self.query.keys and not groups:
            groups[()] = _Totals()
        return list(groups.items())

    def _noisy(self, totals: _Totals) -> Noisy | None:
        """Noisy measurements of one group, or None when selection drops it."""
        found = self.found
        noisy: Noisy = {}
        if self.selection is not None:
            released = self.selection.select(int(totals.units), self.rng)
            if released is None:
                return None
            noisy[found[0]] = Fraction(released)
        elif found[0] in self.noises:
            noisy[found[0]] = self.noises[found[0]].add(totals.units, self.rng)
        for i, measurement in enumerate(found[1:], start=1):
            noise = self.noises[measurement]
            if measurement.kind == HISTOGRAM:
                counts = totals.histograms.get(i, {})
                noisy[measurement] = [noise.add(Fraction(counts.get(b, 0)), self.rng) for b in range(1, BUCKETS + 1)]
            else:
                noisy[measurement] = noise.add(totals.measures.get(i, Fraction(0)), self.rng)
        return noisy

    def _aggregate(self, aggregate: q.Aggregate, noisy: Noisy) -> object:
        parts = [noisy[m] for m in measurements_for(aggregate)]
        kind = aggregate.kind
        if kind in (q.COUNT_ROWS, q.COUNT, q.COUNT_UNITS, q.COUNT_DISTINCT):
            return max(0, round(parts[0]))
        low, high = aggregate.bounds or (Fraction(0), Fraction(0))
        if kind == q.SUM:
            # A sum of values >= 0 is >= 0 (and of values <= 0, <= 0).
            total = parts[0]
            if low >= 0:
                total = max(total, Fraction(0))
            if high <= 0:
                total = min(total, Fraction(0))
            return total
        if kind == q.AVG:
            centred, count = parts
            return min(max((low + high) / 2 + centred / max(count, 1), low), high)
        if kind in q.VARIANCES:
            total, squares, count = parts
            n = max(count, 1)
            mean = min(max(total / n, low), high)
            variance = min(max(squares / n - mean * mean, Fraction(0)), (high - low) ** 2 / 4)
            if kind in (q.VAR_SAMP, q.STDDEV_SAMP) and n > 1:
                variance = variance * n / (n - 1)
            if kind in (q.STDDEV_POP, q.STDDEV_SAMP):
                # In decimals: a double overflows on the variance of wide bounds (1e600).
                return Fraction(_ROOT.sqrt(_ROOT.divide(Decimal(variance.numerator), Decimal(variance.denominator))))
            return variance
        value = _quantile(parts[0], aggregate.quantile or Fraction(1, 2), low, high)
        if aggregate.output_type == "date":  # a day number, within the policy's dates
            return q.DAY_ZERO + datetime.timedelta(days=math.floor(value))
        return value

    def _output(self, output: q.Output, key_text: tuple[str | None, ...], values: dict[str, Value],
                constants: tuple[str | None, ...]) -> str | None:
        node = output.expression
        if node.key == "var" and node.name.startswith("key"):
            return key_text[int(node.name[3:])]
        if node.key == "var" and node.name.startswith("const"):
            return constants[int(node.name[5:])]  # as PostgreSQL spelt it
        return format_value(evaluate(node, values), output.type_name)

    # explain

    def explain(self) -> list[str]:
        lines = [f"privacy cost: epsilon {float(self.epsilon):g}, delta {float(self.cost.delta):g}",
                 f"contribution bounds: {self.query.allowance} row(s) per person in all"
                 + (f"; each person counted in at most {self.query.max_groups} group(s), chosen at random"
                    if self.query.grouped and needs_people_counts(self.query) else "")]
        for output in self.query.outputs:
            used = sorted({int(v.name[3:]) for v in output.expression.find_all(exp.Var) if v.name.startswith("agg")})
            sources = "; ".join(
                f"{self.query.aggregates[i].label} from "
                + " and ".join(_describe(m) for m in measurements_for(self.query.aggregates[i]))
                for i in used
            )
            constant = not used and any(v.name.startswith("const") for v in output.expression.find_all(exp.Var))
            described = sources or ("computed by PostgreSQL before any row is read" if constant
                                    else "group key, released as is")
            lines.append(f"column {output.name} ({output.type_name}): " + described)
        for measurement, noise in self.noises.items():
            bounds = "" if measurement.bounds is None else f", bounds [{float(measurement.bounds[0]):g}, {float(measurement.bounds[1]):g}]"
            margin = margin_of_error(noise.mechanism) * (noise.granularity or 1)
            lines.append(f"{_describe(measurement)}: L1 sensitivity {float(noise.sensitivity):g}{bounds}, discrete "
                         f"Laplace, epsilon {float(noise.epsilon):.4g}, scale {float(noise.scale):.4g}, "
                         f"95% of noise within +/-{float(margin):.4g}")
        if self.selection is not None:
            lines.append(f"partition selection: keep a group when its noisy unit count is at least "
                         f"{self.selection.threshold} (delta {float(self.delta):g})")
        elif self.query.grouped:
            lines.append("group keys are public: every group of their domains is released")
        for key in self.query.keys:
            lines.append(f"group key {key.label}: " + ("public domain" if key.domain is not None else "partition selection"))
        lines.append(f"bounded SQL: {self.sql}")
        return lines


def _bound(bound: q.Bound, constants: dict[str, Value]) -> int | None:
    """A LIMIT or OFFSET: a literal, or a bind value PostgreSQL read (NULL: none; never negative, PostgreSQL failed those)."""
    if isinstance(bound, str):
        value = constants.get(bound)
        return None if value is None else max(int(value), 0)
    return bound


class TooManyGroups(ValueError):
    """The public group keys have more combinations than a release may
    build. Public values alone decide it, so it may be said after the charge
    too (a public table's values are known only then)."""


def _check_groups(size: int) -> None:
    """`size`: a lower bound on the number of groups (domains not yet known
    count as 1; a public table's values are read up to one too many)."""
    if size > MAX_PUBLIC_GROUPS:
        raise TooManyGroups(f"the public group keys have at least {size} combinations, and a private answer has "
                            f"at most {MAX_PUBLIC_GROUPS} groups: group by fewer keys")


def _describe(measurement: Measurement) -> str:
    return measurement.kind + (f"({measurement.argument})" if measurement.argument else "")


def _quantile(counts: list[Fraction], p: Fraction, low: Fraction, high: Fraction) -> Fraction:
    """The p-quantile from a noisy histogram over [low, high].

    The cumulative sums of the noisy counts are used unclipped (clipping
    each count at 0 would add the positive half of every empty bucket's
    noise), made non-decreasing and non-negative, and the quantile is
    interpolated linearly inside the bucket where they reach p of the total.
    """
    cumulative: list[Fraction] = []
    running = Fraction(0)
    for count in counts:
        running += count
        cumulative.append(max(running, cumulative[-1] if cumulative else Fraction(0)))
    total = cumulative[-1] if cumulative else Fraction(0)
    width = (high - low) / len(counts)
    if total <= 0:
        return low + p * (high - low)
    target = p * total
    previous = Fraction(0)
    for index, reached in enumerate(cumulative):
        if reached >= target and reached > previous:
            return low + width * index + width * (target - previous) / (reached - previous)
        previous = reached
    return high
