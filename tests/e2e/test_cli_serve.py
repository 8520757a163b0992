"""`pgshroud serve` as an operator runs it: a separate process, real clients.

Flags are documented; a bad flag value ends the process with status 2 and
one clear line; without a policy it warns and relays; its log never holds
SQL text or credentials; SIGTERM lets running statements finish, refuses new
connections and exits 0.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgshroud.proxy.commands.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
SERVE_FLAGS = ["--listen", "--upstream", "--policy", "--tls-cert", "--tls-key", "--max-connections",
               "--max-message-size", "--drain-timeout", "--audit-log", "--metrics", "--auth-file", "--auth-query"]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgshroud.proxy.commands.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=cli_env(), cwd=REPO, check=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Serve:
    """`python -m pgshroud serve` in a subprocess, with its stderr collected."""

    def __init__(self, *args: str, log_level: str = "debug") -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pgshroud.proxy.commands.cli", "--log-level", log_level, "serve",
             "--listen", f"127.0.0.1:{self.port}", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 15
        while not any("listening on" in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"pgshroud serve did not start:\n{self.stderr}")
            time.sleep(0.02)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def dsn(self, user: str = "u_scram", password: str | None = None, **extra) -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, user=user, password=password or user,
                             dbname="app", sslmode="disable", connect_timeout=5, **extra)

    def terminate(self, timeout: float = 10) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)


@pytest.fixture
def upstream(pg) -> str:
    """Where `serve` relays to; the DSN holds the superuser password, which must never be logged."""
    return make_conninfo(pg.dsn(), sslmode="disable")


@pytest.fixture
def serve(upstream):
    process = Serve("--upstream", upstream)
    yield process
    process.stop()


# -------------------------------------------------------------------- help


def test_serve_help_documents_each_flag():
    result = run_cli("serve", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for flag in SERVE_FLAGS:
        assert flag in text, flag
    # Every option of `serve` carries help text, including ones added later.
    serve_parser = build_parser()._subparsers._group_actions[0].choices["serve"]
    documented = {opt for action in serve_parser._actions for opt in action.option_strings if action.help}
    undocumented = {opt for action in serve_parser._actions for opt in action.option_strings} - documented
    assert not undocumented
    assert set(SERVE_FLAGS) <= documented
    for phrase in ("HOST:PORT", "DSN", "53300", "SIGTERM", "default: 127.0.0.1:6432", "default: 1000",
                   "default: 60", "PEM"):
        assert phrase in text, phrase


def test_top_level_help_lists_serve_and_log_level():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "serve" in result.stdout
    assert "--log-level" in result.stdout
    assert "never SQL text" in " ".join(result.stdout.split())


# ------------------------------------------------------------------- serving


def test_serve_without_policy_warns_and_relays(serve):
    warnings = [line for line in serve.lines if "WARNING" in line]
    assert any("no --policy given" in line for line in warnings), serve.stderr
    with psycopg.connect(serve.dsn(), autocommit=True) as conn:
        assert conn.execute("select current_user, count(*) from items").fetchone() == ("u_scram", 500)
    with psycopg.connect(serve.dsn("u_md5"), autocommit=True) as conn:
        assert conn.execute("select current_user").fetchone() == ("u_md5",)
    assert serve.terminate() == 0


def test_log_never_holds_sql_text_values_or_passwords(pg, upstream, serve):
    marker = f"shroud_marker_{uuid.uuid4().hex}"
    with psycopg.connect(serve.dsn(application_name="log-check"), autocommit=True) as conn:
        conn.execute(f"select '{marker}_simple' as v").fetchone()
        conn.execute("select %s::text as v", [f"{marker}_param"]).fetchone()
        conn.execute(f"select '{marker}_prepared' as v", prepare=True).fetchone()
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute(f"selec '{marker}_error'")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute(f"select 1/0 where '{marker}_runtime' <> ''")
        with conn.cursor() as cur, cur.copy(f"copy (select '{marker}_copy') to stdout") as copy:
            assert marker.encode() in b"".join(bytes(chunk) for chunk in copy)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(serve.dsn("u_scram", password=f"{marker}_password"))
    assert serve.terminate() == 0
    log = serve.stderr
    assert "session started" in log  # debug logging was on, and it did log
    assert marker not in log
    superuser_password = pg.superuser_password
    assert superuser_password not in log
    assert upstream not in log


def test_sigterm_lets_running_statement_finish_and_exits_0(pg, serve):
    app_name = f"drain-{uuid.uuid4().hex[:8]}"
    busy = psycopg.connect(serve.dsn(application_name=app_name), autocommit=True)
    idle = psycopg.connect(serve.dsn("u_md5"), autocommit=True)
    outcome: dict[str, object] = {}

    def run_sleep():
        try:
            outcome["row"] = busy.execute("select pg_sleep(2), 'finished'").fetchone()
        except BaseException as exc:  # noqa: BLE001 - the thread's failure, whatever it is, is the test's to report
            outcome["error"] = exc

    worker = threading.Thread(target=run_sleep)
    worker.start()
    deadline = time.monotonic() + 5
    while not pg.execute(f"select 1 from pg_stat_activity where application_name = '{app_name}'"
                         " and state = 'active'"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    signalled = time.monotonic()
    serve.process.send_signal(signal.SIGTERM)
    try:
        time.sleep(0.3)
        # New connections are refused while the statement drains.
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(serve.dsn("u_trust"))
        worker.join(10)
        assert not worker.is_alive()
        assert "error" not in outcome, outcome.get("error")
        assert outcome["row"] == ("", "finished")
        code = serve.process.wait(5)
        assert code == 0, serve.stderr
        assert time.monotonic() - signalled < 4.5
        # Both sessions were closed on the way out.
        for conn in (busy, idle):
            with pytest.raises(psycopg.OperationalError):
                conn.execute("select 1")
        assert not pg.execute(f"select 1 from pg_stat_activity where application_name = '{app_name}'")
    finally:
        busy.close()
        idle.close()
    assert "draining" in serve.stderr


def test_sigterm_when_idle_exits_promptly(serve):
    with psycopg.connect(serve.dsn(), autocommit=True) as conn:
        conn.execute("select 1")
        started = time.monotonic()
        assert serve.terminate() == 0
        assert time.monotonic() - started < 3
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")


# ------------------------------------------------- ways around pgshroud

HEALTHCARE = REPO / "policies" / "examples" / "healthcare.yaml"


def test_serve_logs_trust_rules_and_direct_readers_at_startup(pg, raw_health):
    """What `check --upstream` warns about, logged when serve starts: the
    trust rule for every role (admin, raw, too) and the masked and aggregate
    users' own SELECT privileges."""
    upstream = make_conninfo(pg.dsn(dbname="health"), sslmode="disable")
    process = Serve("--policy", str(HEALTHCARE), "--upstream", upstream, log_level="info")
    try:
        warnings = [line for line in process.lines if " WARNING " in line]
        assert any("lets every user (admin, analyst, clinician among them) in through the local socket without a "
                   "password (trust)" in line and "raw ones too (admin)" in line for line in warnings), process.stderr
        for user in ("clinician", "analyst"):
            assert any(f"user {user} (role {user}) holds SELECT on public.patients: a direct connection bypasses "
                       "pgshroud" in line for line in warnings), process.stderr
        assert process.terminate() == 0
    finally:
        process.stop()


