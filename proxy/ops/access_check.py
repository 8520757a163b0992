"""Ways around pgshroud that the live database leaves open.

`pgshroud check --upstream` prints these and `pgshroud serve` logs them at
startup: pg_hba.conf rules that let users in without a password (for every
role: a raw role reached by trust is the worst case), and masked or
aggregate users who could read protected tables over a direct connection
(their own privileges or a role's they belong to, superusers, pg_hba.conf
rules that let them reach PostgreSQL at all); schema changes that pgshroud
is not told of as they commit (no event triggers), and masked or aggregate
users who may create objects on pgshroud's pinned search path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from pgshroud.policies.model import Access, Policy
from pgshroud.proxy.ops.catalog import notifications_installed
from pgshroud.rewriter.catalog import PINNED_SEARCH_PATH

# Methods with which PostgreSQL lets a connection in without the client
# proving it knows a password. Through pgshroud the "client" is pgshroud.
NO_PASSWORD = ("trust", "peer", "ident", "cert")

HBA_UNREADABLE = ("cannot read pg_hba_file_rules (it needs superuser, or SELECT on pg_hba_file_rules and EXECUTE "
                  "on pg_hba_file_rules() granted to pgshroud's user): pg_hba.conf was not checked for trust "
                  "rules or direct access")

_USERS = """
SELECT r.rolname, r.rolsuper
FROM pg_catalog.pg_roles r
WHERE r.rolcanlogin OR r.rolname = ANY($1::text[])
"""

# For each (user, protected table) the user may read some column of, over a
# direct connection (inherited or after SET ROLE): the roles that hold the
# privilege themselves (as owner or by a grant, on the table or a column;
# the user first), and whether PUBLIC holds it.
_READERS = """
SELECT u.rolname AS "user", t.name AS "table",
       coalesce(array_agg(r.rolname::text ORDER BY r.rolname <> u.rolname, r.rolname)
                FILTER (WHERE pg_temp.pgshroud_grants(c.oid, r.oid)), '{}') AS through,
       pg_temp.pgshroud_grants(c.oid, 0) AS public
FROM unnest($1::text[]) AS users(name)
JOIN pg_catalog.pg_roles u ON u.rolname = users.name
CROSS JOIN unnest($2::text[], $3::text[], $4::text[]) AS t(name, nsp, rel)
CROSS JOIN LATERAL (SELECT pg_catalog.to_regclass(format('%I.%I', t.nsp, t.rel)) AS oid) c
JOIN pg_catalog.pg_roles r ON pg_catalog.pg_has_role(u.oid, r.oid, 'MEMBER')
                          AND pg_catalog.has_any_column_privilege(r.oid, c.oid, 'SELECT')
WHERE c.oid IS NOT NULL
GROUP BY u.rolname, t.name, c.oid
ORDER BY u.rolname, t.name
"""
# Whether a role (0: PUBLIC) owns a relation or holds SELECT on it or on
# one of its columns by a grant of its own.
_GRANTS = """
CREATE FUNCTION pg_temp.pgshroud_grants(rel oid, grantee oid) RETURNS boolean
LANGUAGE sql STABLE AS $$
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class k WHERE k.oid = rel AND (k.relowner = grantee OR EXISTS (
                   SELECT 1 FROM pg_catalog.aclexplode(k.relacl) a
                   WHERE a.grantee = $2 AND a.privilege_type = 'SELECT')))
    OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute at, pg_catalog.aclexplode(at.attacl) a
               WHERE at.attrelid = rel AND a.grantee = $2 AND a.privilege_type = 'SELECT')
