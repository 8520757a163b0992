"""A throwaway PostgreSQL cluster for the demo, the test suite and benchmarks.

The cluster lives in a fresh temporary directory that `stop()` removes
entirely. PostgreSQL refuses to run as root, so when the caller is root every
server binary runs as the `postgres` OS user through `runuser`, and the files
the server needs are handed to that user.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg.conninfo import make_conninfo

SERVER_OS_USER = "postgres"

DEFAULT_SETTINGS: dict[str, str] = {
    "max_connections": "200",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "unix_socket_permissions": "0777",
}

DEFAULT_HBA: tuple[str, ...] = (
    "local all all trust",
    "host all all 127.0.0.1/32 scram-sha-256",
    "host all all ::1/128 scram-sha-256",
)

_INSTALL_HINT = (
    "PostgreSQL server binaries (postgres, initdb, pg_ctl) were not found. "
    "Install them (Debian/Ubuntu: `apt-get install postgresql`; "
    "Fedora: `dnf install postgresql-server`; macOS: `brew install postgresql@16`) "
    "or put the directory holding `postgres` and `initdb` on PATH."
)

# A port picked automatically can be taken by someone else before the server
# binds it; those starts are retried on a fresh port.
_PORT_RETRIES = 3


class PgBinariesNotFound(RuntimeError):
    """No PostgreSQL server installation could be located."""

    def __init__(self) -> None:
        super().__init__(_INSTALL_HINT)


class ClusterError(RuntimeError):
    """initdb or the server failed; the message carries their output."""


def _is_bindir(path: Path) -> bool:
    return all((path / name).is_file() for name in ("postgres", "initdb", "pg_ctl"))


def _version_key(bindir: str) -> tuple[int, ...]:
    version = Path(bindir).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (0,)


def find_pg_bindir() -> Path:
    """Locate the directory holding the PostgreSQL server binaries."""
    postgres, initdb = shutil.which("postgres"), shutil.which("initdb")
    if postgres and initdb:
        # Distribution wrappers and symlinks on PATH point into the real bindir.
        bindir = Path(postgres).resolve().parent
        if Path(initdb).resolve().parent == bindir and _is_bindir(bindir):
            return bindir
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run([pg_config, "--bindir"], check=False, capture_output=True, text=True)
        bindir = Path(result.stdout.strip())
        if result.returncode == 0 and _is_bindir(bindir):
            return bindir
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for candidate in candidates:
        if _is_bindir(Path(candidate)):
            return Path(candidate)
    raise PgBinariesNotFound()


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _conf_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class ThrowawayCluster:
    """A private PostgreSQL server in a temporary directory.

    `superuser` connects without a password over the unix socket
    (`admin_dsn`); over TCP it uses the random `superuser_password`.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        listen: str = "127.0.0.1",
        superuser: str = "postgres",
        settings: dict[str, str] | None = None,
        hba: list[str] | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.bindir = find_pg_bindir()
        self.listen = listen
        first = listen.split(",")[0].strip()
        self.host = "127.0.0.1" if first in ("*", "0.0.0.0", "") else ("::1" if first == "::" else first)
        self.port = port if port is not None else _free_port(self.host)
        self._port_is_ours = port is None
        self.superuser = superuser
        self.superuser_password = secrets.token_urlsafe(18)
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.hba = [*(hba or []), *DEFAULT_HBA]
        self.tls = tls
        self._as_root = os.geteuid() == 0
        self.root_dir: Path | None = None
        self.data_dir: Path | None = None
        self.socket_dir: Path | None = None
        self._log_file: Path | None = None

    # -- lifecycle -------------------------------------------------------

    def start(self) -> Self:
        """Create the cluster and start the server; returns self."""
        if self.root_dir is not None:
            raise ClusterError("cluster already started")
        atexit.register(self.stop)
        try:
            self._make_dirs()
            self._initdb()
            self._configure()
            self._start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server and remove the whole cluster directory; idempotent."""
        atexit.unregister(self.stop)
        # The pid file also covers a server left behind by a failed start.
        if self.data_dir is not None and (self.data_dir / "postmaster.pid").exists():
            for mode in ("fast", "immediate"):
                stopped = self._run(["pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w"], check=False)
                if stopped.returncode == 0:
                    break
        if self.root_dir is not None:
            shutil.rmtree(self.root_dir, ignore_errors=True)
            self.root_dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- connecting ------------------------------------------------------

    def dsn(
        self,
        user: str | None = None,
        dbname: str = "postgres",
        password: str | None = None,
        host: str | None = None,
    ) -> str:
        """A libpq conninfo string, over TCP unless `host` says otherwise."""
        if user is None:
            user, password = self.superuser, password or self.superuser_password
        params: dict[str, str | int] = {"host": host or self.host, "port": self.port, "user": user, "dbname": dbname}
        if password is not None:
            params["password"] = password
        return make_conninfo("", **params)

    def admin_dsn(self, dbname: str = "postgres") -> str:
        """The superuser over the unix socket, where authentication is trust."""
        return make_conninfo(host=str(self.socket_dir), port=self.port, user=self.superuser, dbname=dbname)

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run SQL as the superuser (autocommit); returns the last row-returning statement's rows."""
        with psycopg.connect(self.admin_dsn(dbname), autocommit=True) as conn:
            cursor = conn.execute(sql)
            rows: list[tuple[Any, ...]] = []
            while True:
                if cursor.description is not None:
                    rows = cursor.fetchall()
                if not cursor.nextset():
                    return rows

    def log_tail(self, lines: int = 50) -> str:
        """The last lines of the server log."""
        if self._log_file is None or not self._log_file.exists():
            return ""
        return "\n".join(self._log_file.read_text(errors="replace").splitlines()[-lines:])

    # -- internals -------------------------------------------------------

    def _make_dirs(self) -> None:
        # /tmp rather than $TMPDIR when root: the server user must reach the
        # directory, and a root-only TMPDIR would hide it.
        self.root_dir = Path(tempfile.mkdtemp(prefix="pgshroud-", dir="/tmp" if self._as_root else None))
        self.root_dir.chmod(0o755)
        self.data_dir = self.root_dir / "data"
        self.socket_dir = self.root_dir / "sock"
        self._log_file = self.root_dir / "server.log"
        self.data_dir.mkdir(mode=0o700)
        self.socket_dir.mkdir(mode=0o755)
        self._log_file.touch(mode=0o644)
        for path in (self.data_dir, self.socket_dir, self._log_file):
            self._give_to_server(path)

    def _give_to_server(self, path: Path) -> None:
        if self._as_root:
            entry = pwd.getpwnam(SERVER_OS_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self._as_root:
            command = ["runuser", "-u", SERVER_OS_USER, "--", *command]
        # The server user may not be able to enter the caller's working directory.
        result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=self.root_dir)
        if check and result.returncode != 0:
            raise ClusterError(f"{argv[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def _initdb(self) -> None:
        assert self.root_dir is not None and self.data_dir is not None
        pwfile = self.root_dir / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        pwfile.chmod(0o600)
        self._give_to_server(pwfile)
        try:
            self._run([
                "initdb", "-D", str(self.data_dir), "--auth-local=trust", "--auth-host=scram-sha-256",
                "-U", self.superuser, f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C",
                "--no-sync", "--no-instructions",
            ])
        finally:
            pwfile.unlink()

    def _configure(self) -> None:
        assert self.data_dir is not None
        settings = {
            **self.settings,
            "listen_addresses": self.listen,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
        }
        if self.tls is not None:
            for source, name in zip(self.tls, ("server.crt", "server.key")):
                target = self.data_dir / name
                shutil.copyfile(source, target)
                target.chmod(0o600)
                self._give_to_server(target)
            settings |= {"ssl": "on", "ssl_cert_file": "server.crt", "ssl_key_file": "server.key"}
        # Appended lines override the defaults initdb wrote above them.
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# pgshroud throwaway cluster\n")
            conf.writelines(f"{key} = {_conf_value(value)}\n" for key, value in settings.items())
        (self.data_dir / "pg_hba.conf").write_text("\n".join(self.hba) + "\n")

    def _start_server(self) -> None:
        assert self.data_dir is not None
        for attempt in range(_PORT_RETRIES):
            result = self._run(
                ["pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self._log_file), "-w", "-t", "60"],
                check=False,
            )
            if result.returncode == 0:
                return
            log = self.log_tail()
            if not (self._port_is_ours and "could not bind" in log and attempt + 1 < _PORT_RETRIES):
                raise ClusterError(
                    f"PostgreSQL did not start on port {self.port}:\n{result.stdout}{result.stderr}\n"
                    f"--- server log (tail) ---\n{log}"
                )
            self.port = _free_port(self.host)
            with open(self.data_dir / "postgresql.conf", "a") as conf:
                conf.write(f"port = '{self.port}'\n")
