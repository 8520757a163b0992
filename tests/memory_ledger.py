"""A privacy budget ledger kept in memory, for tests that need a ledger but not its PostgreSQL tables.

With a policy it follows the same accounting rules as PostgresLedger
(pgshroud.policies.accounting: the budgets that apply to a user, basic or
zCDP composition, exact decimals; the same refusals, 53400 and 55000) and
passes the same contract (tests/e2e/test_ledger_contract.py). Its budgets
never renew: a policy with a budgets.period is not supported. Charges are
serialized by one asyncio lock, so concurrent charges on its event loop never
overspend.

Without a policy it has no limit: it records every charge, refuses none, and
reports no standings, so a session's notice then says what a release cost but
not what is left.

`charges` lists every committed charge as asked, (user, cost); `costs` their costs alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal, Inexact, localcontext

from pgshroud.policies.accounting import (
    Budget,
    ChargeEvent,
    Standing,
    budgets_for,
    shares_answers,
    standing_of,
    with_charge,
    with_lifetimes,
)
from pgshroud.policies.accounting import covers as budget_covers
from pgshroud.policies.model import Budgets, EpsilonDelta, Policy
from pgshroud.proxy.budget.ledger import SHARED_ACCOUNT
from pgshroud.proxy.budget.protocol import Charged, SharedRelease
from pgshroud.proxy.budget.refusals import exhausted, no_budget
from pgshroud.rewriter.plans import Cost, Refuse


def capped(epsilon: float, delta: float = 0.0) -> Policy:
    """A policy with no roles whose one budget is the dataset's: (epsilon, delta) for all charges together."""
    return Policy(source="memory ledger", roles={}, default_role=None, protected_tables={},
                  public_tables=frozenset(), budgets=Budgets(per_dataset=EpsilonDelta(epsilon, delta)))


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One committed charge, as a ledger row: who pays (SHARED_ACCOUNT for a role's shared account)."""

    user_name: str
    role_name: str | None
    event: ChargeEvent
    at: datetime
    release: str | None = None  # the fingerprint of a shared release


class MemoryLedger:
    """A Ledger (pgshroud.proxy.budget.Ledger) in memory. `latency`: seconds each charge takes, as a
    durable commit would. `policy` may be replaced between charges, as a reload does."""

    def __init__(self, policy: Policy | None = None, *, latency: float = 0.0) -> None:
        if policy is not None and policy.budgets.period != "never":
            raise ValueError("the memory ledger's budgets never renew: use budgets.period never")
        self.policy = policy
        self.latency = latency
        self.charges: list[tuple[str, Cost]] = []
        self._entries: list[_Entry] = []
        self._lock = asyncio.Lock()

    @property
    def costs(self) -> list[Cost]:
        return [cost for _, cost in self.charges]

    async def charge(self, user: str, cost: Cost) -> Refuse | None:
        outcome = await self.charge_standing(user, cost)
        return outcome if isinstance(outcome, Refuse) else None

    async def charge_standing(self, user: str, cost: Cost,
                              release: SharedRelease | None = None) -> Refuse | Charged:
        event = ChargeEvent.of(cost.epsilon, cost.delta)
        async with self._lock:
            await asyncio.sleep(self.latency)
            if self.policy is None:
                self.charges.append((user, cost))
                return Charged()
            policy = self.policy
            role_name, budgets = budgets_for(policy, user)
            shared = shares_answers(policy, user)
            if not budgets:
                return no_budget(user, role_name, shared)
            standings = [self._standing(budget) for budget in budgets]
            short = [each for each in with_lifetimes(standings) if not budget_covers(each, event)]
            if short:
                return exhausted(short, standings, event, policy.budgets)
            now = datetime.now(UTC)
            fingerprint = release.fingerprint if shared and release is not None else None
            result = Charged(with_charge(standing, event, False) for standing in standings)
            if shared and release is not None:
                result.paid_before = self._paid_before(role_name, release, now)
            self._entries.append(_Entry(SHARED_ACCOUNT if shared else user, role_name, event, now, fingerprint))
            self.charges.append((user, cost))
            return result

    async def standing(self, user: str) -> list[Standing]:
        async with self._lock:
            if self.policy is None:
                return []
            return [self._standing(budget) for budget in budgets_for(self.policy, user)[1]]

    def _standing(self, budget: Budget) -> Standing:
        """Where `budget` stands: the sums of the charges its scope counts (as the ledger's rows are counted)."""
        assert self.policy is not None
        counted = [entry.event for entry in self._entries if _counts(budget, entry)]
        with localcontext() as context:
            context.prec = 200  # exact, as numeric sums are in PostgreSQL
            context.traps[Inexact] = True
            epsilon = sum((event.epsilon for event in counted), Decimal(0))
            delta = sum((event.delta for event in counted), Decimal(0))
            rho = sum((event.rho for event in counted), Decimal(0))
        return standing_of(budget, self.policy.budgets.composition, epsilon, delta, rho, Decimal(0), Decimal(0), None)

    def _paid_before(self, role_name: str | None, release: SharedRelease, now: datetime) -> datetime | None:
        """When the role's shared account last paid for this release while its answer would still be kept."""
        since = now - timedelta(seconds=release.reuse_seconds)
        paid = [entry.at for entry in self._entries if entry.release == release.fingerprint
                and entry.role_name == role_name and entry.at > since]
        return max(paid, default=None)


def _counts(budget: Budget, entry: _Entry) -> bool:
    """Whether a charge counts against a budget: its user's, its role's, and every charge the dataset's."""
    if budget.scope == "user":
        return entry.user_name == budget.name
    if budget.scope == "role":
        return entry.role_name == budget.name
    return True