$$
"""

_HBA = """
SELECT line_number, type, database, user_name, address, netmask, auth_method
FROM pg_catalog.pg_hba_file_rules
WHERE error IS NULL
ORDER BY line_number
"""

_MEMBERS = "SELECT pg_catalog.pg_has_role($1, $2, 'MEMBER')"

# (user, schema) for each schema of $2 in which the user may create objects.
_CREATORS = """
SELECT u.rolname, n.nspname
FROM unnest($1::text[]) AS users(name)
JOIN pg_catalog.pg_roles u ON u.rolname = users.name
CROSS JOIN unnest($2::text[]) WITH ORDINALITY AS s(name, position)
JOIN pg_catalog.pg_namespace n ON n.nspname = s.name
WHERE pg_catalog.has_schema_privilege(u.oid, n.oid, 'CREATE')
ORDER BY u.rolname, s.position
"""

NOT_NOTIFIED = ("schema changes in this database are not notified to pgshroud (no enabled event triggers "
                "pgshroud_catalog_ddl and pgshroud_catalog_drop; pgshroud setup installs them when run as a "
                "superuser): pgshroud reads the catalog again only every 10 s, and until then a function, operator, "
                "type or cast just created is unknown to it and can run in masked and aggregate users' statements")


@dataclass(frozen=True)
class _User:
    name: str
    role: str
    access: Access
    superuser: bool


async def access_warnings(policy: Policy, conn: asyncpg.Connection) -> list[str]:
    """Warnings, one line each, about ways the database lets users around pgshroud."""
    users = await _policy_users(policy, conn)
    out = await _direct_readers(policy, users, conn)
    if not await notifications_installed(conn):
        out.append(NOT_NOTIFIED)
    out += await _creators(users, conn)
    try:
        rules = await conn.fetch(_HBA)
    except asyncpg.PostgresError:
        return out + [HBA_UNREADABLE]
    return out + await _hba_warnings(policy, users, rules, conn)


async def _policy_users(policy: Policy, conn: asyncpg.Connection) -> dict[str, _User]:
    """The database's users as the policy sees them: those it names, and,
    when it has a default role, every other user that can log in."""
    named = {u: r for r in policy.roles.values() for u in r.users}
    default = policy.roles.get(policy.default_role) if policy.default_role is not None else None
    users: dict[str, _User] = {}
    for row in await conn.fetch(_USERS, sorted(named)):
        role = named.get(row["rolname"], default)
        if role is not None and role.access != Access.DENY:
            users[row["rolname"]] = _User(row["rolname"], role.name, role.access, row["rolsuper"])
    return users


async def _direct_readers(policy: Policy, users: dict[str, _User], conn: asyncpg.Connection) -> list[str]:
    out = []
    non_raw = sorted(u for u, user in users.items() if user.access != Access.RAW)
    for name in non_raw:
        user = users[name]
        if user.superuser:
            out.append(f"user {name} (role {user.role}) is a superuser: a direct connection bypasses pgshroud "
                       "and every privilege")
    tables = sorted(policy.protected_tables)
    schemas, relations = zip(*(t.split(".", 1) for t in tables)) if tables else ((), ())
    await conn.execute(_GRANTS)
    rows = await conn.fetch(_READERS, [u for u in non_raw if not users[u].superuser], tables,
                            list(schemas), list(relations))
    for row in rows:
        user, through = users[row["user"]], row["through"]
        who, table = f"user {user.name} (role {user.role})", row["table"]
        if through and through[0] == user.name:
            out.append(f"{who} holds SELECT on {table}: a direct connection bypasses pgshroud")
        elif through:
            out.append(f"{who} may SELECT {table} as a member of {', '.join(through)}: a direct connection "
                       "bypasses pgshroud")
        elif row["public"]:
            out.append(f"{who} may SELECT {table}, which is granted to PUBLIC: a direct connection bypasses "
                       "pgshroud")
        else:
            out.append(f"{who} may SELECT {table} through a predefined role such as pg_read_all_data: a direct "
                       "connection bypasses pgshroud")
    return out


async def _creators(users: dict[str, _User], conn: asyncpg.Connection) -> list[str]:
    """Masked and aggregate users (superusers are warned of already) who may
    define functions, operators, types and casts where their statements
    through pgshroud find them unqualified."""
    candidates = sorted(u for u, user in users.items() if user.access != Access.RAW and not user.superuser)
    out = []
    for name, schema in await conn.fetch(_CREATORS, candidates, list(PINNED_SEARCH_PATH)):
        user = users[name]
        out.append(f"user {name} (role {user.role}) may CREATE in schema {schema}, on pgshroud's search path: over "
                   "a direct connection it can define operators, casts, types and functions that pgshroud refuses "
                   "only once its catalog snapshot has them; revoke CREATE on the schema")
    return out


async def _hba_warnings(
    policy: Policy, users: dict[str, _User], rules: list[asyncpg.Record], conn: asyncpg.Connection
) -> list[str]:
    out = []
    # PostgreSQL takes the first rule that matches; a later rule for the very
    # same connections never applies to the users an earlier one matched.
    claimed: dict[tuple[object, ...], set[str]] = {}  # (type, databases, address, netmask) -> users
    allowed = policy.authentication.allow_upstream_trust
    for rule in rules:
        criteria = (rule["type"], tuple(rule["database"] or ()), rule["address"], rule["netmask"])
        earlier = claimed.setdefault(criteria, set())
        matched = await _matching(rule["user_name"] or [], users, conn)
        admitted = sorted(set(matched) - earlier)
        earlier.update(matched)
        if not admitted or rule["auth_method"] == "reject":
            continue
        where = "through the local socket" if rule["type"] == "local" else f"from {rule['address']}"
        method = rule["auth_method"]
        if method in NO_PASSWORD:
            who = _names(admitted)
            if "all" in (rule["user_name"] or []):
                who = f"every user ({who} among them)"
            raw = [u for u in admitted if users[u].access == Access.RAW]
            line = (f"pg_hba.conf line {rule['line_number']} lets {who} in {where} without a password ({method}): "
                    "whoever reaches PostgreSQL there can claim these users")
            if raw:
                line += f", raw ones too ({_names(raw)})"
            relayed = sorted({users[u].role for u in admitted if users[u].role in allowed})
            if relayed:
                line += (f"; the policy lets such logins through pgshroud for role(s) {', '.join(relayed)} "
                         "(authentication.allow_upstream_trust)")
            else:
                line += "; pgshroud refuses such logins when it relays authentication"
            out.append(line)
            continue
        non_raw = [u for u in admitted if users[u].access != Access.RAW]
        if non_raw:
            out.append(f"pg_hba.conf line {rule['line_number']} admits {_names(non_raw)} {where}: "
                       "make sure only pgshroud can reach PostgreSQL for these users")
    return out


async def _matching(names: list[str], users: dict[str, _User], conn: asyncpg.Connection) -> list[str]:
    """The users a pg_hba.conf user field matches: all, a name, +group
    (members of the group) or /regex (PostgreSQL 16 and later)."""
    if "all" in names:
        return sorted(users)
    matched = set()
    for name in names:
        if name.startswith("+"):
            for user in users:
                try:
                    if await conn.fetchval(_MEMBERS, user, name[1:]):
                        matched.add(user)
                except asyncpg.PostgresError:  # the group does not exist
                    break
        elif name.startswith("/"):
            try:
                pattern = re.compile(name[1:])
            except re.error:  # a regex Python reads differently: assume it matches
                matched.update(users)
                continue
            matched.update(u for u in users if pattern.search(u))
        elif name in users:
            matched.add(name)
    return sorted(matched)


def _names(users: list[str], most: int = 10) -> str:
    if len(users) <= most:
        return ", ".join(users)
    return f"{', '.join(users[:most])} and {len(users) - most} more"
