"""The accounting rules (policies/accounting.py), without a ledger.

A charge event is exact and frozen; basic composition adds, zCDP composition
never spends more than basic and converts at the delta the cap leaves; a
budget covers a charge up to its cap exactly and not a step beyond; the
budgets that apply to a user follow the policy; and the module stays on the
policies side, importing neither the proxy nor the rewriter.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import pytest

from pgshroud.policies.accounting import (
    Budget,
    ChargeEvent,
    Standing,
    budgets_for,
    compose,
    covers,
    exact,
    lifetime_budget,
    period_window,
    pure_rho,
    show_number,
    standing_of,
    with_charge,
    with_lifetimes,
    zcdp_epsilon,
    zcdp_to_approx_dp,
)
from pgshroud.policies.model import Access, Budgets, EpsilonDelta, Policy, Role

D = Decimal


def policy(budgets: Budgets, *, share_answers: bool = False) -> Policy:
    roles = {"analyst": Role("analyst", Access.AGGREGATE, ("alice",), share_answers=share_answers)}
    return Policy(source="test", roles=roles, default_role=None, protected_tables={}, public_tables=frozenset(),
                  budgets=budgets)


def fresh(budget: Budget, composition: str = "basic") -> Standing:
    return standing_of(budget, composition, D(0), D(0), D(0), D(0), D(0), None)


def test_a_charge_event_is_the_numbers_as_written_and_frozen() -> None:
    event = ChargeEvent.of(0.1, 1e-7)
    assert (event.epsilon, event.delta, event.rho) == (D("0.1"), D("1E-7"), D("0.005"))
    assert ChargeEvent.of(D("0.3"), rho=D("0.02")).rho == D("0.02")  # a mechanism's own rho
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.epsilon = D(1)  # type: ignore[misc]
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError):
            ChargeEvent.of(bad)
    with pytest.raises(TypeError):
        ChargeEvent.of(True)


def test_exact_and_shown() -> None:
    assert exact(0.1, "epsilon") == D("0.1") and exact(3, "epsilon") == D(3)
    assert pure_rho(D("0.1")) == D("0.005")
    assert [show_number(D(x)) for x in ("20", "19.90", "0.0001", "1E-7", "0")] == ["20", "19.9", "0.0001", "1e-7",
                                                                                   "0"]


def test_basic_composition_adds() -> None:
    assert compose("basic", D("0.3"), D("1e-6"), D("0.045"), D("1e-5")) == D("0.3")


def test_zcdp_composition_converts_at_the_delta_left_and_never_exceeds_basic() -> None:
    epsilon, rho = D(40), D(400) * D("0.005")  # 400 charges of 0.1
    composed = compose("zcdp", epsilon, D(0), rho, D("1e-5"))
    assert composed == zcdp_epsilon(rho, D("1e-5")) and 10 < composed < 12
    assert compose("zcdp", D("0.1"), D(0), D("0.005"), D("1e-5")) == D("0.1")  # one charge: basic is less
    assert compose("zcdp", epsilon, D("1e-5"), rho, D("1e-5")) == epsilon  # the deltas took the whole cap
    assert compose("zcdp", epsilon, D(0), rho, D(0)) == epsilon  # delta 0: pure DP only


def test_the_zcdp_conversion_rounds_up() -> None:
    converted = zcdp_to_approx_dp(Fraction(1, 8), Fraction(1, 10**6))
    assert converted <= 0.125 + 2 * math.sqrt(0.125 * math.log(1e6))
    assert float(zcdp_epsilon(D("0.125"), D("1e-6"))) == math.nextafter(converted, math.inf)
    assert zcdp_epsilon(D(0), D("1e-6")) == 0


def test_a_budget_covers_up_to_its_cap_exactly() -> None:
    budget = Budget("user", "alice", D(1), D("1e-5"))
    standing = fresh(budget)
    for _ in range(9):
        standing = with_charge(standing, ChargeEvent.of(0.1), False)
    assert standing.spent_epsilon == D("0.9")
    assert covers(standing, ChargeEvent.of(0.1))
    assert not covers(standing, ChargeEvent.of(D("0.1000000000000000000000000000001")))
    assert not covers(standing, ChargeEvent.of(0, 2e-5))


def test_with_charge_counts_in_the_lifetime_too() -> None:
    budget = Budget("dataset", "", D(1), D(0))
    lifetime = standing_of(lifetime_budget(budget, 3), "basic", D(0), D(0), D(0), D(0), D(0), None)
    standing = standing_of(budget, "basic", D(0), D(0), D(0), D(0), D(0), None, lifetime)
    assert lifetime.budget.epsilon == 3 and lifetime.budget.lifetime
    charged = with_charge(standing, ChargeEvent.of(0.5), True)
    assert charged.oldest_charge is not None  # in a rolling period the first charge is the oldest
    assert charged.lifetime is not None and charged.lifetime.spent_epsilon == D("0.5")
    assert with_lifetimes([charged]) == [charged, charged.lifetime]


def test_period_window() -> None:
    assert period_window("never") is None
    assert period_window("7d") == timedelta(days=7) and period_window("12h") == timedelta(hours=12)
    with pytest.raises(ValueError):
        period_window("1w")


def test_the_budgets_a_charge_counts_against() -> None:
    caps = Budgets(per_user=EpsilonDelta(1.0), per_role={"analyst": EpsilonDelta(2.0)},
                   per_dataset=EpsilonDelta(3.0))
    role, budgets = budgets_for(policy(caps), "alice")
    assert role == "analyst"
    assert [(b.scope, b.name, b.epsilon, b.shared) for b in budgets] == [
        ("user", "alice", D(1), False), ("role", "analyst", D(2), False), ("dataset", "", D(3), False)]
    # A role that shares answers is charged as one account: never its users' own budgets.
    role, budgets = budgets_for(policy(caps, share_answers=True), "alice")
    assert [(b.scope, b.shared) for b in budgets] == [("role", True), ("dataset", False)]
    assert budgets_for(policy(Budgets(per_user=EpsilonDelta(1.0)), share_answers=True), "alice") == ("analyst", [])


def test_accounting_imports_neither_the_proxy_nor_the_rewriter() -> None:
    code = ("import sys, pgshroud.policies.accounting; "
            "print([m for m in sys.modules if m.startswith(('pgshroud.proxy', 'pgshroud.rewriter'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
