"""From a client's StartupMessage to ReadyForQuery: version negotiation,
the upstream connection, and authentication.

By default authentication is PostgreSQL's own: pgshroud forwards each
challenge and answer, so users keep their credentials and pgshroud learns
who logged in. With --auth-file or --auth-query pgshroud checks the
client's SCRAM-SHA-256 login itself (proxy/wire/client_auth.py), then logs in
to PostgreSQL as the same user on the client's behalf.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass

from pgshroud import sqlstate
from pgshroud.policies.model import Access, Policy, Role
from pgshroud.proxy.codec.errors import ProtocolViolation
from pgshroud.proxy.codec.framing import frame as _frame
from pgshroud.proxy.codec.messages import (
    Authentication,
    AuthenticationCleartextPassword,
    AuthenticationMD5Password,
    AuthenticationOk,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    BackendKeyData,
    NegotiateProtocolVersion,
    ParameterStatus,
    PasswordMessage,
    SASLInitialResponse,
    SASLResponse,
    StartupMessage,
    decode_authentication,
)
from pgshroud.proxy.ops.config import ServerConfig
from pgshroud.proxy.wire.client_auth import Credentials
from pgshroud.proxy.wire.errors import ClientFacingError
from pgshroud.proxy.wire.leg import Leg
from pgshroud.proxy.wire.scram import SCRAM, SCRAM_PLUS, ScramClient, ScramError, end_point_hash
from pgshroud.proxy.wire.upstream import UpstreamUnavailable, connect
from pgshroud.rewriter.settings import TIMING_SETTINGS, SettingRefused, check_parameter_status, check_startup_parameters

log = logging.getLogger("pgshroud.startup")

NEWEST_MINOR = 2  # pgshroud speaks protocol 3.2 to clients
UPSTREAM_MINOR = 0  # and 3.0 upstream, which every PostgreSQL and pooler accepts
_REPLICATION_OFF = {"false", "off", "no", "0"}


@dataclass
class Established:
    upstream: Leg
    client_minor: int
    user: str
    database: str
    upstream_key: BackendKeyData | None
    role: Role | None  # None without a policy
    statuses: dict[str, str]  # PostgreSQL's parameter statuses at startup (TimeZone, DateStyle, ...)


def role_for(policy: Policy | None, user: str) -> Role | None:
    """The user's policy role; raises ClientFacingError when the user is denied."""
    if policy is None:
        return None
    role = policy.role_for(user)
    if role is None or role.access == Access.DENY:
        raise ClientFacingError(sqlstate.INVALID_AUTHORIZATION_SPECIFICATION, f'pgshroud\'s policy does not allow user "{user}" to connect')
    return role


def check_non_raw_startup(startup: StartupMessage, role: Role | None) -> None:
    if role is None or role.access == Access.RAW:
        return
    try:
        check_startup_parameters(startup.params)
    except SettingRefused as exc:
        raise ClientFacingError(
            sqlstate.INSUFFICIENT_PRIVILEGE, f'{exc} for role "{role.name}"', hint="Connect without it; pgshroud fixes these settings."
        ) from None


def negotiate_version(startup: StartupMessage) -> tuple[int, NegotiateProtocolVersion | None]:
    """The minor version this client gets, and the NegotiateProtocolVersion to send, if any."""
    unknown = tuple(name for name, _ in startup.params if name.startswith("_pq_."))
    minor = min(startup.minor, NEWEST_MINOR)
    if startup.minor > NEWEST_MINOR or unknown:
        return minor, NegotiateProtocolVersion(minor, unknown)
    return minor, None


# Private answers must not become error-or-answer oracles through a timeout.
# Set last in `options`, these pins override the client's own -c settings,
# and as the session's defaults they are what RESET ALL returns to.
TIMING_PINS = tuple(f"{name}=0" for name in sorted(TIMING_SETTINGS))


