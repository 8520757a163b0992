from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pgshroud.proxy.commands import pgcluster
from pgshroud.proxy.commands.pgcluster import ClusterError, PgBinariesNotFound, ThrowawayCluster, find_pg_bindir
from tests.fix_pg import AUTH_USERS, ITEMS_ROWS

DEBIAN_15 = Path("/usr/lib/postgresql/15/bin")


@pytest.mark.skipif(not (DEBIAN_15 / "postgres").exists(), reason="needs the Debian PostgreSQL 15 packages")
def test_find_pg_bindir_finds_the_installed_server() -> None:
    assert find_pg_bindir() == DEBIAN_15


def test_find_pg_bindir_explains_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pgcluster.glob, "glob", lambda pattern: [])
    with pytest.raises(PgBinariesNotFound, match="apt-get install postgresql"):
        find_pg_bindir()


def test_cluster_lifecycle_and_hba() -> None:
    cluster = ThrowawayCluster(
        hba=["host all alice 127.0.0.1/32 trust"],
        settings={"work_mem": "8MB"},
    )
    with cluster:
        root = cluster.root_dir
        assert root is not None and cluster.data_dir is not None and root.is_dir()
        if os.geteuid() == 0:
            assert cluster.data_dir.stat().st_uid == pwd.getpwnam("postgres").pw_uid
        cluster.execute("CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN PASSWORD 'bob-secret'")

        with psycopg.connect(cluster.dsn()) as conn:
            assert conn.execute("SELECT current_user, 6 * 7").fetchone() == ("postgres", 42)
            settings = dict(conn.execute(
                "SELECT name, setting FROM pg_settings"
                " WHERE name IN ('max_connections', 'fsync', 'work_mem', 'port')"
            ).fetchall())
        assert settings == {
            "max_connections": "200", "fsync": "off", "work_mem": "8192", "port": str(cluster.port),
        }

        with psycopg.connect(cluster.dsn(user="alice")) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("alice",)
        with psycopg.connect(cluster.dsn(user="bob", password="bob-secret")) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("bob",)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(cluster.dsn(user="bob", password="wrong"))
        with psycopg.connect(cluster.dsn(user="bob", host=str(cluster.socket_dir))) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("bob",)  # local is trust

        assert cluster.execute("SELECT 1; SELECT 2") == [(2,)]
        assert "ready to accept connections" in cluster.log_tail()
    assert not root.exists()
    cluster.stop()  # idempotent


def test_failed_start_reports_the_server_log() -> None:
    cluster = ThrowawayCluster(settings={"shared_buffers": "a lot"})
    with pytest.raises(ClusterError, match="shared_buffers"):
        cluster.start()
    assert cluster.root_dir is None


def test_a_crashing_caller_leaves_no_server_behind() -> None:
    script = (
        "from pgshroud.proxy.commands.pgcluster import ThrowawayCluster\n"
        "cluster = ThrowawayCluster().start()\n"
        "pid = (cluster.data_dir / 'postmaster.pid').read_text().split()[0]\n"
        "print(cluster.root_dir, pid, flush=True)\n"
        "raise RuntimeError('caller crashed')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2], check=False)
    assert "caller crashed" in result.stderr
    root, pid = result.stdout.split()
    assert not Path(root).exists()
    assert not _running(int(pid))


def _running(pid: int) -> bool:
    # Linux /proc; a zombie counts as gone, as in containers nobody may reap the orphaned postmaster.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("user", sorted(AUTH_USERS))
def test_suite_cluster_auth_users_log_in_over_tls(pg: ThrowawayCluster, pg_ca_file: Path, user: str) -> None:
    dsn = pg.dsn(user=user, password=user, dbname="app") + f" sslmode=verify-full sslrootcert={pg_ca_file}"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (ITEMS_ROWS,)
    if AUTH_USERS[user] != "trust":
        with pytest.raises(psycopg.OperationalError, match="authentication failed"):
            psycopg.connect(pg.dsn(user=user, password="wrong", dbname="app"))


def test_suite_cluster_methods_and_app_user(pg: ThrowawayCluster, pg_dsn: str) -> None:
    verifiers = dict(pg.execute("SELECT rolname, left(rolpassword, 5) FROM pg_authid WHERE rolname LIKE 'u\\_%'"))
    assert verifiers["u_md5"].startswith("md5")
    assert all(verifiers[user].startswith("SCRAM") for user in AUTH_USERS if user != "u_md5")
    methods = dict(pg.execute("SELECT user_name[1], auth_method FROM pg_hba_file_rules WHERE type = 'host'"))
    assert {user: methods[user] for user in ("u_trust", "u_clear", "u_md5")} == {
        "u_trust": "trust", "u_clear": "password", "u_md5": "md5",
    }
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        assert row == ("app", False)
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'items'").fetchone()
        assert owner == ("app",)