def test_serve_says_when_it_cannot_read_pg_hba(pg, raw_health, tmp_path):
    """pgshroud's user is no superuser: serve starts, and says what it could not check.
    (The policy has no aggregate role: the ledger is the superuser's.)"""
    text = HEALTHCARE.read_text()
    assert text.count("    access: aggregate\n") == 1
    policy = tmp_path / "masked.yaml"
    policy.write_text(text.replace("    access: aggregate\n", "    access: masked\n"))
    upstream = make_conninfo(pg.dsn(user="admin", password="admin", dbname="health"), sslmode="disable")
    process = Serve("--policy", str(policy), "--upstream", upstream, log_level="info")
    try:
        assert any(" WARNING " in line and "cannot read pg_hba_file_rules" in line
                   for line in process.lines), process.stderr
        with psycopg.connect(make_conninfo(process.dsn("admin"), dbname="health"), autocommit=True) as conn:
            assert conn.execute("select current_user").fetchone() == ("admin",)
        assert process.terminate() == 0
    finally:
        process.stop()


def test_serve_refuses_a_trusted_login_with_a_policy(pg, raw_health):
    """Over the Unix socket PostgreSQL trusts everyone: through serve with a
    policy, a client claiming the raw admin is refused."""
    upstream = make_conninfo(host=str(pg.socket_dir), port=pg.port, user=pg.superuser, dbname="health")
    process = Serve("--policy", str(HEALTHCARE), "--upstream", upstream, log_level="info")
    try:
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(make_conninfo(process.dsn("admin", password="guess"), dbname="health"))
        assert 'PostgreSQL let user "admin" in without a password' in str(info.value)
        assert process.terminate() == 0
    finally:
        process.stop()
    assert "refused a login as 'admin'" in process.stderr
    assert "guess" not in process.stderr


# ------------------------------------------------- pgshroud's own logins


