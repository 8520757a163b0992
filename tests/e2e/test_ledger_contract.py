"""The contract every privacy budget ledger keeps (pgshroud.proxy.budget.Ledger).

The same scenarios run against PostgresLedger, on a fresh database set up
by `pgshroud setup`, and against the tests' in-memory ledger
(tests/memory_ledger.py), so that a test that uses the in-memory one tests
what the real one does: a charge within the budget is committed, a charge
that does not fit is refused (53400) and nothing is overspent, also when
charges run concurrently; sums are exact decimals (200 charges of 0.1 fill a
budget of 20); zCDP composition spends what policies.accounting.compose
says; no budget means no charge (55000); `charge_standing` returns what
`standing` says right after; a role's shared account says when it already
paid for a release.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from decimal import Decimal

import pytest

from pgshroud import sqlstate
from pgshroud.policies.accounting import compose
from pgshroud.policies.model import Access, Budgets, EpsilonDelta, Policy, Role
from pgshroud.proxy.budget import Ledger
from pgshroud.proxy.budget.ledger import PostgresLedger
from pgshroud.proxy.budget.protocol import Charged, SharedRelease
from pgshroud.rewriter.plans import Cost, Refuse
from tests.memory_ledger import MemoryLedger

LedgerOf = Callable[[Policy], AbstractAsyncContextManager[Ledger]]


def make_policy(*, per_user: EpsilonDelta | None = None, per_role: dict[str, EpsilonDelta] | None = None,
                per_dataset: EpsilonDelta | None = None, composition: str = "basic",
                share_answers: bool = False) -> Policy:
    """analyst: alice, bob (sharing answers when asked); auditor: carol."""
    roles = {
        "analyst": Role("analyst", Access.AGGREGATE, ("alice", "bob"), share_answers=share_answers),
        "auditor": Role("auditor", Access.AGGREGATE, ("carol",)),
    }
    return Policy(source="contract", roles=roles, default_role=None, protected_tables={},
                  public_tables=frozenset(),
                  budgets=Budgets(per_user, per_role or {}, per_dataset, composition=composition))


@pytest.fixture(params=["postgres", "memory"])
def ledger_of(request: pytest.FixtureRequest) -> LedgerOf:
    """A ledger of each kind under a given policy, open for the length of an `async with`."""
    if request.param == "memory":
        @asynccontextmanager
        async def memory(policy: Policy) -> AsyncIterator[Ledger]:
            yield MemoryLedger(policy)

        return memory
    dsn = request.getfixturevalue("databases")()

    @asynccontextmanager
    async def postgres(policy: Policy) -> AsyncIterator[Ledger]:
        ledger = PostgresLedger(dsn, policy)
        try:
            yield ledger
        finally:
            await ledger.close()

    return postgres


def run(ledger_of: LedgerOf, policy: Policy, scenario: Callable[[Ledger], Awaitable[None]]) -> None:
    async def main() -> None:
        async with ledger_of(policy) as ledger:
            await scenario(ledger)

    asyncio.run(main())


def refused(outcome: Refuse | None, code: str) -> Refuse:
    assert isinstance(outcome, Refuse), outcome
    assert outcome.sqlstate == code, outcome
    return outcome


def test_a_charge_within_the_budget_is_committed(ledger_of: LedgerOf) -> None:
    async def scenario(ledger: Ledger) -> None:
        assert await ledger.charge("alice", Cost(0.4, 1e-6)) is None
        [standing] = await ledger.standing("alice")
        assert (standing.budget.scope, standing.budget.name) == ("user", "alice")
        assert (standing.spent_epsilon, standing.spent_delta) == (Decimal("0.4"), Decimal("0.000001"))
        assert (standing.remaining_epsilon, standing.remaining_delta) == (Decimal("0.6"), Decimal("0.000009"))
        assert await ledger.standing("bob") != [standing]  # each user has a budget of their own
        assert (await ledger.standing("bob"))[0].spent_epsilon == 0

    run(ledger_of, make_policy(per_user=EpsilonDelta(1.0, 1e-5)), scenario)


def test_a_charge_that_does_not_fit_is_refused_and_commits_nothing(ledger_of: LedgerOf) -> None:
    async def scenario(ledger: Ledger) -> None:
        assert await ledger.charge("alice", Cost(0.4)) is None
        assert await ledger.charge("alice", Cost(0.4)) is None
        refusal = refused(await ledger.charge("alice", Cost(0.4)), sqlstate.CONFIGURATION_LIMIT_EXCEEDED)
        assert refusal.message.startswith('privacy budget exhausted: user "alice" has epsilon 0.2 of 1 left')
        assert "this query costs epsilon 0.4" in refusal.message
        refused(await ledger.charge("alice", Cost(0.1, 2e-5)), sqlstate.CONFIGURATION_LIMIT_EXCEEDED)  # delta
        [standing] = await ledger.standing("alice")
        assert (standing.spent_epsilon, standing.spent_delta) == (Decimal("0.8"), Decimal(0))
        assert await ledger.charge("alice", Cost(0.2)) is None  # exactly what is left
        assert (await ledger.standing("alice"))[0].remaining_epsilon == 0

    run(ledger_of, make_policy(per_user=EpsilonDelta(1.0, 1e-5)), scenario)


def test_sums_are_exact(ledger_of: LedgerOf) -> None:
    async def scenario(ledger: Ledger) -> None:
        for _ in range(200):
            assert await ledger.charge("alice", Cost(0.1)) is None
        refused(await ledger.charge("alice", Cost(0.1)), sqlstate.CONFIGURATION_LIMIT_EXCEEDED)
        [standing] = await ledger.standing("alice")
        assert standing.spent_epsilon == Decimal(20)
        assert str(standing.spent_epsilon.normalize()) == "2E+1"

    run(ledger_of, make_policy(per_user=EpsilonDelta(20.0)), scenario)


def test_every_budget_that_applies_is_checked(ledger_of: LedgerOf) -> None:
    async def scenario(ledger: Ledger) -> None:
        assert await ledger.charge("alice", Cost(0.5)) is None
        assert await ledger.charge("bob", Cost(0.5)) is None
        refusal = refused(await ledger.charge("bob", Cost(0.5)), sqlstate.CONFIGURATION_LIMIT_EXCEEDED)
        assert 'role "analyst", shared by its users, has epsilon 0.2 of 1.2 left' in refusal.message
        assert await ledger.charge("carol", Cost(0.5)) is None
        refusal = refused(await ledger.charge("carol", Cost(0.5)), sqlstate.CONFIGURATION_LIMIT_EXCEEDED)
        assert "the dataset, shared by all users, has epsilon 0.3 of 1.8 left" in refusal.message
        scopes = [(s.budget.scope, s.budget.name, s.spent_epsilon) for s in await ledger.standing("bob")]
        assert scopes == [("user", "bob", Decimal("0.5")), ("role", "analyst", Decimal("1.0")),
                          ("dataset", "", Decimal("1.5"))]

    policy = make_policy(per_user=EpsilonDelta(5.0), per_role={"analyst": EpsilonDelta(1.2)},
                         per_dataset=EpsilonDelta(1.8))
    run(ledger_of, policy, scenario)


def test_no_budget_means_no_charge(ledger_of: LedgerOf) -> None:
    async def scenario(ledger: Ledger) -> None:
        refusal = refused(await ledger.charge("alice", Cost(0.1)), sqlstate.OBJECT_NOT_IN_PREREQUISITE_STATE)
        assert refusal.message == 'no privacy budget applies to user "alice", so no private answer can be charged'
        assert await ledger.standing("alice") == []
        assert await ledger.charge("carol", Cost(0.1)) is None

    run(ledger_of, make_policy(per_role={"auditor": EpsilonDelta(1.0)}), scenario)


def test_charge_standing_returns_the_standing_after_the_charge(ledger_of: LedgerOf) -> None:
    async def scenario(ledger: Ledger) -> None:
        for cost in (Cost(0.25, 1e-6), Cost(0.5)):
            outcome = await ledger.charge_standing("bob", cost)
            assert isinstance(outcome, Charged) and outcome.paid_before is None
            assert list(outcome) == await ledger.standing("bob")
        refusal = await ledger.charge_standing("bob", Cost(0.5))
        assert isinstance(refusal, Refuse) and refusal.sqlstate == sqlstate.CONFIGURATION_LIMIT_EXCEEDED
        assert [s.spent_epsilon for s in await ledger.standing("bob")] == [Decimal("0.75"), Decimal("0.75")]

    run(ledger_of, make_policy(per_user=EpsilonDelta(1.0, 1e-5), per_dataset=EpsilonDelta(10.0, 1e-5)), scenario)


def test_zcdp_composition_spends_what_accounting_composes(ledger_of: LedgerOf) -> None:
    async def scenario(ledger: Ledger) -> None:
        for _ in range(40):
            assert await ledger.charge("alice", Cost(0.1)) is None
        [standing] = await ledger.standing("alice")
        rho = Decimal("0.005") * 40
        assert (standing.summed_epsilon, standing.spent_rho) == (Decimal(4), rho)
        assert standing.spent_epsilon == compose("zcdp", Decimal(4), Decimal(0), rho, Decimal("1e-5"))
        assert standing.spent_epsilon < 4  # many small charges cost less than their sum
        assert standing.composition == "zcdp"

    run(ledger_of, make_policy(per_user=EpsilonDelta(4.0, 1e-5), composition="zcdp"), scenario)


def test_concurrent_charges_never_overspend(ledger_of: LedgerOf) -> None:
    async def scenario(ledger: Ledger) -> None:
        outcomes = await asyncio.gather(*(ledger.charge(user, Cost(0.25)) for user in ["alice", "bob"] * 6))
        assert outcomes.count(None) == 4
        for outcome in outcomes:
            if outcome is not None:
                refused(outcome, sqlstate.CONFIGURATION_LIMIT_EXCEEDED)
        assert (await ledger.standing("alice"))[-1].spent_epsilon == Decimal(1)

    run(ledger_of, make_policy(per_dataset=EpsilonDelta(1.0)), scenario)


def test_a_shared_account_says_when_it_paid_for_a_release(ledger_of: LedgerOf) -> None:
    async def scenario(ledger: Ledger) -> None:
        release = SharedRelease("f" * 32, 3600.0)
        first = await ledger.charge_standing("alice", Cost(0.25), release)
        assert isinstance(first, Charged) and first.paid_before is None
        again = await ledger.charge_standing("bob", Cost(0.25), release)
        assert isinstance(again, Charged) and again.paid_before is not None
        other = await ledger.charge_standing("bob", Cost(0.25), SharedRelease("0" * 32, 3600.0))
        assert isinstance(other, Charged) and other.paid_before is None
        [role, dataset] = await ledger.standing("alice")
        assert (role.budget.scope, role.budget.shared, role.spent_epsilon) == ("role", True, Decimal("0.75"))
        assert list(other) == [role, dataset] == await ledger.standing("bob")

    policy = make_policy(per_user=EpsilonDelta(0.1), per_role={"analyst": EpsilonDelta(1.0)},
                         per_dataset=EpsilonDelta(10.0), share_answers=True)
    run(ledger_of, policy, scenario)


def test_the_memory_ledger_without_a_policy_counts_without_limit() -> None:
    async def scenario() -> None:
        ledger = MemoryLedger()
        for _ in range(100):
            outcome = await ledger.charge_standing("alice", Cost(1.0))
            assert isinstance(outcome, Charged) and list(outcome) == []
        assert await ledger.standing("alice") == []
        assert ledger.charges == [("alice", Cost(1.0))] * 100

    asyncio.run(scenario())
