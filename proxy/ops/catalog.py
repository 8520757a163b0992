"""Reading the catalog snapshot from PostgreSQL, and keeping it fresh."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from pgshroud import sqlstate
from pgshroud.policies.model import Policy
from pgshroud.policies.setup_sql import CATALOG_CHANNEL, CATALOG_TRIGGERS
from pgshroud.proxy.ops.config import UpstreamTarget
from pgshroud.proxy.ops.connect import connect_own
from pgshroud.proxy.ops.errors import ConfigError
from pgshroud.rewriter import PlanContext, Planner, QueryPlan, Refuse
from pgshroud.rewriter.catalog import PINNED_SEARCH_PATH, SYSTEM_SCHEMAS, Cast, Catalog, CatalogType, Operator, Relation

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
# Unique keys of user tables (no partial or expression indexes): a private
# query joins a public table only on one (rewriter/private/fan_out.py).
_UNIQUE_KEYS = """
SELECT n.nspname, c.relname, array_agg(a.attname::text)
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey)
WHERE i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
GROUP BY n.nspname, c.relname, i.indexrelid
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


async def read_catalog(conninfo: str, version: int = 0) -> Catalog:
    conn = await connect_own(conninfo)
    try:
        return await read_catalog_from(conn, version)
    finally:
        await conn.close()


