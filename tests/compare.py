"""Run the same client code against PostgreSQL directly and through pgshroud.

Without a policy pgshroud promises that a client cannot tell it apart from
the PostgreSQL behind it. The client tests express that as: one function
that drives a real client and returns what the client observed, run once
per endpoint, and the two observations must be equal.

Test modules import the `endpoints` fixture from here.
"""

from __future__ import annotations

import difflib
import os
import pprint
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from psycopg.conninfo import make_conninfo

USER = DBNAME = PASSWORD = "app"

T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    """Where a client connects: PostgreSQL itself, or pgshroud in front of it."""

    name: str
    host: str
    port: int
    user: str = USER
    password: str = PASSWORD
    dbname: str = DBNAME

    @property
    def is_proxy(self) -> bool:
        return self.name == "pgshroud"

    def conninfo(self, **params: Any) -> str:
        """libpq conninfo; TLS off on both, so only pgshroud differs."""
        base = {"host": self.host, "port": self.port, "user": self.user, "dbname": self.dbname,
                "password": self.password, "sslmode": "disable"}
        return make_conninfo(**{**base, **params})

    def asyncpg_args(self, **extra: Any) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password,
                "database": self.dbname, "ssl": False, **extra}

    def sqlalchemy_url(self, driver: str) -> Any:
        from sqlalchemy import URL

        query = {"ssl": "disable"} if driver == "asyncpg" else {"sslmode": "disable"}
        return URL.create(f"postgresql+{driver}", username=self.user, password=self.password,
                          host=self.host, port=self.port, database=self.dbname, query=query)

    def libpq_env(self) -> dict[str, str]:
        """Environment for libpq programs (psql) connecting here."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            PGHOST=self.host, PGPORT=str(self.port), PGUSER=self.user, PGDATABASE=self.dbname,
            PGPASSWORD=self.password, PGSSLMODE="disable", PGCONNECT_TIMEOUT="10",
            LC_ALL="C.UTF-8", LANG="C.UTF-8", TZ="UTC", PAGER="", PSQL_PAGER="",
        )
        return env


@dataclass(frozen=True)
class Endpoints:
    direct: Endpoint
    proxied: Endpoint

    def __iter__(self):
        return iter((self.direct, self.proxied))


@pytest.fixture(scope="session")
def endpoints(pg, shroud) -> Endpoints:
    return Endpoints(
        direct=Endpoint("direct", str(pg.host), int(pg.port)),
        proxied=Endpoint("pgshroud", str(shroud.host), int(shroud.port)),
    )


def run_both(endpoints: Endpoints, function: Callable[[Endpoint], T], *, what: str = "") -> T:
    """Run `function` directly, then through pgshroud; fail unless both
    observed the same. Returns the (common) observation."""
    direct = function(endpoints.direct)
    proxied = function(endpoints.proxied)
    assert_same(direct, proxied, what=what or getattr(function, "__name__", "observation"))
    return direct


def assert_same(direct: Any, proxied: Any, *, what: str) -> None:
    if direct == proxied:
        return
    left = pprint.pformat(direct, width=110).splitlines()
    right = pprint.pformat(proxied, width=110).splitlines()
    diff = list(difflib.unified_diff(left, right, "direct", "through pgshroud", n=2, lineterm=""))
    shown = "\n".join(diff[:120])
    more = f"\n... {len(diff) - 120} more diff lines" if len(diff) > 120 else ""
    pytest.fail(f"{what}: what the client saw through pgshroud differs from PostgreSQL directly:\n"
                f"{shown}{more}", pytrace=False)


def scratch_name(prefix: str = "scratch") -> str:
    """A table name no other test (or earlier run) uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def error_summary(exc: BaseException) -> tuple[str, str | None, str]:
    """What a client's error looks like to an application: class, SQLSTATE, message."""
    sqlstate = getattr(exc, "sqlstate", None)
    message = getattr(getattr(exc, "diag", None), "message_primary", None)
    if message is None:
        text = str(exc)
        message = text.splitlines()[0] if text else ""
    return type(exc).__name__, sqlstate, message


def outcome(function: Callable[[], T]) -> tuple[str, Any]:
    """("ok", result) or ("error", error_summary) for one client call."""
    try:
        return "ok", function()
    except Exception as exc:  # noqa: BLE001 - the error itself is the observation
        return "error", error_summary(exc)
