"""Reading the catalog snapshot from PostgreSQL, and keeping it fresh."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from psycopg.conninfo import conninfo_to_dict

from proxy.config import ConfigError
from rewriter.catalog import PINNED_SEARCH_PATH, SYSTEM_SCHEMAS, Cast, Catalog, CatalogType, Operator, Relation

log = logging.getLogger("pgshroud.catalog")

_RELATIONS = """
SELECT n.nspname, c.relname, c.relkind,
       coalesce(array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attnum > 0), '{}'),
       coalesce(array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) FILTER (WHERE a.attnum > 0), '{}'),
       coalesce(array_agg(a.attname::text) FILTER (WHERE a.attnum > 0 AND a.attnotnull), '{}')
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
GROUP BY n.nspname, c.relname, c.relkind
"""
_FUNCTIONS = """
SELECT p.proname, n.nspname = 'pg_catalog', array_agg(DISTINCT p.provolatile::text)
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('information_schema')
GROUP BY p.proname, n.nspname = 'pg_catalog'
"""
# Operators that run a function outside pg_catalog (shells, with no
# function, cannot run).
_OPERATORS = """
SELECT n.nspname, o.oprname, fn.nspname || '.' || p.proname, ARRAY[o.oprleft, o.oprright, o.oprresult]
FROM pg_catalog.pg_operator o
JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode
JOIN pg_catalog.pg_namespace fn ON fn.oid = p.pronamespace
WHERE n.nspname <> 'pg_catalog' OR fn.nspname <> 'pg_catalog'
"""
# Functions `x.f` can call as f(x): on the search path, callable with one
# argument (the others defaulted), and not taking `internal`, which no SQL
# value is.
_ATTRIBUTE_FUNCTIONS = """
SELECT DISTINCT n.nspname, p.proname, p.provolatile::text
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = ANY($1::text[]) AND p.pronargs >= 1 AND p.pronargs - p.pronargdefaults <= 1
  AND p.proargtypes[0] <> 'pg_catalog.internal'::pg_catalog.regtype AND p.prokind <> 'p'
"""
# Every type, with the types its values carry or become: array element,
# array of it, a domain's base type.
_TYPES = """
SELECT t.oid, n.nspname, t.typname, ARRAY[t.typelem, t.typarray, t.typbasetype]
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
"""
# A row type's fields.
_FIELDS = """
SELECT c.reltype, array_agg(DISTINCT a.atttypid)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.reltype <> 0 AND n.nspname NOT IN ('pg_catalog', 'information_schema')
GROUP BY c.reltype
"""
# A range's subtype and multirange, and the implicit casts: values turn
# into these without any call in the text.
_LEADS_TO = """
SELECT rngtypid, ARRAY[rngsubtype, rngmultitypid] FROM pg_catalog.pg_range
UNION ALL SELECT rngmultitypid, ARRAY[rngtypid] FROM pg_catalog.pg_range
UNION ALL SELECT castsource, ARRAY[casttarget] FROM pg_catalog.pg_cast WHERE castcontext = 'i'
"""
# What a type runs outside pg_catalog: its input, output, binary, type
# modifier, analyze and subscript functions; a domain's CHECK constraints;
# a range's canonical, subtype_diff and subtype comparison functions; the
# functions of a default btree or hash operator class, which ORDER BY,
# GROUP BY, DISTINCT and joins use.
_RUNS = """
SELECT t.oid, 'function ' || fn.nspname || '.' || p.proname
FROM pg_catalog.pg_type t
JOIN pg_catalog.pg_proc p ON p.oid IN (t.typinput, t.typoutput, t.typreceive, t.typsend, t.typmodin,
                                       t.typmodout, t.typanalyze, t.typsubscript)
JOIN pg_catalog.pg_namespace fn ON fn.oid = p.pronamespace
WHERE fn.nspname <> 'pg_catalog'
UNION
SELECT c.contypid, 'CHECK constraint ' || c.conname
FROM pg_catalog.pg_constraint c
JOIN pg_catalog.pg_type t ON t.oid = c.contypid
JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE c.contype = 'c' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION
SELECT r.rngtypid, 'function ' || fn.nspname || '.' || p.proname
FROM pg_catalog.pg_range r
JOIN pg_catalog.pg_opclass oc ON oc.oid = r.rngsubopc
JOIN pg_catalog.pg_proc p ON p.oid IN (r.rngcanonical, r.rngsubdiff)
  OR p.oid IN (SELECT ap.amproc FROM pg_catalog.pg_amproc ap WHERE ap.amprocfamily = oc.opcfamily)