def upstream_startup(startup: StartupMessage, *, pin_search_path: bool = False,
                     pin_timing: bool = False) -> StartupMessage:
    """The client's parameters, minus protocol options, which are never
    forwarded. Sessions the rewriter reads get search_path pinned, so that
    names resolve upstream exactly as the rewriter resolves them; sessions
    that get private answers also get the timing settings pinned."""
    params = [(k, v) for k, v in startup.params if not k.startswith("_pq_.")]
    pins = ["search_path=public"] if pin_search_path else []
    if pin_timing:
        pins += TIMING_PINS
    if pins:
        options = next((v for k, v in params if k == "options"), "")
        params = [(k, v) for k, v in params if k != "options"]
        params.append(("options", " ".join([options, *(f"-c {pin}" for pin in pins)]).strip()))
    return StartupMessage(3, UPSTREAM_MINOR, tuple(params))


def check_startup(startup: StartupMessage) -> tuple[str, str]:
    user = startup.param("user")
    if not user:
        raise ClientFacingError(sqlstate.INVALID_AUTHORIZATION_SPECIFICATION, "no PostgreSQL user name specified in startup packet")
    replication = startup.param("replication")
    if replication is not None and replication.lower() not in _REPLICATION_OFF:
        raise ClientFacingError(
            sqlstate.FEATURE_NOT_SUPPORTED,
            "pgshroud does not accept replication connections",
            hint="Connect replication clients to PostgreSQL directly.",
        )
    return user, startup.param("database") or user


async def establish(
    client: Leg, startup: StartupMessage, config: ServerConfig, policy: Policy | None = None
) -> Established:
    """Run startup and authentication; raises ClientFacingError on failure.

    A user the policy denies learns so only after authenticating, so the
    policy cannot be probed for user names.
    """
    user, database = check_startup(startup)
    named = policy.role_for(user) if policy is not None else None
    if policy is not None:
        check_non_raw_startup(startup, named)
    rewritten = named is not None and named.access != Access.RAW
    client_minor, negotiation = negotiate_version(startup)
    if negotiation is not None:
        client.write(negotiation.encode())
    credentials: Credentials | None = None
    if config.client_auth is not None:
        # Checked before any upstream connection: a client that cannot
        # log in costs PostgreSQL nothing.
        credentials = await config.client_auth.authenticate(client, user)
        role_for(policy, user)
    try:
        upstream = await connect(config.upstream, max_length=config.max_message_size)
    except UpstreamUnavailable as exc:
        raise ClientFacingError(sqlstate.CONNECTION_FAILURE, str(exc)) from None
    try:
        upstream.write(upstream_startup(startup, pin_search_path=rewritten,
                                        pin_timing=named is not None and named.aggregates_privately).encode())
        if credentials is not None:
            await _log_in_upstream(client, upstream, credentials)
        else:
            # With a policy, a login that proves nothing is refused: see
            # policies.model.AuthenticationPolicy.
            refuse_trust = policy is not None and not policy.authentication.allows_upstream_trust(named)
            await _relay_authentication(client, upstream, user, refuse_trust=refuse_trust)
        role = role_for(policy, user)
        sees_raw = role is None or role.access == Access.RAW
        statuses: dict[str, str] = {}
        key = await _relay_until_ready(client, upstream, statuses, check_status=not sees_raw)
    except BaseException:
        upstream.write(b"X\x00\x00\x00\x04")
        upstream.close()
        raise
    return Established(upstream, client_minor, user, database, key, role, statuses)


async def _authentication_request(client: Leg, upstream: Leg) -> tuple[bytes, Authentication]:
    """PostgreSQL's next authentication message, raw and decoded; an error
    from it goes to the client as it is."""
    while True:
        kind, payload = await _upstream_frame(upstream)
        if kind == b"v":  # the upstream's own version negotiation stays on its leg
            continue
        if kind == b"E":
            client.write(_frame(kind, payload))
            raise ClientFacingError.already_sent()
        if kind != b"R":
            raise ProtocolViolation(f"unexpected upstream message {kind!r} during authentication")
        return payload, decode_authentication(payload)


