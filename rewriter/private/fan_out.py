"""How many rows a join makes of one person's rows, bounded to one.

A private query's running time must not depend much on any one person. A
join that multiplies the rows a condition selects (a cross join with a
public table, a public table joined on anything but a key, two tables of
many rows per person joined to each other) makes one person's presence cost
seconds: the error-or-answer and timing oracles of THREATS.md. So the joined
rows of a private query are at most the rows of one table with many rows
per person: every public source is joined on all columns of one of its
unique keys to a source already so bounded, and at most one protected
source has more than one row per person.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from sqlglot import exp


class FanOutRefused(ValueError):
    """The join could multiply one person's rows; the message says how to join instead."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class JoinedSource(Protocol):
    @property
    def alias(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def columns(self) -> Mapping[str, object]: ...

    @property
    def protected(self) -> bool: ...


Find = Callable[[exp.Column], tuple[str, str] | None]  # (alias, column) of a reference, None if unknown


def column_equalities(conditions: Iterable[exp.Expr], find: Find) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """Pairs of (alias, column) that a conjunct `a = b` of the conditions equates."""
    pairs = []
    for condition in conditions:
        for conjunct in _conjuncts(condition):
            if isinstance(conjunct, exp.EQ) and all(isinstance(s, exp.Column) for s in (conjunct.this,
                                                                                         conjunct.expression)):
                left, right = find(conjunct.this), find(conjunct.expression)
                if left is not None and right is not None and left[0] != right[0]:
                    pairs.append((left, right))
    return pairs


def using_equalities(joined: str, names: Iterable[str], earlier: Iterable[JoinedSource]) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """JOIN ... USING (c): the joined source's c equals c of an earlier source."""
    earlier = list(earlier)
    pairs = []
    for name in names:
        for source in earlier:
            if name in source.columns:
                pairs.append(((joined, name), (source.alias, name)))
    return pairs


def check_fan_out(
    sources: Mapping[str, JoinedSource],
    many_rows_per_person: Iterable[str],
    unique_keys: Mapping[str, tuple[frozenset[str], ...]],
    equalities: list[tuple[tuple[str, str], tuple[str, str]]],
) -> None:
    """Refuse a join whose rows could be more than those of one source with
    many rows per person. `many_rows_per_person`: protected sources that
    may hold several rows of one person; `unique_keys`: each public
    source's unique keys (sets of columns)."""
    many = sorted(set(many_rows_per_person))
    if len(many) > 1:
        labels = ", ".join(sources[alias].label for alias in many)
        raise FanOutRefused(
            f"a private query cannot join {labels} to each other: each has many rows per person, and the join "
            "multiplies them",
            hint="Aggregate one of them per person in a subquery in FROM (GROUP BY the privacy unit), then join.")
    bounded = {alias for alias, source in sources.items() if source.protected}
    public = [alias for alias, source in sources.items() if not source.protected]
    changed = True
    while changed:
        changed = False
        for alias in public:
            if alias not in bounded and _joined_on_a_key(alias, unique_keys.get(alias, ()), bounded, equalities):
                bounded.add(alias)
                changed = True
    for alias in public:
        if alias not in bounded:
            keys = unique_keys.get(alias, ())
            what = (" or ".join("(" + ", ".join(sorted(key)) + ")" for key in keys) if keys
                    else "a unique key, which it does not have")
            raise FanOutRefused(
                f'the public table {sources[alias].label} must be joined on {what}: joined on anything else, '
                "it multiplies each person's rows",
                hint=f"Join it with {alias}.<key column> = <column of a protected table>.")


def _joined_on_a_key(alias: str, keys: tuple[frozenset[str], ...], bounded: set[str],
                     equalities: list[tuple[tuple[str, str], tuple[str, str]]]) -> bool:
    equated = {mine[1] for pair in equalities for mine, other in (pair, pair[::-1])
               if mine[0] == alias and other[0] in bounded}
    return any(key <= equated for key in keys)


def _conjuncts(condition: exp.Expr) -> list[exp.Expr]:
    while isinstance(condition, exp.Paren):
        condition = condition.this
    if isinstance(condition, exp.And):
        return _conjuncts(condition.this) + _conjuncts(condition.expression)
    return [condition]
