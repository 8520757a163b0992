"""The plan kinds: what the proxy does with one statement.

The rewriter returns one plan per statement of a Query (or one Passthrough for
the whole text when nothing needs to be looked at). The proxy session carries
each kind out; nothing here touches the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Context, Decimal
from enum import Enum
from fractions import Fraction
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Passthrough:
    """Forward the statement text exactly as the client sent it."""

    sql: str


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Forward this rewritten text instead; results are relayed untouched.

    `reaches` names what an SQL EXECUTE, FETCH, MOVE, DEALLOCATE or CLOSE
    acts on: ("S", name) a prepared statement, ("P", name) a portal or
    cursor, by the client's name. The session refuses running one of its
    private statements or portals this way, and points a DEALLOCATE or
    CLOSE of one at its upstream name.
    """

    sql: str
    reaches: tuple[str, str] | None = field(default=None, compare=False)
    # FETCH and MOVE: how far, should the cursor turn out to hold a private answer.
    step: CursorStep | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class CursorStep:
    """A FETCH or MOVE as pgshroud carries it out on a cursor whose private
    answer it holds: forward only, as a NO SCROLL cursor reads."""

    move: bool
    count: int | None  # rows forward; None: ALL
    forward: bool = True  # False: BACKWARD, PRIOR, ABSOLUTE, ..., which a held answer is not read by


@dataclass(frozen=True, slots=True)
class Column:
    """One output column of an answer the proxy builds itself.

    `type_oid` is a PostgreSQL type OID; values are carried as text, so a
    column's text form must be valid input for that type.
    """

    name: str
    type_oid: int = 25  # text


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    """A complete result computed by pgshroud without reading any data."""

    command_tag: str
    columns: tuple[Column, ...] = ()
    rows: tuple[tuple[str | None, ...], ...] = ()
    # Sent to the client as NoticeResponses before the rows (e.g. "MIN is
    # answered as a private extreme quantile").
    notices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Cost:
    """What a release costs in privacy: (epsilon, delta), as exact decimals.

    Numbers given in another form are converted, never downwards: a Fraction
    to its decimal (rounded up in the 34th digit when it has none, as 1/3),
    a float to the decimal it was written as (0.1 is 0.1, as the policy and
    the ledger read it).
    """

    epsilon: Decimal
    delta: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", cost_decimal(self.epsilon))
        object.__setattr__(self, "delta", cost_decimal(self.delta))


_ROUND_UP = Context(prec=34, rounding=ROUND_CEILING)


def cost_decimal(value: Decimal | Fraction | float) -> Decimal:
    """Conversion only: whether a cost is finite and >= 0 is the ledger's to check."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, Fraction):
        denominator, places = value.denominator, 0
        for prime in (2, 5):
            power = 0
            while denominator % prime == 0:
                denominator, power = denominator // prime, power + 1
            places = max(places, power)
        if denominator == 1:  # 2**a * 5**b: a decimal of max(a, b) places, exactly (no context rounds it)
            return Decimal(f"{value.numerator * 10**places // value.denominator}E-{places}")
        return _ROUND_UP.divide(Decimal(value.numerator), Decimal(value.denominator))
    if isinstance(value, bool):
        raise TypeError("a cost is a number, not a truth value")
    return value


@dataclass(frozen=True, slots=True)
class RawResult:
    """The upstream rows of a Release statement, decoded as text."""

    columns: tuple[str, ...]
    type_oids: tuple[int, ...]
    rows: tuple[tuple[str | None, ...], ...]


class ReleaseSpec(Protocol):
    """How to turn the raw aggregates of a Release into the private answer.

    `columns` are known when the statement is planned, so that Describe can
    answer before anything runs; `finalize` returns rows of those columns.
    """

    @property
    def cost(self) -> Cost: ...

    @property
    def columns(self) -> tuple[Column, ...]: ...

    def finalize(self, raw: RawResult) -> LocalAnswer: ...

    def explain(self) -> list[str]:
        """The privacy plan, one line each, as EXPLAIN shows it."""
        ...


@dataclass(frozen=True, slots=True)
class Release:
    """Charge `spec.cost`, run `sql` upstream, and send only `spec.finalize` of its rows."""

    sql: str
    spec: ReleaseSpec = field(compare=False)
    # DECLARE ... CURSOR FOR a private query: the answer is kept for FETCH.
    cursor: Cursor | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """The cursor a private query is declared as. Charged once, its answer is
    held by the session and read by FETCH and MOVE until CLOSE, or until the
    transaction ends unless `hold`."""

    name: str  # as PostgreSQL folds it
    hold: bool


@dataclass(frozen=True, slots=True)
class PrivacySetting:
    """A change to one of the session's pgshroud settings (`epsilon`, `delta`).

    `value` None means RESET: back to the policy's default. The session
    applies it once the statement has succeeded, as PostgreSQL does a SET.
    """

    name: str
    value: str | None


class SessionRead(Enum):
    """What a Local answer takes from what the planner cannot read (it does
    no I/O and holds no session state): the privacy budget ledger, the
    session's own answers. The session reads it, in the statement's turn,
    and completes the answer before sending it."""

    # SHOW pgshroud.budget: the answer's one text column gets one row, where
    # the user's budgets stand now (proxy/session/budget_notes.py words it).
    BUDGET = "budget"
    # SHOW pgshroud.last_answer: what the session's last private answer cost,
    # and its margins, for clients that drop notices.
    LAST_ANSWER = "last_answer"


@dataclass(frozen=True, slots=True)
class Local:
    """Answer without forwarding the statement (SET/SHOW pgshroud.*, EXPLAIN of a plan).

    With `reads`, `answer` gives the command tag and columns only; its rows
    come from the session (see SessionRead).
    """

    answer: LocalAnswer
    setting: PrivacySetting | None = None
    reads: SessionRead | None = None


@dataclass(frozen=True, slots=True)
class Refuse:
    """Reject the statement with a PostgreSQL error."""

    sqlstate: str
    message: str
    hint: str | None = None


Plan = Passthrough | Rewrite | Release | Local | Refuse
QueryPlan = Sequence[Plan]
