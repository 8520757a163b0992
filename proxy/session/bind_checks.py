"""Checks of a private statement's Bind, made before anything is charged.

A value the bounded SQL would fail on only after the charge (a negative
LIMIT, a subquery's OFFSET other than 0) is refused at Bind; a binary value
declared as a type other than the one PostgreSQL infers for the private
statement is sent as text, for PostgreSQL to convert once, at Bind.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from pgshroud import sqlstate
from pgshroud.proxy.codec.binary_text import NoTextForm, text_form
from pgshroud.proxy.codec.messages import Bind
from pgshroud.proxy.session.outcome import Outcome
from pgshroud.rewriter.plans import Release

_INTEGER_BY_LENGTH = {2: 21, 4: 23, 8: 20}  # int2, int4, int8 in binary


def negative_bound(bind: Bind, plan: Release, declared: tuple[int, ...]) -> tuple[str, str, str | None] | None:
    """The error for a LIMIT or OFFSET bound as a parameter that the bounded
    SQL would fail on only after the charge, found at Bind: a negative one
    (PostgreSQL's own error), or a subquery's OFFSET that is not 0."""
    for number, clause in getattr(plan.spec, "bound_parameters", ()):
        index = number - 1
        value = bind.params[index] if index < len(bind.params) else None
        if value is None:
            continue
        try:
            if bind.param_format(index) == 1:
                # Of the type declared, else the integer its length tells (the bounded SQL reads an integer).
                type_oid = (declared[index] if index < len(declared) and declared[index]
                            else _INTEGER_BY_LENGTH.get(len(value), 0))
                value = text_form(type_oid, value)
            negative = Decimal(value.decode()) < 0
        except (NoTextForm, ArithmeticError, ValueError):
            continue  # PostgreSQL refuses it at Bind, where it reads it
        if clause == "zero_offset":
            if not negative and Decimal(value.decode()) == 0:
                continue
            message = ("the OFFSET of a subquery over protected rows must be 0: the rows it would skip depend on "
                       "other people's rows")
            return sqlstate.INSUFFICIENT_PRIVILEGE, message, "Bind 0, or leave the OFFSET out."
        if negative:
            word = clause.upper()
            code = (sqlstate.INVALID_ROW_COUNT_IN_LIMIT_CLAUSE if word == "LIMIT"
                    else sqlstate.INVALID_ROW_COUNT_IN_RESULT_OFFSET_CLAUSE)
            return code, f"{word} must not be negative", None
    return None


def declared_binary(bind: Bind, declared: tuple[int, ...]) -> bool:
    """Some value of the Bind is binary, of a type the client declared."""
    return any(bind.param_format(i) == 1 and i < len(declared) and declared[i] for i in range(len(bind.params)))


def as_inferred(bind: Bind, declared: tuple[int, ...], inferred: Outcome[tuple[int, ...]]) -> Bind:
    """The Bind with each binary value whose declared type is not the one
    PostgreSQL infers for the private statement sent as text instead, for
    PostgreSQL to convert at Bind (raises NoTextForm for one it cannot)."""
    types = inferred.result() if not inferred.cancelled() else ()
    formats = [bind.param_format(i) for i in range(len(bind.params))]
    params = list(bind.params)
    for i, value in enumerate(params):
        if formats[i] != 1 or i >= len(declared) or not declared[i] or i >= len(types) or declared[i] == types[i]:
            continue
        formats[i] = 0
        params[i] = None if value is None else text_form(declared[i], value)
    if params == list(bind.params):
        return bind
    return replace(bind, param_formats=tuple(formats), params=tuple(params))
