"""The privacy budget ledger: durable, exact, and never overspent.

Every private answer is paid for before it is released: the session awaits
`PostgresLedger.charge(user, cost)`, which either commits the charge and
returns None, or returns the refusal (SQLSTATE 53400, 'privacy budget
exhausted: ...') and commits nothing. (`charge_standing` does the same and,
once charged, returns the user's standings with the charge counted, for the
notice that tells the analyst what is left.) Any failure raises, and the session
then refuses the statement (58000): no answer without a committed charge.

The ledger lives in the upstream database, in the tables `pgshroud setup`
creates (policies/setup_sql.py): `pgshroud.budget_ledger`, append-only rows
of kind 'charge', 'grant' and 'reset', and `pgshroud.budget_lock`, one row
per scope (a user, a role, the dataset) with that scope's totals since its
last reset. A charge is one READ COMMITTED transaction on pgshroud's own
connection, with synchronous_commit on:

1. lock the budget_lock rows of the scopes the charge is checked against
   (the user always; the user's role and the dataset when the policy caps
   them), in one SELECT ... FOR UPDATE ordered by (scope, name), so that two
   charges never wait on each other in a cycle. Once it holds a row, the
   SELECT returns the row as the previous holder committed it;
2. take each scope's spend from its row (with a rolling budgets.period: sum
   the ledger's rows within the window, in a statement of its own, which in
   READ COMMITTED sees everything committed before the locks were granted),
   and check spent + cost <= cap + grants for epsilon and delta in exact
   decimal arithmetic (numeric in PostgreSQL, Decimal with rounding trapped
   in Python). Under budgets.composition zcdp "spent + cost" is the composed
   epsilon of `compose` (rho adds, converted at the delta the summed deltas
   leave of the cap). With a period, each budget's lifetime cap
   (budgets.lifetime times it) is checked as well, against the row's totals
   since the last reset;
3. if every scope covers it, append the charge and add it to the locked
   rows' totals, in one statement, and commit.

So concurrent charges of one user, from any number of sessions and pgshroud
processes sharing the database, are serialized on the lock rows and can
never overspend, and a charge costs the same with a million rows in the
ledger as with none. (Under REPEATABLE READ, step 2's sums could come from a
snapshot taken before the wait, which is why the isolation level is set
explicitly.) Lock rows are created on first use by a separate INSERT ... ON
CONFLICT DO NOTHING, committed before the charge begins.

A row's totals are kept by the transactions that lock it, so they miss the
charges made while no one locked it: a role's charges while the policy did
not cap the role, say. Each pgshroud process therefore recomputes a row's
totals from the ledger (under its lock) the first time it uses the row
under a given policy object, that is after start and after each reload; a
row's totals are then exact as long as every process sharing the ledger
runs the same budgets. (A process still on an old policy that does not cap
a scope, while others do, is not counted in that scope until it reloads.)

Scopes: a charge counts against its user, the user's role (`role_name`, as
the policy had it at charge time) and the dataset. A role that shares
answers (roles.<role>.share_answers) is charged as one account instead: its
charges are rows whose user_name is SHARED_ACCOUNT (''), which no user's
scope counts, with the role's name and a note naming the user who asked;
they lock and count against the role's budget and the dataset's, never a
user's (each of its users may be given every answer any of them was
released, so only the role's budget bounds what they learn). A 'grant' row
adds budget to one scope (a user: user_name; a role: role_name; the
dataset: neither); a 'reset' row makes that scope's earlier rows count no
more. Budgets come
from the policy of the moment (`policy.budgets`), so a reload applies to the
next charge. Costs and caps are converted from the floats the policy and
session settings hold to the shortest decimal that reads back as the same
float (0.1 is charged as 0.1), so that 200 charges of 0.1 fill a budget of
20 exactly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, Inexact, Rounded, localcontext
from fractions import Fraction

import asyncpg

from pgshroud.policies.model import Access, EpsilonDelta, Policy
from pgshroud.policies.setup_sql import SCHEMA
from pgshroud.proxy.ops.catalog import asyncpg_arguments
from pgshroud.proxy.ops.config import ConfigError
from pgshroud.rewriter.mechanisms import zcdp_to_approx_dp
from pgshroud.rewriter.plans import Cost, Refuse

log = logging.getLogger("pgshroud.ledger")

LEDGER = f"{SCHEMA}.budget_ledger"
LOCKS = f"{SCHEMA}.budget_lock"
EXHAUSTED = "53400"  # configuration_limit_exceeded
NO_BUDGET = "55000"  # object_not_in_prerequisite_state
# The user_name of a charge to a role's shared account (budget_ledger requires a user on a charge): no
# PostgreSQL user can be named '' (a login without a user name is refused), so no user's budget counts it,
# while the role's and the dataset's do. Its note names the user who asked.
SHARED_ACCOUNT = ""

_SETTINGS = {
    "application_name": "pgshroud ledger",
    # A charge is durable when charge() returns, whatever the server's or the
    # database's default (startup parameters override both).
    "synchronous_commit": "on",
    # A pgshroud process that stalls inside a charge must not hold a user's
    # budget locked for ever; its charge then fails, and nothing is released.
    "idle_in_transaction_session_timeout": "60s",
}

# Connection-level failures before COMMIT was sent: the charge did not
# happen, and is tried once more on a fresh connection.
_RETRYABLE = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.AdminShutdownError,
    ConnectionError,
)


@dataclass(frozen=True)
class Budget:
    """A cap from the policy: `scope` is 'user', 'role' or 'dataset'; `name` the user or role ('' for the dataset)."""

    scope: str
    name: str
    epsilon: Decimal
    delta: Decimal
    # The lifetime cap that goes with a budget renewed by budgets.period:
    # budgets.lifetime times the budget, over every charge since the last reset.
    lifetime: bool = False
    # A role's budget that its users' shared answers are charged to (roles.<role>.share_answers).
    shared: bool = False

    def describe(self) -> str:
        over = " over all periods (budgets.lifetime)" if self.lifetime else ""
        if self.scope == "user":
            return f'user "{self.name}"{over}'
        if self.scope == "role" and self.shared:
            return f'role "{self.name}", whose users share its answers and this budget{over},'
        if self.scope == "role":
            return f'role "{self.name}", shared by its users{over},'
        return f"the dataset, shared by all users{over},"


@dataclass(frozen=True)
class Standing:
    """Where one budget stands: what it allows (cap and grants) and what is spent, in the current period.

    `spent_epsilon` is the composed epsilon of the charges that count (under
    budgets.composition basic, their sum; under zcdp, see `compose`),
    `spent_delta` the sum of their deltas. `charged_epsilon` and `spent_rho`
    are the plain sums of their epsilons and rhos. With a period and
    budgets.lifetime, `lifetime` is where the budget's lifetime cap stands,
    and what remains is the lesser of the two."""

    budget: Budget
    spent_epsilon: Decimal
    spent_delta: Decimal
    granted_epsilon: Decimal
    granted_delta: Decimal
    oldest_charge: datetime | None  # the oldest charge that still counts
    charged_epsilon: Decimal | None = None  # None: spent_epsilon (basic composition)
    spent_rho: Decimal = Decimal(0)
    composition: str = "basic"
    lifetime: Standing | None = None

    @property
    def allowed_epsilon(self) -> Decimal:
        return self.budget.epsilon + self.granted_epsilon

    @property
    def allowed_delta(self) -> Decimal:
        return self.budget.delta + self.granted_delta

    @property
    def remaining_epsilon(self) -> Decimal:
        left = max(Decimal(0), self.allowed_epsilon - self.spent_epsilon)
        return left if self.lifetime is None else min(left, self.lifetime.remaining_epsilon)

    @property
    def remaining_delta(self) -> Decimal:
        left = max(Decimal(0), self.allowed_delta - self.spent_delta)
        return left if self.lifetime is None else min(left, self.lifetime.remaining_delta)

    @property
    def summed_epsilon(self) -> Decimal:
        return self.spent_epsilon if self.charged_epsilon is None else self.charged_epsilon


@dataclass(frozen=True)
class SharedRelease:
    """The release a charge to a role's shared account pays for: the answer cache's fingerprint of its
    statement and settings (the same in every pgshroud process) and how long its answer is kept."""

    fingerprint: str
    reuse_seconds: float


class Charged(list):
    """A committed charge's standings (a list of Standing, as `standing` returns), and when the role's
    shared account last paid for the same release while its answer would still be kept (`paid_before`):
    the charge repeats that release's cost because this process does not hold that answer (another
    pgshroud process released it, the cache let it go early, or this one restarted or reloaded)."""

    paid_before: datetime | None = None


@dataclass(frozen=True)
class Activity:
    """A user's charges in the current period: how many, their sums, and when the last was made."""

    charges: int
    spent_epsilon: Decimal
    spent_delta: Decimal
    last_charge: datetime | None


