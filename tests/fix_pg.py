"""pytest plugin: one PostgreSQL cluster for the whole test suite.

The server speaks TLS with a certificate from a test CA (`tls_ca`, whose
certificate file is `pg_ca_file`), and has a login role per authentication
method, each with its name as password (see `AUTH_USERS`): u_trust (trust),
u_clear (password), u_md5 (md5, with an md5 verifier), u_scram (scram-sha-256);
plus `app` (scram, not a superuser), owner of database `app`, which holds the
deterministic `items` table every client comparison reads.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from pgshroud.proxy.commands.pgcluster import ThrowawayCluster
from pgshroud.proxy.commands.setup import run_setup

AUTH_USERS: dict[str, str] = {
    "u_trust": "trust",
    "u_clear": "password",
    "u_md5": "md5",
    "u_scram": "scram-sha-256",
}

ITEMS_ROWS = 500

# Every tenth row carries an awkward value (NULLs, quotes, non-ASCII, empty
# arrays, escapes) so that clients which decode differently disagree visibly.
_APP_SCHEMA = f"""
CREATE TABLE items (
    id int PRIMARY KEY,
    name text,
    price numeric(10,2),
    tags text[],
    created date,
    payload bytea,
    doc jsonb
);
INSERT INTO items
SELECT g,
       CASE g % 10
           WHEN 0 THEN NULL
           WHEN 3 THEN 'O''Brien "quoted" ' || g
           WHEN 7 THEN 'café ☕ ' || g
           ELSE 'item ' || g
       END,
       CASE WHEN g % 25 = 0 THEN NULL ELSE round(((g * 7919) % 100000) / 100.0 - 50, 2) END,
       CASE g % 10
           WHEN 0 THEN NULL
           WHEN 5 THEN '{{}}'::text[]
           WHEN 9 THEN ARRAY['a,b', 'with space', NULL]
           ELSE ARRAY['t' || (g % 4), 't' || (g % 6)]
       END,
       date '2024-01-01' + (g * 3) % 700,
       CASE WHEN g % 20 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') || '\\x00'::bytea END,
       jsonb_build_object('n', g, 'even', g % 2 = 0, 'label', 'item ' || g,
                          'nested', jsonb_build_array(g, g * 1.5, NULL))
FROM generate_series(1, {ITEMS_ROWS}) AS g;
ALTER TABLE items OWNER TO app;
GRANT ALL ON SCHEMA public TO {", ".join(AUTH_USERS)};
GRANT ALL ON items TO {", ".join(AUTH_USERS)};
"""


def _create_roles(cluster: ThrowawayCluster) -> None:
    for user in AUTH_USERS:
        # An md5 verifier is needed for md5 auth; the others get the SCRAM default.
        encryption = "md5" if user == "u_md5" else "scram-sha-256"
        cluster.execute(
            f"SET password_encryption = '{encryption}';"
            f"CREATE ROLE {user} LOGIN CREATEDB PASSWORD '{user}'"
        )
    cluster.execute("CREATE ROLE app LOGIN PASSWORD 'app'")
    cluster.execute("CREATE DATABASE app OWNER app")
    cluster.execute(f"GRANT ALL ON DATABASE app TO {', '.join(AUTH_USERS)}")
    cluster.execute(_APP_SCHEMA, dbname="app")


@pytest.fixture(scope="session")
def _pg_tls_dir() -> Iterator[Path]:
    # Outside pytest's per-user temp root, which the server user cannot enter.
    path = Path(tempfile.mkdtemp(prefix="pgshroud-tls-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """The CA that signed the server certificate; issue more certs from it."""
    return trustme.CA()


@pytest.fixture(scope="session")
def pg_ca_file(tls_ca: trustme.CA, _pg_tls_dir: Path) -> Path:
    """PEM file of the test CA, for `sslrootcert`."""
    path = _pg_tls_dir / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def pg(tls_ca: trustme.CA, _pg_tls_dir: Path) -> Iterator[ThrowawayCluster]:
    """The suite's running cluster, with TLS, auth users and database `app`."""
    server_cert = tls_ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = _pg_tls_dir / "server.crt", _pg_tls_dir / "server.key"
    server_cert.private_key_pem.write_to_path(str(key_file))
    for index, blob in enumerate(server_cert.cert_chain_pems):
        blob.write_to_path(str(cert_file), append=index > 0)
    hba = [
        f"host all {user} 127.0.0.1/32 {method}"
        for user, method in AUTH_USERS.items()
        if method != "scram-sha-256"
    ]
    cluster = ThrowawayCluster(hba=hba, tls=(cert_file, key_file))
    cluster.start()
    try:
        _create_roles(cluster)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_dsn(pg: ThrowawayCluster) -> str:
    """The `app` user on database `app`, over TCP."""
    return pg.dsn(user="app", dbname="app", password="app")


@pytest.fixture(scope="module")
def databases(pg: ThrowawayCluster, request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """Fresh databases with the pgshroud schema and budget ledger (`pgshroud setup`), for tests of the ledger:
    each call makes one and returns its superuser DSN; the module's are dropped after it."""
    prefix = "pgshroud_" + request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    made: list[str] = []

    def make() -> str:
        name = f"{prefix}_{len(made)}"
        pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        pg.execute(f"CREATE DATABASE {name}")
        made.append(name)
        out = io.StringIO()
        assert run_setup(pg.admin_dsn(name), key_env=None, key_file=None, rotate_key=False, grant_to=[],
                         out=out) == 0
        assert "privacy budget ledger: pgshroud.budget_ledger, pgshroud.budget_lock" in out.getvalue()
        return pg.admin_dsn(name)

    yield make
    for name in made:
        pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
