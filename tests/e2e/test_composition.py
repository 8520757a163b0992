"""Composition of privacy charges (proxy/budget/ledger.py) against Google's dp-accounting as an upper-bound oracle.

Our reported spend must never be tighter than the true privacy loss. The
oracle is dp-accounting's privacy loss distributions (PLD): the tight
composition of the discrete Laplace answers pgshroud releases, and the
worst case over all mechanisms with the same (epsilon, delta) (optimal
composition); its RDP accountant with LaplaceDpEvent as a second opinion
where our zCDP bound is the one used. PLD discretizes pessimistically with
`value_discretization_interval`, so comparisons allow that much slack.

Then, against a real PostgreSQL: the ledger reports the same numbers after
the same charges, admission boundaries are exact (a charge that fits is
admitted, one that does not is refused with 53400), the lifetime cap bounds
what repeated windows can spend, and an existing ledger upgrades.
"""

from __future__ import annotations

import asyncio
import io
import math
import textwrap
from decimal import Decimal

import psycopg
import pytest

dp_accounting = pytest.importorskip("dp_accounting")
from dp_accounting import dp_event, pld, rdp
from dp_accounting.pld import common, privacy_loss_distribution

from pgshroud.policies.accounting import compose, exact, zcdp_epsilon
from pgshroud.policies.errors import PolicyError
from pgshroud.policies.loader import loads_policy
from pgshroud.policies.model import Access, Budgets, EpsilonDelta, Policy, Role
from pgshroud.proxy.budget.ledger import PostgresLedger
from pgshroud.proxy.commands.setup import run_setup
from pgshroud.proxy.ops.config import ConfigError
from pgshroud.rewriter.mechanisms import zcdp_to_approx_dp
from pgshroud.rewriter.plans import Cost, Refuse

SLACK = 1e-3  # the oracle's discretization interval, and then some
INTERVAL = 1e-4

# (epsilons, deltas, the delta cap): pure sequences, and ones mixed with partition selection's deltas.
SEQUENCES = [
    ([0.1] * 50, [0.0] * 50, 1e-5),
    ([0.1] * 50, [1e-7] * 50, 1e-5),
    ([0.5, 1.0, 0.2, 0.3], [0.0, 1e-6, 0.0, 1e-7], 1e-5),
    ([1.0] * 10, [0.0] * 10, 1e-5),
    ([0.05] * 200, [0.0] * 200, 1e-6),
    ([0.3, 0.01, 0.7, 0.05, 0.2] * 8, [1e-8, 0.0, 1e-7, 0.0, 0.0] * 8, 1e-4),
    ([2.0, 0.1], [0.0, 0.0], 1e-9),
]


def d(value: float) -> Decimal:
    return exact(value, "test")


def sums(epsilons: list[float], deltas: list[float]) -> tuple[Decimal, Decimal, Decimal]:
    epsilon = sum((d(e) for e in epsilons), Decimal(0))
    delta = sum((d(x) for x in deltas), Decimal(0))
    rho = sum((d(e) * d(e) / 2 for e in epsilons), Decimal(0))
    return epsilon, delta, rho


def oracle_worst_case(epsilons: list[float], deltas: list[float], delta: float) -> float:
    """Optimal composition of mechanisms that are only known to be (epsilon_i, delta_i)-DP, at total delta."""
    composed = None
    for e, x in zip(epsilons, deltas):
        one = privacy_loss_distribution.from_privacy_parameters(
            common.DifferentialPrivacyParameters(e, x), value_discretization_interval=INTERVAL)
        composed = one if composed is None else composed.compose(one)
    return composed.get_epsilon_for_delta(delta)


def oracle_discrete_laplace(epsilons: list[float], delta: float) -> float:
    """Tight composition of discrete Laplace answers of sensitivity 1 and parameter epsilon (pgshroud's)."""
    accountant = pld.PLDAccountant()
    for e in epsilons:
        accountant.compose(dp_event.DiscreteLaplaceDpEvent(e, 1))
    return accountant.get_epsilon(delta)


def oracle_rdp_laplace(epsilons: list[float], delta: float) -> float:
    accountant = rdp.RdpAccountant()
    for e in epsilons:
        accountant.compose(dp_accounting.LaplaceDpEvent(1 / e))
    return accountant.get_epsilon(delta)


# -- the composition itself ------------------------------------------------------


@pytest.mark.parametrize("epsilons, deltas, cap", SEQUENCES)
def test_basic_is_the_sum_and_never_tighter_than_the_oracle(epsilons, deltas, cap):
    epsilon, delta, rho = sums(epsilons, deltas)
    ours = compose("basic", epsilon, delta, rho, d(cap))
    assert ours == epsilon  # exactly the sum, in decimal
    # At delta exactly the sum the discretized oracle can be infinite (mass it cannot place); a hair above
    # it, it is finite, and no larger than the true epsilon at the sum.
    at = float(delta) + 1e-12
    assert float(ours) >= oracle_worst_case(epsilons, deltas, at) - SLACK
    assert float(ours) >= oracle_discrete_laplace(epsilons, at) - SLACK


