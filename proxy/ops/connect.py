"""pgshroud's own connections to PostgreSQL through asyncpg (the catalog, the
ledger, the auth query), from the libpq conninfo strings the configuration
holds."""

from __future__ import annotations

import asyncpg
from psycopg.conninfo import conninfo_to_dict


def asyncpg_arguments(conninfo: str) -> dict[str, object]:
    """asyncpg takes URIs only; libpq key=value strings are translated."""
    params = conninfo_to_dict(conninfo)
    names = {"host": "host", "port": "port", "user": "user", "password": "password", "dbname": "database",
             "sslmode": "ssl", "passfile": "passfile"}
    arguments: dict[str, object] = {names[k]: v for k, v in params.items() if k in names and v is not None}
    port = params.get("port")
    if port is not None:
        arguments["port"] = int(port)
    return arguments


async def connect_own(conninfo: str, application_name: str | None = None) -> asyncpg.Connection:
    settings = {"application_name": application_name} if application_name else None
    return await asyncpg.connect(**asyncpg_arguments(conninfo), server_settings=settings)
