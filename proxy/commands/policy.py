"""`pgshroud check` and `pgshroud explain`: the policy, for humans."""

from __future__ import annotations

import asyncio

from pgshroud.policies.loader import load_policy
from pgshroud.policies.model import Access, Policy
from pgshroud.proxy.ops.access_check import access_warnings
from pgshroud.proxy.ops.catalog import own_conninfo, read_catalog
from pgshroud.proxy.ops.config import ConfigError, UpstreamTarget
from pgshroud.proxy.ops.connect import connect_own
from pgshroud.rewriter import PlanContext, Release, plan
from pgshroud.rewriter.catalog import SYSTEM_SCHEMAS, Catalog


def run_check(path: str, upstream: str | None) -> int:
    policy = load_policy(path)
    print(f"{path}: valid: {len(policy.roles)} roles, {len(policy.protected_tables)} protected tables, "
          f"{len(policy.public_tables)} public tables")
    if upstream is None:
        return 0
    target = UpstreamTarget.parse(upstream)
    warnings = asyncio.run(_compare(policy, own_conninfo(target, policy)))
    for line in warnings:
        print(f"warning: {line}")
    print(f"{len(warnings)} warning(s) against the live catalog at {target.describe()}")
    return 1 if warnings else 0


async def _compare(policy: Policy, conninfo: str) -> list[str]:
    catalog = await read_catalog(conninfo)
    warnings = uncovered(policy, catalog)
    conn = await connect_own(conninfo)
    try:
        warnings += await access_warnings(policy, conn)
    finally:
        await conn.close()
    return warnings


def uncovered(policy: Policy, catalog: Catalog) -> list[str]:
    """Relations and columns in the database that the policy does not name."""
    out = []
    for (schema, name), relation in sorted(catalog.relations.items()):
        if schema in SYSTEM_SCHEMAS or schema == "pgshroud":
            continue
        qualified = relation.qualified
        table = policy.protected_tables.get(qualified)
        if table is None:
            if qualified not in policy.public_tables:
                out.append(f"relation {qualified} is not in the policy: non-raw roles are refused it")
            continue
        for column, _ in relation.columns:
            if column not in table.columns:
                out.append(f"column {qualified}.{column} is not in the policy: it reads as NULL")
    for name in sorted(policy.protected_tables.keys() | policy.public_tables):
        schema, _, table_name = name.partition(".")
        if (schema, table_name) not in catalog.relations:
            out.append(f"the policy names {name}, which does not exist upstream")
    return out


def run_explain(sql: str, *, policy_path: str, upstream: str, role: str) -> int:
    policy = load_policy(policy_path)
    chosen = policy.roles.get(role)
    if chosen is None:
        raise ConfigError(f"--role {role}: the policy has no such role (it has {', '.join(policy.roles)})")
    catalog = asyncio.run(read_catalog(own_conninfo(UpstreamTarget.parse(upstream), policy)))
    user = chosen.users[0] if chosen.users else role
    context = PlanContext(user=user, policy=policy, role_sees_raw=chosen.access == Access.RAW, role=chosen,
                          catalog=catalog)
    for number, step in enumerate(plan(sql, context), 1):
        kind = type(step).__name__
        print(f"statement {number}: {kind}")
        if isinstance(step, Release):
            for line in step.spec.explain():
                print(f"  {line}")
            continue
        for field in ("sql", "sqlstate", "message", "hint"):
            value = getattr(step, field, None)
            if value:
                print(f"  {field}: {value}")
    return 0


