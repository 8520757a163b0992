"""pytest plugin: the demo's healthcare database behind a pgshroud that
enforces the example policy (admin raw, clinician masked, analyst aggregate)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
from psycopg.conninfo import make_conninfo

from pgshroud.policies.loader import load_policy
from pgshroud.policies.model import Budgets, EpsilonDelta, Policy
from pgshroud.proxy.budget.ledger import PostgresLedger
from pgshroud.proxy.commands.demo_data import load_demo_dataset
from pgshroud.proxy.commands.pgcluster import ThrowawayCluster
from pgshroud.proxy.commands.setup import run_setup
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.proxy.session.driver import SessionContext
from pgshroud.rewriter import plan
from tests.fix_proxy import RunningProxy, proxy_config

HEALTH_PATIENTS = 400
ROLES = ("admin", "clinician", "analyst")


@pytest.fixture(scope="session")
def health_db(pg: ThrowawayCluster) -> str:
    """Database `health` with the demo dataset, demo roles and pgshroud's setup; returns its admin DSN."""
    for role in ROLES:
        pg.execute(f"DROP ROLE IF EXISTS {role}")
        pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{role}'")
    pg.execute("CREATE DATABASE health OWNER admin")
    load_demo_dataset(pg.dsn(user="admin", password="admin", dbname="health"), patients=HEALTH_PATIENTS)
    pg.execute("GRANT SELECT ON patients, visits, labs, diagnoses TO clinician, analyst", dbname="health")
    status = run_setup(pg.admin_dsn("health"), key_env=None, key_file=None, rotate_key=False,
                       grant_to=["clinician", "analyst"], out=io.StringIO())
    assert status == 0
    return pg.admin_dsn("health")


@pytest.fixture(scope="session")
def health_policy() -> Policy:
    with resources.as_file(resources.files("pgshroud.policies") / "examples" / "healthcare.yaml") as path:
        return load_policy(path)


@pytest.fixture(scope="session")
def guarded(pg: ThrowawayCluster, health_db: str, health_policy: Policy) -> Iterator[RunningProxy]:
    """pgshroud with the healthcare policy in front of `health`; `.dsn(user, "health")`."""
    catalog = asyncio.run(read_catalog(health_db))
    upstream = make_conninfo(pg.dsn(), sslmode="disable")
    shared = SessionContext(proxy_config(upstream), plan, policy=health_policy, catalog=lambda: catalog)
    proxy = RunningProxy(shared)
    yield proxy
    proxy.stop()


@contextlib.contextmanager
def ledgered_proxy(pg: ThrowawayCluster, health_db: str, health_policy: Policy,
                   **config: Any) -> Iterator[RunningProxy]:
    """pgshroud with the healthcare policy, budgets ample (epsilon 10,000 per user) and its ledger in `health`;
    `config` overrides the server configuration (e.g. answer_cache_seconds)."""
    policy = dataclasses.replace(health_policy, budgets=Budgets(per_user=EpsilonDelta(10_000, 1.0)))
    catalog = asyncio.run(read_catalog(health_db))
    upstream = make_conninfo(pg.dsn(), sslmode="disable")
    shared = SessionContext(proxy_config(upstream, **config), plan, ledger=PostgresLedger(health_db, policy),
                            policy=policy, catalog=lambda: catalog)
    proxy = RunningProxy(shared)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="session")
def raw_health(pg: ThrowawayCluster, health_db: str) -> str:
    """A direct superuser connection string to `health`, to read the true values."""
    return health_db
