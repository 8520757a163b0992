"""A protected relation's view never shows the raw privacy unit to a row-level
reader: the masked view reads the unit through its mask for every role and
table of the shipped policies, and only the view a private answer is bounded
in reads it raw, as contribution bounding needs it (pure, no PostgreSQL)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlglot import exp, parse_one

from pgshroud.policies.loader import load_policy
from pgshroud.policies.model import Policy
from pgshroud.rewriter import PlanContext, plan
from pgshroud.rewriter.access import AccessRefused, Reading, decide
from pgshroud.rewriter.catalog import Catalog, Relation
from pgshroud.rewriter.masking import masked_subquery
from pgshroud.rewriter.plans import Refuse, Release, Rewrite
from pgshroud.rewriter.private.analysis import aggregate_view
from pgshroud.rewriter.views import INNER_ALIAS

ROOT = Path(__file__).resolve().parents[2]
POLICIES = [ROOT / "policies" / "examples" / "healthcare.yaml", *sorted((ROOT / "tests" / "data").glob("*.yaml"))]
SCHEMA = ROOT / "proxy" / "commands" / "demo_data" / "schema.sql"
FORMAT_TYPES = {"timestamptz": "timestamp with time zone"}


def _relations() -> dict[tuple[str, str], Relation]:
    """The demo schema's tables, each with one column no policy names."""
    relations = {}
    for name, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\n\);", SCHEMA.read_text(), re.DOTALL):
        columns = []
        for line in body.strip().splitlines():
            column, type_name = re.match(r"\s*(\w+) (\w+(?:\(\d+,\d+\))?)", line).groups()
            columns.append((column, FORMAT_TYPES.get(type_name, type_name)))
        columns.append(("unnamed_in_policy", "text"))
        relations[("public", name)] = Relation("public", name, "r", tuple(columns))
    return relations


CATALOG = Catalog(relations=_relations(),
                  catalog_functions={"count": frozenset("i"), "sum": frozenset("i")})
CASES = [
    pytest.param(policy, role, table, id=f"{path.stem}-{role}-{table}")
    for path in POLICIES
    for policy in [load_policy(path)]
    for role in policy.roles
    for table in policy.protected_tables
]


def _raw_unit_items(sql: str, unit: str) -> int:
    """How many select items of views over a stored relation read the
    privacy unit's stored value as it is (bare, under any name)."""
    raw = INNER_ALIAS.strip('"')
    count = 0
    for select in parse_one(sql, read="postgres").find_all(exp.Select):
        source = select.args.get("from_") or select.args.get("from")
        if source is None or source.this.alias != raw:
            continue
        for item in select.expressions:
            node = item.unalias()
            if isinstance(node, exp.Column) and node.table == raw and node.name == unit:
                count += 1
    return count


def _relation(table: str) -> Relation:
    schema, name = table.split(".")
    return CATALOG.relations[(schema, name)]


@pytest.mark.parametrize(("policy", "role", "table"), CASES)
def test_the_masked_view_reads_the_unit_only_through_its_mask(policy: Policy, role: str, table: str) -> None:
    protected = policy.protected_tables[table]
    view = masked_subquery(protected, _relation(table), role, protected.row_filters.get(role))
    assert _raw_unit_items(f"SELECT * FROM {view} AS v", protected.privacy_unit.column) == 0, view


@pytest.mark.parametrize(("policy", "role", "table"), CASES)
def test_the_private_view_reads_the_unit_raw(policy: Policy, role: str, table: str) -> None:
    protected = policy.protected_tables[table]
    view = aggregate_view(protected, _relation(table), role)
    assert _raw_unit_items(f"SELECT * FROM {view} AS v", protected.privacy_unit.column) == 1, view


def _context(policy: Policy, role: str) -> PlanContext:
    user = (policy.roles[role].users or (role,))[0]
    return PlanContext(user, policy, role_sees_raw=False, role=policy.roles[role], catalog=CATALOG,
                       privacy={"epsilon": "1", "delta": "1e-6"})


@pytest.mark.parametrize(("policy", "role", "table"), CASES)
def test_plans_read_the_raw_unit_only_for_a_private_answer(policy: Policy, role: str, table: str) -> None:
    """What the planner sends for a row-level read and for an aggregate: the
    raw unit appears only in a Release, and only for a role the access
    decision lets read the table privately."""
    relation = _relation(table)
    unit = policy.protected_tables[table].privacy_unit.column
    try:
        reading = decide(policy, policy.roles[role], relation).reading
    except AccessRefused:
        reading = None
    for sql in (f"SELECT * FROM {relation.name}", f"SELECT count(*) FROM {relation.name}"):
        (result,) = plan(sql, _context(policy, role))
        if reading == Reading.RAW:
            continue  # such a role reads the table as stored, by the policy's word
        if isinstance(result, Release):
            assert reading == Reading.PRIVATE, (sql, result)
            assert _raw_unit_items(result.sql, unit) >= 1, result.sql
        elif isinstance(result, Rewrite):
            assert reading == Reading.MASKED, (sql, result)
            assert _raw_unit_items(result.sql, unit) == 0, result.sql
        else:
            assert isinstance(result, Refuse), (sql, result)
