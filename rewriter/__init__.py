"""From SQL text to plans: the one seam every statement goes through.

Which file owns each step of a plan:

- statements.py: lexing a Query text into statements (once), parsing one;
- policy_planner.py: each statement's plan by its kind, and the plan cache's
  templates (cache.py);
- query_analysis.py: a query's one analysis (its tree, the relations it
  reads, the function allow-list of functions.py);
- access.py: the one access decision: whether a role reads a relation, and
  as stored, masked or only privately;
- views.py: the views that stand in for relations (a protected table's, for
  masking and for private answers; pg_class without row counts); masking.py
  splices them into the text the user wrote;
- probes.py: zero-row probes; settings.py and named_commands.py: SET, RESET,
  and statements that name cursors and prepared statements;
- private/: differentially private answers (analysis, bounding, release).
"""

from __future__ import annotations

if __name__ != "pgshroud.rewriter":
    raise ImportError(f"pgshroud's rewriter package is imported as pgshroud.rewriter, not as {__name__}")

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pgshroud import sqlstate
from pgshroud.policies.model import Policy, Role
from pgshroud.rewriter.catalog import Catalog
from pgshroud.rewriter.plans import (
    Column,
    Cost,
    Local,
    LocalAnswer,
    Passthrough,
    Plan,
    PrivacySetting,
    QueryPlan,
    RawResult,
    Refuse,
    Release,
    ReleaseSpec,
    Rewrite,
)
from pgshroud.rewriter.policy_planner import QueryAnalyser

__all__ = [
    "Column", "Cost", "Local", "LocalAnswer", "Passthrough", "Plan", "PlanContext",
    "Planner", "PrivacySetting", "QueryPlan", "RawResult", "Refuse", "Release", "ReleaseSpec", "Rewrite", "plan",
    "plan_function_call",
]


@dataclass(frozen=True, slots=True)
class PlanContext:
    """Who is asking and under which policy.

    `policy` is None when pgshroud runs without one (plain pass-through).
    `role_sees_raw` is True for roles whose access is `raw`. `role` and
    `catalog` are what the rewrite of a non-raw role's statements needs.
    `privacy` holds the session's pgshroud settings set with SET
    (`epsilon`, `delta`, as text); absent names take the policy's default.
    """

    user: str
    policy: Policy | None = None
    role_sees_raw: bool = False
    role: Role | None = None
    catalog: Catalog | None = None
    privacy: Mapping[str, str] = field(default_factory=dict)


class Planner(Protocol):
    """The signature of `plan`, so the session can be driven by another planner."""

    def __call__(self, sql: str, context: PlanContext) -> QueryPlan: ...


def plan(sql: str, context: PlanContext) -> QueryPlan:
    """Plan one Query or Parse text.

    Without a policy, or for a role that sees raw data, the text is passed
    through as one unit without being lexed: that path must stay free.
    """
    if context.policy is None or context.role_sees_raw:
        return (Passthrough(sql),)
    if not isinstance(context.policy, Policy) or context.role is None or context.catalog is None:
        return (Refuse(sqlstate.INSUFFICIENT_PRIVILEGE, "pgshroud has no policy role or catalog for this session, so it refuses",
                       hint="The policy may have changed since you connected: reconnect."),)
    return tuple(QueryAnalyser(context.policy, context.role, context.catalog, context.user,
                               context.privacy).plan_text(sql))


def plan_function_call(function_oid: int, context: PlanContext) -> Passthrough | Refuse:
    """The fast-path FunctionCall message names a function by OID, with no
    SQL to analyse: only sessions that see raw data may use it."""
    if context.policy is None or context.role_sees_raw:
        return Passthrough("")
    return Refuse(
        sqlstate.INSUFFICIENT_PRIVILEGE,
        "pgshroud does not allow fast-path function calls",
        hint="Call the function in a SELECT statement instead.",
    )
