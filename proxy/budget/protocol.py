"""What pgshroud needs of a privacy budget ledger, and the values a ledger returns.

`Ledger` is what a session needs: charge a release before it is sent, and
tell the analyst where their budgets stand. Every ledger has all of it;
nothing is probed for. `LedgerAdministration` adds what the `pgshroud`
commands need to check the ledger at start, show it, and grant or reset
budgets. `PostgresLedger` (ledger.py) is both; a test ledger may be only a
`Ledger`, and tests/e2e/test_ledger_contract.py holds every ledger to the
same contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from pgshroud.policies.accounting import Standing
from pgshroud.rewriter.plans import Cost, Refuse


@dataclass(frozen=True)
class SharedRelease:
    """The release a charge to a role's shared account pays for: the answer cache's fingerprint of its
    statement and settings (the same in every pgshroud process) and how long its answer is kept."""

    fingerprint: str
    reuse_seconds: float


class Charged(list[Standing]):
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


class Ledger(Protocol):
    """What a session needs of a ledger. Each call either completes or raises; a raise means that
    nothing is known to be charged, and the session releases nothing (58000)."""

    async def charge(self, user: str, cost: Cost) -> Refuse | None:
        """Commit `cost` to every budget of `user` durably and return None, or return why not
        (53400 when a budget is exhausted, 55000 when none applies) and commit nothing."""
        ...

    async def charge_standing(self, user: str, cost: Cost,
                              release: SharedRelease | None = None) -> Refuse | Charged:
        """As `charge`; a committed charge returns where each of the user's budgets stands with it
        counted (what `standing` returns right after). `release`: the answer cache's record of a release
        a role's users share (AnswerCache.release_of), so that the result can say when the role's
        shared account paid for it already (`Charged.paid_before`)."""
        ...

    async def standing(self, user: str) -> list[Standing]:
        """Where each budget a charge of `user` counts against stands now (empty when none applies)."""
        ...


class LedgerAdministration(Ledger, Protocol):
    """What the `pgshroud serve` start-up check and `pgshroud budget show | grant | reset` need besides."""

    async def check(self) -> None:
        """Raise ConfigError unless the ledger is set up and may be used."""
        ...

    async def scope_standing(self, scope: str, name: str) -> Standing | None:
        """Where one scope's budget ('user', 'role' or 'dataset' with name '') stands; None when uncapped."""
        ...

    async def activity(self, users: list[str] | None = None) -> dict[str, Activity]:
        """Per user (every user the ledger knows, or `users`): the charges that count in the current period."""
        ...

    async def shared_activity(self, role_name: str) -> Activity:
        """The charges to a role's shared account that count in the current period."""
        ...

    async def grant(self, scope: str, name: str, epsilon: float | Decimal, delta: float | Decimal = 0,
                    note: str | None = None) -> int:
        """Add (epsilon, delta) to a scope's budget; returns the entry's id."""
        ...

    async def reset(self, scope: str, name: str, note: str | None = None) -> int:
        """Make a scope's earlier charges and grants count no more; returns the entry's id."""
        ...

    async def close(self) -> None:
        """Release the ledger's connections."""
        ...
