"""The refusals of a charge, worded the same by every ledger.

53400 (configuration_limit_exceeded) when a budget is exhausted: what is
left of each budget that is short, what the query costs, when spent budget
returns (never, as charges leave the period's window, or never for a
lifetime cap), and what the analyst can do. 55000
(object_not_in_prerequisite_state) when no budget applies, so nothing can be
charged: the policy keys that would give one.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

from pgshroud import sqlstate
from pgshroud.policies.accounting import ChargeEvent, Standing, exact, period_window, show_number
from pgshroud.policies.model import Budgets
from pgshroud.rewriter.plans import Refuse


def exhausted(short: list[Standing], standings: list[Standing], event: ChargeEvent, caps: Budgets) -> Refuse:
    """53400: the budgets in `short` (of the user's `standings`) do not cover `event`; says what is left of
    each, what the query costs, when spent budget returns and what the analyst can do."""
    epsilon, delta, rho = event.epsilon, event.delta, event.rho
    period = caps.period
    window = period_window(period)
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
    elif lifelong and len(lifelong) == len(short) and caps.lifetime is not None:
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
    return Refuse(sqlstate.CONFIGURATION_LIMIT_EXCEEDED,
                  f"privacy budget exhausted: {left}; this query costs {cost}; {renewal}", hint)


def no_budget(user: str, role_name: str | None, shared: bool = False) -> Refuse:
    """55000: no budget of the policy applies to the user (or to the role that shares its answers)."""
    if shared:
        return Refuse(
            sqlstate.OBJECT_NOT_IN_PREREQUISITE_STATE,
            f'no privacy budget applies to role "{role_name}", whose users share its answers, so no private answer '
            f'can be charged',
            f"The policy needs budgets.per_role.{role_name}: shared answers are charged to the role's budget.",
        )
    keys = "budgets.per_user" + (f", budgets.per_role.{role_name}" if role_name else "") + " or budgets.per_dataset"
    return Refuse(
        sqlstate.OBJECT_NOT_IN_PREREQUISITE_STATE,
        f'no privacy budget applies to user "{user}", so no private answer can be charged',
        f"The policy needs {keys}: without a cap, privacy loss would grow without limit.",
    )
