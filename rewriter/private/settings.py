"""The session's privacy settings: SET/SHOW/RESET pgshroud.epsilon and
pgshroud.delta, answered by pgshroud and never seen by PostgreSQL; and the
read-only SHOW pgshroud.budget, which the session answers from the ledger."""

from __future__ import annotations

from fractions import Fraction
from typing import Mapping

from policies.model import Policy
from rewriter.plans import Column, LedgerRead, Local, LocalAnswer, PrivacySetting

NAMES = ("epsilon", "delta")
# Shown, never set: where the user's privacy budgets stand.
BUDGET = "budget"


class SettingError(ValueError):
    """A privacy setting that cannot be set; the message says why."""

    def __init__(self, message: str, sqlstate: str = "22023") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def policy_number(value: float) -> Fraction:
    """A number the policy states, as the decimal it was written as (0.1 is
    1/10, not the binary float nearest to it)."""
    return Fraction(repr(float(value)))


def parse_value(name: str, text: str, policy: Policy) -> Fraction:
    """A setting's value, checked against the policy's per-query maximum."""
    try:
        value = Fraction(text.strip().strip("'"))
    except (ValueError, ZeroDivisionError):
        raise SettingError(f'invalid value for pgshroud.{name}: "{text}"') from None
    maximum = policy_number(getattr(policy.privacy.maximum, name))
    low_ok = value > 0 if name == "epsilon" else value >= 0
    if not low_ok or value > maximum:
        bound = "> 0" if name == "epsilon" else ">= 0"
        raise SettingError(f"pgshroud.{name} must be {bound} and at most the policy's per-query maximum "
                           f"{float(maximum):g}, got {text}")
    return value


def current(name: str, privacy: Mapping[str, str], policy: Policy) -> Fraction:
    """The session's value, or the policy's default."""
    if name in privacy:
        return parse_value(name, privacy[name], policy)
    return policy_number(getattr(policy.privacy.default, name))


def set_plan(name: str, value: str | None, policy: Policy) -> Local:
    """SET (value) or RESET (None) of pgshroud.<name>."""
    if name == BUDGET:
        # As PostgreSQL refuses SET of a read-only parameter (server_version).
        raise SettingError(f'parameter "pgshroud.{name}" cannot be changed', "55P02")
    if name not in NAMES:
        raise SettingError(f'unrecognized configuration parameter "pgshroud.{name}"', "42704")
    if value is not None:
        parse_value(name, value, policy)
        value = value.strip().strip("'")
    return Local(LocalAnswer("SET" if value is not None else "RESET"), PrivacySetting(name, value))


def show_plan(name: str, privacy: Mapping[str, str], policy: Policy) -> Local:
    if name == BUDGET:
        # One row, one text column; the session fills it from the ledger.
        return Local(LocalAnswer("SHOW", (Column(f"pgshroud.{name}"),)), ledger=LedgerRead.BUDGET)
    if name not in NAMES:
        raise SettingError(f'unrecognized configuration parameter "pgshroud.{name}"', "42704")
    value = privacy.get(name)
    text = value if value is not None else f"{getattr(policy.privacy.default, name):g}"
    return Local(LocalAnswer("SHOW", (Column(f"pgshroud.{name}"),), ((text,),)))