async def _relay_authentication(client: Leg, upstream: Leg, user: str, *, refuse_trust: bool) -> None:
    exchanged = False  # whether PostgreSQL asked the client to prove anything
    while True:
        payload, request = await _authentication_request(client, upstream)
        if isinstance(request, AuthenticationOk):
            if refuse_trust and not exchanged:
                log.warning("refused a login as %r: PostgreSQL let it in without any password exchange", user)
                raise ClientFacingError(
                    sqlstate.INVALID_AUTHORIZATION_SPECIFICATION,
                    f'PostgreSQL let user "{user}" in without a password (trust, or a similar method in '
                    "pg_hba.conf for pgshroud's connections), so the client proved nothing; pgshroud refuses it",
                    hint="Require scram-sha-256 (or md5, password) in pg_hba.conf for connections from "
                    "pgshroud, let pgshroud check passwords itself (--auth-file, --auth-query), or list the "
                    "role under the policy's authentication.allow_upstream_trust.",
                )
            client.write(_frame(b"R", payload))
            return
        exchanged = True
        if isinstance(request, AuthenticationSASL):
            await _relay_sasl_start(client, upstream, request)
        elif isinstance(request, (AuthenticationCleartextPassword, AuthenticationMD5Password, AuthenticationSASLContinue)):
            client.write(_frame(b"R", payload))
            upstream.write(_frame(*await _client_password(client)))
        elif isinstance(request, AuthenticationSASLFinal):
            client.write(_frame(b"R", payload))
        else:
            raise ClientFacingError(
                sqlstate.INVALID_AUTHORIZATION_SPECIFICATION,
                f"pgshroud cannot relay {type(request).__name__.removeprefix('Authentication')} authentication",
                hint="Use password, md5 or scram-sha-256 authentication for connections from pgshroud.",
            )


async def _relay_sasl_start(client: Leg, upstream: Leg, request: AuthenticationSASL) -> None:
    # Channel binding ties SCRAM to one TLS connection; a proxy holds two.
    mechanisms = tuple(m for m in request.mechanisms if not m.endswith("-PLUS"))
    if not mechanisms:
        raise ClientFacingError(sqlstate.INVALID_AUTHORIZATION_SPECIFICATION, "the upstream PostgreSQL offers only SCRAM with channel binding")
    client.write(AuthenticationSASL(mechanisms).encode())
    kind, payload = await _client_password(client)
    initial = SASLInitialResponse.decode(payload)
    if initial.data is not None and initial.data.startswith(b"y") and upstream.is_tls:
        # 'y' says "I could bind, you did not offer it"; a server on TLS
        # takes that as a downgrade attack and rejects it.
        raise ClientFacingError(
            sqlstate.INVALID_AUTHORIZATION_SPECIFICATION,
            "SCRAM channel binding cannot pass through pgshroud when both the client and "
            "pgshroud's upstream connection use TLS",
            hint="Connect with channel_binding=disable, or give --upstream sslmode=disable "
            "when pgshroud and PostgreSQL share a trusted network.",
        )
    upstream.write(_frame(kind, payload))


