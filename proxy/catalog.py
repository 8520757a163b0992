"""Reading the catalog snapshot from PostgreSQL, and keeping it fresh."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import asyncpg
from psycopg.conninfo import conninfo_to_dict

from proxy.config import ConfigError
from rewriter.catalog import Catalog, Relation

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
    finally:
        await conn.close()
    return Catalog(relations, catalog_functions, frozenset(user_functions), schemas, version)


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
        if self.catalog is None or fresh.relations != self.catalog.relations or (
            fresh.catalog_functions != self.catalog.catalog_functions
            or fresh.user_function_names != self.catalog.user_function_names
        ):
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