@pytest.mark.parametrize("epsilons, deltas, cap", SEQUENCES)
def test_zcdp_is_an_upper_bound_and_not_absurd(epsilons, deltas, cap):
    epsilon, delta, rho = sums(epsilons, deltas)
    ours = compose("zcdp", epsilon, delta, rho, d(cap))
    # The guarantee is (ours, cap)-DP: the conversion gets what the summed deltas leave of the cap.
    left = float(d(cap) - delta)
    assert ours <= epsilon  # never more than basic composition
    worst = oracle_worst_case(epsilons, deltas, cap)
    assert float(ours) >= worst - SLACK
    assert float(ours) >= oracle_discrete_laplace(epsilons, left) - SLACK
    if ours < epsilon:  # the zCDP bound was used: RDP (a looser oracle than PLD) agrees it is an upper bound
        assert ours == zcdp_epsilon(rho, d(cap) - delta)
        assert float(ours) >= oracle_rdp_laplace(epsilons, left) - SLACK
    # and not absurdly larger than the optimal composition
    assert float(ours) <= 1.25 * worst + 0.01


def test_zcdp_beats_basic_for_many_small_charges():
    epsilons = [0.1] * 400
    epsilon, delta, rho = sums(epsilons, [0.0] * 400)
    ours = compose("zcdp", epsilon, delta, rho, d(1e-5))
    assert ours < epsilon / 2  # 40 under basic composition; about 11 under zCDP
    assert float(ours) >= oracle_worst_case(epsilons, [0.0] * 400, 1e-5) - SLACK


def test_zcdp_epsilon_rounds_up_and_uses_the_mechanisms_conversion():
    rho, delta = Decimal("0.125"), Decimal("1e-6")
    converted = zcdp_to_approx_dp(rho.as_integer_ratio()[0] / rho.as_integer_ratio()[1], 1e-6)
    assert Decimal(converted) < zcdp_epsilon(rho, delta) <= Decimal(math.nextafter(converted, math.inf)) * 2
    assert float(zcdp_epsilon(rho, delta)) == math.nextafter(converted, math.inf)
    # Bun and Steinke's bound is never beaten from below
    assert float(zcdp_epsilon(rho, delta)) <= 0.125 + 2 * math.sqrt(0.125 * math.log(1e6)) + 1e-12


def test_no_delta_left_means_basic_composition():
    epsilon, delta, rho = sums([0.1] * 10, [1e-6] * 10)
    assert compose("zcdp", epsilon, delta, rho, Decimal("1e-5")) == epsilon  # the deltas took the whole cap
    assert compose("zcdp", epsilon, Decimal(0), rho, Decimal(0)) == epsilon  # a cap of delta 0: pure DP only


# -- the policy ------------------------------------------------------------------

BASE = textwrap.dedent(
    """\
    version: 1
    roles:
      analyst: {access: aggregate, users: [alice]}
    """
)


def test_policy_composition_and_lifetime():
    budgets = loads_policy(BASE + "budgets:\n  per_user: {epsilon: 1}\n").budgets
    assert (budgets.composition, budgets.lifetime) == ("basic", None)
    budgets = loads_policy(BASE + "budgets:\n  composition: zcdp\n  period: 7d\n  per_user: {epsilon: 1}\n").budgets
    assert (budgets.composition, budgets.period, budgets.lifetime) == ("zcdp", "7d", 10.0)
    budgets = loads_policy(BASE + "budgets:\n  period: 1d\n  lifetime: 30\n  per_user: {epsilon: 1}\n").budgets
    assert budgets.lifetime == 30.0


@pytest.mark.parametrize(
    "lines, key, expected",
    [
        ("composition: rdp", "budgets.composition", "one of basic, zcdp"),
        ("period: 1d\n  lifetime: 0.5", "budgets.lifetime", "a number of periods from 1 up"),
        ("lifetime: 3", "budgets.lifetime", "no lifetime when budgets.period is never"),
        ("period: never\n  lifetime: 3", "budgets.lifetime", "no lifetime when budgets.period is never"),
        ("period: 1d\n  lifetime: lots", "budgets.lifetime", "a number of periods"),
    ],
)
def test_policy_errors(lines, key, expected):
    text = BASE + f"budgets:\n  {lines}   #<\n"
    with pytest.raises(PolicyError) as info:
        loads_policy(text, "policy.yaml")
    [error] = info.value.errors
    line = text.splitlines().index(next(x for x in text.splitlines() if x.endswith("#<"))) + 1
    assert (error.line, error.key) == (line, key)
    assert expected in str(error) and str(error).startswith(f"policy.yaml:{line}: {key}: expected")


