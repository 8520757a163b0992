"""Privacy accounting: what one release costs, how costs compose into a budget, and where a budget stands.

This is the rule book every ledger follows; it keeps no state and does no
I/O. The durable ledger (proxy/budget/ledger.py) stores charges and grants
and asks these functions whether the next charge fits.

- A `ChargeEvent` is what one release costs: (epsilon, delta) and its
  zCDP cost rho, exact decimals (0.1 is 0.1), frozen once made.
- A `Budget` is a cap from the policy (`budgets_for` says which caps a
  user's charge counts against); a `Standing` is where one budget stands:
  the sums of its charges and grants and what they compose to.
- Composition (`compose`): basic (epsilons add) or zCDP (rhos add, and are
  converted to epsilon at the delta the cap leaves; policies/README.md,
  "Composition"). `covers` is the check a charge must pass against every
  standing, `with_charge` the standing once it is committed.
- The zCDP conversion (`zcdp_to_approx_dp`, `zcdp_epsilon`) is evaluated
  in decimal arithmetic rounded toward the larger epsilon, so that no loss
  is ever understated; rewriter.mechanisms bounds its tails with the same
  directed-rounding contexts (`UP`, `DOWN`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import MAX_EMAX, MIN_EMIN, ROUND_CEILING, ROUND_FLOOR, Context, Decimal, Inexact, Rounded, localcontext
from fractions import Fraction
from numbers import Rational

from pgshroud.policies.model import Access, EpsilonDelta, Policy

Number = int | Fraction | float

# Sums of charges are exact: 200 digits hold any sum of the ledger's numerics, and a rounded one raises.
_SUM_PRECISION = 200


# --- exact numbers ------------------------------------------------------------------------------------------------

def exact(value: float | Decimal, name: str) -> Decimal:
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


def show_number(value: Decimal) -> str:
    """A decimal for people: 20, 19.9, 0.0001, 1e-7."""
    if value == 0:
        return "0"
    value = value.normalize()
    if abs(value) < Decimal("0.0001"):
        return format(value, "e")
    return format(value, "f")


def as_fraction(x: Number, name: str) -> Fraction:
    """`x` as an exact Fraction; floats convert exactly. Rejects NaN, inf, bool."""
    if type(x) is Fraction:
        return x
    if isinstance(x, bool):
        raise TypeError(f"{name} must be a number, not a bool")
    if isinstance(x, (int, Rational)):
        return Fraction(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            raise ValueError(f"{name} must be finite, got {x!r}")
        return Fraction(x)
    raise TypeError(f"{name} must be an int, Fraction or float, got {type(x).__name__}")


def nonnegative(x: Number, name: str) -> Fraction:
    """`x` as an exact Fraction, which must be >= 0."""
    value = as_fraction(x, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {x!r}")
    return value


def float_up(x: Fraction | float) -> float:
    """The smallest float >= x: a loss converted without understating it."""
    if isinstance(x, float):
        return x
    try:
        f = float(x)  # correctly rounded to nearest
    except OverflowError:
        return math.inf
    if Fraction(f) < x:
        f = math.nextafter(f, math.inf)
    return f


# Decimal contexts for bounds on logs and exponentials. Decimal's exp, ln and
# sqrt are correctly rounded (half-even); stepping one unit outward after each
# of them makes the result a bound in the stated direction.
PRECISION = 60
UP = Context(prec=PRECISION, rounding=ROUND_CEILING, Emax=MAX_EMAX, Emin=MIN_EMIN)
DOWN = Context(prec=PRECISION, rounding=ROUND_FLOOR, Emax=MAX_EMAX, Emin=MIN_EMIN)


def decimal_up(x: Fraction) -> Decimal:
    return UP.divide(Decimal(x.numerator), Decimal(x.denominator))


def decimal_down(x: Fraction) -> Decimal:
    return DOWN.divide(Decimal(x.numerator), Decimal(x.denominator))


def ln_up(x: Fraction) -> Decimal:
    return UP.next_plus(UP.ln(decimal_up(x)))


def ln_down(x: Fraction) -> Decimal:
    return DOWN.next_minus(DOWN.ln(decimal_down(x)))


def _exact_context(context: Context) -> None:
    context.prec = _SUM_PRECISION
    context.traps[Inexact] = True
    context.traps[Rounded] = True


# --- what one charge costs ----------------------------------------------------------------------------------------

def pure_rho(epsilon: Decimal) -> Decimal:
    """The zCDP cost of a pure epsilon-DP answer (the discrete Laplace, say): epsilon^2/2, exactly."""
    with localcontext() as context:
        _exact_context(context)
        return epsilon * epsilon * Decimal("0.5")


@dataclass(frozen=True, slots=True)
class ChargeEvent:
    """What one release costs, as the ledger records it: epsilon, delta and rho, exact decimals >= 0.

    Made with `of`, from the numbers a cost was written with (0.1 is 0.1). `rho` is the release's
    zCDP cost: its mechanism's own (a Gaussian answer), else that of a pure epsilon-DP answer,
    epsilon^2/2. An event never changes once made."""

    epsilon: Decimal
    delta: Decimal
    rho: Decimal

    @classmethod
    def of(cls, epsilon: float | Decimal, delta: float | Decimal = 0,
           rho: float | Decimal | None = None) -> ChargeEvent:
        exact_epsilon = exact(epsilon, "epsilon")
        return cls(exact_epsilon, exact(delta, "delta"),
                   pure_rho(exact_epsilon) if rho is None else exact(rho, "rho"))


# --- the zCDP conversion ------------------------------------------------------------------------------------------

def _cks_epsilon_up(rho: Fraction, delta: Fraction, alpha: Fraction) -> Decimal:
    """An upper bound on CKS 2020 Proposition 12's epsilon at order alpha > 1.

    rho-zCDP gives Renyi divergence alpha*rho at order alpha, hence
    (eps, delta)-DP for eps = alpha*rho + log(1 - 1/alpha)
    + (log(1/delta) - log(alpha))/(alpha - 1).
    """
    first = decimal_up(alpha * rho)
    second = ln_up((alpha - 1) / alpha)
    numerator = UP.subtract(ln_up(1 / delta), ln_down(alpha))
    # Divide an upper bound by a lower bound when it is positive, by an upper one when negative.
    denominator = decimal_down(alpha - 1) if numerator > 0 else decimal_up(alpha - 1)
    third = UP.divide(numerator, denominator)
    return UP.add(UP.add(first, second), third)


def _bun_steinke_epsilon_up(rho: Fraction, delta: Fraction) -> Decimal:
    """An upper bound on rho + 2*sqrt(rho*log(1/delta)) (Bun, Steinke 2016, Prop 1.3)."""
    product = UP.multiply(decimal_up(rho), ln_up(1 / delta))
    root = UP.next_plus(UP.sqrt(product))
    return UP.add(decimal_up(rho), UP.multiply(2, root))


def _cks_epsilon_float(rho: float, log_inv_delta: float, alpha_minus_1: float) -> float:
    alpha = 1 + alpha_minus_1
    return alpha * rho + math.log(alpha_minus_1 / alpha) + (log_inv_delta - math.log(alpha)) / alpha_minus_1


def zcdp_to_approx_dp(rho: Number, delta: Number) -> float:
    """The epsilon of (epsilon, delta)-DP implied by rho-zCDP, rounded up.

    Uses Canonne, Kamath and Steinke 2020, Proposition 12 (arXiv v4; the
    conversion Google's dp_accounting uses) at an order alpha found by a
    golden-section search; every alpha > 1 gives a valid bound, so the
    search only affects tightness. The result is the smaller of that and Bun and Steinke's
    rho + 2*sqrt(rho*log(1/delta)), both evaluated in 60-digit decimal
    arithmetic rounded toward larger epsilon, then rounded up to a float.
    """
    if isinstance(rho, float) and math.isinf(rho) and rho > 0:
        return math.inf
    r = nonnegative(rho, "rho")
    d = as_fraction(delta, "delta")
    if not 0 < d < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if r == 0:
        return 0.0
    try:
        rho_f = float(r)
    except OverflowError:  # beyond doubles: Bun and Steinke's bound alone, in decimals
        rho_f = math.inf
    log_inv_delta = -math.log(float(d)) if float(d) > 0 else math.inf
    if rho_f == 0.0 or not math.isfinite(rho_f) or not math.isfinite(log_inv_delta):
        best = _bun_steinke_epsilon_up(r, d)
    else:
        # Search log(alpha - 1); the objective is unimodal in practice.
        def objective(u: float) -> float:
            return _cks_epsilon_float(rho_f, log_inv_delta, math.exp(u))

        lo, hi = -40.0, 40.0
        ratio = (math.sqrt(5) - 1) / 2
        x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        f1, f2 = objective(x1), objective(x2)
        for _ in range(120):
            if f1 <= f2:
                hi, x2, f2 = x2, x1, f1
                x1 = hi - ratio * (hi - lo)
                f1 = objective(x1)
            else:
                lo, x1, f1 = x1, x2, f2
                x2 = lo + ratio * (hi - lo)
                f2 = objective(x2)
        alpha = 1 + Fraction(math.exp((lo + hi) / 2))
        best = min(_cks_epsilon_up(r, d, alpha), _bun_steinke_epsilon_up(r, d))
    return float_up(max(Fraction(0), Fraction(best)))


def zcdp_epsilon(rho: Decimal, delta: Decimal) -> Decimal:
    """The epsilon at `delta` of rho-zCDP (zcdp_to_approx_dp, which rounds up to a float), as a decimal
    no smaller than that float: the shortest decimal of the next float up."""
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
        context.prec = _SUM_PRECISION
        left = allowed_delta - delta
    if not 0 < left < 1:
        return epsilon
    return min(epsilon, zcdp_epsilon(rho, left))


# --- budgets and where they stand ---------------------------------------------------------------------------------

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


def standing_of(budget: Budget, composition: str, epsilon: Decimal, delta: Decimal, rho: Decimal,
                granted_epsilon: Decimal, granted_delta: Decimal, oldest: datetime | None,
                lifetime: Standing | None = None) -> Standing:
    """A standing from the sums of its charges (epsilon, delta, rho) and grants."""
    with localcontext() as context:
        context.prec = _SUM_PRECISION
        allowed_delta = budget.delta + granted_delta
    spent = compose(composition, epsilon, delta, rho, allowed_delta)
    return Standing(budget, spent, delta, granted_epsilon, granted_delta, oldest, epsilon, rho, composition,
                    lifetime)


def with_lifetimes(standings: list[Standing]) -> list[Standing]:
    """Each standing, followed by its lifetime cap's when it has one: every cap a charge must fit."""
    return [each for standing in standings for each in (standing, standing.lifetime) if each is not None]


def covers(standing: Standing, event: ChargeEvent) -> bool:
    """Whether the budget covers the charge: composed epsilon after it <= cap + grants, and the deltas' sum after it
    <= cap + grants, exactly (a rounded sum raises). Basic composition: spent + cost <= cap + grants. Only the
    standing itself is checked, not its lifetime (see with_lifetimes)."""
    with localcontext() as context:
        _exact_context(context)
        after_delta = standing.spent_delta + event.delta
        if after_delta > standing.allowed_delta:
            return False
        after = compose(standing.composition, standing.summed_epsilon + event.epsilon, after_delta,
                        standing.spent_rho + event.rho, standing.allowed_delta)
        return after <= standing.allowed_epsilon


def with_charge(standing: Standing, event: ChargeEvent, rolling: bool) -> Standing:
    """A standing with a charge just committed counted in it (exactly: covers checked the sums). In a
    rolling period, a first charge is the oldest that counts (its time is about now)."""
    with localcontext() as context:
        context.prec = _SUM_PRECISION
        oldest = standing.oldest_charge
        if rolling and oldest is None:
            oldest = datetime.now(UTC)
        lifetime = None if standing.lifetime is None else with_charge(standing.lifetime, event, False)
        return standing_of(standing.budget, standing.composition, standing.summed_epsilon + event.epsilon,
                           standing.spent_delta + event.delta, standing.spent_rho + event.rho,
                           standing.granted_epsilon, standing.granted_delta, oldest, lifetime)


def lifetime_budget(budget: Budget, multiple: float) -> Budget:
    """The lifetime cap of a budget renewed by budgets.period: `multiple` (budgets.lifetime) times it."""
    factor = exact(multiple, "budgets.lifetime")
    with localcontext() as context:
        _exact_context(context)
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


# --- which budgets a charge counts against ------------------------------------------------------------------------

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
        budgets.append(scope_budget("user", user, caps.per_user))
    if role_name is not None and role_name in caps.per_role:
        budget = scope_budget("role", role_name, caps.per_role[role_name])
        budgets.append(replace(budget, shared=role is not None and role.share_answers))
    if caps.per_dataset is not None:
        budgets.append(scope_budget("dataset", "", caps.per_dataset))
    return role_name, budgets


def scope_budget(scope: str, name: str, cap: EpsilonDelta) -> Budget:
    """One scope's budget from its cap in the policy, in exact decimals."""
    return Budget(scope, name, exact(cap.epsilon, f"{scope} budget epsilon"),
                  exact(cap.delta, f"{scope} budget delta"))
