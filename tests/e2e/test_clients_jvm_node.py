"""Real client programs against PostgreSQL directly and through pgshroud.

Each client program (pgjdbc in ``clients/jdbc``, node-postgres in
``clients/node``) runs once against the ``pg`` cluster and once against the
``shroud`` proxy in front of it; it prints canonical results, and the two
outputs must be equal line for line. pgbench then drives a select-only script
through pgshroud in each of its three query modes and must see no failed
transaction.

A missing tool (javac, java, node, npm, pgbench, the pgjdbc jar) fails the
test with what to install; these tests never skip.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.clients

CLIENTS = Path(__file__).resolve().parents[1] / "clients"
JDBC_DIR = CLIENTS / "jdbc"
NODE_DIR = CLIENTS / "node"
JDBC_JAR = Path(os.environ.get("PGSHROUD_JDBC_JAR", "/usr/share/java/postgresql.jar"))

USER = DBNAME = PASSWORD = "app"

# Lines every complete run prints, whatever else differs.
MIN_JDBC_LINES = 1500
MIN_NODE_LINES = 500


# ------------------------------------------------------------------ helpers


def require_tool(name: str, install: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name!r} is not on PATH; install it with: {install}", pytrace=False)
    return path


def endpoint(target) -> tuple[str, int]:
    host = str(target.host)
    if host.startswith("/"):
        pytest.fail(f"client checks need a TCP endpoint, got a Unix socket directory {host!r}")
    return host, int(target.port)


def client_env() -> dict[str, str]:
    env = dict(os.environ)
    env["TZ"] = "UTC"
    env["LC_ALL"] = "C.UTF-8"
    env["LANG"] = "C.UTF-8"
    for var in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGSERVICE", "PGOPTIONS"):
        env.pop(var, None)
    return env


def run(cmd: list[str], *, timeout: float, cwd: Path | None = None,
        env: dict[str, str] | None = None, what: str) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, check=False, cwd=cwd, env=env or client_env(), capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what} timed out after {timeout}s\ncommand: {cmd}\n"
                    f"stdout tail:\n{_tail(exc.stdout)}\nstderr tail:\n{_tail(exc.stderr)}")
    if proc.returncode != 0:
        pytest.fail(f"{what} exited with {proc.returncode}\ncommand: {cmd}\n"
                    f"stdout tail:\n{_tail(proc.stdout)}\nstderr tail:\n{_tail(proc.stderr)}")
    return proc


def _tail(text, lines: int = 40) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def assert_same_output(direct: str, proxied: str, *, what: str, min_lines: int) -> None:
    direct_lines = direct.splitlines()
    proxied_lines = proxied.splitlines()
    assert len(direct_lines) >= min_lines, (
        f"{what}: only {len(direct_lines)} lines against PostgreSQL directly; the check program "
        f"did not run every section:\n{_tail(direct)}")
    assert direct_lines[-1].startswith("done"), f"{what}: no closing line:\n{_tail(direct)}"
    if direct_lines == proxied_lines:
        return
    diff = list(difflib.unified_diff(direct_lines, proxied_lines, "direct", "through pgshroud",
                                     n=2, lineterm=""))
    shown = "\n".join(diff[:80])
    more = f"\n... {len(diff) - 80} more diff lines" if len(diff) > 80 else ""
    pytest.fail(f"{what}: output through pgshroud differs from PostgreSQL directly "
                f"({len(direct_lines)} vs {len(proxied_lines)} lines):\n{shown}{more}", pytrace=False)


@contextlib.contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def pg_bindir() -> Path:
    from pgshroud.proxy.commands.pgcluster import find_pg_bindir

    return Path(find_pg_bindir())


# ------------------------------------------------------------------- pgjdbc


@pytest.fixture(scope="session")
def jdbc_classes(request, tmp_path_factory) -> Path:
    """ClientCheck compiled once per source/driver/compiler, cached under .pytest_cache
    (in the run's temporary directory when pytest's cache is off: -p no:cacheprovider)."""
    javac = require_tool("javac", "apt-get install -y openjdk-17-jdk-headless")
    require_tool("java", "apt-get install -y openjdk-17-jre-headless")
    if not JDBC_JAR.is_file():
        pytest.fail(f"pgjdbc jar {JDBC_JAR} is missing; install it with: "
                    "apt-get install -y libpostgresql-jdbc-java", pytrace=False)
    source = JDBC_DIR / "ClientCheck.java"
    jar_stat = JDBC_JAR.resolve().stat()
    key = hashlib.sha256()
    key.update(source.read_bytes())
    key.update(f"{JDBC_JAR.resolve()}:{jar_stat.st_size}:{jar_stat.st_mtime_ns}".encode())
    key.update(os.path.realpath(javac).encode())
    cache = getattr(request.config, "cache", None)
    cache_root = Path(cache.mkdir("pgshroud-jdbc")) if cache else tmp_path_factory.getbasetemp() / "pgshroud-jdbc"
    target = cache_root / key.hexdigest()[:16]
    if (target / "ClientCheck.class").is_file():
        return target
    with file_lock(cache_root / ".lock"):
        if (target / "ClientCheck.class").is_file():
            return target
        building = cache_root / f"build-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
        run([javac, "-encoding", "UTF-8", "-d", str(building), "-cp", str(JDBC_JAR), str(source)],
            timeout=180, what="javac ClientCheck.java")
        building.rename(target)
    return target


def run_jdbc(classes: Path, target) -> str:
    host, port = endpoint(target)
    java = require_tool("java", "apt-get install -y openjdk-17-jre-headless")
    cmd = [java, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Dfile.encoding=UTF-8",
           "-cp", f"{JDBC_JAR}{os.pathsep}{classes}", "ClientCheck",
           host, str(port), DBNAME, USER, PASSWORD]
    return run(cmd, timeout=240, what=f"pgjdbc ClientCheck against {host}:{port}").stdout


def test_jdbc_same_through_pgshroud(jdbc_classes, pg, shroud):
    direct = run_jdbc(jdbc_classes, pg)
    proxied = run_jdbc(jdbc_classes, shroud)
    assert_same_output(direct, proxied, what="pgjdbc ClientCheck", min_lines=MIN_JDBC_LINES)


# ------------------------------------------------------------- node-postgres


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``npm ci`` into clients/node/node_modules, redone only when the lock file changes."""
    require_tool("node", "apt-get install -y nodejs")
    npm = require_tool("npm", "apt-get install -y npm (or a Node.js 20 distribution that ships npm)")
    lock = NODE_DIR / "package-lock.json"
    manifest = NODE_DIR / "package.json"
    digest = hashlib.sha256(manifest.read_bytes() + (lock.read_bytes() if lock.exists() else b"")).hexdigest()
    modules = NODE_DIR / "node_modules"
    stamp = modules / ".pgshroud-installed"
    if stamp.is_file() and stamp.read_text() == digest:
        return modules
    with file_lock(NODE_DIR / "node_modules.lock"):
        if stamp.is_file() and stamp.read_text() == digest:
            return modules
        action = "ci" if lock.exists() else "install"
        run([npm, action, "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, timeout=600,
            env={**os.environ, "npm_config_update_notifier": "false"},
            what=f"npm {action} in {NODE_DIR}")
        stamp.write_text(digest)
    return modules


def run_node(target) -> str:
    host, port = endpoint(target)
    node = require_tool("node", "apt-get install -y nodejs")
    cmd = [node, str(NODE_DIR / "check.js"), host, str(port), DBNAME, USER, PASSWORD]
    return run(cmd, cwd=NODE_DIR, timeout=240, what=f"node check.js against {host}:{port}").stdout


def test_node_postgres_same_through_pgshroud(node_modules, pg, shroud):
    direct = run_node(pg)
    proxied = run_node(shroud)
    assert_same_output(direct, proxied, what="node-postgres check.js", min_lines=MIN_NODE_LINES)


# ------------------------------------------------------------------- pgbench

PGBENCH_SCRIPT = """\
\\set id random(1, 500)
BEGIN;
SELECT id, name, price, tags, created, payload, doc FROM items WHERE id = :id;
SELECT count(*), sum(price) FROM items WHERE id BETWEEN :id AND :id + 20;
END;
\\set id2 random(1, 500)
SELECT name FROM items WHERE id = :id2;
"""

PGBENCH_CLIENTS = 4
PGBENCH_TRANSACTIONS = 150


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
@pytest.mark.parametrize("where", ["direct", "pgshroud"])
def test_pgbench_select_through_pgshroud(mode, where, pg, shroud, tmp_path):
    pgbench = pg_bindir() / "pgbench"
    if not os.access(pgbench, os.X_OK):
        pytest.fail(f"{pgbench} not found; install it with: apt-get install -y postgresql-15 "
                    "(or postgresql-contrib for the server's major version)", pytrace=False)
    target = pg if where == "direct" else shroud
    host, port = endpoint(target)
    script = tmp_path / "select.sql"
    script.write_text(PGBENCH_SCRIPT)
    env = client_env()
    env.update(PGPASSWORD=PASSWORD, PGCONNECT_TIMEOUT="20", PGAPPNAME="pgshroud-pgbench-check")
    cmd = [str(pgbench), "-n", "-f", str(script), "-M", mode,
           "-c", str(PGBENCH_CLIENTS), "-j", "2", "-t", str(PGBENCH_TRANSACTIONS),
           "-h", host, "-p", str(port), "-U", USER, DBNAME]
    proc = run(cmd, env=env, timeout=240, what=f"pgbench -M {mode} against {where}")
    report = proc.stdout
    expected = PGBENCH_CLIENTS * PGBENCH_TRANSACTIONS
    processed = re.search(r"number of transactions actually processed: (\d+)/(\d+)", report)
    assert processed, f"no transaction count in pgbench output:\n{report}\n{proc.stderr}"
    assert (int(processed.group(1)), int(processed.group(2))) == (expected, expected), report
    failed = re.search(r"number of failed transactions: (\d+)", report)
    if failed is not None:  # printed by pgbench 15 and later
        assert int(failed.group(1)) == 0, f"failed transactions through {where}:\n{report}"
    assert "error" not in proc.stderr.lower(), proc.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