JOIN pg_catalog.pg_namespace fn ON fn.oid = p.pronamespace
WHERE fn.nspname <> 'pg_catalog'
UNION
SELECT oc.opcintype, 'function ' || fn.nspname || '.' || p.proname
FROM pg_catalog.pg_opclass oc
JOIN pg_catalog.pg_am am ON am.oid = oc.opcmethod AND am.amname IN ('btree', 'hash')
JOIN (SELECT amprocfamily AS family, amproc AS proc FROM pg_catalog.pg_amproc
      UNION ALL
      SELECT ao.amopfamily, o.oprcode FROM pg_catalog.pg_amop ao
      JOIN pg_catalog.pg_operator o ON o.oid = ao.amopopr) f ON f.family = oc.opcfamily
JOIN pg_catalog.pg_proc p ON p.oid = f.proc
JOIN pg_catalog.pg_namespace fn ON fn.oid = p.pronamespace
WHERE oc.opcdefault AND fn.nspname <> 'pg_catalog'
"""
_CASTS = """
SELECT c.castsource, c.casttarget, pg_catalog.format_type(c.castsource, NULL),
       pg_catalog.format_type(c.casttarget, NULL), fn.nspname || '.' || p.proname, c.castcontext::text
FROM pg_catalog.pg_cast c
JOIN pg_catalog.pg_proc p ON p.oid = c.castfunc
JOIN pg_catalog.pg_namespace fn ON fn.oid = p.pronamespace
WHERE fn.nspname <> 'pg_catalog'
"""
# The types a call of a function outside the system schemas brings in.
_FUNCTION_TYPES = """
SELECT p.proname, ARRAY[p.prorettype] || p.proargtypes::pg_catalog.oid[] || coalesce(p.proallargtypes, '{}')
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
"""


def asyncpg_arguments(conninfo: str) -> dict[str, object]:
    """asyncpg takes URIs only; libpq key=value strings are translated."""
    params = conninfo_to_dict(conninfo)
    names = {"host": "host", "port": "port", "user": "user", "password": "password", "dbname": "database",
             "sslmode": "ssl", "passfile": "passfile"}
    arguments: dict[str, object] = {names[k]: v for k, v in params.items() if k in names and v is not None}
    if "port" in arguments:
        arguments["port"] = int(arguments["port"])  # type: ignore[arg-type]
    return arguments


async def connect_own(conninfo: str) -> asyncpg.Connection:
    return await asyncpg.connect(**asyncpg_arguments(conninfo))


async def read_catalog(conninfo: str, version: int = 0) -> Catalog:
    conn = await connect_own(conninfo)
    try:
        relations = {
            (schema, name): Relation(schema, name, kind, tuple(zip(names, types)), frozenset(not_null))
            for schema, name, kind, names, types, not_null in await conn.fetch(_RELATIONS)
        }
        catalog_functions: dict[str, frozenset[str]] = {}
        user_functions: set[str] = set()
        for name, in_catalog, volatilities in await conn.fetch(_FUNCTIONS):
            if in_catalog:
                catalog_functions[name] = frozenset(volatilities)
            else:
                user_functions.add(name)
        schemas = frozenset(r["nspname"] for r in await conn.fetch("SELECT nspname FROM pg_catalog.pg_namespace"))
        attribute_functions: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
        for schema, name, volatility in await conn.fetch(_ATTRIBUTE_FUNCTIONS, list(PINNED_SEARCH_PATH)):
            attribute_functions[name.lower()].add((schema, name, volatility))
        types, casts, type_names, operators = type_hazards(
            types=await conn.fetch(_TYPES),
            leads_to=[*await conn.fetch(_FIELDS), *await conn.fetch(_LEADS_TO)],
            runs=await conn.fetch(_RUNS),
            casts=await conn.fetch(_CASTS),
            function_types=await conn.fetch(_FUNCTION_TYPES),
            operators=await conn.fetch(_OPERATORS),
        )
    finally:
        await conn.close()
    return Catalog(
        relations, catalog_functions, frozenset(user_functions), schemas, version,
        operators=operators,
        attribute_functions={name: frozenset(overloads) for name, overloads in attribute_functions.items()},
        types=types, casts=casts, type_names=type_names,
    )


Rows = Iterable[Sequence[Any]]


def type_hazards(
    *, types: Rows, leads_to: Rows, runs: Rows, casts: Rows, function_types: Rows, operators: Rows
) -> tuple[dict[int, CatalogType], tuple[Cast, ...], dict[str, frozenset[int]], tuple[Operator, ...]]:
    """From the rows of the queries above (each named as its keyword): the
    types that run something outside pg_catalog or lead to one that does
    (all others are left out, so a database without such types costs
    nothing per statement), the casts with functions outside pg_catalog,
    the names that bring those types into a statement, and the operators."""
    names = {oid: (schema, name) for oid, schema, name, _ in types}
    edges: dict[int, set[int]] = defaultdict(set)
    for oid, _, _, others in types:
        edges[oid].update(o for o in others if o)
    for oid, others in leads_to:
        edges[oid].update(o for o in others if o)
    ran: dict[int, set[str]] = defaultdict(set)
    for oid, what in runs:
        ran[oid].add(what)
    hazard_casts = tuple(sorted((Cast(*row) for row in casts), key=lambda c: (c.source, c.target)))
    # Every type from which a type that runs something, or a cast's end, is
    # reachable. System types are in every statement already, so what leads
    # to one need not be followed, and a cast's system end is left out.
    backwards: dict[int, set[int]] = defaultdict(set)
    for oid, others in edges.items():
        for other in others:
            backwards[other].add(oid)
    relevant: set[int] = set()
    ends = {o for c in hazard_casts for o in (c.source, c.target) if names.get(o, ("",))[0] not in SYSTEM_SCHEMAS}
    stack = [*ran, *ends]
    while stack:
        oid = stack.pop()
        if oid in relevant or oid not in names:
            continue
        relevant.add(oid)
        if names[oid][0] not in SYSTEM_SCHEMAS:
            stack.extend(backwards[oid])
    snapshot = {
        oid: CatalogType(oid, *names[oid], tuple(sorted(ran[oid])), frozenset(edges[oid] & relevant))
        for oid in relevant
    }
    # System types are in every statement: only user types need a name.
    user = {oid for oid in relevant if names[oid][0] not in SYSTEM_SCHEMAS}
    type_names: dict[str, set[int]] = defaultdict(set)
    for oid in user:
        type_names[names[oid][1].lower()].add(oid)  # a relation's row type has its name
    for name, oids in function_types:
        if user.intersection(oids):
            type_names[name.lower()].update(user.intersection(oids))
    user_operators = tuple(sorted(
        (Operator(schema, name, function, frozenset(user.intersection(oids)))
         for schema, name, function, oids in operators),
        key=lambda o: (o.schema, o.name, o.function),
    ))
    return snapshot, hazard_casts, {n: frozenset(o) for n, o in type_names.items()}, user_operators


class CatalogKeeper:
    """Holds the current snapshot and refreshes it on an interval."""

    def __init__(self, conninfo: str, interval: float = 10.0) -> None:
        self.conninfo = conninfo
        self.interval = interval
        self.catalog: Catalog | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.catalog = await read_catalog(self.conninfo)
        self._task = asyncio.create_task(self._refresh_forever())

    async def refresh(self) -> None:
        fresh = await read_catalog(self.conninfo, (self.catalog.version + 1) if self.catalog else 0)
        if self.catalog is None or dataclasses.replace(fresh, version=self.catalog.version) != self.catalog:
            self.catalog = fresh
            log.info("catalog snapshot refreshed: %d relations", len(fresh.relations))

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception as exc:  # keep the last good snapshot
                log.warning("catalog refresh failed, keeping the previous snapshot: %s", type(exc).__name__)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def own_conninfo(upstream, policy) -> str:
    """pgshroud's own connections: the policy's admin_dsn, else --upstream's DSN."""
    reference = getattr(policy, "admin_dsn", None)
    if reference is not None:
        if reference.env:
            value = os.environ.get(reference.env)
            if not value:
                raise ConfigError(f"the policy's admin_dsn names environment variable {reference.env}, which is not set")
            return value
        try:
            return Path(reference.file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the policy's admin_dsn file {reference.file}: {exc.strerror}") from None
    return upstream.own_conninfo()