def test_serve_with_auth_file_checks_passwords_and_reloads_on_sighup(upstream, tmp_path):
    users = tmp_path / "userlist.txt"
    users.write_text('"u_md5" "u_md5"\n')
    process = Serve("--upstream", upstream, "--auth-file", str(users), log_level="info")
    try:
        assert "pgshroud checks clients' passwords itself (SCRAM-SHA-256)" in process.stderr
        with psycopg.connect(process.dsn("u_md5"), autocommit=True) as conn:
            assert conn.execute("select current_user").fetchone() == ("u_md5",)
        for user, password in (("u_md5", "wrong"), ("u_trust", "u_trust")):
            with pytest.raises(psycopg.OperationalError) as info:
                psycopg.connect(process.dsn(user, password=password))
            assert f'password authentication failed for user "{user}"' in str(info.value)

        users.write_text('"u_md5" "u_md5"\n"u_trust" "trust-no-more"\n')
        process.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "auth file reloaded" not in process.stderr and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"auth file reloaded from {users} (2 users)" in process.stderr
        with psycopg.connect(process.dsn("u_trust", password="trust-no-more"), autocommit=True) as conn:
            assert conn.execute("select current_user").fetchone() == ("u_trust",)

        users.write_text("not a user line\n")
        process.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "auth file reload failed" not in process.stderr and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"keeping the current users: {users}:1: expected" in process.stderr
        with psycopg.connect(process.dsn("u_trust", password="trust-no-more"), autocommit=True) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        assert process.terminate() == 0
    finally:
        process.stop()
    assert "trust-no-more" not in process.stderr


def test_invalid_auth_file_exits_2(upstream, tmp_path):
    users = tmp_path / "userlist.txt"
    users.write_text('"u_md5" "md5' + "a" * 32 + '"\n')
    result = run_cli("serve", "--listen", f"127.0.0.1:{free_port()}", "--upstream", upstream, "--auth-file", str(users))
    assert result.returncode == 2, result.stderr
    assert f"{users}:1: the secret of user 'u_md5' is an md5 hash" in result.stderr
    assert "a" * 32 not in result.stderr and "Traceback" not in result.stderr
    result = run_cli("serve", "--listen", f"127.0.0.1:{free_port()}", "--upstream", upstream,
                     "--auth-query", "SELECT usename, passwd FROM pg_shadow")
    assert result.returncode == 2
    assert "--auth-query must take the user name as $1" in result.stderr


# ------------------------------------------------------------- bad flags

BAD_UPSTREAMS = {
    "not a DSN": ("this is not a dsn", "--upstream is not a valid PostgreSQL DSN"),
    "bad URI": ("postgresql://[::1", "--upstream"),
    "several hosts": ("host=a,b port=5432", "several hosts"),
    "port not a number": ("host=127.0.0.1 port=abc", "port"),
    "unknown sslmode": ("host=127.0.0.1 sslmode=sometimes", "sslmode"),
}


@pytest.mark.parametrize("dsn, expected", list(BAD_UPSTREAMS.values()), ids=list(BAD_UPSTREAMS))
def test_invalid_upstream_exits_2(dsn, expected):
    result = run_cli("serve", "--listen", f"127.0.0.1:{free_port()}", "--upstream", dsn)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert result.stderr.startswith("pgshroud: ") and "Traceback" not in result.stderr, result.stderr


BAD_LISTENS = ["127.0.0.1", "127.0.0.1:", "127.0.0.1:port", "127.0.0.1:70000", ":-1", "nosuchhost.invalid:6432"]


@pytest.mark.parametrize("listen", BAD_LISTENS)
def test_invalid_listen_exits_2(upstream, listen):
    result = run_cli("serve", "--listen", listen, "--upstream", upstream)
    assert result.returncode == 2, result.stderr
    assert "--listen" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_listen_on_a_port_in_use_fails_clearly(upstream):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--listen", f"127.0.0.1:{port}", "--upstream", upstream)
    assert result.returncode != 0
    assert f"127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_missing_upstream_is_a_usage_error():
    result = run_cli("serve", "--listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert "the following arguments are required: --upstream" in result.stderr


@pytest.mark.parametrize("flag", ["--tls-cert", "--tls-key"])
def test_tls_cert_and_key_go_together(upstream, tmp_path, flag):
    pem = tmp_path / "x.pem"
    pem.write_text("")
    result = run_cli("serve", "--listen", f"127.0.0.1:{free_port()}", "--upstream", upstream, flag, str(pem))
    assert result.returncode == 2, result.stderr
    assert "--tls-cert and --tls-key must be given together" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_tls_files_exit_2(upstream, tmp_path):
    missing = tmp_path / "missing.pem"
    result = run_cli("serve", "--listen", f"127.0.0.1:{free_port()}", "--upstream", upstream,
                     "--tls-cert", str(missing), "--tls-key", str(missing))
    assert result.returncode == 2, result.stderr
    assert "cannot load --tls-cert" in result.stderr
    assert "Traceback" not in result.stderr
