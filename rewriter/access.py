"""Who may read which relation, and how: the one access decision.

Row-level statements (rewriter/policy_planner.py) and private answers
(rewriter/private/analysis.py) both ask `decide` and build what its answer
names, so the two can never disagree on whether a relation may be read, or
whether it is read as stored, masked, or only inside private aggregates.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pgshroud.policies.model import Access, Policy, ProtectedTable, Role
from pgshroud.rewriter.catalog import SYSTEM_SCHEMAS, Relation

# Catalog relations that expose data values or other sessions' statements.
HIDDEN_CATALOG = frozenset(
    [
        "pg_statistic", "pg_stats", "pg_stats_ext", "pg_stats_ext_exprs", "pg_statistic_ext_data", "pg_stat_activity",
        "pg_stat_statements", "pg_stat_statements_info", "pg_largeobject", "pg_authid", "pg_shadow", "pg_user_mapping",
        "pg_user_mappings", "pg_prepared_xacts", "pg_stat_progress_copy", "pg_prepared_statements", "pg_cursors",
    ]
)
PRIVATE_HINT = (
    "Write a SELECT with count, sum, avg, ... (and GROUP BY), or add LIMIT 0 to see the columns; row-level "
    "reads, COPY and SQL-level PREPARE of private queries are refused (prepare them through the protocol, or "
    "read them through DECLARE ... CURSOR)."
)


class Reading(Enum):
    """How a role reads a relation it may read."""

    CATALOG = "catalog"  # a system catalog relation, as stored
    CATALOG_WITHOUT_ROW_COUNTS = "catalog without row counts"  # pg_class, for roles that aggregate
    PUBLIC = "public"  # a public table, as stored
    RAW = "raw"  # a protected table, as stored
    MASKED = "masked"  # a protected table, through its masked view
    PRIVATE = "private"  # a protected table, only inside differentially private aggregates


@dataclass(frozen=True)
class AccessDecision:
    reading: Reading
    table: ProtectedTable | None = None  # the policy's entry, for a protected table


class AccessRefused(Exception):
    """The role may not read the relation at all; the message says why, the hint what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def decide(policy: Policy, role: Role, relation: Relation) -> AccessDecision:
    """How `role` reads `relation`, or AccessRefused."""
    if relation.schema == "pgshroud":
        raise AccessRefused("pgshroud's own schema is not readable")
    if relation.schema in SYSTEM_SCHEMAS:
        return _catalog(role, relation)
    name = relation.qualified
    access = role.access_to(name)
    if name in policy.public_tables:
        if access == Access.DENY:
            raise AccessRefused(f'role "{role.name}" may not read "{name}"')
        return AccessDecision(Reading.PUBLIC)
    table = policy.protected_tables.get(name)
    if table is None:
        raise AccessRefused(f'relation "{name}" is not named in the policy',
                            hint="Ask the privacy officer to declare it public or protected.")
    if access == Access.DENY:
        raise AccessRefused(f'role "{role.name}" may not read "{name}"')
    reading = {Access.RAW: Reading.RAW, Access.MASKED: Reading.MASKED, Access.AGGREGATE: Reading.PRIVATE}[access]
    return AccessDecision(reading, table)


def _catalog(role: Role, relation: Relation) -> AccessDecision:
    if relation.name in HIDDEN_CATALOG:
        raise AccessRefused(f'"{relation.qualified}" exposes data values or other sessions\' statements')
    if role.access == Access.AGGREGATE and relation.name.startswith(("pg_stat_", "pg_statio_")):
        raise AccessRefused(f'"{relation.qualified}" reveals row counts to aggregate roles')
    if role.access == Access.AGGREGATE and relation.qualified == "pg_catalog.pg_class":
        return AccessDecision(Reading.CATALOG_WITHOUT_ROW_COUNTS)
    return AccessDecision(Reading.CATALOG)