def exact(value: float | int | Decimal, name: str) -> Decimal:
    """A cost or cap as the decimal number it was written as (0.1 -> Decimal('0.1'))."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, not a bool")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    else:
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{name} must be finite, got {value!r}")
        result = Decimal(repr(number))
    if not result.is_finite() or result < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return result


def charge_rho(cost: Cost, epsilon: Decimal) -> Decimal:
    """A charge's zCDP cost: the cost's own `rho` when it has one (a Gaussian answer), else epsilon^2/2
    (a pure epsilon-DP answer, such as the discrete Laplace, is epsilon^2/2-zCDP), exactly."""
    rho = getattr(cost, "rho", None)
    if rho is not None:
        return exact(rho, "rho")
    with localcontext() as context:
        context.prec = 200
        context.traps[Inexact] = True
        context.traps[Rounded] = True
        return epsilon * epsilon * Decimal("0.5")


def zcdp_epsilon(rho: Decimal, delta: Decimal) -> Decimal:
    """The epsilon at `delta` of rho-zCDP (rewriter.mechanisms.zcdp_to_approx_dp, which rounds up to a float),
    as a decimal no smaller than that float: the shortest decimal of the next float up."""
    if rho == 0:
        return Decimal(0)
    up = zcdp_to_approx_dp(Fraction(rho), Fraction(delta))
    return Decimal(repr(math.nextafter(up, math.inf)))


def compose(composition: str, epsilon: Decimal, delta: Decimal, rho: Decimal, allowed_delta: Decimal) -> Decimal:
    """The epsilon that charges summing to (epsilon, delta, rho) have spent, under a delta cap of `allowed_delta`.

    basic: the sum of the epsilons. zcdp: the charges are rho-zCDP, apart from the deltas their answers
    spend outright (partition selection), so they are (zcdp_epsilon(rho, d), d + delta)-DP for any d > 0;
    d is what the cap leaves, allowed_delta - delta, so that the whole is (epsilon', allowed_delta)-DP. Basic
    composition holds too, so the lesser of the two epsilons is taken (zcdp never charges more than basic);
    with nothing left of the delta cap (or 1 or more left, which bounds nothing) it is the basic sum."""
    if composition != "zcdp" or rho == 0:
        return epsilon
    with localcontext() as context:
        context.prec = 200
        left = allowed_delta - delta
    if not 0 < left < 1:
        return epsilon
    return min(epsilon, zcdp_epsilon(rho, left))


def _standing(budget: Budget, composition: str, epsilon: Decimal, delta: Decimal, rho: Decimal,
              granted_epsilon: Decimal, granted_delta: Decimal, oldest: datetime | None,
              lifetime: Standing | None = None) -> Standing:
    """A standing from the sums of its charges and grants."""
    with localcontext() as context:
        context.prec = 200
        allowed_delta = budget.delta + granted_delta
    spent = compose(composition, epsilon, delta, rho, allowed_delta)
    return Standing(budget, spent, delta, granted_epsilon, granted_delta, oldest, epsilon, rho, composition,
                    lifetime)


def lifetime_budget(budget: Budget, multiple: float) -> Budget:
    """The lifetime cap of a budget renewed by budgets.period: `multiple` (budgets.lifetime) times it."""
    factor = exact(multiple, "budgets.lifetime")
    with localcontext() as context:
        context.prec = 200
        context.traps[Inexact] = True
        context.traps[Rounded] = True
        return Budget(budget.scope, budget.name, budget.epsilon * factor, budget.delta * factor, lifetime=True,
                      shared=budget.shared)


_PERIOD = re.compile(r"([1-9][0-9]*)([dh])")


def period_window(period: str) -> timedelta | None:
    """budgets.period as a rolling window; None for 'never'."""
    if period == "never":
        return None
    match = _PERIOD.fullmatch(period)
    if match is None:
        raise ValueError(f"budgets.period {period!r} is neither never nor <n>d or <n>h")
    count, unit = int(match.group(1)), match.group(2)
    return timedelta(days=count) if unit == "d" else timedelta(hours=count)


def has_aggregate_role(policy: Policy | None) -> bool:
    """Whether any role of the policy can be given private answers (and so needs the ledger)."""
    if policy is None:
        return False
    return any(
        role.access == Access.AGGREGATE or Access.AGGREGATE in role.table_access.values()
        for role in policy.roles.values()
    )


def shares_answers(policy: Policy, user: str) -> bool:
    """Whether the user's private answers are shared by their role, and charged to the role's account."""
    role = policy.role_for(user)
    return role is not None and role.share_answers


def budgets_for(policy: Policy, user: str) -> tuple[str | None, list[Budget]]:
    """The user's role name (None when the policy gives the user none) and the budgets a charge counts against.

    A role that shares answers is charged on its own account: its budget (budgets.per_role, without which
    there is none) and the dataset's, never its users' own budgets, since each of its users gets every
    answer any of them was released."""
    role = policy.role_for(user)
    role_name = role.name if role is not None else None
    caps = policy.budgets
    budgets = []
    if role is not None and role.share_answers:
        if role.name not in caps.per_role:
            return role_name, []
    elif caps.per_user is not None:
        budgets.append(_budget("user", user, caps.per_user))
    if role_name is not None and role_name in caps.per_role:
        budget = _budget("role", role_name, caps.per_role[role_name])
        budgets.append(dataclasses.replace(budget, shared=role is not None and role.share_answers))
    if caps.per_dataset is not None:
        budgets.append(_budget("dataset", "", caps.per_dataset))
    return role_name, budgets


def _budget(scope: str, name: str, cap: EpsilonDelta) -> Budget:
    return Budget(scope, name, exact(cap.epsilon, f"{scope} budget epsilon"), exact(cap.delta, f"{scope} budget delta"))


def show_number(value: Decimal) -> str:
    """A decimal for people: 20, 19.9, 0.0001, 1e-7."""
    if value == 0:
        return "0"
    value = value.normalize()
    if abs(value) < Decimal("0.0001"):
        return format(value, "e")
    return format(value, "f")


# Which rows of the ledger (as {t}) count for a scope, whose name is {name}.
_SCOPE_ROWS = {
    "user": "{t}.user_name = {name}",
    "role": "{t}.role_name = {name}",
    "dataset": "({t}.kind = 'charge' OR ({t}.user_name IS NULL AND {t}.role_name IS NULL))",
}
_SUMS = """coalesce(sum(l.epsilon) FILTER (WHERE l.kind = 'charge'), 0) AS spent_epsilon,
       coalesce(sum(l.delta) FILTER (WHERE l.kind = 'charge'), 0) AS spent_delta,
       coalesce(sum(l.epsilon) FILTER (WHERE l.kind = 'grant'), 0) AS granted_epsilon,
       coalesce(sum(l.delta) FILTER (WHERE l.kind = 'grant'), 0) AS granted_delta,
       coalesce(sum(coalesce(l.rho, l.epsilon * l.epsilon * 0.5)) FILTER (WHERE l.kind = 'charge'), 0)
           AS spent_rho"""


def _recompute_sql(scope: str) -> str:
    """Set a locked row's totals (and last reset) from the ledger itself; $1 is the scope's name."""
    rows = _SCOPE_ROWS[scope].format(t="l", name="$1::text")
    return f"""
WITH last_reset AS (
    SELECT coalesce(max(l.id), 0) AS id FROM {LEDGER} AS l WHERE l.kind = 'reset' AND {rows}
), sums AS (
    SELECT {_SUMS}
    FROM {LEDGER} AS l, last_reset AS r WHERE l.id > r.id AND {rows}
)
UPDATE {LOCKS} AS b
SET spent_epsilon = s.spent_epsilon, spent_delta = s.spent_delta, granted_epsilon = s.granted_epsilon,
    granted_delta = s.granted_delta, spent_rho = s.spent_rho, reset_id = r.id
FROM sums AS s, last_reset AS r
WHERE b.scope = '{scope}' AND b.name = $1::text
RETURNING b.scope, b.name, b.spent_epsilon, b.spent_delta, b.granted_epsilon, b.granted_delta, b.spent_rho,
          b.reset_id"""


def _window_sql(scopes: tuple[str, ...]) -> str:
    """For each scope in order: its charges and grants since its last reset and within the window."""
    parts = []
    for index, scope in enumerate(scopes):
        name = {"user": "p.user_name", "role": "p.role_name"}.get(scope, "''")
        rows = _SCOPE_ROWS[scope].format(t="l", name=name)
        parts.append(f"""
SELECT {index} AS ordinal, s.*
FROM p, LATERAL (
    SELECT {_SUMS},
           min(l.recorded_at) FILTER (WHERE l.kind = 'charge') AS oldest_charge
    FROM {LEDGER} AS l
    WHERE {rows} AND l.id > p.reset_ids[{index + 1}] AND l.recorded_at > now() - p.period
) AS s""")
    return (
        "WITH p AS (SELECT $1::text AS user_name, $2::text AS role_name, $3::interval AS period, "
        "$4::bigint[] AS reset_ids)"
        + "\nUNION ALL".join(parts)
        + "\nORDER BY ordinal"
    )


_ENSURE_LOCKS = (
    f"INSERT INTO {LOCKS} (scope, name) SELECT k.scope, k.name FROM unnest($1::text[], $2::text[]) AS k(scope, name) "
    "ORDER BY k.scope, k.name ON CONFLICT (scope, name) DO NOTHING"
)
_LOCK = (
    f"SELECT l.scope, l.name, l.spent_epsilon, l.spent_delta, l.granted_epsilon, l.granted_delta, l.spent_rho, "
    f"l.reset_id "
    f"FROM {LOCKS} AS l JOIN unnest($1::text[], $2::text[]) AS k(scope, name) "
    "ON l.scope = k.scope AND l.name = k.name ORDER BY l.scope, l.name FOR UPDATE OF l"
)
# Append the charge and add it to the totals of the rows it locked.
_CHARGE = f"""
WITH charge AS (
    INSERT INTO {LEDGER} (kind, user_name, role_name, epsilon, delta, rho, note)
    VALUES ('charge', $1::text, $2::text, $3::numeric, $4::numeric, $7::numeric, $8::text) RETURNING id
)
UPDATE {LOCKS} AS b SET spent_epsilon = b.spent_epsilon + $3::numeric, spent_delta = b.spent_delta + $4::numeric,
    spent_rho = b.spent_rho + $7::numeric
FROM charge, unnest($5::text[], $6::text[]) AS k(scope, name)
WHERE b.scope = k.scope AND b.name = k.name
RETURNING charge.id"""
_GRANT = f"""
WITH entry AS (
    INSERT INTO {LEDGER} (kind, user_name, role_name, epsilon, delta, note)
    VALUES ('grant', $1::text, $2::text, $3::numeric, $4::numeric, $5::text) RETURNING id
)
UPDATE {LOCKS} AS b
SET granted_epsilon = b.granted_epsilon + $3::numeric, granted_delta = b.granted_delta + $4::numeric
FROM entry WHERE b.scope = $6::text AND b.name = $7::text
RETURNING entry.id"""
_RESET = f"""
WITH entry AS (
    INSERT INTO {LEDGER} (kind, user_name, role_name, epsilon, delta, note)
    VALUES ('reset', $1::text, $2::text, 0, 0, $3::text) RETURNING id
)
UPDATE {LOCKS} AS b
SET spent_epsilon = 0, spent_delta = 0, granted_epsilon = 0, granted_delta = 0, spent_rho = 0, reset_id = entry.id
FROM entry WHERE b.scope = $4::text AND b.name = $5::text
RETURNING entry.id"""
# Per user: the charges since the user's last reset (and within the period's window, $1, when not NULL),
# of the users in $2 (NULL: every user with a lock row, i.e. every user ever charged, granted or reset).
_ACTIVITY = f"""
WITH users AS (
    SELECT b.name AS user_name FROM {LOCKS} AS b WHERE b.scope = 'user' AND $2::text[] IS NULL
    UNION SELECT u FROM unnest($2::text[]) AS u
), resets AS (
    SELECT u.user_name, coalesce(max(l.id), 0) AS id
    FROM users AS u LEFT JOIN {LEDGER} AS l ON l.user_name = u.user_name AND l.kind = 'reset'
    GROUP BY u.user_name
)
SELECT r.user_name, count(l.id) AS charges, coalesce(sum(l.epsilon), 0) AS spent_epsilon,
       coalesce(sum(l.delta), 0) AS spent_delta, max(l.recorded_at) AS last_charge
FROM resets AS r
LEFT JOIN {LEDGER} AS l ON l.user_name = r.user_name AND l.kind = 'charge' AND l.id > r.id
     AND ($1::interval IS NULL OR l.recorded_at > now() - $1::interval)
GROUP BY r.user_name
ORDER BY r.user_name"""
_SHARED_ACTIVITY = f"""
WITH reset AS (
    SELECT coalesce(max(l.id), 0) AS id FROM {LEDGER} AS l WHERE l.kind = 'reset' AND l.role_name = $2::text
)
SELECT count(l.id) AS charges, coalesce(sum(l.epsilon), 0) AS spent_epsilon,
       coalesce(sum(l.delta), 0) AS spent_delta, max(l.recorded_at) AS last_charge
FROM reset AS r
JOIN {LEDGER} AS l ON l.id > r.id AND l.kind = 'charge' AND l.role_name = $2::text AND l.user_name = $3::text
     AND ($1::interval IS NULL OR l.recorded_at > now() - $1::interval)"""
# The last charge of one release ($4: the end of its note) to a role's shared account within the reuse window.
_PAID_BEFORE = f"""
SELECT max(l.recorded_at) FROM {LEDGER} AS l
WHERE l.role_name = $1::text AND l.user_name = $2::text AND l.kind = 'charge'
  AND l.recorded_at > now() - $3::interval AND right(l.note, length($4::text)) = $4::text"""
_CHECK = f"""
SELECT current_user, current_database(),
       (SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = '{SCHEMA}' AND c.relname IN ('budget_ledger', 'budget_lock') AND c.relkind = 'r'),
       coalesce((SELECT pg_catalog.has_schema_privilege(n.oid, 'USAGE') FROM pg_catalog.pg_namespace n
                 WHERE n.nspname = '{SCHEMA}'), false),
       (SELECT count(*) FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = '{SCHEMA}' AND NOT a.attisdropped
          AND ((c.relname = 'budget_ledger' AND a.attname = 'rho')
               OR (c.relname = 'budget_lock' AND a.attname = 'spent_rho'))) = 2
"""
_CHECK_PRIVILEGES = (
    f"SELECT pg_catalog.has_table_privilege('{LEDGER}', 'SELECT, INSERT') "
    f"AND pg_catalog.has_table_privilege('{LOCKS}', 'SELECT, INSERT, UPDATE')"
)


@dataclass(frozen=True)
class _Row:
    """A locked budget_lock row: the scope's totals since its last reset."""

    spent_epsilon: Decimal
    spent_delta: Decimal
    granted_epsilon: Decimal
    granted_delta: Decimal
    spent_rho: Decimal
    reset_id: int

    @classmethod
    def of(cls, record: asyncpg.Record) -> _Row:
        return cls(record["spent_epsilon"], record["spent_delta"], record["granted_epsilon"],
                   record["granted_delta"], record["spent_rho"], record["reset_id"])


class _LocksMissing(Exception):
    """A lock row vanished between its creation and the charge; create it again."""


class PostgresLedger:
    """The ledger in the upstream database, reached on a small pool of pgshroud's own connections.

    `policy` is the policy, or a callable returning the current one (reloads
    swap it). The pool is made on first use, on the running event loop, which
    every later call must share.
    """

    def __init__(
        self,
        conninfo: str,
        policy: Policy | Callable[[], Policy | None],
        *,
        max_connections: int = 5,
        timeout: float = 60.0,
    ) -> None:
        self.conninfo = conninfo
        self._policy = policy if callable(policy) else (lambda: policy)
        self.max_connections = max_connections
        self.timeout = timeout
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Lock | None = None
        self._known_locks: set[tuple[str, str]] = set()
        # The lock rows whose totals this process has recomputed (or kept)
        # since it took up the policy object `_fresh_under`.
        self._fresh: set[tuple[str, str]] = set()
        self._fresh_under: Policy | None = None

    # -- the session's side --------------------------------------------------

    async def charge(self, user: str, cost: Cost) -> Refuse | None:
        """Commit `cost` to every budget of `user`, or return why not. Raises when the ledger cannot be reached."""
        outcome = await self.charge_standing(user, cost)
        return outcome if isinstance(outcome, Refuse) else None

    async def charge_standing(self, user: str, cost: Cost,
                              release: SharedRelease | None = None) -> Refuse | Charged:
        """As `charge`, but a committed charge returns where each of the user's budgets stands with it
        counted (as `standing` would return right after), read in the charge's own transaction: the
        session tells the analyst what is left without a second round trip. With `release`, a charge to a
        role's shared account records its fingerprint and returns a `Charged` that says whether the role
        already paid for it while its answer would be kept (answer_cache.AnswerCache.release_of)."""
        epsilon, delta = exact(cost.epsilon, "epsilon"), exact(cost.delta, "delta")
        rho = charge_rho(cost, epsilon)
        policy = self._current_policy()
        role_name, budgets = budgets_for(policy, user)
        shared = shares_answers(policy, user)
        if not budgets:
            return _no_budget(user, role_name, shared)
        window = period_window(policy.budgets.period)
        keys = _lock_keys(user, budgets, shared)
        # A shared answer is the role's: its row names no user (see SHARED_ACCOUNT), and its note who asked.
        payer, note = (SHARED_ACCOUNT, f'shared answer of role "{role_name}", asked by user "{user}"') if shared \
            else (user, None)
        if not shared:
            release = None
        if release is not None:
            note += f"; release {release.fingerprint}"

        async def body(conn: asyncpg.Connection, rows: dict[tuple[str, str], _Row]) -> Refuse | Charged:
            standings = await self._standings(conn, user, role_name, budgets, window, rows)
            short = [each for each in _with_lifetimes(standings) if not _covers(each, epsilon, delta, rho)]
            if short:
                return _exhausted(short, standings, epsilon, delta, rho, policy.budgets, window)
            before = None
            if release is not None:
                # Under the role's lock: a release paid by another process has committed, or waits for this.
                before = await conn.fetchval(_PAID_BEFORE, role_name, SHARED_ACCOUNT,
                                             timedelta(seconds=release.reuse_seconds),
                                             f"; release {release.fingerprint}")
            charged = await conn.fetch(_CHARGE, payer, role_name, epsilon, delta, [k[0] for k in keys],
                                       [k[1] for k in keys], rho, note)
            if len(charged) != len(keys):
                raise RuntimeError(f"a charge updated {len(charged)} of its {len(keys)} {LOCKS} rows")
            result = Charged(_with_charge(standing, epsilon, delta, rho, window is not None) for standing in standings)
            result.paid_before = before
            return result

        return await self._transaction(policy, keys, body)

    # -- the administrator's side ---------------------------------------------

    async def standing(self, user: str) -> list[Standing]:
        """Where each of the user's budgets stands now (one per budget of the policy that applies to the user)."""
        policy = self._current_policy()
        role_name, budgets = budgets_for(policy, user)
        if not budgets:
            return []
        window = period_window(policy.budgets.period)

        async def body(conn: asyncpg.Connection, rows: dict[tuple[str, str], _Row]) -> list[Standing]:
            return await self._standings(conn, user, role_name, budgets, window, rows)

        return await self._transaction(policy, _lock_keys(user, budgets, shares_answers(policy, user)), body)

    async def scope_standing(self, scope: str, name: str) -> Standing | None:
        """Where one scope's budget stands now: a user's, a role's or the dataset's ('' for its name);
        None when the policy does not cap that scope."""
        policy = self._current_policy()
        caps = policy.budgets
        if scope == "dataset":
            name, cap = "", caps.per_dataset
        elif scope == "role":
            cap = caps.per_role.get(name)
        elif scope == "user":
            cap = caps.per_user
        else:
            raise ValueError(f"a budget scope is user, role or dataset, not {scope!r}")
        if cap is None:
            return None
        budget = _budget(scope, name, cap)
        if scope == "role" and name in policy.roles and policy.roles[name].share_answers:
            budget = dataclasses.replace(budget, shared=True)
        window = period_window(caps.period)

        async def body(conn: asyncpg.Connection, rows: dict[tuple[str, str], _Row]) -> Standing:
            user = name if scope == "user" else ""
            role_name = name if scope == "role" else None
            return (await self._standings(conn, user, role_name, [budget], window, rows))[0]

        return await self._transaction(policy, [(scope, name)], body)

    async def activity(self, users: list[str] | None = None) -> dict[str, Activity]:
        """Per user (all users the ledger has rows of, or `users`): the charges that count in the current
        period (since the user's last reset, within budgets.period's window) and the last of them.
        Reads the ledger only: no locks are taken."""
        window = period_window(self._current_policy().budgets.period)
        pool = await self._open()
        async with pool.acquire() as conn:
            rows = await conn.fetch(_ACTIVITY, window, users)
        found = {r["user_name"]: Activity(r["charges"], r["spent_epsilon"], r["spent_delta"], r["last_charge"])
                 for r in rows}
        for user in users or ():
            found.setdefault(user, Activity(0, Decimal(0), Decimal(0), None))
        return found

    async def shared_activity(self, role_name: str) -> Activity:
        """The charges to a role's shared account that count in the current period (since the role's last
        reset, within budgets.period's window), and the last of them. Reads the ledger only."""
        window = period_window(self._current_policy().budgets.period)
        pool = await self._open()
        async with pool.acquire() as conn:
            row = await conn.fetchrow(_SHARED_ACTIVITY, window, role_name, SHARED_ACCOUNT)
        return Activity(row["charges"], row["spent_epsilon"], row["spent_delta"], row["last_charge"])

    async def grant(self, scope: str, name: str, epsilon: float | Decimal, delta: float | Decimal = 0,
                    note: str | None = None) -> int:
        """Append a grant of (epsilon, delta) to a user's, a role's or the dataset's budget; returns its id."""
        amounts = (exact(epsilon, "epsilon"), exact(delta, "delta"))
        return await self._adjust(_GRANT, scope, name, amounts, note)

    async def reset(self, scope: str, name: str, note: str | None = None) -> int:
        """Append a reset: the scope's earlier charges and grants count no more. Returns its id."""
        return await self._adjust(_RESET, scope, name, (), note)

    async def _adjust(self, statement: str, scope: str, name: str, amounts: tuple[Decimal, ...],
                      note: str | None) -> int:
        if scope not in _SCOPE_ROWS:
            raise ValueError(f"a budget scope is user, role or dataset, not {scope!r}")
        if scope == "dataset":
            name = ""
        elif not name:
            raise ValueError(f"a {scope} budget needs the {scope}'s name")
        user_name = name if scope == "user" else None
        role_name = name if scope == "role" else None

        async def body(conn: asyncpg.Connection, rows: dict[tuple[str, str], _Row]) -> int:
            entry = await conn.fetchval(statement, user_name, role_name, *amounts, note, scope, name)
            if entry is None:
                raise RuntimeError(f"the {LOCKS} row of {scope} {name!r} was not updated")
            return entry

        return await self._transaction(self._current_policy(), [(scope, name)], body)

    # -- start-up and shutdown ------------------------------------------------

    async def check(self) -> None:
        """Raise ConfigError unless the ledger's tables exist and pgshroud's own user may use them."""
        pool = await self._open()
        async with pool.acquire() as conn:
            user, database, tables, usage, upgraded = await conn.fetchrow(_CHECK)
            if tables != ["budget_ledger", "budget_lock"]:
                raise ConfigError(
                    f'the privacy budget ledger is not set up in database "{database}" (no table {LEDGER}), and '
                    f"the policy's aggregate roles are charged to it: run pgshroud setup --upstream DSN, as the "
                    f"owner the {SCHEMA} schema is to have"
                )
            if not upgraded:
                raise ConfigError(
                    f'the privacy budget ledger in database "{database}" predates the zCDP accounting (no column '
                    f"{LEDGER}.rho): run pgshroud setup --upstream DSN again, as the owner of schema {SCHEMA}, to "
                    f"upgrade it"
                )
            if not usage or not await conn.fetchval(_CHECK_PRIVILEGES):
                raise ConfigError(
                    f'user "{user}" may not use the privacy budget ledger in database "{database}" ({LEDGER} '
                    f"needs SELECT and INSERT, {LOCKS} SELECT, INSERT and UPDATE): connect pgshroud's own "
                    f"connections (the --upstream DSN's user, or the policy's admin_dsn) as the owner of schema "
                    f"{SCHEMA}"
                )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # -- inside ------------------------------------------------------------------

    def _current_policy(self) -> Policy:
        policy = self._policy()
        if policy is None:
            raise RuntimeError("the ledger has no policy to take budgets from")
        return policy

    async def _open(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    **asyncpg_arguments(self.conninfo), min_size=1, max_size=self.max_connections,
                    server_settings=dict(_SETTINGS), command_timeout=self.timeout,
                    timeout=min(self.timeout, 30.0),
                )
            return self._pool

    async def _transaction(self, policy: Policy, keys: list[tuple[str, str]], body):
        """Run `body(conn, rows)` in one READ COMMITTED transaction holding the lock rows of `keys`
        (`rows`: their totals, recomputed from the ledger when this process is not sure of them), and commit."""
        if self._fresh_under is not policy:
            self._fresh, self._fresh_under = set(), policy
        pool = await self._open()
        for attempt in (1, 2, 3):
            committing = False
            try:
                async with pool.acquire() as conn:
                    missing = [key for key in keys if key not in self._known_locks]
                    if missing:
                        await conn.execute(_ENSURE_LOCKS, [k[0] for k in missing], [k[1] for k in missing])
                        self._known_locks.update(missing)
                    transaction = conn.transaction(isolation="read_committed")
                    await transaction.start()
                    try:
                        locked = await conn.fetch(_LOCK, [k[0] for k in keys], [k[1] for k in keys])
                        if len(locked) != len(keys):
                            self._known_locks.difference_update(keys)
                            raise _LocksMissing
                        rows = {(record["scope"], record["name"]): _Row.of(record) for record in locked}
                        stale = [key for key in keys if key not in self._fresh]
                        for scope, name in stale:
                            rows[scope, name] = _Row.of(await conn.fetchrow(_recompute_sql(scope), name))
                        result = await body(conn, rows)
                    except BaseException:
                        await transaction.rollback()
                        raise
                    committing = True
                    await transaction.commit()
                    if self._fresh_under is policy:
                        self._fresh.update(stale)
                    return result
            except _LocksMissing:
                if attempt == 3:
                    raise RuntimeError(f"the lock rows of {LOCKS} keep disappearing") from None
            except _RETRYABLE as exc:
                # Once COMMIT is sent, the outcome is unknown: never retry (a
                # charge may have committed) and never release (the caller
                # refuses), so nothing is released unpaid.
                if committing or attempt == 3:
                    raise
                log.warning("ledger transaction failed (%s); trying again", type(exc).__name__)
        raise AssertionError("unreachable")

    async def _standings(self, conn: asyncpg.Connection, user: str, role_name: str | None, budgets: list[Budget],
                         window: timedelta | None, rows: dict[tuple[str, str], _Row]) -> list[Standing]:
        """Each budget's standing: from its locked row, or for a rolling period from the ledger's rows in it."""
        caps = self._current_policy().budgets
        composition = caps.composition
        locked = [rows[budget.scope, budget.name] for budget in budgets]

        def since_reset(budget: Budget, row: _Row) -> Standing:
            return _standing(budget, composition, row.spent_epsilon, row.spent_delta, row.spent_rho,
                             row.granted_epsilon, row.granted_delta, None)

        if window is None:
            return [since_reset(budget, row) for budget, row in zip(budgets, locked)]
        sums = await conn.fetch(_window_sql(tuple(budget.scope for budget in budgets)), user, role_name, window,
                                [row.reset_id for row in locked])
        return [_standing(budget, composition, s["spent_epsilon"], s["spent_delta"], s["spent_rho"],
                          s["granted_epsilon"], s["granted_delta"], s["oldest_charge"],
                          None if caps.lifetime is None else since_reset(lifetime_budget(budget, caps.lifetime), row))
                for budget, s, row in zip(budgets, sums, locked)]


def _with_lifetimes(standings: list[Standing]) -> list[Standing]:
    """Each standing, followed by its lifetime cap's when it has one: every cap a charge must fit."""
    return [each for standing in standings for each in (standing, standing.lifetime) if each is not None]


def _covers(standing: Standing, epsilon: Decimal, delta: Decimal, rho: Decimal) -> bool:
    """Whether the budget covers the charge: composed epsilon after it <= cap + grants, and the deltas' sum after it
    <= cap + grants, exactly (a rounded sum raises). Basic composition: spent + cost <= cap + grants. Only the
    standing itself is checked, not its lifetime (see _with_lifetimes)."""
    with localcontext() as context:
        context.prec = 200
        context.traps[Inexact] = True
        context.traps[Rounded] = True
        after_delta = standing.spent_delta + delta
        if after_delta > standing.allowed_delta:
            return False
        after = compose(standing.composition, standing.summed_epsilon + epsilon, after_delta,
                        standing.spent_rho + rho, standing.allowed_delta)
        return after <= standing.allowed_epsilon


def _with_charge(standing: Standing, epsilon: Decimal, delta: Decimal, rho: Decimal, rolling: bool) -> Standing:
    """A standing with a charge just committed counted in it (exactly: _covers checked the sums). In a
    rolling period, a first charge is the oldest that counts (its time is about now)."""
    with localcontext() as context:
        context.prec = 200
        oldest = standing.oldest_charge
        if rolling and oldest is None:
            oldest = datetime.now(timezone.utc)
        lifetime = None if standing.lifetime is None else _with_charge(standing.lifetime, epsilon, delta, rho, False)
        return _standing(standing.budget, standing.composition, standing.summed_epsilon + epsilon,
                         standing.spent_delta + delta, standing.spent_rho + rho, standing.granted_epsilon,
                         standing.granted_delta, oldest, lifetime)


def _lock_keys(user: str, budgets: list[Budget], shared: bool = False) -> list[tuple[str, str]]:
    """The lock rows a charge takes: the user's (a grant or reset of the user takes it too) unless the
    charge is to a role's shared account, and each capped scope's."""
    keys = {(budget.scope, budget.name) for budget in budgets}
    if not shared:
        keys.add(("user", user))
    return sorted(keys)


def _exhausted(short: list[Standing], standings: list[Standing], epsilon: Decimal, delta: Decimal, rho: Decimal,
               caps, window: timedelta | None) -> Refuse:
    period = caps.period
    with localcontext() as context:
        context.prec = 60
        left = "; ".join(
            f"{s.budget.describe()} has epsilon {show_number(max(Decimal(0), s.allowed_epsilon - s.spent_epsilon))} "
            f"of {show_number(s.allowed_epsilon)} left (delta "
            f"{show_number(max(Decimal(0), s.allowed_delta - s.spent_delta))} of "
            f"{show_number(s.allowed_delta)})"
            for s in short
        )
        lowest = min(s.remaining_epsilon for s in standings)
    cost = f"epsilon {show_number(epsilon)}" + (f" and delta {show_number(delta)}" if delta else "")
    if caps.composition == "zcdp":
        cost += f" (rho {show_number(rho)} under zCDP composition)"
    lifelong = [s for s in short if s.budget.lifetime]
    if window is None:
        renewal = f"spent budget does not return (budgets.period is {period})"
    elif lifelong and len(lifelong) == len(short):
        renewal = (f"the lifetime budget, {show_number(exact(caps.lifetime, 'lifetime'))} times the {period} "
                   f"budget, does not return (budgets.lifetime)")
    else:
        oldest = [s.oldest_charge for s in short if s.oldest_charge is not None]
        renewal = f"spent budget returns as its charges leave the {period} window"
        if oldest:
            renewal += f", the oldest at {(min(oldest) + window).strftime('%Y-%m-%d %H:%M:%S %Z').strip()}"
        if lifelong:
            renewal += ", but the lifetime budget (budgets.lifetime) does not return"
    hint = "More budget can only be granted by pgshroud's administrator."
    if caps.composition == "zcdp":
        if lowest > 0:
            hint = ("A smaller epsilon (SET pgshroud.epsilon) costs less, at the price of more noise; more budget "
                    "can only be granted by pgshroud's administrator.")
    elif lowest > 0 and lowest < epsilon:
        hint = (f"A smaller epsilon (SET pgshroud.epsilon, at most {show_number(lowest)} now) costs less, at the "
                f"price of more noise; more budget can only be granted by pgshroud's administrator.")
    return Refuse(EXHAUSTED, f"privacy budget exhausted: {left}; this query costs {cost}; {renewal}", hint)


def _no_budget(user: str, role_name: str | None, shared: bool = False) -> Refuse:
    if shared:
        return Refuse(
            NO_BUDGET,
            f'no privacy budget applies to role "{role_name}", whose users share its answers, so no private answer '
            f'can be charged',
            f"The policy needs budgets.per_role.{role_name}: shared answers are charged to the role's budget.",
        )
    keys = "budgets.per_user" + (f", budgets.per_role.{role_name}" if role_name else "") + " or budgets.per_dataset"
    return Refuse(
        NO_BUDGET,
        f'no privacy budget applies to user "{user}", so no private answer can be charged',
        f"The policy needs {keys}: without a cap, privacy loss would grow without limit.",
    )
