"""The privacy budget ledger: durable, exact, and never overspent.

The accounting rules (what a charge costs, how charges compose, whether a
budget covers the next one) are policies/accounting.py's; this module keeps
the charges in PostgreSQL and serializes them, and refusals.py words its
refusals.

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
   epsilon of accounting.compose (rho adds, converted at the delta the summed deltas
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import TypeVar

import asyncpg

from pgshroud.policies.accounting import (
    Budget,
    ChargeEvent,
    Standing,
    budgets_for,
    covers,
    exact,
    lifetime_budget,
    period_window,
    scope_budget,
    shares_answers,
    standing_of,
    with_charge,
    with_lifetimes,
)
from pgshroud.policies.model import Policy
from pgshroud.policies.setup_sql import SCHEMA
from pgshroud.proxy.budget.protocol import Activity, Charged, SharedRelease
from pgshroud.proxy.budget.refusals import exhausted, no_budget
from pgshroud.proxy.ops.connect import asyncpg_arguments
from pgshroud.proxy.ops.errors import ConfigError
from pgshroud.rewriter.plans import Cost, Refuse

log = logging.getLogger("pgshroud.ledger")

LEDGER = f"{SCHEMA}.budget_ledger"
LOCKS = f"{SCHEMA}.budget_lock"
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


T = TypeVar("T")
# What runs inside a ledger transaction: given the connection and the locked rows' totals.
_Body = Callable[[asyncpg.Connection, dict[tuple[str, str], "_Row"]], Awaitable[T]]


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
        event = ChargeEvent.of(cost.epsilon, cost.delta)
        policy = self._current_policy()
        role_name, budgets = budgets_for(policy, user)
        shared = shares_answers(policy, user)
        if not budgets:
            return no_budget(user, role_name, shared)
        window = period_window(policy.budgets.period)
        keys = _lock_keys(user, budgets, shared)
        # A shared answer is the role's: its row names no user (see SHARED_ACCOUNT), and its note who asked.
        payer, note = user, None
        if shared:
            payer, note = SHARED_ACCOUNT, f'shared answer of role "{role_name}", asked by user "{user}"'
            if release is not None:
                note += f"; release {release.fingerprint}"
        else:
            release = None

        async def body(conn: asyncpg.Connection, rows: dict[tuple[str, str], _Row]) -> Refuse | Charged:
            standings = await self._standings(conn, user, role_name, budgets, window, rows)
            short = [each for each in with_lifetimes(standings) if not covers(each, event)]
            if short:
                return exhausted(short, standings, event, policy.budgets)
            before = None
            if release is not None:
                # Under the role's lock: a release paid by another process has committed, or waits for this.
                before = await conn.fetchval(_PAID_BEFORE, role_name, SHARED_ACCOUNT,
                                             timedelta(seconds=release.reuse_seconds),
                                             f"; release {release.fingerprint}")
            charged = await conn.fetch(_CHARGE, payer, role_name, event.epsilon, event.delta, [k[0] for k in keys],
                                       [k[1] for k in keys], event.rho, note)
            if len(charged) != len(keys):
                raise RuntimeError(f"a charge updated {len(charged)} of its {len(keys)} {LOCKS} rows")
            result = Charged(with_charge(standing, event, window is not None) for standing in standings)
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
        budget = scope_budget(scope, name, cap)
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
            return int(entry)

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

    async def _transaction(self, policy: Policy, keys: list[tuple[str, str]], body: _Body[T]) -> T:
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
            return standing_of(budget, composition, row.spent_epsilon, row.spent_delta, row.spent_rho,
                             row.granted_epsilon, row.granted_delta, None)

        if window is None:
            return [since_reset(budget, row) for budget, row in zip(budgets, locked)]
        sums = await conn.fetch(_window_sql(tuple(budget.scope for budget in budgets)), user, role_name, window,
                                [row.reset_id for row in locked])
        return [standing_of(budget, composition, s["spent_epsilon"], s["spent_delta"], s["spent_rho"],
                          s["granted_epsilon"], s["granted_delta"], s["oldest_charge"],
                          None if caps.lifetime is None else since_reset(lifetime_budget(budget, caps.lifetime), row))
                for budget, s, row in zip(budgets, sums, locked)]


def _lock_keys(user: str, budgets: list[Budget], shared: bool = False) -> list[tuple[str, str]]:
    """The lock rows a charge takes: the user's (a grant or reset of the user takes it too) unless the
    charge is to a role's shared account, and each capped scope's."""
    keys = {(budget.scope, budget.name) for budget in budgets}
    if not shared:
        keys.add(("user", user))
    return sorted(keys)
