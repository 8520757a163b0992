"""The upstream side of `pgshroud demo`: a throwaway cluster with patient data.

Database `health` holds the synthetic dataset of `pgshroud.proxy.commands.demo_data`. Three
login roles share it, each with its name as password: `admin` owns the
tables; `clinician` and `analyst` may read all of them, because pgshroud,
not PostgreSQL, decides what each of them gets to see.
"""

from __future__ import annotations

from pgshroud.proxy.commands.demo_data import Progress, load_demo_dataset
from pgshroud.proxy.commands.pgcluster import ThrowawayCluster

DATABASE = "health"
OWNER = "admin"
READERS = ("clinician", "analyst")
ROLES = (OWNER, *READERS)
TABLES = ("patients", "visits", "labs", "diagnoses")


def prepare_demo_cluster(*, patients: int, progress: Progress | None = None) -> ThrowawayCluster:
    """Start a cluster, load the demo dataset and create the demo roles.

    The caller owns the running cluster and must `stop()` it.
    """
    cluster = ThrowawayCluster().start()
    try:
        for role in ROLES:
            cluster.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{role}'")
        cluster.execute(f"CREATE DATABASE {DATABASE} OWNER {OWNER}")
        # Loading as the owner makes it own the tables it creates.
        load_demo_dataset(
            cluster.dsn(user=OWNER, password=OWNER, dbname=DATABASE), patients=patients, progress=progress
        )
        cluster.execute(f"GRANT SELECT ON {', '.join(TABLES)} TO {', '.join(READERS)}", dbname=DATABASE)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _url(role: str, host: str, port: int) -> str:
    if ":" in host:
        host = f"[{host}]"
    return f"postgresql://{role}:{role}@{host}:{port}/{DATABASE}"


def instructions(listen_host: str, listen_port: int, cluster: ThrowawayCluster) -> str:
    """Ready-to-paste psql commands for each demo role, through pgshroud and direct."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "::": "::1"}.get(listen_host, listen_host)
    width = max(map(len, ROLES))
    lines = [f"Connect through pgshroud on {host}:{listen_port} (database `{DATABASE}`):", ""]
    lines += [f"  {role:<{width}}  psql \"{_url(role, host, listen_port)}\"" for role in ROLES]
    lines += [
        "",
        "Then compare, for instance:",
        "",
        "  SELECT name, ssn, birth_date, zip FROM patients LIMIT 5;",
        "  SELECT department, count(*), avg(cost) FROM visits GROUP BY department;",
        "",
        f"Direct to PostgreSQL on {cluster.host}:{cluster.port}, bypassing pgshroud, for comparison:",
        "",
    ]
    lines += [f"  {role:<{width}}  psql \"{_url(role, cluster.host, cluster.port)}\"" for role in ROLES]
    return "\n".join(lines) + "\n"