# -- the ledger ------------------------------------------------------------------------


def make_policy(per_user: EpsilonDelta, *, composition: str = "basic", period: str = "never",
                lifetime: float | None = None) -> Policy:
    roles = {"analyst": Role("analyst", Access.AGGREGATE, ("alice", "bob"))}
    return Policy(source="test", roles=roles, default_role=None, protected_tables={}, public_tables=frozenset(),
                  budgets=Budgets(per_user, {}, None, period, composition, lifetime))


@pytest.fixture
def db(databases) -> str:
    return databases()


def charges(db: str, policy: Policy, costs: list[Cost], user: str = "alice") -> tuple[list, list]:
    """Charge the costs in turn; returns the outcomes and the user's standings after them."""
    async def scenario():
        ledger = PostgresLedger(db, policy)
        try:
            outcomes = [await ledger.charge(user, cost) for cost in costs]
            return outcomes, await ledger.standing(user)
        finally:
            await ledger.close()

    return asyncio.run(scenario())


@pytest.mark.parametrize("composition", ["basic", "zcdp"])
@pytest.mark.parametrize("epsilons, deltas, cap", SEQUENCES[1:3] + SEQUENCES[5:6])
def test_the_ledger_reports_the_composition(db, composition, epsilons, deltas, cap):
    policy = make_policy(EpsilonDelta(1000.0, cap), composition=composition)
    outcomes, [standing] = charges(db, policy, [Cost(e, x) for e, x in zip(epsilons, deltas)])
    assert outcomes == [None] * len(epsilons)
    epsilon, delta, rho = sums(epsilons, deltas)
    assert (standing.summed_epsilon, standing.spent_delta, standing.spent_rho) == (epsilon, delta, rho)
    assert standing.spent_epsilon == compose(composition, epsilon, delta, rho, d(cap))
    assert float(standing.spent_epsilon) >= oracle_worst_case(epsilons, deltas, cap) - SLACK
    with psycopg.connect(db, autocommit=True) as conn:
        stored = conn.execute("SELECT epsilon, rho FROM pgshroud.budget_ledger WHERE kind = 'charge' ORDER BY id")
        assert [(e, r) for e, r in stored] == [(d(e), d(e) * d(e) / 2) for e in epsilons]
        assert conn.execute("SELECT spent_rho FROM pgshroud.budget_lock WHERE scope = 'user'").fetchone()[0] == rho


def test_basic_admission_boundary_is_exact(db):
    policy = make_policy(EpsilonDelta(1.0, 1e-6))
    outcomes, [standing] = charges(db, policy, [Cost(0.1, 1e-7)] * 10 + [Cost(0.1), Cost(0.0, 1e-7)])
    assert outcomes[:10] == [None] * 10
    assert [o.sqlstate for o in outcomes[10:]] == ["53400", "53400"]
    assert (standing.spent_epsilon, standing.spent_delta) == (Decimal(1), Decimal("0.000001"))


def test_zcdp_admission_boundary_is_exact(db, databases):
    # Cap at exactly what 100 charges of 0.1 compose to (at delta 1e-5): the 100th fits, the 101st does not.
    cost, delta_cap, n = 0.1, 1e-5, 100
    full = compose("zcdp", d(cost) * n, Decimal(0), d(cost) * d(cost) / 2 * n, d(delta_cap))
    assert full < 6  # zCDP is what admits the 100th (basic composition would need 10)
    cap = float(full)
    assert exact(cap, "cap") == full
    outcomes, [standing] = charges(db, make_policy(EpsilonDelta(cap, delta_cap), composition="zcdp"),
                                   [Cost(cost)] * (n + 1))
    assert outcomes[:n] == [None] * n
    refusal = outcomes[n]
    assert isinstance(refusal, Refuse) and refusal.sqlstate == "53400"
    assert refusal.message.startswith("privacy budget exhausted: ")
    assert "rho 0.005 under zCDP composition" in refusal.message
    assert standing.spent_epsilon == full and standing.remaining_epsilon == 0
    # One float below that cap, the 100th is refused.
    below = math.nextafter(cap, 0.0)
    outcomes, _ = charges(databases(), make_policy(EpsilonDelta(below, delta_cap), composition="zcdp"),
                          [Cost(cost)] * n)
    assert outcomes[:n - 1] == [None] * (n - 1) and outcomes[n - 1].sqlstate == "53400"