async def _log_in_upstream(client: Leg, upstream: Leg, credentials: Credentials) -> None:
    """Log in to PostgreSQL as the user pgshroud authenticated. The client
    has had its AuthenticationOk; PostgreSQL's errors reach it as they are."""
    user = credentials.user
    scram: ScramClient | None = None
    verified = False  # whether PostgreSQL proved it holds the user's verifier
    try:
        while True:
            try:
                _, request = await _authentication_request(client, upstream)
            except ClientFacingError:
                log.warning("pgshroud's login to PostgreSQL as %r on the client's behalf failed", user)
                raise
            if isinstance(request, AuthenticationOk):
                if scram is not None and not verified:
                    raise ScramError(sqlstate.INVALID_AUTHORIZATION_SPECIFICATION, "PostgreSQL ended the SCRAM exchange without proving that it holds "
                                              "the user's verifier")
                return
            if isinstance(request, (AuthenticationCleartextPassword, AuthenticationMD5Password)):
                if credentials.password is None:
                    raise ScramError(sqlstate.INVALID_AUTHORIZATION_SPECIFICATION, "PostgreSQL asks for a password, and pgshroud holds only a SCRAM "
                                              "verifier for this user (use scram-sha-256 in pg_hba.conf)")
                password = credentials.password.encode("utf-8")
                if isinstance(request, AuthenticationMD5Password):
                    inner = hashlib.md5(password + user.encode("utf-8")).hexdigest().encode("ascii")
                    password = b"md5" + hashlib.md5(inner + request.salt).hexdigest().encode("ascii")
                upstream.write(PasswordMessage(password).encode())
            elif isinstance(request, AuthenticationSASL):
                scram = _scram_client(upstream, request.mechanisms, credentials)
                upstream.write(SASLInitialResponse(scram.mechanism, scram.first()).encode())
            elif isinstance(request, AuthenticationSASLContinue) and scram is not None:
                salt, iterations = scram.salt_and_iterations(request.data)
                # PBKDF2 over the password: thousands of hashes, off the event loop.
                keys = await asyncio.to_thread(scram.keys_for, salt, iterations)
                upstream.write(SASLResponse(scram.final(request.data, keys)).encode())
            elif isinstance(request, AuthenticationSASLFinal) and scram is not None:
                scram.verify(request.data)
                verified = True
            else:
                method = type(request).__name__.removeprefix("Authentication")
                raise ScramError(sqlstate.INVALID_AUTHORIZATION_SPECIFICATION, f"pgshroud cannot answer {method} authentication")
    except ScramError as exc:
        log.warning("pgshroud could not log in to PostgreSQL as %r: %s", user, exc.message)
        raise ClientFacingError(sqlstate.INVALID_AUTHORIZATION_SPECIFICATION, f'pgshroud could not log in to PostgreSQL as user "{user}": {exc.message}',
                                hint="pgshroud logs in with the password or the SCRAM keys of the user's own "
                                     "verifier: the upstream must hold the same one.") from None


def _scram_client(upstream: Leg, mechanisms: tuple[str, ...], credentials: Credentials) -> ScramClient:
    end_point = None
    ssl_object = upstream.ssl_object
    if SCRAM_PLUS in mechanisms and ssl_object is not None:
        certificate = ssl_object.getpeercert(binary_form=True)
        end_point = end_point_hash(certificate) if certificate else None
    if end_point is None and SCRAM not in mechanisms:
        raise ScramError(sqlstate.INVALID_AUTHORIZATION_SPECIFICATION, f"PostgreSQL offers no SASL mechanism pgshroud can use ({', '.join(mechanisms)})")
    if credentials.password is not None:
        return ScramClient(password=credentials.password, end_point=end_point)
    return ScramClient(keys=credentials.keys, end_point=end_point)


async def _client_password(client: Leg) -> tuple[bytes, bytes]:
    kind, payload = await client.read_frame()
    if kind != b"p":
        raise ProtocolViolation(f"expected a password message, got message type {kind!r}")
    return kind, payload


async def _relay_until_ready(client: Leg, upstream: Leg, statuses: dict[str, str], *,
                             check_status: bool) -> BackendKeyData | None:
    """Relay PostgreSQL's messages up to its first ReadyForQuery; its
    parameter statuses are also kept in `statuses`."""
    key: BackendKeyData | None = None
    while True:
        kind, payload = await _upstream_frame(upstream)
        if kind == b"K":
            key = BackendKeyData.decode(payload)
        elif kind == b"Z":
            return key  # the session sends its own key, then this ReadyForQuery
        elif kind == b"S":
            status = ParameterStatus.decode(payload)
            problem = check_parameter_status(status.name, status.value) if check_status else None
            if problem is not None:
                raise ClientFacingError(sqlstate.INSUFFICIENT_PRIVILEGE, f"pgshroud cannot serve this session safely: {problem}")
            statuses[status.name] = status.value
            client.write(_frame(kind, payload))
        elif kind == b"N":
            client.write(_frame(kind, payload))
        elif kind == b"E":
            client.write(_frame(kind, payload))
            raise ClientFacingError.already_sent()
        else:
            raise ProtocolViolation(f"unexpected upstream message {kind!r} before ReadyForQuery")


async def _upstream_frame(upstream: Leg) -> tuple[bytes, bytes]:
    try:
        return await upstream.read_frame()
    except ConnectionError:
        raise ClientFacingError(sqlstate.CONNECTION_FAILURE, "the upstream PostgreSQL closed the connection during startup") from None
