"""pgshroud checks clients' passwords itself, with SCRAM-SHA-256, as PgBouncer does.

Relaying a login to PostgreSQL (the default) lets PostgreSQL judge it; when
PostgreSQL trusts pgshroud's host, it judges nothing. With `--auth-file`
and/or `--auth-query`, pgshroud runs the SCRAM exchange with the client
itself, against a verifier it looks up:

- an auth file in PgBouncer's format, one `"user" "secret"` line per user,
  where the secret is a SCRAM verifier as pg_authid stores it
  (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`) or a plain
  password (md5 hashes cannot check a SCRAM login and are refused);
- an auth query run over pgshroud's own connection with the user name as
  $1, whose last column is the secret (PgBouncer's
  `SELECT usename, passwd FROM pg_shadow WHERE usename=$1`).

The file is consulted first. A user found in neither gets the whole
exchange against a made-up verifier and then the same error as a wrong
password, so that user names cannot be probed.

Then pgshroud logs in to PostgreSQL as the same user: with the plain
password, or, with a verifier, with the ClientKey that the client's proof
revealed (proof XOR client signature) and the verifier's ServerKey. Those
work against the verifier they came from, so a verifier in the auth file
must be PostgreSQL's own (same salt and iteration count); an auth query
reads exactly that. When the client connects over TLS, pgshroud offers
SCRAM-SHA-256-PLUS bound to its certificate (tls-server-end-point), and it
binds its own login too when the upstream leg is on TLS and offers it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from pgshroud import sqlstate
from pgshroud.proxy.codec.errors import ProtocolViolation
from pgshroud.proxy.codec.messages import (
    AuthenticationOk,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    SASLInitialResponse,
    SASLResponse,
)
from pgshroud.proxy.ops.connect import asyncpg_arguments
from pgshroud.proxy.ops.errors import ConfigError
from pgshroud.proxy.wire.errors import ClientFacingError
from pgshroud.proxy.wire.leg import Leg
from pgshroud.proxy.wire.scram import (
    DEFAULT_ITERATIONS,
    SALT_LENGTH,
    Keys,
    ScramError,
    ScramServer,
    Verifier,
    end_point_hash,
)

log = logging.getLogger("pgshroud.auth")

_LINE = re.compile(r'\s*"((?:[^"]|"")*)"\s+"((?:[^"]|"")*)"(?:\s.*)?')
_MD5 = re.compile(r"md5[0-9a-f]{32}")
AUTH_QUERY_POOL = 4  # connections for auth queries at once


@dataclass(frozen=True)
class Secret:
    """What pgshroud holds for a user: the verifier it checks logins
    against, and the password itself when it was given one."""

    verifier: Verifier
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Credentials:
    """What pgshroud logs in upstream with, for one authenticated client."""

    user: str
    password: str | None = field(repr=False)
    keys: Keys


def parse_secret(text: str) -> Secret | str:
    """The secret `text` spells, or why it spells none."""
    if text.startswith("SCRAM-"):
        verifier = Verifier.parse(text)
        if verifier is None:
            return "a SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> verifier that does not parse"
        return Secret(verifier)
    if _MD5.fullmatch(text):
        return ("an md5 hash, which cannot check a SCRAM-SHA-256 login (give PostgreSQL's SCRAM verifier, "
                "or the password)")
    if not text:
        return "an empty password"
    return Secret(Verifier.from_password(text), text)


def load_auth_file(path: str) -> dict[str, Secret]:
    """Users and secrets from a PgBouncer-style auth file; ConfigError names file:line.
    A plain password costs a PBKDF2 here: load big files off the event loop."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read --auth-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    secrets_by_user: dict[str, Secret] = {}
    where: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith((";", "#")):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise ConfigError(f'{path}:{number}: expected "user" "password or SCRAM verifier" (double quotes '
                              'doubled inside)')
        user, text = (group.replace('""', '"') for group in match.groups())
        if user in where:
            raise ConfigError(f"{path}:{number}: user {user!r} is listed twice (also on line {where[user]})")
        secret = parse_secret(text)
        if isinstance(secret, str):
            # Never repeat the secret: it may be a password.
            raise ConfigError(f"{path}:{number}: the secret of user {user!r} is {secret}")
        secrets_by_user[user] = secret
        where[user] = number
    return secrets_by_user


def certificate_end_point(pem_path: str) -> bytes | None:
    """tls-server-end-point data of the first certificate in a PEM file."""
    text = Path(pem_path).read_text()
    begin = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find("-----END CERTIFICATE-----", begin)
    if begin < 0 or end < 0:
        return None
    return end_point_hash(ssl.PEM_cert_to_DER_cert(text[begin:end + len("-----END CERTIFICATE-----")]))