def test_zcdp_deltas_spend_the_conversion(db):
    # Partition selection's deltas add up against the cap and leave less for the conversion.
    policy = make_policy(EpsilonDelta(100.0, 1e-5), composition="zcdp")
    outcomes, [standing] = charges(db, policy, [Cost(0.1, 2e-6)] * 5 + [Cost(0.1, 1e-12)])
    assert outcomes[:5] == [None] * 5 and outcomes[5].sqlstate == "53400"
    # With all the delta spent nothing is left to convert rho with: basic composition.
    assert standing.spent_delta == Decimal("0.00001") and standing.spent_epsilon == Decimal("0.5")


def insert_old_charges(db: str, user: str, epsilon: float, count: int, age: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgshroud.budget_ledger (recorded_at, kind, user_name, role_name, epsilon, delta, rho) "
            "SELECT now() - %s::interval, 'charge', %s, 'analyst', %s::numeric, 0, %s::numeric * %s::numeric / 2 "
            "FROM generate_series(1, %s)", (age, user, str(epsilon), str(epsilon), str(epsilon), count))


def test_lifetime_cap_bounds_repeated_windows(db):
    # 25 charges of 0.1 two days ago: out of the 1d window, but 2.5 of the lifetime cap of 3 x 1.
    insert_old_charges(db, "alice", 0.1, 25, "2 days")
    policy = make_policy(EpsilonDelta(1.0), period="1d", lifetime=3)
    outcomes, [standing] = charges(db, policy, [Cost(0.1)] * 6)
    assert outcomes[:5] == [None] * 5
    refusal = outcomes[5]
    assert refusal.sqlstate == "53400"
    assert 'user "alice" over all periods (budgets.lifetime) has epsilon 0 of 3 left' in refusal.message
    assert "lifetime budget, 3 times the 1d budget, does not return" in refusal.message
    assert standing.spent_epsilon == Decimal("0.5") and standing.remaining_epsilon == 0
    assert standing.lifetime.spent_epsilon == Decimal(3)
    # Without a lifetime cap the window alone would admit them all.
    outcomes, _ = charges(db, make_policy(EpsilonDelta(1.0), period="1d"), [Cost(0.1)] * 5)
    assert outcomes == [None] * 5


def test_lifetime_cap_under_zcdp_composes_all_charges(db):
    insert_old_charges(db, "bob", 0.1, 300, "3 days")
    policy = make_policy(EpsilonDelta(5.0, 1e-5), composition="zcdp", period="1d", lifetime=2)
    _, [standing] = charges(db, policy, [], user="bob")
    epsilon, delta, rho = sums([0.1] * 300, [])
    assert standing.spent_epsilon == 0
    assert standing.lifetime.spent_epsilon == compose("zcdp", epsilon, delta, rho, Decimal("0.00002")) < 10
    assert standing.remaining_epsilon == min(Decimal(5), 10 - standing.lifetime.spent_epsilon)


def test_an_existing_ledger_upgrades(db):
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("ALTER TABLE pgshroud.budget_ledger DROP COLUMN rho")
        conn.execute("ALTER TABLE pgshroud.budget_lock DROP COLUMN spent_rho")
        conn.execute("INSERT INTO pgshroud.budget_ledger (kind, user_name, role_name, epsilon, delta) "
                     "VALUES ('charge', 'alice', 'analyst', 0.5, 0)")
    policy = make_policy(EpsilonDelta(10.0, 1e-5), composition="zcdp")

    async def check() -> None:
        ledger = PostgresLedger(db, policy)
        try:
            await ledger.check()
        finally:
            await ledger.close()

    with pytest.raises(ConfigError, match="predates the zCDP accounting.*run pgshroud setup"):
        asyncio.run(check())
    assert run_setup(db, key_env=None, key_file=None, rotate_key=False, grant_to=[], out=io.StringIO()) == 0
    asyncio.run(check())
    # The old charge counts as epsilon^2/2; the new one stores its rho.
    outcomes, [standing] = charges(db, policy, [Cost(0.5)])
    assert outcomes == [None] and standing.spent_rho == Decimal("0.25")
    with psycopg.connect(db, autocommit=True) as conn:
        assert conn.execute("SELECT rho FROM pgshroud.budget_ledger ORDER BY id").fetchall() == [
            (None,), (Decimal("0.125"),)]
        # Still append-only for its owner.
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'pgshroud' "
                             "AND tablename = 'budget_ledger'").fetchone()[0]
        acl = conn.execute("SELECT relacl::text FROM pg_class WHERE oid = 'pgshroud.budget_ledger'::regclass"
                           ).fetchone()[0]
        own = next(entry for entry in acl.strip("{}").split(",") if entry.startswith(f"{owner}="))
        privileges = own.split("=")[1].split("/")[0]
        assert "a" in privileges and "r" in privileges and not set("wdD") & set(privileges)
