"""The session's privacy settings: SET/SHOW/RESET pgshroud.epsilon and
pgshroud.delta, answered by pgshroud and never seen by PostgreSQL; and the
read-only SHOW pgshroud.budget, which the session answers from the ledger.

A setting is a plain decimal literal (0.5, 1e-7), taken exactly: what a
release spends and what it is charged are that decimal, never a rounded
binary fraction of it (`1/3` would be charged 0.3333333333333333, less than
spent). Epsilon lies between the policy's floor and its per-query maximum;
delta is 0 or between its floor and maximum: below the floors an answer
costs next to nothing, so an analyst could ask as many as they like."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction

from pgshroud import sqlstate
from pgshroud.policies.model import Policy
from pgshroud.rewriter.plans import Column, Local, LocalAnswer, PrivacySetting, SessionRead

NAMES = ("epsilon", "delta")
# Shown, never set: where the user's privacy budgets stand.
BUDGET = "budget"
# Shown, never set: what the session's last private answer cost, and its margins.
LAST_ANSWER = "last_answer"

# Digits with an optional point and exponent: what SET takes. Short, so that
# no literal is an integer of a billion digits once exact (1e-1000000000).
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_MAX_LITERAL = 40


class SettingError(ValueError):
    """A privacy setting that cannot be set; the message says why."""

    def __init__(self, message: str, code: str = sqlstate.INVALID_PARAMETER_VALUE) -> None:
        super().__init__(message)
        self.sqlstate = code


def policy_decimal(value: float) -> Decimal:
    """A number the policy states, as the decimal it was written as (0.1 is
    0.1, not the binary float nearest to it)."""
    return Decimal(repr(float(value)))


def policy_number(value: float) -> Fraction:
    """A number the policy states, as the exact fraction of its decimal."""
    return Fraction(policy_decimal(value))


def parse_value(name: str, text: str, policy: Policy) -> Fraction:
    """A setting's value, exactly, checked against the policy's floor and
    per-query maximum. The range is checked on the decimal, before it
    becomes a Fraction."""
    literal = text.strip().strip("'").strip()
    if len(literal) > _MAX_LITERAL or not _DECIMAL.fullmatch(literal):
        raise SettingError(f'invalid value for pgshroud.{name}: "{text}"; a decimal number such as 0.5 or 1e-7 '
                           f"(at most {_MAX_LITERAL} characters)")
    value = Decimal(literal)
    maximum = policy_decimal(getattr(policy.privacy.maximum, name))
    floor = policy_decimal(getattr(policy.privacy.floor, name))
    low_ok = value > 0 if name == "epsilon" else value >= 0
    if not low_ok or value > maximum:
        bound = "> 0" if name == "epsilon" else ">= 0"
        raise SettingError(f"pgshroud.{name} must be {bound} and at most the policy's per-query maximum "
                           f"{float(maximum):g}, got {literal}")
    if value < floor and (name == "epsilon" or value != 0):
        also = "" if name == "epsilon" else " (or 0, which answers without partition selection)"
        raise SettingError(f"pgshroud.{name} must be at least the policy's floor {floor}{also}, got {literal}: "
                           "below it an answer would cost next to nothing")
    return Fraction(value)


def current(name: str, privacy: Mapping[str, str], policy: Policy) -> Fraction:
    """The session's value, or the policy's default."""
    if name in privacy:
        return parse_value(name, privacy[name], policy)
    return policy_number(getattr(policy.privacy.default, name))


def set_plan(name: str, value: str | None, policy: Policy) -> Local:
    """SET (value) or RESET (None) of pgshroud.<name>."""
    if name in (BUDGET, LAST_ANSWER):
        # As PostgreSQL refuses SET of a read-only parameter (server_version).
        raise SettingError(f'parameter "pgshroud.{name}" cannot be changed', sqlstate.CANT_CHANGE_RUNTIME_PARAM)
    if name not in NAMES:
        raise SettingError(f'unrecognized configuration parameter "pgshroud.{name}"', sqlstate.UNDEFINED_OBJECT)
    if value is not None:
        parse_value(name, value, policy)
        value = value.strip().strip("'").strip()
    return Local(LocalAnswer("SET" if value is not None else "RESET"), PrivacySetting(name, value))


def show_plan(name: str, privacy: Mapping[str, str], policy: Policy) -> Local:
    if name == BUDGET:
        # One row, one text column; the session fills it from the ledger.
        return Local(LocalAnswer("SHOW", (Column(f"pgshroud.{name}"),)), reads=SessionRead.BUDGET)
    if name == LAST_ANSWER:
        # The session fills it with its last private answer's cost and margins.
        return Local(LocalAnswer("SHOW", (Column(f"pgshroud.{name}"),)), reads=SessionRead.LAST_ANSWER)
    if name not in NAMES:
        raise SettingError(f'unrecognized configuration parameter "pgshroud.{name}"', sqlstate.UNDEFINED_OBJECT)
    value = privacy.get(name)
    text = value if value is not None else f"{getattr(policy.privacy.default, name):g}"
    return Local(LocalAnswer("SHOW", (Column(f"pgshroud.{name}"),), ((text,),)))