class ClientAuthenticator:
    """Checks clients' SCRAM-SHA-256 logins against an auth file and/or an auth query.

    `conninfo` is pgshroud's own connection, for the auth query;
    `end_point` the channel binding data of pgshroud's certificate (None:
    channel binding is not offered).
    """

    def __init__(self, *, auth_file: str | None = None, auth_query: str | None = None,
                 conninfo: str | None = None, end_point: bytes | None = None) -> None:
        if auth_file is None and auth_query is None:
            raise ConfigError("pgshroud authenticates clients only with --auth-file or --auth-query")
        if auth_query is not None:
            if "$1" not in auth_query:
                raise ConfigError("--auth-query must take the user name as $1")
            if conninfo is None:
                raise ConfigError("--auth-query needs pgshroud's own connection (--upstream's user)")
        self.auth_file = auth_file
        self.auth_query = auth_query
        self.end_point = end_point
        self._conninfo = conninfo
        self._users = load_auth_file(auth_file) if auth_file is not None else {}
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._mock_key = secrets.token_bytes(32)
        self._reloads: set[asyncio.Task[None]] = set()

    def reload(self) -> None:
        """Read the auth file again, in the background; an unreadable or
        invalid one keeps the users there were."""
        if self.auth_file is not None:
            task = asyncio.get_running_loop().create_task(self._reload(self.auth_file))
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)

    async def _reload(self, path: str) -> None:
        try:
            self._users = await asyncio.to_thread(load_auth_file, path)
        except ConfigError as exc:
            log.error("auth file reload failed, keeping the current users: %s", exc)
            return
        log.info("auth file reloaded from %s (%d users)", self.auth_file, len(self._users))

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def lookup(self, user: str) -> Secret | None:
        secret = self._users.get(user)
        if secret is not None or self.auth_query is None:
            return secret
        try:
            pool = await self._auth_pool()
            row = await pool.fetchrow(self.auth_query, user)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.error("the auth query failed: %s", exc)
            raise ClientFacingError(sqlstate.CONNECTION_FAILURE, "pgshroud cannot look up the credentials of users now") from None
        if row is None or len(row) == 0 or row[-1] is None:
            return None
        # A plain password costs a PBKDF2: off the event loop.
        parsed = await asyncio.to_thread(parse_secret, row[-1]) if isinstance(row[-1], str) else "not text"
        if isinstance(parsed, str):
            log.warning("the auth query's secret for user %r is %s: the login fails", user, parsed)
            return None
        return parsed

    async def _auth_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                assert self._conninfo is not None
                self._pool = await asyncpg.create_pool(min_size=0, max_size=AUTH_QUERY_POOL,
                                                       **asyncpg_arguments(self._conninfo))
            return self._pool

    def _mock(self, user: str) -> Verifier:
        # Stable per user, so that repeated probes see one salt, as for a real user.
        digest = hmac.digest(self._mock_key, user.encode("utf-8"), "sha256")
        return Verifier(DEFAULT_ITERATIONS, digest[:SALT_LENGTH], hashlib.sha256(digest).digest(),
                        hashlib.sha256(digest[::-1]).digest())

    async def authenticate(self, client: Leg, user: str) -> Credentials:
        """Run the SCRAM exchange with the client, ending with AuthenticationOk;
        raises ClientFacingError as PostgreSQL would fail the login."""
        secret = await self.lookup(user)
        server = ScramServer(secret.verifier if secret is not None else None, self._mock(user),
                             self.end_point if client.is_tls else None)
        client.write(AuthenticationSASL(server.mechanisms).encode())
        try:
            initial = SASLInitialResponse.decode(await _password_message(client))
            if initial.data is None:
                raise ScramError(sqlstate.PROTOCOL_VIOLATION, "malformed SCRAM message", "the client sent no SCRAM data")
            client.write(AuthenticationSASLContinue(server.first(initial.mechanism, initial.data)).encode())
            final = server.final(SASLResponse.decode(await _password_message(client)).data)
        except ScramError as exc:
            if exc.sqlstate == sqlstate.INVALID_PASSWORD:
                log.info("password authentication failed for user %r", user)
                raise ClientFacingError(sqlstate.INVALID_PASSWORD, f'password authentication failed for user "{user}"') from None
            message = f"{exc.message}: {exc.detail}" if exc.detail else exc.message
            raise ClientFacingError(exc.sqlstate, message) from None
        assert secret is not None and server.client_key is not None
        client.write(AuthenticationSASLFinal(final).encode() + AuthenticationOk().encode())
        verifier = secret.verifier
        return Credentials(user, secret.password,
                           Keys(server.client_key, verifier.server_key, verifier.salt, verifier.iterations))


async def _password_message(client: Leg) -> bytes:
    kind, payload = await client.read_frame()
    if kind != b"p":
        raise ProtocolViolation(f"expected a password message, got message type {kind!r}")
    return payload
