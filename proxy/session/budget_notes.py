"""What the analyst is told about their privacy budget, in their own session.

- `SHOW pgshroud.budget`: one text value that begins with the epsilon the
  user can spend now (the least left over the user's, the role's and the
  dataset's budgets, as a charge checks them), then per budget what is
  spent, granted and capped, for epsilon and delta, and the period.
- After each private answer, one notice: what it cost, what is left, and the
  release's own "95% margins of error" notice joined to it, so that psql
  prints a single NOTICE line. A repeat served from the answer cache says it
  cost nothing, when the answer was released, for how long it is kept and,
  when the user's role shares answers, that it was released for the role.
- For a role that shares answers (roles.<role>.share_answers), both say
  that its answers are charged to the role's budget, which all its users
  share, and not to the user's own.

Figures are the ledger's exact decimals, printed as `pgshroud budget show`
prints them (pgshroud.policies.accounting.show_number).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC
from decimal import Decimal

from pgshroud.policies.accounting import Standing, exact, period_window, show_number
from pgshroud.proxy.budget.answer_cache import CachedAnswer
from pgshroud.proxy.budget.protocol import Charged
from pgshroud.rewriter.plans import Cost, LocalAnswer

# The notice release.py adds to every private answer with noisy columns.
MARGINS_PREFIX = "95% margins of error"


def left_now(standings: Sequence[Standing]) -> tuple[Decimal, Decimal]:
    """The epsilon and delta the user can spend now: the least left over their budgets."""
    return (min(s.remaining_epsilon for s in standings), min(s.remaining_delta for s in standings))


def budget_value(user: str, standings: Sequence[Standing], period: str | None) -> str:
    """SHOW pgshroud.budget's value."""
    if not standings:
        return (f'0 epsilon left now: no privacy budget applies to user "{user}", so no private answer can be '
                f"charged")
    epsilon, delta = left_now(standings)
    parts = [f"{show_number(epsilon)} epsilon left now (delta {show_number(delta)}), the least over your budgets"]
    role = shared_role(standings)
    if role is not None:
        parts[0] += (f'; your answers are shared by role "{role}" and charged to its budget, which all its users '
                     f"share, not to a budget of your own")
    for s in standings:
        parts.append(
            f"{_scope(s)}: epsilon spent {show_number(s.spent_epsilon)} of {show_number(s.allowed_epsilon)} "
            f"(cap {show_number(s.budget.epsilon)}, granted {show_number(s.granted_epsilon)}), "
            f"delta spent {show_number(s.spent_delta)} of {show_number(s.allowed_delta)} "
            f"(cap {show_number(s.budget.delta)}, granted {show_number(s.granted_delta)})"
        )
    if period is not None:
        parts.append(_period(period, standings))
    return "; ".join(parts)


def cost_notice(cost: Cost, standings: Sequence[Standing] | None, overlapping: float | None = None) -> str:
    """What a private answer just charged cost, and what is left. `overlapping`: this release was charged
    although another release of the same statement had been running that long (answer_cache.Claim); a
    ledger.Charged's `paid_before`: the role's shared account had paid for it already."""
    role = shared_role(standings or ())
    paid = f', charged to role "{role}"\'s shared budget' if role is not None else ""
    again = ""
    if overlapping is not None:
        again = (f" (charged again: a release of the same statement for {'the role' if role else 'you'} was still "
                 f"running after {overlapping:.0f} s and is presumed lost)")
    before = standings.paid_before if isinstance(standings, Charged) else None
    if before is not None:
        again += (f" (charged again: the role paid for the same statement at "
                  f"{before.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}, but this pgshroud process "
                  f"does not hold that answer: another process released it, or it was let go early)")
    return f"privacy cost: {_cost(cost)}{paid}{again}{_left(standings)}"


def cached_notice(cached: CachedAnswer, standings: Sequence[Standing] | None, lookup_failed: bool = False) -> str:
    """A repeat served from the answer cache: no new cost; the answer's own lifetime, and its role when shared."""
    when = time.strftime("%H:%M:%S UTC", time.gmtime(cached.released_at))
    left = "; left now: unknown (the privacy budget ledger could not be read)" if lookup_failed else _left(standings)
    whose = f' for role "{cached.shared_by}", whose users share its answers,' if cached.shared_by else ""
    return (f"privacy cost: none, this is the answer released at {when}{whose} for {_cost(cached.cost)}, repeated "
            f"from pgshroud's answer cache (kept {_duration(cached.seconds)}){left}")


def repeat_notice(cost: Cost, released_at: float, seconds: float, standings: Sequence[Standing] | None,
                  lookup_failed: bool = False) -> str:
    """A repeat served from the answer cache: no new cost."""
    when = time.strftime("%H:%M:%S UTC", time.gmtime(released_at))
    left = "; left now: unknown (the privacy budget ledger could not be read)" if lookup_failed else _left(standings)
    return (f"privacy cost: none, this is the answer released at {when} for {_cost(cost)}, repeated from "
            f"pgshroud's answer cache (kept {seconds:g} s){left}")


def with_notice(answer: LocalAnswer, text: str) -> LocalAnswer:
    """The answer with `text` joined to its margins-of-error notice (added as a notice of its own when it has none)."""
    notices = list(answer.notices)
    for index, notice in enumerate(notices):
        if notice.startswith(MARGINS_PREFIX):
            notices[index] = f"{text}; {notice}"
            break
    else:
        notices.append(text)
    return LocalAnswer(answer.command_tag, answer.columns, answer.rows, tuple(notices))


def _cost(cost: Cost) -> str:
    return (f"epsilon {show_number(exact(cost.epsilon, 'epsilon'))}, "
            f"delta {show_number(exact(cost.delta, 'delta'))}")


def _left(standings: Sequence[Standing] | None) -> str:
    if not standings:
        return ""  # a ledger that does not report standings
    epsilon, delta = left_now(standings)
    return f"; left now: epsilon {show_number(epsilon)}, delta {show_number(delta)}"


def shared_role(standings: Sequence[Standing]) -> str | None:
    """The role whose shared budget these standings include (the user's answers are the role's), or None."""
    return next((s.budget.name for s in standings if s.budget.scope == "role" and s.budget.shared), None)


def _duration(seconds: float) -> str:
    """300 s, 12 h, 1 d: whole days or hours as such, anything else in seconds."""
    for unit, size in (("d", 86400), ("h", 3600)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _scope(standing: Standing) -> str:
    budget = standing.budget
    if budget.scope == "user":
        return f'user "{budget.name}"'
    if budget.scope == "role" and budget.shared:
        return f'role "{budget.name}" (its users share its answers and this budget)'
    if budget.scope == "role":
        return f'role "{budget.name}" (shared by its users)'
    return "dataset (shared by all users)"


def _period(period: str, standings: Sequence[Standing]) -> str:
    try:
        window = period_window(period)
    except ValueError:
        return f"period {period}"
    if window is None:
        return f"period {period}: spent budget does not return"
    text = f"period {period}: each charge counts for {period}"
    oldest = [s.oldest_charge for s in standings if s.oldest_charge is not None]
    if oldest:
        text += f", the oldest that counts returns at {(min(oldest) + window).strftime('%Y-%m-%d %H:%M:%S %Z').strip()}"
    return text
