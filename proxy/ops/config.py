"""Runtime configuration: where to listen, where PostgreSQL is, and how to reach it."""

from __future__ import annotations

import math
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgshroud.proxy.ops.errors import ConfigError as ConfigError  # noqa: PLC0414 - callers find it here

if TYPE_CHECKING:
    from pgshroud.proxy.wire.client_auth import ClientAuthenticator

# sslmode values libpq accepts, weakest first.
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class UpstreamTarget:
    """The PostgreSQL server behind pgshroud, parsed from `--upstream DSN`.

    Client sessions use only host, port and TLS settings (with the client's
    own user, database and credentials). The DSN's user and password serve
    pgshroud's own connections only; `own_conninfo` gives them to psycopg,
    which also reads PGPASSWORD and .pgpass.
    """

    dsn: str = field(repr=False)  # may hold a password
    host: str
    port: int
    sslmode: str
    sslrootcert: str | None
    sslcert: str | None
    sslkey: str | None
    connect_timeout: float

    @classmethod
    def parse(cls, dsn: str) -> UpstreamTarget:
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:  # with libpq's text
            raise ConfigError(f"--upstream is not a valid PostgreSQL DSN: {exc}") from None
        host = str(params.get("host") or os.environ.get("PGHOST") or "localhost")
        if "," in host:
            raise ConfigError("--upstream names several hosts; pgshroud needs exactly one")
        try:
            port = int(params.get("port") or os.environ.get("PGPORT") or 5432)
        except ValueError:
            raise ConfigError(f"--upstream port {params.get('port')!r} is not a number") from None
        sslmode = str(params.get("sslmode") or os.environ.get("PGSSLMODE") or "prefer")
        if sslmode not in SSLMODES:
            raise ConfigError(f"--upstream sslmode {sslmode!r} is not one of {', '.join(SSLMODES)}")
        if host.startswith("/"):
            sslmode = "disable"  # no TLS over a Unix-domain socket, as in libpq
        return cls(
            dsn=dsn,
            host=host,
            port=port,
            sslmode=sslmode,
            sslrootcert=_opt(params.get("sslrootcert")),
            sslcert=_opt(params.get("sslcert")),
            sslkey=_opt(params.get("sslkey")),
            connect_timeout=float(params.get("connect_timeout") or 10),
        )

    @property
    def is_unix_socket(self) -> bool:
        return self.host.startswith("/")

    @property
    def socket_path(self) -> str:
        return f"{self.host}/.s.PGSQL.{self.port}"

    def describe(self) -> str:
        """Where the upstream is, for messages; never includes credentials."""
        return self.socket_path if self.is_unix_socket else f"{self.host}:{self.port}"

    def own_conninfo(self, **overrides: str) -> str:
        """The DSN for pgshroud's own connections (catalog, ledger)."""
        return make_conninfo(self.dsn, **overrides)

    def client_tls_context(self) -> ssl.SSLContext | None:
        """The TLS context for connecting to the upstream, or None for plaintext."""
        if self.sslmode == "disable":
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        root = self.sslrootcert or _default_root_cert()
        verify = self.sslmode in ("verify-ca", "verify-full") or (
            self.sslmode == "require" and root is not None
        )
        if verify:
            if root is None:
                raise ConfigError(
                    f"--upstream sslmode={self.sslmode} needs sslrootcert=FILE (or ~/.postgresql/root.crt)"
                )
            ctx.load_verify_locations(cafile=root)
            ctx.check_hostname = self.sslmode == "verify-full"
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.sslcert:
            ctx.load_cert_chain(self.sslcert, self.sslkey)
        return ctx

    @property
    def tls_required(self) -> bool:
        return self.sslmode in ("require", "verify-ca", "verify-full")


def _opt(value: object) -> str | None:
    return str(value) if value else None


def _default_root_cert() -> str | None:
    path = Path.home() / ".postgresql" / "root.crt"
    return str(path) if path.is_file() else None


def parse_listen(value: str) -> tuple[str, int]:
    """Parse HOST:PORT (IPv6 as [::1]:PORT)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen {value!r} must be HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def server_tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The TLS context clients see, or None when no certificate is configured."""
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigError("--tls-cert and --tls-key must be given together")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load --tls-cert {cert} / --tls-key {key}: {exc}") from None
    # PostgreSQL 17 clients negotiating direct TLS require this ALPN protocol.
    ctx.set_alpn_protocols(["postgresql"])
    return ctx


@dataclass(frozen=True)
class ServerConfig:
    listen_host: str
    listen_port: int
    upstream: UpstreamTarget
    tls: ssl.SSLContext | None = None
    max_connections: int = 1000
    max_message_size: int = 256 * 1024 * 1024
    startup_timeout: float = 60.0
    drain_timeout: float = 60.0
    # How long a released private answer is repeated, at no new cost, to the
    # user who asks for it again (proxy/budget/answer_cache.py), unless the policy's
    # answers.reuse_for says; 0 switches the cache off.
    answer_cache_seconds: float = 300.0
    # Set when pgshroud checks clients' passwords itself (--auth-file,
    # --auth-query); None: PostgreSQL checks them, relayed.
    client_auth: ClientAuthenticator | None = None
    # Statements of sessions that do not see raw data longer than this (in
    # characters) are refused rather than analysed: planning is linear, but
    # its constant is large (about a second per 60,000 characters).
    max_statement_length: int = 256 * 1024

    def __post_init__(self) -> None:
        if not (math.isfinite(self.answer_cache_seconds) and self.answer_cache_seconds >= 0):
            raise ConfigError(f"--answer-cache-seconds must be a finite number >= 0, not {self.answer_cache_seconds}")