async def read_catalog_from(conn: asyncpg.Connection, version: int = 0) -> Catalog:
    # One snapshot for every query: a change committed halfway through is
    # in all of them or in none.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        unique_keys: dict[tuple[str, str], list[frozenset[str]]] = defaultdict(list)
        for schema, name, columns in await conn.fetch(_UNIQUE_KEYS):
            unique_keys[(schema, name)].append(frozenset(columns))
        relations = {
            (schema, name): Relation(schema, name, kind, tuple(zip(names, types)), frozenset(not_null),
                                     tuple(unique_keys.get((schema, name), ())))
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


# Whether pgshroud setup's event triggers are there and enabled.
_NOTIFYING = """
SELECT count(*) = $2 FROM pg_catalog.pg_event_trigger WHERE evtname = ANY($1::text[]) AND evtenabled <> 'D'
"""


async def notifications_installed(conn: asyncpg.Connection) -> bool:
    """Whether schema changes in the connection's database are notified to pgshroud."""
    return bool(await conn.fetchval(_NOTIFYING, list(CATALOG_TRIGGERS), len(CATALOG_TRIGGERS)))


STALE_SQLSTATE = sqlstate.OBJECT_NOT_IN_PREREQUISITE_STATE
APPLICATION_NAME = "pgshroud catalog"  # the keeper's connection, as pg_stat_activity shows it


class CatalogKeeper:
    """Holds the catalog snapshot: read at start, again as soon as PostgreSQL
    notifies a schema change (pgshroud setup's event triggers), and on an
    interval in any case.

    `catalog` is what sessions plan against. It is None, so that statements
    of non-raw roles are refused (`guard`), whenever the snapshot may be
    stale: a change was notified and the snapshot that includes it is not
    read yet, the last refresh failed, the connection that hears
    notifications is down, or the snapshot is older than `max_age`. The
    check costs sessions one attribute read; the keeper does the rest.
    What remains: between a change's commit and its notification's arrival
    (well under a millisecond locally) the old snapshot is still used."""

    def __init__(self, conninfo: str, interval: float = 10.0, max_age: float | None = None,
                 retry: float = 1.0) -> None:
        self.conninfo = conninfo
        self.interval = interval
        self.max_age = 3 * interval if max_age is None else max_age
        self.retry = min(retry, interval)
        self.catalog: Catalog | None = None
        self.snapshot: Catalog | None = None  # the last one read, stale or not
        self.stale_reason: str | None = "not read yet"
        self.notifying = False  # the event triggers are installed and enabled
        self.notified_at: float | None = None  # time.monotonic() of the last notification
        self.refreshed_at: float | None = None  # ... of the last snapshot published
        self.notices = 0  # schema changes notified so far
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._conn: asyncpg.Connection | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self.refresh()
        except BaseException:
            self.stop()
            raise
        assert self.snapshot is not None  # refresh() published one or raised
        log.info("catalog snapshot read: %d relations; schema changes %s", len(self.snapshot.relations),
                 "are notified" if self.notifying else "are NOT notified, it is read again every "
                 f"{self.interval:g} s (pgshroud setup as a superuser installs the event triggers)")
        self._task = asyncio.create_task(self._refresh_forever())

    def guard(self, planner: Planner) -> Planner:
        """`planner`, refusing with a clear message the statements it would
        analyse while the snapshot may be stale (without a catalog the
        planner refuses them too, but cannot say why)."""
        def guarded(sql: str, context: PlanContext) -> QueryPlan:
            if context.catalog is None and context.role is not None and not context.role_sees_raw:
                return (Refuse(
                    STALE_SQLSTATE,
                    "pgshroud's catalog snapshot may be out of date (the schema changed, or it could not be "
                    "read again), so it refuses statements it must analyse until it has read the catalog again",
                    hint="Run the statement again in a moment; if this goes on, see pgshroud's log.",
                ),)
            return planner(sql, context)
        return guarded

    async def refresh(self) -> None:
        """Read the snapshot again, over the connection that listens for
        notifications (opened first if need be, so that no change between
        the two is missed), and publish it if no change was notified while
        it was read; otherwise read again."""
        async with self._lock:
            for _ in range(5):
                if self._conn is None:
                    await self._connect()
                conn = self._conn
                notices, started = self.notices, time.monotonic()
                version = self.snapshot.version + 1 if self.snapshot is not None else 0
                async with asyncio.timeout(self.max_age):
                    fresh = await read_catalog_from(conn, version)
                    notifying = await notifications_installed(conn)
                if self.notices == notices and self._conn is conn:
                    self._publish(fresh, notifying, started)
                    return
            raise RuntimeError("the schema kept changing while the catalog was read")

    def _publish(self, fresh: Catalog, notifying: bool, started: float) -> None:
        if self.snapshot is None or dataclasses.replace(fresh, version=self.snapshot.version) != self.snapshot:
            self.snapshot = fresh
            log.info("catalog snapshot refreshed: %d relations", len(fresh.relations))
        if notifying != self.notifying and self.catalog is not None:
            log.warning("schema changes are %s notified to pgshroud", "now" if notifying else "no longer")
        self.notifying = notifying
        if self.stale_reason is not None and self.catalog is None and self.refreshed_at is not None:
            log.info("catalog snapshot current again")
        self.stale_reason = None
        self.catalog = self.snapshot
        self.refreshed_at = time.monotonic()
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().call_later(
            max(0.0, started + self.max_age - self.refreshed_at), self._expired)

    def _expired(self) -> None:
        self._stale(f"it was not read again for {self.max_age:g} s")
        self._wake.set()

    def _stale(self, reason: str, level: int = logging.WARNING) -> None:
        if self.catalog is not None:
            log.log(level, "catalog snapshot may be stale (%s): refusing non-raw statements until it is read again",
                    reason)
        self.catalog = None
        self.stale_reason = reason

    async def _connect(self) -> None:
        conn = await connect_own(self.conninfo, APPLICATION_NAME)
        try:
            conn.add_termination_listener(self._lost)
            await conn.add_listener(CATALOG_CHANNEL, self._notified)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn

    def _notified(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self.notices += 1
        self.notified_at = time.monotonic()
        self._stale(f"schema change {payload} notified", logging.INFO)
        self._wake.set()

    def _lost(self, conn: asyncpg.Connection) -> None:
        if conn is self._conn:
            self._conn = None
            self._stale("the connection that hears schema changes was lost")
            self._wake.set()

    async def _refresh_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # the interval passed: refresh anyway
                await asyncio.wait_for(self._wake.wait(), self.interval if self.catalog is not None else self.retry)
            self._wake.clear()
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - whatever failed, refuse until a refresh succeeds, and retry soon
                self._stale(f"the refresh failed: {type(exc).__name__}")
                log.warning("catalog refresh failed: %s: %s", type(exc).__name__, exc)
                self._drop_connection()  # in an unknown state; the next refresh listens anew

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._expiry is not None:
            self._expiry.cancel()
        self._drop_connection()


def own_conninfo(upstream: UpstreamTarget, policy: Policy | None) -> str:
    """pgshroud's own connections: the policy's admin_dsn, else --upstream's DSN."""
    reference = policy.admin_dsn if policy is not None else None
    if reference is not None and reference.env:
        value = os.environ.get(reference.env)
        if not value:
            raise ConfigError(f"the policy's admin_dsn names environment variable {reference.env}, which is not set")
        return value
    if reference is not None and reference.file:
        try:
            return Path(reference.file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the policy's admin_dsn file {reference.file}: {exc.strerror}") from None
    return upstream.own_conninfo()
