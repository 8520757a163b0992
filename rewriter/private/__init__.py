"""Differentially private answers to ordinary aggregate SQL.

`plan_private` turns an aggregate role's SELECT over protected tables into
a Release: the contribution-bounded SQL PostgreSQL runs, and the spec that
adds noise and post-processes its raw totals in the proxy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlglot import exp
from sqlglot.tokenizer_core import Token

from pgshroud import sqlstate
from pgshroud.policies.model import Policy, Role
from pgshroud.rewriter.catalog import Catalog
from pgshroud.rewriter.plans import Refuse, Release
from pgshroud.rewriter.private.analysis import PrivateAnalyser, PrivateRefusal, written_function_names
from pgshroud.rewriter.private.release import PrivateRelease
from pgshroud.rewriter.private.settings import SettingError, current

__all__ = ["PrivateRelease", "plan_private"]

# The work a row costs grows with the expressions evaluated on it; a heavy
# expression evaluated only on one person's rows makes their presence take
# time. Capping the statement's size caps that (bench/timing/run.py).
MAX_NODES = 1000


def plan_private(tree: exp.Expr, policy: Policy, role: Role, catalog: Catalog, user: str,
                 privacy: Mapping[str, str], tokens: Sequence[Token] = ()) -> Release | Refuse:
    try:
        epsilon = current("epsilon", privacy, policy)
        delta = current("delta", privacy, policy)
    except SettingError as exc:
        return Refuse(exc.sqlstate, str(exc))
    nodes = sum(1 for _ in tree.walk())
    if nodes > MAX_NODES:
        return Refuse(sqlstate.PROGRAM_LIMIT_EXCEEDED, f"pgshroud cannot answer this privately: the statement has {nodes} terms, more than "
                      f"the {MAX_NODES} a private query may have (each row's work must stay small)",
                      hint="Split it into simpler queries, or filter with shorter conditions.")
    try:
        query = PrivateAnalyser(policy, role, catalog, user).analyse(tree.copy(), written_function_names(tokens))
        release = PrivateRelease(query, epsilon, delta)
    except PrivateRefusal as exc:
        return Refuse(sqlstate.INSUFFICIENT_PRIVILEGE, f"pgshroud cannot answer this privately: {exc}", hint=exc.hint)
    except ValueError as exc:
        return Refuse(sqlstate.INSUFFICIENT_PRIVILEGE, f"pgshroud cannot answer this privately: {exc}")
    return Release(release.sql, release)
